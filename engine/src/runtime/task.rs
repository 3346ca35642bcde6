//! A subtask: one parallel instance of a job vertex, running as a glommio task
//! on the executor that owns its slot.
//!
//! Building: the task reserves its writers' segments from the executor's pool,
//! opens its output channels and input gate, and instantiates the vertex's
//! operator chain from the tail up (each operator receives the collector of
//! its output). Running: a source task pulls records from its source driver; a
//! network task takes buffers from its input gate. Both stop pulling while a
//! writer is blocked, flush partial buffers on the buffer timeout, and at the
//! end finish the chain, send end-of-partition and wait until it has left.
//!
//! Invariant: the chain runs only inside this task, so the writers' `RefCell`s
//! are never borrowed twice; nothing here allocates per record.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use rheon_net::buffer::Records;
use rheon_net::channel::{ConnectionManager, InputGate};
use rheon_net::event::{Envelope, Event};
use rheon_net::segment::SegmentPool;
use rheon_state::key_group::KeyGroupRange;

use crate::api::functions::OperatorContext;
use crate::checkpoint::config::CheckpointingMode;
use crate::checkpoint::state::{
    share_of, OperatorParts, RestoreSnapshot, SharedRestore, StateRegistry, TakenOperator,
};
use crate::checkpoint::writer::{SnapshotJob, SnapshotWriters};
use crate::config::EngineConfig;
use crate::coordinator::messages::{CoordinatorMsg, JobId, Mailbox};
use crate::error::{TaskError, TaskLocation, TaskResult};
use crate::graph::execution_graph::{subtask_channels, SubtaskId};
use crate::graph::job_graph::JobGraph;
use crate::graph::stream_graph::{NodeBody, NodeId};
use crate::runtime::barriers::{BarrierStep, Barriers};
use crate::runtime::in_flight::{self, Replay, Rescale};
use crate::runtime::input::KeyGroupFilter;
use crate::runtime::sources::{SourceDriver, SourceStep};
use crate::runtime::timers::{instant_at, now_ms, ProcessingTimeService};
use crate::runtime::watermark::{ValveOutput, WatermarkValve};
use crate::runtime::writer::{OutputControl, WriterParts};

/// Records a source pulls between checks of the clock.
const SOURCE_BATCH_RECORDS: usize = 256;

/// A task runs at most this long before letting the other tasks of its
/// executor run. Yielding costs a pass through the reactor (a few us), so it
/// is paced by time rather than by records; the interval bounds the latency a
/// busy task adds to its neighbours.
const YIELD_INTERVAL: Duration = Duration::from_micros(50);

/// What woke an idle input task.
enum Woke {
    Input(Result<Option<(usize, Envelope)>, rheon_net::NetError>),
    Control(TaskControl),
    Timer,
}

/// What a task needs from the executor it runs on.
pub(crate) struct TaskEnv {
    pub(crate) executor: usize,
    pub(crate) pool: SegmentPool,
    pub(crate) connections: Arc<ConnectionManager>,
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) coordinator: Mailbox<CoordinatorMsg>,
    pub(crate) snapshots: SnapshotWriters,
}

/// What the executor hands a subtask it deploys.
pub(crate) struct TaskSetup {
    pub(crate) job: JobId,
    pub(crate) graph: Arc<JobGraph>,
    pub(crate) subtask: SubtaskId,
    pub(crate) attempt: u32,
    pub(crate) restore: SharedRestore,
    pub(crate) control: async_channel::Receiver<TaskControl>,
}

/// Control messages the executor forwards to a running subtask.
pub(crate) enum TaskControl {
    /// (Sources) inject a barrier for this checkpoint.
    TriggerCheckpoint {
        checkpoint_id: u64,
        timestamp_ms: u64,
        savepoint: bool,
    },
    CheckpointComplete {
        checkpoint_id: u64,
    },
}

/// Counters a finished task reports, and what its sinks staged to commit
/// when the job ends well.
#[derive(Clone, Debug, Default)]
pub struct TaskMetrics {
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_out: u64,
    pub commits: Vec<crate::runtime::file_sink::PendingFile>,
    /// From the subtask's start (its deploy) until its state was restored,
    /// before its first record; zero when it did not restore.
    pub restore: Duration,
}

enum Head {
    Source(Box<dyn SourceDriver>),
    Input(Box<dyn crate::runtime::input::InputDriver>, InputGate),
}

struct Task {
    head: Head,
    head_context: OperatorContext,
    outputs: Vec<Rc<dyn OutputControl>>,
    blocked: Rc<Cell<bool>>,
    buffer_timeout: Duration,
    last_flush: Instant,
    last_yield: Instant,
    /// Combines the watermarks of the input channels.
    valve: WatermarkValve,
    /// Processing-time callbacks of the chain's operators.
    timers: ProcessingTimeService,
    /// The chain's checkpointed operators.
    registry: StateRegistry,
    control: async_channel::Receiver<TaskControl>,
    barriers: Barriers,
    job: JobId,
    attempt: u32,
    subtask: SubtaskId,
    head_node: NodeId,
    head_name: String,
    checkpoint_root: Option<PathBuf>,
    /// The materialization ratio of incremental checkpoints, if they are on.
    incremental: Option<f64>,
    env: Rc<TaskEnv>,
    /// An unaligned snapshot waiting for its in-flight data.
    unaligned_pending: Option<SnapshotJob>,
}

fn location(job: &JobGraph, node: NodeId, subtask: u32) -> TaskLocation {
    TaskLocation {
        operator: job.stream.nodes[node].name.clone(),
        subtask,
        parallelism: job.node_parallelism[node],
    }
}

fn context(
    job: &JobGraph,
    node: NodeId,
    subtask: u32,
    executor: usize,
    processing_time: &ProcessingTimeService,
    registry: &StateRegistry,
) -> OperatorContext {
    let parallelism = job.node_parallelism[node];
    OperatorContext {
        node,
        state: registry.clone(),
        checkpointing: job.checkpoint.enabled(),
        name: job.stream.nodes[node].name.clone(),
        subtask,
        parallelism,
        max_parallelism: job.max_parallelism,
        key_group_range: KeyGroupRange::for_operator(job.max_parallelism, parallelism, subtask),
        executor,
        processing_time: processing_time.clone(),
    }
}

/// Segments a writer with `channels` channels reserves: a buffer being filled
/// and the exclusive credits' worth in flight per channel, plus the floating ones.
pub(crate) fn writer_segments(config: &EngineConfig, channels: usize) -> usize {
    channels * (config.channel.exclusive_buffers_per_channel as usize + 1)
        + config.channel.floating_buffers_per_gate as usize
}

fn build(setup: TaskSetup, env: &Rc<TaskEnv>) -> TaskResult<Task> {
    let job: &JobGraph = &setup.graph;
    let subtask = setup.subtask;
    let vertex = &job.vertices[subtask.vertex];
    let head_location = location(job, vertex.head, subtask.index);
    let network_error = |message: String| {
        Box::new(TaskError::Network {
            location: head_location.clone(),
            message,
        })
    };
    let channels = subtask_channels(job, subtask, setup.attempt);
    let channels_in = channels.inputs.len();
    let blocked = Rc::new(Cell::new(false));

    // Writers of the exchanges leaving this vertex, by stream edge.
    let mut writers: HashMap<usize, Box<dyn Any>> = HashMap::new();
    let mut outputs = Vec::new();
    for (edge_index, ids) in channels.outputs {
        let edge = &job.edges[edge_index];
        let stream_edge = &job.stream.edges[edge.stream_edge];
        let pool = env
            .pool
            .reserve(writer_segments(&env.config, ids.len()))
            .map_err(|e| network_error(e.to_string()))?;
        let open = ids
            .iter()
            .map(|&id| env.connections.output_endpoint(id).open(pool.clone()))
            .collect();
        let parts = WriterParts {
            channels: open,
            pool,
            partitioning: edge.partitioning.clone(),
            consumers: job.vertices[edge.target_vertex].parallelism,
            max_parallelism: job.max_parallelism,
            start_channel: subtask.index as usize,
            blocked: blocked.clone(),
            location: location(job, stream_edge.source, subtask.index),
        };
        let (collector, control) = (job.stream.nodes[stream_edge.source].out_type.writer)(parts);
        writers.insert(edge.stream_edge, collector);
        outputs.push(control);
    }

    fn build_node(
        job: &JobGraph,
        node: NodeId,
        subtask: SubtaskId,
        executor: usize,
        timers: &ProcessingTimeService,
        registry: &StateRegistry,
        writers: &mut HashMap<usize, Box<dyn Any>>,
    ) -> TaskResult<Box<dyn Any>> {
        let mut outs = Vec::new();
        for (index, edge) in job.stream.edges.iter().enumerate() {
            if edge.source != node {
                continue;
            }
            if job.edge_chained[index] {
                outs.push(build_node(
                    job,
                    edge.target,
                    subtask,
                    executor,
                    timers,
                    registry,
                    writers,
                )?);
            } else {
                outs.push(
                    writers
                        .remove(&index)
                        .expect("a writer for every exchange of the vertex"),
                );
            }
        }
        let ops = job.stream.nodes[node].out_type;
        let out = match outs.len() {
            0 => (ops.no_output)(),
            1 => outs.pop().expect("one output"),
            _ => (ops.fan_out)(outs),
        };
        let ctx = context(job, node, subtask.index, executor, timers, registry);
        let loc = location(job, node, subtask.index);
        match &job.stream.nodes[node].body {
            NodeBody::Source(factory) => Ok(Box::new(factory(&ctx, loc, out))),
            NodeBody::Operator(factory) => factory(&ctx, loc, out),
        }
    }

    let timers = ProcessingTimeService::default();
    let registry = StateRegistry::default();
    let chain = build_node(
        job,
        vertex.head,
        subtask,
        env.executor,
        &timers,
        &registry,
        &mut writers,
    )?;
    let head = match &job.stream.nodes[vertex.head].body {
        NodeBody::Source(_) => Head::Source(
            *chain
                .downcast::<Box<dyn SourceDriver>>()
                .expect("source driver"),
        ),
        NodeBody::Operator(_) => {
            let upstream = job
                .stream
                .edges
                .iter()
                .find(|e| e.target == vertex.head)
                .expect("operator has an input")
                .source;
            let driver = (job.stream.nodes[upstream].out_type.input)(chain, head_location.clone());
            let endpoints = channels
                .inputs
                .iter()
                .map(|&(_, id)| env.connections.input_endpoint(id))
                .collect();
            Head::Input(driver, InputGate::open(endpoints, &env.config.channel))
        }
    };
    let checkpoints = &job.checkpoint;
    Ok(Task {
        head,
        head_context: context(
            job,
            vertex.head,
            subtask.index,
            env.executor,
            &timers,
            &registry,
        ),
        timers,
        outputs,
        blocked,
        buffer_timeout: env.config.buffer_timeout,
        last_flush: Instant::now(),
        last_yield: Instant::now(),
        valve: WatermarkValve::new(channels_in),
        registry,
        control: setup.control,
        barriers: Barriers::new(
            channels_in,
            checkpoints.mode,
            checkpoints.unaligned && checkpoints.mode == CheckpointingMode::ExactlyOnce,
            checkpoints.aligned_timeout,
        ),
        job: setup.job,
        attempt: setup.attempt,
        subtask,
        head_node: vertex.head,
        head_name: job.stream.nodes[vertex.head].name.clone(),
        checkpoint_root: checkpoints.directory.clone(),
        incremental: checkpoints.incremental_ratio(),
        env: env.clone(),
        unaligned_pending: None,
    })
}

/// Builds and runs one subtask to the end of its input.
pub(crate) async fn run_subtask(setup: TaskSetup, env: Rc<TaskEnv>) -> TaskResult<TaskMetrics> {
    let deployed = Instant::now();
    let job = setup.graph.clone();
    let subtask = setup.subtask;
    let restore = setup.restore.clone();
    let mut task = build(setup, &env)?;
    let location = location(&job, job.vertices[subtask.vertex].head, subtask.index);
    let mut restore_duration = Duration::ZERO;
    if let Some(restore) = &restore {
        let in_flight = task
            .restore(restore, &job, &location)
            .map_err(TaskError::in_restore)?;
        if let Some(in_flight) = in_flight {
            task.replay_in_flight(restore, &in_flight, &location)
                .await
                .map_err(TaskError::in_restore)?;
        }
        restore_duration = deployed.elapsed();
    }
    let records_in = match &mut task.head {
        Head::Source(_) => task.run_source(restore.as_deref()).await?,
        Head::Input(..) => task.run_input(&location).await?,
    };
    task.end().await?;
    Ok(TaskMetrics {
        records_in,
        records_out: task.outputs.iter().map(|o| o.records_out()).sum(),
        bytes_out: task.outputs.iter().map(|o| o.bytes_out()).sum(),
        commits: task.registry.final_commits(),
        restore: restore_duration,
    })
}

/// The head's recorded in-flight data that this subtask replays.
struct InFlight {
    /// Index of the head's snapshot among the checkpoint's operators.
    operator: usize,
    replays: Vec<Replay>,
    /// Each input's key hash function (`KeyHashFn<T>`, erased), if it is
    /// hash partitioned.
    key_hashes: Vec<Option<Arc<dyn Any + Send + Sync>>>,
}

impl Task {
    /// Restores the chain's operators and returns which recorded in-flight
    /// data of an unaligned checkpoint the head replays before its first
    /// record (see `in_flight`).
    fn restore(
        &mut self,
        restore: &RestoreSnapshot,
        job: &JobGraph,
        location: &TaskLocation,
    ) -> TaskResult<Option<InFlight>> {
        let ctx = &self.head_context;
        if restore.metadata.max_parallelism != job.max_parallelism {
            return Err(TaskError::checkpoint(
                location,
                format!(
                    "checkpoint {} has max parallelism {} but the job has {}; set the job's max parallelism to the checkpoint's",
                    restore.directory.display(),
                    restore.metadata.max_parallelism,
                    job.max_parallelism
                ),
            ));
        }
        self.registry
            .restore(restore, ctx.subtask, ctx.parallelism, ctx.key_group_range)?;
        let operators = &restore.metadata.operators;
        let directory = restore.directory.display();
        // An operator that was a task's head then and is chained now has no
        // input to replay its in-flight data into.
        for &node in &job.vertices[self.subtask.vertex].nodes[1..] {
            if let Some(then) = operators
                .iter()
                .find(|o| o.node as usize == node && !o.channel_state.is_empty())
            {
                return Err(TaskError::checkpoint(
                    location,
                    format!(
                        "checkpoint {directory} holds in-flight data of operator '{}' from an unaligned checkpoint taken at parallelism {}, when it read its input through an exchange; at parallelism {} it is chained behind '{}' and has no input to replay it into; restore it with the parallelisms it was taken at (or rescale from an aligned checkpoint or a savepoint)",
                        then.name, then.parallelism, job.node_parallelism[node], self.head_name
                    ),
                ));
            }
        }
        let Some(operator) = operators
            .iter()
            .position(|o| o.node as usize == self.head_node && !o.channel_state.is_empty())
        else {
            return Ok(None);
        };
        if matches!(self.head, Head::Source(_)) {
            return Ok(None);
        }
        let head = &operators[operator];
        let inputs = in_flight::head_inputs(job, self.head_node);
        let old_channels = |input: usize, old_subtask: u32| {
            in_flight::old_input_channels(
                job,
                operators,
                inputs.edges[input],
                head.parallelism,
                old_subtask,
            )
        };
        let replays = in_flight::plan(
            &head.channel_state,
            &Rescale {
                old_parallelism: head.parallelism,
                parallelism: ctx.parallelism,
                subtask: ctx.subtask,
                inputs: &inputs.routes,
                old_channels: &old_channels,
            },
        )
        .map_err(|reason| {
            TaskError::checkpoint(
                location,
                format!(
                    "checkpoint {directory} holds in-flight data of operator '{}' from an unaligned checkpoint taken at parallelism {}, which cannot be restored at parallelism {}: {reason}; restore it at parallelism {} (or rescale from an aligned checkpoint or a savepoint)",
                    head.name, head.parallelism, ctx.parallelism, head.parallelism
                ),
            )
        })?;
        Ok(Some(InFlight {
            operator,
            replays,
            key_hashes: inputs.key_hashes,
        }))
    }

    /// Pushes the recorded in-flight data the plan names through the chain,
    /// waiting for the writers like the input loop does, so that it all goes
    /// out before any record received from now on.
    async fn replay_in_flight(
        &mut self,
        restore: &RestoreSnapshot,
        in_flight: &InFlight,
        location: &TaskLocation,
    ) -> TaskResult {
        let operator = &restore.metadata.operators[in_flight.operator];
        let (max_parallelism, range) = (
            self.head_context.max_parallelism,
            self.head_context.key_group_range,
        );
        for replay in &in_flight.replays {
            let entry = &operator.channel_state[replay.entry];
            let keep = replay.key_of_input.map(|input| KeyGroupFilter {
                key_hash: in_flight.key_hashes[input]
                    .as_deref()
                    .expect("a hash-partitioned input"),
                max_parallelism,
                range,
            });
            for (index, bytes) in entry.buffers.iter().enumerate() {
                let origin = || {
                    format!(
                        "in-flight buffer {index} of old subtask {} input channel {} of operator '{}' in checkpoint {}",
                        entry.subtask,
                        entry.input_channel,
                        operator.name,
                        restore.directory.display()
                    )
                };
                let mut records = Records::parse(bytes).map_err(|e| {
                    let why = match e {
                        rheon_net::NetError::CorruptBuffer {
                            offset,
                            len_bytes,
                            reason,
                        } => format!("{reason} at byte offset {offset} of {len_bytes}"),
                        other => other.to_string(),
                    };
                    TaskError::checkpoint(location, format!("{} is corrupt: {why}", origin()))
                })?;
                let mut next = 0;
                loop {
                    let Head::Input(driver, _) = &mut self.head else {
                        unreachable!()
                    };
                    if driver.process_restored(
                        &mut records,
                        &mut next,
                        keep.as_ref(),
                        &self.blocked,
                        &origin,
                    )? {
                        break;
                    }
                    self.unblock().await?;
                }
                self.housekeeping_and_yield().await?;
            }
        }
        if self.blocked.get() {
            self.unblock().await?;
        }
        Ok(())
    }

    /// Handles the control messages that arrived: checkpoint triggers (at
    /// sources) and completions.
    async fn poll_control(&mut self) -> TaskResult {
        while let Ok(message) = self.control.try_recv() {
            self.handle_control(message).await?;
        }
        Ok(())
    }

    /// The synchronous part of a checkpoint: the source's position and the
    /// chain's forked state; then the barrier goes out of every writer.
    /// Returns the snapshot to write (`None` if declined). A savepoint's
    /// states are written in full even when checkpoints are incremental: it
    /// must not depend on the job's shared files, which it may outlive.
    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        timestamp_ms: u64,
        savepoint: bool,
        alignment: Duration,
    ) -> TaskResult<Option<SnapshotJob>> {
        let started = Instant::now();
        let mut operators: Vec<TakenOperator> = Vec::new();
        let mut declined = None;
        if let Head::Source(driver) = &mut self.head {
            match driver.snapshot_state() {
                Ok(operator_state) => operators.push(TakenOperator {
                    node: self.head_node,
                    name: self.head_name.clone(),
                    parts: OperatorParts {
                        operator_state,
                        ..OperatorParts::default()
                    },
                }),
                Err(reason) => declined = Some(reason),
            }
        }
        let incremental = self.incremental.filter(|_| !savepoint);
        operators.extend(self.registry.snapshot(checkpoint_id, incremental)?);
        let sync_duration = started.elapsed();
        for output in &self.outputs {
            output.broadcast_event(Event::CheckpointBarrier {
                checkpoint_id,
                timestamp_ms,
                savepoint,
            });
        }
        let directory = match (declined, &self.checkpoint_root) {
            (None, Some(root)) => root.join(rheon_state::checkpoint::checkpoint_dir_name(
                checkpoint_id,
                false,
            )),
            (declined, _) => {
                let reason =
                    declined.unwrap_or_else(|| "the job has no checkpoint directory".into());
                self.env
                    .coordinator
                    .send(CoordinatorMsg::DeclineCheckpoint {
                        job: self.job,
                        attempt: self.attempt,
                        checkpoint_id,
                        subtask: self.subtask,
                        reason,
                    });
                return Ok(None);
            }
        };
        Ok(Some(SnapshotJob {
            job: self.job,
            attempt: self.attempt,
            checkpoint_id,
            subtask: self.subtask,
            directory,
            operators,
            channel_state: Vec::new(),
            sync_duration,
            alignment,
            started,
            coordinator: self.env.coordinator.clone(),
        }))
    }

    /// Acts on what the barrier handler decided.
    async fn barrier_step(&mut self, step: BarrierStep) -> TaskResult {
        match step {
            BarrierStep::Nothing => {}
            BarrierStep::Snapshot {
                checkpoint_id,
                timestamp_ms,
                savepoint,
                alignment,
            } => {
                if let Some(job) =
                    self.snapshot(checkpoint_id, timestamp_ms, savepoint, alignment)?
                {
                    self.env.snapshots.submit(job);
                }
            }
            BarrierStep::SnapshotUnaligned {
                checkpoint_id,
                timestamp_ms,
                alignment,
            } => {
                // Savepoints are always aligned.
                self.unaligned_pending =
                    self.snapshot(checkpoint_id, timestamp_ms, false, alignment)?;
            }
            BarrierStep::ChannelStateComplete => {
                let recorded = self.barriers.take_recorded();
                if let Some(mut job) = self.unaligned_pending.take() {
                    job.channel_state = recorded;
                    self.env.snapshots.submit(job);
                }
            }
        }
        if self.blocked.get() {
            self.unblock().await?;
        }
        Ok(())
    }

    /// Switches an alignment that outlasted its timeout to unaligned.
    async fn check_alignment_timeout(&mut self) -> TaskResult {
        if self
            .barriers
            .alignment_deadline()
            .is_some_and(|d| Instant::now() >= d)
        {
            if let Some(step) = self.barriers.switch_to_unaligned() {
                self.barrier_step(step).await?;
            }
        }
        Ok(())
    }

    async fn unblock(&self) -> TaskResult {
        for output in &self.outputs {
            output.unblock().await?;
        }
        self.blocked.set(false);
        Ok(())
    }

    fn flush(&mut self, now: Instant) {
        for output in &self.outputs {
            output.flush();
        }
        self.last_flush = now;
    }

    fn has_partial(&self) -> bool {
        self.outputs.iter().any(|o| o.has_partial())
    }

    /// When the task must wake up even without input: the buffer timeout of
    /// a partial buffer, the earliest processing-time deadline, or the
    /// alignment timeout of a checkpoint.
    fn wake_at(&self) -> Option<Instant> {
        let flush = self
            .has_partial()
            .then(|| self.last_flush + self.buffer_timeout);
        let timer = self.timers.next_deadline().map(instant_at);
        [flush, timer, self.barriers.alignment_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires due processing-time timers, handles control messages, and
    /// flushes if the buffer timeout has passed since the last flush.
    async fn housekeeping(&mut self) -> TaskResult {
        if self.timers.next_deadline().is_some_and(|d| d <= now_ms()) {
            self.timers.fire_due(now_ms())?;
            if self.blocked.get() {
                self.unblock().await?;
            }
        }
        if !self.control.is_empty() {
            self.poll_control().await?;
        }
        if self.barriers.current.is_some() {
            self.check_alignment_timeout().await?;
        }
        let now = Instant::now();
        if !self.outputs.is_empty() && now.duration_since(self.last_flush) >= self.buffer_timeout {
            self.flush(now);
        }
        Ok(())
    }

    /// Housekeeping, then yields to the executor's other tasks if this one ran
    /// long enough.
    async fn housekeeping_and_yield(&mut self) -> TaskResult {
        self.housekeeping().await?;
        let now = Instant::now();
        if now.duration_since(self.last_yield) >= YIELD_INTERVAL {
            futures_lite::future::yield_now().await;
            self.last_yield = Instant::now();
        }
        Ok(())
    }

    async fn run_source(&mut self, restore: Option<&RestoreSnapshot>) -> TaskResult<u64> {
        let Head::Source(driver) = &mut self.head else {
            unreachable!()
        };
        driver.open(&self.head_context)?;
        if let Some(restore) = restore {
            let ctx = &self.head_context;
            let elements = restore
                .metadata
                .operators
                .iter()
                .filter(|o| o.node as usize == self.head_node)
                .flat_map(|o| o.operator_state.iter());
            let share = share_of(elements, ctx.subtask, ctx.parallelism)
                .map(|e| e.to_vec())
                .collect();
            driver.restore_state(share)?;
        }
        loop {
            if !self.control.is_empty() {
                self.poll_control().await?;
            }
            let Head::Source(driver) = &mut self.head else {
                unreachable!()
            };
            match driver.step(SOURCE_BATCH_RECORDS, &self.blocked)? {
                SourceStep::More => {}
                SourceStep::Blocked => self.unblock().await?,
                SourceStep::Wait(until) => loop {
                    // Sleep until the source has more, waking for flushes,
                    // timers and control messages.
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    let wake = self.wake_at().map_or(until, |w| w.min(until));
                    if wake > now {
                        let control = &self.control;
                        let message = future::or(
                            async {
                                glommio::timer::sleep(wake - now).await;
                                None
                            },
                            async { control.recv().await.ok() },
                        )
                        .await;
                        if let Some(message) = message {
                            self.handle_control(message).await?;
                        }
                    }
                    self.housekeeping().await?;
                },
                SourceStep::End => break,
            }
            self.housekeeping_and_yield().await?;
        }
        let Head::Source(driver) = &mut self.head else {
            unreachable!()
        };
        driver.finish()?;
        Ok(driver.records_out())
    }

    async fn handle_control(&mut self, message: TaskControl) -> TaskResult {
        match message {
            TaskControl::TriggerCheckpoint {
                checkpoint_id,
                timestamp_ms,
                savepoint,
            } => {
                if let Some(job) =
                    self.snapshot(checkpoint_id, timestamp_ms, savepoint, Duration::ZERO)?
                {
                    self.env.snapshots.submit(job);
                }
            }
            TaskControl::CheckpointComplete { checkpoint_id } => {
                self.registry.notify_checkpoint_complete(checkpoint_id)?;
            }
        }
        if self.blocked.get() {
            self.unblock().await?;
        }
        Ok(())
    }

    /// The next envelope: released ones first, then the gate's.
    fn try_next_item(&mut self) -> Result<Option<(usize, Envelope)>, rheon_net::NetError> {
        if let Some(item) = self.barriers.replay.pop_front() {
            return Ok(Some(item));
        }
        let Head::Input(_, gate) = &self.head else {
            unreachable!()
        };
        gate.try_next()
    }

    async fn run_input(&mut self, location: &TaskLocation) -> TaskResult<u64> {
        let net_error = |e: rheon_net::NetError| {
            Box::new(TaskError::Network {
                location: location.clone(),
                message: e.to_string(),
            })
        };
        loop {
            let mut item = self.try_next_item().map_err(net_error)?;
            // Out of input: wait for more, waking to flush a partial buffer
            // when the timeout is due, to fire processing-time timers and to
            // handle control messages.
            while item.is_none() {
                let Head::Input(_, gate) = &self.head else {
                    unreachable!()
                };
                if gate.is_finished() {
                    break;
                }
                let wake = self.wake_at();
                let now = Instant::now();
                if wake.is_none_or(|w| w > now) {
                    let control = &self.control;
                    let woke = future::or(async { Woke::Input(gate.next().await) }, async {
                        future::or(
                            async {
                                match wake {
                                    Some(w) => glommio::timer::sleep(w - now).await,
                                    None => future::pending::<()>().await,
                                }
                                Woke::Timer
                            },
                            async {
                                match control.recv().await {
                                    Ok(m) => Woke::Control(m),
                                    Err(_) => future::pending().await,
                                }
                            },
                        )
                        .await
                    })
                    .await;
                    match woke {
                        Woke::Input(result) => {
                            item = result.map_err(net_error)?;
                            break;
                        }
                        Woke::Control(message) => self.handle_control(message).await?,
                        Woke::Timer => {}
                    }
                }
                self.housekeeping().await?;
                item = self.try_next_item().map_err(net_error)?;
            }
            let Some((channel, envelope)) = item else {
                break;
            };
            if self.barriers.is_blocked(channel) {
                self.barriers.hold(channel, envelope);
                continue;
            }
            match envelope {
                Envelope::Data { buffer, .. } => {
                    if self.barriers.is_recording(channel) {
                        self.barriers.record(channel, buffer.as_bytes().to_vec());
                    }
                    let mut next = 0;
                    loop {
                        let Head::Input(driver, _) = &mut self.head else {
                            unreachable!()
                        };
                        if driver.process(&buffer, &mut next, &self.blocked)? {
                            break;
                        }
                        self.unblock().await?;
                    }
                    let Head::Input(_, gate) = &self.head else {
                        unreachable!()
                    };
                    gate.release(channel, buffer);
                    self.housekeeping_and_yield().await?;
                }
                Envelope::Event(Event::Watermark(watermark)) => {
                    if let Some(advanced) = self.valve.on_watermark(channel, watermark) {
                        self.emit_watermark(advanced).await?;
                    }
                }
                Envelope::Event(Event::EndOfPartition) => {
                    let step = self.barriers.on_end(channel);
                    self.barrier_step(step).await?;
                    let change = self.valve.on_end(channel);
                    self.apply_valve(change).await?;
                }
                Envelope::Event(Event::WatermarkStatus { idle }) => {
                    let change = self.valve.on_status(channel, idle);
                    self.apply_valve(change).await?;
                }
                Envelope::Event(Event::CheckpointBarrier {
                    checkpoint_id,
                    timestamp_ms,
                    savepoint,
                }) => {
                    let step =
                        self.barriers
                            .on_barrier(channel, checkpoint_id, timestamp_ms, savepoint);
                    self.barrier_step(step).await?;
                }
                Envelope::Event(Event::Cancel) => {
                    return Err(Box::new(TaskError::Cancelled {
                        location: location.clone(),
                    }));
                }
            }
        }
        let Head::Input(driver, _) = &mut self.head else {
            unreachable!()
        };
        driver.finish()?;
        Ok(driver.records_in())
    }

    /// Pushes a change of the input's watermark status through the chain:
    /// becoming active goes out before the watermark, idle after it.
    async fn apply_valve(&mut self, change: ValveOutput) -> TaskResult {
        let Head::Input(driver, _) = &mut self.head else {
            unreachable!()
        };
        if change.status == Some(false) {
            driver.watermark_status(false)?;
        }
        if let Some(watermark) = change.watermark {
            self.emit_watermark(watermark).await?;
        }
        if change.status == Some(true) {
            let Head::Input(driver, _) = &mut self.head else {
                unreachable!()
            };
            driver.watermark_status(true)?;
        }
        if self.blocked.get() {
            self.unblock().await?;
        }
        Ok(())
    }

    /// Pushes a new watermark through the chain (and out of its writers).
    async fn emit_watermark(&mut self, watermark: i64) -> TaskResult {
        let Head::Input(driver, _) = &mut self.head else {
            unreachable!()
        };
        driver.watermark(watermark)?;
        if self.blocked.get() {
            self.unblock().await?;
        }
        Ok(())
    }

    /// Writes what the chain emitted on finishing, then ends every partition.
    async fn end(&mut self) -> TaskResult {
        if self.blocked.get() {
            self.unblock().await?;
        }
        for output in &self.outputs {
            output.broadcast_event(Event::EndOfPartition);
        }
        for output in &self.outputs {
            output.drained().await?;
        }
        Ok(())
    }
}
