//! Reading `go test -json` (test2json) streams into per-package and per-test results.
//!
//! The stream is trusted for nothing: lines that are not JSON, unknown actions, tests that
//! start and never report (a `-timeout` panic, a crash), build failures reported through
//! `build-output`/`build-fail` events or `FailedBuild` — each ends up in the results as what
//! it is, and no input makes the reader panic.

use std::collections::HashMap;

use serde::Deserialize;

/// One test2json event; every field is optional because the stream is not trusted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    pub action: Option<String>,
    pub package: Option<String>,
    pub test: Option<String>,
    pub elapsed: Option<f64>,
    pub output: Option<String>,
    /// On a package's `fail`: the import path whose build failed.
    pub failed_build: Option<String>,
    /// On `build-output`/`build-fail`.
    pub import_path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TestResult {
    pub package: String,
    /// Full name, subtests included (`TestAdd/sub_one`).
    pub name: String,
    pub status: TestStatus,
    pub elapsed_s: f64,
    /// The test's own output (kept for failures and skips).
    pub output: Vec<String>,
    /// Why it failed when the stream did not say (`timed out`, `did not finish`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl TestResult {
    /// The top-level test this (sub)test belongs to.
    pub fn root(&self) -> &str {
        self.name.split('/').next().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageStatus {
    Ok,
    Fail,
    BuildFailed,
    NoTests,
    SkippedUnaffected,
}

impl PackageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageStatus::Ok => "ok",
            PackageStatus::Fail => "fail",
            PackageStatus::BuildFailed => "build_failed",
            PackageStatus::NoTests => "no_tests",
            PackageStatus::SkippedUnaffected => "skipped_unaffected",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PackageResult {
    pub name: String,
    pub status: PackageStatus,
    pub elapsed_s: f64,
    /// Package-level output (build errors, panics outside tests, the final status lines).
    pub output: Vec<String>,
    /// `coverage: N% of statements` as `go test` printed it, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
}

/// Something that happened, for a live view.
#[derive(Debug, Clone)]
pub enum Progress {
    PackageDone(PackageResult),
    TestFailed(TestResult),
}

#[derive(Default)]
struct OpenTest {
    output: Vec<String>,
    started: bool,
}

/// Consumes a test2json stream line by line.
#[derive(Default)]
pub struct Reader {
    tests: Vec<TestResult>,
    packages: Vec<PackageResult>,
    open: HashMap<(String, String), OpenTest>,
    pkg_output: HashMap<String, Vec<String>>,
    /// `build-output` lines by import path.
    build_output: HashMap<String, Vec<String>>,
    /// Lines that were not test2json events (printed by `go` itself, or garbage).
    pub stray: Vec<String>,
    done: std::collections::HashSet<String>,
}

const MAX_LINES_PER_TEST: usize = 2000;

fn push_limited(v: &mut Vec<String>, line: String) {
    if v.len() < MAX_LINES_PER_TEST {
        v.push(line);
    } else if v.len() == MAX_LINES_PER_TEST {
        v.push("… (output truncated)".into());
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Feeds one line of `go test -json` output.
    pub fn line(&mut self, line: &str) -> Vec<Progress> {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Vec::new();
        }
        let ev: Event = match serde_json::from_str(trimmed) {
            Ok(ev) if trimmed.starts_with('{') => ev,
            _ => {
                self.stray.push(trimmed.to_string());
                return Vec::new();
            }
        };
        self.event(ev)
    }

    pub fn event(&mut self, ev: Event) -> Vec<Progress> {
        let action = ev.action.as_deref().unwrap_or("");
        match action {
            "build-output" => {
                if let (Some(ip), Some(out)) = (ev.import_path, ev.output) {
                    push_limited(self.build_output.entry(ip).or_default(), out.trim_end_matches('\n').to_string());
                }
                return Vec::new();
            }
            "build-fail" => return Vec::new(),
            _ => {}
        }
        let Some(pkg) = ev.package.clone() else {
            if let Some(out) = ev.output {
                self.stray.push(out.trim_end_matches('\n').to_string());
            }
            return Vec::new();
        };
        match (&ev.test, action) {
            (Some(test), "run") => {
                self.open.entry((pkg, test.clone())).or_default().started = true;
                Vec::new()
            }
            (Some(test), "output") => {
                let out = ev.output.unwrap_or_default();
                let t = self.open.entry((pkg, test.clone())).or_default();
                push_limited(&mut t.output, out.trim_end_matches('\n').to_string());
                Vec::new()
            }
            (Some(test), "pass" | "fail" | "skip") => {
                let open = self.open.remove(&(pkg.clone(), test.clone())).unwrap_or_default();
                let status = match action {
                    "pass" => TestStatus::Pass,
                    "fail" => TestStatus::Fail,
                    _ => TestStatus::Skip,
                };
                let keep = status != TestStatus::Pass;
                let r = TestResult {
                    package: pkg,
                    name: test.clone(),
                    status,
                    elapsed_s: ev.elapsed.unwrap_or(0.0),
                    output: if keep { open.output } else { Vec::new() },
                    reason: None,
                };
                self.tests.push(r.clone());
                if status == TestStatus::Fail { vec![Progress::TestFailed(r)] } else { Vec::new() }
            }
            (Some(_), _) => Vec::new(), // pause, cont, bench, unknown
            (None, "output") => {
                push_limited(
                    self.pkg_output.entry(pkg).or_default(),
                    ev.output.unwrap_or_default().trim_end_matches('\n').to_string(),
                );
                Vec::new()
            }
            (None, "pass" | "fail" | "skip") => {
                self.finish_package(pkg, action, ev.elapsed.unwrap_or(0.0), ev.failed_build)
            }
            (None, _) => Vec::new(), // start, unknown
        }
    }

    fn finish_package(
        &mut self,
        pkg: String,
        action: &str,
        elapsed: f64,
        failed_build: Option<String>,
    ) -> Vec<Progress> {
        if !self.done.insert(pkg.clone()) {
            return Vec::new();
        }
        let mut progress = Vec::new();
        let mut output = self.pkg_output.remove(&pkg).unwrap_or_default();
        // Tests that started and never reported: the binary died (timeout, crash, os.Exit).
        let mut unfinished: Vec<(String, OpenTest)> = Vec::new();
        let keys: Vec<(String, String)> = self.open.keys().filter(|(p, _)| *p == pkg).cloned().collect();
        for k in keys {
            if let Some(t) = self.open.remove(&k) {
                unfinished.push((k.1, t));
            }
        }
        unfinished.sort_by(|a, b| a.0.cmp(&b.0));
        let timed_out = unfinished.iter().any(|(_, t)| t.output.iter().any(|l| l.starts_with("panic: test timed out")))
            || output.iter().any(|l| l.starts_with("panic: test timed out"));
        for (name, t) in unfinished {
            if !t.started && t.output.is_empty() {
                continue;
            }
            let r = TestResult {
                package: pkg.clone(),
                name,
                status: TestStatus::Fail,
                elapsed_s: 0.0,
                output: t.output,
                reason: Some(if timed_out {
                    "timed out".into()
                } else {
                    "did not finish (the test binary exited)".into()
                }),
            };
            self.tests.push(r.clone());
            progress.push(Progress::TestFailed(r));
        }
        let tests_here = self.tests.iter().filter(|t| t.package == pkg).count();
        let build_failed = failed_build.is_some()
            || output.iter().any(|l| l.contains("[build failed]") || l.contains("[setup failed]"));
        if let Some(fb) = &failed_build {
            let mut lines = self.build_output.remove(fb).unwrap_or_default();
            lines.append(&mut output);
            output = lines;
        }
        let status = match action {
            "fail" if build_failed => PackageStatus::BuildFailed,
            "fail" => PackageStatus::Fail,
            _ if tests_here == 0 => PackageStatus::NoTests,
            _ => PackageStatus::Ok,
        };
        let coverage = output.iter().rev().find_map(|l| parse_coverage_line(l));
        let r = PackageResult { name: pkg, status, elapsed_s: elapsed, output, coverage };
        self.packages.push(r.clone());
        progress.push(Progress::PackageDone(r));
        progress
    }

    /// Ends the stream: packages that never reported are failures (the `go` command died).
    pub fn finish(mut self) -> Results {
        let pending: Vec<String> = self
            .open
            .keys()
            .map(|(p, _)| p.clone())
            .chain(self.pkg_output.keys().cloned())
            .filter(|p| !self.done.contains(p))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for p in pending {
            self.finish_package(p, "fail", 0.0, None);
        }
        // Build failures of packages that never got a package event (old `go` versions).
        let mut orphans: Vec<(String, Vec<String>)> = self.build_output.drain().collect();
        orphans.sort();
        for (ip, lines) in orphans {
            let name = ip.split(' ').next().unwrap_or(&ip).to_string();
            if self.done.insert(name.clone()) {
                self.packages.push(PackageResult {
                    name,
                    status: PackageStatus::BuildFailed,
                    elapsed_s: 0.0,
                    output: lines,
                    coverage: None,
                });
            }
        }
        Results { packages: self.packages, tests: self.tests, stray: self.stray }
    }
}

/// `coverage: 25.0% of statements` (possibly after `ok  pkg  0.1s  `) → 25.0.
pub fn parse_coverage_line(line: &str) -> Option<f64> {
    let at = line.find("coverage: ")?;
    let rest = &line[at + "coverage: ".len()..];
    let pct = rest.split('%').next()?;
    pct.trim().parse().ok()
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub packages: Vec<PackageResult>,
    pub tests: Vec<TestResult>,
    pub stray: Vec<String>,
}

impl Results {
    pub fn count(&self, status: TestStatus) -> usize {
        self.tests.iter().filter(|t| t.status == status).count()
    }

    pub fn failed_tests(&self) -> impl Iterator<Item = &TestResult> {
        self.tests.iter().filter(|t| t.status == TestStatus::Fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Results {
        let mut r = Reader::new();
        for l in s.lines() {
            r.line(l);
        }
        r.finish()
    }

    #[test]
    fn passes_fails_skips_and_subtests() {
        let r = read(concat!(
            r#"{"Action":"start","Package":"p"}"#,
            "\n",
            r#"{"Action":"run","Package":"p","Test":"TestA"}"#,
            "\n",
            r#"{"Action":"run","Package":"p","Test":"TestA/sub"}"#,
            "\n",
            r#"{"Action":"output","Package":"p","Test":"TestA/sub","Output":"    a_test.go:9: boom\n"}"#,
            "\n",
            r#"{"Action":"fail","Package":"p","Test":"TestA/sub","Elapsed":0.01}"#,
            "\n",
            r#"{"Action":"fail","Package":"p","Test":"TestA","Elapsed":0.02}"#,
            "\n",
            r#"{"Action":"run","Package":"p","Test":"TestB"}"#,
            "\n",
            r#"{"Action":"skip","Package":"p","Test":"TestB","Elapsed":0}"#,
            "\n",
            r#"{"Action":"output","Package":"p","Output":"FAIL\tp\t0.1s\n"}"#,
            "\n",
            r#"{"Action":"fail","Package":"p","Elapsed":0.1}"#,
            "\n",
        ));
        assert_eq!((r.count(TestStatus::Pass), r.count(TestStatus::Fail), r.count(TestStatus::Skip)), (0, 2, 1));
        assert_eq!(r.packages[0].status, PackageStatus::Fail);
        let sub = r.tests.iter().find(|t| t.name == "TestA/sub").unwrap();
        assert_eq!(sub.output, vec!["    a_test.go:9: boom"]);
        assert_eq!(sub.root(), "TestA");
    }

    #[test]
    fn timeouts_build_failures_and_garbage() {
        let r = read(concat!(
            "this is not json\n",
            "{\"broken\": \n",
            r#"{"ImportPath":"b [b.test]","Action":"build-output","Output":"b/b.go:3:1: bad\n"}"#,
            "\n",
            r#"{"ImportPath":"b [b.test]","Action":"build-fail"}"#,
            "\n",
            r#"{"Action":"fail","Package":"b","Elapsed":0,"FailedBuild":"b [b.test]"}"#,
            "\n",
            r#"{"Action":"run","Package":"s","Test":"TestSlow"}"#,
            "\n",
            r#"{"Action":"output","Package":"s","Test":"TestSlow","Output":"panic: test timed out after 1s\n"}"#,
            "\n",
            r#"{"Action":"fail","Package":"s","Elapsed":1.0}"#,
            "\n",
            r#"{"Action":"pass","Package":"n","Elapsed":0.0}"#,
            "\n",
            r#"{"Action":"run","Package":"never","Test":"TestX"}"#,
            "\n",
        ));
        let status = |n: &str| r.packages.iter().find(|p| p.name == n).unwrap().status;
        assert_eq!(status("b"), PackageStatus::BuildFailed);
        assert_eq!(r.packages.iter().find(|p| p.name == "b").unwrap().output, vec!["b/b.go:3:1: bad"]);
        assert_eq!(status("s"), PackageStatus::Fail);
        assert_eq!(status("n"), PackageStatus::NoTests);
        assert_eq!(status("never"), PackageStatus::Fail);
        let slow = r.tests.iter().find(|t| t.name == "TestSlow").unwrap();
        assert_eq!((slow.status, slow.reason.as_deref()), (TestStatus::Fail, Some("timed out")));
        assert_eq!(r.stray.len(), 2);
    }

    #[test]
    fn coverage_lines() {
        assert_eq!(parse_coverage_line("ok  \tp\t0.005s\tcoverage: 25.0% of statements"), Some(25.0));
        assert_eq!(parse_coverage_line("coverage: [no statements]"), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut r = Reader::new();
        for l in [
            "{}",
            "{\"Action\":5}",
            "{\"Action\":\"fail\"}",
            "\u{0}\u{ffff}",
            "[1,2]",
            "null",
            "{\"Package\":\"p\",\"Action\":\"fail\",\"Elapsed\":\"x\"}",
        ] {
            r.line(l);
        }
        let _ = r.finish();
    }
}
