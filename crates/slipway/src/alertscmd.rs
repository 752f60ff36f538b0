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
