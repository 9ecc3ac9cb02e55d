//! Helpers shared by the Taskforge examples: the master key, and printing
//! runs as tables with their logs and artifacts.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde_json::Value;
use taskforge::secret::MasterKey;
use taskforge::store::{LogQuery, Store};
use taskforge::{Engine, EngineError, RunDetails, RunId, StepExecutor, StepRun};

/// The master key that seals secrets: `TASKFORGE_MASTER_KEY` (64 hex
/// characters or base64 of 32 bytes) if set, else the key in the file
/// `path`, made on first use (readable by its owner only). In production
/// keep the key outside the data directory and its backups.
///
/// # Errors
/// If the variable or the file does not hold a key, or the file cannot be
/// made.
pub fn master_key(path: &Path) -> Result<MasterKey, Box<dyn std::error::Error>> {
    if std::env::var_os("TASKFORGE_MASTER_KEY").is_some() {
        return Ok(MasterKey::from_env("TASKFORGE_MASTER_KEY")?);
    }
    if path.exists() {
        return Ok(MasterKey::from_file(path)?);
    }
    let key = MasterKey::generate();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(key.to_base64().as_bytes())?;
    file.sync_all()?;
    println!(
        "made a new master key in {}; keep a copy of it elsewhere",
        path.display()
    );
    Ok(key)
}

/// Prints a run as [`print_run`] does, then each attempt's log and the
/// run's artifacts.
///
/// # Errors
/// If the store or the artifact store fails.
pub async fn print_history<S: Store, X: StepExecutor>(
    engine: &Engine<S, X>,
    run_id: RunId,
) -> Result<(), EngineError> {
    let details = engine.run(run_id).await?;
    print_run(&details);
    for attempt in &details.steps {
        let lines = engine.step_logs(&LogQuery::new(run_id, attempt.id)).await?;
        if lines.items.is_empty() {
            continue;
        }
        println!("  log of {} #{}:", attempt.step_key, attempt.attempt);
        for line in &lines.items {
            println!(
                "    {} {:<5} {}",
                line.at.format("%H:%M:%S%.3f"),
                line.level,
                line.message
            );
        }
    }
    let artifacts = engine.run_artifacts(run_id).await?;
    if !artifacts.is_empty() {
        println!("  artifacts:");
        for artifact in &artifacts {
            println!(
                "    {:<24} {:>7} B  sha256 {}  (from {})",
                artifact.name,
                artifact.size,
                &artifact.sha256[..16],
                artifact.step_key
            );
        }
    }
    println!();
    Ok(())
}

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
