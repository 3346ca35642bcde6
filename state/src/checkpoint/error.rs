//! [`CheckpointError`]: what can go wrong with a checkpoint directory, its `_metadata`
//! file and the state files it references. Each variant names the file (or directory) and
//! what was expected; state-file errors carry the [`SnapshotError`] with the file and key
//! group.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::error::SnapshotError;

/// An error from writing, reading, verifying or cleaning up checkpoints.
///
/// The classes a caller acts on differently: [`Self::is_io`] may succeed when retried;
/// [`Self::is_corruption`] means bytes on disk are bad or missing and retrying will not
/// help (fall back to an older checkpoint);
/// [`VersionMismatch`](Self::VersionMismatch) needs another build. As in
/// [`SnapshotError`], causes are part of the message only (fields are named `error`, not
/// `source`), so an error chain prints each once.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// An operating-system call failed.
    #[error("cannot {operation} {}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done: "read", "list", "rename into place", ...
        operation: &'static str,
        /// The cause; its `kind()` tells a missing file from a full disk.
        error: io::Error,
    },
    /// A `_metadata` file ends before the length its header announces.
    #[error("checkpoint metadata {} is truncated ({size_bytes} bytes): {reason}", path.display())]
    Truncated {
        /// The `_metadata` file.
        path: PathBuf,
        /// Its length.
        size_bytes: u64,
        /// What is missing.
        reason: String,
    },
    /// A `_metadata` file's bytes contradict the format (magic, reserved fields, checksum,
    /// archive validation), or what it says contradicts the directory or itself.
    #[error("checkpoint metadata {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The `_metadata` file.
        path: PathBuf,
        /// What does not hold, with the offending values.
        reason: String,
    },
    /// A `_metadata` file of another format version.
    #[error(
        "checkpoint metadata {} has format version {found}; this build reads version {expected}",
        path.display()
    )]
    VersionMismatch {
        /// The `_metadata` file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// A state file named by `_metadata` does not exist.
    #[error(
        "state file {} of state {state:?} of operator {node} ({operator:?}) is missing",
        path.display()
    )]
    MissingStateFile {
        /// Where the file should be.
        path: PathBuf,
        /// The operator's node id.
        node: u32,
        /// The operator's name.
        operator: String,
        /// The keyed state's name.
        state: String,
    },
    /// A state file named by `_metadata` cannot be read, is corrupt (the error names the
    /// file and key group), or does not fit the checkpoint (another max parallelism or
    /// state name, key groups missing or in two files).
    #[error("state {state:?} of operator {node} ({operator:?}): {error}")]
    StateFile {
        /// The operator's node id.
        node: u32,
        /// The operator's name.
        operator: String,
        /// The keyed state's name.
        state: String,
        /// What is wrong, naming the file.
        error: SnapshotError,
    },
    /// rkyv could not serialize the metadata (above the 2 GiB that 32-bit relative
    /// pointers reach, for example).
    #[error("cannot serialize checkpoint metadata {}: {reason}", path.display())]
    Serialize {
        /// The `_metadata` file being written.
        path: PathBuf,
        /// rkyv's message, or the size.
        reason: String,
    },
    /// A checkpoint the caller set aside (see [`latest_valid_to`]): the engine sets
    /// aside one whose restore found bad bytes that the check before it did not read.
    ///
    /// [`latest_valid_to`]: super::verify::latest_valid_to
    #[error("checkpoint {} was set aside: {reason}", path.display())]
    SetAside {
        /// The checkpoint directory.
        path: PathBuf,
        /// Why, naming the file and key group where known.
        reason: String,
    },
    /// No completed checkpoint under a root verifies.
    #[error(
        "no valid checkpoint in {}: {}",
        root.display(),
        describe_tried(tried, *incomplete)
    )]
    NoValidCheckpoint {
        /// The checkpoint root.
        root: PathBuf,
        /// Every completed checkpoint tried, newest first, with why it failed.
        tried: Vec<(PathBuf, CheckpointError)>,
        /// How many checkpoint directories were incomplete (no `_metadata`) and not tried.
        incomplete: usize,
    },
}

impl CheckpointError {
    /// Whether bytes on disk are bad or missing (a truncated, corrupt or missing file, a
    /// state file that does not fit its checkpoint): retrying the same checkpoint will
    /// not help. [`NoValidCheckpoint`](Self::NoValidCheckpoint) counts when it tried at
    /// least one checkpoint and every one it tried is corrupt.
    pub fn is_corruption(&self) -> bool {
        match self {
            Self::Truncated { .. }
            | Self::Corrupt { .. }
            | Self::MissingStateFile { .. }
            | Self::SetAside { .. } => true,
            Self::StateFile { error, .. } => !error.is_io(),
            Self::NoValidCheckpoint { tried, .. } => {
                !tried.is_empty() && tried.iter().all(|(_, error)| error.is_corruption())
            }
            Self::Io { .. } | Self::VersionMismatch { .. } | Self::Serialize { .. } => false,
        }
    }

    /// Whether this is an I/O error (of `_metadata`, a directory or a state file), which
    /// may succeed when retried.
    pub fn is_io(&self) -> bool {
        match self {
            Self::Io { .. } => true,
            Self::StateFile { error, .. } => error.is_io(),
            _ => false,
        }
    }

    /// The file or directory the error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Io { path, .. }
            | Self::Truncated { path, .. }
            | Self::Corrupt { path, .. }
            | Self::VersionMismatch { path, .. }
            | Self::MissingStateFile { path, .. }
            | Self::Serialize { path, .. }
            | Self::SetAside { path, .. } => Some(path),
            Self::StateFile { error, .. } => error.path(),
            Self::NoValidCheckpoint { root, .. } => Some(root),
        }
    }

    pub(crate) fn io(
        path: impl Into<PathBuf>,
        operation: &'static str,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |error| Self::Io {
            path,
            operation,
            error,
        }
    }
}

fn describe_tried(tried: &[(PathBuf, CheckpointError)], incomplete: usize) -> String {
    let mut out = if tried.is_empty() {
        "no completed checkpoint".to_string()
    } else {
        let mut out = format!("{} completed checkpoint(s) tried", tried.len());
        for (dir, error) in tried {
            let name = dir.file_name().unwrap_or(dir.as_os_str()).to_string_lossy();
            out.push_str(&format!("; {name}: {error}"));
        }
        out
    };
    if incomplete > 0 {
        out.push_str(&format!(
            " ({incomplete} incomplete checkpoint director{} without _metadata)",
            if incomplete == 1 { "y" } else { "ies" }
        ));
    }
    out
}
