//! The validated pipeline: what `compile` produces from the YAML tree. Every field is typed;
//! spans are kept where later stages (planning) may still report errors.

use std::collections::BTreeMap;
use std::time::Duration;

use regex::Regex;

use crate::diag::Span;
use crate::expr::Expr;

#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Declared stages with `.pre` first and `.post` last.
    pub stages: Vec<String>,
    pub variables: Vec<Variable>,
    pub workflow: Option<Workflow>,
    /// Visible jobs (hidden `.jobs` dropped) in file order.
    pub jobs: Vec<Job>,
    /// The `gates:` section, validated.
    pub gates: Option<Gates>,
    /// The `go:` section, validated.
    pub go: Option<GoConfig>,
    /// The `images:` section, validated.
    pub images: Option<ImagesConfig>,
    /// The `environments:` section, validated, in file order.
    pub environments: Vec<crate::environment::Environment>,
    /// The `alerts:` section: a Prometheus rule file's content, validated.
    pub alerts: Option<slipway_monitor::rules::RuleFile>,
}

pub use slipway_model::sections::{Gates, GoConfig, ImagesConfig, is_image_path};

impl Pipeline {
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub value: String,
    /// `expand: false` keeps `$` references literal.
    pub expand: bool,
    /// slipway's extension: the value is masked in all output, like `--secret`.
    pub masked: bool,
    pub description: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: Option<String>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    OnSuccess,
    OnFailure,
    Always,
    Manual,
    Delayed,
    Never,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
            When::Delayed => "delayed",
            When::Never => "never",
        }
    }
}

#[derive(Debug, Clone)]
pub struct IfExpr {
    pub source: String,
    pub expr: Expr,
}

#[derive(Debug, Clone)]
pub struct Changes {
    pub paths: Vec<String>,
    pub compare_to: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub span: Span,
    pub if_: Option<IfExpr>,
    pub changes: Option<Changes>,
    pub exists: Option<Vec<String>>,
    pub when: Option<When>,
    pub start_in: Option<Duration>,
    pub allow_failure: Option<bool>,
    pub variables: Vec<Variable>,
    pub needs: Option<Vec<Need>>,
}

/// `only:` / `except:` (the older filter syntax).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub refs: Vec<String>,
    pub variables: Vec<IfExpr>,
    pub changes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AllowFailure {
    pub allowed: bool,
    /// When non-empty, only these exit codes are allowed to fail.
    pub exit_codes: Vec<i32>,
    /// Whether `allow_failure` was written (manual jobs default to allowed otherwise).
    pub explicit: bool,
}

/// One `parallel:matrix` entry: each variable with its values.
pub type MatrixEntry = Vec<(String, Vec<String>)>;

#[derive(Debug, Clone)]
pub struct Need {
    pub job: String,
    pub span: Span,
    pub artifacts: bool,
    pub optional: bool,
    /// `needs:parallel:matrix`: only these matrix instances of `job`.
    pub matrix: Option<Vec<MatrixEntry>>,
    /// `needs:pipeline`: `job` of another pipeline (the parent's, for a child pipeline).
    pub pipeline: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Parallel {
    Count(u32),
    /// Each entry: variable → values; instances are the cartesian product per entry.
    Matrix(Vec<MatrixEntry>),
}

#[derive(Debug, Clone, Default)]
pub struct Retry {
    pub max: u32,
    pub when: Vec<String>,
    pub exit_codes: Vec<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArtifactsWhen {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Default)]
pub struct Artifacts {
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub untracked: bool,
    pub when: ArtifactsWhen,
    pub expire_in: Option<String>,
    pub name: Option<String>,
    pub dotenv: Vec<String>,
    pub junit: Vec<String>,
    /// Other `artifacts:reports` kinds, recorded by kind (kept with the artifacts).
    pub other_reports: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    Pull,
    Push,
    PullPush,
}

#[derive(Debug, Clone)]
pub enum CacheKey {
    Literal(String),
    Files { files: Vec<String>, prefix: Option<String> },
}

#[derive(Debug, Clone)]
pub struct Cache {
    pub key: CacheKey,
    pub paths: Vec<String>,
    pub untracked: bool,
    pub policy: CachePolicy,
    /// `policy: $VARIABLE` (GitLab allows it): the policy once the plan expands it, with the
    /// place it was written.
    pub policy_var: Option<(String, crate::diag::Span)>,
    pub when: ArtifactsWhen,
    pub fallback_keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub url: Option<String>,
    pub action: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub span: Span,
    pub stage: String,
    pub stage_span: Span,
    pub script: Vec<String>,
    pub before_script: Vec<String>,
    pub after_script: Vec<String>,
    /// The job's own variables (global ones are merged in by the planner, per `inherit`).
    pub variables: Vec<Variable>,
    pub inherit_variables: Inherit,
    pub rules: Option<Vec<Rule>>,
    pub only: Option<Filter>,
    pub except: Option<Filter>,
    pub when: When,
    pub start_in: Option<Duration>,
    pub allow_failure: AllowFailure,
    pub needs: Option<Vec<Need>>,
    pub dependencies: Option<Vec<(String, Span)>>,
    pub parallel: Option<Parallel>,
    pub retry: Retry,
    pub timeout: Option<Duration>,
    pub artifacts: Option<Artifacts>,
    pub cache: Vec<Cache>,
    pub resource_group: Option<String>,
    pub interruptible: bool,
    pub environment: Option<Environment>,
    pub coverage: Option<Regex>,
    pub tags: Vec<String>,
    pub image: Option<String>,
    /// `image:` in its mapping form: what besides the name the container is made with.
    pub image_options: ImageOptions,
    pub services: Vec<Service>,
    /// `trigger:`: the job starts a child pipeline instead of running a script.
    pub trigger: Option<Trigger>,
}

/// `trigger:` for a child pipeline (`include`), as GitLab runs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trigger {
    pub include: Vec<TriggerInclude>,
    /// `strategy: depend`: the job's status is the child pipeline's.
    pub depend: bool,
    /// `forward:yaml_variables` (default true): the job's variables go to the child.
    pub forward_yaml_variables: bool,
    /// `forward:pipeline_variables` (default false): so do the run's `--var`s.
    pub forward_pipeline_variables: bool,
}

/// Where a child pipeline's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum TriggerInclude {
    /// A file of the project.
    Local { local: String },
    /// A file an earlier job left in its artifacts (a dynamic child pipeline).
    Artifact { artifact: String, job: String },
}

/// One of `services:`: a sidecar container the job reaches by its aliases.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Service {
    pub name: String,
    /// The job's names for it besides the ones GitLab derives from the image's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alias: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Its own variables, above the job's (which it gets too, as in GitLab).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_policy: Vec<String>,
}

impl Service {
    /// GitLab Runner's default aliases: the image's name without its tag or digest and without
    /// a registry port, with `/` made `__` and then `-` (`registry:5000/group/db:15` is
    /// `registry__group__db` and `registry-group-db`); then the `alias:` names.
    pub fn aliases(&self) -> Vec<String> {
        let name = self.name.split('@').next().unwrap_or_default();
        // A tag is a `:` after the last `/`.
        let last = name.rfind('/').map_or(0, |i| i + 1);
        let name = match name[last..].find(':') {
            Some(i) => &name[..last + i],
            None => name,
        };
        // A registry port: `host:port/` in the first component.
        let name = match name.split_once('/') {
            Some((host, rest)) => match host.split_once(':') {
                Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{h}/{rest}")
                }
                _ => name.to_string(),
            },
            None => name.to_string(),
        };
        let mut out = vec![name.replace('/', "__"), name.replace('/', "-")];
        for a in &self.alias {
            out.push(a.clone());
        }
        out.dedup();
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| !a.is_empty() && seen.insert(a.clone()));
        out
    }

    /// A `docker:*dind*` image: Docker-in-Docker, which slipway provides by the engine's socket.
    pub fn is_dind(&self) -> bool {
        let name = self.name.split('@').next().unwrap_or_default();
        let (repo, tag) = match name.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (name, ""),
        };
        let repo = repo.rsplit('/').next().unwrap_or(repo);
        repo == "docker" && tag.contains("dind")
    }
}

/// GitLab's `image:` mapping besides `name`: `entrypoint`, `pull_policy` and `docker:`
/// (`user`, `platform`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageOptions {
    /// Replaces the image's entrypoint (`[""]`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `always`, `if-not-present`, `never`, tried in order; empty: `if-not-present`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_policy: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

impl ImageOptions {
    pub fn is_empty(&self) -> bool {
        *self == ImageOptions::default()
    }
}

/// `inherit:variables` / `inherit:default`: all, none, or a named list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inherit {
    All,
    None,
    Only(Vec<String>),
}

impl Inherit {
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Inherit::All => true,
            Inherit::None => false,
            Inherit::Only(list) => list.iter().any(|n| n == name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Service;

    fn svc(name: &str, alias: &[&str]) -> Service {
        Service { name: name.into(), alias: alias.iter().map(|a| a.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn default_aliases_follow_gitlab_runner() {
        assert_eq!(svc("postgres", &[]).aliases(), ["postgres"]);
        assert_eq!(svc("postgres:15-alpine", &[]).aliases(), ["postgres"]);
        assert_eq!(svc("tutum/wordpress:latest", &[]).aliases(), ["tutum__wordpress", "tutum-wordpress"]);
        assert_eq!(
            svc("registry.example.com:5000/group/db:15", &["db", "pg"]).aliases(),
            ["registry.example.com__group__db", "registry.example.com-group-db", "db", "pg"]
        );
        assert_eq!(svc("redis@sha256:0123abcd", &[]).aliases(), ["redis"]);
        assert_eq!(svc("localhost:5000/redis", &[]).aliases(), ["localhost__redis", "localhost-redis"]);
        assert_eq!(svc("mysql:8", &["mysql"]).aliases(), ["mysql"]);
    }

    #[test]
    fn dind_is_a_docker_image_with_dind_in_its_tag() {
        for yes in ["docker:dind", "docker:24.0.5-dind", "docker:dind-rootless", "registry:5000/library/docker:27-dind"]
        {
            assert!(svc(yes, &[]).is_dind(), "{yes}");
        }
        for no in ["docker:latest", "docker", "postgres:dind", "mydind:1", "docker/dind"] {
            assert!(!svc(no, &[]).is_dind(), "{no}");
        }
    }
}
