//! Engine configuration: executors, slots, memory segments, channels, timeouts.

use std::time::Duration;

pub use rheon_net::channel::ChannelConfig;

/// How the embedded engine runs a job. `Default` suits a benchmark or a
/// production pipeline on one machine: one executor per core.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Number of executors (threads), each pinned to a core. May exceed the
    /// number of cores; executor i is pinned to core `i % cores`.
    pub executors: usize,
    /// Whether executors are pinned to cores (`Placement::Fixed`).
    pub pin_executors: bool,
    /// Slots per executor; `None` gives each executor just enough slots for the
    /// job (Flink's MiniCluster does the same).
    pub slots_per_executor: Option<u32>,
    /// Size of one memory segment (network buffer).
    pub segment_size_bytes: usize,
    /// Segments preallocated per executor; channels reserve from these.
    pub segments_per_executor: usize,
    /// A partially filled buffer is sent at the latest this long after its
    /// first record. Zero flushes whenever a task runs out of input.
    pub buffer_timeout: Duration,
    /// Credits per channel and per gate.
    pub channel: ChannelConfig,
    /// Parallelism of operators that do not set their own; `None` = executors.
    pub default_parallelism: Option<u32>,
    /// How long an idle executor spins before parking its thread. Waking a
    /// parked executor costs 10-20 us per cross-core message, which caps the
    /// exchange rate; spinning trades idle CPU for that.
    pub spin_before_park: Duration,
    /// Max parallelism (number of key groups); `None` = Flink's default for the
    /// job's largest parallelism.
    pub max_parallelism: Option<u32>,
    /// Checkpoints, recovery and restore.
    pub checkpoint: crate::checkpoint::CheckpointConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            executors: available_cores(),
            pin_executors: true,
            slots_per_executor: None,
            segment_size_bytes: rheon_net::segment::SEGMENT_SIZE_BYTES_DEFAULT,
            segments_per_executor: SEGMENTS_PER_EXECUTOR_DEFAULT,
            buffer_timeout: Duration::from_millis(1),
            channel: ChannelConfig::default(),
            default_parallelism: None,
            spin_before_park: Duration::from_micros(SPIN_BEFORE_PARK_US_DEFAULT),
            max_parallelism: None,
            checkpoint: crate::checkpoint::CheckpointConfig::default(),
        }
    }
}

/// Spin before parking: long enough to cover a credit round trip under load.
pub const SPIN_BEFORE_PARK_US_DEFAULT: u64 = 200;

/// 64 MiB of 32 KiB segments per executor. Pages are touched only when used.
pub const SEGMENTS_PER_EXECUTOR_DEFAULT: usize = 2048;

/// Cores this process may run on.
pub fn available_cores() -> usize {
    process_cores().unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// The CPUs the process may run on: those of its main thread, whose mask
/// is the process's. `available_parallelism` reads the calling thread's
/// mask instead, which is a single core on a pinned executor.
fn process_cores() -> Option<usize> {
    // SAFETY: `getpid` has no preconditions and cannot fail.
    affinity_cores(unsafe { libc::getpid() })
}

/// The number of CPUs in thread `tid`'s affinity mask (0: the calling
/// thread; the process id: its main thread), if it can be read.
pub(crate) fn affinity_cores(tid: libc::pid_t) -> Option<usize> {
    // SAFETY: `cpu_set_t` is plain data and zeroed is a valid empty set;
    // `sched_getaffinity` writes at most `size_of::<cpu_set_t>()` bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let ok =
            libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0;
        let count = libc::CPU_COUNT(&set);
        (ok && count > 0).then_some(count as usize)
    }
}

impl EngineConfig {
    pub fn with_executors(mut self, executors: usize) -> Self {
        self.executors = executors.max(1);
        self
    }
    pub fn with_buffer_timeout(mut self, timeout: Duration) -> Self {
        self.buffer_timeout = timeout;
        self
    }
    pub fn with_parallelism(mut self, parallelism: u32) -> Self {
        self.default_parallelism = Some(parallelism);
        self
    }
    pub fn with_checkpoints(mut self, checkpoint: crate::checkpoint::CheckpointConfig) -> Self {
        self.checkpoint = checkpoint;
        self
    }
    pub fn with_max_parallelism(mut self, max_parallelism: u32) -> Self {
        self.max_parallelism = Some(max_parallelism);
        self
    }
    pub fn with_segments_per_executor(mut self, segments: usize) -> Self {
        self.segments_per_executor = segments;
        self
    }

    pub fn parallelism(&self) -> u32 {
        self.default_parallelism
            .unwrap_or(self.executors as u32)
            .max(1)
    }
}
