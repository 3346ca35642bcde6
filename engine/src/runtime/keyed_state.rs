//! Where a keyed process function's named states live: one [`Store`] per
//! state, type-erased behind [`NamedState`] so the operator can snapshot,
//! confirm and restore them all without knowing their types.
//!
//! Each store is a [`KeyGroupedMap`] with its own incremental-checkpoint
//! bookkeeping, written as the keyed state `<kind>:<name>` of the operator.
//! A map state's map is keyed by (key, user key); its per-key index of user
//! keys is not written, and a restore rebuilds it from the entries.
//!
//! Invariant: a restore takes every named keyed state of the checkpoint's
//! operator, or fails naming the one the function no longer registers, so
//! nothing a checkpoint holds is dropped silently.

use std::any::Any;
use std::hash::Hash;

use rheon_state::keyed::KeyGroupedMap;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::api::state::{KeyedStates, StateKey, StateValue};
use crate::checkpoint::changelog::ChangelogState;
use crate::checkpoint::state::{KeyedWrite, RestoredOperator};

/// One named keyed state, whatever its types.
pub(crate) trait NamedState: 'static {
    /// The name the function gave it.
    fn user_name(&self) -> &str;
    /// The name of its keyed state in snapshots: `<kind>:<name>`.
    fn state_name(&self) -> &str;
    fn as_any(&mut self) -> &mut dyn Any;
    fn snapshot(&mut self, checkpoint_id: u64, incremental: Option<f64>) -> KeyedWrite;
    fn notify_complete(&mut self, checkpoint_id: u64);
    fn restore(&mut self, restored: &RestoredOperator<'_>) -> Result<(), String>;
}

/// A named state's entries (`map`, keyed by `MK`) and what else its kind
/// keeps (`extra`).
pub(crate) struct Store<MK, V, X> {
    user_name: String,
    state_name: String,
    pub(crate) map: KeyGroupedMap<MK, V>,
    changelog: ChangelogState<MK, V>,
    pub(crate) extra: X,
}

impl<MK, V, X> Store<MK, V, X> {
    pub(crate) fn new(kind: &str, name: &str, map: KeyGroupedMap<MK, V>, extra: X) -> Self {
        Store {
            user_name: name.to_owned(),
            state_name: format!("{kind}:{name}"),
            map,
            changelog: ChangelogState::default(),
            extra,
        }
    }
}

/// What a kind keeps beside its entries, rebuilt from them on restore.
pub(crate) trait Derived<MK, V> {
    fn rebuild(&mut self, map: &KeyGroupedMap<MK, V>);
}

impl<MK, V> Derived<MK, V> for () {
    fn rebuild(&mut self, _map: &KeyGroupedMap<MK, V>) {}
}

/// A map state's user keys per key, for iterating one key's entries.
pub(crate) struct MapIndex<K, UK> {
    pub(crate) keys: FxHashMap<K, FxHashSet<UK>>,
}

impl<K, UK> Default for MapIndex<K, UK> {
    fn default() -> Self {
        MapIndex {
            keys: FxHashMap::default(),
        }
    }
}

impl<K: Hash + Eq, UK: Hash + Eq> MapIndex<K, UK> {
    /// `user_key` of `key` was removed.
    pub(crate) fn forget(&mut self, key: &K, user_key: &UK) {
        if let Some(keys) = self.keys.get_mut(key) {
            keys.remove(user_key);
            if keys.is_empty() {
                self.keys.remove(key);
            }
        }
    }
}

impl<K: Hash + Eq + Clone, UK: Hash + Eq + Clone, UV> Derived<(K, UK), UV> for MapIndex<K, UK> {
    fn rebuild(&mut self, map: &KeyGroupedMap<(K, UK), UV>) {
        self.keys.clear();
        for (_, (key, user_key), _) in map.iter() {
            self.keys
                .entry(key.clone())
                .or_default()
                .insert(user_key.clone());
        }
    }
}

impl<MK, V, X> NamedState for Store<MK, V, X>
where
    MK: StateKey,
    V: StateValue,
    X: Derived<MK, V> + 'static,
{
    fn user_name(&self) -> &str {
        &self.user_name
    }

    fn state_name(&self) -> &str {
        &self.state_name
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn snapshot(&mut self, checkpoint_id: u64, incremental: Option<f64>) -> KeyedWrite {
        self.changelog.write(
            &self.state_name,
            std::any::type_name::<(MK, V)>(),
            &mut self.map,
            checkpoint_id,
            incremental,
        )
    }

    fn notify_complete(&mut self, checkpoint_id: u64) {
        self.changelog.notify_complete(checkpoint_id);
    }

    fn restore(&mut self, restored: &RestoredOperator<'_>) -> Result<(), String> {
        self.map = restored.keyed_state(&self.state_name)?;
        self.extra.rebuild(&self.map);
        // A restored job starts its chains with new bases.
        self.changelog = ChangelogState::default();
        Ok(())
    }
}

impl<K: StateKey> KeyedStates<K> {
    /// The synchronous part of a checkpoint of every named state.
    pub(crate) fn snapshot(
        &mut self,
        checkpoint_id: u64,
        incremental: Option<f64>,
    ) -> impl Iterator<Item = KeyedWrite> + '_ {
        self.stores
            .iter_mut()
            .map(move |store| store.snapshot(checkpoint_id, incremental))
    }

    pub(crate) fn notify_complete(&mut self, checkpoint_id: u64) {
        for store in &mut self.stores {
            store.notify_complete(checkpoint_id);
        }
    }

    /// Fails if the checkpoint holds a named state (one of the
    /// `<kind>:<name>` keyed states) that no handle registered, naming it.
    pub(crate) fn check_restorable(&self, restored: &RestoredOperator<'_>) -> Result<(), String> {
        for name in restored.keyed_state_names() {
            let named = name.contains(':');
            if named && !self.stores.iter().any(|s| s.state_name() == name) {
                return Err(format!(
                    "the checkpoint holds keyed state '{name}', which the function does not \
                     register in open(): register it with the same kind and name to keep it"
                ));
            }
        }
        Ok(())
    }

    /// Restores every registered state (see [`check_restorable`](Self::check_restorable)).
    pub(crate) fn restore(&mut self, restored: &RestoredOperator<'_>) -> Result<(), String> {
        for store in &mut self.stores {
            store.restore(restored)?;
        }
        Ok(())
    }
}
