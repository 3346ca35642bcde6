//! Watermarks travel in-band with the data: tasks combine their input
//! channels' watermarks as the minimum, forward them through chains and
//! exchanges (also while backpressured), and a bounded input ends with the
//! maximum watermark. Checked by an operator that counts late records.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rheon::{Emitter, EngineConfig, OneInputOperator, StreamEnv, WatermarkStrategy, WATERMARK_MAX};

type Record = (u64, i64);

/// What one subtask of the checker saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    records: u64,
    late: u64,
    watermarks: Vec<i64>,
}

#[derive(Clone)]
struct LateCheck {
    current: i64,
    seen: Seen,
    slow_first: u64,
    all: Arc<Mutex<Vec<Seen>>>,
}

impl OneInputOperator<Record, Record> for LateCheck {
    fn process(&mut self, record: Record, out: &mut Emitter<'_, Record>) {
        if self.seen.records < self.slow_first {
            // Backpressure early on, so watermarks meet parked records.
            std::thread::sleep(Duration::from_micros(300));
        }
        self.seen.records += 1;
        if record.1 <= self.current {
            self.seen.late += 1;
        }
        out.emit(record);
    }
    fn on_watermark(&mut self, watermark: i64, _out: &mut Emitter<'_, Record>) {
        self.seen.watermarks.push(watermark);
        self.current = watermark;
    }
    fn finish(&mut self, _out: &mut Emitter<'_, Record>) {
        self.all.lock().unwrap().push(self.seen.clone());
    }
}

/// A fast source far ahead in event time and a slow, rate-limited one behind
/// it, unioned and exchanged: with the minimum rule nothing is late; with any
/// other rule the slow source's records would be.
fn run(keyed: bool) -> Vec<Seen> {
    let mut config = EngineConfig::default()
        .with_executors(2)
        .with_parallelism(2)
        .with_segments_per_executor(96);
    config.buffer_timeout = Duration::from_millis(1);
    let env = StreamEnv::new(config);
    let fast = env
        .generate(200_000, |i| (i, 1_000_000 + i as i64))
        .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(|r: &Record| r.1));
    let slow = env
        .generate_with_rate(300, 3000.0, |i| (i, i as i64))
        .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(|r: &Record| r.1));
    let all = Arc::new(Mutex::new(Vec::new()));
    let check = LateCheck {
        current: i64::MIN,
        seen: Seen::default(),
        slow_first: 200,
        all: all.clone(),
    };
    let merged = fast.union(slow);
    let checked = if keyed {
        merged
            .key_by(|r: &Record| r.0 % 97)
            .into_stream()
            .transform("late check", check)
    } else {
        merged.rebalance().transform("late check", check)
    };
    checked.discard();
    env.execute("watermarks").expect("job runs");
    let seen = all.lock().unwrap().clone();
    seen
}

fn check(seen: &[Seen]) {
    assert_eq!(seen.len(), 2, "one report per checker subtask");
    assert_eq!(seen.iter().map(|s| s.records).sum::<u64>(), 200_300);
    for s in seen {
        assert_eq!(
            s.late, 0,
            "late records: a watermark overtook data or ignored a slower input: {s:?}"
        );
        assert!(
            s.watermarks.windows(2).all(|w| w[0] < w[1]),
            "watermarks must only advance"
        );
        assert_eq!(
            s.watermarks.last(),
            Some(&WATERMARK_MAX),
            "a bounded input ends with the maximum watermark"
        );
        assert!(
            s.watermarks.len() > 2,
            "watermarks arrive while data flows, not only at the end: {:?}",
            s.watermarks
        );
        // While the slow input runs, the watermark cannot pass its timestamps.
        assert!(
            s.watermarks[0] < 300,
            "the first watermark {} ignores the slow input",
            s.watermarks[0]
        );
    }
}

#[test]
fn watermarks_take_the_minimum_across_a_rebalance() {
    check(&run(false));
}

#[test]
fn watermarks_take_the_minimum_across_a_keyed_exchange() {
    check(&run(true));
}

/// Counts watermarks; slow on the first ones, so its input ring fills up.
#[derive(Clone)]
struct SlowWatermarks {
    seen: Seen,
    all: Arc<Mutex<Vec<Seen>>>,
}

impl OneInputOperator<Record, Record> for SlowWatermarks {
    fn process(&mut self, record: Record, out: &mut Emitter<'_, Record>) {
        self.seen.records += 1;
        out.emit(record);
    }
    fn on_watermark(&mut self, watermark: i64, _out: &mut Emitter<'_, Record>) {
        if self.seen.watermarks.len() < 20 {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.seen.watermarks.push(watermark);
    }
    fn finish(&mut self, _out: &mut Emitter<'_, Record>) {
        self.all.lock().unwrap().push(self.seen.clone());
    }
}

/// A source that advances event time with every record, every record
/// filtered out before an exchange, and a slow consumer: the chain sends
/// only watermarks, which take no credit. They must not pile up at the
/// sender (it once panicked past 65 536 queued envelopes); the consumer
/// still sees advancing watermarks ending with the maximum.
#[test]
fn watermarks_alone_through_a_slow_exchange() {
    let config = EngineConfig::default()
        .with_executors(2)
        .with_parallelism(1);
    let env = StreamEnv::new(config);
    let all = Arc::new(Mutex::new(Vec::new()));
    env.generate(300_000, |i| (i, i as i64))
        .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(|r: &Record| r.1))
        .filter(|_: &Record| false)
        .rebalance()
        .transform(
            "slow watermarks",
            SlowWatermarks {
                seen: Seen::default(),
                all: all.clone(),
            },
        )
        .discard();
    env.execute("watermarks alone").expect("job runs");
    let seen = all.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.records, 0);
    assert!(s.watermarks.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(s.watermarks.last(), Some(&WATERMARK_MAX));
}
