//! `slipway login|whoami|token|user|audit`: identities and the audit log of a server, and
//! the credentials file `slipway login` keeps (`$XDG_CONFIG_HOME/slipway/credentials.json`,
//! 0600) so later commands need no `--token`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use slipway_api::server::*;
use slipway_server::client::Method;

use crate::servercmd::{Remote, client, client_error, runtime};
use crate::ui::{Ui, UserError, exit};

/// What `slipway login` keeps: a token per server, and the server last signed in to.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub servers: BTreeMap<String, Stored>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub user: String,
    pub token: String,
    pub token_id: String,
}

pub fn credentials_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("slipway").join("credentials.json"))
}

fn key(server: &str) -> String {
    server.trim_end_matches('/').to_string()
}

pub fn load_credentials() -> Credentials {
    credentials_path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The token `slipway login` stored for `server`.
pub fn stored_token(server: &str) -> Option<String> {
    load_credentials().servers.get(&key(server)).map(|s| s.token.clone())
}

/// The server `slipway login` signed in to last.
pub fn default_server() -> Option<String> {
    load_credentials().default
}

fn save_credentials(c: &Credentials) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = credentials_path()
        .ok_or_else(|| UserError::new("no home directory to keep the token in").hint("set HOME or XDG_CONFIG_HOME"))?;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    // A file made earlier with wider rights is narrowed.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(&serde_json::to_vec_pretty(c)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn read_password(prompt: &str, stdin: bool) -> Result<String> {
    if stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok(s.trim_end_matches(['\n', '\r']).to_string());
    }
    if !std::io::stdin().is_terminal() {
        return Err(UserError::new("no terminal to ask for the password")
            .hint("pass it on stdin with --password-stdin (never as an argument: `ps` shows those)")
            .into());
    }
    Ok(rpassword::prompt_password(prompt)?)
}

pub fn login(
    remote: Remote,
    user: Option<String>,
    password_stdin: bool,
    expires: Option<std::time::Duration>,
    json: bool,
) -> Result<i32> {
    let Some(server) = remote.server.clone().filter(|s| !s.is_empty()) else {
        return Err(UserError::new("which server?").hint("pass --server URL or set SLIPWAY_SERVER").into());
    };
    let user = match user {
        Some(u) => u,
        None => std::env::var("USER").map_err(|_| UserError::new("who signs in?").hint("pass --user NAME"))?,
    };
    let password = read_password(&format!("password for {user} at {server}: "), password_stdin)?;
    let host = slipway_sys::whoami::hostname();
    let c = slipway_server::client::ServerClient::new(&server, "");
    runtime()?.block_on(async {
        let l = Login {
            user: user.clone(),
            password,
            token_name: Some(format!("slipway login on {host}")),
            expires_in: expires.map(|d| d.as_secs().max(1)),
        };
        let made: TokenMade = c.call(Method::POST, "/api/v1/login", Some(&l)).await.map_err(client_error)?;
        let mut creds = load_credentials();
        creds.servers.insert(
            key(&server),
            Stored { user: user.clone(), token: made.token.clone(), token_id: made.view.id.clone() },
        );
        creds.default = Some(key(&server));
        let path = save_credentials(&creds)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&made.view)?);
        } else {
            println!(
                "signed in to {server} as {user}; token {} (expires {}) kept in {} (0600)",
                made.view.id,
                made.view.expires_at.as_deref().unwrap_or("never"),
                path.display()
            );
        }
        Ok(exit::OK)
    })
}

pub fn logout(remote: Remote) -> Result<i32> {
    let server = remote
        .server
        .clone()
        .or_else(default_server)
        .ok_or_else(|| UserError::new("which server?").hint("pass --server URL"))?;
    let mut creds = load_credentials();
    let Some(stored) = creds.servers.remove(&key(&server)) else {
        println!("not signed in to {server}");
        return Ok(exit::OK);
    };
    // The token dies on the server too, when it answers.
    let c = slipway_server::client::ServerClient::new(&server, &stored.token);
    let revoked = runtime()?.block_on(async {
        c.call::<TokenView>(Method::DELETE, &format!("/api/v1/tokens/{}", stored.token_id), None::<&()>).await
    });
    if creds.default.as_deref() == Some(key(&server).as_str()) {
        creds.default = None;
    }
    save_credentials(&creds)?;
    match revoked {
        Ok(_) => println!("signed out of {server}: token {} revoked", stored.token_id),
        Err(e) => println!("signed out of {server} here; the server did not revoke token {} ({e})", stored.token_id),
    }
    Ok(exit::OK)
}

fn print_json(v: &impl serde::Serialize) -> Result<i32> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(exit::OK)
}

fn bindings_text(b: &[BindingView]) -> String {
    let list: Vec<String> = b
        .iter()
        .map(|b| {
            format!(
                "{} on {}{}",
                b.role,
                b.project.as_deref().unwrap_or("*"),
                if b.source == "file" { " (file)" } else { "" }
            )
        })
        .collect();
    if list.is_empty() { "-".into() } else { list.join(", ") }
}

pub fn whoami(remote: Remote, json: bool) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        let w: WhoAmI = c.call(Method::GET, "/api/v1/whoami", None::<&()>).await.map_err(client_error)?;
        if json {
            return print_json(&w);
        }
        println!("{} ({} token {} `{}`)", w.name, w.kind, w.token.id, w.token.name);
        if !w.groups.is_empty() {
            println!("groups: {}", w.groups.join(", "));
        }
        println!("roles: {}", bindings_text(&w.bindings));
        if let Some(s) = &w.token.scopes {
            println!("token scopes: {}", s.join(", "));
        }
        Ok(exit::OK)
    })
}

#[derive(Subcommand)]
pub enum TokenAction {
    /// Make an API token of yours (shown once), or with `--agent` an agent token.
    Create {
        name: String,
        /// Narrow it to these permissions (`read:*`, `deploy:environments/dev`; repeat).
        #[arg(long = "scope", value_name = "PERMISSION")]
        scopes: Vec<String>,
        /// It stops working after this long (`30d`, `12h`).
        #[arg(long, value_name = "DURATION", value_parser = crate::servercmd::parse_duration)]
        expires: Option<std::time::Duration>,
        /// An agent token (needs `write:settings`), bound to this agent name (`-` for any name).
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
    },
    /// Your tokens (`--all`: everyone's, with `read:users`).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by its id (8 to 12 hex digits, as `list` shows).
    Revoke { id: String },
}

fn token_rows(list: &[TokenView]) -> Vec<[String; 7]> {
    list.iter()
        .map(|t| {
            [
                t.id.clone(),
                t.name.clone(),
                t.kind.clone(),
                t.user.clone().or_else(|| t.agent.clone()).unwrap_or_default(),
                t.scopes.as_ref().map_or("(all)".into(), |s| s.join(",")),
                t.last_used_at.clone().unwrap_or_else(|| "never".into()),
                match (&t.revoked_at, &t.expires_at) {
                    (Some(r), _) => format!("revoked {r}"),
                    (None, Some(e)) => format!("expires {e}"),
                    (None, None) => "valid".into(),
                },
            ]
        })
        .collect()
}

pub fn token(action: TokenAction, remote: Remote, json: bool, ui: &Ui) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        match action {
            TokenAction::Create { name, scopes, expires, agent } => {
                let expires_in = expires.map(|d| d.as_secs().max(1));
                let made: TokenMade = match agent {
                    Some(a) => {
                        let t = NewAgentToken { name, agent: Some(a).filter(|a| a != "-"), expires_in };
                        c.call(Method::POST, "/api/v1/agent-tokens", Some(&t)).await
                    }
                    None => {
                        let t = NewApiToken { name, scopes: Some(scopes).filter(|s| !s.is_empty()), expires_in };
                        c.call(Method::POST, "/api/v1/tokens", Some(&t)).await
                    }
                }
                .map_err(client_error)?;
                if json {
                    return print_json(&made);
                }
                println!("{}", made.token);
                eprintln!("token {} `{}` (shown once; the server keeps only its hash)", made.view.id, made.view.name);
            }
            TokenAction::List { all } => {
                let path = if all { "/api/v1/tokens?all=true" } else { "/api/v1/tokens" };
                let list: Vec<TokenView> = c.call(Method::GET, path, None::<&()>).await.map_err(client_error)?;
                if json {
                    return print_json(&list);
                }
                crate::ui::print_table(
                    ui,
                    &["ID", "NAME", "KIND", "OWNER", "SCOPES", "LAST USED", "STATE"],
                    &token_rows(&list),
                    |_, _| None,
                );
            }
            TokenAction::Revoke { id } => {
                let t: TokenView =
                    c.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), None::<&()>).await.map_err(client_error)?;
                if json {
                    return print_json(&t);
                }
                println!("revoked token {} `{}`", t.id, t.name);
            }
        }
        Ok(exit::OK)
    })
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Add a user, with roles (`--role developer@shop`, `--role viewer` for every project).
    Add {
        name: String,
        #[arg(long = "role", value_name = "ROLE[@PROJECT]")]
        roles: Vec<String>,
        /// Read a password from stdin (else the user signs in with tokens only).
        #[arg(long)]
        password_stdin: bool,
    },
    /// The users and their roles.
    List,
    /// Delete a user: its roles and tokens go with it.
    Delete { name: String },
    /// Set a password: your own (asks for the current one), or anyone's with `write:users`.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Give a role (`ROLE[@PROJECT]`).
    Grant { name: String, role: String },
    /// Take a role away (`ROLE[@PROJECT]`).
    Revoke { name: String, role: String },
    /// The roles in effect and their permissions.
    Roles,
}

fn binding(spec: &str) -> BindingView {
    let (role, project) = match spec.split_once('@') {
        Some((r, p)) => (r.to_string(), Some(p.to_string()).filter(|p| p != "*")),
        None => (spec.to_string(), None),
    };
    BindingView { role, project, source: "api".into() }
}

pub fn user(action: UserAction, remote: Remote, json: bool, ui: &Ui) -> Result<i32> {
    let c = client(&remote)?;
    let enc = slipway_server::client::segment;
    runtime()?.block_on(async {
        match action {
            UserAction::Add { name, roles, password_stdin } => {
                let password = match password_stdin {
                    true => Some(read_password("", true)?),
                    false => None,
                };
                let u = NewUser { name, password, bindings: roles.iter().map(|r| binding(r)).collect() };
                let v: UserView = c.call(Method::POST, "/api/v1/users", Some(&u)).await.map_err(client_error)?;
                if json {
                    return print_json(&v);
                }
                println!("user {} added: {}", v.name, bindings_text(&v.bindings));
            }
            UserAction::List => {
                let list: Vec<UserView> =
                    c.call(Method::GET, "/api/v1/users", None::<&()>).await.map_err(client_error)?;
                if json {
                    return print_json(&list);
                }
                let rows: Vec<[String; 4]> = list
                    .iter()
                    .map(|u| {
                        [
                            u.name.clone(),
                            bindings_text(&u.bindings),
                            if u.groups.is_empty() { "-".into() } else { u.groups.join(",") },
                            if u.has_password { "yes".into() } else { "tokens only".into() },
                        ]
                    })
                    .collect();
                crate::ui::print_table(ui, &["USER", "ROLES", "GROUPS", "PASSWORD"], &rows, |_, _| None);
            }
            UserAction::Delete { name } => {
                c.call_empty(Method::DELETE, &format!("/api/v1/users/{}", enc(&name)), None::<&()>)
                    .await
                    .map_err(client_error)?;
                println!("user {name} deleted, with its roles and tokens");
            }
            UserAction::Passwd { name, password_stdin } => {
                let current = match password_stdin {
                    true => None,
                    false => {
                        Some(read_password("current password (empty as an admin): ", false)?).filter(|p| !p.is_empty())
                    }
                };
                let password = read_password("new password: ", password_stdin)?;
                let p = NewPassword { password, current };
                c.call_empty(Method::PUT, &format!("/api/v1/users/{}/password", enc(&name)), Some(&p))
                    .await
                    .map_err(client_error)?;
                println!("password of {name} set");
            }
            UserAction::Grant { name, role } => {
                let v: UserView = c
                    .call(Method::POST, &format!("/api/v1/users/{}/bindings", enc(&name)), Some(&binding(&role)))
                    .await
                    .map_err(client_error)?;
                if json {
                    return print_json(&v);
                }
                println!("{}: {}", v.name, bindings_text(&v.bindings));
            }
            UserAction::Revoke { name, role } => {
                let v: UserView = c
                    .call(Method::DELETE, &format!("/api/v1/users/{}/bindings", enc(&name)), Some(&binding(&role)))
                    .await
                    .map_err(client_error)?;
                if json {
                    return print_json(&v);
                }
                println!("{}: {}", v.name, bindings_text(&v.bindings));
            }
            UserAction::Roles => {
                let list: Vec<RoleView> =
                    c.call(Method::GET, "/api/v1/roles", None::<&()>).await.map_err(client_error)?;
                if json {
                    return print_json(&list);
                }
                let rows: Vec<[String; 2]> = list.iter().map(|r| [r.name.clone(), r.permissions.join(", ")]).collect();
                crate::ui::print_table(ui, &["ROLE", "PERMISSIONS"], &rows, |_, _| None);
            }
        }
        Ok(exit::OK)
    })
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Check the hash chain: exit 0 when whole, 1 with the first broken entry.
    Verify,
}

pub fn audit(
    action: Option<AuditAction>,
    since: Option<String>,
    actor: Option<String>,
    remote: Remote,
    json: bool,
    ui: &Ui,
) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        if let Some(AuditAction::Verify) = action {
            let v: AuditVerdict =
                c.call(Method::GET, "/api/v1/audit/verify", None::<&()>).await.map_err(client_error)?;
            if json {
                print_json(&v)?;
            } else if v.ok {
                println!("audit log intact: {} entries chained", v.entries);
            }
            if !v.ok {
                eprintln!("{}: {}", ui.paint("31;1", "error"), v.reason.unwrap_or_default());
                return Ok(exit::FAILED);
            }
            return Ok(exit::OK);
        }
        let mut after: Option<i64> = None;
        let mut rows = Vec::new();
        loop {
            let mut q = vec![format!("limit=10000")];
            if let Some(a) = after {
                q.push(format!("after={a}"));
            }
            if let Some(s) = &since {
                q.push(format!("since={}", slipway_server::client::segment(s)));
            }
            if let Some(a) = &actor {
                q.push(format!("actor={}", slipway_server::client::segment(a)));
            }
            let page: Vec<AuditEntry> = c
                .call(Method::GET, &format!("/api/v1/audit?{}", q.join("&")), None::<&()>)
                .await
                .map_err(client_error)?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            let n = page.len();
            for e in page {
                if json {
                    // JSON lines: one entry per line, for export.
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    rows.push([
                        e.seq.to_string(),
                        e.at.clone(),
                        e.actor.clone(),
                        e.outcome.clone(),
                        e.status.to_string(),
                        e.action.clone(),
                        e.target.clone(),
                    ]);
                }
            }
            if n < 10000 {
                break;
            }
        }
        if !json {
            crate::ui::print_table(
                ui,
                &["SEQ", "AT", "ACTOR", "OUTCOME", "STATUS", "ACTION", "TARGET"],
                &rows,
                |c, v| {
                    (c == 3).then_some(match v {
                        "denied" => "31",
                        "failed" => "33",
                        _ => "32",
                    })
                },
            );
        }
        Ok(exit::OK)
    })
}

#[derive(Subcommand)]
pub enum SecretAction {
    /// Set a secret; its value comes from stdin or --from-file (never an argument: `ps`
    /// shows those).
    Set {
        name: String,
        /// Read the value from this file (a key, a certificate) instead of stdin.
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
        /// Only jobs of this environment get it.
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
        /// Only pipelines of protected refs get it.
        #[arg(long)]
        protected: bool,
        /// The job gets the path of a file holding it (GitLab's file variables).
        #[arg(long)]
        file: bool,
    },
    /// A project's secrets: names, scopes, who set them — never values.
    List,
    /// Delete a secret.
    Delete {
        name: String,
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
    },
    /// Seal every secret of the server with a new key (needs `write:settings`).
    RotateKey,
}

pub fn secret(
    action: SecretAction,
    project: Option<String>,
    group: Option<String>,
    remote: Remote,
    json: bool,
    ui: &Ui,
) -> Result<i32> {
    let c = client(&remote)?;
    let enc = slipway_server::client::segment;
    // Where the secrets are: a group's (every project under it), or a project's.
    let place = || match &group {
        Some(g) => Ok((format!("/api/v1/groups/{}", enc(g)), format!("group {g}"))),
        None => project
            .clone()
            .filter(|p| !p.is_empty())
            .map(|p| (format!("/api/v1/projects/{}", enc(&p)), p))
            .ok_or_else(|| {
                anyhow::Error::from(
                    UserError::new("which project?").hint("pass --project NAME (or --group G), or set SLIPWAY_PROJECT"),
                )
            }),
    };
    runtime()?.block_on(async {
        match action {
            SecretAction::Set { name, from_file, environment, protected, file } => {
                let (base, p) = place()?;
                let value = match &from_file {
                    Some(path) => std::fs::read_to_string(path)
                        .map_err(|e| UserError::new(format!("--from-file {}: {e}", path.display())))?,
                    None => {
                        if std::io::stdin().is_terminal() {
                            rpassword::prompt_password(format!("value of {name}: "))?
                        } else {
                            let mut s = String::new();
                            std::io::stdin().read_to_string(&mut s)?;
                            // One trailing newline is the shell's, not the secret's.
                            s.strip_suffix('\n').map(str::to_string).unwrap_or(s)
                        }
                    }
                };
                let body = NewSecret { value, environment, protected, file };
                let path = format!("{base}/secrets/{}", enc(&name));
                let v: SecretView = c.call(Method::PUT, &path, Some(&body)).await.map_err(client_error)?;
                if json {
                    return print_json(&v);
                }
                println!(
                    "secret {} of {p} set{}",
                    v.name,
                    v.environment.map_or(String::new(), |e| format!(" for {e}"))
                );
            }
            SecretAction::List => {
                let (base, _) = place()?;
                let list: Vec<SecretView> =
                    c.call(Method::GET, &format!("{base}/secrets"), None::<&()>).await.map_err(client_error)?;
                if json {
                    return print_json(&list);
                }
                let rows: Vec<[String; 5]> = list
                    .iter()
                    .map(|s| {
                        let mut kind = Vec::new();
                        if s.protected {
                            kind.push("protected");
                        }
                        if s.file {
                            kind.push("file");
                        }
                        [
                            s.name.clone(),
                            s.environment.clone().unwrap_or_else(|| "*".into()),
                            if kind.is_empty() { "-".into() } else { kind.join(",") },
                            s.set_by.clone(),
                            s.set_at.clone(),
                        ]
                    })
                    .collect();
                crate::ui::print_table(ui, &["SECRET", "ENVIRONMENT", "KIND", "SET BY", "SET AT"], &rows, |_, _| None);
            }
            SecretAction::Delete { name, environment } => {
                let (base, p) = place()?;
                let mut path = format!("{base}/secrets/{}", enc(&name));
                if let Some(e) = &environment {
                    path.push_str(&format!("?environment={}", enc(e)));
                }
                c.call_empty(Method::DELETE, &path, None::<&()>).await.map_err(client_error)?;
                println!("secret {name} of {p} deleted");
            }
            SecretAction::RotateKey => {
                let v: serde_json::Value =
                    c.call(Method::POST, "/api/v1/secrets/rotate-key", None::<&()>).await.map_err(client_error)?;
                println!("{} secret(s) sealed with a new key", v["resealed"]);
            }
        }
        Ok(exit::OK)
    })
}
