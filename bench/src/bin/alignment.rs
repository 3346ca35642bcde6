//! Checkpoints under backpressure: aligned exactly-once against unaligned
//! barriers (noisy host: both modes in one run, medians and percentiles).
//!
//! Job: generator (parallelism 2, unthrottled) of `--records` records
//! `(key, 1)` over `--keys` keys, keyed exchange to a keyed sum whose value
//! function spins for `--work-ns` per record, discarding sink; checkpoints
//! every `--interval-ms`. The sum is the bottleneck, so the exchange's
//! buffers stay full and a barrier queues behind them. The state is small
//! (`--keys` entries), so the figures are about barriers, not snapshot size.
//!
//! Per mode, `--runs` runs (modes interleaved). Over every completed
//! checkpoint of a mode: alignment (`CheckpointStats::alignment_max`, the
//! longest of any subtask: first barrier to last at its input gate; an
//! unaligned snapshot is taken at the first barrier), duration (trigger to
//! metadata written) and the median records/s. (`CheckpointStats::bytes`
//! counts state files only, not the in-flight data an unaligned checkpoint
//! records, so it is not printed.)

use std::time::{Duration, Instant};

use clap::Parser;
use rheon::{CheckpointConfig, CheckpointStats, EngineConfig, StreamEnv};
use rheon_bench::{checkpoint_root, duration_spread, median_duration, spread_key};

#[derive(Parser)]
#[command(
    about = "Alignment and checkpoint duration under backpressure, aligned against unaligned"
)]
struct Args {
    #[arg(long, default_value_t = 20_000_000)]
    records: u64,
    #[arg(long, default_value_t = 1024)]
    keys: u64,
    /// Busy work per record in the keyed sum, in nanoseconds.
    #[arg(long, default_value_t = 1000)]
    work_ns: u64,
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(Clone, Copy)]
enum Mode {
    Aligned,
    Unaligned,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Aligned => "aligned",
            Mode::Unaligned => "unaligned",
        }
    }
}

/// Spins for `work` (the slow downstream's per-record cost).
#[inline]
fn spin(work: Duration) {
    let start = Instant::now();
    while start.elapsed() < work {
        std::hint::spin_loop();
    }
}

#[derive(Default)]
struct Figures {
    elapsed: Vec<Duration>,
    checkpoints: Vec<CheckpointStats>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = checkpoint_root("alignment");
    let modes = [Mode::Aligned, Mode::Unaligned];
    let mut figures: Vec<Figures> = modes.iter().map(|_| Figures::default()).collect();
    let work = Duration::from_nanos(args.work_ns);
    for run in 0..args.runs {
        for (mode, figures) in modes.iter().zip(&mut figures) {
            let _ = std::fs::remove_dir_all(&dir);
            let checkpoint = CheckpointConfig {
                unaligned: matches!(mode, Mode::Unaligned),
                ..CheckpointConfig::every(Duration::from_millis(args.interval_ms), &dir)
            };
            let env = StreamEnv::new(
                EngineConfig::default()
                    .with_executors(2)
                    .with_parallelism(2)
                    .with_checkpoints(checkpoint),
            );
            let keys = args.keys;
            env.generate(args.records, move |k| (spread_key(k, keys), 1u64))
                .key_by(|r: &(u64, u64)| r.0)
                .sum(move |r: &(u64, u64)| {
                    spin(work);
                    r.1
                })
                .discard();
            let outcome = env.execute("slow keyed sum")?;
            println!(
                "run {run} {}: {:.2} M records/s, {} checkpoints",
                mode.name(),
                args.records as f64 / outcome.elapsed.as_secs_f64() / 1e6,
                outcome.checkpoints.len()
            );
            figures.elapsed.push(outcome.elapsed);
            figures.checkpoints.extend(outcome.checkpoints);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "checkpoints every {} ms, {} ns of work per record in the keyed sum:",
        args.interval_ms, args.work_ns
    );
    for (mode, figures) in modes.iter().zip(&figures) {
        let c = &figures.checkpoints;
        let alignments: Vec<Duration> = c.iter().map(|c| c.alignment_max).collect();
        let durations: Vec<Duration> = c.iter().map(|c| c.duration).collect();
        println!(
            "  {:<9} ({} checkpoints, {:.2} M records/s): alignment {}; duration {}",
            mode.name(),
            c.len(),
            args.records as f64 / median_duration(&figures.elapsed).as_secs_f64() / 1e6,
            duration_spread(&alignments),
            duration_spread(&durations),
        );
    }
    Ok(())
}
