//! Property tests of workflow definition parsing and validation.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use taskforge_core::error::DefinitionProblem;
use taskforge_core::limits::MAX_NAME_LEN;
use taskforge_core::{Backoff, RetryPolicy, StepDefinition, WorkflowDefinition};

const KNOWN_HANDLERS: [&str; 4] = ["noop", "http.get", "send-mail", "deploy_v2"];

/// Whether `s` is a valid step key or handler name, as documented: 1 to
/// [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9_.-]`.
fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Keys of every kind: valid, from a small pool (so duplicates are common),
/// empty, unicode, too long, with spaces or control characters.
fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9_.-]{1,16}",
        4 => proptest::sample::select(vec!["build", "test", "deploy", "a", "A"]).prop_map(String::from),
        1 => Just(String::new()),
        1 => "\\PC{1,12}",
        1 => "[a-z]{120,140}",
        1 => "[ a-z\t\n\u{0}é🦀]{1,8}",
    ]
}

fn any_handler() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KNOWN_HANDLERS.to_vec()).prop_map(String::from),
        1 => "[A-Za-z0-9_.-]{1,16}",
        1 => "\\PC{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn millis(max: u64) -> impl Strategy<Value = Duration> {
    (0..=max).prop_map(Duration::from_millis)
}

/// Retry policies, valid or not.
fn any_policy() -> impl Strategy<Value = RetryPolicy> {
    let backoff = prop_oneof![
        millis(1_000).prop_map(|delay| Backoff::Fixed { delay }),
        (millis(1_000), 0..4_u32, millis(1_000), 0..=150_u8).prop_map(
            |(initial, factor, max, jitter_percent)| Backoff::Exponential {
                initial,
                factor,
                max,
                jitter_percent,
            }
        ),
    ];
    (0..4_u32, backoff).prop_map(|(max_attempts, backoff)| RetryPolicy {
        max_attempts,
        backoff,
    })
}

/// Retry policies the validator must accept.
fn valid_policy() -> impl Strategy<Value = RetryPolicy> {
    let backoff = prop_oneof![
        millis(1_000).prop_map(|delay| Backoff::Fixed { delay }),
        (millis(500), 1..4_u32, 500..=1_000_u64, 0..=100_u8).prop_map(
            |(initial, factor, max, jitter_percent)| Backoff::Exponential {
                initial,
                factor,
                max: Duration::from_millis(max),
                jitter_percent,
            }
        ),
    ];
    (1..6_u32, backoff).prop_map(|(max_attempts, backoff)| RetryPolicy {
        max_attempts,
        backoff,
    })
}

fn any_step() -> impl Strategy<Value = StepDefinition> {
    (
        any_key(),
        any_handler(),
        json_value(),
        prop::option::of(any_policy()),
        prop::option::of(millis(3)),
    )
        .prop_map(|(key, handler, config, retry, timeout)| StepDefinition {
            key,
            handler,
            config,
            retry,
            timeout,
        })
}

fn any_definition() -> impl Strategy<Value = WorkflowDefinition> {
    (
        prop::collection::vec(any_step(), 0..16),
        prop::option::of(any_policy()),
        prop::option::of(millis(3)),
    )
        .prop_map(|(steps, retry, timeout)| WorkflowDefinition {
            steps,
            retry,
            timeout,
        })
}

fn valid_definition() -> impl Strategy<Value = WorkflowDefinition> {
    let keys = prop::collection::hash_set("[A-Za-z0-9_.-]{1,128}", 1..20);
    (
        keys,
        prop::option::of(valid_policy()),
        prop::option::of(1..10_000_u64),
    )
        .prop_flat_map(|(keys, retry, timeout)| {
            let n = keys.len();
            let steps = (
                Just(keys.into_iter().collect::<Vec<_>>()),
                prop::collection::vec(
                    (
                        proptest::sample::select(KNOWN_HANDLERS.to_vec()),
                        json_value(),
                        prop::option::of(valid_policy()),
                        prop::option::of(1..10_000_u64),
                    ),
                    n,
                ),
            );
            (steps, Just(retry), Just(timeout))
        })
        .prop_map(|((keys, rest), retry, timeout)| WorkflowDefinition {
            steps: keys
                .into_iter()
                .zip(rest)
                .map(|(key, (handler, config, retry, timeout))| StepDefinition {
                    key,
                    handler: handler.to_owned(),
                    config,
                    retry,
                    timeout: timeout.map(Duration::from_millis),
                })
                .collect(),
            retry,
            timeout: timeout.map(Duration::from_millis),
        })
}

/// The duplicates a validator must report: every valid key seen before,
/// paired with its first position, in definition order.
fn expected_duplicates(definition: &WorkflowDefinition) -> Vec<DefinitionProblem> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut duplicates = Vec::new();
    for (index, step) in definition.steps.iter().enumerate() {
        if !is_identifier(&step.key) {
            continue;
        }
        match first.get(step.key.as_str()) {
            Some(&first) => duplicates.push(DefinitionProblem::DuplicateStepKey {
                key: step.key.clone(),
                first,
                second: index,
            }),
            None => {
                first.insert(&step.key, index);
            }
        }
    }
    duplicates
}

proptest! {
    /// Validation of any definition answers without a panic, and a refusal
    /// lists at least one problem.
    #[test]
    fn validation_never_panics(definition in any_definition()) {
        let known: HashSet<&str> = KNOWN_HANDLERS.into_iter().collect();
        for result in [
            definition.validate(),
            definition.validate_with(|h| known.contains(h)),
        ] {
            if let Err(e) = result {
                prop_assert!(!e.problems.is_empty());
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    /// Every duplicate of a valid key is reported, with both positions, and
    /// nothing else is reported as a duplicate.
    #[test]
    fn every_duplicate_key_is_reported(definition in any_definition()) {
        let expected = expected_duplicates(&definition);
        let reported: Vec<DefinitionProblem> = match definition.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e
                .problems
                .into_iter()
                .filter(|p| matches!(p, DefinitionProblem::DuplicateStepKey { .. }))
                .collect(),
        };
        prop_assert_eq!(reported, expected);
    }

    /// A definition whose keys are valid and unique and whose handlers are
    /// known is accepted, and survives a JSON round trip.
    #[test]
    fn valid_definitions_are_accepted(definition in valid_definition()) {
        let known: HashSet<&str> = KNOWN_HANDLERS.into_iter().collect();
        prop_assert_eq!(definition.validate_with(|h| known.contains(h)), Ok(()));
        let json = serde_json::to_vec(&definition).expect("serialize a definition");
        let parsed = WorkflowDefinition::from_json(&json);
        prop_assert_eq!(parsed.as_ref(), Ok(&definition));
        prop_assert_eq!(
            parsed.map(|p| p.content_hash()).ok(),
            Some(definition.content_hash())
        );
    }

    /// Parsing arbitrary bytes answers without a panic; what parses is valid.
    #[test]
    fn from_json_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_from_json(&bytes)?;
    }

    /// Parsing damaged definitions (truncated, bytes changed) answers
    /// without a panic; what parses is valid.
    #[test]
    fn from_json_never_panics_on_damaged_definitions(
        definition in any_definition(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut json = serde_json::to_vec(&definition).expect("serialize a definition");
        check_from_json(&json)?;
        for (at, byte) in flips {
            let i = at.index(json.len());
            json[i] = byte;
        }
        check_from_json(&json)?;
        json.truncate(cut.index(json.len() + 1));
        check_from_json(&json)?;
    }
}

fn check_from_json(bytes: &[u8]) -> Result<(), TestCaseError> {
    match WorkflowDefinition::from_json(bytes) {
        Ok(definition) => prop_assert_eq!(definition.validate(), Ok(())),
        Err(e) => prop_assert!(!e.problems.is_empty()),
    }
    Ok(())
}

#[test]
fn documented_json_shapes_parse() {
    let json = json!({
        "steps": [
            {"key": "build", "handler": "noop", "config": {"ünïcode": "🦀"}, "timeout": 1000},
            {"key": "deploy", "handler": "noop", "retry": {"max_attempts": 3}},
        ],
        "timeout": 60000,
    });
    let bytes = serde_json::to_vec(&json).expect("serialize");
    let definition = WorkflowDefinition::from_json(&bytes).expect("a valid definition");
    assert_eq!(definition.steps.len(), 2);
    assert_eq!(
        definition.steps[0].timeout,
        Some(Duration::from_millis(1_000))
    );
    assert_eq!(definition.timeout, Some(Duration::from_secs(60)));
}
