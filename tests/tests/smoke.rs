//! Whole-engine checks that do not fit the model tests: more executors than
//! cores, and partial buffers leaving on the buffer timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rheon::{EngineConfig, StreamEnv};

fn final_sums(updates: Vec<(u64, u64)>) -> std::collections::BTreeMap<u64, u64> {
    let mut finals = std::collections::BTreeMap::new();
    for (k, v) in updates {
        let e = finals.entry(k).or_insert(0);
        *e = (*e).max(v);
    }
    finals
}

#[test]
fn more_executors_than_cores() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for executors in [cores + 1, 2 * cores + 1] {
        let env = StreamEnv::new(
            EngineConfig::default()
                .with_executors(executors)
                .with_parallelism(executors as u32),
        );
        let out = env
            .generate(20_000, |i| (i % 13, 1u64))
            .key_by(|r: &(u64, u64)| r.0)
            .sum(|r: &(u64, u64)| r.1)
            .collect();
        env.execute("many executors").expect("job runs");
        let finals = final_sums(out.take());
        assert_eq!(finals.len(), 13, "{executors} executors");
        assert_eq!(
            finals.values().sum::<u64>(),
            20_000,
            "{executors} executors"
        );
    }
}

/// Nanoseconds since the test's start, readable from every executor thread.
fn since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[test]
fn partial_buffers_leave_on_the_buffer_timeout() {
    // 100 records at 200/s: the source runs for half a second, and no buffer
    // ever fills (100 records of 16 bytes). Without the timeout the first
    // record would reach the sink only with end-of-partition.
    let first_arrival = Arc::new(AtomicU64::new(u64::MAX));
    let seen = first_arrival.clone();
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(2)
            .with_buffer_timeout(Duration::from_millis(5)),
    );
    since_start();
    env.generate_with_rate(100, 200.0, |i| (i, since_start()))
        .rebalance()
        .map(move |r: (u64, u64)| {
            seen.fetch_min(since_start(), Ordering::Relaxed);
            r
        })
        .discard();
    let started = since_start();
    env.execute("trickle").expect("job runs");
    let ended = since_start();
    let first = first_arrival.load(Ordering::Relaxed);
    assert!(first != u64::MAX, "no record arrived");
    assert!(
        ended - started > 400_000_000,
        "the rate limit held the source for ~0.5 s"
    );
    assert!(
        first - started < 250_000_000,
        "first record arrived {} ms after the start of a {} ms job: partial buffers were not flushed on the timeout",
        (first - started) / 1_000_000,
        (ended - started) / 1_000_000
    );
}
