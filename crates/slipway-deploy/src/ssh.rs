//! Remote steps over OpenSSH: one master connection per host per deploy (ControlMaster),
//! host keys always checked against known_hosts (`StrictHostKeyChecking=yes`, never
//! accept-new), batch mode (no prompts), a timeout on every step, and failures classified
//! into what a user can act on: unreachable, authentication refused, unknown host key, or a
//! remote command that failed with its stderr.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use slipway_model::environment::{SshHost, SshTarget};
use tokio::io::AsyncReadExt;

/// Why a step on a host failed.
#[derive(Debug, Clone)]
pub struct HostError {
    pub host: String,
    pub step: String,
    pub message: String,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at `{}`: {}", self.host, self.step, self.message)
    }
}

/// Quotes a string for a POSIX shell.
pub fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub struct Conn {
    pub host: SshHost,
    args: Vec<String>,
    timeout: Duration,
}

impl Conn {
    pub fn new(host: &SshHost, target: &SshTarget, control_dir: &Path) -> Conn {
        let mut args = vec![
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={}", target.connect_timeout.as_secs().max(1)),
            "-o".into(),
            "ControlMaster=auto".into(),
            "-o".into(),
            format!("ControlPath={}/%C", control_dir.display()),
            "-o".into(),
            "ControlPersist=120".into(),
            "-o".into(),
            "ServerAliveInterval=5".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        if let Some(kh) = &target.known_hosts {
            args.extend([
                "-o".into(),
                format!("UserKnownHostsFile={kh}"),
                "-o".into(),
                "GlobalKnownHostsFile=/dev/null".into(),
            ]);
        }
        if let Some(id) = &target.identity {
            args.extend(["-i".into(), id.clone(), "-o".into(), "IdentitiesOnly=yes".into()]);
        }
        args.extend(["-p".into(), host.ssh_port.to_string(), format!("{}@{}", host.user, host.host)]);
        Conn { host: host.clone(), args, timeout: target.command_timeout }
    }

    fn err(&self, step: &str, message: impl Into<String>) -> HostError {
        HostError { host: self.host.label(), step: step.into(), message: message.into() }
    }

    /// Runs `script` with `sh` on the host (stdin from `input` when given); returns stdout.
    pub async fn run(&self, step: &str, script: &str, input: Option<&Path>) -> Result<String, HostError> {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(&self.args)
            .arg("--")
            .arg(format!("sh -c {}", sq(script)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match input {
            Some(p) => {
                let f = std::fs::File::open(p).map_err(|e| self.err(step, format!("reading {}: {e}", p.display())))?;
                cmd.stdin(Stdio::from(f));
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        let mut child = cmd.spawn().map_err(|e| self.err(step, format!("cannot run ssh: {e}")))?;
        let (mut out, mut errs) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let work = async {
            let (mut o, mut e) = (String::new(), String::new());
            let _ = tokio::join!(out.read_to_string(&mut o), errs.read_to_string(&mut e));
            let status = child.wait().await;
            (status, o, e)
        };
        let (status, stdout, stderr) = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => return Err(self.err(step, format!("timed out after {}s", self.timeout.as_secs()))),
        };
        let status = status.map_err(|e| self.err(step, e.to_string()))?;
        if status.success() {
            return Ok(stdout);
        }
        let stderr = stderr.trim().to_string();
        Err(self.err(step, classify(status.code(), &stderr, &self.host)))
    }

    /// Closes the master connection.
    pub async fn close(&self) {
        let _ = tokio::process::Command::new("ssh")
            .args(&self.args)
            .args(["-O", "exit"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

fn classify(code: Option<i32>, stderr: &str, host: &SshHost) -> String {
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if code == Some(255) {
        if stderr.contains("Host key verification failed")
            || stderr.contains("No ED25519 host key is known")
            || stderr.contains("host key for") && stderr.contains("is not known")
        {
            return format!(
                "the host key of {}:{} is unknown or changed (known_hosts is always checked): check its fingerprint, then add it with `ssh-keyscan -p {} {} >> known_hosts`",
                host.host, host.ssh_port, host.ssh_port, host.host
            );
        }
        if stderr.contains("Permission denied") {
            return format!("authentication refused for {}@{}: {last}", host.user, host.host);
        }
        if [
            "Connection refused",
            "timed out",
            "No route to host",
            "Could not resolve",
            "Network is unreachable",
            "Connection closed",
        ]
        .iter()
        .any(|s| stderr.contains(s))
        {
            return format!("host unreachable: {last}");
        }
        return format!("ssh failed: {last}");
    }
    match code {
        Some(c) => format!("exited with {c}{}", if last.is_empty() { String::new() } else { format!(": {last}") }),
        None => "killed by a signal".into(),
    }
}

/// A forwarded Unix socket: `local` reaches `remote` on the host while this lives.
pub struct Tunnel {
    child: tokio::process::Child,
    pub local: PathBuf,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.local);
    }
}

impl Conn {
    /// Forwards a local socket in `dir` to `remote` (a Unix socket on the host) until the
    /// returned tunnel is dropped; answers once the forward is up.
    pub async fn tunnel(&self, dir: &Path, remote: &str) -> Result<Tunnel, HostError> {
        let local = dir.join(format!("agent-{}.sock", self.host.ssh_port));
        let _ = std::fs::remove_file(&local);
        // A connection of its own: ssh takes the first value of an option, and a shared master
        // would end with the other steps' `-O exit`.
        let mut args = Vec::new();
        let mut it = self.args.iter().peekable();
        while let Some(a) = it.next() {
            if a == "-o" && it.peek().is_some_and(|o| o.starts_with("Control")) {
                it.next();
                continue;
            }
            args.push(a.clone());
        }
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
            .args(&args)
            .args(["-N", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes", "-L"])
            .arg(format!("{}:{remote}", local.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| self.err("tunnel", format!("cannot run ssh: {e}")))?;
        let deadline = std::time::Instant::now() + self.timeout.min(Duration::from_secs(30));
        loop {
            // The socket file appears when ssh binds it, a moment before it listens: ready
            // once a connection is taken (ssh then opens a channel and closes it; harmless).
            if local.exists() && tokio::net::UnixStream::connect(&local).await.is_ok() {
                return Ok(Tunnel { child, local });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err).await;
                }
                return Err(self.err("tunnel", classify(status.code(), err.trim(), &self.host)));
            }
            if std::time::Instant::now() >= deadline {
                return Err(self.err("tunnel", "the forward to the agent's socket did not come up"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A private directory for the control sockets of one deploy (short: socket paths are limited).
pub fn control_dir() -> std::io::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("slipway-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(sq("it's"), r"'it'\''s'");
        assert_eq!(sq("$HOME `x`"), "'$HOME `x`'");
    }

    #[test]
    fn ssh_failures_say_what_to_do() {
        let h = SshHost { user: "deploy".into(), host: "10.0.0.5".into(), ssh_port: 2222, port: 8080, group: None };
        assert!(classify(Some(255), "Host key verification failed.", &h).contains("ssh-keyscan -p 2222 10.0.0.5"));
        assert!(
            classify(Some(255), "deploy@10.0.0.5: Permission denied (publickey).", &h)
                .starts_with("authentication refused")
        );
        assert!(
            classify(Some(255), "ssh: connect to host 10.0.0.5 port 2222: Connection refused", &h)
                .starts_with("host unreachable")
        );
        assert_eq!(
            classify(Some(1), "cat: write error: No space left on device\n", &h),
            "exited with 1: cat: write error: No space left on device"
        );
    }
}
