//! What people read: aligned tables, key-value blocks, statuses coloured
//! only on a terminal (and never with `NO_COLOR` set), times and durations.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Whether to colour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    pub(crate) color: bool,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty
    /// (<https://no-color.org>).
    pub(crate) fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// `text` in `color` (an SGR code), if colouring.
    pub(crate) fn paint(&self, text: &str, color: Option<&str>) -> String {
        match color {
            Some(code) if self.color => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_owned(),
        }
    }

    /// A status word in its colour.
    pub(crate) fn status(&self, status: &str) -> String {
        self.paint(status, status_color(status))
    }
}

/// The SGR colour of a run or step status, event outcome or token state.
pub(crate) fn status_color(status: &str) -> Option<&'static str> {
    match status {
        "succeeded" | "run_started" | "active" | "accepted" | "yes" => Some("32"),
        "failed" | "timed_out" | "rejected" | "revoked" | "interrupted" => Some("31"),
        "running" | "queued" | "retrying" => Some("33"),
        "waiting" => Some("36"),
        "cancelled" | "filtered" | "skipped" | "expired" | "no" | "workflow_inactive"
        | "trigger_disabled" => Some("2"),
        _ => None,
    }
}

/// A cell: its text and, maybe, a colour.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    text: String,
    color: Option<&'static str>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self { text, color: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            color: None,
        }
    }
}

impl Cell {
    /// A status, coloured as statuses are.
    pub(crate) fn status(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            color: status_color(text),
        }
    }
}

/// Rows under headers, each column as wide as its widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub(crate) fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(crate) fn render(&self, style: Style) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(width(&cell.text));
            }
        }
        let mut out = String::new();
        let header: Vec<Cell> = self.headers.iter().map(|h| Cell::from(*h)).collect();
        let bold = style.color.then_some("1");
        line(&mut out, &header, &widths, style, bold);
        for row in &self.rows {
            line(&mut out, row, &widths, style, None);
        }
        out
    }
}

fn line(out: &mut String, cells: &[Cell], widths: &[usize], style: Style, all: Option<&str>) {
    let mut text = String::new();
    let last = cells.len().min(widths.len()).saturating_sub(1);
    for (i, cell) in cells.iter().enumerate().take(widths.len()) {
        let painted = style.paint(&cell.text, all.or(cell.color));
        text.push_str(&painted);
        if i < last {
            let pad = widths[i] - width(&cell.text) + 2;
            text.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out.push_str(text.trim_end());
    out.push('\n');
}

/// Display width, counted in characters (the ids, names and statuses shown
/// are not wide characters).
fn width(text: &str) -> usize {
    text.chars().count()
}

/// `label value` lines, labels aligned.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    rows: Vec<(&'static str, String)>,
}

impl Fields {
    pub(crate) fn add(&mut self, label: &'static str, value: impl Into<String>) {
        self.rows.push((label, value.into()));
    }

    /// Adds `value` if it is there.
    pub(crate) fn opt(&mut self, label: &'static str, value: Option<String>) {
        if let Some(value) = value {
            self.add(label, value);
        }
    }

    pub(crate) fn render(&self) -> String {
        let pad = self.rows.iter().map(|(l, _)| width(l)).max().unwrap_or(0) + 2;
        let mut out = String::new();
        for (label, value) in &self.rows {
            let mut lines = value.lines();
            let first = lines.next().unwrap_or("");
            out.push_str(&format!("{label:<pad$}{first}\n"));
            for more in lines {
                out.push_str(&format!("{:pad$}{more}\n", ""));
            }
        }
        out
    }
}

/// A time from the API, as `2025-01-01 12:00:00` (UTC).
pub(crate) fn time(value: &Value) -> String {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// The time between two API times, as `350ms`, `4.2s`, `3m05s`, `2h01m`.
pub(crate) fn duration(from: &Value, to: &Value) -> String {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    };
    match (parse(from), parse(to)) {
        (Some(from), Some(to)) => span(
            to.signed_duration_since(from)
                .num_milliseconds()
                .max(0)
                .unsigned_abs(),
        ),
        _ => "-".to_owned(),
    }
}

/// `ms` milliseconds, short.
pub(crate) fn span(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// A size in bytes, short: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub(crate) fn bytes(size: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if size < 1024 {
        return format!("{size} B");
    }
    let mut value = size as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A string field, or `-`.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// A JSON value for reading: on one line when short, indented otherwise.
pub(crate) fn json_block(value: &Value) -> String {
    let compact = value.to_string();
    if compact.chars().count() <= 80 {
        compact
    } else {
        serde_json::to_string_pretty(value).unwrap_or(compact)
    }
}

/// Writes `text` to stdout. A closed pipe (`| head`) ends the program
/// quietly rather than with a panic.
pub(crate) fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Prints a value as indented JSON, for `--json`.
pub(crate) fn emit_json(value: &Value) {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    emit(&text);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_and_colour_only_when_asked() {
        let mut table = Table::new(&["RUN", "STATUS", "NOTE"]);
        table.row(vec!["a".into(), Cell::status("succeeded"), "x".into()]);
        table.row(vec!["bbbb".into(), Cell::status("failed"), "".into()]);
        let plain = table.render(Style { color: false });
        assert_eq!(
            plain,
            "RUN   STATUS     NOTE\na     succeeded  x\nbbbb  failed\n"
        );
        let coloured = table.render(Style { color: true });
        assert!(
            coloured.contains("\x1b[32msucceeded\x1b[0m  x"),
            "{coloured:?}"
        );
        assert!(coloured.contains("\x1b[31mfailed\x1b[0m"), "{coloured:?}");
    }

    #[test]
    fn fields_align_and_indent_continuations() {
        let mut fields = Fields::default();
        fields.add("run", "r1");
        fields.add("output", "{\n  \"a\": 1\n}");
        assert_eq!(
            fields.render(),
            "run     r1\noutput  {\n          \"a\": 1\n        }\n"
        );
    }

    #[test]
    fn times_and_durations() {
        let (a, b) = (
            json!("2025-01-01T00:00:00Z"),
            json!("2025-01-01T00:00:01.500Z"),
        );
        assert_eq!(time(&a), "2025-01-01 00:00:00");
        assert_eq!(duration(&a, &b), "1.5s");
        assert_eq!(duration(&a, &Value::Null), "-");
        assert_eq!(span(12), "12ms");
        assert_eq!(span(185_000), "3m05s");
        assert_eq!(span(7_260_000), "2h01m");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(bytes(5 << 40), "5.0 TiB");
    }
}
