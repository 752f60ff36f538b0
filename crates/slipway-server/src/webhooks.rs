//! Webhooks from GitHub, GitLab and Gitea/Forgejo: verified before anything is parsed
//! (GitHub's and Gitea's HMAC-SHA256 of the raw body, GitLab's token compared in constant
//! time), each delivery id taken once, then push, tag push and merge/pull-request events
//! become pipelines. Polling (`poll_seconds`) does the same from `git ls-remote` for forges
//! that cannot call in.

use slipway_api::server::ApiErrorBody;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::pipelines;
use crate::{ServerError, State};

/// What a verified delivery asks for.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// A ping, a branch deletion, an event slipway does not run pipelines for.
    Nothing(String),
    Pipeline {
        ref_name: String,
        sha: String,
        source: &'static str,
    },
}

#[utoipa::path(post, path = "/api/v1/webhooks/{forge}/{project}", tag = "webhooks", summary = "A forge's webhook (verified by its signature, no token)", params(("forge" = String, Path, description = "`github`, `gitlab`, `gitea` or `forgejo`"), ("project" = String, Path, description = "The project")), request_body(content = String, content_type = "application/json", description = "The forge's payload, as it sent it"), responses((status = 200, description = "Taken (or why nothing started)"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)), security(()))]
pub async fn receive(
    st: AxState<Arc<State>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ServerError> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = Arc::clone(&st.0);
    let r = receive_verified(st, path, headers, body).await;
    match &r {
        Err(ServerError::Unauthorized(_)) => s.counters.webhooks_rejected.fetch_add(1, Relaxed),
        Ok(resp) if resp.status() == StatusCode::CREATED => s.counters.webhooks_accepted.fetch_add(1, Relaxed),
        _ => 0,
    };
    r
}

async fn receive_verified(
    AxState(s): AxState<Arc<State>>,
    Path((forge, project)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ServerError> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(p) = s.store.project(&project).await? else {
        // The same answer as a bad signature: a stranger learns nothing about project names.
        return Err(ServerError::Unauthorized("the signature does not verify".into()));
    };
    let secret = p.webhook_secret.clone().unwrap_or_default();
    let (delivery, event) = match forge.as_str() {
        "github" => {
            verify_hmac(&secret, &body, header("x-hub-signature-256").as_deref(), "sha256=")?;
            (header("x-github-delivery"), header("x-github-event").unwrap_or_default())
        }
        "gitea" | "forgejo" => {
            let sig = header("x-gitea-signature").or_else(|| header("x-forgejo-signature"));
            verify_hmac(&secret, &body, sig.as_deref(), "")?;
            (
                header("x-gitea-delivery").or_else(|| header("x-forgejo-delivery")),
                header("x-gitea-event").or_else(|| header("x-forgejo-event")).unwrap_or_default(),
            )
        }
        "gitlab" => {
            let given = header("x-gitlab-token").unwrap_or_default();
            if secret.is_empty() || !bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
                return Err(ServerError::Unauthorized("the X-Gitlab-Token does not match".into()));
            }
            (
                header("x-gitlab-event-uuid").or_else(|| header("x-gitlab-webhook-uuid")),
                header("x-gitlab-event").unwrap_or_default(),
            )
        }
        other => {
            return Err(ServerError::NotFound(format!("webhooks from `{other}` (github, gitlab, gitea, forgejo)")));
        }
    };
    // Verified: now the body may be read.
    let payload: serde_json::Value = if event == "ping" && body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ServerError::Input(format!("the webhook body is not JSON: {e}"), None))?
    };
    let wanted = parse(&forge, &event, &payload)?;
    let Wanted::Pipeline { ref_name, sha, source } = wanted else {
        let Wanted::Nothing(why) = wanted else { unreachable!("matched above") };
        return Ok((StatusCode::OK, axum::Json(serde_json::json!({"pipeline": null, "why": why}))).into_response());
    };
    if let Some(id) = &delivery
        && !s.store.record_delivery(id, &p.name).await?
    {
        s.counters.webhooks_replayed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run = s.store.delivery_run(id).await?;
        return Ok((StatusCode::OK, axum::Json(serde_json::json!({"pipeline": run, "why": "delivered before"})))
            .into_response());
    }
    // A push to a config repository: its GitOps applications look now, not at their interval.
    if let Ok(apps) = s.store.apps().await {
        s.reconciler.nudge_repo(&apps, &p.repo);
    }
    let run = match s.store.find_run(&p.name, &short_ref(&ref_name), &sha, source).await? {
        Some(r) => r,
        None => {
            // Recorded now and answered; planned just after (a burst of deliveries is answered
            // at once instead of one plan at a time, and a restart in between loses nothing).
            let by = format!("webhook: {forge}");
            let run = pipelines::record(&s, &p, Some(&ref_name), Some(&sha), source, Vec::new(), &by).await?;
            let st = Arc::clone(&s);
            tokio::spawn(async move {
                if let Err(e) = pipelines::start(&st, run).await {
                    tracing::warn!(pipeline = run, error = %e, "cannot start the pipeline");
                }
            });
            run
        }
    };
    if let Some(id) = &delivery {
        s.store.set_delivery_run(id, run).await?;
    }
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({"pipeline": run}))).into_response())
}

fn verify_hmac(secret: &str, body: &[u8], given: Option<&str>, prefix: &str) -> Result<(), ServerError> {
    let bad = || ServerError::Unauthorized("the signature does not verify".into());
    let given = given.and_then(|g| g.strip_prefix(prefix)).ok_or_else(bad)?;
    let given = hex_decode(given).ok_or_else(bad)?;
    if secret.is_empty() {
        return Err(bad());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| bad())?;
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| bad())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// `refs/heads/main` → `main`, `refs/tags/v1` → `v1` (how runs show their ref).
fn short_ref(r: &str) -> String {
    r.strip_prefix("refs/heads/").or_else(|| r.strip_prefix("refs/tags/")).unwrap_or(r).to_string()
}

const ZERO: &str = "0000000000000000000000000000000000000000";

fn parse(forge: &str, event: &str, v: &serde_json::Value) -> Result<Wanted, ServerError> {
    let text = |path: &[&str]| -> Option<String> {
        let mut cur = v;
        for p in path {
            cur = cur.get(p)?;
        }
        cur.as_str().map(str::to_string)
    };
    let missing = |what: &str| ServerError::Input(format!("the {event} event has no `{what}`"), Some(what.into()));
    let push = |source: &'static str| -> Result<Wanted, ServerError> {
        let ref_name = text(&["ref"]).ok_or_else(|| missing("ref"))?;
        let sha = text(&["checkout_sha"]).or_else(|| text(&["after"])).ok_or_else(|| missing("after"))?;
        if sha == ZERO || v.get("deleted").and_then(serde_json::Value::as_bool) == Some(true) {
            return Ok(Wanted::Nothing(format!("`{ref_name}` was deleted")));
        }
        check_sha(&sha)?;
        Ok(Wanted::Pipeline { ref_name, sha, source })
    };
    match (forge, event) {
        (_, "ping") => Ok(Wanted::Nothing("pong".into())),
        ("github" | "gitea" | "forgejo", "push") => push("push"),
        ("gitlab", "Push Hook" | "Tag Push Hook") => push("push"),
        ("github" | "gitea" | "forgejo", "pull_request") => {
            let action = text(&["action"]).unwrap_or_default();
            if !matches!(action.as_str(), "opened" | "synchronize" | "synchronized" | "reopened") {
                return Ok(Wanted::Nothing(format!("pull request {action}")));
            }
            let sha = text(&["pull_request", "head", "sha"]).ok_or_else(|| missing("pull_request.head.sha"))?;
            let branch = text(&["pull_request", "head", "ref"]).ok_or_else(|| missing("pull_request.head.ref"))?;
            check_sha(&sha)?;
            Ok(Wanted::Pipeline { ref_name: format!("refs/heads/{branch}"), sha, source: "merge_request_event" })
        }
        ("gitlab", "Merge Request Hook") => {
            let action = text(&["object_attributes", "action"]).unwrap_or_default();
            if !matches!(action.as_str(), "open" | "update" | "reopen") {
                return Ok(Wanted::Nothing(format!("merge request {action}")));
            }
            let sha = text(&["object_attributes", "last_commit", "id"])
                .ok_or_else(|| missing("object_attributes.last_commit.id"))?;
            let branch = text(&["object_attributes", "source_branch"])
                .ok_or_else(|| missing("object_attributes.source_branch"))?;
            check_sha(&sha)?;
            Ok(Wanted::Pipeline { ref_name: format!("refs/heads/{branch}"), sha, source: "merge_request_event" })
        }
        (_, e) => Ok(Wanted::Nothing(format!("`{e}` events start no pipeline"))),
    }
}

fn check_sha(sha: &str) -> Result<(), ServerError> {
    match sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        true => Ok(()),
        false => Err(ServerError::Input(format!("`{sha}` is not a commit id"), Some("after".into()))),
    }
}

/// Polling: what moved on the remotes of projects that ask for it. The first look only
/// records what is there; later, each branch that moved and each new tag starts one pipeline.
pub async fn poll_once(s: &Arc<State>) {
    let Ok(projects) = s.store.projects().await else { return };
    let now = slipway_model::time::now_ms();
    for p in projects {
        let Some(every) = p.poll_ms else { continue };
        {
            let mut due = s.polled.lock().expect("polled lock");
            if due.get(&p.name).is_some_and(|last| now - last < every) {
                continue;
            }
            due.insert(p.name.clone(), now);
        }
        let repo = p.repo.clone();
        let refs = match tokio::task::spawn_blocking(move || slipway_git::remote::ls_remote(&repo)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(project = %p.name, error = %e, "cannot poll");
                continue;
            }
            Err(_) => continue,
        };
        let now_seen: BTreeMap<String, String> = refs.into_iter().collect();
        let before: Option<BTreeMap<String, String>> =
            s.store.last_seen(&p.name).await.ok().flatten().and_then(|t| serde_json::from_str(&t).ok());
        if let Some(before) = before {
            for (r, sha) in &now_seen {
                let moved = before.get(r) != Some(sha);
                let watched = r.starts_with("refs/heads/") || r.starts_with("refs/tags/");
                if !moved || !watched {
                    continue;
                }
                if let Ok(apps) = s.store.apps().await {
                    s.reconciler.nudge_repo(&apps, &p.repo);
                }
                let exists = s.store.find_run(&p.name, &short_ref(r), sha, "push").await.ok().flatten().is_some();
                if exists {
                    continue;
                }
                if let Err(e) = pipelines::create(s, &p, Some(r), Some(sha), "push", Vec::new(), "polling").await {
                    tracing::warn!(project = %p.name, git_ref = %r, error = %e, "cannot start the pipeline");
                }
            }
        }
        let seen = serde_json::to_string(&now_seen).expect("refs serialize");
        if let Err(e) = s.store.set_last_seen(&p.name, &seen).await {
            tracing::warn!(project = %p.name, error = %e, "cannot record what polling saw");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures_verify_and_tampering_does_not() {
        // GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_hmac("It's a Secret to Everybody", b"Hello, World!", Some(sig), "sha256=").is_ok());
        assert!(verify_hmac("It's a Secret to Everybody", b"Hello, World?", Some(sig), "sha256=").is_err());
        assert!(verify_hmac("other", b"Hello, World!", Some(sig), "sha256=").is_err());
        assert!(verify_hmac("It's a Secret to Everybody", b"Hello, World!", Some("sha256=zz"), "sha256=").is_err());
        assert!(verify_hmac("It's a Secret to Everybody", b"Hello, World!", None, "sha256=").is_err());
        assert!(verify_hmac("", b"", Some("sha256="), "sha256=").is_err(), "no secret, no pass");
    }

    #[test]
    fn events_become_pipelines_or_say_why_not() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let push = serde_json::json!({"ref": "refs/heads/main", "after": sha});
        assert_eq!(
            parse("github", "push", &push).unwrap(),
            Wanted::Pipeline { ref_name: "refs/heads/main".into(), sha: sha.into(), source: "push" }
        );
        let deleted = serde_json::json!({"ref": "refs/heads/x", "after": ZERO, "deleted": true});
        assert!(matches!(parse("github", "push", &deleted).unwrap(), Wanted::Nothing(_)));
        let mr = serde_json::json!({"object_attributes": {"action": "open", "source_branch": "feat", "last_commit": {"id": sha}}});
        assert_eq!(
            parse("gitlab", "Merge Request Hook", &mr).unwrap(),
            Wanted::Pipeline { ref_name: "refs/heads/feat".into(), sha: sha.into(), source: "merge_request_event" }
        );
        assert!(matches!(parse("github", "issues", &push).unwrap(), Wanted::Nothing(_)));
        let e = parse("github", "push", &serde_json::json!({"after": sha})).unwrap_err();
        assert!(e.to_string().contains("`ref`"), "{e}");
        let e = parse("github", "push", &serde_json::json!({"ref": "refs/heads/x", "after": "nope"})).unwrap_err();
        assert!(e.to_string().contains("not a commit id"), "{e}");
    }
}
