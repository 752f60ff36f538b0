//! Health probes of one instance: an HTTP GET (2xx/3xx passes), a TCP connect, or a shell
//! command (exit 0 passes). Each returns the reason when it fails.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use slipway_api::ProbeSpec;

pub async fn probe(spec: &ProbeSpec, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(spec, port)).await {
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

async fn run(spec: &ProbeSpec, port: u16) -> Result<(), String> {
    let what = describe(spec);
    match spec {
        ProbeSpec::Tcp => {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("{what}: {e}"))?;
            Ok(())
        }
        ProbeSpec::Http { path } => {
            let stream =
                tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("{what}: {e}"))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            tokio::spawn(conn);
            let req = hyper::Request::get(path.as_str())
                .header("host", format!("127.0.0.1:{port}"))
                .header("user-agent", "slipway-health")
                .header("connection", "close")
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("{what}: {e}"))?;
            let resp = sender.send_request(req).await.map_err(|e| format!("{what}: {e}"))?;
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            if status.is_success() || status.is_redirection() { Ok(()) } else { Err(format!("{what}: {status}")) }
        }
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
