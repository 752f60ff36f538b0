//! `slipway alerts check|test`: Prometheus rule files checked with every error at its place
//! (as `promtool check rules`), and promtool's rule-test files run on slipway's evaluator (as
//! `promtool test rules`) — the same files work with both.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;

use crate::ui::{Ui, UserError, exit};

#[derive(Subcommand)]
pub enum AlertsAction {
    /// Check rule files: every error with file:line:col (exit 2), else the rules found.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run promtool rule-test files (`rule_files`, `input_series`, `alert_rule_test`).
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print each file again with what slipway evaluated as the expectations, at every
        /// evaluation step up to its last `eval_time` (run that with `promtool test rules`).
        #[arg(long)]
        record: bool,
    },
}

fn load(path: &Path, ui: &Ui) -> Result<slipway_monitor::rules::RuleFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UserError::new(format!("{}: {e}", path.display())).hint("give a readable rule file"))?;
    let mut sources = slipway_pipeline::SourceMap::default();
    match slipway_pipeline::load_rules(path, &text, &mut sources) {
        Ok(r) => Ok(r),
        Err(diags) => {
            for d in &diags {
                ui.diagnostic(&sources, d);
            }
            let n = diags.iter().filter(|d| d.severity == slipway_pipeline::Severity::Error).count();
            Err(UserError::new(format!("{}: {n} error(s)", path.display())).into())
        }
    }
}

pub fn alerts(action: AlertsAction, ui: &Ui) -> Result<i32> {
    match action {
        AlertsAction::Check { files } => {
            for f in &files {
                let r = load(f, ui)?;
                let n: usize = r.groups.iter().map(|g| g.rules.len()).sum();
                println!("{}: {} group(s), {n} rule(s)", f.display(), r.groups.len());
            }
            Ok(exit::OK)
        }
        AlertsAction::Test { files, record } => {
            let mut failed = false;
            for f in &files {
                if !record {
                    println!("Unit Testing: {}", f.display());
                }
                let text = std::fs::read_to_string(f).map_err(|e| UserError::new(format!("{}: {e}", f.display())))?;
                let mut sources = slipway_pipeline::SourceMap::default();
                let id = sources.add(f, text.clone());
                let root = match slipway_pipeline::yaml::parse(&text, id) {
                    Ok(r) => r,
                    Err(diags) => {
                        for d in &diags {
                            ui.diagnostic(&sources, d);
                        }
                        return Err(UserError::new(format!("{} is not YAML", f.display())).into());
                    }
                };
                let test: slipway_monitor::unittest::TestFile =
                    serde_json::from_value(slipway_pipeline::yaml::to_json(&root)).map_err(|e| {
                        UserError::new(format!("{}: {e}", f.display()))
                            .hint("promtool's rule-test format (`promtool test rules`)")
                    })?;
                let dir = f.parent().unwrap_or(Path::new("."));
                let mut rules = slipway_monitor::rules::RuleFile { groups: Vec::new() };
                for r in &test.rule_files {
                    rules.groups.extend(load(&dir.join(r), ui)?.groups);
                }
                if record {
                    let out = slipway_monitor::unittest::record(&test, &rules)
                        .map_err(|e| UserError::new(format!("{}: {e}", f.display())))?;
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    continue;
                }
                let failures = slipway_monitor::unittest::run(&test, &rules)
                    .map_err(|e| UserError::new(format!("{}: {e}", f.display())))?;
                if failures.is_empty() {
                    println!("  SUCCESS");
                } else {
                    failed = true;
                    println!("  FAILED:");
                    for x in &failures {
                        println!("    {x}");
                    }
                }
            }
            Ok(if failed { exit::FAILED } else { exit::OK })
        }
    }
}

#[derive(Subcommand)]
pub enum SilenceAction {
    /// Mute the alerts every matcher matches (`alertname=InstanceDown`, `env=~"prod|stg"`).
    Add {
        #[arg(required = true, value_name = "MATCHER")]
        matchers: Vec<String>,
        /// How long (`2h`, `30m`).
        #[arg(long = "for", value_name = "DURATION", default_value = "1h")]
        duration: String,
        /// Why (required, as Alertmanager's).
        #[arg(long)]
        comment: String,
        /// Only this project's alerts (needs `rollback:environments` on it alone).
        #[arg(long)]
        project: Option<String>,
    },
    /// Active and pending silences (`--expired`: and those that ended in the last day).
    List {
        #[arg(long)]
        expired: bool,
    },
    /// End a silence now.
    Expire { id: String },
}

fn matcher_json(text: &str) -> Result<serde_json::Value> {
    use slipway_monitor::notify::{MatchOp, Matcher};
    let m = Matcher::parse(text).map_err(|why| UserError::new(format!("matcher {why}")))?;
    Ok(serde_json::json!({
        "name": m.name,
        "value": m.value,
        "isRegex": matches!(m.op, MatchOp::Re | MatchOp::Nre),
        "isEqual": matches!(m.op, MatchOp::Eq | MatchOp::Re),
    }))
}

fn matchers_text(v: &serde_json::Value) -> String {
    let list: Vec<String> = v["matchers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let op = match (m["isRegex"].as_bool() == Some(true), m["isEqual"].as_bool() != Some(false)) {
                        (false, true) => "=",
                        (false, false) => "!=",
                        (true, true) => "=~",
                        (true, false) => "!~",
                    };
                    format!("{}{op}{:?}", m["name"].as_str().unwrap_or(""), m["value"].as_str().unwrap_or(""))
                })
                .collect()
        })
        .unwrap_or_default();
    list.join(" ")
}

pub fn silence(action: SilenceAction, remote: crate::servercmd::Remote, json: bool, ui: &Ui) -> Result<i32> {
    use crate::servercmd::{client, client_error, runtime};
    let c = client(&remote)?;
    runtime()?.block_on(async {
        match action {
            SilenceAction::Add { matchers, duration, comment, project } => {
                let list = matchers.iter().map(|m| matcher_json(m)).collect::<Result<Vec<_>>>()?;
                let body = serde_json::json!({"matchers": list, "duration": duration, "comment": comment});
                let path = match &project {
                    Some(p) => format!("/api/v1/projects/{}/silences", p.replace('%', "%25").replace('/', "%2F")),
                    None => "/api/v1/silences".into(),
                };
                let v: serde_json::Value =
                    c.call(slipway_server::client::Method::POST, &path, Some(&body)).await.map_err(client_error)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "silence {} until {}: {}",
                        v["id"].as_str().unwrap_or(""),
                        v["endsAt"].as_str().unwrap_or(""),
                        matchers_text(&v)
                    );
                }
            }
            SilenceAction::List { expired } => {
                let path = format!("/api/v1/silences?expired={expired}");
                let v: Vec<serde_json::Value> =
                    c.call(slipway_server::client::Method::GET, &path, None::<&()>).await.map_err(client_error)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(exit::OK);
                }
                let rows: Vec<[String; 6]> = v
                    .iter()
                    .map(|s| {
                        let f = |k: &str| s[k].as_str().unwrap_or("").to_string();
                        [
                            f("id"),
                            s["status"]["state"].as_str().unwrap_or("").into(),
                            f("endsAt"),
                            f("createdBy"),
                            matchers_text(s),
                            f("comment"),
                        ]
                    })
                    .collect();
                crate::ui::print_table(ui, &["ID", "STATE", "ENDS", "BY", "MATCHERS", "COMMENT"], &rows, |_, _| None);
            }
            SilenceAction::Expire { id } => {
                c.call_empty(slipway_server::client::Method::DELETE, &format!("/api/v1/silences/{id}"), None::<&()>)
                    .await
                    .map_err(client_error)?;
                if !json {
                    println!("silence {id} ended");
                }
            }
        }
        Ok(exit::OK)
    })
}

/// `slipway notifications`: the delivery log, newest first.
pub fn notifications(limit: u32, remote: crate::servercmd::Remote, json: bool, ui: &Ui) -> Result<i32> {
    use crate::servercmd::{client, client_error, runtime};
    let c = client(&remote)?;
    runtime()?.block_on(async {
        let path = format!("/api/v1/notifications?limit={limit}");
        let v: Vec<serde_json::Value> =
            c.call(slipway_server::client::Method::GET, &path, None::<&()>).await.map_err(client_error)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(exit::OK);
        }
        let rows: Vec<[String; 7]> = v
            .iter()
            .map(|d| {
                let f = |k: &str| d[k].as_str().unwrap_or("").to_string();
                let alerts: Vec<&str> =
                    d["alerts"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
                let status = match (f("status").as_str(), d["attempts"].as_i64().unwrap_or(0)) {
                    ("queued", n) if n > 0 => format!("retrying ({n} attempts)"),
                    (s, _) => s.to_string(),
                };
                [
                    d["id"].to_string(),
                    f("created_at"),
                    format!("{}/{}", f("receiver"), f("channel")),
                    f("state"),
                    alerts.join(", "),
                    status,
                    f("last_error"),
                ]
            })
            .collect();
        crate::ui::print_table(ui, &["ID", "AT", "TO", "STATE", "ALERTS", "STATUS", "LAST ERROR"], &rows, |_, _| None);
        Ok(exit::OK)
    })
}
