//! GitOps (docs/gitops.md): applications whose desired state is a file in a config repository
//! — `PATH/ENV.yml`: a release and the environment's settings in the `environments:` schema —
//! and the reconciler that keeps each environment as its file says, through the same deploy
//! engine as every deploy. Each pass fetches the repository (a bare mirror under
//! `DATA/gitops/`), reads the file at the revision's commit, compares it with the current
//! release (version and settings) and with what runs (`Engine::observe`: health, drift), and
//! records the status; automated applications sync when they are out of sync — once per
//! commit: a failed sync waits for a new commit or a manual sync — and, with self-heal, repair
//! drift. A rollback pins the environment until the desired state moves past the bad commit.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use slipway_deploy::observe::Health;
use slipway_model::environment::Environment;
use slipway_model::release::{Actor, ActorKind, ReleaseConfig};
use slipway_model::time::now_ms;
use slipway_store::{AppRow, AppSync};

use crate::State;

/// How often an application is looked at without a webhook.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// What the reconciler found for an application (kept as JSON with it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppStatus {
    /// `Synced`, `OutOfSync` or `Unknown` (the desired state cannot be read).
    pub sync: String,
    /// `Healthy`, `Progressing`, `Degraded`, `Missing` or `Unknown`.
    pub health: String,
    /// A rollback holds the environment on an earlier release until the desired state moves.
    #[serde(default)]
    pub pinned: bool,
    /// The config repository's commit the desired state was read at.
    pub commit: Option<String>,
    /// The desired-state file's blob id at that commit: a push that leaves it as it was is
    /// not read again.
    #[serde(default)]
    pub blob: Option<String>,
    pub desired_version: Option<String>,
    pub running_version: Option<String>,
    /// Why it is in this state.
    pub reason: Option<String>,
    /// What differs between the desired state and the current release.
    #[serde(default)]
    pub diff: Vec<String>,
    /// The desired-state file's errors, each at `file:line:col`.
    #[serde(default)]
    pub errors: Vec<String>,
    /// What runs differs from its release record (a unit edited, an instance stopped, …).
    #[serde(default)]
    pub drift: Vec<String>,
}

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Its interval came round, or a webhook of its repository arrived.
    Refresh,
    /// Someone asked for a sync (`slipway app sync`): it syncs even when not automated, and
    /// even a commit whose sync failed.
    Manual,
    /// Someone asked what differs (`slipway app diff`): fetched and compared, nothing changed.
    Look,
}

/// The reconciler's memory between passes: applications to look at now, and self-heal's
/// back-off per application.
#[derive(Default)]
pub struct Reconciler {
    nudged: Mutex<HashSet<String>>,
    /// Failed repairs in a row and when the next one may run.
    backoff: Mutex<HashMap<String, (u32, i64)>>,
    /// One pass per application at a time.
    running: tokio::sync::Mutex<()>,
    /// When each config repository was last fetched (Unix ms).
    fetched: Mutex<HashMap<String, i64>>,
    interval: Duration,
    /// A push makes every application of the repository look (`--gitops-refresh-all`).
    refresh_all: bool,
}

impl Reconciler {
    pub fn new(interval: Duration, refresh_all: bool) -> Reconciler {
        Reconciler { interval, refresh_all, ..Reconciler::default() }
    }

    /// Looks at the applications syncing from `repo` now (a push to it was announced).
    pub fn nudge_repo(&self, apps: &[AppRow], repo: &str) {
        let mut n = self.nudged.lock().expect("nudge lock");
        for a in apps.iter().filter(|a| same_repo(&a.repo, repo)) {
            n.insert(a.name.clone());
        }
    }

    fn interval(&self) -> Duration {
        if self.interval.is_zero() { DEFAULT_INTERVAL } else { self.interval }
    }
}

pub(crate) fn same_repo(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('/').trim_end_matches(".git").to_string();
    norm(a) == norm(b)
}

fn mirror_of(s: &State, app: &AppRow) -> PathBuf {
    s.data_dir.join("gitops").join(format!("{}.git", crate::pipelines::slug(&app.repo)))
}

/// The files that may hold the application's environment's desired state.
fn file_of(app: &AppRow) -> Vec<String> {
    slipway_pipeline::compile::desired_files(&app.path, &app.environment)
}

/// The desired-state file an application reads at a commit of its repository's mirror:
/// (file, blob id), or `None` when the commit has none of its candidate files.
fn desired_blob(dir: &std::path::Path, app: &AppRow, commit: &str) -> Result<Option<(String, String)>, String> {
    let files = file_of(app);
    let mut found = slipway_git::remote::blobs(dir, commit, &files).map_err(|e| e.to_string())?;
    Ok(files.into_iter().find_map(|f| found.remove(&f).map(|b| (f, b))))
}

/// Fetches a config repository into its mirror unless it was fetched at or after
/// `fresh_since` (Unix ms) — one fetch per repository per round of the reconciler, however
/// many applications it holds.
fn fetch(s: &State, app: &AppRow, fresh_since: Option<i64>) -> Result<(), String> {
    let fresh = fresh_since
        .is_some_and(|t| s.reconciler.fetched.lock().expect("fetched lock").get(&app.repo).is_some_and(|at| *at >= t));
    if fresh {
        return Ok(());
    }
    let started = now_ms();
    slipway_git::remote::mirror(&app.repo, &mirror_of(s, app))
        .map_err(|e| format!("the config repository {}: {e}", app.repo))?;
    s.reconciler.fetched.lock().expect("fetched lock").insert(app.repo.clone(), started);
    Ok(())
}

/// What an application's file is read as: its commit, path, blob id and text.
struct Read {
    commit: String,
    file: String,
    blob: String,
    text: String,
}

/// Why the desired state was not read.
enum Unread {
    /// The repository or its revision cannot be read.
    Unreachable(String),
    /// The revision's commit has none of the application's files: it declares nothing.
    Gone { commit: String, why: String },
}

/// The desired state at the revision's commit, or why not (see [`fetch`] for `fresh_since`).
async fn read_desired(s: &Arc<State>, app: &AppRow, fresh_since: Option<i64>) -> Result<Read, Unread> {
    let (s, app) = (Arc::clone(s), app.clone());
    tokio::task::spawn_blocking(move || {
        let unreachable = |e: String| Unread::Unreachable(e);
        fetch(&s, &app, fresh_since).map_err(unreachable)?;
        let dir = mirror_of(&s, &app);
        let commit = slipway_git::remote::resolve(&dir, &app.revision).map_err(|e| unreachable(e.to_string()))?;
        let Some((file, blob)) = desired_blob(&dir, &app, &commit).map_err(unreachable)? else {
            let why = format!("commit {} of {} has no {}", &commit[..commit.len().min(12)], app.repo, file_of(&app)[0]);
            return Err(Unread::Gone { commit, why });
        };
        let text = slipway_git::remote::blob_text(&dir, &blob).map_err(|e| unreachable(e.to_string()))?;
        Ok(Read { commit, file, blob, text })
    })
    .await
    .map_err(|e| Unread::Unreachable(e.to_string()))?
}

fn health_of(h: Health) -> &'static str {
    match h {
        Health::Healthy => "Healthy",
        Health::Deploying | Health::Waiting => "Progressing",
        Health::NotDeployed => "Missing",
        Health::Degraded | Health::Failed | Health::RolledBack | Health::Interrupted | Health::Drift => "Degraded",
        Health::Unmanaged | Health::Unknown => "Unknown",
    }
}

/// The lines that differ between the current release's settings and the desired ones.
fn settings_diff(current: &ReleaseConfig, desired: &ReleaseConfig) -> Vec<String> {
    let (a, b) = (
        serde_json::to_string_pretty(current).unwrap_or_default(),
        serde_json::to_string_pretty(desired).unwrap_or_default(),
    );
    similar::TextDiff::from_lines(&a, &b)
        .iter_all_changes()
        .filter_map(|c| match c.tag() {
            similar::ChangeTag::Delete => Some(format!("- {}", c.value().trim_end())),
            similar::ChangeTag::Insert => Some(format!("+ {}", c.value().trim_end())),
            similar::ChangeTag::Equal => None,
        })
        .collect()
}

fn actor_of(app: &AppRow) -> Actor {
    Actor { name: format!("gitops:{}", app.name), kind: ActorKind::System, pipeline: None }
}

/// One pass over an application: read, compare, observe, and sync or heal when it should.
/// Returns what it found (also stored with the application).
pub async fn reconcile(s: &Arc<State>, name: &str, trigger: Trigger) -> Result<AppStatus, crate::ServerError> {
    reconcile_fetched(s, name, trigger, None).await
}

/// [`reconcile`], reading a repository fetched since `fresh_since` as it is.
async fn reconcile_fetched(
    s: &Arc<State>,
    name: &str,
    trigger: Trigger,
    fresh_since: Option<i64>,
) -> Result<AppStatus, crate::ServerError> {
    let _one = s.reconciler.running.lock().await;
    let app = s.store.app(name).await?.ok_or_else(|| crate::ServerError::NotFound(format!("application `{name}`")))?;
    let mut st = AppStatus { sync: "Unknown".into(), health: "Unknown".into(), ..AppStatus::default() };
    let current = s.store.current(&app.environment).await?;
    st.running_version = current.as_ref().map(|c| c.version.clone());
    let Read { commit, file, blob, text } = match read_desired(s, &app, fresh_since).await {
        Ok(x) => x,
        Err(Unread::Unreachable(why)) => {
            // Nothing is changed on the targets: the last good state keeps running.
            st.reason = Some(why);
            save(s, &app, &st, app.failed_commit.as_deref()).await?;
            return Ok(st);
        }
        Err(Unread::Gone { commit, why }) => {
            st.commit = Some(commit.clone());
            return declared_nothing(s, &app, st, current, trigger, &commit, why).await;
        }
    };
    st.commit = Some(commit.clone());
    st.blob = Some(blob.clone());
    let mut sources = slipway_pipeline::SourceMap::default();
    let shown = format!("{}@{}", file, &commit[..commit.len().min(12)]);
    let desired = match slipway_pipeline::load_desired(std::path::Path::new(&shown), &text, &mut sources) {
        Ok(d) => d,
        Err(diags) => {
            st.errors = diags
                .iter()
                .filter(|d| d.severity == slipway_pipeline::Severity::Error)
                .map(|d| format!("{}: {}", sources.location(d.span), d.message))
                .collect();
            st.reason = Some(format!("{} has {} error(s); nothing was applied", shown, st.errors.len()));
            save(s, &app, &st, app.failed_commit.as_deref()).await?;
            return Ok(st);
        }
    };
    st.desired_version = Some(desired.release.version.clone());
    let env: Environment = desired.environment.clone();
    // Its settings, for what acts on it when the file is gone (a prune that retires it).
    s.monitor.knows(&app.project, &env);
    if env.name != app.environment {
        st.errors.push(format!(
            "{shown}: declares environment `{}`, but application `{}` syncs `{}`",
            env.name, app.name, app.environment
        ));
        st.reason = Some("the file is for another environment; nothing was applied".into());
        save(s, &app, &st, app.failed_commit.as_deref()).await?;
        return Ok(st);
    }
    // The artifacts the file names must be the version's.
    if !desired.release.artifacts.is_empty() {
        match s.store.find_version(&desired.release.version).await? {
            Some(r) => {
                for (platform, sha) in &desired.release.artifacts {
                    match r.artifacts.iter().find(|a| &a.platform == platform) {
                        Some(a) if &a.sha256 == sha => {}
                        Some(a) => st.errors.push(format!(
                            "{shown}: names sha256:{sha} for {platform}, but {} was built as sha256:{}",
                            desired.release.version, a.sha256
                        )),
                        None => st.errors.push(format!(
                            "{shown}: names an artifact for {platform}, but {} has none",
                            desired.release.version
                        )),
                    }
                }
            }
            None => st.errors.push(format!("{shown}: version {} was never built here", desired.release.version)),
        }
        if !st.errors.is_empty() {
            st.reason = Some("the desired artifacts are not the version's: nothing was applied".into());
            save(s, &app, &st, app.failed_commit.as_deref()).await?;
            return Ok(st);
        }
    }
    let config = ReleaseConfig::of(&env);
    match &current {
        Some(c) => {
            if c.version != desired.release.version {
                st.diff.push(format!("version: {} → {}", c.version, desired.release.version));
            }
            if c.config_hash != config.hash() {
                st.diff.extend(settings_diff(&c.config, &config));
            }
        }
        None => st.diff.push(format!("version: (nothing) → {}", desired.release.version)),
    }
    st.sync = if st.diff.is_empty() { "Synced" } else { "OutOfSync" }.into();
    // A rollback's pin holds until the desired state moves past the commit it was made at:
    // until the file changes, not when a commit changes other files (read again now: a
    // rollback may have pinned it while this pass fetched).
    let app = s.store.app(&app.name).await?.unwrap_or(app);
    let mut pinned = app.pinned.is_some();
    if pinned && !same_file(s, &app, app.pinned_commit.as_deref(), &commit, &blob).await {
        s.store.pin_app(&app.name, None).await?;
        pinned = false;
    }
    st.pinned = pinned;
    let observed = crate::deploys::observe(s, &env).await;
    if let Some(o) = &observed {
        st.health = health_of(o.status).into();
        st.drift = o.drift.clone();
        if o.status == Health::Drift && st.reason.is_none() {
            st.reason = o.detail.clone();
        }
    }
    let mut failed = app.failed_commit.clone();
    // The file whose sync failed, at whatever commit it is read now (a commit that changes
    // other files is no reason to try it again).
    let failed_here = same_file(s, &app, failed.as_deref(), &commit, &blob).await;
    let (auto_waits, manual_waits) = window_gate(&app, now_ms());
    let wants_sync = st.sync == "OutOfSync"
        && !pinned
        && match trigger {
            Trigger::Manual => manual_waits.is_none(),
            Trigger::Refresh => app.automated && !failed_here && auto_waits.is_none(),
            Trigger::Look => false,
        };
    if st.sync == "OutOfSync" && !pinned && app.automated && !failed_here {
        st.reason = auto_waits.clone();
    }
    if pinned && st.sync == "OutOfSync" {
        st.reason = Some(format!(
            "pinned by a rollback to release #{}: auto-sync resumes when {} moves past commit {}",
            app.pinned.unwrap_or_default(),
            app.repo,
            &commit[..commit.len().min(12)]
        ));
    }
    let heal = !wants_sync
        && st.sync == "Synced"
        && app.self_heal
        && auto_waits.is_none()
        && trigger == Trigger::Refresh
        && observed.as_ref().is_some_and(|o| matches!(o.status, Health::Drift | Health::Degraded | Health::Failed))
        && backoff_allows(s, &app.name);
    if heal {
        heal_now(s, &app, &env, &commit, &desired.release.version, current.as_ref().map(|c| c.id), &mut st).await?;
    } else if wants_sync {
        let started = now_ms();
        let why = if trigger == Trigger::Manual { "manual" } else { "auto" };
        let r = crate::deploys::gitops_deploy(s, &app.project, &env, &desired.release.version, false, &actor_of(&app))
            .await;
        let (outcome, detail, release) = match &r {
            Ok(o) if o.unchanged => ("unchanged", None, Some(o.release.id)),
            Ok(o) => ("synced", None, Some(o.release.id)),
            Err(e) => ("failed", Some(e.message.clone()), None),
        };
        let what = Synced { commit: &commit, version: &desired.release.version, release, started };
        record_sync(s, &app, &what, why, outcome, detail.clone()).await?;
        match r {
            Ok(o) => {
                failed = None;
                st.sync = "Synced".into();
                st.diff.clear();
                st.running_version = Some(o.release.version.clone());
                st.reason = None;
                if let Some(o) = crate::deploys::observe(s, &env).await {
                    st.health = health_of(o.status).into();
                    st.drift = o.drift;
                }
            }
            Err(e) => {
                // Not tried again for this commit: a new commit or a manual sync.
                failed = Some(commit.clone());
                st.reason = Some(format!("the {why} sync of {} failed: {}", desired.release.version, e.message));
                let running = s.store.current(&app.environment).await?;
                st.running_version = running.map(|r| r.version);
            }
        }
    } else if st.sync == "OutOfSync" && st.reason.is_none() {
        st.reason = Some(if failed_here {
            format!(
                "the sync of commit {} failed; it waits for a new commit or `slipway app sync {}`",
                &commit[..12.min(commit.len())],
                app.name
            )
        } else if !app.automated {
            format!("manual sync: `slipway app sync {}`", app.name)
        } else {
            "out of sync".into()
        });
    }
    save(s, &app, &st, failed.as_deref()).await?;
    Ok(st)
}

/// The environment as the file declared it at the newest commit the application synced
/// that still has it (what the monitor learns on each read, found again after a restart).
async fn last_declared(s: &Arc<State>, app: &AppRow) -> Option<Environment> {
    let commits: Vec<String> = s.store.app_syncs(&app.name, 20).await.ok()?.into_iter().map(|x| x.commit).collect();
    let (dir, app) = (mirror_of(s, app), app.clone());
    tokio::task::spawn_blocking(move || {
        commits.iter().find_map(|c| {
            let (file, blob) = desired_blob(&dir, &app, c).ok()??;
            let text = slipway_git::remote::blob_text(&dir, &blob).ok()?;
            let mut sources = slipway_pipeline::SourceMap::default();
            let shown = format!("{file}@{}", &c[..c.len().min(12)]);
            let d = slipway_pipeline::load_desired(std::path::Path::new(&shown), &text, &mut sources).ok()?;
            (d.environment.name == app.environment).then_some(d.environment)
        })
    })
    .await
    .ok()
    .flatten()
}

/// A pass over an application whose file is gone at `commit` (deleted, or never there): the
/// desired state is that nothing runs. With `prune`, a manual sync — or an automated one that
/// `allow_empty` lets through (Argo CD's safety against a typo emptying an environment) —
/// retires the environment: everything that runs for it is removed and the store holds no
/// current release, so nothing brings it back. Otherwise it keeps running, `OutOfSync`, and
/// the reason says what would retire it.
async fn declared_nothing(
    s: &Arc<State>,
    app: &AppRow,
    mut st: AppStatus,
    current: Option<slipway_model::release::Release>,
    trigger: Trigger,
    commit: &str,
    why: String,
) -> Result<AppStatus, crate::ServerError> {
    let short = &commit[..commit.len().min(12)];
    let file = file_of(app)[0].clone();
    // A deleted file is the desired state moving past a rollback's pin.
    if app.pinned.is_some() {
        s.store.pin_app(&app.name, None).await?;
    }
    let Some(current) = current else {
        st.sync = "Synced".into();
        st.health = "Missing".into();
        st.reason = Some(format!("{why}: nothing runs for `{}`, as it declares", app.environment));
        save(s, app, &st, None).await?;
        return Ok(st);
    };
    st.sync = "OutOfSync".into();
    st.diff.push(format!("version: {} → (nothing: {file} is gone)", current.version));
    let known = match s.monitor.environment(&app.environment) {
        Some(e) => Some(e),
        None => last_declared(s, app).await,
    };
    if let Some(env) = &known
        && let Some(o) = crate::deploys::observe(s, env).await
    {
        st.health = health_of(o.status).into();
        st.drift = o.drift.clone();
    }
    let failed_here = app.failed_commit.as_deref() == Some(commit);
    let (auto_waits, manual_waits) = window_gate(app, now_ms());
    let retire = app.prune
        && match trigger {
            Trigger::Manual => manual_waits.is_none(),
            Trigger::Refresh => app.automated && app.allow_empty && !failed_here && auto_waits.is_none(),
            Trigger::Look => false,
        };
    let mut failed = app.failed_commit.clone();
    if !retire {
        st.reason = Some(if !app.prune {
            format!(
                "{why}: `{}` keeps running {} (prune is off; remove it by hand, or turn on prune and run `slipway app sync {}`)",
                app.environment, current.version, app.name
            )
        } else if failed_here {
            format!(
                "{why}: retiring `{}` failed; it waits for a new commit or `slipway app sync {}`",
                app.environment, app.name
            )
        } else if let (true, Some(w)) = (app.automated && app.allow_empty, auto_waits.or(manual_waits)) {
            format!("{why}: {w}")
        } else {
            format!(
                "{why}: `{}` keeps running {} — an automated sync retires an environment only with allowEmpty; `slipway app sync {}` retires it",
                app.environment, current.version, app.name
            )
        });
        save(s, app, &st, failed.as_deref()).await?;
        return Ok(st);
    }
    let Some(env) = known else {
        st.reason = Some(format!(
            "{why}: `{}` cannot be retired, its settings were never read by this server; remove it by hand",
            app.environment
        ));
        save(s, app, &st, failed.as_deref()).await?;
        return Ok(st);
    };
    let started = now_ms();
    let how = if trigger == Trigger::Manual { "manual" } else { "auto" };
    let r = crate::deploys::gitops_retire(s, &app.project, &env).await;
    let what = Synced { commit, version: &current.version, release: Some(current.id), started };
    match r {
        Ok(Some(lines)) => {
            record_sync(s, app, &what, how, "retired", Some(lines.join("; "))).await?;
            failed = None;
            st.sync = "Synced".into();
            st.health = "Missing".into();
            st.diff.clear();
            st.drift.clear();
            st.running_version = None;
            st.reason = Some(format!("{why}: `{}` retired ({} removed) by prune", app.environment, current.version));
        }
        Ok(None) => {
            st.reason = Some(format!("{why}: another deploy holds `{}`; retired at the next pass", app.environment));
        }
        Err(e) => {
            record_sync(s, app, &what, how, "failed", Some(e.message.clone())).await?;
            failed = Some(commit.to_string());
            st.reason = Some(format!("{why}: retiring `{}` failed at commit {short}: {}", app.environment, e.message));
        }
    }
    save(s, app, &st, failed.as_deref()).await?;
    Ok(st)
}

/// A sync window of an application, as shown: Argo CD's fields, and whether it is open now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WindowView {
    /// `allow` or `deny`.
    pub kind: String,
    /// When it opens (cron, in `time_zone`).
    pub schedule: String,
    /// How long it stays open, in seconds.
    pub seconds: u64,
    /// A manual sync may go through it while it denies.
    pub manual: bool,
    pub time_zone: String,
    /// Open now.
    pub active: bool,
}

fn windows_of(app: &AppRow) -> Vec<slipway_pipeline::compile::SyncWindow> {
    serde_json::from_str(&app.windows).unwrap_or_default()
}

/// Whether `w` is open at `now` (Unix ms): it fired within its duration before.
fn window_open(w: &slipway_pipeline::compile::SyncWindow, now: i64) -> bool {
    crate::schedules::When::parse(&w.schedule, &w.time_zone)
        .ok()
        .and_then(|when| when.next_after(now - w.duration_ms as i64 - 1))
        .is_some_and(|fired| fired <= now)
}

fn describe(w: &slipway_pipeline::compile::SyncWindow) -> String {
    let d = slipway_pipeline::duration::human(Duration::from_millis(w.duration_ms));
    format!("`{} {}` for {d} ({})", w.kind, w.schedule, w.time_zone)
}

/// What the application's sync windows say at `now`: why automated syncs (and self-heal)
/// wait, and why a manual sync waits — `None` when it may go. With any `allow` window,
/// automated syncs happen only inside one; an open `deny` window wins, and lets manual syncs
/// through only with `manual`.
fn window_gate(app: &AppRow, now: i64) -> (Option<String>, Option<String>) {
    let windows = windows_of(app);
    let deny: Vec<_> = windows.iter().filter(|w| w.kind == "deny" && window_open(w, now)).collect();
    let allows: Vec<_> = windows.iter().filter(|w| w.kind == "allow").collect();
    let auto = if let Some(w) = deny.first() {
        Some(format!("the sync window {} is open: automated syncs wait until it closes", describe(w)))
    } else if !allows.is_empty() && !allows.iter().any(|w| window_open(w, now)) {
        Some(format!(
            "outside its allow window(s) {}: automated syncs wait for the next one",
            allows.iter().map(|w| describe(w)).collect::<Vec<_>>().join(", ")
        ))
    } else {
        None
    };
    let manual = deny.iter().find(|w| !w.manual).map(|w| {
        format!(
            "the sync window {} is open and does not let manual syncs through (`manualSync: true` would)",
            describe(w)
        )
    });
    (auto, manual)
}

/// What a sync (or a repair) worked on: the commit and version, the release, when it began.
struct Synced<'a> {
    commit: &'a str,
    version: &'a str,
    release: Option<i64>,
    started: i64,
}

/// Records one sync of the application in its history, ending now.
async fn record_sync(
    s: &State,
    app: &AppRow,
    what: &Synced<'_>,
    trigger: &str,
    outcome: &str,
    detail: Option<String>,
) -> Result<(), crate::ServerError> {
    s.store
        .add_app_sync(&AppSync {
            id: 0,
            app: app.name.clone(),
            commit: what.commit.to_string(),
            version: what.version.to_string(),
            release: what.release,
            trigger: trigger.into(),
            outcome: outcome.into(),
            detail,
            actor: actor_of(app).name,
            started_at_ms: what.started,
            finished_at_ms: now_ms(),
        })
        .await?;
    Ok(())
}

/// Whether the application's file at commit `at` is the one read now (`blob` at `commit`).
async fn same_file(s: &State, app: &AppRow, at: Option<&str>, commit: &str, blob: &str) -> bool {
    match at {
        None => false,
        Some(at) if at == commit => true,
        Some(at) => {
            let (dir, a, at) = (mirror_of(s, app), app.clone(), at.to_string());
            let then = tokio::task::spawn_blocking(move || desired_blob(&dir, &a, &at)).await.ok().and_then(Result::ok);
            then.flatten().is_some_and(|(_, b)| b == blob)
        }
    }
}

/// Self-heal: the target put back on the current release, recorded as a sync; repairs that
/// keep failing wait longer each time (2 s, 4 s, … at most 256 s).
async fn heal_now(
    s: &Arc<State>,
    app: &AppRow,
    env: &Environment,
    commit: &str,
    version: &str,
    release: Option<i64>,
    st: &mut AppStatus,
) -> Result<(), crate::ServerError> {
    let started = now_ms();
    let r = crate::deploys::gitops_heal(s, &app.project, env, app.prune).await;
    // What drifted, then what was done about it.
    let (outcome, detail) = match &r {
        Ok(lines) if lines.is_empty() => ("unchanged", None),
        Ok(lines) if st.drift.is_empty() => ("healed", Some(lines.join("; "))),
        Ok(lines) => ("healed", Some(format!("{} → {}", st.drift.join("; "), lines.join("; ")))),
        Err(e) => ("failed", Some(e.message.clone())),
    };
    record_sync(s, app, &Synced { commit, version, release, started }, "self-heal", outcome, detail).await?;
    {
        let mut b = s.reconciler.backoff.lock().expect("backoff lock");
        match &r {
            Ok(_) => {
                b.remove(&app.name);
            }
            Err(e) => {
                let entry = b.entry(app.name.clone()).or_insert((0, 0));
                entry.0 += 1;
                entry.1 = now_ms() + (1000i64 << entry.0.min(8)).min(300_000);
                st.reason = Some(format!("self-heal failed ({} in a row): {}", entry.0, e.message));
            }
        }
    }
    if r.is_ok()
        && let Some(o) = crate::deploys::observe(s, env).await
    {
        st.health = health_of(o.status).into();
        st.drift = o.drift;
        st.reason = o.detail;
    }
    Ok(())
}

fn backoff_allows(s: &State, app: &str) -> bool {
    s.reconciler.backoff.lock().expect("backoff lock").get(app).is_none_or(|(_, next)| now_ms() >= *next)
}

async fn save(s: &State, app: &AppRow, st: &AppStatus, failed: Option<&str>) -> Result<(), crate::ServerError> {
    let json = serde_json::to_string(st).expect("a status serializes");
    s.store.set_app_status(&app.name, &json, failed).await?;
    Ok(())
}

/// The status an application last recorded.
pub fn status_of(app: &AppRow) -> AppStatus {
    serde_json::from_str(&app.status).unwrap_or_else(|_| AppStatus {
        sync: "Unknown".into(),
        health: "Unknown".into(),
        reason: Some("not looked at yet".into()),
        ..AppStatus::default()
    })
}

/// One round of the reconciler (every 0.5 s): each application whose interval came round or
/// that a webhook of its repository nudged.
pub async fn tick(s: &Arc<State>) {
    let interval = s.reconciler.interval().as_millis() as i64;
    let Ok(apps) = s.store.apps().await else { return };
    let nudged: HashSet<String> = std::mem::take(&mut *s.reconciler.nudged.lock().expect("nudge lock"));
    let now = now_ms();
    let by_interval = |a: &AppRow| a.checked_at_ms.is_none_or(|t| now - t >= interval);
    // A push makes only the applications whose file it changed look now.
    let pushed: Vec<AppRow> = apps.iter().filter(|a| nudged.contains(&a.name) && !by_interval(a)).cloned().collect();
    let changed = match s.reconciler.refresh_all {
        true => pushed.into_iter().map(|a| a.name).collect(),
        false => changed_by_push(s, pushed, now).await,
    };
    for app in &apps {
        let due = by_interval(app) || changed.contains(&app.name);
        if due && let Err(e) = reconcile_fetched(s, &app.name, Trigger::Refresh, Some(now)).await {
            tracing::warn!(app = %app.name, error = %e, "the reconciler's pass failed");
        }
    }
}

/// Of the applications a push nudged, those whose desired-state file differs from the one
/// they last read (or that have not read one): one fetch per repository, one `git ls-tree`
/// per repository and revision — Argo CD refreshes every application of the repository
/// (argo-cd #4272).
async fn changed_by_push(s: &Arc<State>, apps: Vec<AppRow>, now: i64) -> HashSet<String> {
    if apps.is_empty() {
        return HashSet::new();
    }
    let s = Arc::clone(s);
    let r = tokio::task::spawn_blocking(move || {
        let mut groups: HashMap<(String, String), Vec<AppRow>> = HashMap::new();
        for a in apps {
            groups.entry((a.repo.clone(), a.revision.clone())).or_default().push(a);
        }
        let mut out = HashSet::new();
        for ((_, revision), group) in groups {
            let dir = mirror_of(&s, &group[0]);
            let mut files: Vec<String> = group.iter().flat_map(file_of).collect();
            files.sort();
            files.dedup();
            let found = fetch(&s, &group[0], Some(now))
                .and_then(|()| slipway_git::remote::resolve(&dir, &revision).map_err(|e| e.to_string()))
                .and_then(|commit| slipway_git::remote::blobs(&dir, &commit, &files).map_err(|e| e.to_string()));
            for a in group {
                // When the repository cannot be read, the application's own pass says why.
                let unchanged = found.as_ref().is_ok_and(|found| {
                    let now = file_of(&a).iter().find_map(|f| found.get(f)).cloned();
                    now.is_some() && now == status_of(&a).blob
                });
                if !unchanged {
                    out.insert(a.name);
                }
            }
        }
        out
    })
    .await;
    r.unwrap_or_default()
}

// ----- the API (docs/gitops.md) ------------------------------------------------------------

type S = axum::extract::State<Arc<State>>;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_api::server::ApiErrorBody;

use crate::ServerError;
use crate::access::Caller;

/// An application and what the reconciler last found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AppView {
    pub name: String,
    pub project: String,
    pub repo: String,
    pub path: String,
    pub revision: String,
    pub environment: String,
    pub automated: bool,
    pub self_heal: bool,
    pub prune: bool,
    /// An automated sync (with `prune`) may retire the environment when its file is deleted.
    #[serde(default)]
    pub allow_empty: bool,
    /// When it may sync by itself (none: at any time).
    #[serde(default)]
    pub windows: Vec<WindowView>,
    pub status: AppStatus,
    /// When the reconciler last looked (RFC 3339).
    pub checked_at: Option<String>,
    /// A rollback pinned the environment to this release.
    pub pinned_release: Option<i64>,
}

/// One sync of an application.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SyncView {
    pub commit: String,
    pub version: String,
    pub release: Option<i64>,
    pub trigger: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub actor: String,
    pub started_at: String,
    pub seconds: f64,
}

fn view(a: &AppRow) -> AppView {
    AppView {
        name: a.name.clone(),
        project: a.project.clone(),
        repo: a.repo.clone(),
        path: a.path.clone(),
        revision: a.revision.clone(),
        environment: a.environment.clone(),
        automated: a.automated,
        self_heal: a.self_heal,
        prune: a.prune,
        allow_empty: a.allow_empty,
        windows: windows_of(a)
            .iter()
            .map(|w| WindowView {
                kind: w.kind.clone(),
                schedule: w.schedule.clone(),
                seconds: w.duration_ms / 1000,
                manual: w.manual,
                time_zone: w.time_zone.clone(),
                active: window_open(w, now_ms()),
            })
            .collect(),
        status: status_of(a),
        checked_at: a.checked_at_ms.map(slipway_model::time::rfc3339),
        pinned_release: a.pinned,
    }
}

fn may(s: &State, who: &Caller, verb: &str, app: &AppRow) -> Result<(), ServerError> {
    let need = slipway_model::access::Permission::need(verb, &format!("environments/{}", app.environment));
    if who.may(&s.access(), &need, Some(&app.project)) {
        return Ok(());
    }
    // Those who hold nothing on the project do not learn the application exists.
    let read = slipway_model::access::Permission::need("read", &format!("environments/{}", app.environment));
    if !who.may(&s.access(), &read, Some(&app.project)) {
        return Err(ServerError::NotFound(format!("application `{}`", app.name)));
    }
    Err(ServerError::Forbidden(format!("`{}` lacks `{need}` on project {}", who.actor(), app.project)))
}

async fn find(s: &State, who: &Caller, name: &str, verb: &str) -> Result<AppRow, ServerError> {
    let app = s.store.app(name).await?.ok_or_else(|| ServerError::NotFound(format!("application `{name}`")))?;
    may(s, who, verb, &app)?;
    Ok(app)
}

#[utoipa::path(get, path = "/api/v1/apps", tag = "gitops", summary = "GitOps applications and their status", responses((status = 200, body = [AppView]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn list(axum::extract::State(s): S, who: Caller) -> Result<Response, ServerError> {
    let apps: Vec<AppView> =
        s.store.apps().await?.iter().filter(|a| may(&s, &who, "read", a).is_ok()).map(view).collect();
    Ok(axum::Json(apps).into_response())
}

/// `POST /api/v1/apps`: an application as YAML or JSON — slipway's shape or the brief's Argo
/// CD `Application` — added, or its definition replaced; looked at once before the answer.
#[utoipa::path(post, path = "/api/v1/apps", tag = "gitops", summary = "Add (or redefine) a GitOps application", request_body(content = String, content_type = "application/yaml", description = "The application (slipway's shape or an Argo CD Application manifest)"), responses((status = 201, body = AppView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn add(axum::extract::State(s): S, who: Caller, body: axum::body::Bytes) -> Result<Response, ServerError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ServerError::Input("the application is not UTF-8 text".into(), Some("body".into())))?;
    let mut sources = slipway_pipeline::SourceMap::default();
    let app = slipway_pipeline::load_application(std::path::Path::new("application"), text, &mut sources).map_err(
        |diags| {
            let lines: Vec<String> = diags
                .iter()
                .filter(|d| d.severity == slipway_pipeline::Severity::Error)
                .map(|d| {
                    let hint = d.hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default();
                    format!("{}: {}{hint}", sources.location(d.span), d.message)
                })
                .collect();
            ServerError::Input(
                format!("the application has {} error(s):\n{}", lines.len(), lines.join("\n")),
                Some("body".into()),
            )
        },
    )?;
    for (i, w) in app.windows.iter().enumerate() {
        crate::schedules::When::parse(&w.schedule, &w.time_zone).map_err(|e| match e {
            ServerError::Input(m, _) => ServerError::Input(m, Some(format!("sync_policy.windows[{i}].timeZone"))),
            e => e,
        })?;
    }
    s.store.project(&app.project).await?.ok_or_else(|| {
        ServerError::Input(
            format!("the application's project `{}` is not on this server", app.project),
            Some("project".into()),
        )
    })?;
    let row = AppRow {
        name: app.name.clone(),
        project: app.project,
        repo: app.repo,
        path: app.path,
        revision: app.revision,
        environment: app.environment,
        automated: app.automated,
        self_heal: app.self_heal,
        prune: app.prune,
        allow_empty: app.allow_empty,
        windows: serde_json::to_string(&app.windows).expect("windows serialize"),
        created_by: who.actor(),
        created_at_ms: now_ms(),
        status: String::new(),
        pinned: None,
        pinned_commit: None,
        failed_commit: None,
        checked_at_ms: None,
    };
    may(&s, &who, "deploy", &row)?;
    if let Err(other) = s.store.put_app(&row).await? {
        return Err(ServerError::Conflict(format!(
            "environment `{}` is already kept by application `{other}`: one application per environment",
            row.environment
        )));
    }
    reconcile(&s, &row.name, Trigger::Refresh).await?;
    let app = s.store.app(&row.name).await?.ok_or_else(|| ServerError::NotFound(row.name.clone()))?;
    Ok((StatusCode::CREATED, axum::Json(view(&app))).into_response())
}

#[utoipa::path(get, path = "/api/v1/apps/{name}", tag = "gitops", summary = "An application and its status", params(("name" = String, Path, description = "The application")), responses((status = 200, body = AppView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn show(
    axum::extract::State(s): S,
    who: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ServerError> {
    Ok(axum::Json(view(&find(&s, &who, &name, "read").await?)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/apps/{name}", tag = "gitops", summary = "Forget an application (what runs stays)", params(("name" = String, Path, description = "The application")), responses((status = 204, description = "Forgotten"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn delete(
    axum::extract::State(s): S,
    who: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ServerError> {
    find(&s, &who, &name, "deploy").await?;
    s.store.delete_app(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/apps/{name}/sync`: fetches, compares and syncs now (a commit whose sync
/// failed too); answers with the status after.
#[utoipa::path(post, path = "/api/v1/apps/{name}/sync", tag = "gitops", summary = "Sync an application now", params(("name" = String, Path, description = "The application")), responses((status = 200, body = AppView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn sync(
    axum::extract::State(s): S,
    who: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ServerError> {
    let app = find(&s, &who, &name, "deploy").await?;
    if let (_, Some(why)) = window_gate(&app, now_ms()) {
        return Err(ServerError::Conflict(format!("`{name}` is not synced now: {why}")));
    }
    reconcile(&s, &name, Trigger::Manual).await?;
    Ok(axum::Json(view(&find(&s, &who, &name, "read").await?)).into_response())
}

/// `POST /api/v1/apps/{name}/refresh`: fetches and compares now; changes nothing.
#[utoipa::path(post, path = "/api/v1/apps/{name}/refresh", tag = "gitops", summary = "Compare an application with its desired state now (changes nothing)", params(("name" = String, Path, description = "The application")), responses((status = 200, body = AppView), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn refresh(
    axum::extract::State(s): S,
    who: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ServerError> {
    find(&s, &who, &name, "read").await?;
    reconcile(&s, &name, Trigger::Look).await?;
    Ok(axum::Json(view(&find(&s, &who, &name, "read").await?)).into_response())
}

#[utoipa::path(get, path = "/api/v1/apps/{name}/history", tag = "gitops", summary = "An application's syncs, newest first", params(("name" = String, Path, description = "The application")), responses((status = 200, body = [SyncView]), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody), (status = 503, description = "The store does not answer", body = ApiErrorBody)))]
pub async fn history(
    axum::extract::State(s): S,
    who: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ServerError> {
    find(&s, &who, &name, "read").await?;
    let list: Vec<SyncView> = s
        .store
        .app_syncs(&name, 200)
        .await?
        .into_iter()
        .map(|x| SyncView {
            commit: x.commit,
            version: x.version,
            release: x.release,
            trigger: x.trigger,
            outcome: x.outcome,
            detail: x.detail,
            actor: x.actor,
            started_at: slipway_model::time::rfc3339(x.started_at_ms),
            seconds: (x.finished_at_ms - x.started_at_ms) as f64 / 1000.0,
        })
        .collect();
    Ok(axum::Json(list).into_response())
}
