//! Helpers shared by the Taskforge examples: printing runs as tables.

use serde_json::Value;
use taskforge::{RunDetails, StepRun};

/// Prints a run and every step attempt as a table.
pub fn print_run(details: &RunDetails) {
    let run = &details.run;
    let took = run
        .finished_at
        .zip(run.started_at)
        .map(|(end, start)| format!("{} ms", (end - start).num_milliseconds()))
        .unwrap_or_else(|| "-".to_owned());
    println!("run {}  v{}  {}  ({took})", run.id, run.version, run.status);
    println!(
        "  {:<12} {:>7} {:<11} {:>8}  output / error",
        "step", "attempt", "status", "duration"
    );
    for step in &details.steps {
        println!(
            "  {:<12} {:>7} {:<11} {:>8}  {}",
            step.step_key,
            step.attempt,
            step.status.to_string(),
            duration(step),
            summary(step)
        );
    }
    match (&run.output, &run.error) {
        (Some(output), _) => println!("  output: {}", truncate(output)),
        (_, Some(error)) => println!("  error: {}", error.message),
        _ => {}
    }
    println!();
}

fn duration(step: &StepRun) -> String {
    step.finished_at.map_or_else(
        || "-".to_owned(),
        |end| format!("{} ms", (end - step.started_at).num_milliseconds()),
    )
}

fn summary(step: &StepRun) -> String {
    match (&step.output, &step.error) {
        (Some(output), _) => truncate(output),
        (_, Some(error)) => format!("error: {}", error.message),
        _ => String::new(),
    }
}

fn truncate(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(90) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
