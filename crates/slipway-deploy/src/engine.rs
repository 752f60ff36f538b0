//! The deploy engine: takes a request with an actor, records the release, takes the
//! environment's lock (with a lease it renews; losing it aborts the rollout), journals each
//! step before it acts, drives the environment's [`Target`] through the strategy, and rolls
//! back to the release before when a gate fails. It is the single writer of releases; targets
//! only run what they are told, and every line of progress is an event.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slipway_model::Actor;
use slipway_model::environment::Environment;
use slipway_model::event::{DeployEvent, SCHEMA};
use slipway_model::release::{NewRelease, Release, ReleaseConfig, ReleaseId, ReleaseReason, ReleaseStatus};
use slipway_store::{Lock, Store};

use crate::artifacts::ArtifactSet;
use crate::plan;
use crate::target::{Connector, Cx, Step, Target, Targets};
use crate::{DeployError, ErrorKind, Events, Sink};

/// How an engine behaves; fixed when it is made.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where artifacts are kept (`<data-dir>/artifacts`).
    pub data_dir: PathBuf,
    /// This process, as a lock owner (`pid 123 on host`).
    pub owner: String,
    /// The deploy lock's lease: a crashed deploy blocks the environment at most this long.
    pub lease: Duration,
    /// How long to wait for another deploy of the environment to finish.
    pub lock_wait: Duration,
    /// How long a protected deploy waits for its approvals.
    pub approval_wait: Duration,
}

/// What a finished request did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub release: Release,
    pub url: String,
    pub took: Duration,
    /// Nothing was done: the environment already ran these artifacts with these settings.
    pub unchanged: bool,
}

pub struct Engine {
    store: Store,
    config: EngineConfig,
    targets: Arc<dyn Connector>,
    sink: Sink,
    /// The release this engine is working on (to record an interruption).
    active: Mutex<Option<ReleaseId>>,
}

/// How the lock was lost while a rollout ran.
enum LeaseLost {
    /// Another process holds it now (our lease ran out and it recovered the lock).
    TakenOver,
    /// It could not be renewed (the store did not answer) until the lease ran out.
    Expired(String),
}

impl Engine {
    /// An engine on the real targets (agents, Docker, ssh hosts).
    pub fn new(store: Store, config: EngineConfig, sink: Sink) -> Engine {
        let targets = Arc::new(Targets { data_dir: config.data_dir.clone() });
        Engine::with_targets(store, config, targets, sink)
    }

    /// An engine on the targets `targets` makes (the tests' in-memory ones).
    pub fn with_targets(store: Store, config: EngineConfig, targets: Arc<dyn Connector>, sink: Sink) -> Engine {
        Engine { store, config, targets, sink, active: Mutex::new(None) }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub(crate) fn events(&self, env: &Environment) -> Events {
        Events::new(self.sink.clone(), &env.name)
    }

    pub(crate) async fn target(&self, env: &Environment) -> Result<Box<dyn Target>, DeployError> {
        self.targets.connect(env).await
    }

    // ----- the requests ----------------------------------------------------------------

    /// Deploys new artifacts to `env`; a no-op when it already runs them with these settings
    /// (unless `force`).
    pub async fn deploy(
        &self,
        actor: &Actor,
        env: &Environment,
        set: &ArtifactSet,
        branch: Option<String>,
        force: bool,
    ) -> Result<Outcome, DeployError> {
        let config = ReleaseConfig::of(env);
        if !force
            && let Some(current) = self.store.current(&env.name).await?
            && current.status == ReleaseStatus::Healthy
            && current.same_as(&set.artifacts, &config.hash())
        {
            let target = self.target(env).await?;
            return Ok(Outcome { url: target.url(), release: current, took: Duration::ZERO, unchanged: true });
        }
        self.check_branch(env, branch.as_deref())?;
        let new = NewRelease {
            environment: env.name.clone(),
            version: set.version.clone(),
            artifacts: set.artifacts.clone(),
            config,
            commit: set.commit.clone(),
            branch,
            actor: actor.name.clone(),
            reason: ReleaseReason::Deploy,
            source_release: None,
            status: ReleaseStatus::Queued,
            pipeline: actor.pipeline.clone(),
        };
        self.run(env, new).await
    }

    /// Records a deploy that signatures refused before its artifacts were even fetched (an
    /// unsigned image is never pulled) as a failed release of `version`, and gives `e` back.
    /// Other errors pass through unrecorded.
    pub async fn record_refusal(
        &self,
        actor: &Actor,
        env: &Environment,
        version: Option<&str>,
        e: DeployError,
    ) -> DeployError {
        if e.kind != ErrorKind::Unsigned {
            return e;
        }
        let new = NewRelease {
            environment: env.name.clone(),
            // An image reference gives its tag.
            version: version
                .map(|v| v.split('@').next().unwrap_or(v))
                .map(|v| v.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or(v, |(_, t)| t))
                .unwrap_or("unknown")
                .to_string(),
            artifacts: Vec::new(),
            config: ReleaseConfig::of(env),
            commit: None,
            branch: None,
            actor: actor.name.clone(),
            reason: ReleaseReason::Deploy,
            source_release: None,
            status: ReleaseStatus::Queued,
            pipeline: actor.pipeline.clone(),
        };
        let _ = self.record_refused(env, &new, &e).await;
        e
    }

    /// Records `new` as a failed release refused for `e`'s reason, before anything ran.
    async fn record_refused(&self, env: &Environment, new: &NewRelease, e: &DeployError) -> Result<(), DeployError> {
        let release = self.store.create_release(new).await?;
        let _ = self.store.set_status(release.id, ReleaseStatus::Failed, Some(&e.message)).await;
        self.events(env).say(format!("release #{}: refused: {}", release.id, e.message));
        Ok(())
    }

    /// Promotes what runs in `from` to `to`: the same artifacts, never a rebuild.
    pub async fn promote(&self, actor: &Actor, from: &Environment, to: &Environment) -> Result<Outcome, DeployError> {
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
        self.check_branch(to, source.branch.as_deref())?;
        self.events(to)
            .say(format!("promoting {} (release #{} in {}) to {}", source.version, source.id, from.name, to.name));
        let new =
            NewRelease::again(&source, &to.name, ReleaseConfig::of(to), &actor.name, ReleaseReason::Promote, source.id);
        self.run(to, new).await
    }

    /// Rolls `env` back to the release before the current one (or to `version`): its
    /// artifacts and the settings it ran with.
    pub async fn rollback(
        &self,
        actor: &Actor,
        env: &Environment,
        version: Option<&str>,
    ) -> Result<Outcome, DeployError> {
        self.rollback_as(actor, env, version, ReleaseReason::Rollback, None).await
    }

    /// Rolls back to the release before because an alert fired (`why` says which): recorded
    /// as `alert-rollback`, and `why` kept on the release that was rolled back.
    pub async fn alert_rollback(&self, actor: &Actor, env: &Environment, why: &str) -> Result<Outcome, DeployError> {
        self.rollback_as(actor, env, None, ReleaseReason::AlertRollback, Some(why)).await
    }

    async fn rollback_as(
        &self,
        actor: &Actor,
        env: &Environment,
        version: Option<&str>,
        reason: ReleaseReason,
        why: Option<&str>,
    ) -> Result<Outcome, DeployError> {
        let Some(current) = self.store.current(&env.name).await? else {
            return Err(DeployError::input(format!("`{}` has never been deployed: nothing to roll back", env.name)));
        };
        let good = self.store.good_releases(&env.name).await?;
        let to = good.into_iter().find(|r| {
            r.group_id() != current.group_id()
                && r.artifacts != current.artifacts
                && match version {
                    Some(v) => r.version == v,
                    None => r.id < current.id,
                }
        });
        let Some(to) = to else {
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
        self.events(env)
            .say(format!("rolling {} back from {} to {} (release #{})", env.name, current.version, to.version, to.id));
        // A rollback runs what ran then, arguments and environment included.
        let config = to.config.clone();
        if let Some(why) = why {
            self.store.set_status(current.id, current.status, Some(why)).await?;
        }
        let new = NewRelease::again(&to, &env.name, config, &actor.name, reason, to.group_id());
        let mut out = self.run(env, new).await;
        // The rollback says why too.
        if let (Some(why), Ok(o)) = (why, &mut out) {
            self.store.set_status(o.release.id, o.release.status, Some(why)).await?;
            o.release.status_detail = Some(why.to_string());
        }
        out
    }

    /// Approves the release waiting in `env` (or `release`).
    pub async fn approve(
        &self,
        actor: &Actor,
        env: &Environment,
        release: Option<ReleaseId>,
    ) -> Result<Release, DeployError> {
        let approver = actor.name.as_str();
        if !env.protection.approvers.is_empty() && !env.protection.approvers.iter().any(|a| a == approver) {
            return Err(DeployError::new(
                ErrorKind::Refused,
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
        // Only a release still on its way can use an approval; one that ended cannot.
        if !r.status.is_unfinished() {
            return Err(DeployError::input(format!(
                "release #{} ({}) of `{}` is {}: nothing waits for an approval",
                r.id,
                r.version,
                env.name,
                r.status.as_str().replace('_', " ")
            ))
            .hint(format!(
                "deploy again, then approve the new release while it waits (`slipway approve {}`)",
                env.name
            )));
        }
        // Four eyes: the one who asked for a release does not approve it.
        if env.protection.approvals > 0 && r.actor == approver {
            return Err(DeployError::new(
                ErrorKind::Refused,
                format!("`{approver}` asked for release #{} of `{}` and may not approve it too", r.id, env.name),
            )
            .hint("four eyes: someone else approves it"));
        }
        self.store.approve(&env.name, r.id, approver).await?;
        Ok(r)
    }

    /// Called when the request working on `env` was stopped (Ctrl-C, SIGTERM): a release that
    /// still waited is recorded as canceled; one that had started is repaired at once (the
    /// environment goes back to its current release).
    pub async fn interrupted(&self, env: &Environment) -> Result<Vec<String>, DeployError> {
        let id = *self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = id
            && let Some(r) = self.store.release(id).await?
            && r.status == ReleaseStatus::Queued
        {
            self.store.set_status(id, ReleaseStatus::Failed, Some("canceled while it waited")).await?;
        }
        // Our own lock is ours to take again; the release we were deploying is the intent.
        self.repair_with_lock(env, true).await
    }

    /// Puts the target back on the current release when it drifted from it (a group that
    /// takes traffic but is not current, fewer instances than released, a unit edited or a
    /// binary replaced on a host): what a GitOps application's `selfHeal` asks for. With
    /// `prune`, what runs for the environment but is no part of the release (a stray
    /// container) is removed first. What it did, line by line (nothing when the target
    /// matches, or another deploy holds the environment).
    pub async fn heal(&self, env: &Environment, prune: bool) -> Result<Vec<String>, DeployError> {
        if !prune {
            return self.repair_with_lock(env, true).await;
        }
        let target = self.target(env).await?;
        match self.store.lock(&env.name, &self.config.owner, None, self.config.lease).await? {
            Lock::Held { .. } => Ok(Vec::new()),
            _ => {
                let r = async {
                    let mut lines = Vec::new();
                    if let Some(c) = self.store.current(&env.name).await? {
                        let events = self.events(env);
                        let cx = Cx { env, store: &self.store, events: &events, journal: c.id };
                        for line in target.prune(&cx, &c).await? {
                            events.say(format!("pruning `{}`: {line}", env.name));
                            lines.push(line);
                        }
                    }
                    lines.extend(self.repair_locked(env, target.as_ref(), None, true).await?);
                    Ok(lines)
                }
                .await;
                let _ = self.store.unlock(&env.name, &self.config.owner).await;
                r
            }
        }
    }

    /// Retires an environment whose desired state no longer exists (a GitOps application's
    /// file deleted, with prune): everything that runs for it is stopped and removed, its
    /// current release becomes `retired`, and it has no current release (so nothing brings it
    /// back). `None` when there is nothing to retire or another deploy holds the environment;
    /// else what was removed, line by line. A target that fails leaves the store as it was.
    pub async fn retire(&self, env: &Environment) -> Result<Option<Vec<String>>, DeployError> {
        let Some(current) = self.store.current(&env.name).await? else { return Ok(None) };
        let target = self.target(env).await?;
        match self.store.lock(&env.name, &self.config.owner, None, self.config.lease).await? {
            Lock::Held { .. } => Ok(None),
            _ => {
                let r = async {
                    let events = self.events(env);
                    let cx = Cx { env, store: &self.store, events: &events, journal: current.id };
                    let lines = target.retire(&cx, &current).await?;
                    for line in &lines {
                        events.say(format!("retiring `{}`: {line}", env.name));
                    }
                    if !self.store.retire(&env.name, current.id).await? {
                        return Ok(None);
                    }
                    events.say(format!("`{}` retired: {} (#{}) no longer runs", env.name, current.version, current.id));
                    Ok(Some(lines))
                }
                .await;
                let _ = self.store.unlock(&env.name, &self.config.owner).await;
                r
            }
        }
    }

    /// Repairs an environment that a deploy left mid-way: when the journal holds a release
    /// still `deploying` whose lock lease ran out (its process died), that release is marked
    /// failed and the target is put back on the current release. Acts on that recorded intent
    /// only — never on drift or on a store that knows less than the target (see `observe`).
    pub async fn repair(&self, env: &Environment) -> Result<Vec<String>, DeployError> {
        if !self.store.unfinished(&env.name).await?.iter().any(|r| r.status == ReleaseStatus::Deploying) {
            return Ok(Vec::new());
        }
        self.repair_with_lock(env, false).await
    }

    /// Brings back an environment whose target runs nothing at all although the store has a
    /// current release: an agent that lost its state (`agent/state.json` gone or unreadable).
    /// The current release is the recorded intent; a target that runs anything is left alone
    /// (`status` reports it, and a deploy, rollback or repair decides). `None`: nothing to do.
    pub async fn restore(&self, env: &Environment) -> Result<Option<String>, DeployError> {
        let Some(current) = self.store.current(&env.name).await? else { return Ok(None) };
        let target = self.target(env).await?;
        let o = target.observe(Some(&current), std::slice::from_ref(&current)).await;
        if let Some(why) = o.unreachable {
            return Err(DeployError::new(ErrorKind::NoAgent, why));
        }
        if !o.units.is_empty() {
            return Ok(None);
        }
        match self.store.lock(&env.name, &self.config.owner, None, self.config.lease).await? {
            Lock::Held { owner, .. } => Ok(Some(format!("left to {owner}, which is deploying it"))),
            _ => {
                let events = self.events(env);
                let cx = Cx { env, store: &self.store, events: &events, journal: current.id };
                let r = async {
                    target.prepare(&cx, &current).await?;
                    target.reconcile(&cx, &current).await
                }
                .await;
                let _ = self.store.unlock(&env.name, &self.config.owner).await;
                Ok(Some(r?.join("; ")))
            }
        }
    }

    /// Records what the environment's target runs although the store does not know it (a
    /// lost store, one restored from an old backup) as a release — `adopt`, healthy, under the
    /// agent's own id for it — and makes it current. Nothing on the target changes.
    pub async fn adopt(&self, actor: &Actor, env: &Environment) -> Result<Release, DeployError> {
        let target = self.target(env).await?;
        if let Lock::Held { owner, .. } =
            self.store.lock(&env.name, &self.config.owner, None, self.config.lease).await?
        {
            return Err(DeployError::new(ErrorKind::Busy, format!("`{}` is being deployed by {owner}", env.name))
                .hint("adopt after that deploy ends, if there is still something to adopt"));
        }
        let r = async {
            let known = self.store.history(&env.name, 10_000).await?;
            let found = target.found(&known).await?;
            let f = match found.as_slice() {
                [] => {
                    return Err(DeployError::input(format!(
                        "nothing to adopt: the store knows everything `{}` runs",
                        env.name
                    ))
                    .hint(format!("see `slipway status {}`", env.name)));
                }
                [one] => one.clone(),
                many => {
                    let list: Vec<String> = many.iter().map(|f| format!("{} (#{})", f.version, f.id)).collect();
                    return Err(DeployError::input(format!(
                        "`{}` runs several releases the store does not know ({}): which one is meant cannot be told",
                        env.name,
                        list.join(", ")
                    ))
                    .hint(format!("deploy a release to take `{}` over", env.name)));
                }
            };
            let new = NewRelease {
                environment: env.name.clone(),
                version: f.version.clone(),
                artifacts: f.artifacts.clone(),
                config: f.config.clone(),
                commit: None,
                branch: None,
                actor: actor.name.clone(),
                reason: ReleaseReason::Adopt,
                source_release: None,
                status: ReleaseStatus::Healthy,
                pipeline: None,
            };
            let Some(release) = self.store.adopt_release(&new, f.id).await? else {
                return Err(DeployError::input(format!(
                    "the agent runs {} as release #{}, but the store has another release #{}",
                    f.version, f.id, f.id
                ))
                .hint(format!("deploy a release to take `{}` over", env.name)));
            };
            self.store.set_current(&env.name, release.id, ReleaseStatus::Replaced).await?;
            self.events(env).say(format!(
                "adopted {} (#{}) on `{}`: {} instance(s), recorded as they run",
                release.version, release.id, env.name, f.instances
            ));
            Ok(release)
        }
        .await;
        let _ = self.store.unlock(&env.name, &self.config.owner).await;
        r
    }

    /// Repairs `env` under its lock, unless another process holds it (then it is theirs).
    async fn repair_with_lock(&self, env: &Environment, always: bool) -> Result<Vec<String>, DeployError> {
        let target = self.target(env).await?;
        match self.store.lock(&env.name, &self.config.owner, None, self.config.lease).await? {
            Lock::Held { .. } => Ok(Vec::new()),
            _ => {
                let r = self.repair_locked(env, target.as_ref(), None, always).await;
                let _ = self.store.unlock(&env.name, &self.config.owner).await;
                r
            }
        }
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
            ErrorKind::Refused,
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
        let events = self.events(env);
        // Signatures first: an unsigned release touches nothing, and its refusal is recorded.
        if let Err(e) = crate::signatures::check(&self.config.data_dir, env, &new.artifacts).await {
            self.record_refused(env, &new, &e).await?;
            return Err(e);
        }
        let target = self.target(env).await?;
        // Without a reachable target nothing can happen: say so before recording anything.
        target.check().await?;
        let release = self.store.create_release(&new).await?;
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) = Some(release.id);
        events.emit(DeployEvent::DeployStarted {
            schema: SCHEMA,
            environment: env.name.clone(),
            release: release.id,
            version: release.version.clone(),
            reason: release.reason,
        });
        events.say(format!(
            "release #{}: {} {} ({}) by {}",
            release.id, env.name, release.version, release.reason, release.actor
        ));
        let ready = async {
            if env.protection.approvals > 0
                && !matches!(release.reason, ReleaseReason::Rollback | ReleaseReason::AlertRollback)
            {
                self.wait_approvals(env, &events, &release).await?;
            }
            self.acquire(env, &events, target.as_ref(), &release).await
        };
        if let Err(e) = ready.await {
            // The release never started: record why (unless it already says), free the lock.
            if let Ok(Some(r)) = self.store.release(release.id).await
                && r.status.is_unfinished()
            {
                let _ = self.store.set_status(release.id, ReleaseStatus::Failed, Some(&e.message)).await;
            }
            let _ = self.store.unlock(&env.name, &self.config.owner).await;
            return Err(e);
        }
        let (lost_tx, mut lost) = tokio::sync::oneshot::channel();
        // Renewing stops when this future ends or is dropped (an interrupted request).
        let renew = AbortOnDrop(tokio::spawn(keep_lease(
            self.store.clone(),
            env.name.clone(),
            self.config.owner.clone(),
            self.config.lease,
            lost_tx,
        )));
        let result = tokio::select! {
            r = self.rollout(env, &events, target.as_ref(), &release) => r,
            Ok(why) = &mut lost => Err(self.lost_lease(env, &events, target.as_ref(), &release, why).await),
        };
        drop(renew);
        let _ = self.store.unlock(&env.name, &self.config.owner).await;
        let release = self.store.release(release.id).await?.unwrap_or(release);
        result.map(|()| Outcome { release, url: target.url(), took: started.elapsed(), unchanged: false })
    }

    /// The rollout was stopped because the lock is gone: whoever holds it now repairs the
    /// environment; when nobody can (the store did not answer), the old release is put back.
    async fn lost_lease(
        &self,
        env: &Environment,
        events: &Events,
        target: &dyn Target,
        release: &Release,
        why: LeaseLost,
    ) -> DeployError {
        let detail = match why {
            LeaseLost::TakenOver => {
                "the deploy lost its lock (its lease ran out and another process took it over); that process repairs the environment".to_string()
            }
            LeaseLost::Expired(e) => {
                let current = self.store.current(&env.name).await.ok().flatten();
                let cx = Cx { env, store: &self.store, events, journal: release.id };
                let restored = match target.restore(&cx, current.as_ref(), release).await {
                    Ok(what) => what,
                    Err(Step::Failed(f)) => format!("could not roll back: {f}"),
                    Err(Step::Error(e)) => format!("could not roll back: {}", e.message),
                };
                format!("the deploy could not renew its lock ({e}) before its lease ran out; {restored}")
            }
        };
        events.say(format!("✗ {detail}"));
        let _ = self.store.set_status(release.id, ReleaseStatus::Failed, Some(&detail)).await;
        DeployError::new(
            ErrorKind::Interrupted,
            format!("release #{} ({}) of `{}` stopped: {detail}", release.id, release.version, env.name),
        )
    }

    async fn wait_approvals(&self, env: &Environment, events: &Events, release: &Release) -> Result<(), DeployError> {
        let need = env.protection.approvals as usize;
        let deadline = Instant::now() + self.config.approval_wait;
        let mut said = false;
        loop {
            let have = self.store.approvals(release.id).await?.len();
            if have >= need {
                events.say(format!("approved ({have} of {need})"));
                return Ok(());
            }
            if !said {
                events.emit(DeployEvent::ApprovalNeeded {
                    environment: env.name.clone(),
                    release: release.id,
                    version: release.version.clone(),
                    need: need as u32,
                    have: have as u32,
                });
                events.say(format!(
                    "`{}` is protected: waiting for {} approval(s) — `slipway approve {} {}`",
                    env.name,
                    need - have,
                    env.name,
                    release.id
                ));
                said = true;
            }
            if Instant::now() >= deadline {
                let why =
                    format!("{have} of {need} approval(s) after {}", plan::fmt_duration(self.config.approval_wait));
                self.store.set_status(release.id, ReleaseStatus::Failed, Some(&format!("not approved: {why}"))).await?;
                return Err(DeployError::new(
                    ErrorKind::Refused,
                    format!("release #{} was not approved: {why}", release.id),
                )
                .hint(format!(
                    "deploy again and approve the new release while it waits (`slipway approve {}`), or wait longer with --wait",
                    env.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Takes the environment's lock, waiting for a running deploy; a newer queued deploy
    /// supersedes this one. Repairs what a crashed deploy left.
    async fn acquire(
        &self,
        env: &Environment,
        events: &Events,
        target: &dyn Target,
        release: &Release,
    ) -> Result<(), DeployError> {
        let deadline = Instant::now() + self.config.lock_wait;
        let mut said = false;
        loop {
            match self.store.lock(&env.name, &self.config.owner, Some(release.id), self.config.lease).await? {
                Lock::Acquired => break,
                Lock::Recovered { previous_owner, release: held } => {
                    events.say(format!(
                        "recovered the lock of `{}` from {previous_owner}{} (its lease ran out)",
                        env.name,
                        held.map(|r| format!(", which was deploying #{r}")).unwrap_or_default()
                    ));
                    break;
                }
                Lock::Held { owner, release: held, .. } => {
                    let newer = self.store.unfinished(&env.name).await?.into_iter().find(|r| {
                        r.id > release.id && r.status == ReleaseStatus::Queued && r.reason != ReleaseReason::Rollback
                    });
                    if let Some(newer) = newer
                        && release.reason != ReleaseReason::Rollback
                    {
                        let why = format!("superseded by #{} ({}) while queued", newer.id, newer.version);
                        self.store.set_status(release.id, ReleaseStatus::Superseded, Some(&why)).await?;
                        return Err(DeployError::new(ErrorKind::Busy, format!("release #{} was {why}", release.id)));
                    }
                    if !said {
                        events.say(format!(
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
                            plan::fmt_duration(self.config.lock_wait)
                        );
                        self.store.set_status(release.id, ReleaseStatus::Failed, Some(&why)).await?;
                        return Err(DeployError::new(ErrorKind::Busy, why)
                            .hint("try again when it finishes, or wait longer with --wait"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        self.repair_locked(env, target, Some(release.id), false).await.map(|_| ())
    }

    /// With the lock held: releases another process left deploying are marked failed, and the
    /// target is put back on the current release. `always` also puts it back when nothing was
    /// left deploying (our own interrupted release, already marked).
    async fn repair_locked(
        &self,
        env: &Environment,
        target: &dyn Target,
        ours: Option<ReleaseId>,
        always: bool,
    ) -> Result<Vec<String>, DeployError> {
        let events = self.events(env);
        let stale: Vec<Release> = self
            .store
            .unfinished(&env.name)
            .await?
            .into_iter()
            .filter(|r| Some(r.id) != ours && r.status == ReleaseStatus::Deploying)
            .collect();
        if stale.is_empty() && !always {
            return Ok(Vec::new());
        }
        let current = self.store.current(&env.name).await?;
        let mut lines = Vec::new();
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
            events.say(format!("repairing `{}`: release #{} ({}) was {why}", env.name, r.id, r.version));
            self.store.set_status(r.id, ReleaseStatus::Failed, Some(&why)).await?;
            lines.push(format!("release #{} ({}) was {why}", r.id, r.version));
        }
        let journal = stale.last().map(|r| r.id);
        match &current {
            Some(c) => {
                let cx = Cx { env, store: &self.store, events: &events, journal: journal.unwrap_or(c.id) };
                for line in target.reconcile(&cx, c).await? {
                    events.say(format!("repairing `{}`: {line}", env.name));
                    lines.push(line);
                }
            }
            None => {
                if let Some(r) = stale.last() {
                    let cx = Cx { env, store: &self.store, events: &events, journal: r.id };
                    match target.restore(&cx, None, r).await {
                        Ok(line) => lines.push(line),
                        Err(Step::Failed(f)) => lines.push(f),
                        Err(Step::Error(e)) => return Err(e),
                    }
                }
            }
        }
        Ok(lines)
    }

    async fn rollout(
        &self,
        env: &Environment,
        events: &Events,
        target: &dyn Target,
        release: &Release,
    ) -> Result<(), DeployError> {
        self.store.set_status(release.id, ReleaseStatus::Deploying, None).await?;
        let cx = Cx { env, store: &self.store, events, journal: release.id };
        if let Err(e) = target.prepare(&cx, release).await {
            self.store.set_status(release.id, ReleaseStatus::Failed, Some(&e.message)).await?;
            return Err(e);
        }
        let current = self.store.current(&env.name).await?;
        let old = current.clone().filter(|c| c.group_id() != release.group_id());
        match target.rollout(&cx, old.as_ref(), release).await {
            Ok(()) => {
                self.store.set_status(release.id, ReleaseStatus::Healthy, None).await?;
                let then = if matches!(release.reason, ReleaseReason::Rollback | ReleaseReason::AlertRollback) {
                    ReleaseStatus::RolledBack
                } else {
                    ReleaseStatus::Replaced
                };
                self.store.set_current(&env.name, release.id, then).await?;
                if let Ok(history) = self.store.history(&env.name, 1000).await {
                    target.finished(&cx, &history).await;
                }
                events.say(format!(
                    "✓ {} {} is healthy ({} instance(s)) at {}",
                    env.name,
                    release.version,
                    env.instances,
                    target.url()
                ));
                Ok(())
            }
            Err(Step::Failed(why)) => Err(self.undo(&cx, target, release, old.as_ref(), &why).await),
            Err(Step::Error(e)) => {
                // The agent or the store failed under us: put the old release back if we can.
                let _ = self.undo(&cx, target, release, old.as_ref(), &e.message).await;
                Err(e)
            }
        }
    }

    /// Puts the old release back in full (or stops everything when there was none) and records
    /// it as an automatic rollback.
    async fn undo(
        &self,
        cx: &Cx<'_>,
        target: &dyn Target,
        release: &Release,
        old: Option<&Release>,
        why: &str,
    ) -> DeployError {
        let env = cx.env;
        let started = Instant::now();
        cx.say(format!("✗ {why}"));
        let outcome = match (old, target.restore(cx, old, release).await) {
            (Some(old), Ok(_)) => self.record_auto_rollback(cx, release, old, why, started, None).await,
            (Some(old), Err(Step::Failed(f))) => {
                let line = self.record_auto_rollback(cx, release, old, why, started, Some(&f)).await;
                format!("{line}, but {f}")
            }
            (Some(_), Err(Step::Error(e))) => format!("could not roll back: {}", e.message),
            (None, Ok(line)) => line,
            (None, Err(Step::Failed(f))) => format!("could not stop it: {f}"),
            (None, Err(Step::Error(e))) => format!("could not stop it: {}", e.message),
        };
        let detail = format!("{why}; {outcome}");
        let _ = self.store.set_status(release.id, ReleaseStatus::Failed, Some(&detail)).await;
        cx.say(&outcome);
        DeployError::failed(format!("release #{} ({}) of `{}` failed: {detail}", release.id, release.version, env.name))
    }

    /// Records the return to `old` as a release of its own (healthy, or failed with
    /// `unhealthy` when the old release did not come back healthy either).
    async fn record_auto_rollback(
        &self,
        cx: &Cx<'_>,
        failed: &Release,
        old: &Release,
        why: &str,
        started: Instant,
        unhealthy: Option<&str>,
    ) -> String {
        let auto = NewRelease {
            status: ReleaseStatus::Deploying,
            ..NewRelease::again(
                old,
                &cx.env.name,
                old.config.clone(),
                &failed.actor,
                ReleaseReason::AutoRollback,
                old.group_id(),
            )
        };
        match self.store.create_release(&auto).await {
            Ok(a) => {
                let detail = match unhealthy {
                    None => format!("after #{} ({}) failed: {why}", failed.id, failed.version),
                    Some(u) => format!("after #{} ({}) failed: {why}; then {u}", failed.id, failed.version),
                };
                let status = if unhealthy.is_some() { ReleaseStatus::Failed } else { ReleaseStatus::Healthy };
                let _ = self.store.set_status(a.id, status, Some(&detail)).await;
                let _ = self.store.set_current(&cx.env.name, a.id, ReleaseStatus::Replaced).await;
                format!("rolled back to {} (#{}) in {:.1}s", old.version, a.id, started.elapsed().as_secs_f64())
            }
            Err(e) => format!("rollback recorded badly: {e}"),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the lock's lease every third of it; tells `lost` when the lock is someone else's,
/// or when renewing failed for a whole lease.
async fn keep_lease(
    store: Store,
    env: String,
    owner: String,
    lease: Duration,
    lost: tokio::sync::oneshot::Sender<LeaseLost>,
) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        match store.renew(&env, &owner, lease).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                let _ = lost.send(LeaseLost::TakenOver);
                return;
            }
            Err(e) if renewed.elapsed() >= lease => {
                let _ = lost.send(LeaseLost::Expired(e.to_string()));
                return;
            }
            Err(_) => {}
        }
    }
}
