//! Restart strategies, as in Flink (`RestartBackoffTimeStrategy`): whether a
//! failed job may restart, and after how long.
//!
//! Pure state: the job master asks [`RestartTracker::on_failure`] with the
//! current instant and gets a delay or a refusal; nothing here sleeps.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a job recovers from a task failure.
#[derive(Clone, Debug, PartialEq)]
pub enum RestartStrategy {
    /// A failure fails the job.
    None,
    /// Up to `attempts` restarts, each after `delay`.
    FixedDelay { attempts: u32, delay: Duration },
    /// Unlimited restarts; the delay starts at `initial`, is multiplied by
    /// `multiplier` after each failure up to `max`, and falls back to
    /// `initial` after `reset_after` without a failure.
    ExponentialDelay {
        initial: Duration,
        max: Duration,
        multiplier: f64,
        reset_after: Duration,
    },
    /// Restarts after `delay` unless more than `max_failures` failures fall
    /// within one `interval`.
    FailureRate {
        max_failures: u32,
        interval: Duration,
        delay: Duration,
    },
}

impl RestartStrategy {
    /// Flink's default when checkpointing is enabled: fixed delay, effectively
    /// unlimited attempts (`Integer.MAX_VALUE`), 1 s apart.
    pub fn flink_default() -> Self {
        RestartStrategy::FixedDelay {
            attempts: i32::MAX as u32,
            delay: Duration::from_secs(1),
        }
    }

    /// Flink's defaults for the exponential-delay strategy.
    pub fn exponential_default() -> Self {
        RestartStrategy::ExponentialDelay {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            multiplier: 2.0,
            reset_after: Duration::from_secs(3600),
        }
    }

    /// Parses the command line's form: `none`, `fixed:ATTEMPTS:DELAY_MS`,
    /// `exponential:INITIAL_MS:MAX_MS`, `failure-rate:MAX:INTERVAL_MS:DELAY_MS`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let number = |i: usize, what: &str| -> Result<u64, String> {
            parts
                .get(i)
                .ok_or_else(|| format!("restart strategy '{text}': missing {what}"))?
                .parse::<u64>()
                .map_err(|_| format!("restart strategy '{text}': {what} must be a whole number"))
        };
        let ms = |v: u64| Duration::from_millis(v);
        let strategy = match parts[0] {
            "none" if parts.len() == 1 => RestartStrategy::None,
            "fixed" if parts.len() == 3 => RestartStrategy::FixedDelay {
                attempts: number(1, "attempts")? as u32,
                delay: ms(number(2, "delay in ms")?),
            },
            "exponential" if parts.len() == 3 => RestartStrategy::ExponentialDelay {
                initial: ms(number(1, "initial delay in ms")?),
                max: ms(number(2, "maximum delay in ms")?),
                multiplier: 2.0,
                reset_after: Duration::from_secs(3600),
            },
            "failure-rate" if parts.len() == 4 => RestartStrategy::FailureRate {
                max_failures: number(1, "maximum failures")? as u32,
                interval: ms(number(2, "interval in ms")?),
                delay: ms(number(3, "delay in ms")?),
            },
            _ => {
                return Err(format!(
                    "restart strategy '{text}' is not one of none, fixed:ATTEMPTS:DELAY_MS, \
                     exponential:INITIAL_MS:MAX_MS, failure-rate:MAX:INTERVAL_MS:DELAY_MS"
                ))
            }
        };
        Ok(strategy)
    }
}

/// The failures a job has had, judged by its strategy.
#[derive(Debug)]
pub(crate) struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    failures: VecDeque<Instant>,
    current_delay: Duration,
    last_failure: Option<Instant>,
}

impl RestartTracker {
    pub(crate) fn new(strategy: RestartStrategy) -> Self {
        let current_delay = match &strategy {
            RestartStrategy::ExponentialDelay { initial, .. } => *initial,
            _ => Duration::ZERO,
        };
        RestartTracker {
            strategy,
            restarts: 0,
            failures: VecDeque::new(),
            current_delay,
            last_failure: None,
        }
    }

    /// Restarts so far.
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts
    }

    /// A failure at `now`: the delay before restarting, or `None` when the
    /// strategy gives up.
    pub(crate) fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        let delay = match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (self.restarts < *attempts).then_some(*delay)
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_after,
            } => {
                if self
                    .last_failure
                    .is_some_and(|last| now.duration_since(last) >= *reset_after)
                {
                    self.current_delay = *initial;
                }
                let delay = self.current_delay;
                self.current_delay = self.current_delay.mul_f64(*multiplier).min(*max);
                Some(delay)
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > *interval)
                {
                    self.failures.pop_front();
                }
                (self.failures.len() as u32 <= *max_failures).then_some(*delay)
            }
        };
        self.last_failure = Some(now);
        if delay.is_some() {
            self.restarts += 1;
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_never_restarts() {
        let mut t = RestartTracker::new(RestartStrategy::None);
        assert_eq!(t.on_failure(Instant::now()), None);
    }

    #[test]
    fn fixed_delay_counts_attempts() {
        let delay = Duration::from_millis(5);
        let mut t = RestartTracker::new(RestartStrategy::FixedDelay { attempts: 2, delay });
        let now = Instant::now();
        assert_eq!(t.on_failure(now), Some(delay));
        assert_eq!(t.on_failure(now), Some(delay));
        assert_eq!(t.on_failure(now), None);
        assert_eq!(t.restarts(), 2);
    }

    #[test]
    fn exponential_delay_grows_to_the_cap_and_resets() {
        let mut t = RestartTracker::new(RestartStrategy::ExponentialDelay {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(35),
            multiplier: 2.0,
            reset_after: Duration::from_secs(60),
        });
        let now = Instant::now();
        let delays: Vec<u128> = (0..4)
            .map(|_| t.on_failure(now).unwrap().as_millis())
            .collect();
        assert_eq!(delays, vec![10, 20, 35, 35]);
        let later = now + Duration::from_secs(61);
        assert_eq!(t.on_failure(later), Some(Duration::from_millis(10)));
    }

    #[test]
    fn failure_rate_gives_up_on_too_many_failures_in_the_interval() {
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(10),
            delay: Duration::ZERO,
        });
        let now = Instant::now();
        assert!(t.on_failure(now).is_some());
        assert!(t.on_failure(now + Duration::from_secs(1)).is_some());
        assert!(t.on_failure(now + Duration::from_secs(2)).is_none());
        // Old failures leave the window.
        let mut t2 = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 1,
            interval: Duration::from_secs(10),
            delay: Duration::ZERO,
        });
        assert!(t2.on_failure(now).is_some());
        assert!(t2.on_failure(now + Duration::from_secs(11)).is_some());
    }

    #[test]
    fn parses_the_command_line_form() {
        assert_eq!(RestartStrategy::parse("none"), Ok(RestartStrategy::None));
        assert_eq!(
            RestartStrategy::parse("fixed:3:100"),
            Ok(RestartStrategy::FixedDelay {
                attempts: 3,
                delay: Duration::from_millis(100)
            })
        );
        assert!(RestartStrategy::parse("fixed:x:1")
            .unwrap_err()
            .contains("attempts must be a whole number"));
        assert!(RestartStrategy::parse("sometimes").is_err());
    }
}
