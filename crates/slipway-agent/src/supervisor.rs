//! One environment's supervisor: a task that alone owns the environment's instances and
//! reacts to a closed set of events (a new desired state, an exit, a probe result, a tick).
//! It starts and stops instances to match the desired counts, health-checks them, restarts
//! crashed ones with back-off, drains the ones it removes, and publishes the route table the
//! proxy reads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use slipway_api::{EnvSpec, EnvStatus, GroupSpec, GroupStatus, InstanceState, InstanceStatus, ProbeSpec};
use tokio::sync::{mpsc, oneshot, watch};

use crate::proxy::{self, Backend, HttpClient, RouteGroup, RouteTable, Routes, Stats};
use slipway_sys::process::{self as sys, Records};

use crate::{health, logs};

/// Starting instances are probed this often (or at the health interval, if shorter), so a
/// rollout moves on as soon as an instance answers.
const STARTING_PROBE: Duration = Duration::from_millis(100);
/// How long an instance stays out of the route table before its in-flight count is trusted
/// (a request may have picked it just before the table changed).
const DRAIN_SETTLE: Duration = Duration::from_millis(250);
const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

pub enum Cmd {
    Apply(Box<EnvSpec>, oneshot::Sender<Result<EnvStatus, ApplyError>>),
    Status(oneshot::Sender<EnvStatus>),
    /// Stop everything (draining first); answers when nothing runs any more.
    Shutdown(oneshot::Sender<()>),
}

enum Ev {
    Exited {
        id: u64,
        how: String,
    },
    /// A container instance is running.
    Started {
        id: u64,
        container: String,
    },
    Probed {
        id: u64,
        result: Result<(), String>,
    },
}

struct Instance {
    id: u64,
    release: i64,
    version: String,
    port: u16,
    pid: Option<u32>,
    /// A container instance: its ID once started (empty while it starts).
    container: Option<String>,
    container_name: Option<String>,
    state: InstanceState,
    restarts: u32,
    crashes_in_a_row: u32,
    passes: u32,
    fails: u32,
    last_error: Option<String>,
    /// Its last lines of output, quoted when it crashes.
    recent: logs::Recent,
    next_probe: Instant,
    probing: bool,
    restart_at: Option<Instant>,
    /// Set once the instance is out of traffic: when it was taken out, and its deadline.
    drain: Option<(Instant, Instant)>,
    /// SIGTERM sent; SIGKILL at this instant.
    kill_at: Option<Instant>,
    /// Since when (Unix ms) it is in `state`.
    since: u64,
    /// Being restarted for failing its health checks: SIGKILL at this instant, and why.
    liveness: Option<(Instant, String)>,
    inflight: Arc<std::sync::atomic::AtomicU64>,
}

pub struct Supervisor {
    name: String,
    spec: Option<EnvSpec>,
    instances: Vec<Instance>,
    stats: HashMap<i64, Arc<Stats>>,
    next_id: u64,
    routes: Routes,
    preview_routes: Routes,
    /// The bounds on client connections, shared by both entry points.
    limits: Arc<proxy::Limits>,
    conn_stats: Arc<proxy::ConnStats>,
    preview_conn_stats: Arc<proxy::ConnStats>,
    listener: Option<(String, watch::Sender<bool>)>,
    preview_listener: Option<(String, watch::Sender<bool>)>,
    client: HttpClient,
    log: logs::LogSink,
    log_path: PathBuf,
    pids: Records,
    events_tx: mpsc::UnboundedSender<Ev>,
    shutdown: Vec<oneshot::Sender<()>>,
    /// The Docker Engine, connected when a group first runs containers.
    docker: Option<bollard::Docker>,
    /// The label value marking this agent's containers.
    agent_label: String,
}

impl Instance {
    fn alive(&self) -> bool {
        self.pid.is_some() || self.container.is_some()
    }
}

/// Starts the supervisor task of an environment.
pub fn start(
    name: String,
    log_dir: PathBuf,
    pids: Records,
    client: HttpClient,
    agent_label: String,
) -> mpsc::UnboundedSender<Cmd> {
    let (tx, mut cmds) = mpsc::unbounded_channel();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let log_path = logs::path(&log_dir, &name);
    let mut s = Supervisor {
        log: logs::writer(log_path.clone()),
        log_path,
        name,
        spec: None,
        instances: Vec::new(),
        stats: HashMap::new(),
        next_id: 1,
        routes: Routes::default(),
        preview_routes: Routes::default(),
        limits: Arc::default(),
        conn_stats: Arc::default(),
        preview_conn_stats: Arc::default(),
        listener: None,
        preview_listener: None,
        client,
        pids,
        events_tx,
        shutdown: Vec::new(),
        docker: None,
        agent_label,
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Apply(spec, reply)) => {
                        let r = s.apply(*spec);
                        let _ = reply.send(r.map(|()| s.status()));
                    }
                    Some(Cmd::Status(reply)) => { let _ = reply.send(s.status()); }
                    Some(Cmd::Shutdown(reply)) => {
                        s.spec = Some(EnvSpec { groups: Vec::new(), ..s.spec.clone().unwrap_or_else(empty_spec) });
                        s.shutdown.push(reply);
                    }
                    None => break,
                },
                Some(ev) = events.recv() => s.on_event(ev),
                _ = tick.tick() => {}
            }
            s.reconcile();
            if !s.shutdown.is_empty() && s.instances.is_empty() {
                s.close_listeners();
                for r in s.shutdown.drain(..) {
                    let _ = r.send(());
                }
                break;
            }
        }
    });
    tx
}

fn empty_spec() -> EnvSpec {
    EnvSpec {
        listen: String::new(),
        preview_listen: None,
        health: slipway_api::HealthSpec {
            probe: ProbeSpec::Tcp,
            interval_ms: 1000,
            timeout_ms: 1000,
            successes: 1,
            failures: 3,
            restart_after_ms: None,
        },
        stop_grace_ms: 10_000,
        drain_timeout_ms: 30_000,
        groups: Vec::new(),
        proxy: Default::default(),
    }
}

fn bind(addr: &str) -> Result<std::net::TcpListener, ApplyError> {
    let parsed: std::net::SocketAddr =
        addr.parse().map_err(|_| ApplyError::Invalid(format!("`{addr}` is not an address with a port")))?;
    // SO_REUSEADDR, as every server sets, so an entry point can be re-bound right after it closed.
    let socket = if parsed.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(|source| ApplyError::Listen { addr: addr.into(), source })?;
    socket.set_reuseaddr(true).map_err(|source| ApplyError::Listen { addr: addr.into(), source })?;
    socket.bind(parsed).map_err(|source| ApplyError::Listen { addr: addr.into(), source })?;
    let l = socket.listen(1024).map_err(|source| ApplyError::Listen { addr: addr.into(), source })?;
    l.into_std().map_err(|source| ApplyError::Listen { addr: addr.into(), source })
}

impl Supervisor {
    fn apply(&mut self, spec: EnvSpec) -> Result<(), ApplyError> {
        let mut releases = std::collections::HashSet::new();
        for g in &spec.groups {
            if g.container.is_none() && (g.command.is_empty() || g.command[0].is_empty()) {
                return Err(ApplyError::Invalid(format!("release {} has no command", g.release)));
            }
            if !releases.insert(g.release) {
                return Err(ApplyError::Invalid(format!("release {} is listed twice", g.release)));
            }
        }
        // Bind new entry points before changing anything, so a taken port changes nothing.
        let new_main = match &self.listener {
            Some((addr, _)) if *addr == spec.listen => None,
            _ => Some(bind(&spec.listen)?),
        };
        let new_preview = match (&spec.preview_listen, &self.preview_listener) {
            (Some(p), Some((addr, _))) if p == addr => None,
            (Some(p), _) => Some(bind(p)?),
            (None, _) => None,
        };
        self.limits.set(&spec.proxy);
        if let Some(l) = new_main {
            let (tx, rx) = watch::channel(false);
            let (limits, stats) = (Arc::clone(&self.limits), Arc::clone(&self.conn_stats));
            proxy::serve(l, self.name.clone(), self.routes.clone(), false, self.client.clone(), limits, stats, rx)
                .map_err(|source| ApplyError::Listen { addr: spec.listen.clone(), source })?;
            if let Some((_, old)) = self.listener.replace((spec.listen.clone(), tx)) {
                let _ = old.send(true);
            }
        }
        if let Some(l) = new_preview {
            let (tx, rx) = watch::channel(false);
            let addr = spec.preview_listen.clone().unwrap_or_default();
            let (limits, stats) = (Arc::clone(&self.limits), Arc::clone(&self.preview_conn_stats));
            proxy::serve(
                l,
                self.name.clone(),
                self.preview_routes.clone(),
                true,
                self.client.clone(),
                limits,
                stats,
                rx,
            )
            .map_err(|source| ApplyError::Listen { addr: addr.clone(), source })?;
            if let Some((_, old)) = self.preview_listener.replace((addr, tx)) {
                let _ = old.send(true);
            }
        }
        if spec.preview_listen.is_none()
            && let Some((_, old)) = self.preview_listener.take()
        {
            let _ = old.send(true);
        }
        for g in &spec.groups {
            self.stats.entry(g.release).or_default();
        }
        self.spec = Some(spec);
        Ok(())
    }

    fn close_listeners(&mut self) {
        for (_, tx) in self.listener.take().into_iter().chain(self.preview_listener.take()) {
            let _ = tx.send(true);
        }
    }

    fn group_spec(&self, release: i64) -> Option<&GroupSpec> {
        self.spec.as_ref()?.groups.iter().find(|g| g.release == release)
    }

    fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Started { id, container } => {
                if let Some(inst) = self.instances.iter_mut().find(|i| i.id == id) {
                    inst.container = Some(container);
                }
            }
            Ev::Exited { id, how } => {
                let Some(i) = self.instances.iter().position(|i| i.id == id) else { return };
                let inst = &mut self.instances[i];
                if let Some(pid) = inst.pid.take() {
                    sys::signal_group(pid, sys::SIGKILL);
                    self.pids.forget(pid);
                }
                inst.container = None;
                // Stopped for failing its checks: a crash of its own kind, restarted the same way.
                let how = match inst.liveness.take() {
                    Some((_, why)) => why,
                    None => how,
                };
                if inst.kill_at.is_some() || inst.drain.is_some() {
                    self.log.note(format!("{}#{} | slipway: stopped ({how})\n", inst.version, inst.id));
                    self.instances.remove(i);
                    return;
                }
                set_state(inst, InstanceState::Crashed);
                inst.restarts += 1;
                inst.crashes_in_a_row += 1;
                inst.passes = 0;
                inst.probing = false;
                // What it said last is usually why it died.
                let said = inst.recent.lines();
                inst.last_error = Some(match said.is_empty() {
                    true => how.clone(),
                    false => format!("{how}; its last output: {}", said.join(" ⏎ ")),
                });
                let backoff =
                    Duration::from_millis(250 * (1u64 << inst.crashes_in_a_row.min(7))).min(Duration::from_secs(30));
                inst.restart_at = Some(Instant::now() + backoff);
                self.log.note(format!("{}#{} | slipway: {how}; restarting in {backoff:?}\n", inst.version, inst.id));
            }
            Ev::Probed { id, result } => {
                let Some(spec) = self.spec.as_ref() else { return };
                let (successes, failures, interval) =
                    (spec.health.successes, spec.health.failures, Duration::from_millis(spec.health.interval_ms));
                let restart_after = spec.health.restart_after_ms;
                let grace = Duration::from_millis(spec.stop_grace_ms);
                let docker = self.docker.clone();
                let Some(inst) = self.instances.iter_mut().find(|i| i.id == id) else { return };
                inst.probing = false;
                if !inst.alive() || inst.drain.is_some() {
                    return;
                }
                match result {
                    Ok(()) => {
                        inst.passes += 1;
                        inst.fails = 0;
                        if inst.passes >= successes && inst.state != InstanceState::Healthy {
                            set_state(inst, InstanceState::Healthy);
                            inst.last_error = None;
                        }
                        // Healthy for a while: the next crash is restarted at once again.
                        if inst.state == InstanceState::Healthy
                            && now_ms().saturating_sub(inst.since) >= BACKOFF_RESET.as_millis() as u64
                        {
                            inst.crashes_in_a_row = 0;
                        }
                    }
                    Err(e) => {
                        inst.fails += 1;
                        inst.passes = 0;
                        inst.last_error = Some(e);
                        if inst.state == InstanceState::Healthy && inst.fails >= failures {
                            set_state(inst, InstanceState::Unhealthy);
                            self.log.note(format!(
                                "{}#{} | slipway: unhealthy ({}); out of traffic\n",
                                inst.version,
                                inst.id,
                                inst.last_error.as_deref().unwrap_or("")
                            ));
                        }
                        // A liveness probe: unhealthy for `restart_after` → restarted.
                        let unhealthy_ms = now_ms().saturating_sub(inst.since);
                        if inst.state == InstanceState::Unhealthy
                            && inst.liveness.is_none()
                            && restart_after.is_some_and(|after| unhealthy_ms >= after)
                        {
                            let why = format!(
                                "restarted: unhealthy for {:.0}s ({})",
                                unhealthy_ms as f64 / 1000.0,
                                inst.last_error.as_deref().unwrap_or("failing its health check")
                            );
                            self.log.note(format!("{}#{} | slipway: {why}\n", inst.version, inst.id));
                            match (&inst.container, docker) {
                                (Some(c), Some(d)) if !c.is_empty() => {
                                    crate::docker::stop(d, c.clone(), grace.as_secs() as i64)
                                }
                                _ => {
                                    if let Some(pid) = inst.pid {
                                        sys::signal_group(pid, sys::SIGTERM);
                                    }
                                }
                            }
                            inst.liveness = Some((Instant::now() + grace, why));
                        }
                    }
                }
                let every = if inst.state == InstanceState::Starting { interval.min(STARTING_PROBE) } else { interval };
                inst.next_probe = Instant::now() + every;
            }
        }
    }

    /// Brings the instances one step closer to the desired state and republishes routes.
    fn reconcile(&mut self) {
        let now = Instant::now();
        let Some(mut spec) = self.spec.clone() else { return };
        // Groups past their retirement leave on their own (kept in the spec until replaced).
        let wall = slipway_model::time::now_ms() as u64;
        for g in &mut spec.groups {
            if g.retire_at_ms.is_some_and(|t| wall >= t) {
                g.instances = 0;
                g.weight = 0;
                g.preview = false;
            }
        }
        let drain_timeout = Duration::from_millis(spec.drain_timeout_ms);
        // Remove what is no longer wanted: whole releases, then surplus instances.
        for g in &spec.groups {
            let live: Vec<usize> = (0..self.instances.len())
                .filter(|&i| self.instances[i].release == g.release && self.instances[i].drain.is_none())
                .collect();
            if live.len() as u32 > g.instances {
                let mut order = live;
                // Least useful first: crashed, starting, unhealthy, then the newest healthy.
                order.sort_by_key(|&i| {
                    let inst = &self.instances[i];
                    let rank = match inst.state {
                        InstanceState::Crashed => 0,
                        InstanceState::Starting => 1,
                        InstanceState::Unhealthy => 2,
                        _ => 3,
                    };
                    (rank, std::cmp::Reverse(inst.id))
                });
                let surplus = order.len() - g.instances as usize;
                for &i in &order[..surplus] {
                    self.instances[i].drain = Some((now, now + drain_timeout));
                }
            }
        }
        for inst in &mut self.instances {
            if inst.drain.is_none() && !spec.groups.iter().any(|g| g.release == inst.release) {
                inst.drain = Some((now, now + drain_timeout));
            }
        }
        // Start what is missing.
        for g in &spec.groups {
            let live = self.instances.iter().filter(|i| i.release == g.release && i.drain.is_none()).count() as u32;
            for _ in live..g.instances {
                self.spawn_new(g);
            }
        }
        // Draining → stopping → gone.
        let grace = Duration::from_millis(spec.stop_grace_ms);
        let mut gone = Vec::new();
        for inst in &mut self.instances {
            let Some((since, deadline)) = inst.drain else { continue };
            if !inst.alive() {
                gone.push(inst.id);
                continue;
            }
            if inst.kill_at.is_none() {
                let idle = inst.inflight.load(Ordering::SeqCst) == 0;
                if now >= since + DRAIN_SETTLE && (idle || now >= deadline) {
                    match (&inst.container, &self.docker) {
                        (Some(c), Some(d)) if !c.is_empty() => {
                            crate::docker::stop(d.clone(), c.clone(), grace.as_secs() as i64);
                            inst.kill_at = Some(now + grace + Duration::from_secs(5));
                        }
                        (Some(_), _) => continue, // still starting: stop it once it runs
                        _ => {
                            sys::signal_group(inst.pid.unwrap_or(0), sys::SIGTERM);
                            inst.kill_at = Some(now + grace);
                        }
                    }
                    set_state(inst, InstanceState::Draining);
                } else {
                    set_state(inst, InstanceState::Draining);
                }
            } else if inst.kill_at.is_some_and(|k| now >= k) {
                match (&inst.container, &self.docker) {
                    (Some(c), Some(d)) => crate::docker::stop(d.clone(), c.clone(), 0),
                    _ => {
                        sys::signal_group(inst.pid.unwrap_or(0), sys::SIGKILL);
                    }
                }
            }
        }
        self.instances.retain(|i| !gone.contains(&i.id));
        // Restarts and probes.
        for idx in 0..self.instances.len() {
            let inst = &self.instances[idx];
            if inst.drain.is_some() {
                continue;
            }
            if inst.state == InstanceState::Crashed && inst.restart_at.is_some_and(|t| now >= t) {
                let Some(g) = self.group_spec(inst.release).cloned() else { continue };
                self.restart(idx, &g);
                continue;
            }
            let inst = &mut self.instances[idx];
            if let Some((kill_at, _)) = &inst.liveness {
                if now >= *kill_at
                    && let Some(pid) = inst.pid
                {
                    sys::signal_group(pid, sys::SIGKILL);
                }
                continue;
            }
            if inst.container.as_deref() != Some("") && inst.alive() && !inst.probing && now >= inst.next_probe {
                inst.probing = true;
                let (id, port, tx) = (inst.id, inst.port, self.events_tx.clone());
                let probe = spec.health.probe.clone();
                let timeout = Duration::from_millis(spec.health.timeout_ms);
                tokio::spawn(async move {
                    let result = health::probe(&probe, port, timeout).await;
                    let _ = tx.send(Ev::Probed { id, result });
                });
            }
        }
        self.publish_routes(&spec);
        self.stats.retain(|r, _| {
            spec.groups.iter().any(|g| g.release == *r) || self.instances.iter().any(|i| i.release == *r)
        });
    }

    fn publish_routes(&self, spec: &EnvSpec) {
        let groups: Vec<RouteGroup> = spec
            .groups
            .iter()
            .map(|g| RouteGroup {
                weight: g.weight,
                preview: g.preview,
                backends: self
                    .instances
                    .iter()
                    .filter(|i| i.release == g.release && i.drain.is_none() && i.state == InstanceState::Healthy)
                    .map(|i| Backend {
                        addr: std::net::SocketAddr::from(([127, 0, 0, 1], i.port)),
                        inflight: Arc::clone(&i.inflight),
                    })
                    .collect(),
                stats: self.stats.get(&g.release).cloned().unwrap_or_default(),
                next: Arc::default(),
            })
            .collect();
        self.routes.set(RouteTable { groups: groups.clone() });
        self.preview_routes.set(RouteTable { groups });
    }

    fn spawn_new(&mut self, g: &GroupSpec) {
        let id = self.next_id;
        self.next_id += 1;
        let port = free_port().unwrap_or(0);
        self.instances.push(Instance {
            id,
            release: g.release,
            version: g.version.clone(),
            port,
            pid: None,
            container: None,
            container_name: None,
            state: InstanceState::Starting,
            restarts: 0,
            crashes_in_a_row: 0,
            passes: 0,
            fails: 0,
            last_error: None,
            recent: logs::Recent::default(),
            next_probe: Instant::now(),
            probing: false,
            restart_at: None,
            drain: None,
            kill_at: None,
            since: now_ms(),
            liveness: None,
            inflight: Arc::default(),
        });
        let idx = self.instances.len() - 1;
        self.launch(idx, g);
    }

    fn restart(&mut self, idx: usize, g: &GroupSpec) {
        let inst = &mut self.instances[idx];
        inst.restart_at = None;
        set_state(inst, InstanceState::Starting);
        inst.passes = 0;
        inst.fails = 0;
        self.launch(idx, g);
    }

    fn launch(&mut self, idx: usize, g: &GroupSpec) {
        if g.container.is_some() {
            return self.launch_container(idx, g);
        }
        let inst = &mut self.instances[idx];
        let port = inst.port.to_string();
        let prefix = format!("{}#{}", inst.version, inst.id);
        inst.recent = logs::Recent::default();
        let vars = match instance_env(&self.name, g, inst.id, inst.port) {
            Ok(v) => v,
            Err(how) => {
                self.log.note(format!("{prefix} | slipway: {how}\n"));
                let _ = self.events_tx.send(Ev::Exited { id: inst.id, how });
                return;
            }
        };
        let args: Vec<String> = g.command[1..].iter().map(|a| a.replace("{{port}}", &port)).collect();
        let mut cmd = tokio::process::Command::new(&g.command[0]);
        cmd.args(&args)
            .envs(vars)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        if let Some(w) = &g.workdir {
            cmd.current_dir(w);
        }
        inst.next_probe = Instant::now() + Duration::from_millis(20);
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                inst.pid = Some(pid);
                self.pids.remember(pid);
                let mut pumps = Vec::new();
                if let Some(out) = child.stdout.take() {
                    pumps.push(logs::pump(out, prefix.clone(), self.log.clone(), inst.recent.clone()));
                }
                if let Some(err) = child.stderr.take() {
                    pumps.push(logs::pump(err, prefix.clone(), self.log.clone(), inst.recent.clone()));
                }
                self.log.note(format!("{prefix} | slipway: started pid {pid} on port {port}\n"));
                let (tx, id) = (self.events_tx.clone(), inst.id);
                tokio::spawn(async move {
                    let how = match child.wait().await {
                        Ok(st) => match (st.code(), std::os::unix::process::ExitStatusExt::signal(&st)) {
                            (Some(c), _) => format!("exited with {c}"),
                            (_, Some(s)) => format!("killed by signal {s}"),
                            _ => "exited".into(),
                        },
                        Err(e) => format!("lost: {e}"),
                    };
                    // What it wrote last is read before its exit is told (it is usually why
                    // it died); a child of it that keeps the pipes open is not waited for long.
                    let drained = async {
                        for p in pumps {
                            let _ = p.await;
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_millis(500), drained).await;
                    let _ = tx.send(Ev::Exited { id, how });
                });
            }
            Err(e) => {
                let how = format!("cannot start `{}`: {e}", g.command[0]);
                self.log.note(format!("{prefix} | slipway: {how}\n"));
                let _ = self.events_tx.send(Ev::Exited { id: inst.id, how });
            }
        }
    }

    fn launch_container(&mut self, idx: usize, g: &GroupSpec) {
        let spec = g.container.clone().expect("a container group");
        if self.docker.is_none() {
            match crate::docker::connect() {
                Ok(d) => self.docker = Some(d),
                Err(e) => {
                    let id = self.instances[idx].id;
                    let _ = self.events_tx.send(Ev::Exited { id, how: e });
                    return;
                }
            }
        }
        let docker = self.docker.clone().expect("connected above");
        let grace = self.spec.as_ref().map_or(10, |s| (s.stop_grace_ms / 1000).max(1) as i64);
        let inst = &mut self.instances[idx];
        let port = inst.port.to_string();
        let prefix = format!("{}#{}", inst.version, inst.id);
        let clean = |s: &str| {
            s.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect::<String>()
        };
        // Container names are global to the engine: the agent's own tag keeps two data
        // directories (two agents) apart.
        let tag = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.agent_label.hash(&mut h);
            format!("{:08x}", h.finish() as u32)
        };
        let name = format!("slipway-{}-{}-{}-{tag}", clean(&self.name), clean(&inst.version), inst.id);
        inst.container = Some(String::new());
        inst.container_name = Some(name.clone());
        inst.next_probe = Instant::now() + Duration::from_millis(20);
        let env: Vec<String> = match instance_env(&self.name, g, inst.id, inst.port) {
            Ok(v) => v.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            Err(how) => {
                let prefix = format!("{}#{}", inst.version, inst.id);
                self.log.note(format!("{prefix} | slipway: {how}\n"));
                let _ = self.events_tx.send(Ev::Exited { id: inst.id, how });
                return;
            }
        };
        let labels = std::collections::HashMap::from([
            (crate::docker::LABEL_AGENT.to_string(), self.agent_label.clone()),
            ("dev.slipway.environment".to_string(), self.name.clone()),
            ("dev.slipway.release".to_string(), g.release.to_string()),
            ("dev.slipway.version".to_string(), g.version.clone()),
            ("dev.slipway.instance".to_string(), inst.id.to_string()),
        ]);
        let launch = crate::docker::Launch {
            name: name.clone(),
            spec,
            args: g.command.iter().map(|a| a.replace("{{port}}", &port)).collect(),
            env,
            workdir: g.workdir.clone(),
            labels,
            stop_grace_secs: grace,
        };
        inst.recent = logs::Recent::default();
        let (tx, id, log, recent) = (self.events_tx.clone(), inst.id, self.log.clone(), inst.recent.clone());
        tokio::spawn(async move {
            match crate::docker::start(&docker, launch).await {
                Ok(cid) => {
                    log.note(format!("{prefix} | slipway: started container {name} on port {port}\n"));
                    crate::docker::pump_logs(docker.clone(), cid.clone(), prefix, log, recent);
                    let _ = tx.send(Ev::Started { id, container: cid.clone() });
                    let how = crate::docker::wait(&docker, &cid).await;
                    let _ = tx.send(Ev::Exited { id, how });
                }
                Err(e) => {
                    log.note(format!("{prefix} | slipway: {e}\n"));
                    let _ = tx.send(Ev::Exited { id, how: e });
                }
            }
        });
    }

    fn status(&self) -> EnvStatus {
        let spec = self.spec.clone().unwrap_or_else(empty_spec);
        let mut groups: Vec<GroupStatus> = spec
            .groups
            .iter()
            .map(|g| GroupStatus {
                release: g.release,
                version: g.version.clone(),
                weight: g.weight,
                desired: g.instances,
                instances: Vec::new(),
                traffic: self.stats.get(&g.release).map(|s| s.snapshot()).unwrap_or_default(),
            })
            .collect();
        for inst in &self.instances {
            let gi = match groups.iter().position(|g| g.release == inst.release) {
                Some(gi) => gi,
                None => {
                    groups.push(GroupStatus {
                        release: inst.release,
                        version: inst.version.clone(),
                        weight: 0,
                        desired: 0,
                        instances: Vec::new(),
                        traffic: self.stats.get(&inst.release).map(|s| s.snapshot()).unwrap_or_default(),
                    });
                    groups.len() - 1
                }
            };
            groups[gi].instances.push(InstanceStatus {
                id: inst.id,
                port: inst.port,
                pid: inst.pid,
                container: inst.container_name.clone(),
                state: if inst.drain.is_some() { InstanceState::Draining } else { inst.state },
                restarts: inst.restarts,
                last_error: inst.last_error.clone(),
                log: self.log_path.display().to_string(),
                since_ms: Some(inst.since),
            });
        }
        let mut connections = Vec::new();
        if let Some((addr, _)) = &self.listener {
            connections.push(self.conn_stats.snapshot(addr));
        }
        if let Some((addr, _)) = &self.preview_listener {
            connections.push(self.preview_conn_stats.snapshot(addr));
        }
        EnvStatus {
            name: self.name.clone(),
            listen: spec.listen,
            preview_listen: spec.preview_listen,
            groups,
            connections,
        }
    }
}

fn now_ms() -> u64 {
    slipway_model::time::now_ms() as u64
}

/// Changes an instance's state, noting since when.
fn set_state(inst: &mut Instance, state: InstanceState) {
    if inst.state != state {
        inst.state = state;
        inst.since = now_ms();
    }
}

/// How long an instance must stay healthy before its crash back-off starts over.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// An instance's environment, process or container alike: the service's, then `PORT` and
/// the `SLIPWAY_*` variables.
fn instance_env(env: &str, g: &GroupSpec, id: u64, port: u16) -> Result<Vec<(String, String)>, String> {
    let mut vars = g.env.clone();
    for e in &g.env_from {
        let value = match (e.source.strip_prefix("file:"), &e.value) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map(|v| v.strip_suffix('\n').unwrap_or(&v).to_string())
                .map_err(|err| format!("cannot start: `{}` comes from {}: {err}", e.name, e.source))?,
            (None, Some(v)) => v.clone(),
            (None, None) => {
                return Err(format!(
                    "cannot start: `{}` comes from the deploying process's {} and this agent has not been given it since it started; deploy again (or `slipway agent start`) with it set, or use `value_from: file:/PATH`",
                    e.name, e.source
                ));
            }
        };
        vars.push((e.name.clone(), value));
    }
    vars.push(("PORT".into(), port.to_string()));
    vars.push(("SLIPWAY_ENVIRONMENT".into(), env.to_string()));
    vars.push(("SLIPWAY_VERSION".into(), g.version.clone()));
    vars.push(("SLIPWAY_INSTANCE".into(), id.to_string()));
    Ok(vars)
}

fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok().map(|a| a.port())
}
