//! Alert rules checked against Prometheus itself: slipway evaluates a rule file over input
//! series at every evaluation step, records the firing alerts (labels and rendered
//! annotations) as promtool's rule-test file, and Debian's `promtool test rules` must agree
//! with every one of them; a changed expectation fails both.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/alerts").join(name)
}

#[test]
fn promtool_agrees_with_slipway_at_every_evaluation_step() {
    require("promtool", "--version");
    let dir = tempfile::tempdir().unwrap();
    for f in ["rules.yml", "test.yml"] {
        std::fs::copy(fixture(f), dir.path().join(f)).unwrap();
    }
    let r = slipway_in(dir.path(), &["alerts", "check", "rules.yml"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("2 group(s), 13 rule(s)"), "{}", r.debug());
    let check =
        Command::new("promtool").args(["check", "rules", "rules.yml"]).current_dir(dir.path()).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // slipway's evaluation, every 30 s for 15 minutes, as promtool's expectations.
    let rec = slipway_in(dir.path(), &["alerts", "test", "test.yml", "--record"]);
    assert_eq!(rec.code, 0, "{}", rec.debug());
    let recorded: serde_json::Value = serde_json::from_str(&rec.stdout).unwrap();
    let tests = recorded["tests"][0]["alert_rule_test"].as_array().unwrap();
    assert_eq!(tests.len(), 31 * 12, "every alert at every step");
    let exprs = recorded["tests"][0]["promql_expr_test"].as_array().unwrap();
    assert_eq!(exprs.len(), 12, "every expression test, with slipway's samples for promtool to check");
    assert!(exprs.iter().all(|e| !e["exp_samples"].as_array().unwrap().is_empty()), "{exprs:?}");
    let mut firing = std::collections::BTreeMap::<String, usize>::new();
    for t in tests {
        if !t["exp_alerts"].as_array().unwrap().is_empty() {
            *firing.entry(t["alertname"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    assert_eq!(firing.len(), 12, "every rule fires at some step, so every one is compared: {firing:?}");
    assert!(
        rec.stdout.contains("Instance a:1 down") && rec.stdout.contains("a:1 has been down for more than 1 minute.")
    );
    std::fs::write(dir.path().join("recorded.yml"), &rec.stdout).unwrap();
    let prom =
        Command::new("promtool").args(["test", "rules", "recorded.yml"]).current_dir(dir.path()).output().unwrap();
    let out = String::from_utf8_lossy(&prom.stdout);
    assert!(
        prom.status.success() && out.contains("SUCCESS"),
        "promtool disagrees:\n{out}{}",
        String::from_utf8_lossy(&prom.stderr)
    );
    let again = slipway_in(dir.path(), &["alerts", "test", "recorded.yml"]);
    assert_eq!(again.code, 0, "{}", again.debug());
    // One rendered annotation changed: both say so.
    let mut bad = recorded.clone();
    let t = bad["tests"][0]["alert_rule_test"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["alertname"] == "HighErrorRate" && !t["exp_alerts"].as_array().unwrap().is_empty())
        .unwrap();
    t["exp_alerts"][0]["exp_annotations"]["ratio"] = serde_json::json!("0.999");
    std::fs::write(dir.path().join("bad.yml"), bad.to_string()).unwrap();
    let prom = Command::new("promtool").args(["test", "rules", "bad.yml"]).current_dir(dir.path()).output().unwrap();
    assert!(!prom.status.success());
    let ours = slipway_in(dir.path(), &["alerts", "test", "bad.yml"]);
    assert_eq!(ours.code, 1, "{}", ours.debug());
    assert!(
        ours.stdout.contains("alertname HighErrorRate") && ours.stdout.contains("\"ratio\": \"0.999\""),
        "{}",
        ours.debug()
    );
}

#[test]
fn a_bad_rule_file_gets_every_error_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: a\n    rules:\n      - alert: Down\n        expr: up == \n      - alert: Slow\n        expr: quantile_over_time(0.9, x[5m]) > 1\n        keep_firing_for: soon\n  - name: a\n    rules: []\n",
    )
    .unwrap();
    let r = slipway_in(dir.path(), &["alerts", "check", "rules.yml"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    for want in [
        "rules.yml:5:15",
        "is not PromQL",
        "rules.yml:7:15",
        "the function `quantile_over_time` is outside slipway's PromQL subset",
        "rules.yml:8:26",
        "`soon` is not a duration",
        "group `a` is defined twice",
    ] {
        assert!(r.stderr.contains(want), "missing `{want}` in:\n{}", r.stderr);
    }
}
