//! The checkpoint root: one directory per checkpoint, `chk-<id>` (periodic) or
//! `savepoint-<id>`, ids decimal without padding and shared by both kinds. A directory is
//! complete once it holds `_metadata`; incomplete ones are ignored by readers.
//!
//! [`scan`] reads the facts (names, completeness) and pure functions decide: which
//! checkpoints are completed and in which order, the next id, what [`subsume`] deletes
//! ([`plan_subsume`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::CheckpointError;
use super::metadata::{read_metadata, sync_directory, METADATA_FILE_NAME, SHARED_DIR_NAME};

/// The prefix of periodic checkpoint directories.
pub const CHECKPOINT_DIR_PREFIX: &str = "chk-";

/// The prefix of savepoint directories.
pub const SAVEPOINT_DIR_PREFIX: &str = "savepoint-";

/// The directory name of checkpoint `id`: `chk-<id>`, or `savepoint-<id>`.
pub fn checkpoint_dir_name(id: u64, savepoint: bool) -> String {
    let prefix = if savepoint {
        SAVEPOINT_DIR_PREFIX
    } else {
        CHECKPOINT_DIR_PREFIX
    };
    format!("{prefix}{id}")
}

/// `(id, savepoint)` of a checkpoint directory name, exactly as [`checkpoint_dir_name`]
/// writes it: no sign, no leading zero, below `u64::MAX` (so the next id exists). Other
/// names (`chk-007`, `chk-1.old`) are not checkpoints.
pub fn parse_checkpoint_dir_name(name: &str) -> Option<(u64, bool)> {
    let (digits, savepoint) = if let Some(rest) = name.strip_prefix(CHECKPOINT_DIR_PREFIX) {
        (rest, false)
    } else {
        (name.strip_prefix(SAVEPOINT_DIR_PREFIX)?, true)
    };
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    let id: u64 = digits.parse().ok()?;
    (id < u64::MAX).then_some((id, savepoint))
}

/// One entry of a checkpoint root whose name is a checkpoint directory's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointDirEntry {
    /// Its path.
    pub path: PathBuf,
    /// The id in its name.
    pub id: u64,
    /// Whether it is named `savepoint-<id>`.
    pub savepoint: bool,
    /// Whether it is a directory (a file of that name still blocks the id).
    pub is_dir: bool,
    /// Whether it is a directory holding `_metadata`.
    pub complete: bool,
}

/// Every entry of `root` named like a checkpoint directory, newest (highest id) first;
/// for one id, the periodic checkpoint before the savepoint. A missing or unreadable
/// root is an error naming it.
pub fn scan(root: &Path) -> Result<Vec<CheckpointDirEntry>, CheckpointError> {
    let list_error = CheckpointError::io(root, "list the checkpoint root");
    let mut out = Vec::new();
    for entry in fs::read_dir(root).map_err(list_error)? {
        let entry = entry.map_err(CheckpointError::io(root, "list the checkpoint root"))?;
        let name = entry.file_name();
        let Some((id, savepoint)) = name.to_str().and_then(parse_checkpoint_dir_name) else {
            continue;
        };
        let path = entry.path();
        // Follows symbolic links, as opening the checkpoint would.
        let is_dir = match fs::metadata(&path) {
            Ok(meta) => meta.is_dir(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => false,
            Err(error) => return Err(CheckpointError::io(&path, "stat")(error)),
        };
        let complete = is_dir && {
            let metadata = path.join(METADATA_FILE_NAME);
            match fs::metadata(&metadata) {
                Ok(meta) => meta.is_file(),
                Err(error) if error.kind() == io::ErrorKind::NotFound => false,
                Err(error) => return Err(CheckpointError::io(&metadata, "stat")(error)),
            }
        };
        out.push(CheckpointDirEntry {
            path,
            id,
            savepoint,
            is_dir,
            complete,
        });
    }
    out.sort_by(|a, b| b.id.cmp(&a.id).then(a.savepoint.cmp(&b.savepoint)));
    Ok(out)
}

/// The completed checkpoints and savepoints under `root` (directories `chk-N` and
/// `savepoint-N` holding `_metadata`) as `(id, path)`, newest first. A missing root is an
/// error naming it.
pub fn list_completed(root: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    Ok(scan(root)?
        .into_iter()
        .filter(|entry| entry.complete)
        .map(|entry| (entry.id, entry.path))
        .collect())
}

/// One above the highest id of any `chk-`/`savepoint-` entry under `root`, complete or
/// not, or 1 if there is none (or the root does not exist or cannot be listed: then
/// creating the checkpoint directory will report the problem). A restarted process so
/// never reuses an id whose files may exist.
///
/// Files in the shared directory count too: their names start with the id of the
/// checkpoint that wrote them.
pub fn next_checkpoint_id(root: &Path) -> u64 {
    let shared = shared_files(root)
        .unwrap_or_default()
        .into_iter()
        .map(|(id, _)| id + 1)
        .max()
        .unwrap_or(1);
    next_id(&scan(root).unwrap_or_default()).max(shared)
}

/// The name of a state file checkpoint `id` writes into the shared directory: it starts
/// with the id, which [`collect_shared`] and [`next_checkpoint_id`] read back.
pub fn shared_file_name(id: u64, name: &str) -> String {
    format!("{id}-{name}")
}

/// The checkpoint id a shared directory entry belongs to: `<id>-...`, or its temporary
/// file `.<id>-....tmp`; `None` for other names.
pub fn shared_file_checkpoint_id(name: &str) -> Option<u64> {
    let name = name.strip_prefix('.').unwrap_or(name);
    let (digits, _) = name.split_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&id| id < u64::MAX)
}

/// `(checkpoint id, path)` of every entry of the root's shared directory with a
/// checkpoint id in its name; empty if there is no shared directory.
fn shared_files(root: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let dir = root.join(SHARED_DIR_NAME);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(CheckpointError::io(&dir, "list the shared directory")(
                error,
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(CheckpointError::io(&dir, "list the shared directory"))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(shared_file_checkpoint_id)
        {
            out.push((id, entry.path()));
        }
    }
    Ok(out)
}

/// Deletes the shared state files (those of incremental checkpoints) that no completed
/// checkpoint or savepoint under `root` references and that were written by checkpoint
/// `upto` or an older one; newer ones may belong to a checkpoint still being written.
/// Returns the deleted files. A completed checkpoint whose metadata cannot be read is
/// an error and nothing is deleted, since its references are unknown.
pub fn collect_shared(root: &Path, upto: u64) -> Result<Vec<PathBuf>, CheckpointError> {
    let candidates: Vec<(u64, PathBuf)> = shared_files(root)?
        .into_iter()
        .filter(|(id, _)| *id <= upto)
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let prefix = format!("../{SHARED_DIR_NAME}/");
    let mut referenced = std::collections::HashSet::new();
    for entry in scan(root)?.iter().filter(|e| e.complete) {
        let metadata = read_metadata(&entry.path)?;
        for operator in &metadata.operators {
            for state in &operator.keyed_states {
                for file in state.files.iter().chain(&state.deltas) {
                    if let Some(name) = file.strip_prefix(&prefix) {
                        referenced.insert(name.to_owned());
                    }
                }
            }
        }
    }
    let mut deleted = Vec::new();
    for (_, path) in candidates {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if referenced.contains(name) {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => deleted.push(path),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(CheckpointError::io(&path, "remove")(error)),
        }
    }
    Ok(deleted)
}

/// Deletes what checkpoints that never completed left under `root`: periodic
/// `chk-N` directories without `_metadata`, and shared state files no completed
/// checkpoint or savepoint references. Returns what it deleted.
///
/// Only for a root no job is writing into (its job ended and its snapshot writers
/// stopped): a checkpoint in progress looks just like an aborted one.
pub fn remove_incomplete(root: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let mut deleted = Vec::new();
    for entry in scan(root)? {
        if entry.is_dir && !entry.complete && !entry.savepoint {
            fs::remove_dir_all(&entry.path).map_err(CheckpointError::io(&entry.path, "remove"))?;
            deleted.push(entry.path);
        }
    }
    deleted.extend(collect_shared(root, u64::MAX)?);
    Ok(deleted)
}

fn next_id(entries: &[CheckpointDirEntry]) -> u64 {
    // Ids are below u64::MAX (see `parse_checkpoint_dir_name`).
    entries.iter().map(|e| e.id + 1).max().unwrap_or(1)
}

/// Which entries (indexes into `entries`, ascending) [`subsume`] deletes, keeping the
/// newest `retained` completed periodic checkpoints: older completed periodic checkpoints,
/// and incomplete periodic directories older than the newest completed periodic
/// checkpoint (aborted or crashed; completing a checkpoint subsumes the pending older
/// ones). Never savepoints, complete or not, and never entries that are not directories.
///
/// Panics if `retained` is 0: that would delete the checkpoint just completed.
pub fn plan_subsume(entries: &[CheckpointDirEntry], retained: usize) -> Vec<usize> {
    assert!(
        retained >= 1,
        "at least one completed checkpoint must be retained"
    );
    let mut completed: Vec<(u64, usize)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.savepoint && e.complete)
        .map(|(index, e)| (e.id, index))
        .collect();
    completed.sort_unstable_by(|a, b| b.cmp(a));
    let Some(&(newest, _)) = completed.first() else {
        return Vec::new();
    };
    let mut delete: Vec<usize> = completed
        .iter()
        .skip(retained)
        .map(|&(_, index)| index)
        .collect();
    delete.extend(
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.savepoint && e.is_dir && !e.complete && e.id < newest)
            .map(|(index, _)| index),
    );
    delete.sort_unstable();
    delete
}

/// Deletes what [`plan_subsume`] picks under `root` and returns the deleted directories,
/// newest first. A completed directory loses its `_metadata` first (and that is made
/// durable), so a crash while deleting leaves an incomplete directory, never a completed
/// checkpoint with files missing. Stops at the first error; a later call retries.
///
/// Panics if `retained` is 0.
pub fn subsume(root: &Path, retained: usize) -> Result<Vec<PathBuf>, CheckpointError> {
    let entries = scan(root)?;
    let mut deleted = Vec::new();
    for index in plan_subsume(&entries, retained) {
        let entry = &entries[index];
        if entry.complete {
            let metadata = entry.path.join(METADATA_FILE_NAME);
            match fs::remove_file(&metadata) {
                Ok(()) => sync_directory(&entry.path)?,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(CheckpointError::io(&metadata, "remove")(error)),
            }
        }
        match fs::remove_dir_all(&entry.path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(CheckpointError::io(&entry.path, "remove")(error)),
        }
        deleted.push(entry.path.clone());
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_canonical_names_parse() {
        assert_eq!(checkpoint_dir_name(7, false), "chk-7");
        assert_eq!(checkpoint_dir_name(12, true), "savepoint-12");
        for (id, savepoint) in [(0, false), (1, true), (42, false), (u64::MAX - 1, true)] {
            let name = checkpoint_dir_name(id, savepoint);
            assert_eq!(parse_checkpoint_dir_name(&name), Some((id, savepoint)));
        }
        for name in [
            "chk-",
            "chk-007",
            "chk-+7",
            "chk--7",
            "chk-7.old",
            "chk-18446744073709551615",
            "chk-99999999999999999999",
            "savepoint",
            "CHK-7",
            "x-chk-7",
            "_metadata",
        ] {
            assert_eq!(parse_checkpoint_dir_name(name), None, "{name}");
        }
    }

    /// Entries from `(name, kind)`: kind `c` complete, `i` incomplete directory, `f` file.
    fn entries(spec: &[(&str, char)]) -> Vec<CheckpointDirEntry> {
        spec.iter()
            .map(|&(name, kind)| {
                let (id, savepoint) = parse_checkpoint_dir_name(name).unwrap();
                CheckpointDirEntry {
                    path: PathBuf::from(name),
                    id,
                    savepoint,
                    is_dir: kind != 'f',
                    complete: kind == 'c',
                }
            })
            .collect()
    }

    fn planned(spec: &[(&str, char)], retained: usize) -> Vec<String> {
        let entries = entries(spec);
        plan_subsume(&entries, retained)
            .into_iter()
            .map(|index| entries[index].path.display().to_string())
            .collect()
    }

    #[test]
    fn subsume_plans() {
        let spec = [
            ("chk-8", 'i'),
            ("chk-6", 'c'),
            ("chk-5", 'c'),
            ("savepoint-4", 'c'),
            ("chk-3", 'c'),
            ("savepoint-2", 'i'),
            ("chk-2", 'i'),
            ("chk-1", 'c'),
            ("chk-0", 'f'),
        ];
        assert_eq!(planned(&spec, 1), ["chk-5", "chk-3", "chk-2", "chk-1"]);
        assert_eq!(planned(&spec, 2), ["chk-3", "chk-2", "chk-1"]);
        assert_eq!(planned(&spec, 4), ["chk-2"]);
        assert_eq!(planned(&spec, 10), ["chk-2"]);
        // Nothing completed: everything may be in progress.
        assert!(planned(&[("chk-2", 'i'), ("savepoint-1", 'c')], 1).is_empty());
        // A newer completed savepoint does not subsume pending periodic checkpoints.
        assert!(planned(&[("savepoint-3", 'c'), ("chk-2", 'i')], 1).is_empty());
    }

    #[test]
    fn next_id_counts_every_entry() {
        assert_eq!(next_id(&[]), 1);
        assert_eq!(next_id(&entries(&[("chk-3", 'c'), ("chk-1", 'c')])), 4);
        assert_eq!(next_id(&entries(&[("chk-9", 'i'), ("chk-3", 'c')])), 10);
        assert_eq!(
            next_id(&entries(&[("savepoint-5", 'c'), ("chk-3", 'c')])),
            6
        );
        assert_eq!(next_id(&entries(&[("chk-4", 'f')])), 5);
        assert_eq!(next_id(&entries(&[("chk-0", 'c')])), 1);
    }
}
