//! `taskforge workflows list|show|diff`.

use serde_json::Value;

use super::triggers::triggers_table;
use super::{path, workflow_id};
use crate::client::Error;
use crate::output::{self, emit, emit_json, Cell, Fields, Table};
use crate::{Ctx, Done, WorkflowsCommand};

pub(crate) async fn run(ctx: &Ctx, command: WorkflowsCommand) -> Result<Done, Error> {
    match command {
        WorkflowsCommand::List => list(ctx).await,
        WorkflowsCommand::Show { workflow, version } => show(ctx, &workflow, version).await,
        WorkflowsCommand::Diff { workflow, from, to } => diff(ctx, &workflow, from, to).await,
    }
}

async fn versions(ctx: &Ctx, id: &str) -> Result<Vec<Value>, Error> {
    ctx.api
        .all(&format!("{}/versions", path("workflows", id)), &[], 100_000)
        .await
}

async fn list(ctx: &Ctx) -> Result<Done, Error> {
    let workflows = ctx.api.all("/api/v1/workflows", &[], 100_000).await?;
    if ctx.json {
        emit_json(&Value::Array(workflows));
        return Ok(Done::Ok);
    }
    let mut table = Table::new(&["WORKFLOW", "NAME", "ACTIVE", "LATEST", "CREATED"]);
    for workflow in &workflows {
        let id = output::text(&workflow["id"]);
        let latest = versions(ctx, &id)
            .await?
            .last()
            .map(|v| format!("v{}", output::text(&v["number"])))
            .unwrap_or_else(|| "none".to_owned());
        let active = if workflow["active"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        };
        table.row(vec![
            id.into(),
            output::text(&workflow["name"]).into(),
            Cell::status(active),
            latest.into(),
            output::time(&workflow["created_at"]).into(),
        ]);
    }
    if table.is_empty() {
        emit("no workflows\n");
    } else {
        emit(&table.render(ctx.style));
    }
    Ok(Done::Ok)
}

async fn show(ctx: &Ctx, workflow: &str, version: Option<u32>) -> Result<Done, Error> {
    let id = workflow_id(ctx, workflow).await?;
    if let Some(number) = version {
        let version = ctx
            .api
            .get(
                &format!("{}/versions/{number}", path("workflows", &id)),
                &[],
            )
            .await?;
        if ctx.json {
            emit_json(&version);
        } else {
            let mut fields = Fields::default();
            fields.add("version", format!("v{}", output::text(&version["number"])));
            fields.add("created", output::time(&version["created_at"]));
            fields.add("hash", output::text(&version["content_hash"]));
            let definition =
                serde_json::to_string_pretty(&version["definition"]).unwrap_or_default();
            fields.add("definition", definition);
            emit(&fields.render());
        }
        return Ok(Done::Ok);
    }
    let detail = ctx.api.get(&path("workflows", &id), &[]).await?;
    let versions = versions(ctx, &id).await?;
    let triggers = ctx
        .api
        .all("/api/v1/triggers", &[("workflow_id", id.clone())], 100_000)
        .await?;
    if ctx.json {
        emit_json(&serde_json::json!({
            "workflow": detail, "versions": versions, "triggers": triggers,
        }));
        return Ok(Done::Ok);
    }
    let mut fields = Fields::default();
    fields.add("workflow", output::text(&detail["name"]));
    fields.add("id", output::text(&detail["id"]));
    let active = if detail["active"].as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    };
    fields.add("active", ctx.style.status(active));
    fields.add("created", output::time(&detail["created_at"]));
    let mut out = fields.render();
    out.push('\n');
    if versions.is_empty() {
        out.push_str("no versions\n");
    } else {
        let mut table = Table::new(&["VERSION", "STEPS", "CREATED", "HASH"]);
        for version in &versions {
            let steps: Vec<&str> = version["definition"]["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["key"].as_str())
                .collect();
            let hash: String = output::text(&version["content_hash"])
                .chars()
                .take(12)
                .collect();
            table.row(vec![
                format!("v{}", output::text(&version["number"])).into(),
                steps.join(" > ").into(),
                output::time(&version["created_at"]).into(),
                hash.into(),
            ]);
        }
        out.push_str(&table.render(ctx.style));
    }
    out.push('\n');
    out.push_str(&triggers_table(ctx, &triggers, None));
    emit(&out);
    Ok(Done::Ok)
}

async fn diff(ctx: &Ctx, workflow: &str, from: u32, to: Option<u32>) -> Result<Done, Error> {
    let id = workflow_id(ctx, workflow).await?;
    let (number, query) = match to {
        Some(to) => (to, vec![("against", from.to_string())]),
        None => (from, Vec::new()),
    };
    let diff = ctx
        .api
        .get(
            &format!("{}/versions/{number}/diff", path("workflows", &id)),
            &query,
        )
        .await?;
    if ctx.json {
        emit_json(&diff);
        return Ok(Done::Ok);
    }
    emit(&render_diff(ctx, &diff));
    Ok(Done::Ok)
}

fn render_diff(ctx: &Ctx, diff: &Value) -> String {
    let style = ctx.style;
    let mut out = format!(
        "v{} -> v{}\n",
        output::text(&diff["from"]),
        output::text(&diff["to"])
    );
    let keys = |name: &str| -> Vec<String> {
        diff[name]
            .as_array()
            .into_iter()
            .flatten()
            .map(output::text)
            .collect()
    };
    let mut same = true;
    for key in keys("added") {
        same = false;
        out.push_str(&style.paint(&format!("+ {key}  (added)\n"), Some("32")));
    }
    for key in keys("removed") {
        same = false;
        out.push_str(&style.paint(&format!("- {key}  (removed)\n"), Some("31")));
    }
    for change in diff["changed"].as_array().into_iter().flatten() {
        same = false;
        out.push_str(&style.paint(
            &format!("~ {}  (changed)\n", output::text(&change["key"])),
            Some("33"),
        ));
        let (before, after) = (&change["before"], &change["after"]);
        let mut fields: Vec<&String> = before
            .as_object()
            .into_iter()
            .flatten()
            .chain(after.as_object().into_iter().flatten())
            .map(|(k, _)| k)
            .collect();
        fields.sort();
        fields.dedup();
        for field in fields {
            if before[field.as_str()] != after[field.as_str()] {
                out.push_str(&format!(
                    "    {field}: {} -> {}\n",
                    before[field.as_str()],
                    after[field.as_str()]
                ));
            }
        }
    }
    if diff["reordered"].as_bool() == Some(true) {
        same = false;
        out.push_str("  steps reordered\n");
    }
    if diff["settings_changed"].as_bool() == Some(true) {
        same = false;
        out.push_str("  workflow retry policy or timeout changed\n");
    }
    if same {
        out.push_str("  no differences\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::client::Api;
    use crate::output::Style;

    #[test]
    fn diffs_read_step_by_step() {
        let ctx = Ctx {
            api: Api::new("http://127.0.0.1:1", None).unwrap(),
            style: Style { color: false },
            json: false,
        };
        let diff = json!({
            "from": 1, "to": 2, "added": ["smoke-test"], "removed": [],
            "changed": [{ "key": "migrate",
                "before": { "key": "migrate", "handler": "migrate", "config": { "target_schema": 6 } },
                "after": { "key": "migrate", "handler": "migrate", "config": { "target_schema": 7 } } }],
            "reordered": false, "settings_changed": true,
        });
        assert_eq!(
            render_diff(&ctx, &diff),
            "v1 -> v2\n+ smoke-test  (added)\n~ migrate  (changed)\n    config: {\"target_schema\":6} -> {\"target_schema\":7}\n  workflow retry policy or timeout changed\n"
        );
    }
}
