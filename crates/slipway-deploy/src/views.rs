//! The JSON shapes of environments and releases, the same from `slipway status --json`,
//! `slipway history --json` and the server's API (docs/events.md).

use slipway_model::release::Release;
use slipway_model::time::rfc3339;

use crate::observe::EnvState;

pub fn state_json(s: &EnvState) -> serde_json::Value {
    let mut v = serde_json::json!({
        "environment": s.environment,
        "version": s.version,
        "release": s.release,
        "status": s.status.as_str(),
        "healthy": s.healthy,
        "total": s.total,
        "url": s.url,
        "updated_at": s.updated_at_ms.map(rfc3339),
        "detail": s.detail,
        "drift": s.drift,
        "units": s.units,
    });
    if s.hosts {
        v["hosts"] = s
            .units
            .iter()
            .map(|u| {
                serde_json::json!({"host": u.name, "release": u.version, "sha256": u.digest, "active": u.state, "matches": u.matches, "error": u.error})
            })
            .collect();
    }
    v
}

pub fn release_json(r: &Release) -> serde_json::Value {
    serde_json::json!({
        "release": r.id,
        "environment": r.environment,
        "version": r.version,
        "reason": r.reason,
        "status": r.status,
        "detail": r.status_detail,
        "artifacts": r.artifacts,
        "config_hash": r.config_hash,
        "commit": r.commit,
        "branch": r.branch,
        "actor": r.actor,
        "source_release": r.source_release,
        "pipeline": r.pipeline,
        "created_at": rfc3339(r.created_at_ms),
        "started_at": r.started_at_ms.map(rfc3339),
        "finished_at": r.finished_at_ms.map(rfc3339),
        "duration_seconds": r.duration_ms().map(|d| d as f64 / 1000.0),
    })
}
