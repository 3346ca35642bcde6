//! Model tests: random inputs through pipelines at parallelism 1, 2 and 4 (on
//! two executors) over every partitioner, compared with a plain
//! single-threaded computation over the same input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use rheon::{
    Emitter, KeyedContext, KeyedProcessFunction, OneInputOperator, StreamEnv, ValueStateRef,
};
use rheon_tests::{config, sorted, PARALLELISMS};

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 8,
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    }
}

fn env(parallelism: u32) -> StreamEnv {
    StreamEnv::new(config(2, parallelism))
}

/// Tags every record with the id of the operator instance (subtask) that saw
/// it. Each clone, i.e. each subtask, takes a fresh id from a shared counter.
struct Tag {
    next_id: Arc<AtomicU64>,
    id: u64,
}

impl Tag {
    fn new() -> Tag {
        Tag {
            next_id: Arc::new(AtomicU64::new(0)),
            id: u64::MAX,
        }
    }
}

impl Clone for Tag {
    fn clone(&self) -> Tag {
        Tag {
            next_id: self.next_id.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl<T> OneInputOperator<T, (u64, T)> for Tag {
    fn process(&mut self, record: T, out: &mut Emitter<'_, (u64, T)>) {
        assert_ne!(self.id, u64::MAX, "the template operator itself ran");
        out.emit((self.id, record));
    }
}

/// Groups tagged records by tag, keeping arrival order within a tag.
fn by_tag<T>(tagged: Vec<(u64, T)>) -> BTreeMap<u64, Vec<T>> {
    let mut groups: BTreeMap<u64, Vec<T>> = BTreeMap::new();
    for (tag, record) in tagged {
        groups.entry(tag).or_default().push(record);
    }
    groups
}

fn values() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(-1000i64..1000, 0..3000)
}

fn keyed_values() -> impl Strategy<Value = Vec<(u8, u32)>> {
    // Few keys (many updates per key) or many keys, chosen per case.
    (1u8..=200).prop_flat_map(|keys| prop::collection::vec((0..keys, 0u32..1000), 0..3000))
}

// ---------------------------------------------------------------- forward

/// The plain computation of the map -> filter -> flat_map chain below.
fn chain_model(input: &[i64]) -> Vec<i64> {
    input
        .iter()
        .map(|x| x * 3 + 1)
        .filter(|x| x.rem_euclid(2) == 0)
        .flat_map(|x| std::iter::repeat_n(x, (x.rem_euclid(3)) as usize))
        .collect()
}

proptest! {
    #![proptest_config(cases())]

    /// A parallel generator chained (forward) into map, filter and flat_map.
    #[test]
    fn forward_chain_matches_model(input in values()) {
        let expected = sorted(chain_model(&input));
        for p in PARALLELISMS {
            let env = env(p);
            let data = Arc::new(input.clone());
            let out = env
                .generate(input.len() as u64, move |i| data[i as usize])
                .forward()
                .map(|x: i64| x * 3 + 1)
                .filter(|x: &i64| x.rem_euclid(2) == 0)
                .flat_map(|x: i64| std::iter::repeat_n(x, (x.rem_euclid(3)) as usize))
                .collect();
            env.execute("forward chain").expect("job runs");
            prop_assert_eq!(sorted(out.take()), expected.clone(), "parallelism {}", p);
        }
    }

    /// From one producer, forward keeps the order of the input.
    #[test]
    fn forward_from_collection_keeps_order(input in values()) {
        let expected = chain_model(&input);
        let env = env(1);
        let out = env
            .from_collection(input.clone())
            .map(|x: i64| x * 3 + 1)
            .disable_chaining()
            .forward()
            .filter(|x: &i64| x.rem_euclid(2) == 0)
            .flat_map(|x: i64| std::iter::repeat_n(x, (x.rem_euclid(3)) as usize))
            .collect();
        env.execute("forward order").expect("job runs");
        prop_assert_eq!(out.take(), expected);
    }

    // ------------------------------------------------------------ rebalance

    /// One producer round-robins over p consumers: every record arrives once,
    /// each consumer sees its records in input order, and the consumers' shares
    /// differ by at most one.
    #[test]
    fn rebalance_matches_model(input in values()) {
        for p in PARALLELISMS {
            let env = env(p);
            let out = env
                .from_collection(input.clone())
                .rebalance()
                .map(|x: i64| x.wrapping_mul(7))
                .transform("tag", Tag::new())
                .collect();
            env.execute("rebalance").expect("job runs");
            let tagged = out.take();
            let all: Vec<i64> = tagged.iter().map(|(_, x)| *x).collect();
            let expected: Vec<i64> = input.iter().map(|x| x.wrapping_mul(7)).collect();
            prop_assert_eq!(sorted(all), sorted(expected.clone()), "parallelism {}", p);
            let groups = by_tag(tagged);
            prop_assert!(groups.len() <= p as usize);
            if input.len() >= p as usize {
                prop_assert_eq!(groups.len(), p as usize, "every consumer gets records");
            }
            let shares: Vec<usize> = groups.values().map(Vec::len).collect();
            let (lo, hi) = (
                shares.iter().copied().min().unwrap_or(0),
                shares.iter().copied().max().unwrap_or(0),
            );
            prop_assert!(hi - lo <= 1, "round robin shares {:?}", shares);
            for records in groups.values() {
                // Each consumer's records are a subsequence of the input.
                let mut it = expected.iter();
                for r in records {
                    prop_assert!(it.any(|x| x == r), "out of order at parallelism {}", p);
                }
            }
        }
    }

    /// A parallel producer rebalancing to a different parallelism.
    #[test]
    fn rebalance_between_parallel_operators(input in values()) {
        let expected = sorted(input.iter().map(|x| x - 5).collect::<Vec<_>>());
        for p in PARALLELISMS {
            let env = env(p);
            let data = Arc::new(input.clone());
            let out = env
                .generate(input.len() as u64, move |i| data[i as usize])
                .set_parallelism(p)
                .rebalance()
                .map(|x: i64| x - 5)
                .set_parallelism(5 - p)
                .collect();
            env.execute("rebalance p->q").expect("job runs");
            prop_assert_eq!(sorted(out.take()), expected.clone(), "parallelism {}", p);
        }
    }

    // -------------------------------------------------------------- rescale

    /// Rescale is pointwise: with fewer producers than consumers every
    /// consumer reads from exactly one producer; with more, every producer
    /// writes to exactly one consumer. No record is lost or duplicated.
    #[test]
    fn rescale_matches_model(input in values()) {
        for (producers, consumers) in [(1u32, 1u32), (1, 2), (2, 4), (4, 2), (2, 1), (1, 4)] {
            let env = env(4);
            let data = Arc::new(input.clone());
            let out = env
                .generate(input.len() as u64, move |i| data[i as usize])
                .set_parallelism(producers)
                .transform("tag producer", Tag::new())
                .set_parallelism(producers)
                .rescale()
                .transform("tag consumer", Tag::new())
                .set_parallelism(consumers)
                .collect()
                ;
            env.execute("rescale").expect("job runs");
            let tagged = out.take();
            let all: Vec<i64> = tagged.iter().map(|(_, (_, x))| *x).collect();
            prop_assert_eq!(sorted(all), sorted(input.clone()), "{} -> {}", producers, consumers);
            let mut producers_of: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
            let mut consumers_of: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
            for (consumer, (producer, _)) in &tagged {
                producers_of.entry(*consumer).or_default().insert(*producer);
                consumers_of.entry(*producer).or_default().insert(*consumer);
            }
            if producers <= consumers {
                for (c, ps) in &producers_of {
                    prop_assert_eq!(ps.len(), 1, "consumer {} reads {:?} ({} -> {})", c, ps, producers, consumers);
                }
            }
            if producers >= consumers {
                for (p, cs) in &consumers_of {
                    prop_assert_eq!(cs.len(), 1, "producer {} writes {:?} ({} -> {})", p, cs, producers, consumers);
                }
            }
        }
    }

    // ------------------------------------------------------------ broadcast

    /// Every consumer sees every record, in input order (one producer).
    #[test]
    fn broadcast_matches_model(input in values()) {
        for p in PARALLELISMS {
            let env = env(p);
            let out = env
                .from_collection(input.clone())
                .broadcast()
                .transform("tag", Tag::new())
                .collect();
            env.execute("broadcast").expect("job runs");
            let tagged = out.take();
            prop_assert_eq!(tagged.len(), input.len() * p as usize, "parallelism {}", p);
            let groups = by_tag(tagged);
            if !input.is_empty() {
                prop_assert_eq!(groups.len(), p as usize);
            }
            for records in groups.values() {
                prop_assert_eq!(records, &input, "parallelism {}", p);
            }
        }
    }

    /// A parallel producer broadcasting: each record arrives p times in all.
    #[test]
    fn broadcast_from_parallel_producer(input in values()) {
        for p in PARALLELISMS {
            let env = env(p);
            let data = Arc::new(input.clone());
            let out = env
                .generate(input.len() as u64, move |i| data[i as usize])
                .broadcast()
                .transform("tag", Tag::new())
                .collect();
            env.execute("broadcast p").expect("job runs");
            let groups = by_tag(out.take());
            for records in groups.into_values() {
                prop_assert_eq!(sorted(records), sorted(input.clone()), "parallelism {}", p);
            }
        }
    }

    // ----------------------------------------------------------------- hash

    /// Rolling reduce and sum from one producer: per key, the outputs are
    /// exactly the prefix sums in input order, and one subtask sees each key.
    #[test]
    fn keyed_rolling_reduce_and_sum_match_model(input in keyed_values()) {
        let mut model: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
        let mut totals: BTreeMap<u8, u64> = BTreeMap::new();
        for (k, v) in &input {
            let t = totals.entry(*k).or_insert(0);
            *t += *v as u64;
            model.entry(*k).or_default().push(*t);
        }
        for p in PARALLELISMS {
            let env = env(p);
            let source = env.from_collection(
                input.iter().map(|(k, v)| (*k, *v as u64)).collect::<Vec<_>>(),
            );
            let reduced = source
                .key_by(|r: &(u8, u64)| r.0)
                .reduce(|a: (u8, u64), b: (u8, u64)| (a.0, a.1 + b.1))
                .transform("tag", Tag::new())
                .collect();
            let summed = source
                .key_by(|r: &(u8, u64)| r.0)
                .sum(|r: &(u8, u64)| r.1)
                .collect();
            env.execute("keyed").expect("job runs");

            let tagged = reduced.take();
            let mut subtask_of: BTreeMap<u8, BTreeSet<u64>> = BTreeMap::new();
            let mut reduce_out: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
            for (tag, (k, v)) in tagged {
                subtask_of.entry(k).or_default().insert(tag);
                reduce_out.entry(k).or_default().push(v);
            }
            for (k, tags) in &subtask_of {
                prop_assert_eq!(tags.len(), 1, "key {} seen by subtasks {:?}", k, tags);
            }
            prop_assert_eq!(&reduce_out, &model, "reduce, parallelism {}", p);

            let mut sum_out: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
            for (k, v) in summed.take() {
                sum_out.entry(k).or_default().push(v);
            }
            prop_assert_eq!(&sum_out, &model, "sum, parallelism {}", p);
        }
    }

    /// Rolling sum from a parallel producer: the interleaving is undefined,
    /// but each key gets one output per input, the last (and largest) is the
    /// key's total, and every output is a partial sum no larger than it.
    #[test]
    fn keyed_sum_from_parallel_producer(input in keyed_values()) {
        let mut totals: BTreeMap<u8, (u64, usize)> = BTreeMap::new();
        for (k, v) in &input {
            let t = totals.entry(*k).or_insert((0, 0));
            t.0 += *v as u64;
            t.1 += 1;
        }
        for p in PARALLELISMS {
            let env = env(p);
            let data = Arc::new(input.clone());
            let out = env
                .generate(input.len() as u64, move |i| data[i as usize])
                .key_by(|r: &(u8, u32)| r.0)
                .sum(|r: &(u8, u32)| r.1 as u64)
                .collect();
            env.execute("keyed sum p").expect("job runs");
            let mut got: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
            for (k, v) in out.take() {
                got.entry(k).or_default().push(v);
            }
            let summary: BTreeMap<u8, (u64, usize)> = got
                .iter()
                .map(|(k, vs)| (*k, (*vs.last().unwrap(), vs.len())))
                .collect();
            prop_assert_eq!(&summary, &totals, "parallelism {}", p);
            for (k, vs) in &got {
                prop_assert!(vs.windows(2).all(|w| w[0] <= w[1]), "key {} not monotone", k);
            }
        }
    }

    // ---------------------------------------------------------------- union

    /// The union of a collection and a parallel generator into a map.
    #[test]
    fn union_of_two_sources_matches_model(a in values(), b in values()) {
        let mut expected: Vec<i64> = a.iter().chain(&b).map(|x| x * 2).collect();
        expected.sort();
        for p in PARALLELISMS {
            let env = env(p);
            let data = Arc::new(b.clone());
            let left = env.from_collection(a.clone());
            let right = env.generate(b.len() as u64, move |i| data[i as usize]);
            let out = left.union(right).map(|x: i64| x * 2).collect();
            env.execute("union").expect("job runs");
            prop_assert_eq!(sorted(out.take()), expected.clone(), "parallelism {}", p);
        }
    }

    /// The union of two sources, keyed: per key sums over both inputs.
    #[test]
    fn keyed_union_matches_model(a in keyed_values(), b in keyed_values()) {
        let mut totals: BTreeMap<u8, u64> = BTreeMap::new();
        for (k, v) in a.iter().chain(&b) {
            *totals.entry(*k).or_insert(0) += *v as u64;
        }
        for p in PARALLELISMS {
            let env = env(p);
            let out = env
                .from_collection(a.clone())
                .union(env.from_collection(b.clone()))
                .key_by(|r: &(u8, u32)| r.0)
                .sum(|r: &(u8, u32)| r.1 as u64)
                .collect();
            env.execute("keyed union").expect("job runs");
            let mut last: BTreeMap<u8, u64> = BTreeMap::new();
            for (k, v) in out.take() {
                last.insert(k, v);
            }
            prop_assert_eq!(&last, &totals, "parallelism {}", p);
        }
    }

    // ------------------------------------------------------ keyed process

    /// A keyed process function with value state: increments, clears, clear
    /// followed by update, update followed by clear, and reads, each emitting
    /// the state as the function sees it afterwards.
    #[test]
    fn keyed_process_value_state_matches_model(
        input in prop::collection::vec((0u8..24, 0u8..5, 0u64..100), 0..2000)
    ) {
        let records: Vec<(u8, u8, u64, u64)> = input
            .iter()
            .enumerate()
            .map(|(i, (k, op, n))| (*k, *op, *n, i as u64))
            .collect();
        let mut state: BTreeMap<u8, u64> = BTreeMap::new();
        let mut model: BTreeMap<u8, Vec<(u64, Option<u64>)>> = BTreeMap::new();
        for &(k, op, n, i) in &records {
            let after = apply_op(state.get(&k).copied(), op, n);
            match after {
                Some(v) => state.insert(k, v),
                None => state.remove(&k),
            };
            model.entry(k).or_default().push((i, after));
        }
        for p in PARALLELISMS {
            let env = env(p);
            let out = env
                .from_collection(records.clone())
                .key_by(|r: &(u8, u8, u64, u64)| r.0)
                .process(StateOps)
                .collect();
            env.execute("keyed process").expect("job runs");
            let mut got: BTreeMap<u8, Vec<(u64, Option<u64>)>> = BTreeMap::new();
            for (k, i, after) in out.take() {
                got.entry(k).or_default().push((i, after));
            }
            prop_assert_eq!(&got, &model, "parallelism {}", p);
        }
    }
}

/// The state after one operation: 0 increments, 1 clears, 2 clears then sets
/// `n`, 3 only reads, 4 sets `n` then clears.
fn apply_op(current: Option<u64>, op: u8, n: u64) -> Option<u64> {
    match op {
        0 => Some(current.unwrap_or(0) + 1),
        1 => None,
        2 => Some(n),
        3 => current,
        _ => None,
    }
}

#[derive(Clone)]
struct StateOps;

impl KeyedProcessFunction<u8, (u8, u8, u64, u64), (u8, u64, Option<u64>)> for StateOps {
    type State = u64;
    fn process_element(
        &mut self,
        key: &u8,
        (k, op, n, i): (u8, u8, u64, u64),
        state: &mut ValueStateRef<'_, u64>,
        _ctx: &mut KeyedContext<'_, u8>,
        out: &mut Emitter<'_, (u8, u64, Option<u64>)>,
    ) {
        assert_eq!(*key, k, "the key handed to the function is the record's");
        match op {
            0 => {
                let next = state.value().copied().unwrap_or(0) + 1;
                state.update(next);
            }
            1 => state.clear(),
            2 => {
                state.clear();
                state.update(n);
            }
            3 => {}
            _ => {
                state.update(n);
                state.clear();
            }
        }
        out.emit((k, i, state.value().copied()));
    }
}

/// The union of a rebalanced and a broadcast stream: each input keeps its own
/// partitioning ("The records of both streams (which keep their own
/// partitioning)"), so the broadcast records arrive once per consumer.
#[test]
fn union_keeps_each_inputs_partitioning() {
    let env = env(2);
    let left = env
        .from_collection((0..100i64).collect::<Vec<_>>())
        .rebalance();
    let right = env
        .from_collection((1000..1010i64).collect::<Vec<_>>())
        .broadcast();
    let out = left
        .union(right)
        .map(|x: i64| x)
        .set_parallelism(2)
        .collect();
    env.execute("union partitioning").expect("job runs");
    let got = sorted(out.take());
    let mut expected: Vec<i64> = (0..100).collect();
    for x in 1000..1010 {
        expected.push(x);
        expected.push(x);
    }
    assert_eq!(got, sorted(expected));
}
