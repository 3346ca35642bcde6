//! Checkpoint configuration, with Flink's defaults where Flink has one.

use std::path::PathBuf;
use std::time::Duration;

use crate::checkpoint::restart::RestartStrategy;

/// How barriers are handled at a task with several input channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointingMode {
    /// Aligned barriers: a channel that delivered the barrier is held back
    /// until every channel has, so the snapshot sees no record after it.
    ExactlyOnce,
    /// No alignment: the snapshot is taken when the last barrier arrives; a
    /// recovery may replay records that the state already holds.
    AtLeastOnce,
}

/// Checkpointing of one job. Disabled unless `interval` is set (or a
/// savepoint is requested).
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// Time between the start of two periodic checkpoints.
    pub interval: Option<Duration>,
    /// Where checkpoint directories (`chk-N`) are written.
    pub directory: Option<PathBuf>,
    pub mode: CheckpointingMode,
    /// Unaligned checkpoints: the first barrier at a task triggers its
    /// snapshot and overtakes the records still in its input channels, which
    /// are persisted with the snapshot (exactly-once mode only).
    pub unaligned: bool,
    /// With aligned checkpoints: an alignment that takes longer than this
    /// switches to unaligned for that checkpoint.
    pub aligned_timeout: Option<Duration>,
    /// A checkpoint not complete after this long is aborted (Flink: 10 min).
    pub timeout: Duration,
    /// Checkpoints in progress at once (Flink: 1).
    pub max_concurrent: usize,
    /// Least time between the end of one checkpoint and the start of the
    /// next (Flink: 0).
    pub min_pause: Duration,
    /// Failed checkpoints in a row tolerated before the job fails (Flink: 0
    /// by default; the job then restarts).
    pub tolerable_failures: u32,
    /// Completed checkpoints kept on disk (Flink: 1).
    pub retained: usize,
    /// How the job recovers from a failed task.
    pub restart: RestartStrategy,
    /// Restore from this checkpoint (a `chk-N` or `savepoint-N` directory)
    /// or the newest valid one under this root directory.
    pub restore_from: Option<PathBuf>,
    /// Incremental checkpoints (Flink's changelog state backend): keyed
    /// `sum`, `reduce` and window aggregates log their changes and a checkpoint
    /// writes only the changes since the last completed one, into the
    /// root's `shared` directory; other keyed states stay full.
    pub incremental: bool,
    /// With `incremental`: what a restore of a state replays (each slice's
    /// last full snapshot and the deltas since it) stays within `1 + ratio`
    /// times the state's entries. Past that, a checkpoint writes new full
    /// snapshots of the slices whose rewrite saves the most, usually one
    /// (see `checkpoint::changelog`). A growing state's deltas are mostly new
    /// keys, so it writes none while it grows. Lower restores faster (less
    /// to replay); higher writes less.
    pub materialize_ratio: f64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: None,
            directory: None,
            mode: CheckpointingMode::ExactlyOnce,
            unaligned: false,
            aligned_timeout: None,
            timeout: Duration::from_secs(600),
            max_concurrent: 1,
            min_pause: Duration::ZERO,
            tolerable_failures: 0,
            retained: 1,
            restart: RestartStrategy::None,
            restore_from: None,
            incremental: false,
            materialize_ratio: 0.5,
        }
    }
}

impl CheckpointConfig {
    /// The materialization ratio when checkpoints are incremental.
    pub(crate) fn incremental_ratio(&self) -> Option<f64> {
        self.incremental.then_some(self.materialize_ratio)
    }

    /// Whether periodic checkpoints are taken.
    pub fn enabled(&self) -> bool {
        self.interval.is_some()
    }

    /// Checkpoints every `interval` into `directory`, with Flink's default
    /// restart strategy (fixed delay).
    pub fn every(interval: Duration, directory: impl Into<PathBuf>) -> Self {
        CheckpointConfig {
            interval: Some(interval),
            directory: Some(directory.into()),
            restart: RestartStrategy::flink_default(),
            ..CheckpointConfig::default()
        }
    }
}
