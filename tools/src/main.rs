//! The `rheon` command: runs built-in jobs on the embedded engine (one pinned
//! executor per core) and prints what they measured.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rheon::jobs::{throughput, wordcount};
use rheon::nexmark::{self, GeneratorConfig, Query};
use rheon::{CheckpointConfig, CheckpointingMode, EngineConfig, RestartStrategy, StreamEnv};

/// Keyed-state tables on transparent huge pages (`RHEON_HUGE_PAGES=0` turns
/// this off): see `rheon::alloc`.
#[global_allocator]
static ALLOC: rheon::alloc::HugePageAlloc = rheon::alloc::HugePageAlloc;

#[derive(Parser)]
#[command(
    name = "rheon",
    version,
    about = "Rheon: a thread-per-core dataflow engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct EngineArgs {
    /// Executors (pinned threads); default: one per core.
    #[arg(long)]
    cores: Option<usize>,
    /// Parallelism of every operator; default: the number of executors.
    #[arg(long)]
    parallelism: Option<u32>,
    /// Buffer timeout in microseconds (a partly filled buffer leaves after this).
    #[arg(long, default_value_t = 1000)]
    buffer_timeout_us: u64,
}

impl EngineArgs {
    fn config(&self) -> EngineConfig {
        let mut config = EngineConfig::default();
        if let Some(cores) = self.cores {
            config = config.with_executors(cores);
        }
        if let Some(p) = self.parallelism {
            config = config.with_parallelism(p);
        }
        config.with_buffer_timeout(Duration::from_micros(self.buffer_timeout_us))
    }
}

/// Checkpointing and recovery options (`windows`, `nexmark`).
#[derive(clap::Args, Clone)]
struct CheckpointArgs {
    /// Where checkpoints go (`chk-N` directories); enables checkpoints.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Milliseconds between checkpoints.
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Checkpoint mode: exactly-once (aligned), at-least-once, unaligned.
    #[arg(long, default_value = "exactly-once")]
    checkpoint_mode: String,
    /// Restore from this checkpoint, or the newest valid one under this root.
    #[arg(long)]
    restore: Option<PathBuf>,
    /// none, fixed:ATTEMPTS:DELAY_MS, exponential:INITIAL_MS:MAX_MS,
    /// failure-rate:MAX:INTERVAL_MS:DELAY_MS (default with checkpoints:
    /// fixed delay, 1 s, unlimited).
    #[arg(long)]
    restart: Option<String>,
    /// Completed checkpoints kept.
    #[arg(long, default_value_t = 2)]
    retained: usize,
    /// Incremental checkpoints: keyed sums, reduces and window aggregates
    /// write only their changes since the last completed checkpoint (into
    /// CHECKPOINT_DIR/shared); other keyed state stays full.
    #[arg(long)]
    incremental: bool,
    /// With --incremental: a restore replays at most `1 +` this many times
    /// the state's entries; past that, slices of the key groups get new full
    /// snapshots.
    #[arg(long, default_value_t = CheckpointConfig::default().materialize_ratio)]
    materialize_ratio: f64,
}

impl CheckpointArgs {
    /// Adds the checkpoint options to `config`.
    fn apply(&self, config: &mut EngineConfig) -> Result<()> {
        if let Some(dir) = &self.checkpoint_dir {
            let interval = Duration::from_millis(self.checkpoint_interval_ms.max(1));
            let mut c = CheckpointConfig::every(interval, dir);
            match self.checkpoint_mode.as_str() {
                "exactly-once" => {}
                "at-least-once" => c.mode = CheckpointingMode::AtLeastOnce,
                "unaligned" => c.unaligned = true,
                other => bail!(
                    "--checkpoint-mode '{other}' is not one of exactly-once, at-least-once, unaligned"
                ),
            }
            if let Some(text) = &self.restart {
                c.restart = RestartStrategy::parse(text).map_err(anyhow::Error::msg)?;
            }
            c.retained = self.retained.max(1);
            if !(self.materialize_ratio > 0.0 && self.materialize_ratio.is_finite()) {
                bail!(
                    "--materialize-ratio {} is not a positive number",
                    self.materialize_ratio
                );
            }
            c.incremental = self.incremental;
            c.materialize_ratio = self.materialize_ratio;
            config.checkpoint = c;
        } else if self.restart.is_some() {
            bail!("--restart needs --checkpoint-dir");
        } else if self.incremental {
            bail!("--incremental needs --checkpoint-dir");
        }
        config.checkpoint.restore_from = self.restore.clone();
        Ok(())
    }

    fn enabled(&self) -> bool {
        self.checkpoint_dir.is_some()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Counts words in a UTF-8 text file; prints the top words, or writes all
    /// counts to --output.
    Wordcount {
        file: PathBuf,
        /// First write a generated text of this size to FILE if FILE does not
        /// exist (K, M, G suffixes), so the command runs on a fresh machine.
        #[arg(long)]
        generate: Option<String>,
        /// How many of the most frequent words to print.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Write every "word count" line here instead (a directory of part
        /// files when parallelism > 1).
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Generator -> exchange -> discarding sink; prints records/s and bytes/s.
    Throughput {
        /// Records to generate.
        #[arg(long, default_value_t = 50_000_000)]
        records: u64,
        /// Serialized record size: 16, 100 or 1024 bytes.
        #[arg(long, default_value_t = 16)]
        record_bytes: usize,
        /// keyed, rebalance or chained.
        #[arg(long, default_value = "keyed")]
        exchange: String,
        /// Distinct keys.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Runs a Nexmark query (q0-q9, q11-q22) on the generated stream or a
    /// JSON-lines file and prints events/s; `nexmark generate --output FILE` instead
    /// writes the generated events as JSON lines.
    Nexmark {
        /// The query (q0-q9, q11-q22), or `generate`.
        query: String,
        /// Events to generate.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Total generator rate limit in events per second; default unlimited.
        #[arg(long)]
        rate: Option<f64>,
        /// Read the events from this JSON-lines file instead of the generator.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Write the result rows here (a directory of part files when the sink's
        /// parallelism is > 1; with --checkpoint-dir always a directory, written
        /// exactly once); default: discard them. For `generate`: the file to write.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Generator seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// q13's side input, `key,value` lines; default: a file in the temporary
        /// directory, created if missing.
        #[arg(long)]
        side_input: Option<PathBuf>,
        #[command(flatten)]
        checkpoints: CheckpointArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Sums generated events per key in 500 ms event-time windows and writes
    /// `key window-start sum` lines exactly once into part files in --output;
    /// with --checkpoint-dir it checkpoints, recovers from failures, and
    /// (--restore) continues after the whole process died, at any parallelism.
    Windows {
        /// Events to generate.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Total events per second; default unlimited.
        #[arg(long)]
        rate: Option<f64>,
        /// Directory of the committed part files.
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        checkpoints: CheckpointArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Checkpoint tools: `rheon checkpoint inspect DIR`.
    Checkpoint {
        /// `inspect`.
        action: String,
        /// A checkpoint directory (`chk-N`, `savepoint-N`) or a root holding them.
        dir: PathBuf,
    },
    /// Writes a deterministic text file of about SIZE bytes (accepts K, M, G
    /// suffixes) for word count.
    GenerateText {
        output: PathBuf,
        #[arg(long, default_value = "64M")]
        size: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().with_context(|| {
        format!("size '{text}': expected a number with an optional K, M or G suffix")
    })?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        other => bail!("size '{text}': unknown unit '{other}', expected K, M or G"),
    };
    Ok(n * scale)
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Windows {
            records,
            rate,
            output,
            checkpoints,
            engine,
        } => run_windows(records, rate, &output, &checkpoints, &engine)?,
        Command::Checkpoint { action, dir } => {
            if action != "inspect" {
                bail!("unknown checkpoint action '{action}': expected 'inspect'");
            }
            let report = rheon_state::checkpoint::inspect_checkpoint(&dir)
                .with_context(|| format!("cannot inspect {}", dir.display()))?;
            // A closed pipe (`| head`) ends the listing quietly.
            use std::io::Write as _;
            if let Err(e) = write!(std::io::stdout().lock(), "{report}") {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e).context("cannot write the report to stdout");
                }
                return Ok(());
            }
            if !report.is_ok() {
                bail!("checkpoint {} is damaged (see above)", dir.display());
            }
        }
        Command::Wordcount {
            file,
            generate,
            top,
            output,
            engine,
        } => {
            if let Some(size) = generate {
                if !file.exists() {
                    let bytes = parse_size(&size)?;
                    eprintln!("generating {} ({bytes} bytes) ...", file.display());
                    wordcount::generate_text(&file, bytes, 42)
                        .with_context(|| format!("cannot write '{}'", file.display()))?;
                }
            }
            let config = engine.config();
            let executors = config.executors;
            let result = wordcount::run(wordcount::WordCountOptions {
                input: file.clone(),
                output: output.clone(),
                config,
            })?;
            let secs = result.outcome.elapsed.as_secs_f64();
            if output.is_none() {
                for (word, count) in wordcount::top(&result.counts, top) {
                    println!("{count:>12} {word}");
                }
                println!("distinct words: {}", result.counts.len());
            } else if let Some(path) = &output {
                println!("counts written to {}", path.display());
            }
            let mb = result.input_bytes as f64 / 1e6;
            eprintln!(
                "word count of {}: {:.1} MB in {:.3} s = {:.1} MB/s ({:.1} MB/s per core, {} executors)",
                file.display(),
                mb,
                secs,
                mb / secs,
                mb / secs / executors as f64,
                executors
            );
        }
        Command::Throughput {
            records,
            record_bytes,
            exchange,
            keys,
            engine,
        } => {
            let exchange = match exchange.as_str() {
                "keyed" => throughput::Exchange::Keyed,
                "rebalance" => throughput::Exchange::Rebalance,
                "chained" => throughput::Exchange::Chained,
                other => bail!("--exchange '{other}': expected keyed, rebalance or chained"),
            };
            let config = engine.config();
            let executors = config.executors;
            let result = throughput::run(&throughput::ThroughputOptions {
                records,
                record_bytes,
                exchange,
                keys,
                config,
            })?;
            let secs = result.outcome.elapsed.as_secs_f64();
            println!(
                "{} records of {} B in {:.3} s: {:.2} M records/s ({:.2} M/s per core), {:.3} GB/s, {} executors",
                result.records,
                record_bytes,
                secs,
                result.records as f64 / secs / 1e6,
                result.records as f64 / secs / 1e6 / executors as f64,
                result.bytes as f64 / secs / 1e9,
                executors
            );
        }
        Command::Nexmark {
            query,
            events,
            rate,
            input,
            output,
            seed,
            side_input,
            checkpoints,
            engine,
        } => run_nexmark(
            &query,
            events,
            rate,
            NexmarkFiles {
                input,
                output,
                side_input,
            },
            seed,
            &checkpoints,
            &engine,
        )?,
        Command::GenerateText { output, size, seed } => {
            let bytes = parse_size(&size)?;
            wordcount::generate_text(&output, bytes, seed)
                .with_context(|| format!("cannot write '{}'", output.display()))?;
            println!(
                "wrote {} ({} bytes)",
                output.display(),
                std::fs::metadata(&output)?.len()
            );
        }
    }
    Ok(())
}

fn nexmark_config(events: u64, seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        num_events: events,
        seed,
        ..GeneratorConfig::default()
    }
}

/// Writes `events` generated events as JSON lines, single-threaded.
fn nexmark_generate(events: u64, seed: u64, output: &PathBuf) -> Result<()> {
    use std::io::Write;
    let generator =
        nexmark::Generator::new(nexmark_config(events, seed)).map_err(|e| anyhow::anyhow!(e))?;
    let file = std::fs::File::create(output)
        .with_context(|| format!("cannot create '{}'", output.display()))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut line = String::with_capacity(1024);
    for event in generator.events(0..events) {
        line.clear();
        nexmark::to_json_line(&event, &mut line);
        line.push('\n');
        writer
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot write '{}'", output.display()))?;
    }
    writer
        .flush()
        .with_context(|| format!("cannot write '{}'", output.display()))?;
    println!(
        "wrote {events} Nexmark events (seed {seed}) to {} ({} bytes)",
        output.display(),
        std::fs::metadata(output)?.len()
    );
    Ok(())
}

/// The files a Nexmark run reads and writes.
struct NexmarkFiles {
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    side_input: Option<PathBuf>,
}

fn run_nexmark(
    query: &str,
    events: u64,
    rate: Option<f64>,
    files: NexmarkFiles,
    seed: u64,
    checkpoints: &CheckpointArgs,
    engine: &EngineArgs,
) -> Result<()> {
    let NexmarkFiles {
        input,
        output,
        side_input,
    } = files;
    if query == "generate" {
        let Some(output) = output else {
            bail!("nexmark generate needs --output FILE");
        };
        return nexmark_generate(events, seed, &output);
    }
    let query: Query = query
        .parse()
        .map_err(|e: String| anyhow::anyhow!("{e}, or generate"))?;
    let mut config = engine.config();
    checkpoints.apply(&mut config)?;
    let executors = config.executors;
    let env = StreamEnv::new(config);
    let (source, source_name) = match &input {
        Some(path) => (
            nexmark::json_file_source(&env, path.clone()),
            nexmark::source::JSON_FILE_SOURCE_PREFIX,
        ),
        None => {
            let generator = nexmark_config(events, seed);
            let stream = match rate {
                Some(r) => nexmark::generator_source_with_rate(&env, generator, r),
                None => nexmark::generator_source(&env, generator),
            };
            (stream, nexmark::source::GENERATOR_SOURCE_NAME)
        }
    };
    let options = nexmark::QueryOptions {
        side_input: side_input.clone(),
        ..Default::default()
    };
    let out = nexmark::build_with(query, source, &options).map_err(|e| anyhow::anyhow!(e))?;
    let counter = match &output {
        Some(path) if checkpoints.enabled() => out.sink_to_files(path.clone()),
        Some(path) => out.write_text_file(path.clone()),
        None => out.discard(),
    };
    // JobError's message already includes its cause; `{:#}` would print it twice.
    let outcome = env
        .execute(&format!("nexmark {query}"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // A source vertex's records_in is the number of records its source emitted.
    let processed: u64 = outcome
        .vertices
        .iter()
        .filter(|v| v.name.starts_with(source_name))
        .map(|v| v.records_in)
        .sum();
    let secs = outcome.elapsed.as_secs_f64();
    println!("query: {query} ({})", query.header());
    println!("events processed: {processed}");
    println!("elapsed: {secs:.3} s");
    println!(
        "throughput: {:.3} M events/s total, {:.3} M events/s per core ({executors} executors)",
        processed as f64 / secs / 1e6,
        processed as f64 / secs / 1e6 / executors as f64
    );
    println!("output rows: {}", counter.get());
    if checkpoints.enabled() {
        println!(
            "checkpoints completed: {}, restarts: {}",
            outcome.checkpoints.len(),
            outcome.restarts
        );
    }
    if let Some(path) = &output {
        println!("rows written to {}", path.display());
    }
    Ok(())
}

fn run_windows(
    records: u64,
    rate: Option<f64>,
    output: &std::path::Path,
    checkpoints: &CheckpointArgs,
    engine: &EngineArgs,
) -> Result<()> {
    let mut config = engine.config();
    checkpoints.apply(&mut config)?;
    let env = StreamEnv::new(config);
    rheon::jobs::windowed_sums::build(&env, records, rate, output, |_| {});
    let outcome = env.execute("windows")?;
    let secs = outcome.elapsed.as_secs_f64();
    println!(
        "events: {records}, elapsed: {secs:.2} s, checkpoints completed: {}, restarts: {}",
        outcome.checkpoints.len(),
        outcome.restarts
    );
    if let Some(last) = outcome.checkpoints.last() {
        println!(
            "last checkpoint: {} ({} bytes, sync pause max {:?}, took {:?})",
            last.directory.display(),
            last.bytes,
            last.sync_max,
            last.duration
        );
    }
    let lines = rheon::jobs::windowed_sums::committed_lines(output)
        .with_context(|| format!("cannot read {}", output.display()))?;
    println!("committed rows: {} in {}", lines.len(), output.display());
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
