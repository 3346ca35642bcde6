//! The data plane's error type. Each variant is an operating error a caller can act on
//! (raise a configured bound, restart from a checkpoint, reject bad input); programmer
//! errors (protocol violations inside this crate, misuse of an API contract) are
//! assertions instead.

use crate::channel::ChannelId;
use crate::codec::DecodeError;

/// Errors returned by `rheon-net` operations.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A task asked its executor's segment pool for more segments than are left.
    #[error(
        "cannot reserve {requested} memory segments: only {available} of the executor's \
         {segment_count} are free; raise the number of segments per executor (or lower \
         buffers per channel / floating buffers per gate)"
    )]
    InsufficientSegments {
        requested: usize,
        available: usize,
        segment_count: usize,
    },

    /// A single record is larger than an empty segment can hold.
    #[error(
        "a record of {len_bytes} bytes does not fit in a segment (at most {max_bytes} bytes \
         of payload per record); raise the segment size or split the record"
    )]
    RecordTooLarge { len_bytes: usize, max_bytes: usize },

    /// The other side of a channel went away before the exchange was complete
    /// (a producer vanished before `EndOfPartition`, or the consumer dropped its gate
    /// while data was still queued). The job should fail over.
    #[error(
        "the peer of channel {channel:?} went away before the exchange finished; \
         the job must restart from its latest checkpoint"
    )]
    PeerGone { channel: ChannelId },

    /// A filled segment handed to [`crate::Buffer::from_filled`] is not validly framed.
    #[error(
        "corrupt buffer: {reason} at byte offset {offset} of {len_bytes} filled bytes; \
         the transport delivered damaged data"
    )]
    CorruptBuffer {
        offset: usize,
        len_bytes: usize,
        reason: &'static str,
    },

    /// A record payload could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}
