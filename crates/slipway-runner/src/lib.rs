//! slipway's runner: the pipeline state machine ([`scheduler`]), the [`Executor`] seam with
//! the shell executor behind it ([`exec`]), the secret masker ([`mask`]), workspaces,
//! artifacts and caches, how a project is loaded and planned ([`project`]) and where local
//! runs are recorded ([`record`]). [`run`] drives a planned pipeline to its end and sends every
//! step, as an owned [`RunEvent`], to a [`Sink`] it owns. It knows nothing about HTTP or SQL.

pub mod child;
pub mod docker;
pub mod exec;
pub mod fetch;
pub mod files;
pub mod mask;
pub mod process;
pub mod project;
pub mod record;
pub mod request;
pub mod scheduler;
pub mod services;
pub mod workspace;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use slipway_model::event::{RunEvent, Stamped};
use slipway_model::run::{JobRecord, JobState, PipelineStatus, RunRecord};
use slipway_model::time::now_ms;
use slipway_pipeline::plan::{Plan, PlannedJob};

pub use process::Cancel;
pub use scheduler::Outcome;

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
    /// Where caches are shared beyond this machine (a server's agents share them through the
    /// server); `None`: the local cache directory only.
    pub cache_sync: Option<Arc<dyn CacheSync>>,
    /// Jobs with `image:` run in a container of it (GitLab's Docker executor); false: every
    /// job on the shell executor (`--executor shell`).
    pub containers: bool,
    /// Registry credentials for the images the Docker executor pulls, after a job's
    /// `DOCKER_AUTH_CONFIG` (slipway's binary gives those of `slipway image push`).
    pub registry_auth: Option<Arc<dyn RegistryAuth>>,
    /// How deep in child pipelines this run is (0: a pipeline of its own).
    pub depth: u32,
    /// A child pipeline's parent run (`runs/<id>`), whose artifacts `needs:pipeline` takes.
    pub parent_run_dir: Option<PathBuf>,
}

/// Where the Docker executor finds a registry's credentials when the job has none.
pub trait RegistryAuth: Send + Sync + std::fmt::Debug {
    /// `(username, password)` for `host` (`docker.io` for Docker Hub), or none: anonymous.
    fn credentials(&self, host: &str) -> Result<Option<(String, String)>, String>;
}

/// Caches kept somewhere besides the local cache directory. The runner asks for a key it
/// does not have before restoring, and hands over what it saved.
pub trait CacheSync: Send + Sync + std::fmt::Debug {
    /// Fills `dest` (a directory that does not exist yet) with the cache `key`; false when
    /// there is none.
    fn fetch(&self, key: &str, dest: &std::path::Path) -> Result<bool, String>;
    /// Keeps the cache `key` that was just saved in `src`.
    fn push(&self, key: &str, src: &std::path::Path) -> Result<(), String>;
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
            cache_sync: None,
            containers: true,
            registry_auth: None,
            depth: 0,
            parent_run_dir: None,
        }
    }
}

/// One job's final record.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub name: String,
    pub stage: String,
    pub status: JobState,
    pub exit_code: Option<i32>,
    pub duration: Duration,
    pub reason: Option<String>,
    pub coverage: Option<f64>,
    pub attempts: u32,
    pub log: Option<PathBuf>,
    /// A trigger job's child pipeline.
    pub child: Option<Box<slipway_model::run::RunRecord>>,
}

impl JobResult {
    pub fn record(&self) -> JobRecord {
        JobRecord {
            name: self.name.clone(),
            stage: self.stage.clone(),
            status: self.status,
            exit_code: self.exit_code,
            duration_ms: self.duration.as_millis() as u64,
            reason: self.reason.clone(),
            coverage: self.coverage,
            attempts: self.attempts,
            child: self.child.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub status: PipelineStatus,
    pub jobs: Vec<JobResult>,
    pub duration: Duration,
}

impl RunResult {
    pub fn record(&self, run_id: u64) -> RunRecord {
        RunRecord {
            run_id,
            status: self.status,
            duration_ms: self.duration.as_millis() as u64,
            jobs: self.jobs.iter().map(JobResult::record).collect(),
        }
    }
}

/// Receives a run's events, in order, from the run's loop (one thread).
pub trait Sink: Send {
    fn event(&mut self, event: Stamped<RunEvent>);
    /// Nothing happened for a while (about every 100 ms while jobs run): time to refresh a
    /// status line.
    fn tick(&mut self) {}
}

/// Where a job's output goes while it runs: to the run's loop, which masks nothing (the
/// executor already did), splits lines and hands them to the sink.
pub struct JobOutput {
    idx: usize,
    tx: mpsc::Sender<Msg>,
}

impl JobOutput {
    /// A chunk of the job's output (already masked).
    pub fn output(&self, data: Vec<u8>) {
        let _ = self.tx.send(Msg::Output(self.idx, data));
    }

    /// A line from slipway about the job (already masked).
    pub fn notice(&self, line: String) {
        let _ = self.tx.send(Msg::Notice(self.idx, line));
    }

    /// An attempt of the job started (retries start more than one).
    pub fn attempt(&self, attempt: u32) {
        let _ = self.tx.send(Msg::Started(self.idx, attempt));
    }
}

/// Runs jobs: the shell executor today ([`exec::Shell`]); the Docker executor sits behind the
/// same trait.
pub trait Executor: Send + Sync {
    /// Runs job `index` of the plan to its end, reporting through `out`.
    fn execute(&self, index: usize, job: &PlannedJob, out: &JobOutput) -> JobEnd;
    /// Called once after the last job, before the run returns (joins background cleanups).
    fn finish(&self) {}
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

/// Runs the plan to its end on the shell executor. `cancel` stops it: level 1 sends SIGTERM
/// to every running job (SIGKILL after the grace period), level 2 kills at once.
pub fn run<S: Sink>(plan: &Plan, config: RunConfig, cancel: Cancel, sink: S) -> std::io::Result<(RunResult, S)> {
    for d in ["logs", "artifacts"] {
        std::fs::create_dir_all(config.run_dir.join(d))?;
    }
    let mut config = config;
    let snapshot = match config.snapshot.take() {
        Some(s) => s,
        None => exec::snapshot_for(&config)?,
    };
    let known = snapshot.files.iter().cloned().collect();
    let drive =
        Drive { concurrency: config.concurrency, manual: config.manual.clone(), logs: config.run_dir.join("logs") };
    let shared = Arc::new(Shared { config, snapshot, known, cancel: cancel.clone(), cleanup: Default::default() });
    let shell = exec::Shell { shared };
    let r = run_on(plan, &shell, &drive, &cancel, sink);
    let _ = std::fs::remove_dir(drive.logs.parent().unwrap_or(&drive.logs).join("ws"));
    r
}

/// What one job reports while it runs on its own.
#[derive(Debug)]
pub enum JobMessage {
    /// A chunk of its output, already masked.
    Output(Vec<u8>),
    /// A line from slipway about it, already masked.
    Notice(String),
    /// An attempt started (`retry:` starts more than one).
    Attempt(u32),
}

/// Runs job `index` of the plan alone on the shell executor — the job an agent took from a
/// server — calling `report` with what it prints as it comes; returns how it ended.
pub fn run_job(
    plan: &Plan,
    index: usize,
    config: RunConfig,
    cancel: Cancel,
    mut report: impl FnMut(JobMessage),
) -> std::io::Result<JobEnd> {
    for d in ["logs", "artifacts"] {
        std::fs::create_dir_all(config.run_dir.join(d))?;
    }
    let mut config = config;
    let snapshot = match config.snapshot.take() {
        Some(s) => s,
        None => exec::snapshot_for(&config)?,
    };
    let known = snapshot.files.iter().cloned().collect();
    let shared = Arc::new(Shared { config, snapshot, known, cancel, cleanup: Default::default() });
    let shell = exec::Shell { shared };
    let job = plan.jobs.get(index).ok_or_else(|| std::io::Error::other(format!("the plan has no job {index}")))?;
    let (tx, rx) = mpsc::channel::<Msg>();
    let end = std::thread::scope(|scope| {
        let out = JobOutput { idx: index, tx };
        let shell = &shell;
        let running = scope.spawn(move || shell.execute(index, job, &out));
        for m in rx {
            match m {
                Msg::Output(_, d) => report(JobMessage::Output(d)),
                Msg::Notice(_, l) => report(JobMessage::Notice(l)),
                Msg::Started(_, a) => report(JobMessage::Attempt(a)),
                Msg::Done(..) => {}
            }
        }
        running.join().map_err(|_| std::io::Error::other("the job's thread panicked"))
    })?;
    shell.finish();
    Ok(end)
}

/// How the loop drives an executor.
pub struct Drive {
    pub concurrency: usize,
    /// Manual jobs to start with the run (by instance or job name).
    pub manual: Vec<String>,
    /// Where the executor writes each job's log (`<slug>.log`), for the record.
    pub logs: PathBuf,
}

/// Runs the plan to its end on `executor`: the one event loop that owns the scheduler,
/// starts a thread per job and turns what the jobs report into events for `sink`.
pub fn run_on<S: Sink>(
    plan: &Plan,
    executor: &dyn Executor,
    drive: &Drive,
    cancel: &Cancel,
    mut sink: S,
) -> std::io::Result<(RunResult, S)> {
    let started = Instant::now();
    let mut sched = Scheduler::new(plan, drive.concurrency, &drive.manual);
    let n = plan.jobs.len();
    let mut results: Vec<Option<JobResult>> = vec![None; n];
    let mut start_times: Vec<Option<Instant>> = vec![None; n];
    let mut partial: HashMap<usize, Vec<u8>> = HashMap::new();
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut wake: Option<i64> = None;
    let emit = |sink: &mut S, e: RunEvent| sink.event(Stamped::now(e));
    let name = |i: usize| plan.jobs[i].name.clone();
    std::thread::scope(|scope| -> std::io::Result<()> {
        loop {
            if cancel.level() > 0 && !sched.is_canceled() {
                sched.cancel();
            }
            for action in sched.step(now_ms()) {
                match action {
                    Action::Start(i) => {
                        start_times[i] = Some(Instant::now());
                        emit(&mut sink, RunEvent::JobStarted { job: name(i), attempt: 1 });
                        let job = &plan.jobs[i];
                        let out = JobOutput { idx: i, tx: tx.clone() };
                        std::thread::Builder::new().name(format!("job-{i}")).spawn_scoped(scope, move || {
                            let end = executor.execute(i, job, &out);
                            let _ = out.tx.send(Msg::Done(i, end));
                        })?;
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
                        name: name(i),
                        stage: plan.jobs[i].stage.clone(),
                        status: st,
                        exit_code: None,
                        duration: Duration::ZERO,
                        reason: None,
                        coverage: None,
                        attempts: 0,
                        log: None,
                        child: None,
                    };
                    emit(&mut sink, RunEvent::job_finished(&r.record()));
                    results[i] = Some(r);
                }
            }
            if sched.done() {
                break;
            }
            let timeout = match wake {
                Some(w) => Duration::from_millis((w - now_ms()).clamp(0, 100) as u64),
                None => Duration::from_millis(100),
            };
            let first = match rx.recv_timeout(timeout) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    sink.tick();
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
                    Msg::Started(i, attempt) => emit(&mut sink, RunEvent::JobStarted { job: name(i), attempt }),
                    Msg::Output(i, data) => {
                        let buf = partial.entry(i).or_default();
                        buf.extend_from_slice(&data);
                        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=pos).collect();
                            let text =
                                String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r').to_string();
                            emit(&mut sink, RunEvent::JobLog { job: name(i), line: text });
                        }
                    }
                    Msg::Notice(i, line) => {
                        flush(&mut sink, &mut partial, i, &name(i));
                        emit(&mut sink, RunEvent::JobNotice { job: name(i), message: line });
                    }
                    Msg::Done(i, end) => {
                        flush(&mut sink, &mut partial, i, &name(i));
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
                            name: name(i),
                            stage: plan.jobs[i].stage.clone(),
                            status: sched.status(i),
                            exit_code: end.exit_code,
                            duration: start_times[i].map(|t| t.elapsed()).unwrap_or_default(),
                            reason: end.reason,
                            coverage: end.coverage,
                            attempts: end.attempts,
                            log: Some(drive.logs.join(format!("{slug}.log"))),
                            child: end.child,
                        };
                        emit(&mut sink, RunEvent::job_finished(&r.record()));
                        results[i] = Some(r);
                    }
                }
            }
        }
        Ok(())
    })?;
    executor.finish();
    let jobs: Vec<JobResult> = results.into_iter().map(|r| r.expect("every job reported")).collect();
    let status = PipelineStatus::of(sched.is_canceled(), jobs.iter().map(|j| j.status));
    Ok((RunResult { status, jobs, duration: started.elapsed() }, sink))
}

/// Emits what is left of a job's last line when it has no newline.
fn flush<S: Sink>(sink: &mut S, partial: &mut HashMap<usize, Vec<u8>>, i: usize, job: &str) {
    if let Some(rest) = partial.remove(&i)
        && !rest.is_empty()
    {
        let line = String::from_utf8_lossy(&rest).into_owned();
        sink.event(Stamped::now(RunEvent::JobLog { job: job.to_string(), line }));
    }
}
