//! Incremental checkpoints of one keyed state, Flink's changelog state backend
//! (FLIP-158) in small: the state's [`KeyGroupedMap`] logs every change, a
//! checkpoint writes only the changes since the last completed one (a delta
//! file), and now and then a full snapshot (a base) starts a new chain. A
//! checkpoint's state is then its chain: the base and the deltas after it,
//! which a restore replays key group by key group.
//!
//! Invariants:
//! - A chain only ever holds files of completed checkpoints plus the one
//!   being taken: a delta holds every change since the last *completed*
//!   checkpoint of this subtask, so an aborted checkpoint's files are never
//!   needed (its changes are in the next delta too). The logs taken at each
//!   checkpoint are kept until a checkpoint that holds them completes.
//! - A change the map could not log (a `get_mut`, an `entry`, a `clear`)
//!   forces full snapshots until one taken after it completes.
//! - A checkpoint of a state with no change since the confirmed one writes
//!   no file: it references the confirmed chain. A chain holds at most
//!   `MAX_CHAIN_DELTAS` deltas.
//! - What a restore replays is bounded: when the chain's entries (the base's
//!   plus the deltas') pass `1 + ratio` times the state's current entries, the
//!   next checkpoint writes a base. A growing state's deltas are mostly new
//!   keys, as cheap to replay as a base's entries, so it writes no new bases
//!   while it grows; a state of steady size writes one each time its deltas
//!   reach `ratio` times its size. That bounds both restores and the logs'
//!   memory.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;

use rheon_net::codec::Codec;
use rheon_state::keyed::{Changelog, KeyGroupedMap};
use rheon_state::snapshot::SnapshotMeta;

use super::state::{encode_section, keyed_write, KeyedWrite, WriteStateFile};

/// The files of one subtask's keyed state at one checkpoint: a base and the
/// deltas after it, by the ids of the checkpoints that wrote them (the writer
/// names the files; see `writer::chain_file_name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chain {
    pub(crate) base: u64,
    pub(crate) deltas: Vec<u64>,
}

/// A chain with the entry counts the materialization policy weighs.
#[derive(Clone, Debug)]
struct Counted {
    chain: Chain,
    base_entries: usize,
    delta_entries: usize,
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
    /// of the logs since the confirmed chain, or a base (a copy-on-write fork)
    /// when there is no chain to extend, a log was incomplete, or the chain
    /// would pass `1 + ratio` times the map's entries (see [`replays_within`]).
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
        let delta_base = self.confirmed.as_ref().filter(|c| {
            let unbroken = self.broken_at.is_none_or(|at| c.chain.base >= at);
            let chain_entries = c.base_entries + c.delta_entries + unconfirmed;
            let files_left = c.chain.deltas.len() < MAX_CHAIN_DELTAS || unconfirmed == 0;
            unbroken && files_left && replays_within(chain_entries, map.len(), ratio)
        });
        let (counted, write) = match delta_base {
            None => {
                let counted = Counted {
                    chain: Chain {
                        base: checkpoint_id,
                        deltas: Vec::new(),
                    },
                    base_entries: map.len(),
                    delta_entries: 0,
                };
                (counted, keyed_write(state_name, type_tag, map.fork()).write)
            }
            // Nothing changed since the confirmed checkpoint: its files hold
            // this one's state too, and nothing is written.
            Some(base) if unconfirmed == 0 => (base.clone(), None),
            Some(base) => {
                let mut counted = base.clone();
                counted.chain.deltas.push(checkpoint_id);
                counted.delta_entries += unconfirmed;
                let segments: Vec<Segment<K, V>> =
                    self.segments.iter().map(|(_, s)| Arc::clone(s)).collect();
                (
                    counted,
                    Some(delta_write(state_name, type_tag, map, segments)),
                )
            }
        };
        let chain = Some(counted.chain.clone());
        self.pending.insert(checkpoint_id, counted);
        KeyedWrite {
            state_name: state_name.to_owned(),
            chain,
            write,
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

/// Whether a chain of `chain_entries` (base and deltas) may grow on for a
/// state of `state_entries`: a restore then replays at most `1 + ratio` times
/// what a base written now would hold.
fn replays_within(chain_entries: usize, state_entries: usize, ratio: f64) -> bool {
    chain_entries as f64 <= (1.0 + ratio) * state_entries.max(MIN_STATE_ENTRIES) as f64
}

/// The type tag of changelog files: entries are `(K, Option<V>)`, `None` for
/// a removed key. Still an encoded file (the tag starts with `codec:`).
pub(crate) fn delta_type_tag(type_tag: &str) -> String {
    format!("codec:changelog:{type_tag}")
}

/// Writes the logs' entries key group by key group, oldest first, as
/// `(key, Option<value>)`.
fn delta_write<K, V>(
    state_name: &str,
    type_tag: &'static str,
    map: &KeyGroupedMap<K, V>,
    segments: Vec<Segment<K, V>>,
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
        rheon_state::snapshot::writer::write_encoded_atomically(path, meta, |mut writer| {
            for (index, key_group) in range.iter().enumerate() {
                let entries = || {
                    segments
                        .iter()
                        .flat_map(|s| s.groups[index].iter().map(|(k, v)| (k, v)))
                };
                let count = encode_section(&mut buffer, entries);
                writer.write_key_group_encoded(key_group, count, &buffer)?;
            }
            writer.finish()
        })
        .map(|_| ())
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
        (chain, write.write.is_some())
    }

    /// A chain of a base alone.
    fn base(id: u64) -> Chain {
        Chain {
            base: id,
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
            assert_eq!((chain.base, chain.deltas.len(), writes), (1, n + 1, true));
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
                    base: 1,
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
                checkpoint(&mut state, &mut map, id).base,
                1,
                "checkpoint {id}"
            );
        }
        for key in 0..len / 4 {
            map.insert(0, key, 3);
        }
        assert_eq!(checkpoint(&mut state, &mut map, 10), base(10));
    }
}
