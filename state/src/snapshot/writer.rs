//! Writing snapshot files: [`SnapshotWriter`] streams a header, one rkyv section per key
//! group (ascending), the index and the footer to any `io::Write`; it never seeks, so it
//! can write to a socket or an object-store upload as well as a file.
//! [`write_atomically`] writes a file so that it appears complete or not at all;
//! [`stage`] and [`commit`] do the same for many files at the cost of about one.
//!
//! A section holds either the key group's entries archived by rkyv (`Vec<(K, V)>`,
//! [`SnapshotWriter::write_key_group`]), or, for types with their own byte codec, one
//! blob of codec-encoded entries archived as an rkyv `Vec<u8>`
//! ([`SnapshotWriter::write_key_group_encoded`]). The file's type tag says which: a tag
//! starting with [`ENCODED_TYPE_TAG_PREFIX`] (`codec:`) means encoded sections, and the
//! writer asserts that every section of a file follows its tag. Encoded files are written
//! through a `SnapshotWriter<W, Encoded, Encoded>` ([`EncodedSnapshotWriter`]).
//!
//! The writer runs off the processing path: a subtask forks its state
//! ([`KeyGroupedMap::fork`], copy-on-write) and hands the `Send` fork (or a
//! [`KeyGroupPartition`]) to a writer thread, which calls these functions. Memory beyond
//! the input is one reusable buffer of the largest key group's archive; an encoded blob
//! is streamed from the caller's slice to the output without a copy.

use std::borrow::Borrow;
use std::fs::{self, File};
use std::hash::Hash;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Positional, Writer};
use rkyv::util::AlignedVec;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Place, Serialize};

use super::direct::DirectFile;
use super::format::{self, KeyGroupEntry};
use super::partition::KeyGroupPartition;
use super::{ByRef, RkyvError, SnapshotData, SnapshotMeta};
use crate::error::SnapshotError;
use crate::keyed::{KeyGroupedFork, KeyGroupedMap};

/// Type tags starting with this mark files whose sections hold codec-encoded entries
/// (an rkyv `Vec<u8>` per key group) instead of rkyv-archived entries; see
/// `docs/SNAPSHOT_FORMAT.md`.
pub const ENCODED_TYPE_TAG_PREFIX: &str = "codec:";

/// Whether a file with this type tag holds encoded sections (the tag starts with
/// [`ENCODED_TYPE_TAG_PREFIX`]).
pub fn is_encoded_type_tag(type_tag: &str) -> bool {
    type_tag.starts_with(ENCODED_TYPE_TAG_PREFIX)
}

/// The key and value type parameter of a writer of encoded sections:
/// `SnapshotWriter<W, Encoded, Encoded>` ([`EncodedSnapshotWriter`]). It names no type,
/// as the entries are bytes of the caller's codec, and it is not an rkyv type, so such a
/// writer cannot write rkyv sections by mistake. Uninhabited: only ever a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoded {}

/// A writer of a file of encoded sections (type tag `codec:...`).
pub type EncodedSnapshotWriter<W> = SnapshotWriter<W, Encoded, Encoded>;

/// The longest encoded blob of one key group: its archive (the blob, up to 3 bytes of
/// padding and the 8-byte root) must stay within the reach of rkyv's 32-bit relative
/// pointers.
pub const ENCODED_SECTION_BYTES_MAX: usize = i32::MAX as usize - 8;

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
/// Call [`write_key_group`](Self::write_key_group) (or, in a file of encoded sections,
/// [`write_key_group_encoded`](Self::write_key_group_encoded)) for key groups in
/// ascending order (skipped key groups are written empty), then
/// [`finish`](Self::finish). Dropping the writer without `finish` leaves an incomplete
/// file, which a reader reports as truncated. `Send` when `W` is, whatever `K` and `V`
/// are.
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

impl<W: Write, K, V> SnapshotWriter<W, K, V> {
    /// Writes the header of a file described by `meta` to `out`; `path` names the output
    /// in errors. `K` and `V` are the entries' types for rkyv sections, or [`Encoded`]
    /// for encoded sections.
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

    /// Writes the section of `key_group` from `bytes`: `entry_count` entries encoded
    /// back to back by the caller's codec. The section is the rkyv archive of `bytes` as
    /// a `Vec<u8>` (so a reader validates it as `ArchivedVec<u8>`), with the padding,
    /// CRC-32 and index entry of any section; the index records `entry_count`. Key groups
    /// between the previous one and this one are written empty, and an empty blob with
    /// count 0 is an empty key group. The blob is streamed from `bytes` to the output
    /// without being copied, and nothing is allocated per entry (rkyv's serializer uses
    /// its thread-local arena).
    ///
    /// Fails with [`SnapshotError::Serialize`] if `bytes` is longer than
    /// [`ENCODED_SECTION_BYTES_MAX`], and with [`SnapshotError::Io`] if the output fails.
    ///
    /// Panics if `key_group` is outside the file's range or not above the previously
    /// written one, if the file's type tag does not start with `codec:`, or if
    /// `entry_count` is 0 but `bytes` is not empty: all caller bugs.
    pub fn write_key_group_encoded(
        &mut self,
        key_group: u32,
        entry_count: u64,
        bytes: &[u8],
    ) -> Result<(), SnapshotError> {
        assert!(
            entry_count > 0 || bytes.is_empty(),
            "key group {key_group}: {} encoded bytes for 0 entries",
            bytes.len()
        );
        self.start_key_group(key_group, true);
        let offset = self.position;
        if entry_count == 0 {
            self.push_empty(key_group);
            return Ok(());
        }
        if bytes.len() > ENCODED_SECTION_BYTES_MAX {
            return Err(SnapshotError::Serialize {
                path: self.path.clone(),
                key_group,
                reason: format!(
                    "{} encoded bytes exceed the {ENCODED_SECTION_BYTES_MAX} a section can hold",
                    bytes.len()
                ),
            });
        }
        let mut section = SectionWriter {
            out: &mut self.out,
            size_bytes: 0,
            crc32: crc32fast::Hasher::new(),
            error: None,
        };
        let result =
            rkyv::api::high::to_bytes_in::<_, RkyvError>(&EncodedBytes(bytes), &mut section)
                .map(|_| ());
        let SectionWriter {
            size_bytes,
            crc32,
            error,
            ..
        } = section;
        if let Some(error) = error {
            return Err(SnapshotError::Io {
                path: self.path.clone(),
                operation: "write",
                error,
            });
        }
        result.map_err(|error| SnapshotError::Serialize {
            path: self.path.clone(),
            key_group,
            reason: error.to_string(),
        })?;
        self.position += size_bytes as u64;
        self.pad()?;
        self.entry_count += entry_count;
        self.index.push(KeyGroupEntry {
            key_group,
            offset,
            size_bytes: size_bytes as u64,
            entry_count,
            crc32: crc32.finalize(),
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

    /// Checks that `key_group` may be written next in a file of this kind and writes the
    /// key groups before it empty.
    fn start_key_group(&mut self, key_group: u32, encoded: bool) {
        assert!(
            self.meta.key_groups.contains(key_group) && key_group >= self.next_key_group,
            "key group {key_group} written out of order: the file holds {} and the next key \
             group to write is {}",
            self.meta.key_groups,
            self.next_key_group
        );
        assert_eq!(
            is_encoded_type_tag(&self.meta.type_tag),
            encoded,
            "key group {key_group}: {} section in a file with type tag {:?}; tags starting \
             with {ENCODED_TYPE_TAG_PREFIX:?} mark files of encoded sections, other tags files \
             of rkyv entries",
            if encoded { "an encoded" } else { "an rkyv" },
            self.meta.type_tag
        );
        self.write_empty_until(key_group);
        self.next_key_group = key_group + 1;
    }

    fn push_empty(&mut self, key_group: u32) {
        self.index.push(KeyGroupEntry {
            key_group,
            offset: self.position,
            size_bytes: 0,
            entry_count: 0,
            crc32: 0,
        });
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
    /// Writes the entries of `key_group`. Each entry is a key and a value, owned or
    /// borrowed (`(K, V)`, `(&K, &V)`). Key groups between the previous one and this one
    /// are written empty.
    ///
    /// Panics if `key_group` is outside the file's range or not above the previously
    /// written one (the caller iterates key groups in order), or if the file's type tag
    /// marks encoded sections (starts with `codec:`).
    pub fn write_key_group<KR, VR>(
        &mut self,
        key_group: u32,
        entries: impl IntoIterator<Item = (KR, VR)>,
    ) -> Result<(), SnapshotError>
    where
        KR: Borrow<K>,
        VR: Borrow<V>,
    {
        self.start_key_group(key_group, false);
        // Borrow every entry, then archive the borrowed pairs as `Vec<(K, V)>`.
        let owned: Vec<(KR, VR)> = entries.into_iter().collect();
        let refs: Vec<(ByRef<'_, K>, ByRef<'_, V>)> = owned
            .iter()
            .map(|(key, value)| (ByRef(key.borrow()), ByRef(value.borrow())))
            .collect();
        let offset = self.position;
        if refs.is_empty() {
            self.push_empty(key_group);
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

    /// Writes every key group of a [`KeyGroupedFork`] (what a checkpoint hands to its
    /// writer thread) and finishes the file. To give each key group back to the task as
    /// soon as it is written, use [`Self::write_fork_releasing`].
    ///
    /// Panics if the fork's range or max parallelism differs from the file's, or if a key
    /// group of the fork was released.
    pub fn write_fork(
        mut self,
        fork: &KeyGroupedFork<K, V>,
    ) -> Result<(W, WriteSummary), SnapshotError> {
        self.assert_fork_fits(fork);
        for key_group in self.meta.key_groups {
            self.write_key_group(key_group, fork.key_group(key_group))?;
        }
        self.finish()
    }

    /// [`Self::write_fork`], releasing each key group of the fork right after its
    /// section is written ([`KeyGroupedFork::release`]), so the task's next write to it
    /// does not copy it. On error the key groups written so far stay released.
    pub fn write_fork_releasing(
        mut self,
        fork: &mut KeyGroupedFork<K, V>,
    ) -> Result<(W, WriteSummary), SnapshotError> {
        self.assert_fork_fits(fork);
        for key_group in self.meta.key_groups {
            self.write_key_group(key_group, fork.key_group(key_group))?;
            fork.release(key_group);
        }
        self.finish()
    }

    fn assert_fork_fits(&self, fork: &KeyGroupedFork<K, V>) {
        assert_eq!(
            (fork.key_group_range(), fork.max_parallelism()),
            (self.meta.key_groups, self.meta.max_parallelism),
            "the fork's key groups or max parallelism differ from the file's"
        );
    }
}

/// An rkyv `Vec<u8>` of borrowed bytes: archives to exactly the bytes of
/// `Vec::from(bytes)`, without the copy into a `Vec`.
struct EncodedBytes<'a>(&'a [u8]);

impl Archive for EncodedBytes<'_> {
    type Archived = ArchivedVec<u8>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<S> Serialize<S> for EncodedBytes<'_>
where
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        ArchivedVec::<u8>::serialize_from_slice(self.0, serializer)
    }
}

/// The rkyv output of one encoded section: passes the archive's bytes straight to the
/// file's output, computing the section's length and CRC-32 on the way. Positions are
/// relative to the section's start, which is 16-aligned in the file.
struct SectionWriter<'a, W> {
    out: &'a mut W,
    size_bytes: usize,
    crc32: crc32fast::Hasher,
    /// The output's error, kept to be reported as I/O rather than as rkyv's.
    error: Option<io::Error>,
}

impl<W> Positional for SectionWriter<'_, W> {
    fn pos(&self) -> usize {
        self.size_bytes
    }
}

impl<W: Write> Writer<RkyvError> for SectionWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), RkyvError> {
        if let Err(error) = self.out.write_all(bytes) {
            let reason = io::Error::new(error.kind(), error.to_string());
            self.error = Some(error);
            return Err(RkyvError::new(reason));
        }
        self.crc32.update(bytes);
        self.size_bytes += bytes.len();
        Ok(())
    }
}

/// Writes a snapshot file at `path` so that it appears complete or not at all: `write`
/// fills a [`SnapshotWriter`] on a temporary file in the same directory (`.NAME.tmp`),
/// which is then finished, fsynced and renamed to `path`, and the directory is fsynced so
/// the rename survives a crash. On error the temporary file is removed. The file is a
/// [`DirectFile`] (`O_DIRECT`), which copies each byte once into its aligned buffer,
/// where the page cache would have copied it too.
///
/// `write` returns the finished writer's result, typically with
/// [`SnapshotWriter::write_partition`], [`SnapshotWriter::write_map`],
/// [`SnapshotWriter::write_fork`] or a loop of [`SnapshotWriter::write_key_group`] (or
/// [`SnapshotWriter::write_key_group_encoded`], with `K = V = Encoded`: see
/// [`write_encoded_atomically`]) then [`SnapshotWriter::finish`].
///
/// Several files are cheaper as [`stage`] each, then one [`commit`].
pub fn write_atomically<K, V, F>(
    path: &Path,
    meta: SnapshotMeta,
    write: F,
) -> Result<WriteSummary, SnapshotError>
where
    F: FnOnce(
        SnapshotWriter<DirectFile, K, V>,
    ) -> Result<(DirectFile, WriteSummary), SnapshotError>,
{
    let (staged, summary) = stage(path, meta, write)?;
    commit(vec![staged])?;
    Ok(summary)
}

/// A snapshot file written under its temporary name and not yet durable: [`commit`]
/// makes it so and moves it to its path. Dropped uncommitted, its temporary file is
/// removed.
#[derive(Debug)]
pub struct StagedFile {
    temp: PathBuf,
    path: PathBuf,
    file: File,
    len: u64,
    /// Renamed to `path`: nothing to remove on drop.
    placed: bool,
}

impl StagedFile {
    /// Where [`commit`] puts the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.placed {
            // Best effort: whoever dropped it has an error of its own to report.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn io_error(path: &Path, operation: &'static str) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |error: io::Error| SnapshotError::Io {
        path,
        operation,
        error,
    }
}

/// The first half of [`write_atomically`]: `write` fills a [`SnapshotWriter`] on the
/// temporary file of `path`, which is finished but neither fsynced nor renamed. On error
/// the temporary file is removed.
pub fn stage<K, V, F>(
    path: &Path,
    meta: SnapshotMeta,
    write: F,
) -> Result<(StagedFile, WriteSummary), SnapshotError>
where
    F: FnOnce(
        SnapshotWriter<DirectFile, K, V>,
    ) -> Result<(DirectFile, WriteSummary), SnapshotError>,
{
    let file_name = path.file_name().ok_or_else(|| SnapshotError::Io {
        path: path.to_path_buf(),
        operation: "name",
        error: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    // O_DIRECT: the disk reads the writer's buffer, the kernel copies nothing.
    let file = DirectFile::create(&temp).map_err(io_error(&temp, "create"))?;
    let written = SnapshotWriter::new(file, meta, path).and_then(|writer| {
        let (out, summary) = write(writer)?;
        Ok((out.finish().map_err(io_error(&temp, "write"))?, summary))
    });
    match written {
        Ok((file, summary)) => {
            let staged = StagedFile {
                temp,
                path: path.to_path_buf(),
                file,
                len: summary.size_bytes,
                placed: false,
            };
            Ok((staged, summary))
        }
        Err(e) => {
            // Best effort: the error being returned matters more than a leftover.
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// [`stage`] for a file of encoded sections, as [`write_encoded_atomically`] writes.
pub fn stage_encoded<F>(
    path: &Path,
    meta: SnapshotMeta,
    write: F,
) -> Result<(StagedFile, WriteSummary), SnapshotError>
where
    F: FnOnce(
        EncodedSnapshotWriter<DirectFile>,
    ) -> Result<(DirectFile, WriteSummary), SnapshotError>,
{
    stage(path, meta, write)
}

/// The second half of [`write_atomically`] for any number of [`stage`]d files: fsyncs
/// them all at once (in parallel, through an io_uring), renames each into place, then
/// fsyncs each directory once, not once per file (`bench/src/bin/state_files.rs`: 64
/// small files committed together took 0.4 times as long as one at a time).
///
/// On error, the files not yet renamed are removed; those renamed stay, complete but
/// maybe not durable, as after a crash before the directory's fsync.
pub fn commit(files: Vec<StagedFile>) -> Result<(), SnapshotError> {
    fsync_all(&files)?;
    let mut directories: Vec<PathBuf> = Vec::new();
    for mut staged in files {
        fs::rename(&staged.temp, &staged.path)
            .map_err(io_error(&staged.path, "rename into place"))?;
        staged.placed = true;
        let directory = match staged.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !directories.contains(&directory) {
            directories.push(directory);
        }
    }
    for directory in directories {
        File::open(&directory)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&directory, "fsync the directory of"))?;
    }
    Ok(())
}

/// Fsyncs every staged file, all at once through an io_uring where the kernel gives
/// one (its workers run the fsyncs in parallel), else one after another.
fn fsync_all(files: &[StagedFile]) -> Result<(), SnapshotError> {
    use std::os::fd::AsRawFd;
    /// Entries of the ring, so fsyncs in flight at once.
    const RING: usize = 128;
    let sequential = |files: &[StagedFile]| {
        files.iter().try_for_each(|staged| {
            (staged.file.sync_all()).map_err(io_error(&staged.temp, "fsync"))
        })
    };
    if files.len() < 2 {
        return sequential(files);
    }
    let Ok(mut ring) = io_uring::IoUring::new(files.len().min(RING).next_power_of_two() as u32)
    else {
        return sequential(files);
    };
    for (chunk_at, chunk) in files.chunks(RING).enumerate() {
        for (i, staged) in chunk.iter().enumerate() {
            let fsync = io_uring::opcode::Fsync::new(io_uring::types::Fd(staged.file.as_raw_fd()))
                .build()
                .user_data((chunk_at * RING + i) as u64);
            // SAFETY: the entry names an open descriptor (borrowed from `files`
            // for this whole call), and the kernel takes its own reference to
            // the file when it submits the entry.
            unsafe { ring.submission().push(&fsync) }
                .expect("the ring has an entry per file of the chunk");
        }
        let mut done = 0;
        while done < chunk.len() {
            match ring.submit_and_wait(chunk.len() - done) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(&chunk[0].temp, "fsync (io_uring)")(e)),
            }
            for completion in ring.completion() {
                done += 1;
                if completion.result() < 0 {
                    let staged = &files[completion.user_data() as usize];
                    let error = io::Error::from_raw_os_error(-completion.result());
                    return Err(io_error(&staged.temp, "fsync")(error));
                }
            }
        }
    }
    Ok(())
}

/// [`write_atomically`] for a file of encoded sections (type tag `codec:...`): `write`
/// fills an [`EncodedSnapshotWriter`] with
/// [`SnapshotWriter::write_key_group_encoded`] and returns
/// [`SnapshotWriter::finish`]'s result.
pub fn write_encoded_atomically<F>(
    path: &Path,
    meta: SnapshotMeta,
    write: F,
) -> Result<WriteSummary, SnapshotError>
where
    F: FnOnce(
        EncodedSnapshotWriter<DirectFile>,
    ) -> Result<(DirectFile, WriteSummary), SnapshotError>,
{
    write_atomically(path, meta, write)
}
