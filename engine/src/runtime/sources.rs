//! Sources: the driver that pulls records from a `SourceFunction` into the
//! head of a chain, and the built-in sources (collection, parallel generator,
//! text file split across readers).
//!
//! Invariant: a driver stops pulling as soon as the task's `blocked` flag rises
//! (writers out of segments), so a source never outruns its consumers by more
//! than one record's output.

use std::any::Any;
use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::functions::{OperatorContext, SourceFunction, SourcePoll};
use crate::error::{TaskError, TaskLocation, TaskResult};
use crate::graph::stream_graph::{downcast_collector, Data};
use crate::runtime::collector::{guarded, guarded_chain, BoxCollector};

/// What one `step` of a source ended with.
pub(crate) enum SourceStep {
    /// Pulled the number of records asked for; more may follow.
    More,
    /// The writers are out of segments: await them, then step again.
    Blocked,
    /// Nothing to emit before this instant.
    Wait(Instant),
    End,
}

pub(crate) trait SourceDriver {
    fn open(&mut self, ctx: &OperatorContext) -> TaskResult;
    fn step(&mut self, max_records: usize, blocked: &Cell<bool>) -> TaskResult<SourceStep>;
    fn finish(&mut self) -> TaskResult;
    fn records_out(&self) -> u64;
    fn snapshot_state(&mut self) -> Result<Vec<Vec<u8>>, String>;
    fn restore_state(&mut self, elements: Vec<Vec<u8>>) -> TaskResult;
}

pub(crate) struct TypedSource<S, T> {
    pub(crate) source: S,
    pub(crate) head: BoxCollector<T>,
    pub(crate) location: TaskLocation,
    pub(crate) records_out: u64,
}

pub(crate) fn source_driver<T: Data, S: SourceFunction<T>>(
    source: S,
    head: Box<dyn Any>,
    location: TaskLocation,
) -> Box<dyn SourceDriver> {
    Box::new(TypedSource {
        source,
        head: downcast_collector::<T>(head),
        location,
        records_out: 0,
    })
}

impl<T: Data, S: SourceFunction<T>> TypedSource<S, T> {
    fn error(&self, message: String) -> Box<TaskError> {
        Box::new(TaskError::Source {
            location: self.location.clone(),
            message,
        })
    }
}

impl<T: Data, S: SourceFunction<T>> SourceDriver for TypedSource<S, T> {
    fn open(&mut self, ctx: &OperatorContext) -> TaskResult {
        let source = &mut self.source;
        guarded(&self.location, || source.open(ctx))?.map_err(|m| self.error(m))
    }

    fn step(&mut self, max_records: usize, blocked: &Cell<bool>) -> TaskResult<SourceStep> {
        let (source, head) = (&mut self.source, &mut self.head);
        let records_out = &mut self.records_out;
        // One guard for the batch: `poll_next` is user code, `collect` is not.
        let polled = guarded_chain(&self.location, |chain| {
            for _ in 0..max_records {
                match source.poll_next() {
                    Ok(SourcePoll::Record(record)) => {
                        *records_out += 1;
                        chain.collect(head, record)?;
                        if blocked.get() {
                            return Ok(Ok(SourceStep::Blocked));
                        }
                    }
                    Ok(SourcePoll::Wait(until)) => return Ok(Ok(SourceStep::Wait(until))),
                    Ok(SourcePoll::End) => return Ok(Ok(SourceStep::End)),
                    Err(message) => return Ok(Err(message)),
                }
            }
            Ok(Ok(SourceStep::More))
        })?;
        polled.map_err(|message| self.error(message))
    }

    fn finish(&mut self) -> TaskResult {
        self.head.finish()
    }

    fn records_out(&self) -> u64 {
        self.records_out
    }

    fn snapshot_state(&mut self) -> Result<Vec<Vec<u8>>, String> {
        let source = &mut self.source;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source.snapshot_state())) {
            Ok(result) => result,
            Err(payload) => Err(crate::error::panic_message(payload.as_ref())),
        }
    }

    fn restore_state(&mut self, elements: Vec<Vec<u8>>) -> TaskResult {
        let source = &mut self.source;
        guarded(&self.location, || source.restore_state(elements))?
            .map_err(|m| TaskError::checkpoint(&self.location, m))
    }
}

/// An arithmetic progression of record numbers `next, next + step, ...`
/// below the source's count: the split of a generated or collection source.
/// Subtask i of n starts with the split (i, n); a checkpoint records each
/// split's next number, and a restore at another parallelism hands whole
/// splits to the new subtasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Progression {
    pub(crate) next: u64,
    pub(crate) step: u64,
}

fn encode_progressions(splits: &[Progression]) -> Vec<Vec<u8>> {
    splits
        .iter()
        .map(|p| crate::checkpoint::state::encode_element(&(p.next, p.step)))
        .collect()
}

fn decode_progressions(elements: Vec<Vec<u8>>) -> Result<Vec<Progression>, String> {
    elements
        .into_iter()
        .map(|e| {
            let (next, step): (u64, u64) =
                crate::checkpoint::state::decode_element(&e, "source split")?;
            if step == 0 {
                return Err("the checkpointed source split has step 0".into());
            }
            Ok(Progression { next, step })
        })
        .collect()
}

/// Splits every checkpointed generator subtask starts with: enough that
/// a restore at parallelism 1, 2, 3, 4 or 6 gives every subtask some. Subtask
/// i of p takes the progressions i + j*p (j < ceil(12/p)), each stepping by
/// p*ceil(12/p); merged by lowest next number they emit exactly i, i+p, ...
/// Without checkpoints one split (i, p) does the same, cheaper.
fn generator_splits(ctx: &OperatorContext) -> Vec<Progression> {
    let (i, p) = (ctx.subtask as u64, ctx.parallelism.max(1) as u64);
    let per = if ctx.checkpointing {
        12u64.div_ceil(p)
    } else {
        1
    };
    (0..per)
        .map(|j| Progression {
            next: i + j * p,
            step: p * per,
        })
        .collect()
}

/// The split holding the lowest next number below `count` (so a subtask
/// with several splits emits in record-number order, as event time expects).
#[inline]
fn lowest(splits: &[Progression], count: u64) -> Option<usize> {
    if splits.len() == 1 {
        return (splits[0].next < count).then_some(0);
    }
    splits
        .iter()
        .enumerate()
        .filter(|(_, p)| p.next < count)
        .min_by_key(|(_, p)| p.next)
        .map(|(i, _)| i)
}

/// Elements of a collection; subtask i of n emits elements i, i+n, i+2n, ...
pub(crate) struct CollectionSource<T> {
    pub(crate) items: Arc<Vec<T>>,
    pub(crate) splits: Vec<Progression>,
}

impl<T: Clone + 'static> SourceFunction<T> for CollectionSource<T> {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), String> {
        self.splits = vec![Progression {
            next: ctx.subtask as u64,
            step: ctx.parallelism as u64,
        }];
        Ok(())
    }
    #[inline]
    fn poll_next(&mut self) -> Result<SourcePoll<T>, String> {
        match lowest(&self.splits, self.items.len() as u64) {
            Some(i) => {
                let split = &mut self.splits[i];
                let item = self.items[split.next as usize].clone();
                split.next += split.step;
                Ok(SourcePoll::Record(item))
            }
            None => Ok(SourcePoll::End),
        }
    }
    fn snapshot_state(&mut self) -> Result<Vec<Vec<u8>>, String> {
        Ok(encode_progressions(&self.splits))
    }
    fn restore_state(&mut self, elements: Vec<Vec<u8>>) -> Result<(), String> {
        self.splits = decode_progressions(elements)?;
        Ok(())
    }
}

/// How early a rate-limited generator may emit a record (it then emits in
/// bursts of this much of its schedule).
const RATE_SLACK: Duration = Duration::from_micros(100);

/// The start of a rate-limited generator's schedule, shared by its subtasks
/// so they keep one timeline (a subtask that opens late catches up instead of
/// lagging for the whole run, which would hold the job's watermark back).
/// Each round of `parallelism` opens (one `execute`) takes a fresh start.
#[derive(Clone, Default)]
pub(crate) struct SharedStart(Arc<std::sync::Mutex<(u64, Option<Instant>)>>);

impl SharedStart {
    fn take(&self, parallelism: u32) -> Instant {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot.0 % parallelism.max(1) as u64 == 0 || slot.1.is_none() {
            slot.1 = Some(Instant::now());
        }
        slot.0 += 1;
        slot.1.expect("set above")
    }
}

/// A deterministic parallel generator: record number k (0 <= k < count) is
/// `f(k)`, and subtask i of n produces the numbers congruent to i mod n, at an
/// optional total rate.
pub(crate) struct GeneratorSource<F> {
    pub(crate) f: F,
    pub(crate) count: u64,
    pub(crate) splits: Vec<Progression>,
    /// Total records per second over all subtasks, if limited.
    pub(crate) rate_per_second: Option<f64>,
    pub(crate) interval: Duration,
    pub(crate) start: Option<Instant>,
    pub(crate) shared_start: SharedStart,
    pub(crate) emitted: u64,
}

impl<T, F: FnMut(u64) -> T + 'static> SourceFunction<T> for GeneratorSource<F> {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), String> {
        self.splits = generator_splits(ctx);
        if let Some(rate) = self.rate_per_second {
            if rate <= 0.0 || !rate.is_finite() {
                return Err(format!(
                    "generator rate must be a positive number of records per second, got {rate}"
                ));
            }
            self.interval = Duration::from_secs_f64(ctx.parallelism as f64 / rate);
            self.start = Some(self.shared_start.take(ctx.parallelism));
        }
        Ok(())
    }
    #[inline]
    fn poll_next(&mut self) -> Result<SourcePoll<T>, String> {
        let Some(split) = lowest(&self.splits, self.count) else {
            return Ok(SourcePoll::End);
        };
        if self.rate_per_second.is_some() {
            let start = *self.start.get_or_insert_with(Instant::now);
            let due = start + self.interval.mul_f64(self.emitted as f64);
            // Records due within `RATE_SLACK` go now: sleeping a few us per
            // record costs a pass through the reactor each, which at high
            // rates kept the source from its schedule.
            if Instant::now() + RATE_SLACK < due {
                return Ok(SourcePoll::Wait(due));
            }
        }
        let split = &mut self.splits[split];
        let record = (self.f)(split.next);
        split.next += split.step;
        self.emitted += 1;
        Ok(SourcePoll::Record(record))
    }
    fn snapshot_state(&mut self) -> Result<Vec<Vec<u8>>, String> {
        Ok(encode_progressions(&self.splits))
    }
    fn restore_state(&mut self, elements: Vec<Vec<u8>>) -> Result<(), String> {
        self.splits = decode_progressions(elements)?;
        Ok(())
    }
}

/// Lines of a UTF-8 text file. The file is cut into one byte range per
/// subtask; a line belongs to the range holding its first byte (a reader whose
/// range starts mid-line skips to the next line). Line terminators (`\n`,
/// `\r\n`) are removed.
pub(crate) struct TextFileSource {
    pub(crate) path: PathBuf,
    pub(crate) reader: Option<BufReader<File>>,
    /// Offset of the next line to read.
    pub(crate) position: u64,
    /// Lines starting at or after this offset belong to the next reader.
    pub(crate) end: u64,
    pub(crate) line: Vec<u8>,
    /// Byte ranges (next line's offset, end) still to read after this one
    /// (after a restore that handed this subtask several).
    pub(crate) rest: std::collections::VecDeque<(u64, u64)>,
}

const TEXT_READ_BUFFER_BYTES: usize = 1 << 20;

impl TextFileSource {
    pub(crate) fn new(path: PathBuf) -> Self {
        TextFileSource {
            path,
            reader: None,
            position: 0,
            end: 0,
            line: Vec::new(),
            rest: std::collections::VecDeque::new(),
        }
    }

    /// Moves to the next range once the current one is read; false at the end.
    fn next_range(&mut self) -> Result<bool, String> {
        while self.position >= self.end {
            let Some((position, end)) = self.rest.pop_front() else {
                return Ok(false);
            };
            self.position = position;
            self.end = end;
            let reader = self.reader.as_mut().expect("opened");
            reader
                .seek(SeekFrom::Start(position))
                .map_err(|e| format!("cannot read '{}': {e}", self.path.display()))?;
        }
        Ok(true)
    }

    /// The 1-based number of the line starting at `offset`, counted only when
    /// reporting an error so reading stays a single pass.
    fn line_number_at(&self, offset: u64) -> Result<u64, String> {
        let mut file = File::open(&self.path).map_err(|e| self.io_error(e))?;
        let mut remaining = offset;
        let mut newlines = 0u64;
        let mut chunk = vec![0u8; 1 << 16];
        while remaining > 0 {
            let want = remaining.min(chunk.len() as u64) as usize;
            let n = file
                .read(&mut chunk[..want])
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                break;
            }
            newlines += chunk[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            remaining -= n as u64;
        }
        Ok(newlines + 1)
    }

    fn io_error(&self, e: std::io::Error) -> String {
        format!("cannot read input file '{}': {e}", self.path.display())
    }
}

impl SourceFunction<String> for TextFileSource {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), String> {
        let file = File::open(&self.path).map_err(|e| self.io_error(e))?;
        let metadata = file.metadata().map_err(|e| self.io_error(e))?;
        let len = metadata.len();
        if metadata.is_dir() {
            return Err(format!(
                "input '{}' is a directory, expected a text file",
                self.path.display()
            ));
        }
        let (i, n) = (ctx.subtask as u64, ctx.parallelism as u64);
        let start = len * i / n;
        self.end = len * (i + 1) / n;
        let mut reader = BufReader::with_capacity(TEXT_READ_BUFFER_BYTES, file);
        self.position = start;
        if start > 0 {
            // Skip the tail of the line that began in the previous range.
            reader
                .seek(SeekFrom::Start(start - 1))
                .map_err(|e| self.io_error(e))?;
            let mut skipped = Vec::new();
            let n = reader
                .read_until(b'\n', &mut skipped)
                .map_err(|e| self.io_error(e))?;
            self.position = start - 1 + n as u64;
        }
        self.reader = Some(reader);
        Ok(())
    }

    fn snapshot_state(&mut self) -> Result<Vec<Vec<u8>>, String> {
        let current = (self.position < self.end).then_some((self.position, self.end));
        Ok(current
            .into_iter()
            .chain(self.rest.iter().copied())
            .map(|range| crate::checkpoint::state::encode_element(&range))
            .collect())
    }

    fn restore_state(&mut self, elements: Vec<Vec<u8>>) -> Result<(), String> {
        self.rest = elements
            .into_iter()
            .map(|e| crate::checkpoint::state::decode_element::<(u64, u64)>(&e, "file range"))
            .collect::<Result<_, _>>()?;
        self.position = 0;
        self.end = 0;
        self.next_range()?;
        Ok(())
    }

    fn poll_next(&mut self) -> Result<SourcePoll<String>, String> {
        if self.position >= self.end && !self.next_range()? {
            return Ok(SourcePoll::End);
        }
        let reader = self.reader.as_mut().expect("opened");
        self.line.clear();
        let n = reader
            .read_until(b'\n', &mut self.line)
            .map_err(|e| format!("cannot read '{}': {e}", self.path.display()))?;
        if n == 0 {
            self.position = self.end;
            return self.poll_next();
        }
        let line_start = self.position;
        self.position += n as u64;
        let mut bytes = std::mem::take(&mut self.line);
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        match String::from_utf8(bytes) {
            Ok(line) => Ok(SourcePoll::Record(line)),
            Err(e) => {
                let line_number = self.line_number_at(line_start)?;
                Err(format!(
                    "input file '{}', line {line_number}: invalid UTF-8 at byte {} of the line (expected UTF-8 text)",
                    self.path.display(),
                    e.utf8_error().valid_up_to() + 1
                ))
            }
        }
    }
}
