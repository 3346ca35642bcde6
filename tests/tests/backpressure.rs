//! Backpressure: a slow sink behind a fast generator of ~1 KiB records holds
//! the generator back (credit-based flow control bounds the records in flight
//! by the buffers a channel may use), and the process does not buffer the
//! input: its resident memory stays flat while the sink is slow.
//!
//! One test per binary on purpose: resident memory is per process, and other
//! tests running beside it would disturb the measurement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rheon::config::ChannelConfig;
use rheon::{Emitter, OneInputOperator, StreamEnv};
use rheon_tests::{config, rss_bytes};

/// Records the generator can make (200 MiB of payload in all).
const RECORDS: u64 = 200_000;
const PAYLOAD_BYTES: usize = 1000;
/// The sink sleeps for its first `SLOW_RECORDS` records.
const SLOW_RECORDS: u64 = 300;
const SLOW_SLEEP: Duration = Duration::from_millis(2);
const SEGMENTS_PER_EXECUTOR: usize = 256;
const SEGMENT_BYTES: usize = 32 * 1024;

#[derive(Default)]
struct Probe {
    /// Records that left the generator (counted by a map chained to it).
    produced: AtomicU64,
    /// Records the sink has seen.
    consumed: AtomicU64,
    /// Largest `produced - consumed` seen by the sink during the slow phase.
    max_in_flight: AtomicU64,
    /// `produced` when the slow phase ended.
    produced_after_slow_phase: AtomicU64,
    /// Largest resident set size sampled during the slow phase.
    max_rss: AtomicU64,
    /// When the slow phase ended, in microseconds since the job started.
    slow_phase_end_micros: AtomicU64,
}

#[derive(Clone)]
struct SlowAtFirstSink {
    probe: Arc<Probe>,
    start: Instant,
}

impl OneInputOperator<(u64, String), ()> for SlowAtFirstSink {
    fn process(&mut self, (_, payload): (u64, String), _out: &mut Emitter<'_, ()>) {
        assert_eq!(payload.len(), PAYLOAD_BYTES);
        let probe = &self.probe;
        let consumed = probe.consumed.fetch_add(1, Ordering::SeqCst) + 1;
        if consumed > SLOW_RECORDS {
            return;
        }
        std::thread::sleep(SLOW_SLEEP);
        let produced = probe.produced.load(Ordering::SeqCst);
        probe
            .max_in_flight
            .fetch_max(produced - consumed, Ordering::SeqCst);
        if consumed % 10 == 0 {
            probe.max_rss.fetch_max(rss_bytes(), Ordering::SeqCst);
        }
        if consumed == SLOW_RECORDS {
            probe
                .produced_after_slow_phase
                .store(produced, Ordering::SeqCst);
            probe
                .slow_phase_end_micros
                .store(self.start.elapsed().as_micros() as u64, Ordering::SeqCst);
        }
    }
}

#[test]
fn a_slow_sink_holds_the_generator_back_and_memory_stays_flat() {
    let mut config = config(2, 1).with_segments_per_executor(SEGMENTS_PER_EXECUTOR);
    config.segment_size_bytes = SEGMENT_BYTES;
    config.channel = ChannelConfig {
        exclusive_buffers_per_channel: 2,
        floating_buffers_per_gate: 8,
    };
    let credits = (config.channel.exclusive_buffers_per_channel
        + config.channel.floating_buffers_per_gate) as u64;
    let env = StreamEnv::new(config);
    let probe = Arc::new(Probe::default());
    let payload = "x".repeat(PAYLOAD_BYTES);
    let counter = probe.clone();
    let start = Instant::now();
    env.generate(RECORDS, move |i| (i, payload.clone()))
        .map(move |r: (u64, String)| {
            counter.produced.fetch_add(1, Ordering::SeqCst);
            r
        })
        .rebalance()
        .transform(
            "slow sink",
            SlowAtFirstSink {
                probe: probe.clone(),
                start,
            },
        )
        .discard();

    let rss_before = rss_bytes();
    env.execute("backpressure").expect("job runs");
    let total = start.elapsed();

    let consumed = probe.consumed.load(Ordering::SeqCst);
    assert_eq!(consumed, RECORDS, "every record reaches the sink");
    let max_in_flight = probe.max_in_flight.load(Ordering::SeqCst);
    let produced_after_slow = probe.produced_after_slow_phase.load(Ordering::SeqCst);
    let growth = probe
        .max_rss
        .load(Ordering::SeqCst)
        .saturating_sub(rss_before);
    let slow_phase = Duration::from_micros(probe.slow_phase_end_micros.load(Ordering::SeqCst));
    let fast_phase = total.saturating_sub(slow_phase);
    eprintln!(
        "in flight at most {max_in_flight} records; {produced_after_slow} produced after the \
         slow phase ({slow_phase:?}); RSS growth {} KiB; fast phase {fast_phase:?}",
        growth / 1024
    );

    // Records per segment, and what the pool and the credits of the one
    // channel can hold.
    let record_bytes = (8 + 4 + PAYLOAD_BYTES) as u64;
    let per_segment = SEGMENT_BYTES as u64 / record_bytes;
    let pool_records = 2 * SEGMENTS_PER_EXECUTOR as u64 * per_segment;
    // Credits of the channel, plus the buffer being filled by the writer, the
    // one being read, and slack for a flush in progress.
    let credit_records = (credits + 4) * per_segment;
    assert!(
        max_in_flight <= credit_records,
        "{max_in_flight} records in flight, credits allow {credit_records}"
    );
    assert!(max_in_flight <= pool_records);
    assert!(
        produced_after_slow <= SLOW_RECORDS + credit_records,
        "the generator ran ahead: {produced_after_slow} produced"
    );
    // The check above means something only if, unchecked, the generator would
    // have gone much further in the slow phase: it makes records at least
    // this fast once the sink is fast.
    let fast_rate = (RECORDS - produced_after_slow) as f64 / fast_phase.as_secs_f64();
    let unchecked = fast_rate * slow_phase.as_secs_f64();
    assert!(
        unchecked > 4.0 * credit_records as f64,
        "inconclusive: at {fast_rate:.0} records/s the generator would have made only \
         {unchecked:.0} records in the slow phase"
    );
    assert!(
        growth < 64 << 20,
        "resident memory grew by {} MiB during the slow phase",
        growth >> 20
    );
}
