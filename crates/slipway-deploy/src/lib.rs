//! slipway's deploy engine, as a service the CLI and the server call alike: a request (deploy,
//! promote, rollback, approve) with an actor goes in; typed events come out as it works, and a
//! typed outcome or error at the end. Releases are rolled out by a strategy (rolling, canary,
//! blue-green) through a [`target::Target`] — the local agent, an agent on another machine,
//! Docker, or ssh + systemd hosts — gated by health checks and canary analysis, rolled back
//! automatically when a gate fails, and persisted step by step in the store before each step
//! acts, so an interrupted deploy is repaired to the old or the new release.
//!
//! The engine never matches on the kind of target and never prints; [`observe`] answers
//! "what runs, is it healthy, does it drift" without changing anything.

pub mod artifacts;
mod docker;
mod engine;
mod events;
pub mod observe;
pub mod plan;
pub mod prom;
pub mod signatures;
mod ssh;
mod systemd;
pub mod target;
pub mod views;

pub use docker::pull as docker_pull;
pub use engine::{Engine, EngineConfig, Outcome};
pub use events::{Events, Sink};
pub use slipway_model::event::DeployErrorKind as ErrorKind;
pub use ssh::Tunnel;

/// Why a deploy request did not succeed: a kind a program can act on, a message that says
/// what happened, and a hint that says what to do.
#[derive(Debug, Clone)]
pub struct DeployError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl DeployError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> DeployError {
        DeployError { kind, message: message.into(), hint: None }
    }

    pub fn input(message: impl Into<String>) -> DeployError {
        DeployError::new(ErrorKind::Input, message)
    }

    pub fn failed(message: impl Into<String>) -> DeployError {
        DeployError::new(ErrorKind::Failed, message)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> DeployError {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for DeployError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeployError {}

/// The closing event of a request (`deploy_finished`): what the CLI's `--json` prints last and
/// what the server's deploy stream ends with.
pub fn finished(environment: &str, result: &Result<Outcome, DeployError>) -> slipway_model::event::DeployEvent {
    use slipway_model::event::DeployEvent;
    match result {
        Ok(o) => DeployEvent::DeployFinished {
            ok: true,
            environment: o.release.environment.clone(),
            release: Some(o.release.id),
            version: Some(o.release.version.clone()),
            reason: Some(o.release.reason),
            status: Some(o.release.status),
            url: Some(o.url.clone()),
            seconds: Some(o.took.as_secs_f64()),
            unchanged: o.unchanged,
            error: None,
            error_kind: None,
            hint: None,
        },
        Err(e) => DeployEvent::DeployFinished {
            ok: false,
            environment: environment.to_string(),
            release: None,
            version: None,
            reason: None,
            status: None,
            url: None,
            seconds: None,
            unchanged: false,
            error: Some(e.message.clone()),
            error_kind: Some(e.kind),
            hint: e.hint.clone(),
        },
    }
}

impl From<slipway_store::StoreError> for DeployError {
    fn from(e: slipway_store::StoreError) -> DeployError {
        let hint = e.hint();
        DeployError { kind: ErrorKind::Failed, message: e.to_string(), hint }
    }
}

impl From<slipway_api::ApiError> for DeployError {
    fn from(e: slipway_api::ApiError) -> DeployError {
        match e {
            slipway_api::ApiError::NotRunning { socket } => DeployError::new(
                ErrorKind::NoAgent,
                format!("no agent is running (nothing answers at {})", socket.display()),
            )
            .hint("start it with `slipway agent start` (or run `slipway agent run` under systemd)"),
            slipway_api::ApiError::Status { status, error, hint } => DeployError {
                kind: if status == 409 || status == 400 { ErrorKind::Input } else { ErrorKind::Failed },
                message: format!("the agent refused: {error}"),
                hint,
            },
            e => DeployError::failed(e.to_string()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
