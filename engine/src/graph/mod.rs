//! The three graphs of a job, as in Flink: the stream graph the DataStream API
//! records (one node per operator), the job graph in which forward-connected
//! operators of equal parallelism are chained into one vertex, and the
//! execution graph of parallel subtasks and the channels between them.

pub mod execution_graph;
pub mod job_graph;
pub mod stream_graph;
