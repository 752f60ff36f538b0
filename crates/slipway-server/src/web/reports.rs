//! A pipeline's test report — failures first with their message, flaky tests (failed, then
//! passed when the job was retried), the slowest tests, coverage per job with its trend on
//! the ref — and one test's history across the project's pipelines.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use slipway_store::TestCaseRow;

use super::i18n::Lang;
use super::{Chrome, duration_text, html_escape, page, path_of, refused};
use crate::State;

type S = AxState<Arc<State>>;

/// Cases listed in full on the page (the rest are counted).
const LISTED: usize = 2000;

pub struct CaseRow {
    job: String,
    attempt: i64,
    suite: String,
    classname: String,
    name: String,
    status: String,
    time: String,
    message: String,
    history: String,
}

pub struct CoverageRow {
    job: String,
    percent: String,
    change: String,
    trend: String,
}

/// What the pipeline page shows of the report: the number of tests and of failures.
pub struct Summary {
    pub total: usize,
    pub failed: usize,
}

#[derive(Template)]
#[template(path = "tests.html")]
struct TestsTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    run: i64,
    project: String,
    total: usize,
    passed: usize,
    failed: usize,
    skipped: usize,
    time: String,
    failures: Vec<CaseRow>,
    flaky: Vec<CaseRow>,
    slowest: Vec<CaseRow>,
    all: Vec<CaseRow>,
    more: usize,
    coverage: Vec<CoverageRow>,
    /// (package, coverage, change since the pipeline before on the ref)
    packages: Vec<(String, String, String)>,
}

fn row(project: &str, r: &TestCaseRow) -> CaseRow {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("class", &r.case.classname)
        .append_pair("name", &r.case.name)
        .finish();
    CaseRow {
        job: r.job_name.clone(),
        attempt: r.attempt,
        suite: r.case.suite.clone(),
        classname: r.case.classname.clone(),
        name: r.case.name.clone(),
        status: r.case.status.clone(),
        time: seconds(r.case.time_ms),
        message: r.case.message.clone().unwrap_or_default(),
        history: format!("/ui/projects/{}/tests?{q}", path_of(project)),
    }
}

fn seconds(ms: i64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => duration_text(ms),
    }
}

/// The latest attempt's cases of each job (what the pipeline's outcome rests on).
fn latest(cases: &[TestCaseRow]) -> Vec<&TestCaseRow> {
    let mut last: HashMap<i64, i64> = HashMap::new();
    for c in cases {
        let a = last.entry(c.job_index).or_insert(c.attempt);
        *a = (*a).max(c.attempt);
    }
    cases.iter().filter(|c| last.get(&c.job_index) == Some(&c.attempt)).collect()
}

/// The test report's numbers, for the pipeline page.
pub async fn summary(s: &State, run: i64) -> Option<Summary> {
    let cases = s.store.test_cases(run).await.ok()?;
    if cases.is_empty() {
        return None;
    }
    let l = latest(&cases);
    Some(Summary {
        total: l.len(),
        failed: l.iter().filter(|c| matches!(c.case.status.as_str(), "failed" | "error")).count(),
    })
}

/// A small line of a coverage trend.
fn sparkline(values: &[f64], label: &str) -> String {
    let (w, h) = (120.0, 24.0);
    if values.len() < 2 {
        return String::new();
    }
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let span = (hi - lo).max(1.0);
    let pts: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!("{:.1},{:.1}", w * i as f64 / (values.len() - 1) as f64, h - 2.0 - (h - 4.0) * (v - lo) / span)
        })
        .collect();
    format!(
        "<svg class=\"spark\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\"><polyline points=\"{}\"/></svg>",
        html_escape(label),
        pts.join(" ")
    )
}

/// `GET /ui/pipelines/{id}/tests`.
pub async fn tests(AxState(s): S, c: Chrome, Path(id): Path<i64>) -> Response {
    let run = match s.store.run(id).await {
        Ok(Some(r)) => r,
        _ => return refused(StatusCode::NOT_FOUND, &format!("pipeline {id}")),
    };
    let cases = s.store.test_cases(id).await.unwrap_or_default();
    let l = latest(&cases);
    let count = |st: &[&str]| l.iter().filter(|c| st.contains(&c.case.status.as_str())).count();
    let failures = l
        .iter()
        .filter(|c| matches!(c.case.status.as_str(), "failed" | "error"))
        .map(|r| row(&run.project, r))
        .collect();
    // Flaky: failed in an attempt of the job, passed in a later one.
    let mut flaky = Vec::new();
    for c in l.iter().filter(|c| c.case.status == "passed") {
        if let Some(f) = cases.iter().find(|x| {
            x.job_index == c.job_index
                && x.attempt < c.attempt
                && x.case.classname == c.case.classname
                && x.case.name == c.case.name
                && matches!(x.case.status.as_str(), "failed" | "error")
        }) {
            flaky.push(row(&run.project, f));
        }
    }
    let mut by_time: Vec<&&TestCaseRow> = l.iter().collect();
    by_time.sort_by_key(|c| std::cmp::Reverse(c.case.time_ms));
    let slowest = by_time.iter().take(10).map(|r| row(&run.project, r)).collect();
    let mut ordered: Vec<&&TestCaseRow> = l.iter().collect();
    // Failures first, then by suite and name.
    ordered.sort_by_key(|c| {
        (!matches!(c.case.status.as_str(), "failed" | "error"), c.case.suite.clone(), c.case.name.clone())
    });
    let all = ordered.iter().take(LISTED).map(|r| row(&run.project, r)).collect();
    let mut coverage = Vec::new();
    for cv in s.store.coverage(id).await.unwrap_or_default() {
        let trend =
            s.store.coverage_trend(&run.project, &cv.job_name, run.ref_name.as_deref(), 20).await.unwrap_or_default();
        let values: Vec<f64> = trend.iter().filter(|t| t.run <= id).map(|t| t.percent).collect();
        let before = trend.iter().rev().find(|t| t.run < id).map(|t| t.percent);
        coverage.push(CoverageRow {
            percent: format!("{:.1}%", cv.percent),
            change: before.map(|b| format!("{:+.1}", cv.percent - b)).unwrap_or_default(),
            trend: sparkline(&values, &format!("{} {}", cv.job_name, c.t.s("tests.trend"))),
            job: cv.job_name,
        });
    }
    let packages = s
        .store
        .package_coverage(id)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            (
                p.package,
                format!("{:.1}%", p.percent),
                p.before.map(|b| format!("{:+.1}", p.percent - b)).unwrap_or_default(),
            )
        })
        .collect();
    let t = TestsTpl {
        t: c.t,
        c: &c,
        run: id,
        project: run.project.clone(),
        total: l.len(),
        passed: count(&["passed"]),
        failed: count(&["failed", "error"]),
        skipped: count(&["skipped"]),
        time: seconds(l.iter().map(|c| c.case.time_ms).sum()),
        failures,
        flaky,
        slowest,
        more: l.len().saturating_sub(LISTED),
        all,
        coverage,
        packages,
    };
    page(t.render(), &c)
}

#[derive(Template)]
#[template(path = "test_history.html")]
struct HistoryTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    project: String,
    classname: String,
    name: String,
    runs: Vec<(i64, CaseRow)>,
    passed: usize,
}

/// `GET /ui/projects/{name}/tests?class=C&name=N`: one test's last 50 results.
pub async fn history(AxState(s): S, c: Chrome, Path(project): Path<String>) -> Response {
    let classname = c.query.get("class").cloned().unwrap_or_default();
    let name = c.query.get("name").cloned().unwrap_or_default();
    if name.is_empty() {
        return refused(StatusCode::BAD_REQUEST, "which test? give `name` (and `class`, its classname)");
    }
    let rows = s.store.test_history(&project, &classname, &name, 50).await.unwrap_or_default();
    let passed = rows.iter().filter(|r| r.case.status == "passed").count();
    let runs = rows.iter().map(|r| (r.run, row(&project, r))).collect();
    let t = HistoryTpl { t: c.t, c: &c, project, classname, name, runs, passed };
    page(t.render(), &c)
}
