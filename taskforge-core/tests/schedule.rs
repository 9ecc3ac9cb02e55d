//! Cron schedules: parsing, next slots, DST behaviour in America/New_York,
//! and the missed-run policies.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::America::New_York;
use proptest::prelude::*;
use serde_json::{json, Value};
use taskforge_core::cron::{CronSchedule, MissedRunPolicy, OverlapAction, OverlapPolicy};
use taskforge_core::error::ScheduleError;
use taskforge_core::limits::SKIP_GRACE;
use taskforge_core::{CronConfig, TriggerKind};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid utc time")
}

fn ny(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    New_York
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .earliest()
        .expect("exists in new york")
        .with_timezone(&Utc)
}

fn schedule(expression: &str, timezone: &str) -> CronSchedule {
    CronSchedule::parse(expression, timezone).expect("valid schedule")
}

fn slots_between(
    s: &CronSchedule,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = from;
    while let Some(next) = s.next_after(t) {
        if next >= until {
            break;
        }
        assert!(next > t, "slots must increase: {next} after {t}");
        out.push(next);
        t = next;
    }
    out
}

#[test]
fn five_field_expressions_get_a_seconds_field() {
    let s = schedule("*/15 * * * *", "UTC");
    let t = utc(2026, 1, 1, 10, 7, 30);
    assert_eq!(s.next_after(t), Some(utc(2026, 1, 1, 10, 15, 0)));
    assert_eq!(
        s.next_after(utc(2026, 1, 1, 10, 15, 0)),
        Some(utc(2026, 1, 1, 10, 30, 0))
    );
    assert_eq!(s.expression(), "*/15 * * * *");
}

#[test]
fn six_and_seven_field_forms_pass_through() {
    let s = schedule("30 0 9 * * *", "UTC");
    assert_eq!(
        s.next_after(utc(2026, 1, 1, 0, 0, 0)),
        Some(utc(2026, 1, 1, 9, 0, 30))
    );
    let once = schedule("0 0 12 1 1 * 2027", "UTC");
    assert_eq!(
        once.next_after(utc(2026, 6, 1, 0, 0, 0)),
        Some(utc(2027, 1, 1, 12, 0, 0))
    );
    assert_eq!(once.next_after(utc(2027, 1, 1, 12, 0, 0)), None);
    assert!(CronSchedule::parse("@daily", "UTC").is_ok());
}

#[test]
fn standard_weekdays_mean_what_unix_cron_means() {
    // 2026-01-05 is a Monday.
    let weekdays = schedule("0 9 * * 1-5", "UTC");
    let days: Vec<_> = slots_between(
        &weekdays,
        utc(2026, 1, 4, 0, 0, 0),
        utc(2026, 1, 11, 0, 0, 0),
    )
    .iter()
    .map(|t| t.format("%a").to_string())
    .collect();
    assert_eq!(days, ["Mon", "Tue", "Wed", "Thu", "Fri"]);
    let sunday = schedule("0 9 * * 0", "UTC");
    assert_eq!(
        sunday.next_after(utc(2026, 1, 5, 0, 0, 0)),
        Some(utc(2026, 1, 11, 9, 0, 0))
    );
    assert_eq!(
        schedule("0 9 * * 7", "UTC").next_after(utc(2026, 1, 5, 0, 0, 0)),
        Some(utc(2026, 1, 11, 9, 0, 0))
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let long = "*".repeat(10 * 1024);
    let cases: Vec<(&str, &str)> = vec![
        ("1/0 * * * *", "UTC"),
        ("*/0 * * * *", "UTC"),
        ("* * * * */0", "UTC"),
        ("0", "UTC"),
        ("", "UTC"),
        ("   ", "UTC"),
        (long.as_str(), "UTC"),
        ("0 9 * * lundi", "UTC"),
        ("0 9 * * 1", "Mars/Olympus_Mons"),
        ("0 9 * * 1", ""),
        ("0 ٩ * * *", "UTC"),
        ("61 * * * *", "UTC"),
        ("* * * * * * * *", "UTC"),
        ("0 0 0 0 0 0", "UTC"),
        ("@never", "UTC"),
    ];
    for (expression, timezone) in cases {
        let result = CronSchedule::parse(expression, timezone);
        assert!(
            result.is_err(),
            "{expression:?} in {timezone:?} should be refused"
        );
    }
    assert_eq!(
        CronSchedule::parse("", "UTC").err(),
        Some(ScheduleError::Empty)
    );
    assert_eq!(
        CronSchedule::parse("0", "UTC").err(),
        Some(ScheduleError::FieldCount(1))
    );
    assert_eq!(
        CronSchedule::parse("0 ٩ * * *", "UTC").err(),
        Some(ScheduleError::NonAscii)
    );
    assert!(matches!(
        CronSchedule::parse(&long, "UTC"),
        Err(ScheduleError::TooLong { .. })
    ));
    assert!(matches!(
        CronSchedule::parse("0 9 * * 1", "Mars/Olympus_Mons"),
        Err(ScheduleError::UnknownTimezone(_))
    ));
    let message = CronSchedule::parse("*/0 * * * *", "UTC")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.starts_with("invalid cron expression"), "{message}");
}

#[test]
fn spring_forward_gap_fires_once_at_the_end_of_the_gap() {
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist.
    let s = schedule("30 2 * * *", "America/New_York");
    let day = slots_between(&s, ny(2026, 3, 8, 0, 0), ny(2026, 3, 9, 0, 0));
    assert_eq!(day, [ny(2026, 3, 8, 3, 0)]);
    assert_eq!(day[0], utc(2026, 3, 8, 7, 0, 0));
    // The days around it are untouched.
    assert_eq!(s.next_after(day[0]), Some(ny(2026, 3, 9, 2, 30)));
    assert_eq!(
        s.next_after(ny(2026, 3, 7, 0, 0)),
        Some(ny(2026, 3, 7, 2, 30))
    );

    // Every 15 minutes: the four slots inside the gap collapse into one.
    let quarter = schedule("*/15 * * * *", "America/New_York");
    let around = slots_between(&quarter, ny(2026, 3, 8, 1, 30), ny(2026, 3, 8, 3, 31));
    assert_eq!(
        around,
        [
            ny(2026, 3, 8, 1, 30),
            ny(2026, 3, 8, 1, 45),
            ny(2026, 3, 8, 3, 0),
            ny(2026, 3, 8, 3, 15),
            ny(2026, 3, 8, 3, 30),
        ]
        .into_iter()
        .filter(|t| *t > ny(2026, 3, 8, 1, 30))
        .collect::<Vec<_>>()
    );
}

#[test]
fn fall_back_overlap_fires_once_at_the_first_occurrence() {
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice.
    let s = schedule("30 1 * * *", "America/New_York");
    let day = slots_between(&s, ny(2026, 11, 1, 0, 0), ny(2026, 11, 2, 0, 0));
    assert_eq!(day, [utc(2026, 11, 1, 5, 30, 0)], "01:30 EDT only");

    // Asked from inside the second pass (01:15 EST), the next slot is the
    // next day's, not 01:30 EST.
    let second_pass = utc(2026, 11, 1, 6, 15, 0);
    assert_eq!(s.next_after(second_pass), Some(ny(2026, 11, 2, 1, 30)));

    // The same at 02:30, which exists once.
    let s = schedule("30 2 * * *", "America/New_York");
    let day = slots_between(&s, ny(2026, 11, 1, 0, 0), ny(2026, 11, 2, 0, 0));
    assert_eq!(day, [utc(2026, 11, 1, 7, 30, 0)]);
}

fn once_per_local_day(expression: &str) {
    let s = schedule(expression, "America/New_York");
    // A slot at midnight on January 1st counts: start just before it.
    let start = ny(2026, 1, 1, 0, 0) - TimeDelta::seconds(1);
    let slots = slots_between(&s, start, ny(2027, 1, 1, 0, 0));
    let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    for slot in &slots {
        *per_day
            .entry(slot.with_timezone(&New_York).date_naive())
            .or_default() += 1;
    }
    assert_eq!(per_day.len(), 365, "{expression}: every day of 2026 fires");
    assert!(
        per_day.values().all(|&n| n == 1),
        "{expression}: days firing more than once: {:?}",
        per_day.iter().filter(|(_, &n)| n != 1).collect::<Vec<_>>()
    );
}

#[test]
fn daily_jobs_fire_once_per_local_day_across_dst() {
    once_per_local_day("30 2 * * *");
    once_per_local_day("30 1 * * *");
    once_per_local_day("0 0 * * *");
    once_per_local_day("59 23 * * *");
}

#[test]
fn due_slots_skip_policy() {
    let s = schedule("0 * * * *", "UTC");
    let last = utc(2026, 1, 1, 10, 0, 0);
    // On time (within the grace): the slot fires.
    let now = utc(2026, 1, 1, 11, 0, 20);
    assert_eq!(
        s.due_slots(Some(last), now, MissedRunPolicy::Skip),
        [utc(2026, 1, 1, 11, 0, 0)]
    );
    // Too late for 11:00, and nothing else due: dropped.
    let late = utc(2026, 1, 1, 11, 30, 0);
    assert!(s
        .due_slots(Some(last), late, MissedRunPolicy::Skip)
        .is_empty());
    // After an outage, only a slot that is due right now fires.
    let back = utc(2026, 1, 1, 15, 0, 5);
    assert_eq!(
        s.due_slots(Some(last), back, MissedRunPolicy::Skip),
        [utc(2026, 1, 1, 15, 0, 0)]
    );
    // Nothing after the last fired slot: nothing to do.
    assert!(s
        .due_slots(Some(utc(2026, 1, 1, 15, 0, 0)), back, MissedRunPolicy::Skip)
        .is_empty());
    let grace = TimeDelta::from_std(SKIP_GRACE).expect("small");
    let edge = utc(2026, 1, 1, 11, 0, 0) + grace;
    assert_eq!(
        s.due_slots(Some(last), edge, MissedRunPolicy::Skip).len(),
        1
    );
}

#[test]
fn due_slots_run_once_and_catch_up() {
    let s = schedule("0 * * * *", "UTC");
    let last = utc(2026, 1, 1, 10, 0, 0);
    let now = utc(2026, 1, 1, 15, 30, 0);
    assert_eq!(
        s.due_slots(Some(last), now, MissedRunPolicy::RunOnce),
        [utc(2026, 1, 1, 15, 0, 0)]
    );
    assert_eq!(
        s.due_slots(Some(last), now, MissedRunPolicy::CatchUp { max: 3 }),
        [
            utc(2026, 1, 1, 13, 0, 0),
            utc(2026, 1, 1, 14, 0, 0),
            utc(2026, 1, 1, 15, 0, 0)
        ]
    );
    assert_eq!(
        s.due_slots(Some(last), now, MissedRunPolicy::CatchUp { max: 100 })
            .len(),
        5
    );
    // Catching up is idempotent: from the last slot fired, nothing is due.
    assert!(s
        .due_slots(
            Some(utc(2026, 1, 1, 15, 0, 0)),
            now,
            MissedRunPolicy::CatchUp { max: 100 }
        )
        .is_empty());
    // A new trigger does not fire for its past, whatever the policy.
    assert!(s
        .due_slots(None, now, MissedRunPolicy::CatchUp { max: 100 })
        .is_empty());
    assert_eq!(
        s.due_slots(None, utc(2026, 1, 1, 15, 0, 1), MissedRunPolicy::RunOnce),
        [utc(2026, 1, 1, 15, 0, 0)]
    );
}

#[test]
fn due_slots_after_a_long_outage_stay_cheap() {
    // Every second, last fired a year ago: 31 million missed slots.
    let s = schedule("* * * * * *", "America/New_York");
    let last = utc(2025, 1, 1, 0, 0, 0);
    let now = utc(2026, 1, 1, 0, 0, 0);
    let slots = s.due_slots(Some(last), now, MissedRunPolicy::CatchUp { max: 3 });
    assert_eq!(
        slots,
        [
            now - TimeDelta::seconds(2),
            now - TimeDelta::seconds(1),
            now
        ]
    );
}

#[test]
fn due_slots_across_dst_agree_with_next_after() {
    for expression in ["30 2 * * *", "30 1 * * *", "*/20 * * * *", "0 * * * *"] {
        let s = schedule(expression, "America/New_York");
        for (from, until) in [
            (ny(2026, 3, 7, 12, 0), ny(2026, 3, 9, 12, 0)),
            (ny(2026, 10, 31, 12, 0), ny(2026, 11, 2, 12, 0)),
        ] {
            // due_slots includes a slot at `until` itself.
            let forward = slots_between(&s, from, until + TimeDelta::seconds(1));
            let caught_up = s.due_slots(Some(from), until, MissedRunPolicy::CatchUp { max: 1_000 });
            assert_eq!(caught_up, forward, "{expression} from {from}");
        }
        // From inside the repeated hour, looking back.
        let second_pass = utc(2026, 11, 1, 6, 45, 0);
        let forward = slots_between(
            &s,
            ny(2026, 11, 1, 0, 0),
            second_pass + TimeDelta::seconds(1),
        );
        let back = s.due_slots(
            Some(ny(2026, 11, 1, 0, 0)),
            second_pass,
            MissedRunPolicy::CatchUp { max: 1_000 },
        );
        assert_eq!(back, forward, "{expression} in the second pass");
    }
}

#[test]
fn overlap_policies_decide() {
    assert_eq!(OverlapPolicy::Skip.decide(false), OverlapAction::Start);
    assert_eq!(OverlapPolicy::Allow.decide(true), OverlapAction::Start);
    assert_eq!(OverlapPolicy::Skip.decide(true), OverlapAction::Skip);
    assert_eq!(OverlapPolicy::QueueOne.decide(true), OverlapAction::Queue);
    assert_eq!(
        OverlapPolicy::CancelPrevious.decide(true),
        OverlapAction::CancelPreviousAndStart
    );
}

#[test]
fn cron_trigger_kind_round_trips() {
    for config in [
        CronConfig::new("0 9 * * 1-5", "Europe/Berlin"),
        CronConfig::new("*/5 * * * *", "UTC")
            .with_missed(MissedRunPolicy::CatchUp { max: 10 })
            .with_overlap(OverlapPolicy::QueueOne),
        CronConfig::new("0 0 * * *", "America/New_York")
            .with_missed(MissedRunPolicy::RunOnce)
            .with_overlap(OverlapPolicy::CancelPrevious),
    ] {
        let kind = TriggerKind::Cron(config);
        kind.validate().expect("valid");
        let json = serde_json::to_string(&kind).expect("serializes");
        let back: TriggerKind = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, kind, "{json}");
    }
    let old: TriggerKind =
        serde_json::from_str(r#"{"kind":"cron","expression":"0 * * * *","timezone":"UTC"}"#)
            .expect("the minimal stored form still reads");
    assert_eq!(old, TriggerKind::Cron(CronConfig::new("0 * * * *", "UTC")));
    assert!(TriggerKind::Cron(CronConfig::new("*/0 * * * *", "UTC"))
        .validate()
        .is_err());
}

#[test]
fn cron_input_is_a_json_object_kept_with_the_trigger() {
    let config =
        CronConfig::new("0 * * * *", "UTC").with_input(json!({ "region": "eu", "n": [1, 2] }));
    let kind = TriggerKind::Cron(config.clone());
    kind.validate().expect("an object is a valid input");
    let json = serde_json::to_value(&kind).expect("serializes");
    assert_eq!(json["input"], json!({ "region": "eu", "n": [1, 2] }));
    let back: TriggerKind = serde_json::from_value(json).expect("deserializes");
    assert_eq!(back, kind);
    // Without an input, the stored form is what it was.
    let plain = serde_json::to_value(TriggerKind::Cron(CronConfig::new("0 * * * *", "UTC")))
        .expect("serializes");
    assert!(plain.get("input").is_none(), "{plain}");
    assert!(CronConfig::new("0 * * * *", "UTC")
        .with_input(Value::Null)
        .schedule()
        .is_ok());

    for input in [
        json!([1, 2]),
        json!("eu"),
        json!(3),
        json!(true),
        json!({ "scheduled_at": "2020-01-01T00:00:00Z" }),
        json!({ "region": "eu", "trigger_id": "mine" }),
    ] {
        let config = CronConfig::new("0 * * * *", "UTC").with_input(input.clone());
        assert!(
            matches!(config.schedule(), Err(ScheduleError::InvalidInput(_))),
            "{input}"
        );
        let refused = TriggerKind::Cron(config).validate();
        assert!(refused.is_err(), "{input}");
    }
}

proptest! {
    #[test]
    fn arbitrary_expressions_never_panic(expression in any::<String>(), timezone in any::<String>()) {
        let _ = CronSchedule::parse(&expression, &timezone);
        let _ = CronSchedule::parse(&expression, "UTC");
    }

    #[test]
    fn cron_like_expressions_never_panic(
        fields in prop::collection::vec("[0-9*/,\\-?LW#a-zA-Z]{1,8}", 1..9),
    ) {
        let expression = fields.join(" ");
        if let Ok(s) = CronSchedule::parse(&expression, "America/New_York") {
            let t = utc(2026, 3, 8, 6, 59, 0);
            if let Some(next) = s.next_after(t) {
                prop_assert!(next > t);
            }
            let _ = s.due_slots(Some(t - TimeDelta::days(3)), t, MissedRunPolicy::CatchUp { max: 5 });
        }
    }

    #[test]
    fn next_after_is_strictly_increasing(
        minute in 0u32..60, hour in 0u32..24, offset_minutes in 0i64..(366 * 24 * 60),
    ) {
        let s = schedule(&format!("{minute} {hour} * * *"), "America/New_York");
        let t = utc(2026, 1, 1, 0, 0, 0) + TimeDelta::minutes(offset_minutes);
        let next = s.next_after(t).expect("daily fires");
        prop_assert!(next > t);
        prop_assert!(next - t <= TimeDelta::hours(25));
    }
}

fn days_fired(s: &CronSchedule, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<String> {
    slots_between(s, from, until)
        .iter()
        .map(|t| t.format("%a %d").to_string())
        .collect()
}

#[test]
fn restricted_day_of_month_and_day_of_week_fire_on_either() {
    // Vixie cron: the 1st of the month, and every Monday. 2026-01-01 is a
    // Thursday.
    let s = schedule("0 0 1 * 1", "UTC");
    assert_eq!(
        days_fired(&s, utc(2025, 12, 31, 0, 0, 0), utc(2026, 2, 3, 0, 0, 0)),
        ["Thu 01", "Mon 05", "Mon 12", "Mon 19", "Mon 26", "Sun 01", "Mon 02"]
    );
    // Fridays, and the 13th whatever its day.
    let s = schedule("30 12 13 * fri", "UTC");
    assert_eq!(
        days_fired(&s, utc(2026, 3, 1, 0, 0, 0), utc(2026, 4, 1, 0, 0, 0)),
        ["Fri 06", "Fri 13", "Fri 20", "Fri 27"]
    );
    assert_eq!(
        days_fired(&s, utc(2026, 4, 1, 0, 0, 0), utc(2026, 4, 20, 0, 0, 0)),
        ["Fri 03", "Fri 10", "Mon 13", "Fri 17"]
    );
    // Looking back agrees with looking forward.
    let s = schedule("0 0 1,15 * sun", "America/New_York");
    let from = ny(2026, 1, 1, 0, 0) - TimeDelta::seconds(1);
    let until = ny(2026, 12, 31, 0, 0);
    let forward = slots_between(&s, from, until + TimeDelta::seconds(1));
    assert_eq!(
        forward.len(),
        24 + 52 - 6,
        "1st and 15th, 52 Sundays, 6 of them both (Feb, Mar, Nov)"
    );
    let back = s.due_slots(Some(from), until, MissedRunPolicy::CatchUp { max: 1_000 });
    assert_eq!(back, forward);
}

#[test]
fn a_day_field_starting_with_a_star_is_unrestricted() {
    // As in Vixie cron and cronie: `*/2` counts as `*`, so both day
    // fields must match (odd days that are Mondays).
    let s = schedule("0 0 */2 * 1", "UTC");
    assert_eq!(
        days_fired(&s, utc(2026, 1, 1, 0, 0, 0), utc(2026, 3, 1, 0, 0, 0)),
        ["Mon 05", "Mon 19", "Mon 09", "Mon 23"]
    );
    // A restricted day of month with `*` day of week: that day only.
    let s = schedule("0 0 13 * *", "UTC");
    assert_eq!(
        days_fired(&s, utc(2026, 3, 1, 0, 0, 0), utc(2026, 5, 1, 0, 0, 0)),
        ["Fri 13", "Mon 13"]
    );
}

#[test]
fn six_and_seven_field_forms_keep_the_cron_crate_meaning() {
    // Leading seconds: day of week 1 is Sunday, and both day fields must
    // match (the first of a month that is a Sunday: February, March and
    // November in 2026).
    let s = schedule("0 0 0 1 * 1", "UTC");
    assert_eq!(
        slots_between(&s, utc(2026, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0)),
        [
            utc(2026, 2, 1, 0, 0, 0),
            utc(2026, 3, 1, 0, 0, 0),
            utc(2026, 11, 1, 0, 0, 0)
        ]
    );
    // The same in five fields fires on every Sunday and every 1st.
    let five = schedule("0 0 1 * 0", "UTC");
    assert_eq!(
        slots_between(&five, utc(2025, 12, 31, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0)).len(),
        12 + 52 - 3
    );
    let s = schedule("0 0 0 1 * 1 2026", "UTC");
    assert_eq!(
        s.next_after(utc(2026, 3, 2, 0, 0, 0)),
        Some(utc(2026, 11, 1, 0, 0, 0))
    );
    assert_eq!(s.next_after(utc(2026, 11, 1, 0, 0, 0)), None);
}

#[test]
fn sunday_is_zero_or_seven_in_ranges_and_names() {
    // 2026-01-05 is a Monday.
    let week = (utc(2026, 1, 4, 12, 0, 0), utc(2026, 1, 11, 12, 0, 0));
    let days = |expression: &str| -> Vec<String> {
        slots_between(&schedule(expression, "UTC"), week.0, week.1)
            .iter()
            .map(|t| t.format("%a").to_string())
            .collect()
    };
    assert_eq!(days("0 9 * * fri-sun"), ["Fri", "Sat", "Sun"]);
    assert_eq!(days("0 9 * * 5-7"), ["Fri", "Sat", "Sun"]);
    assert_eq!(days("0 9 * * 5-0"), ["Fri", "Sat", "Sun"]);
    assert_eq!(days("0 9 * * sat,SUN"), ["Sat", "Sun"]);
    assert_eq!(days("0 9 * * 0,7"), ["Sun"]);
    assert_eq!(
        days("0 9 * * 0-7"),
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    );
}

#[test]
fn expressions_that_never_fire_are_refused() {
    for expression in [
        "0 0 30 2 *",
        "0 0 31 4 *",
        "0 0 31 2,4,6,9,11 *",
        "0 0 0 30 2 *",
        "0 0 0 29 2 * 2100",
        "0 0 0 1 1 1 2024",
    ] {
        assert_eq!(
            CronSchedule::parse(expression, "UTC").err(),
            Some(ScheduleError::NeverFires {
                expression: expression.to_owned()
            }),
            "{expression}"
        );
        let refused = TriggerKind::Cron(CronConfig::new(expression, "UTC")).validate();
        assert!(refused.is_err(), "{expression}");
    }
    let message = CronSchedule::parse("0 0 30 2 *", "UTC")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("never fires"), "{message}");
    // February 29th and the 31st of months that have one do fire; so does
    // the 30th of February when Mondays count too.
    for expression in [
        "0 0 29 2 *",
        "0 0 31 * *",
        "0 0 30 2 1",
        "0 0 0 29 2 * 2096",
    ] {
        assert!(
            CronSchedule::parse(expression, "UTC").is_ok(),
            "{expression}"
        );
    }
}

#[test]
fn the_far_ends_of_the_calendar_do_not_panic() {
    let ends = [
        DateTime::<Utc>::MAX_UTC,
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC - TimeDelta::seconds(1),
        DateTime::<Utc>::MIN_UTC + TimeDelta::hours(30),
        utc(262_142, 12, 31, 23, 59, 59),
        utc(-262_143, 1, 1, 0, 0, 0),
        utc(1969, 12, 31, 23, 59, 59),
        utc(2100, 12, 31, 23, 59, 59),
        utc(2101, 1, 1, 0, 0, 0),
    ];
    let policies = [
        MissedRunPolicy::Skip,
        MissedRunPolicy::RunOnce,
        MissedRunPolicy::CatchUp { max: 3 },
    ];
    for timezone in [
        "UTC",
        "America/New_York",
        "Pacific/Kiritimati",
        "Etc/GMT+12",
    ] {
        for expression in ["* * * * * *", "0 0 1 * 1", "30 2 * * *", "@yearly"] {
            let s = schedule(expression, timezone);
            for &t in &ends {
                if let Some(next) = s.next_after(t) {
                    assert!(next > t, "{expression} in {timezone} after {t}");
                }
                for &last in &ends {
                    for policy in policies {
                        for slot in s.due_slots(Some(last), t, policy) {
                            assert!(slot > last && slot <= t, "{expression} {last} {t}");
                        }
                    }
                }
                let _ = s.due_slots(None, t, MissedRunPolicy::Skip);
            }
        }
    }
    // Far in the past, the search starts at the first slot the schedule
    // knows; at the far end, nothing is left.
    let s = schedule("0 0 1 1 *", "UTC");
    assert_eq!(
        s.next_after(DateTime::<Utc>::MIN_UTC),
        Some(utc(1970, 1, 1, 0, 0, 0))
    );
    assert_eq!(s.next_after(DateTime::<Utc>::MAX_UTC), None);
    assert_eq!(
        s.due_slots(
            Some(DateTime::<Utc>::MIN_UTC),
            DateTime::<Utc>::MAX_UTC,
            MissedRunPolicy::RunOnce
        ),
        [utc(2100, 1, 1, 0, 0, 0)]
    );
}
