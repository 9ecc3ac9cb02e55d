//! What a scenario is made of, drawn from its seed: engines, workflows,
//! arrivals, crashes, cancels, store faults and what handlers do.

use std::time::Duration;

use crate::testing::faults::FaultConfig;
use crate::{EventId, RunId};
use crate::{RetryPolicy, StepDefinition, WorkflowDefinition};

/// Everything a scenario does, drawn from its seed by [`Plan::from_seed`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// How many engines share the store.
    pub engines: usize,
    /// The engines' lease length.
    pub lease_ttl: Duration,
    /// How often they look for work.
    pub poll_interval: Duration,
    /// How often an owner looks for a cancel from another engine.
    pub cancel_check_interval: Duration,
    /// The step timeout where a definition sets none.
    pub step_timeout: Duration,
    /// How many runs each engine executes at once.
    pub max_concurrent_runs: usize,
    /// The workflows' definitions. Workflow `i` is named `<n>-i`, where
    /// `<n>` names the scenario uniquely in the process, and has a
    /// webhook trigger at path `<n>-i` keyed by the `x-delivery-id`
    /// header.
    pub workflows: Vec<WorkflowDefinition>,
    /// Runs asked for.
    pub arrivals: Vec<Arrival>,
    /// Engine crashes.
    pub crashes: Vec<Crash>,
    /// Cancellations: when, and which arrival's run.
    pub cancels: Vec<(Duration, usize)>,
    /// The store faults, until the horizon.
    pub faults: FaultConfig,
    /// What handlers do.
    pub handlers: HandlerMix,
    /// When the faults stop and everything settles.
    pub horizon: Duration,
}

/// A run asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Arrival {
    /// When.
    pub at: Duration,
    /// Which workflow.
    pub workflow: usize,
    /// How.
    pub kind: ArrivalKind,
}

/// How a run is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArrivalKind {
    /// `start_run_with`, with an idempotency key or not.
    Manual {
        /// The key.
        key: Option<String>,
    },
    /// `deliver_webhook` with this `x-delivery-id`.
    Webhook {
        /// The delivery id.
        delivery: String,
    },
}

impl Arrival {
    /// What identifies the run it asks for: its idempotency key or
    /// delivery id, or the arrival itself.
    pub(super) fn key(&self, index: usize) -> String {
        match &self.kind {
            ArrivalKind::Manual { key: Some(key) } => key.clone(),
            ArrivalKind::Manual { key: None } => format!("arrival-{index}"),
            ArrivalKind::Webhook { delivery } => delivery.clone(),
        }
    }

    /// Whether its client may try again after an error.
    pub(super) fn retries(&self) -> bool {
        !matches!(self.kind, ArrivalKind::Manual { key: None })
    }
}

/// An engine crash: it is dropped at `at` and started again `down_for` later.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Crash {
    /// When.
    pub at: Duration,
    /// Which engine.
    pub engine: usize,
    /// For how long.
    pub down_for: Duration,
}

/// The chance of each thing a handler call does; the rest succeed at once.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HandlerMix {
    /// Succeed after a while (sometimes past the step timeout).
    pub slow: f64,
    /// Fail retryably.
    pub retryable: f64,
    /// Fail retryably with a retry-after hint.
    pub retry_after: f64,
    /// Fail terminally.
    pub terminal: f64,
    /// Panic.
    pub panic: f64,
    /// Never return (until the step timeout drops it).
    pub hang: f64,
}

/// What one handler call does.
#[derive(Debug, Clone, Copy)]
pub(super) enum Behavior {
    Succeed,
    Slow(Duration),
    Retryable,
    RetryAfter(Duration),
    Terminal,
    Panic,
    Hang,
}

impl Behavior {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Succeed => "succeed",
            Self::Slow(_) => "slow",
            Self::Retryable => "retryable error",
            Self::RetryAfter(_) => "retry-after error",
            Self::Terminal => "terminal error",
            Self::Panic => "panic",
            Self::Hang => "hang",
        }
    }
}

impl HandlerMix {
    pub(super) fn draw(&self, rng: &mut fastrand::Rng) -> Behavior {
        let (pick, length) = (rng.f64(), ms(rng.u64(10..=2_500)));
        let choices = [
            (self.slow, Behavior::Slow(length)),
            (self.retryable, Behavior::Retryable),
            (self.retry_after, Behavior::RetryAfter(length / 2)),
            (self.terminal, Behavior::Terminal),
            (self.panic, Behavior::Panic),
            (self.hang, Behavior::Hang),
        ];
        let mut bound = 0.0;
        for (chance, behavior) in choices {
            bound += chance;
            if pick < bound {
                return behavior;
            }
        }
        Behavior::Succeed
    }
}

/// What happens when, in a scenario's timeline.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    Arrive(usize),
    Crash(usize),
    Restart(usize),
    Cancel(usize),
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// `0` one time in five, else up to `max`.
fn rate(rng: &mut fastrand::Rng, max: f64) -> f64 {
    if rng.u8(0..5) == 0 {
        0.0
    } else {
        rng.f64() * max
    }
}

fn definition(rng: &mut fastrand::Rng) -> WorkflowDefinition {
    let steps = (0..rng.usize(1..=4))
        .map(|i| {
            let mut step = StepDefinition::new(format!("s{i}"), "sim");
            match rng.u8(0..4) {
                0 => {}
                1 | 2 => {
                    step = step.retry(RetryPolicy::fixed(rng.u32(2..=4), ms(rng.u64(0..=500))));
                }
                _ => {
                    step = step.retry(RetryPolicy::exponential(
                        rng.u32(2..=5),
                        ms(rng.u64(50..=200)),
                        ms(rng.u64(200..=1_000)),
                    ));
                }
            }
            if rng.bool() {
                step = step.timeout(ms(rng.u64(300..=2_000)));
            }
            step
        })
        .collect();
    let definition = WorkflowDefinition::new(steps);
    if rng.u8(0..100) < 15 {
        definition.timeout(ms(rng.u64(3_000..=15_000)))
    } else {
        definition
    }
}

impl Plan {
    /// The scenario of `seed`.
    #[must_use]
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let engines = rng.usize(2..=3);
        let lease_ttl = ms(rng.u64(1_000..=3_000));
        let poll_interval = ms(rng.u64(500..=2_000));
        let cancel_check_interval = ms(rng.u64(200..=1_000));
        let step_timeout = ms(rng.u64(500..=2_000));
        let max_concurrent_runs = if rng.bool() { 256 } else { rng.usize(1..=3) };
        let workflows: Vec<_> = (0..rng.usize(1..=2))
            .map(|_| definition(&mut rng))
            .collect();
        let mut arrivals: Vec<Arrival> = Vec::new();
        for i in 0..rng.usize(3..=10) {
            let workflow = rng.usize(..workflows.len());
            let at = ms(rng.u64(0..=5_000));
            // Now and then the same key or delivery id again, as a
            // client that retries on its own would send it.
            let earlier = arrivals
                .iter()
                .filter(|a| a.workflow == workflow)
                .map(|a| a.kind.clone())
                .collect::<Vec<_>>();
            let repeat = rng.u8(0..5) == 0;
            let kind = if rng.bool() {
                let key = match rng.u8(0..2) {
                    0 => None,
                    _ => Some(format!("w{workflow}-key-{i}")),
                };
                let again = earlier
                    .iter()
                    .find(|k| matches!(k, ArrivalKind::Manual { key: Some(_) }));
                match again {
                    Some(kind) if repeat => kind.clone(),
                    _ => ArrivalKind::Manual { key },
                }
            } else {
                let again = earlier
                    .iter()
                    .find(|k| matches!(k, ArrivalKind::Webhook { .. }));
                match again {
                    Some(kind) if repeat => kind.clone(),
                    _ => ArrivalKind::Webhook {
                        delivery: format!("w{workflow}-delivery-{i}"),
                    },
                }
            };
            arrivals.push(Arrival { at, workflow, kind });
        }
        let crashes = (0..rng.usize(0..=3))
            .map(|_| Crash {
                at: ms(rng.u64(0..=6_000)),
                engine: rng.usize(..engines),
                down_for: ms(rng.u64(200..=4_000)),
            })
            .collect();
        let cancels = (0..usize::from(rng.u8(0..10) < 3))
            .map(|_| (ms(rng.u64(500..=6_000)), rng.usize(..arrivals.len())))
            .collect();
        // Delays stay well inside the lease (an owner gives its lease
        // up a tenth of it before it lapses); stalls outlast it, so
        // that an engine carries on after another took its runs over.
        let max_delay = (lease_ttl / 20).mul_f64(rng.f64());
        let stall_length = lease_ttl.mul_f64(1.0 + 1.5 * rng.f64());
        let stalls = if rng.bool() {
            rate(&mut rng, 0.03)
        } else {
            0.0
        };
        let faults = FaultConfig::none()
            .fail_before_write(rate(&mut rng, 0.15))
            .fail_after_write(rate(&mut rng, 0.15))
            .fail_read(rate(&mut rng, 0.15))
            .delay(rate(&mut rng, 0.4), max_delay)
            .stall(stalls, stall_length);
        let handlers = HandlerMix {
            slow: rate(&mut rng, 0.3),
            retryable: rate(&mut rng, 0.25),
            retry_after: rate(&mut rng, 0.05),
            terminal: rate(&mut rng, 0.05),
            panic: rate(&mut rng, 0.08),
            hang: rate(&mut rng, 0.08),
        };
        Self {
            seed,
            engines,
            lease_ttl,
            poll_interval,
            cancel_check_interval,
            step_timeout,
            max_concurrent_runs,
            workflows,
            arrivals,
            crashes,
            cancels,
            faults,
            handlers,
            horizon: ms(8_000),
        }
    }

    /// Every action, in the order they happen.
    pub(super) fn timeline(&self) -> Vec<(Duration, Action)> {
        let mut timeline: Vec<(Duration, Action)> = self
            .arrivals
            .iter()
            .enumerate()
            .map(|(i, a)| (a.at, Action::Arrive(i)))
            .collect();
        for crash in &self.crashes {
            timeline.push((crash.at, Action::Crash(crash.engine)));
            timeline.push((crash.at + crash.down_for, Action::Restart(crash.engine)));
        }
        for &(at, arrival) in &self.cancels {
            timeline.push((at, Action::Cancel(arrival)));
        }
        timeline.sort_by_key(|(at, _)| *at);
        timeline
    }
}

/// What a client was told: an arrival's run.
#[derive(Debug, Clone)]
pub(super) struct Ack {
    pub(super) arrival: usize,
    pub(super) key: String,
    pub(super) run_id: RunId,
    pub(super) event_id: Option<EventId>,
}
