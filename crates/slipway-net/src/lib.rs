//! slipway's one HTTP client stack, shared by the agent's API client, the agent's health
//! checks, the ssh target's health checks and the load generator: hyper over a TCP
//! connection or a Unix socket, one connection per request (every caller here talks to
//! loopback or to a host it deploys to, rarely). [`probe`] is the health check every target
//! uses: an HTTP GET that passes on 2xx/3xx, or a TCP connect.

pub mod probe;

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};

/// An answer: its status and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum Error {
    /// Nothing listens (no such socket, connection refused).
    NotListening(std::io::Error),
    /// Connected, but the exchange failed.
    Transport(String),
    TimedOut(Duration),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotListening(e) => write!(f, "{e}"),
            Error::Transport(m) => f.write_str(m),
            Error::TimedOut(d) => write!(f, "timed out after {d:?}"),
        }
    }
}

impl std::error::Error for Error {}

async fn exchange<S>(io: S, method: Method, host: &str, path: &str, body: Vec<u8>) -> Result<Response, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let kind = (!body.is_empty()).then_some("application/json");
    send(io, method, host, path, kind, Full::new(Bytes::from(body))).await
}

async fn send<S, B>(
    io: S,
    method: Method,
    host: &str,
    path: &str,
    kind: Option<&str>,
    body: B,
) -> Result<Response, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let transport = |e: hyper::Error| Error::Transport(e.to_string());
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.map_err(transport)?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", host).header("user-agent", "slipway");
    if let Some(kind) = kind {
        req = req.header("content-type", kind);
    }
    let req = req.body(body).map_err(|e| Error::Transport(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(transport)?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(transport)?.to_bytes();
    Ok(Response { status, body })
}

fn connect_error(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => Error::NotListening(e),
        _ => Error::Transport(e.to_string()),
    }
}

/// One request over a Unix socket (the agent's API).
pub async fn unix(socket: &Path, method: Method, path: &str, body: Vec<u8>) -> Result<Response, Error> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(connect_error)?;
    exchange(stream, method, "agent", path, body).await
}

/// One request over a Unix socket whose body is a file, streamed as it is read (artifacts
/// sent to an agent).
pub async fn unix_file(socket: &Path, method: Method, path: &str, file: &Path) -> Result<Response, Error> {
    use futures_util::TryStreamExt;
    let f = tokio::fs::File::open(file).await.map_err(|e| Error::Transport(format!("{}: {e}", file.display())))?;
    let frames = tokio_util::io::ReaderStream::with_capacity(f, 1 << 16).map_ok(hyper::body::Frame::data);
    let body = http_body_util::StreamBody::new(frames);
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(connect_error)?;
    send(stream, method, "agent", path, Some("application/octet-stream"), body).await
}

/// One request over TCP to `host:port`, bounded by `timeout`.
pub async fn tcp(host: &str, port: u16, method: Method, path: &str, timeout: Duration) -> Result<Response, Error> {
    let work = async {
        let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        exchange(stream, method, &authority, path, Vec::new()).await
    };
    tokio::time::timeout(timeout, work).await.unwrap_or(Err(Error::TimedOut(timeout)))
}

pub use hyper::Method as HttpMethod;
