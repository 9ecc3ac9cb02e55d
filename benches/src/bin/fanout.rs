//! A 10-wide fan-out of 10 ms steps on the memory store: how long one run
//! takes, against the 10 ms of one step.
//!
//! ```text
//! cargo run --release -p taskforge-benches --bin fanout -- [--runs N] [--width W] [--step-ms MS]
//! ```
//!
//! The workflow is `start` (no-op) -> `w0` ... `w9` (each
//! `tokio::time::sleep(10 ms)`, all depending on `start`) -> `join` (no-op,
//! depending on all ten), with `max_parallel_steps` = the width, so every
//! branch may run at once. Runs go one at a time, from `start_run` to
//! `wait_for_run` returning it succeeded; the binary prints the median
//! and p90 of N runs (default 50) and the median's ratio to one step's
//! 10 ms, and the same for two baselines: a run of that one step alone
//! (what a `tokio::time::sleep` of 10 ms and one run's overhead take),
//! and the ten steps in a chain (no dependencies declared: one after
//! another), whose ratio is about 10.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use taskforge_benches::{median, percentile};
use taskforge_core::{
    Engine, RunStatus, StepContext, StepDefinition, StepError, StepRegistry, WorkflowDefinition,
};
use taskforge_store_memory::MemoryStore;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: fanout [--runs N] [--width W] [--step-ms MS]");
        std::process::exit(0);
    }
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Milliseconds of `runs` sequential runs of `workflow`.
async fn measure(
    engine: &Engine<MemoryStore, StepRegistry>,
    definition: WorkflowDefinition,
    name: &str,
    runs: u64,
) -> Vec<f64> {
    let workflow = engine.ensure_workflow(name).await.expect("workflow");
    engine
        .publish(workflow.id, definition)
        .await
        .expect("publish");
    // One warm-up run.
    let run = engine
        .start_run(workflow.id, json!({}))
        .await
        .expect("start");
    engine.wait_for_run(run.id).await.expect("wait");
    let mut took = Vec::new();
    for i in 0..runs {
        let began = Instant::now();
        let run = engine
            .start_run(workflow.id, json!({ "i": i }))
            .await
            .expect("start");
        let done = engine.wait_for_run(run.id).await.expect("wait");
        took.push(began.elapsed().as_secs_f64() * 1_000.0);
        assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    }
    took
}

#[tokio::main]
async fn main() {
    let runs = arg("--runs", 50);
    let width = arg("--width", 10) as usize;
    let step = Duration::from_millis(arg("--step-ms", 10));
    let mut registry = StepRegistry::new();
    registry
        .step("noop", |_ctx: StepContext, _input: Value| async {
            Ok::<_, StepError>(())
        })
        .expect("register")
        .step(
            "sleep",
            move |_ctx: StepContext, _input: Value| async move {
                tokio::time::sleep(step).await;
                Ok::<_, StepError>(())
            },
        )
        .expect("register");
    let engine = Engine::builder(MemoryStore::new(), registry).build();
    engine.start();

    let branches: Vec<String> = (0..width).map(|i| format!("w{i}")).collect();
    let mut steps = vec![StepDefinition::new("start", "noop")];
    steps.extend(
        branches
            .iter()
            .map(|key| StepDefinition::new(key.clone(), "sleep").depends_on(["start"])),
    );
    steps.push(StepDefinition::new("join", "noop").depends_on(branches.clone()));
    let fan_out = WorkflowDefinition::new(steps).max_parallel_steps(width as u32);
    let chain = WorkflowDefinition::new(
        (0..width)
            .map(|i| StepDefinition::new(format!("w{i}"), "sleep"))
            .collect(),
    );

    let single = WorkflowDefinition::new(vec![StepDefinition::new("w0", "sleep")]);

    eprintln!("load average before: {}", load());
    let fan = measure(&engine, fan_out, "fan-out", runs).await;
    let one = measure(&engine, single, "one-step", runs).await;
    let linear = measure(&engine, chain, "chain", (runs / 5).max(3)).await;
    eprintln!("load average after: {}", load());
    let step_ms = step.as_secs_f64() * 1_000.0;
    println!("| workload | runs | median | p90 | median / {step_ms} ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, took) in [
        (
            format!("{width}-wide fan-out of {step_ms} ms steps (+ no-op start and join)"),
            fan,
        ),
        (format!("one step of {step_ms} ms (baseline)"), one),
        (
            format!("{width} steps of {step_ms} ms in a chain (baseline)"),
            linear,
        ),
    ] {
        let p90 = percentile(&took, 90.0);
        let count = took.len();
        let median = median(took);
        println!(
            "| {name} | {count} | {median:.1} ms | {p90:.1} ms | {:.2} |",
            median / step_ms
        );
    }
}
