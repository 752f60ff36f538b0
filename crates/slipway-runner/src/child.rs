//! Child pipelines: a job with `trigger:include` runs no script; it loads the child's
//! configuration (files of the project, or a file an earlier job left in its artifacts: a
//! dynamic child pipeline), plans it with what GitLab passes down — the predefined variables
//! of the parent with `CI_PIPELINE_SOURCE=parent_pipeline`, the trigger job's variables
//! (`forward:yaml_variables`, on by default) and the run's `--var`s
//! (`forward:pipeline_variables`) — and runs it as a run of its own in
//! `runs/<id>/children/<job>/` (logs, artifacts, `summary.json`). Its jobs' output appears in
//! the trigger job's log, each line under its job's name, and its record is nested in the
//! trigger job's (`child` in `job_finished` and `summary.json`). With `strategy: depend` the
//! trigger job takes the child's status; without, it succeeds once the child has run (a local
//! run waits for the child either way). GitLab's limit of two levels of nesting applies.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use slipway_model::event::{RunEvent, Stamped};
use slipway_model::run::{JobState, PipelineStatus};
use slipway_pipeline::model::{Trigger, TriggerInclude};
use slipway_pipeline::plan::{Context, Facts, PlanError, PlannedJob};
use slipway_pipeline::vars::VarMap;

use crate::exec::{JobEnd, slug, system_failure};
use crate::{Shared, Sink};

/// How deep child pipelines nest (GitLab: a child may have children, those none).
const MAX_DEPTH: u32 = 2;

/// Runs `job`'s child pipeline to its end; `say` writes a line to the job's log.
pub(crate) fn run(job: &PlannedJob, trigger: &Trigger, shared: &Arc<Shared>, say: &mut dyn FnMut(&str)) -> JobEnd {
    let cfg = &shared.config;
    let fail = |say: &mut dyn FnMut(&str), why: String| {
        say(&format!("ERROR: {why}"));
        system_failure(why)
    };
    if cfg.depth >= MAX_DEPTH {
        return fail(say, format!("child pipelines nest at most {MAX_DEPTH} levels deep (GitLab's limit)"));
    }
    let (name, text) = match configuration(trigger, &cfg.project_dir, &cfg.run_dir) {
        Ok(c) => c,
        Err(why) => return fail(say, why),
    };
    say(&format!("Starting a child pipeline from {name}"));
    let mut sources = slipway_pipeline::diag::SourceMap::default();
    // Its includes' rules see the child's pipeline source, as in GitLab.
    let fetch = crate::fetch::Fetcher::for_project(&cfg.project_dir).with_run(VarMap::new(), "parent_pipeline");
    let loaded =
        slipway_pipeline::load_pipeline_fetching(&cfg.project_dir, Path::new(&name), &text, &mut sources, &fetch);
    let pipeline = match loaded {
        Ok((p, warnings)) => {
            tell(&sources, &warnings, say);
            p
        }
        Err(diagnostics) => {
            tell(&sources, &diagnostics, say);
            return fail(say, format!("the child pipeline's configuration ({name}) is invalid"));
        }
    };

    // What GitLab passes down: the parent's predefined variables (a new pipeline's source and
    // id), then the trigger job's own and the run's, above the child's YAML.
    let job_var = |k: &str| job.variables.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut predefined = VarMap::new();
    let mut overrides = VarMap::new();
    for (k, v) in &job.variables {
        let predefined_name = k.starts_with("CI_") || k.starts_with("GITLAB_") || k.starts_with("SLIPWAY") || k == "CI";
        if k.starts_with("CI_JOB_") || k.starts_with("CI_NODE_") || k == "CI_ENVIRONMENT_NAME" {
            continue;
        }
        if predefined_name && !cfg.overrides.contains(k) {
            predefined.insert(k.clone(), v.clone());
        } else if cfg.overrides.contains(k) {
            if trigger.forward_pipeline_variables {
                overrides.insert(k.clone(), v.clone());
            }
        } else if trigger.forward_yaml_variables {
            overrides.insert(k.clone(), v.clone());
        }
    }
    let child_id = job_var("CI_JOB_ID").and_then(|id| id.parse::<u64>().ok()).unwrap_or(1);
    predefined.insert("CI_PIPELINE_SOURCE".into(), "parent_pipeline".into());
    predefined.insert("CI_PIPELINE_ID".into(), child_id.to_string());
    predefined.insert("CI_PIPELINE_IID".into(), child_id.to_string());
    let facts = SnapshotFacts { files: shared.snapshot.files.iter().map(|f| f.display().to_string()).collect() };
    let cx = Context {
        predefined,
        overrides: overrides.clone(),
        facts: &facts,
        source: "parent_pipeline".into(),
        first_job_id: child_id * 1000 + 1,
    };
    let plan = match slipway_pipeline::plan::plan(&pipeline, &cx) {
        Ok(p) => p,
        Err(PlanError::Workflow(_) | PlanError::Empty(_)) => {
            say("The child pipeline has no jobs for this pipeline (its rules excluded them all)");
            return JobEnd {
                success: true,
                canceled: false,
                exit_code: None,
                reason: None,
                coverage: None,
                attempts: 1,
                child: None,
            };
        }
        Err(PlanError::Invalid(diagnostics)) => {
            tell(&sources, &diagnostics, say);
            return fail(say, format!("the child pipeline ({name}) does not plan"));
        }
    };

    let mut child_cfg = cfg.clone();
    child_cfg.run_dir = cfg.run_dir.join("children").join(slug(&job.name));
    child_cfg.snapshot = Some(shared.snapshot.clone());
    child_cfg.manual = Vec::new();
    child_cfg.depth = cfg.depth + 1;
    child_cfg.parent_run_dir = Some(cfg.run_dir.clone());
    child_cfg.overrides = overrides.keys().cloned().collect();
    let _ = std::fs::remove_dir_all(&child_cfg.run_dir);
    let run_dir = child_cfg.run_dir.clone();
    let (tx, rx) = mpsc::channel::<String>();
    let result = std::thread::scope(|scope| {
        let plan = &plan;
        let cancel = shared.cancel.clone();
        // The sink (and its sender) ends with the thread, which ends the loop below.
        let running = scope.spawn(move || crate::run(plan, child_cfg, cancel, Lines { tx }).map(|(r, _)| r));
        for line in rx {
            say(&line);
        }
        running.join()
    });
    let record = match result {
        Ok(Ok(r)) => r.record(child_id),
        Ok(Err(e)) => return fail(say, format!("the child pipeline could not run: {e}")),
        Err(_) => return fail(say, "the child pipeline's run panicked".into()),
    };
    if let Ok(json) = serde_json::to_vec_pretty(&record) {
        let _ = std::fs::write(run_dir.join("summary.json"), json);
    }
    let status = record.status;
    say(&format!(
        "Child pipeline {}: {} jobs, {} failed ({})",
        status.as_str(),
        record.jobs.len(),
        record.jobs.iter().filter(|j| j.status == JobState::Failed).count(),
        run_dir.strip_prefix(&cfg.project_dir).unwrap_or(&run_dir).display()
    ));
    let (success, canceled, reason) = match (trigger.depend, status) {
        (_, PipelineStatus::Canceled) => (false, true, Some("the child pipeline was canceled".to_string())),
        (true, PipelineStatus::Failed) => (false, false, Some("the child pipeline failed (strategy: depend)".into())),
        _ => (true, false, None),
    };
    JobEnd { success, canceled, exit_code: None, reason, coverage: None, attempts: 1, child: Some(Box::new(record)) }
}

/// Writes each diagnostic, rendered, to the trigger job's log.
fn tell(
    sources: &slipway_pipeline::diag::SourceMap,
    diagnostics: &[slipway_pipeline::Diagnostic],
    say: &mut dyn FnMut(&str),
) {
    for d in diagnostics {
        for line in sources.render(d, false).lines() {
            say(line);
        }
    }
}

/// The child's configuration: one file as it is, or several as the includes of one.
fn configuration(trigger: &Trigger, project: &Path, run_dir: &Path) -> Result<(String, String), String> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the child pipeline's {what}: {e}"))
    };
    match trigger.include.as_slice() {
        [TriggerInclude::Local { local }] => {
            let rel = local.trim_start_matches('/');
            Ok((rel.to_string(), read(&project.join(rel), &format!("file {rel}"))?))
        }
        [TriggerInclude::Artifact { artifact, job }] => {
            let path = run_dir.join("artifacts").join(slug(job)).join(artifact.trim_start_matches('/'));
            if !path.is_file() {
                return Err(format!(
                    "job `{job}` left no artifact `{artifact}`: it must be in an earlier stage or in this job's `needs`, and list the file in `artifacts:paths`"
                ));
            }
            Ok((format!("{job}:{artifact}"), read(&path, &format!("artifact {artifact} of {job}"))?))
        }
        many => {
            let mut text = String::from("include:\n");
            for i in many {
                match i {
                    TriggerInclude::Local { local } => {
                        text.push_str(&format!("  - local: '{}'\n", local.replace('\'', "''")));
                    }
                    TriggerInclude::Artifact { .. } => {
                        return Err("an artifact include must be the trigger's only include".into());
                    }
                }
            }
            Ok(("trigger:include".to_string(), text))
        }
    }
}

/// `rules:exists` against the parent's files; `rules:changes` unknown (true, as in GitLab
/// where there is nothing to compare).
struct SnapshotFacts {
    files: Vec<String>,
}

impl Facts for SnapshotFacts {
    fn changed_files(&self, _compare_to: Option<&str>) -> Option<Vec<String>> {
        None
    }

    fn exists(&self, glob: &str) -> bool {
        crate::project::any_matches(&self.files, glob)
    }
}

/// The child's events as lines of the trigger job's log.
struct Lines {
    tx: mpsc::Sender<String>,
}

impl Sink for Lines {
    fn event(&mut self, event: Stamped<RunEvent>) {
        let line = match event.event {
            RunEvent::JobStarted { job, attempt } if attempt <= 1 => format!("[{job}] started"),
            RunEvent::JobLog { job, line } => format!("[{job}] {line}"),
            RunEvent::JobNotice { job, message } => format!("[{job}] {message}"),
            RunEvent::JobFinished { job, status, duration_ms, reason, .. } => {
                let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
                format!("[{job}] {} in {:.1}s{why}", status.as_str(), duration_ms as f64 / 1000.0)
            }
            _ => return,
        };
        let _ = self.tx.send(line);
    }
}
