//! HTML building blocks: escaping (the one place every value passes
//! through on its way into a page), URL query encoding, and the small
//! pieces pages share (status badges, times, durations, JSON blocks).
//!
//! Pages are plain `String`s written with `write!`; every value that is
//! not a literal of this crate or a number goes through [`Esc`] (or
//! [`escape`]), in text and in double-quoted attributes alike. Values never
//! go into `<script>` or `style`: the page's script reads what it needs
//! from escaped `data-` attributes.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// `text` escaped for HTML text and double- or single-quoted attribute
/// values: `&`, `<`, `>`, `"` and `'` become character references.
pub(crate) fn escape(text: &str) -> String {
    Esc(text).to_string()
}

/// A value written escaped, as [`escape`] does, without an intermediate
/// `String`: `write!(out, "<td>{}</td>", Esc(&name))`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Esc<'a>(pub(crate) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// `value` percent-encoded for a URL query: everything but the unreserved
/// characters (`A-Z a-z 0-9 - . _ ~`) as `%XX`. The result still goes
/// through [`Esc`] when it lands in an attribute.
pub(crate) fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A query string (`?a=1&b=2`, or nothing) of the pairs whose value is set.
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if let Some(value) = value {
            out.push(if out.is_empty() { '?' } else { '&' });
            out.push_str(name);
            out.push('=');
            out.push_str(&query_value(value));
        }
    }
    out
}

/// A time as `<time>`, in UTC to the second.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        Esc(&at.to_rfc3339()),
        Esc(&at.format("%Y-%m-%d %H:%M:%S").to_string())
    )
}

/// An optional time, or a dash.
pub(crate) fn time_or_dash(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "<span class=\"muted\">—</span>".to_owned(), time)
}

/// A duration for people: `850 ms`, `3.2 s`, `2 min 5 s`, `1 h 3 min`.
pub(crate) fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 10_000 {
        format!("{}.{} s", ms / 1_000, (ms % 1_000) / 100)
    } else if ms < 60_000 {
        format!("{} s", ms / 1_000)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1_000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// The time between two instants, in milliseconds.
pub(crate) fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// A status badge: a coloured label with a symbol, so that the status does
/// not rest on colour alone. `status` is one of the crate's snake_case
/// status names.
pub(crate) fn badge(status: &str) -> String {
    let symbol = match status {
        "succeeded" | "run_started" | "active" | "enabled" => "✓",
        "failed" | "rejected" => "✕",
        "running" => "●",
        "queued" => "○",
        "waiting" => "◷",
        "cancelled" | "skipped" | "filtered" | "inactive" | "disabled" | "workflow_inactive"
        | "trigger_disabled" | "limited" => "⊘",
        "timed_out" => "⏱",
        "interrupted" => "↯",
        _ => "•",
    };
    format!(
        "<span class=\"badge s-{0}\"><span aria-hidden=\"true\">{1}</span> {2}</span>",
        Esc(status),
        symbol,
        Esc(&status.replace('_', " "))
    )
}

/// The last eight characters of an id, for tables (ids are UUID v7, whose
/// first characters are a timestamp shared by ids made close together);
/// the whole id is the link's title.
pub(crate) fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

/// `value` pretty-printed in a `<pre>`, in its own field order.
pub(crate) fn json_block<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    format!("<pre class=\"json\">{}</pre>", Esc(&text))
}

/// `value` pretty-printed in a collapsible block titled `summary`; `key`
/// keeps it open or closed across live updates.
pub(crate) fn json_details(key: &str, summary: &str, value: &Value, open: bool) -> String {
    let size = serde_json::to_string(value).map_or(0, |s| s.len());
    format!(
        "<details data-key=\"{}\"{}><summary>{} <span class=\"muted\">({})</span></summary>{}</details>",
        Esc(key),
        if open { " open" } else { "" },
        Esc(summary),
        Esc(&bytes(size)),
        json_block(value)
    )
}

fn bytes(n: usize) -> String {
    if n < 1024 {
        format!("{n} B")
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_every_special_character() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>Tom & Jerry</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;Tom &amp; Jerry&lt;/a&gt;"
        );
    }

    #[test]
    fn escape_keeps_plain_and_unicode_text() {
        assert_eq!(escape(""), "");
        assert_eq!(escape("deploy-api v2"), "deploy-api v2");
        assert_eq!(escape("héllo ✓ 日本"), "héllo ✓ 日本");
        // Already-escaped text is escaped again: nothing is trusted.
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn escape_defuses_script_and_attribute_breakouts() {
        let hostile = r#""><script>alert(1)</script><img src=x onerror='alert(2)'>"#;
        let escaped = escape(hostile);
        for forbidden in ['<', '>', '"', '\''] {
            assert!(!escaped.contains(forbidden), "{escaped}");
        }
        assert_eq!(format!("{}", Esc(hostile)), escaped);
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(query_value("2025-01-01T10:00"), "2025-01-01T10%3A00");
        assert_eq!(query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            query(&[
                ("status", Some("failed".into())),
                ("workflow", None),
                ("q", Some("x&y".into()))
            ]),
            "?status=failed&q=x%26y"
        );
        assert_eq!(query(&[("a", None)]), "");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(-5), "0 ms");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(3_250), "3.2 s");
        assert_eq!(duration(42_000), "42 s");
        assert_eq!(duration(125_000), "2 min 5 s");
        assert_eq!(duration(3_780_000), "1 h 3 min");
    }

    #[test]
    fn badges_escape_and_carry_a_symbol() {
        assert!(badge("failed").contains("s-failed"));
        assert!(badge("timed_out").contains("timed out"));
        assert!(!badge("<x>").contains("<x>"));
    }

    #[test]
    fn short_ids_are_the_random_end() {
        assert_eq!(short("01a23446-3041-7777-971c-c3443d4ef2b5"), "3d4ef2b5");
        assert_eq!(short("abc"), "abc");
    }
}
