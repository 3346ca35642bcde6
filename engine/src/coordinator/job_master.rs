//! The job master of one job: gathers the slots offered for it (its slot pool),
//! deploys every subtask into a slot, follows task states, runs the job's
//! checkpoint coordinator, and on a failure either restarts the job from its
//! latest completed checkpoint (as its restart strategy allows) or cancels
//! the rest and reports the failure.
//!
//! Pure state apart from the checkpoint coordinator's metadata writes and
//! the final commits of sinks: every method returns the messages to send.
//! Invariant: the job's outcome is sent exactly once, when every deployed
//! subtask of the last attempt has reached a terminal state; messages from
//! an older attempt are ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rheon_state::checkpoint::CheckpointError;

use crate::checkpoint::coordinator::{CheckpointAction, CheckpointCoordinator, Request};
use crate::checkpoint::restart::RestartTracker;
use crate::checkpoint::state::{RestoreSnapshot, SharedRestore};
use crate::coordinator::messages::{
    ExecutorId, ExecutorMsg, JobId, JobOutcome, Mailbox, SlotIndex, SubtaskCheckpoint, TaskState,
    VertexMetrics,
};
use crate::error::{JobError, TaskError, TaskLocation};
use crate::graph::execution_graph::{all_subtasks, SubtaskId};
use crate::graph::job_graph::JobGraph;
use crate::graph::stream_graph::NodeBody;
use crate::runtime::task::TaskMetrics;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    WaitingForSlots,
    Running,
    /// Cancelling the attempt's tasks; then restarting at `ready_at`.
    Restarting,
    Failing,
    Done,
}

/// A message the coordinator's edge must send.
pub(crate) enum Command {
    ToExecutor(ExecutorId, ExecutorMsg),
    Finished(Result<JobOutcome, JobError>),
}

struct TaskSlot {
    executor: ExecutorId,
    metrics: Option<TaskMetrics>,
    done: bool,
}

pub(crate) struct JobMaster {
    job: JobId,
    graph: Arc<JobGraph>,
    pub(crate) reply: Mailbox<Result<JobOutcome, JobError>>,
    slots_needed: u32,
    /// The slot pool: offered slots, as (slot index, executor).
    offers: Vec<(SlotIndex, ExecutorId)>,
    /// Where each subtask of the current attempt runs and whether it is done.
    tasks: BTreeMap<SubtaskId, TaskSlot>,
    failure: Option<Box<TaskError>>,
    phase: Phase,
    started: Instant,
    attempt: u32,
    restart: RestartTracker,
    /// When the restart may deploy (after the strategy's delay).
    ready_at: Option<Instant>,
    checkpoints: Option<CheckpointCoordinator>,
    /// What the current attempt restored from.
    restored: SharedRestore,
    /// Checkpoints whose restore failed and whose files then failed
    /// [`verify`](rheon_state::checkpoint::verify), with why: never restored
    /// again.
    set_aside: Vec<(PathBuf, String)>,
    /// Checkpoints whose every checksum held when an attempt that restored
    /// them failed: a later restore need not check them again.
    verified: Vec<PathBuf>,
    /// Why no checkpoint was left to restore, once that ended the job.
    restore_failure: Option<String>,
}

impl JobMaster {
    pub(crate) fn new(
        job: JobId,
        graph: Arc<JobGraph>,
        reply: Mailbox<Result<JobOutcome, JobError>>,
        restore: SharedRestore,
    ) -> Self {
        let slots_needed = graph.slots_needed();
        let checkpoints = CheckpointCoordinator::new(graph.clone(), &graph.checkpoint);
        JobMaster {
            job,
            restart: RestartTracker::new(graph.checkpoint.restart.clone()),
            graph,
            reply,
            slots_needed,
            offers: Vec::new(),
            tasks: BTreeMap::new(),
            failure: None,
            phase: Phase::WaitingForSlots,
            started: Instant::now(),
            attempt: 0,
            ready_at: None,
            checkpoints,
            restored: restore,
            set_aside: Vec::new(),
            verified: Vec::new(),
            restore_failure: None,
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
        self.started = Instant::now();
        self.deploy()
    }

    /// Deploys every subtask of a new attempt.
    fn deploy(&mut self) -> Vec<Command> {
        self.phase = Phase::Running;
        self.tasks.clear();
        if let Some(c) = &mut self.checkpoints {
            c.on_running(Instant::now());
        }
        let mut commands = Vec::new();
        for subtask in all_subtasks(&self.graph) {
            let (slot, executor) = self.offers[subtask.index as usize];
            self.tasks.insert(
                subtask,
                TaskSlot {
                    executor,
                    metrics: None,
                    done: false,
                },
            );
            commands.push(Command::ToExecutor(
                executor,
                ExecutorMsg::DeployTask {
                    job: self.job,
                    graph: self.graph.clone(),
                    subtask,
                    slot,
                    attempt: self.attempt,
                    restore: self.restored.clone(),
                },
            ));
        }
        commands
    }

    pub(crate) fn on_task_state(
        &mut self,
        attempt: u32,
        subtask: SubtaskId,
        state: TaskState,
    ) -> Vec<Command> {
        if attempt != self.attempt {
            return Vec::new();
        }
        let Some(entry) = self.tasks.get_mut(&subtask) else {
            return Vec::new();
        };
        if entry.done || !state.is_terminal() {
            return Vec::new();
        }
        entry.done = true;
        let mut commands = Vec::new();
        match state {
            TaskState::Finished(metrics) => {
                entry.metrics = Some(metrics);
                if let Some(c) = &mut self.checkpoints {
                    c.stop();
                }
            }
            TaskState::Failed(error) => commands.extend(self.on_failure(error)),
            TaskState::Canceled | TaskState::Running => {}
        }
        if self.tasks.values().all(|t| t.done) {
            match self.phase {
                Phase::Restarting => commands.extend(self.on_tick(Instant::now())),
                _ => commands.extend(self.finish()),
            }
        }
        commands
    }

    /// The first failure of an attempt: restart if the strategy allows, else
    /// fail the job. Either way the attempt's other tasks are cancelled.
    fn on_failure(&mut self, error: Box<TaskError>) -> Vec<Command> {
        if self.phase != Phase::Running {
            return Vec::new();
        }
        if let Some(c) = &mut self.checkpoints {
            c.abort_all("the job is failing over");
        }
        if let Some(reason) = self.damaged_restore(&error) {
            // Not a failure of the job: its checkpoint is bad. The next
            // attempt restores an older one, whatever the restart strategy.
            eprintln!(
                "rheon: job '{}' sets aside the checkpoint it restored, and restores an older one: {reason}",
                self.graph.name
            );
            self.phase = Phase::Restarting;
            self.ready_at = Some(Instant::now());
            return self.cancel_running();
        }
        let restart = match error.suppresses_restarts() {
            true => None,
            false => self.restart.on_failure(Instant::now()),
        };
        match restart {
            Some(delay) => {
                eprintln!(
                    "rheon: job '{}' restarts in {delay:?} (restart {}) after: {error}",
                    self.graph.name,
                    self.restart.restarts()
                );
                self.phase = Phase::Restarting;
                self.ready_at = Some(Instant::now() + delay);
            }
            None => {
                self.failure = Some(error);
                self.phase = Phase::Failing;
            }
        }
        self.cancel_running()
    }

    fn cancel_running(&self) -> Vec<Command> {
        self.tasks
            .iter()
            .filter(|(_, t)| !t.done)
            .map(|(&subtask, t)| {
                Command::ToExecutor(
                    t.executor,
                    ExecutorMsg::CancelTask {
                        job: self.job,
                        subtask,
                    },
                )
            })
            .collect()
    }

    /// The clock: restarts when due, drives the checkpoint coordinator.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Vec<Command> {
        match self.phase {
            Phase::Restarting => {
                let all_down = self.tasks.values().all(|t| t.done);
                if all_down && self.ready_at.is_some_and(|t| now >= t) {
                    return self.restart_now();
                }
                Vec::new()
            }
            Phase::Running => {
                let actions = match &mut self.checkpoints {
                    Some(c) => c.tick(now),
                    None => return Vec::new(),
                };
                self.apply(actions)
            }
            _ => Vec::new(),
        }
    }

    /// A failed restore of a checkpoint whose checksums were not checked
    /// before: checks them all now (on the failure path only, once per
    /// checkpoint). If one fails, the checkpoint is set aside and the reason
    /// returned.
    fn damaged_restore(&mut self, error: &TaskError) -> Option<String> {
        let restored = self.restored.as_ref()?;
        let directory = &restored.directory;
        if restored.checksums_verified
            || !matches!(error, TaskError::Restore { .. })
            || self.verified.contains(directory)
        {
            return None;
        }
        match rheon_state::checkpoint::verify(directory) {
            Ok(_) => {
                self.verified.push(directory.clone());
                None
            }
            Err(damage) => {
                let reason = damage.to_string();
                self.set_aside.push((directory.clone(), reason.clone()));
                Some(reason)
            }
        }
    }

    /// Deploys the next attempt from the latest valid checkpoint; ends the
    /// job if it should restore one and none is left.
    fn restart_now(&mut self) -> Vec<Command> {
        self.ready_at = None;
        self.attempt += 1;
        self.restored = match self.latest_restore() {
            Ok(restore) => restore,
            Err(why) => {
                self.restore_failure = Some(why);
                return self.finish();
            }
        };
        match &self.restored {
            Some(r) => eprintln!(
                "rheon: job '{}' restores checkpoint {} from {}",
                self.graph.name,
                r.metadata.checkpoint_id,
                r.directory.display()
            ),
            None => eprintln!(
                "rheon: job '{}' restarts from the beginning (no completed checkpoint)",
                self.graph.name
            ),
        }
        self.deploy()
    }

    /// The newest of the job's own checkpoints whose files hold, falling
    /// back to older retained ones; without one, the newest under
    /// `restore_from` (`--restore`), else none (from the beginning). Checks
    /// files as far as [`Depth::Layout`](rheon_state::checkpoint::Depth) (the
    /// tasks check the checksums of what they read) and skips the
    /// checkpoints set aside. An error if the job was to restore from
    /// `restore_from` and nothing there is left.
    fn latest_restore(&self) -> Result<SharedRestore, String> {
        let pick = |path: &std::path::Path| {
            let (directory, metadata, skipped) = rheon_state::checkpoint::latest_valid_to(
                path,
                rheon_state::checkpoint::Depth::Layout,
                &self.set_aside,
            )?;
            // Those set aside were reported when they were.
            let new = skipped
                .iter()
                .filter(|(_, why)| !matches!(why, CheckpointError::SetAside { .. }));
            for (path, why) in new {
                eprintln!("rheon: skipping checkpoint {}: {why}", path.display());
            }
            let checksums_verified = self.verified.contains(&directory);
            Ok::<_, CheckpointError>(Some(Arc::new(RestoreSnapshot {
                directory,
                metadata,
                checksums_verified,
            })))
        };
        if let Some(c) = self.checkpoints.as_ref().filter(|c| c.latest.is_some()) {
            match pick(c.root()) {
                Ok(restore) => return Ok(restore),
                Err(e) => eprintln!("rheon: no valid checkpoint of the job's own to restore: {e}"),
            }
        }
        match &self.graph.checkpoint.restore_from {
            None => Ok(None),
            Some(path) => pick(path).map_err(|e| e.to_string()),
        }
    }

    fn apply(&mut self, actions: Vec<CheckpointAction>) -> Vec<Command> {
        let mut commands = Vec::new();
        for action in actions {
            match action {
                CheckpointAction::Trigger {
                    checkpoint_id,
                    timestamp_ms,
                    savepoint,
                } => {
                    for (&subtask, task) in &self.tasks {
                        let head = self.graph.vertices[subtask.vertex].head;
                        if matches!(self.graph.stream.nodes[head].body, NodeBody::Source(_)) {
                            commands.push(Command::ToExecutor(
                                task.executor,
                                ExecutorMsg::TriggerCheckpoint {
                                    job: self.job,
                                    subtask,
                                    checkpoint_id,
                                    timestamp_ms,
                                    savepoint,
                                },
                            ));
                        }
                    }
                }
                CheckpointAction::Completed { checkpoint_id } => {
                    for executor in self.executors() {
                        commands.push(Command::ToExecutor(
                            executor,
                            ExecutorMsg::NotifyCheckpointComplete {
                                job: self.job,
                                checkpoint_id,
                            },
                        ));
                    }
                }
                CheckpointAction::FailJob(reason) => {
                    let vertex = &self.graph.vertices[0];
                    let error = Box::new(TaskError::Checkpoint {
                        location: TaskLocation {
                            operator: vertex.name.clone(),
                            subtask: 0,
                            parallelism: vertex.parallelism,
                        },
                        message: reason,
                    });
                    commands.extend(self.on_failure(error));
                }
            }
        }
        commands
    }

    /// A subtask's snapshot is written.
    pub(crate) fn on_checkpoint_ack(
        &mut self,
        attempt: u32,
        checkpoint_id: u64,
        subtask: SubtaskId,
        state: SubtaskCheckpoint,
    ) -> Vec<Command> {
        if attempt != self.attempt || self.phase != Phase::Running {
            return Vec::new();
        }
        let actions = match &mut self.checkpoints {
            Some(c) => c.on_ack(checkpoint_id, subtask, state, Instant::now()),
            None => return Vec::new(),
        };
        self.apply(actions)
    }

    pub(crate) fn on_checkpoint_decline(
        &mut self,
        attempt: u32,
        checkpoint_id: u64,
        subtask: SubtaskId,
        reason: String,
    ) -> Vec<Command> {
        if attempt != self.attempt || self.phase != Phase::Running {
            return Vec::new();
        }
        let actions = match &mut self.checkpoints {
            Some(c) => c.on_decline(checkpoint_id, subtask, reason, Instant::now()),
            None => return Vec::new(),
        };
        self.apply(actions)
    }

    /// A checkpoint (or a savepoint) on request; the reply gets its
    /// directory or why not.
    pub(crate) fn trigger_on_request(
        &mut self,
        savepoint: bool,
        reply: Mailbox<Result<PathBuf, String>>,
    ) -> Vec<Command> {
        let request = Request { savepoint, reply };
        let kind = request.kind();
        let Some(c) = &mut self.checkpoints else {
            request.reply.send(Err(format!(
                "job '{}' has no checkpoint directory to write a {kind} to",
                self.graph.name
            )));
            return Vec::new();
        };
        if self.phase != Phase::Running || !c.can_trigger() {
            request.reply.send(Err(format!(
                "job '{}' is not running every task (it is {:?}); no {kind}",
                self.graph.name, self.phase
            )));
            return Vec::new();
        }
        let action = c.trigger(Instant::now(), Some(request));
        self.apply(vec![action])
    }

    fn executors(&self) -> Vec<ExecutorId> {
        let mut executors: Vec<ExecutorId> = self.offers.iter().map(|o| o.1).collect();
        executors.sort();
        executors.dedup();
        executors
    }

    /// Every unfinished subtask on a lost executor failed.
    pub(crate) fn on_executor_lost(&mut self, executor: ExecutorId, reason: &str) -> Vec<Command> {
        let lost: Vec<SubtaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.executor == executor && !t.done)
            .map(|(&id, _)| id)
            .collect();
        let mut commands = Vec::new();
        for subtask in lost {
            let vertex = &self.graph.vertices[subtask.vertex];
            let error = TaskError::Network {
                location: TaskLocation {
                    operator: vertex.name.clone(),
                    subtask: subtask.index,
                    parallelism: vertex.parallelism,
                },
                message: format!("executor {executor} was lost: {reason}"),
            };
            commands.extend(self.on_task_state(
                self.attempt,
                subtask,
                TaskState::Failed(Box::new(error)),
            ));
        }
        commands
    }

    fn finish(&mut self) -> Vec<Command> {
        self.phase = Phase::Done;
        if let Some(c) = &mut self.checkpoints {
            c.abort_all("the job ended");
        }
        let mut commands: Vec<Command> = self
            .executors()
            .into_iter()
            .map(|e| Command::ToExecutor(e, ExecutorMsg::FreeSlots { job: self.job }))
            .collect();
        let outcome = if let Some(message) = self.restore_failure.take() {
            Err(JobError::Restore {
                job: self.graph.name.clone(),
                message,
            })
        } else if let Some(task) = self.failure.take() {
            Err(JobError::TaskFailed {
                job: self.graph.name.clone(),
                task,
            })
        } else {
            self.commit_final().map(|()| JobOutcome {
                restore_verification: None,
                already_finished: false,
                elapsed: self.started.elapsed(),
                vertices: self.vertex_metrics(),
                checkpoints: self
                    .checkpoints
                    .as_ref()
                    .map(|c| c.completed.clone())
                    .unwrap_or_default(),
                restarts: self.restart.restarts(),
            })
        };
        commands.push(Command::Finished(outcome));
        commands
    }

    /// The job ended well: what sinks staged at the end of their input
    /// becomes visible (renames of part files, idempotent). With checkpoints,
    /// the list of those commits is made durable first (`_finished`), so
    /// that a process killed from here on is restored by replaying them, not
    /// by replaying records whose output they commit.
    fn commit_final(&self) -> Result<(), JobError> {
        let commit_error = |message| JobError::Commit {
            job: self.graph.name.clone(),
            message,
        };
        let commits: Vec<_> = self
            .tasks
            .values()
            .flat_map(|task| task.metrics.iter().flat_map(|m| m.commits.iter().cloned()))
            .collect();
        if let Some(c) = &self.checkpoints {
            let finished = crate::checkpoint::finished::Finished {
                job: self.graph.name.clone(),
                commits,
            };
            crate::checkpoint::finished::write(c.root(), &finished).map_err(commit_error)?;
            return apply_all(&finished.commits).map_err(commit_error);
        }
        apply_all(&commits).map_err(commit_error)
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
                    restore_durations: Vec::new(),
                };
                for (_, task) in self.tasks.range(
                    SubtaskId {
                        vertex: v.id,
                        index: 0,
                    }..=SubtaskId {
                        vertex: v.id,
                        index: u32::MAX,
                    },
                ) {
                    if let Some(t) = &task.metrics {
                        m.records_in += t.records_in;
                        m.records_out += t.records_out;
                        m.bytes_out += t.bytes_out;
                        if self.restored.is_some() {
                            m.restore_durations.push(t.restore);
                        }
                    }
                }
                m
            })
            .collect()
    }
}

/// Applies every commit, stopping at the first that fails.
pub(crate) fn apply_all(commits: &[crate::runtime::file_sink::PendingFile]) -> Result<(), String> {
    commits.iter().try_for_each(|c| c.apply())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        master_with(EngineConfig::default(), None)
    }

    /// [`master`]'s job with `config`, restoring `restore`.
    fn master_with(
        config: EngineConfig,
        restore: SharedRestore,
    ) -> (
        JobMaster,
        async_channel::Receiver<Result<JobOutcome, JobError>>,
    ) {
        let env = StreamEnv::new(config.with_executors(2).with_parallelism(2));
        env.generate(10, |i| (i, 1u64))
            .key_by(|r: &(u64, u64)| r.0)
            .sum(|r: &(u64, u64)| r.1)
            .discard();
        let graph = Arc::new(env.job_graph("test").expect("valid graph"));
        let (reply, rx) = mailbox();
        (JobMaster::new(7, graph, reply, restore), rx)
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

    /// [`master`], restoring an unverified checkpoint at `directory` (which
    /// holds nothing) given as `restore_from`, with no restarts.
    fn restoring(
        directory: &std::path::Path,
    ) -> (
        JobMaster,
        async_channel::Receiver<Result<JobOutcome, JobError>>,
    ) {
        let mut checkpoints = crate::checkpoint::CheckpointConfig::every(
            Duration::from_secs(3600),
            directory.parent().expect("a root"),
        );
        checkpoints.restore_from = Some(directory.to_path_buf());
        checkpoints.restart = crate::checkpoint::restart::RestartStrategy::None;
        let restore = RestoreSnapshot {
            directory: directory.to_path_buf(),
            metadata: rheon_state::checkpoint::CheckpointMetadata {
                checkpoint_id: 3,
                timestamp_ms: 0,
                job_name: "test".into(),
                max_parallelism: 128,
                savepoint: false,
                operators: Vec::new(),
            },
            checksums_verified: false,
        };
        master_with(
            EngineConfig::default().with_checkpoints(checkpoints),
            Some(Arc::new(restore)),
        )
    }

    fn failed(subtask: SubtaskId, restoring: bool) -> TaskState {
        let location = TaskLocation {
            operator: "op".into(),
            subtask: subtask.index,
            parallelism: 2,
        };
        let message = "key group 5 does not read back".into();
        TaskState::Failed(Box::new(match restoring {
            true => TaskError::Restore { location, message },
            false => TaskError::Checkpoint { location, message },
        }))
    }

    /// Ends every subtask but `failed` as cancelled, then runs the clock;
    /// returns the job's outcome if it ended.
    fn settle(
        jm: &mut JobMaster,
        all: &[(ExecutorId, SubtaskId)],
        failed: SubtaskId,
    ) -> Option<Result<JobOutcome, JobError>> {
        let mut commands = Vec::new();
        for &(_, subtask) in all.iter().filter(|(_, s)| *s != failed) {
            commands.extend(jm.on_task_state(jm.attempt, subtask, TaskState::Canceled));
        }
        commands.extend(jm.on_tick(Instant::now()));
        commands.into_iter().find_map(|c| match c {
            Command::Finished(outcome) => Some(outcome),
            _ => None,
        })
    }

    #[test]
    fn only_a_failed_restore_sets_its_checkpoint_aside() {
        let missing =
            std::env::temp_dir().join(format!("rheon-jm-missing-{}/chk-3", std::process::id()));
        // A checkpoint failure is the job's: no restart strategy, so it fails
        // with that error, and nothing is set aside.
        let (mut jm, _rx) = restoring(&missing);
        jm.on_slot_offer(0, 0);
        let all = deployed(&jm.on_slot_offer(1, 0));
        let subtask = all[0].1;
        jm.on_task_state(0, subtask, failed(subtask, false));
        let outcome = settle(&mut jm, &all, subtask);
        assert!(
            matches!(outcome, Some(Err(JobError::TaskFailed { .. }))),
            "{outcome:?}"
        );
        assert!(jm.set_aside.is_empty());

        // A failed restore of a checkpoint that does not verify (here: it
        // is gone) sets it aside and restarts whatever the strategy; with
        // nothing left under `restore_from`, the job fails naming why.
        let (mut jm, _rx) = restoring(&missing);
        jm.on_slot_offer(0, 0);
        let all = deployed(&jm.on_slot_offer(1, 0));
        let subtask = all[0].1;
        jm.on_task_state(0, subtask, failed(subtask, true));
        assert_eq!(jm.set_aside.len(), 1);
        assert_eq!(jm.set_aside[0].0, missing);
        assert_eq!(jm.phase, Phase::Restarting);
        let outcome = settle(&mut jm, &all, subtask);
        match outcome {
            Some(Err(JobError::Restore { message, .. })) => {
                assert!(message.contains("set aside"), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(jm.restart.restarts(), 0, "the fallback is not a restart");
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
                commits: Vec::new(),
                restore: Duration::ZERO,
            };
            for c in jm.on_task_state(0, *subtask, TaskState::Finished(metrics)) {
                if let Command::Finished(outcome) = c {
                    assert_eq!(i, all.len() - 1, "outcome before the last subtask finished");
                    let outcome = outcome.expect("job succeeded");
                    assert_eq!(outcome.vertices[0].records_out, 10);
                    outcomes += 1;
                }
            }
        }
        // A late duplicate report changes nothing.
        assert!(jm
            .on_task_state(0, all[0].1, TaskState::Canceled)
            .is_empty());
        assert_eq!(outcomes, 1);
        assert!(jm.is_done());
    }

    #[test]
    fn first_failure_cancels_the_rest_and_is_reported() {
        let (mut jm, _rx) = master();
        jm.on_slot_offer(0, 0);
        let all = deployed(&jm.on_slot_offer(1, 0));
        let failed = all[1].1;
        let commands = jm.on_task_state(0, failed, failure(failed));
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
            for c in jm.on_task_state(0, subtask, state) {
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
