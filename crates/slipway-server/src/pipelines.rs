//! Pipelines on the server: a commit of a project becomes a run — the project's mirror
//! fetched, the commit checked out, the pipeline planned by the same crates as `slipway run`
//! — and every later event (a job finished, a cancel) is one transition of the runner's
//! [`Scheduler`], restored from the run's snapshot and saved back in one transaction. There is
//! no second scheduler: the server only persists the one it restores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use slipway_model::run::{JobState, PipelineStatus};
use slipway_pipeline::plan::Plan;
use slipway_runner::scheduler::{Action, Outcome, Scheduler, Snapshot};
use slipway_store::{NewRun, Project, RunId};

use crate::{ServerError, State};

/// Every ready job of a server pipeline is queued at once; the agents' own concurrency is the
/// limit.
const UNLIMITED: usize = 100_000;

/// What moves a run.
pub enum Event {
    /// Look again (a new run, a restart, a delayed job's time).
    Step,
    Finished(usize, Outcome),
    Cancel,
    /// Run a job that ended again, or (`None`) every failed job (GitLab's "retry").
    Retry(Option<usize>),
    /// Start a manual job (GitLab's "play").
    Play(usize),
    /// Take in the ends the store has and the scheduler missed (a transition that failed
    /// after a job's end was recorded: the database went away in between).
    Reconcile,
}

/// The server's projects by name and the repository each is fetched from, for
/// `include:project` and `include:component` (the same URLs the agents are given).
pub(crate) async fn server_projects(state: &State) -> std::collections::BTreeMap<String, String> {
    state.store.projects().await.unwrap_or_default().into_iter().map(|p| (p.name, p.repo)).collect()
}

/// The mirror of a project on the server.
pub fn mirror_dir(data: &Path, project: &str) -> PathBuf {
    data.join("repos").join(format!("{}.git", slug(project)))
}

pub(crate) fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Starts a pipeline for `ref_name` (a branch, `refs/heads/…` or `refs/tags/…`; the default
/// branch when `None`) at its newest commit, or at `commit` when given: recorded, planned and
/// started before it returns.
pub async fn create(
    state: &Arc<State>,
    project: &Project,
    ref_name: Option<&str>,
    commit: Option<&str>,
    source: &str,
    variables: Vec<(String, String)>,
    by: &str,
) -> Result<RunId, ServerError> {
    let run = record(state, project, ref_name, commit, source, variables, by).await?;
    start(state, run).await?;
    Ok(run)
}

/// Records a pipeline without planning it yet (its id is `CI_PIPELINE_ID`): what a webhook
/// answers with at once. [`start`] plans it; a server that stops in between starts it when
/// it is back.
pub async fn record(
    state: &Arc<State>,
    project: &Project,
    ref_name: Option<&str>,
    commit: Option<&str>,
    source: &str,
    variables: Vec<(String, String)>,
    by: &str,
) -> Result<RunId, ServerError> {
    let (branch, full_ref) = match ref_name.unwrap_or(&project.branch) {
        r if r.starts_with("refs/tags/") => (None, r.to_string()),
        r => {
            let b = r.strip_prefix("refs/heads/").unwrap_or(r).to_string();
            (Some(b.clone()), format!("refs/heads/{b}"))
        }
    };
    let sha = match commit {
        Some(c) => c.to_string(),
        None => {
            let refs = update(state, project).await?;
            slipway_git::output(&refs, &["rev-parse", "--verify", &format!("{full_ref}^{{commit}}")]).ok_or_else(
                || ServerError::Input(format!("`{full_ref}` is not in {}", project.repo), Some("ref".into())),
            )?
        }
    };
    let shown_ref = branch.unwrap_or_else(|| full_ref.trim_start_matches("refs/tags/").to_string());
    Ok(state
        .store
        .create_run(&NewRun {
            project: project.name.clone(),
            ref_name: Some(shown_ref),
            commit_sha: Some(sha),
            source: source.to_string(),
            jobs: Vec::new(),
            variables,
            author: None,
            triggered_by: Some(by.to_string()),
        })
        .await?)
}

/// Where a project's refs are read: its own repository's git directory when it is on this
/// machine, else the mirror.
fn refs_dir(data_dir: &Path, project: &Project) -> PathBuf {
    slipway_git::remote::local_git_dir(&project.repo).unwrap_or_else(|| mirror_dir(data_dir, &project.name))
}

/// Where a project's pipelines are planned from: its own repository when it is on this
/// machine (agents here check out from it too), else the server's mirror of it.
pub(crate) fn plan_source(data_dir: &Path, project: &Project) -> PathBuf {
    match slipway_git::remote::local_git_dir(&project.repo) {
        Some(_) => PathBuf::from(&project.repo),
        None => mirror_dir(data_dir, &project.name),
    }
}

/// A pipeline's ref as a branch, when the repository it is planned from has a branch of that
/// name (else it is a tag): the project's own repository when it is on this machine, else the
/// mirror. The server and every agent ask this of the same repository, so they plan alike.
pub(crate) fn branch_of(data_dir: &Path, project: &Project, ref_name: Option<&str>) -> Option<String> {
    let refs = refs_dir(data_dir, project);
    ref_name.filter(|r| slipway_git::remote::has_branch(&refs, r)).map(str::to_string)
}

/// Brings what a project's refs are read from up to date, and says where that is: the
/// project's own repository when it is on this machine (nothing to do), else the mirror,
/// fetched now.
pub(crate) async fn update(state: &Arc<State>, project: &Project) -> Result<PathBuf, ServerError> {
    if let Some(git_dir) = slipway_git::remote::local_git_dir(&project.repo) {
        return Ok(git_dir);
    }
    let (repo, mirror) = (project.repo.clone(), mirror_dir(&state.data_dir, &project.name));
    let m = mirror.clone();
    blocking(move || slipway_git::remote::mirror(&repo, &m).map_err(|e| ServerError::Git(e.to_string()))).await?;
    Ok(mirror)
}

/// Brings the mirror up to date unless it already has `commit` on a branch it knows (a burst
/// of pushes is fetched once, by the first of them). A repository on this machine has no
/// mirror: it is read as it is.
async fn fetch(
    state: &Arc<State>,
    project: &Project,
    commit: Option<&str>,
    branch: Option<&str>,
) -> Result<(), ServerError> {
    if slipway_git::remote::local_git_dir(&project.repo).is_some() {
        return Ok(());
    }
    let mirror = mirror_dir(&state.data_dir, &project.name);
    let (repo, b, c) = (project.repo.clone(), branch.map(str::to_string), commit.map(str::to_string));
    blocking(move || {
        let known = c.is_some_and(|c| {
            mirror.join("HEAD").is_file()
                && b.as_deref().is_none_or(|b| slipway_git::remote::has_branch(&mirror, b))
                && slipway_git::run(&mirror, &["cat-file", "-e", &format!("{c}^{{commit}}")]).is_ok()
        });
        match known {
            true => Ok(()),
            false => slipway_git::remote::mirror(&repo, &mirror).map_err(|e| ServerError::Git(e.to_string())),
        }
    })
    .await
}

/// Plans a recorded pipeline and starts it. One that has its jobs already, or has ended, is
/// left as it is, so starting twice (after a restart) changes nothing.
pub async fn start(state: &Arc<State>, run: RunId) -> Result<(), ServerError> {
    // One start at a time, fetch included: a burst of deliveries is started in order, by one
    // fetch of the mirror and one plan each, not by a thousand git processes at once.
    let _one = state.starting.lock().await;
    let Some(row) = state.store.run(run).await? else {
        return Err(ServerError::NotFound(format!("pipeline {run}")));
    };
    let project = state
        .store
        .project(&row.project)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("project `{}`", row.project)))?;
    let sha = row.commit_sha.clone().unwrap_or_default();
    fetch(state, &project, Some(&sha), row.ref_name.as_deref()).await?;
    let branch = branch_of(&state.data_dir, &project, row.ref_name.as_deref());
    let planned = {
        if row.status != PipelineStatus::Running || !state.store.jobs(run).await?.is_empty() {
            return Ok(());
        }
        match plan_run(state, &project, run, &sha, branch.as_deref(), &row.source, &row.variables).await {
            Ok((plan, author)) => {
                let jobs: Vec<(String, String, Vec<String>)> =
                    plan.jobs.iter().map(|j| (j.name.clone(), j.stage.clone(), j.tags.clone())).collect();
                state.store.add_jobs(run, &jobs, author.as_deref()).await?;
                state.plans.lock().expect("plans lock").insert(run, Arc::new(plan));
                true
            }
            Err(Unplanned { why, no_pipeline }) if no_pipeline && config_repository(state, &project).await => {
                // A GitOps config repository without a pipeline: as GitLab does for a project
                // without one, no pipeline (the one recorded for the push is dropped).
                tracing::info!(project = %project.name, commit = %sha, "no pipeline to run in a config repository: {why}");
                state.store.end_run(run, PipelineStatus::Canceled, &why).await?;
                state.store.delete_run(run).await?;
                false
            }
            Err(Unplanned { why, .. }) => {
                state.store.end_run(run, PipelineStatus::Failed, &why).await?;
                let s = Arc::clone(state);
                tokio::spawn(async move { crate::notify::pipeline_finished(&s, run).await });
                false
            }
        }
    };
    if planned {
        drive(state, run, Event::Step).await?;
        if matches!(row.source.as_str(), "push" | "api" | "web") {
            auto_cancel(state, &project.name, run).await?;
        }
    }
    Ok(())
}

/// GitLab's auto-cancel of redundant pipelines: an older running pipeline of the same project
/// and ref is canceled when every job of it that has started is `interruptible: true`.
async fn auto_cancel(state: &Arc<State>, project: &str, newer: RunId) -> Result<(), ServerError> {
    let Some(new) = state.store.run(newer).await? else { return Ok(()) };
    for old in state.store.running_runs().await? {
        if old.id >= newer || old.project != project || old.ref_name != new.ref_name {
            continue;
        }
        let plan = plan_of(state, &old).await?;
        let jobs = state.store.jobs(old.id).await?;
        let started_all_interruptible = jobs.iter().all(|j| {
            let started =
                j.attempts > 0 || matches!(j.status, JobState::Running | JobState::Success | JobState::Failed);
            !started || plan.jobs.get(j.index).is_some_and(|p| p.interruptible)
        });
        if started_all_interruptible {
            tracing::info!(pipeline = old.id, by = newer, "auto-canceled: a newer pipeline runs for the same ref");
            drive(state, old.id, Event::Cancel).await?;
        }
    }
    Ok(())
}

/// Plans a run at its commit, as the agent that runs a job of it will (same commit, same
/// pipeline id, same source and variables: the same plan), from its [`plan_source`].
async fn plan_run(
    state: &Arc<State>,
    project: &Project,
    run: RunId,
    sha: &str,
    branch: Option<&str>,
    source: &str,
    variables: &[(String, String)],
) -> Result<(Plan, Option<String>), Unplanned> {
    let _one = state.planning.lock().await;
    let projects = server_projects(state).await;
    let repo = plan_source(&state.data_dir, project);
    let dir = state.data_dir.join("plans").join(slug(&project.name));
    let (sha, branch, source, vars) =
        (sha.to_string(), branch.map(str::to_string), source.to_string(), variables.to_vec());
    let (url, name) = (state.notifier.external_url.clone(), project.name.clone());
    tokio::task::spawn_blocking(move || {
        let what = PlanFor { run, source: &source, variables: &vars, server: Some((&url, &name)), projects: &projects };
        plan_at(&repo, &sha, branch.as_deref(), &dir, what).map_err(|why| {
            Unplanned {
                // Checked out, but neither a pipeline file nor a Go module is there.
                no_pipeline: dir.is_dir() && slipway_runner::project::find_source(&dir, None).is_err(),
                why,
            }
        })
    })
    .await
    .map_err(|e| Unplanned { why: e.to_string(), no_pipeline: false })?
}

/// Whether a GitOps application syncs from the project's repository.
async fn config_repository(state: &State, project: &Project) -> bool {
    state.store.apps().await.is_ok_and(|apps| apps.iter().any(|a| crate::gitops::same_repo(&a.repo, &project.repo)))
}

/// Why a run was not planned.
pub(crate) struct Unplanned {
    pub why: String,
    /// The commit has no pipeline to run (no pipeline file, no `go.mod`).
    pub no_pipeline: bool,
}

/// What a run is planned for: its id, pipeline source and variables, and the server's URL
/// and project name (`CI_SERVER_*`, `CI_PROJECT_PATH`).
pub struct PlanFor<'a> {
    pub run: RunId,
    pub source: &'a str,
    pub variables: &'a [(String, String)],
    pub server: Option<(&'a str, &'a str)>,
    /// The server's projects (name → repository), for `include:project` and components.
    pub projects: &'a std::collections::BTreeMap<String, String>,
}

/// Checks `commit` out into `dir` from `source` and plans its pipeline: what the server does
/// before a run and what an agent does before a job.
pub fn plan_at(
    source: &Path,
    commit: &str,
    branch: Option<&str>,
    dir: &Path,
    what: PlanFor<'_>,
) -> Result<(Plan, Option<String>), String> {
    let PlanFor { run, source: pipeline_source, variables, server, projects } = what;
    slipway_git::remote::checkout_at(&source.display().to_string(), commit, branch, dir).map_err(|e| e.to_string())?;
    let on_server = server.map(|(url, project)| slipway_runner::fetch::ServerProjects {
        url: url.to_string(),
        project: project.to_string(),
        repos: projects.clone(),
    });
    let overrides = variables.iter().cloned().collect();
    let loaded = match slipway_runner::project::load_with(dir, None, overrides, pipeline_source, on_server) {
        Ok(l) => l,
        Err(slipway_runner::project::LoadError::NoPipeline(n)) => return Err(n.message),
        Err(slipway_runner::project::LoadError::Unreadable { message }) => return Err(message),
        Err(slipway_runner::project::LoadError::Invalid(i)) => return Err(render(&i)),
    };
    let mut checkout = slipway_git::Checkout::read(dir);
    // The server's URL and project name, not those of the repository it mirrors: what
    // `CI_SERVER_*`, `CI_PROJECT_URL` and `CI_PROJECT_PATH` say in GitLab.
    if let Some((url, project)) = server {
        checkout.server_url = Some(url.trim_end_matches('/').to_string());
        checkout.project_path = project.to_string();
    }
    let input = slipway_runner::project::PlanInput {
        root: dir,
        checkout: &checkout,
        pipeline_id: run as u64,
        source: pipeline_source,
        overrides: variables.iter().cloned().collect(),
        snapshot: None,
    };
    let plan = slipway_runner::project::make_plan(&loaded, &input).map_err(|i| render(&i))?;
    Ok((plan, checkout.author))
}

pub(crate) fn render(i: &slipway_runner::project::Invalid) -> String {
    i.diagnostics.iter().map(|d| i.sources.render(d, false)).collect::<Vec<_>>().join("\n")
}

/// The plan of a run: the one made when it started, or made again after a restart.
pub(crate) async fn plan_of(state: &Arc<State>, run: &slipway_store::RunRow) -> Result<Arc<Plan>, ServerError> {
    if let Some(p) = state.plans.lock().expect("plans lock").get(&run.id) {
        return Ok(Arc::clone(p));
    }
    let project = state
        .store
        .project(&run.project)
        .await?
        .ok_or_else(|| ServerError::Input(format!("project `{}` is gone", run.project), None))?;
    update(state, &project).await?;
    let sha = run.commit_sha.clone().unwrap_or_default();
    let branch = branch_of(&state.data_dir, &project, run.ref_name.as_deref());
    let (plan, _) = plan_run(state, &project, run.id, &sha, branch.as_deref(), &run.source, &run.variables)
        .await
        .map_err(|u| ServerError::Plan(u.why))?;
    let plan = Arc::new(plan);
    state.plans.lock().expect("plans lock").insert(run.id, Arc::clone(&plan));
    Ok(plan)
}

/// Reconciles every running pipeline with its jobs' records (see [`Event::Reconcile`]).
pub async fn reconcile_all(state: &Arc<State>) {
    let (unstarted, stale) = match state.store.runs_to_reconcile().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for pipelines to reconcile");
            return;
        }
    };
    // Recorded but never planned (its start failed, say git could not fetch): again.
    for run in unstarted {
        if let Err(e) = start(state, run).await {
            tracing::warn!(pipeline = run, error = %e, "cannot start the recorded pipeline");
        }
    }
    for run in stale {
        if let Err(e) = drive(state, run, Event::Reconcile).await {
            tracing::warn!(pipeline = run, error = %e, "cannot reconcile the pipeline");
        }
    }
}

/// How many times a job whose agent was lost is run again when its `retry:` does not say
/// more (`retry: {max: N, when: [runner_system_failure]}` raises it to N).
pub const LOST_AGENT_RETRIES: u32 = 2;

/// Jobs whose agent stopped renewing their lease: queued again at the front, for any agent,
/// while the job's retries for `runner_system_failure` allow; then failed with that reason.
pub async fn lost_jobs(state: &Arc<State>) {
    let expired = match state.store.expired_jobs().await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot read expired job leases");
            return;
        }
    };
    for (run, index, attempts, agent) in expired {
        let retries = match state.store.run(run).await {
            Ok(Some(row)) => match plan_of(state, &row).await {
                Ok(plan) => plan.jobs.get(index).map_or(LOST_AGENT_RETRIES, |j| {
                    let r = &j.retry;
                    // `retry: N` alone means every kind of failure, as in GitLab; a lost agent
                    // is a runner that failed or was interrupted.
                    let lost =
                        |w: &String| matches!(w.as_str(), "always" | "runner_system_failure" | "runner_interrupted");
                    match r.when.is_empty() || r.when.iter().any(lost) {
                        true => r.max.max(LOST_AGENT_RETRIES),
                        false => LOST_AGENT_RETRIES,
                    }
                }),
                Err(_) => LOST_AGENT_RETRIES,
            },
            _ => LOST_AGENT_RETRIES,
        };
        if attempts <= retries {
            match state.store.requeue_job(run, index, &agent).await {
                Ok(true) => {
                    tracing::warn!(pipeline = run, job = index, agent = %agent, attempts, "the job's agent stopped renewing its lease: queued again");
                    state.work.notify_waiters();
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cannot requeue an expired job"),
            }
            continue;
        }
        let why = format!(
            "runner_system_failure: the agent `{agent}` stopped renewing the job's lease ({attempts} attempts, each lost)"
        );
        match state.store.finish_job(run, index, &agent, JobState::Failed, None, Some(&why)).await {
            Ok(true) => {
                tracing::warn!(pipeline = run, job = index, "{why}");
                crate::api::compress_log(state, run, index).await;
                if let Err(e) = drive(state, run, Event::Finished(index, Outcome::Failed { exit_code: None })).await {
                    tracing::error!(pipeline = run, error = %e, "cannot move the pipeline on");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot fail an expired job"),
        }
    }
}

/// One transition of a run's scheduler: restored from its snapshot, moved by `event`, saved
/// back with the jobs it changed. Jobs it starts become claimable (`pending` in the store)
/// until an agent takes one.
pub async fn drive(state: &Arc<State>, run: RunId, event: Event) -> Result<PipelineStatus, ServerError> {
    let _one = state.driving.lock().await;
    let Some(row) = state.store.run(run).await? else {
        return Err(ServerError::NotFound(format!("pipeline {run}")));
    };
    // A retry or a manual job reopens an ended pipeline; nothing else moves one.
    if row.status != PipelineStatus::Running && !matches!(event, Event::Retry(_) | Event::Play(_)) {
        return Ok(row.status);
    }
    let plan = plan_of(state, &row).await?;
    let mut sched = match &row.snapshot {
        Some(s) => {
            let snap: Snapshot = serde_json::from_value(s.clone()).map_err(|e| ServerError::Plan(e.to_string()))?;
            Scheduler::restore(&plan, UNLIMITED, &snap).map_err(ServerError::Plan)?
        }
        None => Scheduler::new(&plan, UNLIMITED, &[]),
    };
    let reconcile = matches!(event, Event::Reconcile);
    match event {
        Event::Step => {}
        Event::Finished(i, outcome) => sched.finished(i, outcome),
        Event::Cancel => sched.cancel(),
        Event::Retry(Some(i)) => sched.retry(i).map_err(|e| ServerError::Input(e.to_string(), Some("job".into())))?,
        Event::Retry(None) => {
            if sched.retry_failed() == 0 {
                return Err(ServerError::Input(format!("pipeline {run} has no failed job to retry"), None));
            }
        }
        Event::Play(i) => sched.play(i).map_err(|e| ServerError::Input(e.to_string(), Some("job".into())))?,
        Event::Reconcile => {
            for j in state.store.jobs(run).await? {
                if j.index < sched.len() && sched.status(j.index) == JobState::Running {
                    let outcome = match j.status {
                        JobState::Success => Outcome::Success,
                        JobState::Canceled => Outcome::Canceled,
                        JobState::Failed => Outcome::Failed { exit_code: j.exit_code },
                        _ => continue,
                    };
                    sched.finished(j.index, outcome);
                }
            }
        }
    }
    let mut dispatched = Vec::new();
    for a in sched.step(slipway_model::time::now_ms()) {
        if let Action::Start(i) = a {
            dispatched.push(i);
        }
    }
    let changes: Vec<(usize, JobState)> = sched
        .take_changes()
        .into_iter()
        .map(|(i, s)| if s == JobState::Running && dispatched.contains(&i) { (i, JobState::Pending) } else { (i, s) })
        .collect();
    let status = match sched.done() {
        true => PipelineStatus::of(sched.is_canceled(), (0..sched.len()).map(|i| sched.status(i))),
        false => PipelineStatus::Running,
    };
    // A reconcile that found nothing to take in writes nothing.
    if reconcile && changes.is_empty() && status == PipelineStatus::Running {
        return Ok(status);
    }
    let snapshot = serde_json::to_value(sched.snapshot()).map_err(|e| ServerError::Plan(e.to_string()))?;
    state.store.save_transition(run, status, &snapshot, &changes).await?;
    if !dispatched.is_empty() {
        state.work.notify_waiters();
    }
    if status != PipelineStatus::Running {
        state.plans.lock().expect("plans lock").remove(&run);
        // Failed, fixed or canceled: the notifications hear of it (without waiting for them).
        if row.status == PipelineStatus::Running {
            let s = Arc::clone(state);
            tokio::spawn(async move { crate::notify::pipeline_finished(&s, run).await });
        }
    }
    Ok(status)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServerError::Git(e.to_string()))?
}
