//! The coordinator: dispatcher, resource manager (with slot manager) and job
//! masters, driven only by `messages`. `Coordinator::handle` is a pure state
//! transition returning the messages to send; `run` is the edge that receives
//! from the mailbox and sends.
//!
//! Architecture Invariant: the coordinator never touches executor state; it
//! learns everything from registration, slot offers and task state messages.

pub mod job_master;
pub mod messages;
pub mod resource_manager;

use std::collections::HashMap;

use crate::coordinator::job_master::{Command, JobMaster};
use crate::coordinator::messages::{CoordinatorMsg, ExecutorMsg, JobId};
use crate::coordinator::resource_manager::ResourceManager;
use crate::error::JobError;

/// How often the coordinator looks at the clock (checkpoint triggers and
/// timeouts, restart delays).
const TICK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

pub(crate) struct Coordinator {
    resources: ResourceManager,
    jobs: HashMap<JobId, JobMaster>,
    /// Submissions wait until this many executors have registered.
    expected_executors: usize,
    waiting: Vec<CoordinatorMsg>,
}

impl Coordinator {
    pub(crate) fn new(expected_executors: usize) -> Self {
        Coordinator {
            resources: ResourceManager::default(),
            jobs: HashMap::new(),
            expected_executors,
            waiting: Vec::new(),
        }
    }

    /// Handles one message; false once told to shut down.
    pub(crate) fn handle(&mut self, message: CoordinatorMsg) -> bool {
        match message {
            CoordinatorMsg::RegisterTaskExecutor {
                executor,
                slots,
                mailbox,
            } => {
                self.resources.register(executor, slots, mailbox);
                if self.resources.registered() >= self.expected_executors {
                    for m in std::mem::take(&mut self.waiting) {
                        self.handle(m);
                    }
                }
            }
            CoordinatorMsg::SlotReport {
                executor,
                free_slots,
            } => self.resources.report(executor, free_slots),
            CoordinatorMsg::SlotOffer {
                executor,
                job,
                slot,
            } => {
                if let Some(master) = self.jobs.get_mut(&job) {
                    let commands = master.on_slot_offer(executor, slot);
                    self.execute(job, commands);
                }
            }
            CoordinatorMsg::TaskStateChanged {
                job,
                attempt,
                subtask,
                state,
                ..
            } => {
                if let Some(master) = self.jobs.get_mut(&job) {
                    let commands = master.on_task_state(attempt, subtask, state);
                    self.execute(job, commands);
                }
            }
            CoordinatorMsg::AcknowledgeCheckpoint {
                job,
                attempt,
                checkpoint_id,
                subtask,
                state,
            } => {
                if let Some(master) = self.jobs.get_mut(&job) {
                    let commands = master.on_checkpoint_ack(attempt, checkpoint_id, subtask, state);
                    self.execute(job, commands);
                }
            }
            CoordinatorMsg::DeclineCheckpoint {
                job,
                attempt,
                checkpoint_id,
                subtask,
                reason,
            } => {
                if let Some(master) = self.jobs.get_mut(&job) {
                    let commands =
                        master.on_checkpoint_decline(attempt, checkpoint_id, subtask, reason);
                    self.execute(job, commands);
                }
            }
            CoordinatorMsg::TriggerOnRequest {
                job,
                savepoint,
                reply,
            } => match self.jobs.get_mut(&job) {
                Some(master) => {
                    let commands = master.trigger_on_request(savepoint, reply);
                    self.execute(job, commands);
                }
                None => {
                    let waits = self.waiting.iter().any(
                        |m| matches!(m, CoordinatorMsg::SubmitJob { job: j, .. } if *j == job),
                    );
                    reply.send(Err(match waits {
                        true => format!("job {job} is not running yet: it waits for its executors"),
                        false => format!("job {job} is not running: it ended or never started"),
                    }))
                }
            },
            CoordinatorMsg::Tick => {
                let now = std::time::Instant::now();
                let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
                for job in jobs {
                    if let Some(master) = self.jobs.get_mut(&job) {
                        let commands = master.on_tick(now);
                        self.execute(job, commands);
                    }
                }
            }
            submit @ CoordinatorMsg::SubmitJob { .. }
                if self.resources.registered() < self.expected_executors =>
            {
                self.waiting.push(submit);
            }
            CoordinatorMsg::SubmitJob {
                job,
                graph,
                reply,
                restore,
            } => {
                let master = JobMaster::new(job, graph.clone(), reply.clone(), restore);
                let needed = master.slots_needed();
                match self.resources.allocate(needed) {
                    None => reply.send(Err(JobError::Resources {
                        job: graph.name.clone(),
                        message: format!(
                            "it needs {needed} slots (its largest parallelism) but only {} are free; lower the parallelism or give executors more slots",
                            self.resources.free_slots()
                        ),
                    })),
                    Some(executors) => {
                        self.jobs.insert(job, master);
                        for executor in executors {
                            if let Some(mb) = self.resources.mailbox(executor) {
                                mb.send(ExecutorMsg::RequestSlot { job });
                            }
                        }
                    }
                }
            }
            CoordinatorMsg::ExecutorLost { executor, reason } => {
                self.resources.lose(executor);
                let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
                for job in jobs {
                    if let Some(master) = self.jobs.get_mut(&job) {
                        let commands = master.on_executor_lost(executor, &reason);
                        self.execute(job, commands);
                    }
                }
            }
            CoordinatorMsg::Shutdown => {
                for e in self.resources.executors.iter().flatten() {
                    e.mailbox.send(ExecutorMsg::Shutdown);
                }
                return false;
            }
        }
        true
    }

    fn execute(&mut self, job: JobId, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::ToExecutor(executor, message) => {
                    if let Some(mb) = self.resources.mailbox(executor) {
                        mb.send(message);
                    }
                }
                Command::Finished(outcome) => {
                    if let Some(master) = self.jobs.get(&job) {
                        master.reply.send(outcome);
                    }
                }
            }
        }
        if self.jobs.get(&job).is_some_and(|m| m.is_done()) {
            self.jobs.remove(&job);
        }
    }

    /// The edge: handles messages until shut down or every sender is gone.
    /// A clock thread sends `Tick` every `TICK_INTERVAL` meanwhile.
    pub(crate) fn run(
        mut self,
        inbox: async_channel::Receiver<CoordinatorMsg>,
        own: crate::coordinator::messages::Mailbox<CoordinatorMsg>,
    ) {
        let clock = own.0.downgrade();
        let _ = std::thread::Builder::new()
            .name("rheon-clock".into())
            .spawn(move || loop {
                std::thread::sleep(TICK_INTERVAL);
                match clock.upgrade() {
                    Some(tx) if tx.try_send(CoordinatorMsg::Tick).is_ok() => {}
                    _ => break,
                }
            });
        drop(own);
        while let Ok(message) = inbox.recv_blocking() {
            if !self.handle(message) {
                break;
            }
        }
    }
}
