//! slipway's deploy engine: releases of an environment's service rolled out by a strategy
//! (rolling, canary, blue-green) through a target (the local agent for now), gated by
//! health checks and canary analysis, rolled back automatically when a gate fails, and
//! persisted step by step in the store before each step acts, so an interrupted deploy is
//! repaired to the old or the new release by the next command.

pub mod artifacts;
mod docker;
mod engine;
mod hosts;
pub mod plan;
mod ssh;
mod systemd;

pub use docker::{ContainerState, containers as docker_containers, pull as docker_pull};
pub use hosts::{HostState, agent_tunnel, release_dir_name};
pub use ssh::Tunnel;

pub use engine::{Engine, Outcome, Progress, Reason, config_hash, config_json, entry_points, group_id as group_id_of};

/// Exit codes of the deploy commands (documented in docs/cli.md).
pub mod exit {
    /// The deploy failed (and was rolled back when it could be).
    pub const FAILED: i32 = 1;
    /// Bad input: unknown environment, missing or mismatched artifacts, nothing to roll back to.
    pub const INPUT: i32 = 2;
    /// No agent answers on the data directory's socket.
    pub const NO_AGENT: i32 = 3;
    /// Another deploy holds the environment, or a newer one superseded this one.
    pub const BUSY: i32 = 4;
    /// Protection refused it: branch not allowed, approvals missing or not allowed.
    pub const REFUSED: i32 = 5;
}

/// Why a deploy command did not succeed; `code` is its exit code.
#[derive(Debug)]
pub struct DeployError {
    pub code: i32,
    pub message: String,
    pub hint: Option<String>,
}

impl DeployError {
    pub fn new(code: i32, message: impl Into<String>) -> DeployError {
        DeployError { code, message: message.into(), hint: None }
    }

    pub fn input(message: impl Into<String>) -> DeployError {
        DeployError::new(exit::INPUT, message)
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

impl From<slipway_store::StoreError> for DeployError {
    fn from(e: slipway_store::StoreError) -> DeployError {
        DeployError::new(exit::FAILED, e.to_string())
    }
}

impl From<slipway_api::ApiError> for DeployError {
    fn from(e: slipway_api::ApiError) -> DeployError {
        match e {
            slipway_api::ApiError::NotRunning { socket } => DeployError::new(
                exit::NO_AGENT,
                format!("no agent is running (nothing answers at {})", socket.display()),
            )
            .hint("start it with `slipway agent start` (or run `slipway agent run` under systemd)"),
            slipway_api::ApiError::Status { status, error, hint } => DeployError {
                code: if status == 409 || status == 400 { exit::INPUT } else { exit::FAILED },
                message: format!("the agent refused: {error}"),
                hint,
            },
            e => DeployError::new(exit::FAILED, e.to_string()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use slipway_pipeline::environment::*;

    pub fn env() -> Environment {
        Environment {
            name: "dev".into(),
            target: Target::Local,
            service: Service::default(),
            instances: 3,
            listen: "127.0.0.1:8080".into(),
            strategy: Strategy::Rolling { max_surge: Scale::Count(1), max_unavailable: Scale::Count(0) },
            health: HealthCheck::default(),
            promote_from: None,
            protection: Protection::default(),
            agent: None,
            stop_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}
