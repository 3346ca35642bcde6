//! Event-time windows against a plain computation over the same records:
//! tumbling and sliding windows, in-order and bounded out-of-order input, at
//! parallelism 1, 2 and 4.

use std::collections::BTreeMap;
use std::time::Duration;

use rheon::{EngineConfig, StreamEnv, TimeWindow, WatermarkStrategy, WindowAssigner};

/// (key, event time ms, value)
type Record = (u64, i64, u64);
/// (key, window start, window end, count, sum)
type Row = (u64, i64, i64, u64, u64);

fn record(i: u64, jitter_ms: i64) -> Record {
    let jitter = if jitter_ms > 0 {
        (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as i64 % jitter_ms
    } else {
        0
    };
    (i % 13, (i * 7 / 10) as i64 + jitter, i)
}

fn reference(n: u64, jitter_ms: i64, assigner: WindowAssigner) -> Vec<Row> {
    let mut windows: BTreeMap<(u64, i64, i64), (u64, u64)> = BTreeMap::new();
    for i in 0..n {
        let (key, ts, value) = record(i, jitter_ms);
        let starts: Vec<i64> = match assigner {
            WindowAssigner::Tumbling { size_ms } => vec![ts - ts.rem_euclid(size_ms)],
            WindowAssigner::Sliding { size_ms, slide_ms } => {
                let first = ts - ts.rem_euclid(slide_ms);
                (0..)
                    .map(|k| first - k * slide_ms)
                    .take_while(|s| *s > ts - size_ms)
                    .collect()
            }
        };
        let size = match assigner {
            WindowAssigner::Tumbling { size_ms } | WindowAssigner::Sliding { size_ms, .. } => {
                size_ms
            }
        };
        for start in starts {
            let e = windows.entry((key, start, start + size)).or_default();
            e.0 += 1;
            e.1 += value;
        }
    }
    windows
        .into_iter()
        .map(|((k, s, e), (c, v))| (k, s, e, c, v))
        .collect()
}

fn run(n: u64, jitter_ms: i64, assigner: WindowAssigner, parallelism: u32) -> Vec<Row> {
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(parallelism),
    );
    let out = env
        .generate(n, move |i| record(i, jitter_ms))
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(
            Duration::from_millis(jitter_ms as u64),
            |r: &Record| r.1,
        ))
        .key_by(|r: &Record| r.0)
        .window(assigner, |r: &Record| r.1)
        .aggregate(
            || (0u64, 0u64),
            |acc: &mut (u64, u64), r: &Record| {
                acc.0 += 1;
                acc.1 += r.2;
            },
            |key: &u64, w: TimeWindow, acc: (u64, u64)| (*key, w.start, w.end, acc.0, acc.1),
        )
        .collect();
    env.execute("windows").expect("job runs");
    let mut rows = out.take();
    rows.sort();
    rows
}

fn check(jitter_ms: i64, assigner: WindowAssigner) {
    let n = 30_000;
    let expected = reference(n, jitter_ms, assigner);
    for parallelism in [1, 2, 4] {
        let rows = run(n, jitter_ms, assigner, parallelism);
        assert_eq!(
            rows.len(),
            expected.len(),
            "{assigner:?} parallelism {parallelism}: number of windows"
        );
        assert_eq!(rows, expected, "{assigner:?} parallelism {parallelism}");
    }
}

#[test]
fn tumbling_windows_match_the_model() {
    check(0, WindowAssigner::tumbling(Duration::from_millis(100)));
}

#[test]
fn sliding_windows_match_the_model() {
    check(
        0,
        WindowAssigner::sliding(Duration::from_millis(100), Duration::from_millis(30)),
    );
}

#[test]
fn bounded_out_of_order_input_loses_nothing() {
    check(40, WindowAssigner::tumbling(Duration::from_millis(50)));
    check(
        40,
        WindowAssigner::sliding(Duration::from_millis(60), Duration::from_millis(20)),
    );
}

#[test]
fn records_later_than_the_bound_are_dropped() {
    // Bound 0 on a stream whose every other record is 500 ms in the past: the
    // late records are dropped, so the result differs from the full model.
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(1)
            .with_parallelism(1),
    );
    let out = env
        .generate(10_000, |i| {
            (
                0u64,
                (i * 10) as i64 - if i % 2 == 1 { 500 } else { 0 },
                1u64,
            )
        })
        .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(|r: &Record| r.1))
        .key_by(|r: &Record| r.0)
        .window(
            WindowAssigner::tumbling(Duration::from_millis(100)),
            |r: &Record| r.1,
        )
        .aggregate(
            || 0u64,
            |c: &mut u64, _r: &Record| *c += 1,
            |_k: &u64, _w: TimeWindow, c: u64| c,
        )
        .collect();
    env.execute("late").expect("job runs");
    let total: u64 = out.take().iter().sum();
    assert!(total >= 5_000, "on-time records are all counted");
    assert!(total < 10_000, "late records are dropped, got {total}");
}
