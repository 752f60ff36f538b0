//! The deploy surface: `slipway agent`, `deploy`, `promote`, `rollback`, `approve`,
//! `status`, `history` and `logs --env`. Wiring and terminal output only; the engine is
//! `slipway-deploy`, the agent `slipway-agent`, the records `slipway-store`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand};
use slipway_api::AgentClient;
use slipway_deploy::{DeployError, Engine, Reason, artifacts, exit as dexit, plan};
use slipway_pipeline::environment::Environment;
use slipway_store::{Release, ReleaseStatus, Store};

use crate::ui::{Ui, UserError, exit};

/// The data directory: `--data-dir`, `$SLIPWAY_DATA_DIR`, else `$XDG_DATA_HOME/slipway`, else
/// `~/.local/share/slipway`.
pub fn data_dir(given: Option<PathBuf>) -> PathBuf {
    if let Some(d) = given {
        return d;
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("slipway");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/var/lib"), PathBuf::from);
    home.join(".local/share/slipway")
}

#[derive(Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    /// Also serve Prometheus metrics over TCP at this address (the socket always serves /metrics).
    #[arg(long, value_name = "ADDR", global = true)]
    pub metrics_listen: Option<std::net::SocketAddr>,
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
    /// Print the result as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
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
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct RollbackArgs {
    pub env: String,
    /// Roll back to this version (default: the release before the current one).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct ApproveArgs {
    pub env: String,
    /// The release to approve (default: the one waiting).
    pub release: Option<i64>,
    /// Approve as this user (default: $SLIPWAY_USER, else $USER).
    #[arg(long = "as", value_name = "NAME")]
    pub approver: Option<String>,
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Only this environment.
    pub env: Option<String>,
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
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
}

/// Who runs this command: `$SLIPWAY_USER`, `$USER`, `$LOGNAME`, else the user database's
/// name for our uid.
pub fn actor() -> String {
    for var in ["SLIPWAY_USER", "USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var)
            && !u.is_empty()
        {
            return u;
        }
    }
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() }.to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// The pipeline file's environments, with the ssh key and known_hosts paths made absolute
/// (they are relative to the project).
fn environments(root: &Path, file: Option<&Path>, ui: &Ui) -> Result<Vec<Environment>> {
    let mut envs = crate::project::load(root, file, ui)?.pipeline.environments;
    for e in &mut envs {
        if let slipway_pipeline::environment::Target::Ssh(t) = &mut e.target {
            for p in [&mut t.identity, &mut t.known_hosts].into_iter().flatten() {
                let abs = root.join(shellexpand_home(p));
                *p = abs.display().to_string();
            }
        }
    }
    Ok(envs)
}

/// `~/x` → `$HOME/x`.
fn shellexpand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

fn find_env(envs: &[Environment], name: &str) -> Result<Environment, DeployError> {
    if let Some(e) = envs.iter().find(|e| e.name == name) {
        return Ok(e.clone());
    }
    let names: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
    let mut err = DeployError::input(format!("unknown environment `{name}`"));
    err.hint = Some(match slipway_pipeline::diag::did_you_mean(name, names.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if names.is_empty() => "the pipeline file has no `environments:` section (see docs/deploy.md)".into(),
        None => format!("environments: {}", names.join(", ")),
    });
    Err(err)
}

/// Prints a deploy error and returns its exit code.
fn report(ui: &Ui, e: DeployError, json: bool) -> i32 {
    ui.error(&UserError { message: e.message.clone(), hint: e.hint.clone(), details: None });
    if json {
        println!("{}", serde_json::json!({"ok": false, "error": e.message, "hint": e.hint, "exit_code": e.code}));
    }
    e.code
}

fn engine(data: &Path, ui: &Ui, common: &CommonArgs, store: Store) -> Engine {
    let start = Instant::now();
    let color = ui.color;
    Engine {
        store,
        agent: AgentClient::new(slipway_agent::socket_path(data)),
        remote: None,
        data_dir: data.to_path_buf(),
        actor: actor(),
        owner: format!("pid {} on {}", std::process::id(), hostname()),
        lock_wait: common.wait,
        approval_wait: common.wait,
        // A crashed deploy holds its environment at most this long (SLIPWAY_LOCK_LEASE, e.g. `15s`).
        lease: std::env::var("SLIPWAY_LOCK_LEASE")
            .ok()
            .and_then(|s| slipway_pipeline::duration::parse(&s).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(15)),
        active: Default::default(),
        progress: Arc::new(move |line: &str| {
            let t = format!("[{:>6.1}s]", start.elapsed().as_secs_f64());
            if color {
                eprintln!("\x1b[2m{t}\x1b[0m {line}");
            } else {
                eprintln!("{t} {line}");
            }
        }),
    }
}

/// Points the engine at the environment's agent: this machine's, or another machine's through
/// an SSH tunnel (kept open while the returned tunnel lives).
async fn reach(mut engine: Engine, env: &Environment) -> Result<(Engine, Option<slipway_deploy::Tunnel>), DeployError> {
    let Some(remote) = &env.agent else { return Ok((engine, None)) };
    let (tunnel, _conn) = slipway_deploy::agent_tunnel(&remote.ssh).await?;
    engine.agent = AgentClient::new(tunnel.local.clone());
    if let Err(e) = engine.agent.info().await {
        let (host, dir) = (&remote.ssh.hosts[0], &remote.ssh.root);
        return Err(DeployError::new(
            dexit::NO_AGENT,
            format!("no agent answers on {} at {dir}/agent.sock ({e})", host.label()),
        )
        .hint(format!(
            "start it there: `slipway agent start --data-dir {dir}` (or a systemd unit running `slipway agent run`)"
        )));
    }
    engine.remote = Some(remote.ssh.clone());
    Ok((engine, Some(tunnel)))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "localhost".into(), |h| h.trim().to_string())
}

async fn open_store(data: &Path) -> Result<Store, DeployError> {
    Store::open(data).await.map_err(|e| DeployError::new(dexit::FAILED, e.to_string()))
}

/// The newest build manifest: `dist/manifest.json`, or the build artifacts of the latest
/// pipeline runs, whichever is newer.
fn newest_build(root: &Path) -> Option<PathBuf> {
    let mut candidates = vec![root.join("dist")];
    if let Ok(runs) = std::fs::read_dir(root.join(".slipway/runs")) {
        for run in runs.flatten() {
            if let Ok(jobs) = std::fs::read_dir(run.path().join("artifacts")) {
                candidates.extend(jobs.flatten().map(|j| j.path().join("dist")));
            }
        }
    }
    candidates
        .into_iter()
        .filter_map(|d| {
            let m = std::fs::metadata(d.join("manifest.json")).ok()?.modified().ok()?;
            Some((m, d))
        })
        .max_by_key(|(m, _)| *m)
        .map(|(_, d)| d)
}

async fn resolve_artifacts(
    engine: &Engine,
    root: &Path,
    env: &Environment,
    args: &DeployArgs,
) -> Result<artifacts::ArtifactSet, DeployError> {
    let docker = matches!(env.target, slipway_pipeline::environment::Target::Docker(_));
    if let Some(reference) = &args.image {
        if !docker {
            return Err(DeployError::input(format!("--image is for `target: docker`; `{}` runs binaries", env.name))
                .hint("pass --artifacts dist/ (or a binary) instead"));
        }
        // Credentials only travel to the engine for this pull; they are never recorded.
        let host = reference.split('/').next().unwrap_or("");
        let registry = crate::imagecmd::RegistryArgs {
            insecure_registry: false,
            mount_from: Vec::new(),
            registry_ca: None,
            username: args.username.clone(),
            password_stdin: args.password_stdin,
        };
        let creds = crate::imagecmd::credentials(host, &registry)
            .map_err(|e| DeployError::input(e.to_string()))?
            .map(|c| (c.username, c.password));
        let (id, pinned) = slipway_deploy::docker_pull(reference, creds).await?;
        let tag =
            reference.split('@').next().and_then(|r| r.rsplit_once(':')).map(|(_, t)| t).filter(|t| !t.contains('/'));
        let version = match (&args.version, tag) {
            (Some(v), _) => v.clone(),
            (None, Some(t)) if t != "latest" => t.to_string(),
            _ => return Err(DeployError::input(format!("{reference} gives no version")).hint("pass --version V")),
        };
        let binary =
            slipway_store::Artifact { name: pinned, platform: artifacts::host_platform(), sha256: id, size: 0 };
        return Ok(artifacts::ArtifactSet { version, commit: None, binary });
    }
    if docker && (args.artifacts.is_some() || args.version.is_none() || root.join("dist/image.tar").is_file()) {
        let path = match &args.artifacts {
            Some(p) => p.clone(),
            None if root.join("dist/image.tar").is_file() => root.join("dist/image.tar"),
            None => {
                return Err(DeployError::input(format!("`{}` runs containers: no image archive to deploy", env.name))
                    .hint("build one: `slipway image build --tarball dist/image.tar`, or pass --artifacts IMAGE.tar"));
            }
        };
        return artifacts::import_image_archive(&engine.data_dir, &path, args.version.as_deref());
    }
    if args.artifacts.is_none()
        && let Some(v) = &args.version
    {
        if let Some(r) = engine.store.find_version(v).await? {
            if docker {
                if !artifacts::stored_image(&engine.data_dir, &r.artifacts[0].sha256).is_file()
                    && !r.artifacts[0].name.contains("@sha256:")
                {
                    return Err(DeployError::input(format!("the image archive of {v} is no longer stored"))
                        .hint("deploy it from its archive: --artifacts IMAGE.tar"));
                }
            } else {
                artifacts::verify(&engine.data_dir, &r.artifacts[0])?;
            }
            return Ok(artifacts::ArtifactSet { version: r.version, commit: r.commit, binary: r.artifacts[0].clone() });
        }
        let from_build = newest_build(root)
            .map(|d| artifacts::import(&engine.data_dir, &d, env.service.binary.as_deref(), None))
            .transpose()?;
        return match from_build {
            Some(set) if &set.version == v => Ok(set),
            other => Err(DeployError::input(format!(
                "no artifacts of version `{v}`: it was never deployed{}",
                match other {
                    Some(set) => format!(" and the newest build is {}", set.version),
                    None => String::new(),
                }
            ))
            .hint("build it (`slipway go build --version V`), or pass --artifacts PATH")),
        };
    }
    let path = match &args.artifacts {
        Some(p) => p.clone(),
        None => newest_build(root).ok_or_else(|| {
            DeployError::input(format!("no build to deploy in {}", root.display()))
                .hint("build first: `slipway run` (its build job) or `slipway go build`; or pass --artifacts PATH")
        })?,
    };
    artifacts::import(&engine.data_dir, &path, env.service.binary.as_deref(), args.version.as_deref())
}

/// Runs a deploy until it ends or the user interrupts it (Ctrl-C, SIGTERM). An interrupted
/// deploy stops where it is and is repaired at once: the environment goes back to its
/// current release and the release records that it was interrupted (exit 130).
async fn interruptible(
    engine: &Engine,
    env: &Environment,
    deploy: impl std::future::Future<Output = Result<slipway_deploy::Outcome, DeployError>>,
) -> Result<slipway_deploy::Outcome, DeployError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return deploy.await;
    };
    tokio::select! {
        r = deploy => r,
        _ = int.recv() => stopped(engine, env).await,
        _ = term.recv() => stopped(engine, env).await,
    }
}

async fn stopped(engine: &Engine, env: &Environment) -> Result<slipway_deploy::Outcome, DeployError> {
    (engine.progress)("interrupted: putting the current release back");
    let _ = engine.cancel_waiting().await;
    let repaired = engine.repair(env).await;
    let mut e = DeployError::new(exit::CANCELED, format!("the deploy to `{}` was interrupted", env.name));
    e.hint = Some(match repaired {
        Ok(()) => format!("`{}` is back on its current release; see `slipway history {}`", env.name, env.name),
        Err(r) => format!("repairing failed ({}); `slipway status` retries it", r.message),
    });
    Err(e)
}

fn outcome_json(o: &slipway_deploy::Outcome) -> serde_json::Value {
    serde_json::json!({
        "ok": true,
        "environment": o.release.environment,
        "release": o.release.id,
        "version": o.release.version,
        "reason": o.release.reason,
        "status": o.release.status.as_str(),
        "url": o.url,
        "seconds": o.took.as_secs_f64(),
    })
}

fn finish(ui: &Ui, json: bool, r: Result<slipway_deploy::Outcome, DeployError>) -> i32 {
    match r {
        Ok(o) => {
            if json {
                println!("{}", outcome_json(&o));
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
        Err(e) => report(ui, e, json),
    }
}

/// The environment's engine: the store opened, its agent reached (kept while the tunnel lives).
async fn prepare(
    data: &Path,
    ui: &Ui,
    common: &CommonArgs,
    env: &Environment,
) -> Result<(Engine, Option<slipway_deploy::Tunnel>), DeployError> {
    let store = open_store(data).await?;
    reach(engine(data, ui, common, store), env).await
}

pub fn deploy(root: &Path, data: &Path, args: DeployArgs, ui: &Ui) -> Result<i32> {
    let envs = environments(root, args.common.file.as_deref(), ui)?;
    let rt = runtime()?;
    let json = args.common.json;
    rt.block_on(async {
        let env = match find_env(&envs, &args.env) {
            Ok(e) => e,
            Err(e) => return Ok(report(ui, e, json)),
        };
        let (engine, _tunnel) = match prepare(data, ui, &args.common, &env).await {
            Ok(r) => r,
            Err(e) => return Ok(report(ui, e, json)),
        };
        if args.dry_run {
            return Ok(match dry_run(&engine, root, &env, &args).await {
                Ok(()) => exit::OK,
                Err(e) => report(ui, e, json),
            });
        }
        let set = match resolve_artifacts(&engine, root, &env, &args).await {
            Ok(s) => s,
            Err(e) => return Ok(report(ui, e, json)),
        };
        let branch = crate::git::Checkout::read(root).branch;
        if !args.force
            && let Ok(Some(current)) = engine.store.current(&env.name).await
            && current.artifacts.first() == Some(&set.binary)
            && current.config_hash == slipway_deploy::config_hash(&slipway_deploy::config_json(&env))
            && current.status == ReleaseStatus::Healthy
        {
            if json {
                println!("{}", serde_json::json!({"ok": true, "environment": env.name, "release": current.id, "version": current.version, "unchanged": true, "url": format!("http://{}", env.listen)}));
            } else {
                println!(
                    "{} already runs {} (release #{}) with these artifacts and settings: nothing to do (--force redeploys)",
                    env.name, current.version, current.id
                );
            }
            return Ok(exit::OK);
        }
        Ok(finish(ui, json, interruptible(&engine, &env, engine.deploy(&env, &set, branch, Reason::Deploy)).await))
    })
}

async fn dry_run(engine: &Engine, root: &Path, env: &Environment, args: &DeployArgs) -> Result<(), DeployError> {
    // Check the artifacts without storing them.
    let path = match &args.artifacts {
        Some(p) => Some(p.clone()),
        None => newest_build(root),
    };
    let version = match (&args.version, &path) {
        (Some(v), _) => v.clone(),
        (None, _) if matches!(env.target, slipway_pipeline::environment::Target::Docker(_)) => {
            let p = args.artifacts.clone().unwrap_or_else(|| root.join("dist/image.tar"));
            with_scratch(|tmp| artifacts::import_image_archive(tmp, &p, None))?.version
        }
        (None, Some(p)) => with_scratch(|tmp| artifacts::import(tmp, p, env.service.binary.as_deref(), None))?.version,
        (None, None) => {
            return Err(DeployError::input("no build to deploy").hint("build first, or pass --artifacts PATH"));
        }
    };
    let current = engine.store.current(&env.name).await?;
    let running = match engine.agent.env(&env.name).await {
        Ok(Some(s)) => current.as_ref().and_then(|c| s.group(slipway_deploy::group_id_of(c))).map(|g| g.desired),
        _ => None,
    };
    let old = current.as_ref().map(|c| (c.version.as_str(), running.unwrap_or(env.instances)));
    println!(
        "deploy {version} to {} ({}, {} instance(s), entry point {}):",
        env.name,
        env.strategy.name(),
        env.instances,
        env.listen
    );
    for (i, s) in plan::describe(env, old, &version).iter().enumerate() {
        println!("  {}. {s}", i + 1);
    }
    if env.protection.approvals > 0 {
        println!("  (protected: needs {} approval(s) first)", env.protection.approvals);
    }
    Ok(())
}

/// Runs `f` with a scratch data directory that is removed afterwards (a dry run checks the
/// artifacts without keeping a copy).
fn with_scratch<T>(f: impl FnOnce(&Path) -> Result<T, DeployError>) -> Result<T, DeployError> {
    let d = std::env::temp_dir().join(format!("slipway-dry-run-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| DeployError::input(e.to_string()))?;
    let r = f(&d);
    let _ = std::fs::remove_dir_all(&d);
    r
}

pub fn promote(root: &Path, data: &Path, args: PromoteArgs, ui: &Ui) -> Result<i32> {
    let envs = environments(root, args.common.file.as_deref(), ui)?;
    let json = args.common.json;
    runtime()?.block_on(async {
        let (from, to) = match (find_env(&envs, &args.from), find_env(&envs, &args.to)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return Ok(report(ui, e, json)),
        };
        let (engine, _tunnel) = match prepare(data, ui, &args.common, &to).await {
            Ok(r) => r,
            Err(e) => return Ok(report(ui, e, json)),
        };
        Ok(finish(ui, json, interruptible(&engine, &to, engine.promote(&from, &to)).await))
    })
}

pub fn rollback(root: &Path, data: &Path, args: RollbackArgs, ui: &Ui) -> Result<i32> {
    let envs = environments(root, args.common.file.as_deref(), ui)?;
    let json = args.common.json;
    runtime()?.block_on(async {
        let env = match find_env(&envs, &args.env) {
            Ok(e) => e,
            Err(e) => return Ok(report(ui, e, json)),
        };
        let (engine, _tunnel) = match prepare(data, ui, &args.common, &env).await {
            Ok(r) => r,
            Err(e) => return Ok(report(ui, e, json)),
        };
        Ok(finish(ui, json, interruptible(&engine, &env, engine.rollback(&env, args.to.as_deref())).await))
    })
}

pub fn approve(root: &Path, data: &Path, args: ApproveArgs, ui: &Ui) -> Result<i32> {
    let envs = environments(root, args.file.as_deref(), ui)?;
    let common = CommonArgs { file: None, wait: Duration::ZERO, json: false };
    runtime()?.block_on(async {
        let env = match find_env(&envs, &args.env) {
            Ok(e) => e,
            Err(e) => return Ok(report(ui, e, false)),
        };
        let engine = match open_store(data).await {
            Ok(store) => engine(data, ui, &common, store),
            Err(e) => return Ok(report(ui, e, false)),
        };
        let who = args.approver.clone().unwrap_or_else(actor);
        match engine.approve(&env, args.release, &who).await {
            Ok(r) => {
                println!("{who} approved release #{} ({}) of {}", r.id, r.version, env.name);
                Ok(exit::OK)
            }
            Err(e) => Ok(report(ui, e, false)),
        }
    })
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map_or_else(|_| ms.to_string(), |t| t.round(jiff::Unit::Second).map_or(t, |x| x).to_string())
}

fn ago(ms: i64) -> String {
    let secs = (slipway_store::now_ms() - ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// One row of `slipway status`.
struct Row {
    environment: String,
    version: Option<String>,
    status: String,
    healthy: u32,
    total: u32,
    url: String,
    updated_at: Option<i64>,
    detail: Option<String>,
    hosts: Option<Vec<serde_json::Value>>,
}

pub fn status(root: &Path, data: &Path, args: StatusArgs, ui: &Ui) -> Result<i32> {
    let envs = match crate::project::find_source(root, args.file.as_deref()) {
        Ok(_) => environments(root, args.file.as_deref(), ui)?,
        Err(_) => Vec::new(),
    };
    runtime()?.block_on(async {
        let store = match open_store(data).await {
            Ok(s) => s,
            Err(e) => return Ok(report(ui, e, args.json)),
        };
        let common = CommonArgs { file: None, wait: Duration::ZERO, json: args.json };
        let engine = engine(data, ui, &common, store.clone());
        let mut names: Vec<String> = envs.iter().map(|e| e.name.clone()).collect();
        for (n, _) in store.environments().await? {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if let Some(only) = &args.env {
            if !names.contains(only) {
                return Ok(report(
                    ui,
                    find_env(&envs, only).err().unwrap_or_else(|| DeployError::input("?")),
                    args.json,
                ));
            }
            names.retain(|n| n == only);
        }
        let local_up = engine.agent.info().await.is_ok();
        let mut rows = Vec::new();
        for name in &names {
            let env = envs.iter().find(|e| &e.name == name);
            // An environment whose agent is elsewhere is read through its own tunnel.
            let remote = match env.filter(|e| e.agent.is_some()) {
                Some(e) => reach(self::engine(data, ui, &common, store.clone()), e).await.ok(),
                None => None,
            };
            let (engine, agent_up) = match &remote {
                Some((r, _)) => (r, r.agent.info().await.is_ok()),
                None => (&engine, local_up && env.is_none_or(|e| e.agent.is_none())),
            };
            if let Some(env) = env
                && (agent_up || matches!(env.target, slipway_pipeline::environment::Target::Ssh(_)))
            {
                // A deploy that crashed mid-way is repaired here when nobody else holds the lock.
                let _ = engine.repair(env).await;
            }
            let current = store.current(name).await?;
            let unfinished = store.unfinished(name).await?;
            let latest = store.history(name, 1).await?.into_iter().next();
            let live = if agent_up { engine.agent.env(name).await.ok().flatten() } else { None };
            let total = env.map_or_else(
                || current.as_ref().and_then(|c| c.config["instances"].as_u64()).unwrap_or(0) as u32,
                |e| e.instances,
            );
            let healthy = match (&current, &live) {
                (Some(c), Some(l)) => l.group(slipway_deploy::group_id_of(c)).map_or(0, |g| g.healthy()),
                _ => 0,
            };
            let listen = env
                .map(|e| e.listen.clone())
                .or_else(|| current.as_ref().and_then(|c| c.config["listen"].as_str().map(str::to_string)));
            let mut hosts_json = None;
            let mut healthy = healthy;
            let mut total = total;
            let ssh_drift = match (env, &current) {
                (Some(e), Some(c)) if matches!(e.target, slipway_pipeline::environment::Target::Ssh(_)) => {
                    let states = engine.inspect_hosts(e, c).await;
                    total = states.len() as u32;
                    healthy = states.iter().filter(|h| h.matches(c)).count() as u32;
                    hosts_json = Some(
                        states
                            .iter()
                            .map(|h| {
                                serde_json::json!({"host": h.host, "release": h.release_dir, "sha256": h.sha256, "active": h.active, "matches": h.matches(c), "error": h.error})
                            })
                            .collect(),
                    );
                    let drifted: Vec<String> = states
                        .iter()
                        .filter(|h| !h.matches(c))
                        .map(|h| match &h.error {
                            Some(e) => format!("{}: {e}", h.host),
                            None => format!(
                                "{} runs {} ({}), expected {} ({})",
                                h.host,
                                h.release_dir.as_deref().unwrap_or("nothing"),
                                h.active,
                                slipway_deploy::release_dir_name(c),
                                "active"
                            ),
                        })
                        .collect();
                    Some(drifted)
                }
                (Some(e), Some(c))
                    if matches!(e.target, slipway_pipeline::environment::Target::Docker(_))
                        && agent_up
                        && e.agent.is_none() =>
                {
                    // Containers labelled with the environment that the agent does not run as
                    // released: strays, or a group's container on another image.
                    let groups: Vec<i64> = live.as_ref().map(|l| l.groups.iter().map(|g| g.release).collect()).unwrap_or_default();
                    let want = format!("sha256:{}", c.artifacts[0].sha256);
                    match slipway_deploy::docker_containers(name).await {
                        Ok(cs) => {
                            let drifted: Vec<String> = cs
                                .iter()
                                .filter(|k| {
                                    k.release.is_none_or(|r| !groups.contains(&r))
                                        || (k.release == Some(slipway_deploy::group_id_of(c)) && k.image != want)
                                })
                                .map(|k| format!("container {} ({}, image {}) is not part of the release", k.name, k.state, k.image.trim_start_matches("sha256:").chars().take(12).collect::<String>()))
                                .collect();
                            if drifted.is_empty() { None } else { Some(drifted) }
                        }
                        Err(e) => Some(vec![e.message]),
                    }
                }
                _ => None,
            };
            let (status, detail) = if unfinished.iter().any(|r| r.status == ReleaseStatus::Deploying) {
                ("deploying".to_string(), unfinished.last().map(|r| format!("release #{} ({})", r.id, r.version)))
            } else if current.is_none() {
                ("not deployed".to_string(), None)
            } else if let Some(drifted) = &ssh_drift {
                if drifted.is_empty() {
                    ("healthy".to_string(), None)
                } else if healthy == 0 {
                    ("failed".to_string(), Some(format!("drift: {}", drifted.join("; "))))
                } else {
                    ("drift".to_string(), Some(format!("hosts differ from the release record: {}", drifted.join("; "))))
                }
            } else if !agent_up {
                ("unknown".to_string(), Some("no agent is running: `slipway agent start`".to_string()))
            } else if healthy == 0 {
                ("failed".to_string(), Some("no instance is healthy".to_string()))
            } else if healthy < total {
                ("degraded".to_string(), None)
            } else if current.as_ref().is_some_and(|c| c.reason == "auto-rollback")
                || latest.as_ref().is_some_and(|l| l.status == ReleaseStatus::Failed)
            {
                (
                    "rolled back".to_string(),
                    latest.and_then(|l| l.status_detail.map(|d| format!("#{} {}: {d}", l.id, l.version))),
                )
            } else {
                ("healthy".to_string(), None)
            };
            rows.push(Row {
                environment: name.clone(),
                version: current.as_ref().map(|c| c.version.clone()),
                status,
                healthy,
                total,
                url: match env {
                    Some(e) if matches!(e.target, slipway_pipeline::environment::Target::Ssh(_)) => {
                        slipway_deploy::entry_points(e)
                    }
                    _ => listen.map(|l| format!("http://{l}")).unwrap_or_default(),
                },
                updated_at: current.as_ref().map(|c| c.finished_at_ms.unwrap_or(c.created_at_ms)),
                detail,
                hosts: hosts_json,
            });
        }
        if args.json {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let mut v = serde_json::json!({
                        "environment": r.environment,
                        "version": r.version,
                        "status": r.status,
                        "healthy": r.healthy,
                        "total": r.total,
                        "url": r.url,
                        "updated_at": r.updated_at.map(rfc3339),
                    });
                    if let Some(h) = &r.hosts {
                        v["hosts"] = serde_json::Value::Array(h.clone());
                    }
                    v
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else if rows.is_empty() {
            println!("no environments: add an `environments:` section to the pipeline file (docs/deploy.md)");
        } else {
            let table: Vec<[String; 6]> = rows
                .iter()
                .map(|r| {
                    [
                        r.environment.clone(),
                        r.version.clone().unwrap_or_else(|| "-".into()),
                        r.status.clone(),
                        format!("{}/{}", r.healthy, r.total),
                        r.updated_at.map_or("-".into(), ago),
                        r.url.clone(),
                    ]
                })
                .collect();
            print_table(ui, &["ENVIRONMENT", "VERSION", "STATUS", "INSTANCES", "UPDATED", "URL"], &table, |col, v| {
                if col != 2 {
                    return None;
                }
                Some(match v {
                    "healthy" => "32",
                    "deploying" => "36",
                    "degraded" | "rolled back" | "unknown" | "drift" => "33",
                    "failed" => "31",
                    _ => "2",
                })
            });
            for r in rows.iter().filter(|r| r.detail.is_some()) {
                eprintln!("{}: {}", r.environment, r.detail.as_deref().unwrap_or(""));
            }
        }
        Ok(exit::OK)
    })
}

fn print_table<const N: usize>(
    ui: &Ui,
    head: &[&str; N],
    rows: &[[String; N]],
    color: impl Fn(usize, &str) -> Option<&'static str>,
) {
    let mut w = head.map(|h| h.chars().count());
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| cells.join("  ").trim_end().to_string();
    println!("{}", ui.paint("1", &line(head.iter().enumerate().map(|(i, h)| format!("{h:<0$}", w[i])).collect())));
    for r in rows {
        let cells = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let padded = format!("{c}{}", " ".repeat(w[i] - c.chars().count()));
                match color(i, c) {
                    Some(code) => ui.paint(code, &padded),
                    None => padded,
                }
            })
            .collect();
        println!("{}", line(cells));
    }
}

fn release_json(r: &Release) -> serde_json::Value {
    serde_json::json!({
        "release": r.id,
        "environment": r.environment,
        "version": r.version,
        "reason": r.reason,
        "status": r.status.as_str(),
        "detail": r.status_detail,
        "artifacts": r.artifacts,
        "config_hash": r.config_hash,
        "commit": r.commit,
        "branch": r.branch,
        "actor": r.actor,
        "source_release": r.source_release,
        "created_at": rfc3339(r.created_at_ms),
        "started_at": r.started_at_ms.map(rfc3339),
        "finished_at": r.finished_at_ms.map(rfc3339),
        "duration_seconds": match (r.started_at_ms, r.finished_at_ms) {
            (Some(s), Some(f)) => Some((f - s) as f64 / 1000.0),
            _ => None,
        },
    })
}

pub fn history(root: &Path, data: &Path, args: HistoryArgs, ui: &Ui) -> Result<i32> {
    let envs = match crate::project::find_source(root, None) {
        Ok(_) => environments(root, None, ui)?,
        Err(_) => Vec::new(),
    };
    runtime()?.block_on(async {
        let store = match open_store(data).await {
            Ok(s) => s,
            Err(e) => return Ok(report(ui, e, args.json)),
        };
        let releases = store.history(&args.env, args.limit).await?;
        if releases.is_empty()
            && let Err(e) = find_env(&envs, &args.env)
        {
            return Ok(report(ui, e, args.json));
        }
        if args.json {
            let mut list = Vec::new();
            for r in &releases {
                let mut v = release_json(r);
                if args.steps {
                    v["steps"] = serde_json::to_value(store.steps(r.id).await?)?;
                }
                list.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(exit::OK);
        }
        let rows: Vec<[String; 7]> = releases
            .iter()
            .map(|r| {
                let took = match (r.started_at_ms, r.finished_at_ms) {
                    (Some(s), Some(f)) => format!("{:.1}s", (f - s) as f64 / 1000.0),
                    _ => "-".into(),
                };
                [
                    format!("#{}", r.id),
                    r.version.clone(),
                    r.reason.clone(),
                    r.status.as_str().replace('_', " "),
                    took,
                    ago(r.created_at_ms),
                    r.actor.clone(),
                ]
            })
            .collect();
        print_table(ui, &["RELEASE", "VERSION", "REASON", "OUTCOME", "DURATION", "WHEN", "BY"], &rows, |col, v| {
            (col == 3).then_some(match v {
                "healthy" => "32",
                "failed" => "31",
                "deploying" | "queued" => "36",
                _ => "2",
            })
        });
        for r in &releases {
            if let Some(d) = &r.status_detail {
                println!("  #{}: {d}", r.id);
            }
            if args.steps {
                for s in store.steps(r.id).await? {
                    println!("    {:>3}. {} {}", s.seq, s.name, s.detail);
                }
            }
        }
        Ok(exit::OK)
    })
}

pub fn logs(root: &Path, data: &Path, env: &str, lines: usize, follow: bool, ui: &Ui) -> Result<i32> {
    // An environment whose agent is on another machine: its logs come through that agent's API.
    let envs = match crate::project::find_source(root, None) {
        Ok(_) => environments(root, None, ui)?,
        Err(_) => Vec::new(),
    };
    if let Some(e) = envs.iter().find(|e| e.name == env && e.agent.is_some()) {
        if follow {
            return Err(UserError::new(format!("`-F` is not available for `{env}`: its agent is on another machine"))
                .hint("leave out -F to print the last lines")
                .into());
        }
        let common = CommonArgs { file: None, wait: Duration::ZERO, json: false };
        return runtime()?.block_on(async {
            let (engine, _tunnel) = match prepare(data, ui, &common, e).await {
                Ok(r) => r,
                Err(err) => return Ok(report(ui, err, false)),
            };
            match engine.agent.logs(env, lines).await {
                Ok(text) => {
                    print!("{text}");
                    Ok(exit::OK)
                }
                Err(err) => Ok(report(ui, err.into(), false)),
            }
        });
    }
    let path = data.join("agent/logs").join(format!("{env}.log"));
    let text = std::fs::read_to_string(&path).map_err(|_| {
        UserError::new(format!("no logs for environment `{env}` in {}", data.display()))
            .hint("the agent writes them once the environment runs; see `slipway status`")
    })?;
    let all: Vec<&str> = text.lines().collect();
    for l in &all[all.len().saturating_sub(lines)..] {
        println!("{l}");
    }
    if follow {
        use std::io::{Read, Seek};
        let mut pos = text.len() as u64;
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let Ok(mut f) = std::fs::File::open(&path) else { continue };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < pos {
                pos = 0; // rotated
            }
            if len > pos {
                let _ = f.seek(std::io::SeekFrom::Start(pos));
                let mut buf = String::new();
                let _ = f.read_to_string(&mut buf);
                print!("{buf}");
                pos = len;
            }
        }
    }
    Ok(exit::OK)
}

// ----- the agent ---------------------------------------------------------------------------

pub fn agent(data: &Path, args: AgentArgs, ui: &Ui) -> Result<i32> {
    let client = AgentClient::new(slipway_agent::socket_path(data));
    match args.action.unwrap_or(AgentAction::Run) {
        AgentAction::Run => {
            init_tracing();
            let rt = runtime()?;
            let config =
                slipway_agent::AgentConfig { data_dir: data.to_path_buf(), metrics_listen: args.metrics_listen };
            let r = rt.block_on(slipway_agent::run(config, async {
                use tokio::signal::unix::{SignalKind, signal};
                let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
                let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }));
            match r {
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
            let rt = runtime()?;
            if let Ok(info) = rt.block_on(client.info()) {
                println!("an agent already runs (pid {}) at {}", info.pid, client.socket().display());
                return Ok(exit::OK);
            }
            std::fs::create_dir_all(data.join("agent"))?;
            let log_path = data.join("agent/agent.log");
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
            let mut cmd = std::process::Command::new(std::env::current_exe()?);
            cmd.arg("--data-dir").arg(data).arg("agent").arg("run");
            if let Some(m) = args.metrics_listen {
                cmd.arg("--metrics-listen").arg(m.to_string());
            }
            use std::os::unix::process::CommandExt;
            cmd.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
            let mut child = cmd.spawn()?;
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(info) = rt.block_on(client.info()) {
                    println!(
                        "agent started (pid {}) at {}; log: {}",
                        info.pid,
                        client.socket().display(),
                        log_path.display()
                    );
                    return Ok(exit::OK);
                }
                if let Some(st) = child.try_wait()? {
                    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(5).collect();
                    return Err(UserError::new(format!("the agent exited at start ({st})"))
                        .hint(tail.into_iter().rev().collect::<Vec<_>>().join("\n  "))
                        .into());
                }
                if Instant::now() >= deadline {
                    return Err(anyhow::anyhow!("the agent did not answer within 15s; see {}", log_path.display()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        AgentAction::Stop => {
            let rt = runtime()?;
            let Ok(info) = rt.block_on(client.info()) else {
                println!("no agent runs at {}", client.socket().display());
                return Ok(exit::OK);
            };
            // SAFETY: kill(2) on the pid the agent reported about itself.
            unsafe {
                libc::kill(info.pid as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while Path::new(&format!("/proc/{}", info.pid)).exists() && Instant::now() < deadline {
                if std::fs::read_to_string(format!("/proc/{}/stat", info.pid)).is_ok_and(|s| s.contains(") Z ")) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("agent (pid {}) stopped", info.pid);
            Ok(exit::OK)
        }
        AgentAction::Status => {
            let rt = runtime()?;
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
                Err(e) => {
                    let e = DeployError::from(e);
                    Ok(report(ui, e, false))
                }
            }
        }
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).try_init();
}
