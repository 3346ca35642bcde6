//! Input drivers: decode the records of a received buffer and push them into
//! the head of the task's operator chain.
//!
//! Processing is resumable: when the chain's writers run out of segments the
//! driver stops after the current record and reports where it stopped; the
//! task awaits the writers and calls it again with the same buffer. The
//! same holds for the recorded buffers of an unaligned checkpoint, replayed
//! before the first received one, whose records may be filtered by key
//! group when the checkpoint is restored at another parallelism.

use std::any::Any;
use std::cell::Cell;

use rheon_net::buffer::{Buffer, Records};
use rheon_state::key_group::{key_group_for_hash, KeyGroupRange};

use crate::error::{TaskError, TaskLocation, TaskResult};
use crate::graph::stream_graph::{downcast_collector, Data, KeyHashFn};
use crate::runtime::collector::BoxCollector;

/// Keeps the restored records whose key group lies in `range`.
pub(crate) struct KeyGroupFilter<'a> {
    /// The input edge's `KeyHashFn<T>`, type erased as in `Partitioning::Hash`.
    pub(crate) key_hash: &'a (dyn Any + Send + Sync),
    pub(crate) max_parallelism: u32,
    pub(crate) range: KeyGroupRange,
}

pub(crate) trait InputDriver {
    /// Pushes the records of `buffer` from record number `*next` on. Returns
    /// true when the buffer is done, false when stopped because `blocked` rose.
    fn process(
        &mut self,
        buffer: &Buffer,
        next: &mut usize,
        blocked: &Cell<bool>,
    ) -> TaskResult<bool>;
    /// Pushes the records of a buffer recorded by an unaligned checkpoint
    /// (restored in-flight data) from where `records` stands, skipping those
    /// `keep` rejects; `*next` counts the records taken so far. Returns true
    /// when the buffer is done, false when stopped because `blocked` rose.
    /// A record that does not decode is a checkpoint error naming `origin()`.
    fn process_restored(
        &mut self,
        records: &mut Records<'_>,
        next: &mut usize,
        keep: Option<&KeyGroupFilter<'_>>,
        blocked: &Cell<bool>,
        origin: &dyn Fn() -> String,
    ) -> TaskResult<bool>;
    fn finish(&mut self) -> TaskResult;
    fn watermark(&mut self, watermark: i64) -> TaskResult;
    fn watermark_status(&mut self, idle: bool) -> TaskResult;
    fn records_in(&self) -> u64;
}

struct TypedInput<T> {
    head: BoxCollector<T>,
    location: TaskLocation,
    records_in: u64,
}

pub(crate) fn typed_input<T: Data>(
    head: Box<dyn Any>,
    location: TaskLocation,
) -> Box<dyn InputDriver> {
    Box::new(TypedInput::<T> {
        head: downcast_collector(head),
        location,
        records_in: 0,
    })
}

impl<T: Data> InputDriver for TypedInput<T> {
    fn process(
        &mut self,
        buffer: &Buffer,
        next: &mut usize,
        blocked: &Cell<bool>,
    ) -> TaskResult<bool> {
        for payload in buffer.records().skip(*next) {
            let mut input = payload;
            let record = T::decode(&mut input).map_err(|e| {
                Box::new(TaskError::Network {
                    location: self.location.clone(),
                    message: format!("record {} of a received buffer does not decode: {e}", *next),
                })
            })?;
            *next += 1;
            self.records_in += 1;
            self.head.collect(record)?;
            if blocked.get() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn process_restored(
        &mut self,
        records: &mut Records<'_>,
        next: &mut usize,
        keep: Option<&KeyGroupFilter<'_>>,
        blocked: &Cell<bool>,
        origin: &dyn Fn() -> String,
    ) -> TaskResult<bool> {
        let keep = keep.map(|k| {
            let key_hash = k.key_hash.downcast_ref::<KeyHashFn<T>>();
            let key_hash = key_hash.expect("key hash function of the record type");
            (key_hash, k.max_parallelism, k.range)
        });
        for payload in records.by_ref() {
            let mut input = payload;
            let record = T::decode(&mut input).map_err(|e| {
                TaskError::checkpoint(
                    &self.location,
                    format!("record {} of {} does not decode: {e}", *next, origin()),
                )
            })?;
            *next += 1;
            if let Some((key_hash, max_parallelism, range)) = keep {
                if !range.contains(key_group_for_hash(key_hash(&record), max_parallelism)) {
                    continue;
                }
            }
            self.records_in += 1;
            self.head.collect(record)?;
            if blocked.get() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn finish(&mut self) -> TaskResult {
        self.head.finish()
    }

    fn watermark(&mut self, watermark: i64) -> TaskResult {
        self.head.watermark(watermark)
    }

    fn watermark_status(&mut self, idle: bool) -> TaskResult {
        self.head.watermark_status(idle)
    }

    fn records_in(&self) -> u64 {
        self.records_in
    }
}
