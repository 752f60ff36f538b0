//! Releases: what was deployed where, by whom and why (immutable once recorded), and how it
//! ended (filled in as the deploy goes). The config a release records is a typed, versioned
//! [`ReleaseConfig`]; records written before it was typed still read (schema 1).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::environment::{Environment, Probe, Strategy, Target};

pub type ReleaseId = i64;

/// Why a release exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseReason {
    /// New artifacts (a build, an image) deployed by someone.
    Deploy,
    /// The artifacts running in another environment, deployed here.
    Promote,
    /// An earlier release of this environment, deployed again by someone.
    Rollback,
    /// The release before a failed one, put back by the engine.
    AutoRollback,
    /// What a target already ran when the store did not know it (a lost or old store),
    /// recorded as it runs by `slipway adopt`.
    Adopt,
    /// The release before, put back because an alert tied to the environment fired after the
    /// rollout (the post-deploy watch, or an Alertmanager's webhook).
    AlertRollback,
}

impl ReleaseReason {
    pub const ALL: [ReleaseReason; 6] = [
        ReleaseReason::Deploy,
        ReleaseReason::Promote,
        ReleaseReason::Rollback,
        ReleaseReason::AutoRollback,
        ReleaseReason::Adopt,
        ReleaseReason::AlertRollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::Deploy => "deploy",
            ReleaseReason::Promote => "promote",
            ReleaseReason::Rollback => "rollback",
            ReleaseReason::AutoRollback => "auto-rollback",
            ReleaseReason::Adopt => "adopt",
            ReleaseReason::AlertRollback => "alert-rollback",
        }
    }

    pub fn parse(s: &str) -> Option<ReleaseReason> {
        ReleaseReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the release runs an earlier release's instances again.
    pub fn is_rollback(self) -> bool {
        matches!(self, ReleaseReason::Rollback | ReleaseReason::AutoRollback | ReleaseReason::AlertRollback)
    }
}

impl std::fmt::Display for ReleaseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a release ended (or where it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Waiting for the environment's lock (or an approval).
    Queued,
    Deploying,
    /// Fully out and healthy; the environment's current release.
    Healthy,
    /// Did not become healthy, failed its analysis, or was interrupted; the environment went
    /// back to the release before it.
    Failed,
    /// Was healthy, then replaced by a rollback.
    RolledBack,
    /// A newer deploy replaced it while it was queued.
    Superseded,
    /// Was healthy, then replaced by a newer release.
    Replaced,
    /// Was the current release when the environment was retired (its GitOps desired state
    /// was deleted, with prune): nothing runs for the environment any more.
    Retired,
}

impl ReleaseStatus {
    pub const ALL: [ReleaseStatus; 8] = [
        ReleaseStatus::Queued,
        ReleaseStatus::Deploying,
        ReleaseStatus::Healthy,
        ReleaseStatus::Failed,
        ReleaseStatus::RolledBack,
        ReleaseStatus::Superseded,
        ReleaseStatus::Replaced,
        ReleaseStatus::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Queued => "queued",
            ReleaseStatus::Deploying => "deploying",
            ReleaseStatus::Healthy => "healthy",
            ReleaseStatus::Failed => "failed",
            ReleaseStatus::RolledBack => "rolled_back",
            ReleaseStatus::Superseded => "superseded",
            ReleaseStatus::Replaced => "replaced",
            ReleaseStatus::Retired => "retired",
        }
    }

    /// The status stored as `s` (the inverse of [`ReleaseStatus::as_str`]).
    pub fn parse(s: &str) -> Option<ReleaseStatus> {
        ReleaseStatus::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Still in the hands of a deploy process.
    pub fn is_unfinished(self) -> bool {
        matches!(self, ReleaseStatus::Queued | ReleaseStatus::Deploying)
    }

    /// Was healthy at some point: its artifacts are known good.
    pub fn was_good(self) -> bool {
        matches!(
            self,
            ReleaseStatus::Healthy | ReleaseStatus::Replaced | ReleaseStatus::RolledBack | ReleaseStatus::Retired
        )
    }
}

/// One artifact of a release: a binary (or an image, for `target: docker`) by digest, for
/// one platform. A release of a multi-platform build records every platform's artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The program's name (binaries), or the image's name or digest-pinned reference.
    pub name: String,
    /// `os/arch`.
    pub platform: String,
    /// The binary's SHA-256, or the image ID's hex (its config digest).
    pub sha256: String,
    pub size: u64,
}

impl Artifact {
    /// An image pulled from a registry, recorded as `repo@sha256:…`.
    pub fn pinned_reference(&self) -> Option<&str> {
        self.name.contains("@sha256:").then_some(self.name.as_str())
    }
}

/// Who asked for something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The user's (or token's) name, as recorded in releases and approvals.
    pub name: String,
    pub kind: ActorKind,
    /// The pipeline job asking (a deploy job on the server), recorded with its releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineRef>,
}

/// The pipeline job a release came from: which project, pipeline and job deployed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRef {
    pub project: String,
    pub pipeline: i64,
    pub job: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person at a terminal (the CLI's user) or signed in.
    User,
    /// The system itself (the reconciler, an automatic rollback).
    System,
}

impl Actor {
    pub fn user(name: impl Into<String>) -> Actor {
        Actor { name: name.into(), kind: ActorKind::User, pipeline: None }
    }

    /// A pipeline's job, deploying through the server.
    pub fn job(pipeline: PipelineRef) -> Actor {
        Actor {
            name: format!("{} pipeline #{} job {}", pipeline.project, pipeline.pipeline, pipeline.job),
            kind: ActorKind::System,
            pipeline: Some(pipeline),
        }
    }
}

/// The recorded schema of [`ReleaseConfig`]: 1 is what releases held before the field
/// existed (same fields), 2 adds nothing but the marker.
pub const CONFIG_SCHEMA: u32 = 2;

fn schema_v1() -> u32 {
    1
}

/// The parts of an environment a release records (and hashes): what a rollback needs to run
/// the release exactly as it ran, whatever the pipeline file says by then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseConfig {
    #[serde(default = "schema_v1")]
    pub schema: u32,
    pub service: ServiceConfig,
    pub instances: u32,
    pub listen: String,
    pub strategy: StrategyKind,
    pub health: HealthConfig,
    pub target: TargetConfig,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceConfig {
    #[serde(default)]
    pub binary: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Secret variables by reference (`env:NAME`, `file:PATH`), never by value. Left out when
    /// empty, so configurations without them hash as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<(String, String)>,
    #[serde(default)]
    pub workdir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    Rolling,
    Canary,
    BlueGreen,
}

impl StrategyKind {
    pub fn of(s: &Strategy) -> StrategyKind {
        match s {
            Strategy::Rolling { .. } => StrategyKind::Rolling,
            Strategy::Canary { .. } => StrategyKind::Canary,
            Strategy::BlueGreen { .. } => StrategyKind::BlueGreen,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProbeConfig {
    Http { path: String },
    Tcp,
    Command { command: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    pub probe: ProbeConfig,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub successes: u32,
    pub failures: u32,
}

/// Where the release ran: `"local"`, `"ssh"` or `{"docker": {...}}` (schema 1 wrote these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetConfig {
    Local,
    Ssh,
    Docker {
        #[serde(default)]
        memory: Option<i64>,
        #[serde(default)]
        nano_cpus: Option<i64>,
    },
}

impl HealthConfig {
    pub fn of(env: &Environment) -> HealthConfig {
        let h = &env.health;
        HealthConfig {
            probe: match &h.probe {
                Probe::Http(path) => ProbeConfig::Http { path: path.clone() },
                Probe::Tcp => ProbeConfig::Tcp,
                Probe::Command(c) => ProbeConfig::Command { command: c.clone() },
            },
            interval_ms: h.interval.as_millis() as u64,
            timeout_ms: h.timeout.as_millis() as u64,
            successes: h.successes,
            failures: h.failures,
        }
    }
}

impl ReleaseConfig {
    pub fn of(env: &Environment) -> ReleaseConfig {
        ReleaseConfig {
            schema: CONFIG_SCHEMA,
            service: ServiceConfig {
                binary: env.service.binary.clone(),
                args: env.service.args.clone(),
                env: env.service.env.clone(),
                env_from: env.service.env_from.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
                workdir: env.service.workdir.clone(),
            },
            instances: env.instances,
            listen: env.listen.clone(),
            strategy: StrategyKind::of(&env.strategy),
            health: HealthConfig::of(env),
            target: match &env.target {
                Target::Local => TargetConfig::Local,
                Target::Ssh(_) => TargetConfig::Ssh,
                Target::Docker(d) => {
                    TargetConfig::Docker { memory: d.memory.map(|m| m as i64), nano_cpus: d.nano_cpus }
                }
            },
        }
    }

    /// The hash that tells whether two releases run with the same settings (the schema
    /// marker is left out, so an old record and a new one of the same settings agree).
    pub fn hash(&self) -> String {
        let mut v = serde_json::to_value(self).expect("configs serialize");
        if let Some(o) = v.as_object_mut() {
            o.remove("schema");
        }
        format!("{:x}", Sha256::digest(v.to_string().as_bytes()))
    }
}

/// A release as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Release {
    pub id: ReleaseId,
    pub environment: String,
    pub version: String,
    /// One per platform the build has for the service.
    pub artifacts: Vec<Artifact>,
    pub config_hash: String,
    pub config: ReleaseConfig,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub actor: String,
    pub reason: ReleaseReason,
    /// The release promoted from, or rolled back to.
    pub source_release: Option<ReleaseId>,
    pub status: ReleaseStatus,
    pub status_detail: Option<String>,
    /// The pipeline job that deployed it (server deploys), else none.
    pub pipeline: Option<PipelineRef>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

impl Release {
    /// The agent group that runs this release: a rollback reuses the instances of the release
    /// it returns to (so switching back to a set that still runs is instant).
    pub fn group_id(&self) -> ReleaseId {
        if self.reason.is_rollback() { self.source_release.unwrap_or(self.id) } else { self.id }
    }

    /// The artifact for `platform` (`os/arch`), or why there is none.
    pub fn artifact_for(&self, platform: &str) -> Result<&Artifact, String> {
        self.artifacts.iter().find(|a| a.platform == platform).ok_or_else(|| {
            let have: Vec<&str> = self.artifacts.iter().map(|a| a.platform.as_str()).collect();
            format!(
                "release #{} ({}) has no artifact for {platform} (it has {})",
                self.id,
                self.version,
                if have.is_empty() { "none".to_string() } else { have.join(", ") }
            )
        })
    }

    /// Whether `other` runs the same bytes with the same settings.
    pub fn same_as(&self, artifacts: &[Artifact], config_hash: &str) -> bool {
        self.config_hash == config_hash && {
            let mut a: Vec<&str> = self.artifacts.iter().map(|a| a.sha256.as_str()).collect();
            let mut b: Vec<&str> = artifacts.iter().map(|a| a.sha256.as_str()).collect();
            a.sort_unstable();
            b.sort_unstable();
            a == b
        }
    }

    /// The program the release runs (every platform's artifact is the same program).
    pub fn program(&self) -> &str {
        self.artifacts.first().map_or("service", |a| a.name.as_str())
    }

    /// The digest that names the release where it is unpacked (on ssh hosts: its release
    /// directory): its first artifact's, artifacts being recorded sorted by platform.
    pub fn key_digest(&self) -> &str {
        self.artifacts.first().map_or("", |a| a.sha256.as_str())
    }

    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_at_ms? - self.started_at_ms?)
    }
}

/// What a new release is made of.
#[derive(Debug, Clone)]
pub struct NewRelease {
    pub environment: String,
    pub version: String,
    pub artifacts: Vec<Artifact>,
    pub config: ReleaseConfig,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub actor: String,
    pub reason: ReleaseReason,
    pub source_release: Option<ReleaseId>,
    pub status: ReleaseStatus,
    /// The pipeline job asking, when a pipeline deploys.
    pub pipeline: Option<PipelineRef>,
}

impl NewRelease {
    /// A new release of `r`'s artifacts — a promotion, a rollback — with its version, commit
    /// and branch, the given settings, and `source_release` as where it came from.
    pub fn again(
        r: &Release,
        environment: &str,
        config: ReleaseConfig,
        actor: &str,
        reason: ReleaseReason,
        source_release: ReleaseId,
    ) -> NewRelease {
        NewRelease {
            environment: environment.to_string(),
            version: r.version.clone(),
            artifacts: r.artifacts.clone(),
            config,
            commit: r.commit.clone(),
            branch: r.branch.clone(),
            actor: actor.to_string(),
            reason,
            source_release: Some(source_release),
            status: ReleaseStatus::Queued,
            pipeline: r.pipeline.clone(),
        }
    }
}

/// One step of a release's journal, written before the step acts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalStep {
    pub seq: i64,
    pub name: String,
    pub detail: serde_json::Value,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    pub release: ReleaseId,
    pub approver: String,
    pub at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_statuses_read_back_as_written_and_as_the_api_shows_them() {
        for r in ReleaseReason::ALL {
            assert_eq!(ReleaseReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for s in ReleaseStatus::ALL {
            assert_eq!(ReleaseStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(ReleaseStatus::parse("gone"), None);
        assert_eq!(ReleaseReason::parse("auto_rollback"), None);
    }

    #[test]
    fn schema_1_configs_read_as_typed_configs() {
        // What releases held before the config was typed (engine's config_json).
        let old = serde_json::json!({
            "service": {"binary": null, "args": ["--addr", "127.0.0.1:{{port}}"], "env": [["MODE", "x"]], "workdir": null},
            "instances": 3,
            "listen": "127.0.0.1:8181",
            "strategy": "blue-green",
            "health": {"probe": {"type": "http", "path": "/healthz"}, "interval_ms": 1000, "timeout_ms": 1000, "successes": 1, "failures": 3},
            "target": {"docker": {"memory": 67108864, "nano_cpus": null}},
        });
        let c: ReleaseConfig = serde_json::from_value(old).unwrap();
        assert_eq!(c.schema, 1);
        assert_eq!(c.strategy, StrategyKind::BlueGreen);
        assert_eq!(c.service.env, [("MODE".to_string(), "x".to_string())]);
        assert_eq!(c.target, TargetConfig::Docker { memory: Some(67_108_864), nano_cpus: None });
        let local: TargetConfig = serde_json::from_value(serde_json::json!("local")).unwrap();
        assert_eq!(local, TargetConfig::Local);
        // The same settings hash the same whatever the schema marker says.
        let mut v2 = c.clone();
        v2.schema = CONFIG_SCHEMA;
        assert_eq!(c.hash(), v2.hash());
    }
}
