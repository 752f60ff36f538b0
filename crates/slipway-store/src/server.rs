//! What the server keeps besides runs and access: the projects it watches, webhook deliveries,
//! artifacts and caches.

use slipway_model::time::now_ms;

use crate::row::Columns;
use crate::{Store, StoreError, with_pool};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub name: String,
    /// A URL git can fetch, or a path on the server's machine.
    pub repo: String,
    /// The default branch.
    pub branch: String,
    /// Fetch the remote this often; `None`: webhooks and triggers only.
    pub poll_ms: Option<i64>,
    pub created_at_ms: i64,
    /// What forges sign their webhooks with (GitLab sends it as a token).
    pub webhook_secret: Option<String>,
}

fn project_from(r: &impl Columns) -> Project {
    Project {
        name: r.text("name"),
        repo: r.text("repo"),
        branch: r.text("branch"),
        poll_ms: r.opt_i64("poll_ms"),
        created_at_ms: r.i64("created_at"),
        webhook_secret: r.opt_text("webhook_secret"),
    }
}

/// project, job, status, count, run ms, queue ms.
type JobStatsRow = (String, String, String, i64, Option<i64>, Option<i64>);

/// One row of [`Store::job_stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobStats {
    pub project: String,
    pub job: String,
    pub status: String,
    pub count: i64,
    pub seconds: f64,
    pub queue_seconds: f64,
}

impl Store {
    /// Adds a project; false when one of that name exists.
    pub async fn add_project(&self, p: &Project) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query(
                "INSERT INTO projects (name, repo, branch, poll_ms, created_at, webhook_secret)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&p.name)
            .bind(&p.repo)
            .bind(&p.branch)
            .bind(p.poll_ms)
            .bind(now_ms())
            .bind(&p.webhook_secret)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    pub async fn project(&self, name: &str) -> Result<Option<Project>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT name, repo, branch, poll_ms, created_at, webhook_secret FROM projects WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| project_from(&r)))
        })
    }

    pub async fn projects(&self) -> Result<Vec<Project>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT name, repo, branch, poll_ms, created_at, webhook_secret FROM projects ORDER BY name",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(project_from).collect())
        })
    }

    /// What polling saw last on the project's remote: JSON `{ref: sha}`.
    pub async fn last_seen(&self, project: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, |pool| {
            let v: Option<Option<String>> = sqlx::query_scalar("SELECT last_seen FROM projects WHERE name = $1")
                .bind(project)
                .fetch_optional(pool)
                .await?;
            Ok(v.flatten())
        })
    }

    pub async fn set_last_seen(&self, project: &str, seen: &str) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE projects SET last_seen = $1 WHERE name = $2")
                .bind(seen)
                .bind(project)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Takes a webhook delivery id; false when it was taken before (a replay).
    pub async fn record_delivery(&self, id: &str, project: &str) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query(
                "INSERT INTO webhook_deliveries (id, project, received_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(project)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    pub async fn set_delivery_run(&self, id: &str, run: i64) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE webhook_deliveries SET run_id = $1 WHERE id = $2")
                .bind(run)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The pipeline a delivery started, when it started one.
    pub async fn delivery_run(&self, id: &str) -> Result<Option<i64>, StoreError> {
        with_pool!(self, |pool| {
            let v: Option<Option<i64>> = sqlx::query_scalar("SELECT run_id FROM webhook_deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(v.flatten())
        })
    }

    /// A run of the project for this ref, commit and source, when there is one (a push seen
    /// twice, by a webhook and by polling, starts one pipeline).
    pub async fn find_run(
        &self,
        project: &str,
        ref_name: &str,
        sha: &str,
        source: &str,
    ) -> Result<Option<i64>, StoreError> {
        with_pool!(self, |pool| {
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM runs WHERE project = $1 AND ref_name = $2 AND commit_sha = $3 AND source = $4
                 ORDER BY id LIMIT 1",
            )
            .bind(project)
            .bind(ref_name)
            .bind(sha)
            .bind(source)
            .fetch_optional(pool)
            .await?;
            Ok(id)
        })
    }

    /// How many runs and jobs are in each status (the server's metrics).
    pub async fn status_counts(&self) -> Result<(Vec<(String, i64)>, Vec<(String, i64)>), StoreError> {
        with_pool!(self, |pool| {
            let runs: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status")
                    .fetch_all(pool)
                    .await?;
            let jobs: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status")
                    .fetch_all(pool)
                    .await?;
            Ok((runs, jobs))
        })
    }

    /// Runs per project and status, and the seconds the ended ones took in all (the monitor's
    /// pipeline series).
    pub async fn run_stats(&self) -> Result<Vec<(String, String, i64, f64)>, StoreError> {
        with_pool!(self, |pool| {
            let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
                "SELECT project, status, COUNT(*),
                        CAST(SUM(CASE WHEN finished_at IS NOT NULL THEN finished_at - created_at ELSE 0 END) AS BIGINT)
                 FROM runs GROUP BY project, status ORDER BY project, status",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|(p, s, n, ms)| (p, s, n, ms.unwrap_or(0) as f64 / 1000.0)).collect())
        })
    }

    /// Per project, job name and status: how many jobs, the seconds the ended ones ran, and
    /// the seconds those that started waited in the queue.
    pub async fn job_stats(&self) -> Result<Vec<JobStats>, StoreError> {
        with_pool!(self, |pool| {
            let rows: Vec<JobStatsRow> = sqlx::query_as(
                "SELECT r.project, j.name, j.status, COUNT(*),
                        CAST(SUM(CASE WHEN j.finished_at IS NOT NULL AND j.started_at IS NOT NULL
                                      THEN j.finished_at - j.started_at ELSE 0 END) AS BIGINT),
                        CAST(SUM(CASE WHEN j.started_at IS NOT NULL AND j.queued_at IS NOT NULL AND j.started_at >= j.queued_at
                                      THEN j.started_at - j.queued_at ELSE 0 END) AS BIGINT)
                 FROM jobs j JOIN runs r ON r.id = j.run_id
                 GROUP BY r.project, j.name, j.status ORDER BY r.project, j.name, j.status",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(project, job, status, n, run, queue)| JobStats {
                    project,
                    job,
                    status,
                    count: n,
                    seconds: run.unwrap_or(0) as f64 / 1000.0,
                    queue_seconds: queue.unwrap_or(0) as f64 / 1000.0,
                })
                .collect())
        })
    }

    /// Whether any user exists (the first start makes the admin).
    pub async fn has_users(&self) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await?;
            Ok(n > 0)
        })
    }

    /// Records the artifacts a job uploaded (its blob's digest), replacing an earlier attempt's.
    pub async fn put_job_artifacts(
        &self,
        run: i64,
        index: i64,
        digest: &str,
        size: i64,
        expires_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO job_artifacts (run_id, job_index, digest, size, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id, job_index) DO UPDATE
                 SET digest = excluded.digest, size = excluded.size, created_at = excluded.created_at,
                     expires_at = excluded.expires_at",
            )
            .bind(run)
            .bind(index)
            .bind(digest)
            .bind(size)
            .bind(now_ms())
            .bind(expires_at_ms)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The digest and size of a job's artifacts, unless there are none or they expired.
    pub async fn job_artifacts(&self, run: i64, index: i64) -> Result<Option<(String, i64)>, StoreError> {
        with_pool!(self, |pool| {
            let row: Option<(String, i64)> = sqlx::query_as(
                "SELECT digest, size FROM job_artifacts
                 WHERE run_id = $1 AND job_index = $2 AND (expires_at IS NULL OR expires_at > $3)",
            )
            .bind(run)
            .bind(index)
            .bind(now_ms())
            .fetch_optional(pool)
            .await?;
            Ok(row)
        })
    }

    /// Forgets artifacts whose `expire_in` passed; returns the digests no job refers to any
    /// more (their blobs may go).
    pub async fn expire_job_artifacts(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        with_pool!(self, |pool| {
            let gone: Vec<String> = sqlx::query_scalar(
                "DELETE FROM job_artifacts WHERE expires_at IS NOT NULL AND expires_at <= $1 RETURNING digest",
            )
            .bind(now_ms)
            .fetch_all(pool)
            .await?;
            let mut unused = Vec::new();
            for d in gone {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_artifacts WHERE digest = $1")
                    .bind(&d)
                    .fetch_one(pool)
                    .await?;
                if n == 0 && !unused.contains(&d) {
                    unused.push(d);
                }
            }
            Ok(unused)
        })
    }

    /// Pipelines that ended before `cutoff_ms`, oldest first, at most `limit` of them.
    pub async fn runs_ended_before(&self, cutoff_ms: i64, limit: i64) -> Result<Vec<i64>, StoreError> {
        with_pool!(self, |pool| {
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM runs WHERE status <> 'running' AND finished_at IS NOT NULL AND finished_at < $1
                 ORDER BY id LIMIT $2",
            )
            .bind(cutoff_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(ids)
        })
    }

    /// Forgets a pipeline that ended: its jobs, their artifacts' records and its job tokens
    /// (releases keep naming it). Returns the artifact digests no job refers to any more.
    pub async fn delete_run(&self, run: i64) -> Result<Vec<String>, StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let digests: Vec<String> =
                sqlx::query_scalar("DELETE FROM job_artifacts WHERE run_id = $1 RETURNING digest")
                    .bind(run)
                    .fetch_all(&mut *tx)
                    .await?;
            sqlx::query("DELETE FROM tokens WHERE run_id = $1").bind(run).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM test_cases WHERE run_id = $1").bind(run).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM job_coverage WHERE run_id = $1").bind(run).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM package_coverage WHERE run_id = $1").bind(run).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM jobs WHERE run_id = $1").bind(run).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM runs WHERE id = $1 AND status <> 'running'").bind(run).execute(&mut *tx).await?;
            let mut unused = Vec::new();
            for d in digests {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_artifacts WHERE digest = $1")
                    .bind(&d)
                    .fetch_one(&mut *tx)
                    .await?;
                if n == 0 && !unused.contains(&d) {
                    unused.push(d);
                }
            }
            tx.commit().await?;
            Ok(unused)
        })
    }

    /// Records the cache `key` of `project` (its blob's digest), replacing the one before.
    pub async fn put_cache(&self, project: &str, key: &str, digest: &str, size: i64) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO caches (project, key, digest, size, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (project, key) DO UPDATE
                 SET digest = excluded.digest, size = excluded.size, updated_at = excluded.updated_at",
            )
            .bind(project)
            .bind(key)
            .bind(digest)
            .bind(size)
            .bind(now_ms())
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The digest of the cache `key` of `project`, when there is one.
    pub async fn cache(&self, project: &str, key: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, |pool| {
            let d: Option<String> = sqlx::query_scalar("SELECT digest FROM caches WHERE project = $1 AND key = $2")
                .bind(project)
                .bind(key)
                .fetch_optional(pool)
                .await?;
            Ok(d)
        })
    }

    /// Whether any job's artifacts or any cache still refer to this blob.
    pub async fn blob_in_use(&self, digest: &str) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n: i64 = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM job_artifacts WHERE digest = $1) + (SELECT COUNT(*) FROM caches WHERE digest = $1)",
            )
            .bind(digest)
            .fetch_one(pool)
            .await?;
            Ok(n > 0)
        })
    }
}
