//! Failing user functions fail the job with an error naming the operator and
//! the subtask, and `execute` returns instead of hanging.

use std::time::{Duration, Instant};

use rheon::{JobError, StreamEnv, TaskError};
use rheon_state::key_group::{assign_to_key_group, operator_index_for_key_group};
use rheon_tests::{config, sorted};

fn env(parallelism: u32) -> StreamEnv {
    StreamEnv::new(config(2, parallelism))
}

/// The task error of a failed job, after checking that the job ended soon.
fn task_failure(env: &StreamEnv, started: Instant) -> (Box<TaskError>, String) {
    let result = env.execute("failing job");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    match result {
        Err(JobError::TaskFailed { job, task: source }) => {
            assert_eq!(job, "failing job");
            let message = JobError::TaskFailed {
                job,
                task: source.clone(),
            }
            .to_string();
            (source, message)
        }
        Err(other) => panic!("expected TaskFailed, got {other:?}"),
        Ok(outcome) => panic!("the job succeeded: {outcome:?}"),
    }
}

#[test]
fn a_panicking_map_fails_the_job_naming_operator_and_subtask() {
    let env = env(2);
    // Record i is made by generator subtask i % 2; the map is chained to it,
    // so record 7 fails subtask 2 of 2.
    env.generate(10_000, |i| i)
        .map(|x: u64| {
            if x == 7 {
                panic!("boom on record {x}");
            }
            x
        })
        .name("explode")
        .discard();
    let (error, message) = task_failure(&env, Instant::now());
    assert!(
        matches!(*error, TaskError::UserFunction { .. }),
        "{error:?}"
    );
    assert_eq!(error.location().operator, "explode");
    assert_eq!(error.location().subtask, 1);
    assert_eq!(error.location().parallelism, 2);
    assert!(message.contains("'explode'"), "{message}");
    assert!(message.contains("subtask 2/2"), "{message}");
    assert!(message.contains("boom on record 7"), "{message}");
}

#[test]
fn a_try_map_error_fails_the_job_naming_operator_and_subtask() {
    let env = env(2);
    env.generate(10_000, |i| i)
        .try_map(|x: u64| {
            if x == 4242 {
                Err(format!("record {x} is not welcome"))
            } else {
                Ok(x)
            }
        })
        .name("explode")
        .discard();
    let (error, message) = task_failure(&env, Instant::now());
    assert!(
        matches!(*error, TaskError::UserFunction { .. }),
        "{error:?}"
    );
    assert_eq!(error.location().subtask, 0, "4242 is even: subtask 1/2");
    assert!(message.contains("'explode'"), "{message}");
    assert!(message.contains("subtask 1/2"), "{message}");
    assert!(message.contains("record 4242 is not welcome"), "{message}");
}

#[test]
fn a_failure_behind_a_keyed_exchange_names_the_subtask_owning_the_key() {
    let bad_key = 13u64;
    let env = env(2);
    env.generate(20_000, |i| i)
        .key_by(|x: &u64| x % 100)
        .sum(|x: &u64| *x)
        .map(move |(k, sum): (u64, u64)| {
            assert!(k != bad_key || sum < 50_000, "key {k} went over");
            sum
        })
        .name("explode")
        .discard();
    let max_parallelism = env.job_graph("failing job").unwrap().max_parallelism;
    let owner = operator_index_for_key_group(
        max_parallelism,
        2,
        assign_to_key_group(&bad_key, max_parallelism),
    );
    let (error, message) = task_failure(&env, Instant::now());
    assert_eq!(error.location().operator, "explode");
    assert_eq!(error.location().subtask, owner);
    assert!(
        message.contains(&format!("subtask {}/2", owner + 1)),
        "{message}"
    );
    assert!(message.contains("key 13 went over"), "{message}");
}

#[test]
fn a_failure_in_a_slow_consumer_does_not_hang_a_blocked_producer() {
    // The producer outruns the failing consumer and fills its buffers; the
    // failure must still cancel it.
    let env = env(2);
    env.generate(10_000_000, |i| (i, vec![0u8; 256]))
        .rebalance()
        .map(|(i, _): (u64, Vec<u8>)| {
            std::thread::sleep(Duration::from_micros(50));
            assert!(i < 5_000, "consumer gives up at {i}");
            i
        })
        .name("explode")
        .discard();
    let (error, message) = task_failure(&env, Instant::now());
    assert_eq!(error.location().operator, "explode");
    assert!(message.contains("consumer gives up"), "{message}");
}

#[test]
fn a_failing_source_names_the_source() {
    let env = env(2);
    env.generate(1000, |i| {
        assert!(i != 501, "generator broke");
        i
    })
    .name("flaky source")
    .discard();
    let (error, message) = task_failure(&env, Instant::now());
    assert_eq!(error.location().operator, "flaky source");
    assert!(message.contains("subtask 2/2"), "{message}");
}

#[test]
fn after_a_failed_job_a_new_job_runs() {
    let failing = env(2);
    failing
        .generate(1000, |i| i)
        .map(|x: u64| {
            assert!(x != 3, "fail");
            x
        })
        .name("explode")
        .discard();
    task_failure(&failing, Instant::now());

    let env = env(2);
    let out = env
        .generate(1000, |i| i)
        .map(|x: u64| x * 2)
        .rebalance()
        .map(|x: u64| x + 1)
        .collect();
    env.execute("after failure").expect("the next job runs");
    assert_eq!(
        sorted(out.take()),
        (0..1000u64).map(|x| x * 2 + 1).collect::<Vec<_>>()
    );

    // And the failed environment can be run again (it fails again the same way).
    let (error, _) = task_failure(&failing, Instant::now());
    assert_eq!(error.location().operator, "explode");
}
