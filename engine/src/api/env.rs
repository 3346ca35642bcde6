//! `StreamEnv`: where a job starts. It records sources and, through the
//! `DataStream`s it hands out, every operator; `execute` turns the recording
//! into a job graph and runs it on an embedded cluster.

use rheon_state::checkpoint::{latest_valid_to, Depth};

use crate::checkpoint::finished;
use crate::checkpoint::state::RestoreSnapshot;
use crate::coordinator::job_master::apply_all;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::api::functions::{OperatorContext, SourceFunction};
use crate::api::stream::DataStream;
use crate::cluster::EmbeddedCluster;
use crate::config::EngineConfig;
use crate::coordinator::messages::JobOutcome;
use crate::error::{JobError, TaskLocation};
use crate::graph::job_graph::JobGraph;
use crate::graph::stream_graph::{type_ops, Data, NodeBody, StreamGraph};
use crate::runtime::sources::{
    source_driver, CollectionSource, GeneratorSource, SharedStart, TextFileSource,
};

pub struct StreamEnv {
    pub(crate) graph: Rc<RefCell<StreamGraph>>,
    config: EngineConfig,
}

impl Default for StreamEnv {
    fn default() -> Self {
        StreamEnv::new(EngineConfig::default())
    }
}

impl StreamEnv {
    pub fn new(config: EngineConfig) -> Self {
        StreamEnv {
            graph: Rc::new(RefCell::new(StreamGraph::default())),
            config,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn config_mut(&mut self) -> &mut EngineConfig {
        &mut self.config
    }

    /// A source from a factory that makes one `SourceFunction` per subtask.
    pub fn add_source<T, S, F>(&self, name: &str, factory: F) -> DataStream<T>
    where
        T: Data,
        S: SourceFunction<T>,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let body = NodeBody::Source(Arc::new(
            move |_ctx: &OperatorContext, location: TaskLocation, out| {
                source_driver::<T, S>(factory(), out, location)
            },
        ));
        let id = self
            .graph
            .borrow_mut()
            .add_node(name.to_string(), body, type_ops::<T>());
        DataStream::new(self.graph.clone(), id)
    }

    /// The elements of a collection, in order at parallelism 1 (the default
    /// here); at parallelism n subtask i emits elements i, i+n, ...
    pub fn from_collection<T: Data + Sync>(&self, items: Vec<T>) -> DataStream<T> {
        let items = Arc::new(items);
        self.add_source("Collection source", move || CollectionSource {
            items: items.clone(),
            splits: Vec::new(),
        })
        .set_parallelism(1)
    }

    /// `count` records `f(0)..f(count-1)`, produced in parallel: subtask i of n
    /// makes the numbers congruent to i mod n. Deterministic for any parallelism.
    pub fn generate<T, F>(&self, count: u64, f: F) -> DataStream<T>
    where
        T: Data,
        F: Fn(u64) -> T + Clone + Send + Sync + 'static,
    {
        self.generate_inner(count, None, f)
    }

    /// Like `generate`, at most `records_per_second` in total.
    pub fn generate_with_rate<T, F>(
        &self,
        count: u64,
        records_per_second: f64,
        f: F,
    ) -> DataStream<T>
    where
        T: Data,
        F: Fn(u64) -> T + Clone + Send + Sync + 'static,
    {
        self.generate_inner(count, Some(records_per_second), f)
    }

    fn generate_inner<T, F>(&self, count: u64, rate: Option<f64>, f: F) -> DataStream<T>
    where
        T: Data,
        F: Fn(u64) -> T + Clone + Send + Sync + 'static,
    {
        let shared_start = SharedStart::default();
        self.add_source("Generator", move || GeneratorSource {
            f: f.clone(),
            count,
            splits: Vec::new(),
            rate_per_second: rate,
            interval: Duration::ZERO,
            start: None,
            shared_start: shared_start.clone(),
            emitted: 0,
        })
    }

    /// The lines of a UTF-8 text file, split by byte ranges across the
    /// source's subtasks. A missing file or a line that is not UTF-8 fails the
    /// job with an error naming the file (and the line).
    pub fn read_text_file(&self, path: impl Into<PathBuf>) -> DataStream<String> {
        let path: PathBuf = path.into();
        let name = format!("Read text file {}", path.display());
        self.add_source(&name, move || TextFileSource::new(path.clone()))
    }

    /// The job graph this environment would run: chaining decisions and
    /// resolved parallelism, for inspection.
    pub fn job_graph(&self, name: &str) -> Result<JobGraph, JobError> {
        JobGraph::build(name, self.graph.borrow().clone(), &self.config)
    }

    /// Runs the job on an embedded cluster of `config.executors` pinned
    /// executors and waits for it to end.
    pub fn execute(&self, name: &str) -> Result<JobOutcome, JobError> {
        self.execute_detached(name)?.wait()
    }

    /// Starts the job on an embedded cluster and returns at once: the handle
    /// takes savepoints and waits for the outcome. With
    /// `config.checkpoint.restore_from` set, the job starts from the newest
    /// valid checkpoint there (older retained ones are the fallback), at
    /// this environment's parallelism.
    pub fn execute_detached(&self, name: &str) -> Result<JobHandle, JobError> {
        let mut config = self.config.clone();
        if let Some(handle) = self.replay_finished(name, &config)? {
            return Ok(handle);
        }
        let checkpoint_dir = config.checkpoint.directory.as_deref();
        if let Some(root) = checkpoint_dir.filter(|_| config.checkpoint.enabled()) {
            // A job starting here afresh (or from an explicit checkpoint) is
            // not the one that finished.
            finished::remove(root).map_err(|message| JobError::Restore {
                job: name.to_string(),
                message,
            })?;
        }
        let verification_started = std::time::Instant::now();
        let restore = match &config.checkpoint.restore_from {
            None => None,
            Some(path) => {
                // The sections' checksums are checked by the tasks as they
                // read them (once, not twice); the job master falls back
                // to an older checkpoint if one fails.
                let (directory, metadata, skipped) = latest_valid_to(path, Depth::Layout, &[])
                    .map_err(|e| JobError::Restore {
                        job: name.to_string(),
                        message: e.to_string(),
                    })?;
                for (path, why) in skipped {
                    eprintln!("rheon: skipping checkpoint {}: {why}", path.display());
                }
                // Key groups are fixed at the job's first run.
                if config.max_parallelism.is_none() {
                    config.max_parallelism = Some(metadata.max_parallelism);
                }
                Some(Arc::new(RestoreSnapshot {
                    directory,
                    metadata,
                    checksums_verified: false,
                }))
            }
        };
        let restore_verification = restore.is_some().then(|| verification_started.elapsed());
        let graph = JobGraph::build(name, self.graph.borrow().clone(), &config)?;
        let slots_needed = graph.slots_needed();
        let executors = config.executors.max(1) as u32;
        let slots = config
            .slots_per_executor
            .unwrap_or(slots_needed.div_ceil(executors))
            .max(1);
        let cluster = EmbeddedCluster::start(&config, slots)?;
        let ((job, name), outcome) = cluster.submit(graph, restore);
        // With a directory, checkpoints on request are taken even without an
        // interval.
        let checkpoint_root = config.checkpoint.directory.clone();
        Ok(JobHandle {
            cluster: Some(cluster),
            job,
            name,
            outcome,
            checkpoint_root,
            restore_verification,
        })
    }
}

impl StreamEnv {
    /// With `restore_from` a checkpoint root where the job finished (its
    /// `_finished` record): replays the final commits, which a process
    /// killed while making them may have left undone, and returns a handle
    /// on a job that already ended. Restoring its last checkpoint instead
    /// would commit the output after that checkpoint twice.
    fn replay_finished(
        &self,
        name: &str,
        config: &EngineConfig,
    ) -> Result<Option<JobHandle>, JobError> {
        let Some(root) = &config.checkpoint.restore_from else {
            return Ok(None);
        };
        let restore_error = |message| JobError::Restore {
            job: name.to_string(),
            message,
        };
        let Some(record) = finished::read(root).map_err(restore_error)? else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        apply_all(&record.commits).map_err(restore_error)?;
        eprintln!(
            "rheon: job '{}' already finished ({}): its {} final commits are in place; nothing to run",
            record.job,
            finished::path(root).display(),
            record.commits.len()
        );
        let (sender, outcome) = async_channel::bounded(1);
        let _ = sender.try_send(Ok(JobOutcome {
            elapsed: started.elapsed(),
            vertices: Vec::new(),
            checkpoints: Vec::new(),
            restarts: 0,
            restore_verification: None,
            already_finished: true,
        }));
        Ok(Some(JobHandle {
            cluster: None,
            job: u64::MAX, // no cluster knows it: nothing to address
            name: name.to_string(),
            outcome,
            checkpoint_root: None,
            restore_verification: None,
        }))
    }
}

/// A job started with [`StreamEnv::execute_detached`].
pub struct JobHandle {
    cluster: Option<EmbeddedCluster>,
    job: crate::coordinator::messages::JobId,
    name: String,
    outcome: async_channel::Receiver<Result<JobOutcome, JobError>>,
    /// Where the job's checkpoints go, if it takes any.
    checkpoint_root: Option<PathBuf>,
    /// How long choosing and verifying the restored checkpoint took.
    restore_verification: Option<std::time::Duration>,
}

impl JobHandle {
    /// Takes a savepoint (an aligned checkpoint kept apart from the periodic
    /// ones, in `savepoint-N` under the checkpoint directory) and returns its
    /// directory once complete.
    pub fn savepoint(&self) -> Result<PathBuf, String> {
        self.trigger(true)
    }

    /// Takes a checkpoint now (Flink's checkpoint triggered through its REST
    /// API), as a periodic one would be taken (incremental if the job's are)
    /// but whatever the interval, and returns its directory once complete.
    /// A job configured with a checkpoint directory and no interval takes
    /// only these.
    pub fn checkpoint(&self) -> Result<PathBuf, String> {
        self.trigger(false)
    }

    fn trigger(&self, savepoint: bool) -> Result<PathBuf, String> {
        match &self.cluster {
            Some(cluster) => cluster.trigger(self.job, savepoint),
            None => Err(format!("job '{}' already finished", self.name)),
        }
    }

    /// Waits for the job to end and stops its cluster. Then, with no snapshot
    /// being written any more, deletes what checkpoints that never completed
    /// left in the checkpoint directory (the completed ones stay).
    pub fn wait(mut self) -> Result<JobOutcome, JobError> {
        let mut outcome = self.outcome.recv_blocking().unwrap_or_else(|_| {
            Err(JobError::Startup(format!(
                "the coordinator stopped before job '{}' ended",
                self.name
            )))
        });
        if let Ok(outcome) = &mut outcome {
            outcome.restore_verification = self.restore_verification;
        }
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown();
        }
        if let Some(root) = self.checkpoint_root.as_deref().filter(|r| r.exists()) {
            if let Err(e) = rheon_state::checkpoint::layout::remove_incomplete(root) {
                eprintln!("rheon: cannot remove the files of incomplete checkpoints: {e}");
            }
        }
        outcome
    }
}
