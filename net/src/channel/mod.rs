//! Credit-based channels between a producer subtask's subpartition and a consumer
//! subtask's input channel, modelled on Flink's credit-based flow control.
//!
//! Control path: the process-wide [`ConnectionManager`] creates, per [`ChannelId`], the
//! pair of glommio shared channels (data producer->consumer, credit consumer->producer)
//! and parks each half until its side takes it. Data path: the producer's executor opens
//! its [`OutputEndpoint`] into an [`OutputChannel`]; the consumer's executor opens its
//! [`InputEndpoint`]s into one [`InputGate`]. Spawned pump tasks connect the rings and
//! move envelopes; a sender spends one credit per data buffer, the receiver grants
//! `exclusive_buffers_per_channel` credits per channel up front and lends
//! `floating_buffers_per_gate` extra credits to channels that announce a backlog.
//! Released buffers travel back with their credit, so the segment returns to the
//! producer's [`crate::LocalBufferPool`]. Memory in flight per channel is bounded by
//! `exclusive + floating` buffers by construction.
//!
//! Architecture invariant: after `open`, no lock and no shared mutable state is touched
//! on the data path; the only cross-core traffic is through the two SPSC rings.

mod credit;
mod input;
mod output;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};

use crate::event::Envelope;
use crate::segment::Segment;

pub use input::InputGate;
pub use output::OutputChannel;

/// Events one channel may have in its data ring beyond the data buffers its credits
/// allow. The pumps await ring space, so this only sizes the ring.
pub const EVENTS_IN_FLIGHT_PER_CHANNEL_MAX: usize = 16;

/// Events one channel may have queued in its gate, not yet taken by `next`; the pump
/// stops reading that channel's ring beyond this.
pub const EVENTS_QUEUED_PER_CHANNEL_MAX: usize = 64;

/// Envelopes an [`OutputChannel`] may hold queued (data is further bounded by the
/// producer's segments). Exceeding it is a programmer error: a producer must wait on
/// [`OutputChannel::drained`] or on its buffer pool.
pub const OUTPUT_QUEUE_ENVELOPES_MAX: usize = 1 << 16;

/// Upper bound for either buffer count in [`ChannelConfig`].
pub const BUFFERS_PER_CHANNEL_MAX: u32 = 1 << 12;

/// Identifies one channel of one job edge: producer subtask -> consumer subtask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelId {
    /// The job attempt (restart count): channels of two attempts never meet.
    pub attempt: u32,
    pub edge: u32,
    pub producer: u32,
    pub consumer: u32,
}

/// Credit configuration (Flink's `buffers-per-channel` and
/// `floating-buffers-per-gate`).
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Credits each channel owns from the start. Must be at least 1, or a channel
    /// could never announce a backlog.
    pub exclusive_buffers_per_channel: u32,
    /// Credits a gate lends to channels with a backlog.
    pub floating_buffers_per_gate: u32,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            exclusive_buffers_per_channel: 2,
            floating_buffers_per_gate: 8,
        }
    }
}

impl ChannelConfig {
    fn assert_valid(&self) {
        assert!(
            (1..=BUFFERS_PER_CHANNEL_MAX).contains(&self.exclusive_buffers_per_channel),
            "exclusive_buffers_per_channel must be in 1..={BUFFERS_PER_CHANNEL_MAX}, got {}",
            self.exclusive_buffers_per_channel
        );
        assert!(
            self.floating_buffers_per_gate <= BUFFERS_PER_CHANNEL_MAX,
            "floating_buffers_per_gate must be at most {BUFFERS_PER_CHANNEL_MAX}, got {}",
            self.floating_buffers_per_gate
        );
    }

    /// Most data buffers one channel can have in flight or unreleased at once.
    pub fn buffers_in_flight_per_channel_max(&self) -> usize {
        (self.exclusive_buffers_per_channel + self.floating_buffers_per_gate) as usize
    }
}

/// Consumer -> producer: credits granted and, when a buffer was released, its segment.
#[derive(Debug)]
pub(crate) struct CreditMsg {
    pub(crate) credits: u32,
    pub(crate) segment: Option<Segment>,
}

/// The producer's half of a channel, not yet opened. `Send`: it is created on the
/// control path and moved to the producer's executor.
#[derive(Debug)]
pub struct OutputEndpoint {
    id: ChannelId,
    data_tx: SharedSender<Envelope>,
    credit_rx: SharedReceiver<CreditMsg>,
}

/// The consumer's half of a channel, not yet opened. `Send`.
#[derive(Debug)]
pub struct InputEndpoint {
    id: ChannelId,
    data_rx: SharedReceiver<Envelope>,
    credit_tx: SharedSender<CreditMsg>,
}

impl OutputEndpoint {
    /// The channel this endpoint belongs to.
    pub fn id(&self) -> ChannelId {
        self.id
    }
}

impl InputEndpoint {
    /// The channel this endpoint belongs to.
    pub fn id(&self) -> ChannelId {
        self.id
    }
}

#[derive(Default)]
struct Parked {
    output: Option<OutputEndpoint>,
    input: Option<InputEndpoint>,
    output_taken: bool,
    input_taken: bool,
}

/// Creates channel pairs and hands out their halves. One per process; control path
/// only, so a `Mutex` is fine.
pub struct ConnectionManager {
    config: ChannelConfig,
    parked: Mutex<HashMap<ChannelId, Parked>>,
}

impl std::fmt::Debug for ConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ConnectionManager {
    /// A manager whose channels are sized for `config`.
    pub fn new(config: ChannelConfig) -> Arc<Self> {
        config.assert_valid();
        Arc::new(ConnectionManager {
            config,
            parked: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration the rings are sized for.
    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    fn create(&self, id: ChannelId) -> Parked {
        let data_slots =
            self.config.buffers_in_flight_per_channel_max() + EVENTS_IN_FLIGHT_PER_CHANNEL_MAX;
        // Credit messages: at most one per buffer slot plus the initial grant and
        // floating grants, each bounded by the slots.
        let credit_slots = 2 * self.config.buffers_in_flight_per_channel_max() + 1;
        let (data_tx, data_rx) = shared_channel::new_bounded(data_slots);
        let (credit_tx, credit_rx) = shared_channel::new_bounded(credit_slots);
        Parked {
            output: Some(OutputEndpoint {
                id,
                data_tx,
                credit_rx,
            }),
            input: Some(InputEndpoint {
                id,
                data_rx,
                credit_tx,
            }),
            output_taken: false,
            input_taken: false,
        }
    }

    /// Takes the producer's half of `id`, creating the pair on first use. Panics if
    /// this half was already taken (each half is taken exactly once).
    pub fn output_endpoint(&self, id: ChannelId) -> OutputEndpoint {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        let slot = parked.entry(id).or_insert_with(|| self.create(id));
        assert!(!slot.output_taken, "output endpoint of {id:?} taken twice");
        slot.output_taken = true;
        let ep = slot.output.take().expect("parked output endpoint");
        if slot.input_taken {
            parked.remove(&id);
        }
        ep
    }

    /// Takes the consumer's half of `id`, creating the pair on first use. Panics if
    /// this half was already taken.
    pub fn input_endpoint(&self, id: ChannelId) -> InputEndpoint {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        let slot = parked.entry(id).or_insert_with(|| self.create(id));
        assert!(!slot.input_taken, "input endpoint of {id:?} taken twice");
        slot.input_taken = true;
        let ep = slot.input.take().expect("parked input endpoint");
        if slot.output_taken {
            parked.remove(&id);
        }
        ep
    }

    /// Channels with one half still parked.
    pub fn parked_count(&self) -> usize {
        self.parked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn endpoints_are_send_and_manager_is_sync() {
        assert_send::<OutputEndpoint>();
        assert_send::<InputEndpoint>();
        assert_send::<Envelope>();
        assert_send_sync::<ConnectionManager>();
    }

    #[test]
    fn pair_created_by_either_side_and_forgotten_when_both_taken() {
        let m = ConnectionManager::new(ChannelConfig::default());
        let id = ChannelId {
            attempt: 0,
            edge: 1,
            producer: 0,
            consumer: 2,
        };
        let i = m.input_endpoint(id);
        assert_eq!(m.parked_count(), 1);
        let o = m.output_endpoint(id);
        assert_eq!(m.parked_count(), 0);
        assert_eq!(i.id(), o.id());
    }

    #[test]
    #[should_panic(expected = "taken twice")]
    fn taking_a_half_twice_panics() {
        let m = ConnectionManager::new(ChannelConfig::default());
        let id = ChannelId {
            attempt: 0,
            edge: 0,
            producer: 0,
            consumer: 0,
        };
        let _a = m.output_endpoint(id);
        let _b = m.output_endpoint(id);
    }
}
