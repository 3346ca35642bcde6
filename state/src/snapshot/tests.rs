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

/// `count` entries `key -> "v{key}"` with their key groups, key ascending.
fn entries(count: u64) -> Vec<(u32, u64, String)> {
    (0..count)
        .map(|key| (assign_to_key_group(&key, MAX_P), key, format!("v{key}")))
        .collect()
}

/// Writes the entries of `range` through the flat form (partition, then write).
fn write_flat(range: KeyGroupRange, input: &[(u32, u64, String)]) -> Vec<u8> {
    let flat: Vec<(u32, (u64, String))> = input
        .iter()
        .filter(|(kg, _, _)| range.contains(*kg))
        .map(|(kg, k, v)| (*kg, (*k, v.clone())))
        .collect();
    let partition = partition_by_key_group(range, flat);
    let writer = SnapshotWriter::<_, u64, String>::new(Vec::new(), meta(range), "mem").unwrap();
    writer.write_partition(&partition).unwrap().0
}

/// Every entry of a file, key group -> sorted entries.
fn read_all(file: &SnapshotFile) -> Result<BTreeMap<u32, Vec<(u64, String)>>, SnapshotError> {
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
fn write_atomically_leaves_only_the_complete_file() {
    let dir = temp_dir();
    let path = dir.join("state-0.snap");
    let range = KeyGroupRange::new(0, 15);
    let input = entries(100);
    let flat: Vec<(u32, (u64, String))> = input
        .iter()
        .map(|(kg, k, v)| (*kg, (*k, v.clone())))
        .collect();
    let partition = partition_by_key_group(range, flat);
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
    let SnapshotError::Io {
        error, operation, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (error.kind(), *operation),
        (std::io::ErrorKind::NotFound, "open")
    );
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
type Fixture = (
    Vec<u8>,
    BTreeMap<u32, Vec<(u64, String)>>,
    Vec<std::ops::Range<usize>>,
);

fn fuzz_fixture() -> Fixture {
    let range = KeyGroupRange::new(4, 9);
    let input = entries(40);
    let bytes = write_flat(range, &input);
    let file = SnapshotFile::from_bytes("fuzz", &bytes).unwrap();
    let data = read_all(&file).unwrap();
    let pad = padding(&file);
    (bytes, data, pad)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Flipping bytes anywhere gives an error, unless every flip is in padding, when the
    /// data reads back unchanged. Never a panic.
    #[test]
    fn byte_flips_are_detected(flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let (mut bytes, data, pad) = fuzz_fixture();
        let mut outside_padding = false;
        for (at, xor) in &flips {
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
            outside_padding |= !pad.iter().any(|r| r.contains(&at));
        }
        let result = SnapshotFile::from_bytes("fuzz", &bytes).and_then(|file| read_all(&file));
        match result {
            Ok(read) => {
                prop_assert!(!outside_padding, "a flip outside padding went unnoticed: {:?}", flips);
                prop_assert_eq!(read, data);
            }
            Err(error) => {
                prop_assert!(outside_padding, "a flip in padding gave {}", error);
                prop_assert!(error.is_corruption() || matches!(error, SnapshotError::VersionMismatch { .. }), "{}", error);
                prop_assert!(error.to_string().contains("fuzz"));
            }
        }
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
