//! Named keyed state (value, list, map, reducing, aggregating) in a keyed
//! process function: its results match a model computed here; with full and
//! incremental checkpoints, injected task panics and restores at parallelism
//! 2 -> 3 -> 1, the committed output equals a failure-free run's exactly.
//! Misuse is a task error that names the state: a handle used without being
//! registered, a name registered twice, a checkpoint holding a state the
//! function no longer registers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use rheon::jobs::windowed_sums::committed_lines;
use rheon::{
    AggregateFunction, AggregatingState, CheckpointConfig, Emitter, EngineConfig, JobError,
    KeyedContext, KeyedProcessFunction, KeyedStates, ListState, MapState, ReducingState,
    RestartStrategy, StreamEnv, TimeDomain, ValueState, ValueStateRef, WatermarkStrategy,
};
use rheon_tests::{Failures, TempDir};

const KEYS: u64 = 500;
/// A key's list is folded into one element (its sum) when it reaches this.
const LIST_FOLD: usize = 8;
/// Buckets of a key's map; a bucket is removed when its count reaches this.
const BUCKETS: u64 = 7;
const BUCKET_LIMIT: u64 = 5;

/// The mean of the values added, as (sum, count).
#[derive(Clone)]
struct Mean;

impl AggregateFunction for Mean {
    type In = u64;
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: u64, acc: &mut (u64, u64)) {
        acc.0 += value;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
}

/// Every kind of named state, changed by every record in ways whose end
/// result does not depend on the order of a key's records, and reported by
/// an event-time timer at the end of the input (every record is at time 0).
/// Each record also emits the key's count, which depends only on how many
/// records the key saw.
#[derive(Clone)]
struct AllStates {
    count: ValueState<u64>,
    list: ListState<u64>,
    buckets: MapState<u64, u64>,
    max: ReducingState<u64>,
    mean: AggregatingState<Mean>,
    /// Registers `list` under the name of `count` too (a misuse).
    register_twice: bool,
    /// Leaves `buckets` unregistered (a misuse, or a dropped state).
    skip_buckets: bool,
}

impl AllStates {
    fn new() -> Self {
        AllStates {
            count: ValueState::new("count"),
            list: ListState::new("list"),
            buckets: MapState::new("buckets"),
            max: ReducingState::new("max", |acc: &mut u64, v| *acc = (*acc).max(v)),
            mean: AggregatingState::new("mean", Mean),
            register_twice: false,
            skip_buckets: false,
        }
    }
}

impl KeyedProcessFunction<u64, u64, String> for AllStates {
    type State = ();

    fn open(&mut self, states: &mut KeyedStates<u64>) -> Result<(), String> {
        states.value(&mut self.count)?;
        states.list(&mut self.list)?;
        if !self.skip_buckets {
            states.map(&mut self.buckets)?;
        }
        states.reducing(&mut self.max)?;
        states.aggregating(&mut self.mean)?;
        if self.register_twice {
            let mut again = ListState::<u64>::new("count");
            states.list(&mut again)?;
        }
        Ok(())
    }

    fn process_element(
        &mut self,
        key: &u64,
        record: u64,
        _state: &mut ValueStateRef<'_, ()>,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, String>,
    ) {
        let count = {
            let mut count = ctx.value(&self.count);
            let next = count.value().map_or(1, |c| c + 1);
            count.update(next);
            next
        };
        let mut list = ctx.list(&self.list);
        list.add(record);
        if list.len() == LIST_FOLD {
            let sum = list.get().iter().sum();
            list.update(vec![sum]);
        }
        let mut buckets = ctx.map(&self.buckets);
        let bucket = record % BUCKETS;
        let n = buckets.get(&bucket).map_or(1, |n| n + 1);
        if n == BUCKET_LIMIT {
            buckets.remove(&bucket);
        } else {
            buckets.put(bucket, n);
        }
        ctx.reducing(&self.max).add(record);
        ctx.aggregating(&self.mean).add(record);
        if count == 1 {
            ctx.register_event_time_timer(1);
        }
        out.emit(format!("p {key} {count}"));
    }

    fn on_timer(
        &mut self,
        key: &u64,
        _timestamp: i64,
        _domain: TimeDomain,
        _state: &mut ValueStateRef<'_, ()>,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, String>,
    ) {
        let count = ctx.value(&self.count).value().copied().unwrap_or(0);
        let list = ctx.list(&self.list);
        let (len, sum) = (list.len(), list.get().iter().sum::<u64>());
        let buckets = ctx.map(&self.buckets);
        let buckets: BTreeMap<u64, u64> = buckets.entries().map(|(b, n)| (*b, *n)).collect();
        let max = ctx.reducing(&self.max).get().copied();
        let mean = ctx.aggregating(&self.mean).get();
        out.emit(format!(
            "t {key} count={count} list={len}/{sum} buckets={buckets:?} max={max:?} mean={mean:?}"
        ));
        ctx.list(&self.list).clear();
        ctx.map(&self.buckets).clear();
        assert!(ctx.list(&self.list).is_empty() && ctx.map(&self.buckets).is_empty());
    }
}

/// What `AllStates` reports for each key, computed directly.
fn model(events: u64) -> Vec<String> {
    let mut records: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for k in 0..events {
        records.entry(k % KEYS).or_default().push(k);
    }
    let mut lines = Vec::new();
    for (key, values) in records {
        let n = values.len() as u64;
        lines.extend((1..=n).map(|c| format!("p {key} {c}")));
        let sum: u64 = values.iter().sum();
        // Each fold turns LIST_FOLD elements into one.
        let mut len = 0;
        for _ in 0..n {
            len += 1;
            if len == LIST_FOLD {
                len = 1;
            }
        }
        let mut buckets = BTreeMap::new();
        for v in &values {
            *buckets.entry(v % BUCKETS).or_insert(0) += 1;
        }
        let buckets: BTreeMap<u64, u64> = buckets
            .into_iter()
            .map(|(b, c)| (b, c % BUCKET_LIMIT))
            .filter(|&(_, c)| c != 0)
            .collect();
        let max = values.iter().max().copied();
        lines.push(format!(
            "t {key} count={n} list={len}/{sum} buckets={buckets:?} max={max:?} mean={:?}",
            Some((sum, n))
        ));
    }
    lines.sort();
    lines
}

fn events() -> u64 {
    rheon_tests::checkpoint_test_events() / 2
}

/// The job: `events()` records into `AllStates`, keyed by `k % KEYS`, into
/// the exactly-once file sink, with `failures` injected (see
/// [`rheon_tests::FailureInjector`]).
fn build(
    env: &StreamEnv,
    function: AllStates,
    output: &Path,
    checkpoints: Option<&Path>,
    failures: Failures,
) {
    let events = match checkpoints {
        Some(_) => env.generate_with_rate(events(), 40_000.0, |k| k),
        None => env.generate(events(), |k| k),
    };
    events
        .map(rheon_tests::fail_at_records(failures, checkpoints))
        .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(|_: &u64| 0))
        .key_by(|k: &u64| k % KEYS)
        .process(function)
        .sink_to_files(output, |r: &String, line: &mut String| line.push_str(r));
}

fn committed(output: &Path) -> Vec<String> {
    let mut lines = committed_lines(output).unwrap_or_default();
    lines.sort();
    lines
}

fn expected() -> &'static Vec<String> {
    static EXPECTED: OnceLock<Vec<String>> = OnceLock::new();
    EXPECTED.get_or_init(|| model(events()))
}

fn run(
    parallelism: u32,
    checkpoints: &Path,
    incremental: bool,
    restore: bool,
    output: &Path,
    failures: Failures,
    restart: RestartStrategy,
) -> Result<rheon::JobOutcome, JobError> {
    let mut c = CheckpointConfig::every(Duration::from_millis(50), checkpoints);
    c.incremental = incremental;
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
    build(&env, AllStates::new(), output, Some(checkpoints), failures);
    env.execute("keyed-state")
}

fn at(fraction: f64) -> u64 {
    (events() as f64 * fraction) as u64
}

#[test]
fn every_kind_of_named_state_matches_the_model() {
    for parallelism in [1, 3] {
        let output = TempDir::new("named-state-model");
        let env = StreamEnv::new(
            EngineConfig::default()
                .with_executors(2)
                .with_parallelism(parallelism),
        );
        build(&env, AllStates::new(), output.path(), None, Failures::NONE);
        env.execute("keyed-state").expect("the job succeeds");
        let got = committed(output.path());
        assert_eq!(got.len(), expected().len(), "at parallelism {parallelism}");
        assert!(
            got == *expected(),
            "at parallelism {parallelism}, the output differs from the model"
        );
    }
}

#[test]
fn named_state_survives_injected_failures_exactly_once() {
    for incremental in [false, true] {
        let output = TempDir::new("named-state-failing-out");
        let checkpoints = TempDir::new("named-state-failing-chk");
        let outcome = run(
            2,
            checkpoints.path(),
            incremental,
            false,
            output.path(),
            Failures::at(&[at(0.3), at(0.6), at(0.62)]),
            RestartStrategy::FixedDelay {
                attempts: 10,
                delay: Duration::from_millis(20),
            },
        )
        .expect("the job recovers and succeeds");
        assert_eq!(
            outcome.restarts, 3,
            "every injected failure restarted the job"
        );
        assert!(
            committed(output.path()) == *expected(),
            "incremental: {incremental}: committed output differs from the model"
        );
    }
}

#[test]
fn named_state_restores_at_2_then_3_then_1_with_incremental_checkpoints() {
    let output = TempDir::new("named-state-rescale-out");
    let checkpoints = TempDir::new("named-state-rescale-chk");
    let (out, chk) = (output.path(), checkpoints.path());
    let mut deltas = BTreeMap::new();
    for (parallelism, failure, restore) in [(2, at(0.35), false), (3, at(0.7), true)] {
        // A run's first checkpoint writes bases (the job's first, or one
        // rescaled): its second is the first that can hold deltas.
        let result = run(
            parallelism,
            chk,
            true,
            restore,
            out,
            Failures::at(&[failure]).after_own(2),
            RestartStrategy::None,
        );
        assert!(
            result.is_err(),
            "the run at parallelism {parallelism} was to fail"
        );
        for state in ["value:count", "list:list", "map:buckets", "reducing:max"] {
            *deltas.entry(state).or_insert(0) += rheon_tests::deltas_of(chk, state);
        }
    }
    assert!(
        deltas.values().all(|&d| d > 0),
        "some named state was never incremental: {deltas:?}"
    );
    run(
        1,
        chk,
        true,
        true,
        out,
        Failures::NONE,
        RestartStrategy::None,
    )
    .expect("the run at parallelism 1 finishes");
    assert!(
        committed(out) == *expected(),
        "committed output differs from the model"
    );
}

/// The error of a job of `function` that must fail, restored from
/// `restore_from` if given.
fn job_error(function: AllStates, restore_from: Option<&Path>) -> String {
    let output = TempDir::new("named-state-misuse-out");
    let env = match restore_from {
        None => StreamEnv::new(EngineConfig::default().with_executors(2)),
        Some(dir) => {
            let mut c = CheckpointConfig::every(Duration::from_millis(50), dir);
            c.restore_from = Some(dir.to_path_buf());
            StreamEnv::new(
                EngineConfig::default()
                    .with_executors(2)
                    .with_checkpoints(c),
            )
        }
    };
    build(&env, function, output.path(), restore_from, Failures::NONE);
    env.execute("misuse")
        .expect_err("the job must fail")
        .to_string()
}

#[test]
fn a_name_registered_twice_is_an_error() {
    let twice = job_error(
        AllStates {
            register_twice: true,
            ..AllStates::new()
        },
        None,
    );
    assert!(
        twice.contains("'count' is registered twice") && twice.contains("Keyed process"),
        "{twice}"
    );
}

#[test]
fn an_unregistered_handle_is_an_error() {
    let unregistered = job_error(
        AllStates {
            skip_buckets: true,
            ..AllStates::new()
        },
        None,
    );
    assert!(
        unregistered.contains("keyed state 'buckets' is used but was not registered"),
        "{unregistered}"
    );
}

/// A checkpoint holding the map state, restored by a function that no
/// longer registers it (and so would drop it).
#[test]
fn a_checkpointed_state_the_function_drops_is_an_error() {
    let checkpoints = TempDir::new("named-state-misuse-chk");
    let output = TempDir::new("named-state-misuse-first");
    let result = run(
        2,
        checkpoints.path(),
        false,
        false,
        output.path(),
        Failures::at(&[at(0.5)]),
        RestartStrategy::None,
    );
    assert!(result.is_err(), "the first run was to fail");
    let dropped = job_error(
        AllStates {
            skip_buckets: true,
            ..AllStates::new()
        },
        Some(checkpoints.path()),
    );
    assert!(
        dropped.contains("keyed state 'map:buckets', which the function does not register"),
        "{dropped}"
    );
}

/// The README's example, as written there: page views per user.
#[derive(Clone)]
struct Sessions {
    seen: ListState<u64>,
    per_page: MapState<String, u64>,
}
impl KeyedProcessFunction<u64, (String, u64), u64> for Sessions {
    type State = ();
    fn open(&mut self, states: &mut KeyedStates<u64>) -> Result<(), String> {
        states.list(&mut self.seen)?;
        states.map(&mut self.per_page)
    }
    fn process_element(
        &mut self,
        _key: &u64,
        (page, at): (String, u64),
        _state: &mut ValueStateRef<'_, ()>,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, u64>,
    ) {
        ctx.list(&self.seen).add(at);
        let mut pages = ctx.map(&self.per_page);
        let n = pages.get(&page).map_or(1, |n| n + 1);
        pages.put(page, n);
        out.emit(n);
    }
}

#[test]
fn the_readme_example_counts_views_per_page() {
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(1),
    );
    let views = ["home", "cart", "home", "home", "cart", "about"];
    let counts = env
        .from_collection(views.iter().map(|p| (p.to_string(), 1u64)).collect())
        .key_by(|_: &(String, u64)| 7u64)
        .process(Sessions {
            seen: ListState::new("seen"),
            per_page: MapState::new("per-page"),
        })
        .collect();
    env.execute("readme").expect("the job succeeds");
    assert_eq!(counts.take(), vec![1, 1, 2, 3, 2, 1]);
}
