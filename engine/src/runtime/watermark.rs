//! Event time: the watermark valve that combines the watermarks of a task's
//! input channels, and the operator that assigns watermarks at a source.
//!
//! Invariants: a task forwards a watermark only when the minimum over its
//! input channels advances, so watermarks leaving a task never go backwards; a
//! channel that ended (end of partition) no longer holds the minimum back.

use std::time::Duration;

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::TaskResult;
use crate::runtime::collector::{guarded, BoxCollector, Collector, Shared};
use crate::runtime::timers::{now_ms, ProcessingTimeService, ProcessingTimeTarget, TargetId};

/// The watermark a task has before any input announced one.
pub const WATERMARK_MIN: i64 = i64::MIN;
/// The watermark at the end of a bounded input: every window may fire.
pub const WATERMARK_MAX: i64 = i64::MAX;

/// What a change at one input channel means for the task's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ValveOutput {
    /// The task's watermark advanced to this.
    pub(crate) watermark: Option<i64>,
    /// The task's output went idle (`Some(true)`) or active again.
    pub(crate) status: Option<bool>,
}

#[derive(Clone, Copy)]
struct ChannelWatermark {
    watermark: i64,
    ended: bool,
    idle: bool,
    /// Whether the channel's watermark has caught up with the task's; a
    /// channel that comes back from idle behind it does not hold it back
    /// until it catches up (Flink's `isWatermarkAligned`).
    aligned: bool,
}

/// Combines per-channel watermarks as their minimum over the active
/// channels (Flink's StatusWatermarkValve). The task is idle when every
/// channel that has not ended is idle.
pub(crate) struct WatermarkValve {
    channels: Vec<ChannelWatermark>,
    current: i64,
    idle: bool,
}

impl WatermarkValve {
    pub(crate) fn new(channels: usize) -> Self {
        WatermarkValve {
            channels: vec![
                ChannelWatermark {
                    watermark: WATERMARK_MIN,
                    ended: false,
                    idle: false,
                    aligned: true,
                };
                channels
            ],
            current: WATERMARK_MIN,
            idle: false,
        }
    }

    /// A watermark arrived on `channel`; returns the task's new watermark if
    /// the minimum advanced.
    pub(crate) fn on_watermark(&mut self, channel: usize, watermark: i64) -> Option<i64> {
        let c = &mut self.channels[channel];
        if watermark > c.watermark {
            c.watermark = watermark;
        }
        if !c.aligned && c.watermark >= self.current {
            c.aligned = true;
        }
        self.advance()
    }

    /// `channel` went idle or active again.
    pub(crate) fn on_status(&mut self, channel: usize, idle: bool) -> ValveOutput {
        let current = self.current;
        let c = &mut self.channels[channel];
        if c.idle == idle {
            return ValveOutput::default();
        }
        c.idle = idle;
        if !idle {
            c.aligned = c.watermark >= current;
        }
        self.changed()
    }

    /// `channel` ended.
    pub(crate) fn on_end(&mut self, channel: usize) -> ValveOutput {
        self.channels[channel].ended = true;
        self.changed()
    }

    /// After a channel changed status: an active task first says so, then
    /// advances; an idle one advances (the idle channel no longer holds the
    /// minimum back), then says so.
    fn changed(&mut self) -> ValveOutput {
        let mut live = self.channels.iter().filter(|c| !c.ended).peekable();
        let idle = live.peek().is_some() && live.all(|c| c.idle);
        let status = (idle != self.idle).then_some(idle);
        self.idle = idle;
        ValveOutput {
            watermark: self.advance(),
            status,
        }
    }

    fn advance(&mut self) -> Option<i64> {
        let min = self
            .channels
            .iter()
            .filter(|c| !c.ended && !c.idle && c.aligned)
            .map(|c| c.watermark)
            .min()?;
        if min > self.current {
            self.current = min;
            for c in &mut self.channels {
                if !c.aligned && c.watermark >= min {
                    c.aligned = true;
                }
            }
            Some(min)
        } else {
            None
        }
    }
}

/// Extracts an event timestamp (milliseconds) from a record.
pub type TimestampFn<T> = std::sync::Arc<dyn Fn(&T) -> i64 + Send + Sync>;

/// How a stream's watermarks are generated: Flink's bounded out-of-orderness
/// strategy. The watermark trails the largest timestamp seen by the bound
/// (watermark = max timestamp - bound - 1), and is emitted when it has moved by
/// at least `granularity_ms` so a fast stream does not send one per record.
#[derive(Clone)]
pub struct WatermarkStrategy<T> {
    pub(crate) timestamp: TimestampFn<T>,
    pub(crate) out_of_orderness_ms: i64,
    pub(crate) granularity_ms: i64,
    /// Marks the stream idle after this long without records.
    pub(crate) idle_timeout_ms: Option<i64>,
}

impl<T> WatermarkStrategy<T> {
    pub fn bounded_out_of_orderness(
        bound: Duration,
        timestamp: impl Fn(&T) -> i64 + Send + Sync + 'static,
    ) -> Self {
        WatermarkStrategy {
            timestamp: std::sync::Arc::new(timestamp),
            out_of_orderness_ms: bound.as_millis() as i64,
            granularity_ms: 1,
            idle_timeout_ms: None,
        }
    }

    /// Timestamps never decrease (a bound of zero).
    pub fn monotonous(timestamp: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO, timestamp)
    }

    /// A source subtask that produced no record for `timeout` is marked idle:
    /// downstream tasks stop waiting for its watermark until it produces
    /// again (Flink's `withIdleness`).
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout_ms = Some((timeout.as_millis() as i64).max(1));
        self
    }

    /// Emit a watermark only after it moved by at least this many milliseconds.
    pub fn with_granularity_ms(mut self, granularity_ms: i64) -> Self {
        self.granularity_ms = granularity_ms.max(1);
        self
    }
}

/// Chained after a source: passes records through and emits watermarks;
/// with an idle timeout it also marks the stream idle and active again.
pub(crate) struct WatermarkAssigner<T> {
    pub(crate) strategy: WatermarkStrategy<T>,
    pub(crate) max_timestamp: i64,
    pub(crate) emitted: i64,
    pub(crate) out: BoxCollector<T>,
    pub(crate) location: crate::error::TaskLocation,
    pub(crate) idleness: Option<IdleDetector>,
}

/// Idleness is checked on processing-time callbacks, not per record: a
/// record only bumps a counter (and reactivates an idle stream).
pub(crate) struct IdleDetector {
    pub(crate) service: ProcessingTimeService,
    pub(crate) target: Option<TargetId>,
    pub(crate) timeout_ms: i64,
    pub(crate) records: u64,
    pub(crate) records_at_check: u64,
    pub(crate) last_activity_ms: i64,
    pub(crate) idle: bool,
}

impl IdleDetector {
    pub(crate) fn new(service: ProcessingTimeService, timeout_ms: i64) -> Self {
        IdleDetector {
            service,
            target: None,
            timeout_ms,
            records: 0,
            records_at_check: 0,
            last_activity_ms: now_ms(),
            idle: false,
        }
    }

    fn check_interval(&self) -> i64 {
        (self.timeout_ms / 4).max(1)
    }
}

/// Builds the assigner for a subtask, registering its idleness checks.
pub(crate) fn watermark_assigner<T: 'static>(
    strategy: WatermarkStrategy<T>,
    ctx: &crate::api::functions::OperatorContext,
    out: BoxCollector<T>,
    location: crate::error::TaskLocation,
) -> BoxCollector<T> {
    let idleness = strategy
        .idle_timeout_ms
        .map(|timeout| IdleDetector::new(ctx.processing_time.clone(), timeout));
    let assigner = WatermarkAssigner {
        strategy,
        max_timestamp: i64::MIN,
        emitted: i64::MIN,
        out,
        location,
        idleness,
    };
    if assigner.idleness.is_none() {
        return Box::new(assigner);
    }
    let shared = Rc::new(RefCell::new(assigner));
    let service = ctx.processing_time.clone();
    let target = service.register(shared.clone());
    {
        let mut a = shared.borrow_mut();
        let detector = a.idleness.as_mut().expect("idleness set");
        detector.target = Some(target);
        service.schedule(target, now_ms() + detector.check_interval());
    }
    Box::new(Shared(shared))
}

impl<T> Collector<T> for WatermarkAssigner<T> {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
        if let Some(detector) = &mut self.idleness {
            detector.records += 1;
            if detector.idle {
                detector.idle = false;
                self.out.watermark_status(false)?;
            }
        }
        let timestamp = &self.strategy.timestamp;
        let ts = guarded(&self.location, || timestamp(&record))?;
        self.out.collect(record)?;
        if ts > self.max_timestamp {
            self.max_timestamp = ts;
            let candidate = ts
                .saturating_sub(self.strategy.out_of_orderness_ms)
                .saturating_sub(1);
            if candidate >= self.emitted.saturating_add(self.strategy.granularity_ms) {
                self.emitted = candidate;
                self.out.watermark(candidate)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> TaskResult {
        // End of a bounded input: everything is complete.
        if let Some(detector) = &mut self.idleness {
            if detector.idle {
                detector.idle = false;
                self.out.watermark_status(false)?;
            }
        }
        self.out.watermark(WATERMARK_MAX)?;
        self.out.finish()
    }

    fn watermark(&mut self, _watermark: i64) -> TaskResult {
        // Upstream watermarks are replaced by this assigner's.
        Ok(())
    }
}

impl<T> ProcessingTimeTarget for WatermarkAssigner<T> {
    fn on_processing_time(&mut self, now: i64) -> TaskResult {
        let Some(detector) = &mut self.idleness else {
            return Ok(());
        };
        if detector.records != detector.records_at_check {
            detector.records_at_check = detector.records;
            detector.last_activity_ms = now;
        } else if !detector.idle && now - detector.last_activity_ms >= detector.timeout_ms {
            detector.idle = true;
            self.out.watermark_status(true)?;
        }
        let next = now + detector.check_interval();
        if let Some(target) = detector.target {
            detector.service.schedule(target, next);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valve_takes_the_minimum_and_never_goes_back() {
        let mut v = WatermarkValve::new(3);
        assert_eq!(v.on_watermark(0, 10), None);
        assert_eq!(v.on_watermark(1, 5), None);
        assert_eq!(v.on_watermark(2, 7), Some(5));
        assert_eq!(
            v.on_watermark(1, 3),
            None,
            "a channel's watermark never regresses"
        );
        assert_eq!(v.on_watermark(1, 20), Some(7));
        assert_eq!(
            v.on_end(2).watermark,
            Some(10),
            "an ended channel stops holding the minimum back"
        );
        assert_eq!(v.on_watermark(0, 30), Some(20));
        assert_eq!(v.on_end(1).watermark, Some(30));
        assert_eq!(v.on_end(0), ValveOutput::default());
    }

    #[test]
    fn idle_channels_do_not_hold_the_watermark_back() {
        let mut v = WatermarkValve::new(3);
        v.on_watermark(0, 10);
        v.on_watermark(1, 20);
        assert_eq!(v.on_watermark(2, 5), Some(5));
        assert_eq!(
            v.on_status(2, true),
            ValveOutput {
                watermark: Some(10),
                status: None
            },
            "an idle channel stops holding the minimum back"
        );
        assert_eq!(v.on_watermark(0, 30), Some(20));
        assert_eq!(
            v.on_status(2, false),
            ValveOutput::default(),
            "back from idle behind the task's watermark: does not regress it"
        );
        assert_eq!(
            v.on_watermark(1, 40),
            Some(30),
            "the channel behind is not aligned yet and does not hold it back"
        );
        assert_eq!(v.on_watermark(2, 35), None, "caught up: aligned again");
        assert_eq!(v.on_watermark(0, 50), Some(35));
        assert_eq!(v.on_status(0, true).status, None);
        assert_eq!(v.on_status(1, true).status, None);
        assert_eq!(
            v.on_status(2, true).status,
            Some(true),
            "every live channel idle: the task is idle"
        );
        assert_eq!(v.on_status(1, false).status, Some(false));
        assert_eq!(v.on_end(1).status, Some(true), "the only active one ended");
    }
}
