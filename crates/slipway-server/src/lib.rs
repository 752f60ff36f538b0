//! `slipway server`: watches projects, plans and persists their pipelines with the runner's
//! scheduler ([`pipelines`]), hands their jobs to agents under leases over HTTP ([`api`], the
//! protocol in docs/server.md), and keeps their logs. [`worker`] is the other side of the
//! protocol: what `slipway agent --server URL` runs. The store (SQLite in the data directory,
//! or PostgreSQL) is the only state: a server killed at any moment resumes from it.

pub mod access;
pub mod alerting;
pub mod api;
pub mod client;
pub mod deploys;
pub mod gitops;
pub mod monitor;
pub mod notify;
pub mod pipelines;
pub mod reports;
pub mod schedules;
pub mod secrets;
pub mod tunnel;
pub mod users;
pub mod watch;
pub mod web;
mod webhooks;
pub mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_model::access::AccessConfig;
use slipway_pipeline::plan::Plan;
use slipway_store::{RunId, Store};

pub use access::hash_token;

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://…`; the SQLite store in the data directory when absent.
    pub database_url: Option<String>,
    /// How long an agent holds a job without renewing it.
    pub lease: Duration,
    /// Pipelines that ended longer ago than this are forgotten, with their logs and
    /// artifacts (releases keep naming them); `None` keeps them all.
    pub retention: Option<Duration>,
    /// Roles, groups, bindings and protected environments (docs/access.md); the built-in
    /// roles and no bindings when absent.
    pub access: AccessConfig,
    /// The server's own rule files (docs/monitoring.md), besides the projects' `alerts:`.
    pub rules: slipway_monitor::rules::RuleFile,
    /// How often series are collected and rules evaluated.
    pub monitor_interval: Duration,
    /// How often a GitOps application is looked at without a webhook.
    pub gitops_interval: Duration,
    /// A push makes every application of the repository look, not only those whose file changed.
    pub gitops_refresh_all: bool,
    /// How long collected series are kept.
    pub metrics_retention: Duration,
    /// Receivers, routes and Alertmanagers (docs/monitoring.md); nothing is sent when empty.
    pub notify: slipway_monitor::channels::NotifyConfig,
    /// Where people reach the server, for links (default `http://LISTEN`).
    pub external_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Input(String, Option<String>),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("git: {0}")]
    Git(String),
    #[error("the pipeline does not plan: {0}")]
    Plan(String),
    #[error(transparent)]
    Store(#[from] slipway_store::StoreError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// What every handler and background task shares.
pub struct State {
    pub store: Store,
    pub data_dir: PathBuf,
    pub lease: Duration,
    pub retention: Option<Duration>,
    /// Plans of running pipelines (made again from their commit after a restart).
    pub(crate) plans: Mutex<HashMap<RunId, Arc<Plan>>>,
    /// One scheduler transition at a time.
    driving: tokio::sync::Mutex<()>,
    /// One planning checkout at a time.
    pub(crate) planning: tokio::sync::Mutex<()>,
    /// One pipeline start at a time (a recorded pipeline gets its jobs once).
    starting: tokio::sync::Mutex<()>,
    /// A job became claimable: wakes agents waiting in a long-poll.
    work: tokio::sync::Notify,
    /// When each polled project was last looked at.
    polled: Mutex<HashMap<String, i64>>,
    pub(crate) counters: Counters,
    /// The links of agents connected to host environments.
    pub(crate) tunnels: Arc<tunnel::Tunnels>,
    access: std::sync::RwLock<Arc<AccessConfig>>,
    /// Failed sign-ins, per user and per address.
    pub(crate) throttle: access::Throttle,
    /// The keys secrets are sealed with.
    pub(crate) vault: secrets::Vault,
    /// Series, rules and alerts.
    pub(crate) monitor: monitor::Monitor,
    /// Routes, silences and the delivery queue's sender.
    pub(crate) notifier: notify::Notifier,
    /// The job agents that asked for work since the server started (`name@token-user`).
    pub(crate) agents_seen: Mutex<HashMap<String, AgentSeen>>,
    /// Each environment's last rollout as the engine told it, for the dashboard.
    pub(crate) rollouts: Mutex<HashMap<String, deploys::Rollout>>,
    /// GitOps: applications to look at now, self-heal's back-off.
    pub(crate) reconciler: gitops::Reconciler,
}

/// A job agent as the server last heard from it.
#[derive(Debug, Clone)]
pub(crate) struct AgentSeen {
    pub tags: Vec<String>,
    pub version: Option<String>,
    /// When it last asked for a job or renewed one's lease (Unix ms).
    pub last_ms: i64,
    /// Waiting in a long-poll now.
    pub waiting: bool,
}

impl State {
    /// The access rules in effect.
    pub fn access(&self) -> Arc<AccessConfig> {
        Arc::clone(&self.access.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What the server counts in memory for `/metrics` (the store counts the rest).
#[derive(Default)]
pub(crate) struct Counters {
    pub webhooks_accepted: std::sync::atomic::AtomicU64,
    pub webhooks_rejected: std::sync::atomic::AtomicU64,
    pub webhooks_replayed: std::sync::atomic::AtomicU64,
    pub claims: std::sync::atomic::AtomicU64,
    /// Agents waiting in a long-poll now.
    pub waiting: std::sync::atomic::AtomicI64,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    /// The admin token made at the first start, to show once; `None` afterwards.
    pub admin_token: Option<String>,
    pub state: Arc<State>,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Opens the store (migrating it), makes the admin token on the first start, binds.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let io = |what: String| move |source| ServerError::Io { what, source };
        std::fs::create_dir_all(&config.data_dir).map_err(io(config.data_dir.display().to_string()))?;
        let store = match &config.database_url {
            Some(url) => Store::connect(url).await?,
            None => Store::open(&config.data_dir).await?,
        };
        // The first start makes the `admin` user (no password: it signs in with this token,
        // and may set one) with the `admin` role on every project.
        let admin_token = match store.has_users().await? {
            true => None,
            false => {
                let token = new_token()?;
                store.add_user("admin", None, "slipway").await?;
                store
                    .add_binding(&slipway_store::BindingRow {
                        user: "admin".into(),
                        role: "admin".into(),
                        project: None,
                        created_by: "slipway".into(),
                    })
                    .await?;
                store
                    .add_token(&slipway_store::NewToken {
                        hash: hash_token(&token),
                        name: "admin (first start)".into(),
                        kind: slipway_store::TokenKind::User,
                        user: Some("admin".into()),
                        scopes: None,
                        agent: None,
                        expires_at_ms: None,
                    })
                    .await?;
                Some(token)
            }
        };
        let vault = secrets::Vault::open(&config.data_dir)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("listening on {}", config.listen)))?;
        let addr = listener.local_addr().map_err(io("the listening address".into()))?;
        let state = Arc::new(State {
            store,
            data_dir: config.data_dir.clone(),
            lease: config.lease,
            retention: config.retention,
            plans: Mutex::default(),
            agents_seen: Mutex::default(),
            rollouts: Mutex::default(),
            reconciler: gitops::Reconciler::new(config.gitops_interval, config.gitops_refresh_all),
            driving: tokio::sync::Mutex::new(()),
            planning: tokio::sync::Mutex::new(()),
            starting: tokio::sync::Mutex::new(()),
            work: tokio::sync::Notify::new(),
            polled: Mutex::default(),
            counters: Counters::default(),
            tunnels: Arc::new(tunnel::Tunnels::new(config.data_dir.clone())),
            access: std::sync::RwLock::new(Arc::new(config.access.clone())),
            throttle: access::Throttle::default(),
            vault,
            monitor: monitor::Monitor::new(config.rules.clone(), config.monitor_interval, config.metrics_retention),
            notifier: notify::Notifier::new(
                config.notify.clone(),
                config
                    .external_url
                    .clone()
                    .map(|u| u.trim_end_matches('/').to_string())
                    .unwrap_or_else(|| format!("http://{addr}")),
            ),
        });
        notify::restore(&state).await?;
        monitor::load(&state);
        Ok(Server { addr, admin_token, state, listener })
    }

    /// Serves until `shutdown` resolves: resumes the pipelines a previous server left
    /// running, puts jobs whose agents stopped renewing back in the queue.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = Arc::clone(&self.state);
        for run in state.store.running_runs().await? {
            // Recorded but not planned when the last server stopped: planned now.
            if state.store.jobs(run.id).await?.is_empty() {
                let s = Arc::clone(&state);
                tokio::spawn(async move {
                    if let Err(e) = pipelines::start(&s, run.id).await {
                        tracing::error!(pipeline = run.id, error = %e, "cannot start the recorded pipeline");
                    }
                });
                continue;
            }
            if let Err(e) = pipelines::drive(&state, run.id, pipelines::Event::Reconcile).await {
                tracing::error!(pipeline = run.id, error = %e, "cannot resume pipeline");
            }
        }
        // Background work in three loops, each step a task of its own: a step that panics or
        // hangs is reported and the loop goes on (it is what requeues and reconciles).
        let leases = every(&state, Duration::from_millis(500), "requeue lost jobs", |s, _| async move {
            pipelines::lost_jobs(&s).await;
        });
        let upkeep = every(&state, Duration::from_secs(10), "reconcile and retire", |s, tick| async move {
            // Job ends the store has and a pipeline missed (a transition lost to a database
            // outage) are taken in; pipelines past the retention are forgotten; expired
            // artifacts go once a minute.
            pipelines::reconcile_all(&s).await;
            deploys::retire(&s).await;
            // The series go to disk every 5 minutes.
            if tick % 30 == 0 {
                monitor::save(&s).await;
            }
            if tick % 6 == 1 {
                deploys::sweep(&s).await;
                // The delivery log keeps a week.
                let _ = s.store.prune_deliveries(slipway_model::time::now_ms() - 7 * 86_400_000).await;
            }
        });
        let poller = every(&state, Duration::from_millis(500), "poll and schedule", |s, _| async move {
            webhooks::poll_once(&s).await;
            schedules::tick(&s).await;
        });
        let watch =
            every(&state, state.monitor.interval, "collect series and evaluate alert rules", |s, _| async move {
                monitor::tick(&s).await;
            });
        let deliveries = tokio::spawn(notify::deliver_loop(Arc::clone(&state)));
        let gitops = every(&state, Duration::from_millis(500), "reconcile GitOps applications", |s, _| async move {
            gitops::tick(&s).await;
        });
        let app = api::router(Arc::clone(&state));
        // Small writes go out at once (the agents' tunnels carry many), and a peer that went
        // away without a word is noticed: keepalives after 10 s idle, 3 probes 3 s apart.
        use axum::serve::ListenerExt;
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(10))
                .with_interval(Duration::from_secs(3))
                .with_retries(3);
            let _ = socket2::SockRef::from(&*tcp).set_tcp_keepalive(&keepalive);
        });
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let r = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        leases.abort();
        upkeep.abort();
        poller.abort();
        watch.abort();
        deliveries.abort();
        gitops.abort();
        monitor::save(&state).await;
        r.map_err(|source| ServerError::Io { what: "serving".into(), source })
    }
}

/// Runs `step` every `period` (its `tick` counts from 1), each run a task of its own with a
/// deadline: a step that panics or hangs is logged, and the next one runs.
fn every<F, Fut>(state: &Arc<State>, period: Duration, what: &'static str, step: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Arc<State>, u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut tick: u64 = 0;
        loop {
            tokio::time::sleep(period).await;
            tick += 1;
            let run = tokio::spawn(step(Arc::clone(&state), tick));
            match tokio::time::timeout(Duration::from_secs(300), run).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "background step `{what}` failed; it runs again"),
                Err(_) => tracing::error!("background step `{what}` took over 5 minutes; it runs again"),
            }
        }
    })
}

/// A new random token (32 bytes, hex, prefixed so it is recognisable in a leak scan).
pub fn new_token() -> Result<String, ServerError> {
    let hex = slipway_sys::whoami::random_hex(32)
        .map_err(|source| ServerError::Io { what: "/dev/urandom".into(), source })?;
    Ok(format!("slw_{hex}"))
}
