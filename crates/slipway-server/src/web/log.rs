//! A job's log as HTML: ANSI colours (SGR 0, 1, 30–37, 90–97) as classes, every line with an
//! anchor to link to (`#L12`), GitLab's collapsible sections (`section_start:TIME:NAME` …
//! `section_end:TIME:NAME`) as `<details>`, everything else escaped.

/// Lines per page: a 100,000-line log is read a page at a time.
pub const PAGE_LINES: usize = 1_000;

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// One line's text with its colours; `open` carries the colour across lines.
fn ansi_line(line: &str, state: &mut (Option<u8>, bool), out: &mut String) {
    let open = |out: &mut String, st: &(Option<u8>, bool)| {
        let mut classes = Vec::new();
        if let Some(c) = st.0 {
            classes.push(format!("c{c}"));
        }
        if st.1 {
            classes.push("b".into());
        }
        if !classes.is_empty() {
            out.push_str(&format!("<span class=\"{}\">", classes.join(" ")));
            true
        } else {
            false
        }
    };
    let mut in_span = open(out, state);
    let mut rest = line;
    while let Some(i) = rest.find('\u{1b}') {
        escape(&rest[..i], out);
        let after = &rest[i + 1..];
        if let Some(seq) = after.strip_prefix('[') {
            let end = seq.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(seq.len());
            let (params, cmd) = (&seq[..end], seq[end..].chars().next());
            if cmd == Some('m') {
                for p in params.split(';') {
                    match p.parse::<u8>().unwrap_or(0) {
                        0 => *state = (None, false),
                        1 => state.1 = true,
                        22 => state.1 = false,
                        39 => state.0 = None,
                        c @ (30..=37 | 90..=97) => state.0 = Some(c),
                        _ => {}
                    }
                }
                if in_span {
                    out.push_str("</span>");
                }
                in_span = open(out, state);
            }
            rest = &seq[(end + 1).min(seq.len())..];
        } else {
            rest = after;
        }
    }
    escape(rest, out);
    if in_span {
        out.push_str("</span>");
    }
}

/// The HTML of lines `from..to` (0-based) of `text`, numbered from `from + 1`.
pub fn render(text: &str, from: usize, to: usize) -> String {
    render_numbered(text, from, to, 0)
}

/// [`render`] of a piece of a log whose first line is line `before + 1` of the whole (what
/// a live page appends).
pub fn render_numbered(text: &str, from: usize, to: usize, before: usize) -> String {
    let mut out = String::new();
    let mut state = (None, false);
    let mut depth = 0usize;
    for (i, raw) in text.lines().enumerate().skip(from).take(to.saturating_sub(from)) {
        // A carriage return redraws the line: what shows is its last part.
        let line = raw.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
        if let Some(pos) = raw.find("section_start:") {
            let name = raw[pos..].split(':').nth(2).unwrap_or("").split(['\r', '\u{1b}', '[']).next().unwrap_or("");
            let header = strip(line);
            out.push_str("<details open><summary>");
            escape(
                if header.trim().is_empty() || header.contains("section_start:") { name } else { header.trim() },
                &mut out,
            );
            out.push_str("</summary>");
            depth += 1;
            continue;
        }
        if raw.contains("section_end:") {
            if depth > 0 {
                out.push_str("</details>");
                depth -= 1;
            }
            continue;
        }
        let n = before + i + 1;
        out.push_str(&format!("<span class=\"l\" id=\"L{n}\"><a class=\"n\" href=\"#L{n}\">{n}</a>"));
        ansi_line(line, &mut state, &mut out);
        out.push_str("</span>");
    }
    for _ in 0..depth {
        out.push_str("</details>");
    }
    out
}

/// The lines (1-based, at most `limit`) that contain `needle`, ignoring case and colours.
pub fn search(text: &str, needle: &str, limit: usize) -> Vec<(usize, String)> {
    let needle = needle.to_lowercase();
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let plain = strip(l.rsplit('\r').find(|s| !s.is_empty()).unwrap_or(""));
            plain.to_lowercase().contains(&needle).then(|| (i + 1, plain.chars().take(200).collect()))
        })
        .take(limit)
        .collect()
}

/// The first line (1-based) that reads like the failure: `error`, `FAIL`, `panic`.
pub fn first_error(text: &str) -> Option<usize> {
    static FAILURE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)(^|[^a-z])(error|fail(ed|ure)?|panic)([^a-z]|$)").expect("a regex")
    });
    text.lines().position(|l| FAILURE.is_match(&strip(l))).map(|i| i + 1)
}

/// A line without its ANSI sequences.
pub(crate) fn strip(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find('\u{1b}') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        rest = match after.strip_prefix('[') {
            Some(seq) => {
                let end = seq.find(|c: char| c.is_ascii_alphabetic()).map_or(seq.len(), |e| e + 1);
                &seq[end..]
            }
            None => after,
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_anchors_sections_and_escapes() {
        let log = "plain <b>\n\u{1b}[31;1mred bold\u{1b}[0m done\nsection_start:1:build\r\u{1b}[0Kinside\nsection_end:1:build\r\u{1b}[0K\nFAIL: x";
        let html = render(log, 0, 100);
        assert!(html.contains("id=\"L1\"") && html.contains("plain &lt;b&gt;"), "{html}");
        assert!(html.contains("<span class=\"c31 b\">red bold</span> done"), "{html}");
        assert!(html.contains("<details open><summary>inside</summary>"), "{html}");
        assert!(html.contains("</details>") && !html.contains("section_"), "{html}");
        assert_eq!(first_error(log), Some(5));
        let bare = render("section_start:1:deps\r\u{1b}[0K\nx\nsection_end:1:deps\r\u{1b}[0K", 0, 10);
        assert!(bare.contains("<summary>deps</summary>"), "{bare}");
        assert_eq!(first_error("all good\nerrors=0"), None);
        assert_eq!(first_error("ok\n\u{1b}[31mERROR: broken\u{1b}[0m"), Some(2));
        assert_eq!(search(log, "RED", 10), vec![(2, "red bold done".to_string())]);
        assert!(render_numbered("x\ny", 0, 2, 41).contains("id=\"L43\""));
        let page = render("a\nb\nc", 1, 2);
        assert!(page.contains("id=\"L2\"") && !page.contains("id=\"L1\"") && !page.contains("id=\"L3\""), "{page}");
    }
}
