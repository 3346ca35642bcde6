//! Windows against a plain computation over the same records: tumbling,
//! sliding and session windows with aggregate, reduce and process functions,
//! in-order and bounded out-of-order input, at parallelism 1, 2 and 4;
//! allowed lateness and the late-data side output against a replay of the
//! watermark; processing-time windows fired by the clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rheon::{
    Emitter, EngineConfig, LateData, StreamEnv, TimeWindow, WatermarkStrategy, WindowAssigner,
};

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
            WindowAssigner::Session { .. } => unreachable!("sessions have their own model"),
        };
        let size = match assigner {
            WindowAssigner::Tumbling { size_ms } | WindowAssigner::Sliding { size_ms, .. } => {
                size_ms
            }
            WindowAssigner::Session { .. } => unreachable!(),
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
            |key: &u64, w: TimeWindow, acc: &(u64, u64)| (*key, w.start, w.end, acc.0, acc.1),
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
            |_k: &u64, _w: TimeWindow, c: &u64| *c,
        )
        .collect();
    env.execute("late").expect("job runs");
    let total: u64 = out.take().iter().sum();
    assert!(total >= 5_000, "on-time records are all counted");
    assert!(total < 10_000, "late records are dropped, got {total}");
}

fn env(executors: usize, parallelism: u32) -> StreamEnv {
    StreamEnv::new(
        EngineConfig::default()
            .with_executors(executors)
            .with_parallelism(parallelism),
    )
}

/// Bursts per key: records of a burst are 0-9 ms apart (with jitter), bursts
/// 200 ms apart, so a 50 ms session gap cuts exactly at the bursts whatever
/// the arrival order.
fn session_record(i: u64) -> Record {
    let key = i % 7;
    let n = i / 7;
    let burst = n / 20;
    let jitter = ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % 9) as i64;
    (key, (burst * 200) as i64 + (n % 20) as i64 * 2 + jitter, i)
}

/// Sessions by merging: per key, sort by time and cut where the next record
/// is a gap or more after the current session's end.
fn session_reference(n: u64, gap: i64) -> Vec<Row> {
    let mut per_key: BTreeMap<u64, Vec<(i64, u64)>> = BTreeMap::new();
    for i in 0..n {
        let (k, ts, v) = session_record(i);
        per_key.entry(k).or_default().push((ts, v));
    }
    let mut rows = Vec::new();
    for (k, mut records) in per_key {
        records.sort();
        let mut current: Option<(i64, i64, u64, u64)> = None;
        for (ts, v) in records {
            current = match current {
                Some((s, e, c, sum)) if ts <= e => Some((s, e.max(ts + gap), c + 1, sum + v)),
                Some((s, e, c, sum)) => {
                    rows.push((k, s, e, c, sum));
                    Some((ts, ts + gap, 1, v))
                }
                None => Some((ts, ts + gap, 1, v)),
            };
        }
        if let Some((s, e, c, sum)) = current {
            rows.push((k, s, e, c, sum));
        }
    }
    rows.sort();
    rows
}

#[test]
fn session_windows_merge_like_the_model() {
    let n = 20_000;
    let gap = 50;
    let expected = session_reference(n, gap);
    assert!(expected.len() > 100, "the data has many sessions");
    for parallelism in [1, 2, 4] {
        let env = env(2, parallelism);
        let out = env
            .generate(n, session_record)
            .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(
                Duration::from_millis(10),
                |r: &Record| r.1,
            ))
            .key_by(|r: &Record| r.0)
            .window(
                WindowAssigner::session(Duration::from_millis(gap as u64)),
                |r: &Record| r.1,
            )
            .aggregate_with_merge(
                || (0u64, 0u64),
                |acc: &mut (u64, u64), r: &Record| {
                    acc.0 += 1;
                    acc.1 += r.2;
                },
                |a: (u64, u64), b: (u64, u64)| (a.0 + b.0, a.1 + b.1),
                |key: &u64, w: TimeWindow, acc: &(u64, u64)| (*key, w.start, w.end, acc.0, acc.1),
            )
            .collect();
        env.execute("sessions").expect("job runs");
        assert_eq!(sorted(out.take()), expected, "parallelism {parallelism}");
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn reduce_and_process_window_functions_match_the_model() {
    let n = 20_000;
    let assigner = WindowAssigner::sliding(Duration::from_millis(80), Duration::from_millis(40));
    let expected = reference(n, 20, assigner);
    for parallelism in [1, 2] {
        let env = env(2, parallelism);
        let keyed = env
            .generate(n, |i| record(i, 20))
            .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(
                Duration::from_millis(20),
                |r: &Record| r.1,
            ))
            .key_by(|r: &Record| r.0);
        // reduce: the sum of values (the record's other fields are the first's).
        let sums = keyed
            .window(assigner, |r: &Record| r.1)
            .reduce(|a: Record, b: Record| (a.0, a.1, a.2 + b.2))
            .map(|r: Record| (r.0, r.2))
            .collect();
        // process: all records of the window at once.
        let full = keyed
            .window(assigner, |r: &Record| r.1)
            .process(
                |key: &u64, w: TimeWindow, records: &[Record], out: &mut Emitter<'_, Row>| {
                    let sum = records.iter().map(|r| r.2).sum();
                    assert!(records.iter().all(|r| r.1 >= w.start && r.1 < w.end));
                    out.emit((*key, w.start, w.end, records.len() as u64, sum));
                },
            )
            .collect();
        env.execute("reduce and process").expect("job runs");
        assert_eq!(sorted(full.take()), expected, "process, p={parallelism}");
        let expected_sums: Vec<(u64, u64)> = sorted(expected.iter().map(|r| (r.0, r.4)).collect());
        assert_eq!(
            sorted(sums.take()),
            expected_sums,
            "reduce, p={parallelism}"
        );
    }
}

/// Replays the watermark of a single in-order channel: the window task sees
/// record i, then the watermark `max timestamp - 1` (a monotonous strategy).
/// Returns (results, late records).
fn lateness_reference(records: &[Record], size: i64, lateness: i64) -> (Vec<Row>, Vec<Record>) {
    let mut windows: BTreeMap<(i64, u64), (u64, u64)> = BTreeMap::new();
    let mut fired: Vec<(i64, u64)> = Vec::new();
    let mut results = Vec::new();
    let mut late = Vec::new();
    let mut watermark = i64::MIN;
    for &(key, ts, value) in records {
        let start = ts - ts.rem_euclid(size);
        let max_ts = start + size - 1;
        if max_ts + lateness <= watermark {
            late.push((key, ts, value));
        } else {
            let acc = windows.entry((start, key)).or_default();
            acc.0 += 1;
            acc.1 += value;
            if max_ts <= watermark {
                // Fires on the record; its regular firing time has passed.
                results.push((key, start, start + size, acc.0, acc.1));
                if !fired.contains(&(start, key)) {
                    fired.push((start, key));
                }
            }
        }
        if ts - 1 > watermark {
            watermark = ts - 1;
            for (&(start, key), acc) in &windows {
                let max_ts = start + size - 1;
                if max_ts <= watermark && !fired.contains(&(start, key)) {
                    fired.push((start, key));
                    results.push((key, start, start + size, acc.0, acc.1));
                }
            }
            windows.retain(|&(start, _), _| start + size - 1 + lateness > watermark);
        }
    }
    for (&(start, key), acc) in &windows {
        if !fired.contains(&(start, key)) {
            results.push((key, start, start + size, acc.0, acc.1));
        }
    }
    results.sort();
    late.sort();
    (results, late)
}

#[test]
fn allowed_lateness_refires_windows_and_late_records_reach_the_side_output() {
    // Mostly increasing time, every fifth record 0-300 ms in the past.
    let records: Vec<Record> = (0..3_000u64)
        .map(|i| {
            let back = if i % 5 == 4 {
                ((i * 37) % 300) as i64
            } else {
                0
            };
            (i % 3, (i * 4) as i64 - back, i)
        })
        .collect();
    let (size, lateness) = (100, 150);
    let (expected, expected_late) = lateness_reference(&records, size, lateness);
    assert!(!expected_late.is_empty(), "some records are too late");
    assert!(
        expected.len() > 3 * 3_000 * 4 / 100 / 3,
        "late firings add results"
    );
    let env = env(1, 1);
    let late = LateData::new();
    let results = env
        .from_collection(records)
        .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(|r: &Record| r.1))
        .key_by(|r: &Record| r.0)
        .window(
            WindowAssigner::tumbling(Duration::from_millis(size as u64)),
            |r: &Record| r.1,
        )
        .allowed_lateness(Duration::from_millis(lateness as u64))
        .side_output_late_data(&late)
        .aggregate(
            || (0u64, 0u64),
            |acc: &mut (u64, u64), r: &Record| {
                acc.0 += 1;
                acc.1 += r.2;
            },
            |key: &u64, w: TimeWindow, acc: &(u64, u64)| (*key, w.start, w.end, acc.0, acc.1),
        )
        .collect();
    let late_records = late.stream().collect();
    env.execute("lateness").expect("job runs");
    assert_eq!(sorted(results.take()), expected);
    assert_eq!(sorted(late_records.take()), expected_late);
}

#[test]
fn processing_time_windows_fire_on_the_clock() {
    // 600 records over about 600 ms into 100 ms processing-time windows.
    let env = env(2, 2);
    let started = Instant::now();
    let out = env
        .generate_with_rate(600, 1_000.0, |i| (i % 4, 0i64, 1u64))
        .key_by(|r: &Record| r.0)
        .window_processing_time(WindowAssigner::tumbling(Duration::from_millis(100)))
        .aggregate(
            || 0u64,
            |c: &mut u64, _r: &Record| *c += 1,
            |key: &u64, w: TimeWindow, c: &u64| (*key, w.start, w.end, *c),
        )
        .map(move |(key, start, end, count): (u64, i64, i64, u64)| {
            (key, start, end, count, started.elapsed().as_millis() as u64)
        })
        .collect();
    env.execute("processing time").expect("job runs");
    let rows = out.take();
    let total: u64 = rows.iter().map(|r| r.3).sum();
    assert_eq!(total, 600, "every record is in exactly one window");
    assert!(rows.iter().all(|r| r.2 - r.1 == 100 && r.1 % 100 == 0));
    assert!(
        rows.len() >= 4 * 3,
        "the clock cut the run into several windows per key: {rows:?}"
    );
    // Fired by the clock during the run, not all at the end of input.
    let first = rows.iter().map(|r| r.4).min().unwrap();
    let last = rows.iter().map(|r| r.4).max().unwrap();
    assert!(
        last - first >= 200,
        "results arrived between {first} and {last} ms"
    );
}
