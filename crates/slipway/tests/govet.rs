//! `slipway go vet` and `slipway go mod check` with the real Go toolchain.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::process::Command;

use common::*;

fn module(files: &[(&str, &str)]) -> tempfile::TempDir {
    require_go();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("go.mod"), "module example.com/vetfx\n\ngo 1.22\n").unwrap();
    for (p, c) in files {
        let full = d.path().join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, c).unwrap();
    }
    d
}

#[test]
fn vet_findings_and_unformatted_files_are_reported_with_positions() {
    let m = module(&[
        ("a/a.go", "package a\n\nimport \"fmt\"\n\n// F prints.\nfunc F(x int) {\n\tfmt.Printf(\"%s\\n\", x)\n}\n"),
        ("b/b.go", "package b\n\nfunc   Ugly() {}\n"),
        ("c/c.go", "package c\n\n// Fine is fine.\nfunc Fine() {}\n"),
    ]);
    let run = slipway_in(m.path(), &["go", "vet", "--json"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let f = &r["findings"][0];
    assert_eq!(
        (f["file"].as_str(), f["line"].as_u64(), f["column"].as_u64(), f["analyzer"].as_str()),
        (Some("a/a.go"), Some(7), Some(14), Some("printf"))
    );
    // The same position go vet itself prints.
    let go_vet = Command::new("go").args(["vet", "./..."]).current_dir(m.path()).output().unwrap();
    assert!(
        String::from_utf8_lossy(&go_vet.stderr)
            .contains("a/a.go:7:14: fmt.Printf format %s has arg x of wrong type int")
    );
    assert_eq!(r["findings"].as_array().unwrap().len(), 1);
    assert_eq!(r["unformatted"], serde_json::json!(["b/b.go"]));
    assert!(m.path().join(".slipway/reports/vet.json").is_file());
    let human = slipway_in(m.path(), &["go", "vet"]);
    assert!(
        human.stdout.contains("a/a.go:7:14: fmt.Printf format %s has arg x of wrong type int (printf)"),
        "{}",
        human.stdout
    );

    let clean = module(&[("c/c.go", "package c\n\n// Fine is fine.\nfunc Fine() {}\n")]);
    let run = slipway_in(clean.path(), &["go", "vet"]);
    assert_eq!(run.code, 0, "{}", run.debug());

    // Formatting alone is a warning with the diff, not a vet failure (its gate is opt-in).
    let ugly = module(&[("b/b.go", "package b\n\nfunc   Ugly() {}\n")]);
    let run = slipway_in(ugly.path(), &["go", "vet", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(r["format_diff"].as_str().unwrap().contains("+func Ugly() {}"), "{r}");
}

#[test]
fn mod_check_shows_what_tidy_would_change() {
    let m = module(&[("a/a.go", "package a\n")]);
    let run = slipway_in(m.path(), &["go", "mod", "check"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    std::fs::write(
        m.path().join("go.mod"),
        "module example.com/vetfx\n\ngo 1.22\n\nrequire example.com/unused v1.0.0\n",
    )
    .unwrap();
    let run = slipway_in(m.path(), &["go", "mod", "check", "--json"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(r["tidy"], false);
    assert!(r["tidy_diff"].as_str().unwrap().contains("-require example.com/unused v1.0.0"), "{r}");
    assert!(std::fs::read_to_string(m.path().join("go.mod")).unwrap().contains("unused"), "the check changes nothing");
}
