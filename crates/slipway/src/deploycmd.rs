//! The deploy surface: `slipway agent`, `deploy`, `promote`, `rollback`, `approve`, `repair`,
//! `status`, `history` and `logs --env`. Arguments in, the engine's events and records out:
//! every decision is `slipway-deploy`'s, the agent is `slipway-agent`, the records
//! `slipway-store`; this file renders and maps errors to exit codes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand};
use slipway_api::AgentClient;
use slipway_deploy::artifacts::{PullCredentials, Wanted};
use slipway_deploy::{DeployError, Engine, EngineConfig, ErrorKind, Outcome};
use slipway_model::environment::Environment;
use slipway_model::event::{DeployEvent, Stamped};
use slipway_model::time::{ago, now_ms};
use slipway_model::{Actor, ReleaseId};
use slipway_store::Store;

use crate::ui::{Ui, UserError, exit, print_table};

/// The data directory: `--data-dir`, `$SLIPWAY_DATA_DIR`, else `$XDG_DATA_HOME/slipway`, else
/// `~/.local/share/slipway` — created private (0700), or made private again, before anything
/// reads or writes it.
pub fn data_dir(given: Option<PathBuf>, ui: &Ui) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(d) => d,
        None => match std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            Some(x) => PathBuf::from(x).join("slipway"),
            None => std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("/var/lib"), PathBuf::from)
                .join(".local/share/slipway"),
        },
    };
    let elsewhere = "or use a data directory of your own: `--data-dir DIR` or `SLIPWAY_DATA_DIR=DIR`";
    match slipway_sys::private::ensure(&dir) {
        Ok(fixed) if !fixed.is_empty() => {
            ui.notice(&format!(
                "the data directory {} was readable by other users: {} path(s) made private (0700 directories, 0600 files)",
                dir.display(),
                fixed.len()
            ));
            Ok(dir)
        }
        Ok(_) => Ok(dir),
        Err(e @ slipway_sys::private::PrivateError::NotOwner { .. }) => {
            Err(UserError::new(e.to_string()).hint(format!("run slipway as its owner, {elsewhere}")).into())
        }
        Err(slipway_sys::private::PrivateError::Io { path, source }) => {
            let who = slipway_sys::whoami::user();
            let mut err = UserError::new(format!("data directory {}: {source}", path.display()));
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                err = err.hint(format!("`{who}` may not use it: run slipway as the user who owns it, {elsewhere}"));
            }
            Err(err.into())
        }
    }
}

#[derive(Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    /// Also serve Prometheus metrics over TCP at this address (the socket always serves /metrics).
    #[arg(long, value_name = "ADDR", global = true)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Join this server (`http://HOST:8420`): run its CI jobs besides hosting environments.
    #[arg(long, value_name = "URL", env = "SLIPWAY_SERVER", global = true)]
    pub server: Option<String>,
    /// The token the server gave this agent.
    #[arg(long, value_name = "TOKEN", env = "SLIPWAY_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// This agent's name on the server (default: the host name).
    #[arg(long, value_name = "NAME", global = true)]
    pub name: Option<String>,
    /// CI jobs run at once.
    #[arg(long, value_name = "N", default_value_t = 2, global = true)]
    pub concurrency: usize,
    /// This agent's tags (comma-separated): it takes the jobs whose `tags:` it has all of,
    /// and untagged jobs, as GitLab's runners do.
    #[arg(long, value_name = "A,B", value_delimiter = ',', global = true)]
    pub tags: Vec<String>,
}

#[derive(Subcommand)]
pub enum AgentAction {
    /// Run in the foreground until SIGTERM or Ctrl-C (the default; what a systemd unit runs).
    Run,
    /// Start in the background and return once it answers.
    Start,
    /// Stop a running agent: every instance is drained and stopped.
    Stop,
    /// Say whether an agent runs, and what it runs.
    Status,
}

#[derive(Args)]
pub struct DeployArgs {
    /// The environment (from the pipeline file's `environments:`).
    pub env: String,
    /// A build's dist/ directory (with manifest.json) or a binary. Default: the newest build
    /// (dist/ or the last pipeline run's build artifacts).
    #[arg(long, value_name = "PATH")]
    pub artifacts: Option<PathBuf>,
    /// The version to deploy: one deployed before (its recorded artifacts are reused), or
    /// the label of a bare binary given with --artifacts.
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// For `target: docker`: an image in a registry (`host/repo:tag` or `host/repo@sha256:…`),
    /// pulled and recorded by digest.
    #[arg(long, value_name = "REF", conflicts_with = "artifacts")]
    pub image: Option<String>,
    /// Registry user for --image (else SLIPWAY_REGISTRY_USER, else ~/.docker/config.json).
    #[arg(long, value_name = "USER", requires = "image")]
    pub username: Option<String>,
    /// Read the registry password for --image from standard input (else SLIPWAY_REGISTRY_PASSWORD).
    #[arg(long, requires = "image")]
    pub password_stdin: bool,
    /// Print the steps the deploy would take, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Deploy even when the environment already runs these artifacts with these settings
    /// (a rolling restart).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Pipeline file with the `environments:` section (default: the project's).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// How long to wait for another deploy of the environment (or for approvals).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub wait: Duration,
    /// Print every event as a JSON line on stdout, the result last (docs/events.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub on: crate::remote::OnServer,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    slipway_pipeline::duration::parse(s).map_err(|e| e.to_string())
}

#[derive(Args)]
pub struct PromoteArgs {
    /// The environment whose running release is promoted.
    pub from: String,
    /// The environment it goes to.
    pub to: String,
    /// The target is kept by GitOps: write the release running in FROM (its version and
    /// digests) into TO's file in a checkout of the config repository and commit it, signed
    /// off (with --server).
    #[arg(long)]
    pub gitops: bool,
    /// The checkout of the config repository (default: the current directory).
    #[arg(long, value_name = "DIR", requires = "gitops")]
    pub checkout: Option<PathBuf>,
    /// Commit on a new branch (for review in a pull request) instead of the current one.
    #[arg(long, value_name = "NAME", requires = "gitops")]
    pub branch: Option<String>,
    /// Push the commit to the checkout's `origin`.
    #[arg(long, requires = "gitops")]
    pub push: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct RollbackArgs {
    pub env: String,
    /// Roll back to this version (default: the release before the current one).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// The environment is kept by GitOps: after the rollback, commit the revert of the
    /// desired state's commit in a checkout of its config repository (with --server), so
    /// the application's file says what now runs and its pin is lifted.
    #[arg(long)]
    pub revert: bool,
    /// The checkout of the config repository (default: the current directory).
    #[arg(long, value_name = "DIR", requires = "revert")]
    pub checkout: Option<PathBuf>,
    /// Push the revert to the checkout's `origin`.
    #[arg(long, requires = "revert")]
    pub push: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct RepairArgs {
    /// The environment a deploy left mid-way.
    pub env: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct AdoptArgs {
    /// The environment whose target runs a release the store does not know.
    pub env: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct ApproveArgs {
    pub env: String,
    /// The release to approve (default: the one waiting).
    pub release: Option<ReleaseId>,
    /// Approve as this user (default: $SLIPWAY_USER, else $USER); on a server, always the
    /// token's user.
    #[arg(long = "as", value_name = "NAME")]
    pub approver: Option<String>,
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub on: crate::remote::OnServer,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Only this environment.
    pub env: Option<String>,
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub on: crate::remote::OnServer,
}

#[derive(Args)]
pub struct HistoryArgs {
    pub env: String,
    /// How many releases to show, newest first.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: i64,
    /// Also show each release's recorded steps.
    #[arg(long)]
    pub steps: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub on: crate::remote::OnServer,
}

/// The colour of an environment's status in tables.
pub(crate) fn status_color(status: &str) -> &'static str {
    match status {
        "healthy" => "32",
        "deploying" => "36",
        "failed" => "31",
        "not deployed" => "2",
        _ => "33",
    }
}

/// The colour of a release's outcome in tables.
pub(crate) fn outcome_color(outcome: &str) -> &'static str {
    match outcome {
        "healthy" => "32",
        "failed" => "31",
        "deploying" | "queued" => "36",
        _ => "2",
    }
}

/// The exit code of a deploy error's kind (docs/cli.md).
pub fn exit_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::Failed => exit::FAILED,
        ErrorKind::Input => exit::USAGE,
        ErrorKind::NoAgent => 3,
        ErrorKind::Busy => 4,
        ErrorKind::Refused => 5,
        ErrorKind::Unsigned => 7,
        ErrorKind::Interrupted => exit::CANCELED,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// The pipeline file's environments (ssh paths made absolute).
fn environments(root: &Path, file: Option<&Path>, ui: &Ui) -> Result<Vec<Environment>> {
    Ok(crate::project::load(root, file, ui)?.environments(root))
}

/// The environments when there is a pipeline file; none otherwise (status and history also
/// work from the store alone).
fn environments_if_any(root: &Path, file: Option<&Path>, ui: &Ui) -> Result<Vec<Environment>> {
    match crate::project::find_source(root, file) {
        Ok(_) => environments(root, file, ui),
        Err(_) => Ok(Vec::new()),
    }
}

fn find_env<'a>(envs: &'a [Environment], name: &str) -> Result<&'a Environment, DeployError> {
    if let Some(e) = envs.iter().find(|e| e.name == name) {
        return Ok(e);
    }
    let names: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
    Err(DeployError::input(format!("unknown environment `{name}`")).hint(
        match slipway_pipeline::diag::did_you_mean(name, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if names.is_empty() => "the pipeline file has no `environments:` section (see docs/deploy.md)".into(),
            None => format!("environments: {}", names.join(", ")),
        },
    ))
}

/// Prints a deploy error (and in JSON mode the closing event) and returns its exit code.
fn report(ui: &Ui, environment: &str, e: DeployError, json: bool) -> i32 {
    ui.error(&UserError { message: e.message.clone(), hint: e.hint.clone(), details: None });
    let kind = e.kind;
    if json {
        emit_json(&Stamped::now(slipway_deploy::finished(environment, &Err(e))));
    }
    exit_code(kind)
}

pub(crate) fn emit_json<T: serde::Serialize>(v: &T) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = writeln!(out);
}

/// Where the engine's events go: JSON lines on stdout with `--json`, else timed lines on
/// stderr for people.
pub(crate) fn sink(ui: &Ui, json: bool) -> slipway_deploy::Sink {
    let start = Instant::now();
    let color = ui.color;
    Arc::new(move |e: Stamped<DeployEvent>| {
        if json {
            emit_json(&e);
            return;
        }
        if let DeployEvent::Progress { message, .. } = &e.event {
            let t = format!("[{:>6.1}s]", start.elapsed().as_secs_f64());
            if color {
                eprintln!("\x1b[2m{t}\x1b[0m {message}");
            } else {
                eprintln!("{t} {message}");
            }
        }
    })
}

async fn open_store(data: &Path) -> Result<Store, DeployError> {
    Ok(Store::open(data).await?)
}

async fn engine(data: &Path, ui: &Ui, common: &CommonArgs) -> Result<Engine, DeployError> {
    let config = EngineConfig {
        data_dir: data.to_path_buf(),
        owner: slipway_sys::whoami::process_label(),
        // A crashed deploy holds its environment at most this long (SLIPWAY_LOCK_LEASE, e.g. `15s`).
        lease: std::env::var("SLIPWAY_LOCK_LEASE")
            .ok()
            .and_then(|s| slipway_pipeline::duration::parse(&s).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(15)),
        lock_wait: common.wait,
        approval_wait: common.wait,
    };
    Ok(Engine::new(open_store(data).await?, config, sink(ui, common.json)))
}

fn actor() -> Actor {
    Actor::user(slipway_sys::whoami::user())
}

/// Runs a request until it ends or the user interrupts it (Ctrl-C, SIGTERM). An interrupted
/// request stops where it is and the environment is repaired at once: it goes back to its
/// current release, and the release records that it was interrupted (exit 130).
async fn interruptible(
    engine: &Engine,
    env: &Environment,
    work: impl std::future::Future<Output = Result<Outcome, DeployError>>,
) -> Result<Outcome, DeployError> {
    let interrupts = slipway_sys::signals::Interrupts::install();
    tokio::select! {
        r = work => r,
        () = interrupts.next() => {
            let repaired = engine.interrupted(env).await;
            Err(DeployError::new(ErrorKind::Interrupted, format!("the deploy to `{}` was interrupted", env.name)).hint(
                match repaired {
                    Ok(_) => format!("`{}` is back on its current release; see `slipway history {}`", env.name, env.name),
                    Err(r) => format!("repairing failed ({}); `slipway repair {}` retries it", r.message, env.name),
                },
            ))
        }
    }
}

fn finish(ui: &Ui, env: &str, json: bool, r: Result<Outcome, DeployError>) -> i32 {
    let o = match r {
        Ok(o) => o,
        Err(e) => return report(ui, env, e, json),
    };
    if json {
        emit_json(&Stamped::now(slipway_deploy::finished(env, &Ok(o))));
    } else if o.unchanged {
        println!(
            "{} already runs {} (release #{}) with these artifacts and settings: nothing to do (--force redeploys)",
            o.release.environment, o.release.version, o.release.id
        );
    } else {
        println!(
            "{} {} {} (release #{}) in {:.1}s — {}",
            ui.paint("32;1", "deployed"),
            o.release.environment,
            o.release.version,
            o.release.id,
            o.took.as_secs_f64(),
            o.url
        );
    }
    exit::OK
}

/// Runs `work` on the environment `name` (with the pipeline file's others) and an engine;
/// an unknown environment or a store that does not open is reported as the command's error.
fn with_env(
    root: &Path,
    data: &Path,
    ui: &Ui,
    common: &CommonArgs,
    name: &str,
    work: impl AsyncFnOnce(&Engine, &Environment, &[Environment]) -> Result<i32>,
) -> Result<i32> {
    let envs = environments(root, common.file.as_deref(), ui)?;
    runtime()?.block_on(async {
        let env = match find_env(&envs, name) {
            Ok(e) => e,
            Err(e) => return Ok(report(ui, name, e, common.json)),
        };
        match engine(data, ui, common).await {
            Ok(engine) => work(&engine, env, &envs).await,
            Err(e) => Ok(report(ui, &env.name, e, common.json)),
        }
    })
}

pub fn deploy(root: &Path, data: &Path, args: DeployArgs, ui: &Ui) -> Result<i32> {
    if let Some(r) = args.common.on.remote()? {
        return crate::remote::deploy(&r, root, &args, ui);
    }
    let json = args.common.json;
    let credentials = match &args.image {
        Some(reference) => {
            let password = args.password_stdin.then(read_password).transpose()?;
            let host = reference.split('/').next().unwrap_or("");
            slipway_oci::credentials::lookup(host, args.username.clone(), password)
                .map_err(|e| UserError::new(e.to_string()))?
                .map(|c| PullCredentials { username: c.username, password: c.password })
        }
        None => None,
    };
    with_env(root, data, ui, &args.common, &args.env, async |engine, env, _| {
        let wanted = Wanted {
            project: root,
            path: args.artifacts.as_deref(),
            version: args.version.as_deref(),
            image: args.image.as_deref(),
            credentials,
        };
        if args.dry_run {
            return Ok(match engine.dry_run(env, &wanted).await {
                Ok(lines) => {
                    println!("{}", lines.join("\n"));
                    exit::OK
                }
                Err(e) => report(ui, &env.name, e, json),
            });
        }
        let who = actor();
        let set = match slipway_deploy::artifacts::resolve(engine.store(), data, env, &wanted).await {
            Ok(s) => s,
            Err(e) => {
                let e = engine.record_refusal(&who, env, wanted.version.or(wanted.image), e).await;
                return Ok(report(ui, &env.name, e, json));
            }
        };
        let branch = slipway_git::Checkout::read(root).branch;
        let work = engine.deploy(&who, env, &set, branch, args.force);
        Ok(finish(ui, &env.name, json, interruptible(engine, env, work).await))
    })
}

fn read_password() -> Result<String> {
    let mut p = String::new();
    std::io::stdin().read_line(&mut p)?;
    Ok(p.trim_end_matches(['\n', '\r']).to_string())
}

pub fn promote(root: &Path, data: &Path, args: PromoteArgs, ui: &Ui) -> Result<i32> {
    if let Some(r) = args.common.on.remote()? {
        return crate::remote::promote(&r, &args, ui);
    }
    let json = args.common.json;
    with_env(root, data, ui, &args.common, &args.to, async |engine, to, envs| {
        let from = match find_env(envs, &args.from) {
            Ok(f) => f,
            Err(e) => return Ok(report(ui, &args.from, e, json)),
        };
        let who = actor();
        let work = engine.promote(&who, from, to);
        Ok(finish(ui, &to.name, json, interruptible(engine, to, work).await))
    })
}

pub fn rollback(root: &Path, data: &Path, args: RollbackArgs, ui: &Ui) -> Result<i32> {
    if let Some(r) = args.common.on.remote()? {
        return crate::remote::rollback(&r, &args, ui);
    }
    let json = args.common.json;
    with_env(root, data, ui, &args.common, &args.env, async |engine, env, _| {
        let who = actor();
        let work = engine.rollback(&who, env, args.to.as_deref());
        Ok(finish(ui, &env.name, json, interruptible(engine, env, work).await))
    })
}

pub fn adopt(root: &Path, data: &Path, args: AdoptArgs, ui: &Ui) -> Result<i32> {
    if args.common.on.server.is_some() {
        return Err(UserError::new(format!("`{}` works on this machine's environments only", "adopt"))
            .hint("run it on the server's machine, without --server (unset SLIPWAY_SERVER)")
            .into());
    }
    with_env(root, data, ui, &args.common, &args.env, async |engine, env, _| match engine.adopt(&actor(), env).await {
        Ok(r) => {
            if args.common.json {
                emit_json(&slipway_deploy::views::release_json(&r));
            } else {
                println!(
                    "{}: adopted {} as release #{}, {} instance(s), recorded as they run; nothing was restarted",
                    env.name, r.version, r.id, r.config.instances
                );
            }
            Ok(exit::OK)
        }
        Err(e) => Ok(report(ui, &env.name, e, args.common.json)),
    })
}

pub fn repair(root: &Path, data: &Path, args: RepairArgs, ui: &Ui) -> Result<i32> {
    if args.common.on.server.is_some() {
        return Err(UserError::new(format!("`{}` works on this machine's environments only", "repair"))
            .hint("run it on the server's machine, without --server (unset SLIPWAY_SERVER)")
            .into());
    }
    with_env(root, data, ui, &args.common, &args.env, async |engine, env, _| match engine.repair(env).await {
        Ok(lines) if lines.is_empty() => {
            println!("{}: no deploy was left mid-way; nothing to repair (`slipway status` shows what runs)", env.name);
            Ok(exit::OK)
        }
        Ok(lines) => {
            for l in lines {
                println!("{}: {l}", env.name);
            }
            Ok(exit::OK)
        }
        Err(e) => Ok(report(ui, &env.name, e, args.common.json)),
    })
}

pub fn approve(root: &Path, data: &Path, args: ApproveArgs, ui: &Ui) -> Result<i32> {
    if let Some(r) = args.on.remote()? {
        // On a server the approver is whoever the token belongs to: no name to choose.
        if let Some(name) = &args.approver {
            return Err(UserError::new(format!(
                "`--as {name}` does not work with --server: the server approves as the token's user"
            ))
            .hint("sign in as the approver (`slipway login --user NAME`), or drop --as")
            .into());
        }
        return crate::remote::approve(&r, &args.env, args.release, ui);
    }
    let common = CommonArgs { file: args.file.clone(), wait: Duration::ZERO, json: false, on: Default::default() };
    with_env(root, data, ui, &common, &args.env, async |engine, env, _| {
        let who = args.approver.clone().map_or_else(actor, Actor::user);
        match engine.approve(&who, env, args.release).await {
            Ok(r) => {
                println!("{} approved release #{} ({}) of {}", who.name, r.id, r.version, env.name);
                Ok(exit::OK)
            }
            Err(e) => Ok(report(ui, &env.name, e, false)),
        }
    })
}

pub fn status(root: &Path, data: &Path, args: StatusArgs, ui: &Ui) -> Result<i32> {
    if let Some(r) = args.on.remote()? {
        return crate::remote::status(&r, args.env.as_deref(), args.json, ui);
    }
    let envs = environments_if_any(root, args.file.as_deref(), ui)?;
    runtime()?.block_on(async {
        let common = CommonArgs { file: None, wait: Duration::ZERO, json: false, on: Default::default() };
        let engine = match engine(data, ui, &common).await {
            Ok(e) => e,
            Err(e) => return Ok(report(ui, "", e, args.json)),
        };
        let states = match engine.observe_all(&envs, args.env.as_deref()).await {
            Ok(s) => s,
            Err(e) => {
                let e = match args.env.as_deref().map(|only| find_env(&envs, only)) {
                    Some(Err(better)) if !envs.is_empty() => better,
                    _ => e,
                };
                return Ok(report(ui, args.env.as_deref().unwrap_or(""), e, args.json));
            }
        };
        let code = match states.iter().any(|s| s.status.needs_attention()) {
            true => exit::ATTENTION,
            false => exit::OK,
        };
        if args.json {
            let list: Vec<serde_json::Value> = states.iter().map(slipway_deploy::views::state_json).collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(code);
        }
        if states.is_empty() {
            println!("no environments: add an `environments:` section to the pipeline file (docs/deploy.md)");
            return Ok(exit::OK);
        }
        let now = now_ms();
        let rows: Vec<[String; 6]> = states
            .iter()
            .map(|s| {
                [
                    s.environment.clone(),
                    s.version.clone().unwrap_or_else(|| "-".into()),
                    s.status.as_str().to_string(),
                    format!("{}/{}", s.healthy, s.total),
                    s.updated_at_ms.map_or("-".into(), |t| ago(t, now)),
                    s.url.clone(),
                ]
            })
            .collect();
        print_table(ui, &["ENVIRONMENT", "VERSION", "STATUS", "INSTANCES", "UPDATED", "URL"], &rows, |col, v| {
            (col == 2).then(|| status_color(v))
        });
        for s in states.iter().filter(|s| s.detail.is_some()) {
            eprintln!("{}: {}", s.environment, s.detail.as_deref().unwrap_or(""));
        }
        Ok(code)
    })
}

pub fn history(root: &Path, data: &Path, args: HistoryArgs, ui: &Ui) -> Result<i32> {
    if let Some(r) = args.on.remote()? {
        return crate::remote::history(&r, &args.env, args.limit, args.json, ui);
    }
    let envs = environments_if_any(root, None, ui)?;
    runtime()?.block_on(async {
        let store = match open_store(data).await {
            Ok(s) => s,
            Err(e) => return Ok(report(ui, &args.env, e, args.json)),
        };
        let releases = store.history(&args.env, args.limit).await?;
        if releases.is_empty()
            && let Err(e) = find_env(&envs, &args.env)
        {
            return Ok(report(ui, &args.env, e, args.json));
        }
        if args.json {
            let mut list = Vec::new();
            for r in &releases {
                let mut v = slipway_deploy::views::release_json(r);
                if args.steps {
                    v["steps"] = serde_json::to_value(store.steps(r.id).await?)?;
                }
                list.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(exit::OK);
        }
        let now = now_ms();
        let rows: Vec<[String; 7]> = releases
            .iter()
            .map(|r| {
                [
                    format!("#{}", r.id),
                    r.version.clone(),
                    r.reason.to_string(),
                    r.status.as_str().replace('_', " "),
                    r.duration_ms().map_or("-".into(), |d| format!("{:.1}s", d as f64 / 1000.0)),
                    ago(r.created_at_ms, now),
                    r.actor.clone(),
                ]
            })
            .collect();
        print_table(ui, &["RELEASE", "VERSION", "REASON", "OUTCOME", "DURATION", "WHEN", "BY"], &rows, |col, v| {
            (col == 3).then(|| outcome_color(v))
        });
        for r in &releases {
            if let Some(d) = &r.status_detail {
                println!("  #{}: {d}", r.id);
            }
            if args.steps {
                for s in store.steps(r.id).await? {
                    println!("    #{} step {}: {} {}", r.id, s.seq, s.name, s.detail);
                }
            }
        }
        Ok(exit::OK)
    })
}

pub fn logs(root: &Path, data: &Path, env: &str, lines: usize, follow: bool, ui: &Ui) -> Result<i32> {
    let envs = environments_if_any(root, None, ui)?;
    let declared = envs.iter().find(|e| e.name == env);
    if follow && declared.is_some_and(|e| e.agent.is_some()) {
        return Err(UserError::new(format!("`-F` is not available for `{env}`: its agent is on another machine"))
            .hint("leave out -F to print the last lines")
            .into());
    }
    let logs = match runtime()?.block_on(slipway_deploy::observe::logs(data, declared, env, lines)) {
        Ok(l) => l,
        Err(e) => return Ok(report(ui, env, e, false)),
    };
    print!("{}", logs.text);
    if let (true, Some(file)) = (follow, &logs.file) {
        crate::ui::follow(file, std::fs::metadata(file).map_or(0, |m| m.len()));
    }
    Ok(exit::OK)
}

// ----- the agent ---------------------------------------------------------------------------

pub fn agent(root: Option<&Path>, data: &Path, args: AgentArgs, ui: &Ui) -> Result<i32> {
    let client = AgentClient::new(slipway_agent::socket_path(data));
    let rt = runtime()?;
    match args.action.unwrap_or(AgentAction::Run) {
        AgentAction::Run => {
            // Colour only for a terminal: `agent start` writes this to agent.log.
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(ui.color)
                .with_target(false)
                .try_init();
            let config =
                slipway_agent::AgentConfig { data_dir: data.to_path_buf(), metrics_listen: args.metrics_listen };
            if let Some(server) = args.server {
                let Some(token) = args.token else {
                    return Err(UserError::new("`--server` needs `--token` (or SLIPWAY_TOKEN)")
                        .hint("an admin makes agent tokens: `slipway token create ci1 --agent NAME` (docs/access.md)")
                        .into());
                };
                let name = args.name.unwrap_or_else(slipway_sys::whoami::hostname);
                if let Err(why) = slipway_model::names::check_agent(&name) {
                    return Err(UserError::new(format!("--name: {why}"))
                        .hint("name the agent as environments name it (`agent: {name: web-1}`), e.g. `--name web-1`")
                        .into());
                }
                let join = crate::servercmd::Join {
                    server,
                    token,
                    name,
                    concurrency: args.concurrency.max(1),
                    tags: args.tags.clone(),
                };
                return crate::servercmd::agent_with_server(data, join, config, ui);
            }
            let interrupts = slipway_sys::signals::Interrupts::install();
            match rt.block_on(slipway_agent::run(config, async move { interrupts.next().await })) {
                Ok(()) => Ok(exit::OK),
                Err(slipway_agent::AgentError::AlreadyRunning(d)) => {
                    Err(UserError::new(format!("an agent already runs for {}", d.display()))
                        .hint("stop it with `slipway agent stop`, or use another --data-dir")
                        .into())
                }
                Err(e) => Err(e.into()),
            }
        }
        AgentAction::Start => {
            use slipway_agent::control::{self, StartError};
            match rt.block_on(control::start(&std::env::current_exe()?, data, args.metrics_listen)) {
                Ok(s) if !s.new => {
                    println!("an agent already runs (pid {}) at {}", s.info.pid, client.socket().display())
                }
                Ok(s) => println!(
                    "agent started (pid {}) at {}; log: {}",
                    s.info.pid,
                    client.socket().display(),
                    s.log.display()
                ),
                Err(StartError::Exited { status, log_tail }) => {
                    return Err(UserError::new(format!("the agent exited at start ({status})"))
                        .hint(log_tail.join("\n  "))
                        .into());
                }
                Err(e) => return Err(e.into()),
            }
            // An agent that lost its state runs nothing: every environment with a current
            // release in the store is brought back to it, and each is named.
            let declared = match root {
                Some(r) => environments_if_any(r, None, ui).unwrap_or_default(),
                None => Vec::new(),
            };
            let common = CommonArgs { file: None, wait: Duration::from_secs(60), json: false, on: Default::default() };
            let restored = rt.block_on(async {
                let engine = engine(data, ui, &common).await?;
                engine.restore_all(&declared).await
            });
            let mut code = exit::OK;
            match restored {
                Ok(list) => {
                    for (name, r) in list {
                        match r {
                            Ok(Some(what)) => println!("restored `{name}` from the store: {what}"),
                            Ok(None) => {}
                            Err(e) => {
                                let hint = e.hint.clone().unwrap_or_else(|| format!("see `slipway status {name}`"));
                                ui.error(
                                    &UserError::new(format!("could not restore `{name}`: {}", e.message)).hint(hint),
                                );
                                code = exit_code(e.kind);
                            }
                        }
                    }
                }
                Err(e) => {
                    ui.error(&UserError::new(format!("could not restore environments from the store: {}", e.message)));
                    code = exit_code(e.kind);
                }
            }
            Ok(code)
        }
        AgentAction::Stop => {
            match rt.block_on(slipway_agent::control::stop(data)) {
                Some(pid) => println!("agent (pid {pid}) stopped"),
                None => println!("no agent runs at {}", client.socket().display()),
            }
            Ok(exit::OK)
        }
        AgentAction::Status => {
            match rt.block_on(async { Ok::<_, slipway_api::ApiError>((client.info().await?, client.envs().await?)) }) {
                Ok((info, envs)) => {
                    println!("agent {} (pid {}) at {}", info.version, info.pid, client.socket().display());
                    for e in envs {
                        let groups: Vec<String> = e
                            .groups
                            .iter()
                            .map(|g| {
                                format!("{} {}/{} healthy, weight {}", g.version, g.healthy(), g.desired, g.weight)
                            })
                            .collect();
                        println!("  {} on {}: {}", e.name, e.listen, groups.join("; "));
                    }
                    Ok(exit::OK)
                }
                Err(e) => Ok(report(ui, "", e.into(), false)),
            }
        }
    }
}
