//! Word count throughput: `rheon::jobs::wordcount::run` over a generated text file
//! (1 GiB by default, created if absent) on `--cores` executors, in MB/s (10^6 B/s)
//! total and per core. In the same run, for comparison: the engine reading the file
//! through the same text source into a discard sink, and a single-threaded plain
//! Rust word count (BufReader lines + FxHashMap, same tokenizer). Figures are the
//! median of `--runs`. Target: 200 MB/s per core.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Parser;
use rheon::jobs::wordcount::{for_each_word, generate_text, run, WordCountOptions};
use rheon::{EngineConfig, StreamEnv};
use rheon_bench::{median_duration, verdict};
use rustc_hash::FxHashMap;

#[derive(Parser, Debug)]
#[command(
    about = "Word count throughput of the engine, with a read-only and a plain Rust baseline"
)]
struct Args {
    /// Input text; generated (seed 42) if absent. Default
    /// /tmp/rheon-wordcount-1g.txt, or /tmp/rheon-wordcount-<size>m.txt when
    /// --size-mb is not 1024.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Size of the generated file in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mb: u64,
    /// Executors (each pinned to a core); the parallelism is the same.
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// Runs; the median is printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the single-threaded plain Rust word count.
    #[arg(long)]
    no_plain: bool,
}

const TARGET_MB_PER_S_PER_CORE: f64 = 200.0;

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// The plain single-threaded word count; returns (distinct words, total words).
fn plain_word_count(path: &Path) -> anyhow::Result<(usize, u64)> {
    let file = std::fs::File::open(path)?;
    let reader = BufReader::with_capacity(1 << 16, file);
    let mut counts: FxHashMap<String, u64> = FxHashMap::default();
    let mut word = String::new();
    for line in reader.lines() {
        let line = line?;
        for_each_word(&line, &mut word, |w| {
            if let Some(c) = counts.get_mut(w) {
                *c += 1;
            } else {
                counts.insert(w.to_owned(), 1);
            }
        });
    }
    let total = counts.values().sum();
    Ok((counts.len(), total))
}

/// The engine reading the file with the text source into a discard sink.
fn read_only(path: &Path, config: &EngineConfig) -> anyhow::Result<Duration> {
    let env = StreamEnv::new(config.clone());
    env.read_text_file(path.to_path_buf()).discard();
    let start = Instant::now();
    env.execute("read text file")
        .map_err(|e| anyhow!("read job: {e}"))?;
    Ok(start.elapsed())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let path = args.file.clone().unwrap_or_else(|| {
        if args.size_mb == 1024 {
            PathBuf::from("/tmp/rheon-wordcount-1g.txt")
        } else {
            PathBuf::from(format!("/tmp/rheon-wordcount-{}m.txt", args.size_mb))
        }
    });
    if !path.exists() {
        let start = Instant::now();
        generate_text(&path, args.size_mb << 20, 42)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "generated {} in {:.1} s",
            path.display(),
            start.elapsed().as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&path)?.len();
    // Warm the page cache so that no run pays for the disk.
    {
        let mut f = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf)? > 0 {}
    }
    let config = EngineConfig::default()
        .with_executors(args.cores)
        .with_parallelism(args.cores as u32);
    let cores = args.cores as f64;
    println!(
        "wordcount: {} ({} bytes = {:.1} MB), {} executors x parallelism {}, median of {} runs, \
         page cache warm; MB = 10^6 bytes",
        path.display(),
        bytes,
        bytes as f64 / 1e6,
        config.executors,
        config.parallelism(),
        args.runs
    );

    let mut engine = Vec::new();
    let mut job = Vec::new();
    let mut read = Vec::new();
    let mut plain = Vec::new();
    let mut engine_words = (0usize, 0u64);
    let mut plain_words = (0usize, 0u64);
    for _ in 0..args.runs {
        read.push(read_only(&path, &config)?);

        let start = Instant::now();
        let result = run(WordCountOptions {
            input: path.clone(),
            output: None,
            config: config.clone(),
        })
        .map_err(|e| anyhow!("word count job: {e}"))?;
        engine.push(start.elapsed());
        job.push(result.outcome.elapsed);
        engine_words = (
            result.counts.len(),
            result.counts.iter().map(|(_, c)| *c).sum(),
        );

        if !args.no_plain {
            let start = Instant::now();
            plain_words = plain_word_count(&path)?;
            plain.push(start.elapsed());
        }
    }
    if !args.no_plain && engine_words != plain_words {
        return Err(anyhow!(
            "engine counted {} distinct / {} total words, plain Rust {} / {}",
            engine_words.0,
            engine_words.1,
            plain_words.0,
            plain_words.1
        ));
    }
    println!(
        "{} distinct words, {} words in total{}",
        engine_words.0,
        engine_words.1,
        if args.no_plain {
            ""
        } else {
            " (plain Rust agrees)"
        }
    );

    let e = median_duration(&engine);
    let total = mb_per_s(bytes, e);
    println!(
        "{:<44} {:>9} {:>10} {:>12}",
        "", "time s", "MB/s", "MB/s/core"
    );
    println!(
        "{:<44} {:>9.3} {:>10.1} {:>12.1}   target >= {:.0} MB/s/core: {}",
        format!("engine word count ({} cores)", args.cores),
        e.as_secs_f64(),
        total,
        total / cores,
        TARGET_MB_PER_S_PER_CORE,
        verdict(total / cores >= TARGET_MB_PER_S_PER_CORE)
    );
    let j = median_duration(&job);
    println!(
        "{:<44} {:>9.3} {:>10.1} {:>12.1}",
        "  (job elapsed, without cluster start/stop)",
        j.as_secs_f64(),
        mb_per_s(bytes, j),
        mb_per_s(bytes, j) / cores
    );
    let r = median_duration(&read);
    println!(
        "{:<44} {:>9.3} {:>10.1} {:>12.1}",
        format!("engine read text file -> discard ({} cores)", args.cores),
        r.as_secs_f64(),
        mb_per_s(bytes, r),
        mb_per_s(bytes, r) / cores
    );
    if !args.no_plain {
        let p = median_duration(&plain);
        println!(
            "{:<44} {:>9.3} {:>10.1} {:>12.1}",
            "plain Rust word count (1 thread)",
            p.as_secs_f64(),
            mb_per_s(bytes, p),
            mb_per_s(bytes, p)
        );
    }
    Ok(())
}
