//! Checking a checkpoint before restoring from it: [`verify`] reads `_metadata`, opens
//! every state file it names (validating header, index and footer), checks every key
//! group's checksum and that each keyed state's files fit together; [`latest_valid`]
//! picks the newest checkpoint that verifies.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::error::CheckpointError;
use super::layout::{list_completed, parse_checkpoint_dir_name, scan, shared_file_checkpoint_id};
use super::metadata::{
    read_metadata, CheckpointMetadata, KeyedStateFiles, OperatorSnapshot, METADATA_FILE_NAME,
};
use crate::error::SnapshotError;
use crate::key_group::KeyGroupRange;
use crate::snapshot::{plan_restore, SnapshotFile};

/// What a path given to [`latest_valid`] or `inspect_checkpoint` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// One checkpoint directory.
    Checkpoint(PathBuf),
    /// A root holding checkpoint directories.
    Root(PathBuf),
}

/// A checkpoint directory if `path` is a `_metadata` file, holds one, or is named
/// `chk-<id>`/`savepoint-<id>`; otherwise a root.
pub(crate) fn classify(path: &Path) -> Target {
    if path.file_name() == Some(METADATA_FILE_NAME.as_ref()) && path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        return Target::Checkpoint(dir.to_path_buf());
    }
    let named = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(parse_checkpoint_dir_name)
        .is_some();
    if named || path.join(METADATA_FILE_NAME).is_file() {
        Target::Checkpoint(path.to_path_buf())
    } else {
        Target::Root(path.to_path_buf())
    }
}

/// How much of a checkpoint [`verify_to`] and [`latest_valid_to`] check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// The metadata, every state file's header, index and footer, and that each keyed
    /// state's files fit together: everything but the sections' checksums. Reads a few
    /// KiB per file. A restore from a checkpoint checked this deep must check the
    /// checksum of each section it reads (the engine does, and falls back to an older
    /// checkpoint when one fails).
    Layout,
    /// Also every key group's checksum (and archive): reads every section once.
    Full,
}

/// Reads the metadata of `checkpoint_dir`, opens every state file it names with
/// [`SnapshotFile::open`] and checks every key group's CRC-32, and checks that the files
/// of each keyed state have the metadata's max parallelism and the state's name, agree on
/// the type tag, and together hold every key group exactly once (so a restore at any
/// parallelism finds each key group). Also checks that a directory named
/// `chk-<id>`/`savepoint-<id>` holds that checkpoint's metadata. Returns the metadata;
/// the first problem is an error naming the file (and the key group).
///
/// The files are opened and matched one by one; their key groups' checksums are then
/// checked on every core (a restore waits for this), and the problem reported is the
/// first in file order. [`verify_to`] with [`Depth::Layout`] leaves the checksums out.
pub fn verify(checkpoint_dir: &Path) -> Result<CheckpointMetadata, CheckpointError> {
    verify_to(checkpoint_dir, Depth::Full)
}

/// [`verify`], as deep as `depth`.
pub fn verify_to(
    checkpoint_dir: &Path,
    depth: Depth,
) -> Result<CheckpointMetadata, CheckpointError> {
    let metadata = read_metadata(checkpoint_dir)?;
    check_dir_name(checkpoint_dir, &metadata)?;
    let mut opened = open_all(checkpoint_dir, &metadata);
    let mut files = Vec::new();
    for operator in &metadata.operators {
        for state in &operator.keyed_states {
            open_keyed_state(
                checkpoint_dir,
                &metadata,
                &mut opened,
                operator,
                state,
                &mut files,
            )?;
        }
    }
    if depth == Depth::Full {
        check_sections(&files)?;
    }
    Ok(metadata)
}

/// A state file opened by [`verify`], with what names it in an error.
struct Opened<'m> {
    operator: &'m OperatorSnapshot,
    state: &'m KeyedStateFiles,
    file: SnapshotFile,
    /// Key groups whose sections no restore reads (a delta's, for key groups
    /// whose base is newer than it), ascending; their checksums are not
    /// checked here (`inspect` checks them).
    unread: Vec<u32>,
}

/// Checks every non-empty key group's checksum (and archive) of `files`, striped over
/// the available cores; the error is the first in the order of `files` and key groups.
fn check_sections(files: &[Opened<'_>]) -> Result<(), CheckpointError> {
    let sections: Vec<(usize, u32)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, opened)| {
            opened
                .file
                .index()
                .iter()
                .filter(|entry| entry.size_bytes > 0)
                .filter(|entry| opened.unread.binary_search(&entry.key_group).is_err())
                .map(move |entry| (i, entry.key_group))
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, sections.len().max(1));
    let check_stripe = |stripe: usize| {
        sections
            .iter()
            .enumerate()
            .skip(stripe)
            .step_by(threads)
            .find_map(|(at, &(i, key_group))| {
                let opened = &files[i];
                let error = opened.file.section(key_group).err()?;
                Some((at, state_error(opened.operator, opened.state, error)))
            })
    };
    let first = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|stripe| scope.spawn(move || check_stripe(stripe)))
            .collect();
        let mut errors: Vec<(usize, CheckpointError)> = check_stripe(0).into_iter().collect();
        for helper in helpers {
            errors.extend(helper.join().expect("a checksum thread panicked"));
        }
        errors.into_iter().min_by_key(|(at, _)| *at)
    });
    match first {
        Some((_, error)) => Err(error),
        None => Ok(()),
    }
}

fn check_dir_name(dir: &Path, metadata: &CheckpointMetadata) -> Result<(), CheckpointError> {
    let named = dir
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(parse_checkpoint_dir_name);
    match named {
        Some((id, savepoint))
            if (id, savepoint) != (metadata.checkpoint_id, metadata.savepoint) =>
        {
            Err(CheckpointError::Corrupt {
                path: dir.join(METADATA_FILE_NAME),
                reason: format!(
                    "the directory is named for {}, the metadata is of {}",
                    describe(id, savepoint),
                    describe(metadata.checkpoint_id, metadata.savepoint)
                ),
            })
        }
        _ => Ok(()),
    }
}

fn describe(id: u64, savepoint: bool) -> String {
    if savepoint {
        format!("savepoint {id}")
    } else {
        format!("checkpoint {id}")
    }
}

/// Opens one state file; a missing file is [`CheckpointError::MissingStateFile`].
pub(crate) fn open_state_file(
    dir: &Path,
    operator: &OperatorSnapshot,
    state: &KeyedStateFiles,
    file: &str,
) -> Result<SnapshotFile, CheckpointError> {
    let path = dir.join(file);
    opened_state_file(path.clone(), SnapshotFile::open(&path), operator, state)
}

/// [`open_state_file`]'s result, from a file opened before.
fn opened_state_file(
    path: PathBuf,
    opened: Result<SnapshotFile, SnapshotError>,
    operator: &OperatorSnapshot,
    state: &KeyedStateFiles,
) -> Result<SnapshotFile, CheckpointError> {
    opened.map_err(|error| match error {
        SnapshotError::Io { error, .. } if error.kind() == io::ErrorKind::NotFound => {
            CheckpointError::MissingStateFile {
                path,
                node: operator.node,
                operator: operator.name.clone(),
                state: state.name.clone(),
            }
        }
        error => state_error(operator, state, error),
    })
}

pub(crate) fn state_error(
    operator: &OperatorSnapshot,
    state: &KeyedStateFiles,
    error: SnapshotError,
) -> CheckpointError {
    CheckpointError::StateFile {
        node: operator.node,
        operator: operator.name.clone(),
        state: state.name.clone(),
        error,
    }
}

/// Whether a state file's header names the state and max parallelism the metadata
/// gives; `Some(reason)` if not.
pub(crate) fn header_mismatch(
    file: &SnapshotFile,
    state: &KeyedStateFiles,
    max_parallelism: u32,
) -> Option<String> {
    let meta = file.meta();
    if meta.state_name != state.name {
        Some(format!(
            "it holds state {:?}, the checkpoint metadata names state {:?}",
            meta.state_name, state.name
        ))
    } else if meta.max_parallelism != max_parallelism {
        Some(format!(
            "max parallelism {}, the checkpoint metadata has {max_parallelism}",
            meta.max_parallelism
        ))
    } else {
        None
    }
}

/// Opens the files of one keyed state into `opened` (taking those `open_all`
/// opened ahead) and checks that they fit together; their sections are
/// checked later, all at once.
fn open_keyed_state<'m>(
    dir: &Path,
    metadata: &CheckpointMetadata,
    pre_opened: &mut PreOpened,
    operator: &'m OperatorSnapshot,
    state: &'m KeyedStateFiles,
    opened: &mut Vec<Opened<'m>>,
) -> Result<(), CheckpointError> {
    let mut open = |name: &String| {
        let path = dir.join(name);
        let file = match pre_opened.remove(&path) {
            Some(file) => file,
            None => SnapshotFile::open(&path),
        };
        let file = opened_state_file(path, file, operator, state)?;
        check_header(file, metadata, operator, state)
    };
    let files = state
        .files
        .iter()
        .map(&mut open)
        .collect::<Result<Vec<_>, _>>()?;
    // `check` keeps max parallelism in 1..=MAX_PARALLELISM_BOUND, as `plan_restore` needs.
    let all = KeyGroupRange::new(0, metadata.max_parallelism - 1);
    let plan = plan_restore(&files, metadata.max_parallelism, all)
        .map_err(|error| state_error(operator, state, error))?;
    let base_ids: Vec<Option<u64>> = plan.iter().map(|(_, file)| written_by(file)).collect();
    // Changelog files only need to be sound: they cover what their bases cover.
    let deltas = state
        .deltas
        .iter()
        .map(&mut open)
        .collect::<Result<Vec<_>, _>>()?;
    let deltas: Vec<Opened<'m>> = deltas
        .into_iter()
        .map(|file| {
            let id = written_by(&file);
            let unread = file
                .key_groups()
                .iter()
                .filter(|&key_group| {
                    let base = base_ids.get(key_group as usize).copied().flatten();
                    !replayed_over(id, base)
                })
                .collect();
            Opened {
                operator,
                state,
                file,
                unread,
            }
        })
        .collect();
    let bases = files.into_iter().map(|file| Opened {
        operator,
        state,
        file,
        unread: Vec::new(),
    });
    opened.extend(bases.chain(deltas));
    Ok(())
}

/// The checkpoint that wrote `file` into the root's shared directory, from the
/// id its name starts with (see [`shared_file_name`](super::layout::shared_file_name));
/// `None` for other files.
pub fn written_by(file: &SnapshotFile) -> Option<u64> {
    let name = file.path().file_name()?.to_str()?;
    shared_file_checkpoint_id(name)
}

/// Whether a restore replays a delta written by checkpoint `delta` over a key
/// group whose base checkpoint `base` wrote (ids from [`written_by`]): only a
/// delta written after the base holds changes the base does not. Where
/// either id is unknown, the delta is replayed (a chain with one base per
/// subtask, whose deltas all follow it).
pub fn replayed_over(delta: Option<u64>, base: Option<u64>) -> bool {
    !matches!((delta, base), (Some(delta), Some(base)) if delta <= base)
}

/// Checks that a state file's header fits the metadata.
fn check_header(
    file: SnapshotFile,
    metadata: &CheckpointMetadata,
    operator: &OperatorSnapshot,
    state: &KeyedStateFiles,
) -> Result<SnapshotFile, CheckpointError> {
    if let Some(reason) = header_mismatch(&file, state, metadata.max_parallelism) {
        let path = file.path().to_path_buf();
        return Err(state_error(
            operator,
            state,
            SnapshotError::Incompatible { path, reason },
        ));
    }
    Ok(file)
}

/// State files opened ahead, by path.
type PreOpened = HashMap<PathBuf, Result<SnapshotFile, SnapshotError>>;

/// Threads that open a checkpoint's files at once.
const OPEN_THREADS: usize = 8;

/// Opens every state file `metadata` names, on up to [`OPEN_THREADS`] threads.
/// Opening reads a file's header, and its index and footer at the end: on a
/// cold disk a few waits each, which threads overlap where the device serves
/// reads in parallel. This VM's disk barely does: the 50 files of the
/// `checkpoint` bench's longest chain, page cache dropped, took 455-573 ms
/// to check one by one and 378-497 ms on 8 threads (2 runs each).
fn open_all(dir: &Path, metadata: &CheckpointMetadata) -> PreOpened {
    let paths: Vec<PathBuf> = metadata
        .operators
        .iter()
        .flat_map(|o| &o.keyed_states)
        .flat_map(|state| state.files.iter().chain(&state.deltas))
        .map(|name| dir.join(name))
        .collect();
    let threads = OPEN_THREADS.min(paths.len());
    if threads <= 1 {
        return HashMap::new();
    }
    let open_stripe = |stripe: usize| {
        paths
            .iter()
            .skip(stripe)
            .step_by(threads)
            .map(|path| (path.clone(), SnapshotFile::open(path)))
            .collect::<Vec<_>>()
    };
    std::thread::scope(|scope| {
        let stripes: Vec<_> = (0..threads)
            .map(|stripe| scope.spawn(move || open_stripe(stripe)))
            .collect();
        stripes
            .into_iter()
            .flat_map(|stripe| {
                stripe
                    .join()
                    .expect("a thread opening state files panicked")
            })
            .collect()
    })
}

/// The checkpoint to restore from. Given a checkpoint directory (one that holds
/// `_metadata` or is named `chk-<id>`/`savepoint-<id>`, or its `_metadata` file), it
/// [`verify`]s just that one and fails with its error. Given a root, it tries the
/// completed checkpoints and savepoints newest first and returns the first that
/// verifies, its metadata, and the newer ones it skipped with why; if none verifies, the
/// error lists every one tried.
///
/// Every failure makes it fall back, I/O errors included: check
/// [`CheckpointError::is_io`] on the skipped ones to tell a retryable read failure from
/// corruption.
// The tuple is the interface the engine was promised; its parts are documented above.
#[allow(clippy::type_complexity)]
pub fn latest_valid(
    root_or_checkpoint_dir: &Path,
) -> Result<(PathBuf, CheckpointMetadata, Vec<(PathBuf, CheckpointError)>), CheckpointError> {
    latest_valid_to(root_or_checkpoint_dir, Depth::Full, &[])
}

/// [`latest_valid`], verifying each candidate as deep as `depth`, and skipping the
/// checkpoint directories in `set_aside` (each with why, reported as
/// [`CheckpointError::SetAside`]) as if they had failed. A single checkpoint directory
/// that is set aside fails with that error.
#[allow(clippy::type_complexity)]
pub fn latest_valid_to(
    root_or_checkpoint_dir: &Path,
    depth: Depth,
    set_aside: &[(PathBuf, String)],
) -> Result<(PathBuf, CheckpointMetadata, Vec<(PathBuf, CheckpointError)>), CheckpointError> {
    let check = |dir: &Path| match set_aside.iter().find(|(aside, _)| aside == dir) {
        Some((path, reason)) => Err(CheckpointError::SetAside {
            path: path.clone(),
            reason: reason.clone(),
        }),
        None => verify_to(dir, depth),
    };
    let root = match classify(root_or_checkpoint_dir) {
        Target::Checkpoint(dir) => {
            let metadata = check(&dir)?;
            return Ok((dir, metadata, Vec::new()));
        }
        Target::Root(root) => root,
    };
    let mut skipped = Vec::new();
    for (_, dir) in list_completed(&root)? {
        match check(&dir) {
            Ok(metadata) => return Ok((dir, metadata, skipped)),
            Err(error) => skipped.push((dir, error)),
        }
    }
    let incomplete = scan(&root)?
        .iter()
        .filter(|entry| entry.is_dir && !entry.complete)
        .count();
    Err(CheckpointError::NoValidCheckpoint {
        root,
        tried: skipped,
        incomplete,
    })
}
