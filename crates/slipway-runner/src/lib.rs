//! slipway's runner: the pipeline state machine ([`scheduler`]), the shell executor
//! ([`exec`]), process groups ([`process`]), the secret masker ([`mask`]), workspaces,
//! artifacts and caches. [`run`] drives a planned pipeline to its end and reports every step
//! to a [`Reporter`]. It knows nothing about HTTP or SQL.

pub mod exec;
pub mod files;
pub mod mask;
pub mod process;
pub mod scheduler;
pub mod workspace;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use slipway_pipeline::plan::Plan;

pub use process::Cancel;
pub use scheduler::{JobStatus, Outcome};

use exec::JobEnd;
use scheduler::{Action, Scheduler};
use workspace::Snapshot;

/// Everything a run needs besides the plan.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub project_dir: PathBuf,
    /// `.slipway/runs/<id>`: logs, artifacts, scripts, workspaces of this run.
    pub run_dir: PathBuf,
    /// `.slipway/cache`: caches shared between runs.
    pub cache_dir: PathBuf,
    /// `.slipway/work`: one workspace per job, kept and synced between runs.
    pub work_dir: PathBuf,
    pub concurrency: usize,
    /// Run in the project directory itself instead of private workspaces.
    pub in_place: bool,
    /// Manual jobs to start (by instance or job name).
    pub manual: Vec<String>,
    /// Values to mask in all output.
    pub secrets: Vec<String>,
    /// Names of variables given on the command line (they win over dotenv reports).
    pub overrides: HashSet<String>,
    /// SIGTERM → SIGKILL grace period.
    pub grace: Duration,
    pub default_timeout: Duration,
    pub after_script_timeout: Duration,
    pub shell: PathBuf,
    pub copy_threads: usize,
    /// Directories put in front of the jobs' `PATH` (slipway puts its own, so jobs can call it).
    pub path_prepend: Vec<PathBuf>,
    /// Variables every job gets on top of its own (`SLIPWAY_STATE_DIR`).
    pub extra_env: Vec<(String, String)>,
    /// The project's file list, when the caller already took it (saves a `git ls-files`).
    pub snapshot: Option<Snapshot>,
}

impl RunConfig {
    /// A run of `project_dir` recorded in `run_dir`, with caches and workspaces under
    /// `state_dir` (`.slipway`).
    pub fn new(project_dir: PathBuf, run_dir: PathBuf, state_dir: &std::path::Path) -> RunConfig {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        RunConfig {
            project_dir,
            run_dir,
            cache_dir: state_dir.join("cache"),
            work_dir: state_dir.join("work"),
            concurrency: cpus,
            in_place: false,
            manual: Vec::new(),
            secrets: Vec::new(),
            overrides: HashSet::new(),
            grace: Duration::from_secs(5),
            default_timeout: Duration::from_secs(3600),
            after_script_timeout: Duration::from_secs(300),
            shell: PathBuf::from("bash"),
            copy_threads: cpus,
            path_prepend: Vec::new(),
            extra_env: Vec::new(),
            snapshot: None,
        }
    }
}

/// One job's final record.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub duration: Duration,
    pub reason: Option<String>,
    pub coverage: Option<f64>,
    pub attempts: u32,
    pub log: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineStatus {
    Success,
    Failed,
    Canceled,
}

impl PipelineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub status: PipelineStatus,
    pub jobs: Vec<JobResult>,
    pub duration: Duration,
}

/// What happens during a run, in order, from one thread.
pub enum Event<'a> {
    JobStarted {
        job: usize,
        name: &'a str,
        attempt: u32,
    },
    Output {
        job: usize,
        data: &'a [u8],
    },
    /// A line from slipway about a job (workspace, artifacts, cache, retries), already masked.
    Notice {
        job: usize,
        line: &'a str,
    },
    /// Nothing happened for a while (about every 100 ms while jobs run): time to refresh
    /// a status line.
    Tick,
    JobFinished {
        job: usize,
        result: &'a JobResult,
    },
}

pub trait Reporter {
    fn event(&mut self, ev: Event<'_>);
}

pub(crate) enum Msg {
    Started(usize, u32),
    Output(usize, Vec<u8>),
    Notice(usize, String),
    Done(usize, JobEnd),
}

pub(crate) struct Shared {
    pub config: RunConfig,
    pub snapshot: Snapshot,
    /// The snapshot's files as a set (artifacts and caches use it for `untracked`).
    pub known: HashSet<PathBuf>,
    pub cancel: Cancel,
    /// Workspaces being removed in the background; joined before the run returns.
    pub cleanup: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Runs the plan to its end. `cancel` stops it: level 1 sends SIGTERM to every running job
/// (SIGKILL after the grace period), level 2 kills at once.
pub fn run(plan: &Plan, config: RunConfig, cancel: Cancel, reporter: &mut dyn Reporter) -> std::io::Result<RunResult> {
    let started = Instant::now();
    for d in ["logs", "artifacts"] {
        std::fs::create_dir_all(config.run_dir.join(d))?;
    }
    let mut config = config;
    let snapshot = match config.snapshot.take() {
        Some(s) => s,
        None => exec::snapshot_for(&config)?,
    };
    let known = snapshot.files.iter().cloned().collect();
    let shared = Arc::new(Shared { config, snapshot, known, cancel: cancel.clone(), cleanup: Default::default() });
    let cfg = &shared.config;
    let mut sched = Scheduler::new(plan, cfg.concurrency, &cfg.manual);
    let n = plan.jobs.len();
    let mut results: Vec<Option<JobResult>> = vec![None; n];
    let mut start_times: Vec<Option<Instant>> = vec![None; n];
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut threads = Vec::new();
    let mut wake: Option<Instant> = None;

    loop {
        if cancel.level() > 0 && !sched.is_canceled() {
            sched.cancel();
        }
        for action in sched.step(Instant::now()) {
            match action {
                Action::Start(i) => {
                    start_times[i] = Some(Instant::now());
                    reporter.event(Event::JobStarted { job: i, name: &plan.jobs[i].name, attempt: 1 });
                    let job = plan.jobs[i].clone();
                    let shared = Arc::clone(&shared);
                    let tx = tx.clone();
                    threads.push(std::thread::Builder::new().name(format!("job-{i}")).spawn(move || {
                        let end = exec::execute(i, &job, &shared, &tx);
                        let _ = tx.send(Msg::Done(i, end));
                    })?);
                }
                Action::Skip(_, _) => {}
                Action::WakeAt(t) => wake = Some(t),
            }
        }
        // Report jobs that reached a final state without running.
        for i in 0..n {
            let st = sched.status(i);
            if results[i].is_none() && start_times[i].is_none() && st.is_terminal() {
                let r = JobResult {
                    name: plan.jobs[i].name.clone(),
                    stage: plan.jobs[i].stage.clone(),
                    status: st,
                    exit_code: None,
                    duration: Duration::ZERO,
                    reason: None,
                    coverage: None,
                    attempts: 0,
                    log: None,
                };
                reporter.event(Event::JobFinished { job: i, result: &r });
                results[i] = Some(r);
            }
        }
        if sched.done() {
            break;
        }
        let timeout = match wake {
            Some(w) => w.saturating_duration_since(Instant::now()).min(Duration::from_millis(100)),
            None => Duration::from_millis(100),
        };
        let first = match rx.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                reporter.event(Event::Tick);
                None
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
        };
        let mut pending: Vec<Msg> = first.into_iter().collect();
        while let Ok(m) = rx.try_recv() {
            pending.push(m);
        }
        for m in pending {
            match m {
                Msg::Started(i, attempt) => {
                    reporter.event(Event::JobStarted { job: i, name: &plan.jobs[i].name, attempt })
                }
                Msg::Output(i, data) => reporter.event(Event::Output { job: i, data: &data }),
                Msg::Notice(i, line) => reporter.event(Event::Notice { job: i, line: &line }),
                Msg::Done(i, end) => {
                    let outcome = if end.success {
                        Outcome::Success
                    } else if end.canceled {
                        Outcome::Canceled
                    } else {
                        Outcome::Failed { exit_code: end.exit_code }
                    };
                    sched.finished(i, outcome);
                    let slug = exec::slug(&plan.jobs[i].name);
                    let r = JobResult {
                        name: plan.jobs[i].name.clone(),
                        stage: plan.jobs[i].stage.clone(),
                        status: sched.status(i),
                        exit_code: end.exit_code,
                        duration: start_times[i].map(|t| t.elapsed()).unwrap_or_default(),
                        reason: end.reason,
                        coverage: end.coverage,
                        attempts: end.attempts,
                        log: Some(cfg.run_dir.join("logs").join(format!("{slug}.log"))),
                    };
                    reporter.event(Event::JobFinished { job: i, result: &r });
                    results[i] = Some(r);
                }
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let cleanup = std::mem::take(&mut *shared.cleanup.lock().unwrap_or_else(|e| e.into_inner()));
    for t in cleanup {
        let _ = t.join();
    }
    let _ = std::fs::remove_dir(cfg.run_dir.join("ws"));
    let jobs: Vec<JobResult> = results.into_iter().map(|r| r.expect("every job reported")).collect();
    let status = if sched.is_canceled() {
        PipelineStatus::Canceled
    } else if jobs.iter().any(|j| j.status == JobStatus::Failed) {
        PipelineStatus::Failed
    } else {
        PipelineStatus::Success
    };
    Ok(RunResult { status, jobs, duration: started.elapsed() })
}
