//! The dashboard, served by the server itself (docs/dashboard.md): server-rendered HTML
//! (askama templates in `templates/`, compiled in), one stylesheet embedded with a content
//! hash in its name, no script needed to read. A browser signs in with the login form and
//! holds a session — an API token made for it, in an `HttpOnly`, `SameSite=Lax` cookie
//! (`Secure` behind TLS) — so every page and action goes through the same permission checks
//! as the API (`access::authorize`); forms carry a CSRF token derived from the session.
//! English and Simplified Chinese ([`i18n`]).

pub mod admin;
pub mod apps;
pub mod env;
pub mod i18n;
pub mod live;
pub mod log;
pub mod reports;

use std::sync::{Arc, LazyLock};

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use slipway_model::access::Permission;
use slipway_model::time::{now_ms, rfc3339};

use crate::State;
use crate::access::Caller;
use i18n::Lang;

type S = AxState<Arc<State>>;

/// The session cookie.
pub const COOKIE: &str = "slipway_session";
/// How long a browser session lasts.
const SESSION_SECS: u64 = 12 * 3600;

const CSS: &str = include_str!("../../assets/app.css");
const JS: &str = include_str!("../../assets/app.js");
/// An asset's path with a hash of its content in the name, so it is cached for good.
fn hashed(body: &str, ext: &str) -> String {
    let hex: String = Sha256::digest(body.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("/ui/assets/app.{hex}.{ext}")
}
static CSS_PATH: LazyLock<String> = LazyLock::new(|| hashed(CSS, "css"));
static JS_PATH: LazyLock<String> = LazyLock::new(|| hashed(JS, "js"));

/// How a request was signed in: its token, and whether it came in the cookie (then forms
/// need their CSRF token).
#[derive(Clone)]
pub struct Session {
    pub token: String,
    pub via_cookie: bool,
}

/// The session token in a request's cookies.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// A cookie's value, from any of the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The CSRF token of a session: derived from its secret, so a page of another site (which
/// cannot read the `HttpOnly` cookie) cannot make one.
pub fn csrf_of(token: &str) -> String {
    Sha256::digest(format!("slipway csrf\0{token}").as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn lang_of(headers: &HeaderMap, query: Option<&str>) -> Lang {
    let from_query =
        query.and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "lang").map(|(_, v)| v.to_string()));
    let from_cookie = cookie(headers, "lang");
    Lang::pick(
        from_query.or(from_cookie).as_deref(),
        headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()),
    )
}

/// The dashboard's routes, as [`routes`] makes them (`access::RULES` has a rule for each).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/ui/assets/{file}"),
    ("GET", "/ui/login"),
    ("POST", "/ui/login"),
    ("POST", "/ui/logout"),
    ("GET", "/ui/"),
    ("GET", "/ui/environments"),
    ("POST", "/ui/projects/{name}/environments/{env}/rollback"),
    ("GET", "/ui/pipelines"),
    ("GET", "/ui/pipelines/{id}"),
    ("POST", "/ui/pipelines/{id}/cancel"),
    ("POST", "/ui/pipelines/{id}/retry"),
    ("GET", "/ui/pipelines/{id}/jobs/{index}"),
    ("GET", "/ui/pipelines/{id}/jobs/{index}/raw"),
    ("GET", "/ui/projects/{name}/environments/{env}"),
    ("GET", "/ui/alerts"),
    ("POST", "/ui/projects/{name}/environments/{env}/approve"),
    ("GET", "/ui/pipelines/{id}/live"),
    ("GET", "/ui/pipelines/{id}/jobs/{index}/live"),
    ("POST", "/ui/pipelines/{id}/jobs/{index}/play"),
    ("POST", "/ui/projects/{name}/environments/{env}/deploy"),
    ("POST", "/ui/projects/{name}/environments/{env}/promote"),
    ("GET", "/ui/projects/{name}/environments/{env}/live"),
    ("GET", "/ui/projects/{name}/environments/{env}/diff"),
    ("GET", "/ui/pipelines/{id}/tests"),
    ("GET", "/ui/projects/{name}/tests"),
    ("POST", "/ui/silences"),
    ("POST", "/ui/silences/{id}/expire"),
    ("GET", "/ui/apps"),
    ("POST", "/ui/apps/{name}/sync"),
    ("GET", "/ui/admin/projects"),
    ("GET", "/ui/admin/agents"),
    ("GET", "/ui/admin/users"),
    ("GET", "/ui/admin/tokens"),
    ("POST", "/ui/admin/tokens/{id}/revoke"),
    ("GET", "/ui/admin/audit"),
];

/// The routes (each has its rule in `access::RULES`).
pub fn routes() -> axum::Router<Arc<State>> {
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/", get(overview))
        .route("/ui/environments", get(environments))
        .route("/ui/projects/{name}/environments/{env}/rollback", post(env::rollback))
        .route("/ui/pipelines", get(pipelines))
        .route("/ui/pipelines/{id}", get(pipeline))
        .route("/ui/pipelines/{id}/cancel", post(cancel))
        .route("/ui/pipelines/{id}/retry", post(retry))
        .route("/ui/pipelines/{id}/jobs/{index}", get(job))
        .route("/ui/pipelines/{id}/jobs/{index}/raw", get(raw_log))
        .route("/ui/projects/{name}/environments/{env}", get(env::page_of))
        .route("/ui/projects/{name}/environments/{env}/deploy", post(env::deploy))
        .route("/ui/projects/{name}/environments/{env}/promote", post(env::promote))
        .route("/ui/projects/{name}/environments/{env}/live", get(env::live))
        .route("/ui/projects/{name}/environments/{env}/diff", get(env::diff))
        .route("/ui/alerts", get(alerts))
        .route("/ui/projects/{name}/environments/{env}/approve", post(approve))
        .route("/ui/pipelines/{id}/live", get(live::pipeline))
        .route("/ui/pipelines/{id}/jobs/{index}/live", get(live::job))
        .route("/ui/pipelines/{id}/jobs/{index}/play", post(play))
        .route("/ui/pipelines/{id}/tests", get(reports::tests))
        .route("/ui/projects/{name}/tests", get(reports::history))
        .route("/ui/silences", post(silence_add))
        .route("/ui/silences/{id}/expire", post(silence_expire))
        .route("/ui/apps", get(apps::apps))
        .route("/ui/apps/{name}/sync", post(apps::sync))
        .route("/ui/admin/projects", get(admin::projects))
        .route("/ui/admin/agents", get(admin::agents))
        .route("/ui/admin/users", get(admin::users))
        .route("/ui/admin/tokens", get(admin::tokens))
        .route("/ui/admin/tokens/{id}/revoke", post(admin::revoke))
        .route("/ui/admin/audit", get(admin::audit))
}

async fn asset(Path(file): Path<String>) -> Response {
    let path = format!("/ui/assets/{file}");
    let (kind, body) = if path == *CSS_PATH {
        ("text/css; charset=utf-8", CSS)
    } else if path == *JS_PATH {
        ("text/javascript; charset=utf-8", JS)
    } else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], body)
        .into_response()
}

/// How a form's action went, for the audit log (its answer is a redirect either way).
#[derive(Clone, Copy)]
pub struct Outcome(pub bool);

/// A redirect with a flash, recording how the action went.
fn after(to: &str, text: &str, error: bool) -> Response {
    let mut resp = Redirect::to(to).into_response();
    resp.headers_mut().append(header::SET_COOKIE, set_flash(text, error));
    resp.extensions_mut().insert(Outcome(!error));
    resp
}

/// A message shown once at the top of the next page (a cookie the page clears).
pub struct Flash {
    pub text: String,
    pub error: bool,
}

fn flash_of(headers: &HeaderMap) -> Option<Flash> {
    let raw = cookie(headers, "slipway_flash")?;
    let text: String = form_urlencoded::parse(format!("f={raw}").as_bytes()).next().map(|(_, v)| v.to_string())?;
    let (error, text) = match text.strip_prefix("!") {
        Some(t) => (true, t.to_string()),
        None => (false, text),
    };
    Some(Flash { text, error })
}

fn set_flash(text: &str, error: bool) -> HeaderValue {
    let v: String =
        form_urlencoded::byte_serialize(format!("{}{text}", if error { "!" } else { "" }).as_bytes()).collect();
    HeaderValue::from_str(&format!("slipway_flash={v}; Path=/ui/; HttpOnly; SameSite=Lax; Max-Age=60"))
        .unwrap_or(HeaderValue::from_static("slipway_flash=; Path=/ui/"))
}

/// What every page's frame shows — the language, the assets, who is signed in, the CSRF token
/// of its forms, the flash — and the page's query, read from the request once.
pub struct Chrome {
    pub t: Lang,
    css: &'static str,
    js: &'static str,
    user: Option<String>,
    csrf: String,
    flash: Option<Flash>,
    query: std::collections::HashMap<String, String>,
}

impl<St: Send + Sync> axum::extract::FromRequestParts<St> for Chrome {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &St) -> Result<Self, Self::Rejection> {
        Ok(Chrome {
            t: lang_of(&parts.headers, parts.uri.query()),
            css: CSS_PATH.as_str(),
            js: JS_PATH.as_str(),
            user: parts.extensions.get::<Caller>().map(|c| c.name.clone()),
            csrf: parts.extensions.get::<Session>().map(|s| csrf_of(&s.token)).unwrap_or_default(),
            flash: flash_of(&parts.headers),
            query: query_map(parts.uri.query()),
        })
    }
}

/// A rendered page, with the flash cleared and a language choice kept.
fn page(html: Result<String, askama::Error>, c: &Chrome) -> Response {
    let (lang, had_flash) = (c.t, c.flash.is_some());
    match html {
        Ok(h) => {
            let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], h).into_response();
            let hs = r.headers_mut();
            hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            hs.insert("x-frame-options", HeaderValue::from_static("DENY"));
            hs.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
            hs.insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
                ),
            );
            hs.append(
                header::SET_COOKIE,
                HeaderValue::from_str(&format!("lang={}; Path=/; SameSite=Lax; Max-Age=31536000", lang.code()))
                    .expect("a cookie"),
            );
            if had_flash {
                hs.append(header::SET_COOKIE, HeaderValue::from_static("slipway_flash=; Path=/ui/; Max-Age=0"));
            }
            r
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the page did not render: {e}")).into_response(),
    }
}

impl Lang {
    /// The value of the `lang` cookie that keeps this language.
    fn code(&self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }
}

/// The error page of a refused or failed browser request.
pub fn refused(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · slipway</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"{}\"></head><body><main><h1>{}</h1><p class=\"flash error\">{}</p><p><a href=\"/ui/\">slipway</a></p></main></body></html>",
        status.as_u16(),
        *CSS_PATH,
        status.as_u16(),
        html_escape(message)
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

// ----- sign in and out -------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    t: Lang,
    c: &'a Chrome,
    next: String,
}

/// A safe place to go after signing in: a path of the dashboard, never another site.
fn next_of(q: Option<&str>) -> String {
    let next =
        q.and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "next").map(|(_, v)| v.to_string()));
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains("://") => n,
        _ => "/ui/".into(),
    }
}

async fn login_page(c: Chrome, uri: axum::http::Uri) -> Response {
    let p = LoginPage { t: c.t, c: &c, next: next_of(uri.query()) };
    page(p.render(), &c)
}

async fn login(
    AxState(s): S,
    headers: HeaderMap,
    peer: Option<axum::Extension<crate::access::Peer>>,
    body: Bytes,
) -> Response {
    let lang = lang_of(&headers, None);
    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let (user, password) =
        (form.get("user").cloned().unwrap_or_default(), form.get("password").cloned().unwrap_or_default());
    let next = next_of(Some(&format!(
        "next={}",
        form_urlencoded::byte_serialize(form.get("next").map(String::as_bytes).unwrap_or(b"/ui/")).collect::<String>()
    )));
    let json = serde_json::json!({"user": user, "password": password, "token_name": "browser session", "expires_in": SESSION_SECS});
    let r = crate::users::login(AxState(Arc::clone(&s)), peer, Bytes::from(json.to_string())).await;
    let r = match r {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap_or_default();
    if status != StatusCode::CREATED {
        let key = if status == StatusCode::TOO_MANY_REQUESTS { "login.throttled" } else { "login.failed" };
        let mut resp = Redirect::to(&format!(
            "/ui/login?next={}",
            form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        ))
        .into_response();
        resp.headers_mut().append(header::SET_COOKIE, set_flash(lang.s(key), true));
        return resp;
    }
    let token = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .unwrap_or_default();
    let secure = s.notifier.external_url.starts_with("https://")
        || headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_SECS}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("a cookie"));
    resp
}

fn form_of(body: &Bytes) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The page for a form whose CSRF token is missing or wrong.
fn bad_csrf() -> Response {
    refused(StatusCode::FORBIDDEN, "the form's CSRF token is missing or wrong: reload the page and try again")
}

/// A form's CSRF token checked against the session's (a request signed with a bearer token
/// carries no ambient credential and needs none).
fn csrf_ok(session: &Session, form: &std::collections::HashMap<String, String>) -> bool {
    !session.via_cookie
        || form.get("csrf").is_some_and(|c| {
            let want = csrf_of(&session.token);
            c.len() == want.len() && subtle::ConstantTimeEq::ct_eq(c.as_bytes(), want.as_bytes()).into()
        })
}

/// A form posted from a page of the dashboard, its CSRF token checked (a refusal page when it
/// is missing or wrong): what every action's handler takes.
pub struct Form(pub std::collections::HashMap<String, String>);

impl<St: Send + Sync> axum::extract::FromRequest<St> for Form {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &St) -> Result<Self, Self::Rejection> {
        let session = req.extensions().get::<Session>().cloned();
        let body = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        let form = form_of(&body);
        match session {
            Some(session) if csrf_ok(&session, &form) => Ok(Form(form)),
            _ => Err(bad_csrf()),
        }
    }
}

async fn logout(
    AxState(s): S,
    who: Caller,
    axum::Extension(session): axum::Extension<Session>,
    body: Bytes,
) -> Response {
    if !session.via_cookie {
        return refused(
            StatusCode::BAD_REQUEST,
            "signing out ends a browser session; a token is revoked with `slipway token revoke`",
        );
    }
    if !csrf_ok(&session, &form_of(&body)) {
        return bad_csrf();
    }
    let _ = s.store.revoke_token(&who.token_id, None).await;
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("slipway_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    r
}

// ----- pages ---------------------------------------------------------------------------------

struct PipelineRow {
    id: i64,
    status: String,
    duration: String,
    commit: String,
    author: String,
    at_utc: String,
    at_local: String,
}

struct ProjectRow {
    name: String,
    branch: String,
    last: Option<PipelineRow>,
}

pub struct EnvRow {
    name: String,
    project: String,
    project_path: String,
    version: String,
    status: String,
    updated_utc: Option<String>,
    updated_local: String,
    healthy: usize,
    total: usize,
    url: String,
    rollback_to: Option<String>,
    may_rollback: bool,
}

struct AlertRow {
    name: String,
    state: String,
    labels: String,
    summary: String,
    /// The alerts page with the new-silence form filled with this alert's labels.
    silence: String,
}

/// A manual job waiting to be run.
struct ManualRow {
    run: i64,
    project: String,
    index: usize,
    name: String,
    may_play: bool,
}

struct WaitRow {
    environment: String,
    project_path: String,
    release: i64,
    version: String,
    actor: String,
    may_approve: bool,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview<'a> {
    t: Lang,
    c: &'a Chrome,
    projects: Vec<ProjectRow>,
    envs: Vec<EnvRow>,
    alerts: Vec<AlertRow>,
    waiting: Vec<WaitRow>,
    manual: Vec<ManualRow>,
}

#[derive(Template)]
#[template(path = "environments.html")]
struct Environments<'a> {
    t: Lang,
    c: &'a Chrome,
    envs: Vec<EnvRow>,
}

/// A time as the page shows it (UTC, minutes; the exact time is its `title`).
fn short_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
}

fn duration_text(ms: i64) -> String {
    let s = ms / 1000;
    if s < 60 { format!("{s}s") } else { format!("{}m {:02}s", s / 60, s % 60) }
}

/// A project's name as one segment of a path (`team/app` → `team%2Fapp`).
fn path_of(project: &str) -> String {
    project.replace('%', "%25").replace('/', "%2F")
}

fn may(s: &State, who: &Caller, verb: &str, resource: &str, project: &str) -> bool {
    who.may(&s.access(), &Permission::need(verb, resource), Some(project))
}

/// The environments the caller may read, with what runs, its health and where a rollback goes.
async fn env_rows(s: &Arc<State>, who: &Caller) -> Vec<EnvRow> {
    let mut envs = s.monitor.environments();
    envs.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    let ups = {
        let store = s.monitor.series.lock().expect("series lock");
        slipway_monitor::promql::Query::parse("up")
            .ok()
            .and_then(|q| q.eval_vector(&store, now_ms()).ok())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (name, project, env) in envs {
        if !may(s, who, "read", &format!("environments/{name}"), &project) {
            continue;
        }
        let current = s.store.current(&name).await.ok().flatten();
        let latest = s.store.history(&name, 1).await.ok().and_then(|h| h.into_iter().next());
        let status = match (&latest, &current) {
            (Some(l), _) if l.status.is_unfinished() => {
                if l.status == slipway_model::release::ReleaseStatus::Queued {
                    "waiting"
                } else {
                    "deploying"
                }
            }
            (Some(l), Some(c)) if l.id != c.id && l.status == slipway_model::release::ReleaseStatus::Failed => "failed",
            (_, Some(c)) if c.reason.is_rollback() && c.reason != slipway_model::release::ReleaseReason::Rollback => {
                "rolled_back"
            }
            (_, Some(_)) => "healthy",
            (_, None) => "unknown",
        };
        // The instances of the release that runs (an old one's may linger a moment).
        let version = current.as_ref().map(|c| c.version.as_str());
        let mine: Vec<&slipway_monitor::promql::Sample> = ups
            .iter()
            .filter(|u| {
                u.labels.get("environment") == Some(&name) && u.labels.get("version").map(String::as_str) == version
            })
            .collect();
        let healthy = mine.iter().filter(|u| u.value == 1.0).count();
        let status = if status == "healthy" && healthy < mine.len() { "degraded" } else { status };
        let rollback_to = match &current {
            Some(c) => s
                .store
                .good_releases(&name)
                .await
                .ok()
                .and_then(|g| {
                    g.into_iter().find(|r| r.group_id() != c.group_id() && r.artifacts != c.artifacts && r.id < c.id)
                })
                .map(|r| format!("{} (#{})", r.version, r.id)),
            None => None,
        };
        let updated = latest.as_ref().map(|l| l.finished_at_ms.or(l.started_at_ms).unwrap_or(l.created_at_ms));
        out.push(EnvRow {
            project_path: path_of(&project),
            version: current.as_ref().map(|c| c.version.clone()).unwrap_or_else(|| "—".into()),
            status: status.into(),
            updated_utc: updated.map(rfc3339),
            updated_local: updated.map(short_time).unwrap_or_default(),
            healthy,
            total: mine.len().max(if current.is_some() { env.instances as usize } else { 0 }),
            url: if current.is_some() { format!("http://{}", env.listen) } else { String::new() },
            rollback_to,
            may_rollback: may(s, who, "rollback", &format!("environments/{name}"), &project),
            name,
            project,
        });
    }
    out
}

async fn overview(AxState(s): S, who: Caller, c: Chrome) -> Response {
    let mut projects = Vec::new();
    let mut manual = Vec::new();
    for p in s.store.projects().await.unwrap_or_default() {
        if !may(&s, &who, "read", "pipelines", &p.name) {
            continue;
        }
        let runs = s.store.runs(&p.name, 20).await.unwrap_or_default();
        let last = runs.iter().find(|r| r.ref_name.as_deref() == Some(p.branch.as_str())).map(|r| PipelineRow {
            id: r.id,
            status: r.status.as_str().into(),
            duration: duration_text(r.finished_at_ms.unwrap_or_else(now_ms) - r.created_at_ms),
            commit: r.commit_sha.as_deref().unwrap_or("").chars().take(8).collect(),
            author: r.author.clone().unwrap_or_default(),
            at_utc: rfc3339(r.created_at_ms),
            at_local: short_time(r.created_at_ms),
        });
        projects.push(ProjectRow { name: p.name.clone(), branch: p.branch.clone(), last });
        // Manual jobs waiting in the project's last pipelines.
        let may_play = may(&s, &who, "write", "pipelines", &p.name);
        for r in runs.iter().take(5) {
            for j in s.store.jobs(r.id).await.unwrap_or_default() {
                if j.status == slipway_model::run::JobState::Manual && manual.len() < 20 {
                    manual.push(ManualRow {
                        run: r.id,
                        project: p.name.clone(),
                        index: j.index,
                        name: j.name,
                        may_play,
                    });
                }
            }
        }
    }
    let envs = env_rows(&s, &who).await;
    let mut alerts = Vec::new();
    let mut waiting = Vec::new();
    for e in &envs {
        for r in s.store.unfinished(&e.name).await.unwrap_or_default() {
            if r.status == slipway_model::release::ReleaseStatus::Queued {
                waiting.push(WaitRow {
                    environment: e.name.clone(),
                    project_path: e.project_path.clone(),
                    release: r.id,
                    version: r.version,
                    actor: r.actor,
                    may_approve: may(&s, &who, "approve", &format!("environments/{}", e.name), &e.project),
                });
            }
        }
    }
    for a in crate::monitor::visible_alerts(&s, &who) {
        let labels: Vec<String> =
            a.labels.iter().filter(|(k, _)| k.as_str() != "alertname").map(|(k, v)| format!("{k}={v}")).collect();
        alerts.push(AlertRow {
            name: a.labels.get("alertname").cloned().unwrap_or_default(),
            state: if a.state == slipway_monitor::rules::State::Firing { "firing".into() } else { "pending".into() },
            labels: labels.join(" "),
            summary: a.annotations.get("summary").cloned().unwrap_or_default(),
            silence: format!(
                "/ui/alerts?matchers={}#silence",
                form_urlencoded::byte_serialize(
                    a.labels
                        .iter()
                        .filter(|(k, _)| matches!(k.as_str(), "alertname" | "project" | "environment"))
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                        .as_bytes()
                )
                .collect::<String>()
            ),
        });
    }
    let p = Overview { t: c.t, c: &c, projects, envs, alerts, waiting, manual };
    page(p.render(), &c)
}

async fn environments(AxState(s): S, who: Caller, c: Chrome) -> Response {
    let envs = env_rows(&s, &who).await;
    let p = Environments { t: c.t, c: &c, envs };
    page(p.render(), &c)
}

// ----- pipelines -------------------------------------------------------------------------------

struct RunRow {
    id: i64,
    project: String,
    ref_name: String,
    status: String,
    trigger: String,
    author: String,
    duration: String,
    at_utc: String,
    at_local: String,
}

#[derive(Template)]
#[template(path = "pipelines.html")]
struct Pipelines<'a> {
    t: Lang,
    c: &'a Chrome,
    runs: Vec<RunRow>,
    project_names: Vec<String>,
    statuses: Vec<String>,
    project: String,
    status: String,
    ref_name: String,
    sources: Vec<String>,
    source: String,
    author: String,
}

fn query_map(q: Option<&str>) -> std::collections::HashMap<String, String> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

async fn pipelines(AxState(s): S, who: Caller, c: Chrome) -> Response {
    let q = &c.query;
    let (want_project, want_status, want_ref) = (
        q.get("project").cloned().unwrap_or_default(),
        q.get("status").cloned().unwrap_or_default(),
        q.get("ref").cloned().unwrap_or_default(),
    );
    let (want_source, want_author) =
        (q.get("source").cloned().unwrap_or_default(), q.get("author").cloned().unwrap_or_default().to_lowercase());
    let mut names = Vec::new();
    let mut runs = Vec::new();
    for p in s.store.projects().await.unwrap_or_default() {
        if !may(&s, &who, "read", "pipelines", &p.name) {
            continue;
        }
        names.push(p.name.clone());
        if !want_project.is_empty() && want_project != p.name {
            continue;
        }
        for r in s.store.runs(&p.name, 200).await.unwrap_or_default() {
            if (!want_status.is_empty() && r.status.as_str() != want_status)
                || (!want_ref.is_empty() && r.ref_name.as_deref() != Some(want_ref.as_str()))
                || (!want_source.is_empty() && r.source != want_source)
                || (!want_author.is_empty()
                    && !r.author.as_deref().unwrap_or("").to_lowercase().contains(&want_author)
                    && !r.triggered_by.as_deref().unwrap_or("").to_lowercase().contains(&want_author))
            {
                continue;
            }
            runs.push(RunRow {
                id: r.id,
                project: r.project.clone(),
                ref_name: r.ref_name.clone().unwrap_or_default(),
                status: r.status.as_str().into(),
                trigger: r.triggered_by.clone().unwrap_or_else(|| r.source.clone()),
                author: r.author.clone().unwrap_or_default(),
                duration: duration_text(r.finished_at_ms.unwrap_or_else(now_ms) - r.created_at_ms),
                at_utc: rfc3339(r.created_at_ms),
                at_local: short_time(r.created_at_ms),
            });
        }
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.id));
    runs.truncate(200);
    let statuses = ["running", "success", "failed", "canceled", "skipped"].iter().map(|x| x.to_string()).collect();
    let p = Pipelines {
        t: c.t,
        c: &c,
        runs,
        project_names: names,
        statuses,
        project: want_project,
        status: want_status,
        ref_name: want_ref,
        sources: ["push", "web", "api", "trigger", "schedule", "merge_request_event", "pipeline"]
            .iter()
            .map(|x| x.to_string())
            .collect(),
        source: want_source,
        author: q.get("author").cloned().unwrap_or_default(),
    };
    page(p.render(), &c)
}

struct JobRow {
    index: usize,
    name: String,
    stage: String,
    status: String,
    duration: String,
    agent: String,
    why: String,
    /// A trigger job's child pipeline, its jobs nested under it.
    child: Vec<ChildRow>,
}

/// A job of a child pipeline: `depth` 1 is the trigger's child, 2 a child's child (3 for any deeper).
struct ChildRow {
    depth: usize,
    name: String,
    stage: String,
    status: String,
    duration: String,
    why: String,
}

struct PipelinePage {
    id: i64,
    project: String,
    ref_name: String,
    commit: String,
    author: String,
    trigger: String,
    duration: String,
    status: String,
    detail: Option<String>,
    running: bool,
    has_failed: bool,
    jobs: Vec<JobRow>,
}

#[derive(Template)]
#[template(path = "pipeline.html")]
struct PipelineTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    p: PipelinePage,
    graph: String,
    may_write: bool,
    tests: Option<reports::Summary>,
}

fn job_row(j: &slipway_api::server::JobView) -> JobRow {
    JobRow {
        index: j.index,
        name: j.name.clone(),
        stage: j.stage.clone(),
        status: j.status.clone(),
        duration: j.duration_seconds.map(|d| duration_text((d * 1000.0) as i64)).unwrap_or_default(),
        agent: j.agent.clone().unwrap_or_default(),
        why: why(&j.reason, j.exit_code),
        child: j
            .child
            .clone()
            .and_then(|c| serde_json::from_value::<slipway_model::run::RunRecord>(c).ok())
            .map(|c| {
                c.nested_jobs()
                    .into_iter()
                    .map(|(above, cj)| ChildRow {
                        depth: (above.len() + 1).min(3),
                        name: cj.name.clone(),
                        stage: cj.stage.clone(),
                        status: cj.status.as_str().to_string(),
                        duration: duration_text(cj.duration_ms as i64),
                        why: why(&cj.reason, cj.exit_code),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Why a job failed: its reason, else a non-zero exit code.
fn why(reason: &Option<String>, exit_code: Option<i32>) -> String {
    match (reason, exit_code) {
        (Some(r), _) => r.clone(),
        (None, Some(c)) if c != 0 => format!("exit code {c}"),
        _ => String::new(),
    }
}

/// The stages as columns of job boxes, each a link to its log; a job that `needs:` others is
/// joined to each of them, the rest stage to stage (the needs are known while the server
/// holds the pipeline's plan: while it runs, and after until the server restarts).
fn graph_svg(
    run: i64,
    jobs: &[slipway_api::server::JobView],
    plan: Option<&slipway_pipeline::plan::Plan>,
    lang: Lang,
) -> String {
    let mut stages: Vec<&str> = Vec::new();
    for j in jobs {
        if !stages.contains(&j.stage.as_str()) {
            stages.push(&j.stage);
        }
    }
    let (col_w, box_w, box_h, gap, top) = (210, 170, 34, 12, 34);
    let rows = stages.iter().map(|st| jobs.iter().filter(|j| j.stage == *st).count()).max().unwrap_or(0);
    let width = (stages.len() * col_w).max(col_w);
    let height = top + rows * (box_h + gap) + 8;
    // Where each job's box is.
    let mut at = std::collections::HashMap::new();
    for (c, st) in stages.iter().enumerate() {
        for (r, j) in jobs.iter().filter(|j| j.stage == *st).enumerate() {
            at.insert(j.name.as_str(), (c, c * col_w + 10, top + r * (box_h + gap)));
        }
    }
    let mut out = format!(
        "<svg class=\"graph\" role=\"img\" aria-label=\"{}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\">",
        lang.s("pipelines.graph")
    );
    let edge = |out: &mut String, (x1, y1): (usize, usize), (x2, y2): (usize, usize)| {
        let mid = (x1 + x2) / 2;
        out.push_str(&format!("<path d=\"M{x1} {y1} C{mid} {y1} {mid} {y2} {x2} {y2}\"/>"));
    };
    for (c, st) in stages.iter().enumerate() {
        let x = c * col_w + 10;
        let mut t = String::new();
        escape_into(st, &mut t);
        out.push_str(&format!("<text class=\"stage\" x=\"{x}\" y=\"20\">{t}</text>"));
    }
    for j in jobs {
        let Some(&(c, x, y)) = at.get(j.name.as_str()) else { continue };
        let needs = plan.and_then(|p| p.jobs.get(j.index)).filter(|p| p.name == j.name).and_then(|p| p.needs.as_ref());
        match needs {
            Some(needs) => {
                for n in needs {
                    if let Some(&(_, nx, ny)) = at.get(n.job.as_str()) {
                        edge(&mut out, (nx + box_w, ny + box_h / 2), (x, y + box_h / 2));
                    }
                }
            }
            // Stage after stage: from the previous stage's first box.
            None if c > 0 => {
                edge(&mut out, ((c - 1) * col_w + 10 + box_w, top + box_h / 2), (x, y + box_h / 2));
            }
            None => {}
        }
    }
    for j in jobs {
        let Some(&(_, x, y)) = at.get(j.name.as_str()) else { continue };
        let mut name = String::new();
        escape_into(&j.name, &mut name);
        out.push_str(&format!(
            "<a href=\"/ui/pipelines/{run}/jobs/{}\" class=\"{}\" data-job=\"{}\"><rect x=\"{x}\" y=\"{y}\" width=\"{box_w}\" height=\"{box_h}\"/><text x=\"{}\" y=\"{}\">{name} · <tspan class=\"st\">{}</tspan></text></a>",
            j.index,
            j.status,
            j.index,
            x + 10,
            y + 22,
            lang.status(&j.status)
        ));
    }
    out.push_str("</svg>");
    out
}

fn escape_into(s: &str, out: &mut String) {
    out.push_str(&html_escape(s));
}

async fn pipeline(AxState(s): S, who: Caller, c: Chrome, Path(id): Path<i64>) -> Response {
    let v = match crate::api::view_of(&s, id).await {
        Ok(v) => v,
        Err(e) => return refused(StatusCode::NOT_FOUND, &e.to_string()),
    };
    let plan = s.plans.lock().expect("plans lock").get(&id).cloned();
    let graph = graph_svg(id, &v.jobs, plan.as_deref(), c.t);
    let p = PipelinePage {
        id,
        project: v.project.clone(),
        ref_name: v.ref_name.clone().unwrap_or_default(),
        commit: v.commit.as_deref().unwrap_or("").chars().take(8).collect(),
        author: v.author.clone().unwrap_or_default(),
        trigger: v.triggered_by.clone().unwrap_or_else(|| v.source.clone()),
        duration: duration_text((v.duration_seconds * 1000.0) as i64),
        status: v.status.clone(),
        detail: v.detail.clone(),
        running: v.status == "running",
        has_failed: v.jobs.iter().any(|j| j.status == "failed"),
        jobs: v.jobs.iter().map(job_row).collect(),
    };
    let may_write = may(&s, &who, "write", "pipelines", &v.project);
    let tests = reports::summary(&s, id).await;
    let t = PipelineTpl { t: c.t, c: &c, p, graph, may_write, tests };
    page(t.render(), &c)
}

/// Drives the pipeline with `event` (the API's own transition) and says how it went.
async fn act(s: &Arc<State>, id: i64, event: crate::pipelines::Event, done: &str) -> Response {
    let (text, error) = match crate::pipelines::drive(s, id, event).await {
        Ok(_) => (done.to_string(), false),
        Err(e) => (e.to_string(), true),
    };
    after(&format!("/ui/pipelines/{id}"), &text, error)
}

async fn cancel(AxState(s): S, c: Chrome, Path(id): Path<i64>, _form: Form) -> Response {
    act(&s, id, crate::pipelines::Event::Cancel, c.t.s("pipelines.canceled")).await
}

async fn retry(AxState(s): S, c: Chrome, Path(id): Path<i64>, _form: Form) -> Response {
    act(&s, id, crate::pipelines::Event::Retry(None), c.t.s("pipelines.retried")).await
}

async fn play(AxState(s): S, c: Chrome, Path((id, index)): Path<(i64, usize)>, _form: Form) -> Response {
    act(&s, id, crate::pipelines::Event::Play(index), c.t.s("pipelines.played")).await
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    run: i64,
    job: JobRow,
    log: String,
    first_error: Option<usize>,
    page: usize,
    pages: usize,
    running: bool,
    /// Where the page follows the log from, while the job runs and this is its last page.
    live: Option<String>,
    q: String,
    found: Vec<Match>,
}

/// A line of the log that matches the search.
struct Match {
    line: usize,
    page: usize,
    text: String,
}

async fn job(AxState(s): S, c: Chrome, Path((id, index)): Path<(i64, usize)>) -> Response {
    let v = match crate::api::view_of(&s, id).await {
        Ok(v) => v,
        Err(e) => return refused(StatusCode::NOT_FOUND, &e.to_string()),
    };
    let Some(j) = v.jobs.iter().find(|j| j.index == index) else {
        return refused(StatusCode::NOT_FOUND, &format!("pipeline {id} has no job {index}"));
    };
    let running = matches!(j.status.as_str(), "running" | "pending" | "created");
    let mut bytes = crate::api::read_log(&s, id, index).await.unwrap_or_default();
    if running {
        // Whole lines only: the live part goes on from the last one.
        bytes.truncate(bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1));
    }
    let text = String::from_utf8_lossy(&bytes);
    let total = text.lines().count();
    let pages = total.div_ceil(log::PAGE_LINES).max(1);
    let first_error = log::first_error(&text);
    // The page asked for, else the one with the first error, else the last.
    let page_no = c
        .query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or_else(|| first_error.map_or(pages, |l| (l - 1) / log::PAGE_LINES + 1))
        .clamp(1, pages);
    let from = (page_no - 1) * log::PAGE_LINES;
    let html = log::render(&text, from, from + log::PAGE_LINES);
    let q = c.query.get("q").cloned().unwrap_or_default();
    let found = if q.is_empty() {
        Vec::new()
    } else {
        log::search(&text, &q, 200)
            .into_iter()
            .map(|(line, text)| Match { line, page: (line - 1) / log::PAGE_LINES + 1, text })
            .collect()
    };
    let live = (running && page_no == pages)
        .then(|| format!("/ui/pipelines/{id}/jobs/{index}/live?line={total}&offset={}", bytes.len()));
    let t = JobTpl {
        t: c.t,
        c: &c,
        run: id,
        job: job_row(j),
        log: html,
        first_error,
        page: page_no,
        pages,
        running,
        live,
        q,
        found,
    };
    page(t.render(), &c)
}

/// The log as it was written (colours and all), to save.
async fn raw_log(AxState(s): S, Path((id, index)): Path<(i64, usize)>) -> Response {
    let bytes = crate::api::read_log(&s, id, index).await.unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"pipeline-{id}-job-{index}.log\"")),
        ],
        bytes,
    )
        .into_response()
}

struct RuleRow {
    group: String,
    name: String,
    state: String,
    for_: String,
    expr: String,
}

struct SilenceRow {
    id: String,
    state: String,
    matchers: String,
    ends: String,
    by: String,
    comment: String,
    may_expire: bool,
}

struct DeliveryRow {
    id: i64,
    at: String,
    to: String,
    state: String,
    alerts: String,
    status: String,
    error: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    rules: Vec<RuleRow>,
    silences: Vec<SilenceRow>,
    deliveries: Vec<DeliveryRow>,
    /// The caller may make silences (holds `rollback:environments` somewhere).
    may_silence: bool,
    /// The new-silence form's matchers, as a link to it filled them in.
    prefill: String,
}

/// The alert rules the caller may read with their state, the silences, the delivery log.
async fn alerts(AxState(s): S, who: Caller, c: Chrome) -> Response {
    use slipway_monitor::rules::{Rule, State as A};
    let mut rules = Vec::new();
    crate::monitor::each_source(&s, &who, |source, file, ev| {
        for (g, group) in file.groups.iter().enumerate() {
            for (r, rule) in group.rules.iter().enumerate() {
                let Rule::Alert(a) = rule else { continue };
                let state = ev
                    .and_then(|e| e.states.get(&(g, r)))
                    .and_then(|st| st.active.values().map(|x| x.state).filter(|x| *x != A::Inactive).max())
                    .unwrap_or(A::Inactive);
                rules.push(RuleRow {
                    group: if source.is_empty() { group.name.clone() } else { format!("{source}: {}", group.name) },
                    name: a.name.clone(),
                    state: match state {
                        A::Firing => "firing",
                        A::Pending => "pending",
                        A::Inactive => "inactive",
                    }
                    .into(),
                    for_: duration_text(a.for_ms),
                    expr: a.query.text.clone(),
                });
            }
        }
    });
    let now = now_ms();
    let silences = s
        .store
        .silences(now)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(crate::notify::silence_of)
        .filter(|x| crate::alerting::readable(&s, &who, crate::alerting::project_of(&x.matchers)))
        .map(|x| {
            let v = crate::alerting::silence_view(&x, now);
            SilenceRow {
                id: x.id.clone(),
                state: v.status["state"].as_str().unwrap_or("").to_string(),
                matchers: x.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(" "),
                ends: v.ends_at,
                by: x.created_by.clone(),
                comment: x.comment.clone(),
                may_expire: v.status["state"] != "expired"
                    && who.may(
                        &s.access(),
                        &Permission::need("rollback", "environments"),
                        crate::alerting::project_of(&x.matchers),
                    ),
            }
        })
        .collect();
    let deliveries = s
        .store
        .deliveries(400)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|d| crate::alerting::readable(&s, &who, d.project.as_deref()))
        .take(100)
        .map(|d| {
            let (state, names) = crate::alerting::summary(&d.payload);
            DeliveryRow {
                id: d.id,
                at: short_time(d.created_at_ms),
                to: format!("{}/{}", d.receiver, d.channel),
                state,
                alerts: names.join(", "),
                status: if d.status == "queued" && d.attempts > 0 {
                    format!("retrying ({})", d.attempts)
                } else {
                    d.status.clone()
                },
                error: d.last_error.clone().unwrap_or_default(),
            }
        })
        .collect();
    let need = Permission::need("rollback", "environments");
    let mut may_silence = who.may(&s.access(), &need, None);
    for p in s.store.projects().await.unwrap_or_default() {
        may_silence = may_silence || who.may(&s.access(), &need, Some(&p.name));
    }
    let prefill = c.query.get("matchers").cloned().unwrap_or_default();
    let t = AlertsTpl { t: c.t, c: &c, rules, silences, deliveries, may_silence, prefill };
    page(t.render(), &c)
}

/// `POST /ui/silences` (form: `matchers` as amtool writes them, `duration`, `comment`):
/// through the API's own checks (who may silence what, a matcher that matches something).
async fn silence_add(AxState(s): S, who: Caller, c: Chrome, Form(form): Form) -> Response {
    use slipway_monitor::notify::{MatchOp, Matcher};
    let text = form.get("matchers").cloned().unwrap_or_default();
    let back = format!("/ui/alerts?matchers={}", form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>());
    let matchers = match Matcher::parse_list(&text.split_whitespace().collect::<Vec<_>>().join(",")) {
        Ok(m) => m,
        Err(e) => return after(&back, &format!("{}: {e}", c.t.s("alerts.silence_failed")), true),
    };
    let n = crate::alerting::NewSilence {
        matchers: matchers
            .iter()
            .map(|m| crate::alerting::MatcherView {
                name: m.name.clone(),
                value: m.value.clone(),
                is_regex: matches!(m.op, MatchOp::Re | MatchOp::Nre),
                is_equal: matches!(m.op, MatchOp::Eq | MatchOp::Re),
            })
            .collect(),
        starts_at: None,
        ends_at: None,
        duration: Some(form.get("duration").cloned().unwrap_or_else(|| "2h".into())),
        comment: form.get("comment").cloned().unwrap_or_default(),
        created_by: None,
        id: None,
    };
    match crate::alerting::add(&s, &who, n, None).await {
        Ok(_) => after("/ui/alerts", c.t.s("alerts.silenced"), false),
        Err(e) => after(&back, &format!("{}: {e}", c.t.s("alerts.silence_failed")), true),
    }
}

/// `POST /ui/silences/{id}/expire`: ends a silence now.
async fn silence_expire(AxState(s): S, who: Caller, c: Chrome, Path(id): Path<String>, _form: Form) -> Response {
    match crate::alerting::expire_silence(AxState(Arc::clone(&s)), who, Path(id.clone())).await {
        Ok(_) => after("/ui/alerts", &format!("{} {id}", c.t.s("alerts.expired")), false),
        Err(e) => after("/ui/alerts", &format!("{}: {e}", c.t.s("alerts.expire_failed")), true),
    }
}

/// Approves a waiting release as the signed-in user, through the API's own handler (four eyes
/// included); back to the overview with what happened.
async fn approve(
    AxState(s): S,
    who: Caller,
    headers: HeaderMap,
    Path((name, env)): Path<(String, String)>,
    Form(form): Form,
) -> Response {
    let lang = lang_of(&headers, None);
    let release = form.get("release").and_then(|r| r.parse().ok());
    let r = crate::deploys::approve(
        AxState(Arc::clone(&s)),
        who,
        Path((name, env.clone())),
        axum::extract::Query(crate::deploys::ApproveQuery { release }),
    )
    .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let ok = r.status().is_success();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap_or_default();
    let text = if ok {
        format!("{} {env} #{}", lang.s("overview.approved"), release.map(|r| r.to_string()).unwrap_or_default())
    } else {
        let why = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_default();
        format!("{}: {why}", lang.s("overview.approve_failed"))
    };
    after("/ui/", &text, !ok)
}
