//! Reading snapshot files: [`SnapshotFile`] memory-maps a file, validates its header,
//! index and footer on open (O(index), no section is touched), and validates a key
//! group's section when it is read: CRC-32 first, then rkyv's `bytecheck` validation of
//! the archive, then the entry count. Only the pages of the key groups read are faulted
//! in, so a restore costs what the restoring subtask owns.
//!
//! A file of encoded sections (type tag `codec:...`, see [`super::writer::Encoded`]) is
//! read with [`SnapshotFile::encoded_section`], which validates the section's rkyv
//! `Vec<u8>` and hands out the codec's bytes zero-copy; the caller's codec decodes them.
//!
//! Rescaling is a restore with another parallelism: [`plan_restore`] picks, for every key
//! group of the new subtask's range, the one old file that holds it.

use std::fs::File;
use std::hash::Hash;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rkyv::util::AlignedVec;
use rkyv::vec::ArchivedVec;
use rustc_hash::FxHashMap;

use super::format::{self, KeyGroupEntry, Layout};
use super::writer::{is_encoded_type_tag, ENCODED_TYPE_TAG_PREFIX};
use super::{ArchivedEntries, ArchivedEntry, RkyvError, SnapshotData, SnapshotMeta};
use crate::error::SnapshotError;
use crate::key_group::{check_parallelism, KeyGroupRange};
use crate::keyed::KeyGroupedMap;

/// The bytes of a file: memory-mapped, or an aligned copy (for tests and for bytes that
/// did not come from a file).
enum Backing {
    Mapped(Mmap),
    Owned(AlignedVec),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Owned(bytes) => bytes,
        }
    }
}

/// An open, layout-validated snapshot file. `Send + Sync`: restoring subtasks on several
/// threads can share one.
pub struct SnapshotFile {
    path: PathBuf,
    backing: Backing,
    layout: Layout,
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFile")
            .field("path", &self.path)
            .field("size_bytes", &self.size_bytes())
            .field("meta", &self.layout.meta)
            .field("entry_count", &self.layout.entry_count)
            .finish()
    }
}

impl SnapshotFile {
    /// Memory-maps the file at `path` and validates its header, footer and index.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let path = path.as_ref();
        let io_error = |operation| {
            move |error| SnapshotError::Io {
                path: path.to_path_buf(),
                operation,
                error,
            }
        };
        let file = File::open(path).map_err(io_error("open"))?;
        let size_bytes = file.metadata().map_err(io_error("stat"))?.len();
        if size_bytes < (format::HEADER_FIXED_BYTES + format::FOOTER_BYTES) as u64 {
            // Too short to map usefully (and mapping an empty file fails on some
            // systems); decode the few bytes to tell "empty" from "not a snapshot".
            let bytes = std::fs::read(path).map_err(io_error("read"))?;
            return Self::from_bytes(path, &bytes);
        }
        // SAFETY: `Mmap::map` is unsafe because the mapped file may be changed or
        // truncated by another process while mapped, which would change the bytes behind
        // `&[u8]` (or fault on access). Snapshot files are immutable by protocol: they are
        // written under a temporary name and renamed into place complete
        // (`write_atomically`), and nothing writes them afterwards; they are deleted only
        // when their checkpoint is subsumed, after restores from it have ended.
        let map = unsafe { Mmap::map(&file) }.map_err(io_error("memory-map"))?;
        // The layout is a few pages at each end of the file. A page fault on a
        // file mapping reads around the page, `read_ahead_kb` of it (8 MiB on
        // some hosts), so reading the layout of a cold checkpoint read several
        // MiB per file (a restore after a crash verified 2 GB of files in
        // 0.3-0.5 s): faults read only their page while the layout is read.
        // Only advice: errors are ignored.
        let _ = map.advise(memmap2::Advice::Random);
        let layout = format::decode_layout(path, &map);
        let _ = map.advise(memmap2::Advice::Normal);
        let layout = layout?;
        Ok(Self {
            path: path.to_path_buf(),
            backing: Backing::Mapped(map),
            layout,
        })
    }

    /// Validates a file held in memory; `path` names it in errors. The bytes are copied
    /// into an aligned buffer, as rkyv needs.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: &[u8]) -> Result<Self, SnapshotError> {
        let path = path.into();
        let mut owned = AlignedVec::with_capacity(bytes.len());
        owned.extend_from_slice(bytes);
        let layout = format::decode_layout(&path, &owned)?;
        Ok(Self {
            path,
            backing: Backing::Owned(owned),
            layout,
        })
    }

    /// The file's path (or the name given to [`Self::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// The file's length.
    pub fn size_bytes(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// State name, type tag, max parallelism and key-group range.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.layout.meta
    }

    /// The key groups the file holds.
    pub fn key_groups(&self) -> KeyGroupRange {
        self.layout.meta.key_groups
    }

    /// Entries over all key groups.
    pub fn entry_count(&self) -> u64 {
        self.layout.entry_count
    }

    /// The index: offset, size, entry count and checksum of every key group, ascending.
    pub fn index(&self) -> &[KeyGroupEntry] {
        &self.layout.index
    }

    /// The index entry of `key_group`.
    pub fn key_group_entry(&self, key_group: u32) -> Result<&KeyGroupEntry, SnapshotError> {
        let range = self.key_groups();
        if !range.contains(key_group) {
            return Err(SnapshotError::NotInFile {
                path: self.path.clone(),
                key_group,
                range,
            });
        }
        Ok(&self.layout.index[(key_group - range.start) as usize])
    }

    /// Advises the kernel that the sections of the key groups of `key_groups` (those in
    /// this file) will be read soon, so it reads them ahead in large requests instead of
    /// page fault by page fault. Only advice: errors are ignored, and files held in memory
    /// are unaffected.
    pub fn will_need(&self, key_groups: KeyGroupRange) {
        let range = self.key_groups();
        let (start, end) = (
            key_groups.start.max(range.start),
            key_groups.end.min(range.end),
        );
        if start > end {
            return;
        }
        let first = &self.layout.index[(start - range.start) as usize];
        let last = &self.layout.index[(end - range.start) as usize];
        let span = (last.offset + last.size_bytes - first.offset) as usize;
        if let Backing::Mapped(map) = &self.backing {
            if span > 0 {
                let _ = map.advise_range(memmap2::Advice::WillNeed, first.offset as usize, span);
            }
        }
    }

    /// The section of `key_group`, after checking its CRC-32.
    pub fn section(&self, key_group: u32) -> Result<&[u8], SnapshotError> {
        let entry = self.key_group_entry(key_group)?;
        // In bounds: `decode_layout` checked offset + size <= index offset < len.
        let start = entry.offset as usize;
        let bytes = &self.bytes()[start..start + entry.size_bytes as usize];
        let computed = crc32fast::hash(bytes);
        if computed != entry.crc32 {
            return Err(self.corrupt(
                key_group,
                format!(
                    "section checksum mismatch: stored {:#010x}, computed {computed:#010x} over \
                     {} bytes at offset {}",
                    entry.crc32, entry.size_bytes, entry.offset
                ),
            ));
        }
        Ok(bytes)
    }

    /// Zero-copy access to the entries of `key_group`: checks the section's CRC-32, then
    /// validates the archive with rkyv's `bytecheck` and the entry count against the
    /// index. An empty key group gives an empty slice.
    ///
    /// The key and value types must be the ones the file was written with (see
    /// [`SnapshotMeta::type_tag`]); other types fail validation or, where their archived
    /// forms happen to validate, read other values, never undefined behaviour. A file of
    /// encoded sections (type tag `codec:...`) is [`SnapshotError::Incompatible`].
    pub fn access<K: SnapshotData, V: SnapshotData>(
        &self,
        key_group: u32,
    ) -> Result<&[ArchivedEntry<K, V>], SnapshotError> {
        self.expect_sections(false)?;
        let entry = self.key_group_entry(key_group)?;
        if entry.size_bytes == 0 {
            return Ok(&[]);
        }
        let bytes = self.section(key_group)?;
        let archived = rkyv::access::<ArchivedEntries<K, V>, RkyvError>(bytes)
            .map_err(|error| self.corrupt(key_group, format!("invalid archive: {error}")))?;
        if archived.len() as u64 != entry.entry_count {
            return Err(self.corrupt(
                key_group,
                format!(
                    "the archive holds {} entries, the index {}",
                    archived.len(),
                    entry.entry_count
                ),
            ));
        }
        Ok(archived.as_slice())
    }

    /// Zero-copy access to the codec-encoded entries of `key_group` in a file of encoded
    /// sections (type tag `codec:...`): checks the section's CRC-32, validates it as an
    /// rkyv `ArchivedVec<u8>` and returns its bytes, the [`KeyGroupEntry::entry_count`]
    /// entries the writer's codec encoded back to back. An empty key group gives an empty
    /// slice. The bytes are only as aligned as a `Vec<u8>`'s: the section starts 16-aligned
    /// and the blob at the section's start, but the codec should not rely on it.
    ///
    /// Errors: [`SnapshotError::NotInFile`] for a key group outside the file,
    /// [`SnapshotError::Corrupt`] naming the file and key group for a bad section, and
    /// [`SnapshotError::Incompatible`] if the type tag does not mark encoded sections.
    pub fn encoded_section(&self, key_group: u32) -> Result<&[u8], SnapshotError> {
        self.encoded_section_checked(key_group, true)
    }

    /// [`encoded_section`](Self::encoded_section) without the section's CRC-32, for a
    /// reader that has checked every checksum of this (immutable) file already, as
    /// `checkpoint::verify` does before a restore: the restore then reads each section
    /// once instead of twice. The archive is still validated.
    pub fn encoded_section_checksummed_before(
        &self,
        key_group: u32,
    ) -> Result<&[u8], SnapshotError> {
        self.encoded_section_checked(key_group, false)
    }

    fn encoded_section_checked(
        &self,
        key_group: u32,
        check_crc: bool,
    ) -> Result<&[u8], SnapshotError> {
        self.expect_sections(true)?;
        let entry = self.key_group_entry(key_group)?;
        if entry.size_bytes == 0 {
            return Ok(&[]);
        }
        let bytes = match check_crc {
            true => self.section(key_group)?,
            // In bounds: `decode_layout` checked offset + size <= index offset < len.
            false => {
                let start = entry.offset as usize;
                &self.bytes()[start..start + entry.size_bytes as usize]
            }
        };
        let archived = rkyv::access::<ArchivedVec<u8>, RkyvError>(bytes).map_err(|error| {
            self.corrupt(key_group, format!("invalid encoded section: {error}"))
        })?;
        Ok(archived.as_slice())
    }

    /// Checks that the file's sections are of the kind being read: encoded (type tag
    /// `codec:...`) or rkyv entries.
    fn expect_sections(&self, encoded: bool) -> Result<(), SnapshotError> {
        let tag = &self.layout.meta.type_tag;
        if is_encoded_type_tag(tag) == encoded {
            return Ok(());
        }
        let (has, read) = if encoded {
            ("rkyv entries", "encoded sections")
        } else {
            ("encoded sections", "rkyv entries")
        };
        Err(SnapshotError::Incompatible {
            path: self.path.clone(),
            reason: format!(
                "its type tag {tag:?} marks {has} (tags starting with \
                 {ENCODED_TYPE_TAG_PREFIX:?} mark encoded sections), but {read} were read"
            ),
        })
    }

    /// Zero-copy iteration over the entries of `key_group` as `(&archived key, &archived
    /// value)`, after the checks of [`Self::access`].
    pub fn archived_entries<'a, K: SnapshotData, V: SnapshotData>(
        &'a self,
        key_group: u32,
    ) -> Result<impl ExactSizeIterator<Item = (&'a K::Archived, &'a V::Archived)>, SnapshotError>
    where
        K::Archived: 'a,
        V::Archived: 'a,
    {
        Ok(self
            .access::<K, V>(key_group)?
            .iter()
            .map(|entry| (&entry.0, &entry.1)))
    }

    /// The entries of `key_group`, deserialized, after the checks of [`Self::access`].
    pub fn read_key_group<K: SnapshotData, V: SnapshotData>(
        &self,
        key_group: u32,
    ) -> Result<Vec<(K, V)>, SnapshotError> {
        let archived = self.access::<K, V>(key_group)?;
        let mut out = Vec::with_capacity(archived.len());
        for entry in archived {
            out.push(self.deserialize_entry::<K, V>(key_group, entry)?);
        }
        Ok(out)
    }

    fn deserialize_entry<K: SnapshotData, V: SnapshotData>(
        &self,
        key_group: u32,
        entry: &ArchivedEntry<K, V>,
    ) -> Result<(K, V), SnapshotError> {
        // Deserializing validated data of the right types does not fail; an error here is
        // still reported, not unwrapped.
        rkyv::deserialize::<(K, V), RkyvError>(entry)
            .map_err(|error| self.corrupt(key_group, format!("cannot deserialize: {error}")))
    }

    /// Checks every section's CRC-32 and returns what `rheon checkpoint inspect` shows:
    /// the range, the per-key-group histogram (entries and bytes) and which checksums
    /// hold. The header and index checksums held, or the file would not have opened.
    pub fn report(&self) -> SnapshotReport {
        let key_groups = self
            .layout
            .index
            .iter()
            .map(|entry| KeyGroupReport {
                key_group: entry.key_group,
                offset: entry.offset,
                size_bytes: entry.size_bytes,
                entry_count: entry.entry_count,
                checksum_ok: self.section(entry.key_group).is_ok(),
            })
            .collect();
        SnapshotReport {
            path: self.path.clone(),
            size_bytes: self.size_bytes(),
            format_version: format::FORMAT_VERSION,
            header_size_bytes: self.layout.data_start,
            index_offset: self.layout.index_offset,
            meta: self.layout.meta.clone(),
            entry_count: self.layout.entry_count,
            key_groups,
        }
    }

    fn corrupt(&self, key_group: u32, reason: String) -> SnapshotError {
        SnapshotError::Corrupt {
            path: self.path.clone(),
            key_group: Some(key_group),
            reason,
        }
    }
}

/// One key group's line of a [`SnapshotReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGroupReport {
    /// The key group.
    pub key_group: u32,
    /// Offset of its section in the file.
    pub offset: u64,
    /// Bytes of its section (without padding).
    pub size_bytes: u64,
    /// Entries in it.
    pub entry_count: u64,
    /// Whether the section's CRC-32 holds.
    pub checksum_ok: bool,
}

/// What [`inspect`] reports about a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The file.
    pub path: PathBuf,
    /// Its length.
    pub size_bytes: u64,
    /// Its format version.
    pub format_version: u32,
    /// Bytes of the header with its names and padding: the offset of the first section.
    pub header_size_bytes: u64,
    /// Offset of the index (the index and footer take the rest of the file).
    pub index_offset: u64,
    /// State name, type tag, max parallelism and key-group range.
    pub meta: SnapshotMeta,
    /// Entries over all key groups.
    pub entry_count: u64,
    /// The histogram: one line per key group of the range, ascending.
    pub key_groups: Vec<KeyGroupReport>,
}

impl SnapshotReport {
    /// Whether every checksum of the file holds.
    pub fn checksums_ok(&self) -> bool {
        self.key_groups.iter().all(|kg| kg.checksum_ok)
    }

    /// The key groups whose checksum fails, ascending.
    pub fn corrupt_key_groups(&self) -> Vec<u32> {
        self.key_groups
            .iter()
            .filter(|kg| !kg.checksum_ok)
            .map(|kg| kg.key_group)
            .collect()
    }
}

/// Opens the file at `path` and reports its layout and checksums. Fails only if the file
/// cannot be read or its header, index or footer is bad; a bad section is reported in
/// [`KeyGroupReport::checksum_ok`].
pub fn inspect(path: impl AsRef<Path>) -> Result<SnapshotReport, SnapshotError> {
    Ok(SnapshotFile::open(path)?.report())
}

/// Which file each key group of a restore comes from: see [`plan_restore`].
#[derive(Debug)]
pub struct RestorePlan<'a> {
    range: KeyGroupRange,
    max_parallelism: u32,
    /// The source of key group `range.start + i`.
    sources: Vec<&'a SnapshotFile>,
}

impl<'a> RestorePlan<'a> {
    /// The key groups being restored.
    pub fn range(&self) -> KeyGroupRange {
        self.range
    }

    /// The max parallelism of the files (and the restoring job).
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// `(key_group, file holding it)` for every key group of the range, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &'a SnapshotFile)> + '_ {
        self.range.iter().zip(self.sources.iter().copied())
    }

    /// Advises the kernel to read ahead the sections this plan reads (see
    /// [`SnapshotFile::will_need`]).
    pub fn will_need(&self) {
        let mut previous: Option<*const SnapshotFile> = None;
        for (_, file) in self.iter() {
            if previous != Some(file as *const _) {
                file.will_need(self.range);
                previous = Some(file as *const _);
            }
        }
    }

    /// Deserializes every key group of the range into a new [`KeyGroupedMap`], each key
    /// group's map presized from the file's index.
    pub fn read_into_map<K, V>(&self) -> Result<KeyGroupedMap<K, V>, SnapshotError>
    where
        K: SnapshotData + Hash + Eq,
        V: SnapshotData,
    {
        self.will_need();
        let mut groups = Vec::with_capacity(self.range.len() as usize);
        for (key_group, file) in self.iter() {
            let entries = file.access::<K, V>(key_group)?;
            let mut group = FxHashMap::with_capacity_and_hasher(entries.len(), Default::default());
            for entry in entries {
                let (key, value) = file.deserialize_entry::<K, V>(key_group, entry)?;
                group.insert(key, value);
            }
            groups.push(group);
        }
        Ok(KeyGroupedMap::from_key_groups(
            self.range,
            self.max_parallelism,
            groups,
        ))
    }
}

/// Plans the restore of the key groups in `range` of a job with `max_parallelism` from
/// `files`, typically every file of one state in a checkpoint (one per old subtask, at any
/// old parallelism). Each key group must be in exactly one file, and the files must agree
/// on max parallelism, state name and type tag. Reads only the files' headers and indexes,
/// already validated by [`SnapshotFile::open`].
///
/// Panics if `max_parallelism` is outside `1..=MAX_PARALLELISM_BOUND` (configuration is
/// validated before a restore).
pub fn plan_restore(
    files: &[SnapshotFile],
    max_parallelism: u32,
    range: KeyGroupRange,
) -> Result<RestorePlan<'_>, SnapshotError> {
    if let Err(error) = check_parallelism(max_parallelism, 1) {
        panic!("invalid max parallelism for a restore: {error}");
    }
    if let Some(first) = files.first() {
        for file in files {
            let (a, b) = (first.meta(), file.meta());
            let reason = if b.max_parallelism != max_parallelism {
                Some(format!(
                    "max parallelism {} where the restore has {max_parallelism}",
                    b.max_parallelism
                ))
            } else if b.state_name != a.state_name || b.type_tag != a.type_tag {
                Some(format!(
                    "state {:?} with type tag {:?}, where {} has state {:?} with type tag {:?}",
                    b.state_name,
                    b.type_tag,
                    first.path().display(),
                    a.state_name,
                    a.type_tag
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(SnapshotError::Incompatible {
                    path: file.path().to_path_buf(),
                    reason,
                });
            }
        }
    }
    let len = range.len() as usize;
    let mut sources: Vec<Option<&SnapshotFile>> = vec![None; len];
    for file in files {
        let covered = file.key_groups();
        let start = covered.start.max(range.start);
        let end = covered.end.min(range.end);
        for key_group in start..=end {
            let slot = &mut sources[(key_group - range.start) as usize];
            if let Some(other) = slot {
                return Err(SnapshotError::Overlap {
                    key_group,
                    first: other.path().to_path_buf(),
                    second: file.path().to_path_buf(),
                });
            }
            *slot = Some(file);
        }
    }
    let sources = sources
        .into_iter()
        .zip(range.iter())
        .map(|(source, key_group)| {
            source.ok_or(SnapshotError::Missing {
                key_group,
                range,
                files: files.len(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RestorePlan {
        range,
        max_parallelism,
        sources,
    })
}

/// Restores the key groups in `range` from `files` into a new [`KeyGroupedMap`]:
/// [`plan_restore`], then [`RestorePlan::read_into_map`].
pub fn restore_into_map<K, V>(
    files: &[SnapshotFile],
    max_parallelism: u32,
    range: KeyGroupRange,
) -> Result<KeyGroupedMap<K, V>, SnapshotError>
where
    K: SnapshotData + Hash + Eq,
    V: SnapshotData,
{
    plan_restore(files, max_parallelism, range)?.read_into_map()
}
