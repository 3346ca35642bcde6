//! Keyed state of one subtask: [`KeyGroupedMap`] stores a state's entries in one hash map
//! per owned key group, so a snapshot can write (and a restore after rescaling can read)
//! whole key groups. (The engine's `api::state` builds a keyed process function's named
//! states on it.)
//!
//! Each key group's map sits behind an `Arc`, which makes checkpoints copy-on-write:
//! [`KeyGroupedMap::fork`] (the synchronous part of a checkpoint, O(key groups)) hands out
//! a frozen [`KeyGroupedFork`] that shares every key group's map. The fork is `Send`, so a
//! writer thread can write it while the task keeps processing; the first write by the
//! task to a key group the fork still holds copies that one key group's map
//! (`Arc::make_mut`), and [`KeyGroupedFork::release`] lets the writer give a key group
//! back as soon as it is written, so later writes to it do not copy.
//!
//! Keyed state belongs to the executor that runs the subtask and never crosses cores:
//! only a fork crosses, frozen.
//!
//! A key group outside the subtask's range is a partitioning bug, not an operating error:
//! every access asserts it, in release builds too, with a message naming the key group
//! and the range.

use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::key_group::{check_parallelism, KeyGroupRange};

/// Keyed state storage for one subtask, partitioned by key group: one hash map per owned
/// key group, at index `key_group - range.start`, each behind an `Arc` so that
/// [`fork`](Self::fork) can share it (copy-on-write).
///
/// The caller passes each key's key group (computed once per record by the partitioner
/// with [`assign_to_key_group`](crate::key_group::assign_to_key_group)); the map trusts it and does not rehash the key.
///
/// Reads never copy. A mutation ([`get_mut`](Self::get_mut), [`insert`](Self::insert),
/// [`remove`](Self::remove), [`entry`](Self::entry)) of a key group that a live fork (or
/// a clone of this map) still shares first copies that key group's map, which is why the
/// mutating methods need `K: Clone, V: Clone`; a `get_mut` or `remove` of an absent key
/// does not copy, and [`clear`](Self::clear) never copies.
///
/// `Clone` is O(key groups) and needs no `Clone` bounds: the clone shares every key
/// group's map with the original until one of them writes it.
///
/// With a changelog ([`enable_changelog`](Self::enable_changelog)), the map also records
/// every change it can see the new value of: [`insert`](Self::insert),
/// [`update`](Self::update) and [`remove`](Self::remove) append `(key, new value or
/// None)` to the changed key group's log, and [`take_changelog`](Self::take_changelog)
/// hands the logs over (an incremental checkpoint writes only them). A mutation whose
/// result the map cannot see ([`get_mut`](Self::get_mut), [`entry`](Self::entry),
/// [`clear`](Self::clear)) marks the log incomplete instead, and the next checkpoint of
/// this map must be a full one.
#[derive(Debug)]
pub struct KeyGroupedMap<K, V> {
    range: KeyGroupRange,
    max_parallelism: u32,
    groups: Vec<Arc<FxHashMap<K, V>>>,
    /// Per key group: true only while `groups[i]` is known to be unique (no fork or
    /// clone shares it), so a write reaches it without `Arc::make_mut`, whose atomic
    /// compare-exchange per record drains the store buffer and serializes the cache
    /// misses of consecutive records (the `changelog` bench: a logged upsert went from
    /// 248 to 177 ns without it). Set after `make_mut`; cleared by [`fork`](Self::fork)
    /// and `clone`, the only places that clone a key group's `Arc` (no `Weak` is ever
    /// made).
    unique: Vec<AtomicBool>,
    log: Option<Box<Changelog<K, V>>>,
    /// With a changelog: per key group, the keys [`log_key`](Self::log_key) marked,
    /// whose values [`take_changelog`](Self::take_changelog) logs.
    marked: Vec<FxHashSet<K>>,
    /// Empty per-key-group logs whose memory the next take reuses (see
    /// [`recycle_changelog`](Self::recycle_changelog)); empty when there are none.
    spare_log: Vec<Vec<(K, Option<V>)>>,
}

impl<K, V> Clone for KeyGroupedMap<K, V> {
    /// The clone has no changelog: it is a copy of the values, not of their history.
    fn clone(&self) -> Self {
        self.mark_shared();
        Self {
            range: self.range,
            max_parallelism: self.max_parallelism,
            groups: self.groups.clone(),
            unique: not_unique(self.groups.len()),
            log: None,
            marked: Vec::new(),
            spare_log: Vec::new(),
        }
    }
}

/// The changes of a [`KeyGroupedMap`] since the last [`KeyGroupedMap::take_changelog`]:
/// per key group (index `key_group - range.start`), `(key, Some(value))` for a key set to
/// `value` and `(key, None)` for a removed key, oldest first. Replaying them in order over
/// the map as it was at the previous take gives the map as it is now, unless `complete`
/// is false.
#[derive(Debug)]
pub struct Changelog<K, V> {
    /// The logs, one per key group of the map's range.
    pub groups: Vec<Vec<(K, Option<V>)>>,
    /// False when a change was made that the log does not hold.
    pub complete: bool,
    /// Log entries over all key groups.
    pub entries: usize,
}

impl<K, V> Changelog<K, V> {
    fn new(key_groups: usize) -> Self {
        Changelog {
            groups: (0..key_groups).map(|_| Vec::new()).collect(),
            complete: true,
            entries: 0,
        }
    }
}

/// A key group's log is compacted (only the last change per key kept) once it is this
/// many times longer than the key group's map, so a few hot keys cannot make the log
/// grow with the write rate.
const COMPACT_FACTOR: usize = 2;
/// ...plus this many entries, so small key groups are not compacted all the time.
const COMPACT_SLACK: usize = 64;

impl<K: Hash + Eq, V> KeyGroupedMap<K, V> {
    /// An empty map for the key groups in `range`, out of `max_parallelism` key groups.
    ///
    /// Panics if `max_parallelism` is outside `1..=MAX_PARALLELISM_BOUND` or a non-empty
    /// `range` reaches past `max_parallelism - 1`.
    pub fn new(range: KeyGroupRange, max_parallelism: u32) -> Self {
        assert_range_fits(range, max_parallelism);
        let groups: Vec<_> = range.iter().map(|_| Arc::default()).collect();
        Self {
            range,
            max_parallelism,
            unique: not_unique(groups.len()),
            groups,
            log: None,
            marked: Vec::new(),
            spare_log: Vec::new(),
        }
    }

    /// A map for the key groups in `range` from one hash map per key group, in key group
    /// order (`groups[i]` holds key group `range.start + i`). For restores, which can
    /// presize each key group's map from a snapshot's index; needs no `Clone` bounds.
    ///
    /// Panics under the conditions of [`Self::new`], or if there is not exactly one map
    /// per key group of `range`. The maps' keys are trusted to be in their key groups.
    pub fn from_key_groups(
        range: KeyGroupRange,
        max_parallelism: u32,
        groups: impl IntoIterator<Item = FxHashMap<K, V>>,
    ) -> Self {
        assert_range_fits(range, max_parallelism);
        let groups: Vec<Arc<FxHashMap<K, V>>> = groups.into_iter().map(Arc::new).collect();
        assert_eq!(
            groups.len(),
            range.len() as usize,
            "{} key group maps for the {} key groups of {range}",
            groups.len(),
            range.len()
        );
        Self {
            range,
            max_parallelism,
            unique: not_unique(groups.len()),
            groups,
            log: None,
            marked: Vec::new(),
            spare_log: Vec::new(),
        }
    }

    /// The key groups this map holds.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The total number of key groups of the job's keyed state.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The value of `key` in `key_group`.
    pub fn get(&self, key_group: u32, key: &K) -> Option<&V> {
        self.group(key_group).get(key)
    }

    /// Whether `key` has a value in `key_group`.
    pub fn contains_key(&self, key_group: u32, key: &K) -> bool {
        self.group(key_group).contains_key(key)
    }

    /// The number of entries over all key groups. Walks the key groups: O(range length).
    pub fn len(&self) -> usize {
        self.groups.iter().map(|group| group.len()).sum()
    }

    /// Whether no key group holds an entry. Walks the key groups: O(range length).
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|group| group.is_empty())
    }

    /// The number of entries in one key group.
    pub fn key_group_len(&self, key_group: u32) -> usize {
        self.group(key_group).len()
    }

    /// One key group's entries, in unspecified order.
    pub fn key_group(&self, key_group: u32) -> impl Iterator<Item = (&K, &V)> {
        self.group(key_group).iter()
    }

    /// All entries as `(key_group, key, value)`, key groups ascending, keys within a key
    /// group in unspecified order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &K, &V)> {
        let start = self.range.start;
        self.groups
            .iter()
            .enumerate()
            .flat_map(move |(index, group)| {
                let key_group = start + index as u32;
                group
                    .iter()
                    .map(move |(key, value)| (key_group, key, value))
            })
    }

    /// A frozen view of every key group as it is now, for a writer thread: the
    /// synchronous part of a checkpoint. O(key groups): it shares each key group's map
    /// (one reference-count increment each) and copies no entry. Mutations of this map
    /// afterwards do not show in the fork; the first one to a key group the fork still
    /// holds copies that key group's map.
    pub fn fork(&self) -> KeyGroupedFork<K, V> {
        self.fork_key_groups(self.range)
    }

    /// A [`fork`](Self::fork) of the key groups in `range` only, which must lie within
    /// this map's range: the others stay unshared, and writing them copies nothing.
    /// O(key groups in `range`).
    ///
    /// Panics if a non-empty `range` reaches outside the map's range.
    pub fn fork_key_groups(&self, range: KeyGroupRange) -> KeyGroupedFork<K, V> {
        let indexes = if range.is_empty() {
            0..0
        } else {
            self.index(range.start)..self.index(range.end) + 1
        };
        let mut len = 0;
        let groups = indexes
            .map(|index| {
                self.unique[index].store(false, Ordering::Relaxed);
                let group = &self.groups[index];
                len += group.len();
                Some(Arc::clone(group))
            })
            .collect();
        KeyGroupedFork {
            range,
            max_parallelism: self.max_parallelism,
            len,
            groups,
        }
    }

    fn index(&self, key_group: u32) -> usize {
        assert!(
            self.range.contains(key_group),
            "key group {key_group} is outside this subtask's key group range {}",
            self.range
        );
        (key_group - self.range.start) as usize
    }

    fn group(&self, key_group: u32) -> &FxHashMap<K, V> {
        let index = self.index(key_group);
        &self.groups[index]
    }

    /// The `Arc` of `key_group`'s map, not yet made unique.
    fn shared_group(&mut self, key_group: u32) -> &mut Arc<FxHashMap<K, V>> {
        let index = self.index(key_group);
        &mut self.groups[index]
    }
}

impl<K, V> KeyGroupedMap<K, V> {
    /// Whether the map at `index` is known to be unique (see `unique`).
    fn known_unique(&mut self, index: usize) -> bool {
        *self.unique[index].get_mut()
    }

    /// Every key group's `Arc` is about to be cloned (a fork, a clone).
    fn mark_shared(&self) {
        for unique in &self.unique {
            unique.store(false, Ordering::Relaxed);
        }
    }
}

/// The map `groups[index]`, for writing: copied first if a fork or clone shares it. No
/// atomic operation once `unique[index]` says it is unique (see
/// `KeyGroupedMap::unique`). Takes the fields, so the caller can still use the others.
fn unique_group<'a, K: Clone, V: Clone>(
    groups: &'a mut [Arc<FxHashMap<K, V>>],
    unique: &mut [AtomicBool],
    index: usize,
) -> &'a mut FxHashMap<K, V> {
    if *unique[index].get_mut() {
        let map = Arc::as_ptr(&groups[index]).cast_mut();
        // SAFETY: `unique[index]` is true only between an `Arc::make_mut` on this `Arc`,
        // which left it the only reference to its map, and the next `fork` or `clone`,
        // the only code that clones these `Arc`s (and it clears the flag first); no
        // `Weak` is made. So no other reference to the map exists, and the `&'a mut` of
        // `groups` keeps this one exclusive for `'a`.
        return unsafe { &mut *map };
    }
    *unique[index].get_mut() = true;
    Arc::make_mut(&mut groups[index])
}

impl<K: Hash + Eq + Clone, V: Clone> KeyGroupedMap<K, V> {
    /// The value of `key` in `key_group`, mutably. Copies the key group's map if a fork
    /// shares it and `key` is present.
    ///
    /// With a changelog, the log cannot see what the caller writes through the reference:
    /// it is marked incomplete. Use [`update`](Self::update) to keep it complete.
    pub fn get_mut(&mut self, key_group: u32, key: &K) -> Option<&mut V> {
        self.log_unseen_change();
        let group = self.shared_group(key_group);
        if is_shared(group) && !group.contains_key(key) {
            return None;
        }
        Arc::make_mut(group).get_mut(key)
    }

    /// [`get_mut`](Self::get_mut) for a caller that logs the key itself: the changelog
    /// is not marked incomplete, and the caller must call [`log_key`](Self::log_key) for
    /// `key` once its changes are done (before the next checkpoint).
    pub fn get_mut_untracked(&mut self, key_group: u32, key: &K) -> Option<&mut V> {
        let group = self.shared_group(key_group);
        if is_shared(group) && !group.contains_key(key) {
            return None;
        }
        Arc::make_mut(group).get_mut(key)
    }

    /// With a changelog, marks `key` so that the next [`take_changelog`](Self::take_changelog)
    /// logs its value as it is then (or its removal if it has none), for changes made
    /// through [`get_mut_untracked`](Self::get_mut_untracked) or
    /// [`insert_untracked`](Self::insert_untracked). Marking is a set lookup: a value
    /// changed many times between two takes is cloned once, at the take.
    pub fn log_key(&mut self, key_group: u32, key: &K) {
        if self.log.is_some() {
            let index = self.index(key_group);
            let marked = &mut self.marked[index];
            if !marked.contains(key) {
                marked.insert(key.clone());
            }
        }
    }

    /// Sets the value of `key` in `key_group` without logging it, returning the
    /// previous value: the caller calls [`log_key`](Self::log_key) for `key` (before
    /// the next take). Copies the key group's map if a fork shares it.
    pub fn insert_untracked(&mut self, key_group: u32, key: K, value: V) -> Option<V> {
        self.group_mut(key_group).insert(key, value)
    }

    /// Sets the value of `key` in `key_group`, returning the previous value. Copies the
    /// key group's map if a fork shares it.
    pub fn insert(&mut self, key_group: u32, key: K, value: V) -> Option<V> {
        if self.log.is_some() {
            self.log_change(key_group, key.clone(), Some(value.clone()));
        }
        self.group_mut(key_group).insert(key, value)
    }

    /// Sets `key` in `key_group` to `value` if it has no value, else applies `f` to its
    /// value in place; returns the value it ends with. One hash lookup either way (an
    /// `update` that misses and an `insert` take two). Copies the key group's map if a
    /// fork shares it. With a changelog, logs the new value.
    pub fn upsert(&mut self, key_group: u32, key: K, value: V, f: impl FnOnce(&mut V, V)) -> &V {
        let index = self.index(key_group);
        let group = unique_group(&mut self.groups, &mut self.unique, index);
        let map_len = group.len();
        let logged_key = self.log.is_some().then(|| key.clone());
        let slot = match group.entry(key) {
            Entry::Occupied(entry) => {
                let slot = entry.into_mut();
                f(slot, value);
                slot
            }
            Entry::Vacant(entry) => entry.insert(value),
        };
        if let (Some(log), Some(key)) = (&mut self.log, logged_key) {
            log.push(index, map_len, key, Some(slot.clone()));
        }
        slot
    }

    /// Applies `f` to the value of `key` in place and returns what it returns, or `None`
    /// (and does not call `f`) if `key` has no value. Copies the key group's map if a fork
    /// shares it and `key` is present. With a changelog, logs the new value.
    pub fn update<R>(&mut self, key_group: u32, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let index = self.index(key_group);
        if !self.known_unique(index) {
            let group = &mut self.groups[index];
            if is_shared(group) && !group.contains_key(key) {
                return None;
            }
        }
        let group = unique_group(&mut self.groups, &mut self.unique, index);
        let map_len = group.len();
        let value = group.get_mut(key)?;
        let result = f(value);
        if let Some(log) = &mut self.log {
            log.push(index, map_len, key.clone(), Some(value.clone()));
        }
        Some(result)
    }

    /// Removes `key` from `key_group`, returning its value. Copies the key group's map if
    /// a fork shares it and `key` is present.
    pub fn remove(&mut self, key_group: u32, key: &K) -> Option<V> {
        let group = self.shared_group(key_group);
        if is_shared(group) && !group.contains_key(key) {
            return None;
        }
        let removed = Arc::make_mut(group).remove(key);
        if removed.is_some() && self.log.is_some() {
            self.log_change(key_group, key.clone(), None);
        }
        removed
    }

    /// The entry of `key` in `key_group`, for in-place insert-or-update. Copies the key
    /// group's map if a fork shares it.
    ///
    /// With a changelog, the log cannot see what the caller writes through the entry: it
    /// is marked incomplete.
    pub fn entry(&mut self, key_group: u32, key: K) -> Entry<'_, K, V> {
        self.log_unseen_change();
        self.group_mut(key_group).entry(key)
    }

    /// Removes every entry, keeping the allocations of the key groups no fork shares;
    /// a shared key group gets a new empty map (nothing is copied).
    ///
    /// With a changelog, marks it incomplete.
    pub fn clear(&mut self) {
        self.log_unseen_change();
        for group in &mut self.groups {
            if group.is_empty() {
                continue;
            }
            match Arc::get_mut(group) {
                Some(group) => group.clear(),
                None => *group = Arc::default(),
            }
        }
    }

    fn group_mut(&mut self, key_group: u32) -> &mut FxHashMap<K, V> {
        let index = self.index(key_group);
        unique_group(&mut self.groups, &mut self.unique, index)
    }

    /// Starts logging changes (see [`Changelog`]); the log starts empty and complete, so
    /// it holds the changes made after this call. Does nothing if a log is kept already.
    pub fn enable_changelog(&mut self) {
        if self.log.is_none() {
            self.log = Some(Box::new(Changelog::new(self.groups.len())));
            self.marked = self.groups.iter().map(|_| FxHashSet::default()).collect();
        }
    }

    /// Whether changes are logged.
    pub fn has_changelog(&self) -> bool {
        self.log.is_some()
    }

    /// The changes since the last take (or since the log was enabled), and a new empty,
    /// complete log. `None` without a changelog. O(key groups).
    ///
    /// Each key group's new log starts with the capacity the taken one ended with, so a
    /// steady write rate does not grow (and copy) the logs again at every checkpoint; or
    /// as the recycled log it is, when there is one.
    pub fn take_changelog(&mut self) -> Option<Changelog<K, V>> {
        let log = self.log.as_mut()?;
        // Marked keys go last: their values now are the newest change.
        for (index, marked) in self.marked.iter_mut().enumerate() {
            let map_len = self.groups[index].len();
            for key in marked.drain() {
                let value = self.groups[index].get(&key).cloned();
                log.push(index, map_len, key, value);
            }
        }
        let groups = if self.spare_log.len() == log.groups.len() {
            // As it is: growing an empty recycled log here would make the
            // allocator copy its whole old capacity, inside the checkpoint's
            // synchronous part (p99 of that pause went from 0.4 to 56 ms).
            // A log that outgrows it grows while the task runs.
            std::mem::take(&mut self.spare_log)
        } else {
            log.groups
                .iter()
                .map(|g| Vec::with_capacity(g.len()))
                .collect()
        };
        let fresh = Changelog {
            groups,
            complete: true,
            entries: 0,
        };
        Some(std::mem::replace(&mut **log, fresh))
    }

    /// Hands back a log an earlier [`take_changelog`](Self::take_changelog) returned,
    /// once it is written: the next take starts its logs in that memory. Fresh memory
    /// costs a page fault per page (per huge page with `alloc::HugePageAlloc`) and the
    /// kernel's zeroing; with new logs at every checkpoint, 15% of the page faults of
    /// the checkpoint bench's incremental run were in appending to them. A log of
    /// another map (another number of key groups) is dropped.
    pub fn recycle_changelog(&mut self, mut log: Changelog<K, V>) {
        if log.groups.len() == self.groups.len() {
            log.groups.iter_mut().for_each(Vec::clear);
            self.spare_log = log.groups;
        }
    }

    fn log_unseen_change(&mut self) {
        if let Some(log) = &mut self.log {
            log.complete = false;
        }
    }

    fn log_change(&mut self, key_group: u32, key: K, value: Option<V>) {
        let index = self.index(key_group);
        let map_len = self.groups[index].len();
        if let Some(log) = &mut self.log {
            log.push(index, map_len, key, value);
        }
    }
}

impl<K: Hash + Eq + Clone, V> Changelog<K, V> {
    /// Logs one change of the key group at `index`, whose map holds `map_len` entries.
    /// Inlined into the state's per-record writes; the rare compaction is not.
    #[inline]
    fn push(&mut self, index: usize, map_len: usize, key: K, value: Option<V>) {
        let group_log = &mut self.groups[index];
        group_log.push((key, value));
        self.entries += 1;
        if group_log.len() > COMPACT_FACTOR * map_len + COMPACT_SLACK {
            self.compact_group(index);
        }
    }

    #[cold]
    #[inline(never)]
    fn compact_group(&mut self, index: usize) {
        let group_log = &mut self.groups[index];
        let before = group_log.len();
        compact(group_log);
        self.entries -= before - group_log.len();
    }
}

/// Keeps only the last change of each key, in their order.
fn compact<K: Hash + Eq + Clone, V>(log: &mut Vec<(K, Option<V>)>) {
    let mut seen = rustc_hash::FxHashSet::default();
    let mut kept: Vec<(K, Option<V>)> = Vec::with_capacity(log.len() / 2);
    for (key, value) in log.drain(..).rev() {
        if seen.insert(key.clone()) {
            kept.push((key, value));
        }
    }
    kept.reverse();
    *log = kept;
}

fn not_unique(key_groups: usize) -> Vec<AtomicBool> {
    (0..key_groups).map(|_| AtomicBool::new(false)).collect()
}

/// Whether another `Arc` (a fork's, a clone's) holds this key group's map, so that
/// writing it would copy it.
fn is_shared<T>(group: &mut Arc<T>) -> bool {
    Arc::get_mut(group).is_none()
}

/// A frozen view of a [`KeyGroupedMap`] at the moment of [`KeyGroupedMap::fork`]: what a
/// checkpoint writes. It shares the key groups' maps with the map (and copies none);
/// `Send` when `K` and `V` are `Send + Sync`, so it can go to a writer thread.
///
/// [`release`](Self::release) drops the fork's share of one key group once it is written,
/// so the task's next write to that key group does not copy it. A released key group is
/// gone from the fork: reading it ([`key_group`](Self::key_group),
/// [`key_group_len`](Self::key_group_len)) panics, as reading a key group outside the
/// range does; [`len`](Self::len) still counts it.
#[derive(Debug)]
pub struct KeyGroupedFork<K, V> {
    range: KeyGroupRange,
    max_parallelism: u32,
    /// Entries over all key groups at the fork, released ones included.
    len: usize,
    /// `None` once released.
    groups: Vec<Option<Arc<FxHashMap<K, V>>>>,
}

impl<K, V> KeyGroupedFork<K, V> {
    /// The key groups of the forked map.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The total number of key groups of the job's keyed state.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The number of entries over all key groups at the time of the fork (released key
    /// groups included). O(1).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map was empty at the time of the fork.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of entries in one key group.
    ///
    /// Panics if `key_group` is outside the range or released.
    pub fn key_group_len(&self, key_group: u32) -> usize {
        self.group(key_group).len()
    }

    /// One key group's entries, in unspecified order.
    ///
    /// Panics if `key_group` is outside the range or released.
    pub fn key_group(&self, key_group: u32) -> impl Iterator<Item = (&K, &V)> {
        self.group(key_group).iter()
    }

    /// Whether [`release`](Self::release) has dropped `key_group`.
    ///
    /// Panics if `key_group` is outside the range.
    pub fn is_released(&self, key_group: u32) -> bool {
        self.groups[self.index(key_group)].is_none()
    }

    /// Drops the fork's share of `key_group` (typically right after its section is
    /// written), so the map's next write to that key group does not copy it. Releasing a
    /// released key group does nothing.
    ///
    /// Panics if `key_group` is outside the range.
    pub fn release(&mut self, key_group: u32) {
        let index = self.index(key_group);
        self.groups[index] = None;
    }

    fn index(&self, key_group: u32) -> usize {
        assert!(
            self.range.contains(key_group),
            "key group {key_group} is outside the forked key group range {}",
            self.range
        );
        (key_group - self.range.start) as usize
    }

    fn group(&self, key_group: u32) -> &FxHashMap<K, V> {
        match &self.groups[self.index(key_group)] {
            Some(group) => group,
            None => panic!("key group {key_group} of this fork was released and cannot be read"),
        }
    }
}

fn assert_range_fits(range: KeyGroupRange, max_parallelism: u32) {
    // Parallelism 1 always passes its own check, so this validates the max parallelism.
    if let Err(error) = check_parallelism(max_parallelism, 1) {
        panic!("invalid max parallelism for keyed state: {error}");
    }
    assert!(
        range.is_empty() || range.end < max_parallelism,
        "key group range {range} reaches past max parallelism {max_parallelism}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_group::assign_to_key_group;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn map_basics() {
        let range = KeyGroupRange::for_operator(128, 3, 1); // [43, 85]
        let mut map = KeyGroupedMap::<String, u64>::new(range, 128);
        assert!(map.is_empty());
        assert_eq!(map.insert(43, "a".into(), 1), None);
        assert_eq!(map.insert(43, "a".into(), 2), Some(1));
        assert_eq!(map.insert(85, "b".into(), 3), None);
        *map.entry(60, "c".into()).or_insert(0) += 10;
        *map.entry(60, "c".into()).or_insert(0) += 10;
        assert_eq!(map.get(60, &"c".into()), Some(&20));
        // The same key in another key group is another entry.
        assert_eq!(map.get(44, &"a".into()), None);
        *map.get_mut(85, &"b".into()).unwrap() += 1;
        assert_eq!(map.len(), 3);
        assert_eq!(map.key_group_len(43), 1);
        let all: Vec<(u32, String, u64)> =
            map.iter().map(|(kg, k, v)| (kg, k.clone(), *v)).collect();
        assert_eq!(
            all,
            vec![
                (43, "a".into(), 2),
                (60, "c".into(), 20),
                (85, "b".into(), 4)
            ]
        );
        assert_eq!(map.remove(43, &"a".into()), Some(2));
        assert_eq!(map.key_group(43).count(), 0);
        map.clear();
        assert!(map.is_empty());
    }

    #[test]
    #[should_panic(expected = "key group 42 is outside this subtask's key group range [43, 85]")]
    fn map_rejects_key_group_below_range() {
        let map = KeyGroupedMap::<u32, u32>::new(KeyGroupRange::new(43, 85), 128);
        map.get(42, &0);
    }

    #[test]
    #[should_panic(expected = "key group 86 is outside this subtask's key group range [43, 85]")]
    fn map_rejects_key_group_above_range() {
        let mut map = KeyGroupedMap::<u32, u32>::new(KeyGroupRange::new(43, 85), 128);
        map.insert(86, 0, 0);
    }

    #[test]
    #[should_panic(expected = "key group range [0, 128] reaches past max parallelism 128")]
    fn map_rejects_range_past_max_parallelism() {
        KeyGroupedMap::<u32, u32>::new(KeyGroupRange::new(0, 128), 128);
    }

    #[test]
    fn empty_range_map_holds_nothing() {
        let map = KeyGroupedMap::<u32, u32>::new(KeyGroupRange::EMPTY, 128);
        assert!(map.is_empty());
        assert_eq!(map.iter().count(), 0);
    }

    /// Pointers to each key group's map, to tell a shared map from a copy.
    fn group_ptrs<K, V>(map: &KeyGroupedMap<K, V>) -> Vec<*const FxHashMap<K, V>> {
        map.groups.iter().map(Arc::as_ptr).collect()
    }

    #[test]
    fn fork_is_frozen_and_shares_unmutated_key_groups() {
        let range = KeyGroupRange::new(10, 13);
        let mut map = KeyGroupedMap::<String, u64>::new(range, 16);
        map.insert(10, "a".into(), 1);
        map.insert(11, "b".into(), 2);
        map.insert(12, "c".into(), 3);
        let before = group_ptrs(&map);

        let fork = map.fork();
        assert_eq!(fork.key_group_range(), range);
        assert_eq!(fork.max_parallelism(), 16);
        assert_eq!(fork.len(), 3);
        // Forking copies nothing: the fork holds the map's own key group maps.
        for (index, group) in map.groups.iter().enumerate() {
            assert!(Arc::ptr_eq(group, fork.groups[index].as_ref().unwrap()));
            assert_eq!(Arc::strong_count(group), 2);
        }

        // Mutations of the map do not show in the fork.
        map.insert(10, "a".into(), 100);
        *map.get_mut(11, &"b".into()).unwrap() += 1;
        *map.entry(13, "d".into()).or_insert(0) += 4;
        assert_eq!(map.get(10, &"a".into()), Some(&100));
        assert_eq!(map.get(11, &"b".into()), Some(&3));
        let in_fork = |kg: u32| {
            let mut entries: Vec<(String, u64)> =
                fork.key_group(kg).map(|(k, v)| (k.clone(), *v)).collect();
            entries.sort();
            entries
        };
        assert_eq!(in_fork(10), [("a".to_owned(), 1)]);
        assert_eq!(in_fork(11), [("b".to_owned(), 2)]);
        assert_eq!(in_fork(12), [("c".to_owned(), 3)]);
        assert_eq!(in_fork(13), []);
        assert_eq!(fork.key_group_len(13), 0);
        assert_eq!(fork.len(), 3);

        // Exactly the mutated key groups were copied; key group 12 is still shared.
        let after = group_ptrs(&map);
        assert_ne!(after[0], before[0]);
        assert_ne!(after[1], before[1]);
        assert_eq!(after[2], before[2]);
        assert_ne!(after[3], before[3]);
        assert!(Arc::ptr_eq(
            &map.groups[2],
            fork.groups[2].as_ref().unwrap()
        ));
        assert_eq!(Arc::strong_count(&map.groups[2]), 2);
        assert_eq!(Arc::strong_count(&map.groups[0]), 1);

        // A miss through get_mut or remove copies nothing.
        assert_eq!(map.get_mut(12, &"zz".into()), None);
        assert_eq!(map.remove(12, &"zz".into()), None);
        assert_eq!(group_ptrs(&map)[2], before[2]);

        // Dropping the fork leaves the map the only owner of every key group.
        drop(fork);
        assert!(map.groups.iter().all(|group| Arc::strong_count(group) == 1));
    }

    #[test]
    fn a_fork_of_some_key_groups_shares_only_those() {
        let mut map = KeyGroupedMap::<u64, u64>::new(KeyGroupRange::new(10, 13), 16);
        for key_group in 10..=13 {
            map.insert(key_group, u64::from(key_group), 1);
        }
        let slice = KeyGroupRange::new(11, 12);
        let fork = map.fork_key_groups(slice);
        assert_eq!((fork.key_group_range(), fork.len()), (slice, 2));
        assert!(fork.key_group(11).eq([(&11, &1)]));
        let before = group_ptrs(&map);
        for key_group in 10..=13 {
            map.insert(key_group, u64::from(key_group), 2);
        }
        // Only the forked key groups were copied by the writes after the fork.
        let after = group_ptrs(&map);
        let copied: Vec<bool> = before.iter().zip(&after).map(|(b, a)| b != a).collect();
        assert_eq!(copied, [false, true, true, false]);
        assert!(fork.key_group(12).eq([(&12, &1)]));
        assert_eq!(map.fork_key_groups(KeyGroupRange::EMPTY).len(), 0);
    }

    #[test]
    fn a_released_key_group_is_not_copied_on_write() {
        let range = KeyGroupRange::new(0, 1);
        let mut map = KeyGroupedMap::<u64, u64>::new(range, 2);
        map.insert(0, 1, 1);
        map.insert(1, 2, 2);
        let mut fork = map.fork();
        let before = group_ptrs(&map);

        assert!(!fork.is_released(0));
        fork.release(0);
        fork.release(0); // Releasing twice is fine.
        assert!(fork.is_released(0));
        assert_eq!(Arc::strong_count(&map.groups[0]), 1);
        map.insert(0, 3, 3);
        *map.get_mut(0, &1).unwrap() = 10;
        map.remove(0, &1);
        assert_eq!(
            group_ptrs(&map)[0],
            before[0],
            "a released key group was copied"
        );
        // The unreleased one still copies on write and stays frozen in the fork.
        map.insert(1, 4, 4);
        assert_ne!(group_ptrs(&map)[1], before[1]);
        assert_eq!(fork.key_group(1).collect::<Vec<_>>(), [(&2, &2)]);
        assert_eq!(fork.len(), 2);
    }

    #[test]
    #[should_panic(expected = "key group 0 of this fork was released and cannot be read")]
    fn reading_a_released_key_group_panics() {
        let map = KeyGroupedMap::<u64, u64>::new(KeyGroupRange::new(0, 1), 2);
        let mut fork = map.fork();
        fork.release(0);
        let _ = fork.key_group(0).count();
    }

    #[test]
    #[should_panic(expected = "key group 2 is outside the forked key group range [0, 1]")]
    fn a_fork_rejects_key_groups_outside_its_range() {
        let map = KeyGroupedMap::<u64, u64>::new(KeyGroupRange::new(0, 1), 4);
        map.fork().key_group_len(2);
    }

    #[test]
    fn clear_replaces_shared_key_groups_without_copying() {
        let range = KeyGroupRange::new(0, 2);
        let mut map = KeyGroupedMap::<u64, u64>::new(range, 3);
        map.insert(0, 1, 1);
        map.insert(1, 2, 2);
        let mut fork = map.fork();
        fork.release(1);
        let before = group_ptrs(&map);
        map.clear();
        assert!(map.is_empty());
        let after = group_ptrs(&map);
        // Key group 0 is shared: replaced by a fresh empty map; the fork keeps its entry.
        assert_ne!(after[0], before[0]);
        assert_eq!(fork.key_group(0).collect::<Vec<_>>(), [(&1, &1)]);
        // Key group 1 was released: cleared in place. Key group 2 is shared but empty:
        // left alone.
        assert_eq!(after[1], before[1]);
        assert_eq!(after[2], before[2]);
        assert!(map.groups.iter().all(|group| group.is_empty()));
    }

    #[test]
    fn clone_shares_key_groups_until_written() {
        #[derive(Debug, PartialEq)]
        struct NotClone(u64);
        let mut map = KeyGroupedMap::<u64, NotClone>::from_key_groups(
            KeyGroupRange::new(0, 1),
            2,
            [
                FxHashMap::from_iter([(1, NotClone(1))]),
                FxHashMap::default(),
            ],
        );
        // Clone needs no `Clone` bounds on the entries.
        let copy = map.clone();
        assert_eq!(copy.get(0, &1), Some(&NotClone(1)));
        assert_eq!(group_ptrs(&copy), group_ptrs(&map));
        assert_eq!(format!("{:?}", map.fork().len()), "1");
        // Without the clone, nothing is shared and the map can be read as before.
        drop(copy);
        assert_eq!(map.len(), 1);
        map.groups.iter_mut().for_each(|g| assert!(!is_shared(g)));
    }

    #[test]
    #[should_panic(expected = "1 key group maps for the 2 key groups of [0, 1]")]
    fn from_key_groups_needs_one_map_per_key_group() {
        KeyGroupedMap::<u64, u64>::from_key_groups(
            KeyGroupRange::new(0, 1),
            2,
            [FxHashMap::default()],
        );
    }

    #[test]
    fn a_fork_can_go_to_a_writer_thread() {
        fn send<T: Send>() {}
        send::<KeyGroupedFork<String, u64>>();
        send::<KeyGroupedFork<u64, Vec<(u64, String)>>>();

        let mut map = KeyGroupedMap::<u64, String>::new(KeyGroupRange::new(0, 3), 4);
        for key in 0..100u64 {
            map.insert((key % 4) as u32, key, key.to_string());
        }
        let mut fork = map.fork();
        let writer = std::thread::spawn(move || {
            let mut seen = 0;
            for kg in fork.key_group_range() {
                seen += fork.key_group(kg).count();
                fork.release(kg);
            }
            seen
        });
        for key in 0..100u64 {
            map.insert((key % 4) as u32, key, String::new());
        }
        assert_eq!(writer.join().unwrap(), 100);
        assert!(map.key_group(0).all(|(_, v)| v.is_empty()));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, i64),
        Remove(usize),
        Get(usize),
        AddViaGetMut(usize, i64),
        AddViaEntry(usize, i64),
        AddViaUpsert(usize, i64),
        AddViaUpdate(usize, i64),
        /// Clone the map; the clone must keep its own model, whatever the map does.
        Clone,
        /// Insert into the latest clone (and its model).
        InsertIntoClone(usize, i64),
        /// Fork the map; the fork must keep showing the model as it is now.
        Fork,
        /// Release the key group of a key in the latest fork.
        Release(usize),
        Clear,
    }

    fn op(keys: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..keys, any::<i64>()).prop_map(|(k, v)| Op::Insert(k, v)),
            4 => (0..keys).prop_map(Op::Remove),
            4 => (0..keys).prop_map(Op::Get),
            4 => (0..keys, -100i64..100).prop_map(|(k, d)| Op::AddViaGetMut(k, d)),
            4 => (0..keys, -100i64..100).prop_map(|(k, d)| Op::AddViaEntry(k, d)),
            4 => (0..keys, -100i64..100).prop_map(|(k, d)| Op::AddViaUpsert(k, d)),
            4 => (0..keys, -100i64..100).prop_map(|(k, d)| Op::AddViaUpdate(k, d)),
            1 => Just(Op::Clone),
            2 => (0..keys, any::<i64>()).prop_map(|(k, v)| Op::InsertIntoClone(k, v)),
            1 => Just(Op::Fork),
            2 => (0..keys).prop_map(Op::Release),
            1 => Just(Op::Clear),
        ]
    }

    /// Checks a fork against the model of the map at the time of the fork, key group by
    /// key group, skipping released key groups.
    fn check_fork(
        fork: &KeyGroupedFork<u64, i64>,
        model: &HashMap<u64, i64>,
        kg: impl Fn(u64) -> u32,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(fork.len(), model.len());
        prop_assert_eq!(fork.is_empty(), model.is_empty());
        for group in fork.key_group_range() {
            if fork.is_released(group) {
                continue;
            }
            let mut ours: Vec<(u64, i64)> = fork.key_group(group).map(|(k, v)| (*k, *v)).collect();
            ours.sort_unstable();
            let mut want: Vec<(u64, i64)> = model
                .iter()
                .filter(|(k, _)| kg(**k) == group)
                .map(|(k, v)| (*k, *v))
                .collect();
            want.sort_unstable();
            prop_assert_eq!(fork.key_group_len(group), want.len());
            prop_assert_eq!(ours, want);
        }
        Ok(())
    }

    /// A subtask (max parallelism, parallelism, index) and a pool of keys it owns.
    fn subtask_and_keys() -> impl Strategy<Value = (u32, u32, u32)> {
        (1u32..=512)
            .prop_flat_map(|m| (Just(m), 1..=m))
            .prop_flat_map(|(m, p)| (Just(m), Just(p), 0..p))
    }

    /// The first `count` keys (scanning 0, 1, 2, ...) whose key group is in `range`.
    fn keys_in(range: KeyGroupRange, max_parallelism: u32, count: usize) -> Vec<u64> {
        (0u64..)
            .filter(|key| range.contains(assign_to_key_group(key, max_parallelism)))
            .take(count)
            .collect()
    }

    const KEY_POOL_LEN: usize = 24;

    proptest! {
        #[test]
        fn map_matches_hash_map_model(
            (max_p, p, index) in subtask_and_keys(),
            ops in prop::collection::vec(op(KEY_POOL_LEN), 0..200),
        ) {
            let range = KeyGroupRange::for_operator(max_p, p, index);
            let keys = keys_in(range, max_p, KEY_POOL_LEN);
            let kg = |key: u64| assign_to_key_group(&key, max_p);
            let mut map = KeyGroupedMap::<u64, i64>::new(range, max_p);
            let mut model = HashMap::<u64, i64>::new();
            let mut forks: Vec<(KeyGroupedFork<u64, i64>, HashMap<u64, i64>)> = Vec::new();
            let mut clones: Vec<(KeyGroupedMap<u64, i64>, HashMap<u64, i64>)> = Vec::new();

            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let key = keys[k];
                        prop_assert_eq!(map.insert(kg(key), key, v), model.insert(key, v));
                    }
                    Op::Remove(k) => {
                        let key = keys[k];
                        prop_assert_eq!(map.remove(kg(key), &key), model.remove(&key));
                    }
                    Op::Get(k) => {
                        let key = keys[k];
                        prop_assert_eq!(map.get(kg(key), &key), model.get(&key));
                        prop_assert_eq!(map.contains_key(kg(key), &key), model.contains_key(&key));
                    }
                    Op::AddViaGetMut(k, d) => {
                        let key = keys[k];
                        let ours = map.get_mut(kg(key), &key).map(|v| { *v = v.wrapping_add(d); *v });
                        let theirs = model.get_mut(&key).map(|v| { *v = v.wrapping_add(d); *v });
                        prop_assert_eq!(ours, theirs);
                    }
                    Op::AddViaEntry(k, d) => {
                        let key = keys[k];
                        let ours = map.entry(kg(key), key).or_insert(0);
                        *ours = ours.wrapping_add(d);
                        let theirs = model.entry(key).or_insert(0);
                        *theirs = theirs.wrapping_add(d);
                        prop_assert_eq!(*ours, *theirs);
                    }
                    Op::AddViaUpsert(k, d) => {
                        let key = keys[k];
                        let ours = *map.upsert(kg(key), key, d, |v, d| *v = v.wrapping_add(d));
                        let theirs = model.entry(key).and_modify(|v| *v = v.wrapping_add(d)).or_insert(d);
                        prop_assert_eq!(ours, *theirs);
                    }
                    Op::AddViaUpdate(k, d) => {
                        let key = keys[k];
                        let ours = map.update(kg(key), &key, |v| { *v = v.wrapping_add(d); *v });
                        let theirs = model.get_mut(&key).map(|v| { *v = v.wrapping_add(d); *v });
                        prop_assert_eq!(ours, theirs);
                    }
                    Op::Clone => clones.push((map.clone(), model.clone())),
                    Op::InsertIntoClone(k, v) => {
                        if let Some((clone, then)) = clones.last_mut() {
                            let key = keys[k];
                            prop_assert_eq!(clone.insert(kg(key), key, v), then.insert(key, v));
                        }
                    }
                    Op::Fork => forks.push((map.fork(), model.clone())),
                    Op::Release(k) => {
                        if let Some((fork, _)) = forks.last_mut() {
                            fork.release(kg(keys[k]));
                        }
                    }
                    Op::Clear => {
                        map.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                prop_assert_eq!(map.is_empty(), model.is_empty());
            }

            let mut ours: Vec<(u32, u64, i64)> = map.iter().map(|(g, k, v)| (g, *k, *v)).collect();
            let mut theirs: Vec<(u32, u64, i64)> = model.iter().map(|(k, v)| (kg(*k), *k, *v)).collect();
            // iter() yields key groups ascending.
            prop_assert!(ours.windows(2).all(|w| w[0].0 <= w[1].0));
            ours.sort_unstable();
            theirs.sort_unstable();
            prop_assert_eq!(&ours, &theirs);

            for group in range.iter() {
                let mut in_group: Vec<(u64, i64)> = map.key_group(group).map(|(k, v)| (*k, *v)).collect();
                in_group.sort_unstable();
                let want: Vec<(u64, i64)> =
                    theirs.iter().filter(|e| e.0 == group).map(|e| (e.1, e.2)).collect();
                prop_assert_eq!(map.key_group_len(group), want.len());
                prop_assert_eq!(in_group, want);
            }

            // Every fork still shows the map as it was when forked.
            for (fork, then) in &forks {
                check_fork(fork, then, kg)?;
            }
            // Every clone shows its own history, not the map's.
            for (clone, then) in &clones {
                let mut ours: Vec<(u64, i64)> = clone.iter().map(|(_, k, v)| (*k, *v)).collect();
                let mut want: Vec<(u64, i64)> = then.iter().map(|(k, v)| (*k, *v)).collect();
                ours.sort_unstable();
                want.sort_unstable();
                prop_assert_eq!(ours, want);
            }
            drop(clones);
            // Once every fork is gone, no key group is shared any more.
            drop(forks);
            prop_assert!(map.groups.iter().all(|group| Arc::strong_count(group) == 1));
        }
    }

    /// Replays one taken log over a copy of the map taken at the previous take.
    fn replay(base: &mut HashMap<u64, i64>, log: &Changelog<u64, i64>) {
        for group in &log.groups {
            for (key, value) in group {
                match value {
                    Some(value) => base.insert(*key, *value),
                    None => base.remove(key),
                };
            }
        }
    }

    proptest! {
        /// The changelog holds every change made through `insert`, `update`, `upsert`
        /// and `remove`, and the values of keys marked with `log_key`: replaying each take over the map as it was at the previous take
        /// gives the map as it is, also after compaction (few keys, many writes), while
        /// forks share key groups, and in recycled logs. `get_mut` marks it incomplete.
        #[test]
        fn changelog_replays_to_the_map(
            ops in proptest::collection::vec((0u8..=200, 0usize..6, -50i64..50), 1..1500),
            unseen in any::<bool>(),
        ) {
            let range = KeyGroupRange::new(3, 9);
            let kg = |key: u64| assign_to_key_group(&key, 16);
            // Two key groups: logs grow long enough between takes to be compacted.
            let keys: Vec<u64> = (0..2000u64).filter(|k| kg(*k) == 4).take(3)
                .chain((0..2000u64).filter(|k| kg(*k) == 7).take(3)).collect();
            prop_assume!(keys.len() == 6);
            let mut map = KeyGroupedMap::<u64, i64>::new(range, 16);
            map.insert(kg(keys[0]), keys[0], 7); // before the log: in the base
            map.enable_changelog();
            let mut base: HashMap<u64, i64> = map.iter().map(|(_, k, v)| (*k, *v)).collect();
            let mut forks = Vec::new();
            for (op, k, d) in ops {
                let key = keys[k];
                // Takes are rare, so logs grow long enough to be compacted.
                match op {
                    0..=59 => { map.insert(kg(key), key, d); }
                    60..=119 => { map.update(kg(key), &key, |v| *v += d); }
                    120..=179 => {
                        let before = map.get(kg(key), &key).copied();
                        let after = *map.upsert(kg(key), key, d, |v, d| *v += d);
                        prop_assert_eq!(after, before.map_or(d, |b| b + d));
                    }
                    180..=193 => { map.remove(kg(key), &key); }
                    194..=195 => {
                        map.insert_untracked(kg(key), key, d);
                        map.log_key(kg(key), &key);
                    }
                    196 => {
                        if let Some(v) = map.get_mut_untracked(kg(key), &key) { *v -= d; }
                        map.log_key(kg(key), &key);
                    }
                    197..=198 => forks.push(map.fork()),
                    _ => {
                        let log = map.take_changelog().expect("enabled");
                        prop_assert!(log.complete);
                        prop_assert_eq!(log.entries, log.groups.iter().map(Vec::len).sum::<usize>());
                        // Compaction bounds each key group's log.
                        prop_assert!(log.groups.iter().all(|g| g.len() <= 2 * 6 + 64 + 1));
                        replay(&mut base, &log);
                        let now: HashMap<u64, i64> = map.iter().map(|(_, k, v)| (*k, *v)).collect();
                        prop_assert_eq!(&base, &now);
                        // Every other take, the written log's memory comes back
                        // for the next one, which must start empty all the same.
                        if d % 2 == 0 {
                            map.recycle_changelog(log);
                        }
                    }
                }
            }
            if unseen {
                if let Some(v) = map.get_mut(kg(keys[0]), &keys[0]) { *v += 1; }
                map.entry(kg(keys[1]), keys[1]).or_insert(1);
            }
            let log = map.take_changelog().expect("enabled");
            prop_assert!(log.groups.iter().all(|g| g.len() <= 2 * 6 + 64 + 1));
            prop_assert_eq!(log.complete, !unseen);
            if !unseen {
                replay(&mut base, &log);
                let now: HashMap<u64, i64> = map.iter().map(|(_, k, v)| (*k, *v)).collect();
                prop_assert_eq!(&base, &now);
            }
            prop_assert!(map.take_changelog().expect("enabled").complete);
            prop_assert!(map.clone().take_changelog().is_none());
        }
    }
}
