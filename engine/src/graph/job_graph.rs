//! The job graph: operators chained into vertices.
//!
//! An edge A -> B is chained (A and B run in one task, calling each other
//! directly) when it is forward (explicitly, or by default with equal
//! parallelism), both operators allow chaining, A and B have the same
//! parallelism and B has no other input. A vertex is a tree of chained
//! operators under one head; the edges left between vertices are exchanges.
//!
//! Invariant: vertices are numbered in topological order; every node belongs to
//! exactly one vertex; a forward exchange joins vertices of equal parallelism.

use rheon_state::key_group::{check_parallelism, default_max_parallelism};

use crate::config::EngineConfig;
use crate::error::JobError;
use crate::graph::stream_graph::{NodeBody, NodeId, Partitioning, StreamGraph};

pub type VertexId = usize;

#[derive(Clone, Debug)]
pub struct JobVertex {
    pub id: VertexId,
    /// Names of the chained operators, joined with " -> ".
    pub name: String,
    pub parallelism: u32,
    /// The node that receives the vertex's input (or the source).
    pub head: NodeId,
    /// All nodes of the chain, head first.
    pub nodes: Vec<NodeId>,
}

/// An exchange between two vertices.
#[derive(Clone)]
pub(crate) struct JobEdge {
    pub(crate) source_vertex: VertexId,
    pub(crate) target_vertex: VertexId,
    /// Index of the stream edge this exchange carries.
    pub(crate) stream_edge: usize,
    /// Forward, rebalance, rescale, broadcast or hash; never `Default`.
    pub(crate) partitioning: Partitioning,
}

pub struct JobGraph {
    pub name: String,
    pub max_parallelism: u32,
    pub(crate) stream: StreamGraph,
    /// Resolved parallelism of every node.
    pub(crate) node_parallelism: Vec<u32>,
    /// Vertex of every node.
    pub(crate) node_vertex: Vec<VertexId>,
    /// Whether each stream edge is chained.
    pub(crate) edge_chained: Vec<bool>,
    pub vertices: Vec<JobVertex>,
    pub(crate) edges: Vec<JobEdge>,
    pub(crate) checkpoint: crate::checkpoint::CheckpointConfig,
}

impl JobGraph {
    /// Resolves parallelism, validates the graph and chains operators.
    pub(crate) fn build(
        name: &str,
        stream: StreamGraph,
        config: &EngineConfig,
    ) -> Result<JobGraph, JobError> {
        let invalid = |message: String| JobError::InvalidGraph {
            job: name.to_string(),
            message,
        };
        if stream.nodes.is_empty() {
            return Err(invalid("the job has no operators".into()));
        }
        let node_parallelism: Vec<u32> = stream
            .nodes
            .iter()
            .map(|n| n.parallelism.unwrap_or_else(|| config.parallelism()))
            .collect();
        let largest = node_parallelism.iter().copied().max().unwrap_or(1);
        let max_parallelism = config
            .max_parallelism
            .unwrap_or_else(|| default_max_parallelism(largest));
        for node in &stream.nodes {
            check_parallelism(max_parallelism, node_parallelism[node.id])
                .map_err(|e| invalid(format!("operator '{}': {e}", node.name)))?;
        }

        let mut inputs = vec![0usize; stream.nodes.len()];
        let mut outputs = vec![0usize; stream.nodes.len()];
        for edge in &stream.edges {
            inputs[edge.target] += 1;
            outputs[edge.source] += 1;
        }
        for node in &stream.nodes {
            match node.body {
                NodeBody::Source(_) if inputs[node.id] > 0 => {
                    return Err(invalid(format!("source '{}' has an input", node.name)))
                }
                NodeBody::Operator(_) if inputs[node.id] == 0 => {
                    return Err(invalid(format!("operator '{}' has no input", node.name)))
                }
                _ => {}
            }
        }

        // Resolve default partitioning, validate forward edges, decide chaining.
        let mut resolved = Vec::with_capacity(stream.edges.len());
        let mut edge_chained = Vec::with_capacity(stream.edges.len());
        for edge in &stream.edges {
            let (ps, pt) = (node_parallelism[edge.source], node_parallelism[edge.target]);
            let partitioning = match &edge.partitioning {
                Partitioning::Default if ps == pt => Partitioning::Forward,
                Partitioning::Default => Partitioning::Rebalance,
                other => other.clone(),
            };
            if matches!(partitioning, Partitioning::Forward) && ps != pt {
                return Err(invalid(format!(
                    "forward edge from '{}' (parallelism {ps}) to '{}' (parallelism {pt}) needs equal parallelism; use rebalance() or rescale()",
                    stream.nodes[edge.source].name, stream.nodes[edge.target].name
                )));
            }
            let chained = matches!(partitioning, Partitioning::Forward)
                && stream.nodes[edge.source].chaining
                && stream.nodes[edge.target].chaining
                && inputs[edge.target] == 1;
            resolved.push(partitioning);
            edge_chained.push(chained);
        }

        // Nodes are topologically ordered, so a node's chained input comes first.
        let mut node_vertex = vec![usize::MAX; stream.nodes.len()];
        let mut vertices: Vec<JobVertex> = Vec::new();
        for node in &stream.nodes {
            let chained_from = stream
                .edges
                .iter()
                .zip(&edge_chained)
                .find(|(e, &c)| c && e.target == node.id)
                .map(|(e, _)| e.source);
            match chained_from {
                Some(source) => {
                    let vertex = node_vertex[source];
                    node_vertex[node.id] = vertex;
                    vertices[vertex].nodes.push(node.id);
                }
                None => {
                    node_vertex[node.id] = vertices.len();
                    vertices.push(JobVertex {
                        id: vertices.len(),
                        name: String::new(),
                        parallelism: node_parallelism[node.id],
                        head: node.id,
                        nodes: vec![node.id],
                    });
                }
            }
        }
        for vertex in &mut vertices {
            vertex.name = vertex
                .nodes
                .iter()
                .map(|&n| stream.nodes[n].name.as_str())
                .collect::<Vec<_>>()
                .join(" -> ");
        }

        let edges = stream
            .edges
            .iter()
            .enumerate()
            .filter(|(i, _)| !edge_chained[*i])
            .map(|(i, e)| JobEdge {
                source_vertex: node_vertex[e.source],
                target_vertex: node_vertex[e.target],
                stream_edge: i,
                partitioning: resolved[i].clone(),
            })
            .collect();

        if config.checkpoint.enabled() {
            if config.checkpoint.directory.is_none() {
                return Err(invalid(
                    "checkpoints are enabled but no checkpoint directory is set".into(),
                ));
            }
            if let Some(node) = stream.nodes.iter().find(|n| !n.checkpointable) {
                return Err(invalid(format!(
                    "operator '{}' keeps state that cannot be checkpointed yet; run the job without checkpoints, or use operators that support them (sources, map/filter/flat_map, key_by with sum/reduce/process, connect with process, joins, windows, transform_checkpointed, the exactly-once file sink)",
                    node.name
                )));
            }
        }
        Ok(JobGraph {
            checkpoint: config.checkpoint.clone(),
            name: name.to_string(),
            max_parallelism,
            stream,
            node_parallelism,
            node_vertex,
            edge_chained,
            vertices,
            edges,
        })
    }

    /// The vertex an operator was chained into.
    pub fn vertex_of(&self, node: NodeId) -> VertexId {
        self.node_vertex[node]
    }

    /// Number of slots the job needs with slot sharing: its largest parallelism.
    pub fn slots_needed(&self) -> u32 {
        self.vertices
            .iter()
            .map(|v| v.parallelism)
            .max()
            .unwrap_or(1)
    }

    /// One line per vertex: its chain and parallelism, then its exchanges.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for v in &self.vertices {
            out.push_str(&format!(
                "vertex {} [p={}]: {}\n",
                v.id, v.parallelism, v.name
            ));
        }
        for e in &self.edges {
            out.push_str(&format!(
                "exchange {} -> {} ({})\n",
                e.source_vertex,
                e.target_vertex,
                e.partitioning.name()
            ));
        }
        out
    }
}
