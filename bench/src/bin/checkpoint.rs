//! Checkpoint cost on a keyed aggregation: the same job with and without
//! periodic checkpoints, in one run (noisy host: ratios, medians).
//!
//! Job: generator of `--records` records `(key, 1)` over `--keys` keys
//! (record k has key `k * 2654435761 % keys`, so every key is touched
//! uniformly), keyed `sum` (state: one u64 per key), discarding sink.
//! Prints per mode the median records/s of `--runs` runs, and for the
//! checkpointed runs: checkpoints completed, state bytes per checkpoint,
//! synchronous pause p50/p99/max over every subtask of every checkpoint,
//! and the write rate (state bytes / longest asynchronous part).

use std::time::Duration;

use clap::Parser;
use rheon::{CheckpointConfig, EngineConfig, StreamEnv};
use rheon_bench::median_duration;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 60_000_000)]
    records: u64,
    #[arg(long, default_value_t = 20_000_000)]
    keys: u64,
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("rheon-bench-ckpt-{}", std::process::id()));
    let mut plain = Vec::new();
    let mut checkpointed = Vec::new();
    let mut syncs: Vec<Duration> = Vec::new();
    let mut bytes = Vec::new();
    let mut rates = Vec::new();
    let mut completed = Vec::new();
    for run in 0..args.runs {
        for with in [false, true] {
            let _ = std::fs::remove_dir_all(&dir);
            let mut config = EngineConfig::default()
                .with_executors(2)
                .with_parallelism(2);
            if with {
                config = config.with_checkpoints(CheckpointConfig::every(
                    Duration::from_millis(args.interval_ms),
                    &dir,
                ));
            }
            let env = StreamEnv::new(config);
            let keys = args.keys;
            env.generate(args.records, move |k| {
                (k.wrapping_mul(2_654_435_761) % keys, 1u64)
            })
            .key_by(|r: &(u64, u64)| r.0)
            .sum(|r: &(u64, u64)| r.1)
            .discard();
            let outcome = env.execute("keyed sum")?;
            let secs = outcome.elapsed.as_secs_f64();
            println!(
                "run {run} {}: {:.2} M records/s, {} checkpoints",
                if with { "checkpoints" } else { "plain" },
                args.records as f64 / secs / 1e6,
                outcome.checkpoints.len()
            );
            if with {
                checkpointed.push(outcome.elapsed);
                completed.push(outcome.checkpoints.len());
                for c in &outcome.checkpoints {
                    syncs.extend(c.sync_durations.iter().copied());
                    bytes.push(c.bytes);
                    if !c.async_max.is_zero() {
                        rates.push(c.bytes as f64 / c.async_max.as_secs_f64() / 1e9);
                    }
                }
            } else {
                plain.push(outcome.elapsed);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let p = median_duration(&plain);
    let c = median_duration(&checkpointed);
    let rate = |d: Duration| args.records as f64 / d.as_secs_f64() / 1e6;
    println!(
        "plain: {:.2} M records/s; checkpoints every {} ms: {:.2} M records/s; loss {:.1}% (target < 10%)",
        rate(p),
        args.interval_ms,
        rate(c),
        (1.0 - rate(c) / rate(p)) * 100.0
    );
    syncs.sort();
    let pct = |q: f64| {
        syncs
            .get(((syncs.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    bytes.sort();
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "checkpoints per run: {completed:?}; state per checkpoint (median): {:.1} MiB; sync pause p50 {:?} p99 {:?} max {:?} (target p99 < 5 ms); write rate median {:.2} GB/s",
        bytes.get(bytes.len() / 2).copied().unwrap_or(0) as f64 / (1 << 20) as f64,
        pct(0.5),
        pct(0.99),
        syncs.last().copied().unwrap_or_default(),
        rates.get(rates.len() / 2).copied().unwrap_or(0.0)
    );
    Ok(())
}
