//! The control-plane protocol between the coordinator (dispatcher, resource
//! manager, job master) and the task executors. Everything they tell each other
//! goes through these messages; the embedded engine carries them over
//! in-process mailboxes, a cluster will carry the same messages over TCP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::state::SharedRestore;

use crate::error::{JobError, TaskError};
use crate::graph::execution_graph::SubtaskId;
use crate::graph::job_graph::JobGraph;
use crate::runtime::task::TaskMetrics;

pub type ExecutorId = usize;
pub type JobId = u64;
/// A slot's index within its executor.
pub type SlotIndex = u32;

/// An in-process address: where to send messages for a component.
#[derive(Debug)]
pub struct Mailbox<T>(pub(crate) async_channel::Sender<T>);

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox(self.0.clone())
    }
}

impl<T> Mailbox<T> {
    /// Sends without waiting (mailboxes are unbounded: control messages are
    /// few). A closed mailbox means the peer is gone; the caller learns it
    /// from the missing answer, as over a network.
    pub fn send(&self, message: T) {
        let _ = self.0.try_send(message);
    }
}

pub fn mailbox<T>() -> (Mailbox<T>, async_channel::Receiver<T>) {
    let (tx, rx) = async_channel::unbounded();
    (Mailbox(tx), rx)
}

/// Lifecycle of a subtask as the executor reports it.
#[derive(Debug)]
pub enum TaskState {
    Running,
    Finished(TaskMetrics),
    Failed(Box<TaskError>),
    Canceled,
}

impl TaskState {
    pub fn is_terminal(&self) -> bool {
        !matches!(self, TaskState::Running)
    }
}

/// Messages to the coordinator.
pub enum CoordinatorMsg {
    /// A task executor announces itself and its slots.
    RegisterTaskExecutor {
        executor: ExecutorId,
        slots: u32,
        mailbox: Mailbox<ExecutorMsg>,
    },
    /// The executor's view of its slots (free count), sent after registration
    /// and whenever slots are freed.
    SlotReport {
        executor: ExecutorId,
        free_slots: u32,
    },
    /// The executor allocated the slot for the job and offers it to the job master.
    SlotOffer {
        executor: ExecutorId,
        job: JobId,
        slot: SlotIndex,
    },
    TaskStateChanged {
        executor: ExecutorId,
        job: JobId,
        attempt: u32,
        subtask: SubtaskId,
        state: TaskState,
    },
    /// A client submits a job; the outcome is sent to `reply`.
    SubmitJob {
        job: JobId,
        graph: Arc<JobGraph>,
        reply: Mailbox<Result<JobOutcome, JobError>>,
        /// The checkpoint the job starts from (`--restore`).
        restore: SharedRestore,
    },
    /// A subtask's snapshot of a checkpoint is written.
    AcknowledgeCheckpoint {
        job: JobId,
        attempt: u32,
        checkpoint_id: u64,
        subtask: SubtaskId,
        state: SubtaskCheckpoint,
    },
    /// A subtask could not take or write its snapshot of a checkpoint.
    DeclineCheckpoint {
        job: JobId,
        attempt: u32,
        checkpoint_id: u64,
        subtask: SubtaskId,
        reason: String,
    },
    /// Take a checkpoint, or a savepoint, of a running job now; the reply is
    /// its directory once it completes.
    TriggerOnRequest {
        job: JobId,
        savepoint: bool,
        reply: Mailbox<Result<PathBuf, String>>,
    },
    /// The clock: sent every few milliseconds so that periodic checkpoints,
    /// checkpoint timeouts and restart delays happen without a message.
    Tick,
    /// An executor thread died (a panic outside any task's guard): its tasks
    /// are lost.
    ExecutorLost {
        executor: ExecutorId,
        reason: String,
    },
    Shutdown,
}

/// Messages to a task executor.
pub enum ExecutorMsg {
    /// Allocate one of your free slots to the job and offer it to its job master.
    RequestSlot {
        job: JobId,
    },
    /// Run a subtask in the given (previously offered) slot.
    DeployTask {
        job: JobId,
        graph: Arc<JobGraph>,
        subtask: SubtaskId,
        slot: SlotIndex,
        /// Counts the job's restarts; channels of different attempts never meet.
        attempt: u32,
        /// The checkpoint the subtask starts from, if any.
        restore: SharedRestore,
    },
    /// Inject a barrier for this checkpoint at a source subtask.
    TriggerCheckpoint {
        job: JobId,
        subtask: SubtaskId,
        checkpoint_id: u64,
        timestamp_ms: u64,
        savepoint: bool,
    },
    /// The checkpoint is complete: tell every subtask of the job here.
    NotifyCheckpointComplete {
        job: JobId,
        checkpoint_id: u64,
    },
    /// Cancel a running subtask; answered with `TaskStateChanged(Canceled)`
    /// unless the task already reached another terminal state.
    CancelTask {
        job: JobId,
        subtask: SubtaskId,
    },
    /// The job is over: free its slots.
    FreeSlots {
        job: JobId,
    },
    Shutdown,
}

/// What a finished job reports.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    pub elapsed: Duration,
    /// Per vertex: name, parallelism and the sum of its subtasks' counters.
    pub vertices: Vec<VertexMetrics>,
    /// Completed checkpoints, oldest first.
    pub checkpoints: Vec<CheckpointStats>,
    /// Times the job restarted after a failure.
    pub restarts: u32,
    /// With `restore_from`: how long choosing and checking the checkpoint took
    /// before any task was deployed (every file opened, its header, index and
    /// footer checked; the sections' checksums are checked by the restoring
    /// tasks as they read them).
    pub restore_verification: Option<Duration>,
    /// The restore found the job finished (`_finished` in the checkpoint
    /// root): it replayed the job's final commits and ran nothing.
    pub already_finished: bool,
}

/// What a completed checkpoint cost.
#[derive(Clone, Debug)]
pub struct CheckpointStats {
    pub checkpoint_id: u64,
    pub directory: PathBuf,
    /// From trigger to the metadata written.
    pub duration: Duration,
    /// The longest synchronous part of any subtask (the task's pause).
    pub sync_max: Duration,
    /// Every subtask's synchronous part.
    pub sync_durations: Vec<Duration>,
    /// The longest barrier alignment of any subtask.
    pub alignment_max: Duration,
    /// The longest asynchronous part (writing) of any subtask.
    pub async_max: Duration,
    /// State bytes written.
    pub bytes: u64,
}

/// One operator's share of a subtask's acknowledged snapshot.
#[derive(Debug)]
pub struct AckedOperator {
    pub node: usize,
    pub name: String,
    pub keyed: Vec<AckedKeyed>,
    pub operator_state: Vec<Vec<u8>>,
}

/// The files of one keyed state of one subtask, named relative to the
/// checkpoint directory.
#[derive(Debug)]
pub struct AckedKeyed {
    pub name: String,
    /// The full snapshot; of an incremental checkpoint, the chain's bases, one
    /// per slice of the subtask's key groups.
    pub files: Vec<String>,
    /// An incremental checkpoint's changelog files after the oldest base,
    /// oldest first. A key group's state is its base plus the deltas written
    /// by later checkpoints (the shared files' names start with that id).
    pub deltas: Vec<String>,
}

impl AckedKeyed {
    /// One full snapshot file.
    pub(crate) fn full(name: &str, file: String) -> Self {
        AckedKeyed {
            name: name.to_owned(),
            files: vec![file],
            deltas: Vec::new(),
        }
    }
}

/// A subtask's acknowledged snapshot.
#[derive(Debug)]
pub struct SubtaskCheckpoint {
    pub operators: Vec<AckedOperator>,
    /// In-flight buffers per input channel (unaligned checkpoints).
    pub channel_state: Vec<(u32, Vec<Vec<u8>>)>,
    pub sync_duration: Duration,
    pub alignment: Duration,
    pub async_duration: Duration,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct VertexMetrics {
    pub name: String,
    pub parallelism: u32,
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_out: u64,
    /// Per subtask (by index) of the last attempt, when it restored from a
    /// checkpoint: from its deploy until its state was restored, before its
    /// first record. Empty when the attempt did not restore.
    pub restore_durations: Vec<Duration>,
}
