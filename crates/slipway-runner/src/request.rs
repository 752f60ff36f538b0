//! What a run is asked for, checked before anything runs: variables and secrets given to it
//! (`NAME=VALUE`, dotenv files), the jobs to run (by job or instance name, with what they
//! need), the manual jobs to start. Every refusal says what was wrong and what to write.

use std::collections::BTreeSet;
use std::path::Path;

use slipway_pipeline::diag::did_you_mean;
use slipway_pipeline::model::When;
use slipway_pipeline::plan::Plan;

/// Bad input, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub message: String,
    pub hint: Option<String>,
}

impl InputError {
    fn new(message: String, hint: Option<String>) -> InputError {
        InputError { message, hint }
    }
}

/// `NAME=VALUE` assignments of `flag` (`--var`, `--secret`).
pub fn assignments(list: &[String], flag: &str) -> Result<Vec<(String, String)>, InputError> {
    list.iter()
        .map(|s| {
            let (k, v) = s.split_once('=').ok_or_else(|| {
                InputError::new(
                    format!("{flag} `{s}` is not NAME=VALUE"),
                    Some(format!("write e.g. {flag} DEPLOY_ENV=staging")),
                )
            })?;
            if k.is_empty()
                || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || k.as_bytes()[0].is_ascii_digit()
            {
                return Err(InputError::new(
                    format!("{flag}: `{k}` is not a valid variable name"),
                    Some("use letters, digits and `_`, not starting with a digit".into()),
                ));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The secrets of a run: `--secret` assignments and dotenv files of them. Values shorter than
/// 8 characters are refused, as GitLab does: masking them would garble the output.
pub fn secrets(given: &[String], files: &[impl AsRef<Path>]) -> Result<Vec<(String, String)>, InputError> {
    let mut pairs = assignments(given, "--secret")?;
    for f in files {
        let f = f.as_ref();
        let text = std::fs::read_to_string(f)
            .map_err(|e| InputError::new(format!("--secret-file {}: {e}", f.display()), None))?;
        let vars = crate::files::parse_dotenv(&text)
            .map_err(|e| InputError::new(format!("--secret-file {}: {e}", f.display()), None))?;
        pairs.extend(vars);
    }
    if let Some((k, _)) = pairs.iter().find(|(_, v)| v.len() < 8) {
        return Err(InputError::new(
            format!("secret `{k}` is shorter than 8 characters"),
            Some("masking very short values would garble the output; GitLab requires 8 or more characters too".into()),
        ));
    }
    Ok(pairs)
}

/// Keeps only the named jobs (and with `needs`, what they need, transitively).
pub fn select(plan: &mut Plan, wanted: &[String], with_needs: bool) -> Result<(), InputError> {
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for w in wanted {
        let matches: Vec<&str> =
            plan.jobs.iter().filter(|j| j.name == *w || j.base == *w).map(|j| j.name.as_str()).collect();
        if matches.is_empty() {
            let hint = match did_you_mean(w, plan.jobs.iter().map(|j| j.name.as_str())) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "`slipway list` shows the jobs of this commit's pipeline".into(),
            };
            return Err(InputError::new(format!("no job `{w}` in this pipeline"), Some(hint)));
        }
        keep.extend(matches.into_iter().map(str::to_string));
    }
    if with_needs {
        let mut stack: Vec<String> = keep.iter().cloned().collect();
        while let Some(n) = stack.pop() {
            if let Some(j) = plan.job(&n) {
                for need in j.needs.iter().flatten() {
                    if keep.insert(need.job.clone()) {
                        stack.push(need.job.clone());
                    }
                }
            }
        }
    }
    plan.jobs.retain(|j| keep.contains(&j.name));
    for j in &mut plan.jobs {
        if let Some(n) = &mut j.needs {
            n.retain(|n| keep.contains(&n.job));
        }
        j.artifacts_from.retain(|a| keep.contains(a));
    }
    let stages: Vec<String> =
        plan.stages.iter().filter(|s| plan.jobs.iter().any(|j| &j.stage == *s)).cloned().collect();
    plan.stages = stages;
    Ok(())
}

/// Checks that every name of `manual` is a manual job of the plan.
pub fn check_manual(plan: &Plan, manual: &[String]) -> Result<(), InputError> {
    let manual_jobs = || plan.jobs.iter().filter(|j| j.when == When::Manual);
    for m in manual {
        if !manual_jobs().any(|j| j.name == *m || j.base == *m) {
            let hint = did_you_mean(m, manual_jobs().map(|j| j.name.as_str())).map(|s| format!("did you mean `{s}`?"));
            return Err(InputError::new(format!("--manual {m}: no manual job of that name in this pipeline"), hint));
        }
    }
    Ok(())
}

/// The jobs that ask for a container (`image:`, `services:`), which the shell executor runs
/// on the host.
pub fn container_jobs(plan: &Plan) -> Vec<String> {
    plan.jobs.iter().filter(|j| j.image.is_some() || !j.services.is_empty()).map(|j| j.name.clone()).collect()
}
