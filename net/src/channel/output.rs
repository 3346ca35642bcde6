//! The producer's side of a channel: [`OutputChannel`] queues buffers and events
//! without ever blocking; a data pump task hands them to the data ring in order,
//! spending one credit per data buffer and stamping each with the backlog behind it;
//! a credit pump task receives credits and returned segments (which go back to the
//! producer's [`LocalBufferPool`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::channels::shared_channel::{SharedReceiver, SharedSender};
use glommio::{GlommioError, ResourceType};

use super::{ChannelId, CreditMsg, OutputEndpoint, OUTPUT_QUEUE_ENVELOPES_MAX};
use crate::buffer::Buffer;
use crate::error::NetError;
use crate::event::{Envelope, Event};
use crate::segment::LocalBufferPool;

/// Initial capacity of the send queue; it grows (rarely) up to
/// [`OUTPUT_QUEUE_ENVELOPES_MAX`].
const OUTPUT_QUEUE_ENVELOPES_INITIAL: usize = 64;

struct OutShared {
    id: ChannelId,
    pool: LocalBufferPool,
    queue: RefCell<VecDeque<Envelope>>,
    queued_data: Cell<usize>,
    credits: Cell<u32>,
    buffers_sent: Cell<u64>,
    /// The data pump holds an envelope it is writing into the ring.
    in_hand: Cell<bool>,
    /// The `OutputChannel` was dropped: the pump exits once the queue is empty.
    producer_closed: Cell<bool>,
    /// The consumer closed the credit ring: no more credit will ever come.
    consumer_closed: Cell<bool>,
    /// Data could not be delivered because the consumer went away.
    peer_gone: Cell<bool>,
    pump_waker: RefCell<Option<Waker>>,
    drained_wakers: RefCell<Vec<Waker>>,
}

impl OutShared {
    fn wake_pump(&self) {
        if let Some(w) = self.pump_waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn wake_drained(&self) {
        for w in self.drained_wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Drops everything queued, returning data segments to the pool.
    fn discard_queue(&self) {
        let mut q = self.queue.borrow_mut();
        for env in q.drain(..) {
            if let Envelope::Data { buffer, .. } = env {
                self.pool.recycle(buffer.into_segment());
            }
        }
        self.queued_data.set(0);
    }

    fn mark_peer_gone(&self) {
        self.peer_gone.set(true);
        self.discard_queue();
        self.wake_drained();
    }

    /// The next envelope the pump may send, `None` when the pump should exit.
    fn poll_next_sendable(&self, cx: &mut std::task::Context<'_>) -> Poll<Option<Envelope>> {
        if self.peer_gone.get() {
            return Poll::Ready(None);
        }
        let mut q = self.queue.borrow_mut();
        match q.front() {
            None => {
                drop(q);
                self.wake_drained();
                if self.producer_closed.get() {
                    return Poll::Ready(None);
                }
            }
            Some(Envelope::Event(_)) => return Poll::Ready(q.pop_front()),
            Some(Envelope::Data { .. }) => {
                if self.credits.get() > 0 {
                    self.credits.set(self.credits.get() - 1);
                    let queued = self.queued_data.get() - 1;
                    self.queued_data.set(queued);
                    self.buffers_sent.set(self.buffers_sent.get() + 1);
                    let Some(Envelope::Data { buffer, .. }) = q.pop_front() else {
                        unreachable!()
                    };
                    return Poll::Ready(Some(Envelope::Data {
                        buffer,
                        backlog: u32::try_from(queued).unwrap_or(u32::MAX),
                    }));
                }
                if self.consumer_closed.get() {
                    drop(q);
                    self.mark_peer_gone();
                    return Poll::Ready(None);
                }
            }
        }
        *self.pump_waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

async fn data_pump(shared: Rc<OutShared>, tx: SharedSender<Envelope>) {
    let tx = tx.connect().await;
    while let Some(env) = poll_fn(|cx| shared.poll_next_sendable(cx)).await {
        shared.in_hand.set(true);
        let res = tx.send(env).await;
        shared.in_hand.set(false);
        if let Err(err) = res {
            if let GlommioError::Closed(ResourceType::Channel(Envelope::Data { buffer, .. })) = err
            {
                shared.pool.recycle(buffer.into_segment());
            }
            shared.mark_peer_gone();
            break;
        }
    }
    shared.wake_drained();
    // Dropping `tx` disconnects: the consumer sees the end of the ring after draining it.
}

async fn credit_pump(shared: Rc<OutShared>, rx: SharedReceiver<CreditMsg>) {
    let rx = rx.connect().await;
    while let Some(msg) = rx.recv().await {
        if let Some(seg) = msg.segment {
            shared.pool.recycle(seg);
        }
        if msg.credits > 0 {
            shared.credits.set(shared.credits.get() + msg.credits);
            shared.wake_pump();
        }
    }
    shared.consumer_closed.set(true);
    shared.wake_pump();
}

/// The producer's handle on one channel. `!Send`: it lives on the producer's executor.
/// Dropping it lets the pump finish sending what is queued, then closes the channel.
pub struct OutputChannel {
    shared: Rc<OutShared>,
}

impl std::fmt::Debug for OutputChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputChannel")
            .field("id", &self.shared.id)
            .field("backlog", &self.backlog())
            .field("credits", &self.credits())
            .finish()
    }
}

impl OutputEndpoint {
    /// Opens the channel on the current glommio executor, spawning the tasks that
    /// connect the rings and pump. Returned segments go back to `pool`.
    pub fn open(self, pool: LocalBufferPool) -> OutputChannel {
        let shared = Rc::new(OutShared {
            id: self.id,
            pool,
            queue: RefCell::new(VecDeque::with_capacity(OUTPUT_QUEUE_ENVELOPES_INITIAL)),
            queued_data: Cell::new(0),
            credits: Cell::new(0),
            buffers_sent: Cell::new(0),
            in_hand: Cell::new(false),
            producer_closed: Cell::new(false),
            consumer_closed: Cell::new(false),
            peer_gone: Cell::new(false),
            pump_waker: RefCell::new(None),
            drained_wakers: RefCell::new(Vec::new()),
        });
        glommio::spawn_local(data_pump(shared.clone(), self.data_tx)).detach();
        glommio::spawn_local(credit_pump(shared.clone(), self.credit_rx)).detach();
        OutputChannel { shared }
    }
}

impl OutputChannel {
    fn enqueue(&self, env: Envelope) {
        let mut q = self.shared.queue.borrow_mut();
        assert!(
            q.len() < OUTPUT_QUEUE_ENVELOPES_MAX,
            "OutputChannel {:?}: more than {OUTPUT_QUEUE_ENVELOPES_MAX} envelopes queued",
            self.shared.id
        );
        q.push_back(env);
        drop(q);
        self.shared.wake_pump();
    }

    /// Queues a data buffer; it goes out once the receiver has granted a credit. Never
    /// blocks. If the consumer is already gone the segment goes straight back to the
    /// pool and [`drained`](Self::drained) reports the loss.
    pub fn send_buffer(&self, buffer: Buffer) {
        if self.shared.peer_gone.get() {
            self.shared.pool.recycle(buffer.into_segment());
            return;
        }
        self.shared
            .queued_data
            .set(self.shared.queued_data.get() + 1);
        self.enqueue(Envelope::Data { buffer, backlog: 0 });
    }

    /// Queues an event behind everything queued before it. Needs no credit.
    ///
    /// A watermark (or watermark status) queued right behind another one that has
    /// not gone out yet replaces it: watermarks only advance, and with nothing
    /// between them the consumer could not tell the earlier one apart. Events take
    /// no credit, so without this a chain that filters out every record but
    /// forwards a watermark per source batch would queue watermarks without bound
    /// whenever the consumer's ring is full.
    pub fn send_event(&self, event: Event) {
        if self.shared.peer_gone.get() {
            return;
        }
        {
            let mut q = self.shared.queue.borrow_mut();
            if let Some(Envelope::Event(last)) = q.back_mut() {
                let supersedes = matches!(
                    (&*last, &event),
                    (Event::Watermark(_), Event::Watermark(_))
                        | (Event::WatermarkStatus { .. }, Event::WatermarkStatus { .. })
                );
                if supersedes {
                    *last = event;
                    return;
                }
            }
        }
        self.enqueue(Envelope::Event(event));
    }

    /// Data buffers queued and not yet handed to the transport.
    pub fn backlog(&self) -> usize {
        self.shared.queued_data.get()
    }

    /// Credits granted by the receiver and not yet spent.
    pub fn credits(&self) -> u32 {
        self.shared.credits.get()
    }

    /// Data buffers handed to the transport so far.
    pub fn buffers_sent(&self) -> u64 {
        self.shared.buffers_sent.get()
    }

    /// The channel this handle sends on.
    pub fn id(&self) -> ChannelId {
        self.shared.id
    }

    /// Resolves once everything queued has been handed to the transport, or with
    /// `PeerGone` if the consumer went away with data still to deliver.
    pub async fn drained(&self) -> Result<(), NetError> {
        poll_fn(|cx| {
            let s = &self.shared;
            if s.peer_gone.get() {
                return Poll::Ready(Err(NetError::PeerGone { channel: s.id }));
            }
            if s.queue.borrow().is_empty() && !s.in_hand.get() {
                return Poll::Ready(Ok(()));
            }
            let mut w = s.drained_wakers.borrow_mut();
            if !w.iter().any(|w| w.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for OutputChannel {
    fn drop(&mut self) {
        self.shared.producer_closed.set(true);
        self.shared.wake_pump();
    }
}
