//! `slipway server` and the server side of `slipway agent --server URL`: wiring only; the
//! server and the job protocol live in slipway-server.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::ui::{Ui, UserError, exit};

#[derive(Args)]
pub struct ServerArgs {
    /// Where the API, webhooks and the agents' protocol listen.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8420")]
    pub listen: SocketAddr,
    /// `postgres://USER@HOST/DB` (default: SQLite in the data directory).
    #[arg(long, value_name = "URL", env = "SLIPWAY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// How long an agent holds a job without renewing it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
    /// Forget pipelines that ended longer ago than this (`90d`), with their logs and
    /// artifacts; releases keep naming them. Default: keep everything.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retention: Option<Duration>,
    /// Also run an agent in this process, over the same protocol (a one-machine install).
    #[arg(long)]
    pub with_agent: bool,
    /// Write the admin token made at the first start to this file (0600) instead of printing
    /// it, so it never reaches a log (systemd's journal).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The access file: roles, groups, bindings, protected environments (docs/access.md).
    /// Default: `access.yml` in the data directory, when it exists; else the built-in roles.
    #[arg(long, value_name = "FILE", env = "SLIPWAY_ACCESS")]
    pub access: Option<std::path::PathBuf>,
    /// Prometheus rule files the server evaluates (besides each project's `alerts:`).
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<std::path::PathBuf>,
    /// How often series are collected and alert rules evaluated.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub monitor_interval: Duration,
    /// How often each GitOps application's config repository is looked at without a webhook.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub gitops_interval: Duration,
    /// A push makes every GitOps application of the repository look (as Argo CD does), not
    /// only those whose desired-state file it changed.
    #[arg(long)]
    pub gitops_refresh_all: bool,
    /// How long collected series are kept (in memory).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub metrics_retention: Duration,
    /// The notification file: receivers (webhook, Slack, e-mail), routes, Alertmanagers
    /// (docs/monitoring.md). Default: `notify.yml` in the data directory, when it exists.
    #[arg(long, value_name = "FILE", env = "SLIPWAY_NOTIFY")]
    pub notify: Option<std::path::PathBuf>,
    /// The address people reach the server at, for the links in notifications (default: the
    /// notification file's `external_url`, else http://LISTEN).
    #[arg(long, value_name = "URL")]
    pub external_url: Option<String>,
    /// CI jobs the in-process agent runs at once.
    #[arg(long, value_name = "N", default_value_t = 2, requires = "with_agent")]
    pub concurrency: usize,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    slipway_pipeline::duration::parse(s).map_err(|e| e.to_string())
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn tracing_init(ui: &Ui) {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(ui.color).with_target(false).try_init();
}

/// A line on stdout that a closed pipe cannot turn into a crash (the server runs on).
fn say(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Reads a rule file (every error at its place, exit 2).
fn load_rules(path: &Path, ui: &Ui) -> Result<slipway_monitor::rules::RuleFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UserError::new(format!("--rules {}: {e}", path.display())).hint("give a readable rule file"))?;
    let mut sources = slipway_pipeline::SourceMap::default();
    slipway_pipeline::load_rules(path, &text, &mut sources).map_err(|diags| {
        for d in &diags {
            ui.diagnostic(&sources, d);
        }
        UserError::new(format!("the rule file {} has errors; nothing was started", path.display())).into()
    })
}

/// Reads the access file (every error at its place, exit 2), or the defaults.
pub fn load_access(data: &Path, file: Option<&Path>, ui: &Ui) -> Result<slipway_model::access::AccessConfig> {
    let default = data.join("access.yml");
    let path = match file {
        Some(f) => f.to_path_buf(),
        None if default.exists() => default,
        None => return Ok(slipway_model::access::AccessConfig::default()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        UserError::new(format!("the access file {}: {e}", path.display()))
            .hint("give --access a readable file (docs/access.md shows its format)")
    })?;
    let mut sources = slipway_pipeline::SourceMap::default();
    match slipway_pipeline::load_access(&path, &text, &mut sources) {
        Ok(c) => Ok(c),
        Err(diags) => {
            let n = diags.iter().filter(|d| d.severity == slipway_pipeline::Severity::Error).count();
            for d in &diags {
                ui.diagnostic(&sources, d);
            }
            Err(UserError::new(format!("the access file {} has {n} error(s); nothing was started", path.display()))
                .into())
        }
    }
}

/// Reads the notification file (every error at its place, exit 2), or none; secrets in
/// `*_file` settings must be readable now.
fn load_notify(data: &Path, file: Option<&Path>, ui: &Ui) -> Result<slipway_monitor::channels::NotifyConfig> {
    let default = data.join("notify.yml");
    let path = match file {
        Some(f) => f.to_path_buf(),
        None if default.exists() => default,
        None => return Ok(Default::default()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        UserError::new(format!("the notification file {}: {e}", path.display()))
            .hint("give --notify a readable file (docs/monitoring.md shows its format)")
    })?;
    let mut sources = slipway_pipeline::SourceMap::default();
    let config = match slipway_pipeline::load_notify(&path, &text, &mut sources) {
        Ok(c) => c,
        Err(diags) => {
            let n = diags.iter().filter(|d| d.severity == slipway_pipeline::Severity::Error).count();
            for d in &diags {
                ui.diagnostic(&sources, d);
            }
            return Err(UserError::new(format!(
                "the notification file {} has {n} error(s); nothing was started",
                path.display()
            ))
            .into());
        }
    };
    use slipway_monitor::channels::{Channel, Secret};
    let check = |s: &Secret, what: String| -> Result<()> {
        if let Secret::File(f) = s {
            s.reveal().map_err(|e| {
                UserError::new(format!("{}: {what}: {}: {e}", path.display(), f.display()))
                    .hint("the server reads it at every delivery: make it readable by the server's user")
            })?;
        }
        Ok(())
    };
    for r in &config.receivers {
        for (name, c) in r.channels() {
            let what = format!("receiver `{}` {name}", r.name);
            match c {
                Channel::Webhook(w) => {
                    check(&w.url, what.clone())?;
                    if let Some(b) = &w.bearer {
                        check(b, what)?;
                    }
                }
                Channel::Slack(s) => check(&s.api_url, what)?,
                Channel::Email(e) => {
                    if let Some(p) = &e.auth_password {
                        check(p, what)?;
                    }
                }
            }
        }
    }
    Ok(config)
}

pub fn server(data: &Path, args: ServerArgs, ui: &Ui) -> Result<i32> {
    tracing_init(ui);
    if let Some(file) = &args.admin_token_file {
        // Checked before the token exists: a token made but not written would be lost.
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(file).map_err(|e| {
            UserError::new(format!("--admin-token-file {}: {e}", file.display()))
                .hint("give a file the server's user may write (its directory must exist)")
        })?;
    }
    let access = load_access(data, args.access.as_deref(), ui)?;
    let mut rules = slipway_monitor::rules::RuleFile { groups: Vec::new() };
    for f in &args.rules {
        rules.groups.extend(load_rules(f, ui)?.groups);
    }
    let notify = load_notify(data, args.notify.as_deref(), ui)?;
    if let Some(u) = &args.external_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(UserError::new(format!("--external-url `{u}` is not an http:// or https:// URL")).into());
    }
    if args.monitor_interval.is_zero() {
        return Err(UserError::new("--monitor-interval must be longer than 0").into());
    }
    if args.gitops_interval.is_zero() {
        return Err(UserError::new("--gitops-interval must be longer than 0").into());
    }
    let rt = runtime()?;
    let config = slipway_server::ServerConfig {
        access,
        rules,
        monitor_interval: args.monitor_interval,
        gitops_interval: args.gitops_interval,
        gitops_refresh_all: args.gitops_refresh_all,
        metrics_retention: args.metrics_retention,
        external_url: args.external_url.clone().or_else(|| notify.external_url.clone()),
        notify,
        listen: args.listen,
        data_dir: data.to_path_buf(),
        database_url: args.database_url,
        lease: args.lease,
        retention: args.retention.filter(|d| !d.is_zero()),
    };
    rt.block_on(async {
        let server = match slipway_server::Server::start(config).await {
            Ok(s) => s,
            Err(slipway_server::ServerError::Io { what, source }) if source.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(UserError::new(format!("{what}: the address is in use"))
                    .hint("another process listens there (`ss -ltnp`): stop it, or choose another --listen")
                    .into());
            }
            Err(slipway_server::ServerError::Store(e)) => return Err(anyhow::Error::from(e)),
            Err(e) => return Err(anyhow::Error::from(e)),
        };
        match (&server.admin_token, &args.admin_token_file) {
            (Some(token), Some(file)) => {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(file)
                    .and_then(|mut f| writeln!(f, "{token}"));
                if let Err(e) = written {
                    return Err(UserError::new(format!("--admin-token-file {}: {e}", file.display()))
                        .hint("the store now has an admin token nobody knows: remove the data directory (or database) and start again with a writable file")
                        .into());
                }
                say(format!("admin token written to {} (0600; the server keeps only its hash)", file.display()));
            }
            (Some(token), None) => say(format!("admin token (shown once; the server keeps only its hash): {token}")),
            (None, _) => {}
        }
        say(format!("slipway server listening on http://{}", server.addr));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let interrupts = slipway_sys::signals::Interrupts::install();
        tokio::spawn(async move {
            interrupts.next().await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let local = match args.with_agent {
            false => None,
            true => {
                // Its own agent token, made now and kept only in this process.
                let token = slipway_server::new_token()?;
                let hash = slipway_server::hash_token(&token);
                let local = slipway_store::NewToken {
                    hash,
                    name: "local".into(),
                    kind: slipway_store::TokenKind::Agent,
                    user: None,
                    scopes: None,
                    agent: Some(slipway_sys::whoami::hostname()),
                    expires_at_ms: None,
                };
                server.state.store.add_token(&local).await?;
                let cfg = slipway_server::worker::WorkerConfig {
                    server: format!("http://{}", server.addr),
                    token,
                    name: slipway_sys::whoami::hostname(),
                    data_dir: data.join("worker"),
                    concurrency: args.concurrency.max(1),
                    tags: Vec::new(),
                    host: Some(slipway_api::socket_path(data)),
                    registry_auth: Some(crate::run::registry_auth()),
                };
                let host = slipway_agent::AgentConfig { data_dir: data.to_path_buf(), metrics_listen: None };
                let (a, b) = (stopped(stop_rx.clone()), stopped(stop_rx.clone()));
                say(format!(
                    "with an agent in this process ({}), hosting environments at {}",
                    cfg.name,
                    data.display()
                ));
                Some(tokio::spawn(async move {
                    let (w, h) = tokio::join!(
                        slipway_server::worker::run(cfg, a, std::future::pending()),
                        slipway_agent::run(host, b)
                    );
                    if let Err(e) = w {
                        eprintln!("error: the in-process agent stopped: {e}");
                    }
                    if let Err(e) = h {
                        eprintln!("error: the in-process host agent stopped: {e}");
                    }
                }))
            }
        };
        server.serve(stopped(stop_rx)).await?;
        if let Some(l) = local {
            let _ = l.await;
        }
        Ok(exit::OK)
    })
}

/// `slipway agent --server URL --token T`: the job worker beside the host agent.
pub struct Join {
    pub server: String,
    pub token: String,
    pub name: String,
    pub concurrency: usize,
    pub tags: Vec<String>,
}

pub fn agent_with_server(data: &Path, join: Join, host: slipway_agent::AgentConfig, ui: &Ui) -> Result<i32> {
    tracing_init(ui);
    let rt = runtime()?;
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = std::sync::Arc::new(stop_tx);
        let interrupts = slipway_sys::signals::Interrupts::install();
        let on_signal = std::sync::Arc::clone(&stop_tx);
        let (back_tx, back_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            interrupts.next().await;
            let _ = on_signal.send(true);
            // A second SIGTERM or Ctrl-C: stop now, handing the running jobs back.
            interrupts.next().await;
            let _ = back_tx.send(());
        });
        let stop_tx_for_worker = |_: &tokio::sync::watch::Receiver<bool>| {
            let tx = std::sync::Arc::clone(&stop_tx);
            move || {
                let _ = tx.send(true);
            }
        };
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let cfg = slipway_server::worker::WorkerConfig {
            server: join.server,
            token: join.token,
            name: join.name,
            data_dir: data.join("worker"),
            concurrency: join.concurrency,
            tags: join.tags,
            host: Some(slipway_api::socket_path(data)),
            registry_auth: Some(crate::run::registry_auth()),
        };
        let stop = stop_tx_for_worker(&stop_rx);
        let worker = async {
            let back = async {
                if back_rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let r = slipway_server::worker::run(cfg, stopped(stop_rx.clone()), back).await;
            // A worker that cannot join stops the host agent too.
            stop();
            r
        };
        let (worker, agent) = tokio::join!(worker, slipway_agent::run(host, stopped(stop_rx.clone())));
        match (worker, agent) {
            (Err(e), _) => Err(UserError::new(e.to_string())
                .hint("check --server and --token (SLIPWAY_SERVER, SLIPWAY_TOKEN); an admin makes agent tokens with `slipway token create NAME --agent AGENT`")
                .into()),
            (_, Err(e)) => Err(anyhow::Error::msg(e.to_string())),
            _ => Ok(exit::OK),
        }
    })
}

// ----- the CLI against a server ------------------------------------------------------------

/// Where the server is and who calls it.
#[derive(Args, Clone)]
pub struct Remote {
    /// The server (`http://HOST:8420`).
    #[arg(long, value_name = "URL", env = "SLIPWAY_SERVER", global = true)]
    pub server: Option<String>,
    /// An API token (default: the one `slipway login` kept for the server).
    #[arg(long, value_name = "TOKEN", env = "SLIPWAY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum ProjectAction {
    /// Watch a repository: its commits get pipelines.
    Add {
        name: String,
        /// A URL git can fetch, or a path on the server's machine.
        #[arg(long)]
        repo: String,
        /// The default branch.
        #[arg(long, default_value = "main")]
        branch: String,
        /// Fetch the remote this often for new commits (webhooks need no polling).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        poll: Option<Duration>,
        /// What the forge signs webhooks with (default: made up and shown once).
        #[arg(long, value_name = "SECRET")]
        webhook_secret: Option<String>,
    },
    /// The projects the server watches.
    List,
}

pub(crate) fn client_error(e: slipway_server::client::ClientError) -> anyhow::Error {
    use slipway_server::client::ClientError;
    match e {
        ClientError::Api { status, message, field, .. } if (400..500).contains(&status) => {
            let mut u = UserError::new(message);
            if let Some(f) = field {
                u = u.hint(format!("the server points at `{f}`"));
            }
            u.into()
        }
        ClientError::Unreachable { url, message } => UserError::new(format!("no server answers at {url}: {message}"))
            .hint("start it with `slipway server`, or check --server / SLIPWAY_SERVER")
            .into(),
        e => anyhow::Error::from(e),
    }
}

pub(crate) fn client(r: &Remote) -> Result<slipway_server::client::ServerClient> {
    let server = r.server.clone().filter(|s| !s.is_empty()).or_else(crate::accesscmd::default_server);
    let Some(server) = server else {
        return Err(UserError::new("which server?")
            .hint("pass --server URL, set SLIPWAY_SERVER, or sign in once with `slipway login --server URL`")
            .into());
    };
    let token = r.token.clone().filter(|t| !t.is_empty()).or_else(|| crate::accesscmd::stored_token(&server));
    let Some(token) = token else {
        return Err(UserError::new(format!("no token for the server at {server}"))
            .hint("sign in with `slipway login --server URL`, or pass --token TOKEN / set SLIPWAY_TOKEN (the admin token the server made at its first start)")
            .into());
    };
    Ok(slipway_server::client::ServerClient::new(&server, &token))
}

pub fn project(action: ProjectAction, remote: Remote, json: bool, ui: &Ui) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        match action {
            ProjectAction::Add { name, repo, branch, poll, webhook_secret } => {
                let p = slipway_api::server::NewProject {
                    name,
                    repo,
                    branch,
                    poll_seconds: poll.map(|d| d.as_secs().max(1)),
                    webhook_secret,
                };
                let v = c.add_project(&p).await.map_err(client_error)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!("project {} watches {} (branch {})", v.name, v.repo, v.branch);
                    if let Some(s) = &v.webhook_secret {
                        println!("webhook secret (shown once): {s}");
                        println!(
                            "webhooks: POST {}/api/v1/webhooks/{{github,gitlab,gitea}}/{}",
                            remote.server.as_deref().unwrap_or_default().trim_end_matches('/'),
                            v.name.replace('/', "%2F")
                        );
                    }
                }
            }
            ProjectAction::List => {
                let list = c.projects().await.map_err(client_error)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    let rows: Vec<[String; 4]> = list
                        .iter()
                        .map(|p| {
                            [
                                p.name.clone(),
                                p.repo.clone(),
                                p.branch.clone(),
                                p.poll_seconds.map_or("-".into(), |s| format!("{s}s")),
                            ]
                        })
                        .collect();
                    crate::ui::print_table(ui, &["PROJECT", "REPOSITORY", "BRANCH", "POLL"], &rows, |_, _| None);
                }
            }
        }
        Ok(exit::OK)
    })
}

fn status_color(col: usize, status_col: usize, v: &str) -> Option<&'static str> {
    (col == status_col).then_some(match v {
        "success" => "32",
        "failed" => "31",
        "running" | "pending" => "36",
        _ => "2",
    })
}

pub fn pipelines(project: Option<String>, limit: u32, remote: Remote, json: bool, ui: &Ui) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        let list = c.pipelines(project.as_deref(), limit).await.map_err(client_error)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(exit::OK);
        }
        let rows: Vec<[String; 6]> = list
            .iter()
            .map(|p| {
                [
                    format!("#{}", p.id),
                    p.project.clone(),
                    p.ref_name.clone().unwrap_or_default(),
                    p.commit.as_deref().map_or(String::new(), |c| c[..c.len().min(8)].to_string()),
                    p.status.clone(),
                    p.source.clone(),
                ]
            })
            .collect();
        crate::ui::print_table(ui, &["PIPELINE", "PROJECT", "REF", "COMMIT", "STATUS", "SOURCE"], &rows, |c, v| {
            status_color(c, 4, v)
        });
        Ok(exit::OK)
    })
}

fn show(p: &slipway_api::server::PipelineView, ui: &Ui) {
    println!(
        "pipeline #{} of {} at {} ({}), {}: {}",
        p.id,
        p.project,
        p.ref_name.as_deref().unwrap_or("-"),
        p.commit.as_deref().map_or("-", |c| &c[..c.len().min(12)]),
        p.source,
        p.status
    );
    println!(
        "  by {}, started by {}, {:.1}s",
        p.author.as_deref().unwrap_or("-"),
        p.triggered_by.as_deref().unwrap_or("-"),
        p.duration_seconds
    );
    if let Some(d) = &p.detail {
        println!("{d}");
    }
    let mut rows: Vec<[String; 6]> = Vec::new();
    for j in &p.jobs {
        rows.push([
            j.name.clone(),
            j.stage.clone(),
            j.status.clone(),
            j.exit_code.map_or(String::new(), |c| c.to_string()),
            j.duration_seconds.map_or(String::new(), |d| format!("{d:.1}s")),
            j.agent.clone().unwrap_or_default(),
        ]);
        // A trigger job's child pipeline, nested under it as `slipway run` shows one.
        let child = j.child.clone().and_then(|c| serde_json::from_value::<slipway_model::run::RunRecord>(c).ok());
        for (above, c) in child.iter().flat_map(|c| c.nested_jobs()) {
            rows.push([
                format!("{}└ {}", "  ".repeat(above.len()), c.name),
                c.stage.clone(),
                c.status.as_str().to_string(),
                c.exit_code.map_or(String::new(), |e| e.to_string()),
                format!("{:.1}s", c.duration_ms as f64 / 1000.0),
                String::new(),
            ]);
        }
    }
    crate::ui::print_table(ui, &["JOB", "STAGE", "STATUS", "EXIT", "DURATION", "AGENT"], &rows, |c, v| {
        status_color(c, 2, v)
    });
}

fn pipeline_code(status: &str) -> i32 {
    match status {
        "success" => exit::OK,
        "canceled" => exit::CANCELED,
        _ => exit::FAILED,
    }
}

pub fn pipeline_show(id: i64, remote: Remote, json: bool, ui: &Ui) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        let p = c.pipeline(id).await.map_err(client_error)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&p)?);
        } else {
            show(&p, ui);
        }
        Ok(exit::OK)
    })
}

/// `K=V` for `--var`.
pub fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

pub fn trigger(
    project: String,
    ref_name: Option<String>,
    vars: Vec<(String, String)>,
    wait: bool,
    remote: Remote,
    json: bool,
    ui: &Ui,
) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        let t = slipway_api::server::Trigger { ref_name, variables: vars };
        let mut p = c.trigger(&project, &t).await.map_err(client_error)?;
        if !json {
            println!("pipeline #{} of {} at {} started", p.id, p.project, p.ref_name.as_deref().unwrap_or("-"));
        }
        if wait {
            while p.status == "running" {
                tokio::time::sleep(Duration::from_millis(250)).await;
                p = c.pipeline(p.id).await.map_err(client_error)?;
            }
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&p)?);
        } else if wait {
            show(&p, ui);
        }
        Ok(if wait { pipeline_code(&p.status) } else { exit::OK })
    })
}

pub fn cancel(id: i64, remote: Remote, ui: &Ui) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        let p = c.cancel(id).await.map_err(client_error)?;
        show(&p, ui);
        Ok(exit::OK)
    })
}

/// A job of a pipeline by name or index.
fn job_index(p: &slipway_api::server::PipelineView, job: &str) -> Result<usize> {
    p.jobs
        .iter()
        .position(|j| j.name == job)
        .or_else(|| job.parse::<usize>().ok().filter(|i| *i < p.jobs.len()))
        .ok_or_else(|| {
            let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
            UserError::new(format!("pipeline #{} has no job `{job}`", p.id))
                .hint(format!("its jobs: {}", names.join(", ")))
                .into()
        })
}

/// `slipway retry ID [JOB]`: every failed job of the pipeline again, or one job that ended.
pub fn retry(id: i64, job: Option<String>, remote: Remote, json: bool, ui: &Ui) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        let index = match &job {
            Some(j) => Some(job_index(&c.pipeline(id).await.map_err(client_error)?, j)?),
            None => None,
        };
        let p = c.retry(id, index).await.map_err(client_error)?;
        match json {
            true => println!("{}", serde_json::to_string_pretty(&p)?),
            false => show(&p, ui),
        }
        Ok(exit::OK)
    })
}

/// `slipway play ID JOB`: a manual job that waits, started.
pub fn play(id: i64, job: String, remote: Remote, json: bool, ui: &Ui) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        let index = job_index(&c.pipeline(id).await.map_err(client_error)?, &job)?;
        let p = c.play(id, index).await.map_err(client_error)?;
        match json {
            true => println!("{}", serde_json::to_string_pretty(&p)?),
            false => show(&p, ui),
        }
        Ok(exit::OK)
    })
}

/// `slipway logs ID JOB [-F]` against a server: the job by name or index.
pub fn logs(id: i64, job: &str, follow: bool, remote: Remote) -> Result<i32> {
    use std::io::Write;
    let c = client(&remote)?;
    runtime()?.block_on(async {
        let p = c.pipeline(id).await.map_err(client_error)?;
        let index = p
            .jobs
            .iter()
            .position(|j| j.name == job)
            .or_else(|| job.parse::<usize>().ok().filter(|i| *i < p.jobs.len()))
            .ok_or_else(|| {
                let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
                UserError::new(format!("pipeline #{id} has no job `{job}`"))
                    .hint(format!("its jobs: {}", names.join(", ")))
            })?;
        let mut offset = 0u64;
        loop {
            let chunk = match c.log(id, index, offset).await {
                Ok(b) => b,
                Err(slipway_server::client::ClientError::Api { status: 404, .. }) => Vec::new(),
                Err(e) => return Err(client_error(e)),
            };
            offset += chunk.len() as u64;
            std::io::stdout().write_all(&chunk)?;
            std::io::stdout().flush()?;
            if !follow {
                return Ok(exit::OK);
            }
            let now = c.pipeline(id).await.map_err(client_error)?;
            let done = !matches!(now.jobs[index].status.as_str(), "running" | "pending" | "created" | "scheduled");
            if done && chunk.is_empty() {
                return Ok(pipeline_code(&now.jobs[index].status));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

#[derive(clap::Subcommand)]
pub enum ScheduleAction {
    /// Run a project's pipeline on a cron schedule (`CI_PIPELINE_SOURCE=schedule`).
    Add {
        project: String,
        /// Five fields, as cron: minute hour day-of-month month day-of-week (`0 3 * * 1-5`).
        #[arg(long, value_name = "EXPR")]
        cron: String,
        /// The IANA time zone the expression is read in.
        #[arg(long, value_name = "ZONE", default_value = "UTC")]
        tz: String,
        /// A branch or tag (default: the project's branch).
        #[arg(long = "ref", value_name = "REF")]
        ref_name: Option<String>,
        /// A variable for its pipelines (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        description: String,
        /// Add it turned off.
        #[arg(long)]
        inactive: bool,
    },
    /// A project's schedules with their next run.
    List { project: String },
    /// Run a schedule's pipeline now (its next run stays).
    Run { project: String, id: i64 },
    /// Turn a schedule back on: it next runs at its next time from now.
    Enable { project: String, id: i64 },
    /// Turn a schedule off.
    Disable { project: String, id: i64 },
    /// Remove a schedule.
    Delete { project: String, id: i64 },
}

pub fn schedule(action: ScheduleAction, remote: Remote, json: bool, ui: &Ui) -> Result<i32> {
    let c = client(&remote)?;
    let show = |v: &slipway_api::server::ScheduleView| -> Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(v)?);
        } else {
            println!(
                "schedule {} of {}: `{}` ({}) on {}, {}",
                v.id,
                v.project,
                v.cron,
                v.cron_timezone,
                v.ref_name,
                match &v.next_run_at {
                    Some(t) => format!("next run {t}"),
                    None => "inactive".into(),
                }
            );
        }
        Ok(())
    };
    let on = matches!(action, ScheduleAction::Enable { .. });
    runtime()?.block_on(async {
        match action {
            ScheduleAction::Add { project, cron, tz, ref_name, vars, description, inactive } => {
                let n = slipway_api::server::NewSchedule {
                    description,
                    cron,
                    cron_timezone: Some(tz),
                    ref_name,
                    variables: vars,
                    active: Some(!inactive),
                };
                show(&c.add_schedule(&project, &n).await.map_err(client_error)?)?;
            }
            ScheduleAction::List { project } => {
                let list = c.schedules(&project).await.map_err(client_error)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                    return Ok(exit::OK);
                }
                let rows: Vec<[String; 7]> = list
                    .iter()
                    .map(|v| {
                        [
                            v.id.to_string(),
                            v.cron.clone(),
                            v.cron_timezone.clone(),
                            v.ref_name.clone(),
                            v.next_run_at.clone().unwrap_or_else(|| "inactive".into()),
                            v.last_pipeline.map_or("-".into(), |p| format!("#{p}")),
                            v.description.clone(),
                        ]
                    })
                    .collect();
                crate::ui::print_table(
                    ui,
                    &["ID", "CRON", "ZONE", "REF", "NEXT RUN", "LAST PIPELINE", "DESCRIPTION"],
                    &rows,
                    |_, _| None,
                );
            }
            ScheduleAction::Run { project, id } => {
                let run = c.play_schedule(&project, id).await.map_err(client_error)?;
                println!("pipeline #{run} of {project} started by schedule {id}");
            }
            ScheduleAction::Enable { project, id } | ScheduleAction::Disable { project, id } => {
                show(&c.set_schedule_active(&project, id, on).await.map_err(client_error)?)?;
            }
            ScheduleAction::Delete { project, id } => {
                c.delete_schedule(&project, id).await.map_err(client_error)?;
                println!("schedule {id} of {project} removed");
            }
        }
        Ok(exit::OK)
    })
}
