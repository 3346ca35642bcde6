//! The execution graph: parallel subtasks of every vertex and the channels of
//! every exchange between them.
//!
//! Forward and rescale exchanges are pointwise (Flink's POINTWISE pattern: each
//! producer feeds a contiguous range of consumers, or each consumer reads a
//! contiguous range of producers); rebalance, broadcast and hash are all-to-all.
//! Invariant: for every edge, `consumers(i)` and `producers(j)` describe the same
//! set of channels, and both are sorted, so both ends agree on channel order.

use rheon_net::channel::ChannelId;

use crate::graph::job_graph::{JobEdge, JobGraph, VertexId};
use crate::graph::stream_graph::Partitioning;

/// One parallel instance of a vertex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubtaskId {
    pub vertex: VertexId,
    pub index: u32,
}

fn pointwise(partitioning: &Partitioning) -> bool {
    matches!(partitioning, Partitioning::Forward | Partitioning::Rescale)
}

/// The consumer subtasks producer `producer` of `edge` writes to, in channel order.
pub(crate) fn consumers(
    edge: &JobEdge,
    producer: u32,
    producers_n: u32,
    consumers_n: u32,
) -> Vec<u32> {
    if !pointwise(&edge.partitioning) {
        return (0..consumers_n).collect();
    }
    if producers_n >= consumers_n {
        vec![(producer as u64 * consumers_n as u64 / producers_n as u64) as u32]
    } else {
        (0..consumers_n)
            .filter(|&j| (j as u64 * producers_n as u64 / consumers_n as u64) as u32 == producer)
            .collect()
    }
}

/// The producer subtasks consumer `consumer` of `edge` reads from, in order.
pub(crate) fn producers(
    edge: &JobEdge,
    consumer: u32,
    producers_n: u32,
    consumers_n: u32,
) -> Vec<u32> {
    producers_by(&edge.partitioning, consumer, producers_n, consumers_n)
}

/// [`producers`] of an edge with this (resolved) partitioning.
pub(crate) fn producers_by(
    partitioning: &Partitioning,
    consumer: u32,
    producers_n: u32,
    consumers_n: u32,
) -> Vec<u32> {
    if !pointwise(partitioning) {
        return (0..producers_n).collect();
    }
    if producers_n >= consumers_n {
        (0..producers_n)
            .filter(|&i| (i as u64 * consumers_n as u64 / producers_n as u64) as u32 == consumer)
            .collect()
    } else {
        vec![(consumer as u64 * producers_n as u64 / consumers_n as u64) as u32]
    }
}

/// The channels of subtask `subtask`: for each outgoing job edge (in job-edge
/// order) its output channels, and all its input channels (job-edge order, then
/// producer order).
pub(crate) struct SubtaskChannels {
    pub(crate) outputs: Vec<(usize, Vec<ChannelId>)>,
    pub(crate) inputs: Vec<(usize, ChannelId)>,
}

pub(crate) fn subtask_channels(
    job: &JobGraph,
    subtask: SubtaskId,
    attempt: u32,
) -> SubtaskChannels {
    let mut outputs = Vec::new();
    let mut inputs = Vec::new();
    for (edge_index, edge) in job.edges.iter().enumerate() {
        let pu = job.vertices[edge.source_vertex].parallelism;
        let pd = job.vertices[edge.target_vertex].parallelism;
        if edge.source_vertex == subtask.vertex {
            let ids = consumers(edge, subtask.index, pu, pd)
                .into_iter()
                .map(|c| ChannelId {
                    attempt,
                    edge: edge_index as u32,
                    producer: subtask.index,
                    consumer: c,
                })
                .collect();
            outputs.push((edge_index, ids));
        }
        if edge.target_vertex == subtask.vertex {
            for p in producers(edge, subtask.index, pu, pd) {
                inputs.push((
                    edge_index,
                    ChannelId {
                        attempt,
                        edge: edge_index as u32,
                        producer: p,
                        consumer: subtask.index,
                    },
                ));
            }
        }
    }
    SubtaskChannels { outputs, inputs }
}

/// Every subtask of the job, vertex by vertex.
pub(crate) fn all_subtasks(job: &JobGraph) -> Vec<SubtaskId> {
    job.vertices
        .iter()
        .flat_map(|v| {
            (0..v.parallelism).map(move |index| SubtaskId {
                vertex: v.id,
                index,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(partitioning: Partitioning) -> JobEdge {
        JobEdge {
            source_vertex: 0,
            target_vertex: 1,
            stream_edge: 0,
            partitioning,
        }
    }

    #[test]
    fn pointwise_patterns_agree_from_both_ends() {
        for (pu, pd) in [
            (1, 1),
            (2, 2),
            (4, 2),
            (2, 4),
            (3, 2),
            (2, 3),
            (6, 4),
            (1, 5),
            (5, 1),
        ] {
            let e = edge(Partitioning::Rescale);
            let mut from_producers = Vec::new();
            for i in 0..pu {
                for j in consumers(&e, i, pu, pd) {
                    from_producers.push((i, j));
                }
            }
            let mut from_consumers = Vec::new();
            for j in 0..pd {
                for i in producers(&e, j, pu, pd) {
                    from_consumers.push((i, j));
                }
            }
            from_consumers.sort();
            assert_eq!(from_producers, from_consumers, "pu={pu} pd={pd}");
            // Every producer and every consumer takes part.
            assert!((0..pu).all(|i| from_producers.iter().any(|c| c.0 == i)));
            assert!((0..pd).all(|j| from_producers.iter().any(|c| c.1 == j)));
        }
    }

    #[test]
    fn all_to_all_for_rebalance() {
        let e = edge(Partitioning::Rebalance);
        assert_eq!(consumers(&e, 1, 2, 3), vec![0, 1, 2]);
        assert_eq!(producers(&e, 2, 2, 3), vec![0, 1]);
    }
}
