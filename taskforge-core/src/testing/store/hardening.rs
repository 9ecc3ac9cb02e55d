//! Cases from the hardening of issue 10: trigger names and webhook paths
//! unique in the store (also under concurrent inserts and updates), what
//! `delete_trigger` frees, and a commit retried after its reply was lost.

use crate::run::{StepFailure, StepTransition};
use crate::{CronConfig, Trigger, TriggerId, TriggerKind, WebhookConfig};

use super::*;

/// How many times a race is run: a race that breaks uniqueness does not
/// break it every time.
const ROUNDS: usize = 20;

/// How many tasks race in each round.
const RACERS: usize = 8;

fn hook(path: &str) -> TriggerKind {
    TriggerKind::Webhook(WebhookConfig::new(path))
}

fn hourly() -> TriggerKind {
    TriggerKind::Cron(CronConfig::new("0 * * * *", "UTC"))
}

/// The trigger as stored, by id.
async fn stored_trigger<S: Store>(store: &S, trigger: &Trigger) -> Option<Trigger> {
    store.get_trigger(trigger.id).await.ok()
}

/// The id of the trigger holding webhook `path`, if any.
async fn holder_of<S: Store>(store: &S, path: &str) -> Option<TriggerId> {
    store
        .list_triggers(None)
        .await
        .expect("list")
        .into_iter()
        .find(|t| t.webhook_path() == Some(path))
        .map(|t| t.id)
}

/// Sorts the results of racing inserts or updates into the winners'
/// triggers, panicking unless every loser got `AlreadyExists`.
fn winners(results: Vec<(Trigger, Result<(), StoreError>)>, what: &str) -> Vec<Trigger> {
    let mut winners = Vec::new();
    for (trigger, result) in results {
        match result {
            Ok(()) => winners.push(trigger),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("{what}: a loser must get AlreadyExists, got {e:?}"),
        }
    }
    winners
}

/// Of eight concurrent inserts of triggers with one webhook path (distinct
/// ids and names, in two workflows), exactly one wins and the rest get
/// `AlreadyExists` and store nothing: a path belongs to one trigger.
pub async fn concurrent_creates_of_one_webhook_path_have_one_winner<S: Store + Clone>(store: S) {
    let workflows = [
        new_workflow(&store, "a").await.id,
        new_workflow(&store, "b").await.id,
    ];
    let mut expected = Vec::new();
    for round in 0..ROUNDS {
        let path = format!("hooks/contested-{round}");
        let results = race(&store, RACERS, |store, i| {
            let trigger = Trigger::new(workflows[i % 2], hook(&path), t0())
                .with_name(format!("hook {round}/{i}"));
            async move {
                let result = store.insert_trigger(&trigger).await;
                (trigger, result)
            }
        })
        .await;
        let mut won = winners(results, "insert a taken webhook path");
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one insert of {path:?} wins: {won:?}"
        );
        let winner = won.pop().expect("one winner");
        assert_eq!(
            stored_trigger(&store, &winner).await.as_ref(),
            Some(&winner)
        );
        expected.push(winner);
    }
    let mut listed = store.list_triggers(None).await.expect("list");
    listed.sort_by(|x, y| x.webhook_path().cmp(&y.webhook_path()));
    expected.sort_by(|x, y| x.webhook_path().cmp(&y.webhook_path()));
    assert_eq!(listed, expected, "one trigger per path, and nothing else");
}

/// A trigger name is unique within its workflow: of eight concurrent
/// inserts of one name (different kinds and paths) exactly one wins, the
/// rest get `AlreadyExists`. The name may repeat in another workflow, and
/// the empty name of triggers stored before names existed is no key.
pub async fn trigger_names_are_unique_per_workflow<S: Store + Clone>(store: S) {
    let a = new_workflow(&store, "a").await;
    let b = new_workflow(&store, "b").await;
    let mut expected = Vec::new();
    for round in 0..ROUNDS {
        let name = format!("deploy-{round}");
        let workflow_id = a.id;
        let results = race(&store, RACERS, |store, i| {
            let kind = match i % 3 {
                0 => hook(&format!("hooks/{round}/{i}")),
                1 => hourly(),
                _ => TriggerKind::Manual,
            };
            let trigger = Trigger::new(workflow_id, kind, t0()).with_name(name.clone());
            async move {
                let result = store.insert_trigger(&trigger).await;
                (trigger, result)
            }
        })
        .await;
        let mut won = winners(results, "insert a taken trigger name");
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one insert of {name:?} wins: {won:?}"
        );
        expected.extend(won.pop());
    }
    let mut listed = store.list_triggers(Some(a.id)).await.expect("list");
    listed.sort_by(|x, y| x.name.cmp(&y.name));
    expected.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(listed, expected, "one trigger per name, and nothing else");

    let taken = Trigger::new(a.id, hook("hooks/one-more"), t0()).with_name("deploy-0");
    expect_already_exists(
        store.insert_trigger(&taken).await,
        "insert a taken name in the same workflow",
    );
    expect_not_found(store.get_trigger(taken.id).await, "the refused trigger");
    assert_eq!(
        holder_of(&store, "hooks/one-more").await,
        None,
        "the refused trigger's path is not taken"
    );

    let elsewhere = Trigger::new(b.id, hook("hooks/b"), t0()).with_name("deploy-0");
    store
        .insert_trigger(&elsewhere)
        .await
        .expect("a name may repeat in another workflow");
    assert_eq!(
        stored_trigger(&store, &elsewhere).await.as_ref(),
        Some(&elsewhere)
    );

    let legacy: Vec<Trigger> = (0..2)
        .map(|_| Trigger::new(b.id, hourly(), t0()).with_name(""))
        .collect();
    for trigger in &legacy {
        store
            .insert_trigger(trigger)
            .await
            .expect("unnamed (legacy) triggers do not collide");
    }
    assert_eq!(
        store.list_triggers(Some(b.id)).await.expect("list").len(),
        3
    );
}

/// `update_trigger` onto a name or webhook path another trigger holds is
/// `AlreadyExists` and changes nothing; an update that keeps the trigger's
/// own name and path is no collision; a renamed or moved trigger frees its
/// old name and path.
pub async fn update_trigger_onto_a_taken_name_or_path_changes_nothing<S: Store + Clone>(store: S) {
    let a = new_workflow(&store, "a").await;
    let b = new_workflow(&store, "b").await;
    let one = Trigger::new(a.id, hook("hooks/one"), t0()).with_name("one");
    let two = Trigger::new(a.id, hook("hooks/two"), t0()).with_name("two");
    let other = Trigger::new(b.id, hook("hooks/other"), t0()).with_name("one");
    for trigger in [&one, &two, &other] {
        store.insert_trigger(trigger).await.expect("insert");
    }
    let before = store.list_triggers(None).await.expect("list");

    let mut onto_path = two.clone();
    onto_path.kind = hook("hooks/one");
    onto_path.updated_at = at(60);
    expect_already_exists(
        store.update_trigger(&onto_path).await,
        "move a trigger onto a taken path",
    );
    let mut onto_name = two.clone();
    onto_name.name = "one".into();
    onto_name.updated_at = at(60);
    expect_already_exists(
        store.update_trigger(&onto_name).await,
        "rename a trigger onto a taken name",
    );
    let mut onto_both = two.clone();
    onto_both.name = "one".into();
    onto_both.kind = hook("hooks/one");
    expect_already_exists(
        store.update_trigger(&onto_both).await,
        "rename and move a trigger onto another's name and path",
    );
    let mut across = other.clone();
    across.kind = hook("hooks/two");
    expect_already_exists(
        store.update_trigger(&across).await,
        "move a trigger onto a path of another workflow's trigger",
    );
    assert_eq!(
        store.list_triggers(None).await.expect("list"),
        before,
        "refused updates change nothing"
    );

    let mut same_keys = two.clone();
    same_keys.enabled = false;
    same_keys.updated_at = at(120);
    store
        .update_trigger(&same_keys)
        .await
        .expect("an update that keeps its own name and path");
    assert_eq!(
        stored_trigger(&store, &two).await.as_ref(),
        Some(&same_keys)
    );

    let mut renamed = same_keys.clone();
    renamed.name = "two-renamed".into();
    renamed.kind = hook("hooks/two-moved");
    renamed.updated_at = at(180);
    store
        .update_trigger(&renamed)
        .await
        .expect("rename and move onto a free name and path");
    assert_eq!(stored_trigger(&store, &two).await.as_ref(), Some(&renamed));
    assert_eq!(holder_of(&store, "hooks/two-moved").await, Some(two.id));
    let successor = Trigger::new(a.id, hook("hooks/two"), at(240)).with_name("two");
    store
        .insert_trigger(&successor)
        .await
        .expect("the old name and path are free after the update");
    assert_eq!(
        stored_trigger(&store, &successor).await.as_ref(),
        Some(&successor)
    );
    assert_eq!(stored_trigger(&store, &one).await.as_ref(), Some(&one));
    assert_eq!(stored_trigger(&store, &other).await.as_ref(), Some(&other));
}

/// Of eight concurrent updates moving different triggers onto one free
/// webhook path, exactly one wins; the others get `AlreadyExists` and keep
/// their own path.
pub async fn concurrent_updates_onto_one_path_have_one_winner<S: Store + Clone>(store: S) {
    let workflow = new_workflow(&store, "movers").await;
    let mut triggers = Vec::new();
    for i in 0..RACERS {
        let trigger = Trigger::new(workflow.id, hook(&format!("hooks/own-{i}")), t0())
            .with_name(format!("t{i}"));
        store.insert_trigger(&trigger).await.expect("insert");
        triggers.push(trigger);
    }
    for round in 0..ROUNDS {
        let target = format!("hooks/target-{round}");
        let current = store.list_triggers(Some(workflow.id)).await.expect("list");
        let results = race(&store, RACERS, |store, i| {
            let mut moved = current[i].clone();
            moved.kind = hook(&target);
            moved.updated_at = at(60);
            async move {
                let result = store.update_trigger(&moved).await;
                (moved, result)
            }
        })
        .await;
        let won = winners(results, "move a trigger onto a taken path");
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one update onto {target:?} wins: {won:?}"
        );
        let after = store.list_triggers(Some(workflow.id)).await.expect("list");
        for (was, now) in current.iter().zip(&after) {
            if was.id == won[0].id {
                assert_eq!(now, &won[0], "the winner is stored as written");
            } else {
                assert_eq!(now, was, "a loser is unchanged");
            }
        }
        assert_eq!(holder_of(&store, &target).await, Some(won[0].id));
    }
    assert_eq!(
        store
            .list_triggers(Some(workflow.id))
            .await
            .expect("list")
            .len(),
        RACERS
    );
}

/// `delete_trigger` removes the trigger and frees its name and webhook
/// path (an insert of either then succeeds); the events it received stay.
/// Deleting an absent trigger is `NotFound`.
pub async fn delete_trigger_frees_its_name_and_path<S: Store + Clone>(store: S) {
    let workflow = new_workflow(&store, "deleting").await;
    let trigger = Trigger::new(workflow.id, hook("hooks/gone"), t0()).with_name("gone");
    let kept = Trigger::new(workflow.id, hourly(), t0()).with_name("kept");
    store.insert_trigger(&trigger).await.expect("insert");
    store.insert_trigger(&kept).await.expect("insert");
    let mut received = event(
        &workflow,
        Some("d-1"),
        EventOutcome::WorkflowInactive,
        at(1),
    );
    received.trigger_id = Some(trigger.id);
    store
        .insert_event(&received, None)
        .await
        .expect("insert an event of the trigger");

    store
        .delete_trigger(trigger.id)
        .await
        .expect("delete a trigger");
    expect_not_found(store.get_trigger(trigger.id).await, "the deleted trigger");
    assert_eq!(
        store.list_triggers(None).await.expect("list"),
        vec![kept.clone()],
        "only the deleted trigger is gone"
    );
    assert_eq!(holder_of(&store, "hooks/gone").await, None);
    assert_eq!(
        store.get_event(received.id).await.ok().as_ref(),
        Some(&received),
        "the events it received stay"
    );
    expect_not_found(
        store.delete_trigger(trigger.id).await,
        "delete a deleted trigger",
    );
    expect_not_found(
        store.delete_trigger(TriggerId::new()).await,
        "delete a trigger that never existed",
    );

    let successor = Trigger::new(workflow.id, hook("hooks/gone"), at(10)).with_name("gone");
    store
        .insert_trigger(&successor)
        .await
        .expect("the name and path are free again");
    assert_eq!(
        stored_trigger(&store, &successor).await.as_ref(),
        Some(&successor)
    );
    assert_eq!(stored_trigger(&store, &kept).await.as_ref(), Some(&kept));
}

/// A commit retried after its reply was lost (the same fence and the same
/// content, already applied) succeeds and changes nothing: the start of a
/// run, a failed attempt with its retry time, and the end of the run.
/// Once the lease is lost, the same retry conflicts.
pub async fn a_commit_retried_after_a_lost_reply_succeeds<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "retried").await;
    let run = insert_queued(&store, &version).await;

    // The start: fenced on the claim (queued), the run now running.
    let mut owned = store
        .claim_run(run.id, "w", t0(), at(30))
        .await
        .expect("claim");
    let queued_fence = owned.fence();
    owned.transition(RunTransition::Start, t0()).expect("start");
    store
        .commit(queued_fence, Some(&owned), &[])
        .await
        .expect("commit the start");
    let stored = store.get_run(run.id).await.expect("get");
    store
        .commit(queued_fence, Some(&owned), &[])
        .await
        .expect("the start committed again after a lost reply");
    assert_eq!(store.get_run(run.id).await.expect("get"), stored);

    // A failed attempt with its retry time, in the same write as a change
    // of the run: its first commit finished the attempt.
    let fence = owned.fence();
    let mut failed = step(&owned, 0, 1);
    failed.error = Some(StepFailure {
        message: "flaky".into(),
        terminal: false,
        detail: None,
    });
    failed.retry_at = Some(at(10));
    failed
        .transition(StepTransition::Fail, at(2))
        .expect("fail");
    owned.deadline = Some(at(3_600));
    let failed_steps = std::slice::from_ref(&failed);
    store
        .commit(fence, Some(&owned), failed_steps)
        .await
        .expect("commit a failed attempt");
    let stored = store.get_run(run.id).await.expect("get");
    let stored_steps = store.list_step_runs(run.id).await.expect("steps");
    for _ in 0..2 {
        store
            .commit(fence, Some(&owned), failed_steps)
            .await
            .expect("a finished attempt committed again after a lost reply");
        store
            .commit(fence, None, failed_steps)
            .await
            .expect("the attempt alone committed again");
    }
    assert_eq!(store.get_run(run.id).await.expect("get"), stored);
    assert_eq!(
        store.list_step_runs(run.id).await.expect("steps"),
        stored_steps
    );

    // The end: the last attempt succeeded and the run with it.
    let mut succeeded = step(&owned, 0, 2);
    succeeded.output = Some(json!({"built": true}));
    succeeded
        .transition(StepTransition::Succeed, at(12))
        .expect("succeed");
    owned.output = succeeded.output.clone();
    owned
        .transition(RunTransition::Succeed, at(12))
        .expect("succeed");
    let end_steps = std::slice::from_ref(&succeeded);
    store
        .commit(fence, Some(&owned), end_steps)
        .await
        .expect("commit the end of the run");
    let stored = store.get_run(run.id).await.expect("get");
    assert_eq!(stored.status, RunStatus::Succeeded);
    let stored_steps = store.list_step_runs(run.id).await.expect("steps");
    store
        .commit(fence, Some(&owned), end_steps)
        .await
        .expect("the end committed again after a lost reply");
    assert_eq!(store.get_run(run.id).await.expect("get"), stored);
    assert_eq!(
        store.list_step_runs(run.id).await.expect("steps"),
        stored_steps
    );
}

/// A retried commit is accepted only if it is exactly what was applied: a
/// different commit under the same (now stale) fence still conflicts and
/// writes nothing, so does a retry once another engine claimed the run,
/// and a commit under a terminal fence is never accepted, not even one
/// that writes exactly what is stored.
pub async fn only_an_identical_retry_is_accepted<S: Store + Clone>(store: S) {
    let (_, version) = setup(&store, "strict").await;
    let run = insert_queued(&store, &version).await;
    let mut owned = start(&store, run.id, "w", t0()).await;
    let running = owned.fence();
    let mut attempt = step(&owned, 0, 1);
    attempt.output = Some(json!("first"));
    attempt
        .transition(StepTransition::Succeed, at(2))
        .expect("succeed");
    owned.output = attempt.output.clone();
    owned
        .transition(RunTransition::Succeed, at(2))
        .expect("succeed");
    store
        .commit(running, Some(&owned), std::slice::from_ref(&attempt))
        .await
        .expect("commit the end of the run");
    let run_before = store.get_run(run.id).await.expect("get");
    let steps_before = store.list_step_runs(run.id).await.expect("steps");

    let mut other_output = owned.clone();
    other_output.output = Some(json!("second"));
    let mut other_status = owned.clone();
    other_status.status = RunStatus::Failed;
    let mut other_step = attempt.clone();
    other_step.output = Some(json!("second"));
    let differences: [(&str, Option<&WorkflowRun>, Vec<StepRun>); 6] = [
        ("another output", Some(&other_output), vec![attempt.clone()]),
        ("another status", Some(&other_status), vec![attempt.clone()]),
        ("another step output", Some(&owned), vec![other_step]),
        (
            "an extra attempt",
            Some(&owned),
            vec![attempt.clone(), step(&owned, 1, 1)],
        ),
        ("a new attempt alone", None, vec![step(&owned, 1, 1)]),
        ("nothing but the fence", None, Vec::new()),
    ];
    for (what, run_written, steps) in &differences {
        expect_conflict(
            store.commit(running, *run_written, steps).await,
            &format!("{what} under the stale running fence"),
        );
    }
    let terminal = owned.fence();
    assert_eq!(terminal.status, RunStatus::Succeeded);
    expect_conflict(
        store
            .commit(terminal, Some(&owned), std::slice::from_ref(&attempt))
            .await,
        "the stored content under a terminal fence",
    );
    expect_conflict(
        store.commit(terminal, Some(&owned), &[]).await,
        "the stored run under a terminal fence",
    );
    expect_conflict(
        store.commit(terminal, None, &[]).await,
        "nothing under a terminal fence",
    );
    assert_eq!(store.get_run(run.id).await.expect("get"), run_before);
    assert_eq!(
        store.list_step_runs(run.id).await.expect("steps"),
        steps_before
    );

    // A retry after the lease was lost to another claim is not applied.
    let other = insert_queued(&store, &version).await;
    let stale = start(&store, other.id, "a", t0()).await;
    let mut failed = step(&stale, 0, 1);
    failed.retry_at = Some(at(5));
    failed
        .transition(StepTransition::Fail, at(2))
        .expect("fail");
    let failed_steps = std::slice::from_ref(&failed);
    store
        .commit(stale.fence(), None, failed_steps)
        .await
        .expect("commit a failed attempt");
    store
        .claim_run(other.id, "b", at(30), at(60))
        .await
        .expect("claim after the lease lapsed");
    let run_before = store.get_run(other.id).await.expect("get");
    expect_conflict(
        store.commit(stale.fence(), None, failed_steps).await,
        "a retry after the lease was lost",
    );
    expect_conflict(
        store
            .commit(stale.fence(), Some(&stale), failed_steps)
            .await,
        "a retry with the run after the lease was lost",
    );
    assert_eq!(store.get_run(other.id).await.expect("get"), run_before);
    assert_eq!(
        store.list_step_runs(other.id).await.expect("steps"),
        vec![failed]
    );
}
