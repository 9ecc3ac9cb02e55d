//! Redaction: every form of a secret a step could read is replaced by a
//! marker naming the secret, in whatever the step leaves behind (output,
//! error, log lines, progress).
//!
//! A secret is searched for as it is, in base64 (standard and URL-safe,
//! with and without padding) and percent-encoded (as in a URL or a form).
//! All forms of all secrets are found in one pass (Aho-Corasick, leftmost
//! longest, so a secret that contains another is replaced whole). A secret
//! that appears only inside a longer encoded string (the base64 of
//! `user:secret`, say) is not found: redaction is a safety net for the
//! usual leaks, not a proof that no derived form of a value is stored.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::Value;

/// Replaces the secrets of one step attempt.
#[derive(Debug)]
pub(crate) struct Redactor {
    finder: AhoCorasick,
    /// The marker of each pattern, by pattern index.
    markers: Vec<String>,
}

/// The marker a secret named `name` is replaced with.
#[must_use]
pub fn redaction_marker(name: &str) -> String {
    format!("[redacted:{name}]")
}

impl Redactor {
    /// A redactor of `secrets` (name, value); `None` when there is nothing
    /// to redact.
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<Self> {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut markers = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let marker = redaction_marker(name);
            let mut forms = vec![
                value.to_vec(),
                STANDARD.encode(value).into_bytes(),
                STANDARD_NO_PAD.encode(value).into_bytes(),
                URL_SAFE.encode(value).into_bytes(),
                URL_SAFE_NO_PAD.encode(value).into_bytes(),
                percent_encode(value, false).into_bytes(),
                percent_encode(value, true).into_bytes(),
            ];
            forms.sort();
            forms.dedup();
            for form in forms {
                patterns.push(form);
                markers.push(marker.clone());
            }
        }
        if patterns.is_empty() {
            return None;
        }
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok()?;
        Some(Self { finder, markers })
    }

    /// `text` with every form of every secret replaced by its marker.
    pub(crate) fn redact_str<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if !self.finder.is_match(text) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for found in self.finder.find_iter(text) {
            // A match may split a multi-byte character only if the secret
            // itself is not valid UTF-8; then keep the text as it is there.
            if !text.is_char_boundary(found.start()) || !text.is_char_boundary(found.end()) {
                continue;
            }
            out.push_str(&text[last..found.start()]);
            out.push_str(&self.markers[found.pattern().as_usize()]);
            last = found.end();
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }

    /// Redacts every string of `value`, object keys included.
    pub(crate) fn redact_value(&self, value: &mut Value) {
        match value {
            Value::String(text) => {
                if let Cow::Owned(redacted) = self.redact_str(text) {
                    *text = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.redact_value(item)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    self.redact_value(&mut item);
                    map.insert(self.redact_str(&key).into_owned(), item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// Percent-encodes every byte outside the unreserved set (RFC 3986); with
/// `plus`, a space is `+` (as in a form).
fn percent_encode(value: &[u8], plus: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for &byte in value {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char);
            }
            b' ' if plus => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn redactor() -> Redactor {
        Redactor::new([
            ("DEPLOY_TOKEN", b"s3cr3t/with space+plus".as_slice()),
            ("SHORT", b"abc".as_slice()),
        ])
        .expect("secrets to redact")
    }

    #[test]
    fn every_form_of_a_secret_is_replaced() {
        let r = redactor();
        let raw = "s3cr3t/with space+plus";
        for form in [
            raw.to_owned(),
            STANDARD.encode(raw),
            STANDARD_NO_PAD.encode(raw),
            URL_SAFE.encode(raw),
            URL_SAFE_NO_PAD.encode(raw),
            percent_encode(raw.as_bytes(), false),
            percent_encode(raw.as_bytes(), true),
        ] {
            let text = format!("token={form}; done");
            assert_eq!(
                r.redact_str(&text),
                "token=[redacted:DEPLOY_TOKEN]; done",
                "{form}"
            );
        }
        assert!(matches!(r.redact_str("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn values_are_redacted_deeply_keys_included() {
        let r = redactor();
        let mut value = json!({
            "abc": ["xabcx", 1, null, { "deep": "s3cr3t/with space+plus" }],
            "n": 5,
        });
        r.redact_value(&mut value);
        assert_eq!(
            value,
            json!({
                "[redacted:SHORT]": ["x[redacted:SHORT]x", 1, null, { "deep": "[redacted:DEPLOY_TOKEN]" }],
                "n": 5,
            })
        );
    }

    #[test]
    fn nothing_to_redact_is_no_redactor() {
        assert!(Redactor::new([("EMPTY", b"".as_slice())]).is_none());
        assert!(Redactor::new(std::iter::empty()).is_none());
    }
}
