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

/// A plain memcpy baseline: copies a byte volume chunk by chunk into one
/// `chunk`-byte destination buffer, reading the chunks in order from a source
/// buffer (wrapping around). With a source much larger than the last-level cache
/// every chunk comes from memory; with a source of one chunk everything stays in
/// L1/L2. Each run starts where the previous one stopped. The source is allocated and touched once, so page faults are not timed.
pub struct ChunkedCopy {
    src: Vec<u8>,
    dst: Vec<u8>,
    chunk: usize,
    /// The next source chunk: each run continues where the last one stopped, so
    /// a chunk is read again only after the whole source has been read.
    next: u64,
}

impl ChunkedCopy {
    pub fn new(source_bytes: usize, chunk: usize) -> Self {
        let chunks_in_source = (source_bytes / chunk).max(1);
        let src: Vec<u8> = (0..chunks_in_source * chunk)
            .map(|i| (i as u8).wrapping_mul(31))
            .collect();
        ChunkedCopy {
            src,
            dst: vec![0u8; chunk],
            chunk,
            next: 0,
        }
    }

    /// Copies `total_bytes` (rounded up to whole chunks); returns the time taken.
    pub fn run(&mut self, total_bytes: u64) -> Duration {
        let chunk = self.chunk;
        let chunks_in_source = (self.src.len() / chunk) as u64;
        let chunks = total_bytes.div_ceil(chunk as u64);
        let start = Instant::now();
        for i in self.next..self.next + chunks {
            let k = (i % chunks_in_source) as usize;
            self.dst
                .copy_from_slice(&self.src[k * chunk..(k + 1) * chunk]);
            std::hint::black_box(&mut self.dst);
        }
        let elapsed = start.elapsed();
        self.next = (self.next + chunks) % chunks_in_source;
        std::hint::black_box(&self.src);
        elapsed
    }
}
