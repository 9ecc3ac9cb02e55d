//! The scheduler's wait steps: when they start, end and are due, and
//! which signal each receives.

use std::time::Duration;

use chrono::TimeDelta;
use serde_json::json;

use super::*;
use crate::id::RunId;
use crate::workflow::{StepDefinition, Wait};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_067_200, 0).expect("a valid timestamp")
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

fn signal(name: &str, payload: Value, secs: i64) -> Signal {
    Signal::new(name, payload, at(secs))
}

fn indexes(starts: &[Start]) -> Vec<usize> {
    starts.iter().map(|s| s.index).collect()
}

/// The running record of `start`, begun at `secs`.
fn running(definition: &WorkflowDefinition, start: Start, secs: i64) -> StepRun {
    StepRun::start(
        RunId::new(),
        definition.steps[start.index].key.clone(),
        start.index as u32,
        start.attempt,
        at(secs),
    )
}

#[test]
fn a_sleep_starts_beyond_the_parallel_limit_and_ends_on_time() {
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::new("a", "noop"),
        StepDefinition::new("b", "noop"),
        StepDefinition::sleep("nap", Duration::from_secs(60)),
    ])
    .max_parallel_steps(1);
    // Three roots: a and b share the one slot; the sleep needs none.
    let definition = WorkflowDefinition {
        steps: definition
            .steps
            .into_iter()
            .map(|s| s.depends_on(Vec::<String>::new()))
            .collect(),
        ..definition
    };
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    let plan = schedule.plan(t0());
    assert_eq!(indexes(&plan.start), [0, 2]);
    assert_eq!(schedule.running(), 1, "the wait takes no slot");
    assert_eq!(schedule.waiting(), 1);
    assert!(!schedule.awaits_signal());
    schedule.record(&running(&definition, plan.start[1], 0));
    let plan = schedule.plan(at(59));
    assert!(plan.waited.is_empty() && plan.start.is_empty());
    assert_eq!(plan.wake_at, Some(at(60)));
    assert_eq!(plan.end, None);
    let plan = schedule.plan(at(60));
    assert_eq!(
        plan.waited,
        [Waited {
            index: 2,
            attempt: 1,
            outcome: WaitOutcome::Slept
        }]
    );
    assert_eq!(schedule.waiting(), 0);
}

#[test]
fn a_wait_left_running_keeps_waiting_on_resume() {
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::wait_for_signal("gate", "open", None, OnTimeout::Fail),
        StepDefinition::new("after", "noop"),
    ]);
    let input = json!({});
    let gate = running(
        &definition,
        Start {
            index: 0,
            attempt: 1,
        },
        5,
    );
    let (mut schedule, left_running) = Schedule::resume(&definition, &input, &[gate]);
    assert!(left_running.is_empty(), "a wait is not interrupted");
    assert!(schedule.awaits_signal());
    let plan = schedule.plan(at(1_000));
    assert!(plan.start.is_empty() && plan.waited.is_empty());
    assert_eq!(plan.wake_at, None, "only a signal makes it due");
    assert_eq!(plan.end, None, "waiting for a signal is no deadlock");

    assert!(schedule.receive(&[signal("open", json!({ "ok": true }), 900)]));
    assert!(!schedule.receive(&[signal("open", json!({ "ok": true }), 900)]));
    let plan = schedule.plan(at(1_000));
    assert_eq!(
        plan.waited,
        [Waited {
            index: 0,
            attempt: 1,
            outcome: WaitOutcome::Signal {
                number: 0,
                payload: json!({ "ok": true })
            }
        }]
    );
    assert_eq!(indexes(&plan.start), [1], "the next step starts at once");
}

#[test]
fn signals_are_received_oldest_first_each_once() {
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::wait_for_signal("first", "go", None, OnTimeout::Fail),
        StepDefinition::wait_for_signal("second", "go", None, OnTimeout::Fail),
    ]);
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    schedule.receive(&[
        signal("other", json!(0), 1),
        signal("go", json!(1), 2),
        signal("go", json!(2), 3),
    ]);
    let plan = schedule.plan(at(10));
    let first = running(&definition, plan.start[0], 10);
    schedule.record(&first);
    let plan = schedule.plan(at(10));
    assert!(matches!(
        &plan.waited[..],
        [Waited {
            index: 0,
            outcome: WaitOutcome::Signal { number: 1, .. },
            ..
        }]
    ));
    let second = running(&definition, plan.start[0], 10);
    schedule.record(&second);
    let plan = schedule.plan(at(10));
    assert!(matches!(
        &plan.waited[..],
        [Waited {
            index: 1,
            outcome: WaitOutcome::Signal { number: 2, .. },
            ..
        }]
    ));
    assert!(matches!(plan.end, Some(End::Succeeded { .. })));

    // Resumed from the history, a received signal is not received again.
    let mut got_first = first.clone();
    got_first.status = StepStatus::Succeeded;
    got_first.signal = Some(1);
    got_first.output = Some(json!(1));
    let (mut resumed, _) = Schedule::resume(&definition, &input, &[got_first, second]);
    resumed.receive(&[
        signal("other", json!(0), 1),
        signal("go", json!(1), 2),
        signal("go", json!(2), 3),
    ]);
    let plan = resumed.plan(at(11));
    assert!(matches!(
        &plan.waited[..],
        [Waited {
            index: 1,
            outcome: WaitOutcome::Signal { number: 2, .. },
            ..
        }]
    ));
}

#[test]
fn timeouts_fail_or_continue_and_late_signals_do_not_count() {
    let five = Some(Duration::from_secs(300));
    for (on_timeout, fails) in [(OnTimeout::Fail, true), (OnTimeout::Continue, false)] {
        let definition = WorkflowDefinition::new(vec![StepDefinition::wait_for_signal(
            "ack", "ack", five, on_timeout,
        )]);
        let input = json!({});
        let mut schedule = Schedule::new(&definition, &input);
        let plan = schedule.plan(t0());
        schedule.record(&running(&definition, plan.start[0], 0));
        let plan = schedule.plan(at(299));
        assert_eq!(plan.wake_at, Some(at(300)));
        // Received after the timeout: it does not count for this wait.
        schedule.receive(&[signal("ack", json!("late"), 301)]);
        let plan = schedule.plan(at(302));
        match (fails, &plan.waited[..], &plan.end) {
            (
                true,
                [Waited {
                    outcome: WaitOutcome::TimedOutFail { message },
                    ..
                }],
                Some(End::Failed { status, error }),
            ) => {
                assert!(message.contains("ack"), "{message}");
                assert_eq!(*status, RunStatus::Failed);
                assert_eq!(error.step.as_deref(), Some("ack"));
            }
            (
                false,
                [Waited {
                    outcome: WaitOutcome::TimedOutContinue,
                    ..
                }],
                Some(End::Succeeded { output }),
            ) => assert_eq!(*output, Value::Null),
            other => panic!("{on_timeout:?}: {other:?}"),
        }
    }
}

#[test]
fn a_sleep_and_a_signal_end_when_both_are_there() {
    let definition = WorkflowDefinition::new(vec![StepDefinition::wait(
        "both",
        Wait::signal("go").at_least(Duration::from_secs(60)),
    )]);
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    let plan = schedule.plan(t0());
    schedule.record(&running(&definition, plan.start[0], 0));
    // The signal first: the sleep is not over.
    schedule.receive(&[signal("go", json!(7), 10)]);
    let plan = schedule.plan(at(10));
    assert!(plan.waited.is_empty());
    assert_eq!(plan.wake_at, Some(at(60)));
    let plan = schedule.plan(at(60));
    assert!(matches!(
        &plan.waited[..],
        [Waited {
            outcome: WaitOutcome::Signal { number: 0, .. },
            ..
        }]
    ));
}
