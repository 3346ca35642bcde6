//! Chaining decisions, read from `StreamEnv::job_graph`: which operators share
//! a vertex (a task) and which exchanges are left between vertices.

use rheon::{JobError, StreamEnv};
use rheon_tests::config;

fn env(parallelism: u32) -> StreamEnv {
    StreamEnv::new(config(2, parallelism))
}

/// Every vertex as `(name, parallelism)`, in vertex order.
fn vertices(env: &StreamEnv) -> Vec<(String, u32)> {
    env.job_graph("graph")
        .expect("valid graph")
        .vertices
        .iter()
        .map(|v| (v.name.clone(), v.parallelism))
        .collect()
}

fn v(name: &str, parallelism: u32) -> (String, u32) {
    (name.to_string(), parallelism)
}

/// The exchange lines of `describe()`, e.g. "exchange 0 -> 1 (hash)".
fn exchanges(env: &StreamEnv) -> Vec<String> {
    env.job_graph("graph")
        .expect("valid graph")
        .describe()
        .lines()
        .filter(|l| l.starts_with("exchange"))
        .map(str::to_string)
        .collect()
}

#[test]
fn forward_chain_of_equal_parallelism_is_one_vertex() {
    let env = env(2);
    env.generate(10, |i| i)
        .map(|x: u64| x + 1)
        .name("a")
        .filter(|x: &u64| x % 2 == 0)
        .name("b")
        .flat_map(|x: u64| [x, x])
        .name("c")
        .discard();
    assert_eq!(
        vertices(&env),
        vec![v("Generator -> a -> b -> c -> Discard sink", 2)]
    );
    assert!(exchanges(&env).is_empty());
    let graph = env.job_graph("graph").unwrap();
    assert_eq!(graph.vertices[0].nodes.len(), 5);
}

#[test]
fn explicit_forward_chains_too() {
    let env = env(3);
    env.generate(10, |i| i)
        .forward()
        .map(|x: u64| x)
        .name("a")
        .forward()
        .discard();
    assert_eq!(vertices(&env), vec![v("Generator -> a -> Discard sink", 3)]);
}

#[test]
fn a_fan_out_of_forward_edges_chains_into_one_tree() {
    let env = env(2);
    let source = env.generate(10, |i| i).name("src");
    source.map(|x: u64| x).name("left").discard();
    source.map(|x: u64| x).name("right").discard();
    let graph = env.job_graph("graph").unwrap();
    assert_eq!(graph.vertices.len(), 1, "{}", graph.describe());
    assert_eq!(graph.vertices[0].nodes.len(), 5);
    assert!(graph.vertices[0].name.starts_with("src -> "));
}

#[test]
fn different_parallelism_does_not_chain() {
    let env = env(2);
    env.generate(10, |i| i)
        .map(|x: u64| x)
        .name("narrow")
        .set_parallelism(1)
        .discard();
    assert_eq!(
        vertices(&env),
        vec![v("Generator", 2), v("narrow", 1), v("Discard sink", 2)]
    );
    assert_eq!(
        exchanges(&env),
        vec![
            "exchange 0 -> 1 (rebalance)".to_string(),
            "exchange 1 -> 2 (rebalance)".to_string()
        ]
    );
}

#[test]
fn key_by_breaks_the_chain() {
    let env = env(2);
    env.generate(10, |i| i)
        .key_by(|x: &u64| x % 3)
        .sum(|x: &u64| *x)
        .discard();
    assert_eq!(
        vertices(&env),
        vec![v("Generator", 2), v("Keyed sum -> Discard sink", 2)]
    );
    assert_eq!(exchanges(&env), vec!["exchange 0 -> 1 (hash)".to_string()]);
}

#[test]
fn rebalance_rescale_and_broadcast_break_the_chain() {
    for (name, expected) in [
        ("rebalance", "rebalance"),
        ("rescale", "rescale"),
        ("broadcast", "broadcast"),
    ] {
        let env = env(2);
        let source = env.generate(10, |i| i);
        let source = match name {
            "rebalance" => source.rebalance(),
            "rescale" => source.rescale(),
            _ => source.broadcast(),
        };
        source.map(|x: u64| x).name("m").discard();
        assert_eq!(
            vertices(&env),
            vec![v("Generator", 2), v("m -> Discard sink", 2)],
            "{name}"
        );
        assert_eq!(
            exchanges(&env),
            vec![format!("exchange 0 -> 1 ({expected})")],
            "{name}"
        );
    }
}

#[test]
fn disable_chaining_isolates_the_operator() {
    let env = env(2);
    env.generate(10, |i| i)
        .map(|x: u64| x)
        .name("a")
        .map(|x: u64| x)
        .name("alone")
        .disable_chaining()
        .map(|x: u64| x)
        .name("b")
        .discard();
    assert_eq!(
        vertices(&env),
        vec![
            v("Generator -> a", 2),
            v("alone", 2),
            v("b -> Discard sink", 2)
        ]
    );
    assert_eq!(
        exchanges(&env),
        vec![
            "exchange 0 -> 1 (forward)".to_string(),
            "exchange 1 -> 2 (forward)".to_string()
        ]
    );
}

#[test]
fn disable_chaining_on_a_sink() {
    let env = env(1);
    env.generate(10, |i| i)
        .map(|x: u64| x)
        .name("a")
        .discard()
        .disable_chaining();
    assert_eq!(
        vertices(&env),
        vec![v("Generator -> a", 1), v("Discard sink", 1)]
    );
}

#[test]
fn union_target_has_two_inputs_and_is_not_chained() {
    let env = env(2);
    let left = env.generate(10, |i| i).name("left");
    let right = env.generate(10, |i| i).name("right");
    left.union(right).map(|x: u64| x).name("m").discard();
    assert_eq!(
        vertices(&env),
        vec![v("left", 2), v("right", 2), v("m -> Discard sink", 2)]
    );
    assert_eq!(
        exchanges(&env),
        vec![
            "exchange 0 -> 2 (forward)".to_string(),
            "exchange 1 -> 2 (forward)".to_string()
        ]
    );
}

#[test]
fn forward_between_unequal_parallelism_is_invalid() {
    let env = env(2);
    env.generate(10, |i| i)
        .name("wide")
        .forward()
        .map(|x: u64| x)
        .name("narrow")
        .set_parallelism(1)
        .discard();
    let error = match env.job_graph("bad forward") {
        Err(e) => e,
        Ok(graph) => panic!("accepted:\n{}", graph.describe()),
    };
    assert!(matches!(error, JobError::InvalidGraph { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("'wide'"), "{message}");
    assert!(message.contains("'narrow'"), "{message}");
    // `execute` refuses the same graph before starting anything.
    let error = env.execute("bad forward").expect_err("invalid graph runs");
    assert!(matches!(error, JobError::InvalidGraph { .. }), "{error:?}");
}

#[test]
fn default_parallelism_comes_from_the_config() {
    let env = env(3);
    env.from_collection(vec![1u64, 2, 3])
        .map(|x: u64| x)
        .name("m")
        .discard();
    // from_collection is parallelism 1; the rest take the default.
    assert_eq!(
        vertices(&env),
        vec![v("Collection source", 1), v("m -> Discard sink", 3)]
    );
}
