//! The Docker executor: a job with `image:` runs its script in a container of that image on
//! the local Docker Engine (its API over the socket, through bollard), as GitLab Runner's
//! Docker executor does — the workspace mounted at `/builds/<project path>` (the job's
//! `CI_PROJECT_DIR`), bash when the image has it and `sh` otherwise, the job's variables as
//! its environment, host networking (or, with `services:`, the network the job shares with
//! them: [`crate::services`]). The container is removed when the script ends, times out
//! or is canceled (Docker stops it: SIGTERM, the grace period, SIGKILL); while it runs the
//! process's guardian holds its id, so a `kill -9` of slipway removes it too.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptions,
};
use futures_util::StreamExt;
use slipway_sys::process::Guardian;

use crate::process::{Cancel, Exit};

/// Where the job's scripts are mounted in its container.
const SCRIPTS: &str = "/slipway/scripts";

/// Runs bash when the image has it, else sh (GitLab Runner's shell detection, shortened).
const DETECT: &str =
    "if command -v bash >/dev/null 2>&1; then exec bash --noprofile --norc \"$0\"; else exec sh \"$0\"; fi";

/// One script to run in a container.
pub struct ContainerRun<'a> {
    pub image: &'a str,
    pub options: &'a slipway_pipeline::model::ImageOptions,
    /// The script, a file in `scripts_dir`.
    pub script: &'a str,
    pub scripts_dir: &'a Path,
    /// The job's workspace on this machine, mounted at `builds_dir`.
    pub workspace: &'a Path,
    pub builds_dir: &'a str,
    pub env: &'a [(String, String)],
    pub labels: HashMap<String, String>,
    pub timeout: Duration,
    pub grace: Duration,
    /// Credentials for pulling the image.
    pub auth: &'a Auth<'a>,
    /// The job's services: their network, and what the job's container needs to reach them.
    pub sidecars: Option<&'a crate::services::Sidecars>,
}

/// Why a container could not run (the job fails as a system failure, with this message).
pub type Failure = String;

/// The GitLab-style path of the workspace in the container: `/builds/<project path>`.
pub fn builds_dir(project_path: &str) -> String {
    format!("/builds/{}", project_path.trim_matches('/'))
}

/// Makes the script a container runs: the job's bash script, which `sh` also reads (its
/// `pipefail` is set only by a shell that has it).
pub fn portable(script: &str) -> String {
    script.replacen("set -eo pipefail\n", "set -e\n(set -o pipefail) 2>/dev/null && set -o pipefail\n", 1)
}

/// A connection to the Docker Engine for one job: its container runs and its services.
pub struct Engine {
    rt: tokio::runtime::Runtime,
    docker: Docker,
}

impl Engine {
    pub fn connect() -> Result<Engine, Failure> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Docker client: {e}"))?;
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| format!("cannot reach the Docker Engine: {e}"))?;
        rt.block_on(docker.ping()).map_err(|e| {
            format!("the Docker Engine does not answer ({e}); start dockerd, or run with `--executor shell`")
        })?;
        Ok(Engine { rt, docker })
    }

    /// Runs `r` to its end; output goes to `out` as it comes.
    pub fn run(&self, r: &ContainerRun, cancel: &Cancel, out: &mut dyn FnMut(&[u8])) -> Result<Exit, Failure> {
        self.rt.block_on(run_async(&self.docker, r, cancel, out))
    }

    /// Starts the job's services on a network of its own and waits for them (see
    /// [`crate::services`]); what it made is removed by [`Engine::stop_services`].
    pub fn start_services(
        &self,
        s: &crate::services::ServicesRun,
        cancel: &Cancel,
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<crate::services::Sidecars, Failure> {
        self.rt.block_on(crate::services::start(&self.docker, s, cancel, out))
    }

    pub fn stop_services(&self, s: crate::services::Sidecars, out: &mut dyn FnMut(&[u8])) {
        self.rt.block_on(crate::services::stop(&self.docker, s, out))
    }
}

async fn run_async(
    docker: &Docker,
    r: &ContainerRun<'_>,
    cancel: &Cancel,
    out: &mut dyn FnMut(&[u8]),
) -> Result<Exit, Failure> {
    ensure_image(docker, r.image, &r.options.pull_policy, r.options.platform.as_deref(), r.auth, out).await?;
    let script_in = format!("{SCRIPTS}/{}", r.script);
    let mut binds = vec![
        format!("{}:{}", r.workspace.display(), r.builds_dir),
        format!("{}:{SCRIPTS}:ro", r.scripts_dir.display()),
    ];
    binds.extend(r.sidecars.map(|s| s.binds.clone()).unwrap_or_default());
    let body = ContainerCreateBody {
        image: Some(r.image.to_string()),
        entrypoint: r.options.entrypoint.clone(),
        user: r.options.user.clone(),
        cmd: Some(vec!["sh".into(), "-c".into(), DETECT.into(), script_in]),
        env: Some(r.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: Some(r.builds_dir.to_string()),
        labels: Some(r.labels.clone()),
        stop_timeout: Some(r.grace.as_secs().max(1) as i64),
        host_config: Some(HostConfig {
            // Without services the job has the host's network, as the shell executor does;
            // with them, the network they share and nothing else.
            network_mode: Some(r.sidecars.and_then(|s| s.network_name()).unwrap_or("host").to_string()),
            extra_hosts: r.sidecars.map(|s| s.extra_hosts.clone()).filter(|h| !h.is_empty()),
            binds: Some(binds),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Guarded by its name before it exists: a kill at any moment leaves nothing behind.
    let name = container_name(r.labels.get("dev.slipway.job").map_or("job", String::as_str));
    let guardian = Guardian::get();
    if let Some(g) = guardian {
        g.guard_container(&name);
    }
    let mut opts = CreateContainerOptionsBuilder::new().name(&name);
    if let Some(p) = &r.options.platform {
        opts = opts.platform(p);
    }
    let exit = match docker.create_container(Some(opts.build()), body).await {
        Ok(created) => supervise(docker, &created.id, r, cancel, out).await,
        Err(e) => Err(format!("creating the job's container from `{}`: {e}", r.image)),
    };
    let _ = docker.remove_container(&name, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
    if let Some(g) = guardian {
        g.release_container(&name);
    }
    exit
}

/// A name for a container or network of this process, unique in it: `slipway-<pid>-<n>-<what>`.
pub(crate) fn container_name(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let what: String = docker_safe(what).chars().take(40).collect();
    format!("slipway-{}-{n}-{what}", std::process::id())
}

/// `[A-Za-z0-9_.-]` only, as Docker's names allow (the rest made `-`).
pub(crate) fn docker_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect()
}

/// Starts the container and follows it to its end, stopping it on a cancel or at the deadline.
async fn supervise(
    docker: &Docker,
    id: &str,
    r: &ContainerRun<'_>,
    cancel: &Cancel,
    out: &mut dyn FnMut(&[u8]),
) -> Result<Exit, Failure> {
    docker.start_container(id, None).await.map_err(|e| format!("starting the job's container: {e}"))?;
    let mut logs = docker.logs(id, Some(LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build()));
    let mut wait = docker.wait_container(id, None::<WaitContainerOptions>);
    let deadline = Instant::now() + r.timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut stopped: Option<Exit> = None;
    let mut code = None;
    let mut logs_done = false;
    // `CI_DEBUG_SERVICES`: the services' logs, line by line as they come, in the job's log.
    let followed = r.sidecars.map(|s| s.follow_logs()).unwrap_or_default();
    let mut services = futures_util::stream::select_all(followed.iter().enumerate().map(|(i, (id, _))| {
        docker
            .logs(id, Some(LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build()))
            .map(move |chunk| (i, chunk))
            .boxed()
    }));
    let mut partial: Vec<Vec<u8>> = vec![Vec::new(); followed.len()];
    let mut services_done = followed.is_empty();
    loop {
        if code.is_some() && logs_done {
            break;
        }
        tokio::select! {
            chunk = logs.next(), if !logs_done => match chunk {
                Some(Ok(c)) => out(&c.into_bytes()),
                _ => logs_done = true,
            },
            line = services.next(), if !services_done => match line {
                Some((i, Ok(c))) => {
                    partial[i].extend_from_slice(&c.into_bytes());
                    while let Some(n) = partial[i].iter().position(|b| *b == b'\n') {
                        let rest = partial[i].split_off(n + 1);
                        out(&crate::services::prefixed(&followed[i].1, &partial[i]));
                        partial[i] = rest;
                    }
                }
                Some((_, Err(_))) => {}
                None => services_done = true,
            },
            ended = wait.next(), if code.is_none() => {
                code = Some(match ended {
                    Some(Ok(w)) => w.status_code,
                    Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                    Some(Err(e)) => return Err(format!("waiting for the job's container: {e}")),
                    None => -1,
                });
            },
            _ = tick.tick(), if code.is_none() => {
                let why = if cancel.level() >= 2 {
                    let _ = docker.kill_container(id, Some(KillContainerOptionsBuilder::new().signal("KILL").build())).await;
                    Some(Exit::Canceled)
                } else if stopped.is_none() && cancel.stopping() {
                    Some(Exit::Canceled)
                } else if stopped.is_none() && Instant::now() >= deadline {
                    Some(Exit::TimedOut)
                } else {
                    None
                };
                if let Some(w) = why && stopped.is_none() {
                    stopped = Some(w);
                    let grace = r.grace.as_secs().max(1) as i32;
                    let docker = docker.clone();
                    let id = id.to_string();
                    // Docker sends SIGTERM, waits the grace period, then SIGKILL.
                    tokio::spawn(async move {
                        let _ = docker.stop_container(&id, Some(StopContainerOptionsBuilder::new().t(grace).build())).await;
                    });
                }
            },
        }
    }
    for (i, rest) in partial.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
        out(&crate::services::prefixed(&followed[i].1, rest));
    }
    Ok(match (stopped, code) {
        (Some(s), _) => s,
        (None, Some(c)) if c > 128 && c < 160 => Exit::Signal((c - 128) as i32),
        (None, Some(c)) => Exit::Code(c as i32),
        (None, None) => Exit::Code(-1),
    })
}

/// The image on the engine by the job's pull policies, tried in order as GitLab Runner does
/// (none given: `if-not-present`): `always` pulls, `if-not-present` pulls only what the engine
/// lacks, `never` takes only what it has.
pub(crate) async fn ensure_image(
    docker: &Docker,
    image: &str,
    policies: &[String],
    platform: Option<&str>,
    auth: &Auth<'_>,
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), Failure> {
    let present = match docker.inspect_image(image).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
        Err(e) => return Err(format!("the Docker Engine: {e}")),
    };
    let default = ["if-not-present".to_string()];
    let policies = if policies.is_empty() { &default[..] } else { policies };
    let mut why = Vec::new();
    for policy in policies {
        match policy.as_str() {
            "never" | "if-not-present" if present => return Ok(()),
            "never" => why.push("it is not on this Docker Engine and pull_policy `never` does not pull it".to_string()),
            _ => match pull(docker, image, platform, auth, out).await {
                Ok(()) => return Ok(()),
                // `always` falls back to what the engine has only when told to (`[always, if-not-present]`).
                Err(e) => why.push(format!("pulling it failed ({e})")),
            },
        }
    }
    Err(format!(
        "image `{image}`: {}; load or build it (`docker load`, `slipway image build`), or run the job with `--executor shell`",
        why.join("; then ")
    ))
}

async fn pull(
    docker: &Docker,
    image: &str,
    platform: Option<&str>,
    auth: &Auth<'_>,
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), String> {
    out(format!("Pulling docker image {image} ...\n").as_bytes());
    let mut opts = CreateImageOptionsBuilder::new().from_image(image);
    if let Some(p) = platform {
        opts = opts.platform(p);
    }
    let host = registry_host(image);
    let credentials = auth.lookup(host)?.map(|(username, password)| DockerCredentials {
        username: Some(username),
        password: Some(password),
        serveraddress: Some(host.to_string()),
        ..Default::default()
    });
    let mut stream = docker.create_image(Some(opts.build()), None, credentials);
    while let Some(item) = stream.next().await {
        item.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Where a job's pulls find credentials: its `DOCKER_AUTH_CONFIG` variable (GitLab's way: a
/// docker `config.json`'s `auths`), then the run's [`crate::RegistryAuth`].
pub struct Auth<'a> {
    pub docker_auth_config: Option<&'a str>,
    pub fallback: Option<&'a dyn crate::RegistryAuth>,
}

impl Auth<'_> {
    fn lookup(&self, host: &str) -> Result<Option<(String, String)>, String> {
        if let Some(config) = self.docker_auth_config {
            let v: serde_json::Value = serde_json::from_str(config)
                .map_err(|e| format!("DOCKER_AUTH_CONFIG is not a docker config.json ({e})"))?;
            let auths = v["auths"].as_object().into_iter().flatten();
            for (key, entry) in auths {
                if auth_host(key) != host {
                    continue;
                }
                if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
                    return Ok(Some((u.to_string(), p.to_string())));
                }
                use base64::Engine as _;
                let raw = entry["auth"]
                    .as_str()
                    .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a.trim()).ok())
                    .ok_or_else(|| {
                        format!("DOCKER_AUTH_CONFIG: `auths.{key}.auth` is not base64 of `user:password`")
                    })?;
                let text = String::from_utf8_lossy(&raw);
                let (u, p) = text.split_once(':').ok_or_else(|| {
                    format!("DOCKER_AUTH_CONFIG: `auths.{key}.auth` is not base64 of `user:password`")
                })?;
                return Ok(Some((u.to_string(), p.to_string())));
            }
        }
        match self.fallback {
            Some(f) => f.credentials(host),
            None => Ok(None),
        }
    }
}

/// The registry of an image reference, as docker reads it: the first component when it has a
/// `.` or a `:` or is `localhost`, else Docker Hub (`docker.io`).
pub fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// A `config.json` `auths` key as a host: `https://index.docker.io/v1/` is `docker.io`.
fn auth_host(key: &str) -> &str {
    let key = key.trim_start_matches("https://").trim_start_matches("http://");
    let key = key.split('/').next().unwrap_or(key);
    match key {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        k => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_and_docker_auth_config() {
        assert_eq!(registry_host("golang:1.23"), "docker.io");
        assert_eq!(registry_host("library/golang"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000/team/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_host("registry.gitlab.com/g/p"), "registry.gitlab.com");
        assert_eq!(registry_host("localhost/x"), "localhost");
        // `ci:s3cret` in base64, and Docker Hub under its legacy key.
        let config = r#"{"auths": {"127.0.0.1:5000": {"auth": "Y2k6czNjcmV0"}, "https://index.docker.io/v1/": {"username": "u", "password": "p"}}}"#;
        let auth = Auth { docker_auth_config: Some(config), fallback: None };
        assert_eq!(auth.lookup("127.0.0.1:5000").unwrap(), Some(("ci".into(), "s3cret".into())));
        assert_eq!(auth.lookup("docker.io").unwrap(), Some(("u".into(), "p".into())));
        assert_eq!(auth.lookup("other:1").unwrap(), None);
        let bad = Auth { docker_auth_config: Some("{nope"), fallback: None };
        assert!(bad.lookup("x").unwrap_err().contains("DOCKER_AUTH_CONFIG is not a docker config.json"));
    }
}
