//! The checkpoint coordinator of one job (Flink's `CheckpointCoordinator`):
//! triggers periodic checkpoints at the sources, gathers the subtasks'
//! acknowledgements, completes a checkpoint by writing its metadata
//! atomically, subsumes old ones, and aborts checkpoints that time out or are
//! declined, failing the job past the tolerable number of failures.
//!
//! Pure state apart from the metadata write and the subsumption (the only
//! file I/O of the job master): every method returns what to send.
//!
//! Invariant: a checkpoint is complete only when every subtask of the
//! attempt acknowledged it and its `_metadata` is durable; only then are
//! tasks notified (and sinks commit).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rheon_state::checkpoint::{
    checkpoint_dir_name, collect_shared, next_checkpoint_id, subsume, write_metadata,
    ChannelStateEntry, CheckpointMetadata, KeyedStateFiles, OperatorSnapshot,
};

use crate::checkpoint::config::CheckpointConfig;
use crate::checkpoint::state::RestoreSnapshot;
use crate::coordinator::messages::{CheckpointStats, Mailbox, SubtaskCheckpoint};
use crate::graph::execution_graph::{all_subtasks, SubtaskId};
use crate::graph::job_graph::JobGraph;
use crate::graph::stream_graph::NodeBody;
use crate::runtime::timers::now_ms;

struct Pending {
    started: Instant,
    timestamp_ms: u64,
    /// Who asked for it, if not the periodic trigger.
    request: Option<Request>,
    acks: BTreeMap<SubtaskId, SubtaskCheckpoint>,
}

impl Pending {
    fn is_savepoint(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.savepoint)
    }

    /// Tells whoever asked for checkpoint `id` that it will not complete.
    fn abort(self, id: u64, reason: &str) {
        if let Some(request) = self.request {
            let kind = request.kind();
            request
                .reply
                .send(Err(format!("{kind} {id} was aborted: {reason}")));
        }
    }
}

/// A checkpoint or savepoint asked for through the job's handle.
pub(crate) struct Request {
    pub(crate) savepoint: bool,
    /// Gets the checkpoint's directory once complete, or why it failed.
    pub(crate) reply: Mailbox<Result<PathBuf, String>>,
}

impl Request {
    /// What was asked for, to name it in messages.
    pub(crate) fn kind(&self) -> &'static str {
        if self.savepoint {
            "savepoint"
        } else {
            "checkpoint"
        }
    }
}

/// What the job master must do after a coordinator call.
pub(crate) enum CheckpointAction {
    /// Send a barrier for this checkpoint to every source subtask.
    Trigger {
        checkpoint_id: u64,
        timestamp_ms: u64,
        savepoint: bool,
    },
    /// Tell every subtask the checkpoint is complete.
    Completed { checkpoint_id: u64 },
    /// Too many checkpoints failed in a row: fail the job with this reason.
    FailJob(String),
}

pub(crate) struct CheckpointCoordinator {
    config: CheckpointConfig,
    root: PathBuf,
    graph: Arc<JobGraph>,
    subtasks: usize,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    /// When the last checkpoint ended (completed or aborted): min pause.
    last_end: Option<Instant>,
    last_trigger: Option<Instant>,
    failures_in_row: u32,
    /// No new checkpoints once a task finished (its state can no longer be taken).
    stopped: bool,
    pub(crate) completed: Vec<CheckpointStats>,
    /// The newest completed checkpoint, to restart from.
    pub(crate) latest: Option<Arc<RestoreSnapshot>>,
}

impl CheckpointCoordinator {
    /// A coordinator for `graph`, or `None` when the job has no checkpoint
    /// directory.
    pub(crate) fn new(graph: Arc<JobGraph>, config: &CheckpointConfig) -> Option<Self> {
        let root = config.directory.clone()?;
        let subtasks = all_subtasks(&graph).len();
        Some(CheckpointCoordinator {
            next_id: next_checkpoint_id(&root),
            config: config.clone(),
            root,
            graph,
            subtasks,
            pending: BTreeMap::new(),
            last_end: None,
            last_trigger: None,
            failures_in_row: 0,
            stopped: false,
            completed: Vec::new(),
            latest: None,
        })
    }

    pub(crate) fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The job (re)started: periodic checkpoints count from now.
    pub(crate) fn on_running(&mut self, now: Instant) {
        self.stopped = false;
        self.last_trigger = Some(now);
    }

    /// A task finished: abort what is pending and trigger no more.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
        self.abort_all("a task finished before acknowledging it");
    }

    /// Aborts every pending checkpoint (failover, job end). Not counted as a
    /// checkpoint failure: the job's failure is handled by the restart strategy.
    pub(crate) fn abort_all(&mut self, reason: &str) {
        for (id, pending) in std::mem::take(&mut self.pending) {
            pending.abort(id, reason);
        }
    }

    /// Periodic work: time out old checkpoints, trigger a new one when due.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<CheckpointAction> {
        let mut actions = Vec::new();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) >= self.config.timeout)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let reason = format!(
                "checkpoint {id} expired after {:?} before every subtask acknowledged it",
                self.config.timeout
            );
            actions.extend(self.fail_checkpoint(id, now, reason));
        }
        let Some(interval) = self.config.interval else {
            return actions;
        };
        let due = self
            .last_trigger
            .is_none_or(|t| now.duration_since(t) >= interval);
        let paused = self
            .last_end
            .is_some_and(|t| now.duration_since(t) < self.config.min_pause);
        if !self.stopped && due && !paused && self.pending.len() < self.config.max_concurrent.max(1)
        {
            actions.push(self.trigger(now, None));
        }
        actions
    }

    /// Starts a checkpoint: a periodic one, or one `request`ed.
    pub(crate) fn trigger(&mut self, now: Instant, request: Option<Request>) -> CheckpointAction {
        let checkpoint_id = self.next_id;
        self.next_id += 1;
        let is_savepoint = request.as_ref().is_some_and(|r| r.savepoint);
        let timestamp_ms = now_ms() as u64;
        self.last_trigger = Some(now);
        self.pending.insert(
            checkpoint_id,
            Pending {
                started: now,
                timestamp_ms,
                request,
                acks: BTreeMap::new(),
            },
        );
        CheckpointAction::Trigger {
            checkpoint_id,
            timestamp_ms,
            savepoint: is_savepoint,
        }
    }

    /// Whether a checkpoint or savepoint can be requested now.
    pub(crate) fn can_trigger(&self) -> bool {
        !self.stopped
    }

    /// A subtask acknowledged; completes the checkpoint when it was the last.
    pub(crate) fn on_ack(
        &mut self,
        checkpoint_id: u64,
        subtask: SubtaskId,
        state: SubtaskCheckpoint,
        now: Instant,
    ) -> Vec<CheckpointAction> {
        let Some(pending) = self.pending.get_mut(&checkpoint_id) else {
            return Vec::new(); // aborted or unknown: late acknowledgement
        };
        pending.acks.insert(subtask, state);
        if pending.acks.len() < self.subtasks {
            return Vec::new();
        }
        let pending = self.pending.remove(&checkpoint_id).expect("present");
        match self.complete(checkpoint_id, pending, now) {
            Ok(()) => {
                self.failures_in_row = 0;
                self.last_end = Some(now);
                // Older pending checkpoints are subsumed by this one.
                let older: Vec<u64> = self
                    .pending
                    .range(..checkpoint_id)
                    .map(|(&i, _)| i)
                    .collect();
                for id in older {
                    if let Some(pending) = self.pending.remove(&id) {
                        pending.abort(id, &format!("checkpoint {checkpoint_id} subsumed it"));
                    }
                }
                vec![CheckpointAction::Completed { checkpoint_id }]
            }
            Err(reason) => self.count_failure(reason),
        }
    }

    /// A subtask declined: the checkpoint is aborted.
    pub(crate) fn on_decline(
        &mut self,
        checkpoint_id: u64,
        subtask: SubtaskId,
        reason: String,
        now: Instant,
    ) -> Vec<CheckpointAction> {
        let vertex = &self.graph.vertices[subtask.vertex];
        let reason = format!(
            "checkpoint {checkpoint_id} was declined by {} subtask {}: {reason}",
            vertex.name, subtask.index
        );
        self.fail_checkpoint(checkpoint_id, now, reason)
    }

    fn fail_checkpoint(
        &mut self,
        checkpoint_id: u64,
        now: Instant,
        reason: String,
    ) -> Vec<CheckpointAction> {
        let Some(pending) = self.pending.remove(&checkpoint_id) else {
            return Vec::new();
        };
        if let Some(request) = pending.request {
            request.reply.send(Err(reason.clone()));
        }
        self.last_end = Some(now);
        // The files written so far are garbage; the next subsumption or a
        // restart's id choice never reuses them.
        let _ = std::fs::remove_dir_all(self.root.join(checkpoint_dir_name(checkpoint_id, false)));
        self.count_failure(reason)
    }

    fn count_failure(&mut self, reason: String) -> Vec<CheckpointAction> {
        self.failures_in_row += 1;
        eprintln!("rheon: {reason}");
        if self.failures_in_row > self.config.tolerable_failures {
            vec![CheckpointAction::FailJob(format!(
                "{} checkpoint(s) failed in a row, more than the {} tolerated; the last: {reason}",
                self.failures_in_row, self.config.tolerable_failures
            ))]
        } else {
            Vec::new()
        }
    }

    /// Builds and writes the metadata, subsumes old checkpoints.
    fn complete(
        &mut self,
        checkpoint_id: u64,
        pending: Pending,
        now: Instant,
    ) -> Result<(), String> {
        let metadata = self.metadata(checkpoint_id, &pending);
        let mut directory = self.root.join(checkpoint_dir_name(checkpoint_id, false));
        std::fs::create_dir_all(&directory)
            .map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
        write_metadata(&directory, &metadata).map_err(|e| e.to_string())?;
        if let Some(request) = &pending.request {
            if request.savepoint {
                let target = self.root.join(checkpoint_dir_name(checkpoint_id, true));
                match std::fs::rename(&directory, &target) {
                    Ok(()) => {
                        directory = target;
                        request.reply.send(Ok(directory.clone()));
                    }
                    Err(e) => request.reply.send(Err(format!(
                        "cannot move savepoint {} to {}: {e}",
                        directory.display(),
                        target.display()
                    ))),
                }
            } else {
                request.reply.send(Ok(directory.clone()));
            }
        }
        if let Err(e) = subsume(&self.root, self.config.retained.max(1)) {
            eprintln!("rheon: cannot remove old checkpoints: {e}");
        } else if let Err(e) = collect_shared(&self.root, checkpoint_id) {
            eprintln!("rheon: cannot remove unused shared state files: {e}");
        }
        let acks = pending.acks.values();
        let sync_durations: Vec<Duration> = acks.clone().map(|a| a.sync_duration).collect();
        self.completed.push(CheckpointStats {
            checkpoint_id,
            directory: directory.clone(),
            duration: now.duration_since(pending.started),
            sync_max: sync_durations.iter().copied().max().unwrap_or_default(),
            sync_durations,
            alignment_max: acks.clone().map(|a| a.alignment).max().unwrap_or_default(),
            async_max: acks
                .clone()
                .map(|a| a.async_duration)
                .max()
                .unwrap_or_default(),
            bytes: acks.map(|a| a.bytes).sum(),
        });
        self.latest = Some(Arc::new(RestoreSnapshot {
            directory,
            metadata,
            checksums_verified: false,
        }));
        Ok(())
    }

    fn metadata(&self, checkpoint_id: u64, pending: &Pending) -> CheckpointMetadata {
        let graph = &self.graph;
        let mut operators = Vec::new();
        for node in &graph.stream.nodes {
            let mut snapshot = OperatorSnapshot {
                node: node.id as u32,
                name: node.name.clone(),
                parallelism: graph.node_parallelism[node.id],
                keyed_states: Vec::new(),
                operator_state: Vec::new(),
                channel_state: Vec::new(),
            };
            let is_head = |subtask: &SubtaskId| graph.vertices[subtask.vertex].head == node.id;
            for (subtask, ack) in &pending.acks {
                for acked in ack.operators.iter().filter(|o| o.node == node.id) {
                    for keyed in &acked.keyed {
                        let states = &mut snapshot.keyed_states;
                        let index = match states.iter().position(|k| k.name == keyed.name) {
                            Some(index) => index,
                            None => {
                                states.push(KeyedStateFiles {
                                    name: keyed.name.clone(),
                                    files: Vec::new(),
                                    deltas: Vec::new(),
                                });
                                states.len() - 1
                            }
                        };
                        states[index].files.extend(keyed.files.iter().cloned());
                        states[index].deltas.extend(keyed.deltas.iter().cloned());
                    }
                    snapshot
                        .operator_state
                        .extend(acked.operator_state.iter().cloned());
                }
                if is_head(subtask) {
                    for (channel, buffers) in &ack.channel_state {
                        snapshot.channel_state.push(ChannelStateEntry {
                            subtask: subtask.index,
                            input_channel: *channel,
                            buffers: buffers.clone(),
                        });
                    }
                }
            }
            let empty = snapshot.keyed_states.is_empty()
                && snapshot.operator_state.is_empty()
                && snapshot.channel_state.is_empty();
            let stateful_source = matches!(node.body, NodeBody::Source(_));
            if !empty || stateful_source {
                operators.push(snapshot);
            }
        }
        CheckpointMetadata {
            checkpoint_id,
            timestamp_ms: pending.timestamp_ms as i64,
            job_name: graph.name.clone(),
            max_parallelism: graph.max_parallelism,
            savepoint: pending.is_savepoint(),
            operators,
        }
    }
}
