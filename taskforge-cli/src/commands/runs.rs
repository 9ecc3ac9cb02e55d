//! `taskforge runs list|show|watch|cancel|signal|retry` (and `logs`,
//! `artifacts`, `artifact`, in their own modules).

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{hint_more, name_of, path, workflow_id, workflow_names, STREAM_IDLE, TERMINAL};
use crate::client::Error;
use crate::output::{self, emit, emit_json, Cell, Fields, Table};
use crate::sse::SseParser;
use crate::{Ctx, Done, RunFilter, RunsCommand};

pub(crate) async fn run(ctx: &Ctx, command: RunsCommand) -> Result<Done, Error> {
    match command {
        RunsCommand::List(filter) => list(ctx, filter).await,
        RunsCommand::Show { id } => show(ctx, &id).await,
        RunsCommand::Watch { id } => watch(ctx, &id).await,
        RunsCommand::Logs {
            id,
            step,
            attempt,
            follow,
        } => {
            let which = super::logs::Which { step, attempt };
            super::logs::logs(ctx, &id, &which, follow).await
        }
        RunsCommand::Artifacts { id } => super::artifacts::list(ctx, &id).await,
        RunsCommand::Artifact {
            id,
            name,
            output,
            force,
        } => super::artifacts::download(ctx, &id, &name, output.as_deref(), force).await,
        RunsCommand::Cancel { id } => {
            let run = ctx
                .api
                .post(&format!("{}/cancel", path("runs", &id)), None)
                .await?;
            if ctx.json {
                emit_json(&run);
            } else {
                let status = run["status"].as_str().unwrap_or("-");
                let note = if TERMINAL.contains(&status) {
                    String::new()
                } else {
                    " (cancel requested; it stops at its next step boundary or within a second)"
                        .to_owned()
                };
                emit(&format!(
                    "run {} {}{note}\n",
                    output::text(&run["id"]),
                    ctx.style.status(status)
                ));
            }
            Ok(Done::Ok)
        }
        RunsCommand::Signal { id, name, payload } => {
            let payload: Value = match payload {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| Error::other(format!("--payload is not JSON: {e}")))?,
                None => Value::Null,
            };
            let run = ctx
                .api
                .post(
                    &format!("{}/signals/{name}", path("runs", &id)),
                    Some(&payload),
                )
                .await?;
            if ctx.json {
                emit_json(&run);
            } else {
                emit(&format!(
                    "run {} {}: signal {name} sent\n",
                    output::text(&run["id"]),
                    ctx.style.status(run["status"].as_str().unwrap_or("-"))
                ));
            }
            Ok(Done::Ok)
        }
        RunsCommand::Retry { id } => retry(ctx, &id).await,
        RunsCommand::Start {
            workflow,
            input,
            version,
            idempotency_key,
            watch: follow,
        } => {
            let input: Value = match input {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| Error::other(format!("--input is not JSON: {e}")))?,
                None => json!({}),
            };
            let id = workflow_id(ctx, &workflow).await?;
            let mut body = json!({ "input": input });
            if let Some(version) = version {
                body["version"] = json!(version);
            }
            if let Some(key) = idempotency_key {
                body["idempotency_key"] = json!(key);
            }
            let run = ctx
                .api
                .post(&format!("{}/runs", path("workflows", &id)), Some(&body))
                .await?;
            let run_id = output::text(&run["id"]);
            if ctx.json {
                emit_json(&run);
            } else {
                emit(&format!(
                    "run {run_id} {} ({workflow} v{})\n",
                    ctx.style.status(run["status"].as_str().unwrap_or("-")),
                    output::text(&run["version"]),
                ));
            }
            if follow {
                return watch(ctx, &run_id).await;
            }
            Ok(Done::Ok)
        }
    }
}

async fn list(ctx: &Ctx, filter: RunFilter) -> Result<Done, Error> {
    let mut query = vec![
        ("limit", filter.page.limit.to_string()),
        (
            "order",
            if filter.oldest_first {
                "oldest_first"
            } else {
                "newest_first"
            }
            .to_owned(),
        ),
    ];
    if let Some(workflow) = &filter.workflow {
        query.push(("workflow_id", workflow_id(ctx, workflow).await?));
    }
    if let Some(status) = filter.status {
        query.push(("status", status));
    }
    if let Some(event) = filter.event {
        query.push(("event_id", event));
    }
    if let Some(since) = filter.since {
        query.push(("created_from", since));
    }
    if let Some(after) = filter.page.after {
        query.push(("after", after));
    }
    let page = ctx.api.get("/api/v1/runs", &query).await?;
    if ctx.json {
        emit_json(&page);
        return Ok(Done::Ok);
    }
    let names = workflow_names(ctx).await;
    let runs = page["items"].as_array().cloned().unwrap_or_default();
    emit(&runs_table(ctx, &runs, &names));
    hint_more(&page);
    Ok(Done::Ok)
}

/// A table of runs.
pub(crate) fn runs_table(ctx: &Ctx, runs: &[Value], names: &HashMap<String, String>) -> String {
    let mut table = Table::new(&[
        "RUN", "WORKFLOW", "VERSION", "STATUS", "CREATED", "DURATION",
    ]);
    for run in runs {
        table.row(vec![
            output::text(&run["id"]).into(),
            name_of(names, &run["workflow_id"]).into(),
            format!("v{}", output::text(&run["version"])).into(),
            Cell::status(run["status"].as_str().unwrap_or("-")),
            output::time(&run["created_at"]).into(),
            output::duration(&run["started_at"], &run["finished_at"]).into(),
        ]);
    }
    if table.is_empty() {
        return "no runs\n".to_owned();
    }
    table.render(ctx.style)
}

async fn show(ctx: &Ctx, id: &str) -> Result<Done, Error> {
    let view = ctx.api.get(&path("runs", id), &[]).await?;
    if ctx.json {
        emit_json(&view);
        return Ok(Done::Ok);
    }
    let run = &view["run"];
    let names = workflow_names(ctx).await;
    let mut fields = Fields::default();
    fields.add("run", output::text(&run["id"]));
    fields.add(
        "workflow",
        format!(
            "{} v{} ({})",
            name_of(&names, &run["workflow_id"]),
            output::text(&run["version"]),
            output::text(&run["workflow_id"])
        ),
    );
    fields.add(
        "status",
        ctx.style.status(run["status"].as_str().unwrap_or("-")),
    );
    fields.opt("event", run["event_id"].as_str().map(str::to_owned));
    fields.opt(
        "replay of",
        run["replay_of"].as_str().map(|r| format!("run {r}")),
    );
    fields.add("created", output::time(&run["created_at"]));
    if !run["started_at"].is_null() {
        fields.add("started", output::time(&run["started_at"]));
    }
    if !run["finished_at"].is_null() {
        fields.add(
            "finished",
            format!(
                "{} (took {})",
                output::time(&run["finished_at"]),
                output::duration(&run["started_at"], &run["finished_at"])
            ),
        );
    }
    if run["cancel_requested"].as_bool() == Some(true) && !is_terminal(run) {
        fields.add("cancel", "requested");
    }
    fields.add("input", output::json_block(&run["input"]));
    if !run["output"].is_null() {
        fields.add("output", output::json_block(&run["output"]));
    }
    if let Some(error) = run["error"].as_object() {
        let mut text = output::text(&error["message"]);
        if let Some(step) = error.get("step").and_then(Value::as_str) {
            text = format!("{text} (step {step})");
        }
        fields.add("error", ctx.style.paint(&text, Some("31")));
    }
    let mut out = fields.render();
    let steps = view["steps"].as_array().cloned().unwrap_or_default();
    out.push('\n');
    if steps.is_empty() {
        out.push_str("no step attempts yet\n");
    } else {
        let mut table = Table::new(&["STEP", "ATTEMPT", "STATUS", "STARTED", "DURATION", "NOTE"]);
        for step in &steps {
            let mut note = step["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(retry) = step["retry_at"].as_str() {
                note = format!("{note}; retry at {}", output::time(&json!(retry)));
            }
            table.row(vec![
                output::text(&step["step_key"]).into(),
                output::text(&step["attempt"]).into(),
                Cell::status(step["status"].as_str().unwrap_or("-")),
                output::time(&step["started_at"]).into(),
                output::duration(&step["started_at"], &step["finished_at"]).into(),
                one_line(&note, 80).into(),
            ]);
        }
        out.push_str(&table.render(ctx.style));
    }
    emit(&out);
    Ok(Done::Ok)
}

fn is_terminal(run: &Value) -> bool {
    run["status"]
        .as_str()
        .is_some_and(|s| TERMINAL.contains(&s))
}

/// `text` on one line, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

/// A new run of the same workflow version with the same input.
async fn retry(ctx: &Ctx, id: &str) -> Result<Done, Error> {
    let view = ctx.api.get(&path("runs", id), &[]).await?;
    let run = &view["run"];
    let workflow = run["workflow_id"]
        .as_str()
        .ok_or_else(|| Error::other("the server's run has no workflow_id"))?;
    let body = json!({ "input": run["input"], "version": run["version"] });
    let new = ctx
        .api
        .post(
            &format!("{}/runs", path("workflows", workflow)),
            Some(&body),
        )
        .await?;
    if ctx.json {
        emit_json(&new);
    } else {
        emit(&format!(
            "run {} {} (a retry of {} on v{})\n",
            output::text(&new["id"]),
            ctx.style.status(new["status"].as_str().unwrap_or("-")),
            output::text(&run["id"]),
            output::text(&run["version"]),
        ));
    }
    Ok(Done::Ok)
}

/// Follows the run's live stream until it finishes.
async fn watch(ctx: &Ctx, id: &str) -> Result<Done, Error> {
    // The stream opens with a snapshot of the run's status, read after the
    // subscription, so nothing falls between the two.
    let mut response = ctx
        .api
        .stream("/api/v1/stream", &[("run_id", id.to_owned())])
        .await?;
    let mut parser = SseParser::default();
    loop {
        // The server sends a keep-alive every 15 s: a silent minute means
        // the connection is gone, and the store says where the run is.
        let chunk = match tokio::time::timeout(STREAM_IDLE, response.chunk()).await {
            Ok(chunk) => chunk.map_err(|e| ctx.api.transport(&e))?,
            Err(_) => None,
        };
        let Some(chunk) = chunk else {
            // The server closed the stream (shutting down?): say where the
            // run is, from the store.
            return finished_elsewhere(ctx, id).await;
        };
        for event in parser.feed(&chunk).map_err(Error::other)? {
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            if ctx.json {
                emit(&format!(
                    "{}\n",
                    json!({ "event": event.name, "data": data })
                ));
            }
            let status = data["status"].as_str().unwrap_or_default();
            match event.name.as_str() {
                "snapshot" if TERMINAL.contains(&status) => {
                    return ended(ctx, id, status, true).await;
                }
                "snapshot" => say(ctx, &format!("run {id} {}", ctx.style.status(status))),
                "run_started" => {
                    let resumed = if data["resumed"].as_bool() == Some(true) {
                        " (resumed)"
                    } else {
                        ""
                    };
                    say(
                        ctx,
                        &format!("run {}{resumed}", ctx.style.status("running")),
                    );
                }
                "step_started" => say(
                    ctx,
                    &format!(
                        "step {} attempt {} {}",
                        output::text(&data["step_key"]),
                        output::text(&data["attempt"]),
                        ctx.style.status("running")
                    ),
                ),
                "step_succeeded" => say(
                    ctx,
                    &format!(
                        "step {} attempt {} {}",
                        output::text(&data["step_key"]),
                        output::text(&data["attempt"]),
                        ctx.style.status("succeeded")
                    ),
                ),
                "step_failed" => {
                    let retry = data["retry_at"]
                        .as_str()
                        .map(|at| format!("; retry at {}", output::time(&json!(at))))
                        .unwrap_or_default();
                    say(
                        ctx,
                        &format!(
                            "step {} attempt {} {}: {}{retry}",
                            output::text(&data["step_key"]),
                            output::text(&data["attempt"]),
                            ctx.style.status("failed"),
                            one_line(data["error"].as_str().unwrap_or_default(), 200),
                        ),
                    );
                }
                "step_skipped" => say(
                    ctx,
                    &format!(
                        "step {} {}: {}",
                        output::text(&data["step_key"]),
                        ctx.style.status("skipped"),
                        one_line(data["reason"].as_str().unwrap_or_default(), 200),
                    ),
                ),
                "step_progress" => say(
                    ctx,
                    &format!(
                        "step {} progress {}",
                        output::text(&data["step_key"]),
                        one_line(&data["progress"].to_string(), 200)
                    ),
                ),
                "run_waiting" => {
                    let until = data["wake_at"]
                        .as_str()
                        .map(|at| format!(" until {}", output::time(&json!(at))))
                        .unwrap_or_else(|| " for a signal".to_owned());
                    say(ctx, &format!("run {}{until}", ctx.style.status("waiting")));
                }
                "run_finished" => {
                    return ended(ctx, id, status, false).await;
                }
                "lagged" => {
                    // Updates were missed; the store knows whether it ended.
                    let view = ctx.api.get(&path("runs", id), &[]).await?;
                    let status = view["run"]["status"].as_str().unwrap_or_default();
                    if TERMINAL.contains(&status) {
                        return ended(ctx, id, status, false).await;
                    }
                    say(ctx, "(some updates were missed)");
                }
                _ => {}
            }
        }
    }
}

/// One line of a watch, stamped with the local time (UTC).
fn say(ctx: &Ctx, line: &str) {
    if !ctx.json {
        let now = chrono::Utc::now().format("%H:%M:%S");
        emit(&format!(
            "{}  {line}\n",
            ctx.style.paint(&now.to_string(), Some("2"))
        ));
    }
}

/// The watched run ended in `status`: its summary, and how to exit. With
/// `history`, the live updates were not seen (the run had finished before
/// the watch began): its step attempts are told from the store.
async fn ended(ctx: &Ctx, id: &str, status: &str, history: bool) -> Result<Done, Error> {
    if !ctx.json {
        let view = ctx.api.get(&path("runs", id), &[]).await?;
        let run = &view["run"];
        for step in view["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|_| history)
        {
            let mut line = format!(
                "step {} attempt {} {}",
                output::text(&step["step_key"]),
                output::text(&step["attempt"]),
                ctx.style.status(step["status"].as_str().unwrap_or("-"))
            );
            if let Some(message) = step["error"]["message"].as_str() {
                line.push_str(&format!(": {}", one_line(message, 200)));
            }
            say(ctx, &line);
        }
        let took = output::duration(&run["started_at"], &run["finished_at"]);
        let mut line = format!("run {} in {took}", ctx.style.status(status));
        if let Some(message) = run["error"]["message"].as_str() {
            line.push_str(&format!(": {}", one_line(message, 200)));
        }
        say(ctx, &line);
        if !run["output"].is_null() {
            emit(&format!("output: {}\n", output::json_block(&run["output"])));
        }
    }
    Ok(if status == "succeeded" {
        Done::Ok
    } else {
        Done::RunNotSucceeded
    })
}

/// The stream ended before the run did.
async fn finished_elsewhere(ctx: &Ctx, id: &str) -> Result<Done, Error> {
    let view = ctx.api.get(&path("runs", id), &[]).await?;
    let status = view["run"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if TERMINAL.contains(&status.as_str()) {
        return ended(ctx, id, &status, true).await;
    }
    Err(Error::other(format!(
        "the server closed the stream while run {id} is {status}; watch again"
    )))
}
