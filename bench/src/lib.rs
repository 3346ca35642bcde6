//! Benchmark programs live in `bench/src/bin/`; this library holds shared helpers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Every benchmark runs with the allocator the `rheon` command uses: large
/// allocations (keyed-state tables) on transparent huge pages, unless
/// `RHEON_HUGE_PAGES=0`.
#[global_allocator]
static ALLOC: rheon::alloc::HugePageAlloc = rheon::alloc::HugePageAlloc;

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

/// The `q`-quantile of `values` (0 <= q <= 1, nearest rank below); zero for no values.
pub fn percentile_duration(values: &[Duration], q: f64) -> Duration {
    assert!((0.0..=1.0).contains(&q), "quantile {q} outside 0..=1");
    let mut v = values.to_vec();
    v.sort();
    v.get(((v.len() as f64 - 1.0) * q) as usize)
        .copied()
        .unwrap_or_default()
}

/// `p50 .. p99 .. max` of `values`, for one line of figures.
pub fn duration_spread(values: &[Duration]) -> String {
    format!(
        "p50 {:.2?} p99 {:.2?} max {:.2?}",
        percentile_duration(values, 0.5),
        percentile_duration(values, 0.99),
        percentile_duration(values, 1.0)
    )
}

/// The key of generated record `record` among `keys` keys: consecutive records
/// spread over the whole key space (with a power-of-two key count, every run of
/// `keys` consecutive records touches every key once).
#[inline]
pub fn spread_key(record: u64, keys: u64) -> u64 {
    record.wrapping_mul(2_654_435_761) % keys
}

/// A fresh checkpoint root for this process under the temporary directory
/// (the caller removes it).
pub fn checkpoint_root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rheon-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// CPU time (user and system) this process has used so far, over all its
/// threads. Dividing work by CPU time gives a cost that other load on a
/// shared host disturbs far less than wall-clock time does.
pub fn process_cpu_time() -> Duration {
    // SAFETY: `getrusage` only writes the `rusage` it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
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
