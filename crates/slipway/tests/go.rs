//! The zero-configuration Go pipeline on the bundled example service, with the real Go
//! toolchain (from `scripts/setup`): every job passes, the binary is an artifact, and it runs
//! and reports the commit it was stamped with.

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
fn built_in_go_pipeline_stops_at_unformatted_code_untidy_modules_and_low_coverage() {
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
            ("vet", "failed"),
            ("test", "success"),
            ("quality", "skipped"),
            ("build", "skipped"),
            ("container", "skipped")
        ])
    );
    assert!(run.log("vet").iter().any(|l| l.starts_with("extra.go: not gofmt-formatted")), "{:?}", run.log("vet"));
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
