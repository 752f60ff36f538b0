//! Go coverage profiles (`-coverprofile`): parsing, merging duplicate blocks the way
//! `go tool cover` does, and totals per package and overall (statements covered / statements).
//! Per-function figures come from `go tool cover -func`, whose output is parsed here too.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct BlockKey {
    file: String,
    start_line: u32,
    start_col: u32,
    end_line: u32,
    end_col: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub mode: String,
    blocks: BTreeMap<BlockKey, (u64, u64)>, // (statements, count)
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error("not a coverage profile: the first line must be `mode: set|count|atomic`")]
    NoMode,
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Ratio {
    pub covered: u64,
    pub statements: u64,
    /// Percent, as `go tool cover` computes it (0 when there are no statements).
    pub percent: f64,
}

impl Ratio {
    fn new(covered: u64, statements: u64) -> Ratio {
        let percent = if statements == 0 { 0.0 } else { covered as f64 * 100.0 / statements as f64 };
        Ratio { covered, statements, percent }
    }
}

impl Profile {
    /// Parses one or several concatenated profiles (later `mode:` lines must agree).
    pub fn parse(text: &str) -> Result<Profile, ProfileError> {
        let mut p = Profile::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(mode) = line.strip_prefix("mode: ") {
                if !p.mode.is_empty() && p.mode != mode {
                    return Err(ProfileError::Line {
                        line: i + 1,
                        message: format!("mode `{mode}` after mode `{}`", p.mode),
                    });
                }
                p.mode = mode.to_string();
                continue;
            }
            if p.mode.is_empty() {
                return Err(ProfileError::NoMode);
            }
            let err = |m: &str| ProfileError::Line { line: i + 1, message: m.to_string() };
            // file:startLine.startCol,endLine.endCol numStmt count  (file may contain ':')
            let (file, rest) = line.rsplit_once(':').ok_or_else(|| err("expected `file:range statements count`"))?;
            let mut parts = rest.split(' ');
            let range = parts.next().ok_or_else(|| err("missing range"))?;
            let stmts: u64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| err("bad statement count"))?;
            let count: u64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| err("bad hit count"))?;
            let (start, end) = range.split_once(',').ok_or_else(|| err("bad range"))?;
            let lc = |s: &str| -> Option<(u32, u32)> {
                let (l, c) = s.split_once('.')?;
                Some((l.parse().ok()?, c.parse().ok()?))
            };
            let ((sl, sc), (el, ec)) =
                (lc(start).ok_or_else(|| err("bad range start"))?, lc(end).ok_or_else(|| err("bad range end"))?);
            let key = BlockKey { file: file.to_string(), start_line: sl, start_col: sc, end_line: el, end_col: ec };
            let set_mode = p.mode == "set";
            let slot = p.blocks.entry(key).or_insert((stmts, 0));
            // go tool cover merges duplicate blocks: OR in set mode, sum otherwise.
            slot.1 = if set_mode { (slot.1 | count).min(1) } else { slot.1.saturating_add(count) };
        }
        if p.mode.is_empty() {
            return Err(ProfileError::NoMode);
        }
        Ok(p)
    }

    pub fn total(&self) -> Ratio {
        let (c, s) = self.blocks.values().fold((0, 0), |(c, s), (n, hit)| (c + if *hit > 0 { n } else { &0 }, s + n));
        Ratio::new(c, s)
    }

    /// Totals per package (the import path: the file's directory).
    pub fn by_package(&self) -> BTreeMap<String, Ratio> {
        let mut acc: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (k, (n, hit)) in &self.blocks {
            let pkg = k.file.rsplit_once('/').map(|(d, _)| d).unwrap_or("").to_string();
            let e = acc.entry(pkg).or_default();
            e.1 += n;
            if *hit > 0 {
                e.0 += n;
            }
        }
        acc.into_iter().map(|(k, (c, s))| (k, Ratio::new(c, s))).collect()
    }

    /// Writes the merged profile back in Go's format.
    pub fn render(&self) -> String {
        let mut out = format!("mode: {}\n", self.mode);
        for (k, (n, hit)) in &self.blocks {
            out.push_str(&format!(
                "{}:{}.{},{}.{} {n} {hit}\n",
                k.file, k.start_line, k.start_col, k.end_line, k.end_col
            ));
        }
        out
    }
}

/// One line of `go tool cover -func`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FuncCoverage {
    pub file: String,
    pub line: u32,
    pub function: String,
    pub percent: f64,
}

/// Parses `go tool cover -func` output: the functions and the `total:` percentage.
pub fn parse_func_output(text: &str) -> (Vec<FuncCoverage>, Option<f64>) {
    let mut funcs = Vec::new();
    let mut total = None;
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').filter(|c| !c.is_empty()).collect();
        let Some(pct) = cols.last().and_then(|p| p.trim().strip_suffix('%')).and_then(|p| p.parse::<f64>().ok()) else {
            continue;
        };
        if cols.first().is_some_and(|c| c.starts_with("total:")) {
            total = Some(pct);
            continue;
        }
        if cols.len() < 3 {
            continue;
        }
        let loc = cols[0].trim_end_matches(':');
        let (file, line_no) = match loc.rsplit_once(':') {
            Some((f, l)) => (f.to_string(), l.parse().unwrap_or(0)),
            None => (loc.to_string(), 0),
        };
        funcs.push(FuncCoverage { file, line: line_no, function: cols[1].trim().to_string(), percent: pct });
    }
    (funcs, total)
}

impl PartialEq for Profile {
    fn eq(&self, other: &Profile) -> bool {
        self.mode == other.mode && self.blocks == other.blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_merging() {
        let p = Profile::parse(
            "mode: set\nex.com/a/a.go:3.24,3.40 1 1\nex.com/a/a.go:5.24,6.11 1 0\nex.com/a/a.go:6.11,8.3 1 0\nex.com/a/a.go:9.2,9.11 1 0\nex.com/b/b.go:1.1,2.2 2 0\nmode: set\nex.com/a/a.go:5.24,6.11 1 1\n",
        )
        .unwrap();
        assert_eq!(p.total(), Ratio { covered: 2, statements: 6, percent: 100.0 / 3.0 });
        let by = p.by_package();
        assert_eq!(by["ex.com/a"].covered, 2);
        assert_eq!(by["ex.com/b"].statements, 2);
        assert!(p.render().starts_with("mode: set\nex.com/a/a.go:3.24,3.40 1 1\n"));
    }

    #[test]
    fn bad_profiles_are_refused_with_the_line() {
        assert_eq!(Profile::parse("hello"), Err(ProfileError::NoMode));
        assert!(matches!(Profile::parse("mode: set\nx.go:1.1,2.2 one 1\n"), Err(ProfileError::Line { line: 2, .. })));
        assert!(matches!(Profile::parse("mode: set\nmode: count\n"), Err(ProfileError::Line { line: 2, .. })));
    }

    #[test]
    fn func_output() {
        let (f, t) = parse_func_output(
            "example.com/fx/ok/ok.go:3:\tAdd\t\t100.0%\nexample.com/fx/ok/ok.go:5:\tUnused\t\t0.0%\ntotal:\t\t\t(statements)\t25.0%\n",
        );
        assert_eq!(t, Some(25.0));
        assert_eq!(
            f[1],
            FuncCoverage { file: "example.com/fx/ok/ok.go".into(), line: 5, function: "Unused".into(), percent: 0.0 }
        );
    }
}
