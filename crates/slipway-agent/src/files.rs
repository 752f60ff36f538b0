//! Artifacts sent to the agent through its API — what a server uses for an agent connected to
//! it, which it reaches through the agent's tunnel and not over SSH: a release's binary into
//! `artifacts/sha256/<sha256>`, an image archive into `artifacts/images/<id>.tar`. A file is
//! written beside its place, its digest checked as it streams in, and renamed into place only
//! when it matches, so a half-sent or forged file is never run. `GET` of the same path says
//! whether the file is there already.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::Shared;
use crate::api::error;

type S = State<Arc<Shared>>;

/// `?sha256=` of an image archive: the archive's own digest.
#[derive(serde::Deserialize)]
pub(crate) struct ArchiveQuery {
    sha256: Option<String>,
}

/// Checks a digest in the path or query; the 400 answer when it is not one.
fn hex64(what: &str, s: &str) -> Option<Response> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    Some(error(StatusCode::BAD_REQUEST, format!("`{s}` is not {what} (64 lower-case hex digits)"), None))
}

fn artifact_path(s: &Shared, sha: &str) -> PathBuf {
    s.data_dir.join("artifacts/sha256").join(sha)
}

fn archive_path(s: &Shared, id: &str) -> PathBuf {
    s.data_dir.join("artifacts/images").join(format!("{id}.tar"))
}

/// The archive's digest from `?sha256=`, or the 400 answer.
fn archive_digest(id: &str, q: &ArchiveQuery) -> Result<String, Box<Response>> {
    if let Some(bad) = hex64("an image ID", id) {
        return Err(Box::new(bad));
    }
    let Some(sha) = q.sha256.as_deref() else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "`?sha256=` (the archive's digest) is missing".into(),
            None,
        )));
    };
    match hex64("a SHA-256 digest", sha) {
        Some(bad) => Err(Box::new(bad)),
        None => Ok(sha.to_string()),
    }
}

/// Whether `path` holds a file with digest `sha`, read on a blocking thread.
async fn present(path: PathBuf, sha: String) -> bool {
    tokio::task::spawn_blocking(move || digest_of(&path).is_ok_and(|d| d == sha)).await.unwrap_or(false)
}

fn digest_of(path: &FsPath) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(format!("{:x}", h.finalize())),
            n => h.update(&buf[..n]),
        }
    }
}

pub(crate) async fn has_artifact(State(s): S, Path(sha): Path<String>) -> Response {
    if let Some(bad) = hex64("an artifact digest", &sha) {
        return bad;
    }
    Json(serde_json::json!({"present": present(artifact_path(&s, &sha), sha).await})).into_response()
}

pub(crate) async fn put_artifact(State(s): S, Path(sha): Path<String>, body: axum::body::Body) -> Response {
    if let Some(bad) = hex64("an artifact digest", &sha) {
        return bad;
    }
    receive(artifact_path(&s, &sha), &sha, body, 0o555).await
}

pub(crate) async fn has_archive(State(s): S, Path(id): Path<String>, Query(q): Query<ArchiveQuery>) -> Response {
    let sha = match archive_digest(&id, &q) {
        Ok(sha) => sha,
        Err(bad) => return *bad,
    };
    Json(serde_json::json!({"present": present(archive_path(&s, &id), sha).await})).into_response()
}

pub(crate) async fn put_archive(
    State(s): S,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
    body: axum::body::Body,
) -> Response {
    let sha = match archive_digest(&id, &q) {
        Ok(sha) => sha,
        Err(bad) => return *bad,
    };
    receive(archive_path(&s, &id), &sha, body, 0o444).await
}

/// Streams `body` into `<dest>.part`, hashing it; renames it to `dest` when its digest is
/// `sha`, removes it otherwise.
async fn receive(dest: PathBuf, sha: &str, body: axum::body::Body, mode: u32) -> Response {
    let part = dest.with_extension(format!("part-{}", std::process::id()));
    let failed = |what: String| error(StatusCode::INTERNAL_SERVER_ERROR, what, None);
    let result = async {
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        }
        let mut file = tokio::fs::File::create(&part).await.map_err(|e| failed(format!("{}: {e}", part.display())))?;
        let mut h = Sha256::new();
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| error(StatusCode::BAD_REQUEST, format!("the upload broke off: {e}"), None))?;
            h.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(|e| failed(format!("{}: {e}", part.display())))?;
        }
        file.sync_all().await.map_err(|e| failed(format!("{}: {e}", part.display())))?;
        drop(file);
        let got = format!("{:x}", h.finalize());
        if got != sha {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("the file sent is sha256:{got} ({size} bytes), not sha256:{sha}"),
                Some("send it again; the copy here was dropped".into()),
            ));
        }
        use std::os::unix::fs::PermissionsExt;
        let rights = std::fs::Permissions::from_mode(mode);
        tokio::fs::set_permissions(&part, rights).await.map_err(|e| failed(format!("{}: {e}", part.display())))?;
        tokio::fs::rename(&part, &dest).await.map_err(|e| failed(format!("{}: {e}", dest.display())))?;
        Ok(size)
    }
    .await;
    match result {
        Ok(size) => Json(serde_json::json!({"stored": dest.display().to_string(), "size": size})).into_response(),
        Err(r) => {
            let _ = tokio::fs::remove_file(&part).await;
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use slipway_api::AgentClient;
    use slipway_net::HttpMethod as Method;

    fn sha(bytes: &[u8]) -> String {
        format!("{:x}", Sha256::digest(bytes))
    }

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_sent_are_checked_before_they_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = crate::AgentConfig { data_dir: data.clone(), metrics_listen: None };
        let agent = tokio::spawn(crate::run(config, async move {
            let _ = stopped.await;
        }));
        let client = AgentClient::new(crate::socket_path(&data));
        while client.info().await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let file = dir.path().join("svc");
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").unwrap();
        let digest = sha(b"#!/bin/sh\necho hi\n");

        // Sent once, kept read-only and executable; sent again, not sent at all.
        assert!(client.put_artifact(&digest, &file).await.unwrap());
        let kept = data.join("artifacts/sha256").join(&digest);
        assert_eq!(std::fs::read(&kept).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o555);
        assert!(!client.put_artifact(&digest, &file).await.unwrap());

        // A file that is not what its name says is dropped, and nothing is left behind.
        let forged = sha(b"something else");
        let r =
            slipway_net::unix_file(&crate::socket_path(&data), Method::PUT, &format!("/v1/artifacts/{forged}"), &file)
                .await
                .unwrap();
        assert_eq!(r.status, 400, "{:?}", r.body);
        assert!(String::from_utf8_lossy(&r.body).contains(&format!("not sha256:{forged}")), "{:?}", r.body);
        let names: Vec<_> =
            std::fs::read_dir(data.join("artifacts/sha256")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(&digest)]);

        // Names that are not digests never reach the file system (asked first, as the
        // client does before it sends a file).
        for path in ["/v1/artifacts/..%2F..%2Fetc", "/v1/artifacts/ABC", "/v1/images/abc/archive?sha256=00"] {
            let r = slipway_net::unix(&crate::socket_path(&data), Method::GET, path, Vec::new()).await.unwrap();
            assert_eq!(r.status, 400, "{path}: {:?}", r.body);
        }
        // An image archive is checked against its own digest.
        let id = sha(b"config");
        assert!(client.put_image_archive(&id, &digest, &file).await.unwrap());
        assert!(data.join("artifacts/images").join(format!("{id}.tar")).is_file());
        assert!(!client.put_image_archive(&id, &digest, &file).await.unwrap());

        let _ = stop.send(());
        agent.await.unwrap().unwrap();
    }
}
