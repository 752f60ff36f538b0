//! The pipeline state machine: one owner of every job's state, fed by events (a job finished,
//! time passed, cancel), answering with the jobs to start. It does no IO, so tests can step
//! it through any order of events. `slipway run` drives it in-process; the server will drive
//! the same machine and persist its transitions.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use slipway_pipeline::model::When;
use slipway_pipeline::plan::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for its predecessors.
    Created,
    /// `when: delayed`: will start at the instant.
    Scheduled(Instant),
    Running,
    Success,
    Failed,
    /// Failed, but `allow_failure` allowed it.
    AllowedFailure,
    Skipped,
    /// A manual job nobody started.
    Manual,
    Canceled,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Success
                | JobStatus::Failed
                | JobStatus::AllowedFailure
                | JobStatus::Skipped
                | JobStatus::Manual
                | JobStatus::Canceled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created | JobStatus::Scheduled(_) => "created",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::AllowedFailure => "allowed_failure",
            JobStatus::Skipped => "skipped",
            JobStatus::Manual => "manual",
            JobStatus::Canceled => "canceled",
        }
    }
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(usize),
    /// The job will not run; why (for the log).
    Skip(usize, String),
    /// Nothing can start before this instant (delayed jobs).
    WakeAt(Instant),
}

#[derive(Debug)]
struct SJob {
    status: JobStatus,
    preds: Vec<usize>,
    /// Predecessors come from `needs` (a skipped need skips the job) rather than stages.
    by_needs: bool,
    when: When,
    start_in: Duration,
    resource_group: Option<String>,
    allow_failure: bool,
    allowed_exit_codes: Vec<i32>,
}

pub struct Scheduler {
    jobs: Vec<SJob>,
    concurrency: usize,
    running: usize,
    busy_groups: HashSet<String>,
    canceled: bool,
}

/// How a job ended, as the executor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed { exit_code: Option<i32> },
    Canceled,
}

impl Scheduler {
    /// `manual`: names of manual jobs the user asked to start.
    pub fn new(plan: &Plan, concurrency: usize, manual: &[String]) -> Scheduler {
        let index: HashMap<&str, usize> = plan.jobs.iter().enumerate().map(|(i, j)| (j.name.as_str(), i)).collect();
        let jobs = plan
            .jobs
            .iter()
            .map(|j| {
                let (preds, by_needs) = match &j.needs {
                    Some(needs) => (needs.iter().filter_map(|n| index.get(n.job.as_str()).copied()).collect(), true),
                    None => (
                        plan.jobs
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| p.stage_index < j.stage_index)
                            .map(|(i, _)| i)
                            .collect(),
                        false,
                    ),
                };
                let started_by_user = manual.iter().any(|m| *m == j.name || *m == j.base);
                let when = if j.when == When::Manual && started_by_user { When::OnSuccess } else { j.when };
                SJob {
                    status: JobStatus::Created,
                    preds,
                    by_needs,
                    when,
                    start_in: j.start_in.unwrap_or_default(),
                    resource_group: j.resource_group.clone(),
                    allow_failure: j.allow_failure.allowed,
                    allowed_exit_codes: j.allow_failure.exit_codes.clone(),
                }
            })
            .collect();
        Scheduler { jobs, concurrency: concurrency.max(1), running: 0, busy_groups: HashSet::new(), canceled: false }
    }

    pub fn status(&self, i: usize) -> JobStatus {
        self.jobs[i].status
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Whether every job has reached a final state.
    pub fn done(&self) -> bool {
        self.jobs.iter().all(|j| j.status.is_terminal())
    }

    /// Records the end of a running job.
    pub fn finished(&mut self, i: usize, outcome: Outcome) {
        let j = &mut self.jobs[i];
        if j.status != JobStatus::Running {
            return;
        }
        j.status = match outcome {
            Outcome::Success => JobStatus::Success,
            Outcome::Canceled => JobStatus::Canceled,
            Outcome::Failed { exit_code } => {
                let allowed = j.allow_failure
                    && (j.allowed_exit_codes.is_empty()
                        || exit_code.is_some_and(|c| j.allowed_exit_codes.contains(&c)));
                if allowed { JobStatus::AllowedFailure } else { JobStatus::Failed }
            }
        };
        self.running -= 1;
        if let Some(g) = &self.jobs[i].resource_group {
            self.busy_groups.remove(g);
        }
    }

    /// Cancels the pipeline: jobs not yet started end as canceled; running ones are the
    /// driver's to stop (it reports them through [`Scheduler::finished`]).
    pub fn cancel(&mut self) {
        self.canceled = true;
        for j in &mut self.jobs {
            if matches!(j.status, JobStatus::Created | JobStatus::Scheduled(_)) {
                j.status = JobStatus::Canceled;
            }
        }
    }

    pub fn is_canceled(&self) -> bool {
        self.canceled
    }

    /// Advances every job that can move and returns what the driver must do.
    pub fn step(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.canceled {
            return actions;
        }
        // Resolve jobs whose fate is decided, until nothing changes (skips cascade).
        loop {
            let mut changed = false;
            for i in 0..self.jobs.len() {
                if self.jobs[i].status != JobStatus::Created {
                    continue;
                }
                let Some(decision) = self.decide(i) else {
                    continue;
                };
                changed = true;
                match decision {
                    Decision::Run => {
                        if self.jobs[i].when == When::Delayed {
                            self.jobs[i].status = JobStatus::Scheduled(now + self.jobs[i].start_in);
                        } else {
                            self.jobs[i].status = JobStatus::Scheduled(now);
                        }
                    }
                    Decision::Skip(why) => {
                        self.jobs[i].status = JobStatus::Skipped;
                        actions.push(Action::Skip(i, why));
                    }
                    Decision::Manual => self.jobs[i].status = JobStatus::Manual,
                }
            }
            if !changed {
                break;
            }
        }
        // Start what is due, within the concurrency limit and resource groups, in plan order.
        let mut wake: Option<Instant> = None;
        for i in 0..self.jobs.len() {
            let JobStatus::Scheduled(at) = self.jobs[i].status else {
                continue;
            };
            if at > now {
                wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
                continue;
            }
            if self.running >= self.concurrency {
                break;
            }
            if let Some(g) = &self.jobs[i].resource_group {
                if self.busy_groups.contains(g) {
                    continue;
                }
                self.busy_groups.insert(g.clone());
            }
            self.jobs[i].status = JobStatus::Running;
            self.running += 1;
            actions.push(Action::Start(i));
        }
        if let Some(w) = wake {
            actions.push(Action::WakeAt(w));
        }
        actions
    }

    fn decide(&self, i: usize) -> Option<Decision> {
        let j = &self.jobs[i];
        let preds: Vec<JobStatus> = j.preds.iter().map(|&p| self.jobs[p].status).collect();
        // Stage order: unstarted manual jobs do not hold later stages back unless they are
        // blocking (allow_failure: false), as in GitLab.
        if preds.iter().any(|s| !s.is_terminal()) {
            return None;
        }
        let failed = preds.contains(&JobStatus::Failed);
        if j.by_needs {
            if let Some(p) = j
                .preds
                .iter()
                .find(|&&p| matches!(self.jobs[p].status, JobStatus::Skipped | JobStatus::Manual | JobStatus::Canceled))
                && j.when != When::Always
            {
                return Some(Decision::Skip(format!("needed job #{p} did not run")));
            }
        } else if let Some(p) =
            j.preds.iter().find(|&&p| self.jobs[p].status == JobStatus::Manual && !self.jobs[p].allow_failure)
            && j.when != When::Always
        {
            return Some(Decision::Skip(format!("blocked by manual job #{p}")));
        }
        Some(match j.when {
            When::OnSuccess | When::Delayed if failed => Decision::Skip("an earlier job failed".into()),
            When::OnSuccess | When::Delayed => Decision::Run,
            When::OnFailure if failed => Decision::Run,
            When::OnFailure => Decision::Skip("`when: on_failure` and nothing failed".into()),
            When::Always => Decision::Run,
            When::Manual if failed => Decision::Skip("an earlier job failed".into()),
            When::Manual => Decision::Manual,
            When::Never => Decision::Skip("`when: never`".into()),
        })
    }
}

enum Decision {
    Run,
    Skip(String),
    Manual,
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_pipeline::plan::{Context, Facts};
    use slipway_pipeline::{SourceMap, load_pipeline_text};
    use std::path::Path;

    struct NoFacts;
    impl Facts for NoFacts {
        fn changed_files(&self, _: Option<&str>) -> Option<Vec<String>> {
            None
        }
        fn exists(&self, _: &str) -> bool {
            false
        }
    }

    fn plan(yaml: &str) -> Plan {
        let mut sm = SourceMap::default();
        let (p, _) =
            load_pipeline_text(Path::new("."), Path::new("t.yml"), yaml, &mut sm).unwrap_or_else(|e| panic!("{e:?}"));
        let mut predefined = slipway_pipeline::vars::VarMap::new();
        predefined.insert("CI_COMMIT_REF_NAME".into(), "main".into());
        let cx = Context {
            predefined,
            overrides: Default::default(),
            facts: &NoFacts,
            source: "push".into(),
            first_job_id: 1,
        };
        slipway_pipeline::plan::plan(&p, &cx).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// Runs the machine to the end, with `fail` jobs failing; returns each job's final status
    /// and the order jobs started in.
    fn drive(plan: &Plan, concurrency: usize, fail: &[&str]) -> (Vec<(String, &'static str)>, Vec<String>) {
        let mut s = Scheduler::new(plan, concurrency, &[]);
        let mut started = Vec::new();
        let now = Instant::now();
        let mut running: Vec<usize> = Vec::new();
        loop {
            for a in s.step(now + Duration::from_secs(3600)) {
                if let Action::Start(i) = a {
                    started.push(plan.jobs[i].name.clone());
                    running.push(i);
                }
            }
            if running.is_empty() {
                break;
            }
            assert!(running.len() <= concurrency);
            let i = running.remove(0);
            let outcome = if fail.contains(&plan.jobs[i].name.as_str()) {
                Outcome::Failed { exit_code: Some(1) }
            } else {
                Outcome::Success
            };
            s.finished(i, outcome);
        }
        assert!(s.done());
        ((0..s.len()).map(|i| (plan.jobs[i].name.clone(), s.status(i).as_str())).collect(), started)
    }

    #[test]
    fn stage_order_and_failure_skips_later_stages() {
        let p = plan(
            "stages: [a, b, c]\nj1: {stage: a, script: x}\nj2: {stage: b, script: x}\nj3: {stage: c, script: x}\nj4: {stage: c, script: x, when: on_failure}\nj5: {stage: c, script: x, when: always}\n",
        );
        let (st, _) = drive(&p, 4, &["j1"]);
        assert_eq!(
            st,
            vec![
                ("j1".into(), "failed"),
                ("j2".into(), "skipped"),
                ("j3".into(), "skipped"),
                ("j4".into(), "success"),
                ("j5".into(), "success")
            ]
        );
    }

    #[test]
    fn allow_failure_lets_the_pipeline_go_on() {
        let p = plan("stages: [a, b]\nj1: {stage: a, script: x, allow_failure: true}\nj2: {stage: b, script: x}\n");
        let (st, _) = drive(&p, 1, &["j1"]);
        assert_eq!(st, vec![("j1".into(), "allowed_failure"), ("j2".into(), "success")]);
    }

    #[test]
    fn allow_failure_exit_codes_only_allow_those_codes() {
        let p = plan("j1: {script: x, allow_failure: {exit_codes: [3]}}\n");
        let mut s = Scheduler::new(&p, 1, &[]);
        s.step(Instant::now());
        s.finished(0, Outcome::Failed { exit_code: Some(1) });
        assert_eq!(s.status(0), JobStatus::Failed);
    }

    #[test]
    fn needs_start_jobs_early_and_skip_on_failed_need() {
        let p = plan(
            "stages: [a, b]\nslow: {stage: a, script: x}\nfast: {stage: a, script: x}\nafter_fast: {stage: b, needs: [fast], script: x}\nafter_all: {stage: b, script: x}\n",
        );
        let (_, started) = drive(&p, 1, &[]);
        // after_fast starts before after_all because it only waits for `fast`.
        let pos = |n: &str| started.iter().position(|s| s == n).unwrap();
        assert!(pos("after_fast") < pos("after_all"));
        let (st, _) = drive(&p, 2, &["fast"]);
        assert_eq!(st[2], ("after_fast".into(), "skipped"));
    }

    #[test]
    fn manual_jobs_wait_and_non_blocking_manual_does_not_hold_stages() {
        let p = plan("stages: [a, b]\ndeploy: {stage: a, script: x, when: manual}\nnext: {stage: b, script: x}\n");
        let (st, _) = drive(&p, 2, &[]);
        assert_eq!(st, vec![("deploy".into(), "manual"), ("next".into(), "success")]);
        let p = plan(
            "stages: [a, b]\ndeploy: {stage: a, script: x, when: manual, allow_failure: false}\nnext: {stage: b, script: x}\n",
        );
        let (st, _) = drive(&p, 2, &[]);
        assert_eq!(st, vec![("deploy".into(), "manual"), ("next".into(), "skipped")]);
    }

    #[test]
    fn concurrency_and_resource_groups_are_respected() {
        let p = plan("a: {script: x, resource_group: prod}\nb: {script: x, resource_group: prod}\nc: {script: x}\n");
        let mut s = Scheduler::new(&p, 3, &[]);
        let started: Vec<Action> =
            s.step(Instant::now()).into_iter().filter(|a| matches!(a, Action::Start(_))).collect();
        assert_eq!(started, vec![Action::Start(0), Action::Start(2)]);
        s.finished(0, Outcome::Success);
        assert_eq!(s.step(Instant::now()), vec![Action::Start(1)]);
    }

    #[test]
    fn delayed_jobs_wait_for_their_time() {
        let p = plan("a: {script: x, when: delayed, start_in: 10s}\n");
        let mut s = Scheduler::new(&p, 1, &[]);
        let t0 = Instant::now();
        assert_eq!(s.step(t0), vec![Action::WakeAt(t0 + Duration::from_secs(10))]);
        assert_eq!(s.step(t0 + Duration::from_secs(10)), vec![Action::Start(0)]);
    }

    #[test]
    fn cancel_marks_pending_jobs_canceled() {
        let p = plan("stages: [a, b]\nj1: {stage: a, script: x}\nj2: {stage: b, script: x}\n");
        let mut s = Scheduler::new(&p, 1, &[]);
        s.step(Instant::now());
        s.cancel();
        s.finished(0, Outcome::Canceled);
        assert_eq!((s.status(0), s.status(1)), (JobStatus::Canceled, JobStatus::Canceled));
        assert!(s.done());
    }
}
