//! End-to-end tests live in `tests/tests/`; this library holds shared helpers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rheon::EngineConfig;

/// A small engine: `executors` executors, default parallelism `parallelism`,
/// a 1 ms buffer timeout and a modest segment pool, so that a test with more
/// tasks than cores runs quickly and does not reserve much memory.
pub fn config(executors: usize, parallelism: u32) -> EngineConfig {
    let mut config = EngineConfig::default()
        .with_executors(executors)
        .with_parallelism(parallelism)
        .with_segments_per_executor(512);
    config.segment_size_bytes = 32 * 1024;
    config
}

/// The parallelisms every model test runs at: 1, 2 and 4 on two executors
/// (so more tasks than cores at 4).
pub const PARALLELISMS: [u32; 3] = [1, 2, 4];

/// The values sorted: the multiset view of an output whose order is undefined.
pub fn sorted<T: Ord>(mut values: Vec<T>) -> Vec<T> {
    values.sort();
    values
}

/// A fresh directory under the system temporary directory, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "rheon-tests-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Resident set size of this process in bytes (Linux, `VmRSS` of
/// /proc/self/status).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("status has VmRSS");
    kib * 1024
}

/// Word counts computed plainly: split on anything that is not alphanumeric,
/// lower-case (the reference for the word count job).
pub fn reference_word_count(text: &str) -> Vec<(String, u64)> {
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if !word.is_empty() {
            *counts.entry(word.to_lowercase()).or_insert(0) += 1;
        }
    }
    sorted(counts.into_iter().collect())
}

/// The lines of a word count output (a file, or a directory of `part-N`
/// files), parsed as `word count`, sorted.
pub fn read_word_count_output(path: &Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read output directory") {
            files.push(entry.expect("directory entry").path());
        }
    } else {
        files.push(path.to_path_buf());
    }
    let mut counts = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("output is UTF-8");
        for line in text.lines() {
            let (word, count) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad output line {line:?} in {}", file.display()));
            counts.push((word.to_string(), count.parse().expect("count is a number")));
        }
    }
    sorted(counts)
}

/// Builds `rheon-tools` and returns the path of the `rheon` binary.
pub fn rheon_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate is inside the workspace");
        // Build with the profile this test was built with, so a release test
        // run reuses its release artifacts instead of compiling everything again.
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-q", "-p", "rheon-tools", "--manifest-path"]);
        build.arg(workspace.join("Cargo.toml"));
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p rheon-tools failed");
        // Test binaries are in <target>/<profile>/deps; the command one level up.
        let exe = std::env::current_exe().expect("test binary path");
        let binary = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/debug")
            .join("rheon");
        assert!(binary.is_file(), "{} was not built", binary.display());
        binary
    })
}

/// Events per run of the checkpoint tests: small in CI, larger with
/// `RHEON_CHECKPOINT_TEST_EVENTS` (a soak).
pub fn checkpoint_test_events() -> u64 {
    std::env::var("RHEON_CHECKPOINT_TEST_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000)
}

/// Task panics to inject into a job: each at the first record at or past its
/// number, but only once `checkpoints` holds a completed checkpoint (with
/// `None`, at once), so that a slow host cannot make a run fail before it has
/// a checkpoint to recover from; and, with [`FailureInjector::after_own`],
/// once the job completed so many checkpoints of its own.
///
/// A failure that is due but waits for its checkpoints slows its source
/// subtask to a record per millisecond until they complete. A failure due
/// before the first checkpoint completes fires right after it, so without
/// `after_own` it can come with a single checkpoint, however far into the
/// input its number is.
///
/// At most one failure fires per attempt of the job, so that each is its own
/// restart: the engine builds every subtask's operators from a clone of the
/// function, and a clone made after a failure fired belongs to the next
/// attempt. Copies still running in the failed attempt (another subtask, on
/// its way to being cancelled) fire nothing more.
pub struct FailureInjector {
    shared: std::sync::Arc<std::sync::Mutex<Injections>>,
    /// The attempt this copy was made for.
    attempt: u64,
}

struct Injections {
    pending: Vec<u64>,
    checkpoints: Option<PathBuf>,
    /// A failure waits for a completed checkpoint with an id at least this.
    first_id: u64,
    /// Failures fired so far: the attempt a clone made now belongs to.
    fired: u64,
}

impl FailureInjector {
    pub fn new(failures: &[u64], checkpoints: Option<&Path>) -> Self {
        FailureInjector {
            shared: std::sync::Arc::new(std::sync::Mutex::new(Injections {
                pending: failures.to_vec(),
                checkpoints: checkpoints.map(Path::to_path_buf),
                first_id: 0,
                fired: 0,
            })),
            attempt: 0,
        }
    }

    /// Fires nothing before the job completed `checkpoints` checkpoints of
    /// its own: ids past the newest completed when this is called.
    pub fn after_own(self, checkpoints: u64) -> Self {
        {
            let mut shared = self.shared.lock().unwrap();
            let newest = shared
                .checkpoints
                .as_deref()
                .map_or(0, newest_checkpoint_id);
            shared.first_id = newest + checkpoints;
        }
        self
    }

    /// Panics if `record` is at or past a pending failure and the rules
    /// above allow it to fire now.
    pub fn check(&self, record: u64) {
        let mut shared = self.shared.lock().unwrap();
        if shared.fired != self.attempt {
            return; // this copy's attempt has failed already
        }
        let Some(i) = shared.pending.iter().position(|&at| at <= record) else {
            return;
        };
        let first_id = shared.first_id;
        let checkpointed = shared.checkpoints.as_deref().is_none_or(|dir| {
            rheon_state::checkpoint::list_completed(dir)
                .is_ok_and(|completed| completed.iter().any(|&(id, _)| id >= first_id))
        });
        if checkpointed {
            shared.pending.remove(i);
            shared.fired += 1;
            drop(shared); // panic without poisoning the lock
            panic!("injected failure at record {record}");
        }
        // Due but waiting for a checkpoint: a record per millisecond from
        // here, so that however loaded the host, the job cannot reach its
        // end before the checkpoints do.
        drop(shared);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

impl Clone for FailureInjector {
    fn clone(&self) -> Self {
        FailureInjector {
            shared: self.shared.clone(),
            attempt: self.shared.lock().unwrap().fired,
        }
    }
}

/// The id of the newest completed checkpoint under `root`; 0 for none (or an
/// unreadable root).
pub fn newest_checkpoint_id(root: &Path) -> u64 {
    rheon_state::checkpoint::list_completed(root)
        .ok()
        .and_then(|completed| completed.iter().map(|&(id, _)| id).max())
        .unwrap_or(0)
}

/// Failures for [`fail_at_records`]: task panics at these record numbers,
/// each once the job completed `after_own` checkpoints of its own.
#[derive(Clone, Copy, Debug)]
pub struct Failures<'a> {
    pub at: &'a [u64],
    pub after_own: u64,
}

impl<'a> Failures<'a> {
    pub const NONE: Failures<'static> = Failures {
        at: &[],
        after_own: 0,
    };

    pub fn at(at: &'a [u64]) -> Self {
        Failures { at, after_own: 0 }
    }

    /// See [`FailureInjector::after_own`].
    pub fn after_own(self, checkpoints: u64) -> Self {
        Failures {
            after_own: checkpoints,
            ..self
        }
    }
}

/// A map for a job's records that injects `failures` as [`FailureInjector`]
/// does.
pub fn fail_at_records(
    failures: Failures,
    checkpoints: Option<&Path>,
) -> impl Fn(u64) -> u64 + Clone + Send + Sync + 'static {
    let injector = FailureInjector::new(failures.at, checkpoints).after_own(failures.after_own);
    move |k: u64| {
        injector.check(k);
        k
    }
}

/// The delta files of keyed state `state` over the completed checkpoints
/// under `checkpoints`.
pub fn deltas_of(checkpoints: &Path, state: &str) -> usize {
    let mut deltas = 0;
    for (_, dir) in rheon_state::checkpoint::list_completed(checkpoints).unwrap() {
        for operator in rheon_state::checkpoint::read_metadata(&dir)
            .unwrap()
            .operators
        {
            for keyed in operator.keyed_states.iter().filter(|k| k.name == state) {
                deltas += keyed.deltas.len();
            }
        }
    }
    deltas
}
