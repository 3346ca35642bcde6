//! Restoring the in-flight data of an unaligned checkpoint: which recorded
//! input channels a new subtask replays before its first record, and which
//! of their records it keeps.
//!
//! At the checkpoint's parallelism a subtask replays its own channels. At
//! another parallelism (Flink's rescaling of channel state):
//! - a hash-partitioned input is replayed by every new subtask, each keeping
//!   the records whose key group falls in its range (the hash partitioner's
//!   computation with the input's key function);
//! - a forward, rescale or rebalance input moves whole: old subtask `i`'s
//!   channels go to new subtask `i % parallelism`;
//! - a broadcast input is refused: every old subtask holds its own copy of a
//!   record, and which copies are still due cannot be divided.
//!
//! A head with several inputs (union, connect) whose inputs route alike
//! needs nothing more; `key_by` after a union or `connect` gives every input
//! the same key function. When they differ, each recorded channel's input is
//! told from the old subtask's gate layout ([`old_input_channels`]: inputs in
//! edge order, each with its producers at the parallelisms of then, as
//! `execution_graph` lays a gate out). That needs the producers'
//! parallelism then, which the checkpoint holds only for operators with
//! state (and sources). Without it, inputs with one key function and
//! otherwise forward/rescale/rebalance ones are all filtered with that key
//! function (a valid home for any non-keyed record too); with two key
//! functions the restore is refused.
//!
//! Pure: the task replays the plan. Invariant: every recorded record reaches
//! exactly one new subtask, and each old channel's records in their recorded
//! order.

use std::any::Any;
use std::sync::Arc;

use rheon_state::checkpoint::{ChannelStateEntry, OperatorSnapshot};

use crate::graph::execution_graph::producers_by;
use crate::graph::job_graph::JobGraph;
use crate::graph::stream_graph::{NodeId, Partitioning};

/// How the in-flight data of one input of a head moves to new subtasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputRoute {
    /// Hash partitioned: each record to the subtask owning its key group.
    /// The value names the key function: the index of the first input that
    /// hashes with the same function.
    Key(usize),
    /// Forward, rescale or rebalance: whole old subtasks' channels.
    Whole,
    /// Broadcast: not divisible.
    Broadcast,
}

/// A head's inputs, in edge order (the gate's order).
pub(crate) struct HeadInputs {
    /// Stream edge of each input.
    pub(crate) edges: Vec<usize>,
    pub(crate) routes: Vec<InputRoute>,
    /// Each input's key hash function (a `KeyHashFn<T>`, erased) if it is
    /// hash partitioned.
    pub(crate) key_hashes: Vec<Option<Arc<dyn Any + Send + Sync>>>,
}

pub(crate) fn head_inputs(job: &JobGraph, head: NodeId) -> HeadInputs {
    let edges: Vec<usize> = (0..job.stream.edges.len())
        .filter(|&e| job.stream.edges[e].target == head)
        .collect();
    let key_hashes: Vec<_> = edges
        .iter()
        .map(|&e| match &job.stream.edges[e].partitioning {
            Partitioning::Hash(key_hash) => Some(key_hash.clone()),
            _ => None,
        })
        .collect();
    let routes = edges
        .iter()
        .zip(&key_hashes)
        .map(
            |(&e, key_hash)| match (&job.stream.edges[e].partitioning, key_hash) {
                (Partitioning::Broadcast, _) => InputRoute::Broadcast,
                (_, Some(key_hash)) => InputRoute::Key(
                    key_hashes
                        .iter()
                        .position(|k| k.as_ref().is_some_and(|k| Arc::ptr_eq(k, key_hash)))
                        .expect("the input itself"),
                ),
                _ => InputRoute::Whole,
            },
        )
        .collect();
    HeadInputs {
        edges,
        routes,
        key_hashes,
    }
}

/// How many gate channels old subtask `old_subtask` of a head at
/// parallelism `head_then` had for stream edge `edge`: its producers then,
/// by the partitioning the edge resolved to then. The producer's
/// parallelism then is known only if it is in the checkpoint's
/// `operators`. A head with several inputs was never chained, so each input
/// was an exchange.
pub(crate) fn old_input_channels(
    job: &JobGraph,
    operators: &[OperatorSnapshot],
    edge: usize,
    head_then: u32,
    old_subtask: u32,
) -> Result<u32, String> {
    let stream_edge = &job.stream.edges[edge];
    let producer = &job.stream.nodes[stream_edge.source].name;
    let Some(then) = operators
        .iter()
        .find(|o| o.node as usize == stream_edge.source)
    else {
        return Err(format!(
            "its inputs have different key functions, and which input a recorded channel \
             belongs to cannot be told: '{producer}', which feeds one of them, has no state \
             in the checkpoint that would give its parallelism then"
        ));
    };
    let partitioning = match &stream_edge.partitioning {
        Partitioning::Default if then.parallelism == head_then => Partitioning::Forward,
        Partitioning::Default => Partitioning::Rebalance,
        other => other.clone(),
    };
    if matches!(partitioning, Partitioning::Forward) && then.parallelism != head_then {
        return Err(format!(
            "its input from '{producer}' is forward, but the checkpoint has '{producer}' at \
             parallelism {} and the operator at {head_then}",
            then.parallelism
        ));
    }
    Ok(producers_by(&partitioning, old_subtask, then.parallelism, head_then).len() as u32)
}

/// A recorded channel a subtask replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Index into the operator's channel-state entries.
    pub(crate) entry: usize,
    /// Keep only the records of this subtask's key groups, hashed with the
    /// key function of this input; `None`: keep every record.
    pub(crate) key_of_input: Option<usize>,
}

/// What the plan of one new subtask depends on.
pub(crate) struct Rescale<'a> {
    pub(crate) old_parallelism: u32,
    pub(crate) parallelism: u32,
    pub(crate) subtask: u32,
    /// The head's inputs, in edge order (the gate's order).
    pub(crate) inputs: &'a [InputRoute],
    /// How many gate channels old subtask `s` had for input `i`, or why that
    /// cannot be told. Asked only when the inputs route differently.
    pub(crate) old_channels: &'a dyn Fn(usize, u32) -> Result<u32, String>,
}

/// The channels subtask `r.subtask` replays, in the entries' order, or why
/// the in-flight data cannot be restored at this parallelism.
pub(crate) fn plan(entries: &[ChannelStateEntry], r: &Rescale<'_>) -> Result<Vec<Replay>, String> {
    let whole = |entry: usize| Replay {
        entry,
        key_of_input: None,
    };
    let keyed = |entry: usize, input: usize| Replay {
        entry,
        key_of_input: Some(input),
    };
    if r.old_parallelism == r.parallelism {
        return Ok(entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.subtask == r.subtask)
            .map(|(i, _)| whole(i))
            .collect());
    }
    if let Some(input) = r.inputs.iter().position(|&i| i == InputRoute::Broadcast) {
        return Err(format!(
            "input {} of the operator is broadcast, and every old subtask holds its own copy \
             of its records, which cannot be divided among new subtasks",
            input + 1
        ));
    }
    if let Some(e) = entries.iter().find(|e| e.subtask >= r.old_parallelism) {
        return Err(format!(
            "an entry names subtask {} of {}",
            e.subtask, r.old_parallelism
        ));
    }
    let owner = |old_subtask: u32| old_subtask % r.parallelism == r.subtask;
    let first_key = r.inputs.iter().find_map(|&i| match i {
        InputRoute::Key(k) => Some(k),
        _ => None,
    });
    let one_key_function = r
        .inputs
        .iter()
        .all(|&i| i == InputRoute::Whole || Some(i) == first_key.map(InputRoute::Key));
    match first_key {
        None if r.inputs.is_empty() => return Err("the operator has no input".into()),
        None => {
            return Ok(entries
                .iter()
                .enumerate()
                .filter(|(_, e)| owner(e.subtask))
                .map(|(i, _)| whole(i))
                .collect())
        }
        Some(key) if one_key_function && r.inputs.iter().all(|&i| i != InputRoute::Whole) => {
            return Ok((0..entries.len()).map(|e| keyed(e, key)).collect())
        }
        Some(_) => {}
    }
    // Inputs route differently: find each channel's input.
    let mut plan = Vec::new();
    for (index, e) in entries.iter().enumerate() {
        let input = match input_of(e, r) {
            Ok(input) => input,
            // A key function is a valid home for any non-keyed record too.
            Err(_) if one_key_function => {
                return Ok((0..entries.len())
                    .map(|e| keyed(e, first_key.expect("a keyed input")))
                    .collect())
            }
            Err(reason) => return Err(reason),
        };
        match r.inputs[input] {
            InputRoute::Key(_) => plan.push(keyed(index, input)),
            InputRoute::Whole if owner(e.subtask) => plan.push(whole(index)),
            InputRoute::Whole | InputRoute::Broadcast => {}
        }
    }
    Ok(plan)
}

/// The input a recorded channel belonged to, from the old gate layout.
fn input_of(e: &ChannelStateEntry, r: &Rescale<'_>) -> Result<usize, String> {
    let mut first = 0u32;
    for i in 0..r.inputs.len() {
        let count = (r.old_channels)(i, e.subtask)?;
        if e.input_channel < first + count {
            return Ok(i);
        }
        first += count;
    }
    Err(format!(
        "input channel {} of old subtask {} is beyond its {first} channels",
        e.input_channel, e.subtask
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(subtask: u32, input_channel: u32) -> ChannelStateEntry {
        ChannelStateEntry {
            subtask,
            input_channel,
            buffers: vec![vec![]],
        }
    }

    /// Old subtasks of 2, each with 2 channels per input.
    fn entries() -> Vec<ChannelStateEntry> {
        vec![entry(0, 0), entry(0, 3), entry(1, 1), entry(1, 2)]
    }

    fn two_per_input(_: usize, _: u32) -> Result<u32, String> {
        Ok(2)
    }

    fn plans(inputs: &[InputRoute], old: u32, new: u32) -> Vec<Result<Vec<Replay>, String>> {
        (0..new)
            .map(|subtask| {
                plan(
                    &entries(),
                    &Rescale {
                        old_parallelism: old,
                        parallelism: new,
                        subtask,
                        inputs,
                        old_channels: &two_per_input,
                    },
                )
            })
            .collect()
    }

    fn keyed(entry: usize, input: usize) -> Replay {
        Replay {
            entry,
            key_of_input: Some(input),
        }
    }

    fn whole(entry: usize) -> Replay {
        Replay {
            entry,
            key_of_input: None,
        }
    }

    #[test]
    fn at_the_same_parallelism_a_subtask_replays_its_own_channels() {
        for inputs in [[InputRoute::Broadcast], [InputRoute::Key(0)]] {
            let got = plans(&inputs, 2, 2);
            assert_eq!(got[0], Ok(vec![whole(0), whole(1)]));
            assert_eq!(got[1], Ok(vec![whole(2), whole(3)]));
        }
    }

    #[test]
    fn keyed_inputs_go_to_every_new_subtask_to_filter() {
        let inputs = [InputRoute::Key(0), InputRoute::Key(0)];
        for got in plans(&inputs, 2, 3) {
            assert_eq!(got, Ok((0..4).map(|e| keyed(e, 0)).collect()));
        }
    }

    #[test]
    fn non_keyed_inputs_move_whole_old_subtasks() {
        let inputs = [InputRoute::Whole, InputRoute::Whole];
        let got = plans(&inputs, 2, 3);
        assert_eq!(got[0], Ok(vec![whole(0), whole(1)]));
        assert_eq!(got[1], Ok(vec![whole(2), whole(3)]));
        assert_eq!(got[2], Ok(vec![]));
        let got = plans(&inputs, 2, 1);
        assert_eq!(got[0], Ok((0..4).map(whole).collect()));
    }

    #[test]
    fn mixed_inputs_route_each_channel_by_its_input() {
        // Channels 0-1 are input 0's (keyed), 2-3 input 1's (whole).
        let inputs = [InputRoute::Key(0), InputRoute::Whole];
        let got = plans(&inputs, 2, 3);
        assert_eq!(got[0], Ok(vec![keyed(0, 0), whole(1), keyed(2, 0)]));
        assert_eq!(got[1], Ok(vec![keyed(0, 0), keyed(2, 0), whole(3)]));
        assert_eq!(got[2], Ok(vec![keyed(0, 0), keyed(2, 0)]));
        // Two key functions: each channel filtered with its own input's.
        let inputs = [InputRoute::Key(0), InputRoute::Key(1)];
        let got = plans(&inputs, 2, 1);
        assert_eq!(
            got[0],
            Ok(vec![keyed(0, 0), keyed(1, 1), keyed(2, 0), keyed(3, 1)])
        );
    }

    fn plan_with(
        entries: &[ChannelStateEntry],
        inputs: &[InputRoute],
        old_channels: &dyn Fn(usize, u32) -> Result<u32, String>,
    ) -> Result<Vec<Replay>, String> {
        plan(
            entries,
            &Rescale {
                old_parallelism: 2,
                parallelism: 3,
                subtask: 0,
                inputs,
                old_channels,
            },
        )
    }

    #[test]
    fn without_the_old_layout_one_key_function_filters_everything() {
        let unknown = |_: usize, _: u32| Err::<u32, _>("no layout".to_string());
        let inputs = [InputRoute::Whole, InputRoute::Key(1)];
        assert_eq!(
            plan_with(&entries(), &inputs, &unknown),
            Ok((0..4).map(|e| keyed(e, 1)).collect())
        );
        let inputs = [InputRoute::Key(0), InputRoute::Key(1)];
        assert_eq!(
            plan_with(&entries(), &inputs, &unknown),
            Err("no layout".to_string())
        );
    }

    #[test]
    fn what_cannot_be_divided_is_refused_with_the_reason() {
        let got = plans(&[InputRoute::Whole, InputRoute::Broadcast], 2, 3);
        let refused = got[0].as_ref().unwrap_err();
        assert!(refused.contains("input 2") && refused.contains("broadcast"));
        let inputs = [InputRoute::Key(0), InputRoute::Key(1)];
        let beyond = plan_with(&[entry(0, 4)], &inputs, &two_per_input);
        assert!(beyond.unwrap_err().contains("beyond its 4 channels"));
        let bad_subtask = plan_with(&[entry(5, 0)], &inputs, &two_per_input);
        assert!(bad_subtask.unwrap_err().contains("subtask 5 of 2"));
    }

    /// Every entry reaches exactly one new subtask whole, or every new
    /// subtask to filter, at any pair of parallelisms.
    #[test]
    fn every_channel_is_replayed_once_or_filtered_everywhere() {
        let inputs = [InputRoute::Whole, InputRoute::Key(1), InputRoute::Whole];
        let three_per_input = |_: usize, _: u32| Ok(3);
        for old in 1..=5u32 {
            let entries: Vec<_> = (0..old)
                .flat_map(|s| (0..9).map(move |c| entry(s, c)))
                .collect();
            for new in 1..=5u32 {
                let mut whole_to = vec![0; entries.len()];
                let mut filtered_by = vec![0; entries.len()];
                for subtask in 0..new {
                    let replays = plan(
                        &entries,
                        &Rescale {
                            old_parallelism: old,
                            parallelism: new,
                            subtask,
                            inputs: &inputs,
                            old_channels: &three_per_input,
                        },
                    )
                    .unwrap();
                    assert!(replays.windows(2).all(|w| w[0].entry < w[1].entry));
                    for replay in replays {
                        match replay.key_of_input {
                            None => whole_to[replay.entry] += 1,
                            Some(input) => {
                                assert_eq!(input, 1);
                                filtered_by[replay.entry] += 1;
                            }
                        }
                    }
                }
                for (i, e) in entries.iter().enumerate() {
                    let keyed = (3..6).contains(&e.input_channel) && old != new;
                    if keyed {
                        assert_eq!((whole_to[i], filtered_by[i]), (0, new), "{old}->{new}");
                    } else {
                        assert_eq!((whole_to[i], filtered_by[i]), (1, 0), "{old}->{new}");
                    }
                }
            }
        }
    }

    /// The gate layout told from the checkpoint is the one the job graph at
    /// the old parallelism had: inputs that are hash, rescale (pointwise),
    /// default (forward, then rebalance) and rebalance, from producers of
    /// fixed and of default parallelism.
    #[test]
    fn the_old_gate_layout_is_derived_from_the_checkpoint() {
        use crate::api::env::StreamEnv;
        use crate::config::EngineConfig;
        use crate::graph::execution_graph::{subtask_channels, SubtaskId};

        let graph = |parallelism: u32| {
            let env = StreamEnv::new(EngineConfig::default().with_parallelism(parallelism));
            let keyed = env
                .generate(10, |k| k)
                .set_parallelism(3)
                .key_by(|k: &u64| *k)
                .into_stream();
            let rescaled = env.generate(10, |k| k).set_parallelism(2).rescale();
            let default = env.generate(10, |k| k);
            let rebalanced = env.generate(10, |k| k).set_parallelism(1).rebalance();
            keyed
                .union(rescaled)
                .union(default)
                .union(rebalanced)
                .map(|k: u64| k)
                .name("head")
                .discard();
            env.job_graph("layout").unwrap()
        };
        for (old, new) in [(2, 4), (4, 2), (3, 1), (1, 3), (6, 5)] {
            let (then, now) = (graph(old), graph(new));
            let operators: Vec<OperatorSnapshot> = then
                .stream
                .nodes
                .iter()
                .filter(|n| n.name != "head")
                .map(|n| OperatorSnapshot {
                    node: n.id as u32,
                    name: n.name.clone(),
                    parallelism: then.node_parallelism[n.id],
                    keyed_states: vec![],
                    operator_state: vec![],
                    channel_state: vec![],
                })
                .collect();
            let head = now
                .stream
                .nodes
                .iter()
                .find(|n| n.name == "head")
                .unwrap()
                .id;
            let inputs = head_inputs(&now, head);
            assert_eq!(
                inputs.routes,
                [
                    InputRoute::Key(0),
                    InputRoute::Whole,
                    InputRoute::Whole,
                    InputRoute::Whole
                ]
            );
            for subtask in 0..old {
                let gate = subtask_channels(
                    &then,
                    SubtaskId {
                        vertex: then.vertex_of(head),
                        index: subtask,
                    },
                    0,
                )
                .inputs;
                let want: Vec<u32> = inputs
                    .edges
                    .iter()
                    .map(|&e| {
                        gate.iter()
                            .filter(|(j, _)| then.edges[*j].stream_edge == e)
                            .count() as u32
                    })
                    .collect();
                let got: Vec<u32> = inputs
                    .edges
                    .iter()
                    .map(|&e| old_input_channels(&now, &operators, e, old, subtask).unwrap())
                    .collect();
                assert_eq!(got, want, "{old}->{new}, old subtask {subtask}");
                // Channels of one input are contiguous, inputs in edge order.
                let order: Vec<usize> = gate
                    .iter()
                    .map(|(j, _)| then.edges[*j].stream_edge)
                    .collect();
                assert!(order.windows(2).all(|w| w[0] <= w[1]));
            }
        }
        let unknown = old_input_channels(&graph(2), &[], 0, 2, 0).unwrap_err();
        assert!(unknown.contains("no state in the checkpoint"), "{unknown}");
    }
}
