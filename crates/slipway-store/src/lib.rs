//! slipway's persistence, behind one API on two databases: SQLite in the data directory (the
//! embedded default: WAL, busy timeout) and PostgreSQL (`postgres://…`, for a server that
//! outgrows one machine). It holds releases (immutable identity, an outcome filled in), the
//! current release of each environment, deploy locks with leases, the step-by-step deploy
//! journal, approvals, and pipeline runs with their jobs and job leases.
//!
//! The only crate with SQL, and no SQL type crosses its API. Every query is written once
//! (PostgreSQL's `$N` placeholders, which SQLite reads too) and run on either pool by
//! [`with_pool!`]; where the databases differ (taking a row lock) the difference is one
//! constant. Locks and leases are taken inside transactions (`BEGIN IMMEDIATE` on SQLite,
//! `SELECT … FOR UPDATE` and `SKIP LOCKED` on PostgreSQL), so two processes can never both
//! hold one.

mod access;
mod gitops;
mod locks;
mod notify;
mod releases;
mod reports;
mod row;
mod runs;
mod schedules;
mod server;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use access::{
    AUDIT_GENESIS, AuditFilter, AuditRow, BindingRow, NewAudit, NewToken, SecretRow, TokenKind, TokenRow, UserRow,
    audit_hash,
};
pub use gitops::{AppRow, AppSync};
pub use locks::Lock;
pub use notify::{Delivery, NewDelivery, SilenceRow};
pub use reports::{CoverageRow, PackageCoverage, TestCase, TestCaseRow};
pub use runs::{ClaimedJob, JobRow, JobToken, NewRun, RunId, RunRow};
pub use schedules::Schedule;
pub use server::{JobStats, Project};
pub use slipway_model::release::{Approval, Artifact, JournalStep as Step, NewRelease, Release, ReleaseStatus};
pub use slipway_model::time::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {where_}: {source}")]
    Open { where_: String, source: sqlx::Error },
    #[error("migrating the store at {where_}: {source}")]
    Migrate { where_: String, source: sqlx::migrate::MigrateError },
    #[error("`{0}` is not a store address: use a directory (SQLite), sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
    #[error("store: {0}")]
    Query(#[from] sqlx::Error),
    #[error("store: {what} {id} holds unreadable data: {why}")]
    Corrupt { what: &'static str, id: i64, why: String },
}

impl StoreError {
    fn corrupt(what: &'static str, id: i64, why: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt { what, id, why: why.to_string() }
    }

    /// Whether the database could not write: a full disk or quota, an I/O error.
    pub fn is_disk_trouble(&self) -> bool {
        let e = match self {
            StoreError::Open { source, .. } | StoreError::Query(source) => source,
            StoreError::Migrate { source: sqlx::migrate::MigrateError::Execute(source), .. } => source,
            _ => return false,
        };
        match e {
            sqlx::Error::Database(db) => {
                let code = db.code();
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLite result codes: the primary code is the low byte (10 IOERR, 13 FULL).
                    code.and_then(|c| c.parse::<i64>().ok()).is_some_and(|c| matches!(c & 0xff, 10 | 13))
                } else {
                    // PostgreSQL: disk_full, io_error.
                    matches!(code.as_deref(), Some("53100" | "58030"))
                }
            }
            // ENOSPC, EDQUOT.
            sqlx::Error::Io(io) => matches!(io.raw_os_error(), Some(28 | 122)),
            _ => false,
        }
    }

    /// What to do about it: for disk trouble, the file system holding the store, its free
    /// space and what may be cleaned.
    pub fn hint(&self) -> Option<String> {
        if let StoreError::Open { where_, source: sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) } = self
            && where_.starts_with("postgres")
        {
            return Some(
                "PostgreSQL does not answer there: check that it runs and listens on that address (`pg_isready -h HOST -p PORT`), and that the URL's user and database exist".into(),
            );
        }
        if !self.is_disk_trouble() {
            return None;
        }
        let store = SQLITE_FILE.lock().ok().and_then(|f| f.clone());
        let Some(store) = store else {
            return Some("the database server could not write: check its disk (`df -h`) and its log".into());
        };
        let room = match slipway_sys::limits::disk_space(&store) {
            Some(d) => format!(
                "{} is on the file system at {}{}, which has {} free of {}",
                store.parent().unwrap_or(&store).display(),
                d.mount.display(),
                if d.fs_type.is_empty() { String::new() } else { format!(" ({})", d.fs_type) },
                slipway_sys::limits::human_bytes(d.free),
                slipway_sys::limits::human_bytes(d.total)
            ),
            None => format!("{} may be full", store.parent().unwrap_or(&store).display()),
        };
        Some(format!(
            "the store could not write to disk: {room}. Free space there — old run records (`.slipway/runs/` in projects), rotated instance logs (`agent/logs/*.log.N`), artifacts and images of old releases (`artifacts/`) — then run the command again"
        ))
    }
}

/// The SQLite file this process opened last, for disk-trouble hints.
static SQLITE_FILE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's pool, whichever database it is: the body is
/// compiled once per backend, so a query is written once and type-checked for both.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite($pool) => $body,
            $crate::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Where the two databases' SQL differs: how a writing transaction starts (`BEGIN IMMEDIATE`
/// takes SQLite's write lock at once, so two writers queue instead of one failing when it
/// upgrades its read) and how a read locks the rows it returns (SQLite's whole-database write
/// lock already covers them).
pub(crate) trait Dialect {
    fn begin_write(&self) -> &'static str;
    /// Appended to a `SELECT` whose rows the transaction will update.
    fn for_update(&self) -> &'static str;
    /// Appended to a `SELECT` that takes the first row of `table` nobody else is taking (the
    /// other tables it joins stay unlocked, so takers of other rows are not held up).
    fn skip_locked(&self, table: &str) -> String;
    /// A statement that makes writers of `table` queue behind this transaction, where
    /// `begin_write` does not already (appending to a hash chain).
    fn lock_table(&self, table: &str) -> Option<String>;
}

impl Dialect for SqlitePool {
    fn begin_write(&self) -> &'static str {
        "BEGIN IMMEDIATE"
    }
    fn for_update(&self) -> &'static str {
        ""
    }
    fn skip_locked(&self, _table: &str) -> String {
        String::new()
    }
    fn lock_table(&self, _table: &str) -> Option<String> {
        None
    }
}

impl Dialect for PgPool {
    fn begin_write(&self) -> &'static str {
        "BEGIN"
    }
    fn for_update(&self) -> &'static str {
        " FOR UPDATE"
    }
    fn skip_locked(&self, table: &str) -> String {
        format!(" FOR UPDATE OF {table} SKIP LOCKED")
    }
    fn lock_table(&self, table: &str) -> Option<String> {
        Some(format!("LOCK TABLE {table} IN EXCLUSIVE MODE"))
    }
}

/// A database address without its password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (auth, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let auth = match auth.rsplit_once('@') {
        Some((creds, host)) => match creds.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => auth.to_string(),
        },
        None => auth.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| if kv.starts_with("password=") { "password=***".to_string() } else { kv.to_string() })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{auth}{tail}")
}

#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Opens (creating and migrating) the SQLite store in `data_dir/slipway.db`.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_sqlite_file(&data_dir.join("slipway.db")).await
    }

    /// Opens the store at `url`: `postgres://…` (or `postgresql://…`), `sqlite://PATH`, or a
    /// plain directory (its `slipway.db`).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Store::open_postgres(url).await;
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Store::open_sqlite_file(Path::new(path)).await;
        }
        if url.contains("://") {
            return Err(StoreError::Url(url.to_string()));
        }
        Store::open(Path::new(url)).await
    }

    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    async fn open_sqlite_file(path: &Path) -> Result<Store, StoreError> {
        if let Ok(mut f) = SQLITE_FILE.lock() {
            *f = Some(path.to_path_buf());
        }
        let where_ = path.display().to_string();
        let open = |source| StoreError::Open { where_: where_.clone(), source };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| open(sqlx::Error::Io(e)))?;
        // The store holds release configurations: its owner's only. SQLite gives its WAL and
        // shared-memory files the database file's mode, so creating that one 0600 is enough.
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
            match created {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(open(sqlx::Error::Io(e))),
            }
        }
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // Two commands opening a new store at once must not both migrate it: the first holds
        // this lock while it does.
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&lock_path)
        }
        .map_err(|e| open(sqlx::Error::Io(e)))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| open(sqlx::Error::Io(std::io::Error::other(e))))?
            .map_err(|e| open(sqlx::Error::Io(e)))?;
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(open)?;
        let migrated = SQLITE_MIGRATIONS.run(&pool).await;
        drop(lock);
        migrated.map_err(|source| StoreError::Migrate { where_, source })?;
        Ok(Store { backend: Backend::Sqlite(pool) })
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let where_ = redact(url);
        let open = |source| StoreError::Open { where_: where_.clone(), source };
        let options = PgConnectOptions::from_str(url).map_err(open)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(open)?;
        // sqlx takes an advisory lock while it migrates, so two servers starting at once
        // migrate once.
        POSTGRES_MIGRATIONS.run(&pool).await.map_err(|source| StoreError::Migrate { where_, source })?;
        Ok(Store { backend: Backend::Postgres(pool) })
    }

    /// Closes the pool (waits for connections in use to come back).
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}

#[cfg(test)]
pub(crate) mod tests;
