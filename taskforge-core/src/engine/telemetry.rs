//! Metrics and trace context.
//!
//! Metrics go through the [`metrics`] facade: without a recorder installed
//! every call is a no-op (labels are shared strings, never formatted), so
//! an application that does not collect metrics pays nearly nothing. The
//! names, their labels and units:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | [`RUNS_STARTED`] | counter | `workflow` |
//! | [`RUNS_RESUMED`] | counter | `workflow` |
//! | [`RUNS_FINISHED`] | counter | `workflow`, `status` |
//! | [`RUN_DURATION`] | histogram, seconds | `workflow`, `status` |
//! | [`STEP_ATTEMPT_DURATION`] | histogram, seconds | `workflow`, `step`, `outcome` |
//! | [`QUEUE_DEPTH`] | gauge | |
//! | [`RUNS_ACTIVE`] | gauge | |
//! | [`WEBHOOK_DELIVERIES`] | counter | `outcome`, `reason` |
//! | [`STORE_COMMIT_DURATION`] | histogram, seconds | `op` |
//!
//! Trace context: the W3C `traceparent` of whoever caused a run (a webhook
//! request's header, or [`RunOptions::trace_parent`](crate::RunOptions))
//! is kept in its event's metadata under [`TRACEPARENT`]; the `run` span of
//! every engine that executes the run, and so every `step` span under it,
//! records it as the field `trace_parent`, so one trace id follows the
//! webhook, the run and its steps, across restarts and engines.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::delivery::Delivery;
use crate::event::EventOutcome;
use crate::id::WorkflowId;
use crate::run::WorkflowRun;
use crate::store::Store;
use crate::trigger::request::{Headers, Rejection};

/// Runs started (not resumed), once the start is stored.
pub const RUNS_STARTED: &str = "taskforge_runs_started_total";
/// Runs an engine took over after another worker was lost.
pub const RUNS_RESUMED: &str = "taskforge_runs_resumed_total";
/// Runs finished, by final status (`succeeded`, `failed`, `cancelled`,
/// `timed_out`).
pub const RUNS_FINISHED: &str = "taskforge_runs_finished_total";
/// A finished run's time from start to finish.
pub const RUN_DURATION: &str = "taskforge_run_duration_seconds";
/// One step attempt's handler time, by outcome (`succeeded`, `failed`,
/// `timed_out`, `cancelled`, `interrupted`).
pub const STEP_ATTEMPT_DURATION: &str = "taskforge_step_attempt_duration_seconds";
/// Claimable runs the dispatcher saw on its last look. It looks for at
/// most as many as it has free slots, so a full engine reports what it
/// saw when it last had room.
pub const QUEUE_DEPTH: &str = "taskforge_queue_depth";
/// Runs executing on this engine.
pub const RUNS_ACTIVE: &str = "taskforge_runs_active";
/// Webhook deliveries by outcome (`accepted`, `duplicate`, `filtered`,
/// `recorded`, `rejected`, `unknown_path`) and reason (why it was rejected
/// or recorded without a run; empty otherwise).
pub const WEBHOOK_DELIVERIES: &str = "taskforge_webhook_deliveries_total";
/// Store writes: `op` is `commit` (a worker's fenced commit) or `admit`
/// (an event with the run it starts).
pub const STORE_COMMIT_DURATION: &str = "taskforge_store_commit_duration_seconds";

/// The event metadata key a run's W3C trace context is kept under.
pub const TRACEPARENT: &str = "traceparent";

/// Every metric: its name, kind (`counter`, `gauge`, `histogram`) and a
/// description, for recorders that describe them (Prometheus `# HELP`).
pub const METRICS: [(&str, &str, &str); 9] = [
    (RUNS_STARTED, "counter", "Runs started, by workflow"),
    (
        RUNS_RESUMED,
        "counter",
        "Runs resumed after their worker was lost, by workflow",
    ),
    (
        RUNS_FINISHED,
        "counter",
        "Runs finished, by workflow and final status",
    ),
    (
        RUN_DURATION,
        "histogram",
        "Run time from start to finish in seconds, by workflow and status",
    ),
    (
        STEP_ATTEMPT_DURATION,
        "histogram",
        "Step attempt handler time in seconds, by workflow, step and outcome",
    ),
    (
        QUEUE_DEPTH,
        "gauge",
        "Claimable runs the dispatcher saw on its last look (at most its free slots)",
    ),
    (RUNS_ACTIVE, "gauge", "Runs executing on this engine"),
    (
        WEBHOOK_DELIVERIES,
        "counter",
        "Webhook deliveries, by outcome and reason",
    ),
    (
        STORE_COMMIT_DURATION,
        "histogram",
        "Store write latency in seconds, by operation",
    ),
];

/// The name of workflow `id` for labels and spans, read once per process:
/// names never change, and ids are unique across stores. Falls back to
/// the id if the store cannot say.
pub(crate) async fn workflow_name<S: Store + ?Sized>(store: &S, id: WorkflowId) -> Arc<str> {
    static NAMES: OnceLock<Mutex<HashMap<WorkflowId, Arc<str>>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    if let Some(name) = names.lock().get(&id) {
        return Arc::clone(name);
    }
    match store.get_workflow(id).await {
        Ok(workflow) => {
            let name: Arc<str> = workflow.name.into();
            let mut names = names.lock();
            if names.len() >= 10_000 {
                names.clear();
            }
            names.insert(id, Arc::clone(&name));
            name
        }
        Err(_) => id.to_string().into(),
    }
}

/// Records the run's workflow, version and trace context on the current
/// span (the `run` span the dispatcher opened). Reading the trace context
/// costs a read of the run's event, made only when a subscriber listens.
pub(crate) async fn annotate_run_span<S: Store + ?Sized>(
    store: &S,
    run: &WorkflowRun,
    workflow: &str,
) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("workflow", workflow);
    span.record("version", run.version);
    let Some(event_id) = run.event_id else {
        return;
    };
    if let Ok(event) = store.get_event(event_id).await {
        if let Some(traceparent) = event.metadata.get(TRACEPARENT) {
            span.record("trace_parent", traceparent.as_str());
        }
    }
}

/// Counts a webhook delivery by outcome and reason.
pub(crate) fn delivery(delivery: &Delivery) {
    let (outcome, reason) = match delivery {
        Delivery::Accepted { .. } => ("accepted", ""),
        Delivery::Duplicate { .. } => ("duplicate", ""),
        Delivery::Filtered { .. } => ("filtered", "filter"),
        Delivery::Recorded { outcome, .. } => (
            "recorded",
            match outcome {
                EventOutcome::WorkflowInactive => "workflow_inactive",
                EventOutcome::TriggerDisabled => "trigger_disabled",
                _ => "other",
            },
        ),
        Delivery::Rejected(rejection) => ("rejected", rejection_reason(rejection)),
        Delivery::UnknownPath => ("unknown_path", ""),
    };
    metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => outcome, "reason" => reason).increment(1);
}

/// A short, bounded name for why a delivery was refused.
fn rejection_reason(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::TooLarge { .. } => "too_large",
        Rejection::Unauthorized(_) => "unauthorized",
        Rejection::UnsupportedMediaType(_) => "unsupported_media_type",
        Rejection::Malformed { .. } => "malformed",
        Rejection::NotAnObject => "not_an_object",
        Rejection::TooDeep => "too_deep",
        Rejection::MissingDedupKey { .. } => "missing_dedup_key",
        Rejection::Unprocessable { .. } => "unprocessable",
        Rejection::Misconfigured(_) => "misconfigured",
    }
}

/// `metadata` with the request's `traceparent` header added, if it has a
/// valid one.
pub(crate) fn with_request_trace(
    metadata: BTreeMap<String, String>,
    headers: &Headers,
) -> BTreeMap<String, String> {
    with_trace_parent(metadata, headers.get(TRACEPARENT))
}

/// `metadata` with `traceparent` added, if it is a valid one.
pub(crate) fn with_trace_parent(
    mut metadata: BTreeMap<String, String>,
    traceparent: Option<&str>,
) -> BTreeMap<String, String> {
    if let Some(valid) = traceparent.and_then(parse_traceparent) {
        metadata.insert(TRACEPARENT.to_owned(), valid);
    }
    metadata
}

/// A W3C trace context `traceparent` (`version-traceid-parentid-flags`,
/// lowercase hex, ids not all zero), normalised to its 55 characters, or
/// `None` if it is not one. A later version's extra fields are dropped, as
/// the recommendation says; anything else, and anything long, is refused,
/// so a sender cannot store arbitrary text through it.
#[must_use]
pub fn parse_traceparent(value: &str) -> Option<String> {
    let value = value.trim_matches([' ', '\t']);
    if value.len() < 55 || value.len() > 512 || !value.is_ascii() {
        return None;
    }
    let (head, rest) = value.split_at(55);
    let version = &head[0..2];
    if version == "ff" || (version == "00" && !rest.is_empty()) {
        return None;
    }
    if !rest.is_empty() && !rest.starts_with('-') {
        return None;
    }
    let bytes = head.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let zero = |range: std::ops::Range<usize>| bytes[range].iter().all(|b| *b == b'0');
    let dashes = bytes[2] == b'-' && bytes[35] == b'-' && bytes[52] == b'-';
    let valid = dashes
        && hex(0..2)
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
        && !zero(3..35)
        && !zero(36..52);
    valid.then(|| head.to_owned())
}

/// The trace id (32 hex characters) of a valid `traceparent`.
#[must_use]
pub fn trace_id(traceparent: &str) -> Option<&str> {
    parse_traceparent(traceparent)?;
    traceparent.get(3..35)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_are_checked() {
        assert_eq!(parse_traceparent(VALID).as_deref(), Some(VALID));
        assert_eq!(
            parse_traceparent(&format!(" {VALID}\t")).as_deref(),
            Some(VALID)
        );
        assert_eq!(trace_id(VALID), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        // A later version may carry more fields; only the known part is kept.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(parse_traceparent(future).as_deref(), Some(&future[..55]));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
        assert_eq!(parse_traceparent(&format!("01{}", &"-a".repeat(600))), None);
    }

    #[test]
    fn metadata_keeps_only_valid_traceparents() {
        let kept = with_trace_parent(BTreeMap::new(), Some(VALID));
        assert_eq!(kept.get(TRACEPARENT).map(String::as_str), Some(VALID));
        assert!(with_trace_parent(BTreeMap::new(), Some("nonsense")).is_empty());
        assert!(with_trace_parent(BTreeMap::new(), None).is_empty());
    }
}
