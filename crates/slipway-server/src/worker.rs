//! The agent's side of the job protocol (`slipway agent --server URL --token T`): ask the
//! server for a job (long-poll), check its commit out, plan the same pipeline the server did,
//! run that one job on the runner (the shell executor, or the Docker executor for `image:`
//! jobs), stream its masked output back in chunks, renew the lease every second (which is
//! also how a cancel reaches it), and report the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use slipway_api::server::{JobAssignment, JobFinish, JobRequest, LeaseAnswer};
use slipway_runner::JobMessage;
use slipway_runner::process::Cancel;

/// How an agent joins a server.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `http://host:port`.
    pub server: String,
    pub token: String,
    /// This agent's name (unique per machine).
    pub name: String,
    /// Where checkouts, workspaces and caches live.
    pub data_dir: PathBuf,
    /// Jobs run at once.
    pub concurrency: usize,
    /// This agent's tags (GitLab's runner tags): it takes jobs whose `tags:` it has.
    pub tags: Vec<String>,
    /// The API socket of the host agent beside this worker: offered to the server through a
    /// tunnel ([`crate::tunnel`]), so the server can deploy environments to this machine.
    pub host: Option<PathBuf>,
    /// Registry credentials for the Docker executor's pulls (after a job's `DOCKER_AUTH_CONFIG`).
    pub registry_auth: Option<Arc<dyn slipway_runner::RegistryAuth>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the server at {0} refused the token: {1}")]
    Unauthorized(String, String),
    #[error("talking to {0}: {1}")]
    Http(String, String),
}

struct Client {
    http: reqwest::Client,
    cfg: WorkerConfig,
    /// Stopping without waiting: running jobs are stopped and handed back to the server.
    handing_back: tokio::sync::watch::Sender<bool>,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.server.trim_end_matches('/'))
    }

    async fn post(&self, path: &str, body: Vec<u8>, timeout: Duration) -> Result<reqwest::Response, WorkerError> {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.cfg.token)
            .header("content-type", "application/json")
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| WorkerError::Http(self.cfg.server.clone(), e.to_string()))?;
        if r.status() == reqwest::StatusCode::UNAUTHORIZED || r.status() == reqwest::StatusCode::FORBIDDEN {
            let msg = r.text().await.unwrap_or_default();
            return Err(WorkerError::Unauthorized(self.cfg.server.clone(), msg));
        }
        Ok(r)
    }
}

/// Takes and runs jobs until `stop` resolves; jobs already running finish and report first,
/// unless `hand_back` resolves too: then they are stopped and handed back to the server,
/// which queues them again at once for another agent.
pub async fn run(
    cfg: WorkerConfig,
    stop: impl std::future::Future<Output = ()>,
    hand_back: impl std::future::Future<Output = ()>,
) -> Result<(), WorkerError> {
    // One HTTP client for jobs and the tunnel: small writes go out at once, and a server that
    // went away without a word is noticed within ~12 s (keepalives; at most 10 s without an ACK).
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(5))
        .tcp_keepalive_interval(Duration::from_secs(2))
        .tcp_keepalive_retries(3)
        .tcp_user_timeout(Duration::from_secs(10))
        // A server on plain HTTP (loopback, a private network) needs no CA roots loaded.
        .tls_built_in_root_certs(cfg.server.starts_with("https://"))
        .build()
        .map_err(|e| WorkerError::Http(cfg.server.clone(), e.to_string()))?;
    let client =
        Arc::new(Client { http: http.clone(), cfg: cfg.clone(), handing_back: tokio::sync::watch::channel(false).0 });
    // The tunnel lives as long as the worker does.
    let _tunnel = cfg.host.clone().map(|socket| {
        let task = tokio::spawn(crate::tunnel::keep_open(
            http.clone(),
            cfg.server.clone(),
            cfg.token.clone(),
            cfg.name.clone(),
            socket,
        ));
        AbortOnDrop(task)
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1)));
    tokio::pin!(stop);
    let mut running = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.expect("semaphore open"),
            () = &mut stop => break,
        };
        let req = serde_json::to_vec(&JobRequest {
            agent: cfg.name.clone(),
            wait_ms: 25_000,
            tags: cfg.tags.clone(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        })
        .expect("serializes");
        let asked = tokio::select! {
            r = client.post("/api/v1/jobs/request", req, Duration::from_secs(40)) => r,
            () = &mut stop => break,
        };
        let resp = match asked {
            Ok(r) => r,
            Err(e @ WorkerError::Unauthorized(..)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the server; asking again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            continue;
        }
        let job: JobAssignment = match resp.json_bytes().await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable job assignment");
                continue;
            }
        };
        let client = Arc::clone(&client);
        running.spawn(async move {
            let _permit = permit;
            run_one(&client, job).await;
        });
    }
    if !running.is_empty() {
        tracing::info!(jobs = running.len(), "stopping: the running jobs finish first (stop again to hand them back)");
    }
    tokio::pin!(hand_back);
    let mut handed = false;
    loop {
        tokio::select! {
            done = running.join_next() => if done.is_none() { break },
            () = &mut hand_back, if !handed => {
                handed = true;
                tracing::info!(jobs = running.len(), "stopping now: the running jobs are handed back to the server");
                client.handing_back.send_replace(true);
            }
        }
    }
    Ok(())
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

trait JsonBytes {
    async fn json_bytes<T: serde::de::DeserializeOwned>(self) -> Result<T, String>;
}

impl JsonBytes for reqwest::Response {
    async fn json_bytes<T: serde::de::DeserializeOwned>(self) -> Result<T, String> {
        let bytes = self.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

/// Runs one job to its end and reports it.
async fn run_one(client: &Arc<Client>, job: JobAssignment) {
    let who = format!("?agent={}", client.cfg.name);
    let base = format!("/api/v1/jobs/{}/{}", job.run, job.index);
    let cancel = Cancel::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    // Lease renewal every second: it keeps the job and carries cancels.
    let lease = {
        let (client, cancel, path) = (Arc::clone(client), cancel.clone(), format!("{base}/lease{who}"));
        tokio::spawn(async move {
            let mut back = client.handing_back.subscribe();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    r = back.changed() => {
                        if r.is_err() {
                            std::future::pending::<()>().await;
                        }
                        if *back.borrow_and_update() {
                            cancel.request(1);
                        }
                        continue;
                    }
                }
                if let Ok(r) = client.post(&path, Vec::new(), Duration::from_secs(5)).await
                    && let Ok(a) = r.json_bytes::<LeaseAnswer>().await
                    && a.cancel
                {
                    cancel.request(1);
                }
            }
        })
    };
    // Output goes up in chunks: whatever came in the last 200 ms, at most 256 KiB at a time.
    let uploader = {
        let (client, path) = (Arc::clone(client), format!("{base}/log{who}"));
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            loop {
                let more = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
                match more {
                    Ok(Some(chunk)) => {
                        buf.extend_from_slice(&chunk);
                        if buf.len() < 256 * 1024 {
                            continue;
                        }
                    }
                    Ok(None) => {
                        // The job ended: what is left goes up, trying while the server is away.
                        for _ in 0..120 {
                            if buf.is_empty() || send(&client, &path, &mut buf).await {
                                return;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        return;
                    }
                    Err(_) => {}
                }
                if !buf.is_empty() {
                    // Kept on failure (a server restarting): sent with the next chunk.
                    send(&client, &path, &mut buf).await;
                }
            }
        })
    };
    let data = client.cfg.data_dir.clone();
    let j = job.clone();
    let c = cancel.clone();
    let (cl, rt) = (Arc::clone(client), tokio::runtime::Handle::current());
    let ended = tokio::task::spawn_blocking(move || execute(&data, &cl, &rt, &j, c, tx)).await;
    lease.abort();
    let _ = uploader.await;
    let finish = match ended {
        Ok(Ok(end)) => JobFinish {
            status: if end.success {
                "success"
            } else if end.canceled {
                "canceled"
            } else {
                "failed"
            }
            .into(),
            exit_code: end.exit_code,
            reason: end.reason,
            coverage: end.coverage,
            child: end.child.and_then(|c| serde_json::to_value(c).ok()),
        },
        Ok(Err(why)) => {
            JobFinish { status: "failed".into(), exit_code: None, reason: Some(why), coverage: None, child: None }
        }
        Err(e) => JobFinish {
            status: "failed".into(),
            exit_code: None,
            reason: Some(e.to_string()),
            coverage: None,
            child: None,
        },
    };
    // Handed back: the server queues it again; what it did so far is not its end.
    let (path, body) = match *client.handing_back.borrow() {
        true => (format!("{base}/release{who}"), Vec::new()),
        false => (format!("{base}/finish{who}"), serde_json::to_vec(&finish).expect("serializes")),
    };
    // Reported until the server takes it (a server restarting keeps the job's lease meanwhile,
    // so the job is not run again), for two minutes at most.
    for attempt in 0..120 {
        match client.post(&path, body.clone(), Duration::from_secs(30)).await {
            Ok(r) if !r.status().is_server_error() => return,
            Ok(r) => {
                tracing::warn!(status = %r.status(), attempt, "the server could not take the job's end; trying again")
            }
            Err(e) => tracing::warn!(error = %e, attempt, "cannot report the job's end; trying again"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Sends a log chunk; true (and the buffer emptied) once the server took it.
async fn send(client: &Client, path: &str, buf: &mut Vec<u8>) -> bool {
    match client.post(path, buf.clone(), Duration::from_secs(30)).await {
        Ok(r) if r.status().is_success() => {
            buf.clear();
            true
        }
        // Refused for good (the job is no longer ours): nothing to keep.
        Ok(r) if r.status().is_client_error() => {
            buf.clear();
            true
        }
        _ => false,
    }
}

/// On a blocking thread: checkout, plan, run the job.
fn execute(
    data: &std::path::Path,
    client: &Arc<Client>,
    rt: &tokio::runtime::Handle,
    job: &JobAssignment,
    cancel: Cancel,
    out: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) -> Result<slipway_runner::exec::JobEnd, String> {
    let project = job.project.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "_");
    // A checkout per project and slot, kept between jobs: the next job fetches what is new.
    let slot = Slot::take(&project);
    let dir = data.join("builds").join(&project).join(slot.0.to_string());
    let say = |line: String| {
        let _ = out.send(format!("{line}\n").into_bytes());
    };
    say(format!("Checking out {} at {}", job.project, &job.commit[..job.commit.len().min(12)]));
    let plan = crate::pipelines::plan_at(
        std::path::Path::new(&job.repo),
        &job.commit,
        job.branch.as_deref(),
        &dir,
        crate::pipelines::PlanFor {
            run: job.run,
            source: &job.source,
            variables: &job.variables,
            server: job.server_url.as_deref().map(|u| (u, job.project.as_str())),
            projects: &job.projects,
        },
    );
    let plan = match plan {
        Ok((p, _)) => p,
        Err(why) => {
            say(format!("ERROR: the pipeline does not plan here: {why}"));
            return Err(why);
        }
    };
    let Some(index) = plan.jobs.iter().position(|j| j.name == job.name) else {
        let why = format!("job `{}` is not in the pipeline at this commit", job.name);
        say(format!("ERROR: {why}"));
        return Err(why);
    };
    // Workspaces and caches per project: two projects' `build` jobs share nothing.
    let state = data.join("state").join(&project);
    let run_dir = data.join("runs").join(format!("{}-{}", job.run, job.index));
    // A new attempt starts clean: nothing of an earlier one is taken for this one's.
    let _ = std::fs::remove_dir_all(&run_dir);
    for dep in &plan.jobs[index].artifacts_from {
        match rt.block_on(artifacts_down(client, job.run, dep, &run_dir)) {
            Ok(true) => {}
            Ok(false) => say(format!("No artifacts of {dep} to download")),
            Err(why) => say(format!("WARNING: downloading the artifacts of {dep} failed: {why}")),
        }
    }
    let mut config = slipway_runner::RunConfig::new(dir.clone(), run_dir.clone(), &state);
    config.cache_sync =
        Some(Arc::new(ServerCaches { client: Arc::clone(client), rt: rt.clone(), project: job.project.clone() }));
    config.registry_auth = client.cfg.registry_auth.clone();
    config.extra_env.push(("CI_JOB_TOKEN".into(), job.job_token.clone()));
    config.extra_env.push(("SLIPWAY_SERVER".into(), client.cfg.server.clone()));
    // The plan has the server's external URL in `CI_SERVER_URL`; an older server's job has
    // none, and gets the one this agent reaches it by.
    if job.server_url.is_none() {
        config.extra_env.push(("CI_SERVER_URL".into(), client.cfg.server.clone()));
    }
    config.extra_env.push(("SLIPWAY_PROJECT".into(), job.project.clone()));
    config.secrets.push(job.job_token.clone());
    // The project's secrets: in the job's environment (a file's path for file secrets),
    // masked in its output — each line of a multi-line one too, so printing it line by line
    // shows none of it.
    for secret in &job.secrets {
        let value = match secret.file {
            false => secret.value.clone(),
            true => match secret_file(&run_dir, &secret.name, &secret.value) {
                Ok(path) => path.display().to_string(),
                Err(e) => {
                    say(format!("ERROR: cannot write the file of secret {}: {e}", secret.name));
                    return Err(format!("cannot write the file of secret {}: {e}", secret.name));
                }
            },
        };
        config.extra_env.push((secret.name.clone(), value));
        config.secrets.extend(mask_values(&secret.value));
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(bin) = me.parent()
    {
        config.path_prepend.push(bin.to_path_buf());
    }
    let end = slipway_runner::run_job(&plan, index, config, cancel, |m| match m {
        JobMessage::Output(d) => {
            let _ = out.send(d);
        }
        JobMessage::Notice(l) => {
            let _ = out.send(format!("{l}\n").into_bytes());
        }
        JobMessage::Attempt(_) => {}
    })
    .map_err(|e| e.to_string());
    drop(slot);
    // What the job kept goes up before its end is reported, so the jobs after it find it.
    let slug = slipway_runner::exec::slug(&job.name);
    match pack(&run_dir, &slug) {
        Ok(Some(tar)) => {
            if let Err(why) = rt.block_on(artifacts_up(client, job, tar)) {
                say(format!("ERROR: uploading the artifacts failed: {why}"));
                let _ = std::fs::remove_dir_all(&run_dir);
                return end.and_then(|_| Err(format!("uploading the artifacts failed: {why}")));
            }
        }
        Ok(None) => {}
        Err(e) => say(format!("WARNING: packing the artifacts failed: {e}")),
    }
    let _ = std::fs::remove_dir_all(&run_dir);
    end
}

/// What to mask for a secret: the value, and each line of a multi-line value long enough
/// not to mask ordinary output.
fn mask_values(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    if value.contains('\n') {
        out.extend(
            value
                .lines()
                .map(|l| l.trim_end_matches('\r'))
                .filter(|l| l.trim().len() >= crate::secrets::MIN_LEN)
                .map(str::to_string),
        );
    }
    out
}

/// Writes a file secret under the job's run directory (0600, removed with it).
fn secret_file(run_dir: &std::path::Path, name: &str, value: &str) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = run_dir.join("secrets");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    f.write_all(value.as_bytes())?;
    Ok(path)
}

/// The job's artifacts (`artifacts/<slug>/` → `files/`) and dotenv report (`dotenv.env`) as a
/// gzip'd tar; `None` when it kept neither.
fn pack(run_dir: &std::path::Path, slug: &str) -> std::io::Result<Option<Vec<u8>>> {
    let files = run_dir.join("artifacts").join(slug);
    let dotenv = run_dir.join("dotenv").join(format!("{slug}.env"));
    if !files.is_dir() && !dotenv.is_file() {
        return Ok(None);
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    if files.is_dir() {
        tar.append_dir_all("files", &files)?;
    }
    if dotenv.is_file() {
        tar.append_path_with_name(&dotenv, "dotenv.env")?;
    }
    Ok(Some(tar.into_inner()?.finish()?))
}

async fn artifacts_up(client: &Client, job: &JobAssignment, tar: Vec<u8>) -> Result<(), String> {
    let path = format!("/api/v1/jobs/{}/{}/artifacts?agent={}", job.run, job.index, client.cfg.name);
    let mut last = String::new();
    // Tried while the server is away for a moment (it keeps the job's lease meanwhile).
    for _ in 0..30 {
        let sent = client
            .http
            .put(client.url(&path))
            .bearer_auth(&client.cfg.token)
            .header("content-type", "application/gzip")
            .body(tar.clone())
            .timeout(Duration::from_secs(300))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() => {
                return Err(format!("{}: {}", r.status(), r.text().await.unwrap_or_default()));
            }
            Ok(r) => last = r.status().to_string(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last)
}

/// Fetches the artifacts of `dep` into the run directory, where the runner restores a
/// dependency's artifacts from; false when it has none.
async fn artifacts_down(client: &Client, run: i64, dep: &str, run_dir: &std::path::Path) -> Result<bool, String> {
    let path = format!("/api/v1/jobs/{run}/artifacts/{}", crate::client::segment(dep));
    let r = client
        .http
        .get(client.url(&path))
        .bearer_auth(&client.cfg.token)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(false);
    }
    if !r.status().is_success() {
        return Err(format!("{}: {}", r.status(), r.text().await.unwrap_or_default()));
    }
    let bytes = r.bytes().await.map_err(|e| e.to_string())?;
    let slug = slipway_runner::exec::slug(dep);
    let (files, dotenv) = (run_dir.join("artifacts").join(&slug), run_dir.join("dotenv").join(format!("{slug}.env")));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    std::fs::create_dir_all(&files).map_err(|e| e.to_string())?;
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let name = entry.path().map_err(|e| e.to_string())?.into_owned();
        if name == std::path::Path::new("dotenv.env") {
            std::fs::create_dir_all(dotenv.parent().expect("a directory")).map_err(|e| e.to_string())?;
            entry.unpack(&dotenv).map_err(|e| e.to_string())?;
        } else if let Ok(rest) = name.strip_prefix("files") {
            if rest.as_os_str().is_empty() {
                continue;
            }
            // `unpack_in` refuses `..` and absolute paths.
            let mut e = entry;
            let target = files.join(rest);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            if rest.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                return Err(format!("`{}` leaves the artifacts directory", name.display()));
            }
            e.unpack(&target).map_err(|e| e.to_string())?;
        }
    }
    Ok(true)
}

/// Which checkout directories of a project are in use on this agent.
static SLOTS: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());

/// A checkout directory number of a project, held while a job uses it.
struct Slot(usize, String);

impl Slot {
    fn take(project: &str) -> Slot {
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        let n = (0..).find(|n| !used.iter().any(|(p, m)| p == project && m == n)).expect("a free slot");
        used.push((project.to_string(), n));
        Slot(n, project.to_string())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|(p, m)| !(p == &self.1 && *m == self.0));
    }
}

/// The project's caches on the server, for the runner (`slipway_runner::CacheSync`).
struct ServerCaches {
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
    project: String,
}

impl std::fmt::Debug for ServerCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the caches of {} on {}", self.project, self.client.cfg.server)
    }
}

impl ServerCaches {
    fn path(&self, key: &str) -> String {
        format!(
            "/api/v1/projects/{}/caches/{}?agent={}",
            crate::client::segment(&self.project),
            crate::client::segment(key),
            self.client.cfg.name
        )
    }
}

impl slipway_runner::CacheSync for ServerCaches {
    fn fetch(&self, key: &str, dest: &std::path::Path) -> Result<bool, String> {
        let url = self.client.url(&self.path(key));
        let bytes = self.rt.block_on(async {
            let r = self
                .client
                .http
                .get(url)
                .bearer_auth(&self.client.cfg.token)
                .timeout(Duration::from_secs(300))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match r.status() {
                reqwest::StatusCode::NOT_FOUND => Ok(None),
                s if s.is_success() => r.bytes().await.map(Some).map_err(|e| e.to_string()),
                s => Err(format!("{s}: {}", r.text().await.unwrap_or_default())),
            }
        })?;
        let Some(bytes) = bytes else { return Ok(false) };
        // Unpacked aside, then renamed into place: a cache is whole or absent.
        let tmp = dest.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        crate::deploys::untar(&bytes, &tmp).map_err(|why| format!("the cache {why}"))?;
        std::fs::rename(&tmp, dest).map_err(|e| e.to_string())?;
        Ok(true)
    }

    fn push(&self, key: &str, src: &std::path::Path) -> Result<(), String> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        tar.append_dir_all(".", src).map_err(|e| e.to_string())?;
        let body = tar.into_inner().and_then(|g| g.finish()).map_err(|e| e.to_string())?;
        let url = self.client.url(&self.path(key));
        self.rt.block_on(async {
            let r = self
                .client
                .http
                .put(url)
                .bearer_auth(&self.client.cfg.token)
                .header("content-type", "application/octet-stream")
                .body(body)
                .timeout(Duration::from_secs(300))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match r.status().is_success() {
                true => Ok(()),
                false => Err(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
            }
        })
    }
}
