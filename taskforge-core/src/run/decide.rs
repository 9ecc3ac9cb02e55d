//! The worker's decision after a failed attempt, as a pure function: retry
//! when, or end the run how. The worker does the I/O; which steps run next
//! (and where a recovered run resumes) is decided by the scheduler,
//! [`dag`](super::dag). Both can be tested exhaustively without a store or
//! a clock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{RunTransition, StepTransition};
use crate::retry::{RetryDecision, RetryPolicy};

/// The longest delay before a retry: a handler's hint asking for more is
/// cut to this (definitions cannot ask for more), so a retry time is always
/// a real timestamp.
pub(crate) const MAX_RETRY_DELAY: Duration = crate::workflow::MAX_DURATION;

/// What follows a failed attempt, decided by [`after_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Another attempt is due at this time.
    Retry(DateTime<Utc>),
    /// The run ends with this transition.
    Finish(RunTransition),
}

/// What follows attempt `attempt` of a step, which ended at `now` with
/// `how` (a failure or a timeout), under the step's retry `policy` (none:
/// no retries). `terminal` and `hint` come from the handler's error;
/// `random` in `0.0..1.0` is the jitter, passed in so the decision stays
/// pure. Delays are capped at [`MAX_RETRY_DELAY`].
pub(crate) fn after_failure(
    policy: Option<&RetryPolicy>,
    attempt: u32,
    how: StepTransition,
    terminal: bool,
    hint: Option<Duration>,
    now: DateTime<Utc>,
    random: f64,
) -> AfterFailure {
    let decision = policy.map_or(RetryDecision::GiveUp, |policy| {
        policy.decide(attempt, terminal, hint, random)
    });
    match decision {
        RetryDecision::RetryAfter(delay) => {
            let delay = TimeDelta::from_std(delay.min(MAX_RETRY_DELAY)).unwrap_or(TimeDelta::MAX);
            AfterFailure::Retry(
                now.checked_add_signed(delay)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            )
        }
        RetryDecision::GiveUp if how == StepTransition::TimeOut => {
            AfterFailure::Finish(RunTransition::TimeOut)
        }
        RetryDecision::GiveUp => AfterFailure::Finish(RunTransition::Fail),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A retry is always due at a real time no earlier than now, however
        /// long the delay asked for; without a policy nothing is retried.
        #[test]
        fn retries_are_due_at_a_real_time(
            attempt in 1u32..20,
            max_attempts in 1u32..20,
            delay_ms in any::<u64>(),
            hint_secs in prop::option::of(any::<u64>()),
            terminal in any::<bool>(),
            timed_out in any::<bool>(),
            random in 0.0f64..1.0,
        ) {
            let policy = RetryPolicy::fixed(max_attempts, Duration::from_millis(delay_ms));
            let how = if timed_out { StepTransition::TimeOut } else { StepTransition::Fail };
            let hint = hint_secs.map(Duration::from_secs);
            let now = Utc::now();
            match after_failure(Some(&policy), attempt, how, terminal, hint, now, random) {
                AfterFailure::Retry(at) => {
                    prop_assert!(!terminal && attempt < max_attempts);
                    prop_assert!(at >= now);
                }
                AfterFailure::Finish(transition) => {
                    prop_assert!(terminal || attempt >= max_attempts);
                    prop_assert_eq!(transition == RunTransition::TimeOut, timed_out);
                }
            }
            prop_assert!(matches!(
                after_failure(None, attempt, how, terminal, hint, now, random),
                AfterFailure::Finish(_)
            ));
        }
    }
}
