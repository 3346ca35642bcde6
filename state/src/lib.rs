//! Rheon state: how keys map to key groups and subtasks, and where a subtask keeps its
//! keyed state. This crate knows nothing of sockets, executors or operators; the engine
//! routes each record to the subtask that owns its key group and then reads and writes
//! that subtask's keyed state, a [`KeyGroupedMap`] per state.
//!
//! - [`key_group`]: key -> key group -> subtask, exactly as Flink assigns them, plus
//!   parallelism checks and defaults.
//! - [`keyed`]: per-key-group hash maps, copy-on-write forks and changelogs.
//! - [`snapshot`]: the snapshot file format (per key group rkyv sections, an offset index
//!   and checksums), its writer, and its memory-mapped, validating reader and restore.
//! - [`checkpoint`]: the on-disk layout of a job's checkpoints (`chk-<id>` directories,
//!   the `_metadata` file), verification, subsuming and `inspect` reports.
//! - [`error`]: the typed errors of this crate.

pub mod checkpoint;
pub mod error;
pub mod key_group;
pub mod keyed;
pub mod snapshot;

pub use error::{SnapshotError, StateError};
pub use key_group::KeyGroupRange;
pub use keyed::{Changelog, KeyGroupedFork, KeyGroupedMap};
pub use snapshot::writer::{Encoded, EncodedSnapshotWriter};
pub use snapshot::{SnapshotFile, SnapshotMeta, SnapshotWriter};
