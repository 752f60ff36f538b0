//! Quality gates: thresholds over the reports of `slipway go test|vet|mod check|build`.
//! Each gate gives its actual value, its threshold, pass or fail, and — when it fails — the
//! packages, tests or files to blame.

use std::path::{Path, PathBuf};

/// The thresholds (`None` gates are off: the `gates:` section's type, which flags adjust) and
/// the coverage baseline `coverage_no_decrease` compares against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateConfig {
    pub limits: slipway_model::sections::Gates,
    pub baseline: Option<Baseline>,
}

impl From<&slipway_model::sections::Gates> for GateConfig {
    /// The pipeline file's `gates:` section (no baseline yet: see [`read_baseline`]).
    fn from(g: &slipway_model::sections::Gates) -> GateConfig {
        GateConfig { limits: g.clone(), baseline: None }
    }
}

/// After every gate passed on the default branch: the run's total coverage becomes the
/// baseline `coverage_no_decrease` compares against (with the commit it came from: the
/// pipeline's `CI_COMMIT_SHA`, else `HEAD`). Returns the total recorded.
pub fn record_baseline(root: &Path, state_dir: &Path, files: &ReportFiles) -> Option<f64> {
    if !slipway_git::on_default_branch(root) {
        return None;
    }
    let total = coverage_total(files)?;
    let commit = std::env::var("CI_COMMIT_SHA")
        .ok()
        .or_else(|| slipway_git::output(root, &["rev-parse", "HEAD"]))
        .unwrap_or_default();
    write_baseline(state_dir, &Baseline { total, commit }).ok().map(|()| total)
}

/// The coverage of the last run whose gates passed on the default branch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    pub total: f64,
    pub commit: String,
}

const BASELINE: &str = "baseline/coverage.json";

pub fn read_baseline(state_dir: &Path) -> Option<Baseline> {
    serde_json::from_str(&std::fs::read_to_string(state_dir.join(BASELINE)).ok()?).ok()
}

pub fn write_baseline(state_dir: &Path, b: &Baseline) -> std::io::Result<()> {
    let path = state_dir.join(BASELINE);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(b).unwrap_or_default())?;
    std::fs::rename(tmp, path)
}

/// The total coverage in a coverage.json, if it is there.
pub fn coverage_total(files: &ReportFiles) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files.coverage).ok()?).ok()?;
    v["total"]["percent"].as_f64()
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GateResult {
    pub gate: String,
    pub actual: String,
    pub threshold: String,
    pub passed: bool,
    /// What is to blame when it failed.
    pub blame: Vec<String>,
}

/// Where the reports are.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub tests: PathBuf,
    pub coverage: PathBuf,
    pub vet: PathBuf,
    pub module: PathBuf,
    pub manifest: PathBuf,
}

impl ReportFiles {
    pub fn in_dirs(reports: &Path, dist: &Path) -> ReportFiles {
        ReportFiles {
            tests: reports.join("tests.json"),
            coverage: reports.join("coverage.json"),
            vet: reports.join("vet.json"),
            module: reports.join("mod.json"),
            manifest: dist.join("manifest.json"),
        }
    }
}

/// Why a gate could not be evaluated (bad input, exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("gate `{gate}` needs {file}, which no job produced")]
    Missing { gate: String, file: PathBuf, producer: &'static str },
    #[error("{file} is not a {what} report: {reason}")]
    Foreign { file: PathBuf, what: &'static str, reason: String },
}

fn load(file: &Path, gate: &str, what: &'static str, producer: &'static str) -> Result<serde_json::Value, GateError> {
    let text = std::fs::read_to_string(file).map_err(|_| GateError::Missing {
        gate: gate.into(),
        file: file.to_path_buf(),
        producer,
    })?;
    serde_json::from_str(&text).map_err(|e| GateError::Foreign {
        file: file.to_path_buf(),
        what,
        reason: e.to_string(),
    })
}

fn field<'a>(
    v: &'a serde_json::Value,
    key: &str,
    file: &Path,
    what: &'static str,
) -> Result<&'a serde_json::Value, GateError> {
    v.get(key).ok_or_else(|| GateError::Foreign {
        file: file.to_path_buf(),
        what,
        reason: format!("it has no `{key}`"),
    })
}

fn pct(v: f64) -> String {
    format!("{v:.1}%")
}

pub fn evaluate(cfg: &GateConfig, files: &ReportFiles) -> Result<Vec<GateResult>, GateError> {
    let mut out = Vec::new();
    let mut push = |gate: &str, actual: String, threshold: String, passed: bool, blame: Vec<String>| {
        out.push(GateResult { gate: gate.into(), actual, threshold, passed, blame });
    };
    if cfg.limits.coverage_total.is_some()
        || cfg.limits.coverage_per_package.is_some()
        || cfg.limits.coverage_no_decrease
    {
        let gate = if cfg.limits.coverage_total.is_some() {
            "coverage.total"
        } else if cfg.limits.coverage_per_package.is_some() {
            "coverage.per_package"
        } else {
            "coverage.no_decrease"
        };
        let cov = load(&files.coverage, gate, "coverage", "slipway go test")?;
        let total = field(&cov, "total", &files.coverage, "coverage")?;
        let percent = total.get("percent").and_then(|p| p.as_f64()).ok_or_else(|| GateError::Foreign {
            file: files.coverage.clone(),
            what: "coverage",
            reason: "`total.percent` is missing".into(),
        })?;
        if let Some(min) = cfg.limits.coverage_total {
            let passed = percent + 1e-9 >= min;
            let mut blame = Vec::new();
            if !passed {
                // The packages that pull the total down the most: most uncovered statements.
                let mut pk: Vec<(String, u64, f64)> = cov["packages"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| {
                        let s = v["statements"].as_u64().unwrap_or(0);
                        let c = v["covered"].as_u64().unwrap_or(0);
                        (k.clone(), s.saturating_sub(c), v["percent"].as_f64().unwrap_or(0.0))
                    })
                    .filter(|(_, missed, _)| *missed > 0)
                    .collect();
                pk.sort_by_key(|p| std::cmp::Reverse(p.1));
                blame = pk
                    .into_iter()
                    .take(5)
                    .map(|(k, missed, p)| format!("{k}: {} ({missed} statements uncovered)", pct(p)))
                    .collect();
            }
            push("coverage.total", pct(percent), format!("≥ {}", pct(min)), passed, blame);
        }
        if let Some(min) = cfg.limits.coverage_per_package {
            let low: Vec<String> = cov["packages"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| {
                    v["statements"].as_u64().unwrap_or(0) > 0 && v["percent"].as_f64().unwrap_or(0.0) + 1e-9 < min
                })
                .map(|(k, v)| format!("{k}: {}", pct(v["percent"].as_f64().unwrap_or(0.0))))
                .collect();
            let lowest = cov["packages"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v["statements"].as_u64().unwrap_or(0) > 0)
                .filter_map(|(_, v)| v["percent"].as_f64())
                .fold(f64::INFINITY, f64::min);
            let actual = if lowest.is_finite() { format!("lowest {}", pct(lowest)) } else { "no packages".into() };
            push("coverage.per_package", actual, format!("≥ {}", pct(min)), low.is_empty(), low);
        }
        if cfg.limits.coverage_no_decrease {
            match &cfg.baseline {
                Some(b) => {
                    let passed = percent + 0.05 >= b.total;
                    let short: String = b.commit.chars().take(8).collect();
                    let blame = if passed {
                        Vec::new()
                    } else {
                        vec![format!("down {:.1} points since {short}", b.total - percent)]
                    };
                    push(
                        "coverage.no_decrease",
                        pct(percent),
                        format!("≥ {} (baseline {short})", pct(b.total)),
                        passed,
                        blame,
                    );
                }
                None => push("coverage.no_decrease", pct(percent), "no baseline yet".into(), true, Vec::new()),
            }
        }
    }
    if cfg.limits.tests_failed.is_some() || cfg.limits.pass_rate.is_some() || cfg.limits.flaky.is_some() {
        let gate = if cfg.limits.tests_failed.is_some() {
            "tests.failed"
        } else if cfg.limits.pass_rate.is_some() {
            "tests.pass_rate"
        } else {
            "tests.flaky"
        };
        let rep = load(&files.tests, gate, "test", "slipway go test")?;
        let tests = field(&rep, "tests", &files.tests, "test")?.as_array().ok_or_else(|| GateError::Foreign {
            file: files.tests.clone(),
            what: "test",
            reason: "`tests` is not a list".into(),
        })?;
        let status = |t: &serde_json::Value| t["status"].as_str().unwrap_or("").to_string();
        let name = |t: &serde_json::Value| {
            format!("{}.{}", t["package"].as_str().unwrap_or(""), t["name"].as_str().unwrap_or(""))
        };
        let failed: Vec<String> = tests.iter().filter(|t| status(t) == "fail").map(name).collect();
        let flaky: Vec<String> = tests.iter().filter(|t| t["flaky"].as_bool() == Some(true)).map(name).collect();
        let passed = tests.iter().filter(|t| status(t) == "pass").count();
        let build_failed: Vec<String> = rep["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"] == "build_failed")
            .map(|p| format!("{} (build failed)", p["name"].as_str().unwrap_or("")))
            .collect();
        if let Some(max) = cfg.limits.tests_failed {
            let n = failed.len() + build_failed.len();
            let mut blame = failed.clone();
            blame.extend(build_failed.iter().cloned());
            push("tests.failed", n.to_string(), format!("≤ {max}"), n as u64 <= max, blame);
        }
        if let Some(min) = cfg.limits.pass_rate {
            let ran = passed + failed.len();
            let rate = if ran == 0 { 100.0 } else { passed as f64 * 100.0 / ran as f64 };
            push("tests.pass_rate", pct(rate), format!("≥ {}", pct(min)), rate + 1e-9 >= min, failed.clone());
        }
        if let Some(max) = cfg.limits.flaky {
            push("tests.flaky", flaky.len().to_string(), format!("≤ {max}"), flaky.len() as u64 <= max, flaky.clone());
        }
    }
    if cfg.limits.vet_findings.is_some() || cfg.limits.unformatted.is_some() {
        let gate = if cfg.limits.vet_findings.is_some() { "vet.findings" } else { "vet.unformatted" };
        let rep = load(&files.vet, gate, "vet", "slipway go vet")?;
        let findings = field(&rep, "findings", &files.vet, "vet")?.as_array().cloned().unwrap_or_default();
        if let Some(max) = cfg.limits.vet_findings {
            let blame = findings
                .iter()
                .map(|f| {
                    format!(
                        "{}:{}:{}: {} ({})",
                        f["file"].as_str().unwrap_or(""),
                        f["line"],
                        f["column"],
                        f["message"].as_str().unwrap_or(""),
                        f["analyzer"].as_str().unwrap_or("")
                    )
                })
                .collect();
            push("vet.findings", findings.len().to_string(), format!("≤ {max}"), findings.len() as u64 <= max, blame);
        }
        if let Some(max) = cfg.limits.unformatted {
            let files_: Vec<String> = rep["unformatted"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            push("vet.unformatted", files_.len().to_string(), format!("≤ {max}"), files_.len() as u64 <= max, files_);
        }
    }
    if cfg.limits.mod_tidy {
        let rep = load(&files.module, "mod.tidy", "module", "slipway go mod check")?;
        let tidy = field(&rep, "tidy", &files.module, "module")?.as_bool().unwrap_or(false);
        let verified = rep["verified"].as_bool().unwrap_or(false);
        let vendored = rep["vendored"].as_bool().unwrap_or(false);
        let mut blame = Vec::new();
        if !tidy && vendored {
            blame.push("vendor/ does not match go.mod (run `go mod vendor`)".into());
        } else if !tidy {
            blame.push("go mod tidy would change go.mod/go.sum".into());
        }
        if !verified {
            blame.push(format!("go mod verify: {}", rep["verify_output"].as_str().unwrap_or("")));
        }
        push(
            "mod.tidy",
            match (tidy && verified, vendored) {
                (true, true) => "vendor/ consistent".into(),
                (true, false) => "tidy, verified".into(),
                (false, true) => "vendor/ inconsistent".into(),
                (false, false) => "not tidy or not verified".into(),
            },
            "tidy, verified".into(),
            tidy && verified,
            blame,
        );
    }
    if let Some(max) = cfg.limits.binary_size {
        let m = load(&files.manifest, "binary.size", "build manifest", "slipway go build")?;
        let arts = field(&m, "artifacts", &files.manifest, "build manifest")?.as_array().cloned().unwrap_or_default();
        let largest = arts.iter().filter_map(|a| a["size"].as_u64()).max().unwrap_or(0);
        let over: Vec<String> = arts
            .iter()
            .filter(|a| a["size"].as_u64().unwrap_or(0) > max)
            .map(|a| format!("{}: {}", a["file"].as_str().unwrap_or(""), human_bytes(a["size"].as_u64().unwrap_or(0))))
            .collect();
        push(
            "binary.size",
            format!("largest {}", human_bytes(largest)),
            format!("≤ {}", human_bytes(max)),
            over.is_empty(),
            over,
        );
    }
    Ok(out)
}

pub fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / 1048576.0)
    } else if n >= 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_gate_blames_the_packages_that_miss_most() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("coverage.json"),
            r#"{"total":{"covered":5,"statements":10,"percent":50.0},"packages":{"a":{"covered":5,"statements":6,"percent":83.3},"b":{"covered":0,"statements":4,"percent":0.0}}}"#,
        )
        .unwrap();
        let cfg = GateConfig::from(&slipway_model::sections::Gates {
            coverage_total: Some(70.0),
            coverage_per_package: Some(50.0),
            ..Default::default()
        });
        let r = evaluate(&cfg, &ReportFiles::in_dirs(d.path(), d.path())).unwrap();
        assert!(!r[0].passed);
        assert_eq!(r[0].blame[0], "b: 0.0% (4 statements uncovered)");
        assert_eq!(r[1].blame, vec!["b: 0.0%"]);
        let missing = evaluate(
            &GateConfig::from(&slipway_model::sections::Gates { tests_failed: Some(0), ..Default::default() }),
            &ReportFiles::in_dirs(d.path(), d.path()),
        );
        assert!(matches!(missing, Err(GateError::Missing { .. })));
        std::fs::write(d.path().join("tests.json"), "<xml/>").unwrap();
        let foreign = evaluate(
            &GateConfig::from(&slipway_model::sections::Gates { tests_failed: Some(0), ..Default::default() }),
            &ReportFiles::in_dirs(d.path(), d.path()),
        );
        assert!(matches!(foreign, Err(GateError::Foreign { .. })));
    }
}
