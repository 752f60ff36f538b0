//! `services:` for the Docker executor, as GitLab Runner runs them: each service a container
//! on a bridge network that the job owns (made for it, removed after it), reachable from the
//! job's container by its aliases (GitLab's default ones and `alias:`), given the job's
//! variables and its own, and waited for — a TCP connection to each port the image exposes (or
//! `HEALTHCHECK_TCP_PORT`) — before the script starts. A service that does not come up is a
//! warning with the tail of its log, not a failure, as in GitLab. Its whole log is kept with
//! the run (`services/<job>/<alias>.log`), and streamed into the job's log as it comes with
//! `CI_DEBUG_SERVICES=true`.
//!
//! A `docker:*dind*` service is not started: privileged Docker-in-Docker cannot run on every
//! kernel. The job gets this machine's engine by its socket instead ("socket binding" in
//! GitLab's documentation), with `DOCKER_HOST` set to it and the TLS variables of a dind set-up
//! removed, and the service's aliases resolving to where that engine publishes ports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder};
use futures_util::StreamExt;
use slipway_pipeline::model::Service;
use slipway_sys::process::Guardian;

use crate::docker::Failure;
use crate::process::Cancel;

/// Where the job's container finds the engine's socket with a dind service.
const SOCKET_IN_JOB: &str = "/var/run/docker.sock";

/// The job's services to start.
pub struct ServicesRun<'a> {
    pub services: &'a [Service],
    /// The job's variables (the services get them too, as in GitLab).
    pub env: &'a [(String, String)],
    pub labels: HashMap<String, String>,
    /// Names the network and the containers (with this process's id).
    pub job_slug: &'a str,
    /// Where the services' logs are written when they stop.
    pub logs_dir: &'a Path,
    /// How long to wait for all of them (GitLab Runner's `wait_for_services_timeout`).
    pub wait: Duration,
    /// `CI_DEBUG_SERVICES`: print their logs in the job's log.
    pub debug: bool,
    pub auth: &'a crate::docker::Auth<'a>,
}

struct Sidecar {
    /// Its container's name.
    id: String,
    /// Its first alias, naming it in messages and its log file.
    alias: String,
    image: String,
}

/// What [`start`] made, and what the job's container needs to use it.
pub struct Sidecars {
    /// Its name (which guards it before it exists).
    network: Option<String>,
    containers: Vec<Sidecar>,
    /// Mounts for the job's container (the engine's socket for dind).
    pub(crate) binds: Vec<String>,
    /// `host:address` entries for the job's container (dind's aliases).
    pub(crate) extra_hosts: Vec<String>,
    /// Variables the job gets, and ones it loses.
    pub set: Vec<(String, String)>,
    pub unset: Vec<String>,
    logs_dir: PathBuf,
    debug: bool,
    /// Whether the job's container streamed their logs (`CI_DEBUG_SERVICES`) already.
    followed: std::sync::atomic::AtomicBool,
}

impl Sidecars {
    /// With `CI_DEBUG_SERVICES`, the containers (id, alias) whose logs the job's log shows
    /// as they come; their logs are then not printed again when they stop.
    pub(crate) fn follow_logs(&self) -> Vec<(String, String)> {
        if !self.debug {
            return Vec::new();
        }
        self.followed.store(true, std::sync::atomic::Ordering::Relaxed);
        self.containers.iter().map(|c| (c.id.clone(), c.alias.clone())).collect()
    }

    /// The network the job's container joins (none: the host's).
    pub(crate) fn network_name(&self) -> Option<&str> {
        self.network.as_deref()
    }
}

fn notice(out: &mut dyn FnMut(&[u8]), text: &str) {
    out(format!("{text}\n").as_bytes());
}

/// Starts `s`'s services; on an error what was made is removed again.
pub(crate) async fn start(
    docker: &Docker,
    s: &ServicesRun<'_>,
    cancel: &Cancel,
    out: &mut dyn FnMut(&[u8]),
) -> Result<Sidecars, Failure> {
    let mut made = Sidecars {
        network: None,
        containers: Vec::new(),
        binds: Vec::new(),
        extra_hosts: Vec::new(),
        set: Vec::new(),
        unset: Vec::new(),
        logs_dir: s.logs_dir.to_path_buf(),
        debug: s.debug,
        followed: Default::default(),
    };
    match start_all(docker, s, &mut made, cancel, out).await {
        Ok(()) => Ok(made),
        Err(e) => {
            stop(docker, made, out).await;
            Err(e)
        }
    }
}

async fn start_all(
    docker: &Docker,
    s: &ServicesRun<'_>,
    made: &mut Sidecars,
    cancel: &Cancel,
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), Failure> {
    let (dind, services): (Vec<&Service>, Vec<&Service>) = s.services.iter().partition(|svc| svc.is_dind());
    let guardian = Guardian::get();
    let mut gateway = None;
    if !services.is_empty() {
        let name = crate::docker::container_name(s.job_slug);
        if let Some(g) = guardian {
            g.guard_network(&name);
        }
        made.network = Some(name.clone());
        docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(s.labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating the job's network for its services: {e}"))?;
        for (i, svc) in services.iter().enumerate() {
            let aliases = svc.aliases();
            // Named by the user's alias when it has one.
            let alias = svc.alias.first().or(aliases.first()).cloned().unwrap_or_else(|| format!("service-{i}"));
            notice(out, &format!("Starting service {} ...", svc.name));
            crate::docker::ensure_image(docker, &svc.name, &svc.pull_policy, None, s.auth, out)
                .await
                .map_err(|e| format!("service `{}`: {e}", svc.name))?;
            let mut env: Vec<(String, String)> = s.env.to_vec();
            env.extend(svc.variables.iter().cloned());
            let mut labels = s.labels.clone();
            labels.insert("dev.slipway.service".into(), alias.clone());
            let body = ContainerCreateBody {
                image: Some(svc.name.clone()),
                entrypoint: svc.entrypoint.clone(),
                cmd: svc.command.clone(),
                env: Some(dedup_env(env)),
                labels: Some(labels),
                host_config: Some(HostConfig { network_mode: Some(name.clone()), ..Default::default() }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        name.clone(),
                        EndpointSettings { aliases: Some(aliases.clone()), ..Default::default() },
                    )])),
                }),
                ..Default::default()
            };
            let container = format!("{name}-{i}-{}", crate::docker::docker_safe(&alias));
            if let Some(g) = guardian {
                g.guard_container(&container);
            }
            made.containers.push(Sidecar { id: container.clone(), alias, image: svc.name.clone() });
            docker
                .create_container(Some(CreateContainerOptionsBuilder::new().name(&container).build()), body)
                .await
                .map_err(|e| format!("creating service `{}`: {e}", svc.name))?;
            docker
                .start_container(&container, None)
                .await
                .map_err(|e| format!("starting service `{}`: {e}", svc.name))?;
        }
        wait_all(docker, s, made, &name, cancel, out).await?;
        gateway = gateway_of(docker, &name).await;
    }
    if let Some(first) = dind.first() {
        let socket = engine_socket()?;
        made.binds.push(format!("{}:{SOCKET_IN_JOB}", socket.display()));
        made.set.push(("DOCKER_HOST".into(), format!("unix://{SOCKET_IN_JOB}")));
        made.unset.extend(["DOCKER_TLS_CERTDIR", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY"].map(String::from));
        // Ports the job publishes are this engine's: the host's loopback, or the job network's
        // gateway when the job is on one.
        let address = gateway.unwrap_or_else(|| "127.0.0.1".into());
        for svc in &dind {
            for a in svc.aliases() {
                made.extra_hosts.push(format!("{a}:{address}"));
            }
        }
        notice(
            out,
            &format!(
                "Service {}: the job uses this machine's Docker Engine through its socket (GitLab's \"socket binding\"), \
                 not a privileged Docker-in-Docker; DOCKER_HOST is unix://{SOCKET_IN_JOB}. What the job builds and runs \
                 stays on this engine: remove what it starts (`docker run --rm`). `slipway image build` builds and \
                 pushes images without any Docker daemon and is the recommended way.",
                first.name
            ),
        );
    }
    Ok(())
}

/// Waits until each service accepts connections on its ports, it exits, or the time is up.
async fn wait_all(
    docker: &Docker,
    s: &ServicesRun<'_>,
    made: &Sidecars,
    network: &str,
    cancel: &Cancel,
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), Failure> {
    notice(out, &format!("Waiting for services to be up and running (timeout {} seconds)...", s.wait.as_secs()));
    let deadline = Instant::now() + s.wait;
    for (sidecar, svc) in made.containers.iter().zip(s.services.iter().filter(|svc| !svc.is_dind())) {
        let mut ports: Vec<u16> = match docker.inspect_image(&sidecar.image).await {
            Ok(i) => i
                .config
                .and_then(|c| c.exposed_ports)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.strip_suffix("/tcp").unwrap_or(p).parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        let own = svc.variables.iter().chain(s.env.iter()).find(|(k, _)| k == "HEALTHCHECK_TCP_PORT");
        if let Some(p) = own.and_then(|(_, v)| v.parse().ok()) {
            ports = vec![p];
        }
        let problem = loop {
            if cancel.stopping() {
                return Err("canceled while waiting for the services".into());
            }
            let info = docker
                .inspect_container(&sidecar.id, None)
                .await
                .map_err(|e| format!("service `{}`: {e}", sidecar.image))?;
            let state = info.state.clone().unwrap_or_default();
            if state.running != Some(true) {
                break Some(format!("the container exited with code {}", state.exit_code.unwrap_or(-1)));
            }
            let ip = info
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|n| n.get(network).and_then(|e| e.ip_address.clone()))
                .unwrap_or_default();
            let mut closed = None;
            for p in &ports {
                let addr = format!("{ip}:{p}");
                let ok = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(&addr))
                    .await
                    .is_ok_and(|r| r.is_ok());
                if !ok {
                    closed = Some(*p);
                    break;
                }
            }
            // No port to try (GitLab then waits for nothing): running is up.
            let Some(port) = closed else { break None };
            if Instant::now() >= deadline {
                break Some(format!("nothing listens on port {port} after {} seconds", s.wait.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some(problem) = problem {
            notice(
                out,
                &format!("*** WARNING: Service {} ({}) probably didn't start properly.", sidecar.image, sidecar.alias),
            );
            notice(out, &format!("Health check error: {problem}"));
            let tail = logs(docker, &sidecar.id, Some("20")).await;
            notice(out, "Service container logs (last lines):");
            out(&tail);
            if !tail.ends_with(b"\n") && !tail.is_empty() {
                out(b"\n");
            }
            notice(out, "*********");
        }
    }
    Ok(())
}

/// Removes the services and their network, keeping their logs.
pub(crate) async fn stop(docker: &Docker, made: Sidecars, out: &mut dyn FnMut(&[u8])) {
    let guardian = Guardian::get();
    if !made.containers.is_empty() {
        let _ = std::fs::create_dir_all(&made.logs_dir);
    }
    for c in &made.containers {
        let log = logs(docker, &c.id, None).await;
        // Printed here when the job's container never ran to stream them.
        if made.debug && !made.followed.load(std::sync::atomic::Ordering::Relaxed) {
            for line in log.split_inclusive(|b| *b == b'\n') {
                out(&prefixed(&c.alias, line));
            }
        }
        let _ = std::fs::write(made.logs_dir.join(format!("{}.log", crate::docker::docker_safe(&c.alias))), &log);
        let _ = docker
            .remove_container(&c.id, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
            .await;
        if let Some(g) = guardian {
            g.release_container(&c.id);
        }
    }
    if let Some(id) = &made.network {
        let _ = docker.remove_network(id).await;
        if let Some(g) = guardian {
            g.release_network(id);
        }
    }
}

/// A line of a service's log as the job's log shows it: `[service:<alias>] …`, one newline.
pub(crate) fn prefixed(alias: &str, line: &[u8]) -> Vec<u8> {
    let mut v = format!("[service:{alias}] ").into_bytes();
    v.extend_from_slice(line);
    if !line.ends_with(b"\n") {
        v.push(b'\n');
    }
    v
}

async fn logs(docker: &Docker, id: &str, tail: Option<&str>) -> Vec<u8> {
    let mut opts = LogsOptionsBuilder::new().stdout(true).stderr(true);
    if let Some(t) = tail {
        opts = opts.tail(t);
    }
    let mut stream = docker.logs(id, Some(opts.build()));
    let mut all = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        all.extend_from_slice(&chunk.into_bytes());
    }
    all
}

async fn gateway_of(docker: &Docker, network: &str) -> Option<String> {
    let n = docker.inspect_network(network, None).await.ok()?;
    n.ipam?.config?.into_iter().find_map(|c| c.gateway)
}

/// The engine's unix socket on this machine (`DOCKER_HOST=unix://…`, or Docker's default).
fn engine_socket() -> Result<PathBuf, Failure> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let path = match host.strip_prefix("unix://") {
        Some(p) => PathBuf::from(p),
        None if host.is_empty() => PathBuf::from("/var/run/docker.sock"),
        None => {
            return Err(format!(
                "a docker:dind service needs the Docker Engine's unix socket to bind into the job, and DOCKER_HOST is \
                 `{host}`; run the engine on a unix socket, or build the image with `slipway image build`"
            ));
        }
    };
    if !path.exists() {
        return Err(format!(
            "a docker:dind service binds the Docker Engine's socket, and {} does not exist",
            path.display()
        ));
    }
    Ok(path)
}

/// The last value of each variable, in first-seen order.
fn dedup_env(env: Vec<(String, String)>) -> Vec<String> {
    let mut last: HashMap<&str, &str> = HashMap::new();
    for (k, v) in &env {
        last.insert(k, v);
    }
    let mut seen = std::collections::HashSet::new();
    env.iter().filter(|(k, _)| seen.insert(k.as_str())).map(|(k, _)| format!("{k}={}", last[k.as_str()])).collect()
}
