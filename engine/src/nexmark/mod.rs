//! Nexmark: the event model, a deterministic event generator and a JSON line format
//! for the benchmark that Flink, RisingWave, Arroyo and Feldera report against.
//!
//! - [`model`]: [`Person`], [`Auction`], [`Bid`] and [`Event`], with [`Codec`](crate::Codec)
//!   implementations so events can cross exchanges.
//! - [`text`]: [`Str`], the model's immutable string: inline when short, else a
//!   static or shared slice, so generating an event need not allocate.
//! - [`generator`]: [`GeneratorConfig`] and the pure function [`event`]`(config, n)`
//!   that turns an event number into an event, following the reference generator of
//!   the `nexmark/nexmark` repository (its module doc lists every deviation).
//! - [`json`]: one JSON object per line in the reference's Flink JSON schema, the only
//!   way results are compared with other systems.
//! - [`source`]: the generator and a JSON-lines file as engine sources.
//! - [`queries`]: the query registry: q0–q3 there, the others in
//!   [`auctions`] (auction–bid joins: q4, q6, q9, q20), [`windowed`] (q5, q7,
//!   q8, q11, q12), [`projections`] (q13, q14, q21, q22) and [`aggregates`]
//!   (unbounded aggregations and top-N: q15–q19). Results are typed and
//!   formatted as text only for a text sink.

pub mod aggregates;
pub mod auctions;
pub mod generator;
pub mod json;
pub mod model;
pub mod projections;
pub mod queries;
pub mod source;
pub mod text;
pub mod windowed;

pub use generator::{event, events, events_for_generator, Generator, GeneratorConfig};
pub use json::{parse_json_line, to_json_line};
pub use model::{Auction, Bid, Event, Person};
pub use queries::{build, build_with, count_rows, Query, QueryOptions, QueryOutput, RowCounter};
pub use source::{generator_source, generator_source_with_rate, json_file_source};
pub use text::Str;
