//! The `_metadata` file of a checkpoint: what the checkpoint holds ([`CheckpointMetadata`])
//! and its byte format. It is the last file written into a checkpoint directory, and its
//! presence is what makes the checkpoint complete, so [`write_metadata`] writes it
//! atomically: `._metadata.tmp`, fsync, rename to `_metadata`, fsync the directory (and
//! the root, which holds the directory's entry).
//!
//! Format, version 1 (integers little-endian):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic: ASCII `RHEONCKP` |
//! | 8 | 4 | format version: `1` |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | payload length `n` |
//! | 24 | 4 | CRC-32 (`crc32fast`) of the payload |
//! | 28 | 4 | reserved, zero |
//! | 32 | n | payload: the rkyv archive of [`CheckpointMetadata`] (root at the end) |
//!
//! The file ends with the payload. As in snapshot files, the magic and version come first
//! in every version, and an unknown version is a version mismatch, not corruption. The
//! payload is copied into an aligned buffer and accessed with rkyv's checked API, then
//! checked for consistency ([`CheckpointMetadata::check`]); bad bytes are an error naming
//! the file, never a panic.
//!
//! [`encode_metadata`] and [`decode_metadata`] are the pure byte functions; the rest is
//! the file-system edge.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::error::CheckpointError;
use crate::key_group::MAX_PARALLELISM_BOUND;
use crate::snapshot::RkyvError;

/// The name of the metadata file in a checkpoint directory.
pub const METADATA_FILE_NAME: &str = "_metadata";

/// The temporary name `_metadata` is written under before the rename.
pub const METADATA_TEMP_FILE_NAME: &str = "._metadata.tmp";

/// The first 8 bytes of a `_metadata` file.
pub const METADATA_MAGIC: [u8; 8] = *b"RHEONCKP";

/// The format version this build writes and reads.
pub const METADATA_FORMAT_VERSION: u32 = 2;

/// Bytes before the payload.
pub const METADATA_HEADER_BYTES: usize = 32;

/// Largest payload: rkyv's 32-bit relative pointers reach 2 GiB.
pub const METADATA_PAYLOAD_BYTES_MAX: u64 = (1 << 31) - 1;

const _: () = assert!(
    METADATA_HEADER_BYTES % 16 == 0,
    "the payload stays 16-aligned"
);

/// What a completed checkpoint holds: written by the checkpoint coordinator once every
/// task has acknowledged, read on restore.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CheckpointMetadata {
    /// The checkpoint's id, as in its directory name (`chk-<id>`, `savepoint-<id>`).
    pub checkpoint_id: u64,
    /// When the checkpoint was triggered, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The job's name.
    pub job_name: String,
    /// The job's max parallelism: the number of key groups of every keyed state.
    pub max_parallelism: u32,
    /// Whether this is a savepoint (triggered by a user, never subsumed).
    pub savepoint: bool,
    /// One entry per operator with state.
    pub operators: Vec<OperatorSnapshot>,
}

/// The state of one operator (all its subtasks) in a checkpoint.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OperatorSnapshot {
    /// The operator's id in the job (stable for the same program).
    pub node: u32,
    /// The operator's name.
    pub name: String,
    /// The operator's parallelism when the checkpoint was taken.
    pub parallelism: u32,
    /// The operator's keyed states, one set of files each.
    pub keyed_states: Vec<KeyedStateFiles>,
    /// Opaque operator-state elements from all subtasks, redistributed on restore.
    pub operator_state: Vec<Vec<u8>>,
    /// In-flight buffers of unaligned checkpoints.
    pub channel_state: Vec<ChannelStateEntry>,
}

/// The snapshot files of one keyed state: one per old subtask with a non-empty key-group
/// range. Together they must cover every key group exactly once (what
/// [`verify`](fn@super::verify) checks).
///
/// An incremental checkpoint's state is a chain: `files` are full snapshots (bases)
/// taken at earlier checkpoints, and `deltas` are changelog files, each covering the
/// key groups of one base, that a restore replays over the bases in their order. Both
/// then sit in the root's shared directory ([`SHARED_DIR_NAME`]), named from the
/// checkpoint directory as `../shared/<file>`, because later checkpoints share them.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KeyedStateFiles {
    /// The state's name, as in its snapshot files' headers.
    pub name: String,
    /// Full snapshot files: plain names relative to the checkpoint directory, or
    /// `../shared/<file>`.
    pub files: Vec<String>,
    /// Changelog files, oldest first per key-group range, named as `files` are.
    pub deltas: Vec<String>,
}

/// The directory under a checkpoint root that holds the state files incremental
/// checkpoints share.
pub const SHARED_DIR_NAME: &str = "shared";

/// Whether `file` is a state file name a checkpoint may hold: a plain relative path, or
/// `../shared/<name>` (a file in the root's shared directory).
pub fn is_state_file_name(file: &str) -> bool {
    let path = Path::new(file);
    let mut components = path.components();
    let plain = |mut rest: std::path::Components<'_>| {
        rest.next()
            .is_some_and(|c| matches!(c, Component::Normal(_)))
            && rest.all(|c| matches!(c, Component::Normal(_)))
    };
    match components.next() {
        Some(Component::ParentDir) => {
            components.next() == Some(Component::Normal(SHARED_DIR_NAME.as_ref()))
                && components.clone().count() == 1
                && plain(components)
        }
        Some(Component::Normal(_)) => plain(path.components()),
        _ => false,
    }
}

/// The in-flight buffers of one input channel of one subtask (unaligned checkpoints).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChannelStateEntry {
    /// The subtask index.
    pub subtask: u32,
    /// The input channel's index at that subtask.
    pub input_channel: u32,
    /// The buffers, in arrival order.
    pub buffers: Vec<Vec<u8>>,
}

impl CheckpointMetadata {
    /// Checks what the types cannot express: max parallelism in
    /// `1..=MAX_PARALLELISM_BOUND`, every parallelism at least 1, node ids distinct,
    /// keyed-state names distinct per operator, state file names relative and without
    /// `.` or `..`. Returns what does not hold.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_PARALLELISM_BOUND).contains(&self.max_parallelism) {
            return Err(format!(
                "max parallelism {} is outside 1..={MAX_PARALLELISM_BOUND}",
                self.max_parallelism
            ));
        }
        let mut nodes: Vec<u32> = self.operators.iter().map(|op| op.node).collect();
        nodes.sort_unstable();
        if let Some(pair) = nodes.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!("operator node {} appears twice", pair[0]));
        }
        for op in &self.operators {
            if op.parallelism == 0 {
                return Err(format!(
                    "operator {} ({:?}) has parallelism 0",
                    op.node, op.name
                ));
            }
            let mut names: Vec<&str> = op.keyed_states.iter().map(|s| s.name.as_str()).collect();
            names.sort_unstable();
            if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(format!(
                    "operator {} ({:?}) has two keyed states named {:?}",
                    op.node, op.name, pair[0]
                ));
            }
            for state in &op.keyed_states {
                for file in state.files.iter().chain(&state.deltas) {
                    if !is_state_file_name(file) {
                        return Err(format!(
                            "state file {file:?} of state {:?} of operator {} is neither a \
                             plain relative path nor ../{SHARED_DIR_NAME}/<file>",
                            state.name, op.node
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The bytes of a `_metadata` file for `metadata`; `path` names the file in errors.
///
/// Panics if `metadata` fails [`CheckpointMetadata::check`]: the coordinator builds it.
pub fn encode_metadata(
    path: &Path,
    metadata: &CheckpointMetadata,
) -> Result<Vec<u8>, CheckpointError> {
    if let Err(reason) = metadata.check() {
        panic!(
            "invalid checkpoint metadata for {}: {reason}",
            path.display()
        );
    }
    let payload =
        rkyv::to_bytes::<RkyvError>(metadata).map_err(|error| CheckpointError::Serialize {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    let payload_len = payload.len() as u64;
    if payload_len > METADATA_PAYLOAD_BYTES_MAX {
        return Err(CheckpointError::Serialize {
            path: path.to_path_buf(),
            reason: format!(
                "the archive has {payload_len} bytes, above the limit of \
                 {METADATA_PAYLOAD_BYTES_MAX}"
            ),
        });
    }
    let mut bytes = Vec::with_capacity(METADATA_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&METADATA_MAGIC);
    bytes.extend_from_slice(&METADATA_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&payload_len.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    debug_assert_eq!(bytes.len(), METADATA_HEADER_BYTES);
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// Decodes and validates the bytes of a `_metadata` file; `path` names it in errors.
pub fn decode_metadata(path: &Path, bytes: &[u8]) -> Result<CheckpointMetadata, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let size_bytes = bytes.len() as u64;
    let magic_len = bytes.len().min(METADATA_MAGIC.len());
    if bytes[..magic_len] != METADATA_MAGIC[..magic_len] {
        return Err(corrupt(format!(
            "it starts with {}, not the magic \"RHEONCKP\": not a checkpoint metadata file",
            escape(&bytes[..magic_len])
        )));
    }
    if bytes.len() < METADATA_HEADER_BYTES {
        return Err(CheckpointError::Truncated {
            path: path.to_path_buf(),
            size_bytes,
            reason: format!("the header needs {METADATA_HEADER_BYTES} bytes"),
        });
    }
    let u32_at =
        |offset: usize| u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if version != METADATA_FORMAT_VERSION {
        return Err(CheckpointError::VersionMismatch {
            path: path.to_path_buf(),
            found: version,
            expected: METADATA_FORMAT_VERSION,
        });
    }
    for offset in [12, 28] {
        let value = u32_at(offset);
        if value != 0 {
            return Err(corrupt(format!(
                "reserved field at offset {offset} is {value:#x}, not 0"
            )));
        }
    }
    let payload_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if payload_len > METADATA_PAYLOAD_BYTES_MAX {
        return Err(corrupt(format!(
            "payload length {payload_len} is above the limit of {METADATA_PAYLOAD_BYTES_MAX}"
        )));
    }
    let present = size_bytes - METADATA_HEADER_BYTES as u64;
    if present < payload_len {
        return Err(CheckpointError::Truncated {
            path: path.to_path_buf(),
            size_bytes,
            reason: format!("the header announces {payload_len} payload bytes, {present} follow"),
        });
    }
    if present > payload_len {
        return Err(corrupt(format!(
            "{} bytes follow the {payload_len}-byte payload",
            present - payload_len
        )));
    }
    let payload = &bytes[METADATA_HEADER_BYTES..];
    let stored = u32_at(24);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(corrupt(format!(
            "payload checksum mismatch: stored {stored:#010x}, computed {computed:#010x} over \
             {payload_len} bytes"
        )));
    }
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let metadata = rkyv::from_bytes::<CheckpointMetadata, RkyvError>(&aligned)
        .map_err(|error| corrupt(format!("invalid archive: {error}")))?;
    metadata.check().map_err(corrupt)?;
    Ok(metadata)
}

/// Writes `metadata` to `checkpoint_dir/_metadata` atomically (temporary file, fsync,
/// rename, fsync of the directory and of its parent) and returns that path. Creates the
/// directory if needed. On error the temporary file is removed and no `_metadata`
/// appears.
///
/// Panics if `metadata` fails [`CheckpointMetadata::check`].
pub fn write_metadata(
    checkpoint_dir: &Path,
    metadata: &CheckpointMetadata,
) -> Result<PathBuf, CheckpointError> {
    let path = checkpoint_dir.join(METADATA_FILE_NAME);
    let bytes = encode_metadata(&path, metadata)?;
    fs::create_dir_all(checkpoint_dir)
        .map_err(CheckpointError::io(checkpoint_dir, "create the directory"))?;
    let temp = checkpoint_dir.join(METADATA_TEMP_FILE_NAME);
    write_file_atomically(&path, &temp, &bytes)?;
    // The root holds the checkpoint directory's own entry.
    match checkpoint_dir.parent() {
        Some(root) if !root.as_os_str().is_empty() => sync_directory(root)?,
        Some(_) => sync_directory(Path::new("."))?,
        None => {} // The checkpoint directory is `/`.
    }
    Ok(path)
}

/// Writes `bytes` to `path` atomically: into `temp` (in the same directory),
/// fsync, rename over `path`, fsync of the directory. On error `temp` is
/// removed and `path` is as it was.
pub fn write_file_atomically(
    path: &Path,
    temp: &Path,
    bytes: &[u8],
) -> Result<(), CheckpointError> {
    let result = (|| {
        let mut file = File::create(temp).map_err(CheckpointError::io(temp, "create"))?;
        file.write_all(bytes)
            .map_err(CheckpointError::io(temp, "write"))?;
        file.sync_all()
            .map_err(CheckpointError::io(temp, "fsync"))?;
        drop(file);
        fs::rename(temp, path).map_err(CheckpointError::io(path, "rename into place"))?;
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => sync_directory(dir),
            _ => sync_directory(Path::new(".")),
        }
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than a leftover temp file.
        let _ = fs::remove_file(temp);
    }
    result
}

/// Reads and validates a `_metadata` file, given its checkpoint directory or the file.
pub fn read_metadata(
    checkpoint_dir_or_metadata_file: &Path,
) -> Result<CheckpointMetadata, CheckpointError> {
    let path = metadata_path(checkpoint_dir_or_metadata_file);
    let bytes = fs::read(&path).map_err(CheckpointError::io(&path, "read"))?;
    decode_metadata(&path, &bytes)
}

/// The `_metadata` path for a checkpoint directory or the `_metadata` file itself.
pub(crate) fn metadata_path(checkpoint_dir_or_metadata_file: &Path) -> PathBuf {
    let path = checkpoint_dir_or_metadata_file;
    let is_metadata_file = path.file_name() == Some(METADATA_FILE_NAME.as_ref()) && !path.is_dir();
    if is_metadata_file {
        path.to_path_buf()
    } else {
        path.join(METADATA_FILE_NAME)
    }
}

pub(crate) fn sync_directory(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(CheckpointError::io(dir, "fsync the directory"))
}

/// Bytes as a quoted string, non-printable ones as `\xNN`.
fn escape(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint_id: 3,
            timestamp_ms: 1_700_000_000_000,
            job_name: "job".into(),
            max_parallelism: 8,
            savepoint: false,
            operators: vec![OperatorSnapshot {
                node: 1,
                name: "count".into(),
                parallelism: 2,
                keyed_states: vec![KeyedStateFiles {
                    name: "counts".into(),
                    files: vec!["a".into(), "sub/b".into()],
                    deltas: vec!["../shared/chk2-d.snap".into()],
                }],
                operator_state: vec![vec![1, 2]],
                channel_state: vec![],
            }],
        }
    }

    #[test]
    fn round_trip_and_header() {
        let path = Path::new("mem/_metadata");
        let bytes = encode_metadata(path, &sample()).unwrap();
        assert_eq!(&bytes[..8], b"RHEONCKP");
        assert_eq!(bytes[8..12], 2u32.to_le_bytes());
        assert_eq!(
            u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
            (bytes.len() - METADATA_HEADER_BYTES) as u64
        );
        assert_eq!(decode_metadata(path, &bytes).unwrap(), sample());
    }

    type Mutation = fn(&mut CheckpointMetadata);

    #[test]
    fn check_rejects_what_the_types_allow() {
        let cases: Vec<(&str, Mutation)> = vec![
            ("max parallelism 0", (|m| m.max_parallelism = 0)),
            (
                "appears twice",
                (|m| m.operators.push(m.operators[0].clone())),
            ),
            ("parallelism 0", (|m| m.operators[0].parallelism = 0)),
            (
                "two keyed states",
                (|m| {
                    let state = m.operators[0].keyed_states[0].clone();
                    m.operators[0].keyed_states.push(state);
                }),
            ),
            (
                "is neither a plain relative path",
                (|m| m.operators[0].keyed_states[0].files[0] = "../x".into()),
            ),
            (
                "is neither a plain relative path",
                (|m| m.operators[0].keyed_states[0].files[0] = "/abs".into()),
            ),
            (
                "is neither a plain relative path",
                (|m| m.operators[0].keyed_states[0].files[0] = String::new()),
            ),
            (
                "is neither a plain relative path",
                (|m| m.operators[0].keyed_states[0].files[0] = "../shared".into()),
            ),
            (
                "is neither a plain relative path",
                (|m| m.operators[0].keyed_states[0].files[0] = "../shared/a/b".into()),
            ),
            (
                "is neither a plain relative path",
                (|m| m.operators[0].keyed_states[0].files[0] = "../other/a".into()),
            ),
            (
                "is neither a plain relative path",
                (|m| m.operators[0].keyed_states[0].files[0] = "a/../../b".into()),
            ),
            (
                "is neither a plain relative path",
                (|m| m.operators[0].keyed_states[0].deltas.push("../x".into())),
            ),
        ];
        for (expected, mutate) in cases {
            let mut metadata = sample();
            mutate(&mut metadata);
            let reason = metadata.check().unwrap_err();
            assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
        }
    }

    #[test]
    fn shared_and_plain_state_file_names_pass() {
        for name in ["a.snap", "sub/a.snap", "../shared/chk3-a.snap"] {
            assert!(is_state_file_name(name), "{name}");
        }
        let mut metadata = sample();
        metadata.operators[0].keyed_states[0].deltas = vec!["../shared/d".into()];
        metadata.operators[0].keyed_states[0].files[0] = "../shared/b".into();
        assert_eq!(metadata.check(), Ok(()));
    }

    #[test]
    fn header_errors_are_classified() {
        let path = Path::new("mem/_metadata");
        let good = encode_metadata(path, &sample()).unwrap();
        let expect = |bytes: &[u8], expected: &str| {
            let error = decode_metadata(path, bytes).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            assert!(message.contains("mem/_metadata"), "{message:?}");
        };
        expect(&[], "truncated (0 bytes)");
        expect(b"RHEON", "truncated (5 bytes)");
        expect(b"hello", "not the magic");
        expect(&good[..good.len() - 1], "payload bytes");
        let mut longer = good.clone();
        longer.push(0);
        expect(&longer, "1 bytes follow");
        let mut version = good.clone();
        version[8] = 1;
        expect(&version, "format version 1; this build reads version 2");
        let mut reserved = good.clone();
        reserved[12] = 1;
        expect(&reserved, "reserved field at offset 12");
        let mut length = good.clone();
        length[23] = 0xff;
        expect(&length, "above the limit");
        let mut payload = good.clone();
        *payload.last_mut().unwrap() ^= 1;
        expect(&payload, "checksum mismatch");
    }
}
