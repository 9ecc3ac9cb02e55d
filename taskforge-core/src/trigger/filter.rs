//! Payload filters: conditions on a delivery's JSON that decide whether it
//! starts a run.
//!
//! A trigger's filters all have to match (they are and-ed). A delivery that
//! misses one is still recorded, with an
//! [`EventOutcome::Filtered`](crate::EventOutcome::Filtered) outcome that
//! names the filter, so an operator can see why nothing ran.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest glob pattern accepted, in characters. Matching costs at most
/// pattern length times value length steps, so the bound keeps a filter cheap
/// even on a large string.
pub const MAX_GLOB_LEN: usize = 1_024;

/// One condition on a payload: the value at `pointer` satisfies `predicate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// An RFC 6901 JSON pointer into the payload (`/action`,
    /// `/release/tag_name`); the empty string is the whole payload.
    pub pointer: String,
    /// What the value there must satisfy.
    pub predicate: Predicate,
}

impl Filter {
    /// The value at `pointer` equals `value`.
    #[must_use]
    pub fn equals(pointer: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            pointer: pointer.into(),
            predicate: Predicate::Equals(value.into()),
        }
    }

    /// The value at `pointer` equals one of `values`.
    #[must_use]
    pub fn one_of(pointer: impl Into<String>, values: impl IntoIterator<Item = Value>) -> Self {
        Self {
            pointer: pointer.into(),
            predicate: Predicate::OneOf(values.into_iter().collect()),
        }
    }

    /// There is a value (possibly `null`) at `pointer`.
    #[must_use]
    pub fn exists(pointer: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            predicate: Predicate::Exists,
        }
    }

    /// The value at `pointer` is a string matching the glob `pattern`.
    #[must_use]
    pub fn glob(pointer: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            predicate: Predicate::Glob(pattern.into()),
        }
    }

    /// Checks the filter's own shape: a well-formed pointer and a glob
    /// pattern no longer than [`MAX_GLOB_LEN`].
    pub fn validate(&self) -> Result<(), String> {
        if !self.pointer.is_empty() && !self.pointer.starts_with('/') {
            return Err(format!(
                "filter pointer {:?} must be empty or start with '/'",
                self.pointer
            ));
        }
        if let Predicate::Glob(pattern) = &self.predicate {
            let len = pattern.chars().count();
            if len > MAX_GLOB_LEN {
                return Err(format!(
                    "glob pattern on {:?} is {len} characters, more than {MAX_GLOB_LEN}",
                    self.pointer
                ));
            }
        }
        Ok(())
    }

    /// Whether `payload` satisfies this filter; the miss says why not.
    pub fn check(&self, payload: &Value) -> Result<(), FilterMiss> {
        let miss = |reason: String| FilterMiss {
            pointer: self.pointer.clone(),
            reason,
        };
        let Some(found) = payload.pointer(&self.pointer) else {
            return Err(miss("no value there".to_owned()));
        };
        match &self.predicate {
            Predicate::Exists => Ok(()),
            Predicate::Equals(expected) if found == expected => Ok(()),
            Predicate::Equals(expected) => Err(miss(format!(
                "expected {}, found {}",
                brief(expected),
                brief(found)
            ))),
            Predicate::OneOf(allowed) if allowed.contains(found) => Ok(()),
            Predicate::OneOf(_) => Err(miss(format!(
                "{} is not one of the allowed values",
                brief(found)
            ))),
            Predicate::Glob(pattern) => match found {
                Value::String(s) if glob_match(pattern, s) => Ok(()),
                Value::String(s) => Err(miss(format!(
                    "{:?} does not match {pattern:?}",
                    truncate(s)
                ))),
                other => Err(miss(format!(
                    "glob needs a string, found {}",
                    kind_of(other)
                ))),
            },
        }
    }
}

/// What the value at a filter's pointer must satisfy.
///
/// Serialized adjacently tagged: `{"op": "equals", "value": "published"}`,
/// `{"op": "exists"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Predicate {
    /// Equal as JSON values. Numbers compare as serde_json does: `1` and
    /// `1.0` differ.
    Equals(Value),
    /// Equal to one of these.
    OneOf(Vec<Value>),
    /// Present, whatever its value (`null` included).
    Exists,
    /// A string matching a glob: `*` matches any run of characters (also
    /// none), `?` exactly one character; every other character matches
    /// itself. No escapes, no character classes.
    Glob(String),
}

/// Why a payload did not pass a trigger's filters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter on {pointer:?} did not match: {reason}")]
pub struct FilterMiss {
    /// The pointer of the first filter that missed.
    pub pointer: String,
    /// What was found there instead.
    pub reason: String,
}

/// Whether `payload` passes every filter; the first one that misses is
/// reported. No filters at all always pass.
pub(crate) fn check_all(filters: &[Filter], payload: &Value) -> Result<(), FilterMiss> {
    filters.iter().try_for_each(|filter| filter.check(payload))
}

/// Glob matching with `*` and `?`, in O(pattern × text) steps.
///
/// On a mismatch after a `*`, only the most recent `*` is retried one
/// character further: an earlier star can never do better than a later one,
/// so there is no exponential backtracking.
#[must_use]
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // The last star seen, and the text position its match currently ends at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

fn brief(value: &Value) -> String {
    let text = value.to_string();
    truncate(&text).to_owned()
}

// Keeps miss reasons, which are stored with the event, short whatever the payload.
fn truncate(s: &str) -> &str {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn glob_basics() {
        assert!(glob_match("v*", "v1.2.3"));
        assert!(glob_match("v?.*", "v1.2.3"));
        assert!(glob_match("*", ""));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(!glob_match("?", ""));
        assert!(glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("a*b*c", "a-b-b-d"));
        assert!(glob_match("*.json", "release.json"));
        assert!(!glob_match("*.json", "release.jsonx"));
        assert!(glob_match("héllo*", "héllo wörld"));
        assert!(glob_match("refs/tags/*", "refs/tags/v1"));
        assert!(!glob_match("refs/tags/*", "refs/heads/main"));
    }

    #[test]
    fn glob_pathological_pattern_is_fast() {
        let text = "a".repeat(10_000);
        let pattern = format!("{}b", "*a".repeat(500));
        assert!(!glob_match(&pattern, &text));
    }

    #[test]
    fn predicates() {
        let payload = json!({"action": "published", "n": 3, "tag": "v1.2", "nil": null});
        assert!(Filter::equals("/action", "published")
            .check(&payload)
            .is_ok());
        let miss = Filter::equals("/action", "created")
            .check(&payload)
            .expect_err("different value");
        assert_eq!(miss.pointer, "/action");
        assert!(Filter::one_of("/n", [json!(1), json!(3)])
            .check(&payload)
            .is_ok());
        assert!(Filter::exists("/nil").check(&payload).is_ok());
        assert!(Filter::exists("/absent").check(&payload).is_err());
        assert!(Filter::glob("/tag", "v1.*").check(&payload).is_ok());
        assert!(Filter::glob("/n", "*").check(&payload).is_err());
        assert!(check_all(&[], &payload).is_ok());
    }

    #[test]
    fn serde_shape() {
        let filter = Filter::equals("/action", "published");
        let json = serde_json::to_value(&filter).expect("serializes");
        assert_eq!(
            json,
            json!({"pointer": "/action", "predicate": {"op": "equals", "value": "published"}})
        );
        let exists = serde_json::to_value(Filter::exists("/a")).expect("serializes");
        assert_eq!(
            exists,
            json!({"pointer": "/a", "predicate": {"op": "exists"}})
        );
    }
}
