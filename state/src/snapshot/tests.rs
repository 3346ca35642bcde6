//! Unit tests of the snapshot module: round trips through both input forms, the exact
//! bytes of a section, restore planning, atomic writes, and fuzzing of a valid file with
//! byte flips and truncations (an error or, for a flip in padding, the same data; never a
//! panic).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;

use super::*;
use crate::error::SnapshotError;
use crate::key_group::assign_to_key_group;

const MAX_P: u32 = 16;

fn meta(range: KeyGroupRange) -> SnapshotMeta {
    SnapshotMeta::new("words", "u64:String/v1", MAX_P, range)
}

/// Asserts that `err` is an I/O error of `kind` while doing `operation`.
fn assert_io_error(err: &SnapshotError, kind: std::io::ErrorKind, operation: &str) {
    let SnapshotError::Io {
        error,
        operation: op,
        ..
    } = err
    else {
        panic!("not an I/O error: {err}")
    };
    assert_eq!((error.kind(), *op), (kind, operation), "{err}");
}

/// `count` entries `key -> "v{key}"` with their key groups, key ascending.
fn entries(count: u64) -> Vec<(u32, u64, String)> {
    (0..count)
        .map(|key| (assign_to_key_group(&key, MAX_P), key, format!("v{key}")))
        .collect()
}

/// The entries of `range`, partitioned by key group.
fn partitioned(
    range: KeyGroupRange,
    input: &[(u32, u64, String)],
) -> KeyGroupPartition<(u64, String)> {
    let flat: Vec<(u32, (u64, String))> = input
        .iter()
        .filter(|(kg, _, _)| range.contains(*kg))
        .map(|(kg, k, v)| (*kg, (*k, v.clone())))
        .collect();
    partition_by_key_group(range, flat)
}

/// Writes the entries of `range` through the flat form (partition, then write).
fn write_flat(range: KeyGroupRange, input: &[(u32, u64, String)]) -> Vec<u8> {
    let partition = partitioned(range, input);
    let writer = SnapshotWriter::<_, u64, String>::new(Vec::new(), meta(range), "mem").unwrap();
    writer.write_partition(&partition).unwrap().0
}

/// Every entry of a file, key group -> sorted entries.
fn read_all(file: &SnapshotFile) -> Result<Contents, SnapshotError> {
    let mut out = BTreeMap::new();
    for key_group in file.key_groups() {
        let mut entries = file.read_key_group::<u64, String>(key_group)?;
        entries.sort();
        out.insert(key_group, entries);
    }
    Ok(out)
}

fn expected(
    range: KeyGroupRange,
    input: &[(u32, u64, String)],
) -> BTreeMap<u32, Vec<(u64, String)>> {
    let mut out: BTreeMap<u32, Vec<(u64, String)>> = range.iter().map(|kg| (kg, vec![])).collect();
    for (kg, k, v) in input {
        if range.contains(*kg) {
            out.get_mut(kg).unwrap().push((*k, v.clone()));
        }
    }
    out
}

fn temp_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rheon-snapshot-unit-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn round_trip_flat_and_grouped_forms_give_the_same_bytes() {
    let range = KeyGroupRange::new(2, 11);
    let input = entries(200);
    let flat = write_flat(range, &input);

    // Grouped form, entries of each key group in the same (key) order as the partition
    // would not guarantee: so sort both sides by writing sorted groups.
    let want = expected(range, &input);
    let mut writer = SnapshotWriter::<_, u64, String>::new(Vec::new(), meta(range), "mem").unwrap();
    for (kg, group) in &want {
        writer
            .write_key_group(*kg, group.iter().map(|(k, v)| (k, v)))
            .unwrap();
    }
    let (grouped, summary) = writer.finish().unwrap();
    assert_eq!(summary.size_bytes, grouped.len() as u64);
    assert_eq!(
        summary.entry_count,
        want.values().map(Vec::len).sum::<usize>() as u64
    );

    let flat_file = SnapshotFile::from_bytes("flat", &flat).unwrap();
    let grouped_file = SnapshotFile::from_bytes("grouped", &grouped).unwrap();
    assert_eq!(read_all(&flat_file).unwrap(), want);
    assert_eq!(read_all(&grouped_file).unwrap(), want);
    assert_eq!(grouped_file.index(), summary.index.as_slice());
    assert_eq!(grouped_file.meta(), &meta(range));
    // Same sizes per key group whatever the order inside a key group.
    let sizes = |f: &SnapshotFile| {
        f.index()
            .iter()
            .map(|e| (e.size_bytes, e.entry_count))
            .collect::<Vec<_>>()
    };
    assert_eq!(sizes(&flat_file), sizes(&grouped_file));
}

#[test]
fn a_section_is_exactly_the_archive_of_the_entries_vec() {
    let range = KeyGroupRange::new(0, 0);
    let group: Vec<(u64, String)> = vec![(7, "seven".into()), (1 << 40, String::new())];
    let mut writer = SnapshotWriter::<_, u64, String>::new(
        Vec::new(),
        SnapshotMeta::new("s", "t", 1, range),
        "mem",
    )
    .unwrap();
    writer
        .write_key_group(0, group.iter().map(|(k, v)| (k, v)))
        .unwrap();
    let (bytes, summary) = writer.finish().unwrap();
    let entry = summary.index[0];
    let section = &bytes[entry.offset as usize..(entry.offset + entry.size_bytes) as usize];
    let archived = rkyv::to_bytes::<RkyvError>(&group).unwrap();
    assert_eq!(section, archived.as_slice());
    assert_eq!(entry.crc32, crc32fast::hash(section));

    let file = SnapshotFile::from_bytes("mem", &bytes).unwrap();
    let zero_copy: Vec<(u64, String)> = file
        .archived_entries::<u64, String>(0)
        .unwrap()
        .map(|(k, v)| (k.to_native(), v.as_str().to_owned()))
        .collect();
    assert_eq!(zero_copy, group);
}

#[test]
fn empty_key_groups_have_no_bytes() {
    let range = KeyGroupRange::new(0, 3);
    let mut writer = SnapshotWriter::<_, u64, u64>::new(
        Vec::new(),
        SnapshotMeta::new("s", "t", 4, range),
        "mem",
    )
    .unwrap();
    writer.write_key_group(2, [(1u64, 2u64)]).unwrap();
    let (bytes, summary) = writer.finish().unwrap();
    let sizes: Vec<u64> = summary.index.iter().map(|e| e.size_bytes).collect();
    assert_eq!(sizes[0], 0);
    assert_eq!(sizes[1], 0);
    assert!(sizes[2] > 0);
    assert_eq!(sizes[3], 0);
    let file = SnapshotFile::from_bytes("mem", &bytes).unwrap();
    assert_eq!(file.read_key_group::<u64, u64>(0).unwrap(), vec![]);
    assert_eq!(file.read_key_group::<u64, u64>(2).unwrap(), vec![(1, 2)]);
    assert!(matches!(
        file.read_key_group::<u64, u64>(4),
        Err(SnapshotError::NotInFile { key_group: 4, .. })
    ));
}

#[test]
#[should_panic(expected = "key group 1 written out of order")]
fn key_groups_must_ascend() {
    let range = KeyGroupRange::new(0, 3);
    let mut writer = SnapshotWriter::<_, u64, u64>::new(
        Vec::new(),
        SnapshotMeta::new("s", "t", 4, range),
        "mem",
    )
    .unwrap();
    writer.write_key_group(2, [(1u64, 2u64)]).unwrap();
    let _ = writer.write_key_group(1, [(1u64, 2u64)]);
}

#[test]
fn wrong_types_are_an_error_not_a_panic() {
    let range = KeyGroupRange::new(0, 15);
    let bytes = write_flat(range, &entries(50));
    let file = SnapshotFile::from_bytes("mem", &bytes).unwrap();
    for kg in range {
        // A String archive is 8 bytes like a u64; (u64, u64) entries are 16 bytes, so the
        // length of the entries array fits; what comes out must not panic.
        let _ = file.read_key_group::<u64, u64>(kg);
        let _ = file.read_key_group::<String, String>(kg);
        let _ = file.read_key_group::<u128, [u8; 3]>(kg);
    }
}

#[test]
fn restore_plan_covers_each_key_group_once() {
    let input = entries(300);
    let files: Vec<SnapshotFile> = (0..3)
        .map(|i| {
            let range = KeyGroupRange::for_operator(MAX_P, 3, i);
            SnapshotFile::from_bytes(format!("old-{i}"), &write_flat(range, &input)).unwrap()
        })
        .collect();
    for p in [1, 2, 3, 4, 16] {
        for i in 0..p {
            let range = KeyGroupRange::for_operator(MAX_P, p, i);
            let map = restore_into_map::<u64, String>(&files, MAX_P, range).unwrap();
            let mut got: Vec<(u32, u64, String)> =
                map.iter().map(|(kg, k, v)| (kg, *k, v.clone())).collect();
            got.sort();
            let mut want: Vec<_> = input
                .iter()
                .filter(|(kg, _, _)| range.contains(*kg))
                .cloned()
                .collect();
            want.sort();
            assert_eq!(got, want, "p={p} i={i}");
        }
    }

    // A missing file.
    let err = plan_restore(&files[..2], MAX_P, KeyGroupRange::new(0, 15)).unwrap_err();
    let SnapshotError::Missing { key_group, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(key_group, KeyGroupRange::for_operator(MAX_P, 3, 2).start);
    // A file twice.
    let twice = [
        SnapshotFile::from_bytes("a", files[0].bytes()).unwrap(),
        SnapshotFile::from_bytes("b", files[0].bytes()).unwrap(),
    ];
    let err = plan_restore(&twice, MAX_P, KeyGroupRange::new(0, 3)).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Overlap { key_group: 0, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "key group 0 is in two snapshot files: a and b"
    );
    // Another max parallelism.
    let err = plan_restore(&files, 32, KeyGroupRange::new(0, 3)).unwrap_err();
    assert!(matches!(err, SnapshotError::Incompatible { .. }), "{err}");
    // Another state.
    let other = SnapshotWriter::<_, u64, String>::new(
        Vec::new(),
        SnapshotMeta::new("other", "u64:String/v1", MAX_P, KeyGroupRange::new(0, 15)),
        "x",
    )
    .unwrap()
    .finish()
    .unwrap()
    .0;
    let mixed = [
        SnapshotFile::from_bytes("a", files[0].bytes()).unwrap(),
        SnapshotFile::from_bytes("other", &other).unwrap(),
    ];
    let err = plan_restore(&mixed, MAX_P, KeyGroupRange::new(0, 0)).unwrap_err();
    assert!(err.to_string().contains("\"other\""), "{err}");
}

#[test]
fn staged_files_appear_only_when_committed() {
    let dir = temp_dir();
    let range = KeyGroupRange::new(0, 15);
    let input = entries(100);
    let partition = partitioned(range, &input);
    let names = || {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let mut staged = Vec::new();
    for path in [dir.join("a.snap"), dir.join("b.snap"), sub.join("c.snap")] {
        let (file, summary) = stage(&path, meta(range), |w| w.write_partition(&partition)).unwrap();
        assert_eq!(file.len(), summary.size_bytes);
        assert_eq!(file.path(), path);
        staged.push(file);
    }
    assert_eq!(names(), [".a.snap.tmp", ".b.snap.tmp", "sub"]);
    commit(staged).unwrap();
    assert_eq!(names(), ["a.snap", "b.snap", "sub"]);
    for path in [dir.join("a.snap"), sub.join("c.snap")] {
        let file = SnapshotFile::open(&path).unwrap();
        assert_eq!(read_all(&file).unwrap(), expected(range, &input));
    }

    // Staged files dropped uncommitted (a later file of the same checkpoint
    // failed) leave nothing behind.
    let (dropped, _) = stage(&dir.join("d.snap"), meta(range), |w| {
        w.write_partition(&partition)
    })
    .unwrap();
    assert!(names().contains(&".d.snap.tmp".to_owned()));
    drop(dropped);
    assert_eq!(names(), ["a.snap", "b.snap", "sub"]);
}

#[test]
fn write_atomically_leaves_only_the_complete_file() {
    let dir = temp_dir();
    let path = dir.join("state-0.snap");
    let range = KeyGroupRange::new(0, 15);
    let input = entries(100);
    let partition = partitioned(range, &input);
    let summary = write_atomically(&path, meta(range), |w| w.write_partition(&partition)).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state-0.snap"]);
    let file = SnapshotFile::open(&path).unwrap();
    assert_eq!(file.size_bytes(), summary.size_bytes);
    assert_eq!(read_all(&file).unwrap(), expected(range, &input));
    let report = inspect(&path).unwrap();
    assert!(report.checksums_ok());
    assert_eq!(report.entry_count, 100);
    assert_eq!(report.key_groups.len(), 16);

    // A failing write removes the temp file and leaves the old file alone.
    let err = write_atomically::<u64, String, _>(&path, meta(range), |_| {
        Err(SnapshotError::Missing {
            key_group: 0,
            range,
            files: 0,
        })
    })
    .unwrap_err();
    assert!(matches!(err, SnapshotError::Missing { .. }));
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state-0.snap"]);
    assert_eq!(
        SnapshotFile::open(&path).unwrap().size_bytes(),
        summary.size_bytes
    );

    // Empty and short files.
    std::fs::write(dir.join("empty"), b"").unwrap();
    let err = SnapshotFile::open(dir.join("empty")).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Truncated { size_bytes: 0, .. }),
        "{err}"
    );
    let err = SnapshotFile::open(dir.join("nope")).unwrap_err();
    assert_io_error(&err, std::io::ErrorKind::NotFound, "open");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_handed_to_a_writer_thread_is_send() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<SnapshotWriter<std::fs::File, u64, String>>();
    send::<KeyGroupPartition<(u64, String)>>();
    send_sync::<SnapshotFile>();
    send::<SnapshotError>();
}

/// The byte ranges no check reads: header padding and the padding after each section.
fn padding(file: &SnapshotFile) -> Vec<std::ops::Range<usize>> {
    let report = file.report();
    let meta = file.meta();
    let names_end = format::HEADER_FIXED_BYTES + meta.state_name.len() + meta.type_tag.len();
    let mut out = Vec::with_capacity(file.index().len() + 1);
    out.push(names_end..report.header_size_bytes as usize);
    for (i, entry) in file.index().iter().enumerate() {
        let end = (entry.offset + entry.size_bytes) as usize;
        let next = file
            .index()
            .get(i + 1)
            .map_or(report.index_offset, |next| next.offset) as usize;
        out.push(end..next);
    }
    out
}

/// A valid file, its entries, and its padding.
/// What a test file holds, per key group.
type Contents = BTreeMap<u32, Vec<(u64, String)>>;

type Fixture = (Vec<u8>, Contents, Vec<std::ops::Range<usize>>);

fn fuzz_fixture() -> Fixture {
    let range = KeyGroupRange::new(4, 9);
    let input = entries(40);
    let bytes = write_flat(range, &input);
    let file = SnapshotFile::from_bytes("fuzz", &bytes).unwrap();
    let data = read_all(&file).unwrap();
    let pad = padding(&file);
    (bytes, data, pad)
}

/// Flips `flips` in the fixture's file and reads it with `read`: an error naming the
/// file, unless every flip is in padding, when the data reads back unchanged.
fn check_flips(
    (mut bytes, data, pad): Fixture,
    flips: &[(prop::sample::Index, u8)],
    read: fn(&SnapshotFile) -> Result<Contents, SnapshotError>,
) -> Result<(), TestCaseError> {
    let mut outside_padding = false;
    for (at, xor) in flips {
        let at = at.index(bytes.len());
        bytes[at] ^= xor;
        outside_padding |= !pad.iter().any(|r| r.contains(&at));
    }
    match SnapshotFile::from_bytes("fuzz", &bytes).and_then(|file| read(&file)) {
        Ok(read) => {
            prop_assert!(
                !outside_padding,
                "a flip outside padding went unnoticed: {:?}",
                flips
            );
            prop_assert_eq!(read, data);
        }
        Err(error) => {
            prop_assert!(outside_padding, "a flip in padding gave {}", error);
            prop_assert!(
                error.is_corruption() || matches!(error, SnapshotError::VersionMismatch { .. }),
                "{}",
                error
            );
            prop_assert!(error.to_string().contains("fuzz"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Flipping bytes anywhere gives an error, unless every flip is in padding, when the
    /// data reads back unchanged. Never a panic.
    #[test]
    fn byte_flips_are_detected(flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        check_flips(fuzz_fixture(), &flips, read_all)?;
    }

    /// Any proper prefix of a file is an error.
    #[test]
    fn truncations_are_detected(cut in any::<prop::sample::Index>()) {
        let (bytes, _, _) = fuzz_fixture();
        let len = cut.index(bytes.len());
        let result = SnapshotFile::from_bytes("fuzz", &bytes[..len]).and_then(|file| read_all(&file));
        let error = result.expect_err("a truncated file must not read");
        prop_assert!(error.is_corruption(), "{}", error);
    }

    /// Random bytes (and random bytes behind a valid magic and version) are an error.
    #[test]
    fn garbage_is_an_error(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), magic in any::<bool>()) {
        if magic && bytes.len() >= 12 {
            bytes[..8].copy_from_slice(&format::MAGIC);
            bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        }
        prop_assert!(SnapshotFile::from_bytes("garbage", &bytes).and_then(|f| read_all(&f)).is_err());
    }
}

#[test]
fn a_corrupt_section_names_the_file_and_key_group() {
    let (mut bytes, _, _) = fuzz_fixture();
    let file = SnapshotFile::from_bytes("fuzz", &bytes).unwrap();
    let entry = *file.index().iter().find(|e| e.size_bytes > 0).unwrap();
    bytes[entry.offset as usize + 3] ^= 0x40;
    let file = SnapshotFile::from_bytes("fuzz", &bytes).unwrap();
    let err = file
        .read_key_group::<u64, String>(entry.key_group)
        .unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Corrupt { key_group: Some(kg), .. } if *kg == entry.key_group)
    );
    assert!(
        err.to_string().starts_with(&format!(
            "snapshot file fuzz is corrupt in key group {}: section checksum mismatch",
            entry.key_group
        )),
        "{err}"
    );
    let report = file.report();
    assert!(!report.checksums_ok());
    assert_eq!(
        report
            .key_groups
            .iter()
            .filter(|kg| !kg.checksum_ok)
            .map(|kg| kg.key_group)
            .collect::<Vec<_>>(),
        [entry.key_group]
    );
}

/// With the checksum fixed up, a corrupt archive is caught by rkyv's validation.
#[test]
fn archive_validation_catches_what_the_checksum_cannot() {
    let (bytes, _, _) = fuzz_fixture();
    let file = SnapshotFile::from_bytes("fuzz", &bytes).unwrap();
    let index_offset = file.report().index_offset as usize;
    let entry = *file.index().iter().find(|e| e.size_bytes > 0).unwrap();
    let mut bad = bytes.clone();
    // The root ArchivedVec (relative pointer i32, length u32) sits at the section's end;
    // point its length far past the section.
    let end = (entry.offset + entry.size_bytes) as usize;
    bad[end - 4..end].copy_from_slice(&1_000_000u32.to_le_bytes());
    let crc = crc32fast::hash(&bad[entry.offset as usize..end]);
    let at = index_offset
        + (entry.key_group - file.key_groups().start) as usize * format::INDEX_ENTRY_BYTES
        + 24;
    bad[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    let footer = bad.len() - format::FOOTER_BYTES;
    let index_crc = crc32fast::hash(&bad[index_offset..footer + 16]);
    bad[footer + 16..footer + 20].copy_from_slice(&index_crc.to_le_bytes());
    let file = SnapshotFile::from_bytes("fuzz", &bad).unwrap();
    let err = file
        .read_key_group::<u64, String>(entry.key_group)
        .unwrap_err();
    assert!(err.to_string().contains("invalid archive"), "{err}");
}

// Encoded sections: key groups of codec-encoded entries (type tag `codec:...`).

use super::writer::{
    is_encoded_type_tag, write_encoded_atomically, Encoded, EncodedSnapshotWriter,
    ENCODED_TYPE_TAG_PREFIX,
};
use crate::keyed::{KeyGroupedFork, KeyGroupedMap};

fn encoded_meta(range: KeyGroupRange) -> SnapshotMeta {
    SnapshotMeta::new("words", "codec:u64:String/v1", MAX_P, range)
}

/// A stand-in for the engine's codec: key (u64 LE), value length (u32 LE), value bytes.
fn encode_into(out: &mut Vec<u8>, key: u64, value: &str) {
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value.as_bytes());
}

fn decode(mut bytes: &[u8], count: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for _ in 0..count {
        let key = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        out.push((
            key,
            String::from_utf8(bytes[12..12 + len].to_vec()).unwrap(),
        ));
        bytes = &bytes[12 + len..];
    }
    assert!(
        bytes.is_empty(),
        "{} bytes left after {count} entries",
        bytes.len()
    );
    out
}

/// Writes the key groups of `want` (sorted entries per key group) as encoded sections,
/// reusing one encode buffer, as the engine does.
fn write_encoded<W: std::io::Write>(
    mut writer: EncodedSnapshotWriter<W>,
    want: &BTreeMap<u32, Vec<(u64, String)>>,
) -> Result<(W, WriteSummary), SnapshotError> {
    let mut buffer = Vec::new();
    for (kg, group) in want {
        buffer.clear();
        for (key, value) in group {
            encode_into(&mut buffer, *key, value);
        }
        writer.write_key_group_encoded(*kg, group.len() as u64, &buffer)?;
    }
    writer.finish()
}

/// Every key group of an encoded file, decoded.
fn read_all_encoded(file: &SnapshotFile) -> Result<Contents, SnapshotError> {
    let mut out = BTreeMap::new();
    for key_group in file.key_groups() {
        let count = file.key_group_entry(key_group)?.entry_count;
        out.insert(key_group, decode(file.encoded_section(key_group)?, count));
    }
    Ok(out)
}

#[test]
fn encoded_sections_round_trip() {
    let range = KeyGroupRange::new(2, 11);
    let want = expected(range, &entries(60));
    // Some key groups are empty, and one is skipped by the writer altogether.
    assert!(want.values().any(Vec::is_empty));
    let mut sparse = want.clone();
    let skipped = *sparse.iter().find(|(_, g)| g.is_empty()).unwrap().0;
    sparse.remove(&skipped);

    let writer = EncodedSnapshotWriter::new(Vec::new(), encoded_meta(range), "mem").unwrap();
    let (bytes, summary) = write_encoded(writer, &sparse).unwrap();
    assert_eq!(summary.size_bytes, bytes.len() as u64);
    assert_eq!(
        summary.entry_count,
        want.values().map(Vec::len).sum::<usize>() as u64
    );
    let file = SnapshotFile::from_bytes("mem", &bytes).unwrap();
    assert_eq!(file.meta(), &encoded_meta(range));
    assert_eq!(file.index(), summary.index.as_slice());
    assert_eq!(read_all_encoded(&file).unwrap(), want);
    for entry in file.index() {
        let group = &want[&entry.key_group];
        assert_eq!(entry.entry_count, group.len() as u64);
        assert_eq!(entry.size_bytes == 0, group.is_empty());
        assert_eq!(entry.offset % format::SECTION_ALIGNMENT_BYTES as u64, 0);
    }
    assert_eq!(
        file.encoded_section(skipped).unwrap(),
        &[] as &[u8],
        "a skipped key group reads empty"
    );
    assert!(matches!(
        file.encoded_section(12),
        Err(SnapshotError::NotInFile { key_group: 12, .. })
    ));
}

#[test]
fn an_encoded_section_is_exactly_the_archive_of_the_bytes_vec() {
    // Every remainder mod 4 and 16 (root padding, section padding), a blob of more than
    // one write buffer, and an empty blob of entries that encode to nothing.
    for len in (0..40).chain([1000, 100_003]) {
        let blob: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let range = KeyGroupRange::new(0, 1);
        let mut writer = EncodedSnapshotWriter::new(
            Vec::new(),
            SnapshotMeta::new("s", "codec:t", 2, range),
            "mem",
        )
        .unwrap();
        writer.write_key_group_encoded(0, 3, &blob).unwrap();
        writer.write_key_group_encoded(1, 1, b"x").unwrap();
        let (bytes, summary) = writer.finish().unwrap();
        let entry = summary.index[0];
        let section = &bytes[entry.offset as usize..(entry.offset + entry.size_bytes) as usize];
        let archived = rkyv::to_bytes::<RkyvError>(&blob).unwrap();
        assert_eq!(section, archived.as_slice(), "blob of {len} bytes");
        assert_eq!(entry.crc32, crc32fast::hash(section));
        assert_eq!(entry.entry_count, 3);
        assert_eq!(summary.entry_count, 4);
        let file = SnapshotFile::from_bytes("mem", &bytes).unwrap();
        let read = file.encoded_section(0).unwrap();
        assert_eq!(read, blob.as_slice());
        // Zero-copy: the bytes are the file's, at the section's start.
        assert_eq!(
            read.as_ptr(),
            file.bytes()[entry.offset as usize..].as_ptr()
        );
        assert_eq!(file.encoded_section(1).unwrap(), b"x");
    }
}

#[test]
fn a_corrupt_encoded_section_names_the_file_and_key_group() {
    let range = KeyGroupRange::new(4, 9);
    let want = expected(range, &entries(40));
    let writer = EncodedSnapshotWriter::new(Vec::new(), encoded_meta(range), "mem").unwrap();
    let (mut bytes, _) = write_encoded(writer, &want).unwrap();
    let file = SnapshotFile::from_bytes("enc", &bytes).unwrap();
    let entry = *file.index().iter().find(|e| e.size_bytes > 0).unwrap();
    let index_offset = file.report().index_offset as usize;

    // A flipped byte in the blob: the checksum.
    let mut flipped = bytes.clone();
    flipped[entry.offset as usize + 5] ^= 0x10;
    let file = SnapshotFile::from_bytes("enc", &flipped).unwrap();
    let err = file.encoded_section(entry.key_group).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Corrupt { key_group: Some(kg), .. } if *kg == entry.key_group),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "snapshot file enc is corrupt in key group {}: section checksum mismatch",
            entry.key_group
        )),
        "{err}"
    );
    let report = file.report();
    assert_eq!(
        report
            .key_groups
            .iter()
            .filter(|kg| !kg.checksum_ok)
            .map(|kg| kg.key_group)
            .collect::<Vec<_>>(),
        [entry.key_group]
    );
    // A reader that checked the checksums before (a restore after `verify`) does not
    // check them again: it gets the (flipped) bytes, and the same bytes as an unflipped
    // file everywhere else.
    let unchecked = file
        .encoded_section_checksummed_before(entry.key_group)
        .unwrap();
    let original = SnapshotFile::from_bytes("enc", &bytes).unwrap();
    let good = original.encoded_section(entry.key_group).unwrap();
    assert_eq!(unchecked.len(), good.len());
    assert_ne!(unchecked, good);
    for other in file.key_groups().iter().filter(|&kg| kg != entry.key_group) {
        assert_eq!(
            file.encoded_section_checksummed_before(other).unwrap(),
            original.encoded_section(other).unwrap()
        );
    }

    // A root pointing past the section, checksums fixed up: rkyv's validation.
    let end = (entry.offset + entry.size_bytes) as usize;
    bytes[end - 4..end].copy_from_slice(&1_000_000u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[entry.offset as usize..end]);
    let at =
        index_offset + (entry.key_group - range.start) as usize * format::INDEX_ENTRY_BYTES + 24;
    bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    let footer = bytes.len() - format::FOOTER_BYTES;
    let index_crc = crc32fast::hash(&bytes[index_offset..footer + 16]);
    bytes[footer + 16..footer + 20].copy_from_slice(&index_crc.to_le_bytes());
    let file = SnapshotFile::from_bytes("enc", &bytes).unwrap();
    let err = file.encoded_section(entry.key_group).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Corrupt { key_group: Some(kg), .. } if *kg == entry.key_group),
        "{err}"
    );
    assert!(err.to_string().contains("invalid encoded section"), "{err}");
    // The archive is validated with or without the checksum.
    let err = file
        .encoded_section_checksummed_before(entry.key_group)
        .unwrap_err();
    assert!(err.to_string().contains("invalid encoded section"), "{err}");
}

#[test]
fn encoded_files_are_written_atomically_and_inspected() {
    let dir = temp_dir();
    let path = dir.join("state-0.snap");
    let range = KeyGroupRange::new(0, 15);
    let want = expected(range, &entries(100));
    let summary =
        write_encoded_atomically(&path, encoded_meta(range), |w| write_encoded(w, &want)).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state-0.snap"]);
    let file = SnapshotFile::open(&path).unwrap();
    assert_eq!(file.size_bytes(), summary.size_bytes);
    assert_eq!(read_all_encoded(&file).unwrap(), want);

    let report = inspect(&path).unwrap();
    assert!(report.checksums_ok());
    assert_eq!(report.meta.type_tag, "codec:u64:String/v1");
    assert_eq!(report.entry_count, 100);
    let counts: Vec<(u32, u64)> = report
        .key_groups
        .iter()
        .map(|kg| (kg.key_group, kg.entry_count))
        .collect();
    let want_counts: Vec<(u32, u64)> = want
        .iter()
        .map(|(kg, group)| (*kg, group.len() as u64))
        .collect();
    assert_eq!(counts, want_counts);

    // A restore plan picks encoded files like any other.
    let files = [file];
    let plan = plan_restore(&files, MAX_P, KeyGroupRange::new(3, 5)).unwrap();
    let restored: Vec<(u32, Vec<(u64, String)>)> = plan
        .iter()
        .map(|(kg, file)| {
            let count = file.key_group_entry(kg).unwrap().entry_count;
            (kg, decode(file.encoded_section(kg).unwrap(), count))
        })
        .collect();
    assert_eq!(
        restored,
        want.range(3..=5)
            .map(|(kg, g)| (*kg, g.clone()))
            .collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sections_must_match_the_type_tag() {
    assert!(is_encoded_type_tag("codec:u64/v1"));
    assert!(!is_encoded_type_tag("u64:codec:"));
    assert_eq!(ENCODED_TYPE_TAG_PREFIX, "codec:");

    // Reading an rkyv file as encoded, and an encoded file as rkyv entries.
    let rkyv_file =
        SnapshotFile::from_bytes("rkyv", &write_flat(KeyGroupRange::new(0, 3), &entries(20)))
            .unwrap();
    let err = rkyv_file.encoded_section(0).unwrap_err();
    assert!(matches!(err, SnapshotError::Incompatible { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("\"u64:String/v1\" marks rkyv entries"),
        "{err}"
    );
    let range = KeyGroupRange::new(0, 3);
    let writer = EncodedSnapshotWriter::new(Vec::new(), encoded_meta(range), "mem").unwrap();
    let (bytes, _) = write_encoded(writer, &expected(range, &entries(20))).unwrap();
    let encoded_file = SnapshotFile::from_bytes("enc", &bytes).unwrap();
    for kg in range {
        let err = encoded_file.read_key_group::<u64, String>(kg).unwrap_err();
        assert!(matches!(err, SnapshotError::Incompatible { .. }), "{err}");
    }
}

#[test]
#[should_panic(expected = "an encoded section in a file with type tag \"u64:String/v1\"")]
fn an_encoded_section_needs_a_codec_type_tag() {
    let range = KeyGroupRange::new(0, 3);
    let mut writer = SnapshotWriter::<_, u64, String>::new(Vec::new(), meta(range), "mem").unwrap();
    let _ = writer.write_key_group_encoded(0, 1, b"x");
}

#[test]
#[should_panic(expected = "an rkyv section in a file with type tag \"codec:u64:String/v1\"")]
fn an_rkyv_section_needs_another_type_tag() {
    let range = KeyGroupRange::new(0, 3);
    let mut writer =
        SnapshotWriter::<_, u64, String>::new(Vec::new(), encoded_meta(range), "mem").unwrap();
    let _ = writer.write_key_group(0, [(1u64, String::new())]);
}

#[test]
#[should_panic(expected = "key group 1: 3 encoded bytes for 0 entries")]
fn encoded_bytes_need_entries() {
    let range = KeyGroupRange::new(0, 3);
    let mut writer = EncodedSnapshotWriter::new(Vec::new(), encoded_meta(range), "mem").unwrap();
    let _ = writer.write_key_group_encoded(1, 0, b"abc");
}

#[test]
#[should_panic(expected = "key group 1 written out of order")]
fn encoded_key_groups_must_ascend() {
    let range = KeyGroupRange::new(0, 3);
    let mut writer = EncodedSnapshotWriter::new(Vec::new(), encoded_meta(range), "mem").unwrap();
    writer.write_key_group_encoded(2, 1, b"x").unwrap();
    let _ = writer.write_key_group_encoded(1, 1, b"x");
}

/// An output that fails once `limit` bytes have been written.
struct FailAfter {
    written: usize,
    limit: usize,
}

impl std::io::Write for FailAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "disk full",
            ));
        }
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_output_is_an_io_error_for_encoded_sections() {
    let range = KeyGroupRange::new(0, 0);
    let out = FailAfter {
        written: 0,
        limit: 200,
    };
    let mut writer =
        EncodedSnapshotWriter::new(out, SnapshotMeta::new("s", "codec:t", 1, range), "disk")
            .unwrap();
    let err = writer
        .write_key_group_encoded(0, 1, &[7u8; 500])
        .unwrap_err();
    assert_io_error(&err, std::io::ErrorKind::StorageFull, "write");
    assert!(err.is_io());
}

#[test]
fn forks_write_the_same_file_as_their_map() {
    let range = KeyGroupRange::new(2, 11);
    let mut map = KeyGroupedMap::<u64, String>::new(range, MAX_P);
    for (kg, key, value) in entries(200) {
        if range.contains(kg) {
            map.insert(kg, key, value);
        }
    }
    let want = expected(range, &entries(200));
    let writer = || SnapshotWriter::<_, u64, String>::new(Vec::new(), meta(range), "mem").unwrap();
    let from_map = writer().write_map(&map).unwrap().0;
    let fork = map.fork();
    assert_eq!(writer().write_fork(&fork).unwrap().0, from_map);

    // Writing while the task mutates the map: the fork still writes the old entries.
    let mut fork: KeyGroupedFork<u64, String> = map.fork();
    for (kg, key, _) in entries(200) {
        if range.contains(kg) {
            map.insert(kg, key, String::new());
        }
    }
    let (bytes, _) = writer().write_fork_releasing(&mut fork).unwrap();
    assert!(range.iter().all(|kg| fork.is_released(kg)));
    let file = SnapshotFile::from_bytes("fork", &bytes).unwrap();
    assert_eq!(read_all(&file).unwrap(), want);
}

#[test]
fn encoded_writers_are_send() {
    fn send<T: Send>() {}
    send::<EncodedSnapshotWriter<std::fs::File>>();
    send::<SnapshotWriter<std::fs::File, Encoded, Encoded>>();
    send::<KeyGroupedFork<u64, String>>();
}

fn encoded_fuzz_fixture() -> Fixture {
    let range = KeyGroupRange::new(4, 9);
    let want = expected(range, &entries(40));
    let writer = EncodedSnapshotWriter::new(Vec::new(), encoded_meta(range), "mem").unwrap();
    let (bytes, _) = write_encoded(writer, &want).unwrap();
    let file = SnapshotFile::from_bytes("fuzz", &bytes).unwrap();
    let pad = padding(&file);
    (bytes, want, pad)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// As `byte_flips_are_detected`, for a file of encoded sections: the checks up to the
    /// encoded bytes (the codec's own checks are not exercised: every flip outside
    /// padding must be caught before the codec sees the bytes).
    #[test]
    fn byte_flips_in_encoded_files_are_detected(flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        check_flips(encoded_fuzz_fixture(), &flips, read_all_encoded)?;
    }
}
