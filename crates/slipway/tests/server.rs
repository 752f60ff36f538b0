//! `slipway server` with agents as separate processes: projects from real git repositories,
//! pipelines planned on the server and run by agents over the job protocol, logs back on the
//! server, bad input answered with JSON errors, and an agent killed mid-job.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server {
    url: String,
    admin: String,
    data: tempfile::TempDir,
    proc: Option<Proc>,
}

impl Server {
    /// `slipway ARGS --server … --token ADMIN --project P` with `stdin` on standard input.
    fn cli_as_admin(&self, project: &str, args: &[&str], stdin: &str) -> Run {
        let mut c = Command::new(bin());
        c.args(args).args(["--server", &self.url, "--token", &self.admin, "--project", project]);
        c.env("NO_COLOR", "1").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    fn start(lease: &str) -> Server {
        Server::start_with(&["--lease", lease])
    }

    fn start_with(args: &[&str]) -> Server {
        let data = tempfile::Builder::new().prefix("slipway-server-").tempdir().unwrap();
        let mut s = Server { url: String::new(), admin: String::new(), data, proc: None };
        s.launch_with(args);
        s
    }

    fn launch(&mut self, lease: &str) {
        self.launch_with(&["--lease", lease]);
    }

    fn launch_with(&mut self, args: &[&str]) {
        let addr = match self.url.strip_prefix("http://") {
            Some(a) => a.to_string(),
            None => free_addr(),
        };
        let mut child = Command::new(bin())
            .args(["server", "--listen", &addr])
            .args(args)
            .env("SLIPWAY_DATA_DIR", self.data.path())
            .env("NO_COLOR", "1")
            // git reaches files and HTTP only (the tests' git server is on loopback; there is
            // no other to reach), never ssh or git://.
            .env("GIT_ALLOW_PROTOCOL", "file:http")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in out.by_ref() {
            let line = line.unwrap();
            if let Some(t) = line.strip_prefix("admin token (shown once; the server keeps only its hash): ") {
                self.admin = t.to_string();
            }
            if let Some(f) = line.strip_prefix("admin token written to ") {
                let file = f.split(" (").next().unwrap();
                self.admin = std::fs::read_to_string(file).unwrap().trim().to_string();
                assert!(!line.contains("slw_"), "{line}");
            }
            if line.starts_with("slipway server listening on ") {
                break;
            }
        }
        // Whatever it prints later is read, so it never writes to a closed pipe.
        std::thread::spawn(move || out.for_each(drop));
        assert!(!self.admin.is_empty() || self.proc.is_some(), "the first start prints an admin token");
        self.url = format!("http://{addr}");
        self.proc = Some(Proc(child));
    }

    /// `kill -9` of the server: no goodbye, nothing cleaned up (`launch` starts it again).
    fn kill9(&mut self) {
        let mut old = self.proc.take().unwrap();
        old.0.kill().unwrap();
        old.0.wait().unwrap();
        std::mem::forget(old);
    }

    /// The `slipway` CLI against this server as the admin.
    fn cli(&self, args: &[&str]) -> Run {
        Run::from(
            Command::new(bin())
                .args(args)
                .args(["--server", &self.url, "--token", &self.admin])
                .env("NO_COLOR", "1")
                .output()
                .unwrap(),
        )
    }

    /// `curl` with the admin token: (status, body).
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.call_as(Some(&self.admin), method, path, body)
    }

    fn call_as(&self, token: Option<&str>, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", method, "-w", "\n%{http_code}", &format!("{}{path}", self.url)]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            c.args(["-H", "content-type: application/json", "--data-binary", b]);
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Adds the project `name` watching `repo` (as the admin).
    fn add_project(&self, name: &str, repo: &Repo) {
        let body = format!(r#"{{"name": "{name}", "repo": "{}"}}"#, repo.path().display());
        let (code, text) = self.call("POST", "/api/v1/projects", Some(&body));
        assert_eq!(code, 201, "{text}");
    }

    /// Starts a pipeline of `project` (`body`: the trigger's JSON); its id.
    fn trigger(&self, project: &str, body: Option<&str>) -> i64 {
        let (code, text) = self.call("POST", &format!("/api/v1/projects/{project}/pipelines"), body);
        assert_eq!(code, 201, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].as_i64().unwrap()
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.call("GET", path, None);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn agent(&self, name: &str) -> (Proc, tempfile::TempDir) {
        self.agent_with(name, &[])
    }

    fn agent_with(&self, name: &str, args: &[&str]) -> (Proc, tempfile::TempDir) {
        let data = tempfile::Builder::new().prefix("slipway-agent-").tempdir().unwrap();
        let child = Command::new(bin())
            .args(["agent", "--server", &self.url, "--token", &self.admin, "--name", name])
            .args(args)
            .env("SLIPWAY_DATA_DIR", data.path())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (Proc(child), data)
    }

    /// Waits until the pipeline ends; its record.
    fn wait(&self, id: i64, limit: Duration) -> serde_json::Value {
        let t = Instant::now();
        loop {
            let p = self.json(&format!("/api/v1/pipelines/{id}"));
            if p["status"] != "running" {
                return p;
            }
            assert!(t.elapsed() < limit, "pipeline {id} still running: {p}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const PIPELINE: &str = r#"
stages: [build, test]
build:
  stage: build
  script:
    - echo "building $CI_COMMIT_SHORT_SHA on $CI_COMMIT_BRANCH for $DEPLOY_TO ($CI_PIPELINE_SOURCE)"
    - echo "server $CI_SERVER_URL host $CI_SERVER_HOST project $CI_PROJECT_PATH at $CI_PROJECT_URL"
test:
  stage: test
  script:
    - echo "token is $CI_JOB_TOKEN"
    - exit ${TEST_EXIT:-0}
"#;

/// A trigger job's child pipeline runs on the agent that took the trigger job, and the
/// server's views show it nested under the job: the API (`jobs[].child`), `slipway pipeline
/// show` and the dashboard's pipeline page.
#[test]
fn a_child_pipeline_on_an_agent_is_shown_nested_under_its_trigger_job() {
    let repo = Repo::new(&[
        (
            ".gitlab-ci.yml",
            "build:\n  stage: build\n  script: [echo built]\nchild:\n  stage: test\n  trigger:\n    include: ci/child.yml\n    strategy: depend\n",
        ),
        ("ci/child.yml", "unit:\n  script: [echo unit]\nlint:\n  script: [echo lint]\n"),
    ]);
    let server = Server::start_with(&["--with-agent"]);
    server.add_project("shop", &repo);
    let id = server.trigger("shop", None);
    let p = server.wait(id, Duration::from_secs(60));
    assert_eq!(p["status"], "success", "{p}");
    let trigger = p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "child").expect("the trigger job").clone();
    let child = &trigger["child"];
    assert_eq!(child["status"], "success", "{p}");
    let names: Vec<&str> = child["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["unit", "lint"], "{p}");
    assert!(child["jobs"].as_array().unwrap().iter().all(|j| j["status"] == "success"), "{p}");
    assert!(p["jobs"].as_array().unwrap().iter().all(|j| j["name"] == "child" || j.get("child").is_none()), "{p}");

    let show = server.cli(&["pipeline", "show", &id.to_string()]);
    assert_eq!(show.code, 0, "{}", show.debug());
    let rows: Vec<&str> = show.stdout.lines().collect();
    let at = |want: &str| rows.iter().position(|l| l.trim_start().starts_with(want));
    assert!(at("child").is_some_and(|c| at("└ unit") == Some(c + 1) && at("└ lint") == Some(c + 2)), "{}", show.stdout);

    let (code, page) = server.call("GET", &format!("/ui/pipelines/{id}"), None);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<tr class=\"child\"><td class=\"depth-1\">└ unit</td>"), "{page}");
    assert!(page.contains("└ lint"), "{page}");
}

#[test]
fn a_triggered_pipeline_runs_on_an_agent_and_its_logs_come_back() {
    let repo = Repo::new(&[(".gitlab-ci.yml", PIPELINE)]);
    let server = Server::start("30s");
    let (_agent, _agent_data) = server.agent("a1");
    let body = format!(r#"{{"name": "team/app", "repo": "{}", "branch": "main"}}"#, repo.path().display());
    let (code, text) = server.call("POST", "/api/v1/projects", Some(&body));
    assert_eq!(code, 201, "{text}");
    let (code, text) =
        server.call("POST", "/api/v1/projects/team%2Fapp/pipelines", Some(r#"{"variables": [["DEPLOY_TO", "dev"]]}"#));
    assert_eq!(code, 201, "{text}");
    let p: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = p["id"].as_i64().unwrap();
    assert_eq!(p["jobs"].as_array().unwrap().len(), 2, "{p}");
    let p = server.wait(id, Duration::from_secs(30));
    assert_eq!(p["status"], "success", "{p}");
    assert!(p["jobs"].as_array().unwrap().iter().all(|j| j["status"] == "success" && j["agent"] == "a1@admin"), "{p}");
    // The record says whose commit it is, who started it, when, and how long things took.
    assert_eq!(
        (p["author"].as_str(), p["triggered_by"].as_str()),
        (Some("t <t@example.com>"), Some("api: admin")),
        "{p}"
    );
    assert!(p["started_at"].is_string() && p["duration_seconds"].as_f64().unwrap() > 0.0, "{p}");
    let j = &p["jobs"][0];
    assert!(j["queued_at"].is_string() && j["duration_seconds"].as_f64().unwrap() >= 0.0, "{p}");
    let sha = repo.git(&["rev-parse", "--short=8", "HEAD"]);
    let (code, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log"), None);
    assert_eq!(code, 200, "{log}");
    assert!(log.contains(&format!("building {sha} on main for dev (api)")), "{log}");
    // GitLab's server variables have the server's values, not the mirrored repository's.
    let host = server.url.trim_start_matches("http://").split(':').next().unwrap().to_string();
    let want = format!("server {0} host {host} project team/app at {0}/team/app", server.url);
    assert!(log.contains(&want), "{want}: {log}");
    // The job token is masked in the log, and it reads its own pipeline only.
    let (_, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/1/log"), None);
    assert!(log.contains("token is [MASKED]"), "{log}");
    // An ended job's log is kept compressed, and read back as it was.
    let logs = server.data.path().join("logs").join(id.to_string());
    assert!(logs.join("0.log.gz").is_file() && !logs.join("0.log").exists());
    let (_, again) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log?offset=8"), None);
    let (_, whole) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log"), None);
    assert_eq!(again, whole[8..], "offsets count in the log, not in the file");

    // A failing job fails the pipeline, with its exit code.
    let (code, text) =
        server.call("POST", "/api/v1/projects/team%2Fapp/pipelines", Some(r#"{"variables": [["TEST_EXIT", "3"]]}"#));
    assert_eq!(code, 201, "{text}");
    let id2 = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].as_i64().unwrap();
    let p = server.wait(id2, Duration::from_secs(30));
    assert_eq!(p["status"], "failed", "{p}");
    assert_eq!((p["jobs"][1]["status"].as_str(), p["jobs"][1]["exit_code"].as_i64()), (Some("failed"), Some(3)), "{p}");
    let list = server.json("/api/v1/pipelines?project=team/app");
    assert_eq!(list.as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect::<Vec<_>>(), [id2, id]);
}

#[test]
fn bad_requests_get_json_errors_that_name_the_field() {
    let repo = Repo::new(&[(".gitlab-ci.yml", PIPELINE)]);
    let server = Server::start("30s");
    let err = |(code, body): (u16, String)| -> (u16, serde_json::Value) {
        (code, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
    };
    let (code, e) = err(server.call_as(None, "GET", "/api/v1/projects", None));
    assert_eq!((code, e["code"].as_str()), (401, Some("unauthorized")), "{e}");
    let (code, e) = err(server.call_as(Some("slw_nope"), "GET", "/api/v1/projects", None));
    assert_eq!(code, 401, "{e}");
    assert!(e["message"].as_str().unwrap().starts_with("unknown token"), "{e}");
    let (code, e) = err(server.call("POST", "/api/v1/projects", Some(r#"{"name": "x"}"#)));
    assert_eq!((code, e["field"].as_str()), (400, Some("repo")), "{e}");
    let (code, e) = err(server.call("POST", "/api/v1/projects", Some("{not json")));
    assert_eq!((code, e["code"].as_str()), (400, Some("invalid")), "{e}");
    let bad_name = format!(r#"{{"name": "../etc", "repo": "{}"}}"#, repo.path().display());
    let (code, e) = err(server.call("POST", "/api/v1/projects", Some(&bad_name)));
    assert_eq!((code, e["field"].as_str()), (400, Some("name")), "{e}");
    let (code, e) = err(server.call("POST", "/api/v1/projects", Some(r#"{"name": "x", "repo": "/nonexistent/repo"}"#)));
    assert_eq!((code, e["field"].as_str()), (400, Some("repo")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("/nonexistent/repo"), "{e}");
    let no_branch = format!(r#"{{"name": "x", "repo": "{}", "branch": "develop"}}"#, repo.path().display());
    let (code, e) = err(server.call("POST", "/api/v1/projects", Some(&no_branch)));
    assert_eq!((code, e["field"].as_str()), (400, Some("branch")), "{e}");
    let (code, e) = err(server.call("POST", "/api/v1/projects/nope/pipelines", None));
    assert_eq!((code, e["code"].as_str()), (404, Some("not_found")), "{e}");
    let ok = format!(r#"{{"name": "app", "repo": "{}"}}"#, repo.path().display());
    assert_eq!(server.call("POST", "/api/v1/projects", Some(&ok)).0, 201);
    let (code, e) = err(server.call("POST", "/api/v1/projects", Some(&ok)));
    assert_eq!((code, e["code"].as_str()), (409, Some("conflict")), "{e}");
    let (code, e) = err(server.call("POST", "/api/v1/projects/app/pipelines", Some(r#"{"variables": [["1X", "y"]]}"#)));
    assert_eq!((code, e["field"].as_str()), (400, Some("variables")), "{e}");
    // A commit whose pipeline file does not plan: the pipeline fails at once and says why.
    repo.write(".gitlab-ci.yml", "build:\n  scrpt: [true]\n");
    repo.commit("broken");
    let (code, text) = server.call("POST", "/api/v1/projects/app/pipelines", None);
    assert_eq!(code, 201, "{text}");
    let p: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(p["status"], "failed", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("scrpt"), "{p}");
    // The tunnel is only for agents that ask to upgrade, under a name that can be a file name.
    let (code, e) = err(server.call("GET", "/api/v1/agents/tunnel?agent=a1", None));
    assert_eq!((code, e["field"].as_str()), (400, Some("upgrade")), "{e}");
    let (code, e) = err(server.call("GET", "/api/v1/agents/tunnel?agent=..%2Fx", None));
    assert_eq!((code, e["field"].as_str()), (400, Some("agent")), "{e}");
    assert_eq!(server.json("/api/v1/agents"), serde_json::json!([]));
    // Tokens travel in headers, never in URLs (which end up in logs), however the key is spelt.
    for q in ["private_token=slw_x", "TOKEN=slw_x", "priv%61te_token=slw_x", "limit=5&access_token=slw_x"] {
        let (code, e) = err(server.call_as(None, "GET", &format!("/api/v1/pipelines?{q}"), None));
        assert_eq!((code, e["code"].as_str()), (400, Some("token_in_url")), "{q}: {e}");
        assert!(e["message"].as_str().unwrap().contains("Authorization: Bearer"), "{e}");
    }
    assert_eq!(server.call("GET", "/api/v1/pipelines?limit=5", None).0, 200, "other queries are fine");
    assert_eq!(server.call_as(None, "GET", "/healthz", None).0, 200);
    assert_eq!(server.call_as(None, "GET", "/readyz", None).0, 200);
}

/// A job's token (`CI_JOB_TOKEN`) works while its job runs, and not a moment after.
#[test]
fn a_job_token_is_valid_only_while_its_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let pipeline = format!(
        "job:\n  script:\n    - printf %s \"$CI_JOB_TOKEN\" > {f}.part && mv {f}.part {f}\n    - sleep 2\n",
        f = file.display()
    );
    let repo = Repo::new(&[(".gitlab-ci.yml", &pipeline)]);
    let server = Server::start("30s");
    let (_agent, _d) = server.agent("a1");
    server.add_project("app", &repo);
    let id = server.trigger("app", None);
    let t = Instant::now();
    while !file.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "the job did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = std::fs::read_to_string(&file).unwrap();
    let (code, body) = server.call_as(Some(&token), "GET", &format!("/api/v1/pipelines/{id}"), None);
    assert_eq!(code, 200, "while the job runs: {body}");
    // Only what a job needs, on its own project: another project does not exist for it, and
    // it may not start pipelines, read secrets or manage users.
    let (code, body) = server.call_as(Some(&token), "GET", "/api/v1/projects/other/environments", None);
    assert_eq!((code, body.contains("project `other` does not exist")), (404, true), "{body}");
    let (code, body) = server.call_as(Some(&token), "POST", "/api/v1/projects/app/pipelines", None);
    assert_eq!((code, body.contains("a job token may not `write:pipelines`")), (403, true), "{body}");
    let (code, _) = server.call_as(Some(&token), "GET", "/api/v1/projects/app/secrets", None);
    assert_eq!(code, 403);
    let (code, _) = server.call_as(Some(&token), "GET", "/api/v1/users", None);
    assert_eq!(code, 403);
    assert_eq!(server.wait(id, Duration::from_secs(30))["status"], "success");
    let (code, body) = server.call_as(Some(&token), "GET", &format!("/api/v1/pipelines/{id}"), None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("a job token is valid only while its job runs"), "{body}");
}

#[test]
fn a_job_whose_agent_is_killed_is_queued_again_and_finished_by_another() {
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "slow:\n  script:\n    - echo \"attempt on $(hostname)\"\n    - sleep 2\n    - echo done\n",
    )]);
    let server = Server::start("2s");
    let (mut first, _d1) = server.agent("first");
    server.add_project("app", &repo);
    let id = server.trigger("app", None);
    let t = Instant::now();
    while server.json(&format!("/api/v1/pipelines/{id}"))["jobs"][0]["status"] != "running" {
        assert!(t.elapsed() < Duration::from_secs(20), "the job never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // kill -9: no goodbye, the lease (2 s) runs out.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let killed_at = Instant::now();
    let (_second, _d2) = server.agent("second");
    let p = server.wait(id, Duration::from_secs(30));
    assert_eq!(p["status"], "success", "{p}");
    assert_eq!(p["jobs"][0]["agent"], "second@admin", "{p}");
    assert_eq!(p["jobs"][0]["attempts"], 2, "{p}");
    assert!(killed_at.elapsed() < Duration::from_secs(15), "requeued within the lease and finished");
    let (_, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log"), None);
    assert!(log.contains("done"), "the second attempt's log: {log}");
}

/// HMAC-SHA256 of `body` with `secret`, hex (as the forges sign), by openssl.
fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(body).unwrap();
    let out = String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
    out.rsplit(' ').next().unwrap().trim().to_string()
}

impl Server {
    /// A webhook delivery: (status, body).
    fn deliver(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
        let file = self.data.path().join("webhook-body");
        std::fs::write(&file, body).unwrap();
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", "POST", "-w", "\n%{http_code}", &format!("{}{path}", self.url)]);
        c.args(["-H", "content-type: application/json", "--data-binary"]).arg(format!("@{}", file.display()));
        for (k, v) in headers {
            c.args(["-H", &format!("{k}: {v}")]);
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn pipeline_count(&self, project: &str) -> usize {
        self.json(&format!("/api/v1/pipelines?project={project}")).as_array().unwrap().len()
    }
}

#[test]
fn webhooks_are_verified_taken_once_and_start_pipelines_and_polling_sees_pushes() {
    let repo = Repo::new(&[(".gitlab-ci.yml", "hello:\n  script: [echo \"hello from $CI_PIPELINE_SOURCE\"]\n")]);
    let server = Server::start("30s");
    let (_agent, _d) = server.agent("a1");
    let body = format!(r#"{{"name": "app", "repo": "{}", "webhook_secret": "topsecret"}}"#, repo.path().display());
    let (code, text) = server.call("POST", "/api/v1/projects", Some(&body));
    assert_eq!(code, 201, "{text}");
    assert!(text.contains("topsecret"), "shown to the admin who made it: {text}");
    assert!(!server.call("GET", "/api/v1/projects", None).1.contains("topsecret"), "and nowhere else");

    let sha = repo.git(&["rev-parse", "HEAD"]);
    let push = format!(r#"{{"ref": "refs/heads/main", "after": "{sha}", "repository": {{"name": "app"}}}}"#);
    let signed = |body: &str, delivery: &str| {
        vec![
            ("X-GitHub-Event", "push".to_string()),
            ("X-GitHub-Delivery", delivery.to_string()),
            ("X-Hub-Signature-256", format!("sha256={}", hmac_hex("topsecret", body.as_bytes()))),
        ]
    };
    // A flood of forged deliveries (2,000 from 8 senders): every one 401, the server stays
    // responsive meanwhile, nothing is created.
    let host = server.url.trim_start_matches("http://").to_string();
    let flood: Vec<_> = (0..8)
        .map(|t| {
            let (host, body) = (host.clone(), push.clone());
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut codes = std::collections::BTreeMap::<String, usize>::new();
                for i in 0..250 {
                    let mut c = std::net::TcpStream::connect(&host).unwrap();
                    let req = format!(
                        "POST /api/v1/webhooks/github/app HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: flood-{t}-{i}\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        "0".repeat(64),
                        body.len()
                    );
                    c.write_all(req.as_bytes()).unwrap();
                    let mut out = String::new();
                    let _ = c.read_to_string(&mut out);
                    *codes.entry(out.split(' ').nth(1).unwrap_or("none").to_string()).or_default() += 1;
                }
                codes
            })
        })
        .collect();
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    while !flood.iter().all(|h| h.is_finished()) {
        let asked = Instant::now();
        assert_eq!(server.call("GET", "/healthz", None).0, 200);
        slowest = slowest.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(20));
        assert!(t.elapsed() < Duration::from_secs(60));
    }
    let mut all = std::collections::BTreeMap::<String, usize>::new();
    for h in flood {
        for (k, v) in h.join().unwrap() {
            *all.entry(k).or_default() += v;
        }
    }
    assert_eq!(all, std::collections::BTreeMap::from([("401".to_string(), 2000)]), "every forged delivery is refused");
    assert!(slowest < Duration::from_millis(500), "the server answered /healthz within {slowest:?} under the flood");
    assert!(server.json("/api/v1/pipelines?project=app").as_array().unwrap().is_empty(), "nothing was created");

    // Bad or missing signatures: 401, nothing created.
    let mut forged = signed(&push, "d-0");
    forged[2].1 = format!("sha256={}", hmac_hex("guess", push.as_bytes()));
    assert_eq!(server.deliver("/api/v1/webhooks/github/app", &forged, push.as_bytes()).0, 401);
    assert_eq!(server.deliver("/api/v1/webhooks/github/app", &signed(&push, "d-0")[..2], push.as_bytes()).0, 401);
    let tampered = push.replace("main", "evil");
    assert_eq!(server.deliver("/api/v1/webhooks/github/app", &signed(&push, "d-0"), tampered.as_bytes()).0, 401);
    assert_eq!(server.deliver("/api/v1/webhooks/github/nope", &signed(&push, "d-0"), push.as_bytes()).0, 401);
    assert_eq!(server.pipeline_count("app"), 0);
    // A ping answers; a push starts one pipeline; its replay starts nothing.
    let ping = vec![
        ("X-GitHub-Event", "ping".to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", hmac_hex("topsecret", b"{}"))),
    ];
    assert_eq!(server.deliver("/api/v1/webhooks/github/app", &ping, b"{}").0, 200);
    let (code, text) = server.deliver("/api/v1/webhooks/github/app", &signed(&push, "d-1"), push.as_bytes());
    assert_eq!(code, 201, "{text}");
    let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["pipeline"].as_i64().unwrap();
    let (code, text) = server.deliver("/api/v1/webhooks/github/app", &signed(&push, "d-1"), push.as_bytes());
    assert_eq!((code, serde_json::from_str::<serde_json::Value>(&text).unwrap()["pipeline"].as_i64()), (200, Some(id)));
    let p = server.wait(id, Duration::from_secs(30));
    assert_eq!((p["status"].as_str(), p["source"].as_str()), (Some("success"), Some("push")), "{p}");
    let (_, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log"), None);
    assert!(log.contains("hello from push"), "{log}");
    // GitLab's token, compared whole.
    repo.write("b.txt", "b");
    repo.commit("second");
    let sha2 = repo.git(&["rev-parse", "HEAD"]);
    let gl = format!(r#"{{"object_kind": "push", "ref": "refs/heads/main", "checkout_sha": "{sha2}"}}"#);
    let gl_headers =
        |token: &str| vec![("X-Gitlab-Event", "Push Hook".to_string()), ("X-Gitlab-Token", token.to_string())];
    assert_eq!(server.deliver("/api/v1/webhooks/gitlab/app", &gl_headers("topsecre"), gl.as_bytes()).0, 401);
    assert_eq!(server.deliver("/api/v1/webhooks/gitlab/app", &gl_headers("topsecret"), gl.as_bytes()).0, 201);
    // Too big: 413 before anything is read.
    let big = vec![b' '; 6 * 1024 * 1024];
    assert_eq!(server.deliver("/api/v1/webhooks/github/app", &signed("", "d-big"), &big).0, 413);
    assert_eq!(server.pipeline_count("app"), 2);
    // What happened shows in the metrics, and Prometheus' linter accepts them.
    let (code, text) = server.call_as(None, "GET", "/metrics", None);
    assert_eq!(code, 200, "{text}");
    for want in [
        "slipway_server_webhooks_total{result=\"accepted\"} 2",
        "slipway_server_webhooks_total{result=\"rejected\"} 2005",
        "slipway_server_webhooks_total{result=\"replayed\"} 1",
        "slipway_server_pipelines{status=",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
    require("promtool", "--version");
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), format!("{text}\n").as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Polling: the first look records, a new commit starts exactly one pipeline.
    let polled = Repo::new(&[(".gitlab-ci.yml", "hello:\n  script: [echo polled]\n")]);
    let body = format!(r#"{{"name": "polled", "repo": "{}", "poll_seconds": 1}}"#, polled.path().display());
    assert_eq!(server.call("POST", "/api/v1/projects", Some(&body)).0, 201);
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(server.pipeline_count("polled"), 0, "what was there before starts nothing");
    polled.write("c.txt", "c");
    polled.commit("third");
    let t = Instant::now();
    while server.pipeline_count("polled") == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "polling never saw the push");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let list = server.json("/api/v1/pipelines?project=polled");
    assert_eq!(list.as_array().unwrap().len(), 1, "one pipeline per push: {list}");
    assert_eq!(list[0]["commit"], polled.git(&["rev-parse", "HEAD"]));
}

#[test]
fn a_server_killed_mid_pipeline_resumes_it_and_nothing_runs_twice() {
    // (20 pipelines, 4 agents: `kill -9` of the server while their jobs run.)
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "stages: [one, two]\nfirst:\n  stage: one\n  script: [sleep 1, echo first done]\nsecond:\n  stage: two\n  script: [echo second done]\n",
    )]);
    let mut server = Server::start("30s");
    let agents: Vec<_> = (0..4).map(|i| server.agent(&format!("a{i}"))).collect();
    server.add_project("app", &repo);
    // 20 pipelines, each on its own branch (a newer one on a ref would cancel an older one).
    let ids: Vec<i64> = (0..20)
        .map(|i| {
            repo.git(&["branch", &format!("b{i}")]);
            let (_, text) =
                server.call("POST", "/api/v1/projects/app/pipelines", Some(&format!(r#"{{"ref": "b{i}"}}"#)));
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].as_i64().unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // kill -9 of the server while jobs run on the agent.
    server.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    // Back at the same address within the jobs' leases: the agent's jobs finish and report,
    // and every pipeline goes on where it was.
    server.launch("30s");
    for id in &ids {
        let p = server.wait(*id, Duration::from_secs(40));
        assert_eq!(p["status"], "success", "{p}");
        // A claim whose answer was on the wire when the server died never reached its agent:
        // that job is claimed again after its first lease (10 s), so it may count a second
        // attempt — but it runs once, which its log shows.
        for j in p["jobs"].as_array().unwrap() {
            assert_eq!(j["status"], "success", "{p}");
            assert!((1..=2).contains(&j["attempts"].as_u64().unwrap()), "{p}");
        }
        for (job, line) in [(0, "first done"), (1, "second done")] {
            let (_, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/{job}/log"), None);
            assert_eq!(log.lines().filter(|l| *l == line).count(), 1, "{log}");
        }
    }
    drop(agents);
}

#[test]
fn the_cli_adds_projects_triggers_and_reads_pipelines_on_a_server() {
    let repo = Repo::new(&[(".gitlab-ci.yml", PIPELINE)]);
    let server = Server::start("30s");
    let (_agent, _d) = server.agent("a1");
    let cli = |args: &[&str]| -> Run {
        Run::from(
            Command::new(bin())
                .args(args)
                .env("SLIPWAY_SERVER", &server.url)
                .env("SLIPWAY_TOKEN", &server.admin)
                .env("NO_COLOR", "1")
                .output()
                .unwrap(),
        )
    };
    let r = cli(&["project", "add", "team/app", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(
        r.stdout.contains("webhook secret (shown once): slw_")
            && r.stdout.contains("/api/v1/webhooks/{github,gitlab,gitea}/team%2Fapp"),
        "{}",
        r.stdout
    );
    let r = cli(&["project", "list"]);
    assert!(r.stdout.contains("team/app") && !r.stdout.contains("slw_"), "{}", r.stdout);
    let r = cli(&["trigger", "team/app", "--var", "DEPLOY_TO=staging", "--wait"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(
        r.stdout.contains("pipeline #1 of team/app at main started") && r.stdout.contains(": success"),
        "{}",
        r.stdout
    );
    let r = cli(&["trigger", "team/app", "--var", "TEST_EXIT=4", "--wait"]);
    assert_eq!(r.code, 1, "a failed pipeline fails the command: {}", r.debug());
    let r = cli(&["pipelines", "team/app"]);
    assert!(r.stdout.lines().filter(|l| l.starts_with('#')).count() == 2, "{}", r.stdout);
    let r = cli(&["pipeline", "show", "2", "--json"]);
    let p: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((p["status"].as_str(), p["jobs"][1]["exit_code"].as_i64()), (Some("failed"), Some(4)), "{p}");
    let r = cli(&["logs", "1", "build"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("for staging (api)"), "{}", r.stdout);
    let r = cli(&["logs", "1", "deploy"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("has no job `deploy`") && r.stderr.contains("build, test"), "{}", r.stderr);
    // The server's errors reach the user with the field they point at.
    let r = cli(&["project", "add", "x", "--repo", "/nonexistent"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("cannot read `/nonexistent`") && r.stderr.contains("`repo`"), "{}", r.stderr);
    let r = Run::from(
        Command::new(bin())
            .args(["pipelines", "--server", "http://127.0.0.1:1", "--token", "x"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("no server answers at http://127.0.0.1:1"), "{}", r.stderr);
}

#[test]
fn a_server_with_its_own_agent_runs_pipelines_alone() {
    let repo = Repo::new(&[(".gitlab-ci.yml", PIPELINE)]);
    // The admin token goes to a private file, not to the output (a journal).
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("admin-token");
    let server = Server::start_with(&["--with-agent", "--admin-token-file", file.to_str().unwrap()]);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    server.add_project("app", &repo);
    let id = server.trigger("app", None);
    let p = server.wait(id, Duration::from_secs(30));
    assert_eq!(p["status"], "success", "{p}");
    assert!(p["jobs"][0]["agent"].as_str().unwrap().ends_with("@local"), "{p}");
    // Its host agent answers on the data directory's socket, as `slipway agent` would.
    assert!(server.data.path().join("agent.sock").exists());
}

#[test]
fn a_newer_pipeline_on_the_same_ref_cancels_an_older_interruptible_one() {
    let repo = Repo::new(&[(".gitlab-ci.yml", "wait:\n  interruptible: true\n  script: [sleep 20]\n")]);
    let server = Server::start("30s");
    let (_agent, _d) = server.agent("a1");
    server.add_project("app", &repo);
    let start = || {
        let (_, text) = server.call("POST", "/api/v1/projects/app/pipelines", None);
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].as_i64().unwrap()
    };
    let old = start();
    let t = Instant::now();
    while server.json(&format!("/api/v1/pipelines/{old}"))["jobs"][0]["status"] != "running" {
        assert!(t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let newer = start();
    let p = server.wait(old, Duration::from_secs(10));
    assert_eq!(p["status"], "canceled", "{p}");
    assert!(t.elapsed() < Duration::from_secs(5), "the running job stopped within seconds");
    let n = server.json(&format!("/api/v1/pipelines/{newer}"));
    assert_eq!(n["status"], "running", "{n}");
    assert_eq!(server.call("POST", &format!("/api/v1/pipelines/{newer}/cancel"), None).0, 200);
    assert_eq!(server.wait(newer, Duration::from_secs(10))["status"], "canceled");
}

#[test]
fn a_running_jobs_log_is_followed_live_and_resumed_from_an_offset() {
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "talk:\n  script:\n    - for i in 1 2 3; do echo \"line $i\"; sleep 0.3; done\n",
    )]);
    let server = Server::start("30s");
    let (_agent, _d) = server.agent("a1");
    server.add_project("app", &repo);
    let id = server.trigger("app", None);
    // Followed while it runs: the stream ends with the job.
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-sSN", "--max-time", "20", "-H", &format!("Authorization: Bearer {}", server.admin)])
        .arg(format!("{}/api/v1/pipelines/{id}/jobs/0/log?follow=true", server.url))
        .output()
        .unwrap();
    let stream = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stream}");
    assert!(t.elapsed() < Duration::from_secs(15), "the stream ended with the job");
    for i in 1..=3 {
        assert!(stream.contains(&format!("data: line {i}")), "{stream}");
    }
    assert!(stream.contains("event: end") && stream.contains(r#"data: {"status":"success"}"#), "{stream}");
    // Resumed after the first line: only what came after it.
    let (_, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log"), None);
    let after_first = log.find("line 1\n").unwrap() + "line 1\n".len();
    let out = Command::new("curl")
        .args(["-sSN", "--max-time", "10", "-H", &format!("Authorization: Bearer {}", server.admin)])
        .args(["-H", &format!("Last-Event-ID: {after_first}")])
        .arg(format!("{}/api/v1/pipelines/{id}/jobs/0/log?follow=true", server.url))
        .output()
        .unwrap();
    let resumed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!resumed.contains("data: line 1") && resumed.contains("data: line 3"), "{resumed}");
}

/// The body a service answers `/` with.
fn served(addr: &str) -> Option<String> {
    http_get(addr, "/").and_then(|r| r.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()))
}

/// The brief's whole flow with no human step: a commit's pipeline builds on one agent, its
/// deploy job (on whatever agent) gets the build through the server and deploys it with
/// `slipway deploy dev`, which the server's engine rolls out; the release names the pipeline,
/// the commit and the job. The next commit rolls dev forward, an admin rolls it back.
#[test]
fn a_pipeline_builds_and_its_deploy_job_updates_dev_through_the_server() {
    require_go();
    let (addr, staging) = (free_addr(), free_addr());
    let pipeline = format!(
        r#"stages: [build, deploy]
build:
  stage: build
  script:
    - slipway go build --version "v-$CI_COMMIT_SHORT_SHA"
  artifacts:
    paths: [dist/]
deploy-dev:
  stage: deploy
  environment: dev
  script:
    - slipway deploy dev
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
environments:
  dev:
    instances: 2
    listen: {addr}
    health: {{http: /healthz, interval: 200ms, deadline: 10s}}
  staging:
    promote_from: dev
    instances: 1
    listen: {staging}
    health: {{http: /healthz, interval: 200ms, deadline: 10s}}
"#
    );
    let repo = websvc_repo(&pipeline);
    let server = Server::start_with(&["--with-agent", "--concurrency", "1"]);
    let (_b, _bdata) = server.agent("b");
    let body = format!(r#"{{"name": "web", "repo": "{}"}}"#, repo.path().display());
    assert_eq!(server.call("POST", "/api/v1/projects", Some(&body)).0, 201);
    let run = |server: &Server| {
        let (code, text) = server.call("POST", "/api/v1/projects/web/pipelines", None);
        assert_eq!(code, 201, "{text}");
        let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].as_i64().unwrap();
        let p = server.wait(id, Duration::from_secs(180));
        let log = |i: usize| server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/{i}/log"), None).1;
        assert_eq!(p["status"], "success", "{p}\nbuild:\n{}\ndeploy:\n{}", log(0), log(1));
        (id, p, log(1))
    };
    let sha = |repo: &Repo| repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    let (first, _, deploy_log) = run(&server);
    let v1 = format!("v-{}", &sha(&repo)[..8]);
    assert!(deploy_log.contains("deployed dev"), "{deploy_log}");
    assert!(!deploy_log.contains("slw_"), "no token in the log: {deploy_log}");
    assert_eq!(served(&addr).as_deref(), Some(v1.as_str()));

    // The release records where it came from, read with the CLI against the server.
    let cli = |args: &[&str]| {
        Run::from(
            Command::new(bin())
                .args(args)
                .args(["--server", &server.url, "--token", &server.admin, "--project", "web"])
                .env("NO_COLOR", "1")
                .output()
                .unwrap(),
        )
    };
    let h = cli(&["history", "dev", "--json"]);
    assert_eq!(h.code, 0, "{}", h.debug());
    let h: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(h[0]["version"], v1.as_str());
    assert_eq!(h[0]["commit"], sha(&repo).as_str());
    assert_eq!(h[0]["pipeline"], serde_json::json!({"project": "web", "pipeline": first, "job": "deploy-dev"}));
    assert_eq!(h[0]["actor"], format!("web pipeline #{first} job deploy-dev"));
    let st = cli(&["status", "dev"]);
    assert_eq!(st.code, 0, "{}", st.debug());
    assert!(st.stdout.contains(&v1) && st.stdout.contains("2/2"), "{}", st.stdout);
    // Promoted to staging through the server: the same artifacts, never a rebuild.
    let pr = cli(&["promote", "dev", "staging"]);
    assert_eq!(pr.code, 0, "{}", pr.debug());
    assert_eq!(served(&staging).as_deref(), Some(v1.as_str()));

    // The next commit's pipeline rolls dev forward; an admin rolls it back from the CLI.
    repo.write("NOTES", "second\n");
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "second"]);
    let v2 = format!("v-{}", &sha(&repo)[..8]);
    run(&server);
    assert_eq!(served(&addr).as_deref(), Some(v2.as_str()));
    let rb = cli(&["rollback", "dev"]);
    assert_eq!(rb.code, 0, "{}", rb.debug());
    assert!(rb.stdout.contains(&format!("deployed dev {v1}")), "{}", rb.stdout);
    assert_eq!(served(&addr).as_deref(), Some(v1.as_str()));
    let h: serde_json::Value = serde_json::from_str(&cli(&["history", "dev", "--json"]).stdout).unwrap();
    assert_eq!((h[0]["reason"].as_str(), h[0]["actor"].as_str()), (Some("rollback"), Some("admin")), "{h}");

    // A job's token deploys only while its job runs; an unknown environment names the field.
    let (code, text) = server.call("POST", "/api/v1/projects/web/environments/qa/rollback", None);
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("has no environment `qa` (it has dev, staging)") && text.contains("\"field\":\"environment\""),
        "{text}"
    );
    let (code, text) = server.call("POST", "/api/v1/projects/web/environments/dev/deploy", None);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("nothing to deploy"), "{text}");
}

/// Pipeline schedules: runs with `CI_PIPELINE_SOURCE=schedule` and the schedule's variables;
/// runs missed while the server was down start once when it is back, not once each; bad cron
/// expressions and time zones are refused naming their field; off means off.
#[test]
fn schedules_run_pipelines_and_a_missed_run_happens_once_after_a_restart() {
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "nightly:\n  script: [echo nightly]\n  rules:\n    - if: $CI_PIPELINE_SOURCE == \"schedule\" && $NIGHTLY == \"1\"\nalways:\n  script: [echo hi]\n",
    )]);
    let mut server = Server::start("30s");
    server.add_project("app", &repo);
    let cli = |server: &Server, args: &[&str]| {
        Run::from(
            Command::new(bin())
                .args(["schedule"])
                .args(args)
                .args(["--server", &server.url, "--token", &server.admin])
                .env("NO_COLOR", "1")
                .output()
                .unwrap(),
        )
    };
    let bad = cli(&server, &["add", "app", "--cron", "0 25 * * *"]);
    assert_eq!(bad.code, 2, "{}", bad.debug());
    assert!(
        bad.stderr.contains("`0 25 * * *` is not a cron expression") && bad.stderr.contains("`cron`"),
        "{}",
        bad.stderr
    );
    let bad = cli(&server, &["add", "app", "--cron", "0 3 * * *", "--tz", "Moon/Base"]);
    assert_eq!(bad.code, 2, "{}", bad.debug());
    assert!(
        bad.stderr.contains("`Moon/Base` is not a time zone") && bad.stderr.contains("cron_timezone"),
        "{}",
        bad.stderr
    );

    // Every 2 s (a leading seconds field), with a variable.
    let add = cli(&server, &["add", "app", "--cron", "*/2 * * * * *", "--var", "NIGHTLY=1", "--json"]);
    assert_eq!(add.code, 0, "{}", add.debug());
    let id = serde_json::from_str::<serde_json::Value>(&add.stdout).unwrap()["id"].as_i64().unwrap();
    let scheduled = |server: &Server| -> Vec<serde_json::Value> {
        let all = server.json("/api/v1/pipelines?project=app&limit=1000");
        all.as_array().unwrap().iter().filter(|p| p["source"] == "schedule").cloned().collect()
    };
    let t = Instant::now();
    // Recorded first, planned just after: wait for its jobs too.
    while scheduled(&server).first().is_none_or(|p| p["jobs"].as_array().unwrap().is_empty()) {
        assert!(t.elapsed() < Duration::from_secs(5), "no scheduled pipeline");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = &scheduled(&server)[0];
    let jobs: Vec<&str> = first["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(jobs, ["nightly", "always"], "the schedule's source and variables reach the rules: {first}");
    let (_, text) = server.call("POST", "/api/v1/projects/app/pipelines", None);
    let api: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(api["jobs"].as_array().unwrap().len(), 1, "not in an API pipeline: {api}");

    // Down for 7 s (three runs fall due), then back: one run for them at once.
    let before = scheduled(&server).len();
    server.kill9();
    std::thread::sleep(Duration::from_secs(7));
    server.launch("30s");
    std::thread::sleep(Duration::from_millis(1200));
    let after = scheduled(&server).len() - before;
    assert!(
        (1..=2).contains(&after),
        "{after} runs after the restart (one for the missed ones, at most one more due since)"
    );

    // Off means off; deleted means gone.
    let off = cli(&server, &["disable", "app", &id.to_string()]);
    assert!(off.code == 0 && off.stdout.contains("inactive"), "{}", off.debug());
    let n = scheduled(&server).len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(scheduled(&server).len(), n, "an inactive schedule does not run");
    let run = cli(&server, &["run", "app", &id.to_string()]);
    assert!(run.code == 0 && run.stdout.contains("started by schedule"), "{}", run.debug());
    assert_eq!(scheduled(&server).len(), n + 1, "play runs it now");
    assert_eq!(cli(&server, &["delete", "app", &id.to_string()]).code, 0);
    let list = cli(&server, &["list", "app", "--json"]);
    assert_eq!(list.stdout.trim(), "[]", "{}", list.debug());
}

/// Job `tags:` as GitLab's runners read them: a tagged job goes only to an agent that has all
/// of its tags; untagged jobs go to any agent.
#[test]
fn tagged_jobs_go_only_to_agents_with_those_tags() {
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "train:\n  tags: [gpu, linux]\n  script: [echo training]\nlint:\n  script: [echo lint]\n",
    )]);
    let server = Server::start("30s");
    let (_plain, _d1) = server.agent("plain");
    server.add_project("app", &repo);
    let id = server.trigger("app", None);
    // The untagged job runs; the tagged one waits for an agent with its tags.
    let t = Instant::now();
    loop {
        let p = server.json(&format!("/api/v1/pipelines/{id}"));
        if p["jobs"][1]["status"] == "success" {
            assert_eq!(p["jobs"][0]["status"], "pending", "{p}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{p}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.json(&format!("/api/v1/pipelines/{id}"))["jobs"][0]["status"], "pending");
    let (_gpu, _d2) = server.agent_with("gpu", &["--tags", "linux,gpu,cuda"]);
    let p = server.wait(id, Duration::from_secs(20));
    assert_eq!(p["status"], "success", "{p}");
    assert!(p["jobs"][0]["agent"].as_str().unwrap().starts_with("gpu@"), "{p}");
    assert!(p["jobs"][1]["agent"].as_str().unwrap().starts_with("plain@"), "{p}");
}

/// A job whose agent is lost on every attempt is not queued forever: after its retries for
/// `runner_system_failure` it fails with that reason, and the pipeline ends.
#[test]
fn a_job_that_loses_every_agent_fails_as_a_runner_system_failure() {
    // The job kills the agent running it (its ancestor), as an out-of-memory kill would.
    let doom = r#"p=$$; while [ "$p" -gt 1 ]; do if [ "$(basename "$(readlink /proc/$p/exe)")" = slipway ]; then kill -9 "$p"; break; fi; p=$(awk '{print $4}' /proc/$p/stat); done; sleep 5"#;
    let repo = Repo::new(&[(".gitlab-ci.yml", &format!("doom:\n  script:\n    - '{}'\n", doom.replace('\'', "''")))]);
    let server = Server::start("1s");
    let agents: Vec<_> = (0..3).map(|i| server.agent(&format!("doomed{i}"))).collect();
    server.add_project("app", &repo);
    let id = server.trigger("app", None);
    let p = server.wait(id, Duration::from_secs(30));
    assert_eq!(p["status"], "failed", "{p}");
    let job = &p["jobs"][0];
    assert_eq!(job["attempts"], 3, "run again twice, then failed: {p}");
    assert!(job["reason"].as_str().unwrap().starts_with("runner_system_failure: the agent"), "{p}");
    drop(agents);
}

/// A stopping agent takes no new job and finishes the ones it runs; stopped again, it hands
/// them back at once and another agent runs them (the handed-back attempt is not counted).
#[test]
fn a_stopping_agent_finishes_its_jobs_and_stopped_again_hands_them_back() {
    let marks = tempfile::tempdir().unwrap();
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "work:\n  script:\n    - if [ ! -f \"$MARKS/$CI_PIPELINE_ID\" ]; then touch \"$MARKS/$CI_PIPELINE_ID\"; sleep \"$FIRST\"; fi\n    - echo done\n",
    )]);
    let server = Server::start("30s");
    server.add_project("app", &repo);
    let start = |first: &str| {
        let vars = format!(r#"{{"variables": [["MARKS", "{}"], ["FIRST", "{first}"]]}}"#, marks.path().display());
        let (_, text) = server.call("POST", "/api/v1/projects/app/pipelines", Some(&vars));
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].as_i64().unwrap()
    };
    let running = |id: i64| {
        let t = Instant::now();
        while server.json(&format!("/api/v1/pipelines/{id}"))["jobs"][0]["status"] != "running" {
            assert!(t.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let term = |p: &Proc| {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
    };

    // Stopped once: the job finishes where it runs, then the agent exits.
    let (mut a, _da) = server.agent("a");
    let id = start("2");
    running(id);
    term(&a);
    let p = server.wait(id, Duration::from_secs(20));
    assert_eq!(p["status"], "success", "{p}");
    assert_eq!((p["jobs"][0]["agent"].as_str(), p["jobs"][0]["attempts"].as_u64()), (Some("a@admin"), Some(1)));
    let t = Instant::now();
    while a.0.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "the agent exits once its jobs are done");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Stopped twice: the job is handed back and runs on the next agent.
    let (b, _db) = server.agent("b");
    let id = start("60");
    running(id);
    term(&b);
    std::thread::sleep(Duration::from_millis(300));
    term(&b);
    let (_c, _dc) = server.agent("c");
    let p = server.wait(id, Duration::from_secs(20));
    assert_eq!(p["status"], "success", "{p}");
    assert_eq!((p["jobs"][0]["agent"].as_str(), p["jobs"][0]["attempts"].as_u64()), (Some("c@admin"), Some(1)), "{p}");
    let (_, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log"), None);
    assert!(log.contains("done"), "{log}");
}

/// `slipway retry` runs a pipeline's failed jobs again (the pipeline runs again and ends as
/// they do), `slipway retry ID JOB` one job, and `slipway play` starts a manual job.
#[test]
fn failed_jobs_are_retried_and_manual_jobs_played_from_the_cli() {
    let marks = tempfile::tempdir().unwrap();
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "stages: [test, deploy]\nflaky:\n  stage: test\n  script:\n    - if [ ! -f \"$MARKS/flaky\" ]; then touch \"$MARKS/flaky\"; exit 3; fi\nafter:\n  stage: deploy\n  script: [echo after]\nship:\n  stage: deploy\n  when: manual\n  script: [echo shipped]\n",
    )]);
    let server = Server::start("30s");
    let (_agent, _d) = server.agent("a1");
    let cli = |args: &[&str]| -> Run {
        Run::from(
            Command::new(bin())
                .args(args)
                .env("SLIPWAY_SERVER", &server.url)
                .env("SLIPWAY_TOKEN", &server.admin)
                .env("NO_COLOR", "1")
                .output()
                .unwrap(),
        )
    };
    server.add_project("app", &repo);
    let marks_var = format!("MARKS={}", marks.path().display());
    let r = cli(&["trigger", "app", "--var", &marks_var, "--wait", "--json"]);
    assert_eq!(r.code, 1, "{}", r.debug());
    let p: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let id = p["id"].as_i64().unwrap();
    let states = |p: &serde_json::Value| -> Vec<String> {
        p["jobs"].as_array().unwrap().iter().map(|j| j["status"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(states(&p), ["failed", "skipped", "skipped"], "{p}");

    // Retry: the failed job runs again and passes; the job it kept from running runs too.
    let r = cli(&["retry", &id.to_string()]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let p = server.wait(id, Duration::from_secs(20));
    assert_eq!(p["status"], "success", "{p}");
    assert_eq!(states(&p), ["success", "success", "manual"], "{p}");
    assert_eq!(p["jobs"][0]["attempts"], 2, "{p}");
    assert!(p["finished_at"].is_string(), "{p}");
    let r = cli(&["retry", &id.to_string()]);
    assert_eq!(r.code, 2, "nothing failed: {}", r.debug());
    assert!(r.stderr.contains("has no failed job to retry"), "{}", r.stderr);

    // Play the manual job; retry one job by name.
    let r = cli(&["play", &id.to_string(), "ship"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let p = server.wait(id, Duration::from_secs(20));
    assert_eq!(states(&p), ["success", "success", "success"], "{p}");
    let r = cli(&["retry", &id.to_string(), "after"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let p = server.wait(id, Duration::from_secs(20));
    assert_eq!((p["status"].as_str(), p["jobs"][1]["attempts"].as_u64()), (Some("success"), Some(2)), "{p}");
    let r = cli(&["play", &id.to_string(), "nope"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("has no job `nope`") && r.stderr.contains("flaky, after, ship"), "{}", r.stderr);
    let r = cli(&["play", &id.to_string(), "after"]);
    assert_eq!(r.code, 2, "not manual: {}", r.debug());
}

/// The server on PostgreSQL behaves as on SQLite — and when the database restarts under load,
/// it reconnects and loses nothing: a call during the outage waits for the database and is
/// answered, every pipeline finishes, every job ran once.
#[test]
fn on_postgres_a_database_restart_under_load_loses_nothing() {
    let url = slipway_testkit::postgres::database();
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "stages: [one, two]\nfirst:\n  stage: one\n  script: [sleep 0.3, echo first]\nsecond:\n  stage: two\n  script: [sleep 0.3, echo second]\n",
    )]);
    let server = Server::start_with(&["--database-url", &url, "--lease", "30s"]);
    let agents: Vec<_> = (0..3).map(|i| server.agent(&format!("pg{i}"))).collect();
    server.add_project("app", &repo);
    // One branch per pipeline: a newer pipeline on a ref would cancel an older one not started.
    for b in 0..16 {
        repo.git(&["branch", &format!("b{b}")]);
    }
    let n = std::cell::Cell::new(0);
    let trigger = || {
        let body = format!(r#"{{"ref": "b{}"}}"#, n.get());
        n.set(n.get() + 1);
        let (code, text) = server.call("POST", "/api/v1/projects/app/pipelines", Some(&body));
        assert_eq!(code, 201, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].as_i64().unwrap()
    };
    let mut ids: Vec<i64> = (0..12).map(|_| trigger()).collect();
    std::thread::sleep(Duration::from_millis(400));
    // Down for 2 s while jobs run; asked meanwhile, the server says the store is away.
    let restart = std::thread::spawn(|| slipway_testkit::postgres::cluster().restart(Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(800));
    assert!(!restart.is_finished(), "{:?}", restart.join());
    // Asked meanwhile, the server waits for its database (up to the pool's 10 s) and answers.
    let t = Instant::now();
    let (code, text) = server.call("GET", "/api/v1/pipelines/1", None);
    assert_eq!(code, 200, "{text}");
    assert!(t.elapsed() > Duration::from_millis(500), "answered while the database was down? {:?}", t.elapsed());
    restart.join().unwrap();
    ids.extend((0..4).map(|_| trigger()));
    for id in &ids {
        let p = server.wait(*id, Duration::from_secs(90));
        assert_eq!(p["status"], "success", "{p}");
        for j in p["jobs"].as_array().unwrap() {
            assert_eq!(j["attempts"], 1, "ran once: {p}");
        }
    }
    let (code, _) = server.call("GET", "/readyz", None);
    assert_eq!(code, 200);
    drop(agents);
}

/// The API, fuzzed from its own OpenAPI 3.1 document by schemathesis (PyPI): generated and
/// mutated inputs on every operation get 4xx answers with a clear message, never a 5xx.
/// The long-poll job request is left out (each call may wait its `wait_ms`, up to 60 s).
#[test]
fn api_inputs_fuzzed_from_the_openapi_document_never_get_a_server_error() {
    let st = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/schemathesis");
    assert!(st.exists(), "schemathesis is missing: run scripts/setup");
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "build:\n  script: [echo hi]\nenvironments:\n  dev:\n    instances: 1\n    listen: 127.0.0.1:9\n",
    )]);
    let server = Server::start("30s");
    // An agent, so the pipelines the fuzzer starts end (a followed log ends with its job).
    let (_agent, _d) = server.agent("fuzz");
    let doc = server.json("/api/v1/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/projects/{name}/environments/{env}/deploy"]["post"].is_object(), "{doc}");
    server.add_project("app", &repo);
    let work = tempfile::tempdir().unwrap();
    // Path parameters name the project that exists, so operations get past the 404.
    std::fs::write(work.path().join("schemathesis.toml"), "[parameters]\n\"path.name\" = \"app\"\n").unwrap();
    let out = Command::new(&st)
        .current_dir(work.path())
        .args([
            "--no-color",
            "--config-file",
            "schemathesis.toml",
            "run",
            &format!("{}/api/v1/openapi.json", server.url),
        ])
        .args(["-H", &format!("Authorization: Bearer {}", server.admin)])
        .args(["--checks", "not_a_server_error", "--max-examples", "30", "--request-timeout", "20"])
        .args(["--exclude-path", "/api/v1/jobs/request", "--generation-deterministic"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" passed") && !text.contains("FAILURES"), "{text}");
    // The server is still there and sane.
    assert_eq!(server.call("GET", "/readyz", None).0, 200);
}

/// `--retention`: a pipeline that ended longer ago is forgotten with its logs.
#[test]
fn pipelines_past_the_retention_are_forgotten_with_their_logs() {
    let repo = Repo::new(&[(".gitlab-ci.yml", "job:\n  script: [echo kept]\n  artifacts:\n    paths: [out]\n")]);
    let server = Server::start_with(&["--lease", "30s", "--retention", "1s"]);
    let (_agent, _d) = server.agent("a1");
    server.add_project("app", &repo);
    let id = server.trigger("app", None);
    assert_eq!(server.wait(id, Duration::from_secs(20))["status"], "success");
    let logs = server.data.path().join("logs").join(id.to_string());
    assert!(logs.exists());
    let t = Instant::now();
    while server.call("GET", &format!("/api/v1/pipelines/{id}"), None).0 != 404 {
        assert!(t.elapsed() < Duration::from_secs(15), "still there after the retention");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!logs.exists(), "its logs went with it");
}

/// A network namespace this test made, joined to the host by a veth pair: another machine,
/// reachable only at its own address. Removed (with its link) when dropped.
struct Netns {
    name: String,
    host_ip: String,
    /// The other machine's address.
    far_ip: String,
    /// Its end of the veth pair.
    far_link: String,
    host_link: String,
}

impl Netns {
    fn new() -> Netns {
        // Unique per test of this process too: tests run in parallel.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (pid, k) = (std::process::id(), std::process::id() * 4 + n % 4);
        let (name, host, far) = (format!("slw{pid}x{n}"), format!("vh{pid}x{n}"), format!("vn{pid}x{n}"));
        let net = format!("10.{}.{}", 200 + (k / 250) % 50, k % 250);
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &far]);
        ip(&["link", "set", &far, "netns", &name]);
        ip(&["addr", "add", &format!("{net}.1/30"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        ip(&["netns", "exec", &name, "ip", "addr", "add", &format!("{net}.2/30"), "dev", &far]);
        ip(&["netns", "exec", &name, "ip", "link", "set", &far, "up"]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        Netns { name, host_ip: format!("{net}.1"), far_ip: format!("{net}.2"), far_link: far, host_link: host }
    }

    /// Cuts (or restores) the other machine's link.
    fn link(&self, up: bool) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "ip", "link", "set", &self.far_link, if up { "up" } else { "down" }])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Server {
    /// An agent on the other machine `ns`, with its data in `data`.
    fn agent_in(&self, ns: &Netns, name: &str, data: &std::path::Path) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(bin())
            .args(["agent", "--server", &self.url, "--token", &self.admin, "--name", name])
            .env("SLIPWAY_DATA_DIR", data)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Proc(child)
    }

    /// Waits until `GET /api/v1/agents` lists (or no longer lists) agent `name`.
    fn wait_connected(&self, name: &str, connected: bool) {
        let t = Instant::now();
        loop {
            let agents = self.json("/api/v1/agents");
            let listed = agents.as_array().unwrap().iter().any(|a| a["name"] == name);
            if listed == connected {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "agent {name} connected={listed}: {agents}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).output();
    }
}

/// Agents on other machines (a network namespace of the test's own, joined by a veth pair to
/// the server's address and nothing else): they take jobs over the network; cut off mid-job,
/// the job goes to another agent once its lease runs out, and the cut-off agent's late
/// report, once its link is back, changes nothing.
#[test]
fn an_agent_on_another_machine_runs_jobs_and_a_network_cut_moves_its_job() {
    let ns = Netns::new();
    let addr = format!("{}:{}", ns.host_ip, free_addr().rsplit(':').next().unwrap());
    let repo = Repo::new(&[(".gitlab-ci.yml", "job:\n  script:\n    - sleep ${NAP:-0}\n    - echo ran\n")]);
    let mut server = Server {
        url: format!("http://{addr}"),
        admin: String::new(),
        data: tempfile::Builder::new().prefix("slipway-server-").tempdir().unwrap(),
        proc: None,
    };
    server.launch("3s");
    let far_data = tempfile::Builder::new().prefix("slipway-agent-").tempdir().unwrap();
    let far = server.agent_in(&ns, "far", far_data.path());
    server.add_project("app", &repo);
    let trigger = |nap: &str| {
        let vars = format!(r#"{{"variables": [["NAP", "{nap}"]]}}"#);
        let (_, text) = server.call("POST", "/api/v1/projects/app/pipelines", Some(&vars));
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].as_i64().unwrap()
    };
    let p = server.wait(trigger("0"), Duration::from_secs(30));
    assert_eq!((p["status"].as_str(), p["jobs"][0]["agent"].as_str()), (Some("success"), Some("far@admin")), "{p}");

    // Cut off mid-job: the job is queued again when its lease (3 s) runs out, and runs here.
    let id = trigger("6");
    let t = Instant::now();
    while server.json(&format!("/api/v1/pipelines/{id}"))["jobs"][0]["status"] != "running" {
        assert!(t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    ns.link(false);
    let (_near, _dn) = server.agent("near");
    let p = server.wait(id, Duration::from_secs(40));
    let job = &p["jobs"][0];
    assert_eq!((p["status"].as_str(), job["agent"].as_str()), (Some("success"), Some("near@admin")), "{p}");
    // The cut-off agent's long-poll was still open on the server, which may have handed it
    // the requeued job too (an answer that never arrived): one more lease, counted.
    assert!((2..=3).contains(&job["attempts"].as_u64().unwrap()), "{p}");
    ns.link(true);
    std::thread::sleep(Duration::from_secs(3));
    let p = server.json(&format!("/api/v1/pipelines/{id}"));
    assert_eq!(
        (p["jobs"][0]["agent"].as_str(), p["jobs"][0]["status"].as_str()),
        (Some("near@admin"), Some("success")),
        "{p}"
    );
    let (_, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log"), None);
    assert_eq!(log.lines().filter(|l| *l == "ran").count(), 1, "{log}");
    drop(far);
}

/// Containers under an agent connected to the server (`target: docker`, `agent: {name: …}`):
/// an admin deploys an image archive through the server, which sends the archive through the
/// agent's tunnel into its data directory; that agent loads it into its Docker Engine and runs
/// the containers, labelled as its own.
#[test]
fn containers_on_a_connected_agent_get_their_image_through_its_tunnel() {
    require("docker", "--version");
    let addr = free_addr();
    let repo = websvc_project(&format!(
        "  boxed:\n    target: docker\n    agent: {{name: dock}}\n    instances: 2\n    listen: {addr}\n    health: {{http: /healthz, interval: 200ms, deadline: 10s}}\n"
    ));
    let server = Server::start("30s");
    let (dock, dock_data) = server.agent("dock");
    server.wait_connected("dock", true);
    server.add_project("web", &repo);
    let tar = tempfile::tempdir().unwrap();
    let image = tar.path().join("image.tar");
    websvc_image("v1", &image);
    let r = Run::from(
        Command::new(bin())
            .args(["deploy", "boxed", "--artifacts", image.to_str().unwrap()])
            .args(["--server", &server.url, "--token", &server.admin, "--project", "web"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("sent image archive") && r.stderr.contains("to agent `dock`"), "{}", r.debug());
    assert_eq!(served(&addr).as_deref(), Some("v1"));
    let label = format!("label=dev.slipway.agent={}", dock_data.path().canonicalize().unwrap().display());
    let ids = Command::new("docker").args(["ps", "-q", "--filter", &label]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ids.stdout).lines().count(), 2, "the agent's own containers");
    assert_eq!(dock_data.path().join("artifacts/images").read_dir().unwrap().count(), 1, "the archive is there");
    // Stopping the agent stops its containers: none outlives it.
    drop(dock);
    let ids = Command::new("docker").args(["ps", "-aq", "--filter", &label]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ids.stdout).trim(), "", "no container left behind");
}

/// Environments on an agent connected to the server, with no SSH anywhere: an agent on
/// another machine (a network namespace) dials out to the server and keeps its tunnel open;
/// a pipeline's deploy job deploys `far` (`agent: {name: far}`) through the server, which
/// sends the build through the tunnel into that agent's data directory and rolls it out
/// there; the service answers at the other machine's address. While the agent is away, a
/// deploy is refused naming it and how to start it; back, it runs what it ran and is driven
/// again.
#[test]
fn environments_on_an_agent_connected_to_the_server_deploy_through_its_tunnel() {
    require_go();
    let ns = Netns::new();
    let port = |a: String| a.rsplit(':').next().unwrap().to_string();
    let svc = format!("{}:{}", ns.far_ip, port(free_addr()));
    let pipeline = format!(
        r#"stages: [build, deploy]
build:
  stage: build
  script:
    - slipway go build --version "v-$CI_COMMIT_SHORT_SHA"
  artifacts:
    paths: [dist/]
deploy-far:
  stage: deploy
  environment: far
  script:
    - slipway deploy far
environments:
  far:
    agent: {{name: far}}
    instances: 2
    listen: {svc}
    health: {{http: /healthz, interval: 200ms, deadline: 10s}}
"#
    );
    let repo = websvc_repo(&pipeline);
    let mut server = Server {
        url: format!("http://{}:{}", ns.host_ip, port(free_addr())),
        admin: String::new(),
        data: tempfile::Builder::new().prefix("slipway-server-").tempdir().unwrap(),
        proc: None,
    };
    server.launch("10s");
    let far_data = tempfile::Builder::new().prefix("slipway-far-").tempdir().unwrap();
    let far = server.agent_in(&ns, "far", far_data.path());
    server.wait_connected("far", true);
    server.add_project("web", &repo);
    let id = server.trigger("web", None);
    let p = server.wait(id, Duration::from_secs(180));
    let log = |i: usize| server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/{i}/log"), None).1;
    assert_eq!(p["status"], "success", "{p}\nbuild:\n{}\ndeploy:\n{}", log(0), log(1));
    let v1 = format!("v-{}", &repo.git(&["rev-parse", "HEAD"]).trim()[..8]);
    assert!(log(1).contains("sent websvc (linux/amd64) to agent `far`"), "{}", log(1));
    assert_eq!(served(&svc).as_deref(), Some(v1.as_str()), "served at the other machine's address");
    // The binary is in the far agent's own store, run from there.
    let stored: Vec<_> = std::fs::read_dir(far_data.path().join("artifacts/sha256")).unwrap().collect();
    assert_eq!(stored.len(), 1, "{stored:?}");

    // The server keeps its address and its admin token across a restart.
    let (url, admin) = (server.url.clone(), server.admin.clone());
    let cli = |args: &[&str]| {
        Run::from(
            Command::new(bin())
                .args(args)
                .args(["--server", &url, "--token", &admin, "--project", "web"])
                .env("NO_COLOR", "1")
                .output()
                .unwrap(),
        )
    };
    let st = cli(&["status", "far"]);
    assert_eq!(st.code, 0, "{}", st.debug());
    assert!(st.stdout.contains(&v1) && st.stdout.contains("2/2"), "{}", st.stdout);
    // Its instances' logs, read by the server from the agent that runs them.
    let logs = cli(&["logs", "--env", "far", "-n", "10"]);
    assert_eq!(logs.code, 0, "{}", logs.debug());
    assert!(logs.stdout.contains(&format!("websvc {v1} listening on")), "{}", logs.debug());

    // Away: refused before anything is recorded, saying which agent and how to start it.
    drop(far);
    server.wait_connected("far", false);
    let rb = cli(&["deploy", "far", "--version", &v1, "--force"]);
    assert_eq!(rb.code, 3, "{}", rb.debug());
    assert!(
        rb.stderr.contains("agent `far` is not connected to the server")
            && rb.stderr.contains("slipway agent --server URL --token AGENT_TOKEN --name far"),
        "{}",
        rb.debug()
    );
    let logs = cli(&["logs", "--env", "far"]);
    assert_eq!(logs.code, 4, "{}", logs.debug());
    assert!(logs.stderr.contains("agent `far` is not connected to the server"), "{}", logs.debug());
    // Back: it runs its release again from its own state, and the server drives it.
    let _far = server.agent_in(&ns, "far", far_data.path());
    server.wait_connected("far", true);
    let t = Instant::now();
    while served(&svc).as_deref() != Some(v1.as_str()) {
        assert!(t.elapsed() < Duration::from_secs(20), "far did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = cli(&["deploy", "far", "--version", &v1, "--force"]);
    assert_eq!(again.code, 0, "{}", again.debug());
    assert!(!again.stdout.contains("sent websvc"), "the agent had the binary: {}", again.stdout);
    assert_eq!(served(&svc).as_deref(), Some(v1.as_str()));

    // A network cut long enough for the agent to give its link up (keepalives): once the
    // network is back it dials again, its new link replaces the one the server still
    // holds, and the server drives it again.
    let since = |server: &Server| server.json("/api/v1/agents")[0]["since_ms"].as_i64().unwrap_or(0);
    let before = since(&server);
    ns.link(false);
    // Longer than the agent takes to give a silent link up (~12 s: keepalives after 5 s idle,
    // at most 10 s without an ACK).
    std::thread::sleep(Duration::from_secs(18));
    ns.link(true);
    let t = Instant::now();
    // (The server may also drop the silent link on its own before the agent is back: listed
    // again, with a later `since_ms`, is what counts.)
    while since(&server) <= before {
        assert!(t.elapsed() < Duration::from_secs(30), "the agent did not dial again");
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = cli(&["status", "far"]);
    assert_eq!(st.code, 0, "{}", st.debug());
    assert!(st.stdout.contains(&v1) && st.stdout.contains("2/2"), "{}", st.stdout);

    // `kill -9` of the server leaves its end of the tunnel behind (a stale socket file); the
    // next server binds it again and the agent, dialling on its own, is driven as before.
    server.kill9();
    assert!(slipway_socket(server.data.path(), "far").exists(), "a stale socket is left");
    server.launch("10s");
    server.wait_connected("far", true);
    let st = cli(&["status", "far"]);
    assert_eq!(st.code, 0, "{}", st.debug());
    assert!(st.stdout.contains(&v1) && st.stdout.contains("2/2"), "{}", st.stdout);
}

/// The server's end of a connected agent's tunnel.
fn slipway_socket(server_data: &std::path::Path, agent: &str) -> std::path::PathBuf {
    server_data.join("agents").join(format!("{agent}.sock"))
}

/// A real git server on loopback: `git http-backend` behind lighttpd (Debian), serving the
/// bare repositories under its `repos/` folder.
struct GitWeb {
    dir: tempfile::TempDir,
    port: String,
    _lighttpd: Proc,
}

impl GitWeb {
    fn start() -> GitWeb {
        let web = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(web.path().join("repos")).unwrap();
        let backend = String::from_utf8(Command::new("git").arg("--exec-path").output().unwrap().stdout).unwrap();
        let port = free_addr().rsplit(':').next().unwrap().to_string();
        let conf = format!(
            r#"server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{root}/error.log"
server.modules = ("mod_alias", "mod_cgi", "mod_setenv", "mod_accesslog")
accesslog.filename = "{root}/access.log"
alias.url = ("/git" => "{backend}/git-http-backend")
$HTTP["url"] =~ "^/git" {{
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "{root}/repos", "GIT_HTTP_EXPORT_ALL" => "1")
}}
"#,
            root = web.path().display(),
            backend = backend.trim()
        );
        std::fs::write(web.path().join("lighttpd.conf"), conf).unwrap();
        let lighttpd = Proc(
            Command::new("lighttpd")
                .args(["-D", "-f"])
                .arg(web.path().join("lighttpd.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        GitWeb { dir: web, port, _lighttpd: lighttpd }
    }

    /// Serves a bare copy of `work` as `NAME.git`, added to `work` as its remote `web`; the URL.
    fn serve(&self, work: &Repo, name: &str) -> String {
        let bare = self.dir.path().join(format!("repos/{name}.git"));
        work.git(&["clone", "-q", "--bare", work.path().to_str().unwrap(), bare.to_str().unwrap()]);
        work.git(&["remote", "add", "web", bare.to_str().unwrap()]);
        let url = format!("http://127.0.0.1:{}/git/{name}.git", self.port);
        let t = Instant::now();
        while !Command::new("git").args(["ls-remote", &url]).output().unwrap().status.success() {
            assert!(t.elapsed() < Duration::from_secs(10), "lighttpd does not serve {url}");
            std::thread::sleep(Duration::from_millis(100));
        }
        url
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

/// A real git server: `git http-backend` behind lighttpd (Debian) on loopback. The server
/// polls it, mirrors from it, and agents check out from it over HTTP.
#[test]
fn projects_served_by_git_http_backend_behind_lighttpd_are_polled_and_built() {
    let work = Repo::new(&[(".gitlab-ci.yml", "job:\n  script: [echo \"built $CI_COMMIT_SHORT_SHA\"]\n")]);
    let web = GitWeb::start();
    let url = web.serve(&work, "app");
    let server = Server::start("30s");
    let (_agent, _d) = server.agent("a1");
    let body = format!(r#"{{"name": "app", "repo": "{url}", "poll_seconds": 1}}"#);
    let (code, text) = server.call("POST", "/api/v1/projects", Some(&body));
    assert_eq!(code, 201, "{text}");
    std::thread::sleep(Duration::from_millis(1500));
    // A push to the git server: polling sees it, the agent builds it from the same server.
    work.write("NEWS", "one\n");
    work.git(&["add", "-A"]);
    work.git(&["commit", "-qm", "news"]);
    work.git(&["push", "-q", "web", "main"]);
    let sha = work.git(&["rev-parse", "HEAD"]).trim().to_string();
    let t = Instant::now();
    let id = loop {
        let list = server.json("/api/v1/pipelines?project=app");
        if let Some(p) = list.as_array().unwrap().iter().find(|p| p["commit"] == sha.as_str() && p["source"] == "push")
        {
            break p["id"].as_i64().unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(15), "polling did not see the push: {list}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let p = server.wait(id, Duration::from_secs(30));
    assert_eq!(p["status"], "success", "{p}");
    let (_, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log"), None);
    assert!(log.contains(&format!("built {}", &sha[..8])), "{log}");
    let access = web.access_log();
    assert!(access.contains("git-upload-pack"), "fetched over HTTP: {access}");
}

/// Caches are shared through the server: a job on one agent saves a cache, a job with the
/// same key on another agent (which never had it) restores it.
#[test]
fn caches_saved_on_one_agent_are_restored_on_another() {
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "stages: [one, two]\nfill:\n  stage: one\n  tags: [one]\n  cache: {key: deps, paths: [deps/]}\n  script:\n    - mkdir -p deps && echo \"from $CI_PIPELINE_ID\" > deps/x\nuse:\n  stage: two\n  tags: [two]\n  cache: {key: deps, paths: [deps/], policy: pull}\n  script:\n    - echo \"cached=$(cat deps/x)\"\n",
    )]);
    let server = Server::start("30s");
    let (_a, _da) = server.agent_with("a", &["--tags", "one"]);
    let (_b, _db) = server.agent_with("b", &["--tags", "two"]);
    server.add_project("app", &repo);
    let id = server.trigger("app", None);
    let p = server.wait(id, Duration::from_secs(30));
    assert_eq!(p["status"], "success", "{p}");
    assert_eq!((p["jobs"][0]["agent"].as_str(), p["jobs"][1]["agent"].as_str()), (Some("a@admin"), Some("b@admin")));
    let (_, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/1/log"), None);
    assert!(
        log.contains("Downloading cache `deps` from the server") && log.contains(&format!("cached=from {id}")),
        "{log}"
    );
}

/// A webhook is answered as soon as its pipeline is recorded; the plan comes after. A server
/// that stopped in between (a recorded pipeline with no jobs yet) plans it when it is back.
#[test]
fn a_recorded_pipeline_not_planned_yet_is_planned_when_the_server_is_back() {
    let repo = Repo::new(&[(".gitlab-ci.yml", "job:\n  script: [echo planned late]\n")]);
    let mut server = Server::start("30s");
    server.add_project("app", &repo);
    server.kill9();
    // What a webhook leaves when the server dies right after answering it.
    let sha = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    let id = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let store = slipway_store::Store::open(server.data.path()).await.unwrap();
        store
            .create_run(&slipway_store::NewRun {
                project: "app".into(),
                ref_name: Some("main".into()),
                commit_sha: Some(sha.clone()),
                source: "push".into(),
                jobs: Vec::new(),
                variables: Vec::new(),
                author: None,
                triggered_by: Some("webhook: github".into()),
            })
            .await
            .unwrap()
    });
    server.launch("30s");
    let (_agent, _d) = server.agent("a1");
    let p = server.wait(id, Duration::from_secs(30));
    assert_eq!(p["status"], "success", "{p}");
    assert_eq!(p["author"], "t <t@example.com>", "{p}");
    let (_, log) = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log"), None);
    assert!(log.contains("planned late"), "{log}");
}

/// The access matrix: every route of the API (from the code's own table, access::RULES) ×
/// every built-in role, bound on one project and on every project, is allowed or refused as
/// the roles say; a project the caller holds nothing on answers exactly as a missing one;
/// listings show only what the caller may read; every refusal is in the audit log, whose
/// chain `slipway audit verify` checks — and a changed row breaks it.
#[test]
fn every_endpoint_allows_and_denies_every_role_as_the_permission_table_says() {
    use slipway_model::access::{Permission, builtin};
    use slipway_server::access::{Need, RULES};
    let server = Server::start("30s");
    let pipeline = "build:\n  script: [echo hi]\nenvironments:\n  dev:\n    service: {command: [\"true\"]}\n";
    let (shop, blog) = (Repo::new(&[(".slipway.yml", pipeline)]), Repo::new(&[(".slipway.yml", pipeline)]));
    server.add_project("shop", &shop);
    server.add_project("blog", &blog);
    let (shop_run, blog_run) = (server.trigger("shop", None), server.trigger("blog", None));
    // One user per built-in role and place, signed in with a password.
    let roles = builtin();
    let mut users = Vec::new();
    for role in &roles {
        for place in ["shop", "all"] {
            let name = format!("{}-{place}", role.name);
            let project = if place == "all" { "null".to_string() } else { "\"shop\"".to_string() };
            let body = format!(
                r#"{{"name": "{name}", "password": "a long passphrase {name}", "bindings": [{{"role": "{}", "project": {project}}}]}}"#,
                role.name
            );
            let (code, text) = server.call("POST", "/api/v1/users", Some(&body));
            assert_eq!(code, 201, "{text}");
            let login = format!(r#"{{"user": "{name}", "password": "a long passphrase {name}"}}"#);
            let (code, text) = server.call_as(None, "POST", "/api/v1/login", Some(&login));
            assert_eq!(code, 201, "{text}");
            let token =
                serde_json::from_str::<serde_json::Value>(&text).unwrap()["token"].as_str().unwrap().to_string();
            users.push((name, role.clone(), place == "all", token));
        }
    }
    let fill = |path: &str, project: &str, run: i64| {
        path.replace("{name}", project)
            .replace("{env}", "dev")
            .replace("{id}", &run.to_string())
            .replace("{run}", &run.to_string())
            .replace("{index}", "0")
            .replace("{job}", "build")
            .replace("{user}", "nobody-here")
            .replace("{key}", "k")
    };
    let mut checked = 0;
    for rule in RULES {
        if rule.need == Need::Public {
            continue;
        }
        // Routes that name a token by id take a hex id; pipelines' `{id}` is a run.
        let path = match rule.path {
            "/api/v1/tokens/{id}" => "/api/v1/tokens/00000000".to_string(),
            p if p.starts_with("/api/v1/projects/{name}/schedules/{id}") => {
                fill(&p.replace("{id}", "999"), "shop", shop_run)
            }
            p => fill(p, "shop", shop_run),
        };
        for (name, role, global, token) in &users {
            let (code, text) = server.call_as(Some(token), rule.method, &path, Some("{}"));
            let need = |v: &str, r: &str| {
                let r = if r == "environments" && rule.path.contains("{env}") {
                    "environments/dev".to_string()
                } else {
                    r.to_string()
                };
                Permission::need(v, &r)
            };
            let allowed = match rule.need {
                Need::Public | Need::Signed | Need::Page => true,
                Need::Agent => *global && role.grants(&need("write", "settings")).is_some(),
                Need::Server(v, r) => *global && role.grants(&need(v, r)).is_some(),
                Need::Listed(..) | Need::Owned(..) => true,
                Need::Project(v, r) | Need::Pipeline(v, r) => role.grants(&need(v, r)).is_some(),
            };
            let what = format!("{} {path} as {name}: {code} {text}", rule.method);
            if allowed {
                assert!(code != 401 && code != 403, "should be allowed: {what}");
            } else {
                assert_eq!(code, 403, "should be refused: {what}");
                let e: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(e["code"], "forbidden", "{what}");
                if let Need::Project(v, r) | Need::Pipeline(v, r) | Need::Server(v, r) = rule.need {
                    let want = format!("`{name}` lacks `{}`", need(v, r));
                    assert!(e["message"].as_str().unwrap().starts_with(&want), "{what}");
                }
            }
            checked += 1;
            // Another project's things do not exist for a caller bound on `shop` only.
            if !*global && matches!(rule.need, Need::Project(..) | Need::Pipeline(..)) {
                let other = match rule.path {
                    p if p.starts_with("/api/v1/projects/{name}/schedules/{id}") => {
                        fill(&p.replace("{id}", "999"), "blog", blog_run)
                    }
                    p => fill(p, "blog", blog_run),
                };
                let (code, text) = server.call_as(Some(token), rule.method, &other, Some("{}"));
                let e: serde_json::Value = serde_json::from_str(&text).unwrap();
                let missing = match rule.need {
                    Need::Pipeline(..) => format!("pipeline {blog_run} does not exist"),
                    _ => "project `blog` does not exist".to_string(),
                };
                assert_eq!(
                    (code, e["message"].as_str()),
                    (404, Some(missing.as_str())),
                    "{} {other} as {name}",
                    rule.method
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 400, "{checked}");
    // Listings show only what the caller may read.
    let viewer = &users.iter().find(|u| u.0 == "viewer-shop").unwrap().3;
    let (_, text) = server.call_as(Some(viewer), "GET", "/api/v1/projects", None);
    assert!(text.contains("\"shop\"") && !text.contains("blog"), "{text}");
    let (_, text) = server.call_as(Some(viewer), "GET", "/api/v1/pipelines", None);
    assert!(text.contains("\"shop\"") && !text.contains("blog"), "{text}");
    let (code, text) = server.call_as(Some(viewer), "GET", "/api/v1/pipelines?project=blog", None);
    assert_eq!((code, text.trim()), (200, "[]"));
    // Every refusal is in the audit log, and the chain is whole.
    let audit = server.json("/api/v1/audit?limit=10000");
    let denied = audit.as_array().unwrap().iter().filter(|e| e["outcome"] == "denied").count();
    assert!(denied > 100, "{denied}");
    let r = Run::from(
        Command::new(bin())
            .args(["audit", "verify", "--server", &server.url, "--token", &server.admin])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("entries") && r.stdout.contains("intact"), "{}", r.debug());
    // A changed row breaks it.
    let db = server.data.path().join("slipway.db");
    let changed = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE audit SET actor='nobody' WHERE seq=5\"); c.commit()"])
        .arg(&db)
        .status()
        .unwrap();
    assert!(changed.success());
    let r = Run::from(
        Command::new(bin())
            .args(["audit", "verify", "--server", &server.url, "--token", &server.admin])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(r.stderr.contains("entry 5 was changed after it was written"), "{}", r.debug());
}

/// A user signs in with the CLI (the token kept 0600), makes a scoped token that can read but
/// not trigger, revokes it; wrong passwords are throttled; an expired token says so.
#[test]
fn users_sign_in_with_the_cli_and_tokens_are_scoped_expire_and_are_revoked() {
    let server = Server::start("30s");
    let repo = Repo::new(&[(".slipway.yml", "build:\n  script: [echo hi]\n")]);
    server.add_project("shop", &repo);
    let home = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(bin());
        c.args(args).env("XDG_CONFIG_HOME", home.path()).env("NO_COLOR", "1").env_remove("SLIPWAY_TOKEN");
        c.env("SLIPWAY_SERVER", &server.url);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        Run::from(child.wait_with_output().unwrap())
    };
    let admin = ["--token", server.admin.as_str()];
    let r = cli(
        &[&["user", "add", "alice", "--role", "developer@shop", "--password-stdin"][..], &admin].concat(),
        Some("alice's long passphrase\n"),
    );
    assert_eq!(r.code, 0, "{}", r.debug());
    // A short password is refused, naming the field.
    let r = cli(&[&["user", "add", "bob", "--password-stdin"][..], &admin].concat(), Some("short\n"));
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("at least 12 characters"), "{}", r.debug());
    let r = cli(&["login", "--user", "alice", "--password-stdin"], Some("alice's long passphrase\n"));
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("signed in to") && r.stdout.contains("as alice"), "{}", r.debug());
    let file = home.path().join("slipway/credentials.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // Later commands need no token.
    let r = cli(&["whoami"], None);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("alice (user token") && r.stdout.contains("developer on shop"), "{}", r.debug());
    let r = cli(&["trigger", "shop"], None);
    assert_eq!(r.code, 0, "{}", r.debug());
    // A read-only token reads, and may not trigger.
    let r = cli(&["token", "create", "ro", "--scope", "read:*"], None);
    assert_eq!(r.code, 0, "{}", r.debug());
    let ro = r.stdout.trim().to_string();
    assert!(ro.starts_with("slw_"), "{}", r.debug());
    let (code, _) = server.call_as(Some(&ro), "GET", "/api/v1/pipelines", None);
    assert_eq!(code, 200);
    let (code, body) = server.call_as(Some(&ro), "POST", "/api/v1/projects/shop/pipelines", None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("is scoped to read:*: it lacks `write:pipelines`"), "{body}");
    // A token cannot make a wider one than itself.
    let (code, body) =
        server.call_as(Some(&ro), "POST", "/api/v1/tokens", Some(r#"{"name": "w", "scopes": ["write:*"]}"#));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("wider than the scopes"), "{body}");
    // Listed with its last use, revoked by id, then refused.
    let r = cli(&["token", "list", "--json"], None);
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let t = list.as_array().unwrap().iter().find(|t| t["name"] == "ro").unwrap().clone();
    assert!(t["last_used_at"].is_string(), "{t}");
    assert!(!r.stdout.contains(&ro), "a listing never shows a token");
    let r = cli(&["token", "revoke", t["id"].as_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.debug());
    let (code, body) = server.call_as(Some(&ro), "GET", "/api/v1/pipelines", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("was revoked"), "{body}");
    // An expired token says so.
    let (_, body) =
        server.call_as(Some(&server.admin), "POST", "/api/v1/tokens", Some(r#"{"name": "brief", "expires_in": 1}"#));
    let brief = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let (code, body) = server.call_as(Some(&brief), "GET", "/api/v1/whoami", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("expired"), "{body}");
    // Wrong passwords: five are answered, then the sixth waits.
    let wrong = r#"{"user": "alice", "password": "not the passphrase"}"#;
    for _ in 0..5 {
        let (code, _) = server.call_as(None, "POST", "/api/v1/login", Some(wrong));
        assert_eq!(code, 401);
    }
    let (code, body) = server.call_as(
        None,
        "POST",
        "/api/v1/login",
        Some(r#"{"user": "alice", "password": "alice's long passphrase"}"#),
    );
    assert_eq!(code, 429, "even the right password waits: {body}");
    assert!(body.contains("too many failed sign-ins"), "{body}");
    // An agent token bound to one name joins under that name only.
    let r = cli(&[&["token", "create", "ci1", "--agent", "web-1"][..], &admin].concat(), None);
    assert_eq!(r.code, 0, "{}", r.debug());
    let agent_token = r.stdout.trim().to_string();
    let agent_dir = tempfile::tempdir().unwrap();
    let mut agent = Command::new(bin());
    agent.args(["agent", "--server", &server.url, "--token", &agent_token, "--name", "web-2"]);
    agent.env("SLIPWAY_DATA_DIR", agent_dir.path()).env("NO_COLOR", "1");
    let out = agent.stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("is bound to agent `web-1`, not `web-2`"), "{text}");
    // Nor may it act as a user.
    let (code, body) = server.call_as(Some(&agent_token), "GET", "/api/v1/projects/shop/environments", None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("may only speak the job protocol"), "{body}");
    // Signing out revokes the kept token.
    let r = cli(&["logout"], None);
    assert!(r.stdout.contains("revoked"), "{}", r.debug());
    let r = cli(&["whoami"], None);
    assert_eq!(r.code, 2, "{}", r.debug());
    // A change is recorded with what it was before and after.
    let r = cli(&[&["user", "grant", "alice", "viewer"][..], &admin].concat(), None);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("viewer on *") && r.stdout.contains("developer on shop"), "{}", r.debug());
    let audit = server.json("/api/v1/audit?actor=admin&limit=10000");
    let grant =
        audit.as_array().unwrap().iter().rev().find(|e| e["action"] == "POST /api/v1/users/{user}/bindings").unwrap();
    assert_eq!(grant["detail"]["before"].as_array().unwrap().len(), 1, "{grant}");
    assert_eq!(grant["detail"]["after"].as_array().unwrap().len(), 2, "{grant}");
    // Secrets of sign-in never reach the audit log.
    let audit = server.json("/api/v1/audit?limit=10000").to_string();
    assert!(!audit.contains("passphrase") && !audit.contains(&ro) && !audit.contains("slw_"), "{audit}");
    assert!(audit.contains("\"denied\""), "wrong passwords are recorded");
}

/// Protected environments from the server's access file: a deployer deploys, its release waits
/// for an approval the same person may not give (four eyes, real identities from tokens),
/// someone else approves it; a viewer may not deploy; an environment that takes deploys from
/// tags only refuses the default branch.
#[test]
fn protected_environments_need_an_approval_from_someone_else() {
    let dist = websvc_build("v7");
    let (prod, stage) = (free_addr(), free_addr());
    let pipeline = format!(
        "build:\n  script: [echo hi]\nenvironments:\n  prod:\n    listen: {prod}\n    health: {{http: /healthz, interval: 200ms, deadline: 10s}}\n  stage:\n    listen: {stage}\n"
    );
    let repo = Repo::new(&[(".slipway.yml", &pipeline)]);
    let conf = tempfile::tempdir().unwrap();
    let access = conf.path().join("access.yml");
    std::fs::write(
        &access,
        "roles:\n  release-manager:\n    permissions: [read:*, deploy:environments/*, approve:environments/*]\nbindings:\n  - {user: alice, role: release-manager, project: shop}\n  - {user: bob, role: release-manager, project: shop}\n  - {user: carol, role: viewer}\nprotected_environments:\n  prod: {refs: [main], approvals: 1}\n  stage: {refs: ['v*']}\n",
    )
    .unwrap();
    // Whoever approves hears that a release waits.
    let hook = HookSink::start(0);
    let notify = conf.path().join("notify.yml");
    std::fs::write(
        &notify,
        format!(
            "route:\n  receiver: approvers\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: approvers\n    webhook_configs: [{{url: 'http://{}/hook'}}]\n",
            hook.addr
        ),
    )
    .unwrap();
    let server = Server::start_with(&[
        "--with-agent",
        "--access",
        access.to_str().unwrap(),
        "--monitor-interval",
        "300ms",
        "--notify",
        notify.to_str().unwrap(),
    ]);
    server.add_project("shop", &repo);
    let token_of = |user: &str| {
        let body = format!(r#"{{"name": "{user}", "password": "{user} has a long password"}}"#);
        assert_eq!(server.call("POST", "/api/v1/users", Some(&body)).0, 201);
        let login = format!(r#"{{"user": "{user}", "password": "{user} has a long password"}}"#);
        let (code, text) = server.call_as(None, "POST", "/api/v1/login", Some(&login));
        assert_eq!(code, 201, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["token"].as_str().unwrap().to_string()
    };
    let (alice, _bob, carol) = (token_of("alice"), token_of("bob"), token_of("carol"));
    let cli = |token: &str, args: &[&str]| {
        let mut c = Command::new(bin());
        c.args(args).args(["--server", &server.url, "--token", token, "--project", "shop"]).env("NO_COLOR", "1");
        c
    };
    // A viewer may not deploy, and is told who may.
    let r = Run::from(cli(&carol, &["deploy", "prod", "--artifacts", dist.to_str().unwrap()]).output().unwrap());
    assert_ne!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("`carol` lacks `deploy:environments/prod`"), "{}", r.debug());
    // A tags-only environment refuses the default branch.
    let r = Run::from(cli(&alice, &["deploy", "stage", "--artifacts", dist.to_str().unwrap()]).output().unwrap());
    assert_ne!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("takes deploys from `v*` only, not from `main`"), "{}", r.debug());
    // Alice's deploy waits for an approval.
    let deploy = cli(&alice, &["deploy", "prod", "--artifacts", dist.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        let h = server.json("/api/v1/projects/shop/environments/prod/releases");
        if h[0]["status"].is_string() && h[0]["status"] != "failed" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no release waits: {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, waits) =
        hook.wait_for("that a release waits", 20, |b| alert_names(b, "firing").contains(&"ApprovalNeeded".to_string()));
    let a = &waits["alerts"][0];
    assert_eq!(
        (a["labels"]["environment"].as_str(), a["labels"]["release"].as_str()),
        (Some("prod"), Some("1")),
        "{waits}"
    );
    assert_eq!(a["annotations"]["approve"], "slipway approve prod 1", "{waits}");
    // She may not approve it herself.
    let r = Run::from(cli(&alice, &["approve", "prod"]).output().unwrap());
    assert_ne!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("`alice` asked for release #1 of `prod` and may not approve it too"), "{}", r.debug());
    assert_eq!(served(&prod), None, "nothing deployed yet");
    // Nor from the dashboard; Bob may, from the overview's button.
    let jars = tempfile::tempdir().unwrap();
    let sign_in = |user: &str| {
        let jar = jars.path().join(format!("{user}.jar"));
        let password = format!("{user} has a long password");
        let (code, _, _) =
            browse(&jar, "POST", &format!("{}/ui/login", server.url), &[("user", user), ("password", &password)]);
        assert_eq!(code, 303);
        let (_, _, page) = browse(&jar, "GET", &format!("{}/ui/", server.url), &[]);
        (jar, page)
    };
    let (alice_jar, page) = sign_in("alice");
    assert!(page.contains("Approve</button>"), "{page}");
    let approve = format!("{}/ui/projects/shop/environments/prod/approve", server.url);
    let (code, _, _) = browse(&alice_jar, "POST", &approve, &[("csrf", &csrf_in(&page)), ("release", "1")]);
    assert_eq!(code, 303);
    let (_, _, page) = browse(&alice_jar, "GET", &format!("{}/ui/", server.url), &[]);
    assert!(page.contains("Not approved") && page.contains("may not approve it too"), "{page}");
    // Bob approves in a real browser: signs in, presses the button, confirms.
    let b = Browser::start();
    b.go(&format!("{}/ui/", server.url));
    b.type_in("#user", "bob");
    b.type_in("#password", "bob has a long password");
    b.click("button[type=submit]");
    assert!(b.text().contains("Waiting for approval"), "{}", b.text());
    b.screenshot("overview-approval");
    b.click("form[action='/ui/projects/shop/environments/prod/approve'] button");
    b.s("POST", "/alert/accept", None);
    let t = Instant::now();
    while !b.text().contains("Approved prod #1") {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", b.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(b.console_errors().is_empty());
    let out = deploy.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(served(&prod).as_deref(), Some("v7"));
    hook.wait_for("that it no longer waits", 20, |b| {
        alert_names(b, "resolved").contains(&"ApprovalNeeded".to_string())
    });
    hook.wait_for("that it is out", 20, |b| alert_names(b, "firing").contains(&"DeploySucceeded".to_string()));
    // The monitor sees it: `up` per instance, and the entry point's traffic per release.
    let t = Instant::now();
    loop {
        let q = server.json("/api/v1/query?query=up%7Benvironment%3D%22prod%22%7D");
        let r = &q["data"]["result"];
        if r[0]["value"][1] == "1" {
            assert_eq!(
                (r[0]["metric"]["version"].as_str(), r[0]["metric"]["project"].as_str()),
                (Some("v7"), Some("shop")),
                "{q}"
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no up series: {q}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The request `served` made is counted by a collection after it (the one that first saw
    // `up` may have come before it).
    let t = Instant::now();
    loop {
        let q = server.json("/api/v1/query?query=slipway_proxy_requests_total%7Benvironment%3D%22prod%22%7D");
        let n = q["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if n >= 1.0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no request counted: {q}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let h = server.json("/api/v1/projects/shop/environments/prod/releases");
    assert_eq!(h[0]["actor"], "alice", "{h}");
    // The audit log names who asked, who was refused and who approved.
    let audit = server.json("/api/v1/audit?limit=1000");
    let approvals: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().ends_with("/approve"))
        .map(|e| (e["actor"].as_str().unwrap().to_string(), e["outcome"].as_str().unwrap().to_string()))
        .collect();
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(approvals, [s("alice", "failed"), s("alice", "failed"), s("bob", "allowed")]);
}

/// Secrets set through the CLI reach the jobs that may have them — as variables, as files,
/// protected ones only on protected refs, an environment's only in its jobs — and appear
/// nowhere else: not in the job's log (whole, split across output chunks, multi-line printed
/// line by line), not in any API answer, not in the database file, not in the data directory.
#[test]
fn secrets_reach_their_jobs_masked_and_appear_nowhere_else() {
    let pipeline = r#"show:
  script:
    - echo "one $API_KEY"
    - printf '%s' "${API_KEY:0:6}"; sleep 0.4; printf '%s\n' "${API_KEY:6}"
    - echo "$CERT"
    - printf '%s\n' "$CERT" | while read -r l; do echo "line $l"; done
    - echo "file at ${KEY_FILE:-none}"; cat "${KEY_FILE:-/dev/null}"; echo
    - echo "prod only ${PROD_TOKEN:-absent}"
    - echo "protected ${PROT:-absent}"
    - echo "group ${GROUP_SECRET:-absent}"
    - test "$(sha256sum < "$KEY_FILE" | cut -d' ' -f1)" = "cff01f1326fb9185cd6f2638ba4efc5bab09852de3fd4d175264988a088d4116" && echo "file ok" || echo "file missing"
    - test "$(printf '%s' "$API_KEY" | sha256sum | cut -d' ' -f1)" = "78a08441f4314f0a2833cfe58c62e555a162264206982cda39f6804f5048f570" && echo "variable ok" || echo "variable missing"
"#;
    // (The file compares digests: the secrets themselves are nowhere in the repository.)
    let repo = Repo::new(&[(".slipway.yml", pipeline)]);
    repo.git(&["branch", "feature"]);
    let server = Server::start_with(&["--with-agent"]);
    server.add_project("shop", &repo);
    let values = [
        ("API_KEY", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", vec![]),
        ("CERT", "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END KEY-----", vec![]),
        ("KEY_FILE", "file-secret-value-0042", vec!["--file"]),
        ("PROD_TOKEN", "prod-only-token-77777", vec!["--env", "prod"]),
        ("PROT", "protected-value-31337", vec!["--protected"]),
    ];
    let all_values: Vec<&str> = values.iter().map(|v| v.1).chain(["group-wide-secret-555"]).collect();
    let cli = |args: &[&str], stdin: &str| server.cli_as_admin("shop", args, stdin);
    for (name, value, flags) in &values {
        let r = cli(&[&["secret", "set", name][..], flags].concat(), &format!("{value}\n"));
        assert_eq!(r.code, 0, "{}", r.debug());
    }
    // A group's secret reaches every project under it, and no other.
    server.add_project("team/app", &repo);
    let r = cli(&["secret", "set", "GROUP_SECRET", "--group", "team"], "group-wide-secret-555\n");
    assert_eq!(r.code, 0, "{}", r.debug());
    // Too short to mask without masking ordinary output: refused, naming the field.
    let r = cli(&["secret", "set", "PIN"], "1234\n");
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("at least 8 bytes") && r.stderr.contains("`value`"), "{}", r.debug());
    let r = cli(&["secret", "set", "bad-name"], "long enough value\n");
    assert_eq!(r.code, 2, "{}", r.debug());
    let list = cli(&["secret", "list", "--json"], "");
    assert_eq!(list.code, 0, "{}", list.debug());
    let mut answers = vec![list.stdout.clone()];
    // On the default branch (protected): every secret but the environment's.
    let main = server.trigger("shop", None);
    let p = server.wait(main, Duration::from_secs(60));
    let log = server.call("GET", &format!("/api/v1/pipelines/{main}/jobs/0/log"), None).1;
    assert_eq!(p["status"], "success", "{p}\n{log}");
    for want in ["one [MASKED]", "variable ok", "file ok", "prod only absent", "protected [MASKED]", "line [MASKED]"] {
        assert!(log.contains(want), "{want}: {log}");
    }
    assert!(log.matches("[MASKED]").count() >= 7, "{log}");
    // On another branch: no protected secret.
    let feature = server.trigger("shop", Some(r#"{"ref": "feature"}"#));
    assert_eq!(server.wait(feature, Duration::from_secs(60))["status"], "success");
    let flog = server.call("GET", &format!("/api/v1/pipelines/{feature}/jobs/0/log"), None).1;
    assert!(flog.contains("protected absent") && flog.contains("variable ok"), "{flog}");
    assert!(log.contains("group absent"), "shop is in no group: {log}");
    let team = server.trigger("team%2Fapp", None);
    assert_eq!(server.wait(team, Duration::from_secs(60))["status"], "success");
    let tlog = server.call("GET", &format!("/api/v1/pipelines/{team}/jobs/0/log"), None).1;
    assert!(tlog.contains("group [MASKED]"), "{tlog}");
    answers.push(tlog);
    answers.push(log);
    answers.push(flog);
    for path in [
        format!("/api/v1/pipelines/{main}"),
        "/api/v1/pipelines".into(),
        "/api/v1/audit?limit=10000".into(),
        "/api/v1/projects/shop/secrets".into(),
        "/api/v1/projects".into(),
    ] {
        answers.push(server.call("GET", &path, None).1);
    }
    // Rotating the key re-seals them, and jobs still get them.
    let r = cli(&["secret", "rotate-key"], "");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("6 secret(s)"), "{}", r.debug());
    let again = server.trigger("shop", None);
    assert_eq!(server.wait(again, Duration::from_secs(60))["status"], "success");
    answers.push(server.call("GET", &format!("/api/v1/pipelines/{again}/jobs/0/log"), None).1);
    // Nowhere: not in an answer, not in any file of the data directory (the database too).
    let mut files = Vec::new();
    let mut dirs = vec![server.data.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_file() {
                files.push(e.path());
            }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("slipway.db")), "{files:?}");
    for value in &all_values {
        let name = &value[..6];
        let pieces: Vec<&str> = std::iter::once(*value).chain(value.lines().filter(|l| l.len() >= 8)).collect();
        for piece in pieces {
            for a in &answers {
                assert!(!a.contains(piece), "{name} in an answer: {a}");
            }
            for f in &files {
                // Compressed logs are checked through the API above.
                if f.extension().is_some_and(|e| e == "gz") {
                    continue;
                }
                let bytes = std::fs::read(f).unwrap_or_default();
                let hit = bytes.windows(piece.len()).any(|w| w == piece.as_bytes());
                assert!(!hit, "{name} in {}", f.display());
            }
        }
    }
}

/// `include:project` and `include:component` name the server's own projects: a shared
/// template and a component with inputs, read from another project at a ref, by the server
/// when it plans and by the agent when it runs the job — and a project the server does not
/// have is an error that lists the ones it has.
#[test]
fn includes_name_the_servers_own_projects() {
    let lib = Repo::new(&[
        ("ci/common.yml", "common:\n  script: [echo \"common from lib\"]\n"),
        (
            "templates/lint.yml",
            "spec:\n  inputs:\n    word:\n      default: hi\n---\nlint:\n  script:\n    - echo \"lint says $[[ inputs.word ]]\"\n",
        ),
    ]);
    lib.git(&["tag", "1.0.0"]);
    let shop = Repo::new(&[(
        ".slipway.yml",
        "include:\n  - project: team/lib\n    file: /ci/common.yml\n  - component: $CI_SERVER_FQDN/team/lib/lint@1.0.0\n    inputs: {word: hello}\nbuild:\n  script: [echo build]\n",
    )]);
    let blog = Repo::new(&[(
        ".slipway.yml",
        "include:\n  - project: team/nope\n    file: /ci.yml\nbuild:\n  script: [echo build]\n",
    )]);
    let server = Server::start_with(&["--with-agent"]);
    server.add_project("team/lib", &lib);
    server.add_project("shop", &shop);
    server.add_project("blog", &blog);
    let id = server.trigger("shop", None);
    let p = server.wait(id, Duration::from_secs(60));
    assert_eq!(p["status"], "success", "{p}");
    let names: Vec<&str> = p["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    for want in ["common", "lint", "build"] {
        assert!(names.contains(&want), "{names:?}");
    }
    let logs: String =
        (0..names.len()).map(|i| server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/{i}/log"), None).1).collect();
    assert!(logs.contains("common from lib") && logs.contains("lint says hello"), "{logs}");
    let id = server.trigger("blog", None);
    let p = server.wait(id, Duration::from_secs(60));
    assert_eq!(p["status"], "failed", "{p}");
    let detail = p["detail"].as_str().unwrap_or("");
    assert!(detail.contains("no project `team/nope` on this server") && detail.contains("`team/lib`"), "{p}");
}

/// A project's signing key is one of its secrets (a file secret and its passphrase): a job
/// signs with it, and neither the key nor the passphrase shows in the job's log, even when the
/// job dumps its environment and prints the key file.
#[test]
fn jobs_sign_with_the_projects_key_and_never_show_it() {
    let keys = tempfile::tempdir().unwrap();
    let pass = "a passphrase of the project";
    let g = Command::new(bin())
        .args(["sign", "generate-key", "--output", "release"])
        .current_dir(keys.path())
        .env("SLIPWAY_SIGNING_PASSWORD", pass)
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let pipeline = r#"sign:
  script:
    - env | sort
    - cat "$SLIPWAY_SIGNING_KEY"
    - echo "pass $SLIPWAY_SIGNING_PASSWORD"
    - echo "release notes" > notes.txt
    - slipway sign blob notes.txt
    - echo "sig $(cat notes.txt.sig)"
"#;
    let repo = Repo::new(&[(".slipway.yml", pipeline)]);
    let server = Server::start_with(&["--with-agent"]);
    server.add_project("shop", &repo);
    let key_file = keys.path().join("release.key");
    let set = |args: &[&str], stdin: &str| server.cli_as_admin("shop", args, stdin);
    let r = set(&["secret", "set", "SLIPWAY_SIGNING_KEY", "--file", "--from-file", key_file.to_str().unwrap()], "");
    assert_eq!(r.code, 0, "{}", r.debug());
    let r = set(&["secret", "set", "SLIPWAY_SIGNING_PASSWORD"], &format!("{pass}\n"));
    assert_eq!(r.code, 0, "{}", r.debug());
    let id = server.trigger("shop", None);
    let p = server.wait(id, Duration::from_secs(60));
    let log = server.call("GET", &format!("/api/v1/pipelines/{id}/jobs/0/log"), None).1;
    assert_eq!(p["status"], "success", "{p}\n{log}");
    let key = std::fs::read_to_string(&key_file).unwrap();
    for line in key.lines().filter(|l| l.len() >= 8) {
        assert!(!log.contains(line), "a line of the key in the log: {line}\n{log}");
    }
    assert!(!log.contains(pass), "{log}");
    assert!(log.contains("pass [MASKED]"), "{log}");
    // The signature the job made verifies with the project's public key.
    let sig = log.lines().find_map(|l| l.strip_prefix("sig ")).expect("the job printed its signature").trim();
    std::fs::write(keys.path().join("notes.txt"), "release notes\n").unwrap();
    std::fs::write(keys.path().join("notes.txt.sig"), sig).unwrap();
    let v = Command::new(bin())
        .args(["sign", "verify-blob", "--key", "release.pub", "notes.txt"])
        .current_dir(keys.path())
        .output()
        .unwrap();
    assert!(v.status.success(), "{}\n{log}", String::from_utf8_lossy(&v.stderr));
}

/// The server collects series and evaluates alert rules — its own rule files and each
/// project's `alerts:` — and answers in the Prometheus HTTP API's shapes, showing a caller
/// only the projects it may read.
#[test]
fn the_server_evaluates_alert_rules_and_answers_prometheus_queries() {
    let conf = tempfile::tempdir().unwrap();
    let rules = conf.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: pipelines\n    rules:\n      - alert: PipelineFailed\n        expr: slipway_pipeline_runs{status=\"failed\"} > 0\n        labels:\n          severity: ticket\n        annotations:\n          summary: \"{{ $labels.project }} has {{ $value }} failed pipeline(s)\"\n",
    )
    .unwrap();
    let shop = Repo::new(&[(
        ".slipway.yml",
        "build:\n  script: [exit 3]\nalerts:\n  groups:\n    - name: shop\n      rules:\n        - alert: ShopAlways\n          expr: vector(1)\n          labels: {severity: info}\n",
    )]);
    let blog = Repo::new(&[(".slipway.yml", "build:\n  script: [echo hi]\n")]);
    let server =
        Server::start_with(&["--with-agent", "--monitor-interval", "300ms", "--rules", rules.to_str().unwrap()]);
    server.add_project("shop", &shop);
    server.add_project("blog", &blog);
    let (a, b) = (server.trigger("shop", None), server.trigger("blog", None));
    assert_eq!(server.wait(a, Duration::from_secs(60))["status"], "failed");
    assert_eq!(server.wait(b, Duration::from_secs(60))["status"], "success");
    let t = Instant::now();
    let firing = loop {
        let alerts = server.json("/api/v1/alerts");
        assert_eq!(alerts["status"], "success", "{alerts}");
        let list = alerts["data"]["alerts"].as_array().unwrap().clone();
        let names: Vec<&str> = list
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"]["alertname"].as_str().unwrap())
            .collect();
        if names.contains(&"PipelineFailed") && names.contains(&"ShopAlways") {
            break list;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "not firing: {alerts}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let failed = firing.iter().find(|a| a["labels"]["alertname"] == "PipelineFailed").unwrap();
    assert_eq!(failed["labels"]["project"], "shop");
    assert_eq!(failed["annotations"]["summary"], "shop has 1 failed pipeline(s)");
    assert_eq!(failed["value"], "1.0000000000e+00");
    let always = firing.iter().find(|a| a["labels"]["alertname"] == "ShopAlways").unwrap();
    assert_eq!(
        (always["labels"]["project"].as_str(), always["labels"]["severity"].as_str()),
        (Some("shop"), Some("info"))
    );
    // Instant and range queries, in Prometheus' shapes.
    let q = server.json("/api/v1/query?query=slipway_pipeline_runs");
    assert_eq!((q["status"].as_str(), q["data"]["resultType"].as_str()), (Some("success"), Some("vector")), "{q}");
    let result = q["data"]["result"].as_array().unwrap();
    assert!(
        result
            .iter()
            .any(|r| r["metric"]["project"] == "shop" && r["metric"]["status"] == "failed" && r["value"][1] == "1"),
        "{q}"
    );
    assert!(result.iter().any(|r| r["metric"]["project"] == "blog"), "{q}");
    let q = server.json("/api/v1/query?query=slipway_job_runs%7Bproject%3D%22shop%22%7D");
    let r = &q["data"]["result"][0];
    assert_eq!(
        (r["metric"]["job"].as_str(), r["metric"]["status"].as_str(), r["value"][1].as_str()),
        (Some("build"), Some("failed"), Some("1")),
        "{q}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let now = slipway_now();
    let r = server.json(&format!(
        "/api/v1/query_range?query=sum%20by%20(status)%20(slipway_pipeline_runs)&start={}&end={now}&step=0.5",
        now - 1.0
    ));
    assert_eq!(r["data"]["resultType"], "matrix", "{r}");
    assert!(r["data"]["result"][0]["values"].as_array().unwrap().len() >= 2, "{r}");
    let rule_groups = server.json("/api/v1/rules");
    let groups: Vec<&str> =
        rule_groups["data"]["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(groups, ["pipelines", "shop"], "{rule_groups}");
    // Outside the subset: Prometheus' error shape, naming the part.
    let (code, body) = server.call("GET", "/api/v1/query?query=predict_linear(up%5B5m%5D,%2060)", None);
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, e["status"].as_str(), e["errorType"].as_str()), (400, Some("error"), Some("bad_data")), "{e}");
    assert!(e["error"].as_str().unwrap().contains("predict_linear"), "{e}");
    // A viewer of blog sees blog's series and alerts only.
    let body = r#"{"name": "vic", "password": "vic has a long password", "bindings": [{"role": "viewer", "project": "blog"}]}"#;
    assert_eq!(server.call("POST", "/api/v1/users", Some(body)).0, 201);
    let (_, text) = server.call_as(
        None,
        "POST",
        "/api/v1/login",
        Some(r#"{"user": "vic", "password": "vic has a long password"}"#),
    );
    let vic = serde_json::from_str::<serde_json::Value>(&text).unwrap()["token"].as_str().unwrap().to_string();
    let (_, text) = server.call_as(Some(&vic), "GET", "/api/v1/query?query=slipway_pipeline_runs", None);
    assert!(text.contains("blog") && !text.contains("shop"), "{text}");
    let (_, text) = server.call_as(Some(&vic), "GET", "/api/v1/alerts", None);
    assert!(!text.contains("shop") && !text.contains("PipelineFailed"), "{text}");
    // The series outlive a restart: a stopped server writes them to disk, the next reads them.
    let before = now - 0.5;
    let q = format!("/api/v1/query?query=slipway_pipeline_runs%7Bproject%3D%22shop%22%7D&time={before}");
    assert_eq!(server.json(&q)["data"]["result"][0]["value"][1], "1");
    let mut server = server;
    drop(server.proc.take());
    assert!(server.data.path().join("monitor/series.gz").exists());
    server.launch_with(&["--with-agent", "--monitor-interval", "300ms", "--rules", rules.to_str().unwrap()]);
    let r = server.json(&q);
    assert_eq!(r["data"]["result"][0]["value"][1], "1", "{r}");
}

fn slipway_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A webhook receiver on loopback: records each POST (headers and body), answering 500 to the
/// first `fail` of them.
struct HookSink {
    addr: String,
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl HookSink {
    fn start(fail: usize) -> HookSink {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let got: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let g = Arc::clone(&got);
        std::thread::spawn(move || {
            let mut seen = 0;
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head, body) = loop {
                    let Ok(n) = conn.read(&mut chunk) else { break (String::new(), Vec::new()) };
                    if n == 0 {
                        break (String::new(), Vec::new());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        while buf.len() < i + 4 + len {
                            let Ok(n) = conn.read(&mut chunk) else { break };
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        break (head, buf[i + 4..].to_vec());
                    }
                };
                seen += 1;
                if seen <= fail {
                    let _ = conn.write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope",
                    );
                    continue;
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                if let Ok(v) = serde_json::from_slice(&body) {
                    g.lock().unwrap().push((head, v));
                }
            }
        });
        HookSink { addr, got }
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect()
    }

    /// Waits for a body `f` accepts.
    fn wait_for(&self, what: &str, secs: u64, f: impl Fn(&serde_json::Value) -> bool) -> (Instant, serde_json::Value) {
        let t = Instant::now();
        loop {
            if let Some(b) = self.bodies().into_iter().find(|b| f(b)) {
                return (Instant::now(), b);
            }
            assert!(t.elapsed() < Duration::from_secs(secs), "no webhook {what}: {:#?}", self.bodies());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn alert_names(body: &serde_json::Value, status: &str) -> Vec<String> {
    // (Slack's messages have no `alerts`.)
    body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["status"] == status)
        .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
        .collect()
}

/// Pipelines' ends reach a webhook as Alertmanager's payload: a failure once (again and again
/// failing is one state, told once), the fix as its resolution, a silenced event never; a
/// receiver answering 500 gets the notification again with back-off, and the delivery log
/// says so — without the receiver's credentials.
#[test]
fn pipeline_ends_are_told_once_per_state_retried_when_the_receiver_fails_and_silences_mute() {
    let hook = HookSink::start(2);
    // A receiver that takes the connection and never answers: it delays only itself.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let conf = tempfile::tempdir().unwrap();
    let notify = conf.path().join("notify.yml");
    std::fs::write(
        &notify,
        format!(
            "route:\n  receiver: team\n  group_by: [alertname, project]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: team\n    webhook_configs:\n      - url: http://{}/hook\n        http_config: {{authorization: {{credentials: hook-secret-token-123}}}}\n      - url: http://{}/never\n        timeout: 1s\n",
            hook.addr,
            silent.local_addr().unwrap()
        ),
    )
    .unwrap();
    let repo = Repo::new(&[(
        ".slipway.yml",
        "build:\n  script:\n    - echo compiling\n    - 'test -f ok || { echo \"boom: ok is missing\"; exit 3; }'\nslow:\n  script: [test -z \"$SLOW\" || sleep 60]\n",
    )]);
    let server = Server::start_with(&["--with-agent", "--notify", notify.to_str().unwrap()]);
    server.add_project("shop", &repo);
    let first = server.trigger("shop", None);
    assert_eq!(server.wait(first, Duration::from_secs(90))["status"], "failed");
    let (_, told) =
        hook.wait_for("for the failure", 30, |b| alert_names(b, "firing").contains(&"PipelineFailed".to_string()));
    assert_eq!((told["version"].as_str(), told["receiver"].as_str()), (Some("4"), Some("team")), "{told}");
    let a = &told["alerts"][0];
    assert_eq!((a["labels"]["project"].as_str(), a["labels"]["ref"].as_str()), (Some("shop"), Some("main")), "{a}");
    let description = a["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("job `build` (stage test) failed") && description.contains("boom: ok is missing"),
        "{a}"
    );
    assert!(a["generatorURL"].as_str().unwrap().ends_with(&format!("/api/v1/pipelines/{first}")), "{a}");
    let (head, _) = hook.got.lock().unwrap()[0].clone();
    assert!(
        head.contains("authorization: Bearer hook-secret-token-123")
            || head.contains("Authorization: Bearer hook-secret-token-123"),
        "{head}"
    );
    // Two 500s, then delivered: the log shows the attempts, not the token.
    let r = Run::from(
        Command::new(bin())
            .args(["notifications", "--json", "--server", &server.url, "--token", &server.admin])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.debug());
    let log: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let of = |channel: &str| log.as_array().unwrap().iter().find(|d| d["channel"] == channel).unwrap().clone();
    let d = of("webhook[0]");
    assert_eq!((d["status"].as_str(), d["attempts"].as_i64()), (Some("delivered"), Some(3)), "{log}");
    assert!(d["last_error"].as_str().unwrap().contains("HTTP 500"), "{log}");
    let slow = of("webhook[1]");
    assert_eq!(slow["status"], "queued", "{log}");
    assert!(slow["last_error"].as_str().unwrap().contains("timed out"), "{log}");
    assert!(!r.stdout.contains("hook-secret-token-123"), "{}", r.stdout);
    // Failing again is the same state: nothing new is told.
    let second = server.trigger("shop", None);
    assert_eq!(server.wait(second, Duration::from_secs(90))["status"], "failed");
    std::thread::sleep(Duration::from_secs(3));
    let firing =
        hook.bodies().iter().filter(|b| alert_names(b, "firing").contains(&"PipelineFailed".to_string())).count();
    assert_eq!(firing, 1, "{:#?}", hook.bodies());
    // A silenced event is not told.
    let r = Run::from(
        Command::new(bin())
            .args([
                "silence",
                "add",
                "alertname=PipelineCanceled",
                "project=shop",
                "--for",
                "1h",
                "--comment",
                "we cancel on purpose",
            ])
            .args(["--server", &server.url, "--token", &server.admin])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.starts_with("silence "), "{}", r.debug());
    let r = Run::from(
        Command::new(bin())
            .args(["silence", "list", "--server", &server.url, "--token", &server.admin])
            .output()
            .unwrap(),
    );
    assert!(
        r.stdout.contains("we cancel on purpose") && r.stdout.contains("alertname=\"PipelineCanceled\""),
        "{}",
        r.debug()
    );
    let (code, page) = server.call("GET", "/ui/alerts", None);
    assert!(code == 200 && page.contains("we cancel on purpose") && page.contains("PipelineCanceled"), "{page}");
    // A silence matching everything is refused.
    let (code, text) = server.call(
        "POST",
        "/api/v1/silences",
        Some(r#"{"matchers": [{"name": "x", "value": "", "isRegex": false}], "duration": "1h", "comment": "all"}"#),
    );
    assert_eq!(code, 400, "{text}");
    let third = server.trigger("shop", Some(r#"{"variables": [["SLOW", "1"]]}"#));
    let t = Instant::now();
    while server.json(&format!("/api/v1/pipelines/{third}"))["jobs"][1]["status"] != "running" {
        assert!(t.elapsed() < Duration::from_secs(60), "slow never runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.call("POST", &format!("/api/v1/pipelines/{third}/cancel"), None).0, 200);
    assert_eq!(server.wait(third, Duration::from_secs(30))["status"], "canceled");
    // Fixed: the failure's resolution is told.
    repo.write("ok", "");
    repo.commit("fix the build");
    let fourth = server.trigger("shop", None);
    assert_eq!(server.wait(fourth, Duration::from_secs(90))["status"], "success");
    let (_, fixed) =
        hook.wait_for("for the fix", 30, |b| alert_names(b, "resolved").contains(&"PipelineFailed".to_string()));
    assert_eq!(fixed["status"], "resolved", "{fixed}");
    assert!(fixed["alerts"][0]["annotations"]["summary"].as_str().unwrap().ends_with("fixed"), "{fixed}");
    assert!(
        hook.bodies().iter().all(|b| !alert_names(b, "firing").contains(&"PipelineCanceled".to_string())),
        "the silenced cancel was told: {:#?}",
        hook.bodies()
    );
    // The notification file's errors are all told at once, with their places, before anything starts.
    std::fs::write(
        &notify,
        "route:\n  receiver: nobody\n  group_wait: soon\nreceivers:\n  - name: team\n    webhook_configs:\n      - url: ftp://x\n    email_configs:\n      - to: not-an-address\ninhibit_rules: []\n",
    )
    .unwrap();
    let r = Run::from(
        Command::new(bin())
            .args(["server", "--listen", &free_addr(), "--notify", notify.to_str().unwrap()])
            .env("SLIPWAY_DATA_DIR", conf.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{}", r.debug());
    for want in [
        "notify.yml:2:13",
        "no receiver is named `nobody`",
        "notify.yml:3:15",
        "`route:group_wait`",
        "must be an http:// or https:// URL",
        "`not-an-address` is not an e-mail address",
        "inhibition is not supported",
        "nothing was started",
    ] {
        assert!(r.stderr.contains(want), "{want}: {}", r.debug());
    }
}

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl: (ca.pem, cert.pem, key.pem).
fn loopback_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    common::registry::test_ca(dir);
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

/// Debian's aiosmtpd on loopback with STARTTLS and AUTH, writing what it receives to `out`.
fn smtp_sink(dir: &std::path::Path, out: &std::path::Path) -> (Proc, u16) {
    let (_, cert, key) = loopback_certificate(dir);
    let port = free_port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/notify/smtp_sink.py");
    // Debian's python3, where python3-aiosmtpd is.
    let mut child = Command::new("/usr/bin/python3")
        .arg(&script)
        .args([
            &port.to_string(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            "mailer",
            "smtp-password-4711",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
    (Proc(child), port)
}

fn mails(out: &std::path::Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(out)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect())
        .unwrap_or_default();
    files.sort();
    // The bodies are quoted-printable: soft line breaks and `=3D` undone.
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().replace("=\r\n", "").replace("=\n", "").replace("=3D", "="))
        .collect()
}

/// The brief's loop closed: a release that passes its health checks answers errors; the
/// project's alert rule fires, the post-deploy watch rolls the release back (history:
/// `alert-rollback`, naming the alert), and the team hears of it by e-mail (STARTTLS, AUTH,
/// a CA of its own) and by webhook. Prints the timeline.
#[test]
fn a_bad_release_that_passes_its_health_checks_is_rolled_back_by_an_alert_and_people_hear_of_it() {
    let (good, bad) = (websvc_build("v1"), websvc_build("v2-errors"));
    let conf = tempfile::tempdir().unwrap();
    let inbox = conf.path().join("inbox");
    let (_smtp, smtp_port) = smtp_sink(conf.path(), &inbox);
    let hook = HookSink::start(0);
    std::fs::write(conf.path().join("smtp-password"), "smtp-password-4711\n").unwrap();
    let notify = conf.path().join("notify.yml");
    std::fs::write(
        &notify,
        format!(
            r#"global:
  smtp_smarthost: 127.0.0.1:{smtp_port}
  smtp_from: slipway <slipway@example.com>
route:
  receiver: team
  group_by: [alertname, environment]
  group_wait: 0s
  group_interval: 1s
receivers:
  - name: team
    webhook_configs:
      - url: http://{0}/hook
    slack_configs:
      - api_url: http://{0}/slack
        channel: '#prod'
    email_configs:
      - to: dev@example.com, ops@example.com
        auth_username: mailer
        auth_password_file: {1}
        tls_config: {{ca_file: {2}}}
"#,
            hook.addr,
            conf.path().join("smtp-password").display(),
            conf.path().join("ca.pem").display()
        ),
    )
    .unwrap();
    let prod = free_addr();
    let pipeline = format!(
        r#"build:
  script: [echo hi]
environments:
  prod:
    listen: {prod}
    health: {{http: /healthz, interval: 200ms, deadline: 10s}}
    watch: {{window: 5m}}
alerts:
  groups:
    - name: prod
      rules:
        - alert: HighErrorRate
          expr: increase(slipway_proxy_errors_total{{environment="prod"}}[10s]) > 0
          labels:
            severity: page
          annotations:
            summary: "{{{{ $labels.environment }}}} answers errors ({{{{ $labels.version }}}})"
"#
    );
    let repo = Repo::new(&[(".slipway.yml", &pipeline)]);
    let server =
        Server::start_with(&["--with-agent", "--notify", notify.to_str().unwrap(), "--monitor-interval", "300ms"]);
    server.add_project("shop", &repo);
    let run = server.trigger("shop", None);
    assert_eq!(server.wait(run, Duration::from_secs(60))["status"], "success");
    let t = Instant::now();
    while !server.json("/api/v1/rules").to_string().contains("HighErrorRate") {
        assert!(t.elapsed() < Duration::from_secs(20), "the project's rules never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deploy = |dist: &std::path::Path| {
        Run::from(
            Command::new(bin())
                .args(["deploy", "prod", "--artifacts", dist.to_str().unwrap()])
                .args(["--server", &server.url, "--token", &server.admin, "--project", "shop"])
                .env("NO_COLOR", "1")
                .output()
                .unwrap(),
        )
    };
    let r = deploy(&good);
    assert_eq!(r.code, 0, "{}", r.debug());
    let r = deploy(&bad);
    assert_eq!(r.code, 0, "the bad release passes its health checks: {}", r.debug());
    assert_eq!(served(&prod).as_deref(), Some("v2-errors"));
    // Its users meet the errors.
    let t0 = Instant::now();
    for _ in 0..6 {
        let _ = http_get(&prod, "/");
    }
    let (hook_at, told) =
        hook.wait_for("for the alert", 30, |b| alert_names(b, "firing").contains(&"HighErrorRate".to_string()));
    let a = &told["alerts"][0];
    assert_eq!(
        (a["labels"]["environment"].as_str(), a["labels"]["version"].as_str(), a["labels"]["project"].as_str()),
        (Some("prod"), Some("v2-errors"), Some("shop")),
        "{told}"
    );
    assert_eq!(a["annotations"]["summary"], "prod answers errors (v2-errors)", "{told}");
    // The same alert as a Slack message, and as the `ALERTS` series.
    let (_, slack) = hook
        .wait_for("to Slack", 30, |b| b["attachments"].is_array() && b["text"].to_string().contains("HighErrorRate"));
    assert_eq!(
        (slack["channel"].as_str(), slack["text"].as_str()),
        (Some("#prod"), Some("[FIRING:1] HighErrorRate prod")),
        "{slack}"
    );
    assert_eq!(slack["attachments"][0]["color"], "danger", "{slack}");
    let q = server.json("/api/v1/query?query=ALERTS%7Balertstate%3D%22firing%22%7D");
    assert_eq!(q["data"]["result"][0]["metric"]["alertname"], "HighErrorRate", "{q}");
    let t = Instant::now();
    let history = loop {
        let h = server.json("/api/v1/projects/shop/environments/prod/releases");
        // (The old release is marked rolled back a moment after the new one is healthy.)
        if h[0]["reason"] == "alert-rollback" && h[0]["status"] == "healthy" && h[1]["status"] == "rolled_back" {
            break h;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no alert-rollback: {h}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rolled_at = Instant::now();
    assert_eq!(served(&prod).as_deref(), Some("v1"));
    assert_eq!(
        (history[0]["version"].as_str(), history[1]["status"].as_str()),
        (Some("v1"), Some("rolled_back")),
        "{history}"
    );
    assert!(history[1]["detail"].as_str().unwrap().contains("alert `HighErrorRate` fired"), "{history}");
    assert_eq!(history[0]["actor"], "slipway (post-deploy watch)", "{history}");
    let (rollback_hook_at, rb) =
        hook.wait_for("for the rollback", 30, |b| alert_names(b, "firing").contains(&"DeployRolledBack".to_string()));
    let rba = rb["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "DeployRolledBack")
        .unwrap()
        .clone();
    assert_eq!(
        (rba["labels"]["reason"].as_str(), rba["annotations"]["version"].as_str()),
        (Some("alert-rollback"), Some("v1")),
        "{rb}"
    );
    assert!(rba["annotations"]["detail"].as_str().unwrap_or("").contains("HighErrorRate"), "{rb}");
    // The e-mail: over STARTTLS, signed in, to both addresses, saying what and where.
    let t = Instant::now();
    let mail = loop {
        if let Some(m) = mails(&inbox).into_iter().find(|m| m.contains("HighErrorRate")) {
            break m;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no e-mail: {:?}", mails(&inbox));
        std::thread::sleep(Duration::from_millis(20));
    };
    let mail_at = Instant::now();
    assert!(mail.contains("X-TLS: True") && mail.contains("X-Authenticated: "), "{mail}");
    assert!(!mail.contains("X-Authenticated: None"), "{mail}");
    assert!(mail.contains("X-Envelope-To: dev@example.com,ops@example.com"), "{mail}");
    assert!(mail.contains("Subject: [FIRING:1] HighErrorRate prod"), "{mail}");
    assert!(mail.contains("FIRING: prod answers errors (v2-errors)") && mail.contains("version=v2-errors"), "{mail}");
    eprintln!(
        "timeline from the first errors: webhook with the alert {:?}, rolled back {:?}, webhook with the rollback {:?}, e-mail {:?}",
        hook_at - t0,
        rolled_at - t0,
        rollback_hook_at - t0,
        mail_at - t0
    );
    // A Prometheus can scrape the series (federation), with a token.
    let (code, text) = server.call("GET", "/federate?match[]=up", None);
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("# TYPE up untyped") && text.contains("environment=\"prod\"") && text.contains("version=\"v1\""),
        "{text}"
    );
    let (code, text) = server.call("GET", "/federate?match[]=sum(up)", None);
    assert_eq!(code, 400, "{text}");
    // The delivery log: nothing failed (the alert's resolution may still be on its way); the
    // password appears nowhere.
    let log = server.json("/api/v1/notifications");
    assert!(log.as_array().unwrap().iter().all(|d| d["status"] != "failed"), "{log}");
    assert!(log.as_array().unwrap().iter().any(|d| d["channel"] == "email[0]" && d["status"] == "delivered"), "{log}");
    assert!(!log.to_string().contains("smtp-password-4711"));
    // The dashboard's alerts page shows the rule, its state and the deliveries.
    let (code, page) = server.call("GET", "/ui/alerts", None);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("HighErrorRate") && page.contains("team/email[0]") && page.contains("delivered"), "{page}");
    assert!(!page.contains("smtp-password-4711"));
}

/// For teams whose alerts live in Prometheus: slipway posts its alerts to a real Alertmanager
/// (Debian's) through its v2 API, and Alertmanager's webhook — with a token of a user that may
/// roll back — rolls back the release the alert names, once.
#[test]
fn alertmanager_gets_slipways_alerts_and_its_webhook_rolls_back_the_release_they_name() {
    require("prometheus-alertmanager", "--version");
    let (good, bad) = (websvc_build("v1"), websvc_build("v2-errors"));
    let conf = tempfile::tempdir().unwrap();
    let am_port = free_port();
    let notify = conf.path().join("notify.yml");
    std::fs::write(&notify, format!("alertmanagers:\n  - url: http://127.0.0.1:{am_port}\n")).unwrap();
    let stage = free_addr();
    let pipeline = format!(
        r#"build:
  script: [echo hi]
environments:
  stage:
    listen: {stage}
    health: {{http: /healthz, interval: 200ms, deadline: 10s}}
    watch: false
alerts:
  groups:
    - name: stage
      rules:
        - alert: StageErrors
          expr: increase(slipway_proxy_errors_total{{environment="stage"}}[10s]) > 0
          annotations:
            summary: "stage answers errors"
"#
    );
    let repo = Repo::new(&[(".slipway.yml", &pipeline)]);
    let server =
        Server::start_with(&["--with-agent", "--notify", notify.to_str().unwrap(), "--monitor-interval", "300ms"]);
    server.add_project("shop", &repo);
    let body = r#"{"name": "am", "password": "alertmanager's long password", "bindings": [{"role": "deployer", "project": "shop"}]}"#;
    assert_eq!(server.call("POST", "/api/v1/users", Some(body)).0, 201);
    let (_, text) = server.call_as(
        None,
        "POST",
        "/api/v1/login",
        Some(r#"{"user": "am", "password": "alertmanager's long password"}"#),
    );
    let am_token = serde_json::from_str::<serde_json::Value>(&text).unwrap()["token"].as_str().unwrap().to_string();
    std::fs::write(
        conf.path().join("alertmanager.yml"),
        format!(
            "route:\n  receiver: slipway\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: slipway\n    webhook_configs:\n      - url: {}/api/v1/hooks/alertmanager\n        http_config:\n          authorization:\n            credentials: {am_token}\n",
            server.url
        ),
    )
    .unwrap();
    let _am = Proc(
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", conf.path().join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", conf.path().join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let am = format!("127.0.0.1:{am_port}");
    assert!(wait_http(&am, "/-/ready").is_some(), "Alertmanager did not start");
    let run = server.trigger("shop", None);
    assert_eq!(server.wait(run, Duration::from_secs(60))["status"], "success");
    let t = Instant::now();
    while !server.json("/api/v1/rules").to_string().contains("StageErrors") {
        assert!(t.elapsed() < Duration::from_secs(20), "the project's rules never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    for dist in [&good, &bad] {
        let r = Run::from(
            Command::new(bin())
                .args(["deploy", "stage", "--artifacts", dist.to_str().unwrap()])
                .args(["--server", &server.url, "--token", &server.admin, "--project", "shop"])
                .output()
                .unwrap(),
        );
        assert_eq!(r.code, 0, "{}", r.debug());
    }
    for _ in 0..6 {
        let _ = http_get(&stage, "/");
    }
    // Alertmanager has slipway's alert.
    let t = Instant::now();
    loop {
        let alerts = http_get(&am, "/api/v2/alerts").unwrap_or_default();
        if alerts.contains("StageErrors") {
            assert!(
                alerts.contains("\"environment\":\"stage\"") && alerts.contains("\"project\":\"shop\""),
                "{alerts}"
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "Alertmanager never got the alert: {alerts}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its webhook rolled stage back, as `am`.
    let t = Instant::now();
    let h = loop {
        let h = server.json("/api/v1/projects/shop/environments/stage/releases");
        if h[0]["reason"] == "alert-rollback" && h[0]["status"] == "healthy" {
            break h;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no alert-rollback: {h}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((h[0]["actor"].as_str(), h[0]["version"].as_str()), (Some("am"), Some("v1")), "{h}");
    assert!(h[1]["detail"].as_str().unwrap().contains("alert `StageErrors` from Alertmanager"), "{h}");
    assert_eq!(served(&stage).as_deref(), Some("v1"));
    // The same alert again rolls nothing back (the release it names no longer runs).
    let payload = r#"{"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "StageErrors", "environment": "stage", "version": "v2-errors"}}]}"#;
    let (code, text) = server.call_as(Some(&am_token), "POST", "/api/v1/hooks/alertmanager", Some(payload));
    assert_eq!(code, 202, "{text}");
    assert!(text.contains("\"skipped\"") && text.contains("runs v1 now, not v2-errors"), "{text}");
    // A user who may not roll back is told so; and a payload that is not Alertmanager's is refused.
    let (code, text) = server.call("POST", "/api/v1/hooks/alertmanager", Some(r#"{"alerts": []}"#));
    assert_eq!(code, 400, "{text}");
    let body = r#"{"name": "vic", "password": "vic has a long password", "bindings": [{"role": "viewer", "project": "shop"}]}"#;
    assert_eq!(server.call("POST", "/api/v1/users", Some(body)).0, 201);
    let (_, text) = server.call_as(
        None,
        "POST",
        "/api/v1/login",
        Some(r#"{"user": "vic", "password": "vic has a long password"}"#),
    );
    let vic = serde_json::from_str::<serde_json::Value>(&text).unwrap()["token"].as_str().unwrap().to_string();
    let payload =
        r#"{"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "X", "environment": "stage"}}]}"#;
    let (code, text) = server.call_as(Some(&vic), "POST", "/api/v1/hooks/alertmanager", Some(payload));
    assert_eq!(code, 202, "{text}");
    assert!(text.contains("\"refused\"") && text.contains("`vic` lacks `rollback:environments/stage`"), "{text}");
}

/// A canary that passed its analysis (no traffic came while it ran) is held to the analysis'
/// thresholds after the rollout too: once its errors cross `max_error_rate`, the post-deploy
/// watch rolls it back — no alert rule needed.
#[test]
fn a_canary_whose_errors_cross_its_analysis_threshold_after_the_rollout_is_rolled_back() {
    let (good, bad) = (websvc_build("v1"), websvc_build("v2-errors"));
    let web = free_addr();
    let pipeline = format!(
        r#"build:
  script: [echo hi]
environments:
  web:
    listen: {web}
    health: {{http: /healthz, interval: 200ms, deadline: 10s}}
    strategy:
      type: canary
      steps: [{{weight: 50, pause: 1s}}]
      analysis: {{interval: 1s, max_error_rate: 5%, min_requests: 5, on_inconclusive: pass}}
"#
    );
    let repo = Repo::new(&[(".slipway.yml", &pipeline)]);
    let server = Server::start_with(&["--with-agent", "--monitor-interval", "300ms"]);
    server.add_project("shop", &repo);
    let run = server.trigger("shop", None);
    assert_eq!(server.wait(run, Duration::from_secs(60))["status"], "success");
    for dist in [&good, &bad] {
        let r = Run::from(
            Command::new(bin())
                .args(["deploy", "web", "--artifacts", dist.to_str().unwrap()])
                .args(["--server", &server.url, "--token", &server.admin, "--project", "shop"])
                .output()
                .unwrap(),
        );
        assert_eq!(r.code, 0, "{}", r.debug());
    }
    assert_eq!(served(&web).as_deref(), Some("v2-errors"));
    let t = Instant::now();
    let h = loop {
        let _ = http_get(&web, "/");
        let h = server.json("/api/v1/projects/shop/environments/web/releases");
        if h[0]["reason"] == "alert-rollback" && h[0]["status"] == "healthy" {
            break h;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no rollback: {h}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(served(&web).as_deref(), Some("v1"));
    let detail = h[1]["detail"].as_str().unwrap();
    assert!(detail.contains("above the canary analysis' max_error_rate 5.0%"), "{h}");
}

/// The GitOps tests' server: an agent, apps synced every 500 ms, and project `shop` with
/// environment `web` (deployed to record builds); also a free address for the environments
/// the apps describe. The project's repository is returned to live as long as the server.
fn gitops_shop() -> (Repo, Server, String) {
    let (web, prod) = (free_addr(), free_addr());
    let pipeline = format!(
        "build:\n  script: [echo hi]\nenvironments:\n  web:\n    listen: {web}\n    health: {{http: /healthz, interval: 200ms, deadline: 10s}}\n"
    );
    let repo = Repo::new(&[(".slipway.yml", &pipeline)]);
    let server = Server::start_with(&["--with-agent", "--gitops-interval", "500ms"]);
    server.add_project("shop", &repo);
    (repo, server, prod)
}

/// A GitOps application whose environment requires signatures syncs only signed releases: an
/// unsigned version fails its sync with the reason and nothing runs; a signed one syncs.
#[test]
fn gitops_syncs_only_signed_releases_where_signatures_are_required() {
    let keys = tempfile::tempdir().unwrap();
    let pem = signing_keypair(keys.path(), "release", 10);
    let signed = signed_websvc_build("v2", &keys.path().join("release.key"), keys.path());
    let (_repo, server, prod) = gitops_shop();
    let v1 = websvc_build("v1");
    for dist in [&v1, &signed] {
        let r = server.cli(&["deploy", "web", "--artifacts", dist.to_str().unwrap(), "--project", "shop"]);
        assert_eq!(r.code, 0, "{}", r.debug());
    }
    let desired = |version: &str| {
        format!(
            "release:\n  version: {version}\nenvironments:\n  prod:\n    listen: {prod}\n    health: {{http: /healthz, interval: 200ms, deadline: 10s}}\n    require_signature:\n      keys:\n        - |\n{pem}"
        )
    };
    let config = Repo::new(&[("envs/prod.yml", &desired("v1"))]);
    let r = server.cli(&[
        "app",
        "add",
        "shop-prod",
        "--project",
        "shop",
        "--repo",
        config.path().to_str().unwrap(),
        "--path",
        "envs",
        "--env",
        "prod",
        "--auto",
    ]);
    let t = Instant::now();
    let v = loop {
        let v = server.json("/api/v1/apps/shop-prod");
        if v["status"]["reason"].as_str().is_some_and(|r| r.contains("requires signed releases")) {
            break v;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{}: {v}", r.debug());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(v["status"]["reason"].as_str().unwrap().contains("is not signed"), "{v}");
    assert_eq!(served(&prod), None, "nothing runs");
    config.write("envs/prod.yml", &desired("v2"));
    config.commit("prod: v2, signed");
    let t = Instant::now();
    let h = loop {
        let h = server.json("/api/v1/projects/shop/environments/prod/releases");
        if h[0]["version"] == "v2" && h[0]["status"] == "healthy" {
            break h;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{h}\n{}", server.json("/api/v1/apps/shop-prod"));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(served(&prod).as_deref(), Some("v2"));
    assert_eq!((h[1]["version"].as_str(), h[1]["status"].as_str()), (Some("v1"), Some("failed")), "{h}");
}

/// GitOps on the local agent: an application from the brief's Argo CD manifest keeps `prod`
/// as its file in a config repository says — synced and healthy at once, a new commit synced
/// by itself within the interval, a file with errors leaves the last good release running
/// with every error at file:line:col, a version that was never built fails its sync once and
/// is not tried again until a new commit, and a push deploy to the environment is refused
/// with a pointer to the config repository.
#[test]
fn gitops_keeps_an_environment_as_its_config_repository_says() {
    let (v1, v2) = (websvc_build("v1"), websvc_build("v2"));
    let (_repo, server, prod) = gitops_shop();
    let cli = |args: &[&str]| server.cli(args);
    // v1 and v2 are built and recorded by deploying them to `web`.
    for dist in [&v1, &v2] {
        let r = cli(&["deploy", "web", "--artifacts", dist.to_str().unwrap(), "--project", "shop"]);
        assert_eq!(r.code, 0, "{}", r.debug());
    }
    let desired = |version: &str| {
        format!(
            "release:\n  version: {version}\nenvironments:\n  prod:\n    listen: {prod}\n    instances: 2\n    health: {{http: /healthz, interval: 200ms, deadline: 10s}}\n"
        )
    };
    let config = Repo::new(&[("envs/prod.yml", &desired("v1"))]);
    let manifest = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: shop-prod\n  labels:\n    slipway.dev/project: shop\nspec:\n  project: default\n  source:\n    repoURL: {}\n    targetRevision: HEAD\n    path: envs\n  destination:\n    server: https://kubernetes.default.svc\n    namespace: prod\n  syncPolicy:\n    automated: {{prune: true, selfHeal: true}}\n",
        config.path().display()
    );
    let file = config.path().join("app.yaml");
    std::fs::write(&file, &manifest).unwrap();
    let r = cli(&["app", "add", "-f", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("shop-prod: Synced · Healthy"), "{}", r.debug());
    assert_eq!(served(&prod).as_deref(), Some("v1"));
    let status = |name: &str| server.json(&format!("/api/v1/apps/{name}"));
    let wait = |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
        let t = Instant::now();
        loop {
            let v = status("shop-prod");
            if f(&v) {
                return v;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "{what}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // A commit moves it to v2: synced by itself within the interval.
    config.write("envs/prod.yml", &desired("v2"));
    config.commit("prod: v2");
    let head = config.git(&["rev-parse", "HEAD"]);
    let t = Instant::now();
    let v = wait("v2 synced", &|v| v["status"]["running_version"] == "v2" && v["status"]["sync"] == "Synced");
    eprintln!("commit → synced and healthy in {:?} (interval 500 ms)", t.elapsed());
    assert_eq!(
        (v["status"]["commit"].as_str(), v["status"]["health"].as_str()),
        (Some(head.as_str()), Some("Healthy")),
        "{v}"
    );
    assert_eq!(served(&prod).as_deref(), Some("v2"));
    let h = server.json("/api/v1/projects/shop/environments/prod/releases");
    assert_eq!(h[0]["actor"], "gitops:shop-prod", "{h}");
    // A file with errors: Unknown, every error at its place, v2 keeps running.
    config.write("envs/prod.yml", "release:\n  version: 'v 3'\nenvironments:\n  prod:\n    listen: nowhere\n");
    config.commit("broken");
    let v = wait("the broken file seen", &|v| v["status"]["sync"] == "Unknown");
    let errors = v["status"]["errors"].to_string();
    assert!(errors.contains("envs/prod.yml@") && errors.contains(":2:12: `release:version`"), "{v}");
    assert!(errors.contains(":5:13:"), "the listen address's error at its place: {v}");
    assert_eq!(served(&prod).as_deref(), Some("v2"));
    let r = cli(&["app", "diff", "shop-prod"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stdout.contains("error: envs/prod.yml@"), "{}", r.debug());
    // A version never built: the sync fails once and is not tried again for that commit.
    config.write("envs/prod.yml", &desired("v9"));
    config.commit("prod: v9");
    let v = wait("the failed sync", &|v| v["status"]["reason"].as_str().is_some_and(|r| r.contains("failed")));
    assert!(v["status"]["reason"].as_str().unwrap().contains("no artifacts of version `v9`"), "{v}");
    std::thread::sleep(Duration::from_millis(1500));
    let syncs = server.json("/api/v1/apps/shop-prod/history");
    let failed = syncs.as_array().unwrap().iter().filter(|s| s["outcome"] == "failed").count();
    assert_eq!(failed, 1, "a failed commit was tried again: {syncs}");
    assert_eq!(served(&prod).as_deref(), Some("v2"));
    let r = cli(&["app", "show", "shop-prod"]);
    assert!(r.stdout.contains("OutOfSync") && r.stdout.contains("version: v2 → v9"), "{}", r.debug());
    // The config repository as a project with a webhook secret: a signed push makes its
    // application look now (the interval is 500 ms here; the timeline shows the webhook's
    // share).
    let body = format!(r#"{{"name": "config", "repo": "{}", "webhook_secret": "cfgsecret"}}"#, config.path().display());
    assert_eq!(server.call("POST", "/api/v1/projects", Some(&body)).0, 201);
    config.write("envs/prod.yml", &desired("v1"));
    config.commit("prod: v1 by webhook");
    let sha = config.git(&["rev-parse", "HEAD"]);
    let push = format!(r#"{{"ref": "refs/heads/main", "after": "{sha}", "repository": {{"name": "config"}}}}"#);
    let t = Instant::now();
    let headers = vec![
        ("X-GitHub-Event", "push".to_string()),
        ("X-GitHub-Delivery", "gitops-1".to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", hmac_hex("cfgsecret", push.as_bytes()))),
    ];
    let (code, text) = server.deliver("/api/v1/webhooks/github/config", &headers, push.as_bytes());
    assert!(code == 200 || code == 201, "{code} {text}");
    wait("v1 by webhook", &|v| v["status"]["running_version"] == "v1" && v["status"]["commit"] == sha.as_str());
    eprintln!("webhook → synced and healthy in {:?}", t.elapsed());
    config.write("envs/prod.yml", &desired("v9"));
    config.commit("prod: v9 again");
    wait("v9 failed again", &|v| v["status"]["desired_version"] == "v9");
    // A push deploy is refused, pointing to the config repository.
    let r = cli(&["deploy", "prod", "--version", "v1", "--project", "shop"]);
    assert_ne!(r.code, 0, "{}", r.debug());
    assert!(
        r.stderr.contains("kept by GitOps application `shop-prod`") && r.stderr.contains("envs/prod.yml"),
        "{}",
        r.debug()
    );
    // Back to v1 by a commit (the revert of GitOps): synced.
    config.write("envs/prod.yml", &desired("v1"));
    config.commit("prod: back to v1");
    wait("v1 again", &|v| v["status"]["running_version"] == "v1" && v["status"]["sync"] == "Synced");
    assert_eq!(served(&prod).as_deref(), Some("v1"));
    // A push deploy forced past the refusal is a conflicting edit: the application syncs the
    // environment back to what its file says within the interval.
    let r = cli(&["deploy", "prod", "--version", "v2", "--project", "shop", "--force"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(served(&prod).as_deref(), Some("v2"));
    let t = Instant::now();
    while served(&prod).as_deref() != Some("v1") {
        assert!(t.elapsed() < Duration::from_secs(30), "the forced deploy was not synced back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    loop {
        let h = server.json("/api/v1/projects/shop/environments/prod/releases");
        if h[0]["actor"] == "gitops:shop-prod" && h[0]["status"] == "healthy" && h[0]["version"] == "v1" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the sync back did not finish: {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = cli(&["app", "history", "shop-prod"]);
    assert!(r.stdout.contains("synced") && r.stdout.contains("failed") && r.stdout.contains("v9"), "{}", r.debug());
    // Rolled back with auto-sync on (what Argo CD refuses): the environment stays on the
    // release before — pinned, not synced back — until the desired state moves.
    let r = cli(&["rollback", "prod", "--project", "shop"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(served(&prod).as_deref(), Some("v2"));
    let v = wait("pinned", &|v| v["status"]["pinned"] == true && v["status"]["sync"] == "OutOfSync");
    assert!(v["status"]["reason"].as_str().unwrap().contains("pinned by a rollback"), "{v}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(served(&prod).as_deref(), Some("v2"), "the pin did not hold");
    let r = cli(&["app", "list"]);
    assert!(r.stdout.contains("OutOfSync (pinned)"), "{}", r.debug());
    config.write("envs/prod.yml", &desired("v2"));
    config.commit("prod: v2 (the revert of the bad commit)");
    let v = wait("unpinned", &|v| v["status"]["pinned"] == false && v["status"]["sync"] == "Synced");
    assert_eq!((v["pinned_release"].as_i64(), served(&prod).as_deref()), (None, Some("v2")), "{v}");
    // Drift made for real: the environment removed from the agent by hand. It is back on its
    // current release within the interval (the server restores an environment whose target
    // runs nothing; self-heal repairs what runs but differs).
    let sock = server.data.path().join("agent.sock");
    let agent = |method: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-X", method, "--unix-socket", sock.to_str().unwrap(), "http://agent/v1/envs/prod"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // The instances' processes: the ones that come back are new (the removal may be healed
    // before a request ever sees the environment gone).
    let pids = || -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_str(&agent("GET")).unwrap_or_default();
        let groups = v["groups"].as_array().cloned().unwrap_or_default();
        groups
            .iter()
            .flat_map(|g| g["instances"].as_array().cloned().unwrap_or_default())
            .filter_map(|i| i["pid"].as_u64())
            .collect()
    };
    let before = pids();
    assert_eq!(before.len(), 2, "{}", agent("GET"));
    agent("DELETE");
    let t = Instant::now();
    while served(&prod).as_deref() != Some("v2") || pids().len() != 2 || pids().iter().any(|p| before.contains(p)) {
        assert!(t.elapsed() < Duration::from_secs(30), "the drift was not healed: {}", status("shop-prod"));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("removed by hand → healed in {:?} (interval 500 ms)", t.elapsed());
    // Promotion is a commit: what runs in `web` (v1 now) written into prod's file with its
    // digests, signed off; the server syncs it.
    let r = cli(&["deploy", "web", "--version", "v1", "--project", "shop"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let r = cli(&[
        "promote",
        "web",
        "prod",
        "--gitops",
        "--checkout",
        config.path().to_str().unwrap(),
        "--project",
        "shop",
    ]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("to envs/prod.yml: prod ← v1 (from web)"), "{}", r.debug());
    let file = std::fs::read_to_string(config.path().join("envs/prod.yml")).unwrap();
    assert!(
        file.contains("version: v1") && file.contains("linux/amd64: sha256:") && file.contains("listen:"),
        "{file}"
    );
    let msg = config.git(&["log", "-1", "--format=%B"]);
    assert!(
        msg.contains("prod: promote v1 from web")
            && msg.contains("Signed-off-by: t <t@example.com>")
            && msg.contains("Promoted-by: admin"),
        "{msg}"
    );
    wait("the promotion synced", &|v| v["status"]["running_version"] == "v1" && v["status"]["sync"] == "Synced");
    assert_eq!(served(&prod).as_deref(), Some("v1"));
    // The dashboard's GitOps page: the application, its status and last syncs, a Sync button.
    let ui = |method: &str, path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-X", method, "-H", &format!("Authorization: Bearer {}", server.admin)])
            .arg(format!("{}{path}", server.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let page = ui("GET", "/ui/apps");
    assert!(page.contains("shop-prod") && page.contains(">Synced") && page.contains(">Healthy"), "{page}");
    assert!(page.contains("action=\"/ui/apps/shop-prod/sync\"") && page.contains("Last syncs"), "{page}");
    ui("POST", "/ui/apps/shop-prod/sync");
    assert!(server.json("/api/v1/apps/shop-prod/history")[0]["trigger"].is_string());
    // A bad commit, rolled back with its revert committed in one command: back on v1 at once,
    // the file says v1 again, the pin lifted when the application reads the revert.
    config.write("envs/prod.yml", &desired("v2"));
    config.commit("prod: v2 (bad)");
    wait("the bad commit synced", &|v| v["status"]["running_version"] == "v2" && v["status"]["sync"] == "Synced");
    let r = cli(&["rollback", "prod", "--project", "shop", "--revert", "--checkout", config.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("reverted"), "{}", r.debug());
    assert_eq!(served(&prod).as_deref(), Some("v1"));
    assert!(config.git(&["log", "-1", "--format=%B"]).contains("Revert \"prod: v2 (bad)\""));
    let v = wait("the revert read", &|v| v["status"]["pinned"] == false && v["status"]["sync"] == "Synced");
    assert_eq!((v["status"]["desired_version"].as_str(), served(&prod).as_deref()), (Some("v1"), Some("v1")), "{v}");

    wait("healthy again", &|v| v["status"]["health"] == "Healthy");
    let r = cli(&["app", "list"]);
    assert!(
        r.stdout.contains("shop-prod") && r.stdout.contains("Synced") && r.stdout.contains("Healthy"),
        "{}",
        r.debug()
    );
}

/// GitOps on real targets from a config repository served over HTTP (`git http-backend`
/// behind lighttpd): containers on the Docker Engine and a systemd host over ssh, each kept
/// by an automated application with self-heal. Drift made by hand is healed within the
/// interval and the sync history says what drifted and what was done: a container removed
/// (the agent starts it again), a stray container with the environment's label (pruned),
/// the unit file edited on the host (written again), the binary replaced on the host
/// (uploaded again), the service stopped (started). A pushed commit moves the containers to
/// a new image.
#[test]
fn gitops_heals_drift_made_by_hand_on_containers_and_a_systemd_host() {
    require("docker", "--version");
    require("lighttpd", "-v");
    let hosts = common::hosts::Hosts::start(1, &[]);
    let (web, box_dev, boxed) = (free_addr(), free_addr(), free_addr());
    let health = "    health: {http: /healthz, interval: 200ms, deadline: 10s}\n";
    let pipeline = format!(
        "build:\n  script: [echo hi]\nenvironments:\n  web:\n    listen: {web}\n{health}  box-dev:\n    target: docker\n    listen: {box_dev}\n{health}"
    );
    let repo = Repo::new(&[(".slipway.yml", &pipeline)]);
    let server = Server::start_with(&["--with-agent", "--gitops-interval", "500ms"]);
    server.add_project("shop", &repo);
    let cli = |args: &[&str]| server.cli(args);
    // Versions built and recorded as a pipeline would: binaries b1, images i1 and i2.
    let images = tempfile::tempdir().unwrap();
    let image = |v: &str| {
        let tar = images.path().join(format!("{v}.tar"));
        websvc_image(v, &tar);
        tar
    };
    for (env, dist) in [("web", websvc_build("b1")), ("box-dev", image("i1")), ("box-dev", image("i2"))] {
        let r = cli(&["deploy", env, "--artifacts", dist.to_str().unwrap(), "--project", "shop"]);
        assert_eq!(r.code, 0, "{}", r.debug());
    }
    let box_file = |v: &str| {
        format!(
            "release:\n  version: {v}\nenvironments:\n  box:\n    target: docker\n    instances: 2\n    listen: {boxed}\n{health}"
        )
    };
    let edge_file = format!("release:\n  version: b1\nenvironments:\n{}", hosts.environment("edge", ""));
    let config = Repo::new(&[("envs/box.yml", &box_file("i1")), ("envs/edge.yml", &edge_file)]);
    let git = GitWeb::start();
    let url = git.serve(&config, "config");
    for (name, extra) in [("box", &["--prune"][..]), ("edge", &["--prune", "--allow-empty"][..])] {
        let mut args = vec!["app", "add", name, "--project", "shop", "--repo", &url, "--path", "envs"];
        args.extend_from_slice(&["--auto", "--self-heal"]);
        args.extend_from_slice(extra);
        let r = cli(&args);
        assert_eq!(r.code, 0, "{}", r.debug());
        assert!(r.stdout.contains(&format!("{name}: Synced · Healthy")), "{}", r.debug());
    }
    assert_eq!(served(&boxed).as_deref(), Some("i1"));
    let port = hosts.ports[0];
    let on_host = || served(&format!("127.0.0.1:{port}"));
    assert_eq!(on_host().as_deref(), Some("b1"));
    // The last self-heal of an application after `since` (its history, newest first).
    let healed = |app: &str, since: usize| -> Option<serde_json::Value> {
        let h = server.json(&format!("/api/v1/apps/{app}/history"));
        let h = h.as_array().unwrap();
        (h.len() > since).then(|| h[0].clone()).filter(|s| s["trigger"] == "self-heal" && s["outcome"] == "healed")
    };
    let syncs = |app: &str| server.json(&format!("/api/v1/apps/{app}/history")).as_array().unwrap().len();
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(30), "{what}: {}", server.json("/api/v1/apps"));
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{what} in {:?} (interval 500 ms)", t.elapsed());
    };
    let label = "label=dev.slipway.environment=box";
    let running = || {
        let out = Command::new("docker").args(["ps", "-q", "--filter", label]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(running().len(), 2);

    // A container removed by hand: the agent starts it again.
    let gone = running()[0].clone();
    common::hosts::docker(&["rm", "-f", &gone]);
    until("a removed container started again", &|| {
        let r = running();
        r.len() == 2 && !r.contains(&gone) && served(&boxed).as_deref() == Some("i1")
    });
    // A stray container with the environment's label: pruned.
    let before = syncs("box");
    let stray = format!("slipway-test-stray-{}", std::process::id());
    let image_id = common::hosts::docker(&["inspect", "-f", "{{.Image}}", &running()[0]]);
    let stray_port = free_port().to_string();
    let started = Command::new("docker")
        .args(["run", "-d", "--name", &stray, "--network", "host", "-e", &format!("PORT={stray_port}")])
        .args(["--label", "dev.slipway.environment=box", &image_id])
        .output()
        .unwrap();
    // The controller may prune it between `docker run`'s create and start: then the start
    // fails, and the prune is still what is checked below.
    let stderr = String::from_utf8_lossy(&started.stderr);
    assert!(started.status.success() || stderr.contains("marked for removal"), "docker run: {stderr}");
    // The heal that names the stray: the removal above may add a heal of its own, when the
    // controller saw the container missing before the agent had started it again.
    let names_stray =
        |h: &serde_json::Value| h["detail"].as_str().is_some_and(|d| d.contains(&format!("container {stray}")));
    until("a stray container pruned", &|| healed("box", before).is_some_and(|h| names_stray(&h)));
    let h = healed("box", before).unwrap();
    let detail = h["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("container {stray}")) && detail.contains("removed container"), "{h}");
    let left = Command::new("docker").args(["ps", "-aq", "--filter", &format!("name={stray}")]).output().unwrap();
    assert!(left.stdout.is_empty(), "the stray container is still there");
    assert_eq!((running().len(), served(&boxed).as_deref()), (2, Some("i1")));

    // On the host: the unit file edited, the binary replaced, the service stopped; each
    // healed in turn, each repair recorded with what drifted.
    let unit = "/etc/systemd/system/websvc.service";
    let drifts = [
        (format!("echo '# edited by hand' >> {unit} && systemctl daemon-reload"), "was edited"),
        (
            "cp /bin/sleep /tmp/other && mv -f /tmp/other /opt/slipway/websvc/current/websvc".to_string(),
            "replaced on the host",
        ),
        ("systemctl stop websvc".to_string(), "its service is inactive"),
    ];
    for (cmd, says) in drifts {
        let before = syncs("edge");
        hosts.exec(0, &cmd);
        until(&format!("edge healed ({says})"), &|| healed("edge", before).is_some());
        let h = healed("edge", before).unwrap();
        assert!(h["detail"].as_str().unwrap().contains(says), "{h}");
        assert!(h["detail"].as_str().unwrap().contains("back on b1"), "{h}");
        assert_eq!(on_host().as_deref(), Some("b1"), "{h}");
    }
    assert_eq!(
        hosts.exec(0, &format!("sha256sum {unit} | cut -d' ' -f1")),
        hosts.exec(0, "cat /opt/slipway/websvc/.unit.sha256")
    );
    assert!(!hosts.exec(0, &format!("cat {unit}")).contains("edited by hand"));
    until("edge recorded healthy", &|| {
        let st = server.json("/api/v1/apps/edge");
        st["status"]["health"] == "Healthy" && st["status"]["drift"] == serde_json::json!([])
    });

    // A commit pushed to the git server: the containers move to i2 (the server fetched over HTTP).
    config.write("envs/box.yml", &box_file("i2"));
    config.commit("box: i2");
    config.git(&["push", "-q", "web", "main"]);
    until("box synced to i2", &|| {
        let v = server.json("/api/v1/apps/box");
        v["status"]["running_version"] == "i2" && v["status"]["sync"] == "Synced"
    });
    assert_eq!(served(&boxed).as_deref(), Some("i2"));
    assert!(git.access_log().contains("git-upload-pack"), "fetched over HTTP");

    // edge.yml deleted (edge prunes, allowEmpty): the host's service is stopped and removed.
    config.git(&["rm", "-q", "envs/edge.yml"]);
    config.commit("edge retired");
    config.git(&["push", "-q", "web", "main"]);
    until("edge retired", &|| server.json("/api/v1/apps/edge")["status"]["health"] == "Missing");
    assert_eq!(on_host(), None, "the host still serves");
    assert_eq!(
        hosts.exec(0, &format!("test -e {unit} || echo gone; test -e /opt/slipway/websvc || echo gone")),
        "gone\ngone"
    );
    assert_eq!(hosts.exec(0, "systemctl is-active websvc || true"), "inactive");

    // The git server gone: the status says so, and nothing changes on the targets.
    drop(git);
    until("the unreachable repository reported", &|| {
        let v = server.json("/api/v1/apps/box");
        v["status"]["sync"] == "Unknown"
            && v["status"]["reason"].as_str().is_some_and(|r| r.contains(&format!("the config repository {url}")))
    });
    assert_eq!((served(&boxed).as_deref(), on_host()), (Some("i2"), None));
    assert_eq!(running().len(), 2);
}

/// A binary replaced in the agent's store is drift that self-heal cannot repair (the store is
/// the only copy): reported with both digests, its repairs backing off (2 s, 4 s, … not
/// every interval), and healthy again once the bytes are back. Then prune of an environment
/// whose file is deleted from its config repository: with `allowEmpty` the automated sync
/// retires it (every instance stopped and removed, its release `retired`, nothing current);
/// without it the application stays `OutOfSync` saying how to retire it, and `slipway app
/// sync` does. A crash and restart of the server and its agent brings neither back; the file
/// coming back deploys it again.
#[test]
fn gitops_reports_a_replaced_binary_backs_off_and_retires_environments_whose_file_is_deleted() {
    let v1 = websvc_build("v1");
    let web = free_addr();
    let pipeline = format!(
        "build:\n  script: [echo hi]\nenvironments:\n  web:\n    listen: {web}\n    health: {{http: /healthz, interval: 200ms, deadline: 10s}}\n"
    );
    let repo = Repo::new(&[(".slipway.yml", &pipeline)]);
    let args = ["--with-agent", "--gitops-interval", "300ms"];
    let mut server = Server::start_with(&args);
    server.add_project("shop", &repo);
    let r = server.cli(&["deploy", "web", "--artifacts", v1.to_str().unwrap(), "--project", "shop"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let (a, b) = (free_addr(), free_addr());
    let desired = |env: &str, addr: &str| {
        format!(
            "release:\n  version: v1\nenvironments:\n  {env}:\n    listen: {addr}\n    instances: 2\n    health: {{http: /healthz, interval: 200ms, deadline: 10s}}\n"
        )
    };
    let config = Repo::new(&[("envs/a.yml", &desired("a", &a)), ("envs/b.yml", &desired("b", &b))]);
    let url = config.path().display().to_string();
    for (name, extra) in [("a", &["--allow-empty"][..]), ("b", &[][..])] {
        let mut cmd = vec!["app", "add", name, "--project", "shop", "--repo", &url, "--path", "envs"];
        cmd.extend_from_slice(&["--auto", "--self-heal", "--prune"]);
        cmd.extend_from_slice(extra);
        let r = server.cli(&cmd);
        assert_eq!(r.code, 0, "{}", r.debug());
        assert!(r.stdout.contains(&format!("{name}: Synced · Healthy")), "{}", r.debug());
    }
    assert_eq!((served(&a).as_deref(), served(&b).as_deref()), (Some("v1"), Some("v1")));
    let until = |server: &Server, what: &str, f: &dyn Fn(&serde_json::Value) -> bool, app: &str| {
        let t = Instant::now();
        loop {
            let v = server.json(&format!("/api/v1/apps/{app}"));
            if f(&v) {
                return v;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "{what}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The binary replaced in the agent's store (a new file renamed over it).
    let releases = server.json("/api/v1/projects/shop/environments/a/releases");
    let sha = releases[0]["artifacts"][0]["sha256"].as_str().unwrap().to_string();
    let stored = server.data.path().join("artifacts/sha256").join(&sha);
    let good = std::fs::read(&stored).unwrap();
    let put = |bytes: &[u8]| {
        let tmp = stored.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &stored).unwrap();
    };
    put(&std::fs::read("/bin/sleep").unwrap());
    let t = Instant::now();
    let v = until(
        &server,
        "the replaced binary's repairs failing",
        &|v| v["status"]["reason"].as_str().is_some_and(|r| r.contains("self-heal failed (3 in a row)")),
        "a",
    );
    let backed_off = t.elapsed();
    assert!(backed_off > Duration::from_secs(5), "three repairs in {backed_off:?}: no back-off (interval 300 ms)");
    let drift = v["status"]["drift"].to_string();
    assert!(drift.contains("replaced in the agent's store") && drift.contains(&sha[..12]), "{v}");
    assert!(v["status"]["reason"].as_str().unwrap().contains("is corrupt"), "{v}");
    let failed = server.json("/api/v1/apps/a/history");
    let failed = failed.as_array().unwrap().iter().filter(|x| x["trigger"] == "self-heal" && x["outcome"] == "failed");
    assert!((3..=4).contains(&failed.count()), "repairs tried every pass");
    assert_eq!(served(&a).as_deref(), Some("v1"), "the instances keep the bytes they started with");
    put(&good);
    until(
        &server,
        "the binary back",
        &|v| v["status"]["health"] == "Healthy" && v["status"]["drift"] == serde_json::json!([]),
        "a",
    );

    config.git(&["rm", "-q", "envs/a.yml", "envs/b.yml"]);
    config.commit("retire a and b");
    let v = until(&server, "a retired", &|v| v["status"]["health"] == "Missing", "a");
    assert_eq!(v["status"]["sync"], "Synced", "{v}");
    assert!(v["status"]["reason"].as_str().unwrap().contains("`a` retired (v1 removed) by prune"), "{v}");
    assert_eq!(served(&a), None, "a still answers");
    let h = server.json("/api/v1/apps/a/history");
    assert_eq!((h[0]["trigger"].as_str(), h[0]["outcome"].as_str()), (Some("auto"), Some("retired")), "{h}");
    assert!(h[0]["detail"].as_str().unwrap().contains("stopped and removed instance"), "{h}");
    let releases = server.json("/api/v1/projects/shop/environments/a/releases");
    assert_eq!(releases[0]["status"], "retired", "{releases}");
    // Without allowEmpty: kept running, and the reason says what retires it.
    let v = until(&server, "b told", &|v| v["status"]["sync"] == "OutOfSync", "b");
    let reason = v["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("has no envs/b.yml")
            && reason.contains("only with allowEmpty; `slipway app sync b` retires it"),
        "{v}"
    );
    assert_eq!(served(&b).as_deref(), Some("v1"));
    let r = server.cli(&["app", "sync", "b"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("b: Synced · Missing"), "{}", r.debug());
    assert_eq!(served(&b), None, "b still answers");
    // A crash and a restart: nothing comes back; what the store keeps says so.
    server.kill9();
    server.launch_with(&args);
    // `web` comes back (its instances restarted); `a` and `b` do not.
    let t = Instant::now();
    while served(&web).as_deref() != Some("v1") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "web did not come back: {:?}\n{}",
            served(&web),
            std::fs::read_to_string(server.data.path().join("agent/logs/web.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!((served(&a), served(&b)), (None, None));
    let v = until(&server, "a read after the restart", &|v| v["status"]["health"] == "Missing", "a");
    assert_eq!(v["status"]["sync"], "Synced", "{v}");
    // The file back: deployed again.
    config.write("envs/a.yml", &desired("a", &a));
    config.commit("a is back");
    until(&server, "a back", &|v| v["status"]["sync"] == "Synced" && v["status"]["health"] == "Healthy", "a");
    assert_eq!(served(&a).as_deref(), Some("v1"));
}

/// A push refreshes only the applications whose file it changed (Argo CD refreshes every
/// application of the repository, argo-cd #4272): three applications in one config
/// repository, a webhook per push, and the interval far away; the applications whose file did
/// not change are not read again (their status keeps the commit they last read).
#[test]
fn a_push_refreshes_only_the_applications_whose_file_changed() {
    let server = Server::start_with(&["--gitops-interval", "1h"]);
    let shop = Repo::new(&[(".slipway.yml", "build:\n  script: [echo hi]\n")]);
    server.add_project("shop", &shop);
    let desired = |env: &str, v: &str| {
        format!("release:\n  version: {v}\nenvironments:\n  {env}:\n    listen: {}\n", free_addr())
    };
    let config = Repo::new(&[
        ("envs/a.yml", &desired("a", "v1")),
        ("envs/b.yml", &desired("b", "v1")),
        ("envs/c.yml", &desired("c", "v1")),
    ]);
    let body = format!(r#"{{"name": "config", "repo": "{}", "webhook_secret": "cfg"}}"#, config.path().display());
    assert_eq!(server.call("POST", "/api/v1/projects", Some(&body)).0, 201);
    for app in ["a", "b", "c"] {
        let body = format!(
            r#"{{"name": "{app}", "project": "shop", "source": {{"repo": "{}", "path": "envs"}}, "destination": {{"environment": "{app}"}}}}"#,
            config.path().display()
        );
        let (code, text) = server.call("POST", "/api/v1/apps", Some(&body));
        assert_eq!(code, 201, "{text}");
    }
    let first = config.git(&["rev-parse", "HEAD"]);
    let commit_of = |app: &str| server.json(&format!("/api/v1/apps/{app}"))["status"]["commit"].clone();
    let push = |n: usize, file: &str| {
        config.write(file, &desired(&file[5..6], &format!("v{n}")));
        config.commit(&format!("{file}: v{n}"));
        let sha = config.git(&["rev-parse", "HEAD"]);
        let body = format!(r#"{{"ref": "refs/heads/main", "after": "{sha}", "repository": {{"name": "config"}}}}"#);
        let headers = vec![
            ("X-GitHub-Event", "push".to_string()),
            ("X-GitHub-Delivery", format!("filter-{n}")),
            ("X-Hub-Signature-256", format!("sha256={}", hmac_hex("cfg", body.as_bytes()))),
        ];
        let (code, text) = server.deliver("/api/v1/webhooks/github/config", &headers, body.as_bytes());
        assert!(code == 200 || code == 201, "{code} {text}");
        // The config repository has no pipeline file: the run recorded for the push is
        // dropped when planning finds none (no failed pipeline per push).
        if let Some(id) = serde_json::from_str::<serde_json::Value>(&text).unwrap()["pipeline"].as_i64() {
            let t = Instant::now();
            while server.call("GET", &format!("/api/v1/pipelines/{id}"), None).0 != 404 {
                assert!(t.elapsed() < Duration::from_secs(10), "pipeline {id} of the config repository stays");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        sha
    };
    let wait_commit = |app: &str, sha: &str| {
        let t = Instant::now();
        while commit_of(app) != sha {
            assert!(t.elapsed() < Duration::from_secs(10), "{app} did not read {sha}: {}", commit_of(app));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let second = push(2, "envs/a.yml");
    wait_commit("a", &second);
    let third = push(3, "envs/b.yml");
    wait_commit("b", &third);
    // Two more rounds of the reconciler: nothing else is read.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        (commit_of("a"), commit_of("b"), commit_of("c")),
        (second.as_str().into(), third.as_str().into(), first.as_str().into())
    );
    let a = server.json("/api/v1/apps/a");
    assert_eq!(
        (a["status"]["desired_version"].as_str(), a["status"]["sync"].as_str()),
        (Some("v2"), Some("OutOfSync")),
        "{a}"
    );
    // `slipway app diff` (a refresh) reads the file whatever changed.
    let (code, _) = server.call("POST", "/api/v1/apps/c/refresh", None);
    assert_eq!(code, 200);
    assert_eq!(commit_of("c"), third.as_str());
    assert_eq!(server.json("/api/v1/pipelines?project=config"), serde_json::json!([]));
}

/// Sync windows (Argo CD's): an open `deny` window holds automated syncs and, without
/// `manualSync`, manual ones (409 with the window); with `manualSync: true` a manual sync goes
/// through; outside every `allow` window automated syncs wait. A time zone that does not
/// exist is refused at its field.
#[test]
fn sync_windows_hold_automated_syncs_and_let_manual_ones_through_when_told() {
    let server = Server::start_with(&["--gitops-interval", "300ms"]);
    let shop = Repo::new(&[(".slipway.yml", "build:\n  script: [echo hi]\n")]);
    server.add_project("shop", &shop);
    let desired =
        |env: &str| format!("release:\n  version: v9\nenvironments:\n  {env}:\n    listen: {}\n", free_addr());
    let config =
        Repo::new(&[("envs/a.yml", &desired("a")), ("envs/b.yml", &desired("b")), ("envs/c.yml", &desired("c"))]);
    let add = |name: &str, windows: &str| {
        let body = format!(
            "name: {name}\nproject: shop\nsource: {{repo: {}, path: envs}}\ndestination: {{environment: {name}}}\nsync_policy:\n  automated: {{selfHeal: true}}\n  windows: [{windows}]\n",
            config.path().display()
        );
        server.call("POST", "/api/v1/apps", Some(&body))
    };
    // Open at every minute for an hour: always open.
    let (code, text) = add("a", "{kind: deny, schedule: '* * * * *', duration: 1h}");
    assert_eq!(code, 201, "{text}");
    let (code, text) = add("b", "{kind: deny, schedule: '* * * * *', duration: 1h, manualSync: true}");
    assert_eq!(code, 201, "{text}");
    let (code, text) = add("c", "{kind: allow, schedule: '0 0 1 1 *', duration: 1m}");
    assert_eq!(code, 201, "{text}");
    std::thread::sleep(Duration::from_millis(1000));
    for app in ["a", "b", "c"] {
        let h = server.json(&format!("/api/v1/apps/{app}/history"));
        assert_eq!(h, serde_json::json!([]), "{app} synced inside its window: {h}");
    }
    let a = server.json("/api/v1/apps/a");
    assert!(
        a["status"]["reason"].as_str().unwrap().contains("sync window `deny * * * * *` for 1h 0m (UTC) is open"),
        "{a}"
    );
    assert_eq!(a["windows"][0]["active"], true, "{a}");
    let c = server.json("/api/v1/apps/c");
    assert!(c["status"]["reason"].as_str().unwrap().contains("outside its allow window(s)"), "{c}");
    let (code, text) = server.call("POST", "/api/v1/apps/a/sync", None);
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("does not let manual syncs through"), "{text}");
    let (code, text) = server.call("POST", "/api/v1/apps/b/sync", None);
    assert_eq!(code, 200, "{text}");
    let h = server.json("/api/v1/apps/b/history");
    assert_eq!((h[0]["trigger"].as_str(), h[0]["outcome"].as_str()), (Some("manual"), Some("failed")), "{h}");
    let (code, text) = add("d", "{kind: deny, schedule: '0 22 * * *', duration: 8h, timeZone: Mars/Olympus}");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("`Mars/Olympus` is not a time zone") && text.contains("windows[0].timeZone"), "{text}");
}

/// A browser's requests, with curl and a cookie jar: (status, headers, body).
fn browse(jar: &std::path::Path, method: &str, url: &str, form: &[(&str, &str)]) -> (u16, String, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-X", method, "-D", "-", "-b", jar.to_str().unwrap(), "-c", jar.to_str().unwrap(), url]);
    for (k, v) in form {
        c.args(["--data-urlencode", &format!("{k}={v}")]);
    }
    let out = String::from_utf8_lossy(&c.output().unwrap().stdout).to_string();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

fn csrf_in(page: &str) -> String {
    page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string()
}

/// A server with the project `shop` — `jobs` and an environment `web` — the users given with
/// their role on it, its first pipeline ended as `want`, and v1 then v2 deployed to `web`:
/// (the server, the repository, web's address, the pipeline).
fn deployed_shop(jobs: &str, users: &[(&str, &str)], want: &str) -> (Server, Repo, String, i64) {
    let (v1, v2) = (websvc_build("v1"), websvc_build("v2"));
    let web = free_addr();
    let pipeline = format!(
        "{jobs}environments:\n  web:\n    listen: {web}\n    health: {{http: /healthz, interval: 200ms, deadline: 10s}}\n"
    );
    let repo = Repo::new(&[(".slipway.yml", &pipeline)]);
    let server = Server::start_with(&["--with-agent", "--monitor-interval", "300ms"]);
    server.add_project("shop", &repo);
    for (user, role) in users {
        let body = format!(
            r#"{{"name": "{user}", "password": "{user} has a long password", "bindings": [{{"role": "{role}", "project": "shop"}}]}}"#
        );
        assert_eq!(server.call("POST", "/api/v1/users", Some(&body)).0, 201);
    }
    let run = server.trigger("shop", None);
    assert_eq!(server.wait(run, Duration::from_secs(60))["status"], want);
    for dist in [&v1, &v2] {
        let r = Run::from(
            Command::new(bin())
                .args(["deploy", "web", "--artifacts", dist.to_str().unwrap()])
                .args(["--server", &server.url, "--token", &server.admin, "--project", "shop"])
                .output()
                .unwrap(),
        );
        assert_eq!(r.code, 0, "{}", r.debug());
    }
    (server, repo, web, run)
}

/// The dashboard: a user signs in with the form, sees the brief's environment table (current
/// version, status, last update) and where a rollback returns to, and rolls back with a
/// confirmed form; a viewer gets no button and a 403 page when forging the request; a form
/// without its CSRF token is refused; Chinese by a switch that sticks; signing out ends the
/// session; no open redirect after sign-in.
#[test]
fn the_dashboard_signs_in_shows_environments_and_rolls_back_for_those_who_may() {
    let (server, _repo, web, _) =
        deployed_shop("build:\n  script: [echo hi]\n", &[("alice", "deployer"), ("vic", "viewer")], "success");
    let dir = tempfile::tempdir().unwrap();
    let (alice, vic) = (dir.path().join("alice.jar"), dir.path().join("vic.jar"));
    let url = |p: &str| format!("{}{p}", server.url);
    // Without a session: to the form, remembering where to go.
    let (code, head, _) = browse(&alice, "GET", &url("/ui/environments"), &[]);
    assert_eq!(code, 303, "{head}");
    assert!(head.contains("location: /ui/login?next=%2Fui%2Fenvironments"), "{head}");
    let (code, _, form) = browse(&alice, "GET", &url("/ui/login"), &[]);
    assert!(code == 200 && form.contains("autocomplete=\"current-password\""), "{form}");
    let (code, head, _) = browse(
        &alice,
        "POST",
        &url("/ui/login"),
        &[("user", "alice"), ("password", "wrong password!!"), ("next", "/ui/")],
    );
    assert_eq!(code, 303);
    let (_, _, again) =
        browse(&alice, "GET", &url(head.split("location: ").nth(1).unwrap().lines().next().unwrap().trim()), &[]);
    assert!(again.contains("Wrong user name or password."), "{again}");
    // Signed in: the cookie is HttpOnly and SameSite, and a foreign `next` is not followed.
    let (code, head, _) = browse(
        &alice,
        "POST",
        &url("/ui/login"),
        &[("user", "alice"), ("password", "alice has a long password"), ("next", "https://evil.example/")],
    );
    assert_eq!(code, 303, "{head}");
    assert!(head.contains("location: /ui/\r") || head.contains("location: /ui/\n"), "{head}");
    assert!(
        head.contains("slipway_session=slw_") && head.contains("HttpOnly") && head.contains("SameSite=Lax"),
        "{head}"
    );
    let t = Instant::now();
    let page = loop {
        let (code, _, page) = browse(&alice, "GET", &url("/ui/environments"), &[]);
        assert_eq!(code, 200, "{page}");
        if page.contains("v1 (#1)") {
            break page;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the environment never showed: {page}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(page.contains("<td>v2</td>") && page.contains("status healthy") && page.contains("1/1"), "{page}");
    assert!(page.contains(&format!("http://{web}")) && page.contains("Roll back"), "{page}");
    let css = page.split("rel=\"stylesheet\" href=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let (code, head, _) = browse(&alice, "GET", &url(&css), &[]);
    assert!(code == 200 && head.contains("immutable"), "{head}");
    // A form without its CSRF token is refused; with it, the rollback happens.
    let action = url("/ui/projects/shop/environments/web/rollback");
    let (code, _, refused) = browse(&alice, "POST", &action, &[("csrf", "0000")]);
    assert_eq!(code, 403, "{refused}");
    assert!(refused.contains("CSRF"), "{refused}");
    assert_eq!(served(&web).as_deref(), Some("v2"));
    let (code, head, _) = browse(&alice, "POST", &action, &[("csrf", &csrf_in(&page))]);
    assert_eq!(code, 303, "{head}");
    let (_, _, after) = browse(&alice, "GET", &url("/ui/environments"), &[]);
    assert!(after.contains("Rolled back web → v1"), "{after}");
    assert_eq!(served(&web).as_deref(), Some("v1"));
    let h = server.json("/api/v1/projects/shop/environments/web/releases");
    assert_eq!((h[0]["reason"].as_str(), h[0]["actor"].as_str()), (Some("rollback"), Some("alice")), "{h}");
    // The environment's history: every release with its reason and who.
    let (code, _, hist) = browse(&alice, "GET", &url("/ui/projects/shop/environments/web"), &[]);
    assert_eq!(code, 200, "{hist}");
    assert!(
        hist.contains("#3") && hist.contains("rollback") && hist.contains("alice") && hist.contains("rolled back"),
        "{hist}"
    );
    let (code, _, _) = browse(&alice, "GET", &url("/ui/projects/shop/environments/nope"), &[]);
    assert_eq!(code, 404);
    // The environment's page: the last rollout line by line, the charts, and for a deployer
    // the buttons; a diff of two releases (artifacts and settings).
    assert!(hist.contains("rollback of v1 (release #3) started") && hist.contains("done: healthy"), "{hist}");
    assert!(hist.contains("Healthy instances") && hist.contains("Latency p95") && hist.contains("<polyline"), "{hist}");
    assert!(hist.contains("Deploy again</button>") && hist.contains("Roll back to this</button>"), "{hist}");
    let (code, _, diff) = browse(&alice, "GET", &url("/ui/projects/shop/environments/web/diff?from=1&to=2"), &[]);
    assert_eq!(code, 200, "{diff}");
    assert!(diff.contains("<strong>v1</strong>") && diff.contains("<strong>v2</strong>"), "{diff}");
    assert!(diff.contains("changed</span>") && diff.contains("Both releases are of the same commit."), "{diff}");
    assert!(diff.contains("<pre class=\"diff\">") && diff.contains("&#34;instances&#34;: 1"), "{diff}");
    // Deploy v2 again from its row: started in the background, the page follows it.
    let (code, head, _) = browse(
        &alice,
        "POST",
        &url("/ui/projects/shop/environments/web/deploy"),
        &[("csrf", &csrf_in(&hist)), ("version", "v2")],
    );
    assert_eq!(code, 303, "{head}");
    assert!(head.contains("location: /ui/projects/shop/environments/web"), "{head}");
    let (_, _, page) = browse(&alice, "GET", &url("/ui/projects/shop/environments/web"), &[]);
    assert!(page.contains("Deploying v2 → web"), "{page}");
    let t = Instant::now();
    while served(&web).as_deref() != Some("v2") {
        assert!(t.elapsed() < Duration::from_secs(30), "v2 never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    loop {
        let (_, _, page) = browse(&alice, "GET", &url("/ui/projects/shop/environments/web"), &[]);
        if page.contains("deploy of v2 (release #4) started") && page.contains("done: healthy") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Silences made and ended from the alerts page; a bad matcher is told, nothing made.
    let (_, _, alerts) = browse(&alice, "GET", &url("/ui/alerts"), &[]);
    assert!(alerts.contains("action=\"/ui/silences\""), "{alerts}");
    let csrf = csrf_in(&alerts);
    let silence = |m: &str| {
        let form = [("csrf", csrf.as_str()), ("matchers", m), ("duration", "1h"), ("comment", "maintenance")];
        browse(&alice, "POST", &url("/ui/silences"), &form).0
    };
    assert_eq!(silence("alertname"), 303);
    let (_, _, page) = browse(&alice, "GET", &url("/ui/alerts"), &[]);
    assert!(page.contains("No silence was made") && page.contains("is not a matcher"), "{page}");
    assert_eq!(silence("alertname=\"InstanceDown\" project=\"shop\""), 303);
    let (_, _, page) = browse(&alice, "GET", &url("/ui/alerts"), &[]);
    assert!(
        page.contains("Silenced") && page.contains("alertname=&#34;InstanceDown&#34;") && page.contains("maintenance"),
        "{page}"
    );
    let sid = page.split("action=\"/ui/silences/").nth(1).unwrap().split('/').next().unwrap().to_string();
    let (code, _, _) =
        browse(&alice, "POST", &url(&format!("/ui/silences/{sid}/expire")), &[("csrf", &csrf_in(&page))]);
    assert_eq!(code, 303);
    let (_, _, page) = browse(&alice, "GET", &url("/ui/alerts"), &[]);
    assert!(page.contains(&format!("Ended silence {sid}")), "{page}");
    // Back to v1 from the history row, for the checks below.
    let (code, _, _) = browse(
        &alice,
        "POST",
        &url("/ui/projects/shop/environments/web/rollback"),
        &[("csrf", &csrf_in(&hist)), ("to", "v1"), ("back", "env")],
    );
    assert_eq!(code, 303);
    assert_eq!(served(&web).as_deref(), Some("v1"));
    // A viewer sees the table without the button, and forging the form gets a 403 page.
    let (code, _, _) =
        browse(&vic, "POST", &url("/ui/login"), &[("user", "vic"), ("password", "vic has a long password")]);
    assert_eq!(code, 303);
    let (_, _, page) = browse(&vic, "GET", &url("/ui/environments"), &[]);
    assert!(page.contains("<td>v1</td>") && !page.contains("Roll back</button>"), "{page}");
    let (_, _, envpage) = browse(&vic, "GET", &url("/ui/projects/shop/environments/web"), &[]);
    assert!(envpage.contains("Healthy instances") && !envpage.contains("</button></form>"), "{envpage}");
    let (code, _, forged) = browse(
        &vic,
        "POST",
        &url("/ui/projects/shop/environments/web/deploy"),
        &[("csrf", &csrf_in(&page)), ("version", "v2")],
    );
    assert!(code == 403 && forged.contains("`vic` lacks `deploy:environments/web`"), "{forged}");
    let (code, _, forged) = browse(&vic, "POST", &action, &[("csrf", &csrf_in(&page))]);
    assert_eq!(code, 403, "{forged}");
    assert!(
        forged.contains("`vic` lacks `rollback:environments/web`") && forged.starts_with("<!doctype html>"),
        "{forged}"
    );
    // Chinese, by the switch, and it sticks.
    let (_, _, zh) = browse(&vic, "GET", &url("/ui/?lang=zh"), &[]);
    assert!(zh.contains("lang=\"zh-CN\"") && zh.contains("当前部署版本") && zh.contains("最后更新时间"), "{zh}");
    let (_, _, still) = browse(&vic, "GET", &url("/ui/environments"), &[]);
    assert!(still.contains("回滚目标版本"), "{still}");
    // Signing out ends the session for good.
    let (code, _, _) = browse(&vic, "POST", &url("/ui/logout"), &[("csrf", &csrf_in(&still))]);
    assert_eq!(code, 303);
    let (code, _, _) = browse(&vic, "GET", &url("/ui/"), &[]);
    assert_eq!(code, 303);
    // Served fast enough (debug build here; docs/benchmarks.md has the release figures).
    let t = Instant::now();
    let (code, _, _) = browse(&alice, "GET", &url("/ui/"), &[]);
    assert_eq!(code, 200);
    eprintln!("overview served in {:?} (curl included)", t.elapsed());
}

/// A pipeline's test report from the JUnit files its jobs list under
/// `artifacts:reports:junit`: failures first with their message, a test that failed and then
/// passed when the failed job was retried shown as flaky, the slowest tests, the coverage that the
/// job's `coverage:` regex read from its log with its trend across pipelines, and one test's
/// history.
#[test]
fn a_pipelines_test_report_shows_failures_flaky_and_slow_tests_and_coverage_with_its_trend() {
    let case = |name: &str, time: &str, fail: &str| {
        let body = if fail.is_empty() {
            String::new()
        } else {
            format!("<failure message=\\\"{fail}\\\">{fail} at cart_test.go:9</failure>")
        };
        format!("<testcase classname=\\\"shop/cart\\\" name=\\\"{name}\\\" time=\\\"{time}\\\">{body}</testcase>")
    };
    let first = format!(
        "<testsuite name=\\\"shop/cart\\\">{}{}</testsuite>",
        case("TestAdd", "0.01", "want 3"),
        case("TestSlow", "2.5", "")
    );
    let second = format!(
        "<testsuite name=\\\"shop/cart\\\">{}{}{}</testsuite>",
        case("TestAdd", "0.01", ""),
        case("TestSlow", "2.5", ""),
        case("TestBroken", "0.2", "nil map")
    );
    let yml = format!(
        "test:\n  coverage: '/coverage: \\d+\\.\\d+%/'\n  script:\n    - mkdir -p out\n    - 'if [ ! -e \"$MARK\" ]; then touch \"$MARK\"; printf \"{first}\" > out/report.xml; exit 1; fi'\n    - 'printf \"{second}\" > out/report.xml'\n    - 'printf \"ok  \\tshop/cart\\t0.01s\\tcoverage: $COV%% of statements\\nok  \\tshop/api\\t0.02s\\tcoverage: 40.0%% of statements\\n\"'\n    - 'echo \"coverage: $COV% of statements\"'\n  artifacts:\n    when: always\n    reports:\n      junit: out/*.xml\n"
    );
    let repo = Repo::new(&[(".slipway.yml", &yml)]);
    let server = Server::start_with(&["--with-agent"]);
    server.add_project("shop", &repo);
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("mark");
    let vars = |cov: &str| format!(r#"{{"variables": [["MARK", "{}"], ["COV", "{cov}"]]}}"#, mark.display());
    // The first run fails; retried, it passes: its test is flaky.
    let a = server.trigger("shop", Some(&vars("70.0")));
    let v = server.wait(a, Duration::from_secs(60));
    assert_eq!(v["status"], "failed", "{v}");
    let (code, body) = server.call("POST", &format!("/api/v1/pipelines/{a}/retry"), None);
    assert_eq!(code, 200, "{body}");
    let v = server.wait(a, Duration::from_secs(60));
    assert_eq!(v["status"], "success", "{v}");
    let b = server.trigger("shop", Some(&vars("81.3")));
    assert_eq!(server.wait(b, Duration::from_secs(60))["status"], "success");
    let url = |p: &str| format!("{}{p}", server.url);
    let get = |p: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-H", &format!("Authorization: Bearer {}", server.admin), &url(p)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let page = get(&format!("/ui/pipelines/{a}"));
    assert!(
        page.contains(&format!("/ui/pipelines/{a}/tests")) && page.contains("3 tests") && page.contains("1 failed"),
        "{page}"
    );
    let report = get(&format!("/ui/pipelines/{a}/tests"));
    let section = |title: &str| {
        report
            .split(title)
            .nth(1)
            .and_then(|r| r.split("<h2>").next())
            .unwrap_or_else(|| panic!("no {title}: {report}"))
            .to_string()
    };
    let failures = section("Failures</h2>");
    assert!(
        failures.contains("TestBroken")
            && failures.contains("nil map at cart_test.go:9")
            && !failures.contains("TestAdd"),
        "{failures}"
    );
    let flaky = section("Flaky: failed, then passed when the job was retried</h2>");
    assert!(flaky.contains("TestAdd") && flaky.contains("want 3"), "{flaky}");
    let slowest = section("Slowest tests</h2>");
    assert!(slowest.find("TestSlow") < slowest.find("TestBroken"), "{slowest}");
    assert!(report.contains("<strong>70.0%</strong>"), "{report}");
    let report = get(&format!("/ui/pipelines/{b}/tests"));
    assert!(
        report.contains("<strong>81.3%</strong>") && report.contains("+11.3") && report.contains("svg class=\"spark\""),
        "{report}"
    );
    let packages = report.split("Coverage per package</h2>").nth(1).unwrap_or_else(|| panic!("{report}"));
    assert!(packages.contains("<code>shop/cart</code></td><td>81.3%</td><td>+11.3</td>"), "{packages}");
    assert!(packages.contains("<code>shop/api</code></td><td>40.0%</td><td>+0.0</td>"), "{packages}");
    let hist = get("/ui/projects/shop/tests?class=shop%2Fcart&name=TestAdd");
    assert!(
        hist.contains("2 passed, of the last 3 runs")
            && hist.contains(&format!("#{a}"))
            && hist.contains(&format!("#{b}")),
        "{hist}"
    );
    assert!(hist.contains("status failed") && hist.contains("want 3"), "{hist}");
}

/// A 100,000-line log is served a page of 1,000 lines at a time (the last page first, small
/// enough for a phone), every page reachable, and a search finds a line on any page.
#[test]
fn a_100000_line_log_is_served_a_page_at_a_time_and_searched_whole() {
    let repo = Repo::new(&[(".slipway.yml", "long:\n  script: ['seq 1 100000 | sed \"s/^/line /\"']\n")]);
    let server = Server::start_with(&["--with-agent"]);
    server.add_project("shop", &repo);
    let run = server.trigger("shop", None);
    assert_eq!(server.wait(run, Duration::from_secs(60))["status"], "success");
    let get = |p: &str| {
        let t = Instant::now();
        let out = Command::new("curl")
            .args(["-sS", "-H", &format!("Authorization: Bearer {}", server.admin), &format!("{}{p}", server.url)])
            .output()
            .unwrap();
        (String::from_utf8_lossy(&out.stdout).to_string(), t.elapsed())
    };
    let (last, took) = get(&format!("/ui/pipelines/{run}/jobs/0"));
    eprintln!("the last page of a 100,000-line log: {} bytes in {took:?} (debug build)", last.len());
    assert!(
        last.contains("Page 101 / 101") && last.contains("id=\"L100002\"") && !last.contains("id=\"L99000\""),
        "{}",
        &last[..2000.min(last.len())]
    );
    let (first, took) = get(&format!("/ui/pipelines/{run}/jobs/0?page=1"));
    eprintln!("a full page of it: {} bytes in {took:?} (debug build)", first.len());
    assert!(first.len() < 150_000, "{} bytes", first.len());
    assert!(first.contains("id=\"L1\"") && first.contains("rel=\"last\""), "{}", &first[..2000.min(first.len())]);
    let (found, took) = get(&format!("/ui/pipelines/{run}/jobs/0?q=line+77777"));
    eprintln!("searching 100,000 lines: {took:?}");
    assert!(
        found.contains("1 matching lines") && found.contains("?page=78#L77780"),
        "{}",
        &found[..3000.min(found.len())]
    );
}

/// The admin pages: projects with their webhook URLs and schedules, the agents with their
/// version and state, users with their roles, tokens revoked from the page (which ends that
/// browser session), the audit log with its chain checked and the revocation in it; a viewer
/// gets only their own tokens, no tabs for the rest and a 403 page when going there anyway.
#[test]
fn the_admin_pages_show_projects_agents_users_tokens_and_audit_to_those_who_may() {
    let repo = Repo::new(&[(
        ".slipway.yml",
        "build:\n  script: [echo hi]\nship:\n  when: manual\n  script: [echo shipped]\n",
    )]);
    let server = Server::start_with(&["--with-agent"]);
    server.add_project("shop", &repo);
    for (user, role, project) in [("olga", "admin", "null"), ("vic", "viewer", "\"shop\"")] {
        let body = format!(
            r#"{{"name": "{user}", "password": "{user} has a long password", "bindings": [{{"role": "{role}", "project": {project}}}]}}"#
        );
        assert_eq!(server.call("POST", "/api/v1/users", Some(&body)).0, 201, "{body}");
    }
    let (code, body) = server.call(
        "POST",
        "/api/v1/projects/shop/schedules",
        Some(r#"{"description": "nightly", "cron": "30 2 * * *", "cron_timezone": "Asia/Shanghai"}"#),
    );
    assert_eq!(code, 201, "{body}");
    let dir = tempfile::tempdir().unwrap();
    let (olga, vic) = (dir.path().join("olga"), dir.path().join("vic"));
    let url = |p: &str| format!("{}{p}", server.url);
    for (jar, user) in [(&olga, "olga"), (&vic, "vic")] {
        let password = format!("{user} has a long password");
        let (code, _, _) = browse(jar, "POST", &url("/ui/login"), &[("user", user), ("password", &password)]);
        assert_eq!(code, 303);
    }
    // The overview lists the manual job waiting; Olga runs it from there.
    let run = server.trigger("shop", None);
    server.wait(run, Duration::from_secs(60));
    let (_, _, page) = browse(&olga, "GET", &url("/ui/"), &[]);
    let play = format!("/ui/pipelines/{run}/jobs/1/play");
    assert!(page.contains("Manual jobs waiting") && page.contains(&play), "{page}");
    let (code, _, _) = browse(&olga, "POST", &url(&play), &[("csrf", &csrf_in(&page))]);
    assert_eq!(code, 303);
    let t = Instant::now();
    while server.json(&format!("/api/v1/pipelines/{run}"))["jobs"][1]["status"] != "success" {
        assert!(t.elapsed() < Duration::from_secs(30), "the manual job did not run");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, page) = browse(&olga, "GET", &url("/ui/admin/projects"), &[]);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains(&format!("{}/api/v1/webhooks/github/shop", server.url)), "{page}");
    assert!(page.contains("30 2 * * *") && page.contains("Asia/Shanghai") && page.contains("nightly"), "{page}");
    assert!(page.contains("/ui/admin/agents") && page.contains("/ui/admin/audit"), "{page}");
    // The embedded agent asks for work: online, its version, waiting for a job.
    let t = Instant::now();
    let page = loop {
        let (_, _, page) = browse(&olga, "GET", &url("/ui/admin/agents"), &[]);
        if page.contains("status success") {
            break page;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{page}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(page.contains(env!("CARGO_PKG_VERSION")) && page.contains("waiting for a job"), "{page}");
    let (_, _, page) = browse(&olga, "GET", &url("/ui/admin/users"), &[]);
    assert!(page.contains("viewer · shop (api)") && page.contains("admin · * (api)"), "{page}");
    assert!(page.contains("deployer") && page.contains("rollback:environments"), "{page}");
    // Olga revokes Vic's browser session from the tokens page: Vic is signed out.
    let (_, _, page) = browse(&olga, "GET", &url("/ui/admin/tokens"), &[]);
    let row = page
        .split("<tr>")
        .find(|r| r.contains("<td>vic</td>") && r.contains("browser session"))
        .unwrap_or_else(|| panic!("{page}"));
    let id = row.split("<code>").nth(1).unwrap().split('<').next().unwrap().to_string();
    assert!(page.contains("(this session)"), "{page}");
    let (code, _, _) = browse(&vic, "GET", &url("/ui/"), &[]);
    assert_eq!(code, 200);
    let (code, head, _) =
        browse(&olga, "POST", &url(&format!("/ui/admin/tokens/{id}/revoke")), &[("csrf", &csrf_in(&page))]);
    assert_eq!(code, 303, "{head}");
    let (_, _, after) = browse(&olga, "GET", &url("/ui/admin/tokens"), &[]);
    assert!(after.contains(&format!("Revoked token {id}")), "{after}");
    let (code, _, _) = browse(&vic, "GET", &url("/ui/"), &[]);
    assert_eq!(code, 303, "a revoked session still works");
    // The audit log: intact, the revocation in it, one actor's only when asked.
    let (code, _, audit) = browse(&olga, "GET", &url("/ui/admin/audit?actor=olga"), &[]);
    assert_eq!(code, 200, "{audit}");
    assert!(
        audit.contains("the hash chain is intact") && audit.contains(&format!("/ui/admin/tokens/{id}/revoke")),
        "{audit}"
    );
    assert!(!audit.contains("<td>admin</td>"), "the filter let another actor through: {audit}");
    // Vic again: their own tokens only, no tabs for the rest, 403 when going there anyway.
    let (code, _, _) =
        browse(&vic, "POST", &url("/ui/login"), &[("user", "vic"), ("password", "vic has a long password")]);
    assert_eq!(code, 303);
    let (_, _, mine) = browse(&vic, "GET", &url("/ui/admin/tokens"), &[]);
    assert!(mine.contains("Your tokens") && !mine.contains("<td>olga</td>"), "{mine}");
    assert!(!mine.contains("/ui/admin/agents") && !mine.contains("/ui/admin/audit"), "{mine}");
    for page in ["/ui/admin/agents", "/ui/admin/users", "/ui/admin/audit"] {
        let (code, _, body) = browse(&vic, "GET", &url(page), &[]);
        assert_eq!(code, 403, "{page}: {body}");
        assert!(body.starts_with("<!doctype html>") && body.contains("`vic` lacks"), "{body}");
    }
    // Another user's token is not Vic's to revoke.
    let row = after
        .split("<tr>")
        .find(|r| r.contains("<td>olga</td>") && r.contains("(this session)"))
        .unwrap_or_else(|| panic!("{after}"));
    let theirs = row.split("<code>").nth(1).unwrap().split('<').next().unwrap().to_string();
    let (code, _, _) =
        browse(&vic, "POST", &url(&format!("/ui/admin/tokens/{theirs}/revoke")), &[("csrf", &csrf_in(&mine))]);
    assert_eq!(code, 303);
    let (_, _, mine) = browse(&vic, "GET", &url("/ui/admin/tokens"), &[]);
    assert!(mine.contains("The token was not revoked"), "{mine}");
    let (code, _, _) = browse(&olga, "GET", &url("/ui/"), &[]);
    assert_eq!(code, 200, "olga's session was revoked by vic");
}

/// Headless Chromium driven over WebDriver (Debian's chromedriver), one per test.
struct Browser {
    url: String,
    session: String,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        require("chromedriver", "--version");
        let port = free_port();
        let driver = Proc(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let url = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        while http_get(&format!("127.0.0.1:{port}"), "/status").is_none() {
            assert!(t.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ]}
        }}});
        let mut b = Browser { url, session: String::new(), _driver: driver, _profile: profile };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", method, &format!("{}{path}", self.url), "-H", "content-type: application/json"]);
        if method != "GET" {
            c.args(["--data-binary", &body.unwrap_or(serde_json::json!({})).to_string()]);
        }
        let out = c.output().unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn s(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let v = self.call(method, &format!("/session/{}{path}", self.session), body);
        assert!(v["value"]["error"].is_null(), "{method} {path}: {v}");
        v["value"].clone()
    }

    /// What the page gets wrong for a keyboard or a screen reader: a form field without a
    /// label, a button or link without a name, a graphic without a text, no language.
    fn a11y(&self) -> Vec<String> {
        let v = self.js(
            "var bad = [];
             if (!document.documentElement.lang) bad.push('no lang on <html>');
             document.querySelectorAll('input:not([type=hidden]), select, textarea').forEach(function (e) {
               var named = e.labels && e.labels.length > 0 || e.getAttribute('aria-label');
               if (!named) bad.push('unlabelled ' + e.outerHTML.slice(0, 80));
             });
             document.querySelectorAll('button, a[href]').forEach(function (e) {
               if (!(e.textContent.trim() || e.getAttribute('aria-label'))) bad.push('nameless ' + e.outerHTML.slice(0, 80));
             });
             document.querySelectorAll('svg').forEach(function (e) {
               if (!e.getAttribute('aria-label')) bad.push('svg without aria-label');
             });
             return bad;",
        );
        v.as_array().unwrap().iter().map(|x| format!("{} at {}", x.as_str().unwrap_or(""), self.title())).collect()
    }

    /// Runs a script in the page and returns what it returns.
    fn js(&self, script: &str) -> serde_json::Value {
        self.s("POST", "/execute/sync", Some(serde_json::json!({"script": script, "args": []})))
    }

    fn go(&self, url: &str) {
        self.s("POST", "/url", Some(serde_json::json!({"url": url})));
    }

    fn find(&self, css: &str) -> String {
        let v = self.s("POST", "/element", Some(serde_json::json!({"using": "css selector", "value": css})));
        v.as_object().unwrap().values().next().unwrap().as_str().unwrap().to_string()
    }

    fn count(&self, css: &str) -> usize {
        self.s("POST", "/elements", Some(serde_json::json!({"using": "css selector", "value": css})))
            .as_array()
            .unwrap()
            .len()
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.s("POST", &format!("/element/{e}/value"), Some(serde_json::json!({"text": text})));
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.s("POST", &format!("/element/{e}/click"), None);
    }

    fn text(&self) -> String {
        self.s(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": "return document.body.innerText", "args": []})),
        )
        .as_str()
        .unwrap()
        .to_string()
    }

    fn title(&self) -> String {
        self.s("GET", "/title", None).as_str().unwrap_or_default().to_string()
    }

    /// Saves a screenshot under the test's target directory (kept as an artifact), after
    /// checking the page for keyboard and screen-reader faults.
    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let faults = self.a11y();
        assert!(faults.is_empty(), "{name}: {faults:?}");
        use base64::Engine as _;
        let png = self.s("GET", "/screenshot", None);
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap())
            .unwrap();
        path
    }

    /// The console's errors since the last call.
    fn console_errors(&self) -> Vec<String> {
        let v = self.call(
            "POST",
            &format!("/session/{}/se/log", self.session),
            Some(serde_json::json!({"type": "browser"})),
        );
        v["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
    }
}

/// In a real browser (headless Chromium): sign in, read the overview and the environments,
/// roll back with the confirmed button, switch to Chinese; a viewer gets no button; no page
/// logs a console error; every page's screenshot is kept.
#[test]
fn in_chromium_a_deployer_rolls_back_from_the_environments_page_and_a_viewer_only_reads() {
    let jobs = "build:\n  script: [echo hi, sleep 2]\ncheck:\n  script:\n    - echo checking\n    - 'if [ -n \"$PASS\" ]; then for i in 1 2 3 4 5 6 7 8; do echo \"step $i\"; sleep 0.4; done; fi'\n    - 'test -n \"$PASS\" || { printf \"\\033[31mERROR: the widget is broken\\033[0m\\n\"; exit 2; }'\n";
    let (server, _repo, web, run) = deployed_shop(jobs, &[("dana", "deployer"), ("vic", "viewer")], "failed");
    let b = Browser::start();
    let sign_in = |user: &str| {
        b.go(&format!("{}/ui/environments", server.url));
        assert!(b.title().contains("slipway") && b.count("#password") == 1, "not the sign-in form: {}", b.title());
        b.type_in("#user", user);
        b.type_in("#password", &format!("{user} has a long password"));
        b.click("button[type=submit]");
    };
    sign_in("dana");
    let t = Instant::now();
    while !b.text().contains("v1 (#1)") {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", b.text());
        std::thread::sleep(Duration::from_millis(300));
        b.go(&format!("{}/ui/environments", server.url));
    }
    let page = b.text();
    assert!(page.contains("Current version") && page.contains("v2") && page.contains("healthy"), "{page}");
    b.screenshot("environments");
    // The button asks first; accepted, the rollback happens and the page says so.
    b.click("button.danger");
    b.s("POST", "/alert/accept", None);
    let t = Instant::now();
    while !b.text().contains("Rolled back web → v1") {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", b.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served(&web).as_deref(), Some("v1"));
    b.screenshot("environments-rolled-back");
    // The environment's page: v2 deployed again from its history row, its rollout followed
    // live (a mark set in the page survives until the rollout has ended), then the charts,
    // and the diff of the two releases.
    b.go(&format!("{}/ui/projects/shop/environments/web", server.url));
    b.js("window.slipwayMark = 3; var f = document.querySelector('input[name=version][value=v2]').form; f.querySelector('button').click(); return 1");
    b.s("POST", "/alert/accept", None);
    let t = Instant::now();
    loop {
        let v = b.js("return [document.querySelector('ol.rollout') ? document.querySelector('ol.rollout').innerText : '', document.body.innerText]");
        let text = v[1].as_str().unwrap_or("");
        if text.contains("deploy of v2") && text.contains("done: healthy") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served(&web).as_deref(), Some("v2"));
    b.screenshot("environment");
    b.click("a[href$='/diff']");
    assert!(b.text().contains("Release diff") && b.text().contains("Artifacts"), "{}", b.text());
    b.screenshot("release-diff");
    b.go(&format!("{}/ui/", server.url));
    assert!(b.text().contains("shop (main)") && b.text().contains("failed"), "{}", b.text());
    b.screenshot("overview");
    // From the overview to the failed pipeline, its graph, and the failing job's log at the
    // failing line.
    b.click(&format!("a[href='/ui/pipelines/{run}']"));
    assert_eq!(b.count("svg.graph a"), 2, "{}", b.text());
    b.screenshot("pipeline-failed");
    b.click(&format!("svg.graph a[href='/ui/pipelines/{run}/jobs/1']"));
    b.click("a[href^='#L']");
    let at = b.s("GET", "/url", None).as_str().unwrap().to_string();
    assert!(at.contains("/jobs/1#L"), "{at}");
    let target = b.s("POST", "/execute/sync", Some(serde_json::json!({"script": "var t = document.querySelector(':target'); return [t.innerText, t.querySelector('.c31') !== null]", "args": []})));
    assert!(target[0].as_str().unwrap().contains("ERROR: the widget is broken") && target[1] == true, "{target}");
    b.screenshot("job-log");
    let (code, head, raw) = browse(
        &std::path::PathBuf::from("/dev/null"),
        "GET",
        &format!("{}/ui/pipelines/{run}/jobs/1/raw", server.url),
        &[],
    );
    assert_eq!(code, 303, "no session, no log: {head}{raw}");
    // A pipeline followed live until it passes: the job states change in the page it was
    // opened in (a mark set in the page survives), then the running job's log grows in place,
    // and when the job ends the page shows it ended.
    let second = server.trigger("shop", Some(r#"{"variables": [["PASS", "1"]]}"#));
    b.go(&format!("{}/ui/pipelines/{second}", server.url));
    assert_eq!(b.count("main[data-live-pipeline]"), 1, "{}", b.text());
    b.js("window.slipwayMark = 1; return 1");
    let t = Instant::now();
    loop {
        let v = b.js("return [window.slipwayMark === 1, document.querySelector('td span[data-job=\"0\"]').className, document.querySelector('td span[data-job=\"1\"]').className]");
        if v[1].as_str().unwrap().contains("success") {
            assert_eq!(v[0], true, "the page was reloaded instead of patched: {v}");
            assert!(!v[2].as_str().unwrap().contains("success"), "check ended before it was seen running: {v}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{v} {}", b.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    b.screenshot("pipeline-running");
    b.go(&format!("{}/ui/pipelines/{second}/jobs/1", server.url));
    b.js("window.slipwayMark = 2; return 1");
    let t = Instant::now();
    loop {
        let v = b.js("return [window.slipwayMark === 2, document.querySelector('pre.log').innerText]");
        if v[1].as_str().unwrap().contains("step 5") {
            assert_eq!(v[0], true, "the log was reloaded, not followed: {v}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    b.screenshot("job-log-live");
    let t = Instant::now();
    while b.count("h1 .status.success") == 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", b.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(b.text().contains("step 8"), "{}", b.text());
    b.go(&format!("{}/ui/pipelines/{second}", server.url));
    assert!(b.text().contains("success") && !b.text().contains("running"), "{}", b.text());
    b.screenshot("pipeline-passed");
    // Chinese, by the switch.
    b.go(&format!("{}/ui/", server.url));
    b.click("a[hreflang=zh]");
    assert!(b.text().contains("当前部署版本"), "{}", b.text());
    b.screenshot("overview-zh");
    // The other pages a deployer opens, each checked for keyboard and screen-reader faults.
    for (path, name) in [
        ("/ui/pipelines?lang=en", "pipelines"),
        (&*format!("/ui/pipelines/{run}/tests"), "tests"),
        ("/ui/alerts", "alerts"),
        ("/ui/admin/projects", "admin-projects"),
        ("/ui/admin/tokens", "admin-tokens"),
    ] {
        b.go(&format!("{}{path}", server.url));
        b.screenshot(name);
    }
    let errors = b.console_errors();
    assert!(errors.is_empty(), "{errors:?}");
    // A viewer reads the same table with no button.
    b.click("header form button");
    sign_in("vic");
    b.go(&format!("{}/ui/environments?lang=en", server.url));
    assert!(b.text().contains("v1"), "{}", b.text());
    assert_eq!(b.count("button.danger"), 0);
    b.screenshot("environments-viewer");
    let errors = b.console_errors();
    assert!(errors.is_empty(), "{errors:?}");
}
