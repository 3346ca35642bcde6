//! The byte layout of a snapshot file, as `docs/SNAPSHOT_FORMAT.md` specifies it: the
//! constants, and pure functions that encode the header, index and footer and decode and
//! validate them. No I/O and no rkyv here: the writer and the reader put these pieces
//! around the rkyv sections.
//!
//! Decoding never panics and never trusts a length or an offset before checking it
//! against the file's length; every error names the file (and the key group when one
//! section is at fault).

use std::path::Path;

use crate::error::SnapshotError;
use crate::key_group::{KeyGroupRange, MAX_PARALLELISM_BOUND};

use super::SnapshotMeta;

/// The first 8 bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"RHEONSNP";
/// The last 8 bytes of every completely written snapshot file.
pub const FOOTER_MAGIC: [u8; 8] = *b"RHEONEND";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Alignment of the first section, of every section and of the index, relative to the
/// start of the file. rkyv needs each section aligned to the largest alignment of an
/// archived type in it; 16 covers every primitive including `u128`.
pub const SECTION_ALIGNMENT_BYTES: usize = 16;
/// Length of the fixed part of the header (the names follow it).
pub const HEADER_FIXED_BYTES: usize = 48;
/// Length of one key group's entry in the index.
pub const INDEX_ENTRY_BYTES: usize = 32;
/// Length of the footer.
pub const FOOTER_BYTES: usize = 32;
/// Longest state name or type tag, in bytes (stored as a u16).
pub const NAME_BYTES_MAX: usize = u16::MAX as usize;
/// Offset of the header checksum: it covers the bytes before it and the names.
const HEADER_CRC_OFFSET: usize = 44;
/// Offset in the footer of its checksum: it covers the index and the footer's first 16
/// bytes.
const FOOTER_CRC_OFFSET: usize = 16;

const _: () = assert!(SECTION_ALIGNMENT_BYTES.is_power_of_two());
const _: () = assert!(HEADER_FIXED_BYTES % SECTION_ALIGNMENT_BYTES == 0);
const _: () = assert!(INDEX_ENTRY_BYTES % SECTION_ALIGNMENT_BYTES == 0);
const _: () = assert!(FOOTER_BYTES % SECTION_ALIGNMENT_BYTES == 0);
const _: () = assert!(HEADER_CRC_OFFSET + 4 == HEADER_FIXED_BYTES);

/// One key group's entry in the index: where its section is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGroupEntry {
    /// The key group.
    pub key_group: u32,
    /// Offset of the section from the start of the file (a multiple of 16).
    pub offset: u64,
    /// Length of the section in bytes, without padding; 0 for an empty key group.
    pub size_bytes: u64,
    /// Number of entries (key-value pairs) in the section.
    pub entry_count: u64,
    /// CRC-32 (IEEE, as `crc32fast`) of the section's `size_bytes` bytes.
    pub crc32: u32,
}

/// The decoded, validated header, index and footer of a file.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub meta: SnapshotMeta,
    /// Offset of the first section.
    pub data_start: u64,
    /// Offset of the index.
    pub index_offset: u64,
    /// One entry per key group of `meta.key_groups`, ascending.
    pub index: Vec<KeyGroupEntry>,
    /// Sum of the entry counts.
    pub entry_count: u64,
}

/// `value` rounded up to a multiple of [`SECTION_ALIGNMENT_BYTES`].
pub(crate) const fn align_up(value: u64) -> u64 {
    let align = SECTION_ALIGNMENT_BYTES as u64;
    (value + align - 1) & !(align - 1)
}

/// Zero bytes to write after `position` to reach the next aligned offset.
pub(crate) fn padding_after(position: u64) -> usize {
    (align_up(position) - position) as usize
}

/// The header: fixed part, names, zero padding to a multiple of 16 bytes.
///
/// Panics if a name is longer than [`NAME_BYTES_MAX`] or the range does not fit the max
/// parallelism (checked by [`SnapshotMeta::new`]).
pub(crate) fn encode_header(meta: &SnapshotMeta) -> Vec<u8> {
    meta.assert_valid();
    let name = meta.state_name.as_bytes();
    let tag = meta.type_tag.as_bytes();
    let mut out = Vec::with_capacity(HEADER_FIXED_BYTES + name.len() + tag.len() + 16);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // flags
    out.extend_from_slice(&meta.max_parallelism.to_le_bytes());
    out.extend_from_slice(&meta.key_groups.start.to_le_bytes());
    out.extend_from_slice(&meta.key_groups.end.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0u8; 12]); // reserved
    debug_assert_eq!(out.len(), HEADER_CRC_OFFSET);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out);
    crc.update(name);
    crc.update(tag);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(tag);
    out.resize(align_up(out.len() as u64) as usize, 0);
    out
}

/// The index and the footer, written after the last section at `index_offset`.
pub(crate) fn encode_index_and_footer(
    index: &[KeyGroupEntry],
    index_offset: u64,
    entry_count: u64,
) -> Vec<u8> {
    assert_eq!(index_offset % SECTION_ALIGNMENT_BYTES as u64, 0);
    let mut out = Vec::with_capacity(index.len() * INDEX_ENTRY_BYTES + FOOTER_BYTES);
    for entry in index {
        out.extend_from_slice(&entry.offset.to_le_bytes());
        out.extend_from_slice(&entry.size_bytes.to_le_bytes());
        out.extend_from_slice(&entry.entry_count.to_le_bytes());
        out.extend_from_slice(&entry.crc32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // reserved
    }
    out.extend_from_slice(&index_offset.to_le_bytes());
    out.extend_from_slice(&entry_count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // reserved
    out.extend_from_slice(&FOOTER_MAGIC);
    out
}

/// Reads a little-endian u16, u32 or u64 at `at`; the caller has checked the bounds.
fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Decodes and validates everything but the sections' contents: header, footer, index,
/// and that the sections tile the space between header and index exactly as the writer
/// lays them out. O(header + index); the sections are checked when read.
pub(crate) fn decode_layout(path: &Path, bytes: &[u8]) -> Result<Layout, SnapshotError> {
    let len = bytes.len() as u64;
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        key_group: None,
        reason,
    };
    let truncated = |reason: String| SnapshotError::Truncated {
        path: path.to_path_buf(),
        size_bytes: len,
        reason,
    };

    // Magic and version first: they are the same in every format version.
    if bytes.len() < MAGIC.len() + 4 {
        let n = bytes.len().min(MAGIC.len());
        if bytes[..n] != MAGIC[..n] {
            return Err(corrupt(format!(
                "not a Rheon snapshot file: it does not start with the magic {:?}",
                String::from_utf8_lossy(&MAGIC)
            )));
        }
        return Err(truncated(format!(
            "a snapshot file has at least {} bytes",
            HEADER_FIXED_BYTES + FOOTER_BYTES
        )));
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt(format!(
            "not a Rheon snapshot file: it starts with {:02x?}, not the magic {:?}",
            &bytes[..MAGIC.len()],
            String::from_utf8_lossy(&MAGIC)
        )));
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::VersionMismatch {
            path: path.to_path_buf(),
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    if bytes.len() < HEADER_FIXED_BYTES + FOOTER_BYTES {
        return Err(truncated(format!(
            "a snapshot file has at least {} bytes",
            HEADER_FIXED_BYTES + FOOTER_BYTES
        )));
    }

    // Header.
    let flags = u32_at(bytes, 12);
    let max_parallelism = u32_at(bytes, 16);
    let key_groups = KeyGroupRange::new(u32_at(bytes, 20), u32_at(bytes, 24));
    let name_len = usize::from(u16_at(bytes, 28));
    let tag_len = usize::from(u16_at(bytes, 30));
    let names_end = HEADER_FIXED_BYTES + name_len + tag_len;
    let data_start = align_up(names_end as u64);
    if len < data_start + FOOTER_BYTES as u64 {
        return Err(truncated(format!(
            "the header with its names takes {data_start} bytes, and the footer {FOOTER_BYTES}"
        )));
    }
    let stored_crc = u32_at(bytes, HEADER_CRC_OFFSET);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..HEADER_CRC_OFFSET]);
    crc.update(&bytes[HEADER_FIXED_BYTES..names_end]);
    let computed_crc = crc.finalize();
    if computed_crc != stored_crc {
        return Err(corrupt(format!(
            "header checksum mismatch: stored {stored_crc:#010x}, computed {computed_crc:#010x}"
        )));
    }
    // Covered by the checksum, so a failure below is a writer bug or a forged file; still
    // an error, never a panic.
    if flags != 0 {
        return Err(corrupt(format!("header flags are {flags:#x}, expected 0")));
    }
    if bytes[32..HEADER_CRC_OFFSET].iter().any(|&b| b != 0) {
        return Err(corrupt("reserved header bytes 32..44 are not zero".into()));
    }
    if max_parallelism == 0 || max_parallelism > MAX_PARALLELISM_BOUND {
        return Err(corrupt(format!(
            "max parallelism {max_parallelism} is outside 1..={MAX_PARALLELISM_BOUND}"
        )));
    }
    if key_groups.is_empty() || key_groups.end >= max_parallelism {
        return Err(corrupt(format!(
            "key group range {key_groups} is empty or reaches past max parallelism \
             {max_parallelism}"
        )));
    }
    let utf8 = |what: &str, range: std::ops::Range<usize>| {
        std::str::from_utf8(&bytes[range])
            .map(str::to_owned)
            .map_err(|error| corrupt(format!("{what} is not UTF-8: {error}")))
    };
    let state_name = utf8(
        "state name",
        HEADER_FIXED_BYTES..HEADER_FIXED_BYTES + name_len,
    )?;
    let type_tag = utf8("type tag", HEADER_FIXED_BYTES + name_len..names_end)?;

    // Footer.
    let footer_start = bytes.len() - FOOTER_BYTES;
    if bytes[bytes.len() - FOOTER_MAGIC.len()..] != FOOTER_MAGIC {
        return Err(truncated(format!(
            "it does not end with the footer magic {:?}: not completely written, or cut short",
            String::from_utf8_lossy(&FOOTER_MAGIC)
        )));
    }
    let index_offset = u64_at(bytes, footer_start);
    let entry_count = u64_at(bytes, footer_start + 8);
    let key_group_count = u64::from(key_groups.len());
    let expected_len = index_offset
        .checked_add(key_group_count * INDEX_ENTRY_BYTES as u64 + FOOTER_BYTES as u64)
        .ok_or_else(|| corrupt(format!("index offset {index_offset} overflows")))?;
    if expected_len != len {
        return Err(corrupt(format!(
            "the footer puts the index at offset {index_offset}; with {key_group_count} key \
             groups the file would be {expected_len} bytes, but it is {len}"
        )));
    }
    // Now index_offset < len, so it fits a usize.
    let index_start = index_offset as usize;
    let crc_end = footer_start + FOOTER_CRC_OFFSET;
    let stored_crc = u32_at(bytes, crc_end);
    let computed_crc = crc32fast::hash(&bytes[index_start..crc_end]);
    if stored_crc != computed_crc {
        return Err(corrupt(format!(
            "index checksum mismatch: stored {stored_crc:#010x}, computed {computed_crc:#010x}"
        )));
    }
    if u32_at(bytes, crc_end + 4) != 0 {
        return Err(corrupt("reserved footer bytes 20..24 are not zero".into()));
    }
    if index_offset < data_start || index_offset % SECTION_ALIGNMENT_BYTES as u64 != 0 {
        return Err(corrupt(format!(
            "index offset {index_offset} is before the first section ({data_start}) or not a \
             multiple of {SECTION_ALIGNMENT_BYTES}"
        )));
    }

    // Index: the sections tile [data_start, index_offset) in key-group order, each at the
    // aligned end of the previous one.
    let mut index = Vec::with_capacity(key_groups.len() as usize);
    let mut expected_offset = data_start;
    let mut sum = 0u64;
    for (i, key_group) in key_groups.iter().enumerate() {
        let at = index_start + i * INDEX_ENTRY_BYTES;
        let entry = KeyGroupEntry {
            key_group,
            offset: u64_at(bytes, at),
            size_bytes: u64_at(bytes, at + 8),
            entry_count: u64_at(bytes, at + 16),
            crc32: u32_at(bytes, at + 24),
        };
        let bad = |reason: String| SnapshotError::Corrupt {
            path: path.to_path_buf(),
            key_group: Some(key_group),
            reason: format!("index entry: {reason}"),
        };
        if u32_at(bytes, at + 28) != 0 {
            return Err(bad("reserved bytes are not zero".into()));
        }
        if entry.offset != expected_offset {
            return Err(bad(format!(
                "section offset {} where the previous section ends at {expected_offset}",
                entry.offset
            )));
        }
        let end = entry
            .offset
            .checked_add(entry.size_bytes)
            .filter(|&end| end <= index_offset)
            .ok_or_else(|| {
                bad(format!(
                    "section [{}, +{}) reaches past the index at {index_offset}",
                    entry.offset, entry.size_bytes
                ))
            })?;
        if (entry.size_bytes == 0) != (entry.entry_count == 0) {
            return Err(bad(format!(
                "{} bytes for {} entries: a key group is empty exactly when its section is",
                entry.size_bytes, entry.entry_count
            )));
        }
        if entry.size_bytes == 0 && entry.crc32 != 0 {
            return Err(bad(format!(
                "empty section with checksum {:#010x}",
                entry.crc32
            )));
        }
        sum = sum
            .checked_add(entry.entry_count)
            .ok_or_else(|| bad("entry counts overflow".into()))?;
        expected_offset = align_up(end);
        index.push(entry);
    }
    if expected_offset != index_offset {
        return Err(corrupt(format!(
            "the last section ends at {expected_offset} (aligned), but the index starts at \
             {index_offset}"
        )));
    }
    if sum != entry_count {
        return Err(corrupt(format!(
            "the footer counts {entry_count} entries, the index {sum}"
        )));
    }

    Ok(Layout {
        meta: SnapshotMeta {
            state_name,
            type_tag,
            max_parallelism,
            key_groups,
        },
        data_start,
        index_offset,
        index,
        entry_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta::new("counts", "u64:u64", 128, KeyGroupRange::new(0, 2))
    }

    #[test]
    fn header_bytes_are_pinned() {
        let header = encode_header(&meta());
        // 48 fixed + "counts" (6) + "u64:u64" (7) = 61, padded to 64.
        assert_eq!(header.len(), 64);
        assert_eq!(&header[0..8], b"RHEONSNP");
        assert_eq!(&header[8..12], &1u32.to_le_bytes());
        assert_eq!(&header[12..16], &[0; 4]);
        assert_eq!(&header[16..20], &128u32.to_le_bytes());
        assert_eq!(&header[20..24], &0u32.to_le_bytes());
        assert_eq!(&header[24..28], &2u32.to_le_bytes());
        assert_eq!(&header[28..30], &6u16.to_le_bytes());
        assert_eq!(&header[30..32], &7u16.to_le_bytes());
        assert_eq!(&header[32..44], &[0; 12]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[..44]);
        crc.update(b"countsu64:u64");
        assert_eq!(&header[44..48], &crc.finalize().to_le_bytes());
        assert_eq!(&header[48..61], b"countsu64:u64");
        assert_eq!(&header[61..64], &[0; 3]);
    }

    #[test]
    fn empty_layout_round_trips() {
        let meta = meta();
        let mut file = encode_header(&meta);
        let data_start = file.len() as u64;
        let index: Vec<KeyGroupEntry> = meta
            .key_groups
            .iter()
            .map(|key_group| KeyGroupEntry {
                key_group,
                offset: data_start,
                size_bytes: 0,
                entry_count: 0,
                crc32: 0,
            })
            .collect();
        file.extend(encode_index_and_footer(&index, data_start, 0));
        assert_eq!(file.len(), 64 + 3 * 32 + 32);
        let layout = decode_layout(Path::new("x"), &file).expect("valid");
        assert_eq!(layout.meta, meta);
        assert_eq!(layout.index, index);
        assert_eq!(layout.data_start, 64);
        assert_eq!(layout.index_offset, 64);
        assert_eq!(layout.entry_count, 0);
    }

    #[test]
    fn short_inputs_are_errors() {
        for bytes in [&b""[..], b"RHEON", b"RHEONSNP", b"XXXXXXXXXXXXXXXX"] {
            let error = decode_layout(Path::new("x"), bytes).expect_err("too short");
            assert!(error.is_corruption(), "{error}");
        }
    }

    #[test]
    fn align_up_rounds_to_16() {
        assert_eq!(align_up(0), 0);
        assert_eq!(align_up(1), 16);
        assert_eq!(align_up(16), 16);
        assert_eq!(align_up(17), 32);
        assert_eq!(padding_after(61), 3);
    }
}
