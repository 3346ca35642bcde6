//! Event-time windows on keyed streams: tumbling and sliding (hop) windows
//! with incremental aggregation, fired by the watermark.
//!
//! State is per key, in the subtask's key-grouped map: the open windows of a
//! key and their accumulators. A timer queue ordered by window end says which
//! (key, window) pairs fire when the watermark passes `end - 1` (Flink's
//! `TimeWindow.maxTimestamp`). A record whose every window has already fired
//! is late; it is dropped and counted, since allowed lateness and side outputs
//! are not built yet.
//!
//! Invariants: a (key, window) pair is in the timer queue exactly once while
//! its accumulator exists; results of a window leave before the watermark that
//! fired it.

use std::collections::BTreeMap;
use std::hash::Hash;

use rheon_state::key_group::assign_to_key_group;
use rheon_state::keyed::KeyGroupedMap;

use crate::error::{TaskLocation, TaskResult};
use crate::runtime::collector::{guarded, BoxCollector, Collector};

/// A half-open interval of event time `[start, end)` in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeWindow {
    pub start: i64,
    pub end: i64,
}

impl TimeWindow {
    /// The largest timestamp inside the window.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }
}

/// Which windows a timestamp falls in.
#[derive(Clone, Copy, Debug)]
pub enum WindowAssigner {
    /// Windows of `size_ms` aligned to the epoch.
    Tumbling { size_ms: i64 },
    /// Windows of `size_ms` starting every `slide_ms` (Flink's sliding, SQL's HOP).
    Sliding { size_ms: i64, slide_ms: i64 },
}

impl WindowAssigner {
    pub fn tumbling(size: std::time::Duration) -> Self {
        WindowAssigner::Tumbling {
            size_ms: (size.as_millis() as i64).max(1),
        }
    }

    pub fn sliding(size: std::time::Duration, slide: std::time::Duration) -> Self {
        WindowAssigner::Sliding {
            size_ms: (size.as_millis() as i64).max(1),
            slide_ms: (slide.as_millis() as i64).max(1),
        }
    }

    /// Calls `f` with every window containing `ts`, latest start first.
    pub fn for_each_window(&self, ts: i64, mut f: impl FnMut(TimeWindow)) {
        match *self {
            WindowAssigner::Tumbling { size_ms } => {
                let start = ts - ts.rem_euclid(size_ms);
                f(TimeWindow {
                    start,
                    end: start + size_ms,
                });
            }
            WindowAssigner::Sliding { size_ms, slide_ms } => {
                let mut start = ts - ts.rem_euclid(slide_ms);
                while start > ts - size_ms {
                    f(TimeWindow {
                        start,
                        end: start + size_ms,
                    });
                    start -= slide_ms;
                }
            }
        }
    }
}

/// The user's incremental aggregation: a fresh accumulator, how a record
/// adds to it, and the result of a fired window.
pub(crate) struct WindowFunctions<Init, Add, Res> {
    pub(crate) init: Init,
    pub(crate) add: Add,
    pub(crate) result: Res,
}

pub(crate) struct WindowAggregate<K, T, Acc, O, KF, TF, Init, Add, Res> {
    pub(crate) key_fn: KF,
    pub(crate) timestamp_fn: TF,
    pub(crate) assigner: WindowAssigner,
    pub(crate) functions: WindowFunctions<Init, Add, Res>,
    /// Per key: its open windows and their accumulators.
    pub(crate) state: KeyGroupedMap<K, Vec<(TimeWindow, Acc)>>,
    /// Window end -> the keys (with key group) that have that window open.
    pub(crate) timers: BTreeMap<i64, Vec<(u32, K)>>,
    pub(crate) watermark: i64,
    pub(crate) max_parallelism: u32,
    pub(crate) late_records: u64,
    pub(crate) out: BoxCollector<O>,
    pub(crate) location: TaskLocation,
    pub(crate) _types: std::marker::PhantomData<fn(T)>,
}

impl<K, T, Acc, O, KF, TF, Init, Add, Res> WindowAggregate<K, T, Acc, O, KF, TF, Init, Add, Res>
where
    K: Hash + Eq + Clone,
    Init: FnMut() -> Acc,
    Add: FnMut(&mut Acc, &T),
    Res: FnMut(&K, TimeWindow, Acc) -> O,
{
    /// Emits every window whose end is at or before `watermark + 1`.
    fn fire_up_to(&mut self, watermark: i64) -> TaskResult {
        while let Some(entry) = self.timers.first_entry() {
            let end = *entry.key();
            if end - 1 > watermark {
                break;
            }
            for (key_group, key) in entry.remove() {
                let Some(windows) = self.state.get_mut(key_group, &key) else {
                    continue;
                };
                let Some(index) = windows.iter().position(|(w, _)| w.end == end) else {
                    continue;
                };
                let (window, acc) = windows.swap_remove(index);
                if windows.is_empty() {
                    self.state.remove(key_group, &key);
                }
                let result = &mut self.functions.result;
                let value = guarded(&self.location, || result(&key, window, acc))?;
                self.out.collect(value)?;
            }
        }
        Ok(())
    }
}

impl<K, T, Acc, O, KF, TF, Init, Add, Res> Collector<T>
    for WindowAggregate<K, T, Acc, O, KF, TF, Init, Add, Res>
where
    K: Hash + Eq + Clone,
    KF: FnMut(&T) -> K,
    TF: FnMut(&T) -> i64,
    Init: FnMut() -> Acc,
    Add: FnMut(&mut Acc, &T),
    Res: FnMut(&K, TimeWindow, Acc) -> O,
{
    fn collect(&mut self, record: T) -> TaskResult {
        let (key_fn, timestamp_fn) = (&mut self.key_fn, &mut self.timestamp_fn);
        let (key, ts) = guarded(&self.location, || (key_fn(&record), timestamp_fn(&record)))?;
        let key_group = assign_to_key_group(&key, self.max_parallelism);
        let watermark = self.watermark;
        let (assigner, functions, timers) = (self.assigner, &mut self.functions, &mut self.timers);
        // Look up before inserting: `entry` would clone the key (an allocation
        // for string keys) on every record, not just a key's first.
        if self.state.get_mut(key_group, &key).is_none() {
            self.state.insert(key_group, key.clone(), Vec::new());
        }
        let windows = self.state.get_mut(key_group, &key).expect("inserted above");
        let mut on_time = false;
        let mut failure = None;
        assigner.for_each_window(ts, |window| {
            if window.max_timestamp() <= watermark || failure.is_some() {
                return;
            }
            on_time = true;
            let slot = match windows.iter().position(|(w, _)| *w == window) {
                Some(i) => i,
                None => {
                    match guarded(&self.location, &mut functions.init) {
                        Ok(acc) => windows.push((window, acc)),
                        Err(e) => {
                            failure = Some(e);
                            return;
                        }
                    }
                    timers
                        .entry(window.end)
                        .or_default()
                        .push((key_group, key.clone()));
                    windows.len() - 1
                }
            };
            let acc = &mut windows[slot].1;
            if let Err(e) = guarded(&self.location, || (functions.add)(acc, &record)) {
                failure = Some(e);
            }
        });
        if windows.is_empty() {
            self.state.remove(key_group, &key);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if !on_time {
            self.late_records += 1;
        }
        Ok(())
    }

    fn watermark(&mut self, watermark: i64) -> TaskResult {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.fire_up_to(watermark)?;
        }
        self.out.watermark(watermark)
    }

    fn finish(&mut self) -> TaskResult {
        self.out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(assigner: WindowAssigner, ts: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        assigner.for_each_window(ts, |w| out.push((w.start, w.end)));
        out.sort();
        out
    }

    #[test]
    fn assigns_tumbling_and_sliding_windows_like_flink() {
        let tumbling = WindowAssigner::Tumbling { size_ms: 10 };
        assert_eq!(windows(tumbling, 0), vec![(0, 10)]);
        assert_eq!(windows(tumbling, 9), vec![(0, 10)]);
        assert_eq!(windows(tumbling, 10), vec![(10, 20)]);
        assert_eq!(windows(tumbling, -1), vec![(-10, 0)]);
        let sliding = WindowAssigner::Sliding {
            size_ms: 10,
            slide_ms: 2,
        };
        assert_eq!(
            windows(sliding, 11),
            vec![(2, 12), (4, 14), (6, 16), (8, 18), (10, 20)]
        );
        assert_eq!(
            windows(sliding, 10),
            vec![(2, 12), (4, 14), (6, 16), (8, 18), (10, 20)]
        );
        let uneven = WindowAssigner::Sliding {
            size_ms: 5,
            slide_ms: 3,
        };
        assert_eq!(windows(uneven, 7), vec![(3, 8), (6, 11)]);
    }
}
