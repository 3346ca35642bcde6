//! Two-input streams: `connect` with a co-map or a keyed co-process function
//! (shared keyed state and timers over both inputs), window joins and
//! interval joins.
//!
//! Both inputs travel as one stream of [`Either`]: each input is tagged by an
//! operator chained to its producer (so an input keeps its own partitioning,
//! as in `union`), and the consumer is a one-input operator that dispatches
//! on the tag. This is how Flink builds window joins (a tagged union into a
//! window) and gives connect the same semantics as its two-input operators:
//! the consumer's watermark is the minimum over the channels of both inputs.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::api::either::Either;
use crate::api::functions::{KeyedContext, KeyedProcessFunction, ValueStateRef};
use crate::api::state::KeyedStates;
use crate::api::stream::{DataStream, KeyedStream};
use crate::graph::stream_graph::Data;
use crate::runtime::collector::Emitter;
use crate::runtime::timers::TimeDomain;
use crate::runtime::window::{TimeWindow, WindowAssigner};
use rheon_net::codec::Codec;

/// Two streams whose records one operator consumes together.
pub struct ConnectedStreams<A, B> {
    left: DataStream<A>,
    right: DataStream<B>,
}

impl<A: Data> DataStream<A> {
    /// Connects this stream with `other` for a two-input operator.
    pub fn connect<B: Data>(&self, other: &DataStream<B>) -> ConnectedStreams<A, B> {
        ConnectedStreams {
            left: self.clone(),
            right: other.clone(),
        }
    }

    /// Joins this stream with `other` on equal keys within windows.
    pub fn join<B: Data>(&self, other: &DataStream<B>) -> JoinedStreams<A, B> {
        JoinedStreams {
            connected: self.connect(other),
        }
    }
}

impl<A: Data, B: Data> ConnectedStreams<A, B> {
    /// Both inputs as one tagged stream.
    fn tagged(&self) -> DataStream<Either<A, B>> {
        let left = self.left.map(Either::Left).name("Tag first input");
        let right = self.right.map(Either::Right).name("Tag second input");
        left.union(right)
    }

    /// A co-map: `fa` for records of the first input, `fb` for the second.
    pub fn map<O, FA, FB>(&self, fa: FA, fb: FB) -> DataStream<O>
    where
        O: Data,
        FA: Fn(A) -> O + Clone + Send + Sync + 'static,
        FB: Fn(B) -> O + Clone + Send + Sync + 'static,
    {
        self.tagged()
            .map(move |e| match e {
                Either::Left(a) => fa(a),
                Either::Right(b) => fb(b),
            })
            .name("Co-map")
    }

    /// Partitions both inputs by key, `ka` for the first and `kb` for the
    /// second: records with equal keys meet in the same subtask.
    pub fn key_by<K, KA, KB>(&self, ka: KA, kb: KB) -> KeyedConnectedStreams<K, A, B>
    where
        K: Hash + Eq + Clone + Send + 'static,
        KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
        KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        KeyedConnectedStreams {
            keyed: self.tagged().key_by(move |e: &Either<A, B>| match e {
                Either::Left(a) => ka(a),
                Either::Right(b) => kb(b),
            }),
        }
    }
}

/// A keyed co-process function: one value state per key shared by both
/// inputs, and timers (`KeyedStream::connect(..).process`).
pub trait KeyedCoProcessFunction<K, A, B, O>: Clone + Send + Sync + 'static {
    /// The per-key value state, checkpointed like a process function's.
    type State: Clone + Codec + Send + Sync + 'static;
    /// Registers the function's named states (see
    /// [`KeyedProcessFunction::open`]).
    fn open(&mut self, _states: &mut KeyedStates<K>) -> Result<(), String> {
        Ok(())
    }
    fn process_element1(
        &mut self,
        key: &K,
        record: A,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Emitter<'_, O>,
    );
    fn process_element2(
        &mut self,
        key: &K,
        record: B,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Emitter<'_, O>,
    );
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

/// A co-process function as a process function over the tagged stream.
struct CoProcess<P, A, B>(P, PhantomData<fn(A, B)>);

impl<P: Clone, A, B> Clone for CoProcess<P, A, B> {
    fn clone(&self) -> Self {
        CoProcess(self.0.clone(), PhantomData)
    }
}

impl<K, A, B, O, P> KeyedProcessFunction<K, Either<A, B>, O> for CoProcess<P, A, B>
where
    A: 'static,
    B: 'static,
    P: KeyedCoProcessFunction<K, A, B, O>,
{
    type State = P::State;

    fn open(&mut self, states: &mut KeyedStates<K>) -> Result<(), String> {
        self.0.open(states)
    }

    fn process_element(
        &mut self,
        key: &K,
        record: Either<A, B>,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Emitter<'_, O>,
    ) {
        match record {
            Either::Left(a) => self.0.process_element1(key, a, state, ctx, out),
            Either::Right(b) => self.0.process_element2(key, b, state, ctx, out),
        }
    }

    fn on_timer(
        &mut self,
        key: &K,
        timestamp: i64,
        domain: TimeDomain,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Emitter<'_, O>,
    ) {
        self.0.on_timer(key, timestamp, domain, state, ctx, out)
    }
}

/// Two inputs partitioned by the same key.
pub struct KeyedConnectedStreams<K, A, B> {
    keyed: KeyedStream<K, Either<A, B>>,
}

impl<K, A, B> KeyedConnectedStreams<K, A, B>
where
    K: Hash + Eq + Clone + Send + 'static,
    A: Data,
    B: Data,
{
    /// Runs a keyed co-process function over both inputs.
    pub fn process<O, P>(&self, function: P) -> DataStream<O>
    where
        K: Codec + Sync,
        O: Data,
        P: KeyedCoProcessFunction<K, A, B, O>,
    {
        self.keyed
            .process(CoProcess(function, PhantomData))
            .name("Keyed co-process")
    }

    /// The tagged stream, keyed (for windows over both inputs).
    pub fn into_keyed(self) -> KeyedStream<K, Either<A, B>> {
        self.keyed
    }
}

impl<K, A> KeyedStream<K, A>
where
    K: Hash + Eq + Clone + Send + 'static,
    A: Data,
{
    /// Connects two keyed streams (keyed by the same key type).
    pub fn connect<B: Data>(&self, other: &KeyedStream<K, B>) -> KeyedConnectedStreams<K, A, B> {
        let (ka, kb) = (self.key_fn(), other.key_fn());
        self.inner_stream()
            .connect(&other.inner_stream())
            .key_by(move |a: &A| ka(a), move |b: &B| kb(b))
    }

    /// Joins with `other` by key where the other record's time lies within
    /// an interval around this one's (Flink's interval join).
    pub fn interval_join<B, TA, TB>(
        &self,
        other: &KeyedStream<K, B>,
        timestamp_a: TA,
        timestamp_b: TB,
    ) -> IntervalJoin<K, A, B>
    where
        B: Data,
        TA: Fn(&A) -> i64 + Send + Sync + 'static,
        TB: Fn(&B) -> i64 + Send + Sync + 'static,
    {
        IntervalJoin {
            connected: self.connect(other),
            timestamp_a: Arc::new(timestamp_a),
            timestamp_b: Arc::new(timestamp_b),
        }
    }
}

/// `a.join(b)`: choose the keys next.
pub struct JoinedStreams<A, B> {
    connected: ConnectedStreams<A, B>,
}

impl<A: Data, B: Data> JoinedStreams<A, B> {
    /// Joins records whose keys are equal: `ka` of the first input, `kb` of
    /// the second.
    pub fn key_by<K, KA, KB>(&self, ka: KA, kb: KB) -> KeyedJoin<K, A, B>
    where
        K: Hash + Eq + Clone + Send + 'static,
        KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
        KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        KeyedJoin {
            connected: self.connected.key_by(ka, kb),
        }
    }
}

/// A keyed join: choose its event-time windows next.
pub struct KeyedJoin<K, A, B> {
    connected: KeyedConnectedStreams<K, A, B>,
}

impl<K, A, B> KeyedJoin<K, A, B>
where
    K: Hash + Eq + Clone + Codec + Send + Sync + 'static,
    A: Data + Sync,
    B: Data + Sync,
{
    /// Joins within the event-time windows of `assigner`, with the time of
    /// each input's records.
    pub fn window<TA, TB>(
        self,
        assigner: WindowAssigner,
        timestamp_a: TA,
        timestamp_b: TB,
    ) -> WindowJoin<K, A, B>
    where
        TA: Fn(&A) -> i64 + Send + Sync + 'static,
        TB: Fn(&B) -> i64 + Send + Sync + 'static,
    {
        WindowJoin {
            windowed: self.connected.into_keyed().window(
                assigner,
                move |e: &Either<A, B>| match e {
                    Either::Left(a) => timestamp_a(a),
                    Either::Right(b) => timestamp_b(b),
                },
            ),
        }
    }
}

/// A window join, ready for its join function.
pub struct WindowJoin<K, A, B> {
    windowed: crate::api::stream::WindowedStream<K, Either<A, B>>,
}

impl<K, A, B> WindowJoin<K, A, B>
where
    K: Hash + Eq + Clone + Codec + Send + Sync + 'static,
    A: Data + Sync,
    B: Data + Sync,
{
    /// Emits `f(a, b)` for every pair of records of a key in a window (an
    /// inner join), when the window fires.
    pub fn apply<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Data,
        F: Fn(&A, &B) -> O + Clone + Send + Sync + 'static,
    {
        self.process(
            move |_key: &K, _w: TimeWindow, a: &A, b: &B, out: &mut Emitter<'_, O>| {
                out.emit(f(a, b))
            },
        )
    }

    /// Calls `f` for every pair of records of a key in a window, with the
    /// key and the window; `f` emits what it wants.
    pub fn process<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Data,
        F: Fn(&K, TimeWindow, &A, &B, &mut Emitter<'_, O>) + Clone + Send + Sync + 'static,
    {
        self.windowed
            .process(
                move |key: &K, window: TimeWindow, records: &[Either<A, B>], out| {
                    for a in records.iter().filter_map(|e| match e {
                        Either::Left(a) => Some(a),
                        Either::Right(_) => None,
                    }) {
                        for b in records.iter().filter_map(|e| match e {
                            Either::Left(_) => None,
                            Either::Right(b) => Some(b),
                        }) {
                            f(key, window, a, b, out);
                        }
                    }
                },
            )
            .name("Window join")
    }
}

/// An interval join, ready for its bounds.
pub struct IntervalJoin<K, A, B> {
    connected: KeyedConnectedStreams<K, A, B>,
    timestamp_a: Arc<dyn Fn(&A) -> i64 + Send + Sync>,
    timestamp_b: Arc<dyn Fn(&B) -> i64 + Send + Sync>,
}

impl<K, A, B> IntervalJoin<K, A, B>
where
    K: Hash + Eq + Clone + Send + 'static,
    A: Data,
    B: Data,
{
    /// Pairs `a` with every `b` of the same key whose time lies in
    /// `[time(a) + lower, time(a) + upper]` (both inclusive, as Flink's
    /// default; `lower` may be negative).
    pub fn between(self, lower_ms: i64, upper_ms: i64) -> IntervalJoinBounded<K, A, B> {
        assert!(
            lower_ms <= upper_ms,
            "interval join: lower bound {lower_ms} ms is above upper bound {upper_ms} ms"
        );
        IntervalJoinBounded {
            join: self,
            lower: lower_ms,
            upper: upper_ms,
        }
    }

    /// `between` with durations, both after the first record's time.
    pub fn between_durations(
        self,
        lower: Duration,
        upper: Duration,
    ) -> IntervalJoinBounded<K, A, B> {
        self.between(lower.as_millis() as i64, upper.as_millis() as i64)
    }
}

/// An interval join with its bounds.
pub struct IntervalJoinBounded<K, A, B> {
    join: IntervalJoin<K, A, B>,
    lower: i64,
    upper: i64,
}

impl<K, A, B> IntervalJoinBounded<K, A, B>
where
    K: Hash + Eq + Clone + Send + 'static,
    A: Data,
    B: Data,
{
    /// Calls `f(a, b, out)` for every matching pair, as soon as both have
    /// arrived. Records later than the watermark are dropped (as in Flink).
    pub fn process<O, F>(&self, f: F) -> DataStream<O>
    where
        K: Codec + Sync,
        A: Sync,
        B: Sync,
        O: Data,
        F: Fn(&A, &B, &mut Emitter<'_, O>) + Clone + Send + Sync + 'static,
    {
        self.join
            .connected
            .process(IntervalJoinFn {
                lower: self.lower,
                upper: self.upper,
                timestamp_a: self.join.timestamp_a.clone(),
                timestamp_b: self.join.timestamp_b.clone(),
                f,
            })
            .name("Interval join")
    }
}

/// The records of one key waiting for matches, by time.
#[derive(Clone)]
pub struct IntervalBuffers<A, B> {
    left: BTreeMap<i64, Vec<A>>,
    right: BTreeMap<i64, Vec<B>>,
}
rheon_net::codec_struct!(IntervalBuffers<A, B> { left, right });

struct IntervalJoinFn<A, B, F> {
    lower: i64,
    upper: i64,
    timestamp_a: Arc<dyn Fn(&A) -> i64 + Send + Sync>,
    timestamp_b: Arc<dyn Fn(&B) -> i64 + Send + Sync>,
    f: F,
}

impl<A, B, F: Clone> Clone for IntervalJoinFn<A, B, F> {
    fn clone(&self) -> Self {
        IntervalJoinFn {
            lower: self.lower,
            upper: self.upper,
            timestamp_a: self.timestamp_a.clone(),
            timestamp_b: self.timestamp_b.clone(),
            f: self.f.clone(),
        }
    }
}

fn buffers<'s, A, B>(
    state: &'s mut ValueStateRef<'_, IntervalBuffers<A, B>>,
) -> &'s mut IntervalBuffers<A, B> {
    if state.value().is_none() {
        state.update(IntervalBuffers {
            left: BTreeMap::new(),
            right: BTreeMap::new(),
        });
    }
    state.value_mut().expect("set above")
}

impl<K, A, B, O, F> KeyedCoProcessFunction<K, A, B, O> for IntervalJoinFn<A, B, F>
where
    K: Hash + Eq + Clone,
    A: Clone + Codec + Send + Sync + 'static,
    B: Clone + Codec + Send + Sync + 'static,
    F: Fn(&A, &B, &mut Emitter<'_, O>) + Clone + Send + Sync + 'static,
{
    type State = IntervalBuffers<A, B>;

    fn process_element1(
        &mut self,
        _key: &K,
        a: A,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Emitter<'_, O>,
    ) {
        let ts = (self.timestamp_a)(&a);
        if ts <= ctx.current_watermark() {
            return;
        }
        let buffers = buffers(state);
        let (from, to) = (ts.saturating_add(self.lower), ts.saturating_add(self.upper));
        for bs in buffers.right.range(from..=to).map(|(_, bs)| bs) {
            for b in bs {
                (self.f)(&a, b, out);
            }
        }
        buffers.left.entry(ts).or_default().push(a);
        ctx.register_event_time_timer(ts.saturating_add(self.upper.max(0)));
    }

    fn process_element2(
        &mut self,
        _key: &K,
        b: B,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Emitter<'_, O>,
    ) {
        let ts = (self.timestamp_b)(&b);
        if ts <= ctx.current_watermark() {
            return;
        }
        let buffers = buffers(state);
        // a matches b when ts(b) - upper <= ts(a) <= ts(b) - lower.
        let (from, to) = (ts.saturating_sub(self.upper), ts.saturating_sub(self.lower));
        for a_s in buffers.left.range(from..=to).map(|(_, a_s)| a_s) {
            for a in a_s {
                (self.f)(a, &b, out);
            }
        }
        buffers.right.entry(ts).or_default().push(b);
        ctx.register_event_time_timer(ts.saturating_add((-self.lower).max(0)));
    }

    /// Drops what no future record can match any more.
    fn on_timer(
        &mut self,
        _key: &K,
        timestamp: i64,
        _domain: TimeDomain,
        state: &mut ValueStateRef<'_, Self::State>,
        _ctx: &mut KeyedContext<'_, K>,
        _out: &mut Emitter<'_, O>,
    ) {
        let Some(buffers) = state.value_mut() else {
            return;
        };
        let keep_left = timestamp
            .saturating_sub(self.upper.max(0))
            .saturating_add(1);
        buffers.left = buffers.left.split_off(&keep_left);
        let keep_right = timestamp
            .saturating_sub((-self.lower).max(0))
            .saturating_add(1);
        buffers.right = buffers.right.split_off(&keep_right);
        if buffers.left.is_empty() && buffers.right.is_empty() {
            state.clear();
        }
    }
}
