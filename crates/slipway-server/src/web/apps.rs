//! The dashboard's GitOps page: every application the user may read with its sync and health
//! status, the reason, the desired file's errors, the diff and drift, its last syncs, and a
//! **Sync** button for those who may deploy its environment (the API's own handler).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State as AxState};
use axum::response::Response;

use super::i18n::Lang;
use super::{Chrome, Form, after, may, page};
use crate::State;
use crate::access::Caller;
use crate::gitops::AppStatus;

type S = AxState<Arc<State>>;

struct SyncRow {
    at_utc: String,
    at: String,
    commit: String,
    version: String,
    trigger: String,
    outcome: String,
    detail: String,
}

struct AppRow {
    name: String,
    project: String,
    environment: String,
    source: String,
    automated: bool,
    st: AppStatus,
    commit: String,
    may_sync: bool,
    syncs: Vec<SyncRow>,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    apps: Vec<AppRow>,
}

/// `GET /ui/apps`.
pub async fn apps(AxState(s): S, who: Caller, c: Chrome) -> Response {
    let mut rows = Vec::new();
    for a in s.store.apps().await.unwrap_or_default() {
        if !may(&s, &who, "read", &format!("environments/{}", a.environment), &a.project) {
            continue;
        }
        let st = crate::gitops::status_of(&a);
        let syncs = s
            .store
            .app_syncs(&a.name, 5)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|x| SyncRow {
                at_utc: slipway_model::time::rfc3339(x.started_at_ms),
                at: super::short_time(x.started_at_ms),
                commit: x.commit.chars().take(12).collect(),
                version: x.version,
                trigger: x.trigger,
                outcome: x.outcome,
                detail: x.detail.unwrap_or_default(),
            })
            .collect();
        rows.push(AppRow {
            commit: st.commit.clone().unwrap_or_default().chars().take(12).collect(),
            may_sync: may(&s, &who, "deploy", &format!("environments/{}", a.environment), &a.project),
            source: format!("{} · {} @ {}", a.repo, a.path, a.revision),
            automated: a.automated,
            st,
            name: a.name,
            project: a.project,
            environment: a.environment,
            syncs,
        });
    }
    let t = AppsTpl { t: c.t, c: &c, apps: rows };
    page(t.render(), &c)
}

/// `POST /ui/apps/{name}/sync`: a manual sync through the API's handler.
pub async fn sync(AxState(s): S, who: Caller, c: Chrome, Path(name): Path<String>, _form: Form) -> Response {
    match crate::gitops::sync(AxState(Arc::clone(&s)), who, Path(name.clone())).await {
        Ok(_) => {
            let st = s.store.app(&name).await.ok().flatten().map(|a| crate::gitops::status_of(&a));
            let synced = st.as_ref().is_some_and(|st| st.sync == "Synced");
            let why = st.and_then(|st| st.reason).unwrap_or_default();
            let text = if synced {
                format!("{} {name}", c.t.s("apps.synced"))
            } else {
                format!("{} {name}: {why}", c.t.s("apps.not_synced"))
            };
            after("/ui/apps", &text, !synced)
        }
        Err(e) => after("/ui/apps", &format!("{} {name}: {e}", c.t.s("apps.not_synced")), true),
    }
}
