//! Pipeline runs and their jobs: the server records each run with its jobs, saves the
//! scheduler's snapshot after every transition (so a restarted server resumes it), and hands
//! pending jobs to runners under a lease. Claiming takes the oldest pending job nobody else is
//! taking (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's write lock serializes claims).

use std::time::Duration;

use slipway_model::run::{JobState, PipelineStatus};
use slipway_model::time::now_ms;

use crate::row::Columns;
use crate::{Dialect as _, Store, StoreError, with_pool};

pub type RunId = i64;

/// A run to record.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub project: String,
    pub ref_name: Option<String>,
    pub commit_sha: Option<String>,
    pub source: String,
    /// Each job's name and stage, in plan order (a job's index is its place here).
    pub jobs: Vec<(String, String)>,
    /// Variables given at trigger time.
    pub variables: Vec<(String, String)>,
    /// The commit's author, `Name <email>`.
    pub author: Option<String>,
    /// What started it (`api: admin`, `webhook: github`, `polling`, `schedule 3`).
    pub triggered_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: RunId,
    pub project: String,
    pub ref_name: Option<String>,
    pub commit_sha: Option<String>,
    pub source: String,
    pub status: PipelineStatus,
    /// The scheduler's state after its last transition (JSON), to restore it.
    pub snapshot: Option<serde_json::Value>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// Variables given at trigger time.
    pub variables: Vec<(String, String)>,
    /// Why the run ended without running (its pipeline file did not plan).
    pub detail: Option<String>,
    pub author: Option<String>,
    pub triggered_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub run: RunId,
    pub index: usize,
    pub name: String,
    pub stage: String,
    pub status: JobState,
    pub exit_code: Option<i32>,
    pub attempts: u32,
    pub reason: Option<String>,
    pub runner: Option<String>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// When it last became claimable.
    pub queued_at_ms: Option<i64>,
    /// A trigger job's child pipeline as it ended (its `RunRecord` as JSON).
    pub child: Option<String>,
}

/// A job a runner took: it holds it until the lease runs out unless it renews it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub run: RunId,
    pub index: usize,
    pub name: String,
    pub attempt: u32,
}

/// The token a claimed job gets (`CI_JOB_TOKEN`): kept by its hash, made with the claim.
#[derive(Debug, Clone, Copy)]
pub struct JobToken<'a> {
    pub hash: &'a str,
    pub expires_at_ms: i64,
}

fn run_from(r: &impl Columns) -> Result<RunRow, StoreError> {
    let id = r.i64("id");
    let status = r.text("status");
    Ok(RunRow {
        id,
        project: r.text("project"),
        ref_name: r.opt_text("ref_name"),
        commit_sha: r.opt_text("commit_sha"),
        source: r.text("source"),
        status: PipelineStatus::parse(&status)
            .ok_or_else(|| StoreError::corrupt("run", id, format!("status `{status}`")))?,
        snapshot: match r.opt_text("snapshot") {
            Some(s) => Some(serde_json::from_str(&s).map_err(|e| StoreError::corrupt("run", id, e))?),
            None => None,
        },
        created_at_ms: r.i64("created_at"),
        finished_at_ms: r.opt_i64("finished_at"),
        variables: match r.opt_text("variables") {
            Some(s) => serde_json::from_str(&s).map_err(|e| StoreError::corrupt("run", id, e))?,
            None => Vec::new(),
        },
        detail: r.opt_text("detail"),
        author: r.opt_text("author"),
        triggered_by: r.opt_text("triggered_by"),
    })
}

fn job_from(r: &impl Columns) -> Result<JobRow, StoreError> {
    let run = r.i64("run_id");
    let status = r.text("status");
    Ok(JobRow {
        run,
        index: r.i64("idx") as usize,
        name: r.text("name"),
        stage: r.text("stage"),
        status: JobState::parse(&status)
            .ok_or_else(|| StoreError::corrupt("run", run, format!("job status `{status}`")))?,
        exit_code: r.opt_i64("exit_code").map(|c| c as i32),
        attempts: r.i64("attempts") as u32,
        reason: r.opt_text("reason"),
        runner: r.opt_text("runner"),
        started_at_ms: r.opt_i64("started_at"),
        finished_at_ms: r.opt_i64("finished_at"),
        queued_at_ms: r.opt_i64("queued_at"),
        child: r.opt_text("child"),
    })
}

const RUN_COLUMNS: &str =
    "id, project, ref_name, commit_sha, source, status, snapshot, created_at, finished_at, variables, detail, author,
     triggered_by";
const JOB_COLUMNS: &str =
    "run_id, idx, name, stage, status, exit_code, attempts, reason, runner, started_at, finished_at, queued_at, child";

impl Store {
    /// Records a run (running) and its jobs (created), in one transaction.
    pub async fn create_run(&self, run: &NewRun) -> Result<RunId, StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (project, ref_name, commit_sha, source, status, created_at, variables, author,
                                   triggered_by)
                 VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8) RETURNING id",
            )
            .bind(&run.project)
            .bind(&run.ref_name)
            .bind(&run.commit_sha)
            .bind(&run.source)
            .bind(now)
            .bind(serde_json::to_string(&run.variables).expect("variables serialize"))
            .bind(&run.author)
            .bind(&run.triggered_by)
            .fetch_one(&mut *tx)
            .await?;
            for (i, (name, stage)) in run.jobs.iter().enumerate() {
                sqlx::query("INSERT INTO jobs (run_id, idx, name, stage, status) VALUES ($1, $2, $3, $4, 'created')")
                    .bind(id)
                    .bind(i as i64)
                    .bind(name)
                    .bind(stage)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Adds the jobs of a run recorded before it was planned (its id is the pipeline's
    /// `CI_PIPELINE_ID`, which the plan uses), in one transaction.
    pub async fn add_jobs(
        &self,
        run: RunId,
        jobs: &[(String, String, Vec<String>)],
        author: Option<&str>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if let Some(author) = author {
                sqlx::query("UPDATE runs SET author = $1 WHERE id = $2")
                    .bind(author)
                    .bind(run)
                    .execute(&mut *tx)
                    .await?;
            }
            for (i, (name, stage, tags)) in jobs.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO jobs (run_id, idx, name, stage, status, tags) VALUES ($1, $2, $3, $4, 'created', $5)",
                )
                .bind(run)
                .bind(i as i64)
                .bind(name)
                .bind(stage)
                .bind(encode_tags(tags))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// What the reconciler must look at: running runs recorded over 10 s ago that have no
    /// jobs yet (never started), and running runs whose scheduler may have missed something
    /// (no transition saved yet, or a job that ended after the last one).
    pub async fn runs_to_reconcile(&self) -> Result<(Vec<RunId>, Vec<RunId>), StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let unstarted: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM runs r WHERE status = 'running' AND created_at < $1
                   AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.id) ORDER BY id",
            )
            .bind(now - 10_000)
            .fetch_all(pool)
            .await?;
            let stale: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM runs r WHERE status = 'running'
                   AND EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.id)
                   AND (r.snapshot IS NULL OR EXISTS (
                        SELECT 1 FROM jobs j WHERE j.run_id = r.id AND j.finished_at IS NOT NULL
                          AND j.finished_at > COALESCE(r.transitioned_at, 0)))
                 ORDER BY id",
            )
            .fetch_all(pool)
            .await?;
            Ok((unstarted, stale))
        })
    }

    /// The commit's author of a run, known once the commit is fetched.
    /// Ends a run that could not run (its pipeline did not plan), saying why.
    pub async fn end_run(&self, run: RunId, status: PipelineStatus, detail: &str) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE runs SET status = $1, detail = $2, finished_at = $3 WHERE id = $4")
                .bind(status.as_str())
                .bind(detail)
                .bind(now_ms())
                .bind(run)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn run(&self, id: RunId) -> Result<Option<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        with_pool!(self, |pool| {
            let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
            row.map(|r| run_from(&r)).transpose()
        })
    }

    /// A project's runs, newest first.
    pub async fn runs(&self, project: &str, limit: i64) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 ORDER BY id DESC LIMIT $2");
        with_pool!(self, |pool| {
            let rows = sqlx::query(&sql).bind(project).bind(limit).fetch_all(pool).await?;
            rows.iter().map(run_from).collect()
        })
    }

    /// Runs that have not finished (a restarted server resumes them from their snapshots).
    pub async fn running_runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY id");
        with_pool!(self, |pool| {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            rows.iter().map(run_from).collect()
        })
    }

    pub async fn jobs(&self, run: RunId) -> Result<Vec<JobRow>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE run_id = $1 ORDER BY idx");
        with_pool!(self, |pool| {
            let rows = sqlx::query(&sql).bind(run).fetch_all(pool).await?;
            rows.iter().map(job_from).collect()
        })
    }

    /// Saves a scheduler transition: the run's status and snapshot, and the jobs whose state
    /// it changed, in one transaction (a crash keeps either all of it or none).
    pub async fn save_transition(
        &self,
        run: RunId,
        status: PipelineStatus,
        snapshot: &serde_json::Value,
        changed: &[(usize, JobState)],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let snapshot = snapshot.to_string();
        let finished = (status != PipelineStatus::Running).then_some(now);
        with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            sqlx::query(
                "UPDATE runs SET status = $1, snapshot = $2,
                        finished_at = CASE WHEN $1 = 'running' THEN NULL ELSE COALESCE(finished_at, $3) END,
                        transitioned_at = $5
                 WHERE id = $4",
            )
            .bind(status.as_str())
            .bind(&snapshot)
            .bind(finished)
            .bind(run)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for (idx, state) in changed {
                let queued = (*state == JobState::Pending).then_some(now);
                let ended = state.is_terminal().then_some(now);
                sqlx::query(
                    "UPDATE jobs SET status = $1, queued_at = COALESCE($2, queued_at),
                            finished_at = CASE WHEN $1 = 'created' THEN NULL ELSE COALESCE($3, finished_at) END,
                            child = CASE WHEN $1 IN ('created', 'pending') THEN NULL ELSE child END
                     WHERE run_id = $4 AND idx = $5",
                )
                .bind(state.as_str())
                .bind(queued)
                .bind(ended)
                .bind(run)
                .bind(*idx as i64)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Takes the oldest pending job of a running run for `runner` whose tags are all among
    /// `tags`, with a lease; `None` when there is none. Two runners claiming at once never get
    /// the same job.
    pub async fn claim_job(
        &self,
        runner: &str,
        tags: &[String],
        lease: Duration,
        token: Option<JobToken<'_>>,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        // The job's `,a,b,` with each of the runner's tags taken out must be `,` (no tag left).
        let mut left = "jobs.tags".to_string();
        for i in 0..tags.len() {
            left = format!("REPLACE({left}, ${}, ',')", i + 1);
        }
        with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            let sql = format!(
                "SELECT jobs.run_id, jobs.idx, jobs.name, jobs.attempts FROM jobs
                 JOIN runs ON runs.id = jobs.run_id
                 WHERE jobs.status = 'pending' AND runs.status = 'running' AND {left} = ','
                 ORDER BY jobs.queued_at, jobs.run_id, jobs.idx LIMIT 1{}",
                pool.skip_locked("jobs")
            );
            let mut q = sqlx::query_as(&sql);
            for t in tags {
                q = q.bind(format!(",{t},"));
            }
            let row: Option<(i64, i64, String, i64)> = q.fetch_optional(&mut *tx).await?;
            let Some((run, idx, name, attempts)) = row else {
                return Ok(None);
            };
            sqlx::query(
                "UPDATE jobs SET status = 'running', runner = $1, lease_until = $2, attempts = attempts + 1,
                        started_at = $3, finished_at = NULL, exit_code = NULL, reason = NULL
                 WHERE run_id = $4 AND idx = $5",
            )
            .bind(runner)
            .bind(until)
            .bind(now)
            .bind(run)
            .bind(idx)
            .execute(&mut *tx)
            .await?;
            // The job's token is made with the claim: one commit, and no claim without it.
            if let Some(t) = &token {
                sqlx::query(
                    "INSERT INTO tokens (hash, name, role, run_id, job_index, expires_at, created_at)
                     VALUES ($1, $2, 'job', $3, $4, $5, $6)",
                )
                .bind(t.hash)
                .bind(format!("job {run}/{idx}"))
                .bind(run)
                .bind(idx)
                .bind(t.expires_at_ms)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(Some(ClaimedJob { run, index: idx as usize, name, attempt: attempts as u32 + 1 }))
        })
    }

    /// Extends a job's lease; false when the runner no longer holds it.
    pub async fn renew_job(&self, run: RunId, index: usize, runner: &str, lease: Duration) -> Result<bool, StoreError> {
        let until = now_ms() + lease.as_millis() as i64;
        with_pool!(self, |pool| {
            let n = sqlx::query(
                "UPDATE jobs SET lease_until = $1
                 WHERE run_id = $2 AND idx = $3 AND runner = $4 AND status = 'running'",
            )
            .bind(until)
            .bind(run)
            .bind(index as i64)
            .bind(runner)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    /// Records how a job the runner held ended; false when it no longer held it (its lease
    /// ran out and the job went back to the queue, or it was canceled).
    pub async fn finish_job(
        &self,
        run: RunId,
        index: usize,
        runner: &str,
        state: JobState,
        exit_code: Option<i32>,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let n = sqlx::query(
                "UPDATE jobs SET status = $1, exit_code = $2, reason = $3, finished_at = $4, lease_until = NULL
                 WHERE run_id = $5 AND idx = $6 AND runner = $7 AND status = 'running'",
            )
            .bind(state.as_str())
            .bind(exit_code.map(i64::from))
            .bind(reason)
            .bind(now)
            .bind(run)
            .bind(index as i64)
            .bind(runner)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    /// Records a finished trigger job's child pipeline (`child`: its `RunRecord` as JSON); a
    /// job that goes back to the queue loses it.
    pub async fn put_job_child(&self, run: RunId, index: usize, child: &str) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE jobs SET child = $1 WHERE run_id = $2 AND idx = $3")
                .bind(child)
                .bind(run)
                .bind(index as i64)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Puts running jobs whose runner's lease ran out back in the queue; returns them.
    pub async fn requeue_expired_jobs(&self) -> Result<Vec<(RunId, usize)>, StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            let sql = format!(
                "SELECT run_id, idx FROM jobs WHERE status = 'running' AND lease_until < $1{}",
                pool.for_update()
            );
            let rows: Vec<(i64, i64)> = sqlx::query_as(&sql).bind(now).fetch_all(&mut *tx).await?;
            for (run, idx) in &rows {
                sqlx::query(
                    "UPDATE jobs SET status = 'pending', runner = NULL, lease_until = NULL, child = NULL, queued_at = $1
                     WHERE run_id = $2 AND idx = $3",
                )
                .bind(now)
                .bind(run)
                .bind(idx)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(rows.into_iter().map(|(r, i)| (r, i as usize)).collect())
        })
    }

    /// Running jobs whose lease ran out: run, index, attempts so far, and who held it.
    pub async fn expired_jobs(&self) -> Result<Vec<(RunId, usize, u32, String)>, StoreError> {
        with_pool!(self, |pool| {
            let rows: Vec<(i64, i64, i64, Option<String>)> = sqlx::query_as(
                "SELECT run_id, idx, attempts, runner FROM jobs WHERE status = 'running' AND lease_until < $1
                 ORDER BY run_id, idx",
            )
            .bind(now_ms())
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|(r, i, a, w)| (r, i as usize, a as u32, w.unwrap_or_default())).collect())
        })
    }

    /// A job its runner hands back (it is stopping): queued again at the front at once, the
    /// attempt not counted; false when the runner does not hold it.
    pub async fn release_job(&self, run: RunId, index: usize, runner: &str) -> Result<bool, StoreError> {
        self.back_to_front(run, index, runner, "attempts = attempts - 1,", "").await
    }

    /// Puts a job whose lease ran out back in the queue, at its front; false when it is no
    /// longer that runner's expired job (it renewed, finished, or was taken back already).
    pub async fn requeue_job(&self, run: RunId, index: usize, runner: &str) -> Result<bool, StoreError> {
        self.back_to_front(run, index, runner, "", "AND lease_until < $1").await
    }

    /// A running job of `runner` made pending again, ahead of every job queued.
    async fn back_to_front(
        &self,
        run: RunId,
        index: usize,
        runner: &str,
        set: &str,
        only_if: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let sql = format!(
            "UPDATE jobs SET status = 'pending', runner = NULL, lease_until = NULL, child = NULL, {set}
                    queued_at = COALESCE((SELECT MIN(queued_at) FROM jobs WHERE status = 'pending'), $1) - 1
             WHERE run_id = $2 AND idx = $3 AND runner = $4 AND status = 'running' {only_if}"
        );
        with_pool!(self, |pool| {
            let n = sqlx::query(&sql)
                .bind(now)
                .bind(run)
                .bind(index as i64)
                .bind(runner)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n == 1)
        })
    }
}

/// Tags as the jobs table keeps them: `,a,b,` (sorted, unique), `,` for none.
fn encode_tags(tags: &[String]) -> String {
    let mut t: Vec<&str> = tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).collect();
    t.sort_unstable();
    t.dedup();
    if t.is_empty() { ",".into() } else { format!(",{},", t.join(",")) }
}
