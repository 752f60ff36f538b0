//! The agent's HTTP API on its Unix socket (JSON; wire types from `slipway-api`). Handlers
//! only hand requests to the supervisors and return their answers.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use slipway_api::{AgentInfo, EnvSpec, ErrorBody};

use crate::{ApplyError, Shared, files};

type S = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/v1/agent", get(info))
        .route("/v1/envs", get(envs))
        .route("/v1/envs/{name}", get(env).put(apply).delete(remove))
        .route("/v1/envs/{name}/logs", get(logs))
        .route("/v1/envs/{name}/spec", get(spec))
        .route("/v1/images/{id}", axum::routing::post(load_image))
        .route("/v1/images/{id}/archive", get(files::has_archive).put(files::put_archive))
        .route("/v1/artifacts/{sha256}", get(files::has_artifact).put(files::put_artifact))
        // Artifacts are streamed to disk as they arrive, never held whole: no body limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .route("/metrics", get(metrics))
        .with_state(shared)
}

pub fn metrics_router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().route("/metrics", get(metrics)).with_state(shared)
}

/// An environment's name from the path, checked: a name the grammar refuses (`../x`, a
/// newline) is a 400 before any handler sees it, so no file is ever made outside the data
/// directory for it.
struct EnvName(String);

impl<St: Send + Sync> axum::extract::FromRequestParts<St> for EnvName {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &St) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string(), None))?;
        slipway_model::names::check_environment(&name).map_err(|why| error(StatusCode::BAD_REQUEST, why, None))?;
        Ok(EnvName(name))
    }
}

pub(crate) fn error(status: StatusCode, error: String, hint: Option<String>) -> Response {
    (status, Json(ErrorBody { error, hint })).into_response()
}

async fn info(State(s): S) -> Json<AgentInfo> {
    Json(AgentInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        started_at_ms: s.started_at_ms,
        platform: Some(slipway_model::manifest::host_platform()),
        data_dir: Some(s.data_dir.display().to_string()),
    })
}

async fn envs(State(s): S) -> Response {
    Json(s.all().await).into_response()
}

async fn env(State(s): S, EnvName(name): EnvName) -> Response {
    match s.status(&name).await {
        Some(st) => Json(st).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("the agent runs nothing for `{name}`"), None),
    }
}

async fn apply(State(s): S, EnvName(name): EnvName, body: axum::body::Bytes) -> Response {
    let spec: EnvSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid environment spec: {e}"), None),
    };
    if let Some(why) = spec.groups.iter().find_map(|g| slipway_model::names::check_version(&g.version).err()) {
        return error(StatusCode::BAD_REQUEST, format!("invalid environment spec: {why}"), None);
    }
    match s.apply(&name, spec).await {
        Ok(st) => Json(st).into_response(),
        Err(ApplyError::Listen { addr, source }) if source.kind() == std::io::ErrorKind::AddrInUse => error(
            StatusCode::CONFLICT,
            format!("address {addr} is already in use"),
            Some(format!(
                "another process listens there (see `ss -ltnp 'sport = :{}'`): stop it or choose another `listen`",
                addr.rsplit(':').next().unwrap_or("")
            )),
        ),
        Err(e @ ApplyError::Listen { .. }) => error(StatusCode::CONFLICT, e.to_string(), None),
        Err(e @ ApplyError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string(), None),
    }
}

/// What the agent was asked to run for an environment, secret values left out.
async fn spec(State(s): S, EnvName(name): EnvName) -> Response {
    match s.spec(&name) {
        Some(spec) => Json(spec).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("the agent runs nothing for `{name}`"), None),
    }
}

async fn remove(State(s): S, EnvName(name): EnvName) -> Response {
    if s.remove(&name, true).await {
        Json(serde_json::json!({"removed": name})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("the agent runs nothing for `{name}`"), None)
    }
}

async fn load_image(State(s): S, Path(id): Path<String>) -> Response {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(StatusCode::BAD_REQUEST, format!("`{id}` is not an image ID (64 hex digits)"), None);
    }
    let archive = s.data_dir.join("artifacts/images").join(format!("{id}.tar"));
    match crate::docker::ensure_image(&id, &archive).await {
        Ok(loaded) => Json(serde_json::json!({"loaded": loaded})).into_response(),
        Err(_) if !archive.is_file() => error(
            StatusCode::CONFLICT,
            format!("image sha256:{id} is not loaded and its archive {} is gone", archive.display()),
            Some("deploy from the image archive again (`--artifacts dist/image.tar`)".into()),
        ),
        Err(e) => error(StatusCode::BAD_GATEWAY, e, Some("is dockerd running on the agent's machine?".into())),
    }
}

#[derive(serde::Deserialize)]
struct LogQuery {
    lines: Option<usize>,
}

async fn logs(State(s): S, EnvName(name): EnvName, Query(q): Query<LogQuery>) -> Response {
    s.log_tail(&name, q.lines.unwrap_or(100)).into_response()
}

async fn metrics(State(s): S) -> Response {
    let text = crate::metrics::render(&s.all().await);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
