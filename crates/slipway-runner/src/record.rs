//! Where local runs are recorded: a project's `.slipway/` (ignored by git) holds
//! `runs/<id>/` — `plan.json`, `logs/<job>.log`, `artifacts/`, `summary.json` — and
//! `runs/latest`, the caches and the kept workspaces. Run ids are taken by creating the
//! directory (two runs at once never share one), and what an interrupted run left behind is
//! repaired by the next.

use std::path::{Path, PathBuf};

use slipway_model::run::RunRecord;

/// A project's `.slipway` directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
}

/// A run's directory, taken.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub id: u64,
    pub dir: PathBuf,
}

impl StateDir {
    /// The project's `.slipway`, created with the `.gitignore` that keeps it out of git.
    pub fn of(root: &Path) -> std::io::Result<StateDir> {
        let dir = root.join(".slipway");
        std::fs::create_dir_all(&dir)?;
        let ignore = dir.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(&ignore, "# slipway's local state (runs, caches, reports); never committed\n*\n")?;
        }
        Ok(StateDir { dir })
    }

    pub fn runs(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// Takes the next run id: one more than the highest, skipping ids another run takes at
    /// the same moment.
    pub fn next_run(&self) -> std::io::Result<RunDir> {
        let runs = self.runs();
        std::fs::create_dir_all(&runs)?;
        let max = std::fs::read_dir(&runs)?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()))
            .max()
            .unwrap_or(0);
        let mut id = max + 1;
        loop {
            let dir = runs.join(id.to_string());
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(RunDir { id, dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Repairs what interrupted runs left behind: temporary workspaces of runs that are no
    /// longer running (their lock is free) and half-written cache entries of dead processes.
    pub fn repair(&self) {
        if let Ok(rd) = std::fs::read_dir(self.runs()) {
            for e in rd.flatten() {
                let ws = e.path().join("ws");
                if ws.is_dir() && matches!(crate::workspace::lock(&ws), Ok(Some(_))) {
                    crate::workspace::remove_tree(&ws);
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.dir.join("cache")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name
                    .strip_prefix(".tmp-")
                    .or_else(|| name.strip_prefix(".old-"))
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !slipway_sys::process::alive(p)) {
                    crate::workspace::remove_tree(&e.path());
                }
            }
        }
    }

    /// A recorded run: `id`, or the latest.
    pub fn run(&self, id: Option<&str>) -> Option<RunDir> {
        let dir = self.runs().join(id.unwrap_or("latest"));
        let id = match id {
            Some(i) => i.parse().ok()?,
            None => std::fs::read_link(&dir).ok()?.to_str()?.parse().ok()?,
        };
        dir.is_dir().then_some(RunDir { id, dir })
    }
}

impl RunDir {
    /// Where a job's log is (the job's name made safe for a file name).
    pub fn log(&self, job: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{}.log", crate::exec::slug(job)))
    }

    /// The jobs that have logs in this run.
    pub fn logged_jobs(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("logs"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.strip_suffix(".log")).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn write_plan(&self, plan: &serde_json::Value) -> std::io::Result<()> {
        std::fs::write(self.dir.join("plan.json"), serde_json::to_vec_pretty(plan).map_err(std::io::Error::other)?)
    }

    /// Writes `summary.json` (the `pipeline_finished` event) and points `runs/latest` here.
    pub fn finish(&self, record: &RunRecord) -> std::io::Result<()> {
        let event = slipway_model::event::RunEvent::PipelineFinished(record.clone());
        std::fs::write(
            self.dir.join("summary.json"),
            serde_json::to_vec_pretty(&event).map_err(std::io::Error::other)?,
        )?;
        let latest = self.dir.parent().map(|p| p.join("latest")).unwrap_or_default();
        let _ = std::fs::remove_file(&latest);
        let _ = std::os::unix::fs::symlink(self.id.to_string(), &latest);
        Ok(())
    }

    /// Removes a run that never started (its plan failed).
    pub fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
