//! The runs page (filtered, live) and the run page (summary, input and
//! output, the timeline of every attempt, where it came from, actions).

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use taskforge_core::artifact::Artifact;
use taskforge_core::store::LogQuery;
use taskforge_core::store::{OutcomeKind, Scope};
use taskforge_core::{
    LogLine, Order, RunId, RunOptions, RunQuery, RunStatus, StepExecutor, StepRun, StepRunId,
    StepStatus, Store, Workflow, WorkflowId, WorkflowRun,
};

use super::html::{badge, duration, json_details, millis, query, short, time, time_or_dash, Esc};
use super::{answer, error_page, see_other, ActionForm, Page, Viewer};
use crate::api::workflows::reachable;
use crate::options::Ctx;
use crate::Problem;

/// Runs per page.
const PAGE: usize = 50;

/// The runs page's filters, as the form sends them (empty means unset).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunsQuery {
    workflow: Option<String>,
    status: Option<String>,
    from: Option<String>,
    until: Option<String>,
    after: Option<String>,
}

/// A form value, if it is not empty.
pub(crate) fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A time from a `datetime-local` field (read as UTC) or RFC 3339.
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
                .map(|t| t.and_utc())
        })
}

/// A status from its snake_case name.
fn parse_status(text: &str) -> Option<RunStatus> {
    serde_json::from_value(Value::String(text.to_owned())).ok()
}

/// The workflows the viewer's token reaches, by name.
pub(crate) async fn visible_workflows<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    viewer: &Viewer,
) -> Result<Vec<Workflow>, Problem> {
    let mut workflows: Vec<Workflow> = ctx
        .engine
        .store()
        .list_workflows()
        .await?
        .into_iter()
        .filter(|w| viewer.caller.token.reaches(&w.name))
        .collect();
    workflows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(workflows)
}

/// Workflow names by id.
pub(crate) fn names(workflows: &[Workflow]) -> HashMap<WorkflowId, String> {
    workflows.iter().map(|w| (w.id, w.name.clone())).collect()
}

/// A page of runs as `query` says, and the cursor of the next. A token
/// limited to workflows, asking for no one workflow, gets the newest runs
/// of each workflow it reaches, merged (one page, no cursor).
async fn fetch_runs<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    viewer: &Viewer,
    workflows: &[Workflow],
    query: RunQuery,
) -> Result<(Vec<WorkflowRun>, Option<String>), Problem> {
    if query.workflow_id.is_some() || !viewer.caller.restricted() {
        let page = ctx.engine.list_runs(&query).await?;
        return Ok((page.items, page.next.map(|id| id.to_string())));
    }
    let mut runs = Vec::new();
    for workflow in workflows {
        let query = RunQuery {
            workflow_id: Some(workflow.id),
            after: None,
            ..query.clone()
        };
        runs.extend(ctx.engine.list_runs(&query).await?.items);
    }
    runs.sort_by_key(|run| std::cmp::Reverse((run.created_at, run.id)));
    runs.truncate(query.limit);
    Ok((runs, None))
}

/// `GET runs`: runs, newest first, filtered by workflow, status and time.
pub(crate) async fn list<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    viewer: Viewer,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    answer(&viewer, list_page(&ctx, &viewer, &q).await)
}

async fn list_page<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    viewer: &Viewer,
    q: &RunsQuery,
) -> Result<Page, Problem> {
    let base = &viewer.base;
    let mut notes: Vec<String> = Vec::new();
    let workflows = visible_workflows(ctx, viewer).await?;
    let workflow_id = match set(&q.workflow) {
        Some(text) => match text.parse::<WorkflowId>() {
            Ok(id) => Some(reachable(ctx, &viewer.caller, Scope::Read, id).await?.id),
            Err(_) => {
                notes.push(format!("No workflow {text:?}: showing all."));
                None
            }
        },
        None => None,
    };
    let status = set(&q.status).and_then(|text| {
        let status = parse_status(text);
        if status.is_none() {
            notes.push(format!("No status {text:?}: showing all."));
        }
        status
    });
    let mut time = |value: &Option<String>, what: &str| {
        set(value).and_then(|text| {
            let at = parse_time(text);
            if at.is_none() {
                notes.push(format!("{what} {text:?} is not a time: ignored."));
            }
            at
        })
    };
    let created_from = time(&q.from, "From");
    let created_until = time(&q.until, "Until");
    let after = set(&q.after).and_then(|text| text.parse::<RunId>().ok());
    let run_query = RunQuery {
        workflow_id,
        status,
        event_id: None,
        concurrency_key: None,
        created_from,
        created_until,
        order: Order::NewestFirst,
        after,
        limit: PAGE,
    };
    let (runs, next) = fetch_runs(ctx, viewer, &workflows, run_query).await?;

    let mut head = String::new();
    head.push_str(
        "<form method=\"get\" class=\"filters\" role=\"search\" aria-label=\"Filter runs\">",
    );
    head.push_str("<label>Workflow <select name=\"workflow\" id=\"filter-workflow\"><option value=\"\">All</option>");
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
    head.push_str("</select></label><label>Status <select name=\"status\" id=\"filter-status\"><option value=\"\">Any</option>");
    for s in RunStatus::ALL {
        let _ = write!(
            head,
            "<option value=\"{0}\"{1}>{2}</option>",
            s.as_str(),
            if Some(s) == status { " selected" } else { "" },
            s.as_str().replace('_', " ")
        );
    }
    let field = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default()
    };
    let _ = write!(
        head,
        "</select></label>\
         <label>Created from <input type=\"datetime-local\" name=\"from\" value=\"{}\"></label>\
         <label>until <input type=\"datetime-local\" name=\"until\" value=\"{}\"></label>\
         <span class=\"muted\">UTC</span>\
         <button type=\"submit\">Apply</button> <a href=\"{}/runs\">Clear</a></form>",
        Esc(&field(created_from)),
        Esc(&field(created_until)),
        Esc(base)
    );
    for note in &notes {
        let _ = write!(head, "<p class=\"note\">{}</p>", Esc(note));
    }

    let filters = |after: Option<String>| {
        query(&[
            ("workflow", workflow_id.map(|id| id.to_string())),
            ("status", status.map(|s| s.as_str().to_owned())),
            ("from", created_from.map(|t| t.to_rfc3339())),
            ("until", created_until.map(|t| t.to_rfc3339())),
            ("after", after),
        ])
    };
    let mut live = runs_table(base, &runs, &names(&workflows), true, None);
    if let Some(next) = next {
        let _ = write!(
            live,
            "<p class=\"pager\"><a href=\"{}/runs{}\" rel=\"next\">Older runs →</a></p>",
            Esc(base),
            Esc(&filters(Some(next)))
        );
    }
    // A token limited to workflows may only stream one workflow's runs.
    let stream = (workflow_id.is_some() || !viewer.caller.restricted()).then(|| {
        format!(
            "{base}/stream{}",
            query(&[("workflow_id", workflow_id.map(|id| id.to_string()))])
        )
    });
    Ok(Page {
        title: "Runs".into(),
        nav: "runs",
        head,
        live: Some(live),
        refresh: Some(format!(
            "{base}/runs{}",
            filters(after.map(|id| id.to_string()))
        )),
        stream,
        ..Page::default()
    })
}

/// How long a run took, or has been going.
fn run_duration(run: &WorkflowRun, now: DateTime<Utc>) -> String {
    match (run.started_at, run.finished_at) {
        (Some(start), Some(end)) => duration(millis(start, end)),
        (Some(start), None) => format!("{} …", duration(millis(start, now))),
        _ => "<span class=\"muted\">—</span>".to_owned(),
    }
}

/// A table of runs; `current` is marked.
pub(crate) fn runs_table(
    base: &str,
    runs: &[WorkflowRun],
    names: &HashMap<WorkflowId, String>,
    show_workflow: bool,
    current: Option<RunId>,
) -> String {
    if runs.is_empty() {
        return "<p class=\"empty\">No runs.</p>".to_owned();
    }
    let now = Utc::now();
    let mut out = String::from("<table class=\"runs\"><thead><tr><th scope=\"col\">Run</th>");
    if show_workflow {
        out.push_str("<th scope=\"col\">Workflow</th>");
    }
    out.push_str(
        "<th scope=\"col\">Version</th><th scope=\"col\">Status</th>\
         <th scope=\"col\">Created (UTC)</th><th scope=\"col\">Duration</th></tr></thead><tbody>",
    );
    for run in runs {
        let is_current = current == Some(run.id);
        let _ = write!(
            out,
            "<tr data-run=\"{id}\" data-status=\"{status}\"{cur}><td><a class=\"mono\" href=\"{base}/runs/{id}\" title=\"{id}\">{short}</a>{replay}{here}</td>",
            id = run.id,
            status = run.status.as_str(),
            cur = if is_current { " class=\"current\"" } else { "" },
            base = Esc(base),
            short = Esc(short(&run.id.to_string())),
            replay = if run.replay_of.is_some() {
                " <span class=\"tag\">replay</span>"
            } else {
                ""
            },
            here = if is_current {
                " <span class=\"tag\">this run</span>"
            } else {
                ""
            },
        );
        if show_workflow {
            let name = names.get(&run.workflow_id).map_or("?", String::as_str);
            let _ = write!(
                out,
                "<td><a href=\"{}/workflows/{}\">{}</a></td>",
                Esc(base),
                run.workflow_id,
                Esc(name)
            );
        }
        let _ = write!(
            out,
            "<td>v{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
            run.version,
            badge(run.status.as_str()),
            if run.cancel_requested && !run.status.is_terminal() {
                " <span class=\"tag\">cancelling</span>"
            } else {
                ""
            },
            time(run.created_at),
            run_duration(run, now)
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn parse_run_id(text: &str) -> Result<RunId, Problem> {
    text.parse()
        .map_err(|_| Problem::not_found(format!("no run {text:?}")))
}

/// `GET runs/{id}`.
pub(crate) async fn show<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let page = match parse_run_id(&id) {
        Ok(id) => run_page(&ctx, &viewer, id).await,
        Err(problem) => Err(problem),
    };
    answer(&viewer, page)
}

async fn run_page<S: Store, X: StepExecutor>(
    ctx: &Ctx<S, X>,
    viewer: &Viewer,
    id: RunId,
) -> Result<Page, Problem> {
    let base = &viewer.base;
    let details = ctx.engine.run(id).await?;
    let run = &details.run;
    let workflow = reachable(ctx, &viewer.caller, Scope::Read, run.workflow_id).await?;
    let store = ctx.engine.store();
    let version = store.get_version(run.version_id).await.ok();
    let latest = store
        .latest_version(run.workflow_id)
        .await?
        .map(|v| v.number);
    let event = match run.event_id {
        Some(event_id) => ctx.engine.event(event_id).await.ok(),
        None => None,
    };
    let family = match run.event_id {
        Some(event_id) => ctx.engine.runs_of_event(event_id).await?,
        None => Vec::new(),
    };
    let trigger = match event.as_ref().and_then(|e| e.trigger_id) {
        Some(trigger_id) => ctx.engine.trigger(trigger_id).await.ok(),
        None => None,
    };
    let can_run = viewer.can_run() && viewer.caller.token.reaches(&workflow.name);
    let now = Utc::now();

    let mut live = String::new();
    // Status and actions.
    let _ = write!(
        live,
        "<div class=\"run-head\"><span id=\"run-status\" data-status=\"{}\">{}</span>",
        run.status.as_str(),
        badge(run.status.as_str())
    );
    if run.cancel_requested && !run.status.is_terminal() {
        live.push_str(" <span class=\"tag\">cancel requested</span>");
    }
    if can_run {
        live.push_str("<div class=\"actions\">");
        if !run.status.is_terminal() && !run.cancel_requested {
            live.push_str(&viewer.button(
                &format!("{base}/runs/{}/cancel", run.id),
                "Cancel run",
                "danger action",
                "cancel-run",
            ));
        }
        if run.status.is_terminal() {
            let label = match latest {
                Some(n) => format!("Retry on v{n}"),
                None => "Retry".to_owned(),
            };
            live.push_str(&viewer.button(
                &format!("{base}/runs/{}/retry", run.id),
                &label,
                "action",
                "retry-run",
            ));
        }
        if matches!(
            run.status,
            RunStatus::Failed | RunStatus::TimedOut | RunStatus::Cancelled
        ) {
            live.push_str(&viewer.button(
                &format!("{base}/runs/{}/resume", run.id),
                &format!("Resume on v{} from the failed step", run.version),
                "action",
                "resume-run",
            ));
        }
        if let Some(event) = event
            .as_ref()
            .filter(|e| e.outcome.kind() != OutcomeKind::Rejected)
        {
            live.push_str(&viewer.button(
                &format!("{base}/events/{}/replay", event.id),
                "Replay event",
                "action",
                "replay-event",
            ));
        }
        live.push_str("</div>");
    }
    live.push_str("</div>");

    // Summary.
    live.push_str("<dl class=\"summary\">");
    let mut item = |term: &str, value: String| {
        let _ = write!(live, "<div><dt>{}</dt><dd>{}</dd></div>", Esc(term), value);
    };
    item(
        "Workflow",
        format!(
            "<a href=\"{}/workflows/{}\">{}</a>",
            Esc(base),
            workflow.id,
            Esc(&workflow.name)
        ),
    );
    item(
        "Pinned version",
        format!(
            "<a href=\"{}/workflows/{}#v{n}\">v{n}</a>{}",
            Esc(base),
            workflow.id,
            if latest.is_some_and(|l| l != run.version) {
                " <span class=\"muted\">(not the latest)</span>"
            } else {
                ""
            },
            n = run.version
        ),
    );
    item("Created", time(run.created_at));
    item("Started", time_or_dash(run.started_at));
    item("Finished", time_or_dash(run.finished_at));
    item("Duration", run_duration(run, now));
    if let Some(deadline) = run.deadline {
        item("Deadline", time(deadline));
    }
    if run.status == RunStatus::Waiting {
        item(
            "Waiting until",
            run.wake_at.map_or_else(
                || "a signal".to_owned(),
                |at| format!("{} or a signal", time(at)),
            ),
        );
    }
    if let Some(lease) = &run.lease {
        item(
            "Worker",
            format!(
                "<span class=\"mono\">{}</span> until {}",
                Esc(&lease.owner),
                time(lease.expires_at)
            ),
        );
    }
    if let Some(original) = run.replay_of {
        item(
            "Replay of",
            format!(
                "<a class=\"mono\" href=\"{}/runs/{original}\">{}</a>",
                Esc(base),
                Esc(short(&original.to_string()))
            ),
        );
    }
    if let Some(original) = run.resumed_from {
        item(
            "Resumes",
            format!(
                "<a class=\"mono\" href=\"{}/runs/{original}\">{}</a>",
                Esc(base),
                Esc(short(&original.to_string()))
            ),
        );
    }
    item("Id", format!("<span class=\"mono\">{}</span>", run.id));
    live.push_str("</dl>");

    if let Some(error) = &run.error {
        let _ = write!(
            live,
            "<div class=\"error-box\" role=\"note\"><strong>{}</strong> {}</div>",
            Esc(&error
                .step
                .as_ref()
                .map_or_else(|| "Error:".to_owned(), |s| format!("Step {s}:"))),
            Esc(&error.message)
        );
        if let Some(detail) = &error.detail {
            live.push_str(&json_details("error-detail", "Error detail", detail, false));
        }
    }
    live.push_str("<div class=\"io\">");
    live.push_str(&json_details("input", "Input", &run.input, true));
    if let Some(output) = &run.output {
        live.push_str(&json_details("output", "Output", output, true));
    }
    if !run.signals.is_empty() {
        let signals = serde_json::to_value(&run.signals).unwrap_or(Value::Null);
        let title = format!("Signals ({})", run.signals.len());
        live.push_str(&json_details("signals", &title, &signals, false));
    }
    live.push_str("</div>");

    live.push_str("<section aria-labelledby=\"timeline-h\"><h2 id=\"timeline-h\">Timeline</h2>");
    let keys: Vec<String> = version
        .as_ref()
        .map(|v| v.definition.steps.iter().map(|s| s.key.clone()).collect())
        .unwrap_or_default();
    let mut logs = HashMap::new();
    for attempt in &details.steps {
        let mut query = LogQuery::new(run.id, attempt.id);
        query.limit = LOG_LINES_SHOWN;
        let page = ctx.engine.step_logs(&query).await?;
        if !page.items.is_empty() {
            logs.insert(attempt.id, (page.items, page.next.is_some()));
        }
    }
    live.push_str(&timeline(run, &details.steps, &keys, &logs, now));
    live.push_str("</section>");
    let artifacts = ctx.engine.run_artifacts(run.id).await?;
    if !artifacts.is_empty() {
        live.push_str(&artifact_table(base, run.id, &artifacts));
    }

    // Where it came from.
    let mut tail =
        String::from("<section aria-labelledby=\"origin-h\"><h2 id=\"origin-h\">Origin</h2>");
    match &event {
        Some(event) => {
            let _ = write!(
                tail,
                "<p>Started by a <strong>{}</strong> event, <a class=\"mono\" href=\"{}/events/{}\">{}</a>, received {}{}{}.</p>",
                Esc(source_name(event)),
                Esc(base),
                event.id,
                Esc(short(&event.id.to_string())),
                time(event.received_at),
                trigger.as_ref().map_or_else(String::new, |t| format!(
                    " by trigger <a href=\"{}/workflows/{}#triggers\">{}</a>",
                    Esc(base),
                    t.workflow_id,
                    Esc(&t.name)
                )),
                event.metadata.get("requested_by").map_or_else(String::new, |who| format!(
                    ", requested by <span class=\"mono\">{}</span>",
                    Esc(who)
                )),
            );
            if family.len() > 1 {
                tail.push_str("<h3>Runs of this event</h3>");
                tail.push_str(&runs_table(
                    base,
                    &family,
                    &HashMap::new(),
                    false,
                    Some(run.id),
                ));
            }
        }
        None => tail.push_str("<p class=\"muted\">No event is recorded for this run.</p>"),
    }
    tail.push_str("</section>");

    let title = format!("Run {} · {}", short(&run.id.to_string()), workflow.name);
    Ok(Page {
        title,
        nav: "runs",
        head: String::new(),
        live: Some(live),
        tail,
        stream: (!run.status.is_terminal()).then(|| {
            format!(
                "{base}/stream{}",
                query(&[("run_id", Some(run.id.to_string()))])
            )
        }),
        refresh: Some(format!("{base}/runs/{}", run.id)),
    })
}

fn source_name(event: &taskforge_core::Event) -> &'static str {
    match event.source {
        taskforge_core::EventSource::Webhook => "webhook",
        taskforge_core::EventSource::Cron => "cron",
        _ => "manual",
    }
}

/// The width of the bars' coordinate space.
const WIDTH: f64 = 1000.0;

/// Every attempt of every step on one time axis, from the run's start to
/// its end (or now), grouped by step; steps of the version not reached yet
/// are listed as pending.
/// The run's artifacts: name (a download link), step, size, SHA-256.
fn artifact_table(base: &str, run_id: RunId, artifacts: &[Artifact]) -> String {
    let mut out = String::from(
        "<section aria-labelledby=\"artifacts-h\"><h2 id=\"artifacts-h\">Artifacts</h2>\
         <table class=\"artifacts\"><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Step</th>\
         <th scope=\"col\">Size</th><th scope=\"col\">SHA-256</th><th scope=\"col\">Stored</th></tr></thead><tbody>",
    );
    for artifact in artifacts {
        let _ = write!(
            out,
            "<tr data-artifact=\"{name}\"><th scope=\"row\"><a href=\"{base}/runs/{run_id}/artifacts/{name}\" download>{name}</a></th>\
             <td>{step}</td><td>{size}</td><td><code title=\"{sha}\">{short}</code></td><td>{at}</td></tr>",
            base = Esc(base),
            name = Esc(&artifact.name),
            step = Esc(&artifact.step_key),
            size = Esc(&byte_size(artifact.size)),
            sha = Esc(&artifact.sha256),
            short = Esc(artifact.sha256.get(..12).unwrap_or(&artifact.sha256)),
            at = time(artifact.created_at),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

/// A size in B, KiB or MiB.
fn byte_size(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

/// The log lines the run page shows per attempt; the API pages the rest.
const LOG_LINES_SHOWN: usize = 200;

/// An attempt's log lines, and whether more follow.
type Logs = HashMap<StepRunId, (Vec<LogLine>, bool)>;

/// An attempt's log as a collapsible block of lines, open when the attempt
/// did not succeed (the log is where its story is).
fn log_block(key: &str, attempt: &StepRun, lines: &[LogLine], more: bool) -> String {
    let open = !matches!(attempt.status, StepStatus::Succeeded | StepStatus::Running);
    let mut out = format!(
        "<details class=\"log\" data-key=\"log-{}-{}\"{}><summary>Log <span class=\"muted\">({} line{}{})</span></summary><pre class=\"log\">",
        Esc(key),
        attempt.attempt,
        if open { " open" } else { "" },
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        if more { ", first ones" } else { "" },
    );
    for line in lines {
        let _ = writeln!(
            out,
            "<span class=\"log-line lvl-{level}\"><time datetime=\"{at}\">{clock}</time> <b>{level:5}</b> {message}</span>",
            level = line.level,
            at = line.at.to_rfc3339(),
            clock = line.at.format("%H:%M:%S%.3f"),
            message = Esc(&line.message),
        );
    }
    out.push_str("</pre>");
    if more {
        let _ = write!(
            out,
            "<p class=\"muted\">More lines: <code>GET /api/v1/runs/{}/steps/{}/logs</code></p>",
            attempt.run_id, attempt.id
        );
    }
    out.push_str("</details>");
    out
}

fn timeline(
    run: &WorkflowRun,
    steps: &[StepRun],
    keys: &[String],
    logs: &Logs,
    now: DateTime<Utc>,
) -> String {
    let start = run
        .started_at
        .into_iter()
        .chain(steps.iter().map(|s| s.started_at))
        .min()
        .unwrap_or(run.created_at);
    let end = run
        .finished_at
        .into_iter()
        .chain(steps.iter().filter_map(|s| s.finished_at))
        .max()
        .filter(|_| run.status.is_terminal())
        .unwrap_or(now)
        .max(start);
    let span = millis(start, end).max(1) as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        "<table class=\"timeline\"><thead><tr><th scope=\"col\">Step</th><th scope=\"col\">Attempt</th>\
         <th scope=\"col\">Status</th><th scope=\"col\" class=\"bar-col\"><span class=\"axis\"><span>+0</span><span>+{}</span></span></th>\
         <th scope=\"col\">Duration</th></tr></thead>",
        Esc(&duration(millis(start, end)))
    );
    // Steps in version order, then any the version does not name.
    let mut order: Vec<&str> = keys.iter().map(String::as_str).collect();
    for step in steps {
        if !order.contains(&step.step_key.as_str()) {
            order.push(&step.step_key);
        }
    }
    for key in order {
        let attempts: Vec<&StepRun> = steps.iter().filter(|s| s.step_key == key).collect();
        let _ = write!(out, "<tbody class=\"step\" data-step=\"{}\">", Esc(key));
        if attempts.is_empty() {
            let _ = write!(
                out,
                "<tr class=\"attempt pending\"><th scope=\"row\">{}</th><td>—</td><td>{}</td><td></td><td></td></tr>",
                Esc(key),
                if run.status.is_terminal() {
                    "<span class=\"muted\">not run</span>"
                } else {
                    "<span class=\"muted\">pending</span>"
                }
            );
        }
        for (i, attempt) in attempts.iter().enumerate() {
            let finished = attempt.finished_at.unwrap_or(now).max(attempt.started_at);
            let offset = millis(start, attempt.started_at).max(0);
            let took = millis(attempt.started_at, finished);
            let x = (offset as f64 / span * WIDTH).clamp(0.0, WIDTH - 4.0);
            let w = (took as f64 / span * WIDTH).clamp(4.0, WIDTH - x);
            let status = attempt.status.to_string();
            let _ = write!(
                out,
                "<tr class=\"attempt\" data-step=\"{key}\" data-attempt=\"{n}\" data-status=\"{status}\">\
                 <th scope=\"row\">{name}</th><td>#{n}</td><td>{badge}</td>\
                 <td class=\"bar-col\"><svg class=\"bar\" viewBox=\"0 0 1000 12\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"starts at +{at}, lasts {took_text}\">\
                 <rect class=\"track\" x=\"0\" y=\"0\" width=\"1000\" height=\"12\"/>\
                 <rect class=\"fill s-{status}\" x=\"{x:.1}\" y=\"0\" width=\"{w:.1}\" height=\"12\"/></svg></td>\
                 <td>{took_text}{running}</td></tr>",
                key = Esc(key),
                n = attempt.attempt,
                status = Esc(&status),
                name = if i == 0 {
                    Esc(key).to_string()
                } else {
                    format!("<span class=\"muted\">{}</span>", Esc(key))
                },
                badge = badge(&status),
                at = Esc(&duration(offset)),
                took_text = Esc(&duration(took)),
                running = if attempt.status == StepStatus::Running {
                    " …"
                } else {
                    ""
                },
            );
            let mut detail = String::new();
            if let Some(error) = attempt
                .error
                .as_ref()
                .filter(|_| attempt.status == StepStatus::Skipped)
            {
                // Not an error: why the step did not run.
                let _ = write!(detail, "<p class=\"muted\">{}</p>", Esc(&error.message));
            } else if let Some(error) = &attempt.error {
                let _ = write!(
                    detail,
                    "<p class=\"attempt-error\"><strong>Error:</strong> {}{}</p>",
                    Esc(&error.message),
                    if error.terminal {
                        " <span class=\"tag\">not retryable</span>"
                    } else {
                        ""
                    }
                );
                if let Some(value) = &error.detail {
                    detail.push_str(&json_details(
                        &format!("err-{key}-{}", attempt.attempt),
                        "Error detail",
                        value,
                        false,
                    ));
                }
            }
            if attempt.carried_from.is_some() {
                if let Some(original) = run.resumed_from {
                    let _ = write!(
                        detail,
                        "<p class=\"muted\">Kept from run <a class=\"mono\" href=\"../runs/{original}\">{}</a>, which this run resumes: not run again.</p>",
                        Esc(short(&original.to_string()))
                    );
                }
            }
            if let Some(retry_at) = attempt.retry_at {
                let after = attempt
                    .finished_at
                    .map(|end| format!(", {} after it failed", duration(millis(end, retry_at))))
                    .unwrap_or_default();
                let _ = write!(
                    detail,
                    "<p class=\"muted\">Next attempt due at {}{}</p>",
                    time(retry_at),
                    Esc(&after)
                );
            }
            if let Some(output) = &attempt.output {
                detail.push_str(&json_details(
                    &format!("out-{key}-{}", attempt.attempt),
                    "Output",
                    output,
                    false,
                ));
            }
            if let Some((lines, more)) = logs.get(&attempt.id) {
                detail.push_str(&log_block(key, attempt, lines, *more));
            }
            if !detail.is_empty() {
                let _ = write!(
                    out,
                    "<tr class=\"attempt-detail\"><td></td><td colspan=\"4\">{detail}</td></tr>"
                );
            }
        }
        out.push_str("</tbody>");
    }
    out.push_str("</table>");
    out
}

/// Runs `action`, then sees the page it names; a problem is a page.
pub(crate) async fn run_action(
    viewer: &Viewer,
    form: Result<Form<ActionForm>, FormRejection>,
    action: impl std::future::Future<Output = Result<String, Problem>>,
) -> Response {
    let checked = async {
        viewer.caller.require(Scope::Run)?;
        let Form(form) =
            form.map_err(|_| Problem::bad_request("the form is missing its CSRF token"))?;
        viewer.check_csrf(form.csrf())
    };
    match checked.await {
        Ok(()) => match action.await {
            Ok(to) => see_other(&to),
            Err(problem) => error_page(&viewer.base, &problem),
        },
        Err(problem) => error_page(&viewer.base, &problem),
    }
}

/// `POST runs/{id}/cancel`: asks the run to stop, then shows it.
pub(crate) async fn cancel<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let action = async {
        let id = parse_run_id(&id)?;
        let run = ctx.engine.store().get_run(id).await?;
        reachable(&ctx, &viewer.caller, Scope::Run, run.workflow_id).await?;
        ctx.engine.cancel_run(id).await?;
        Ok(format!("{}/runs/{id}", viewer.base))
    };
    run_action(&viewer, form, action).await
}

/// `POST runs/{id}/retry`: starts a new run of the workflow's latest
/// version with the same input, then shows it.
pub(crate) async fn retry<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let action = async {
        let id = parse_run_id(&id)?;
        let run = ctx.engine.store().get_run(id).await?;
        reachable(&ctx, &viewer.caller, Scope::Run, run.workflow_id).await?;
        ctx.refuse_if_draining()?;
        let options = RunOptions::new().requested_by(format!("token:{}", viewer.caller.token.id));
        let new = ctx
            .engine
            .start_run_with(run.workflow_id, (*run.input).clone(), options)
            .await?;
        Ok(format!("{}/runs/{}", viewer.base, new.id))
    };
    run_action(&viewer, form, action).await
}

/// `POST runs/{id}/resume`: a new run that keeps the succeeded steps.
pub(crate) async fn resume<S: Store, X: StepExecutor>(
    State(ctx): State<Ctx<S, X>>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let action = async {
        let id = parse_run_id(&id)?;
        let run = ctx.engine.store().get_run(id).await?;
        reachable(&ctx, &viewer.caller, Scope::Run, run.workflow_id).await?;
        ctx.refuse_if_draining()?;
        let who = format!("token:{}", viewer.caller.token.id);
        let new = ctx.engine.resume_run_as(id, Some(&who)).await?;
        Ok(format!("{}/runs/{}", viewer.base, new.id))
    };
    run_action(&viewer, form, action).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_read_as_utc() {
        let at = parse_time("2025-03-01T10:30").expect("a time");
        assert_eq!(at.to_rfc3339(), "2025-03-01T10:30:00+00:00");
        assert!(parse_time("2025-03-01T10:30:15").is_some());
        assert!(parse_time("2025-03-01T10:30:00+02:00").is_some());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn statuses_parse_by_name() {
        assert_eq!(parse_status("timed_out"), Some(RunStatus::TimedOut));
        assert_eq!(parse_status("nope"), None);
    }
}
