//! An agent that lives in memory, for the engine's own tests: it takes specs like the real
//! agent and reports instances whose behaviour the release's version picks — `…unhealthy…`
//! never passes its health check, `…crash…` keeps restarting, `…slow…` needs two seconds to
//! become healthy, `…errors…` answers every request it gets with a 5xx — and counts traffic
//! by weight on every status read, so canary analysis has something to judge.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use slipway_api::{EnvSpec, EnvStatus, GroupStatus, InstanceState, InstanceStatus, LATENCY_BUCKETS_MS, Traffic};
use slipway_model::environment::Environment;

use super::agent::{AgentTarget, Fleet};
use super::{Connector, Target};
use crate::{DeployError, ErrorKind};

struct Group {
    release: i64,
    version: String,
    weight: u32,
    desired: u32,
    since: Instant,
    traffic: Traffic,
}

#[derive(Default)]
struct State {
    envs: HashMap<String, (EnvSpec, Vec<Group>)>,
    applies: usize,
    down: bool,
}

#[derive(Default)]
pub struct MemoryFleet {
    state: Mutex<State>,
}

impl MemoryFleet {
    pub fn new() -> Arc<MemoryFleet> {
        Arc::new(MemoryFleet::default())
    }

    /// Makes the agent stop answering (or answer again).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// What runs for `env`: (version, instances, weight) per group.
    pub fn running(&self, env: &str) -> Vec<(String, u32, u32)> {
        let s = self.lock();
        s.envs
            .get(env)
            .map_or_else(Vec::new, |(_, gs)| gs.iter().map(|g| (g.version.clone(), g.desired, g.weight)).collect())
    }

    /// How many specs were applied, over all environments.
    pub fn applies(&self) -> usize {
        self.lock().applies
    }

    /// Puts a group behind the engine's back (a stray, or what a lost store leaves running).
    pub fn inject(&self, env: &str, release: i64, version: &str, instances: u32) {
        let mut s = self.lock();
        let entry = s.envs.entry(env.to_string()).or_insert_with(|| (empty_spec(), Vec::new()));
        entry.1.push(Group {
            release,
            version: version.into(),
            weight: 100,
            desired: instances,
            since: Instant::now() - Duration::from_secs(60),
            traffic: Traffic::default(),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn empty_spec() -> EnvSpec {
    EnvSpec {
        listen: String::new(),
        preview_listen: None,
        health: slipway_api::HealthSpec {
            probe: slipway_api::ProbeSpec::Tcp,
            interval_ms: 100,
            timeout_ms: 100,
            successes: 1,
            failures: 1,
            restart_after_ms: None,
        },
        stop_grace_ms: 0,
        drain_timeout_ms: 0,
        groups: Vec::new(),
        proxy: Default::default(),
    }
}

fn instance(g: &Group, i: u32) -> InstanceStatus {
    let (state, restarts, last_error) = if g.version.contains("unhealthy") {
        (InstanceState::Starting, 0, Some("GET /healthz: 503 Service Unavailable".to_string()))
    } else if g.version.contains("crash") {
        (InstanceState::Crashed, 3, Some("exited with exit status: 2".to_string()))
    } else if g.version.contains("slow") && g.since.elapsed() < Duration::from_secs(2) {
        (InstanceState::Starting, 0, None)
    } else {
        (InstanceState::Healthy, 0, None)
    };
    InstanceStatus {
        id: u64::from(i) + 1,
        port: 0,
        pid: None,
        container: None,
        state,
        restarts,
        last_error,
        log: String::new(),
        since_ms: Some((slipway_model::time::now_ms() as u64).saturating_sub(g.since.elapsed().as_millis() as u64)),
    }
}

#[async_trait]
impl Fleet for MemoryFleet {
    async fn spec(&self, env: &str) -> Result<Option<EnvSpec>, DeployError> {
        Ok(self.lock().envs.get(env).map(|(spec, _)| spec.clone()))
    }

    async fn platform(&self) -> Result<String, DeployError> {
        if self.lock().down {
            return Err(DeployError::new(ErrorKind::NoAgent, "no agent is running (the in-memory agent is down)"));
        }
        Ok(slipway_model::manifest::host_platform())
    }

    async fn status(&self, env: &str) -> Result<Option<EnvStatus>, DeployError> {
        let mut s = self.lock();
        if s.down {
            return Err(DeployError::new(ErrorKind::NoAgent, "no agent is running (the in-memory agent is down)"));
        }
        let Some((spec, groups)) = s.envs.get_mut(env) else { return Ok(None) };
        let mut out = Vec::new();
        for g in groups.iter_mut() {
            if g.weight > 0 {
                let n = u64::from(g.weight);
                g.traffic.requests += n;
                if g.version.contains("errors") {
                    g.traffic.errors += n;
                }
                g.traffic.latency.resize(LATENCY_BUCKETS_MS.len() + 1, 0);
                g.traffic.latency[2] += n;
            }
            out.push(GroupStatus {
                release: g.release,
                version: g.version.clone(),
                weight: g.weight,
                desired: g.desired,
                instances: (0..g.desired).map(|i| instance(g, i)).collect(),
                traffic: g.traffic.clone(),
            });
        }
        Ok(Some(EnvStatus {
            name: env.to_string(),
            listen: spec.listen.clone(),
            preview_listen: spec.preview_listen.clone(),
            groups: out,
            connections: Vec::new(),
        }))
    }

    async fn apply(&self, env: &str, spec: &EnvSpec) -> Result<(), DeployError> {
        let mut s = self.lock();
        if s.down {
            return Err(DeployError::new(ErrorKind::NoAgent, "no agent is running (the in-memory agent is down)"));
        }
        s.applies += 1;
        let entry = s.envs.entry(env.to_string()).or_insert_with(|| (empty_spec(), Vec::new()));
        let old = std::mem::take(&mut entry.1);
        entry.1 = spec
            .groups
            .iter()
            .map(|g| {
                let kept = old.iter().find(|o| o.release == g.release);
                Group {
                    release: g.release,
                    version: g.version.clone(),
                    weight: g.weight,
                    desired: g.instances,
                    since: kept.map_or_else(Instant::now, |k| k.since),
                    traffic: kept.map(|k| k.traffic.clone()).unwrap_or_default(),
                }
            })
            .collect();
        entry.0 = spec.clone();
        Ok(())
    }

    async fn remove(&self, env: &str) -> Result<(), DeployError> {
        self.lock().envs.remove(env);
        Ok(())
    }

    async fn load_image(&self, _id: &str) -> Result<bool, DeployError> {
        Ok(false)
    }
}

/// Connects every environment to one in-memory agent.
pub struct MemoryTargets {
    pub fleet: Arc<MemoryFleet>,
    pub data_dir: PathBuf,
}

#[async_trait]
impl Connector for MemoryTargets {
    async fn connect(&self, env: &Environment) -> Result<Box<dyn Target>, DeployError> {
        Ok(Box::new(AgentTarget::with_fleet(env, self.fleet.clone(), &self.data_dir)))
    }
}
