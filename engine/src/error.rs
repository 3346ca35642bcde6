//! Typed errors of the engine: what a task reports when it fails, and what a job
//! reports to the caller of `execute`.
//!
//! A task error always names the operator and the subtask, so a user can find the
//! function that failed; a job error wraps the first task error that caused the
//! job to fail.

use std::fmt;

/// Where a failure happened: operator name and subtask index (0-based) of a
/// parallelism.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskLocation {
    pub operator: String,
    pub subtask: u32,
    pub parallelism: u32,
}

impl fmt::Display for TaskLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "operator '{}' (subtask {}/{})",
            self.operator,
            self.subtask + 1,
            self.parallelism
        )
    }
}

/// The failure of one subtask.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TaskError {
    /// A user function panicked or returned an error.
    #[error("{location} failed: {message}")]
    UserFunction {
        location: TaskLocation,
        message: String,
    },
    /// A source could not read its input (missing file, bad encoding, ...).
    #[error("{location} failed: {message}")]
    Source {
        location: TaskLocation,
        message: String,
    },
    /// A sink could not write its output.
    #[error("{location} failed: {message}")]
    Sink {
        location: TaskLocation,
        message: String,
    },
    /// The data plane failed (a record too large for a segment, a peer gone, a
    /// record that does not decode).
    #[error("{location} failed in the data plane: {message}")]
    Network {
        location: TaskLocation,
        message: String,
    },
    /// Taking or writing a checkpoint failed.
    #[error("{location} failed a checkpoint: {message}")]
    Checkpoint {
        location: TaskLocation,
        message: String,
    },
    /// Restoring the subtask's state from a checkpoint failed (a file or
    /// key group that does not read back, in-flight data that cannot be
    /// replayed here).
    #[error("{location} failed to restore a checkpoint: {message}")]
    Restore {
        location: TaskLocation,
        message: String,
    },
    /// The program cannot run on the state it restores (a checkpointed state
    /// it no longer declares): a restart would fail the same way, so the job
    /// fails without one (Flink's `SuppressRestartsException`).
    #[error("{location} cannot restore the checkpoint: {message}")]
    IncompatibleState {
        location: TaskLocation,
        message: String,
    },
    /// The task was cancelled because another task failed or the job was cancelled.
    #[error("{location} was cancelled")]
    Cancelled { location: TaskLocation },
}

impl TaskError {
    /// A checkpoint or restore of the operator at `location` failed.
    pub(crate) fn checkpoint(location: &TaskLocation, message: impl Into<String>) -> Box<Self> {
        Box::new(TaskError::Checkpoint {
            location: location.clone(),
            message: message.into(),
        })
    }

    /// A failure while restoring a checkpoint, as a [`TaskError::Restore`]:
    /// a [`TaskError::Checkpoint`] becomes one, the rest stay as they are.
    pub(crate) fn in_restore(self: Box<Self>) -> Box<Self> {
        match *self {
            TaskError::Checkpoint { location, message } => {
                Box::new(TaskError::Restore { location, message })
            }
            _ => self,
        }
    }

    /// The operator at `location` cannot take over the restored state.
    pub(crate) fn incompatible_state(
        location: &TaskLocation,
        message: impl Into<String>,
    ) -> Box<Self> {
        Box::new(TaskError::IncompatibleState {
            location: location.clone(),
            message: message.into(),
        })
    }

    /// Whether restarting cannot help: the job fails at once.
    pub(crate) fn suppresses_restarts(&self) -> bool {
        matches!(self, TaskError::IncompatibleState { .. })
    }

    /// A user function at `location` returned an error.
    pub(crate) fn user_function(location: &TaskLocation, message: impl Into<String>) -> Box<Self> {
        Box::new(TaskError::UserFunction {
            location: location.clone(),
            message: message.into(),
        })
    }

    pub fn location(&self) -> &TaskLocation {
        match self {
            TaskError::UserFunction { location, .. }
            | TaskError::Source { location, .. }
            | TaskError::Sink { location, .. }
            | TaskError::Network { location, .. }
            | TaskError::Checkpoint { location, .. }
            | TaskError::Restore { location, .. }
            | TaskError::IncompatibleState { location, .. }
            | TaskError::Cancelled { location } => location,
        }
    }
}

/// Boxed so that the `Result` on the per-record path stays one word wide.
pub type TaskResult<T = ()> = Result<T, Box<TaskError>>;

/// Why a job did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job graph is not valid (bad parallelism, forward edge between unequal
    /// parallelisms, no sink, ...).
    #[error("invalid job '{job}': {message}")]
    InvalidGraph { job: String, message: String },
    /// The cluster cannot run the job (not enough slots or memory segments).
    #[error("job '{job}' cannot be scheduled: {message}")]
    Resources { job: String, message: String },
    /// A task failed; the job was cancelled. The message includes the task's
    /// (so it is not also exposed as `source()`, which would print it twice
    /// in error chains).
    #[error("job '{job}' failed: {task}")]
    TaskFailed { job: String, task: Box<TaskError> },
    /// Committing the output of sinks at the end of the job failed.
    #[error("job '{job}' could not commit its output: {message}")]
    Commit { job: String, message: String },
    /// A checkpoint to restore from could not be found or read.
    #[error("job '{job}' cannot restore: {message}")]
    Restore { job: String, message: String },
    /// The executors could not be started (glommio, memlock, affinity).
    #[error("cannot start the engine: {0}")]
    Startup(String),
}

/// The message of a caught panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}
