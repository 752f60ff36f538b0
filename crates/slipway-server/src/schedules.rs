//! Pipeline schedules, as GitLab's: a cron expression read in an IANA time zone (croner, with
//! Vixie cron's rules for daylight-saving changes), a ref and variables; each run is a
//! pipeline with `CI_PIPELINE_SOURCE=schedule`. The next run is kept in the store: a server
//! that was down when runs fell due starts one run for them when it is back, not one for
//! each, and two servers on one store start each run once.

use slipway_api::server::ApiErrorBody;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_api::server::{NewSchedule, ScheduleUpdate, ScheduleView};
use slipway_model::time::{now_ms, rfc3339};
use slipway_store::Schedule;

use crate::access::Caller;
use crate::api::body;
use crate::{ServerError, State, pipelines};

type S = AxState<Arc<State>>;

/// A parsed schedule: when, and where that is read.
pub struct When {
    cron: croner::Cron,
    tz: jiff::tz::TimeZone,
}

impl When {
    /// Parses a cron expression and a time zone, each error naming its field.
    pub fn parse(cron: &str, tz: &str) -> Result<When, ServerError> {
        let parsed = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(cron)
            .map_err(|e| {
                ServerError::Input(
                    format!(
                        "`{cron}` is not a cron expression: {e} (five fields: minute hour day-of-month month day-of-week, e.g. `0 3 * * 1-5`)"
                    ),
                    Some("cron".into()),
                )
            })?;
        let zone = jiff::tz::TimeZone::get(tz).map_err(|_| {
            ServerError::Input(
                format!("`{tz}` is not a time zone: use an IANA name such as `UTC` or `Europe/Berlin`"),
                Some("cron_timezone".into()),
            )
        })?;
        Ok(When { cron: parsed, tz: zone })
    }

    /// The first run strictly after `after_ms`, in Unix milliseconds; `None` if it never runs.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let t = jiff::Timestamp::from_millisecond(after_ms).ok()?.to_zoned(self.tz.clone());
        let next = self.cron.find_next_occurrence(&t, false).ok()?;
        Some(next.timestamp().as_millisecond())
    }
}

fn view(s: &Schedule) -> ScheduleView {
    ScheduleView {
        id: s.id,
        project: s.project.clone(),
        description: s.description.clone(),
        cron: s.cron.clone(),
        cron_timezone: s.timezone.clone(),
        ref_name: s.ref_name.clone(),
        variables: s.variables.clone(),
        active: s.active,
        next_run_at: s.active.then(|| rfc3339(s.next_run_at_ms)),
        last_run_at: s.last_run_at_ms.map(rfc3339),
        last_pipeline: s.last_run_id,
    }
}

async fn project(s: &State, name: &str) -> Result<slipway_store::Project, ServerError> {
    s.store.project(name).await?.ok_or_else(|| ServerError::NotFound(format!("project `{name}`")))
}

async fn schedule_of(s: &State, name: &str, id: i64) -> Result<Schedule, ServerError> {
    match s.store.schedule(id).await? {
        Some(sc) if sc.project == name => Ok(sc),
        _ => Err(ServerError::NotFound(format!("schedule {id} of project `{name}`"))),
    }
}

/// `POST /api/v1/projects/{name}/schedules`.
#[utoipa::path(post, path = "/api/v1/projects/{name}/schedules", tag = "schedules", summary = "Add a pipeline schedule", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)")), request_body = NewSchedule, responses((status = 201, body = ScheduleView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn add(AxState(s): S, _who: Caller, Path(name): Path<String>, bytes: Bytes) -> Result<Response, ServerError> {
    let p = project(&s, &name).await?;
    let n: NewSchedule = body(&bytes)?;
    let tz = n.cron_timezone.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "UTC".into());
    let when = When::parse(&n.cron, &tz)?;
    crate::api::check_variables(&n.variables)?;
    let Some(next) = when.next_after(now_ms()) else {
        return Err(ServerError::Input(format!("`{}` never runs", n.cron), Some("cron".into())));
    };
    let sc = Schedule {
        id: 0,
        project: p.name.clone(),
        description: n.description,
        cron: n.cron.trim().to_string(),
        timezone: tz,
        ref_name: n.ref_name.filter(|r| !r.is_empty()).unwrap_or(p.branch),
        variables: n.variables,
        active: n.active.unwrap_or(true),
        next_run_at_ms: next,
        last_run_at_ms: None,
        last_run_id: None,
        created_at_ms: now_ms(),
    };
    let id = s.store.add_schedule(&sc).await?;
    Ok((StatusCode::CREATED, axum::Json(view(&Schedule { id, ..sc }))).into_response())
}

/// `GET /api/v1/projects/{name}/schedules`.
#[utoipa::path(get, path = "/api/v1/projects/{name}/schedules", tag = "schedules", summary = "A project's schedules", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)")), responses((status = 200, body = [ScheduleView]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn list(AxState(s): S, _who: Caller, Path(name): Path<String>) -> Result<Response, ServerError> {
    project(&s, &name).await?;
    let list: Vec<ScheduleView> = s.store.schedules(&name).await?.iter().map(view).collect();
    Ok(axum::Json(list).into_response())
}

/// `PUT /api/v1/projects/{name}/schedules/{id}` `{active}`: turned back on, it next runs at
/// its next time from now (runs missed while it was off are not made up).
#[utoipa::path(put, path = "/api/v1/projects/{name}/schedules/{id}", tag = "schedules", summary = "Turn a schedule on or off", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("id" = i64, Path, description = "The schedule")), request_body = ScheduleUpdate, responses((status = 200, body = ScheduleView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn update(
    AxState(s): S,
    _who: Caller,
    Path((name, id)): Path<(String, i64)>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    let sc = schedule_of(&s, &name, id).await?;
    let u: ScheduleUpdate = body(&bytes)?;
    let next = When::parse(&sc.cron, &sc.timezone)?.next_after(now_ms()).unwrap_or(i64::MAX);
    s.store.set_schedule_active(id, u.active, next).await?;
    Ok(axum::Json(view(&schedule_of(&s, &name, id).await?)).into_response())
}

/// `DELETE /api/v1/projects/{name}/schedules/{id}`.
#[utoipa::path(delete, path = "/api/v1/projects/{name}/schedules/{id}", tag = "schedules", summary = "Remove a schedule", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("id" = i64, Path, description = "The schedule")), responses((status = 204, description = "Removed"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn delete(
    AxState(s): S,
    _who: Caller,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Response, ServerError> {
    schedule_of(&s, &name, id).await?;
    s.store.delete_schedule(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/projects/{name}/schedules/{id}/play`: a run now, as GitLab's "play"; the
/// schedule's next run stays when it was.
#[utoipa::path(post, path = "/api/v1/projects/{name}/schedules/{id}/play", tag = "schedules", summary = "Run a schedule now", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("id" = i64, Path, description = "The schedule")), responses((status = 201, description = "`{pipeline}`"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn play(AxState(s): S, _who: Caller, Path((name, id)): Path<(String, i64)>) -> Result<Response, ServerError> {
    let sc = schedule_of(&s, &name, id).await?;
    let run = start(&s, &sc).await?;
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({"pipeline": run}))).into_response())
}

async fn start(s: &Arc<State>, sc: &Schedule) -> Result<i64, ServerError> {
    let p = project(s, &sc.project).await?;
    let by = format!("schedule {}", sc.id);
    let run = pipelines::create(s, &p, Some(&sc.ref_name), None, "schedule", sc.variables.clone(), &by).await?;
    s.store.set_schedule_run(sc.id, run).await?;
    Ok(run)
}

/// Starts the runs that fell due: one per schedule however many were missed, each taken by
/// one server only.
pub async fn tick(s: &Arc<State>) {
    let now = now_ms();
    let due = match s.store.due_schedules(now).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the schedules");
            return;
        }
    };
    for sc in due {
        let next = match When::parse(&sc.cron, &sc.timezone) {
            Ok(w) => w.next_after(now).unwrap_or(i64::MAX),
            Err(e) => {
                tracing::error!(schedule = sc.id, error = %e, "a stored schedule no longer parses; turned off");
                let _ = s.store.set_schedule_active(sc.id, false, i64::MAX).await;
                continue;
            }
        };
        match s.store.take_schedule(sc.id, sc.next_run_at_ms, next).await {
            Ok(true) => {
                if let Err(e) = start(s, &sc).await {
                    tracing::warn!(schedule = sc.id, project = %sc.project, error = %e, "cannot start the scheduled pipeline");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(schedule = sc.id, error = %e, "cannot take the schedule's run"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::When;

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn runs_follow_the_zone_and_its_daylight_saving_changes() {
        let w = When::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // 02:30 in Berlin, winter (UTC+1).
        assert_eq!(w.next_after(at("2026-01-10T00:00:00Z")), Some(at("2026-01-10T01:30:00Z")));
        // On 2026-03-29 02:30 does not exist there: the run is right after the gap (03:00 CEST).
        assert_eq!(w.next_after(at("2026-03-28T12:00:00Z")), Some(at("2026-03-29T01:00:00Z")));
        // Weekdays as cron counts them: 1-5 is Monday to Friday (2026-12-05 is a Saturday).
        let weekdays = When::parse("0 9 * * 1-5", "UTC").unwrap();
        assert_eq!(weekdays.next_after(at("2026-12-05T10:00:00Z")), Some(at("2026-12-07T09:00:00Z")));
        // A sixth, leading field is seconds.
        let secs = When::parse("*/5 * * * * *", "UTC").unwrap();
        assert_eq!(secs.next_after(at("2026-12-05T10:00:01Z")), Some(at("2026-12-05T10:00:05Z")));
    }

    #[test]
    fn bad_expressions_and_zones_name_their_field() {
        let e = When::parse("61 * * * *", "UTC").err().unwrap();
        assert!(matches!(&e, crate::ServerError::Input(m, Some(f)) if f == "cron" && m.contains("61 * * * *")), "{e}");
        let e = When::parse("0 3 * * *", "Mars/Olympus").err().unwrap();
        assert!(
            matches!(&e, crate::ServerError::Input(m, Some(f)) if f == "cron_timezone" && m.contains("IANA")),
            "{e}"
        );
    }
}
