//! Events as data: what a pipeline run and a deploy report as they go. Owned, serializable
//! and stamped with the time they happened; `--json` prints them one per line, and the
//! server's streams will carry the same types. The shapes are a stable contract (see
//! docs/events.md): fields are only ever added.

use serde::{Deserialize, Serialize};

use crate::release::{ReleaseId, ReleaseReason, ReleaseStatus};
use crate::run::{JobRecord, JobState, PipelineStatus, RunRecord};

/// The event schema's version, printed in `pipeline_started` and `deploy_started`.
pub const SCHEMA: u32 = 1;

/// An event with the time it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped<E> {
    /// RFC 3339, UTC.
    pub ts: jiff::Timestamp,
    #[serde(flatten)]
    pub event: E,
}

impl<E> Stamped<E> {
    pub fn now(event: E) -> Stamped<E> {
        Stamped { ts: jiff::Timestamp::now(), event }
    }
}

/// A job as the run announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub name: String,
    pub stage: String,
    pub when: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    PipelineStarted {
        schema: u32,
        run_id: u64,
        /// The pipeline file (or `<built-in Go pipeline>`).
        file: String,
        jobs: Vec<JobInfo>,
    },
    JobStarted {
        job: String,
        attempt: u32,
    },
    /// One line of a job's output, masked.
    JobLog {
        job: String,
        line: String,
    },
    /// A line from slipway about a job (workspace, artifacts, cache, retries), masked.
    JobNotice {
        job: String,
        message: String,
    },
    JobFinished {
        job: String,
        stage: String,
        status: JobState,
        exit_code: Option<i32>,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        coverage: Option<f64>,
        attempts: u32,
        /// A trigger job's child pipeline, nested.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        child: Option<Box<RunRecord>>,
    },
    PipelineFinished(RunRecord),
}

impl RunEvent {
    pub fn job_finished(r: &JobRecord) -> RunEvent {
        RunEvent::JobFinished {
            job: r.name.clone(),
            stage: r.stage.clone(),
            status: r.status,
            exit_code: r.exit_code,
            duration_ms: r.duration_ms,
            reason: r.reason.clone(),
            coverage: r.coverage,
            attempts: r.attempts,
            child: r.child.clone(),
        }
    }

    pub fn pipeline_status(&self) -> Option<PipelineStatus> {
        match self {
            RunEvent::PipelineFinished(r) => Some(r.status),
            _ => None,
        }
    }
}

/// Why a deploy command did not succeed, as a kind a program can act on (the CLI maps kinds
/// to exit codes; the server to HTTP statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployErrorKind {
    /// The deploy failed (and was rolled back when it could be).
    Failed,
    /// Bad input: unknown environment, missing or mismatched artifacts, nothing to roll back to.
    Input,
    /// The environment's agent does not answer.
    NoAgent,
    /// Another deploy holds the environment, or a newer one superseded this one.
    Busy,
    /// Protection refused it: branch not allowed, approvals missing or not allowed.
    Refused,
    /// The deploy was stopped (Ctrl-C, SIGTERM, a lost lease) and the environment put back.
    Interrupted,
    /// The environment requires signatures (`require_signature:`) and the release is unsigned,
    /// signed by another key, or was changed after signing.
    Unsigned,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeployEvent {
    /// A release was recorded and the engine works on it.
    DeployStarted { schema: u32, environment: String, release: ReleaseId, version: String, reason: ReleaseReason },
    /// A line of what the engine does, for people.
    Progress { environment: String, message: String },
    /// A protected environment's release waits for approvals (once, when it starts waiting).
    ApprovalNeeded { environment: String, release: ReleaseId, version: String, need: u32, have: u32 },
    /// A step of the release's journal, recorded before it acts.
    Step { environment: String, release: ReleaseId, step: String, detail: serde_json::Value },
    /// The command's result.
    DeployFinished {
        ok: bool,
        environment: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<ReleaseId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<ReleaseReason>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<ReleaseStatus>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<f64>,
        /// Nothing to do: the environment already runs these artifacts with these settings.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unchanged: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_kind: Option<DeployErrorKind>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_name_and_time_and_read_back() {
        let e = Stamped::now(RunEvent::JobLog { job: "test".into(), line: "ok".into() });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "job_log");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        let back: Stamped<RunEvent> = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let fin = RunEvent::PipelineFinished(RunRecord {
            run_id: 3,
            status: PipelineStatus::Success,
            duration_ms: 10,
            jobs: vec![],
        });
        let v = serde_json::to_value(&fin).unwrap();
        assert_eq!((v["event"].as_str(), v["run_id"].as_u64()), (Some("pipeline_finished"), Some(3)));
    }
}
