//! Notifications: the queue of deliveries (one per channel of a receiver, retried until
//! delivered or given up), the dispatcher's state saved with the deliveries it produced (so a
//! restart neither loses nor repeats what was told), and silences.

use slipway_model::time::now_ms;

use crate::row::Columns;
use crate::{Store, StoreError, with_pool};

/// A delivery to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub receiver: String,
    pub channel: String,
    pub group_key: String,
    pub project: Option<String>,
    pub payload: String,
}

/// A delivery as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub receiver: String,
    pub channel: String,
    pub group_key: String,
    pub project: Option<String>,
    /// `queued`, `delivered` or `failed`.
    pub status: String,
    pub payload: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

fn delivery_from(r: &impl Columns) -> Delivery {
    Delivery {
        id: r.i64("id"),
        receiver: r.text("receiver"),
        channel: r.text("channel"),
        group_key: r.text("group_key"),
        project: r.opt_text("project"),
        status: r.text("status"),
        payload: r.text("payload"),
        attempts: r.i64("attempts"),
        next_attempt_at_ms: r.i64("next_attempt_at"),
        last_error: r.opt_text("last_error"),
        created_at_ms: r.i64("created_at"),
        delivered_at_ms: r.opt_i64("delivered_at"),
    }
}

const SELECT: &str = "SELECT id, receiver, channel, group_key, project, status, payload, attempts, next_attempt_at,
                             last_error, created_at, delivered_at FROM deliveries";

/// A silence as the store keeps it (`matchers` as JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceRow {
    pub id: String,
    pub matchers: String,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
    pub created_at_ms: i64,
}

fn silence_from(r: &impl Columns) -> SilenceRow {
    SilenceRow {
        id: r.text("id"),
        matchers: r.text("matchers"),
        starts_at_ms: r.i64("starts_at"),
        ends_at_ms: r.i64("ends_at"),
        created_by: r.text("created_by"),
        comment: r.text("comment"),
        created_at_ms: r.i64("created_at"),
    }
}

impl Store {
    /// Saves the dispatcher's state (`name`) and queues the deliveries it produced, in one
    /// transaction: either both are kept or neither.
    pub async fn queue_deliveries(
        &self,
        state: Option<(&str, &str)>,
        deliveries: &[NewDelivery],
    ) -> Result<Vec<i64>, StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if let Some((name, value)) = state {
                sqlx::query(
                    "INSERT INTO notify_state (name, value, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .bind(name)
                .bind(value)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let mut ids = Vec::new();
            for d in deliveries {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO deliveries (receiver, channel, group_key, project, status, payload, attempts,
                                             next_attempt_at, created_at)
                     VALUES ($1, $2, $3, $4, 'queued', $5, 0, $6, $6) RETURNING id",
                )
                .bind(&d.receiver)
                .bind(&d.channel)
                .bind(&d.group_key)
                .bind(&d.project)
                .bind(&d.payload)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                ids.push(id);
            }
            tx.commit().await?;
            Ok(ids)
        })
    }

    pub async fn notify_state(&self, name: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_scalar("SELECT value FROM notify_state WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Queued deliveries due at `now`, oldest first.
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!("{SELECT} WHERE status = 'queued' AND next_attempt_at <= $1 ORDER BY id LIMIT $2");
        with_pool!(self, |pool| {
            let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(pool).await?;
            Ok(rows.iter().map(delivery_from).collect())
        })
    }

    /// The earliest time a queued delivery is due.
    pub async fn next_delivery_at(&self) -> Result<Option<i64>, StoreError> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'queued'")
                .fetch_one(pool)
                .await?)
        })
    }

    /// Takes a due delivery for one attempt: true when it is still queued, due and at the
    /// attempt `attempts` read with it, and then it is not due again for `lease_ms` (a crash
    /// mid-send retries it after that). A list of due deliveries read just before another
    /// attempt ended is stale; this keeps it from sending the same notification twice.
    pub async fn claim_delivery(&self, id: i64, attempts: i64, lease_ms: i64) -> Result<bool, StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            Ok(sqlx::query(
                "UPDATE deliveries SET next_attempt_at = $1
                 WHERE id = $2 AND status = 'queued' AND attempts = $3 AND next_attempt_at <= $4",
            )
            .bind(now + lease_ms)
            .bind(id)
            .bind(attempts)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// Records an attempt: delivered (`error` none), to be tried again at `retry_at`, or
    /// failed for good (`retry_at` none).
    pub async fn delivery_attempted(
        &self,
        id: i64,
        error: Option<&str>,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let (status, next) = match (error, retry_at) {
            (None, _) => ("delivered", now),
            (Some(_), Some(at)) => ("queued", at),
            (Some(_), None) => ("failed", now),
        };
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2,
                        last_error = COALESCE($3, last_error),
                        delivered_at = CASE WHEN $1 = 'delivered' THEN $4 ELSE delivered_at END
                 WHERE id = $5",
            )
            .bind(status)
            .bind(next)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The newest deliveries first, of `project` (and those of no project) when given.
    pub async fn deliveries(&self, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!("{SELECT} ORDER BY id DESC LIMIT $1");
        with_pool!(self, |pool| {
            let rows = sqlx::query(&sql).bind(limit).fetch_all(pool).await?;
            Ok(rows.iter().map(delivery_from).collect())
        })
    }

    /// Forgets deliveries that ended (delivered or failed) before `before`.
    pub async fn prune_deliveries(&self, before: i64) -> Result<u64, StoreError> {
        with_pool!(self, |pool| {
            Ok(sqlx::query("DELETE FROM deliveries WHERE status <> 'queued' AND next_attempt_at < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    pub async fn add_silence(&self, s: &SilenceRow) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&s.id)
            .bind(&s.matchers)
            .bind(s.starts_at_ms)
            .bind(s.ends_at_ms)
            .bind(&s.created_by)
            .bind(&s.comment)
            .bind(s.created_at_ms)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Every silence that has not ended before `since`, newest first.
    pub async fn silences(&self, since: i64) -> Result<Vec<SilenceRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at FROM silences
                 WHERE ends_at >= $1 ORDER BY created_at DESC, id",
            )
            .bind(since)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(silence_from).collect())
        })
    }

    /// Ends a silence now; false when there is no such silence or it had ended.
    pub async fn expire_silence(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query("UPDATE silences SET ends_at = $1 WHERE id = $2 AND ends_at > $1")
                .bind(now)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n == 1)
        })
    }
}
