//! Who may do what, on every request: one table ([`RULES`]) names the permission each route
//! needs, and one middleware ([`authorize`]) enforces it before any handler runs — it finds the
//! caller from its token, the project from the route (`{name}`, or the pipeline of `{id}` /
//! `{run}`), asks the roles (docs/access.md, generated from the same table), and records every
//! change and every refusal in the audit log. A caller who holds nothing on a project is told
//! it does not exist, exactly as if it did not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use slipway_model::access::{AccessConfig, Binding, Denial, Grants, Permission, Subject};
use slipway_store::{NewAudit, TokenKind};

use crate::api::error;
use crate::{ServerError, State};

/// The hex SHA-256 of a token: what the store keeps.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, metrics, webhooks (they verify their own signature), sign-in.
    Public,
    /// An agent token (the job protocol, tunnels).
    Agent,
    /// Any valid token (the caller's own identity and tokens).
    Signed,
    /// A permission on the server as a whole (users, audit, settings): a binding on every project.
    Server(&'static str, &'static str),
    /// A permission on the project of the route's `{name}` (`environments` becomes
    /// `environments/<env>` when the route has `{env}`).
    Project(&'static str, &'static str),
    /// A permission on the project of the pipeline `{id}` or `{run}`.
    Pipeline(&'static str, &'static str),
    /// A listing: the handler shows what the caller holds this permission on, per project.
    Listed(&'static str, &'static str),
    /// A dashboard page: any signed-in user (its session cookie, or a token); the page shows
    /// what the caller may read and offers only what it may do.
    Page,
    /// The handler checks the permission on the project of what the request names (a
    /// silence's `project` matcher, an alert's environment).
    Owned(&'static str, &'static str),
}

/// One route's rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub need: Need,
    /// Agent tokens may call it too (artifacts of the job they run).
    pub agents: bool,
    /// The CLI commands that call it.
    pub cli: &'static str,
}

const fn rule(method: &'static str, path: &'static str, need: Need, cli: &'static str) -> Rule {
    Rule { method, path, need, agents: false, cli }
}

use Need::*;

/// Every route of the API and what it needs. `router()` refuses to start with a route that is
/// not here, and docs/access.md is this table.
pub const RULES: &[Rule] = &[
    rule("GET", "/healthz", Public, ""),
    rule("GET", "/readyz", Public, ""),
    rule("GET", "/metrics", Public, ""),
    rule("GET", "/api/v1/openapi.json", Public, ""),
    rule("POST", "/api/v1/login", Public, "slipway login"),
    rule("POST", "/api/v1/webhooks/{forge}/{project}", Public, ""),
    rule("GET", "/", Public, ""),
    rule("GET", "/ui/assets/{file}", Public, ""),
    rule("GET", "/ui/login", Public, ""),
    rule("POST", "/ui/login", Public, ""),
    rule("POST", "/ui/logout", Page, ""),
    rule("GET", "/ui/", Page, ""),
    rule("GET", "/ui/environments", Page, ""),
    rule("POST", "/ui/projects/{name}/environments/{env}/rollback", Project("rollback", "environments"), ""),
    rule("GET", "/ui/pipelines", Page, ""),
    rule("GET", "/ui/alerts", Page, ""),
    rule("POST", "/ui/projects/{name}/environments/{env}/approve", Project("approve", "environments"), ""),
    rule("GET", "/ui/projects/{name}/environments/{env}", Project("read", "environments"), ""),
    rule("GET", "/ui/pipelines/{id}", Pipeline("read", "pipelines"), ""),
    rule("POST", "/ui/pipelines/{id}/cancel", Pipeline("write", "pipelines"), ""),
    rule("POST", "/ui/pipelines/{id}/retry", Pipeline("write", "pipelines"), ""),
    rule("GET", "/ui/pipelines/{id}/jobs/{index}", Pipeline("read", "logs"), ""),
    rule("GET", "/ui/pipelines/{id}/jobs/{index}/raw", Pipeline("read", "logs"), ""),
    rule("GET", "/ui/pipelines/{id}/live", Pipeline("read", "pipelines"), ""),
    rule("GET", "/ui/pipelines/{id}/jobs/{index}/live", Pipeline("read", "logs"), ""),
    rule("POST", "/ui/pipelines/{id}/jobs/{index}/play", Pipeline("write", "pipelines"), ""),
    rule("POST", "/ui/projects/{name}/environments/{env}/deploy", Project("deploy", "environments"), ""),
    rule("POST", "/ui/projects/{name}/environments/{env}/promote", Project("deploy", "environments"), ""),
    rule("GET", "/ui/projects/{name}/environments/{env}/live", Project("read", "environments"), ""),
    rule("GET", "/ui/projects/{name}/environments/{env}/diff", Project("read", "environments"), ""),
    rule("GET", "/ui/pipelines/{id}/tests", Pipeline("read", "pipelines"), ""),
    rule("GET", "/ui/projects/{name}/tests", Project("read", "pipelines"), ""),
    rule("POST", "/ui/silences", Owned("rollback", "environments"), ""),
    rule("POST", "/ui/silences/{id}/expire", Owned("rollback", "environments"), ""),
    rule("GET", "/ui/apps", Page, ""),
    rule("POST", "/ui/apps/{name}/sync", Owned("deploy", "environments"), ""),
    rule("GET", "/ui/admin/projects", Page, ""),
    rule("GET", "/ui/admin/agents", Server("read", "settings"), ""),
    rule("GET", "/ui/admin/users", Server("read", "users"), ""),
    rule("GET", "/ui/admin/tokens", Page, ""),
    rule("POST", "/ui/admin/tokens/{id}/revoke", Page, ""),
    rule("GET", "/ui/admin/audit", Server("read", "audit"), ""),
    rule("GET", "/api/v1/whoami", Signed, "slipway login, slipway whoami"),
    rule("GET", "/api/v1/tokens", Signed, "slipway token list"),
    rule("POST", "/api/v1/tokens", Signed, "slipway token create"),
    rule("DELETE", "/api/v1/tokens/{id}", Signed, "slipway token revoke"),
    rule("GET", "/api/v1/users", Server("read", "users"), "slipway user list"),
    rule("POST", "/api/v1/users", Server("write", "users"), "slipway user add"),
    rule("DELETE", "/api/v1/users/{user}", Server("write", "users"), "slipway user delete"),
    rule("PUT", "/api/v1/users/{user}/password", Signed, "slipway user passwd"),
    rule("POST", "/api/v1/users/{user}/bindings", Server("write", "users"), "slipway user grant"),
    rule("DELETE", "/api/v1/users/{user}/bindings", Server("write", "users"), "slipway user revoke"),
    rule("GET", "/api/v1/roles", Signed, "slipway user roles"),
    rule("GET", "/api/v1/audit", Server("read", "audit"), "slipway audit"),
    rule("GET", "/api/v1/audit/verify", Server("read", "audit"), "slipway audit verify"),
    rule("POST", "/api/v1/agent-tokens", Server("write", "settings"), "slipway token create --agent"),
    rule("GET", "/api/v1/agents", Server("read", "settings"), ""),
    rule("GET", "/api/v1/query", Listed("read", "environments"), "Grafana, promtool query instant"),
    rule("GET", "/api/v1/query_range", Listed("read", "environments"), "Grafana, promtool query range"),
    rule("GET", "/api/v1/alerts", Listed("read", "environments"), ""),
    rule("GET", "/api/v1/rules", Listed("read", "environments"), ""),
    rule("GET", "/federate", Listed("read", "environments"), "Prometheus' scrape (`honor_labels: true`)"),
    rule("GET", "/api/v1/silences", Listed("read", "environments"), "slipway silence list"),
    rule("POST", "/api/v1/silences", Owned("rollback", "environments"), "slipway silence add"),
    rule("DELETE", "/api/v1/silences/{id}", Owned("rollback", "environments"), "slipway silence expire"),
    rule(
        "POST",
        "/api/v1/projects/{name}/silences",
        Project("rollback", "environments"),
        "slipway silence add --project",
    ),
    rule("GET", "/api/v1/notifications", Listed("read", "environments"), "slipway notifications"),
    rule("POST", "/api/v1/hooks/alertmanager", Owned("rollback", "environments"), "Alertmanager's webhook_configs"),
    rule("GET", "/api/v1/apps", Listed("read", "environments"), "slipway app list"),
    rule("POST", "/api/v1/apps", Owned("deploy", "environments"), "slipway app add"),
    rule("GET", "/api/v1/apps/{name}", Owned("read", "environments"), "slipway app show"),
    rule("DELETE", "/api/v1/apps/{name}", Owned("deploy", "environments"), "slipway app delete"),
    rule("POST", "/api/v1/apps/{name}/sync", Owned("deploy", "environments"), "slipway app sync"),
    rule("POST", "/api/v1/apps/{name}/refresh", Owned("read", "environments"), "slipway app diff"),
    rule("GET", "/api/v1/apps/{name}/history", Owned("read", "environments"), "slipway app history"),
    rule("GET", "/api/v1/projects", Listed("read", "code"), "slipway project list"),
    rule("POST", "/api/v1/projects", Server("write", "code"), "slipway project add"),
    rule("POST", "/api/v1/projects/{name}/pipelines", Project("write", "pipelines"), "slipway trigger"),
    rule("GET", "/api/v1/pipelines", Listed("read", "pipelines"), "slipway pipelines"),
    rule("GET", "/api/v1/pipelines/{id}", Pipeline("read", "pipelines"), "slipway pipeline show"),
    rule("POST", "/api/v1/pipelines/{id}/cancel", Pipeline("write", "pipelines"), "slipway cancel"),
    rule("POST", "/api/v1/pipelines/{id}/retry", Pipeline("write", "pipelines"), "slipway retry"),
    rule("POST", "/api/v1/pipelines/{id}/jobs/{index}/retry", Pipeline("write", "pipelines"), "slipway retry --job"),
    rule("POST", "/api/v1/pipelines/{id}/jobs/{index}/play", Pipeline("write", "pipelines"), "slipway play"),
    rule("GET", "/api/v1/pipelines/{id}/jobs/{index}/log", Pipeline("read", "logs"), "slipway logs ID JOB"),
    rule("GET", "/api/v1/projects/{name}/schedules", Project("read", "pipelines"), "slipway schedule list"),
    rule("POST", "/api/v1/projects/{name}/schedules", Project("write", "pipelines"), "slipway schedule add"),
    rule(
        "PUT",
        "/api/v1/projects/{name}/schedules/{id}",
        Project("write", "pipelines"),
        "slipway schedule enable|disable",
    ),
    rule("DELETE", "/api/v1/projects/{name}/schedules/{id}", Project("write", "pipelines"), "slipway schedule delete"),
    rule("POST", "/api/v1/projects/{name}/schedules/{id}/play", Project("write", "pipelines"), "slipway schedule run"),
    rule("GET", "/api/v1/projects/{name}/environments", Project("read", "environments"), "slipway status --server"),
    rule(
        "GET",
        "/api/v1/projects/{name}/environments/{env}/releases",
        Project("read", "environments"),
        "slipway history --server",
    ),
    rule(
        "GET",
        "/api/v1/projects/{name}/environments/{env}/logs",
        Project("read", "logs"),
        "slipway logs --env --server",
    ),
    rule(
        "POST",
        "/api/v1/projects/{name}/environments/{env}/deploy",
        Project("deploy", "environments"),
        "slipway deploy --server",
    ),
    rule(
        "POST",
        "/api/v1/projects/{name}/environments/{env}/promote",
        Project("deploy", "environments"),
        "slipway promote --server",
    ),
    rule(
        "POST",
        "/api/v1/projects/{name}/environments/{env}/rollback",
        Project("rollback", "environments"),
        "slipway rollback --server",
    ),
    rule(
        "POST",
        "/api/v1/projects/{name}/environments/{env}/approve",
        Project("approve", "environments"),
        "slipway approve --server",
    ),
    rule("GET", "/api/v1/projects/{name}/secrets", Project("read", "secrets"), "slipway secret list"),
    rule("PUT", "/api/v1/projects/{name}/secrets/{secret}", Project("write", "secrets"), "slipway secret set"),
    rule("DELETE", "/api/v1/projects/{name}/secrets/{secret}", Project("write", "secrets"), "slipway secret delete"),
    rule("GET", "/api/v1/groups/{group}/secrets", Server("read", "secrets"), "slipway secret list --group"),
    rule("PUT", "/api/v1/groups/{group}/secrets/{secret}", Server("write", "secrets"), "slipway secret set --group"),
    rule(
        "DELETE",
        "/api/v1/groups/{group}/secrets/{secret}",
        Server("write", "secrets"),
        "slipway secret delete --group",
    ),
    rule("POST", "/api/v1/secrets/rotate-key", Server("write", "settings"), "slipway secret rotate-key"),
    Rule {
        method: "GET",
        path: "/api/v1/jobs/{run}/artifacts/{job}",
        need: Pipeline("read", "artifacts"),
        agents: true,
        cli: "",
    },
    rule("PUT", "/api/v1/jobs/{run}/{index}/artifacts", Agent, ""),
    rule("GET", "/api/v1/projects/{name}/caches/{key}", Agent, ""),
    rule("PUT", "/api/v1/projects/{name}/caches/{key}", Agent, ""),
    rule("POST", "/api/v1/jobs/request", Agent, "slipway agent"),
    rule("POST", "/api/v1/jobs/{run}/{index}/log", Agent, "slipway agent"),
    rule("POST", "/api/v1/jobs/{run}/{index}/lease", Agent, "slipway agent"),
    rule("POST", "/api/v1/jobs/{run}/{index}/release", Agent, "slipway agent"),
    rule("POST", "/api/v1/jobs/{run}/{index}/finish", Agent, "slipway agent"),
    rule("GET", "/api/v1/agents/tunnel", Agent, "slipway agent"),
];

/// What a job token may do, on its own project only (and, for pipelines, its own pipeline).
pub const JOB_GRANTS: &[&str] =
    &["read:code", "read:pipelines", "read:artifacts", "read:environments", "deploy:environments"];

pub fn rule_for(method: &Method, path: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.method == method.as_str() && r.path == path)
}

/// A running job's token: whose job it is.
#[derive(Debug, Clone)]
pub struct JobOf {
    pub run: i64,
    pub index: usize,
    pub project: String,
}

/// An authenticated caller, as the middleware found it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's name, the agent token's name, or `job RUN/INDEX`.
    pub name: String,
    pub kind: TokenKind,
    pub grants: Grants,
    /// The token's scopes (`None`: all the user's permissions).
    pub scopes: Option<Vec<Permission>>,
    pub job: Option<JobOf>,
    /// The one agent name an agent token may use (`None`: any).
    pub agent: Option<String>,
    pub token_id: String,
    pub token_name: String,
}

impl Caller {
    /// How the audit log and releases name the caller.
    pub fn actor(&self) -> String {
        match self.kind {
            TokenKind::User => self.name.clone(),
            TokenKind::Agent => format!("agent token {}", self.name),
            TokenKind::Job => self.name.clone(),
        }
    }

    /// Whether the caller may `need` on `project` (for listings and second checks in handlers).
    pub fn may(&self, access: &AccessConfig, need: &Permission, project: Option<&str>) -> bool {
        match self.kind {
            TokenKind::User => {
                self.grants.allows(need, project).is_some()
                    && self.scopes.as_ref().is_none_or(|s| s.iter().any(|p| p.covers(need)))
            }
            TokenKind::Job => {
                let own = self.job.as_ref().is_some_and(|j| Some(j.project.as_str()) == project);
                own && job_grants().iter().any(|p| p.covers(need))
            }
            TokenKind::Agent => {
                let _ = access;
                false
            }
        }
    }

    /// An agent token bound to a name may only use that one.
    pub fn check_agent(&self, name: &str) -> Result<(), ServerError> {
        match &self.agent {
            Some(bound) if bound != name => Err(ServerError::Forbidden(format!(
                "the agent token `{}` is bound to agent `{bound}`, not `{name}`: start the agent with --name {bound}, or make a token for `{name}`",
                self.token_name
            ))),
            _ => Ok(()),
        }
    }
}

fn job_grants() -> Vec<Permission> {
    JOB_GRANTS.iter().map(|p| Permission::parse(p).expect("job grants parse")).collect()
}

/// Handlers take the caller the middleware put in the request.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this call needs a token".into(),
                Some("authorization".into()),
            )
        })
    }
}

/// The address a request came from (what the audit log and sign-in throttling name).
#[derive(Debug, Clone)]
pub struct Peer(pub String);

/// What a handler adds to its audit entry (the before → after of what it changed).
#[derive(Debug, Clone)]
pub struct Audited(pub serde_json::Value);

/// A response with `detail` for the audit log.
pub fn audited(response: impl IntoResponse, detail: serde_json::Value) -> Response {
    let mut r = response.into_response();
    r.extensions_mut().insert(Audited(detail));
    r
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("private-token").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("job-token").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The bindings of `user`: given through the API, and the access file's for it and its groups.
pub async fn bindings_of(s: &State, user: &str) -> Result<Vec<Binding>, ServerError> {
    let access = s.access();
    let groups = access.groups_of(user);
    let mut out: Vec<Binding> = access
        .bindings
        .iter()
        .filter(|b| match &b.subject {
            Subject::User(u) => u == user,
            Subject::Group(g) => groups.contains(g),
        })
        .cloned()
        .collect();
    for b in s.store.bindings(Some(user)).await? {
        out.push(Binding { subject: Subject::User(b.user), role: b.role, project: b.project });
    }
    Ok(out)
}

/// Finds the caller of a request from its token: an error response says why there is none.
async fn resolve(s: &State, token: Option<&str>) -> Result<Caller, Response> {
    let unauthorized = |msg: String| error(StatusCode::UNAUTHORIZED, "unauthorized", msg, Some("authorization".into()));
    let Some(token) = token else {
        return Err(unauthorized(
            "no token: send `Authorization: Bearer TOKEN` (the CLI: `slipway login`, or SLIPWAY_TOKEN)".into(),
        ));
    };
    let hash = hash_token(token);
    let t = match s.store.token(&hash).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(unauthorized("unknown token: it was never made here (or its pipeline was forgotten)".into()));
        }
        Err(e) => return Err(error(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string(), None)),
    };
    if t.revoked_at_ms.is_some() {
        return Err(unauthorized(format!("the token `{}` ({}) was revoked", t.name, t.id)));
    }
    if t.expired() {
        return Err(unauthorized(format!(
            "the token `{}` ({}) expired: make a new one (`slipway login` or `slipway token create`)",
            t.name, t.id
        )));
    }
    if t.ended {
        return Err(unauthorized(format!(
            "the token of {} no longer works: a job token is valid only while its job runs",
            t.name
        )));
    }
    if t.last_used_at_ms.is_none_or(|at| at < slipway_model::time::now_ms() - 60_000) {
        let _ = s.store.touch_token(&hash).await;
    }
    let mut caller = Caller {
        name: t.name.clone(),
        kind: t.kind,
        grants: Grants::default(),
        scopes: t.scopes.as_ref().map(|l| l.iter().filter_map(|p| Permission::parse(p).ok()).collect()),
        job: None,
        agent: t.agent.clone(),
        token_id: t.id.clone(),
        token_name: t.name.clone(),
    };
    match t.kind {
        TokenKind::User => {
            let user = t.user.clone().unwrap_or_default();
            let bindings = match bindings_of(s, &user).await {
                Ok(b) => b,
                Err(e) => return Err(e.into_response()),
            };
            caller.grants = Grants::resolve(&s.access(), bindings);
            caller.name = user;
        }
        TokenKind::Job => {
            // Job tokens are named `job RUN/INDEX` when they are made.
            let job = t.name.strip_prefix("job ").and_then(|n| n.split_once('/'));
            let (Some((run, index)), Some(_)) = (job, t.run) else {
                return Err(unauthorized("a job token without its job".into()));
            };
            let (Ok(run), Ok(index)) = (run.parse::<i64>(), index.parse::<usize>()) else {
                return Err(unauthorized("a job token without its job".into()));
            };
            let project = match s.store.run(run).await {
                Ok(Some(r)) => r.project,
                Ok(None) => return Err(unauthorized(format!("the pipeline of {} was forgotten", t.name))),
                Err(e) => return Err(error(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string(), None)),
            };
            caller.job = Some(JobOf { run, index, project });
        }
        TokenKind::Agent => {}
    }
    Ok(caller)
}

/// Why a request is refused.
enum Refusal {
    /// 403 with the reason.
    Forbidden(String, Option<Denial>),
    /// 404, worded exactly as for a thing that does not exist.
    Hidden(String),
    Other(Response),
}

/// Decides a request: the project it concerns, or why it is refused.
async fn decide(
    s: &State,
    caller: &Caller,
    rule: &Rule,
    params: &HashMap<String, String>,
) -> Result<Option<String>, Refusal> {
    let kind = caller.kind;
    let only_agents = || {
        Refusal::Forbidden(
            format!(
                "only agent tokens (or a user's with `write:settings`) may call this; `{}` is a {} token",
                caller.token_name,
                kind.as_str()
            ),
            None,
        )
    };
    let (verb, resource, project) = match rule.need {
        Public | Signed | Page => return Ok(None),
        // An admin's own token may run an agent too (a one-machine install).
        Agent if kind == TokenKind::Agent => return Ok(None),
        Agent if caller.may(&s.access(), &Permission::need("write", "settings"), None) => return Ok(None),
        Agent => return Err(only_agents()),
        _ if kind == TokenKind::Agent && rule.agents => return Ok(None),
        _ if kind == TokenKind::Agent => {
            return Err(Refusal::Forbidden(
                format!("an agent token (`{}`) may only speak the job protocol", caller.token_name),
                None,
            ));
        }
        Listed(..) | Owned(..) => return Ok(None),
        Server(verb, resource) => (verb, resource.to_string(), None),
        Project(verb, resource) => {
            let name = params.get("name").cloned().unwrap_or_default();
            (verb, resource.to_string(), Some(name))
        }
        Pipeline(verb, resource) => {
            let id = params.get("id").or_else(|| params.get("run")).cloned().unwrap_or_default();
            let missing = || Refusal::Hidden(format!("pipeline {id} does not exist"));
            let Ok(run) = id.parse::<i64>() else { return Err(missing()) };
            if let Some(job) = &caller.job
                && job.run != run
            {
                return Err(match s.store.run(run).await {
                    Ok(Some(r)) if r.project == job.project => Refusal::Forbidden(
                        format!("a job token of pipeline {} may not read pipeline {run}", job.run),
                        None,
                    ),
                    _ => missing(),
                });
            }
            let project = match s.store.run(run).await {
                Ok(Some(r)) => r.project,
                Ok(None) => return Err(missing()),
                Err(e) => return Err(Refusal::Other(ServerError::from(e).into_response())),
            };
            (verb, resource.to_string(), Some(project))
        }
    };
    let resource = match (resource.as_str(), params.get("env")) {
        ("environments", Some(env)) => format!("environments/{env}"),
        _ => resource,
    };
    let need = Permission::need(verb, &resource);
    let access = s.access();
    match kind {
        TokenKind::Job => {
            let job = caller.job.as_ref().expect("job tokens have their job");
            match &project {
                Some(p) if *p == job.project => {}
                Some(p) => return Err(Refusal::Hidden(format!("project `{p}` does not exist"))),
                None => {
                    return Err(Refusal::Forbidden(format!("a job token may not use `{need}` on the server"), None));
                }
            }
            if !caller.may(&access, &need, project.as_deref()) {
                return Err(Refusal::Forbidden(
                    format!("a job token may not `{need}` (job tokens may: {})", JOB_GRANTS.join(", ")),
                    None,
                ));
            }
            Ok(project)
        }
        TokenKind::User => {
            if let Some(p) = &project
                && !caller.grants.sees(p)
            {
                return Err(Refusal::Hidden(match rule.need {
                    Pipeline(..) => format!(
                        "pipeline {} does not exist",
                        params.get("id").or(params.get("run")).cloned().unwrap_or_default()
                    ),
                    _ => format!("project `{p}` does not exist"),
                }));
            }
            if let Err(d) = caller.grants.check(&access, &need, project.as_deref()) {
                return Err(Refusal::Forbidden(d.explain(&caller.name, &caller.grants), Some(d)));
            }
            if let Some(scopes) = &caller.scopes
                && !scopes.iter().any(|p| p.covers(&need))
            {
                let list: Vec<String> = scopes.iter().map(|p| p.to_string()).collect();
                return Err(Refusal::Forbidden(
                    format!(
                        "the token `{}` ({}) is scoped to {}: it lacks `{need}`; make a token with that scope",
                        caller.token_name,
                        caller.token_id,
                        list.join(", ")
                    ),
                    None,
                ));
            }
            Ok(project)
        }
        TokenKind::Agent => unreachable!("agent tokens are decided above"),
    }
}

/// The middleware: every request under a route goes through here.
pub async fn authorize(
    axum::extract::State(s): axum::extract::State<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(path) = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()) else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut req = req;
    req.extensions_mut().insert(Peer(address.clone()));
    let Some(rule) = rule_for(&method, &path) else {
        tracing::error!(%method, %path, "a route without a rule in access::RULES is refused");
        return error(StatusCode::FORBIDDEN, "forbidden", format!("{method} {path} has no access rule"), None);
    };
    if rule.need == Public {
        return next.run(req).await;
    }
    let action = format!("{method} {path}");
    let target = req.uri().path().to_string();
    // The dashboard's pages also take the browser's session cookie; refusals of a browser are
    // pages, and a browser without a session goes to the login form.
    let ui = target.starts_with("/ui/");
    let (token, via_cookie) = match bearer(req.headers()) {
        Some(t) => (Some(t.to_string()), false),
        None if ui => (crate::web::session_cookie(req.headers()), true),
        None => (None, false),
    };
    let to_login = || {
        let next: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
        axum::response::Redirect::to(&format!("/ui/login?next={next}")).into_response()
    };
    if ui && token.is_none() {
        return to_login();
    }
    let caller = match resolve(&s, token.as_deref()).await {
        Ok(c) => c,
        Err(r) => {
            record(&s, "anonymous", &address, &action, &target, "denied", r.status(), serde_json::json!({})).await;
            drain(req.into_body()).await;
            if via_cookie {
                return to_login();
            }
            return r;
        }
    };
    let mut req = req;
    if let Some(t) = &token {
        req.extensions_mut().insert(crate::web::Session { token: t.clone(), via_cookie });
    }
    let (mut parts, body) = req.into_parts();
    let params: HashMap<String, String> = match RawPathParams::from_request_parts(&mut parts, &()).await {
        Ok(p) => p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        Err(e) => return e.into_response(),
    };
    let mut req = Request::from_parts(parts, body);
    let actor = caller.actor();
    match decide(&s, &caller, rule, &params).await {
        Ok(_) => {
            req.extensions_mut().insert(caller);
            let mut r = next.run(req).await;
            // Changes are recorded (the agents' job protocol is in the pipelines' records).
            if method != Method::GET && rule.need != Agent {
                let detail = r.extensions_mut().remove::<Audited>().map(|a| a.0).unwrap_or(serde_json::json!({}));
                // A dashboard form answers with a redirect either way and says how it went.
                let ok = match r.extensions().get::<crate::web::Outcome>() {
                    Some(o) => o.0,
                    None => r.status().is_success(),
                };
                let outcome = if ok { "allowed" } else { "failed" };
                record(&s, &actor, &address, &action, &target, outcome, r.status(), detail).await;
            }
            r
        }
        Err(refusal) => {
            let (r, detail) = match refusal {
                Refusal::Forbidden(m, d) if via_cookie => (
                    crate::web::refused(StatusCode::FORBIDDEN, &m),
                    serde_json::json!({"lacks": d.map(|d| d.need.to_string())}),
                ),
                Refusal::Hidden(m) if via_cookie => {
                    (crate::web::refused(StatusCode::NOT_FOUND, &m), serde_json::json!({}))
                }
                Refusal::Forbidden(m, d) => (
                    error(StatusCode::FORBIDDEN, "forbidden", m, None),
                    serde_json::json!({"lacks": d.map(|d| d.need.to_string())}),
                ),
                Refusal::Hidden(m) => (error(StatusCode::NOT_FOUND, "not_found", m, None), serde_json::json!({})),
                Refusal::Other(r) => return r,
            };
            record(&s, &actor, &address, &action, &target, "denied", r.status(), detail).await;
            drain(req.into_body()).await;
            r
        }
    }
}

/// Reads and drops what is left of a refused request's body (for at most 30 s), so a client
/// still sending an upload gets the refusal rather than a connection closed under it.
async fn drain(body: axum::body::Body) {
    use futures_util::StreamExt;
    let mut data = body.into_data_stream();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(Ok(_)) = data.next().await {}
    })
    .await;
}

#[expect(clippy::too_many_arguments)]
async fn record(
    s: &State,
    actor: &str,
    address: &str,
    action: &str,
    target: &str,
    outcome: &str,
    status: StatusCode,
    detail: serde_json::Value,
) {
    let e = NewAudit {
        actor: actor.into(),
        address: address.into(),
        action: action.into(),
        target: target.into(),
        outcome: outcome.into(),
        status: i64::from(status.as_u16()),
        detail: detail.to_string(),
    };
    if let Err(err) = s.store.append_audit(&e).await {
        tracing::error!(error = %err, action, actor, "cannot append to the audit log");
    }
}

// ----- passwords --------------------------------------------------------------------------

/// Hashes a password with argon2id (RustCrypto's defaults: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, ServerError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = slipway_sys::whoami::random_bytes(16)
        .map_err(|source| ServerError::Io { what: "/dev/urandom".into(), source })?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ServerError::Input(e.to_string(), None))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServerError::Input(format!("cannot hash the password: {e}"), Some("password".into())))
}

/// Whether `password` matches `hash`; a user without one (or no user) costs the same time.
pub fn verify_password(password: &str, hash: Option<&str>) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    static DUMMY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash_password("no such user").unwrap_or_default());
    let (hash, real) = match hash {
        Some(h) => (h, true),
        None => (DUMMY.as_str(), false),
    };
    let ok = PasswordHash::new(hash)
        .is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok());
    ok && real
}

/// Checks a new password: long enough, not the user's name.
pub fn check_password(user: &str, password: &str) -> Result<(), ServerError> {
    let field = Some("password".to_string());
    if password.chars().count() < 12 {
        return Err(ServerError::Input("the password must be at least 12 characters".into(), field));
    }
    if password.len() > 1024 {
        return Err(ServerError::Input("the password must be at most 1024 bytes".into(), field));
    }
    if password.eq_ignore_ascii_case(user) {
        return Err(ServerError::Input("the password must not be the user's name".into(), field));
    }
    Ok(())
}

/// Failed sign-ins per user and per address: after 5 failures in 15 minutes, each further
/// attempt waits twice as long as the one before (1 s, 2 s, … at most 15 min), right or wrong.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

const FREE_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(15 * 60);

impl Throttle {
    /// How long `key` must still wait, if at all.
    pub fn wait(&self, key: &str) -> Option<Duration> {
        let map = self.failures.lock().expect("throttle lock");
        let (n, last) = *map.get(key)?;
        if n < FREE_FAILURES || last.elapsed() > WINDOW {
            return None;
        }
        let backoff = Duration::from_secs(1u64 << (n - FREE_FAILURES).min(10)).min(WINDOW);
        backoff.checked_sub(last.elapsed())
    }

    pub fn failed(&self, key: &str) {
        let mut map = self.failures.lock().expect("throttle lock");
        if map.len() > 100_000 {
            map.retain(|_, (_, at)| at.elapsed() < WINDOW);
        }
        let e = map.entry(key.to_string()).or_insert((0, Instant::now()));
        if e.1.elapsed() > WINDOW {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = Instant::now();
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("throttle lock").remove(key);
    }
}

// ----- docs/access.md -----------------------------------------------------------------------

/// The permission table of docs/access.md, from [`RULES`].
pub fn table() -> String {
    let mut out = String::from("| method | path | needs | CLI |\n| --- | --- | --- | --- |\n");
    for r in RULES {
        let need = match r.need {
            Public => "nothing (public)".to_string(),
            Agent => "an agent token (or a user's holding `write:settings` on every project)".to_string(),
            Signed => "any token (the caller's own)".to_string(),
            Page => "a signed-in user (session cookie or token); shows what the caller may read".to_string(),
            Server(v, res) => format!("`{v}:{res}` on every project"),
            Project(v, "environments") if r.path.contains("{env}") => {
                format!("`{v}:environments/<env>` on the project")
            }
            Project(v, res) => format!("`{v}:{res}` on the project"),
            Pipeline(v, res) => format!("`{v}:{res}` on the pipeline's project"),
            Listed(v, res) => format!("lists what the caller holds `{v}:{res}` on"),
            Owned(v, res) => format!("`{v}:{res}` on the project of what it names (checked by the handler)"),
        };
        let need = if r.agents { format!("{need}, or an agent token") } else { need };
        let cli = match r.cli {
            "" => String::new(),
            c => format!("`{c}`"),
        };
        out.push_str(&format!("| {} | `{}` | {need} | {cli} |\n", r.method, r.path));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_rule_and_every_rule_a_route() {
        let doc = crate::api::openapi();
        let mut routes = vec![("GET".to_string(), "/api/v1/openapi.json".to_string())];
        routes.extend(crate::web::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())));
        for (path, item) in doc.paths.paths {
            for (m, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ] {
                if op.is_some() {
                    routes.push((m.to_string(), path.clone()));
                }
            }
        }
        for (m, p) in &routes {
            assert!(RULES.iter().any(|r| r.method == m && r.path == p), "{m} {p} has no rule in access::RULES");
        }
        for r in RULES {
            assert!(
                routes.iter().any(|(m, p)| m == r.method && p == r.path),
                "the rule for {} {} has no route",
                r.method,
                r.path
            );
        }
    }

    #[test]
    fn docs_access_md_holds_the_table_of_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/access.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        let (start, end) =
            ("<!-- permissions: generated from crates/slipway-server/src/access.rs -->\n", "<!-- end permissions -->");
        let want = format!("{start}{}{end}", table());
        let current = doc.find(start).and_then(|i| doc[i..].find(end).map(|j| &doc[i..i + j + end.len()]));
        if current != Some(want.as_str()) {
            if std::env::var_os("SLIPWAY_BLESS").is_some() {
                let new = match current {
                    Some(c) => doc.replace(c, &want),
                    None => format!("{doc}\n{want}\n"),
                };
                std::fs::write(path, new).expect("write docs/access.md");
                return;
            }
            panic!(
                "docs/access.md's permission table is not the code's: run `SLIPWAY_BLESS=1 cargo test -p slipway-server docs_access` and commit"
            );
        }
    }

    #[test]
    fn sign_in_throttles_after_five_failures() {
        let t = Throttle::default();
        for _ in 0..5 {
            assert!(t.wait("user:alice").is_none());
            t.failed("user:alice");
        }
        assert!(t.wait("user:alice").is_some_and(|d| d <= Duration::from_secs(1)));
        t.failed("user:alice");
        assert!(t.wait("user:alice").is_some_and(|d| d > Duration::from_secs(1)));
        assert!(t.wait("user:bob").is_none());
        t.succeeded("user:alice");
        assert!(t.wait("user:alice").is_none());
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify_in_constant_work() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", Some(&h)));
        assert!(!verify_password("correct horse batterY", Some(&h)));
        assert!(!verify_password("correct horse battery", None));
        assert!(check_password("alice", "short").is_err());
        assert!(check_password("alicealicealice", "AliceAliceAlice").is_err());
    }
}
