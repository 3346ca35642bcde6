//! Nexmark generator throughput on one thread, without the engine: `Generator::event`
//! in a loop, each event's address passed to `black_box`, then the event dropped. Prints the median of
//! `--runs` runs in events/s and ns/event for all events (the 1 : 3 : 46 mix) and for
//! bids only (the event numbers of bids, skipping the others), next to the budget of a
//! whole q0 pipeline at the target of 10 M events/s per core (100 ns/event). Also
//! prints the thread's CPU time per event (from `/proc/thread-self/schedstat`, Linux),
//! which other processes sharing the core do not inflate as they do wall time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Parser;
use rheon::nexmark::generator::EventKind;
use rheon::nexmark::{Generator, GeneratorConfig};
use rheon_bench::median_duration;

#[derive(Parser, Debug)]
#[command(about = "Nexmark event generator throughput on one thread")]
struct Args {
    /// Events per run (all events; the bid-only run times the bids among them).
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// Runs per case; the median is printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// CPU time this thread has run, if the kernel reports it.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

struct Run {
    wall: Duration,
    cpu: Option<Duration>,
    generated: u64,
}

/// Generates the events `0..events` (only bids when `bids_only`).
fn run_once(g: &Generator, events: u64, bids_only: bool) -> Run {
    let config = g.config();
    // The kinds of one proportion cycle (the kind of `n` is that of
    // `n % total_proportion()`), so that skipping non-bids costs no division.
    let cycle: Vec<EventKind> = (0..config.total_proportion())
        .map(|offset| config.event_kind(offset))
        .collect();
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    let mut generated = 0u64;
    let mut offset = 0;
    for n in 0..events {
        let kind = cycle[offset];
        offset = if offset + 1 == cycle.len() {
            0
        } else {
            offset + 1
        };
        if bids_only && kind != EventKind::Bid {
            continue;
        }
        let event = g.event(black_box(n));
        black_box(&event);
        generated += 1;
    }
    let wall = start.elapsed();
    let cpu = thread_cpu_time()
        .zip(cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    Run {
        wall,
        cpu,
        generated,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let g = Generator::new(GeneratorConfig {
        seed: args.seed,
        ..GeneratorConfig::default()
    })
    .map_err(anyhow::Error::msg)?;
    // Builds the shared pools and warms the caches outside the timed runs.
    run_once(&g, 100_000, false);
    println!(
        "Nexmark generator, one thread, {} event numbers per run, median of {} runs",
        args.events, args.runs
    );
    println!(
        "{:<12} {:>10} {:>10} {:>12} {:>10} {:>14} {:>12}",
        "case", "events", "median s", "M events/s", "ns/event", "CPU ns/event", "budget ns"
    );
    for (name, bids_only) in [("all events", false), ("bids only", true)] {
        let runs: Vec<Run> = (0..args.runs.max(1))
            .map(|_| run_once(&g, args.events, bids_only))
            .collect();
        let generated = runs[0].generated;
        let wall = median_duration(&runs.iter().map(|r| r.wall).collect::<Vec<_>>());
        let cpu: Option<Vec<Duration>> = runs.iter().map(|r| r.cpu).collect();
        let cpu_ns = cpu.map_or("n/a".to_owned(), |c| {
            format!(
                "{:.1}",
                median_duration(&c).as_secs_f64() * 1e9 / generated as f64
            )
        });
        let per_s = generated as f64 / wall.as_secs_f64();
        println!(
            "{:<12} {:>10} {:>10.3} {:>12.2} {:>10.1} {:>14} {:>12}",
            name,
            generated,
            wall.as_secs_f64(),
            per_s / 1e6,
            1e9 / per_s,
            cpu_ns,
            100
        );
    }
    Ok(())
}
