//! Property tests of workflow definition parsing and validation.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use taskforge_core::error::DefinitionProblem;
use taskforge_core::limits::MAX_NAME_LEN;
use taskforge_core::{Backoff, Filter, RetryPolicy, StepDefinition, WorkflowDefinition};

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

/// Conditions, valid or not: on the input, on a step's output, or on
/// nothing a condition may read.
fn any_condition() -> impl Strategy<Value = Filter> {
    prop_oneof![
        "[a-z]{0,6}".prop_map(|k| Filter::exists(format!("/input/{k}"))),
        any_key().prop_map(|k| Filter::equals(format!("/steps/{k}/ok"), true)),
        "\\PC{0,8}".prop_map(Filter::exists),
    ]
}

fn any_step() -> impl Strategy<Value = StepDefinition> {
    (
        (any_key(), any_handler(), json_value()),
        prop::option::of(any_policy()),
        prop::option::of(millis(3)),
        prop::option::of(prop::collection::vec(any_key(), 0..4)),
        prop::option::of(any_condition()),
    )
        .prop_map(
            |((key, handler, config), retry, timeout, depends_on, condition)| StepDefinition {
                key,
                handler,
                config,
                retry,
                timeout,
                secrets: Vec::new(),
                depends_on,
                condition,
                wait: None,
            },
        )
}

fn any_definition() -> impl Strategy<Value = WorkflowDefinition> {
    (
        prop::collection::vec(any_step(), 0..16),
        prop::option::of(any_policy()),
        prop::option::of(millis(3)),
        prop::option::of(0..4_u32),
        prop::option::of(any_key()),
    )
        .prop_map(
            |(steps, retry, timeout, max_parallel_steps, output)| WorkflowDefinition {
                steps,
                retry,
                timeout,
                max_parallel_steps,
                output,
                concurrency: None,
                debounce: None,
                rate_limit: None,
            },
        )
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
                    secrets: Vec::new(),
                    depends_on: None,
                    condition: None,
                    wait: None,
                })
                .collect(),
            retry,
            timeout: timeout.map(Duration::from_millis),
            max_parallel_steps: None,
            output: None,
            concurrency: None,
            debounce: None,
            rate_limit: None,
        })
}

/// Valid definitions with dependencies: each step depends on some earlier
/// ones (so there is no cycle), may have a condition on the input or on
/// an ancestor's output, and the run's output may be declared.
fn valid_dag() -> impl Strategy<Value = WorkflowDefinition> {
    (1..9_usize)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(
                    (
                        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
                        prop::option::of((any::<bool>(), any::<prop::sample::Index>())),
                    ),
                    n,
                ),
                prop::option::of(1..10_u32),
                prop::option::of(any::<prop::sample::Index>()),
            )
        })
        .prop_map(|(steps, max_parallel_steps, output)| {
            let n = steps.len();
            let mut definition = WorkflowDefinition::new(Vec::new());
            let mut ancestors: Vec<Vec<usize>> = Vec::new();
            for (i, (picks, condition)) in steps.into_iter().enumerate() {
                let mut depends_on: Vec<usize> = Vec::new();
                if i > 0 {
                    for pick in picks {
                        let at = pick.index(i);
                        if !depends_on.contains(&at) {
                            depends_on.push(at);
                        }
                    }
                }
                let mut mine: Vec<usize> = depends_on.clone();
                for &d in &depends_on {
                    mine.extend(&ancestors[d]);
                }
                mine.sort_unstable();
                mine.dedup();
                let mut step = StepDefinition::new(format!("k{i}"), "noop")
                    .depends_on(depends_on.iter().map(|d| format!("k{d}")));
                step.condition = condition.map(|(on_input, pick)| {
                    if on_input || mine.is_empty() {
                        Filter::equals("/input/go", true)
                    } else {
                        Filter::exists(format!("/steps/k{}/ok", mine[pick.index(mine.len())]))
                    }
                });
                ancestors.push(mine);
                definition.steps.push(step);
            }
            definition.max_parallel_steps = max_parallel_steps;
            definition.output = output.map(|o| format!("k{}", o.index(n)));
            definition
        })
}

/// Whether the dependencies of `definition` (known keys only, a step on
/// itself left out) hold a cycle: Kahn's algorithm cannot order them.
fn has_cycle(definition: &WorkflowDefinition) -> bool {
    let position: HashMap<&str, usize> = definition
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), i))
        .collect();
    let n = definition.steps.len();
    let mut edges: Vec<HashSet<usize>> = vec![HashSet::new(); n];
    for (i, step) in definition.steps.iter().enumerate() {
        for key in step.depends_on.iter().flatten() {
            if let Some(&d) = position.get(key.as_str()) {
                if d != i {
                    edges[i].insert(d);
                }
            }
        }
    }
    let mut remaining: Vec<usize> = edges.iter().map(HashSet::len).collect();
    let mut ready: Vec<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut ordered = 0;
    while let Some(d) = ready.pop() {
        ordered += 1;
        for i in 0..n {
            if edges[i].contains(&d) {
                remaining[i] -= 1;
                if remaining[i] == 0 {
                    ready.push(i);
                }
            }
        }
    }
    ordered < n
}

/// Definitions with valid, unique keys `k0..` whose `depends_on` name
/// other steps, unknown ones, themselves, and repeats, in any direction.
fn tangled() -> impl Strategy<Value = WorkflowDefinition> {
    (1..9_usize)
        .prop_flat_map(|n| {
            prop::collection::vec(
                prop::option::of(prop::collection::vec(
                    prop_oneof![
                        6 => (0..n).prop_map(|i| format!("k{i}")),
                        1 => Just("ghost".to_owned()),
                    ],
                    0..4,
                )),
                n,
            )
        })
        .prop_map(|deps| {
            WorkflowDefinition::new(
                deps.into_iter()
                    .enumerate()
                    .map(|(i, depends_on)| {
                        let mut step = StepDefinition::new(format!("k{i}"), "noop");
                        step.depends_on = depends_on;
                        step
                    })
                    .collect(),
            )
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

    /// Dependencies that are acyclic and known, conditions on the input
    /// or on an ancestor, and a declared output are accepted, and survive
    /// a JSON round trip with their hash.
    #[test]
    fn valid_dags_are_accepted(definition in valid_dag()) {
        prop_assert_eq!(definition.validate(), Ok(()));
        let json = serde_json::to_vec(&definition).expect("serialize a definition");
        let parsed = WorkflowDefinition::from_json(&json);
        prop_assert_eq!(parsed.as_ref(), Ok(&definition));
        prop_assert_eq!(parsed.map(|p| p.content_hash()).ok(), Some(definition.content_hash()));
    }

    /// Every dependency problem is reported at once: each unknown
    /// dependency, each step on itself, each repeat, and a cycle exactly
    /// when the steps cannot be ordered; each cycle named is one (each
    /// step depends on the next, the last on the first), and no step is in
    /// two of them.
    #[test]
    fn every_dependency_problem_is_reported(definition in tangled()) {
        let problems = definition.validate().err().map(|e| e.problems).unwrap_or_default();
        let mut expected = Vec::new();
        for step in &definition.steps {
            let declared = step.depends_on.as_deref().unwrap_or_default();
            for (i, d) in declared.iter().enumerate() {
                if *d == step.key {
                    expected.push(DefinitionProblem::SelfDependency { step: step.key.clone() });
                } else if declared[..i].contains(d) {
                    expected.push(DefinitionProblem::DuplicateDependency {
                        step: step.key.clone(),
                        dependency: d.clone(),
                    });
                } else if d == "ghost" {
                    expected.push(DefinitionProblem::UnknownDependency {
                        step: step.key.clone(),
                        dependency: d.clone(),
                    });
                }
            }
        }
        let (cycles, others): (Vec<_>, Vec<_>) = problems
            .into_iter()
            .partition(|p| matches!(p, DefinitionProblem::DependencyCycle { .. }));
        prop_assert_eq!(others, expected);
        prop_assert_eq!(!cycles.is_empty(), has_cycle(&definition));
        let mut seen = HashSet::new();
        for cycle in cycles {
            let DefinitionProblem::DependencyCycle { steps } = &cycle else { unreachable!() };
            prop_assert!(steps.len() >= 2, "{}", cycle);
            for (i, key) in steps.iter().enumerate() {
                prop_assert!(seen.insert(key.clone()), "{} is in two cycles", key);
                let next = &steps[(i + 1) % steps.len()];
                let step = definition.steps.iter().find(|s| s.key == *key).expect("a step");
                prop_assert!(
                    step.depends_on.iter().flatten().any(|d| d == next),
                    "{}: {} does not depend on {}", cycle, key, next
                );
            }
        }
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

/// A definition stored before dependencies, conditions, parallel limits
/// and declared outputs existed (the JSON a version holds, byte for byte,
/// as written by the release before them) still parses, validates, means a
/// linear run, and keeps its content hash: stored versions load unchanged.
#[test]
fn a_definition_stored_before_dags_loads_unchanged() {
    let stored = include_str!("fixtures/definition-before-dags.json").trim_end();
    // The hash the release before dependencies computed for it.
    const HASH: &str = "30f242175362cfa84227623258b184ce46845f5e92cede4b097d254ee0435906";
    let definition = WorkflowDefinition::from_json(stored.as_bytes()).expect("a valid definition");
    assert_eq!(definition.content_hash(), HASH);
    assert_eq!(
        serde_json::to_string(&definition).expect("serialize"),
        stored,
        "it serializes as stored"
    );
    assert!(!definition.declares_dependencies());
    assert_eq!(definition.max_parallel_steps, None);
    assert_eq!(definition.output, None);
    assert!(definition
        .steps
        .iter()
        .all(|s| s.depends_on.is_none() && s.condition.is_none()));
    assert_eq!(definition.dependencies(0), Vec::<usize>::new());
    assert_eq!(definition.dependencies(2), [1]);
    assert_eq!(definition.ancestors(2), [0, 1]);
    assert_eq!(
        definition.parallel_limit(),
        taskforge_core::limits::DEFAULT_MAX_PARALLEL_STEPS
    );
}
