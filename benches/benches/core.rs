//! Micro-benchmarks of core's hot paths that touch no store: the run and
//! step state machines, definition validation, and calling a no-op
//! handler through the closure registry.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures::FutureExt;
use taskforge_benches::{definition, noop_registry, payload, NOOP};
use taskforge_core::store::{RunTransition, StepTransition};
use taskforge_core::{RunId, RunStatus, StepContext, StepExecutor, StepStatus};

const RUN_TRANSITIONS: [RunTransition; 6] = [
    RunTransition::Start,
    RunTransition::Resume,
    RunTransition::Succeed,
    RunTransition::Fail,
    RunTransition::Cancel,
    RunTransition::TimeOut,
];

const STEP_TRANSITIONS: [StepTransition; 5] = [
    StepTransition::Succeed,
    StepTransition::Fail,
    StepTransition::TimeOut,
    StepTransition::Cancel,
    StepTransition::Interrupt,
];

fn state_machine(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_machine");
    group.bench_function("RunStatus::apply, all 36 pairs", |b| {
        b.iter(|| {
            let mut legal = 0u32;
            for status in RunStatus::ALL {
                for transition in RUN_TRANSITIONS {
                    legal += u32::from(black_box(status).apply(black_box(transition)).is_ok());
                }
            }
            legal
        });
    });
    group.bench_function("StepStatus::apply, all 30 pairs", |b| {
        b.iter(|| {
            let mut legal = 0u32;
            for status in StepStatus::ALL {
                for transition in STEP_TRANSITIONS {
                    legal += u32::from(black_box(status).apply(black_box(transition)).is_ok());
                }
            }
            legal
        });
    });
    group.bench_function("RunStatus::apply, one legal transition", |b| {
        b.iter(|| black_box(RunStatus::Running).apply(black_box(RunTransition::Succeed)));
    });
    group.finish();
}

fn validation(c: &mut Criterion) {
    let registry = noop_registry().expect("registry");
    let mut group = c.benchmark_group("definition_validation");
    for steps in [3, 20] {
        let def = definition(steps, NOOP);
        group.bench_function(format!("validate_with, {steps} steps"), |b| {
            b.iter(|| black_box(&def).validate_with(|name| registry.has_handler(name)));
        });
    }
    let def = definition(3, NOOP);
    group.bench_function("content_hash, 3 steps", |b| {
        b.iter(|| black_box(&def).content_hash());
    });
    group.finish();
}

fn registry_call(c: &mut Criterion) {
    let registry = noop_registry().expect("registry");
    let ctx = StepContext::detached("s0", payload(0));
    let mut group = c.benchmark_group("step_registry");
    group.bench_function("execute no-op, 200 B JSON input", |b| {
        b.iter(|| {
            registry
                .execute(black_box(NOOP), ctx.clone())
                .now_or_never()
                .expect("a no-op completes at once")
        });
    });
    group.bench_function("build context + execute no-op", |b| {
        b.iter_batched(
            || payload(0),
            |input| {
                registry
                    .execute(NOOP, StepContext::detached("s0", input))
                    .now_or_never()
                    .expect("a no-op completes at once")
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// What every run and event pays many times over: a fresh id (UUID v7)
/// and a deep copy of a ~200-byte JSON payload.
fn building_blocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("building_blocks");
    group.bench_function("RunId::new (UUID v7)", |b| b.iter(RunId::new));
    let body = payload(0);
    group.bench_function("clone a 200 B JSON payload (serde_json::Value)", |b| {
        b.iter(|| black_box(&body).clone());
    });
    let shared = std::sync::Arc::new(payload(0));
    group.bench_function("clone an Arc of the same payload", |b| {
        b.iter(|| std::sync::Arc::clone(black_box(&shared)));
    });
    group.finish();
}

// In a private module: the function the macro makes needs no docs there.
mod group {
    use super::*;
    criterion_group!(
        benches,
        state_machine,
        validation,
        registry_call,
        building_blocks
    );
}
criterion_main!(group::benches);
