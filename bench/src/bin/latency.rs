//! End-to-end record latency through generator -> map -> key_by -> keyed reduce ->
//! latency sink, on two pinned executors. The generator stamps each record with the
//! nanoseconds since a process-wide `Instant`; the sink (a `transform`) records
//! `now - stamp` into a per-subtask HDR histogram and merges it into a global one at
//! the end of input.
//!
//! First the same pipeline runs unthrottled to find its maximum throughput; then it
//! runs rate-limited at `--load` (default half) of that rate, once per buffer timeout
//! (`--buffer-timeout-us`, then 0 and 1000 us), printing p50/p99/p999/max in
//! microseconds (median of `--runs`) next to the target p99 < 1 ms. Records stamped
//! during the first `--warmup-ms` of a run are not recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Parser;
use hdrhistogram::Histogram;
use rheon::{Emitter, EngineConfig, OneInputOperator, StreamEnv};
use rheon_bench::{median_f64, verdict};

#[derive(Parser, Debug)]
#[command(about = "Record latency through a 3-operator pipeline with one keyed exchange")]
struct Args {
    /// Buffer timeout of the main latency setting, microseconds; rows for 0 and
    /// 1000 us are printed as well.
    #[arg(long, default_value_t = 100)]
    buffer_timeout_us: u64,
    /// Seconds per run (throughput and latency runs).
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Runs per setting; medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Fraction of the measured maximum throughput offered in the latency runs.
    #[arg(long, default_value_t = 0.5)]
    load: f64,
    /// Offer this many records/s instead of `--load` x the measured maximum
    /// (skips the throughput measurement).
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct keys.
    #[arg(long, default_value_t = 1024)]
    keys: u64,
    /// Executors (each pinned to a core); the parallelism is the same.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Records stamped in the first milliseconds of a run are not recorded.
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
}

const TARGET_P99_US: f64 = 1000.0;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide base instant.
#[inline]
fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// (key, stamp in ns, count).
type Rec = (u64, u64, u64);

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds")
}

/// Records `now - stamp` per subtask; merges into the global histogram at the end.
#[derive(Clone)]
struct LatencySink {
    local: Histogram<u64>,
    global: Arc<Mutex<Histogram<u64>>>,
    /// The stamp of the run's first generated record (0 until there is one).
    first_stamp: Arc<AtomicU64>,
    warmup_ns: u64,
    /// Records stamped before this are not recorded; known once `first_stamp` is.
    skip_before_ns: Option<u64>,
}

impl OneInputOperator<Rec, ()> for LatencySink {
    #[inline]
    fn process(&mut self, (_, stamp, _): Rec, _out: &mut Emitter<'_, ()>) {
        let skip_before = match self.skip_before_ns {
            Some(t) => t,
            None => {
                let first = self.first_stamp.load(Ordering::Relaxed);
                if first == 0 {
                    return;
                }
                let t = first + self.warmup_ns;
                self.skip_before_ns = Some(t);
                t
            }
        };
        if stamp >= skip_before {
            self.local
                .saturating_record(now_ns().saturating_sub(stamp).max(1));
        }
    }
    fn finish(&mut self, _out: &mut Emitter<'_, ()>) {
        let mut global = self.global.lock().expect("latency histogram lock");
        global
            .add(&self.local)
            .expect("histograms with equal bounds");
        self.local.reset();
    }
}

struct RunResult {
    records: u64,
    elapsed: Duration,
    histogram: Histogram<u64>,
}

fn run_once(
    args: &Args,
    records: u64,
    rate: Option<f64>,
    buffer_timeout: Duration,
) -> anyhow::Result<RunResult> {
    let config = EngineConfig::default()
        .with_executors(args.executors)
        .with_parallelism(args.executors as u32)
        .with_buffer_timeout(buffer_timeout);
    let env = StreamEnv::new(config);
    let keys = args.keys.max(1);
    let first_stamp = Arc::new(AtomicU64::new(0));
    let first = first_stamp.clone();
    let make = move |i: u64| -> Rec {
        let stamp = now_ns();
        if i == 0 {
            // Subtask 0 makes record 0 first: the run's start for the warm-up.
            first.store(stamp, Ordering::Relaxed);
        }
        (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % keys, stamp, 1)
    };
    let generated = match rate {
        Some(r) => env.generate_with_rate(records, r, make),
        None => env.generate(records, make),
    };
    let global = Arc::new(Mutex::new(new_histogram()));
    generated
        .map(|(k, t, c): Rec| (k ^ 0x5555, t, c))
        .key_by(|r: &Rec| r.0)
        .reduce(|acc: Rec, r: Rec| (r.0, r.1, acc.2 + r.2))
        .transform(
            "Latency sink",
            LatencySink {
                local: new_histogram(),
                global: global.clone(),
                first_stamp,
                warmup_ns: args.warmup_ms * 1_000_000,
                skip_before_ns: None,
            },
        )
        .discard();
    let start = Instant::now();
    let outcome = env
        .execute("latency")
        .map_err(|e| anyhow!("latency job: {e}"))?;
    let _wall = start.elapsed();
    let histogram = global.lock().expect("latency histogram lock").clone();
    Ok(RunResult {
        records,
        elapsed: outcome.elapsed,
        histogram,
    })
}

/// Median over runs of p50, p99, p999, max (us) and records recorded.
fn percentiles(results: &[RunResult]) -> [f64; 5] {
    let stats = |h: &Histogram<u64>| -> [f64; 5] {
        [
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.value_at_quantile(0.999) as f64 / 1e3,
            h.max() as f64 / 1e3,
            h.len() as f64,
        ]
    };
    let per_run: Vec<[f64; 5]> = results.iter().map(|r| stats(&r.histogram)).collect();
    std::array::from_fn(|i| median_f64(&per_run.iter().map(|s| s[i]).collect::<Vec<_>>()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    BASE.get_or_init(Instant::now);
    println!(
        "latency: generator -> map -> key_by -> keyed reduce -> latency sink, {} executors x \
         parallelism {}, {} keys, {:.1} s per run, median of {} runs, warm-up {} ms not recorded; \
         latencies in us",
        args.executors, args.executors, args.keys, args.seconds, args.runs, args.warmup_ms
    );
    let main_timeout = Duration::from_micros(args.buffer_timeout_us);
    let rate = match args.rate {
        Some(r) => r,
        None => {
            // Calibrate the record count for the requested run length.
            let probe = run_once(&args, 2_000_000, None, main_timeout)?;
            let probe_rate = probe.records as f64 / probe.elapsed.as_secs_f64();
            let records = ((probe_rate * args.seconds) as u64).max(100_000);
            let mut rates = Vec::new();
            let mut results = Vec::new();
            for _ in 0..args.runs {
                let r = run_once(&args, records, None, main_timeout)?;
                rates.push(r.records as f64 / r.elapsed.as_secs_f64());
                results.push(r);
            }
            let max = median_f64(&rates);
            let p = percentiles(&results);
            println!(
                "unthrottled, buffer timeout {:>4} us: {:.0} records/s ({:.0} per core), {} records; \
                 latency under saturation p50 {:.0} p99 {:.0} p999 {:.0} max {:.0}",
                args.buffer_timeout_us,
                max,
                max / args.executors as f64,
                records,
                p[0],
                p[1],
                p[2],
                p[3]
            );
            max * args.load
        }
    };
    let records = ((rate * args.seconds) as u64).max(1000);
    println!(
        "offered load: {:.0} records/s ({} records per run)",
        rate, records
    );
    println!(
        "{:>17} {:>10} {:>10} {:>10} {:>10} {:>10} {:>13} | target p99 < {:.0} us",
        "buffer timeout", "p50", "p99", "p999", "max", "recorded", "achieved/s", TARGET_P99_US
    );
    let mut timeouts = vec![args.buffer_timeout_us];
    for t in [0, 1000] {
        if !timeouts.contains(&t) {
            timeouts.push(t);
        }
    }
    for t in timeouts {
        let mut results = Vec::new();
        let mut achieved = Vec::new();
        for _ in 0..args.runs {
            let r = run_once(&args, records, Some(rate), Duration::from_micros(t))?;
            achieved.push(r.records as f64 / r.elapsed.as_secs_f64());
            results.push(r);
        }
        let p = percentiles(&results);
        println!(
            "{:>14} us {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.0} {:>13.0} | {}",
            t,
            p[0],
            p[1],
            p[2],
            p[3],
            p[4],
            median_f64(&achieved),
            verdict(p[1] < TARGET_P99_US)
        );
    }
    Ok(())
}
