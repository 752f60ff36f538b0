//! The pipeline state machine: one owner of every job's state, fed by inputs (a job finished,
//! time passed, cancel, play a manual job, retry jobs) and answering with the jobs to start.
//! It does no IO and keeps wall-clock times, so tests step it through any order of events, and
//! its state is data: [`Scheduler::snapshot`] and [`Scheduler::restore`] let a server persist
//! every transition and resume a run after a restart. `slipway run` drives it in-process; the
//! server drives the same machine.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use slipway_model::run::JobState;
use slipway_pipeline::model::When;
use slipway_pipeline::plan::Plan;

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(usize),
    /// The job will not run; why (for the log).
    Skip(usize, String),
    /// Nothing can start before this time (Unix milliseconds; delayed jobs).
    WakeAt(i64),
}

/// How a job ended, as the executor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed { exit_code: Option<i32> },
    Canceled,
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    NoSuchJob(usize),
    /// Only a manual job that waits can be played.
    NotManual {
        job: usize,
        state: JobState,
    },
    /// Only a job that ended (failed, canceled, …) can be retried.
    NotFinished {
        job: usize,
        state: JobState,
    },
    Canceled,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::NoSuchJob(j) => write!(f, "the pipeline has no job #{j}"),
            InputError::NotManual { job, state } => {
                write!(f, "job #{job} is {} — only a manual job that waits can be played", state.as_str())
            }
            InputError::NotFinished { job, state } => {
                write!(f, "job #{job} is {} — only a job that ended can be retried", state.as_str())
            }
            InputError::Canceled => f.write_str("the pipeline was canceled"),
        }
    }
}

/// The static shape of a job, from the plan.
#[derive(Debug, Clone)]
struct Shape {
    name: String,
    preds: Vec<usize>,
    /// Predecessors come from `needs` (a skipped need skips the job) rather than stages.
    by_needs: bool,
    when: When,
    start_in_ms: i64,
    resource_group: Option<String>,
    allow_failure: bool,
    allowed_exit_codes: Vec<i32>,
}

/// The changing state of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSnapshot {
    pub state: JobState,
    /// When a scheduled (delayed) job is due, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_ms: Option<i64>,
    /// Started by a play input: runs as `on_success` instead of waiting.
    #[serde(default)]
    pub played: bool,
    /// Times it was started.
    #[serde(default)]
    pub attempts: u32,
}

/// Everything that changes in a scheduler, as data (what the server persists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The job names, to refuse a snapshot of another plan.
    pub names: Vec<String>,
    pub jobs: Vec<JobSnapshot>,
    pub canceled: bool,
}

pub struct Scheduler {
    shapes: Vec<Shape>,
    jobs: Vec<JobSnapshot>,
    concurrency: usize,
    canceled: bool,
    /// Jobs whose state changed since the last [`Scheduler::take_changes`].
    changed: Vec<usize>,
}

impl Scheduler {
    /// `manual`: names of manual jobs the user asked to start with the run.
    pub fn new(plan: &Plan, concurrency: usize, manual: &[String]) -> Scheduler {
        let index: HashMap<&str, usize> = plan.jobs.iter().enumerate().map(|(i, j)| (j.name.as_str(), i)).collect();
        let shapes = plan
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
                Shape {
                    name: j.name.clone(),
                    preds,
                    by_needs,
                    when: j.when,
                    start_in_ms: j.start_in.map_or(0, |d| d.as_millis() as i64),
                    resource_group: j.resource_group.clone(),
                    allow_failure: j.allow_failure.allowed,
                    allowed_exit_codes: j.allow_failure.exit_codes.clone(),
                }
            })
            .collect::<Vec<_>>();
        let jobs = plan
            .jobs
            .iter()
            .map(|j| JobSnapshot {
                state: JobState::Created,
                due_ms: None,
                played: j.when == When::Manual && manual.iter().any(|m| *m == j.name || *m == j.base),
                attempts: 0,
            })
            .collect();
        Scheduler { shapes, jobs, concurrency: concurrency.max(1), canceled: false, changed: Vec::new() }
    }

    /// The scheduler's state as data.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            names: self.shapes.iter().map(|s| s.name.clone()).collect(),
            jobs: self.jobs.clone(),
            canceled: self.canceled,
        }
    }

    /// A scheduler for `plan` in the state `snap` recorded. Jobs that were running are
    /// running still: the driver reports how they end (or that they were lost).
    pub fn restore(plan: &Plan, concurrency: usize, snap: &Snapshot) -> Result<Scheduler, String> {
        let mut s = Scheduler::new(plan, concurrency, &[]);
        let names: Vec<&str> = s.shapes.iter().map(|x| x.name.as_str()).collect();
        if names != snap.names.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(format!(
                "the snapshot is of another pipeline ({} jobs, this one has {})",
                snap.names.len(),
                names.len()
            ));
        }
        s.jobs = snap.jobs.clone();
        s.canceled = snap.canceled;
        Ok(s)
    }

    pub fn status(&self, i: usize) -> JobState {
        self.jobs[i].state
    }

    pub fn attempts(&self, i: usize) -> u32 {
        self.jobs[i].attempts
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn running(&self) -> usize {
        self.jobs.iter().filter(|j| j.state == JobState::Running).count()
    }

    /// Whether every job has reached a state that needs an input to leave.
    pub fn done(&self) -> bool {
        self.jobs.iter().all(|j| j.state.is_terminal())
    }

    pub fn is_canceled(&self) -> bool {
        self.canceled
    }

    /// The jobs whose state changed since the last call, with their state now.
    pub fn take_changes(&mut self) -> Vec<(usize, JobState)> {
        let mut seen = HashSet::new();
        let changed: Vec<usize> = std::mem::take(&mut self.changed).into_iter().filter(|i| seen.insert(*i)).collect();
        changed.into_iter().map(|i| (i, self.jobs[i].state)).collect()
    }

    fn set(&mut self, i: usize, state: JobState) {
        if self.jobs[i].state != state {
            self.jobs[i].state = state;
            self.changed.push(i);
        }
    }

    /// Records the end of a running job.
    pub fn finished(&mut self, i: usize, outcome: Outcome) {
        if self.jobs.get(i).is_none_or(|j| j.state != JobState::Running) {
            return;
        }
        let shape = &self.shapes[i];
        let state = match outcome {
            Outcome::Success => JobState::Success,
            Outcome::Canceled => JobState::Canceled,
            Outcome::Failed { exit_code } => {
                let allowed = shape.allow_failure
                    && (shape.allowed_exit_codes.is_empty()
                        || exit_code.is_some_and(|c| shape.allowed_exit_codes.contains(&c)));
                if allowed { JobState::AllowedFailure } else { JobState::Failed }
            }
        };
        self.set(i, state);
    }

    /// Cancels the pipeline: jobs not yet started end as canceled; running ones are the
    /// driver's to stop (it reports them through [`Scheduler::finished`]).
    pub fn cancel(&mut self) {
        self.canceled = true;
        for i in 0..self.jobs.len() {
            if matches!(self.jobs[i].state, JobState::Created | JobState::Pending | JobState::Scheduled) {
                self.set(i, JobState::Canceled);
            }
        }
    }

    /// Starts a manual job that waits (GitLab's "play").
    pub fn play(&mut self, i: usize) -> Result<(), InputError> {
        let job = self.jobs.get(i).ok_or(InputError::NoSuchJob(i))?;
        if self.canceled {
            return Err(InputError::Canceled);
        }
        if job.state != JobState::Manual {
            return Err(InputError::NotManual { job: i, state: job.state });
        }
        self.jobs[i].played = true;
        self.set(i, JobState::Created);
        Ok(())
    }

    /// Runs a job that ended again (GitLab's "retry"); the jobs it kept from running are
    /// decided again too.
    pub fn retry(&mut self, i: usize) -> Result<(), InputError> {
        let job = self.jobs.get(i).ok_or(InputError::NoSuchJob(i))?;
        if !matches!(job.state, JobState::Failed | JobState::AllowedFailure | JobState::Canceled | JobState::Success) {
            return Err(InputError::NotFinished { job: i, state: job.state });
        }
        self.canceled = false;
        self.set(i, JobState::Created);
        // Every job that depends on a reset one and did not run is undecided again.
        let mut reset = vec![i];
        loop {
            let more: Vec<usize> = (0..self.jobs.len())
                .filter(|&k| {
                    !reset.contains(&k)
                        && matches!(self.jobs[k].state, JobState::Skipped | JobState::Canceled)
                        && self.shapes[k].preds.iter().any(|p| reset.contains(p))
                })
                .collect();
            if more.is_empty() {
                break;
            }
            for k in more {
                self.set(k, JobState::Created);
                reset.push(k);
            }
        }
        Ok(())
    }

    /// Runs every failed job again.
    pub fn retry_failed(&mut self) -> usize {
        let failed: Vec<usize> = (0..self.jobs.len()).filter(|&i| self.jobs[i].state == JobState::Failed).collect();
        for &i in &failed {
            let _ = self.retry(i);
        }
        failed.len()
    }

    /// Advances every job that can move at `now_ms` and returns what the driver must do.
    pub fn step(&mut self, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.canceled {
            return actions;
        }
        // Resolve jobs whose fate is decided, until nothing changes (skips cascade).
        loop {
            let mut changed = false;
            for i in 0..self.jobs.len() {
                if self.jobs[i].state != JobState::Created {
                    continue;
                }
                let Some(decision) = self.decide(i) else {
                    continue;
                };
                changed = true;
                match decision {
                    Decision::Run if self.shapes[i].when == When::Delayed => {
                        self.jobs[i].due_ms = Some(now_ms + self.shapes[i].start_in_ms);
                        self.set(i, JobState::Scheduled);
                    }
                    Decision::Run => self.set(i, JobState::Pending),
                    Decision::Skip(why) => {
                        self.set(i, JobState::Skipped);
                        actions.push(Action::Skip(i, why));
                    }
                    Decision::Manual => self.set(i, JobState::Manual),
                }
            }
            if !changed {
                break;
            }
        }
        // Delayed jobs that are due wait for a slot like the others.
        let mut wake: Option<i64> = None;
        for i in 0..self.jobs.len() {
            if self.jobs[i].state == JobState::Scheduled {
                let due = self.jobs[i].due_ms.unwrap_or(now_ms);
                if due <= now_ms {
                    self.set(i, JobState::Pending);
                } else {
                    wake = Some(wake.map_or(due, |w| w.min(due)));
                }
            }
        }
        // Start what is pending, within the concurrency limit and resource groups, in plan order.
        let mut running = self.running();
        let mut busy: HashSet<String> = (0..self.jobs.len())
            .filter(|&i| self.jobs[i].state == JobState::Running)
            .filter_map(|i| self.shapes[i].resource_group.clone())
            .collect();
        for i in 0..self.jobs.len() {
            if self.jobs[i].state != JobState::Pending {
                continue;
            }
            if running >= self.concurrency {
                break;
            }
            if let Some(g) = &self.shapes[i].resource_group {
                if busy.contains(g) {
                    continue;
                }
                busy.insert(g.clone());
            }
            self.jobs[i].attempts += 1;
            self.set(i, JobState::Running);
            running += 1;
            actions.push(Action::Start(i));
        }
        if let Some(w) = wake {
            actions.push(Action::WakeAt(w));
        }
        actions
    }

    fn decide(&self, i: usize) -> Option<Decision> {
        let j = &self.shapes[i];
        let state = |p: usize| self.jobs[p].state;
        // Stage order: unstarted manual jobs do not hold later stages back unless they are
        // blocking (allow_failure: false), as in GitLab.
        if j.preds.iter().any(|&p| !state(p).is_terminal()) {
            return None;
        }
        let failed = j.preds.iter().any(|&p| state(p) == JobState::Failed);
        if j.by_needs {
            if let Some(p) =
                j.preds.iter().find(|&&p| matches!(state(p), JobState::Skipped | JobState::Manual | JobState::Canceled))
                && j.when != When::Always
            {
                return Some(Decision::Skip(format!("needed job `{}` did not run", self.shapes[*p].name)));
            }
        } else if let Some(p) = j.preds.iter().find(|&&p| state(p) == JobState::Manual && !self.shapes[p].allow_failure)
            && j.when != When::Always
        {
            return Some(Decision::Skip(format!("blocked by manual job `{}`", self.shapes[*p].name)));
        }
        let when = if j.when == When::Manual && self.jobs[i].played { When::OnSuccess } else { j.when };
        Some(match when {
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
    use slipway_model::run::JobState;
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
        let (statuses, started) = drive_from(&mut s, plan, concurrency, fail, usize::MAX);
        (statuses, started)
    }

    /// Runs `s` until it is done or `limit` jobs finished (then leaves the rest running).
    fn drive_from(
        s: &mut Scheduler,
        plan: &Plan,
        concurrency: usize,
        fail: &[&str],
        limit: usize,
    ) -> (Vec<(String, &'static str)>, Vec<String>) {
        let mut started = Vec::new();
        let mut now = 1_000_000;
        let mut running: Vec<usize> = (0..s.len()).filter(|&i| s.status(i) == JobState::Running).collect();
        let mut finished = 0;
        loop {
            if finished >= limit {
                break;
            }
            // An hour passes between events: delayed jobs come due.
            now += 3_600_000;
            for a in s.step(now) {
                if let Action::Start(i) = a {
                    started.push(plan.jobs[i].name.clone());
                    running.push(i);
                }
            }
            if running.is_empty() {
                if s.done() || now > 1_000_000_000 {
                    break;
                }
                continue; // a delayed job is not due yet
            }
            assert!(running.len() <= concurrency);
            let i = running.remove(0);
            let outcome = if fail.contains(&plan.jobs[i].name.as_str()) {
                Outcome::Failed { exit_code: Some(1) }
            } else {
                Outcome::Success
            };
            s.finished(i, outcome);
            finished += 1;
        }
        if limit == usize::MAX {
            assert!(s.done());
        }
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
        s.step(0);
        s.finished(0, Outcome::Failed { exit_code: Some(1) });
        assert_eq!(s.status(0), JobState::Failed);
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
        let started: Vec<Action> = s.step(0).into_iter().filter(|a| matches!(a, Action::Start(_))).collect();
        assert_eq!(started, vec![Action::Start(0), Action::Start(2)]);
        assert_eq!(s.status(1), JobState::Pending, "waits for its resource group");
        s.finished(0, Outcome::Success);
        assert_eq!(s.step(0), vec![Action::Start(1)]);
    }

    #[test]
    fn delayed_jobs_wait_for_their_time() {
        let p = plan("a: {script: x, when: delayed, start_in: 10s}\n");
        let mut s = Scheduler::new(&p, 1, &[]);
        let t0 = 1_764_000_000_000;
        assert_eq!(s.step(t0), vec![Action::WakeAt(t0 + 10_000)]);
        assert_eq!(s.status(0), JobState::Scheduled);
        assert_eq!(s.step(t0 + 9_999), vec![Action::WakeAt(t0 + 10_000)]);
        assert_eq!(s.step(t0 + 10_000), vec![Action::Start(0)]);
    }

    #[test]
    fn cancel_marks_pending_jobs_canceled() {
        let p = plan("stages: [a, b]\nj1: {stage: a, script: x}\nj2: {stage: b, script: x}\n");
        let mut s = Scheduler::new(&p, 1, &[]);
        s.step(0);
        s.cancel();
        s.finished(0, Outcome::Canceled);
        assert_eq!((s.status(0), s.status(1)), (JobState::Canceled, JobState::Canceled));
        assert!(s.done());
    }

    #[test]
    fn a_snapshot_taken_mid_run_restores_into_a_new_scheduler_that_ends_the_same() {
        let p = plan(
            "stages: [a, b, c]\nj1: {stage: a, script: x}\nj2: {stage: a, script: x, when: delayed, start_in: 5s}\nj3: {stage: b, needs: [j1], script: x}\nj4: {stage: b, script: x}\nj5: {stage: c, script: x, when: on_failure}\nj6: {stage: c, script: x, when: manual}\n",
        );
        let (whole, _) = drive(&p, 2, &["j4"]);
        let mut s = Scheduler::new(&p, 2, &[]);
        drive_from(&mut s, &p, 2, &["j4"], 2);
        let snap = s.snapshot();
        // Through JSON, as the server stores it.
        let snap: Snapshot = serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();
        assert!(snap.jobs.iter().any(|j| j.state == JobState::Running), "mid-run: {snap:?}");
        let mut restored = Scheduler::restore(&p, 2, &snap).unwrap();
        let (after, _) = drive_from(&mut restored, &p, 2, &["j4"], usize::MAX);
        assert_eq!(after, whole);
        assert!(Scheduler::restore(&plan("only: {script: x}\n"), 2, &snap).is_err(), "another plan's snapshot");
    }

    #[test]
    fn manual_jobs_are_played_and_failed_jobs_retried_with_what_they_held_back() {
        let p = plan(
            "stages: [build, deploy, after]\nbuild: {stage: build, script: x}\ndeploy: {stage: deploy, script: x, when: manual, allow_failure: false}\nsmoke: {stage: after, script: x}\n",
        );
        let mut s = Scheduler::new(&p, 2, &[]);
        assert_eq!(s.step(0), vec![Action::Start(0)]);
        s.finished(0, Outcome::Success);
        let actions = s.step(0);
        assert_eq!(s.status(1), JobState::Manual);
        assert!(
            matches!(&actions[..], [Action::Skip(2, why)] if why.contains("blocked by manual job `deploy`")),
            "{actions:?}"
        );
        assert!(s.done(), "waiting for a person is an end until someone acts");
        assert_eq!(s.play(0), Err(InputError::NotManual { job: 0, state: JobState::Success }));
        s.play(1).unwrap();
        assert_eq!(s.step(0), vec![Action::Start(1)]);
        s.finished(1, Outcome::Failed { exit_code: Some(1) });
        s.step(0);
        assert_eq!(s.status(2), JobState::Skipped);
        // A retry runs the job again and decides what it held back again.
        assert_eq!(s.retry(2), Err(InputError::NotFinished { job: 2, state: JobState::Skipped }));
        assert_eq!(s.retry_failed(), 1);
        assert_eq!((s.status(1), s.status(2)), (JobState::Created, JobState::Created));
        assert_eq!(s.step(0), vec![Action::Start(1)]);
        assert_eq!(s.attempts(1), 2);
        s.finished(1, Outcome::Success);
        assert_eq!(s.step(0), vec![Action::Start(2)]);
        s.finished(2, Outcome::Success);
        s.step(0);
        assert!(s.done());
        let changed: Vec<usize> = s.take_changes().into_iter().map(|(i, _)| i).collect();
        assert_eq!(changed, [0, 1, 2], "every job changed, each reported once");
        assert!(s.take_changes().is_empty());
    }
}
