//! Cron scenarios on a manual clock: refused expressions, a daily schedule
//! across DST changes, missed-run and overlap policies, and two engines
//! sharing a schedule.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use crate::clock::ManualClock;
use crate::cron::{MissedRunPolicy, OverlapPolicy};
use crate::{CronConfig, EngineError, EventOutcome, EventQuery, TriggerKind};

use super::*;

/// Bad cron expressions and timezones are refused with a typed error.
pub async fn bad_cron_triggers_are_refused<S: Store>(store: S) {
    let engine = Engine::builder(store, registry()).build();
    let wf = workflow(&engine, "cron-bad").await;
    let long = "*".repeat(10 * 1024);
    for (expression, timezone) in [
        ("1/0 * * * *", "UTC"),
        ("*/0 * * * *", "UTC"),
        ("0", "UTC"),
        (long.as_str(), "UTC"),
        ("0 ☃ * * *", "UTC"),
        ("0 3 * * *", "Mars/Olympus_Mons"),
    ] {
        let result = engine
            .create_trigger(wf, TriggerKind::Cron(CronConfig::new(expression, timezone)))
            .await;
        assert!(
            matches!(result, Err(EngineError::InvalidTrigger(_))),
            "{expression:.20} in {timezone}: {result:?}"
        );
    }
    assert!(engine.triggers(wf).await.expect("triggers").is_empty());
}

fn new_york(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    chrono_tz::America::New_York
        .with_ymd_and_hms(y, m, d, h, 0, 0)
        .earliest()
        .expect("a valid local time")
        .with_timezone(&Utc)
}

/// A daily cron in America/New_York, stepped hour by hour through 2026 on a
/// manual clock, fires exactly once on every local day, across both DST
/// changes.
pub async fn daily_cron_fires_once_a_day_across_dst<S: Store>(store: S) {
    let clock = ManualClock::new(new_york(2026, 1, 1, 0));
    let engine = Engine::builder(store, registry())
        .clock(clock.clone())
        .build();
    let wf = workflow(&engine, "nightly").await;
    engine
        .create_trigger(
            wf,
            TriggerKind::Cron(
                CronConfig::new("30 2 * * *", "America/New_York")
                    .with_missed(MissedRunPolicy::RunOnce),
            ),
        )
        .await
        .expect("trigger");
    let end = new_york(2027, 1, 1, 0);
    let mut days = Vec::new();
    while crate::clock::Clock::now(&clock) < end {
        clock.advance(TimeDelta::hours(1));
        for firing in engine.fire_due_cron().await.expect("fire") {
            assert!(firing.outcome.run_id().is_some(), "{firing:?}");
            days.push(
                firing
                    .scheduled_at
                    .with_timezone(&chrono_tz::America::New_York)
                    .date_naive(),
            );
        }
    }
    let unique: BTreeSet<_> = days.iter().copied().collect();
    assert_eq!(days.len(), 365, "one firing a day");
    assert_eq!(unique.len(), 365, "never twice on one day");
}

/// An engine down for three ticks does what each missed-run policy says.
pub async fn missed_ticks_follow_the_policy<S: Store>(store: S) {
    let start = Utc
        .with_ymd_and_hms(2026, 6, 1, 12, 0, 30)
        .single()
        .expect("time");
    let clock = ManualClock::new(start);
    let engine = Engine::builder(store, registry())
        .clock(clock.clone())
        .build();
    let mut triggers = Vec::new();
    for (name, policy) in [
        ("skip", MissedRunPolicy::Skip),
        ("run-once", MissedRunPolicy::RunOnce),
        ("catch-up", MissedRunPolicy::CatchUp { max: 10 }),
        ("catch-up-2", MissedRunPolicy::CatchUp { max: 2 }),
    ] {
        let wf = workflow(&engine, name).await;
        let trigger = engine
            .create_trigger(
                wf,
                TriggerKind::Cron(CronConfig::new("0 * * * *", "UTC").with_missed(policy)),
            )
            .await
            .expect("trigger");
        triggers.push(trigger.id);
    }
    // Up at 13:00:10: each trigger fires the 13:00 slot.
    clock.set(start + TimeDelta::minutes(59) + TimeDelta::seconds(40));
    let firings = engine.fire_due_cron().await.expect("fire");
    assert_eq!(firings.len(), 4, "{firings:?}");
    // Down for the 14:00, 15:00 and 16:00 ticks; back at 16:20.
    clock.set(start + TimeDelta::hours(4) + TimeDelta::minutes(19) + TimeDelta::seconds(30));
    let firings = engine.fire_due_cron().await.expect("fire");
    let slots = |trigger| -> Vec<u32> {
        use chrono::Timelike;
        firings
            .iter()
            .filter(|f| f.trigger_id == trigger)
            .map(|f| f.scheduled_at.hour())
            .collect()
    };
    assert_eq!(
        slots(triggers[0]),
        Vec::<u32>::new(),
        "skip fires nothing late"
    );
    assert_eq!(slots(triggers[1]), [16], "run once fires the latest");
    assert_eq!(
        slots(triggers[2]),
        [14, 15, 16],
        "catch up fires all, oldest first"
    );
    assert_eq!(slots(triggers[3]), [15, 16], "catch up is bounded");
    // Nothing is due twice.
    assert!(engine.fire_due_cron().await.expect("fire").is_empty());
}

/// Two engines on one store that both see a slot due fire it once.
pub async fn two_engines_fire_each_slot_once<S: Store + Clone>(store: S) {
    let start = Utc
        .with_ymd_and_hms(2026, 6, 1, 11, 55, 20)
        .single()
        .expect("time");
    let clock = ManualClock::new(start);
    let a = Engine::builder(store.clone(), registry())
        .clock(clock.clone())
        .build();
    let b = Engine::builder(store, registry())
        .clock(clock.clone())
        .build();
    let wf = workflow(&a, "shared-cron").await;
    let trigger = a
        .create_trigger(wf, TriggerKind::Cron(CronConfig::new("*/5 * * * *", "UTC")))
        .await
        .expect("trigger");
    for _ in 0..6 {
        clock.advance(TimeDelta::minutes(5));
        let (x, y) = tokio::join!(a.fire_due_cron(), b.fire_due_cron());
        x.expect("a fires");
        y.expect("b fires");
    }
    let events = a
        .list_events(&EventQuery {
            trigger_id: Some(trigger.id),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    assert_eq!(events.items.len(), 6);
    let runs = a
        .list_runs(&crate::RunQuery {
            workflow_id: Some(wf),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.items.len(), 6);
}

/// With the skip overlap policy, a tick while the previous run is still
/// going is recorded as skipped and starts nothing.
pub async fn overlapping_ticks_follow_the_policy<S: Store>(store: S) {
    let start = Utc
        .with_ymd_and_hms(2026, 6, 1, 11, 59, 30)
        .single()
        .expect("time");
    let clock = ManualClock::new(start);
    // Not started: runs stay queued, so the previous run is still going.
    let engine = Engine::builder(store, registry())
        .clock(clock.clone())
        .build();
    let wf = workflow(&engine, "no-overlap").await;
    engine
        .create_trigger(
            wf,
            TriggerKind::Cron(
                CronConfig::new("* * * * *", "UTC").with_overlap(OverlapPolicy::Skip),
            ),
        )
        .await
        .expect("trigger");
    clock.advance(TimeDelta::seconds(40));
    let first = engine.fire_due_cron().await.expect("fire");
    assert!(first[0].outcome.run_id().is_some());
    clock.advance(TimeDelta::minutes(1));
    let second = engine.fire_due_cron().await.expect("fire");
    assert!(
        matches!(second[0].outcome, EventOutcome::Skipped { .. }),
        "{second:?}"
    );
}
