//! Agents that host environments for the server without SSH. Each agent joined to a server
//! keeps one connection open to it (`GET /api/v1/agents/tunnel?agent=NAME`, upgraded to
//! `slipway-tunnel`) and multiplexes streams over it with yamux. The server's end of it is a
//! Unix socket, `agents/<name>.sock` in its data directory ([`slipway_api::connected_socket`]):
//! each connection made to that socket becomes a stream that the agent joins to its own API
//! socket. So the deploy engine drives a connected agent with the same client, the same
//! calls and the same strategies as this machine's agent — only the socket differs — and the
//! agent needs no inbound port, no SSH account and no key: it dials out, as it does for jobs.
//!
//! One link per agent name: a reconnect replaces the link it had (its socket is bound anew),
//! and a link that ends takes its socket with it. The agent redials with a backoff, and TCP
//! keepalives notice a link whose network went away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use slipway_api::server::{ApiErrorBody, ConnectedAgent};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// The `Upgrade:` protocol of the tunnel.
pub const PROTOCOL: &str = "slipway-tunnel";

/// How long a connection to an agent's socket waits for its stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

type Opened = oneshot::Sender<Result<yamux::Stream, String>>;

/// The server's links to its connected agents.
pub(crate) struct Tunnels {
    data_dir: PathBuf,
    links: Mutex<HashMap<String, Link>>,
    next: AtomicU64,
}

struct Link {
    id: u64,
    /// `name@token`.
    holder: String,
    since_ms: i64,
    task: tokio::task::AbortHandle,
}

impl Tunnels {
    pub(crate) fn new(data_dir: PathBuf) -> Tunnels {
        Tunnels { data_dir, links: Mutex::new(HashMap::new()), next: AtomicU64::new(1) }
    }

    pub(crate) fn list(&self) -> Vec<ConnectedAgent> {
        let links = self.links.lock().expect("tunnels lock");
        let mut out: Vec<ConnectedAgent> = links
            .iter()
            .map(|(name, l)| ConnectedAgent {
                name: name.clone(),
                token: l.holder.rsplit_once('@').map_or(String::new(), |(_, t)| t.to_string()),
                since_ms: l.since_ms,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Serves a connection the agent upgraded: binds its socket (replacing a link the agent
    /// had) and runs the link until either end closes it.
    pub(crate) fn serve<T>(self: &Arc<Self>, name: String, holder: String, io: T)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let socket = slipway_api::connected_socket(&self.data_dir, &name);
        // Held from binding to recording the link: two links of one name never interleave
        // (the socket is the current link's), and a link that ends at once finds itself.
        let mut links = self.links.lock().expect("tunnels lock");
        let listener = match bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(agent = %name, socket = %socket.display(), error = %e, "cannot make the agent's socket");
                return;
            }
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(link(Arc::clone(self), name.clone(), id, listener, io));
        let old = links.insert(
            name.clone(),
            Link {
                id,
                holder: holder.clone(),
                since_ms: slipway_model::time::now_ms() as i64,
                task: task.abort_handle(),
            },
        );
        drop(links);
        match old {
            Some(old) => {
                old.task.abort();
                tracing::info!(agent = %name, by = %holder, was = %old.holder, "agent reconnected; its old link is closed");
            }
            None => tracing::info!(agent = %name, by = %holder, "agent connected: it can host environments"),
        }
    }

    /// Forgets link `id` of `name` if it is still the current one, with its socket.
    fn ended(&self, name: &str, id: u64) {
        let mut links = self.links.lock().expect("tunnels lock");
        if links.get(name).is_some_and(|l| l.id == id) {
            links.remove(name);
            let _ = std::fs::remove_file(slipway_api::connected_socket(&self.data_dir, name));
            tracing::info!(agent = %name, "agent disconnected");
        }
    }
}

/// Binds an agent's socket in a directory only this user can enter: the socket drives the
/// agent as its own API does.
fn bind(socket: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = socket.parent().expect("agents/<name>.sock has a parent");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    tokio::net::UnixListener::bind(socket)
}

/// Forgets the link when its task ends or is aborted.
struct Ended {
    tunnels: Arc<Tunnels>,
    name: String,
    id: u64,
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.tunnels.ended(&self.name, self.id);
    }
}

async fn link<T>(tunnels: Arc<Tunnels>, name: String, id: u64, listener: tokio::net::UnixListener, io: T)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let _ended = Ended { tunnels, name, id };
    let conn = yamux::Connection::new(io.compat(), yamux::Config::default(), yamux::Mode::Client);
    let (open, opens) = mpsc::channel::<Opened>(64);
    let accept = async {
        loop {
            let Ok((unix, _)) = listener.accept().await else { return };
            tokio::spawn(bridge(unix, open.clone()));
        }
    };
    tokio::select! {
        () = drive(conn, opens) => {}
        () = accept => {}
    }
}

/// Joins one connection to the agent's socket to a new stream of the link.
async fn bridge(mut unix: tokio::net::UnixStream, open: mpsc::Sender<Opened>) {
    let (tx, rx) = oneshot::channel();
    if open.send(tx).await.is_err() {
        return;
    }
    let Ok(Ok(Ok(stream))) = tokio::time::timeout(OPEN_TIMEOUT, rx).await else { return };
    let mut stream = stream.compat();
    let _ = tokio::io::copy_bidirectional(&mut unix, &mut stream).await;
}

/// Runs the yamux connection: opens the streams asked for, in order, and drives its I/O;
/// ends when the connection closes. Streams the other side opens are refused (closed).
async fn drive<T>(mut conn: yamux::Connection<tokio_util::compat::Compat<T>>, mut opens: mpsc::Receiver<Opened>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut waiting: std::collections::VecDeque<Opened> = std::collections::VecDeque::new();
    let mut asking = true;
    std::future::poll_fn(|cx| {
        loop {
            while asking {
                match opens.poll_recv(cx) {
                    Poll::Ready(Some(tx)) => waiting.push_back(tx),
                    Poll::Ready(None) => asking = false,
                    Poll::Pending => break,
                }
            }
            if !waiting.is_empty() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(Ok(stream)) => {
                        if let Some(tx) = waiting.pop_front() {
                            let _ = tx.send(Ok(stream));
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        for tx in waiting.drain(..) {
                            let _ = tx.send(Err(e.to_string()));
                        }
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => drop(stream),
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

type S = axum::extract::State<Arc<crate::State>>;

/// An agent opens its link: answered `101 Switching Protocols`, then served as a tunnel.
#[utoipa::path(get, path = "/api/v1/agents/tunnel", tag = "job protocol", summary = "Open the agent's tunnel (`Upgrade: slipway-tunnel`)", params(("agent" = String, Query, description = "The agent's name")), responses((status = 101, description = "Switched: yamux streams, each one a connection to the agent's API"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub(crate) async fn open(
    axum::extract::State(s): S,
    who: crate::access::Caller,
    axum::extract::Query(q): axum::extract::Query<crate::api::AgentQuery>,
    mut req: axum::extract::Request,
) -> Result<axum::response::Response, crate::ServerError> {
    use axum::http::header::{CONNECTION, UPGRADE};
    use axum::response::IntoResponse;
    slipway_model::names::check_agent(&q.agent).map_err(|why| crate::ServerError::Input(why, Some("agent".into())))?;
    let asks =
        req.headers().get(UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !asks {
        return Err(crate::ServerError::Input(
            format!(
                "this is a tunnel: send `Connection: upgrade` and `Upgrade: {PROTOCOL}` (what `slipway agent --server` does)"
            ),
            Some("upgrade".into()),
        ));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    who.check_agent(&q.agent)?;
    let holder = format!("{}@{}", q.agent, who.name);
    let tunnels = Arc::clone(&s.tunnels);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => tunnels.serve(q.agent, holder, hyper_util::rt::TokioIo::new(io)),
            Err(e) => tracing::warn!(agent = %q.agent, error = %e, "the agent's tunnel did not open"),
        }
    });
    Ok((axum::http::StatusCode::SWITCHING_PROTOCOLS, [(CONNECTION, "upgrade"), (UPGRADE, PROTOCOL)]).into_response())
}

/// The agents connected now, which can host environments (`agent: {name: …}`).
#[utoipa::path(get, path = "/api/v1/agents", tag = "environments", summary = "Connected agents", responses((status = 200, body = [ConnectedAgent]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub(crate) async fn agents(
    axum::extract::State(s): S,
    _who: crate::access::Caller,
) -> Result<axum::Json<Vec<ConnectedAgent>>, crate::ServerError> {
    Ok(axum::Json(s.tunnels.list()))
}

/// The agent's end: keeps a link to the server open, redialling with a backoff, and joins
/// every stream the server opens to the agent's own API socket. Runs until it is aborted.
pub(crate) async fn keep_open(http: reqwest::Client, server: String, token: String, name: String, socket: PathBuf) {
    let url = format!("{}/api/v1/agents/tunnel?agent={name}", server.trim_end_matches('/'));
    {
        let mut delay = Duration::from_millis(250);
        let mut failing = false;
        loop {
            match dial(&http, &url, &token).await {
                Ok(io) => {
                    tracing::info!(server = %server, "tunnel to the server open: this agent can host its environments");
                    failing = false;
                    delay = Duration::from_millis(250);
                    accept(io, &socket).await;
                    tracing::warn!(server = %server, "tunnel to the server closed; opening it again");
                }
                Err(e) if !failing => {
                    tracing::warn!(server = %server, error = %e, "cannot open the tunnel to the server; trying again");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

async fn dial(http: &reqwest::Client, url: &str, token: &str) -> Result<reqwest::Upgraded, String> {
    let resp = http
        .get(url)
        .bearer_auth(token)
        .header(reqwest::header::CONNECTION, "upgrade")
        .header(reqwest::header::UPGRADE, PROTOCOL)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("the server answered {status}: {}", body.trim()));
    }
    resp.upgrade().await.map_err(|e| e.to_string())
}

/// Joins each stream the server opens to the agent's socket, until the link closes.
async fn accept(io: reqwest::Upgraded, socket: &std::path::Path) {
    let mut conn = yamux::Connection::new(io.compat(), yamux::Config::default(), yamux::Mode::Server);
    loop {
        match std::future::poll_fn(|cx| conn.poll_next_inbound(cx)).await {
            Some(Ok(stream)) => {
                let socket = socket.to_path_buf();
                tokio::spawn(async move {
                    let mut stream = stream.compat();
                    match tokio::net::UnixStream::connect(&socket).await {
                        Ok(mut unix) => {
                            let _ = tokio::io::copy_bidirectional(&mut stream, &mut unix).await;
                        }
                        Err(e) => {
                            tracing::warn!(socket = %socket.display(), error = %e, "the server asked for this agent's API, which does not answer");
                        }
                    }
                });
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "tunnel error");
                return;
            }
            None => return,
        }
    }
}
