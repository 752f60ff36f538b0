//! The `slipway` binary: the command line, wiring between the crates, exit codes and
//! terminal UX. Domain logic lives in the library crates.

mod accesscmd;
mod alertscmd;
mod appcmd;
mod deploycmd;
mod gatecmd;
mod gocmd;
mod imagecmd;
mod project;
mod remote;
mod run;
mod servercmd;
mod signcmd;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use ui::{ColorChoice, Ui, UserError, exit};

#[derive(Parser)]
#[command(
    name = "slipway",
    version,
    about = "CI/CD for Go services: GitLab-CI-compatible pipelines, Go-aware builds and tests, daemonless images, and deploys with health checks and rollback"
)]
#[command(max_term_width = 100)]
struct Cli {
    /// Run as if started in DIR.
    #[arg(short = 'C', long = "project-dir", global = true, value_name = "DIR")]
    project_dir: Option<PathBuf>,
    /// Where the store, artifacts and the agent's socket live (default:
    /// $XDG_DATA_HOME/slipway, else ~/.local/share/slipway).
    #[arg(long, global = true, env = "SLIPWAY_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// When to use colours (NO_COLOR in the environment turns them off for `auto`).
    #[arg(long, global = true, value_enum, default_value = "auto")]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct FileArgs {
    /// Pipeline file (default: .slipway.yml, .slipway.yaml, .gitlab-ci.yml, else the built-in Go pipeline).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set a variable for this run, overriding the file's (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// `CI_PIPELINE_SOURCE` for rules (push, web, schedule, merge_request_event, ...).
    #[arg(long, default_value = "push", value_name = "SOURCE")]
    pub source: String,
}

#[derive(Subcommand)]
enum PipelineAction {
    /// Its status, ref, commit and jobs.
    Show { id: i64 },
}

#[derive(Subcommand)]
enum Command {
    /// Plan and run the pipeline (or only the named jobs).
    Run(run::RunArgs),
    /// Print the expanded pipeline after includes, extends, !reference, rules and matrix.
    Plan {
        #[command(flatten)]
        file: FileArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "yaml")]
        format: PlanFormat,
    },
    /// Check the pipeline file; exit 0 when valid, else print every error (exit 2).
    Validate {
        #[command(flatten)]
        file: FileArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the jobs this commit's pipeline would run, with stage, when and needs.
    List {
        #[command(flatten)]
        file: FileArgs,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the built-in Go pipeline to .slipway.yml so it can be edited.
    Init {
        /// Overwrite an existing .slipway.yml.
        #[arg(long)]
        force: bool,
    },
    /// Print a job's log from a run (default: the latest run).
    Logs {
        /// Run number, or the job name when only one argument is given.
        #[arg(required_unless_present = "env")]
        first: Option<String>,
        /// Job name.
        second: Option<String>,
        /// Show a deployed environment's instance logs instead of a job's.
        #[arg(long, value_name = "ENV", conflicts_with_all = ["first", "second"])]
        env: Option<String>,
        /// Lines of an environment's log to show.
        #[arg(short = 'n', long, default_value_t = 100, requires = "env")]
        lines: usize,
        /// Keep printing the log as it grows (an environment's, or a server pipeline's job).
        #[arg(short = 'F', long)]
        follow: bool,
        /// Read from this server: a pipeline job's log (`slipway logs PIPELINE JOB`), or an
        /// environment's (`--env ENV --project P`), from whichever agent runs it.
        #[arg(long, value_name = "URL", env = "SLIPWAY_SERVER")]
        server: Option<String>,
        #[arg(long, value_name = "TOKEN", env = "SLIPWAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The server's project the environment belongs to (with `--env` and `--server`).
        #[arg(long, value_name = "NAME", env = "SLIPWAY_PROJECT")]
        project: Option<String>,
    },
    /// Deploy the build (or a version deployed before) to an environment.
    Deploy(deploycmd::DeployArgs),
    /// Deploy what runs in one environment to the next, the exact same artifacts.
    Promote(deploycmd::PromoteArgs),
    /// Go back to the release before the current one (or `--to VERSION`).
    Rollback(deploycmd::RollbackArgs),
    /// Approve a release waiting for a protected environment, or a canary's manual pause.
    Approve(deploycmd::ApproveArgs),
    /// Put an environment a deploy left mid-way back on its current release.
    Repair(deploycmd::RepairArgs),
    /// Record what an environment runs, unknown to the store (a lost or old store), as its current release.
    Adopt(deploycmd::AdoptArgs),
    /// Each environment's version, health and entry point.
    Status(deploycmd::StatusArgs),
    /// An environment's releases, newest first, with outcome and duration.
    History(deploycmd::HistoryArgs),
    /// The agent: supervises service instances, health checks, entry points (`run|start|stop|status`); with `--server`, also runs a server's CI jobs.
    Agent(deploycmd::AgentArgs),
    /// The server: projects, pipelines on every commit, jobs for its agents, the REST API.
    Server(servercmd::ServerArgs),
    /// A server's projects: `add NAME --repo URL`, `list`.
    Project {
        #[command(subcommand)]
        action: servercmd::ProjectAction,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Prometheus rule files: `check FILE...` (every error at its place), `test FILE...` (promtool's rule-test files).
    Alerts {
        #[command(subcommand)]
        action: alertscmd::AlertsAction,
    },
    /// GitOps applications on a server: `add`, `list`, `show`, `diff`, `sync`, `history`, `delete`.
    App {
        #[command(subcommand)]
        action: appcmd::AppAction,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long, global = true)]
        json: bool,
    },
    /// A server's silences: `add MATCHER... --for 2h --comment WHY`, `list`, `expire ID`.
    Silence {
        #[command(subcommand)]
        action: alertscmd::SilenceAction,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long, global = true)]
        json: bool,
    },
    /// A server's notification deliveries, newest first: delivered, retrying or failed.
    Notifications {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long)]
        json: bool,
    },
    /// Sign in to a server: a token kept in ~/.config/slipway/credentials.json (0600).
    Login {
        /// The user (default: $USER).
        #[arg(long)]
        user: Option<String>,
        /// Read the password from stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
        /// The token stops working after this long (default 30d).
        #[arg(long, value_name = "DURATION", value_parser = servercmd::parse_duration)]
        expires: Option<std::time::Duration>,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long)]
        json: bool,
    },
    /// Sign out: the kept token is revoked and forgotten.
    Logout {
        #[command(flatten)]
        remote: servercmd::Remote,
    },
    /// Who the token is, and the roles it holds.
    Whoami {
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long)]
        json: bool,
    },
    /// API and agent tokens: `create NAME [--scope P] [--expires D] [--agent NAME]`, `list`, `revoke ID`.
    Token {
        #[command(subcommand)]
        action: accesscmd::TokenAction,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long, global = true)]
        json: bool,
    },
    /// A server's users and their roles: `add`, `list`, `delete`, `passwd`, `grant`, `revoke`, `roles`.
    User {
        #[command(subcommand)]
        action: accesscmd::UserAction,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long, global = true)]
        json: bool,
    },
    /// A project's secrets on a server: `set NAME` (value on stdin), `list`, `delete`, `rotate-key`.
    Secret {
        #[command(subcommand)]
        action: accesscmd::SecretAction,
        #[arg(long, env = "SLIPWAY_PROJECT", global = true)]
        project: Option<String>,
        /// A group's secrets instead (over --project): every project under `GROUP/` gets them.
        #[arg(long, global = true)]
        group: Option<String>,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long, global = true)]
        json: bool,
    },
    /// A server's audit log (`--json`: JSON lines), or `verify` its hash chain.
    Audit {
        #[command(subcommand)]
        action: Option<accesscmd::AuditAction>,
        /// From this time on (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only this actor's entries.
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long, global = true)]
        json: bool,
    },
    /// A server's pipelines, newest first.
    Pipelines {
        project: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long)]
        json: bool,
    },
    /// One pipeline of a server: `show ID`.
    Pipeline {
        #[command(subcommand)]
        action: PipelineAction,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Start a pipeline on a server for a project's branch or tag.
    Trigger {
        project: String,
        /// A branch or `refs/tags/TAG` (default: the project's branch).
        #[arg(long = "ref", value_name = "REF")]
        ref_name: Option<String>,
        /// A variable for the pipeline (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = servercmd::parse_var)]
        vars: Vec<(String, String)>,
        /// Wait for it to end; exit as it ended.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long)]
        json: bool,
    },
    /// Run a server pipeline's failed jobs again, or one job (by name or index) that ended.
    Retry {
        id: i64,
        job: Option<String>,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long)]
        json: bool,
    },
    /// Start a manual job of a server pipeline (by name or index).
    Play {
        id: i64,
        job: String,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long)]
        json: bool,
    },
    /// A server's pipeline schedules: `add PROJECT --cron EXPR [--tz ZONE]`, `list`, `run`, `enable`, `disable`, `delete`.
    Schedule {
        #[command(subcommand)]
        action: servercmd::ScheduleAction,
        #[command(flatten)]
        remote: servercmd::Remote,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Cancel a pipeline on a server: its running jobs stop within a second.
    Cancel {
        id: i64,
        #[command(flatten)]
        remote: servercmd::Remote,
    },
    /// Check quality gates (the `gates:` section or flags) against the Go reports.
    Gate(gatecmd::GateArgs),
    /// Go-aware commands: `slipway go test|build|vet|mod check`.
    Go {
        #[command(subcommand)]
        command: gocmd::GoCommand,
    },
    /// Container images without a daemon: `slipway image build|push|inspect`.
    Image {
        #[command(subcommand)]
        command: imagecmd::ImageCommand,
    },
    /// Signing keys and detached signatures in cosign's format: `generate-key`, `blob`, `verify-blob`.
    Sign {
        #[command(subcommand)]
        command: signcmd::SignCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PlanFormat {
    Yaml,
    Json,
    Mermaid,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Run(a) => a.json,
        Command::Gate(a) => a.json,
        Command::Go { command: gocmd::GoCommand::Test(a) } => a.json,
        Command::Go { command: gocmd::GoCommand::Build(a) } => a.json,
        Command::Go { command: gocmd::GoCommand::Vet(a) } => a.json,
        Command::Image { command: imagecmd::ImageCommand::Build(a) } => a.json,
        Command::Image { command: imagecmd::ImageCommand::Push(a) } => a.json,
        Command::Validate { json, .. } | Command::List { json, .. } => *json,
        Command::Deploy(a) => a.common.json,
        Command::Promote(a) => a.common.json,
        Command::Rollback(a) => a.common.json,
        Command::Repair(a) => a.common.json,
        Command::Adopt(a) => a.common.json,
        Command::Status(a) => a.json,
        Command::History(a) => a.json,
        _ => false,
    };
    let ui = Ui::new(cli.color, json);
    let code = match dispatch(cli, &ui) {
        Ok(code) => code,
        Err(e) => match e.downcast::<UserError>() {
            Ok(user) => {
                ui.error(&user);
                if ui.json {
                    println!(
                        "{}",
                        serde_json::json!({"event": "error", "message": user.message, "hint": user.hint, "errors": user.details.unwrap_or_default()})
                    );
                }
                exit::USAGE
            }
            Err(other) => {
                // The chain of causes, each said once (a message that already quotes its cause
                // is not followed by it again).
                let mut text = other.to_string();
                for cause in other.chain().skip(1) {
                    let c = cause.to_string();
                    if !text.contains(&c) {
                        text = format!("{text}: {c}");
                    }
                }
                eprintln!("{}: {text}", ui.paint("31;1", "error"));
                // A store that could not write says where and how much room is left.
                if let Some(hint) = other.downcast_ref::<slipway_store::StoreError>().and_then(|e| e.hint()) {
                    eprintln!("  {} {hint}", ui.paint("34;1", "help:"));
                }
                exit::FAILED
            }
        },
    };
    ExitCode::from(code as u8)
}

/// The project root: `-C DIR` as given; otherwise the nearest directory, from the current
/// one up to the repository's top, that has a pipeline file or a `go.mod` (so slipway works
/// from a subdirectory, as git does), else the current directory.
fn project_dir(cli_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let explicit = cli_dir.is_some();
    let dir = match cli_dir {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    let dir = dir.canonicalize().map_err(|e| UserError::new(format!("project directory `{}`: {e}", dir.display())))?;
    if explicit {
        return Ok(dir);
    }
    Ok(slipway_runner::project::root_of(&dir))
}

fn dispatch(cli: Cli, ui: &Ui) -> anyhow::Result<i32> {
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "slipway", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Init { force } => {
            let root = project_dir(cli.project_dir)?;
            let dest = root.join(".slipway.yml");
            if dest.exists() && !force {
                return Err(UserError::new(format!("{} already exists", dest.display()))
                    .hint("pass --force to overwrite it")
                    .into());
            }
            std::fs::write(&dest, slipway_pipeline::builtin::GO_PIPELINE)?;
            println!("wrote {} (the built-in Go pipeline); edit it, then `slipway run`", dest.display());
            Ok(exit::OK)
        }
        Command::Run(args) => run::run(project_dir(cli.project_dir)?, args, ui),
        Command::Gate(args) => gatecmd::run(&project_dir(cli.project_dir)?, args, ui),
        Command::Sign { command } => signcmd::run(command, ui),
        Command::Image { command } => {
            let dir = match cli.project_dir {
                Some(d) => {
                    d.canonicalize().map_err(|e| UserError::new(format!("project directory `{}`: {e}", d.display())))?
                }
                None => std::env::current_dir()?,
            };
            imagecmd::run(&dir, command, ui)
        }
        Command::Go { command } => {
            let dir = match cli.project_dir {
                Some(d) => {
                    d.canonicalize().map_err(|e| UserError::new(format!("project directory `{}`: {e}", d.display())))?
                }
                None => std::env::current_dir()?,
            };
            gocmd::run(&dir, command, ui)
        }
        Command::Plan { file, format } => {
            let root = project_dir(cli.project_dir)?;
            let (_, plan) = run::load_and_plan(&root, &file, 0, ui)?;
            match format {
                PlanFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&slipway_pipeline::plan::to_json(&plan))?)
                }
                PlanFormat::Yaml => print!("{}", serde_saphyr::to_string(&slipway_pipeline::plan::to_json(&plan))?),
                PlanFormat::Mermaid => print!("{}", slipway_pipeline::plan::to_mermaid(&plan)),
            }
            Ok(exit::OK)
        }
        Command::Validate { file, json } => {
            let root = project_dir(cli.project_dir)?;
            let (loaded, plan) = run::load_and_plan_to_validate(&root, &file, ui)?;
            let what = loaded.source.describe(&root);
            let Some(plan) = plan else {
                if json {
                    println!("{}", serde_json::json!({"valid": true, "file": what, "jobs": 0, "stages": []}));
                } else {
                    println!(
                        "{} {what} is valid; no job runs for this commit (see the warning)",
                        ui.paint("32;1", "ok:")
                    );
                }
                return Ok(exit::OK);
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "file": what, "jobs": plan.jobs.len(), "stages": plan.stages})
                );
            } else {
                println!(
                    "{} {what} is valid: {} in {}",
                    ui.paint("32;1", "ok:"),
                    project::plural(plan.jobs.len(), "job"),
                    project::plural(plan.stages.len(), "stage")
                );
            }
            Ok(exit::OK)
        }
        Command::List { file, json } => {
            let root = project_dir(cli.project_dir)?;
            let (_, plan) = run::load_and_plan(&root, &file, 0, ui)?;
            if json {
                let jobs: Vec<serde_json::Value> = plan
                    .jobs
                    .iter()
                    .map(|j| serde_json::json!({"name": j.name, "stage": j.stage, "when": j.when.as_str(), "needs": j.needs.as_ref().map(|n| n.iter().map(|n| n.job.clone()).collect::<Vec<_>>())}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                let w = plan.jobs.iter().map(|j| j.name.len()).max().unwrap_or(3).max(3);
                let sw = plan.jobs.iter().map(|j| j.stage.len()).max().unwrap_or(5).max(5);
                println!("{}", ui.paint("1", &format!("{:<w$}  {:<sw$}  {:<10}  NEEDS", "JOB", "STAGE", "WHEN")));
                for j in &plan.jobs {
                    let needs = match &j.needs {
                        None => "(stage order)".to_string(),
                        Some(n) if n.is_empty() => "[]".to_string(),
                        Some(n) => n.iter().map(|n| n.job.as_str()).collect::<Vec<_>>().join(", "),
                    };
                    println!("{:<w$}  {:<sw$}  {:<10}  {needs}", j.name, j.stage, j.when.as_str());
                }
            }
            Ok(exit::OK)
        }
        Command::Logs { first, second, env, lines, follow, server, token, project } => {
            if let (Some(env), Some(_)) = (&env, &server) {
                if follow {
                    return Err(UserError::new("`-F` is not available for an environment on a server")
                        .hint("leave out -F to print the last lines")
                        .into());
                }
                let on = remote::OnServer { server: server.clone(), token: token.clone(), project: project.clone() };
                let r = on.remote()?.expect("a server was given");
                return remote::env_logs(&r, env, lines, ui);
            }
            if let (Some(server), Some(id), Some(job)) =
                (&server, first.as_deref().and_then(|f| f.parse::<i64>().ok()), &second)
            {
                let remote = servercmd::Remote { server: Some(server.clone()), token: token.clone() };
                return servercmd::logs(id, job, follow, remote);
            }
            if follow && env.is_none() {
                return Err(UserError::new(
                    "`-F` follows an environment's log (`--env ENV`) or a server pipeline's job",
                )
                .hint("`slipway logs --env dev -F`, or `slipway logs PIPELINE JOB -F --server URL`")
                .into());
            }
            if let Some(env) = env {
                let root = project_dir(cli.project_dir)?;
                return deploycmd::logs(&root, &deploycmd::data_dir(cli.data_dir, ui)?, &env, lines, follow, ui);
            }
            let root = project_dir(cli.project_dir)?;
            let first = first.unwrap_or_default();
            let (run, job) = match second {
                Some(job) => (Some(first), job),
                None => (None, first),
            };
            run::print_log(&root, run.as_deref(), &job)
        }
        Command::Deploy(args) => {
            deploycmd::deploy(&project_dir(cli.project_dir)?, &deploycmd::data_dir(cli.data_dir, ui)?, args, ui)
        }
        Command::Promote(args) => {
            deploycmd::promote(&project_dir(cli.project_dir)?, &deploycmd::data_dir(cli.data_dir, ui)?, args, ui)
        }
        Command::Rollback(args) => {
            deploycmd::rollback(&project_dir(cli.project_dir)?, &deploycmd::data_dir(cli.data_dir, ui)?, args, ui)
        }
        Command::Repair(args) => {
            deploycmd::repair(&project_dir(cli.project_dir)?, &deploycmd::data_dir(cli.data_dir, ui)?, args, ui)
        }
        Command::Adopt(args) => {
            deploycmd::adopt(&project_dir(cli.project_dir)?, &deploycmd::data_dir(cli.data_dir, ui)?, args, ui)
        }
        Command::Approve(args) => {
            deploycmd::approve(&project_dir(cli.project_dir)?, &deploycmd::data_dir(cli.data_dir, ui)?, args, ui)
        }
        Command::Status(args) => {
            deploycmd::status(&project_dir(cli.project_dir)?, &deploycmd::data_dir(cli.data_dir, ui)?, args, ui)
        }
        Command::History(args) => {
            deploycmd::history(&project_dir(cli.project_dir)?, &deploycmd::data_dir(cli.data_dir, ui)?, args, ui)
        }
        Command::Agent(args) => {
            let root = project_dir(cli.project_dir).ok();
            deploycmd::agent(root.as_deref(), &deploycmd::data_dir(cli.data_dir, ui)?, args, ui)
        }
        Command::Server(args) => servercmd::server(&deploycmd::data_dir(cli.data_dir, ui)?, args, ui),
        Command::Project { action, remote, json } => servercmd::project(action, remote, json, ui),
        Command::Alerts { action } => alertscmd::alerts(action, ui),
        Command::App { action, remote, json } => appcmd::app(action, remote, json, ui),
        Command::Silence { action, remote, json } => alertscmd::silence(action, remote, json, ui),
        Command::Notifications { limit, remote, json } => alertscmd::notifications(limit, remote, json, ui),
        Command::Login { user, password_stdin, expires, remote, json } => {
            accesscmd::login(remote, user, password_stdin, expires, json)
        }
        Command::Logout { remote } => accesscmd::logout(remote),
        Command::Whoami { remote, json } => accesscmd::whoami(remote, json),
        Command::Token { action, remote, json } => accesscmd::token(action, remote, json, ui),
        Command::User { action, remote, json } => accesscmd::user(action, remote, json, ui),
        Command::Secret { action, project, group, remote, json } => {
            accesscmd::secret(action, project, group, remote, json, ui)
        }
        Command::Audit { action, since, actor, remote, json } => {
            accesscmd::audit(action, since, actor, remote, json, ui)
        }
        Command::Pipelines { project, limit, remote, json } => servercmd::pipelines(project, limit, remote, json, ui),
        Command::Pipeline { action: PipelineAction::Show { id }, remote, json } => {
            servercmd::pipeline_show(id, remote, json, ui)
        }
        Command::Trigger { project, ref_name, vars, wait, remote, json } => {
            servercmd::trigger(project, ref_name, vars, wait, remote, json, ui)
        }
        Command::Cancel { id, remote } => servercmd::cancel(id, remote, ui),
        Command::Schedule { action, remote, json } => servercmd::schedule(action, remote, json, ui),
        Command::Retry { id, job, remote, json } => servercmd::retry(id, job, remote, json, ui),
        Command::Play { id, job, remote, json } => servercmd::play(id, job, remote, json, ui),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
