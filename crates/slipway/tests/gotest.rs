//! `slipway go test` against the real Go toolchain on the fixture module
//! `fixtures/go/testfx` (passing, failing, flaky, panicking, slow, broken and test-less
//! packages). Counts are checked against `go test -json`'s own events and coverage against
//! `go tool cover -func`, not against hand-written numbers alone.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A private copy of the fixture module.
fn fixture() -> tempfile::TempDir {
    require_go();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/go/testfx");
    let dir = tempfile::Builder::new().prefix("slipway-gofx-").tempdir().unwrap();
    copy_dir(&src, dir.path());
    dir
}

fn copy_dir(src: &Path, dest: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dest.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() == ".slipway" {
                continue;
            }
            std::fs::create_dir_all(&to).unwrap();
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn summary(run: &Run) -> serde_json::Value {
    let last = run.events().last().cloned().unwrap_or_else(|| panic!("no events: {}", run.debug()));
    assert_eq!(last["event"], "summary", "{}", run.debug());
    last
}

/// Counts of test-level pass/fail/skip events in raw `go test -json` output.
fn go_counts(dir: &Path, args: &[&str]) -> (usize, usize, usize) {
    let out = Command::new("go").arg("test").arg("-json").args(args).current_dir(dir).output().unwrap();
    let mut c = (0, 0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["Test"].is_null() {
            continue;
        }
        match v["Action"].as_str() {
            Some("pass") => c.0 += 1,
            Some("fail") => c.1 += 1,
            Some("skip") => c.2 += 1,
            _ => {}
        }
    }
    c
}

#[test]
fn counts_statuses_and_coverage_match_the_go_toolchain() {
    let fx = fixture();
    let junit = fx.path().join("out/junit.xml");
    let run = slipway_in(fx.path(), &["go", "test", "--json", "--junit", junit.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.debug());
    let s = summary(&run);
    let (pass, fail, skip) = go_counts(fx.path(), &["./..."]);
    assert_eq!(
        (
            s["passed"].as_u64().unwrap() as usize,
            s["failed"].as_u64().unwrap() as usize,
            s["skipped"].as_u64().unwrap() as usize
        ),
        (pass, fail, skip)
    );
    let status = |name: &str| {
        s["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == format!("example.com/testfx/{name}"))
            .map(|p| p["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("calc").as_deref(), Some("ok"));
    assert_eq!(status("fail").as_deref(), Some("fail"));
    assert_eq!(status("crash").as_deref(), Some("fail"));
    assert_eq!(status("broken").as_deref(), Some("build_failed"));
    assert_eq!(status("empty").as_deref(), Some("no_tests"));

    // Coverage: slipway's total equals go tool cover -func's, to the tenth of a percent.
    let reports = fx.path().join(".slipway/reports");
    let out = Command::new("go")
        .args(["tool", "cover"])
        .arg(format!("-func={}", reports.join("coverage.out").display()))
        .current_dir(fx.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let go_total: f64 =
        text.lines().last().unwrap().split_whitespace().last().unwrap().trim_end_matches('%').parse().unwrap();
    let ours = s["coverage"]["total"].as_f64().unwrap();
    assert!((ours - go_total).abs() < 0.05, "slipway {ours} vs go tool cover {go_total}");
    let cov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("coverage.json")).unwrap()).unwrap();
    assert!(cov["functions"].as_array().unwrap().iter().any(|f| f["function"] == "Never" && f["percent"] == 0.0));

    // tests.json holds every test with its output on failure.
    let tests: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("tests.json")).unwrap()).unwrap();
    let bad = tests["tests"].as_array().unwrap().iter().find(|t| t["name"] == "TestTable/bad").unwrap();
    assert_eq!(bad["status"], "fail");
    assert!(bad["output"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("bad row")));

    // JUnit parses and has what CI tools read.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed JUnit XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), pass + fail + skip + 1, "one case per test plus one for the broken build");
    assert_eq!(doc.descendants().filter(|n| n.has_tag_name("failure")).count(), fail);
    assert_eq!(doc.descendants().filter(|n| n.has_tag_name("error")).count(), 1);
    assert_eq!(root.attribute("failures"), Some(fail.to_string().as_str()));
}

#[test]
fn human_view_shows_failures_and_a_summary() {
    let fx = fixture();
    let run = slipway_in(fx.path(), &["go", "test", "./calc", "./fail", "./broken"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert!(run.stdout.contains("--- FAIL example.com/testfx/fail.TestFails"), "{}", run.stdout);
    assert!(run.stdout.contains("expected 1, got 2"));
    assert!(run.stdout.contains("[build failed]"));
    assert!(run.stdout.contains("not an int"), "build errors are shown: {}", run.stdout);
    assert!(run.stdout.contains("FAIL: 6 passed, 3 failed, 1 skipped, 0 flaky in 3 packages"), "{}", run.stdout);
}

#[test]
fn rerun_fails_reports_flaky_tests_and_passes() {
    let fx = fixture();
    let marker: PathBuf = fx.path().join("flaky-marker");
    let out = Command::new(bin())
        .args(["go", "test", "--json", "--rerun-fails", "2", "./flaky", "./calc"])
        .current_dir(fx.path())
        .env("SLIPWAY_FLAKY_MARKER", &marker)
        .output()
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "a flaky test does not fail the run: {}", run.debug());
    let s = summary(&run);
    assert_eq!(s["flaky"], 1);
    assert_eq!(s["failed"], 0);
    assert!(run.events().iter().any(|e| e["event"] == "flaky" && e["test"] == "TestSometimes"));
    // Without reruns the same failure is a failure.
    std::fs::remove_file(&marker).unwrap();
    let out = Command::new(bin())
        .args(["go", "test", "--json", "./flaky"])
        .current_dir(fx.path())
        .env("SLIPWAY_FLAKY_MARKER", &marker)
        .output()
        .unwrap();
    assert_eq!(Run::from(out).code, 1);
}

#[test]
fn reruns_do_not_hide_real_failures() {
    let fx = fixture();
    let run = slipway_in(fx.path(), &["go", "test", "--json", "--rerun-fails", "1", "./fail"]);
    assert_eq!(run.code, 1);
    assert!(run.events().iter().any(|e| e["event"] == "rerun" && e["attempt"] == 2));
    assert_eq!(summary(&run)["flaky"], 0);
}

#[test]
fn timeouts_are_reported_as_such() {
    let fx = fixture();
    let run = slipway_in(fx.path(), &["go", "test", "--json", "./slow", "--", "-timeout", "1s"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    let failed = run.events().into_iter().find(|e| e["event"] == "test_failed").expect("a failed test");
    assert_eq!(failed["test"], "TestSleeps");
    assert_eq!(failed["reason"], "timed out");
}

#[test]
fn bad_input_gets_exit_code_2() {
    let fx = fixture();
    let run = slipway_in(fx.path(), &["go", "test", "./does-not-exist/..."]);
    assert_eq!(run.code, 2, "{}", run.debug());
    assert!(run.stderr.contains("`go test` could not run"), "{}", run.debug());
    let not_module = tempfile::tempdir().unwrap();
    let run = slipway_in(not_module.path(), &["go", "test"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("not in a Go module"), "{}", run.debug());
    let no_go =
        Command::new(bin()).args(["go", "test"]).current_dir(fx.path()).env("PATH", "/nonexistent").output().unwrap();
    let run = Run::from(no_go);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("Go toolchain is not installed"), "{}", run.debug());
}

/// A git repository holding a copy of the 23-package graph fixture.
fn graph_repo() -> Repo {
    require_go();
    let r = Repo::new(&[]);
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/go/graph"), r.path());
    r.commit("graph fixture");
    r
}

fn tested(run: &Run) -> Vec<String> {
    let sel = run
        .events()
        .into_iter()
        .find(|e| e["event"] == "selection")
        .unwrap_or_else(|| panic!("no selection: {}", run.debug()));
    sel["tested"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().trim_start_matches("example.com/graph/").to_string())
        .collect()
}

#[test]
fn changed_since_tests_the_changed_package_and_its_dependents_only() {
    let r = graph_repo();
    r.write(
        "report/format/format.go",
        &(std::fs::read_to_string(r.path().join("report/format/format.go")).unwrap() + "\n// touched\n"),
    );
    let run = r.slipway(&["go", "test", "--json", "--changed-since", "HEAD"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(tested(&run), vec!["cmd/tool", "report/format"]);
    let s = summary(&run);
    let skipped = s["packages"].as_array().unwrap().iter().filter(|p| p["status"] == "skipped_unaffected").count();
    assert_eq!(skipped, 21);
    // A change deep in the graph reaches everything that imports it, through test imports too.
    r.git(&["checkout", "-q", "--", "."]);
    r.write(
        "util/strutil/strutil.go",
        &(std::fs::read_to_string(r.path().join("util/strutil/strutil.go")).unwrap() + "\n// touched\n"),
    );
    let run = r.slipway(&["go", "test", "--json", "--changed-since", "HEAD"]);
    let t = tested(&run);
    for p in [
        "util/strutil",
        "config",
        "auth",
        "api",
        "api/handlers",
        "cmd/server",
        "cmd/tool",
        "store/file",
        "search",
        "notify/email",
    ] {
        assert!(t.contains(&p.to_string()), "{p} depends on util/strutil: {t:?}");
    }
    assert!(!t.contains(&"billing/tax".to_string()));
    // testdata belongs to its package.
    r.git(&["checkout", "-q", "--", "."]);
    r.write("report/format/testdata/golden.txt", "changed\n");
    let run = r.slipway(&["go", "test", "--json", "--changed-since", "HEAD"]);
    assert_eq!(tested(&run), vec!["cmd/tool", "report/format"]);
}

#[test]
fn changed_since_tests_everything_when_the_module_changes() {
    let r = graph_repo();
    r.write("go.mod", "module example.com/graph\n\ngo 1.22\n\n// touched\n");
    let run = r.slipway(&["go", "test", "--json", "--changed-since", "HEAD"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let sel = run.events().into_iter().find(|e| e["event"] == "selection").unwrap();
    assert_eq!(sel["everything"], "go.mod changed");
    assert_eq!(sel["tested"].as_array().unwrap().len(), 23);
    let bad = r.slipway(&["go", "test", "--changed-since", "no-such-ref"]);
    assert_eq!(bad.code, 2, "{}", bad.debug());
    assert!(bad.stderr.contains("`no-such-ref` is not a commit"), "{}", bad.debug());
}
