//! The traits a user implements beyond plain closures: sources, one-input
//! operators, keyed process functions; and what the engine hands them.

use std::hash::Hash;
use std::time::Instant;

use rheon_net::codec::Codec;
use rheon_state::key_group::KeyGroupRange;

use crate::api::state::KeyedStates;
use crate::runtime::collector::Emitter;
use crate::runtime::timers::{now_ms, KeyedTimers, ProcessingTimeService, TimeDomain};

/// What an operator instance knows about where it runs.
#[derive(Clone, Debug)]
pub struct OperatorContext {
    /// The operator's id in the job (stable for the same program): what its
    /// checkpointed state is filed under.
    pub node: usize,
    /// The subtask's checkpointed operators (operators with state register).
    pub(crate) state: crate::checkpoint::state::StateRegistry,
    /// Whether the job takes checkpoints.
    pub checkpointing: bool,
    /// Name of the operator.
    pub name: String,
    /// This subtask's index, from 0.
    pub subtask: u32,
    /// Number of parallel subtasks of this operator.
    pub parallelism: u32,
    /// Number of key groups of the job.
    pub max_parallelism: u32,
    /// Key groups this subtask owns (keyed operators).
    pub key_group_range: KeyGroupRange,
    /// Index of the executor the subtask runs on.
    pub executor: usize,
    /// The task's processing-time callbacks (operators with timers).
    pub(crate) processing_time: ProcessingTimeService,
}

impl OperatorContext {
    /// Registers an operator's state with the subtask's checkpoints and
    /// returns the chain's handle on it.
    pub(crate) fn checkpointed<C>(
        &self,
        operator: std::rc::Rc<std::cell::RefCell<C>>,
    ) -> crate::runtime::collector::Shared<C>
    where
        C: crate::checkpoint::state::CheckpointedOperator + 'static,
    {
        self.state.register(self.node, &self.name, operator.clone());
        crate::runtime::collector::Shared(operator)
    }
}

/// What a source returns when polled.
pub enum SourcePoll<T> {
    /// The next record.
    Record(T),
    /// Nothing before this instant (a rate-limited or idle source).
    Wait(Instant),
    /// The source is exhausted.
    End,
}

/// A parallel source: one instance per subtask, made by the factory given to
/// `StreamEnv::add_source`. Errors are messages naming the input and position.
pub trait SourceFunction<T>: 'static {
    fn open(&mut self, _ctx: &OperatorContext) -> Result<(), String> {
        Ok(())
    }
    fn poll_next(&mut self) -> Result<SourcePoll<T>, String>;
    /// The source's position for a checkpoint, as opaque elements (one per
    /// split, say) that a restore redistributes round-robin over the new
    /// subtasks. The default declines: the source cannot be checkpointed.
    fn snapshot_state(&mut self) -> Result<Vec<Vec<u8>>, String> {
        Err(
            "this source does not support checkpoints (it does not implement snapshot_state)"
                .into(),
        )
    }
    /// Continues from this subtask's share of a checkpoint's elements
    /// (possibly none: the source then has nothing to read). Called after
    /// `open`.
    fn restore_state(&mut self, _elements: Vec<Vec<u8>>) -> Result<(), String> {
        Err("this source does not support checkpoints (it does not implement restore_state)".into())
    }
}

/// A user-written one-input operator (`DataStream::transform`), cloned into
/// every subtask. `finish` runs at the end of a bounded input.
pub trait OneInputOperator<I, O>: Clone + Send + Sync + 'static {
    fn process(&mut self, record: I, out: &mut Emitter<'_, O>);
    fn finish(&mut self, _out: &mut Emitter<'_, O>) {}
    /// The event-time watermark advanced; what is emitted here goes out before
    /// the watermark is forwarded.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Emitter<'_, O>) {}
}

/// The operator state of a [`OneInputOperator`] (Flink's
/// `CheckpointedFunction`), for `DataStream::transform_checkpointed`: a
/// job with checkpoints accepts a user operator only with it (one that
/// keeps nothing across records implements it with no elements).
pub trait CheckpointedFunction {
    /// The operator's state at a barrier, as opaque elements.
    fn snapshot_state(&mut self, checkpoint_id: u64) -> Result<Vec<Vec<u8>>, String>;
    /// Continues from a checkpoint's elements, before any record: a share
    /// of them (round-robin, Flink's list state) or all of them to keep
    /// what this subtask's keys own (union list state).
    fn restore_state(&mut self, restore: &OperatorStateRestore<'_>) -> Result<(), String>;
}

/// The operator-state elements of a checkpoint, as one subtask of a
/// (possibly rescaled) restored job sees them.
pub struct OperatorStateRestore<'a> {
    restored: &'a crate::checkpoint::state::RestoredOperator<'a>,
}

impl OperatorStateRestore<'_> {
    /// This subtask's share: element j of the checkpoint (all old subtasks'
    /// elements, in subtask order) goes to subtask `j % parallelism`, so at
    /// an unchanged parallelism each subtask gets its own elements back.
    pub fn share(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.restored.operator_state()
    }

    /// Every element of every old subtask (Flink's union list state).
    pub fn union(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.restored.operator_state_union()
    }

    /// Whether this subtask owns `key` (its key group is in its range), as
    /// hash partitioning by that key decides.
    pub fn owns_key<K: Hash + ?Sized>(&self, key: &K) -> bool {
        self.key_group_range()
            .contains(rheon_state::key_group::assign_to_key_group(
                key,
                self.max_parallelism(),
            ))
    }

    /// Key groups this subtask owns (behind a key-partitioned input).
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.restored.key_group_range()
    }

    /// Number of key groups of the job.
    pub fn max_parallelism(&self) -> u32 {
        self.restored.max_parallelism()
    }
}

impl<Op: CheckpointedFunction, O> crate::checkpoint::state::CheckpointedOperator
    for crate::runtime::operators::Transform<Op, O>
{
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        parts: &mut crate::checkpoint::state::OperatorParts,
    ) -> crate::error::TaskResult {
        let op = &mut self.op;
        parts.operator_state = crate::runtime::collector::guarded(&self.location, || {
            op.snapshot_state(checkpoint_id)
        })?
        .map_err(|message| crate::error::TaskError::checkpoint(&self.location, message))?;
        Ok(())
    }

    fn restore_state(
        &mut self,
        restored: &crate::checkpoint::state::RestoredOperator<'_>,
    ) -> crate::error::TaskResult {
        let restore = OperatorStateRestore { restored };
        let op = &mut self.op;
        crate::runtime::collector::guarded(&self.location, || op.restore_state(&restore))?
            .map_err(|message| crate::error::TaskError::checkpoint(&self.location, message))
    }
}

/// A keyed process function with per-key state and timers, cloned into
/// every subtask (`KeyedStream::process`).
///
/// Its state is the value of `State` per key, handed to every call, plus
/// any named states (value, list, map, reducing, aggregating; see
/// [`crate::api::state`]) it registers in [`open`](Self::open) and reaches
/// through the context. All of it is checkpointed.
pub trait KeyedProcessFunction<K, I, O>: Clone + Send + Sync + 'static {
    /// The per-key value state; a `Codec` so that checkpoints can write it
    /// (derive one with `rheon_net::codec_struct!`). `()` for none.
    type State: Clone + Codec + Send + Sync + 'static;
    /// Registers the function's named state handles with this subtask's
    /// states, before any record (and before a restore). An error fails the
    /// task with the message.
    fn open(&mut self, _states: &mut KeyedStates<K>) -> Result<(), String> {
        Ok(())
    }
    fn process_element(
        &mut self,
        key: &K,
        record: I,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Emitter<'_, O>,
    );
    /// A timer of `key` registered through the context fired: event-time
    /// timers when the watermark reaches `timestamp`, processing-time timers
    /// when the wall clock does. Pending processing-time timers do not fire
    /// at the end of a bounded input (as in Flink); event-time timers do,
    /// since the watermark then jumps to the maximum.
    fn on_timer(
        &mut self,
        _key: &K,
        _timestamp: i64,
        _domain: TimeDomain,
        _state: &mut ValueStateRef<'_, Self::State>,
        _ctx: &mut KeyedContext<'_, K>,
        _out: &mut Emitter<'_, O>,
    ) {
    }
}

/// What a keyed function can ask of the engine for the current key: the
/// watermark, the clock, timers, and its named states (`ctx.list(&handle)`
/// and the like, in [`crate::api::state`]). Timers are kept per key group
/// with the key's state; one (key, timestamp) pair is one timer however often
/// it is registered.
pub struct KeyedContext<'a, K> {
    pub(crate) key_group: u32,
    pub(crate) key: &'a K,
    pub(crate) watermark: i64,
    pub(crate) event_timers: &'a mut KeyedTimers<K>,
    pub(crate) processing_timers: &'a mut KeyedTimers<K>,
    pub(crate) states: &'a mut KeyedStates<K>,
}

impl<K: Hash + Eq + Clone> KeyedContext<'_, K> {
    /// The current event-time watermark (`WATERMARK_MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }
    /// Wall-clock milliseconds since the epoch.
    pub fn current_processing_time(&self) -> i64 {
        now_ms()
    }
    /// Calls `on_timer` once the watermark reaches `timestamp`.
    pub fn register_event_time_timer(&mut self, timestamp: i64) {
        self.event_timers
            .register(self.key_group, self.key, timestamp);
    }
    pub fn delete_event_time_timer(&mut self, timestamp: i64) {
        self.event_timers
            .delete(self.key_group, self.key, timestamp);
    }
    /// Calls `on_timer` once the wall clock reaches `timestamp`.
    pub fn register_processing_time_timer(&mut self, timestamp: i64) {
        self.processing_timers
            .register(self.key_group, self.key, timestamp);
    }
    pub fn delete_processing_time_timer(&mut self, timestamp: i64) {
        self.processing_timers
            .delete(self.key_group, self.key, timestamp);
    }
}

/// What a [`ValueStateRef`] did to the stored value.
pub(crate) struct StateChanges<S> {
    pub(crate) cleared: bool,
    pub(crate) new_value: Option<S>,
    pub(crate) written_in_place: bool,
}

/// The current key's value state inside `process_element`.
pub struct ValueStateRef<'a, S> {
    current: Option<&'a mut S>,
    new_value: Option<S>,
    cleared: bool,
    /// The stored value may have been changed in place.
    written: bool,
}

impl<'a, S> ValueStateRef<'a, S> {
    pub(crate) fn new(current: Option<&'a mut S>) -> Self {
        ValueStateRef {
            current,
            new_value: None,
            cleared: false,
            written: false,
        }
    }
    pub(crate) fn exists(&self) -> bool {
        self.current.is_some()
    }
    /// What the function did: cleared the value, set a new one (to store),
    /// or possibly changed the stored one in place.
    pub(crate) fn into_changes(self) -> StateChanges<S> {
        StateChanges {
            cleared: self.cleared,
            new_value: self.new_value,
            written_in_place: self.written,
        }
    }

    /// The value for the current key, if any.
    pub fn value(&self) -> Option<&S> {
        if self.cleared {
            return self.new_value.as_ref();
        }
        match &self.current {
            Some(v) => Some(&**v),
            None => self.new_value.as_ref(),
        }
    }

    /// The value for the current key, to change in place (no clone of a
    /// large state per record).
    pub fn value_mut(&mut self) -> Option<&mut S> {
        if self.cleared {
            return self.new_value.as_mut();
        }
        match &mut self.current {
            Some(v) => {
                self.written = true;
                Some(&mut **v)
            }
            None => self.new_value.as_mut(),
        }
    }

    /// Sets the value for the current key.
    pub fn update(&mut self, value: S) {
        match (&mut self.current, self.cleared) {
            (Some(slot), false) => {
                **slot = value;
                self.written = true;
            }
            _ => self.new_value = Some(value),
        }
    }

    /// Removes the value of the current key.
    pub fn clear(&mut self) {
        self.cleared = true;
        self.new_value = None;
    }
}
