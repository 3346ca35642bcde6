//! Record framing inside one segment. A [`BufferBuilder`] appends records as
//! `[u32 LE payload length][payload]` frames until the segment is full; `finish` turns
//! it into an immutable [`Buffer`] that travels to the consumer by move, whose
//! [`Buffer::records`] yields the payloads. A record never spans two segments.

use crate::codec::{Codec, DecodeError};
use crate::error::NetError;
use crate::segment::Segment;

/// Bytes of framing in front of every record payload.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Serializes records into a segment.
#[derive(Debug)]
pub struct BufferBuilder {
    seg: Segment,
    len_bytes: usize,
    record_count: usize,
}

impl BufferBuilder {
    /// Starts an empty buffer in `seg` (whatever `seg` held is overwritten).
    pub fn new(seg: Segment) -> Self {
        BufferBuilder {
            seg,
            len_bytes: 0,
            record_count: 0,
        }
    }

    /// Largest payload one record may have in a segment of this size.
    pub fn max_record_bytes(&self) -> usize {
        self.seg.capacity() - FRAME_HEADER_BYTES
    }

    /// Appends `rec` if it fits. `Ok(false)`: it does not fit in the space left and
    /// nothing was written (finish this buffer and start another).
    /// `Err(RecordTooLarge)`: it would not fit even an empty segment.
    pub fn try_append<T: Codec>(&mut self, rec: &T) -> Result<bool, NetError> {
        let len = rec.encoded_len();
        let max_bytes = self.max_record_bytes();
        if len > max_bytes {
            return Err(NetError::RecordTooLarge {
                len_bytes: len,
                max_bytes,
            });
        }
        let start = self.len_bytes;
        let end = start + FRAME_HEADER_BYTES + len;
        if end > self.seg.capacity() {
            return Ok(false);
        }
        let out = &mut self.seg.as_mut_slice()[start..end];
        // `len <= segment size <= u32::MAX`, asserted by SegmentPool::new.
        out[..FRAME_HEADER_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
        rec.encode(&mut out[FRAME_HEADER_BYTES..]);
        self.len_bytes = end;
        self.record_count += 1;
        Ok(true)
    }

    /// No record appended yet.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Bytes written so far, framing included.
    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    /// Records appended so far.
    pub fn record_count(&self) -> usize {
        self.record_count
    }

    /// Bytes still free in the segment.
    pub fn remaining_bytes(&self) -> usize {
        self.seg.capacity() - self.len_bytes
    }

    /// Seals the buffer.
    pub fn finish(self) -> Buffer {
        Buffer {
            seg: self.seg,
            len_bytes: self.len_bytes,
            record_count: self.record_count,
        }
    }

    /// Abandons the buffer and gives the segment back.
    pub fn into_segment(self) -> Segment {
        self.seg
    }
}

/// A sealed segment of framed records. `Send`: it moves to the consumer's executor.
#[derive(Debug)]
pub struct Buffer {
    seg: Segment,
    len_bytes: usize,
    record_count: usize,
}

impl Buffer {
    /// Wraps a segment whose first `len_bytes` were filled by a transport, checking
    /// that they are a whole number of valid frames.
    pub fn from_filled(seg: Segment, len_bytes: usize) -> Result<Buffer, NetError> {
        if len_bytes > seg.capacity() {
            return Err(NetError::CorruptBuffer {
                offset: seg.capacity(),
                len_bytes,
                reason: "filled length exceeds the segment size",
            });
        }
        let record_count = count_frames(&seg.as_slice()[..len_bytes])?;
        Ok(Buffer {
            seg,
            len_bytes,
            record_count,
        })
    }

    /// The record payloads, in the order they were appended.
    pub fn records(&self) -> Records<'_> {
        Records {
            bytes: &self.seg.as_slice()[..self.len_bytes],
        }
    }

    /// Decodes every record as a `T`, in order.
    pub fn decode_records<T: Codec>(&self) -> impl Iterator<Item = Result<T, DecodeError>> + '_ {
        self.records()
            .map(|payload| crate::codec::decode_exact::<T>(payload))
    }

    /// Filled bytes, framing included.
    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    /// Number of records.
    pub fn record_count(&self) -> usize {
        self.record_count
    }

    /// The filled bytes, framing included (for a transport that writes them out).
    pub fn as_bytes(&self) -> &[u8] {
        &self.seg.as_slice()[..self.len_bytes]
    }

    /// Gives the segment back (to recycle it).
    pub fn into_segment(self) -> Segment {
        self.seg
    }
}

/// Checks that `bytes` are a whole number of valid frames; returns how many.
fn count_frames(bytes: &[u8]) -> Result<usize, NetError> {
    let len_bytes = bytes.len();
    let mut at = 0;
    let mut record_count = 0;
    while at < len_bytes {
        let Some(header) = bytes[at..].first_chunk::<FRAME_HEADER_BYTES>() else {
            return Err(NetError::CorruptBuffer {
                offset: at,
                len_bytes,
                reason: "frame header cut off",
            });
        };
        let len = u32::from_le_bytes(*header) as usize;
        if len > len_bytes - at - FRAME_HEADER_BYTES {
            return Err(NetError::CorruptBuffer {
                offset: at,
                len_bytes,
                reason: "frame length runs past the filled bytes",
            });
        }
        at += FRAME_HEADER_BYTES + len;
        record_count += 1;
    }
    Ok(record_count)
}

impl<'a> Records<'a> {
    /// The payloads of a buffer's bytes (`Buffer::as_bytes`) kept elsewhere,
    /// after checking their framing.
    pub fn parse(bytes: &'a [u8]) -> Result<Records<'a>, NetError> {
        count_frames(bytes)?;
        Ok(Records { bytes })
    }
}

/// Iterator over the payloads of a [`Buffer`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // Framing was validated when the buffer was built, so these slices are in
        // bounds; a violation is a bug in this module and panics.
        let (header, rest) = self.bytes.split_first_chunk::<FRAME_HEADER_BYTES>()?;
        let len = u32::from_le_bytes(*header) as usize;
        let (payload, rest) = rest.split_at(len);
        self.bytes = rest;
        Some(payload)
    }
}
