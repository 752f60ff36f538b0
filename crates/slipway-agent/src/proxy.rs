//! The traffic entry points: a reverse proxy (HTTP/1.1 and HTTP/2 in, HTTP/1.1 keep-alive to
//! the instances, WebSocket upgrades passed through) that routes each request to a healthy
//! instance, splitting traffic between releases by weight, and counts requests, errors and
//! latency per release for canary analysis and the metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use slipway_api::{LATENCY_BUCKETS_MS, ProxySpec, Traffic};
use tokio::sync::watch;

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;
pub type HttpClient = Client<HttpConnector, ProxyBody>;

/// Counters of one release's traffic, cumulative for the life of its group.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Sum of latencies, microseconds.
    pub latency_sum_us: AtomicU64,
    pub buckets: [AtomicU64; 16],
}

impl Stats {
    fn record(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let ms = elapsed.as_secs_f64() * 1000.0;
        let i = LATENCY_BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Traffic {
        Traffic {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
        }
    }
}

/// An instance that takes traffic.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    /// Requests in flight (a draining instance stops when this reaches 0).
    pub inflight: Arc<AtomicU64>,
}

#[derive(Clone)]
pub struct RouteGroup {
    pub weight: u32,
    pub preview: bool,
    pub backends: Vec<Backend>,
    pub stats: Arc<Stats>,
    pub next: Arc<AtomicU64>,
}

/// Where an environment's requests go now; replaced as a whole on every change.
#[derive(Clone, Default)]
pub struct RouteTable {
    pub groups: Vec<RouteGroup>,
}

/// The shared, swappable route table of one environment.
#[derive(Clone, Default)]
pub struct Routes {
    table: Arc<RwLock<Arc<RouteTable>>>,
    counter: Arc<AtomicU64>,
}

impl Routes {
    pub fn set(&self, table: RouteTable) {
        *self.table.write().expect("route table lock") = Arc::new(table);
    }

    fn get(&self) -> Arc<RouteTable> {
        Arc::clone(&self.table.read().expect("route table lock"))
    }

    /// Picks a group by weight (exact shares over every 100 requests, spread out) and a
    /// backend round-robin in it. `skip` excludes a backend that just refused a connection.
    fn pick(&self, preview: bool, skip: Option<SocketAddr>) -> Option<(Backend, Arc<Stats>)> {
        let table = self.get();
        let usable = |g: &&RouteGroup| {
            g.backends.iter().any(|b| Some(b.addr) != skip) && if preview { g.preview } else { g.weight > 0 }
        };
        let groups: Vec<&RouteGroup> = table.groups.iter().filter(usable).collect();
        if groups.is_empty() {
            return None;
        }
        let total: u64 = groups.iter().map(|g| if preview { 1 } else { u64::from(g.weight) }).sum();
        // Multiplying by a step coprime with 100 visits every slot once per 100 requests, so a
        // 10% group gets exactly 10 of every 100, not in one burst.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let slot = ((n % 100) * 37 % 100) * total / 100;
        let mut acc = 0;
        let mut chosen = groups[0];
        for g in &groups {
            acc += if preview { 1 } else { u64::from(g.weight) };
            if slot < acc {
                chosen = g;
                break;
            }
        }
        let backends: Vec<&Backend> = chosen.backends.iter().filter(|b| Some(b.addr) != skip).collect();
        let i = chosen.next.fetch_add(1, Ordering::Relaxed) as usize % backends.len();
        Some((backends[i].clone(), Arc::clone(&chosen.stats)))
    }
}

/// An environment's bounds on client connections, shared by its entry points and changed in
/// place when a new spec arrives.
pub struct Limits {
    max_connections: AtomicU32,
    header_timeout_ms: AtomicU64,
    idle_timeout_ms: AtomicU64,
}

impl Default for Limits {
    fn default() -> Limits {
        let d = ProxySpec::default();
        Limits {
            max_connections: AtomicU32::new(d.max_connections),
            header_timeout_ms: AtomicU64::new(d.header_timeout_ms),
            idle_timeout_ms: AtomicU64::new(d.idle_timeout_ms),
        }
    }
}

impl Limits {
    pub fn set(&self, p: &ProxySpec) {
        self.max_connections.store(p.max_connections.max(1), Ordering::Relaxed);
        self.header_timeout_ms.store(p.header_timeout_ms.max(1), Ordering::Relaxed);
        self.idle_timeout_ms.store(p.idle_timeout_ms.max(1), Ordering::Relaxed);
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.load(Ordering::Relaxed))
    }
}

/// What happened to an entry point's connections, for `agent status` and the metrics.
#[derive(Default)]
pub struct ConnStats {
    /// Open now.
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    /// Turned away: the limit was reached and every connection had a request in flight.
    pub refused: AtomicU64,
    /// Closed for a new connection at the limit (the one idle the longest).
    pub evicted: AtomicU64,
    /// Closed after `idle_timeout` without a request in flight.
    pub timed_out: AtomicU64,
}

impl ConnStats {
    pub fn snapshot(&self, listen: &str) -> slipway_api::EntryConnections {
        slipway_api::EntryConnections {
            listen: listen.to_string(),
            open: self.open.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// Client connections all entry points together may hold: half the open-file limit (each may
/// need a connection to an instance too) less a reserve for health probes, instances, logs
/// and the control socket, which must keep working whatever clients do. Each entry point
/// gets an equal share when its `max_connections` asks for more.
static BUDGET: AtomicUsize = AtomicUsize::new(384);
static ENTRY_POINTS: AtomicUsize = AtomicUsize::new(0);

/// Sets the budget from the open-file limit; returns it.
pub fn budget_connections(open_files: u64) -> usize {
    let b = (open_files.saturating_sub(256) / 2).max(16) as usize;
    BUDGET.store(b, Ordering::Relaxed);
    b
}

/// One client connection, as the entry point's gate sees it.
struct Conn {
    /// Requests in flight (a response counts until its body is sent).
    busy: AtomicU32,
    /// When `busy` last fell to 0 (or the connection opened), ms since the gate's epoch.
    idle_since: AtomicU64,
    closing: std::sync::atomic::AtomicBool,
    close: tokio::sync::Notify,
    /// The client socket, to see whether a request is arriving (valid while registered).
    fd: std::os::fd::RawFd,
}

/// Counts an entry point's connections, closes idle ones and chooses which to close when a
/// new one arrives at the limit, so that held connections can neither use up the agent's
/// file descriptors nor keep other clients out.
struct Gate {
    limits: Arc<Limits>,
    stats: Arc<ConnStats>,
    epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    /// A connection left the gate.
    freed: tokio::sync::Notify,
}

impl Gate {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a new connection may be served now. At the limit it closes the connection idle
    /// the longest and says to wait until that one's socket is closed, so the entry point
    /// never holds more sockets than its limit.
    fn admit(&self) -> Admit {
        let conns = self.conns.lock().expect("gate lock");
        let share = BUDGET.load(Ordering::Relaxed) / ENTRY_POINTS.load(Ordering::Relaxed).max(1);
        let limit = share.min(self.limits.max_connections.load(Ordering::Relaxed) as usize);
        if conns.len() < limit {
            return Admit::Yes;
        }
        let closing = conns.values().filter(|c| c.closing.load(Ordering::Relaxed)).count();
        if conns.len() - closing < limit {
            return Admit::Wait;
        }
        // The victim: idle the longest, with no request on its way (bytes received and not
        // yet read are a request that its task has not reached yet).
        let victim = conns
            .values()
            .filter(|c| !c.closing.load(Ordering::Relaxed) && c.busy.load(Ordering::SeqCst) == 0)
            .filter(|c| slipway_sys::socket::unread(c.fd) == 0)
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        match victim {
            Some(c) => {
                c.closing.store(true, Ordering::Relaxed);
                c.close.notify_one();
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                Admit::Wait
            }
            None => Admit::No,
        }
    }

    fn register(&self, fd: std::os::fd::RawFd) -> (u64, Arc<Conn>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(Conn {
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(self.now()),
            closing: Default::default(),
            close: tokio::sync::Notify::new(),
            fd,
        });
        self.conns.lock().expect("gate lock").insert(id, Arc::clone(&c));
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        (id, c)
    }

    fn unregister(&self, id: u64) {
        if self.conns.lock().expect("gate lock").remove(&id).is_some() {
            self.stats.open.fetch_sub(1, Ordering::Relaxed);
            self.freed.notify_one();
        }
    }

    /// Closes the connections idle for longer than `idle_timeout`.
    fn sweep(&self) {
        let limit = self.limits.idle_timeout().as_millis() as u64;
        let now = self.now();
        for c in self.conns.lock().expect("gate lock").values() {
            if c.busy.load(Ordering::SeqCst) == 0
                && now.saturating_sub(c.idle_since.load(Ordering::Relaxed)) >= limit
                && !c.closing.swap(true, Ordering::Relaxed)
            {
                c.close.notify_one();
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Yes,
    /// A connection is being closed to make room.
    Wait,
    /// Every connection has a request in flight.
    No,
}

/// Marks a connection busy while a request is in flight.
struct Busy {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Busy {
    fn new(conn: &Arc<Conn>, epoch: Instant) -> Busy {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        Busy { conn: Arc::clone(conn), epoch }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.idle_since.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a connection refused at the limit gets before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 50\r\nretry-after: 1\r\n\r\nslipway: too many connections to this entry point\n";

/// Serves an entry point until `stop` turns true. Connections already open finish their
/// requests (graceful shutdown of each connection). `limits` bound what clients may hold.
#[allow(clippy::too_many_arguments)]
pub fn serve(
    listener: std::net::TcpListener,
    env: String,
    routes: Routes,
    preview: bool,
    client: HttpClient,
    limits: Arc<Limits>,
    stats: Arc<ConnStats>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let gate = Arc::new(Gate {
        limits,
        stats,
        epoch: Instant::now(),
        conns: Mutex::default(),
        next: AtomicU64::new(0),
        freed: Default::default(),
    });
    ENTRY_POINTS.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut sweep = tokio::time::interval(Duration::from_millis(100));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut told_full = false;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors (or another transient error): wait
                            // instead of spinning; what is open goes on being served.
                            if !told_full {
                                eprintln!("entry point of `{env}`: cannot accept connections: {e}");
                                told_full = true;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    told_full = false;
                    let mut verdict = gate.admit();
                    let waiting = Instant::now();
                    while verdict == Admit::Wait && waiting.elapsed() < Duration::from_millis(200) {
                        let _ = tokio::time::timeout(Duration::from_millis(20), gate.freed.notified()).await;
                        verdict = gate.admit();
                    }
                    if verdict != Admit::Yes {
                        gate.stats.refused.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.try_write(REFUSED);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let (id, conn_state) = gate.register(std::os::fd::AsRawFd::as_raw_fd(&stream));
                    let (routes, client, env, epoch) = (routes.clone(), client.clone(), env.clone(), gate.epoch);
                    let for_service = Arc::clone(&conn_state);
                    let service = hyper::service::service_fn(move |req| {
                        let busy = Busy::new(&for_service, epoch);
                        let (routes, client, env) = (routes.clone(), client.clone(), env.clone());
                        async move {
                            let resp = forward(req, &env, &routes, preview, &client, peer).await;
                            Ok::<_, std::convert::Infallible>(resp.map(|inner| Guarded { inner, _guard: busy }.boxed()))
                        }
                    });
                    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let header_timeout = Duration::from_millis(gate.limits.header_timeout_ms.load(Ordering::Relaxed));
                    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
                    builder.http2().timer(TokioTimer::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    let gate = Arc::clone(&gate);
                    tokio::spawn(async move {
                        let mut conn = std::pin::pin!(conn);
                        tokio::select! {
                            _ = &mut conn => {}
                            () = conn_state.close.notified() => {}
                        }
                        // Out of the gate before the socket closes (the pinned connection is
                        // dropped when this task ends), so its number is never looked at once
                        // it may belong to another connection.
                        gate.unregister(id);
                    });
                }
                _ = sweep.tick() => gate.sweep(),
                _ = stop.changed() => break,
            }
        }
        drop(listener);
        ENTRY_POINTS.fetch_sub(1, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await;
    });
    Ok(())
}

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

fn text(status: StatusCode, msg: String) -> Response<ProxyBody> {
    let mut r = Response::new(Full::new(Bytes::from(msg)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn forward(
    mut req: Request<Incoming>,
    env: &str,
    routes: &Routes,
    preview: bool,
    client: &HttpClient,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(u) = &upgrade {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u.clone());
    }
    let peer_ip = peer.ip().to_string();
    let forwarded_for = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {peer_ip}"),
        None => peer_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        parts.headers.insert("x-forwarded-for", v);
    }
    parts.headers.entry("x-forwarded-proto").or_insert(HeaderValue::from_static("http"));
    if let Some(host) = parts.headers.get(header::HOST).cloned() {
        parts.headers.entry("x-forwarded-host").or_insert(host);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    if parts.version == hyper::Version::HTTP_2 {
        // Instances speak HTTP/1.1; the authority becomes the Host header.
        if let Some(a) = parts.uri.authority().cloned()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            parts.headers.entry(header::HOST).or_insert(v);
        }
        parts.version = hyper::Version::HTTP_11;
    }
    // A request without a body can be sent again to another instance when the first refuses
    // the connection (it was never delivered).
    let replayable = body.is_end_stream();
    let mut body = Some(body.boxed());
    let mut skip = None;
    for _attempt in 0..3 {
        let Some((backend, stats)) = routes.pick(preview, skip) else {
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("slipway: no healthy instance of `{env}`\n"));
        };
        let mut out = Request::from_parts(parts.clone(), ());
        *out.uri_mut() = match format!("http://{}{path}", backend.addr).parse() {
            Ok(u) => u,
            Err(_) => return text(StatusCode::BAD_REQUEST, "slipway: bad request target\n".into()),
        };
        let b = body.take().unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed());
        let out = out.map(|()| b);
        backend.inflight.fetch_add(1, Ordering::SeqCst);
        let guard = Inflight(Arc::clone(&backend.inflight));
        match client.request(out).await {
            Ok(mut resp) => {
                let status = resp.status();
                stats.record(status.as_u16(), start.elapsed());
                if status == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client_upgrade) = client_upgrade
                {
                    let backend_upgrade = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        let _guard = guard;
                        if let (Ok(a), Ok(b)) = (client_upgrade.await, backend_upgrade.await) {
                            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
                        }
                    });
                    let (parts, _) = resp.into_parts();
                    return Response::from_parts(parts, Empty::new().map_err(|never| match never {}).boxed());
                }
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                return Response::from_parts(rparts, Guarded { inner: rbody, _guard: guard }.boxed());
            }
            Err(e) if e.is_connect() && replayable => {
                skip = Some(backend.addr);
                continue;
            }
            Err(e) => {
                stats.record(502, start.elapsed());
                return text(StatusCode::BAD_GATEWAY, format!("slipway: instance {} failed: {e}\n", backend.addr));
            }
        }
    }
    text(StatusCode::BAD_GATEWAY, format!("slipway: no instance of `{env}` accepted the connection\n"))
}

/// Decrements an instance's in-flight count when the response is done.
struct Inflight(Arc<AtomicU64>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds `guard` until it is fully sent (or dropped): an instance
/// counted as busy, a client connection kept from being closed as idle.
struct Guarded<B, G> {
    inner: B,
    _guard: G,
}

impl<B: Body<Data = Bytes, Error = hyper::Error> + Unpin, G: Unpin> Body for Guarded<B, G> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(weight: u32, port: u16) -> RouteGroup {
        RouteGroup {
            weight,
            preview: false,
            backends: vec![Backend { addr: SocketAddr::from(([127, 0, 0, 1], port)), inflight: Arc::default() }],
            stats: Arc::default(),
            next: Arc::default(),
        }
    }

    #[test]
    fn weights_give_exact_shares_per_hundred_requests() {
        let routes = Routes::default();
        routes.set(RouteTable { groups: vec![group(90, 1), group(10, 2)] });
        let mut canary = 0;
        let mut longest_run = 0;
        let mut run = 0;
        for _ in 0..1000 {
            let (b, _) = routes.pick(false, None).expect("a backend");
            if b.addr.port() == 2 {
                canary += 1;
                run += 1;
                longest_run = longest_run.max(run);
            } else {
                run = 0;
            }
        }
        assert_eq!(canary, 100);
        assert!(longest_run <= 2, "canary requests come in bursts of {longest_run}");
        routes.set(RouteTable { groups: vec![group(0, 1), group(100, 2)] });
        assert!((0..50).all(|_| routes.pick(false, None).expect("a backend").0.addr.port() == 2));
        routes.set(RouteTable::default());
        assert!(routes.pick(false, None).is_none());
    }

    #[test]
    fn a_refused_backend_is_skipped_on_retry() {
        let routes = Routes::default();
        let mut g = group(100, 1);
        g.backends.push(Backend { addr: SocketAddr::from(([127, 0, 0, 1], 2)), inflight: Arc::default() });
        routes.set(RouteTable { groups: vec![g] });
        let skip = Some(SocketAddr::from(([127, 0, 0, 1], 1)));
        assert!((0..10).all(|_| routes.pick(false, skip).expect("a backend").0.addr.port() == 2));
    }
}
