use chrono::TimeDelta;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::id::RunId;
use crate::run::StepFailure;
use crate::trigger::filter::Filter;
use crate::workflow::StepDefinition;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_067_200, 0).expect("a valid timestamp")
}

fn linear(n: usize) -> WorkflowDefinition {
    WorkflowDefinition::new(
        (0..n)
            .map(|i| StepDefinition::new(format!("s{i}"), "noop"))
            .collect(),
    )
}

/// a -> {b, c, d} -> e
fn diamond() -> WorkflowDefinition {
    WorkflowDefinition::new(vec![
        StepDefinition::new("a", "noop"),
        StepDefinition::new("b", "noop").depends_on(["a"]),
        StepDefinition::new("c", "noop").depends_on(["a"]),
        StepDefinition::new("d", "noop").depends_on(["a"]),
        StepDefinition::new("e", "noop").depends_on(["b", "c", "d"]),
    ])
}

fn key(definition: &WorkflowDefinition, index: usize) -> String {
    definition.steps[index].key.clone()
}

fn ended(definition: &WorkflowDefinition, start: Start, status: StepStatus) -> StepRun {
    let mut step = StepRun::start(
        RunId::new(),
        key(definition, start.index),
        start.index as u32,
        start.attempt,
        t0(),
    );
    step.status = status;
    step.finished_at = Some(t0());
    match status {
        StepStatus::Succeeded => {
            step.output = Some(json!({ "from": key(definition, start.index) }))
        }
        StepStatus::Failed | StepStatus::TimedOut => {
            step.error = Some(StepFailure {
                message: "boom".into(),
                terminal: false,
                detail: None,
            });
        }
        _ => {}
    }
    step
}

fn succeed(schedule: &mut Schedule<'_>, definition: &WorkflowDefinition, start: Start) {
    schedule.record(&ended(definition, start, StepStatus::Succeeded));
}

fn indexes(plan: &Plan) -> Vec<usize> {
    plan.start.iter().map(|s| s.index).collect()
}

fn skipped(plan: &Plan) -> Vec<usize> {
    plan.skip.iter().map(|s| s.index).collect()
}

#[test]
fn a_linear_definition_runs_one_step_at_a_time_in_order() {
    let definition = linear(3);
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    assert!(schedule.is_linear());
    for index in 0..3 {
        let plan = schedule.plan(t0());
        assert_eq!(plan.start, [Start { index, attempt: 1 }]);
        assert_eq!(plan.end, None);
        assert_eq!(schedule.running(), 1);
        assert_eq!(schedule.ancestors(index), (0..index).collect::<Vec<_>>());
        succeed(&mut schedule, &definition, plan.start[0]);
    }
    assert_eq!(
        schedule.plan(t0()).end,
        Some(End::Succeeded {
            output: json!({ "from": "s2" })
        })
    );
}

#[test]
fn a_fan_out_runs_its_branches_together_and_joins_them() {
    let definition = diamond();
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    let plan = schedule.plan(t0());
    assert_eq!(indexes(&plan), [0]);
    succeed(&mut schedule, &definition, plan.start[0]);
    let plan = schedule.plan(t0());
    assert_eq!(indexes(&plan), [1, 2, 3]);
    assert_eq!(schedule.running(), 3);
    let branches = plan.start;
    succeed(&mut schedule, &definition, branches[1]);
    succeed(&mut schedule, &definition, branches[0]);
    assert_eq!(schedule.plan(t0()), Plan::default(), "e waits for d");
    succeed(&mut schedule, &definition, branches[2]);
    let plan = schedule.plan(t0());
    assert_eq!(
        plan.start,
        [Start {
            index: 4,
            attempt: 1
        }]
    );
    assert_eq!(schedule.ancestors(4), [0, 1, 2, 3]);
    succeed(&mut schedule, &definition, plan.start[0]);
    assert_eq!(
        schedule.plan(t0()).end,
        Some(End::Succeeded {
            output: json!({ "from": "e" })
        })
    );
}

#[test]
fn the_parallel_limit_holds_ready_steps_back_lowest_first() {
    let definition = diamond().max_parallel_steps(2);
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    let a = schedule.plan(t0()).start[0];
    succeed(&mut schedule, &definition, a);
    let plan = schedule.plan(t0());
    assert_eq!(indexes(&plan), [1, 2]);
    assert_eq!(schedule.plan(t0()), Plan::default(), "no slot is free");
    succeed(&mut schedule, &definition, plan.start[1]);
    assert_eq!(indexes(&schedule.plan(t0())), [3]);
    assert_eq!(schedule.running(), 2);
}

#[test]
fn a_false_condition_skips_its_step_and_the_branch_below_it() {
    // a -> b (if /input/deploy) -> c ; a -> d ; {c, d} -> e ; c -> f
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::new("a", "noop"),
        StepDefinition::new("b", "noop")
            .depends_on(["a"])
            .condition(Filter::equals("/input/deploy", true)),
        StepDefinition::new("c", "noop").depends_on(["b"]),
        StepDefinition::new("d", "noop").depends_on(["a"]),
        StepDefinition::new("e", "noop").depends_on(["c", "d"]),
        StepDefinition::new("f", "noop").depends_on(["c"]),
    ]);
    let input = json!({ "deploy": false });
    let mut schedule = Schedule::new(&definition, &input);
    let a = schedule.plan(t0()).start[0];
    succeed(&mut schedule, &definition, a);
    let plan = schedule.plan(t0());
    // b's condition is false; c and f have only skipped dependencies.
    assert_eq!(skipped(&plan), [1, 2, 5]);
    assert!(matches!(
        &plan.skip[0].reason,
        SkipReason::ConditionFalse(miss) if miss.pointer == "/input/deploy"
    ));
    assert_eq!(plan.skip[1].reason, SkipReason::DependenciesSkipped);
    assert_eq!(indexes(&plan), [3]);
    succeed(&mut schedule, &definition, plan.start[0]);
    // e depends on skipped c and succeeded d: it runs.
    let plan = schedule.plan(t0());
    assert_eq!(indexes(&plan), [4]);
    succeed(&mut schedule, &definition, plan.start[0]);
    // Two sinks, e and f; f was skipped, so only e is in the output.
    assert_eq!(
        schedule.plan(t0()).end,
        Some(End::Succeeded {
            output: json!({ "e": { "from": "e" } })
        })
    );

    let input = json!({ "deploy": true });
    let mut schedule = Schedule::new(&definition, &input);
    let a = schedule.plan(t0()).start[0];
    succeed(&mut schedule, &definition, a);
    let plan = schedule.plan(t0());
    assert!(plan.skip.is_empty());
    assert_eq!(indexes(&plan), [1, 3]);
}

#[test]
fn a_condition_reads_an_ancestors_output() {
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::new("build", "noop"),
        StepDefinition::new("deploy", "noop")
            .condition(Filter::equals("/steps/build/from", "build")),
        StepDefinition::new("notify", "noop")
            .condition(Filter::equals("/steps/build/from", "elsewhere")),
    ]);
    assert!(definition.validate().is_ok());
    let input = json!(null);
    let mut schedule = Schedule::new(&definition, &input);
    let build = schedule.plan(t0()).start[0];
    succeed(&mut schedule, &definition, build);
    let deploy = schedule.plan(t0());
    assert_eq!(indexes(&deploy), [1]);
    succeed(&mut schedule, &definition, deploy.start[0]);
    let plan = schedule.plan(t0());
    assert_eq!(skipped(&plan), [2]);
    // The skipped last step is the (single) sink: no output.
    assert_eq!(
        plan.end,
        Some(End::Succeeded {
            output: Value::Null
        })
    );
}

#[test]
fn a_linear_skip_skips_everything_after_it() {
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::new("a", "noop").condition(Filter::exists("/input/go")),
        StepDefinition::new("b", "noop"),
        StepDefinition::new("c", "noop"),
    ]);
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    let plan = schedule.plan(t0());
    assert_eq!(skipped(&plan), [0, 1, 2]);
    assert_eq!(
        plan.end,
        Some(End::Succeeded {
            output: Value::Null
        })
    );
}

#[test]
fn a_step_that_fails_for_good_ends_the_run_and_starts_nothing_more() {
    let definition = diamond();
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    let a = schedule.plan(t0()).start[0];
    succeed(&mut schedule, &definition, a);
    let branches = schedule.plan(t0()).start;
    schedule.record(&ended(&definition, branches[1], StepStatus::TimedOut));
    let plan = schedule.plan(t0());
    assert!(plan.start.is_empty());
    assert_eq!(
        plan.end,
        Some(End::Failed {
            status: RunStatus::TimedOut,
            error: RunError {
                message: "boom".into(),
                step: Some("c".into()),
                detail: None
            }
        })
    );
    // b and d still count as running: the worker cancels them.
    assert_eq!(schedule.running(), 2);
}

#[test]
fn a_retry_waits_for_its_time_while_other_branches_go_on() {
    let definition = diamond();
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    let a = schedule.plan(t0()).start[0];
    succeed(&mut schedule, &definition, a);
    let branches = schedule.plan(t0()).start;
    let due = t0() + TimeDelta::seconds(5);
    let mut failed = ended(&definition, branches[0], StepStatus::Failed);
    failed.retry_at = Some(due);
    schedule.record(&failed);
    let plan = schedule.plan(t0());
    assert_eq!((plan.start.len(), plan.wake_at), (0, Some(due)));
    succeed(&mut schedule, &definition, branches[1]);
    succeed(&mut schedule, &definition, branches[2]);
    assert_eq!(schedule.plan(t0()).wake_at, Some(due));
    let plan = schedule.plan(due);
    assert_eq!(
        plan.start,
        [Start {
            index: 1,
            attempt: 2
        }]
    );
    assert_eq!(plan.wake_at, None);
}

#[test]
fn resuming_interrupts_what_was_running_and_never_reruns_a_success() {
    let definition = diamond();
    let input = json!({});
    let a = ended(
        &definition,
        Start {
            index: 0,
            attempt: 1,
        },
        StepStatus::Succeeded,
    );
    let b = ended(
        &definition,
        Start {
            index: 1,
            attempt: 1,
        },
        StepStatus::Succeeded,
    );
    let mut c = ended(
        &definition,
        Start {
            index: 2,
            attempt: 1,
        },
        StepStatus::Running,
    );
    c.finished_at = None;
    let mut d1 = ended(
        &definition,
        Start {
            index: 3,
            attempt: 1,
        },
        StepStatus::Failed,
    );
    d1.retry_at = Some(t0() + TimeDelta::seconds(1));
    let mut d2 = ended(
        &definition,
        Start {
            index: 3,
            attempt: 2,
        },
        StepStatus::Running,
    );
    d2.finished_at = None;
    let history = [d2.clone(), b, c.clone(), a, d1];
    let (mut schedule, left_running) = Schedule::resume(&definition, &input, &history);
    let left: Vec<(u32, u32)> = left_running
        .iter()
        .map(|s| (s.step_index, s.attempt))
        .collect();
    assert_eq!(left, [(2, 1), (3, 2)]);
    let plan = schedule.plan(t0());
    assert_eq!(
        plan.start,
        [
            Start {
                index: 2,
                attempt: 2
            },
            Start {
                index: 3,
                attempt: 3
            }
        ]
    );
    for start in plan.start {
        succeed(&mut schedule, &definition, start);
    }
    assert_eq!(indexes(&schedule.plan(t0())), [4]);
}

#[test]
fn resuming_a_finished_history_ends_the_run() {
    let definition = linear(2);
    let input = json!({});
    let done = [
        ended(
            &definition,
            Start {
                index: 0,
                attempt: 1,
            },
            StepStatus::Succeeded,
        ),
        ended(
            &definition,
            Start {
                index: 1,
                attempt: 1,
            },
            StepStatus::Succeeded,
        ),
    ];
    let (mut schedule, left) = Schedule::resume(&definition, &input, &done);
    assert!(left.is_empty());
    assert_eq!(
        schedule.plan(t0()).end,
        Some(End::Succeeded {
            output: json!({ "from": "s1" })
        })
    );

    let cancelled = [
        done[0].clone(),
        ended(
            &definition,
            Start {
                index: 1,
                attempt: 1,
            },
            StepStatus::Cancelled,
        ),
    ];
    let (mut schedule, _) = Schedule::resume(&definition, &input, &cancelled);
    assert!(matches!(
        schedule.plan(t0()).end,
        Some(End::Failed {
            status: RunStatus::Cancelled,
            ..
        })
    ));
}

#[test]
fn resuming_redecides_skips_that_were_not_written() {
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::new("a", "noop"),
        StepDefinition::new("b", "noop")
            .depends_on(["a"])
            .condition(Filter::equals("/steps/a/from", "nobody")),
        StepDefinition::new("c", "noop").depends_on(["b"]),
    ]);
    let input = json!({});
    let history = [ended(
        &definition,
        Start {
            index: 0,
            attempt: 1,
        },
        StepStatus::Succeeded,
    )];
    let (mut schedule, _) = Schedule::resume(&definition, &input, &history);
    let plan = schedule.plan(t0());
    assert_eq!(skipped(&plan), [1, 2]);
    // The two sinks: a's output is not kept for them, c was skipped.
    assert_eq!(
        plan.end,
        Some(End::Succeeded {
            output: Value::Null
        })
    );
}

#[test]
fn the_run_output_follows_the_definition() {
    let two_sinks = WorkflowDefinition::new(vec![
        StepDefinition::new("a", "noop").depends_on(Vec::<String>::new()),
        StepDefinition::new("b", "noop"),
    ]);
    let input = json!({});
    let mut schedule = Schedule::new(&two_sinks, &input);
    let plan = schedule.plan(t0());
    assert_eq!(indexes(&plan), [0, 1], "two roots");
    for start in plan.start {
        succeed(&mut schedule, &two_sinks, start);
    }
    assert_eq!(
        schedule.plan(t0()).end,
        Some(End::Succeeded {
            output: json!({ "a": { "from": "a" }, "b": { "from": "b" } })
        })
    );

    let declared = linear(3).output("s0");
    let mut schedule = Schedule::new(&declared, &input);
    for _ in 0..3 {
        let start = schedule.plan(t0()).start[0];
        succeed(&mut schedule, &declared, start);
    }
    assert_eq!(
        schedule.plan(t0()).end,
        Some(End::Succeeded {
            output: json!({ "from": "s0" })
        })
    );
}

#[test]
fn a_cycle_that_slipped_past_validation_fails_instead_of_hanging() {
    let definition = WorkflowDefinition::new(vec![
        StepDefinition::new("a", "noop"),
        StepDefinition::new("b", "noop").depends_on(["a", "c"]),
        StepDefinition::new("c", "noop").depends_on(["b"]),
    ]);
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    let a = schedule.plan(t0()).start[0];
    succeed(&mut schedule, &definition, a);
    assert!(matches!(
        schedule.plan(t0()).end,
        Some(End::Failed {
            status: RunStatus::Failed,
            ..
        })
    ));
}

#[test]
fn records_of_older_attempts_and_of_finished_steps_change_nothing() {
    let definition = linear(2);
    let input = json!({});
    let mut schedule = Schedule::new(&definition, &input);
    let first = schedule.plan(t0()).start[0];
    succeed(&mut schedule, &definition, first);
    let second = schedule.plan(t0()).start[0];
    schedule.record(&ended(&definition, first, StepStatus::Failed));
    let mut old = ended(&definition, second, StepStatus::Failed);
    old.attempt = 0;
    schedule.record(&old);
    assert_eq!(schedule.running(), 1);
    assert_eq!(schedule.plan(t0()), Plan::default());
}

fn status() -> impl Strategy<Value = StepStatus> {
    prop::sample::select(StepStatus::ALL.to_vec())
}

proptest! {
    /// Whatever a linear run recorded, resuming never runs a succeeded
    /// step again, never reuses an attempt number, and goes on from the
    /// first step that did not succeed (as the linear worker always did).
    #[test]
    fn a_linear_resume_goes_on_from_the_first_unfinished_step(
        succeeded in prop::collection::vec(1u32..4, 0..5),
        last in prop::option::of((1u32..4, status())),
        extra in 0usize..3,
        retry in any::<bool>(),
    ) {
        let count = succeeded.len() + usize::from(last.is_some()) + extra;
        let definition = linear(count.max(1));
        let attempts = succeeded
            .iter()
            .map(|&n| (n, StepStatus::Succeeded))
            .chain(last)
            .enumerate();
        let mut history = Vec::new();
        for (index, (attempts, last)) in attempts {
            for n in 1..=attempts {
                let status = if n == attempts { last } else { StepStatus::Interrupted };
                let mut step = ended(&definition, Start { index, attempt: n }, status);
                if retry && matches!(status, StepStatus::Failed | StepStatus::TimedOut) {
                    step.retry_at = Some(t0());
                }
                history.push(step);
            }
        }
        let input = json!({});
        let (mut schedule, left) = Schedule::resume(&definition, &input, &history);
        let plan = schedule.plan(t0());
        let at = succeeded.len();
        let last_status = last.map(|(_, s)| s);
        match plan.end {
            Some(End::Succeeded { .. }) => prop_assert!(
                (at == count.max(1)) || last_status == Some(StepStatus::Skipped)
                    || (last_status == Some(StepStatus::Succeeded) && at + 1 == count)
            ),
            Some(End::Failed { .. }) => {
                prop_assert!(matches!(
                    last_status,
                    Some(StepStatus::Failed | StepStatus::TimedOut | StepStatus::Cancelled)
                ));
                prop_assert!(last_status == Some(StepStatus::Cancelled) || !retry);
            }
            None => {
                let at = if last_status == Some(StepStatus::Succeeded) { at + 1 } else { at };
                prop_assert_eq!(plan.start.len(), 1);
                let start = plan.start[0];
                prop_assert_eq!(start.index, at);
                let used = last.filter(|_| at == succeeded.len()).map_or(0, |(n, _)| n);
                prop_assert_eq!(start.attempt, used + 1);
                prop_assert!(plan.skip.is_empty());
                prop_assert_eq!(left.len(), usize::from(last_status == Some(StepStatus::Running)));
            }
        }
    }
}
