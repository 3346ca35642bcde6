//! Nexmark queries with checkpoints: the stateful queries (keyed process and
//! co-process functions with timers, windows, the q5 operator state) write
//! exactly-once part files; after injected task panics, and after a restore
//! at another parallelism, the committed rows equal a failure-free run's.
//! Also from a JSON-lines file, whose source checkpoints its position.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rheon::jobs::windowed_sums::committed_lines;
use rheon::nexmark::{self, Event, GeneratorConfig, Query};
use rheon::{CheckpointConfig, EngineConfig, JobError, JobOutcome, RestartStrategy, StreamEnv};
use rheon_tests::TempDir;

/// Events per run: small in CI, larger with `RHEON_CHECKPOINT_TEST_EVENTS`.
fn events() -> u64 {
    rheon_tests::checkpoint_test_events()
}

/// Generated events at 5 000 per second of event time, so that the stream
/// spans many windows and auction lifetimes; at 60 000 events/s of wall
/// time, checkpoints every 50 ms cut it many times.
fn generator() -> GeneratorConfig {
    GeneratorConfig {
        num_events: events(),
        first_event_rate: 5_000,
        ..GeneratorConfig::default()
    }
}

struct Run<'a> {
    query: Query,
    parallelism: u32,
    /// Panics when the job has seen this many events (counting replays).
    failures: &'a [u64],
    restart: RestartStrategy,
    checkpoints: &'a Path,
    restore: bool,
    output: &'a Path,
    /// Read the events from this JSON-lines file instead of the generator
    /// (the reader is slowed down, so checkpoints complete between failures).
    input: Option<&'a Path>,
}

fn run(r: &Run<'_>) -> Result<JobOutcome, JobError> {
    let mut c = CheckpointConfig::every(Duration::from_millis(50), r.checkpoints);
    c.restart = r.restart.clone();
    c.retained = 2;
    if r.restore {
        c.restore_from = Some(r.checkpoints.to_path_buf());
    }
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(r.parallelism)
            .with_checkpoints(c),
    );
    let pending: Arc<Mutex<HashSet<u64>>> =
        Arc::new(Mutex::new(r.failures.iter().copied().collect()));
    let seen = Arc::new(AtomicU64::new(0));
    let (source, slow) = match r.input {
        Some(path) => (nexmark::json_file_source(&env, path.to_path_buf()), true),
        None => (
            nexmark::generator_source_with_rate(&env, generator(), 60_000.0),
            false,
        ),
    };
    let events = source
        .map(move |e: Event| {
            let n = seen.fetch_add(1, Ordering::Relaxed);
            if pending.lock().unwrap().remove(&n) {
                panic!("injected failure at event {n}");
            }
            if slow && n % 100 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            e
        })
        .name("failure injection");
    nexmark::build(r.query, events).sink_to_files(r.output.to_path_buf());
    env.execute(&format!("nexmark {} with checkpoints", r.query))
}

/// The committed rows of a failure-free run of `query`.
fn expected(query: Query) -> Vec<String> {
    let output = TempDir::new("nx-ckpt-expected-out");
    let checkpoints = TempDir::new("nx-ckpt-expected-chk");
    run(&Run {
        query,
        parallelism: 2,
        failures: &[],
        restart: RestartStrategy::None,
        checkpoints: checkpoints.path(),
        restore: false,
        output: output.path(),
        input: None,
    })
    .unwrap_or_else(|e| panic!("{query} failure-free: {e}"));
    let rows = committed_lines(output.path()).unwrap();
    assert!(!rows.is_empty(), "{query} committed no rows");
    rows
}

fn assert_same_rows(query: Query, got: &[String], want: &[String]) {
    assert_eq!(got.len(), want.len(), "{query}: committed row count");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{query}: committed rows differ from the failure-free run at sorted row {i}: {:?} vs {:?}",
            got[i], want[i]
        );
    }
}

/// Stateful queries: keyed process (q3, q5's second step, q6, q7's second
/// step), co-process with timers (q4, q6, q9, q20), windows (q7, q8, q11),
/// operator state split by key on restore (q5's first step).
const STATEFUL: [Query; 9] = [
    Query::Q3,
    Query::Q4,
    Query::Q5,
    Query::Q6,
    Query::Q7,
    Query::Q8,
    Query::Q9,
    Query::Q11,
    Query::Q20,
];

/// Runs `query` (on `input`, else the generator) with two injected task
/// panics and checks that it recovered and committed the failure-free rows.
fn recovers_from_two_panics(query: Query, input: Option<&Path>) {
    let n = events();
    let want = expected(query);
    let output = TempDir::new("nx-ckpt-failing-out");
    let checkpoints = TempDir::new("nx-ckpt-failing-chk");
    let outcome = run(&Run {
        query,
        parallelism: 2,
        failures: &[n * 3 / 10, n * 7 / 10],
        restart: RestartStrategy::FixedDelay {
            attempts: 5,
            delay: Duration::from_millis(10),
        },
        checkpoints: checkpoints.path(),
        restore: false,
        output: output.path(),
        input,
    })
    .unwrap_or_else(|e| panic!("{query} with failures: {e}"));
    assert_eq!(outcome.restarts, 2, "{query}: both failures restarted it");
    assert!(
        !outcome.checkpoints.is_empty(),
        "{query}: checkpoints completed"
    );
    let got = committed_lines(output.path()).unwrap();
    assert_same_rows(query, &got, &want);
}

#[test]
fn stateful_queries_commit_exactly_the_failure_free_rows_after_task_panics() {
    for query in STATEFUL {
        recovers_from_two_panics(query, None);
    }
}

#[test]
fn stateful_queries_rescale_2_to_1_and_to_3_from_a_checkpoint() {
    let n = events();
    for query in [Query::Q4, Query::Q5, Query::Q20] {
        let want = expected(query);
        let output = TempDir::new("nx-ckpt-rescale-out");
        let checkpoints = TempDir::new("nx-ckpt-rescale-chk");
        let stop = |parallelism: u32, failure: u64, restore: bool| {
            let result = run(&Run {
                query,
                parallelism,
                failures: &[failure],
                restart: RestartStrategy::None,
                checkpoints: checkpoints.path(),
                restore,
                output: output.path(),
                input: None,
            });
            assert!(
                result.is_err(),
                "{query} at parallelism {parallelism} was to fail"
            );
        };
        stop(2, n / 3, false);
        stop(1, n / 3, true);
        run(&Run {
            query,
            parallelism: 3,
            failures: &[],
            restart: RestartStrategy::None,
            checkpoints: checkpoints.path(),
            restore: true,
            output: output.path(),
            input: None,
        })
        .unwrap_or_else(|e| panic!("{query} restored at parallelism 3: {e}"));
        let got = committed_lines(output.path()).unwrap();
        assert_same_rows(query, &got, &want);
    }
}

/// The generated events as a JSON-lines file (the format `rheon nexmark
/// generate` writes).
fn json_file(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("events.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut line = String::new();
    for event in nexmark::events(&generator(), 0..events()) {
        line.clear();
        nexmark::to_json_line(&event, &mut line);
        writeln!(file, "{line}").unwrap();
    }
    file.flush().unwrap();
    path
}

/// The JSON file source continues from its checkpointed position: q5 and
/// q7 read from a file, with two injected failures, commit the generator's
/// failure-free rows.
#[test]
fn queries_on_a_json_file_commit_exactly_the_failure_free_rows_after_task_panics() {
    let input = TempDir::new("nx-ckpt-json-in");
    let path = json_file(input.path());
    for query in [Query::Q5, Query::Q7] {
        recovers_from_two_panics(query, Some(&path));
    }
}
