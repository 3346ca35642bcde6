//! Rheon's data plane: everything that moves records between subtasks and nothing
//! that knows about operators. It owns the per-executor memory-segment pool
//! ([`segment`]), record serialization ([`codec`]) and length framing into segments
//! ([`buffer`]), the in-band events that travel with the data ([`event`]), and the
//! credit-based channels between a producer's subpartition and a consumer's input
//! gate ([`channel`]). Every type that touches the hot path is `!Send` and lives on
//! one glommio executor; only segments, buffers and envelopes cross cores, by move.

pub mod buffer;
pub mod channel;
pub mod codec;
pub mod error;
pub mod event;
pub mod segment;

pub use buffer::{Buffer, BufferBuilder, FRAME_HEADER_BYTES};
pub use channel::{
    ChannelConfig, ChannelId, ConnectionManager, InputEndpoint, InputGate, OutputChannel,
    OutputEndpoint,
};
pub use codec::{Codec, DecodeError};
pub use error::NetError;
pub use event::{Envelope, Event};
pub use segment::{LocalBufferPool, Segment, SegmentPool, SEGMENT_SIZE_BYTES_DEFAULT};
