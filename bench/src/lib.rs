//! Benchmark programs live in `bench/src/bin/`; this library holds shared helpers.

use std::time::{Duration, Instant};

/// The median of `values` (the upper median for an even count).
pub fn median_f64(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "median of no values");
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The median of `values` (the upper median for an even count).
pub fn median_duration(values: &[Duration]) -> Duration {
    assert!(!values.is_empty(), "median of no values");
    let mut v = values.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// `MET` or `MISSED`, for target columns.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "MISSED"
    }
}

/// Bytes per second given a byte count and a duration, in GB/s (10^9 B/s).
pub fn gb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e9
}

/// Copies `total_bytes` chunk by chunk into one `chunk`-byte destination buffer,
/// reading the chunks in order from a source of `source_bytes` (wrapping around).
/// With a source much larger than the last-level cache every chunk comes from
/// memory; with a source of one chunk everything stays in L1/L2. The source is
/// touched before timing so that page faults are not measured.
pub fn memcpy_chunked(total_bytes: u64, source_bytes: usize, chunk: usize) -> Duration {
    let chunks_in_source = (source_bytes / chunk).max(1);
    let src: Vec<u8> = (0..chunks_in_source * chunk)
        .map(|i| (i as u8).wrapping_mul(31))
        .collect();
    let mut dst = vec![0u8; chunk];
    let chunks = total_bytes.div_ceil(chunk as u64);
    let start = Instant::now();
    for i in 0..chunks {
        let k = (i % chunks_in_source as u64) as usize;
        dst.copy_from_slice(&src[k * chunk..(k + 1) * chunk]);
        std::hint::black_box(&mut dst);
    }
    let elapsed = start.elapsed();
    std::hint::black_box(&src);
    elapsed
}
