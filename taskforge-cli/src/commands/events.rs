//! `taskforge events list|show|replay`.

use serde_json::Value;

use super::runs::runs_table;
use super::{hint_more, name_of, path, workflow_id, workflow_names};
use crate::client::Error;
use crate::output::{self, emit, emit_json, Cell, Fields, Table};
use crate::{Ctx, Done, EventFilter, EventsCommand};

pub(crate) async fn run(ctx: &Ctx, command: EventsCommand) -> Result<Done, Error> {
    match command {
        EventsCommand::List(filter) => list(ctx, filter).await,
        EventsCommand::Show { id } => show(ctx, &id).await,
        EventsCommand::Replay { id } => {
            let run = ctx
                .api
                .post(&format!("{}/replay", path("events", &id)), None)
                .await?;
            if ctx.json {
                emit_json(&run);
            } else {
                emit(&format!(
                    "run {} {} (a replay of event {id})\n",
                    output::text(&run["id"]),
                    ctx.style.status(run["status"].as_str().unwrap_or("-")),
                ));
            }
            Ok(Done::Ok)
        }
    }
}

async fn list(ctx: &Ctx, filter: EventFilter) -> Result<Done, Error> {
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
    if let Some(trigger) = filter.trigger {
        query.push(("trigger_id", trigger));
    }
    if let Some(outcome) = filter.outcome {
        query.push(("outcome", outcome));
    }
    if let Some(since) = filter.since {
        query.push(("received_from", since));
    }
    if let Some(after) = filter.page.after {
        query.push(("after", after));
    }
    let page = ctx.api.get("/api/v1/events", &query).await?;
    if ctx.json {
        emit_json(&page);
        return Ok(Done::Ok);
    }
    let names = workflow_names(ctx).await;
    let mut table = Table::new(&["EVENT", "WORKFLOW", "SOURCE", "RECEIVED", "OUTCOME", ""]);
    for event in page["items"].as_array().into_iter().flatten() {
        let (kind, note) = outcome(&event["outcome"]);
        table.row(vec![
            output::text(&event["id"]).into(),
            name_of(&names, &event["workflow_id"]).into(),
            output::text(&event["source"]).into(),
            output::time(&event["received_at"]).into(),
            Cell::status(&kind),
            note.into(),
        ]);
    }
    if table.is_empty() {
        emit("no events\n");
    } else {
        emit(&table.render(ctx.style));
    }
    hint_more(&page);
    Ok(Done::Ok)
}

/// An outcome's kind, and what goes with it (the run, the reason).
fn outcome(outcome: &Value) -> (String, String) {
    let kind = outcome["kind"].as_str().unwrap_or("-").to_owned();
    let note = match kind.as_str() {
        "run_started" => format!("run {}", output::text(&outcome["run_id"])),
        "rejected" => format!(
            "HTTP {}: {}",
            output::text(&outcome["status"]),
            output::text(&outcome["reason"])
        ),
        "filtered" | "skipped" => output::text(&outcome["reason"]),
        _ => String::new(),
    };
    (kind, note)
}

async fn show(ctx: &Ctx, id: &str) -> Result<Done, Error> {
    let event = ctx.api.get(&path("events", id), &[]).await?;
    let runs = ctx
        .api
        .get(&format!("{}/runs", path("events", id)), &[])
        .await?;
    if ctx.json {
        emit_json(&serde_json::json!({ "event": event, "runs": runs }));
        return Ok(Done::Ok);
    }
    let names = workflow_names(ctx).await;
    let mut fields = Fields::default();
    fields.add("event", output::text(&event["id"]));
    fields.add("workflow", name_of(&names, &event["workflow_id"]));
    fields.add("source", output::text(&event["source"]));
    fields.opt("trigger", event["trigger_id"].as_str().map(str::to_owned));
    fields.add("received", output::time(&event["received_at"]));
    let (kind, note) = outcome(&event["outcome"]);
    let note = if note.is_empty() {
        String::new()
    } else {
        format!("  {note}")
    };
    fields.add("outcome", format!("{}{note}", ctx.style.status(&kind)));
    fields.opt("dedup key", event["dedup_key"].as_str().map(str::to_owned));
    if let Some(metadata) = event["metadata"].as_object() {
        let lines: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{k}: {}", output::text(v)))
            .collect();
        if !lines.is_empty() {
            fields.add("metadata", lines.join("\n"));
        }
    }
    fields.add("payload", output::json_block(&event["payload"]));
    let mut out = fields.render();
    out.push('\n');
    let runs = runs.as_array().cloned().unwrap_or_default();
    out.push_str(&runs_table(ctx, &runs, &names));
    emit(&out);
    Ok(Done::Ok)
}
