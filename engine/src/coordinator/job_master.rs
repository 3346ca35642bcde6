//! The job master of one job: gathers the slots offered for it (its slot pool),
//! deploys every subtask into a slot, follows task states, and on the first
//! failure cancels the rest and reports that failure.
//!
//! Pure state: every method returns the messages to send; nothing here does
//! I/O. Invariant: the job's outcome is sent exactly once, when every deployed
//! subtask has reached a terminal state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::coordinator::messages::{
    ExecutorId, ExecutorMsg, JobId, JobOutcome, Mailbox, SlotIndex, TaskState, VertexMetrics,
};
use crate::error::{JobError, TaskError};
use crate::graph::execution_graph::{all_subtasks, SubtaskId};
use crate::graph::job_graph::JobGraph;
use crate::runtime::task::TaskMetrics;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    WaitingForSlots,
    Running,
    Failing,
    Done,
}

/// A message the coordinator's edge must send.
pub(crate) enum Command {
    ToExecutor(ExecutorId, ExecutorMsg),
    Finished(Result<JobOutcome, JobError>),
}

pub(crate) struct JobMaster {
    job: JobId,
    graph: Arc<JobGraph>,
    pub(crate) reply: Mailbox<Result<JobOutcome, JobError>>,
    slots_needed: u32,
    /// The slot pool: offered slots, as (slot index, executor).
    offers: Vec<(SlotIndex, ExecutorId)>,
    /// Where each subtask runs and whether it is done.
    tasks: BTreeMap<SubtaskId, (ExecutorId, Option<TaskMetrics>, bool)>,
    failure: Option<Box<TaskError>>,
    phase: Phase,
    started: Instant,
}

impl JobMaster {
    pub(crate) fn new(
        job: JobId,
        graph: Arc<JobGraph>,
        reply: Mailbox<Result<JobOutcome, JobError>>,
    ) -> Self {
        let slots_needed = graph.slots_needed();
        JobMaster {
            job,
            graph,
            reply,
            slots_needed,
            offers: Vec::new(),
            tasks: BTreeMap::new(),
            failure: None,
            phase: Phase::WaitingForSlots,
            started: Instant::now(),
        }
    }

    pub(crate) fn slots_needed(&self) -> u32 {
        self.slots_needed
    }

    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// A slot was offered. Once all are here, deploys subtask i of every vertex
    /// into slot i (slot sharing), slots ordered so consecutive subtasks land on
    /// different executors.
    pub(crate) fn on_slot_offer(&mut self, executor: ExecutorId, slot: SlotIndex) -> Vec<Command> {
        self.offers.push((slot, executor));
        if self.phase != Phase::WaitingForSlots || self.offers.len() < self.slots_needed as usize {
            return Vec::new();
        }
        self.offers.sort();
        self.phase = Phase::Running;
        self.started = Instant::now();
        let mut commands = Vec::new();
        for subtask in all_subtasks(&self.graph) {
            let (slot, executor) = self.offers[subtask.index as usize];
            self.tasks.insert(subtask, (executor, None, false));
            commands.push(Command::ToExecutor(
                executor,
                ExecutorMsg::DeployTask {
                    job: self.job,
                    graph: self.graph.clone(),
                    subtask,
                    slot,
                },
            ));
        }
        commands
    }

    pub(crate) fn on_task_state(&mut self, subtask: SubtaskId, state: TaskState) -> Vec<Command> {
        let Some(entry) = self.tasks.get_mut(&subtask) else {
            return Vec::new();
        };
        if entry.2 || !state.is_terminal() {
            return Vec::new();
        }
        entry.2 = true;
        let mut commands = Vec::new();
        match state {
            TaskState::Finished(metrics) => entry.1 = Some(metrics),
            TaskState::Failed(error) => {
                if self.failure.is_none() {
                    self.failure = Some(error);
                    self.phase = Phase::Failing;
                    for (&other, &(executor, _, done)) in &self.tasks {
                        if !done {
                            commands.push(Command::ToExecutor(
                                executor,
                                ExecutorMsg::CancelTask {
                                    job: self.job,
                                    subtask: other,
                                },
                            ));
                        }
                    }
                }
            }
            TaskState::Canceled | TaskState::Running => {}
        }
        if self.tasks.values().all(|t| t.2) {
            commands.extend(self.finish());
        }
        commands
    }

    /// Every unfinished subtask on a lost executor failed.
    pub(crate) fn on_executor_lost(&mut self, executor: ExecutorId, reason: &str) -> Vec<Command> {
        let lost: Vec<SubtaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.0 == executor && !t.2)
            .map(|(&id, _)| id)
            .collect();
        let mut commands = Vec::new();
        for subtask in lost {
            let vertex = &self.graph.vertices[subtask.vertex];
            let error = TaskError::Network {
                location: crate::error::TaskLocation {
                    operator: vertex.name.clone(),
                    subtask: subtask.index,
                    parallelism: vertex.parallelism,
                },
                message: format!("executor {executor} was lost: {reason}"),
            };
            commands.extend(self.on_task_state(subtask, TaskState::Failed(Box::new(error))));
        }
        commands
    }

    fn finish(&mut self) -> Vec<Command> {
        self.phase = Phase::Done;
        let mut executors: Vec<ExecutorId> = self.offers.iter().map(|o| o.1).collect();
        executors.sort();
        executors.dedup();
        let mut commands: Vec<Command> = executors
            .into_iter()
            .map(|e| Command::ToExecutor(e, ExecutorMsg::FreeSlots { job: self.job }))
            .collect();
        let outcome = match self.failure.take() {
            Some(task) => Err(JobError::TaskFailed {
                job: self.graph.name.clone(),
                task,
            }),
            None => Ok(JobOutcome {
                elapsed: self.started.elapsed(),
                vertices: self.vertex_metrics(),
            }),
        };
        commands.push(Command::Finished(outcome));
        commands
    }

    fn vertex_metrics(&self) -> Vec<VertexMetrics> {
        self.graph
            .vertices
            .iter()
            .map(|v| {
                let mut m = VertexMetrics {
                    name: v.name.clone(),
                    parallelism: v.parallelism,
                    records_in: 0,
                    records_out: 0,
                    bytes_out: 0,
                };
                for (_, (_, metrics, _)) in self.tasks.range(
                    SubtaskId {
                        vertex: v.id,
                        index: 0,
                    }..=SubtaskId {
                        vertex: v.id,
                        index: u32::MAX,
                    },
                ) {
                    if let Some(t) = metrics {
                        m.records_in += t.records_in;
                        m.records_out += t.records_out;
                        m.bytes_out += t.bytes_out;
                    }
                }
                m
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::env::StreamEnv;
    use crate::config::EngineConfig;
    use crate::coordinator::messages::mailbox;
    use crate::error::TaskLocation;

    /// generator (p=2) -> keyed sum (p=2) -> discard: 2 vertices, 4 subtasks.
    fn master() -> (
        JobMaster,
        async_channel::Receiver<Result<JobOutcome, JobError>>,
    ) {
        let env = StreamEnv::new(
            EngineConfig::default()
                .with_executors(2)
                .with_parallelism(2),
        );
        env.generate(10, |i| (i, 1u64))
            .key_by(|r: &(u64, u64)| r.0)
            .sum(|r: &(u64, u64)| r.1)
            .discard();
        let graph = Arc::new(env.job_graph("test").expect("valid graph"));
        let (reply, rx) = mailbox();
        (JobMaster::new(7, graph, reply), rx)
    }

    fn deployed(commands: &[Command]) -> Vec<(ExecutorId, SubtaskId)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::ToExecutor(e, ExecutorMsg::DeployTask { subtask, .. }) => {
                    Some((*e, *subtask))
                }
                _ => None,
            })
            .collect()
    }

    fn failure(subtask: SubtaskId) -> TaskState {
        TaskState::Failed(Box::new(TaskError::UserFunction {
            location: TaskLocation {
                operator: "op".into(),
                subtask: subtask.index,
                parallelism: 2,
            },
            message: "boom".into(),
        }))
    }

    #[test]
    fn deploys_only_when_every_slot_is_offered_spreading_subtasks() {
        let (mut jm, _rx) = master();
        assert_eq!(jm.slots_needed(), 2);
        assert!(jm.on_slot_offer(1, 0).is_empty());
        let commands = jm.on_slot_offer(0, 0);
        let mut placed = deployed(&commands);
        placed.sort();
        // Slot order (slot index, executor): subtask 0 -> executor 0, subtask 1 -> executor 1.
        assert_eq!(
            placed,
            vec![
                (
                    0,
                    SubtaskId {
                        vertex: 0,
                        index: 0
                    }
                ),
                (
                    0,
                    SubtaskId {
                        vertex: 1,
                        index: 0
                    }
                ),
                (
                    1,
                    SubtaskId {
                        vertex: 0,
                        index: 1
                    }
                ),
                (
                    1,
                    SubtaskId {
                        vertex: 1,
                        index: 1
                    }
                ),
            ]
        );
    }

    #[test]
    fn finishes_once_after_every_subtask_and_sums_metrics() {
        let (mut jm, _rx) = master();
        jm.on_slot_offer(0, 0);
        let all = deployed(&jm.on_slot_offer(1, 0));
        let mut outcomes = 0;
        for (i, (_, subtask)) in all.iter().enumerate() {
            let metrics = TaskMetrics {
                records_in: 5,
                records_out: 5,
                bytes_out: 80,
            };
            for c in jm.on_task_state(*subtask, TaskState::Finished(metrics)) {
                if let Command::Finished(outcome) = c {
                    assert_eq!(i, all.len() - 1, "outcome before the last subtask finished");
                    let outcome = outcome.expect("job succeeded");
                    assert_eq!(outcome.vertices[0].records_out, 10);
                    outcomes += 1;
                }
            }
        }
        // A late duplicate report changes nothing.
        assert!(jm.on_task_state(all[0].1, TaskState::Canceled).is_empty());
        assert_eq!(outcomes, 1);
        assert!(jm.is_done());
    }

    #[test]
    fn first_failure_cancels_the_rest_and_is_reported() {
        let (mut jm, _rx) = master();
        jm.on_slot_offer(0, 0);
        let all = deployed(&jm.on_slot_offer(1, 0));
        let failed = all[1].1;
        let commands = jm.on_task_state(failed, failure(failed));
        let cancelled: Vec<SubtaskId> = commands
            .iter()
            .filter_map(|c| match c {
                Command::ToExecutor(_, ExecutorMsg::CancelTask { subtask, .. }) => Some(*subtask),
                _ => None,
            })
            .collect();
        assert_eq!(cancelled.len(), 3);
        assert!(!cancelled.contains(&failed));
        let mut result = None;
        for subtask in cancelled {
            // A second failure while cancelling does not replace the first.
            let state = if subtask == all[2].1 {
                failure(subtask)
            } else {
                TaskState::Canceled
            };
            for c in jm.on_task_state(subtask, state) {
                if let Command::Finished(outcome) = c {
                    result = Some(outcome);
                }
            }
        }
        match result.expect("an outcome") {
            Err(JobError::TaskFailed { task: source, .. }) => {
                assert_eq!(source.location().subtask, failed.index)
            }
            other => panic!("expected the first failure, got {other:?}"),
        }
    }

    #[test]
    fn a_lost_executor_fails_its_subtasks() {
        let (mut jm, _rx) = master();
        jm.on_slot_offer(0, 0);
        jm.on_slot_offer(1, 0);
        let commands = jm.on_executor_lost(1, "gone");
        let cancels = commands
            .iter()
            .filter(|c| matches!(c, Command::ToExecutor(0, ExecutorMsg::CancelTask { .. })))
            .count();
        assert_eq!(
            cancels, 2,
            "the subtasks on the surviving executor are cancelled"
        );
    }
}
