//! The stream graph: one node per operator the user declared, edges with their
//! partitioning. Types are erased here: each node carries factories that build
//! a typed operator instance per subtask, and `TypeOps` (function pointers
//! monomorphized for the node's output type) that build the typed pieces around
//! it: fan-out, network writer, network input decoder.
//!
//! Invariant: nodes are numbered in creation order, which is a topological
//! order (an operator can only consume streams that already exist).

use std::any::Any;
use std::sync::Arc;

use rheon_net::codec::Codec;

use crate::api::functions::OperatorContext;
use crate::error::TaskLocation;
use crate::runtime::collector::{BoxCollector, FanOut, NoOutput};
use crate::runtime::input::{typed_input, InputDriver};
use crate::runtime::sources::SourceDriver;
use crate::runtime::writer::{typed_writer, OutputControl, WriterParts};

/// What flows through a stream: cloneable (fan-out), serializable (exchanges),
/// and movable between executors.
pub trait Data: Clone + Codec + Send + 'static {}
impl<T: Clone + Codec + Send + 'static> Data for T {}

pub type NodeId = usize;

/// Computes the hash of a record's key, for hash partitioning. Stored type
/// erased as `Arc<dyn Any>` holding a `KeyHashFn<T>`.
pub(crate) type KeyHashFn<T> = Arc<dyn Fn(&T) -> u32 + Send + Sync>;

/// How records of an edge are distributed to the consumer's subtasks.
#[derive(Clone)]
pub(crate) enum Partitioning {
    /// Not set by the user: forward if the parallelisms match, else rebalance.
    Default,
    Forward,
    Rebalance,
    Rescale,
    Broadcast,
    /// By key group of the key's hash; holds a `KeyHashFn<T>`.
    Hash(Arc<dyn Any + Send + Sync>),
}

impl Partitioning {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Partitioning::Default => "default",
            Partitioning::Forward => "forward",
            Partitioning::Rebalance => "rebalance",
            Partitioning::Rescale => "rescale",
            Partitioning::Broadcast => "broadcast",
            Partitioning::Hash(_) => "hash",
        }
    }
}

/// Builds a source driver given the (type-erased) collector of its output.
pub(crate) type SourceFactory = Arc<
    dyn Fn(&OperatorContext, TaskLocation, Box<dyn Any>) -> Box<dyn SourceDriver> + Send + Sync,
>;
/// Builds an operator given the collector of its output (`BoxCollector<O>` in an
/// `Any`); returns the collector of its input (`BoxCollector<I>` in an `Any`).
pub(crate) type OperatorFactory = Arc<
    dyn Fn(&OperatorContext, TaskLocation, Box<dyn Any>) -> crate::error::TaskResult<Box<dyn Any>>
        + Send
        + Sync,
>;

#[derive(Clone)]
pub(crate) enum NodeBody {
    Source(SourceFactory),
    Operator(OperatorFactory),
}

/// A `BoxCollector<T>` (or a source driver) with its type erased.
pub(crate) type ErasedCollector = Box<dyn Any>;
/// A writer's collector and the task's handle on it.
pub(crate) type ErasedWriter = (ErasedCollector, std::rc::Rc<dyn OutputControl>);

/// Typed operations on a node's output type, as plain function pointers.
#[derive(Clone, Copy)]
pub(crate) struct TypeOps {
    pub(crate) fan_out: fn(Vec<ErasedCollector>) -> ErasedCollector,
    pub(crate) no_output: fn() -> Box<dyn Any>,
    pub(crate) writer: fn(WriterParts) -> ErasedWriter,
    pub(crate) input: fn(Box<dyn Any>, TaskLocation) -> Box<dyn InputDriver>,
}

pub(crate) fn type_ops<T: Data>() -> TypeOps {
    TypeOps {
        fan_out: |outputs| {
            let outputs: Vec<BoxCollector<T>> =
                outputs.into_iter().map(downcast_collector::<T>).collect();
            let fan: BoxCollector<T> = Box::new(FanOut { outputs });
            Box::new(fan)
        },
        no_output: || {
            let none: BoxCollector<T> = Box::new(NoOutput);
            Box::new(none)
        },
        writer: typed_writer::<T>,
        input: typed_input::<T>,
    }
}

/// The type-erased collector of a node's output back as a typed collector.
pub(crate) fn downcast_collector<T: 'static>(any: Box<dyn Any>) -> BoxCollector<T> {
    *any.downcast::<BoxCollector<T>>()
        .expect("operator chain wired with mismatched types")
}

#[derive(Clone)]
pub(crate) struct StreamNode {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    /// Set by the user, else resolved from the configuration.
    pub(crate) parallelism: Option<u32>,
    pub(crate) chaining: bool,
    pub(crate) body: NodeBody,
    pub(crate) out_type: TypeOps,
    /// Whether the operator's state (if any) is part of checkpoints; a job
    /// with checkpoints enabled refuses operators that are not.
    pub(crate) checkpointable: bool,
}

#[derive(Clone)]
pub(crate) struct StreamEdge {
    pub(crate) source: NodeId,
    pub(crate) target: NodeId,
    pub(crate) partitioning: Partitioning,
}

#[derive(Clone, Default)]
pub(crate) struct StreamGraph {
    pub(crate) nodes: Vec<StreamNode>,
    pub(crate) edges: Vec<StreamEdge>,
}

impl StreamGraph {
    pub(crate) fn add_node(&mut self, name: String, body: NodeBody, out_type: TypeOps) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(StreamNode {
            id,
            name,
            parallelism: None,
            chaining: true,
            checkpointable: matches!(body, NodeBody::Source(_)),
            body,
            out_type,
        });
        id
    }
}
