//! Identities through the API: signing in (`POST /api/v1/login`, throttled), the caller's own
//! tokens, agent tokens, users and their role bindings, the roles in effect, and the audit
//! log with its verification. What each needs is in access::RULES.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_api::server::*;
use slipway_model::access::Permission;
use slipway_model::time::{now_ms, rfc3339};
use slipway_store::{AuditFilter, BindingRow, NewToken, TokenKind, TokenRow};

use crate::access::{Caller, Peer, audited, check_password, hash_password, hash_token, verify_password};
use crate::api::body;
use crate::{ServerError, State};

type S = AxState<Arc<State>>;

/// Longest a token may live (a login's default is 30 days).
const MAX_LIFETIME_S: u64 = 366 * 24 * 3600;

fn when(ms: i64) -> String {
    rfc3339(ms)
}

pub(crate) fn token_view(t: &TokenRow) -> TokenView {
    TokenView {
        id: t.id.clone(),
        name: t.name.clone(),
        kind: t.kind.as_str().into(),
        user: t.user.clone(),
        scopes: t.scopes.clone(),
        agent: t.agent.clone(),
        created_at: when(t.created_at_ms),
        expires_at: t.expires_at_ms.map(when),
        last_used_at: t.last_used_at_ms.map(when),
        revoked_at: t.revoked_at_ms.map(when),
    }
}

fn expiry(seconds: Option<u64>, field: &str) -> Result<Option<i64>, ServerError> {
    match seconds {
        None => Ok(None),
        Some(0) => Err(ServerError::Input(format!("`{field}` must be at least 1 second"), Some(field.into()))),
        Some(s) if s > MAX_LIFETIME_S => Err(ServerError::Input(
            format!("`{field}` must be at most {MAX_LIFETIME_S} seconds (a year)"),
            Some(field.into()),
        )),
        Some(s) => Ok(Some(now_ms() + (s as i64) * 1000)),
    }
}

fn token_name(name: &str) -> Result<(), ServerError> {
    if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ServerError::Input(
            "`name` must be 1 to 100 characters without control characters".into(),
            Some("name".into()),
        ));
    }
    Ok(())
}

/// Makes and records a token; the answer holds it.
async fn make(s: &State, t: NewToken) -> Result<TokenMade, ServerError> {
    let token = crate::new_token()?;
    let hash = hash_token(&token);
    s.store.add_token(&NewToken { hash: hash.clone(), ..t }).await?;
    let row = s.store.token(&hash).await?.ok_or_else(|| ServerError::NotFound("the token just made".into()))?;
    Ok(TokenMade { token, view: token_view(&row) })
}

#[utoipa::path(post, path = "/api/v1/login", tag = "access", summary = "Sign in: a user's name and password for a new API token", request_body = Login, responses((status = 201, description = "Signed in; the token is shown this once", body = TokenMade), (status = 429, description = "Too many failures: wait `Retry-After` seconds", body = ApiErrorBody), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)), security(()))]
pub async fn login(AxState(s): S, peer: Option<axum::Extension<Peer>>, bytes: Bytes) -> Result<Response, ServerError> {
    let l: Login = body(&bytes)?;
    let address = peer.map(|p| p.0.0).unwrap_or_else(|| "unknown".into());
    let keys = [format!("user:{}", l.user), format!("addr:{address}")];
    if let Some(wait) = keys.iter().filter_map(|k| s.throttle.wait(k)).max() {
        let secs = wait.as_secs().max(1);
        let mut r = crate::api::error(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            format!("too many failed sign-ins for `{}` or from {address}: try again in {secs} s", l.user),
            None,
        );
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        return Ok(r);
    }
    let user = s.store.user(&l.user).await?;
    let hash = user.as_ref().and_then(|u| u.password.clone());
    let password = l.password.clone();
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, hash.as_deref())).await.unwrap_or(false);
    let denied = |s: &State| {
        for k in &keys {
            s.throttle.failed(k);
        }
        ServerError::Unauthorized("wrong user name or password".into())
    };
    if !ok {
        let e = slipway_store::NewAudit {
            actor: l.user.clone(),
            address: address.clone(),
            action: "POST /api/v1/login".into(),
            target: "/api/v1/login".into(),
            outcome: "denied".into(),
            status: 401,
            detail: serde_json::json!({"reason": "wrong user name or password"}).to_string(),
        };
        let _ = s.store.append_audit(&e).await;
        return Err(denied(&s));
    }
    for k in &keys {
        s.throttle.succeeded(k);
    }
    let name = l.token_name.clone().unwrap_or_else(|| "login".into());
    token_name(&name)?;
    let expires = expiry(Some(l.expires_in.unwrap_or(30 * 24 * 3600)), "expires_in")?;
    let made = make(
        &s,
        NewToken {
            hash: String::new(),
            name,
            kind: TokenKind::User,
            user: Some(l.user.clone()),
            scopes: None,
            agent: None,
            expires_at_ms: expires,
        },
    )
    .await?;
    let e = slipway_store::NewAudit {
        actor: l.user.clone(),
        address,
        action: "POST /api/v1/login".into(),
        target: "/api/v1/login".into(),
        outcome: "allowed".into(),
        status: 201,
        detail: serde_json::json!({"token": made.view.id}).to_string(),
    };
    let _ = s.store.append_audit(&e).await;
    Ok((StatusCode::CREATED, axum::Json(made)).into_response())
}

pub(crate) fn binding_views(s: &State, user: &str, api: &[BindingRow]) -> Vec<BindingView> {
    use slipway_model::access::Subject;
    let access = s.access();
    let groups = access.groups_of(user);
    let mut out: Vec<BindingView> = access
        .bindings
        .iter()
        .filter(|b| match &b.subject {
            Subject::User(u) => u == user,
            Subject::Group(g) => groups.contains(g),
        })
        .map(|b| BindingView { role: b.role.clone(), project: b.project.clone(), source: "file".into() })
        .collect();
    out.extend(api.iter().map(|b| BindingView {
        role: b.role.clone(),
        project: b.project.clone(),
        source: "api".into(),
    }));
    out
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "access", summary = "Who the token is, and what it holds", responses((status = 200, body = WhoAmI), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn whoami(AxState(s): S, who: Caller) -> Result<Response, ServerError> {
    let token =
        s.store.tokens(None).await?.into_iter().find(|t| t.id == who.token_id).map(|t| token_view(&t)).unwrap_or(
            TokenView {
                id: who.token_id.clone(),
                name: who.token_name.clone(),
                kind: who.kind.as_str().into(),
                user: None,
                scopes: None,
                agent: who.agent.clone(),
                created_at: String::new(),
                expires_at: None,
                last_used_at: None,
                revoked_at: None,
            },
        );
    let (groups, bindings) = match who.kind {
        TokenKind::User => {
            (s.access().groups_of(&who.name), binding_views(&s, &who.name, &s.store.bindings(Some(&who.name)).await?))
        }
        _ => (Vec::new(), Vec::new()),
    };
    Ok(axum::Json(WhoAmI { name: who.name.clone(), kind: who.kind.as_str().into(), token, groups, bindings })
        .into_response())
}

#[derive(serde::Deserialize, Default)]
pub struct TokensQuery {
    #[serde(default)]
    all: bool,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "access", summary = "The caller's tokens (`all=true`: everyone's, with `read:users`)", params(("all" = Option<bool>, Query, description = "Every user's and the agents' tokens")), responses((status = 200, body = [TokenView]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn tokens(AxState(s): S, who: Caller, Query(q): Query<TokensQuery>) -> Result<Response, ServerError> {
    let list = match q.all {
        true => {
            require(&s, &who, "read", "users")?;
            s.store.tokens(None).await?
        }
        false => match who.kind {
            TokenKind::User => s.store.tokens(Some(&who.name)).await?,
            _ => Vec::new(),
        },
    };
    Ok(axum::Json(list.iter().map(token_view).collect::<Vec<_>>()).into_response())
}

/// A second check inside a handler (what the route's rule cannot know in advance).
fn require(s: &State, who: &Caller, verb: &str, resource: &str) -> Result<(), ServerError> {
    let need = Permission::need(verb, resource);
    match who.may(&s.access(), &need, None) {
        true => Ok(()),
        false => Err(ServerError::Forbidden(match who.grants.check(&s.access(), &need, None) {
            Err(d) if who.kind == TokenKind::User => d.explain(&who.name, &who.grants),
            _ => format!("`{}` lacks `{need}` on the server", who.actor()),
        })),
    }
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "access", summary = "Make an API token of the caller's (shown once)", request_body = NewApiToken, responses((status = 201, description = "Made; the token is shown this once", body = TokenMade), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn add_token(AxState(s): S, who: Caller, bytes: Bytes) -> Result<Response, ServerError> {
    let t: NewApiToken = body(&bytes)?;
    if who.kind != TokenKind::User {
        return Err(ServerError::Forbidden(format!(
            "a {} token cannot make tokens: sign in as a user (`slipway login`)",
            who.kind.as_str()
        )));
    }
    token_name(&t.name)?;
    let scopes = match &t.scopes {
        None => who.scopes.as_ref().map(|s| s.iter().map(|p| p.to_string()).collect()),
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                let field = Some(format!("scopes[{i}]"));
                let perm = Permission::parse(p).map_err(|why| ServerError::Input(why, field.clone()))?;
                // A token narrows what its maker holds; it never widens it.
                if let Some(own) = &who.scopes
                    && !own.iter().any(|o| o.covers(&perm) && (o.verb == "*" || !perm.verb.contains('*')))
                {
                    return Err(ServerError::Input(
                        format!("`{p}` is wider than the scopes of the token making it"),
                        field,
                    ));
                }
            }
            Some(list.clone())
        }
    };
    let expires = expiry(t.expires_in, "expires_in")?;
    let made = make(
        &s,
        NewToken {
            hash: String::new(),
            name: t.name.clone(),
            kind: TokenKind::User,
            user: Some(who.name.clone()),
            scopes,
            agent: None,
            expires_at_ms: expires,
        },
    )
    .await?;
    let detail = serde_json::json!({"token": made.view.id, "name": t.name, "scopes": made.view.scopes});
    Ok(audited((StatusCode::CREATED, axum::Json(made)), detail))
}

#[utoipa::path(post, path = "/api/v1/agent-tokens", tag = "access", summary = "Make an agent token (shown once), bound to one agent name when given", request_body = NewAgentToken, responses((status = 201, description = "Made; the token is shown this once", body = TokenMade), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn add_agent_token(AxState(s): S, who: Caller, bytes: Bytes) -> Result<Response, ServerError> {
    let t: NewAgentToken = body(&bytes)?;
    token_name(&t.name)?;
    if let Some(a) = &t.agent {
        slipway_model::names::check_agent(a).map_err(|why| ServerError::Input(why, Some("agent".into())))?;
    }
    let made = make(
        &s,
        NewToken {
            hash: String::new(),
            name: t.name.clone(),
            kind: TokenKind::Agent,
            user: Some(who.name.clone()),
            scopes: None,
            agent: t.agent.clone(),
            expires_at_ms: expiry(t.expires_in, "expires_in")?,
        },
    )
    .await?;
    let detail = serde_json::json!({"token": made.view.id, "name": t.name, "agent": t.agent});
    Ok(audited((StatusCode::CREATED, axum::Json(made)), detail))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "access", summary = "Revoke a token (one's own, or anyone's with `write:users`)", params(("id" = String, Path, description = "The token's id (at least 8 of its 12 hex digits)")), responses((status = 200, body = TokenView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn revoke_token(AxState(s): S, who: Caller, Path(id): Path<String>) -> Result<Response, ServerError> {
    let any = who.may(&s.access(), &Permission::need("write", "users"), None);
    let own = (who.kind == TokenKind::User).then_some(who.name.as_str());
    let scope = if any { None } else { own };
    if scope.is_none() && !any {
        return Err(ServerError::Forbidden("only users revoke tokens".into()));
    }
    match s.store.revoke_token(&id, scope).await? {
        Some(t) => {
            let detail = serde_json::json!({"token": t.id, "name": t.name, "user": t.user});
            Ok(audited(axum::Json(token_view(&t)), detail))
        }
        None => {
            Err(ServerError::NotFound(format!("token `{id}` (give 8 to 12 hex digits of one of your tokens' ids)")))
        }
    }
}

async fn user_view(s: &State, u: &slipway_store::UserRow) -> Result<UserView, ServerError> {
    let api = s.store.bindings(Some(&u.name)).await?;
    Ok(UserView {
        name: u.name.clone(),
        has_password: u.password.is_some(),
        groups: s.access().groups_of(&u.name),
        bindings: binding_views(s, &u.name, &api),
        created_at: when(u.created_at_ms),
        created_by: u.created_by.clone(),
    })
}

#[utoipa::path(get, path = "/api/v1/users", tag = "access", summary = "The users and their roles", responses((status = 200, body = [UserView]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn users(AxState(s): S) -> Result<Response, ServerError> {
    let mut out = Vec::new();
    for u in s.store.users().await? {
        out.push(user_view(&s, &u).await?);
    }
    Ok(axum::Json(out).into_response())
}

fn check_binding(s: &State, b: &BindingView, field: &str) -> Result<(), ServerError> {
    let access = s.access();
    if access.role(&b.role).is_none() {
        let known: Vec<&str> = access.roles.iter().map(|r| r.name.as_str()).collect();
        return Err(ServerError::Input(
            format!("no role `{}` (roles: {})", b.role, known.join(", ")),
            Some(format!("{field}.role")),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/users", tag = "access", summary = "Add a user", request_body = NewUser, responses((status = 201, body = UserView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn add_user(AxState(s): S, who: Caller, bytes: Bytes) -> Result<Response, ServerError> {
    let u: NewUser = body(&bytes)?;
    slipway_model::names::check_user("user name", &u.name)
        .map_err(|why| ServerError::Input(why, Some("name".into())))?;
    for (i, b) in u.bindings.iter().enumerate() {
        check_binding(&s, b, &format!("bindings[{i}]"))?;
    }
    let hash = match &u.password {
        Some(p) => {
            check_password(&u.name, p)?;
            let p = p.clone();
            Some(
                tokio::task::spawn_blocking(move || hash_password(&p))
                    .await
                    .map_err(|e| ServerError::Input(e.to_string(), None))??,
            )
        }
        None => None,
    };
    if !s.store.add_user(&u.name, hash.as_deref(), &who.name).await? {
        return Err(ServerError::Conflict(format!("a user `{}` exists", u.name)));
    }
    for b in &u.bindings {
        let project = b.project.clone().filter(|p| p != "*");
        s.store
            .add_binding(&BindingRow {
                user: u.name.clone(),
                role: b.role.clone(),
                project,
                created_by: who.name.clone(),
            })
            .await?;
    }
    let row = s.store.user(&u.name).await?.ok_or_else(|| ServerError::NotFound(format!("user `{}`", u.name)))?;
    let view = user_view(&s, &row).await?;
    let detail = serde_json::json!({"user": u.name, "password": u.password.is_some(), "bindings": view.bindings});
    Ok(audited((StatusCode::CREATED, axum::Json(view)), detail))
}

#[utoipa::path(delete, path = "/api/v1/users/{user}", tag = "access", summary = "Delete a user, its bindings and tokens", params(("user" = String, Path, description = "The user")), responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn delete_user(AxState(s): S, who: Caller, Path(user): Path<String>) -> Result<Response, ServerError> {
    if user == who.name {
        return Err(ServerError::Conflict("you cannot delete yourself: ask another admin".into()));
    }
    let before = match s.store.user(&user).await? {
        Some(row) => serde_json::to_value(user_view(&s, &row).await?).unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    match s.store.delete_user(&user).await? {
        true => Ok(audited(StatusCode::NO_CONTENT, serde_json::json!({"user": user, "before": before, "after": null}))),
        false => Err(ServerError::NotFound(format!("user `{user}`"))),
    }
}

#[utoipa::path(put, path = "/api/v1/users/{user}/password", tag = "access", summary = "Set a password: one's own (with the current one), or anyone's with `write:users`", params(("user" = String, Path, description = "The user")), request_body = NewPassword, responses((status = 204, description = "Set"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn set_password(
    AxState(s): S,
    who: Caller,
    Path(user): Path<String>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    let p: NewPassword = body(&bytes)?;
    let admin = who.may(&s.access(), &Permission::need("write", "users"), None);
    let own = who.kind == TokenKind::User && who.name == user;
    if !admin && !own {
        return Err(ServerError::Forbidden(format!(
            "`{}` may set only its own password; `write:users` sets others'",
            who.actor()
        )));
    }
    let row = s.store.user(&user).await?.ok_or_else(|| ServerError::NotFound(format!("user `{user}`")))?;
    if !admin {
        // One's own, with the current one (a stolen token alone cannot take the account).
        let current = p.current.clone().unwrap_or_default();
        let hash = row.password.clone();
        let ok = tokio::task::spawn_blocking(move || verify_password(&current, hash.as_deref())).await.unwrap_or(false);
        if row.password.is_some() && !ok {
            return Err(ServerError::Forbidden("`current` is not the current password".into()));
        }
    }
    check_password(&user, &p.password)?;
    let new = p.password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&new))
        .await
        .map_err(|e| ServerError::Input(e.to_string(), None))??;
    s.store.set_password(&user, Some(&hash)).await?;
    Ok(audited(StatusCode::NO_CONTENT, serde_json::json!({"user": user, "password": "changed"})))
}

#[utoipa::path(post, path = "/api/v1/users/{user}/bindings", tag = "access", summary = "Give a user a role, on a project or every one", params(("user" = String, Path, description = "The user")), request_body = BindingView, responses((status = 200, body = UserView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn add_binding(
    AxState(s): S,
    who: Caller,
    Path(user): Path<String>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    let b: BindingView = body(&bytes)?;
    check_binding(&s, &b, "binding")?;
    let row = s.store.user(&user).await?.ok_or_else(|| ServerError::NotFound(format!("user `{user}`")))?;
    let project = b.project.clone().filter(|p| p != "*");
    let before = user_view(&s, &row).await?.bindings;
    s.store
        .add_binding(&BindingRow {
            user: user.clone(),
            role: b.role.clone(),
            project: project.clone(),
            created_by: who.name.clone(),
        })
        .await?;
    let view = user_view(&s, &row).await?;
    let detail = serde_json::json!({"user": user, "before": before, "after": view.bindings});
    Ok(audited(axum::Json(view), detail))
}

#[utoipa::path(delete, path = "/api/v1/users/{user}/bindings", tag = "access", summary = "Take a role away", params(("user" = String, Path, description = "The user")), request_body = BindingView, responses((status = 200, body = UserView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn remove_binding(AxState(s): S, Path(user): Path<String>, bytes: Bytes) -> Result<Response, ServerError> {
    let b: BindingView = body(&bytes)?;
    let row = s.store.user(&user).await?.ok_or_else(|| ServerError::NotFound(format!("user `{user}`")))?;
    let project = b.project.clone().filter(|p| p != "*");
    let before = user_view(&s, &row).await?.bindings;
    if !s.store.remove_binding(&user, &b.role, project.as_deref()).await? {
        let from_file = binding_views(&s, &user, &[]).iter().any(|v| v.role == b.role && v.project == project);
        return Err(ServerError::NotFound(match from_file {
            true => {
                format!("an API binding of `{user}` to `{}` (that one is in the access file: change it there)", b.role)
            }
            false => format!("a binding of `{user}` to `{}`", b.role),
        }));
    }
    let view = user_view(&s, &row).await?;
    let detail = serde_json::json!({"user": user, "before": before, "after": view.bindings});
    Ok(audited(axum::Json(view), detail))
}

#[utoipa::path(get, path = "/api/v1/roles", tag = "access", summary = "The roles in effect", responses((status = 200, body = [RoleView]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn roles(AxState(s): S) -> Result<Response, ServerError> {
    let list: Vec<RoleView> = s
        .access()
        .roles
        .iter()
        .map(|r| RoleView { name: r.name.clone(), permissions: r.permissions.iter().map(|p| p.to_string()).collect() })
        .collect();
    Ok(axum::Json(list).into_response())
}

#[derive(serde::Deserialize, Default)]
pub struct AuditQuery {
    /// RFC 3339 or Unix milliseconds.
    since: Option<String>,
    actor: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

fn entry(r: &slipway_store::AuditRow) -> AuditEntry {
    AuditEntry {
        seq: r.seq,
        at: when(r.at_ms),
        actor: r.entry.actor.clone(),
        address: r.entry.address.clone(),
        action: r.entry.action.clone(),
        target: r.entry.target.clone(),
        outcome: r.entry.outcome.clone(),
        status: r.entry.status,
        detail: serde_json::from_str(&r.entry.detail).unwrap_or(serde_json::Value::String(r.entry.detail.clone())),
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
    }
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "access", summary = "The audit log, oldest first", params(("since" = Option<String>, Query, description = "From this time (RFC 3339)"), ("actor" = Option<String>, Query, description = "Only this actor's"), ("after" = Option<i64>, Query, description = "After this sequence number"), ("limit" = Option<i64>, Query, description = "At most this many (1 to 10000, default 1000)")), responses((status = 200, body = [AuditEntry]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn audit(AxState(s): S, Query(q): Query<AuditQuery>) -> Result<Response, ServerError> {
    let since_ms = match &q.since {
        None => None,
        Some(t) => Some(match t.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => t
                .parse::<jiff::Timestamp>()
                .map_err(|e| {
                    ServerError::Input(format!("`since`: `{t}` is not an RFC 3339 time: {e}"), Some("since".into()))
                })?
                .as_millisecond(),
        }),
    };
    let f =
        AuditFilter { since_ms, actor: q.actor, after_seq: q.after, limit: q.limit.unwrap_or(1000).clamp(1, 10_000) };
    let list: Vec<AuditEntry> = s.store.audit(&f).await?.iter().map(entry).collect();
    Ok(axum::Json(list).into_response())
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "access", summary = "Check the audit log's hash chain", responses((status = 200, body = AuditVerdict), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn verify(AxState(s): S) -> Result<Response, ServerError> {
    let mut prev = slipway_store::AUDIT_GENESIS.to_string();
    let mut next_seq = 1;
    let mut after = None;
    loop {
        let page = s.store.audit(&AuditFilter { after_seq: after, limit: 5000, ..Default::default() }).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for r in &page {
            let broken =
                |why: String| AuditVerdict { ok: false, entries: r.seq, broken_at: Some(r.seq), reason: Some(why) };
            let verdict = if r.seq != next_seq {
                Some(broken(format!("entries {next_seq} to {} are missing", r.seq - 1)))
            } else if r.prev_hash != prev {
                Some(broken(format!("entry {} does not follow entry {}: one of them was changed", r.seq, r.seq - 1)))
            } else if r.hash != slipway_store::audit_hash(&prev, r.seq, r.at_ms, &r.entry) {
                Some(broken(format!("entry {} was changed after it was written", r.seq)))
            } else {
                None
            };
            if let Some(v) = verdict {
                return Ok(axum::Json(v).into_response());
            }
            prev = r.hash.clone();
            next_seq += 1;
        }
    }
    Ok(axum::Json(AuditVerdict { ok: true, entries: next_seq - 1, broken_at: None, reason: None }).into_response())
}
