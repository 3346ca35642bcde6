//! The consumer's side: an [`InputGate`] multiplexes its channels into one local queue.
//! Per channel, a data pump task moves arrivals from the data ring into the queue and
//! wakes the gate's reader; a credit pump task sends credits (and released segments)
//! back to the producer. The credit decisions are made by the pure
//! [`CreditLedger`](super::credit::CreditLedger).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::channels::shared_channel::{SharedReceiver, SharedSender};

use super::credit::CreditLedger;
use super::{ChannelConfig, ChannelId, CreditMsg, InputEndpoint, EVENTS_QUEUED_PER_CHANNEL_MAX};
use crate::buffer::Buffer;
use crate::error::NetError;
use crate::event::{Envelope, Event};

struct ChanState {
    id: ChannelId,
    /// Credit messages waiting for the credit pump; bounded by the channel's buffer
    /// slots (each release or grant adds at most one message, grants merge).
    credit_out: RefCell<VecDeque<CreditMsg>>,
    credit_waker: RefCell<Option<Waker>>,
    data_waker: RefCell<Option<Waker>>,
    events_queued: Cell<usize>,
    eop_received: Cell<bool>,
    /// The producer disconnected before `EndOfPartition`.
    gone: Cell<bool>,
    /// The credit ring is closed: segments released now are freed, not returned.
    credit_closed: Cell<bool>,
}

struct GateShared {
    channels: Vec<ChanState>,
    queue: RefCell<VecDeque<(usize, Envelope)>>,
    ledger: RefCell<CreditLedger>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    finished: Cell<usize>,
    gone_count: Cell<usize>,
}

fn wake(slot: &RefCell<Option<Waker>>) {
    if let Some(w) = slot.borrow_mut().take() {
        w.wake();
    }
}

fn register(slot: &RefCell<Option<Waker>>, cx: &std::task::Context<'_>) {
    let mut s = slot.borrow_mut();
    match &*s {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *s = Some(cx.waker().clone()),
    }
}

impl GateShared {
    fn push_credit(&self, ch: usize, credits: u32, segment: Option<crate::segment::Segment>) {
        let c = &self.channels[ch];
        if c.credit_closed.get() {
            return; // producer gone: the segment is freed here
        }
        let mut out = c.credit_out.borrow_mut();
        match (segment, out.back_mut()) {
            (None, _) if credits == 0 => return,
            (None, Some(last)) => last.credits += credits,
            (segment, _) => out.push_back(CreditMsg { credits, segment }),
        }
        drop(out);
        wake(&c.credit_waker);
    }

    fn on_arrival(&self, ch: usize, env: Envelope) {
        let c = &self.channels[ch];
        match &env {
            Envelope::Data { backlog, .. } => {
                self.ledger
                    .borrow_mut()
                    .on_data(ch, *backlog, &mut |to, n| self.push_credit(to, n, None));
            }
            Envelope::Event(ev) => {
                c.events_queued.set(c.events_queued.get() + 1);
                if *ev == Event::EndOfPartition {
                    c.eop_received.set(true);
                    wake(&c.credit_waker);
                }
            }
        }
        self.queue.borrow_mut().push_back((ch, env));
        wake(&self.waker);
    }
}

async fn data_pump(g: Rc<GateShared>, ch: usize, rx: SharedReceiver<Envelope>) {
    let rx = rx.connect().await;
    let c = &g.channels[ch];
    loop {
        // Room for one more event in the gate (data is bounded by credit).
        poll_fn(|cx| {
            if g.closed.get() || c.events_queued.get() < EVENTS_QUEUED_PER_CHANNEL_MAX {
                Poll::Ready(())
            } else {
                register(&c.data_waker, cx);
                Poll::Pending
            }
        })
        .await;
        if g.closed.get() {
            return;
        }
        let closed = poll_fn(|cx| {
            if g.closed.get() {
                Poll::Ready(None)
            } else {
                register(&c.data_waker, cx);
                Poll::Pending
            }
        });
        let got = futures_lite::future::or(async { Some(rx.recv().await) }, closed).await;
        match got {
            None => return,
            Some(Some(env)) => {
                let eop = matches!(env, Envelope::Event(Event::EndOfPartition));
                g.on_arrival(ch, env);
                if eop {
                    return;
                }
            }
            Some(None) => {
                c.gone.set(true);
                g.gone_count.set(g.gone_count.get() + 1);
                wake(&g.waker);
                return;
            }
        }
    }
}

async fn credit_pump(g: Rc<GateShared>, ch: usize, tx: SharedSender<CreditMsg>) {
    let tx = tx.connect().await;
    let c = &g.channels[ch];
    loop {
        let msg = poll_fn(|cx| {
            if let Some(m) = c.credit_out.borrow_mut().pop_front() {
                return Poll::Ready(Some(m));
            }
            let all_released = g.ledger.borrow().channel(ch).in_use == 0;
            if g.closed.get() || c.gone.get() || (c.eop_received.get() && all_released) {
                return Poll::Ready(None);
            }
            register(&c.credit_waker, cx);
            Poll::Pending
        })
        .await;
        let Some(msg) = msg else { break };
        if tx.send(msg).await.is_err() {
            break;
        }
    }
    c.credit_closed.set(true);
    c.credit_out.borrow_mut().clear();
    // Dropping `tx` closes the credit ring; the producer's pumps then finish.
}

/// A consumer's input: all its channels of one job edge multiplexed into one queue.
/// `!Send`: it lives on the consumer's executor. `next` is meant to be awaited by one
/// task at a time.
pub struct InputGate {
    shared: Rc<GateShared>,
}

impl std::fmt::Debug for InputGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputGate")
            .field("channels", &self.shared.channels.len())
            .field("queued", &self.shared.queue.borrow().len())
            .field("finished", &self.shared.finished.get())
            .finish()
    }
}

impl InputGate {
    /// Opens a gate over `endpoints` on the current glommio executor; the channel index
    /// is the position in the Vec. Spawns the pump tasks and queues each channel's
    /// initial exclusive credit. Panics if `config` is out of bounds.
    pub fn open(endpoints: Vec<InputEndpoint>, config: &ChannelConfig) -> InputGate {
        config.assert_valid();
        let n = endpoints.len();
        let slots = config.buffers_in_flight_per_channel_max();
        let ledger = CreditLedger::new(
            n,
            config.exclusive_buffers_per_channel,
            config.floating_buffers_per_gate,
        );
        let channels = endpoints
            .iter()
            .map(|ep| {
                let mut credit_out = VecDeque::with_capacity(slots + 2);
                credit_out.push_back(CreditMsg {
                    credits: ledger.initial_credit(),
                    segment: None,
                });
                ChanState {
                    id: ep.id,
                    credit_out: RefCell::new(credit_out),
                    credit_waker: RefCell::new(None),
                    data_waker: RefCell::new(None),
                    events_queued: Cell::new(0),
                    eop_received: Cell::new(false),
                    gone: Cell::new(false),
                    credit_closed: Cell::new(false),
                }
            })
            .collect();
        let shared = Rc::new(GateShared {
            channels,
            queue: RefCell::new(VecDeque::with_capacity(
                n * (slots + EVENTS_QUEUED_PER_CHANNEL_MAX),
            )),
            ledger: RefCell::new(ledger),
            waker: RefCell::new(None),
            closed: Cell::new(false),
            finished: Cell::new(0),
            gone_count: Cell::new(0),
        });
        for (ch, ep) in endpoints.into_iter().enumerate() {
            glommio::spawn_local(data_pump(shared.clone(), ch, ep.data_rx)).detach();
            glommio::spawn_local(credit_pump(shared.clone(), ch, ep.credit_tx)).detach();
        }
        InputGate { shared }
    }

    /// The next envelope from any channel, waiting if none is queued. `Ok(None)` once
    /// every channel has delivered `EndOfPartition` (which is delivered first).
    /// `Err(PeerGone)` once the queue is empty and a producer vanished before its
    /// `EndOfPartition`.
    pub async fn next(&self) -> Result<Option<(usize, Envelope)>, NetError> {
        poll_fn(|cx| match self.try_next() {
            Ok(None) if !self.is_finished() => {
                register(&self.shared.waker, cx);
                Poll::Pending
            }
            other => Poll::Ready(other),
        })
        .await
    }

    /// Like [`next`](Self::next) but never waits: `Ok(None)` also when nothing is
    /// available right now (see [`is_finished`](Self::is_finished)).
    pub fn try_next(&self) -> Result<Option<(usize, Envelope)>, NetError> {
        let g = &self.shared;
        let popped = g.queue.borrow_mut().pop_front();
        if let Some((ch, env)) = popped {
            if let Envelope::Event(ev) = &env {
                let c = &g.channels[ch];
                c.events_queued.set(c.events_queued.get() - 1);
                wake(&c.data_waker);
                if *ev == Event::EndOfPartition {
                    g.finished.set(g.finished.get() + 1);
                }
            }
            return Ok(Some((ch, env)));
        }
        if g.gone_count.get() > 0 {
            let c = g
                .channels
                .iter()
                .find(|c| c.gone.get())
                .expect("gone channel");
            return Err(NetError::PeerGone { channel: c.id });
        }
        Ok(None)
    }

    /// Every channel delivered `EndOfPartition` and nothing is queued.
    pub fn is_finished(&self) -> bool {
        self.shared.finished.get() == self.shared.channels.len()
            && self.shared.queue.borrow().is_empty()
    }

    /// The consumer is done with `buffer` from `channel`: its segment goes back to the
    /// producer's pool together with a credit (or the credit goes back to the gate's
    /// floating pool).
    pub fn release(&self, channel: usize, buffer: Buffer) {
        let g = &self.shared;
        let seg = buffer.into_segment();
        let back = g
            .ledger
            .borrow_mut()
            .on_release(channel, &mut |to, n| g.push_credit(to, n, None));
        g.push_credit(channel, back, Some(seg));
    }

    /// Number of channels.
    pub fn num_channels(&self) -> usize {
        self.shared.channels.len()
    }

    /// The id of channel `channel`.
    pub fn channel_id(&self, channel: usize) -> ChannelId {
        self.shared.channels[channel].id
    }

    /// Data buffers of `channel` that arrived and were not yet released (queued in the
    /// gate or held by the consumer).
    pub fn buffers_unreleased(&self, channel: usize) -> u32 {
        self.shared.ledger.borrow().channel(channel).in_use
    }

    /// Floating credits of `channel`: lent by the gate and not yet returned.
    pub fn floating_held(&self, channel: usize) -> u32 {
        self.shared.ledger.borrow().channel(channel).floating_held
    }

    /// Floating credits not lent to any channel right now.
    pub fn floating_available(&self) -> u32 {
        self.shared.ledger.borrow().floating_available()
    }

    /// Envelopes queued in the gate and not yet taken.
    pub fn queued(&self) -> usize {
        self.shared.queue.borrow().len()
    }
}

impl Drop for InputGate {
    fn drop(&mut self) {
        let g = &self.shared;
        // Queued buffers go back to their producers; then the pumps wind down.
        let queued: Vec<_> = g.queue.borrow_mut().drain(..).collect();
        for (ch, env) in queued {
            if let Envelope::Data { buffer, .. } = env {
                g.push_credit(ch, 0, Some(buffer.into_segment()));
            }
        }
        g.closed.set(true);
        for c in &g.channels {
            wake(&c.data_waker);
            wake(&c.credit_waker);
        }
    }
}
