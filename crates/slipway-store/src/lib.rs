//! slipway's persistence: releases (immutable identity, an outcome that is filled in), the
//! current release of each environment, deploy locks with leases, the step-by-step deploy
//! journal and approvals. SQLite in the data directory by default (WAL, busy timeout); the
//! only crate that holds SQL, and no SQL type crosses its API, so a PostgreSQL backend can
//! sit behind the same methods.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {}: {source}", .path.display())]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("migrating the store at {}: {source}", .path.display())]
    Migrate { path: PathBuf, source: sqlx::migrate::MigrateError },
    #[error("store: {0}")]
    Query(#[from] sqlx::Error),
    #[error("store: release {0} holds unreadable data: {1}")]
    Corrupt(i64, String),
}

/// One artifact of a release: a binary by checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    /// `os/arch`.
    pub platform: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Waiting for the environment's lock (or an approval).
    Queued,
    Deploying,
    /// Fully out and healthy; the environment's current release.
    Healthy,
    /// Did not become healthy, failed its analysis, or was interrupted; the environment went
    /// back to the release before it.
    Failed,
    /// Was healthy, then replaced by a rollback.
    RolledBack,
    /// A newer deploy replaced it while it was queued.
    Superseded,
    /// Was healthy, then replaced by a newer release.
    Replaced,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Queued => "queued",
            ReleaseStatus::Deploying => "deploying",
            ReleaseStatus::Healthy => "healthy",
            ReleaseStatus::Failed => "failed",
            ReleaseStatus::RolledBack => "rolled_back",
            ReleaseStatus::Superseded => "superseded",
            ReleaseStatus::Replaced => "replaced",
        }
    }

    const ALL: [ReleaseStatus; 7] = [
        ReleaseStatus::Queued,
        ReleaseStatus::Deploying,
        ReleaseStatus::Healthy,
        ReleaseStatus::Failed,
        ReleaseStatus::RolledBack,
        ReleaseStatus::Superseded,
        ReleaseStatus::Replaced,
    ];

    /// The status stored as `s` (the inverse of [`ReleaseStatus::as_str`]).
    fn parse(s: &str) -> Option<ReleaseStatus> {
        ReleaseStatus::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// What a new release is made of.
#[derive(Debug, Clone)]
pub struct NewRelease {
    pub environment: String,
    pub version: String,
    pub artifacts: Vec<Artifact>,
    pub config_hash: String,
    pub config: serde_json::Value,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub actor: String,
    /// deploy | promote | rollback | auto-rollback
    pub reason: String,
    pub source_release: Option<i64>,
    pub status: ReleaseStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub id: i64,
    pub environment: String,
    pub version: String,
    pub artifacts: Vec<Artifact>,
    pub config_hash: String,
    pub config: serde_json::Value,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub actor: String,
    pub reason: String,
    pub source_release: Option<i64>,
    pub status: ReleaseStatus,
    pub status_detail: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

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

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub seq: i64,
    pub name: String,
    pub detail: serde_json::Value,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    pub release: i64,
    pub approver: String,
    pub at_ms: i64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating and migrating) the store in `data_dir/slipway.db`.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("slipway.db");
        let open = |source| StoreError::Open { path: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(|e| open(sqlx::Error::Io(e)))?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // Two commands opening a new store at once must not both migrate it: the first holds
        // this lock while it does.
        let lock_path = data_dir.join("slipway.db.lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| open(sqlx::Error::Io(e)))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| open(sqlx::Error::Io(std::io::Error::other(e))))?
            .map_err(|e| open(sqlx::Error::Io(e)))?;
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(open)?;
        let migrated = sqlx::migrate!("./migrations").run(&pool).await;
        drop(lock);
        migrated.map_err(|source| StoreError::Migrate { path: path.clone(), source })?;
        Ok(Store { pool })
    }

    pub async fn create_release(&self, r: &NewRelease) -> Result<Release, StoreError> {
        let id: i64 = sqlx::query(
            "INSERT INTO releases (environment, version, artifacts, config_hash, config, commit_sha, branch, actor,
                                   reason, source_release, status, created_at, started_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&r.environment)
        .bind(&r.version)
        .bind(serde_json::to_string(&r.artifacts).expect("artifacts serialize"))
        .bind(&r.config_hash)
        .bind(r.config.to_string())
        .bind(&r.commit)
        .bind(&r.branch)
        .bind(&r.actor)
        .bind(&r.reason)
        .bind(r.source_release)
        .bind(r.status.as_str())
        .bind(now_ms())
        .bind((r.status == ReleaseStatus::Deploying).then(now_ms))
        .fetch_one(&self.pool)
        .await?
        .get(0);
        Ok(self.release(id).await?.expect("just inserted"))
    }

    pub async fn release(&self, id: i64) -> Result<Option<Release>, StoreError> {
        let row = sqlx::query("SELECT * FROM releases WHERE id = ?").bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| release_from(&r)).transpose()
    }

    /// Sets a release's outcome. `finished` stamps the end time; `Deploying` stamps the start.
    pub async fn set_status(&self, id: i64, status: ReleaseStatus, detail: Option<&str>) -> Result<(), StoreError> {
        let now = now_ms();
        let finished = !matches!(status, ReleaseStatus::Queued | ReleaseStatus::Deploying);
        sqlx::query(
            "UPDATE releases SET status = ?, status_detail = COALESCE(?, status_detail),
                    started_at = CASE WHEN ? = 'deploying' AND started_at IS NULL THEN ? ELSE started_at END,
                    finished_at = CASE WHEN ? THEN COALESCE(finished_at, ?) ELSE finished_at END
             WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(detail)
        .bind(status.as_str())
        .bind(now)
        .bind(finished && !matches!(status, ReleaseStatus::RolledBack | ReleaseStatus::Replaced))
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Releases of an environment, newest first.
    pub async fn history(&self, environment: &str, limit: i64) -> Result<Vec<Release>, StoreError> {
        let rows = sqlx::query("SELECT * FROM releases WHERE environment = ? ORDER BY id DESC LIMIT ?")
            .bind(environment)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(release_from).collect()
    }

    /// Releases in a state that a deploy process must finish (deploying or queued).
    pub async fn unfinished(&self, environment: &str) -> Result<Vec<Release>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM releases WHERE environment = ? AND status IN ('deploying', 'queued') ORDER BY id",
        )
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(release_from).collect()
    }

    /// The environment's current (last fully deployed) release.
    pub async fn current(&self, environment: &str) -> Result<Option<Release>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT current_release FROM environments WHERE name = ?")
            .bind(environment)
            .fetch_optional(&self.pool)
            .await?
            .flatten();
        match id {
            Some(id) => self.release(id).await,
            None => Ok(None),
        }
    }

    /// Makes `release` the environment's current release; the one before becomes `then`
    /// (replaced or rolled back).
    pub async fn set_current(&self, environment: &str, release: i64, then: ReleaseStatus) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let previous: Option<i64> = sqlx::query_scalar("SELECT current_release FROM environments WHERE name = ?")
            .bind(environment)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
        if let Some(p) = previous.filter(|p| *p != release) {
            sqlx::query("UPDATE releases SET status = ? WHERE id = ? AND status = 'healthy'")
                .bind(then.as_str())
                .bind(p)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO environments (name, current_release, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET current_release = excluded.current_release, updated_at = excluded.updated_at",
        )
        .bind(environment)
        .bind(release)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Environments that have a current release, by name.
    pub async fn environments(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT name, updated_at FROM environments ORDER BY name").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Releases of an environment that were healthy at some point (their artifacts are
    /// known good), newest first.
    pub async fn good_releases(&self, environment: &str) -> Result<Vec<Release>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM releases WHERE environment = ? AND status IN ('healthy', 'replaced', 'rolled_back')
             ORDER BY id DESC",
        )
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(release_from).collect()
    }

    /// The newest release of this version in any environment (to redeploy its artifacts).
    pub async fn find_version(&self, version: &str) -> Result<Option<Release>, StoreError> {
        let row = sqlx::query("SELECT * FROM releases WHERE version = ? ORDER BY id DESC LIMIT 1")
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| release_from(&r)).transpose()
    }

    /// Takes the environment's deploy lock for `lease`, unless someone else holds a live one.
    pub async fn lock(
        &self,
        environment: &str,
        owner: &str,
        release: Option<i64>,
        lease: Duration,
    ) -> Result<Lock, StoreError> {
        let now = now_ms();
        let held = sqlx::query("SELECT owner, release_id, lease_until FROM locks WHERE environment = ?")
            .bind(environment)
            .fetch_optional(&self.pool)
            .await?;
        let done = sqlx::query(
            "INSERT INTO locks (environment, owner, release_id, lease_until) VALUES (?, ?, ?, ?)
             ON CONFLICT (environment) DO UPDATE SET owner = excluded.owner, release_id = excluded.release_id,
                 lease_until = excluded.lease_until
             WHERE locks.lease_until < ? OR locks.owner = excluded.owner",
        )
        .bind(environment)
        .bind(owner)
        .bind(release)
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(match held {
            None if done == 1 => Lock::Acquired,
            Some(row) => {
                let (prev, rel, until): (String, Option<i64>, i64) = (row.get(0), row.get(1), row.get(2));
                if done == 0 {
                    // Someone took it between our read and write, or it is live.
                    let cur = sqlx::query("SELECT owner, release_id, lease_until FROM locks WHERE environment = ?")
                        .bind(environment)
                        .fetch_one(&self.pool)
                        .await?;
                    Lock::Held { owner: cur.get(0), release: cur.get(1), lease_until_ms: cur.get(2) }
                } else if prev == owner || until >= now {
                    Lock::Acquired
                } else {
                    Lock::Recovered { previous_owner: prev, release: rel }
                }
            }
            None => {
                let cur = sqlx::query("SELECT owner, release_id, lease_until FROM locks WHERE environment = ?")
                    .bind(environment)
                    .fetch_one(&self.pool)
                    .await?;
                Lock::Held { owner: cur.get(0), release: cur.get(1), lease_until_ms: cur.get(2) }
            }
        })
    }

    /// Extends a held lease; false when the lock is no longer ours.
    pub async fn renew(&self, environment: &str, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE locks SET lease_until = ? WHERE environment = ? AND owner = ?")
            .bind(now_ms() + lease.as_millis() as i64)
            .bind(environment)
            .bind(owner)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    pub async fn unlock(&self, environment: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM locks WHERE environment = ? AND owner = ?")
            .bind(environment)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends a step to a release's journal (written before the step acts).
    pub async fn record_step(&self, release: i64, name: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO steps (release_id, seq, name, detail, at)
             VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE release_id = ?), ?, ?, ?)",
        )
        .bind(release)
        .bind(release)
        .bind(name)
        .bind(detail.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn steps(&self, release: i64) -> Result<Vec<Step>, StoreError> {
        let rows = sqlx::query("SELECT seq, name, detail, at FROM steps WHERE release_id = ? ORDER BY seq")
            .bind(release)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Step {
                seq: r.get(0),
                name: r.get(1),
                detail: serde_json::from_str(r.get::<&str, _>(2)).unwrap_or(serde_json::Value::Null),
                at_ms: r.get(3),
            })
            .collect())
    }

    /// Records an approval; approving twice is the same as once.
    pub async fn approve(&self, environment: &str, release: i64, approver: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO approvals (environment, release_id, approver, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (release_id, approver) DO NOTHING",
        )
        .bind(environment)
        .bind(release)
        .bind(approver)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn approvals(&self, release: i64) -> Result<Vec<Approval>, StoreError> {
        let rows =
            sqlx::query("SELECT release_id, approver, created_at FROM approvals WHERE release_id = ? ORDER BY id")
                .bind(release)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| Approval { release: r.get(0), approver: r.get(1), at_ms: r.get(2) }).collect())
    }
}

fn release_from(r: &SqliteRow) -> Result<Release, StoreError> {
    let id: i64 = r.get("id");
    let corrupt = |what: &str| StoreError::Corrupt(id, what.to_string());
    let status: String = r.get("status");
    Ok(Release {
        id,
        environment: r.get("environment"),
        version: r.get("version"),
        artifacts: serde_json::from_str(r.get::<&str, _>("artifacts")).map_err(|e| corrupt(&e.to_string()))?,
        config_hash: r.get("config_hash"),
        config: serde_json::from_str(r.get::<&str, _>("config")).map_err(|e| corrupt(&e.to_string()))?,
        commit: r.get("commit_sha"),
        branch: r.get("branch"),
        actor: r.get("actor"),
        reason: r.get("reason"),
        source_release: r.get("source_release"),
        status: ReleaseStatus::parse(&status).ok_or_else(|| corrupt(&format!("status `{status}`")))?,
        status_detail: r.get("status_detail"),
        created_at_ms: r.get("created_at"),
        started_at_ms: r.get("started_at"),
        finished_at_ms: r.get("finished_at"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(env: &str, version: &str) -> NewRelease {
        NewRelease {
            environment: env.into(),
            version: version.into(),
            artifacts: vec![Artifact {
                name: "app".into(),
                platform: "linux/amd64".into(),
                sha256: "ab".into(),
                size: 1,
            }],
            config_hash: "h".into(),
            config: serde_json::json!({"instances": 3}),
            commit: Some("c0ffee".into()),
            branch: Some("main".into()),
            actor: "tester".into(),
            reason: "deploy".into(),
            source_release: None,
            status: ReleaseStatus::Deploying,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn releases_history_and_current() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        let a = store.create_release(&new("dev", "v1")).await.expect("create");
        store.set_status(a.id, ReleaseStatus::Healthy, None).await.expect("status");
        store.set_current("dev", a.id, ReleaseStatus::Replaced).await.expect("current");
        let b = store.create_release(&new("dev", "v2")).await.expect("create");
        store.set_status(b.id, ReleaseStatus::Healthy, None).await.expect("status");
        store.set_current("dev", b.id, ReleaseStatus::Replaced).await.expect("current");
        let h = store.history("dev", 10).await.expect("history");
        assert_eq!(
            h.iter().map(|r| (r.version.as_str(), r.status)).collect::<Vec<_>>(),
            [("v2", ReleaseStatus::Healthy), ("v1", ReleaseStatus::Replaced)]
        );
        assert_eq!(store.current("dev").await.expect("current").map(|r| r.id), Some(b.id));
        assert_eq!(h[1].artifacts[0].sha256, "ab");
        assert!(h[1].finished_at_ms.is_some());
        assert_eq!(store.find_version("v1").await.expect("find").map(|r| r.id), Some(a.id));
        assert_eq!(store.good_releases("dev").await.expect("good").len(), 2);
        // Reopening runs no migration twice and keeps everything.
        drop(store);
        let store = Store::open(dir.path()).await.expect("reopen");
        assert_eq!(store.history("dev", 10).await.expect("history").len(), 2);
    }

    #[test]
    fn statuses_read_back_as_written_and_as_the_api_shows_them() {
        for status in ReleaseStatus::ALL {
            assert_eq!(ReleaseStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert_eq!(ReleaseStatus::parse("gone"), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn locks_expire_and_are_recovered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        let lease = Duration::from_millis(200);
        assert_eq!(store.lock("dev", "a", Some(1), lease).await.expect("lock"), Lock::Acquired);
        assert!(
            matches!(store.lock("dev", "b", Some(2), lease).await.expect("lock"), Lock::Held { owner, .. } if owner == "a")
        );
        assert!(store.renew("dev", "a", lease).await.expect("renew"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            store.lock("dev", "b", Some(2), lease).await.expect("lock"),
            Lock::Recovered { previous_owner: "a".into(), release: Some(1) }
        );
        assert!(!store.renew("dev", "a", lease).await.expect("renew"), "a lost the lock");
        store.unlock("dev", "b").await.expect("unlock");
        assert_eq!(store.lock("dev", "a", None, lease).await.expect("lock"), Lock::Acquired);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn journal_and_approvals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        let r = store.create_release(&new("prod", "v1")).await.expect("create");
        store.record_step(r.id, "scale", &serde_json::json!({"old": 3, "new": 1})).await.expect("step");
        store.record_step(r.id, "scale", &serde_json::json!({"old": 2, "new": 2})).await.expect("step");
        let steps = store.steps(r.id).await.expect("steps");
        assert_eq!(steps.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(steps[1].detail["new"], 2);
        store.approve("prod", r.id, "alice").await.expect("approve");
        store.approve("prod", r.id, "alice").await.expect("approve twice");
        assert_eq!(store.approvals(r.id).await.expect("approvals").len(), 1);
    }
}
