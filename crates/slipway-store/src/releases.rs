//! Releases, the current release of each environment, the deploy journal and approvals.

use slipway_model::release::{
    Approval, Artifact, JournalStep, NewRelease, Release, ReleaseConfig, ReleaseReason, ReleaseStatus,
};
use slipway_model::time::now_ms;

use crate::row::Columns;
use crate::{Dialect, Store, StoreError, with_pool};

fn release_from(r: &impl Columns) -> Result<Release, StoreError> {
    let id = r.i64("id");
    let corrupt = |why: String| StoreError::corrupt("release", id, why);
    let artifacts: Vec<Artifact> =
        serde_json::from_str(&r.text("artifacts")).map_err(|e| corrupt(format!("artifacts: {e}")))?;
    let config: ReleaseConfig = serde_json::from_str(&r.text("config")).map_err(|e| corrupt(format!("config: {e}")))?;
    let status = r.text("status");
    let reason = r.text("reason");
    Ok(Release {
        id,
        environment: r.text("environment"),
        version: r.text("version"),
        artifacts,
        // Recomputed, so records written before the config was typed compare equal to new ones
        // with the same settings.
        config_hash: config.hash(),
        config,
        commit: r.opt_text("commit_sha"),
        branch: r.opt_text("branch"),
        actor: r.text("actor"),
        reason: ReleaseReason::parse(&reason).ok_or_else(|| corrupt(format!("reason `{reason}`")))?,
        source_release: r.opt_i64("source_release"),
        status: ReleaseStatus::parse(&status).ok_or_else(|| corrupt(format!("status `{status}`")))?,
        status_detail: r.opt_text("status_detail"),
        pipeline: match r.opt_text("pipeline") {
            Some(p) => Some(serde_json::from_str(&p).map_err(|e| corrupt(format!("pipeline `{p}`: {e}")))?),
            None => None,
        },
        created_at_ms: r.i64("created_at"),
        started_at_ms: r.opt_i64("started_at"),
        finished_at_ms: r.opt_i64("finished_at"),
    })
}

const SELECT: &str = "SELECT id, environment, version, artifacts, config_hash, config, commit_sha, branch, actor,
                             reason, source_release, status, status_detail, pipeline, created_at, started_at,
                             finished_at
                      FROM releases";

impl Store {
    pub async fn create_release(&self, r: &NewRelease) -> Result<Release, StoreError> {
        let now = now_ms();
        let artifacts = serde_json::to_string(&r.artifacts).expect("artifacts serialize");
        let config = serde_json::to_string(&r.config).expect("configs serialize");
        let hash = r.config.hash();
        let started = (r.status == ReleaseStatus::Deploying).then_some(now);
        let pipeline = r.pipeline.as_ref().map(|p| serde_json::to_string(p).expect("pipeline refs serialize"));
        let id: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "INSERT INTO releases (environment, version, artifacts, config_hash, config, commit_sha, branch, actor,
                                       reason, source_release, status, created_at, started_at, pipeline)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
            )
            .bind(&r.environment)
            .bind(&r.version)
            .bind(&artifacts)
            .bind(&hash)
            .bind(&config)
            .bind(&r.commit)
            .bind(&r.branch)
            .bind(&r.actor)
            .bind(r.reason.as_str())
            .bind(r.source_release)
            .bind(r.status.as_str())
            .bind(now)
            .bind(started)
            .bind(&pipeline)
            .fetch_one(pool)
            .await?
        });
        self.release(id).await?.ok_or_else(|| StoreError::corrupt("release", id, "vanished after its insert"))
    }

    /// Records, under the given id, a release that already runs (what `slipway adopt` takes
    /// over from a lost store): healthy, started and finished now. `None` when the id is taken.
    /// Later releases get ids above it.
    pub async fn adopt_release(&self, r: &NewRelease, id: i64) -> Result<Option<Release>, StoreError> {
        let now = now_ms();
        let artifacts = serde_json::to_string(&r.artifacts).expect("artifacts serialize");
        let config = serde_json::to_string(&r.config).expect("configs serialize");
        let hash = r.config.hash();
        let postgres = self.kind() == crate::BackendKind::Postgres;
        let inserted: bool = with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            let taken: Option<i64> =
                sqlx::query_scalar("SELECT id FROM releases WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
            if taken.is_some() {
                false
            } else {
                sqlx::query(
                    "INSERT INTO releases (id, environment, version, artifacts, config_hash, config, commit_sha, branch,
                                           actor, reason, source_release, status, created_at, started_at, finished_at,
                                           pipeline)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $13, $14)",
                )
                .bind(id)
                .bind(&r.environment)
                .bind(&r.version)
                .bind(&artifacts)
                .bind(&hash)
                .bind(&config)
                .bind(&r.commit)
                .bind(&r.branch)
                .bind(&r.actor)
                .bind(r.reason.as_str())
                .bind(r.source_release)
                .bind(r.status.as_str())
                .bind(now)
                .bind(r.pipeline.as_ref().map(|p| serde_json::to_string(p).expect("pipeline refs serialize")))
                .execute(&mut *tx)
                .await?;
                if postgres {
                    // An explicit id does not move an identity column's sequence.
                    sqlx::query(
                        "SELECT setval(pg_get_serial_sequence('releases', 'id'), (SELECT MAX(id) FROM releases))",
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                true
            }
        });
        match inserted {
            true => self.release(id).await,
            false => Ok(None),
        }
    }

    pub async fn release(&self, id: i64) -> Result<Option<Release>, StoreError> {
        let sql = format!("{SELECT} WHERE id = $1");
        with_pool!(self, |pool| {
            let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
            row.map(|r| release_from(&r)).transpose()
        })
    }

    /// Sets a release's outcome. Ending statuses stamp the end time (once); `Deploying`
    /// stamps the start. `detail` replaces the old one when given.
    pub async fn set_status(&self, id: i64, status: ReleaseStatus, detail: Option<&str>) -> Result<(), StoreError> {
        let now = now_ms();
        let started = (status == ReleaseStatus::Deploying).then_some(now);
        // Replaced and rolled back keep the time the release ended its own deploy.
        let finished = (!status.is_unfinished()
            && !matches!(status, ReleaseStatus::RolledBack | ReleaseStatus::Replaced))
        .then_some(now);
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE releases SET status = $1, status_detail = COALESCE($2, status_detail),
                        started_at = COALESCE(started_at, $3),
                        finished_at = COALESCE(finished_at, $4)
                 WHERE id = $5",
            )
            .bind(status.as_str())
            .bind(detail)
            .bind(started)
            .bind(finished)
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Releases of an environment, newest first.
    pub async fn history(&self, environment: &str, limit: i64) -> Result<Vec<Release>, StoreError> {
        let sql = format!("{SELECT} WHERE environment = $1 ORDER BY id DESC LIMIT $2");
        with_pool!(self, |pool| {
            let rows = sqlx::query(&sql).bind(environment).bind(limit).fetch_all(pool).await?;
            rows.iter().map(release_from).collect()
        })
    }

    /// Releases in a state that a deploy process must finish (deploying or queued), oldest first.
    pub async fn unfinished(&self, environment: &str) -> Result<Vec<Release>, StoreError> {
        let sql = format!("{SELECT} WHERE environment = $1 AND status IN ('deploying', 'queued') ORDER BY id");
        with_pool!(self, |pool| {
            let rows = sqlx::query(&sql).bind(environment).fetch_all(pool).await?;
            rows.iter().map(release_from).collect()
        })
    }

    /// The environment's current (last fully deployed) release.
    pub async fn current(&self, environment: &str) -> Result<Option<Release>, StoreError> {
        let id: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT current_release FROM environments WHERE name = $1")
                .bind(environment)
                .fetch_optional(pool)
                .await?
                .flatten()
        });
        match id {
            Some(id) => self.release(id).await,
            None => Ok(None),
        }
    }

    /// Makes `release` the environment's current release; the one before becomes `then`
    /// (replaced or rolled back). One transaction.
    pub async fn set_current(&self, environment: &str, release: i64, then: ReleaseStatus) -> Result<(), StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            let previous: Option<i64> = sqlx::query_scalar("SELECT current_release FROM environments WHERE name = $1")
                .bind(environment)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
            if let Some(p) = previous.filter(|p| *p != release) {
                sqlx::query("UPDATE releases SET status = $1 WHERE id = $2 AND status = 'healthy'")
                    .bind(then.as_str())
                    .bind(p)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO environments (name, current_release, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET current_release = excluded.current_release,
                                                  updated_at = excluded.updated_at",
            )
            .bind(environment)
            .bind(release)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Retires an environment: `release`, its current one, becomes `retired` and the
    /// environment has no current release (nothing is brought back on a restart). False when
    /// `release` is no longer current (a deploy got there first). One transaction.
    pub async fn retire(&self, environment: &str, release: i64) -> Result<bool, StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE environments SET current_release = NULL, updated_at = $1
                 WHERE name = $2 AND current_release = $3",
            )
            .bind(now)
            .bind(environment)
            .bind(release)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if done {
                sqlx::query("UPDATE releases SET status = 'retired' WHERE id = $1")
                    .bind(release)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(done)
        })
    }

    /// Environments that have a current release, by name, with the time it changed.
    pub async fn environments(&self) -> Result<Vec<(String, i64)>, StoreError> {
        with_pool!(self, |pool| {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT name, updated_at FROM environments ORDER BY name").fetch_all(pool).await?;
            Ok(rows)
        })
    }

    /// Releases of an environment that were healthy at some point (their artifacts are
    /// known good), newest first.
    pub async fn good_releases(&self, environment: &str) -> Result<Vec<Release>, StoreError> {
        let sql = format!(
            "{SELECT} WHERE environment = $1 AND status IN ('healthy', 'replaced', 'rolled_back', 'retired') ORDER BY id DESC"
        );
        with_pool!(self, |pool| {
            let rows = sqlx::query(&sql).bind(environment).fetch_all(pool).await?;
            rows.iter().map(release_from).collect()
        })
    }

    /// The newest release of this version in any environment (to redeploy its artifacts).
    pub async fn find_version(&self, version: &str) -> Result<Option<Release>, StoreError> {
        let sql = format!("{SELECT} WHERE version = $1 ORDER BY id DESC LIMIT 1");
        with_pool!(self, |pool| {
            let row = sqlx::query(&sql).bind(version).fetch_optional(pool).await?;
            row.map(|r| release_from(&r)).transpose()
        })
    }

    /// Appends a step to a release's journal (written before the step acts); returns its number.
    pub async fn record_step(&self, release: i64, name: &str, detail: &serde_json::Value) -> Result<i64, StoreError> {
        let now = now_ms();
        let detail = detail.to_string();
        with_pool!(self, |pool| {
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO steps (release_id, seq, name, detail, at)
                 VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE release_id = $1), $2, $3, $4)
                 RETURNING seq",
            )
            .bind(release)
            .bind(name)
            .bind(&detail)
            .bind(now)
            .fetch_one(pool)
            .await?;
            Ok(seq)
        })
    }

    pub async fn steps(&self, release: i64) -> Result<Vec<JournalStep>, StoreError> {
        with_pool!(self, |pool| {
            let rows: Vec<(i64, String, String, i64)> =
                sqlx::query_as("SELECT seq, name, detail, at FROM steps WHERE release_id = $1 ORDER BY seq")
                    .bind(release)
                    .fetch_all(pool)
                    .await?;
            Ok(rows
                .into_iter()
                .map(|(seq, name, detail, at_ms)| JournalStep {
                    seq,
                    name,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    at_ms,
                })
                .collect())
        })
    }

    /// Records an approval; approving twice is the same as once.
    pub async fn approve(&self, environment: &str, release: i64, approver: &str) -> Result<(), StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO approvals (environment, release_id, approver, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (release_id, approver) DO NOTHING",
            )
            .bind(environment)
            .bind(release)
            .bind(approver)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn approvals(&self, release: i64) -> Result<Vec<Approval>, StoreError> {
        with_pool!(self, |pool| {
            let rows: Vec<(i64, String, i64)> = sqlx::query_as(
                "SELECT release_id, approver, created_at FROM approvals WHERE release_id = $1 ORDER BY id",
            )
            .bind(release)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|(release, approver, at_ms)| Approval { release, approver, at_ms }).collect())
        })
    }
}
