//! The notification side of the API: silences (Alertmanager's v2 shapes), the delivery log,
//! and the Alertmanager webhook that rolls back the releases its alerts name — for teams whose
//! alerts live in Prometheus.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use slipway_api::server::ApiErrorBody;
use slipway_model::access::Permission;
use slipway_model::time::{now_ms, rfc3339};
use slipway_monitor::notify::{MatchOp, Matcher, Silence};
use slipway_monitor::series::Labels;

use crate::access::Caller;
use crate::api::body;
use crate::{ServerError, State};

type S = AxState<Arc<State>>;

/// One matcher as Alertmanager's v2 API writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatcherView {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/v1/silences`: Alertmanager's `postableSilence`; `endsAt` or `duration`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSilence {
    pub matchers: Vec<MatcherView>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub ends_at: Option<String>,
    /// `2h`, `30m` (instead of `endsAt`).
    #[serde(default)]
    pub duration: Option<String>,
    pub comment: String,
    /// Ignored: the caller is who made it.
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

/// A silence, as Alertmanager's `gettableSilence`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SilenceView {
    pub id: String,
    /// `{state: active | pending | expired}`.
    pub status: serde_json::Value,
    pub matchers: Vec<MatcherView>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
}

fn matcher_view(m: &Matcher) -> MatcherView {
    MatcherView {
        name: m.name.clone(),
        value: m.value.clone(),
        is_regex: matches!(m.op, MatchOp::Re | MatchOp::Nre),
        is_equal: matches!(m.op, MatchOp::Eq | MatchOp::Re),
    }
}

pub(crate) fn silence_view(x: &Silence, now: i64) -> SilenceView {
    let state = if x.ends_at_ms <= now {
        "expired"
    } else if x.starts_at_ms > now {
        "pending"
    } else {
        "active"
    };
    SilenceView {
        id: x.id.clone(),
        status: serde_json::json!({"state": state}),
        matchers: x.matchers.iter().map(matcher_view).collect(),
        starts_at: rfc3339(x.starts_at_ms),
        ends_at: rfc3339(x.ends_at_ms),
        created_by: x.created_by.clone(),
        comment: x.comment.clone(),
    }
}

/// The project a silence is about: its `project="NAME"` matcher.
pub(crate) fn project_of(x: &[Matcher]) -> Option<&str> {
    x.iter().find(|m| m.name == "project" && m.op == MatchOp::Eq).map(|m| m.value.as_str())
}

fn parse_time(s: &str, field: &str) -> Result<i64, ServerError> {
    s.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).map_err(|_| {
        ServerError::Input(format!("`{s}` is not an RFC 3339 time (as 2026-12-01T10:00:00Z)"), Some(field.into()))
    })
}

pub(crate) async fn add(
    s: &State,
    who: &Caller,
    n: NewSilence,
    project: Option<&str>,
) -> Result<Response, ServerError> {
    let mut matchers = Vec::new();
    for (i, m) in n.matchers.iter().enumerate() {
        let op = match (m.is_regex, m.is_equal) {
            (false, true) => MatchOp::Eq,
            (false, false) => MatchOp::Ne,
            (true, true) => MatchOp::Re,
            (true, false) => MatchOp::Nre,
        };
        let m = Matcher::new(&m.name, op, &m.value)
            .map_err(|why| ServerError::Input(why, Some(format!("matchers[{i}]"))))?;
        matchers.push(m);
    }
    if let Some(p) = project {
        matchers.retain(|m| m.name != "project");
        matchers.push(Matcher::new("project", MatchOp::Eq, p).expect("a valid matcher"));
    }
    if matchers.is_empty() || matchers.iter().all(|m| m.matches(&Labels::new())) {
        return Err(ServerError::Input(
            "a silence needs a matcher that some label must satisfy (as `alertname=\"InstanceDown\"`): one matching every alert would mute them all".into(),
            Some("matchers".into()),
        ));
    }
    if n.comment.trim().is_empty() {
        return Err(ServerError::Input("say why in `comment`".into(), Some("comment".into())));
    }
    let now = now_ms();
    let starts = n.starts_at.as_deref().map(|t| parse_time(t, "startsAt")).transpose()?.unwrap_or(now).max(now);
    let ends = match (&n.ends_at, &n.duration) {
        (Some(e), None) => parse_time(e, "endsAt")?,
        (None, Some(d)) => {
            starts
                + slipway_monitor::unittest::duration_ms(d)
                    .map_err(|e| ServerError::Input(format!("`{d}` is not a duration: {e}"), Some("duration".into())))?
        }
        _ => {
            return Err(ServerError::Input(
                "give the silence an end: `endsAt` (RFC 3339) or `duration` (as `2h`), one of them".into(),
                Some("endsAt".into()),
            ));
        }
    };
    if ends <= starts {
        return Err(ServerError::Input("the silence ends before it starts".into(), Some("endsAt".into())));
    }
    // Who may silence: whoever may roll the project's environments back (on-call), on the
    // silence's project, or everywhere.
    let need = Permission::need("rollback", "environments");
    let on = project_of(&matchers).map(str::to_string);
    if !who.may(&s.access(), &need, on.as_deref()) {
        return Err(ServerError::Forbidden(format!(
            "`{}` lacks `rollback:environments` on {}",
            who.name,
            on.map_or("every project (a silence without `project=\"NAME\"`)".to_string(), |p| format!("project {p}"))
        )));
    }
    let id =
        slipway_sys::whoami::random_hex(8).map_err(|source| ServerError::Io { what: "/dev/urandom".into(), source })?;
    let silence = Silence {
        id: id.clone(),
        matchers,
        starts_at_ms: starts,
        ends_at_ms: ends,
        created_by: who.actor(),
        comment: n.comment.trim().to_string(),
    };
    s.store
        .add_silence(&slipway_store::SilenceRow {
            id: id.clone(),
            matchers: serde_json::to_string(&silence.matchers).expect("matchers serialize"),
            starts_at_ms: starts,
            ends_at_ms: ends,
            created_by: silence.created_by.clone(),
            comment: silence.comment.clone(),
            created_at_ms: now,
        })
        .await?;
    crate::notify::reload_silences(s).await?;
    Ok((StatusCode::CREATED, axum::Json(silence_view(&silence, now))).into_response())
}

/// `POST /api/v1/silences`.
#[utoipa::path(post, path = "/api/v1/silences", tag = "monitoring", summary = "Silence alerts (Alertmanager's silence shape)", request_body = NewSilence, responses((status = 201, body = SilenceView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn add_silence(AxState(s): S, who: Caller, bytes: Bytes) -> Result<Response, ServerError> {
    add(&s, &who, body(&bytes)?, None).await
}

/// `POST /api/v1/projects/{name}/silences`: a silence of that project's alerts.
#[utoipa::path(post, path = "/api/v1/projects/{name}/silences", tag = "monitoring", summary = "Silence a project's alerts", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)")), request_body = NewSilence, responses((status = 201, body = SilenceView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn add_project_silence(
    AxState(s): S,
    who: Caller,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    s.store.project(&name).await?.ok_or_else(|| ServerError::NotFound(format!("project `{name}`")))?;
    add(&s, &who, body(&bytes)?, Some(&name)).await
}

#[derive(Deserialize, Default)]
pub struct SilenceQuery {
    #[serde(default)]
    expired: bool,
}

pub(crate) fn readable(s: &State, who: &Caller, project: Option<&str>) -> bool {
    who.may(&s.access(), &Permission::need("read", "environments"), project)
}

/// `GET /api/v1/silences[?expired=true]`: the silences the caller may read (those of its
/// projects; silences of no project need that right everywhere).
#[utoipa::path(get, path = "/api/v1/silences", tag = "monitoring", summary = "Silences", params(("expired" = Option<bool>, Query, description = "Also the ones that ended in the last day")), responses((status = 200, body = [SilenceView]), (status = 503, description = "The store does not answer", body = ApiErrorBody), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody)))]
pub async fn silences(AxState(s): S, who: Caller, Query(q): Query<SilenceQuery>) -> Result<Response, ServerError> {
    let now = now_ms();
    let since = if q.expired { now - 86_400_000 } else { now };
    let rows = s.store.silences(since).await?;
    let list: Vec<SilenceView> = rows
        .iter()
        .filter_map(crate::notify::silence_of)
        .filter(|x| readable(&s, &who, project_of(&x.matchers)))
        .map(|x| silence_view(&x, now))
        .collect();
    Ok(axum::Json(list).into_response())
}

/// `DELETE /api/v1/silences/{id}`: ends it now.
#[utoipa::path(delete, path = "/api/v1/silences/{id}", tag = "monitoring", summary = "End a silence", params(("id" = String, Path, description = "The silence")), responses((status = 204, description = "Ended"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn expire_silence(AxState(s): S, who: Caller, Path(id): Path<String>) -> Result<Response, ServerError> {
    let now = now_ms();
    let found = s.store.silences(now).await?.iter().filter_map(crate::notify::silence_of).find(|x| x.id == id);
    let missing = || ServerError::NotFound(format!("silence `{id}` (or it has ended)"));
    let Some(x) = found else { return Err(missing()) };
    let project = project_of(&x.matchers);
    if !readable(&s, &who, project) {
        return Err(missing());
    }
    if !who.may(&s.access(), &Permission::need("rollback", "environments"), project) {
        return Err(ServerError::Forbidden(format!(
            "`{}` lacks `rollback:environments` on {}",
            who.name,
            project.map_or("every project".to_string(), |p| format!("project {p}"))
        )));
    }
    if !s.store.expire_silence(&id, now).await? {
        return Err(missing());
    }
    crate::notify::reload_silences(&s).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A delivery as the log shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub receiver: String,
    pub channel: String,
    pub group_key: String,
    pub project: Option<String>,
    /// `queued` (waiting or retrying), `delivered` or `failed` (gave up).
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub next_attempt_at: Option<String>,
    /// `firing` or `resolved`, and the alerts' names.
    pub state: String,
    pub alerts: Vec<String>,
}

/// What a queued delivery tells: `firing` or `resolved` and its alerts' names (`forwarded`
/// for the alerts posted to an Alertmanager).
pub(crate) fn summary(payload: &str) -> (String, Vec<String>) {
    let names = |list: &[slipway_monitor::notify::Notice]| {
        list.iter().filter_map(|a| a.labels.get("alertname").cloned()).collect::<Vec<_>>()
    };
    if let Ok(n) = serde_json::from_str::<slipway_monitor::notify::Notification>(payload) {
        return (n.status().to_string(), names(&n.alerts));
    }
    match serde_json::from_str::<Vec<slipway_monitor::notify::Notice>>(payload) {
        Ok(list) => ("forwarded".into(), names(&list)),
        Err(_) => (String::new(), Vec::new()),
    }
}

#[derive(Deserialize, Default)]
pub struct DeliveryQuery {
    limit: Option<i64>,
}

/// `GET /api/v1/notifications[?limit=N]`: the newest deliveries first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "monitoring", summary = "The delivery log of notifications", params(("limit" = Option<i64>, Query, description = "At most this many (default 100)")), responses((status = 200, body = [DeliveryView]), (status = 503, description = "The store does not answer", body = ApiErrorBody), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody)))]
pub async fn deliveries(AxState(s): S, who: Caller, Query(q): Query<DeliveryQuery>) -> Result<Response, ServerError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = s.store.deliveries(limit * 4).await?;
    let mut out = Vec::new();
    for d in rows.iter().filter(|d| readable(&s, &who, d.project.as_deref())).take(limit as usize) {
        let (state, alerts) = summary(&d.payload);
        out.push(DeliveryView {
            id: d.id,
            receiver: d.receiver.clone(),
            channel: d.channel.clone(),
            group_key: d.group_key.clone(),
            project: d.project.clone(),
            status: d.status.clone(),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            created_at: rfc3339(d.created_at_ms),
            delivered_at: d.delivered_at_ms.map(rfc3339),
            next_attempt_at: (d.status == "queued").then(|| rfc3339(d.next_attempt_at_ms)),
            state,
            alerts,
        });
    }
    Ok(axum::Json(out).into_response())
}

// ----- Alertmanager in, rollback out ---------------------------------------------------------

#[derive(Debug, Deserialize)]
struct AmPayload {
    version: Option<String>,
    #[serde(default)]
    alerts: Vec<AmAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    status: String,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    starts_at: Option<String>,
}

/// What the webhook did with one alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HookOutcome {
    pub alert: String,
    pub environment: Option<String>,
    /// `rolling_back`, `skipped` or `refused`.
    pub outcome: String,
    pub detail: String,
}

/// `POST /api/v1/hooks/alertmanager`: Alertmanager's webhook (`version: 4`); each firing
/// alert with an `environment` label rolls that environment back to its release before,
/// unless it no longer runs the alert's `version` or was already rolled back since the alert
/// started. Needs `rollback:environments/<env>` on the environment's project.
#[utoipa::path(post, path = "/api/v1/hooks/alertmanager", tag = "monitoring", summary = "Roll back the releases an Alertmanager's alerts name", request_body(content = String, content_type = "application/json", description = "Alertmanager's webhook payload"), responses((status = 202, body = [HookOutcome]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn alertmanager_hook(AxState(s): S, who: Caller, bytes: Bytes) -> Result<Response, ServerError> {
    let p: AmPayload = body(&bytes)?;
    if p.version.as_deref() != Some("4") {
        return Err(ServerError::Input(
            "not an Alertmanager webhook payload (`version: \"4\"` expected)".into(),
            Some("version".into()),
        ));
    }
    let mut out = Vec::new();
    for a in p.alerts.iter().filter(|a| a.status == "firing") {
        let name = a.labels.get("alertname").cloned().unwrap_or_default();
        // slipway's own events (forwarded to Alertmanager) say what happened; they are not
        // symptoms to roll back for.
        if let Some(kind) = a.labels.get("event") {
            out.push(HookOutcome {
                alert: name,
                environment: a.labels.get("environment").cloned(),
                outcome: "skipped".into(),
                detail: format!("a slipway {kind} event, not a symptom"),
            });
            continue;
        }
        let Some(env) = a.labels.get("environment").cloned() else {
            out.push(HookOutcome {
                alert: name,
                environment: None,
                outcome: "skipped".into(),
                detail: "the alert has no `environment` label".into(),
            });
            continue;
        };
        let started =
            a.starts_at.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(|t| t.as_millisecond());
        let o = crate::watch::rollback_for_alert(
            &s,
            &who,
            &env,
            a.labels.get("project").map(String::as_str),
            a.labels.get("version").map(String::as_str),
            started,
            &format!("alert `{name}` from Alertmanager"),
        )
        .await;
        let (outcome, detail) = match o {
            Ok(d) => ("rolling_back", d),
            Err(crate::watch::Skip::Not(d)) => ("skipped", d),
            Err(crate::watch::Skip::Refused(d)) => ("refused", d),
        };
        out.push(HookOutcome { alert: name, environment: Some(env), outcome: outcome.into(), detail });
    }
    Ok((StatusCode::ACCEPTED, axum::Json(out)).into_response())
}
