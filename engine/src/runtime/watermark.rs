//! Event time: the watermark valve that combines the watermarks of a task's
//! input channels, and the operator that assigns watermarks at a source.
//!
//! Invariants: a task forwards a watermark only when the minimum over its
//! input channels advances, so watermarks leaving a task never go backwards; a
//! channel that ended (end of partition) no longer holds the minimum back.

use std::time::Duration;

use crate::error::TaskResult;
use crate::runtime::collector::{guarded, BoxCollector, Collector};

/// The watermark a task has before any input announced one.
pub const WATERMARK_MIN: i64 = i64::MIN;
/// The watermark at the end of a bounded input: every window may fire.
pub const WATERMARK_MAX: i64 = i64::MAX;

/// Combines per-channel watermarks as their minimum (Flink's StatusWatermarkValve).
pub(crate) struct WatermarkValve {
    channel: Vec<i64>,
    ended: Vec<bool>,
    current: i64,
}

impl WatermarkValve {
    pub(crate) fn new(channels: usize) -> Self {
        WatermarkValve {
            channel: vec![WATERMARK_MIN; channels],
            ended: vec![false; channels],
            current: WATERMARK_MIN,
        }
    }

    /// A watermark arrived on `channel`; returns the task's new watermark if
    /// the minimum advanced.
    pub(crate) fn on_watermark(&mut self, channel: usize, watermark: i64) -> Option<i64> {
        if watermark > self.channel[channel] {
            self.channel[channel] = watermark;
        }
        self.advance()
    }

    /// `channel` ended; returns the new watermark if the minimum advanced.
    pub(crate) fn on_end(&mut self, channel: usize) -> Option<i64> {
        self.ended[channel] = true;
        self.advance()
    }

    fn advance(&mut self) -> Option<i64> {
        let min = self
            .channel
            .iter()
            .zip(&self.ended)
            .filter(|(_, &ended)| !ended)
            .map(|(&w, _)| w)
            .min()?;
        if min > self.current {
            self.current = min;
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
        }
    }

    /// Timestamps never decrease (a bound of zero).
    pub fn monotonous(timestamp: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO, timestamp)
    }

    /// Emit a watermark only after it moved by at least this many milliseconds.
    pub fn with_granularity_ms(mut self, granularity_ms: i64) -> Self {
        self.granularity_ms = granularity_ms.max(1);
        self
    }
}

/// Chained after a source: passes records through and emits watermarks.
pub(crate) struct WatermarkAssigner<T> {
    pub(crate) strategy: WatermarkStrategy<T>,
    pub(crate) max_timestamp: i64,
    pub(crate) emitted: i64,
    pub(crate) out: BoxCollector<T>,
    pub(crate) location: crate::error::TaskLocation,
}

impl<T> Collector<T> for WatermarkAssigner<T> {
    #[inline]
    fn collect(&mut self, record: T) -> TaskResult {
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
        self.out.watermark(WATERMARK_MAX)?;
        self.out.finish()
    }

    fn watermark(&mut self, _watermark: i64) -> TaskResult {
        // Upstream watermarks are replaced by this assigner's.
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
            v.on_end(2),
            Some(10),
            "an ended channel stops holding the minimum back"
        );
        assert_eq!(v.on_watermark(0, 30), Some(20));
        assert_eq!(v.on_end(1), Some(30));
        assert_eq!(v.on_end(0), None);
    }
}
