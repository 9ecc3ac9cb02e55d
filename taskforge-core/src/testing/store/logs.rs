//! Cases for [`LogStore`](crate::store::LogStore).

use crate::id::StepRunId;
use crate::step::{LogLevel, LogLine};
use crate::store::LogQuery;

use super::*;

fn line(run_id: RunId, step_run_id: StepRunId, seq: u32, message: &str) -> LogLine {
    LogLine {
        run_id,
        step_run_id,
        seq,
        at: at(i64::from(seq)),
        level: if seq.is_multiple_of(2) {
            LogLevel::Info
        } else {
            LogLevel::Warn
        },
        message: message.to_owned(),
    }
}

fn query(run_id: RunId, step_run_id: StepRunId, after: Option<u32>, limit: usize) -> LogQuery {
    LogQuery {
        run_id,
        step_run_id,
        after,
        limit,
    }
}

/// Lines appended in batches come back whole, in seq order, page by page.
pub async fn log_lines_round_trip_in_seq_order<S: Store + Clone>(store: S) {
    let (run_id, attempt) = (RunId::new(), StepRunId::new());
    let lines: Vec<LogLine> = (0..7)
        .map(|seq| {
            line(
                run_id,
                attempt,
                seq,
                &format!("line {seq}: ünïcode ✓ \"quoted\""),
            )
        })
        .collect();
    // Two batches, the later lines first.
    store.append_logs(&lines[4..]).await.expect("append");
    store.append_logs(&lines[..4]).await.expect("append");

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_logs(&query(run_id, attempt, after, 3))
            .await
            .expect("list logs");
        assert!(page.items.len() <= 3);
        seen.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, lines);
    let all = store
        .list_logs(&LogQuery::new(run_id, attempt))
        .await
        .expect("list logs");
    assert_eq!((all.items, all.next), (lines, None));
}

/// A line whose attempt and seq are stored already is left as it was: a
/// flush retried after a lost reply adds nothing and changes nothing.
pub async fn log_appends_are_idempotent<S: Store + Clone>(store: S) {
    let (run_id, attempt) = (RunId::new(), StepRunId::new());
    let first = vec![line(run_id, attempt, 0, "a"), line(run_id, attempt, 1, "b")];
    store.append_logs(&first).await.expect("append");
    let again = vec![
        line(run_id, attempt, 1, "b, rewritten"),
        line(run_id, attempt, 2, "c"),
    ];
    store.append_logs(&again).await.expect("append again");
    store.append_logs(&[]).await.expect("append nothing");
    let page = store
        .list_logs(&LogQuery::new(run_id, attempt))
        .await
        .expect("list logs");
    let messages: Vec<&str> = page.items.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(messages, ["a", "b", "c"]);
}

/// One attempt's listing holds its own lines only: not another attempt's of
/// the same run, nor any line under another run's id.
pub async fn logs_are_kept_per_attempt<S: Store + Clone>(store: S) {
    let run_id = RunId::new();
    let (first, second) = (StepRunId::new(), StepRunId::new());
    store
        .append_logs(&[
            line(run_id, first, 0, "first attempt"),
            line(run_id, second, 0, "second attempt"),
            line(run_id, second, 1, "second attempt, again"),
        ])
        .await
        .expect("append");
    let of_first = store
        .list_logs(&LogQuery::new(run_id, first))
        .await
        .expect("list logs");
    assert_eq!(of_first.items.len(), 1);
    assert_eq!(of_first.items[0].message, "first attempt");
    let of_second = store
        .list_logs(&LogQuery::new(run_id, second))
        .await
        .expect("list logs");
    assert_eq!(of_second.items.len(), 2);
    let elsewhere = store
        .list_logs(&LogQuery::new(RunId::new(), second))
        .await
        .expect("list logs");
    assert!(elsewhere.items.is_empty());
}

/// An attempt that logged nothing, or that does not exist, has an empty
/// log, not an error; a page after the last line is empty.
pub async fn empty_logs_are_empty_pages<S: Store + Clone>(store: S) {
    let (run_id, attempt) = (RunId::new(), StepRunId::new());
    let page = store
        .list_logs(&LogQuery::new(run_id, attempt))
        .await
        .expect("list logs");
    assert!(page.items.is_empty() && page.next.is_none());
    store
        .append_logs(&[line(run_id, attempt, 0, "only")])
        .await
        .expect("append");
    for after in [Some(0), Some(u32::MAX)] {
        let page = store
            .list_logs(&query(run_id, attempt, after, 10))
            .await
            .expect("list logs");
        assert!(
            page.items.is_empty() && page.next.is_none(),
            "after {after:?}"
        );
    }
}
