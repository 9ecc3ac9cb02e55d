//! Conditions on a delivery's JSON, each on the value at a JSON pointer:
//! payload filters, which decide whether a delivery starts a run, and input
//! shapes, which decide whether it is taken at all.
//!
//! A trigger's filters all have to match (they are and-ed). A delivery that
//! misses one is still recorded, with an
//! [`EventOutcome::Filtered`](crate::EventOutcome::Filtered) outcome that
//! names the filter, so an operator can see why nothing ran.
//!
//! A trigger's [`InputShape`] says what its payload must look like: which
//! values must be present, and of which JSON type. A delivery that does not
//! fit is refused at the door with [`Rejection::Unprocessable`] (HTTP 422),
//! instead of starting a run that would fail on its input later.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request::{excerpt, JsonType, Rejection};

/// The longest glob pattern accepted, in characters. Matching is linear in
/// the string it looks at, times at most `MAX_GLOB_LEN / 64` machine words
/// per character (see [`Predicate::Glob`]), so the bound keeps a filter
/// cheap even on a large string.
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
        check_pointer("filter", &self.pointer)?;
        if let Predicate::Glob(pattern) = &self.predicate {
            let len = pattern.chars().count();
            if len > MAX_GLOB_LEN {
                return Err(format!(
                    "glob pattern on {:?} is {len} characters, more than {MAX_GLOB_LEN}",
                    excerpt(&self.pointer)
                ));
            }
        }
        Ok(())
    }

    /// Whether `payload` satisfies this filter; the miss says why not.
    pub fn check(&self, payload: &Value) -> Result<(), FilterMiss> {
        self.check_found(payload.pointer(&self.pointer))
    }

    /// Whether `found`, the value at the filter's pointer (`None`: no
    /// value there), satisfies its predicate: for documents that are not
    /// one JSON value, such as a step's condition, which reads the run's
    /// input and its steps' outputs.
    pub(crate) fn check_found(&self, found: Option<&Value>) -> Result<(), FilterMiss> {
        let miss = |reason: String| FilterMiss {
            pointer: self.pointer.clone(),
            reason,
        };
        let Some(found) = found else {
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
                    "{:?} does not match {:?}",
                    excerpt(s),
                    excerpt(pattern)
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
    ///
    /// Matching takes time linear in the string: the pattern is cut at its
    /// stars, and each piece is searched for once, left to right, never
    /// retried.
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

/// Glob matching with `*` and `?`, in time linear in `text`.
///
/// The pattern is cut at its stars into segments of characters and `?`s.
/// The first segment must match at the start of the text, the last at its
/// end, and each one between is searched for after the previous one's
/// match. Taking the leftmost match of each is never worse than a later
/// one (it leaves the most text for the segments after it), so nothing is
/// retried and each character of the text is read by one search only.
/// Segments without `?` are found with `str::find` (two-way: linear); the
/// others by a bit-parallel shift-and, linear in the text times the
/// segment's length in 64-bit words (at most 16 for [`MAX_GLOB_LEN`]).
#[must_use]
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let mut segments = pattern.split('*');
    let first = segments.next().unwrap_or_default();
    let Some(after_first) = strip_segment_prefix(first, text) else {
        return false;
    };
    let rest: Vec<&str> = segments.collect();
    let Some((last, middle)) = rest.split_last() else {
        // No star: the first segment is the whole pattern.
        return after_first.is_empty();
    };
    let Some(mut haystack) = strip_segment_suffix(last, after_first) else {
        return false;
    };
    for segment in middle.iter().filter(|s| !s.is_empty()) {
        match find_segment(segment, haystack) {
            Some(end) => haystack = &haystack[end..],
            None => return false,
        }
    }
    true
}

fn segment_char_matches(pattern: char, text: char) -> bool {
    pattern == '?' || pattern == text
}

/// `text` after `segment`, if `text` starts with a match of it.
fn strip_segment_prefix<'t>(segment: &str, text: &'t str) -> Option<&'t str> {
    let mut chars = text.char_indices();
    for p in segment.chars() {
        let (_, t) = chars.next()?;
        tally(1);
        if !segment_char_matches(p, t) {
            return None;
        }
    }
    Some(chars.as_str())
}

/// `text` before `segment`, if `text` ends with a match of it.
fn strip_segment_suffix<'t>(segment: &str, text: &'t str) -> Option<&'t str> {
    let mut chars = text.chars();
    for p in segment.chars().rev() {
        let t = chars.next_back()?;
        tally(1);
        if !segment_char_matches(p, t) {
            return None;
        }
    }
    Some(chars.as_str())
}

/// The byte offset in `haystack` just after the leftmost match of
/// `segment` (no stars, not empty), if there is one.
fn find_segment(segment: &str, haystack: &str) -> Option<usize> {
    if !segment.contains('?') {
        let found = haystack.find(segment).map(|start| start + segment.len());
        tally(found.unwrap_or(haystack.len()) as u64);
        return found;
    }
    // Shift-and: bit j of `state` is set when the last j + 1 characters
    // read match the first j + 1 of the segment.
    let pattern: Vec<char> = segment.chars().collect();
    let words = pattern.len().div_ceil(64);
    let mut any = vec![0u64; words];
    for (j, _) in pattern.iter().enumerate().filter(|(_, &c)| c == '?') {
        any[j / 64] |= 1 << (j % 64);
    }
    let mut masks: HashMap<char, Vec<u64>> = HashMap::new();
    for (j, &c) in pattern.iter().enumerate().filter(|(_, &c)| c != '?') {
        masks.entry(c).or_insert_with(|| any.clone())[j / 64] |= 1 << (j % 64);
    }
    let last = pattern.len() - 1;
    let mut state = vec![0u64; words];
    for (at, c) in haystack.char_indices() {
        tally(words as u64);
        let mask = masks.get(&c).unwrap_or(&any);
        let mut carry = 1;
        for (word, m) in state.iter_mut().zip(mask) {
            let next_carry = *word >> 63;
            *word = ((*word << 1) | carry) & m;
            carry = next_carry;
        }
        if state[last / 64] & (1 << (last % 64)) != 0 {
            return Some(at + c.len_utf8());
        }
    }
    None
}

#[cfg(test)]
thread_local! {
    /// Characters read (times machine words) by glob matching on this
    /// thread, so that tests can check the cost is linear without timing.
    static GLOB_WORK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[inline]
fn tally(_steps: u64) {
    #[cfg(test)]
    GLOB_WORK.with(|work| work.set(work.get() + _steps));
}

// Keeps miss reasons, which are stored with the event, short whatever the payload.
fn brief(value: &Value) -> String {
    excerpt(&value.to_string())
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

/// Checks an RFC 6901 pointer as filters and input shapes use it: empty
/// (the whole payload) or starting with `/`.
fn check_pointer(used_by: &str, pointer: &str) -> Result<(), String> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "{used_by} pointer {:?} must be empty or start with '/'",
            excerpt(pointer)
        ))
    }
}

/// The most values an [`InputShape`] may require.
pub const MAX_REQUIRED_VALUES: usize = 64;

/// What a webhook trigger's payload must look like: values it must have,
/// each at a JSON pointer and of a JSON type. The empty shape takes any
/// JSON object.
///
/// Serialized as `{"required": [{"pointer": "/release/tag_name", "type":
/// "string"}]}`.
///
/// ```
/// use serde_json::json;
/// use taskforge_core::webhook::{InputShape, JsonType};
///
/// let shape = InputShape::new()
///     .require("/release/tag_name", JsonType::String)
///     .require("/release/id", JsonType::Integer);
/// assert!(shape.check(&json!({"release": {"tag_name": "v1", "id": 7}})).is_ok());
/// let refused = shape.check(&json!({"release": {"tag_name": "v1"}})).unwrap_err();
/// assert_eq!(refused.http_status(), 422);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InputShape {
    /// The values the payload must have, all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<RequiredValue>,
}

/// A value an [`InputShape`] requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RequiredValue {
    /// An RFC 6901 JSON pointer into the payload, as a [`Filter`]'s.
    pub pointer: String,
    /// The type the value there must have.
    #[serde(rename = "type")]
    pub kind: JsonType,
}

impl InputShape {
    /// The empty shape: any JSON object fits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires a value of type `kind` at `pointer`.
    #[must_use]
    pub fn require(mut self, pointer: impl Into<String>, kind: JsonType) -> Self {
        self.required.push(RequiredValue {
            pointer: pointer.into(),
            kind,
        });
        self
    }

    /// Whether it requires nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.required.is_empty()
    }

    /// Checks the shape itself: well-formed pointers, at most
    /// [`MAX_REQUIRED_VALUES`] of them.
    pub fn validate(&self) -> Result<(), String> {
        if self.required.len() > MAX_REQUIRED_VALUES {
            return Err(format!(
                "input shape requires {} values, more than {MAX_REQUIRED_VALUES}",
                self.required.len()
            ));
        }
        self.required
            .iter()
            .try_for_each(|required| check_pointer("input", &required.pointer))
    }

    /// Whether `payload` fits: every required value is there, of its type.
    /// The first that is not is reported as a
    /// [`Rejection::Unprocessable`].
    pub fn check(&self, payload: &Value) -> Result<(), Rejection> {
        for required in &self.required {
            let found = payload.pointer(&required.pointer);
            if !found.is_some_and(|value| required.kind.accepts(value)) {
                return Err(Rejection::Unprocessable {
                    pointer: excerpt(&required.pointer),
                    expected: required.kind,
                    found: found.map(JsonType::of),
                });
            }
        }
        Ok(())
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

    /// Glob matching by dynamic programming over (pattern, text)
    /// prefixes: slow, obviously right.
    fn glob_reference(pattern: &str, text: &str) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
        let mut row = vec![false; t.len() + 1];
        row[0] = true;
        for &pc in &p {
            let mut next = vec![false; t.len() + 1];
            if pc == '*' {
                next[0] = row[0];
            }
            for j in 1..=t.len() {
                next[j] = match pc {
                    '*' => next[j - 1] || row[j],
                    '?' => row[j - 1],
                    c => row[j - 1] && c == t[j - 1],
                };
            }
            row = next;
        }
        row[t.len()]
    }

    fn glob_work(pattern: &str, text: &str) -> (bool, u64) {
        GLOB_WORK.with(|work| work.set(0));
        let matched = glob_match(pattern, text);
        (matched, GLOB_WORK.with(std::cell::Cell::get))
    }

    #[test]
    fn glob_cost_is_linear_in_the_text() {
        let text = "a".repeat(64 * 1024);
        let budget = |pattern: &str| {
            let words = pattern.chars().count().div_ceil(64) as u64;
            (words + 1) * (text.len() + pattern.len()) as u64
        };
        for pattern in [
            format!("*{}b", "a".repeat(1_022)),
            format!("*{}b", "?".repeat(1_022)),
            format!("*{}b", "a?".repeat(511)),
            format!("{}b", "*a".repeat(511)),
            format!("*{}*", "a".repeat(1_022)),
            format!("*{}", "a".repeat(1_023)),
            format!("*a{}b*", "?a".repeat(500)),
        ] {
            let (matched, work) = glob_work(&pattern, &text);
            // Only the patterns that need a `b` miss a text of `a`s.
            assert_eq!(matched, !pattern.contains('b'), "{pattern}");
            assert!(
                work <= budget(&pattern),
                "{} characters of pattern read {work} units of text, budget {}",
                pattern.len(),
                budget(&pattern)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn glob_agrees_with_the_reference(
            pattern in "[ab?*é]{0,12}",
            text in "[abé]{0,24}",
        ) {
            proptest::prop_assert_eq!(
                glob_match(&pattern, &text),
                glob_reference(&pattern, &text),
                "{:?} against {:?}", pattern, text
            );
        }

        #[test]
        fn glob_agrees_on_long_segments(
            pattern in "[ab?]{60,140}",
            star_at in 0usize..140,
            text in "[ab]{100,300}",
        ) {
            let star_at = star_at.min(pattern.len());
            let pattern = format!("*{}*{}", &pattern[..star_at], &pattern[star_at..]);
            proptest::prop_assert_eq!(
                glob_match(&pattern, &text),
                glob_reference(&pattern, &text),
                "{:?} against {:?}", pattern, text
            );
        }
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
