//! `slipway run` and its helpers: variables and secrets from the command line, selecting
//! jobs, the run directory under `.slipway/runs/<id>/`, Ctrl-C handling, and the run record.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use slipway_model::event::{JobInfo, RunEvent, SCHEMA, Stamped};
use slipway_model::run::PipelineStatus;
use slipway_pipeline::diag::did_you_mean;
use slipway_pipeline::plan::Plan;
use slipway_pipeline::vars::VarMap;
use slipway_runner::request::{self, InputError};
use slipway_runner::{Cancel, RunConfig};

use crate::FileArgs;
use crate::project::{self, Loaded, PlanInput};
use crate::ui::{self, HumanReporter, Ui, UserError, exit};
use slipway_git::Checkout;
use slipway_runner::record::StateDir;

#[derive(Args)]
pub struct RunArgs {
    /// Jobs to run (job or instance names); default: the whole pipeline.
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,
    #[command(flatten)]
    pub file: FileArgs,
    /// With JOB arguments: also run the jobs they `need`, transitively.
    #[arg(long)]
    pub needs: bool,
    /// Start this manual job as part of the run (repeatable).
    #[arg(long, value_name = "JOB")]
    pub manual: Vec<String>,
    /// A masked variable: set like --var, never shown in output or logs (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub secret: Vec<String>,
    /// A dotenv file of masked variables (NAME=VALUE per line).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Vec<PathBuf>,
    /// How many jobs run at once (default: the number of CPUs).
    #[arg(short = 'j', long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Run jobs in the working tree itself instead of private workspaces.
    #[arg(long)]
    pub in_place: bool,
    /// Refuse what slipway would run differently from GitLab: duplicate keys, and `image:`
    /// jobs with `--executor shell`.
    #[arg(long)]
    pub strict: bool,
    /// How jobs with `image:` run: `docker` (in a container of the image, GitLab's Docker
    /// executor) or `shell` (on this machine, ignoring the image).
    #[arg(long, value_name = "EXECUTOR", default_value = "docker", value_parser = ["docker", "shell"])]
    pub executor: String,
    /// Print one JSON event per line instead of the human view.
    #[arg(long)]
    pub json: bool,
}

fn refused(e: InputError) -> anyhow::Error {
    let mut u = UserError::new(e.message);
    if let Some(h) = e.hint {
        u = u.hint(h);
    }
    u.into()
}

fn overrides(file: &FileArgs) -> Result<VarMap> {
    Ok(request::assignments(&file.vars, "--var").map_err(refused)?.into_iter().collect())
}

/// Loads the pipeline and plans it for the current checkout.
pub fn load_and_plan(root: &Path, file: &FileArgs, pipeline_id: u64, ui: &Ui) -> Result<(Loaded, Plan)> {
    let loaded = project::load_for_run(root, file.file.as_deref(), overrides(file)?, &file.source, ui)?;
    let checkout = Checkout::read(root);
    let input = PlanInput {
        root,
        checkout: &checkout,
        pipeline_id,
        source: &file.source,
        overrides: overrides(file)?,
        snapshot: None,
    };
    let plan = project::make_plan(&loaded, &input, ui)?;
    Ok((loaded, plan))
}

/// [`load_and_plan`] for `slipway validate`: a valid file that runs nothing for this commit
/// (every job excluded, or `workflow:rules`) is no error — the reason is printed as a
/// warning and there is no plan.
pub fn load_and_plan_to_validate(root: &Path, file: &FileArgs, ui: &Ui) -> Result<(Loaded, Option<Plan>)> {
    let loaded = project::load_for_run(root, file.file.as_deref(), overrides(file)?, &file.source, ui)?;
    let checkout = Checkout::read(root);
    let input = PlanInput {
        root,
        checkout: &checkout,
        pipeline_id: 0,
        source: &file.source,
        overrides: overrides(file)?,
        snapshot: None,
    };
    match slipway_runner::project::make_plan(&loaded, &input) {
        Ok(plan) => Ok((loaded, Some(plan))),
        Err(i) if i.nothing_to_run => {
            for d in &i.diagnostics {
                let mut w = d.clone();
                w.severity = slipway_pipeline::Severity::Warning;
                ui.diagnostic(&i.sources, &w);
            }
            Ok((loaded, None))
        }
        Err(_) => project::make_plan(&loaded, &input, ui).map(|plan| (loaded, Some(plan))),
    }
}

/// Ctrl-C/SIGTERM: the first asks jobs to stop (SIGTERM, grace, SIGKILL), the second kills
/// them at once.
fn handle_signals(cancel: Cancel, ui: Ui) {
    let interrupts = slipway_sys::signals::Interrupts::install();
    std::thread::spawn(move || {
        let mut seen = interrupts.count();
        loop {
            seen = interrupts.wait_past(seen);
            if seen == 1 {
                ui.notice("canceling: stopping running jobs (press Ctrl-C again to kill them now)");
                cancel.request(1);
            } else {
                ui.notice("killing running jobs");
                cancel.request(2);
            }
        }
    });
}

pub fn run(root: PathBuf, args: RunArgs, ui: &Ui) -> Result<i32> {
    // The guardian (an `sh` that outlives a killed slipway to stop its jobs) starts while
    // the pipeline loads, not in front of the first job.
    std::thread::spawn(slipway_sys::process::Guardian::get);
    // Listing the project's files takes a git process: start it while the pipeline loads.
    let snapshot = (!args.in_place).then(|| {
        let root = root.clone();
        std::thread::spawn(move || slipway_runner::workspace::Snapshot::take(&root))
    });
    // So are the checkout's facts (a git process when HEAD is detached).
    let checkout = {
        let root = root.clone();
        std::thread::spawn(move || Checkout::read(&root))
    };
    let loaded =
        project::load_for_run(&root, args.file.file.as_deref(), overrides(&args.file)?, &args.file.source, ui)?;
    let duplicates = loaded.warnings.iter().filter(|w| w.message.starts_with("duplicate key")).count();
    if args.strict && duplicates > 0 {
        return Err(UserError::new(format!(
            "--strict: {} in the pipeline (warned above)",
            project::plural(duplicates, "duplicate key")
        ))
        .hint("remove the duplicates, or drop --strict (GitLab keeps the last value)")
        .into());
    }
    let mut over = overrides(&args.file)?;
    let mut secrets: Vec<String> = Vec::new();
    for (k, v) in request::secrets(&args.secret, &args.secret_file).map_err(refused)? {
        secrets.push(v.clone());
        over.insert(k, v);
    }

    let state_dir = StateDir::of(&root)?;
    let state = state_dir.dir.clone();
    let checkout = checkout.join().unwrap_or_else(|_| Checkout::read(&root));
    state_dir.repair();
    let taken = state_dir.next_run()?;
    let (run_id, run_dir) = (taken.id, taken.dir.clone());
    // Held while this run lives: tells a later run's repair that our files are in use.
    let _run_lock = slipway_runner::workspace::lock(&run_dir.join("ws"))?;
    // The file list answers `rules:exists` too; it was taken while the pipeline loaded.
    let snapshot = snapshot.and_then(|t| t.join().ok()).and_then(|r| r.ok());
    let input = PlanInput {
        root: &root,
        checkout: &checkout,
        pipeline_id: run_id,
        source: &args.file.source,
        overrides: over.clone(),
        snapshot: snapshot.as_ref(),
    };
    let mut plan = match project::make_plan(&loaded, &input, ui) {
        Ok(p) => p,
        Err(e) => {
            taken.discard();
            return Err(e);
        }
    };
    let selected = match args.jobs.is_empty() {
        true => Ok(()),
        false => request::select(&mut plan, &args.jobs, args.needs),
    };
    if let Err(e) = selected.and_then(|()| request::check_manual(&plan, &args.manual)) {
        taken.discard();
        return Err(refused(e));
    }
    // With `--executor shell`, jobs that ask for an image run on this machine instead.
    let with_image = request::container_jobs(&plan);
    let shell_only = args.executor == "shell";
    if !with_image.is_empty() && shell_only {
        if args.strict {
            let _ = std::fs::remove_dir_all(&taken.dir);
            return Err(UserError::new(format!(
                "--strict: {} ask for `image:`/`services:`, which `--executor shell` runs on this machine",
                with_image.join(", ")
            ))
            .hint("drop `--executor shell` to run them in their containers")
            .into());
        }
        if !ui.json {
            for j in &with_image {
                ui.notice(&format!(
                    "note: job `{j}` asks for an image; running it on the shell executor (--executor shell)"
                ));
            }
        }
    }

    // Secrets from the command line are masked like `masked: true` variables, plan included.
    for j in &mut plan.jobs {
        j.masked.extend(secrets.iter().cloned());
    }
    std::fs::write(run_dir.join("plan.json"), serde_json::to_vec_pretty(&slipway_pipeline::plan::to_json(&plan))?)?;
    let mut config = RunConfig::new(root.clone(), run_dir.clone(), &state);
    config.containers = !shell_only;
    config.registry_auth = Some(registry_auth());
    if let Some(n) = args.concurrency {
        if n == 0 {
            return Err(UserError::new("--concurrency must be at least 1").into());
        }
        config.concurrency = n;
    }
    config.in_place = args.in_place;
    // Jobs can reach the project's slipway state (the coverage baseline of `slipway gate`).
    config.extra_env.push(("SLIPWAY_STATE_DIR".into(), state.display().to_string()));
    // Jobs can call `slipway` itself (the built-in Go pipeline does).
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        config.path_prepend.push(dir);
    }
    config.snapshot = snapshot;
    config.manual = args.manual.clone();
    config.secrets = secrets;
    config.overrides = over.keys().cloned().collect::<HashSet<_>>();

    let cancel = Cancel::default();
    handle_signals(cancel.clone(), ui.clone());
    let what = loaded.source.describe(&root);
    let result = if ui.json {
        let jobs = plan
            .jobs
            .iter()
            .map(|j| JobInfo { name: j.name.clone(), stage: j.stage.clone(), when: j.when.as_str().to_string() })
            .collect();
        ui::emit_json(&Stamped::now(RunEvent::PipelineStarted { schema: SCHEMA, run_id, file: what, jobs }));
        slipway_runner::run(&plan, config, cancel, ui::JsonReporter)?.0
    } else {
        println!("{} run #{run_id}: {} from {what}", ui.paint("1", "slipway"), project::plural(plan.jobs.len(), "job"),);
        let (result, mut rep) = slipway_runner::run(&plan, config, cancel, HumanReporter::new(ui, &plan))?;
        rep.finish();
        result
    };
    let record = result.record(run_id);
    taken.finish(&record)?;
    if ui.json {
        ui::emit_json(&Stamped::now(RunEvent::PipelineFinished(record)));
    } else {
        ui::summary_table(ui, &root, &result, run_id);
    }
    Ok(match result.status {
        PipelineStatus::Success | PipelineStatus::Running => exit::OK,
        PipelineStatus::Failed => exit::FAILED,
        PipelineStatus::Canceled => exit::CANCELED,
    })
}

/// `slipway logs [RUN] JOB`.
pub fn print_log(root: &Path, run: Option<&str>, job: &str) -> Result<i32> {
    let runs = root.join(".slipway").join("runs");
    let state = StateDir { dir: root.join(".slipway") };
    let Some(run_dir) = state.run(run) else {
        return Err(UserError::new(match run {
            Some(r) => format!("no run #{r} in {}", runs.display()),
            None => format!("no runs yet in {}", root.display()),
        })
        .hint("`slipway run` records every run under .slipway/runs/")
        .into());
    };
    match std::fs::read(run_dir.log(job)) {
        Ok(bytes) => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
            Ok(exit::OK)
        }
        Err(_) => {
            let names = run_dir.logged_jobs();
            let mut e = UserError::new(format!("no log for job `{job}` in {}", run_dir.dir.display()));
            if let Some(s) = did_you_mean(job, names.iter().map(|s| s.as_str())) {
                e = e.hint(format!("did you mean `{s}`?"));
            } else if !names.is_empty() {
                e = e.hint(format!("jobs with logs: {}", names.join(", ")));
            }
            Err(e.into())
        }
    }
}

/// The Docker executor's registry credentials: those of `slipway image push`
/// (`SLIPWAY_REGISTRY_USER`/`_PASSWORD`, then docker's `config.json` and its helpers).
pub fn registry_auth() -> std::sync::Arc<dyn slipway_runner::RegistryAuth> {
    #[derive(Debug)]
    struct PushCredentials;
    impl slipway_runner::RegistryAuth for PushCredentials {
        fn credentials(&self, host: &str) -> Result<Option<(String, String)>, String> {
            slipway_oci::credentials::lookup(host, None, None)
                .map(|c| c.map(|c| (c.username, c.password)))
                .map_err(|e| e.to_string())
        }
    }
    std::sync::Arc::new(PushCredentials)
}
