//! Record writers: the end of an operator chain that serializes records into
//! memory segments, one buffer being filled per output channel, and hands full
//! buffers to the credit-based channels of `rheon_net`.
//!
//! Backpressure: a writer never allocates a segment. When its reserved pool is
//! empty it parks the record in a small overflow queue and raises the task's
//! `blocked` flag; the task stops pulling input and awaits `unblock`, which
//! waits for segments to come back from the consumers. The overflow therefore
//! holds at most the output of one input record.
//!
//! Flushing: a partly filled buffer leaves when full, before an event, or when
//! the task's buffer timeout expires (`flush`).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use rheon_net::buffer::BufferBuilder;
use rheon_net::channel::OutputChannel;
use rheon_net::event::Event;
use rheon_net::segment::LocalBufferPool;
use rheon_state::key_group::key_group_for_hash;

use crate::error::{TaskError, TaskLocation, TaskResult};
use crate::graph::stream_graph::{Data, KeyHashFn, Partitioning};
use crate::runtime::collector::{BoxCollector, Collector};

pub(crate) type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What a task needs from each of its writers, whatever the record type.
pub(crate) trait OutputControl {
    /// Waits until overflowed records are written (segments came back).
    fn unblock(&self) -> LocalFuture<'_, TaskResult>;
    /// Sends every partly filled buffer.
    fn flush(&self);
    fn has_partial(&self) -> bool;
    /// Sends an event on every channel, after the data written before it.
    fn broadcast_event(&self, event: Event);
    /// Waits until every queued buffer and event has left.
    fn drained(&self) -> LocalFuture<'_, TaskResult>;
    fn records_out(&self) -> u64;
    fn bytes_out(&self) -> u64;
}

/// Everything a writer is made of; built by the task, typed by `typed_writer`.
pub(crate) struct WriterParts {
    pub(crate) channels: Vec<OutputChannel>,
    pub(crate) pool: LocalBufferPool,
    pub(crate) partitioning: Partitioning,
    /// Parallelism of the consumer (hash partitioning).
    pub(crate) consumers: u32,
    pub(crate) max_parallelism: u32,
    /// Where round-robin starts (spreads producers over consumers).
    pub(crate) start_channel: usize,
    pub(crate) blocked: Rc<Cell<bool>>,
    pub(crate) location: TaskLocation,
}

/// What waits in the overflow queue, in order.
enum Parked<T> {
    Record(usize, T),
    /// A watermark (or watermark status) must not overtake records parked
    /// before it.
    Event(Event),
}

enum Route<T> {
    Single,
    RoundRobin { next: usize },
    Broadcast,
    Hash(KeyHashFn<T>),
}

struct WriterState<T> {
    channels: Rc<[OutputChannel]>,
    builders: Vec<Option<BufferBuilder>>,
    pool: LocalBufferPool,
    route: Route<T>,
    consumers: u32,
    max_parallelism: u32,
    overflow: VecDeque<Parked<T>>,
    blocked: Rc<Cell<bool>>,
    location: TaskLocation,
    records_out: u64,
    bytes_out: u64,
}

pub(crate) struct RecordWriter<T> {
    state: Rc<RefCell<WriterState<T>>>,
}

pub(crate) fn typed_writer<T: Data>(parts: WriterParts) -> (Box<dyn Any>, Rc<dyn OutputControl>) {
    let n = parts.channels.len();
    assert!(n > 0, "a writer has at least one channel");
    let route = match parts.partitioning {
        _ if n == 1 => Route::Single,
        Partitioning::Broadcast => Route::Broadcast,
        Partitioning::Hash(f) => {
            let f = f
                .downcast::<KeyHashFn<T>>()
                .expect("key hash function of the record type");
            Route::Hash((*f).clone())
        }
        _ => Route::RoundRobin {
            next: parts.start_channel % n,
        },
    };
    let state = Rc::new(RefCell::new(WriterState {
        builders: (0..n).map(|_| None).collect(),
        channels: parts.channels.into(),
        pool: parts.pool,
        route,
        consumers: parts.consumers,
        max_parallelism: parts.max_parallelism,
        overflow: VecDeque::new(),
        blocked: parts.blocked,
        location: parts.location,
        records_out: 0,
        bytes_out: 0,
    }));
    let collector: BoxCollector<T> = Box::new(RecordWriter {
        state: state.clone(),
    });
    let control: Rc<dyn OutputControl> = Rc::new(RecordWriter { state });
    (Box::new(collector), control)
}

impl<T: Data> WriterState<T> {
    fn network_error(&self, message: String) -> Box<TaskError> {
        Box::new(TaskError::Network {
            location: self.location.clone(),
            message,
        })
    }

    /// Appends to channel `ch`'s buffer, taking a segment if needed; gives the
    /// record back when the pool is dry.
    #[inline]
    fn try_write(&mut self, ch: usize, record: T) -> TaskResult<Option<T>> {
        loop {
            if let Some(builder) = &mut self.builders[ch] {
                match builder.try_append(&record) {
                    Ok(true) => {
                        self.records_out += 1;
                        return Ok(None);
                    }
                    Ok(false) => self.send_full(ch),
                    Err(e) => return Err(self.network_error(e.to_string())),
                }
            }
            match self.pool.try_take() {
                Some(segment) => self.builders[ch] = Some(BufferBuilder::new(segment)),
                None => return Ok(Some(record)),
            }
        }
    }

    /// Writes in order behind any parked records; parks the record and raises
    /// the task's `blocked` flag when the pool is dry.
    #[inline]
    fn write(&mut self, ch: usize, record: T) -> TaskResult {
        if !self.overflow.is_empty() {
            self.overflow.push_back(Parked::Record(ch, record));
            return Ok(());
        }
        if let Some(record) = self.try_write(ch, record)? {
            self.overflow.push_back(Parked::Record(ch, record));
            self.blocked.set(true);
        }
        Ok(())
    }

    fn send_full(&mut self, ch: usize) {
        if let Some(builder) = self.builders[ch].take() {
            if builder.is_empty() {
                self.pool.recycle(builder.finish().into_segment());
            } else {
                self.bytes_out += builder.len_bytes() as u64;
                self.channels[ch].send_buffer(builder.finish());
            }
        }
    }

    /// Sends the event on every channel behind the data written so far.
    fn emit_event(&mut self, event: Event) {
        self.flush();
        for channel in self.channels.iter() {
            channel.send_event(event.clone());
        }
    }

    /// Sends the event now, or parks it behind parked records.
    fn event_in_order(&mut self, event: Event) {
        if self.overflow.is_empty() {
            self.emit_event(event);
        } else {
            self.overflow.push_back(Parked::Event(event));
        }
    }

    fn flush(&mut self) {
        for ch in 0..self.channels.len() {
            if self.builders[ch].as_ref().is_some_and(|b| !b.is_empty()) {
                self.send_full(ch);
            }
        }
    }
}

impl<T: Data> Collector<T> for RecordWriter<T> {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        let mut guard = self.state.borrow_mut();
        let s = &mut *guard;
        let ch = match &mut s.route {
            Route::Single => 0,
            Route::RoundRobin { next } => {
                let ch = *next;
                *next = if ch + 1 == s.channels.len() {
                    0
                } else {
                    ch + 1
                };
                ch
            }
            Route::Hash(f) => {
                let key_group = key_group_for_hash(f(&record), s.max_parallelism);
                (key_group as u64 * s.consumers as u64 / s.max_parallelism as u64) as usize
            }
            Route::Broadcast => {
                let last = s.channels.len() - 1;
                for ch in 0..last {
                    s.write(ch, record.clone())?;
                }
                last
            }
        };
        s.write(ch, record)
    }

    fn finish(&mut self) -> TaskResult {
        // End of partition is sent by the task once overflow is written.
        Ok(())
    }

    fn watermark(&mut self, watermark: i64) -> TaskResult {
        self.state
            .borrow_mut()
            .event_in_order(Event::Watermark(watermark));
        Ok(())
    }

    fn watermark_status(&mut self, idle: bool) -> TaskResult {
        self.state
            .borrow_mut()
            .event_in_order(Event::WatermarkStatus { idle });
        Ok(())
    }
}

impl<T: Data> OutputControl for RecordWriter<T> {
    fn unblock(&self) -> LocalFuture<'_, TaskResult> {
        Box::pin(async move {
            let pool = self.state.borrow().pool.clone();
            loop {
                let parked = self.state.borrow_mut().overflow.pop_front();
                let (ch, mut record) = match parked {
                    Some(Parked::Record(ch, record)) => (ch, record),
                    Some(Parked::Event(event)) => {
                        self.state.borrow_mut().emit_event(event);
                        continue;
                    }
                    None => return Ok(()),
                };
                loop {
                    match self.state.borrow_mut().try_write(ch, record)? {
                        None => break,
                        Some(back) => record = back,
                    }
                    let segment = pool.take().await;
                    self.state.borrow_mut().builders[ch] = Some(BufferBuilder::new(segment));
                }
            }
        })
    }

    fn flush(&self) {
        self.state.borrow_mut().flush();
    }

    fn has_partial(&self) -> bool {
        self.state
            .borrow()
            .builders
            .iter()
            .any(|b| b.as_ref().is_some_and(|b| !b.is_empty()))
    }

    fn broadcast_event(&self, event: Event) {
        let mut s = self.state.borrow_mut();
        s.flush();
        for channel in s.channels.iter() {
            channel.send_event(event.clone());
        }
    }

    fn drained(&self) -> LocalFuture<'_, TaskResult> {
        Box::pin(async move {
            let channels = self.state.borrow().channels.clone();
            for channel in channels.iter() {
                if let Err(e) = channel.drained().await {
                    return Err(self.state.borrow().network_error(e.to_string()));
                }
            }
            Ok(())
        })
    }

    fn records_out(&self) -> u64 {
        self.state.borrow().records_out
    }

    fn bytes_out(&self) -> u64 {
        let s = self.state.borrow();
        s.bytes_out
            + s.builders
                .iter()
                .flatten()
                .map(|b| b.len_bytes() as u64)
                .sum::<u64>()
    }
}
