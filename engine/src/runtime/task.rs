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
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use rheon_net::channel::{ConnectionManager, InputGate};
use rheon_net::event::{Envelope, Event};
use rheon_net::segment::SegmentPool;
use rheon_state::key_group::KeyGroupRange;

use crate::api::functions::OperatorContext;
use crate::config::EngineConfig;
use crate::error::{TaskError, TaskLocation, TaskResult};
use crate::graph::execution_graph::{subtask_channels, SubtaskId};
use crate::graph::job_graph::JobGraph;
use crate::graph::stream_graph::{NodeBody, NodeId};
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

/// What a task needs from the executor it runs on.
pub(crate) struct TaskEnv {
    pub(crate) executor: usize,
    pub(crate) pool: SegmentPool,
    pub(crate) connections: Arc<ConnectionManager>,
    pub(crate) config: Arc<EngineConfig>,
}

/// Counters a finished task reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskMetrics {
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_out: u64,
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
) -> OperatorContext {
    let parallelism = job.node_parallelism[node];
    OperatorContext {
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

fn build(job: &JobGraph, subtask: SubtaskId, env: &TaskEnv) -> TaskResult<Task> {
    let vertex = &job.vertices[subtask.vertex];
    let head_location = location(job, vertex.head, subtask.index);
    let network_error = |message: String| {
        Box::new(TaskError::Network {
            location: head_location.clone(),
            message,
        })
    };
    let channels = subtask_channels(job, subtask);
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
        let ctx = context(job, node, subtask.index, executor, timers);
        let loc = location(job, node, subtask.index);
        match &job.stream.nodes[node].body {
            NodeBody::Source(factory) => Ok(Box::new(factory(&ctx, loc, out))),
            NodeBody::Operator(factory) => factory(&ctx, loc, out),
        }
    }

    let timers = ProcessingTimeService::default();
    let chain = build_node(
        job,
        vertex.head,
        subtask,
        env.executor,
        &timers,
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
    Ok(Task {
        head,
        head_context: context(job, vertex.head, subtask.index, env.executor, &timers),
        timers,
        outputs,
        blocked,
        buffer_timeout: env.config.buffer_timeout,
        last_flush: Instant::now(),
        last_yield: Instant::now(),
        valve: WatermarkValve::new(channels_in),
    })
}

/// Builds and runs one subtask to the end of its input.
pub(crate) async fn run_subtask(
    job: Arc<JobGraph>,
    subtask: SubtaskId,
    env: Rc<TaskEnv>,
) -> TaskResult<TaskMetrics> {
    let mut task = build(&job, subtask, &env)?;
    let location = location(&job, job.vertices[subtask.vertex].head, subtask.index);
    let records_in = match &mut task.head {
        Head::Source(_) => task.run_source().await?,
        Head::Input(..) => task.run_input(&location).await?,
    };
    task.end().await?;
    Ok(TaskMetrics {
        records_in,
        records_out: task.outputs.iter().map(|o| o.records_out()).sum(),
        bytes_out: task.outputs.iter().map(|o| o.bytes_out()).sum(),
    })
}

impl Task {
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
    /// a partial buffer, or the earliest processing-time deadline.
    fn wake_at(&self) -> Option<Instant> {
        let flush = self
            .has_partial()
            .then(|| self.last_flush + self.buffer_timeout);
        let timer = self.timers.next_deadline().map(instant_at);
        match (flush, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires due processing-time timers and flushes if the buffer timeout
    /// has passed since the last flush.
    async fn housekeeping(&mut self) -> TaskResult {
        if self.timers.next_deadline().is_some_and(|d| d <= now_ms()) {
            self.timers.fire_due(now_ms())?;
            if self.blocked.get() {
                self.unblock().await?;
            }
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

    async fn run_source(&mut self) -> TaskResult<u64> {
        let Head::Source(driver) = &mut self.head else {
            unreachable!()
        };
        driver.open(&self.head_context)?;
        loop {
            let Head::Source(driver) = &mut self.head else {
                unreachable!()
            };
            match driver.step(SOURCE_BATCH_RECORDS, &self.blocked)? {
                SourceStep::More => {}
                SourceStep::Blocked => self.unblock().await?,
                SourceStep::Wait(until) => loop {
                    // Sleep until the source has more, waking for flushes and timers.
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    let wake = self.wake_at().map_or(until, |w| w.min(until));
                    if wake > now {
                        glommio::timer::sleep(wake - now).await;
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

    async fn run_input(&mut self, location: &TaskLocation) -> TaskResult<u64> {
        let net_error = |e: rheon_net::NetError| {
            Box::new(TaskError::Network {
                location: location.clone(),
                message: e.to_string(),
            })
        };
        loop {
            let Head::Input(_, gate) = &self.head else {
                unreachable!()
            };
            let mut item = gate.try_next().map_err(net_error)?;
            // Out of input: wait for more, waking to flush a partial buffer
            // when the timeout is due and to fire processing-time timers.
            while item.is_none() {
                let Head::Input(_, gate) = &self.head else {
                    unreachable!()
                };
                if gate.is_finished() {
                    break;
                }
                let Some(wake) = self.wake_at() else {
                    item = gate.next().await.map_err(net_error)?;
                    break;
                };
                let now = Instant::now();
                if wake > now {
                    let arrived = future::or(async { Some(gate.next().await) }, async {
                        glommio::timer::sleep(wake - now).await;
                        None
                    })
                    .await;
                    if let Some(result) = arrived {
                        item = result.map_err(net_error)?;
                        break;
                    }
                }
                self.housekeeping().await?;
            }
            match item {
                None => break,
                Some((channel, Envelope::Data { buffer, .. })) => {
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
                Some((channel, Envelope::Event(Event::Watermark(watermark)))) => {
                    if let Some(advanced) = self.valve.on_watermark(channel, watermark) {
                        self.emit_watermark(advanced).await?;
                    }
                }
                Some((channel, Envelope::Event(Event::EndOfPartition))) => {
                    let change = self.valve.on_end(channel);
                    self.apply_valve(change).await?;
                }
                Some((channel, Envelope::Event(Event::WatermarkStatus { idle }))) => {
                    let change = self.valve.on_status(channel, idle);
                    self.apply_valve(change).await?;
                }
                Some((_, Envelope::Event(Event::Cancel))) => {
                    return Err(Box::new(TaskError::Cancelled {
                        location: location.clone(),
                    }));
                }
                // Checkpoint barriers are handled by the checkpoint layer.
                Some((_, Envelope::Event(_))) => {}
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
