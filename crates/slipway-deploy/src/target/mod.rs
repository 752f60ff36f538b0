//! The seam between the engine and where services run. A [`Target`] makes a release's
//! artifacts available, rolls a release out by the environment's strategy, puts the previous
//! release back, and observes what runs — for the local agent and agents on other machines
//! (processes or Docker containers, [`agent`]) and for ssh + systemd hosts ([`hosts`]). The
//! engine only ever talks to this trait; [`Connector::connect`] is the one place that looks at
//! an environment's kind of target.

pub mod agent;
pub mod hosts;
pub mod memory;

use std::path::PathBuf;

use async_trait::async_trait;
use slipway_model::environment::{Environment, Target as TargetKind};
use slipway_model::release::{Release, ReleaseId};
use slipway_store::Store;

use crate::{DeployError, Events};

/// What a rollout step can end in besides success.
pub enum Step {
    /// A gate failed: the new release is not good (health, analysis, a host refused it).
    Failed(String),
    /// The machinery failed (agent, store, network): the release may be fine.
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

/// What a target gets from the engine while it works on one release: the environment, the
/// journal (each step is recorded before it acts), approvals and the event stream.
pub struct Cx<'a> {
    pub env: &'a Environment,
    pub store: &'a Store,
    pub events: &'a Events,
    /// The release the journal entries belong to.
    pub journal: ReleaseId,
}

impl Cx<'_> {
    pub fn say(&self, line: impl Into<String>) {
        self.events.say(line);
    }

    /// Records a step in the journal (and the event stream) before it acts.
    pub async fn record(&self, step: &str, detail: serde_json::Value) -> Result<(), DeployError> {
        self.store.record_step(self.journal, step, &detail).await?;
        self.events.emit(slipway_model::event::DeployEvent::Step {
            environment: self.env.name.clone(),
            release: self.journal,
            step: step.to_string(),
            detail,
        });
        Ok(())
    }

    /// Whether `release` got an approval at or after `since_ms` (a canary's manual pause).
    pub async fn approved_since(&self, release: ReleaseId, since_ms: i64) -> Result<bool, DeployError> {
        Ok(self.store.approvals(release).await?.iter().any(|a| a.at_ms >= since_ms))
    }
}

/// One thing that runs a release: an instance, a container, a host.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Unit {
    /// `instance 3`, `container dev-4-1`, `deploy@10.0.0.5:22`.
    pub name: String,
    /// The release (agent group) it belongs to, when known.
    pub release: Option<ReleaseId>,
    pub version: Option<String>,
    /// What the target says about it: `healthy`, `starting`, `active`, `inactive`, …
    pub state: String,
    pub healthy: bool,
    /// Whether it runs the current release as released.
    pub matches: bool,
    /// The digest of what it runs, when the target can read it back.
    pub digest: Option<String>,
    /// Its last failure (a health check, an exit, an unreachable host).
    pub error: Option<String>,
}

/// What a target runs for an environment, compared with its current release. Observing
/// changes nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    /// Why the target could not be read (no agent, hosts unreachable).
    pub unreachable: Option<String>,
    pub units: Vec<Unit>,
    /// Units of the current release that pass their health checks, and how many it should have.
    pub healthy: u32,
    pub desired: u32,
    /// What differs from "the current release, as released": strays, wrong versions, a
    /// release the store does not know.
    pub drift: Vec<String>,
    /// Something runs that no release of the store accounts for (the store was lost or is
    /// older than the target): reported, never repaired to nothing.
    pub unknown: Vec<String>,
    /// Units of the current release that are not healthy: since when (Unix ms, the earliest)
    /// and what the first of them says.
    pub failing_since: Option<(u64, String)>,
}

/// A release a target runs that the store does not know, as it runs: what `slipway adopt`
/// records (under the agent's own id for it, so the running instances stay as they are).
#[derive(Debug, Clone)]
pub struct Found {
    pub id: slipway_model::ReleaseId,
    pub version: String,
    pub artifacts: Vec<slipway_model::Artifact>,
    pub config: slipway_model::release::ReleaseConfig,
    pub instances: u32,
}

#[async_trait]
pub trait Target: Send + Sync {
    /// What runs that none of `known` accounts for, read from the target as it runs.
    async fn found(&self, _known: &[Release]) -> Result<Vec<Found>, DeployError> {
        Err(DeployError::input("adopting what runs is available for agent targets (`local`, `docker`) only")
            .hint("deploy a release to take the environment over"))
    }

    /// Whether the target can take a release now; checked before anything is recorded.
    async fn check(&self) -> Result<(), DeployError>;

    /// Makes the release's artifacts available where it will run (verified, uploaded, loaded).
    async fn prepare(&self, cx: &Cx<'_>, release: &Release) -> Result<(), DeployError>;

    /// Rolls `new` out over `old` (`None`: nothing ran before) by the environment's strategy,
    /// waiting on health checks and analysis; `Step::Failed` when a gate fails. A target that
    /// puts hosts back itself as it goes says so in [`Target::restores_itself`].
    async fn rollout(&self, cx: &Cx<'_>, old: Option<&Release>, new: &Release) -> Result<(), Step>;

    /// After a failed rollout: puts `old` back in full (or stops everything when it is
    /// `None`), waiting for it to be healthy; returns what it did, for the record.
    async fn restore(&self, cx: &Cx<'_>, old: Option<&Release>, failed: &Release) -> Result<String, Step>;

    /// Whether [`Target::rollout`] already put every changed unit back when it failed.
    fn restores_itself(&self) -> bool {
        false
    }

    /// What runs now, compared with `current` and the environment's other known releases.
    async fn observe(&self, current: Option<&Release>, known: &[Release]) -> Observation;

    /// Puts `current` back where what runs differs from it (after an interrupted deploy, on a
    /// recorded intent); returns one line per change.
    async fn reconcile(&self, cx: &Cx<'_>, current: &Release) -> Result<Vec<String>, DeployError>;

    /// Removes what runs for the environment but is no part of `current` (a stray container
    /// carrying its label): a GitOps application's `prune`. One line per removal.
    async fn prune(&self, _cx: &Cx<'_>, _current: &Release) -> Result<Vec<String>, DeployError> {
        Ok(Vec::new())
    }

    /// Stops and removes everything that runs for the environment (`current` and any other
    /// release's units), leaving nothing that a restart brings back: its GitOps desired state
    /// was deleted, with prune. One line per thing removed.
    async fn retire(&self, cx: &Cx<'_>, current: &Release) -> Result<Vec<String>, DeployError>;

    /// After a release became current: clean up what older releases left (images, release
    /// directories), keeping what a rollback needs.
    async fn finished(&self, _cx: &Cx<'_>, _history: &[Release]) {}

    /// Where the environment answers.
    fn url(&self) -> String;
}

/// Makes the target of an environment.
#[async_trait]
pub trait Connector: Send + Sync {
    async fn connect(&self, env: &Environment) -> Result<Box<dyn Target>, DeployError>;
}

/// The real targets: this machine's agent (its socket in the data directory), an agent on
/// another machine (through an SSH tunnel), or ssh + systemd hosts.
pub struct Targets {
    pub data_dir: PathBuf,
}

#[async_trait]
impl Connector for Targets {
    async fn connect(&self, env: &Environment) -> Result<Box<dyn Target>, DeployError> {
        Ok(match (&env.target, &env.agent) {
            (TargetKind::Ssh(t), _) => Box::new(hosts::Hosts::new(env, t.clone(), self.data_dir.clone())),
            (TargetKind::Local | TargetKind::Docker(_), None) => {
                Box::new(agent::AgentTarget::local(env, &self.data_dir))
            }
            (TargetKind::Local | TargetKind::Docker(_), Some(remote)) => {
                Box::new(agent::AgentTarget::remote(env, &self.data_dir, remote).await?)
            }
        })
    }
}
