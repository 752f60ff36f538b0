//! Planning: given the validated pipeline and the facts of one run (variables, changed files,
//! files that exist), decide which jobs run — `workflow:rules`, `rules`, `only`/`except` —,
//! expand `parallel`, resolve `needs`/`dependencies` to job instances, and compute every
//! job's final variables. The result is the job DAG the runner executes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::diag::{Diagnostic, Span};
use crate::expr;
use crate::model::*;
use crate::vars::{self, VarMap};

/// What the planner needs to know about the repository, answered by the caller (the binary
/// asks git); keeps this crate free of process IO.
pub trait Facts {
    /// Files changed by this pipeline, relative to the project root; `compare_to` is the ref
    /// of `rules:changes:compare_to`. `None` means "unknown": GitLab then treats `changes` as true.
    fn changed_files(&self, compare_to: Option<&str>) -> Option<Vec<String>>;
    /// Whether any file in the project matches the glob.
    fn exists(&self, glob: &str) -> bool;
}

/// Run-wide inputs of the planner.
pub struct Context<'a> {
    /// Predefined variables (`CI_*`), lowest precedence.
    pub predefined: VarMap,
    /// Variables given on the command line (`--var`), highest precedence.
    pub overrides: VarMap,
    pub facts: &'a dyn Facts,
    /// `CI_PIPELINE_SOURCE` (`push`, `web`, `schedule`, ...), for `only:`/`except:` refs.
    pub source: String,
    /// First `CI_JOB_ID` to hand out.
    pub first_job_id: u64,
}

#[derive(Debug, Clone)]
pub struct PlannedNeed {
    pub job: String,
    pub artifacts: bool,
}

#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// Instance name (`test 1/3`, `build: [linux, amd64]`, or the job name).
    pub name: String,
    /// The job's name in the file.
    pub base: String,
    pub stage: String,
    pub stage_index: usize,
    pub id: u64,
    pub when: When,
    pub start_in: Option<Duration>,
    pub allow_failure: AllowFailure,
    /// `None`: stage order. `Some`: exactly these jobs (may be empty: start at once).
    pub needs: Option<Vec<PlannedNeed>>,
    /// Jobs whose artifacts this job receives.
    pub artifacts_from: Vec<String>,
    /// `needs:pipeline` + `job`: jobs of the parent pipeline whose artifacts this one takes.
    pub parent_artifacts: Vec<String>,
    pub variables: Vec<(String, String)>,
    /// Values of the job's variables marked `masked: true`, for the output masker.
    pub masked: Vec<String>,
    pub script: Vec<String>,
    pub before_script: Vec<String>,
    pub after_script: Vec<String>,
    pub retry: Retry,
    pub timeout: Option<Duration>,
    pub artifacts: Option<Artifacts>,
    pub cache: Vec<Cache>,
    pub resource_group: Option<String>,
    pub interruptible: bool,
    pub environment: Option<Environment>,
    pub coverage: Option<String>,
    pub tags: Vec<String>,
    pub image: Option<String>,
    pub image_options: crate::model::ImageOptions,
    pub services: Vec<crate::model::Service>,
    pub trigger: Option<crate::model::Trigger>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: Option<String>,
    /// Stages that hold at least one job, in order.
    pub stages: Vec<String>,
    pub jobs: Vec<PlannedJob>,
}

impl Plan {
    pub fn job(&self, name: &str) -> Option<&PlannedJob> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// Why no pipeline was planned.
#[derive(Debug)]
pub enum PlanError {
    /// `workflow:rules` decided not to run.
    Workflow(Span),
    /// Every job was excluded by rules.
    Empty(Span),
    /// Errors found while resolving `needs`/`dependencies` against the included jobs.
    Invalid(Vec<Diagnostic>),
}

/// A job instance's name and its matrix variables.
type Instance = (String, Vec<(String, String)>);

pub fn plan(p: &Pipeline, cx: &Context) -> Result<Plan, PlanError> {
    // Global variables, as the workflow and jobs see them.
    let mut base = cx.predefined.clone();
    for v in &p.variables {
        base.insert(v.name.clone(), v.value.clone());
    }
    let mut wf_vars = Vec::new();
    let mut name = None;
    if let Some(wf) = &p.workflow {
        if !wf.rules.is_empty() {
            let lookup = layered(&base, &cx.overrides);
            match first_matching_rule(&wf.rules, &lookup, cx.facts) {
                Some(r) if r.when != Some(When::Never) => wf_vars = r.variables.clone(),
                Some(r) => return Err(PlanError::Workflow(r.span)),
                None => {
                    return Err(PlanError::Workflow(wf.rules.first().map(|r| r.span).unwrap_or_default()));
                }
            }
        }
        name = wf.name.clone();
    }

    let mut jobs: Vec<PlannedJob> = Vec::new();
    let mut next_id = cx.first_job_id;
    // (base job name) → instance names, with their matrix variables.
    let mut instances: HashMap<&str, Vec<Instance>> = HashMap::new();
    let mut job_rule_needs: HashMap<String, Option<Vec<Need>>> = HashMap::new();
    let mut policy_errors = Vec::new();
    for job in &p.jobs {
        for (inst_name, inst_vars) in expand_parallel(job) {
            let mut vars: Vec<(String, String, bool)> = Vec::new();
            for (k, v) in &cx.predefined {
                vars.push((k.clone(), v.clone(), false));
            }
            for v in &p.variables {
                if job.inherit_variables.allows(&v.name) {
                    vars.push((v.name.clone(), v.value.clone(), v.expand));
                }
            }
            for v in &wf_vars {
                vars.push((v.name.clone(), v.value.clone(), v.expand));
            }
            for v in &job.variables {
                vars.push((v.name.clone(), v.value.clone(), v.expand));
            }
            for (k, v) in &inst_vars {
                vars.push((k.clone(), v.clone(), false));
            }
            let stage_index = p.stages.iter().position(|s| *s == job.stage).unwrap_or(0);
            for (k, v) in [
                ("CI_JOB_NAME", inst_name.clone()),
                ("CI_JOB_NAME_SLUG", vars::slug(&inst_name)),
                ("CI_JOB_STAGE", job.stage.clone()),
                ("CI_JOB_ID", next_id.to_string()),
            ] {
                vars.push((k.to_string(), v, false));
            }
            let raw = to_map(&vars, &cx.overrides);
            // Decide whether the instance runs.
            let lookup = |k: &str| raw.get(k).cloned();
            let mut when = job.when;
            let mut start_in = job.start_in;
            let mut allow_failure = job.allow_failure.clone();
            let mut needs = job.needs.clone();
            if let Some(rules) = &job.rules {
                match first_matching_rule(rules, &lookup, cx.facts) {
                    None => continue,
                    Some(r) => {
                        when = r.when.unwrap_or(if job.when == When::Never { When::OnSuccess } else { job.when });
                        if r.start_in.is_some() {
                            start_in = r.start_in;
                        }
                        allow_failure = AllowFailure {
                            // GitLab: `when: manual` in a rule defaults to false, a job-level
                            // `when: manual` that the rule keeps to true.
                            allowed: r.allow_failure.unwrap_or(if job.allow_failure.explicit {
                                job.allow_failure.allowed
                            } else {
                                r.when.is_none() && job.when == When::Manual
                            }),
                            exit_codes: job.allow_failure.exit_codes.clone(),
                            explicit: r.allow_failure.is_some() || job.allow_failure.explicit,
                        };
                        if r.needs.is_some() {
                            needs = r.needs.clone();
                        }
                        for v in &r.variables {
                            vars.push((v.name.clone(), v.value.clone(), v.expand));
                        }
                    }
                }
            } else if !filters_pass(job, &lookup, cx) {
                continue;
            }
            if when == When::Never {
                continue;
            }
            let final_vars = finalize_vars(&vars, &cx.overrides);
            let fmap: VarMap = final_vars.iter().cloned().collect();
            let rule_vars = job.rules.as_ref().into_iter().flatten().flat_map(|r| r.variables.iter());
            let masked: Vec<String> = p
                .variables
                .iter()
                .chain(&job.variables)
                .chain(rule_vars)
                .filter(|v| v.masked)
                .filter_map(|v| fmap.get(&v.name).cloned())
                .filter(|v| !v.is_empty())
                .collect();
            let x = |s: &str| vars::expand_map(s, &fmap);
            // Artifact and cache paths are the project's: `$CI_PROJECT_DIR/out/` is `out/`
            // wherever the job's workspace is.
            let project_dir = fmap.get("CI_PROJECT_DIR").cloned().unwrap_or_default();
            let xp = |s: &str| {
                let p = x(s);
                match p.strip_prefix(project_dir.as_str()).filter(|_| !project_dir.is_empty()) {
                    Some("") => ".".to_string(),
                    Some(rest) if rest.starts_with('/') => rest.trim_start_matches('/').to_string(),
                    _ => p,
                }
            };
            job_rule_needs.insert(inst_name.clone(), needs);
            instances.entry(job.name.as_str()).or_default().push((inst_name.clone(), inst_vars.clone()));
            let job_name = inst_name.clone();
            jobs.push(PlannedJob {
                name: inst_name,
                base: job.name.clone(),
                stage: job.stage.clone(),
                stage_index,
                id: next_id,
                when,
                start_in,
                allow_failure,
                needs: None,
                artifacts_from: Vec::new(),
                parent_artifacts: Vec::new(),
                variables: final_vars.clone(),
                masked,
                script: job.script.clone(),
                before_script: job.before_script.clone(),
                after_script: job.after_script.clone(),
                retry: job.retry.clone(),
                timeout: job.timeout,
                artifacts: job.artifacts.clone().map(|mut a| {
                    a.paths = a.paths.iter().map(|s| xp(s)).collect();
                    a.exclude = a.exclude.iter().map(|s| xp(s)).collect();
                    a.name = a.name.map(|s| x(&s));
                    a
                }),
                cache: job
                    .cache
                    .iter()
                    .map(|c| {
                        let mut c = c.clone();
                        c.key = match c.key {
                            CacheKey::Literal(k) => CacheKey::Literal(x(&k)),
                            CacheKey::Files { files, prefix } => {
                                CacheKey::Files { files, prefix: prefix.map(|p| x(&p)) }
                            }
                        };
                        c.paths = c.paths.iter().map(|s| xp(s)).collect();
                        c.fallback_keys = c.fallback_keys.iter().map(|s| x(s)).collect();
                        if let Some((var, span)) = c.policy_var.take() {
                            c.policy = match x(&var).as_str() {
                                "pull" => CachePolicy::Pull,
                                "push" => CachePolicy::Push,
                                // Unset expands to nothing: the default, as in GitLab.
                                "pull-push" | "" => CachePolicy::PullPush,
                                other => {
                                    policy_errors.push(
                                        Diagnostic::error(
                                            span,
                                            format!("`cache:policy` `{var}` is `{other}` in job `{job_name}`"),
                                        )
                                        .with_hint("the variable must hold pull, push or pull-push"),
                                    );
                                    CachePolicy::PullPush
                                }
                            };
                        }
                        c
                    })
                    .collect(),
                resource_group: job.resource_group.as_deref().map(x),
                interruptible: job.interruptible,
                environment: job.environment.clone().map(|e| Environment {
                    name: x(&e.name),
                    url: e.url.map(|u| x(&u)),
                    action: e.action,
                }),
                coverage: job.coverage.as_ref().map(|r| r.as_str().to_string()),
                tags: job.tags.iter().map(|t| x(t)).collect(),
                image: job.image.as_deref().map(x),
                image_options: job.image_options.clone(),
                services: job
                    .services
                    .iter()
                    .map(|s| crate::model::Service {
                        name: x(&s.name),
                        alias: s.alias.iter().map(|a| x(a)).collect(),
                        variables: s.variables.iter().map(|(k, v)| (k.clone(), x(v))).collect(),
                        ..s.clone()
                    })
                    .collect(),
                trigger: job.trigger.as_ref().map(|t| crate::model::Trigger {
                    include: t
                        .include
                        .iter()
                        .map(|i| match i {
                            crate::model::TriggerInclude::Local { local } => {
                                crate::model::TriggerInclude::Local { local: x(local) }
                            }
                            crate::model::TriggerInclude::Artifact { artifact, job } => {
                                crate::model::TriggerInclude::Artifact { artifact: x(artifact), job: job.clone() }
                            }
                        })
                        .collect(),
                    ..t.clone()
                }),
            });
            next_id += 1;
        }
    }
    if jobs.is_empty() {
        return Err(PlanError::Empty(p.jobs.first().map(|j| j.span).unwrap_or_default()));
    }

    // Resolve needs and dependencies against the included instances.
    let mut errors = policy_errors;
    let included: Vec<(String, usize)> = jobs.iter().map(|j| (j.name.clone(), j.stage_index)).collect();
    for pj in &mut jobs {
        let job = p.job(&pj.base).expect("planned from this pipeline");
        let needs = job_rule_needs.remove(&pj.name).flatten();
        // Another pipeline's jobs are not this one's: their artifacts come from there (a job
        // that needs only those starts at once, as any job with `needs`).
        let had_needs = needs.is_some();
        let (other, needs): (Vec<_>, Vec<_>) =
            needs.unwrap_or_default().into_iter().partition(|n| n.pipeline.is_some());
        let needs = had_needs.then_some(needs);
        pj.parent_artifacts = other.iter().filter(|n| n.artifacts).map(|n| n.job.clone()).collect();
        if let Some(needs) = needs {
            let mut out = Vec::new();
            for need in &needs {
                // A need of one instance by its generated name: that instance alone.
                let one: Vec<Instance> = match instances.get(need.job.as_str()) {
                    Some(_) => Vec::new(),
                    None => instance_base(&need.job)
                        .and_then(|b| instances.get(b))
                        .into_iter()
                        .flatten()
                        .filter(|(n, _)| *n == need.job)
                        .cloned()
                        .collect(),
                };
                let found = instances.get(need.job.as_str()).or((!one.is_empty()).then_some(&one));
                let Some(insts) = found else {
                    let siblings = instance_base(&need.job).and_then(|b| instances.get(b).map(|i| (b, i)));
                    if let (Some((base, insts)), false) = (siblings, need.optional) {
                        let names: Vec<&str> = insts.iter().map(|(n, _)| n.as_str()).collect();
                        errors.push(Diagnostic::error(
                            need.span,
                            format!(
                                "job `{}` needs `{}`, but `{base}` has no such instance (it has {})",
                                pj.name,
                                need.job,
                                names.join(", ")
                            ),
                        ));
                        continue;
                    }
                    if !need.optional {
                        errors.push(
                            Diagnostic::error(
                                need.span,
                                format!(
                                    "job `{}` needs `{}`, but `{}` is not in this pipeline (its rules excluded it)",
                                    pj.name, need.job, need.job
                                ),
                            )
                            .with_hint("mark the need `optional: true`, or give both jobs the same rules"),
                        );
                    }
                    continue;
                };
                let mut matched = false;
                for (inst, ivars) in insts {
                    if let Some(mx) = &need.matrix
                        && !matrix_selects(mx, ivars)
                    {
                        continue;
                    }
                    matched = true;
                    out.push(PlannedNeed { job: inst.clone(), artifacts: need.artifacts });
                }
                if !matched && !need.optional {
                    errors.push(Diagnostic::error(
                        need.span,
                        format!(
                            "job `{}` needs `{}` with a `parallel:matrix` that matches none of its instances",
                            pj.name, need.job
                        ),
                    ));
                }
            }
            pj.needs = Some(out);
        }
        pj.artifacts_from = match (&job.dependencies, &pj.needs) {
            (Some(deps), _) => deps
                .iter()
                .flat_map(|(d, _)| match instances.get(d.as_str()) {
                    Some(insts) => insts.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                    // One instance of a `parallel` job, by its generated name.
                    None => instance_base(d)
                        .and_then(|b| instances.get(b))
                        .into_iter()
                        .flatten()
                        .filter(|(n, _)| n == d)
                        .map(|(n, _)| n.clone())
                        .collect(),
                })
                .collect(),
            (None, Some(needs)) => needs.iter().filter(|n| n.artifacts).map(|n| n.job.clone()).collect(),
            (None, None) => included.iter().filter(|(_, s)| *s < pj.stage_index).map(|(n, _)| n.clone()).collect(),
        };
    }
    if !errors.is_empty() {
        return Err(PlanError::Invalid(errors));
    }
    let mut stages: Vec<String> = Vec::new();
    for s in &p.stages {
        if jobs.iter().any(|j| &j.stage == s) {
            stages.push(s.clone());
        }
    }
    Ok(Plan { name, stages, jobs })
}

fn layered<'a>(base: &'a VarMap, over: &'a VarMap) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| over.get(k).or_else(|| base.get(k)).cloned()
}

fn to_map(vars: &[(String, String, bool)], overrides: &VarMap) -> VarMap {
    let mut m = VarMap::new();
    for (k, v, _) in vars {
        m.insert(k.clone(), v.clone());
    }
    for (k, v) in overrides {
        m.insert(k.clone(), v.clone());
    }
    m
}

/// Final job variables: last definition wins; values with `expand` are expanded once against
/// the raw values of all the others (GitLab Runner's behaviour).
fn finalize_vars(vars: &[(String, String, bool)], overrides: &VarMap) -> Vec<(String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut raw: HashMap<String, (String, bool)> = HashMap::new();
    for (k, v, e) in vars {
        if !raw.contains_key(k) {
            order.push(k.clone());
        }
        raw.insert(k.clone(), (v.clone(), *e));
    }
    for (k, v) in overrides {
        if !raw.contains_key(k) {
            order.push(k.clone());
        }
        raw.insert(k.clone(), (v.clone(), false));
    }
    order
        .into_iter()
        .map(|k| {
            let (v, e) = &raw[&k];
            let value = if *e && v.contains('$') {
                vars::expand(v, &|name| {
                    if name == k { None } else { raw.get(name).map(|(v, _)| v.clone()) }
                })
            } else {
                v.clone()
            };
            (k, value)
        })
        .collect()
}

pub(crate) fn first_matching_rule<'r>(
    rules: &'r [Rule],
    vars: &dyn Fn(&str) -> Option<String>,
    facts: &dyn Facts,
) -> Option<&'r Rule> {
    rules.iter().find(|r| rule_matches(r, vars, facts))
}

fn rule_matches(r: &Rule, vars: &dyn Fn(&str) -> Option<String>, facts: &dyn Facts) -> bool {
    if let Some(e) = &r.if_
        && !expr::eval(&e.expr, vars)
    {
        return false;
    }
    if let Some(c) = &r.changes {
        let compare_to = c.compare_to.as_deref().map(|s| vars::expand(s, vars));
        if !changes_match(&c.paths, compare_to.as_deref(), vars, facts) {
            return false;
        }
    }
    if let Some(ex) = &r.exists
        && !ex.iter().any(|g| facts.exists(&vars::expand(g, vars)))
    {
        return false;
    }
    true
}

fn changes_match(
    paths: &[String],
    compare_to: Option<&str>,
    vars: &dyn Fn(&str) -> Option<String>,
    facts: &dyn Facts,
) -> bool {
    let Some(changed) = facts.changed_files(compare_to) else {
        return true;
    };
    let mut b = globset::GlobSetBuilder::new();
    for p in paths {
        let p = vars::expand(p, vars);
        // `dir/` and `dir/**/*` both mean "anything below dir".
        let p = if p.ends_with('/') { format!("{p}**") } else { p };
        if let Ok(g) = globset::GlobBuilder::new(&p).literal_separator(true).build() {
            b.add(g);
        }
    }
    let Ok(set) = b.build() else { return true };
    changed.iter().any(|f| set.is_match(f))
}

fn filters_pass(job: &Job, vars: &dyn Fn(&str) -> Option<String>, cx: &Context) -> bool {
    let default_only = Filter { refs: vec!["branches".into(), "tags".into()], ..Filter::default() };
    let only = job.only.as_ref().unwrap_or(&default_only);
    let only_refs_ok = only.refs.is_empty() || only.refs.iter().any(|r| ref_matches(r, vars, cx));
    let only_vars_ok = only.variables.is_empty() || only.variables.iter().any(|e| expr::eval(&e.expr, vars));
    let only_changes_ok = only.changes.is_empty() || changes_match(&only.changes, None, vars, cx.facts);
    if !(only_refs_ok && only_vars_ok && only_changes_ok) {
        return false;
    }
    if let Some(except) = &job.except
        && (except.refs.iter().any(|r| ref_matches(r, vars, cx))
            || except.variables.iter().any(|e| expr::eval(&e.expr, vars))
            || (!except.changes.is_empty() && changes_match(&except.changes, None, vars, cx.facts)))
    {
        return false;
    }
    true
}

/// An `only:`/`except:` ref as GitLab's `Build::Policy::Refs` reads it: `branches` (not in a
/// merge-request pipeline), `tags`, a pipeline source (`CI_PIPELINE_SOURCE` without `_event`,
/// or its plural: `pushes`, `merge_requests`, `schedules`…), else — on a branch or a tag only —
/// a `/regex/` or a ref name; any of them may end in `@group/project` (split at the first
/// `@`), then it matches only in that project (`CI_PROJECT_PATH`: a fork does not run it).
fn ref_matches(pattern: &str, vars: &dyn Fn(&str) -> Option<String>, cx: &Context) -> bool {
    let ref_name = vars("CI_COMMIT_REF_NAME").unwrap_or_default();
    let is_tag = vars("CI_COMMIT_TAG").is_some_and(|t| !t.is_empty());
    let (pattern, project) = match pattern.split_once('@') {
        Some((p, path)) => (p, Some(path)),
        None => (pattern, None),
    };
    if let Some(path) = project
        && vars("CI_PROJECT_PATH").as_deref() != Some(path)
    {
        return false;
    }
    let mr = cx.source == "merge_request_event";
    let source = cx.source.trim_end_matches("_event");
    let plural = if source.ends_with("sh") { format!("{source}es") } else { format!("{source}s") };
    if (pattern == "tags" && is_tag)
        || (pattern == "branches" && !is_tag && !mr)
        || pattern == source
        || pattern == plural
    {
        return true;
    }
    if mr {
        return false;
    }
    match pattern {
        "branches" | "tags" => false,
        p if p.starts_with('/') && p.len() > 1 => match expr::parse(&format!("$R =~ {p}")) {
            Ok(e) => expr::eval(&e, &|_| Some(ref_name.clone())),
            Err(_) => false,
        },
        p => p == ref_name,
    }
}

fn expand_parallel(job: &Job) -> Vec<(String, Vec<(String, String)>)> {
    match &job.parallel {
        None => vec![(job.name.clone(), Vec::new())],
        Some(Parallel::Count(n)) => (1..=*n)
            .map(|i| {
                (
                    format!("{} {i}/{n}", job.name),
                    vec![("CI_NODE_INDEX".into(), i.to_string()), ("CI_NODE_TOTAL".into(), n.to_string())],
                )
            })
            .collect(),
        Some(Parallel::Matrix(entries)) => {
            let mut combos: Vec<Vec<(String, String)>> = Vec::new();
            for entry in entries {
                let mut acc: Vec<Vec<(String, String)>> = vec![Vec::new()];
                for (k, values) in entry {
                    let mut next = Vec::new();
                    for prefix in &acc {
                        for v in values {
                            let mut c = prefix.clone();
                            c.push((k.clone(), v.clone()));
                            next.push(c);
                        }
                    }
                    acc = next;
                }
                combos.extend(acc);
            }
            let total = combos.len();
            combos
                .into_iter()
                .enumerate()
                .map(|(i, mut c)| {
                    let name =
                        format!("{}: [{}]", job.name, c.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(", "));
                    c.push(("CI_NODE_INDEX".into(), (i + 1).to_string()));
                    c.push(("CI_NODE_TOTAL".into(), total.to_string()));
                    (name, c)
                })
                .collect()
        }
    }
}

/// The job a `parallel` instance's generated name belongs to: `test` of `test: [1.22, linux]`
/// (matrix) or of `test 2/3` (count).
pub fn instance_base(name: &str) -> Option<&str> {
    if name.ends_with(']')
        && let Some((base, _)) = name.split_once(": [")
    {
        return Some(base);
    }
    let (base, last) = name.rsplit_once(' ')?;
    let (i, n) = last.split_once('/')?;
    (i.parse::<u32>().is_ok() && n.parse::<u32>().is_ok()).then_some(base)
}

fn matrix_selects(mx: &[Vec<(String, Vec<String>)>], inst: &[(String, String)]) -> bool {
    mx.iter().any(|entry| entry.iter().all(|(k, vals)| inst.iter().any(|(ik, iv)| ik == k && vals.contains(iv))))
}

/// The plan as a plain tree (for `slipway plan` YAML/JSON output and the run record).
/// Replaces every occurrence of a masked value in the strings (and keys) of `v`.
fn mask_json(v: &mut serde_json::Value, masked: &[String]) {
    let mask = |s: &str| -> Option<String> {
        let hit = masked.iter().filter(|m| !m.is_empty() && s.contains(m.as_str()));
        let mut out: Option<String> = None;
        for m in hit {
            out = Some(out.as_deref().unwrap_or(s).replace(m.as_str(), "[MASKED]"));
        }
        out
    };
    match v {
        serde_json::Value::String(s) => {
            if let Some(m) = mask(s) {
                *s = m;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| mask_json(x, masked)),
        serde_json::Value::Object(o) => {
            let entries: Vec<(String, serde_json::Value)> = std::mem::take(o).into_iter().collect();
            for (k, mut x) in entries {
                mask_json(&mut x, masked);
                o.insert(mask(&k).unwrap_or(k), x);
            }
        }
        _ => {}
    }
}

pub fn to_json(plan: &Plan) -> serde_json::Value {
    let mut list = Vec::new();
    for j in &plan.jobs {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), j.name.clone().into());
        m.insert("stage".into(), j.stage.clone().into());
        m.insert("when".into(), j.when.as_str().into());
        if let Some(d) = j.start_in {
            m.insert("start_in".into(), format!("{}s", d.as_secs()).into());
        }
        if j.allow_failure.allowed {
            m.insert(
                "allow_failure".into(),
                if j.allow_failure.exit_codes.is_empty() {
                    true.into()
                } else {
                    serde_json::json!({"exit_codes": j.allow_failure.exit_codes})
                },
            );
        }
        if let Some(n) = &j.needs {
            m.insert(
                "needs".into(),
                n.iter()
                    .map(|n| {
                        if n.artifacts {
                            n.job.clone().into()
                        } else {
                            serde_json::json!({"job": n.job, "artifacts": false})
                        }
                    })
                    .collect::<Vec<serde_json::Value>>()
                    .into(),
            );
        }
        if !j.artifacts_from.is_empty() {
            m.insert("dependencies".into(), j.artifacts_from.clone().into());
        }
        let user_vars: serde_json::Map<String, serde_json::Value> = j
            .variables
            .iter()
            .filter(|(k, _)| !k.starts_with("CI_") && k != "CI" && k != "SLIPWAY")
            .map(|(k, v)| {
                let shown = if j.masked.contains(v) { "[MASKED]".to_string() } else { v.clone() };
                (k.clone(), shown.into())
            })
            .collect();
        if !user_vars.is_empty() {
            m.insert("variables".into(), user_vars.into());
        }
        if !j.before_script.is_empty() {
            m.insert("before_script".into(), j.before_script.clone().into());
        }
        m.insert("script".into(), j.script.clone().into());
        if !j.after_script.is_empty() {
            m.insert("after_script".into(), j.after_script.clone().into());
        }
        if j.retry.max > 0 {
            let mut r = serde_json::Map::new();
            r.insert("max".into(), j.retry.max.into());
            if !j.retry.when.is_empty() {
                r.insert("when".into(), j.retry.when.clone().into());
            }
            if !j.retry.exit_codes.is_empty() {
                r.insert("exit_codes".into(), j.retry.exit_codes.clone().into());
            }
            m.insert("retry".into(), r.into());
        }
        if let Some(t) = j.timeout {
            m.insert("timeout".into(), format!("{}s", t.as_secs()).into());
        }
        if let Some(a) = &j.artifacts {
            let mut am = serde_json::Map::new();
            if !a.paths.is_empty() {
                am.insert("paths".into(), a.paths.clone().into());
            }
            if !a.exclude.is_empty() {
                am.insert("exclude".into(), a.exclude.clone().into());
            }
            if let Some(e) = &a.expire_in {
                am.insert("expire_in".into(), e.clone().into());
            }
            let mut reports = serde_json::Map::new();
            if !a.dotenv.is_empty() {
                reports.insert("dotenv".into(), a.dotenv.clone().into());
            }
            if !a.junit.is_empty() {
                reports.insert("junit".into(), a.junit.clone().into());
            }
            for (k, v) in &a.other_reports {
                reports.insert(k.clone(), v.clone().into());
            }
            if !reports.is_empty() {
                am.insert("reports".into(), reports.into());
            }
            m.insert("artifacts".into(), am.into());
        }
        if !j.cache.is_empty() {
            let caches: Vec<serde_json::Value> = j
                .cache
                .iter()
                .map(|c| {
                    let key = match &c.key {
                        CacheKey::Literal(k) => serde_json::Value::from(k.clone()),
                        CacheKey::Files { files, prefix } => {
                            serde_json::json!({"files": files, "prefix": prefix})
                        }
                    };
                    let policy = match c.policy {
                        CachePolicy::Pull => "pull",
                        CachePolicy::Push => "push",
                        CachePolicy::PullPush => "pull-push",
                    };
                    serde_json::json!({"key": key, "paths": c.paths, "policy": policy})
                })
                .collect();
            m.insert("cache".into(), caches.into());
        }
        for (k, v) in [("resource_group", &j.resource_group), ("image", &j.image), ("coverage", &j.coverage)] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        if !j.image_options.is_empty() {
            m.insert("image_options".into(), serde_json::to_value(&j.image_options).unwrap_or_default());
        }
        if let Some(t) = &j.trigger {
            m.insert("trigger".into(), serde_json::to_value(t).unwrap_or_default());
        }
        if !j.services.is_empty() {
            let services: Vec<_> = j
                .services
                .iter()
                .map(|s| {
                    let mut v = serde_json::to_value(s).unwrap_or_default();
                    v["aliases"] = s.aliases().into();
                    v
                })
                .collect();
            m.insert("services".into(), services.into());
        }
        if let Some(e) = &j.environment {
            m.insert("environment".into(), serde_json::json!({"name": e.name, "url": e.url}));
        }
        if !j.tags.is_empty() {
            m.insert("tags".into(), j.tags.clone().into());
        }
        // Masked values may reach any field through expansion (a cache key, an image, an
        // environment URL): every string of the record is masked, not only the variables.
        let mut job = serde_json::Value::Object(m);
        mask_json(&mut job, &j.masked);
        list.push(job);
    }
    let mut out = serde_json::Map::new();
    if let Some(n) = &plan.name {
        out.insert("name".into(), n.clone().into());
    }
    out.insert("stages".into(), plan.stages.clone().into());
    out.insert("jobs".into(), list.into());
    serde_json::Value::Object(out)
}

fn ancestors_of(i: usize, preds: &[Vec<usize>], memo: &mut Vec<Option<HashSet<usize>>>) -> HashSet<usize> {
    if let Some(a) = &memo[i] {
        return a.clone();
    }
    memo[i] = Some(HashSet::new()); // guards against cycles (compile rejects them anyway)
    let mut set = HashSet::new();
    for &p in &preds[i] {
        set.insert(p);
        set.extend(ancestors_of(p, preds, memo));
    }
    memo[i] = Some(set.clone());
    set
}

/// The plan's job graph as a Mermaid flowchart, one subgraph per stage.
pub fn to_mermaid(plan: &Plan) -> String {
    let id: HashMap<&str, String> =
        plan.jobs.iter().enumerate().map(|(i, j)| (j.name.as_str(), format!("j{i}"))).collect();
    let mut out = String::from("flowchart LR\n");
    for (si, stage) in plan.stages.iter().enumerate() {
        out.push_str(&format!("  subgraph s{si}[\"{}\"]\n", stage.replace('"', "#quot;")));
        for j in plan.jobs.iter().filter(|j| &j.stage == stage) {
            let label = j.name.replace('"', "#quot;");
            let shape = match j.when {
                When::Manual => format!("{}[/\"{label}\"/]", id[j.name.as_str()]),
                _ => format!("{}[\"{label}\"]", id[j.name.as_str()]),
            };
            out.push_str(&format!("    {shape}\n"));
        }
        out.push_str("  end\n");
    }
    // Direct predecessors of every job: its needs, or every job of the earlier stages.
    let preds: Vec<Vec<usize>> = plan
        .jobs
        .iter()
        .map(|j| match &j.needs {
            Some(n) => n.iter().filter_map(|n| plan.jobs.iter().position(|p| p.name == n.job)).collect(),
            None => {
                plan.jobs.iter().enumerate().filter(|(_, p)| p.stage_index < j.stage_index).map(|(i, _)| i).collect()
            }
        })
        .collect();
    // Draw only the edges that are not implied by a longer path (a transitive reduction).
    let mut ancestors: Vec<Option<HashSet<usize>>> = vec![None; plan.jobs.len()];
    for (i, j) in plan.jobs.iter().enumerate() {
        for &p in &preds[i] {
            let implied = preds[i].iter().any(|&q| q != p && ancestors_of(q, &preds, &mut ancestors).contains(&p));
            if !implied {
                out.push_str(&format!("  {} --> {}\n", id[plan.jobs[p].name.as_str()], id[j.name.as_str()]));
            }
        }
    }
    out
}
