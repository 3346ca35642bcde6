//! Checkpoints of a keyed aggregation over about 1 GiB of state: what periodic
//! checkpoints cost the running job, and how long a restore takes, through the
//! engine (noisy host: ratios in one run, medians).
//!
//! Job: generator of `--records` records `(key, 1)` over `--keys` keys
//! (`spread_key`: with a power-of-two key count every `keys` consecutive records
//! touch every key once), keyed `sum` (state: one u64 per key, 16 bytes per
//! entry in a snapshot, so the default 2^26 keys make 1 GiB), discarding sink;
//! parallelism 2 on 2 executors.
//!
//! 1. Cost: `--runs` rounds, each running the job without checkpoints, then
//!    with each of `--modes` (full snapshots, incremental: deltas of the
//!    logged changes with a new base past `--materialize-ratio`), every
//!    `--interval-ms`. Prints per mode the median records/s and the loss
//!    against the plain runs two ways: the ratio of the medians, and the
//!    median of each round's ratio to that round's plain run (the target is
//!    met only if both are under it: on this host they have disagreed by 16
//!    points); per checkpoint the bytes written, the
//!    synchronous pause of every subtask (p50/p99/max), the write rate
//!    (bytes / longest asynchronous part) and the duration (trigger to
//!    metadata written). Each run ends with `sync`, so the writeback of its
//!    checkpoint files does not fall into the next run.
//! 2. Restore: the last run of each mode leaves its last checkpoint (the
//!    incremental mode its last `RETAINED`) on disk, and the one with the
//!    most state bytes is restored
//!    (for the incremental mode the longest chain, the slowest to replay: its
//!    newest checkpoint may have just started a new chain); the same job
//!    restores it `--runs` times at parallelism 2 (same) and 1
//!    (rescaled 2 -> 1). The figure is what the engine reports: the
//!    checkpoint's verification before any task is deployed
//!    (`JobOutcome::restore_verification`: every file opened, its header,
//!    index and footer checked) plus the longest subtask restore
//!    (`VertexMetrics::restore_durations`: from the subtask's deploy until
//!    its state is restored, every section it read checksummed, before its
//!    first record), as the median of the runs and,
//!    separately, the first run (which a restore after a crash resembles:
//!    files read from disk, and for the process's first restore, memory the
//!    process never touched). Each restored run also checks its sums: it
//!    records every key's last emitted sum, and each must equal the key's
//!    count in a plain model of the generator, so a restore that lost or
//!    doubled state fails the program.
//! 3. Paired (`--paired-phase-ms P`, instead of 1 and 2): the whole-run
//!    comparison above swings by tens of percent on this shared host, run to
//!    run. Here one job per mode runs with a checkpoint directory and no
//!    interval; once every key has state and a first checkpoint is written,
//!    the program alternates phases of P ms without checkpoints and with one
//!    requested (`JobHandle::checkpoint`) every `--interval-ms`, and counts
//!    the records generated in each. An on phase starts after an unmeasured
//!    checkpoint of the off phase's changes, so that each measured one holds
//!    an interval's changes as a periodic one does (and an incremental
//!    chain's new bases fall in measured and unmeasured checkpoints alike);
//!    it ends when its last checkpoint completes, so no write spills into
//!    the next off phase. Each
//!    on phase's rate is compared with the mean of the off phases on either
//!    side, so slow drifts of the host cancel; printed: the median of those
//!    losses, and the on phases' total rate against the off phases'. What
//!    this leaves out: the cost of logging changes in the incremental mode,
//!    which runs in both phases once the first checkpoint enabled it (the
//!    `changelog` bench measures it).
//! 4. After a crash (`--crash-cycles N`, instead of 1 and 2): what a restore
//!    costs when the process died, as a user's restart meets it. Per cycle a
//!    child process runs the job with checkpoints (the first of `--modes`)
//!    until every key has state and `--crash-after` more checkpoints have
//!    completed, and is killed with SIGKILL; then a new child restores the
//!    newest checkpoint (from the checkpoint root, as `rheon ... --restore
//!    DIR` does), runs the job to its end and checks its sums. Every other
//!    cycle restarts at once, the others after `--crash-pause-ms`: on these
//!    VMs memory the dead process freed goes back to the host within seconds
//!    (free page reporting), and the restore's tables then cost the host's
//!    page faults (the `fresh_memory` bench measures that floor). Every
//!    other pair of cycles restores at parallelism 1 (rescaled 2 -> 1).
//!    Printed: each cycle, and the median per case.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rheon::{CheckpointConfig, CheckpointStats, EngineConfig, JobOutcome, StreamEnv};
use rheon_bench::{
    checkpoint_root, duration_spread, gb_per_s, median_duration, median_f64, percentile_duration,
    process_cpu_time, spread_key, verdict,
};
use rheon_state::checkpoint::layout::checkpoint_dir_name;

const PARALLELISM: u32 = 2;
const LOSS_TARGET_PERCENT: f64 = 10.0;
const SYNC_PAUSE_TARGET: Duration = Duration::from_millis(5);
const RESTORE_TARGET: Duration = Duration::from_secs(1);
/// A checkpoint is "at full state" when it holds at least this share of the
/// largest checkpoint's bytes.
const FULL_STATE_SHARE: f64 = 0.95;
const MIB: f64 = (1u64 << 20) as f64;
/// Completed checkpoints an incremental run keeps, so that the restore takes
/// the longest chain of the run's last 16 checkpoints, not whatever the newest
/// checkpoint happens to be.
const RETAINED: usize = 16;

#[derive(Parser)]
#[command(about = "Checkpoint cost and restore time of a keyed sum over about 1 GiB of state")]
struct Args {
    /// Generated records (at least `keys`, so that every key has state).
    #[arg(long, default_value_t = 3 << 26)]
    records: u64,
    /// Distinct keys: 16 snapshot bytes each, 2^26 keys make 1 GiB.
    #[arg(long, default_value_t = 1 << 26)]
    keys: u64,
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Rounds of (plain, checkpointed) runs, and restored runs per parallelism.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only the cost figures, no restore.
    #[arg(long)]
    no_restore: bool,
    /// Checkpointed modes to compare with the plain run (each run interleaves
    /// them), comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Full, Mode::Incremental])]
    modes: Vec<Mode>,
    /// Incremental mode: new bases for slices once a restore would replay
    /// more than `1 +` this many times the state's entries
    /// (`CheckpointConfig::materialize_ratio`, whose default this is).
    #[arg(long, default_value_t = CheckpointConfig::default().materialize_ratio)]
    materialize_ratio: f64,
    /// Keep the checkpoints in DIR (one subdirectory per mode) instead of a
    /// temporary directory removed at the end.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Skip the cost runs: restore the checkpoints an earlier run with the
    /// same `--keep DIR`, `--records` and `--keys` left there.
    #[arg(long, requires = "keep")]
    restore_only: bool,
    /// Measure the cost in one job per mode, alternating phases of this many
    /// ms without and with checkpoints (no restore; see the module doc).
    #[arg(long, value_name = "MS", conflicts_with = "restore_only")]
    paired_phase_ms: Option<u64>,
    /// Restore after a crash, N times (instead of 1 and 2; see the module
    /// doc, 4): a child process runs the job, is killed with SIGKILL, and a
    /// new child restores its newest checkpoint.
    #[arg(long, value_name = "N", conflicts_with_all = ["restore_only", "paired_phase_ms"])]
    crash_cycles: Option<usize>,
    /// With --crash-cycles: checkpoints the killed job completes after every
    /// key has state, so that its newest checkpoint is a chain of bases and
    /// deltas at full state.
    #[arg(long, default_value_t = 6)]
    crash_after: u64,
    /// With --crash-cycles: every other cycle waits this long between the
    /// kill and the restart (the others restart at once).
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    crash_pause_ms: u64,
    /// What a child process of --crash-cycles does.
    #[arg(long, value_enum, hide = true)]
    crash_role: Option<CrashRole>,
    /// The restoring child's parallelism.
    #[arg(long, hide = true, default_value_t = PARALLELISM)]
    crash_parallelism: u32,
}

/// The two child processes of a crash cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CrashRole {
    /// Runs the job with checkpoints until it is killed.
    Job,
    /// Restores the newest checkpoint, runs the job to its end, and prints
    /// the restore's figure on a line starting with [`CRASH_FIGURE`].
    Restore,
}

/// The line a restoring child prints for its parent: nanoseconds to
/// restore, the checkpoint's id and state bytes, and whether the sums held.
const CRASH_FIGURE: &str = "crash-restore";
/// The line a job child prints once every key has state.
const CRASH_FILLED: &str = "crash-job every key has state";

/// Every key's last (largest) emitted sum, written by the restored job.
type LastSums = Arc<Box<[AtomicU64]>>;

/// Zeroed sums, allocated but untouched: the kernel maps zero pages on the
/// first write, so a restore that runs before any sum is written does not
/// compete with their page faults. (In a `Box`: `Arc<[T]>` would copy them
/// next to its counts, touching every page.)
fn zeroed_sums(keys: u64) -> LastSums {
    let len = keys as usize;
    let layout = std::alloc::Layout::array::<AtomicU64>(len).expect("the sums fit in memory");
    assert!(layout.size() > 0, "no keys");
    // SAFETY: `layout` has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<AtomicU64>();
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` is a block of `len` `AtomicU64`s from the global
    // allocator with their array layout, as `Box<[AtomicU64]>` frees it, and
    // all zero bits is a valid `AtomicU64`.
    Arc::new(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) })
}

/// Records a job generated so far: each thread counts its own and adds them
/// to the shared total every `PROGRESS_BATCH`, so that counting costs no
/// shared write per record.
#[derive(Clone, Default)]
struct Progress(Arc<AtomicU64>);

const PROGRESS_BATCH: u64 = 4096;

thread_local! {
    static UNCOUNTED: Cell<u64> = const { Cell::new(0) };
}

impl Progress {
    fn count_one(&self) {
        UNCOUNTED.with(|uncounted| {
            let n = uncounted.get() + 1;
            if n == PROGRESS_BATCH {
                self.0.fetch_add(n, Ordering::Relaxed);
                uncounted.set(0);
            } else {
                uncounted.set(n);
            }
        });
    }

    /// Generated records, short of at most `PROGRESS_BATCH` per thread.
    fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Builds the keyed sum; with `last_sums`, a map before the sink records each
/// key's largest sum; with `progress`, the generator counts its records.
fn keyed_sum(
    env: &StreamEnv,
    args: &Args,
    last_sums: Option<LastSums>,
    progress: Option<Progress>,
) {
    let keys = args.keys;
    let records = match progress {
        None => env.generate(args.records, move |k| (spread_key(k, keys), 1u64)),
        Some(progress) => env.generate(args.records, move |k| {
            progress.count_one();
            (spread_key(k, keys), 1u64)
        }),
    };
    let sums = records
        .key_by(|r: &(u64, u64)| r.0)
        .sum(|r: &(u64, u64)| r.1);
    match last_sums {
        None => sums.discard(),
        Some(last) => sums
            .map(move |r: (u64, u64)| {
                last[r.0 as usize].fetch_max(r.1, Ordering::Relaxed);
                r
            })
            .discard(),
    };
}

fn config(parallelism: u32, checkpoint: CheckpointConfig) -> EngineConfig {
    EngineConfig::default()
        .with_executors(2)
        .with_parallelism(parallelism)
        .with_checkpoints(checkpoint)
}

fn records_per_s(args: &Args, elapsed: Duration) -> f64 {
    args.records as f64 / elapsed.as_secs_f64() / 1e6
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.keys > 0 && args.records >= args.keys,
        "--records ({}) must be at least --keys ({}) > 0",
        args.records,
        args.keys
    );
    let dir = match &args.keep {
        Some(dir) => dir.clone(),
        None => checkpoint_root("checkpoint"),
    };
    match args.crash_role {
        Some(CrashRole::Job) => return crash_job(&args, &dir),
        Some(CrashRole::Restore) => return crash_restore(&args, &dir),
        None => {}
    }
    if let Some(cycles) = args.crash_cycles {
        crash(&args, &dir, cycles)?;
        if args.keep.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Ok(());
    }
    if let Some(phase_ms) = args.paired_phase_ms {
        paired(&args, &dir, Duration::from_millis(phase_ms))?;
        if args.keep.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Ok(());
    }
    let retained = if args.restore_only {
        kept(&args, &dir)?
    } else {
        cost(&args, &dir)?
    };
    if !args.no_restore {
        let model = model_counts(&args);
        for checkpoint in &retained {
            restore(&args, &model, checkpoint)?;
        }
    }
    if args.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// How a run checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// No checkpoints.
    Plain,
    /// A full copy-on-write snapshot every time.
    Full,
    /// Incremental: deltas of the logged changes, a new base when they grow.
    Incremental,
}

impl Mode {
    fn checkpoint(self, args: &Args, dir: &Path) -> CheckpointConfig {
        let mut c = CheckpointConfig::every(Duration::from_millis(args.interval_ms), dir);
        match self {
            Mode::Plain => return CheckpointConfig::default(),
            Mode::Full => {}
            Mode::Incremental => {
                c.retained = RETAINED;
                c.incremental = true;
                c.materialize_ratio = args.materialize_ratio;
            }
        }
        c
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Full => "full checkpoints",
            Mode::Incremental => "incremental checkpoints",
        }
    }
}

/// A checkpoint left on disk to restore, with its state's bytes on disk.
struct Retained {
    mode: Mode,
    dir: PathBuf,
    checkpoint_id: u64,
    state_bytes: u64,
}

/// The newest completed checkpoint of each of `--modes` under `root`, as an
/// earlier run with `--keep` left them.
fn kept(args: &Args, root: &Path) -> anyhow::Result<Vec<Retained>> {
    let mut retained = Vec::new();
    for &mode in args.modes.iter().filter(|m| **m != Mode::Plain) {
        let dir = root.join(format!("{mode:?}").to_lowercase());
        let completed = rheon_state::checkpoint::layout::list_completed(&dir)
            .with_context(|| format!("listing the checkpoints in {}", dir.display()))?;
        if completed.is_empty() {
            bail!(
                "{} holds no completed checkpoint: run once with --keep {} first",
                dir.display(),
                root.display()
            );
        }
        let (checkpoint_id, state_bytes) = largest(&completed)?;
        retained.push(Retained {
            mode,
            dir,
            checkpoint_id,
            state_bytes,
        });
    }
    Ok(retained)
}

/// The plain and checkpointed runs, interleaved; returns per checkpointed
/// mode the checkpoint its last run left on disk.
fn cost(args: &Args, root: &Path) -> anyhow::Result<Vec<Retained>> {
    let mut modes = vec![Mode::Plain];
    modes.extend(args.modes.iter().copied().filter(|m| *m != Mode::Plain));
    let mut elapsed: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    let mut cpu: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    let mut runs: Vec<Vec<Vec<CheckpointStats>>> = vec![Vec::new(); modes.len()];
    for run in 0..args.runs {
        for (m, &mode) in modes.iter().enumerate() {
            let dir = root.join(format!("{mode:?}").to_lowercase());
            let _ = std::fs::remove_dir_all(&dir);
            let env = StreamEnv::new(config(PARALLELISM, mode.checkpoint(args, &dir)));
            keyed_sum(&env, args, None, None);
            let cpu_before = process_cpu_time();
            let outcome = env.execute("keyed sum")?;
            let cpu_used = process_cpu_time() - cpu_before;
            println!(
                "run {run} {}: {:.2} M records/s, {:.2} M records per CPU-second, {} checkpoints",
                mode.name(),
                records_per_s(args, outcome.elapsed),
                records_per_s(args, cpu_used),
                outcome.checkpoints.len()
            );
            // The kernel writes a run's checkpoint files back to disk after
            // it ended, too; wait for that here so it does not land in the
            // next run's time.
            // SAFETY: `sync` takes no arguments and cannot fail.
            unsafe { libc::sync() };
            elapsed[m].push(outcome.elapsed);
            cpu[m].push(cpu_used);
            runs[m].push(outcome.checkpoints);
        }
    }
    let plain = records_per_s(args, median_duration(&elapsed[0]));
    let plain_cpu = records_per_s(args, median_duration(&cpu[0]));
    println!(
        "plain: {plain:.2} M records/s, {plain_cpu:.2} M records per CPU-second (medians of {})",
        args.runs
    );
    let mut retained = Vec::new();
    for (m, &mode) in modes.iter().enumerate().skip(1) {
        let rate = records_per_s(args, median_duration(&elapsed[m]));
        let loss = (1.0 - rate / plain) * 100.0;
        // Each round's rate over its own plain run's: plain time / this time.
        let paired: Vec<f64> = elapsed[0]
            .iter()
            .zip(&elapsed[m])
            .map(|(plain, this)| plain.as_secs_f64() / this.as_secs_f64())
            .collect();
        let paired_loss = (1.0 - median_f64(&paired)) * 100.0;
        let rate_cpu = records_per_s(args, median_duration(&cpu[m]));
        let loss_cpu = (1.0 - rate_cpu / plain_cpu) * 100.0;
        let ratios: Vec<String> = paired.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{}: every {} ms: {rate:.2} M records/s; loss {loss:.1}% (ratio of medians), \
             {paired_loss:.1}% (median of the rounds' ratios [{}]) (target < {LOSS_TARGET_PERCENT}%, both: {}); \
             {rate_cpu:.2} M records per CPU-second, loss {loss_cpu:.1}% per CPU-second",
            mode.name(),
            args.interval_ms,
            ratios.join(", "),
            verdict(loss.max(paired_loss) < LOSS_TARGET_PERCENT)
        );
        report_checkpoints(mode, &runs[m]);
        let dir = root.join(format!("{mode:?}").to_lowercase());
        let completed = rheon_state::checkpoint::layout::list_completed(&dir)
            .with_context(|| format!("listing the checkpoints in {}", dir.display()))?;
        if completed.is_empty() {
            bail!("the last run with {} completed no checkpoint", mode.name());
        }
        let (checkpoint_id, state_bytes) = largest(&completed)?;
        println!(
            "  the largest of its last {} checkpoints: {checkpoint_id}, {:.1} MiB of state files (base and deltas)",
            completed.len(),
            state_bytes as f64 / MIB
        );
        retained.push(Retained {
            mode,
            dir,
            checkpoint_id,
            state_bytes,
        });
    }
    Ok(retained)
}

/// One phase of a paired run: checkpoints requested or not.
struct Phase {
    checkpoints: bool,
    records: u64,
    elapsed: Duration,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// Per checkpointed mode, one job alternating phases of `phase` without and
/// with checkpoints every `--interval-ms` (see the module doc, 3).
fn paired(args: &Args, root: &Path, phase: Duration) -> anyhow::Result<()> {
    let interval = Duration::from_millis(args.interval_ms);
    for &mode in args.modes.iter().filter(|m| **m != Mode::Plain) {
        let dir = root.join(format!("{mode:?}-paired").to_lowercase());
        let _ = std::fs::remove_dir_all(&dir);
        let mut checkpoint = mode.checkpoint(args, &dir);
        checkpoint.interval = None;
        let progress = Progress::default();
        let env = StreamEnv::new(config(PARALLELISM, checkpoint));
        keyed_sum(&env, args, None, Some(progress.clone()));
        let handle = env.execute_detached("keyed sum, paired phases")?;
        // Every key has state, and the first checkpoint (a base in either
        // mode, after which the incremental mode logs changes) is written.
        while progress.total() < args.keys {
            std::thread::sleep(Duration::from_millis(10));
        }
        handle
            .checkpoint()
            .map_err(|e| anyhow::anyhow!("the first checkpoint failed: {e}"))?;
        // Stop while the input lasts, so that every phase runs at full
        // speed: two of the longest phases yet, and a fifth of the input,
        // before its end (one source subtask may finish before the other,
        // and then no checkpoint can start).
        let mut phases: Vec<Phase> = Vec::new();
        let mut checkpoints = false;
        let last_start = args.records - args.records / 5;
        'phases: while progress.total() + 2 * phases.iter().map(|p| p.records).max().unwrap_or(0)
            < last_start
        {
            if checkpoints {
                // Catch up, unmeasured: a checkpoint of the off phase's
                // changes, so each measured one holds an interval's, as
                // periodic ones do.
                if let Err(e) = handle.checkpoint() {
                    eprintln!("a checkpoint failed, phase {} dropped: {e}", phases.len());
                    break 'phases;
                }
            }
            let (start, before) = (Instant::now(), progress.total());
            if checkpoints {
                let count = (phase.as_millis() / interval.as_millis().max(1)).max(1) as u32;
                for k in 1..=count {
                    std::thread::sleep(
                        (start + interval * k).saturating_duration_since(Instant::now()),
                    );
                    if let Err(e) = handle.checkpoint() {
                        // The job ended or failed: `wait` tells which.
                        eprintln!("a checkpoint failed, phase {} dropped: {e}", phases.len());
                        break 'phases;
                    }
                }
            } else {
                std::thread::sleep(phase);
            }
            phases.push(Phase {
                checkpoints,
                records: progress.total() - before,
                elapsed: start.elapsed(),
            });
            checkpoints = !checkpoints;
        }
        let outcome = handle.wait()?;
        report_paired(mode, args, phase, &phases);
        report_checkpoints(mode, &[outcome.checkpoints]);
    }
    Ok(())
}

/// Each on phase's loss against the off phases around it, and the totals.
fn report_paired(mode: Mode, args: &Args, phase: Duration, phases: &[Phase]) {
    let mut losses = Vec::new();
    for (i, on) in phases.iter().enumerate().filter(|(_, p)| p.checkpoints) {
        let around: Vec<f64> = [i.checked_sub(1), Some(i + 1)]
            .into_iter()
            .flatten()
            .filter_map(|j| phases.get(j))
            .map(Phase::rate)
            .collect();
        let off = around.iter().sum::<f64>() / around.len() as f64;
        losses.push((1.0 - on.rate() / off) * 100.0);
    }
    let total = |checkpoints: bool| {
        let (records, secs) = phases
            .iter()
            .filter(|p| p.checkpoints == checkpoints)
            .fold((0, 0.0), |(r, s), p| {
                (r + p.records, s + p.elapsed.as_secs_f64())
            });
        records as f64 / secs / 1e6
    };
    let rates: Vec<String> = phases
        .iter()
        .map(|p| format!("{}{:.2}", if p.checkpoints { "+" } else { "" }, p.rate()))
        .collect();
    println!(
        "{} paired: {} phases of {phase:?} (M records/s, + with checkpoints every {} ms): [{}]",
        mode.name(),
        phases.len(),
        args.interval_ms,
        rates.join(", ")
    );
    if losses.is_empty() {
        println!("  no phase with checkpoints: give the job more --records");
        return;
    }
    let (on, off) = (total(true), total(false));
    let total_loss = (1.0 - on / off) * 100.0;
    let median_loss = median_f64(&losses);
    let each: Vec<String> = losses.iter().map(|l| format!("{l:.1}")).collect();
    println!(
        "  loss per phase with checkpoints against the phases around it: median {median_loss:.1}% [{}]; \
         in total {on:.2} against {off:.2} M records/s, loss {total_loss:.1}% (target < {LOSS_TARGET_PERCENT}%, both: {})",
        each.join(", "),
        verdict(median_loss.max(total_loss) < LOSS_TARGET_PERCENT)
    );
}

/// Of `completed` checkpoints (id, directory), the id and state bytes of the
/// one with the most state bytes, the newest of those alike.
fn largest(completed: &[(u64, PathBuf)]) -> anyhow::Result<(u64, u64)> {
    let mut sized = Vec::with_capacity(completed.len());
    for (id, directory) in completed {
        sized.push((state_bytes_on_disk(directory)?, *id));
    }
    let (bytes, id) = sized.into_iter().max().context("no completed checkpoint")?;
    Ok((id, bytes))
}

/// Bytes of every state file a checkpoint's metadata names.
fn state_bytes_on_disk(checkpoint_dir: &Path) -> anyhow::Result<u64> {
    let metadata = rheon_state::checkpoint::read_metadata(checkpoint_dir)?;
    let mut bytes = 0;
    for operator in &metadata.operators {
        for state in &operator.keyed_states {
            for file in state.files.iter().chain(&state.deltas) {
                bytes += std::fs::metadata(checkpoint_dir.join(file))?.len();
            }
        }
    }
    Ok(bytes)
}

/// Sizes, synchronous pauses, write rates and durations of one mode's
/// checkpoints.
fn report_checkpoints(mode: Mode, runs: &[Vec<CheckpointStats>]) {
    let all: Vec<&CheckpointStats> = runs.iter().flatten().collect();
    let largest = all.iter().map(|c| c.bytes).max().unwrap_or(0);
    let full: Vec<&CheckpointStats> = all
        .iter()
        .copied()
        .filter(|c| c.bytes as f64 >= largest as f64 * FULL_STATE_SHARE)
        .collect();
    let syncs = |set: &[&CheckpointStats]| -> Vec<Duration> {
        set.iter()
            .flat_map(|c| c.sync_durations.iter().copied())
            .collect()
    };
    let counts: Vec<usize> = runs.iter().map(Vec::len).collect();
    let written: u64 = all.iter().map(|c| c.bytes).sum();
    println!(
        "  checkpoints per run: {counts:?}; written per checkpoint: largest {:.1} MiB, mean {:.1} MiB; {} of {} checkpoints within {:.0}% of the largest",
        largest as f64 / MIB,
        written as f64 / MIB / all.len().max(1) as f64,
        full.len(),
        all.len(),
        FULL_STATE_SHARE * 100.0
    );
    // With full checkpoints the largest are those of the full state; the
    // incremental mode's pauses count at every checkpoint.
    let measured = if mode == Mode::Full { &full } else { &all };
    let pauses = syncs(measured);
    println!(
        "  sync pause per subtask, every checkpoint: {}; {}: {} (target p99 < {SYNC_PAUSE_TARGET:?}: {})",
        duration_spread(&syncs(&all)),
        if mode == Mode::Full { "at full state" } else { "all" },
        duration_spread(&pauses),
        verdict(percentile_duration(&pauses, 0.99) < SYNC_PAUSE_TARGET)
    );
    let rates: Vec<f64> = full
        .iter()
        .filter(|c| !c.async_max.is_zero())
        .map(|c| gb_per_s(c.bytes, c.async_max))
        .collect();
    let durations: Vec<Duration> = all.iter().map(|c| c.duration).collect();
    println!(
        "  largest checkpoints' write rate (bytes / longest asynchronous part) median {:.2} GB/s; checkpoint duration (trigger to metadata), all: {}",
        if rates.is_empty() { 0.0 } else { median_f64(&rates) },
        duration_spread(&durations)
    );
}

/// Restores `retained` at the same parallelism and rescaled, and checks the
/// restored sums against a model.
fn restore(args: &Args, model: &[u32], retained: &Retained) -> anyhow::Result<()> {
    // The checkpoint itself, not the root: the job ran to its end there, and
    // a restore from a finished job's root replays its end and runs nothing.
    let dir = &retained
        .dir
        .join(checkpoint_dir_name(retained.checkpoint_id, false));
    println!(
        "restoring checkpoint {} of {}",
        retained.checkpoint_id,
        retained.mode.name()
    );
    let mut figures: Vec<(u32, Vec<Duration>)> = vec![(PARALLELISM, Vec::new()), (1, Vec::new())];
    let mut wrong_runs = 0;
    for run in 0..args.runs {
        for (parallelism, restores) in &mut figures {
            let restored = run_restored(args, *parallelism, dir, "keyed sum, restored")?;
            restores.push(restored.restore());
            let RestoredRun {
                verification,
                longest,
                subtasks,
                outcome,
                last,
            } = restored;
            let check = check_sums(&last, model, &outcome, args);
            if !check.ok() {
                wrong_runs += 1;
            }
            println!(
                "restore run {run} at parallelism {parallelism}: verification {verification:.2?}, then longest subtask restore {longest:.2?} (every subtask: {subtasks:.2?}); {check}"
            );
        }
    }
    println!(
        "restore of {}'s checkpoint {} ({:.1} MiB of state files, taken at parallelism {PARALLELISM}), verification (before deploy) plus the longest subtask from deploy to state restored, median of {}:",
        retained.mode.name(),
        retained.checkpoint_id,
        retained.state_bytes as f64 / MIB,
        args.runs
    );
    for (parallelism, restores) in &figures {
        let m = median_duration(restores);
        let how = if *parallelism == PARALLELISM {
            "same".to_string()
        } else {
            format!("rescaled {PARALLELISM} -> {parallelism}")
        };
        println!(
            "  at parallelism {parallelism} ({how}): {m:.2?}, {:.2} GB/s (target < {RESTORE_TARGET:?}: {})",
            gb_per_s(retained.state_bytes, m),
            verdict(m < RESTORE_TARGET)
        );
    }
    // The medians are mostly of later runs, which find the files cached and
    // reuse memory this process already touched; a restore after a crash is a
    // first one (fresh memory only for the process's first restore, the first
    // mode's).
    if let [(p, same), ..] = figures.as_slice() {
        if let Some(first) = same.first() {
            println!(
                "  the first of these restores (at parallelism {p}; files maybe not cached, fresh memory if it is the process's first restore): {first:.2?} (target < {RESTORE_TARGET:?}: {})",
                verdict(*first < RESTORE_TARGET)
            );
        }
    }
    if wrong_runs > 0 {
        bail!("{wrong_runs} restored runs ended with wrong sums");
    }
    Ok(())
}

/// The checkpointed mode of the crash cycles: the first of `--modes` that
/// checkpoints.
fn crash_mode(args: &Args) -> Mode {
    args.modes
        .iter()
        .copied()
        .find(|m| *m != Mode::Plain)
        .unwrap_or(Mode::Incremental)
}

/// A child process of this program in `role`, with the parent's job
/// parameters and checkpoints under `root`.
fn crash_child(
    args: &Args,
    root: &Path,
    role: CrashRole,
    parallelism: u32,
) -> anyhow::Result<Command> {
    let role = clap::ValueEnum::to_possible_value(&role).context("a crash role's name")?;
    let mode = format!("{:?}", crash_mode(args)).to_lowercase();
    let mut command = Command::new(std::env::current_exe().context("this program's path")?);
    command
        .args(["--records", &args.records.to_string()])
        .args(["--keys", &args.keys.to_string()])
        .args(["--interval-ms", &args.interval_ms.to_string()])
        .args(["--materialize-ratio", &args.materialize_ratio.to_string()])
        .args(["--modes", &mode])
        .arg("--keep")
        .arg(root)
        .args(["--crash-role", role.get_name()])
        .args(["--crash-parallelism", &parallelism.to_string()]);
    Ok(command)
}

/// The newest completed checkpoint under `dir`, 0 if none (yet).
fn newest_completed(dir: &Path) -> u64 {
    rheon_state::checkpoint::layout::list_completed(dir)
        .ok()
        .and_then(|completed| completed.first().map(|(id, _)| *id))
        .unwrap_or(0)
}

/// One crash cycle's restore, as its restoring child reported it.
struct CrashRestore {
    pause: Duration,
    parallelism: u32,
    restore: Duration,
}

/// Crash cycles (see the module doc, 4): per cycle, a job child killed with
/// SIGKILL once it has completed `--crash-after` checkpoints at full state,
/// then (at once, or after `--crash-pause-ms` every other cycle) a restoring
/// child at parallelism 2 or, every other pair of cycles, 1.
fn crash(args: &Args, root: &Path, cycles: usize) -> anyhow::Result<()> {
    let dir = root.join("crash");
    let mut restores = Vec::new();
    for cycle in 0..cycles {
        let pause = match cycle % 2 {
            0 => Duration::ZERO,
            _ => Duration::from_millis(args.crash_pause_ms),
        };
        let parallelism = if cycle / 2 % 2 == 0 { PARALLELISM } else { 1 };
        let _ = std::fs::remove_dir_all(&dir);
        let mut job = crash_child(args, root, CrashRole::Job, PARALLELISM)?
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the job child")?;
        let stdout = job.stdout.take().context("the job child's stdout")?;
        let filled = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == CRASH_FILLED);
        if !filled {
            bail!(
                "the job child ended before every key had state: {}",
                job.wait()?
            );
        }
        let first = newest_completed(&dir);
        while newest_completed(&dir) < first + args.crash_after {
            if let Some(status) = job.try_wait()? {
                bail!(
                    "the job child ended ({status}) before it completed {} more checkpoints: give it more --records",
                    args.crash_after
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        job.kill().context("killing the job child")?;
        job.wait()?;
        let killed_after = newest_completed(&dir);
        std::thread::sleep(pause);
        let output = crash_child(args, root, CrashRole::Restore, parallelism)?
            .stderr(Stdio::inherit())
            .output()
            .context("running the restoring child")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        for line in stdout.lines().filter(|l| !l.starts_with(CRASH_FIGURE)) {
            println!("  {line}");
        }
        if !output.status.success() {
            bail!("the restoring child failed: {}", output.status);
        }
        let figure = stdout
            .lines()
            .find_map(|l| l.strip_prefix(CRASH_FIGURE))
            .context("the restoring child printed no figure")?;
        let nanos: u64 = figure
            .trim()
            .parse()
            .context("the restoring child's figure")?;
        let restore = Duration::from_nanos(nanos);
        println!(
            "crash cycle {cycle}: killed after checkpoint {killed_after}; restarted {}; restore at parallelism {parallelism}: {restore:.2?}",
            if pause.is_zero() { "at once".to_string() } else { format!("after {pause:?}") }
        );
        restores.push(CrashRestore {
            pause,
            parallelism,
            restore,
        });
    }
    println!(
        "restore after a crash ({}: verification plus the longest subtask, in a new process), median per case:",
        crash_mode(args).name()
    );
    for pause in [Duration::ZERO, Duration::from_millis(args.crash_pause_ms)] {
        for parallelism in [PARALLELISM, 1] {
            let case: Vec<Duration> = restores
                .iter()
                .filter(|r| r.pause == pause && r.parallelism == parallelism)
                .map(|r| r.restore)
                .collect();
            if case.is_empty() {
                continue;
            }
            let m = median_duration(&case);
            println!(
                "  restarted {}, at parallelism {parallelism}: {m:.2?} of {:.2?} (target < {RESTORE_TARGET:?}: {})",
                if pause.is_zero() { "at once".to_string() } else { format!("after {pause:?}") },
                case,
                verdict(m < RESTORE_TARGET)
            );
        }
    }
    Ok(())
}

/// A crash cycle's job child: the checkpointed job, which says on stdout when
/// every key has state and runs until its parent kills it.
fn crash_job(args: &Args, root: &Path) -> anyhow::Result<()> {
    let dir = root.join("crash");
    let progress = Progress::default();
    let env = StreamEnv::new(config(PARALLELISM, crash_mode(args).checkpoint(args, &dir)));
    keyed_sum(&env, args, None, Some(progress.clone()));
    let handle = env.execute_detached("keyed sum, to be killed")?;
    while progress.total() < args.keys {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("{CRASH_FILLED}");
    std::io::stdout().flush()?;
    handle.wait()?;
    bail!("the job ended before it was killed: give it more --records")
}

/// A crash cycle's restoring child: restores the newest checkpoint under
/// `root/crash` (what `--restore DIR` does), runs the job to its end, checks
/// its sums and prints the restore's figure for its parent.
fn crash_restore(args: &Args, root: &Path) -> anyhow::Result<()> {
    let dir = root.join("crash");
    let parallelism = args.crash_parallelism;
    let restored = run_restored(args, parallelism, &dir, "keyed sum, restored after a crash")?;
    let id = newest_completed(&dir);
    let bytes = state_bytes_on_disk(&dir.join(checkpoint_dir_name(id, false)))?;
    let check = check_sums(&restored.last, &model_counts(args), &restored.outcome, args);
    println!(
        "restored from {}, whose newest checkpoint is {id} ({:.1} MiB of state files), at parallelism {parallelism}: verification {:.2?}, then longest subtask restore {:.2?} (every subtask: {:.2?}); {check}",
        dir.display(),
        bytes as f64 / MIB,
        restored.verification,
        restored.longest,
        restored.subtasks
    );
    if !check.ok() {
        bail!("the job restored after a crash ended with wrong sums");
    }
    println!("{CRASH_FIGURE} {}", restored.restore().as_nanos());
    Ok(())
}

/// A run of the job restored from a checkpoint (or a checkpoint root), to
/// its end, and what it reports of the restore.
struct RestoredRun {
    /// The checkpoint's check before any task was deployed.
    verification: Duration,
    /// The longest of `subtasks`.
    longest: Duration,
    /// Every subtask's restore, from its deploy until its state is restored.
    subtasks: Vec<Duration>,
    outcome: JobOutcome,
    /// Every key's last emitted sum.
    last: LastSums,
}

impl RestoredRun {
    /// The figure: the check before deploy plus the longest subtask restore.
    fn restore(&self) -> Duration {
        self.verification + self.longest
    }
}

/// Runs the job restored from `restore_from` at `parallelism`, recording
/// every key's last sum.
fn run_restored(
    args: &Args,
    parallelism: u32,
    restore_from: &Path,
    name: &str,
) -> anyhow::Result<RestoredRun> {
    let last = zeroed_sums(args.keys);
    let checkpoint = CheckpointConfig {
        restore_from: Some(restore_from.to_path_buf()),
        ..CheckpointConfig::default()
    };
    let env = StreamEnv::new(config(parallelism, checkpoint));
    keyed_sum(&env, args, Some(last.clone()), None);
    let outcome = env.execute(name)?;
    let subtasks: Vec<Duration> = outcome
        .vertices
        .iter()
        .flat_map(|v| v.restore_durations.iter().copied())
        .collect();
    let Some(&longest) = subtasks.iter().max() else {
        bail!("the restored job at parallelism {parallelism} reports no restore");
    };
    let verification = outcome
        .restore_verification
        .context("the restored job reports no verification")?;
    Ok(RestoredRun {
        verification,
        longest,
        subtasks,
        outcome,
        last,
    })
}

/// Each key's count over the job's records: its final sum.
fn model_counts(args: &Args) -> Vec<u32> {
    let mut counts = vec![0u32; args.keys as usize];
    for k in 0..args.records {
        counts[spread_key(k, args.keys) as usize] += 1;
    }
    counts
}

/// What a restored run's sums say about its restore.
struct SumCheck {
    /// Keys the restored job updated.
    keys_updated: u64,
    /// Of those, keys whose last sum is not the model's count.
    keys_wrong: u64,
    /// Records before the restored checkpoint: their counts came from state.
    records_restored: u64,
}

impl SumCheck {
    fn ok(&self) -> bool {
        self.keys_wrong == 0 && self.keys_updated > 0
    }
}

impl std::fmt::Display for SumCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sums {}: {} keys updated after the restore, {} differ from the model's final count; {} records were counted in the restored state",
            if self.ok() { "OK" } else { "WRONG" },
            self.keys_updated,
            self.keys_wrong,
            self.records_restored
        )
    }
}

fn check_sums(last: &[AtomicU64], model: &[u32], outcome: &JobOutcome, args: &Args) -> SumCheck {
    let generated: u64 = outcome
        .vertices
        .iter()
        .filter(|v| v.name.starts_with("Generator"))
        .map(|v| v.records_out)
        .sum();
    let mut check = SumCheck {
        keys_updated: 0,
        keys_wrong: 0,
        records_restored: args.records.saturating_sub(generated),
    };
    for (sum, &count) in last.iter().zip(model) {
        let sum = sum.load(Ordering::Relaxed);
        if sum != 0 {
            check.keys_updated += 1;
            if sum != u64::from(count) {
                check.keys_wrong += 1;
            }
        }
    }
    check
}
