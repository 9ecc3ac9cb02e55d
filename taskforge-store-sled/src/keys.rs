//! The byte layout of keys.
//!
//! Records are keyed by their 16-byte id (UUID v7, so byte order is
//! creation order). Events, runs and their indexes share the `idx` tree
//! (format 5), so that the writer thread stores a batch with one
//! `apply_batch`: each kind of record or index has a one-byte tag, then
//! fixed-width parts; an index key usually ends with the id of the record
//! it points to, so a prefix scan lists one workflow's (or status's, or
//! event's) records in id order without touching any other. Workflows,
//! versions and triggers keep trees of their own.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use taskforge_core::store::rules::RunState;
use taskforge_core::{
    Event, EventId, RunId, RunStatus, StepRun, StepStatus, Trigger, VersionId, WorkflowId,
    WorkflowRun,
};

/// Tags of the secondary indexes in the `idx` tree.
pub(crate) mod tag {
    /// `name` → workflow id.
    pub(crate) const WORKFLOW_NAME: u8 = 0x01;
    /// `workflow ++ number` → version id.
    pub(crate) const VERSION_BY_NUMBER: u8 = 0x02;
    /// `workflow` → the latest version number (u32, big-endian).
    pub(crate) const LATEST_VERSION: u8 = 0x03;
    /// `workflow ++ trigger`.
    pub(crate) const TRIGGER_BY_WORKFLOW: u8 = 0x04;
    /// `workflow ++ name` → trigger id: names are unique per workflow.
    pub(crate) const TRIGGER_NAME: u8 = 0x05;
    /// `path` → trigger id: webhook paths are unique.
    pub(crate) const WEBHOOK_PATH: u8 = 0x06;
    /// `workflow ++ event`.
    pub(crate) const EVENT_BY_WORKFLOW: u8 = 0x10;
    /// `trigger ++ event`.
    pub(crate) const EVENT_BY_TRIGGER: u8 = 0x11;
    /// `received_at ++ event`, for an event whose id does not carry the
    /// millisecond it was received in (format 5; see [`dated_by_id`]).
    pub(crate) const EVENT_BY_TIME: u8 = 0x12;
    /// `workflow ++ dedup key` → event id.
    pub(crate) const DEDUP: u8 = 0x13;
    /// `workflow ++ run`.
    pub(crate) const RUN_BY_WORKFLOW: u8 = 0x20;
    /// Formats 1 to 4: `status ++ run` (format 1 for every run, formats 2
    /// to 4 for finished runs). Since format 5 finished runs in one status
    /// are listed by merging the per-workflow index below; prune removes
    /// these keys with their runs.
    pub(crate) const RUN_BY_STATUS: u8 = 0x21;
    /// `workflow ++ status ++ run`, for finished runs only (as above).
    pub(crate) const RUN_BY_WORKFLOW_STATUS: u8 = 0x22;
    /// `event ++ run`, for a run caused by an event that did not start it
    /// (a replay, a run inserted on its own). Since format 3, the run an
    /// event started (its outcome names it) is found through the event
    /// record instead, and has no key here.
    pub(crate) const RUN_BY_EVENT: u8 = 0x23;
    /// `created_at ++ run`, for a run whose id does not carry the
    /// millisecond it was created in (format 5; see [`dated_by_id`]).
    pub(crate) const RUN_BY_TIME: u8 = 0x24;
    /// Format 1 only: `lease expiry ++ run`, for running runs (no lease
    /// sorts first). Removed by the migration to format 2, which keeps
    /// leases in memory.
    pub(crate) const LEASE_V1: u8 = 0x25;
    /// Formats 1 and 2 only: `finished_at ++ run`, for finished runs.
    /// Retention finds old runs by creation time since format 3; prune
    /// removes the keys left by earlier formats with their runs.
    pub(crate) const FINISHED_V2: u8 = 0x26;
    /// `run`, for every unfinished run (format 2): what the in-memory
    /// index of unfinished runs is rebuilt from on open.
    pub(crate) const ACTIVE: u8 = 0x27;
    /// `workflow` → the start times of its rate-limited runs (JSON, oldest
    /// first; see `rules::record_start`). Written by claims; a store of an
    /// earlier format has none, which is an empty record.
    pub(crate) const RATE: u8 = 0x28;
    /// Format 5: `event` → the event's record (formats 1 to 4 kept events
    /// in a tree of their own).
    pub(crate) const EVENT: u8 = 0x40;
    /// Format 5: `run` → the run's record, with its attempts.
    pub(crate) const RUN: u8 = 0x41;
    /// Format 5: `run ++ step index ++ attempt` → an attempt written by
    /// formats 1 to 3 (format 4 keeps attempts in the run's record).
    pub(crate) const STEP: u8 = 0x42;
}

/// The key of a workflow's recorded start times ([`tag::RATE`]).
pub(crate) fn rate(workflow: WorkflowId) -> Vec<u8> {
    key(tag::RATE, &[&workflow.to_bytes()])
}

/// The length of an id.
pub(crate) const ID: usize = 16;

/// Concatenates key parts.
pub(crate) fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut key = Vec::with_capacity(len);
    key.push(tag);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// A time as 8 bytes whose order is time order (microseconds, sign flipped).
pub(crate) fn time(t: DateTime<Utc>) -> [u8; 8] {
    // Flipping the sign bit makes two's complement sort as unsigned.
    ((t.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes()
}

/// The millisecond a UUID v7 id was made in (since the Unix epoch), or
/// `None` for an id of another version.
pub(crate) fn id_millis(id: &[u8; ID]) -> Option<i64> {
    if id[6] >> 4 != 7 {
        return None;
    }
    let mut ms = [0; 8];
    ms[2..].copy_from_slice(&id[..6]);
    Some(i64::from_be_bytes(ms))
}

/// Whether a record made at `at` with `id` is found by time through its id
/// alone: a UUID v7 of the same millisecond, as the engine makes them with
/// the system clock. Such records have no time-index key (format 5); the
/// others (a manual clock, ids made elsewhere) keep one.
pub(crate) fn dated_by_id(id: &[u8; ID], at: DateTime<Utc>) -> bool {
    id_millis(id) == Some(at.timestamp_millis())
}

/// The lowest and highest UUID v7 ids of millisecond `ms`, clamped to the
/// 48 bits an id has for it.
pub(crate) fn id_bounds(ms: i64) -> ([u8; ID], [u8; ID]) {
    let ms = ms.clamp(0, (1 << 48) - 1).to_be_bytes();
    let (mut lo, mut hi) = ([0; ID], [0xff; ID]);
    lo[..6].copy_from_slice(&ms[2..]);
    hi[..6].copy_from_slice(&ms[2..]);
    (lo, hi)
}

/// The [`tag::EVENT_BY_TIME`] key of an event.
pub(crate) fn event_time(event: &Event) -> Vec<u8> {
    key(
        tag::EVENT_BY_TIME,
        &[&time(event.received_at), &event.id.to_bytes()],
    )
}

/// The smallest time key.
pub(crate) const TIME_MIN: [u8; 8] = [0; 8];

/// The last 16 bytes of an index key: the id it points to.
pub(crate) fn trailing_id(key: &[u8]) -> Option<[u8; ID]> {
    let start = key.len().checked_sub(ID)?;
    key[start..].try_into().ok()
}

/// A run status as one byte, stable on disk.
pub(crate) fn status(status: RunStatus) -> u8 {
    match status {
        RunStatus::Queued => 0,
        RunStatus::Running => 1,
        RunStatus::Succeeded => 2,
        RunStatus::Failed => 3,
        RunStatus::Cancelled => 4,
        RunStatus::TimedOut => 5,
        // Unfinished, so indexed in memory only (never on disk).
        RunStatus::Waiting => 6,
        // A status added by a later core: indexed together after the known
        // ones until this store gives it a byte of its own.
        _ => 0xff,
    }
}

/// The key of a step attempt: `run ++ step_index ++ attempt`, so a run's
/// attempts sort by step index, then attempt.
pub(crate) fn step(step: &StepRun) -> [u8; ID + 8] {
    let mut key = [0; ID + 8];
    key[..ID].copy_from_slice(&step.run_id.to_bytes());
    key[ID..ID + 4].copy_from_slice(&step.step_index.to_be_bytes());
    key[ID + 4..].copy_from_slice(&step.attempt.to_be_bytes());
    key
}

/// The dedup index key of `dedup_key` in `workflow_id`.
pub(crate) fn dedup(workflow_id: WorkflowId, dedup_key: &str) -> Vec<u8> {
    key(tag::DEDUP, &[&workflow_id.to_bytes(), dedup_key.as_bytes()])
}

/// Every index key of an event.
pub(crate) fn event_index(event: &Event) -> Vec<Vec<u8>> {
    let id = event.id.to_bytes();
    let wf = event.workflow_id.to_bytes();
    let mut keys = vec![key(tag::EVENT_BY_WORKFLOW, &[&wf, &id])];
    if !dated_by_id(&id, event.received_at) {
        keys.push(event_time(event));
    }
    if let Some(trigger) = event.trigger_id {
        keys.push(key(tag::EVENT_BY_TRIGGER, &[&trigger.to_bytes(), &id]));
    }
    keys
}

/// The fields of a stored run that its index keys and fence checks need:
/// reading them skips over the run's input and output without building
/// them, which keeps commits cheap when those are large.
#[derive(Debug, Deserialize)]
pub(crate) struct RunHead {
    pub(crate) id: RunId,
    pub(crate) workflow_id: WorkflowId,
    pub(crate) version_id: VersionId,
    #[serde(default)]
    pub(crate) event_id: Option<EventId>,
    pub(crate) status: RunStatus,
    pub(crate) created_at: DateTime<Utc>,
    #[serde(default)]
    pub(crate) lease: Option<LeaseHead>,
    pub(crate) lease_epoch: u64,
    #[serde(default)]
    pub(crate) cancel_requested: bool,
}

/// The part of a stored lease the lease index needs.
#[derive(Debug, Deserialize)]
pub(crate) struct LeaseHead {
    pub(crate) expires_at: DateTime<Utc>,
}

/// The part of a stored step attempt a commit checks.
#[derive(Debug, Deserialize)]
pub(crate) struct StepHead {
    pub(crate) status: StepStatus,
}

impl From<&RunHead> for RunState {
    fn from(run: &RunHead) -> Self {
        Self {
            status: run.status,
            lease_epoch: run.lease_epoch,
            cancel_requested: run.cancel_requested,
            workflow_id: run.workflow_id,
            version_id: run.version_id,
            event_id: run.event_id,
        }
    }
}

impl From<&WorkflowRun> for RunHead {
    fn from(run: &WorkflowRun) -> Self {
        Self {
            id: run.id,
            workflow_id: run.workflow_id,
            version_id: run.version_id,
            event_id: run.event_id,
            status: run.status,
            created_at: run.created_at,
            lease: run.lease.as_ref().map(|l| LeaseHead {
                expires_at: l.expires_at,
            }),
            lease_epoch: run.lease_epoch,
            cancel_requested: run.cancel_requested,
        }
    }
}

/// Whether a run in `status` is unfinished: indexed by status in memory
/// (with its lease), and marked by an [`tag::ACTIVE`] key on disk.
pub(crate) fn is_active(status: RunStatus) -> bool {
    !status.is_terminal()
}

/// Every index key of a run in its current state but [`run_by_event`].
/// Updating a run removes the keys of its old state that its new state
/// lacks and adds the others.
///
/// Only the run's creation and its end change them: an unfinished run's
/// status and lease are indexed in memory (see `active.rs`), so starting
/// a run, claiming it and renewing its lease write no index key; its end
/// writes two (the `ACTIVE` key out, its workflow and status in).
pub(crate) fn run_index(run: &WorkflowRun) -> Vec<Vec<u8>> {
    run_head_index(&RunHead::from(run))
}

/// [`run_index`] from a run's head.
pub(crate) fn run_head_index(run: &RunHead) -> Vec<Vec<u8>> {
    let id = run.id.to_bytes();
    let wf = run.workflow_id.to_bytes();
    let mut keys = vec![key(tag::RUN_BY_WORKFLOW, &[&wf, &id])];
    if !dated_by_id(&id, run.created_at) {
        keys.push(key(tag::RUN_BY_TIME, &[&time(run.created_at), &id]));
    }
    if is_active(run.status) {
        keys.push(key(tag::ACTIVE, &[&id]));
    } else {
        let st = [status(run.status)];
        keys.push(key(tag::RUN_BY_WORKFLOW_STATUS, &[&wf, &st, &id]));
    }
    keys
}

/// The [`tag::RUN_BY_EVENT`] key of `run`, which is written unless the run
/// is the one its event started.
pub(crate) fn run_by_event(run: &WorkflowRun) -> Option<Vec<u8>> {
    run.event_id
        .map(|event| key(tag::RUN_BY_EVENT, &[&event.to_bytes(), &run.id.to_bytes()]))
}

/// The index keys earlier formats wrote for a run that the current one
/// does not keep (its event key, which an event's own run no longer has
/// since format 3, its finish-time key, and its status and creation-time
/// keys, which format 5 writes for fewer runs): removed with the run.
pub(crate) fn legacy_run_index(run: &WorkflowRun) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = run_by_event(run).into_iter().collect();
    let id = run.id.to_bytes();
    keys.push(key(tag::RUN_BY_TIME, &[&time(run.created_at), &id]));
    if !is_active(run.status) {
        let finished = run.finished_at.unwrap_or(run.created_at);
        keys.push(key(tag::FINISHED_V2, &[&time(finished), &id]));
        keys.push(key(tag::RUN_BY_STATUS, &[&[status(run.status)], &id]));
    }
    keys
}

/// The index keys format 1 kept for an unfinished run and format 2 keeps
/// in memory: its status (alone and with its workflow) and, if running,
/// its lease.
pub(crate) fn v1_active_index(run: &RunHead) -> Vec<Vec<u8>> {
    let id = run.id.to_bytes();
    let wf = run.workflow_id.to_bytes();
    let st = [status(run.status)];
    let mut keys = vec![
        key(tag::RUN_BY_STATUS, &[&st, &id]),
        key(tag::RUN_BY_WORKFLOW_STATUS, &[&wf, &st, &id]),
    ];
    if run.status == RunStatus::Running {
        let expiry = run.lease.as_ref().map_or(TIME_MIN, |l| time(l.expires_at));
        keys.push(key(tag::LEASE_V1, &[&expiry, &id]));
    }
    keys
}

/// The index keys of a trigger's unique keys, per the contract's
/// [`trigger_keys`](taskforge_core::store::rules::trigger_keys).
#[derive(Debug)]
pub(crate) struct TriggerUnique {
    pub(crate) name: Option<Vec<u8>>,
    pub(crate) path: Option<Vec<u8>>,
}

/// The unique index keys `trigger` holds.
pub(crate) fn trigger_unique(trigger: &Trigger) -> TriggerUnique {
    let (name, path) = taskforge_core::store::rules::trigger_keys(trigger);
    let wf = trigger.workflow_id.to_bytes();
    TriggerUnique {
        name: name.map(|name| key(tag::TRIGGER_NAME, &[&wf, name.as_bytes()])),
        path: path.map(|path| key(tag::WEBHOOK_PATH, &[path.as_bytes()])),
    }
}
