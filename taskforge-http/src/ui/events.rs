//! The events page (every delivery, tick and request with its outcome) and
//! the event page (payload, kept headers, the runs it started, replay).

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::Value;
use taskforge_core::store::{OutcomeKind, Scope};
use taskforge_core::{
    Event, EventId, EventOutcome, EventQuery, EventSource, Order, StepExecutor, Store, TriggerId,
    WorkflowId,
};

use super::html::{badge, json_details, query, short, time, Esc};
use super::runs::{names, run_action, runs_table, set, visible_workflows};
use super::workflows::outcome_name;
use super::{answer, ActionForm, Page, Viewer};
use crate::api::workflows::reachable;
use crate::options::Ctx;
use crate::Problem;

const PAGE: usize = 50;

/// The events page's filters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsQuery {
    workflow: Option<String>,
    outcome: Option<String>,
    after: Option<String>,
}

const OUTCOMES: [&str; 6] = [
    "run_started",
    "filtered",
    "rejected",
    "skipped",
    "workflow_inactive",
    "trigger_disabled",
];

fn source_name(source: EventSource) -> &'static str {
    match source {
        EventSource::Webhook => "webhook",
        EventSource::Cron => "cron",
        _ => "manual",
    }
}

/// The outcome as a badge, with its reason.
fn outcome(base: &str, outcome: &EventOutcome) -> String {
    let mut out = badge(outcome_name(outcome));
    match outcome {
        EventOutcome::RunStarted { run_id } => {
            let _ = write!(
                out,
                " <a class=\"mono\" href=\"{}/runs/{run_id}\">{}</a>",
                Esc(base),
                Esc(short(&run_id.to_string()))
            );
        }
        EventOutcome::Filtered { reason } | EventOutcome::Skipped { reason } => {
            let _ = write!(out, " <span class=\"reason\">{}</span>", Esc(reason));
        }
        EventOutcome::Limited { key, run_id } => {
            let _ = write!(out, " <span class=\"reason mono\">key {}</span>", Esc(key));
            if let Some(run_id) = run_id {
                let _ = write!(
                    out,
                    " <a class=\"mono\" href=\"{}/runs/{run_id}\">{}</a> (cancelled)",
                    Esc(base),
                    Esc(short(&run_id.to_string()))
                );
            }
        }
        EventOutcome::Rejected { reason, status } => {
            let _ = write!(
                out,
                " <span class=\"reason\">HTTP {status}: {}</span>",
                Esc(reason)
            );
        }
        _ => {}
    }
    out
}

/// The most of a payload the events page shows inline.
const PREVIEW_BYTES: usize = 2_000;

/// An event's kept headers and the start of its payload, collapsed.
fn preview(event: &Event) -> String {
    let mut inner = String::new();
    if !event.metadata.is_empty() {
        inner.push_str("<table class=\"kv\"><tbody>");
        for (name, value) in &event.metadata {
            let _ = write!(
                inner,
                "<tr><th scope=\"row\" class=\"mono\">{}</th><td class=\"mono\">{}</td></tr>",
                Esc(name),
                Esc(value)
            );
        }
        inner.push_str("</tbody></table>");
    }
    let rejected = matches!(event.outcome, EventOutcome::Rejected { .. });
    if !rejected {
        let mut text = serde_json::to_string_pretty(&*event.payload).unwrap_or_default();
        if text.len() > PREVIEW_BYTES {
            let mut end = PREVIEW_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("\n… (the whole payload is on the event's page)");
        }
        let _ = write!(inner, "<pre class=\"json\">{}</pre>", Esc(&text));
    }
    if inner.is_empty() {
        return "<span class=\"muted\">none kept</span>".to_owned();
    }
    format!(
        "<details data-key=\"ev-{}\"><summary>{}{}</summary>{inner}</details>",
        event.id,
        match event.metadata.len() {
            0 => "no metadata".to_owned(),
            n => format!("metadata ({n})"),
        },
        if rejected {
            " · no body"
        } else {
            " · payload"
        },
    )
}

/// `GET events`: newest first, by workflow and outcome.
pub(crate) async fn list<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    viewer: Viewer,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    answer(&viewer, list_page(&ctx, &viewer, &q).await)
}

async fn list_page<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    viewer: &Viewer,
    q: &EventsQuery,
) -> Result<Page, Problem> {
    let base = &viewer.base;
    let workflows = visible_workflows(ctx, viewer).await?;
    let names = names(&workflows);
    let workflow_id = match set(&q.workflow).and_then(|t| t.parse::<WorkflowId>().ok()) {
        Some(id) => Some(reachable(ctx, &viewer.caller, Scope::Read, id).await?.id),
        None => None,
    };
    let kind: Option<OutcomeKind> =
        set(&q.outcome).and_then(|t| serde_json::from_value(Value::String(t.to_owned())).ok());
    let after = set(&q.after).and_then(|t| t.parse::<EventId>().ok());
    let query_of = |workflow_id: Option<WorkflowId>, after: Option<EventId>| EventQuery {
        workflow_id,
        outcome: kind,
        order: Order::NewestFirst,
        after,
        limit: PAGE,
        ..EventQuery::default()
    };
    let (events, next) = if workflow_id.is_some() || !viewer.caller.restricted() {
        let page = ctx
            .engine
            .list_events(&query_of(workflow_id, after))
            .await?;
        (page.items, page.next)
    } else {
        // A token limited to workflows: the newest of each, merged.
        let mut events = Vec::new();
        for workflow in &workflows {
            events.extend(
                ctx.engine
                    .list_events(&query_of(Some(workflow.id), None))
                    .await?
                    .items,
            );
        }
        events.sort_by_key(|e: &Event| std::cmp::Reverse((e.received_at, e.id)));
        events.truncate(PAGE);
        (events, None)
    };

    let mut head = String::from(
        "<form method=\"get\" class=\"filters\" role=\"search\" aria-label=\"Filter events\">\
         <label>Workflow <select name=\"workflow\"><option value=\"\">All</option>",
    );
    for w in &workflows {
        let _ = write!(
            head,
            "<option value=\"{}\"{}>{}</option>",
            w.id,
            if Some(w.id) == workflow_id {
                " selected"
            } else {
                ""
            },
            Esc(&w.name)
        );
    }
    head.push_str(
        "</select></label><label>Outcome <select name=\"outcome\"><option value=\"\">Any</option>",
    );
    let selected = set(&q.outcome);
    for name in OUTCOMES {
        let _ = write!(
            head,
            "<option value=\"{name}\"{}>{}</option>",
            if selected == Some(name) {
                " selected"
            } else {
                ""
            },
            name.replace('_', " ")
        );
    }
    let _ = write!(
        head,
        "</select></label><button type=\"submit\">Apply</button> <a href=\"{}/events\">Clear</a></form>",
        Esc(base)
    );

    let mut body = String::new();
    if events.is_empty() {
        body.push_str("<p class=\"empty\">No events.</p>");
    } else {
        let triggers: HashMap<TriggerId, String> = ctx
            .engine
            .store()
            .list_triggers(workflow_id)
            .await?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect();
        body.push_str(
            "<table class=\"events\"><thead><tr><th scope=\"col\">Received (UTC)</th><th scope=\"col\">Workflow</th>\
             <th scope=\"col\">Source</th><th scope=\"col\">Outcome</th><th scope=\"col\">Kept headers and payload</th></tr></thead><tbody>",
        );
        for event in &events {
            let source = match event.trigger_id.and_then(|id| triggers.get(&id)) {
                Some(name) => format!(
                    "{} <span class=\"muted\">· {}</span>",
                    source_name(event.source),
                    Esc(name)
                ),
                None => source_name(event.source).to_owned(),
            };
            let _ = write!(
                body,
                "<tr data-event=\"{id}\" data-outcome=\"{kind}\"><td><a href=\"{base}/events/{id}\">{at}</a></td>\
                 <td><a href=\"{base}/workflows/{wid}\">{workflow}</a></td><td>{source}</td><td>{outcome}</td><td>{extra}</td></tr>",
                id = event.id,
                kind = outcome_name(&event.outcome),
                base = Esc(base),
                at = time(event.received_at),
                wid = event.workflow_id,
                workflow = Esc(names.get(&event.workflow_id).map_or("?", String::as_str)),
                outcome = outcome(base, &event.outcome),
                extra = preview(event),
            );
        }
        body.push_str("</tbody></table>");
    }
    if let Some(next) = next {
        let _ = write!(
            body,
            "<p class=\"pager\"><a rel=\"next\" href=\"{}/events{}\">Older events →</a></p>",
            Esc(base),
            Esc(&query(&[
                ("workflow", workflow_id.map(|id| id.to_string())),
                ("outcome", selected.map(str::to_owned)),
                ("after", Some(next.to_string())),
            ]))
        );
    }
    Ok(Page {
        title: "Events".into(),
        nav: "events",
        head,
        tail: body,
        ..Page::default()
    })
}

/// `GET events/{id}`.
pub(crate) async fn show<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let page = match id.parse::<EventId>() {
        Ok(id) => event_page(&ctx, &viewer, id).await,
        Err(_) => Err(Problem::not_found(format!("no event {id:?}"))),
    };
    answer(&viewer, page)
}

async fn event_page<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    viewer: &Viewer,
    id: EventId,
) -> Result<Page, Problem> {
    let base = &viewer.base;
    let event = ctx.engine.event(id).await?;
    let workflow = reachable(ctx, &viewer.caller, Scope::Read, event.workflow_id).await?;
    let runs = ctx.engine.runs_of_event(id).await?;
    let trigger = match event.trigger_id {
        Some(trigger_id) => ctx.engine.trigger(trigger_id).await.ok(),
        None => None,
    };
    let mut head = String::new();
    if viewer.can_run()
        && viewer.caller.token.reaches(&workflow.name)
        && event.outcome.kind() != OutcomeKind::Rejected
    {
        let _ = write!(
            head,
            "<div class=\"actions\">{}</div>",
            viewer.button(
                &format!("{base}/events/{}/replay", event.id),
                "Replay event",
                "action",
                "replay-event"
            )
        );
    }
    head.push_str("<dl class=\"summary\">");
    let mut item = |term: &str, value: String| {
        let _ = write!(head, "<div><dt>{}</dt><dd>{}</dd></div>", Esc(term), value);
    };
    item("Outcome", outcome(base, &event.outcome));
    item(
        "Workflow",
        format!(
            "<a href=\"{}/workflows/{}\">{}</a>",
            Esc(base),
            workflow.id,
            Esc(&workflow.name)
        ),
    );
    item("Source", source_name(event.source).to_owned());
    item(
        "Trigger",
        match (&trigger, event.trigger_id) {
            (Some(t), _) => format!(
                "<a href=\"{}/workflows/{}#triggers\">{}</a>",
                Esc(base),
                t.workflow_id,
                Esc(&t.name)
            ),
            (None, Some(tid)) => format!("<span class=\"mono\">{tid}</span> (deleted)"),
            (None, None) => "<span class=\"muted\">none</span>".to_owned(),
        },
    );
    item("Received", time(event.received_at));
    if let Some(key) = &event.dedup_key {
        item(
            "Dedup key",
            format!("<span class=\"mono\">{}</span>", Esc(key)),
        );
    }
    item("Id", format!("<span class=\"mono\">{}</span>", event.id));
    head.push_str("</dl>");

    head.push_str("<section aria-labelledby=\"headers-h\"><h2 id=\"headers-h\">Kept headers and metadata</h2>");
    if event.metadata.is_empty() {
        head.push_str("<p class=\"empty\">None kept.</p>");
    } else {
        head.push_str("<table class=\"kv\"><tbody>");
        for (name, value) in &event.metadata {
            let _ = write!(
                head,
                "<tr><th scope=\"row\" class=\"mono\">{}</th><td class=\"mono\">{}</td></tr>",
                Esc(name),
                Esc(value)
            );
        }
        head.push_str("</tbody></table>");
    }
    head.push_str(
        "</section><section aria-labelledby=\"payload-h\"><h2 id=\"payload-h\">Payload</h2>",
    );
    if matches!(event.outcome, EventOutcome::Rejected { .. }) {
        head.push_str("<p class=\"muted\">A refused delivery is kept without its body.</p>");
    } else {
        head.push_str(&json_details("payload", "Payload", &event.payload, true));
    }
    head.push_str(
        "</section><section aria-labelledby=\"runs-h\"><h2 id=\"runs-h\">Runs it started</h2>",
    );
    head.push_str(&runs_table(base, &runs, &HashMap::new(), false, None));
    head.push_str("</section>");
    Ok(Page {
        title: format!("Event {}", short(&event.id.to_string())),
        nav: "events",
        head,
        ..Page::default()
    })
}

/// `POST events/{id}/replay`: a new run from the event's payload, then
/// shows it.
pub(crate) async fn replay<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let action = async {
        let id: EventId = id
            .parse()
            .map_err(|_| Problem::not_found(format!("no event {id:?}")))?;
        let event = ctx.engine.event(id).await?;
        reachable(&ctx, &viewer.caller, Scope::Run, event.workflow_id).await?;
        ctx.refuse_if_draining()?;
        let who = format!("token:{}", viewer.caller.token.id);
        let run = ctx.engine.replay_event_as(id, Some(&who)).await?;
        Ok(format!("{}/runs/{}", viewer.base, run.id))
    };
    run_action(&viewer, form, action).await
}
