//! Keyed state of one subtask: [`KeyGroupedMap`] stores a state's entries in one hash map
//! per owned key group, so a snapshot can write (and a restore after rescaling can read)
//! whole key groups; [`KeyedStateBackend`] is the registry of a subtask's named states, so
//! snapshots can find them all.
//!
//! Both are `!Send` by construction (handles are `Rc<RefCell<..>>`): keyed state belongs
//! to the executor that runs the subtask and never crosses cores.
//!
//! A key group outside the subtask's range is a partitioning bug, not an operating error:
//! every access asserts it, in release builds too, with a message naming the key group
//! and the range.

use std::any::Any;
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;

use crate::error::StateError;
use crate::key_group::{assign_to_key_group, check_parallelism, KeyGroupRange};

/// Keyed state storage for one subtask, partitioned by key group: one hash map per owned
/// key group, at index `key_group - range.start`.
///
/// The caller passes each key's key group (computed once per record by the partitioner
/// with [`assign_to_key_group`]); the map trusts it and does not rehash the key.
#[derive(Debug, Clone)]
pub struct KeyGroupedMap<K, V> {
    range: KeyGroupRange,
    max_parallelism: u32,
    groups: Vec<FxHashMap<K, V>>,
}

impl<K: Hash + Eq, V> KeyGroupedMap<K, V> {
    /// An empty map for the key groups in `range`, out of `max_parallelism` key groups.
    ///
    /// Panics if `max_parallelism` is outside `1..=MAX_PARALLELISM_BOUND` or a non-empty
    /// `range` reaches past `max_parallelism - 1`.
    pub fn new(range: KeyGroupRange, max_parallelism: u32) -> Self {
        assert_range_fits(range, max_parallelism);
        let groups = range.iter().map(|_| FxHashMap::default()).collect();
        Self {
            range,
            max_parallelism,
            groups,
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

    /// The value of `key` in `key_group`, mutably.
    pub fn get_mut(&mut self, key_group: u32, key: &K) -> Option<&mut V> {
        self.group_mut(key_group).get_mut(key)
    }

    /// Whether `key` has a value in `key_group`.
    pub fn contains_key(&self, key_group: u32, key: &K) -> bool {
        self.group(key_group).contains_key(key)
    }

    /// Sets the value of `key` in `key_group`, returning the previous value.
    pub fn insert(&mut self, key_group: u32, key: K, value: V) -> Option<V> {
        self.group_mut(key_group).insert(key, value)
    }

    /// Removes `key` from `key_group`, returning its value.
    pub fn remove(&mut self, key_group: u32, key: &K) -> Option<V> {
        self.group_mut(key_group).remove(key)
    }

    /// The entry of `key` in `key_group`, for in-place insert-or-update.
    pub fn entry(&mut self, key_group: u32, key: K) -> Entry<'_, K, V> {
        self.group_mut(key_group).entry(key)
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

    /// Removes every entry, keeping the key groups' allocations.
    pub fn clear(&mut self) {
        self.groups.iter_mut().for_each(FxHashMap::clear);
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

    fn group_mut(&mut self, key_group: u32) -> &mut FxHashMap<K, V> {
        let index = self.index(key_group);
        &mut self.groups[index]
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

/// A value state: one optional value per key. Shared between the operator that uses it
/// and the [`KeyedStateBackend`] that snapshots it.
pub type ValueState<K, V> = Rc<RefCell<KeyGroupedMap<K, V>>>;

/// A subtask's keyed state backend: a registry of named states, so snapshots (later
/// issue) can find them all.
#[derive(Debug)]
pub struct KeyedStateBackend {
    range: KeyGroupRange,
    max_parallelism: u32,
    /// Name -> the state's handle (a `ValueState<K, V>`), type-erased.
    states: BTreeMap<String, Rc<dyn Any>>,
}

impl KeyedStateBackend {
    /// An empty backend for the key groups in `range`, out of `max_parallelism`.
    ///
    /// Panics under the same conditions as [`KeyGroupedMap::new`].
    pub fn new(range: KeyGroupRange, max_parallelism: u32) -> Self {
        assert_range_fits(range, max_parallelism);
        Self {
            range,
            max_parallelism,
            states: BTreeMap::new(),
        }
    }

    /// The key groups this subtask owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The total number of key groups of the job's keyed state.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The key group of `key` under this backend's max parallelism.
    pub fn key_group_of<K: Hash + ?Sized>(&self, key: &K) -> u32 {
        assign_to_key_group(key, self.max_parallelism)
    }

    /// Registers (or returns the existing) value state of this name. Every call with the
    /// same name and types returns a handle to the same map.
    ///
    /// Fails with [`StateError::TypeMismatch`] if the name is registered with other key or
    /// value types.
    pub fn value_state<K: Hash + Eq + 'static, V: 'static>(
        &mut self,
        name: &str,
    ) -> Result<ValueState<K, V>, StateError> {
        if let Some(existing) = self.states.get(name) {
            return Rc::clone(existing)
                .downcast::<RefCell<KeyGroupedMap<K, V>>>()
                .map_err(|_| StateError::TypeMismatch {
                    name: name.to_owned(),
                });
        }
        let state: ValueState<K, V> = Rc::new(RefCell::new(KeyGroupedMap::new(
            self.range,
            self.max_parallelism,
        )));
        self.states
            .insert(name.to_owned(), Rc::clone(&state) as Rc<dyn Any>);
        Ok(state)
    }

    /// The names of all registered states, sorted.
    pub fn state_names(&self) -> Vec<String> {
        self.states.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn backend_registers_and_shares_states() {
        let range = KeyGroupRange::for_operator(128, 2, 0);
        let mut backend = KeyedStateBackend::new(range, 128);
        assert_eq!(backend.key_group_range(), KeyGroupRange::new(0, 63));
        assert_eq!(backend.max_parallelism(), 128);

        let counts = backend.value_state::<u64, u64>("counts").unwrap();
        let again = backend.value_state::<u64, u64>("counts").unwrap();
        assert!(Rc::ptr_eq(&counts, &again));
        counts.borrow_mut().insert(5, 7, 1);
        assert_eq!(again.borrow().get(5, &7), Some(&1));
        assert_eq!(counts.borrow().key_group_range(), range);

        let _sums = backend.value_state::<String, f64>("sums").unwrap();
        assert_eq!(
            backend.state_names(),
            vec!["counts".to_owned(), "sums".to_owned()]
        );

        let err = backend.value_state::<u64, i64>("counts").unwrap_err();
        assert_eq!(
            err,
            StateError::TypeMismatch {
                name: "counts".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "state \"counts\" is already registered with other key or value types"
        );
        let err = backend.value_state::<u32, u64>("counts").unwrap_err();
        assert_eq!(
            err,
            StateError::TypeMismatch {
                name: "counts".into()
            }
        );
        // A failed lookup registers nothing.
        assert_eq!(backend.state_names().len(), 2);

        let key = 7u64;
        assert_eq!(backend.key_group_of(&key), assign_to_key_group(&key, 128));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, i64),
        Remove(usize),
        Get(usize),
        AddViaGetMut(usize, i64),
        AddViaEntry(usize, i64),
    }

    fn op(keys: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..keys, any::<i64>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0..keys).prop_map(Op::Remove),
            (0..keys).prop_map(Op::Get),
            (0..keys, -100i64..100).prop_map(|(k, d)| Op::AddViaGetMut(k, d)),
            (0..keys, -100i64..100).prop_map(|(k, d)| Op::AddViaEntry(k, d)),
        ]
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
        }
    }
}
