//! Who may call the server: users (their argon2id hashes, never a password), the role
//! bindings given through the API, tokens of three kinds (a user's API token with scopes, an
//! agent's, a running job's; only their SHA-256), and the hash-chained audit log.

use slipway_model::time::now_ms;

use crate::row::Columns;
use crate::{Dialect, Store, StoreError, with_pool};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A user's API token: the user's permissions, narrowed by its scopes.
    User,
    /// An agent: takes jobs, reports on them, hosts environments.
    Agent,
    /// A running job's `CI_JOB_TOKEN`: its own project and pipeline, while the job runs.
    Job,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::User => "user",
            TokenKind::Agent => "agent",
            TokenKind::Job => "job",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        [TokenKind::User, TokenKind::Agent, TokenKind::Job].into_iter().find(|r| r.as_str() == s)
    }
}

/// A token to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub hash: String,
    pub name: String,
    pub kind: TokenKind,
    pub user: Option<String>,
    /// `verb:resource` permissions the token is narrowed to; `None`: all its owner's.
    pub scopes: Option<Vec<String>>,
    /// An agent token's agent name.
    pub agent: Option<String>,
    pub expires_at_ms: Option<i64>,
}

/// A token the store knows, found by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// The first 12 hex digits of its hash: how it is named to revoke it.
    pub id: String,
    pub name: String,
    pub kind: TokenKind,
    pub user: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub agent: Option<String>,
    pub run: Option<i64>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    /// A job token whose job no longer runs (ended, canceled, or lost and queued again).
    pub ended: bool,
}

impl TokenRow {
    pub fn expired(&self) -> bool {
        self.expires_at_ms.is_some_and(|e| e <= now_ms())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    /// The argon2id PHC string; `None`: the user signs in with tokens only.
    pub password: Option<String>,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// A role given to a user through the API (`project: None`: on every project).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRow {
    pub user: String,
    pub role: String,
    pub project: Option<String>,
    pub created_by: String,
}

/// An audit entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    pub actor: String,
    pub address: String,
    pub action: String,
    pub target: String,
    /// `allowed`, `denied` or `failed`.
    pub outcome: String,
    pub status: i64,
    /// JSON, secrets redacted.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub entry: NewAudit,
    pub prev_hash: String,
    pub hash: String,
}

/// What an audit listing selects.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub actor: Option<String>,
    /// From this sequence number on.
    pub after_seq: Option<i64>,
    pub limit: i64,
}

/// The hash of an audit entry: SHA-256 over the previous entry's hash and this one's fields,
/// as a JSON array (so no field can bleed into the next).
pub fn audit_hash(prev: &str, seq: i64, at_ms: i64, e: &NewAudit) -> String {
    use sha2::{Digest, Sha256};
    let fields = serde_json::json!([seq, at_ms, e.actor, e.address, e.action, e.target, e.outcome, e.status, e.detail]);
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(fields.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash before the first entry.
pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const TOKEN_COLUMNS: &str = "t.hash, t.name, t.role, t.user_name, t.scopes, t.agent, t.run_id, t.created_at, t.expires_at, t.last_used_at, t.revoked_at, t.job_index";

fn token_from(r: &impl Columns, job_status: Option<String>) -> Option<TokenRow> {
    let hash = r.text("hash");
    let ended = r.opt_i64("job_index").is_some() && job_status.as_deref() != Some("running");
    Some(TokenRow {
        id: hash.chars().take(12).collect(),
        name: r.text("name"),
        kind: TokenKind::parse(&r.text("role"))?,
        user: r.opt_text("user_name"),
        scopes: r.opt_text("scopes").and_then(|s| serde_json::from_str(&s).ok()),
        agent: r.opt_text("agent"),
        run: r.opt_i64("run_id"),
        created_at_ms: r.i64("created_at"),
        expires_at_ms: r.opt_i64("expires_at"),
        last_used_at_ms: r.opt_i64("last_used_at"),
        revoked_at_ms: r.opt_i64("revoked_at"),
        ended,
    })
}

fn user_from(r: &impl Columns) -> UserRow {
    UserRow {
        name: r.text("name"),
        password: r.opt_text("password"),
        created_at_ms: r.i64("created_at"),
        created_by: r.text("created_by"),
    }
}

fn audit_from(r: &impl Columns) -> AuditRow {
    AuditRow {
        seq: r.i64("seq"),
        at_ms: r.i64("at"),
        entry: NewAudit {
            actor: r.text("actor"),
            address: r.text("address"),
            action: r.text("action"),
            target: r.text("target"),
            outcome: r.text("outcome"),
            status: r.i64("status"),
            detail: r.text("detail"),
        },
        prev_hash: r.text("prev_hash"),
        hash: r.text("hash"),
    }
}

impl Store {
    /// Records a token by its hash.
    pub async fn add_token(&self, t: &NewToken) -> Result<(), StoreError> {
        let scopes = t.scopes.as_ref().map(|s| serde_json::to_string(s).expect("strings serialize"));
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO tokens (hash, name, role, user_name, scopes, agent, expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&t.hash)
            .bind(&t.name)
            .bind(t.kind.as_str())
            .bind(&t.user)
            .bind(&scopes)
            .bind(&t.agent)
            .bind(t.expires_at_ms)
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The token with this hash, expired and revoked ones too (the caller says why it is
    /// refused). A job token's `ended` says whether its job no longer runs.
    pub async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query(&format!(
                "SELECT {TOKEN_COLUMNS}, j.status AS job_status
                 FROM tokens t LEFT JOIN jobs j ON j.run_id = t.run_id AND j.idx = t.job_index
                 WHERE t.hash = $1"
            ))
            .bind(hash)
            .fetch_optional(pool)
            .await?;
            Ok(row.and_then(|r| token_from(&r, r.opt_text("job_status"))))
        })
    }

    /// Notes that a token was used, at most once a minute (a write per request would cost).
    pub async fn touch_token(&self, hash: &str) -> Result<(), StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE tokens SET last_used_at = $1 WHERE hash = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(now)
            .bind(hash)
            .bind(now - 60_000)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The API and agent tokens (not jobs'), of one user or all, newest first.
    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens t
                 WHERE t.role <> 'job' AND ($1 IS NULL OR t.user_name = $1) ORDER BY t.created_at DESC, t.hash"
            ))
            .bind(user)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().filter_map(|r| token_from(r, None)).collect())
        })
    }

    /// Revokes the token whose hash starts with `id` (of `user` only, when given); the token
    /// revoked, or `None` when none (or more than one) matches.
    pub async fn revoke_token(&self, id: &str, user: Option<&str>) -> Result<Option<TokenRow>, StoreError> {
        if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let matching: Vec<TokenRow> =
            self.tokens(user).await?.into_iter().filter(|t| t.id.starts_with(&id.to_ascii_lowercase())).collect();
        let [token] = matching.as_slice() else { return Ok(None) };
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE tokens SET revoked_at = $1 WHERE role <> 'job' AND hash LIKE $2 AND revoked_at IS NULL",
            )
            .bind(now_ms())
            .bind(format!("{}%", token.id))
            .execute(pool)
            .await?;
        });
        Ok(Some(token.clone()))
    }

    /// Adds a user; false when one of that name exists.
    pub async fn add_user(&self, name: &str, password: Option<&str>, by: &str) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query(
                "INSERT INTO users (name, password, created_at, created_by) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(password)
            .bind(now_ms())
            .bind(by)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    pub async fn user(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        with_pool!(self, |pool| {
            let row = sqlx::query("SELECT name, password, created_at, created_by FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| user_from(&r)))
        })
    }

    pub async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query("SELECT name, password, created_at, created_by FROM users ORDER BY name")
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(user_from).collect())
        })
    }

    /// Sets (or, with `None`, removes) a user's password hash; false when there is no such user.
    pub async fn set_password(&self, name: &str, password: Option<&str>) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query("UPDATE users SET password = $1 WHERE name = $2")
                .bind(password)
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n == 1)
        })
    }

    /// Deletes a user with its bindings, and revokes its tokens; false when there was none.
    pub async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE user_name = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM bindings WHERE user_name = $1").bind(name).execute(&mut *tx).await?;
            let n =
                sqlx::query("DELETE FROM users WHERE name = $1").bind(name).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// Gives `user` a role; false when it had it.
    pub async fn add_binding(&self, b: &BindingRow) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query(
                "INSERT INTO bindings (user_name, role, project, created_at, created_by) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_name, role, project) DO NOTHING",
            )
            .bind(&b.user)
            .bind(&b.role)
            .bind(b.project.as_deref().unwrap_or(""))
            .bind(now_ms())
            .bind(&b.created_by)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    /// Takes a role away; false when the user did not have it.
    pub async fn remove_binding(&self, user: &str, role: &str, project: Option<&str>) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query("DELETE FROM bindings WHERE user_name = $1 AND role = $2 AND project = $3")
                .bind(user)
                .bind(role)
                .bind(project.unwrap_or(""))
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n == 1)
        })
    }

    /// The bindings of one user, or of all.
    pub async fn bindings(&self, user: Option<&str>) -> Result<Vec<BindingRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT user_name, role, project, created_by FROM bindings
                 WHERE $1 IS NULL OR user_name = $1 ORDER BY user_name, project, role",
            )
            .bind(user)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| BindingRow {
                    user: r.text("user_name"),
                    role: r.text("role"),
                    project: Some(r.text("project")).filter(|p| !p.is_empty()),
                    created_by: r.text("created_by"),
                })
                .collect())
        })
    }

    /// Appends an entry to the audit log, chained to the one before; its sequence number.
    pub async fn append_audit(&self, e: &NewAudit) -> Result<i64, StoreError> {
        let at = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            if let Some(lock) = pool.lock_table("audit") {
                sqlx::query(&lock).execute(&mut *tx).await?;
            }
            let last: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
            let (seq, prev) = match last {
                Some((seq, hash)) => (seq + 1, hash),
                None => (1, AUDIT_GENESIS.to_string()),
            };
            let hash = audit_hash(&prev, seq, at, e);
            sqlx::query(
                "INSERT INTO audit (seq, at, actor, address, action, target, outcome, status, detail, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(seq)
            .bind(at)
            .bind(&e.actor)
            .bind(&e.address)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.outcome)
            .bind(e.status)
            .bind(&e.detail)
            .bind(&prev)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(seq)
        })
    }

    /// The newest audit entries, newest first (one actor's only, when given).
    pub async fn audit_tail(&self, actor: Option<&str>, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT seq, at, actor, address, action, target, outcome, status, detail, prev_hash, hash FROM audit
                 WHERE ($1 IS NULL OR actor = $1) ORDER BY seq DESC LIMIT $2",
            )
            .bind(actor)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(audit_from).collect())
        })
    }

    /// Audit entries in order, as the filter selects.
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT seq, at, actor, address, action, target, outcome, status, detail, prev_hash, hash FROM audit
                 WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR actor = $2) AND ($3 IS NULL OR seq > $3)
                 ORDER BY seq LIMIT $4",
            )
            .bind(f.since_ms)
            .bind(&f.actor)
            .bind(f.after_seq)
            .bind(f.limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(audit_from).collect())
        })
    }
}

/// A secret as the store keeps it: sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub project: String,
    /// `None`: every environment of the project.
    pub environment: Option<String>,
    pub name: String,
    pub key_id: String,
    pub nonce: String,
    pub ciphertext: String,
    pub protected: bool,
    pub file: bool,
    pub set_by: String,
    pub set_at_ms: i64,
}

fn secret_from(r: &impl Columns) -> SecretRow {
    SecretRow {
        project: r.text("project"),
        environment: Some(r.text("environment")).filter(|e| !e.is_empty()),
        name: r.text("name"),
        key_id: r.text("key_id"),
        nonce: r.text("nonce"),
        ciphertext: r.text("ciphertext"),
        protected: r.i64("protected") != 0,
        file: r.i64("file") != 0,
        set_by: r.text("set_by"),
        set_at_ms: r.i64("set_at"),
    }
}

const SECRET_COLUMNS: &str = "project, environment, name, key_id, nonce, ciphertext, protected, file, set_by, set_at";

impl Store {
    /// Sets a secret (replacing one of the same place and name); true when it was new.
    pub async fn put_secret(&self, s: &SecretRow) -> Result<bool, StoreError> {
        let env = s.environment.as_deref().unwrap_or("");
        with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            let existed: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM secrets WHERE project = $1 AND environment = $2 AND name = $3")
                    .bind(&s.project)
                    .bind(env)
                    .bind(&s.name)
                    .fetch_optional(&mut *tx)
                    .await?;
            sqlx::query(
                "INSERT INTO secrets (project, environment, name, key_id, nonce, ciphertext, protected, file, set_by, set_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (project, environment, name) DO UPDATE SET key_id = $4, nonce = $5, ciphertext = $6,
                   protected = $7, file = $8, set_by = $9, set_at = $10",
            )
            .bind(&s.project)
            .bind(env)
            .bind(&s.name)
            .bind(&s.key_id)
            .bind(&s.nonce)
            .bind(&s.ciphertext)
            .bind(i64::from(s.protected))
            .bind(i64::from(s.file))
            .bind(&s.set_by)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(existed.is_none())
        })
    }

    /// The secrets of a project (all projects' when `None`), sealed.
    pub async fn secrets(&self, project: Option<&str>) -> Result<Vec<SecretRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {SECRET_COLUMNS} FROM secrets WHERE $1 IS NULL OR project = $1 ORDER BY project, name, environment"
            ))
            .bind(project)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(secret_from).collect())
        })
    }

    /// Deletes a secret; false when there was none.
    pub async fn delete_secret(
        &self,
        project: &str,
        environment: Option<&str>,
        name: &str,
    ) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let n = sqlx::query("DELETE FROM secrets WHERE project = $1 AND environment = $2 AND name = $3")
                .bind(project)
                .bind(environment.unwrap_or(""))
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n == 1)
        })
    }

    /// Re-seals secrets (a key rotation), all in one transaction.
    pub async fn reseal_secrets(&self, rows: &[SecretRow]) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_with(pool.begin_write()).await?;
            for s in rows {
                sqlx::query(
                    "UPDATE secrets SET key_id = $1, nonce = $2, ciphertext = $3
                     WHERE project = $4 AND environment = $5 AND name = $6",
                )
                .bind(&s.key_id)
                .bind(&s.nonce)
                .bind(&s.ciphertext)
                .bind(&s.project)
                .bind(s.environment.as_deref().unwrap_or(""))
                .bind(&s.name)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
