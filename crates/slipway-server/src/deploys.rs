//! Artifacts and deploys through the server. Jobs' artifacts go up as one gzip'd tar per job,
//! kept as a content-addressed blob (`blobs/sha256/<hex>`) until the job's `expire_in`, and
//! come down to the jobs that depend on them on whatever agent runs those. Environments are
//! the pipeline file's `environments:` at the pipeline's commit; deploys, promotions and
//! rollbacks run on the deploy engine in this process (the same engine as the CLI's), and
//! their events stream back as JSON lines ending in `deploy_finished` (docs/events.md).

use slipway_api::server::ApiErrorBody;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use slipway_deploy::artifacts::Wanted;
use slipway_deploy::{DeployError, Engine, EngineConfig, Outcome};
use slipway_model::environment::Environment;
use slipway_model::event::{DeployEvent, Stamped};
use slipway_model::release::{Actor, PipelineRef};
use slipway_model::run::JobState;
use slipway_store::{Project, TokenKind};

use crate::access::Caller;
use crate::api::AgentQuery;
use crate::pipelines;
use crate::{ServerError, State};

type S = AxState<Arc<State>>;

/// How long artifacts live when the job does not say (GitLab's default instance setting).
const DEFAULT_EXPIRE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Largest artifacts upload of one job, and largest build a deploy may send.
pub const MAX_UPLOAD: usize = 1024 * 1024 * 1024;

/// Where a blob with this digest (`sha256:<64 hex>`) lives; `None` for anything else.
pub fn blob_path(data: &Path, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| data.join("blobs").join("sha256").join(hex))
}

/// Stores `bytes` under their digest (written aside, then renamed: a blob is whole or absent).
async fn put_blob(data: &Path, bytes: Bytes) -> Result<String, ServerError> {
    let data = data.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
        let path = blob_path(&data, &digest).expect("a sha256 digest");
        if path.exists() {
            return Ok(digest);
        }
        let io = |source| ServerError::Io { what: path.display().to_string(), source };
        let dir = path.parent().expect("blobs have a directory");
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".{}.{}", &digest[7..19], std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(digest)
    })
    .await
    .map_err(|e| ServerError::Io { what: "storing a blob".into(), source: std::io::Error::other(e) })?
}

/// `PUT /api/v1/jobs/{run}/{index}/artifacts?agent=NAME`: the job's artifacts (a gzip'd tar),
/// from the agent that holds the job.
#[utoipa::path(put, path = "/api/v1/jobs/{run}/{index}/artifacts", tag = "job protocol", summary = "Upload a job's artifacts (a gzip'd tar)", params(("run" = i64, Path, description = "The pipeline"), ("index" = u64, Path, description = "The job, by its place in the pipeline"), ("agent" = String, Query, description = "The agent's name")), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 201, description = "`{digest, size}`"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn upload(
    AxState(s): S,
    who: Caller,
    UrlPath((run, index)): UrlPath<(i64, usize)>,
    Query(q): Query<AgentQuery>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    who.check_agent(&q.agent)?;
    let agent = format!("{}@{}", q.agent, who.name);
    if crate::api::holder(&s, run, index).await?.as_deref() != Some(agent.as_str()) {
        return Err(ServerError::Conflict(format!("job {index} of pipeline {run} is not held by `{agent}`")));
    }
    if bytes.get(..2) != Some(&[0x1f, 0x8b]) {
        return Err(ServerError::Input("artifacts must be a gzip'd tar".into(), Some("body".into())));
    }
    let row = s.store.run(run).await?.ok_or_else(|| ServerError::NotFound(format!("pipeline {run}")))?;
    let plan = pipelines::plan_of(&s, &row).await?;
    let expire = match plan.jobs.get(index).and_then(|j| j.artifacts.as_ref()).and_then(|a| a.expire_in.clone()) {
        Some(e) if e.trim() == "never" => None,
        Some(e) => Some(slipway_pipeline::duration::parse(&e).unwrap_or(DEFAULT_EXPIRE)),
        None => Some(DEFAULT_EXPIRE),
    };
    let size = bytes.len() as i64;
    let digest = put_blob(&s.data_dir, bytes.clone()).await?;
    let expires = expire.map(|d| slipway_model::time::now_ms() + d.as_millis() as i64);
    s.store.put_job_artifacts(run, index as i64, &digest, size, expires).await?;
    crate::reports::record(&s, &row, index, &plan, bytes).await;
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({"digest": digest, "size": size}))).into_response())
}

/// `GET /api/v1/jobs/{run}/artifacts/{job}`: the artifacts of the job named `job` in this
/// pipeline, for the jobs that depend on it (agents, and a job's own token).
#[utoipa::path(get, path = "/api/v1/jobs/{run}/artifacts/{job}", tag = "job protocol", summary = "Download a job's artifacts", params(("run" = i64, Path, description = "The pipeline"), ("job" = String, Path, description = "The job's name")), responses((status = 200, description = "A gzip'd tar", content_type = "application/gzip", body = Vec<u8>), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn download(
    AxState(s): S,
    _who: Caller,
    UrlPath((run, name)): UrlPath<(i64, String)>,
) -> Result<Response, ServerError> {
    let Some(job) = s.store.jobs(run).await?.into_iter().find(|j| j.name == name) else {
        return Err(ServerError::NotFound(format!("job `{name}` of pipeline {run}")));
    };
    let Some((digest, _)) = s.store.job_artifacts(run, job.index as i64).await? else {
        return Err(ServerError::NotFound(format!("artifacts of job `{name}` of pipeline {run} (none, or expired)")));
    };
    let path = blob_path(&s.data_dir, &digest).expect("stored digests are valid");
    let bytes =
        tokio::fs::read(&path).await.map_err(|source| ServerError::Io { what: path.display().to_string(), source })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/gzip"), (axum::http::header::ETAG, &format!("\"{digest}\""))],
        bytes,
    )
        .into_response())
}

/// `PUT /api/v1/projects/{name}/caches/{key}?agent=NAME`: a job's cache (a gzip'd tar), shared
/// with the project's jobs on every agent.
#[utoipa::path(put, path = "/api/v1/projects/{name}/caches/{key}", tag = "job protocol", summary = "Keep a project's cache (a gzip'd tar)", params(("name" = String, Path, description = "The project"), ("key" = String, Path, description = "The cache key"), ("agent" = String, Query, description = "The agent's name")), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 201, description = "`{digest, size}`"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn put_cache(
    AxState(s): S,
    _who: Caller,
    UrlPath((name, key)): UrlPath<(String, String)>,
    Query(_q): Query<AgentQuery>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    s.store.project(&name).await?.ok_or_else(|| ServerError::NotFound(format!("project `{name}`")))?;
    if key.is_empty() || key.len() > 255 {
        return Err(ServerError::Input("a cache key has 1 to 255 characters".into(), Some("key".into())));
    }
    if bytes.get(..2) != Some(&[0x1f, 0x8b]) {
        return Err(ServerError::Input("a cache must be a gzip'd tar".into(), Some("body".into())));
    }
    let size = bytes.len() as i64;
    let digest = put_blob(&s.data_dir, bytes).await?;
    let before = s.store.cache(&name, &key).await?;
    s.store.put_cache(&name, &key, &digest, size).await?;
    if let Some(old) = before.filter(|o| *o != digest) {
        drop_blob(&s, &old).await;
    }
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({"digest": digest, "size": size}))).into_response())
}

/// `GET /api/v1/projects/{name}/caches/{key}`: the cache, for a job of the project.
#[utoipa::path(get, path = "/api/v1/projects/{name}/caches/{key}", tag = "job protocol", summary = "A project's cache", params(("name" = String, Path, description = "The project"), ("key" = String, Path, description = "The cache key")), responses((status = 200, description = "A gzip'd tar", content_type = "application/gzip", body = Vec<u8>), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn get_cache(
    AxState(s): S,
    _who: Caller,
    UrlPath((name, key)): UrlPath<(String, String)>,
) -> Result<Response, ServerError> {
    let Some(digest) = s.store.cache(&name, &key).await? else {
        return Err(ServerError::NotFound(format!("cache `{key}` of project `{name}`")));
    };
    let path = blob_path(&s.data_dir, &digest).expect("stored digests are valid");
    let bytes =
        tokio::fs::read(&path).await.map_err(|source| ServerError::Io { what: path.display().to_string(), source })?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/gzip")], bytes).into_response())
}

/// Removes a blob unless artifacts or a cache still refer to it.
async fn drop_blob(s: &State, digest: &str) {
    if s.store.blob_in_use(digest).await.unwrap_or(true) {
        return;
    }
    if let Some(p) = blob_path(&s.data_dir, digest) {
        let _ = tokio::fs::remove_file(p).await;
    }
}

/// Forgets expired artifacts and removes the blobs no job refers to any more.
pub async fn sweep(s: &State) {
    match s.store.expire_job_artifacts(slipway_model::time::now_ms()).await {
        Ok(unused) => {
            for d in unused {
                drop_blob(s, &d).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot expire artifacts"),
    }
}

/// Forgets pipelines older than the retention: their records, logs and artifacts.
pub async fn retire(s: &State) {
    let Some(keep) = s.retention else { return };
    let cutoff = slipway_model::time::now_ms() - keep.as_millis() as i64;
    let old = match s.store.runs_ended_before(cutoff, 500).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for pipelines past their retention");
            return;
        }
    };
    for run in old {
        match s.store.delete_run(run).await {
            Ok(unused) => {
                let _ = tokio::fs::remove_dir_all(s.data_dir.join("logs").join(run.to_string())).await;
                for d in unused {
                    drop_blob(s, &d).await;
                }
                s.plans.lock().expect("plans lock").remove(&run);
            }
            Err(e) => tracing::warn!(pipeline = run, error = %e, "cannot forget the pipeline"),
        }
    }
}

// ----- environments -------------------------------------------------------------------------

/// Who deploys, from which commit of which project.
struct Scope {
    project: Project,
    commit: String,
    branch: Option<String>,
    /// The tag of a tag pipeline.
    tag: Option<String>,
    actor: Actor,
}

/// A job token deploys its own pipeline's commit, while its job runs; an admin deploys the
/// head of the project's default branch.
async fn scope(s: &Arc<State>, who: &Caller, name: &str) -> Result<Scope, ServerError> {
    let project = s.store.project(name).await?.ok_or_else(|| ServerError::NotFound(format!("project `{name}`")))?;
    match who.kind {
        TokenKind::Job => {
            let (run, index) = who
                .job
                .as_ref()
                .map(|j| (j.run, j.index))
                .ok_or_else(|| ServerError::Forbidden("a job token without its job".into()))?;
            let row = s.store.run(run).await?.ok_or_else(|| ServerError::NotFound(format!("pipeline {run}")))?;
            if row.project != project.name {
                return Err(ServerError::Forbidden(format!(
                    "a job of project `{}` may not deploy project `{}`",
                    row.project, project.name
                )));
            }
            let job = s.store.jobs(run).await?.into_iter().find(|j| j.index == index);
            let Some(job) = job.filter(|j| j.status == JobState::Running) else {
                return Err(ServerError::Forbidden(format!(
                    "job {index} of pipeline {run} is not running: its token deploys only while it runs"
                )));
            };
            let branch = crate::pipelines::branch_of(&s.data_dir, &project, row.ref_name.as_deref());
            Ok(Scope {
                commit: row.commit_sha.clone().unwrap_or_default(),
                tag: branch.is_none().then(|| row.ref_name.clone()).flatten(),
                branch,
                actor: Actor::job(PipelineRef { project: project.name.clone(), pipeline: run, job: job.name }),
                project,
            })
        }
        TokenKind::User => {
            let refs = pipelines::update(s, &project).await?;
            let branch = project.branch.clone();
            let commit = tokio::task::spawn_blocking(move || {
                slipway_git::output(&refs, &["rev-parse", "--verify", &format!("refs/heads/{branch}^{{commit}}")])
                    .ok_or_else(|| ServerError::Git(format!("{} has no branch `{branch}`", refs.display())))
            })
            .await
            .map_err(|e| ServerError::Git(e.to_string()))??;
            Ok(Scope {
                commit: commit.trim().to_string(),
                branch: Some(project.branch.clone()),
                tag: None,
                actor: Actor::user(who.name.clone()),
                project,
            })
        }
        TokenKind::Agent => Err(ServerError::Forbidden("an agent token may not deploy".into())),
    }
}

/// The environment with the server's protection (the access file's `protected_environments`)
/// added to its own: the larger number of approvals.
fn with_protection(s: &State, project: &str, mut env: Environment) -> Environment {
    if let Some(p) = s.access().protection(project, &env.name) {
        env.protection.approvals = env.protection.approvals.max(p.approvals);
    }
    env
}

/// [`with_protection`], and refused when the deploy comes from a ref the environment does not
/// take deploys from.
fn protect(s: &State, scope: &Scope, env: Environment) -> Result<Environment, ServerError> {
    if let Some(p) = s.access().protection(&scope.project.name, &env.name)
        && !p.refs.is_empty()
    {
        let from = scope.branch.clone().or_else(|| scope.tag.clone());
        if !from.as_deref().is_some_and(|r| p.allows_ref(r)) {
            return Err(ServerError::Forbidden(format!(
                "`{}` is protected: it takes deploys from {} only, not from {}",
                env.name,
                p.refs.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", "),
                from.map_or("a commit on no branch".to_string(), |r| format!("`{r}`"))
            )));
        }
    }
    Ok(with_protection(s, &scope.project.name, env))
}

/// The pipeline file's environments at `commit`.
async fn environments_at(s: &Arc<State>, project: &str, commit: &str) -> Result<Vec<Environment>, ServerError> {
    Ok(pipeline_at(s, project, commit).await?.0)
}

/// The pipeline file's environments and `alerts:` rules at `commit`.
pub(crate) async fn pipeline_at(
    s: &Arc<State>,
    project: &str,
    commit: &str,
) -> Result<(Vec<Environment>, Option<slipway_monitor::rules::RuleFile>), ServerError> {
    let row = s.store.project(project).await?.ok_or_else(|| ServerError::NotFound(format!("project `{project}`")))?;
    let _one = s.planning.lock().await;
    let source = pipelines::plan_source(&s.data_dir, &row);
    let dir = s.data_dir.join("envs").join(pipelines::slug(project));
    let commit = commit.to_string();
    tokio::task::spawn_blocking(move || {
        slipway_git::remote::checkout_at(&source.display().to_string(), &commit, None, &dir)
            .map_err(|e| ServerError::Git(e.to_string()))?;
        let loaded = slipway_runner::project::load(&dir, None).map_err(|e| {
            ServerError::Plan(match e {
                slipway_runner::project::LoadError::NoPipeline(n) => n.message,
                slipway_runner::project::LoadError::Unreadable { message } => message,
                slipway_runner::project::LoadError::Invalid(i) => pipelines::render(&i),
            })
        })?;
        Ok((loaded.environments(&dir), loaded.pipeline.alerts.clone()))
    })
    .await
    .map_err(|e| ServerError::Plan(e.to_string()))?
}

fn find(envs: Vec<Environment>, name: &str, project: &str) -> Result<(Environment, Vec<Environment>), ServerError> {
    let names: Vec<String> = envs.iter().map(|e| e.name.clone()).collect();
    match envs.iter().position(|e| e.name == name) {
        Some(i) => {
            let env = envs[i].clone();
            Ok((env, envs))
        }
        None => Err(ServerError::Input(
            match names.is_empty() {
                true => format!(
                    "project `{project}` has no environments: add an `environments:` section to its pipeline file"
                ),
                false => format!("project `{project}` has no environment `{name}` (it has {})", names.join(", ")),
            },
            Some("environment".into()),
        )),
    }
}

/// Environment names are one namespace per server: one that another project deployed to is
/// refused rather than taken over.
async fn owned(s: &State, env: &str, project: &str) -> Result<(), ServerError> {
    for r in s.store.history(env, 1).await? {
        if let Some(p) = &r.pipeline
            && p.project != project
        {
            return Err(ServerError::Conflict(format!(
                "environment `{env}` runs releases of project `{}`: environment names are shared by the server's projects; name this one differently",
                p.project
            )));
        }
    }
    Ok(())
}

fn engine(s: &State, sink: slipway_deploy::Sink) -> Engine {
    // Each engine holds locks as itself: two deploys of one environment in this process
    // (two users, a sync and a rollback) wait for each other like deploys of two processes.
    static ENGINES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = ENGINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let config = EngineConfig {
        data_dir: s.data_dir.clone(),
        owner: format!("slipway server (pid {}, engine {n})", std::process::id()),
        lease: Duration::from_secs(15),
        lock_wait: Duration::from_secs(600),
        approval_wait: Duration::from_secs(3600),
    };
    Engine::new(s.store.clone(), config, sink)
}

/// An environment's last rollout, line by line as the engine told it (what the dashboard
/// shows and follows while it goes on).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rollout {
    pub release: Option<i64>,
    pub version: String,
    /// (Unix ms, what happened), at most [`ROLLOUT_LINES`].
    pub lines: Vec<(i64, String)>,
    /// `Some(ok)` once it ended.
    pub finished: Option<bool>,
}

const ROLLOUT_LINES: usize = 1000;

fn record(s: &State, e: &Stamped<DeployEvent>) {
    let now = slipway_model::time::now_ms();
    let mut all = s.rollouts.lock().expect("rollouts lock");
    let line = |r: &mut Rollout, text: String| {
        if r.lines.len() < ROLLOUT_LINES {
            r.lines.push((now, text));
        }
    };
    match &e.event {
        DeployEvent::DeployStarted { environment, release, version, reason, .. } => {
            let mut r = Rollout { release: Some(*release), version: version.clone(), ..Rollout::default() };
            line(&mut r, format!("{reason} of {version} (release #{release}) started"));
            all.insert(environment.clone(), r);
        }
        DeployEvent::Progress { environment, message } => {
            if let Some(r) = all.get_mut(environment).filter(|r| r.finished.is_none()) {
                line(r, message.clone());
            }
        }
        DeployEvent::ApprovalNeeded { environment, release, need, have, .. } => {
            if let Some(r) = all.get_mut(environment).filter(|r| r.release == Some(*release)) {
                line(r, format!("waiting for approvals: {have} of {need}"));
            }
        }
        DeployEvent::Step { .. } => {}
        DeployEvent::DeployFinished { ok, environment, status, error, unchanged, .. } => {
            if let Some(r) = all.get_mut(environment).filter(|r| r.finished.is_none()) {
                let text = match (ok, error) {
                    (_, Some(e)) => format!("failed: {e}"),
                    (true, None) if *unchanged => "nothing to do: it already runs".to_string(),
                    (true, None) => format!("done: {}", status.map_or("healthy", |s| s.as_str())),
                    (false, None) => "failed".to_string(),
                };
                line(r, text);
                r.finished = Some(*ok);
            }
        }
    }
}

/// A sink that also hands the deploy's events of `project` to the notifications (and keeps
/// the rollout's lines for the dashboard).
fn notifying(s: &Arc<State>, project: &str, sink: slipway_deploy::Sink) -> slipway_deploy::Sink {
    let (s, project) = (Arc::clone(s), project.to_string());
    Arc::new(move |e: Stamped<DeployEvent>| {
        record(&s, &e);
        if matches!(
            e.event,
            DeployEvent::DeployStarted { .. } | DeployEvent::DeployFinished { .. } | DeployEvent::ApprovalNeeded { .. }
        ) {
            let (s, project) = (Arc::clone(&s), project.clone());
            let event = e.event.clone();
            tokio::spawn(async move { crate::notify::deploy_event(&s, &project, &event).await });
        }
        sink(e)
    })
}

/// Rolls `env` of `project` back because an alert fired (the post-deploy watch, an
/// Alertmanager's webhook): the settings the monitor last read for it, or those of the
/// current release's commit.
pub(crate) async fn alert_rollback(
    s: &Arc<State>,
    project: &str,
    env: &str,
    actor: &Actor,
    why: &str,
) -> Result<(), ServerError> {
    let environment = match s.monitor.environment(env) {
        Some(e) => e,
        None => {
            let commit = s.store.current(env).await?.and_then(|r| r.commit).ok_or_else(|| {
                ServerError::Input(format!("`{env}`'s release records no commit to read its settings at"), None)
            })?;
            find(environments_at(s, project, &commit).await?, env, project)?.0
        }
    };
    let environment = with_protection(s, project, environment);
    let engine = engine(s, notifying(s, project, Arc::new(|_| {})));
    let r = pinned_while(s, env, engine.alert_rollback(actor, &environment, why)).await;
    told(s, project, env, &r).await;
    r.map(drop).map_err(|e| ServerError::Conflict(e.message))
}

/// What `env` runs now, observed (health, drift), or `None` when its target cannot be read.
pub(crate) async fn observe(s: &Arc<State>, env: &Environment) -> Option<slipway_deploy::observe::EnvState> {
    engine(s, Arc::new(|_| {})).observe(&env.name, Some(env)).await.ok()
}

/// A GitOps sync: `version` (a version built before, its artifacts recorded) with the
/// settings of `env`, as `actor` (the application), through the same engine, protection,
/// notifications and rollout lines as any deploy. `force` redeploys what is already current
/// (self-heal puts back what drifted).
pub(crate) async fn gitops_deploy(
    s: &Arc<State>,
    project: &str,
    env: &Environment,
    version: &str,
    force: bool,
    actor: &Actor,
) -> Result<Outcome, DeployError> {
    let env = with_protection(s, project, env.clone());
    s.monitor.knows(project, &env);
    let engine = engine(s, notifying(s, project, Arc::new(|_| {})));
    let root = s.data_dir.join("envs").join(pipelines::slug(project));
    let wanted = Wanted { project: &root, path: None, version: Some(version), image: None, credentials: None };
    let r = match slipway_deploy::artifacts::resolve(engine.store(), &s.data_dir, &env, &wanted).await {
        Ok(set) => engine.deploy(actor, &env, &set, None, force).await,
        Err(e) => Err(engine.record_refusal(actor, &env, Some(version), e).await),
    };
    told(s, project, &env.name, &r).await;
    r
}

/// An environment of `project` as its pipeline file declares it at `commit`, else — an
/// environment a GitOps application keeps, which its config repository declares — as its
/// desired state was last read.
async fn declared_or_kept(s: &Arc<State>, project: &str, commit: &str, env: &str) -> Result<Environment, ServerError> {
    match find(environments_at(s, project, commit).await?, env, project) {
        Ok((e, _)) => Ok(e),
        Err(e) => match s.store.app_of(env).await.ok().flatten().and_then(|_| s.monitor.environment(env)) {
            Some(kept) => Ok(kept),
            None => Err(e),
        },
    }
}

/// What every deploy through the server does when it ends: its `deploy_finished` event kept
/// with the rollout's lines and handed to the notifications; the event.
async fn told(s: &Arc<State>, project: &str, env: &str, r: &Result<Outcome, DeployError>) -> DeployEvent {
    let done = slipway_deploy::finished(env, r);
    record(s, &Stamped::now(done.clone()));
    crate::notify::deploy_event(s, project, &done).await;
    done
}

/// Runs `rollback` (not started until awaited here) with the environment's GitOps pin set
/// before it and named after it ([`pin_for_rollback`], [`pinned_after_rollback`]).
async fn pinned_while(
    s: &State,
    env: &str,
    rollback: impl std::future::Future<Output = Result<Outcome, DeployError>>,
) -> Result<Outcome, DeployError> {
    let pinned = pin_for_rollback(s, env).await;
    let r = rollback.await;
    if let Some(app) = pinned {
        pinned_after_rollback(s, &app, r.as_ref().ok().map(|o| o.release.id)).await;
    }
    r
}

/// A rollback of an environment a GitOps application keeps pins it there: the application
/// reports `OutOfSync (pinned)` and does not sync the bad release back, until its desired
/// state moves past the commit it was at (a revert, or a fix). The pin is set before the
/// rollback starts, so no pass of the reconciler syncs in between; the application, to finish
/// with [`pinned_after_rollback`].
async fn pin_for_rollback(s: &State, env: &str) -> Option<slipway_store::AppRow> {
    let app = s.store.app_of(env).await.ok().flatten()?;
    let commit = crate::gitops::status_of(&app).commit.unwrap_or_default();
    let holding = s.store.current(env).await.ok().flatten().map_or(0, |c| c.id);
    match s.store.pin_app(&app.name, Some((holding, &commit))).await {
        Ok(()) => Some(app),
        Err(e) => {
            tracing::warn!(app = %app.name, error = %e, "the rollback's pin was not recorded");
            None
        }
    }
}

/// The pin names the release rolled back to; a rollback that failed leaves the pin as it was.
async fn pinned_after_rollback(s: &State, app: &slipway_store::AppRow, release: Option<i64>) {
    let commit = crate::gitops::status_of(app).commit.unwrap_or_default();
    let pin = match (release, app.pinned) {
        (Some(r), _) => Some((r, commit.as_str())),
        (None, Some(p)) => Some((p, app.pinned_commit.as_deref().unwrap_or(""))),
        (None, None) => None,
    };
    if let Err(e) = s.store.pin_app(&app.name, pin).await {
        tracing::warn!(app = %app.name, error = %e, "the rollback's pin was not recorded");
    }
}

/// GitOps' self-heal: the target put back on the current release (see `Engine::heal`).
pub(crate) async fn gitops_heal(
    s: &Arc<State>,
    project: &str,
    env: &Environment,
    prune: bool,
) -> Result<Vec<String>, DeployError> {
    let env = with_protection(s, project, env.clone());
    engine(s, notifying(s, project, Arc::new(|_| {}))).heal(&env, prune).await
}

/// GitOps' prune of an environment whose desired file was deleted: everything that runs for
/// it stopped and removed, and the store holding no current release (see `Engine::retire`).
pub(crate) async fn gitops_retire(
    s: &Arc<State>,
    project: &str,
    env: &Environment,
) -> Result<Option<Vec<String>>, DeployError> {
    let env = with_protection(s, project, env.clone());
    engine(s, notifying(s, project, Arc::new(|_| {}))).retire(&env).await
}

/// Refuses a push deploy (deploy, promote) of an environment a GitOps application
/// keeps, unless forced: its config repository says what runs there.
async fn not_gitops(s: &State, env: &str, force: bool, what: &str) -> Result<(), ServerError> {
    match s.store.app_of(env).await? {
        Some(app) if !force => Err(ServerError::Conflict(format!(
            "`{env}` is kept by GitOps application `{}`: change {} in {} (revision {}) instead of a {what}, \
             or pass --force (the application syncs it back unless it is pinned)",
            app.name,
            slipway_pipeline::compile::desired_files(&app.path, env)[0],
            app.repo,
            app.revision
        ))),
        _ => Ok(()),
    }
}

/// A rollback a dashboard user asked for: to the release before, as the caller; the version
/// it returned to, or why not.
pub(crate) async fn rollback_now(
    s: &Arc<State>,
    who: &Caller,
    project: &str,
    env: &str,
    to: Option<&str>,
) -> Result<String, String> {
    let scope = scope(s, who, project).await.map_err(|e| e.to_string())?;
    let environment = declared_or_kept(s, project, &scope.commit, env).await.map_err(|e| e.to_string())?;
    owned(s, &environment.name, project).await.map_err(|e| e.to_string())?;
    let engine = engine(s, notifying(s, project, Arc::new(|_| {})));
    let r = pinned_while(s, env, engine.rollback(&scope.actor, &environment, to)).await;
    told(s, project, env, &r).await;
    match r {
        Ok(o) => Ok(o.release.version),
        Err(e) => Err(match &e.hint {
            Some(h) => format!("{} ({h})", e.message),
            None => e.message,
        }),
    }
}

/// What a streamed request does.
enum Request {
    Deploy { upload: Option<PathBuf>, version: Option<String>, image: Option<String>, force: bool },
    Rollback { to: Option<String> },
    Promote { from: Box<Environment> },
}

/// Runs `req` on its own task (a client that goes away does not stop a rollout half-way) and
/// answers with its events as JSON lines, `deploy_finished` last.
fn streamed(s: &Arc<State>, scope: Scope, env: Environment, req: Request) -> Response {
    s.monitor.knows(&scope.project.name, &env);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let line = |e: &Stamped<DeployEvent>| {
        let mut v = serde_json::to_vec(e).expect("events serialize");
        v.push(b'\n');
        Bytes::from(v)
    };
    let events = tx.clone();
    let engine = engine(
        s,
        notifying(
            s,
            &scope.project.name,
            Arc::new(move |e: Stamped<DeployEvent>| {
                let _ = events.send(line(&e));
            }),
        ),
    );
    let data = s.data_dir.clone();
    let state = Arc::clone(s);
    tokio::spawn(async move {
        let rollback = matches!(req, Request::Rollback { .. });
        let run = execute(&engine, &data, &scope, &env, req);
        let r = if rollback { pinned_while(&state, &env.name, run).await } else { run.await };
        let done = told(&state, &scope.project.name, &env.name, &r).await;
        let _ = tx.send(line(&Stamped::now(done)));
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

async fn execute(
    engine: &Engine,
    data: &Path,
    scope: &Scope,
    env: &Environment,
    req: Request,
) -> Result<Outcome, DeployError> {
    match req {
        Request::Deploy { upload, version, image, force } => {
            let root = upload.clone().unwrap_or_else(|| data.join("envs").join(pipelines::slug(&scope.project.name)));
            let path = match &upload {
                Some(dir) => Some(single_entry(dir).map_err(DeployError::input)?),
                None => None,
            };
            let wanted = Wanted {
                project: &root,
                path: path.as_deref(),
                version: version.as_deref(),
                image: image.as_deref(),
                credentials: None,
            };
            let set = slipway_deploy::artifacts::resolve(engine.store(), data, env, &wanted).await;
            if let Some(dir) = &upload {
                let _ = std::fs::remove_dir_all(dir);
            }
            let mut set = match set {
                Ok(set) => set,
                Err(e) => {
                    let version = version.as_deref().or(image.as_deref());
                    return Err(engine.record_refusal(&scope.actor, env, version, e).await);
                }
            };
            if set.commit.is_none() {
                set.commit = Some(scope.commit.clone());
            }
            engine.deploy(&scope.actor, env, &set, scope.branch.clone(), force).await
        }
        Request::Rollback { to } => engine.rollback(&scope.actor, env, to.as_deref()).await,
        Request::Promote { from } => engine.promote(&scope.actor, &from, env).await,
    }
}

/// The one file or directory an upload unpacked to.
fn single_entry(dir: &Path) -> Result<PathBuf, String> {
    let entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten().map(|e| e.path()).collect();
    match entries.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err("the upload must hold one build directory (dist/) or one binary".into()),
    }
}

/// Unpacks a gzip'd tar into a new directory under `uploads/`, refusing paths that leave it.
async fn unpack(data: &Path, bytes: Bytes) -> Result<PathBuf, ServerError> {
    let name =
        slipway_sys::whoami::random_hex(8).map_err(|source| ServerError::Io { what: "/dev/urandom".into(), source })?;
    let dir = data.join("uploads").join(name);
    let d = dir.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&d).map_err(|source| ServerError::Io { what: d.display().to_string(), source })?;
        untar(&bytes, &d).map_err(|why| ServerError::Input(format!("the upload {why}"), Some("body".into())))?;
        Ok(d)
    })
    .await
    .map_err(|e| ServerError::Io { what: "unpacking".into(), source: std::io::Error::other(e) })?
    .inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&dir);
    })
}

/// Unpacks a gzip'd tar into `dir` (which exists); `unpack_in` refuses `..` and absolute
/// paths, so nothing lands outside it. The error says what is wrong with the archive.
pub(crate) fn untar(bytes: &[u8], dir: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for entry in archive.entries().map_err(|e| format!("is not a gzip'd tar: {e}"))? {
        let mut entry = entry.map_err(|e| format!("is not a gzip'd tar: {e}"))?;
        if !entry.unpack_in(dir).map_err(|e| format!("does not unpack: {e}"))? {
            return Err("has a path outside its directory".into());
        }
    }
    Ok(())
}

#[derive(serde::Deserialize, Default)]
pub struct DeployQuery {
    pub(crate) version: Option<String>,
    pub(crate) image: Option<String>,
    #[serde(default)]
    pub(crate) force: bool,
}

/// `POST /api/v1/projects/{name}/environments/{env}/deploy[?version=V][&image=REF][&force=true]`
/// with a gzip'd tar of the build (a `dist/` directory, or one binary) as the body, or none to
/// redeploy a recorded version or pull an image.
#[utoipa::path(post, path = "/api/v1/projects/{name}/environments/{env}/deploy", tag = "environments", summary = "Deploy a build, a recorded version or an image", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("env" = String, Path, description = "The environment"), ("version" = Option<String>, Query, description = "A recorded version, or the label of a bare binary"), ("image" = Option<String>, Query, description = "An image in a registry (docker targets)"), ("force" = Option<bool>, Query, description = "Deploy even when nothing changed")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The build: one `dist/` directory or one binary"), responses((status = 200, description = "The engine's events as JSON lines (docs/events.md), `deploy_finished` last", content_type = "application/x-ndjson", body = String), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn deploy(
    AxState(s): S,
    who: Caller,
    UrlPath((name, env)): UrlPath<(String, String)>,
    Query(q): Query<DeployQuery>,
    bytes: Bytes,
) -> Result<Response, ServerError> {
    let scope = scope(&s, &who, &name).await?;
    not_gitops(&s, &env, q.force, "deploy").await?;
    let env = declared_or_kept(&s, &name, &scope.commit, &env).await?;
    let env = protect(&s, &scope, env)?;
    owned(&s, &env.name, &name).await?;
    if bytes.is_empty() && q.version.is_none() && q.image.is_none() {
        return Err(ServerError::Input(
            "nothing to deploy: send the build (a gzip'd tar of dist/) as the body, or give `version` or `image`"
                .into(),
            Some("body".into()),
        ));
    }
    let upload = match bytes.is_empty() {
        true => None,
        false => Some(unpack(&s.data_dir, bytes).await?),
    };
    Ok(streamed(&s, scope, env, Request::Deploy { upload, version: q.version, image: q.image, force: q.force }))
}

#[derive(serde::Deserialize, Default)]
pub struct RollbackQuery {
    to: Option<String>,
}

/// `POST /api/v1/projects/{name}/environments/{env}/rollback[?to=VERSION]`.
#[utoipa::path(post, path = "/api/v1/projects/{name}/environments/{env}/rollback", tag = "environments", summary = "Roll back", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("env" = String, Path, description = "The environment"), ("to" = Option<String>, Query, description = "To this version (default: the release before)")), responses((status = 200, description = "The engine's events as JSON lines (docs/events.md), `deploy_finished` last", content_type = "application/x-ndjson", body = String), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn rollback(
    AxState(s): S,
    who: Caller,
    UrlPath((name, env)): UrlPath<(String, String)>,
    Query(q): Query<RollbackQuery>,
) -> Result<Response, ServerError> {
    let scope = scope(&s, &who, &name).await?;
    let env = declared_or_kept(&s, &name, &scope.commit, &env).await?;
    owned(&s, &env.name, &name).await?;
    Ok(streamed(&s, scope, env, Request::Rollback { to: q.to }))
}

#[derive(serde::Deserialize)]
pub struct PromoteQuery {
    pub(crate) from: String,
    #[serde(default)]
    pub(crate) force: bool,
}

/// `POST /api/v1/projects/{name}/environments/{env}/promote?from=ENV`.
#[utoipa::path(post, path = "/api/v1/projects/{name}/environments/{env}/promote", tag = "environments", summary = "Promote what runs in another environment", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("env" = String, Path, description = "The environment"), ("from" = String, Query, description = "The environment whose release is promoted")), responses((status = 200, description = "The engine's events as JSON lines (docs/events.md), `deploy_finished` last", content_type = "application/x-ndjson", body = String), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn promote(
    AxState(s): S,
    who: Caller,
    UrlPath((name, env)): UrlPath<(String, String)>,
    Query(q): Query<PromoteQuery>,
) -> Result<Response, ServerError> {
    let scope = scope(&s, &who, &name).await?;
    not_gitops(&s, &env, q.force, "promote").await?;
    let (to, envs) = find(environments_at(&s, &name, &scope.commit).await?, &env, &name)?;
    let to = protect(&s, &scope, to)?;
    let (from, _) = find(envs, &q.from, &name).map_err(|e| match e {
        ServerError::Input(m, _) => ServerError::Input(m, Some("from".into())),
        e => e,
    })?;
    owned(&s, &to.name, &name).await?;
    Ok(streamed(&s, scope, to, Request::Promote { from: Box::new(from) }))
}

#[derive(serde::Deserialize, Default)]
pub struct ApproveQuery {
    pub(crate) release: Option<i64>,
}

/// `POST /api/v1/projects/{name}/environments/{env}/approve[?release=ID]`: approves as the caller.
#[utoipa::path(post, path = "/api/v1/projects/{name}/environments/{env}/approve", tag = "environments", summary = "Approve the release waiting", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("env" = String, Path, description = "The environment"), ("release" = Option<i64>, Query, description = "This release (default: the one waiting)")), responses((status = 200, description = "The release"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn approve(
    AxState(s): S,
    who: Caller,
    UrlPath((name, env)): UrlPath<(String, String)>,
    Query(q): Query<ApproveQuery>,
) -> Result<Response, ServerError> {
    let scope = scope(&s, &who, &name).await?;
    let (env, _) = find(environments_at(&s, &name, &scope.commit).await?, &env, &name)?;
    let env = with_protection(&s, &name, env);
    let engine = engine(&s, Arc::new(|_| {}));
    // Four eyes: the user who started the pipeline that asked for the release does not
    // approve it either.
    if let Some(id) = q.release.or(s.store.unfinished(&env.name).await?.last().map(|r| r.id))
        && let Some(r) = s.store.release(id).await?
        && let Some(p) = &r.pipeline
        && env.protection.approvals > 0
        && let Some(run) = s.store.run(p.pipeline).await?
        && run.triggered_by.as_deref().is_some_and(|by| by.rsplit(": ").next() == Some(who.name.as_str()))
    {
        return Err(ServerError::Forbidden(format!(
            "`{}` started pipeline {} that asked for release #{id} of `{}` and may not approve it too (four eyes: someone else approves it)",
            who.name, p.pipeline, env.name
        )));
    }
    match engine.approve(&scope.actor, &env, q.release).await {
        Ok(r) => Ok(axum::Json(slipway_deploy::views::release_json(&r)).into_response()),
        Err(e) => Ok(deploy_error(&env.name, e)),
    }
}

/// A deploy error as the API's JSON error, with the engine's kind as its code.
fn deploy_error(env: &str, e: DeployError) -> Response {
    use slipway_deploy::ErrorKind;
    let status = match e.kind {
        ErrorKind::Input => StatusCode::BAD_REQUEST,
        ErrorKind::Busy => StatusCode::CONFLICT,
        ErrorKind::Refused | ErrorKind::Unsigned => StatusCode::FORBIDDEN,
        ErrorKind::NoAgent => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let message = match &e.hint {
        Some(h) => format!("{env}: {} ({h})", e.message),
        None => format!("{env}: {}", e.message),
    };
    let code = serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    crate::api::error(status, &code, message, None)
}

/// `GET /api/v1/projects/{name}/environments[?env=NAME]`: what each environment runs, observed
/// (the JSON of `slipway status --json`).
#[utoipa::path(get, path = "/api/v1/projects/{name}/environments", tag = "environments", summary = "Each environment, observed", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)")), responses((status = 200, description = "`slipway status --json`'s shape"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn status(AxState(s): S, who: Caller, UrlPath(name): UrlPath<String>) -> Result<Response, ServerError> {
    let scope = scope(&s, &who, &name).await?;
    let envs = environments_at(&s, &name, &scope.commit).await?;
    let engine = engine(&s, Arc::new(|_| {}));
    let mut out = Vec::new();
    for e in &envs {
        match engine.observe_all(std::slice::from_ref(e), Some(&e.name)).await {
            Ok(states) => out.extend(states.iter().map(slipway_deploy::views::state_json)),
            Err(err) => {
                out.push(serde_json::json!({"environment": e.name, "status": "unknown", "detail": err.message}))
            }
        }
    }
    Ok(axum::Json(out).into_response())
}

#[derive(serde::Deserialize, Default)]
pub struct LogsQuery {
    lines: Option<usize>,
}

/// `GET /api/v1/projects/{name}/environments/{env}/logs[?lines=N]`: the last lines of the
/// environment's instance logs, from the agent that runs it (this machine's, or a connected
/// one through its tunnel) — `slipway logs --env ENV --server URL`.
#[utoipa::path(get, path = "/api/v1/projects/{name}/environments/{env}/logs", tag = "environments", summary = "An environment's instance logs, the last lines", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("env" = String, Path, description = "The environment"), ("lines" = Option<usize>, Query, description = "At most this many (1 to 10000, default 100)")), responses((status = 200, description = "The lines, oldest first", content_type = "text/plain", body = String), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn logs(
    AxState(s): S,
    who: Caller,
    UrlPath((name, env)): UrlPath<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ServerError> {
    let scope = scope(&s, &who, &name).await?;
    let (found, _) = find(environments_at(&s, &name, &scope.commit).await?, &env, &name)?;
    let lines = q.lines.unwrap_or(100).clamp(1, 10_000);
    match slipway_deploy::observe::logs(&s.data_dir, Some(&found), &env, lines).await {
        Ok(l) => Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], l.text).into_response()),
        Err(e) => Err(match e.kind {
            slipway_deploy::ErrorKind::NoAgent => ServerError::Conflict(match e.hint {
                Some(h) => format!("{}; {h}", e.message),
                None => e.message,
            }),
            _ => ServerError::Input(e.message, Some("environment".into())),
        }),
    }
}

#[derive(serde::Deserialize, Default)]
pub struct HistoryQuery {
    limit: Option<i64>,
}

/// `GET /api/v1/projects/{name}/environments/{env}/releases[?limit=N]`: newest first (the JSON
/// of `slipway history --json`).
#[utoipa::path(get, path = "/api/v1/projects/{name}/environments/{env}/releases", tag = "environments", summary = "An environment's releases, newest first", params(("name" = String, Path, description = "The project (`team%2Fapp` for `team/app`)"), ("env" = String, Path, description = "The environment"), ("limit" = Option<i64>, Query, description = "At most this many (1 to 1000, default 20)")), responses((status = 200, description = "`slipway history --json`'s shape"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn history(
    AxState(s): S,
    _who: Caller,
    UrlPath((name, env)): UrlPath<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ServerError> {
    s.store.project(&name).await?.ok_or_else(|| ServerError::NotFound(format!("project `{name}`")))?;
    let list: Vec<serde_json::Value> = s
        .store
        .history(&env, q.limit.unwrap_or(20).clamp(1, 1000))
        .await?
        .iter()
        .map(slipway_deploy::views::release_json)
        .collect();
    Ok(axum::Json(list).into_response())
}
