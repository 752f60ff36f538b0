//! The REST API under `/api/v1/` and the job protocol agents speak (docs/server.md). Errors
//! are JSON `{code, message, field}`; bodies are parsed here so a malformed one gets a 400
//! that names what is wrong, never a 5xx.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use slipway_api::server::*;
use slipway_model::run::JobState;
use slipway_model::time::{now_ms, rfc3339};
use slipway_runner::scheduler::Outcome;
use slipway_store::{Project, RunId};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{Caller, hash_token};
use crate::pipelines::{self, Event};
use crate::{ServerError, State};

type S = AxState<Arc<State>>;

/// Longest a job request waits for work.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Largest webhook body (GitHub caps its payloads at 25 MB; pushes are far smaller).
const WEBHOOK_LIMIT: usize = 5 * 1024 * 1024;
/// The lease of a job just claimed, until its agent first renews it.
const FIRST_LEASE: Duration = Duration::from_secs(10);
/// Largest log chunk an agent may send at once.
const MAX_CHUNK: usize = 1024 * 1024;

/// The routes and the OpenAPI document, from one list: each handler's `#[utoipa::path]` gives
/// both its route and its entry in the document, so they cannot drift apart.
fn routes() -> OpenApiRouter<Arc<State>> {
    use crate::{deploys, schedules, webhooks};
    let limit = axum::extract::DefaultBodyLimit::max;
    let (s, p, m) = routes!(webhooks::receive);
    let webhook = (s, p, m.layer(limit(WEBHOOK_LIMIT)));
    let (s, p, m) = routes!(deploys::deploy);
    let deploy = (s, p, m.layer(limit(deploys::MAX_UPLOAD)));
    let (s, p, m) = routes!(deploys::upload);
    let upload = (s, p, m.layer(limit(deploys::MAX_UPLOAD)));
    let (s, p, m) = routes!(deploys::get_cache, deploys::put_cache);
    let cache = (s, p, m.layer(limit(deploys::MAX_UPLOAD)));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(projects, add_project))
        .routes(routes!(trigger))
        .routes(routes!(pipelines_list))
        .routes(routes!(pipeline))
        .routes(routes!(cancel))
        .routes(routes!(retry_failed))
        .routes(routes!(retry_job))
        .routes(routes!(play_job))
        .routes(routes!(job_log))
        .routes(routes!(crate::users::login))
        .routes(routes!(crate::users::whoami))
        .routes(routes!(crate::users::tokens, crate::users::add_token))
        .routes(routes!(crate::users::revoke_token))
        .routes(routes!(crate::users::add_agent_token))
        .routes(routes!(crate::users::users, crate::users::add_user))
        .routes(routes!(crate::users::delete_user))
        .routes(routes!(crate::users::set_password))
        .routes(routes!(crate::users::add_binding, crate::users::remove_binding))
        .routes(routes!(crate::users::roles))
        .routes(routes!(crate::users::audit))
        .routes(routes!(crate::users::verify))
        .routes(routes!(crate::secrets::list))
        .routes(routes!(crate::secrets::put, crate::secrets::delete))
        .routes(routes!(crate::secrets::rotate))
        .routes(routes!(crate::monitor::query))
        .routes(routes!(crate::monitor::query_range))
        .routes(routes!(crate::monitor::alerts))
        .routes(routes!(crate::monitor::rules))
        .routes(routes!(crate::monitor::federate))
        .routes(routes!(crate::alerting::silences, crate::alerting::add_silence))
        .routes(routes!(crate::alerting::expire_silence))
        .routes(routes!(crate::alerting::add_project_silence))
        .routes(routes!(crate::alerting::deliveries))
        .routes(routes!(crate::alerting::alertmanager_hook))
        .routes(routes!(crate::secrets::group_list))
        .routes(routes!(crate::secrets::group_put, crate::secrets::group_delete))
        .routes(webhook)
        .routes(routes!(schedules::list, schedules::add))
        .routes(routes!(schedules::update, schedules::delete))
        .routes(routes!(schedules::play))
        .routes(routes!(deploys::status))
        .routes(routes!(deploys::history))
        .routes(routes!(deploys::logs))
        .routes(deploy)
        .routes(routes!(deploys::rollback))
        .routes(routes!(deploys::promote))
        .routes(routes!(deploys::approve))
        .routes(upload)
        .routes(routes!(deploys::download))
        .routes(cache)
        .routes(routes!(request_job))
        .routes(routes!(append_log))
        .routes(routes!(renew))
        .routes(routes!(release))
        .routes(routes!(finish))
        .routes(routes!(crate::tunnel::open))
        .routes(routes!(crate::tunnel::agents))
        .routes(routes!(crate::gitops::list, crate::gitops::add))
        .routes(routes!(crate::gitops::show, crate::gitops::delete))
        .routes(routes!(crate::gitops::sync))
        .routes(routes!(crate::gitops::refresh))
        .routes(routes!(crate::gitops::history))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "slipway server",
        description = "Projects, pipelines, environments and the job protocol of `slipway server` (docs/server.md). Every call but the health checks, the metrics and webhooks needs `Authorization: Bearer TOKEN`; errors are `{code, message, field}`."
    ),
    modifiers(&BearerToken),
    components(schemas(ApiErrorBody))
)]
struct ApiDoc;

/// Every operation needs a bearer token unless it says otherwise.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API, agent or job token (`slw_…`)"))
                    .build(),
            ),
        );
        api.security = Some(vec![SecurityRequirement::new("token", Vec::<String>::new())]);
    }
}

/// The OpenAPI 3.1 document of the API, as `GET /api/v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

pub fn router(state: Arc<State>) -> Router {
    let (router, api) = routes().split_for_parts();
    let doc = Arc::new(api.to_json().expect("the OpenAPI document serializes"));
    router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = Arc::clone(&doc);
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], doc.as_str().to_string()) }
            }),
        )
        .merge(crate::web::routes())
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), crate::access::authorize))
        .layer(axum::middleware::from_fn(tokens_not_in_urls))
        .with_state(state)
}

/// Query keys that carry a token in other tools' APIs (GitLab's `private_token`, OAuth's
/// `access_token`, …).
const TOKEN_KEYS: &[&str] = &["token", "private_token", "job_token", "access_token", "api_key", "apikey"];

/// Tokens travel in headers only: a URL ends up in proxies', servers' and browsers' logs and
/// histories, so a request with a token in its query is refused before anything reads it.
async fn tokens_not_in_urls(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let key = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, _)| k.to_ascii_lowercase())
            .find(|k| TOKEN_KEYS.contains(&k.as_str()))
    });
    match key {
        Some(key) => error(
            StatusCode::BAD_REQUEST,
            "token_in_url",
            format!(
                "a token in the URL (`?{key}=`) is refused: URLs are kept in logs; send it in the `Authorization: Bearer TOKEN` header (or GitLab's `PRIVATE-TOKEN` / `JOB-TOKEN`) and treat this one as leaked"
            ),
            Some(key),
        ),
        None => next.run(req).await,
    }
}

/// A JSON error.
pub fn error(status: StatusCode, code: &str, message: String, field: Option<String>) -> Response {
    (status, axum::Json(ApiErrorBody { code: code.into(), message, field })).into_response()
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            ServerError::Input(_, field) => error(StatusCode::BAD_REQUEST, "invalid", message, field),
            ServerError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", message, None),
            ServerError::Conflict(_) => error(StatusCode::CONFLICT, "conflict", message, None),
            ServerError::Forbidden(_) => error(StatusCode::FORBIDDEN, "forbidden", message, None),
            ServerError::Unauthorized(_) => error(StatusCode::UNAUTHORIZED, "unauthorized", message, None),
            ServerError::TooLarge(_) => error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message, None),
            ServerError::Git(_) => error(StatusCode::BAD_GATEWAY, "git", message, None),
            ServerError::Plan(_) => error(StatusCode::UNPROCESSABLE_ENTITY, "plan", message, None),
            ServerError::Store(_) => error(StatusCode::SERVICE_UNAVAILABLE, "store", message, None),
            ServerError::Io { .. } => error(StatusCode::INTERNAL_SERVER_ERROR, "io", message, None),
        }
    }
}

/// Parses a JSON body, naming the field at fault.
pub(crate) fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ServerError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        let field = msg.split('`').nth(1).map(str::to_string);
        ServerError::Input(format!("invalid JSON body: {msg}"), field)
    })
}

/// Prometheus exposition (text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "server", summary = "Prometheus metrics", responses((status = 200, description = "Text exposition format 0.0.4", content_type = "text/plain", body = String), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)), security(()))]
async fn metrics(AxState(s): S) -> Result<Response, ServerError> {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let (runs, jobs) = s.store.status_counts().await?;
    let mut o = String::new();
    let mut gauge = |name: &str, help: &str, label: &str, rows: &[(String, i64)]| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (status, n) in rows {
            let _ = writeln!(o, "{name}{{{label}=\"{status}\"}} {n}");
        }
    };
    gauge("slipway_server_pipelines", "Pipelines in the store, by status.", "status", &runs);
    gauge("slipway_server_jobs", "Jobs in the store, by status.", "status", &jobs);
    let c = &s.counters;
    let _ = writeln!(o, "# HELP slipway_server_webhooks_total Webhook deliveries, by what became of them.");
    let _ = writeln!(o, "# TYPE slipway_server_webhooks_total counter");
    for (result, n) in [
        ("accepted", c.webhooks_accepted.load(Relaxed)),
        ("rejected", c.webhooks_rejected.load(Relaxed)),
        ("replayed", c.webhooks_replayed.load(Relaxed)),
    ] {
        let _ = writeln!(o, "slipway_server_webhooks_total{{result=\"{result}\"}} {n}");
    }
    let _ = writeln!(o, "# HELP slipway_server_job_claims_total Jobs handed to agents.");
    let _ = writeln!(o, "# TYPE slipway_server_job_claims_total counter");
    let _ = writeln!(o, "slipway_server_job_claims_total {}", c.claims.load(Relaxed));
    let _ = writeln!(o, "# HELP slipway_server_agents_waiting Agents waiting for a job now.");
    let _ = writeln!(o, "# TYPE slipway_server_agents_waiting gauge");
    let _ = writeln!(o, "slipway_server_agents_waiting {}", c.waiting.load(Relaxed).max(0));
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], o).into_response())
}

#[utoipa::path(get, path = "/healthz", tag = "server", summary = "Alive", responses((status = 200, description = "ok", content_type = "text/plain", body = String), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)), security(()))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "server", summary = "Ready: the store answers", responses((status = 200, description = "ready", content_type = "text/plain", body = String), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)), security(()))]
async fn readyz(AxState(s): S) -> Response {
    match s.store.projects().await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string(), None),
    }
}

fn project_view(p: &Project) -> ProjectView {
    ProjectView {
        name: p.name.clone(),
        repo: p.repo.clone(),
        branch: p.branch.clone(),
        poll_seconds: p.poll_ms.map(|m| (m / 1000) as u64),
        webhook_secret: None,
    }
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", summary = "The projects", responses((status = 200, body = [ProjectView]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn projects(AxState(s): S, who: Caller) -> Result<Response, ServerError> {
    let (access, need) = (s.access(), slipway_model::access::Permission::need("read", "code"));
    let list: Vec<ProjectView> =
        s.store.projects().await?.iter().filter(|p| who.may(&access, &need, Some(&p.name))).map(project_view).collect();
    Ok(axum::Json(list).into_response())
}

/// Project names: letters, digits, `-`, `_`, `.`, and `/` between parts (`team/app`).
fn check_project_name(name: &str) -> Result<(), ServerError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    match ok {
        true => Ok(()),
        false => Err(ServerError::Input(
            format!(
                "`{name}` is not a project name: letters, digits, `-`, `_`, `.`, parts separated by `/` (at most 100)"
            ),
            Some("name".into()),
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", summary = "Watch a repository", request_body = NewProject, responses((status = 201, description = "Added; the only answer with its webhook secret", body = ProjectView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn add_project(AxState(s): S, _who: Caller, bytes: Bytes) -> Result<Response, ServerError> {
    let p: NewProject = body(&bytes)?;
    check_project_name(&p.name)?;
    if p.repo.trim().is_empty() || p.repo.starts_with('-') {
        return Err(ServerError::Input("`repo` must be a URL or a path git can fetch".into(), Some("repo".into())));
    }
    // The remote must answer now, not at the first push.
    let repo = p.repo.clone();
    let refs = tokio::task::spawn_blocking(move || slipway_git::remote::ls_remote(&repo))
        .await
        .map_err(|e| ServerError::Git(e.to_string()))?
        .map_err(|e| ServerError::Input(format!("cannot read `{}`: {e}", p.repo), Some("repo".into())))?;
    if !refs.iter().any(|(r, _)| *r == format!("refs/heads/{}", p.branch)) {
        return Err(ServerError::Input(format!("`{}` has no branch `{}`", p.repo, p.branch), Some("branch".into())));
    }
    let project = Project {
        name: p.name.clone(),
        repo: p.repo.clone(),
        branch: p.branch.clone(),
        poll_ms: p.poll_seconds.map(|s| (s.max(1) * 1000) as i64),
        created_at_ms: now_ms(),
        webhook_secret: Some(match p.webhook_secret.clone() {
            Some(s) if !s.is_empty() => s,
            _ => crate::new_token()?,
        }),
    };
    if !s.store.add_project(&project).await? {
        return Err(ServerError::Conflict(format!("project `{}` exists", p.name)));
    }
    // The webhook secret is shown here, to the admin who made the project, and nowhere else.
    let view = ProjectView { webhook_secret: project.webhook_secret.clone(), ..project_view(&project) };
    let after = serde_json::to_value(project_view(&project)).unwrap_or_default();
    Ok(crate::access::audited(
        (StatusCode::CREATED, axum::Json(view)),
        serde_json::json!({"before": null, "after": after}),
    ))
}

#[utoipa::path(post, path = "/api/v1/projects/{name}/pipelines", tag = "pipelines", summary = "Start a pipeline", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)")), request_body = Option<Trigger>, responses((status = 201, body = PipelineView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn trigger(AxState(s): S, who: Caller, Path(name): Path<String>, bytes: Bytes) -> Result<Response, ServerError> {
    let t: Trigger = if bytes.is_empty() { Trigger::default() } else { body(&bytes)? };
    check_variables(&t.variables)?;
    let project = s.store.project(&name).await?.ok_or_else(|| ServerError::NotFound(format!("project `{name}`")))?;
    let by = format!("api: {}", who.name);
    let run = pipelines::create(&s, &project, t.ref_name.as_deref(), None, "api", t.variables, &by).await?;
    let view = view_of(&s, run).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// Variable names as shells and GitLab take them: letters, digits and `_`, not first a digit.
pub(crate) fn check_variables(vars: &[(String, String)]) -> Result<(), ServerError> {
    for (k, _) in vars {
        let ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(ServerError::Input(format!("`{k}` is not a variable name"), Some("variables".into())));
        }
    }
    Ok(())
}

pub(crate) async fn view_of(s: &State, id: RunId) -> Result<PipelineView, ServerError> {
    let run = s.store.run(id).await?.ok_or_else(|| ServerError::NotFound(format!("pipeline {id}")))?;
    let jobs = s.store.jobs(id).await?;
    Ok(PipelineView {
        id: run.id,
        project: run.project,
        ref_name: run.ref_name,
        commit: run.commit_sha,
        source: run.source,
        status: run.status.as_str().into(),
        detail: run.detail,
        created_at: rfc3339(run.created_at_ms),
        started_at: jobs.iter().filter_map(|j| j.started_at_ms).min().map(rfc3339),
        finished_at: run.finished_at_ms.map(rfc3339),
        duration_seconds: (run.finished_at_ms.unwrap_or_else(now_ms) - run.created_at_ms).max(0) as f64 / 1000.0,
        author: run.author,
        triggered_by: run.triggered_by,
        jobs: jobs
            .into_iter()
            .map(|j| JobView {
                index: j.index,
                name: j.name,
                stage: j.stage,
                status: j.status.as_str().into(),
                exit_code: j.exit_code,
                attempts: j.attempts,
                reason: j.reason,
                agent: j.runner,
                queued_at: j.queued_at_ms.map(rfc3339),
                started_at: j.started_at_ms.map(rfc3339),
                finished_at: j.finished_at_ms.map(rfc3339),
                duration_seconds: j.started_at_ms.map(|s| {
                    let end = if j.status.is_terminal() { j.finished_at_ms.unwrap_or(s) } else { now_ms() };
                    (end - s).max(0) as f64 / 1000.0
                }),
                child: j.child.as_deref().and_then(|c| serde_json::from_str(c).ok()),
            })
            .collect(),
    })
}

#[derive(serde::Deserialize)]
struct ListQuery {
    project: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/pipelines", tag = "pipelines", summary = "Pipelines, newest first", params(("project" = Option<String>, Query, description = "Only this project's"), ("limit" = Option<i64>, Query, description = "At most this many (1 to 1000, default 50)")), responses((status = 200, body = [PipelineView]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn pipelines_list(AxState(s): S, who: Caller, Query(q): Query<ListQuery>) -> Result<Response, ServerError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let projects = match q.project {
        Some(p) => vec![p],
        None => s.store.projects().await?.into_iter().map(|p| p.name).collect(),
    };
    // Only the projects the caller may read pipelines of (another one's are not there).
    let (access, need) = (s.access(), slipway_model::access::Permission::need("read", "pipelines"));
    let projects: Vec<String> = projects.into_iter().filter(|p| who.may(&access, &need, Some(p))).collect();
    let mut out = Vec::new();
    for p in projects {
        for r in s.store.runs(&p, limit).await? {
            out.push(view_of(&s, r.id).await?);
        }
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.id));
    out.truncate(limit as usize);
    Ok(axum::Json(out).into_response())
}

#[utoipa::path(get, path = "/api/v1/pipelines/{id}", tag = "pipelines", summary = "One pipeline and its jobs", params(("id" = i64, Path, description = "The pipeline")), responses((status = 200, body = PipelineView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn pipeline(AxState(s): S, _who: Caller, Path(id): Path<i64>) -> Result<Response, ServerError> {
    Ok(axum::Json(view_of(&s, id).await?).into_response())
}

#[utoipa::path(post, path = "/api/v1/pipelines/{id}/cancel", tag = "pipelines", summary = "Cancel a pipeline", params(("id" = i64, Path, description = "The pipeline")), responses((status = 200, body = PipelineView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn cancel(AxState(s): S, _who: Caller, Path(id): Path<i64>) -> Result<Response, ServerError> {
    pipelines::drive(&s, id, Event::Cancel).await?;
    Ok(axum::Json(view_of(&s, id).await?).into_response())
}

/// Every failed job of the pipeline again (and the jobs they kept from running).
#[utoipa::path(post, path = "/api/v1/pipelines/{id}/retry", tag = "pipelines", summary = "Run the failed jobs again", params(("id" = i64, Path, description = "The pipeline")), responses((status = 200, body = PipelineView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn retry_failed(AxState(s): S, _who: Caller, Path(id): Path<i64>) -> Result<Response, ServerError> {
    pipelines::drive(&s, id, Event::Retry(None)).await?;
    Ok(axum::Json(view_of(&s, id).await?).into_response())
}

/// One job that ended, again.
#[utoipa::path(post, path = "/api/v1/pipelines/{id}/jobs/{index}/retry", tag = "pipelines", summary = "Run a job that ended again", params(("id" = i64, Path, description = "The pipeline"), ("index" = u64, Path, description = "The job, by its place in the pipeline")), responses((status = 200, body = PipelineView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn retry_job(
    AxState(s): S,
    _who: Caller,
    Path((id, index)): Path<(i64, usize)>,
) -> Result<Response, ServerError> {
    pipelines::drive(&s, id, Event::Retry(Some(index))).await?;
    Ok(axum::Json(view_of(&s, id).await?).into_response())
}

/// A manual job that waits, started.
#[utoipa::path(post, path = "/api/v1/pipelines/{id}/jobs/{index}/play", tag = "pipelines", summary = "Start a manual job", params(("id" = i64, Path, description = "The pipeline"), ("index" = u64, Path, description = "The job, by its place in the pipeline")), responses((status = 200, body = PipelineView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn play_job(AxState(s): S, _who: Caller, Path((id, index)): Path<(i64, usize)>) -> Result<Response, ServerError> {
    pipelines::drive(&s, id, Event::Play(index)).await?;
    Ok(axum::Json(view_of(&s, id).await?).into_response())
}

fn log_path(s: &State, run: RunId, index: usize) -> std::path::PathBuf {
    s.data_dir.join("logs").join(run.to_string()).join(format!("{index}.log"))
}

/// A job's log: the plain file while it runs, the compressed one once it ended.
pub(crate) async fn read_log(s: &State, run: RunId, index: usize) -> Option<Vec<u8>> {
    let plain = log_path(s, run, index);
    if let Ok(b) = tokio::fs::read(&plain).await {
        return Some(b);
    }
    let gz = tokio::fs::read(plain.with_extension("log.gz")).await.ok()?;
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut out).ok().map(|_| out)
    })
    .await
    .ok()
    .flatten()
}

/// Stores an ended job's log compressed (`N.log.gz`, written aside then renamed, the plain
/// file removed after): logs are read far less than they are kept.
pub(crate) async fn compress_log(s: &State, run: RunId, index: usize) {
    let plain = log_path(s, run, index);
    let _ = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let bytes = match std::fs::read(&plain) {
            Ok(b) => b,
            Err(_) => return Ok(()),
        };
        let tmp = plain.with_extension("log.gz.partial");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&bytes)?;
        std::fs::write(&tmp, gz.finish()?)?;
        std::fs::rename(&tmp, plain.with_extension("log.gz"))?;
        std::fs::remove_file(&plain)
    })
    .await;
}

#[derive(serde::Deserialize)]
struct LogQuery {
    offset: Option<u64>,
    #[serde(default)]
    follow: bool,
}

/// A job's log as Server-Sent Events: `log` events with the output's lines (`id` is the byte
/// offset after them, so a client resumes with `Last-Event-ID` or `?offset=`), then one `end`
/// event with the job's status.
/// What a follower of a job's log at byte `from` gets next: the text written since — whole
/// lines while the job runs, the rest too once it has ended — with the byte after it; and,
/// once the job has ended, its status. The status is read before the log, so a job that
/// ended is followed to its last byte. (The API's follow and the dashboard's live log.)
pub(crate) async fn next_piece(
    s: &State,
    run: RunId,
    index: usize,
    from: usize,
) -> (Option<(String, usize)>, Option<&'static str>) {
    let status =
        s.store.jobs(run).await.ok().and_then(|js| js.into_iter().find(|j| j.index == index)).map(|j| j.status);
    let ended = status.is_none_or(|st| st.is_terminal()).then(|| status.map_or("unknown", |st| st.as_str()));
    let bytes = read_log(s, run, index).await.unwrap_or_default();
    let from = from.min(bytes.len());
    let end = match bytes[from..].iter().rposition(|b| *b == b'\n') {
        Some(i) => from + i + 1,
        None if ended.is_some() => bytes.len(),
        None => from,
    };
    ((end > from).then(|| (String::from_utf8_lossy(&bytes[from..end]).into_owned(), end)), ended)
}

fn follow_log(s: Arc<State>, run: RunId, index: usize, from: u64) -> Response {
    use axum::response::sse::{Event as Sse, KeepAlive};
    struct Cursor {
        s: Arc<State>,
        offset: u64,
        done: bool,
    }
    let stream = futures_util::stream::unfold(Cursor { s, offset: from, done: false }, move |mut c| async move {
        if c.done {
            return None;
        }
        loop {
            let (piece, ended) = next_piece(&c.s, run, index, c.offset as usize).await;
            if let Some((text, end)) = piece {
                c.offset = end as u64;
                let ev = Sse::default().event("log").id(c.offset.to_string()).data(text.trim_end_matches('\n'));
                return Some((Ok::<_, std::convert::Infallible>(ev), c));
            }
            if let Some(st) = ended {
                c.done = true;
                let ev = Sse::default().event("end").id(c.offset.to_string()).data(format!("{{\"status\":\"{st}\"}}"));
                return Some((Ok(ev), c));
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    axum::response::sse::Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[utoipa::path(get, path = "/api/v1/pipelines/{id}/jobs/{index}/log", tag = "pipelines", summary = "A job's log, or (`follow=true`) its Server-Sent Events", params(("id" = i64, Path, description = "The pipeline"), ("index" = u64, Path, description = "The job, by its place in the pipeline"), ("offset" = Option<u64>, Query, description = "From this byte on"), ("follow" = Option<bool>, Query, description = "Follow live (text/event-stream)")), responses((status = 200, description = "The log from the offset on", content_type = "text/plain", body = String), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn job_log(
    AxState(s): S,
    _who: Caller,
    headers: axum::http::HeaderMap,
    Path((run, index)): Path<(i64, usize)>,
    Query(q): Query<LogQuery>,
) -> Response {
    if q.follow {
        let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        return follow_log(s, run, index, resume.or(q.offset).unwrap_or(0));
    }
    match read_log(&s, run, index).await {
        Some(bytes) => {
            let from = (q.offset.unwrap_or(0) as usize).min(bytes.len());
            bytes[from..].to_vec().into_response()
        }
        None => error(StatusCode::NOT_FOUND, "not_found", format!("no log for job {index} of pipeline {run}"), None),
    }
}

/// The job protocol: an agent asks for a job and waits (long-poll) until one is claimable.
#[utoipa::path(post, path = "/api/v1/jobs/request", tag = "job protocol", summary = "Ask for a job (long-poll)", request_body = JobRequest, responses((status = 200, body = JobAssignment), (status = 204, description = "No job within `wait_ms`"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn request_job(AxState(s): S, who: Caller, bytes: Bytes) -> Result<Response, ServerError> {
    let req: JobRequest = body(&bytes)?;
    who.check_agent(&req.agent)?;
    let agent = format!("{}@{}", req.agent, who.name);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms).min(MAX_WAIT);
    let c = &s.counters;
    if let Some(bad) = req.tags.iter().find(|t| t.is_empty() || t.contains(',')) {
        return Err(ServerError::Input(format!("`{bad}` is not a tag (no commas, not empty)"), Some("tags".into())));
    }
    c.waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    seen(&s, &agent, Some(&req), Some(true));
    let r = claim_loop(&s, &agent, &req.tags, deadline).await;
    seen(&s, &agent, Some(&req), Some(false));
    c.waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    r
}

/// Notes that a job agent was heard from (a request for work, or a lease renewed).
pub(crate) fn seen(s: &State, agent: &str, req: Option<&JobRequest>, waiting: Option<bool>) {
    let mut all = s.agents_seen.lock().expect("agents lock");
    let e = all.entry(agent.to_string()).or_insert_with(|| crate::AgentSeen {
        tags: Vec::new(),
        version: None,
        last_ms: 0,
        waiting: false,
    });
    e.last_ms = now_ms();
    if let Some(w) = waiting {
        e.waiting = w;
    }
    if let Some(r) = req {
        e.tags = r.tags.clone();
        e.version = r.version.clone().or(e.version.take());
    }
}

async fn claim_loop(
    s: &Arc<State>,
    agent: &str,
    tags: &[String],
    deadline: tokio::time::Instant,
) -> Result<Response, ServerError> {
    loop {
        // Listen before looking, so a job queued in between wakes us.
        let notified = s.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // A first lease of at most 10 s: an agent that got the job renews it within a second;
        // one that never got the answer leaves the job to go back to the queue soon.
        // The job's own token is made with the claim (one commit).
        let token = crate::new_token()?;
        let hash = hash_token(&token);
        let expires_at_ms = now_ms() + 24 * 3600 * 1000;
        let job_token = slipway_store::JobToken { hash: &hash, expires_at_ms };
        let claimed = s.store.claim_job(agent, tags, s.lease.min(FIRST_LEASE), Some(job_token)).await?;
        if let Some(job) = claimed {
            s.counters.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (run, index) = (job.run, job.index);
            return match assignment(s, job, token).await {
                Ok(a) => Ok(axum::Json(a).into_response()),
                Err(e) => {
                    // The agent will not get it: back in the queue now, not when the lease ends.
                    if let Err(r) = s.store.release_job(run, index, agent).await {
                        tracing::warn!(pipeline = run, job = index, error = %r, "cannot hand an unsent job back");
                    }
                    s.work.notify_waiters();
                    Err(e)
                }
            };
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

async fn assignment(
    s: &Arc<State>,
    job: slipway_store::ClaimedJob,
    token: String,
) -> Result<JobAssignment, ServerError> {
    let run = s.store.run(job.run).await?.ok_or_else(|| ServerError::NotFound(format!("pipeline {}", job.run)))?;
    let project = s
        .store
        .project(&run.project)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("project `{}`", run.project)))?;
    let branch = pipelines::branch_of(&s.data_dir, &project, run.ref_name.as_deref());
    // The project's secrets for the job's environment; protected ones for protected refs.
    let plan = pipelines::plan_of(s, &run).await?;
    let environment = plan.jobs.get(job.index).and_then(|j| j.environment.as_ref()).map(|e| e.name.clone());
    let protected_ref = run.ref_name.as_deref().is_some_and(|r| s.access().is_protected_ref(&project.branch, r));
    let secrets = crate::secrets::for_job(s, &project.name, environment.as_deref(), protected_ref).await?;
    // A new attempt starts a new log.
    let log = log_path(s, job.run, job.index);
    if let Some(dir) = log.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    let _ = tokio::fs::write(&log, b"").await;
    let _ = tokio::fs::remove_file(log.with_extension("log.gz")).await;
    Ok(JobAssignment {
        run: job.run,
        index: job.index,
        name: job.name,
        attempt: job.attempt,
        project: project.name,
        // Agents on this machine fetch from the server's mirror (already fetched); the
        // project's own remote serves the others the same commit.
        repo: project.repo,
        commit: run.commit_sha.unwrap_or_default(),
        branch,
        source: run.source,
        variables: run.variables,
        secrets,
        lease_ms: s.lease.as_millis() as u64,
        job_token: token,
        server_url: Some(s.notifier.external_url.clone()),
        projects: crate::pipelines::server_projects(s).await,
    })
}

/// Whether `who` (an agent) holds this job now.
pub(crate) async fn holder(s: &State, run: RunId, index: usize) -> Result<Option<String>, ServerError> {
    Ok(s.store
        .jobs(run)
        .await?
        .into_iter()
        .find(|j| j.index == index && j.status == JobState::Running)
        .and_then(|j| j.runner))
}

#[utoipa::path(post, path = "/api/v1/jobs/{run}/{index}/log", tag = "job protocol", summary = "Append output to a running job's log", params(("run" = i64, Path, description = "The pipeline"), ("index" = u64, Path, description = "The job, by its place in the pipeline"), ("agent" = String, Query, description = "The agent's name")), request_body = String, responses((status = 204, description = "Appended"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn append_log(
    AxState(s): S,
    _who: Caller,
    Path((run, index)): Path<(i64, usize)>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    if bytes.len() > MAX_CHUNK {
        return Err(ServerError::TooLarge(format!("a log chunk may have {MAX_CHUNK} bytes")));
    }
    if holder(&s, run, index).await?.is_none() {
        return Err(ServerError::Conflict(format!("job {index} of pipeline {run} is not running")));
    }
    use tokio::io::AsyncWriteExt;
    let path = log_path(&s, run, index);
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|source| ServerError::Io { what: path.display().to_string(), source })?;
    f.write_all(&bytes).await.map_err(|source| ServerError::Io { what: path.display().to_string(), source })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `?agent=NAME`: which of the token's agents calls.
#[derive(serde::Deserialize)]
pub struct AgentQuery {
    pub(crate) agent: String,
}

#[utoipa::path(post, path = "/api/v1/jobs/{run}/{index}/lease", tag = "job protocol", summary = "Renew a job's lease; says whether to stop", params(("run" = i64, Path, description = "The pipeline"), ("index" = u64, Path, description = "The job, by its place in the pipeline"), ("agent" = String, Query, description = "The agent's name")), responses((status = 200, body = LeaseAnswer), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn renew(
    AxState(s): S,
    who: Caller,
    Path((run, index)): Path<(i64, usize)>,
    Query(q): Query<AgentQuery>,
) -> Result<Response, ServerError> {
    who.check_agent(&q.agent)?;
    let agent = format!("{}@{}", q.agent, who.name);
    let held = s.store.renew_job(run, index, &agent, s.lease).await?;
    seen(&s, &agent, None, None);
    // A canceled pipeline's scheduler says so in its snapshot while its jobs still run.
    let canceling = s.store.run(run).await?.is_some_and(|r| {
        r.status == slipway_model::run::PipelineStatus::Canceled
            || r.snapshot.as_ref().and_then(|v| v.get("canceled")).and_then(serde_json::Value::as_bool) == Some(true)
    });
    let cancel = canceling || !held;
    Ok(axum::Json(LeaseAnswer { held, cancel }).into_response())
}

/// An agent that is stopping hands a job back: it is queued again at once.
#[utoipa::path(post, path = "/api/v1/jobs/{run}/{index}/release", tag = "job protocol", summary = "Hand a job back (the agent is stopping)", params(("run" = i64, Path, description = "The pipeline"), ("index" = u64, Path, description = "The job, by its place in the pipeline"), ("agent" = String, Query, description = "The agent's name")), responses((status = 204, description = "Queued again"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn release(
    AxState(s): S,
    who: Caller,
    Path((run, index)): Path<(i64, usize)>,
    Query(q): Query<AgentQuery>,
) -> Result<Response, ServerError> {
    who.check_agent(&q.agent)?;
    let agent = format!("{}@{}", q.agent, who.name);
    if !s.store.release_job(run, index, &agent).await? {
        return Err(ServerError::Conflict(format!("job {index} of pipeline {run} is not held by `{agent}`")));
    }
    tracing::info!(pipeline = run, job = index, agent = %agent, "a stopping agent handed the job back");
    s.work.notify_waiters();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/api/v1/jobs/{run}/{index}/finish", tag = "job protocol", summary = "Report how a job ended", params(("run" = i64, Path, description = "The pipeline"), ("index" = u64, Path, description = "The job, by its place in the pipeline"), ("agent" = String, Query, description = "The agent's name")), request_body = JobFinish, responses((status = 204, description = "Recorded"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
async fn finish(
    AxState(s): S,
    who: Caller,
    Path((run, index)): Path<(i64, usize)>,
    Query(q): Query<AgentQuery>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    let f: JobFinish = body(&bytes)?;
    let (state, outcome) = match f.status.as_str() {
        "success" => (JobState::Success, Outcome::Success),
        "failed" => (JobState::Failed, Outcome::Failed { exit_code: f.exit_code }),
        "canceled" => (JobState::Canceled, Outcome::Canceled),
        other => {
            return Err(ServerError::Input(
                format!("`{other}` is not a job status: success, failed or canceled"),
                Some("status".into()),
            ));
        }
    };
    who.check_agent(&q.agent)?;
    let agent = format!("{}@{}", q.agent, who.name);
    let held = s.store.finish_job(run, index, &agent, state, f.exit_code, f.reason.as_deref()).await?;
    if !held {
        // The same end reported again (the first report was recorded, but what followed it
        // failed): taken as done, and the pipeline moved on now.
        let same = s
            .store
            .jobs(run)
            .await?
            .into_iter()
            .any(|j| j.index == index && j.status == state && j.runner.as_deref() == Some(agent.as_str()));
        if !same {
            return Err(ServerError::Conflict(format!("job {index} of pipeline {run} is not held by `{agent}`")));
        }
    }
    if let Some(child) = &f.child {
        s.store.put_job_child(run, index, &child.to_string()).await?;
    }
    compress_log(&s, run, index).await;
    if let Ok(Some(row)) = s.store.run(run).await {
        if let Some(percent) = f.coverage.filter(|c| c.is_finite()) {
            let name =
                s.store.jobs(run).await?.into_iter().find(|j| j.index == index).map(|j| j.name).unwrap_or_default();
            s.store.put_coverage(run, index as i64, &row.project, &name, row.ref_name.as_deref(), percent).await?;
        }
        crate::reports::record_packages(&s, &row, index).await;
    }
    pipelines::drive(&s, run, Event::Finished(index, outcome)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_is_3_1_and_every_operation_says_its_errors() {
        let doc = serde_json::to_value(super::openapi()).expect("serializes");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() >= 30, "{}", paths.len());
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item") {
                assert!(op["summary"].is_string(), "{method} {path} has no summary");
                assert!(
                    op["responses"]["4XX"]["content"]["application/json"].is_object(),
                    "{method} {path}: no 4XX body"
                );
            }
        }
        assert_eq!(doc["components"]["securitySchemes"]["token"]["scheme"], "bearer");
        // Webhooks are verified by their signature, not a token.
        assert_eq!(doc["paths"]["/api/v1/webhooks/{forge}/{project}"]["post"]["security"], serde_json::json!([{}]));
    }
}
