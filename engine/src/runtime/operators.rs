//! Built-in operators: the stateless transformations, the keyed aggregations and
//! keyed process functions, and the sinks. Each is a `Collector` of its input
//! that owns the collector of its output (see `runtime::collector`).
//!
//! Invariant: user functions run inside `guarded`, so a panic becomes a task
//! error naming the operator and subtask; keyed operators touch state only in
//! the key group of the current record, which must be in the subtask's range.

use std::fmt::Display;
use std::hash::Hash;
use std::io::Write;
use std::sync::{Arc, Mutex};

use rheon_net::codec::Codec;
use rheon_state::key_group::assign_to_key_group;
use rheon_state::keyed::KeyGroupedMap;

use crate::checkpoint::changelog::ChangelogState;
use crate::checkpoint::state::{CheckpointedOperator, OperatorParts, RestoredOperator};

use crate::api::functions::OneInputOperator;
use crate::error::{TaskError, TaskLocation, TaskResult};
use crate::runtime::collector::{guarded, guarded_chain_record, BoxCollector, Collector, Emitter};

/// The `finish`, `watermark` and `watermark_status` of an operator that has
/// nothing of its own to do for them: pass them on to `self.out`.
macro_rules! forward_to_out {
    () => {
        fn finish(&mut self) -> TaskResult {
            self.out.finish()
        }
        fn watermark(&mut self, watermark: i64) -> TaskResult {
            self.out.watermark(watermark)
        }
        fn watermark_status(&mut self, idle: bool) -> TaskResult {
            self.out.watermark_status(idle)
        }
    };
}

pub(crate) struct Map<F, O> {
    pub(crate) f: F,
    pub(crate) out: BoxCollector<O>,
    pub(crate) location: TaskLocation,
}

impl<I, O, F: FnMut(I) -> O> Collector<I> for Map<F, O> {
    #[inline]
    fn collect(&mut self, record: I) -> TaskResult {
        let (f, out) = (&mut self.f, &mut self.out);
        guarded_chain_record(&self.location, record, |chain, record| {
            let value = f(record);
            chain.collect(out, value)
        })
    }
    forward_to_out!();
}

pub(crate) struct TryMap<F, O> {
    pub(crate) f: F,
    pub(crate) out: BoxCollector<O>,
    pub(crate) location: TaskLocation,
}

impl<I, O, E: Display, F: FnMut(I) -> Result<O, E>> Collector<I> for TryMap<F, O> {
    #[inline]
    fn collect(&mut self, record: I) -> TaskResult {
        let (f, out, location) = (&mut self.f, &mut self.out, &self.location);
        guarded_chain_record(location, record, |chain, record| match f(record) {
            Ok(value) => chain.collect(out, value),
            Err(e) => Err(Box::new(TaskError::UserFunction {
                location: location.clone(),
                message: e.to_string(),
            })),
        })
    }
    forward_to_out!();
}

pub(crate) struct Filter<F, T> {
    pub(crate) f: F,
    pub(crate) out: BoxCollector<T>,
    pub(crate) location: TaskLocation,
}

impl<T, F: FnMut(&T) -> bool> Collector<T> for Filter<F, T> {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        let (f, out) = (&mut self.f, &mut self.out);
        guarded_chain_record(&self.location, record, |chain, record| {
            if f(&record) {
                chain.collect(out, record)
            } else {
                Ok(())
            }
        })
    }
    forward_to_out!();
}

pub(crate) struct FlatMap<F, O> {
    pub(crate) f: F,
    pub(crate) out: BoxCollector<O>,
    pub(crate) location: TaskLocation,
}

impl<I, O, It: IntoIterator<Item = O>, F: FnMut(I) -> It> Collector<I> for FlatMap<F, O> {
    #[inline]
    fn collect(&mut self, record: I) -> TaskResult {
        let (f, out) = (&mut self.f, &mut self.out);
        // The iterator may run user code lazily: it runs inside the guard too.
        guarded_chain_record(&self.location, record, |chain, record| {
            for value in f(record) {
                chain.collect(out, value)?;
            }
            Ok(())
        })
    }
    forward_to_out!();
}

/// A user-written operator (`DataStream::transform`).
pub(crate) struct Transform<Op, O> {
    pub(crate) op: Op,
    pub(crate) out: BoxCollector<O>,
    pub(crate) location: TaskLocation,
}

impl<I, O, Op: OneInputOperator<I, O>> Collector<I> for Transform<Op, O> {
    #[inline]
    fn collect(&mut self, record: I) -> TaskResult {
        let mut emitter = Emitter::new(self.out.as_mut());
        let op = &mut self.op;
        guarded(&self.location, || op.process(record, &mut emitter))?;
        emitter.into_result()
    }
    fn finish(&mut self) -> TaskResult {
        let mut emitter = Emitter::new(self.out.as_mut());
        let op = &mut self.op;
        guarded(&self.location, || op.finish(&mut emitter))?;
        emitter.into_result()?;
        self.out.finish()
    }
    fn watermark(&mut self, watermark: i64) -> TaskResult {
        let mut emitter = Emitter::new(self.out.as_mut());
        let op = &mut self.op;
        guarded(&self.location, || op.on_watermark(watermark, &mut emitter))?;
        emitter.into_result()?;
        self.out.watermark(watermark)
    }
    fn watermark_status(&mut self, idle: bool) -> TaskResult {
        self.out.watermark_status(idle)
    }
}

/// Rolling reduce per key: emits the new aggregate after every record.
pub(crate) struct KeyedReduce<KF, F, K, T> {
    pub(crate) key_fn: KF,
    pub(crate) f: F,
    pub(crate) state: KeyGroupedMap<K, T>,
    pub(crate) changelog: ChangelogState<K, T>,
    pub(crate) max_parallelism: u32,
    pub(crate) out: BoxCollector<T>,
    pub(crate) location: TaskLocation,
}

impl<K, T, KF, F> Collector<T> for KeyedReduce<KF, F, K, T>
where
    K: Hash + Eq + Clone,
    T: Clone,
    KF: FnMut(&T) -> K,
    F: FnMut(T, T) -> T,
{
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        let key_fn = &mut self.key_fn;
        let key = guarded(&self.location, || key_fn(&record))?;
        let key_group = assign_to_key_group(&key, self.max_parallelism);
        // `upsert` logs the new value for incremental checkpoints.
        let (f, location) = (&mut self.f, &self.location);
        let mut failed = None;
        let value = self
            .state
            .upsert(key_group, key, record, |acc, record| {
                match guarded(location, || f(acc.clone(), record)) {
                    Ok(next) => *acc = next,
                    Err(e) => failed = Some(e),
                }
            })
            .clone();
        if let Some(e) = failed {
            return Err(e);
        }
        self.out.collect(value)
    }
    forward_to_out!();
}

/// Rolling sum per key of a numeric projection: emits `(key, sum)`.
pub(crate) struct KeyedSum<KF, VF, K, N> {
    pub(crate) key_fn: KF,
    pub(crate) value_fn: VF,
    pub(crate) state: KeyGroupedMap<K, N>,
    pub(crate) changelog: ChangelogState<K, N>,
    pub(crate) max_parallelism: u32,
    pub(crate) out: BoxCollector<(K, N)>,
    pub(crate) location: TaskLocation,
}

impl<T, K, N, KF, VF> Collector<T> for KeyedSum<KF, VF, K, N>
where
    K: Hash + Eq + Clone,
    N: Copy + std::ops::Add<Output = N>,
    KF: FnMut(&T) -> K,
    VF: FnMut(&T) -> N,
{
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        let (key_fn, value_fn) = (&mut self.key_fn, &mut self.value_fn);
        let (key, value) = guarded(&self.location, || (key_fn(&record), value_fn(&record)))?;
        let key_group = assign_to_key_group(&key, self.max_parallelism);
        // `upsert` logs the new sum for incremental checkpoints.
        let sum = *self
            .state
            .upsert(key_group, key.clone(), value, |acc, value| {
                *acc = *acc + value
            });
        self.out.collect((key, sum))
    }
    forward_to_out!();
}

/// Collects records for the caller of `execute` (tests, small jobs).
pub(crate) struct CollectSink<T> {
    pub(crate) local: Vec<T>,
    pub(crate) results: Arc<Mutex<Vec<T>>>,
}

impl<T> Collector<T> for CollectSink<T> {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        self.local.push(record);
        Ok(())
    }
    fn finish(&mut self) -> TaskResult {
        let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        results.append(&mut self.local);
        Ok(())
    }
}

/// Counts and drops records (benchmarks).
pub(crate) struct DiscardSink {
    pub(crate) records: u64,
}

impl<T> Collector<T> for DiscardSink {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        std::hint::black_box(&record);
        self.records += 1;
        Ok(())
    }
    fn finish(&mut self) -> TaskResult {
        Ok(())
    }
}

/// Writes one line per record, formatted by `format`, to stdout or a file.
pub(crate) struct LineSink<F, W: Write> {
    pub(crate) format: F,
    pub(crate) writer: W,
    pub(crate) prefix: String,
    pub(crate) line: String,
    pub(crate) target: String,
    pub(crate) location: TaskLocation,
}

impl<T, F: FnMut(&T, &mut String), W: Write> Collector<T> for LineSink<F, W> {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        self.line.clear();
        self.line.push_str(&self.prefix);
        let (format, line) = (&mut self.format, &mut self.line);
        guarded(&self.location, || format(&record, line))?;
        self.line.push('\n');
        self.writer
            .write_all(self.line.as_bytes())
            .map_err(|e| self.io_error(e))
    }
    fn finish(&mut self) -> TaskResult {
        self.writer.flush().map_err(|e| self.io_error(e))
    }
}

impl<F, W: Write> LineSink<F, W> {
    fn io_error(&self, e: std::io::Error) -> Box<TaskError> {
        Box::new(TaskError::Sink {
            location: self.location.clone(),
            message: format!("cannot write to {}: {e}", self.target),
        })
    }
}

impl<K, T, KF, F> CheckpointedOperator for KeyedReduce<KF, F, K, T>
where
    K: Hash + Eq + Clone + Codec + Send + Sync + 'static,
    T: Clone + Codec + Send + Sync + 'static,
{
    fn snapshot_state(&mut self, checkpoint_id: u64, parts: &mut OperatorParts) -> TaskResult {
        let type_tag = std::any::type_name::<(K, T)>();
        parts.keyed.push(self.changelog.write(
            "reduce",
            type_tag,
            &mut self.state,
            checkpoint_id,
            parts.incremental,
        ));
        Ok(())
    }
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.changelog.notify_complete(checkpoint_id);
        Ok(())
    }
    fn restore_state(&mut self, restored: &RestoredOperator<'_>) -> TaskResult {
        self.state = restored
            .keyed_state("reduce")
            .map_err(|m| TaskError::checkpoint(&self.location, m))?;
        self.changelog = ChangelogState::default();
        Ok(())
    }
}

impl<K, N, KF, VF> CheckpointedOperator for KeyedSum<KF, VF, K, N>
where
    K: Hash + Eq + Clone + Codec + Send + Sync + 'static,
    N: Clone + Codec + Send + Sync + 'static,
{
    fn snapshot_state(&mut self, checkpoint_id: u64, parts: &mut OperatorParts) -> TaskResult {
        let type_tag = std::any::type_name::<(K, N)>();
        parts.keyed.push(self.changelog.write(
            "sum",
            type_tag,
            &mut self.state,
            checkpoint_id,
            parts.incremental,
        ));
        Ok(())
    }
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.changelog.notify_complete(checkpoint_id);
        Ok(())
    }
    fn restore_state(&mut self, restored: &RestoredOperator<'_>) -> TaskResult {
        self.state = restored
            .keyed_state("sum")
            .map_err(|m| TaskError::checkpoint(&self.location, m))?;
        self.changelog = ChangelogState::default();
        Ok(())
    }
}
