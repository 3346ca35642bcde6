//! Barrier handling of one input gate (Flink's `CheckpointBarrierHandler`):
//! decides, for each envelope that arrives, whether it is processed now,
//! held back (aligned checkpoints) or also recorded as in-flight data
//! (unaligned checkpoints), and when the task takes its snapshot.
//!
//! - Aligned (exactly-once): a channel that delivered the barrier is blocked;
//!   its envelopes wait here (their buffers keep their credits, so the
//!   producer is backpressured) until every live channel delivered it. Then
//!   the snapshot is taken and the held envelopes are replayed in order.
//! - At-least-once: nothing is blocked; the snapshot is taken when the last
//!   barrier arrives.
//! - Unaligned: the first barrier takes the snapshot at once and is forwarded
//!   ahead of the data still in the input; the data buffers that arrive on a
//!   channel after the snapshot and before that channel's barrier are
//!   processed and also recorded, and are part of the checkpoint.
//! - An aligned checkpoint whose alignment outlasts the timeout switches to
//!   unaligned: held envelopes (after the barrier) are replayed, the
//!   remaining channels' data until their barriers is recorded.
//! - A savepoint is always aligned (as in Flink): it holds no in-flight
//!   data, so it can be restored at any parallelism.
//!
//! Pure state: the task asks and acts. Invariant: a channel's envelopes are
//! processed in the order they arrived, whether held or not.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rheon_net::event::Envelope;

use crate::checkpoint::config::CheckpointingMode;

/// One checkpoint's progress at this gate.
pub(crate) struct Alignment {
    pub(crate) checkpoint_id: u64,
    pub(crate) timestamp_ms: u64,
    pub(crate) savepoint: bool,
    pub(crate) started: Instant,
    arrived: Vec<bool>,
    count: usize,
    /// The snapshot was taken (unaligned, or after the alignment timeout).
    pub(crate) taken: bool,
    /// Per channel, data recorded after the snapshot until its barrier.
    pub(crate) recorded: Vec<Vec<Vec<u8>>>,
}

/// What the task must do after a barrier or an end of partition.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BarrierStep {
    Nothing,
    /// Take the snapshot now and forward the barrier; the checkpoint is
    /// complete at this gate (aligned, at-least-once). `alignment`: from the
    /// first barrier to now.
    Snapshot {
        checkpoint_id: u64,
        timestamp_ms: u64,
        savepoint: bool,
        alignment: Duration,
    },
    /// Take the snapshot now and forward the barrier; in-flight data follows
    /// (unaligned: the first barrier, or an alignment that timed out).
    SnapshotUnaligned {
        checkpoint_id: u64,
        timestamp_ms: u64,
        alignment: Duration,
    },
    /// Every channel's barrier arrived after an unaligned snapshot: the
    /// recorded data is complete.
    ChannelStateComplete,
}

pub(crate) struct Barriers {
    mode: CheckpointingMode,
    unaligned: bool,
    aligned_timeout: Option<Duration>,
    ended: Vec<bool>,
    pub(crate) current: Option<Alignment>,
    held: Vec<VecDeque<Envelope>>,
    /// Envelopes released after an alignment, processed before the gate's.
    pub(crate) replay: VecDeque<(usize, Envelope)>,
}

impl Barriers {
    pub(crate) fn new(
        channels: usize,
        mode: CheckpointingMode,
        unaligned: bool,
        aligned_timeout: Option<Duration>,
    ) -> Self {
        Barriers {
            mode,
            unaligned,
            aligned_timeout,
            ended: vec![false; channels],
            current: None,
            held: (0..channels).map(|_| VecDeque::new()).collect(),
            replay: VecDeque::new(),
        }
    }

    /// Whether envelopes of `channel` must be held back now.
    #[inline]
    pub(crate) fn is_blocked(&self, channel: usize) -> bool {
        match &self.current {
            Some(a) => {
                a.arrived[channel] && !a.taken && self.mode == CheckpointingMode::ExactlyOnce
            }
            None => false,
        }
    }

    pub(crate) fn hold(&mut self, channel: usize, envelope: Envelope) {
        self.held[channel].push_back(envelope);
    }

    /// Whether a data buffer of `channel` is in flight for an unaligned
    /// snapshot (record it).
    #[inline]
    pub(crate) fn is_recording(&self, channel: usize) -> bool {
        match &self.current {
            Some(a) => a.taken && !a.arrived[channel],
            None => false,
        }
    }

    pub(crate) fn record(&mut self, channel: usize, bytes: Vec<u8>) {
        if let Some(a) = &mut self.current {
            a.recorded[channel].push(bytes);
        }
    }

    /// When an alignment in progress times out, if it can.
    pub(crate) fn alignment_deadline(&self) -> Option<Instant> {
        let a = self.current.as_ref()?;
        if a.taken || a.savepoint || self.mode != CheckpointingMode::ExactlyOnce {
            return None;
        }
        Some(a.started + self.aligned_timeout?)
    }

    /// The alignment timed out: switch it to unaligned. Returns the
    /// snapshot to take now.
    pub(crate) fn switch_to_unaligned(&mut self) -> Option<BarrierStep> {
        let a = self.current.as_mut()?;
        a.taken = true;
        let step = BarrierStep::SnapshotUnaligned {
            checkpoint_id: a.checkpoint_id,
            timestamp_ms: a.timestamp_ms,
            alignment: a.started.elapsed(),
        };
        self.release_held();
        Some(step)
    }

    /// A barrier for `checkpoint_id` arrived on `channel`.
    pub(crate) fn on_barrier(
        &mut self,
        channel: usize,
        checkpoint_id: u64,
        timestamp_ms: u64,
        savepoint: bool,
    ) -> BarrierStep {
        let start_new = match &self.current {
            None => true,
            Some(a) => checkpoint_id > a.checkpoint_id,
        };
        if start_new {
            // A newer checkpoint supersedes an unfinished one (it was aborted).
            self.release_held();
            let channels = self.ended.len();
            self.current = Some(Alignment {
                checkpoint_id,
                timestamp_ms,
                savepoint,
                started: Instant::now(),
                arrived: self.ended.clone(),
                count: self.ended.iter().filter(|e| **e).count(),
                taken: false,
                recorded: vec![Vec::new(); channels],
            });
        }
        let a = self.current.as_mut().expect("set above");
        if checkpoint_id < a.checkpoint_id || a.arrived[channel] {
            return BarrierStep::Nothing; // stale
        }
        a.arrived[channel] = true;
        a.count += 1;
        self.progress(true)
    }

    /// `channel` ended: it will deliver no more barriers.
    pub(crate) fn on_end(&mut self, channel: usize) -> BarrierStep {
        self.ended[channel] = true;
        let Some(a) = &mut self.current else {
            return BarrierStep::Nothing;
        };
        if a.arrived[channel] {
            return BarrierStep::Nothing;
        }
        a.arrived[channel] = true;
        a.count += 1;
        self.progress(false)
    }

    fn progress(&mut self, first_possible: bool) -> BarrierStep {
        let unaligned = self.unaligned;
        let a = self.current.as_mut().expect("an alignment");
        let all = a.count == a.arrived.len();
        let (id, ts, alignment) = (a.checkpoint_id, a.timestamp_ms, a.started.elapsed());
        let savepoint = a.savepoint;
        if !a.taken && unaligned && !savepoint && first_possible && !all {
            a.taken = true;
            return BarrierStep::SnapshotUnaligned {
                checkpoint_id: id,
                timestamp_ms: ts,
                alignment,
            };
        }
        if !all {
            return BarrierStep::Nothing;
        }
        if a.taken {
            return BarrierStep::ChannelStateComplete;
        }
        self.current = None;
        self.release_held();
        BarrierStep::Snapshot {
            checkpoint_id: id,
            timestamp_ms: ts,
            savepoint,
            alignment,
        }
    }

    /// Ends the current checkpoint after its channel state is taken.
    pub(crate) fn take_recorded(&mut self) -> Vec<(u32, Vec<Vec<u8>>)> {
        let Some(a) = self.current.take() else {
            return Vec::new();
        };
        self.release_held();
        a.recorded
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(c, r)| (c as u32, r))
            .collect()
    }

    fn release_held(&mut self) {
        for (channel, held) in self.held.iter_mut().enumerate() {
            self.replay
                .extend(held.drain(..).map(|envelope| (channel, envelope)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rheon_net::event::Event;

    fn barriers(mode: CheckpointingMode, unaligned: bool) -> Barriers {
        Barriers::new(3, mode, unaligned, None)
    }

    #[test]
    fn aligned_blocks_barriered_channels_then_snapshots_and_replays() {
        let mut b = barriers(CheckpointingMode::ExactlyOnce, false);
        assert_eq!(b.on_barrier(0, 1, 7, false), BarrierStep::Nothing);
        assert!(b.is_blocked(0) && !b.is_blocked(1));
        b.hold(0, Envelope::Event(Event::Watermark(5)));
        assert_eq!(b.on_end(2), BarrierStep::Nothing);
        assert!(matches!(
            b.on_barrier(1, 1, 7, false),
            BarrierStep::Snapshot {
                checkpoint_id: 1,
                timestamp_ms: 7,
                ..
            }
        ));
        assert!(!b.is_blocked(0));
        assert_eq!(b.replay.len(), 1);
        // The ended channel counts as aligned for the next checkpoint too.
        b.on_barrier(0, 2, 8, false);
        assert!(matches!(
            b.on_barrier(1, 2, 8, false),
            BarrierStep::Snapshot { .. }
        ));
    }

    #[test]
    fn at_least_once_never_blocks() {
        let mut b = barriers(CheckpointingMode::AtLeastOnce, false);
        b.on_barrier(0, 1, 0, false);
        assert!(!b.is_blocked(0));
        b.on_barrier(1, 1, 0, false);
        assert!(matches!(
            b.on_barrier(2, 1, 0, false),
            BarrierStep::Snapshot { .. }
        ));
    }

    #[test]
    fn unaligned_snapshots_on_the_first_barrier_and_records_the_rest() {
        let mut b = barriers(CheckpointingMode::ExactlyOnce, true);
        assert!(matches!(
            b.on_barrier(1, 1, 0, false),
            BarrierStep::SnapshotUnaligned { .. }
        ));
        assert!(!b.is_blocked(1));
        assert!(b.is_recording(0) && !b.is_recording(1));
        b.record(0, vec![1, 2]);
        assert_eq!(b.on_barrier(0, 1, 0, false), BarrierStep::Nothing);
        assert_eq!(b.on_end(2), BarrierStep::ChannelStateComplete);
        assert_eq!(b.take_recorded(), vec![(0, vec![vec![1, 2]])]);
        assert!(b.current.is_none());
    }

    #[test]
    fn alignment_timeout_switches_to_unaligned() {
        let mut b = Barriers::new(
            2,
            CheckpointingMode::ExactlyOnce,
            false,
            Some(Duration::ZERO),
        );
        b.on_barrier(0, 1, 0, false);
        b.hold(0, Envelope::Event(Event::Watermark(1)));
        assert!(b.alignment_deadline().is_some());
        assert!(matches!(
            b.switch_to_unaligned(),
            Some(BarrierStep::SnapshotUnaligned {
                checkpoint_id: 1,
                timestamp_ms: 0,
                ..
            })
        ));
        assert!(!b.is_blocked(0) && b.is_recording(1));
        assert_eq!(b.replay.len(), 1);
        assert_eq!(
            b.on_barrier(1, 1, 0, false),
            BarrierStep::ChannelStateComplete
        );
    }

    #[test]
    fn savepoints_align_even_when_checkpoints_are_unaligned() {
        let mut b = Barriers::new(
            2,
            CheckpointingMode::ExactlyOnce,
            true,
            Some(Duration::ZERO),
        );
        assert_eq!(b.on_barrier(0, 1, 0, true), BarrierStep::Nothing);
        assert!(b.is_blocked(0) && !b.is_recording(1));
        assert_eq!(b.alignment_deadline(), None, "no switch to unaligned");
        b.hold(0, Envelope::Event(Event::Watermark(1)));
        assert!(matches!(
            b.on_barrier(1, 1, 0, true),
            BarrierStep::Snapshot {
                checkpoint_id: 1,
                savepoint: true,
                ..
            }
        ));
        assert_eq!(b.replay.len(), 1);
        // The next checkpoint is unaligned again.
        assert!(matches!(
            b.on_barrier(0, 2, 0, false),
            BarrierStep::SnapshotUnaligned { .. }
        ));
    }
}
