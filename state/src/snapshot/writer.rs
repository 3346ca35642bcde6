//! Writing snapshot files: [`SnapshotWriter`] streams a header, one rkyv section per key
//! group (ascending), the index and the footer to any `io::Write`; it never seeks, so it
//! can write to a socket or an object-store upload as well as a file.
//! [`write_atomically`] writes a file so that it appears complete or not at all.
//!
//! The writer runs off the processing path: a subtask takes a copy-on-write snapshot of
//! its state and hands it (a `Send` value such as a [`KeyGroupPartition`] or owned maps)
//! to a writer thread, which calls these functions. Memory beyond the input is one
//! reusable buffer of the largest key group's archive.

use std::borrow::Borrow;
use std::fs::{self, File};
use std::hash::Hash;
use std::io::{self, BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use rkyv::util::AlignedVec;

use super::format::{self, KeyGroupEntry};
use super::partition::KeyGroupPartition;
use super::{ByRef, RkyvError, SnapshotData, SnapshotMeta};
use crate::error::SnapshotError;
use crate::keyed::KeyGroupedMap;

/// What a finished snapshot file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    /// The file's length.
    pub size_bytes: u64,
    /// Entries over all key groups.
    pub entry_count: u64,
    /// One entry per key group of the file's range.
    pub index: Vec<KeyGroupEntry>,
}

/// Streams one snapshot file of `(K, V)` entries to `out`.
///
/// Call [`write_key_group`](Self::write_key_group) for key groups in ascending order
/// (skipped key groups are written empty), then [`finish`](Self::finish). Dropping the
/// writer without `finish` leaves an incomplete file, which a reader reports as
/// truncated. `Send` when `W` is, whatever `K` and `V` are.
pub struct SnapshotWriter<W: Write, K, V> {
    out: W,
    /// Names the output in errors.
    path: PathBuf,
    meta: SnapshotMeta,
    /// Bytes written so far.
    position: u64,
    /// The next key group that may be written.
    next_key_group: u32,
    index: Vec<KeyGroupEntry>,
    entry_count: u64,
    /// Reused for every section's archive; aligned to 16 as the file's sections are.
    buffer: AlignedVec,
    _types: PhantomData<fn(&K, &V)>,
}

impl<W: Write, K: SnapshotData, V: SnapshotData> SnapshotWriter<W, K, V> {
    /// Writes the header of a file described by `meta` to `out`; `path` names the output
    /// in errors.
    pub fn new(
        out: W,
        meta: SnapshotMeta,
        path: impl Into<PathBuf>,
    ) -> Result<Self, SnapshotError> {
        let mut writer = Self {
            out,
            path: path.into(),
            next_key_group: meta.key_groups.start,
            index: Vec::with_capacity(meta.key_groups.len() as usize),
            meta,
            position: 0,
            entry_count: 0,
            buffer: AlignedVec::new(),
            _types: PhantomData,
        };
        let header = format::encode_header(&writer.meta);
        writer.write(&header)?;
        Ok(writer)
    }

    /// The file's metadata.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Writes the entries of `key_group`. Each entry is a key and a value, owned or
    /// borrowed (`(K, V)`, `(&K, &V)`). Key groups between the previous one and this one
    /// are written empty.
    ///
    /// Panics if `key_group` is outside the file's range or not above the previously
    /// written one: the caller iterates key groups in order.
    pub fn write_key_group<KR, VR>(
        &mut self,
        key_group: u32,
        entries: impl IntoIterator<Item = (KR, VR)>,
    ) -> Result<(), SnapshotError>
    where
        KR: Borrow<K>,
        VR: Borrow<V>,
    {
        assert!(
            self.meta.key_groups.contains(key_group) && key_group >= self.next_key_group,
            "key group {key_group} written out of order: the file holds {} and the next key \
             group to write is {}",
            self.meta.key_groups,
            self.next_key_group
        );
        self.write_empty_until(key_group);
        // Borrow every entry, then archive the borrowed pairs as `Vec<(K, V)>`.
        let owned: Vec<(KR, VR)> = entries.into_iter().collect();
        let refs: Vec<(ByRef<'_, K>, ByRef<'_, V>)> = owned
            .iter()
            .map(|(key, value)| (ByRef(key.borrow()), ByRef(value.borrow())))
            .collect();
        self.next_key_group = key_group + 1;
        let offset = self.position;
        if refs.is_empty() {
            self.index.push(KeyGroupEntry {
                key_group,
                offset,
                size_bytes: 0,
                entry_count: 0,
                crc32: 0,
            });
            return Ok(());
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        let buffer =
            rkyv::api::high::to_bytes_in::<_, RkyvError>(&refs, buffer).map_err(|error| {
                SnapshotError::Serialize {
                    path: self.path.clone(),
                    key_group,
                    reason: error.to_string(),
                }
            })?;
        let crc32 = crc32fast::hash(&buffer);
        let size_bytes = buffer.len() as u64;
        self.write(&buffer)?;
        self.buffer = buffer;
        self.pad()?;
        self.entry_count += refs.len() as u64;
        self.index.push(KeyGroupEntry {
            key_group,
            offset,
            size_bytes,
            entry_count: refs.len() as u64,
            crc32,
        });
        Ok(())
    }

    /// Writes the remaining key groups empty, the index and the footer, and flushes.
    /// Returns the output (to fsync it, say) and what the file holds.
    pub fn finish(mut self) -> Result<(W, WriteSummary), SnapshotError> {
        self.write_empty_until(self.meta.key_groups.end + 1);
        debug_assert_eq!(self.index.len(), self.meta.key_groups.len() as usize);
        let index_offset = self.position;
        let tail = format::encode_index_and_footer(&self.index, index_offset, self.entry_count);
        self.write(&tail)?;
        self.out.flush().map_err(|error| SnapshotError::Io {
            path: self.path.clone(),
            operation: "flush",
            error,
        })?;
        let summary = WriteSummary {
            size_bytes: self.position,
            entry_count: self.entry_count,
            index: self.index,
        };
        Ok((self.out, summary))
    }

    fn write_empty_until(&mut self, key_group: u32) {
        while self.next_key_group < key_group {
            self.index.push(KeyGroupEntry {
                key_group: self.next_key_group,
                offset: self.position,
                size_bytes: 0,
                entry_count: 0,
                crc32: 0,
            });
            self.next_key_group += 1;
        }
    }

    fn pad(&mut self) -> Result<(), SnapshotError> {
        const ZEROS: [u8; format::SECTION_ALIGNMENT_BYTES] = [0; format::SECTION_ALIGNMENT_BYTES];
        let padding = format::padding_after(self.position);
        self.write(&ZEROS[..padding])
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.out
            .write_all(bytes)
            .map_err(|error| SnapshotError::Io {
                path: self.path.clone(),
                operation: "write",
                error,
            })?;
        self.position += bytes.len() as u64;
        Ok(())
    }
}

impl<W: Write, K: SnapshotData, V: SnapshotData> SnapshotWriter<W, K, V> {
    /// Writes every key group of a [`KeyGroupPartition`] (the counting-sorted flat form)
    /// and finishes the file.
    ///
    /// Panics if the partition's range differs from the file's.
    pub fn write_partition(
        mut self,
        partition: &KeyGroupPartition<(K, V)>,
    ) -> Result<(W, WriteSummary), SnapshotError> {
        assert_eq!(
            partition.key_group_range(),
            self.meta.key_groups,
            "the partition's key groups differ from the file's"
        );
        for (key_group, entries) in partition.iter() {
            self.write_key_group(key_group, entries.iter().map(|(k, v)| (k, v)))?;
        }
        self.finish()
    }

    /// Writes every key group of a [`KeyGroupedMap`] (the grouped form, entries of a key
    /// group in the map's order) and finishes the file.
    ///
    /// Panics if the map's range or max parallelism differs from the file's.
    pub fn write_map(
        mut self,
        map: &KeyGroupedMap<K, V>,
    ) -> Result<(W, WriteSummary), SnapshotError>
    where
        K: Hash + Eq,
    {
        assert_eq!(
            (map.key_group_range(), map.max_parallelism()),
            (self.meta.key_groups, self.meta.max_parallelism),
            "the map's key groups or max parallelism differ from the file's"
        );
        for key_group in self.meta.key_groups {
            self.write_key_group(key_group, map.key_group(key_group))?;
        }
        self.finish()
    }
}

/// Writes a snapshot file at `path` so that it appears complete or not at all: `write`
/// fills a [`SnapshotWriter`] on a temporary file in the same directory (`.NAME.tmp`),
/// which is then finished, fsynced and renamed to `path`, and the directory is fsynced so
/// the rename survives a crash. On error the temporary file is removed.
///
/// `write` returns the finished writer's result, typically with
/// [`SnapshotWriter::write_partition`], [`SnapshotWriter::write_map`] or a loop of
/// [`SnapshotWriter::write_key_group`] then [`SnapshotWriter::finish`].
pub fn write_atomically<K, V, F>(
    path: &Path,
    meta: SnapshotMeta,
    write: F,
) -> Result<WriteSummary, SnapshotError>
where
    K: SnapshotData,
    V: SnapshotData,
    F: FnOnce(
        SnapshotWriter<BufWriter<File>, K, V>,
    ) -> Result<(BufWriter<File>, WriteSummary), SnapshotError>,
{
    let io_error = |path: &Path, operation: &'static str| {
        let path = path.to_path_buf();
        move |error: io::Error| SnapshotError::Io {
            path,
            operation,
            error,
        }
    };
    let file_name = path.file_name().ok_or_else(|| SnapshotError::Io {
        path: path.to_path_buf(),
        operation: "name",
        error: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };

    let result = (|| {
        let file = File::create(&temp).map_err(io_error(&temp, "create"))?;
        // Sections are written with one `write_all` each, which bypasses the buffer when
        // larger than it; the buffer gathers the header, padding and small sections.
        let writer = SnapshotWriter::new(BufWriter::with_capacity(1 << 16, file), meta, path)?;
        let (out, summary) = write(writer)?;
        let file = out
            .into_inner()
            .map_err(|error| io_error(&temp, "flush")(error.into_error()))?;
        file.sync_all().map_err(io_error(&temp, "fsync"))?;
        drop(file);
        fs::rename(&temp, path).map_err(io_error(path, "rename into place"))?;
        File::open(&directory)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&directory, "fsync the directory of"))?;
        Ok(summary)
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than a leftover temp file.
        let _ = fs::remove_file(&temp);
    }
    result
}
