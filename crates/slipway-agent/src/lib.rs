//! `slipway agent`: the long-running process on a host. It supervises the instances of each
//! environment's releases ([`supervisor`]), health-checks them ([`health`]), serves each
//! environment's entry point through a reverse proxy that splits traffic by release
//! ([`proxy`]), and answers the typed API of `slipway-api` on a Unix socket. It keeps its own
//! desired state in `<data-dir>/agent/state.json` (it never opens the store), so a restarted
//! agent brings every environment back: it kills what a crashed predecessor left running
//! (`slipway_sys::process::Records`) and starts the instances afresh.

mod api;
pub mod control;
mod docker;
mod files;
mod health;
mod logs;
mod metrics;
pub mod proxy;
mod supervisor;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use slipway_api::{EnvSpec, EnvStatus};
use slipway_sys::process::Records;
use tokio::sync::{mpsc, oneshot};

pub use supervisor::ApplyError;

/// Where the agent keeps its socket and state.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    /// Also serve `/metrics` over TCP here (the socket always serves it).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

pub use slipway_api::socket_path;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("another agent already runs on {0}")]
    AlreadyRunning(PathBuf),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

fn strip_secrets(spec: &mut EnvSpec) {
    for e in spec.groups.iter_mut().flat_map(|g| g.env_from.iter_mut()) {
        e.value = None;
    }
}

pub(crate) struct Shared {
    envs: Mutex<BTreeMap<String, mpsc::UnboundedSender<supervisor::Cmd>>>,
    specs: Mutex<BTreeMap<String, EnvSpec>>,
    state_file: PathBuf,
    log_dir: PathBuf,
    pids: Records,
    client: proxy::HttpClient,
    started_at_ms: u64,
    /// The label value on this agent's containers (its data directory).
    agent_label: String,
    data_dir: PathBuf,
    /// Serializes changes of one environment at a time (apply, remove) with persisting them.
    change: tokio::sync::Mutex<()>,
}

impl Shared {
    /// An environment's desired state, the values of `env:` secrets left out.
    pub(crate) fn spec(&self, name: &str) -> Option<EnvSpec> {
        let mut spec = self.specs.lock().expect("specs lock").get(name).cloned()?;
        strip_secrets(&mut spec);
        Some(spec)
    }

    fn persist(&self) {
        let mut specs = self.specs.lock().expect("specs lock").clone();
        // Secrets by reference only: values of `env:` sources stay in memory.
        specs.values_mut().for_each(strip_secrets);
        let data = serde_json::to_vec_pretty(&specs).expect("specs serialize");
        if let Err(e) = slipway_sys::private::write_atomic(&self.state_file, &data) {
            tracing::error!(error = %e, file = %self.state_file.display(), "cannot save the agent's state");
        }
    }

    fn supervisor(&self, name: &str) -> mpsc::UnboundedSender<supervisor::Cmd> {
        let mut envs = self.envs.lock().expect("envs lock");
        envs.entry(name.to_string())
            .or_insert_with(|| {
                supervisor::start(
                    name.to_string(),
                    self.log_dir.clone(),
                    self.pids.clone(),
                    self.client.clone(),
                    self.agent_label.clone(),
                )
            })
            .clone()
    }

    pub(crate) async fn apply(&self, name: &str, mut spec: EnvSpec) -> Result<EnvStatus, ApplyError> {
        let _one = self.change.lock().await;
        // A secret that this apply does not carry (its deployer had none for a group already
        // running) keeps the value the agent was given before.
        if let Some(before) = self.specs.lock().expect("specs lock").get(name) {
            for g in &mut spec.groups {
                let Some(old) = before.groups.iter().find(|o| o.release == g.release) else { continue };
                for e in g.env_from.iter_mut().filter(|e| e.value.is_none()) {
                    e.value = old
                        .env_from
                        .iter()
                        .find(|o| o.name == e.name && o.source == e.source)
                        .and_then(|o| o.value.clone());
                }
            }
        }
        let existed = self.envs.lock().expect("envs lock").contains_key(name);
        let sup = self.supervisor(name);
        let (tx, rx) = oneshot::channel();
        let _ = sup.send(supervisor::Cmd::Apply(Box::new(spec.clone()), tx));
        let result = rx.await.unwrap_or_else(|_| Err(ApplyError::Invalid("the supervisor stopped".into())));
        match &result {
            Ok(_) => {
                self.specs.lock().expect("specs lock").insert(name.to_string(), spec);
                self.persist();
            }
            Err(_) if !existed => {
                self.envs.lock().expect("envs lock").remove(name);
                let (tx, rx) = oneshot::channel();
                let _ = sup.send(supervisor::Cmd::Shutdown(tx));
                let _ = rx.await;
            }
            Err(_) => {}
        }
        result
    }

    pub(crate) async fn status(&self, name: &str) -> Option<EnvStatus> {
        let sup = self.envs.lock().expect("envs lock").get(name).cloned()?;
        let (tx, rx) = oneshot::channel();
        sup.send(supervisor::Cmd::Status(tx)).ok()?;
        rx.await.ok()
    }

    pub(crate) async fn all(&self) -> Vec<EnvStatus> {
        let names: Vec<String> = self.envs.lock().expect("envs lock").keys().cloned().collect();
        let mut out = Vec::new();
        for n in names {
            if let Some(s) = self.status(&n).await {
                out.push(s);
            }
        }
        out
    }

    /// Stops an environment's instances (draining them) and forgets it.
    pub(crate) async fn remove(&self, name: &str, forget: bool) -> bool {
        let _one = self.change.lock().await;
        let Some(sup) = self.envs.lock().expect("envs lock").remove(name) else { return false };
        let (tx, rx) = oneshot::channel();
        let _ = sup.send(supervisor::Cmd::Shutdown(tx));
        let _ = rx.await;
        if forget {
            self.specs.lock().expect("specs lock").remove(name);
            self.persist();
        }
        true
    }

    pub(crate) fn log_tail(&self, name: &str, lines: usize) -> String {
        logs::tail(&self.log_dir, name, lines)
    }
}

/// Runs the agent until `shutdown` resolves; then stops every instance (draining them) and
/// removes the socket. The desired state stays on disk for the next start.
pub async fn run(config: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), AgentError> {
    let fixed = slipway_sys::private::ensure(&config.data_dir)
        .map_err(|e| AgentError::Io { what: e.to_string(), source: std::io::Error::other("not private") })?;
    if !fixed.is_empty() {
        tracing::warn!(fixed = fixed.len(), "made the data directory private again (0700, files 0600)");
    }
    let dir = config.data_dir.join("agent");
    let (log_dir, pid_dir) = (dir.join("logs"), dir.join("pids"));
    for d in [&dir, &log_dir, &pid_dir] {
        std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    // One agent per data directory: an exclusive lock held for the agent's life.
    let lock_path = dir.join("lock");
    let lock = std::fs::File::create(&lock_path).map_err(io(format!("creating {}", lock_path.display())))?;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(AgentError::AlreadyRunning(config.data_dir.clone()));
    }
    let open_files = slipway_sys::limits::raise_open_files();
    let budget = proxy::budget_connections(open_files);
    tracing::info!(open_files, client_connections = budget, "connection budget");
    let pids = Records::new(&pid_dir).map_err(io(pid_dir.display().to_string()))?;
    let killed = pids.kill_leftovers();
    if killed > 0 {
        tracing::warn!(killed, "stopped instances a previous agent left running");
    }
    let agent_label = config.data_dir.canonicalize().unwrap_or_else(|_| config.data_dir.clone()).display().to_string();
    if let Ok(d) = docker::connect()
        && d.ping().await.is_ok()
    {
        let removed = docker::remove_leftovers(&d, &agent_label).await;
        if removed > 0 {
            tracing::warn!(removed, "removed containers a previous agent left");
        }
    }
    let state_file = dir.join("state.json");
    let specs: BTreeMap<String, EnvSpec> = match std::fs::read(&state_file) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            // Kept for a look; `slipway agent start` brings environments back from the store.
            let kept = state_file.with_extension("json.unreadable");
            let _ = std::fs::rename(&state_file, &kept);
            tracing::error!(error = %e, file = %state_file.display(), kept = %kept.display(), "unreadable agent state; starting empty");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    };
    let started_at_ms = slipway_model::time::now_ms() as u64;
    let shared = Arc::new(Shared {
        envs: Mutex::default(),
        specs: Mutex::default(),
        state_file,
        log_dir,
        pids,
        client: proxy::client(),
        started_at_ms,
        agent_label,
        data_dir: config.data_dir.clone(),
        change: tokio::sync::Mutex::new(()),
    });
    for (name, spec) in specs {
        if let Err(e) = shared.apply(&name, spec.clone()).await {
            tracing::error!(environment = %name, error = %e, "cannot restore environment");
            // Keep the desired state: a later apply or restart may succeed.
            shared.specs.lock().expect("specs lock").insert(name, spec);
        }
    }

    let socket = socket_path(&config.data_dir);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).map_err(io(format!("listening on {}", socket.display())))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));
    let app = api::router(Arc::clone(&shared));
    if let Some(addr) = config.metrics_listen {
        let tcp = tokio::net::TcpListener::bind(addr).await.map_err(io(format!("listening on {addr}")))?;
        let metrics = api::metrics_router(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(tcp, metrics).await;
        });
    }
    tracing::info!(socket = %socket.display(), "agent ready");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    shutdown.await;
    tracing::info!("agent stopping: draining every instance");
    let _ = stop_tx.send(());
    let _ = server.await;
    let names: Vec<String> = shared.envs.lock().expect("envs lock").keys().cloned().collect();
    for n in names {
        shared.remove(&n, false).await;
    }
    let _ = std::fs::remove_file(&socket);
    drop(lock);
    Ok(())
}
