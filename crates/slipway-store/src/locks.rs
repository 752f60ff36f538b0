//! Deploy locks: one holder per environment, with a lease the holder renews; a holder that
//! died is recovered from once its lease ran out. Taken in a transaction that locks the row
//! (PostgreSQL) or the database (SQLite), so two processes can never both hold one.

use std::time::Duration;

use slipway_model::time::now_ms;

use crate::{Dialect as _, Store, StoreError, with_pool};

/// The result of trying to take an environment's deploy lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    Acquired,
    /// The lock's lease had run out (its holder crashed or hung): taken over.
    Recovered {
        previous_owner: String,
        release: Option<i64>,
    },
    Held {
        owner: String,
        release: Option<i64>,
        lease_until_ms: i64,
    },
}

impl Store {
    /// Takes the environment's deploy lock for `lease`, unless someone else holds a live one.
    /// Taking a lock one already holds renews it.
    pub async fn lock(
        &self,
        environment: &str,
        owner: &str,
        release: Option<i64>,
        lease: Duration,
    ) -> Result<Lock, StoreError> {
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            // A free environment has no row: insert ours. A concurrent insert waits for the
            // other transaction and then does nothing.
            let inserted = sqlx::query(
                "INSERT INTO locks (environment, owner, release_id, lease_until) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (environment) DO NOTHING",
            )
            .bind(environment)
            .bind(owner)
            .bind(release)
            .bind(until)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                tx.commit().await?;
                return Ok(Lock::Acquired);
            }
            let sql =
                format!("SELECT owner, release_id, lease_until FROM locks WHERE environment = $1{}", pool.for_update());
            let (held_by, held_release, held_until): (String, Option<i64>, i64) =
                sqlx::query_as(&sql).bind(environment).fetch_one(&mut *tx).await?;
            let result = if held_by == owner {
                Lock::Acquired
            } else if held_until >= now {
                return Ok(Lock::Held { owner: held_by, release: held_release, lease_until_ms: held_until });
            } else {
                Lock::Recovered { previous_owner: held_by, release: held_release }
            };
            sqlx::query("UPDATE locks SET owner = $1, release_id = $2, lease_until = $3 WHERE environment = $4")
                .bind(owner)
                .bind(release)
                .bind(until)
                .bind(environment)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(result)
        })
    }

    /// Extends a held lease; false when the lock is no longer ours.
    pub async fn renew(&self, environment: &str, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        let until = now_ms() + lease.as_millis() as i64;
        with_pool!(self, |pool| {
            let n = sqlx::query("UPDATE locks SET lease_until = $1 WHERE environment = $2 AND owner = $3")
                .bind(until)
                .bind(environment)
                .bind(owner)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n == 1)
        })
    }

    /// Gives the lock up (only when it is ours).
    pub async fn unlock(&self, environment: &str, owner: &str) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM locks WHERE environment = $1 AND owner = $2")
                .bind(environment)
                .bind(owner)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Who holds the environment's lock, if anyone does with a live lease.
    pub async fn lock_holder(&self, environment: &str) -> Result<Option<(String, Option<i64>)>, StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let row: Option<(String, Option<i64>)> =
                sqlx::query_as("SELECT owner, release_id FROM locks WHERE environment = $1 AND lease_until >= $2")
                    .bind(environment)
                    .bind(now)
                    .fetch_optional(pool)
                    .await?;
            Ok(row)
        })
    }
}
