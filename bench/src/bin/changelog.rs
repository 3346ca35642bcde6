//! What logging changes costs a keyed sum's state per record, without the
//! engine (noisy host: modes interleaved in each round, medians).
//!
//! One thread, two `KeyGroupedMap<u64, u64>` over 128 key groups, each filled
//! with `--keys` keys (default 2^25, one subtask's half of the checkpoint
//! bench's 1 GiB). Each round runs `--records` upserts `(spread_key, +1)`,
//! key group computed per record as `key_by` does, on each map in turn:
//! - `plain`: no changelog;
//! - `logged`: the changelog on (one `(key, Some(value))` appended per
//!   record), taken every `--take-every` records (the checkpoint bench's one
//!   second at about 3 M records per second per subtask) and handed back at
//!   the take after next (`recycle_changelog`), as the engine does once the
//!   log's checkpoint completes; with `--drop-logs`, dropped instead, as the
//!   engine did before.
//!
//! Prints per round and mode the nanoseconds per record, then the medians and
//! the median of the per-round ratios logged / plain.
//!
//! What it showed (2026-11-22): logging cost +40-50% per record, and neither
//! the log's memory traffic nor its bookkeeping was the cost. With the log
//! confined to 48 KiB (always in L1), with one stream instead of one per key
//! group, and without the entry count and compaction check, the cost stayed
//! at +44-46%; with the changelog off on both maps they ran within 5%. The
//! cause was `Arc::make_mut` per write: its locked compare-exchange drains the
//! store buffer (longer with the log's stores), so consecutive records' cache
//! misses could not overlap. Since `KeyGroupedMap` skips it for key groups
//! known to be unique, logging costs +5.9% (medians of 5 rounds).
//!
//! On 2026-11-22 (evening) this loop, in 3-round runs minutes apart, gave
//! logging costs of +15%, +35% and +54% with recycled logs and +29%, +41%
//! and +50% with `--drop-logs`, the plain map alone 155 to 271 ns per record;
//! the loop before `--drop-logs` existed, on the same library, gave +6.9% and
//! -0.2% that evening. The host was far noisier than the difference between
//! recycled and dropped logs, which this bench did not resolve. (One run's
//! `smaps_rollup`: 2.0 of 3.25 GB in huge pages, so the two maps' tables are
//! not equally backed either.)

use std::time::Instant;

use clap::Parser;
use rheon_bench::{median_f64, spread_key};
use rheon_state::key_group::{assign_to_key_group, KeyGroupRange};
use rheon_state::keyed::KeyGroupedMap;

const MAX_PARALLELISM: u32 = 128;

#[derive(Parser)]
#[command(about = "Per-record cost of a keyed sum's changelog, against the same state without one")]
struct Args {
    #[arg(long, default_value_t = 1 << 25)]
    keys: u64,
    /// Upserts per round and mode.
    #[arg(long, default_value_t = 30_000_000)]
    records: u64,
    #[arg(long, default_value_t = 3_000_000)]
    take_every: u64,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Drop each taken log, as the engine did before it recycled them,
    /// instead of handing it back at the take after next.
    #[arg(long)]
    drop_logs: bool,
}

fn filled(keys: u64) -> KeyGroupedMap<u64, u64> {
    let mut map = KeyGroupedMap::new(KeyGroupRange::new(0, MAX_PARALLELISM - 1), MAX_PARALLELISM);
    for key in 0..keys {
        map.insert(assign_to_key_group(&key, MAX_PARALLELISM), key, 0);
    }
    map
}

/// Runs `records` upserts starting at record `first`; returns ns per record.
fn run(map: &mut KeyGroupedMap<u64, u64>, args: &Args, first: u64) -> f64 {
    let logged = map.has_changelog();
    let started = Instant::now();
    let mut checksum = 0u64;
    let mut written = None;
    for record in first..first + args.records {
        let key = spread_key(record, args.keys);
        let key_group = assign_to_key_group(&key, MAX_PARALLELISM);
        checksum = checksum.wrapping_add(*map.upsert(key_group, key, 1, |sum, one| *sum += one));
        if logged && (record - first + 1) % args.take_every == 0 {
            if let Some(log) = written.take() {
                map.recycle_changelog(log);
            }
            let log = map.take_changelog().expect("the map logs");
            checksum = checksum.wrapping_add(log.entries as u64);
            if !args.drop_logs {
                written = Some(log);
            }
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / args.records as f64;
    std::hint::black_box(checksum);
    ns
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.keys > 0 && args.take_every > 0,
        "--keys and --take-every must be positive"
    );
    let mut plain = filled(args.keys);
    let mut logged = filled(args.keys);
    logged.enable_changelog();
    let (mut plain_ns, mut logged_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // The same records for both maps in a round, new ones each round.
        let first = round as u64 * args.records;
        let (p, l) = if round % 2 == 0 {
            let p = run(&mut plain, &args, first);
            (p, run(&mut logged, &args, first))
        } else {
            let l = run(&mut logged, &args, first);
            (run(&mut plain, &args, first), l)
        };
        println!(
            "round {round}: plain {p:.1} ns/record, logged {l:.1} ns/record ({:+.1}%)",
            (l / p - 1.0) * 100.0
        );
        plain_ns.push(p);
        logged_ns.push(l);
        ratios.push(l / p);
    }
    println!(
        "{} keys, take every {} records: plain {:.1} ns/record, logged {:.1} ns/record (medians of {}); logging costs {:+.1}% per record (median of the rounds' ratios)",
        args.keys,
        args.take_every,
        median_f64(&plain_ns),
        median_f64(&logged_ns),
        args.rounds,
        (median_f64(&ratios) - 1.0) * 100.0
    );
    Ok(())
}
