//! Named keyed state for keyed process functions: Flink's value, list, map,
//! reducing and aggregating states.
//!
//! A function holds a handle per state ([`ValueState`], [`ListState`],
//! [`MapState`], [`ReducingState`], [`AggregatingState`]), made with a name
//! when the function is built. Each subtask's copy registers its handles in
//! [`KeyedProcessFunction::open`](super::functions::KeyedProcessFunction::open)
//! with the subtask's [`KeyedStates`], and then reaches the current key's
//! state through the context: `ctx.list(&self.buffer).add(record)`.
//!
//! Every state is kept per key group, is part of the operator's snapshots
//! under its kind and name (`list:buffer`), is restored (and rescaled) by
//! key group, and takes part in incremental checkpoints: a changed key is
//! marked, and its value is logged once per checkpoint, not once per change.
//! A map state keeps one entry per (key, user key), so a `put` logs one
//! entry, not the key's whole map.
//!
//! Invariants: a view sees exactly the current key's state; a handle used
//! before it was registered, or registered twice, is an error that names it.

use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use rheon_net::codec::Codec;
use rheon_state::key_group::KeyGroupRange;
use rheon_state::keyed::KeyGroupedMap;
use rustc_hash::FxHashSet;

use crate::runtime::keyed_state::{MapIndex, NamedState, Store};

/// What keyed state's keys need: hashing into key groups, and a codec for
/// snapshots.
pub trait StateKey: Hash + Eq + Clone + Codec + Send + Sync + 'static {}
impl<T: Hash + Eq + Clone + Codec + Send + Sync + 'static> StateKey for T {}

/// What values in keyed state need: a codec for snapshots, `Clone` for
/// copy-on-write, `Send + Sync` for the snapshot writer.
pub trait StateValue: Clone + Codec + Send + Sync + 'static {}
impl<T: Clone + Codec + Send + Sync + 'static> StateValue for T {}

/// A state's name and, once registered, where the subtask keeps it.
#[derive(Clone, Debug)]
struct Handle {
    name: String,
    slot: Option<usize>,
}

impl Handle {
    fn new(name: impl Into<String>) -> Self {
        Handle {
            name: name.into(),
            slot: None,
        }
    }

    fn slot(&self) -> usize {
        match self.slot {
            Some(slot) => slot,
            None => panic!(
                "keyed state '{}' is used but was not registered: register it in \
                 KeyedProcessFunction::open",
                self.name
            ),
        }
    }
}

/// One optional value per key (Flink's `ValueState`).
pub struct ValueState<T> {
    handle: Handle,
    _value: PhantomData<fn() -> T>,
}

/// A list of values per key (Flink's `ListState`), appended to in place.
pub struct ListState<T> {
    handle: Handle,
    _value: PhantomData<fn() -> T>,
}

/// A map per key (Flink's `MapState`): one entry per (key, user key).
pub struct MapState<UK, UV> {
    handle: Handle,
    _entries: PhantomData<fn() -> (UK, UV)>,
}

/// The reduction of the values added for a key (Flink's `ReducingState`).
pub struct ReducingState<T> {
    handle: Handle,
    reduce: Arc<Reduce<T>>,
}

/// A reducing state's function: folds a value into the reduced one.
type Reduce<T> = dyn Fn(&mut T, T) + Send + Sync;

/// An accumulator per key that values are added to and a result is read
/// from (Flink's `AggregatingState`).
pub struct AggregatingState<A> {
    handle: Handle,
    function: A,
}

/// How an [`AggregatingState`] folds values into an accumulator and reads
/// its result (Flink's `AggregateFunction`).
pub trait AggregateFunction: Clone + Send + Sync + 'static {
    type In;
    /// What is kept per key, and checkpointed.
    type Acc: StateValue;
    type Out;
    fn create_accumulator(&self) -> Self::Acc;
    fn add(&self, value: Self::In, acc: &mut Self::Acc);
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
}

impl<T> ValueState<T> {
    pub fn new(name: impl Into<String>) -> Self {
        ValueState {
            handle: Handle::new(name),
            _value: PhantomData,
        }
    }
}

impl<T> ListState<T> {
    pub fn new(name: impl Into<String>) -> Self {
        ListState {
            handle: Handle::new(name),
            _value: PhantomData,
        }
    }
}

impl<UK, UV> MapState<UK, UV> {
    pub fn new(name: impl Into<String>) -> Self {
        MapState {
            handle: Handle::new(name),
            _entries: PhantomData,
        }
    }
}

impl<T> ReducingState<T> {
    /// `reduce(acc, value)` folds `value` into the key's reduced value.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(&mut T, T) + Send + Sync + 'static,
    ) -> Self {
        ReducingState {
            handle: Handle::new(name),
            reduce: Arc::new(reduce),
        }
    }
}

impl<A: AggregateFunction> AggregatingState<A> {
    pub fn new(name: impl Into<String>, function: A) -> Self {
        AggregatingState {
            handle: Handle::new(name),
            function,
        }
    }
}

// Manual `Clone`s: the derived ones would ask for `T: Clone`.
impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        ValueState {
            handle: self.handle.clone(),
            _value: PhantomData,
        }
    }
}

impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        ListState {
            handle: self.handle.clone(),
            _value: PhantomData,
        }
    }
}

impl<UK, UV> Clone for MapState<UK, UV> {
    fn clone(&self) -> Self {
        MapState {
            handle: self.handle.clone(),
            _entries: PhantomData,
        }
    }
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        ReducingState {
            handle: self.handle.clone(),
            reduce: Arc::clone(&self.reduce),
        }
    }
}

impl<A: Clone> Clone for AggregatingState<A> {
    fn clone(&self) -> Self {
        AggregatingState {
            handle: self.handle.clone(),
            function: self.function.clone(),
        }
    }
}

/// The named keyed states of one subtask of a keyed process function.
pub struct KeyedStates<K> {
    range: KeyGroupRange,
    max_parallelism: u32,
    pub(crate) stores: Vec<Box<dyn NamedState>>,
    _key: PhantomData<fn() -> K>,
}

impl<K: StateKey> KeyedStates<K> {
    pub(crate) fn new(range: KeyGroupRange, max_parallelism: u32) -> Self {
        KeyedStates {
            range,
            max_parallelism,
            stores: Vec::new(),
            _key: PhantomData,
        }
    }

    pub fn value<T: StateValue>(&mut self, state: &mut ValueState<T>) -> Result<(), String> {
        self.add::<K, T, ()>(&mut state.handle, "value", ())
    }

    pub fn list<T: StateValue>(&mut self, state: &mut ListState<T>) -> Result<(), String> {
        self.add::<K, Vec<T>, ()>(&mut state.handle, "list", ())
    }

    pub fn map<UK: StateKey, UV: StateValue>(
        &mut self,
        state: &mut MapState<UK, UV>,
    ) -> Result<(), String> {
        self.add::<(K, UK), UV, _>(&mut state.handle, "map", MapIndex::<K, UK>::default())
    }

    pub fn reducing<T: StateValue>(&mut self, state: &mut ReducingState<T>) -> Result<(), String> {
        self.add::<K, T, ()>(&mut state.handle, "reducing", ())
    }

    pub fn aggregating<A: AggregateFunction>(
        &mut self,
        state: &mut AggregatingState<A>,
    ) -> Result<(), String> {
        self.add::<K, A::Acc, ()>(&mut state.handle, "aggregating", ())
    }

    fn add<MK: StateKey, V: StateValue, X: 'static>(
        &mut self,
        handle: &mut Handle,
        kind: &'static str,
        extra: X,
    ) -> Result<(), String>
    where
        Store<MK, V, X>: NamedState,
    {
        if self.stores.iter().any(|s| s.user_name() == handle.name) {
            return Err(format!(
                "keyed state '{}' is registered twice: each state needs its own name",
                handle.name
            ));
        }
        handle.slot = Some(self.stores.len());
        let map = KeyGroupedMap::new(self.range, self.max_parallelism);
        self.stores
            .push(Box::new(Store::new(kind, &handle.name, map, extra)));
        Ok(())
    }

    fn store<MK: 'static, V: 'static, X: 'static>(
        &mut self,
        handle: &Handle,
    ) -> &mut Store<MK, V, X> {
        let store = self.stores[handle.slot()].as_any();
        match store.downcast_mut() {
            Some(store) => store,
            None => panic!(
                "keyed state '{}' was registered with another kind or type than it is used with",
                handle.name
            ),
        }
    }
}

/// The current key's [`ValueState`].
pub struct ValueStateView<'s, K, T> {
    map: &'s mut KeyGroupedMap<K, T>,
    key_group: u32,
    key: &'s K,
}

impl<K: StateKey, T: StateValue> ValueStateView<'_, K, T> {
    pub fn value(&self) -> Option<&T> {
        self.map.get(self.key_group, self.key)
    }
    /// The value, to change in place.
    pub fn value_mut(&mut self) -> Option<&mut T> {
        self.map.log_key(self.key_group, self.key);
        self.map.get_mut_untracked(self.key_group, self.key)
    }
    pub fn update(&mut self, value: T) {
        self.map
            .insert_untracked(self.key_group, self.key.clone(), value);
        self.map.log_key(self.key_group, self.key);
    }
    pub fn clear(&mut self) {
        self.map.remove(self.key_group, self.key);
    }
}

/// The current key's [`ListState`].
pub struct ListStateView<'s, K, T> {
    map: &'s mut KeyGroupedMap<K, Vec<T>>,
    key_group: u32,
    key: &'s K,
}

impl<K: StateKey, T: StateValue> ListStateView<'_, K, T> {
    /// The list, oldest first (empty when nothing was added).
    pub fn get(&self) -> &[T] {
        self.map
            .get(self.key_group, self.key)
            .map_or(&[], Vec::as_slice)
    }
    pub fn len(&self) -> usize {
        self.get().len()
    }
    pub fn is_empty(&self) -> bool {
        self.get().is_empty()
    }
    pub fn add(&mut self, value: T) {
        self.add_all(std::iter::once(value));
    }
    pub fn add_all(&mut self, values: impl IntoIterator<Item = T>) {
        let (key_group, key) = (self.key_group, self.key);
        match self.map.get_mut_untracked(key_group, key) {
            Some(list) => list.extend(values),
            None => {
                let list: Vec<T> = values.into_iter().collect();
                if list.is_empty() {
                    return;
                }
                self.map.insert_untracked(key_group, key.clone(), list);
            }
        }
        self.map.log_key(key_group, key);
    }
    /// Replaces the list (an empty one clears it).
    pub fn update(&mut self, values: Vec<T>) {
        if values.is_empty() {
            return self.clear();
        }
        self.map
            .insert_untracked(self.key_group, self.key.clone(), values);
        self.map.log_key(self.key_group, self.key);
    }
    pub fn clear(&mut self) {
        self.map.remove(self.key_group, self.key);
    }
}

/// The current key's [`MapState`].
pub struct MapStateView<'s, K, UK, UV> {
    store: &'s mut Store<(K, UK), UV, MapIndex<K, UK>>,
    key_group: u32,
    key: &'s K,
}

impl<K: StateKey, UK: StateKey, UV: StateValue> MapStateView<'_, K, UK, UV> {
    fn entry_key(&self, user_key: &UK) -> (K, UK) {
        (self.key.clone(), user_key.clone())
    }
    fn user_keys(&self) -> Option<&FxHashSet<UK>> {
        self.store.extra.keys.get(self.key)
    }
    pub fn get(&self, user_key: &UK) -> Option<&UV> {
        self.store
            .map
            .get(self.key_group, &self.entry_key(user_key))
    }
    pub fn contains(&self, user_key: &UK) -> bool {
        self.user_keys().is_some_and(|keys| keys.contains(user_key))
    }
    pub fn put(&mut self, user_key: UK, value: UV) {
        let entry = self.entry_key(&user_key);
        // A user key that had a value is in the index already.
        if self
            .store
            .map
            .insert(self.key_group, entry, value)
            .is_none()
        {
            self.store
                .extra
                .keys
                .entry(self.key.clone())
                .or_default()
                .insert(user_key);
        }
    }
    pub fn remove(&mut self, user_key: &UK) -> Option<UV> {
        let removed = self
            .store
            .map
            .remove(self.key_group, &self.entry_key(user_key))?;
        self.store.extra.forget(self.key, user_key);
        Some(removed)
    }
    pub fn len(&self) -> usize {
        self.user_keys().map_or(0, FxHashSet::len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The user keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &UK> {
        self.user_keys().into_iter().flatten()
    }
    /// The entries, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (&UK, &UV)> {
        self.keys().map(|user_key| {
            let value = self.get(user_key);
            (
                user_key,
                value.expect("the index holds only present entries"),
            )
        })
    }
    pub fn clear(&mut self) {
        let Some(user_keys) = self.store.extra.keys.remove(self.key) else {
            return;
        };
        for user_key in user_keys {
            let entry = (self.key.clone(), user_key);
            self.store.map.remove(self.key_group, &entry);
        }
    }
}

/// The current key's [`ReducingState`].
pub struct ReducingStateView<'s, K, T> {
    map: &'s mut KeyGroupedMap<K, T>,
    reduce: &'s Reduce<T>,
    key_group: u32,
    key: &'s K,
}

impl<K: StateKey, T: StateValue> ReducingStateView<'_, K, T> {
    /// The reduction of the values added since the last clear.
    pub fn get(&self) -> Option<&T> {
        self.map.get(self.key_group, self.key)
    }
    pub fn add(&mut self, value: T) {
        let (key_group, key) = (self.key_group, self.key);
        match self.map.get_mut_untracked(key_group, key) {
            Some(acc) => (self.reduce)(acc, value),
            None => {
                self.map.insert_untracked(key_group, key.clone(), value);
            }
        }
        self.map.log_key(key_group, key);
    }
    pub fn clear(&mut self) {
        self.map.remove(self.key_group, self.key);
    }
}

/// The current key's [`AggregatingState`].
pub struct AggregatingStateView<'s, K, A: AggregateFunction> {
    map: &'s mut KeyGroupedMap<K, A::Acc>,
    function: &'s A,
    key_group: u32,
    key: &'s K,
}

impl<K: StateKey, A: AggregateFunction> AggregatingStateView<'_, K, A> {
    /// The result of the values added since the last clear; `None` before
    /// the first.
    pub fn get(&self) -> Option<A::Out> {
        self.map
            .get(self.key_group, self.key)
            .map(|acc| self.function.get_result(acc))
    }
    pub fn add(&mut self, value: A::In) {
        let (key_group, key) = (self.key_group, self.key);
        match self.map.get_mut_untracked(key_group, key) {
            Some(acc) => self.function.add(value, acc),
            None => {
                let mut acc = self.function.create_accumulator();
                self.function.add(value, &mut acc);
                self.map.insert_untracked(key_group, key.clone(), acc);
            }
        }
        self.map.log_key(key_group, key);
    }
    pub fn clear(&mut self) {
        self.map.remove(self.key_group, self.key);
    }
}

/// The views of the current key's named states, reached through the
/// [`KeyedContext`](super::functions::KeyedContext).
impl<K: StateKey> super::functions::KeyedContext<'_, K> {
    pub fn value<T: StateValue>(&mut self, state: &ValueState<T>) -> ValueStateView<'_, K, T> {
        let store: &mut Store<K, T, ()> = self.states.store(&state.handle);
        ValueStateView {
            map: &mut store.map,
            key_group: self.key_group,
            key: self.key,
        }
    }

    pub fn list<T: StateValue>(&mut self, state: &ListState<T>) -> ListStateView<'_, K, T> {
        let store: &mut Store<K, Vec<T>, ()> = self.states.store(&state.handle);
        ListStateView {
            map: &mut store.map,
            key_group: self.key_group,
            key: self.key,
        }
    }

    pub fn map<UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapState<UK, UV>,
    ) -> MapStateView<'_, K, UK, UV> {
        MapStateView {
            store: self.states.store(&state.handle),
            key_group: self.key_group,
            key: self.key,
        }
    }

    pub fn reducing<'s, T: StateValue>(
        &'s mut self,
        state: &'s ReducingState<T>,
    ) -> ReducingStateView<'s, K, T> {
        let store: &mut Store<K, T, ()> = self.states.store(&state.handle);
        ReducingStateView {
            map: &mut store.map,
            reduce: &*state.reduce,
            key_group: self.key_group,
            key: self.key,
        }
    }

    pub fn aggregating<'s, A: AggregateFunction>(
        &'s mut self,
        state: &'s AggregatingState<A>,
    ) -> AggregatingStateView<'s, K, A> {
        let store: &mut Store<K, A::Acc, ()> = self.states.store(&state.handle);
        AggregatingStateView {
            map: &mut store.map,
            function: &state.function,
            key_group: self.key_group,
            key: self.key,
        }
    }
}
