//! Terminal conventions: colour only on a terminal and never with `NO_COLOR`, diagnostics on
//! stderr, user errors with a hint and exit code 2, and the two run reporters (human, JSON).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use slipway_pipeline::duration::human;
use slipway_pipeline::plan::Plan;
use slipway_pipeline::{Diagnostic, SourceMap};
use slipway_runner::{Event, JobResult, JobStatus, Reporter, RunResult};

/// Exit codes (documented in docs/cli.md).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
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

fn status_word(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Success => "passed",
        JobStatus::Failed => "failed",
        JobStatus::AllowedFailure => "failed (allowed)",
        JobStatus::Skipped => "skipped",
        JobStatus::Manual => "manual",
        JobStatus::Canceled => "canceled",
        _ => "running",
    }
}

/// The human view: live output prefixed with the job name; on a terminal, a status line at
/// the bottom shows the running jobs and the elapsed time.
pub struct HumanReporter<'a> {
    ui: &'a Ui,
    width: usize,
    partial: HashMap<usize, Vec<u8>>,
    names: Vec<String>,
    /// Draw the status line (stdout is a terminal).
    status_line: bool,
    shown: bool,
    running: Vec<usize>,
    done: usize,
    started: std::time::Instant,
}

impl<'a> HumanReporter<'a> {
    pub fn new(ui: &'a Ui, plan: &Plan) -> HumanReporter<'a> {
        let width = plan.jobs.iter().map(|j| j.name.chars().count()).max().unwrap_or(4).min(28);
        HumanReporter {
            ui,
            width,
            partial: HashMap::new(),
            names: plan.jobs.iter().map(|j| j.name.clone()).collect(),
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

    fn flush_partial(&mut self, job: usize) {
        if let Some(rest) = self.partial.remove(&job)
            && !rest.is_empty()
        {
            self.line(job, &String::from_utf8_lossy(&rest));
        }
    }
}

fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 { ws.ws_col as usize } else { 80 }
}

impl Reporter for HumanReporter<'_> {
    fn event(&mut self, ev: Event<'_>) {
        match ev {
            Event::JobStarted { job, attempt, .. } => {
                if !self.running.contains(&job) {
                    self.running.push(job);
                }
                let what = if attempt > 1 { format!("started (attempt {attempt})") } else { "started".into() };
                let what = self.ui.paint("1", &what);
                self.line(job, &what);
            }
            Event::Output { job, data } => {
                let buf = self.partial.entry(job).or_default();
                buf.extend_from_slice(data);
                let mut lines = Vec::new();
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r').to_string());
                }
                for l in lines {
                    self.line(job, &l);
                }
            }
            Event::Notice { job, line } => {
                self.flush_partial(job);
                let dim = self.ui.paint("2", line);
                self.line(job, &dim);
            }
            Event::Tick => self.draw_status(),
            Event::JobFinished { job, result } => {
                self.flush_partial(job);
                self.running.retain(|&r| r != job);
                self.done += 1;
                if result.attempts == 0 {
                    if matches!(result.status, JobStatus::Skipped | JobStatus::Manual | JobStatus::Canceled) {
                        let dim = self.ui.paint("2", status_word(result.status));
                        self.line(job, &dim);
                    }
                    return;
                }
                let code = match result.status {
                    JobStatus::Success => "32;1",
                    JobStatus::AllowedFailure => "33;1",
                    _ => "31;1",
                };
                let mut msg = format!("{} in {}", status_word(result.status), human(result.duration));
                if let Some(r) = &result.reason
                    && result.status != JobStatus::Success
                {
                    msg.push_str(&format!(" ({r})"));
                }
                let msg = self.ui.paint(code, &msg);
                self.line(job, &msg);
            }
        }
    }
}

/// Prints the end-of-run table: job, stage, status, duration, exit code, log.
pub fn summary_table(ui: &Ui, root: &std::path::Path, result: &RunResult, run_id: u64) {
    let rows: Vec<[String; 6]> = result
        .jobs
        .iter()
        .map(|j| {
            [
                j.name.clone(),
                j.stage.clone(),
                status_word(j.status).to_string(),
                if j.attempts > 0 { human(j.duration) } else { "-".into() },
                j.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                j.log.as_ref().map(|l| l.strip_prefix(root).unwrap_or(l).display().to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    let head = ["JOB", "STAGE", "STATUS", "DURATION", "EXIT", "LOG"];
    let mut w = head.map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out);
    let hdr: Vec<String> = head.iter().enumerate().map(|(i, h)| format!("{h:<w$}", w = w[i])).collect();
    let _ = writeln!(out, "{}", ui.paint("1", hdr.join("  ").trim_end()));
    for r in &rows {
        let status = &r[2];
        let code = if status == "passed" {
            "32"
        } else if status.starts_with("failed (") || status == "manual" || status == "skipped" {
            "33"
        } else if status == "failed" || status == "canceled" {
            "31"
        } else {
            "0"
        };
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let padded = format!("{c:<w$}", w = w[i]);
                if i == 2 { ui.paint(code, &padded) } else { padded }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    let word = match result.status {
        slipway_runner::PipelineStatus::Success => ui.paint("32;1", "Pipeline passed"),
        slipway_runner::PipelineStatus::Failed => ui.paint("31;1", "Pipeline failed"),
        slipway_runner::PipelineStatus::Canceled => ui.paint("31;1", "Pipeline canceled"),
    };
    let _ = writeln!(out, "\n{word} in {} (run #{run_id}; logs: slipway logs {run_id} JOB)", human(result.duration));
}

/// `--json`: one JSON object per line (documented in docs/cli.md).
pub struct JsonReporter {
    partial: HashMap<usize, Vec<u8>>,
    names: Vec<String>,
}

impl JsonReporter {
    pub fn new(plan: &Plan) -> JsonReporter {
        JsonReporter { partial: HashMap::new(), names: plan.jobs.iter().map(|j| j.name.clone()).collect() }
    }

    fn emit(v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
    }

    fn flush_partial(&mut self, job: usize) {
        if let Some(rest) = self.partial.remove(&job)
            && !rest.is_empty()
        {
            Self::emit(
                serde_json::json!({"event": "job_log", "job": self.names[job], "line": String::from_utf8_lossy(&rest)}),
            );
        }
    }
}

pub fn job_json(j: &JobResult) -> serde_json::Value {
    serde_json::json!({
        "name": j.name,
        "stage": j.stage,
        "status": j.status.as_str(),
        "exit_code": j.exit_code,
        "duration_ms": duration_ms(j.duration),
    })
}

pub fn duration_ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Reporter for JsonReporter {
    fn event(&mut self, ev: Event<'_>) {
        match ev {
            Event::Tick => {}
            Event::JobStarted { job, attempt, .. } => {
                Self::emit(serde_json::json!({"event": "job_started", "job": self.names[job], "attempt": attempt}))
            }
            Event::Output { job, data } => {
                let buf = self.partial.entry(job).or_default();
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r').to_string();
                    Self::emit(serde_json::json!({"event": "job_log", "job": self.names[job], "line": text}));
                }
            }
            Event::Notice { job, line } => {
                self.flush_partial(job);
                Self::emit(serde_json::json!({"event": "job_notice", "job": self.names[job], "message": line}));
            }
            Event::JobFinished { job, result } => {
                self.flush_partial(job);
                let mut v = job_json(result);
                v["event"] = "job_finished".into();
                v["job"] = v["name"].take();
                if let Some(obj) = v.as_object_mut() {
                    obj.remove("name");
                    if let Some(r) = &result.reason {
                        obj.insert("reason".into(), r.clone().into());
                    }
                    if let Some(c) = result.coverage {
                        obj.insert("coverage".into(), c.into());
                    }
                }
                Self::emit(v);
            }
        }
    }
}
