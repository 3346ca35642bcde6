//! Nexmark sources: the deterministic generator as a parallel source, and a JSON-lines
//! file (one event per line, the format of [`super::json`]) as a source of parallelism 1.
//!
//! - [`generator_source`]: subtask `i` of `p` emits the events at the stream positions
//!   `q ≡ i (mod p)` of `0..config.num_events` (unbounded when `num_events` is 0), so the
//!   whole job sees exactly the stream one generator produces, at any parallelism.
//!   [`generator_source_with_rate`] caps the total rate (events/s over all subtasks).
//! - [`json_file_source`]: reads the file line by line, skipping blank lines. A line
//!   that does not parse fails the job with `input file 'PATH', line N: <message>`; a
//!   missing or unreadable file fails it with an error naming the file. Its position
//!   (byte offset and line number of the next line) is checkpointed, so a restore
//!   continues after the last line the checkpoint holds.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

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
    // The engine's parallel generator already hands subtask i of p the
    // positions congruent to i mod p, and paces them when rate limited.
    match Generator::new(config) {
        Ok(generator) => {
            let event = move |position: u64| generator.event_at(position);
            let stream = match rate {
                None => env.generate(end, event),
                Some(rate) => env.generate_with_rate(end, rate, event),
            };
            stream.name(GENERATOR_SOURCE_NAME)
        }
        Err(message) => env.add_source(GENERATOR_SOURCE_NAME, move || {
            InvalidConfig(message.clone())
        }),
    }
}

/// Fails the job when it starts: the generator configuration is invalid.
struct InvalidConfig(String);

impl SourceFunction<Event> for InvalidConfig {
    fn open(&mut self, _ctx: &OperatorContext) -> Result<(), String> {
        Err(format!(
            "invalid Nexmark generator configuration: {}",
            self.0
        ))
    }
    fn poll_next(&mut self) -> Result<SourcePoll<Event>, String> {
        Ok(SourcePoll::End)
    }
}

/// The events of a JSON-lines file, in file order (parallelism 1).
pub fn json_file_source(env: &StreamEnv, path: PathBuf) -> DataStream<Event> {
    let name = format!("{JSON_FILE_SOURCE_PREFIX} {}", path.display());
    env.add_source(&name, move || JsonFileSource {
        path: path.clone(),
        reader: None,
        line: String::new(),
        offset: 0,
        line_number: 0,
    })
    .set_parallelism(1)
}

struct JsonFileSource {
    path: PathBuf,
    reader: Option<BufReader<File>>,
    line: String,
    /// Byte offset of the next line.
    offset: u64,
    /// Number of the line last read, from 1.
    line_number: u64,
}

/// What the JSON file source checkpoints: the byte offset of the next line
/// and the number of the line read before it.
type JsonFilePosition = (u64, u64);

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

    /// Subtask 0's position; at the end of the file it is the file's length,
    /// so a restore reads nothing more.
    fn snapshot_state(&mut self) -> Result<Vec<Vec<u8>>, String> {
        if self.reader.is_none() && self.offset == 0 {
            return Ok(Vec::new()); // not the reading subtask
        }
        let position: JsonFilePosition = (self.offset, self.line_number);
        Ok(vec![crate::checkpoint::state::encode_element(&position)])
    }

    fn restore_state(&mut self, elements: Vec<Vec<u8>>) -> Result<(), String> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(());
        };
        let mut positions = elements.iter().map(|e| {
            crate::checkpoint::state::decode_element::<JsonFilePosition>(e, "JSON file position")
        });
        let Some(position) = positions.next() else {
            return Ok(());
        };
        if positions.next().is_some() {
            return Err(format!(
                "the checkpoint holds more than one position in input file '{}', expected one (the source reads with one subtask)",
                self.path.display()
            ));
        }
        let (offset, line_number) = position?;
        let len = reader
            .get_ref()
            .metadata()
            .map_err(|e| format!("cannot read input file '{}': {e}", self.path.display()))?
            .len();
        if offset > len {
            return Err(format!(
                "input file '{}' has {len} bytes, but the checkpoint continues at byte {offset}: the file is not the one the checkpoint read",
                self.path.display()
            ));
        }
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| format!("cannot read input file '{}': {e}", self.path.display()))?;
        self.offset = offset;
        self.line_number = line_number;
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
            self.offset += read as u64;
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
