//! `slipway gate` over real reports of `slipway go test` on the fixture module.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn fixture_with_reports() -> tempfile::TempDir {
    require_go();
    let d = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/go/testfx");
    for pkg in ["calc", "fail"] {
        std::fs::create_dir_all(d.path().join(pkg)).unwrap();
        for e in std::fs::read_dir(src.join(pkg)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.path().join(pkg).join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(src.join("go.mod"), d.path().join("go.mod")).unwrap();
    let run = slipway_in(d.path(), &["go", "test", "./calc", "./fail"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    d
}

#[test]
fn gates_from_the_pipeline_file_and_flags() {
    let d = fixture_with_reports();
    std::fs::write(
        d.path().join(".slipway.yml"),
        "gates:\n  coverage:\n    total: 30%\n  tests:\n    flaky: 0\ntest:\n  script: slipway go test\n",
    )
    .unwrap();
    let run = slipway_in(d.path(), &["gate", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["passed"], true);
    assert_eq!(v["gates"][0]["gate"], "coverage.total");
    assert_eq!(v["gates"][0]["actual"], "37.5%");

    let run = slipway_in(d.path(), &["gate", "--coverage-min", "70", "--max-failed", "0"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert!(run.stdout.contains("coverage.total  37.5%   ≥ 70.0%    FAIL"), "{}", run.stdout);
    assert!(
        run.stdout.contains("example.com/testfx/fail.TestTable/bad"),
        "the failing tests are blamed: {}",
        run.stdout
    );
    assert!(run.stdout.contains("2 of 3 gates failed"), "{}", run.stdout);
}

#[test]
fn bad_gate_input_gets_exit_code_2() {
    let d = fixture_with_reports();
    let run = slipway_in(d.path(), &["gate"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no quality gate is configured"), "{}", run.debug());
    let run = slipway_in(d.path(), &["gate", "--max-vet", "0"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("needs .slipway/reports/vet.json, which no job produced"), "{}", run.debug());
    std::fs::write(d.path().join(".slipway/reports/tests.json"), "<testsuites/>").unwrap();
    let run = slipway_in(d.path(), &["gate", "--max-failed", "0"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("is not a test report"), "{}", run.debug());
    let run = slipway_in(d.path(), &["gate", "--coverage-min", "170"]);
    assert_eq!(run.code, 2);
    std::fs::write(
        d.path().join(".slipway.yml"),
        "gates:\n  coverage:\n    totl: 170\n  binary:\n    max_size: 3 parsecs\njob:\n  script: x\n",
    )
    .unwrap();
    let run = slipway_in(d.path(), &["gate"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("did you mean `total`?"), "{}", run.debug());
    assert!(run.stderr.contains(".slipway.yml:5:15"), "{}", run.debug());
}

#[test]
fn coverage_may_not_drop_below_the_default_branch_baseline() {
    let d = fixture_with_reports();
    let state = d.path().join("state");
    let gate = |branch: &str| {
        let out = Command::new(bin())
            .args(["gate", "--coverage-no-drop", "--json"])
            .current_dir(d.path())
            .env("SLIPWAY_STATE_DIR", &state)
            .env("CI_COMMIT_BRANCH", branch)
            .env("CI_DEFAULT_BRANCH", "main")
            .env("CI_COMMIT_SHA", "0123456789abcdef")
            .output()
            .unwrap();
        Run::from(out)
    };
    let first = gate("main");
    assert_eq!(first.code, 0, "{}", first.debug());
    let v: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    assert_eq!(v["gates"][0]["threshold"], "no baseline yet");
    let baseline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("baseline/coverage.json")).unwrap()).unwrap();
    assert_eq!(baseline["total"], 37.5);
    // Coverage drops on a feature branch: the gate fails and the baseline stays.
    let cov = d.path().join(".slipway/reports/coverage.json");
    let lower = std::fs::read_to_string(&cov).unwrap().replacen("\"percent\": 37.5", "\"percent\": 30.0", 1);
    std::fs::write(&cov, lower).unwrap();
    let dropped = gate("feature");
    assert_eq!(dropped.code, 1, "{}", dropped.debug());
    let v: serde_json::Value = serde_json::from_str(&dropped.stdout).unwrap();
    assert_eq!(v["gates"][0]["blame"][0], "down 7.5 points since 01234567");
    assert_eq!(v["gates"][0]["threshold"], "≥ 37.5% (baseline 01234567)");
}
