//! A small, bounded HTTP load generator for the deploy tests and benchmarks: a fixed request
//! rate over keep-alive connections for a fixed time (or until a stop file appears), counting
//! answers by status and by body (the version that answered) and measuring latency. Tests
//! call [`run`] in-process; the benchmarks run the `slipway-load` binary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

/// What to send.
#[derive(Debug, Clone)]
pub struct Load {
    /// `http://host:port/path` on loopback.
    pub url: String,
    /// Requests per second, over all connections.
    pub rate: u32,
    pub duration: Duration,
    /// Keep-alive connections.
    pub connections: u32,
    /// Stop early when this file appears (lets a test end the load when its scenario ends).
    pub stop_file: Option<PathBuf>,
}

impl Load {
    pub fn new(url: &str, rate: u32, duration: Duration) -> Load {
        Load { url: url.to_string(), rate, duration, connections: 4, stop_file: None }
    }
}

#[derive(Default)]
struct Tally {
    by_status: BTreeMap<String, u64>,
    by_body: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
    errors: Vec<String>,
    /// (milliseconds since start, ok) of every request, for "when did failures happen".
    timeline: Vec<(u64, bool)>,
}

/// Sends the load and returns the tally as JSON: `requests`, `failed`, `by_status`,
/// `by_body` (the first line of each answer: the version that answered), `latency_ms`
/// (p50/p90/p99/max), `first_failure_ms`/`last_failure_ms` and the first `errors`.
pub fn run(args: &Load) -> Result<serde_json::Value, String> {
    let uri: hyper::Uri = args.url.parse().map_err(|e| format!("`{}`: {e}", args.url))?;
    let host = uri.host().unwrap_or("127.0.0.1").to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/".to_string(), |p| p.to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let tally = rt.block_on(async {
        let start = Instant::now();
        let end = start + args.duration;
        let every = Duration::from_secs_f64(f64::from(args.connections) / f64::from(args.rate.max(1)));
        let mut workers = Vec::new();
        for w in 0..args.connections {
            let (host, path, stop, connections) =
                (host.clone(), path.clone(), args.stop_file.clone(), args.connections);
            workers.push(tokio::spawn(async move {
                let mut t = Tally::default();
                let mut next = start + every.mul_f64(f64::from(w) / f64::from(connections));
                let mut conn: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
                while next < end {
                    tokio::time::sleep_until(next.into()).await;
                    next += every;
                    if stop.as_ref().is_some_and(|f| f.exists()) {
                        break;
                    }
                    let sent = Instant::now();
                    let result = request(&mut conn, &host, port, &path).await;
                    let us = sent.elapsed().as_micros() as u64;
                    let at = sent.duration_since(start).as_millis() as u64;
                    match result {
                        Ok((status, body)) => {
                            *t.by_status.entry(status.to_string()).or_default() += 1;
                            *t.by_body.entry(body).or_default() += 1;
                            t.latencies_us.push(us);
                            t.timeline.push((at, status < 500));
                        }
                        Err(e) => {
                            *t.by_status.entry("error".into()).or_default() += 1;
                            if t.errors.len() < 5 {
                                t.errors.push(e);
                            }
                            t.timeline.push((at, false));
                            conn = None;
                        }
                    }
                }
                t
            }));
        }
        let mut all = Tally::default();
        for w in workers {
            if let Ok(t) = w.await {
                for (k, v) in t.by_status {
                    *all.by_status.entry(k).or_default() += v;
                }
                for (k, v) in t.by_body {
                    *all.by_body.entry(k).or_default() += v;
                }
                all.latencies_us.extend(t.latencies_us);
                all.errors.extend(t.errors);
                all.timeline.extend(t.timeline);
            }
        }
        all
    });
    let mut lat = tally.latencies_us.clone();
    lat.sort_unstable();
    let q = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1000.0
    };
    let total: u64 = tally.by_status.values().sum();
    let failed: u64 = tally
        .by_status
        .iter()
        .filter(|(k, _)| k.as_str() == "error" || k.parse::<u16>().is_ok_and(|s| s >= 500))
        .map(|(_, v)| v)
        .sum();
    let mut timeline = tally.timeline;
    timeline.sort_unstable();
    let failed_at: Vec<u64> = timeline.iter().filter(|(_, ok)| !ok).map(|(t, _)| *t).collect();
    Ok(serde_json::json!({
            "requests": total,
            "failed": failed,
            "by_status": tally.by_status,
            "by_body": tally.by_body,
            "latency_ms": {"p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": q(1.0)},
            "first_failure_ms": failed_at.first(),
            "last_failure_ms": failed_at.last(),
            "errors": tally.errors,
    }))
}

async fn request(
    conn: &mut Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
    host: &str,
    port: u16,
    path: &str,
) -> Result<(u16, String), String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(c);
        *conn = Some(sender);
    }
    let sender = conn.as_mut().expect("connected above");
    sender.ready().await.map_err(|e| format!("connection: {e}"))?;
    let req = hyper::Request::get(path)
        .header("host", format!("{host}:{port}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "timed out after 10s".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    let first = String::from_utf8_lossy(&body).lines().next().unwrap_or("").trim().to_string();
    Ok((status, first))
}
