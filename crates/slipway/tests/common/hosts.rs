//! Hosts for the ssh target's tests: Debian containers booted with systemd as PID 1 in the
//! local Docker Engine (image from `scripts/systemd-image`), each with its own sshd on a
//! loopback port and a temporary key pair.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require};

pub const IMAGE: &str = "slipway-test/debian-systemd:bookworm";

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker runs");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Hosts: systemd containers on the host network, each with sshd on its own port.
pub struct Hosts {
    pub names: Vec<String>,
    pub ssh_ports: Vec<u16>,
    pub ports: Vec<u16>,
    pub keys: tempfile::TempDir,
}

impl Hosts {
    pub fn start(n: usize, extra: &[&str]) -> Hosts {
        require("docker", "--version");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/systemd-image");
        let st = Command::new("bash").arg(root).status().unwrap();
        assert!(
            st.success(),
            "scripts/systemd-image failed (needs root, debootstrap and dockerd: scripts/test does it all)"
        );
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("id");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "slipway-test", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let mut h = Hosts { names: Vec::new(), ssh_ports: Vec::new(), ports: Vec::new(), keys };
        for i in 0..n {
            let name = format!("slipway-test-{}-{i}", std::process::id());
            let _ = Command::new("docker").args(["rm", "-f", &name]).output();
            let mut args = vec![
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "host",
                "--cgroupns=host",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "-e",
                "container=docker",
                "--security-opt",
                "seccomp=unconfined",
                "--cap-add",
                "SYS_ADMIN",
                "--cap-add",
                "NET_ADMIN",
                "--cap-add",
                "SYS_PTRACE",
                "--cap-add",
                "SYS_BOOT",
            ];
            args.extend_from_slice(extra);
            args.extend_from_slice(&[IMAGE, "/sbin/init"]);
            docker(&args);
            h.names.push(name);
            h.ssh_ports.push(free_port());
            h.ports.push(free_port());
        }
        for (i, name) in h.names.iter().enumerate() {
            let t = Instant::now();
            loop {
                let state =
                    Command::new("docker").args(["exec", name, "systemctl", "is-system-running"]).output().unwrap();
                let s = String::from_utf8_lossy(&state.stdout).trim().to_string();
                if s == "running" || s == "degraded" {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(30), "{name} did not boot: {s}");
                std::thread::sleep(Duration::from_millis(100));
            }
            let script = format!(
                "ssh-keygen -A >/dev/null && mkdir -p /root/.ssh /run/sshd && chmod 700 /root/.ssh && printf '%s' '{}' > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys && /usr/sbin/sshd -p {} -o ListenAddress=127.0.0.1 -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no",
                public.trim(),
                h.ssh_ports[i]
            );
            docker(&["exec", name, "sh", "-c", &script]);
        }
        // known_hosts from the hosts themselves (the test is the one trusting them).
        let mut known = String::new();
        for p in &h.ssh_ports {
            let t = Instant::now();
            loop {
                let out = Command::new("ssh-keyscan").args(["-p", &p.to_string(), "127.0.0.1"]).output().unwrap();
                if !out.stdout.is_empty() {
                    known.push_str(&String::from_utf8_lossy(&out.stdout));
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(10), "sshd on {p} did not answer");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::fs::write(h.keys.path().join("known_hosts"), known).unwrap();
        h
    }

    pub fn key(&self) -> PathBuf {
        self.keys.path().join("id")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.keys.path().join("known_hosts")
    }

    /// Runs a command on host `i` (over docker, not over the deploy's ssh).
    pub fn exec(&self, i: usize, cmd: &str) -> String {
        let out = Command::new("docker").args(["exec", &self.names[i], "sh", "-c", cmd]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn environment(&self, name: &str, extra: &str) -> String {
        let hosts: Vec<String> = (0..self.names.len())
            .map(|i| format!("{{url: \"ssh://root@127.0.0.1:{}\", port: {}}}", self.ssh_ports[i], self.ports[i]))
            .collect();
        format!(
            "  {name}:\n    target: ssh\n    ssh:\n      hosts: [{}]\n      identity: {}\n      known_hosts: {}\n      command_timeout: 60s\n    service:\n      args: [\"-v\"]\n    health: {{http: /healthz, interval: 200ms, deadline: 5s}}\n{extra}",
            hosts.join(", "),
            self.key().display(),
            self.known_hosts().display()
        )
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("docker").args(["rm", "-f", n]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}
