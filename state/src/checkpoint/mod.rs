//! The on-disk layout of a job's checkpoints, independent of the engine. A checkpoint
//! root (`--checkpoint-dir`) holds one directory per checkpoint: `chk-<id>` for periodic
//! checkpoints, `savepoint-<id>` for savepoints (ids decimal, unpadded, one sequence for
//! both). Tasks write their state files into it (keyed state as snapshot files, see
//! [`crate::snapshot`]); the coordinator then writes `_metadata`, last and atomically,
//! which names every file. A directory without `_metadata` is incomplete and ignored.
//!
//! - [`metadata`]: [`CheckpointMetadata`] and the `_metadata` file format, its atomic
//!   writer and validating reader.
//! - [`layout`]: directory names, listing, the next id, and subsuming old checkpoints.
//! - [`verify`](mod@verify): checking every file of a checkpoint, and picking the newest
//!   one that holds for a restore.
//! - [`inspect`]: the report `rheon checkpoint inspect` prints.
//! - [`error`]: its typed error, [`CheckpointError`].
//!
//! Architecture Invariant: bad bytes on disk (`_metadata`, state files, stray directory
//! names) are errors naming the file, never panics; this module adds no `unsafe` and
//! reads archives only through rkyv's checked API.
//!
//! Architecture Invariant: a checkpoint is complete exactly when its directory holds
//! `_metadata`; writers create `_metadata` last by rename, and deleters remove it first.

pub mod error;
pub mod inspect;
pub mod layout;
pub mod metadata;
pub mod verify;

pub use error::CheckpointError;
pub use inspect::{
    inspect_checkpoint, CheckpointReport, KeyedStateReport, OperatorReport, OtherCheckpoint,
    OtherStatus, StateFileReport, StateFileStatus,
};
pub use layout::{
    checkpoint_dir_name, collect_shared, list_completed, next_checkpoint_id,
    parse_checkpoint_dir_name, plan_subsume, scan, shared_file_checkpoint_id, shared_file_name,
    subsume, CheckpointDirEntry,
};
pub use metadata::{
    decode_metadata, encode_metadata, is_state_file_name, read_metadata, write_file_atomically,
    write_metadata, ChannelStateEntry, CheckpointMetadata, KeyedStateFiles, OperatorSnapshot,
    METADATA_FILE_NAME, SHARED_DIR_NAME,
};
pub use verify::{
    latest_valid, latest_valid_to, replayed_over, verify, verify_to, written_by, Depth,
};
