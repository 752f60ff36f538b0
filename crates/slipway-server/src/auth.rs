//! Who is calling: `Authorization: Bearer TOKEN` (or GitLab's `PRIVATE-TOKEN` / `JOB-TOKEN`
//! headers), looked up by the token's SHA-256; the store never holds a token itself.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;
use sha2::{Digest, Sha256};
use slipway_store::Role;

use crate::api::error;
use crate::{ServerError, State};

/// The hex SHA-256 of a token: what the store keeps.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// A job token's run.
    pub run: Option<i64>,
    /// A job token's job: its run and index.
    pub job: Option<(i64, usize)>,
}

impl Caller {
    /// Refuses unless the caller has one of `roles` (admins may do everything).
    pub fn require(&self, roles: &[Role]) -> Result<(), ServerError> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            return Ok(());
        }
        Err(ServerError::Forbidden(format!("a {} token may not do this", self.role.as_str())))
    }
}

impl Caller {
    /// A job token reads its own pipeline only.
    pub fn may_see(&self, run: i64) -> Result<(), ServerError> {
        match (self.role, self.run) {
            (Role::Job, Some(own)) if own != run => {
                Err(ServerError::Forbidden(format!("a job token of pipeline {own} may not read pipeline {run}")))
            }
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<Arc<State>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, Self::Rejection> {
        let h = &parts.headers;
        let token = h
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| h.get("private-token").and_then(|v| v.to_str().ok()))
            .or_else(|| h.get("job-token").and_then(|v| v.to_str().ok()))
            .map(str::trim);
        let unauthorized = |msg: &str| {
            error(axum::http::StatusCode::UNAUTHORIZED, "unauthorized", msg.to_string(), Some("authorization".into()))
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(unauthorized("no token: send `Authorization: Bearer TOKEN` (SLIPWAY_TOKEN for the CLI)"));
        };
        match state.store.token(&hash_token(token)).await {
            Ok(Some(t)) if t.ended => Err(unauthorized(&format!(
                "the token of {} no longer works: a job token is valid only while its job runs",
                t.name
            ))),
            Ok(Some(t)) => {
                // Job tokens are named `job RUN/INDEX` when they are made.
                let job = (t.role == Role::Job)
                    .then(|| t.name.strip_prefix("job ")?.split_once('/'))
                    .flatten()
                    .and_then(|(r, i)| Some((r.parse().ok()?, i.parse().ok()?)));
                Ok(Caller { name: t.name, role: t.role, run: t.run, job })
            }
            Ok(None) => Err(unauthorized("unknown or expired token")),
            Err(e) => Err(error(axum::http::StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string(), None)),
        }
    }
}
