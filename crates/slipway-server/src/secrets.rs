//! Secrets at rest and on their way to jobs: values sealed with XChaCha20-Poly1305 under the
//! key file `secrets.key` in the data directory (made at the first start, 0600), bound to
//! their project, environment and name (the associated data), never returned by the API
//! once written; a job gets those of its project (and its environment), protected ones only
//! in pipelines of protected refs, and the agent masks every one of them in its output.
//! Group secrets (`group:team`) reach every project under `team/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use slipway_api::server::{ApiErrorBody, JobSecret, NewSecret, SecretView};
use slipway_model::time::rfc3339;
use slipway_store::SecretRow;

use crate::access::{Caller, audited};
use crate::api::body;
use crate::{ServerError, State};

type S = AxState<Arc<State>>;

/// Shortest value a secret may have: shorter ones would mask ordinary output.
pub const MIN_LEN: usize = 8;
/// Largest value (GitLab's limit for a variable is 10,000 characters; files are larger).
pub const MAX_LEN: usize = 64 * 1024;

/// The keys secrets are sealed with: the current one first, then older ones a rotation has
/// not finished with.
pub struct Vault {
    path: PathBuf,
    keys: std::sync::RwLock<Vec<(String, [u8; 32])>>,
}

fn key_id(key: &[u8; 32]) -> String {
    Sha256::digest(key).iter().take(4).map(|b| format!("{b:02x}")).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.len()
        .is_multiple_of(2)
        .then(|| (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect())
        .flatten()
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Io { what: what.display().to_string(), source }
}

impl Vault {
    /// Opens the key file, making it (0600) on the first start.
    pub fn open(data_dir: &Path) -> Result<Vault, ServerError> {
        let path = data_dir.join("secrets.key");
        if !path.exists() {
            let key = new_key()?;
            write_keys(&path, &[(key_id(&key), key)])?;
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#')) {
            let bad = || ServerError::Input(format!("{}:{}: not a key (64 hex digits)", path.display(), n + 1), None);
            let bytes: [u8; 32] = unhex(line.trim()).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
            keys.push((key_id(&bytes), bytes));
        }
        if keys.is_empty() {
            return Err(ServerError::Input(format!("{} holds no key", path.display()), None));
        }
        Ok(Vault { path, keys: std::sync::RwLock::new(keys) })
    }

    fn aad(project: &str, environment: Option<&str>, name: &str) -> Vec<u8> {
        format!("slipway secret\0{project}\0{}\0{name}", environment.unwrap_or("")).into_bytes()
    }

    /// Seals `value` for its place: (key id, nonce, ciphertext), hex.
    pub fn seal(
        &self,
        project: &str,
        environment: Option<&str>,
        name: &str,
        value: &[u8],
    ) -> Result<(String, String, String), ServerError> {
        let (id, key) = self.keys.read().expect("vault lock")[0].clone();
        let nonce = slipway_sys::whoami::random_bytes(24).map_err(io(Path::new("/dev/urandom")))?;
        let cipher = XChaCha20Poly1305::new((&key).into());
        let aad = Vault::aad(project, environment, name);
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: value, aad: &aad })
            .map_err(|_| ServerError::Input("cannot seal the secret".into(), None))?;
        Ok((id, hex(&nonce), hex(&ct)))
    }

    /// The value of a sealed secret; an error names the secret when it does not open (another
    /// key file, or a changed row).
    pub fn open_secret(&self, s: &SecretRow) -> Result<Vec<u8>, String> {
        let keys = self.keys.read().expect("vault lock");
        let Some((_, key)) = keys.iter().find(|(id, _)| *id == s.key_id) else {
            return Err(format!(
                "secret `{}` of `{}` was sealed with key {}, which {} does not hold",
                s.name,
                s.project,
                s.key_id,
                self.path.display()
            ));
        };
        let (Some(nonce), Some(ct)) = (unhex(&s.nonce), unhex(&s.ciphertext)) else {
            return Err(format!("secret `{}` of `{}` is unreadable", s.name, s.project));
        };
        if nonce.len() != 24 {
            return Err(format!("secret `{}` of `{}` is unreadable", s.name, s.project));
        }
        let cipher = XChaCha20Poly1305::new(key.into());
        let aad = Vault::aad(&s.project, s.environment.as_deref(), &s.name);
        cipher
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: &ct, aad: &aad })
            .map_err(|_| format!("secret `{}` of `{}` does not open: it was changed, or moved", s.name, s.project))
    }

    /// Rotates: a new key first in the file (the old ones kept), every secret re-sealed with it
    /// in one transaction, then the old keys dropped. A crash at any point leaves a file that
    /// opens every row. The number of secrets re-sealed.
    pub async fn rotate(&self, store: &slipway_store::Store) -> Result<usize, ServerError> {
        let new = new_key()?;
        let id = key_id(&new);
        let mut keys = self.keys.read().expect("vault lock").clone();
        keys.insert(0, (id.clone(), new));
        write_keys(&self.path, &keys)?;
        *self.keys.write().expect("vault lock") = keys;
        let mut rows = store.secrets(None).await?;
        for r in &mut rows {
            let value = self.open_secret(r).map_err(ServerError::Conflict)?;
            let (k, n, c) = self.seal(&r.project, r.environment.as_deref(), &r.name, &value)?;
            (r.key_id, r.nonce, r.ciphertext) = (k, n, c);
        }
        store.reseal_secrets(&rows).await?;
        let only = vec![(id, new)];
        write_keys(&self.path, &only)?;
        *self.keys.write().expect("vault lock") = only;
        Ok(rows.len())
    }
}

fn new_key() -> Result<[u8; 32], ServerError> {
    let bytes = slipway_sys::whoami::random_bytes(32).map_err(io(Path::new("/dev/urandom")))?;
    Ok(bytes.try_into().expect("32 bytes"))
}

/// Writes the key file whole (a temporary file renamed over it), 0600.
fn write_keys(path: &Path, keys: &[(String, [u8; 32])]) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("key.tmp");
    let mut text = String::from("# slipway's secret keys (the first seals; keep this file private and backed up)\n");
    for (_, k) in keys {
        text.push_str(&hex(k));
        text.push('\n');
    }
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Secret names: a variable's grammar (letters, digits, `_`, not starting with a digit).
fn check_name(name: &str) -> Result<(), ServerError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    match ok {
        true => Ok(()),
        false => Err(ServerError::Input(
            format!(
                "`{}` is not a variable name: letters, digits and `_`, not starting with a digit",
                name.escape_debug()
            ),
            Some("name".into()),
        )),
    }
}

fn view(r: &SecretRow) -> SecretView {
    SecretView {
        name: r.name.clone(),
        environment: r.environment.clone(),
        protected: r.protected,
        file: r.file,
        set_by: r.set_by.clone(),
        set_at: rfc3339(r.set_at_ms),
    }
}

async fn project_exists(s: &State, name: &str) -> Result<(), ServerError> {
    s.store.project(name).await?.map(drop).ok_or_else(|| ServerError::NotFound(format!("project `{name}`")))
}

#[utoipa::path(get, path = "/api/v1/projects/{name}/secrets", tag = "secrets", summary = "A project's secrets: names and scopes, never values", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)")), responses((status = 200, body = [SecretView]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn list(AxState(s): S, UrlPath(name): UrlPath<String>) -> Result<Response, ServerError> {
    project_exists(&s, &name).await?;
    let list: Vec<SecretView> = s.store.secrets(Some(&name)).await?.iter().map(view).collect();
    Ok(axum::Json(list).into_response())
}

#[utoipa::path(put, path = "/api/v1/projects/{name}/secrets/{secret}", tag = "secrets", summary = "Set a secret (its value is never shown again)", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("secret" = String, Path, description = "The variable name jobs see")), request_body = NewSecret, responses((status = 201, description = "Made", body = SecretView), (status = 200, description = "Replaced", body = SecretView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn put(
    AxState(s): S,
    who: Caller,
    UrlPath((name, secret)): UrlPath<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    project_exists(&s, &name).await?;
    set(&s, &who, name, secret, bytes).await
}

/// Sets a secret of `name`: a project, or `group:G` for every project under `G/`.
async fn set(s: &State, who: &Caller, name: String, secret: String, bytes: Bytes) -> Result<Response, ServerError> {
    check_name(&secret)?;
    let n: NewSecret = body(&bytes)?;
    if n.value.len() < MIN_LEN {
        return Err(ServerError::Input(
            format!("a secret needs at least {MIN_LEN} bytes, so that masking it does not mask ordinary output"),
            Some("value".into()),
        ));
    }
    if n.value.len() > MAX_LEN {
        return Err(ServerError::Input(format!("a secret may have at most {MAX_LEN} bytes"), Some("value".into())));
    }
    if let Some(env) = &n.environment {
        slipway_model::names::check_environment(env)
            .map_err(|why| ServerError::Input(why, Some("environment".into())))?;
    }
    let before = s
        .store
        .secrets(Some(&name))
        .await?
        .iter()
        .find(|r| r.name == secret && r.environment == n.environment)
        .map(|r| serde_json::to_value(view(r)).unwrap_or_default());
    let (key_id, nonce, ciphertext) = s.vault.seal(&name, n.environment.as_deref(), &secret, n.value.as_bytes())?;
    let row = SecretRow {
        project: name.clone(),
        environment: n.environment.clone(),
        name: secret.clone(),
        key_id,
        nonce,
        ciphertext,
        protected: n.protected,
        file: n.file,
        set_by: who.actor(),
        set_at_ms: 0,
    };
    let new = s.store.put_secret(&row).await?;
    let saved = s
        .store
        .secrets(Some(&name))
        .await?
        .into_iter()
        .find(|r| r.name == secret && r.environment == n.environment)
        .ok_or_else(|| ServerError::NotFound(format!("secret `{secret}`")))?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    // The audit log says which secret changed, never to what.
    let detail = serde_json::json!({
        "secret": secret,
        "value": "[REDACTED]",
        "before": before,
        "after": serde_json::to_value(view(&saved)).unwrap_or_default(),
    });
    Ok(audited((status, axum::Json(view(&saved))), detail))
}

#[derive(serde::Deserialize, Default)]
pub struct DeleteQuery {
    environment: Option<String>,
}

#[utoipa::path(delete, path = "/api/v1/projects/{name}/secrets/{secret}", tag = "secrets", summary = "Delete a secret", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("secret" = String, Path, description = "The variable name"), ("environment" = Option<String>, Query, description = "The environment's secret of that name")), responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn delete(
    AxState(s): S,
    UrlPath((name, secret)): UrlPath<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, ServerError> {
    project_exists(&s, &name).await?;
    remove(&s, name, secret, q).await
}

async fn remove(s: &State, name: String, secret: String, q: DeleteQuery) -> Result<Response, ServerError> {
    match s.store.delete_secret(&name, q.environment.as_deref(), &secret).await? {
        true => {
            Ok(audited(StatusCode::NO_CONTENT, serde_json::json!({"secret": secret, "environment": q.environment})))
        }
        false => Err(ServerError::NotFound(format!("secret `{secret}` of `{name}`"))),
    }
}

/// A group: the leading parts of project names (`team` holds `team/app` and `team/web/api`).
fn group_place(group: &str) -> Result<String, ServerError> {
    let ok = !group.is_empty()
        && group.len() <= 100
        && group.split('/').all(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    match ok {
        true => Ok(format!("group:{group}")),
        false => Err(ServerError::Input(
            format!("`{group}` is not a group: the leading parts of project names (`team` for `team/app`)"),
            Some("group".into()),
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/groups/{group}/secrets", tag = "secrets", summary = "A group's secrets (every project under `group/`): names and scopes, never values", params(("group" = String, Path, description = "The group (`team`, or `team%2Fweb`)")), responses((status = 200, body = [SecretView]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn group_list(AxState(s): S, UrlPath(group): UrlPath<String>) -> Result<Response, ServerError> {
    let place = group_place(&group)?;
    let list: Vec<SecretView> = s.store.secrets(Some(&place)).await?.iter().map(view).collect();
    Ok(axum::Json(list).into_response())
}

#[utoipa::path(put, path = "/api/v1/groups/{group}/secrets/{secret}", tag = "secrets", summary = "Set a secret of every project under `group/`", params(("group" = String, Path, description = "The group (`team`, or `team%2Fweb`)"), ("secret" = String, Path, description = "The variable name jobs see")), request_body = NewSecret, responses((status = 201, description = "Made", body = SecretView), (status = 200, description = "Replaced", body = SecretView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn group_put(
    AxState(s): S,
    who: Caller,
    UrlPath((group, secret)): UrlPath<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    let place = group_place(&group)?;
    set(&s, &who, place, secret, bytes).await
}

#[utoipa::path(delete, path = "/api/v1/groups/{group}/secrets/{secret}", tag = "secrets", summary = "Delete a group's secret", params(("group" = String, Path, description = "The group"), ("secret" = String, Path, description = "The variable name"), ("environment" = Option<String>, Query, description = "The environment's secret of that name")), responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn group_delete(
    AxState(s): S,
    UrlPath((group, secret)): UrlPath<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, ServerError> {
    let place = group_place(&group)?;
    remove(&s, place, secret, q).await
}

#[utoipa::path(post, path = "/api/v1/secrets/rotate-key", tag = "secrets", summary = "Seal every secret with a new key", responses((status = 200, description = "How many were re-sealed"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn rotate(AxState(s): S) -> Result<Response, ServerError> {
    let n = s.vault.rotate(&s.store).await?;
    Ok(audited(axum::Json(serde_json::json!({"resealed": n})), serde_json::json!({"resealed": n})))
}

/// The secrets job `environment` of a pipeline of `project` gets: the project's, an
/// environment's own replacing one of the same name; protected ones only for protected refs.
pub async fn for_job(
    s: &State,
    project: &str,
    environment: Option<&str>,
    protected_ref: bool,
) -> Result<Vec<JobSecret>, ServerError> {
    // The groups around the project, outermost first, then the project: the nearer one
    // replaces a secret of the same name, and in each an environment's own replaces the
    // every-environment one.
    let parts: Vec<&str> = project.split('/').collect();
    let mut places: Vec<String> = (1..parts.len()).map(|n| format!("group:{}", parts[..n].join("/"))).collect();
    places.push(project.to_string());
    let mut rows = Vec::new();
    for place in &places {
        rows.extend(s.store.secrets(Some(place)).await?);
    }
    let mut out: Vec<JobSecret> = Vec::new();
    let mut chosen: Vec<&SecretRow> = rows
        .iter()
        .filter(|r| r.environment.is_none() || r.environment.as_deref() == environment)
        .filter(|r| protected_ref || !r.protected)
        .collect();
    chosen.sort_by_key(|r| (places.iter().position(|p| *p == r.project), r.environment.is_some()));
    for r in chosen {
        let value = s.vault.open_secret(r).map_err(ServerError::Conflict)?;
        let value =
            String::from_utf8(value).map_err(|_| ServerError::Conflict(format!("secret `{}` is not UTF-8", r.name)))?;
        out.retain(|o| o.name != r.name);
        out.push(JobSecret { name: r.name.clone(), value, file: r.file });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &Vault, project: &str, name: &str, value: &str) -> SecretRow {
        let (key_id, nonce, ciphertext) = v.seal(project, None, name, value.as_bytes()).unwrap();
        SecretRow {
            project: project.into(),
            environment: None,
            name: name.into(),
            key_id,
            nonce,
            ciphertext,
            protected: false,
            file: false,
            set_by: "t".into(),
            set_at_ms: 0,
        }
    }

    #[test]
    fn sealed_secrets_open_only_in_their_place_and_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let r = row(&v, "shop", "TOKEN", "hunter2hunter2");
        assert!(!r.ciphertext.contains(&hex(b"hunter2")), "sealed");
        assert_eq!(v.open_secret(&r).unwrap(), b"hunter2hunter2");
        // Moved to another project or name, it does not open.
        let moved = SecretRow { project: "blog".into(), ..r.clone() };
        assert!(v.open_secret(&moved).unwrap_err().contains("changed, or moved"));
        let mut flipped = r.clone();
        flipped.ciphertext.replace_range(0..2, if &r.ciphertext[0..2] == "00" { "01" } else { "00" });
        assert!(v.open_secret(&flipped).is_err());
        // Another key file does not open it, and says which key it needs.
        let other = tempfile::tempdir().unwrap();
        let w = Vault::open(other.path()).unwrap();
        assert!(w.open_secret(&r).unwrap_err().contains(&format!("key {}", r.key_id)));
        // The file opens again with the same key.
        let again = Vault::open(dir.path()).unwrap();
        assert_eq!(again.open_secret(&r).unwrap(), b"hunter2hunter2");
    }
}
