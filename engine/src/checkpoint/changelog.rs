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
//! - The chain's deltas are bounded: when their entries pass `ratio` times
//!   the base's, the next checkpoint writes a base. That bounds both what a
//!   restore replays and the logs' memory.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;

use rheon_net::codec::Codec;
use rheon_state::keyed::{Changelog, KeyGroupedMap};
use rheon_state::snapshot::SnapshotMeta;

use super::state::{encode_section, keyed_write, KeyedWrite};

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
}

impl<K, V> Default for ChangelogState<K, V> {
    fn default() -> Self {
        ChangelogState {
            confirmed: None,
            pending: BTreeMap::new(),
            segments: Vec::new(),
            broken_at: None,
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
    /// when there is no chain to extend, a log was incomplete, or the deltas
    /// would pass `ratio` times the base's entries.
    fn snapshot(
        &mut self,
        state_name: &str,
        type_tag: &'static str,
        map: &mut KeyGroupedMap<K, V>,
        checkpoint_id: u64,
        ratio: f64,
    ) -> KeyedWrite {
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
            let small = (c.delta_entries + unconfirmed) as f64
                <= ratio * c.base_entries.max(MIN_BASE_ENTRIES) as f64;
            unbroken && small
        });
        match delta_base {
            None => {
                let counted = Counted {
                    chain: Chain {
                        base: checkpoint_id,
                        deltas: Vec::new(),
                    },
                    base_entries: map.len(),
                    delta_entries: 0,
                };
                let chain = counted.chain.clone();
                self.pending.insert(checkpoint_id, counted);
                let mut write = keyed_write(state_name, type_tag, map.fork());
                write.chain = Some(chain);
                write
            }
            Some(base) => {
                let mut counted = base.clone();
                counted.chain.deltas.push(checkpoint_id);
                counted.delta_entries += unconfirmed;
                let chain = counted.chain.clone();
                self.pending.insert(checkpoint_id, counted);
                let segments: Vec<Segment<K, V>> =
                    self.segments.iter().map(|(_, s)| Arc::clone(s)).collect();
                let mut write = delta_write(state_name, type_tag, map, segments);
                write.chain = Some(chain);
                write
            }
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
        self.segments.retain(|&(id, _)| id > checkpoint_id);
    }
}

/// A base smaller than this counts as this big when weighing deltas, so a
/// tiny state is not rewritten at every checkpoint for a handful of changes.
const MIN_BASE_ENTRIES: usize = 4096;

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
) -> KeyedWrite
where
    K: Codec + Hash + Eq + Send + Sync + 'static,
    V: Codec + Send + Sync + 'static,
{
    let name = state_name.to_owned();
    let (range, max_parallelism) = (map.key_group_range(), map.max_parallelism());
    KeyedWrite {
        state_name: state_name.to_owned(),
        chain: None,
        write: Box::new(move |path: &Path| {
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
        }),
    }
}
