//! A line diff of two texts (pretty-printed definitions), by longest common
//! subsequence after the common head and tail are taken off, rendered as
//! escaped HTML.

use std::fmt::Write as _;

use super::html::Esc;

/// The most cells the LCS table may have; beyond it the middle is shown as
/// removed then added, which is still correct, only less precise.
const MAX_CELLS: usize = 4_000_000;

/// One line of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// In both.
    Same(&'a str),
    /// Only in the old text.
    Removed(&'a str),
    /// Only in the new text.
    Added(&'a str),
}

/// The lines of `old` and `new`, each marked same, removed or added.
pub(crate) fn diff<'a>(old: &'a str, new: &'a str) -> Vec<Line<'a>> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut out: Vec<Line<'a>> = a[..head].iter().map(|l| Line::Same(l)).collect();
    if mid_a.len().saturating_mul(mid_b.len()) > MAX_CELLS {
        out.extend(mid_a.iter().map(|l| Line::Removed(l)));
        out.extend(mid_b.iter().map(|l| Line::Added(l)));
    } else {
        lcs(mid_a, mid_b, &mut out);
    }
    out.extend(a[a.len() - tail..].iter().map(|l| Line::Same(l)));
    out
}

fn lcs<'a>(a: &[&'a str], b: &[&'a str], out: &mut Vec<Line<'a>>) {
    let (n, m) = (a.len(), b.len());
    // lengths[i][j]: the LCS of a[i..] and b[j..].
    let mut lengths = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lengths[at(i, j)] = if a[i] == b[j] {
                lengths[at(i + 1, j + 1)] + 1
            } else {
                lengths[at(i + 1, j)].max(lengths[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if lengths[at(i + 1, j)] >= lengths[at(i, j + 1)] {
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed(l)));
    out.extend(b[j..].iter().map(|l| Line::Added(l)));
}

/// The diff as a `<pre>`, with `+`/`-` markers and classes for colour.
pub(crate) fn render(lines: &[Line<'_>]) -> String {
    let mut out = String::from("<pre class=\"diff\">");
    for line in lines {
        let (class, mark, text) = match line {
            Line::Same(text) => ("same", ' ', text),
            Line::Removed(text) => ("del", '-', text),
            Line::Added(text) => ("add", '+', text),
        };
        let _ = write!(out, "<span class=\"{class}\">{mark} {}</span>", Esc(text));
    }
    out.push_str("</pre>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_change() {
        let lines = diff("a\nb\n", "a\nb\n");
        assert!(lines.iter().all(|l| matches!(l, Line::Same(_))));
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn insertions_and_removals_are_found() {
        let lines = diff("a\nb\nc\nd", "a\nc\nx\nd");
        assert_eq!(
            lines,
            vec![
                Line::Same("a"),
                Line::Removed("b"),
                Line::Same("c"),
                Line::Added("x"),
                Line::Same("d"),
            ]
        );
    }

    #[test]
    fn rendering_escapes_and_marks() {
        let html = render(&diff("<a>", "<b>"));
        assert!(html.contains("<span class=\"del\">- &lt;a&gt;</span>"));
        assert!(html.contains("<span class=\"add\">+ &lt;b&gt;</span>"));
    }

    #[test]
    fn huge_middles_fall_back_to_removed_then_added() {
        let old: String = (0..3000).map(|i| format!("o{i}\n")).collect();
        let new: String = (0..3000).map(|i| format!("n{i}\n")).collect();
        let lines = diff(&old, &new);
        assert_eq!(lines.len(), 6000);
        assert!(matches!(lines[0], Line::Removed("o0")));
        assert!(matches!(lines[3000], Line::Added("n0")));
    }
}
