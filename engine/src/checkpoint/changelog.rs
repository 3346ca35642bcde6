//! Incremental checkpoints of one keyed state, Flink's changelog state backend
//! (FLIP-158) in small: the state's [`KeyGroupedMap`] logs every change, a
//! checkpoint writes only the changes since the last completed one (a delta
//! file), and now and then a full snapshot of a slice of the key groups (a
//! base) replaces what that slice's older files held. A checkpoint's state is
//! then its chain: a base per slice and the deltas after the oldest of them;
//! a restore replays each key group's base and the deltas newer than it.
//!
//! Invariants:
//! - A chain only ever holds files of completed checkpoints plus the one
//!   being taken: a delta holds every change since the last *completed*
//!   checkpoint of this subtask, so an aborted checkpoint's files are never
//!   needed (its changes are in the next delta too). The logs taken at each
//!   checkpoint are kept until a checkpoint that holds them completes.
//! - A change the map could not log (a `get_mut`, an `entry`, a `clear`)
//!   forces bases of every slice until a checkpoint taken after it completes.
//! - A checkpoint of a state with no change since the confirmed one writes
//!   no file: it references the confirmed chain. A chain holds at most
//!   `MAX_CHAIN_DELTAS` deltas.
//! - What a restore replays is bounded: the chain's entries (every slice's
//!   base and the deltas' entries of its key groups after it) stay within
//!   `1 + ratio` times the state's current entries. Past that, the checkpoint
//!   rebases the slices whose rebase saves the most replay, one after the
//!   other until it is within. A growing state's deltas are mostly new keys,
//!   as cheap to replay as a base's entries, so it writes no new bases while
//!   it grows; a state of steady size rebases about one slice at a time,
//!   oldest first. That bounds both restores and the logs' memory.
//! - What the chain keeps on disk is bounded too: a delta stays while any
//!   slice's base is older, so past `2 * ratio` times the state's entries in
//!   the deltas kept, each checkpoint rebases the slice with the oldest base
//!   (one a checkpoint, so slices sharing a base are not all rewritten at
//!   once). Without it, a state that grew (no rebases) and then steadied
//!   kept every delta since its first base for as long as one slice did.
//!
//! Why slices: with one base per subtask, a steady state's chain grows from
//! its base alone to `1 + ratio` times the state, then starts again, so the
//! worst restore replays `1 + ratio` while the writes average out to a base
//! per `ratio` of changes. With [`SLICES`] slices rebased in turn, the deltas
//! of the slices are of every age at once and the chain stays near its bound
//! all the time: the same bound costs half the base writes, or half the
//! bound the same writes (`(S + 1) / S` times, with `S` slices).

use std::collections::BTreeMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;

use rheon_net::codec::Codec;
use rheon_state::key_group::KeyGroupRange;
use rheon_state::keyed::{Changelog, KeyGroupedMap};
use rheon_state::snapshot::SnapshotMeta;

use super::state::{
    encode_section, fork_write, keyed_write, KeyedWrite, StateFile, WriteStateFile,
};

/// The files of one subtask's keyed state at one checkpoint: a base per
/// slice of its key groups (see [`slices`]) and the deltas after the oldest
/// of them, by the ids of the checkpoints that wrote them (the writer names
/// the files; see `writer::chain_file_name`). A key group's state is its
/// slice's base plus the deltas newer than that base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chain {
    /// Per slice, the checkpoint that wrote its base.
    pub(crate) bases: Vec<u64>,
    /// Deltas newer than the oldest base, oldest first.
    pub(crate) deltas: Vec<u64>,
}

impl Chain {
    fn oldest_base(&self) -> u64 {
        self.bases.iter().copied().min().unwrap_or(0)
    }
}

/// A chain with the entry counts the materialization policy weighs.
#[derive(Clone, Debug)]
struct Counted {
    chain: Chain,
    /// Per slice: the entries of its base, and the logged entries of its key
    /// groups in the deltas after that base.
    base_entries: Vec<usize>,
    delta_entries: Vec<usize>,
    /// Entries of each delta of `chain.deltas`.
    delta_sizes: Vec<usize>,
}

impl Counted {
    /// A chain of new bases for every slice, written at checkpoint `id`.
    fn based(id: u64, lens: &[usize]) -> Self {
        Counted {
            chain: Chain {
                bases: vec![id; lens.len()],
                deltas: Vec::new(),
            },
            base_entries: lens.to_vec(),
            delta_entries: vec![0; lens.len()],
            delta_sizes: Vec::new(),
        }
    }

    /// The entries a restore of every key group replays.
    fn replayed(&self) -> usize {
        self.base_entries.iter().sum::<usize>() + self.delta_entries.iter().sum::<usize>()
    }

    /// Appends checkpoint `id`'s delta, of `logged` entries per slice, then
    /// writes new bases at `id` for as few slices as keep the chain within
    /// bounds, and drops the deltas no slice needs any more. Bounds: what a
    /// restore replays stays within `1 + ratio` times the state's entries
    /// (`lens`, per slice); the deltas the chain keeps hold at most `2 *
    /// ratio` times them, a bound that one rebase per checkpoint restores
    /// over the next few (a delta stays while the oldest base is older, even
    /// where newer bases made it dead weight: a state that grew and then
    /// stopped would otherwise keep every delta since its first base); and
    /// at most [`MAX_CHAIN_DELTAS`] deltas. For the replay, the slice whose
    /// rebase saves the most goes first (the oldest among equals), so a
    /// state of steady size rebases a slice now and then instead of all of it
    /// at once; for the files, the slice with the oldest base. Returns, per
    /// slice, whether it was rebased.
    fn extend(&mut self, id: u64, logged: &[usize], lens: &[usize], ratio: f64) -> Vec<bool> {
        for (entries, logged) in self.delta_entries.iter_mut().zip(logged) {
            *entries += logged;
        }
        self.chain.deltas.push(id);
        self.delta_sizes.push(logged.iter().sum());
        let state = lens.iter().sum::<usize>().max(MIN_STATE_ENTRIES) as f64;
        let mut rebased = vec![false; lens.len()];
        loop {
            let oldest = self.chain.oldest_base();
            let kept = self.chain.deltas.iter().zip(&self.delta_sizes);
            let (files, entries) = kept
                .filter(|&(&d, _)| d > oldest)
                .fold((0, 0), |(files, entries), (_, &size)| {
                    (files + 1, entries + size)
                });
            let over_replay = self.replayed() as f64 > (1.0 + ratio) * state;
            // Kept entries past the bound rebase one slice per checkpoint:
            // when the slices share their oldest base, freeing a delta
            // takes rebasing all of them, which would be a full snapshot
            // at once, the spike slices exist to avoid.
            let over_entries = entries as f64 > 2.0 * ratio * state && !rebased.contains(&true);
            let over_files = files > MAX_CHAIN_DELTAS || over_entries;
            if !over_replay && !over_files {
                break;
            }
            let candidates = (0..lens.len()).filter(|&s| !rebased[s]);
            let bases = &self.chain.bases;
            let pick = if over_replay {
                let excess = |s: usize| {
                    (self.base_entries[s] + self.delta_entries[s]).saturating_sub(lens[s])
                };
                candidates.max_by_key(|&s| (excess(s), std::cmp::Reverse(bases[s])))
            } else {
                candidates.min_by_key(|&s| bases[s])
            };
            let Some(slice) = pick else { break };
            rebased[slice] = true;
            self.chain.bases[slice] = id;
            self.base_entries[slice] = lens[slice];
            self.delta_entries[slice] = 0;
        }
        let oldest = self.chain.oldest_base();
        let kept = self.chain.deltas.iter().position(|&d| d > oldest);
        let dropped = kept.unwrap_or(self.chain.deltas.len());
        self.chain.deltas.drain(..dropped);
        self.delta_sizes.drain(..dropped);
        // The new delta has empty sections for the slices rebased with it.
        if let Some(size) = self.delta_sizes.last_mut().filter(|_| kept.is_some()) {
            *size = (logged.iter().zip(&rebased))
                .filter(|&(_, &rebased)| !rebased)
                .map(|(&logged, _)| logged)
                .sum();
        }
        rebased
    }
}

/// Base files per subtask: a steady state rewrites one slice at a time.
const SLICES: u32 = 8;

/// `range` cut into at most [`SLICES`] contiguous slices of near-equal size,
/// the way subtasks share key groups; an empty range is one empty slice.
pub(crate) fn slices(range: KeyGroupRange) -> Vec<KeyGroupRange> {
    if range.is_empty() {
        return vec![range];
    }
    let count = range.len().min(SLICES);
    let at = |i: u32| range.start + ((i as u64 * range.len() as u64) / count as u64) as u32;
    (0..count)
        .map(|i| KeyGroupRange::new(at(i), at(i + 1) - 1))
        .collect()
}

/// Entries of `map` per slice.
fn slice_lens<K: Hash + Eq, V>(map: &KeyGroupedMap<K, V>, slices: &[KeyGroupRange]) -> Vec<usize> {
    slices
        .iter()
        .map(|slice| slice.iter().map(|g| map.key_group_len(g)).sum())
        .collect()
}

/// A log taken at a checkpoint's synchronous part, shared with the writer.
type Segment<K, V> = Arc<Changelog<K, V>>;

/// The incremental-checkpoint bookkeeping of one keyed state of one subtask.
pub(crate) struct ChangelogState<K, V> {
    /// The chain of the newest completed checkpoint.
    confirmed: Option<Counted>,
    /// Chains of checkpoints taken but not known to be complete.
    pending: BTreeMap<u64, Counted>,
    /// Logs taken at checkpoints newer than the confirmed chain's last one.
    segments: Vec<(u64, Segment<K, V>)>,
    /// The newest checkpoint whose log was incomplete: only a base taken at
    /// or after it can start a chain.
    broken_at: Option<u64>,
    /// A written log no chain needs any more, whose memory the next take
    /// reuses (`KeyGroupedMap::recycle_changelog`).
    spare: Option<Changelog<K, V>>,
}

impl<K, V> Default for ChangelogState<K, V> {
    fn default() -> Self {
        ChangelogState {
            confirmed: None,
            pending: BTreeMap::new(),
            segments: Vec::new(),
            broken_at: None,
            spare: None,
        }
    }
}

/// Logs beyond this many times the state's entries (plus a floor) are dropped
/// and the next checkpoint writes a base: checkpoints that never complete must
/// not make the logs grow without bound.
const MAX_UNCONFIRMED_FACTOR: usize = 4;
const MAX_UNCONFIRMED_FLOOR: usize = 1 << 20;

impl<K, V> ChangelogState<K, V>
where
    K: Codec + Hash + Eq + Clone + Send + Sync + 'static,
    V: Codec + Clone + Send + Sync + 'static,
{
    /// The keyed write of `map` at checkpoint `checkpoint_id`: with
    /// `incremental` (the materialization ratio) a delta or a base of the
    /// chain (see [`snapshot`](Self::snapshot)); without it, as savepoints
    /// and checkpoints without `CheckpointConfig::incremental` write, a full
    /// copy-on-write fork that leaves the chain alone.
    pub(crate) fn write(
        &mut self,
        state_name: &str,
        type_tag: &'static str,
        map: &mut KeyGroupedMap<K, V>,
        checkpoint_id: u64,
        incremental: Option<f64>,
    ) -> KeyedWrite {
        match incremental {
            Some(ratio) => self.snapshot(state_name, type_tag, map, checkpoint_id, ratio),
            None => keyed_write(state_name, type_tag, map.fork()),
        }
    }

    /// The synchronous part of checkpoint `checkpoint_id` for `map`: a delta
    /// of the logs since the confirmed chain, plus bases (copy-on-write forks)
    /// of the slices [`Counted::extend`] picks; bases of every slice when
    /// there is no chain to extend or a log was incomplete.
    fn snapshot(
        &mut self,
        state_name: &str,
        type_tag: &'static str,
        map: &mut KeyGroupedMap<K, V>,
        checkpoint_id: u64,
        ratio: f64,
    ) -> KeyedWrite {
        if let Some(spare) = self.spare.take() {
            map.recycle_changelog(spare);
        }
        match map.take_changelog() {
            None => {
                // The first checkpoint: logging starts with its base.
                map.enable_changelog();
                self.broken_at = Some(checkpoint_id);
            }
            Some(log) => {
                if !log.complete {
                    self.broken_at = Some(checkpoint_id);
                }
                self.segments.push((checkpoint_id, Arc::new(log)));
            }
        }
        let unconfirmed: usize = self.segments.iter().map(|(_, s)| s.entries).sum();
        if unconfirmed > MAX_UNCONFIRMED_FACTOR * map.len() + MAX_UNCONFIRMED_FLOOR {
            self.segments.clear();
            self.broken_at = Some(checkpoint_id);
        }
        let slices = slices(map.key_group_range());
        let extendable = self.confirmed.as_ref().filter(|c| {
            let unbroken = self.broken_at.is_none_or(|at| c.chain.oldest_base() >= at);
            unbroken && c.chain.bases.len() == slices.len()
        });
        let (counted, rebased) = match extendable {
            None => (
                Counted::based(checkpoint_id, &slice_lens(map, &slices)),
                vec![true; slices.len()],
            ),
            // Nothing changed since the confirmed checkpoint: its files hold
            // this one's state too, and nothing is written.
            Some(chain) if unconfirmed == 0 => (chain.clone(), vec![false; slices.len()]),
            Some(chain) => {
                let mut counted = chain.clone();
                let start = map.key_group_range().start;
                let logged: Vec<usize> = (slices.iter())
                    .map(|slice| {
                        let indexes = (slice.start - start) as usize..=(slice.end - start) as usize;
                        (self.segments.iter())
                            .flat_map(|(_, s)| s.groups[indexes.clone()].iter().map(Vec::len))
                            .sum()
                    })
                    .collect();
                let lens = slice_lens(map, &slices);
                let rebased = counted.extend(checkpoint_id, &logged, &lens, ratio);
                (counted, rebased)
            }
        };
        let mut writes = Vec::new();
        for (index, slice) in slices.iter().enumerate().filter(|&(i, _)| rebased[i]) {
            let fork = map.fork_key_groups(*slice);
            writes.push((
                StateFile::Base { slice: index },
                fork_write(state_name, type_tag, fork),
            ));
        }
        if counted.chain.deltas.last() == Some(&checkpoint_id) {
            let segments: Vec<Segment<K, V>> =
                self.segments.iter().map(|(_, s)| Arc::clone(s)).collect();
            let skipped: Vec<KeyGroupRange> = slices
                .iter()
                .zip(&rebased)
                .filter_map(|(slice, &rebased)| rebased.then_some(*slice))
                .collect();
            let write = delta_write(state_name, type_tag, map, segments, skipped);
            writes.push((StateFile::Delta, write));
        }
        let chain = Some(counted.chain.clone());
        self.pending.insert(checkpoint_id, counted);
        KeyedWrite {
            state_name: state_name.to_owned(),
            chain,
            writes,
        }
    }

    /// Checkpoint `checkpoint_id` completed: its chain is the one to extend,
    /// and the logs it holds are no longer needed.
    pub(crate) fn notify_complete(&mut self, checkpoint_id: u64) {
        let Some(counted) = self.pending.remove(&checkpoint_id) else {
            return;
        };
        self.confirmed = Some(counted);
        self.pending.retain(|&id, _| id > checkpoint_id);
        let done = self
            .segments
            .iter()
            .take_while(|&&(id, _)| id <= checkpoint_id)
            .count();
        // The writer has dropped its share of a written log by now, unless
        // it is still writing a later checkpoint that holds it too. The
        // newest log it let go of is the spare.
        for (_, log) in self.segments.drain(..done) {
            if let Ok(log) = Arc::try_unwrap(log) {
                self.spare = Some(log);
            }
        }
    }
}

/// A chain holds at most this many deltas, so a trickle of changes to a
/// large state cannot make a restore open thousands of files.
const MAX_CHAIN_DELTAS: usize = 64;

/// A state smaller than this counts as this big when weighing its chain, so
/// a tiny state is not rewritten at every checkpoint for a handful of changes.
const MIN_STATE_ENTRIES: usize = 4096;

/// The type tag of changelog files: entries are `(K, Option<V>)`, `None` for
/// a removed key. Still an encoded file (the tag starts with `codec:`).
pub(crate) fn delta_type_tag(type_tag: &str) -> String {
    format!("codec:changelog:{type_tag}")
}

/// Writes the logs' entries key group by key group, oldest first, as
/// `(key, Option<value>)`; the key groups of `skipped` (slices rebased at the
/// same checkpoint) get empty sections.
fn delta_write<K, V>(
    state_name: &str,
    type_tag: &'static str,
    map: &KeyGroupedMap<K, V>,
    segments: Vec<Segment<K, V>>,
    skipped: Vec<KeyGroupRange>,
) -> WriteStateFile
where
    K: Codec + Hash + Eq + Send + Sync + 'static,
    V: Codec + Send + Sync + 'static,
{
    let name = state_name.to_owned();
    let (range, max_parallelism) = (map.key_group_range(), map.max_parallelism());
    Box::new(move |path: &Path| {
        let meta = SnapshotMeta::new(name, delta_type_tag(type_tag), max_parallelism, range);
        let mut buffer = Vec::new();
        rheon_state::snapshot::stage_encoded(path, meta, |mut writer| {
            for (index, key_group) in range.iter().enumerate() {
                let skip = skipped.iter().any(|slice| slice.contains(key_group));
                let entries = segments
                    .iter()
                    .filter(|_| !skip)
                    .flat_map(|s| s.groups[index].iter().map(|(k, v)| (k, v)));
                let (count, section) = encode_section(&mut buffer, entries);
                writer.write_key_group_encoded(key_group, count, section)?;
            }
            writer.finish()
        })
        .map(|(staged, _)| staged)
        .map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rheon_state::key_group::KeyGroupRange;

    /// Takes checkpoint `id` of `map` (completing it) and returns its chain
    /// and whether it writes a file.
    fn checkpoint_writes(
        state: &mut ChangelogState<u64, u64>,
        map: &mut KeyGroupedMap<u64, u64>,
        id: u64,
    ) -> (Chain, bool) {
        let write = state.write("sum", "u64", map, id, Some(1.0));
        state.notify_complete(id);
        let chain = write.chain.expect("an incremental write has a chain");
        (chain, !write.writes.is_empty())
    }

    /// A chain of a base alone.
    fn base(id: u64) -> Chain {
        Chain {
            bases: vec![id],
            deltas: Vec::new(),
        }
    }

    fn checkpoint(
        state: &mut ChangelogState<u64, u64>,
        map: &mut KeyGroupedMap<u64, u64>,
        id: u64,
    ) -> Chain {
        checkpoint_writes(state, map, id).0
    }

    #[test]
    fn an_unchanged_state_writes_no_file_and_a_trickle_of_changes_rebases_at_the_cap() {
        let mut map = KeyGroupedMap::new(KeyGroupRange::new(0, 0), 1);
        let mut state = ChangelogState::default();
        for key in 0..100_000 {
            map.insert(0, key, 0);
        }
        assert_eq!(checkpoint_writes(&mut state, &mut map, 1), (base(1), true));
        // Idle: every checkpoint references the base, and writes nothing.
        for id in 2..=200 {
            let unchanged = (base(1), false);
            assert_eq!(checkpoint_writes(&mut state, &mut map, id), unchanged);
        }
        // One change a checkpoint: a delta each, up to the cap, far below
        // the ratio; then a base.
        for (n, id) in (201..).take(MAX_CHAIN_DELTAS).enumerate() {
            map.insert(0, n as u64, 1);
            let (chain, writes) = checkpoint_writes(&mut state, &mut map, id);
            assert_eq!(
                (chain.bases[0], chain.deltas.len(), writes),
                (1, n + 1, true)
            );
        }
        map.insert(0, 7, 2);
        let id = 201 + MAX_CHAIN_DELTAS as u64;
        assert_eq!(
            checkpoint_writes(&mut state, &mut map, id),
            (base(id), true)
        );
        // A full chain that sees no change still writes nothing.
        for n in 0..MAX_CHAIN_DELTAS as u64 {
            map.insert(0, n, 3);
            checkpoint(&mut state, &mut map, id + 1 + n);
        }
        let last = id + MAX_CHAIN_DELTAS as u64;
        let (chain, writes) = checkpoint_writes(&mut state, &mut map, last + 1);
        assert_eq!((chain.deltas.last(), writes), (Some(&last), false));
    }

    #[test]
    fn a_written_log_is_the_memory_of_the_log_after_next() {
        let mut map = KeyGroupedMap::new(KeyGroupRange::new(0, 0), 1);
        let mut state = ChangelogState::default();
        for key in 0..10_000 {
            map.insert(0, key, 0);
        }
        checkpoint(&mut state, &mut map, 1);
        // A large log, then small ones: a new log would be sized to the small
        // one before it, a recycled one keeps the large one's capacity.
        let mut capacities = Vec::new();
        for (id, changes) in [(2, 3000), (3, 1000), (4, 1000)] {
            for key in 0..changes {
                map.insert(0, key, id);
            }
            // The write (and the writer's share of the log) is dropped before
            // the checkpoint completes, as the writer thread drops it.
            drop(state.write("sum", "u64", &mut map, id, Some(1.0)));
            let (_, log) = state.segments.last().expect("a delta's log");
            assert_eq!(log.groups[0].len(), changes as usize);
            capacities.push(log.groups[0].capacity());
            state.notify_complete(id);
        }
        // Checkpoint 2's log, written and completed, is the memory of the log
        // checkpoint 4 took.
        assert!(capacities[0] >= 3000);
        assert_eq!(capacities[2], capacities[0], "{capacities:?}");
    }

    #[test]
    fn a_growing_state_extends_its_chain_and_a_steady_one_rebases_at_the_ratio() {
        let mut map = KeyGroupedMap::new(KeyGroupRange::new(0, 0), 1);
        let mut state = ChangelogState::default();
        let mut next_key = 0;
        let mut grow = |map: &mut KeyGroupedMap<u64, u64>, n: u64| {
            for _ in 0..n {
                map.insert(0, next_key, 1);
                next_key += 1;
            }
        };
        grow(&mut map, 10_000);
        assert_eq!(checkpoint(&mut state, &mut map, 1), base(1));
        // Doubling the state at every checkpoint: the deltas are new keys,
        // and the chain never holds more than twice the state.
        for id in 2..=5 {
            let len = map.len() as u64;
            grow(&mut map, len);
            let chain = checkpoint(&mut state, &mut map, id);
            assert_eq!(
                chain,
                Chain {
                    bases: vec![1],
                    deltas: (2..=id).collect()
                }
            );
        }
        // Steady size (160 000 keys, chain 160 000): overwriting a quarter of
        // the keys per checkpoint, the fifth such delta would pass twice the
        // state, so that checkpoint writes a base.
        let len = map.len() as u64;
        for id in 6..=9 {
            for key in 0..len / 4 {
                map.insert(0, key, 2);
            }
            assert_eq!(
                checkpoint(&mut state, &mut map, id).bases,
                [1],
                "checkpoint {id}"
            );
        }
        for key in 0..len / 4 {
            map.insert(0, key, 3);
        }
        assert_eq!(checkpoint(&mut state, &mut map, 10), base(10));
    }

    #[test]
    fn slices_cut_a_range_into_near_equal_parts() {
        let cut = |start, end| slices(KeyGroupRange::new(start, end));
        let eight: Vec<u32> = cut(64, 127).iter().map(|s| s.len()).collect();
        assert_eq!(eight, [8; 8]);
        assert_eq!(cut(0, 0), [KeyGroupRange::new(0, 0)]);
        assert_eq!(cut(5, 7).len(), 3);
        let uneven = cut(0, 20);
        assert_eq!((uneven[0].start, uneven[7].end), (0, 20));
        assert!(uneven.windows(2).all(|w| w[0].end + 1 == w[1].start));
        assert_eq!(cut(1, 0), [KeyGroupRange::new(1, 0)]);
    }

    #[test]
    fn a_steady_state_rebases_a_slice_at_a_time_within_the_replay_bound() {
        // 16 key groups (8 slices of 2), 4096 keys each.
        let range = KeyGroupRange::new(0, 15);
        let mut map = KeyGroupedMap::new(range, 16);
        let mut state = ChangelogState::default();
        let key_groups = range.iter().cycle();
        let keys: Vec<(u32, u64)> = key_groups.zip(0..16 * 4096).collect();
        for &(group, key) in &keys {
            map.insert(group, key, 0);
        }
        let ratio = 0.5;
        let first = state.write("sum", "u64", &mut map, 1, Some(ratio));
        assert_eq!(first.writes.len(), 8, "a base per slice");
        assert!(first.writes.iter().all(|(f, _)| *f != StateFile::Delta));
        state.notify_complete(1);
        // Each checkpoint overwrites a tenth of every key group.
        let mut rebases = Vec::new();
        for id in 2..=60u64 {
            for &(group, key) in keys.iter().skip(id as usize % 10).step_by(10) {
                map.insert(group, key, id);
            }
            let write = state.write("sum", "u64", &mut map, id, Some(ratio));
            let bases = write.writes.iter().filter(|(f, _)| *f != StateFile::Delta);
            rebases.push(bases.count());
            let chain = write.chain.clone().unwrap();
            drop(write);
            state.notify_complete(id);
            let counted = state.confirmed.as_ref().unwrap();
            assert!(
                counted.replayed() as f64 <= (1.0 + ratio) * map.len() as f64,
                "checkpoint {id}: {counted:?}"
            );
            // Every retained delta is newer than some slice's base.
            let oldest = *chain.bases.iter().min().unwrap();
            assert!(chain.deltas.iter().all(|&d| d > oldest), "{chain:?}");
            assert_eq!(
                chain.deltas.last(),
                Some(&id),
                "a delta at every checkpoint"
            );
        }
        // Never all of it at once after the first base; and once the deltas
        // reach the bound, the slices' bases are of different checkpoints.
        assert!(rebases.iter().all(|&n| n < 8), "{rebases:?}");
        assert!(rebases.iter().sum::<usize>() >= 8, "{rebases:?}");
        let chain = state.confirmed.as_ref().unwrap().chain.clone();
        let mut distinct = chain.bases.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 4, "{chain:?}");
    }

    #[test]
    fn a_state_that_grows_then_steadies_keeps_its_chain_files_bounded() {
        // 16 key groups (8 slices); the state grows from 16 keys to 64 Ki
        // while overwriting old keys, then stays at that size.
        let range = KeyGroupRange::new(0, 15);
        let mut map = KeyGroupedMap::new(range, 16);
        let mut state = ChangelogState::default();
        let ratio = 0.5;
        let (mut rebases, mut kept_over) = (Vec::new(), Vec::new());
        let key_group = |key: u64| (key % 16) as u32;
        let mut keys = 16u64;
        for key in 0..keys {
            map.insert(key_group(key), key, 0);
        }
        for id in 1..=80u64 {
            if id <= 40 {
                let grown = (keys * 13 / 10).min(1 << 16);
                for key in keys..grown {
                    map.insert(key_group(key), key, id);
                }
                keys = grown;
            }
            for key in (id % 3..keys).step_by(3) {
                map.insert(key_group(key), key, id);
            }
            let write = state.write("sum", "u64", &mut map, id, Some(ratio));
            let bases = write.writes.iter().filter(|(f, _)| *f != StateFile::Delta);
            rebases.push(bases.count());
            drop(write);
            state.notify_complete(id);
            let counted = state.confirmed.as_ref().unwrap();
            let bound = map.len().max(MIN_STATE_ENTRIES) as f64;
            let kept: usize = counted.delta_sizes.iter().sum();
            kept_over.push(kept as f64 / bound);
            assert!(counted.replayed() as f64 <= (1.0 + ratio) * bound);
            assert_eq!(counted.delta_sizes.len(), counted.chain.deltas.len());
            // The sizes are the deltas' logged entries over the slices that
            // still replay them.
            let logged: usize = counted.delta_entries.iter().sum();
            assert!(logged <= kept, "checkpoint {id}: {counted:?}");
        }
        assert_eq!(map.len(), 1 << 16);
        // After the first base, no checkpoint rewrites every slice at once;
        // the kept deltas pass their bound only briefly, by a slice's worth.
        assert!(rebases[1..].iter().all(|&n| n < 8), "{rebases:?}");
        let over = kept_over.iter().filter(|&&k| k > 2.0 * ratio).count();
        assert!(over <= 16, "{over} over: {kept_over:?}");
        assert!(
            kept_over[60..].iter().all(|&k| k <= 2.0 * ratio),
            "{kept_over:?}"
        );
    }
}
