//! `DataStream<T>` and `KeyedStream<K, T>`: the typed handles through which a
//! job is written. Each method records an operator node in the stream graph;
//! nothing runs until `StreamEnv::execute`.

use std::cell::RefCell;
use std::fmt::{Debug, Display};
use std::fs::File;
use std::hash::Hash;
use std::io::BufWriter;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use rheon_state::key_group::key_hash;
use rheon_state::keyed::KeyGroupedMap;

use crate::api::either::Either;
use crate::api::functions::{
    CheckpointedFunction, KeyedProcessFunction, OneInputOperator, OperatorContext,
};
use crate::error::{TaskError, TaskLocation, TaskResult};
use crate::graph::stream_graph::{
    downcast_collector, type_ops, Data, KeyHashFn, NodeBody, NodeId, OperatorFactory, Partitioning,
    StreamEdge, StreamGraph,
};
use crate::runtime::collector::{BoxCollector, Collector, Emitter};
use crate::runtime::file_sink::{prepare_directory, ExactlyOnceFileSink};
use crate::runtime::operators::{
    CollectSink, DiscardSink, Filter, FlatMap, KeyedReduce, KeyedSum, LineSink, Map, Transform,
    TryMap,
};
use crate::runtime::process::keyed_process;
use crate::runtime::watermark::{watermark_assigner, WatermarkStrategy};
use crate::runtime::window::{
    window_operator, AggregateFn, ProcessFn, TimeWindow, WindowAssigner, WindowFunction,
    WindowOutputs, WindowSpec, WindowTime,
};
use rheon_net::codec::Codec;

/// A stream of `T` records: the output of one operator, or the union of several.
pub struct DataStream<T> {
    graph: Rc<RefCell<StreamGraph>>,
    /// Nodes whose output this stream is (more than one after `union`), each
    /// with the partitioning of its edge to the next operator.
    inputs: Vec<(NodeId, Partitioning)>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            graph: self.graph.clone(),
            inputs: self.inputs.clone(),
            _type: PhantomData,
        }
    }
}

/// Wraps an operator constructor as a type-erased factory.
fn operator_factory<I, O, C, M>(make: M) -> OperatorFactory
where
    I: 'static,
    O: 'static,
    C: Collector<I> + 'static,
    M: Fn(&OperatorContext, TaskLocation, BoxCollector<O>) -> TaskResult<C> + Send + Sync + 'static,
{
    Arc::new(move |ctx, location, out| {
        let collector: BoxCollector<I> =
            Box::new(make(ctx, location, downcast_collector::<O>(out))?);
        Ok(Box::new(collector))
    })
}

impl<T: Data> DataStream<T> {
    pub(crate) fn new(graph: Rc<RefCell<StreamGraph>>, node: NodeId) -> Self {
        DataStream {
            graph,
            inputs: vec![(node, Partitioning::Default)],
            _type: PhantomData,
        }
    }

    /// Adds an operator consuming this stream.
    fn add_operator<O: Data>(&self, name: &str, factory: OperatorFactory) -> DataStream<O> {
        let mut graph = self.graph.borrow_mut();
        let id = graph.add_node(
            name.to_string(),
            NodeBody::Operator(factory),
            type_ops::<O>(),
        );
        for (source, partitioning) in &self.inputs {
            graph.edges.push(StreamEdge {
                source: *source,
                target: id,
                partitioning: partitioning.clone(),
            });
        }
        drop(graph);
        DataStream::new(self.graph.clone(), id)
    }

    /// Marks the nodes of this stream as taking part in checkpoints (their
    /// state, if any, is snapshotted).
    fn checkpointable(self) -> Self {
        {
            let mut graph = self.graph.borrow_mut();
            for (node, _) in &self.inputs {
                graph.nodes[*node].checkpointable = true;
            }
        }
        self
    }

    fn single_node(&self, what: &str) -> NodeId {
        assert!(
            self.inputs.len() == 1,
            "{what} applies to an operator, not to a union of streams"
        );
        self.inputs[0].0
    }

    /// Sets the parallelism of the operator that produces this stream.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        let node = self.single_node("set_parallelism");
        self.graph.borrow_mut().nodes[node].parallelism = Some(parallelism);
        self
    }

    /// Names the operator that produces this stream (errors and metrics use it).
    pub fn name(self, name: &str) -> Self {
        let node = self.single_node("name");
        self.graph.borrow_mut().nodes[node].name = name.to_string();
        self
    }

    /// Keeps the operator that produces this stream out of any chain.
    pub fn disable_chaining(self) -> Self {
        let node = self.single_node("disable_chaining");
        self.graph.borrow_mut().nodes[node].chaining = false;
        self
    }

    /// Sets the partitioning towards the next operator; on a union, for every
    /// input of the union.
    fn with_partitioning(mut self, partitioning: Partitioning) -> Self {
        for input in &mut self.inputs {
            input.1 = partitioning.clone();
        }
        self
    }

    /// Each subtask sends to the consumer subtask of the same index (needs equal
    /// parallelism; chains when possible).
    pub fn forward(self) -> Self {
        self.with_partitioning(Partitioning::Forward)
    }
    /// Round-robin over all consumer subtasks.
    pub fn rebalance(self) -> Self {
        self.with_partitioning(Partitioning::Rebalance)
    }
    /// Round-robin over a local subset of consumers (pointwise).
    pub fn rescale(self) -> Self {
        self.with_partitioning(Partitioning::Rescale)
    }
    /// Every record to every consumer subtask.
    pub fn broadcast(self) -> Self {
        self.with_partitioning(Partitioning::Broadcast)
    }

    /// The records of both streams. Each keeps the partitioning set on it
    /// before the union; one set after the union applies to both.
    pub fn union(mut self, other: DataStream<T>) -> Self {
        assert!(
            Rc::ptr_eq(&self.graph, &other.graph),
            "union of streams from different environments"
        );
        self.inputs.extend(other.inputs);
        self
    }

    pub fn map<O: Data, F>(&self, f: F) -> DataStream<O>
    where
        F: Fn(T) -> O + Clone + Send + Sync + 'static,
    {
        self.add_operator(
            "Map",
            operator_factory::<T, O, _, _>(move |_, location, out| {
                Ok(Map {
                    f: f.clone(),
                    out,
                    location,
                })
            }),
        )
        .checkpointable()
    }

    /// A map whose function may fail; an `Err` fails the job naming the operator.
    pub fn try_map<O: Data, E: Display, F>(&self, f: F) -> DataStream<O>
    where
        F: Fn(T) -> Result<O, E> + Clone + Send + Sync + 'static,
    {
        self.add_operator(
            "Map",
            operator_factory::<T, O, _, _>(move |_, location, out| {
                Ok(TryMap {
                    f: f.clone(),
                    out,
                    location,
                })
            }),
        )
        .checkpointable()
    }

    pub fn filter<F>(&self, f: F) -> DataStream<T>
    where
        F: Fn(&T) -> bool + Clone + Send + Sync + 'static,
    {
        self.add_operator(
            "Filter",
            operator_factory::<T, T, _, _>(move |_, location, out| {
                Ok(Filter {
                    f: f.clone(),
                    out,
                    location,
                })
            }),
        )
        .checkpointable()
    }

    pub fn flat_map<O: Data, I, F>(&self, f: F) -> DataStream<O>
    where
        I: IntoIterator<Item = O>,
        F: Fn(T) -> I + Clone + Send + Sync + 'static,
    {
        self.add_operator(
            "FlatMap",
            operator_factory::<T, O, _, _>(move |_, location, out| {
                Ok(FlatMap {
                    f: f.clone(),
                    out,
                    location,
                })
            }),
        )
        .checkpointable()
    }

    /// A user-written operator, cloned into every subtask.
    pub fn transform<O: Data, Op: OneInputOperator<T, O>>(
        &self,
        name: &str,
        op: Op,
    ) -> DataStream<O> {
        self.add_operator(
            name,
            operator_factory::<T, O, _, _>(move |_, location, out| {
                Ok(Transform {
                    op: op.clone(),
                    out,
                    location,
                })
            }),
        )
    }

    /// A user-written operator with operator state, cloned into every
    /// subtask: its state is part of checkpoints, so a job with
    /// checkpoints accepts it.
    pub fn transform_checkpointed<O, Op>(&self, name: &str, op: Op) -> DataStream<O>
    where
        O: Data,
        Op: OneInputOperator<T, O> + CheckpointedFunction,
    {
        self.add_operator(
            name,
            operator_factory::<T, O, _, _>(move |ctx, location, out| {
                let op = Rc::new(RefCell::new(Transform {
                    op: op.clone(),
                    out,
                    location,
                }));
                Ok(ctx.checkpointed(op))
            }),
        )
        .checkpointable()
    }

    /// Assigns event timestamps and generates watermarks (chained behind the
    /// source). The watermark travels in-band with the data; tasks combine the
    /// watermarks of their inputs as their minimum.
    pub fn assign_timestamps_and_watermarks(
        &self,
        strategy: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        self.add_operator(
            "Timestamps/Watermarks",
            operator_factory::<T, T, _, _>(move |ctx, location, out| {
                Ok(watermark_assigner(strategy.clone(), ctx, out, location))
            }),
        )
        .checkpointable()
    }

    /// Partitions by key: records with equal keys go to the same subtask (by
    /// key group), where keyed state is kept per key.
    pub fn key_by<K, KF>(&self, key_fn: KF) -> KeyedStream<K, T>
    where
        K: Hash + Eq + Clone + Send + 'static,
        KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        let hash_fn = key_fn.clone();
        let hash: KeyHashFn<T> = Arc::new(move |record: &T| key_hash(&hash_fn(record)));
        KeyedStream {
            stream: self
                .clone()
                .with_partitioning(Partitioning::Hash(Arc::new(hash))),
            key_fn: Arc::new(key_fn),
            _key: PhantomData,
        }
    }

    /// Sinks have no state to checkpoint; only the exactly-once file sink
    /// makes its output transactional.
    fn add_sink(&self, name: &str, factory: OperatorFactory) -> DataStreamSink {
        let stream: DataStream<()> = self.add_operator(name, factory).checkpointable();
        DataStreamSink { stream }
    }

    /// Writes one line per record (formatted by `format`) into part files in
    /// `directory`, exactly once: with checkpoints, lines become visible
    /// (files `part-*` renamed from hidden `.part-*.inprogress`) only when
    /// the checkpoint after them completes, or when the job ends well; after
    /// a failure, nothing written since the last checkpoint ever shows.
    pub fn sink_to_files<F>(&self, directory: impl Into<PathBuf>, format: F) -> DataStreamSink
    where
        F: Fn(&T, &mut String) + Clone + Send + Sync + 'static,
    {
        let directory: PathBuf = directory.into();
        let name = format!("File sink {}", directory.display());
        self.add_sink(
            &name,
            operator_factory::<T, (), _, _>(move |ctx, location, _| {
                prepare_directory(&directory).map_err(|message| {
                    Box::new(TaskError::Sink {
                        location: location.clone(),
                        message,
                    })
                })?;
                let sink = Rc::new(RefCell::new(ExactlyOnceFileSink::new(
                    directory.clone(),
                    format.clone(),
                    ctx.subtask,
                    ctx.checkpointing,
                    location,
                )));
                Ok(ctx.checkpointed(sink))
            }),
        )
    }

    /// Collects every record for the caller; read the handle after `execute`.
    pub fn collect(&self) -> CollectHandle<T> {
        let results = Arc::new(Mutex::new(Vec::new()));
        let shared = results.clone();
        self.add_sink(
            "Collect sink",
            operator_factory::<T, (), _, _>(move |_, _, _| {
                Ok(CollectSink {
                    local: Vec::new(),
                    results: shared.clone(),
                })
            }),
        );
        CollectHandle { results }
    }

    /// Drops every record (benchmarks).
    pub fn discard(&self) -> DataStreamSink {
        self.add_sink(
            "Discard sink",
            operator_factory::<T, (), _, _>(|_, _, _| Ok(DiscardSink { records: 0 })),
        )
    }

    /// Prints every record to stdout with `Debug`, prefixed by the subtask
    /// number when parallel (as Flink's print sink does).
    pub fn print(&self) -> DataStreamSink
    where
        T: Debug,
    {
        self.add_sink(
            "Print sink",
            operator_factory::<T, (), _, _>(|ctx, location, _| {
                Ok(LineSink {
                    format: |record: &T, line: &mut String| {
                        use std::fmt::Write;
                        let _ = write!(line, "{record:?}");
                    },
                    writer: BufWriter::new(std::io::stdout()),
                    prefix: if ctx.parallelism > 1 {
                        format!("{}> ", ctx.subtask + 1)
                    } else {
                        String::new()
                    },
                    line: String::new(),
                    target: "stdout".into(),
                    location,
                })
            }),
        )
    }

    /// Writes one line per record, formatted by `format`. At parallelism 1 the
    /// output is the file `path`; otherwise `path` is a directory holding one
    /// `part-N` file per subtask.
    pub fn write_text_file<F>(&self, path: impl Into<PathBuf>, format: F) -> DataStreamSink
    where
        F: Fn(&T, &mut String) + Clone + Send + Sync + 'static,
    {
        let path: PathBuf = path.into();
        let name = format!("Text file sink {}", path.display());
        self.add_sink(
            &name,
            operator_factory::<T, (), _, _>(move |ctx, location, _| {
                let target = if ctx.parallelism == 1 {
                    path.clone()
                } else {
                    path.join(format!("part-{}", ctx.subtask))
                };
                let error = |e: std::io::Error| {
                    Box::new(TaskError::Sink {
                        location: location.clone(),
                        message: format!("cannot create output file '{}': {e}", target.display()),
                    })
                };
                if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(error)?;
                }
                let file = File::create(&target).map_err(error)?;
                Ok(LineSink {
                    format: format.clone(),
                    writer: BufWriter::with_capacity(1 << 20, file),
                    prefix: String::new(),
                    line: String::new(),
                    target: format!("'{}'", target.display()),
                    location: location.clone(),
                })
            }),
        )
    }
}

/// The handle of a sink, to name it or set its parallelism.
pub struct DataStreamSink {
    stream: DataStream<()>,
}

impl DataStreamSink {
    pub fn name(self, name: &str) -> Self {
        DataStreamSink {
            stream: self.stream.name(name),
        }
    }
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        DataStreamSink {
            stream: self.stream.set_parallelism(parallelism),
        }
    }
    pub fn disable_chaining(self) -> Self {
        DataStreamSink {
            stream: self.stream.disable_chaining(),
        }
    }
}

/// The records a collect sink gathered, available once the job has ended.
pub struct CollectHandle<T> {
    results: Arc<Mutex<Vec<T>>>,
}

impl<T> CollectHandle<T> {
    /// Takes the records collected so far (all of them after `execute`).
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.results.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A stream partitioned by key.
pub struct KeyedStream<K, T> {
    stream: DataStream<T>,
    key_fn: Arc<dyn Fn(&T) -> K + Send + Sync>,
    _key: PhantomData<fn() -> K>,
}

impl<K, T> KeyedStream<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Data,
{
    /// Rolling reduce: per key, emits the combination of every record so far.
    pub fn reduce<F>(&self, f: F) -> DataStream<T>
    where
        K: Codec + Sync,
        T: Sync,
        F: Fn(T, T) -> T + Clone + Send + Sync + 'static,
    {
        let key_fn = self.key_fn.clone();
        self.stream
            .add_operator(
                "Keyed reduce",
                operator_factory::<T, T, _, _>(move |ctx, location, out| {
                    let key_fn = key_fn.clone();
                    let op = Rc::new(RefCell::new(KeyedReduce {
                        key_fn: move |t: &T| key_fn(t),
                        f: f.clone(),
                        state: KeyGroupedMap::new(ctx.key_group_range, ctx.max_parallelism),
                        changelog: Default::default(),
                        max_parallelism: ctx.max_parallelism,
                        out,
                        location,
                    }));
                    Ok(ctx.checkpointed(op))
                }),
            )
            .checkpointable()
    }

    /// Rolling sum of `value(record)` per key: emits `(key, sum so far)`.
    pub fn sum<N, VF>(&self, value: VF) -> DataStream<(K, N)>
    where
        N: Copy + std::ops::Add<Output = N> + Codec + Send + Sync + 'static,
        K: Codec + Sync,
        (K, N): Data,
        VF: Fn(&T) -> N + Clone + Send + Sync + 'static,
    {
        let key_fn = self.key_fn.clone();
        self.stream
            .add_operator(
                "Keyed sum",
                operator_factory::<T, (K, N), _, _>(move |ctx, location, out| {
                    let key_fn = key_fn.clone();
                    let op = Rc::new(RefCell::new(KeyedSum {
                        key_fn: move |t: &T| key_fn(t),
                        value_fn: value.clone(),
                        state: KeyGroupedMap::new(ctx.key_group_range, ctx.max_parallelism),
                        changelog: Default::default(),
                        max_parallelism: ctx.max_parallelism,
                        out,
                        location,
                    }));
                    Ok(ctx.checkpointed(op))
                }),
            )
            .checkpointable()
    }

    /// A keyed process function with per-key value state and timers, both
    /// checkpointed.
    pub fn process<O, P>(&self, function: P) -> DataStream<O>
    where
        K: Codec + Sync,
        O: Data,
        P: KeyedProcessFunction<K, T, O>,
    {
        let key_fn = self.key_fn.clone();
        self.stream
            .add_operator(
                "Keyed process",
                operator_factory::<T, O, _, _>(move |ctx, location, out| {
                    let key_fn = key_fn.clone();
                    keyed_process(move |t: &T| key_fn(t), function.clone(), ctx, out, location)
                }),
            )
            .checkpointable()
    }

    /// Event-time windows per key; `timestamp` gives a record's event time in
    /// milliseconds. Windows fire when the watermark passes their end (and
    /// at the end of a bounded input).
    pub fn window<TF>(&self, assigner: WindowAssigner, timestamp: TF) -> WindowedStream<K, T>
    where
        TF: Fn(&T) -> i64 + Send + Sync + 'static,
    {
        WindowedStream {
            keyed: self.clone(),
            spec: Arc::new(WindowSpec {
                time: WindowTime::Event(Arc::new(timestamp)),
                assigner,
                lateness_ms: 0,
            }),
            late: None,
        }
    }

    /// Processing-time windows per key: a record belongs to the windows of
    /// the wall-clock time it arrives at; windows fire when the clock passes
    /// their end, and the open ones at the end of a bounded input.
    pub fn window_processing_time(&self, assigner: WindowAssigner) -> WindowedStream<K, T> {
        WindowedStream {
            keyed: self.clone(),
            spec: Arc::new(WindowSpec {
                time: WindowTime::Processing,
                assigner,
                lateness_ms: 0,
            }),
            late: None,
        }
    }

    /// The key selector.
    pub(crate) fn key_fn(&self) -> Arc<dyn Fn(&T) -> K + Send + Sync> {
        self.key_fn.clone()
    }

    /// The stream before partitioning by key.
    pub(crate) fn inner_stream(&self) -> DataStream<T> {
        self.stream.clone().with_partitioning(Partitioning::Default)
    }

    /// The underlying stream, partitioned by key (for a custom operator).
    pub fn into_stream(self) -> DataStream<T> {
        self.stream
    }
}

impl<K, T> Clone for KeyedStream<K, T> {
    fn clone(&self) -> Self {
        KeyedStream {
            stream: self.stream.clone(),
            key_fn: self.key_fn.clone(),
            _key: PhantomData,
        }
    }
}

/// The late records of a window operator, as a stream of their own (Flink's
/// side output with an `OutputTag`): pass it to
/// [`WindowedStream::side_output_late_data`], build the window, then take
/// [`LateData::stream`].
pub struct LateData<T> {
    stream: Rc<RefCell<Option<DataStream<T>>>>,
}

impl<T> Clone for LateData<T> {
    fn clone(&self) -> Self {
        LateData {
            stream: self.stream.clone(),
        }
    }
}

impl<T> Default for LateData<T> {
    fn default() -> Self {
        LateData {
            stream: Rc::new(RefCell::new(None)),
        }
    }
}

impl<T: Data> LateData<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The late records. Panics if the window operator is not built yet.
    pub fn stream(&self) -> DataStream<T> {
        self.stream.borrow().clone().expect(
            "LateData::stream: build the window (aggregate, reduce or process) \
             after side_output_late_data first",
        )
    }
}

/// A keyed stream cut into windows.
pub struct WindowedStream<K, T> {
    keyed: KeyedStream<K, T>,
    spec: Arc<WindowSpec<T>>,
    late: Option<LateData<T>>,
}

fn identity<O>(o: O) -> O {
    o
}

impl<K, T> WindowedStream<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Data,
{
    /// Keeps each window for `lateness` after it fired: a late record in that
    /// time updates the window and fires it again. Event time only.
    pub fn allowed_lateness(mut self, lateness: std::time::Duration) -> Self {
        let spec = WindowSpec {
            time: self.spec.time.clone(),
            assigner: self.spec.assigner,
            lateness_ms: lateness.as_millis() as i64,
        };
        self.spec = Arc::new(spec);
        self
    }

    /// Sends records that arrive after their windows are gone to `late`
    /// instead of dropping them.
    pub fn side_output_late_data(mut self, late: &LateData<T>) -> Self {
        self.late = Some(late.clone());
        self
    }

    /// Incremental aggregation: each window of each key starts from `init()`,
    /// `add` folds in its records, and `result` makes the output when the
    /// window fires. Session windows need [`Self::aggregate_with_merge`].
    pub fn aggregate<Acc, O, Init, Add, Res>(
        &self,
        init: Init,
        add: Add,
        result: Res,
    ) -> DataStream<O>
    where
        K: Codec + Sync,
        Acc: Clone + Codec + Send + Sync + 'static,
        O: Data,
        Init: Fn() -> Acc + Clone + Send + Sync + 'static,
        Add: Fn(&mut Acc, &T) + Clone + Send + Sync + 'static,
        Res: Fn(&K, TimeWindow, &Acc) -> O + Clone + Send + Sync + 'static,
    {
        assert!(
            !self.spec.assigner.is_merging(),
            "session windows merge accumulators: use aggregate_with_merge"
        );
        self.build("Window aggregate", move || AggregateFn {
            init: init.clone(),
            add: add.clone(),
            merge: None::<fn(Acc, Acc) -> Acc>,
            result: result.clone(),
        })
    }

    /// Incremental aggregation that can merge accumulators (any assigner,
    /// session windows included).
    pub fn aggregate_with_merge<Acc, O, Init, Add, Merge, Res>(
        &self,
        init: Init,
        add: Add,
        merge: Merge,
        result: Res,
    ) -> DataStream<O>
    where
        K: Codec + Sync,
        Acc: Clone + Codec + Send + Sync + 'static,
        O: Data,
        Init: Fn() -> Acc + Clone + Send + Sync + 'static,
        Add: Fn(&mut Acc, &T) + Clone + Send + Sync + 'static,
        Merge: Fn(Acc, Acc) -> Acc + Clone + Send + Sync + 'static,
        Res: Fn(&K, TimeWindow, &Acc) -> O + Clone + Send + Sync + 'static,
    {
        self.build("Window aggregate", move || AggregateFn {
            init: init.clone(),
            add: add.clone(),
            merge: Some(merge.clone()),
            result: result.clone(),
        })
    }

    /// Combines each window's records pairwise with `f`; emits the result.
    pub fn reduce<F>(&self, f: F) -> DataStream<T>
    where
        K: Codec + Sync,
        T: Sync,
        F: Fn(T, T) -> T + Clone + Send + Sync + 'static,
    {
        let merge_f = f.clone();
        self.build("Window reduce", move || {
            let (f, merge_f) = (f.clone(), merge_f.clone());
            AggregateFn {
                init: || None,
                add: move |acc: &mut Option<T>, t: &T| {
                    *acc = Some(match acc.take() {
                        None => t.clone(),
                        Some(a) => f(a, t.clone()),
                    })
                },
                merge: Some(move |a: Option<T>, b: Option<T>| match (a, b) {
                    (Some(a), Some(b)) => Some(merge_f(a, b)),
                    (a, b) => a.or(b),
                }),
                result: |_: &K, _: TimeWindow, acc: &Option<T>| {
                    acc.clone().expect("a window holds at least one record")
                },
            }
        })
    }

    /// A full window function: `f` sees all records of a fired window, in
    /// arrival order, and emits any number of results.
    pub fn process<O, F>(&self, f: F) -> DataStream<O>
    where
        K: Codec + Sync,
        T: Sync,
        O: Data,
        F: Fn(&K, TimeWindow, &[T], &mut Emitter<'_, O>) + Clone + Send + Sync + 'static,
    {
        self.build("Window process", move || ProcessFn(f.clone()))
    }

    /// Adds the window operator; with a late-data side output its output is
    /// `Either<result, late record>`, split by two chained operators.
    fn build<O, W, MakeW>(&self, name: &str, make: MakeW) -> DataStream<O>
    where
        O: Data,
        K: Codec + Sync,
        W: WindowFunction<K, T, O>,
        W::Acc: Clone + Codec + Send + Sync,
        MakeW: Fn() -> W + Send + Sync + 'static,
    {
        let key_fn = self.keyed.key_fn.clone();
        let spec = self.spec.clone();
        let Some(late) = &self.late else {
            return self
                .keyed
                .stream
                .add_operator(
                    name,
                    operator_factory::<T, O, _, _>(move |ctx, location, out| {
                        let key_fn = key_fn.clone();
                        let op = window_operator(
                            move |t: &T| key_fn(t),
                            &spec,
                            make(),
                            WindowOutputs {
                                result: identity::<O>,
                                late: None,
                            },
                            ctx,
                            out,
                            location,
                        );
                        Ok(ctx.checkpointed(op.0))
                    }),
                )
                .checkpointable();
        };
        let both: DataStream<Either<O, T>> = self.keyed.stream.add_operator(
            name,
            operator_factory::<T, Either<O, T>, _, _>(move |ctx, location, out| {
                let key_fn = key_fn.clone();
                let op = window_operator(
                    move |t: &T| key_fn(t),
                    &spec,
                    make(),
                    WindowOutputs {
                        result: Either::Left,
                        late: Some(Either::Right),
                    },
                    ctx,
                    out,
                    location,
                );
                Ok(ctx.checkpointed(op.0))
            }),
        );
        let both = both.checkpointable();
        let late_stream = both.flat_map(Either::right).name("Late data");
        *late.stream.borrow_mut() = Some(late_stream);
        both.flat_map(Either::left).name(&format!("{name} results"))
    }
}
