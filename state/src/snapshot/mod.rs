//! Keyed-state snapshot files: one file per (state, subtask, checkpoint), laid out per
//! key group so that a restore reads only the key groups it owns. The byte layout is
//! specified in `docs/SNAPSHOT_FORMAT.md`; in short: a header (magic, version, max
//! parallelism, key-group range, state name, type tag, checksum), then per key group an
//! rkyv archive of its entries (`Vec<(K, V)>`) at a 16-byte aligned offset, then an index
//! (offset, length, entry count, CRC-32 per key group) and a footer (index checksum, end
//! magic).
//!
//! - [`partition`]: the counting sort that groups a flat `(key_group, entry)` sequence.
//! - [`writer`]: [`SnapshotWriter`] streams key groups to any `io::Write`;
//!   [`write_atomically`] writes a file with temp file, fsync, rename, directory fsync,
//!   through [`direct::DirectFile`] (`O_DIRECT`: no copy into the page cache).
//! - [`reader`]: [`SnapshotFile`] memory-maps a file and validates its layout on open,
//!   and each section (checksum, then rkyv's `bytecheck` validation) when it is read;
//!   [`plan_restore`] picks, from the files of an old parallelism, the one holding each
//!   key group of the new range, which is all that rescaling needs; [`inspect`] reports
//!   a file's histogram and checksums.
//!
//! Architecture Invariant: bad bytes in a file are an error naming the file (and the key
//! group), never a panic and never undefined behaviour: the only `unsafe` is the memory
//! map, and archived data is accessed only through rkyv's checked API.
//!
//! Architecture Invariant: the format depends on rkyv's format features (little endian,
//! aligned, 32-bit relative pointers), pinned in the workspace `Cargo.toml`, and on the
//! archived layout of the key and value types; the golden files in
//! `tests/golden/snapshot/` fail the tests when either changes.

pub mod direct;
pub mod format;
pub mod partition;
pub mod reader;
pub mod writer;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Fallible;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::tuple::ArchivedTuple2;
use rkyv::util::AlignedVec;
use rkyv::vec::ArchivedVec;
use rkyv::{Archive, Archived, Deserialize, Place, Serialize};

use crate::key_group::{KeyGroupRange, MAX_PARALLELISM_BOUND};

pub use format::{KeyGroupEntry, FORMAT_VERSION};
pub use partition::{partition_by_key_group, KeyGroupPartition};
pub use reader::{
    inspect, plan_restore, restore_into_map, KeyGroupReport, RestorePlan, SnapshotFile,
    SnapshotReport,
};
pub use writer::{
    commit, stage, stage_encoded, write_atomically, SnapshotWriter, StagedFile, WriteSummary,
};

/// The rkyv this crate archives with, so callers name the same version's types.
pub use rkyv;

/// The error type of rkyv operations inside snapshots.
pub type RkyvError = rkyv::rancor::Error;

/// A key or value type that can be stored in a snapshot: rkyv can serialize it, validate
/// its archived form and deserialize that. Implemented for every such type (primitives,
/// arrays, `String`, `Vec`, `Option`, tuples, and types with
/// `#[derive(Archive, Serialize, Deserialize)]`).
pub trait SnapshotData:
    Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, RkyvError>>
                      + Deserialize<Self, HighDeserializer<RkyvError>>,
    > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>
    + Sized
{
}

impl<T> SnapshotData for T where
    T: Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, RkyvError>>
                          + Deserialize<T, HighDeserializer<RkyvError>>,
        > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>
{
}

/// One archived entry: the archived key is `.0`, the archived value `.1`.
pub type ArchivedEntry<K, V> = ArchivedTuple2<Archived<K>, Archived<V>>;

/// The archived payload of one key group: what `Vec<(K, V)>` archives to.
pub type ArchivedEntries<K, V> = ArchivedVec<ArchivedEntry<K, V>>;

/// What a snapshot file says about itself besides its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The state's name (the keyed state's name in its operator).
    pub state_name: String,
    /// A caller-chosen name of the key and value types and their layout version, such as
    /// `"u64:Account/v2"`; a restore refuses to mix files with different tags. rkyv
    /// archives carry no type information, so this is what catches reading a state with
    /// the wrong types.
    pub type_tag: String,
    /// The job's max parallelism: the number of key groups.
    pub max_parallelism: u32,
    /// The key groups the file covers (the writing subtask's range).
    pub key_groups: KeyGroupRange,
}

impl SnapshotMeta {
    /// Metadata for a file of `key_groups` out of `max_parallelism`.
    ///
    /// Panics if the range is empty or reaches past `max_parallelism`, if
    /// `max_parallelism` is outside `1..=MAX_PARALLELISM_BOUND`, or if a name is longer
    /// than 65535 bytes: all programmer errors.
    pub fn new(
        state_name: impl Into<String>,
        type_tag: impl Into<String>,
        max_parallelism: u32,
        key_groups: KeyGroupRange,
    ) -> Self {
        let meta = Self {
            state_name: state_name.into(),
            type_tag: type_tag.into(),
            max_parallelism,
            key_groups,
        };
        meta.assert_valid();
        meta
    }

    fn assert_valid(&self) {
        assert!(
            (1..=MAX_PARALLELISM_BOUND).contains(&self.max_parallelism),
            "max parallelism {} is outside 1..={MAX_PARALLELISM_BOUND}",
            self.max_parallelism
        );
        assert!(
            !self.key_groups.is_empty() && self.key_groups.end < self.max_parallelism,
            "key group range {} of a snapshot is empty or reaches past max parallelism {}",
            self.key_groups,
            self.max_parallelism
        );
        for (what, name) in [
            ("state name", &self.state_name),
            ("type tag", &self.type_tag),
        ] {
            assert!(
                name.len() <= format::NAME_BYTES_MAX,
                "{what} of {} bytes is longer than {}",
                name.len(),
                format::NAME_BYTES_MAX
            );
        }
    }
}

/// Serializes through a reference as the referenced value would: `(ByRef(&k), ByRef(&v))`
/// archives to exactly the bytes of `(k, v)`, so the writer can archive entries it
/// borrows (from a hash map, say) without cloning them.
struct ByRef<'a, T>(&'a T);

impl<T: Archive> Archive for ByRef<'_, T> {
    type Archived = T::Archived;
    type Resolver = T::Resolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        self.0.resolve(resolver, out);
    }
}

impl<T, S> Serialize<S> for ByRef<'_, T>
where
    T: Serialize<S>,
    S: Fallible + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        self.0.serialize(serializer)
    }
}

#[cfg(test)]
mod tests;
