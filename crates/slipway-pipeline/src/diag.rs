//! Diagnostics: every error the pipeline layer reports carries a file, a line:col range,
//! a message and usually a hint; [`SourceMap`] renders them with the quoted source line.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FileId(pub u32);

/// A 1-based, inclusive-start / exclusive-end range of line:col positions in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start_line: u32,
    pub start_col: u32,
    pub end_line: u32,
    pub end_col: u32,
}

impl Span {
    pub fn new(file: FileId, start_line: u32, start_col: u32, end_line: u32, end_col: u32) -> Span {
        Span { file, start_line, start_col, end_line, end_col }
    }

    /// A span of `len` columns starting `offset` columns into this span's first line.
    pub fn sub(self, offset: u32, len: u32) -> Span {
        let col = self.start_col + offset;
        Span { start_col: col, end_line: self.start_line, end_col: col + len.max(1), ..self }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
    /// Further places that explain the error (e.g. the rest of a cycle).
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Error, span, message: message.into(), hint: None, notes: Vec::new() }
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(span, message) }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }
}

/// The files a pipeline was read from, for rendering diagnostics.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<(PathBuf, String)>,
}

impl SourceMap {
    pub fn add(&mut self, path: &Path, text: String) -> FileId {
        self.files.push((path.to_path_buf(), text));
        FileId(self.files.len() as u32 - 1)
    }

    pub fn path(&self, id: FileId) -> &Path {
        self.files.get(id.0 as usize).map(|(p, _)| p.as_path()).unwrap_or(Path::new("<unknown>"))
    }

    pub fn text(&self, id: FileId) -> &str {
        self.files.get(id.0 as usize).map(|(_, t)| t.as_str()).unwrap_or("")
    }

    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files.iter().position(|(p, _)| p == path).map(|i| FileId(i as u32))
    }

    /// `file:line:col` of a span.
    pub fn location(&self, span: Span) -> String {
        format!("{}:{}:{}", self.path(span.file).display(), span.start_line, span.start_col)
    }

    /// Renders a diagnostic the way rustc and ripgrep users expect:
    /// message, location, the quoted line with a caret underline, hint and notes.
    pub fn render(&self, d: &Diagnostic, color: bool) -> String {
        let (red, yellow, blue, bold, reset) =
            if color { ("\x1b[31;1m", "\x1b[33;1m", "\x1b[34;1m", "\x1b[1m", "\x1b[0m") } else { ("", "", "", "", "") };
        let (label, lc) = match d.severity {
            Severity::Error => ("error", red),
            Severity::Warning => ("warning", yellow),
        };
        let mut out = String::new();
        let _ = writeln!(out, "{lc}{label}{reset}{bold}: {}{reset}", d.message);
        let _ = writeln!(out, "  {blue}-->{reset} {}", self.location(d.span));
        if let Some(line) = self.text(d.span.file).lines().nth(d.span.start_line.saturating_sub(1) as usize) {
            let num = d.span.start_line.to_string();
            let pad = " ".repeat(num.len());
            let line = line.replace('\t', " ");
            let start = d.span.start_col.saturating_sub(1) as usize;
            let width = line.chars().count();
            let len = if d.span.end_line == d.span.start_line && d.span.end_col > d.span.start_col {
                (d.span.end_col - d.span.start_col) as usize
            } else {
                width.saturating_sub(start).max(1)
            };
            let len = len.min(width.saturating_sub(start).max(1));
            let _ = writeln!(out, "{blue}{pad} |{reset}");
            let _ = writeln!(out, "{blue}{num} |{reset} {line}");
            let _ = writeln!(out, "{blue}{pad} |{reset} {}{lc}{}{reset}", " ".repeat(start), "^".repeat(len));
        }
        let pad = " ".repeat(d.span.start_line.to_string().len());
        if let Some(h) = &d.hint {
            let _ = writeln!(out, "{pad} {blue}={reset} {bold}help{reset}: {h}");
        }
        for n in &d.notes {
            let _ = writeln!(out, "{pad} {blue}={reset} {bold}note{reset}: {n}");
        }
        out
    }

    /// A diagnostic as JSON for `--json` output.
    pub fn to_json(&self, d: &Diagnostic) -> serde_json::Value {
        serde_json::json!({
            "severity": match d.severity { Severity::Error => "error", Severity::Warning => "warning" },
            "file": self.path(d.span.file).display().to_string(),
            "line": d.span.start_line,
            "column": d.span.start_col,
            "message": d.message,
            "hint": d.hint,
            "notes": d.notes,
        })
    }
}

/// The closest candidate to `input`, if it is close enough to be a plausible typo: within an
/// edit distance (with transpositions) of a third of its length, or very similar by
/// Jaro-Winkler (which catches long names with a changed tail).
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (input.chars().count() / 3).max(1);
    let mut best: Option<(usize, f64, &str)> = None;
    for c in candidates {
        if c == input {
            continue;
        }
        let dist = strsim::osa_distance(input, c);
        let jw = strsim::jaro_winkler(input, c);
        if dist > limit && jw < 0.9 {
            continue;
        }
        if best.is_none_or(|(bd, bj, _)| dist < bd || (dist == bd && jw > bj)) {
            best = Some((dist, jw, c));
        }
    }
    best.map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_quotes_the_line_and_points_at_the_column() {
        let mut sm = SourceMap::default();
        let f = sm.add(Path::new(".slipway.yml"), "build:\n  neds: [test]\n".into());
        let d = Diagnostic::error(Span::new(f, 2, 3, 2, 7), "unknown keyword `neds` in job `build`")
            .with_hint("did you mean `needs`?");
        let r = sm.render(&d, false);
        assert_eq!(
            r,
            "error: unknown keyword `neds` in job `build`\n  --> .slipway.yml:2:3\n  |\n2 |   neds: [test]\n  |   ^^^^\n  = help: did you mean `needs`?\n"
        );
    }

    #[test]
    fn did_you_mean_finds_close_keywords_only() {
        assert_eq!(did_you_mean("neds", ["needs", "script", "stage"]), Some("needs"));
        assert_eq!(did_you_mean("scirpt", ["needs", "script", "stage"]), Some("script"));
        assert_eq!(did_you_mean("zzzzzz", ["needs", "script", "stage"]), None);
        assert_eq!(did_you_mean("tow", ["one", "two", "three"]), Some("two"));
        assert_eq!(did_you_mean("biuld", ["build", "test"]), Some("build"));
        assert_eq!(did_you_mean("x", ["deploy"]), None);
    }
}
