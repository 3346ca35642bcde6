//! Two-input operators against plain models: connect with a co-map and a
//! keyed co-process function (shared state, timers), window joins and
//! interval joins, at several parallelisms.

use std::collections::BTreeMap;
use std::time::Duration;

use rheon::{
    DataStream, Emitter, EngineConfig, KeyedCoProcessFunction, KeyedContext, StreamEnv, TimeDomain,
    TimeWindow, ValueStateRef, WatermarkStrategy, WindowAssigner,
};

fn env(parallelism: u32) -> StreamEnv {
    StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(parallelism),
    )
}

/// (key, event time ms, id)
type Rec = (u64, i64, u64);

fn left(i: u64) -> Rec {
    let jitter = ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % 10) as i64;
    (i % 17, (i * 3) as i64 + jitter, i)
}

fn right(i: u64) -> Rec {
    let jitter = ((i.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) >> 40) % 10) as i64;
    (i % 13, (i * 5) as i64 + jitter, 1_000_000 + i)
}

const N_LEFT: u64 = 6_000;
const N_RIGHT: u64 = 3_600;

fn streams(env: &StreamEnv) -> (DataStream<Rec>, DataStream<Rec>) {
    let strategy =
        || WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(10), |r: &Rec| r.1);
    (
        env.generate(N_LEFT, left)
            .assign_timestamps_and_watermarks(strategy()),
        env.generate(N_RIGHT, right)
            .assign_timestamps_and_watermarks(strategy()),
    )
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn co_map_sees_both_inputs_once() {
    let mut expected: Vec<u64> = (0..N_LEFT).map(|i| left(i).2).collect();
    expected.extend((0..N_RIGHT).map(|i| right(i).2 * 10));
    expected.sort();
    for parallelism in [1, 2] {
        let env = env(parallelism);
        let (a, b) = streams(&env);
        let out = a
            .connect(&b.rebalance())
            .map(|a: Rec| a.2, |b: Rec| b.2 * 10)
            .collect();
        env.execute("co-map").expect("job runs");
        assert_eq!(sorted(out.take()), expected, "parallelism {parallelism}");
    }
}

/// Counts each input's records per key in one shared state; an event-time
/// timer past every record emits the counts at the end.
#[derive(Clone)]
struct CountBoth;

impl KeyedCoProcessFunction<u64, Rec, Rec, (u64, u64, u64)> for CountBoth {
    type State = (u64, u64);

    fn process_element1(
        &mut self,
        _key: &u64,
        _a: Rec,
        state: &mut ValueStateRef<'_, (u64, u64)>,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Emitter<'_, (u64, u64, u64)>,
    ) {
        let (a, b) = state.value().copied().unwrap_or_default();
        state.update((a + 1, b));
        ctx.register_event_time_timer(1 << 40);
    }

    fn process_element2(
        &mut self,
        _key: &u64,
        _b: Rec,
        state: &mut ValueStateRef<'_, (u64, u64)>,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Emitter<'_, (u64, u64, u64)>,
    ) {
        let (a, b) = state.value().copied().unwrap_or_default();
        state.update((a, b + 1));
        ctx.register_event_time_timer(1 << 40);
    }

    fn on_timer(
        &mut self,
        key: &u64,
        _timestamp: i64,
        domain: TimeDomain,
        state: &mut ValueStateRef<'_, (u64, u64)>,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, (u64, u64, u64)>,
    ) {
        assert_eq!(domain, TimeDomain::EventTime);
        let (a, b) = state.value().copied().unwrap_or_default();
        out.emit((*key, a, b));
    }
}

#[test]
fn keyed_co_process_shares_state_and_timers_across_inputs() {
    let mut counts: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for i in 0..N_LEFT {
        counts.entry(left(i).0).or_default().0 += 1;
    }
    for i in 0..N_RIGHT {
        counts.entry(right(i).0).or_default().1 += 1;
    }
    let expected: Vec<_> = counts.into_iter().map(|(k, (a, b))| (k, a, b)).collect();
    for parallelism in [1, 2, 4] {
        let env = env(parallelism);
        let (a, b) = streams(&env);
        let out = a
            .key_by(|r: &Rec| r.0)
            .connect(&b.key_by(|r: &Rec| r.0))
            .process(CountBoth)
            .collect();
        env.execute("co-process").expect("job runs");
        assert_eq!(sorted(out.take()), expected, "parallelism {parallelism}");
    }
}

#[test]
fn window_join_pairs_equal_keys_in_the_same_window() {
    let size = 100;
    let mut expected = Vec::new();
    for i in 0..N_LEFT {
        let a = left(i);
        for j in 0..N_RIGHT {
            let b = right(j);
            if a.0 == b.0 && a.1.div_euclid(size) == b.1.div_euclid(size) {
                expected.push((a.2, b.2, a.1 - a.1.rem_euclid(size)));
            }
        }
    }
    expected.sort();
    assert!(expected.len() > 1_000);
    for parallelism in [1, 2] {
        let env = env(parallelism);
        let (a, b) = streams(&env);
        let out = a
            .join(&b)
            .key_by(|a: &Rec| a.0, |b: &Rec| b.0)
            .window(
                WindowAssigner::tumbling(Duration::from_millis(size as u64)),
                |a: &Rec| a.1,
                |b: &Rec| b.1,
            )
            .process(
                |_k: &u64,
                 w: TimeWindow,
                 a: &Rec,
                 b: &Rec,
                 out: &mut Emitter<'_, (u64, u64, i64)>| {
                    out.emit((a.2, b.2, w.start))
                },
            )
            .collect();
        env.execute("window join").expect("job runs");
        assert_eq!(sorted(out.take()), expected, "parallelism {parallelism}");
    }
}

#[test]
fn interval_join_pairs_records_within_the_bounds() {
    let (lower, upper) = (-20, 30);
    let mut expected = Vec::new();
    for i in 0..N_LEFT {
        let a = left(i);
        for j in 0..N_RIGHT {
            let b = right(j);
            if a.0 == b.0 && b.1 >= a.1 + lower && b.1 <= a.1 + upper {
                expected.push((a.2, b.2));
            }
        }
    }
    expected.sort();
    assert!(expected.len() > 1_000);
    for parallelism in [1, 2, 4] {
        let env = env(parallelism);
        let (a, b) = streams(&env);
        let out = a
            .key_by(|r: &Rec| r.0)
            .interval_join(&b.key_by(|r: &Rec| r.0), |a: &Rec| a.1, |b: &Rec| b.1)
            .between(lower, upper)
            .process(|a: &Rec, b: &Rec, out: &mut Emitter<'_, (u64, u64)>| out.emit((a.2, b.2)))
            .collect();
        env.execute("interval join").expect("job runs");
        assert_eq!(sorted(out.take()), expected, "parallelism {parallelism}");
    }
}
