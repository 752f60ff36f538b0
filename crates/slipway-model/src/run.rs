//! Pipeline runs as records: a job's state (GitLab's job statuses, plus `allowed_failure`),
//! its final record, and a run's summary — what `.slipway/runs/<id>/summary.json` holds and
//! what the store keeps for the server.

use serde::{Deserialize, Serialize};

/// Where a job is. The names are GitLab's job statuses; `allowed_failure` is GitLab's
/// "failed, allowed to fail".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its predecessors.
    Created,
    /// Ready, waiting for a free slot (concurrency, resource group).
    Pending,
    /// `when: delayed`: waits for its time.
    Scheduled,
    Running,
    Success,
    Failed,
    /// Failed, but `allow_failure` allowed it.
    AllowedFailure,
    Skipped,
    /// A manual job nobody started (yet).
    Manual,
    Canceled,
}

impl JobState {
    pub const ALL: [JobState; 10] = [
        JobState::Created,
        JobState::Pending,
        JobState::Scheduled,
        JobState::Running,
        JobState::Success,
        JobState::Failed,
        JobState::AllowedFailure,
        JobState::Skipped,
        JobState::Manual,
        JobState::Canceled,
    ];

    /// No transition leaves it without an input (a play of a manual job, a retry).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Success
                | JobState::Failed
                | JobState::AllowedFailure
                | JobState::Skipped
                | JobState::Manual
                | JobState::Canceled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Created => "created",
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Success => "success",
            JobState::Failed => "failed",
            JobState::AllowedFailure => "allowed_failure",
            JobState::Skipped => "skipped",
            JobState::Manual => "manual",
            JobState::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|j| j.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    Running,
    Success,
    Failed,
    Canceled,
}

impl PipelineStatus {
    pub const ALL: [PipelineStatus; 4] =
        [PipelineStatus::Running, PipelineStatus::Success, PipelineStatus::Failed, PipelineStatus::Canceled];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Running => "running",
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<PipelineStatus> {
        PipelineStatus::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// A finished pipeline's status from its jobs' (canceled wins, then any failure).
    pub fn of(canceled: bool, jobs: impl IntoIterator<Item = JobState>) -> PipelineStatus {
        if canceled {
            PipelineStatus::Canceled
        } else if jobs.into_iter().any(|j| j == JobState::Failed) {
            PipelineStatus::Failed
        } else {
            PipelineStatus::Success
        }
    }
}

/// A job's final record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub name: String,
    pub stage: String,
    pub status: JobState,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// Why it failed or did not run, when slipway knows more than the exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The coverage the job's `coverage:` regex found in its log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    #[serde(default)]
    pub attempts: u32,
    /// A trigger job's child pipeline: a run of its own, nested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<Box<RunRecord>>,
}

/// A finished run: what `summary.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: u64,
    pub status: PipelineStatus,
    pub duration_ms: u64,
    pub jobs: Vec<JobRecord>,
}

impl RunRecord {
    /// Its jobs, each trigger job followed by its child pipeline's jobs (depth-first): each
    /// with the names of the trigger jobs it is nested under in this record, outermost first.
    pub fn nested_jobs(&self) -> Vec<(Vec<&str>, &JobRecord)> {
        let mut out = Vec::new();
        for j in &self.jobs {
            out.push((Vec::new(), j));
            if let Some(child) = &j.child {
                for (mut above, cj) in child.nested_jobs() {
                    above.insert(0, j.name.as_str());
                    out.push((above, cj));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, child: Option<RunRecord>) -> JobRecord {
        JobRecord {
            name: name.into(),
            stage: "test".into(),
            status: JobState::Success,
            exit_code: Some(0),
            duration_ms: 1,
            reason: None,
            coverage: None,
            attempts: 1,
            child: child.map(Box::new),
        }
    }

    #[test]
    fn nested_jobs_follow_their_trigger_depth_first() {
        let run = |jobs| RunRecord { run_id: 1, status: PipelineStatus::Success, duration_ms: 1, jobs };
        let inner = run(vec![job("deep", None)]);
        let child = run(vec![job("a", None), job("again", Some(inner)), job("b", None)]);
        let top = run(vec![job("build", None), job("trigger", Some(child)), job("after", None)]);
        let got: Vec<(Vec<&str>, &str)> = top.nested_jobs().into_iter().map(|(a, j)| (a, j.name.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (vec![], "build"),
                (vec![], "trigger"),
                (vec!["trigger"], "a"),
                (vec!["trigger"], "again"),
                (vec!["trigger", "again"], "deep"),
                (vec!["trigger"], "b"),
                (vec![], "after"),
            ]
        );
    }

    #[test]
    fn states_read_back_as_written() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in PipelineStatus::ALL {
            assert_eq!(PipelineStatus::parse(s.as_str()), Some(s));
        }
    }
}
