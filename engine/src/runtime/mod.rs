//! The task runtime: executors, subtasks, operator chains, record writers and
//! readers, sources and built-in operators.

pub(crate) mod barriers;
pub mod collector;
pub(crate) mod executor;
pub mod file_sink;
pub(crate) mod in_flight;
pub(crate) mod input;
pub(crate) mod keyed_state;
pub(crate) mod operators;
pub(crate) mod process;
pub(crate) mod sources;
pub mod task;
pub mod timers;
pub mod watermark;
pub mod window;
pub(crate) mod writer;
