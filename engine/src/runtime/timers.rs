//! Timers: the task's processing-time service and the keyed timer queues of
//! operators.
//!
//! Processing time is wall-clock milliseconds since the epoch. Each task owns
//! one [`ProcessingTimeService`]; an operator that needs processing time
//! registers itself as a target and asks to be called back at a deadline. The
//! task loop fires due callbacks between records (never inside one) and wakes
//! for the earliest deadline when it would otherwise sleep.
//!
//! [`KeyedTimers`] holds an operator's timers of one time domain: at most one
//! timer per (key, timestamp), indexed per key group (so a snapshot can write
//! them by key group like the rest of keyed state) and ordered by time across
//! key groups. Deleting a timer removes it from the key's entry only; the
//! ordered queue drops the stale entry lazily when it comes up.
//!
//! Invariants: callbacks run only from the task loop, so an operator's
//! `RefCell` is never borrowed twice; the service holds targets weakly, so a
//! chain that is dropped frees its operators.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::Hash;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rheon_state::key_group::KeyGroupRange;
use rheon_state::keyed::KeyGroupedMap;

use crate::error::TaskResult;

/// The two clocks timers can follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Event time: fires when the watermark reaches the timestamp.
    EventTime,
    /// Wall-clock time: fires when the clock reaches the timestamp.
    ProcessingTime,
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The `Instant` at which the wall clock reads `deadline_ms` (now if past).
pub(crate) fn instant_at(deadline_ms: i64) -> Instant {
    let wait = deadline_ms.saturating_sub(now_ms()).max(0) as u64;
    Instant::now() + Duration::from_millis(wait)
}

/// An operator called back by the processing-time service.
pub(crate) trait ProcessingTimeTarget {
    /// The clock reached a deadline this target asked for; `now_ms` is the
    /// current wall-clock time.
    fn on_processing_time(&mut self, now_ms: i64) -> TaskResult;
}

/// Identifies a registered target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TargetId(usize);

#[derive(Default)]
struct Service {
    deadlines: BinaryHeap<Reverse<(i64, usize)>>,
    targets: Vec<Weak<RefCell<dyn ProcessingTimeTarget>>>,
}

/// One per task: processing-time callbacks of the task's operators.
#[derive(Clone, Default)]
pub(crate) struct ProcessingTimeService {
    inner: Rc<RefCell<Service>>,
}

impl std::fmt::Debug for ProcessingTimeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessingTimeService")
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

impl ProcessingTimeService {
    pub(crate) fn register(&self, target: Rc<RefCell<dyn ProcessingTimeTarget>>) -> TargetId {
        let mut s = self.inner.borrow_mut();
        s.targets.push(Rc::downgrade(&target));
        TargetId(s.targets.len() - 1)
    }

    /// Calls `target` back once the clock reaches `deadline_ms`.
    pub(crate) fn schedule(&self, target: TargetId, deadline_ms: i64) {
        self.inner
            .borrow_mut()
            .deadlines
            .push(Reverse((deadline_ms, target.0)));
    }

    /// The earliest deadline asked for, if any.
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        self.inner.borrow().deadlines.peek().map(|d| d.0 .0)
    }

    /// Calls back every target whose deadline is at or before `now_ms`.
    pub(crate) fn fire_due(&self, now_ms: i64) -> TaskResult {
        loop {
            let target = {
                let mut s = self.inner.borrow_mut();
                match s.deadlines.peek() {
                    Some(&Reverse((deadline, _))) if deadline <= now_ms => {}
                    _ => return Ok(()),
                }
                let Reverse((_, index)) = s.deadlines.pop().expect("peeked");
                s.targets[index].upgrade()
            };
            if let Some(target) = target {
                target.borrow_mut().on_processing_time(now_ms)?;
            }
        }
    }
}

/// An operator's timers of one domain, per key and ordered by time.
pub(crate) struct KeyedTimers<K> {
    /// Timestamp -> the keys (with key group) with a timer then; may hold
    /// entries deleted since, which `pop_due` skips.
    queue: BTreeMap<i64, Vec<(u32, K)>>,
    /// Per key, its live timer timestamps.
    per_key: KeyGroupedMap<K, Vec<i64>>,
}

impl<K: Hash + Eq + Clone> KeyedTimers<K> {
    pub(crate) fn new(range: KeyGroupRange, max_parallelism: u32) -> Self {
        KeyedTimers {
            queue: BTreeMap::new(),
            per_key: KeyGroupedMap::new(range, max_parallelism),
        }
    }

    /// Adds a timer; a second registration of the same (key, time) is a no-op.
    pub(crate) fn register(&mut self, key_group: u32, key: &K, time: i64) {
        match self.per_key.get_mut_untracked(key_group, key) {
            Some(times) if times.contains(&time) => return,
            Some(times) => {
                times.push(time);
                self.per_key.log_key(key_group, key);
            }
            None => {
                self.per_key.insert(key_group, key.clone(), vec![time]);
            }
        }
        self.queue
            .entry(time)
            .or_default()
            .push((key_group, key.clone()));
    }

    pub(crate) fn delete(&mut self, key_group: u32, key: &K, time: i64) {
        if let Some(times) = self.per_key.get_mut_untracked(key_group, key) {
            let before = times.len();
            times.retain(|&t| t != time);
            if times.is_empty() {
                self.per_key.remove(key_group, key);
            } else if times.len() != before {
                self.per_key.log_key(key_group, key);
            }
        }
    }

    /// The earliest live timer's time (stale queue entries are dropped).
    pub(crate) fn next_time(&mut self) -> Option<i64> {
        loop {
            let mut entry = self.queue.first_entry()?;
            let time = *entry.key();
            let keys = entry.get_mut();
            while let Some((key_group, key)) = keys.last() {
                let live = self
                    .per_key
                    .get(*key_group, key)
                    .is_some_and(|times| times.contains(&time));
                if live {
                    return Some(time);
                }
                keys.pop();
            }
            entry.remove();
        }
    }

    /// Removes and returns the earliest live timer at or before `up_to`.
    pub(crate) fn pop_due(&mut self, up_to: i64) -> Option<(i64, u32, K)> {
        let time = self.next_time()?;
        if time > up_to {
            return None;
        }
        let mut entry = self.queue.first_entry().expect("next_time found it");
        let (key_group, key) = entry.get_mut().pop().expect("live entry on top");
        if entry.get().is_empty() {
            entry.remove();
        }
        self.delete(key_group, &key, time);
        Some((time, key_group, key))
    }

    /// The live timers per key, what a checkpoint writes. Every change goes
    /// through `insert`, `remove` or `log_key`, so a changelog of the map
    /// stays complete.
    pub(crate) fn per_key_mut(&mut self) -> &mut KeyGroupedMap<K, Vec<i64>> {
        &mut self.per_key
    }

    /// Replaces every timer with the live timers per key of a snapshot.
    pub(crate) fn restore(&mut self, per_key: KeyGroupedMap<K, Vec<i64>>) {
        let mut queue: BTreeMap<i64, Vec<(u32, K)>> = BTreeMap::new();
        for (key_group, key, times) in per_key.iter() {
            for &time in times {
                queue
                    .entry(time)
                    .or_default()
                    .push((key_group, key.clone()));
            }
        }
        self.queue = queue;
        self.per_key = per_key;
    }

    /// Number of live timers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.per_key.iter().map(|(_, _, times)| times.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> KeyedTimers<u64> {
        KeyedTimers::new(KeyGroupRange::new(0, 127), 128)
    }

    #[test]
    fn fires_in_time_order_once_per_key_and_time() {
        let mut t = timers();
        t.register(1, &10, 30);
        t.register(2, &20, 10);
        t.register(1, &10, 30);
        t.register(3, &30, 20);
        assert_eq!(t.len(), 3);
        assert_eq!(t.pop_due(25), Some((10, 2, 20)));
        assert_eq!(t.pop_due(25), Some((20, 3, 30)));
        assert_eq!(t.pop_due(25), None);
        assert_eq!(t.pop_due(30), Some((30, 1, 10)));
        assert_eq!(t.pop_due(i64::MAX), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn deleted_timers_do_not_fire_and_can_be_registered_again() {
        let mut t = timers();
        t.register(1, &1, 5);
        t.register(1, &2, 5);
        t.delete(1, &1, 5);
        assert_eq!(t.next_time(), Some(5));
        assert_eq!(t.pop_due(10), Some((5, 1, 2)));
        assert_eq!(t.pop_due(10), None);
        t.register(1, &1, 7);
        t.delete(1, &1, 7);
        t.register(1, &1, 7);
        assert_eq!(t.pop_due(10), Some((7, 1, 1)));
        assert_eq!(t.pop_due(10), None, "re-registered once, fires once");
    }

    #[test]
    fn restored_timers_fire_like_the_forked_ones() {
        let mut t = timers();
        t.register(1, &10, 30);
        t.register(2, &20, 10);
        t.register(2, &20, 40);
        t.delete(2, &20, 40);
        let fork = t.per_key_mut().fork();
        let mut map = KeyGroupedMap::new(KeyGroupRange::new(0, 127), 128);
        for key_group in 0..128 {
            for (key, times) in fork.key_group(key_group) {
                map.insert(key_group, *key, times.clone());
            }
        }
        let mut restored = timers();
        restored.restore(map);
        assert_eq!(restored.len(), 2);
        assert_eq!(restored.pop_due(i64::MAX), Some((10, 2, 20)));
        assert_eq!(restored.pop_due(i64::MAX), Some((30, 1, 10)));
        assert_eq!(restored.pop_due(i64::MAX), None);
    }

    struct Recorder(Vec<i64>);
    impl ProcessingTimeTarget for Recorder {
        fn on_processing_time(&mut self, now_ms: i64) -> TaskResult {
            self.0.push(now_ms);
            Ok(())
        }
    }

    #[test]
    fn service_fires_due_targets_and_forgets_dropped_ones() {
        let service = ProcessingTimeService::default();
        let a = Rc::new(RefCell::new(Recorder(Vec::new())));
        let b = Rc::new(RefCell::new(Recorder(Vec::new())));
        let ia = service.register(a.clone());
        let ib = service.register(b.clone());
        service.schedule(ia, 100);
        service.schedule(ib, 50);
        service.schedule(ia, 200);
        assert_eq!(service.next_deadline(), Some(50));
        service.fire_due(120).unwrap();
        assert_eq!(a.borrow().0, vec![120]);
        assert_eq!(b.borrow().0, vec![120]);
        drop(a);
        service.fire_due(300).unwrap();
        assert_eq!(service.next_deadline(), None);
    }
}
