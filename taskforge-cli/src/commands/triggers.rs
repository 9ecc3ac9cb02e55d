//! `taskforge triggers list|show`.

use std::collections::HashMap;

use serde_json::Value;

use super::{name_of, path, workflow_id, workflow_names};
use crate::client::Error;
use crate::output::{self, emit, emit_json, Cell, Fields, Table};
use crate::{Ctx, Done, TriggersCommand};

pub(crate) async fn run(ctx: &Ctx, command: TriggersCommand) -> Result<Done, Error> {
    match command {
        TriggersCommand::List { workflow } => {
            let mut query = Vec::new();
            if let Some(workflow) = &workflow {
                query.push(("workflow_id", workflow_id(ctx, workflow).await?));
            }
            let triggers = ctx.api.all("/api/v1/triggers", &query, 100_000).await?;
            if ctx.json {
                emit_json(&Value::Array(triggers));
                return Ok(Done::Ok);
            }
            let names = workflow_names(ctx).await;
            emit(&triggers_table(ctx, &triggers, Some(&names)));
            Ok(Done::Ok)
        }
        TriggersCommand::Show { id } => {
            let trigger = ctx.api.get(&path("triggers", &id), &[]).await?;
            if ctx.json {
                emit_json(&trigger);
                return Ok(Done::Ok);
            }
            let names = workflow_names(ctx).await;
            let mut fields = Fields::default();
            fields.add("trigger", output::text(&trigger["id"]));
            fields.add("name", output::text(&trigger["name"]));
            fields.add("workflow", name_of(&names, &trigger["workflow_id"]));
            fields.add("kind", output::text(&trigger["kind"]["kind"]));
            fields.add("summary", summary(&trigger["kind"]));
            fields.add("enabled", ctx.style.status(enabled(&trigger)));
            fields.add("created", output::time(&trigger["created_at"]));
            fields.add("updated", output::time(&trigger["updated_at"]));
            let config = serde_json::to_string_pretty(&trigger["kind"]).unwrap_or_default();
            fields.add("config", config);
            emit(&fields.render());
            Ok(Done::Ok)
        }
    }
}

fn enabled(trigger: &Value) -> &'static str {
    if trigger["enabled"].as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    }
}

/// What a trigger listens to, in a few words.
fn summary(kind: &Value) -> String {
    match kind["kind"].as_str() {
        Some("webhook") => format!("POST /hooks/{}", output::text(&kind["path"])),
        Some("cron") => format!(
            "{} ({})",
            output::text(&kind["expression"]),
            output::text(&kind["timezone"])
        ),
        Some("manual") => "started by hand".to_owned(),
        _ => "-".to_owned(),
    }
}

/// A table of triggers; with `names`, a workflow column.
pub(crate) fn triggers_table(
    ctx: &Ctx,
    triggers: &[Value],
    names: Option<&HashMap<String, String>>,
) -> String {
    let mut headers = vec!["TRIGGER", "NAME"];
    if names.is_some() {
        headers.push("WORKFLOW");
    }
    headers.extend(["KIND", "ENABLED", "LISTENS TO"]);
    let mut table = Table::new(&headers);
    for trigger in triggers {
        let mut row: Vec<Cell> = vec![
            output::text(&trigger["id"]).into(),
            output::text(&trigger["name"]).into(),
        ];
        if let Some(names) = names {
            row.push(name_of(names, &trigger["workflow_id"]).into());
        }
        row.extend([
            output::text(&trigger["kind"]["kind"]).into(),
            Cell::status(enabled(trigger)),
            summary(&trigger["kind"]).into(),
        ]);
        table.row(row);
    }
    if table.is_empty() {
        return "no triggers\n".to_owned();
    }
    table.render(ctx.style)
}
