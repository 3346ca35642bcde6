//! Timers in keyed process functions (event time and processing time) and
//! idle sources that stop holding the watermark back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rheon::{
    Emitter, EngineConfig, KeyedContext, KeyedProcessFunction, OperatorContext, SourceFunction,
    SourcePoll, StreamEnv, TimeDomain, TimeWindow, ValueStateRef, WatermarkStrategy,
    WindowAssigner,
};

fn env(executors: usize, parallelism: u32) -> StreamEnv {
    StreamEnv::new(
        EngineConfig::default()
            .with_executors(executors)
            .with_parallelism(parallelism),
    )
}

/// (key, event time ms)
type Record = (u64, i64);

fn record(i: u64) -> Record {
    let jitter = ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % 30) as i64;
    (i % 11, (i / 2) as i64 + jitter)
}

/// Counts per 100 ms bucket with event-time timers: a timer at the end of
/// the bucket emits the bucket's count. Also registers, then deletes, a
/// timer that must never fire.
#[derive(Clone)]
struct BucketCounts;

impl KeyedProcessFunction<u64, Record, (u64, i64, u64)> for BucketCounts {
    type State = BTreeMap<i64, u64>;

    fn process_element(
        &mut self,
        _key: &u64,
        (_, ts): Record,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Emitter<'_, (u64, i64, u64)>,
    ) {
        assert!(ts > ctx.current_watermark(), "no record is late here");
        let bucket = ts - ts.rem_euclid(100);
        if state.value().is_none() {
            state.update(BTreeMap::new());
        }
        *state.value_mut().unwrap().entry(bucket).or_default() += 1;
        ctx.register_event_time_timer(bucket + 99);
        ctx.register_event_time_timer(bucket + 98);
        ctx.delete_event_time_timer(bucket + 98);
    }

    fn on_timer(
        &mut self,
        key: &u64,
        timestamp: i64,
        domain: TimeDomain,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, (u64, i64, u64)>,
    ) {
        assert_eq!(domain, TimeDomain::EventTime);
        assert!(ctx.current_watermark() >= timestamp);
        assert_eq!(timestamp % 100, 99, "the deleted timer never fires");
        let buckets = state.value_mut().expect("a timer comes with state");
        let count = buckets.remove(&(timestamp - 99)).unwrap_or(0);
        out.emit((*key, timestamp - 99, count));
        if buckets.is_empty() {
            state.clear();
        }
    }
}

#[test]
fn event_time_timers_fire_once_per_key_and_time_in_order_with_the_watermark() {
    let n = 20_000;
    let mut expected: BTreeMap<(u64, i64), u64> = BTreeMap::new();
    for i in 0..n {
        let (k, ts) = record(i);
        *expected.entry((k, ts - ts.rem_euclid(100))).or_default() += 1;
    }
    let expected: Vec<(u64, i64, u64)> =
        expected.into_iter().map(|((k, b), c)| (k, b, c)).collect();
    for parallelism in [1, 2, 4] {
        let env = env(2, parallelism);
        let out = env
            .generate(n, record)
            .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(
                Duration::from_millis(30),
                |r: &Record| r.1,
            ))
            .key_by(|r: &Record| r.0)
            .process(BucketCounts)
            .collect();
        env.execute("event-time timers").expect("job runs");
        let mut rows = out.take();
        rows.sort();
        assert_eq!(rows, expected, "parallelism {parallelism}");
    }
}

/// On a key's first record, asks for a processing-time timer 20 ms later;
/// the timer emits the key and the records seen by then.
#[derive(Clone)]
struct FirstSeen;

impl KeyedProcessFunction<u64, Record, (u64, u64)> for FirstSeen {
    type State = u64;

    fn process_element(
        &mut self,
        _key: &u64,
        _record: Record,
        state: &mut ValueStateRef<'_, u64>,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Emitter<'_, (u64, u64)>,
    ) {
        let seen = state.value().copied().unwrap_or(0);
        if seen == 0 {
            ctx.register_processing_time_timer(ctx.current_processing_time() + 20);
        }
        state.update(seen + 1);
    }

    fn on_timer(
        &mut self,
        key: &u64,
        timestamp: i64,
        domain: TimeDomain,
        state: &mut ValueStateRef<'_, u64>,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, (u64, u64)>,
    ) {
        assert_eq!(domain, TimeDomain::ProcessingTime);
        assert!(ctx.current_processing_time() >= timestamp);
        out.emit((*key, state.value().copied().unwrap_or(0)));
    }
}

#[test]
fn processing_time_timers_fire_on_the_clock_while_records_flow() {
    // 400 records over about 400 ms, 4 keys: each key's timer is due 20 ms
    // after its first record, long before the input ends.
    let env = env(2, 2);
    let out = env
        .generate_with_rate(400, 1_000.0, |i| (i % 4, 0))
        .key_by(|r: &Record| r.0)
        .process(FirstSeen)
        .collect();
    env.execute("processing-time timers").expect("job runs");
    let mut rows = out.take();
    rows.sort();
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "each key's timer fired once: {rows:?}"
    );
    assert!(
        rows.iter().all(|r| r.1 < 100),
        "fired during the run, not at its end: {rows:?}"
    );
}

/// Emits one record, then nothing until `release` is set (or 10 s pass).
struct SilentSource {
    sent: bool,
    release: Arc<AtomicBool>,
    released_by_result: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl SourceFunction<Record> for SilentSource {
    fn open(&mut self, _ctx: &OperatorContext) -> Result<(), String> {
        self.deadline = Some(Instant::now() + Duration::from_secs(10));
        Ok(())
    }

    fn poll_next(&mut self) -> Result<SourcePoll<Record>, String> {
        if !self.sent {
            self.sent = true;
            return Ok(SourcePoll::Record((99, 0)));
        }
        if self.release.load(Ordering::Relaxed) {
            self.released_by_result.store(true, Ordering::Relaxed);
            return Ok(SourcePoll::End);
        }
        if Instant::now() >= self.deadline.expect("opened") {
            return Ok(SourcePoll::End);
        }
        Ok(SourcePoll::Wait(Instant::now() + Duration::from_millis(5)))
    }
}

#[test]
fn an_idle_source_stops_holding_the_watermark_back() {
    // A busy source unioned with one that goes silent after one record: the
    // windows of the busy one fire only if the silent one is marked idle.
    let release = Arc::new(AtomicBool::new(false));
    let released_by_result = Arc::new(AtomicBool::new(false));
    let env = env(2, 1);
    let strategy = |r: &Record| r.1;
    let (rel, by_result) = (release.clone(), released_by_result.clone());
    let silent = env
        .add_source("silent", move || SilentSource {
            sent: false,
            release: rel.clone(),
            released_by_result: by_result.clone(),
            deadline: None,
        })
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::monotonous(strategy).with_idleness(Duration::from_millis(50)),
        );
    let busy = env
        .generate_with_rate(3_000, 3_000.0, |i| (i % 3, i as i64))
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::monotonous(strategy).with_idleness(Duration::from_millis(50)),
        );
    let flag = release.clone();
    let out = busy
        .union(silent)
        .key_by(|r: &Record| r.0)
        .window(
            WindowAssigner::tumbling(Duration::from_millis(100)),
            |r: &Record| r.1,
        )
        .aggregate(
            || 0u64,
            |c: &mut u64, _r: &Record| *c += 1,
            |k: &u64, w: TimeWindow, c: &u64| (*k, w.start, *c),
        )
        .map(move |row: (u64, i64, u64)| {
            flag.store(true, Ordering::Relaxed);
            row
        })
        .collect();
    let started = Instant::now();
    env.execute("idle source").expect("job runs");
    assert!(
        released_by_result.load(Ordering::Relaxed),
        "a window fired while the silent source was still running (took {:?})",
        started.elapsed()
    );
    let rows = out.take();
    let total: u64 = rows.iter().map(|r| r.2).sum();
    assert_eq!(total, 3_001, "no record lost");
}
