use rheon::{EngineConfig, StreamEnv};

#[test]
fn keyed_sum_over_generator() {
    let env = StreamEnv::new(
        EngineConfig::default()
            .with_executors(2)
            .with_parallelism(2),
    );
    let out = env
        .generate(10_000, |i| (i % 7, 1u64))
        .key_by(|r: &(u64, u64)| r.0)
        .sum(|r: &(u64, u64)| r.1)
        .collect();
    let result = env.execute("smoke").expect("job runs");
    let mut finals = std::collections::HashMap::new();
    for (k, v) in out.take() {
        let e = finals.entry(k).or_insert(0);
        *e = (*e).max(v);
    }
    assert_eq!(finals.len(), 7);
    assert_eq!(finals.values().sum::<u64>(), 10_000);
    eprintln!("{result:?}");
}
