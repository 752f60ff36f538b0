//! Health probes of one instance: slipway-net's HTTP GET (2xx/3xx passes) or TCP connect —
//! the same probes the ssh target uses — or a shell command (exit 0 passes). Each returns the
//! reason when it fails.

use std::time::Duration;

use slipway_api::ProbeSpec;

pub async fn probe(spec: &ProbeSpec, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(spec, port, timeout)).await {
        Ok(r) => r,
        Err(_) => Err(format!("{} timed out after {timeout:?}", describe(spec))),
    }
}

fn describe(spec: &ProbeSpec) -> String {
    match spec {
        ProbeSpec::Http { path } => format!("GET {path}"),
        ProbeSpec::Tcp => "TCP connect".into(),
        ProbeSpec::Command { command } => format!("`{command}`"),
    }
}

async fn run(spec: &ProbeSpec, port: u16, timeout: Duration) -> Result<(), String> {
    let what = describe(spec);
    match spec {
        ProbeSpec::Tcp => slipway_net::probe::tcp("127.0.0.1", port, timeout).await,
        ProbeSpec::Http { path } => slipway_net::probe::http("127.0.0.1", port, path, timeout).await,
        ProbeSpec::Command { command } => {
            let out = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .env("PORT", port.to_string())
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                let last = err.lines().last().unwrap_or("").trim();
                Err(format!(
                    "{what}: {}{}",
                    out.status,
                    if last.is_empty() { String::new() } else { format!(": {last}") }
                ))
            }
        }
    }
}
