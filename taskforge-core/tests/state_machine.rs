//! Property tests of the run and step state machines.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use serde_json::json;
use taskforge_core::error::IllegalTransition;
use taskforge_core::store::{Lease, RunTransition, StepTransition};
use taskforge_core::{
    RunId, RunStatus, StepDefinition, StepRun, StepStatus, WorkflowDefinition, WorkflowId,
    WorkflowRun, WorkflowVersion,
};

fn run_transition() -> impl Strategy<Value = RunTransition> {
    proptest::sample::select(RunTransition::ALL.to_vec())
}

fn step_transition() -> impl Strategy<Value = StepTransition> {
    prop_oneof![
        Just(StepTransition::Succeed),
        Just(StepTransition::Fail),
        Just(StepTransition::TimeOut),
        Just(StepTransition::Cancel),
        Just(StepTransition::Interrupt),
    ]
}

fn run_status() -> impl Strategy<Value = RunStatus> {
    proptest::sample::select(RunStatus::ALL.to_vec())
}

fn step_status() -> impl Strategy<Value = StepStatus> {
    proptest::sample::select(StepStatus::ALL.to_vec())
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_067_200, 0).expect("a valid timestamp")
}

fn new_run() -> WorkflowRun {
    let definition = WorkflowDefinition::new(vec![StepDefinition::new("only", "noop")]);
    let version = WorkflowVersion::new(WorkflowId::new(), 1, definition, t0());
    let mut run = WorkflowRun::new(&version, json!({"n": 1}), t0());
    run.lease = Some(Lease {
        owner: "worker".into(),
        expires_at: t0() + TimeDelta::seconds(30),
    });
    run
}

/// Every pair of status and transition is decided, and the new ones only
/// where the lifecycle says: only a running run parks, only a parked one
/// wakes, and a parked run leaves only by waking, a cancel or its timeout.
#[test]
fn parking_and_waking_follow_the_lifecycle() {
    for status in RunStatus::ALL {
        for transition in RunTransition::ALL {
            let expected = match (status, transition) {
                (RunStatus::Running, RunTransition::Park) => Some(RunStatus::Waiting),
                (RunStatus::Waiting, RunTransition::Wake) => Some(RunStatus::Running),
                (RunStatus::Waiting, RunTransition::Cancel) => Some(RunStatus::Cancelled),
                (RunStatus::Waiting, RunTransition::TimeOut) => Some(RunStatus::TimedOut),
                (RunStatus::Waiting, _) | (_, RunTransition::Park | RunTransition::Wake) => None,
                _ => continue,
            };
            assert_eq!(
                status.apply(transition).ok(),
                expected,
                "{status:?} {transition:?}"
            );
        }
    }
    assert!(!RunStatus::Waiting.is_terminal());
    assert_eq!(RunStatus::Waiting.as_str(), "waiting");
}

proptest! {
    /// From any status, any transition sequence is answered without a panic;
    /// a refusal names the status and transition and leaves the status; a
    /// terminal status refuses everything and stays.
    #[test]
    fn run_transitions_never_panic_and_terminal_stays(
        start in run_status(),
        transitions in prop::collection::vec(run_transition(), 0..64),
    ) {
        let mut status = start;
        for transition in transitions {
            let was_terminal = status.is_terminal();
            match status.apply(transition) {
                Ok(next) => {
                    prop_assert!(!was_terminal, "{status:?} accepted {transition:?}");
                    status = next;
                }
                Err(e) => {
                    prop_assert_eq!(e, IllegalTransition::Run { from: status, transition });
                }
            }
            if was_terminal {
                prop_assert!(status.is_terminal());
            }
        }
    }

    /// Replaying the accepted transitions of a history from `Queued` reaches
    /// the same status, and every prefix of it replays too.
    #[test]
    fn replaying_accepted_run_transitions_gives_the_same_status(
        transitions in prop::collection::vec(run_transition(), 0..64),
    ) {
        let mut status = RunStatus::Queued;
        let mut accepted = Vec::new();
        for transition in transitions {
            if let Ok(next) = status.apply(transition) {
                accepted.push(transition);
                status = next;
            }
        }
        prop_assert_eq!(RunStatus::replay(&accepted), Ok(status));
        for len in 0..accepted.len() {
            prop_assert!(RunStatus::replay(&accepted[..len]).is_ok());
        }
    }

    /// Replaying a history with a refused transition in it fails, naming
    /// the first refused transition.
    #[test]
    fn replaying_a_history_with_an_illegal_transition_fails(
        transitions in prop::collection::vec(run_transition(), 1..64),
    ) {
        let mut status = RunStatus::Queued;
        let mut first_refusal = None;
        for &transition in &transitions {
            match status.apply(transition) {
                Ok(next) => status = next,
                Err(e) => {
                    first_refusal = Some(e);
                    break;
                }
            }
        }
        match first_refusal {
            Some(e) => prop_assert_eq!(RunStatus::replay(&transitions), Err(e)),
            None => prop_assert_eq!(RunStatus::replay(&transitions), Ok(status)),
        }
    }

    /// `WorkflowRun::transition` sets `finished_at` (and drops the lease)
    /// exactly when the run becomes terminal, drops the lease when it is
    /// parked and its `wake_at` when it wakes or finishes, stamps
    /// `started_at` on `Start`, and changes nothing when it refuses.
    #[test]
    fn run_transition_sets_finished_at_exactly_when_terminal(
        transitions in prop::collection::vec(run_transition(), 0..32),
    ) {
        let mut run = new_run();
        for (i, transition) in transitions.into_iter().enumerate() {
            let now = t0() + TimeDelta::seconds(i64::try_from(i).expect("small") + 1);
            if run.status == RunStatus::Waiting {
                // As a worker parks it: until a time, without a lease; and
                // claimed again before it wakes.
                run.wake_at = Some(now);
                run.lease = Some(Lease { owner: "next".into(), expires_at: now });
            }
            let before = run.clone();
            match run.transition(transition, now) {
                Ok(()) => {
                    prop_assert_eq!(Ok(run.status), before.status.apply(transition));
                    if run.status.is_terminal() {
                        prop_assert_eq!(run.finished_at, Some(now));
                        prop_assert_eq!(run.lease.as_ref(), None);
                        prop_assert_eq!(run.wake_at, None);
                    } else if transition == RunTransition::Park {
                        prop_assert_eq!(run.status, RunStatus::Waiting);
                        prop_assert_eq!(run.finished_at, None);
                        prop_assert_eq!(run.lease.as_ref(), None);
                    } else {
                        prop_assert_eq!(run.finished_at, None);
                        prop_assert_eq!(run.lease.as_ref(), before.lease.as_ref());
                    }
                    if transition == RunTransition::Wake {
                        prop_assert_eq!(before.status, RunStatus::Waiting);
                        prop_assert_eq!((run.status, run.wake_at), (RunStatus::Running, None));
                    }
                    if transition == RunTransition::Start {
                        prop_assert_eq!(run.started_at, Some(now));
                    } else {
                        prop_assert_eq!(run.started_at, before.started_at);
                    }
                }
                Err(_) => prop_assert_eq!(&run, &before),
            }
            prop_assert_eq!(run.finished_at.is_some(), run.status.is_terminal());
        }
    }

    /// Step attempts: no panic from any status; a running attempt ends once,
    /// stamping `finished_at`, and then refuses every transition.
    #[test]
    fn step_transitions_end_once(
        start in step_status(),
        transitions in prop::collection::vec(step_transition(), 0..32),
    ) {
        let mut status = start;
        for transition in &transitions {
            let was_terminal = status.is_terminal();
            match status.apply(*transition) {
                Ok(next) => {
                    prop_assert!(!was_terminal);
                    prop_assert!(next.is_terminal(), "every step transition ends the attempt");
                    status = next;
                }
                Err(e) => {
                    prop_assert!(was_terminal, "a running attempt accepts {transition:?}");
                    prop_assert_eq!(e, IllegalTransition::Step { from: status, transition: *transition });
                }
            }
        }

        let mut step = StepRun::start(RunId::new(), "build", 0, 1, t0());
        for (i, transition) in transitions.into_iter().enumerate() {
            let now = t0() + TimeDelta::seconds(i64::try_from(i).expect("small") + 1);
            let before = step.clone();
            match step.transition(transition, now) {
                Ok(()) => {
                    prop_assert_eq!(i, 0, "only the first transition is accepted");
                    prop_assert_eq!(step.finished_at, Some(now));
                }
                Err(_) => prop_assert_eq!(&step, &before),
            }
            prop_assert_eq!(step.finished_at.is_some(), step.status.is_terminal());
        }
    }
}
