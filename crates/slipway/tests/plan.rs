//! `slipway plan`, `list`, `validate` and `init`: the expanded pipeline after includes,
//! extends, `!reference`, rules and matrix, as YAML, JSON and a Mermaid graph.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use common::*;

const PIPELINE: &str = r#"
stages: [build, test, deploy]
variables:
  REGISTRY: registry.local
.go:
  before_script:
    - go version
  cache:
    key: go-$CI_COMMIT_REF_SLUG
    paths: [.cache/go]
build:
  extends: .go
  stage: build
  parallel:
    matrix:
      - GOOS: [linux, darwin]
  script:
    - go build -o dist/app-$GOOS ./...
  artifacts:
    paths: [dist/]
    expire_in: 1 week
test:
  extends: .go
  stage: test
  needs: []
  script:
    - go test ./...
  coverage: '/coverage: \d+\.\d+%/'
  retry: 1
deploy:
  stage: deploy
  environment:
    name: staging
    url: https://staging.example.com
  script:
    - echo deploy $REGISTRY/app
  when: manual
  allow_failure: false
  resource_group: staging
"#;

#[test]
fn plan_as_yaml() {
    let r = Repo::new(&[(".slipway.yml", PIPELINE)]);
    let out = r.slipway(&["plan"]);
    assert_eq!(out.code, 0, "{}", out.debug());
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn plan_as_mermaid() {
    let r = Repo::new(&[(".slipway.yml", PIPELINE)]);
    let out = r.slipway(&["plan", "--format", "mermaid"]);
    assert_eq!(out.code, 0, "{}", out.debug());
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn plan_as_json_is_machine_readable() {
    let r = Repo::new(&[(".slipway.yml", PIPELINE)]);
    let out = r.slipway(&["plan", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["stages"], serde_json::json!(["build", "test", "deploy"]));
    assert_eq!(v["jobs"][0]["name"], "build: [linux]");
    assert_eq!(v["jobs"][0]["cache"][0]["key"], "go-main", "variables in cache:key are expanded");
    assert_eq!(v["jobs"][3]["dependencies"], serde_json::json!(["build: [linux]", "build: [darwin]", "test"]));
}

#[test]
fn list_and_validate() {
    let r = Repo::new(&[(".slipway.yml", PIPELINE)]);
    let out = r.slipway(&["list"]);
    insta::assert_snapshot!(out.stdout);
    let out = r.slipway(&["validate"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, "ok: .slipway.yml is valid: 4 jobs in 3 stages\n");
}

#[test]
fn file_lookup_order_and_file_flag() {
    let r = Repo::new(&[
        (".gitlab-ci.yml", "from_gitlab:\n  script: x\n"),
        (".slipway.yaml", "from_slipway:\n  script: x\n"),
        ("other.yml", "from_other:\n  script: x\n"),
    ]);
    assert!(r.slipway(&["list"]).stdout.contains("from_slipway"));
    assert!(r.slipway(&["list", "--file", "other.yml"]).stdout.contains("from_other"));
    std::fs::remove_file(r.path().join(".slipway.yaml")).unwrap();
    assert!(r.slipway(&["list"]).stdout.contains("from_gitlab"));
}

#[test]
fn init_writes_the_built_in_go_pipeline() {
    let r = Repo::new(&[("go.mod", "module example.com/x\n\ngo 1.22\n")]);
    let builtin = r.slipway(&["list"]);
    assert_eq!(builtin.code, 0, "{}", builtin.debug());
    let init = r.slipway(&["init"]);
    assert_eq!(init.code, 0);
    assert!(r.path().join(".slipway.yml").is_file());
    assert_eq!(r.slipway(&["list"]).stdout, builtin.stdout, "the written file is the built-in pipeline");
    let again = r.slipway(&["init"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("--force"));
}

#[test]
fn completions_are_generated() {
    let r = Repo::new(&[]);
    let out = r.slipway(&["completions", "bash"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("_slipway"));
}
