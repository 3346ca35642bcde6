//! Memory segments and the pools that hand them out. An executor preallocates all of
//! its segments once ([`SegmentPool::new`]); each task reserves a fixed share
//! ([`SegmentPool::reserve`] -> [`LocalBufferPool`]) and, when that share runs dry,
//! waits for a segment to come back ([`LocalBufferPool::take`]) instead of allocating:
//! that wait is the producer's backpressure. Segments are `Send` and cross executors by
//! move; the pools are `!Send` (`Rc`) and stay on their executor.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::error::NetError;

/// Default size of one memory segment (Flink's default too).
pub const SEGMENT_SIZE_BYTES_DEFAULT: usize = 32 * 1024;

/// Smallest segment size accepted: room for one frame header and a few payload bytes.
pub const SEGMENT_SIZE_BYTES_MIN: usize = 64;

/// A fixed-size block of memory owned by exactly one holder at a time. Moving a
/// `Segment` (into a buffer, through a channel, back to its pool) moves a pointer, never
/// the bytes.
#[derive(Debug)]
pub struct Segment {
    bytes: Box<[u8]>,
}

impl Segment {
    fn new(segment_size_bytes: usize) -> Segment {
        Segment {
            bytes: vec![0u8; segment_size_bytes].into_boxed_slice(),
        }
    }

    /// The whole segment, whatever it currently holds.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole segment, for writing.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Size of the segment in bytes.
    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

struct PoolInner {
    segment_size_bytes: usize,
    segment_count: usize,
    free: RefCell<Vec<Segment>>,
}

/// An executor's memory: `segment_count` segments of `segment_size_bytes`, all
/// allocated in [`SegmentPool::new`]. Cloning clones the handle.
#[derive(Clone)]
pub struct SegmentPool {
    inner: Rc<PoolInner>,
}

impl std::fmt::Debug for SegmentPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentPool")
            .field("segment_size_bytes", &self.inner.segment_size_bytes)
            .field("segment_count", &self.inner.segment_count)
            .field("available", &self.available())
            .finish()
    }
}

impl SegmentPool {
    /// Allocates every segment now. Panics if `segment_size_bytes` is below
    /// [`SEGMENT_SIZE_BYTES_MIN`] or does not fit a `u32` frame length (configuration
    /// is validated by the caller; this is a programmer error).
    pub fn new(segment_size_bytes: usize, segment_count: usize) -> Self {
        assert!(
            segment_size_bytes >= SEGMENT_SIZE_BYTES_MIN,
            "segment size {segment_size_bytes} B is below the minimum {SEGMENT_SIZE_BYTES_MIN} B"
        );
        assert!(
            segment_size_bytes <= u32::MAX as usize,
            "segment size {segment_size_bytes} B does not fit u32 framing"
        );
        let free = (0..segment_count)
            .map(|_| Segment::new(segment_size_bytes))
            .collect();
        SegmentPool {
            inner: Rc::new(PoolInner {
                segment_size_bytes,
                segment_count,
                free: RefCell::new(free),
            }),
        }
    }

    /// Moves `count` segments out of the executor pool into a task-local pool.
    pub fn reserve(&self, count: usize) -> Result<LocalBufferPool, NetError> {
        let mut free = self.inner.free.borrow_mut();
        if free.len() < count {
            return Err(NetError::InsufficientSegments {
                requested: count,
                available: free.len(),
                segment_count: self.inner.segment_count,
            });
        }
        let at = free.len() - count;
        let mut local_free = Vec::with_capacity(count);
        local_free.extend(free.drain(at..));
        Ok(LocalBufferPool {
            inner: Rc::new(LocalInner {
                pool: self.inner.clone(),
                capacity: count,
                free: RefCell::new(local_free),
                in_use_high_water: Cell::new(0),
                waiters: RefCell::new(Vec::new()),
            }),
        })
    }

    /// Segments not reserved by any task.
    pub fn available(&self) -> usize {
        self.inner.free.borrow().len()
    }

    /// Segments this pool was created with.
    pub fn segment_count(&self) -> usize {
        self.inner.segment_count
    }

    /// Size of each segment.
    pub fn segment_size_bytes(&self) -> usize {
        self.inner.segment_size_bytes
    }
}

struct LocalInner {
    pool: Rc<PoolInner>,
    capacity: usize,
    free: RefCell<Vec<Segment>>,
    in_use_high_water: Cell<usize>,
    /// Tasks waiting in [`LocalBufferPool::take`]; bounded by the number of tasks that
    /// share this pool. The Vec keeps its capacity, so waiting allocates nothing in
    /// steady state.
    waiters: RefCell<Vec<Waker>>,
}

impl Drop for LocalInner {
    fn drop(&mut self) {
        // Segments still free go back to the executor pool. Segments out on loan when
        // the last handle dropped are freed when their holder drops them.
        let mut pool_free = self.pool.free.borrow_mut();
        pool_free.append(self.free.get_mut());
    }
}

/// A task's reserved share of its executor's segments. Segments it hands to consumers
/// come back here (through [`LocalBufferPool::recycle`]). Cloning clones the handle;
/// when the last handle drops, the free segments return to the [`SegmentPool`].
#[derive(Clone)]
pub struct LocalBufferPool {
    inner: Rc<LocalInner>,
}

impl std::fmt::Debug for LocalBufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBufferPool")
            .field("capacity", &self.inner.capacity)
            .field("free", &self.free())
            .finish()
    }
}

impl LocalBufferPool {
    /// A free segment, or `None` if all are in use.
    pub fn try_take(&self) -> Option<Segment> {
        let seg = self.inner.free.borrow_mut().pop()?;
        let in_use = self.inner.capacity - self.inner.free.borrow().len();
        if in_use > self.inner.in_use_high_water.get() {
            self.inner.in_use_high_water.set(in_use);
        }
        Some(seg)
    }

    /// A free segment, waiting for one to be recycled if all are in use.
    pub fn take(&self) -> Take<'_> {
        Take { pool: self }
    }

    /// Returns a segment to this pool and wakes the tasks waiting in [`take`](Self::take).
    /// Panics if the pool is already full (the segment was not taken from it).
    pub fn recycle(&self, seg: Segment) {
        assert_eq!(
            seg.capacity(),
            self.inner.pool.segment_size_bytes,
            "recycled a segment of a different size into this pool"
        );
        {
            let mut free = self.inner.free.borrow_mut();
            assert!(
                free.len() < self.inner.capacity,
                "recycled more segments than this LocalBufferPool holds ({})",
                self.inner.capacity
            );
            free.push(seg);
        }
        let mut waiters = self.inner.waiters.borrow_mut();
        for w in waiters.drain(..) {
            w.wake();
        }
    }

    /// Segments free right now.
    pub fn free(&self) -> usize {
        self.inner.free.borrow().len()
    }

    /// Segments reserved by this pool.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Highest number of segments ever out on loan at once.
    pub fn in_use_high_water(&self) -> usize {
        self.inner.in_use_high_water.get()
    }

    /// Size of each segment.
    pub fn segment_size_bytes(&self) -> usize {
        self.inner.pool.segment_size_bytes
    }
}

/// Future returned by [`LocalBufferPool::take`].
pub struct Take<'a> {
    pool: &'a LocalBufferPool,
}

impl Future for Take<'_> {
    type Output = Segment;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Segment> {
        if let Some(seg) = self.pool.try_take() {
            return Poll::Ready(seg);
        }
        let mut waiters = self.pool.inner.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_and_return_on_drop() {
        let pool = SegmentPool::new(1024, 4);
        assert_eq!(pool.available(), 4);
        let local = pool.reserve(3).unwrap();
        assert_eq!(pool.available(), 1);
        let err = pool.reserve(2).unwrap_err();
        assert!(matches!(
            err,
            NetError::InsufficientSegments {
                requested: 2,
                available: 1,
                segment_count: 4
            }
        ));
        assert!(err.to_string().contains("raise the number of segments"));
        let a = local.try_take().unwrap();
        let _b = local.try_take().unwrap();
        assert_eq!(local.free(), 1);
        assert_eq!(local.in_use_high_water(), 2);
        local.recycle(a);
        assert_eq!(local.free(), 2);
        drop(local);
        // The two free segments return; the one still on loan is freed with its holder.
        assert_eq!(pool.available(), 3);
    }

    #[test]
    fn take_waits_for_recycle() {
        let pool = SegmentPool::new(1024, 1);
        let local = pool.reserve(1).unwrap();
        let seg = local.try_take().unwrap();
        assert!(local.try_take().is_none());
        let mut fut = Box::pin(local.take());
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        local.recycle(seg);
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }
}
