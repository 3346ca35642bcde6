//! Incremental checkpoints (`CheckpointConfig::incremental`): a keyed `sum`,
//! a keyed `reduce`, a keyed process function with value state and
//! event-time timers, and the `windows` job's event-time window
//! aggregates, into the exactly-once file sink, whose checkpoints are chains
//! of a full base and changelog deltas in the root's `shared` directory. With
//! injected task panics, and across restores at parallelism 2 -> 3 -> 1, the
//! committed output must equal a failure-free run's exactly; unused shared
//! files must be deleted. A savepoint taken meanwhile is self-contained:
//! full states, no in-flight data, restorable once the job's checkpoint
//! directory is gone.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use rheon::jobs::windowed_sums::{self, committed_lines};
use rheon::{
    CheckpointConfig, Emitter, EngineConfig, JobOutcome, KeyedContext, KeyedProcessFunction,
    RestartStrategy, StreamEnv, TimeDomain, ValueStateRef, WatermarkStrategy,
};
use rheon_state::checkpoint::{
    list_completed, read_metadata, shared_file_checkpoint_id, verify, SHARED_DIR_NAME,
};
use rheon_tests::{FailureInjector, Failures, TempDir};

/// Distinct keys of the sum: thousands of entries, so deltas are smaller
/// than bases.
const SUM_KEYS: u64 = 6000;
const REDUCE_KEYS: u64 = 700;
const PROCESS_KEYS: u64 = 900;

/// Counts each key's records in its value state, changed in place, and keeps
/// an event-time timer per key at time `count` (odd keys delete the previous
/// one): every record writes the state and the timers. The timers fire at the
/// end of the input; the first with the final count, which it clears.
#[derive(Clone)]
struct CountWithTimer;

impl KeyedProcessFunction<u64, u64, String> for CountWithTimer {
    type State = u64;

    fn process_element(
        &mut self,
        key: &u64,
        _record: u64,
        state: &mut ValueStateRef<'_, u64>,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, String>,
    ) {
        let count = match state.value_mut() {
            Some(count) => {
                *count += 1;
                *count
            }
            None => {
                state.update(1);
                1
            }
        };
        // Registered before the old one is deleted, so both change a key's
        // list of timers in place.
        ctx.register_event_time_timer(count as i64);
        // Even keys keep every timer: their timer lists last change by a
        // registration, odd keys' by a deletion.
        if key % 2 == 1 {
            ctx.delete_event_time_timer(count as i64 - 1);
        }
        out.emit(format!("p {key} {count}"));
    }

    fn on_timer(
        &mut self,
        key: &u64,
        timestamp: i64,
        _domain: TimeDomain,
        state: &mut ValueStateRef<'_, u64>,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, String>,
    ) {
        let count = state.value().copied().unwrap_or(0);
        out.emit(format!("t {key} {count} at {timestamp}"));
        state.clear();
    }
}

fn events() -> u64 {
    rheon_tests::checkpoint_test_events()
}

/// Every key's running count (sum of ones, reduce of ones): the emitted
/// values do not depend on the order in which a key's records arrive, so two
/// runs must commit the same lines.
///
/// `failures` are task panics injected as [`FailureInjector`] does: none
/// before `checkpoints` holds a completed checkpoint, so that a slow host
/// cannot make a run fail before it has one.
fn build(
    env: &StreamEnv,
    rate: Option<f64>,
    output: &Path,
    checkpoints: Option<&Path>,
    failures: Failures,
) {
    let events = match rate {
        Some(rate) => env.generate_with_rate(events(), rate, |k| k),
        None => env.generate(events(), |k| k),
    };
    let events = events.map(rheon_tests::fail_at_records(failures, checkpoints));
    events
        .map(|k: u64| (k % SUM_KEYS, 1u64))
        .key_by(|r: &(u64, u64)| r.0)
        .sum(|r: &(u64, u64)| r.1)
        .sink_to_files(output.join("sum"), |r: &(u64, u64), line: &mut String| {
            use std::fmt::Write;
            let _ = write!(line, "s {} {}", r.0, r.1);
        });
    // The reduce sees the first fifth of the records only: its state then
    // stays unchanged over many checkpoints, which reference its chain
    // without writing a file.
    let idle_from = self::events() / 5;
    events
        .filter(move |k: &u64| *k < idle_from)
        .map(|k: u64| (k % REDUCE_KEYS, 1u64))
        .key_by(|r: &(u64, u64)| r.0)
        .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
        .sink_to_files(
            output.join("reduce"),
            |r: &(u64, u64), line: &mut String| {
                use std::fmt::Write;
                let _ = write!(line, "r {} {}", r.0, r.1);
            },
        );
    // Every record at time 0: the watermark stays below the timers (1 and
    // later) until the end of the input moves it to the maximum.
    // A quarter of the records: the timers log up to two changes a record,
    // and a slow host's longer checkpoint intervals must still leave deltas
    // below the materialization ratio.
    events
        .filter(|k: &u64| k % 4 == 0)
        .map(|k: u64| (k / 4) % PROCESS_KEYS)
        .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(|_: &u64| 0))
        .key_by(|k: &u64| *k)
        .process(CountWithTimer)
        .sink_to_files(output.join("process"), |r: &String, line: &mut String| {
            line.push_str(r)
        });
}

fn committed(output: &Path) -> Vec<String> {
    let mut lines = committed_lines(&output.join("sum")).unwrap_or_default();
    lines.extend(committed_lines(&output.join("reduce")).unwrap_or_default());
    lines.extend(committed_lines(&output.join("process")).unwrap_or_default());
    lines.sort();
    lines
}

fn expected() -> &'static Vec<String> {
    static EXPECTED: OnceLock<Vec<String>> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let dir = TempDir::new("incr-expected");
        let env = StreamEnv::new(
            EngineConfig::default()
                .with_executors(2)
                .with_parallelism(2),
        );
        build(&env, None, dir.path(), None, Failures::NONE);
        env.execute("expected").expect("failure-free run");
        let lines = committed(dir.path());
        assert!(lines.len() as u64 > events() + events() / 5 + events() / 4 + PROCESS_KEYS);
        lines
    })
}

fn run(
    parallelism: u32,
    checkpoints: &Path,
    restore: bool,
    output: &Path,
    failures: Failures,
    restart: RestartStrategy,
) -> Result<JobOutcome, rheon::JobError> {
    let mut c = CheckpointConfig::every(Duration::from_millis(50), checkpoints);
    c.incremental = true;
    // Low, so runs hold both chains of several deltas and new bases.
    c.materialize_ratio = 0.5;
    c.retained = 2;
    c.restart = restart;
    c.restore_from = restore.then(|| checkpoints.to_path_buf());
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(parallelism)
            .with_checkpoints(c),
    );
    build(&env, Some(40_000.0), output, Some(checkpoints), failures);
    env.execute("incremental")
}

fn at(fraction: f64) -> u64 {
    (events() as f64 * fraction) as u64
}

/// The retained checkpoints' delta files, and a check that the shared
/// directory holds no file of a completed checkpoint's age that none of them
/// references (what subsumption must delete) and, once the job `ended`, no
/// file that none of them references (the end of the job deletes those of
/// checkpoints that never completed).
///
/// While the job runs, a subsumed checkpoint's files go some time after its
/// directory: a file is garbage only if it is still there a while later.
fn deltas_and_no_garbage(checkpoints: &Path, ended: bool) -> usize {
    let mut attempts = if ended { 1 } else { 40 };
    loop {
        match deltas_or_garbage(checkpoints, ended) {
            Ok(deltas) => return deltas,
            Err(garbage) if attempts == 1 => panic!("{garbage}"),
            Err(_) => attempts -= 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn deltas_or_garbage(checkpoints: &Path, ended: bool) -> Result<usize, String> {
    let completed = list_completed(checkpoints).unwrap();
    let newest = completed.iter().map(|c| c.0).max().expect("a checkpoint");
    let mut referenced = BTreeSet::new();
    let mut deltas = 0;
    for (_, dir) in &completed {
        for operator in read_metadata(dir).unwrap().operators {
            for state in operator.keyed_states {
                deltas += state.deltas.len();
                for file in state.files.iter().chain(&state.deltas) {
                    if let Some(name) = file.strip_prefix("../shared/") {
                        referenced.insert(name.to_owned());
                    }
                }
            }
        }
    }
    for entry in std::fs::read_dir(checkpoints.join(SHARED_DIR_NAME)).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let id = shared_file_checkpoint_id(&name).expect("shared files are named by id");
        if !referenced.contains(&name) && (ended || id <= newest) {
            return Err(format!(
                "{name} is of checkpoint {id} (newest retained: {newest}, job ended: {ended}) \
                 and referenced by no retained checkpoint"
            ));
        }
    }
    Ok(deltas)
}

/// Whether a retained checkpoint references a file of keyed state `state`
/// that an older checkpoint wrote as the chain's newest: one it did not
/// write because the state had not changed.
fn reused_chain(checkpoints: &Path, state: &str) -> bool {
    list_completed(checkpoints)
        .unwrap()
        .iter()
        .any(|(id, dir)| {
            read_metadata(dir)
                .unwrap()
                .operators
                .iter()
                .any(|operator| {
                    operator.keyed_states.iter().any(|keyed| {
                        let newest = (keyed.files.iter().chain(&keyed.deltas))
                            .filter_map(|file| {
                                let name = file.rsplit('/').next().unwrap_or_default();
                                shared_file_checkpoint_id(name)
                            })
                            .max();
                        keyed.name == state && newest.is_some_and(|at| at < *id)
                    })
                })
        })
}

#[test]
fn injected_failures_with_incremental_checkpoints_commit_exactly_once() {
    let output = TempDir::new("incr-failing-out");
    let checkpoints = TempDir::new("incr-failing-chk");
    let failures = [at(0.2), at(0.45), at(0.47), at(0.8)];
    let outcome = run(
        2,
        checkpoints.path(),
        false,
        output.path(),
        Failures::at(&failures),
        RestartStrategy::FixedDelay {
            attempts: 10,
            delay: Duration::from_millis(20),
        },
    )
    .expect("the job recovers and succeeds");
    assert_eq!(
        outcome.restarts, 4,
        "every injected failure restarted the job"
    );
    assert!(
        outcome.checkpoints.len() >= 4,
        "{} checkpoints",
        outcome.checkpoints.len()
    );
    deltas_and_no_garbage(checkpoints.path(), true);
    let got = committed(output.path());
    assert_eq!(got.len(), expected().len());
    assert!(
        got == *expected(),
        "committed output differs from the failure-free run"
    );
}

#[test]
fn incremental_checkpoints_restore_at_2_then_3_then_1() {
    let output = TempDir::new("incr-rescale-out");
    let checkpoints = TempDir::new("incr-rescale-chk");
    let (out, chk) = (output.path(), checkpoints.path());
    let mut deltas_seen = 0;
    let (mut values_deltas, mut timer_deltas) = (0, 0);
    let mut reused = 0;
    for (parallelism, failure, restore) in [(2, at(0.35), false), (3, at(0.7), true)] {
        // A run's first checkpoint writes bases (the job's first, or one
        // rescaled): its second is the first that can hold deltas.
        let result = run(
            parallelism,
            chk,
            restore,
            out,
            Failures::at(&[failure]).after_own(2),
            RestartStrategy::None,
        );
        assert!(
            result.is_err(),
            "the run at parallelism {parallelism} was to fail"
        );
        deltas_seen += deltas_and_no_garbage(chk, true);
        reused += usize::from(reused_chain(chk, "reduce"));
        values_deltas += rheon_tests::deltas_of(chk, "values");
        timer_deltas += rheon_tests::deltas_of(chk, "event-timers");
    }
    assert!(
        deltas_seen > 0,
        "no retained checkpoint held a delta: nothing incremental was tested"
    );
    assert!(
        values_deltas > 0 && timer_deltas > 0,
        "the process function's value state ({values_deltas} deltas) and timers \
         ({timer_deltas}) were never incremental"
    );
    assert!(
        reused > 0,
        "no retained checkpoint reused the idle reduce state's chain"
    );
    run(1, chk, true, out, Failures::NONE, RestartStrategy::None)
        .expect("the run at parallelism 1 finishes");
    assert!(
        committed(out) == *expected(),
        "committed output differs from the failure-free run"
    );
}

/// The `windows` job (tumbling event-time windows, aggregate function):
/// window contents are logged per key, including the removal of fired
/// windows.
#[test]
fn window_aggregates_with_incremental_checkpoints_commit_exactly_once() {
    let expected_dir = TempDir::new("incr-windows-expected");
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(2),
    );
    windowed_sums::build(&env, events(), None, expected_dir.path(), |_| {});
    env.execute("expected").expect("failure-free run");
    let expected = committed_lines(expected_dir.path()).unwrap();
    assert!(expected.len() > 1000, "{} rows", expected.len());

    let output = TempDir::new("incr-windows-out");
    let checkpoints = TempDir::new("incr-windows-chk");
    let mut c = CheckpointConfig::every(Duration::from_millis(50), checkpoints.path());
    c.incremental = true;
    c.materialize_ratio = 0.5;
    c.retained = 2;
    c.restart = RestartStrategy::FixedDelay {
        attempts: 10,
        delay: Duration::from_millis(20),
    };
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(2)
            .with_checkpoints(c),
    );
    let failures = FailureInjector::new(&[at(0.3), at(0.6), at(0.62)], None);
    windowed_sums::build(&env, events(), Some(30_000.0), output.path(), move |e| {
        failures.check(e.1 as u64)
    });
    let outcome = env
        .execute("windows")
        .expect("the job recovers and succeeds");
    assert_eq!(outcome.restarts, 3);
    deltas_and_no_garbage(checkpoints.path(), true);
    let got = committed_lines(output.path()).unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "committed output differs from the failure-free run"
    );
}

/// Copies the files of a checkpoint directory (flat) to `to`.
fn copy_flat(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A savepoint of a job with incremental, unaligned checkpoints writes
/// every state in full into its own directory and is aligned: it restores
/// at another parallelism from a copy, with the job's checkpoint directory
/// (and its shared changelog files) deleted.
#[test]
fn a_savepoint_under_incremental_unaligned_checkpoints_is_self_contained() {
    let output = TempDir::new("incr-savepoint-out");
    let checkpoints = TempDir::new("incr-savepoint-chk");
    let mut c = CheckpointConfig::every(Duration::from_millis(50), checkpoints.path());
    c.incremental = true;
    c.materialize_ratio = 4.0;
    c.unaligned = true;
    c.retained = 2;
    c.restart = RestartStrategy::None;
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(2)
            .with_checkpoints(c),
    );
    build(
        &env,
        Some(40_000.0),
        output.path(),
        Some(checkpoints.path()),
        Failures::at(&[at(0.8)]),
    );
    let handle = env.execute_detached("incremental").expect("the job starts");
    // Long enough for chains with deltas before the savepoint.
    let deltas_before = loop {
        std::thread::sleep(Duration::from_millis(50));
        if list_completed(checkpoints.path()).is_ok_and(|c| c.len() >= 2) {
            let deltas = deltas_and_no_garbage(checkpoints.path(), false);
            if deltas > 0 {
                break deltas;
            }
        }
    };
    assert!(deltas_before > 0);
    let savepoint = handle.savepoint().expect("the savepoint completes");
    assert!(
        handle.wait().is_err(),
        "the injected failure stops the job for good"
    );
    let metadata = read_metadata(&savepoint).unwrap();
    assert!(metadata.savepoint);
    for operator in &metadata.operators {
        assert!(
            operator.channel_state.is_empty(),
            "{}: a savepoint holds no in-flight data",
            operator.name
        );
        for state in &operator.keyed_states {
            assert!(
                state.deltas.is_empty() && state.files.iter().all(|f| !f.contains('/')),
                "{} {}: a savepoint's state files are its own, full ones: {:?} {:?}",
                operator.name,
                state.name,
                state.files,
                state.deltas
            );
        }
    }
    let moved = TempDir::new("incr-savepoint-moved");
    let copy = moved.path().join(savepoint.file_name().unwrap());
    copy_flat(&savepoint, &copy);
    std::fs::remove_dir_all(checkpoints.path()).unwrap();
    verify(&copy).expect("the copied savepoint verifies");

    let fresh = TempDir::new("incr-savepoint-chk2");
    restore_at_3_commits_the_expected_rows(&copy, fresh.path(), output.path());
}

/// Runs the job restored from `from` at parallelism 3 to its end,
/// checkpointing under `checkpoints`, into the `output` of the run it was
/// taken in; then checks the committed rows. Checkpoints after `from`
/// committed rows that the restored run emits again (restoring an older
/// checkpoint repeats its output, as in Flink). Every row is a key's running
/// count, so the distinct rows must be exactly the failure-free run's: a
/// lost or wrong state changes them.
fn restore_at_3_commits_the_expected_rows(from: &Path, checkpoints: &Path, output: &Path) {
    let mut c = CheckpointConfig::every(Duration::from_millis(50), checkpoints);
    c.incremental = true;
    c.restore_from = Some(from.to_path_buf());
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(3)
            .with_checkpoints(c),
    );
    build(&env, None, output, None, Failures::NONE);
    env.execute("restored").unwrap_or_else(|e| {
        panic!(
            "the job restored from {} at parallelism 3: {e}",
            from.display()
        )
    });
    let mut distinct = committed(output);
    distinct.dedup();
    assert!(
        distinct == *expected(),
        "committed rows differ from the failure-free run's"
    );
}

/// A job with a checkpoint directory and no interval takes only the
/// checkpoints asked for through its handle: incremental ones, named and
/// retained as periodic ones are, each committing the sink's output, and
/// the newest restores at another parallelism. Without a directory, the
/// request fails naming what is missing.
#[test]
fn checkpoints_taken_on_request_are_incremental_and_restore() {
    let output = TempDir::new("incr-request-out");
    let checkpoints = TempDir::new("incr-request-chk");
    let mut c = CheckpointConfig {
        directory: Some(checkpoints.path().to_path_buf()),
        incremental: true,
        retained: 3,
        ..CheckpointConfig::default()
    };
    c.restart = RestartStrategy::None;
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(2)
            .with_checkpoints(c),
    );
    build(&env, Some(20_000.0), output.path(), None, Failures::NONE);
    let handle = env.execute_detached("on request").expect("the job starts");
    std::thread::sleep(Duration::from_millis(200));
    let first = handle.checkpoint().expect("the first checkpoint completes");
    std::thread::sleep(Duration::from_millis(200));
    let second = handle
        .checkpoint()
        .expect("the second checkpoint completes");
    let outcome = handle.wait().expect("the job finishes");
    assert!(!outcome.checkpoints.is_empty());
    let id = |dir: &Path| -> u64 {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let id = name
            .strip_prefix("chk-")
            .unwrap_or_else(|| panic!("{name}"));
        id.parse().unwrap()
    };
    assert!(id(&first) < id(&second), "{first:?} {second:?}");
    let mut completed: Vec<u64> = list_completed(checkpoints.path())
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    completed.sort();
    assert_eq!(
        completed,
        vec![id(&first), id(&second)],
        "no periodic checkpoint"
    );
    let metadata = read_metadata(&second).unwrap();
    assert!(!metadata.savepoint);
    let sum = metadata
        .operators
        .iter()
        .flat_map(|o| &o.keyed_states)
        .find(|k| k.name == "sum")
        .expect("the sum's state");
    assert!(
        !sum.deltas.is_empty() && sum.files.iter().all(|f| f.starts_with("../shared/")),
        "the second checkpoint extends the first's chain: {:?} {:?}",
        sum.files,
        sum.deltas
    );

    restore_at_3_commits_the_expected_rows(&second, checkpoints.path(), output.path());

    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(2),
    );
    let unused = TempDir::new("incr-request-none");
    build(&env, Some(20_000.0), unused.path(), None, Failures::NONE);
    let handle = env
        .execute_detached("no directory")
        .expect("the job starts");
    std::thread::sleep(Duration::from_millis(200));
    let refused = handle
        .checkpoint()
        .expect_err("no checkpoint without a directory");
    assert!(refused.contains("no checkpoint directory"), "{refused}");
    handle.wait().expect("the job still finishes");
}
