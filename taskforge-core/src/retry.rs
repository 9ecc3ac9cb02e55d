//! Retry policies and the pure decision of whether, and when, to try again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration_ms;

/// How often, and how far apart, a failing step is tried.
///
/// `max_attempts` counts every attempt, the first included: `1` never retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1.
    pub max_attempts: u32,
    /// The wait between attempts.
    #[serde(default)]
    pub backoff: Backoff,
}

/// The wait before attempt `n + 1` after attempt `n` failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay every time.
    Fixed {
        /// The delay.
        #[serde(with = "duration_ms")]
        delay: Duration,
    },
    /// `initial * factor^(n-1)`, capped at `max`, with up to `jitter` (0..=1)
    /// of it taken off at random so that many failing runs spread out.
    Exponential {
        /// The first delay.
        #[serde(with = "duration_ms")]
        initial: Duration,
        /// The growth factor, at least 1.
        factor: u32,
        /// The largest delay.
        #[serde(with = "duration_ms")]
        max: Duration,
        /// The fraction of each delay that may be taken off at random, in percent (0..=100).
        #[serde(default)]
        jitter_percent: u8,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Self::Fixed {
            delay: Duration::ZERO,
        }
    }
}

impl RetryPolicy {
    /// Never retry: one attempt.
    #[must_use]
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            backoff: Backoff::default(),
        }
    }

    /// Up to `max_attempts` attempts with a fixed delay between them.
    #[must_use]
    pub fn fixed(max_attempts: u32, delay: Duration) -> Self {
        Self {
            max_attempts,
            backoff: Backoff::Fixed { delay },
        }
    }

    /// Up to `max_attempts` attempts with exponential backoff (factor 2, 20% jitter).
    #[must_use]
    pub fn exponential(max_attempts: u32, initial: Duration, max: Duration) -> Self {
        Self {
            max_attempts,
            backoff: Backoff::Exponential {
                initial,
                factor: 2,
                max,
                jitter_percent: 20,
            },
        }
    }

    /// What to do after attempt `attempt` (1-based) failed.
    ///
    /// `terminal` errors are never retried; `retry_after` (a handler's hint)
    /// replaces the computed delay when it is longer. `random` is a number in
    /// `0.0..1.0` used for jitter, passed in so the decision stays pure.
    #[must_use]
    pub fn decide(
        &self,
        attempt: u32,
        terminal: bool,
        retry_after: Option<Duration>,
        random: f64,
    ) -> RetryDecision {
        if terminal || attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let delay = self.backoff.delay(attempt, random);
        RetryDecision::RetryAfter(retry_after.map_or(delay, |hint| hint.max(delay)))
    }
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1-based).
    #[must_use]
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        match *self {
            Self::Fixed { delay } => delay,
            Self::Exponential {
                initial,
                factor,
                max,
                jitter_percent,
            } => {
                let exponent = attempt.saturating_sub(1).min(64);
                let growth = u64::from(factor.max(1)).saturating_pow(exponent);
                let millis = u64::try_from(initial.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(growth);
                let capped = Duration::from_millis(millis).min(max);
                let jitter = f64::from(jitter_percent.min(100)) / 100.0 * random.clamp(0.0, 1.0);
                capped.mul_f64(1.0 - jitter)
            }
        }
    }
}

/// The outcome of [`RetryPolicy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Do not try again; the step has failed.
    GiveUp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_bounded_and_terminal_errors_stop() {
        let policy = RetryPolicy::fixed(3, Duration::from_millis(10));
        assert_eq!(
            policy.decide(1, false, None, 0.5),
            RetryDecision::RetryAfter(Duration::from_millis(10))
        );
        assert_eq!(policy.decide(3, false, None, 0.5), RetryDecision::GiveUp);
        assert_eq!(policy.decide(1, true, None, 0.5), RetryDecision::GiveUp);
        assert_eq!(
            policy.decide(1, false, Some(Duration::from_secs(1)), 0.5),
            RetryDecision::RetryAfter(Duration::from_secs(1))
        );
    }

    #[test]
    fn exponential_backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 100,
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(100),
                factor: 2,
                max: Duration::from_secs(1),
                jitter_percent: 0,
            },
        };
        let delays: Vec<_> = (1..=6).map(|n| policy.backoff.delay(n, 0.9)).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[3], Duration::from_millis(800));
        assert_eq!(delays[5], Duration::from_secs(1));
        assert_eq!(policy.backoff.delay(u32::MAX, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_only_shortens() {
        let backoff = Backoff::Exponential {
            initial: Duration::from_millis(1000),
            factor: 1,
            max: Duration::from_secs(10),
            jitter_percent: 50,
        };
        assert_eq!(backoff.delay(1, 0.0), Duration::from_millis(1000));
        assert_eq!(backoff.delay(1, 1.0), Duration::from_millis(500));
    }
}
