//! The zero-configuration Go pipeline on the bundled example service, with the real Go
//! toolchain (from `scripts/setup`): every job passes, the binary is an artifact, and it runs
//! and reports the commit it was stamped with.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::process::Command;

use common::*;

#[test]
fn built_in_go_pipeline_builds_tests_and_stamps_the_example() {
    require_go();
    let r = Repo::new(&[]);
    copy_example(r.path());
    r.commit("hello-service");
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(
        run.statuses(),
        st(&[
            ("verify", "success"),
            ("vet", "success"),
            ("test", "success"),
            ("quality", "success"),
            ("build", "success"),
            ("container", "success")
        ])
    );
    assert!(run.log("test").iter().any(|l| l.starts_with("ok") && l.contains("coverage")), "{:?}", run.log("test"));
    assert!(run.log("quality").iter().any(|l| l.contains("all 3 gates passed")), "{:?}", run.log("quality"));
    let coverage =
        run.events().iter().find(|e| e["event"] == "job_finished" && e["job"] == "test").unwrap()["coverage"].as_f64();
    assert!(coverage.is_some_and(|c| c > 0.0), "coverage parsed from the log");

    // The built binary is an artifact; run it and ask its version.
    let bin = r.path().join(".slipway/runs/1/artifacts/build/dist/hello-service_linux_amd64");
    assert!(r.path().join(".slipway/runs/1/artifacts/build/dist/manifest.json").is_file());
    assert!(
        r.path().join(".slipway/runs/1/artifacts/test/.slipway/reports/junit.xml").is_file(),
        "reports are artifacts"
    );
    assert!(bin.is_file(), "build artifact");
    let addr = free_addr();
    let mut child = Command::new(&bin).arg("-addr").arg(&addr).spawn().unwrap();
    let body = wait_http(&addr, "/version");
    let _ = child.kill();
    let _ = child.wait();
    let sha = r.git(&["rev-parse", "--short=8", "HEAD"]);
    let body = body.expect("hello-service answered");
    assert!(body.contains(&format!("{{\"version\":\"{sha}\"}}")), "{body}");
}

#[test]
fn built_in_go_pipeline_stops_at_untidy_modules_and_low_coverage_and_warns_on_formatting() {
    require_go();
    let r = Repo::new(&[]);
    copy_example(r.path());
    r.write("extra.go", "package main\nfunc   unformatted() {}\n");
    r.write("go.mod", "module example.com/hello-service\n\ngo 1.22\n\nrequire example.com/unused v1.0.0\n");
    r.commit("bad");
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert_eq!(
        run.statuses(),
        st(&[
            ("verify", "failed"),
            ("vet", "success"),
            ("test", "success"),
            ("quality", "skipped"),
            ("build", "skipped"),
            ("container", "skipped")
        ])
    );
    // Regression: formatting alone used to fail `vet`; it is its own gate now, a warning
    // with the diff when nothing asks for it.
    let vet = run.log("vet");
    assert!(vet.iter().any(|l| l.starts_with("extra.go: not gofmt-formatted")), "{vet:?}");
    assert!(vet.iter().any(|l| l.contains("+func unformatted() {}")), "the diff is shown: {vet:?}");
    assert!(vet.iter().any(|l| l.contains("gates: {vet: {unformatted: 0}}")), "{vet:?}");
    assert!(run.log("verify").iter().any(|l| l.contains("example.com/unused")), "{:?}", run.log("verify"));

    // A coverage minimum stops the pipeline before the build.
    let r = Repo::new(&[]);
    copy_example(r.path());
    r.commit("good");
    let run = r.slipway(&["run", "--json", "--var", "SLIPWAY_COVERAGE_MIN=99"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert_eq!(
        run.statuses(),
        st(&[
            ("verify", "success"),
            ("vet", "success"),
            ("test", "success"),
            ("quality", "failed"),
            ("build", "skipped"),
            ("container", "skipped")
        ])
    );
    assert!(
        run.log("quality").iter().any(|l| l.starts_with("coverage.total") && l.ends_with("FAIL")),
        "{:?}",
        run.log("quality")
    );
}

/// Regressions found trying real modules: a library (no main package) failed `build` with
/// "no main package to build", and a vendored module could never pass `verify` offline.
#[test]
fn zero_config_passes_on_a_library_and_on_a_vendored_module_offline() {
    require_go();
    let all_pass = st(&[
        ("verify", "success"),
        ("vet", "success"),
        ("test", "success"),
        ("quality", "success"),
        ("build", "success"),
        ("container", "success"),
    ]);
    let lib = Repo::new(&[]);
    copy_fixture("golib", lib.path());
    lib.commit("a library");
    let run = lib.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(run.statuses(), all_pass);
    assert!(
        run.log("build").iter().any(|l| l.contains("compiled 1 package(s)") && l.contains("no binaries")),
        "{:?}",
        run.log("build")
    );

    let vendored = Repo::new(&[]);
    copy_fixture("vendored", vendored.path());
    vendored.commit("vendored");
    // An empty module cache: everything must come from vendor/ (GOPROXY=off is set for tests).
    let cache = tempfile::tempdir().unwrap();
    let run = vendored.slipway_env(&["run", "--json"], &[("GOMODCACHE", cache.path().to_str().unwrap())]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(run.statuses(), all_pass);
    assert!(run.log("verify").iter().any(|l| l.contains("vendor/ matches go.mod")), "{:?}", run.log("verify"));

    // vendor/ that no longer matches go.mod fails `verify`, saying so.
    vendored.write("go.mod", "module example.com/vendored\n\ngo 1.22\n\nrequire example.com/greet v1.1.0\n");
    vendored.commit("drift");
    let run = vendored.slipway_env(&["run", "--json"], &[("GOMODCACHE", cache.path().to_str().unwrap())]);
    assert_eq!(run.code, 1, "{}", run.debug());
    let verify = run.log("verify");
    assert!(verify.iter().any(|l| l.contains("vendor/ does not match go.mod (run `go mod vendor`)")), "{verify:?}");
}

/// Regression: a failing `slipway go mod check` said "go test could not run".
#[test]
fn a_go_command_that_cannot_run_names_itself() {
    require_go();
    let r = Repo::new(&[]);
    copy_fixture("golib", r.path());
    r.write("missing.go", "package golib\n\nimport _ \"example.com/not/there\"\n");
    r.commit("a missing dependency");
    let run = r.slipway(&["go", "mod", "check"]);
    assert_eq!(run.code, 2, "{}", run.debug());
    assert!(run.stderr.contains("`go mod tidy -diff` could not run"), "{}", run.debug());
    assert!(!run.stderr.contains("go test"), "{}", run.debug());
}
