//! GitOps applications: what each syncs from and to, what the reconciler last found (a JSON
//! status), a rollback's pin, the commit whose sync failed (not tried again), and the syncs.

use crate::row::Columns;
use crate::{Dialect, Store, StoreError, now_ms, with_pool};

/// An application as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    pub name: String,
    pub project: String,
    pub repo: String,
    pub path: String,
    pub revision: String,
    pub environment: String,
    pub automated: bool,
    pub self_heal: bool,
    pub prune: bool,
    /// An automated sync with `prune` may retire the environment when its file is deleted.
    pub allow_empty: bool,
    /// Sync windows (JSON, the server's `SyncWindow`s; `[]`: always).
    pub windows: String,
    pub created_by: String,
    pub created_at_ms: i64,
    /// The reconciler's last finding (JSON).
    pub status: String,
    pub pinned: Option<i64>,
    pub pinned_commit: Option<String>,
    pub failed_commit: Option<String>,
    pub checked_at_ms: Option<i64>,
}

/// One sync of an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSync {
    pub id: i64,
    pub app: String,
    pub commit: String,
    pub version: String,
    pub release: Option<i64>,
    pub trigger: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub actor: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

const APP_COLUMNS: &str =
    "name, project, repo, path, revision, environment, automated, self_heal, prune, allow_empty, windows,
     created_by, created_at, status, pinned, pinned_commit, failed_commit, checked_at";

fn app_from(r: &impl Columns) -> AppRow {
    AppRow {
        name: r.text("name"),
        project: r.text("project"),
        repo: r.text("repo"),
        path: r.text("path"),
        revision: r.text("revision"),
        environment: r.text("environment"),
        automated: r.i64("automated") != 0,
        self_heal: r.i64("self_heal") != 0,
        prune: r.i64("prune") != 0,
        allow_empty: r.i64("allow_empty") != 0,
        windows: r.text("windows"),
        created_by: r.text("created_by"),
        created_at_ms: r.i64("created_at"),
        status: r.text("status"),
        pinned: r.opt_i64("pinned"),
        pinned_commit: r.opt_text("pinned_commit"),
        failed_commit: r.opt_text("failed_commit"),
        checked_at_ms: r.opt_i64("checked_at"),
    }
}

fn sync_from(r: &impl Columns) -> AppSync {
    AppSync {
        id: r.i64("id"),
        app: r.text("app"),
        commit: r.text("commit_sha"),
        version: r.text("version"),
        release: r.opt_i64("release_id"),
        trigger: r.text("trigger"),
        outcome: r.text("outcome"),
        detail: r.opt_text("detail"),
        actor: r.text("actor"),
        started_at_ms: r.i64("started_at"),
        finished_at_ms: r.i64("finished_at"),
    }
}

impl Store {
    /// Adds an application, or replaces its definition (its status, pin and syncs are kept).
    /// Another application already syncing the environment is refused with its name.
    pub async fn put_app(&self, a: &AppRow) -> Result<Result<(), String>, StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            let other: Option<String> =
                sqlx::query_scalar("SELECT name FROM apps WHERE environment = $1 AND name <> $2")
                    .bind(&a.environment)
                    .bind(&a.name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(other) = other {
                return Ok(Err(other));
            }
            sqlx::query(
                "INSERT INTO apps (name, project, repo, path, revision, environment, automated, self_heal, prune,
                 created_by, created_at, status, windows, allow_empty)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '{}', $12, $13)
                 ON CONFLICT (name) DO UPDATE SET project = excluded.project, repo = excluded.repo,
                 path = excluded.path, revision = excluded.revision, environment = excluded.environment,
                 automated = excluded.automated, self_heal = excluded.self_heal, prune = excluded.prune,
                 windows = excluded.windows, allow_empty = excluded.allow_empty",
            )
            .bind(&a.name)
            .bind(&a.project)
            .bind(&a.repo)
            .bind(&a.path)
            .bind(&a.revision)
            .bind(&a.environment)
            .bind(a.automated as i64)
            .bind(a.self_heal as i64)
            .bind(a.prune as i64)
            .bind(&a.created_by)
            .bind(now_ms())
            .bind(&a.windows)
            .bind(a.allow_empty as i64)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    pub async fn apps(&self) -> Result<Vec<AppRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name")).fetch_all(pool).await?;
            Ok(rows.iter().map(app_from).collect())
        })
    }

    pub async fn app(&self, name: &str) -> Result<Option<AppRow>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE name = $1"))
                .bind(name)
                .fetch_optional(pool)
                .await?;
            Ok(row.as_ref().map(app_from))
        })
    }

    /// The application that syncs `environment`, if one does.
    pub async fn app_of(&self, environment: &str) -> Result<Option<AppRow>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE environment = $1"))
                .bind(environment)
                .fetch_optional(pool)
                .await?;
            Ok(row.as_ref().map(app_from))
        })
    }

    /// Forgets an application and its syncs (the environment and its releases stay).
    pub async fn delete_app(&self, name: &str) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM app_syncs WHERE app = $1").bind(name).execute(&mut *tx).await?;
            let n = sqlx::query("DELETE FROM apps WHERE name = $1").bind(name).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    /// Records what the reconciler found, and the commit whose sync failed (or none).
    pub async fn set_app_status(
        &self,
        name: &str,
        status: &str,
        failed_commit: Option<&str>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE apps SET status = $1, failed_commit = $2, checked_at = $3 WHERE name = $4")
                .bind(status)
                .bind(failed_commit)
                .bind(now_ms())
                .bind(name)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Pins the application's environment to a release (a rollback), at the desired state's
    /// commit; `None` unpins.
    pub async fn pin_app(&self, name: &str, pin: Option<(i64, &str)>) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE apps SET pinned = $1, pinned_commit = $2 WHERE name = $3")
                .bind(pin.map(|p| p.0))
                .bind(pin.map(|p| p.1))
                .bind(name)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    pub async fn add_app_sync(&self, s: &AppSync) -> Result<i64, StoreError> {
        with_pool!(self, |pool| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO app_syncs (app, commit_sha, version, release_id, trigger, outcome, detail, actor, started_at,
                 finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            )
            .bind(&s.app)
            .bind(&s.commit)
            .bind(&s.version)
            .bind(s.release)
            .bind(&s.trigger)
            .bind(&s.outcome)
            .bind(&s.detail)
            .bind(&s.actor)
            .bind(s.started_at_ms)
            .bind(s.finished_at_ms)
            .fetch_one(pool)
            .await?;
            Ok(id)
        })
    }

    /// An application's syncs, newest first.
    pub async fn app_syncs(&self, app: &str, limit: i64) -> Result<Vec<AppSync>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, app, commit_sha, version, release_id, trigger, outcome, detail, actor, started_at, finished_at
                 FROM app_syncs WHERE app = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(app)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(sync_from).collect())
        })
    }
}
