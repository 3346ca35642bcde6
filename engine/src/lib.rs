//! Rheon: a shared-nothing, thread-per-core dataflow engine modelled on Apache
//! Flink's runtime.
//!
//! A job is Rust code: build it with [`StreamEnv`] and [`DataStream`], run it
//! with [`StreamEnv::execute`]. See `docs/ARCHITECTURE.md` for the code map.

pub mod alloc;
pub mod api;
pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod graph;
pub mod jobs;
pub mod nexmark;
pub mod runtime;

pub use api::connect::{ConnectedStreams, KeyedCoProcessFunction, KeyedConnectedStreams};
pub use api::either::Either;
pub use api::env::StreamEnv;
pub use api::functions::{
    CheckpointedFunction, KeyedContext, KeyedProcessFunction, OneInputOperator, OperatorContext,
    OperatorStateRestore, SourceFunction, SourcePoll, ValueStateRef,
};
pub use api::state::{
    AggregateFunction, AggregatingState, KeyedStates, ListState, MapState, ReducingState,
    ValueState,
};
pub use api::stream::{
    CollectHandle, DataStream, DataStreamSink, KeyedStream, LateData, WindowedStream,
};
pub use checkpoint::{CheckpointConfig, CheckpointingMode, RestartStrategy};
pub use config::EngineConfig;
pub use coordinator::messages::{CheckpointStats, JobOutcome, VertexMetrics};
pub use error::{JobError, TaskError, TaskLocation};
pub use graph::stream_graph::Data;
pub use rheon_net::codec::Codec;
pub use runtime::collector::{Collector, Emitter};
pub use runtime::timers::TimeDomain;
pub use runtime::watermark::{WatermarkStrategy, WATERMARK_MAX, WATERMARK_MIN};
pub use runtime::window::{TimeWindow, WindowAssigner};
