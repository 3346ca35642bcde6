//! Checkpoints of a keyed aggregation over about 1 GiB of state: what periodic
//! checkpoints cost the running job, and how long a restore takes, through the
//! engine (noisy host: ratios in one run, medians).
//!
//! Job: generator of `--records` records `(key, 1)` over `--keys` keys
//! (`spread_key`: with a power-of-two key count every `keys` consecutive records
//! touch every key once), keyed `sum` (state: one u64 per key, 16 bytes per
//! entry in a snapshot, so the default 2^26 keys make 1 GiB), discarding sink;
//! parallelism 2 on 2 executors.
//!
//! 1. Cost: `--runs` rounds of the job without checkpoints, then with
//!    checkpoints every `--interval-ms`. Prints the median records/s of each
//!    and the loss; per checkpoint the state bytes, the synchronous pause of
//!    every subtask (p50/p99/max, over every checkpoint and over those at full
//!    state), the write rate (state bytes / longest asynchronous part) and the
//!    duration (trigger to metadata written).
//! 2. Restore: the last checkpointed run leaves its last checkpoint on disk;
//!    the same job restores it `--runs` times at parallelism 2 (same) and 1
//!    (rescaled 2 -> 1). The figure is the longest subtask restore as the
//!    engine reports it (`VertexMetrics::restore_durations`: from the subtask's
//!    deploy until its state is restored, before its first record). Each
//!    restored run also checks its sums: it records every key's last emitted
//!    sum, and each must equal the key's count in a plain model of the
//!    generator, so a restore that lost or doubled state fails the program.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use rheon::{CheckpointConfig, CheckpointStats, EngineConfig, JobOutcome, StreamEnv};
use rheon_bench::{
    checkpoint_root, duration_spread, gb_per_s, median_duration, median_f64, percentile_duration,
    spread_key, verdict,
};

const PARALLELISM: u32 = 2;
const LOSS_TARGET_PERCENT: f64 = 10.0;
const SYNC_PAUSE_TARGET: Duration = Duration::from_millis(5);
const RESTORE_TARGET: Duration = Duration::from_secs(1);
/// A checkpoint is "at full state" when it holds at least this share of the
/// largest checkpoint's bytes.
const FULL_STATE_SHARE: f64 = 0.95;
const MIB: f64 = (1u64 << 20) as f64;

#[derive(Parser)]
#[command(about = "Checkpoint cost and restore time of a keyed sum over about 1 GiB of state")]
struct Args {
    /// Generated records (at least `keys`, so that every key has state).
    #[arg(long, default_value_t = 3 << 26)]
    records: u64,
    /// Distinct keys: 16 snapshot bytes each, 2^26 keys make 1 GiB.
    #[arg(long, default_value_t = 1 << 26)]
    keys: u64,
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Rounds of (plain, checkpointed) runs, and restored runs per parallelism.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only the cost figures, no restore.
    #[arg(long)]
    no_restore: bool,
}

/// Every key's last (largest) emitted sum, written by the restored job.
type LastSums = Arc<Vec<AtomicU64>>;

/// Builds the keyed sum; with `last_sums`, a map before the sink records each
/// key's largest sum.
fn keyed_sum(env: &StreamEnv, args: &Args, last_sums: Option<LastSums>) {
    let keys = args.keys;
    let sums = env
        .generate(args.records, move |k| (spread_key(k, keys), 1u64))
        .key_by(|r: &(u64, u64)| r.0)
        .sum(|r: &(u64, u64)| r.1);
    match last_sums {
        None => sums.discard(),
        Some(last) => sums
            .map(move |r: (u64, u64)| {
                last[r.0 as usize].fetch_max(r.1, Ordering::Relaxed);
                r
            })
            .discard(),
    };
}

fn config(parallelism: u32, checkpoint: CheckpointConfig) -> EngineConfig {
    EngineConfig::default()
        .with_executors(2)
        .with_parallelism(parallelism)
        .with_checkpoints(checkpoint)
}

fn records_per_s(args: &Args, elapsed: Duration) -> f64 {
    args.records as f64 / elapsed.as_secs_f64() / 1e6
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.keys > 0 && args.records >= args.keys,
        "--records ({}) must be at least --keys ({}) > 0",
        args.records,
        args.keys
    );
    let dir = checkpoint_root("checkpoint");
    let retained = cost(&args, &dir)?;
    if !args.no_restore {
        restore(&args, &dir, &retained)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The plain and checkpointed runs; returns the checkpoint the last
/// checkpointed run left in `dir`.
fn cost(args: &Args, dir: &Path) -> anyhow::Result<CheckpointStats> {
    let mut plain = Vec::new();
    let mut checkpointed = Vec::new();
    let mut runs: Vec<Vec<CheckpointStats>> = Vec::new();
    for run in 0..args.runs {
        for with in [false, true] {
            let _ = std::fs::remove_dir_all(dir);
            let checkpoint = if with {
                CheckpointConfig::every(Duration::from_millis(args.interval_ms), dir)
            } else {
                CheckpointConfig::default()
            };
            let env = StreamEnv::new(config(PARALLELISM, checkpoint));
            keyed_sum(&env, args, None);
            let outcome = env.execute("keyed sum")?;
            println!(
                "run {run} {}: {:.2} M records/s, {} checkpoints",
                if with { "checkpoints" } else { "plain" },
                records_per_s(args, outcome.elapsed),
                outcome.checkpoints.len()
            );
            if with {
                checkpointed.push(outcome.elapsed);
                runs.push(outcome.checkpoints);
            } else {
                plain.push(outcome.elapsed);
            }
        }
    }
    let (p, c) = (median_duration(&plain), median_duration(&checkpointed));
    let loss = (1.0 - records_per_s(args, c) / records_per_s(args, p)) * 100.0;
    println!(
        "plain: {:.2} M records/s; checkpoints every {} ms: {:.2} M records/s; loss {loss:.1}% (target < {LOSS_TARGET_PERCENT}%: {})",
        records_per_s(args, p),
        args.interval_ms,
        records_per_s(args, c),
        verdict(loss < LOSS_TARGET_PERCENT)
    );

    let all: Vec<&CheckpointStats> = runs.iter().flatten().collect();
    let largest = all.iter().map(|c| c.bytes).max().unwrap_or(0);
    let full: Vec<&CheckpointStats> = all
        .iter()
        .copied()
        .filter(|c| c.bytes as f64 >= largest as f64 * FULL_STATE_SHARE)
        .collect();
    let syncs = |set: &[&CheckpointStats]| -> Vec<Duration> {
        set.iter()
            .flat_map(|c| c.sync_durations.iter().copied())
            .collect()
    };
    let full_syncs = syncs(&full);
    let counts: Vec<usize> = runs.iter().map(Vec::len).collect();
    println!(
        "checkpoints per run: {counts:?}; state per checkpoint: largest {:.1} MiB, {} of {} checkpoints at full state (>= {:.0}% of it)",
        largest as f64 / MIB,
        full.len(),
        all.len(),
        FULL_STATE_SHARE * 100.0
    );
    println!(
        "sync pause per subtask, every checkpoint: {}; at full state: {} (target p99 < {SYNC_PAUSE_TARGET:?}: {})",
        duration_spread(&syncs(&all)),
        duration_spread(&full_syncs),
        verdict(percentile_duration(&full_syncs, 0.99) < SYNC_PAUSE_TARGET)
    );
    let rates: Vec<f64> = full
        .iter()
        .filter(|c| !c.async_max.is_zero())
        .map(|c| gb_per_s(c.bytes, c.async_max))
        .collect();
    let durations: Vec<Duration> = full.iter().map(|c| c.duration).collect();
    println!(
        "at full state: write rate (bytes / longest asynchronous part) median {:.2} GB/s; checkpoint duration (trigger to metadata) {}",
        if rates.is_empty() { 0.0 } else { median_f64(&rates) },
        duration_spread(&durations)
    );
    runs.last()
        .and_then(|r| r.last())
        .cloned()
        .context("the last checkpointed run completed no checkpoint to restore")
}

/// Restores `retained` at the same parallelism and rescaled, and checks the
/// restored sums against a model.
fn restore(args: &Args, dir: &Path, retained: &CheckpointStats) -> anyhow::Result<()> {
    let model = model_counts(args);
    let mut figures: Vec<(u32, Vec<Duration>)> = vec![(PARALLELISM, Vec::new()), (1, Vec::new())];
    let mut wrong_runs = 0;
    for run in 0..args.runs {
        for (parallelism, restores) in &mut figures {
            let last: LastSums = Arc::new((0..args.keys).map(|_| AtomicU64::new(0)).collect());
            let checkpoint = CheckpointConfig {
                restore_from: Some(dir.to_path_buf()),
                ..CheckpointConfig::default()
            };
            let env = StreamEnv::new(config(*parallelism, checkpoint));
            keyed_sum(&env, args, Some(last.clone()));
            let outcome = env.execute("keyed sum, restored")?;
            let subtasks: Vec<Duration> = outcome
                .vertices
                .iter()
                .flat_map(|v| v.restore_durations.iter().copied())
                .collect();
            let Some(&longest) = subtasks.iter().max() else {
                bail!("the restored job at parallelism {parallelism} reports no restore");
            };
            restores.push(longest);
            let check = check_sums(&last, &model, &outcome, args);
            if !check.ok() {
                wrong_runs += 1;
            }
            println!(
                "restore run {run} at parallelism {parallelism}: longest subtask restore {longest:.2?} (every subtask: {subtasks:.2?}); {check}"
            );
        }
    }
    println!(
        "restore of checkpoint {} ({:.1} MiB, taken at parallelism {PARALLELISM}), longest subtask from deploy to state restored, median of {}:",
        retained.checkpoint_id,
        retained.bytes as f64 / MIB,
        args.runs
    );
    for (parallelism, restores) in &figures {
        let m = median_duration(restores);
        let how = if *parallelism == PARALLELISM {
            "same".to_string()
        } else {
            format!("rescaled {PARALLELISM} -> {parallelism}")
        };
        println!(
            "  at parallelism {parallelism} ({how}): {m:.2?}, {:.2} GB/s (target < {RESTORE_TARGET:?}: {})",
            gb_per_s(retained.bytes, m),
            verdict(m < RESTORE_TARGET)
        );
    }
    if wrong_runs > 0 {
        bail!("{wrong_runs} restored runs ended with wrong sums");
    }
    Ok(())
}

/// Each key's count over the job's records: its final sum.
fn model_counts(args: &Args) -> Vec<u32> {
    let mut counts = vec![0u32; args.keys as usize];
    for k in 0..args.records {
        counts[spread_key(k, args.keys) as usize] += 1;
    }
    counts
}

/// What a restored run's sums say about its restore.
struct SumCheck {
    /// Keys the restored job updated.
    keys_updated: u64,
    /// Of those, keys whose last sum is not the model's count.
    keys_wrong: u64,
    /// Records before the restored checkpoint: their counts came from state.
    records_restored: u64,
}

impl SumCheck {
    fn ok(&self) -> bool {
        self.keys_wrong == 0 && self.keys_updated > 0
    }
}

impl std::fmt::Display for SumCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sums {}: {} keys updated after the restore, {} differ from the model's final count; {} records were counted in the restored state",
            if self.ok() { "OK" } else { "WRONG" },
            self.keys_updated,
            self.keys_wrong,
            self.records_restored
        )
    }
}

fn check_sums(last: &[AtomicU64], model: &[u32], outcome: &JobOutcome, args: &Args) -> SumCheck {
    let generated: u64 = outcome
        .vertices
        .iter()
        .filter(|v| v.name.starts_with("Generator"))
        .map(|v| v.records_out)
        .sum();
    let mut check = SumCheck {
        keys_updated: 0,
        keys_wrong: 0,
        records_restored: args.records.saturating_sub(generated),
    };
    for (sum, &count) in last.iter().zip(model) {
        let sum = sum.load(Ordering::Relaxed);
        if sum != 0 {
            check.keys_updated += 1;
            if sum != u64::from(count) {
                check.keys_wrong += 1;
            }
        }
    }
    check
}
