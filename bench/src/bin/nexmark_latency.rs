//! Nexmark latency for q1 and q5 with the generator rate-limited to a fraction
//! (`--load`, default half) of the query's measured maximum throughput.
//!
//! - q1: every event is stamped with the wall clock when the source emits it
//!   (at half load the rate-limited source emits each event on schedule, so
//!   this is the event's time on the source's timeline); the latency of a row
//!   is the wall clock at the sink minus that stamp. Target p99 < 1 ms.
//! - q5: the generator's event time runs at the offered rate, so event time
//!   advances with the wall clock; the watermark trails by 0 (the generated
//!   stream is in order). A window's latency is the wall clock when its rows
//!   reach the sink minus the moment the sources passed the window's end:
//!   the latest, over the source subtasks, of the wall-clock stamp of each
//!   one's first event stamped at or after the end (the window can fire only
//!   then, as the watermark is their minimum). Target: within 1 ms of the
//!   window end. Windows fired by the end of the input (some subtask never
//!   passed their end) are not samples.
//!
//! q5 runs the query itself (`nexmark::windowed::q5`); q1 runs the same two
//! operators as the query (a bid filter and the price map), written here
//! again because they carry the source's stamp beside the bid. Both on
//! `--executors` pinned executors. p50,
//! p99, p999 and max in microseconds, medians over `--runs` runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use clap::Parser;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use rheon::nexmark::{windowed, Bid, Event, Generator, GeneratorConfig};
use rheon::{Emitter, EngineConfig, OneInputOperator, StreamEnv, WatermarkStrategy};
use rheon_bench::{median_f64, verdict};

#[derive(Parser, Debug)]
#[command(about = "Nexmark q1 and q5 latency at a fraction of the maximum rate")]
struct Args {
    /// Seconds per latency run (q5 needs several 2 s window slides).
    #[arg(long, default_value_t = 12.0)]
    seconds: f64,
    /// Runs per query; medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Fraction of the measured maximum rate offered.
    #[arg(long, default_value_t = 0.5)]
    load: f64,
    /// Executors (each pinned to a core); the parallelism is the same.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Buffer timeout, microseconds.
    #[arg(long, default_value_t = 0)]
    buffer_timeout_us: u64,
    /// Events of the unthrottled runs that measure the maximum rate.
    #[arg(long, default_value_t = 10_000_000)]
    max_events: u64,
    /// Only this query (q1 or q5).
    #[arg(long)]
    query: Option<String>,
}

/// Wall-clock microseconds since the epoch.
fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds")
}

/// Records a latency per row into a per-subtask histogram, merged at the end.
#[derive(Clone)]
struct LatencySink<F> {
    latency_us: F,
    local: Histogram<u64>,
    global: Arc<Mutex<Histogram<u64>>>,
}

impl<T, F: Fn(&T) -> i64 + Clone + Send + Sync + 'static> OneInputOperator<T, ()>
    for LatencySink<F>
{
    fn process(&mut self, row: T, _out: &mut Emitter<'_, ()>) {
        // A window that fired before the source reached its end was fired by
        // the end of the input, not by the stream: not a latency sample.
        let us = (self.latency_us)(&row);
        if us >= 0 {
            self.local.saturating_record(us.max(1) as u64);
        }
    }
    fn finish(&mut self, _out: &mut Emitter<'_, ()>) {
        let mut global = self.global.lock().expect("histogram lock");
        global.add(&self.local).expect("equal bounds");
        self.local.reset();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Q {
    Q1,
    Q5,
}

struct Run {
    events: u64,
    elapsed: Duration,
    histogram: Histogram<u64>,
}

fn run(args: &Args, q: Q, events: u64, rate: Option<f64>) -> anyhow::Result<Run> {
    let config = EngineConfig::default()
        .with_executors(args.executors)
        .with_parallelism(args.executors as u32)
        .with_buffer_timeout(Duration::from_micros(args.buffer_timeout_us));
    let env = StreamEnv::new(config);
    // Event time runs at the offered rate from "now".
    let base_ms = wall_us() / 1000;
    let generator = Generator::new(GeneratorConfig {
        num_events: events,
        // Unthrottled runs keep event time at 1 M events/s, the order of the
        // offered rates, so windows open and close as often as in the latency runs.
        first_event_rate: rate.unwrap_or(1_000_000.0).max(1.0) as u64,
        base_time_ms: base_ms,
        ..GeneratorConfig::default()
    })
    .map_err(|e| anyhow!(e))?;
    let parallelism = args.executors as u64;
    // Per 2 s boundary of event time (a window end): how many source
    // subtasks passed it, and the latest wall time at which one did (its
    // first event stamped at or after it). A window can fire only once every
    // subtask passed its end. Subtask i generates positions i mod p; each
    // keeps its next boundary in its own cache line.
    let passed: Arc<Mutex<BTreeMap<i64, (u64, i64)>>> = Arc::default();
    let passing = passed.clone();
    let next_boundary: Arc<Vec<CachePadded<AtomicI64>>> = Arc::new(
        (0..parallelism)
            .map(|_| CachePadded::new(AtomicI64::new(i64::MIN)))
            .collect(),
    );
    let make = move |position: u64| -> (i64, Event) {
        let stamp = wall_us();
        let event = generator.event_at(position);
        let ts = event.timestamp_ms();
        let next = &next_boundary[(position % parallelism) as usize];
        if ts >= next.load(Ordering::Relaxed) {
            let boundary = ts - ts.rem_euclid(2_000);
            let mut passed = passing.lock().expect("boundary lock");
            let (subtasks, latest) = passed.entry(boundary).or_insert((0, i64::MIN));
            *subtasks += 1;
            *latest = (*latest).max(stamp);
            next.store(boundary + 2_000, Ordering::Relaxed);
        }
        (stamp, event)
    };
    let stamped = match rate {
        Some(r) => env.generate_with_rate(events, r, make),
        None => env.generate(events, make),
    };
    let global = Arc::new(Mutex::new(new_histogram()));
    match q {
        Q::Q1 => {
            stamped
                .flat_map(|(stamp, e): (i64, Event)| match e {
                    Event::Bid(b) => Some((stamp, b)),
                    _ => None,
                })
                .map(|(stamp, mut b): (i64, Bid)| {
                    b.price = b.price.saturating_mul(908);
                    (stamp, b)
                })
                .transform(
                    "Latency sink",
                    LatencySink {
                        latency_us: |row: &(i64, Bid)| wall_us() - row.0,
                        local: new_histogram(),
                        global: global.clone(),
                    },
                )
                .discard();
        }
        Q::Q5 => {
            let events_stream = stamped
                .map(|(_, e): (i64, Event)| e)
                .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(|e: &Event| {
                    e.timestamp_ms()
                }));
            windowed::q5(&events_stream)
                .transform(
                    "Latency sink",
                    LatencySink {
                        latency_us: move |row: &(u64, u64, i64)| {
                            // A window the end of the input fired (no event
                            // at or after its end in some subtask) is no
                            // sample: -1.
                            let end_ms = row.2 + 10_000;
                            let passed = passed.lock().expect("boundary lock");
                            match passed.get(&end_ms) {
                                Some(&(subtasks, latest)) if subtasks == parallelism => {
                                    wall_us() - latest
                                }
                                _ => -1,
                            }
                        },
                        local: new_histogram(),
                        global: global.clone(),
                    },
                )
                .discard();
        }
    }
    let outcome = env.execute("nexmark latency").map_err(|e| anyhow!("{e}"))?;
    let histogram = global.lock().expect("histogram lock").clone();
    Ok(Run {
        events,
        elapsed: outcome.elapsed,
        histogram,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let queries = match args.query.as_deref() {
        None => vec![Q::Q1, Q::Q5],
        Some("q1") => vec![Q::Q1],
        Some("q5") => vec![Q::Q5],
        Some(other) => anyhow::bail!("--query: expected q1 or q5, found '{other}'"),
    };
    println!(
        "Nexmark latency, {} executors, buffer timeout {} us, {:.0}% of the maximum rate, \
         {:.0} s per run, median of {} runs; latencies in us",
        args.executors,
        args.buffer_timeout_us,
        args.load * 100.0,
        args.seconds,
        args.runs
    );
    for q in queries {
        let name = if q == Q::Q1 { "q1" } else { "q5" };
        let mut rates = Vec::new();
        for _ in 0..args.runs {
            let r = run(&args, q, args.max_events, None)?;
            rates.push(r.events as f64 / r.elapsed.as_secs_f64());
        }
        let max = median_f64(&rates);
        let rate = max * args.load;
        let events = (rate * args.seconds) as u64;
        let mut stats: Vec<[f64; 5]> = Vec::new();
        let mut achieved = Vec::new();
        for _ in 0..args.runs {
            let r = run(&args, q, events, Some(rate))?;
            let h = &r.histogram;
            achieved.push(r.events as f64 / r.elapsed.as_secs_f64());
            stats.push([
                h.value_at_quantile(0.5) as f64,
                h.value_at_quantile(0.99) as f64,
                h.value_at_quantile(0.999) as f64,
                h.max() as f64,
                h.len() as f64,
            ]);
        }
        let m: [f64; 5] =
            std::array::from_fn(|i| median_f64(&stats.iter().map(|s| s[i]).collect::<Vec<_>>()));
        let target = match q {
            Q::Q1 => "p99 < 1000 us",
            Q::Q5 => "p99 < 1000 us after the window end",
        };
        println!(
            "{name}: max {:.2} M events/s ({:.2} per core); offered {:.2} M/s, achieved {:.2} M/s; \
             p50 {:.0} p99 {:.0} p999 {:.0} max {:.0} ({:.0} rows) | {target}: {}",
            max / 1e6,
            max / 1e6 / args.executors as f64,
            rate / 1e6,
            median_f64(&achieved) / 1e6,
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            verdict(m[1] < 1000.0)
        );
    }
    Ok(())
}
