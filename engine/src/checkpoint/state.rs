//! The task side of checkpoints: a subtask's registry of checkpointed
//! operators, the synchronous part of their snapshots, and their restore.
//!
//! The synchronous part runs on the task between two records: each operator
//! forks its keyed state (copy-on-write, O(key groups)) and encodes its small
//! operator state. The forks travel to the snapshot writer thread, which
//! writes them while the task goes on.
//!
//! Architecture Invariant: a snapshot is taken only between records (never
//! while the chain runs), so every operator of the task snapshots the same
//! point of the input; the barrier leaves the task's writers after that.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hash};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use rheon_net::codec::Codec;
use rheon_state::checkpoint::{replayed_over, written_by, CheckpointMetadata, OperatorSnapshot};
use rheon_state::key_group::KeyGroupRange;
use rheon_state::keyed::{KeyGroupedFork, KeyGroupedMap};
use rheon_state::snapshot::{plan_restore, SnapshotFile, SnapshotMeta, StagedFile};
use rustc_hash::FxHashMap;

use crate::error::TaskResult;

/// Writes one state file for the given path, off the task: staged, to be
/// committed with the subtask's other files (see [`rheon_state::snapshot::commit`]).
pub(crate) type WriteStateFile = Box<dyn FnOnce(&Path) -> Result<StagedFile, String> + Send>;

/// The keyed state of one operator, forked, and how to write it.
pub(crate) struct KeyedWrite {
    pub(crate) state_name: String,
    /// The files to write (each atomically, at the path its kind names);
    /// empty when the `chain`'s files are all written already (an
    /// incremental checkpoint of a state that did not change).
    pub(crate) writes: Vec<(StateFile, WriteStateFile)>,
    /// For an incremental checkpoint, the chain this checkpoint's state is
    /// (bases and deltas, the new ones among them), whose files sit in the
    /// root's shared directory; `None`: one full file in the checkpoint
    /// directory.
    pub(crate) chain: Option<super::changelog::Chain>,
}

/// Which file of a [`KeyedWrite`] a write makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StateFile {
    /// The one full snapshot of a checkpoint that is not incremental.
    Full,
    /// The base of one slice of the chain's key groups.
    Base { slice: usize },
    /// The chain's delta written at this checkpoint.
    Delta,
}

/// What one operator hands over at a barrier.
#[derive(Default)]
pub(crate) struct OperatorParts {
    pub(crate) keyed: Vec<KeyedWrite>,
    /// Opaque elements, redistributed round-robin on restore.
    pub(crate) operator_state: Vec<Vec<u8>>,
    /// Set by the task for the operator: with incremental checkpoints, the
    /// ratio of delta to base entries past which a state writes a new base.
    pub(crate) incremental: Option<f64>,
}

/// An operator whose state is part of checkpoints.
pub(crate) trait CheckpointedOperator {
    /// The synchronous part of a snapshot: fork keyed state, encode
    /// operator state. Must be cheap: the task is paused meanwhile.
    fn snapshot_state(&mut self, checkpoint_id: u64, parts: &mut OperatorParts) -> TaskResult;
    /// Takes over the state restored for this subtask, before any record.
    fn restore_state(&mut self, restored: &RestoredOperator<'_>) -> TaskResult;
    /// Every operator of the job has the checkpoint: make its effects
    /// visible (sinks commit).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> TaskResult {
        Ok(())
    }
    /// What to commit when the whole job ended well (sinks' last files).
    fn final_commits(&mut self) -> Vec<crate::runtime::file_sink::PendingFile> {
        Vec::new()
    }
}

struct Registered {
    node: usize,
    name: String,
    operator: Rc<RefCell<dyn CheckpointedOperator>>,
}

/// The checkpointed operators of one subtask's chain.
#[derive(Clone, Default)]
pub(crate) struct StateRegistry(Rc<RefCell<Vec<Registered>>>);

impl std::fmt::Debug for StateRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateRegistry({} operators)", self.0.borrow().len())
    }
}

/// One operator's snapshot of one subtask, before writing.
pub(crate) struct TakenOperator {
    pub(crate) node: usize,
    pub(crate) name: String,
    pub(crate) parts: OperatorParts,
}

impl StateRegistry {
    pub(crate) fn register(
        &self,
        node: usize,
        name: &str,
        operator: Rc<RefCell<dyn CheckpointedOperator>>,
    ) {
        self.0.borrow_mut().push(Registered {
            node,
            name: name.to_owned(),
            operator,
        });
    }

    /// The synchronous part of the subtask's snapshot; `incremental` is the
    /// materialization ratio of incremental checkpoints.
    pub(crate) fn snapshot(
        &self,
        checkpoint_id: u64,
        incremental: Option<f64>,
    ) -> TaskResult<Vec<TakenOperator>> {
        let registered = self.0.borrow();
        let mut taken = Vec::with_capacity(registered.len());
        for r in registered.iter() {
            let mut parts = OperatorParts {
                incremental,
                ..OperatorParts::default()
            };
            r.operator
                .borrow_mut()
                .snapshot_state(checkpoint_id, &mut parts)?;
            taken.push(TakenOperator {
                node: r.node,
                name: r.name.clone(),
                parts,
            });
        }
        Ok(taken)
    }

    pub(crate) fn notify_checkpoint_complete(&self, checkpoint_id: u64) -> TaskResult {
        for r in self.0.borrow().iter() {
            r.operator
                .borrow_mut()
                .notify_checkpoint_complete(checkpoint_id)?;
        }
        Ok(())
    }

    /// What the operators staged to commit at the job's end.
    pub(crate) fn final_commits(&self) -> Vec<crate::runtime::file_sink::PendingFile> {
        self.0
            .borrow()
            .iter()
            .flat_map(|r| r.operator.borrow_mut().final_commits())
            .collect()
    }

    /// Restores every registered operator from `restore`.
    pub(crate) fn restore(
        &self,
        restore: &RestoreSnapshot,
        subtask: u32,
        parallelism: u32,
        key_group_range: KeyGroupRange,
    ) -> TaskResult {
        for r in self.0.borrow().iter() {
            let snapshot = restore
                .metadata
                .operators
                .iter()
                .find(|o| o.node as usize == r.node);
            let restored = RestoredOperator {
                checkpoint_dir: &restore.directory,
                snapshot,
                max_parallelism: restore.metadata.max_parallelism,
                subtask,
                parallelism,
                key_group_range,
                checksums_verified: restore.checksums_verified,
            };
            r.operator.borrow_mut().restore_state(&restored)?;
        }
        Ok(())
    }
}

/// A completed checkpoint a job restores from.
#[derive(Debug)]
pub struct RestoreSnapshot {
    pub(crate) directory: PathBuf,
    pub(crate) metadata: CheckpointMetadata,
    /// `checkpoint::verify` checked every file's checksums when this was
    /// chosen (`latest_valid`): the restore does not check them again.
    pub(crate) checksums_verified: bool,
}

/// What one operator of one subtask restores from.
pub(crate) struct RestoredOperator<'a> {
    checkpoint_dir: &'a Path,
    snapshot: Option<&'a OperatorSnapshot>,
    max_parallelism: u32,
    subtask: u32,
    parallelism: u32,
    key_group_range: KeyGroupRange,
    checksums_verified: bool,
}

impl RestoredOperator<'_> {
    /// This subtask's share of the operator state: element j of the
    /// checkpoint's elements (all old subtasks, in order) goes to subtask
    /// `j % parallelism`.
    pub(crate) fn operator_state(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let elements = self
            .snapshot
            .into_iter()
            .flat_map(|s| s.operator_state.iter());
        share_of(elements, self.subtask, self.parallelism)
    }

    /// Every operator-state element of every old subtask, in order.
    pub(crate) fn operator_state_union(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.snapshot
            .into_iter()
            .flat_map(|s| s.operator_state.iter().map(Vec::as_slice))
    }

    /// The key groups this subtask owns in the restored job.
    pub(crate) fn key_group_range(&self) -> KeyGroupRange {
        self.key_group_range
    }

    /// The names of the operator's keyed states in the checkpoint.
    pub(crate) fn keyed_state_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.snapshot
            .into_iter()
            .flat_map(|s| s.keyed_states.iter().map(|k| k.name.as_str()))
    }

    /// The number of key groups of the checkpoint (and the restored job).
    pub(crate) fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The keyed state `name` for this subtask's key groups, read from the
    /// files of every old subtask (rescaling takes whole key groups). An
    /// operator the checkpoint does not know, or a state it did not have,
    /// restores empty.
    pub(crate) fn keyed_state<K, V>(&self, name: &str) -> Result<KeyGroupedMap<K, V>, String>
    where
        K: Codec + Hash + Eq + Clone + Send,
        V: Codec + Clone + Send,
    {
        let empty = || KeyGroupedMap::new(self.key_group_range, self.max_parallelism);
        let Some(files) = self
            .snapshot
            .and_then(|s| s.keyed_states.iter().find(|k| k.name == name))
        else {
            return Ok(empty());
        };
        if self.key_group_range.is_empty() {
            return Ok(empty());
        }
        let opened = files
            .files
            .iter()
            .map(|f| SnapshotFile::open(self.checkpoint_dir.join(f)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let plan = plan_restore(&opened, self.max_parallelism, self.key_group_range)
            .map_err(|e| e.to_string())?;
        plan.will_need();
        // An incremental checkpoint's changes, replayed in order over the
        // bases, key group by key group while its new map is in cache.
        let deltas = files
            .deltas
            .iter()
            .map(|f| SnapshotFile::open(self.checkpoint_dir.join(f)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        // Each key group with its base, and the checkpoint that wrote the base:
        // a key group replays the deltas written after it (a slice's newer
        // base holds what the deltas before it changed).
        let key_groups: Vec<KeyGroupBase<'_>> = plan
            .iter()
            .map(|(key_group, base)| (key_group, base, written_by(base)))
            .collect();
        let delta_ids: Vec<Option<u64>> = deltas.iter().map(written_by).collect();
        // Read ahead only the sections the replay reads.
        for (delta, &id) in deltas.iter().zip(&delta_ids) {
            let reads = |&(_, _, base): &KeyGroupBase<'_>| replayed_over(id, base);
            for run in key_groups.chunk_by(|a, b| reads(a) == reads(b)) {
                if reads(&run[0]) {
                    let (first, last) = (run[0].0, run[run.len() - 1].0);
                    delta.will_need(KeyGroupRange::new(first, last));
                }
            }
        }
        // One map per key group, presized from the snapshot's index and
        // filled directly (no rehash, no copy-on-write check per entry).
        let restore_group = |&(key_group, file, base): &KeyGroupBase<'_>,
                             scratch: &mut ReplayScratch<K, V>| {
            let changes: Vec<&SnapshotFile> = (deltas.iter().zip(&delta_ids))
                .filter(|(delta, &id)| {
                    delta.meta().key_groups.contains(key_group) && replayed_over(id, base)
                })
                .map(|(delta, _)| delta)
                .collect();
            let verified = self.checksums_verified;
            restore_key_group(key_group, file, &changes, verified, scratch)
        };
        let threads = restore_threads(self.parallelism, key_groups.len());
        // Fewer subtasks than cores: the rest of the cores help, each on a
        // share of the key groups. Helpers drop the executor's pinning, which
        // they inherit, or they would all share this subtask's core.
        let mut shares = key_groups.chunks(key_groups.len().div_ceil(threads).max(1));
        let own = shares.next().unwrap_or_default();
        let restore_share = |share: &[KeyGroupBase<'_>]| {
            let mut scratch = ReplayScratch::new();
            share
                .iter()
                .map(|group| restore_group(group, &mut scratch))
                .collect::<Result<Vec<_>, String>>()
        };
        let groups = std::thread::scope(|scope| {
            let helpers: Vec<_> = shares
                .map(|share| {
                    scope.spawn(|| {
                        unpin_current_thread();
                        restore_share(share)
                    })
                })
                .collect();
            let mut groups = restore_share(own)?;
            for helper in helpers {
                let share = helper
                    .join()
                    .map_err(|_| "a restore thread panicked".to_owned())??;
                groups.extend(share);
            }
            Ok::<_, String>(groups)
        })?;
        Ok(KeyGroupedMap::from_key_groups(
            self.key_group_range,
            self.max_parallelism,
            groups,
        ))
    }
}

/// A key group to restore, its base file, and the checkpoint that wrote the
/// base (`None` outside the shared directory).
type KeyGroupBase<'a> = (u32, &'a SnapshotFile, Option<u64>);

/// How many threads restore the keyed state of one subtask of an operator at
/// `parallelism`: the cores its subtasks leave over (all subtasks restore at
/// once), at most one per key group.
fn restore_threads(parallelism: u32, key_groups: usize) -> usize {
    (crate::config::available_cores() / parallelism.max(1) as usize).clamp(1, key_groups.max(1))
}

/// Lets the calling thread run on any core of the process's CPU set: a
/// thread spawned from a pinned executor inherits its single core. Best
/// effort: where it fails, the thread keeps sharing that core.
fn unpin_current_thread() {
    // SAFETY: `cpu_set_t` is plain data, zeroed is a valid empty set, and
    // `CPU_SET` stays within it; the kernel narrows the mask to the CPUs
    // the process may use.
    unsafe {
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut all);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &all);
    }
}

/// Bytes of a key group's hash table that one region of a restore covers
/// (see [`restore_key_group`]): an eighth of a core's L2 cache here, so the
/// writes of one region hit it. On `checkpoint --restore-only` (1.97 GiB
/// chain), 64 to 256 KiB restored alike (1.05-1.17 s), 128 KiB the best of
/// them; 16 KiB (too many regions to gather into) and 4 MiB (regions
/// beyond L2) took 1.3-1.6 s.
const REPLAY_REGION_BYTES: usize = 128 << 10;

/// Per restore thread, reused from key group to key group: the entries of
/// one key group, by region of its hash table.
type ReplayScratch<K, V> = Vec<Vec<(K, Option<V>)>>;

/// Restores `key_group`: its section of the full snapshot `base`, then its
/// sections of the changelog files `deltas` (oldest first, each holding the
/// key group and newer than `base`) replayed over it:
/// `(key, Some(value))` sets the key, `(key, None)` removes it.
///
/// A key group's table is larger than the caches, and entries in file order
/// hit it at random: inserted one by one they cost a miss to memory each, and
/// a chain's deltas can hold as many entries as its base. So when there are
/// deltas, the entries, the base's and the deltas', are first gathered by
/// region of the table (the high bits of the bucket a key hashes to, as
/// hashbrown places it) and then inserted region by region, each region small
/// enough to stay in cache. The entries of one key land in one region in
/// their file order, so the newest still wins.
///
/// The table is presized once, for the keys the gathering counted (a sketch
/// of their hashes): a growing state's chain holds a small base and deltas
/// of mostly new keys, and a table sized for the base would grow again and
/// again while replaying, each time rehashing everything at random. Regions
/// are planned for the largest table the entries could need; a smaller one
/// maps each region to one contiguous range of its buckets still. A wrong
/// estimate costs memory or a growth, never an entry. Memory: the key
/// group's entries, decoded, which the materialization policy bounds by a
/// multiple of the state.
fn restore_key_group<K, V>(
    key_group: u32,
    base: &SnapshotFile,
    deltas: &[&SnapshotFile],
    checksummed: bool,
    scratch: &mut ReplayScratch<K, V>,
) -> Result<FxHashMap<K, V>, String>
where
    K: Codec + Hash + Eq,
    V: Codec,
{
    let section = Section::read(key_group, base, checksummed)?;
    let mut changes = Vec::new();
    for delta in deltas {
        changes.push(Section::read(key_group, delta, checksummed)?);
    }
    let apply = |group: &mut FxHashMap<K, V>, key: K, value: Option<V>| {
        match value {
            Some(value) => group.insert(key, value),
            None => group.remove(&key),
        };
    };
    // Exact for a base alone, whose keys are distinct.
    let most_keys =
        section.trusted_count() + changes.iter().map(Section::trusted_count).sum::<usize>();
    // hashbrown keeps 7/8 of a power-of-two bucket count usable.
    let buckets = (most_keys.max(8) * 8 / 7).next_power_of_two();
    let table_bytes = buckets * (std::mem::size_of::<(K, V)>() + 1);
    let regions = (table_bytes / REPLAY_REGION_BYTES)
        .next_power_of_two()
        .min(buckets);
    // A table small enough to fit a cache whatever the order, or a base
    // alone, goes straight in: measured on the checkpoint bench, the
    // gathering pass cost a full restore more than the locality saved it,
    // while it sped a chain's up (see `docs/ARCHITECTURE.md`).
    if regions <= 1 || changes.is_empty() {
        let mut group = FxHashMap::with_capacity_and_hasher(most_keys, Default::default());
        section.for_each_entry::<K, V>("snapshot", |key, value| {
            group.insert(key, value);
        })?;
        for change in changes {
            change.for_each_entry::<K, Option<V>>("changelog", |key, value| {
                apply(&mut group, key, value)
            })?;
        }
        return Ok(group);
    }
    let shift = buckets.trailing_zeros() - regions.trailing_zeros();
    let hasher = rustc_hash::FxBuildHasher;
    if scratch.len() < regions {
        scratch.resize_with(regions, Vec::new);
    }
    // Empty unless an earlier key group's restore failed halfway.
    scratch.iter_mut().for_each(Vec::clear);
    let mut keys = DistinctKeys::new();
    let mut gather = |key: K, value: Option<V>| {
        let hash = hasher.hash_one(&key);
        keys.add(hash);
        scratch[(hash as usize & (buckets - 1)) >> shift].push((key, value));
    };
    section.for_each_entry::<K, V>("snapshot", |key, value| gather(key, Some(value)))?;
    for change in changes {
        change.for_each_entry::<K, Option<V>>("changelog", &mut gather)?;
    }
    let capacity = keys.estimate().map_or(most_keys, |keys| {
        // A few standard errors of the estimate above it.
        (keys + keys / 32 + 64).min(most_keys)
    });
    let mut group = FxHashMap::with_capacity_and_hasher(capacity, hasher);
    for region in &mut scratch[..regions] {
        for (key, value) in region.drain(..) {
            apply(&mut group, key, value);
        }
    }
    Ok(group)
}

/// Counts the distinct keys among a key group's entries from their hashes
/// (linear counting on a sample): one hash in `2^SAMPLE_BITS` sets a bit of
/// a bitmap that stays in the L1 cache, and the share of bits left clear
/// gives the count. For a million keys the estimate's
/// standard error is about half a percent, mostly from the sampling.
struct DistinctKeys {
    bits: Box<[u64; DISTINCT_WORDS]>,
}

const SAMPLE_BITS: u32 = 4;
const DISTINCT_BITS_LOG2: u32 = 18;
const DISTINCT_WORDS: usize = 1 << (DISTINCT_BITS_LOG2 - 6);

impl DistinctKeys {
    fn new() -> Self {
        DistinctKeys {
            bits: Box::new([0; DISTINCT_WORDS]),
        }
    }

    /// Takes an FxHash. Its low 26 bits are the top of a multiplication by
    /// a constant, so the sample comes from them (bits 22 to 25); but for
    /// keys in a regular pattern they are spread more evenly than at random
    /// (a Weyl sequence), which linear counting would miscount, so a sampled
    /// hash is mixed (MurmurHash3's finalizer) before it picks its bit.
    #[inline]
    fn add(&mut self, hash: u64) {
        if (hash >> 22) & ((1 << SAMPLE_BITS) - 1) == 0 {
            let mut mixed = hash ^ (hash >> 33);
            mixed = mixed.wrapping_mul(0xff51_afd7_ed55_8ccd);
            mixed ^= mixed >> 33;
            mixed = mixed.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            mixed ^= mixed >> 33;
            let bit = (mixed >> (64 - DISTINCT_BITS_LOG2)) as usize;
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
    }

    /// The estimated number of distinct keys, or `None` when the bitmap
    /// is full (too many keys for it to tell).
    fn estimate(&self) -> Option<usize> {
        let m = (1usize << DISTINCT_BITS_LOG2) as f64;
        let clear = self.bits.iter().map(|w| w.count_zeros()).sum::<u32>();
        (clear > 0).then(|| (-m * (f64::from(clear) / m).ln()) as usize * (1 << SAMPLE_BITS))
    }
}

/// One key group's encoded section of a state file, its checksum verified
/// once: here, or before the restore when the checkpoint was verified.
struct Section<'a> {
    key_group: u32,
    file: &'a SnapshotFile,
    bytes: &'a [u8],
    count: u64,
}

impl<'a> Section<'a> {
    /// Its entry count, checksummed with the index, but never trusted for
    /// an allocation beyond what its bytes can hold.
    fn trusted_count(&self) -> usize {
        (self.count as usize).min(self.bytes.len())
    }

    fn read(key_group: u32, file: &'a SnapshotFile, checksummed: bool) -> Result<Self, String> {
        let count = file
            .key_group_entry(key_group)
            .map_err(|e| e.to_string())?
            .entry_count;
        let bytes = match checksummed {
            true => file.encoded_section_checksummed_before(key_group),
            false => file.encoded_section(key_group),
        }
        .map_err(|e| e.to_string())?;
        Ok(Self {
            key_group,
            file,
            bytes,
            count,
        })
    }

    /// Decodes every `(key, value)`, oldest first. A bad entry is an error
    /// naming the `kind` of file, the file and the key group.
    fn for_each_entry<K: Codec, V: Codec>(
        self,
        kind: &str,
        mut entry: impl FnMut(K, V),
    ) -> Result<(), String> {
        let Self {
            key_group,
            file,
            mut bytes,
            count,
        } = self;
        for i in 0..count {
            let decode_error = |e: rheon_net::codec::DecodeError| {
                format!(
                    "{kind} file {} is corrupt in key group {key_group}: entry {i} of {count} does not decode: {e}",
                    file.path().display()
                )
            };
            let key = K::decode(&mut bytes).map_err(decode_error)?;
            let value = V::decode(&mut bytes).map_err(decode_error)?;
            entry(key, value);
        }
        Ok(())
    }
}

/// Subtask `subtask`'s share of a checkpoint's operator-state elements (all
/// old subtasks', in order): element j goes to subtask `j % parallelism`.
pub(crate) fn share_of<'a>(
    elements: impl Iterator<Item = &'a Vec<u8>> + 'a,
    subtask: u32,
    parallelism: u32,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let (subtask, parallelism) = (subtask as usize, parallelism.max(1) as usize);
    elements
        .enumerate()
        .filter(move |(j, _)| j % parallelism == subtask)
        .map(|(_, e)| e.as_slice())
}

/// A full snapshot of `fork`, written as one file in the checkpoint
/// directory.
pub(crate) fn keyed_write<K, V>(
    state_name: &str,
    type_tag: &'static str,
    fork: KeyGroupedFork<K, V>,
) -> KeyedWrite
where
    K: Codec + Send + Sync + 'static,
    V: Codec + Send + Sync + 'static,
{
    KeyedWrite {
        state_name: state_name.to_owned(),
        chain: None,
        writes: vec![(StateFile::Full, fork_write(state_name, type_tag, fork))],
    }
}

/// The asynchronous part of writing a keyed state: the fork (of all of the
/// subtask's key groups or of a slice of them), encoded key group by key
/// group into one reused buffer, each key group released as soon as it is
/// written (so the task's next write to it does not copy).
pub(crate) fn fork_write<K, V>(
    state_name: &str,
    type_tag: &'static str,
    mut fork: KeyGroupedFork<K, V>,
) -> WriteStateFile
where
    K: Codec + Send + Sync + 'static,
    V: Codec + Send + Sync + 'static,
{
    let name = state_name.to_owned();
    Box::new(move |path: &Path| {
        let range = fork.key_group_range();
        let meta = SnapshotMeta::new(
            name,
            format!("codec:{type_tag}"),
            fork.max_parallelism(),
            range,
        );
        let mut buffer = Vec::new();
        rheon_state::snapshot::stage_encoded(path, meta, |mut writer| {
            for key_group in range {
                let (count, section) = encode_section(&mut buffer, fork.key_group(key_group));
                writer.write_key_group_encoded(key_group, count, section)?;
                fork.release(key_group);
            }
            writer.finish()
        })
        .map(|(staged, _)| staged)
        .map_err(|e| e.to_string())
    })
}

/// Encodes `entries` into `buffer` as one key group's section, in one pass,
/// and returns the number of entries and the encoded bytes (the front of
/// `buffer`). The buffer is reused from section to section and only grows:
/// no pass to size a section first (a second iteration of a key group's
/// table, about 40 % of the encoding), and no zeroing of bytes that are
/// overwritten anyway.
pub(crate) fn encode_section<'a, 'b, K, V>(
    buffer: &'b mut Vec<u8>,
    entries: impl Iterator<Item = (&'a K, &'a V)>,
) -> (u64, &'b [u8])
where
    K: Codec + 'a,
    V: Codec + 'a,
{
    let (mut at, mut count) = (0, 0u64);
    for (k, v) in entries {
        let (nk, nv) = (k.encoded_len(), v.encoded_len());
        let end = at + nk + nv;
        if end > buffer.len() {
            let grown = end.max(2 * buffer.len()).max(SECTION_BUFFER_MIN);
            buffer.resize(grown, 0);
        }
        k.encode(&mut buffer[at..at + nk]);
        v.encode(&mut buffer[at + nk..end]);
        at = end;
        count += 1;
    }
    (count, &buffer[..at])
}

/// The first size of a section buffer.
const SECTION_BUFFER_MIN: usize = 64 << 10;

/// Encodes one operator-state element.
pub(crate) fn encode_element<T: Codec>(value: &T) -> Vec<u8> {
    let mut bytes = vec![0; value.encoded_len()];
    value.encode(&mut bytes);
    bytes
}

/// Decodes one operator-state element, naming `what` in the error.
pub(crate) fn decode_element<T: Codec>(mut bytes: &[u8], what: &str) -> Result<T, String> {
    T::decode(&mut bytes).map_err(|e| format!("the checkpointed {what} does not decode: {e}"))
}

/// A shared handle on a restore, cheap to hand to every subtask.
pub(crate) type SharedRestore = Option<Arc<RestoreSnapshot>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPUs the calling thread may run on.
    fn own_cores() -> usize {
        crate::config::affinity_cores(0).expect("the calling thread's CPU mask")
    }

    #[test]
    fn a_restore_helper_leaves_the_core_of_its_pinned_parent() {
        let cores = crate::config::available_cores();
        std::thread::spawn(move || {
            let first = core_affinity::get_core_ids().expect("core ids")[0];
            assert!(core_affinity::set_for_current(first));
            assert_eq!(own_cores(), 1);
            // What the process may use, not what this pinned thread may.
            assert_eq!(crate::config::available_cores(), cores);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    assert_eq!(own_cores(), 1, "a new thread inherits the pinning");
                    unpin_current_thread();
                    assert_eq!(own_cores(), cores);
                });
            });
        })
        .join()
        .expect("the pinned thread's checks");
    }

    /// Writes a state file of key group 0 holding `entries` in order: a
    /// snapshot's `(key, value)` or a changelog's `(key, Some(value) | None)`.
    fn section_file<V: Codec>(path: &Path, entries: &[(u64, V)]) -> SnapshotFile {
        let meta = SnapshotMeta::new("sum", "codec:test", 1, KeyGroupRange::new(0, 0));
        let mut buffer = Vec::new();
        rheon_state::snapshot::writer::write_encoded_atomically(path, meta, |mut writer| {
            let entries = entries.iter().map(|(k, v)| (k, v));
            let (count, section) = encode_section(&mut buffer, entries);
            writer.write_key_group_encoded(0, count, section)?;
            writer.finish()
        })
        .expect("write the state file");
        SnapshotFile::open(path).expect("open the state file")
    }

    /// An empty directory of this process for test `name`.
    fn fresh_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rheon-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_restore_by_table_region_applies_the_base_then_every_change_in_file_order() {
        let dir = fresh_dir("replay");
        // A table of megabytes, so the changes are gathered in many regions.
        let base: Vec<(u64, u64)> = (0..100_000).map(|k| (k, k)).collect();
        let first: Vec<(u64, Option<u64>)> = (0..120_000)
            .filter(|k| k % 3 == 0)
            .map(|k| (k, Some(k * 3)))
            .collect();
        // Later changes of the same keys: removes, a remove then a set, and
        // a set then a remove, within one file and across the two.
        let mut second: Vec<(u64, Option<u64>)> = Vec::new();
        for k in (0..130_000).filter(|k| k % 5 == 0) {
            second.push((k, None));
            if k % 2 == 0 {
                second.push((k, Some(7)));
            }
        }
        second.extend((0..130_000).filter(|k| k % 7 == 0).map(|k| (k, Some(1))));
        second.extend((0..130_000).filter(|k| k % 11 == 0).map(|k| (k, None)));
        let deltas = [
            section_file(&dir.join("1.delta"), &first),
            section_file(&dir.join("2.delta"), &second),
        ];
        let base_file = section_file(&dir.join("0.base"), &base);
        let mut want: FxHashMap<u64, u64> = base.iter().copied().collect();
        for (k, v) in first.iter().chain(&second) {
            match v {
                Some(v) => want.insert(*k, *v),
                None => want.remove(k),
            };
        }
        for checksummed in [false, true] {
            let mut scratch = ReplayScratch::new();
            let deltas: Vec<&SnapshotFile> = deltas.iter().collect();
            let got = restore_key_group(0, &base_file, &deltas, checksummed, &mut scratch).unwrap();
            assert!(scratch.len() > 1, "the table is restored by region");
            assert_eq!(got, want);
            // The base alone, as a full checkpoint restores it.
            let got = restore_key_group::<u64, u64>(0, &base_file, &[], checksummed, &mut scratch);
            let base_only: FxHashMap<u64, u64> = base.iter().copied().collect();
            assert_eq!(got.unwrap(), base_only);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_growing_state_is_restored_into_a_table_sized_once_for_its_keys() {
        let dir = fresh_dir("growing");
        // A small base, then deltas of mostly new keys, as a growing state's
        // chain holds; each delta changes the same keys again, so its
        // entries (458 000) are three times its keys.
        let base: Vec<(u64, u64)> = (0..2_000).map(|k| (k, k)).collect();
        let changed = |_d: u64| 0..152_000u64;
        let deltas: Vec<SnapshotFile> = (0..3u64)
            .map(|d| {
                let changes: Vec<(u64, Option<u64>)> = changed(d)
                    .map(|k| (k, (k % 97 != 0).then_some(k + d)))
                    .collect();
                section_file(&dir.join(format!("{d}.delta")), &changes)
            })
            .collect();
        let base_file = section_file(&dir.join("0.base"), &base);
        let mut want: FxHashMap<u64, u64> = base.iter().copied().collect();
        for d in 0..3u64 {
            for k in changed(d) {
                match k % 97 {
                    0 => want.remove(&k),
                    _ => want.insert(k, k + d),
                };
            }
        }
        let mut scratch = ReplayScratch::new();
        let deltas: Vec<&SnapshotFile> = deltas.iter().collect();
        let got = restore_key_group(0, &base_file, &deltas, false, &mut scratch).unwrap();
        assert!(scratch.len() > 1, "the table is restored by region");
        assert_eq!(got, want);
        // Sized for its 150 000 keys, not for all the entries (four times
        // the buckets).
        let fitted: FxHashMap<u64, u64> =
            FxHashMap::with_capacity_and_hasher(want.len(), Default::default());
        assert_eq!(got.capacity(), fitted.capacity());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn distinct_keys_are_counted_within_a_few_percent() {
        type Pattern = (&'static str, fn(u64) -> u64);
        let patterns: [Pattern; 3] = [
            ("sequential", |k| k),
            ("strided", |k| k * 7919),
            ("spread", |k| k.wrapping_mul(2_654_435_761) % (1 << 26)),
        ];
        for (name, key) in patterns {
            for (n, tolerance) in [(50_000u64, 0.10), (1_000_000, 0.03), (4_000_000, 0.03)] {
                let mut keys = DistinctKeys::new();
                // Each key three times, as a chain's base and deltas repeat keys.
                for _ in 0..3 {
                    for k in 0..n {
                        keys.add(rustc_hash::FxBuildHasher.hash_one(key(k)));
                    }
                }
                let estimate = keys.estimate().expect("an estimate") as f64;
                let error = (estimate / n as f64 - 1.0).abs();
                assert!(error < tolerance, "{n} {name} keys estimated as {estimate}");
            }
        }
    }

    #[test]
    fn sections_encode_in_one_pass_into_a_buffer_reused_from_section_to_section() {
        // Each entry encoded on its own, concatenated: what a section must hold.
        fn expected(entries: &[(u64, Option<u32>)]) -> Vec<u8> {
            let mut bytes = Vec::new();
            for (k, v) in entries {
                bytes.extend(encode_element(k));
                bytes.extend(encode_element(v));
            }
            bytes
        }
        let large: Vec<(u64, Option<u32>)> = (0..20_000u64)
            .map(|k| (k * 31, (k % 3 != 0).then_some(k as u32)))
            .collect();
        let small = vec![(7u64, None), (8, Some(9u32))];
        let mut buffer = Vec::new();
        // Large enough to grow the buffer several times, then smaller ones
        // in the grown buffer, then none.
        for entries in [&large[..], &small[..], &large[..1], &[]] {
            let (count, section) = encode_section(&mut buffer, entries.iter().map(|(k, v)| (k, v)));
            assert_eq!(count, entries.len() as u64);
            assert_eq!(section, expected(entries), "{} entries", entries.len());
        }
        // What a restore reads back from such a section.
        let (_, section) = encode_section(&mut buffer, small.iter().map(|(k, v)| (k, v)));
        let mut input = section;
        for (k, v) in &small {
            assert_eq!(u64::decode(&mut input).unwrap(), *k);
            assert_eq!(Option::<u32>::decode(&mut input).unwrap(), *v);
        }
        assert!(input.is_empty());
    }

    #[test]
    fn subtasks_fewer_than_cores_get_helpers() {
        let cores = crate::config::available_cores();
        assert_eq!(restore_threads(1, 128), cores);
        assert_eq!(restore_threads(cores as u32, 128), 1);
        assert_eq!(restore_threads(cores as u32 * 4, 128), 1);
        assert_eq!(restore_threads(1, 1), 1);
        assert_eq!(restore_threads(1, 0), 1);
    }
}
