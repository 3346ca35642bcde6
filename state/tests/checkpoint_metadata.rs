//! Checkpoint directories end to end: real snapshot files of two subtasks plus
//! `_metadata`, read back; `latest_valid` falling back past each kind of damage (one
//! table, one helper); subsuming; id allocation; the `inspect` report; the `_metadata`
//! bytes pinned by a golden value and fuzzed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use rheon_state::checkpoint::{
    checkpoint_dir_name, collect_shared, decode_metadata, encode_metadata, inspect_checkpoint,
    latest_valid, latest_valid_to, list_completed, next_checkpoint_id, read_metadata,
    shared_file_checkpoint_id, subsume, verify, verify_to, write_metadata, ChannelStateEntry,
    CheckpointError, CheckpointMetadata, Depth, KeyedStateFiles, OperatorSnapshot, OtherStatus,
    METADATA_FILE_NAME,
};
use rheon_state::key_group::assign_to_key_group;
use rheon_state::snapshot::{write_atomically, SnapshotFile, SnapshotMeta};
use rheon_state::{KeyGroupRange, SnapshotError};

const MAX_P: u32 = 16;
const PARALLELISM: u32 = 2;
const KEYS: u64 = 200;

/// A fresh directory under the system temp dir, removed on drop.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new(test: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "rheon-checkpoint-{}-{test}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn state_file_name(subtask: u32) -> String {
    format!("count-{subtask}.snap")
}

/// Writes the snapshot file of `state` for `subtask` of `PARALLELISM`: keys `0..KEYS` of
/// its key groups, value `key * 10 + id`.
fn write_state_file(dir: &Path, state: &str, subtask: u32, id: u64) {
    let range = KeyGroupRange::for_operator(MAX_P, PARALLELISM, subtask);
    write_keys(&dir.join(state_file_name(subtask)), state, range, id);
}

/// A file of keyed state `state` at `path` holding `key * 10 + id` for the keys of
/// `range`.
fn write_keys(path: &Path, state: &str, range: KeyGroupRange, id: u64) {
    let meta = SnapshotMeta::new(state, "u64:u64/v1", MAX_P, range);
    write_atomically::<u64, u64, _>(path, meta, |mut writer| {
        for key_group in range {
            let entries = (0..KEYS)
                .filter(|key| assign_to_key_group(key, MAX_P) == key_group)
                .map(|key| (key, key * 10 + id));
            writer.write_key_group(key_group, entries)?;
        }
        writer.finish()
    })
    .unwrap();
}

fn metadata(id: u64, savepoint: bool) -> CheckpointMetadata {
    CheckpointMetadata {
        checkpoint_id: id,
        timestamp_ms: 1_700_000_000_000 + id as i64,
        job_name: "wordcount".into(),
        max_parallelism: MAX_P,
        savepoint,
        operators: vec![
            OperatorSnapshot {
                node: 1,
                name: "source".into(),
                parallelism: PARALLELISM,
                keyed_states: vec![],
                operator_state: vec![7u64.to_le_bytes().to_vec(), 9u64.to_le_bytes().to_vec()],
                channel_state: vec![],
            },
            OperatorSnapshot {
                node: 3,
                name: "count".into(),
                parallelism: PARALLELISM,
                keyed_states: vec![KeyedStateFiles {
                    name: "counts".into(),
                    files: (0..PARALLELISM).map(state_file_name).collect(),
                    deltas: vec![],
                }],
                operator_state: vec![],
                channel_state: vec![ChannelStateEntry {
                    subtask: 1,
                    input_channel: 0,
                    buffers: vec![vec![1; 10], vec![2; 20]],
                }],
            },
        ],
    }
}

/// A complete checkpoint `id` under `root`: two state files, then `_metadata`.
fn write_checkpoint(root: &Path, id: u64, savepoint: bool) -> (PathBuf, CheckpointMetadata) {
    let dir = root.join(checkpoint_dir_name(id, savepoint));
    fs::create_dir_all(&dir).unwrap();
    for subtask in 0..PARALLELISM {
        write_state_file(&dir, "counts", subtask, id);
    }
    let metadata = metadata(id, savepoint);
    let path = write_metadata(&dir, &metadata).unwrap();
    assert_eq!(path, dir.join(METADATA_FILE_NAME));
    (dir, metadata)
}

/// A complete checkpoint without state files (for layout tests).
fn write_empty_checkpoint(root: &Path, id: u64, savepoint: bool) -> PathBuf {
    let dir = root.join(checkpoint_dir_name(id, savepoint));
    let metadata = CheckpointMetadata {
        operators: vec![],
        ..metadata(id, savepoint)
    };
    write_metadata(&dir, &metadata).unwrap();
    dir
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn dir_names(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn metadata_round_trips_and_verifies() {
    let root = TempRoot::new("round-trip");
    let (dir, written) = write_checkpoint(root.path(), 1, false);
    assert_eq!(read_metadata(&dir).unwrap(), written);
    assert_eq!(
        read_metadata(&dir.join(METADATA_FILE_NAME)).unwrap(),
        written
    );
    assert_eq!(verify(&dir).unwrap(), written);
    assert!(!dir.join("._metadata.tmp").exists());
    let bytes = fs::read(dir.join(METADATA_FILE_NAME)).unwrap();
    assert_eq!(&bytes[..8], b"RHEONCKP");
    assert_eq!(bytes[8..12], 2u32.to_le_bytes());
    // The state files hold what was written.
    let file = SnapshotFile::open(dir.join(state_file_name(1))).unwrap();
    let key_group = file.key_groups().start;
    for (key, value) in file.read_key_group::<u64, u64>(key_group).unwrap() {
        assert_eq!(assign_to_key_group(&key, MAX_P), key_group);
        assert_eq!(value, key * 10 + 1);
    }
}

/// A way to damage checkpoint 2, and what the error must say.
struct Damage {
    name: &'static str,
    damage: fn(&Path),
    is_expected: fn(&CheckpointError) -> bool,
    /// Substrings of the error message (besides the damaged file's name).
    mentions: &'static [&'static str],
    /// The damaged file, named in the error.
    file: &'static str,
}

/// The first non-empty key group of a state file and its section's offset.
fn first_section(path: &Path) -> (u32, u64) {
    let file = SnapshotFile::open(path).unwrap();
    let entry = file.index().iter().find(|e| e.size_bytes > 0).unwrap();
    (entry.key_group, entry.offset)
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

fn damages() -> Vec<Damage> {
    vec![
        Damage {
            name: "truncated state file",
            damage: |dir| {
                let path = dir.join(state_file_name(0));
                let len = fs::metadata(&path).unwrap().len();
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            },
            is_expected: |e| {
                matches!(
                    e,
                    CheckpointError::StateFile {
                        error: SnapshotError::Truncated { .. },
                        ..
                    }
                )
            },
            mentions: &["truncated", "\"counts\""],
            file: "count-0.snap",
        },
        Damage {
            name: "flipped byte in a section",
            damage: |dir| {
                let path = dir.join(state_file_name(1));
                let (_, offset) = first_section(&path);
                flip_byte(&path, offset);
            },
            is_expected: |e| {
                matches!(
                    e,
                    CheckpointError::StateFile {
                        error: SnapshotError::Corrupt {
                            key_group: Some(_),
                            ..
                        },
                        ..
                    }
                )
            },
            mentions: &["checksum mismatch", "key group"],
            file: "count-1.snap",
        },
        Damage {
            name: "missing state file",
            damage: |dir| fs::remove_file(dir.join(state_file_name(1))).unwrap(),
            is_expected: |e| matches!(e, CheckpointError::MissingStateFile { .. }),
            mentions: &["is missing"],
            file: "count-1.snap",
        },
        Damage {
            name: "corrupt _metadata",
            damage: |dir| {
                let path = dir.join(METADATA_FILE_NAME);
                let len = fs::metadata(&path).unwrap().len();
                flip_byte(&path, len - 5);
            },
            is_expected: |e| matches!(e, CheckpointError::Corrupt { .. }),
            mentions: &["checksum mismatch"],
            file: "_metadata",
        },
        Damage {
            name: "truncated _metadata",
            damage: |dir| {
                let path = dir.join(METADATA_FILE_NAME);
                let bytes = fs::read(&path).unwrap();
                fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
            },
            is_expected: |e| matches!(e, CheckpointError::Truncated { .. }),
            mentions: &["truncated"],
            file: "_metadata",
        },
        Damage {
            name: "a state file of another state",
            damage: |dir| write_state_file(dir, "other", 1, 2),
            // `write_state_file` names files by subtask only: this replaces count-1.snap.
            is_expected: |e| {
                matches!(
                    e,
                    CheckpointError::StateFile {
                        error: SnapshotError::Incompatible { .. },
                        ..
                    }
                )
            },
            mentions: &["holds state \"other\""],
            file: "count-1.snap",
        },
        Damage {
            name: "metadata naming one file of two",
            damage: |dir| {
                let mut metadata = read_metadata(dir).unwrap();
                metadata.operators[1].keyed_states[0].files.pop();
                write_metadata(dir, &metadata).unwrap();
            },
            is_expected: |e| {
                matches!(
                    e,
                    CheckpointError::StateFile {
                        error: SnapshotError::Missing { .. },
                        ..
                    }
                )
            },
            mentions: &["key group 8 of [0, 15] is in none of the 1 snapshot file(s)"],
            file: "",
        },
        Damage {
            name: "metadata of another checkpoint",
            damage: |dir| {
                let metadata = CheckpointMetadata {
                    checkpoint_id: 5,
                    ..read_metadata(dir).unwrap()
                };
                write_metadata(dir, &metadata).unwrap();
            },
            is_expected: |e| matches!(e, CheckpointError::Corrupt { .. }),
            mentions: &["named for checkpoint 2, the metadata is of checkpoint 5"],
            file: "_metadata",
        },
    ]
}

#[test]
fn latest_valid_falls_back_past_each_damage() {
    for case in damages() {
        let root = TempRoot::new("fallback");
        let (older, older_metadata) = write_checkpoint(root.path(), 1, false);
        let (newer, _) = write_checkpoint(root.path(), 2, false);
        (case.damage)(&newer);

        let (dir, metadata, skipped) = latest_valid(root.path()).unwrap();
        assert_eq!(
            (&dir, &metadata),
            (&older, &older_metadata),
            "{}",
            case.name
        );
        assert_eq!(skipped.len(), 1, "{}", case.name);
        let (skipped_dir, error) = &skipped[0];
        assert_eq!(skipped_dir, &newer, "{}", case.name);
        assert!((case.is_expected)(error), "{}: {error:?}", case.name);
        assert!(
            error.is_corruption() && !error.is_io(),
            "{}: {error:?}",
            case.name
        );
        let message = error.to_string();
        assert!(message.contains(case.file), "{}: {message}", case.name);
        if !case.file.is_empty() {
            let path = error.path().expect("the error names a file");
            assert!(path.ends_with(case.file), "{}: {path:?}", case.name);
        }
        for mention in case.mentions {
            assert!(
                message.contains(mention),
                "{}: {message:?} lacks {mention:?}",
                case.name
            );
        }

        // Given the damaged directory itself: its error, no fallback.
        let direct = latest_valid(&newer).unwrap_err();
        assert_eq!(direct.to_string(), message, "{}", case.name);
        assert_eq!(
            verify(&newer).unwrap_err().to_string(),
            message,
            "{}",
            case.name
        );
        // The intact one, given directly or by its `_metadata`.
        assert_eq!(latest_valid(&older).unwrap().0, older);
        assert_eq!(
            latest_valid(&older.join(METADATA_FILE_NAME)).unwrap().0,
            older
        );
    }
}

#[test]
fn a_flipped_section_names_its_key_group() {
    let root = TempRoot::new("flip-names-key-group");
    let (dir, _) = write_checkpoint(root.path(), 1, false);
    let path = dir.join(state_file_name(1));
    let (key_group, offset) = first_section(&path);
    flip_byte(&path, offset + 3);
    let error = verify(&dir).unwrap_err();
    match &error {
        CheckpointError::StateFile {
            node,
            state,
            error:
                SnapshotError::Corrupt {
                    path: file,
                    key_group: kg,
                    ..
                },
            ..
        } => {
            assert_eq!((*node, state.as_str()), (3, "counts"));
            assert_eq!((file, *kg), (&path, Some(key_group)));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error
        .to_string()
        .contains(&format!("in key group {key_group}")));

    let report = inspect_checkpoint(&dir).unwrap();
    let text = report.to_string();
    assert!(
        text.contains(&format!("CORRUPT in key group {key_group}")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("1 corrupt section"), "{text}");
    assert_eq!(report.corrupt_sections(), 1);
    assert!(!report.is_ok());
}

/// The layout check reads no section, so it passes a flipped section byte,
/// and `latest_valid_to` skips what the caller set aside.
#[test]
fn the_layout_check_passes_a_flipped_section_and_set_aside_checkpoints_are_skipped() {
    let root = TempRoot::new("layout-set-aside");
    let (older, _) = write_checkpoint(root.path(), 1, false);
    let (newer, _) = write_checkpoint(root.path(), 2, false);
    let path = newer.join(state_file_name(1));
    let (_, offset) = first_section(&path);
    flip_byte(&path, offset + 3);
    assert!(verify(&newer).is_err());
    assert!(verify_to(&newer, Depth::Layout).is_ok());
    let (chosen, _, skipped) = latest_valid_to(root.path(), Depth::Layout, &[]).unwrap();
    assert_eq!((chosen, skipped.len()), (newer.clone(), 0));

    let set_aside = [(
        newer.clone(),
        "its restore found key group 3 corrupt".to_owned(),
    )];
    let (chosen, _, skipped) = latest_valid_to(root.path(), Depth::Layout, &set_aside).unwrap();
    assert_eq!(chosen, older);
    assert_eq!(skipped.len(), 1);
    let (dir, error) = &skipped[0];
    assert_eq!(dir, &newer);
    assert!(
        matches!(error, CheckpointError::SetAside { .. }),
        "{error:?}"
    );
    assert!(error.is_corruption());
    assert_eq!(error.path(), Some(newer.as_path()));
    assert!(error.to_string().contains("key group 3 corrupt"), "{error}");
    // Given alone, a set-aside checkpoint is that error.
    let alone = latest_valid_to(&newer, Depth::Layout, &set_aside).unwrap_err();
    assert!(
        matches!(alone, CheckpointError::SetAside { .. }),
        "{alone:?}"
    );
    // Nothing left: the error lists it.
    let both = [set_aside[0].clone(), (older.clone(), "also".to_owned())];
    let none = latest_valid_to(root.path(), Depth::Full, &both).unwrap_err();
    assert!(none.is_corruption(), "{none:?}");
}

#[test]
fn latest_valid_lists_everything_tried_when_nothing_holds() {
    let root = TempRoot::new("none-valid");
    let (first, _) = write_checkpoint(root.path(), 1, false);
    let (second, _) = write_checkpoint(root.path(), 2, true);
    fs::create_dir(root.path().join("chk-3")).unwrap();
    fs::remove_file(first.join(state_file_name(0))).unwrap();
    flip_byte(&second.join(METADATA_FILE_NAME), 40);
    let error = latest_valid(root.path()).unwrap_err();
    let CheckpointError::NoValidCheckpoint {
        tried, incomplete, ..
    } = &error
    else {
        panic!("unexpected {error:?}");
    };
    assert_eq!(
        names(&tried.iter().map(|t| t.0.clone()).collect::<Vec<_>>()),
        ["savepoint-2", "chk-1"]
    );
    assert_eq!(*incomplete, 1);
    assert!(error.is_corruption());
    let message = error.to_string();
    for mention in [
        "savepoint-2: ",
        "chk-1: ",
        "count-0.snap",
        "_metadata",
        "1 incomplete",
    ] {
        assert!(message.contains(mention), "{message:?} lacks {mention:?}");
    }

    let empty = TempRoot::new("none-at-all");
    let message = latest_valid(empty.path()).unwrap_err().to_string();
    assert!(message.contains("no completed checkpoint"), "{message}");
}

#[test]
fn listing_orders_newest_first_and_ignores_other_names() {
    let root = TempRoot::new("list");
    for (id, savepoint) in [(1, false), (4, true), (2, false)] {
        write_empty_checkpoint(root.path(), id, savepoint);
    }
    fs::create_dir(root.path().join("chk-5")).unwrap(); // incomplete
    fs::create_dir(root.path().join("chk-07")).unwrap();
    write_metadata(
        &root.path().join("chk-07"),
        &CheckpointMetadata {
            operators: vec![],
            ..metadata(7, false)
        },
    )
    .unwrap();
    fs::create_dir(root.path().join("lost+found")).unwrap();
    fs::write(root.path().join("chk-9"), b"not a directory").unwrap();

    let listed = list_completed(root.path()).unwrap();
    assert_eq!(
        listed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [4, 2, 1]
    );
    assert_eq!(
        names(&listed.into_iter().map(|(_, p)| p).collect::<Vec<_>>()),
        ["savepoint-4", "chk-2", "chk-1"]
    );

    let missing = root.path().join("no-such-root");
    let error = list_completed(&missing).unwrap_err();
    assert!(error.is_io());
    assert_eq!(error.path(), Some(missing.as_path()));
    assert!(error.to_string().contains("no-such-root"), "{error}");
}

#[test]
fn next_checkpoint_id_counts_incomplete_directories() {
    let root = TempRoot::new("next-id");
    assert_eq!(next_checkpoint_id(&root.path().join("missing")), 1);
    assert_eq!(next_checkpoint_id(root.path()), 1);
    write_empty_checkpoint(root.path(), 3, false);
    assert_eq!(next_checkpoint_id(root.path()), 4);
    fs::create_dir(root.path().join("chk-5")).unwrap();
    assert_eq!(next_checkpoint_id(root.path()), 6);
    fs::create_dir(root.path().join("savepoint-8")).unwrap();
    assert_eq!(next_checkpoint_id(root.path()), 9);
    fs::create_dir(root.path().join("chk-099")).unwrap();
    assert_eq!(next_checkpoint_id(root.path()), 9);
}

#[test]
fn subsume_keeps_the_newest_and_savepoints() {
    let root = TempRoot::new("subsume");
    write_checkpoint(root.path(), 1, false);
    fs::create_dir(root.path().join("chk-2")).unwrap(); // aborted: garbage
    fs::write(root.path().join("chk-2").join("partial.snap"), b"x").unwrap();
    write_empty_checkpoint(root.path(), 3, true);
    for id in 4..=6 {
        write_checkpoint(root.path(), id, false);
    }
    fs::create_dir(root.path().join("chk-7")).unwrap(); // in progress
    fs::create_dir(root.path().join("savepoint-0")).unwrap(); // incomplete savepoint
    fs::create_dir(root.path().join("unrelated")).unwrap();

    let deleted = subsume(root.path(), 2).unwrap();
    assert_eq!(names(&deleted), ["chk-4", "chk-2", "chk-1"]);
    assert_eq!(
        dir_names(root.path()),
        [
            "chk-5",
            "chk-6",
            "chk-7",
            "savepoint-0",
            "savepoint-3",
            "unrelated"
        ]
    );
    assert!(subsume(root.path(), 2).unwrap().is_empty());
    assert_eq!(names(&subsume(root.path(), 1).unwrap()), ["chk-5"]);
    assert_eq!(
        latest_valid(root.path()).unwrap().0,
        root.path().join("chk-6")
    );
    assert!(subsume(&root.path().join("missing"), 1).is_err());
}

#[test]
fn inspect_reports_every_problem_and_the_other_checkpoints() {
    let root = TempRoot::new("inspect");
    write_checkpoint(root.path(), 1, false);
    let (dir, _) = write_checkpoint(root.path(), 2, false);
    fs::create_dir(root.path().join("chk-3")).unwrap();

    let report = inspect_checkpoint(root.path()).unwrap();
    let text = report.to_string();
    println!("{text}");
    assert_eq!(report.dir, dir);
    assert!(report.is_ok());
    assert_eq!(
        report
            .others
            .iter()
            .map(|o| (o.id, o.status.clone()))
            .collect::<Vec<_>>(),
        [(3, OtherStatus::Incomplete), (1, OtherStatus::Completed)]
    );
    for mention in [
        "checkpoint 2 at",
        "job:             wordcount",
        "2023-11-14T22:13:20.002Z",
        "max parallelism: 16",
        "operator 1 \"source\", parallelism 2",
        "operator state: 2 elements, 16 B",
        "channel state:  2 buffers in 1 channel, 30 B",
        "keyed state \"counts\": 2 files, 200 entries",
        "count-0.snap  key groups [0, 7]",
        "checksums ok",
        "entries per key group: min",
        "chk-3: incomplete (no _metadata)",
        "chk-1: completed",
    ] {
        assert!(text.contains(mention), "{text}\nlacks {mention:?}");
    }
    assert!(text.trim_end().ends_with("all checksums hold"), "{text}");

    // Damage two files differently: inspect goes on past the first.
    let corrupt = dir.join(state_file_name(0));
    let (key_group, offset) = first_section(&corrupt);
    flip_byte(&corrupt, offset);
    fs::remove_file(dir.join(state_file_name(1))).unwrap();
    let report = inspect_checkpoint(&dir).unwrap();
    let text = report.to_string();
    println!("{text}");
    assert!(
        text.contains(&format!("CORRUPT in key group {key_group}")),
        "{text}"
    );
    assert!(text.contains("count-1.snap  MISSING"), "{text}");
    assert!(text.contains("8 key groups in no readable file"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("1 corrupt section, 1 missing state file"),
        "{text}"
    );
}

#[test]
fn inspect_of_a_root_skips_an_unreadable_newest_metadata() {
    let root = TempRoot::new("inspect-skip");
    write_checkpoint(root.path(), 1, false);
    let (newer, _) = write_checkpoint(root.path(), 2, false);
    fs::write(newer.join(METADATA_FILE_NAME), b"RHEONCKP").unwrap();
    let report = inspect_checkpoint(root.path()).unwrap();
    assert_eq!(report.checkpoint_id, 1);
    let text = report.to_string();
    assert!(
        text.contains("chk-2: unreadable: checkpoint metadata"),
        "{text}"
    );
    assert!(text.contains("is truncated (8 bytes)"), "{text}");
}

/// A small metadata whose encoding is pinned below.
fn golden_metadata() -> CheckpointMetadata {
    CheckpointMetadata {
        checkpoint_id: 42,
        timestamp_ms: -5,
        job_name: "golden".into(),
        max_parallelism: 128,
        savepoint: true,
        operators: vec![OperatorSnapshot {
            node: 7,
            name: "map".into(),
            parallelism: 3,
            keyed_states: vec![KeyedStateFiles {
                name: "s".into(),
                files: vec!["a".into(), "b".into(), "c".into()],
                deltas: vec!["../shared/d".into()],
            }],
            operator_state: vec![vec![1, 2, 3]],
            channel_state: vec![ChannelStateEntry {
                subtask: 2,
                input_channel: 1,
                buffers: vec![vec![0xab; 4]],
            }],
        }],
    }
}

/// The version-2 bytes of `golden_metadata()`. A change here breaks every existing
/// checkpoint: bump the format version instead.
const GOLDEN_HEX: &str = concat!(
    "5248454f4e434b500200000000000000c000000000000000f012b5d300000000",
    "61ffffffffffffff62ffffffffffffff63ffffffffffffff2e2e2f7368617265",
    "642f64008b000000f4ffffff73ffffffffffffffccffffff03000000e8ffffff",
    "0100000001020300fcffffff03000000ababababfcffffff0400000002000000",
    "01000000f0ffffff01000000070000006d6170ffffffffff03000000b0ffffff",
    "01000000c4ffffff01000000d0ffffff01000000000000002a00000000000000",
    "fbffffffffffffff676f6c64656effff8000000001000000b4ffffff01000000",
);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn metadata_bytes_match_the_golden_encoding() {
    let path = Path::new("golden/_metadata");
    let bytes = encode_metadata(path, &golden_metadata()).unwrap();
    assert_eq!(hex(&bytes), GOLDEN_HEX, "the _metadata encoding changed");
    let golden: Vec<u8> = (0..GOLDEN_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&GOLDEN_HEX[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(decode_metadata(path, &golden).unwrap(), golden_metadata());
}

proptest! {
    /// Flips and truncations of a valid `_metadata` are errors, never panics; with the
    /// checksum fixed up, a flip reaches rkyv's validation and `check`, which either
    /// reject it or yield metadata that passes `check`.
    #[test]
    fn damaged_metadata_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4),
        cut in any::<prop::sample::Index>(),
        fix_checksum in any::<bool>(),
    ) {
        let path = Path::new("fuzz/_metadata");
        let good = encode_metadata(path, &golden_metadata()).unwrap();
        let mut bytes = good.clone();
        for (index, xor) in &flips {
            let at = index.index(bytes.len());
            bytes[at] ^= xor;
        }
        if fix_checksum {
            let crc = crc32fast::hash(&bytes[32..]);
            bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        }
        match decode_metadata(path, &bytes) {
            Ok(metadata) => prop_assert!(metadata.check().is_ok()),
            Err(error) => prop_assert!(error.to_string().contains("fuzz/_metadata")),
        }
        let truncated = &good[..cut.index(good.len())];
        let error = decode_metadata(path, truncated).unwrap_err();
        prop_assert!(matches!(error, CheckpointError::Truncated { .. }), "{error}");
    }
}

/// Shared files of incremental checkpoints: ids are read from their names,
/// `collect_shared` deletes exactly the unreferenced ones of completed-or-older
/// ids, and `next_checkpoint_id` never reuses an id a shared file carries.
#[test]
fn shared_files_are_collected_when_no_checkpoint_needs_them() {
    assert_eq!(
        shared_file_checkpoint_id("12-op3-sum-0.base.snap"),
        Some(12)
    );
    assert_eq!(
        shared_file_checkpoint_id(".12-op3-sum-0.base.snap.tmp"),
        Some(12)
    );
    for other in ["junk", "-1-x", "x1-y", "1x-y"] {
        assert_eq!(shared_file_checkpoint_id(other), None, "{other}");
    }
    let root = TempRoot::new("shared");
    let mut metadata = golden_metadata();
    metadata.operators[0].keyed_states[0].files[0] = "../shared/4-keep.base.snap".into();
    metadata.operators[0].keyed_states[0].deltas = vec!["../shared/5-keep.delta.snap".into()];
    write_metadata(&root.0.join("savepoint-42"), &metadata).unwrap();
    let shared = root.0.join("shared");
    fs::create_dir_all(&shared).unwrap();
    let names = [
        "4-keep.base.snap",
        "5-keep.delta.snap",
        "5-gone.delta.snap",
        ".6-gone.base.snap.tmp",
        "7-newer.base.snap",
        "junk",
    ];
    for name in names {
        fs::write(shared.join(name), b"x").unwrap();
    }
    assert_eq!(next_checkpoint_id(&root.0), 43);
    fs::write(shared.join("50-newest.base.snap"), b"x").unwrap();
    assert_eq!(next_checkpoint_id(&root.0), 51);
    let mut deleted: Vec<String> = collect_shared(&root.0, 6)
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    deleted.sort();
    assert_eq!(deleted, [".6-gone.base.snap.tmp", "5-gone.delta.snap"]);
    let mut left: Vec<String> = fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "4-keep.base.snap",
            "5-keep.delta.snap",
            "50-newest.base.snap",
            "7-newer.base.snap",
            "junk"
        ]
    );
}

/// A file of keyed state `s` in `shared/` (see [`write_keys`]).
fn write_chain_file(shared: &Path, name: &str, range: KeyGroupRange, id: u64) {
    write_keys(&shared.join(name), "s", range, id);
}

/// A chain whose slices' bases are of different checkpoints: a delta older than a
/// slice's base is never read for that slice's key groups, so `verify` (which a
/// restore runs) skips those sections, and `inspect` still checks them.
#[test]
fn verify_checks_the_sections_a_restore_reads_and_inspect_checks_all() {
    let (low, high) = (KeyGroupRange::new(0, 7), KeyGroupRange::new(8, 15));
    let offset_in = |path: &Path, range: KeyGroupRange| {
        let file = SnapshotFile::open(path).unwrap();
        let entry = file
            .index()
            .iter()
            .find(|e| e.size_bytes > 0 && range.contains(e.key_group));
        let entry = entry.unwrap();
        (entry.key_group, entry.offset)
    };
    for (damaged, restore_reads) in [(low, false), (high, true)] {
        let root = TempRoot::new("chain-slices");
        let shared = root.path().join("shared");
        fs::create_dir_all(&shared).unwrap();
        write_chain_file(&shared, "3-s.base0.snap", low, 3);
        write_chain_file(&shared, "1-s.base1.snap", high, 1);
        write_chain_file(&shared, "2-s.delta.snap", KeyGroupRange::new(0, 15), 2);
        let dir = root.path().join(checkpoint_dir_name(4, false));
        let mut metadata = metadata(4, false);
        metadata.operators[1].parallelism = 1;
        metadata.operators[1].keyed_states = vec![KeyedStateFiles {
            name: "s".into(),
            files: vec![
                "../shared/3-s.base0.snap".into(),
                "../shared/1-s.base1.snap".into(),
            ],
            deltas: vec!["../shared/2-s.delta.snap".into()],
        }];
        write_metadata(&dir, &metadata).unwrap();
        assert!(verify(&dir).is_ok());
        let delta = shared.join("2-s.delta.snap");
        let (key_group, offset) = offset_in(&delta, damaged);
        flip_byte(&delta, offset + 3);
        assert!(
            !inspect_checkpoint(&dir).unwrap().is_ok(),
            "inspect checks every section"
        );
        match verify(&dir) {
            Ok(_) => assert!(!restore_reads, "key group {key_group} is read by a restore"),
            Err(error) => {
                assert!(restore_reads, "{error}");
                let text = error.to_string();
                assert!(text.contains("2-s.delta.snap"), "{text}");
                assert!(text.contains(&format!("key group {key_group}")), "{text}");
            }
        }
    }
}
