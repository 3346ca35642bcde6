//! The DataStream API: how a user builds a job (`StreamEnv`, `DataStream`,
//! `KeyedStream`) and the traits for user functions.
//!
//! API Boundary: this module, `config` and `error` are what users and embedding
//! systems program against; `graph`, `runtime` and `coordinator` are internal.

pub mod connect;
pub mod either;
pub mod env;
pub mod functions;
pub mod state;
pub mod stream;
