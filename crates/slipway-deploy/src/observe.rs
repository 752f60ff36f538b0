//! What an environment is like right now — its current release, what its target runs, how
//! healthy that is, whether it drifts from the record — for `slipway status`, the server's API
//! and the dashboard alike. Observing never changes anything: a deploy left mid-way is
//! reported as interrupted (the next deploy, rollback or `slipway repair` puts it back), and a
//! target running what the store does not know is reported with what runs, never "repaired"
//! to nothing.

use serde::Serialize;
use slipway_model::environment::{
    DockerTarget, Environment, HealthCheck, Protection, Service, Strategy, Target as Kind,
};
use slipway_model::release::{Release, ReleaseConfig, ReleaseReason, ReleaseStatus, TargetConfig};

use crate::target::Unit;
use crate::{DeployError, Engine};

/// The one-word state of an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Health {
    /// Nothing was ever deployed, and nothing runs.
    #[serde(rename = "not deployed")]
    NotDeployed,
    /// A deploy is working on it now.
    #[serde(rename = "deploying")]
    Deploying,
    /// A release waits for approvals (protected environment) or for the lock.
    #[serde(rename = "waiting")]
    Waiting,
    /// A deploy died mid-way (its lock's lease ran out): the target may run a mix of
    /// releases until the next deploy, rollback or `slipway repair`.
    #[serde(rename = "interrupted")]
    Interrupted,
    #[serde(rename = "healthy")]
    Healthy,
    /// Some instances of the current release are not healthy.
    #[serde(rename = "degraded")]
    Degraded,
    /// No instance of the current release is healthy.
    #[serde(rename = "failed")]
    Failed,
    /// The last deploy failed and the release before it runs again.
    #[serde(rename = "rolled back")]
    RolledBack,
    /// The target runs something other than the current release, as released.
    #[serde(rename = "drift")]
    Drift,
    /// The target runs releases the store does not know (the store was lost, or is older).
    #[serde(rename = "unmanaged")]
    Unmanaged,
    /// The target cannot be read (no agent, hosts unreachable).
    #[serde(rename = "unknown")]
    Unknown,
}

impl Health {
    /// Whether someone should look: what runs is not what was released, or not well.
    pub fn needs_attention(self) -> bool {
        matches!(
            self,
            Health::Interrupted
                | Health::Degraded
                | Health::Failed
                | Health::Drift
                | Health::Unmanaged
                | Health::Unknown
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::NotDeployed => "not deployed",
            Health::Deploying => "deploying",
            Health::Waiting => "waiting",
            Health::Interrupted => "interrupted",
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Failed => "failed",
            Health::RolledBack => "rolled back",
            Health::Drift => "drift",
            Health::Unmanaged => "unmanaged",
            Health::Unknown => "unknown",
        }
    }
}

/// One environment, observed.
#[derive(Debug, Clone, Serialize)]
pub struct EnvState {
    pub environment: String,
    pub version: Option<String>,
    pub release: Option<i64>,
    pub status: Health,
    pub healthy: u32,
    pub total: u32,
    pub url: String,
    pub updated_at_ms: Option<i64>,
    /// Why it is in this state, when there is more to say.
    pub detail: Option<String>,
    /// What runs: instances, containers or hosts.
    pub units: Vec<Unit>,
    pub drift: Vec<String>,
    /// Whether the target is ssh hosts (their units are hosts).
    pub hosts: bool,
}

/// An environment that the store knows but the pipeline file no longer declares, rebuilt from
/// its current release's record (agent targets on this machine only).
fn from_record(name: &str, c: &ReleaseConfig) -> Option<Environment> {
    let target = match &c.target {
        TargetConfig::Local => Kind::Local,
        TargetConfig::Docker { memory, nano_cpus } => {
            Kind::Docker(DockerTarget { memory: memory.map(|m| m as u64), nano_cpus: *nano_cpus, keep_images: 3 })
        }
        TargetConfig::Ssh => return None,
    };
    Some(Environment {
        name: name.to_string(),
        target,
        service: Service::default(),
        instances: c.instances,
        listen: c.listen.clone(),
        strategy: Strategy::Rolling {
            max_surge: slipway_model::environment::Scale::Count(1),
            max_unavailable: slipway_model::environment::Scale::Count(0),
        },
        // The probe and its rhythm as the release recorded them.
        health: HealthCheck {
            probe: match &c.health.probe {
                slipway_model::release::ProbeConfig::Http { path } => {
                    slipway_model::environment::Probe::Http(path.clone())
                }
                slipway_model::release::ProbeConfig::Tcp => slipway_model::environment::Probe::Tcp,
                slipway_model::release::ProbeConfig::Command { command } => {
                    slipway_model::environment::Probe::Command(command.clone())
                }
            },
            interval: std::time::Duration::from_millis(c.health.interval_ms),
            timeout: std::time::Duration::from_millis(c.health.timeout_ms),
            successes: c.health.successes,
            failures: c.health.failures,
            ..HealthCheck::default()
        },
        promote_from: None,
        protection: Protection::default(),
        agent: None,
        stop_grace: std::time::Duration::from_secs(10),
        drain_timeout: std::time::Duration::from_secs(30),
        proxy: Default::default(),
        watch: Default::default(),
        require_signature: None,
    })
}

impl Engine {
    /// Observes an environment: `env` when the pipeline file declares it, else only its name
    /// (known to the store). Changes nothing.
    pub async fn observe(&self, name: &str, env: Option<&Environment>) -> Result<EnvState, DeployError> {
        let store = self.store();
        let current = store.current(name).await?;
        let unfinished = store.unfinished(name).await?;
        let history = store.history(name, 1000).await?;
        let latest = history.first().cloned();
        let fallback = match (env, &current) {
            (None, Some(c)) => from_record(name, &c.config),
            _ => None,
        };
        let env = env.or(fallback.as_ref());
        let mut state = EnvState {
            environment: name.to_string(),
            version: current.as_ref().map(|c| c.version.clone()),
            release: current.as_ref().map(|c| c.id),
            status: Health::NotDeployed,
            healthy: 0,
            total: current.as_ref().map_or_else(|| env.map_or(0, |e| e.instances), |c| c.config.instances),
            url: env.map(|e| format!("http://{}", e.listen)).unwrap_or_default(),
            updated_at_ms: current.as_ref().map(|c| c.finished_at_ms.unwrap_or(c.created_at_ms)),
            detail: None,
            units: Vec::new(),
            drift: Vec::new(),
            hosts: env.is_some_and(|e| matches!(e.target, Kind::Ssh(_))),
        };
        let observation = match env {
            Some(e) => match self.target(e).await {
                Ok(t) => {
                    state.url = t.url();
                    Some(t.observe(current.as_ref(), &history).await)
                }
                Err(err) => {
                    state.status = Health::Unknown;
                    state.detail = Some(err.message);
                    None
                }
            },
            None => None,
        };
        if let Some(o) = &observation {
            state.units = o.units.clone();
            state.drift = o.drift.clone();
            if current.is_some() {
                state.healthy = o.healthy;
                state.total = o.desired;
            }
        }
        let deploying = unfinished.iter().rev().find(|r| r.status == ReleaseStatus::Deploying);
        if deploying.is_none()
            && let Some(q) = unfinished.iter().rev().find(|r| r.status == ReleaseStatus::Queued)
        {
            // What runs is as observed; what is pending, and on whom, is the detail.
            let need = env.map_or(0, |e| e.protection.approvals) as usize;
            let have = store.approvals(q.id).await?.len();
            let on = match (need > have, env.map(|e| &e.protection.approvers)) {
                (true, Some(a)) if !a.is_empty() => format!(
                    "waits for {} approval(s) from {}: `slipway approve {name} {}`",
                    need - have,
                    a.join(" or "),
                    q.id
                ),
                (true, _) => format!("waits for {} approval(s): `slipway approve {name} {}`", need - have, q.id),
                (false, _) => "waits for the environment's lock".to_string(),
            };
            state.status = Health::Waiting;
            state.detail = Some(format!("release #{} ({}) by {} {on}", q.id, q.version, q.actor));
            return Ok(state);
        }
        let (status, detail) = match (deploying, &current, &observation) {
            (Some(r), _, _) => match store.lock_holder(name).await? {
                Some((owner, _)) => (Health::Deploying, Some(format!("release #{} ({}) by {owner}", r.id, r.version))),
                None => (
                    Health::Interrupted,
                    Some(format!(
                        "release #{} ({}) was interrupted mid-way; `slipway repair {name}` (or the next deploy) puts {} back",
                        r.id,
                        r.version,
                        current.as_ref().map_or("nothing".to_string(), |c| c.version.clone())
                    )),
                ),
            },
            (None, _, Some(o)) if !o.unknown.is_empty() => (
                Health::Unmanaged,
                Some(format!(
                    "{}; slipway leaves it alone — `slipway adopt {name}` records it as it runs, or a deploy takes the environment over",
                    o.unknown.join("; ")
                )),
            ),
            (None, None, _) if state.status == Health::Unknown => (Health::Unknown, state.detail.clone()),
            (None, None, _) => (Health::NotDeployed, None),
            (None, Some(_), None) => (
                Health::Unknown,
                state.detail.clone().or_else(|| Some("the pipeline file no longer declares it".into())),
            ),
            (None, Some(c), Some(o)) => judge(c, latest.as_ref(), o),
        };
        state.status = status;
        state.detail = detail;
        Ok(state)
    }
}

/// The state of a deployed environment from what its target runs.
fn judge(current: &Release, latest: Option<&Release>, o: &crate::target::Observation) -> (Health, Option<String>) {
    if let Some(why) = &o.unreachable {
        return (Health::Unknown, Some(why.clone()));
    }
    // Since when, and why: what a person paged at night asks first.
    let failing = o.failing_since.as_ref().map(|(since, why)| {
        let now = slipway_model::time::now_ms();
        let since = (*since as i64).min(now);
        format!(
            "{} of {} instance(s) failing since {} ({}): {why}",
            o.desired.saturating_sub(o.healthy),
            o.desired,
            slipway_model::time::rfc3339(since),
            slipway_model::time::ago(since, now)
        )
    });
    if o.healthy == 0 {
        let why = if !o.drift.is_empty() {
            format!("drift: {}", o.drift.join("; "))
        } else {
            failing.unwrap_or_else(|| "no instance is healthy".to_string())
        };
        return (Health::Failed, Some(why));
    }
    if !o.drift.is_empty() {
        return (Health::Drift, Some(format!("differs from the release record: {}", o.drift.join("; "))));
    }
    if o.healthy < o.desired {
        return (Health::Degraded, failing);
    }
    // Rolled back: the release before a failed one runs again. A release that failed before
    // it started (an approval that never came, a busy lock) rolled nothing back.
    let failed_after_start = latest.is_some_and(|l| l.status == ReleaseStatus::Failed && l.started_at_ms.is_some());
    if matches!(current.reason, ReleaseReason::AutoRollback | ReleaseReason::AlertRollback) || failed_after_start {
        return (
            Health::RolledBack,
            latest.and_then(|l| l.status_detail.as_ref().map(|d| format!("#{} {}: {d}", l.id, l.version))),
        );
    }
    (Health::Healthy, None)
}

/// What an environment's instances printed.
pub struct Logs {
    /// The last lines asked for.
    pub text: String,
    /// The log file on this machine, to follow as it grows (none for an agent elsewhere).
    pub file: Option<std::path::PathBuf>,
}

/// The last `lines` lines of an environment's instance logs: this machine's agent writes them
/// to `<data-dir>/agent/logs/<env>.log`; an agent on another machine is asked through its API.
pub async fn logs(
    data_dir: &std::path::Path,
    env: Option<&Environment>,
    name: &str,
    lines: usize,
) -> Result<Logs, DeployError> {
    slipway_model::names::check_environment(name).map_err(DeployError::input)?;
    use slipway_model::environment::RemoteAgent;
    match env.and_then(|e| e.agent.as_ref()) {
        Some(RemoteAgent::Ssh(ssh)) => {
            let (tunnel, _conn) = crate::target::hosts::agent_tunnel(ssh).await?;
            let text = slipway_api::AgentClient::new(tunnel.local.clone()).logs(name, lines).await?;
            return Ok(Logs { text, file: None });
        }
        Some(RemoteAgent::Connected { name: agent }) => {
            let client = slipway_api::AgentClient::new(slipway_api::connected_socket(data_dir, agent));
            let text =
                client.logs(name, lines).await.map_err(|e| crate::target::agent::not_connected(agent, data_dir, e))?;
            return Ok(Logs { text, file: None });
        }
        None => {}
    }
    let path = data_dir.join("agent/logs").join(format!("{name}.log"));
    let text = std::fs::read_to_string(&path).map_err(|_| {
        DeployError::input(format!("no logs for environment `{name}` in {}", data_dir.display()))
            .hint("the agent writes them once the environment runs; see `slipway status`")
    })?;
    let all: Vec<&str> = text.lines().collect();
    let mut last = all[all.len().saturating_sub(lines)..].join("\n");
    if !last.is_empty() {
        last.push('\n');
    }
    Ok(Logs { text: last, file: Some(path) })
}

impl Engine {
    /// What `deploy --dry-run` prints: the release it would make and the strategy's steps
    /// from what runs now. Nothing is recorded or kept.
    pub async fn dry_run(
        &self,
        env: &Environment,
        wanted: &crate::artifacts::Wanted<'_>,
    ) -> Result<Vec<String>, DeployError> {
        let version = crate::artifacts::dry_run_version(env, wanted)?;
        let state = self.observe(&env.name, Some(env)).await?;
        let old = state.version.as_deref().map(|v| (v, if state.total == 0 { env.instances } else { state.total }));
        let mut out = vec![format!(
            "deploy {version} to {} ({}, {} instance(s), entry point {}):",
            env.name,
            env.strategy.name(),
            env.instances,
            env.listen
        )];
        for (i, s) in crate::plan::describe(env, old, &version).iter().enumerate() {
            out.push(format!("  {}. {s}", i + 1));
        }
        if env.protection.approvals > 0 {
            out.push(format!("  (protected: needs {} approval(s) first)", env.protection.approvals));
        }
        Ok(out)
    }

    /// Observes every environment: those the pipeline file declares, in its order, then those
    /// only the store knows; `only` keeps one (an unknown name is an error with a suggestion).
    /// What `agent start` does after the agent answers: every environment of this machine's
    /// agent that runs nothing although the store has a current release is brought back to it
    /// (declared environments as the pipeline file says, others as their record says). One
    /// entry per environment with a current release here: what was done, or why not.
    pub async fn restore_all(
        &self,
        envs: &[Environment],
    ) -> Result<Vec<(String, Result<Option<String>, DeployError>)>, DeployError> {
        let mut out = Vec::new();
        for (name, _) in self.store().environments().await? {
            let Some(current) = self.store().current(&name).await? else { continue };
            let declared = envs.iter().find(|e| e.name == name).cloned();
            let Some(env) = declared.or_else(|| from_record(&name, &current.config)) else { continue };
            if !matches!(env.target, Kind::Local | Kind::Docker(_)) || env.agent.is_some() {
                continue;
            }
            let r = self.restore(&env).await;
            out.push((name, r));
        }
        Ok(out)
    }

    pub async fn observe_all(&self, envs: &[Environment], only: Option<&str>) -> Result<Vec<EnvState>, DeployError> {
        let mut names: Vec<String> = envs.iter().map(|e| e.name.clone()).collect();
        for (n, _) in self.store().environments().await? {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if let Some(only) = only {
            if !names.iter().any(|n| n == only) {
                let hint = match names.is_empty() {
                    true => "the pipeline file has no `environments:` section (see docs/deploy.md)".to_string(),
                    false => format!("environments: {}", names.join(", ")),
                };
                return Err(DeployError::input(format!("unknown environment `{only}`")).hint(hint));
            }
            names.retain(|n| n == only);
        }
        let mut states = Vec::new();
        for name in &names {
            states.push(self.observe(name, envs.iter().find(|e| &e.name == name)).await?);
        }
        Ok(states)
    }
}
