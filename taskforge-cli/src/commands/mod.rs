//! The commands, one module per resource.

pub(crate) mod artifacts;
pub(crate) mod events;
pub(crate) mod logs;
pub(crate) mod runs;
pub(crate) mod secrets;
pub(crate) mod tokens;
pub(crate) mod triggers;
pub(crate) mod workflows;

use std::collections::HashMap;

use serde_json::Value;

use crate::client::{segment, Error};
use crate::Ctx;

/// Whether `text` looks like an id (a UUID) rather than a name.
pub(crate) fn is_id(text: &str) -> bool {
    text.len() == 36
        && text.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The id of the workflow named or identified by `workflow`.
pub(crate) async fn workflow_id(ctx: &Ctx, workflow: &str) -> Result<String, Error> {
    if is_id(workflow) {
        return Ok(workflow.to_owned());
    }
    let all = ctx.api.all("/api/v1/workflows", &[], usize::MAX).await?;
    all.iter()
        .find(|w| w["name"].as_str() == Some(workflow))
        .and_then(|w| w["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| Error::other(format!("no workflow named {workflow:?}")))
}

/// Workflow names by id, for tables; empty if they cannot be read.
pub(crate) async fn workflow_names(ctx: &Ctx) -> HashMap<String, String> {
    let all = ctx
        .api
        .all("/api/v1/workflows", &[], 10_000)
        .await
        .unwrap_or_default();
    all.iter()
        .filter_map(|w| Some((w["id"].as_str()?.to_owned(), w["name"].as_str()?.to_owned())))
        .collect()
}

/// A workflow's name if known, else its id.
pub(crate) fn name_of(names: &HashMap<String, String>, id: &Value) -> String {
    id.as_str()
        .map(|id| names.get(id).cloned().unwrap_or_else(|| id.to_owned()))
        .unwrap_or_else(|| "-".to_owned())
}

/// `/api/v1/<kind>/<id>`, the id escaped.
pub(crate) fn path(kind: &str, id: &str) -> String {
    format!("/api/v1/{kind}/{}", segment(id))
}

/// The hint printed under a listing that has more pages.
pub(crate) fn more(page: &Value) -> Option<String> {
    page["next"]
        .as_str()
        .map(|next| format!("more: pass --after {next}\n"))
}

/// Prints the next-page hint on stderr, so stdout stays the table.
pub(crate) fn hint_more(page: &Value) {
    if let Some(hint) = more(page) {
        eprint!("{hint}");
    }
}

/// How long a watch or a log follow waits for a byte (the server's
/// keep-alives included) before it takes the connection for lost.
pub(crate) const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// The statuses a run ends in.
pub(crate) const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert!(is_id("0190c0de-0000-7000-8000-0123456789ab"));
        assert!(!is_id("deploy-api"));
        assert!(!is_id("0190c0de-0000-7000-8000-0123456789ag"));
    }
}
