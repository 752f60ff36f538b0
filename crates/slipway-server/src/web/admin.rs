//! The dashboard's admin pages: projects and their triggers (webhook URL per forge, polling,
//! schedules), agents (job agents heard from, agents hosting environments), users with their
//! roles, tokens (revoked from the page), and the audit log with its chain checked. Each
//! shows what the caller may read, by the same rules as the API (`access::RULES`).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_model::time::{now_ms, rfc3339};

use super::{Chrome, Form, after, may, page, refused, short_time};
use crate::State;
use crate::access::Caller;
use i18n::Lang;

use super::i18n;

type S = AxState<Arc<State>>;

/// A job agent counts as online when it was heard from this recently (it asks for work at
/// least every 25 s and renews a lease every second).
const ONLINE_MS: i64 = 60_000;

/// Which admin pages the caller may open (the sub-navigation shows only those).
struct Tabs {
    agents: bool,
    users: bool,
    audit: bool,
}

fn tabs(s: &State, who: &Caller) -> Tabs {
    let server =
        |verb: &str, res: &str| who.may(&s.access(), &slipway_model::access::Permission::need(verb, res), None);
    Tabs { agents: server("read", "settings"), users: server("read", "users"), audit: server("read", "audit") }
}

/// A time as a `<time>` shows it: UTC for the machine, short for the eye.
struct When {
    utc: String,
    short: String,
}

fn when(ms: i64) -> When {
    When { utc: rfc3339(ms), short: short_time(ms) }
}

struct ScheduleRow {
    id: i64,
    description: String,
    cron: String,
    timezone: String,
    ref_name: String,
    active: bool,
    next: When,
    last_run: Option<i64>,
}

struct ProjectRow {
    name: String,
    repo: String,
    branch: String,
    poll: String,
    hooks: Vec<(String, String)>,
    has_secret: bool,
    schedules: Vec<ScheduleRow>,
}

#[derive(Template)]
#[template(path = "admin_projects.html")]
struct ProjectsTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    tabs: Tabs,
    projects: Vec<ProjectRow>,
}

/// The base URL the server is reached at: `--external-url`, else the request's `Host`.
fn base_url(s: &State, headers: &axum::http::HeaderMap) -> String {
    if !s.notifier.external_url.is_empty() {
        return s.notifier.external_url.trim_end_matches('/').to_string();
    }
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let scheme = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("http");
    format!("{scheme}://{host}")
}

pub async fn projects(AxState(s): S, who: Caller, c: Chrome, headers: axum::http::HeaderMap) -> Response {
    let base = base_url(&s, &headers);
    let mut rows = Vec::new();
    for p in s.store.projects().await.unwrap_or_default() {
        if !may(&s, &who, "read", "code", &p.name) {
            continue;
        }
        let path = super::path_of(&p.name);
        let hooks = ["github", "gitlab", "gitea", "forgejo"]
            .iter()
            .map(|f| (f.to_string(), format!("{base}/api/v1/webhooks/{f}/{path}")))
            .collect();
        let schedules = if may(&s, &who, "read", "pipelines", &p.name) {
            s.store
                .schedules(&p.name)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|x| ScheduleRow {
                    id: x.id,
                    description: x.description,
                    cron: x.cron,
                    timezone: x.timezone,
                    ref_name: x.ref_name,
                    active: x.active,
                    next: when(x.next_run_at_ms),
                    last_run: x.last_run_id,
                })
                .collect()
        } else {
            Vec::new()
        };
        rows.push(ProjectRow {
            poll: p.poll_ms.map(super::duration_text).unwrap_or_default(),
            has_secret: p.webhook_secret.is_some(),
            name: p.name,
            repo: p.repo,
            branch: p.branch,
            hooks,
            schedules,
        });
    }
    let tpl = ProjectsTpl { t: c.t, c: &c, tabs: tabs(&s, &who), projects: rows };
    page(tpl.render(), &c)
}

struct JobAgentRow {
    name: String,
    version: String,
    tags: String,
    online: bool,
    waiting: bool,
    running: Vec<(i64, usize, String)>,
    last: When,
}

struct HostAgentRow {
    name: String,
    token: String,
    since: When,
}

#[derive(Template)]
#[template(path = "admin_agents.html")]
struct AgentsTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    tabs: Tabs,
    agents: Vec<JobAgentRow>,
    hosts: Vec<HostAgentRow>,
}

pub async fn agents(AxState(s): S, who: Caller, c: Chrome) -> Response {
    // The jobs running now, by the agent that holds them.
    let mut running: std::collections::HashMap<String, Vec<(i64, usize, String)>> = Default::default();
    for r in s.store.running_runs().await.unwrap_or_default() {
        for j in s.store.jobs(r.id).await.unwrap_or_default() {
            if j.status == slipway_model::run::JobState::Running
                && let Some(a) = j.runner
            {
                running.entry(a).or_default().push((r.id, j.index, j.name));
            }
        }
    }
    let now = now_ms();
    let mut seen: Vec<(String, crate::AgentSeen)> =
        s.agents_seen.lock().expect("agents lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // An agent holding a job from before this server started has not asked yet: it shows too.
    for name in running.keys() {
        if !seen.iter().any(|(n, _)| n == name) {
            seen.push((name.clone(), crate::AgentSeen { tags: Vec::new(), version: None, last_ms: 0, waiting: false }));
        }
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let agents = seen
        .into_iter()
        .map(|(name, a)| JobAgentRow {
            version: a.version.unwrap_or_default(),
            tags: a.tags.join(", "),
            online: a.waiting || now - a.last_ms < ONLINE_MS,
            waiting: a.waiting,
            running: running.remove(&name).unwrap_or_default(),
            last: when(a.last_ms),
            name,
        })
        .collect();
    let hosts = s
        .tunnels
        .list()
        .into_iter()
        .map(|a| HostAgentRow { name: a.name, token: a.token, since: when(a.since_ms) })
        .collect();
    let tpl = AgentsTpl { t: c.t, c: &c, tabs: tabs(&s, &who), agents, hosts };
    page(tpl.render(), &c)
}

struct UserRow {
    name: String,
    password: bool,
    groups: String,
    bindings: Vec<String>,
    created: When,
    by: String,
}

struct RoleRow {
    name: String,
    permissions: String,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    tabs: Tabs,
    users: Vec<UserRow>,
    roles: Vec<RoleRow>,
    protected: Vec<String>,
}

pub async fn users(AxState(s): S, who: Caller, c: Chrome) -> Response {
    let access = s.access();
    let mut users = Vec::new();
    for u in s.store.users().await.unwrap_or_default() {
        let api = s.store.bindings(Some(&u.name)).await.unwrap_or_default();
        let bindings = crate::users::binding_views(&s, &u.name, &api)
            .into_iter()
            .map(|b| format!("{} · {} ({})", b.role, b.project.unwrap_or_else(|| "*".into()), b.source))
            .collect();
        users.push(UserRow {
            groups: access.groups_of(&u.name).join(", "),
            password: u.password.is_some(),
            created: when(u.created_at_ms),
            by: u.created_by,
            name: u.name,
            bindings,
        });
    }
    let roles = access
        .roles
        .iter()
        .map(|r| RoleRow {
            name: r.name.clone(),
            permissions: r.permissions.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("  "),
        })
        .collect();
    let protected = access
        .protected
        .iter()
        .map(|p| {
            let projects = if p.projects.is_empty() { "*".to_string() } else { p.projects.join(", ") };
            let refs = if p.refs.is_empty() { "*".to_string() } else { p.refs.join(", ") };
            format!("{} · {projects} · refs {refs} · {} approval(s)", p.environment, p.approvals)
        })
        .collect();
    let tpl = UsersTpl { t: c.t, c: &c, tabs: tabs(&s, &who), users, roles, protected };
    page(tpl.render(), &c)
}

struct TokenRow {
    id: String,
    name: String,
    kind: String,
    user: String,
    scopes: String,
    created: When,
    expires: Option<When>,
    last_used: Option<When>,
    state: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "admin_tokens.html")]
struct TokensTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    tabs: Tabs,
    all: bool,
    tokens: Vec<TokenRow>,
}

pub async fn tokens(AxState(s): S, who: Caller, c: Chrome) -> Response {
    let tabs = tabs(&s, &who);
    let all = tabs.users;
    let list = if all { s.store.tokens(None).await } else { s.store.tokens(Some(&who.name)).await };
    let now = now_ms();
    let tokens = list
        .unwrap_or_default()
        .into_iter()
        // Job tokens come and go with their jobs: not what this page is for.
        .filter(|t| t.kind != slipway_store::TokenKind::Job)
        .map(|t| TokenRow {
            state: if t.revoked_at_ms.is_some() {
                "revoked"
            } else if t.expires_at_ms.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            }
            .into(),
            current: t.id == who.token_id,
            kind: t.kind.as_str().into(),
            user: t.user.unwrap_or_default(),
            scopes: t.scopes.map(|s| s.join(" ")).unwrap_or_else(|| "*".into()),
            created: when(t.created_at_ms),
            expires: t.expires_at_ms.map(when),
            last_used: t.last_used_at_ms.map(when),
            id: t.id,
            name: t.name,
        })
        .collect();
    let tpl = TokensTpl { t: c.t, c: &c, tabs, all, tokens };
    page(tpl.render(), &c)
}

/// Revokes a token through the API's own handler (a user's own, or any with `write:users`).
pub async fn revoke(AxState(s): S, who: Caller, c: Chrome, Path(id): Path<String>, _form: Form) -> Response {
    let r = crate::users::revoke_token(AxState(Arc::clone(&s)), who, Path(id.clone())).await;
    match r {
        Ok(_) => after("/ui/admin/tokens", &format!("{} {id}", c.t.s("admin.revoked")), false),
        Err(e) => after("/ui/admin/tokens", &format!("{}: {e}", c.t.s("admin.revoke_failed")), true),
    }
}

struct AuditRow {
    seq: i64,
    at: When,
    actor: String,
    address: String,
    action: String,
    target: String,
    outcome: String,
    status: i64,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    tabs: Tabs,
    actor: String,
    verdict: String,
    intact: bool,
    entries: Vec<AuditRow>,
}

pub async fn audit(AxState(s): S, who: Caller, c: Chrome) -> Response {
    let actor = c.query.get("actor").cloned().unwrap_or_default();
    let rows = match s.store.audit_tail((!actor.is_empty()).then_some(actor.as_str()), 200).await {
        Ok(r) => r,
        Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let (intact, verdict) = match crate::users::verify(AxState(Arc::clone(&s))).await {
        Ok(r) => {
            let b = axum::body::to_bytes(r.into_response().into_body(), 1 << 20).await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            let ok = v["ok"] == true;
            (
                ok,
                if ok {
                    format!("{} {}", v["entries"], c.t.s("admin.chain_ok"))
                } else {
                    v["reason"].as_str().unwrap_or("").to_string()
                },
            )
        }
        Err(e) => (false, e.to_string()),
    };
    let entries = rows
        .into_iter()
        .map(|r| AuditRow {
            seq: r.seq,
            at: when(r.at_ms),
            actor: r.entry.actor,
            address: r.entry.address,
            action: r.entry.action,
            target: r.entry.target,
            outcome: r.entry.outcome,
            status: r.entry.status,
        })
        .collect();
    let tpl = AuditTpl { t: c.t, c: &c, tabs: tabs(&s, &who), actor, verdict, intact, entries };
    page(tpl.render(), &c)
}
