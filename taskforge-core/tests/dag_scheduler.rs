//! A property test of the DAG scheduler ([`taskforge_core::dag::Schedule`])
//! driven the way the engine's worker drives it, over a real store (the
//! memory store), without handlers: random acyclic definitions of up to 8
//! steps (some without dependencies at all, some with conditions on the
//! input or on an ancestor's output), random outcomes of each attempt
//! (success, retryable failure, terminal failure, timeout; retries as a
//! policy would allow them), random order of completions, and random
//! crashes: the schedule and every attempt in flight are dropped, the run
//! is claimed again, and a new schedule is rebuilt from the stored history
//! alone ([`Schedule::resume`]).
//!
//! Checked, against the stored history:
//! - a step starts only when every dependency is finished (succeeded or
//!   skipped) and one succeeded (or it has none), and its condition holds;
//! - a step succeeds at most once, and never starts again after;
//! - attempts in flight never exceed the definition's parallel limit;
//! - a step is skipped exactly when the rules say (all dependencies
//!   skipped, or its condition false);
//! - the run ends as the rules say: failed (or timed out) with the step
//!   that failed for good, or succeeded once every step is finished, with
//!   the output the definition describes.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};
use taskforge_core::dag::{End, Schedule, Start};
use taskforge_core::store::{Fence, RunStore, RunTransition, StepTransition, WorkflowStore};
use taskforge_core::{
    Filter, RunError, RunStatus, StepDefinition, StepFailure, StepRun, StepStatus, Workflow,
    WorkflowDefinition, WorkflowRun, WorkflowVersion,
};
use taskforge_store_memory::MemoryStore;

/// A generated case: the definition, the input its conditions read, each
/// step's retry allowance, and the seed of everything random afterwards.
#[derive(Debug, Clone)]
struct Case {
    definition: WorkflowDefinition,
    input: Value,
    max_attempts: Vec<u32>,
    seed: u64,
}

/// One step as generated: its dependencies (positions in topological
/// order, all earlier), and its condition, if any.
type Shape = (
    Vec<prop::sample::Index>,
    Option<(bool, prop::sample::Index)>,
);

fn case() -> impl Strategy<Value = Case> {
    (1..=8_usize)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(
                    (
                        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
                        prop::option::of((any::<bool>(), any::<prop::sample::Index>())),
                    ),
                    n,
                ),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                prop::collection::vec(any::<bool>(), n),
                prop::collection::vec(1..=3_u32, n),
                (any::<bool>(), prop::option::of(1..=4_u32), any::<bool>()),
                any::<u64>(),
            )
        })
        .prop_map(|(shapes, order, flags, max_attempts, settings, seed)| {
            build(shapes, &order, flags, max_attempts, settings, seed)
        })
}

fn build(
    shapes: Vec<Shape>,
    order: &[usize],
    flags: Vec<bool>,
    max_attempts: Vec<u32>,
    (linear, max_parallel, declare_output): (bool, Option<u32>, bool),
    seed: u64,
) -> Case {
    let n = shapes.len();
    // Topological position t is step key k{t}, listed at order[t].
    let mut ancestors: Vec<Vec<usize>> = Vec::new();
    let mut steps: Vec<Option<StepDefinition>> = vec![None; n];
    for (t, (picks, condition)) in shapes.into_iter().enumerate() {
        let mut depends_on: Vec<usize> = Vec::new();
        if linear {
            depends_on.extend(t.checked_sub(1));
        } else if t > 0 {
            for pick in picks {
                let d = pick.index(t);
                if !depends_on.contains(&d) {
                    depends_on.push(d);
                }
            }
        }
        let mut mine = depends_on.clone();
        for &d in &depends_on {
            mine.extend(&ancestors[d]);
        }
        mine.sort_unstable();
        mine.dedup();
        let mut step = StepDefinition::new(format!("k{t}"), "noop");
        if !linear {
            step = step.depends_on(depends_on.iter().map(|d| format!("k{d}")));
        }
        step.condition = condition.map(|(on_input, pick)| {
            if on_input || mine.is_empty() {
                Filter::equals(format!("/input/flags/{t}"), true)
            } else {
                Filter::equals(format!("/steps/k{}/ok", mine[pick.index(mine.len())]), true)
            }
        });
        ancestors.push(mine);
        let at = if linear { t } else { order[t] };
        steps[at] = Some(step);
    }
    let mut definition =
        WorkflowDefinition::new(steps.into_iter().map(|s| s.expect("every slot")).collect());
    definition.max_parallel_steps = max_parallel;
    if declare_output {
        definition.output = Some(format!("k{}", seed as usize % n));
    }
    // max_attempts by listed position.
    let mut by_position = vec![1; n];
    for (t, &m) in max_attempts.iter().enumerate() {
        by_position[if linear { t } else { order[t] }] = m;
    }
    Case {
        definition,
        input: json!({ "flags": flags }),
        max_attempts: by_position,
        seed,
    }
}

/// How an attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeed { ok: bool },
    Retryable,
    Terminal,
    TimedOut,
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_067_200, 0).expect("a valid timestamp")
}

/// The worker's stand-in: it owns the run's claim and writes what the
/// schedule says, as the engine's worker does.
struct Driver<'a> {
    store: &'a MemoryStore,
    run: WorkflowRun,
    fence: Fence,
    now: DateTime<Utc>,
    rng: fastrand::Rng,
    /// Violations found.
    errors: Vec<String>,
}

impl Driver<'_> {
    async fn commit(&mut self, run: Option<&WorkflowRun>, steps: &[StepRun]) {
        self.store
            .commit(self.fence, run, steps)
            .await
            .expect("a commit under our own claim");
        if let Some(run) = run {
            self.fence = run.fence();
        }
    }

    async fn history(&self) -> Vec<StepRun> {
        self.store
            .list_step_runs(self.run.id)
            .await
            .expect("list steps")
    }

    /// Claims the run again, as a new engine does after a crash.
    async fn reclaim(&mut self) {
        self.now += TimeDelta::hours(2);
        let claimed = self
            .store
            .claim_run(
                self.run.id,
                "next",
                self.now,
                self.now + TimeDelta::hours(1),
            )
            .await
            .expect("the lease lapsed");
        self.run = claimed;
        self.run
            .transition(RunTransition::Resume, self.now)
            .expect("resume");
        self.fence = self.run.fence();
    }

    fn outcome(&mut self) -> Outcome {
        match self.rng.u32(0..10) {
            0..=5 => Outcome::Succeed {
                ok: self.rng.bool(),
            },
            6 | 7 => Outcome::Retryable,
            8 => Outcome::TimedOut,
            _ => Outcome::Terminal,
        }
    }
}

/// The latest attempt of each step, by position.
fn latest(history: &[StepRun], n: usize) -> Vec<Option<&StepRun>> {
    let mut latest: Vec<Option<&StepRun>> = vec![None; n];
    for step in history {
        let slot = &mut latest[step.step_index as usize];
        if slot.is_none_or(|s| s.attempt < step.attempt) {
            *slot = Some(step);
        }
    }
    latest
}

fn finished(step: Option<&StepRun>) -> bool {
    step.is_some_and(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Skipped))
}

fn succeeded(step: Option<&StepRun>) -> bool {
    step.is_some_and(|s| s.status == StepStatus::Succeeded)
}

/// Whether step `index`'s condition holds on `history`, read
/// independently of the scheduler.
fn condition_holds(case: &Case, history: &[StepRun], index: usize) -> bool {
    let Some(condition) = &case.definition.steps[index].condition else {
        return true;
    };
    let latest = latest(history, case.definition.steps.len());
    let expected = json!(true);
    if let Some(flag) = condition.pointer.strip_prefix("/input/flags/") {
        let t: usize = flag.parse().expect("a position");
        return case.input["flags"][t] == expected;
    }
    let key = condition
        .pointer
        .strip_prefix("/steps/")
        .and_then(|rest| rest.strip_suffix("/ok"))
        .expect("a step pointer");
    let at = case
        .definition
        .steps
        .iter()
        .position(|s| s.key == key)
        .expect("a step");
    latest[at].is_some_and(|s| {
        s.status == StepStatus::Succeeded && s.output.as_ref().is_some_and(|o| o["ok"] == expected)
    })
}

/// Drives one case to its end; returns the violations.
async fn drive(case: &Case) -> Vec<String> {
    let store = MemoryStore::new();
    let definition = &case.definition;
    let n = definition.steps.len();
    let workflow = Workflow::new("dag", t0()).expect("a name");
    store.insert_workflow(&workflow).await.expect("workflow");
    let version = WorkflowVersion::new(workflow.id, 1, definition.clone(), t0());
    store.insert_version(&version).await.expect("version");
    let run = WorkflowRun::new(&version, case.input.clone(), t0());
    store.insert_run(&run).await.expect("run");
    let mut run = store
        .claim_run(run.id, "first", t0(), t0() + TimeDelta::hours(1))
        .await
        .expect("claim");
    let fence = run.fence();
    run.transition(RunTransition::Start, t0()).expect("start");
    let mut driver = Driver {
        store: &store,
        fence,
        now: t0(),
        rng: fastrand::Rng::with_seed(case.seed),
        errors: Vec::new(),
        run,
    };
    let started = driver.run.clone();
    driver.commit(Some(&started), &[]).await;

    let deps: Vec<Vec<usize>> = (0..n).map(|i| definition.dependencies(i)).collect();
    let limit = definition.parallel_limit() as usize;
    let mut schedule = Schedule::new(definition, &case.input);
    let mut in_flight: Vec<StepRun> = Vec::new();
    let mut crashes = 0;
    let end = loop {
        let plan = schedule.plan(driver.now);
        let skips: Vec<StepRun> = plan
            .skip
            .iter()
            .map(|s| {
                StepRun::skipped(
                    driver.run.id,
                    definition.steps[s.index].key.clone(),
                    s.index as u32,
                    s.reason.to_string(),
                    driver.now,
                )
            })
            .collect();
        if !skips.is_empty() {
            // A skip is decided on what is stored and on the skips decided
            // before it (in the order given): check the rule on those.
            let mut history = driver.history().await;
            for (skip, record) in plan.skip.iter().zip(&skips) {
                let latest = latest(&history, n);
                let i = skip.index;
                let all_done = deps[i].iter().all(|&d| finished(latest[d]));
                let any_ok = deps[i].is_empty() || deps[i].iter().any(|&d| succeeded(latest[d]));
                let cond = condition_holds(case, &history, i);
                if !all_done || (any_ok && cond) || latest[i].is_some() {
                    driver.errors.push(format!(
                        "step {i} skipped with dependencies done {all_done}, one succeeded \
                         {any_ok}, condition {cond}, recorded {:?}",
                        latest[i].map(|s| s.status)
                    ));
                }
                history.push(record.clone());
            }
            driver.commit(None, &skips).await;
        }
        if let Some(end) = plan.end {
            break end;
        }
        if !plan.start.is_empty() {
            let history = driver.history().await;
            let latest = latest(&history, n);
            for Start { index, attempt } in &plan.start {
                let i = *index;
                let all_done = deps[i].iter().all(|&d| finished(latest[d]));
                let any_ok = deps[i].is_empty() || deps[i].iter().any(|&d| succeeded(latest[d]));
                if !all_done || !any_ok || !condition_holds(case, &history, i) {
                    driver.errors.push(format!(
                        "step {i} started with dependencies done {all_done}, one succeeded \
                         {any_ok}"
                    ));
                }
                if history
                    .iter()
                    .any(|s| s.step_index as usize == i && s.status == StepStatus::Succeeded)
                {
                    driver
                        .errors
                        .push(format!("step {i} started after it succeeded"));
                }
                let used = latest[i].map_or(0, |s| s.attempt);
                if *attempt != used + 1 {
                    driver.errors.push(format!(
                        "step {i} started attempt {attempt} after attempt {used}"
                    ));
                }
            }
            let records: Vec<StepRun> = plan
                .start
                .iter()
                .map(|s| {
                    StepRun::start(
                        driver.run.id,
                        definition.steps[s.index].key.clone(),
                        s.index as u32,
                        s.attempt,
                        driver.now,
                    )
                })
                .collect();
            driver.commit(None, &records).await;
            in_flight.extend(records);
            if in_flight.len() > limit {
                driver.errors.push(format!(
                    "{} attempts in flight, more than {limit}",
                    in_flight.len()
                ));
            }
        }
        if in_flight.is_empty() {
            match plan.wake_at {
                Some(at) => {
                    driver.now = driver.now.max(at);
                    continue;
                }
                None => {
                    driver
                        .errors
                        .push("nothing runs, nothing is due, no end".into());
                    return driver.errors;
                }
            }
        }
        // A crash now and then: everything in memory is lost.
        if crashes < 3 && driver.rng.u32(0..8) == 0 {
            crashes += 1;
            drop(std::mem::take(&mut in_flight));
            driver.reclaim().await;
            let history = driver.history().await;
            let (resumed, left_running) = Schedule::resume(definition, &case.input, &history);
            let mut interrupted = Vec::new();
            for mut step in left_running {
                step.transition(StepTransition::Interrupt, driver.now)
                    .expect("interrupt");
                interrupted.push(step);
            }
            driver.commit(None, &interrupted).await;
            schedule = resumed;
            continue;
        }
        // One attempt in flight ends.
        driver.now += TimeDelta::seconds(1);
        let at = driver.rng.usize(0..in_flight.len());
        let mut record = in_flight.swap_remove(at);
        let i = record.step_index as usize;
        let outcome = driver.outcome();
        match outcome {
            Outcome::Succeed { ok } => {
                record
                    .transition(StepTransition::Succeed, driver.now)
                    .expect("succeed");
                record.output = Some(json!({ "ok": ok, "step": record.step_key }));
            }
            Outcome::Retryable | Outcome::Terminal | Outcome::TimedOut => {
                let transition = if outcome == Outcome::TimedOut {
                    StepTransition::TimeOut
                } else {
                    StepTransition::Fail
                };
                record.transition(transition, driver.now).expect("fail");
                record.error = Some(StepFailure {
                    message: format!("{outcome:?}"),
                    terminal: outcome == Outcome::Terminal,
                    detail: None,
                });
                if outcome != Outcome::Terminal && record.attempt < case.max_attempts[i] {
                    let delay = TimeDelta::seconds(driver.rng.i64(0..4));
                    record.retry_at = Some(driver.now + delay);
                }
            }
        }
        driver.commit(None, std::slice::from_ref(&record)).await;
        schedule.record(&record);
    };

    // The end: close what is in flight, then check it against the rules.
    let mut closing = Vec::new();
    for mut step in in_flight {
        step.transition(StepTransition::Cancel, driver.now)
            .expect("cancel");
        closing.push(step);
    }
    let history = {
        let mut history = driver.history().await;
        history.retain(|s| {
            !closing
                .iter()
                .any(|c| (c.step_index, c.attempt) == (s.step_index, s.attempt))
        });
        history.extend(closing.iter().cloned());
        history
    };
    check_history(&history, &mut driver.errors);
    check_end(case, &history, &end, &mut driver.errors);
    let mut finished_run = driver.run.clone();
    let (transition, error, output) = match &end {
        End::Succeeded { output } => (RunTransition::Succeed, None, Some(output.clone())),
        End::Failed { status, error } => (
            match status {
                RunStatus::TimedOut => RunTransition::TimeOut,
                RunStatus::Cancelled => RunTransition::Cancel,
                _ => RunTransition::Fail,
            },
            Some(error.clone()),
            None,
        ),
        _ => unreachable!("End has two variants"),
    };
    finished_run
        .transition(transition, driver.now)
        .expect("end");
    finished_run.error = error;
    finished_run.output = output;
    driver.commit(Some(&finished_run), &closing).await;
    driver.errors
}

/// Per step: attempts numbered 1..k, at most one success and only as the
/// last attempt, an attempt after another only when that one was retried.
fn check_history(history: &[StepRun], errors: &mut Vec<String>) {
    let mut by_step: BTreeMap<usize, Vec<&StepRun>> = BTreeMap::new();
    for step in history {
        by_step
            .entry(step.step_index as usize)
            .or_default()
            .push(step);
    }
    for (i, attempts) in &mut by_step {
        attempts.sort_by_key(|s| s.attempt);
        let numbers: Vec<u32> = attempts.iter().map(|s| s.attempt).collect();
        if numbers != (1..=numbers.len() as u32).collect::<Vec<_>>() {
            errors.push(format!("step {i} has attempts {numbers:?}"));
        }
        let successes = attempts
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .count();
        if successes > 1 {
            errors.push(format!("step {i} succeeded {successes} times"));
        }
        for pair in attempts.windows(2) {
            let retried = pair[0].status == StepStatus::Interrupted
                || (matches!(pair[0].status, StepStatus::Failed | StepStatus::TimedOut)
                    && pair[0].retry_at.is_some());
            if !retried {
                errors.push(format!(
                    "step {i}: attempt {} followed one that ended {}",
                    pair[1].attempt, pair[0].status
                ));
            }
        }
        if attempts
            .iter()
            .any(|s| s.status == StepStatus::Skipped && attempts.len() > 1)
        {
            errors.push(format!("step {i} was skipped and run"));
        }
    }
}

/// The run's end follows from the history.
fn check_end(case: &Case, history: &[StepRun], end: &End, errors: &mut Vec<String>) {
    let definition = &case.definition;
    let n = definition.steps.len();
    let latest = latest(history, n);
    let failed: Vec<&StepRun> = latest
        .iter()
        .flatten()
        .filter(|s| {
            matches!(s.status, StepStatus::Failed | StepStatus::TimedOut) && s.retry_at.is_none()
        })
        .copied()
        .collect();
    match end {
        End::Failed { status, error } => {
            let [step] = failed[..] else {
                errors.push(format!(
                    "the run failed with {} failures for good",
                    failed.len()
                ));
                return;
            };
            let expected_status = if step.status == StepStatus::TimedOut {
                RunStatus::TimedOut
            } else {
                RunStatus::Failed
            };
            let expected_error = RunError {
                message: step
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
                step: Some(step.step_key.clone()),
                detail: None,
            };
            if *status != expected_status || *error != expected_error {
                errors.push(format!(
                    "the run ended {status} with {error:?} after {step:?}"
                ));
            }
        }
        End::Succeeded { output } => {
            if !failed.is_empty() || !latest.iter().all(|s| finished(*s)) {
                errors.push(format!(
                    "the run succeeded with {:?}",
                    latest
                        .iter()
                        .map(|s| s.map(|s| s.status))
                        .collect::<Vec<_>>()
                ));
            }
            let output_of = |i: usize| latest[i].and_then(|s| s.output.clone());
            let expected = match &definition.output {
                Some(key) => {
                    let at = definition
                        .steps
                        .iter()
                        .position(|s| s.key == *key)
                        .expect("a step");
                    output_of(at).unwrap_or(Value::Null)
                }
                None => {
                    let sinks: Vec<usize> = (0..n)
                        .filter(|&i| (0..n).all(|j| !definition.dependencies(j).contains(&i)))
                        .collect();
                    if let [sink] = sinks[..] {
                        output_of(sink).unwrap_or(Value::Null)
                    } else {
                        Value::Object(
                            sinks
                                .iter()
                                .filter_map(|&i| {
                                    output_of(i).map(|o| (definition.steps[i].key.clone(), o))
                                })
                                .collect(),
                        )
                    }
                }
            };
            if *output != expected {
                errors.push(format!("the run's output is {output}, expected {expected}"));
            }
        }
        other => errors.push(format!("unexpected end {other:?}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_scheduler_follows_the_rules_through_failures_and_crashes(case in case()) {
        prop_assert_eq!(case.definition.validate(), Ok(()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let errors = runtime.block_on(drive(&case));
        prop_assert!(errors.is_empty(), "{:#?}\n{:#?}", errors, case);
    }
}
