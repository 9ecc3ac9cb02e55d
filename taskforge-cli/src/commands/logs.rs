//! `taskforge runs logs`: the log lines of a run's step attempts, from the
//! store and, with `--follow`, from the live stream until the run ends.
//!
//! A line is known by its attempt (`step_run_id`) and its `seq` there (from
//! 0, without gaps), so one seen both in the store and on the stream is
//! printed once. Lines reach the store in batches (at the latest when their
//! attempt ends) and the stream live: a follow that began in the middle of
//! an attempt may see its later lines live before the earlier ones are
//! stored. Those are printed when the store has them (when the attempt
//! ends), after the later ones; `--json` lines carry `seq` to sort by.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::path;
use super::{STREAM_IDLE, TERMINAL};
use crate::client::{segment, Error};
use crate::output::{emit, Style};
use crate::sse::SseParser;
use crate::{Ctx, Done};

/// Which attempts' lines to print.
#[derive(Debug, Default)]
pub(crate) struct Which {
    /// Only this step's (its key).
    pub(crate) step: Option<String>,
    /// Only this attempt number of each step.
    pub(crate) attempt: Option<u32>,
}

impl Which {
    fn wants(&self, step_key: &str, attempt: u64) -> bool {
        self.step.as_deref().is_none_or(|s| s == step_key)
            && self.attempt.is_none_or(|a| u64::from(a) == attempt)
    }
}

/// Prints the lines of run `id`'s attempts chosen by `which`, then, with
/// `follow`, the new ones until the run finishes.
pub(crate) async fn logs(ctx: &Ctx, id: &str, which: &Which, follow: bool) -> Result<Done, Error> {
    let mut printer = Printer {
        ctx,
        run: id.to_owned(),
        which,
        seen: HashMap::new(),
        printed: 0,
    };
    if !follow {
        let view = printer.catch_up_all().await?;
        if printer.printed == 0 && !ctx.json {
            eprintln!("{}", printer.nothing(&view));
        }
        return Ok(Done::Ok);
    }
    // Subscribe before reading the store, so no line falls in between.
    let mut response = ctx
        .api
        .stream("/api/v1/stream", &[("run_id", id.to_owned())])
        .await?;
    printer.catch_up_all().await?;
    let mut parser = SseParser::default();
    loop {
        // The server sends a keep-alive every 15 s: a silent minute means
        // the connection is gone.
        let chunk = match tokio::time::timeout(STREAM_IDLE, response.chunk()).await {
            Ok(chunk) => chunk.map_err(|e| ctx.api.transport(&e))?,
            Err(_) => None,
        };
        let Some(chunk) = chunk else {
            let view = printer.catch_up_all().await?;
            let status = view["run"]["status"].as_str().unwrap_or_default();
            if TERMINAL.contains(&status) {
                return Ok(printer.finished(status));
            }
            return Err(Error::other(format!(
                "the server closed the stream while run {id} is {status}; follow again"
            )));
        };
        for event in parser.feed(&chunk).map_err(Error::other)? {
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            match event.name.as_str() {
                "snapshot" | "run_finished" => {
                    let status = data["status"].as_str().unwrap_or_default();
                    if TERMINAL.contains(&status) {
                        // Every attempt's lines are stored by now.
                        printer.catch_up_all().await?;
                        return Ok(printer.finished(status));
                    }
                }
                "step_log" => printer.live(&data).await?,
                "step_succeeded" | "step_failed" => {
                    // The attempt's last lines were just stored: print any
                    // that the stream had before this follow began.
                    let key = data["step_key"].as_str().unwrap_or_default();
                    let attempt = data["attempt"].as_u64().unwrap_or_default();
                    if which.wants(key, attempt) && printer.has_gap(key, attempt) {
                        printer.catch_up_all().await?;
                    }
                }
                "lagged" => {
                    // Lines were missed: the store has them (or will, when
                    // their attempt ends).
                    let view = printer.catch_up_all().await?;
                    let status = view["run"]["status"].as_str().unwrap_or_default();
                    if TERMINAL.contains(&status) {
                        return Ok(printer.finished(status));
                    }
                }
                _ => {}
            }
        }
    }
}

/// What was printed of one attempt: every line before `next`, and these
/// after it.
#[derive(Debug, Default)]
struct Seen {
    step_key: String,
    attempt: u64,
    next: u32,
    ahead: BTreeSet<u32>,
    /// The store was read for this attempt's gap once already.
    gap_read: bool,
}

impl Seen {
    /// Marks line `seq` printed; false if it was already.
    fn take(&mut self, seq: u32) -> bool {
        if seq < self.next || !self.ahead.insert(seq) {
            return false;
        }
        while self.ahead.remove(&self.next) {
            self.next += 1;
        }
        true
    }
}

#[derive(Debug)]
struct Printer<'a> {
    ctx: &'a Ctx,
    run: String,
    which: &'a Which,
    /// By `step_run_id`.
    seen: HashMap<String, Seen>,
    printed: u64,
}

impl Printer<'_> {
    /// Reads the run's attempts and prints each chosen one's stored lines
    /// not printed yet; the run's view.
    async fn catch_up_all(&mut self) -> Result<Value, Error> {
        let view = self.ctx.api.get(&path("runs", &self.run), &[]).await?;
        for step in view["steps"].as_array().into_iter().flatten() {
            let (Some(step_run_id), Some(key), Some(attempt)) = (
                step["id"].as_str(),
                step["step_key"].as_str(),
                step["attempt"].as_u64(),
            ) else {
                continue;
            };
            if self.which.wants(key, attempt) {
                self.catch_up(step_run_id, key, attempt).await?;
            }
        }
        Ok(view)
    }

    /// Prints the stored lines of one attempt that were not printed yet.
    async fn catch_up(&mut self, step_run_id: &str, key: &str, attempt: u64) -> Result<(), Error> {
        let logs = format!(
            "{}/steps/{}/logs",
            path("runs", &self.run),
            segment(step_run_id)
        );
        // Lines after `after`; before the first line, none is given.
        let mut after = self
            .seen
            .get(step_run_id)
            .and_then(|seen| seen.next.checked_sub(1))
            .map(|seq| seq.to_string());
        loop {
            let mut query = vec![("limit", "1000".to_owned())];
            if let Some(after) = &after {
                query.push(("after", after.clone()));
            }
            let page = self.ctx.api.get(&logs, &query).await?;
            for line in page["items"].as_array().into_iter().flatten() {
                self.print(step_run_id, key, attempt, line);
            }
            match page["next"].as_str() {
                Some(next) if after.as_deref() != Some(next) => after = Some(next.to_owned()),
                _ => return Ok(()),
            }
        }
    }

    /// A `step_log` event of the stream.
    async fn live(&mut self, data: &Value) -> Result<(), Error> {
        let (Some(step_run_id), Some(key), Some(attempt)) = (
            data["step_run_id"].as_str(),
            data["step_key"].as_str(),
            data["attempt"].as_u64(),
        ) else {
            return Ok(());
        };
        if data["run_id"].as_str().is_some_and(|r| r != self.run) || !self.which.wants(key, attempt)
        {
            return Ok(());
        }
        let seq = data["seq"].as_u64().and_then(|s| u32::try_from(s).ok());
        let seen = self.seen.get(step_run_id);
        let gap = seq.is_some_and(|seq| seen.map_or(0, |s| s.next) < seq);
        if gap && !seen.is_some_and(|s| s.gap_read) {
            // Lines before this one were not printed: the store may have
            // them already (read once; else they come when it ends).
            self.catch_up(step_run_id, key, attempt).await?;
            if let Some(seen) = self.seen.get_mut(step_run_id) {
                seen.gap_read = true;
            } else {
                self.seen.insert(
                    step_run_id.to_owned(),
                    Seen {
                        step_key: key.to_owned(),
                        attempt,
                        gap_read: true,
                        ..Seen::default()
                    },
                );
            }
        }
        self.print(step_run_id, key, attempt, data);
        Ok(())
    }

    /// Whether an attempt has lines printed after one not printed.
    fn has_gap(&self, key: &str, attempt: u64) -> bool {
        self.seen
            .values()
            .any(|s| s.step_key == key && s.attempt == attempt && !s.ahead.is_empty())
    }

    /// Prints `line` of an attempt, unless it was printed already.
    fn print(&mut self, step_run_id: &str, key: &str, attempt: u64, line: &Value) {
        if let Some(seq) = line["seq"].as_u64().and_then(|s| u32::try_from(s).ok()) {
            let seen = self
                .seen
                .entry(step_run_id.to_owned())
                .or_insert_with(|| Seen {
                    step_key: key.to_owned(),
                    attempt,
                    ..Seen::default()
                });
            if !seen.take(seq) {
                return;
            }
        }
        self.printed += 1;
        if self.ctx.json {
            let out = json!({
                "run_id": line["run_id"],
                "step_key": key,
                "attempt": attempt,
                "step_run_id": step_run_id,
                "seq": line["seq"],
                "at": line["at"],
                "level": line["level"],
                "message": line["message"],
            });
            emit(&format!("{out}\n"));
        } else {
            emit(&format_line(self.ctx.style, key, attempt, line));
        }
    }

    /// The note for a run with no line to print.
    fn nothing(&self, view: &Value) -> String {
        let steps = view["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        match &self.which.step {
            Some(key) if !steps.iter().any(|s| s["step_key"] == key.as_str()) => {
                format!("run {} has no attempt of step {key:?} (yet)", self.run)
            }
            _ if steps.is_empty() => format!("run {} has no step attempts yet", self.run),
            _ => "no log lines".to_owned(),
        }
    }

    /// The run ended in `status`: said on stderr, so stdout stays the log.
    fn finished(&self, status: &str) -> Done {
        if !self.ctx.json {
            eprintln!("run {} {}", self.run, status);
        }
        Done::Ok
    }
}

/// `HH:MM:SS.mmm LEVEL step#attempt message`, the time in UTC, the level
/// coloured; a message's further lines indented under its first.
fn format_line(style: Style, key: &str, attempt: u64, line: &Value) -> String {
    let at = line["at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_else(|| "--:--:--.---".to_owned());
    let level = line["level"].as_str().unwrap_or("-");
    let color = match level {
        "warn" => Some("33"),
        "error" => Some("31"),
        "debug" | "trace" => Some("2"),
        _ => None,
    };
    let label = format!("{:<5}", level.to_uppercase());
    let head = format!(
        "{} {} {key}#{attempt} ",
        style.paint(&at, Some("2")),
        style.paint(&label, color)
    );
    let indent = at.chars().count() + 1 + label.chars().count() + 1;
    let message = line["message"].as_str().unwrap_or_default();
    let mut out = head;
    for (i, part) in message.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', indent));
        }
        // A step's message must not drive the terminal.
        out.extend(part.chars().map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        }));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u32, level: &str, message: &str) -> Value {
        json!({ "seq": seq, "at": "2025-03-01T09:08:07.006Z", "level": level, "message": message })
    }

    #[test]
    fn lines_read_as_time_level_step_message() {
        let plain = Style { color: false };
        assert_eq!(
            format_line(plain, "build", 2, &line(0, "info", "compiling")),
            "09:08:07.006 INFO  build#2 compiling\n"
        );
        assert_eq!(
            format_line(plain, "b", 1, &line(0, "error", "a\nb\x1b[2J")),
            "09:08:07.006 ERROR b#1 a\n                   b\u{fffd}[2J\n"
        );
        let coloured = format_line(Style { color: true }, "b", 1, &line(0, "warn", "w"));
        assert!(
            coloured.contains("\x1b[33mWARN \x1b[0m b#1 w"),
            "{coloured:?}"
        );
        let coloured = format_line(Style { color: true }, "b", 1, &line(0, "error", "e"));
        assert!(coloured.contains("\x1b[31mERROR\x1b[0m"), "{coloured:?}");
    }

    #[test]
    fn each_line_is_printed_once() {
        let mut seen = Seen::default();
        assert!(seen.take(0) && seen.take(1));
        assert!(!seen.take(0) && !seen.take(1));
        // Live lines past a gap, then the gap from the store.
        assert!(seen.take(4) && seen.take(5));
        assert_eq!((seen.next, seen.ahead.len()), (2, 2));
        assert!(seen.take(2) && seen.take(3));
        assert!(!seen.take(4) && !seen.take(5));
        assert_eq!((seen.next, seen.ahead.len()), (6, 0));
        assert!(seen.take(6));
    }

    #[test]
    fn attempts_are_chosen_by_step_and_number() {
        let all = Which::default();
        assert!(all.wants("a", 3));
        let one = Which {
            step: Some("a".into()),
            attempt: Some(2),
        };
        assert!(one.wants("a", 2));
        assert!(!one.wants("a", 1));
        assert!(!one.wants("b", 2));
    }
}
