//! Wait steps in definitions: their JSON, and the problems validation
//! names.

use std::time::Duration;

use serde_json::json;
use taskforge_core::error::DefinitionProblem;
use taskforge_core::{OnTimeout, RetryPolicy, StepDefinition, Wait, WorkflowDefinition};

#[test]
fn wait_steps_have_a_plain_json_shape() {
    let json = json!({
        "steps": [
            { "key": "build", "handler": "noop" },
            { "key": "cool_down", "wait": { "sleep": 60000 } },
            { "key": "approval", "wait": { "signal": "approved", "timeout": 3600000, "on_timeout": "continue" } },
            { "key": "both", "wait": { "sleep": 1000, "signal": "go" } },
        ],
    });
    let bytes = serde_json::to_vec(&json).expect("serialize");
    let definition = WorkflowDefinition::from_json(&bytes).expect("a valid definition");
    assert_eq!(
        definition.steps[1],
        StepDefinition::sleep("cool_down", Duration::from_secs(60))
    );
    assert_eq!(
        definition.steps[2],
        StepDefinition::wait_for_signal(
            "approval",
            "approved",
            Some(Duration::from_secs(3_600)),
            OnTimeout::Continue
        )
    );
    assert_eq!(
        definition.steps[3],
        StepDefinition::wait("both", Wait::signal("go").at_least(Duration::from_secs(1)))
    );
    assert!(definition.steps[1].is_wait() && !definition.steps[0].is_wait());
    // Written back as read: no handler, no default `on_timeout`.
    assert_eq!(serde_json::to_value(&definition).expect("serialize"), json);
    let fail = StepDefinition::wait_for_signal("a", "b", None, OnTimeout::Fail);
    assert_eq!(
        serde_json::to_value(&fail).expect("serialize"),
        json!({ "key": "a", "wait": { "signal": "b" } })
    );
}

#[test]
fn validation_names_every_problem_of_a_wait_step() {
    let mut with_handler = StepDefinition::sleep("with_handler", Duration::from_secs(1));
    with_handler.handler = "noop".into();
    let definition = WorkflowDefinition::new(vec![
        with_handler,
        StepDefinition::wait("nothing", Wait::signal("x"))
            .retry(RetryPolicy::fixed(2, Duration::ZERO)),
        StepDefinition::sleep("zero", Duration::ZERO),
        StepDefinition::wait(
            "timeout_alone",
            Wait::sleep(Duration::from_secs(1)).timeout(Duration::from_secs(1), OnTimeout::Fail),
        ),
        StepDefinition::wait_for_signal("bad_name", "not a name", None, OnTimeout::Fail),
        StepDefinition::wait_for_signal("continue_alone", "x", None, OnTimeout::Continue),
        StepDefinition::wait_for_signal("secretive", "x", None, OnTimeout::Fail)
            .secrets(["token"])
            .timeout(Duration::from_secs(1)),
        StepDefinition::new("no_handler", ""),
    ]);
    let problems = definition.validate().expect_err("invalid").problems;
    let about = |step: &str| -> Vec<String> {
        problems
            .iter()
            .filter_map(|p| match p {
                DefinitionProblem::InvalidWait { step: s, reason } if s == step => {
                    Some(reason.clone())
                }
                _ => None,
            })
            .collect()
    };
    assert!(
        about("with_handler")[0].contains("no handler"),
        "{problems:?}"
    );
    assert!(about("nothing")[0].contains("retry"), "{problems:?}");
    assert!(about("zero")[0].contains("0 ms"), "{problems:?}");
    assert!(
        about("timeout_alone")[0].contains("waits for none"),
        "{problems:?}"
    );
    assert!(about("bad_name")[0].contains("signal name"), "{problems:?}");
    assert!(
        about("continue_alone")[0].contains("on_timeout"),
        "{problems:?}"
    );
    assert_eq!(about("secretive").len(), 2, "{problems:?}");
    assert!(problems.contains(&DefinitionProblem::MissingHandler {
        step: "no_handler".into()
    }));
    // A wait step needs no registered handler.
    let fine = WorkflowDefinition::new(vec![StepDefinition::sleep("nap", Duration::from_secs(1))]);
    assert_eq!(fine.validate_with(|_| false), Ok(()));
    // Durations are bounded as everywhere.
    let long = WorkflowDefinition::new(vec![StepDefinition::sleep(
        "forever",
        Duration::from_secs(400 * 24 * 60 * 60),
    )]);
    assert!(matches!(
        &long.validate().expect_err("too long").problems[..],
        [DefinitionProblem::DurationTooLong { .. }]
    ));
}
