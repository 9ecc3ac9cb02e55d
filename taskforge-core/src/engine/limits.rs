//! Admission under limits: attaching a run's [`RunLimits`] when it is
//! created, and applying its key's [`LimitPolicy`] around the insert.
//!
//! The hard rule (at most `max` runs of a key hold a slot; waiting runs
//! start in order; debounce windows; rate limits) is the store's, at claim
//! time, so it holds across engines. What admission adds is the policy's
//! choice for a new run while its key is full, read from the store just
//! before (`skip`, `cancel_newest`) or after (`cancel_running`, and
//! superseding a debounced key's waiting runs) the insert. Two engines
//! admitting runs of one key at the same instant may both see room and
//! both queue a run; the store's claim still holds the limit.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::cancel;
use super::shared::Shared;
use crate::concurrency::{ConcurrencyLimit, LimitPolicy, RunLimits};
use crate::error::EngineError;
use crate::event::{Event, EventOutcome};
use crate::run::{RunError, RunTransition, WorkflowRun};
use crate::store::{rules, RunQuery, RunStoreExt, Store};
use crate::workflow::WorkflowVersion;

/// Gives `run` (of `version`, created at `now`) the limits it is admitted
/// under: `trigger`'s concurrency limit, or the version's, with the
/// version's debounce window and rate limit.
pub(crate) fn attach(
    run: &mut WorkflowRun,
    version: &WorkflowVersion,
    trigger: Option<&ConcurrencyLimit>,
    now: DateTime<Utc>,
) {
    let definition = &version.definition;
    run.limits = RunLimits::new(
        run.workflow_id,
        &run.input,
        trigger.or(definition.concurrency.as_ref()),
        definition.debounce,
        definition.rate_limit.as_ref(),
        now,
    )
    .map(Arc::new);
}

/// Gives `run`, a resumption of `original`, the limits `original` was
/// admitted under (its key, maximum, policy and rate limit): it is subject
/// to them as a new run, without a debounce window (it is asked for by
/// hand, not by a burst of events).
pub(crate) fn carry(run: &mut WorkflowRun, original: &WorkflowRun) {
    run.limits = original.limits.as_deref().map(|limits| {
        Arc::new(RunLimits {
            debounce: false,
            not_before: None,
            holds_slot: false,
            ..limits.clone()
        })
    });
}

/// The unfinished runs of `key`, oldest first (at most `limit`; 0: all).
async fn runs_of_key<S: Store, X>(
    shared: &Shared<S, X>,
    key: &str,
    limit: usize,
) -> Result<Vec<WorkflowRun>, EngineError> {
    let query = RunQuery {
        concurrency_key: Some(key.to_owned()),
        limit,
        ..RunQuery::default()
    };
    let runs = if limit == 0 {
        shared.store.list_all_runs(&query).await?
    } else {
        shared.store.list_runs(&query).await?.items
    };
    Ok(runs)
}

/// Applies `run`'s policy before it is stored with `event`: with `skip`
/// or `cancel_newest`, when its key has `max` unfinished runs already, the
/// event's outcome becomes [`EventOutcome::Limited`] and the run is
/// dropped (`skip`) or recorded cancelled (`cancel_newest`). Returns the
/// run to store, if any.
pub(crate) async fn before_insert<S: Store, X>(
    shared: &Shared<S, X>,
    event: &mut Event,
    mut run: WorkflowRun,
) -> Result<Option<WorkflowRun>, EngineError> {
    let Some((key, max, policy)) = run
        .limits
        .as_deref()
        .filter(|l| matches!(l.policy, LimitPolicy::Skip | LimitPolicy::CancelNewest))
        .and_then(|l| Some((l.key.clone(), l.max?, l.policy)))
    else {
        return Ok(Some(run));
    };
    let max = max as usize;
    if runs_of_key(shared, &key, max).await?.len() < max {
        return Ok(Some(run));
    }
    if policy == LimitPolicy::Skip {
        event.outcome = EventOutcome::Limited { key, run_id: None };
        return Ok(None);
    }
    run.transition(RunTransition::Cancel, shared.now())?;
    run.error = Some(RunError {
        message: format!(
            "cancelled: key {key:?} already had {max} unfinished runs (policy cancel_newest)"
        ),
        step: None,
        detail: None,
    });
    event.outcome = EventOutcome::Limited {
        key,
        run_id: Some(run.id),
    };
    Ok(Some(run))
}

/// Applies `run`'s policy once it is stored: with `cancel_running`, the
/// oldest unfinished runs of its key are cancelled so that, with it, `max`
/// remain; with a debounce window, the key's runs still waiting that are
/// older than it are cancelled (superseded). Failures are logged: the run
/// and its event are stored either way, and the store's claim rule still
/// holds the limit.
pub(crate) async fn after_insert<S: Store, X>(shared: &Arc<Shared<S, X>>, run: &WorkflowRun) {
    let Some(limits) = run.limits.as_deref() else {
        return;
    };
    let cancel_running = limits.policy == LimitPolicy::CancelRunning && limits.max.is_some();
    if run.status.is_terminal() || !(cancel_running || limits.debounce) {
        return;
    }
    if let Err(error) = supersede(shared, run, limits, cancel_running).await {
        tracing::warn!(run_id = %run.id, key = %limits.key, %error, "could not cancel older runs of the key");
    }
}

async fn supersede<S: Store, X>(
    shared: &Arc<Shared<S, X>>,
    run: &WorkflowRun,
    limits: &RunLimits,
    cancel_running: bool,
) -> Result<(), EngineError> {
    let others: Vec<WorkflowRun> = runs_of_key(shared, &limits.key, 0)
        .await?
        .into_iter()
        .filter(|other| other.id < run.id && !other.cancel_requested)
        .collect();
    let mut doomed: Vec<&WorkflowRun> = Vec::new();
    if limits.debounce {
        doomed.extend(
            others
                .iter()
                .filter(|o| rules::slot_use(o).is_some_and(|(_, u)| u == rules::SlotUse::Waiting)),
        );
    }
    if cancel_running {
        let max = limits.max.unwrap_or(u32::MAX) as usize;
        let left: Vec<&WorkflowRun> = others
            .iter()
            .filter(|o| !doomed.iter().any(|d| d.id == o.id))
            .collect();
        // With the new run, `max` remain: the oldest go.
        let excess = (left.len() + 1).saturating_sub(max);
        doomed.extend(left.into_iter().take(excess));
    }
    for other in doomed {
        match cancel::cancel_run(shared, other.id).await {
            Ok(_) | Err(EngineError::RunFinished { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
