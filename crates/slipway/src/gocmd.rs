//! `slipway go ...`: Go-aware commands that work on their own in any CI. For now `go test`:
//! a readable live view of `go test -json`, reports (tests.json, JUnit, coverage) and reruns
//! of failed tests with flaky detection.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use slipway_golang::GoError;
use slipway_golang::gotest::{self, Live, TestOptions};
use slipway_golang::test2json::{PackageStatus, Progress};

use crate::ui::{Ui, UserError, exit};

#[derive(Subcommand)]
pub enum GoCommand {
    /// Run `go test -json` with a live view, reports, coverage and reruns of failed tests.
    Test(GoTestArgs),
    /// Build every main package for a platform matrix into dist/ with SHA256SUMS and manifest.json.
    Build(GoBuildArgs),
    /// `go vet` findings and `gofmt -l` findings as a report (exit 1 when there are any).
    Vet(GoVetArgs),
    /// Module checks: `slipway go mod check` (go mod verify and a tidy check).
    Mod {
        #[command(subcommand)]
        command: GoModCommand,
    },
}

#[derive(Args)]
pub struct GoVetArgs {
    /// Package patterns (default `./...`).
    #[arg(value_name = "PACKAGES")]
    pub packages: Vec<String>,
    /// Where vet.json goes.
    #[arg(long, value_name = "DIR", default_value = ".slipway/reports")]
    pub reports: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum GoModCommand {
    /// `go mod verify`, and whether `go mod tidy` would change go.mod/go.sum (with the diff).
    Check {
        /// Where mod.json goes.
        #[arg(long, value_name = "DIR", default_value = ".slipway/reports")]
        reports: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct GoBuildArgs {
    /// Package patterns to look for main packages in (default `./...`).
    #[arg(value_name = "PACKAGES")]
    pub packages: Vec<String>,
    /// Flags passed to `go build` as they are (after `--`).
    #[arg(last = true, value_name = "GO BUILD FLAGS")]
    pub go_flags: Vec<String>,
    /// Platforms as os/arch, comma-separated (default: this machine's), e.g.
    /// `linux/amd64,linux/arm64,darwin/arm64,windows/amd64`.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub platform: Vec<String>,
    /// The version to stamp (default: `git describe --tags --always --dirty`).
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// The variable `-ldflags -X` sets to the version (default `main.version`).
    #[arg(long, value_name = "PKG.VAR")]
    pub version_var: Option<String>,
    /// Output directory.
    #[arg(long, value_name = "DIR", default_value = "dist")]
    pub out: PathBuf,
    /// Build with cgo (CGO_ENABLED=1); the default is CGO_ENABLED=0.
    #[arg(long)]
    pub cgo: bool,
    /// Builds at once (default: the number of CPUs).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Sign SHA256SUMS and manifest.json (SHA256SUMS.sig, manifest.json.sig, as `cosign
    /// sign-blob` writes them) with --key or SLIPWAY_SIGNING_KEY.
    #[arg(long)]
    pub sign: bool,
    #[command(flatten)]
    pub key: crate::signcmd::KeyArg,
    /// Print the manifest as JSON instead of the human view.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct GoTestArgs {
    /// Package patterns (default `./...`).
    #[arg(value_name = "PACKAGES")]
    pub packages: Vec<String>,
    /// Flags passed to `go test` as they are (after `--`), e.g. `-- -race -count=1`.
    #[arg(last = true, value_name = "GO TEST FLAGS")]
    pub go_flags: Vec<String>,
    /// Re-run failed tests up to N times; a test that fails, then passes, is reported flaky.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub rerun_fails: u32,
    /// Also write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Where tests.json, coverage.out and coverage.json go.
    #[arg(long, value_name = "DIR", default_value = ".slipway/reports")]
    pub reports: PathBuf,
    /// Do not collect coverage.
    #[arg(long)]
    pub no_cover: bool,
    /// Test only packages affected by changes since REF (a commit, branch or tag); `auto`:
    /// since `$CI_COMMIT_BEFORE_SHA`, else the merge base with `$CI_DEFAULT_BRANCH`.
    #[arg(long, value_name = "REF")]
    pub changed_since: Option<String>,
    /// Print one JSON object per line instead of the human view (the last is the summary).
    #[arg(long)]
    pub json: bool,
}

fn go_error(e: GoError) -> anyhow::Error {
    match e {
        GoError::GoMissing => UserError::new("the Go toolchain is not installed: no `go` on PATH")
            .hint("install Go 1.22 or newer (https://go.dev/dl), or run `scripts/setup` and `source scripts/env` in a slipway checkout")
            .into(),
        GoError::NotAModule(dir) => UserError::new(format!("{} is not in a Go module (no go.mod here or above)", dir.display()))
            .hint("run it in a Go module, or create one with `go mod init example.com/name`")
            .into(),
        GoError::GoFailed { command, message } => {
            let m = message.trim().to_string();
            let hint = if m.contains("matched no packages")
                || m.contains("no packages to test")
                || m.contains("cannot find")
                || m.contains("is not in std")
                || m.contains("no such file or directory")
            {
                "check the package patterns (e.g. `./...`, `./internal/...`); `go list ./...` shows what exists"
            } else {
                "this is what it printed"
            };
            UserError::new(format!("`{command}` could not run: {m}")).hint(hint).into()
        }
        GoError::Git(m) => UserError::new(format!("--changed-since: {m}"))
            .hint("give a commit, branch or tag that exists, e.g. `--changed-since origin/main`")
            .into(),
        GoError::Io(m) => anyhow::anyhow!(m),
        GoError::Invalid(m) => UserError::new(m).into(),
    }
}

fn go_version() -> Result<String> {
    slipway_golang::toolchain(Path::new(".")).map_err(|old| match old {
        Some(v) => UserError::new(format!("{v} is too old: slipway needs Go 1.21 or newer"))
            .hint("install a newer Go from https://go.dev/dl")
            .into(),
        None => go_error(GoError::GoMissing),
    })
}

pub fn run(root: &Path, cmd: GoCommand, ui: &Ui) -> Result<i32> {
    match cmd {
        GoCommand::Test(args) => test(root, args, ui),
        GoCommand::Build(args) => build(root, args, ui),
        GoCommand::Vet(args) => vet(root, args, ui),
        GoCommand::Mod { command: GoModCommand::Check { reports, json } } => mod_check(root, &reports, json, ui),
    }
}

/// `--changed-since auto`: see `slipway_git::change_base`; everything is tested without one.
fn auto_base(module: &Path, ui: &Ui) -> Option<String> {
    let base = slipway_git::change_base(module);
    if base.is_none() && !ui.json {
        eprintln!("{}", ui.paint("2", "--changed-since auto: no base commit known; testing everything"));
    }
    base
}

fn reports_dir(root: &Path, reports: &Path) -> Result<PathBuf> {
    let dir = if reports.is_absolute() { reports.to_path_buf() } else { root.join(reports) };
    // Reports under .slipway/ must not show up as changes to git (or to Go's VCS stamping).
    if let Some(state) = dir.ancestors().find(|a| a.file_name().is_some_and(|n| n == ".slipway")) {
        slipway_runner::record::StateDir::of(state.parent().unwrap_or(state))?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn vet(root: &Path, args: GoVetArgs, ui: &Ui) -> Result<i32> {
    let module = slipway_golang::module_root(root).map_err(go_error)?;
    go_version()?;
    let report = slipway_golang::vet::vet(&module, &args.packages).map_err(go_error)?;
    let dir = reports_dir(root, &args.reports)?;
    std::fs::write(dir.join("vet.json"), serde_json::to_vec_pretty(&report)?)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            println!(
                "{}:{}:{}: {} {}",
                f.file,
                f.line,
                f.column,
                f.message,
                ui.paint("2", &format!("({})", f.analyzer))
            );
        }
        for e in &report.errors {
            println!("{} {e}", ui.paint("31;1", "error:"));
        }
        for f in &report.unformatted {
            println!("{f}: {}", ui.paint("33", "not gofmt-formatted (run gofmt -w)"));
        }
        if !report.format_diff.is_empty() {
            println!("{}", ui.paint("2", &report.format_diff));
            println!(
                "{}",
                ui.paint(
                    "33",
                    "warning: formatting is not a vet finding; to fail on it, set `gates: {vet: {unformatted: 0}}`"
                )
            );
        }
        let verdict = if report.clean() { ui.paint("32;1", "ok") } else { ui.paint("31;1", "FAIL") };
        println!(
            "{verdict}: {} vet finding(s), {} unformatted file(s), {} package error(s)",
            report.findings.len(),
            report.unformatted.len(),
            report.errors.len()
        );
    }
    Ok(if report.clean() { exit::OK } else { exit::FAILED })
}

fn mod_check(root: &Path, reports: &Path, json: bool, ui: &Ui) -> Result<i32> {
    let module = slipway_golang::module_root(root).map_err(go_error)?;
    go_version()?;
    let report = slipway_golang::vet::mod_check(&module).map_err(go_error)?;
    let dir = reports_dir(root, reports)?;
    std::fs::write(dir.join("mod.json"), serde_json::to_vec_pretty(&report)?)?;
    let ok = report.verified && report.tidy;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if report.vendored {
            println!("{} {}", ui.paint("32", "ok  "), report.verify_output);
            if report.tidy {
                println!("{} vendor/ matches go.mod", ui.paint("32", "ok  "));
            } else {
                println!(
                    "{} vendor/ does not match go.mod (run `go mod vendor`):\n{}",
                    ui.paint("31;1", "FAIL"),
                    report.tidy_diff.trim_end()
                );
            }
        } else if report.verified {
            println!("{} go mod verify: {}", ui.paint("32", "ok  "), report.verify_output);
        } else {
            println!("{} go mod verify:\n{}", ui.paint("31;1", "FAIL"), report.verify_output);
        }
        if report.vendored {
            // Said above: vendor/ is the module's tidiness.
        } else if report.tidy {
            println!("{} go.mod and go.sum are tidy", ui.paint("32", "ok  "));
        } else {
            println!(
                "{} go mod tidy would change go.mod/go.sum:\n{}",
                ui.paint("31;1", "FAIL"),
                report.tidy_diff.trim_end()
            );
        }
    }
    Ok(if ok { exit::OK } else { exit::FAILED })
}

fn build(root: &Path, mut args: GoBuildArgs, ui: &Ui) -> Result<i32> {
    use slipway_golang::build::{self, BuildEvent, BuildOptions};
    let module = slipway_golang::module_root(root).map_err(go_error)?;
    // The pipeline file's `go:` section gives the defaults; flags win.
    if crate::project::find_source(root, None).is_ok() {
        let loaded = crate::project::load(root, None, ui)?;
        if let Some(g) = loaded.pipeline.go {
            if args.packages.is_empty() {
                args.packages = g.packages;
            }
            if args.platform.is_empty() {
                args.platform = g.platforms;
            }
            if args.version_var.is_none() {
                args.version_var = g.version_var;
            }
            args.cgo |= g.cgo.unwrap_or(false);
        }
    }
    // The key opens first: a wrong passphrase fails before minutes of building.
    let signer = if args.sign { Some(crate::signcmd::signing_key(&args.key)?) } else { None };
    go_version()?;
    let platforms = build::resolve_platforms(&module, &args.platform).map_err(|u| match u.error {
        Some(e) => go_error(e),
        None => {
            let e = UserError::new(format!("unknown platform `{}`", u.given));
            match slipway_pipeline::diag::did_you_mean(&u.given, u.known.iter().map(String::as_str)) {
                Some(s) => e.hint(format!("did you mean `{s}`? (`go tool dist list` shows them all)")),
                None => e.hint("platforms are os/arch as `go tool dist list` prints them, e.g. linux/amd64"),
            }
            .into()
        }
    })?;
    let packages = build::main_packages(&module, &args.packages).map_err(go_error)?;
    if packages.is_empty() {
        // A library: compile everything, for every platform; there is nothing to ship.
        return match build::compile(&module, &args.packages, &platforms, args.cgo, &args.go_flags) {
            Ok(n) => {
                if args.json {
                    println!("{}", serde_json::json!({"binaries": 0, "compiled_packages": n, "library": true}));
                } else {
                    println!(
                        "{} compiled {n} package(s) for {} platform(s); no main package, so no binaries (a library)",
                        ui.paint("32", "ok"),
                        platforms.len()
                    );
                }
                Ok(exit::OK)
            }
            Err(GoError::GoFailed { command, message }) => {
                eprintln!("{}: `{command}` failed\n{message}", ui.paint("31;1", "error"));
                Ok(exit::FAILED)
            }
            Err(e) => Err(go_error(e)),
        };
    }
    let version = args.version.clone().unwrap_or_else(|| build::default_version(&module));
    let out_dir = if args.out.is_absolute() { args.out.clone() } else { root.join(&args.out) };
    std::fs::create_dir_all(&out_dir)?;
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let total = packages.len() * platforms.len();
    if !args.json {
        eprintln!(
            "{}",
            ui.paint(
                "2",
                &format!(
                    "building {} binar{} for {} platform{} ({} at a time), version {version}",
                    packages.len(),
                    if packages.len() == 1 { "y" } else { "ies" },
                    platforms.len(),
                    if platforms.len() == 1 { "" } else { "s" },
                    jobs.min(total)
                )
            )
        );
    }
    let opts = BuildOptions {
        dir: module.clone(),
        packages,
        platforms,
        version,
        version_var: args.version_var.clone().unwrap_or_else(|| "main.version".into()),
        out_dir: out_dir.clone(),
        cgo: args.cgo,
        jobs,
        extra_flags: args.go_flags.clone(),
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    let json = args.json;
    let on = |ev: BuildEvent| {
        if json {
            return;
        }
        match ev {
            BuildEvent::Started { .. } => {}
            BuildEvent::Finished { artifact, seconds } => {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                println!(
                    "[{n}/{total}] {} {}  {:.1} MB  {seconds:.1}s",
                    ui.paint("32", "ok"),
                    artifact.file,
                    artifact.size as f64 / 1_048_576.0
                );
            }
            BuildEvent::Failed { package, platform, .. } => {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                println!("[{n}/{total}] {} {package} for {platform}", ui.paint("31;1", "FAIL"));
            }
        }
    };
    match build::build(&opts, &on) {
        Ok(m) => {
            // Stale signatures never stay beside new files: signed again, or removed.
            for f in ["SHA256SUMS", "manifest.json"] {
                let file = out_dir.join(f);
                let sig = crate::signcmd::sig_path(&file);
                match &signer {
                    Some(k) => {
                        let bytes = std::fs::read(&file)?;
                        let s = slipway_oci::signature::sign_blob(k, &bytes).map_err(crate::imagecmd::oci_error)?;
                        std::fs::write(&sig, s)?;
                    }
                    None => {
                        let _ = std::fs::remove_file(&sig);
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!(
                    "{}",
                    ui.paint(
                        "2",
                        &format!(
                            "wrote {} binar{}, SHA256SUMS and manifest.json{} to {}",
                            m.artifacts.len(),
                            if m.artifacts.len() == 1 { "y" } else { "ies" },
                            if signer.is_some() { " (signed)" } else { "" },
                            out_dir.strip_prefix(root).unwrap_or(&out_dir).display()
                        )
                    )
                );
            }
            Ok(exit::OK)
        }
        Err(GoError::GoFailed { message, .. }) => {
            eprintln!(
                "{}: the build failed; {} is unchanged\n{message}",
                ui.paint("31;1", "error"),
                out_dir.strip_prefix(root).unwrap_or(&out_dir).display()
            );
            Ok(exit::FAILED)
        }
        Err(e) => Err(go_error(e)),
    }
}

fn emit(v: serde_json::Value) {
    let _ = writeln!(std::io::stdout().lock(), "{v}");
}

fn test(root: &Path, args: GoTestArgs, ui: &Ui) -> Result<i32> {
    let module = slipway_golang::module_root(root).map_err(go_error)?;
    let version = go_version()?;
    let reports = reports_dir(root, &args.reports)?;
    let profile_path = reports.join("coverage.out");
    let _ = std::fs::remove_file(&profile_path);
    let opts = TestOptions {
        dir: module.clone(),
        packages: args.packages.clone(),
        go_flags: args.go_flags.clone(),
        coverprofile: (!args.no_cover).then(|| profile_path.clone()),
        rerun_fails: args.rerun_fails,
        changed_since: match args.changed_since.as_deref() {
            Some("auto") => auto_base(&module, ui),
            other => other.map(str::to_string),
        },
    };
    if !ui.json {
        eprintln!("{}", ui.paint("2", &format!("go test ({version}) in {}", module.display())));
    }
    let json = ui.json;
    let mut live = |l: Live| match l {
        Live::Progress(Progress::PackageDone(p)) => {
            if json {
                emit(
                    serde_json::json!({"event": "package", "name": p.name, "status": p.status.as_str(), "elapsed_ms": (p.elapsed_s * 1000.0) as u64, "coverage": p.coverage}),
                );
                return;
            }
            let (word, code) = match p.status {
                PackageStatus::Ok => ("ok  ", "32"),
                PackageStatus::Fail => ("FAIL", "31;1"),
                PackageStatus::BuildFailed => ("FAIL", "31;1"),
                PackageStatus::NoTests => ("?   ", "2"),
                PackageStatus::SkippedUnaffected => ("skip", "2"),
            };
            let mut line = format!("{} {}", ui.paint(code, word), p.name);
            match p.status {
                PackageStatus::BuildFailed => line.push_str(&format!("  {}", ui.paint("31", "[build failed]"))),
                PackageStatus::NoTests => line.push_str(&ui.paint("2", "  [no tests]")),
                _ => line.push_str(&format!("  {:.2}s", p.elapsed_s)),
            }
            if let Some(c) = p.coverage {
                line.push_str(&format!("  coverage {c:.1}%"));
            }
            println!("{line}");
            if p.status == PackageStatus::BuildFailed {
                for l in p.output.iter().filter(|l| !l.starts_with("FAIL\t")) {
                    println!("    {l}");
                }
            }
        }
        Live::Progress(Progress::TestFailed(t)) => {
            if json {
                emit(
                    serde_json::json!({"event": "test_failed", "package": t.package, "test": t.name, "reason": t.reason, "output": t.output}),
                );
                return;
            }
            let why = t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            println!("{} {}.{}{why}", ui.paint("31;1", "--- FAIL"), t.package, t.name);
            for l in t.output.iter().filter(|l| !l.starts_with("=== RUN") && !l.starts_with("--- FAIL")) {
                println!("    {l}");
            }
        }
        Live::Rerun { attempt, tests } => {
            if json {
                emit(serde_json::json!({"event": "rerun", "attempt": attempt, "tests": tests}));
            } else {
                println!("{}", ui.paint("33", &format!("re-running {tests} failed test(s), attempt {attempt}")));
            }
        }
        Live::Selected(sel) => {
            if json {
                let skipped: Vec<serde_json::Value> =
                    sel.skipped.iter().map(|(p, why)| serde_json::json!({"package": p, "why": why})).collect();
                emit(
                    serde_json::json!({"event": "selection", "tested": sel.affected, "skipped": skipped, "everything": sel.everything}),
                );
            } else if let Some(why) = &sel.everything {
                println!("{}", ui.paint("2", &format!("testing everything: {why}")));
            } else {
                println!(
                    "{}",
                    ui.paint(
                        "2",
                        &format!(
                            "testing {} affected package(s); skipping {} unaffected:",
                            sel.affected.len(),
                            sel.skipped.len()
                        )
                    )
                );
                for (p, why) in &sel.skipped {
                    println!("{}", ui.paint("2", &format!("  skip {p} ({why})")));
                }
            }
        }
        Live::Flaky { package, test } => {
            if json {
                emit(serde_json::json!({"event": "flaky", "package": package, "test": test}));
            } else {
                println!("{} {package}.{test} (failed, then passed)", ui.paint("33;1", "FLAKY"));
            }
        }
    };
    let run = gotest::run(&opts, &mut live).map_err(go_error)?;
    let junit = args.junit.as_ref().map(|j| if j.is_absolute() { j.clone() } else { root.join(j) });
    let total = gotest::write_reports(&module, &run, &reports, junit.as_deref()).map_err(go_error)?;
    let report = run.report;
    let s = report.summary();
    if json {
        let packages: Vec<serde_json::Value> =
            report.packages.iter().map(|p| serde_json::json!({"name": p.name, "status": p.status.as_str()})).collect();
        emit(serde_json::json!({
            "event": "summary",
            "passed": s.passed,
            "failed": s.failed,
            "skipped": s.skipped,
            "flaky": s.flaky,
            "coverage": {"total": total.map(|t| (t * 10.0).round() / 10.0)},
            "packages": packages,
            "duration_ms": (s.duration_s * 1000.0) as u64,
        }));
    } else {
        for l in run.stray.iter().filter(|l| !l.trim().is_empty()) {
            eprintln!("{}", ui.paint("2", l));
        }
        let slow = report.slowest(5);
        if !slow.is_empty() {
            println!("\n{}", ui.paint("1", "slowest tests"));
            for t in slow {
                println!("  {:>7.2}s  {}.{}", t.elapsed_s, t.package, t.name);
            }
        }
        let cov = total.map(|t| format!(", coverage {t:.1}%")).unwrap_or_default();
        let unaffected_count = report.packages.iter().filter(|p| p.status == PackageStatus::SkippedUnaffected).count();
        let unaffected =
            if unaffected_count > 0 { format!(" ({unaffected_count} unaffected, skipped)") } else { String::new() };
        let verdict = if report.failed() { ui.paint("31;1", "FAIL") } else { ui.paint("32;1", "PASS") };
        println!(
            "\n{verdict}: {} passed, {} failed, {} skipped, {} flaky in {} packages{unaffected}{cov} ({:.1}s)",
            s.passed,
            s.failed,
            s.skipped,
            s.flaky,
            s.packages - unaffected_count,
            s.duration_s
        );
        println!(
            "{}",
            ui.paint("2", &format!("reports: {}", reports.strip_prefix(root).unwrap_or(&reports).display()))
        );
    }
    Ok(if report.failed() { exit::FAILED } else { exit::OK })
}
