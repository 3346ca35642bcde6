//! Windows on keyed streams: tumbling, sliding (hop) and session windows, on
//! event time or processing time, with incremental (`aggregate`, `reduce`)
//! or full (`process`) window functions, allowed lateness and a side output
//! for late records.
//!
//! State is per key, in the subtask's key-grouped map: the open windows of a
//! key and their accumulators. A timer queue ordered by time says which
//! (key, window) pairs fire when the watermark (or the clock) reaches the
//! window's `end - 1` (Flink's `TimeWindow.maxTimestamp`), and, with allowed
//! lateness, when the window is dropped at `end - 1 + lateness`. Until then a
//! late record still updates its window and fires it again (Flink's
//! `EventTimeTrigger`). A record whose every window is past its lateness is
//! late: it goes to the late-data side output if there is one, else it is
//! dropped and counted.
//!
//! Session windows merge: a record opens `[ts, ts + gap)`, which absorbs
//! every window of the key it touches; their accumulators merge.
//!
//! Invariants: timers are checked against the key's current windows when
//! they come up, so timers of merged or dropped windows are skipped; a
//! window's timers are registered once, when the window first appears;
//! results of a window leave before the watermark that fired it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use rheon_state::key_group::assign_to_key_group;
use rheon_state::keyed::KeyGroupedMap;

use crate::api::functions::OperatorContext;
use crate::checkpoint::changelog::ChangelogState;
use crate::error::{TaskLocation, TaskResult};
use crate::runtime::collector::{guarded, BoxCollector, Collector, Emitter, Shared};
use crate::runtime::timers::{
    now_ms, ProcessingTimeService, ProcessingTimeTarget, TargetId, TimeDomain,
};
use crate::runtime::watermark::{WATERMARK_MAX, WATERMARK_MIN};

/// A half-open interval of time `[start, end)` in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeWindow {
    pub start: i64,
    pub end: i64,
}

impl TimeWindow {
    /// The largest timestamp inside the window.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }

    /// Whether the windows overlap or touch (Flink's `intersects`: session
    /// windows that touch merge).
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// Which windows a timestamp falls in.
#[derive(Clone, Copy, Debug)]
pub enum WindowAssigner {
    /// Windows of `size_ms` aligned to the epoch.
    Tumbling { size_ms: i64 },
    /// Windows of `size_ms` starting every `slide_ms` (Flink's sliding, SQL's HOP).
    Sliding { size_ms: i64, slide_ms: i64 },
    /// Per key, records closer than `gap_ms` apart share a window.
    Session { gap_ms: i64 },
}

fn millis(d: std::time::Duration) -> i64 {
    (d.as_millis() as i64).max(1)
}

impl WindowAssigner {
    pub fn tumbling(size: std::time::Duration) -> Self {
        WindowAssigner::Tumbling {
            size_ms: millis(size),
        }
    }

    pub fn sliding(size: std::time::Duration, slide: std::time::Duration) -> Self {
        WindowAssigner::Sliding {
            size_ms: millis(size),
            slide_ms: millis(slide),
        }
    }

    /// Session windows closed after `gap` without records of the key.
    pub fn session(gap: std::time::Duration) -> Self {
        WindowAssigner::Session {
            gap_ms: millis(gap),
        }
    }

    /// Whether windows of a key can merge (sessions).
    pub fn is_merging(&self) -> bool {
        matches!(self, WindowAssigner::Session { .. })
    }

    /// Calls `f` with every window containing `ts`, latest start first (a
    /// session assigner gives the record's own window, before merging).
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
            WindowAssigner::Session { gap_ms } => f(TimeWindow {
                start: ts,
                end: ts + gap_ms,
            }),
        }
    }
}

/// What a window holds and computes: an accumulator per (key, window).
pub(crate) trait WindowFunction<K, T, O>: 'static {
    type Acc: Clone + 'static;
    fn create(&mut self) -> Self::Acc;
    fn add(&mut self, acc: &mut Self::Acc, record: &T);
    /// Combines the accumulators of merging (session) windows, `a` earlier.
    fn merge(&mut self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
    fn emit(&mut self, key: &K, window: TimeWindow, acc: &Self::Acc, out: &mut Emitter<'_, O>);
    /// Whether incremental checkpoints may log the accumulator after every
    /// record: false when it holds every element (logging it would copy the
    /// whole window per record), which keeps full snapshots.
    const LOG_CHANGES: bool = true;
}

/// Incremental aggregation with user closures.
pub(crate) struct AggregateFn<Init, Add, Merge, Res> {
    pub(crate) init: Init,
    pub(crate) add: Add,
    /// Required for session windows (checked when the stream is built).
    pub(crate) merge: Option<Merge>,
    pub(crate) result: Res,
}

impl<K, T, O, Acc, Init, Add, Merge, Res> WindowFunction<K, T, O>
    for AggregateFn<Init, Add, Merge, Res>
where
    Acc: Clone + 'static,
    Init: FnMut() -> Acc + 'static,
    Add: FnMut(&mut Acc, &T) + 'static,
    Merge: FnMut(Acc, Acc) -> Acc + 'static,
    Res: FnMut(&K, TimeWindow, &Acc) -> O + 'static,
{
    type Acc = Acc;
    fn create(&mut self) -> Acc {
        (self.init)()
    }
    fn add(&mut self, acc: &mut Acc, record: &T) {
        (self.add)(acc, record)
    }
    fn merge(&mut self, a: Acc, b: Acc) -> Acc {
        let merge = self
            .merge
            .as_mut()
            .expect("merging windows are built with a merge function");
        merge(a, b)
    }
    fn emit(&mut self, key: &K, window: TimeWindow, acc: &Acc, out: &mut Emitter<'_, O>) {
        out.emit((self.result)(key, window, acc));
    }
}

/// Full window function: the window's records, in arrival order.
pub(crate) struct ProcessFn<F>(pub(crate) F);

impl<K, T, O, F> WindowFunction<K, T, O> for ProcessFn<F>
where
    T: Clone + 'static,
    F: FnMut(&K, TimeWindow, &[T], &mut Emitter<'_, O>) + 'static,
{
    // The accumulator is every element of the window.
    const LOG_CHANGES: bool = false;
    type Acc = Vec<T>;
    fn create(&mut self) -> Vec<T> {
        Vec::new()
    }
    fn add(&mut self, acc: &mut Vec<T>, record: &T) {
        acc.push(record.clone());
    }
    fn merge(&mut self, mut a: Vec<T>, mut b: Vec<T>) -> Vec<T> {
        a.append(&mut b);
        a
    }
    fn emit(&mut self, key: &K, window: TimeWindow, acc: &Vec<T>, out: &mut Emitter<'_, O>) {
        (self.0)(key, window, acc, out)
    }
}

/// How a window operator learns the time of a record.
pub(crate) enum WindowTime<T> {
    /// Event time from the record, advanced by watermarks.
    Event(Arc<dyn Fn(&T) -> i64 + Send + Sync>),
    /// The wall clock when the record arrives.
    Processing,
}

impl<T> Clone for WindowTime<T> {
    fn clone(&self) -> Self {
        match self {
            WindowTime::Event(f) => WindowTime::Event(f.clone()),
            WindowTime::Processing => WindowTime::Processing,
        }
    }
}

/// How the operator's results and late records reach its one output `E`:
/// `E = O` without a side output, `E = Either<O, T>` with one.
pub(crate) struct WindowOutputs<O, T, E> {
    pub(crate) result: fn(O) -> E,
    pub(crate) late: Option<fn(T) -> E>,
}

/// Adapts the operator's output `E` to a collector of results `O`.
struct Wrap<'a, O, E> {
    out: &'a mut dyn Collector<E>,
    wrap: fn(O) -> E,
}

impl<O, E> Collector<O> for Wrap<'_, O, E> {
    #[inline]
    fn collect(&mut self, record: O) -> TaskResult {
        self.out.collect((self.wrap)(record))
    }
    fn finish(&mut self) -> TaskResult {
        Ok(())
    }
}

type Timers<K> = BTreeMap<i64, Vec<(u32, K, TimeWindow)>>;

/// Calls the window function on a window's accumulator; its results go out
/// through `wrap`, and a panic fails the task naming the operator.
fn emit_window<K, T, O, E, W: WindowFunction<K, T, O>>(
    function: &mut W,
    out: &mut dyn Collector<E>,
    wrap: fn(O) -> E,
    location: &TaskLocation,
    key: &K,
    window: TimeWindow,
    acc: &W::Acc,
) -> TaskResult {
    let mut wrap = Wrap { out, wrap };
    let mut emitter = Emitter::new(&mut wrap);
    guarded(location, || function.emit(key, window, acc, &mut emitter))?;
    emitter.into_result()
}

/// A record's windows without allocating, up to 16 (sliding windows with
/// size / slide <= 16); more spill to the heap.
#[derive(Default)]
struct WindowList {
    inline: [TimeWindow; 16],
    len: usize,
    spill: Vec<TimeWindow>,
}

/// A subset of a `WindowList`, by index.
#[derive(Default)]
struct WindowMask {
    bits: u16,
    spill: Vec<TimeWindow>,
}

impl WindowMask {
    fn set(&mut self, index: usize, window: TimeWindow) {
        if index < 16 {
            self.bits |= 1 << index;
        } else {
            self.spill.push(window);
        }
    }

    fn windows<'a>(&'a self, list: &'a WindowList) -> impl Iterator<Item = TimeWindow> + 'a {
        (0..list.len)
            .filter(|&i| self.bits & (1 << i) != 0)
            .map(|i| list.inline[i])
            .chain(self.spill.iter().copied())
    }
}

impl WindowList {
    fn push(&mut self, window: TimeWindow) {
        if self.len < self.inline.len() {
            self.inline[self.len] = window;
            self.len += 1;
        } else {
            self.spill.push(window);
        }
    }

    fn iter(&self) -> impl Iterator<Item = TimeWindow> + '_ {
        self.inline[..self.len].iter().chain(&self.spill).copied()
    }
}

pub(crate) struct WindowOperator<K, T, O, E, KF, W: WindowFunction<K, T, O>> {
    key_fn: KF,
    time: WindowTime<T>,
    assigner: WindowAssigner,
    lateness_ms: i64,
    function: W,
    /// Per key: its open windows and their accumulators.
    state: KeyGroupedMap<K, Vec<(TimeWindow, W::Acc)>>,
    /// Incremental checkpoints of `state`.
    changelog: ChangelogState<K, Vec<(TimeWindow, W::Acc)>>,
    /// Fire and clean-up times -> the (key group, key, window) due then.
    timers: Timers<K>,
    watermark: i64,
    max_parallelism: u32,
    outputs: WindowOutputs<O, T, E>,
    out: BoxCollector<E>,
    /// Late records dropped for want of a side output.
    pub(crate) late_dropped: u64,
    service: ProcessingTimeService,
    target: Option<TargetId>,
    scheduled: Option<i64>,
    location: TaskLocation,
    _types: PhantomData<fn(T) -> O>,
}

/// What the builder hands to every subtask's operator.
pub(crate) struct WindowSpec<T> {
    pub(crate) time: WindowTime<T>,
    pub(crate) assigner: WindowAssigner,
    pub(crate) lateness_ms: i64,
}

/// Builds the operator for one subtask, registered with its task's
/// processing-time service when it runs on processing time.
pub(crate) fn window_operator<K, T, O, E, KF, W>(
    key_fn: KF,
    spec: &WindowSpec<T>,
    function: W,
    outputs: WindowOutputs<O, T, E>,
    ctx: &OperatorContext,
    out: BoxCollector<E>,
    location: TaskLocation,
) -> Shared<WindowOperator<K, T, O, E, KF, W>>
where
    K: Hash + Eq + Clone + 'static,
    T: 'static,
    O: 'static,
    E: 'static,
    KF: FnMut(&T) -> K + 'static,
    W: WindowFunction<K, T, O>,
{
    let op = Rc::new(RefCell::new(WindowOperator {
        key_fn,
        time: spec.time.clone(),
        assigner: spec.assigner,
        lateness_ms: spec.lateness_ms,
        function,
        state: KeyGroupedMap::new(ctx.key_group_range, ctx.max_parallelism),
        changelog: ChangelogState::default(),
        timers: BTreeMap::new(),
        watermark: WATERMARK_MIN,
        max_parallelism: ctx.max_parallelism,
        outputs,
        out,
        late_dropped: 0,
        service: ctx.processing_time.clone(),
        target: None,
        scheduled: None,
        location,
        _types: PhantomData,
    }));
    if matches!(spec.time, WindowTime::Processing) {
        let target = ctx.processing_time.register(op.clone());
        op.borrow_mut().target = Some(target);
    }
    Shared(op)
}

impl<K, T, O, E, KF, W> WindowOperator<K, T, O, E, KF, W>
where
    K: Hash + Eq + Clone,
    W: WindowFunction<K, T, O>,
{
    fn domain(&self) -> TimeDomain {
        match self.time {
            WindowTime::Event(_) => TimeDomain::EventTime,
            WindowTime::Processing => TimeDomain::ProcessingTime,
        }
    }

    /// Whether every timestamp of the window is past its allowed lateness.
    fn is_late(&self, window: &TimeWindow) -> bool {
        self.domain() == TimeDomain::EventTime
            && window.max_timestamp().saturating_add(self.lateness_ms) <= self.watermark
    }

    /// Whether the window's regular firing time has passed (a record within
    /// the allowed lateness fires it again).
    fn is_past_end(&self, window: &TimeWindow) -> bool {
        self.domain() == TimeDomain::EventTime && window.max_timestamp() <= self.watermark
    }

    fn add_timer(&mut self, key_group: u32, key: &K, window: TimeWindow) {
        let fire = window.max_timestamp();
        // A window that appears within the allowed lateness fires on its
        // record (see `refire`), not again on the next watermark.
        if !self.is_past_end(&window) {
            self.timers
                .entry(fire)
                .or_default()
                .push((key_group, key.clone(), window));
        }
        if self.lateness_ms > 0 && self.domain() == TimeDomain::EventTime {
            self.timers
                .entry(fire.saturating_add(self.lateness_ms))
                .or_default()
                .push((key_group, key.clone(), window));
        }
        if self.domain() == TimeDomain::ProcessingTime && self.scheduled.is_none_or(|s| fire < s) {
            self.scheduled = Some(fire);
            if let Some(target) = self.target {
                self.service.schedule(target, fire);
            }
        }
    }

    fn late(&mut self, record: T) -> TaskResult {
        match self.outputs.late {
            Some(wrap) => self.out.collect(wrap(record)),
            None => {
                self.late_dropped += 1;
                Ok(())
            }
        }
    }

    /// Fires and drops every window whose timers are due at `time`.
    fn fire_timers(&mut self, time: i64) -> TaskResult {
        let processing = self.domain() == TimeDomain::ProcessingTime;
        while let Some(entry) = self.timers.first_entry() {
            let due = *entry.key();
            if due > time {
                break;
            }
            for (key_group, key, window) in entry.remove() {
                let Some(windows) = self.state.get_mut_untracked(key_group, &key) else {
                    continue;
                };
                let Some(index) = windows.iter().position(|(w, _)| *w == window) else {
                    continue;
                };
                let fire = due == window.max_timestamp();
                let purge =
                    processing || due == window.max_timestamp().saturating_add(self.lateness_ms);
                if purge {
                    let (window, acc) = windows.swap_remove(index);
                    if windows.is_empty() {
                        self.state.remove(key_group, &key);
                    } else {
                        self.state.log_key(key_group, &key);
                    }
                    if fire {
                        emit_window(
                            &mut self.function,
                            self.out.as_mut(),
                            self.outputs.result,
                            &self.location,
                            &key,
                            window,
                            &acc,
                        )?;
                    }
                } else if fire {
                    // Kept for the allowed lateness.
                    self.emit_open(key_group, &key, window)?;
                }
            }
        }
        Ok(())
    }

    /// A record of a non-merging assigner.
    fn add_to_windows(&mut self, key_group: u32, key: K, ts: i64, record: T) -> TaskResult {
        let mut assigned = WindowList::default();
        self.assigner.for_each_window(ts, |w| assigned.push(w));
        // Which of `assigned` opened with this record, and which fire again:
        // bit i for window i (a record has at most 16 windows unless the slide
        // is tiny; `spill` holds the rest).
        let (mut created, mut refire) = (WindowMask::default(), WindowMask::default());
        let mut on_time = false;
        // Look up before inserting: `entry` would clone the key (an allocation
        // for string keys) on every record, not just a key's first.
        if !self.state.contains_key(key_group, &key) {
            self.state.insert(key_group, key.clone(), Vec::new());
        }
        for (i, window) in assigned.iter().enumerate() {
            if self.is_late(&window) {
                continue;
            }
            on_time = true;
            if self.is_past_end(&window) {
                refire.set(i, window);
            }
            let (state, function, location) = (&mut self.state, &mut self.function, &self.location);
            let windows = state
                .get_mut_untracked(key_group, &key)
                .expect("inserted above");
            let slot = match windows.iter().position(|(w, _)| *w == window) {
                Some(i) => i,
                None => match guarded(location, || function.create()) {
                    Ok(acc) => {
                        windows.push((window, acc));
                        created.set(i, window);
                        windows.len() - 1
                    }
                    Err(e) => {
                        self.remove_if_empty(key_group, &key);
                        self.state.log_key(key_group, &key);
                        return Err(e);
                    }
                },
            };
            let acc = &mut windows[slot].1;
            let added = guarded(location, || function.add(acc, &record));
            if added.is_err() {
                self.state.log_key(key_group, &key);
            }
            added?;
        }
        self.remove_if_empty(key_group, &key);
        // The key's changes through `get_mut_untracked`, for incremental
        // checkpoints.
        self.state.log_key(key_group, &key);
        for window in created.windows(&assigned) {
            self.add_timer(key_group, &key, window);
        }
        for window in refire.windows(&assigned) {
            self.emit_open(key_group, &key, window)?;
        }
        if !on_time {
            self.late(record)?;
        }
        Ok(())
    }

    fn remove_if_empty(&mut self, key_group: u32, key: &K) {
        if self.state.get(key_group, key).is_some_and(Vec::is_empty) {
            self.state.remove(key_group, key);
        }
    }

    /// Emits a window that stays open: fired within the allowed lateness by
    /// its timer, or again by a late record.
    fn emit_open(&mut self, key_group: u32, key: &K, window: TimeWindow) -> TaskResult {
        let (state, function, out) = (&mut self.state, &mut self.function, self.out.as_mut());
        let Some(windows) = state.get(key_group, key) else {
            return Ok(());
        };
        let Some((_, acc)) = windows.iter().find(|(w, _)| *w == window) else {
            return Ok(());
        };
        emit_window(
            function,
            out,
            self.outputs.result,
            &self.location,
            key,
            window,
            acc,
        )
    }

    /// A record of a session assigner: its window absorbs the key's windows
    /// it touches.
    fn merge_into_windows(&mut self, key_group: u32, key: K, ts: i64, record: T) -> TaskResult {
        let mut own = None;
        self.assigner.for_each_window(ts, |w| own = Some(w));
        let own = own.expect("a session assigner gives one window");
        let mut merged = own;
        if let Some(windows) = self.state.get(key_group, &key) {
            for (w, _) in windows {
                if w.intersects(&own) {
                    merged = merged.cover(w);
                }
            }
        }
        if self.is_late(&merged) {
            return self.late(record);
        }
        if !self.state.contains_key(key_group, &key) {
            self.state.insert(key_group, key.clone(), Vec::new());
        }
        let windows = self
            .state
            .get_mut_untracked(key_group, &key)
            .expect("inserted above");
        let mut absorbed: Vec<(TimeWindow, W::Acc)> = Vec::new();
        let mut i = 0;
        while i < windows.len() {
            if windows[i].0.intersects(&own) {
                absorbed.push(windows.swap_remove(i));
            } else {
                i += 1;
            }
        }
        absorbed.sort_by_key(|(w, _)| w.start);
        let existed = absorbed.iter().any(|(w, _)| *w == merged);
        let (function, location) = (&mut self.function, &self.location);
        let acc = guarded(location, || {
            let mut acc: Option<W::Acc> = None;
            for (_, a) in absorbed {
                acc = Some(match acc {
                    None => a,
                    Some(prev) => function.merge(prev, a),
                });
            }
            let mut acc = acc.unwrap_or_else(|| function.create());
            function.add(&mut acc, &record);
            acc
        })?;
        windows.push((merged, acc));
        self.state.log_key(key_group, &key);
        if !existed {
            self.add_timer(key_group, &key, merged);
        }
        if self.is_past_end(&merged) {
            self.emit_open(key_group, &key, merged)?;
        }
        Ok(())
    }

    fn schedule_next(&mut self) {
        if self.domain() != TimeDomain::ProcessingTime {
            return;
        }
        if let Some((&next, _)) = self.timers.first_key_value() {
            if self.scheduled.is_none_or(|s| next < s) {
                self.scheduled = Some(next);
                if let Some(target) = self.target {
                    self.service.schedule(target, next);
                }
            }
        }
    }
}

impl<K, T, O, E, KF, W> Collector<T> for WindowOperator<K, T, O, E, KF, W>
where
    K: Hash + Eq + Clone,
    KF: FnMut(&T) -> K,
    W: WindowFunction<K, T, O>,
{
    fn collect(&mut self, record: T) -> TaskResult {
        let key_fn = &mut self.key_fn;
        let (key, ts) = match &self.time {
            WindowTime::Event(ts_fn) => {
                guarded(&self.location, || (key_fn(&record), ts_fn(&record)))?
            }
            WindowTime::Processing => (guarded(&self.location, || key_fn(&record))?, now_ms()),
        };
        let key_group = assign_to_key_group(&key, self.max_parallelism);
        if self.assigner.is_merging() {
            self.merge_into_windows(key_group, key, ts, record)
        } else {
            self.add_to_windows(key_group, key, ts, record)
        }
    }

    fn watermark(&mut self, watermark: i64) -> TaskResult {
        if watermark > self.watermark {
            self.watermark = watermark;
            if self.domain() == TimeDomain::EventTime {
                self.fire_timers(watermark)?;
            }
        }
        self.out.watermark(watermark)
    }

    fn watermark_status(&mut self, idle: bool) -> TaskResult {
        self.out.watermark_status(idle)
    }

    /// End of input: every window fires (as the final maximum watermark
    /// does in Flink; processing-time windows fire too instead of being
    /// lost).
    fn finish(&mut self) -> TaskResult {
        self.watermark = WATERMARK_MAX;
        self.fire_timers(WATERMARK_MAX)?;
        self.out.finish()
    }
}

impl<K, T, O, E, KF, W> ProcessingTimeTarget for WindowOperator<K, T, O, E, KF, W>
where
    K: Hash + Eq + Clone,
    W: WindowFunction<K, T, O>,
{
    fn on_processing_time(&mut self, now_ms: i64) -> TaskResult {
        if self.scheduled.is_some_and(|s| s <= now_ms) {
            self.scheduled = None;
        }
        self.fire_timers(now_ms)?;
        self.schedule_next();
        Ok(())
    }
}

impl rheon_net::codec::Codec for TimeWindow {
    fn encoded_len(&self) -> usize {
        16
    }
    fn encode(&self, out: &mut [u8]) {
        self.start.encode(out);
        self.end.encode(&mut out[8..]);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, rheon_net::codec::DecodeError> {
        Ok(TimeWindow {
            start: i64::decode(input)?,
            end: i64::decode(input)?,
        })
    }
}

/// The window contents are the operator's state; its timers are derived from
/// them on restore (every open window fires at its end, or at its end plus
/// the allowed lateness), so they are not stored.
impl<K, T, O, E, KF, W> crate::checkpoint::state::CheckpointedOperator
    for WindowOperator<K, T, O, E, KF, W>
where
    K: Hash + Eq + Clone + rheon_net::codec::Codec + Send + Sync + 'static,
    W: WindowFunction<K, T, O>,
    W::Acc: Clone + rheon_net::codec::Codec + Send + Sync,
{
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        parts: &mut crate::checkpoint::state::OperatorParts,
    ) -> TaskResult {
        let type_tag = std::any::type_name::<(K, Vec<(TimeWindow, W::Acc)>)>();
        let incremental = parts.incremental.filter(|_| W::LOG_CHANGES);
        parts.keyed.push(self.changelog.write(
            "windows",
            type_tag,
            &mut self.state,
            checkpoint_id,
            incremental,
        ));
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.changelog.notify_complete(checkpoint_id);
        Ok(())
    }

    fn restore_state(
        &mut self,
        restored: &crate::checkpoint::state::RestoredOperator<'_>,
    ) -> TaskResult {
        self.state = restored
            .keyed_state("windows")
            .map_err(|m| crate::error::TaskError::checkpoint(&self.location, m))?;
        self.changelog = ChangelogState::default();
        let open: Vec<(u32, K, TimeWindow)> = self
            .state
            .iter()
            .flat_map(|(kg, key, windows)| windows.iter().map(move |(w, _)| (kg, key.clone(), *w)))
            .collect();
        for (key_group, key, window) in open {
            self.add_timer(key_group, &key, window);
        }
        Ok(())
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
