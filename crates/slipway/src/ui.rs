//! Terminal conventions: colour only on a terminal and never with `NO_COLOR`, diagnostics on
//! stderr, user errors with a hint and exit code 2, and the two run reporters (human, JSON).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use slipway_model::event::{RunEvent, Stamped};
use slipway_model::run::{JobState, PipelineStatus};
use slipway_pipeline::duration::human;
use slipway_pipeline::plan::Plan;
use slipway_pipeline::{Diagnostic, SourceMap};
use slipway_runner::{RunResult, Sink};

/// Exit codes (documented in docs/cli.md).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    /// `status`: an environment needs attention (degraded, failed, interrupted, drift, …).
    pub const ATTENTION: i32 = 6;
    pub const CANCELED: i32 = 130;
}

/// A mistake of the user's (bad input, missing file): printed with a hint, exit code 2.
#[derive(Debug)]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
    /// Structured details for `--json` (the diagnostics), already shown on stderr.
    pub details: Option<Vec<serde_json::Value>>,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> UserError {
        UserError { message: message.into(), hint: None, details: None }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> UserError {
        self.hint = Some(hint.into());
        self
    }
    pub fn silent_detail(mut self, details: Vec<serde_json::Value>) -> UserError {
        self.details = Some(details);
        self
    }
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Clone)]
pub struct Ui {
    /// Colour on stderr/stdout.
    pub color: bool,
    pub json: bool,
}

impl Ui {
    pub fn new(choice: ColorChoice, json: bool) -> Ui {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                !no_color && std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
            }
        };
        Ui { color, json }
    }

    pub fn paint(&self, code: &str, s: &str) -> String {
        if self.color { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }

    pub fn diagnostic(&self, sources: &SourceMap, d: &Diagnostic) {
        eprint!("{}", sources.render(d, self.color));
        eprintln!();
    }

    pub fn error(&self, e: &UserError) {
        eprintln!("{}: {}", self.paint("31;1", "error"), e.message);
        if let Some(h) = &e.hint {
            eprintln!("  {} {}", self.paint("34;1", "help:"), h);
        }
    }

    pub fn notice(&self, msg: &str) {
        eprintln!("{}", self.paint("33", msg));
    }
}

const PALETTE: &[&str] = &["36", "35", "32", "34", "33", "96", "95", "92", "94", "93"];

fn status_word(s: JobState) -> &'static str {
    match s {
        JobState::Success => "passed",
        JobState::Failed => "failed",
        JobState::AllowedFailure => "failed (allowed)",
        JobState::Skipped => "skipped",
        JobState::Manual => "manual",
        JobState::Canceled => "canceled",
        _ => "running",
    }
}

/// The human view: live output prefixed with the job name; on a terminal, a status line at
/// the bottom shows the running jobs and the elapsed time.
pub struct HumanReporter {
    ui: Ui,
    width: usize,
    names: Vec<String>,
    /// Job name → its place in the plan (its colour).
    index: HashMap<String, usize>,
    /// Draw the status line (stdout is a terminal).
    status_line: bool,
    shown: bool,
    running: Vec<usize>,
    done: usize,
    started: std::time::Instant,
}

impl HumanReporter {
    pub fn new(ui: &Ui, plan: &Plan) -> HumanReporter {
        let width = plan.jobs.iter().map(|j| j.name.chars().count()).max().unwrap_or(4).min(28);
        HumanReporter {
            ui: ui.clone(),
            width,
            names: plan.jobs.iter().map(|j| j.name.clone()).collect(),
            index: plan.jobs.iter().enumerate().map(|(i, j)| (j.name.clone(), i)).collect(),
            status_line: std::io::stdout().is_terminal(),
            shown: false,
            running: Vec::new(),
            done: 0,
            started: std::time::Instant::now(),
        }
    }

    fn prefix(&self, job: usize) -> String {
        let name: String = self.names[job].chars().take(self.width).collect();
        let padded = format!("{name:<w$}", w = self.width);
        self.ui.paint(PALETTE[job % PALETTE.len()], &padded)
    }

    fn line(&mut self, job: usize, text: &str) {
        let bar = self.ui.paint("2", "│");
        let text = if text.starts_with("$ ") { self.ui.paint("32", text) } else { text.to_string() };
        let mut out = std::io::stdout().lock();
        if self.shown {
            let _ = write!(out, "\r\x1b[K");
        }
        let _ = writeln!(out, "{} {bar} {text}", self.prefix(job));
        drop(out);
        self.shown = false;
        self.draw_status();
    }

    fn draw_status(&mut self) {
        if !self.status_line || self.running.is_empty() {
            return;
        }
        let mut names: Vec<&str> = self.running.iter().take(3).map(|&i| self.names[i].as_str()).collect();
        let more = self.running.len().saturating_sub(3);
        let extra = if more > 0 { format!(" +{more}") } else { String::new() };
        names.sort_unstable();
        let status = format!(
            "running {}{extra} · {}/{} done · {}",
            names.join(", "),
            self.done,
            self.names.len(),
            human(self.started.elapsed())
        );
        let width = terminal_width().saturating_sub(1);
        let status: String = status.chars().take(width).collect();
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[K{}", self.ui.paint("2", &status));
        let _ = out.flush();
        self.shown = true;
    }

    /// Clears the status line before the summary.
    pub fn finish(&mut self) {
        if self.shown {
            let _ = write!(std::io::stdout().lock(), "\r\x1b[K");
            self.shown = false;
        }
    }
}

fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 { ws.ws_col as usize } else { 80 }
}

impl Sink for HumanReporter {
    fn tick(&mut self) {
        self.draw_status();
    }

    fn event(&mut self, e: Stamped<RunEvent>) {
        let job_of = |name: &str, index: &HashMap<String, usize>| index.get(name).copied().unwrap_or(0);
        match e.event {
            RunEvent::JobStarted { job, attempt } => {
                let job = job_of(&job, &self.index);
                if !self.running.contains(&job) {
                    self.running.push(job);
                }
                let what = if attempt > 1 { format!("started (attempt {attempt})") } else { "started".into() };
                let what = self.ui.paint("1", &what);
                self.line(job, &what);
            }
            RunEvent::JobLog { job, line } => {
                let job = job_of(&job, &self.index);
                self.line(job, &line);
            }
            RunEvent::JobNotice { job, message } => {
                let job = job_of(&job, &self.index);
                let dim = self.ui.paint("2", &message);
                self.line(job, &dim);
            }
            RunEvent::JobFinished { job, status, duration_ms, reason, attempts, .. } => {
                let job = job_of(&job, &self.index);
                self.running.retain(|&r| r != job);
                self.done += 1;
                if attempts == 0 {
                    if matches!(status, JobState::Skipped | JobState::Manual | JobState::Canceled) {
                        let dim = self.ui.paint("2", status_word(status));
                        self.line(job, &dim);
                    }
                    return;
                }
                let code = match status {
                    JobState::Success => "32;1",
                    JobState::AllowedFailure => "33;1",
                    _ => "31;1",
                };
                let mut msg = format!("{} in {}", status_word(status), human(Duration::from_millis(duration_ms)));
                if let Some(r) = &reason
                    && status != JobState::Success
                {
                    msg.push_str(&format!(" ({r})"));
                }
                let msg = self.ui.paint(code, &msg);
                self.line(job, &msg);
            }
            RunEvent::PipelineStarted { .. } | RunEvent::PipelineFinished(_) => {}
        }
    }
}

/// Prints the end-of-run table: job, stage, status, duration, exit code, log.
/// A trigger job's child pipeline is nested under it (`└ job`), with its jobs' logs.
pub fn summary_table(ui: &Ui, root: &std::path::Path, result: &RunResult, run_id: u64) {
    let mut rows: Vec<[String; 6]> = Vec::new();
    for j in &result.jobs {
        let log = j.log.as_ref().map(|l| l.strip_prefix(root).unwrap_or(l).to_path_buf());
        rows.push([
            j.name.clone(),
            j.stage.clone(),
            status_word(j.status).to_string(),
            if j.attempts > 0 { human(j.duration) } else { "-".into() },
            j.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            log.as_ref().map(|l| l.display().to_string()).unwrap_or_default(),
        ]);
        if let (Some(child), Some(log)) = (&j.child, &log) {
            child_rows(&mut rows, child, &j.name, log);
        }
    }
    println!();
    print_table(ui, &["JOB", "STAGE", "STATUS", "DURATION", "EXIT", "LOG"], &rows, |col, status| {
        (col == 2).then_some(match status {
            "passed" => "32",
            "failed" | "canceled" => "31",
            "manual" | "skipped" => "33",
            s if s.starts_with("failed (") => "33",
            _ => "0",
        })
    });
    let mut out = std::io::stdout().lock();
    let word = match result.status {
        PipelineStatus::Success => ui.paint("32;1", "Pipeline passed"),
        PipelineStatus::Failed => ui.paint("31;1", "Pipeline failed"),
        PipelineStatus::Canceled => ui.paint("31;1", "Pipeline canceled"),
        PipelineStatus::Running => ui.paint("36;1", "Pipeline running"),
    };
    let _ = writeln!(out, "\n{word} in {} (run #{run_id}; logs: slipway logs {run_id} JOB)", human(result.duration));
}

fn child_rows(
    rows: &mut Vec<[String; 6]>,
    child: &slipway_model::run::RunRecord,
    trigger: &str,
    trigger_log: &std::path::Path,
) {
    // `<run>/logs/<job>.log` → `<run>/children/<job>/logs/`, and so on for a child's children.
    let run_dir = trigger_log.parent().and_then(|l| l.parent()).unwrap_or(std::path::Path::new(""));
    let top = run_dir.join("children").join(slipway_runner::exec::slug(trigger));
    for (above, j) in child.nested_jobs() {
        let dir = above.iter().fold(top.clone(), |d, t| d.join("children").join(slipway_runner::exec::slug(t)));
        let log = dir.join("logs").join(format!("{}.log", slipway_runner::exec::slug(&j.name)));
        rows.push([
            format!("{}└ {}", "  ".repeat(above.len()), j.name),
            j.stage.clone(),
            status_word(j.status).to_string(),
            if j.attempts > 0 { human(std::time::Duration::from_millis(j.duration_ms)) } else { "-".into() },
            j.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            log.display().to_string(),
        ]);
    }
}

/// `--json`: one event per line, as docs/events.md describes them.
pub struct JsonReporter;

pub fn emit_json<T: serde::Serialize>(v: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = writeln!(out);
}

impl Sink for JsonReporter {
    fn event(&mut self, e: Stamped<RunEvent>) {
        emit_json(&e);
    }
}

/// A table with a bold header, columns padded to their widest cell, and `color` choosing a
/// cell's colour.
pub fn print_table<const N: usize>(
    ui: &Ui,
    head: &[&str; N],
    rows: &[[String; N]],
    color: impl Fn(usize, &str) -> Option<&'static str>,
) {
    let mut w = head.map(|h| h.chars().count());
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| cells.join("  ").trim_end().to_string();
    println!("{}", ui.paint("1", &line(head.iter().enumerate().map(|(i, h)| format!("{h:<0$}", w[i])).collect())));
    for r in rows {
        let cells = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let padded = format!("{c}{}", " ".repeat(w[i] - c.chars().count()));
                match color(i, c) {
                    Some(code) => ui.paint(code, &padded),
                    None => padded,
                }
            })
            .collect();
        println!("{}", line(cells));
    }
}

/// Prints what is appended to `path` after `from` bytes, forever (a log rotated meanwhile is
/// read again from its start), like `tail -F`.
pub fn follow(path: &std::path::Path, from: u64) {
    use std::io::{Read, Seek};
    let mut pos = from;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let Ok(mut f) = std::fs::File::open(path) else { continue };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < pos {
            pos = 0; // rotated
        }
        if len > pos {
            let _ = f.seek(std::io::SeekFrom::Start(pos));
            let mut buf = String::new();
            let _ = f.read_to_string(&mut buf);
            print!("{buf}");
            pos = len;
        }
    }
}
