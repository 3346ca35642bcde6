//! In-band events and the envelope that carries either a data buffer or an event
//! through a channel. Events need no credit but keep their place behind the data queued
//! before them on the same channel.

use crate::buffer::Buffer;

/// A control event that travels with the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Event time has advanced to this timestamp (ms).
    Watermark(i64),
    /// The producer went idle (sends no records or watermarks for a while) or
    /// became active again. An idle channel does not hold the consumer's
    /// watermark back.
    WatermarkStatus { idle: bool },
    /// Checkpoint barrier for asynchronous barrier snapshotting.
    CheckpointBarrier {
        checkpoint_id: u64,
        timestamp_ms: u64,
        /// A savepoint: always aligned, and every state written in full, so
        /// the savepoint holds no in-flight data and needs no other files.
        savepoint: bool,
    },
    /// The producer will send nothing more on this channel.
    EndOfPartition,
    /// The job is being cancelled.
    Cancel,
}

/// What a channel delivers: a data buffer (with the sender's backlog) or an event.
#[derive(Debug)]
pub enum Envelope {
    /// `backlog`: data buffers still queued at the sender after this one.
    Data {
        buffer: Buffer,
        backlog: u32,
    },
    Event(Event),
}
