//! The embedded cluster: a coordinator thread and one pinned glommio executor
//! per configured core, in one process, talking over in-process mailboxes.
//! `StreamEnv::execute` starts one, submits the job and stops it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};
use rheon_net::channel::ConnectionManager;

use crate::checkpoint::state::SharedRestore;
use crate::checkpoint::writer::{SnapshotWriters, WriterThreads};
use crate::config::{available_cores, EngineConfig};
use crate::coordinator::messages::JobId;
use crate::coordinator::messages::{mailbox, CoordinatorMsg, JobOutcome, Mailbox};
use crate::coordinator::Coordinator;
use crate::error::JobError;
use crate::graph::job_graph::JobGraph;
use crate::runtime::executor::{executor_main, ExecutorSetup};

static NEXT_JOB_ID: AtomicU64 = AtomicU64::new(1);

pub struct EmbeddedCluster {
    coordinator: Mailbox<CoordinatorMsg>,
    coordinator_thread: Option<std::thread::JoinHandle<()>>,
    executors: Vec<glommio::ExecutorJoinHandle<()>>,
    snapshot_writers: Option<WriterThreads>,
}

impl EmbeddedCluster {
    /// Starts the coordinator and `config.executors` executors with
    /// `slots_per_executor` slots each.
    pub fn start(config: &EngineConfig, slots_per_executor: u32) -> Result<Self, JobError> {
        let config = Arc::new(config.clone());
        let (coordinator, inbox) = mailbox();
        let expected = config.executors;
        let own = coordinator.clone();
        let coordinator_thread = std::thread::Builder::new()
            .name("rheon-coordinator".into())
            .spawn(move || Coordinator::new(expected).run(inbox, own))
            .map_err(|e| JobError::Startup(format!("cannot start the coordinator thread: {e}")))?;
        let connections = ConnectionManager::new(config.channel.clone());
        let (snapshots, snapshot_writers) = SnapshotWriters::start(config.executors)
            .map_err(|e| JobError::Startup(format!("cannot start the snapshot writers: {e}")))?;
        let cores = available_cores();
        let mut executors = Vec::with_capacity(config.executors);
        for id in 0..config.executors {
            let placement = if config.pin_executors {
                Placement::Fixed(id % cores)
            } else {
                Placement::Unbound
            };
            let setup = ExecutorSetup {
                id,
                slots: slots_per_executor,
                config: config.clone(),
                connections: connections.clone(),
                coordinator: coordinator.clone(),
                snapshots: snapshots.clone(),
            };
            let handle = LocalExecutorBuilder::new(placement)
                .name(&format!("rheon-exec-{id}"))
                .spin_before_park(config.spin_before_park)
                .spawn(move || executor_main(setup))
                .map_err(|e| JobError::Startup(format!("cannot start executor {id}: {e}")))?;
            executors.push(handle);
        }
        Ok(EmbeddedCluster {
            coordinator,
            coordinator_thread: Some(coordinator_thread),
            executors,
            snapshot_writers: Some(snapshot_writers),
        })
    }

    /// Submits a job and blocks until it finished or failed.
    pub fn run_job(&self, graph: JobGraph) -> Result<JobOutcome, JobError> {
        self.run_job_from(graph, None)
    }

    /// Submits a job that starts from `restore` (if any) and blocks until it
    /// finished or failed.
    pub(crate) fn run_job_from(
        &self,
        graph: JobGraph,
        restore: SharedRestore,
    ) -> Result<JobOutcome, JobError> {
        let (job, outcome) = self.submit(graph, restore);
        let name = job.1;
        outcome.recv_blocking().unwrap_or_else(|_| {
            Err(JobError::Startup(format!(
                "the coordinator stopped before job '{name}' ended"
            )))
        })
    }

    /// Submits a job; returns its id and name and where its outcome arrives.
    pub(crate) fn submit(
        &self,
        graph: JobGraph,
        restore: SharedRestore,
    ) -> (
        (JobId, String),
        async_channel::Receiver<Result<JobOutcome, JobError>>,
    ) {
        let job = NEXT_JOB_ID.fetch_add(1, Ordering::Relaxed);
        let name = graph.name.clone();
        let (reply, outcome) = mailbox();
        self.coordinator.send(CoordinatorMsg::SubmitJob {
            job,
            graph: Arc::new(graph),
            reply,
            restore,
        });
        ((job, name), outcome)
    }

    /// Asks the job for a checkpoint (or a savepoint) now and waits for its
    /// directory.
    pub(crate) fn trigger(
        &self,
        job: JobId,
        savepoint: bool,
    ) -> Result<std::path::PathBuf, String> {
        let (reply, answer) = mailbox();
        self.coordinator.send(CoordinatorMsg::TriggerOnRequest {
            job,
            savepoint,
            reply,
        });
        answer
            .recv_blocking()
            .unwrap_or_else(|_| Err("the coordinator stopped".into()))
    }

    /// Stops executors and coordinator and waits for their threads and for
    /// the snapshot writers to finish what they were handed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.coordinator.send(CoordinatorMsg::Shutdown);
        for handle in self.executors.drain(..) {
            let _ = handle.join();
        }
        if let Some(t) = self.coordinator_thread.take() {
            let _ = t.join();
        }
        if let Some(writers) = self.snapshot_writers.take() {
            writers.finish();
        }
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
