//! `tests.json`: every test with package, name, status, duration, flakiness and the output of
//! failures — slipway's own report, documented in docs/go.md — and the summary counts.

use crate::test2json::{PackageResult, PackageStatus, Results, TestStatus};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportTest {
    pub package: String,
    pub name: String,
    pub status: TestStatus,
    /// Failed first, passed on a rerun.
    pub flaky: bool,
    /// How many runs the test took (1 unless rerun).
    pub attempts: u32,
    pub elapsed_s: f64,
    /// Output of failures and skips (a flaky test keeps its first failure's output).
    pub output: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub flaky: usize,
    pub packages: usize,
    pub duration_s: f64,
}

/// The report of a `slipway go test` run (version 1 of the `tests.json` schema).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub version: u32,
    pub packages: Vec<PackageResult>,
    pub tests: Vec<ReportTest>,
    pub duration_s: f64,
}

impl Report {
    pub fn from_results(r: &Results, duration_s: f64) -> Report {
        let tests = r
            .tests
            .iter()
            .map(|t| ReportTest {
                package: t.package.clone(),
                name: t.name.clone(),
                status: t.status,
                flaky: false,
                attempts: 1,
                elapsed_s: t.elapsed_s,
                output: t.output.clone(),
                reason: t.reason.clone(),
            })
            .collect();
        let mut packages = r.packages.clone();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        Report { version: 1, packages, tests, duration_s }
    }

    pub fn summary(&self) -> Summary {
        let count = |s: TestStatus| self.tests.iter().filter(|t| t.status == s && !t.flaky).count();
        Summary {
            passed: count(TestStatus::Pass),
            failed: count(TestStatus::Fail),
            skipped: count(TestStatus::Skip),
            flaky: self.tests.iter().filter(|t| t.flaky).count(),
            packages: self.packages.len(),
            duration_s: self.duration_s,
        }
    }

    /// Whether anything failed for real (flaky tests do not count).
    pub fn failed(&self) -> bool {
        self.tests.iter().any(|t| t.status == TestStatus::Fail)
            || self.packages.iter().any(|p| matches!(p.status, PackageStatus::Fail | PackageStatus::BuildFailed))
    }

    /// The slowest tests, slowest first.
    pub fn slowest(&self, n: usize) -> Vec<&ReportTest> {
        let mut v: Vec<&ReportTest> = self.tests.iter().filter(|t| t.elapsed_s > 0.0).collect();
        v.sort_by(|a, b| b.elapsed_s.total_cmp(&a.elapsed_s));
        v.truncate(n);
        v
    }
}
