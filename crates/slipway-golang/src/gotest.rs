//! `slipway go test`: runs `go test -json` (with a coverage profile unless asked not to),
//! streams the events through the test2json reader, re-runs only the failed tests when asked
//! (a test that fails and then passes is *flaky*), and builds the report.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::GoError;
use crate::cover::Profile;
use crate::report::Report;
use crate::test2json::{PackageStatus, Progress, Reader, Results, TestStatus};

#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The module directory `go` runs in.
    pub dir: PathBuf,
    /// Package patterns (default `./...`).
    pub packages: Vec<String>,
    /// Extra `go test` flags (after `--`).
    pub go_flags: Vec<String>,
    /// Where to write the coverage profile; `None`: no coverage.
    pub coverprofile: Option<PathBuf>,
    /// Re-run failed tests up to this many times.
    pub rerun_fails: u32,
    /// Test only the packages a change since this commit affects.
    pub changed_since: Option<String>,
}

/// What a live view is told.
#[derive(Debug, Clone)]
pub enum Live {
    Progress(Progress),
    /// A rerun of `tests` failed tests is starting (attempt 2, 3, ...).
    Rerun {
        attempt: u32,
        tests: usize,
    },
    /// This test failed before and passed now.
    Flaky {
        package: String,
        test: String,
    },
    /// The change-based selection: what is tested, what is skipped and why.
    Selected(crate::changes::Selection),
}

pub struct TestRun {
    pub report: Report,
    pub profile: Option<Profile>,
    /// Lines `go` printed that were not test events (warnings, errors).
    pub stray: Vec<String>,
}

fn go_test(
    dir: &Path,
    args: &[String],
    live: &mut dyn FnMut(Live),
) -> Result<(Results, Vec<String>, Option<i32>), GoError> {
    let mut child = Command::new("go")
        .arg("test")
        .arg("-json")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                GoError::GoMissing
            } else {
                GoError::Io(format!("starting go: {e}"))
            }
        })?;
    let mut stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut reader = Reader::new();
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    for line in stdout.split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        for p in reader.line(&line) {
            live(Live::Progress(p));
        }
    }
    let status = child.wait().map_err(|e| GoError::Io(format!("waiting for go: {e}")))?;
    let stderr = err_thread.join().unwrap_or_default();
    let mut results = reader.finish();
    let mut stray = std::mem::take(&mut results.stray);
    stray.extend(stderr.lines().map(str::to_string));
    Ok((results, stray, status.code()))
}

/// `-run` pattern that selects exactly this (sub)test: each path element anchored and quoted.
pub fn run_pattern(name: &str) -> String {
    name.split('/').map(|part| format!("^{}$", quote_meta(part))).collect::<Vec<_>>().join("/")
}

fn quote_meta(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub fn run(opts: &TestOptions, live: &mut dyn FnMut(Live)) -> Result<TestRun, GoError> {
    let started = Instant::now();
    let mut packages = if opts.packages.is_empty() { vec!["./...".to_string()] } else { opts.packages.clone() };
    let mut skipped: Vec<(String, String)> = Vec::new();
    if let Some(base) = &opts.changed_since {
        let changed = crate::changes::changed_files(&opts.dir, base)?;
        let sel = crate::changes::select(&opts.dir, &packages, &changed)?;
        if sel.everything.is_none() {
            packages = sel.affected.clone();
            skipped = sel.skipped.clone();
        }
        live(Live::Selected(sel));
        if packages.is_empty() {
            let mut report = Report::from_results(&Results::default(), started.elapsed().as_secs_f64());
            report.packages = skipped.iter().map(|(p, _)| skipped_package(p)).collect();
            return Ok(TestRun { report, profile: None, stray: Vec::new() });
        }
    }
    let mut args: Vec<String> = Vec::new();
    if let Some(p) = &opts.coverprofile {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| GoError::Io(format!("creating {}: {e}", parent.display())))?;
        }
        args.push(format!("-coverprofile={}", p.display()));
    }
    args.extend(opts.go_flags.iter().cloned());
    args.extend(packages.iter().cloned());
    let (results, stray, code) = go_test(&opts.dir, &args, live)?;
    if results.packages.is_empty() && code != Some(0) {
        return Err(crate::failed("go test", stray.join("\n")));
    }
    // Patterns that match nothing come back as "setup failed" packages: that is bad input,
    // not a test failure, when it is all there is.
    let setup_failed = |p: &crate::test2json::PackageResult| p.output.iter().any(|l| l.contains("[setup failed]"));
    if !results.packages.is_empty() && results.packages.iter().all(setup_failed) {
        let message = results
            .packages
            .iter()
            .flat_map(|p| p.output.iter())
            .filter(|l| !l.starts_with('#') && !l.starts_with("FAIL"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(crate::failed("go test", message));
    }
    let mut report = Report::from_results(&results, 0.0);
    report.packages.extend(skipped.iter().map(|(p, _)| skipped_package(p)));
    report.packages.sort_by(|a, b| a.name.cmp(&b.name));

    // Re-run only what failed, package by package, up to `rerun_fails` times.
    for attempt in 2..=opts.rerun_fails + 1 {
        let failing: Vec<(String, String)> = report
            .tests
            .iter()
            .filter(|t| t.status == TestStatus::Fail)
            // A parent fails because a subtest failed: re-run the leaves only.
            .filter(|t| {
                !report.tests.iter().any(|c| {
                    c.package == t.package
                        && c.status == TestStatus::Fail
                        && c.name.starts_with(&format!("{}/", t.name))
                })
            })
            .map(|t| (t.package.clone(), t.name.clone()))
            .collect();
        if failing.is_empty() {
            break;
        }
        live(Live::Rerun { attempt, tests: failing.len() });
        let mut by_pkg: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
        for (p, t) in failing {
            by_pkg.entry(p).or_default().push(t);
        }
        for (pkg, tests) in by_pkg {
            let pattern = tests.iter().map(|t| run_pattern(t)).collect::<Vec<_>>().join("|");
            let mut args: Vec<String> =
                opts.go_flags.iter().filter(|f| !f.starts_with("-run") && !f.starts_with("-count")).cloned().collect();
            args.push("-count=1".into());
            args.push(format!("-run={pattern}"));
            args.push(pkg.clone());
            let mut quiet = |_l: Live| {};
            let (again, _, _) = go_test(&opts.dir, &args, &mut quiet)?;
            for t in report.tests.iter_mut().filter(|t| t.package == pkg && t.status == TestStatus::Fail) {
                let now = again.tests.iter().find(|a| a.package == pkg && a.name == t.name);
                t.attempts = attempt;
                if now.is_some_and(|a| a.status == TestStatus::Pass) {
                    t.status = TestStatus::Pass;
                    t.flaky = true;
                    live(Live::Flaky { package: pkg.clone(), test: t.name.clone() });
                }
            }
            let still_failing = report.tests.iter().any(|t| t.package == pkg && t.status == TestStatus::Fail);
            if !still_failing
                && let Some(p) = report.packages.iter_mut().find(|p| p.name == pkg && p.status == PackageStatus::Fail)
            {
                p.status = PackageStatus::Ok;
            }
        }
    }
    report.duration_s = started.elapsed().as_secs_f64();
    let profile = match &opts.coverprofile {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => {
                Some(Profile::parse(&text).map_err(|e| GoError::Io(format!("coverage profile {}: {e}", p.display())))?)
            }
            Err(_) => None, // no package built: no profile
        },
        None => None,
    };
    Ok(TestRun { report, profile, stray })
}

fn skipped_package(name: &str) -> crate::test2json::PackageResult {
    crate::test2json::PackageResult {
        name: name.to_string(),
        status: PackageStatus::SkippedUnaffected,
        elapsed_s: 0.0,
        output: Vec::new(),
        coverage: None,
    }
}

/// `go tool cover -func` on a profile, run in the module directory.
pub fn cover_func(dir: &Path, profile: &Path) -> Result<String, GoError> {
    let out = Command::new("go")
        .args(["tool", "cover"])
        .arg(format!("-func={}", profile.display()))
        .current_dir(dir)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound { GoError::GoMissing } else { GoError::Io(e.to_string()) }
        })?;
    if !out.status.success() {
        return Err(crate::failed("go tool cover", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes a run's reports into `dir`: `tests.json`, `coverage.out` and `coverage.json` (total,
/// per package, per function as `go tool cover -func` sees it), and JUnit XML at `junit` when
/// given. Returns the total coverage.
pub fn write_reports(module: &Path, run: &TestRun, dir: &Path, junit: Option<&Path>) -> Result<Option<f64>, GoError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| GoError::Io(format!("writing {what}: {e}"))
    };
    let tests = dir.join("tests.json");
    std::fs::write(&tests, serde_json::to_vec_pretty(&run.report).expect("reports serialize")).map_err(io(&tests))?;
    if let Some(j) = junit {
        if let Some(parent) = j.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(j, crate::junit::render(&run.report)).map_err(io(j))?;
    }
    let Some(profile) = &run.profile else { return Ok(None) };
    let profile_path = dir.join("coverage.out");
    std::fs::write(&profile_path, profile.render()).map_err(io(&profile_path))?;
    let t = profile.total();
    let (functions, _) = match cover_func(module, &profile_path) {
        Ok(out) => crate::cover::parse_func_output(&out),
        Err(_) => (Vec::new(), None),
    };
    let cov = serde_json::json!({"total": t, "packages": profile.by_package(), "functions": functions});
    let cov_path = dir.join("coverage.json");
    std::fs::write(&cov_path, serde_json::to_vec_pretty(&cov).expect("reports serialize")).map_err(io(&cov_path))?;
    Ok(Some(t.percent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_patterns_anchor_and_quote_each_level() {
        assert_eq!(run_pattern("TestA"), "^TestA$");
        assert_eq!(run_pattern("TestA/case_1.5_(x)"), "^TestA$/^case_1\\.5_\\(x\\)$");
    }
}
