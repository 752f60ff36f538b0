//! Deploys through a real agent: real Go builds of the websvc fixture (good and bad
//! versions), the agent's supervisor and proxy on loopback, the SQLite store, and the
//! load generator (slipway-testkit) sending steady traffic while releases change.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn build(version: &str) -> PathBuf {
    websvc_build(version)
}

/// A project (the websvc fixture with a pipeline file) and its own data directory.
struct Site {
    repo: Repo,
    data: tempfile::TempDir,
    agent: Option<Child>,
}

impl Site {
    fn new(environments: &str) -> Site {
        let repo = websvc_project(environments);
        let data = tempfile::Builder::new().prefix("slipway-data-").tempdir().unwrap();
        Site { repo, data, agent: None }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        deploy_cmd(self.repo.path(), self.data.path(), args)
    }

    fn sw(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().unwrap())
    }

    fn deploy(&self, env: &str, version: &str) -> Run {
        let dir = build(version);
        self.sw(&["deploy", env, "--artifacts", dir.to_str().unwrap()])
    }

    fn start_agent(&mut self) {
        let child = self.cmd(&["agent", "run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.agent = Some(child);
        let socket = self.data.path().join("agent.sock");
        let t = Instant::now();
        while !self.sw(&["agent", "status"]).stdout.starts_with("agent") {
            assert!(t.elapsed() < Duration::from_secs(10), "the agent did not start");
            assert!(socket.parent().unwrap().exists());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_agent(&mut self, signal: i32) {
        if let Some(mut c) = self.agent.take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
            c.wait().unwrap();
        }
    }

    /// slipway-testkit's load generator in the background against `addr` until `stop()`.
    fn load(&self, addr: &str, rate: u32) -> Load {
        let stop = self.data.path().join(format!("stop-load-{}", addr.replace([':', '.'], "-")));
        let _ = std::fs::remove_file(&stop);
        let mut load = slipway_testkit::load::Load::new(&format!("http://{addr}/"), rate, Duration::from_secs(60));
        load.stop_file = Some(stop.clone());
        let thread = std::thread::spawn(move || slipway_testkit::load::run(&load).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        Load { thread, stop }
    }

    fn status(&self) -> Vec<serde_json::Value> {
        let r = self.sw(&["status", "--json"]);
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.debug()));
        // 6 exactly when an environment needs attention (docs/cli.md).
        let attention = list.iter().any(|e| {
            ["interrupted", "degraded", "failed", "drift", "unmanaged", "unknown"]
                .contains(&e["status"].as_str().unwrap())
        });
        assert_eq!(r.code, if attention { 6 } else { 0 }, "{}", r.debug());
        list
    }

    fn history(&self, env: &str) -> Vec<serde_json::Value> {
        let r = self.sw(&["history", env, "--json"]);
        assert_eq!(r.code, 0, "{}", r.debug());
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// What the agent runs for `env`, asked directly (no command that could repair):
    /// (version, weight, instances) per group, and the containers or pids of its instances.
    fn agent_runs(&self, env: &str) -> Vec<(String, u64, usize)> {
        self.agent_env(env)["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let n = g["instances"].as_array().unwrap().len();
                (g["version"].as_str().unwrap().to_string(), g["weight"].as_u64().unwrap(), n)
            })
            .collect()
    }

    /// The agent's own status of `env`, from its socket (curl, no slipway command).
    fn agent_env(&self, env: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(self.data.path().join("agent.sock"))
            .arg(format!("http://agent/v1/envs/{env}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Processes running a binary of this site's artifact store.
    fn instances(&self) -> usize {
        let store = self.data.path().join("artifacts");
        let mut n = 0;
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(exe) = std::fs::read_link(e.path().join("exe"))
                && exe.starts_with(&store)
            {
                n += 1;
            }
        }
        n
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop_agent(libc::SIGTERM);
    }
}

struct Load {
    thread: std::thread::JoinHandle<serde_json::Value>,
    stop: PathBuf,
}

impl Load {
    fn stop(self) -> serde_json::Value {
        std::fs::write(&self.stop, "").unwrap();
        self.thread.join().unwrap()
    }
}

fn body(addr: &str) -> String {
    let r = http_get(addr, "/").unwrap_or_default();
    r.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string()
}

fn rolling(addr: &str, extra: &str) -> String {
    format!(
        "  web:\n    instances: 3\n    listen: {addr}\n    strategy: {{type: rolling, max_surge: 1, max_unavailable: 0}}\n    health: {{http: /healthz, interval: 200ms, deadline: 4s}}\n    drain_timeout: 5s\n{extra}"
    )
}

#[test]
fn rolling_update_under_load_loses_no_request_and_a_bad_release_rolls_back() {
    let addr = free_addr();
    let mut site = Site::new(&rolling(&addr, ""));
    site.start_agent();
    let r = site.deploy("web", "v1");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(body(&addr), "v1");

    let load = site.load(&addr, 300);
    let r = site.deploy("web", "v2");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("batch 4/4"), "three instances, surge 1: four batches\n{}", r.stderr);
    std::thread::sleep(Duration::from_millis(300));
    let l = load.stop();
    assert_eq!(l["failed"], 0, "requests failed during the rolling update: {l}");
    assert!(l["by_body"]["v1"].as_u64().unwrap() > 0 && l["by_body"]["v2"].as_u64().unwrap() > 0, "{l}");
    assert_eq!(body(&addr), "v2");
    assert_eq!(site.instances(), 3, "old instances are stopped");

    // A release that never passes its health check: rolled back, traffic never left v2.
    let load = site.load(&addr, 200);
    let r = site.deploy("web", "v3-unhealthy");
    let l = load.stop();
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(r.stderr.contains("was not healthy within 4s") && r.stderr.contains("GET /healthz: 503"), "{}", r.stderr);
    assert!(r.stderr.contains("rolled back to v2"), "{}", r.stderr);
    assert_eq!(l["failed"], 0, "{l}");
    assert_eq!(l["by_body"].as_object().unwrap().keys().collect::<Vec<_>>(), ["v2"], "{l}");
    // The agent runs v2 alone again, before any command that could repair it.
    assert_eq!(site.agent_runs("web"), [("v2".to_string(), 100, 3)]);
    assert_eq!(site.instances(), 3, "no v3 process is left");
    let h = site.history("web");
    let outcome: Vec<(&str, &str, &str)> = h
        .iter()
        .map(|r| (r["version"].as_str().unwrap(), r["reason"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcome,
        [
            ("v2", "auto-rollback", "healthy"),
            ("v3-unhealthy", "deploy", "failed"),
            ("v2", "deploy", "replaced"),
            ("v1", "deploy", "replaced"),
        ]
    );
    assert!(h[1]["detail"].as_str().unwrap().contains("503"), "{}", h[1]);
    assert_eq!(h[1]["actor"], "tester");
    assert_eq!(h[0]["artifacts"], h[2]["artifacts"], "the rollback runs v2's exact artifacts");

    let st = site.status();
    let web = st.iter().find(|e| e["environment"] == "web").unwrap();
    assert_eq!(web["version"], "v2");
    assert_eq!(web["status"], "rolled back");
    assert_eq!((web["healthy"].as_u64(), web["total"].as_u64()), (Some(3), Some(3)));
    assert_eq!(web["url"], format!("http://{addr}"));
    assert!(web["updated_at"].as_str().unwrap().ends_with('Z'));

    // A release that crashes at start is judged as soon as it keeps crashing.
    let t = Instant::now();
    let r = site.deploy("web", "v5-crash");
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(r.stderr.contains("keeps crashing") && r.stderr.contains("exited with 3"), "{}", r.stderr);
    // What the instance said last, and where the rest is.
    assert!(r.stderr.contains("its last output:") && r.stderr.contains("crashing on purpose"), "{}", r.stderr);
    assert!(r.stderr.contains("`slipway logs --env web`"), "{}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(4), "crash loops are caught before the deadline");
    assert_eq!(site.agent_runs("web"), [("v2".to_string(), 100, 3)]);
    assert_eq!(site.instances(), 3, "no crashing v5 process is left");

    // Rollback by hand goes to the release before the current one: v1.
    let r = site.sw(&["rollback", "web"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(body(&addr), "v1");
    let runs = site.agent_runs("web");
    assert!(runs.len() == 1 && runs[0].0 == "v1" && runs[0].1 > 0 && runs[0].2 == 3, "{runs:?}");
    assert_eq!(site.instances(), 3);
    assert_eq!(site.history("web")[0]["reason"], "rollback");
    // Deploying what already runs changes nothing.
    let r = site.deploy("web", "v1");
    assert!(r.stdout.contains("nothing to do"), "{}", r.debug());

    site.stop_agent(libc::SIGTERM);
    assert_eq!(site.instances(), 0, "stopping the agent stops every instance");
    assert!(http_get(&addr, "/").is_none(), "the entry point is closed");
}

#[test]
fn a_canary_that_answers_errors_is_stopped_by_analysis() {
    let addr = free_addr();
    let env = format!(
        "  web:\n    instances: 2\n    listen: {addr}\n    strategy:\n      type: canary\n      steps: [{{weight: 30, pause: 20s}}]\n      analysis: {{interval: 1s, max_error_rate: 5%, min_requests: 20}}\n    health: {{http: /healthz, interval: 200ms, deadline: 4s}}\n"
    );
    let mut site = Site::new(&env);
    site.start_agent();
    assert_eq!(site.deploy("web", "v1").code, 0);
    let load = site.load(&addr, 200);
    let t = Instant::now();
    let r = site.deploy("web", "v4-errors");
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let l = load.stop();
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(r.stderr.contains("canary analysis failed: error rate"), "{}", r.stderr);
    // Detected within two analysis intervals (plus start-up) of the deploy's start, as its
    // own clock says; the whole command also waits for the canary to be gone.
    let detected: f64 = r
        .stderr
        .lines()
        .find(|l| l.contains("canary analysis failed"))
        .and_then(|l| l.trim_start_matches('[').split('s').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stamped verdict: {}", r.stderr));
    assert!(detected < 4.0, "detected after {detected} s: {}", r.stderr);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let (failed, total) = (l["failed"].as_u64().unwrap(), l["requests"].as_u64().unwrap());
    assert!(failed > 0 && (failed as f64) < 0.3 * 0.34 * total as f64 + 5.0, "{l}");
    let window = l["last_failure_ms"].as_u64().unwrap() - l["first_failure_ms"].as_u64().unwrap();
    assert!(window <= 2_500, "failures lasted {window} ms: {l}");
    assert_eq!(body(&addr), "v1");
    assert_eq!(site.history("web")[0]["reason"], "auto-rollback");

    // A good canary goes through its steps to 100% (its latency is not what this checks: on a
    // loaded 2-core machine a fresh instance's p99 can be several times the stable one's).
    let env_short = env
        .replace("pause: 20s", "pause: 2s")
        .replace("min_requests: 20}", "min_requests: 20, max_latency_increase: 10000%}");
    site.repo.write(".slipway.yml", &format!("include:\n  - template: slipway/go.yml\nenvironments:\n{env_short}"));
    let load = site.load(&addr, 200);
    let r = site.deploy("web", "v2");
    let l = load.stop();
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("analysis: pass"), "{}", r.stderr);
    assert_eq!(l["failed"], 0, "{l}");
    assert_eq!(body(&addr), "v2");
    assert_eq!(site.instances(), 2);
}

/// The service's own metrics live in a Prometheus (Debian's, scraping an exporter on loopback
/// every 500 ms): a canary whose errors only Prometheus sees is stopped by the analysis' query,
/// and one whose query stays within bounds goes through.
#[test]
fn a_canary_is_judged_by_an_external_prometheus_too() {
    require("prometheus", "--version");
    use std::io::{Read, Write};
    // The application's metrics: errors for v4-errors' release only.
    let exporter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let exporter_addr = exporter.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in exporter.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = "# TYPE app_errors_total counter\napp_errors_total{version=\"v1\"} 0\napp_errors_total{version=\"v2\"} 0\napp_errors_total{version=\"v4-errors\"} 42\n";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join("prometheus.yml"),
        format!("global: {{scrape_interval: 500ms, evaluation_interval: 500ms}}\nscrape_configs:\n  - job_name: app\n    static_configs: [{{targets: ['{exporter_addr}']}}]\n"),
    )
    .unwrap();
    let prom_port = free_port();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", conf.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", conf.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let t = Instant::now();
    while !http_get(&prom_addr, "/api/v1/query?query=app_errors_total").is_some_and(|r| r.contains("v4-errors")) {
        assert!(t.elapsed() < Duration::from_secs(30), "Prometheus has no samples");
        std::thread::sleep(Duration::from_millis(100));
    }
    let addr = free_addr();
    let env = format!(
        "  web:\n    listen: {addr}\n    strategy:\n      type: canary\n      steps: [{{weight: 50, pause: 3s}}]\n      analysis:\n        interval: 1s\n        min_requests: 1000\n        on_inconclusive: pass\n        prometheus:\n          url: http://{prom_addr}\n          queries:\n            - query: 'max(app_errors_total{{version=\"$VERSION\"}})'\n              max: 0\n    health: {{http: /healthz, interval: 200ms, deadline: 4s}}\n"
    );
    let mut site = Site::new(&env);
    site.start_agent();
    assert_eq!(site.deploy("web", "v1").code, 0);
    // The proxy sees no errors (no traffic at all): only Prometheus can tell.
    let r = site.deploy("web", "v4-errors");
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(
        r.stderr.contains(
            "canary analysis failed: Prometheus: `max(app_errors_total{version=\"v4-errors\"})` is 42 (above 0)"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(site.history("web")[0]["reason"], "auto-rollback");
    assert_eq!(body(&addr), "v1");
    let r = site.deploy("web", "v2");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("analysis: pass") && r.stderr.contains("= 0"), "{}", r.stderr);
    assert_eq!(body(&addr), "v2");
    // A Prometheus that does not answer cannot judge (here `on_inconclusive: pass` lets it by).
    let _ = prom.kill();
    let _ = prom.wait();
    let r = site.deploy("web", "v1");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("does not answer"), "{}", r.stderr);
}

#[test]
fn blue_green_switches_at_once_and_back_instantly() {
    let (addr, preview) = (free_addr(), free_addr());
    let env = format!(
        "  web:\n    instances: 2\n    listen: {addr}\n    strategy: {{type: blue-green, preview: \"{preview}\", keep_old: 5m}}\n    health: {{http: /healthz, interval: 200ms, deadline: 4s}}\n"
    );
    let mut site = Site::new(&env);
    site.start_agent();
    assert_eq!(site.deploy("web", "v1").code, 0);
    let load = site.load(&addr, 300);
    let r = site.deploy("web", "v2");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(body(&addr), "v2");
    assert_eq!(body(&preview), "v2", "the preview entry point shows the new set");
    assert_eq!(site.instances(), 4, "the old set stays up for a switch back");
    let t = Instant::now();
    let r = site.sw(&["rollback", "web"]);
    let took = t.elapsed();
    let l = load.stop();
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("switching all traffic back at once"), "{}", r.stderr);
    assert!(took < Duration::from_secs(1), "switch back took {took:?}");
    assert_eq!(body(&addr), "v1");
    assert_eq!(l["failed"], 0, "{l}");
}

#[test]
fn bad_input_gets_a_clear_message_and_changes_nothing() {
    let addr = free_addr();
    let extra = format!(
        "  staging:\n    promote_from: web\n    listen: {}\n  prod:\n    listen: {}\n    protection: {{branches: [release/*]}}\n",
        free_addr(),
        free_addr()
    );
    let mut site = Site::new(&rolling(&addr, &extra));

    // No agent yet.
    let r = site.deploy("web", "v1");
    assert_eq!(r.code, 3, "{}", r.debug());
    assert!(r.stderr.contains("no agent is running") && r.stderr.contains("slipway agent start"), "{}", r.stderr);
    site.start_agent();

    let r = site.sw(&["deploy", "wbe"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("unknown environment `wbe`") && r.stderr.contains("did you mean `web`?"), "{}", r.stderr);
    let r = site.sw(&["promote", "web", "staging"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("`web` has never been deployed"), "{}", r.stderr);
    let r = site.sw(&["rollback", "web"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    let r = site.sw(&["deploy", "web", "--artifacts", "/nonexistent/dist"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("do not exist"), "{}", r.stderr);
    let r = site.sw(&["deploy", "web", "--version", "v9"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("no artifacts of version `v9`"), "{}", r.stderr);
    // Regression: a version with a newline forged a `✓ … is healthy` line; names with `../`
    // read files outside the data directory.
    for bad in ["v9\n[   0.1s] ✓ prod v9 is healthy", "", &"9".repeat(5000)] {
        let r = site.sw(&["deploy", "web", "--artifacts", build("v1").to_str().unwrap(), "--version", bad]);
        assert_eq!(r.code, 2, "{}", r.debug());
        assert!(r.stderr.contains("is not valid") && !r.stderr.contains("\n[   0.1s]"), "{}", r.stderr);
    }
    let outside = site.data.path().join("secret.log");
    std::fs::write(&outside, "not yours").unwrap();
    let r = site.sw(&["logs", "--env", "../secret"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("may only use letters") && !r.stdout.contains("not yours"), "{}", r.debug());
    // The agent's API checks names too (a 400, and no file made for it).
    let sock = site.data.path().join("agent.sock");
    let api = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock.to_str().unwrap()])
        .arg("http://agent/v1/envs/..%2F..%2Fescaped/logs")
        .output()
        .expect("curl (scripts/setup installs it)");
    assert_eq!(String::from_utf8_lossy(&api.stdout), "400");
    assert!(!site.data.path().join("escaped.log").exists() && !site.data.path().join("agent/escaped.log").exists());

    // A binary changed after the build no longer matches the manifest.
    let tampered = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(build("v1")).unwrap().flatten().filter(|e| e.path().is_file()) {
        std::fs::copy(e.path(), tampered.path().join(e.file_name())).unwrap();
    }
    let bin = std::fs::read_dir(tampered.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().contains("_linux_"))
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(bin.path())
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))
        .unwrap();
    let r = site.sw(&["deploy", "web", "--artifacts", tampered.path().to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("does not match its checksum"), "{}", r.stderr);

    // Protected: only release/* branches may deploy to prod.
    let r = site.deploy("prod", "v1");
    assert_eq!(r.code, 5, "{}", r.debug());
    assert!(r.stderr.contains("only takes deploys from `release/*`") && r.stderr.contains("`main`"), "{}", r.stderr);

    // The entry point's port is taken: refused before anything starts.
    let taken = std::net::TcpListener::bind(&addr).unwrap();
    let r = site.deploy("web", "v1");
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains(&format!("address {addr} is already in use")), "{}", r.stderr);
    drop(taken);
    assert_eq!(site.instances(), 0);
    let st = site.status();
    assert!(st.iter().all(|e| e["status"] == "not deployed"), "{st:?}");
    let h = site.history("web");
    assert!(h.iter().all(|r| r["status"] == "failed"), "every attempt is recorded as failed: {h:?}");

    // Now it works, and promotion copies the exact artifacts.
    assert_eq!(site.deploy("web", "v1").code, 0);
    let r = site.sw(&["promote", "web", "staging"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let (w, s) = (&site.history("web")[0], &site.history("staging")[0]);
    assert_eq!(s["reason"], "promote");
    assert_eq!(w["artifacts"], s["artifacts"]);
    let r = site.sw(&["history", "nowhere"]);
    assert_eq!(r.code, 2, "{}", r.debug());
}

#[test]
fn a_protected_environment_waits_for_an_approval() {
    let addr = free_addr();
    let env = format!(
        "  prod:\n    listen: {addr}\n    protection: {{approvals: 1, approvers: [alice]}}\n    health: {{http: /healthz, interval: 200ms}}\n"
    );
    let mut site = Site::new(&env);
    site.start_agent();
    let dir = build("v1");
    // An approval that never comes fails the release before it starts: nothing was rolled
    // back, and the ended release cannot be approved after the fact.
    let r = site.sw(&["deploy", "prod", "--artifacts", dir.to_str().unwrap(), "--wait", "600ms"]);
    assert_eq!(r.code, 5, "{}", r.debug());
    assert!(r.stderr.contains("approve the new release while it waits"), "{}", r.stderr);
    let prod = site.status().into_iter().find(|e| e["environment"] == "prod").unwrap();
    assert_eq!(prod["status"], "not deployed", "{prod}");
    let r = site.sw(&["approve", "prod", "1", "--as", "alice"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("release #1") && r.stderr.contains("is failed"), "{}", r.stderr);
    let h = site.history("prod");
    assert_eq!((h.len(), h[0]["status"].as_str()), (1, Some("failed")), "{h:?}");
    assert!(!h[0].to_string().contains("alice"), "no approval was recorded: {h:?}");
    let waiting = site
        .cmd(&["deploy", "prod", "--artifacts", dir.to_str().unwrap(), "--wait", "20s"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while site.history("prod").len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(http_get(&addr, "/").is_none(), "nothing runs before the approval");
    // Status says what is pending and on whom.
    let prod = site.status().into_iter().find(|e| e["environment"] == "prod").unwrap();
    assert_eq!(prod["status"], "waiting", "{prod}");
    let detail = prod["detail"].as_str().unwrap();
    assert!(
        detail.contains("release #2") && detail.contains("from alice") && detail.contains("slipway approve prod 2"),
        "{detail}"
    );
    let r = site.sw(&["approve", "prod", "--as", "mallory"]);
    assert_eq!(r.code, 5, "{}", r.debug());
    assert!(r.stderr.contains("`mallory` may not approve"), "{}", r.stderr);
    let r = site.sw(&["approve", "prod", "--as", "alice"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(body(&addr), "v1");
    // Each recorded step says which release it belongs to.
    let h = site.sw(&["history", "prod", "--steps"]);
    let steps: Vec<&str> = h.stdout.lines().filter(|l| l.contains(" step ")).collect();
    assert!(!steps.is_empty() && steps.iter().all(|l| l.trim_start().starts_with("#2 step ")), "{}", h.stdout);
}

#[test]
fn a_deploy_killed_half_way_is_reported_by_status_and_repaired_on_its_record() {
    let addr = free_addr();
    let mut site = Site::new(&rolling(&addr, "").replace("deadline: 4s", "deadline: 60s"));
    site.start_agent();
    assert_eq!(site.deploy("web", "v1").code, 0);
    let dir = build("v3-unhealthy");
    let mut deploying =
        site.cmd(&["deploy", "web", "--artifacts", dir.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while site.history("web")[0]["status"] != "deploying" {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    deploying.kill().unwrap();
    deploying.wait().unwrap();
    assert_eq!(site.history("web")[0]["status"], "deploying", "the record still says deploying");
    std::thread::sleep(Duration::from_millis(2_200)); // the lock's lease (SLIPWAY_LOCK_LEASE=2s)
    // `status` reads; it changes nothing, not even a deploy that died mid-way.
    let st = site.status();
    let web = st.iter().find(|e| e["environment"] == "web").unwrap();
    assert_eq!(web["status"], "interrupted", "{st:?}");
    assert!(web["detail"].as_str().unwrap().contains("slipway repair web"), "{st:?}");
    assert_eq!(site.history("web")[0]["status"], "deploying", "status repaired nothing");
    assert!(site.sw(&["agent", "status"]).stdout.contains("v3-unhealthy"), "status stopped nothing");
    // `slipway repair` acts on the record of the interrupted release.
    let r = site.sw(&["repair", "web"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("interrupted"), "{}", r.debug());
    let st = site.status();
    let web = st.iter().find(|e| e["environment"] == "web").unwrap();
    assert_eq!((web["version"].as_str(), web["healthy"].as_u64()), (Some("v1"), Some(3)), "{st:?}");
    let h = site.history("web");
    assert_eq!(h[0]["status"], "failed");
    assert!(h[0]["detail"].as_str().unwrap().contains("interrupted"), "{}", h[0]);
    let t = Instant::now();
    loop {
        let agent = site.sw(&["agent", "status"]);
        if !agent.stdout.contains("v3-unhealthy") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "the agent still runs v3: {}", agent.stdout);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(site.instances(), 3);
}

#[test]
fn a_restarted_agent_brings_environments_back_and_leaves_no_orphans() {
    let addr = free_addr();
    let mut site = Site::new(&rolling(&addr, ""));
    site.start_agent();
    assert_eq!(site.deploy("web", "v1").code, 0);
    site.stop_agent(libc::SIGTERM);
    assert_eq!(site.instances(), 0);
    site.start_agent();
    assert_eq!(wait_body(&addr, "v1"), "v1", "restored from the agent's own state");
    assert_eq!(site.instances(), 3);

    // Killed outright, the agent leaves its instances; the next one stops them first.
    site.stop_agent(libc::SIGKILL);
    assert_eq!(site.instances(), 3);
    site.start_agent();
    assert_eq!(wait_body(&addr, "v1"), "v1");
    let t = Instant::now();
    while site.instances() != 3 {
        assert!(t.elapsed() < Duration::from_secs(5), "{} instances", site.instances());
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = site.sw(&["logs", "--env", "web", "-n", "500"]);
    assert!(logs.stdout.contains("websvc v1 listening"), "{}", logs.debug());
}

fn wait_body(addr: &str, want: &str) -> String {
    let t = Instant::now();
    loop {
        let b = body(addr);
        if b == want || t.elapsed() > Duration::from_secs(10) {
            return b;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_proxy_passes_upgrades_and_http2_and_exports_metrics() {
    let addr = free_addr();
    let metrics = free_addr();
    let mut site = Site::new(&rolling(&addr, ""));
    let child = site
        .cmd(&["agent", "run", "--metrics-listen", &metrics])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    site.agent = Some(child);
    wait_http(&metrics, "/metrics").expect("metrics answer");
    assert_eq!(site.deploy("web", "v1").code, 0);

    // An Upgrade handshake, then raw bytes both ways.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping through the proxy").unwrap();
    let mut got = Vec::new();
    while got.len() < 22 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"ping through the proxy");

    // HTTP/2 with prior knowledge (h2c). A curl that fails fails the test: a broken h2c
    // makes curl exit 16 or 18, and that must not pass as "not checked".
    require("curl", "--version");
    let out = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", &format!("http://{addr}/"), "-w", " %{http_version}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl over h2c: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>(), ["v1", "2"]);

    for _ in 0..10 {
        body(&addr);
    }
    let text = http_get(&metrics, "/metrics").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("slipway_proxy_requests_total{environment=\"web\",version=\"v1\""))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.rsplit(' ').next().unwrap().parse::<u64>().unwrap() >= 10, "{line}");
    assert!(
        text.contains("slipway_instances{environment=\"web\",version=\"v1\",release=\"1\",state=\"healthy\"} 3"),
        "{text}"
    );
    assert!(text.contains("slipway_proxy_request_duration_seconds_bucket"));
    // Prometheus' own linter accepts the exposition.
    require("promtool", "--version");
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exposition = text.split("\r\n\r\n").nth(1).unwrap().to_string();
    lint.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deploys_queue_per_environment_and_the_newest_queued_one_wins() {
    let addr = free_addr();
    let mut site = Site::new(&rolling(&addr, "").replace("deadline: 4s", "deadline: 60s"));
    site.start_agent();
    assert_eq!(site.deploy("web", "v1").code, 0);
    // A deploy that holds the lock (its release never gets healthy; deadline 60 s).
    let slow = build("v3-unhealthy");
    let mut holder =
        site.cmd(&["deploy", "web", "--artifacts", slow.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
    let wait_for = |status: &str, n: usize| {
        let t = Instant::now();
        while site.history("web").iter().filter(|r| r["status"] == status).count() < n {
            assert!(t.elapsed() < Duration::from_secs(15), "no {n} `{status}` releases: {:?}", site.history("web"));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("deploying", 1);
    let (v1, v2) = (build("v1"), build("v2"));
    let older = site
        .cmd(&["deploy", "web", "--force", "--artifacts", v1.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("queued", 1);
    let newer =
        site.cmd(&["deploy", "web", "--artifacts", v2.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    let older = older.wait_with_output().unwrap();
    assert_eq!(older.status.code(), Some(4), "{}", String::from_utf8_lossy(&older.stderr));
    assert!(
        String::from_utf8_lossy(&older.stderr).contains("superseded by"),
        "{}",
        String::from_utf8_lossy(&older.stderr)
    );
    // The lock holder dies; once its lease runs out the queued deploy repairs and proceeds.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let newer = newer.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&newer.stderr);
    assert!(newer.status.success(), "{err}");
    assert!(err.contains("recovered the lock") && err.contains("interrupted"), "{err}");
    assert_eq!(body(&addr), "v2");
    let outcomes: Vec<String> = site
        .history("web")
        .iter()
        .map(|r| format!("{} {}", r["version"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(outcomes, ["v2 healthy", "v1 superseded", "v3-unhealthy failed", "v1 replaced"]);
}

#[test]
fn a_manual_canary_pause_waits_for_approve() {
    let addr = free_addr();
    let env = format!(
        "  web:\n    instances: 2\n    listen: {addr}\n    strategy:\n      type: canary\n      steps: [{{weight: 50, pause: manual}}]\n      analysis: {{interval: 500ms}}\n    health: {{http: /healthz, interval: 200ms}}\n"
    );
    let mut site = Site::new(&env);
    site.start_agent();
    assert_eq!(site.deploy("web", "v1").code, 0);
    let v2 = build("v2");
    let canary =
        site.cmd(&["deploy", "web", "--artifacts", v2.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "both versions answer at 50%: {seen:?}");
        seen.insert(body(&addr));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(site.history("web")[0]["status"], "deploying", "held until approved");
    let r = site.sw(&["approve", "web"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let out = canary.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("canary: approved"));
    assert_eq!(body(&addr), "v2");
}

#[test]
fn a_canary_that_turns_unhealthy_loses_its_traffic_within_seconds() {
    let addr = free_addr();
    let env = format!(
        "  web:\n    instances: 2\n    listen: {addr}\n    strategy:\n      type: canary\n      steps: [{{weight: 50, pause: 30s}}]\n      analysis: {{interval: 10s}}\n    health: {{http: /healthz, interval: 200ms, failures: 2, deadline: 4s}}\n"
    );
    let mut site = Site::new(&env);
    site.start_agent();
    assert_eq!(site.deploy("web", "v1").code, 0);
    let load = site.load(&addr, 200);
    let r = site.deploy("web", "v6-degrade");
    std::thread::sleep(Duration::from_millis(300));
    let l = load.stop();
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(r.stderr.contains("canary v6-degrade became unhealthy") && r.stderr.contains("503"), "{}", r.stderr);
    // From the first failed request (the release turned bad) to the last (traffic back on v1).
    let window = l["last_failure_ms"].as_u64().unwrap() - l["first_failure_ms"].as_u64().unwrap();
    assert!(window < 5_000, "failures for {window} ms: {l}");
    assert_eq!(body(&addr), "v1");
}

/// An image archive of a websvc build (`slipway image build --tarball`), next to the build.
fn image(version: &str) -> PathBuf {
    let dir = build(version);
    let tar = dir.join("image.tar");
    if !tar.exists() {
        let r = slipway_in(
            &dir,
            &[
                "image",
                "build",
                "--from",
                "manifest.json",
                "--name",
                "websvc",
                "--tag",
                version,
                "--tarball",
                "image.tar.part",
                "--compression",
                "none",
                "--no-sbom",
            ],
        );
        assert_eq!(r.code, 0, "{}", r.debug());
        std::fs::rename(dir.join("image.tar.part"), &tar).unwrap();
    }
    tar
}

fn docker_out(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn containers_roll_under_load_roll_back_without_a_load_and_report_drift() {
    require("docker", "--version");
    let addr = free_addr();
    let env = format!(
        "  web:\n    target: docker\n    docker: {{memory: 64MiB, cpus: 0.5, keep_images: 2}}\n    instances: 2\n    listen: {addr}\n    strategy: {{type: rolling, max_surge: 1, max_unavailable: 0}}\n    health: {{http: /healthz, interval: 200ms, deadline: 5s}}\n"
    );
    let mut site = Site::new(&env);
    site.start_agent();
    let deploy = |v: &str| site.sw(&["deploy", "web", "--artifacts", image(v).to_str().unwrap()]);
    let r = deploy("v1");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(body(&addr), "v1");
    let label = "label=dev.slipway.environment=web".to_string();
    let ids = docker_out(&["ps", "-q", "--filter", &label]);
    assert_eq!(ids.lines().count(), 2, "{ids}");
    let first = ids.lines().next().unwrap();
    let inspect = docker_out(&[
        "inspect",
        "-f",
        "{{.HostConfig.NetworkMode}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{index .Config.Labels \"dev.slipway.version\"}} {{.HostConfig.RestartPolicy.Name}}",
        first,
    ]);
    assert_eq!(inspect, format!("host {} 500000000 v1 no", 64 * 1024 * 1024));

    let load = site.load(&addr, 300);
    let r = deploy("v2");
    let l = load.stop();
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(l["failed"], 0, "{l}");
    assert!(l["by_body"]["v1"].as_u64().unwrap() > 0 && l["by_body"]["v2"].as_u64().unwrap() > 0, "{l}");
    // The old containers are gone (running or not) and two new ones serve; a new one that
    // crashed under the load is restarted by the agent, which its log then says.
    let web_log = || std::fs::read_to_string(site.data.path().join("agent/logs/web.log")).unwrap_or_default();
    let v1_left = docker_out(&["ps", "-aq", "--filter", "label=dev.slipway.version=v1", "--filter", &label]);
    assert_eq!(v1_left.lines().count(), 0, "old containers are gone: {v1_left}\n{}", web_log());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while docker_out(&["ps", "-q", "--filter", &label]).lines().count() != 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        docker_out(&["ps", "-q", "--filter", &label]).lines().count(),
        2,
        "{}\n{}",
        docker_out(&["ps", "-a", "--filter", &label, "--format", "{{.Names}} {{.Status}}"]),
        web_log()
    );

    let r = deploy("v3-unhealthy");
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(r.stderr.contains("GET /healthz: 503") && r.stderr.contains("rolled back to v2"), "{}", r.stderr);
    assert_eq!(body(&addr), "v2");
    // What the agent and the Docker Engine run, before any command that could repair it.
    let containers_of = |version: &str| {
        docker_out(&["ps", "-q", "--filter", &format!("label=dev.slipway.version={version}")]).lines().count()
    };
    assert_eq!(site.agent_runs("web").iter().map(|(v, w, _)| (v.as_str(), *w)).collect::<Vec<_>>(), [("v2", 100)]);
    assert_eq!(containers_of("v3-unhealthy"), 0, "no v3 container is left");

    // A container that exits at once is caught as a crash loop; v2 keeps serving.
    let r = deploy("v5-crash");
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(r.stderr.contains("keeps crashing") && r.stderr.contains("exited with 3"), "{}", r.stderr);
    assert_eq!(body(&addr), "v2");
    assert_eq!(site.agent_runs("web").iter().map(|(v, w, _)| (v.as_str(), *w)).collect::<Vec<_>>(), [("v2", 100)]);
    assert_eq!(containers_of("v5-crash"), 0, "no v5 container is left");
    // An archive that is not there, and a Docker Engine that does not answer.
    let r = site.sw(&["deploy", "web", "--artifacts", "/nonexistent/image.tar"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(
        r.stderr.contains("/nonexistent/image.tar") && r.stderr.contains("slipway image build --tarball"),
        "{}",
        r.stderr
    );
    let down = Run::from(
        site.cmd(&["deploy", "web", "--artifacts", image("v1").to_str().unwrap()])
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap(),
    );
    assert_eq!(down.code, 1, "{}", down.debug());
    assert!(down.stderr.contains("Docker Engine") && down.stderr.contains("dockerd"), "{}", down.stderr);
    assert_eq!(body(&addr), "v2", "nothing changed");

    // Rolling back uses the image still loaded: nothing to load or pull.
    let r = site.sw(&["rollback", "web"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(!r.stderr.contains("loaded image"), "{}", r.stderr);
    assert_eq!(body(&addr), "v1");

    // A container with the environment's label that the release does not account for.
    let stray = format!("slipway-test-stray-{}", std::process::id());
    let v1_image = docker_out(&[
        "inspect",
        "-f",
        "{{.Image}}",
        docker_out(&["ps", "-q", "--filter", &label]).lines().next().unwrap(),
    ]);
    docker_out(&[
        "run",
        "-d",
        "--name",
        &stray,
        "--network",
        "host",
        "-e",
        &format!("PORT={}", free_addr().rsplit(':').next().unwrap()),
        "--label",
        "dev.slipway.environment=web",
        &v1_image,
    ]);
    let st = site.status();
    let web = st.iter().find(|e| e["environment"] == "web").unwrap();
    assert_eq!(web["status"], "drift", "{st:?}");
    let _ = Command::new("docker").args(["rm", "-f", &stray]).output();

    // From a registry that wants a password: pushed by `slipway image build --push`, deployed
    // by reference, recorded (and re-pulled when needed) by digest.
    require("docker-registry", "--version");
    let reg_dir = tempfile::tempdir().unwrap();
    let reg = free_addr();
    let config = reg_dir.path().join("config.yml");
    let users = Command::new("htpasswd").args(["-Bbn", "deployer", "s3cret-pass"]).output();
    let users = users
        .ok()
        .filter(|o| o.status.success())
        .expect("`htpasswd` is needed: run `scripts/setup` (Debian's apache2-utils)");
    std::fs::write(reg_dir.path().join("htpasswd"), &users.stdout).unwrap();
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {reg}\nauth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            reg_dir.path().join("data").display(),
            reg_dir.path().join("htpasswd").display()
        ),
    )
    .unwrap();
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_http(&reg, "/v2/").expect("the registry answers");
    let work = tempfile::tempdir().unwrap();
    let manifest = build("v2").join("manifest.json");
    let reference = format!("{reg}/websvc:v2");
    let with_password = |args: &[&str], dir: &std::path::Path| {
        let mut c = deploy_cmd(dir, site.data.path(), args);
        c.env("SLIPWAY_REGISTRY_USER", "deployer").env("SLIPWAY_REGISTRY_PASSWORD", "s3cret-pass");
        Run::from(c.output().unwrap())
    };
    let r = with_password(
        &[
            "image",
            "build",
            "--from",
            manifest.to_str().unwrap(),
            "--name",
            "websvc",
            "--tag",
            "v2",
            "--push",
            &reference,
            "--no-sbom",
        ],
        work.path(),
    );
    assert_eq!(r.code, 0, "{}", r.debug());
    let r = site.sw(&["deploy", "web", "--image", &reference, "--force"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(
        r.stderr.contains(&format!("pulling {reference}")) && r.stderr.contains("--password-stdin"),
        "{}",
        r.stderr
    );
    let r = with_password(&["deploy", "web", "--image", &reference, "--force"], site.repo.path());
    let _ = registry.kill();
    let _ = registry.wait();
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(!site.sw(&["history", "web", "--json"]).stdout.contains("s3cret-pass"), "the password is never recorded");
    assert_eq!(body(&addr), "v2");
    let h = site.history("web");
    let pinned = h[0]["artifacts"][0]["name"].as_str().unwrap();
    assert!(pinned.starts_with(&format!("{reg}/websvc@sha256:")), "{pinned}");
    let r = site.sw(&["rollback", "web"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(body(&addr), "v1");

    // keep_images: 2 — the failed releases' images and archives are gone, v1's and v2's stay.
    let h = site.history("web");
    let image_of =
        |v: &str| h.iter().find(|r| r["version"] == v).unwrap()["artifacts"][0]["sha256"].as_str().unwrap().to_string();
    let stored = |id: &str| site.data.path().join("artifacts/images").join(format!("{id}.tar")).exists();
    assert!(!stored(&image_of("v3-unhealthy")) && !stored(&image_of("v5-crash")), "{h:?}");
    assert!(stored(&image_of("v1")));
    assert!(
        docker_out(&["image", "inspect", "-f", "{{.Id}}", &format!("sha256:{}", image_of("v3-unhealthy"))]).is_empty()
    );

    // A killed agent leaves its containers; the next one removes them and starts afresh.
    site.stop_agent(libc::SIGKILL);
    assert_eq!(docker_out(&["ps", "-q", "--filter", &label]).lines().count(), 2);
    site.start_agent();
    let t = Instant::now();
    while body(&addr) != "v1" || docker_out(&["ps", "-q", "--filter", &label]).lines().count() != 2 {
        assert!(t.elapsed() < Duration::from_secs(15), "{}", docker_out(&["ps", "-a", "--filter", &label]));
        std::thread::sleep(Duration::from_millis(100));
    }
    site.stop_agent(libc::SIGTERM);
    assert_eq!(docker_out(&["ps", "-aq", "--filter", &label]), "", "stopping the agent removes its containers");
}

/// Reads one answer with a deadline on every step (connect, write, read).
fn get_within(addr: &str, limit: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let sa: std::net::SocketAddr = addr.parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&sa, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A metric's value from the agent's exposition.
fn metric(metrics: &str, line_start: &str) -> u64 {
    let text = http_get(metrics, "/metrics").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{line_start}` in {text}"))
}

#[test]
fn idle_and_half_sent_connections_cannot_take_the_agent_down() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let addr = free_addr();
    let metrics = free_addr();
    let env = format!(
        "  web:\n    instances: 2\n    listen: {addr}\n    health: {{http: /healthz, interval: 200ms, deadline: 4s}}\n    proxy: {{header_timeout: 1s, idle_timeout: 3s}}\n"
    );
    let mut site = Site::new(&env);
    // The agent gets 1,024 open files (a shell's usual limit), so the flood below, 4,000
    // connections, is more than it could hold.
    let mut cmd = site.cmd(&["agent", "run", "--metrics-listen", &metrics]);
    // SAFETY: setrlimit in the child before exec; no allocation.
    unsafe {
        cmd.pre_exec(|| {
            let l = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let agent = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let agent_pid = agent.id();
    site.agent = Some(agent);
    wait_http(&metrics, "/metrics").expect("metrics answer");
    assert_eq!(site.deploy("web", "v1").code, 0);
    // This test holds thousands of sockets: its own soft limit up to the hard one.
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    assert!(l.rlim_cur >= 8192, "the test needs 8,192 open files, has {}", l.rlim_cur);

    // Slowloris first, alone: 50 requests whose headers come one byte every 200 ms and never end.
    let loris = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut socks: Vec<(std::net::TcpStream, Option<Duration>)> = (0..50)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(&addr).unwrap();
                    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
                    s.set_nonblocking(true).unwrap();
                    (s, None)
                })
                .collect();
            while started.elapsed() < Duration::from_secs(5) && socks.iter().any(|(_, c)| c.is_none()) {
                for (s, closed) in socks.iter_mut().filter(|(_, c)| c.is_none()) {
                    let mut b = [0u8; 512];
                    let gone = match s.read(&mut b) {
                        Ok(_) => true,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    } || s.write_all(b"a").is_err();
                    if gone {
                        *closed = Some(started.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            socks.iter().map(|(_, c)| *c).collect::<Vec<_>>()
        })
    };

    let loris = loris.join().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    // Idle flood: two processes' worth of connections that never send a byte, 2,000 each,
    // the oldest replaced as the flood goes on.
    let flood: Vec<_> = (0..2)
        .map(|_| {
            let (stop, opened, addr) = (Arc::clone(&stop), Arc::clone(&opened), addr.clone());
            std::thread::spawn(move || {
                let sa: std::net::SocketAddr = addr.parse().unwrap();
                let mut held = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    if held.len() >= 2000 {
                        held.drain(..100);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if let Ok(s) = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(1)) {
                        held.push_back(s);
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                held.len()
            })
        })
        .collect();
    // A normal client keeps asking, one connection per request, for 6 s.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let (mut answered, mut failed) = (0, 0);
    let mut control_ok = 0;
    while t.elapsed() < Duration::from_secs(6) {
        match get_within(&addr, Duration::from_secs(2)) {
            Some(r) if r.contains(" 200 OK\r\n") && r.ends_with("\r\n\r\nv1\n") => answered += 1,
            other => {
                failed += 1;
                eprintln!("failed: {other:?}");
            }
        }
        if answered % 50 == 1 {
            // The control socket and the probes keep working.
            let st = site.status();
            let web = st.iter().find(|e| e["environment"] == "web").unwrap();
            assert_eq!((web["status"].as_str(), web["healthy"].as_u64()), (Some("healthy"), Some(2)), "{web}");
            control_ok += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let open_during = metric(&metrics, "slipway_proxy_connections{environment=\"web\"");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{agent_pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let agent_fds = std::fs::read_dir(format!("/proc/{agent_pid}/fd")).unwrap().count();
    stop.store(true, Ordering::Relaxed);
    let held: usize = flood.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!(
        "flood: {} connections opened, {held} held at the end; the agent had {open_during} open, {agent_fds} fds, {} MiB RSS; {answered} answers served, {failed} failed; slowloris closed after {:?}",
        opened.load(Ordering::Relaxed),
        rss_kib / 1024,
        loris.iter().flatten().max()
    );
    assert_eq!(failed, 0, "every request of the normal client is answered ({answered} were)");
    assert!(answered > 100 && control_ok >= 2, "{answered} answers, {control_ok} status checks");
    assert!(held >= 3000 && opened.load(Ordering::Relaxed) >= 4000, "the flood held {held} connections");
    assert!(agent_fds < 1000 && open_during <= 384, "{agent_fds} fds, {open_during} client connections");
    assert!(rss_kib < 100 * 1024, "agent RSS {rss_kib} KiB");
    // Half-sent requests are cut at the header timeout (1 s), not the idle timeout (3 s) or minutes.
    assert!(loris.iter().all(|c| c.is_some_and(|d| d < Duration::from_millis(2500))), "{loris:?}");
    // The flood gone, what it held is released.
    let t = Instant::now();
    while metric(&metrics, "slipway_proxy_connections{environment=\"web\"") > 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "connections left open after the flood");
        std::thread::sleep(Duration::from_millis(100));
    }
    let evicted = metric(
        &metrics,
        &format!("slipway_proxy_connections_closed_total{{environment=\"web\",listen=\"{addr}\",reason=\"evicted\"}}"),
    );
    assert!(evicted > 1000, "the flood's idle connections made room for the client: {evicted} evicted");
}

/// A number from a `/proc/PID/status` line, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_output_cannot_grow_the_agent_or_its_log_directory() {
    use std::os::unix::fs::PermissionsExt;
    let addr = free_addr();
    let mut site = Site::new(&format!("  web:\n    listen: {addr}\n    health: {{http: /healthz, interval: 200ms}}\n"));
    site.start_agent();
    let agent_pid = site.agent.as_ref().unwrap().id();
    assert_eq!(site.deploy("web", "v1").code, 0);
    let logs = site.data.path().join("agent/logs");
    let before_kib = proc_kib(agent_pid, "VmRSS:");

    // One 400 MB line without a newline: its head is kept with a marker, the rest dropped.
    let t = Instant::now();
    let r = http_get(&addr, "/spew?bytes=400000000").unwrap();
    assert!(r.ends_with("spewed\n"), "{r}");
    let spew_line = Instant::now();
    let tail = loop {
        let r = site.sw(&["logs", "--env", "web", "-n", "5"]);
        if r.stdout.contains("line cut at 16 KiB") || spew_line.elapsed() > Duration::from_secs(10) {
            break r.stdout;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let cut = tail.lines().find(|l| l.contains("line cut at 16 KiB")).unwrap_or_else(|| panic!("no cut line: {tail}"));
    assert!(cut.len() < 16 * 1024 + 100 && cut.contains(&"x".repeat(16 * 1024)), "{} bytes", cut.len());
    let line_secs = t.elapsed().as_secs_f64();

    // Then 1 GiB of ordinary lines in one burst: back-pressure on the instance's pipe, the
    // directory rotated at its bound.
    let t = Instant::now();
    let r = http_get(&addr, "/spew?lines=1048576").unwrap();
    assert!(r.ends_with("spewed\n"), "{r}");
    let burst_secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let peak_kib = proc_kib(agent_pid, "VmHWM:");
    let after_kib = proc_kib(agent_pid, "VmRSS:");
    let mut dir_bytes = 0;
    for e in std::fs::read_dir(&logs).unwrap().flatten() {
        let m = e.metadata().unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{} is private", e.path().display());
        dir_bytes += m.len();
    }
    eprintln!(
        "log flood: agent RSS {} MiB before, peak {} MiB, {} MiB after; 400 MB line in {line_secs:.1} s, 1 GiB burst in {burst_secs:.1} s; log directory {} MiB",
        before_kib / 1024,
        peak_kib / 1024,
        after_kib / 1024,
        dir_bytes / (1024 * 1024)
    );
    assert!(peak_kib < 80 * 1024, "the agent peaked at {peak_kib} KiB");
    assert!(dir_bytes <= 4 * (10 * 1024 * 1024 + 64 * 1024), "the log directory holds {dir_bytes} bytes");
    assert_eq!(body(&addr), "v1", "the instance keeps serving");
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if ft.is_file()
            && let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(p);
        }
    }
    found
}

#[test]
fn what_an_environment_holds_is_private_and_secrets_are_kept_by_reference() {
    use std::os::unix::fs::PermissionsExt;
    let addr = free_addr();
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, "tok-from-a-file-4242\n").unwrap();
    let env = format!(
        "  web:\n    listen: {addr}\n    health: {{http: /healthz, interval: 200ms}}\n    service:\n      env:\n        GREETING: hello\n        DB_PASSWORD: {{value_from: \"env:WEBSVC_DB_PASSWORD\"}}\n        API_TOKEN: {{value_from: \"file:{}\"}}\n",
        token_file.display()
    );
    let mut site = Site::new(&env);
    // An old setup: the data directory and a file in it readable by everyone.
    let data = site.data.path().to_path_buf();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("notes.txt"), "x").unwrap();
    std::fs::set_permissions(data.join("notes.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = site.sw(&["status"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("was readable by other users") && r.stderr.contains("made private"), "{}", r.stderr);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&data), mode(&data.join("notes.txt"))), (0o700, 0o600));

    site.start_agent();
    let dir = build("v1");
    // Without the variable in its environment, the deploy refuses before changing anything.
    let r = site.sw(&["deploy", "web", "--artifacts", dir.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(
        r.stderr.contains("$WEBSVC_DB_PASSWORD") && r.stderr.contains("export WEBSVC_DB_PASSWORD="),
        "{}",
        r.stderr
    );
    assert!(http_get(&addr, "/").is_none(), "nothing was started");
    let secret = "db-pass-from-the-shell-7f3a";
    let out = site
        .cmd(&["deploy", "web", "--artifacts", dir.to_str().unwrap()])
        .env("WEBSVC_DB_PASSWORD", secret)
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, 0, "{}", r.debug());
    let value = |name: &str| {
        let r = http_get(&addr, &format!("/env?name={name}")).unwrap();
        r.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    };
    assert_eq!((value("DB_PASSWORD").as_str(), value("API_TOKEN").as_str()), (secret, "tok-from-a-file-4242"));
    assert_eq!(value("GREETING"), "hello");
    // By reference only: in no file of the data directory, in no output.
    let leaked = files_containing(&data, secret.as_bytes());
    assert!(leaked.is_empty(), "the secret is in {leaked:?}");
    assert!(files_containing(&data, b"tok-from-a-file-4242").is_empty());
    let h = site.sw(&["history", "web", "--json"]);
    assert!(h.code == 0 && !h.stdout.contains(secret), "{}", h.stdout);
    // The store, the agent's state and the logs are the owner's only.
    for f in ["slipway.db", "agent/state.json", "agent/logs/web.log", "agent.sock"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&data), 0o700);
    // Another user pointed at this data directory is told whose it is and what to do.
    require("setpriv", "--version");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .args(["agent", "status"])
        .current_dir("/")
        .env("SLIPWAY_DATA_DIR", &data)
        .env("NO_COLOR", "1")
        .env_remove("SLIPWAY_USER")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("belongs to root and this process runs as nobody"), "{err}");
    assert!(err.contains("run slipway as its owner") && err.contains("--data-dir"), "{err}");
}

#[test]
fn agent_start_brings_environments_back_from_the_store_when_the_agent_lost_its_state() {
    let addr = free_addr();
    let site = Site::new(&rolling(&addr, ""));
    /// Stops the background agent however the test ends.
    struct Stop<'a>(&'a Site);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.sw(&["agent", "stop"]);
        }
    }
    let _stop = Stop(&site);
    let r = site.sw(&["agent", "start"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(site.deploy("web", "v1").code, 0);
    assert_eq!(site.sw(&["agent", "stop"]).code, 0);
    // The agent's own record of what to run is lost (corrupt); the store still knows.
    let state = site.data.path().join("agent/state.json");
    std::fs::write(&state, "{ not json").unwrap();
    let r = site.sw(&["agent", "start"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(
        r.stdout.contains("restored `web` from the store: back on v1 (#1), 3 instance(s) healthy"),
        "{}",
        r.debug()
    );
    assert_eq!(body(&addr), "v1", "serving as soon as `agent start` returns");
    let st = site.status();
    let web = st.iter().find(|e| e["environment"] == "web").unwrap();
    assert_eq!((web["status"].as_str(), web["healthy"].as_u64()), (Some("healthy"), Some(3)), "{web}");
    // A second start changes nothing and says nothing about restoring.
    let r = site.sw(&["agent", "start"]);
    assert!(r.code == 0 && !r.stdout.contains("restored"), "{}", r.debug());
    // The agent's log, written to a file, has no colour codes.
    let log = std::fs::read(site.data.path().join("agent/agent.log")).unwrap();
    assert!(!log.contains(&0x1b), "ANSI escapes in agent.log");
    assert!(String::from_utf8_lossy(&log).contains("unreadable agent state"));
}

#[test]
fn a_release_that_turns_unhealthy_is_reported_since_when_and_its_instances_restarted() {
    let addr = free_addr();
    let env = format!(
        "  web:\n    instances: 2\n    listen: {addr}\n    health: {{http: /healthz, interval: 200ms, failures: 2, restart_after: 2s}}\n"
    );
    let mut site = Site::new(&env);
    site.start_agent();
    // Healthy at rollout; two seconds later every check and request fails.
    let r = site.deploy("web", "v1-degrade");
    assert_eq!(r.code, 0, "{}", r.debug());
    let t = Instant::now();
    let web = loop {
        let st = site.status();
        let web = st.into_iter().find(|e| e["environment"] == "web").unwrap();
        if web["status"] != "healthy" || t.elapsed() > Duration::from_secs(10) {
            break web;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Status says so, since when and why, and exits 6 (the helper checks the code).
    assert!(["degraded", "failed"].contains(&web["status"].as_str().unwrap()), "{web}");
    let detail = web["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("instance(s) failing since") && detail.contains("GET /healthz: 503"), "{detail}");
    let since = detail.split("failing since ").nth(1).unwrap().split(' ').next().unwrap();
    let since: jiff::Timestamp = since.parse().unwrap_or_else(|e| panic!("{e}: {detail}"));
    assert!(since.as_second() > jiff::Timestamp::now().as_second() - 30, "{detail}");
    let human = site.sw(&["status"]);
    assert_eq!(human.code, 6, "{}", human.debug());
    assert!(human.stderr.contains("failing since"), "{}", human.debug());

    // After `restart_after` (2 s) unhealthy, each instance is restarted, like a liveness probe.
    let t = Instant::now();
    let restarts = loop {
        let v = site.agent_env("web");
        let n: u64 =
            v["groups"][0]["instances"].as_array().unwrap().iter().map(|i| i["restarts"].as_u64().unwrap()).sum();
        if n >= 2 || t.elapsed() > Duration::from_secs(10) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(restarts >= 2, "both instances restarted ({restarts})");
    let log = site.sw(&["logs", "--env", "web", "-n", "200"]).stdout;
    assert!(log.contains("slipway: restarted: unhealthy for 2s (GET /healthz: 503"), "{log}");
    // Restarted after the crash back-off, not added: two processes again.
    let t = Instant::now();
    while site.instances() != 2 {
        assert!(t.elapsed() < Duration::from_secs(5), "{} instance processes", site.instances());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_full_disk_is_named_with_its_free_space_and_what_to_clean() {
    // A 1 MiB file system of its own (tmpfs in a private mount namespace, gone with it), filled.
    require("unshare", "--version");
    let site = Site::new(&rolling(&free_addr(), ""));
    let disk = tempfile::tempdir().unwrap();
    let script = r#"set -e
mount -t tmpfs -o size=1m,mode=0700 slipway-full "$D"
dd if=/dev/zero of="$D/fill" bs=4k 2>/dev/null || true
set +e
"$SLIPWAY" history web
echo "exit=$?"
"#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .current_dir(site.repo.path())
        .env("D", disk.path())
        .env("SLIPWAY", bin())
        .env("SLIPWAY_DATA_DIR", disk.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("exit=1"), "{stdout}\n{stderr}");
    for want in [
        "the store could not write to disk",
        "(tmpfs), which has 0 B free of 1.0 MiB",
        "Free space there",
        ".slipway/runs/",
    ] {
        assert!(stderr.contains(want), "missing `{want}`:\n{stderr}");
    }
    assert!(stderr.contains(&disk.path().display().to_string()), "names the file system: {stderr}");
}

#[test]
fn a_lost_store_is_reported_then_adopted_without_restarting_anything() {
    let addr = free_addr();
    let mut site = Site::new(&rolling(&addr, ""));
    site.start_agent();
    assert_eq!(site.deploy("web", "v1").code, 0);
    assert_eq!(site.deploy("web", "v2").code, 0);
    let pids = || -> Vec<u64> {
        let v = site.agent_env("web");
        let mut p: Vec<u64> =
            v["groups"][0]["instances"].as_array().unwrap().iter().map(|i| i["pid"].as_u64().unwrap()).collect();
        p.sort();
        p
    };
    let before = pids();
    // The store is lost.
    for f in ["slipway.db", "slipway.db-wal", "slipway.db-shm"] {
        let _ = std::fs::remove_file(site.data.path().join(f));
    }
    let st = site.status();
    let web = st.iter().find(|e| e["environment"] == "web").unwrap();
    assert_eq!(web["status"], "unmanaged", "{web}");
    assert!(web["detail"].as_str().unwrap().contains("`slipway adopt web`"), "{web}");
    assert_eq!(site.agent_runs("web"), [("v2".to_string(), 3, 3)], "status changed nothing");

    let r = site.sw(&["adopt", "web"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stdout.contains("adopted v2 as release #2, 3 instance(s)"), "{}", r.debug());
    assert_eq!(pids(), before, "nothing was restarted");
    let st = site.status();
    let web = st.iter().find(|e| e["environment"] == "web").unwrap();
    assert_eq!(
        (web["status"].as_str(), web["version"].as_str(), web["healthy"].as_u64()),
        (Some("healthy"), Some("v2"), Some(3)),
        "{web}"
    );
    let h = site.history("web");
    assert_eq!((h.len(), h[0]["release"].as_i64(), h[0]["reason"].as_str()), (1, Some(2), Some("adopt")), "{h:?}");
    // Nothing left to adopt; the next deploy follows on.
    let r = site.sw(&["adopt", "web"]);
    assert_eq!(r.code, 2, "{}", r.debug());
    assert!(r.stderr.contains("nothing to adopt"), "{}", r.stderr);
    let load = site.load(&addr, 200);
    let r = site.deploy("web", "v1");
    let l = load.stop();
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(l["failed"], 0, "{l}");
    assert_eq!(body(&addr), "v1");
    assert_eq!(site.history("web")[0]["release"], 3, "ids go on after the adopted one");
}

#[test]
fn an_environment_that_requires_signatures_deploys_only_signed_releases() {
    let keys = tempfile::tempdir().unwrap();
    let pem = signing_keypair(keys.path(), "release", 10);
    signing_keypair(keys.path(), "stranger", 10);
    let (dev, prod) = (free_addr(), free_addr());
    let envs = format!(
        "  dev:\n    listen: {dev}\n    health: {{http: /healthz, interval: 200ms}}\n  prod:\n    promote_from: dev\n    listen: {prod}\n    health: {{http: /healthz, interval: 200ms}}\n    require_signature:\n      keys:\n        - |\n{pem}"
    );
    let mut site = Site::new(&envs);
    site.start_agent();
    let key = keys.path().join("release.key");
    let p = keys.path();

    // Unsigned: refused before the agent is asked for anything, with its own exit code, and
    // recorded.
    let r = site.deploy("prod", "v1");
    assert_eq!(r.code, 7, "{}", r.debug());
    assert!(r.stderr.contains("`prod` requires signed releases") && r.stderr.contains("is not signed"), "{}", r.stderr);
    let status = site.status().into_iter().find(|e| e["environment"] == "prod").unwrap();
    assert_eq!(status["status"], "not deployed", "{status}");
    let h = site.history("prod");
    assert_eq!((h.len(), h[0]["status"].as_str()), (1, Some("failed")), "{h:?}");
    assert!(h[0].to_string().contains("requires signed releases"), "{h:?}");

    // Signed by a key the environment does not trust.
    let other = signed_websvc_build("v1", &p.join("stranger.key"), p);
    let r = site.sw(&["deploy", "prod", "--artifacts", other.to_str().unwrap()]);
    assert_eq!(r.code, 7, "{}", r.debug());
    assert!(
        r.stderr.contains("SHA256SUMS.sig does not verify with any trusted key (key 1 (ECDSA P-256"),
        "{}",
        r.stderr
    );

    // Signed, then tampered with: the version in manifest.json changed after signing.
    let tampered = signed_websvc_build("v2", &key, p);
    let m = tampered.join("manifest.json");
    std::fs::write(&m, std::fs::read_to_string(&m).unwrap().replace("\"v2\"", "\"v9\"")).unwrap();
    let r = site.sw(&["deploy", "prod", "--artifacts", tampered.to_str().unwrap()]);
    assert_eq!(r.code, 7, "{}", r.debug());
    assert!(r.stderr.contains("manifest.json.sig does not verify"), "{}", r.stderr);
    let status = site.status().into_iter().find(|e| e["environment"] == "prod").unwrap();
    assert_eq!(status["status"], "not deployed", "{status}");

    // Signed: deployed; so is the next one; a rollback to the first is checked and allowed.
    let v1 = signed_websvc_build("v1", &key, p);
    let r = site.sw(&["deploy", "prod", "--artifacts", v1.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(body(&prod), "v1");
    let v2 = signed_websvc_build("v2", &key, p);
    let r = site.sw(&["deploy", "prod", "--artifacts", v2.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let r = site.sw(&["rollback", "prod"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(body(&prod), "v1");

    // dev takes anything; promoting its unsigned release to prod is refused, prod unchanged.
    let r = site.deploy("dev", "v3");
    assert_eq!(r.code, 0, "{}", r.debug());
    let r = site.sw(&["promote", "dev", "prod"]);
    assert_eq!(r.code, 7, "{}", r.debug());
    assert!(r.stderr.contains("is not signed"), "{}", r.stderr);
    assert_eq!(body(&prod), "v1");
    site.stop_agent(libc::SIGTERM);
}

#[test]
fn a_signed_only_container_environment_pulls_nothing_unsigned() {
    require("docker", "--version");
    let reg = common::registry::Registry::start(None);
    let keys = tempfile::tempdir().unwrap();
    let pem = signing_keypair(keys.path(), "release", 10);
    let addr = free_addr();
    let env = format!(
        "  web:\n    target: docker\n    listen: {addr}\n    health: {{http: /healthz, interval: 200ms, deadline: 5s}}\n    require_signature:\n      keys:\n        - |\n{pem}"
    );
    let mut site = Site::new(&env);
    site.start_agent();
    let key = keys.path().join("release.key");
    let push = |version: &str, sign: bool| {
        let manifest = build(version).join("manifest.json");
        let reference = format!("{}/websvc-signed:{version}", reg.addr);
        let mut args =
            vec!["image", "build", "--from", manifest.to_str().unwrap(), "--name", "websvc", "--tag", version];
        args.extend(["--push", &reference, "--no-sbom", "--layout", "img"]);
        if sign {
            args.extend(["--sign", "--key", key.to_str().unwrap()]);
        }
        let r = slipway_signing(keys.path(), &args);
        assert_eq!(r.code, 0, "{}", r.debug());
        reference
    };
    let unsigned = push("v1", false);
    let r = site.sw(&["deploy", "web", "--image", &unsigned]);
    assert_eq!(r.code, 7, "{}", r.debug());
    assert!(r.stderr.contains("is not signed"), "{}", r.stderr);
    // Refused before the pull: Docker never got the image.
    assert!(docker_out(&["image", "ls", "-q", &unsigned]).is_empty(), "the unsigned image was pulled");
    let signed = push("v2", true);
    let r = site.sw(&["deploy", "web", "--image", &signed]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(body(&addr), "v2");
    let h = site.history("web");
    assert_eq!(h[0]["status"], "healthy", "{h:?}");
    assert_eq!(h[1]["status"], "failed", "the refusal is recorded: {h:?}");
    assert_eq!(h[1]["version"], "v1", "{h:?}");
    site.stop_agent(libc::SIGTERM);
}
