//! Exactly-once recovery with the `windows` job (keyed event-time windows
//! into the exactly-once file sink): injected task panics, a SIGKILL of the
//! whole process (once, and again and again at random moments in a loop
//! that changes the parallelism at each restart), rescaling 2 -> 3 -> 1
//! through retained checkpoints, a savepoint taken on request and restored
//! at another parallelism: in each case the committed output must equal a
//! failure-free run's exactly. And a
//! corrupt, truncated or deleted state file in the newest checkpoint: the
//! restore falls back to the older one and loses no row.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rheon::jobs::windowed_sums::{build, committed_lines};
use rheon::{CheckpointConfig, EngineConfig, JobOutcome, RestartStrategy, StreamEnv};
use rheon_state::checkpoint::Depth;
use rheon_tests::{rheon_binary, FailureInjector, TempDir};

/// Events per run: small in CI, larger with `RHEON_CHECKPOINT_TEST_EVENTS`.
fn events() -> u64 {
    rheon_tests::checkpoint_test_events()
}

/// The failure-free output, computed once.
fn expected() -> &'static Vec<String> {
    static EXPECTED: OnceLock<Vec<String>> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let dir = TempDir::new("ckpt-expected");
        let dir = dir.path();
        let env = StreamEnv::new(
            EngineConfig::default()
                .with_executors(2)
                .with_parallelism(2),
        );
        build(&env, events(), None, dir, |_| {});
        env.execute("expected").expect("failure-free run");
        let lines = committed_lines(dir).unwrap();
        assert!(lines.len() > 1000, "{} rows", lines.len());
        lines
    })
}

struct Run<'a> {
    parallelism: u32,
    failures: &'a [u64],
    restart: RestartStrategy,
    checkpoints: &'a Path,
    /// Restore from this checkpoint, or the newest valid one under this root.
    restore: Option<&'a Path>,
    output: &'a Path,
}

/// Runs the job with checkpoints every 100 ms at 30 000 events/s, panicking
/// a task at the first record at or past each of `failures` (record numbers),
/// one per attempt.
fn run(r: &Run<'_>) -> Result<JobOutcome, rheon::JobError> {
    job(r, Duration::from_millis(100)).execute("windows")
}

/// The job of [`run`], with checkpoints every `interval`.
fn job(r: &Run<'_>, interval: Duration) -> StreamEnv {
    let mut c = CheckpointConfig::every(interval, r.checkpoints);
    c.restart = r.restart.clone();
    c.retained = 3;
    c.restore_from = r.restore.map(Path::to_path_buf);
    let config = EngineConfig::default()
        .with_executors(2)
        .with_parallelism(r.parallelism)
        .with_checkpoints(c);
    let env = StreamEnv::new(config);
    let failures = FailureInjector::new(r.failures, None);
    build(&env, events(), Some(30_000.0), r.output, move |e| {
        failures.check(e.1 as u64)
    });
    env
}

fn at(fraction: f64) -> u64 {
    (events() as f64 * fraction) as u64
}

#[test]
fn injected_task_failures_commit_exactly_the_failure_free_output() {
    let output_dir = TempDir::new("ckpt-failing-out");
    let output = output_dir.path().to_path_buf();
    let checkpoints_dir = TempDir::new("ckpt-failing-chk");
    let checkpoints = checkpoints_dir.path().to_path_buf();
    let failures = [at(0.15), at(0.35), at(0.37), at(0.66)];
    let outcome = run(&Run {
        parallelism: 2,
        failures: &failures,
        restart: RestartStrategy::FixedDelay {
            attempts: 10,
            delay: Duration::from_millis(20),
        },
        checkpoints: &checkpoints,
        restore: None,
        output: &output,
    })
    .expect("the job recovers and succeeds");
    assert_eq!(
        outcome.restarts, 4,
        "every injected failure restarted the job"
    );
    assert!(!outcome.checkpoints.is_empty(), "checkpoints completed");
    let got = committed_lines(&output).unwrap();
    assert_eq!(got.len(), expected().len());
    assert!(
        got == *expected(),
        "committed output differs from the failure-free run"
    );
}

#[test]
fn rescaling_2_to_3_to_1_through_retained_checkpoints() {
    let output_dir = TempDir::new("ckpt-rescale-out");
    let output = output_dir.path().to_path_buf();
    let checkpoints_dir = TempDir::new("ckpt-rescale-chk");
    let checkpoints = checkpoints_dir.path().to_path_buf();
    let stop = |p: u32, failure: u64, restore: Option<&Path>| {
        let result = run(&Run {
            parallelism: p,
            failures: &[failure],
            restart: RestartStrategy::None,
            checkpoints: &checkpoints,
            restore,
            output: &output,
        });
        assert!(result.is_err(), "the run at parallelism {p} was to fail");
    };
    stop(2, at(0.3), None);
    let after_first = rheon_state::checkpoint::list_completed(&checkpoints).unwrap();
    assert!(
        !after_first.is_empty(),
        "a checkpoint completed at parallelism 2"
    );
    stop(3, at(0.6), Some(&checkpoints));
    let after_second = rheon_state::checkpoint::list_completed(&checkpoints).unwrap();
    assert!(
        after_second[0].0 > after_first[0].0,
        "a checkpoint completed at parallelism 3"
    );
    run(&Run {
        parallelism: 1,
        failures: &[],
        restart: RestartStrategy::None,
        checkpoints: &checkpoints,
        restore: Some(&checkpoints),
        output: &output,
    })
    .expect("the run at parallelism 1 finishes");
    assert!(committed_lines(&output).unwrap() == *expected());
}

/// How a test damages a state file of the newest checkpoint.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// One byte in the middle of a key group's section flipped.
    Corrupt,
    /// Cut to half its length.
    Truncate,
    /// Deleted.
    Delete,
}

fn damage(file: &Path, how: Damage) {
    let bytes = std::fs::read(file).unwrap();
    match how {
        Damage::Corrupt => {
            // The middle byte of the largest key group's section: the file
            // still opens, only that section's checksum fails.
            let section = rheon_state::snapshot::SnapshotFile::open(file)
                .unwrap()
                .index()
                .iter()
                .max_by_key(|entry| entry.size_bytes)
                .map(|entry| entry.offset + entry.size_bytes / 2)
                .expect("a key group");
            let mut bytes = bytes;
            bytes[section as usize] ^= 0xff;
            std::fs::write(file, bytes).unwrap();
        }
        Damage::Truncate => std::fs::write(file, &bytes[..bytes.len() / 2]).unwrap(),
        Damage::Delete => std::fs::remove_file(file).unwrap(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_corrupt_truncated_or_missing_state_file_falls_back_to_an_older_checkpoint() {
    let output_dir = TempDir::new("ckpt-damaged-out");
    let output = output_dir.path().to_path_buf();
    let checkpoints_dir = TempDir::new("ckpt-damaged-chk");
    let checkpoints = checkpoints_dir.path().to_path_buf();
    let result = run(&Run {
        parallelism: 2,
        failures: &[at(0.5)],
        restart: RestartStrategy::None,
        checkpoints: &checkpoints,
        restore: None,
        output: &output,
    });
    assert!(result.is_err());
    let completed = rheon_state::checkpoint::list_completed(&checkpoints).unwrap();
    assert!(
        completed.len() >= 2,
        "two retained checkpoints: {completed:?}"
    );
    let newest_name = completed[0].1.file_name().unwrap().to_owned();
    for how in [Damage::Corrupt, Damage::Truncate, Damage::Delete] {
        // Each damage on its own copy of the checkpoints and the output.
        let copy = TempDir::new("ckpt-damaged-copy");
        let (checkpoints, output) = (copy.path().join("chk"), copy.path().join("out"));
        copy_dir(checkpoints_dir.path(), &checkpoints);
        copy_dir(output_dir.path(), &output);
        let newest = checkpoints.join(&newest_name);
        let file = std::fs::read_dir(&newest)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "snap"))
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .expect("a state file");
        damage(&file, how);
        let error = rheon_state::checkpoint::verify(&newest).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&*file.file_name().unwrap().to_string_lossy()),
            "{how:?}: the error names the file: {error}"
        );
        // A flipped byte inside a section passes the check before a restore
        // (headers, indexes, footers): the restoring task finds it, and the
        // job master sets the checkpoint aside and restores the older one.
        let layout = rheon_state::checkpoint::verify_to(&newest, Depth::Layout);
        assert_eq!(
            layout.is_ok(),
            matches!(how, Damage::Corrupt),
            "{how:?}: only the corrupt section passes the layout check: {layout:?}"
        );
        if let Damage::Corrupt = how {
            // Restored alone, with nothing older to fall back to: the job
            // fails, naming the file and key group, and commits nothing.
            let before = committed_lines(&output).unwrap();
            let error = run(&Run {
                parallelism: 2,
                failures: &[],
                restart: RestartStrategy::None,
                checkpoints: &copy.path().join("alone"),
                restore: Some(&newest),
                output: &output,
            })
            .expect_err("a corrupt checkpoint restored alone fails the job");
            let message = error.to_string();
            for part in [&*file.file_name().unwrap().to_string_lossy(), "key group"] {
                assert!(message.contains(part), "{part:?} is not in: {message}");
            }
            assert_eq!(committed_lines(&output).unwrap(), before);
        }
        let (chosen, _, skipped) = rheon_state::checkpoint::latest_valid(&checkpoints).unwrap();
        assert_eq!(
            chosen.file_name(),
            completed[1].1.file_name(),
            "{how:?}: the older checkpoint is the one to restore"
        );
        assert_eq!(skipped.len(), 1, "{how:?}: the damaged one is skipped");
        // The newest checkpoint's sink commits were already made visible by
        // the notification; the rerun from the older one rewrites the rows
        // after it, which may repeat those (as in Flink) but must lose none.
        run(&Run {
            parallelism: 2,
            failures: &[],
            restart: RestartStrategy::None,
            checkpoints: &checkpoints,
            restore: Some(&checkpoints),
            output: &output,
        })
        .unwrap_or_else(|e| panic!("{how:?}: restores the older checkpoint and finishes: {e}"));
        let got = committed_lines(&output).unwrap();
        let expected: HashSet<&String> = expected().iter().collect();
        assert!(
            got.iter().all(|l| expected.contains(l)),
            "{how:?}: no foreign rows"
        );
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(
            distinct.len(),
            expected.len(),
            "{how:?}: every row committed"
        );
    }
}

#[test]
fn a_savepoint_taken_on_request_restores_at_another_parallelism() {
    let output_dir = TempDir::new("ckpt-savepoint-out");
    let output = output_dir.path().to_path_buf();
    let checkpoints_dir = TempDir::new("ckpt-savepoint-chk");
    let checkpoints = checkpoints_dir.path().to_path_buf();
    // No periodic checkpoint in the run: only the savepoint commits rows,
    // then a failure stops the job for good.
    let r = Run {
        parallelism: 2,
        failures: &[at(0.8)],
        restart: RestartStrategy::None,
        checkpoints: &checkpoints,
        restore: None,
        output: &output,
    };
    let handle = job(&r, Duration::from_secs(3600))
        .execute_detached("windows")
        .expect("the job starts");
    std::thread::sleep(Duration::from_millis(300));
    let savepoint = handle.savepoint().expect("the savepoint completes");
    assert!(
        savepoint
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("savepoint-")),
        "{}",
        savepoint.display()
    );
    let failed = handle.wait();
    assert!(failed.is_err(), "the injected failure stops the job");
    let committed = committed_lines(&output).unwrap();
    assert!(
        committed.len() < expected().len(),
        "the run stopped before its end ({} of {} rows)",
        committed.len(),
        expected().len()
    );
    rheon_state::checkpoint::verify(&savepoint).expect("the savepoint verifies");
    run(&Run {
        parallelism: 3,
        failures: &[],
        restart: RestartStrategy::None,
        checkpoints: &checkpoints,
        restore: Some(&savepoint),
        output: &output,
    })
    .expect("the job restored from the savepoint at parallelism 3 finishes");
    assert!(
        committed_lines(&output).unwrap() == *expected(),
        "committed output differs from the failure-free run"
    );
}

/// The `rheon windows` command line of a run into `output` with checkpoints
/// every 100 ms under `checkpoints`, restoring from there with `restore`.
fn windows_command(
    output: &Path,
    checkpoints: &Path,
    parallelism: u32,
    incremental: bool,
    restore: bool,
) -> Command {
    let mut command = Command::new(rheon_binary());
    command.arg("windows");
    command.args(["--records", &events().to_string(), "--rate", "30000"]);
    command.arg("--output").arg(output);
    command.arg("--checkpoint-dir").arg(checkpoints);
    command.args(["--checkpoint-interval-ms", "100", "--cores", "2"]);
    command.args(["--parallelism", &parallelism.to_string()]);
    if incremental {
        command.arg("--incremental");
    }
    if restore {
        command.arg("--restore").arg(checkpoints);
    }
    command
}

/// Waits until `checkpoints` holds a completed checkpoint and `at_least` has
/// passed since `started`.
fn wait_for_a_checkpoint(checkpoints: &Path, started: Instant, at_least: Duration) {
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let done = rheon_state::checkpoint::list_completed(checkpoints)
            .map(|c| !c.is_empty())
            .unwrap_or(false);
        if done && started.elapsed() > at_least {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no checkpoint completed"
        );
    }
}

#[test]
fn sigkill_then_restore_from_the_checkpoint_directory() {
    let output = TempDir::new("ckpt-kill-out");
    let checkpoints = TempDir::new("ckpt-kill-chk");
    let (output, checkpoints) = (output.path(), checkpoints.path());
    let mut child = windows_command(output, checkpoints, 2, false, false)
        .spawn()
        .unwrap();
    // Kill at a moment that varies from run to run, once a checkpoint exists.
    let jitter = Duration::from_millis(u64::from(std::process::id() % 700));
    wait_for_a_checkpoint(
        checkpoints,
        Instant::now(),
        Duration::from_millis(300) + jitter,
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let status = windows_command(output, checkpoints, 2, false, true)
        .status()
        .unwrap();
    assert!(status.success(), "the restored run failed");
    assert!(committed_lines(output).unwrap() == *expected());
}

/// A job that finished leaves `_finished` (its final commits) in the
/// checkpoint root. A restore from there replays those commits, here one
/// undone as by a kill in the middle of them, and runs nothing: restoring the
/// last checkpoint instead would commit the rows after it twice. A fresh run
/// in the same root removes the record.
#[test]
fn a_restore_after_the_job_finished_replays_its_final_commits_and_runs_nothing() {
    let output_dir = TempDir::new("ckpt-finished-out");
    let output = output_dir.path().to_path_buf();
    let checkpoints_dir = TempDir::new("ckpt-finished-chk");
    let checkpoints = checkpoints_dir.path().to_path_buf();
    let mut r = Run {
        parallelism: 2,
        failures: &[],
        restart: RestartStrategy::None,
        checkpoints: &checkpoints,
        restore: None,
        output: &output,
    };
    let first = run(&r).expect("the job finishes");
    assert!(!first.already_finished);
    assert!(
        checkpoints.join("_finished").is_file(),
        "no _finished record"
    );
    assert!(committed_lines(&output).unwrap() == *expected());
    // Undo one final commit, as a kill between the record and the renames
    // would.
    let part = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .max_by_key(|p| {
            // The last rename made (a final commit) changed it last.
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(p).unwrap();
            (meta.ctime(), meta.ctime_nsec())
        })
        .expect("a committed part file");
    let name = part.file_name().unwrap().to_string_lossy().into_owned();
    let hidden = output.join(format!(".{name}.inprogress"));
    std::fs::rename(&part, &hidden).unwrap();
    assert!(committed_lines(&output).unwrap() != *expected());

    r.restore = Some(&checkpoints);
    r.parallelism = 3;
    let again = run(&r).expect("the restore of a finished job succeeds");
    assert!(again.already_finished, "the restore ran the job again");
    assert!(again.checkpoints.is_empty());
    assert!(part.exists(), "the undone commit was not replayed");
    assert!(committed_lines(&output).unwrap() == *expected());

    // A fresh run that fails leaves no record: the old one went at start.
    r.restore = None;
    let failures = [at(0.5)];
    r.failures = &failures;
    let fresh = TempDir::new("ckpt-finished-fresh-out");
    r.output = fresh.path();
    run(&r).expect_err("the fresh run fails");
    assert!(!checkpoints.join("_finished").exists());
    r.failures = &[];
    let damaged = b"RHEONFIN but not quite";
    std::fs::write(checkpoints.join("_finished"), damaged).unwrap();
    r.restore = Some(&checkpoints);
    let error = run(&r)
        .expect_err("a damaged record is refused")
        .to_string();
    assert!(
        error.contains("_finished") && error.contains("not a finished-job record"),
        "{error}"
    );
}

/// Kills per run of the kill loop: small in CI, more with `RHEON_KILL_ROUNDS`.
fn kill_rounds() -> u32 {
    std::env::var("RHEON_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// The process is SIGKILLed again and again at random moments (while it
/// restores, between checkpoints, while one is written), each time restarted
/// from the checkpoint directory at another parallelism; the run that is left
/// alone commits exactly the failure-free output. With full and incremental
/// checkpoints. `RHEON_KILL_SEED` replays a printed seed.
#[test]
fn sigkill_loop_at_random_moments_at_changing_parallelism_commits_exactly_once() {
    let seed = std::env::var("RHEON_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
                | 1
        });
    eprintln!("kill loop seed {seed} (RHEON_KILL_SEED replays it)");
    let mut random = seed;
    let mut next_ms = |below: u64| {
        // xorshift64: enough to spread the kills, and replayable.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % below
    };
    for incremental in [false, true] {
        let output = TempDir::new("ckpt-kill-loop-out");
        let checkpoints = TempDir::new("ckpt-kill-loop-chk");
        let (output, checkpoints) = (output.path(), checkpoints.path());
        let parallelisms = [2, 3, 1];
        let rounds = kill_rounds();
        for round in 0..=rounds {
            let parallelism = parallelisms[round as usize % parallelisms.len()];
            let mut child =
                windows_command(output, checkpoints, parallelism, incremental, round > 0)
                    .spawn()
                    .unwrap();
            if round == rounds {
                let status = child.wait().unwrap();
                assert!(
                    status.success(),
                    "incremental {incremental}: the last run (parallelism {parallelism}) failed"
                );
                break;
            }
            let started = Instant::now();
            let after = Duration::from_millis(next_ms(1200));
            if round == 0 {
                // Until the directory holds a checkpoint, a restart has
                // nothing to restore.
                wait_for_a_checkpoint(checkpoints, started, after);
            } else {
                std::thread::sleep(after);
            }
            child.kill().unwrap(); // SIGKILL; a no-op if it already finished
            let status = child.wait().unwrap();
            eprintln!(
                "incremental {incremental}, round {round} at parallelism {parallelism}: killed after {after:?} ({status})"
            );
            if status.success() {
                break; // it finished first: the job is done
            }
        }
        let got = committed_lines(output).unwrap();
        assert_eq!(got.len(), expected().len(), "incremental {incremental}");
        assert!(
            got == *expected(),
            "incremental {incremental}: committed output differs from the failure-free run"
        );
    }
}

/// A checkpoint still in flight when the job ends never completes. Its files
/// (its `chk-N` directory, and with incremental checkpoints its files in
/// `shared/`) are deleted once `execute` returns; the completed ones stay.
/// The checkpoint is held in flight by a map behind the keyed sum that sleeps
/// once, about 2 500 records before the end: the barrier then waits in the
/// sum's input while the sources finish (which aborts the checkpoint), and
/// the sum snapshots it anyway when the map wakes.
#[test]
fn checkpoints_in_flight_at_the_end_leave_no_files() {
    const RECORDS: u64 = 20_000;
    const KEYS: u64 = 500;
    for incremental in [false, true] {
        let dir = TempDir::new("ckpt-in-flight");
        let mut c = CheckpointConfig::every(Duration::from_millis(20), dir.path());
        c.incremental = incremental;
        let env = StreamEnv::new(
            EngineConfig::default()
                .with_executors(2)
                .with_parallelism(2)
                .with_checkpoints(c),
        );
        env.generate_with_rate(RECORDS, 20_000.0, |k| k)
            .map(|k: u64| (k % KEYS, 1u64))
            .key_by(|r: &(u64, u64)| r.0)
            .sum(|r: &(u64, u64)| r.1)
            .map(|r: (u64, u64)| {
                // Key 0's count passes this value once, after record 17 500.
                if r == (0, RECORDS / KEYS * 7 / 8) {
                    std::thread::sleep(Duration::from_millis(400));
                }
                r
            })
            .discard();
        let outcome = env.execute("in flight at the end").unwrap();
        assert!(!outcome.checkpoints.is_empty(), "no checkpoint completed");
        let entries = rheon_state::checkpoint::layout::scan(dir.path()).unwrap();
        assert!(
            entries.iter().all(|e| e.complete),
            "incremental {incremental}: incomplete checkpoint directories left: {:?}",
            entries
                .iter()
                .filter(|e| !e.complete)
                .map(|e| &e.path)
                .collect::<Vec<_>>()
        );
        let newest = entries.iter().map(|e| e.id).max().unwrap();
        let shared = dir.path().join(rheon_state::checkpoint::SHARED_DIR_NAME);
        if let Ok(files) = std::fs::read_dir(&shared) {
            for file in files {
                let name = file.unwrap().file_name().into_string().unwrap();
                let id = rheon_state::checkpoint::shared_file_checkpoint_id(&name).unwrap();
                assert!(
                    id <= newest,
                    "{name} was written by checkpoint {id}, which never completed"
                );
            }
        }
    }
}
