//! The exactly-once file sink (Flink's `FileSink` with two-phase commit):
//! each subtask writes lines to a hidden in-progress part file; at a barrier
//! the file is closed, fsynced and becomes pending for that checkpoint; when
//! the checkpoint completes the pending files are renamed to their visible
//! names. A restore first commits the pending files recorded in the
//! checkpoint (they belong to a completed checkpoint), idempotently.
//!
//! Invariant: a record becomes visible only in a file whose checkpoint (or
//! the job's successful end) is complete; files of a failed attempt stay
//! hidden (`.part-*.inprogress`) and are never renamed.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rheon_net::codec::{Codec, DecodeError};

use crate::checkpoint::state::{
    decode_element, encode_element, CheckpointedOperator, OperatorParts, RestoredOperator,
};
use crate::error::{TaskError, TaskLocation, TaskResult};
use crate::runtime::collector::{guarded, Collector};

/// A closed part file waiting to be made visible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingFile {
    pub temp: PathBuf,
    pub target: PathBuf,
}

impl PendingFile {
    /// Renames the file to its visible name; a file already renamed (a
    /// commit replayed after recovery) is left alone.
    pub fn apply(&self) -> Result<(), String> {
        if self.target.exists() {
            return Ok(());
        }
        fs::rename(&self.temp, &self.target).map_err(|e| {
            format!(
                "cannot commit part file {} as {}: {e}",
                self.temp.display(),
                self.target.display()
            )
        })?;
        if let Some(dir) = self.target.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("cannot fsync directory {}: {e}", dir.display()))?;
        }
        Ok(())
    }
}

impl Codec for PendingFile {
    fn encoded_len(&self) -> usize {
        let (t, g) = paths(self);
        t.encoded_len() + g.encoded_len()
    }
    fn encode(&self, out: &mut [u8]) {
        let (t, g) = paths(self);
        t.encode(out);
        g.encode(&mut out[t.encoded_len()..]);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let temp = String::decode(input)?;
        let target = String::decode(input)?;
        Ok(PendingFile {
            temp: temp.into(),
            target: target.into(),
        })
    }
}

fn paths(p: &PendingFile) -> (String, String) {
    (
        p.temp.to_string_lossy().into_owned(),
        p.target.to_string_lossy().into_owned(),
    )
}

struct InProgress {
    writer: BufWriter<File>,
    file: PendingFile,
}

pub(crate) struct ExactlyOnceFileSink<F> {
    directory: PathBuf,
    format: F,
    subtask: u32,
    /// Distinguishes this subtask instance's files from any other attempt's.
    tag: String,
    checkpointing: bool,
    current: Option<InProgress>,
    parts: u64,
    /// Closed files and the checkpoint whose completion commits them.
    pending: Vec<(u64, PendingFile)>,
    /// Closed at the end of input: committed when the job ends well.
    final_files: Vec<PendingFile>,
    line: String,
    location: TaskLocation,
}

impl<F> ExactlyOnceFileSink<F> {
    pub(crate) fn new(
        directory: PathBuf,
        format: F,
        subtask: u32,
        checkpointing: bool,
        location: TaskLocation,
    ) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        ExactlyOnceFileSink {
            directory,
            format,
            subtask,
            tag: format!("{}-{nanos:x}", std::process::id()),
            checkpointing,
            current: None,
            parts: 0,
            pending: Vec::new(),
            final_files: Vec::new(),
            line: String::new(),
            location,
        }
    }

    fn error(&self, message: String) -> Box<TaskError> {
        Box::new(TaskError::Sink {
            location: self.location.clone(),
            message,
        })
    }

    fn open(&mut self) -> TaskResult<&mut InProgress> {
        if self.current.is_none() {
            let name = format!("part-{}-{}-{}", self.subtask, self.tag, self.parts);
            self.parts += 1;
            let temp = self.directory.join(format!(".{name}.inprogress"));
            let target = self.directory.join(name);
            let file = File::create(&temp)
                .map_err(|e| self.error(format!("cannot create {}: {e}", temp.display())))?;
            self.current = Some(InProgress {
                writer: BufWriter::with_capacity(1 << 16, file),
                file: PendingFile { temp, target },
            });
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    /// Closes the in-progress file (flush and fsync), returning it.
    fn close(&mut self) -> TaskResult<Option<PendingFile>> {
        let Some(current) = self.current.take() else {
            return Ok(None);
        };
        let path = current.file.temp.clone();
        let file = current
            .writer
            .into_inner()
            .map_err(|e| self.error(format!("cannot write {}: {}", path.display(), e.error())))?;
        file.sync_all()
            .map_err(|e| self.error(format!("cannot fsync {}: {e}", path.display())))?;
        Ok(Some(current.file))
    }
}

impl<T, F: FnMut(&T, &mut String)> Collector<T> for ExactlyOnceFileSink<F> {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        self.line.clear();
        let (format, line) = (&mut self.format, &mut self.line);
        guarded(&self.location, || format(&record, line))?;
        self.line.push('\n');
        let line = std::mem::take(&mut self.line);
        let result = self.open()?.writer.write_all(line.as_bytes());
        self.line = line;
        result.map_err(|e| self.error(format!("cannot write a part file: {e}")))
    }

    fn finish(&mut self) -> TaskResult {
        let closed = self.close()?;
        if self.checkpointing {
            // Visible when the whole job ends well (a failure elsewhere
            // restarts from the last checkpoint, and these must not show).
            self.final_files.extend(closed);
        } else {
            for file in closed.into_iter() {
                file.apply().map_err(|m| self.error(m))?;
            }
        }
        Ok(())
    }
}

impl<F> CheckpointedOperator for ExactlyOnceFileSink<F> {
    fn snapshot_state(&mut self, checkpoint_id: u64, parts: &mut OperatorParts) -> TaskResult {
        if let Some(file) = self.close()? {
            self.pending.push((checkpoint_id, file));
        }
        parts.operator_state = self
            .pending
            .iter()
            .map(|(_, file)| encode_element(file))
            .collect();
        Ok(())
    }

    fn restore_state(&mut self, restored: &RestoredOperator<'_>) -> TaskResult {
        for element in restored.operator_state() {
            let file: PendingFile =
                decode_element(element, "pending part file").map_err(|m| self.error(m))?;
            file.apply().map_err(|m| self.error(m))?;
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        let mut kept = Vec::new();
        for (id, file) in std::mem::take(&mut self.pending) {
            if id <= checkpoint_id {
                file.apply().map_err(|m| self.error(m))?;
            } else {
                kept.push((id, file));
            }
        }
        self.pending = kept;
        Ok(())
    }

    fn final_commits(&mut self) -> Vec<PendingFile> {
        self.pending
            .drain(..)
            .map(|(_, f)| f)
            .chain(self.final_files.drain(..))
            .collect()
    }
}

/// Creates the sink's directory (the job fails at start if it cannot).
pub(crate) fn prepare_directory(directory: &Path) -> Result<(), String> {
    fs::create_dir_all(directory).map_err(|e| {
        format!(
            "cannot create output directory {}: {e}",
            directory.display()
        )
    })
}
