//! Running one job on the shell executor: workspace, artifacts and cache in, `before_script`
//! and `script` in one bash with GitLab's semantics (each command echoed, stop at the first
//! failure), `after_script` in a fresh bash with its own timeout, retries, then artifacts,
//! dotenv and cache out. All output goes through the masker before the log and the screen.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slipway_pipeline::model::{ArtifactsWhen, CachePolicy};
use slipway_pipeline::plan::PlannedJob;

use crate::files;
use crate::mask::Masker;
use crate::process::{self, Cancel, Exit};
use crate::workspace::{self, Snapshot, remove_tree};
use crate::{Executor, JobOutput, RunConfig, Shared};

/// The end of a job as the executor saw it.
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub success: bool,
    pub canceled: bool,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub coverage: Option<f64>,
    pub attempts: u32,
    /// A trigger job's child pipeline, as it ended.
    pub child: Option<Box<slipway_model::run::RunRecord>>,
}

/// The longest slug; longer names are cut and get a digest of the whole name, so that every
/// file named after a job (`<slug>.log`, `<slug>.after.sh`, …) fits the 255 bytes a file
/// name may have, for GitLab's longest job names (255 characters) too.
const MAX_SLUG: usize = 160;

/// A file-system-safe name for a job instance (`build: [linux, amd64]` → `build-linux-amd64`).
pub fn slug(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        return "job".into();
    }
    if s.len() <= MAX_SLUG {
        return s;
    }
    use sha2::Digest;
    let digest = format!("{:x}", sha2::Sha256::digest(name.as_bytes()));
    format!("{}-{}", s[..MAX_SLUG - 13].trim_end_matches('-'), &digest[..12])
}

struct Out<'a> {
    out: &'a JobOutput,
    masker: Masker,
    log: std::fs::File,
}

impl Out<'_> {
    fn bytes(&mut self, b: &[u8]) {
        let safe = self.masker.push(b);
        self.emit(safe);
    }
    fn flush(&mut self) {
        let rest = self.masker.finish();
        self.emit(rest);
    }
    fn emit(&mut self, b: Vec<u8>) {
        if b.is_empty() {
            return;
        }
        let _ = self.log.write_all(&b);
        self.out.output(b);
    }
    /// A line from slipway itself (section headers, notices), masked like everything else.
    fn notice(&mut self, line: &str) {
        self.flush();
        let masked = self.masker.mask_str(line);
        let _ = writeln!(self.log, "{masked}");
        self.out.notice(masked);
    }
}

/// Builds the bash script GitLab Runner would: errexit + pipefail, every command echoed
/// as `$ command` before it runs.
pub fn build_script(lines: &[String]) -> String {
    let mut s = String::from("set -eo pipefail\nset +o noclobber\n");
    for line in lines {
        let mut shown = line.lines().next().unwrap_or("").to_string();
        if line.trim_end().contains('\n') {
            shown.push_str(" # collapsed multi-line command");
        }
        s.push_str("printf '%s\\n' ");
        s.push_str(&shell_quote(&format!("$ {shown}")));
        s.push('\n');
        s.push_str(line);
        if !line.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The shell executor: each job in its own workspace, run by bash on this machine.
pub struct Shell {
    pub(crate) shared: Arc<Shared>,
}

impl Executor for Shell {
    fn execute(&self, _index: usize, job: &PlannedJob, out: &JobOutput) -> JobEnd {
        execute(job, &self.shared, out)
    }

    fn finish(&self) {
        let cleanup = std::mem::take(&mut *self.shared.cleanup.lock().unwrap_or_else(|e| e.into_inner()));
        for t in cleanup {
            let _ = t.join();
        }
    }
}

fn execute(job: &PlannedJob, shared: &Arc<Shared>, job_out: &JobOutput) -> JobEnd {
    let cfg: &RunConfig = &shared.config;
    let slug = slug(&job.name);
    let log_path = cfg.run_dir.join("logs").join(format!("{slug}.log"));
    let log = match std::fs::OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(f) => f,
        Err(e) => {
            return system_failure(format!("cannot open the job log {}: {e}", log_path.display()));
        }
    };
    let mut out =
        Out { out: job_out, masker: Masker::new(&cfg.secrets.iter().chain(&job.masked).collect::<Vec<_>>()), log };
    let cancel = &shared.cancel;
    if let Some(trigger) = &job.trigger {
        return crate::child::run(job, trigger, shared, &mut |line| out.notice(line));
    }

    // 1. Workspace: the job's own, kept between runs and synced; a temporary one when
    // another run is using it.
    let mut temporary = false;
    let mut _lock = None;
    let ws = if cfg.in_place {
        cfg.project_dir.clone()
    } else {
        let own = cfg.work_dir.join(&slug);
        match workspace::lock(&own) {
            Ok(Some(l)) => {
                _lock = Some(l);
                own
            }
            _ => {
                temporary = true;
                cfg.run_dir.join("ws").join(&slug)
            }
        }
    };
    if !cfg.in_place {
        let t = Instant::now();
        match shared.snapshot.sync_into(&ws, cfg.copy_threads) {
            Ok(st) => out.notice(&format!(
                "Preparing workspace: {} file{} ({} copied, {} removed) in {:.1?}",
                shared.snapshot.files.len(),
                if shared.snapshot.files.len() == 1 { "" } else { "s" },
                st.copied,
                st.removed,
                t.elapsed()
            )),
            Err(e) => {
                out.notice(&format!("ERROR: preparing the workspace failed: {e}"));
                return system_failure(format!("workspace: {e}"));
            }
        }
    }
    let known = &shared.known;

    // 2. Artifacts and dotenv variables of the jobs this one depends on.
    let mut dotenv: Vec<(String, String)> = Vec::new();
    for dep in &job.artifacts_from {
        match restore_from(&cfg.run_dir, dep, &ws, &mut dotenv) {
            Ok(0) => {}
            Ok(n) => out.notice(&format!("Downloading artifacts of {dep}: {n} files")),
            Err(e) => out.notice(&format!("WARNING: restoring artifacts of {dep} failed: {e}")),
        }
    }

    // The parent pipeline's artifacts (`needs:pipeline` + `job` in a child pipeline).
    for dep in &job.parent_artifacts {
        let Some(parent) = &cfg.parent_run_dir else {
            out.notice(&format!(
                "WARNING: `needs:pipeline` asks for the artifacts of `{dep}` of another pipeline, and this pipeline has no parent; a child pipeline (`trigger:include`) has its parent's"
            ));
            continue;
        };
        match restore_from(parent, dep, &ws, &mut dotenv) {
            Ok(0) => out.notice(&format!("WARNING: the parent pipeline's `{dep}` left no artifacts")),
            Ok(n) => out.notice(&format!("Downloading artifacts of {dep} (parent pipeline): {n} files")),
            Err(e) => out.notice(&format!("WARNING: restoring artifacts of {dep} of the parent pipeline failed: {e}")),
        }
    }

    // 3. Caches.
    let mut cache_keys = Vec::new();
    for c in &job.cache {
        let key = files::cache_key(c, &ws, &job.masked);
        if c.policy != CachePolicy::Push {
            let mut keys = vec![key.clone()];
            keys.extend(c.fallback_keys.iter().map(|k| files::key_name(k, &job.masked)));
            // Not here: the first of the keys the shared caches have comes down.
            if let Some(sync) = &cfg.cache_sync
                && !keys.iter().any(|k| cfg.cache_dir.join(files::sanitize_key(k)).is_dir())
            {
                for k in &keys {
                    let dest = cfg.cache_dir.join(files::sanitize_key(k));
                    match sync.fetch(k, &dest) {
                        Ok(true) => {
                            out.notice(&format!("Downloading cache `{k}` from the server"));
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            out.notice(&format!("WARNING: downloading cache `{k}` failed: {e}"));
                            let _ = std::fs::remove_dir_all(&dest);
                        }
                    }
                }
            }
            match files::restore_cache(&cfg.cache_dir, &keys, &ws) {
                Ok(Some(k)) => out.notice(&format!("Restoring cache `{k}`")),
                Ok(None) => out.notice(&format!("No cache for key `{key}`")),
                Err(e) => out.notice(&format!("WARNING: restoring cache `{key}` failed: {e}")),
            }
        }
        cache_keys.push(key);
    }

    // 4. Environment: the user's environment, then the job's variables (dotenv from
    // dependencies above yaml variables, command-line overrides above all).
    let mut env: Vec<(String, String)> = job.variables.clone();
    for (k, v) in &dotenv {
        if !cfg.overrides.contains(k) {
            env.push((k.clone(), v.clone()));
        }
    }
    env.push(("CI_PROJECT_DIR".into(), ws.display().to_string()));
    env.push(("CI_BUILDS_DIR".into(), ws.parent().unwrap_or(&ws).display().to_string()));
    env.extend(cfg.extra_env.iter().cloned());
    if !cfg.path_prepend.is_empty() && !env.iter().any(|(k, _)| k == "PATH") {
        let mut dirs = cfg.path_prepend.clone();
        dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
        if let Ok(p) = std::env::join_paths(dirs) {
            env.push(("PATH".into(), p.to_string_lossy().into_owned()));
        }
    }

    let mut lines = job.before_script.clone();
    lines.extend(job.script.iter().cloned());
    // With `image:`, the Docker executor: the same script in a container of the image.
    let container = match (&job.image, cfg.containers) {
        (Some(image), true) => {
            let project_path = job.variables.iter().find(|(k, _)| k == "CI_PROJECT_PATH").map_or("project", |(_, v)| v);
            let builds = crate::docker::builds_dir(project_path);
            for (k, v) in env.iter_mut() {
                match k.as_str() {
                    "CI_PROJECT_DIR" => *v = builds.clone(),
                    "CI_BUILDS_DIR" => *v = "/builds".into(),
                    _ => {}
                }
            }
            // This machine's PATH means nothing in the image.
            if !cfg.path_prepend.is_empty() && !job.variables.iter().any(|(k, _)| k == "PATH") {
                env.retain(|(k, _)| k != "PATH");
            }
            out.notice(&format!("Using the Docker executor with image {image}"));
            Some((image.clone(), builds))
        }
        _ => None,
    };
    if container.is_none() && !job.services.is_empty() {
        let names: Vec<&str> = job.services.iter().map(|s| s.name.as_str()).collect();
        out.notice(&format!(
            "WARNING: services ({}) run only with the Docker executor (a job with `image:`); this job runs on this machine's shell without them",
            names.join(", ")
        ));
    }
    let docker_auth_config = env.iter().rev().find(|(k, _)| k == "DOCKER_AUTH_CONFIG").map(|(_, v)| v.clone());
    let auth = crate::docker::Auth {
        docker_auth_config: docker_auth_config.as_deref(),
        fallback: cfg.registry_auth.as_deref(),
    };
    // What the job's containers are labelled with (tests and `docker ps` find them by it).
    let labels = std::collections::HashMap::from([
        ("dev.slipway.job".to_string(), job.name.clone()),
        ("dev.slipway.pid".to_string(), std::process::id().to_string()),
    ]);
    // One connection to the engine for the job, and its services before its scripts.
    let engine = match &container {
        Some(_) => match crate::docker::Engine::connect() {
            Ok(e) => Some(e),
            Err(e) => return system_failure(e),
        },
        None => None,
    };
    let sidecars = match &engine {
        Some(engine) if !job.services.is_empty() => {
            let run = crate::services::ServicesRun {
                services: &job.services,
                env: &env,
                labels: labels.clone(),
                job_slug: &slug,
                logs_dir: &cfg.run_dir.join("services").join(&slug),
                wait: SERVICES_WAIT,
                debug: env.iter().any(|(k, v)| k == "CI_DEBUG_SERVICES" && v == "true"),
                auth: &auth,
            };
            let started = engine.start_services(&run, cancel, &mut |b| out.bytes(b));
            out.flush();
            match started {
                Ok(s) => {
                    env.retain(|(k, _)| !s.unset.contains(k) && !s.set.iter().any(|(sk, _)| sk == k));
                    env.extend(s.set.iter().cloned());
                    Some(s)
                }
                Err(e) => return system_failure(e),
            }
        }
        _ => None,
    };
    let scripts_dir = cfg.run_dir.join("scripts");
    // A container reads its script from a mount, in a form `sh` also runs.
    let make_script = |lines: &[String], name: &str| match &container {
        Some(_) => Script::file(crate::docker::portable(&build_script(lines)), &scripts_dir, name),
        None => Script::new(build_script(lines), &scripts_dir, name),
    };
    let script = match make_script(&lines, &format!("{slug}.sh")) {
        Ok(s) => s,
        Err(e) => return system_failure(format!("writing the job script: {e}")),
    };
    let run_script =
        |script: &Script, env: &[(String, String)], timeout: Duration, cancel: &Cancel, out: &mut Out| match (
            &container, script,
        ) {
            (Some((image, builds)), Script::File(path)) => {
                let r = crate::docker::ContainerRun {
                    image,
                    options: &job.image_options,
                    script: &path.file_name().unwrap_or_default().to_string_lossy(),
                    scripts_dir: &scripts_dir,
                    workspace: &ws,
                    builds_dir: builds,
                    env,
                    labels: labels.clone(),
                    timeout,
                    grace: cfg.grace,
                    sidecars: sidecars.as_ref(),
                    auth: &auth,
                };
                let engine = engine.as_ref().expect("connected for a container job");
                let exit = engine.run(&r, cancel, &mut |b| out.bytes(b)).map_err(std::io::Error::other);
                out.flush();
                exit
            }
            _ => run_shell(&cfg.shell, script, &ws, env, timeout, cancel, cfg.grace, out),
        };
    let timeout = job.timeout.unwrap_or(cfg.default_timeout);
    let mut attempt = 0;
    let end = loop {
        attempt += 1;
        if attempt > 1 {
            out.notice(&format!("Retrying: attempt {attempt} of {}", job.retry.max + 1));
            job_out.attempt(attempt);
        }
        let exit = run_script(&script, &env, timeout, cancel, &mut out);
        let (success, exit_code, reason) = match &exit {
            Ok(Exit::Code(0)) => (true, Some(0), None),
            Ok(Exit::Code(c)) => (false, Some(*c), Some(format!("exit code {c}"))),
            Ok(Exit::Signal(s)) => (false, None, Some(format!("killed by signal {s}"))),
            Ok(Exit::TimedOut) => {
                (false, None, Some(format!("timed out after {}", slipway_pipeline::duration::human(timeout))))
            }
            Ok(Exit::Canceled) => (false, None, Some("canceled".into())),
            Err(e) => (false, None, Some(format!("could not start {}: {e}", cfg.shell.display()))),
        };
        if !success && exit.is_ok() {
            out.notice(&format!("ERROR: Job failed: {}", reason.as_deref().unwrap_or("")));
        }
        let canceled = matches!(exit, Ok(Exit::Canceled));
        // after_script: a fresh shell, even when the script failed, with its own timeout.
        if !job.after_script.is_empty() && cancel.level() < 2 {
            out.notice("Running after_script");
            let status = if success {
                "success"
            } else if canceled {
                "canceled"
            } else {
                "failed"
            };
            let mut aenv = env.clone();
            aenv.push(("CI_JOB_STATUS".into(), status.into()));
            if let Ok(apath) = make_script(&job.after_script, &format!("{slug}.after.sh")) {
                // A cancel must not stop after_script from running; a second Ctrl-C does.
                let acancel = if canceled { cancel.only_kill() } else { cancel.clone() };
                match run_script(&apath, &aenv, cfg.after_script_timeout, &acancel, &mut out) {
                    Ok(Exit::Code(0)) => {}
                    Ok(Exit::TimedOut) => {
                        out.notice("WARNING: after_script timed out (its failure does not change the job's status)")
                    }
                    Ok(other) => {
                        out.notice(&format!("WARNING: after_script failed ({other:?}); the job's status is unchanged"))
                    }
                    Err(e) => out.notice(&format!("WARNING: after_script could not start: {e}")),
                }
            }
        }
        let end = JobEnd { success, canceled, exit_code, reason, coverage: None, attempts: attempt, child: None };
        if success || canceled || attempt > job.retry.max || !should_retry(job, &exit) {
            break end;
        }
    };

    if let (Some(engine), Some(s)) = (&engine, sidecars) {
        engine.stop_services(s, &mut |b| out.bytes(b));
        out.flush();
    }

    // 5. Outputs: artifacts (with dotenv), caches.
    let artifacts_wanted = |when: ArtifactsWhen| match when {
        ArtifactsWhen::OnSuccess => end.success,
        ArtifactsWhen::OnFailure => !end.success && !end.canceled,
        ArtifactsWhen::Always => true,
    };
    if let Some(a) = &job.artifacts
        && artifacts_wanted(a.when)
    {
        let dest = cfg.run_dir.join("artifacts").join(&slug);
        match files::collect_artifacts(&ws, a, known, &dest) {
            Ok((files, warnings)) => {
                for w in warnings {
                    out.notice(&format!("WARNING: {w}"));
                }
                if !files.is_empty() {
                    out.notice(&format!("Uploading artifacts: {} files", files.len()));
                }
            }
            Err(e) => out.notice(&format!("WARNING: collecting artifacts failed: {e}")),
        }
        for report in &a.dotenv {
            match std::fs::read_to_string(ws.join(report)) {
                Ok(text) => match files::parse_dotenv(&text) {
                    Ok(vars) => {
                        let body: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                        let _ = std::fs::create_dir_all(cfg.run_dir.join("dotenv"));
                        let _ = std::fs::write(cfg.run_dir.join("dotenv").join(format!("{slug}.env")), body);
                        out.notice(&format!("dotenv report {report}: {} variables for later jobs", vars.len()));
                    }
                    Err(e) => out.notice(&format!("WARNING: dotenv report {report} is invalid: {e}")),
                },
                Err(e) => out.notice(&format!("WARNING: dotenv report {report} not readable: {e}")),
            }
        }
    }
    for (c, key) in job.cache.iter().zip(&cache_keys) {
        if c.policy != CachePolicy::Pull && artifacts_wanted(c.when) {
            match files::save_cache(&cfg.cache_dir, key, c, &ws, known) {
                Ok(n) => {
                    out.notice(&format!("Saving cache `{key}`: {n} files"));
                    if let Some(sync) = &cfg.cache_sync
                        && let Err(e) = sync.push(key, &cfg.cache_dir.join(files::sanitize_key(key)))
                    {
                        out.notice(&format!("WARNING: uploading cache `{key}` failed: {e}"));
                    }
                }
                Err(e) => out.notice(&format!("WARNING: saving cache `{key}` failed: {e}")),
            }
        }
    }
    out.flush();
    drop(out);

    let coverage = job.coverage.as_deref().and_then(|re| coverage_from_log(&log_path, re));
    if temporary {
        // Removing a large tree is slow on some filesystems: do it off the job's path.
        if let Ok(t) = std::thread::Builder::new().name("ws-cleanup".into()).spawn(move || remove_tree(&ws)) {
            shared.cleanup.lock().unwrap_or_else(|e| e.into_inner()).push(t);
        }
    }
    JobEnd { coverage, ..end }
}

fn should_retry(job: &PlannedJob, exit: &std::io::Result<Exit>) -> bool {
    let r = &job.retry;
    if !r.exit_codes.is_empty() {
        return matches!(exit, Ok(Exit::Code(c)) if r.exit_codes.contains(c));
    }
    if r.when.is_empty() || r.when.iter().any(|w| w == "always") {
        return true;
    }
    let kind = match exit {
        Ok(Exit::Code(_)) | Ok(Exit::Signal(_)) => "script_failure",
        Ok(Exit::TimedOut) => "job_execution_timeout",
        Ok(Exit::Canceled) => return false,
        Err(_) => "runner_system_failure",
    };
    r.when.iter().any(|w| {
        w == kind
            || (kind == "job_execution_timeout" && w == "stuck_or_timeout_failure")
            || w == "unknown_failure" && kind == "runner_system_failure"
    })
}

/// A job script: passed inline with `-c` when small (no file to create), else as a file.
enum Script {
    Inline(String),
    File(PathBuf),
}

impl Script {
    const INLINE_MAX: usize = 64 * 1024;

    fn new(text: String, dir: &Path, name: &str) -> std::io::Result<Script> {
        if text.len() <= Self::INLINE_MAX && !text.contains('\0') {
            return Ok(Script::Inline(text));
        }
        Script::file(text, dir, name)
    }

    /// Always a file in `dir`, whatever its size.
    fn file(text: String, dir: &Path, name: &str) -> std::io::Result<Script> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(Script::File(path))
    }
}

#[expect(clippy::too_many_arguments, reason = "one call site per shell kind; a struct would only rename the arguments")]
fn run_shell(
    shell: &Path,
    script: &Script,
    ws: &Path,
    env: &[(String, String)],
    timeout: Duration,
    cancel: &Cancel,
    grace: Duration,
    out: &mut Out,
) -> std::io::Result<Exit> {
    // By its path: a bare name with the job's own PATH would make the standard library fork
    // instead of posix_spawn (it must search that PATH in the child).
    let path_var = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
    let program = resolve_program(shell, path_var.as_deref()).unwrap_or_else(|| shell.to_path_buf());
    let mut cmd = Command::new(program);
    cmd.arg("--noprofile").arg("--norc");
    match script {
        Script::Inline(text) => cmd.arg("-c").arg(text).arg("slipway-job"),
        Script::File(path) => cmd.arg(path),
    };
    cmd.current_dir(ws).env_remove("GITLAB_CI");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = process::spawn(cmd)?;
    let deadline = Instant::now() + timeout;
    let exit = child.wait(Some(deadline), cancel, grace, &mut |chunk| out.bytes(chunk));
    out.flush();
    Ok(exit)
}

/// `name` looked up in `path` (else this process's PATH), as `execvp` would: the first
/// executable file of that name; a name with a `/` is itself.
fn resolve_program(name: &Path, path: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if name.components().count() != 1 {
        return Some(name.to_path_buf());
    }
    let own = std::env::var("PATH").unwrap_or_default();
    path.unwrap_or(&own)
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Restores job `dep`'s artifacts from run `run_dir` into `ws` (how many files) and adds its
/// dotenv variables to `dotenv`.
fn restore_from(run_dir: &Path, dep: &str, ws: &Path, dotenv: &mut Vec<(String, String)>) -> std::io::Result<usize> {
    let dslug = slug(dep);
    if let Ok(text) = std::fs::read_to_string(run_dir.join("dotenv").join(format!("{dslug}.env")))
        && let Ok(vars) = files::parse_dotenv(&text)
    {
        dotenv.extend(vars);
    }
    files::restore_artifacts(&run_dir.join("artifacts").join(&dslug), ws)
}

/// How long a job waits for its services to accept connections (GitLab Runner's default
/// `wait_for_services_timeout`).
const SERVICES_WAIT: Duration = Duration::from_secs(30);

pub(crate) fn system_failure(reason: String) -> JobEnd {
    JobEnd {
        success: false,
        canceled: false,
        exit_code: None,
        reason: Some(reason),
        coverage: None,
        attempts: 1,
        child: None,
    }
}

/// GitLab's `coverage`: the last match of the regex in the log; its first number is the value.
pub fn coverage_from_log(log: &Path, pattern: &str) -> Option<f64> {
    let re = regex::Regex::new(pattern).ok()?;
    let text = std::fs::read_to_string(log).ok()?;
    let m = re.find_iter(&text).last()?;
    let num = regex::Regex::new(r"\d+(?:\.\d+)?").ok()?;
    num.find(m.as_str())?.as_str().parse().ok()
}

pub(crate) fn snapshot_for(cfg: &RunConfig) -> std::io::Result<Snapshot> {
    if cfg.in_place {
        return Ok(Snapshot { root: cfg.project_dir.clone(), files: Vec::new(), meta: Vec::new(), git: None });
    }
    Snapshot::take(&cfg.project_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_path_safe() {
        assert_eq!(slug("build: [linux, amd64]"), "build-linux-amd64");
        assert_eq!(slug("test 1/3"), "test-1-3");
        assert_eq!(slug("::"), "job");
        // Long names are cut to fit a file name, and stay apart by a digest of the whole.
        let (a, b) = ("x".repeat(254) + "a", "x".repeat(254) + "b");
        assert!(slug(&a).len() <= MAX_SLUG && slug(&a) != slug(&b));
    }

    #[test]
    fn script_echoes_every_command() {
        let s = build_script(&["echo 'hi'".into(), "if true; then\n  echo x\nfi\n".into()]);
        assert!(s.starts_with("set -eo pipefail\n"));
        assert!(s.contains("printf '%s\\n' '$ echo '\\''hi'\\'''\necho 'hi'\n"));
        assert!(s.contains("'$ if true; then # collapsed multi-line command'"));
    }
}
