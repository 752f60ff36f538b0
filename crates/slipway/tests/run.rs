//! `slipway run` end to end on real bash and git: GitLab's job semantics, workspaces,
//! artifacts, dotenv, cache, masking, retries, timeouts and process groups.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use common::*;

#[test]
fn stage_order_failure_when_and_allow_failure_match_gitlab() {
    let r = Repo::new(&[(
        ".gitlab-ci.yml",
        r#"
stages: [build, test, deploy]
compile:
  stage: build
  script: echo compiled
lint:
  stage: test
  script: exit 3
  allow_failure: {exit_codes: [3]}
unit:
  stage: test
  script:
    - echo before
    - "false"
    - echo never printed
deploy:
  stage: deploy
  script: echo deploying
cleanup:
  stage: deploy
  when: always
  script: echo cleanup
notify:
  stage: deploy
  when: on_failure
  script: echo notify
"#,
    )]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert_eq!(
        run.statuses(),
        st(&[
            ("compile", "success"),
            ("lint", "allowed_failure"),
            ("unit", "failed"),
            ("deploy", "skipped"),
            ("cleanup", "success"),
            ("notify", "success")
        ])
    );
    let unit = run.log("unit");
    assert_eq!(unit, vec!["$ echo before", "before", "$ false"], "stops at the first failing command");
    let fin = run.finished();
    assert_eq!(fin["status"], "failed");
    let unit_job = fin["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "unit").unwrap().clone();
    assert_eq!(unit_job["exit_code"], 1);
    assert!(unit_job["duration_ms"].as_u64().is_some());
}

#[test]
fn needs_dag_dependencies_and_artifacts() {
    let r = Repo::new(&[
        ("src.txt", "source\n"),
        (
            ".slipway.yml",
            r#"
stages: [build, test]
make:
  stage: build
  script:
    - mkdir -p out
    - cp src.txt out/bin.txt
    - echo scratch > not-an-artifact.txt
    - echo log > out/debug.log
  artifacts:
    paths: [out/]
    exclude: ["out/*.log"]
check:
  stage: test
  needs: [make]
  script:
    - cat out/bin.txt
    - test ! -e out/debug.log
    - test ! -e not-an-artifact.txt
no_artifacts:
  stage: test
  needs: [{job: make, artifacts: false}]
  script:
    - test ! -e out/bin.txt
early:
  stage: test
  needs: []
  script: echo early
"#,
        ),
    ]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(run.log("check")[1], "source");
    // The user's tree is untouched by jobs.
    assert!(!r.path().join("out").exists());
    assert!(!r.path().join("not-an-artifact.txt").exists());
    // Artifacts are kept in the run directory.
    assert!(r.path().join(".slipway/runs/1/artifacts/make/out/bin.txt").is_file());
    assert!(!r.path().join(".slipway/runs/1/artifacts/make/out/debug.log").exists());
}

#[test]
fn jobs_never_change_the_users_files() {
    let r = Repo::new(&[
        ("data.txt", "original\n"),
        (
            ".slipway.yml",
            "clobber:\n  script:\n    - echo changed > data.txt\n    - rm -f .slipway.yml\n    - git status --short\n",
        ),
    ]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(std::fs::read_to_string(r.path().join("data.txt")).unwrap(), "original\n");
    assert!(r.path().join(".slipway.yml").exists());
    // git works inside the workspace and sees the job's own changes only.
    let log = run.log("clobber");
    assert!(log.iter().any(|l| l.contains("M data.txt")), "{log:?}");
    assert!(r.git(&["status", "--short"]).is_empty() || !r.git(&["status", "--short"]).contains("data.txt"));
}

#[test]
fn untracked_files_are_in_the_workspace_ignored_ones_are_not() {
    let r = Repo::new(&[
        (".gitignore", "secret.env\nbuild/\n"),
        (
            ".slipway.yml",
            "look:\n  script:\n    - test -f new.txt\n    - test ! -e secret.env\n    - test ! -e build\n",
        ),
    ]);
    r.write("new.txt", "untracked\n");
    r.write("secret.env", "X=1\n");
    r.write("build/big.bin", "x");
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
}

#[test]
fn dotenv_reports_pass_variables_to_later_jobs() {
    let r = Repo::new(&[(
        ".slipway.yml",
        r#"
stages: [build, deploy]
version:
  stage: build
  script:
    - echo "APP_VERSION=1.2.3" > build.env
    - echo 'QUOTED="two words"' >> build.env
  artifacts:
    reports:
      dotenv: build.env
deploy:
  stage: deploy
  script:
    - echo "deploying $APP_VERSION ($QUOTED)"
"#,
    )]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert!(run.log("deploy").contains(&"deploying 1.2.3 (two words)".to_string()), "{:?}", run.log("deploy"));
}

#[test]
fn cache_is_restored_in_the_next_run_and_key_files_change_the_key() {
    let r = Repo::new(&[
        ("deps.lock", "v1\n"),
        (
            ".slipway.yml",
            r#"
build:
  cache:
    key:
      files: [deps.lock]
      prefix: deps
    paths: [.deps/]
  script:
    - if [ -f .deps/stamp ]; then echo "cache hit $(cat .deps/stamp)"; else echo "cache miss"; fi
    - mkdir -p .deps && echo "$CI_PIPELINE_ID" > .deps/stamp
"#,
        ),
    ]);
    let first = r.slipway(&["run", "--json"]);
    assert_eq!(first.code, 0, "{}", first.debug());
    assert!(first.log("build").contains(&"cache miss".to_string()));
    let second = r.slipway(&["run", "--json"]);
    assert!(second.log("build").contains(&"cache hit 1".to_string()), "{:?}", second.log("build"));
    r.write("deps.lock", "v2\n");
    let third = r.slipway(&["run", "--json"]);
    assert!(third.log("build").contains(&"cache miss".to_string()), "a new lock file means a new key");
}

#[test]
fn secrets_are_masked_even_when_split_across_writes() {
    let r = Repo::new(&[(
        ".slipway.yml",
        r#"
variables:
  FROM_FILE:
    value: yaml-masked-value-42
    masked: true
leak:
  script:
    - echo "token is $API_TOKEN and $FROM_FILE"
    - printf '%s' "${API_TOKEN:0:5}"; sleep 0.3; printf '%s\n' "${API_TOKEN:5}"
    - echo "file secret $DB_PASSWORD" >&2
cached:
  cache:
    key: deps-$FROM_FILE-$API_TOKEN
    fallback_keys: [old-$API_TOKEN]
    paths: [deps/]
  script:
    - mkdir -p deps && echo kept > deps/f
"#,
    )]);
    r.write("secrets.env", "DB_PASSWORD=correct-horse-battery\n");
    let secrets = r.path().join("secrets.env");
    let run = r.slipway(&[
        "run",
        "--json",
        "--secret",
        "API_TOKEN=glpat-s3cr3t-t0ken",
        "--secret-file",
        secrets.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.debug());
    for text in [
        run.stdout.clone(),
        run.stderr.clone(),
        std::fs::read_to_string(r.path().join(".slipway/runs/1/logs/leak.log")).unwrap(),
    ] {
        assert!(
            !text.contains("glpat-s3cr3t-t0ken") && !text.contains("correct-horse-battery"),
            "secret leaked:\n{text}"
        );
    }
    // A second run restores the cache: its notices, the recorded plan and every name and
    // file of the run records and the cache hold no secret either.
    let again = r.slipway(&["run", "--json", "--secret", "API_TOKEN=glpat-s3cr3t-t0ken"]);
    assert_eq!(again.code, 0, "{}", again.debug());
    let cached = std::fs::read_to_string(r.path().join(".slipway/runs/2/logs/cached.log")).unwrap();
    assert!(cached.contains("Restoring cache `masked-"), "{cached}");
    fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let text = if p.is_dir() {
                String::new()
            } else {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            };
            out.push((p.display().to_string(), text));
            if p.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut records = Vec::new();
    walk(&r.path().join(".slipway/runs"), &mut records);
    walk(&r.path().join(".slipway/cache"), &mut records);
    assert!(
        records.iter().any(|(p, _)| p.ends_with("plan.json")) && records.iter().any(|(p, _)| p.contains("masked-"))
    );
    for (path, text) in &records {
        for secret in ["glpat-s3cr3t-t0ken", "yaml-masked-value-42", "correct-horse-battery"] {
            assert!(!path.contains(secret) && !text.contains(secret), "`{secret}` in {path}");
        }
    }
    for text in [&again.stdout, &again.stderr] {
        assert!(!text.contains("glpat-s3cr3t-t0ken") && !text.contains("yaml-masked-value-42"), "{text}");
    }
    let log = run.log("leak");
    assert!(log.contains(&"token is [MASKED] and [MASKED]".to_string()), "{log:?}");
    assert!(log.contains(&"[MASKED]".to_string()), "split secret masked: {log:?}");
    assert!(log.contains(&"file secret [MASKED]".to_string()));
    let short = r.slipway(&["run", "--secret", "X=short"]);
    assert_eq!(short.code, 2);
    assert!(short.stderr.contains("shorter than 8 characters"));
}

#[test]
fn after_script_runs_in_a_fresh_shell_even_on_failure() {
    let r = Repo::new(&[(
        ".slipway.yml",
        r#"
job:
  before_script:
    - export FROM_SCRIPT=yes
  script:
    - exit 7
  after_script:
    - echo "status=$CI_JOB_STATUS from_script=${FROM_SCRIPT:-unset}"
    - exit 1
"#,
    )]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 1);
    assert!(run.log("job").contains(&"status=failed from_script=unset".to_string()), "{:?}", run.log("job"));
    let fin = run.finished();
    assert_eq!(fin["jobs"][0]["exit_code"], 7, "after_script's failure does not change the job's result");
}

#[test]
fn retry_reruns_a_flaky_job_and_honours_exit_codes() {
    let marker = tempfile::tempdir().unwrap();
    let m = marker.path().join("seen");
    let yaml = format!(
        r#"
flaky:
  retry: {{max: 2, when: script_failure}}
  script:
    - if [ ! -f {m} ]; then touch {m}; echo first attempt fails; exit 1; fi
    - echo second attempt passes
never_retried:
  retry: {{max: 2, exit_codes: [137]}}
  allow_failure: true
  script: exit 1
"#,
        m = m.display()
    );
    let r = Repo::new(&[(".slipway.yml", &yaml)]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let started: Vec<(String, u64)> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "job_started")
        .map(|e| (e["job"].as_str().unwrap().to_string(), e["attempt"].as_u64().unwrap()))
        .collect();
    assert!(started.contains(&("flaky".into(), 2)));
    assert!(!started.contains(&("never_retried".into(), 2)), "exit code 1 is not in retry:exit_codes");
    assert_eq!(run.statuses(), st(&[("flaky", "success"), ("never_retried", "allowed_failure")]));
}

#[test]
fn timeout_stops_the_whole_process_group() {
    let marker = format!("slipway-orphan-{}", std::process::id());
    let yaml =
        format!("slow:\n  timeout: 2s\n  script:\n    - bash -c 'exec -a {marker} sleep 300' &\n    - sleep 300\n");
    let r = Repo::new(&[(".slipway.yml", &yaml)]);
    let t = std::time::Instant::now();
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert!(t.elapsed().as_secs() < 30);
    let fin = run.finished();
    assert_eq!(fin["jobs"][0]["status"], "failed");
    assert!(run.stdout.contains("timed out after"), "{}", run.debug());
    assert!(!process_with(&marker), "a background process outlived its job");
}

#[test]
fn background_processes_do_not_outlive_a_successful_job() {
    let marker = format!("slipway-bg-{}", std::process::id());
    let yaml = format!("job:\n  script:\n    - bash -c 'exec -a {marker} sleep 300' &\n    - echo done\n");
    let r = Repo::new(&[(".slipway.yml", &yaml)]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert!(!process_with(&marker));
}

#[test]
fn parallel_and_matrix_expand_with_node_variables() {
    let r = Repo::new(&[(
        ".slipway.yml",
        r#"
stages: [build, test]
build:
  stage: build
  parallel:
    matrix:
      - GOOS: [linux, darwin]
        GOARCH: [amd64, arm64]
  script: echo "$GOOS/$GOARCH $CI_NODE_INDEX/$CI_NODE_TOTAL"
shard:
  stage: test
  parallel: 2
  needs:
    - job: build
      parallel:
        matrix:
          - GOOS: linux
            GOARCH: amd64
  script: echo "shard $CI_NODE_INDEX of $CI_NODE_TOTAL"
"#,
    )]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let names: Vec<String> = run.statuses().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        vec![
            "build: [linux, amd64]",
            "build: [linux, arm64]",
            "build: [darwin, amd64]",
            "build: [darwin, arm64]",
            "shard 1/2",
            "shard 2/2"
        ]
    );
    assert_eq!(run.log("build: [darwin, arm64]")[1], "darwin/arm64 4/4");
    assert_eq!(run.log("shard 2/2")[1], "shard 2 of 2");
    let plan = r.slipway(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(list[4]["needs"], serde_json::json!(["build: [linux, amd64]"]));
}

#[test]
fn rules_workflow_only_except_and_variables() {
    let r = Repo::new(&[
        ("go.mod", "module x\n"),
        (
            ".slipway.yml",
            r#"
workflow:
  rules:
    - if: $CI_COMMIT_MESSAGE =~ /skip-ci/
      when: never
    - when: always
variables:
  TARGET: world
  GREETING: "hello $TARGET"
  LITERAL:
    value: "$TARGET"
    expand: false
on_main:
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH && $CI_PIPELINE_SOURCE == "push"
      variables: {WHERE: main}
  script: echo "$GREETING $LITERAL $WHERE"
on_tag:
  rules:
    - if: $CI_COMMIT_TAG
  script: echo tag
has_gomod:
  rules:
    - exists: [go.mod]
  script: echo go
docs_changed:
  rules:
    - changes: ["docs/**/*"]
  script: echo docs
manual_deploy:
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
      when: manual
  script: echo deploy
legacy:
  only: [main]
  except:
    variables: [$SKIP_LEGACY]
  script: echo legacy
"#,
        ),
    ]);
    r.write("src/a.txt", "x");
    r.commit("second commit");
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(
        run.statuses(),
        st(&[("on_main", "success"), ("has_gomod", "success"), ("manual_deploy", "manual"), ("legacy", "success")])
    );
    assert_eq!(run.log("on_main")[1], "hello world $TARGET main");

    let run = r.slipway(&["run", "--json", "--var", "SKIP_LEGACY=1", "--manual", "manual_deploy"]);
    assert_eq!(run.statuses(), st(&[("on_main", "success"), ("has_gomod", "success"), ("manual_deploy", "success")]));

    r.write("docs/guide/intro.md", "x");
    r.commit("docs change");
    let run = r.slipway(&["run", "--json"]);
    assert!(run.statuses().iter().any(|(n, _)| n == "docs_changed"), "{:?}", run.statuses());

    r.write("x", "y");
    r.commit("please skip-ci");
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("workflow:rules"), "{}", run.debug());
}

#[test]
fn predefined_variables_come_from_git() {
    let r = Repo::new(&[(
        ".slipway.yml",
        "vars:\n  script:\n    - echo \"$CI $CI_COMMIT_SHA $CI_COMMIT_SHORT_SHA $CI_COMMIT_BRANCH $CI_COMMIT_REF_SLUG $CI_DEFAULT_BRANCH $CI_JOB_NAME $CI_JOB_STAGE $CI_PIPELINE_SOURCE ${GITLAB_CI:-nogitlab}\"\n    - echo \"$CI_COMMIT_MESSAGE\"\n    - test \"$CI_PROJECT_DIR\" = \"$PWD\"\n",
    )]);
    r.git(&["checkout", "-q", "-b", "Feature/Thing_1"]);
    let sha = r.git(&["rev-parse", "HEAD"]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(
        run.log("vars")[1],
        format!("true {sha} {} Feature/Thing_1 feature-thing-1 main vars test push nogitlab", &sha[..8])
    );
    assert_eq!(run.log("vars")[3], "initial commit");
}

#[test]
fn include_extends_and_reference_compose() {
    let r = Repo::new(&[
        (
            "ci/templates/base.yml",
            ".base:\n  variables:\n    A: from-base\n    B: from-base\n  before_script:\n    - echo setup\n",
        ),
        ("ci/templates/more.yml", ".more:\n  extends: .base\n  variables:\n    B: from-more\n"),
        // Included last: an empty file (only a comment) keeps what came before it.
        ("ci/templates/zz-empty.yml", "# nothing here yet\n"),
        (
            ".slipway.yml",
            r#"
include:
  - local: ci/templates/*.yml
.scripts:
  hello:
    - echo "A=$A B=$B C=$C"
job:
  extends: [.more]
  variables:
    C: from-job
  script:
    - !reference [.scripts, hello]
    - echo done
"#,
        ),
    ]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(
        run.log("job"),
        vec![
            "$ echo setup",
            "setup",
            "$ echo \"A=$A B=$B C=$C\"",
            "A=from-base B=from-more C=from-job",
            "$ echo done",
            "done"
        ]
    );
}

#[test]
fn selected_jobs_and_needs_flag() {
    let r = Repo::new(&[(
        ".slipway.yml",
        "stages: [a, b]\none:\n  stage: a\n  script: echo one\ntwo:\n  stage: b\n  needs: [one]\n  script: echo two\nthree:\n  stage: b\n  script: echo three\n",
    )]);
    let run = r.slipway(&["run", "--json", "two"]);
    assert_eq!(run.statuses(), st(&[("two", "success")]));
    let run = r.slipway(&["run", "--json", "--needs", "two"]);
    assert_eq!(run.statuses(), st(&[("one", "success"), ("two", "success")]));
    let bad = r.slipway(&["run", "tow"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("did you mean `two`?"), "{}", bad.debug());
}

#[test]
fn delayed_jobs_wait_for_start_in() {
    let r = Repo::new(&[(".slipway.yml", "later:\n  when: delayed\n  start_in: 1 second\n  script: echo later\n")]);
    let t = std::time::Instant::now();
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert!(t.elapsed() >= std::time::Duration::from_secs(1));
}

#[test]
fn image_jobs_run_on_the_shell_executor_when_told_or_are_refused_with_strict() {
    let r = Repo::new(&[(".gitlab-ci.yml", "test:\n  image: golang:1.25\n  script: echo ran\n")]);
    let run = r.slipway(&["run", "--executor", "shell"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert!(run.stderr.contains("running it on the shell executor (--executor shell)"), "{}", run.debug());
    let strict = r.slipway(&["run", "--strict", "--executor", "shell"]);
    assert_eq!(strict.code, 2);
    assert!(strict.stderr.contains("`--executor shell` runs on this machine"), "{}", strict.debug());
}

#[test]
fn runs_are_recorded_and_logs_can_be_read_back() {
    let r = Repo::new(&[(".slipway.yml", "hello:\n  script: echo hello from the log\n")]);
    let run = r.slipway(&["run"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert!(run.stdout.contains("JOB"), "summary table: {}", run.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.path().join(".slipway/runs/1/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "success");
    assert!(r.path().join(".slipway/runs/1/plan.json").is_file());
    let logs = r.slipway(&["logs", "hello"]);
    assert!(logs.stdout.contains("hello from the log"), "{}", logs.debug());
    let logs = r.slipway(&["logs", "1", "hello"]);
    assert_eq!(logs.code, 0);
    let missing = r.slipway(&["logs", "helo"]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("did you mean `hello`?"));
    // .slipway/ is ignored by git automatically.
    assert!(!r.git(&["status", "--short"]).contains(".slipway"));
}

#[test]
fn concurrency_limit_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let yaml: String = (0..6)
        .map(|i| format!("j{i}:\n  script:\n    - n=$(ls {d} | wc -l); echo $n; touch {d}/$CI_JOB_NAME; sleep 0.3; rm {d}/$CI_JOB_NAME\n"))
        .collect();
    let r = Repo::new(&[(".slipway.yml", &yaml)]);
    let run = r.slipway(&["run", "--json", "-j", "2"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    for i in 0..6 {
        let seen: u32 = run.log(&format!("j{i}"))[1].parse().unwrap();
        assert!(seen <= 1, "more than 2 jobs ran at once");
    }
}

#[test]
fn reused_workspaces_are_as_fresh_as_new_ones() {
    let r = Repo::new(&[
        ("data.txt", "original\n"),
        ("tool.sh", "echo tool\n"),
        (
            ".slipway.yml",
            r#"
job:
  script:
    - cat data.txt
    - test -x tool.sh && echo executable || echo not-executable
    - test ! -e leftover.txt && test ! -d build && test ! -e .git/refs/tags/job-tag
    - echo scribble > data.txt
    - echo junk > leftover.txt
    - mkdir -p build/deep && echo out > build/deep/o
    - rm tool.sh && mkdir tool.sh
    - git tag job-tag
"#,
        ),
    ]);
    let first = r.slipway(&["run", "--json"]);
    assert_eq!(first.code, 0, "{}", first.debug());
    assert_eq!(first.log("job")[1], "original");
    assert!(first.log("job").contains(&"not-executable".to_string()));
    // The user changes a file and a mode between runs.
    r.write("data.txt", "edited by the user\n");
    std::fs::set_permissions(r.path().join("tool.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let second = r.slipway(&["run", "--json"]);
    assert_eq!(second.code, 0, "{}", second.debug());
    assert_eq!(second.log("job")[1], "edited by the user");
    assert!(second.log("job").contains(&"executable".to_string()));
    let third = r.slipway(&["run", "--json"]);
    assert_eq!(third.code, 0, "the job's own changes are undone before the next run: {}", third.debug());
    assert!(!r.git(&["tag"]).contains("job-tag"), "tags made in a job stay out of the project");
    let notice = third.events().into_iter().find(|e| e["event"] == "job_notice").unwrap();
    assert!(notice["message"].as_str().unwrap().contains("removed"), "{notice}");
}

#[test]
fn pre_and_post_stages_wrap_the_pipeline() {
    let r = Repo::new(&[(
        ".slipway.yml",
        "stages: [build]\nlast:\n  stage: .post\n  script: echo last\nmiddle:\n  stage: build\n  script: echo middle\nfirst:\n  stage: .pre\n  script: echo first\n",
    )]);
    let run = r.slipway(&["run", "--json", "-j", "4"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let order: Vec<String> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "job_finished")
        .map(|e| e["job"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, vec!["first", "middle", "last"]);
}

#[test]
fn leftovers_of_an_interrupted_run_are_repaired() {
    let r = Repo::new(&[(".slipway.yml", "job:\n  script: echo ok\n")]);
    let stale_ws = r.path().join(".slipway/runs/41/ws/job");
    std::fs::create_dir_all(&stale_ws).unwrap();
    std::fs::write(stale_ws.join("f"), "x").unwrap();
    let stale_cache = r.path().join(".slipway/cache/.tmp-999999999-key");
    std::fs::create_dir_all(&stale_cache).unwrap();
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert!(!stale_ws.exists() && !stale_cache.exists());
    assert_eq!(run.finished()["run_id"], 42);
}

#[test]
fn works_from_a_subdirectory_and_for_a_project_inside_a_repository() {
    let r = Repo::new(&[
        (".slipway.yml", "top:\n  script: echo top\n"),
        ("src/deep/file.txt", "x"),
        ("services/api/.gitignore", "build/\n"),
        (
            "services/api/.slipway.yml",
            "api:\n  script:\n    - test -f main.txt\n    - test ! -e build\n    - test ! -e ../../.slipway.yml\n",
        ),
        ("services/api/main.txt", "x"),
    ]);
    r.write("services/api/build/out.bin", "ignored");
    let from_sub = slipway_in(&r.path().join("src/deep"), &["run", "--json"]);
    assert_eq!(from_sub.code, 0, "{}", from_sub.debug());
    assert_eq!(from_sub.statuses(), st(&[("top", "success")]));
    assert!(r.path().join(".slipway/runs/1").is_dir(), "the run is recorded at the project root");
    let nested = slipway_in(&r.path().join("services/api"), &["run", "--json"]);
    assert_eq!(nested.code, 0, "{}", nested.debug());
    assert_eq!(nested.statuses(), st(&[("api", "success")]));
}

/// Regression: a job whose name was longer than a file name may be failed on its log file.
/// GitLab allows 255 characters, and long `parallel:matrix` names are common.
#[test]
fn jobs_with_gitlabs_longest_names_run_and_keep_their_logs() {
    let long = format!("deploy {}", "x".repeat(248));
    assert_eq!(long.chars().count(), 255);
    let matrix_value = "v".repeat(200);
    let yaml = format!(
        "\"{long}\":\n  script: echo long\nmatrix:\n  parallel:\n    matrix:\n      - REGION: [\"{matrix_value}-a\", \"{matrix_value}-b\"]\n  script: echo \"$REGION\" | rev | cut -c1\n"
    );
    let r = Repo::new(&[(".slipway.yml", &yaml)]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(run.statuses().len(), 3);
    assert!(run.statuses().iter().all(|(_, s)| s == "success"), "{:?}", run.statuses());
    let log = r.slipway(&["logs", &long]);
    assert_eq!(log.code, 0, "{}", log.debug());
    assert!(log.stdout.contains("long"), "{}", log.stdout);
    // Two matrix jobs whose names differ only at the end keep logs of their own.
    let a = r.slipway(&["logs", &format!("matrix: [{matrix_value}-a]")]);
    let b = r.slipway(&["logs", &format!("matrix: [{matrix_value}-b]")]);
    assert_eq!((a.code, b.code), (0, 0), "{}{}", a.debug(), b.debug());
    // (Their timings may match to the tenth of a millisecond; their last lines do not.)
    assert_eq!((a.stdout.lines().last(), b.stdout.lines().last()), (Some("a"), Some("b")), "{}{}", a.stdout, b.stdout);
}

/// CI/CD inputs (GitLab's `spec:inputs`): an included file's header declares inputs with
/// types, defaults, options and a regex; `include: inputs:` gives them; `$[[ inputs.x ]]` is
/// interpolated in job names and values (a whole value keeps its type: `parallel` gets a
/// number) with `truncate`; the main file's own header is read with its defaults; bad values
/// are errors at their place.
#[test]
fn inputs_are_declared_given_checked_and_interpolated() {
    let deploy = r#"spec:
  inputs:
    env:
      options: [dev, prod]
    stage:
      default: test
    replicas:
      type: number
      default: 2
    tag:
      regex: ^v\d+
      default: v12
---
deploy-$[[ inputs.env ]]:
  stage: $[[ inputs.stage ]]
  parallel: $[[ inputs.replicas ]]
  script:
    - echo "to $[[ inputs.env ]] $[[ inputs.tag | truncate(0,2) ]]"
"#;
    let main = "spec:\n  inputs:\n    greeting:\n      default: hello\n---\ninclude:\n  - local: ci/deploy.yml\n    inputs: {env: prod}\nhi:\n  script:\n    - echo \"$[[ inputs.greeting ]]\"\n";
    let r = Repo::new(&[("ci/deploy.yml", deploy), (".gitlab-ci.yml", main)]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let names: Vec<String> = run.statuses().into_iter().map(|(n, s)| format!("{n}={s}")).collect();
    assert_eq!(names, ["deploy-prod 1/2=success", "deploy-prod 2/2=success", "hi=success"], "{}", run.debug());
    assert_eq!(run.log("hi")[1], "hello");
    assert_eq!(run.log("deploy-prod 1/2")[1], "to prod v1");
    // An option not allowed, a wrong type, an unknown input; then a required one left out.
    r.write(
        ".gitlab-ci.yml",
        "include:\n  - local: ci/deploy.yml\n    inputs: {env: qa, replicas: many, colour: red}\n",
    );
    let v = r.slipway(&["validate"]);
    assert_eq!(v.code, 2, "{}", v.debug());
    for want in [
        ".gitlab-ci.yml:3:19",
        "input `env` cannot be `qa`",
        "its options: dev, prod",
        "input `replicas` is a number, not a string",
        "unknown input `colour`",
    ] {
        assert!(v.stderr.contains(want), "{want}: {}", v.debug());
    }
    r.write(".gitlab-ci.yml", "include:\n  - local: ci/deploy.yml\n");
    let v = r.slipway(&["validate"]);
    assert_eq!(v.code, 2, "{}", v.debug());
    assert!(v.stderr.contains("input `env` is required (it has no default)"), "{}", v.debug());
    // An input nobody declares, in a file without a header.
    r.write(".gitlab-ci.yml", "job:\n  script:\n    - echo $[[ inputs.nope ]]\n");
    let v = r.slipway(&["validate"]);
    assert_eq!(v.code, 2, "{}", v.debug());
    assert!(
        v.stderr.contains("unknown input `nope`") && v.stderr.contains("add a `spec:inputs` header"),
        "{}",
        v.debug()
    );
}

/// The lines slipway wrote about `job` (a trigger job's child pipeline appears there).
fn notices(run: &Run, job: &str) -> Vec<String> {
    run.events()
        .iter()
        .filter(|e| e["event"] == "job_notice" && e["job"] == job)
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

/// `trigger:include` runs a child pipeline: from a file of the project or from an artifact
/// an earlier job generated (and `needs:pipeline` takes the parent's artifacts); GitLab's variables go down (`forward`), `strategy: depend` takes
/// the child's status, the child's record is nested in the JSON and the table, a child may
/// have a child of its own and no deeper.
#[test]
fn trigger_jobs_run_child_pipelines_nested_in_the_run() {
    let parent = r#"stages: [gen, trigger]
variables:
  GLOBAL: from-parent
generate:
  stage: gen
  script:
    - |
      printf 'dyn-job:\n  script: [echo "dynamic sees $GLOBAL"]\n' > dynamic.yml
  artifacts:
    paths: [dynamic.yml]
static-child:
  stage: trigger
  variables:
    TO_CHILD: hello
    PARENT_PIPELINE_ID: $CI_PIPELINE_ID
  trigger:
    include: ci/child.yml
    strategy: depend
    forward:
      pipeline_variables: true
dynamic-child:
  stage: trigger
  needs: [generate]
  trigger:
    include:
      - artifact: dynamic.yml
        job: generate
"#;
    let child = r#"child-a:
  needs:
    - pipeline: $PARENT_PIPELINE_ID
      job: generate
  script:
    - echo "a got $TO_CHILD, $GLOBAL, $FROM_CLI from $CI_PIPELINE_SOURCE"
    - test -f dynamic.yml && echo "the parent's artifact is here"
grandchild:
  trigger:
    include: ci/grandchild.yml
    forward: {yaml_variables: false}
"#;
    let grandchild = "deep:\n  script: ['echo \"deep: ${TO_CHILD:-not forwarded} $CI_PIPELINE_SOURCE\"']\ntoo-deep:\n  trigger: {include: ci/grandchild.yml}\n";
    let r = Repo::new(&[(".gitlab-ci.yml", parent), ("ci/child.yml", child), ("ci/grandchild.yml", grandchild)]);
    let run = r.slipway(&["run", "--json", "--var", "FROM_CLI=cli"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let lines = notices(&run, "static-child");
    for want in [
        "[child-a] a got hello, from-parent, cli from parent_pipeline",
        "[child-a] the parent's artifact is here",
        "[grandchild] [deep] deep: not forwarded parent_pipeline",
        "[grandchild] [too-deep] ERROR: child pipelines nest at most 2 levels deep (GitLab's limit)",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want}: {lines:#?}");
    }
    assert!(
        notices(&run, "dynamic-child").iter().any(|l| l == "[dyn-job] dynamic sees from-parent"),
        "{}",
        run.debug()
    );
    // The child's record, nested in the trigger job's (and in summary.json).
    let done = run.finished();
    let static_child = done["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "static-child").unwrap().clone();
    let jobs = &static_child["child"]["jobs"];
    assert_eq!(jobs[0]["name"], "child-a", "{static_child}");
    assert_eq!(jobs[1]["child"]["jobs"][0]["name"], "deep", "{static_child}");
    // The grandchild's failing trigger does not fail it without `strategy: depend`.
    assert_eq!(jobs[1]["status"], "success", "{static_child}");
    assert_eq!(jobs[1]["child"]["status"], "failed", "{static_child}");
    assert!(r.path().join(".slipway/runs/1/children/static-child/summary.json").is_file());
    assert!(r.path().join(".slipway/runs/1/children/static-child/logs/child-a.log").is_file());

    // strategy: depend takes a failing child's status; the table shows the child's jobs.
    r.write("ci/child.yml", "child-a:\n  script: [exit 3]\n");
    let run = r.slipway(&["run"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert!(run.stdout.contains("└ child-a"), "{}", run.debug());
    assert!(run.stdout.contains(".slipway/runs/2/children/static-child/logs/child-a.log"), "{}", run.debug());
    assert!(run.stdout.contains("the child pipeline failed (strategy: depend)"), "{}", run.debug());
}

/// What a trigger job cannot be is an error at its place.
#[test]
fn trigger_mistakes_are_errors_at_their_place() {
    let r = Repo::new(&[(
        ".gitlab-ci.yml",
        "a:\n  trigger: group/other-project\nb:\n  trigger: {include: c.yml, strategy: mirror}\n  script: [echo]\nc:\n  trigger:\n    include: [{template: Jobs/Build.gitlab-ci.yml}]\n",
    )]);
    let v = r.slipway(&["validate"]);
    assert_eq!(v.code, 2, "{}", v.debug());
    for want in [
        ".gitlab-ci.yml:2:12",
        "`trigger:project` starts another project's pipeline",
        "`trigger:strategy` cannot be `mirror`",
        "job `b` has both `trigger` and `script`",
        "`trigger:include:template` is not supported for child pipelines yet",
    ] {
        assert!(v.stderr.contains(want), "{want}: {}", v.debug());
    }
    // A missing artifact says what is needed.
    r.write(".gitlab-ci.yml", "t:\n  trigger:\n    include: [{artifact: gen.yml, job: nothing}]\n");
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert!(run.stdout.contains("job `nothing` left no artifact `gen.yml`"), "{}", run.debug());
}

/// Variables expand where GitLab expands them: `$CI_PROJECT_DIR/out/` in `artifacts:paths`
/// and `exclude` and `cache:paths` is the workspace's `out/`; `cache:policy: $VAR` takes the
/// variable's value, and a value that is no policy is an error at the keyword.
#[test]
fn artifact_and_cache_paths_and_the_cache_policy_take_variables() {
    let yaml = r#"variables:
  OUT: out
build:
  script:
    - mkdir -p out && echo hi > out/a.txt && echo x > out/b.log
  artifacts:
    paths: [$CI_PROJECT_DIR/out/]
    exclude: ["$CI_PROJECT_DIR/$OUT/*.log"]
  cache:
    key: k-$CI_COMMIT_REF_SLUG
    paths: [$CI_PROJECT_DIR/$OUT/]
    policy: $POLICY
use:
  needs: [build]
  script: [ls out]
"#;
    let r = Repo::new(&[(".gitlab-ci.yml", yaml)]);
    let run = r.slipway(&["run", "--json", "--var", "POLICY=push"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert_eq!(run.log("use"), ["$ ls out", "a.txt"], "{}", run.debug());
    let build = notices(&run, "build");
    assert!(build.iter().any(|l| l == "Saving cache `k-main`: 2 files"), "{build:#?}");
    assert!(!build.iter().any(|l| l.contains("Restoring cache") || l.contains("No cache")), "push only: {build:#?}");
    let bad = r.slipway(&["run", "--var", "POLICY=sometimes"]);
    assert_eq!(bad.code, 2, "{}", bad.debug());
    assert!(bad.stderr.contains("`cache:policy` `$POLICY` is `sometimes` in job `build`"), "{}", bad.debug());
    assert!(bad.stderr.contains(".gitlab-ci.yml:12:13"), "{}", bad.debug());
}
