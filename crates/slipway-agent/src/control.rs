//! Running an agent from a command: start one in the background and wait until it answers,
//! stop one and wait until it is gone — what `slipway agent start|stop` do, and what the
//! server's one-machine mode will do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use slipway_api::{AgentClient, AgentInfo};

/// Why an agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("starting the agent: {0}")]
    Io(#[from] std::io::Error),
    /// It exited before answering; the last lines of its log.
    #[error("the agent exited at start ({status})")]
    Exited { status: String, log_tail: Vec<String> },
    #[error("the agent did not answer within 15s; see {}", .log.display())]
    Silent { log: PathBuf },
}

/// A started (or already running) agent.
pub struct Started {
    pub info: AgentInfo,
    /// False when one was running already.
    pub new: bool,
    pub log: PathBuf,
}

/// Starts `exe --data-dir DIR agent run` in the background (its own process group, output
/// appended to `DIR/agent/agent.log`) unless an agent answers already; returns once it answers.
pub async fn start(
    exe: &Path,
    data_dir: &Path,
    metrics_listen: Option<std::net::SocketAddr>,
) -> Result<Started, StartError> {
    let client = AgentClient::new(crate::socket_path(data_dir));
    let log = data_dir.join("agent/agent.log");
    if let Ok(info) = client.info().await {
        return Ok(Started { info, new: false, log });
    }
    std::fs::create_dir_all(data_dir.join("agent"))?;
    let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--data-dir").arg(data_dir).arg("agent").arg("run");
    if let Some(m) = metrics_listen {
        cmd.arg("--metrics-listen").arg(m.to_string());
    }
    cmd.stdin(std::process::Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // The agent outlives this command: its own group, no parent-death signal.
    slipway_sys::process::own_group(&mut cmd, false);
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(info) = client.info().await {
            return Ok(Started { info, new: true, log });
        }
        if let Some(st) = child.try_wait()? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let mut tail: Vec<String> = text.lines().rev().take(5).map(str::to_string).collect();
            tail.reverse();
            return Err(StartError::Exited { status: st.to_string(), log_tail: tail });
        }
        if Instant::now() >= deadline {
            return Err(StartError::Silent { log });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the agent of `data_dir` (SIGTERM: it drains and stops every instance) and waits up
/// to two minutes for it to be gone; `None` when none was running.
pub async fn stop(data_dir: &Path) -> Option<u32> {
    let info = AgentClient::new(crate::socket_path(data_dir)).info().await.ok()?;
    slipway_sys::process::signal(info.pid, slipway_sys::process::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(120);
    while slipway_sys::process::alive(info.pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(info.pid)
}
