//! The server's wire types: projects, pipelines and their jobs as the REST API shows them,
//! and the job protocol between the server and its agents (docs/server.md).

use serde::{Deserialize, Serialize};

/// `POST /api/v1/projects`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NewProject {
    pub name: String,
    /// A URL git can fetch (`https://…`, `ssh://…`, `file://…`) or a path on the server's machine.
    pub repo: String,
    #[serde(default = "main")]
    pub branch: String,
    /// Fetch the remote this often (seconds); absent: webhooks and triggers only.
    #[serde(default)]
    pub poll_seconds: Option<u64>,
    /// What the forge signs webhooks with; made up when absent (and shown once).
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

fn main() -> String {
    "main".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ProjectView {
    pub name: String,
    pub repo: String,
    pub branch: String,
    pub poll_seconds: Option<u64>,
    /// Only in the answer that created the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// `POST /api/v1/projects/{name}/pipelines`: a pipeline for a ref (the default branch when
/// absent), with variables (`--var K=V`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Trigger {
    #[serde(default, rename = "ref")]
    pub ref_name: Option<String>,
    #[serde(default)]
    pub variables: Vec<(String, String)>,
}

/// `POST /api/v1/projects/{name}/schedules`: GitLab's pipeline schedule fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    #[serde(default)]
    pub description: String,
    /// Five fields (minute hour day-of-month month day-of-week), as cron and GitLab; a sixth,
    /// leading seconds field is accepted.
    pub cron: String,
    /// An IANA time zone (`Europe/Berlin`); UTC when absent.
    #[serde(default)]
    pub cron_timezone: Option<String>,
    /// A branch or tag (default: the project's branch).
    #[serde(default, rename = "ref")]
    pub ref_name: Option<String>,
    #[serde(default)]
    pub variables: Vec<(String, String)>,
    #[serde(default)]
    pub active: Option<bool>,
}

/// `PUT /api/v1/projects/{name}/schedules/{id}`: what may change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleUpdate {
    pub active: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ScheduleView {
    pub id: i64,
    pub project: String,
    pub description: String,
    pub cron: String,
    pub cron_timezone: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub variables: Vec<(String, String)>,
    pub active: bool,
    /// RFC 3339; absent while inactive.
    pub next_run_at: Option<String>,
    pub last_run_at: Option<String>,
    pub last_pipeline: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PipelineView {
    pub id: i64,
    pub project: String,
    #[serde(rename = "ref")]
    pub ref_name: Option<String>,
    pub commit: Option<String>,
    /// `CI_PIPELINE_SOURCE`: `push`, `web`, `api`, `schedule`, `merge_request_event`.
    pub source: String,
    pub status: String,
    /// Why it ended without running (its pipeline file did not plan), when it did.
    pub detail: Option<String>,
    pub created_at: String,
    /// When its first job started.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// From created to finished (or to now while it runs).
    pub duration_seconds: f64,
    /// The commit's author, `Name <email>`.
    pub author: Option<String>,
    /// What started it: `api: NAME`, `webhook: github`, `polling`, `schedule ID`, `retry`.
    pub triggered_by: Option<String>,
    pub jobs: Vec<JobView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobView {
    pub index: usize,
    pub name: String,
    pub stage: String,
    pub status: String,
    pub exit_code: Option<i32>,
    pub attempts: u32,
    pub reason: Option<String>,
    /// The agent that ran (or runs) it.
    pub agent: Option<String>,
    /// When it last became claimable (queued for an agent).
    pub queued_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// From its start to its end (or to now while it runs).
    pub duration_seconds: Option<f64>,
    /// A trigger job's child pipeline as it ended: its run record (`status`, `duration_ms`,
    /// `jobs`, each with its own `child` when it triggered one), as `slipway run --json` prints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<serde_json::Value>,
}

/// `POST /api/v1/jobs/request`: an agent asks for a job, waiting up to `wait_ms` for one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobRequest {
    /// The agent's name (unique per machine).
    pub agent: String,
    #[serde(default)]
    pub wait_ms: u64,
    /// The agent's tags: it takes jobs whose `tags:` are all among them (untagged jobs always).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The agent's slipway version (shown on the dashboard's agents page).
    #[serde(default)]
    pub version: Option<String>,
}

/// A job the agent now holds, and what it needs to run it: the commit to check out, and
/// what the server planned with (the agent plans the same pipeline and runs job `index`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobAssignment {
    pub run: i64,
    pub index: usize,
    pub name: String,
    pub attempt: u32,
    pub project: String,
    /// Where the agent fetches the commit from (the server's mirror when local, else the
    /// project's remote).
    pub repo: String,
    pub commit: String,
    /// The branch the pipeline runs for (checked out as that branch), absent for tags.
    pub branch: Option<String>,
    pub source: String,
    pub variables: Vec<(String, String)>,
    /// The project's secrets this job gets, masked in its output by the agent.
    #[serde(default)]
    pub secrets: Vec<JobSecret>,
    /// Renew the lease within this long (`POST /api/v1/jobs/{run}/{index}/lease`).
    pub lease_ms: u64,
    /// The job's own token (`CI_JOB_TOKEN`), valid while it runs.
    pub job_token: String,
    /// The server's external URL: `CI_SERVER_URL` and the values made from it, as the server
    /// planned with.
    #[serde(default)]
    pub server_url: Option<String>,
    /// The server's projects by name and the repositories they are fetched from: what the
    /// job's `include:project` and `include:component` name, as the server planned with.
    #[serde(default)]
    pub projects: std::collections::BTreeMap<String, String>,
}

/// `POST /api/v1/jobs/{run}/{index}/lease`: the answer to a renewal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LeaseAnswer {
    /// False when the agent no longer holds the job (the lease ran out, the job was taken back).
    pub held: bool,
    /// The pipeline was canceled: stop the job.
    pub cancel: bool,
}

/// `POST /api/v1/jobs/{run}/{index}/finish`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobFinish {
    /// `success`, `failed` or `canceled`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// The percentage the job's `coverage:` regex found in its log.
    #[serde(default)]
    pub coverage: Option<f64>,
    /// A trigger job's child pipeline, as it ended (its run record).
    #[serde(default)]
    pub child: Option<serde_json::Value>,
}

/// An agent connected to the server, which can host environments (`GET /api/v1/agents`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ConnectedAgent {
    pub name: String,
    /// The name of the token it connected with.
    pub token: String,
    /// Connected since (Unix ms).
    pub since_ms: i64,
}

/// A server's JSON error: what, a machine-readable code, and the field at fault.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub field: Option<String>,
}

// ----- access (docs/access.md) ---------------------------------------------------------------

/// `POST /api/v1/login`: a user's name and password for a new API token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub user: String,
    pub password: String,
    /// What to call the token (default: `login`).
    #[serde(default)]
    pub token_name: Option<String>,
    /// Seconds until it expires (default 30 days; at most 1 year).
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// `POST /api/v1/tokens`: a token of the caller's, maybe narrowed to some permissions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiToken {
    pub name: String,
    /// `verb:resource` permissions (globs as in roles) the token is limited to; absent: all
    /// of the user's.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Seconds until it expires; absent: never.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// `POST /api/v1/agent-tokens`: a registration token for agents, bound to one agent name
/// when `agent` is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgentToken {
    pub name: String,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// A token as listings show it: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TokenView {
    /// The first 12 hex digits of its hash: what `slipway token revoke` takes.
    pub id: String,
    pub name: String,
    /// `user` or `agent`.
    pub kind: String,
    pub user: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub agent: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// A token just made: the only answer that holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TokenMade {
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

/// A role given: `project` absent or `*` for every project.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingView {
    pub role: String,
    #[serde(default)]
    pub project: Option<String>,
    /// `api` (given through the API) or `file` (the access file; change it there).
    #[serde(default = "api")]
    pub source: String,
}

fn api() -> String {
    "api".into()
}

/// `POST /api/v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    /// At least 12 characters; absent: the user signs in with tokens an admin makes.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub bindings: Vec<BindingView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct UserView {
    pub name: String,
    pub has_password: bool,
    pub groups: Vec<String>,
    pub bindings: Vec<BindingView>,
    pub created_at: String,
    pub created_by: String,
}

/// `PUT /api/v1/users/{user}/password`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    pub password: String,
    /// The user's current password, when changing one's own.
    #[serde(default)]
    pub current: Option<String>,
}

/// `GET /api/v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WhoAmI {
    pub name: String,
    /// `user`, `agent` or `job`.
    pub kind: String,
    pub token: TokenView,
    pub groups: Vec<String>,
    pub bindings: Vec<BindingView>,
}

/// A role of the server, as the access file (or the built-ins) define it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RoleView {
    pub name: String,
    pub permissions: Vec<String>,
}

/// An audit log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub address: String,
    pub action: String,
    pub target: String,
    /// `allowed`, `denied` or `failed`.
    pub outcome: String,
    pub status: i64,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// `GET /api/v1/audit/verify`: whether the chain is whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AuditVerdict {
    pub ok: bool,
    pub entries: i64,
    /// The first entry that does not follow from the one before (changed, or one deleted).
    pub broken_at: Option<i64>,
    pub reason: Option<String>,
}

/// `PUT /api/v1/projects/{name}/secrets/{secret}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    /// At least 8 bytes (shorter values cannot be masked without masking ordinary output).
    pub value: String,
    /// Only jobs of this environment (`environment:` in the job) get it; absent: every job.
    #[serde(default)]
    pub environment: Option<String>,
    /// Only pipelines of protected refs (the default branch, the access file's
    /// `protected_refs`) get it.
    #[serde(default)]
    pub protected: bool,
    /// The job gets the path of a file holding the value, as GitLab's file variables.
    #[serde(default)]
    pub file: bool,
}

/// A secret as the API shows it: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SecretView {
    pub name: String,
    pub environment: Option<String>,
    pub protected: bool,
    pub file: bool,
    pub set_by: String,
    pub set_at: String,
}

/// A secret a job gets (in its assignment only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobSecret {
    pub name: String,
    pub value: String,
    /// Passed as the path of a file holding the value.
    pub file: bool,
}
