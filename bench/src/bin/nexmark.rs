//! Nexmark throughput: each implemented query on `--events` generated events (default
//! 10 M, the benchmark suite's generator defaults) on `--cores` executors with a
//! discarding sink. Prints the median of `--runs` runs in events/s, total and per
//! core, next to the targets: q0, q1, q2 >= 10 M events/s per core; q3, q8 >= 5 M;
//! q4, q5, q7, q9, q11 >= 2 M.

use std::time::Duration;

use anyhow::anyhow;
use clap::Parser;
use rheon::nexmark::{build, generator_source, GeneratorConfig, Query};
use rheon::{EngineConfig, StreamEnv};
use rheon_bench::{median_duration, verdict};

#[derive(Parser, Debug)]
#[command(about = "Nexmark query throughput on the generator with a discard sink")]
struct Args {
    /// Events per run.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Executors (each pinned to a core); the parallelism is the same. Default: all cores.
    #[arg(long)]
    cores: Option<usize>,
    /// Runs per query; the median is printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these queries (comma-separated), default all.
    #[arg(long)]
    queries: Option<String>,
}

/// The targets per core; queries without one print no verdict.
fn target_per_core(query: Query) -> Option<f64> {
    match query {
        Query::Q0 | Query::Q1 | Query::Q2 => Some(10e6),
        Query::Q3 | Query::Q8 => Some(5e6),
        Query::Q4 | Query::Q5 | Query::Q7 | Query::Q9 | Query::Q11 => Some(2e6),
        _ => None,
    }
}

fn run_once(query: Query, events: u64, config: &EngineConfig) -> anyhow::Result<(Duration, u64)> {
    let env = StreamEnv::new(config.clone());
    let generator = GeneratorConfig {
        num_events: events,
        ..GeneratorConfig::default()
    };
    let out = build(query, generator_source(&env, generator));
    let counter = out.discard();
    let outcome = env
        .execute(&format!("nexmark {query}"))
        .map_err(|e| anyhow!("{query}: {e}"))?;
    Ok((outcome.elapsed, counter.get()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cores = args.cores.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let queries: Vec<Query> = match &args.queries {
        None => Query::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|q| q.parse::<Query>().map_err(|e| anyhow!(e)))
            .collect::<anyhow::Result<_>>()?,
    };
    let config = EngineConfig::default()
        .with_executors(cores)
        .with_parallelism(cores as u32);
    println!(
        "Nexmark, {} events per run, {cores} cores, median of {} runs, discard sink",
        args.events, args.runs
    );
    println!(
        "{:<5} {:>10} {:>14} {:>16} {:>16} {:>8} {:>12}",
        "query", "median s", "M events/s", "M ev/s per core", "target per core", "", "output rows"
    );
    for query in queries {
        let mut times = Vec::with_capacity(args.runs);
        let mut rows = 0;
        for _ in 0..args.runs.max(1) {
            let (elapsed, n) = run_once(query, args.events, &config)?;
            times.push(elapsed);
            rows = n;
        }
        let median = median_duration(&times);
        let total = args.events as f64 / median.as_secs_f64();
        let per_core = total / cores as f64;
        let target = target_per_core(query);
        println!(
            "{:<5} {:>10.3} {:>14.3} {:>16.3} {:>16} {:>8} {:>12}",
            query.name(),
            median.as_secs_f64(),
            total / 1e6,
            per_core / 1e6,
            target.map_or("-".to_string(), |t| format!("{:.1}", t / 1e6)),
            target.map_or("", |t| verdict(per_core >= t)),
            rows
        );
    }
    Ok(())
}
