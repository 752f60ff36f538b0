//! Targets run by a slipway agent: this machine's (its socket in the data directory) or one on
//! another machine (through an SSH tunnel to its socket), running each release's instances as
//! processes or as Docker containers behind the agent's proxy. The strategies live here:
//! the agent runs groups of instances with traffic weights, so rolling batches, canary
//! weights with analysis and blue-green switches are all "apply a spec, wait for health".
//! The agent itself is behind [`Fleet`], so the engine's tests drive the same strategies
//! against an in-memory fleet ([`super::memory`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use slipway_api::{AgentClient, ContainerSpec, EnvSpec, EnvStatus, GroupSpec, HealthSpec, ProbeSpec, Traffic};
use slipway_model::environment::{
    Analysis, CanaryStep, Environment, OnInconclusive, RemoteAgent, SshTarget, Strategy, Target as Kind,
};
use slipway_model::manifest::host_platform;
use slipway_model::release::{ProbeConfig, Release, TargetConfig};
use slipway_model::time::now_ms;

use super::{Cx, Observation, Step, Target, Unit};
use crate::plan::{self, Verdict};
use crate::{DeployError, ErrorKind, artifacts};

const POLL: Duration = Duration::from_millis(100);

/// What the engine needs of an agent: its environments' desired and observed state.
#[async_trait]
pub trait Fleet: Send + Sync {
    /// The agent's machine (`linux/amd64`), once it answers.
    async fn platform(&self) -> Result<String, DeployError>;
    async fn status(&self, env: &str) -> Result<Option<EnvStatus>, DeployError>;
    /// Replaces the environment's desired state.
    async fn apply(&self, env: &str, spec: &EnvSpec) -> Result<(), DeployError>;
    /// Stops everything of the environment (nothing to stop is fine).
    async fn remove(&self, env: &str) -> Result<(), DeployError>;
    /// Makes the agent's Docker Engine hold an image, from the archive in its data directory.
    async fn load_image(&self, id: &str) -> Result<bool, DeployError>;
    /// What the agent was asked to run for the environment (secret values left out).
    async fn spec(&self, env: &str) -> Result<Option<EnvSpec>, DeployError>;
}

#[async_trait]
impl Fleet for AgentClient {
    async fn platform(&self) -> Result<String, DeployError> {
        Ok(self.info().await?.platform.unwrap_or_else(host_platform))
    }
    async fn status(&self, env: &str) -> Result<Option<EnvStatus>, DeployError> {
        Ok(self.env(env).await?)
    }
    async fn apply(&self, env: &str, spec: &EnvSpec) -> Result<(), DeployError> {
        AgentClient::apply(self, env, spec).await?;
        Ok(())
    }
    async fn remove(&self, env: &str) -> Result<(), DeployError> {
        match AgentClient::remove(self, env).await {
            Ok(()) | Err(slipway_api::ApiError::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
    async fn load_image(&self, id: &str) -> Result<bool, DeployError> {
        Ok(AgentClient::load_image(self, id).await?)
    }
    async fn spec(&self, env: &str) -> Result<Option<EnvSpec>, DeployError> {
        Ok(AgentClient::spec(self, env).await?)
    }
}

/// An agent on another machine and the tunnel to its socket.
struct Remote {
    ssh: SshTarget,
    _tunnel: crate::ssh::Tunnel,
}

/// Where the agent is.
enum Place {
    /// This machine: binaries run from this data directory's artifact store.
    Local,
    /// Another machine, reached through this tunnel; binaries and image archives are uploaded
    /// to its data directory (`ssh.root`) first.
    Remote(Box<Remote>),
    /// An agent connected to the server, through the tunnel it keeps open to the server (its
    /// socket in the server's data directory); binaries and image archives are sent through
    /// its API, into its data directory.
    Connected { name: String, data_dir: PathBuf },
    /// No machine at all (tests): the artifact store is only read for paths.
    Memory,
}

pub struct AgentTarget {
    env: Environment,
    fleet: Arc<dyn Fleet>,
    place: Place,
    /// Where this process keeps artifacts (to verify, to upload from).
    data_dir: PathBuf,
}

impl AgentTarget {
    pub fn local(env: &Environment, data_dir: &Path) -> AgentTarget {
        let client = AgentClient::new(slipway_api::socket_path(data_dir));
        AgentTarget { env: env.clone(), fleet: Arc::new(client), place: Place::Local, data_dir: data_dir.to_path_buf() }
    }

    /// An agent on another machine, through an SSH tunnel to its socket (kept open as long as
    /// the target lives).
    pub async fn remote(env: &Environment, data_dir: &Path, remote: &RemoteAgent) -> Result<AgentTarget, DeployError> {
        let ssh = match remote {
            RemoteAgent::Ssh(ssh) => ssh,
            RemoteAgent::Connected { name } => return AgentTarget::connected(env, data_dir, name).await,
        };
        let (tunnel, _conn) = super::hosts::agent_tunnel(ssh).await?;
        let client = AgentClient::new(tunnel.local.clone());
        if let Err(e) = client.info().await {
            let (host, dir) = (&ssh.hosts[0], &ssh.root);
            return Err(DeployError::new(
                ErrorKind::NoAgent,
                format!("no agent answers on {} at {dir}/agent.sock ({e})", host.label()),
            )
            .hint(format!(
                "start it there: `slipway agent start --data-dir {dir}` (or a systemd unit running `slipway agent run`)"
            )));
        }
        Ok(AgentTarget {
            env: env.clone(),
            fleet: Arc::new(client),
            place: Place::Remote(Box::new(Remote { ssh: ssh.clone(), _tunnel: tunnel })),
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// An agent connected to this server (`agent: {name: N}`): its tunnel's socket is
    /// `agents/<name>.sock` in the server's data directory while it is connected.
    pub async fn connected(env: &Environment, data_dir: &Path, name: &str) -> Result<AgentTarget, DeployError> {
        let client = AgentClient::new(slipway_api::connected_socket(data_dir, name));
        let info = client.info().await.map_err(|e| not_connected(name, data_dir, e))?;
        let Some(agent_dir) = info.data_dir else {
            return Err(DeployError::failed(format!(
                "agent `{name}` (slipway {}) does not say where its data directory is",
                info.version
            ))
            .hint("run the same slipway version on the agent as on the server"));
        };
        Ok(AgentTarget {
            env: env.clone(),
            fleet: Arc::new(client),
            place: Place::Connected { name: name.to_string(), data_dir: PathBuf::from(agent_dir) },
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// A target over any fleet (the engine's tests use [`super::memory::MemoryFleet`]).
    pub fn with_fleet(env: &Environment, fleet: Arc<dyn Fleet>, data_dir: &Path) -> AgentTarget {
        AgentTarget { env: env.clone(), fleet, place: Place::Memory, data_dir: data_dir.to_path_buf() }
    }

    /// The archive of a release's image in this data directory and the archive's own digest:
    /// what another machine's agent is sent.
    fn image_archive(&self, a: &slipway_model::Artifact) -> Result<(PathBuf, String), DeployError> {
        let archive = artifacts::stored_image(&self.data_dir, &a.sha256);
        let file_sha = artifacts::sha256_file(&archive).map_err(|e| {
            DeployError::input(format!("the image archive {} is needed for a remote agent: {e}", archive.display()))
                .hint("deploy from an image archive (--artifacts IMAGE.tar)")
        })?;
        Ok((archive, file_sha))
    }

    fn containers(&self) -> bool {
        matches!(self.env.target, Kind::Docker(_))
    }

    /// The agent's data directory as the agent sees it.
    fn agent_data_dir(&self) -> PathBuf {
        match &self.place {
            Place::Remote(r) => PathBuf::from(&r.ssh.root),
            Place::Connected { data_dir, .. } => data_dir.clone(),
            Place::Local | Place::Memory => self.data_dir.clone(),
        }
    }

    async fn artifact<'r>(&self, r: &'r Release) -> Result<&'r slipway_model::Artifact, DeployError> {
        if self.containers() {
            // An image release records the image for the machine it was imported on.
            return r.artifacts.first().ok_or_else(|| DeployError::input(format!("release #{} has no image", r.id)));
        }
        let platform = self.fleet.platform().await?;
        r.artifact_for(&platform).map_err(|why| {
            DeployError::input(why)
                .hint(format!("build for the agent's machine: `slipway go build --platform {platform}`"))
        })
    }

    fn base_spec(&self, groups: Vec<GroupSpec>) -> EnvSpec {
        let env = &self.env;
        EnvSpec {
            listen: env.listen.clone(),
            preview_listen: match &env.strategy {
                Strategy::BlueGreen { preview, .. } => preview.clone(),
                _ => None,
            },
            health: HealthSpec {
                restart_after_ms: env.health.restart_after.map(|d| d.as_millis() as u64),
                ..health_spec(&slipway_model::release::HealthConfig::of(env))
            },
            stop_grace_ms: env.stop_grace.as_millis() as u64,
            drain_timeout_ms: env.drain_timeout.as_millis() as u64,
            groups,
            proxy: slipway_api::ProxySpec {
                max_connections: env.proxy.max_connections,
                header_timeout_ms: env.proxy.header_timeout.as_millis() as u64,
                idle_timeout_ms: env.proxy.idle_timeout.as_millis() as u64,
            },
        }
    }

    /// The agent group of a release with `instances` and `weight`, run as the release
    /// recorded it (its arguments, environment and limits, whatever the file says now).
    async fn group(&self, r: &Release, instances: u32, weight: u32) -> Result<GroupSpec, DeployError> {
        let a = self.artifact(r).await?;
        let svc = &r.config.service;
        let container = match &r.config.target {
            TargetConfig::Docker { memory, nano_cpus } => {
                Some(ContainerSpec { image: format!("sha256:{}", a.sha256), memory: *memory, nano_cpus: *nano_cpus })
            }
            TargetConfig::Local | TargetConfig::Ssh => None,
        };
        let mut command = match container {
            Some(_) => Vec::new(),
            None => vec![artifacts::stored_path(&self.agent_data_dir(), &a.sha256).display().to_string()],
        };
        command.extend(svc.args.iter().cloned());
        Ok(GroupSpec {
            release: r.group_id(),
            version: r.version.clone(),
            command,
            env: svc.env.clone(),
            env_from: secret_env(svc),
            workdir: svc.workdir.clone(),
            instances,
            weight,
            preview: false,
            retire_at_ms: None,
            container,
        })
    }

    async fn apply(&self, cx: &Cx<'_>, step: &str, groups: Vec<GroupSpec>) -> Result<(), Step> {
        let detail = json!({
            "groups": groups.iter().map(|g| json!({"release": g.release, "version": g.version, "instances": g.instances, "weight": g.weight})).collect::<Vec<_>>()
        });
        cx.record(step, detail).await?;
        self.fleet.apply(&self.env.name, &self.base_spec(groups)).await?;
        Ok(())
    }

    /// Waits until `want` instances of the group pass their health checks, or fails at the
    /// deadline (sooner when instances keep crashing) with what the checks said.
    async fn wait_healthy(&self, group: i64, want: u32) -> Result<(), Step> {
        let env = &self.env;
        let deadline = Instant::now() + env.health.deadline;
        loop {
            let status = self.fleet.status(&env.name).await?;
            let g = status.as_ref().and_then(|s| s.group(group));
            let healthy = g.map_or(0, |g| g.healthy());
            if healthy >= want {
                return Ok(());
            }
            let crashing = g.and_then(|g| g.instances.iter().find(|i| i.restarts >= 3));
            if Instant::now() >= deadline || crashing.is_some() {
                let version = g.map_or(String::new(), |g| g.version.clone());
                let last = g
                    .and_then(|g| {
                        g.instances.iter().find_map(|i| i.last_error.clone().map(|e| format!("instance {}: {e}", i.id)))
                    })
                    .unwrap_or_else(|| "no health check answered".into());
                let why = match crashing {
                    Some(i) => {
                        format!("{version} keeps crashing (instance {} restarted {} times): {last}", i.id, i.restarts)
                    }
                    None => format!(
                        "{version} was not healthy within {}: {healthy} of {want} instance(s) healthy; {last}",
                        plan::fmt_duration(env.health.deadline)
                    ),
                };
                return Err(Step::Failed(format!("{why} (its output: `slipway logs --env {}`)", env.name)));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the agent has drained and stopped every instance of a group that left the
    /// spec (bounded by the drain timeout and the stop grace period).
    /// The binary a process instance of `r` starts from, when this machine's agent store no
    /// longer holds the release's bytes there: (its SHA-256, or `missing`; the drift line).
    /// Instances that run keep the bytes they started with; the next start would not.
    async fn replaced_binary(&self, r: &Release) -> Option<(String, String)> {
        if !matches!(self.place, Place::Local) || self.containers() {
            return None;
        }
        let a = self.artifact(r).await.ok()?;
        let path = artifacts::stored_path(&self.agent_data_dir(), &a.sha256);
        let actual = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || artifacts::sha256_cached(&path)).await.ok()?
        };
        let actual = actual.unwrap_or_else(|_| "missing".to_string());
        (actual != a.sha256).then(|| {
            let why = format!(
                "the binary {} of {} is {}, the release's is sha256:{} (replaced in the agent's store; \
                 deploy from the build again)",
                path.display(),
                r.version,
                if actual == "missing" { "missing".to_string() } else { format!("sha256:{}", short(&actual)) },
                short(&a.sha256)
            );
            (actual, why)
        })
    }

    async fn wait_gone(&self, cx: &Cx<'_>, group: i64) -> Result<(), Step> {
        let env = &self.env;
        let deadline = Instant::now() + env.drain_timeout + env.stop_grace + Duration::from_secs(5);
        loop {
            let status = self.fleet.status(&env.name).await?;
            let left = status.as_ref().and_then(|s| s.group(group)).map_or(0, |g| g.instances.len());
            if left == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                cx.say(format!("{left} old instance(s) still stopping; the agent finishes that on its own"));
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn first(&self, cx: &Cx<'_>, new: &Release) -> Result<(), Step> {
        let n = self.env.instances;
        cx.say(format!("starting {n} instance(s) of {}", new.version));
        self.apply(cx, "start", vec![self.group(new, n, 100).await?]).await?;
        self.wait_healthy(new.group_id(), n).await
    }

    async fn switch_back(&self, cx: &Cx<'_>, new: &Release) -> Result<(), Step> {
        cx.say(format!("{} still runs: switching all traffic back at once", new.version));
        self.apply(cx, "switch", vec![self.group(new, self.env.instances, 100).await?]).await
    }

    async fn rolling(&self, cx: &Cx<'_>, old: &Release, new: &Release, running: u32) -> Result<(), Step> {
        let env = &self.env;
        let (surge, unavailable) = plan::fenceposts(env);
        let old_count = if running == 0 { env.instances } else { running };
        let batches = plan::rolling_batches(old_count, env.instances, surge, unavailable);
        cx.say(format!(
            "rolling update {} → {} in {} batch(es) (max surge {surge}, max unavailable {unavailable})",
            old.version,
            new.version,
            batches.len()
        ));
        for (i, b) in batches.iter().enumerate() {
            cx.say(format!("batch {}/{}: {} {} · {} {}", i + 1, batches.len(), old.version, b.old, new.version, b.new));
            let mut groups = Vec::new();
            if b.old > 0 {
                groups.push(self.group(old, b.old, b.old).await?);
            }
            groups.push(self.group(new, b.new, b.new.max(1)).await?);
            self.apply(cx, "batch", groups).await?;
            self.wait_healthy(new.group_id(), b.new).await?;
        }
        self.wait_gone(cx, old.group_id()).await
    }

    async fn canary(
        &self,
        cx: &Cx<'_>,
        old: &Release,
        new: &Release,
        steps: &[CanaryStep],
        analysis: &Analysis,
    ) -> Result<(), Step> {
        let n = self.env.instances;
        let k_of = |w: u32| if w >= 100 { n } else { plan::canary_instances(n, w) };
        let mut weight = 0;
        for step in steps {
            match step {
                CanaryStep::Weight(w) => {
                    weight = *w;
                    let k = k_of(weight);
                    cx.say(format!("canary: {weight}% of traffic to {} ({k} instance(s))", new.version));
                    let groups = vec![self.group(old, n, 100 - weight).await?, self.group(new, k, weight).await?];
                    self.apply(cx, "weight", groups).await?;
                    self.wait_healthy(new.group_id(), k).await?;
                }
                CanaryStep::Pause(d) => {
                    cx.say(format!("canary: holding {} at {weight}%, analysing", plan::fmt_duration(*d)));
                    self.analyse(cx, old, new, analysis, Instant::now() + *d, None, k_of(weight)).await?;
                }
                CanaryStep::Manual => {
                    cx.say(format!(
                        "canary: holding at {weight}% until `slipway approve {} {}` (analysing meanwhile)",
                        self.env.name, new.id
                    ));
                    let until = Instant::now() + Duration::from_secs(7 * 24 * 3600);
                    self.analyse(cx, old, new, analysis, until, Some(now_ms()), k_of(weight)).await?;
                }
            }
        }
        cx.say(format!("canary: {} takes all traffic; stopping {}", new.version, old.version));
        self.apply(cx, "finish", vec![self.group(new, n, 100).await?]).await?;
        self.wait_gone(cx, old.group_id()).await
    }

    /// Judges the canary every interval until `until` (or until an approval of `new` newer
    /// than `approval_since` arrives); fails as soon as fewer than `want` of its instances
    /// are healthy (an unhealthy canary gets no traffic to judge).
    #[expect(clippy::too_many_arguments, reason = "one call site per pause kind; a struct would only rename them")]
    async fn analyse(
        &self,
        cx: &Cx<'_>,
        old: &Release,
        new: &Release,
        a: &Analysis,
        until: Instant,
        approval_since: Option<i64>,
        want: u32,
    ) -> Result<(), Step> {
        let name = &self.env.name;
        let sample = |s: &Option<EnvStatus>, id: i64| -> Traffic {
            s.as_ref().and_then(|s| s.group(id)).map(|g| g.traffic.clone()).unwrap_or_default()
        };
        let status = self.fleet.status(name).await?;
        let (mut c0, mut s0) = (sample(&status, new.group_id()), sample(&status, old.group_id()));
        let mut next_verdict = Instant::now() + a.interval;
        // Windows judged and passed in this pause; a pause none of whose windows could be
        // judged is decided by `on_inconclusive`, never taken for a pass.
        let (mut windows, mut passed) = (0u32, 0u32);
        loop {
            let now = Instant::now();
            if now >= until {
                if passed == 0 && windows > 0 && a.on_inconclusive == OnInconclusive::Fail {
                    return Err(Step::Failed(format!(
                        "canary analysis could not judge {}: {windows} window(s), none with {} request(s) or more (on_inconclusive: fail)",
                        new.version, a.min_requests
                    )));
                }
                return Ok(());
            }
            // Health is watched between verdicts too.
            tokio::time::sleep(POLL.min(until - now)).await;
            let status = self.fleet.status(name).await?;
            if let Some(g) = status.as_ref().and_then(|s| s.group(new.group_id()))
                && g.healthy() < want
            {
                let last = g
                    .instances
                    .iter()
                    .find_map(|i| i.last_error.clone().map(|e| format!("instance {}: {e}", i.id)))
                    .unwrap_or_default();
                return Err(Step::Failed(format!(
                    "canary {} became unhealthy: {} of {want} instance(s) healthy; {last} (its output: `slipway logs --env {name}`)",
                    new.version,
                    g.healthy()
                )));
            }
            if let Some(since) = approval_since
                && cx.approved_since(new.id, since).await?
            {
                cx.say("canary: approved");
                return Ok(());
            }
            if Instant::now() < next_verdict.min(until) {
                continue;
            }
            next_verdict += a.interval;
            let (c1, s1) = (sample(&status, new.group_id()), sample(&status, old.group_id()));
            let mut verdict = plan::judge(&c1.since(&c0), &s1.since(&s0), a);
            if let Some(p) = &a.prometheus {
                let release = new.id.to_string();
                let vars = [
                    ("VERSION", new.version.as_str()),
                    ("STABLE_VERSION", old.version.as_str()),
                    ("ENVIRONMENT", self.env.name.as_str()),
                    ("RELEASE", release.as_str()),
                ];
                verdict = crate::prom::combine(verdict, crate::prom::judge(p, &vars).await);
            }
            cx.record("analysis", json!({"verdict": format!("{verdict:?}")})).await?;
            windows += 1;
            match verdict {
                Verdict::Pass(s) => {
                    passed += 1;
                    cx.say(format!("analysis: pass ({s})"));
                }
                Verdict::Inconclusive(s) => cx.say(format!("analysis: not judged ({s})")),
                Verdict::Fail(why) => return Err(Step::Failed(format!("canary analysis failed: {why}"))),
            }
            (c0, s0) = (c1, s1);
        }
    }

    async fn blue_green(&self, cx: &Cx<'_>, old: &Release, new: &Release, keep_old: Duration) -> Result<(), Step> {
        let n = self.env.instances;
        let preview = match &self.env.strategy {
            Strategy::BlueGreen { preview: Some(p), .. } => format!(", preview at http://{p}"),
            _ => String::new(),
        };
        cx.say(format!("blue-green: starting {n} instance(s) of {} beside {}{preview}", new.version, old.version));
        let mut green = self.group(new, n, 0).await?;
        green.preview = true;
        self.apply(cx, "start", vec![self.group(old, n, 100).await?, green.clone()]).await?;
        self.wait_healthy(new.group_id(), n).await?;
        cx.say(format!("blue-green: switching all traffic to {}", new.version));
        let mut blue = self.group(old, n, 0).await?;
        blue.retire_at_ms = Some((now_ms() + keep_old.as_millis() as i64) as u64);
        green.weight = 100;
        self.apply(cx, "switch", vec![blue, green]).await?;
        cx.say(format!(
            "blue-green: {} stays up {} for an instant switch back",
            old.version,
            plan::fmt_duration(keep_old)
        ));
        Ok(())
    }

    /// Containers labelled with the environment that the agent does not run as released:
    /// strays, or a group's container on another image (this machine's Docker Engine only).
    async fn stray_containers(&self, live: Option<&EnvStatus>, current: &Release) -> Vec<String> {
        match self.strays(live, current).await {
            Ok(cs) => cs
                .iter()
                .map(|k| {
                    format!(
                        "container {} ({}, image {}) is not part of the release",
                        k.name,
                        k.state,
                        k.image.trim_start_matches("sha256:").chars().take(12).collect::<String>()
                    )
                })
                .collect(),
            Err(e) => vec![e.message],
        }
    }

    /// Containers labelled with the environment that the agent's groups do not account for
    /// (or that run another image than the current release's), on this machine's engine.
    async fn strays(
        &self,
        live: Option<&EnvStatus>,
        current: &Release,
    ) -> Result<Vec<crate::docker::ContainerState>, DeployError> {
        if !self.containers() || !matches!(self.place, Place::Local) {
            return Ok(Vec::new());
        }
        let groups: Vec<i64> = live.map(|l| l.groups.iter().map(|g| g.release).collect()).unwrap_or_default();
        let Some(image) = current.artifacts.first() else { return Ok(Vec::new()) };
        let want = format!("sha256:{}", image.sha256);
        Ok(crate::docker::containers(&self.env.name)
            .await?
            .into_iter()
            .filter(|k| {
                k.release.is_none_or(|r| !groups.contains(&r))
                    || (k.release == Some(current.group_id()) && k.image != want)
            })
            .collect())
    }
}

/// A release's secret variables for the agent: `env:` sources with this process's value
/// (absent when it has none; the agent keeps what it had), `file:` sources for the agent.
fn secret_env(svc: &slipway_model::release::ServiceConfig) -> Vec<slipway_api::EnvFrom> {
    svc.env_from
        .iter()
        .map(|(name, source)| slipway_api::EnvFrom {
            name: name.clone(),
            source: source.clone(),
            value: source.strip_prefix("env:").and_then(|var| std::env::var(var).ok()),
        })
        .collect()
}

/// Before anything changes: every `env:` source of the release to start is set here.
fn check_secret_env(env: &str, r: &Release) -> Result<(), DeployError> {
    let missing: Vec<&str> = r
        .config
        .service
        .env_from
        .iter()
        .filter_map(|(_, source)| source.strip_prefix("env:"))
        .filter(|var| std::env::var_os(var).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(|m| format!("${m}")).collect();
    Err(DeployError::input(format!(
        "release #{} ({}) of `{env}` takes {} from this process's environment, which does not have it",
        r.id,
        r.version,
        names.join(", ")
    ))
    .hint(format!("set it (`export {}=...`) and run the command again, or use `value_from: file:/PATH`", missing[0])))
}

pub(crate) fn health_spec(h: &slipway_model::release::HealthConfig) -> HealthSpec {
    HealthSpec {
        probe: match &h.probe {
            ProbeConfig::Http { path } => ProbeSpec::Http { path: path.clone() },
            ProbeConfig::Tcp => ProbeSpec::Tcp,
            ProbeConfig::Command { command } => ProbeSpec::Command { command: command.clone() },
        },
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        successes: h.successes,
        failures: h.failures,
        restart_after_ms: None,
    }
}

#[async_trait]
impl Target for AgentTarget {
    async fn found(&self, known: &[Release]) -> Result<Vec<super::Found>, DeployError> {
        let Some(spec) = self.fleet.spec(&self.env.name).await? else { return Ok(Vec::new()) };
        let platform = self.fleet.platform().await?;
        let store_dir = artifacts::stored_path(&self.agent_data_dir(), "");
        let mut out = Vec::new();
        for g in &spec.groups {
            if known.iter().any(|r| r.id == g.release || r.group_id() == g.release) {
                continue;
            }
            let mut config = slipway_model::release::ReleaseConfig::of(&self.env);
            config.instances = g.instances;
            config.service.env = g.env.clone();
            config.service.env_from = g.env_from.iter().map(|e| (e.name.clone(), e.source.clone())).collect();
            config.service.workdir = g.workdir.clone();
            let name = self.env.service.binary.clone().unwrap_or_else(|| self.env.name.clone());
            let artifact = match &g.container {
                Some(c) => {
                    config.target = TargetConfig::Docker { memory: c.memory, nano_cpus: c.nano_cpus };
                    config.service.args = g.command.clone();
                    let id = c.image.trim_start_matches("sha256:").to_string();
                    let archive = self.agent_data_dir().join("artifacts/images").join(format!("{id}.tar"));
                    let size = std::fs::metadata(archive).map_or(0, |m| m.len());
                    slipway_model::Artifact { name, platform: platform.clone(), sha256: id, size }
                }
                None => {
                    // Binaries run from the agent's artifact store, named by their digest.
                    let program = Path::new(g.command.first().map_or("", String::as_str));
                    let sha = program
                        .strip_prefix(&store_dir)
                        .ok()
                        .and_then(|p| p.to_str())
                        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                        .ok_or_else(|| {
                            DeployError::input(format!(
                                "release #{} ({}) runs `{}`, which is not in the agent's artifact store",
                                g.release,
                                g.version,
                                program.display()
                            ))
                            .hint("deploy a release to take the environment over")
                        })?
                        .to_string();
                    config.service.args = g.command[1..].to_vec();
                    let size = std::fs::metadata(program).map_or(0, |m| m.len());
                    slipway_model::Artifact { name, platform: platform.clone(), sha256: sha, size }
                }
            };
            out.push(super::Found {
                id: g.release,
                version: g.version.clone(),
                artifacts: vec![artifact],
                config,
                instances: g.instances,
            });
        }
        Ok(out)
    }

    async fn check(&self) -> Result<(), DeployError> {
        self.fleet.platform().await?;
        if self.containers() && matches!(self.place, Place::Local) {
            crate::docker::ping().await?;
        }
        Ok(())
    }

    async fn prepare(&self, cx: &Cx<'_>, release: &Release) -> Result<(), DeployError> {
        check_secret_env(&self.env.name, release)?;
        let a = self.artifact(release).await?;
        match (&self.place, self.containers()) {
            (Place::Memory, _) => Ok(()),
            (Place::Local, true) => {
                // The agent loads the archive kept in the (shared) data directory; an image
                // recorded from a registry with no archive is pulled again by its digest.
                let archive = artifacts::stored_image(&self.data_dir, &a.sha256);
                if !archive.is_file()
                    && let Some(pinned) = a.pinned_reference()
                {
                    let (id, _) = crate::docker::pull(pinned, None).await?;
                    if id != a.sha256 {
                        return Err(DeployError::failed(format!(
                            "{pinned} is image sha256:{id}, the release expects sha256:{}",
                            a.sha256
                        )));
                    }
                    return Ok(());
                }
                if self.fleet.load_image(&a.sha256).await? {
                    cx.say(format!("loaded image sha256:{} into Docker", short(&a.sha256)));
                }
                Ok(())
            }
            (Place::Local, false) => artifacts::verify(&self.data_dir, a).map(|_| ()),
            (Place::Connected { name, .. }, containers) => {
                let client = AgentClient::new(slipway_api::connected_socket(&self.data_dir, name));
                if containers {
                    let (archive, file_sha) = self.image_archive(a)?;
                    if client.put_image_archive(&a.sha256, &file_sha, &archive).await? {
                        cx.say(format!("sent image archive {} to agent `{name}`", short(&a.sha256)));
                    }
                    if self.fleet.load_image(&a.sha256).await? {
                        cx.say(format!("loaded image sha256:{} into Docker on agent `{name}`", short(&a.sha256)));
                    }
                    return Ok(());
                }
                let local = artifacts::verify(&self.data_dir, a)?;
                if client.put_artifact(&a.sha256, &local).await? {
                    cx.say(format!("sent {} ({}) to agent `{name}`", a.name, a.platform));
                }
                Ok(())
            }
            (Place::Remote(remote), containers) => {
                let t = &remote.ssh;
                let host = t.hosts[0].label();
                if containers {
                    let (archive, file_sha) = self.image_archive(a)?;
                    let rel = format!("artifacts/images/{}.tar", a.sha256);
                    if super::hosts::upload_to_agent(t, &rel, &file_sha, &archive).await? {
                        cx.say(format!("uploaded image archive {} to the agent on {host}", short(&a.sha256)));
                    }
                    if self.fleet.load_image(&a.sha256).await? {
                        cx.say(format!("loaded image sha256:{} into Docker on {host}", short(&a.sha256)));
                    }
                    return Ok(());
                }
                let local = artifacts::verify(&self.data_dir, a)?;
                let rel = format!("artifacts/sha256/{}", a.sha256);
                if super::hosts::upload_to_agent(t, &rel, &a.sha256, &local).await? {
                    cx.say(format!("uploaded {} ({}) to the agent on {host}", a.name, a.platform));
                }
                Ok(())
            }
        }
    }

    async fn rollout(&self, cx: &Cx<'_>, old: Option<&Release>, new: &Release) -> Result<(), Step> {
        let Some(old) = old else { return self.first(cx, new).await };
        let live = self.fleet.status(&self.env.name).await?;
        let running = live.as_ref().and_then(|l| l.group(old.group_id())).map_or(0, |g| g.healthy());
        let target_running = live.as_ref().and_then(|l| l.group(new.group_id())).map_or(0, |g| g.healthy());
        if new.reason.is_rollback() && target_running >= self.env.instances {
            return self.switch_back(cx, new).await;
        }
        match &self.env.strategy {
            // A rollback returns to a release known to be good: judging it against the one it
            // replaces (whose failure is why it runs) would only put that one back.
            Strategy::Canary { .. } if new.reason.is_rollback() => {
                cx.say(format!("rollback: {} comes back whole, without canary analysis", new.version));
                self.rolling(cx, old, new, running).await
            }
            Strategy::Rolling { .. } => self.rolling(cx, old, new, running).await,
            Strategy::Canary { steps, analysis } => self.canary(cx, old, new, steps, analysis).await,
            Strategy::BlueGreen { keep_old, .. } => self.blue_green(cx, old, new, *keep_old).await,
        }
    }

    async fn restore(&self, cx: &Cx<'_>, old: Option<&Release>, failed: &Release) -> Result<String, Step> {
        let Some(old) = old else {
            self.fleet.remove(&self.env.name).await?;
            return Ok("stopped it; nothing ran here before".into());
        };
        let started = Instant::now();
        cx.say(format!("rolling back to {} (#{})", old.version, old.id));
        let n = old.config.instances;
        self.apply(cx, "rollback", vec![self.group(old, n, 100).await?]).await?;
        self.wait_healthy(old.group_id(), n).await?;
        // Rolled back means the failed release no longer runs, not that it is stopping.
        if failed.group_id() != old.group_id() {
            self.wait_gone(cx, failed.group_id()).await?;
        }
        Ok(format!("{} back in {:.1}s", old.version, started.elapsed().as_secs_f64()))
    }

    async fn observe(&self, current: Option<&Release>, known: &[Release]) -> Observation {
        let mut o = Observation { desired: current.map_or(0, |c| c.config.instances), ..Observation::default() };
        let live = match self.fleet.status(&self.env.name).await {
            Ok(l) => l,
            Err(e) => {
                o.unreachable = Some(match (&self.place, e.kind) {
                    (Place::Connected { name, .. }, ErrorKind::NoAgent) => {
                        format!("agent `{name}` is not connected to the server")
                    }
                    (_, ErrorKind::NoAgent) => "no agent is running: `slipway agent start`".to_string(),
                    _ => e.message,
                });
                return o;
            }
        };
        let current_group = current.map(Release::group_id);
        for g in live.iter().flat_map(|l| &l.groups) {
            for i in &g.instances {
                let healthy = i.state == slipway_api::InstanceState::Healthy;
                o.units.push(Unit {
                    name: i.container.clone().unwrap_or_else(|| format!("instance {}", i.id)),
                    release: Some(g.release),
                    version: Some(g.version.clone()),
                    state: serde_json::to_value(i.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    healthy,
                    matches: Some(g.release) == current_group,
                    digest: None,
                    error: i.last_error.clone(),
                });
            }
            let known_group = known.iter().any(|r| r.id == g.release || r.group_id() == g.release);
            if !known_group {
                o.unknown.push(format!(
                    "the agent runs {} (release #{}, {} instance(s)), which the store does not know",
                    g.version,
                    g.release,
                    g.instances.len()
                ));
            } else if Some(g.release) != current_group && g.weight > 0 {
                o.drift.push(format!(
                    "{} (release #{}) takes traffic but is not the current release",
                    g.version, g.release
                ));
            }
        }
        if let Some(c) = current {
            let group = live.as_ref().and_then(|l| l.group(c.group_id()));
            o.healthy = group.map_or(0, |g| g.healthy());
            o.failing_since = group.and_then(|g| {
                g.instances
                    .iter()
                    .filter(|i| i.state != slipway_api::InstanceState::Healthy)
                    .filter_map(|i| {
                        Some((i.since_ms?, i.last_error.clone().unwrap_or_else(|| format!("{:?}", i.state))))
                    })
                    .min_by_key(|(since, _)| *since)
            });
            match group {
                None => o.drift.push(format!("the agent does not run {} (#{})", c.version, c.id)),
                Some(g) if g.desired != c.config.instances => o.drift.push(format!(
                    "{} runs {} instance(s), the release has {}",
                    c.version, g.desired, c.config.instances
                )),
                Some(g) if g.weight == 0 => o.drift.push(format!("{} takes no traffic", c.version)),
                Some(_) => {}
            }
            o.drift.extend(self.stray_containers(live.as_ref(), c).await);
            if let Some((actual, why)) = self.replaced_binary(c).await {
                o.drift.push(why);
                for u in o.units.iter_mut().filter(|u| u.matches) {
                    u.digest = Some(actual.clone());
                }
            }
        }
        o
    }

    async fn reconcile(&self, cx: &Cx<'_>, current: &Release) -> Result<Vec<String>, DeployError> {
        let o = self.observe(Some(current), std::slice::from_ref(current)).await;
        if let Some(why) = o.unreachable {
            return Err(DeployError::new(ErrorKind::NoAgent, why));
        }
        if self.replaced_binary(current).await.is_some() {
            // The agent's store is this machine's only copy: nothing to put back from.
            let a = self.artifact(current).await?;
            artifacts::verify(&self.data_dir, a)?;
        }
        if o.drift.is_empty() && o.unknown.is_empty() && o.healthy >= current.config.instances {
            return Ok(Vec::new());
        }
        let n = current.config.instances;
        cx.record("repair", json!({"release": current.id, "instances": n})).await?;
        self.fleet.apply(&self.env.name, &self.base_spec(vec![self.group(current, n, 100).await?])).await?;
        match self.wait_healthy(current.group_id(), n).await {
            Ok(()) => Ok(vec![format!("back on {} (#{}), {n} instance(s) healthy", current.version, current.id)]),
            Err(Step::Failed(why)) => Ok(vec![format!("put {} (#{}) back, but {why}", current.version, current.id)]),
            Err(Step::Error(e)) => Err(e),
        }
    }

    async fn prune(&self, cx: &Cx<'_>, current: &Release) -> Result<Vec<String>, DeployError> {
        let live = self.fleet.status(&self.env.name).await.ok().flatten();
        // Another agent's containers on the same engine are that agent's to keep.
        let ours = self.agent_data_dir().canonicalize().ok().map(|p| p.display().to_string());
        let mut out = Vec::new();
        for k in self.strays(live.as_ref(), current).await? {
            if k.agent.as_ref().is_some_and(|a| Some(a) != ours.as_ref()) {
                continue;
            }
            cx.record("prune", json!({"container": k.name})).await?;
            crate::docker::remove(&k.name).await?;
            out.push(format!("removed container {} (not part of {})", k.name, current.version));
        }
        Ok(out)
    }

    async fn retire(&self, cx: &Cx<'_>, current: &Release) -> Result<Vec<String>, DeployError> {
        let live = self.fleet.status(&self.env.name).await?;
        let units: Vec<String> = live
            .iter()
            .flat_map(|l| &l.groups)
            .flat_map(|g| g.instances.iter().map(move |i| (g, i)))
            .map(|(g, i)| {
                format!("{} ({})", i.container.clone().unwrap_or_else(|| format!("instance {}", i.id)), g.version)
            })
            .collect();
        cx.record("retire", json!({"release": current.id, "units": units})).await?;
        self.fleet.remove(&self.env.name).await?;
        // Stopped means gone, not stopping: wait as a rollback does.
        let deadline = Instant::now() + self.env.drain_timeout + self.env.stop_grace + Duration::from_secs(5);
        while self.fleet.status(&self.env.name).await?.is_some_and(|s| s.groups.iter().any(|g| !g.instances.is_empty()))
            && Instant::now() < deadline
        {
            tokio::time::sleep(POLL).await;
        }
        Ok(if units.is_empty() {
            vec!["nothing ran".to_string()]
        } else {
            units.into_iter().map(|u| format!("stopped and removed {u}")).collect()
        })
    }

    async fn finished(&self, cx: &Cx<'_>, history: &[Release]) {
        if let (Kind::Docker(d), Place::Local) = (&self.env.target, &self.place) {
            prune_images(cx, &self.data_dir, history, d.keep_images).await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.env.listen)
    }
}

/// Why an agent connected to the server cannot be reached.
pub(crate) fn not_connected(name: &str, data_dir: &Path, e: slipway_api::ApiError) -> DeployError {
    match e {
        slipway_api::ApiError::NotRunning { .. } => DeployError::new(
            ErrorKind::NoAgent,
            format!("agent `{name}` is not connected to the server (nothing at {})", slipway_api::connected_socket(data_dir, name).display()),
        )
        .hint(format!(
            "start it on its machine: `slipway agent --server URL --token AGENT_TOKEN --name {name}`; only a server deploys to `agent: {{name: …}}` (`slipway deploy --server URL`)"
        )),
        e => DeployError::failed(format!("agent `{name}`: {e}")),
    }
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// Keeps the images of the newest `keep` distinct good releases of the environment (the
/// current one included) and removes older and failed ones.
async fn prune_images(cx: &Cx<'_>, data_dir: &Path, all: &[Release], keep: u32) {
    let mut keep_ids: Vec<String> = Vec::new();
    let mut drop_ids: Vec<String> = Vec::new();
    for r in all.iter().filter(|r| r.status.was_good()) {
        for a in &r.artifacts {
            if keep_ids.contains(&a.sha256) || drop_ids.contains(&a.sha256) {
                continue;
            }
            if keep_ids.len() < keep as usize {
                keep_ids.push(a.sha256.clone())
            } else {
                drop_ids.push(a.sha256.clone())
            }
        }
    }
    // Failed releases' images go too, unless a kept release uses the same image.
    for r in all.iter().filter(|r| r.status == slipway_model::ReleaseStatus::Failed) {
        for a in &r.artifacts {
            if !keep_ids.contains(&a.sha256) && !drop_ids.contains(&a.sha256) {
                drop_ids.push(a.sha256.clone());
            }
        }
    }
    let removed = crate::docker::prune(data_dir, &keep_ids, &drop_ids).await;
    if !removed.is_empty() {
        cx.say(format!("removed {} old image(s): {} (keep_images: {keep})", removed.len(), removed.join(", ")));
    }
}
