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

/// `only:`/`except:` as GitLab reads them in real files: a ref `@group/project` runs only in
/// that project (not in a fork), `merge_requests` matches merge-request pipelines, which jobs
/// with the default `only` (branches, tags) stay out of; `=~ "string"` is a substring match;
/// every documented `retry:when` (here `runner_interrupted`) is taken.
#[test]
fn only_refs_with_a_project_merge_requests_substring_matches_and_retry_reasons() {
    let r = Repo::new(&[(
        ".gitlab-ci.yml",
        r#"upstream:
  only: [main@group/proj]
  script: [echo up]
upstream_regex:
  only: ['/^ma/@group/proj']
  script: [echo up]
in_a_fork:
  only: [main@other/proj]
  script: [echo fork]
not_here:
  except: [main@group/proj]
  script: [echo no]
mr_only:
  only: [merge_requests]
  script:
    - echo "${CI_COMMIT_BRANCH:-no-branch} $CI_MERGE_REQUEST_SOURCE_BRANCH_NAME→$CI_MERGE_REQUEST_TARGET_BRANCH_NAME !$CI_MERGE_REQUEST_IID"
    - echo "$CI_SERVER_HOST $CI_SERVER_URL $CI_PROJECT_URL $CI_PROJECT_VISIBILITY"
default_only:
  script: [echo default]
contains:
  rules:
    - if: '$CI_PIPELINE_SOURCE == "push" && $CI_COMMIT_BRANCH =~ "ai"'
  script: [echo contains]
escaped:
  rules:
    - if: '$CI_COMMIT_BRANCH =~ "m.in"'
  script: [echo never]
interrupted:
  retry: {max: 2, when: [runner_interrupted, script_failure]}
  script: [echo ok]
manual_kept:
  when: manual
  rules:
    - if: $CI_PIPELINE_SOURCE == "push"
  script: [echo manual]
manual_by_rule:
  rules:
    - if: $CI_PIPELINE_SOURCE == "push"
      when: manual
  script: [echo manual]
"#,
    )]);
    r.git(&["remote", "add", "origin", "https://gitlab.example.com/group/proj.git"]);
    let names = |source: &str| {
        let out = r.slipway(&["plan", "--format", "json", "--source", source]);
        assert_eq!(out.code, 0, "{}", out.debug());
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(
        names("push"),
        ["upstream", "upstream_regex", "default_only", "contains", "interrupted", "manual_kept", "manual_by_rule"]
    );
    // A job-level `when: manual` kept by its rule may fail (GitLab's default for manual jobs);
    // `when: manual` set by the rule may not.
    let out = r.slipway(&["plan", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let job = |n: &str| v["jobs"].as_array().unwrap().iter().find(|j| j["name"] == n).unwrap().clone();
    assert_eq!(job("manual_kept")["allow_failure"], true, "{v}");
    assert!(job("manual_by_rule")["allow_failure"].is_null(), "{v}");
    assert_eq!(names("merge_request_event"), ["mr_only"]);
    // A merge-request pipeline's variables: no branch, the MR's source and target, the forge
    // read from `origin`.
    r.git(&["checkout", "-q", "-b", "feature"]);
    let run = r.slipway(&["run", "--json", "--source", "merge_request_event"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let log = run.log("mr_only");
    assert_eq!(log[1], "no-branch feature→main !1", "{log:?}");
    assert_eq!(
        log[3], "gitlab.example.com https://gitlab.example.com https://gitlab.example.com/group/proj private",
        "{log:?}"
    );
}

/// Valid in GitLab and found in real files: `key: null` unsetting what `extends` brings,
/// a variable's `value: true`, and `artifacts:reports:coverage_report` in its mapping form.
#[test]
fn nulls_unset_inherited_keywords_and_gitlabs_other_valid_forms_are_taken() {
    let r = Repo::new(&[(
        ".gitlab-ci.yml",
        r#".base:
  parallel: 2
  after_script: [echo bye]
  retry: 2
job:
  extends: .base
  parallel: null
  after_script: null
  retry: null
  variables:
    FLAG: {value: true, description: a flag}
    COUNT: 3
  script: [echo "$FLAG $COUNT"]
  artifacts:
    reports:
      coverage_report: {coverage_format: cobertura, path: coverage.xml}
"#,
    )]);
    let out = r.slipway(&["plan", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.debug());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "parallel: null leaves one job: {v}");
    assert_eq!(jobs[0]["name"], "job", "{v}");
    assert!(jobs[0]["after_script"].is_null() && jobs[0]["retry"].is_null(), "{v}");
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(run.log("job")[1], "true 3");
    let bad = r#"job:
  script: [echo]
  artifacts:
    reports:
      coverage_report: {coverage_format: lcov, path: c.info}
"#;
    r.write(".gitlab-ci.yml", bad);
    let out = r.slipway(&["validate"]);
    assert_eq!(out.code, 2, "{}", out.debug());
    assert!(
        out.stderr.contains(".gitlab-ci.yml:5:42") && out.stderr.contains("`coverage_format` cannot be `lcov`"),
        "{}",
        out.debug()
    );
}

/// GitLab's validation where slipway was laxer: a job without `stage` is in `test`, which
/// must then be among the `stages`.
#[test]
fn a_job_in_the_default_stage_needs_test_among_the_stages() {
    let r = Repo::new(&[(
        ".gitlab-ci.yml",
        "stages: [build]\ncompile:\n  stage: build\n  script: [make]\nlint:\n  script: [echo lint]\n",
    )]);
    let out = r.slipway(&["validate"]);
    assert_eq!(out.code, 2, "{}", out.debug());
    assert!(
        out.stderr.contains(".gitlab-ci.yml:5:1")
            && out.stderr.contains("job `lint` has no `stage`, so it is in `test`, which `stages` does not list"),
        "{}",
        out.debug()
    );
    // A valid file whose jobs are all excluded on this branch: valid, with a warning; `run`
    // still refuses to run an empty pipeline.
    r.write(".gitlab-ci.yml", "release:\n  only: [tags]\n  script: [echo release]\n");
    let out = r.slipway(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.debug());
    assert!(out.stderr.contains("warning") && out.stderr.contains("every job was excluded"), "{}", out.debug());
    assert!(out.stdout.contains("is valid; no job runs for this commit"), "{}", out.debug());
    assert_eq!(r.slipway(&["run"]).code, 2);
}

/// GitLab refuses a blank `script` (`[]`, `""`, only blank lines); so does slipway.
#[test]
fn a_blank_script_is_an_error_at_its_place() {
    let r = Repo::new(&[(".gitlab-ci.yml", "empty:\n  script: []\nblank:\n  script: ['  ']\n")]);
    let out = r.slipway(&["validate"]);
    assert_eq!(out.code, 2, "{}", out.debug());
    for want in [
        ".gitlab-ci.yml:2:11",
        "job `empty` has a blank `script`",
        ".gitlab-ci.yml:4:11",
        "job `blank` has a blank `script`",
    ] {
        assert!(out.stderr.contains(want), "{want}: {}", out.debug());
    }
}

/// `needs` and `dependencies` may name one instance of a `parallel` job by its generated
/// name, as GitLab allows; `needs:parallel:matrix` selects instances by their variables.
#[test]
fn needs_name_one_parallel_instance_by_its_generated_name() {
    let r = Repo::new(&[(
        ".gitlab-ci.yml",
        r#"stages: [test, deploy]
test:
  stage: test
  parallel:
    matrix:
      - GO: ["1.22", "1.23"]
        OS: [linux]
  script: [echo "$GO"]
shard:
  stage: test
  parallel: 3
  script: [echo shard]
deploy:
  stage: deploy
  needs:
    - job: test
      parallel:
        matrix:
          - GO: "1.23"
            OS: linux
  script: [echo deploy]
by_name:
  stage: deploy
  needs: ["test: [1.22, linux]", "shard 2/3"]
  dependencies: ["test: [1.22, linux]"]
  script: [echo by name]
"#,
    )]);
    let out = r.slipway(&["plan", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.debug());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let job = |n: &str| v["jobs"].as_array().unwrap().iter().find(|j| j["name"] == n).unwrap().clone();
    assert_eq!(job("deploy")["needs"], serde_json::json!(["test: [1.23, linux]"]), "{v}");
    assert_eq!(job("by_name")["needs"], serde_json::json!(["test: [1.22, linux]", "shard 2/3"]), "{v}");
    assert_eq!(job("by_name")["dependencies"], serde_json::json!(["test: [1.22, linux]"]), "{v}");
    r.write(".gitlab-ci.yml", "test:\n  parallel: 2\n  script: [x]\nnext:\n  needs: [\"test 3/2\"]\n  script: [y]\n");
    let out = r.slipway(&["validate"]);
    assert_eq!(out.code, 2, "{}", out.debug());
    assert!(
        out.stderr.contains("needs `test 3/2`, but `test` has no such instance (it has test 1/2, test 2/2)"),
        "{}",
        out.debug()
    );
}

fn git_in(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn job_names(run: &Run) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.debug()));
    v["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap().to_string()).collect()
}

/// `include:project` reads another project's file at `ref` from beside this repository's
/// `origin` (here rewritten to a local directory with git's own `insteadOf`), and
/// `include:component` a component's template at its version (`~latest`: the highest release
/// tag) with its inputs; both cached so that a project that is gone still plans, with a
/// warning; a missing file names project, file and ref.
#[test]
fn include_project_reads_the_other_repository_at_its_ref_and_caches_it() {
    let base = tempfile::tempdir().unwrap();
    let tools = base.path().join("ci/templates.git");
    std::fs::create_dir_all(tools.join("go")).unwrap();
    git_in(&tools, &["init", "-q", "-b", "main"]);
    std::fs::write(tools.join("go/lint.yml"), "lint-v1:\n  script: [echo v1]\n").unwrap();
    std::fs::create_dir_all(tools.join("templates")).unwrap();
    std::fs::write(
        tools.join("templates/lint.yml"),
        "spec:\n  inputs:\n    stage:\n      default: test\n---\ncomponent-old:\n  stage: $[[ inputs.stage ]]\n  script: [echo old]\n",
    )
    .unwrap();
    git_in(&tools, &["add", "-A"]);
    git_in(&tools, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "v1"]);
    git_in(&tools, &["tag", "v1"]);
    git_in(&tools, &["tag", "1.0.0"]);
    std::fs::write(tools.join("go/lint.yml"), "lint-main:\n  script: [echo main]\n").unwrap();
    // A component in its directory form, in the latest release.
    std::fs::remove_file(tools.join("templates/lint.yml")).unwrap();
    std::fs::create_dir_all(tools.join("templates/lint")).unwrap();
    std::fs::write(tools.join("templates/lint/template.yml"), "component-new:\n  script: [echo new]\n").unwrap();
    git_in(&tools, &["add", "-A"]);
    git_in(&tools, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "main"]);
    git_in(&tools, &["tag", "1.2.0"]);
    let gitconfig = base.path().join("gitconfig");
    std::fs::write(
        &gitconfig,
        format!("[url \"file://{}/\"]\n\tinsteadOf = https://gitlab.example.com/\n", base.path().display()),
    )
    .unwrap();
    let env = [("GIT_CONFIG_GLOBAL", gitconfig.to_str().unwrap())];
    let yaml = "stages: [build, test]\ninclude:\n  - project: ci/templates\n    ref: v1\n    file: go/lint.yml\n  - project: ci/templates\n    file: [/go/lint.yml]\n  - component: gitlab.example.com/ci/templates/lint@1.0.0\n    inputs: {stage: build}\n  - component: $CI_SERVER_FQDN/ci/templates/lint@~latest\nbuild:\n  script: [echo]\n";
    let r = Repo::new(&[(".gitlab-ci.yml", yaml)]);
    r.git(&["remote", "add", "origin", "https://gitlab.example.com/group/app.git"]);
    let plan = r.slipway_env(&["plan", "--format", "json"], &env);
    assert_eq!(plan.code, 0, "{}", plan.debug());
    let names = job_names(&plan);
    for want in ["lint-v1", "lint-main", "component-old", "component-new", "build"] {
        assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
    }
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let old = v["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "component-old").unwrap().clone();
    assert_eq!(old["stage"], "build", "the component's input: {old}");
    // The project is gone: the cached copy, with a warning.
    std::fs::remove_dir_all(&tools).unwrap();
    let plan = r.slipway_env(&["plan", "--format", "json"], &env);
    assert_eq!(plan.code, 0, "{}", plan.debug());
    assert!(
        plan.stderr.contains("could not be fetched") && plan.stderr.contains("using the copy cached"),
        "{}",
        plan.debug()
    );
    assert_eq!(job_names(&plan).len(), 5, "{}", plan.debug());
    // A file the project does not have.
    r.write(
        ".gitlab-ci.yml",
        "include:\n  - project: ci/templates\n    ref: v1\n    file: nope.yml\nbuild:\n  script: [echo]\n",
    );
    let v = r.slipway_env(&["validate"], &env);
    assert_eq!(v.code, 2, "{}", v.debug());
    assert!(v.stderr.contains("`ci/templates` has no file `nope.yml` at `v1`"), "{}", v.debug());
    assert!(v.stderr.contains(".gitlab-ci.yml:4:11"), "{}", v.debug());
    r.write(
        ".gitlab-ci.yml",
        "include:\n  - component: gitlab.example.com/ci/templates/lint\nbuild:\n  script: [echo]\n",
    );
    let v = r.slipway_env(&["validate"], &env);
    assert_eq!(v.code, 2, "{}", v.debug());
    assert!(v.stderr.contains("has no version"), "{}", v.debug());
}

/// A loopback HTTPS server with its own CA, serving `dir`; `/slow.yml` answers after 5 s.
struct Https {
    child: std::process::Child,
    addr: String,
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn https(dir: &std::path::Path, certs: &std::path::Path) -> Https {
    let addr = free_addr();
    let (host, port) = addr.split_once(':').unwrap();
    let script = format!(
        r#"
import http.server, ssl, time, os
os.chdir({dir:?})
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow.yml":
            time.sleep(5)
        return super().do_GET()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(({host:?}, {port}), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain({cert:?}, {key:?})
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#,
        dir = dir.display().to_string(),
        cert = certs.join("cert.pem").display().to_string(),
        key = certs.join("key.pem").display().to_string(),
    );
    let child = std::process::Command::new("python3").args(["-c", &script]).spawn().unwrap();
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "the HTTPS server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Https { child, addr }
}

/// `include:remote` over HTTPS: trusted through `SSL_CERT_FILE` (refused without, saying
/// why), cached for when the server is down, and bounded by a timeout.
#[test]
fn include_remote_fetches_over_https_with_a_cache_and_a_timeout() {
    let certs = tempfile::tempdir().unwrap();
    common::registry::test_ca(certs.path());
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("ci.yml"), "remote-job:\n  script: [echo remote]\n").unwrap();
    std::fs::write(served.path().join("slow.yml"), "slow-job:\n  script: [echo]\n").unwrap();
    let server = https(served.path(), certs.path());
    let yaml = format!("include:\n  - remote: https://{}/ci.yml\nbuild:\n  script: [echo]\n", server.addr);
    let r = Repo::new(&[(".gitlab-ci.yml", &yaml)]);
    let ca = certs.path().join("ca.pem");
    let trusted = [("SSL_CERT_FILE", ca.to_str().unwrap())];

    let untrusted = r.slipway(&["validate"]);
    assert_eq!(untrusted.code, 2, "{}", untrusted.debug());
    assert!(
        untrusted.stderr.contains("cannot read included file") && untrusted.stderr.contains("certificate"),
        "{}",
        untrusted.debug()
    );
    let plan = r.slipway_env(&["plan", "--format", "json"], &trusted);
    assert_eq!(plan.code, 0, "{}", plan.debug());
    assert_eq!(job_names(&plan), ["remote-job", "build"], "{}", plan.debug());
    // The server goes: the cached copy, with a warning.
    drop(server);
    let plan = r.slipway_env(&["plan", "--format", "json"], &trusted);
    assert_eq!(plan.code, 0, "{}", plan.debug());
    assert!(plan.stderr.contains("using the copy cached"), "{}", plan.debug());
    // A server that does not answer in time.
    let server = https(served.path(), certs.path());
    r.write(".gitlab-ci.yml", &format!("include: https://{}/slow.yml\nbuild:\n  script: [echo]\n", server.addr));
    let t = std::time::Instant::now();
    let v = r.slipway_env(&["validate"], &[trusted[0], ("SLIPWAY_INCLUDE_TIMEOUT", "1")]);
    assert_eq!(v.code, 2, "{}", v.debug());
    assert!(t.elapsed() < std::time::Duration::from_secs(4), "the timeout did not apply: {:?}", t.elapsed());
    assert!(v.stderr.contains("no answer within 1 s"), "{}", v.debug());
    assert!(v.stderr.contains(".gitlab-ci.yml:1:10"), "{}", v.debug());
}

/// `include:rules` decide at load time with GitLab's rule semantics: the predefined
/// variables, the file's global ones and the run's `--var`s, `exists` on the project's files,
/// `when: never`; no rule matching leaves the file out; a job-only `when` is an error. The same
/// variables expand in `include:local` paths.
#[test]
fn include_rules_decide_with_the_runs_variables_and_files() {
    let yaml = r#"variables:
  DEPLOY_KIND: docker
include:
  - local: ci/docker.yml
    rules:
      - if: $DEPLOY_KIND == "docker"
  - local: ci/never.yml
    rules:
      - if: $CI_COMMIT_BRANCH == "main"
        when: never
      - when: always
  - local: ci/go.yml
    rules:
      - exists: [go.mod]
  - local: ci/extra.yml
    rules:
      - if: $EXTRA
  - local: ci/${DEPLOY_KIND}-extra.yml
build:
  script: [echo]
"#;
    let job = |name: &str| format!("{name}:\n  script: [echo]\n");
    let r = Repo::new(&[
        (".gitlab-ci.yml", yaml),
        ("go.mod", "module x\n"),
        ("ci/docker.yml", &job("docker-job")),
        ("ci/never.yml", &job("never-job")),
        ("ci/go.yml", &job("go-job")),
        ("ci/extra.yml", &job("extra-job")),
        ("ci/docker-extra.yml", &job("docker-extra-job")),
        ("ci/ssh-extra.yml", &job("ssh-extra-job")),
    ]);
    let plan = r.slipway(&["plan", "--format", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.debug());
    assert_eq!(job_names(&plan), ["docker-job", "go-job", "docker-extra-job", "build"], "{}", plan.debug());
    let plan = r.slipway(&["plan", "--format", "json", "--var", "EXTRA=yes", "--var", "DEPLOY_KIND=ssh"]);
    assert_eq!(plan.code, 0, "{}", plan.debug());
    assert_eq!(job_names(&plan), ["go-job", "extra-job", "ssh-extra-job", "build"], "{}", plan.debug());
    r.write(
        ".gitlab-ci.yml",
        "include:\n  - local: ci/go.yml\n    rules:\n      - when: manual\nbuild:\n  script: [echo]\n",
    );
    let v = r.slipway(&["validate"]);
    assert_eq!(v.code, 2, "{}", v.debug());
    assert!(v.stderr.contains("manual") && v.stderr.contains(".gitlab-ci.yml:4:"), "{}", v.debug());
}
