//! Nexmark: the event model, a deterministic event generator and a JSON line format
//! for the benchmark that Flink, RisingWave, Arroyo and Feldera report against.
//!
//! - [`model`]: [`Person`], [`Auction`], [`Bid`] and [`Event`], with [`Codec`](crate::Codec)
//!   implementations so events can cross exchanges.
//! - [`generator`]: [`GeneratorConfig`] and the pure function [`event`]`(config, n)`
//!   that turns an event number into an event, following the reference generator of
//!   the `nexmark/nexmark` repository (its module doc lists every deviation).
//! - [`json`]: one JSON object per line in the reference's Flink JSON schema, the only
//!   way results are compared with other systems.
//! - [`source`]: the generator and a JSON-lines file as engine sources.
//! - [`queries`]: q0–q3 on the DataStream API, producing text rows.

pub mod generator;
pub mod json;
pub mod model;
pub mod queries;
pub mod source;

pub use generator::{event, events, events_for_generator, Generator, GeneratorConfig};
pub use json::{parse_json_line, to_json_line};
pub use model::{Auction, Bid, Event, Person};
pub use queries::{build, count_rows, Query, QueryOutput, RowCounter};
pub use source::{generator_source, generator_source_with_rate, json_file_source};
