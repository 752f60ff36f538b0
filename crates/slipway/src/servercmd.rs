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
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    slipway_pipeline::duration::parse(s).map_err(|e| e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn tracing_init(ui: &Ui) {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(ui.color).with_target(false).try_init();
}

pub fn server(data: &Path, args: ServerArgs, ui: &Ui) -> Result<i32> {
    tracing_init(ui);
    let rt = runtime()?;
    let config = slipway_server::ServerConfig {
        listen: args.listen,
        data_dir: data.to_path_buf(),
        database_url: args.database_url,
        lease: args.lease,
    };
    rt.block_on(async {
        let server = match slipway_server::Server::start(config).await {
            Ok(s) => s,
            Err(slipway_server::ServerError::Io { what, source }) if source.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(UserError::new(format!("{what}: the address is in use"))
                    .hint("another process listens there (`ss -ltnp`): stop it, or choose another --listen")
                    .into());
            }
            Err(e) => return Err(anyhow::Error::from(e)),
        };
        if let Some(token) = &server.admin_token {
            println!("admin token (shown once; the server keeps only its hash): {token}");
        }
        println!("slipway server listening on http://{}", server.addr);
        let interrupts = slipway_sys::signals::Interrupts::install();
        server.serve(async move { interrupts.next().await }).await?;
        Ok(exit::OK)
    })
}

/// `slipway agent --server URL --token T`: the job worker beside the host agent.
pub struct Join {
    pub server: String,
    pub token: String,
    pub name: String,
    pub concurrency: usize,
}

pub fn agent_with_server(data: &Path, join: Join, host: slipway_agent::AgentConfig, ui: &Ui) -> Result<i32> {
    tracing_init(ui);
    let rt = runtime()?;
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = std::sync::Arc::new(stop_tx);
        let interrupts = slipway_sys::signals::Interrupts::install();
        let on_signal = std::sync::Arc::clone(&stop_tx);
        tokio::spawn(async move {
            interrupts.next().await;
            let _ = on_signal.send(true);
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
        };
        let stop = stop_tx_for_worker(&stop_rx);
        let worker = async {
            let r = slipway_server::worker::run(cfg, stopped(stop_rx.clone())).await;
            // A worker that cannot join stops the host agent too.
            stop();
            r
        };
        let (worker, agent) = tokio::join!(worker, slipway_agent::run(host, stopped(stop_rx.clone())));
        match (worker, agent) {
            (Err(e), _) => Err(UserError::new(e.to_string())
                .hint("check --server and --token (SLIPWAY_SERVER, SLIPWAY_TOKEN); an admin makes agent tokens with `POST /api/v1/tokens`")
                .into()),
            (_, Err(e)) => Err(anyhow::Error::msg(e.to_string())),
            _ => Ok(exit::OK),
        }
    })
}
