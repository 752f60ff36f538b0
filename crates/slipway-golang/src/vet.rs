//! `slipway go vet` and `slipway go mod check`: `go vet -json` findings (file:line:col,
//! analyzer, message), `gofmt -l` findings, `go mod verify`, and the tidy check
//! (`go mod tidy -diff`, which leaves the module untouched and prints what tidy would change).

use std::path::Path;
use std::process::Command;

use crate::GoError;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    pub package: String,
    pub analyzer: String,
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VetReport {
    pub findings: Vec<Finding>,
    /// Files `gofmt -l` would change (relative to the module).
    pub unformatted: Vec<String>,
    /// What gofmt would change in them (`gofmt -d`), at most [`MAX_DIFF_LINES`] lines.
    #[serde(default)]
    pub format_diff: String,
    /// Packages that did not type-check: `go vet` could not analyse them.
    pub errors: Vec<String>,
}

/// The longest formatting diff a report keeps.
pub const MAX_DIFF_LINES: usize = 200;

impl VetReport {
    /// No vet finding and every package analysed. Formatting is a gate of its own
    /// (`gates: {vet: {unformatted: 0}}`): newer gofmt versions reformat code (doc comments,
    /// for one) that `go vet` accepts, so it never fails vet by itself.
    pub fn clean(&self) -> bool {
        self.findings.is_empty() && self.errors.is_empty()
    }
}

fn spawn_err(e: std::io::Error) -> GoError {
    if e.kind() == std::io::ErrorKind::NotFound { GoError::GoMissing } else { GoError::Io(e.to_string()) }
}

/// Parses what `go vet -json` writes (JSON objects interleaved with `# package` lines).
pub fn parse_vet_json(text: &str, module_dir: &Path) -> (Vec<Finding>, Vec<String>) {
    let mut findings = Vec::new();
    let mut other = Vec::new();
    let json: String = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            if t.starts_with('#') {
                return false;
            }
            let is_json = t.starts_with('{')
                || t.starts_with('}')
                || t.starts_with('"')
                || t.starts_with('[')
                || t.starts_with(']');
            if !is_json && !t.is_empty() {
                other.push(l.to_string());
            }
            is_json
        })
        .collect::<Vec<_>>()
        .join("\n");
    for v in serde_json::Deserializer::from_str(&json).into_iter::<serde_json::Value>().flatten() {
        let Some(pkgs) = v.as_object() else { continue };
        for (pkg, analyzers) in pkgs {
            let Some(analyzers) = analyzers.as_object() else { continue };
            for (analyzer, diags) in analyzers {
                if analyzer == "error" {
                    other.push(format!("{pkg}: {}", diags.as_str().unwrap_or("")));
                    continue;
                }
                for d in diags.as_array().into_iter().flatten() {
                    let posn = d["posn"].as_str().unwrap_or("");
                    let mut parts = posn.rsplitn(3, ':');
                    let col = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                    let line = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                    let file = parts.next().unwrap_or(posn);
                    let file = Path::new(file)
                        .strip_prefix(module_dir)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| file.to_string());
                    findings.push(Finding {
                        package: pkg.clone(),
                        analyzer: analyzer.clone(),
                        file,
                        line,
                        column: col,
                        message: d["message"].as_str().unwrap_or("").to_string(),
                    });
                }
            }
        }
    }
    findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    (findings, other)
}

/// Runs `go vet -json` and `gofmt -l` on the packages.
pub fn vet(dir: &Path, patterns: &[String]) -> Result<VetReport, GoError> {
    let pats: Vec<String> = if patterns.is_empty() { vec!["./...".into()] } else { patterns.to_vec() };
    let out = Command::new("go").args(["vet", "-json"]).args(&pats).current_dir(dir).output().map_err(spawn_err)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let module_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let (findings, errors) = parse_vet_json(&stderr, &module_dir);
    if !out.status.success()
        && errors
            .iter()
            .any(|e| e.contains("matched no packages") || e.contains("no such file") || e.contains("cannot find"))
    {
        return Err(crate::failed("go vet", errors.join("\n")));
    }
    // gofmt ships with the Go toolchain, beside `go`.
    let list =
        Command::new("go").args(["list", "-f", "{{.Dir}}"]).args(&pats).current_dir(dir).output().map_err(spawn_err)?;
    let dirs: Vec<String> = String::from_utf8_lossy(&list.stdout).lines().map(str::to_string).collect();
    let goroot = Command::new("go").args(["env", "GOROOT"]).current_dir(dir).output().map_err(spawn_err)?;
    let gofmt = Path::new(String::from_utf8_lossy(&goroot.stdout).trim()).join("bin/gofmt");
    let mut unformatted = Vec::new();
    if !dirs.is_empty() {
        let mut files = Vec::new();
        for d in &dirs {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "go") {
                    files.push(p);
                }
            }
        }
        if !files.is_empty() {
            let out = Command::new(&gofmt)
                .arg("-l")
                .args(&files)
                .current_dir(dir)
                .output()
                .map_err(|e| GoError::Io(format!("{}: {e}", gofmt.display())))?;
            unformatted = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| {
                    Path::new(l)
                        .strip_prefix(&module_dir)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| l.to_string())
                })
                .collect();
            unformatted.sort();
        }
    }
    let mut format_diff = String::new();
    if !unformatted.is_empty() {
        let out = Command::new(&gofmt)
            .arg("-d")
            .args(unformatted.iter().map(|f| module_dir.join(f)))
            .current_dir(dir)
            .output()
            .map_err(|e| GoError::Io(format!("{}: {e}", gofmt.display())))?;
        let text = String::from_utf8_lossy(&out.stdout).replace(&format!("{}/", module_dir.display()), "");
        let lines: Vec<&str> = text.lines().collect();
        format_diff = lines.iter().take(MAX_DIFF_LINES).copied().collect::<Vec<_>>().join("\n");
        if lines.len() > MAX_DIFF_LINES {
            format_diff.push_str(&format!("\n… {} more line(s)", lines.len() - MAX_DIFF_LINES));
        }
    }
    Ok(VetReport { findings, unformatted, format_diff, errors })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ModReport {
    pub verified: bool,
    pub verify_output: String,
    pub tidy: bool,
    /// The diff `go mod tidy` would apply to go.mod/go.sum, or (vendored) what is
    /// inconsistent between go.mod and vendor/modules.txt.
    pub tidy_diff: String,
    /// The module vendors its dependencies (`vendor/modules.txt`): it is checked offline, by
    /// the consistency of `vendor/` with go.mod, instead of `go mod verify` and `go mod tidy`,
    /// which need the module cache.
    #[serde(default)]
    pub vendored: bool,
}

/// `go mod verify` and `go mod tidy -diff` (Go 1.23+); for a vendored module, whether
/// `vendor/` is consistent with go.mod (what `-mod=vendor` builds check), which needs no
/// network.
pub fn mod_check(dir: &Path) -> Result<ModReport, GoError> {
    if dir.join("vendor/modules.txt").is_file() {
        let out = Command::new("go")
            .args(["list", "-mod=vendor", "-deps", "-test", "./..."])
            .current_dir(dir)
            .output()
            .map_err(spawn_err)?;
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let consistent = out.status.success() || !err.contains("inconsistent vendoring");
        return Ok(ModReport {
            verified: true,
            verify_output: "vendored: the build uses vendor/, not the module cache".into(),
            tidy: consistent,
            tidy_diff: if consistent { String::new() } else { err },
            vendored: true,
        });
    }
    let verify = Command::new("go").args(["mod", "verify"]).current_dir(dir).output().map_err(spawn_err)?;
    let tidy = Command::new("go").args(["mod", "tidy", "-diff"]).current_dir(dir).output().map_err(spawn_err)?;
    let tidy_err = String::from_utf8_lossy(&tidy.stderr);
    if !tidy.status.success() && tidy.stdout.is_empty() {
        return Err(crate::failed("go mod tidy -diff", tidy_err));
    }
    Ok(ModReport {
        verified: verify.status.success(),
        verify_output: format!(
            "{}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        )
        .trim()
        .to_string(),
        tidy: tidy.status.success(),
        tidy_diff: String::from_utf8_lossy(&tidy.stdout).into_owned(),
        vendored: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vet_json_with_package_comments() {
        let text = "# example.com/vetx/a\n{\n\t\"example.com/vetx/a\": {\n\t\t\"printf\": [\n\t\t\t{\n\t\t\t\t\"posn\": \"/m/a/a.go:6:14\",\n\t\t\t\t\"message\": \"bad format\"\n\t\t\t}\n\t\t]\n\t}\n}\n";
        let (f, other) = parse_vet_json(text, Path::new("/m"));
        assert!(other.is_empty());
        assert_eq!(
            f,
            vec![Finding {
                package: "example.com/vetx/a".into(),
                analyzer: "printf".into(),
                file: "a/a.go".into(),
                line: 6,
                column: 14,
                message: "bad format".into()
            }]
        );
    }
}
