//! The record of a job that finished: `_finished` in the checkpoint root.
//!
//! When a job with checkpoints reaches the end of its input, the sinks'
//! last part files are committed without a checkpoint covering them. A
//! process killed during or after those commits would, restored from its
//! last checkpoint, replay the records after it and commit their output a
//! second time. So before the final commits the job master writes the list
//! of them here, atomically (temporary file, fsync, rename, fsync of the
//! root), as Flink's final checkpoint does for its sinks. A restore from a
//! root holding `_finished` replays those commits (idempotent renames) and
//! runs nothing. A job that starts in the root otherwise removes it.
//!
//! Layout: `RHEONFIN`, u32 LE version (1), u32 LE CRC-32 of the payload,
//! u64 LE payload length, then the payload: the job's name and its
//! `Vec<PendingFile>`, codec-encoded.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rheon_net::codec::Codec;

use crate::runtime::file_sink::PendingFile;

pub(crate) const FILE_NAME: &str = "_finished";
const MAGIC: &[u8; 8] = b"RHEONFIN";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 8;

/// What a finished job committed at its end.
#[derive(Debug, PartialEq)]
pub(crate) struct Finished {
    pub job: String,
    pub commits: Vec<PendingFile>,
}

pub(crate) fn path(root: &Path) -> PathBuf {
    root.join(FILE_NAME)
}

/// Writes `finished` to `root/_finished` atomically, creating `root` if it
/// does not exist yet (a job can finish before its first checkpoint).
pub(crate) fn write(root: &Path, finished: &Finished) -> Result<(), String> {
    fs::create_dir_all(root).map_err(|e| {
        format!(
            "cannot create the checkpoint directory {}: {e}",
            root.display()
        )
    })?;
    let job_len = finished.job.encoded_len();
    let mut payload = vec![0; job_len + finished.commits.encoded_len()];
    finished.job.encode(&mut payload[..job_len]);
    finished.commits.encode(&mut payload[job_len..]);
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let target = path(root);
    let temp = root.join(format!("{FILE_NAME}.inprogress"));
    rheon_state::checkpoint::write_file_atomically(&target, &temp, &bytes)
        .map_err(|e| e.to_string())
}

/// Reads `root/_finished`: `None` when there is none; an error naming the
/// file and what it expected when it is not one this version wrote whole.
pub(crate) fn read(root: &Path) -> Result<Option<Finished>, String> {
    let file = path(root);
    let bytes = match fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let corrupt = |what: &str| format!("{} is not a finished-job record: {what}", file.display());
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(corrupt(
            "expected it to start with RHEONFIN and a 24-byte header",
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let version = u32_at(8);
    if version != VERSION {
        return Err(corrupt(&format!("version {version}, expected {VERSION}")));
    }
    let crc = u32_at(12);
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(corrupt(&format!(
            "{} payload bytes, the header says {len}",
            payload.len()
        )));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("the payload's CRC-32 does not match the header's"));
    }
    let mut rest = payload;
    let job = String::decode(&mut rest).map_err(|e| corrupt(&e.to_string()))?;
    let commits = Vec::<PendingFile>::decode(&mut rest).map_err(|e| corrupt(&e.to_string()))?;
    if !rest.is_empty() {
        return Err(corrupt(&format!("{} bytes after the commits", rest.len())));
    }
    Ok(Some(Finished { job, commits }))
}

/// Removes `root/_finished` if there is one.
pub(crate) fn remove(root: &Path) -> Result<(), String> {
    match fs::remove_file(path(root)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", path(root).display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("rheon-finished-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        root
    }

    fn sample() -> Finished {
        Finished {
            job: "windows".into(),
            commits: vec![
                PendingFile {
                    temp: "/out/.part-0-3.inprogress".into(),
                    target: "/out/part-0-3".into(),
                },
                PendingFile {
                    temp: "/out/.part-1-2.inprogress".into(),
                    target: "/out/part-1-2".into(),
                },
            ],
        }
    }

    #[test]
    fn a_job_that_finishes_before_its_first_checkpoint_creates_the_root() {
        let root = temp_root("no-root").join("checkpoints");
        write(&root, &sample()).unwrap();
        assert_eq!(read(&root).unwrap(), Some(sample()));
        fs::remove_dir_all(root.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_record_round_trips_and_is_removed() {
        let root = temp_root("round-trip");
        assert_eq!(read(&root).unwrap(), None);
        write(&root, &sample()).unwrap();
        assert_eq!(read(&root).unwrap(), Some(sample()));
        assert!(!root.join("_finished.inprogress").exists());
        remove(&root).unwrap();
        assert_eq!(read(&root).unwrap(), None);
        remove(&root).unwrap(); // none left: still fine
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn every_damaged_byte_or_length_is_an_error_naming_the_file() {
        let root = temp_root("damaged");
        write(&root, &sample()).unwrap();
        let good = fs::read(path(&root)).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            fs::write(path(&root), &bad).unwrap();
            let error = read(&root).expect_err("a flipped byte is caught");
            assert!(error.contains("_finished"), "{error}");
        }
        for len in [0, 7, HEADER, good.len() - 1] {
            fs::write(path(&root), &good[..len]).unwrap();
            let error = read(&root).expect_err("a truncated record is caught");
            assert!(error.contains("is not a finished-job record"), "{error}");
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
