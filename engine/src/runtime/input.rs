//! Input drivers: decode the records of a received buffer and push them into
//! the head of the task's operator chain.
//!
//! Processing is resumable: when the chain's writers run out of segments the
//! driver stops after the current record and reports where it stopped; the
//! task awaits the writers and calls it again with the same buffer.

use std::any::Any;
use std::cell::Cell;

use rheon_net::buffer::Buffer;

use crate::error::{TaskError, TaskLocation, TaskResult};
use crate::graph::stream_graph::{downcast_collector, Data};
use crate::runtime::collector::BoxCollector;

pub(crate) trait InputDriver {
    /// Pushes the records of `buffer` from record number `*next` on. Returns
    /// true when the buffer is done, false when stopped because `blocked` rose.
    fn process(
        &mut self,
        buffer: &Buffer,
        next: &mut usize,
        blocked: &Cell<bool>,
    ) -> TaskResult<bool>;
    /// Pushes the records of a buffer's bytes recorded by an unaligned
    /// checkpoint (restored in-flight data).
    fn process_bytes(&mut self, bytes: &[u8]) -> TaskResult;
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

    fn process_bytes(&mut self, bytes: &[u8]) -> TaskResult {
        let records = rheon_net::buffer::Records::parse(bytes).map_err(|e| {
            TaskError::checkpoint(
                &self.location,
                format!("restored in-flight data is corrupt: {e}"),
            )
        })?;
        for (i, payload) in records.enumerate() {
            let mut input = payload;
            let record = T::decode(&mut input).map_err(|e| {
                TaskError::checkpoint(
                    &self.location,
                    format!("restored in-flight record {i} does not decode: {e}"),
                )
            })?;
            self.records_in += 1;
            self.head.collect(record)?;
        }
        Ok(())
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
