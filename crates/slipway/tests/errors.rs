//! Bad pipeline files: every error at once, each with file:line:col, the quoted line, a caret
//! and a hint; exit code 2 and nothing runs. Snapshots live in `tests/snapshots/`.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use common::*;

/// Validates `yaml` as `.gitlab-ci.yml` (plus extra files) and returns stderr with the
/// temporary directory redacted. Asserts exit code 2 and that no run was recorded.
fn check(yaml: &str, extra: &[(&str, &str)]) -> String {
    let mut files = vec![(".gitlab-ci.yml", yaml)];
    files.extend_from_slice(extra);
    let r = Repo::new(&files);
    let v = r.slipway(&["validate"]);
    assert_eq!(v.code, 2, "{}", v.debug());
    let run = r.slipway(&["run"]);
    assert_eq!(run.code, 2, "{}", run.debug());
    assert!(!r.path().join(".slipway/runs/1").exists(), "nothing may run");
    let root = r.path().canonicalize().unwrap();
    v.stderr.replace(&root.display().to_string(), "[ROOT]")
}

#[test]
fn unknown_keywords_get_did_you_mean() {
    insta::assert_snapshot!(check(
        "stages: [build]\nvaraibles:\n  A: 1\nbuild:\n  stage: build\n  scirpt: make\n  neds: []\n  artifacts:\n    path: [bin/]\n",
        &[]
    ));
}

#[test]
fn wrong_types_say_what_was_expected() {
    insta::assert_snapshot!(check(
        "job:\n  script: {run: make}\n  retry: many\n  parallel: 500\n  allow_failure: maybe\n  when: sometimes\n  tags: [1.5, {a: b}]\n",
        &[]
    ));
}

#[test]
fn needs_problems_unknown_later_stage_and_cycles() {
    insta::assert_snapshot!(check(
        "stages: [build, test]\ncompile:\n  stage: build\n  needs: [unit]\n  script: make\nunit:\n  stage: test\n  needs: [compil, lint]\n  script: go test\nlint:\n  stage: test\n  needs: [unit]\n  script: go vet\n",
        &[]
    ));
}

#[test]
fn extends_cycles_and_unknown_parents() {
    insta::assert_snapshot!(check(
        ".a:\n  extends: .b\n.b:\n  extends: .c\n.c:\n  extends: .a\njob:\n  extends: [.a, .tmpl]\n  script: x\n.templ:\n  script: y\n",
        &[]
    ));
}

#[test]
fn rules_if_errors_point_at_the_column() {
    insta::assert_snapshot!(check(
        "job:\n  script: x\n  rules:\n    - if: '$CI_COMMIT_BRANCH == \"main\" & $DEPLOY'\n    - if: $CI_COMMIT_TAG =~ /^v[0-9+/\n    - if: ($A == \"x\"\n    - if: $A == main\n",
        &[]
    ));
}

#[test]
fn durations_and_when_delayed() {
    insta::assert_snapshot!(check(
        "job:\n  script: x\n  timeout: 3 parsecs\nlater:\n  script: x\n  when: delayed\nsoon:\n  script: x\n  start_in: 5 minutes\n",
        &[]
    ));
}

#[test]
fn includes_and_offline_keywords() {
    insta::assert_snapshot!(check(
        "include:\n  - local: ci/missing.yml\n  - remote: https://127.0.0.1:9/ci.yml\n  - template: Go.gitlab-ci.yml\n  - local: ci/broken.yml\ndownstream:\n  trigger: group/project\n",
        &[("ci/broken.yml", "job:\n  script: [a\n")]
    ));
}

#[test]
fn duplicate_keys_and_yaml_syntax() {
    // GitLab keeps a duplicate key's last value: a warning at its place; an error with --strict.
    let r = Repo::new(&[(".gitlab-ci.yml", "job:\n  script: echo a\n  stage: test\n  script: echo b\n")]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert!(
        run.stderr.contains("warning: duplicate key `script`: this value replaces the one at line 2")
            && run.stderr.contains(".gitlab-ci.yml:4:3"),
        "{}",
        run.debug()
    );
    assert_eq!(run.log("job")[1], "b");
    let strict = r.slipway(&["run", "--strict"]);
    assert_eq!(strict.code, 2, "{}", strict.debug());
    assert!(strict.stderr.contains("--strict: 1 duplicate key in the pipeline"), "{}", strict.debug());
    insta::assert_snapshot!("syntax", check("job:\n  script: echo: a: b\n  stage: test\n", &[]));
}

#[test]
fn a_command_with_colon_space_needs_quotes() {
    insta::assert_snapshot!(check("job:\n  script:\n    - echo hello\n    - echo key: value\n", &[]));
}

#[test]
fn empty_and_jobless_files() {
    insta::assert_snapshot!("empty", check("", &[]));
    insta::assert_snapshot!("only_hidden", check(".template:\n  script: x\nvariables:\n  A: b\n", &[]));
    insta::assert_snapshot!("not_a_job", check("stage: build\njob:\n  script: x\n", &[]));
}

#[test]
fn rules_that_exclude_every_job() {
    // The file is valid (`validate` warns), but `run` refuses to run an empty pipeline.
    let r = Repo::new(&[(".gitlab-ci.yml", "job:\n  rules:\n    - if: $NEVER_SET\n  script: x\n")]);
    let v = r.slipway(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.debug());
    assert!(v.stderr.contains("warning: every job was excluded"), "{}", v.debug());
    let run = r.slipway(&["run"]);
    assert_eq!(run.code, 2, "{}", run.debug());
    assert!(!r.path().join(".slipway/runs/1").exists(), "nothing may run");
    let root = r.path().canonicalize().unwrap();
    insta::assert_snapshot!(run.stderr.replace(&root.display().to_string(), "[ROOT]"));
}

#[test]
fn a_need_excluded_by_rules() {
    insta::assert_snapshot!(check(
        "stages: [a, b]\nfirst:\n  stage: a\n  rules:\n    - if: $NEVER_SET\n  script: x\nsecond:\n  stage: b\n  needs: [first]\n  script: x\n",
        &[]
    ));
}

#[test]
fn json_output_lists_every_error() {
    let r = Repo::new(&[(".gitlab-ci.yml", "job:\n  scirpt: x\n  timeout: soon\n")]);
    let v = r.slipway(&["validate", "--json"]);
    assert_eq!(v.code, 2);
    let ev: serde_json::Value = serde_json::from_str(v.stdout.trim()).unwrap();
    assert_eq!(ev["event"], "error");
    let errors = ev["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{ev}");
    assert_eq!(errors[0]["file"], ".gitlab-ci.yml");
    assert_eq!(errors[0]["line"], 1);
    assert!(errors.iter().any(|e| e["line"] == 2 && e["column"] == 3 && e["hint"] == "did you mean `script`?"), "{ev}");
}

#[test]
fn usage_errors_exit_2() {
    let r = Repo::new(&[(".slipway.yml", "job:\n  script: x\n")]);
    for args in [
        &["run", "--var", "NOEQUALS"][..],
        &["run", "--var", "1X=2"],
        &["run", "-j", "0"],
        &["run", "--manual", "job"],
        &["plan", "--file", "nope.yml"],
    ] {
        let run = r.slipway(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.debug());
        assert!(run.stderr.starts_with("error: "), "{args:?}: {}", run.debug());
    }
    let empty = tempfile::tempdir().unwrap();
    let run = slipway_in(empty.path(), &["run"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("slipway init"), "{}", run.debug());
}

#[test]
fn include_cycles_show_the_chain() {
    // Include errors stop before compiling: the merged file would be incomplete and every
    // later error a guess.
    insta::assert_snapshot!(check(
        "include: ci/a.yml\njob:\n  script: x\n",
        &[("ci/a.yml", "include: ci/b.yml\n"), ("ci/b.yml", "include: ci/a.yml\n")]
    ));
}

#[test]
fn bad_references() {
    insta::assert_snapshot!(check(
        ".setup:\n  script: [echo setup]\njob:\n  script:\n    - !reference [.setpu, script]\n    - !reference [.setup, scirpt]\n    - !reference []\n",
        &[]
    ));
}

#[test]
fn variables_and_masking_rules() {
    insta::assert_snapshot!(check(
        "variables:\n  1BAD: x\n  TOKEN:\n    value: short\n    masked: true\n  OPT:\n    value: x\n    expand: maybe\n    colour: red\njob:\n  script: x\n",
        &[]
    ));
}

#[test]
fn a_template_error_is_reported_once_not_per_job() {
    let out =
        check(".tmpl:\n  script: [!reference [.nope, script]]\na:\n  extends: .tmpl\nb:\n  extends: .tmpl\n", &[]);
    assert_eq!(out.matches("error: `!reference` to `.nope`").count(), 1, "{out}");
}

#[test]
fn bad_images_sections() {
    insta::assert_snapshot!(check(
        "images:\n  registry: reg.example.com/app:v1\n  files:\n    kodata: var/run/ko\n    static: /srv/../etc\n  tagz: [latest]\njob:\n  script: x\n",
        &[]
    ));
}

#[test]
fn environments_errors_have_field_paths_and_positions() {
    insta::assert_snapshot!(check(
        "job:\n  script: x\nenvironments:\n  dev:\n    instances: 0\n    listen: localhost\n    strategy: {type: rollin}\n    health: {http: healthz, interval: 0s, tcp: true}\n  staging:\n    promote_from: dve\n    listen: 127.0.0.1:8080\n    strategy:\n      type: canary\n      steps: [{weight: 50}, {weight: 20, pause: 1m}]\n      analysis: {max_error_rate: 150%}\n    servce: {}\n  prod:\n    target: kubernetes\n    listen: 127.0.0.1:8080\n    strategy: {type: rolling, max_surge: 0, max_unavailable: 0}\n    protection: {branches: ['[main']}\n  qa:\n    promote_from: qa2\n    listen: 127.0.0.1:9001\n  qa2:\n    promote_from: qa\n    listen: 127.0.0.1:9002\n",
        &[]
    ));
}

#[test]
fn signature_policies_take_public_keys_only() {
    let out = check(
        "job:\n  script: x\nenvironments:\n  a:\n    listen: 127.0.0.1:8080\n    require_signature: {keys: [keys/release.pub]}\n  b:\n    listen: 127.0.0.1:8081\n    require_signature:\n      keys:\n        - |\n          -----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n          eyJ9\n          -----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n  c:\n    listen: 127.0.0.1:8082\n    require_signature: {key: x}\n  d:\n    listen: 127.0.0.1:8083\n    require_signature: {keys: []}\n",
        &[],
    );
    for want in [
        ".gitlab-ci.yml:6:32",
        "`environments:a:require_signature:keys[0]` is not a PEM public key",
        "paste the .pub file's text as a block",
        "`environments:b:require_signature:keys[0]` is a private key: never put it in the pipeline file",
        "unknown keyword `key` in `environments:c:require_signature`",
        "`environments:c:require_signature` needs `keys`",
        "`environments:d:require_signature:keys` is empty",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
}

#[test]
fn ssh_target_errors_name_the_host_and_field() {
    insta::assert_snapshot!(check(
        "job:\n  script: x\nenvironments:\n  prod:\n    target: ssh\n    ssh:\n      hosts: [\"root@10.0.0.1\", \"ssh://deploy@10.0.0.2:99999\", {url: \"ssh://deploy@10.0.0.3\"}, \"ssh://deploy@10.0.0.4\", \"ssh://deploy@10.0.0.4\"]\n      port: 8080\n      root: opt/slipway\n      keep: 1\n      idenity: key\n    strategy: {type: canary}\n  staging:\n    target: ssh\n    listen: 127.0.0.1:8080\n  dev:\n    ssh: {hosts: [\"ssh://a@b\"]}\n    listen: 127.0.0.1:8081\n",
        &[]
    ));
}

#[test]
fn secret_sources_and_proxy_limits_are_checked() {
    let out = check(
        "job:\n  script: x\nenvironments:\n  dev:\n    listen: 127.0.0.1:8080\n    service:\n      env:\n        A: {value_from: \"vault:x\"}\n        B: {value_from: \"file:relative/path\"}\n        C: {value_from: \"env:1BAD\"}\n        D: {value_from: \"env:OK\", value: x}\n    proxy: {max_connections: 0, idle_timeout: 10ms, keepalive: 1s}\n",
        &[],
    );
    for want in [
        ".gitlab-ci.yml:8:25",
        ".gitlab-ci.yml:12:47",
        "`environments:dev:service:env:A:value_from`: `vault:x` is neither `env:NAME` nor `file:/PATH`",
        "`relative/path` is not an absolute path (the agent reads it on its machine)",
        "`1BAD` is not an environment variable name",
        "unknown keyword `value` in `environments:dev:service:env:D`",
        "`environments:dev:proxy:max_connections` must be between 1 and 1000000, found 0",
        "`environments:dev:proxy:idle_timeout` must be at least 100ms",
        "unknown keyword `keepalive` in `environments:dev:proxy`",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
}

#[test]
fn remote_agents_are_named_or_reached_over_ssh_not_both() {
    let out = check(
        "job:\n  script: x\nenvironments:\n  a:\n    listen: 127.0.0.1:8080\n    agent: {name: web-1, ssh: \"ssh://d@h\"}\n  b:\n    listen: 127.0.0.1:8081\n    agent: \"../web\"\n  c:\n    listen: 127.0.0.1:8082\n    agent: {nme: web-1}\n  d:\n    target: ssh\n    ssh: {hosts: [\"ssh://d@h\"], port: 8083}\n    agent: web-1\n  e:\n    listen: 127.0.0.1:8084\n    agent: web-1\n  f:\n    target: docker\n    listen: 127.0.0.1:8085\n    agent: {name: web.example.com}\n",
        &[],
    );
    for want in [
        ".gitlab-ci.yml:6:13",
        "`environments:a:agent`: give either `name` (an agent connected to the server) or `ssh`, not both",
        ".gitlab-ci.yml:9:12",
        "`environments:b:agent`: agent name `../web` is not valid",
        "unknown keyword `nme` in `environments:c:agent`",
        "`environments:c:agent` needs `name: AGENT` (an agent connected to the server) or `ssh: ssh://user@host`",
        "`environments:d:agent` (a remote agent) is for `target: local` and `target: docker`",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    assert!(!out.contains("environments:e") && !out.contains("environments:f"), "{out}");
}

#[test]
fn the_alerts_section_is_a_rule_file_checked_whole_at_its_places() {
    // Regression: `alerts:` with any content used to validate ("valid", exit 0) and be ignored;
    // now it is a Prometheus rule file's content, every error at its place.
    let out = check(
        "alerts:\n  groups:\n    - name: instance-health\n      rules:\n        - alert: InstanceDown\n          expr: predict_linear(up[5m], 60) < 0\n          for: 1 minute\n          annotations:\n            summary: \"{{ range $labels }}\"\n        - record: job:up\n          expr: sum by (job) (up)\n          for: 1m\n        - alrt: X\n          expr: up\njob:\n  script: x\n",
        &[],
    );
    for want in [
        ".gitlab-ci.yml:6:17",
        "the function `predict_linear` is outside slipway's PromQL subset",
        ".gitlab-ci.yml:7:16",
        "`1 minute` is not a duration",
        "{{ range $labels }}` is not supported",
        "a recording rule has no `for`",
        "unknown keyword `alrt`",
        "did you mean `alert`?",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    // A valid section passes, without a word.
    let r = Repo::new(&[(
        ".gitlab-ci.yml",
        "alerts:\n  groups:\n    - name: instance-health\n      rules:\n        - alert: InstanceDown\n          expr: up == 0\n          for: 1m\njob:\n  script: x\n",
    )]);
    let v = r.slipway(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.debug());
    assert!(!v.stderr.contains("warning"), "{}", v.debug());
}
