//! The deploy commands against a server (`--server URL`, or `SLIPWAY_SERVER` as every server
//! job has): `deploy` sends the build, `rollback`/`promote`/`approve` name what to do, and
//! the server's engine does it; its events come back as the same JSON lines and the same
//! lines for people as a deploy from this machine, with the same exit codes.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use slipway_model::event::{DeployEvent, Stamped};
use slipway_model::time::{ago, now_ms, parse_rfc3339};
use slipway_server::client::{ClientError, ServerClient};

use crate::deploycmd::{self, DeployArgs, PromoteArgs, RollbackArgs};
use crate::ui::{Ui, UserError, exit, print_table};

/// Where the environments are: this machine (the default) or a server's project.
#[derive(Args, Clone, Default)]
pub struct OnServer {
    /// Work on a server's environments (`http://HOST:8420`); server jobs have it set.
    #[arg(long, value_name = "URL", env = "SLIPWAY_SERVER")]
    pub server: Option<String>,
    /// The server's API token (default: $CI_JOB_TOKEN, a server job's own).
    #[arg(long, value_name = "TOKEN", env = "SLIPWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The server's project the environments belong to (server jobs have it set).
    #[arg(long, value_name = "NAME", env = "SLIPWAY_PROJECT")]
    pub project: Option<String>,
}

pub struct Remote {
    client: ServerClient,
    project: String,
}

impl OnServer {
    /// The server to work on, or `None` for this machine.
    pub fn remote(&self) -> Result<Option<Remote>> {
        let Some(server) = self.server.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var("CI_JOB_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .or_else(|| crate::accesscmd::stored_token(server));
        let Some(token) = token else {
            return Err(UserError::new(format!("no token for the server at {server}"))
                .hint("sign in with `slipway login --server URL`, or pass --token TOKEN / set SLIPWAY_TOKEN (server jobs have CI_JOB_TOKEN)")
                .into());
        };
        let Some(project) = self.project.clone().filter(|p| !p.is_empty()) else {
            return Err(UserError::new("which project's environments? The server has several")
                .hint("pass --project NAME or set SLIPWAY_PROJECT (server jobs have it set)")
                .into());
        };
        Ok(Some(Remote { client: ServerClient::new(server, &token), project }))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// A server error for people: its message, and the field at fault.
fn failed(ui: &Ui, e: ClientError) -> i32 {
    let (message, hint, code) = match &e {
        ClientError::Api { status, message, field, code } => (
            message.clone(),
            field.as_ref().map(|f| format!("the server refused `{f}` (HTTP {status} {code})")),
            match *status {
                400 | 404 | 422 => exit::USAGE,
                409 => 4,
                403 => 5,
                503 => 3,
                _ => exit::FAILED,
            },
        ),
        other => (other.to_string(), None, exit::FAILED),
    };
    ui.error(&UserError { message, hint, details: None });
    code
}

/// The build a deploy sends: `--artifacts`, else the newest one here, as a gzip'd tar with
/// one top entry (the directory's or the binary's name).
fn pack(root: &Path, given: Option<&Path>) -> Result<Vec<u8>> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => slipway_deploy::artifacts::newest_build(root).ok_or_else(|| {
            UserError::new(format!("no build in {} to deploy", root.display()))
                .hint("build first (`slipway go build`, or a job whose artifacts have dist/), or pass --artifacts PATH")
        })?,
    };
    Ok(slipway_server::client::pack(&path).map_err(|e| UserError::new(format!("packing {}: {e}", path.display())))?)
}

/// Streams a request's events: each rendered as a local deploy renders it, the closing one
/// deciding the exit code.
fn stream(r: &Remote, env: &str, action: &str, body: Option<Vec<u8>>, json: bool, ui: &Ui) -> Result<i32> {
    let sink = deploycmd::sink(ui, json);
    let mut end: Option<Stamped<DeployEvent>> = None;
    let sent = runtime()?.block_on(r.client.deploy_stream(
        &r.project,
        env,
        action,
        body.map(|b| (b, "application/gzip")),
        |line| match serde_json::from_slice::<Stamped<DeployEvent>>(line) {
            Ok(e) if matches!(e.event, DeployEvent::DeployFinished { .. }) => end = Some(e),
            Ok(e) => sink(e),
            Err(_) => {}
        },
    ));
    if let Err(e) = sent {
        return Ok(failed(ui, e));
    }
    let Some(end) = end else {
        ui.error(&UserError::new(format!("the server stopped answering before `{env}`'s {action} ended")).hint(format!(
            "the server goes on with it: see `slipway status {env} --server …` and `slipway history {env} --server …`"
        )));
        return Ok(exit::FAILED);
    };
    if json {
        deploycmd::emit_json(&end);
    }
    let DeployEvent::DeployFinished {
        ok,
        environment,
        release,
        version,
        url,
        seconds,
        unchanged,
        error,
        error_kind,
        hint,
        ..
    } = end.event
    else {
        unreachable!("matched above")
    };
    if !ok {
        if !json {
            ui.error(&UserError { message: error.unwrap_or_default(), hint, details: None });
        }
        return Ok(error_kind.map_or(exit::FAILED, deploycmd::exit_code));
    }
    if !json {
        let (v, id, u) = (version.unwrap_or_default(), release.unwrap_or_default(), url.unwrap_or_default());
        match unchanged {
            true => println!(
                "{environment} already runs {v} (release #{id}) with these artifacts and settings: nothing to do"
            ),
            false => println!(
                "{} {environment} {v} (release #{id}) in {:.1}s — {u}",
                ui.paint("32;1", "deployed"),
                seconds.unwrap_or_default()
            ),
        }
    }
    Ok(exit::OK)
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", slipway_server::client::segment(v))))
        .collect();
    if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
}

pub fn deploy(r: &Remote, root: &Path, args: &DeployArgs, ui: &Ui) -> Result<i32> {
    if args.dry_run {
        return Err(UserError::new("--dry-run is not available against a server").hint("leave out --server").into());
    }
    if args.username.is_some() || args.password_stdin {
        return Err(UserError::new("registry credentials are not sent to a server")
            .hint("the server pulls with its own credentials; leave out --username and --password-stdin")
            .into());
    }
    // A recorded version or an image needs no upload; anything else sends the build.
    let body = match (&args.image, &args.version, &args.artifacts) {
        (Some(_), _, _) | (None, Some(_), None) => None,
        _ => Some(pack(root, args.artifacts.as_deref())?),
    };
    let q = query(&[
        ("version", args.version.clone()),
        ("image", args.image.clone()),
        ("force", args.force.then(|| "true".to_string())),
    ]);
    stream(r, &args.env, &format!("deploy{q}"), body, args.common.json, ui)
}

pub fn rollback(r: &Remote, args: &RollbackArgs, ui: &Ui) -> Result<i32> {
    // The commit to revert is the one the application was at when it was rolled back.
    let app = match args.revert {
        true => Some(gitops_app(r, &args.env)?),
        false => None,
    };
    let code =
        stream(r, &args.env, &format!("rollback{}", query(&[("to", args.to.clone())])), None, args.common.json, ui)?;
    let Some(app) = app.filter(|_| code == exit::OK) else { return Ok(code) };
    let commit = app["status"]["commit"].as_str().unwrap_or_default().to_string();
    if commit.is_empty() {
        return Err(UserError::new(format!(
            "application `{}` has not read its desired state yet: nothing to revert",
            app["name"]
        ))
        .into());
    }
    let dir = args.checkout.clone().unwrap_or_else(|| PathBuf::from("."));
    let sha = slipway_git::revert_signed_off(&dir, &commit, args.push)
        .map_err(|e| UserError::new(format!("{}: {e}", dir.display())).hint("resolve it there, or revert by hand"))?;
    println!(
        "reverted {} in {} as {}{}",
        &commit[..12.min(commit.len())],
        dir.display(),
        &sha[..12.min(sha.len())],
        if args.push { ", pushed" } else { "; push it and the application follows it (its pin is lifted)" }
    );
    Ok(exit::OK)
}

/// The GitOps application that keeps `env`.
fn gitops_app(r: &Remote, env: &str) -> Result<serde_json::Value> {
    use slipway_server::client::Method;
    let apps: Vec<serde_json::Value> = runtime()?
        .block_on(r.client.call(Method::GET, "/api/v1/apps", None::<&()>))
        .map_err(crate::servercmd::client_error)?;
    apps.into_iter().find(|a| a["environment"] == env).ok_or_else(|| {
        UserError::new(format!("no GitOps application keeps `{env}`"))
            .hint("roll back without --revert (or add an application for it)")
            .into()
    })
}

pub fn promote(r: &Remote, args: &PromoteArgs, ui: &Ui) -> Result<i32> {
    if args.gitops {
        return promote_gitops(r, args);
    }
    let q = query(&[("from", Some(args.from.clone()))]);
    stream(r, &args.to, &format!("promote{q}"), None, args.common.json, ui)
}

/// `promote FROM TO --gitops`: the release running in FROM written into TO's desired-state
/// file in a checkout of its application's config repository, checked, and committed (signed
/// off, on a new branch with --branch, pushed with --push); the server syncs it when it sees
/// the commit.
fn promote_gitops(r: &Remote, args: &PromoteArgs) -> Result<i32> {
    use slipway_server::client::Method;
    let rt = runtime()?;
    let app = gitops_app(r, &args.to)?;
    let releases =
        rt.block_on(r.client.releases(&r.project, &args.from, 20)).map_err(crate::servercmd::client_error)?;
    let Some(running) = releases.iter().find(|x| x["status"] == "healthy") else {
        return Err(UserError::new(format!("`{}` runs no healthy release to promote", args.from)).into());
    };
    let version = running["version"].as_str().unwrap_or_default().to_string();
    let dir = args.checkout.clone().unwrap_or_else(|| PathBuf::from("."));
    let file = slipway_pipeline::compile::desired_files(app["path"].as_str().unwrap_or("."), &args.to).remove(0);
    let full = dir.join(&file);
    let text = std::fs::read_to_string(&full).map_err(|e| {
        UserError::new(format!("{}: {e}", full.display()))
            .hint(format!("give --checkout a checkout of {} (the application's config repository)", app["repo"]))
    })?;
    let mut block = format!("release:\n  version: {version}\n");
    let artifacts = running["artifacts"].as_array().cloned().unwrap_or_default();
    if !artifacts.is_empty() {
        block.push_str("  artifacts:\n");
        for a in &artifacts {
            let (platform, sha) = (a["platform"].as_str().unwrap_or(""), a["sha256"].as_str().unwrap_or(""));
            block.push_str(&format!("    {platform}: sha256:{sha}\n"));
        }
    }
    let new = replace_release_block(&text, &block);
    // The result must read as a desired state before it is committed.
    let mut sources = slipway_pipeline::SourceMap::default();
    if let Err(diags) = slipway_pipeline::load_desired(Path::new(&file), &new, &mut sources) {
        let lines: Vec<String> = diags.iter().map(|d| format!("{}: {}", sources.location(d.span), d.message)).collect();
        return Err(UserError::new(format!("{file} would not read after the promotion:\n{}", lines.join("\n"))).into());
    }
    let actor = rt
        .block_on(r.client.call::<serde_json::Value>(Method::GET, "/api/v1/whoami", None::<&()>))
        .ok()
        .and_then(|w| w["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| "someone".into());
    let message = format!(
        "{}: promote {version} from {}\n\nThe release running in {} (#{}), written by `slipway promote {} {} --gitops`.\n\nPromoted-by: {actor}",
        args.to, args.from, args.from, running["release"], args.from, args.to
    );
    let sha = slipway_git::commit_signed_off(&dir, &file, &new, &message, args.branch.as_deref(), args.push)
        .map_err(|e| UserError::new(format!("{}: {e}", dir.display())))?;
    println!(
        "committed {} to {file}: {} ← {version} (from {}){}",
        &sha[..12.min(sha.len())],
        args.to,
        args.from,
        if args.push { ", pushed" } else { "; push it and the server syncs it" }
    );
    Ok(exit::OK)
}

/// The file with its top-level `release:` section replaced by `block` (added first when it
/// has none); the rest — the environment's settings, comments — kept as written.
fn replace_release_block(text: &str, block: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.starts_with("release:"));
    let Some(start) = start else { return format!("{block}{text}") };
    let end = lines[start + 1..]
        .iter()
        .position(|l| !l.is_empty() && !l.starts_with(' ') && !l.starts_with('#'))
        .map_or(lines.len(), |i| start + 1 + i);
    let mut out = String::new();
    for l in &lines[..start] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(block);
    for l in &lines[end..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

pub fn approve(r: &Remote, env: &str, release: Option<i64>, ui: &Ui) -> Result<i32> {
    match runtime()?.block_on(r.client.approve(&r.project, env, release)) {
        Ok(v) => {
            println!("approved release #{} ({}) of {env}", v["release"], v["version"].as_str().unwrap_or("?"));
            Ok(exit::OK)
        }
        Err(e) => Ok(failed(ui, e)),
    }
}

fn text(v: &serde_json::Value, key: &str) -> String {
    match &v[key] {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn when(v: &serde_json::Value, key: &str, now: i64) -> String {
    v[key].as_str().and_then(parse_rfc3339).map_or("-".into(), |t| ago(t, now))
}

pub fn status(r: &Remote, only: Option<&str>, json: bool, ui: &Ui) -> Result<i32> {
    let mut list = match runtime()?.block_on(r.client.environments(&r.project)) {
        Ok(l) => l,
        Err(e) => return Ok(failed(ui, e)),
    };
    if let Some(name) = only {
        list.retain(|v| v["environment"] == name);
        if list.is_empty() {
            return Err(UserError::new(format!("project `{}` has no environment `{name}`", r.project)).into());
        }
    }
    let attention = list.iter().any(|v| !matches!(v["status"].as_str(), Some("healthy" | "not deployed")));
    let code = if attention { exit::ATTENTION } else { exit::OK };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(code);
    }
    let now = now_ms();
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|v| {
            [
                text(v, "environment"),
                text(v, "version"),
                text(v, "status"),
                format!("{}/{}", text(v, "healthy"), text(v, "total")),
                when(v, "updated_at", now),
                text(v, "url"),
            ]
        })
        .collect();
    print_table(ui, &["ENVIRONMENT", "VERSION", "STATUS", "INSTANCES", "UPDATED", "URL"], &rows, |col, v| {
        (col == 2).then(|| deploycmd::status_color(v))
    });
    for v in list.iter().filter(|v| v["detail"].is_string()) {
        eprintln!("{}: {}", text(v, "environment"), text(v, "detail"));
    }
    Ok(code)
}

/// `slipway logs --env ENV --server URL`: the environment's instance logs, read by the server
/// from the agent that runs it.
pub fn env_logs(r: &Remote, env: &str, lines: usize, ui: &Ui) -> Result<i32> {
    match runtime()?.block_on(r.client.env_logs(&r.project, env, lines)) {
        Ok(text) => {
            use std::io::Write;
            std::io::stdout().write_all(&text)?;
            Ok(exit::OK)
        }
        Err(e) => Ok(failed(ui, e)),
    }
}

pub fn history(r: &Remote, env: &str, limit: i64, json: bool, ui: &Ui) -> Result<i32> {
    let list = match runtime()?.block_on(r.client.releases(&r.project, env, limit)) {
        Ok(l) => l,
        Err(e) => return Ok(failed(ui, e)),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(exit::OK);
    }
    let now = now_ms();
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|v| {
            let p = &v["pipeline"];
            [
                format!("#{}", text(v, "release")),
                text(v, "version"),
                text(v, "reason").replace('_', " "),
                text(v, "status").replace('_', " "),
                v["duration_seconds"].as_f64().map_or("-".into(), |d| format!("{d:.1}s")),
                when(v, "created_at", now),
                text(v, "actor"),
                match p.is_object() {
                    true => format!("#{} {}", text(p, "pipeline"), text(p, "job")),
                    false => "-".into(),
                },
            ]
        })
        .collect();
    print_table(
        ui,
        &["RELEASE", "VERSION", "REASON", "OUTCOME", "DURATION", "WHEN", "BY", "PIPELINE"],
        &rows,
        |col, v| (col == 3).then(|| deploycmd::outcome_color(v)),
    );
    Ok(exit::OK)
}
