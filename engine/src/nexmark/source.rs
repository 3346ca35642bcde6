//! Nexmark sources: the deterministic generator as a parallel source, and a JSON-lines
//! file (one event per line, the format of [`super::json`]) as a source of parallelism 1.
//!
//! - [`generator_source`]: subtask `i` of `p` emits the events at the stream positions
//!   `q ≡ i (mod p)` of `0..config.num_events` (unbounded when `num_events` is 0), so the
//!   whole job sees exactly the stream one generator produces, at any parallelism.
//!   [`generator_source_with_rate`] caps the total rate (events/s over all subtasks).
//! - [`json_file_source`]: reads the file line by line, skipping blank lines. A line
//!   that does not parse fails the job with `input file 'PATH', line N: <message>`; a
//!   missing or unreadable file fails it with an error naming the file.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::api::env::StreamEnv;
use crate::api::functions::{OperatorContext, SourceFunction, SourcePoll};
use crate::api::stream::DataStream;

use super::generator::{Generator, GeneratorConfig};
use super::json::parse_json_line;
use super::model::Event;

/// The name of the generator source operator (and the head of its vertex's name).
pub const GENERATOR_SOURCE_NAME: &str = "Nexmark generator";
/// The prefix of the JSON file source's operator name (followed by the path).
pub const JSON_FILE_SOURCE_PREFIX: &str = "Nexmark JSON file";

/// The generated Nexmark stream, unlimited in rate, with the environment's default
/// parallelism.
pub fn generator_source(env: &StreamEnv, config: GeneratorConfig) -> DataStream<Event> {
    generator_source_inner(env, config, None)
}

/// Like [`generator_source`], at most `events_per_second` in total over all subtasks.
/// A rate that is not a positive finite number fails the job when it starts.
pub fn generator_source_with_rate(
    env: &StreamEnv,
    config: GeneratorConfig,
    events_per_second: f64,
) -> DataStream<Event> {
    generator_source_inner(env, config, Some(events_per_second))
}

fn generator_source_inner(
    env: &StreamEnv,
    config: GeneratorConfig,
    rate: Option<f64>,
) -> DataStream<Event> {
    let end = if config.num_events == 0 {
        u64::MAX
    } else {
        config.num_events
    };
    // Built once (the channel table is shared); an invalid config fails in `open`.
    let generator = Generator::new(config);
    env.add_source(GENERATOR_SOURCE_NAME, move || NexmarkGeneratorSource {
        generator: generator.clone(),
        next: 0,
        step: 1,
        end,
        rate_per_second: rate,
        interval: Duration::ZERO,
        start: None,
        emitted: 0,
    })
}

struct NexmarkGeneratorSource {
    generator: Result<Generator, String>,
    /// The next stream position this subtask emits.
    next: u64,
    step: u64,
    /// One past the last stream position.
    end: u64,
    rate_per_second: Option<f64>,
    /// Time between two events of this subtask when rate limited.
    interval: Duration,
    start: Option<Instant>,
    emitted: u64,
}

impl SourceFunction<Event> for NexmarkGeneratorSource {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), String> {
        if let Err(e) = &self.generator {
            return Err(e.clone());
        }
        self.next = ctx.subtask as u64;
        self.step = ctx.parallelism.max(1) as u64;
        if let Some(rate) = self.rate_per_second {
            if rate <= 0.0 || !rate.is_finite() {
                return Err(format!(
                    "Nexmark generator rate must be a positive number of events per second, got {rate}"
                ));
            }
            self.interval = Duration::from_secs_f64(self.step as f64 / rate);
        }
        Ok(())
    }

    #[inline]
    fn poll_next(&mut self) -> Result<SourcePoll<Event>, String> {
        if self.next >= self.end {
            return Ok(SourcePoll::End);
        }
        if self.rate_per_second.is_some() {
            let start = *self.start.get_or_insert_with(Instant::now);
            let due = start + self.interval.mul_f64(self.emitted as f64);
            if Instant::now() < due {
                return Ok(SourcePoll::Wait(due));
            }
        }
        let generator = match &self.generator {
            Ok(g) => g,
            Err(e) => return Err(e.clone()),
        };
        let event = generator.event_at(self.next);
        self.next = self.next.saturating_add(self.step);
        self.emitted += 1;
        Ok(SourcePoll::Record(event))
    }
}

/// The events of a JSON-lines file, in file order (parallelism 1).
pub fn json_file_source(env: &StreamEnv, path: PathBuf) -> DataStream<Event> {
    let name = format!("{JSON_FILE_SOURCE_PREFIX} {}", path.display());
    env.add_source(&name, move || JsonFileSource {
        path: path.clone(),
        reader: None,
        line: String::new(),
        line_number: 0,
    })
    .set_parallelism(1)
}

struct JsonFileSource {
    path: PathBuf,
    reader: Option<BufReader<File>>,
    line: String,
    /// Number of the line last read, from 1.
    line_number: u64,
}

impl SourceFunction<Event> for JsonFileSource {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), String> {
        // Parallelism is 1; should a caller raise it, only subtask 0 reads.
        if ctx.subtask != 0 {
            return Ok(());
        }
        let file = File::open(&self.path)
            .map_err(|e| format!("cannot open input file '{}': {e}", self.path.display()))?;
        self.reader = Some(BufReader::with_capacity(1 << 20, file));
        Ok(())
    }

    fn poll_next(&mut self) -> Result<SourcePoll<Event>, String> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(SourcePoll::End);
        };
        loop {
            self.line.clear();
            self.line_number += 1;
            let read = reader.read_line(&mut self.line).map_err(|e| {
                format!(
                    "input file '{}', line {}: {e}",
                    self.path.display(),
                    self.line_number
                )
            })?;
            if read == 0 {
                self.reader = None;
                return Ok(SourcePoll::End);
            }
            if self.line.trim().is_empty() {
                continue;
            }
            return match parse_json_line(&self.line) {
                Ok(event) => Ok(SourcePoll::Record(event)),
                Err(message) => Err(format!(
                    "input file '{}', line {}: {message}",
                    self.path.display(),
                    self.line_number
                )),
            };
        }
    }
}
