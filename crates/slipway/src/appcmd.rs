//! `slipway app`: GitOps applications on a server (docs/gitops.md) — add one (slipway's shape
//! or the brief's Argo CD `Application` manifest, or flags), list them with their sync and
//! health status, show one with its diff, sync it now, its sync history, forget it.

use anyhow::Result;
use clap::Subcommand;

use crate::servercmd::{Remote, client, client_error, runtime};
use crate::ui::{Ui, UserError, exit};
use slipway_server::client::Method;

#[derive(Subcommand, Debug)]
pub enum AppAction {
    /// Add an application (or redefine it): from a manifest (`-f app.yaml`: slipway's shape or
    /// an Argo CD `Application`), or from the flags.
    Add {
        /// The manifest (`-` reads stdin).
        #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with_all = ["name", "repo"])]
        file: Option<std::path::PathBuf>,
        #[arg(required_unless_present = "file")]
        name: Option<String>,
        /// The slipway project whose releases it deploys.
        #[arg(long)]
        project: Option<String>,
        /// The config repository (a URL or a path on the server's machine).
        #[arg(long, required_unless_present = "file")]
        repo: Option<String>,
        /// The folder that holds `ENV.yml` (or the file itself).
        #[arg(long, default_value = ".")]
        path: String,
        /// A branch, tag or commit (`HEAD`: the default branch).
        #[arg(long, default_value = "HEAD")]
        revision: String,
        /// The environment it keeps.
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
        /// Sync by itself when the desired state moves.
        #[arg(long)]
        auto: bool,
        /// Repair drift on the targets (with --auto).
        #[arg(long)]
        self_heal: bool,
        /// Remove what runs for the environment but its desired state does not name (a stray
        /// container), when healing (with --auto).
        #[arg(long)]
        prune: bool,
        /// Let an automated sync with --prune retire the environment when its desired file is
        /// deleted (Argo CD's allowEmpty; without it only `slipway app sync` does).
        #[arg(long)]
        allow_empty: bool,
    },
    /// The applications with their sync and health status.
    List,
    /// One application: its source, destination, status and diff.
    Show { name: String },
    /// Fetch and compare now: the diff (exit 0 in sync, 1 out of sync, 2 the desired state cannot be read).
    Diff { name: String },
    /// Sync now (also a commit whose sync failed), then show the status.
    Sync { name: String },
    /// The application's syncs, newest first.
    History { name: String },
    /// Forget the application (what runs stays).
    Delete { name: String },
}

fn manifest_of(action: &AppAction) -> Result<String> {
    let AppAction::Add { file, name, project, repo, path, revision, environment, auto, self_heal, prune, allow_empty } =
        action
    else {
        unreachable!("only add has a manifest")
    };
    if let Some(f) = file {
        let text = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(f)
                .map_err(|e| UserError::new(format!("{}: {e}", f.display())).hint("give -f a readable manifest"))?
        };
        return Ok(text);
    }
    let name = name.clone().unwrap_or_default();
    let v = serde_json::json!({
        "name": name,
        "project": project.clone().unwrap_or_else(|| name.clone()),
        "source": {"repo": repo, "path": path, "revision": revision},
        "destination": {"environment": environment.clone().unwrap_or_else(|| name.clone())},
        "sync_policy": if *auto { serde_json::json!({"automated": {"selfHeal": self_heal, "prune": prune, "allowEmpty": allow_empty}}) } else { serde_json::json!({}) },
    });
    Ok(v.to_string())
}

fn short(c: &serde_json::Value) -> String {
    c.as_str().map(|s| s.chars().take(12).collect()).unwrap_or_default()
}

fn print_status(v: &serde_json::Value) {
    let st = &v["status"];
    let pinned = if st["pinned"] == true { " (pinned)" } else { "" };
    println!(
        "{}: {}{pinned} · {} — {} of {} ({}) → {}",
        v["name"].as_str().unwrap_or(""),
        st["sync"].as_str().unwrap_or(""),
        st["health"].as_str().unwrap_or(""),
        v["path"].as_str().unwrap_or(""),
        v["repo"].as_str().unwrap_or(""),
        v["revision"].as_str().unwrap_or(""),
        v["environment"].as_str().unwrap_or("")
    );
    println!(
        "  desired {} at commit {} · running {}",
        st["desired_version"].as_str().unwrap_or("—"),
        short(&st["commit"]),
        st["running_version"].as_str().unwrap_or("—")
    );
    if let Some(r) = st["reason"].as_str() {
        println!("  {r}");
    }
    for e in st["errors"].as_array().into_iter().flatten() {
        println!("  error: {}", e.as_str().unwrap_or(""));
    }
    for d in st["diff"].as_array().into_iter().flatten() {
        println!("  {}", d.as_str().unwrap_or(""));
    }
    for d in st["drift"].as_array().into_iter().flatten() {
        println!("  drift: {}", d.as_str().unwrap_or(""));
    }
}

pub fn app(action: AppAction, remote: Remote, json: bool, ui: &Ui) -> Result<i32> {
    let c = client(&remote)?;
    runtime()?.block_on(async {
        let one = |name: &str| format!("/api/v1/apps/{name}");
        let shown = |v: &serde_json::Value| -> Result<()> {
            match json {
                true => println!("{}", serde_json::to_string_pretty(v)?),
                false => print_status(v),
            }
            Ok(())
        };
        match &action {
            AppAction::Add { .. } => {
                let text = manifest_of(&action)?;
                let v: serde_json::Value =
                    c.call_text(Method::POST, "/api/v1/apps", &text).await.map_err(client_error)?;
                shown(&v)?;
            }
            AppAction::List => {
                let v: Vec<serde_json::Value> =
                    c.call(Method::GET, "/api/v1/apps", None::<&()>).await.map_err(client_error)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(exit::OK);
                }
                let rows: Vec<[String; 7]> = v
                    .iter()
                    .map(|a| {
                        let st = &a["status"];
                        let f = |x: &serde_json::Value| x.as_str().unwrap_or("—").to_string();
                        let sync = format!("{}{}", f(&st["sync"]), if st["pinned"] == true { " (pinned)" } else { "" });
                        [
                            f(&a["name"]),
                            f(&a["environment"]),
                            sync,
                            f(&st["health"]),
                            f(&st["desired_version"]),
                            f(&st["running_version"]),
                            short(&st["commit"]),
                        ]
                    })
                    .collect();
                crate::ui::print_table(
                    ui,
                    &["NAME", "ENV", "SYNC", "HEALTH", "DESIRED", "RUNNING", "COMMIT"],
                    &rows,
                    |_, _| None,
                );
            }
            AppAction::Show { name } => {
                let v: serde_json::Value = c.call(Method::GET, &one(name), None::<&()>).await.map_err(client_error)?;
                shown(&v)?;
            }
            AppAction::Diff { name } => {
                let v: serde_json::Value =
                    c.call(Method::POST, &format!("{}/refresh", one(name)), None::<&()>).await.map_err(client_error)?;
                shown(&v)?;
                return Ok(match v["status"]["sync"].as_str() {
                    Some("Synced") => exit::OK,
                    Some("OutOfSync") => exit::FAILED,
                    _ => exit::USAGE,
                });
            }
            AppAction::Sync { name } => {
                let v: serde_json::Value =
                    c.call(Method::POST, &format!("{}/sync", one(name)), None::<&()>).await.map_err(client_error)?;
                shown(&v)?;
                if v["status"]["sync"] != "Synced" {
                    return Ok(exit::FAILED);
                }
            }
            AppAction::History { name } => {
                let v: Vec<serde_json::Value> =
                    c.call(Method::GET, &format!("{}/history", one(name)), None::<&()>).await.map_err(client_error)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(exit::OK);
                }
                let rows: Vec<[String; 7]> = v
                    .iter()
                    .map(|x| {
                        let f = |k: &str| x[k].as_str().unwrap_or("").to_string();
                        [
                            f("started_at"),
                            short(&x["commit"]),
                            f("version"),
                            x["release"].as_i64().map(|r| format!("#{r}")).unwrap_or_default(),
                            f("trigger"),
                            f("outcome"),
                            f("detail"),
                        ]
                    })
                    .collect();
                crate::ui::print_table(
                    ui,
                    &["WHEN", "COMMIT", "VERSION", "RELEASE", "TRIGGER", "OUTCOME", "DETAIL"],
                    &rows,
                    |_, _| None,
                );
            }
            AppAction::Delete { name } => {
                c.call_empty(Method::DELETE, &one(name), None::<&()>).await.map_err(client_error)?;
                if !json {
                    println!("application {name} forgotten (what runs stays)");
                }
            }
        }
        Ok(exit::OK)
    })
}
