//! Closing the loop: after a rollout an environment is watched for a while (`watch:`, 10
//! minutes by default) and an alert tied to it — one labelled `environment: <name>` that
//! became active after the release started — rolls the release back, recorded in its history
//! as `alert-rollback` with the alert's name. Alertmanager's webhook (`/api/v1/hooks/
//! alertmanager`) reaches the same rollback for alerts that live in Prometheus.

use std::sync::Arc;

use slipway_model::access::Permission;
use slipway_model::release::{Actor, ActorKind, ReleaseStatus};
use slipway_model::time::now_ms;
use slipway_monitor::rules::Alert;

use crate::State;
use crate::access::Caller;

/// Why an alert rolled nothing back.
pub enum Skip {
    /// Nothing to do (or nothing the caller may know of).
    Not(String),
    /// The caller may not roll that environment back.
    Refused(String),
}

/// Rolls `env` back to the release before the current one because of `why`, as `who` (an
/// Alertmanager's token) or, without one, as slipway itself. Refused when the environment no
/// longer runs `version`, or was rolled back since the alert started (`started_ms`).
pub(crate) async fn rollback_for_alert(
    s: &Arc<State>,
    who: &Caller,
    env: &str,
    project: Option<&str>,
    version: Option<&str>,
    started_ms: Option<i64>,
    why: &str,
) -> Result<String, Skip> {
    rollback(s, Some(who), env, project, version, started_ms, why).await
}

async fn rollback(
    s: &Arc<State>,
    who: Option<&Caller>,
    env: &str,
    project: Option<&str>,
    version: Option<&str>,
    started_ms: Option<i64>,
    why: &str,
) -> Result<String, Skip> {
    let unknown = || Skip::Not(format!("no environment `{env}` is deployed by this server"));
    let project = match project {
        Some(p) => p.to_string(),
        None => crate::monitor::project_of(s, env).await.ok_or_else(unknown)?,
    };
    if let Some(who) = who {
        let access = s.access();
        if !who.may(&access, &Permission::need("read", "environments"), Some(&project)) {
            return Err(unknown());
        }
        let need = Permission::need("rollback", &format!("environments/{env}"));
        if !who.may(&access, &need, Some(&project)) {
            return Err(Skip::Refused(format!("`{}` lacks `{need}` on project {project}", who.name)));
        }
    }
    let current = match s.store.current(env).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(Skip::Not(format!("`{env}` has never been deployed"))),
        Err(e) => return Err(Skip::Not(format!("the store does not answer: {e}"))),
    };
    if let Some(v) = version.filter(|v| *v != current.version) {
        return Err(Skip::Not(format!("`{env}` runs {} now, not {v}", current.version)));
    }
    if current.reason.is_rollback() && started_ms.is_none_or(|t| current.created_at_ms >= t) {
        return Err(Skip::Not(format!(
            "`{env}` was already rolled back (release #{}, {}) since the alert started",
            current.id, current.reason
        )));
    }
    if !s.monitor.rolling.lock().expect("rolling lock").insert(env.to_string()) {
        return Err(Skip::Not(format!("a rollback of `{env}` is under way")));
    }
    let actor = match who {
        Some(w) => Actor::user(w.actor()),
        None => Actor { name: "slipway (post-deploy watch)".into(), kind: ActorKind::System, pipeline: None },
    };
    let detail = format!("rolled back from {} (release #{}): {why}", current.version, current.id);
    let s2 = Arc::clone(s);
    let (env2, project2, detail2) = (env.to_string(), project.clone(), detail.clone());
    tokio::spawn(async move {
        match crate::deploys::alert_rollback(&s2, &project2, &env2, &actor, &detail2).await {
            Ok(()) => tracing::warn!(environment = %env2, "{detail2}"),
            Err(e) => tracing::error!(environment = %env2, error = %e, "the alert's rollback failed"),
        }
        s2.monitor.rolling.lock().expect("rolling lock").remove(&env2);
    });
    Ok(detail)
}

/// After an evaluation: firing alerts tied to an environment in its watch window roll its
/// release back.
pub(crate) async fn check(s: &Arc<State>, firing: Vec<Alert>) {
    let now = now_ms();
    for a in firing {
        let Some(env) = a.labels.get("environment") else { continue };
        let Some((project, watch)) = s.monitor.watch_of(env) else { continue };
        if !watch.rollback || watch.window.is_zero() {
            continue;
        }
        let name = a.labels.get("alertname").cloned().unwrap_or_default();
        if !watch.alerts.is_empty() && !watch.alerts.contains(&name) {
            continue;
        }
        let Ok(Some(current)) = s.store.current(env).await else { continue };
        let Some(finished) = current.finished_at_ms else { continue };
        let started = current.started_at_ms.unwrap_or(current.created_at_ms);
        if current.status != ReleaseStatus::Healthy
            || current.reason.is_rollback()
            || now - finished > watch.window.as_millis() as i64
            || a.active_at_ms < started
        {
            continue;
        }
        let why = format!(
            "alert `{name}` fired {} after the rollout (post-deploy watch of {})",
            slipway_deploy::plan::fmt_duration(std::time::Duration::from_millis((now - finished).max(0) as u64)),
            slipway_deploy::plan::fmt_duration(watch.window)
        );
        match rollback(s, None, env, Some(&project), a.labels.get("version").map(String::as_str), Some(started), &why)
            .await
        {
            Ok(d) => tracing::warn!(environment = %env, "{d}"),
            Err(Skip::Not(d) | Skip::Refused(d)) => tracing::debug!(environment = %env, "no rollback: {d}"),
        }
    }
}

/// After an evaluation: a canary environment in its watch window whose current release answers
/// more errors than its canary analysis allows (`max_error_rate`, over at least
/// `min_requests`) is rolled back too — the analysis' own thresholds, held after the rollout.
pub(crate) async fn check_canary_thresholds(s: &Arc<State>) {
    use slipway_model::environment::Strategy;
    let now = now_ms();
    let envs: Vec<(String, String, slipway_model::environment::Environment)> = s
        .monitor
        .environments()
        .into_iter()
        .filter(|(_, _, e)| {
            matches!(e.strategy, Strategy::Canary { .. }) && e.watch.rollback && !e.watch.window.is_zero()
        })
        .collect();
    for (name, project, env) in envs {
        let Strategy::Canary { analysis, .. } = &env.strategy else { continue };
        let Ok(Some(current)) = s.store.current(&name).await else { continue };
        let Some(finished) = current.finished_at_ms else { continue };
        if current.status != ReleaseStatus::Healthy
            || current.reason.is_rollback()
            || now - finished > env.watch.window.as_millis() as i64
        {
            continue;
        }
        // A window the collection fills with at least a few samples.
        let window = analysis.interval.max(s.monitor.interval * 4);
        let secs = window.as_secs().max(1);
        let sel = format!("{{environment=\"{name}\", release=\"{}\"}}", current.group_id());
        let value = |metric: &str| -> Option<f64> {
            let q = slipway_monitor::promql::Query::parse(&format!("sum(increase({metric}{sel}[{secs}s]))")).ok()?;
            let store = s.monitor.series.lock().expect("series lock");
            match q.eval(&store, now).ok()? {
                slipway_monitor::promql::Value::Vector(v) => v.first().map(|x| x.value),
                _ => None,
            }
        };
        let (Some(requests), Some(errors)) =
            (value("slipway_proxy_requests_total"), value("slipway_proxy_errors_total"))
        else {
            continue;
        };
        // Only the part of the window after the rollout counts.
        if requests < analysis.min_requests as f64 || now - finished < window.as_millis() as i64 / 2 {
            continue;
        }
        let rate = errors / requests;
        if rate <= analysis.max_error_rate {
            continue;
        }
        let why = format!(
            "{:.1}% of {} requests failed in the last {} after the rollout, above the canary analysis' max_error_rate {:.1}% (post-deploy watch)",
            rate * 100.0,
            requests.round(),
            slipway_deploy::plan::fmt_duration(window),
            analysis.max_error_rate * 100.0
        );
        let started = current.started_at_ms.unwrap_or(current.created_at_ms);
        match rollback(s, None, &name, Some(&project), Some(&current.version), Some(started), &why).await {
            Ok(d) => tracing::warn!(environment = %name, "{d}"),
            Err(Skip::Not(d) | Skip::Refused(d)) => tracing::debug!(environment = %name, "no rollback: {d}"),
        }
    }
}
