//! The worker's decisions, as pure functions of the recorded history: where
//! a recovered run resumes, and what follows a failed attempt. The worker
//! does the I/O; what it does next is decided here, so it can be tested
//! exhaustively without a store or a clock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::{RunError, RunTransition, StepRun, StepStatus, StepTransition};
use crate::retry::{RetryDecision, RetryPolicy};

/// Where a recovered run goes on, decided by [`resume`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resume {
    /// Run attempt `attempt` of step `index`, not before `due`. `interrupt`
    /// is the attempt a lost worker left running, to be recorded as
    /// interrupted first.
    Step {
        /// The step's position in the version.
        index: usize,
        /// The attempt, from 1.
        attempt: u32,
        /// When the attempt is due, if it waits for a retry delay.
        due: Option<DateTime<Utc>>,
        /// The attempt to mark interrupted before going on.
        interrupt: Option<StepRun>,
    },
    /// The run's last attempt ended it, but the run's terminal write did
    /// not land with it: finish the run now.
    Finish {
        /// The run's terminal transition.
        transition: RunTransition,
        /// Its error.
        error: Option<RunError>,
    },
}

/// Where a run of `step_count` steps resumes, given every stored attempt
/// of its steps (in any order), and the outputs of the steps that
/// succeeded, in step order. A succeeded step is never run again; with
/// every step succeeded, the result is step `step_count` (past the end).
pub(crate) fn resume(step_count: usize, history: &[StepRun]) -> (Resume, Vec<(String, Value)>) {
    let mut latest: Vec<Option<&StepRun>> = vec![None; step_count];
    for step in history {
        if let Some(slot) = latest.get_mut(step.step_index as usize) {
            if slot.is_none_or(|s| s.attempt < step.attempt) {
                *slot = Some(step);
            }
        }
    }
    let mut outputs = Vec::new();
    for (index, slot) in latest.into_iter().enumerate() {
        let Some(step) = slot else {
            return (first_attempt(index), outputs);
        };
        let next = |due, interrupt| Resume::Step {
            index,
            attempt: step.attempt.saturating_add(1),
            due,
            interrupt,
        };
        let resume = match step.status {
            StepStatus::Succeeded => {
                let output = step.output.clone().unwrap_or(Value::Null);
                outputs.push((step.step_key.clone(), output));
                continue;
            }
            StepStatus::Running => next(None, Some(step.clone())),
            StepStatus::Interrupted => next(None, None),
            StepStatus::Failed | StepStatus::TimedOut if step.retry_at.is_some() => {
                next(step.retry_at, None)
            }
            // The last attempt gave up, but the run's terminal write did not
            // land with it.
            StepStatus::Failed | StepStatus::TimedOut => Resume::Finish {
                transition: run_transition_after(step.status),
                error: step.error.clone().map(|f| RunError {
                    message: f.message,
                    step: Some(step.step_key.clone()),
                    detail: f.detail,
                }),
            },
            StepStatus::Cancelled => Resume::Finish {
                transition: RunTransition::Cancel,
                error: Some(RunError {
                    message: "cancelled".into(),
                    step: Some(step.step_key.clone()),
                    detail: None,
                }),
            },
        };
        return (resume, outputs);
    }
    (first_attempt(step_count), outputs)
}

fn first_attempt(index: usize) -> Resume {
    Resume::Step {
        index,
        attempt: 1,
        due: None,
        interrupt: None,
    }
}

/// How the run ends when a step's last attempt ended in `status`.
fn run_transition_after(status: StepStatus) -> RunTransition {
    if status == StepStatus::TimedOut {
        RunTransition::TimeOut
    } else {
        RunTransition::Fail
    }
}

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
    use crate::id::RunId;
    use crate::run::StepFailure;

    fn attempt(index: u32, attempt: u32, status: StepStatus) -> StepRun {
        let mut step = StepRun::start(
            RunId::new(),
            format!("s{index}"),
            index,
            attempt,
            Utc::now(),
        );
        step.status = status;
        if status == StepStatus::Succeeded {
            step.output = Some(Value::from(index));
        }
        if matches!(status, StepStatus::Failed | StepStatus::TimedOut) {
            step.error = Some(StepFailure {
                message: "boom".into(),
                terminal: false,
                detail: None,
            });
        }
        step
    }

    fn status() -> impl Strategy<Value = StepStatus> {
        prop::sample::select(StepStatus::ALL.to_vec())
    }

    #[test]
    fn a_fresh_run_starts_at_its_first_step() {
        assert_eq!(resume(3, &[]), (first_attempt(0), Vec::new()));
    }

    #[test]
    fn a_run_whose_steps_all_succeeded_resumes_past_the_end() {
        let history = [
            attempt(0, 1, StepStatus::Succeeded),
            attempt(1, 1, StepStatus::Succeeded),
        ];
        let (next, outputs) = resume(2, &history);
        assert_eq!(next, first_attempt(2));
        assert_eq!(outputs.len(), 2);
    }

    #[test]
    fn a_last_attempt_that_timed_out_times_the_run_out() {
        let history = [attempt(0, 2, StepStatus::TimedOut)];
        let (next, _) = resume(1, &history);
        assert!(matches!(
            next,
            Resume::Finish {
                transition: RunTransition::TimeOut,
                ..
            }
        ));
    }

    proptest! {
        /// Whatever was recorded, recovery never runs a succeeded step
        /// again, never reuses an attempt number, and hands on the outputs
        /// of exactly the succeeded prefix.
        #[test]
        fn resume_never_reruns_a_succeeded_step(
            steps in prop::collection::vec((1u32..4, status()), 0..6),
            extra in 0usize..3,
        ) {
            let history: Vec<StepRun> = steps
                .iter()
                .enumerate()
                .flat_map(|(index, &(attempts, last))| {
                    (1..=attempts).map(move |n| {
                        let status = if n == attempts { last } else { StepStatus::Interrupted };
                        attempt(index as u32, n, status)
                    })
                })
                .collect();
            let count = steps.len() + extra;
            let (next, outputs) = resume(count, &history);
            let prefix = steps.iter().take_while(|(_, s)| *s == StepStatus::Succeeded).count();
            prop_assert_eq!(outputs.len(), prefix);
            match next {
                Resume::Step { index, attempt, interrupt, .. } => {
                    prop_assert_eq!(index, prefix);
                    let used = steps.get(index).map_or(0, |&(n, _)| n);
                    prop_assert_eq!(attempt, used + 1);
                    let left_running = steps.get(index).is_some_and(|&(_, s)| s == StepStatus::Running);
                    prop_assert_eq!(interrupt.is_some(), left_running);
                }
                Resume::Finish { .. } => {
                    let (_, last) = steps[prefix];
                    prop_assert!(matches!(last, StepStatus::Failed | StepStatus::TimedOut | StepStatus::Cancelled));
                }
            }
        }

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
