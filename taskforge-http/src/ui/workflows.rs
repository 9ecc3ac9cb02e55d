//! The workflows page (each with its latest version and recent outcomes)
//! and the workflow page (triggers, versions and their diff, runs).

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;
use taskforge_core::store::Scope;
use taskforge_core::{
    EventQuery, Order, RunQuery, StepExecutor, Store, Trigger, TriggerKind, WorkflowId,
};

use super::diff;
use super::html::{badge, json_block, json_details, query, short, time, Esc};
use super::runs::{runs_table, set, visible_workflows};
use super::{answer, Page, Viewer};
use crate::api::triggers::TriggerView;
use crate::api::workflows::reachable;
use crate::options::Ctx;
use crate::Problem;

/// How many recent outcomes the workflows page shows per workflow.
const RECENT: usize = 12;

/// `GET /`: every workflow the token reaches.
pub(crate) async fn list<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    viewer: Viewer,
) -> Response {
    answer(&viewer, list_page(&ctx, &viewer).await)
}

async fn list_page<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    viewer: &Viewer,
) -> Result<Page, Problem> {
    let base = &viewer.base;
    let store = ctx.engine.store();
    let workflows = visible_workflows(ctx, viewer).await?;
    let mut live = String::new();
    if workflows.is_empty() {
        live.push_str("<p class=\"empty\">No workflows yet.</p>");
    } else {
        live.push_str(
            "<table class=\"workflows\"><thead><tr><th scope=\"col\">Workflow</th><th scope=\"col\">State</th>\
             <th scope=\"col\">Latest version</th><th scope=\"col\">Triggers</th>\
             <th scope=\"col\">Recent runs <span class=\"muted\">(newest first)</span></th><th scope=\"col\">Last run</th></tr></thead><tbody>",
        );
    }
    for workflow in &workflows {
        let latest = store.latest_version(workflow.id).await?;
        let triggers = store.list_triggers(Some(workflow.id)).await?;
        let recent = ctx
            .engine
            .list_runs(&RunQuery {
                workflow_id: Some(workflow.id),
                order: Order::NewestFirst,
                limit: RECENT,
                ..RunQuery::default()
            })
            .await?
            .items;
        let _ = write!(
            live,
            "<tr data-workflow=\"{name}\"><th scope=\"row\"><a href=\"{base}/workflows/{id}\">{name}</a></th><td>{state}</td><td>{latest}</td><td>{triggers}</td><td><span class=\"dots\">",
            name = Esc(&workflow.name),
            base = Esc(base),
            id = workflow.id,
            state = badge(if workflow.active { "active" } else { "inactive" }),
            latest = latest.as_ref().map_or_else(
                || "<span class=\"muted\">none</span>".to_owned(),
                |v| format!("v{} <span class=\"muted\">{}</span>", v.number, time(v.created_at))
            ),
            triggers = triggers.len(),
        );
        for run in &recent {
            let _ = write!(
                live,
                "<a class=\"dot s-{status}\" href=\"{base}/runs/{id}\" title=\"{status} · {at}\"><span class=\"sr\">{status} run {short}</span></a>",
                status = run.status.as_str(),
                base = Esc(base),
                id = run.id,
                at = Esc(&run.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
                short = Esc(short(&run.id.to_string())),
            );
        }
        if recent.is_empty() {
            live.push_str("<span class=\"muted\">no runs</span>");
        }
        let _ = write!(
            live,
            "</span></td><td>{}</td></tr>",
            recent.first().map_or_else(
                || "<span class=\"muted\">—</span>".to_owned(),
                |run| time(run.created_at)
            )
        );
    }
    if !workflows.is_empty() {
        live.push_str("</tbody></table>");
    }
    Ok(Page {
        title: "Workflows".into(),
        nav: "workflows",
        live: Some(live),
        stream: (!viewer.caller.restricted()).then(|| format!("{base}/stream")),
        refresh: Some(base.clone()),
        ..Page::default()
    })
}

/// Which versions to compare.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET workflows/{id}`.
pub(crate) async fn show<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    viewer: Viewer,
    Path(id): Path<String>,
    q: Result<Query<DiffQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let page = match id.parse::<WorkflowId>() {
        Ok(id) => workflow_page(&ctx, &viewer, id, &q).await,
        Err(_) => Err(Problem::not_found(format!("no workflow {id:?}"))),
    };
    answer(&viewer, page)
}

async fn workflow_page<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    viewer: &Viewer,
    id: WorkflowId,
    q: &DiffQuery,
) -> Result<Page, Problem> {
    let base = &viewer.base;
    let workflow = reachable(ctx, &viewer.caller, Scope::Read, id).await?;
    let store = ctx.engine.store();
    let versions = ctx.engine.versions(id).await?;
    let triggers = ctx.engine.triggers(id).await?;
    let now = Utc::now();

    let mut head = String::new();
    let _ = write!(
        head,
        "<p class=\"lede\">{} <span class=\"mono muted\">{}</span> · created {}</p>\
         <nav class=\"toc\" aria-label=\"On this page\"><a href=\"#triggers\">Triggers</a><a href=\"#versions\">Versions</a>\
         <a href=\"#diff\">Compare versions</a><a href=\"#runs\">Runs</a></nav>",
        badge(if workflow.active { "active" } else { "inactive" }),
        workflow.id,
        time(workflow.created_at)
    );

    // Triggers.
    head.push_str("<section id=\"triggers\" aria-labelledby=\"triggers-h\"><h2 id=\"triggers-h\">Triggers</h2>");
    if triggers.is_empty() {
        head.push_str("<p class=\"empty\">No triggers: runs start by hand only.</p>");
    } else {
        head.push_str(
            "<table class=\"triggers\"><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Kind</th>\
             <th scope=\"col\">State</th><th scope=\"col\">Last fired</th><th scope=\"col\">Next slots (UTC)</th></tr></thead><tbody>",
        );
        for trigger in &triggers {
            head.push_str(&trigger_row(ctx, base, trigger, now).await?);
        }
        head.push_str("</tbody></table>");
    }
    head.push_str("</section>");

    // Versions, newest first; the latest open.
    head.push_str("<section id=\"versions\" aria-labelledby=\"versions-h\"><h2 id=\"versions-h\">Versions</h2>");
    if versions.is_empty() {
        head.push_str("<p class=\"empty\">No version published yet.</p>");
    }
    let latest = versions.iter().map(|v| v.number).max();
    for version in versions.iter().rev() {
        let _ = write!(
            head,
            "<details id=\"v{n}\" class=\"version\"{open}><summary><strong>v{n}</strong> · published {at} · \
             {steps} step{plural} · <span class=\"mono muted\" title=\"content hash\">{hash}</span>{latest}</summary>{body}</details>",
            n = version.number,
            open = if Some(version.number) == latest { " open" } else { "" },
            at = time(version.created_at),
            steps = version.definition.steps.len(),
            plural = if version.definition.steps.len() == 1 { "" } else { "s" },
            hash = Esc(version.content_hash.get(..12).unwrap_or(&version.content_hash)),
            latest = if Some(version.number) == latest { " <span class=\"tag\">latest</span>" } else { "" },
            body = json_block(&version.definition),
        );
    }
    head.push_str("</section>");

    // The diff of two versions.
    head.push_str(
        "<section id=\"diff\" aria-labelledby=\"diff-h\"><h2 id=\"diff-h\">Compare versions</h2>",
    );
    if versions.len() < 2 {
        head.push_str("<p class=\"empty\">One version only: nothing to compare.</p>");
    } else {
        let number =
            |text: Option<&str>| text.and_then(|t| t.trim_start_matches('v').parse::<u32>().ok());
        let newest = latest.unwrap_or(1);
        let to = number(set(&q.to)).unwrap_or(newest);
        let from = number(set(&q.from)).unwrap_or(to.saturating_sub(1).max(1));
        let options = |selected: u32| {
            let mut out = String::new();
            for v in &versions {
                let _ = write!(
                    out,
                    "<option value=\"{n}\"{s}>v{n}</option>",
                    n = v.number,
                    s = if v.number == selected {
                        " selected"
                    } else {
                        ""
                    }
                );
            }
            out
        };
        let _ = write!(
            head,
            "<form method=\"get\" action=\"{base}/workflows/{id}#diff\" class=\"filters\">\
             <label>From <select name=\"from\" id=\"diff-from\">{}</select></label>\
             <label>to <select name=\"to\" id=\"diff-to\">{}</select></label>\
             <button type=\"submit\">Compare</button></form>",
            options(from),
            options(to),
            base = Esc(base),
            id = workflow.id,
        );
        let find = |n: u32| versions.iter().find(|v| v.number == n);
        match (find(from), find(to)) {
            (Some(a), Some(b)) => {
                let text = |v: &taskforge_core::WorkflowVersion| {
                    serde_json::to_string_pretty(&v.definition).unwrap_or_default()
                };
                let (old, new) = (text(a), text(b));
                let lines = diff::diff(&old, &new);
                let changed = lines
                    .iter()
                    .filter(|l| !matches!(l, diff::Line::Same(_)))
                    .count();
                let _ = write!(
                    head,
                    "<p class=\"muted\">v{from} → v{to}: {changed} changed line{}.</p>",
                    if changed == 1 { "" } else { "s" }
                );
                head.push_str(&diff::render(&lines));
            }
            _ => head.push_str("<p class=\"note\">Pick two published versions.</p>"),
        }
    }
    head.push_str("</section>");

    // Its runs: live.
    head.push_str(
        "<section id=\"runs\" aria-labelledby=\"runs-h\"><h2 id=\"runs-h\">Recent runs</h2>",
    );
    let runs = ctx
        .engine
        .list_runs(&RunQuery {
            workflow_id: Some(id),
            order: Order::NewestFirst,
            limit: 20,
            ..RunQuery::default()
        })
        .await?
        .items;
    let mut live = runs_table(base, &runs, &HashMap::new(), false, None);
    let _ = write!(
        live,
        "<p class=\"pager\"><a href=\"{}/runs{}\">All runs of {} →</a></p>",
        Esc(base),
        Esc(&query(&[("workflow", Some(id.to_string()))])),
        Esc(&workflow.name)
    );
    let _ = store;
    Ok(Page {
        title: workflow.name.clone(),
        nav: "workflows",
        head,
        live: Some(live),
        tail: "</section>".into(),
        stream: Some(format!(
            "{base}/stream{}",
            query(&[("workflow_id", Some(id.to_string()))])
        )),
        refresh: Some(format!(
            "{base}/workflows/{id}{}",
            query(&[
                ("from", set(&q.from).map(str::to_owned)),
                ("to", set(&q.to).map(str::to_owned))
            ])
        )),
    })
}

/// One trigger: name, kind and configuration (secrets redacted as the API
/// redacts them), state, the last event it received, its next cron slots.
async fn trigger_row<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    base: &str,
    trigger: &Trigger,
    now: chrono::DateTime<Utc>,
) -> Result<String, Problem> {
    let mut config = serde_json::to_value(TriggerView::of(trigger)).unwrap_or(Value::Null);
    let config = config
        .get_mut("kind")
        .map(Value::take)
        .unwrap_or(Value::Null);
    let (kind, summary) = match &trigger.kind {
        TriggerKind::Webhook(webhook) => ("webhook", format!("POST hooks/{}", webhook.path)),
        TriggerKind::Cron(cron) => ("cron", format!("{} ({})", cron.expression, cron.timezone)),
        _ => ("manual", String::new()),
    };
    let last = ctx
        .engine
        .list_events(&EventQuery {
            trigger_id: Some(trigger.id),
            order: Order::NewestFirst,
            limit: 1,
            ..EventQuery::default()
        })
        .await?
        .items
        .into_iter()
        .next();
    let last = last.map_or_else(
        || "<span class=\"muted\">never</span>".to_owned(),
        |event| {
            format!(
                "<a href=\"{}/events/{}\">{}</a> {}",
                Esc(base),
                event.id,
                time(event.received_at),
                badge(outcome_name(&event.outcome))
            )
        },
    );
    let next = match &trigger.kind {
        TriggerKind::Cron(cron) => match cron.schedule() {
            Ok(schedule) => {
                let mut slots = Vec::new();
                let mut at = now;
                while slots.len() < 3 {
                    match schedule.next_after(at) {
                        Some(slot) => {
                            slots.push(time(slot));
                            at = slot;
                        }
                        None => break,
                    }
                }
                if slots.is_empty() {
                    "<span class=\"muted\">none</span>".to_owned()
                } else {
                    slots.join("<br>")
                }
            }
            Err(error) => format!("<span class=\"note\">{}</span>", Esc(&error.to_string())),
        },
        _ => "<span class=\"muted\">—</span>".to_owned(),
    };
    Ok(format!(
        "<tr><th scope=\"row\">{name}</th><td><strong>{kind}</strong> <span class=\"mono\">{summary}</span>{config}</td>\
         <td>{state}</td><td>{last}</td><td>{next}</td></tr>",
        name = Esc(&trigger.name),
        kind = kind,
        summary = Esc(&summary),
        config = json_details(&format!("trigger-{}", trigger.id), "Configuration", &config, false),
        state = badge(if trigger.enabled { "enabled" } else { "disabled" }),
    ))
}

/// The snake_case name of an event outcome's kind.
pub(crate) fn outcome_name(outcome: &taskforge_core::EventOutcome) -> &'static str {
    use taskforge_core::store::OutcomeKind;
    match outcome.kind() {
        OutcomeKind::RunStarted => "run_started",
        OutcomeKind::Filtered => "filtered",
        OutcomeKind::WorkflowInactive => "workflow_inactive",
        OutcomeKind::TriggerDisabled => "trigger_disabled",
        OutcomeKind::Skipped => "skipped",
        OutcomeKind::Rejected => "rejected",
        OutcomeKind::Limited => "limited",
        _ => "other",
    }
}
