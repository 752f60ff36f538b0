//! `slipway gate`: the quality gates of the pipeline file's `gates:` section (or flags)
//! evaluated over the reports of `slipway go test|vet|mod check|build`; a table of gate,
//! actual, threshold, result and blame; exit 1 when a gate fails.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use slipway_golang::gate::{self, GateConfig, GateError, ReportFiles};

use crate::project;
use crate::ui::{Ui, UserError, exit};

#[derive(Args)]
pub struct GateArgs {
    /// Pipeline file whose `gates:` section to use (default: the project's pipeline file).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Where the reports are (tests.json, coverage.json, vet.json, mod.json).
    #[arg(long, value_name = "DIR", default_value = ".slipway/reports")]
    pub reports: PathBuf,
    /// Where `slipway go build` wrote manifest.json.
    #[arg(long, value_name = "DIR", default_value = "dist")]
    pub dist: PathBuf,
    /// Minimum total coverage, percent.
    #[arg(long, value_name = "PERCENT")]
    pub coverage_min: Option<f64>,
    /// Minimum coverage of every package, percent.
    #[arg(long, value_name = "PERCENT")]
    pub coverage_package_min: Option<f64>,
    /// Maximum failed tests.
    #[arg(long, value_name = "N")]
    pub max_failed: Option<u64>,
    /// Minimum pass rate, percent.
    #[arg(long, value_name = "PERCENT")]
    pub min_pass_rate: Option<f64>,
    /// Maximum flaky tests.
    #[arg(long, value_name = "N")]
    pub max_flaky: Option<u64>,
    /// Maximum `go vet` findings.
    #[arg(long, value_name = "N")]
    pub max_vet: Option<u64>,
    /// Maximum files gofmt would change.
    #[arg(long, value_name = "N")]
    pub max_unformatted: Option<u64>,
    /// The module must be tidy and verified.
    #[arg(long)]
    pub tidy: bool,
    /// Total coverage must not drop below the last passing run on the default branch.
    #[arg(long)]
    pub coverage_no_drop: bool,
    /// Maximum size of each built binary (e.g. 20MB).
    #[arg(long, value_name = "SIZE")]
    pub max_binary_size: Option<String>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

fn percent(v: Option<f64>, flag: &str) -> Result<Option<f64>> {
    match v {
        Some(p) if !(0.0..=100.0).contains(&p) => {
            Err(UserError::new(format!("{flag} must be between 0 and 100, got {p}")).into())
        }
        other => Ok(other),
    }
}

pub fn run(root: &Path, args: GateArgs, ui: &Ui) -> Result<i32> {
    // The file's gates first (when there is a pipeline), then the flags on top.
    let mut cfg = GateConfig::default();
    if args.file.is_some() || project::find_source(root, None).is_ok() {
        let loaded = project::load(root, args.file.as_deref(), ui)?;
        if let Some(g) = &loaded.pipeline.gates {
            cfg = GateConfig::from(g);
        }
    }
    let overrides = [
        (percent(args.coverage_min, "--coverage-min")?, &mut cfg.limits.coverage_total),
        (percent(args.coverage_package_min, "--coverage-package-min")?, &mut cfg.limits.coverage_per_package),
        (percent(args.min_pass_rate, "--min-pass-rate")?, &mut cfg.limits.pass_rate),
    ];
    for (v, slot) in overrides {
        if v.is_some() {
            *slot = v;
        }
    }
    for (v, slot) in [
        (args.max_failed, &mut cfg.limits.tests_failed),
        (args.max_flaky, &mut cfg.limits.flaky),
        (args.max_vet, &mut cfg.limits.vet_findings),
        (args.max_unformatted, &mut cfg.limits.unformatted),
    ] {
        if v.is_some() {
            *slot = v;
        }
    }
    cfg.limits.mod_tidy |= args.tidy;
    cfg.limits.coverage_no_decrease |= args.coverage_no_drop;
    // The coverage baseline lives with the project's runs: in a pipeline job the runner says
    // where (SLIPWAY_STATE_DIR); on its own, the project's .slipway.
    let state_dir = std::env::var_os("SLIPWAY_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| root.join(".slipway"));
    if cfg.limits.coverage_no_decrease {
        cfg.baseline = gate::read_baseline(&state_dir);
    }
    if let Some(s) = &args.max_binary_size {
        cfg.limits.binary_size = Some(
            slipway_pipeline::duration::parse_size(s)
                .map_err(|e| UserError::new(format!("--max-binary-size: {e}")).hint("write sizes like 20MB"))?,
        );
    }
    if cfg == GateConfig::default() {
        return Err(UserError::new("no quality gate is configured")
            .hint("add a `gates:` section to the pipeline file (e.g. `gates: {coverage: {total: 70}}`) or pass a flag like --coverage-min 70")
            .into());
    }
    let reports = if args.reports.is_absolute() { args.reports.clone() } else { root.join(&args.reports) };
    let dist = if args.dist.is_absolute() { args.dist.clone() } else { root.join(&args.dist) };
    let results = gate::evaluate(&cfg, &ReportFiles::in_dirs(&reports, &dist)).map_err(|e| match e {
        GateError::Missing { gate, file, producer } => UserError::new(format!(
            "gate `{gate}` needs {}, which no job produced",
            file.strip_prefix(root).unwrap_or(&file).display()
        ))
        .hint(format!(
            "run `{producer}` first (in a pipeline, keep its report as an artifact of a job this one needs)"
        )),
        GateError::Foreign { file, what, reason } => {
            UserError::new(format!("{} is not a {what} report: {reason}", file.display()))
                .hint("point --reports at the directory `slipway go test` wrote")
        }
    })?;
    let failed = results.iter().filter(|r| !r.passed).count();
    // A passing run on the default branch becomes the new coverage baseline.
    let files = ReportFiles::in_dirs(&reports, &dist);
    let baseline_note = (failed == 0)
        .then(|| gate::record_baseline(root, &state_dir, &files))
        .flatten()
        .map(|total| format!("coverage baseline for the default branch: {total:.1}%"));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"passed": failed == 0, "gates": results}))?);
    } else {
        let w0 = results.iter().map(|r| r.gate.len()).max().unwrap_or(4).max(4);
        let w1 = results.iter().map(|r| r.actual.chars().count()).max().unwrap_or(6).max(6);
        let w2 = results.iter().map(|r| r.threshold.chars().count()).max().unwrap_or(9).max(9);
        println!("{}", ui.paint("1", &format!("{:<w0$}  {:<w1$}  {:<w2$}  RESULT", "GATE", "ACTUAL", "THRESHOLD")));
        for r in &results {
            let verdict = if r.passed { ui.paint("32", "pass") } else { ui.paint("31;1", "FAIL") };
            println!("{:<w0$}  {:<w1$}  {:<w2$}  {verdict}", r.gate, r.actual, r.threshold);
            for b in r.blame.iter().take(10) {
                println!("{}", ui.paint("2", &format!("    {b}")));
            }
            if r.blame.len() > 10 {
                println!("{}", ui.paint("2", &format!("    … and {} more", r.blame.len() - 10)));
            }
        }
        if failed > 0 {
            println!("\n{}", ui.paint("31;1", &format!("{failed} of {} gates failed", results.len())));
        } else {
            println!("\n{}", ui.paint("32;1", &format!("all {} gates passed", results.len())));
        }
    }
    if let Some(n) = baseline_note
        && !args.json
    {
        println!("{}", ui.paint("2", &n));
    }
    Ok(if failed > 0 { exit::FAILED } else { exit::OK })
}
