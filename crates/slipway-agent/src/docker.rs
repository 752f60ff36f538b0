//! Container instances on the local Docker Engine (its API over /var/run/docker.sock, through
//! bollard): create and start with host networking, labels recording the release, resource
//! limits and the instance's environment; follow the logs; wait for the exit; stop with the
//! grace period (Docker sends SIGTERM, then SIGKILL); remove. Containers carry the agent's
//! label, so a new agent removes what a killed one left.

use std::collections::HashMap;

use crate::logs::{LineCutter, LogSink, Recent};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptions,
};
use futures_util::StreamExt;
use slipway_api::ContainerSpec;

pub const LABEL_AGENT: &str = "dev.slipway.agent";

pub fn connect() -> Result<Docker, String> {
    Docker::connect_with_local_defaults().map_err(|e| format!("the Docker Engine: {e}"))
}

/// What a container instance is started with.
pub struct Launch {
    pub name: String,
    pub spec: ContainerSpec,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub labels: HashMap<String, String>,
    pub stop_grace_secs: i64,
}

/// Creates and starts the container (replacing a stale one of the same name).
pub async fn start(docker: &Docker, l: Launch) -> Result<String, String> {
    let _ = docker.remove_container(&l.name, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
    let body = ContainerCreateBody {
        image: Some(l.spec.image.clone()),
        cmd: if l.args.is_empty() { None } else { Some(l.args) },
        env: Some(l.env),
        working_dir: l.workdir,
        labels: Some(l.labels),
        stop_timeout: Some(l.stop_grace_secs),
        host_config: Some(HostConfig {
            network_mode: Some("host".into()),
            memory: l.spec.memory,
            nano_cpus: l.spec.nano_cpus,
            // The agent is the supervisor: it restarts with back-off and health checks.
            restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::new().name(&l.name).build()), body)
        .await
        .map_err(|e| format!("creating container {}: {e}", l.name))?;
    docker.start_container(&created.id, None).await.map_err(|e| format!("starting container {}: {e}", l.name))?;
    Ok(created.id)
}

/// Follows the container's output into the log, line by line.
pub fn pump_logs(docker: Docker, id: String, prefix: String, log: LogSink, recent: Recent) {
    tokio::spawn(async move {
        let opts = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
        let mut stream = docker.logs(&id, Some(opts));
        let mut cutter = LineCutter::default();
        let mut lines = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            cutter.feed(&chunk.into_bytes(), &mut lines);
            if !crate::logs::send(&mut lines, &prefix, &log, &recent).await {
                return;
            }
        }
        lines.extend(cutter.finish());
        crate::logs::send(&mut lines, &prefix, &log, &recent).await;
    });
}

/// Waits for the container to exit; returns how it ended, then removes it.
pub async fn wait(docker: &Docker, id: &str) -> String {
    let mut stream = docker.wait_container(id, None::<WaitContainerOptions>);
    let how = match stream.next().await {
        Some(Ok(r)) => format!("exited with {}", r.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => format!("exited with {code}"),
        Some(Err(e)) => format!("lost: {e}"),
        None => "exited".into(),
    };
    let _ = docker.remove_container(id, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
    how
}

/// Stops the container: SIGTERM, `grace` seconds, SIGKILL (Docker does both).
pub fn stop(docker: Docker, id: String, grace: i64) {
    tokio::spawn(async move {
        let _ = docker.stop_container(&id, Some(StopContainerOptionsBuilder::new().t(grace as i32).build())).await;
    });
}

/// Loads `sha256:<id>` from `archive` unless the engine has it; true when it loaded.
pub async fn ensure_image(id: &str, archive: &std::path::Path) -> Result<bool, String> {
    let docker = connect()?;
    let image = format!("sha256:{id}");
    match docker.inspect_image(&image).await {
        Ok(_) => return Ok(false),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(e) => return Err(format!("the Docker Engine: {e}")),
    }
    let bytes = std::fs::read(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let opts = bollard::query_parameters::ImportImageOptionsBuilder::new().quiet(true).build();
    let mut stream = docker.import_image(opts, bollard::body_full(bytes.into()), None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| format!("loading {}: {e}", archive.display()))?;
    }
    docker.inspect_image(&image).await.map_err(|e| format!("{} loaded, but no {image}: {e}", archive.display()))?;
    Ok(true)
}

/// Removes the containers a previous agent of this data directory left; returns how many.
pub async fn remove_leftovers(docker: &Docker, agent: &str) -> usize {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_AGENT}={agent}")])]);
    let opts = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    let Ok(list) = docker.list_containers(Some(opts)).await else { return 0 };
    let mut n = 0;
    for c in list {
        if let Some(id) = c.id {
            let _ = docker.remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
            n += 1;
        }
    }
    n
}
