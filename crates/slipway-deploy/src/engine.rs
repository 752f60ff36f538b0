//! The deploy engine: takes an environment's lock, records the release and each step before
//! it acts, drives the agent through the strategy's steps, waits on health checks and canary
//! analysis, and rolls back to the release before when a gate fails. It is the single writer
//! of releases; the agent only runs what it is told.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use slipway_api::{AgentClient, EnvSpec, EnvStatus, GroupSpec, HealthSpec, ProbeSpec, Traffic};
use slipway_pipeline::environment::{CanaryStep, Environment, Probe, Strategy, Target};
use slipway_store::{Lock, NewRelease, Release, ReleaseStatus, Store};

use crate::artifacts::{self, ArtifactSet};
use crate::plan::{self, Verdict};
use crate::{DeployError, exit};

/// Receives one line per thing the engine does.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

const POLL: Duration = Duration::from_millis(100);

pub enum Reason {
    Deploy,
    Promote { from: Release },
    Rollback { to: Release },
}

pub struct Outcome {
    pub release: Release,
    pub url: String,
    pub took: Duration,
}

pub struct Engine {
    pub store: Store,
    pub agent: AgentClient,
    /// When the environment's agent is on another machine: how to reach it over SSH (one
    /// host; `root` is its data directory). Binaries are uploaded there before they run.
    pub remote: Option<slipway_pipeline::environment::SshTarget>,
    pub data_dir: std::path::PathBuf,
    /// Who deploys (recorded in each release).
    pub actor: String,
    /// This process, as a lock owner.
    pub owner: String,
    /// How long to wait for another deploy of the environment to finish.
    pub lock_wait: Duration,
    /// How long a protected deploy waits for its approvals.
    pub approval_wait: Duration,
    /// The deploy lock's lease: a crashed deploy blocks the environment at most this long.
    pub lease: Duration,
    pub progress: Progress,
    /// The release this engine is deploying (to mark it when the deploy is interrupted).
    pub active: std::sync::Mutex<Option<i64>>,
}

/// A gate failed: the new release is not good.
pub(crate) struct Failure(pub(crate) String);

pub(crate) enum Step {
    Failed(Failure),
    Error(DeployError),
}

impl From<DeployError> for Step {
    fn from(e: DeployError) -> Step {
        Step::Error(e)
    }
}

impl From<slipway_api::ApiError> for Step {
    fn from(e: slipway_api::ApiError) -> Step {
        Step::Error(e.into())
    }
}

impl From<slipway_store::StoreError> for Step {
    fn from(e: slipway_store::StoreError) -> Step {
        Step::Error(e.into())
    }
}

/// The agent group that runs a release: a rollback reuses the instances of the release it
/// returns to (so switching back to a set that still runs is instant).
pub fn group_id(r: &Release) -> i64 {
    match r.reason.as_str() {
        "rollback" | "auto-rollback" => r.source_release.unwrap_or(r.id),
        _ => r.id,
    }
}

/// The parts of an environment a release records and hashes.
pub fn config_json(env: &Environment) -> serde_json::Value {
    json!({
        "service": {
            "binary": env.service.binary,
            "args": env.service.args,
            "env": env.service.env,
            "workdir": env.service.workdir,
        },
        "instances": env.instances,
        "listen": env.listen,
        "strategy": env.strategy.name(),
        "health": health_spec(env),
        "target": match &env.target {
            Target::Local => json!("local"),
            Target::Ssh(_) => json!("ssh"),
            Target::Docker(d) => json!({"docker": {"memory": d.memory, "nano_cpus": d.nano_cpus}}),
        },
    })
}

pub fn config_hash(config: &serde_json::Value) -> String {
    format!("{:x}", Sha256::digest(config.to_string().as_bytes()))
}

fn health_spec(env: &Environment) -> HealthSpec {
    let h = &env.health;
    HealthSpec {
        probe: match &h.probe {
            Probe::Http(path) => ProbeSpec::Http { path: path.clone() },
            Probe::Tcp => ProbeSpec::Tcp,
            Probe::Command(c) => ProbeSpec::Command { command: c.clone() },
        },
        interval_ms: h.interval.as_millis() as u64,
        timeout_ms: h.timeout.as_millis() as u64,
        successes: h.successes,
        failures: h.failures,
    }
}

/// Where an environment answers: its entry point, or its hosts.
pub fn entry_points(env: &Environment) -> String {
    match &env.target {
        Target::Local | Target::Docker(_) => format!("http://{}", env.listen),
        Target::Ssh(_) if !env.listen.is_empty() => format!("http://{}", env.listen),
        Target::Ssh(t) => t.hosts.iter().map(|h| format!("http://{}:{}", h.host, h.port)).collect::<Vec<_>>().join(" "),
    }
}

fn now_unix_ms() -> u64 {
    slipway_store::now_ms() as u64
}

impl Engine {
    pub(crate) fn say(&self, line: impl AsRef<str>) {
        (self.progress)(line.as_ref());
    }

    fn base_spec(&self, env: &Environment, groups: Vec<GroupSpec>) -> EnvSpec {
        EnvSpec {
            listen: env.listen.clone(),
            preview_listen: match &env.strategy {
                Strategy::BlueGreen { preview, .. } => preview.clone(),
                _ => None,
            },
            health: health_spec(env),
            stop_grace_ms: env.stop_grace.as_millis() as u64,
            drain_timeout_ms: env.drain_timeout.as_millis() as u64,
            groups,
        }
    }

    /// The agent group of a release with `instances` and `weight`.
    fn group(&self, r: &Release, instances: u32, weight: u32) -> GroupSpec {
        let svc = &r.config["service"];
        let docker = &r.config["target"]["docker"];
        let container = docker.is_object().then(|| slipway_api::ContainerSpec {
            image: format!("sha256:{}", r.artifacts[0].sha256),
            memory: docker["memory"].as_i64(),
            nano_cpus: docker["nano_cpus"].as_i64(),
        });
        let binary = match &self.remote {
            Some(t) => artifacts::stored_path(std::path::Path::new(&t.root), &r.artifacts[0].sha256),
            None => artifacts::stored_path(&self.data_dir, &r.artifacts[0].sha256),
        };
        let mut command = if container.is_some() { Vec::new() } else { vec![binary.display().to_string()] };
        command.extend(svc["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)));
        let env = svc["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
            .collect();
        GroupSpec {
            release: group_id(r),
            version: r.version.clone(),
            command,
            env,
            workdir: svc["workdir"].as_str().map(str::to_string),
            instances,
            weight,
            preview: false,
            retire_at_ms: None,
            container,
        }
    }

    async fn apply(
        &self,
        env: &Environment,
        release: i64,
        step: &str,
        groups: Vec<GroupSpec>,
    ) -> Result<EnvStatus, Step> {
        let detail = json!({
            "groups": groups.iter().map(|g| json!({"release": g.release, "version": g.version, "instances": g.instances, "weight": g.weight})).collect::<Vec<_>>()
        });
        self.store.record_step(release, step, &detail).await?;
        Ok(self.agent.apply(&env.name, &self.base_spec(env, groups)).await?)
    }

    // ----- the commands ----------------------------------------------------------------

    /// Deploys new artifacts to `env`.
    pub async fn deploy(
        &self,
        env: &Environment,
        set: &ArtifactSet,
        branch: Option<String>,
        reason: Reason,
    ) -> Result<Outcome, DeployError> {
        let config = config_json(env);
        let (reason_name, source, version, artifacts, commit, branch) = match &reason {
            Reason::Deploy => {
                ("deploy", None, set.version.clone(), vec![set.binary.clone()], set.commit.clone(), branch)
            }
            Reason::Promote { from } => (
                "promote",
                Some(from.id),
                from.version.clone(),
                from.artifacts.clone(),
                from.commit.clone(),
                from.branch.clone(),
            ),
            Reason::Rollback { to } => (
                "rollback",
                Some(group_id(to)),
                to.version.clone(),
                to.artifacts.clone(),
                to.commit.clone(),
                to.branch.clone(),
            ),
        };
        // A rollback runs what ran then, arguments and environment included.
        let config = match &reason {
            Reason::Rollback { to } => to.config.clone(),
            _ => config,
        };
        if !matches!(reason, Reason::Rollback { .. }) {
            self.check_branch(env, branch.as_deref())?;
        }
        let new = NewRelease {
            environment: env.name.clone(),
            version,
            artifacts,
            config_hash: config_hash(&config),
            config,
            commit,
            branch,
            actor: self.actor.clone(),
            reason: reason_name.into(),
            source_release: source,
            status: ReleaseStatus::Queued,
        };
        self.run(env, new).await
    }

    /// Promotes what runs in `from` to `to`: the same artifacts, never a rebuild.
    pub async fn promote(&self, from: &Environment, to: &Environment) -> Result<Outcome, DeployError> {
        let Some(source) = self.store.current(&from.name).await? else {
            return Err(DeployError::input(format!("`{}` has never been deployed: nothing to promote", from.name))
                .hint(format!("deploy it first: slipway deploy {}", from.name)));
        };
        if source.status != ReleaseStatus::Healthy {
            return Err(DeployError::input(format!(
                "`{}` runs release #{} ({}) which is {}, not healthy",
                from.name,
                source.id,
                source.version,
                source.status.as_str()
            )));
        }
        if to.promote_from.as_deref().is_some_and(|f| f != from.name) {
            return Err(DeployError::input(format!(
                "`{}` is promoted from `{}`, not from `{}`",
                to.name,
                to.promote_from.as_deref().unwrap_or(""),
                from.name
            )));
        }
        self.say(format!("promoting {} (release #{} in {}) to {}", source.version, source.id, from.name, to.name));
        let dummy = ArtifactSet { version: source.version.clone(), commit: None, binary: source.artifacts[0].clone() };
        self.deploy(to, &dummy, None, Reason::Promote { from: source }).await
    }

    /// Rolls `env` back to the release before the current one (or to `version`).
    pub async fn rollback(&self, env: &Environment, version: Option<&str>) -> Result<Outcome, DeployError> {
        let Some(current) = self.store.current(&env.name).await? else {
            return Err(DeployError::input(format!("`{}` has never been deployed: nothing to roll back", env.name)));
        };
        let good = self.store.good_releases(&env.name).await?;
        let target = good.into_iter().find(|r| {
            group_id(r) != group_id(&current)
                && r.artifacts != current.artifacts
                && match version {
                    Some(v) => r.version == v,
                    None => r.id < current.id,
                }
        });
        let Some(target) = target else {
            return Err(match version {
                Some(v) => DeployError::input(format!(
                    "`{}` has no earlier healthy release of version {v} to roll back to",
                    env.name
                ))
                .hint(format!("see the releases with `slipway history {}`", env.name)),
                None => DeployError::input(format!(
                    "`{}` has no release before {} (#{}) to roll back to",
                    env.name, current.version, current.id
                )),
            });
        };
        self.say(format!(
            "rolling {} back from {} to {} (release #{})",
            env.name, current.version, target.version, target.id
        ));
        let set = ArtifactSet { version: target.version.clone(), commit: None, binary: target.artifacts[0].clone() };
        self.deploy(env, &set, None, Reason::Rollback { to: target }).await
    }

    /// Approves the release waiting in `env` (or `release`).
    pub async fn approve(
        &self,
        env: &Environment,
        release: Option<i64>,
        approver: &str,
    ) -> Result<Release, DeployError> {
        if !env.protection.approvers.is_empty() && !env.protection.approvers.iter().any(|a| a == approver) {
            return Err(DeployError::new(
                exit::REFUSED,
                format!("`{approver}` may not approve deploys to `{}`", env.name),
            )
            .hint(format!("approvers: {}", env.protection.approvers.join(", "))));
        }
        let r = match release {
            Some(id) => self.store.release(id).await?.filter(|r| r.environment == env.name),
            None => self.store.unfinished(&env.name).await?.into_iter().last(),
        };
        let Some(r) = r else {
            return Err(match release {
                Some(id) => DeployError::input(format!("`{}` has no release #{id}", env.name)),
                None => DeployError::input(format!("no release of `{}` waits for an approval", env.name)),
            });
        };
        self.store.approve(&env.name, r.id, approver).await?;
        Ok(r)
    }

    fn check_branch(&self, env: &Environment, branch: Option<&str>) -> Result<(), DeployError> {
        let p = &env.protection;
        if p.branches.is_empty() {
            return Ok(());
        }
        let allowed = branch.is_some_and(|b| {
            p.branches.iter().any(|g| globset::Glob::new(g).is_ok_and(|g| g.compile_matcher().is_match(b)))
        });
        if allowed {
            return Ok(());
        }
        Err(DeployError::new(
            exit::REFUSED,
            format!(
                "`{}` only takes deploys from {}; this one comes from {}",
                env.name,
                p.branches.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", "),
                branch.map_or("no branch (detached HEAD)".to_string(), |b| format!("`{b}`"))
            ),
        )
        .hint(format!("deploy from an allowed branch, or promote into `{}` from the environment before it", env.name)))
    }

    // ----- one release, start to end -----------------------------------------------------

    async fn run(&self, env: &Environment, new: NewRelease) -> Result<Outcome, DeployError> {
        let started = Instant::now();
        // Without an agent nothing can happen: say so before recording anything.
        if matches!(env.target, Target::Local | Target::Docker(_)) {
            self.agent.info().await?;
        }
        let release = self.store.create_release(&new).await?;
        *self.active.lock().expect("active lock") = Some(release.id);
        self.say(format!(
            "release #{}: {} {} ({}) by {}",
            release.id, env.name, release.version, release.reason, release.actor
        ));
        let ready = async {
            if env.protection.approvals > 0 && release.reason != "rollback" {
                self.wait_approvals(env, &release).await?;
            }
            self.acquire(env, &release).await
        };
        if let Err(e) = ready.await {
            // The release never started: record why (unless it already says), free the lock.
            if let Ok(Some(r)) = self.store.release(release.id).await
                && matches!(r.status, ReleaseStatus::Queued | ReleaseStatus::Deploying)
            {
                let _ = self.store.set_status(release.id, ReleaseStatus::Failed, Some(&e.message)).await;
            }
            let _ = self.store.unlock(&env.name, &self.owner).await;
            return Err(e);
        }
        // Keep the lease alive while we work; losing it means someone recovered the lock.
        let (store, name, owner, lease) = (self.store.clone(), env.name.clone(), self.owner.clone(), self.lease);
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                if !store.renew(&name, &owner, lease).await.unwrap_or(false) {
                    break;
                }
            }
        });
        let result = self.rollout(env, &release).await;
        renew.abort();
        let _ = self.store.unlock(&env.name, &self.owner).await;
        let release = self.store.release(release.id).await?.unwrap_or(release);
        result.map(|()| Outcome { release, url: entry_points(env), took: started.elapsed() })
    }

    async fn wait_approvals(&self, env: &Environment, release: &Release) -> Result<(), DeployError> {
        let need = env.protection.approvals as usize;
        let deadline = Instant::now() + self.approval_wait;
        let mut said = false;
        loop {
            let have = self.store.approvals(release.id).await?.len();
            if have >= need {
                self.say(format!("approved ({have} of {need})"));
                return Ok(());
            }
            if !said {
                self.say(format!(
                    "`{}` is protected: waiting for {} approval(s) — `slipway approve {} {}`",
                    env.name,
                    need - have,
                    env.name,
                    release.id
                ));
                said = true;
            }
            if Instant::now() >= deadline {
                let why = format!("{have} of {need} approval(s) after {}", plan::fmt_duration(self.approval_wait));
                self.store.set_status(release.id, ReleaseStatus::Failed, Some(&format!("not approved: {why}"))).await?;
                return Err(DeployError::new(
                    exit::REFUSED,
                    format!("release #{} was not approved: {why}", release.id),
                )
                .hint(format!("approve with `slipway approve {} {}` and deploy again", env.name, release.id)));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Takes the environment's lock, waiting for a running deploy; a newer queued deploy
    /// supersedes this one. Repairs what a crashed deploy left.
    async fn acquire(&self, env: &Environment, release: &Release) -> Result<(), DeployError> {
        let deadline = Instant::now() + self.lock_wait;
        let mut said = false;
        loop {
            match self.store.lock(&env.name, &self.owner, Some(release.id), self.lease).await? {
                Lock::Acquired => break,
                Lock::Recovered { previous_owner, release: held } => {
                    self.say(format!(
                        "recovered the lock of `{}` from {previous_owner}{} (its lease ran out)",
                        env.name,
                        held.map(|r| format!(", which was deploying #{r}")).unwrap_or_default()
                    ));
                    break;
                }
                Lock::Held { owner, release: held, .. } => {
                    let newer = self
                        .store
                        .unfinished(&env.name)
                        .await?
                        .into_iter()
                        .find(|r| r.id > release.id && r.status == ReleaseStatus::Queued && r.reason != "rollback");
                    if let Some(newer) = newer
                        && release.reason != "rollback"
                    {
                        let why = format!("superseded by #{} ({}) while queued", newer.id, newer.version);
                        self.store.set_status(release.id, ReleaseStatus::Superseded, Some(&why)).await?;
                        return Err(DeployError::new(exit::BUSY, format!("release #{} was {why}", release.id)));
                    }
                    if !said {
                        self.say(format!(
                            "waiting for the deploy of `{}`{} ({owner}) to finish",
                            env.name,
                            held.map(|r| format!(" (#{r})")).unwrap_or_default()
                        ));
                        said = true;
                    }
                    if Instant::now() >= deadline {
                        let why = format!(
                            "`{}` was still locked by {owner} after {}",
                            env.name,
                            plan::fmt_duration(self.lock_wait)
                        );
                        self.store.set_status(release.id, ReleaseStatus::Failed, Some(&why)).await?;
                        return Err(DeployError::new(exit::BUSY, why)
                            .hint("try again when it finishes, or wait longer with --wait"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        self.repair_locked(env, Some(release.id)).await
    }

    /// With the lock held: releases another process left deploying are marked failed, and
    /// when the agent runs anything but the current release in full (a deploy or an agent
    /// that died mid-way), the current release is put back.
    async fn repair_locked(&self, env: &Environment, ours: Option<i64>) -> Result<(), DeployError> {
        let stale: Vec<Release> = self
            .store
            .unfinished(&env.name)
            .await?
            .into_iter()
            .filter(|r| Some(r.id) != ours && r.status == ReleaseStatus::Deploying)
            .collect();
        let current = self.store.current(&env.name).await?;
        for r in &stale {
            let steps = self.store.steps(r.id).await?;
            let why = format!(
                "interrupted after {} step(s) (the deploy was stopped or its process died); {}",
                steps.len(),
                match &current {
                    Some(c) => format!("back on {} (#{})", c.version, c.id),
                    None => "nothing was running before".into(),
                }
            );
            self.say(format!("repairing `{}`: release #{} ({}) was {why}", env.name, r.id, r.version));
            self.store.set_status(r.id, ReleaseStatus::Failed, Some(&why)).await?;
        }
        if let Target::Ssh(t) = &env.target {
            if !stale.is_empty()
                && let Some(c) = &current
            {
                for line in self.ssh_restore(env, t, c).await {
                    self.say(format!("repairing `{}`: {line}", env.name));
                }
            }
            return Ok(());
        }
        let live = self.agent.env(&env.name).await?;
        match (&current, &live) {
            (Some(c), live) => {
                let id = group_id(c);
                // The instance count the current release was deployed with, not today's file.
                let want = c.config["instances"].as_u64().map_or(env.instances, |n| n as u32);
                let drift = match live {
                    None => true,
                    Some(l) => {
                        l.groups.iter().any(|g| g.release != id && g.weight > 0)
                            || l.group(id).is_none_or(|g| g.desired != want || g.weight == 0)
                    }
                };
                if !drift {
                    return Ok(());
                }
                if stale.is_empty() {
                    self.say(format!(
                        "repairing `{}`: the agent does not run {} (#{}) as released; putting it back",
                        env.name, c.version, c.id
                    ));
                }
                let g = self.group(c, want, 100);
                self.store
                    .record_step(
                        c.id,
                        "repair",
                        &json!({"interrupted": stale.iter().map(|r| r.id).collect::<Vec<_>>()}),
                    )
                    .await?;
                self.agent.apply(&env.name, &self.base_spec(env, vec![g])).await?;
                match self.wait_healthy(env, id, want).await {
                    Ok(()) | Err(Step::Failed(_)) => {}
                    Err(Step::Error(e)) => return Err(e),
                }
            }
            (None, Some(_)) => self.agent.remove(&env.name).await?,
            (None, None) => {}
        }
        Ok(())
    }

    /// Records that the release this engine was deploying was interrupted while it still
    /// waited (for the lock or approvals); a release that had started is left to `repair`.
    pub async fn cancel_waiting(&self) -> Result<(), DeployError> {
        let id = *self.active.lock().expect("active lock");
        if let Some(id) = id
            && let Some(r) = self.store.release(id).await?
            && r.status == ReleaseStatus::Queued
        {
            self.store.set_status(id, ReleaseStatus::Failed, Some("canceled while it waited")).await?;
        }
        Ok(())
    }

    /// Repairs an environment if a crashed deploy left it mid-way and nobody holds its lock.
    pub async fn repair(&self, env: &Environment) -> Result<(), DeployError> {
        match self.store.lock(&env.name, &self.owner, None, self.lease).await? {
            Lock::Held { .. } => Ok(()),
            _ => {
                let r = self.repair_locked(env, None).await;
                let _ = self.store.unlock(&env.name, &self.owner).await;
                r
            }
        }
    }

    async fn rollout(&self, env: &Environment, release: &Release) -> Result<(), DeployError> {
        self.store.set_status(release.id, ReleaseStatus::Deploying, None).await?;
        let ready = if let Some(t) = &self.remote {
            self.ready_remote(env, t, release).await
        } else if matches!(env.target, Target::Docker(_)) {
            let a = &release.artifacts[0];
            let pinned = a.name.contains("@sha256:").then_some(a.name.as_str());
            crate::docker::ensure_image(&self.data_dir, &a.sha256, pinned).await.map(|loaded| {
                if loaded {
                    self.say(format!("loaded image sha256:{} into Docker", &release.artifacts[0].sha256[..12]));
                }
            })
        } else {
            artifacts::verify(&self.data_dir, &release.artifacts[0]).map(|_| ())
        };
        if let Err(e) = ready {
            self.store.set_status(release.id, ReleaseStatus::Failed, Some(&e.message)).await?;
            return Err(e);
        }
        let current = self.store.current(&env.name).await?;
        let old = current.clone().filter(|c| group_id(c) != group_id(release));
        let result = if let Target::Ssh(t) = &env.target {
            self.ssh_rollout(env, t, old.as_ref(), release).await
        } else {
            let live = match self.agent.env(&env.name).await {
                Ok(l) => l,
                Err(e) => {
                    let e = DeployError::from(e);
                    self.store.set_status(release.id, ReleaseStatus::Failed, Some(&e.message)).await?;
                    return Err(e);
                }
            };
            match &old {
                None => self.first(env, release).await,
                Some(old) => {
                    let running = live.as_ref().and_then(|l| l.group(group_id(old))).map_or(0, |g| g.healthy());
                    let target_running =
                        live.as_ref().and_then(|l| l.group(group_id(release))).map_or(0, |g| g.healthy());
                    if release.reason == "rollback" && target_running >= env.instances {
                        self.switch_back(env, release).await
                    } else {
                        match &env.strategy {
                            Strategy::Rolling { .. } => self.rolling(env, old, release, running).await,
                            Strategy::Canary { steps, analysis } => {
                                self.canary(env, old, release, steps, analysis).await
                            }
                            Strategy::BlueGreen { keep_old, .. } => self.blue_green(env, old, release, *keep_old).await,
                        }
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                self.store.set_status(release.id, ReleaseStatus::Healthy, None).await?;
                let then =
                    if release.reason == "rollback" { ReleaseStatus::RolledBack } else { ReleaseStatus::Replaced };
                self.store.set_current(&env.name, release.id, then).await?;
                if let Target::Docker(d) = &env.target {
                    self.prune_images(env, d.keep_images).await;
                }
                self.say(format!(
                    "✓ {} {} is healthy ({} instance(s)) at {}",
                    env.name,
                    release.version,
                    env.instances,
                    entry_points(env)
                ));
                Ok(())
            }
            Err(Step::Failed(Failure(why))) => Err(self.undo(env, release, old.as_ref(), &why).await),
            Err(Step::Error(e)) => {
                // The agent or the store failed under us: put the old release back if we can.
                let _ = self.undo(env, release, old.as_ref(), &e.message).await;
                Err(e)
            }
        }
    }

    /// Puts a release's artifact on a remote agent's machine: the binary into its artifact
    /// store, or the image archive, then loaded into its Docker Engine by the agent.
    async fn ready_remote(
        &self,
        env: &Environment,
        t: &slipway_pipeline::environment::SshTarget,
        release: &Release,
    ) -> Result<(), DeployError> {
        let a = &release.artifacts[0];
        let host = t.hosts[0].label();
        if matches!(env.target, Target::Docker(_)) {
            let archive = artifacts::stored_image(&self.data_dir, &a.sha256);
            let file_sha = artifacts::sha256_file(&archive).map_err(|e| {
                DeployError::input(format!("the image archive {} is needed for a remote agent: {e}", archive.display()))
                    .hint("deploy from an image archive (--artifacts IMAGE.tar)")
            })?;
            let rel = format!("artifacts/images/{}.tar", a.sha256);
            if crate::hosts::upload_to_agent(t, &rel, &file_sha, &archive).await? {
                self.say(format!("uploaded image archive {} to the agent on {host}", &a.sha256[..12]));
            }
            if self.agent.load_image(&a.sha256).await? {
                self.say(format!("loaded image sha256:{} into Docker on {host}", &a.sha256[..12]));
            }
            return Ok(());
        }
        let local = artifacts::verify(&self.data_dir, a)?;
        let rel = format!("artifacts/sha256/{}", a.sha256);
        if crate::hosts::upload_to_agent(t, &rel, &a.sha256, &local).await? {
            self.say(format!("uploaded {} to the agent on {host}", a.name));
        }
        Ok(())
    }

    /// Keeps the images of the newest `keep` distinct releases of the environment (the
    /// current one included) and removes older ones.
    async fn prune_images(&self, env: &Environment, keep: u32) {
        let Ok(all) = self.store.history(&env.name, 1000).await else { return };
        let mut keep_ids: Vec<String> = Vec::new();
        let mut drop_ids: Vec<String> = Vec::new();
        for r in all.iter().filter(|r| {
            matches!(r.status, ReleaseStatus::Healthy | ReleaseStatus::Replaced | ReleaseStatus::RolledBack)
        }) {
            let id = r.artifacts[0].sha256.clone();
            if keep_ids.contains(&id) || drop_ids.contains(&id) {
                continue;
            }
            if keep_ids.len() < keep as usize { keep_ids.push(id) } else { drop_ids.push(id) }
        }
        // Failed releases' images go too, unless a kept release uses the same image.
        for r in all.iter().filter(|r| r.status == ReleaseStatus::Failed) {
            let id = r.artifacts[0].sha256.clone();
            if !keep_ids.contains(&id) && !drop_ids.contains(&id) {
                drop_ids.push(id);
            }
        }
        let removed = crate::docker::prune(&self.data_dir, &keep_ids, &drop_ids).await;
        if !removed.is_empty() {
            self.say(format!("removed {} old image(s): {} (keep_images: {keep})", removed.len(), removed.join(", ")));
        }
    }

    /// Puts the old release back in full (or stops everything when there was none).
    async fn undo(&self, env: &Environment, release: &Release, old: Option<&Release>, why: &str) -> DeployError {
        let started = Instant::now();
        self.say(format!("✗ {why}"));
        let outcome = match old {
            Some(old) => {
                let restored = if matches!(env.target, Target::Ssh(_)) {
                    // The hosts were put back by the rollout itself, host by host.
                    Ok(Ok(()))
                } else {
                    self.say(format!("rolling back to {} (#{})", old.version, old.id));
                    let g = self.group(old, env.instances, 100);
                    match self.apply(env, release.id, "rollback", vec![g]).await {
                        Ok(_) => Ok(self.wait_healthy(env, group_id(old), env.instances).await),
                        Err(e) => Err(e),
                    }
                };
                match restored {
                    Ok(healthy) => {
                        let auto = NewRelease {
                            environment: env.name.clone(),
                            version: old.version.clone(),
                            artifacts: old.artifacts.clone(),
                            config_hash: old.config_hash.clone(),
                            config: old.config.clone(),
                            commit: old.commit.clone(),
                            branch: old.branch.clone(),
                            actor: self.actor.clone(),
                            reason: "auto-rollback".into(),
                            source_release: Some(group_id(old)),
                            status: ReleaseStatus::Deploying,
                        };
                        match self.store.create_release(&auto).await {
                            Ok(a) => {
                                let detail = format!("after #{} ({}) failed: {why}", release.id, release.version);
                                let status =
                                    if healthy.is_ok() { ReleaseStatus::Healthy } else { ReleaseStatus::Failed };
                                let _ = self.store.set_status(a.id, status, Some(&detail)).await;
                                let _ = self.store.set_current(&env.name, a.id, ReleaseStatus::Replaced).await;
                                format!(
                                    "rolled back to {} (#{}) in {:.1}s",
                                    old.version,
                                    a.id,
                                    started.elapsed().as_secs_f64()
                                )
                            }
                            Err(e) => format!("rollback recorded badly: {e}"),
                        }
                    }
                    Err(Step::Error(e)) => format!("could not roll back: {}", e.message),
                    Err(Step::Failed(Failure(f))) => format!("could not roll back: {f}"),
                }
            }
            None if matches!(env.target, Target::Ssh(_)) => "nothing ran here before".to_string(),
            None => match self.agent.remove(&env.name).await {
                Ok(()) => "stopped it; nothing ran here before".to_string(),
                Err(slipway_api::ApiError::Status { status: 404, .. }) => "nothing ran here before".to_string(),
                Err(e) => format!("could not stop it: {e}"),
            },
        };
        let detail = format!("{why}; {outcome}");
        let _ = self.store.set_status(release.id, ReleaseStatus::Failed, Some(&detail)).await;
        self.say(&outcome);
        DeployError::new(
            exit::FAILED,
            format!("release #{} ({}) of `{}` failed: {detail}", release.id, release.version, env.name),
        )
    }

    /// Waits until `want` instances of the group pass their health checks, or fails at the
    /// deadline (sooner when instances keep crashing) with what the checks said.
    async fn wait_healthy(&self, env: &Environment, group: i64, want: u32) -> Result<(), Step> {
        let deadline = Instant::now() + env.health.deadline;
        loop {
            let status = self.agent.env(&env.name).await?;
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
                return Err(Step::Failed(Failure(match crashing {
                    Some(i) => {
                        format!("{version} keeps crashing (instance {} restarted {} times): {last}", i.id, i.restarts)
                    }
                    None => format!(
                        "{version} was not healthy within {}: {healthy} of {want} instance(s) healthy; {last}",
                        plan::fmt_duration(env.health.deadline)
                    ),
                })));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the agent has drained and stopped every instance of a group that left the
    /// spec (bounded by the drain timeout and the stop grace period).
    async fn wait_gone(&self, env: &Environment, group: i64) -> Result<(), Step> {
        let deadline = Instant::now() + env.drain_timeout + env.stop_grace + Duration::from_secs(5);
        loop {
            let status = self.agent.env(&env.name).await?;
            let left = status.as_ref().and_then(|s| s.group(group)).map_or(0, |g| g.instances.len());
            if left == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.say(format!("{left} old instance(s) still stopping; the agent finishes that on its own"));
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    // ----- strategies ----------------------------------------------------------------------

    async fn first(&self, env: &Environment, new: &Release) -> Result<(), Step> {
        self.say(format!("starting {} instance(s) of {}", env.instances, new.version));
        self.apply(env, new.id, "start", vec![self.group(new, env.instances, 100)]).await?;
        self.wait_healthy(env, group_id(new), env.instances).await
    }

    async fn switch_back(&self, env: &Environment, new: &Release) -> Result<(), Step> {
        self.say(format!("{} still runs: switching all traffic back at once", new.version));
        self.apply(env, new.id, "switch", vec![self.group(new, env.instances, 100)]).await?;
        Ok(())
    }

    async fn rolling(&self, env: &Environment, old: &Release, new: &Release, running: u32) -> Result<(), Step> {
        let (surge, unavailable) = plan::fenceposts(env);
        let old_count = if running == 0 { env.instances } else { running };
        let batches = plan::rolling_batches(old_count, env.instances, surge, unavailable);
        self.say(format!(
            "rolling update {} → {} in {} batch(es) (max surge {surge}, max unavailable {unavailable})",
            old.version,
            new.version,
            batches.len()
        ));
        for (i, b) in batches.iter().enumerate() {
            self.say(format!(
                "batch {}/{}: {} {} · {} {}",
                i + 1,
                batches.len(),
                old.version,
                b.old,
                new.version,
                b.new
            ));
            let mut groups = Vec::new();
            if b.old > 0 {
                groups.push(self.group(old, b.old, b.old));
            }
            groups.push(self.group(new, b.new, b.new.max(1)));
            self.apply(env, new.id, "batch", groups).await?;
            self.wait_healthy(env, group_id(new), b.new).await?;
        }
        self.wait_gone(env, group_id(old)).await
    }

    async fn canary(
        &self,
        env: &Environment,
        old: &Release,
        new: &Release,
        steps: &[CanaryStep],
        analysis: &slipway_pipeline::environment::Analysis,
    ) -> Result<(), Step> {
        let n = env.instances;
        let k_of = |w: u32| if w >= 100 { n } else { plan::canary_instances(n, w) };
        let mut weight = 0;
        for step in steps {
            match step {
                CanaryStep::Weight(w) => {
                    weight = *w;
                    let k = k_of(weight);
                    self.say(format!("canary: {weight}% of traffic to {} ({k} instance(s))", new.version));
                    let groups = vec![self.group(old, n, 100 - weight), self.group(new, k, weight)];
                    self.apply(env, new.id, "weight", groups).await?;
                    self.wait_healthy(env, group_id(new), k).await?;
                }
                CanaryStep::Pause(d) => {
                    self.say(format!("canary: holding {} at {weight}%, analysing", plan::fmt_duration(*d)));
                    self.analyse(env, old, new, analysis, Instant::now() + *d, None, k_of(weight)).await?;
                }
                CanaryStep::Manual => {
                    self.say(format!(
                        "canary: holding at {weight}% until `slipway approve {} {}` (analysing meanwhile)",
                        env.name, new.id
                    ));
                    let since = slipway_store::now_ms();
                    let until = Instant::now() + Duration::from_secs(7 * 24 * 3600);
                    self.analyse(env, old, new, analysis, until, Some((new.id, since)), k_of(weight)).await?;
                }
            }
        }
        self.say(format!("canary: {} takes all traffic; stopping {}", new.version, old.version));
        self.apply(env, new.id, "finish", vec![self.group(new, n, 100)]).await?;
        self.wait_gone(env, group_id(old)).await
    }

    /// Judges the canary every interval until `until` (or until an approval newer than
    /// `approval.1` arrives for release `approval.0`); fails as soon as fewer than `want` of
    /// its instances are healthy (an unhealthy canary gets no traffic to judge).
    #[expect(clippy::too_many_arguments, reason = "one call site per pause kind; a struct would only rename them")]
    async fn analyse(
        &self,
        env: &Environment,
        old: &Release,
        new: &Release,
        a: &slipway_pipeline::environment::Analysis,
        until: Instant,
        approval: Option<(i64, i64)>,
        want: u32,
    ) -> Result<(), Step> {
        let sample = |s: &Option<EnvStatus>, id: i64| -> Traffic {
            s.as_ref().and_then(|s| s.group(id)).map(|g| g.traffic.clone()).unwrap_or_default()
        };
        let status = self.agent.env(&env.name).await?;
        let (mut c0, mut s0) = (sample(&status, group_id(new)), sample(&status, group_id(old)));
        let mut next_verdict = Instant::now() + a.interval;
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            // Health is watched between verdicts too.
            tokio::time::sleep(POLL.min(until - now)).await;
            let status = self.agent.env(&env.name).await?;
            if let Some(g) = status.as_ref().and_then(|s| s.group(group_id(new)))
                && g.healthy() < want
            {
                let last = g
                    .instances
                    .iter()
                    .find_map(|i| i.last_error.clone().map(|e| format!("instance {}: {e}", i.id)))
                    .unwrap_or_default();
                return Err(Step::Failed(Failure(format!(
                    "canary {} became unhealthy: {} of {want} instance(s) healthy; {last}",
                    new.version,
                    g.healthy()
                ))));
            }
            if let Some((id, since)) = approval
                && self.store.approvals(id).await?.iter().any(|x| x.at_ms >= since)
            {
                self.say("canary: approved");
                return Ok(());
            }
            if Instant::now() < next_verdict.min(until) {
                continue;
            }
            next_verdict += a.interval;
            let (c1, s1) = (sample(&status, group_id(new)), sample(&status, group_id(old)));
            let verdict = plan::judge(&c1.since(&c0), &s1.since(&s0), a);
            self.store.record_step(new.id, "analysis", &json!({"verdict": format!("{verdict:?}")})).await?;
            match verdict {
                Verdict::Pass(s) => self.say(format!("analysis: pass ({s})")),
                Verdict::Inconclusive(s) => self.say(format!("analysis: not judged ({s})")),
                Verdict::Fail(why) => return Err(Step::Failed(Failure(format!("canary analysis failed: {why}")))),
            }
            (c0, s0) = (c1, s1);
        }
    }

    async fn blue_green(
        &self,
        env: &Environment,
        old: &Release,
        new: &Release,
        keep_old: Duration,
    ) -> Result<(), Step> {
        let n = env.instances;
        let preview = match &env.strategy {
            Strategy::BlueGreen { preview: Some(p), .. } => format!(", preview at http://{p}"),
            _ => String::new(),
        };
        self.say(format!("blue-green: starting {n} instance(s) of {} beside {}{preview}", new.version, old.version));
        let mut green = self.group(new, n, 0);
        green.preview = true;
        self.apply(env, new.id, "start", vec![self.group(old, n, 100), green.clone()]).await?;
        self.wait_healthy(env, group_id(new), n).await?;
        self.say(format!("blue-green: switching all traffic to {}", new.version));
        let mut blue = self.group(old, n, 0);
        blue.retire_at_ms = Some(now_unix_ms() + keep_old.as_millis() as u64);
        green.weight = 100;
        self.apply(env, new.id, "switch", vec![blue, green]).await?;
        self.say(format!(
            "blue-green: {} stays up {} for an instant switch back",
            old.version,
            plan::fmt_duration(keep_old)
        ));
        Ok(())
    }
}
