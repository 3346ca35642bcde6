//! The keyed-state snapshot format end to end (see `docs/SNAPSHOT_FORMAT.md`): round
//! trips through files, rescaling (restoring files written at one parallelism at
//! another), the golden files in `tests/golden/snapshot/`, and the errors for corrupt,
//! truncated and missing files.
//!
//! Golden files: `RHEON_REGEN_GOLDEN=1 cargo test -p rheon-tests --test snapshot_format`
//! rewrites them from [`golden_cases`] (deterministic: fixed keys, entries sorted by key
//! within each key group). A normal run reads the checked-in files, compares their
//! decoded entries with [`golden_cases`], and compares their bytes with what the writer
//! produces now, so any change of the format (or of rkyv's archived layout) fails here:
//! bump `FORMAT_VERSION`, keep a reader for the old version, and add new golden files
//! next to the old ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rheon_state::key_group::assign_to_key_group;
use rheon_state::snapshot::{
    inspect, plan_restore, restore_into_map, write_atomically, SnapshotData, SnapshotFile,
    SnapshotMeta, SnapshotWriter,
};
use rheon_state::{KeyGroupRange, SnapshotError};

const MAX_P: u32 = 128;

fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rheon-snapshot-format-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Entries grouped by key group, entries sorted by key: a deterministic writer input.
type Grouped<K, V> = BTreeMap<u32, Vec<(K, V)>>;

fn group<K: std::hash::Hash + Ord, V: Ord>(entries: Vec<(K, V)>) -> Grouped<K, V> {
    let mut grouped: Grouped<K, V> = BTreeMap::new();
    for (key, value) in entries {
        grouped
            .entry(assign_to_key_group(&key, MAX_P))
            .or_default()
            .push((key, value));
    }
    grouped.values_mut().for_each(|entries| entries.sort());
    grouped
}

/// The bytes of the file of `range` (key groups of `grouped` outside it are left out).
fn write_bytes<K: SnapshotData, V: SnapshotData>(
    meta: SnapshotMeta,
    grouped: &Grouped<K, V>,
) -> Vec<u8> {
    let range = meta.key_groups;
    let mut writer = SnapshotWriter::<_, K, V>::new(Vec::new(), meta, "memory").unwrap();
    for (&key_group, entries) in grouped.range(range.start..=range.end) {
        writer
            .write_key_group(key_group, entries.iter().map(|(k, v)| (k, v)))
            .unwrap();
    }
    writer.finish().unwrap().0
}

/// Every entry of `files` in `range`, read through a restore plan, grouped and sorted.
fn restore<K: SnapshotData + Ord, V: SnapshotData + Ord>(
    files: &[SnapshotFile],
    range: KeyGroupRange,
) -> Grouped<K, V> {
    let plan = plan_restore(files, MAX_P, range).unwrap();
    let mut out = BTreeMap::new();
    for (key_group, file) in plan.iter() {
        let mut entries = file.read_key_group::<K, V>(key_group).unwrap();
        if !entries.is_empty() {
            entries.sort();
            out.insert(key_group, entries);
        }
    }
    out
}

fn within<K: Clone, V: Clone>(grouped: &Grouped<K, V>, range: KeyGroupRange) -> Grouped<K, V> {
    grouped
        .range(range.start..=range.end)
        .map(|(kg, entries)| (*kg, entries.clone()))
        .collect()
}

#[test]
fn round_trip_through_files() {
    let dir = temp_dir("round-trip");
    let grouped = group((0..2000u64).map(|k| (k, format!("value of {k}"))).collect());
    let range = KeyGroupRange::new(0, MAX_P - 1);
    let path = dir.join("all.snap");
    let meta = SnapshotMeta::new("words", "u64:String/v1", MAX_P, range);
    let summary = write_atomically::<u64, String, _>(&path, meta.clone(), |mut writer| {
        for (&key_group, entries) in &grouped {
            writer.write_key_group(key_group, entries.iter().map(|(k, v)| (k, v)))?;
        }
        writer.finish()
    })
    .unwrap();
    let file = SnapshotFile::open(&path).unwrap();
    assert_eq!(file.meta(), &meta);
    assert_eq!(file.entry_count(), 2000);
    assert_eq!(file.size_bytes(), summary.size_bytes);
    assert_eq!(restore::<u64, String>(&[file], range), grouped);

    // Zero-copy: archived strings compare with the originals without deserializing.
    let file = SnapshotFile::open(&path).unwrap();
    let (&key_group, entries) = grouped.iter().next().unwrap();
    let mut archived: Vec<(u64, &str)> = file
        .archived_entries::<u64, String>(key_group)
        .unwrap()
        .map(|(k, v)| (k.to_native(), v.as_str()))
        .collect();
    archived.sort();
    let want: Vec<(u64, &str)> = entries.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(archived, want);

    // The report: the histogram matches the input and every checksum holds.
    let report = inspect(&path).unwrap();
    assert!(report.checksums_ok());
    assert_eq!(report.size_bytes, summary.size_bytes);
    assert_eq!(report.meta.key_groups, range);
    for line in &report.key_groups {
        let want = grouped.get(&line.key_group).map_or(0, Vec::len) as u64;
        assert_eq!(line.entry_count, want, "key group {}", line.key_group);
        assert_eq!(line.size_bytes == 0, want == 0);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rescaling_restores_the_same_entries_at_another_parallelism() {
    let dir = temp_dir("rescale");
    let grouped = group((0..5000u64).map(|k| (k * 7919, k ^ 0xabcd)).collect());
    // Parallelism 2: one file per subtask, written on its own thread as a writer thread
    // would.
    let paths: Vec<PathBuf> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let range = KeyGroupRange::for_operator(MAX_P, 2, i);
                let path = dir.join(format!("counts-{i}.snap"));
                let mine = within(&grouped, range);
                scope.spawn(move || {
                    let meta = SnapshotMeta::new("counts", "u64:u64/v1", MAX_P, range);
                    write_atomically::<u64, u64, _>(&path, meta, |mut writer| {
                        for (key_group, entries) in mine {
                            writer.write_key_group(key_group, entries)?;
                        }
                        writer.finish()
                    })
                    .unwrap();
                    path
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let files: Vec<SnapshotFile> = paths
        .iter()
        .map(|p| SnapshotFile::open(p).unwrap())
        .collect();
    assert_eq!(files[0].key_groups(), KeyGroupRange::new(0, 63));
    assert_eq!(files[1].key_groups(), KeyGroupRange::new(64, 127));

    for parallelism in [1, 2, 3] {
        let mut union: Grouped<u64, u64> = BTreeMap::new();
        for i in 0..parallelism {
            let range = KeyGroupRange::for_operator(MAX_P, parallelism, i);
            let restored = restore::<u64, u64>(&files, range);
            assert_eq!(restored, within(&grouped, range), "p={parallelism} i={i}");
            // And into the subtask's key-grouped map.
            let map = restore_into_map::<u64, u64>(&files, MAX_P, range).unwrap();
            assert_eq!(map.key_group_range(), range);
            assert_eq!(map.len(), restored.values().map(Vec::len).sum::<usize>());
            for (key_group, entries) in &restored {
                for (key, value) in entries {
                    assert_eq!(map.get(*key_group, key), Some(value));
                }
            }
            union.extend(restored);
        }
        assert_eq!(
            union, grouped,
            "parallelism {parallelism} loses or adds entries"
        );
    }
    // Subtask 1 of 3 owns [43, 85]: it needs both files, and only its key groups.
    let plan = plan_restore(&files, MAX_P, KeyGroupRange::for_operator(MAX_P, 3, 1)).unwrap();
    let sources: Vec<(u32, &Path)> = plan.iter().map(|(kg, f)| (kg, f.path())).collect();
    assert_eq!(sources.len(), 43);
    assert_eq!(sources[0], (43, paths[0].as_path()));
    assert_eq!(sources[20], (63, paths[0].as_path()));
    assert_eq!(sources[21], (64, paths[1].as_path()));
    std::fs::remove_dir_all(&dir).unwrap();
}

// Golden files.

/// A value with the archived forms a state commonly holds: integers of several widths, a
/// string, an optional string, a vector and a nested tuple.
type Account = (i64, String, Option<String>, Vec<u16>, (u8, u32));

struct GoldenCase {
    file: &'static str,
    write: fn() -> Vec<u8>,
    check: fn(&SnapshotFile),
}

fn words() -> Grouped<u64, String> {
    group(
        (0..48u64)
            .map(|k| (k * 1_000_003, format!("w{k}")))
            .collect(),
    )
}

fn accounts() -> Grouped<String, Account> {
    group(
        (0..24u32)
            .map(|i| {
                let value: Account = (
                    i64::from(i) * -1_000_000_007,
                    format!("owner-{i}"),
                    (i % 3 == 0).then(|| "a note that is longer than eight bytes".to_string()),
                    (0..(i % 5) as u16).map(|x| x * 300 + 1).collect(),
                    (i as u8, u32::MAX - i),
                );
                (format!("account-{i:04}"), value)
            })
            .collect(),
    )
}

fn words_meta(i: u32) -> SnapshotMeta {
    SnapshotMeta::new(
        "words",
        "u64:String/v1",
        MAX_P,
        KeyGroupRange::for_operator(MAX_P, 2, i),
    )
}

fn accounts_meta() -> SnapshotMeta {
    SnapshotMeta::new(
        "accounts",
        "String:(i64,String,Option<String>,Vec<u16>,(u8,u32))/v1",
        MAX_P,
        KeyGroupRange::new(0, MAX_P - 1),
    )
}

fn check_words(file: &SnapshotFile) {
    let range = file.key_groups();
    assert_eq!(
        restore::<u64, String>(std::slice::from_ref(file), range),
        within(&words(), range)
    );
}

/// The checked-in golden files, how to write each and how to check its content.
fn golden_cases() -> Vec<GoldenCase> {
    vec![
        GoldenCase {
            file: "v1-words-p2-0.snap",
            write: || write_bytes(words_meta(0), &words()),
            check: check_words,
        },
        GoldenCase {
            file: "v1-words-p2-1.snap",
            write: || write_bytes(words_meta(1), &words()),
            check: check_words,
        },
        GoldenCase {
            file: "v1-accounts-p1-0.snap",
            write: || write_bytes(accounts_meta(), &accounts()),
            check: |file| {
                assert_eq!(file.meta(), &accounts_meta());
                let restored = restore::<String, Account>(
                    std::slice::from_ref(file),
                    KeyGroupRange::new(0, MAX_P - 1),
                );
                assert_eq!(restored, accounts());
            },
        },
    ]
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/snapshot")
}

#[test]
fn golden_files_read_and_match_the_writer() {
    let dir = golden_dir();
    if std::env::var_os("RHEON_REGEN_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for case in golden_cases() {
            std::fs::write(dir.join(case.file), (case.write)()).unwrap();
        }
    }
    for case in golden_cases() {
        let path = dir.join(case.file);
        let file = SnapshotFile::open(&path).unwrap_or_else(|error| {
            panic!("{error} (regenerate with RHEON_REGEN_GOLDEN=1 only for a new format version)")
        });
        (case.check)(&file);
        assert!(inspect(&path).unwrap().checksums_ok());
        assert!(
            file.bytes() == (case.write)().as_slice(),
            "the writer no longer produces the bytes of {}: the snapshot format changed",
            path.display()
        );
    }
    // The two words files restore at parallelism 1 and 3 too.
    let files: Vec<SnapshotFile> = ["v1-words-p2-0.snap", "v1-words-p2-1.snap"]
        .iter()
        .map(|name| SnapshotFile::open(dir.join(name)).unwrap())
        .collect();
    for p in [1, 3] {
        for i in 0..p {
            let range = KeyGroupRange::for_operator(MAX_P, p, i);
            assert_eq!(
                restore::<u64, String>(&files, range),
                within(&words(), range)
            );
        }
    }
}

// Errors.

fn write_words_file(dir: &Path) -> PathBuf {
    let path = dir.join("words-0.snap");
    std::fs::write(&path, write_bytes(words_meta(0), &words())).unwrap();
    path
}

#[test]
fn a_corrupt_section_is_reported_with_file_and_key_group() {
    let dir = temp_dir("corrupt");
    let path = write_words_file(&dir);
    let entry = *SnapshotFile::open(&path)
        .unwrap()
        .index()
        .iter()
        .find(|e| e.entry_count > 1)
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[entry.offset as usize + 5] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    // The file still opens (the layout is fine); other key groups still read.
    let file = SnapshotFile::open(&path).unwrap();
    let other = file
        .key_groups()
        .iter()
        .find(|&kg| kg != entry.key_group)
        .unwrap();
    file.read_key_group::<u64, String>(other).unwrap();
    let error = file
        .read_key_group::<u64, String>(entry.key_group)
        .unwrap_err();
    match &error {
        SnapshotError::Corrupt {
            path: p, key_group, ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(*key_group, Some(entry.key_group));
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(error.is_corruption());
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string())
            && message.contains(&format!("key group {}", entry.key_group))
            && message.contains("checksum mismatch"),
        "{message}"
    );
    // Restoring a range with that key group fails the same way; inspect flags it.
    let files = [file];
    let err = restore_into_map::<u64, String>(&files, MAX_P, files[0].key_groups()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Corrupt { key_group: Some(kg), .. } if kg == entry.key_group)
    );
    let report = inspect(&path).unwrap();
    assert_eq!(report.corrupt_key_groups(), [entry.key_group]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_and_missing_files_are_clear_errors() {
    let dir = temp_dir("truncated");
    let path = write_words_file(&dir);
    let len = std::fs::metadata(&path).unwrap().len();
    for cut in [len - 1, len - 32, len / 2, 40, 8, 0] {
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let error = SnapshotFile::open(&path).unwrap_err();
        assert!(
            matches!(error, SnapshotError::Truncated { size_bytes, .. } if size_bytes == cut),
            "cut at {cut}: {error}"
        );
        assert!(error.to_string().contains("truncated"), "{error}");
    }

    let missing = dir.join("missing.snap");
    let error = SnapshotFile::open(&missing).unwrap_err();
    match &error {
        SnapshotError::Io {
            path,
            operation,
            error,
        } => {
            assert_eq!(path, &missing);
            assert_eq!(*operation, "open");
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other}"),
    }
    assert!(error.is_io() && !error.is_corruption());
    assert!(error.to_string().starts_with(&format!(
        "cannot open snapshot file {}: ",
        missing.display()
    )));

    // A key group in no file.
    let files =
        [SnapshotFile::from_bytes("words-0", &write_bytes(words_meta(0), &words())).unwrap()];
    let error = plan_restore(&files, MAX_P, KeyGroupRange::new(60, 70)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "key group 64 of [60, 70] is in none of the 1 snapshot file(s)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
