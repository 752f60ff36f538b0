//! `slipway go build` with the real Go toolchain on the bundled example service: the platform
//! matrix, file names, SHA256SUMS, the manifest read back from build info, byte-identical
//! rebuilds, and bad input.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::process::Command;

use common::*;

fn example_repo() -> Repo {
    require_go();
    let r = Repo::new(&[]);
    copy_example(r.path());
    r.commit("hello-service");
    r.git(&["tag", "v1.4.0"]);
    r
}

#[test]
fn builds_a_matrix_with_checksums_and_a_manifest() {
    let r = example_repo();
    let run = r.slipway(&["go", "build", "--platform", "linux/amd64,windows/amd64", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let m: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(m["version"], "v1.4.0", "git describe on the tag");
    assert_eq!(m["module"], "example.com/hello-service");
    assert_eq!(m["vcs_revision"], r.git(&["rev-parse", "HEAD"]));
    assert_eq!(m["vcs_modified"], false);
    let files: Vec<&str> = m["artifacts"].as_array().unwrap().iter().map(|a| a["file"].as_str().unwrap()).collect();
    assert_eq!(files, vec!["hello-service_linux_amd64", "hello-service_windows_amd64.exe"]);
    let dist = r.path().join("dist");
    // The binaries are what their names say.
    assert_eq!(&std::fs::read(dist.join(files[0])).unwrap()[..4], b"\x7fELF");
    assert_eq!(&std::fs::read(dist.join(files[1])).unwrap()[..2], b"MZ");
    // SHA256SUMS verifies with the standard tool and matches the manifest.
    let check = Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(&dist).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(m["artifacts"][0]["sha256"].as_str().unwrap()));
    // CGO is off by default, and dist/ does not make the tree look modified.
    let out = Command::new("go").args(["version", "-m"]).arg(dist.join(files[0])).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("CGO_ENABLED=0"));
    assert!(r.git(&["status", "--porcelain"]).is_empty(), "dist/ is ignored");
    // The version is stamped into the binary through main.version.
    let run = r.slipway(&["go", "build", "--version", "9.8.7-stamp"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let bytes = std::fs::read(dist.join(files[0])).unwrap();
    assert!(bytes.windows(11).any(|w| w == b"9.8.7-stamp"), "version string in the binary");
}

#[test]
fn two_builds_of_the_same_commit_are_byte_identical() {
    let r = example_repo();
    let a = r.slipway(&["go", "build", "--out", "a", "--json"]);
    // No reuse: the second build links from scratch.
    std::fs::remove_dir_all(r.path().join(".slipway/go-build")).unwrap();
    let b = r.slipway(&["go", "build", "--out", "b", "--json"]);
    assert_eq!((a.code, b.code), (0, 0), "{}{}", a.debug(), b.debug());
    assert_eq!(
        std::fs::read(r.path().join("a/SHA256SUMS")).unwrap(),
        std::fs::read(r.path().join("b/SHA256SUMS")).unwrap()
    );
}

#[test]
fn bad_input_and_failed_builds() {
    let r = example_repo();
    let run = r.slipway(&["go", "build", "--platform", "linux/amd46"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("did you mean `linux/amd64`?"), "{}", run.debug());
    let run = r.slipway(&["go", "build", "--platform", "plan9"]);
    assert_eq!(run.code, 2, "{}", run.debug());

    let fx = tempfile::tempdir().unwrap();
    std::fs::write(fx.path().join("go.mod"), "module example.com/lib\n\ngo 1.22\n").unwrap();
    std::fs::write(fx.path().join("lib.go"), "package lib\n\nfunc F() {}\n").unwrap();
    // A library has nothing to ship: every package compiles, no binaries (and no dist/).
    let run = slipway_in(fx.path(), &["go", "build"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert!(run.stdout.contains("no main package, so no binaries"), "{}", run.debug());
    assert!(!fx.path().join("dist/manifest.json").exists());
    std::fs::write(
        fx.path().join("bad.go"),
        "package lib

func G() int { return \"x\" }
",
    )
    .unwrap();
    let run = slipway_in(fx.path(), &["go", "build"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert!(run.stderr.contains("bad.go"), "{}", run.debug());

    // A build that fails leaves dist/ as it was.
    let good = r.slipway(&["go", "build"]);
    assert_eq!(good.code, 0, "{}", good.debug());
    let before = std::fs::read(r.path().join("dist/SHA256SUMS")).unwrap();
    std::fs::write(r.path().join("broken.go"), "package main\n\nfunc broken() int { return \"x\" }\n").unwrap();
    let bad = r.slipway(&["go", "build"]);
    assert_eq!(bad.code, 1, "{}", bad.debug());
    assert!(bad.stderr.contains("broken.go"), "{}", bad.debug());
    assert_eq!(std::fs::read(r.path().join("dist/SHA256SUMS")).unwrap(), before);
    assert!(!r.path().join("dist/broken").exists());
}

#[test]
fn the_go_section_sets_the_defaults() {
    let r = example_repo();
    r.write(
        ".slipway.yml",
        "go:\n  platforms: [linux/arm64]\n  version_var: main.version\nbuild:\n  script: slipway go build\n",
    );
    r.commit("go section");
    let run = r.slipway(&["go", "build", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let m: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(m["artifacts"][0]["file"], "hello-service_linux_arm64");
    // Flags win over the section.
    let run = r.slipway(&["go", "build", "--json", "--platform", "linux/amd64"]);
    let m: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(m["artifacts"][0]["file"], "hello-service_linux_amd64");
    r.write(".slipway.yml", "go:\n  platforms: [linux]\n  vresion_var: x\nbuild:\n  script: slipway go build\n");
    let run = r.slipway(&["go", "build"]);
    assert_eq!(run.code, 2, "{}", run.debug());
    assert!(
        run.stderr.contains("platform `linux` is not os/arch") && run.stderr.contains(".slipway.yml:2:15"),
        "{}",
        run.debug()
    );
    assert!(run.stderr.contains("did you mean `version_var`?"), "{}", run.debug());
}
