//! Cases for [`WorkflowStore`](crate::store::WorkflowStore): workflows, versions, triggers.

use chrono::TimeDelta;

use super::*;
use crate::{CronConfig, Trigger, TriggerId, TriggerKind, WebhookConfig};

/// Stored workflows come back as stored, by id and by name, and list by id.
pub async fn workflow_round_trip<S: Store + Clone>(store: S) {
    let mut workflows: Vec<Workflow> = ["alpha", "beta", "gamma"]
        .into_iter()
        .map(|name| Workflow::new(name, t0()).expect("a valid name"))
        .collect();
    // Inserted newest first: the listing must sort, not replay insertion.
    for workflow in workflows.iter().rev() {
        store
            .insert_workflow(workflow)
            .await
            .expect("insert a workflow");
    }
    for workflow in &workflows {
        let stored = store.get_workflow(workflow.id).await.expect("get");
        assert_eq!(&stored, workflow, "get_workflow returns what was stored");
    }
    let found = store.find_workflow("beta").await.expect("find");
    assert_eq!(found.as_ref(), Some(&workflows[1]), "find_workflow by name");
    let listed = store.list_workflows().await.expect("list");
    workflows.sort_by_key(|w| w.id);
    assert_eq!(listed, workflows, "list_workflows is every workflow by id");
}

/// `AlreadyExists` if the id is taken; the stored workflow is unchanged.
pub async fn workflow_id_is_unique<S: Store + Clone>(store: S) {
    let workflow = new_workflow(&store, "first").await;
    let mut same_id = Workflow::new("second", at(5)).expect("a valid name");
    same_id.id = workflow.id;
    expect_already_exists(
        store.insert_workflow(&same_id).await,
        "insert a workflow with a taken id",
    );
    assert_eq!(store.get_workflow(workflow.id).await.ok(), Some(workflow));
    assert_eq!(
        store.find_workflow("second").await.expect("find"),
        None,
        "the refused workflow's name is not taken"
    );
}

/// `AlreadyExists` if the name is taken (names are unique).
pub async fn workflow_name_is_unique<S: Store + Clone>(store: S) {
    let workflow = new_workflow(&store, "deploy").await;
    let same_name = Workflow::new("deploy", at(5)).expect("a valid name");
    expect_already_exists(
        store.insert_workflow(&same_name).await,
        "insert a workflow with a taken name",
    );
    expect_not_found(
        store.get_workflow(same_name.id).await,
        "the refused workflow",
    );
    assert_eq!(
        store.list_workflows().await.expect("list"),
        vec![workflow.clone()]
    );
    assert_eq!(
        store.find_workflow("deploy").await.expect("find"),
        Some(workflow)
    );
}

/// Of concurrent inserts of one name, exactly one wins.
pub async fn concurrent_inserts_of_one_name_have_one_winner<S: Store + Clone>(store: S) {
    let results = race(&store, 20, |store, _| async move {
        let workflow = Workflow::new("contested", t0()).expect("a valid name");
        let result = store.insert_workflow(&workflow).await;
        (workflow, result)
    })
    .await;
    let mut winners = Vec::new();
    for (workflow, result) in results {
        match result {
            Ok(()) => winners.push(workflow),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("a losing insert must get AlreadyExists, got {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one insert of a name wins");
    assert_eq!(store.list_workflows().await.expect("list"), winners);
    assert_eq!(
        store.find_workflow("contested").await.expect("find"),
        winners.pop()
    );
}

/// `update_workflow` rewrites `active` and `updated_at`.
pub async fn update_workflow_rewrites_mutable_fields<S: Store + Clone>(store: S) {
    let mut workflow = new_workflow(&store, "toggled").await;
    workflow.active = false;
    workflow.updated_at = at(3_600);
    store
        .update_workflow(&workflow)
        .await
        .expect("update a workflow");
    assert_eq!(
        store.get_workflow(workflow.id).await.ok(),
        Some(workflow.clone())
    );
    assert_eq!(
        store.find_workflow("toggled").await.expect("find"),
        Some(workflow)
    );
}

/// `Conflict` if `name` or `created_at` differ from the stored ones; nothing changes.
pub async fn update_workflow_cannot_change_name_or_created_at<S: Store + Clone>(store: S) {
    let workflow = new_workflow(&store, "fixed").await;

    let mut renamed = workflow.clone();
    renamed.name = "renamed".into();
    renamed.active = false;
    expect_conflict(store.update_workflow(&renamed).await, "rename a workflow");

    let mut backdated = workflow.clone();
    backdated.created_at = at(-3_600);
    backdated.active = false;
    expect_conflict(
        store.update_workflow(&backdated).await,
        "change a workflow's created_at",
    );

    assert_eq!(
        store.get_workflow(workflow.id).await.ok(),
        Some(workflow.clone())
    );
    assert_eq!(store.find_workflow("renamed").await.expect("find"), None);
    assert_eq!(
        store.find_workflow("fixed").await.expect("find"),
        Some(workflow)
    );
}

/// `update_workflow` of an absent workflow is `NotFound` and stores nothing.
pub async fn update_of_missing_workflow_is_not_found<S: Store + Clone>(store: S) {
    let workflow = Workflow::new("ghost", t0()).expect("a valid name");
    expect_not_found(
        store.update_workflow(&workflow).await,
        "update a missing workflow",
    );
    expect_not_found(
        store.get_workflow(workflow.id).await,
        "the missing workflow",
    );
    assert!(store.list_workflows().await.expect("list").is_empty());
}

/// Versions come back by id, by number, as the latest, and listed by number.
pub async fn version_round_trip<S: Store + Clone>(store: S) {
    let workflow = new_workflow(&store, "versioned").await;
    let other = new_workflow(&store, "other").await;
    let mut versions = Vec::new();
    for (number, handler) in [(1, "one"), (2, "two"), (3, "three")] {
        let version =
            WorkflowVersion::new(workflow.id, number, definition(handler), at(number.into()));
        store.insert_version(&version).await.expect("publish");
        versions.push(version);
    }
    for version in &versions {
        assert_eq!(
            store.get_version(version.id).await.ok().as_ref(),
            Some(version)
        );
        assert_eq!(
            store
                .get_version_by_number(workflow.id, version.number)
                .await
                .ok()
                .as_ref(),
            Some(version)
        );
    }
    assert_eq!(
        store
            .latest_version(workflow.id)
            .await
            .expect("latest")
            .as_ref(),
        versions.last()
    );
    assert_eq!(
        store.list_versions(workflow.id).await.expect("list"),
        versions
    );
    assert_eq!(store.latest_version(other.id).await.expect("latest"), None);
    assert!(store
        .list_versions(other.id)
        .await
        .expect("list")
        .is_empty());
    expect_not_found(
        store.get_version_by_number(other.id, 1).await,
        "another workflow's version 1",
    );
}

/// `Conflict` unless the number is exactly one more than the latest (1 first).
pub async fn version_numbers_are_consecutive<S: Store + Clone>(store: S) {
    let workflow = new_workflow(&store, "numbered").await;
    for number in [0, 2] {
        let version = WorkflowVersion::new(workflow.id, number, definition("noop"), t0());
        expect_conflict(
            store.insert_version(&version).await,
            &format!("publish v{number} first"),
        );
        expect_not_found(store.get_version(version.id).await, "the refused version");
    }
    let v1 = WorkflowVersion::new(workflow.id, 1, definition("noop"), t0());
    store.insert_version(&v1).await.expect("publish v1");
    for number in [1, 3, u32::MAX] {
        let version = WorkflowVersion::new(workflow.id, number, definition("noop"), t0());
        expect_conflict(
            store.insert_version(&version).await,
            &format!("publish v{number} after v1"),
        );
        expect_not_found(store.get_version(version.id).await, "the refused version");
    }
    assert_eq!(
        store.list_versions(workflow.id).await.expect("list"),
        vec![v1]
    );
    let v2 = WorkflowVersion::new(workflow.id, 2, definition("noop"), t0());
    store
        .insert_version(&v2)
        .await
        .expect("publish v2 after v1");
    assert_eq!(
        store.latest_version(workflow.id).await.expect("latest"),
        Some(v2)
    );
}

/// Of concurrent publishers of one number, exactly one wins; the rest conflict.
pub async fn concurrent_publishers_get_each_number_once<S: Store + Clone>(store: S) {
    let workflow = new_workflow(&store, "popular").await;
    for number in 1..=3 {
        let workflow_id = workflow.id;
        let results = race(&store, 20, move |store, i| async move {
            let version =
                WorkflowVersion::new(workflow_id, number, definition(&format!("h{i}")), t0());
            let result = store.insert_version(&version).await;
            (version, result)
        })
        .await;
        let mut winners = Vec::new();
        for (version, result) in results {
            match result {
                Ok(()) => winners.push(version),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("a losing publisher must get Conflict, got {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one publisher of v{number} wins");
        assert_eq!(
            store.get_version_by_number(workflow.id, number).await.ok(),
            winners.pop()
        );
    }
    assert_eq!(
        store.list_versions(workflow.id).await.expect("list").len(),
        3
    );
}

/// A stored version is never changed: a second version with its number
/// conflicts, one with its id already exists.
pub async fn published_version_is_never_overwritten<S: Store + Clone>(store: S) {
    let workflow = new_workflow(&store, "frozen").await;
    let v1 = WorkflowVersion::new(workflow.id, 1, definition("original"), t0());
    store.insert_version(&v1).await.expect("publish v1");

    let rival = WorkflowVersion::new(workflow.id, 1, definition("rival"), at(1));
    expect_conflict(store.insert_version(&rival).await, "publish another v1");
    let mut same_id = WorkflowVersion::new(workflow.id, 2, definition("rival"), at(1));
    same_id.id = v1.id;
    expect_already_exists(
        store.insert_version(&same_id).await,
        "publish a version with a taken id",
    );

    assert_eq!(store.get_version(v1.id).await.ok().as_ref(), Some(&v1));
    assert_eq!(
        store.list_versions(workflow.id).await.expect("list"),
        vec![v1]
    );
}

/// Publishing a version of an absent workflow is `NotFound`.
pub async fn version_of_missing_workflow_is_not_found<S: Store + Clone>(store: S) {
    let workflow = Workflow::new("ghost", t0()).expect("a valid name");
    let version = WorkflowVersion::new(workflow.id, 1, definition("noop"), t0());
    expect_not_found(
        store.insert_version(&version).await,
        "publish for a missing workflow",
    );
    expect_not_found(store.get_version(version.id).await, "the refused version");
}

fn webhook(path: &str) -> TriggerKind {
    TriggerKind::Webhook(WebhookConfig::new(path))
}

/// Triggers come back as stored and list by id, per workflow or all.
pub async fn trigger_round_trip<S: Store + Clone>(store: S) {
    let a = new_workflow(&store, "a").await;
    let b = new_workflow(&store, "b").await;
    let triggers = vec![
        Trigger::new(a.id, TriggerKind::Manual, t0()),
        Trigger::new(b.id, webhook("/hooks/b-ü"), t0()),
        Trigger::new(
            a.id,
            TriggerKind::Cron(CronConfig::new("0 */5 * * * *", "Europe/Paris")),
            t0(),
        ),
    ];
    for trigger in triggers.iter().rev() {
        store
            .insert_trigger(trigger)
            .await
            .expect("insert a trigger");
    }
    for trigger in &triggers {
        assert_eq!(
            store.get_trigger(trigger.id).await.ok().as_ref(),
            Some(trigger)
        );
    }
    assert_eq!(
        store.list_triggers(Some(a.id)).await.expect("list"),
        vec![triggers[0].clone(), triggers[2].clone()],
        "a workflow's triggers, by id"
    );
    assert_eq!(
        store.list_triggers(None).await.expect("list"),
        triggers,
        "every trigger, by id"
    );
}

/// `AlreadyExists` if the trigger id is taken, `NotFound` if its workflow is absent.
pub async fn trigger_ids_are_unique_and_need_a_workflow<S: Store + Clone>(store: S) {
    let workflow = new_workflow(&store, "triggered").await;
    let trigger = Trigger::new(workflow.id, webhook("/a"), t0());
    store
        .insert_trigger(&trigger)
        .await
        .expect("insert a trigger");

    let mut same_id = Trigger::new(workflow.id, webhook("/b"), at(1));
    same_id.id = trigger.id;
    expect_already_exists(
        store.insert_trigger(&same_id).await,
        "insert a trigger with a taken id",
    );
    assert_eq!(
        store.get_trigger(trigger.id).await.ok().as_ref(),
        Some(&trigger)
    );

    let orphan = Trigger::new(
        Workflow::new("ghost", t0()).expect("a name").id,
        webhook("/c"),
        t0(),
    );
    expect_not_found(
        store.insert_trigger(&orphan).await,
        "insert a trigger of a missing workflow",
    );
    expect_not_found(store.get_trigger(orphan.id).await, "the refused trigger");
    assert_eq!(
        store.list_triggers(None).await.expect("list"),
        vec![trigger]
    );
}

/// `update_trigger` rewrites a trigger, but `Conflict` if it names another
/// workflow, and `NotFound` if absent.
pub async fn update_trigger_cannot_move_it<S: Store + Clone>(store: S) {
    let a = new_workflow(&store, "a").await;
    let b = new_workflow(&store, "b").await;
    let mut trigger = Trigger::new(a.id, webhook("/a"), t0());
    store
        .insert_trigger(&trigger)
        .await
        .expect("insert a trigger");

    trigger.enabled = false;
    trigger.kind = webhook("/a2");
    trigger.updated_at = t0() + TimeDelta::hours(1);
    store
        .update_trigger(&trigger)
        .await
        .expect("update a trigger");
    assert_eq!(
        store.get_trigger(trigger.id).await.ok().as_ref(),
        Some(&trigger)
    );

    let mut moved = trigger.clone();
    moved.workflow_id = b.id;
    moved.enabled = true;
    expect_conflict(store.update_trigger(&moved).await, "move a trigger");
    assert_eq!(
        store.get_trigger(trigger.id).await.ok().as_ref(),
        Some(&trigger)
    );
    assert!(store
        .list_triggers(Some(b.id))
        .await
        .expect("list")
        .is_empty());

    let mut missing = trigger.clone();
    missing.id = TriggerId::new();
    expect_not_found(
        store.update_trigger(&missing).await,
        "update a missing trigger",
    );
    expect_not_found(store.get_trigger(missing.id).await, "the missing trigger");
}
