//! The snapshot writers: threads of the process that write what tasks forked
//! at a barrier (the asynchronous part of a checkpoint) and acknowledge it to
//! the coordinator with the state's file names.
//!
//! Writers are plain threads, not executors: writing is file I/O plus
//! encoding, and running it beside the pinned executors keeps it off every
//! task's processing path (the task only forks, in O(key groups)).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::checkpoint::state::{StateFile, TakenOperator};
use crate::coordinator::messages::{
    AckedKeyed, AckedOperator, CoordinatorMsg, JobId, Mailbox, SubtaskCheckpoint,
};
use crate::graph::execution_graph::SubtaskId;
use rheon_state::checkpoint::{shared_file_name, SHARED_DIR_NAME};

/// One subtask's snapshot, to be written.
pub(crate) struct SnapshotJob {
    pub(crate) job: JobId,
    pub(crate) attempt: u32,
    pub(crate) checkpoint_id: u64,
    pub(crate) subtask: SubtaskId,
    /// The checkpoint's directory (`ROOT/chk-N`).
    pub(crate) directory: PathBuf,
    pub(crate) operators: Vec<TakenOperator>,
    /// In-flight buffers of an unaligned checkpoint, per input channel.
    pub(crate) channel_state: Vec<(u32, Vec<Vec<u8>>)>,
    pub(crate) sync_duration: Duration,
    pub(crate) alignment: Duration,
    pub(crate) started: Instant,
    pub(crate) coordinator: Mailbox<CoordinatorMsg>,
}

/// Where tasks hand their snapshots; clones share the writer threads.
#[derive(Clone)]
pub(crate) struct SnapshotWriters {
    jobs: async_channel::Sender<SnapshotJob>,
}

/// The writer threads themselves, owned by the cluster, which waits for them
/// at shutdown so that no snapshot is still being written once it returns.
pub(crate) struct WriterThreads {
    jobs: async_channel::Sender<SnapshotJob>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SnapshotWriters {
    /// Starts `threads` writer threads.
    pub(crate) fn start(threads: usize) -> std::io::Result<(Self, WriterThreads)> {
        let (tx, rx) = async_channel::unbounded::<SnapshotJob>();
        let mut handles = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("rheon-snapshot-{i}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv_blocking() {
                            write_one(job);
                        }
                    })?,
            );
        }
        let writers = SnapshotWriters { jobs: tx.clone() };
        Ok((
            writers,
            WriterThreads {
                jobs: tx,
                threads: handles,
            },
        ))
    }

    pub(crate) fn submit(&self, job: SnapshotJob) {
        // Fails only once the cluster shut down; then nobody waits for it.
        let _ = self.jobs.try_send(job);
    }
}

impl WriterThreads {
    /// Takes no more snapshots, lets the threads finish the ones handed over
    /// and waits for them.
    pub(crate) fn finish(self) {
        self.jobs.close();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// File name of one keyed state of one subtask inside the checkpoint directory.
fn state_file_name(node: usize, state: &str, subtask: u32) -> String {
    format!("op{node}-{}-{subtask}.snap", file_safe(state))
}

/// File name, in the root's shared directory, of the base of slice
/// `base_of` (the delta for `None`) that checkpoint `id` wrote for one keyed
/// state of one subtask.
fn chain_file_name(
    id: u64,
    base_of: Option<usize>,
    node: usize,
    state: &str,
    subtask: u32,
) -> String {
    let kind = match base_of {
        Some(slice) => format!("base{slice}"),
        None => "delta".to_owned(),
    };
    shared_file_name(
        id,
        &format!("op{node}-{}-{subtask}.{kind}.snap", file_safe(state)),
    )
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn write_one(job: SnapshotJob) {
    let result = write_files(
        &job.directory,
        job.checkpoint_id,
        job.subtask.index,
        job.operators,
    );
    let message = match result {
        Ok((operators, bytes)) => CoordinatorMsg::AcknowledgeCheckpoint {
            job: job.job,
            attempt: job.attempt,
            checkpoint_id: job.checkpoint_id,
            subtask: job.subtask,
            state: SubtaskCheckpoint {
                operators,
                channel_state: job.channel_state,
                sync_duration: job.sync_duration,
                alignment: job.alignment,
                async_duration: job.started.elapsed(),
                bytes,
            },
        },
        Err(reason) => CoordinatorMsg::DeclineCheckpoint {
            job: job.job,
            attempt: job.attempt,
            checkpoint_id: job.checkpoint_id,
            subtask: job.subtask,
            reason,
        },
    };
    job.coordinator.send(message);
}

/// The root's shared directory (beside `chk-N`), created if needed, once.
fn shared_dir<'a>(
    shared: &'a mut Option<PathBuf>,
    checkpoint_dir: &Path,
) -> Result<&'a Path, String> {
    if shared.is_none() {
        let root = checkpoint_dir.parent().unwrap_or(Path::new("."));
        let dir = root.join(SHARED_DIR_NAME);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        *shared = Some(dir);
    }
    Ok(shared.as_deref().expect("set above"))
}

fn write_files(
    directory: &Path,
    checkpoint_id: u64,
    subtask: u32,
    operators: Vec<TakenOperator>,
) -> Result<(Vec<AckedOperator>, u64), String> {
    std::fs::create_dir_all(directory).map_err(|e| {
        format!(
            "cannot create checkpoint directory {}: {e}",
            directory.display()
        )
    })?;
    let mut acked = Vec::with_capacity(operators.len());
    let mut bytes = 0u64;
    // Every file of the subtask is staged, then all committed at once: their
    // fsyncs in parallel and one fsync per directory (a first checkpoint
    // writes a base per slice of every state: 64 files of 8 states).
    let mut staged = Vec::new();
    let mut shared = None;
    for operator in operators {
        let mut keyed = Vec::with_capacity(operator.parts.keyed.len());
        for state in operator.parts.keyed {
            let (node, name) = (operator.node, state.state_name.as_str());
            let in_shared = |id, base_of| chain_file_name(id, base_of, node, name, subtask);
            let files = match &state.chain {
                None => AckedKeyed::full(name, state_file_name(node, name, subtask)),
                Some(chain) => {
                    let reference = |file: String| format!("../{SHARED_DIR_NAME}/{file}");
                    AckedKeyed {
                        name: name.to_owned(),
                        files: (chain.bases.iter().enumerate())
                            .map(|(slice, &id)| reference(in_shared(id, Some(slice))))
                            .collect(),
                        deltas: (chain.deltas.iter())
                            .map(|&id| reference(in_shared(id, None)))
                            .collect(),
                    }
                }
            };
            for (file, write) in state.writes {
                let path = match file {
                    StateFile::Full => directory.join(state_file_name(node, name, subtask)),
                    StateFile::Base { slice } => shared_dir(&mut shared, directory)?
                        .join(in_shared(checkpoint_id, Some(slice))),
                    StateFile::Delta => {
                        shared_dir(&mut shared, directory)?.join(in_shared(checkpoint_id, None))
                    }
                };
                let file = write(&path)?;
                bytes += file.len();
                staged.push(file);
            }
            keyed.push(files);
        }
        bytes += operator
            .parts
            .operator_state
            .iter()
            .map(|e| e.len() as u64)
            .sum::<u64>();
        acked.push(AckedOperator {
            node: operator.node,
            name: operator.name,
            keyed,
            operator_state: operator.parts.operator_state,
        });
    }
    rheon_state::snapshot::commit(staged).map_err(|e| e.to_string())?;
    Ok((acked, bytes))
}
