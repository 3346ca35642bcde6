//! The checkpointing demo and test job: generated events `(key, time, value)`
//! (record k has key `k % 97`, event time k ms, value `k % 13`), summed per
//! key in 500 ms tumbling event-time windows, written as `key start sum`
//! lines through the exactly-once file sink. Deterministic: every run over
//! the same records commits the same lines, however it fails and restarts.

use std::path::Path;
use std::time::Duration;

use crate::api::env::StreamEnv;
use crate::runtime::watermark::WatermarkStrategy;
use crate::runtime::window::WindowAssigner;

/// One generated event: (key, event time ms, value).
pub type SumEvent = (u64, i64, u64);

pub fn event(k: u64) -> SumEvent {
    (k % 97, k as i64, k % 13)
}

/// Adds the job to `env`: `records` events at `rate` per second (unlimited
/// if `None`), each passed through `inspect` (tests inject failures there).
pub fn build(
    env: &StreamEnv,
    records: u64,
    rate: Option<f64>,
    output: &Path,
    inspect: impl Fn(&SumEvent) + Clone + Send + Sync + 'static,
) {
    let events = match rate {
        Some(rate) => env.generate_with_rate(records, rate, event),
        None => env.generate(records, event),
    };
    events
        .map(move |e: SumEvent| {
            inspect(&e);
            e
        })
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(
            Duration::from_millis(5),
            |e: &SumEvent| e.1,
        ))
        .key_by(|e: &SumEvent| e.0)
        .window(WindowAssigner::tumbling(Duration::from_millis(500)), |e| {
            e.1
        })
        .aggregate(
            || 0u64,
            |acc: &mut u64, e: &SumEvent| *acc += e.2,
            |key: &u64, w, acc: &u64| (*key, w.start, *acc),
        )
        .sink_to_files(output, |row: &(u64, i64, u64), line: &mut String| {
            use std::fmt::Write;
            let _ = write!(line, "{} {} {}", row.0, row.1, row.2);
        });
}

/// The committed lines of every visible part file in `dir`, sorted.
pub fn committed_lines(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let visible = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("part-"));
        if visible {
            lines.extend(std::fs::read_to_string(&path)?.lines().map(str::to_owned));
        }
    }
    lines.sort();
    Ok(lines)
}
