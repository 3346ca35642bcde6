//! The task executor: one glommio executor pinned to a core, owning its slots,
//! its memory-segment pool and the subtasks deployed into its slots. It obeys
//! the coordinator's messages and reports task states back.
//!
//! Architecture Invariant: per-core state (`SegmentPool`, running tasks) is
//! `!Send` and never leaves this thread; only `Segment`s travel, inside
//! buffers, and come back through the channels.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::FutureExt;
use glommio::task::JoinHandle;
use rheon_net::channel::ConnectionManager;
use rheon_net::segment::SegmentPool;

use crate::checkpoint::writer::SnapshotWriters;
use crate::config::EngineConfig;
use crate::coordinator::messages::{
    mailbox, CoordinatorMsg, ExecutorId, ExecutorMsg, JobId, Mailbox, TaskState,
};
use crate::error::{panic_message, TaskError, TaskLocation};
use crate::graph::execution_graph::SubtaskId;
use crate::runtime::task::{run_subtask, TaskControl, TaskEnv, TaskSetup};

pub(crate) struct ExecutorSetup {
    pub(crate) id: ExecutorId,
    pub(crate) slots: u32,
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) connections: Arc<ConnectionManager>,
    pub(crate) coordinator: Mailbox<CoordinatorMsg>,
    pub(crate) snapshots: SnapshotWriters,
}

/// A running subtask: its join handle and its control inbox.
struct Running {
    handle: JoinHandle<()>,
    control: async_channel::Sender<TaskControl>,
}

/// The subtasks running on this executor, by job.
type RunningTasks = Rc<RefCell<HashMap<(JobId, SubtaskId), Running>>>;

/// Tells the coordinator when the executor's thread unwinds from a panic that
/// no task guard caught, so the job fails instead of waiting forever.
struct LostGuard {
    id: ExecutorId,
    coordinator: Mailbox<CoordinatorMsg>,
}

impl Drop for LostGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.coordinator.send(CoordinatorMsg::ExecutorLost {
                executor: self.id,
                reason: "its thread panicked (see the panic message above)".into(),
            });
        }
    }
}

/// The executor's main future: registers, then serves control messages until
/// told to shut down.
pub(crate) async fn executor_main(setup: ExecutorSetup) {
    let _lost_guard = LostGuard {
        id: setup.id,
        coordinator: setup.coordinator.clone(),
    };
    let (own_mailbox, inbox) = mailbox::<ExecutorMsg>();
    let id = setup.id;
    let env = Rc::new(TaskEnv {
        executor: id,
        pool: SegmentPool::new(
            setup.config.segment_size_bytes,
            setup.config.segments_per_executor,
        ),
        connections: setup.connections.clone(),
        config: setup.config.clone(),
        coordinator: setup.coordinator.clone(),
        snapshots: setup.snapshots.clone(),
    });
    let coordinator = setup.coordinator.clone();
    coordinator.send(CoordinatorMsg::RegisterTaskExecutor {
        executor: id,
        slots: setup.slots,
        mailbox: own_mailbox,
    });

    // Slot i is allocated to the job in `slots[i]`, if any.
    let mut slots: Vec<Option<JobId>> = vec![None; setup.slots as usize];
    let running: RunningTasks = Rc::new(RefCell::new(HashMap::new()));
    // The attempt each subtask was last deployed in.
    let mut attempts: HashMap<(JobId, SubtaskId), u32> = HashMap::new();

    while let Ok(message) = inbox.recv().await {
        match message {
            ExecutorMsg::RequestSlot { job } => {
                if let Some(slot) = slots.iter().position(|s| s.is_none()) {
                    slots[slot] = Some(job);
                    coordinator.send(CoordinatorMsg::SlotOffer {
                        executor: id,
                        job,
                        slot: slot as u32,
                    });
                }
            }
            ExecutorMsg::DeployTask {
                job,
                graph,
                subtask,
                slot: _,
                attempt,
                restore,
            } => {
                coordinator.send(CoordinatorMsg::TaskStateChanged {
                    executor: id,
                    job,
                    attempt,
                    subtask,
                    state: TaskState::Running,
                });
                let (control, control_rx) = async_channel::unbounded();
                let (env, coordinator, running_map) =
                    (env.clone(), coordinator.clone(), running.clone());
                let vertex = &graph.vertices[subtask.vertex];
                let location = TaskLocation {
                    operator: vertex.name.clone(),
                    subtask: subtask.index,
                    parallelism: vertex.parallelism,
                };
                let task = TaskSetup {
                    job,
                    graph,
                    subtask,
                    attempt,
                    restore,
                    control: control_rx,
                };
                let handle = glommio::spawn_local(async move {
                    let result = AssertUnwindSafe(run_subtask(task, env))
                        .catch_unwind()
                        .await;
                    running_map.borrow_mut().remove(&(job, subtask));
                    let state = match result {
                        Ok(Ok(metrics)) => TaskState::Finished(metrics),
                        Ok(Err(error)) => TaskState::Failed(error),
                        Err(payload) => TaskState::Failed(Box::new(TaskError::UserFunction {
                            location,
                            message: panic_message(payload.as_ref()),
                        })),
                    };
                    coordinator.send(CoordinatorMsg::TaskStateChanged {
                        executor: id,
                        job,
                        attempt,
                        subtask,
                        state,
                    });
                })
                .detach();
                running
                    .borrow_mut()
                    .insert((job, subtask), Running { handle, control });
                attempts.insert((job, subtask), attempt);
            }
            ExecutorMsg::CancelTask { job, subtask } => {
                let task = running.borrow_mut().remove(&(job, subtask));
                if let Some(task) = task {
                    task.handle.cancel();
                    coordinator.send(CoordinatorMsg::TaskStateChanged {
                        executor: id,
                        job,
                        attempt: attempts.get(&(job, subtask)).copied().unwrap_or(0),
                        subtask,
                        state: TaskState::Canceled,
                    });
                }
            }
            ExecutorMsg::TriggerCheckpoint {
                job,
                subtask,
                checkpoint_id,
                timestamp_ms,
                savepoint,
            } => {
                if let Some(task) = running.borrow().get(&(job, subtask)) {
                    let _ = task.control.try_send(TaskControl::TriggerCheckpoint {
                        checkpoint_id,
                        timestamp_ms,
                        savepoint,
                    });
                }
            }
            ExecutorMsg::NotifyCheckpointComplete { job, checkpoint_id } => {
                for ((j, _), task) in running.borrow().iter() {
                    if *j == job {
                        let _ = task
                            .control
                            .try_send(TaskControl::CheckpointComplete { checkpoint_id });
                    }
                }
            }
            ExecutorMsg::FreeSlots { job } => {
                for slot in slots.iter_mut().filter(|s| **s == Some(job)) {
                    *slot = None;
                }
                let free = slots.iter().filter(|s| s.is_none()).count() as u32;
                coordinator.send(CoordinatorMsg::SlotReport {
                    executor: id,
                    free_slots: free,
                });
            }
            ExecutorMsg::Shutdown => break,
        }
    }
    for (_, task) in running.borrow_mut().drain() {
        task.handle.cancel();
    }
}
