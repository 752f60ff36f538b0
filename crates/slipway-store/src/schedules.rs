//! Pipeline schedules: what runs when (the cron itself is the server's to read), and the
//! compare-and-set that lets exactly one server start each due run.

use slipway_model::time::now_ms;

use crate::row::Columns;
use crate::{Store, StoreError, with_pool};

/// A schedule as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub id: i64,
    pub project: String,
    pub description: String,
    pub cron: String,
    pub timezone: String,
    pub ref_name: String,
    pub variables: Vec<(String, String)>,
    pub active: bool,
    pub next_run_at_ms: i64,
    pub last_run_at_ms: Option<i64>,
    pub last_run_id: Option<i64>,
    pub created_at_ms: i64,
}

fn schedule_from(r: &impl Columns) -> Result<Schedule, StoreError> {
    let id = r.i64("id");
    let vars = r.text("variables");
    Ok(Schedule {
        id,
        project: r.text("project"),
        description: r.text("description"),
        cron: r.text("cron"),
        timezone: r.text("timezone"),
        ref_name: r.text("ref_name"),
        variables: serde_json::from_str(&vars)
            .map_err(|e| StoreError::corrupt("schedule", id, format!("variables `{vars}`: {e}")))?,
        active: r.i64("active") != 0,
        next_run_at_ms: r.i64("next_run_at"),
        last_run_at_ms: r.opt_i64("last_run_at"),
        last_run_id: r.opt_i64("last_run_id"),
        created_at_ms: r.i64("created_at"),
    })
}

const SELECT: &str = "SELECT id, project, description, cron, timezone, ref_name, variables, active, next_run_at,
                             last_run_at, last_run_id, created_at FROM schedules";

impl Store {
    /// Records a schedule (`id` and the run fields are the store's); its id.
    pub async fn add_schedule(&self, s: &Schedule) -> Result<i64, StoreError> {
        let vars = serde_json::to_string(&s.variables).expect("variables serialize");
        with_pool!(self, |pool| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO schedules (project, description, cron, timezone, ref_name, variables, active,
                                        next_run_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(&s.project)
            .bind(&s.description)
            .bind(&s.cron)
            .bind(&s.timezone)
            .bind(&s.ref_name)
            .bind(&vars)
            .bind(i64::from(s.active))
            .bind(s.next_run_at_ms)
            .bind(now_ms())
            .fetch_one(pool)
            .await?;
            Ok(id)
        })
    }

    pub async fn schedules(&self, project: &str) -> Result<Vec<Schedule>, StoreError> {
        let sql = format!("{SELECT} WHERE project = $1 ORDER BY id");
        with_pool!(self, |pool| {
            let rows = sqlx::query(&sql).bind(project).fetch_all(pool).await?;
            rows.iter().map(schedule_from).collect()
        })
    }

    pub async fn schedule(&self, id: i64) -> Result<Option<Schedule>, StoreError> {
        let sql = format!("{SELECT} WHERE id = $1");
        with_pool!(self, |pool| {
            let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
            row.as_ref().map(schedule_from).transpose()
        })
    }

    /// Active schedules whose next run is at or before `now`.
    pub async fn due_schedules(&self, now: i64) -> Result<Vec<Schedule>, StoreError> {
        let sql = format!("{SELECT} WHERE active = 1 AND next_run_at <= $1 ORDER BY next_run_at");
        with_pool!(self, |pool| {
            let rows = sqlx::query(&sql).bind(now).fetch_all(pool).await?;
            rows.iter().map(schedule_from).collect()
        })
    }

    /// Moves a due schedule on to its next run, unless another server did first (its next run
    /// is no longer `due`): true when this caller is the one to start the run.
    pub async fn take_schedule(&self, id: i64, due: i64, next: i64) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query(
                "UPDATE schedules SET next_run_at = $1, last_run_at = $2
                 WHERE id = $3 AND next_run_at = $4 AND active = 1",
            )
            .bind(next)
            .bind(now_ms())
            .bind(id)
            .bind(due)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    /// The pipeline a schedule's run started.
    pub async fn set_schedule_run(&self, id: i64, run: i64) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE schedules SET last_run_id = $1, last_run_at = $2 WHERE id = $3")
                .bind(run)
                .bind(now_ms())
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Turns a schedule on (with its next run) or off; false when there is no such schedule.
    pub async fn set_schedule_active(&self, id: i64, active: bool, next: i64) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query("UPDATE schedules SET active = $1, next_run_at = $2 WHERE id = $3")
                .bind(i64::from(active))
                .bind(next)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n == 1)
        })
    }

    pub async fn delete_schedule(&self, id: i64) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query("DELETE FROM schedules WHERE id = $1").bind(id).execute(pool).await?.rows_affected();
            Ok(n == 1)
        })
    }
}
