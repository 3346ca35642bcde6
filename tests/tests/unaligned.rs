//! Unaligned checkpoints end to end. The job counts generated records per
//! key (a keyed running sum over the union of two inputs that share one key
//! function) and sends the counts, rebalanced, and the generated records,
//! hash partitioned, through a slow operator (a union of inputs routed
//! differently) into the exactly-once file sink. The slow operator keeps
//! every exchange full, so buffers are in flight when barriers arrive and
//! checkpoints record them.
//!
//! Each injected failure waits until the newest completed checkpoint holds
//! in-flight data of the operators named, so the restore that follows has
//! some to replay. With task panics and restarts, and across restores at
//! parallelism 2 -> 3 -> 1 (in-flight data redistributed by key group, and
//! by whole old subtask for the rebalanced input), the committed output must
//! equal a failure-free run's exactly: a lost, repeated or misplaced
//! in-flight record changes a count or fails the keyed operator. In-flight
//! data that cannot be divided (a broadcast input) or has nowhere to go (its
//! operator is chained at the new parallelism) is refused with an error
//! naming the checkpoint.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rheon::jobs::windowed_sums::committed_lines;
use rheon::{
    CheckpointConfig, EngineConfig, JobError, JobOutcome, RestartStrategy, StreamEnv, TaskError,
};
use rheon_state::checkpoint::{list_completed, read_metadata, write_metadata, CheckpointMetadata};
use rheon_tests::{newest_checkpoint_id, TempDir};

/// Distinct keys of the running count.
const KEYS: u64 = 500;
/// The keyed operator and the slow one behind it.
const KEYED: &str = "counts";
const SLOW: &str = "slow";

fn events() -> u64 {
    rheon_tests::checkpoint_test_events()
}

fn at(fraction: f64) -> u64 {
    (events() as f64 * fraction) as u64
}

/// Two executors, small segments (so that the in-flight data of a
/// checkpoint is a few thousand records, not tens of thousands).
fn engine(parallelism: u32) -> EngineConfig {
    let mut config = rheon_tests::config(2, parallelism);
    config.segment_size_bytes = 4 * 1024;
    config
}

/// Sleeps 1 ms every 64 records of the calling thread: slower than the
/// generators, so buffers queue up in front of it.
fn pace() {
    thread_local! {
        static SEEN: Cell<u64> = const { Cell::new(0) };
    }
    SEEN.with(|seen| {
        seen.set(seen.get() + 1);
        if seen.get() % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// The newest completed checkpoint under `root`, if it holds in-flight data
/// of every operator in `operators`.
fn newest_with_in_flight(root: &Path, operators: &[&str]) -> Option<(u64, CheckpointMetadata)> {
    let completed = list_completed(root).ok()?;
    let (id, dir) = completed.first()?;
    let metadata = read_metadata(dir).ok()?;
    operators
        .iter()
        .all(|&name| in_flight_buffers(&metadata, name) > 0)
        .then_some((*id, metadata))
}

/// The in-flight buffers a checkpoint holds for an operator.
fn in_flight_buffers(metadata: &CheckpointMetadata, operator: &str) -> usize {
    metadata
        .operators
        .iter()
        .filter(|o| o.name == operator)
        .flat_map(|o| &o.channel_state)
        .map(|entry| entry.buffers.len())
        .sum()
}

/// Task panics to inject: each at the first record from its number on that
/// a generator makes once the newest completed checkpoint under
/// `checkpoints` holds in-flight data of every operator in `needs` and is
/// newer than every checkpoint there when the `Failures` were made (a run
/// restored from an older one fails only after a checkpoint of its own).
/// (A due failure does not slow the generator while it waits, as the
/// harness's `FailureInjector` does: in-flight data needs the backpressure
/// of a fast generator.)
struct Failures {
    checkpoints: PathBuf,
    needs: Vec<&'static str>,
    /// The newest completed checkpoint at creation (0 for none).
    after: u64,
    state: Mutex<FailureState>,
}

#[derive(Default)]
struct FailureState {
    pending: Vec<u64>,
    last_check: Option<Instant>,
    /// The newest checkpoint (with in-flight data) at each failure: the one
    /// the restart restores.
    checkpoints: Vec<u64>,
}

impl Failures {
    fn new(checkpoints: &Path, needs: &[&'static str], at: &[u64]) -> Arc<Failures> {
        Arc::new(Failures {
            checkpoints: checkpoints.to_path_buf(),
            needs: needs.to_vec(),
            after: newest_checkpoint_id(checkpoints),
            state: Mutex::new(FailureState {
                pending: at.to_vec(),
                ..FailureState::default()
            }),
        })
    }

    fn check(&self, record: u64) {
        let mut state = self.state.lock().unwrap();
        let Some(i) = state.pending.iter().position(|&at| at <= record) else {
            return;
        };
        // Reading the checkpoint directory on every record would be the
        // slowest operator of the job.
        let throttled = state
            .last_check
            .is_some_and(|t| t.elapsed() < Duration::from_millis(2));
        if !throttled {
            state.last_check = Some(Instant::now());
            let newest = newest_with_in_flight(&self.checkpoints, &self.needs)
                .filter(|&(id, _)| id > self.after);
            if let Some((id, _)) = newest {
                state.pending.remove(i);
                state.checkpoints.push(id);
                drop(state); // panic without poisoning the lock
                panic!("injected failure at record {record}, after checkpoint {id}");
            }
        }
    }

    fn injected(&self) -> Vec<u64> {
        self.state.lock().unwrap().checkpoints.clone()
    }
}

/// Adds the job: `(key, count)` lines of the running count and a `(k, 0)`
/// line per record `k`, exactly once into `output`.
fn build(env: &StreamEnv, output: &Path, slow: bool, failures: Option<Arc<Failures>>) {
    let events = env.generate(events(), move |k| {
        if let Some(failures) = &failures {
            failures.check(k);
        }
        (k, 0u64)
    });
    let ones = |(k, _): (u64, u64)| (k % KEYS, 1u64);
    let even = events.filter(|r: &(u64, u64)| r.0 % 2 == 0).map(ones);
    let odd = events.filter(|r: &(u64, u64)| r.0 % 2 == 1).map(ones);
    let counts = even
        .union(odd)
        .key_by(|r: &(u64, u64)| r.0)
        .sum(|r: &(u64, u64)| r.1)
        .name(KEYED);
    // Straight from the generator, so the checkpoint knows its parallelism.
    let marks = events.key_by(|r: &(u64, u64)| r.0 % 7).into_stream();
    counts
        .rebalance()
        .union(marks)
        .map(move |r: (u64, u64)| {
            if slow {
                pace();
            }
            r
        })
        .name(SLOW)
        .sink_to_files(output, |r: &(u64, u64), line: &mut String| {
            use std::fmt::Write;
            let _ = write!(line, "{} {}", r.0, r.1);
        });
}

/// The failure-free output, computed once.
fn expected() -> &'static Vec<String> {
    static EXPECTED: OnceLock<Vec<String>> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let dir = TempDir::new("unaligned-expected");
        let env = StreamEnv::new(engine(2));
        build(&env, dir.path(), false, None);
        env.execute("expected").expect("failure-free run");
        let lines = committed_lines(dir.path()).unwrap();
        assert_eq!(lines.len() as u64, 2 * events());
        lines
    })
}

/// Checks that a run failed by an injected failure.
fn expect_injected(result: Result<JobOutcome, JobError>, what: &str) {
    match result {
        Err(e) if e.to_string().contains("injected failure") => {}
        Err(e) => panic!("{what} failed otherwise: {e}"),
        Ok(outcome) => panic!("{what} finished ({} restarts)", outcome.restarts),
    }
}

/// Unaligned checkpoints every 50 ms.
fn checkpointing(checkpoints: &Path, restart: RestartStrategy, restore: bool) -> CheckpointConfig {
    let mut c = CheckpointConfig::every(Duration::from_millis(50), checkpoints);
    c.unaligned = true;
    c.retained = 2;
    c.restart = restart;
    c.restore_from = restore.then(|| checkpoints.to_path_buf());
    c
}

fn run(
    parallelism: u32,
    checkpoints: &Path,
    restore: bool,
    output: &Path,
    failures: Option<Arc<Failures>>,
    restart: RestartStrategy,
) -> Result<JobOutcome, JobError> {
    let env = StreamEnv::new(engine(parallelism).with_checkpoints(checkpointing(
        checkpoints,
        restart,
        restore,
    )));
    build(&env, output, true, failures);
    env.execute("unaligned")
}

#[test]
fn injected_failures_restore_in_flight_data_exactly_once() {
    let output = TempDir::new("unaligned-failing-out");
    let checkpoints = TempDir::new("unaligned-failing-chk");
    let failures = Failures::new(checkpoints.path(), &[KEYED], &[at(0.2), at(0.45), at(0.7)]);
    let outcome = run(
        2,
        checkpoints.path(),
        false,
        output.path(),
        Some(failures.clone()),
        RestartStrategy::FixedDelay {
            attempts: 10,
            delay: Duration::from_millis(20),
        },
    )
    .expect("the job recovers and succeeds");
    // Each failure came once the newest checkpoint, the one the restart
    // restores, held in-flight data of the keyed operator.
    let injected = failures.injected();
    eprintln!(
        "restored from checkpoints {injected:?} (with in-flight data); {} checkpoints completed",
        outcome.checkpoints.len()
    );
    assert_eq!(
        outcome.restarts, 3,
        "every injected failure restarted the job"
    );
    assert_eq!(injected.len(), 3);
    let got = committed_lines(output.path()).unwrap();
    assert_eq!(got.len(), expected().len());
    assert!(
        got == *expected(),
        "committed output differs from the failure-free run"
    );
}

#[test]
fn in_flight_data_is_redistributed_at_2_then_3_then_1() {
    let output = TempDir::new("unaligned-rescale-out");
    let checkpoints = TempDir::new("unaligned-rescale-chk");
    let (out, chk) = (output.path(), checkpoints.path());
    let mut newest = 0;
    for (parallelism, failure, restore) in [(2, at(0.3), false), (3, at(0.6), true)] {
        let failures = Failures::new(chk, &[KEYED, SLOW], &[failure]);
        let result = run(
            parallelism,
            chk,
            restore,
            out,
            Some(failures.clone()),
            RestartStrategy::None,
        );
        expect_injected(result, &format!("the run at parallelism {parallelism}"));
        // The checkpoint the next run restores holds in-flight data of both
        // operators, taken at this parallelism.
        let (id, metadata) = newest_with_in_flight(chk, &[KEYED, SLOW])
            .expect("the newest checkpoint holds in-flight data");
        assert!(
            id > newest,
            "a checkpoint completed at parallelism {parallelism}"
        );
        newest = id;
        for name in [KEYED, SLOW] {
            let operator = metadata.operators.iter().find(|o| o.name == name).unwrap();
            assert_eq!(operator.parallelism, parallelism);
            eprintln!(
                "checkpoint {id} at parallelism {parallelism}: {} in-flight buffers of '{name}'",
                in_flight_buffers(&metadata, name)
            );
        }
    }
    run(1, chk, true, out, None, RestartStrategy::None).expect("the run at parallelism 1 finishes");
    assert!(
        committed_lines(out).unwrap() == *expected(),
        "committed output differs from the failure-free run"
    );
}

/// Runs a job with unaligned checkpoints until the newest completed
/// checkpoint holds in-flight data of `operator`, then fails it for good;
/// `build` adds the job, given the check to call per generated record.
fn stop_with_in_flight(
    parallelism: u32,
    checkpoints: &Path,
    operator: &'static str,
    build: impl Fn(&StreamEnv, Arc<Failures>),
) {
    let failures = Failures::new(checkpoints, &[operator], &[0]);
    let env = StreamEnv::new(engine(parallelism).with_checkpoints(checkpointing(
        checkpoints,
        RestartStrategy::None,
        false,
    )));
    build(&env, failures.clone());
    expect_injected(env.execute("stopped"), "the job");
    assert_eq!(
        failures.injected().len(),
        1,
        "a checkpoint with in-flight data of '{operator}' completed"
    );
}

/// The checkpoint error a restore at `parallelism` fails with.
fn restore_error(parallelism: u32, checkpoints: &Path, build: impl Fn(&StreamEnv)) -> String {
    let env = StreamEnv::new(engine(parallelism).with_checkpoints(checkpointing(
        checkpoints,
        RestartStrategy::None,
        true,
    )));
    build(&env);
    match env.execute("restored") {
        Err(JobError::TaskFailed { task, .. }) => {
            assert!(matches!(*task, TaskError::Restore { .. }), "{task:?}");
            eprintln!("refused: {task}");
            task.to_string()
        }
        Err(e) => panic!("the restore at parallelism {parallelism} failed otherwise: {e}"),
        Ok(_) => panic!("the restore at parallelism {parallelism} was not refused"),
    }
}

/// Every subtask of a broadcast input holds its own copy of a record; the
/// copies still due cannot be divided among other subtasks.
#[test]
fn broadcast_in_flight_data_is_refused_at_another_parallelism() {
    let checkpoints = TempDir::new("unaligned-broadcast-chk");
    let build = |env: &StreamEnv, failures: Option<Arc<Failures>>| {
        env.generate(400_000, move |k| {
            if let Some(failures) = &failures {
                failures.check(k);
            }
            k
        })
        .broadcast()
        .map(|k: u64| {
            pace();
            k
        })
        .name("broadcast head")
        .discard();
    };
    stop_with_in_flight(2, checkpoints.path(), "broadcast head", |env, f| {
        build(env, Some(f))
    });
    let (_, newest) = list_completed(checkpoints.path()).unwrap()[0].clone();
    let message = restore_error(3, checkpoints.path(), |env| build(env, None));
    assert_mentions(
        &message,
        &[
            &newest.display().to_string(),
            "'broadcast head'",
            "broadcast",
            "restore it at parallelism 2",
        ],
    );
}

/// Generators at parallelism 2 and a slow map: at parallelism 3 the map
/// reads them through a rebalance, at 2 it is chained to them.
fn paced(env: &StreamEnv, failures: Option<Arc<Failures>>) {
    env.generate(400_000, move |k| {
        if let Some(failures) = &failures {
            failures.check(k);
        }
        k
    })
    .set_parallelism(2)
    .map(|k: u64| {
        pace();
        k
    })
    .name("paced")
    .discard();
}

/// An operator that was a task's head at the checkpoint and is chained to
/// its producer at the new parallelism has no input to replay into.
#[test]
fn in_flight_data_of_an_operator_chained_at_the_new_parallelism_is_refused() {
    let checkpoints = TempDir::new("unaligned-chained-chk");
    stop_with_in_flight(3, checkpoints.path(), "paced", |env, f| paced(env, Some(f)));
    let (_, newest) = list_completed(checkpoints.path()).unwrap()[0].clone();
    let message = restore_error(2, checkpoints.path(), |env| paced(env, None));
    assert_mentions(
        &message,
        &[
            &newest.display().to_string(),
            "'paced'",
            "chained behind",
            "restore it with the parallelisms it was taken at",
        ],
    );
}

/// Recorded buffers whose framing is broken, or whose records do not decode,
/// fail the restore with an error naming the checkpoint and the buffer.
#[test]
fn corrupt_in_flight_data_fails_the_restore_naming_the_checkpoint() {
    let checkpoints = TempDir::new("unaligned-corrupt-chk");
    stop_with_in_flight(3, checkpoints.path(), "paced", |env, f| paced(env, Some(f)));
    let (_, newest) = list_completed(checkpoints.path()).unwrap()[0].clone();
    let metadata = read_metadata(&newest).unwrap();
    // A frame running past the buffer's end; a 3-byte record of a u64.
    for (bytes, what) in [
        (vec![10, 0, 0, 0, 1, 2], "is corrupt"),
        (vec![3, 0, 0, 0, 1, 2, 3], "does not decode"),
    ] {
        let mut damaged = metadata.clone();
        for operator in &mut damaged.operators {
            for entry in &mut operator.channel_state {
                entry.buffers[0] = bytes.clone();
            }
        }
        write_metadata(&newest, &damaged).unwrap();
        let message = restore_error(3, checkpoints.path(), |env| paced(env, None));
        assert_mentions(
            &message,
            &[
                &newest.display().to_string(),
                "'paced'",
                "in-flight buffer 0",
                what,
            ],
        );
    }
}

/// Fails naming each of `parts` that `message` does not contain.
fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} is not in: {message}");
    }
}
