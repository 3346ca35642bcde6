//! Typed errors of the state crate. Each variant carries the values a caller needs to
//! report the problem or act on it (the offending parallelism, the state's name, the
//! snapshot file and key group). [`StateError`] covers configuration;
//! [`SnapshotError`] covers snapshot files, separating I/O from corruption.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::key_group::{KeyGroupRange, MAX_PARALLELISM_BOUND};

/// An error from an operation of the state crate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    /// The max parallelism is 0 or above [`MAX_PARALLELISM_BOUND`].
    #[error(
        "max parallelism {max_parallelism} (with parallelism {parallelism}) is outside \
         1..={MAX_PARALLELISM_BOUND}"
    )]
    MaxParallelismOutOfBounds {
        /// The rejected max parallelism.
        max_parallelism: u32,
        /// The parallelism it was checked with.
        parallelism: u32,
    },
    /// The parallelism is 0 or above the max parallelism.
    #[error(
        "parallelism {parallelism} is outside 1..={max_parallelism} (1 up to the max parallelism)"
    )]
    ParallelismOutOfBounds {
        /// The rejected parallelism.
        parallelism: u32,
        /// The max parallelism it must not exceed.
        max_parallelism: u32,
    },
}

/// An error from writing, opening or reading a snapshot file (see
/// `docs/SNAPSHOT_FORMAT.md`).
///
/// The classes a caller acts on differently: [`Io`](Self::Io) may be retried (full disk,
/// lost mount); [`Truncated`](Self::Truncated) and [`Corrupt`](Self::Corrupt) mean the
/// file's bytes are bad and retrying will not help ([`Self::is_corruption`]);
/// [`VersionMismatch`](Self::VersionMismatch) needs another build; the rest are about the
/// set of files handed to a restore. I/O errors carry their cause in the message only,
/// so an error chain prints it once.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// An operating-system call on the file failed.
    #[error("cannot {operation} snapshot file {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done: "open", "write", "fsync", ...
        operation: &'static str,
        /// The cause; its `kind()` tells a missing file from a full disk.
        error: io::Error,
    },
    /// The file ends before its footer: it was not completely written or was cut short.
    #[error("snapshot file {} is truncated ({size_bytes} bytes): {reason}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        size_bytes: u64,
        /// What is missing.
        reason: String,
    },
    /// The file's bytes contradict the format: a checksum does not hold, an offset points
    /// outside the file, an archive fails validation.
    #[error("snapshot file {} is corrupt{}: {reason}", path.display(), in_key_group(*key_group))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The key group whose section is bad; `None` for the header, index or footer.
        key_group: Option<u32>,
        /// What does not hold, with the offending values.
        reason: String,
    },
    /// The file is a snapshot of another format version.
    #[error(
        "snapshot file {} has format version {found}; this build reads version {expected}",
        path.display()
    )]
    VersionMismatch {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// A key group to restore is in none of the files.
    #[error("key group {key_group} of {range} is in none of the {files} snapshot file(s)")]
    Missing {
        /// The key group.
        key_group: u32,
        /// The range being restored.
        range: KeyGroupRange,
        /// How many files were searched.
        files: usize,
    },
    /// A key group to restore is in two of the files.
    #[error(
        "key group {key_group} is in two snapshot files: {} and {}",
        first.display(),
        second.display()
    )]
    Overlap {
        /// The key group.
        key_group: u32,
        /// One file that holds it.
        first: PathBuf,
        /// Another file that holds it.
        second: PathBuf,
    },
    /// A key group was asked of a file that does not hold it.
    #[error(
        "snapshot file {} holds key groups {range}, not key group {key_group}",
        path.display()
    )]
    NotInFile {
        /// The file.
        path: PathBuf,
        /// The key group asked for.
        key_group: u32,
        /// The key groups the file holds.
        range: KeyGroupRange,
    },
    /// A file of a restore does not belong with the others or with the restoring subtask
    /// (another max parallelism, state name or type tag).
    #[error("snapshot file {} does not fit this restore: {reason}", path.display())]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What differs, with both values.
        reason: String,
    },
    /// rkyv could not serialize a key group (for example a section above the 2 GiB that
    /// 32-bit relative pointers reach).
    #[error("cannot serialize key group {key_group} into snapshot file {}: {reason}", path.display())]
    Serialize {
        /// The file being written.
        path: PathBuf,
        /// The key group.
        key_group: u32,
        /// rkyv's message.
        reason: String,
    },
}

impl SnapshotError {
    /// Whether the file's bytes are bad ([`Truncated`](Self::Truncated) or
    /// [`Corrupt`](Self::Corrupt)): retrying the same file will not help.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Self::Truncated { .. } | Self::Corrupt { .. })
    }

    /// Whether this is an I/O error, which may succeed when retried.
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io { .. })
    }

    /// The file the error is about, if it is about one file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Io { path, .. }
            | Self::Truncated { path, .. }
            | Self::Corrupt { path, .. }
            | Self::VersionMismatch { path, .. }
            | Self::NotInFile { path, .. }
            | Self::Incompatible { path, .. }
            | Self::Serialize { path, .. } => Some(path),
            Self::Missing { .. } | Self::Overlap { .. } => None,
        }
    }
}

fn in_key_group(key_group: Option<u32>) -> String {
    match key_group {
        Some(key_group) => format!(" in key group {key_group}"),
        None => String::new(),
    }
}
