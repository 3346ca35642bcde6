//! Checkpoints and recovery, engine side (asynchronous barrier snapshotting,
//! as in Flink):
//!
//! - [`config`]: what a job asks for (interval, mode, timeouts, retention,
//!   restart strategy, restore path).
//! - [`changelog`]: incremental checkpoints of a keyed state: logged
//!   changes written as deltas over a base, rebased when they grow.
//! - [`state`]: the task side: the registry of a subtask's checkpointed
//!   operators, the synchronous copy-on-write part of a snapshot, and restore.
//! - [`writer`]: the process's snapshot writer thread, which writes the
//!   forked state off the processing path and acknowledges to the coordinator.
//! - [`coordinator`]: the job master's checkpoint coordinator (triggers,
//!   acknowledgements, completion, metadata, subsumption, aborts).
//! - [`restart`]: restart strategies.
//!
//! The on-disk layout (checkpoint directories, `_metadata`, state files) is
//! `rheon_state::checkpoint` and `rheon_state::snapshot`.

pub(crate) mod changelog;
pub mod config;
pub(crate) mod coordinator;
pub(crate) mod finished;
pub mod restart;
pub(crate) mod state;
pub(crate) mod writer;

pub use config::{CheckpointConfig, CheckpointingMode};
pub use restart::RestartStrategy;
