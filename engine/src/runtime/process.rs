//! The keyed process operator: a user function with a value state per key,
//! the named states it registers (`api::state`), and event- and
//! processing-time timers, all kept per key group.
//!
//! Event-time timers fire when a watermark reaches them, before the
//! watermark is forwarded; processing-time timers fire from the task's
//! processing-time service, between records. The operator sits in an
//! `Rc<RefCell<..>>` shared by the chain and the service.
//!
//! With checkpoints, the values, the named states and the timers of both
//! domains are keyed state of the snapshot; a restore rebuilds the timer
//! queues from them.
//!
//! Invariants: the function sees the state of exactly the key it is called
//! for; the operator has at most one pending service deadline it relies on,
//! the earliest of its processing-time timers (stale callbacks are harmless).

use std::cell::RefCell;
use std::hash::Hash;
use std::marker::PhantomData;
use std::rc::Rc;

use rheon_net::codec::Codec;
use rheon_state::key_group::assign_to_key_group;
use rheon_state::keyed::KeyGroupedMap;

use crate::api::functions::{KeyedContext, KeyedProcessFunction, OperatorContext, ValueStateRef};
use crate::api::state::{KeyedStates, StateKey};
use crate::checkpoint::changelog::ChangelogState;
use crate::checkpoint::state::{CheckpointedOperator, OperatorParts, RestoredOperator};
use crate::error::{TaskError, TaskLocation, TaskResult};
use crate::runtime::collector::{guarded, BoxCollector, Collector, Emitter, Shared};
use crate::runtime::timers::{
    KeyedTimers, ProcessingTimeService, ProcessingTimeTarget, TargetId, TimeDomain,
};
use crate::runtime::watermark::WATERMARK_MIN;

pub(crate) struct KeyedProcess<KF, P: KeyedProcessFunction<K, I, O>, K, I, O> {
    key_fn: KF,
    function: P,
    state: KeyGroupedMap<K, P::State>,
    /// The named states the function registered in `open`.
    states: KeyedStates<K>,
    event_timers: KeyedTimers<K>,
    processing_timers: KeyedTimers<K>,
    /// Incremental checkpoints of `state` and of the two timer maps.
    changelogs: Changelogs<K, P::State>,
    service: ProcessingTimeService,
    target: Option<TargetId>,
    /// The service deadline this operator waits for, if any.
    scheduled: Option<i64>,
    watermark: i64,
    max_parallelism: u32,
    out: BoxCollector<O>,
    location: TaskLocation,
    _types: PhantomData<fn(I)>,
}

/// The operator as its chain and its task's services hold it.
type SharedProcess<KF, P, K, I, O> = Shared<KeyedProcess<KF, P, K, I, O>>;

/// Builds the operator for one subtask, registered with its task's
/// processing-time service and checkpoints.
pub(crate) fn keyed_process<K, I, O, KF, P>(
    key_fn: KF,
    function: P,
    ctx: &OperatorContext,
    out: BoxCollector<O>,
    location: TaskLocation,
) -> TaskResult<SharedProcess<KF, P, K, I, O>>
where
    K: Hash + Eq + Clone + Codec + Send + Sync + 'static,
    I: 'static,
    O: 'static,
    KF: FnMut(&I) -> K + 'static,
    P: KeyedProcessFunction<K, I, O>,
{
    let mut function = function;
    let mut states = KeyedStates::new(ctx.key_group_range, ctx.max_parallelism);
    guarded(&location, || function.open(&mut states))?
        .map_err(|message| TaskError::user_function(&location, message))?;
    let op = Rc::new(RefCell::new(KeyedProcess {
        key_fn,
        function,
        state: KeyGroupedMap::new(ctx.key_group_range, ctx.max_parallelism),
        states,
        event_timers: KeyedTimers::new(ctx.key_group_range, ctx.max_parallelism),
        processing_timers: KeyedTimers::new(ctx.key_group_range, ctx.max_parallelism),
        changelogs: Changelogs::default(),
        service: ctx.processing_time.clone(),
        target: None,
        scheduled: None,
        watermark: WATERMARK_MIN,
        max_parallelism: ctx.max_parallelism,
        out,
        location,
        _types: PhantomData,
    }));
    let target = ctx.processing_time.register(op.clone());
    op.borrow_mut().target = Some(target);
    Ok(ctx.checkpointed(op))
}

/// The incremental-checkpoint bookkeeping of a keyed process function's
/// three keyed states.
struct Changelogs<K, S> {
    values: ChangelogState<K, S>,
    event_timers: ChangelogState<K, Vec<i64>>,
    processing_timers: ChangelogState<K, Vec<i64>>,
}

impl<K, S> Default for Changelogs<K, S> {
    fn default() -> Self {
        Changelogs {
            values: ChangelogState::default(),
            event_timers: ChangelogState::default(),
            processing_timers: ChangelogState::default(),
        }
    }
}

/// What the user function is called for.
enum Call<I> {
    Element(I),
    Timer(i64, TimeDomain),
}

impl<K, I, O, KF, P> KeyedProcess<KF, P, K, I, O>
where
    K: StateKey,
    P: KeyedProcessFunction<K, I, O>,
{
    /// Calls the function for `key` with its state and timers, then stores
    /// what it did to the state.
    fn call(&mut self, key_group: u32, key: &K, call: Call<I>) -> TaskResult {
        let mut emitter = Emitter::new(self.out.as_mut());
        let function = &mut self.function;
        let mut ctx = KeyedContext {
            key_group,
            key,
            watermark: self.watermark,
            event_timers: &mut self.event_timers,
            processing_timers: &mut self.processing_timers,
            states: &mut self.states,
        };
        let (existed, changes) = {
            // Untracked: the changes are logged below, once the call is done.
            let mut state = ValueStateRef::new(self.state.get_mut_untracked(key_group, key));
            let existed = state.exists();
            guarded(&self.location, || match call {
                Call::Element(record) => {
                    function.process_element(key, record, &mut state, &mut ctx, &mut emitter)
                }
                Call::Timer(time, domain) => {
                    function.on_timer(key, time, domain, &mut state, &mut ctx, &mut emitter)
                }
            })?;
            (existed, state.into_changes())
        };
        if let Some(value) = changes.new_value {
            self.state.insert(key_group, key.clone(), value);
        } else if changes.cleared && existed {
            self.state.remove(key_group, key);
        } else if changes.written_in_place {
            self.state.log_key(key_group, key);
        }
        emitter.into_result()?;
        self.schedule_processing_time();
        Ok(())
    }

    /// Asks the service for a callback at the earliest processing-time timer
    /// if it is earlier than the one already asked for.
    fn schedule_processing_time(&mut self) {
        if let Some(next) = self.processing_timers.next_time() {
            if self.scheduled.is_none_or(|s| next < s) {
                self.scheduled = Some(next);
                if let Some(target) = self.target {
                    self.service.schedule(target, next);
                }
            }
        }
    }
}

impl<K, I, O, KF, P> Collector<I> for KeyedProcess<KF, P, K, I, O>
where
    K: StateKey,
    KF: FnMut(&I) -> K,
    P: KeyedProcessFunction<K, I, O>,
{
    fn collect(&mut self, record: I) -> TaskResult {
        let key_fn = &mut self.key_fn;
        let key = guarded(&self.location, || key_fn(&record))?;
        let key_group = assign_to_key_group(&key, self.max_parallelism);
        self.call(key_group, &key, Call::Element(record))
    }

    fn finish(&mut self) -> TaskResult {
        self.out.finish()
    }

    fn watermark(&mut self, watermark: i64) -> TaskResult {
        if watermark > self.watermark {
            self.watermark = watermark;
            while let Some((time, key_group, key)) = self.event_timers.pop_due(watermark) {
                self.call(key_group, &key, Call::Timer(time, TimeDomain::EventTime))?;
            }
        }
        self.out.watermark(watermark)
    }

    fn watermark_status(&mut self, idle: bool) -> TaskResult {
        self.out.watermark_status(idle)
    }
}

impl<K, I, O, KF, P> ProcessingTimeTarget for KeyedProcess<KF, P, K, I, O>
where
    K: StateKey,
    P: KeyedProcessFunction<K, I, O>,
{
    fn on_processing_time(&mut self, now_ms: i64) -> TaskResult {
        if self.scheduled.is_some_and(|s| s <= now_ms) {
            self.scheduled = None;
        }
        while let Some((time, key_group, key)) = self.processing_timers.pop_due(now_ms) {
            self.call(
                key_group,
                &key,
                Call::Timer(time, TimeDomain::ProcessingTime),
            )?;
        }
        self.schedule_processing_time();
        Ok(())
    }
}

/// The keyed process operator's checkpointed state: the value per key and
/// the live timers per key (both domains), each one keyed state of the
/// snapshot. The timer queues are rebuilt from the timers on restore.
impl<K, I, O, KF, P> CheckpointedOperator for KeyedProcess<KF, P, K, I, O>
where
    K: Hash + Eq + Clone + Codec + Send + Sync + 'static,
    P: KeyedProcessFunction<K, I, O>,
{
    fn snapshot_state(&mut self, checkpoint_id: u64, parts: &mut OperatorParts) -> TaskResult {
        let values_tag = std::any::type_name::<(K, P::State)>();
        let timers_tag = std::any::type_name::<(K, Vec<i64>)>();
        let (logs, incremental) = (&mut self.changelogs, parts.incremental);
        parts.keyed.extend([
            logs.values.write(
                "values",
                values_tag,
                &mut self.state,
                checkpoint_id,
                incremental,
            ),
            logs.event_timers.write(
                "event-timers",
                timers_tag,
                self.event_timers.per_key_mut(),
                checkpoint_id,
                incremental,
            ),
            logs.processing_timers.write(
                "processing-timers",
                timers_tag,
                self.processing_timers.per_key_mut(),
                checkpoint_id,
                incremental,
            ),
        ]);
        parts
            .keyed
            .extend(self.states.snapshot(checkpoint_id, incremental));
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        let logs = &mut self.changelogs;
        logs.values.notify_complete(checkpoint_id);
        logs.event_timers.notify_complete(checkpoint_id);
        logs.processing_timers.notify_complete(checkpoint_id);
        self.states.notify_complete(checkpoint_id);
        Ok(())
    }

    fn restore_state(&mut self, restored: &RestoredOperator<'_>) -> TaskResult {
        self.states
            .check_restorable(restored)
            .map_err(|message| TaskError::incompatible_state(&self.location, message))?;
        let failed = |message: String| TaskError::checkpoint(&self.location, message);
        self.state = restored.keyed_state("values").map_err(failed)?;
        let event_timers = restored.keyed_state("event-timers").map_err(failed)?;
        let processing_timers = restored.keyed_state("processing-timers").map_err(failed)?;
        self.event_timers.restore(event_timers);
        self.processing_timers.restore(processing_timers);
        self.states.restore(restored).map_err(failed)?;
        // A restored job starts its chains with new bases.
        self.changelogs = Changelogs::default();
        self.schedule_processing_time();
        Ok(())
    }
}
