//! The `ssh` target against real hosts: Debian containers booted with systemd as PID 1 in the
//! local Docker Engine (`common::hosts`), each with its own sshd on a loopback port and a
//! temporary key pair; the service is the websvc fixture built by Go.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::hosts::{Hosts, docker};
use common::*;

fn build(version: &str) -> PathBuf {
    websvc_build(version)
}

struct Project {
    repo: Repo,
    data: tempfile::TempDir,
}

impl Project {
    fn new(environments: &str) -> Project {
        Project { repo: websvc_project(environments), data: tempfile::tempdir().unwrap() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        deploy_cmd(self.repo.path(), self.data.path(), args)
    }

    fn sw(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().unwrap())
    }

    fn deploy(&self, env: &str, version: &str) -> Run {
        self.sw(&["deploy", env, "--artifacts", build(version).to_str().unwrap()])
    }

    fn status(&self) -> serde_json::Value {
        let r = self.sw(&["status", "--json"]);
        let st = serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()[0].clone();
        // 6 exactly when the environment needs attention (docs/cli.md).
        let attention = ["interrupted", "degraded", "failed", "drift", "unmanaged", "unknown"]
            .contains(&st["status"].as_str().unwrap_or(""));
        assert_eq!(r.code, if attention { 6 } else { 0 }, "{}", r.debug());
        st
    }

    fn history(&self, env: &str) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.sw(&["history", env, "--json"]).stdout).unwrap()
    }
}

/// Runs `work` while polling every port every 10 ms; returns its result and the most ports
/// that did not answer v1 or v2 at the same moment.
fn most_down_during<T>(ports: &[u16], work: impl FnOnce() -> T) -> (T, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicUsize::new(0));
    let poller = {
        let (stop, worst, ports) = (Arc::clone(&stop), Arc::clone(&worst), ports.to_vec());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let down = ports.iter().filter(|p| !matches!(answer(**p).as_str(), "v1" | "v2")).count();
                worst.fetch_max(down, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let r = work();
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    (r, worst.load(Ordering::SeqCst))
}

fn answer(port: u16) -> String {
    http_get(&format!("127.0.0.1:{port}"), "/")
        .map(|r| r.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

#[test]
fn hosts_roll_in_batches_roll_back_and_report_drift() {
    let hosts = Hosts::start(2, &[]);
    let project = Project::new(&hosts.environment("prod", ""));
    let r = project.deploy("prod", "v1");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("uploaded, checksum verified"), "{}", r.stderr);
    for i in 0..2 {
        assert_eq!(answer(hosts.ports[i]), "v1");
        assert_eq!(hosts.exec(i, "systemctl is-active websvc"), "active");
        assert_eq!(
            hosts.exec(i, "systemctl show -p DynamicUser,NoNewPrivileges,ProtectSystem websvc"),
            "DynamicUser=yes\nProtectSystem=strict\nNoNewPrivileges=yes"
        );
        assert_eq!(hosts.exec(i, "systemd-analyze verify /etc/systemd/system/websvc.service 2>&1; echo $?"), "0");
        assert_eq!(hosts.exec(i, "stat -c %a /opt/slipway/websvc/current/env"), "600");
    }

    // v2 while every host is polled: at most max_unavailable (1) host out of service at once.
    let (r, worst) = most_down_during(&hosts.ports, || project.deploy("prod", "v2"));
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("batch 2/2"), "{}", r.stderr);
    assert!(worst <= 1, "{worst} hosts were out of service at once");
    assert_eq!((answer(hosts.ports[0]), answer(hosts.ports[1])), ("v2".into(), "v2".into()));

    // v3 fails its health check on the first host: that host goes back to v2, the second is never touched.
    let r = project.deploy("prod", "v3-unhealthy");
    assert_eq!(r.code, 1, "{}", r.debug());
    let host0 = format!("root@127.0.0.1:{}", hosts.ssh_ports[0]);
    assert!(r.stderr.contains(&format!("{host0} at `health check`")) && r.stderr.contains("503"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("{host0} back on v2")) && r.stderr.contains("1 host(s) never switched"),
        "{}",
        r.stderr
    );
    assert_eq!((answer(hosts.ports[0]), answer(hosts.ports[1])), ("v2".into(), "v2".into()));
    assert_eq!(project.history("prod")[0]["reason"], "auto-rollback");

    // Rollback by hand: a link switch and a restart; the binary is already there.
    let r = project.sw(&["rollback", "prod"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("already there") && !r.stderr.contains("uploaded"), "{}", r.stderr);
    assert_eq!((answer(hosts.ports[0]), answer(hosts.ports[1])), ("v1".into(), "v1".into()));

    // Drift: a host whose unit was stopped behind slipway's back.
    hosts.exec(1, "systemctl stop websvc");
    let st = project.status();
    assert_eq!(st["status"], "drift", "{st}");
    assert_eq!((st["healthy"].as_u64(), st["total"].as_u64()), (Some(1), Some(2)));
    assert_eq!(st["hosts"][1]["active"], "inactive");
    assert_eq!(st["hosts"][0]["matches"], true);
}

#[test]
fn host_failures_are_reported_and_change_nothing() {
    // The second host's release directory is a 1 MiB tmpfs: the upload cannot fit.
    let hosts = Hosts::start(2, &[]);
    let project = Project::new(&hosts.environment("prod", ""));
    assert_eq!(project.deploy("prod", "v1").code, 0);
    hosts.exec(
        1,
        "mount -t tmpfs -o size=1m tmpfs /opt/slipway/websvc/releases && mkdir -p /opt/slipway/websvc/releases/keep",
    );
    let r = project.deploy("prod", "v2");
    assert_eq!(r.code, 1, "{}", r.debug());
    let host1 = format!("root@127.0.0.1:{}", hosts.ssh_ports[1]);
    assert!(
        r.stderr.contains(&format!("{host1} at `upload`")) && r.stderr.contains("No space left on device"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("no host was changed"), "{}", r.stderr);
    assert_eq!((answer(hosts.ports[0]), answer(hosts.ports[1])), ("v1".into(), "v1".into()));
    hosts.exec(1, "umount /opt/slipway/websvc/releases");

    // Unknown host key: known_hosts is never bypassed.
    // systemctl fails on the first host (a drop-in whose ExecStartPre fails): the report says
    // so with systemctl's stderr, and also that the host could not be restored; the second host
    // was never touched.
    hosts.exec(0, "mkdir -p /etc/systemd/system/websvc.service.d && printf '[Service]\\nExecStartPre=/bin/false\\n' > /etc/systemd/system/websvc.service.d/broken.conf && systemctl daemon-reload");
    let r = project.deploy("prod", "v2");
    assert_eq!(r.code, 1, "{}", r.debug());
    let host0 = format!("root@127.0.0.1:{}", hosts.ssh_ports[0]);
    assert!(
        r.stderr.contains(&format!("{host0} at `restart`: exited with 1")) && r.stderr.contains("websvc.service"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("{host0} NOT restored")) && r.stderr.contains("1 host(s) never switched"),
        "{}",
        r.stderr
    );
    assert_eq!(answer(hosts.ports[1]), "v1");
    hosts.exec(0, "rm -r /etc/systemd/system/websvc.service.d && systemctl daemon-reload && systemctl restart websvc");
    let t = Instant::now();
    while answer(hosts.ports[0]) != "v1" {
        assert!(t.elapsed() < Duration::from_secs(10), "the first host did not come back on v1");
        std::thread::sleep(Duration::from_millis(50));
    }

    let known = std::fs::read_to_string(hosts.known_hosts()).unwrap();
    std::fs::write(hosts.known_hosts(), "").unwrap();
    let r = project.deploy("prod", "v2");
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(r.stderr.contains("host key") && r.stderr.contains("ssh-keyscan"), "{}", r.stderr);
    std::fs::write(hosts.known_hosts(), known).unwrap();

    // Authentication refused: another key.
    let other = tempfile::tempdir().unwrap();
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(other.path().join("id"))
        .status()
        .unwrap();
    let env = hosts
        .environment("prod", "")
        .replace(&hosts.key().display().to_string(), &other.path().join("id").display().to_string());
    let wrong = Project::new(&env);
    let r = wrong.deploy("prod", "v1");
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(r.stderr.contains("authentication refused"), "{}", r.stderr);

    // Unreachable: nothing listens on that port.
    let env = hosts.environment("prod", "").replace(&hosts.ssh_ports[0].to_string(), &free_port().to_string());
    let r = Project::new(&env).deploy("prod", "v1");
    assert_eq!(r.code, 1, "{}", r.debug());
    assert!(r.stderr.contains("host unreachable"), "{}", r.stderr);
}

#[test]
fn a_deploy_killed_between_hosts_is_reported_then_repaired() {
    let hosts = Hosts::start(2, &[]);
    let project = Project::new(&hosts.environment("prod", "").replace("deadline: 5s", "deadline: 30s"));
    assert_eq!(project.deploy("prod", "v1").code, 0);
    // v3 never gets healthy: the first host waits on its health check when the deploy is stopped.
    let start_v3 = || {
        let child = project
            .cmd(&["deploy", "prod", "--artifacts", build("v3-unhealthy").to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while hosts.exec(0, "readlink /opt/slipway/websvc/current").contains("v1") {
            assert!(t.elapsed() < Duration::from_secs(20), "the first host never switched");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    let mut deploying = start_v3();
    deploying.kill().unwrap();
    deploying.wait().unwrap();
    std::thread::sleep(Duration::from_millis(2_200)); // the lock's lease
    // Status reports the interrupted deploy and changes nothing; `repair` puts the hosts back.
    let st = project.status();
    assert_eq!((st["version"].as_str(), st["status"].as_str()), (Some("v1"), Some("interrupted")), "{st}");
    let r = project.sw(&["repair", "prod"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let st = project.status();
    assert_eq!((st["version"].as_str(), st["status"].as_str()), (Some("v1"), Some("rolled back")), "{st}");
    assert!(st["detail"].as_str().unwrap().contains("interrupted"), "{st}");
    assert_eq!((answer(hosts.ports[0]), answer(hosts.ports[1])), ("v1".into(), "v1".into()));
    let h = project.history("prod");
    assert_eq!(h[0]["status"], "failed");
    assert!(h[0]["detail"].as_str().unwrap().contains("interrupted"), "{}", h[0]);

    // Ctrl-C: the deploy stops where it is and puts every host back at once (exit 130).
    let deploying = start_v3();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(deploying.id() as i32, libc::SIGINT);
    }
    let out = deploying.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("was interrupted") && err.contains("back on v1"), "{err}");
    assert_eq!((answer(hosts.ports[0]), answer(hosts.ports[1])), ("v1".into(), "v1".into()));
    assert!(project.history("prod")[0]["detail"].as_str().unwrap().contains("interrupted"));
}

#[test]
fn an_agent_on_another_machine_is_driven_over_ssh() {
    let hosts = Hosts::start(1, &[]);
    let addr = format!("127.0.0.1:{}", hosts.ports[0]);
    let env = format!(
        "  far:\n    agent: {{ssh: \"ssh://root@127.0.0.1:{}\", identity: {}, known_hosts: {}, data_dir: /var/lib/slipway}}\n    instances: 2\n    listen: {addr}\n    strategy: {{type: canary, steps: [{{weight: 50, pause: 2s}}], analysis: {{interval: 1s, on_inconclusive: pass}}}}\n    health: {{http: /healthz, interval: 200ms, deadline: 8s}}\n",
        hosts.ssh_ports[0],
        hosts.key().display(),
        hosts.known_hosts().display()
    );
    let project = Project::new(&env);
    // No agent there yet: said so, with how to start it.
    let r = project.deploy("far", "v1");
    assert_eq!(r.code, 3, "{}", r.debug());
    assert!(r.stderr.contains("slipway agent start --data-dir /var/lib/slipway"), "{}", r.stderr);
    // The same slipway binary runs the agent on the other machine.
    docker(&["cp", bin().to_str().unwrap(), &format!("{}:/usr/local/bin/slipway", hosts.names[0])]);
    docker(&["exec", &hosts.names[0], "slipway", "--data-dir", "/var/lib/slipway", "agent", "start"]);
    let r = project.deploy("far", "v1");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("uploaded websvc (linux/amd64) to the agent on"), "{}", r.stderr);
    assert_eq!(answer(hosts.ports[0]), "v1");
    let r = project.deploy("far", "v2");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("canary: 50% of traffic to v2"), "{}", r.stderr);
    assert_eq!(answer(hosts.ports[0]), "v2");
    let st = project.status();
    assert_eq!(
        (st["version"].as_str(), st["status"].as_str(), st["healthy"].as_u64()),
        (Some("v2"), Some("healthy"), Some(2)),
        "{st}"
    );
    assert_eq!(hosts.exec(0, "ls /var/lib/slipway/artifacts/sha256 | wc -l"), "2", "each binary uploaded once");
    // Its instances' output comes back through the tunnel.
    let logs = project.sw(&["logs", "--env", "far", "-n", "200"]);
    assert_eq!(logs.code, 0, "{}", logs.debug());
    assert!(logs.stdout.contains("websvc v2 listening"), "{}", logs.stdout);
}

/// An sshd of the test's own on this machine (loopback port, temporary host key, its own
/// authorized_keys): "another machine" that has this machine's Docker Engine.
struct LocalSshd {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl LocalSshd {
    fn start() -> LocalSshd {
        require("/usr/sbin/sshd", "-V");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["host_key", "id"] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(name))
                .status()
                .unwrap();
            assert!(st.success());
        }
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n",
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let known = loop {
            let out = Command::new("ssh-keyscan").args(["-p", &port.to_string(), "127.0.0.1"]).output().unwrap();
            if !out.stdout.is_empty() {
                break out.stdout;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "sshd did not answer");
            std::thread::sleep(Duration::from_millis(50));
        };
        std::fs::write(d.join("known_hosts"), known).unwrap();
        LocalSshd { child, port, dir }
    }
}

impl Drop for LocalSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn containers_on_another_machines_docker_engine_through_its_agent() {
    require("docker", "--version");
    let sshd = LocalSshd::start();
    let remote = tempfile::Builder::new().prefix("slipway-remote-").tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = sshd.dir.path();
    let env = format!(
        "  far:\n    target: docker\n    agent: {{ssh: \"ssh://root@127.0.0.1:{}\", identity: {}, known_hosts: {}, data_dir: {}}}\n    instances: 2\n    listen: {addr}\n    strategy: {{type: rolling, max_surge: 1, max_unavailable: 0}}\n    health: {{http: /healthz, interval: 200ms, deadline: 8s}}\n",
        sshd.port,
        d.join("id").display(),
        d.join("known_hosts").display(),
        remote.path().display()
    );
    let project = Project::new(&env);
    let st = Command::new(bin()).args(["--data-dir"]).arg(remote.path()).args(["agent", "start"]).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let image = |v: &str| {
        let tar = std::env::temp_dir().join(format!("slipway-image-{v}-{}.tar", std::process::id()));
        websvc_image(v, &tar);
        tar
    };
    let (v1, v2) = (image("v1"), image("v2"));
    let r = project.sw(&["deploy", "far", "--artifacts", v1.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(r.stderr.contains("uploaded image archive"), "{}", r.stderr);
    assert_eq!(answer(addr.rsplit(':').next().unwrap().parse().unwrap()), "v1");
    let r = project.sw(&["deploy", "far", "--artifacts", v2.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!(answer(addr.rsplit(':').next().unwrap().parse().unwrap()), "v2");
    // The containers belong to the other agent (its data directory is their label).
    let label = format!("label=dev.slipway.agent={}", remote.path().canonicalize().unwrap().display());
    let ids = Command::new("docker").args(["ps", "-q", "--filter", &label]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ids.stdout).lines().count(), 2);
    assert!(remote.path().join("artifacts/images").read_dir().unwrap().count() >= 2, "archives uploaded there");
    let st = project.status();
    assert_eq!((st["version"].as_str(), st["status"].as_str()), (Some("v2"), Some("healthy")), "{st}");
    let _ = Command::new(bin()).args(["--data-dir"]).arg(remote.path()).args(["agent", "stop"]).output();
    let _ = std::fs::remove_file(v1);
    let _ = std::fs::remove_file(v2);
}

#[test]
fn several_instances_per_host_restart_one_at_a_time() {
    let mut hosts = Hosts::start(1, &[]);
    // Two consecutive free ports: the template unit's instances are `port` and `port+1`.
    let base = loop {
        let p = free_port();
        if p < 65535 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    hosts.ports[0] = base;
    let env = hosts
        .environment("prod", "")
        .replace("      command_timeout: 60s\n", "      command_timeout: 60s\n      instances: 2\n");
    let project = Project::new(&env);
    let r = project.deploy("prod", "v1");
    assert_eq!(r.code, 0, "{}", r.debug());
    assert_eq!((answer(base), answer(base + 1)), ("v1".into(), "v1".into()));
    assert_eq!(hosts.exec(0, &format!("systemctl is-active websvc@{base} websvc@{}", base + 1)), "active\nactive");
    assert_eq!(hosts.exec(0, &format!("systemd-analyze verify websvc@{base}.service 2>&1; echo $?")), "0");

    // While v2 rolls in, the host always answers on at least one of its ports.
    let (r, worst) = most_down_during(&[base, base + 1], || project.deploy("prod", "v2"));
    assert_eq!(r.code, 0, "{}", r.debug());
    assert!(worst <= 1, "both instances were down at once");
    assert_eq!((answer(base), answer(base + 1)), ("v2".into(), "v2".into()));
    let st = project.status();
    assert_eq!(
        (st["status"].as_str(), st["healthy"].as_u64(), st["total"].as_u64()),
        (Some("healthy"), Some(1), Some(1)),
        "{st}"
    );
}
