//! A project as a run sees it: which pipeline it has (`--file`, `.slipway.yml`,
//! `.slipway.yaml`, `.gitlab-ci.yml`, or the built-in Go pipeline when there is a `go.mod`),
//! the pipeline loaded with its diagnostics, and planned against the checkout — git answers
//! the planner's questions ([`GitFacts`]) and gives the predefined `CI_*` variables
//! ([`predefined`]). The CLI and the server plan the same way through here.

use std::path::{Path, PathBuf};

use slipway_git::{Checkout, ZERO_SHA};
use slipway_pipeline::plan::{self, Context, Facts, Plan, PlanError};
use slipway_pipeline::vars::{VarMap, slug};
use slipway_pipeline::{Diagnostic, Pipeline, SourceMap, builtin};

use crate::workspace::Snapshot;

pub const PIPELINE_FILES: &[&str] = &[".slipway.yml", ".slipway.yaml", ".gitlab-ci.yml"];

/// Where the pipeline comes from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    BuiltinGo,
}

impl Source {
    pub fn describe(&self, root: &Path) -> String {
        match self {
            Source::File(p) => p.strip_prefix(root).unwrap_or(p).display().to_string(),
            Source::BuiltinGo => builtin::NAME.to_string(),
        }
    }
}

/// Why a project has no pipeline to load.
#[derive(Debug, Clone)]
pub struct NoPipeline {
    pub message: String,
    pub hint: Option<String>,
}

pub fn find_source(root: &Path, file: Option<&Path>) -> Result<Source, NoPipeline> {
    if let Some(f) = file {
        let p = if f.is_absolute() { f.to_path_buf() } else { root.join(f) };
        if !p.is_file() {
            return Err(NoPipeline { message: format!("pipeline file `{}` does not exist", f.display()), hint: None });
        }
        return Ok(Source::File(p));
    }
    for name in PIPELINE_FILES {
        let p = root.join(name);
        if p.is_file() {
            return Ok(Source::File(p));
        }
    }
    if root.join("go.mod").is_file() {
        return Ok(Source::BuiltinGo);
    }
    Err(NoPipeline {
        message: format!("no pipeline in {}", root.display()),
        hint: Some("add a `.slipway.yml` (or `.gitlab-ci.yml`), run `slipway init` in a Go module, or point at a file with `--file`".into()),
    })
}

/// The project root for a directory: the nearest directory, from `dir` up to the
/// repository's top, that has a pipeline file or a `go.mod` (so slipway works from a
/// subdirectory, as git does), else `dir` itself.
pub fn root_of(dir: &Path) -> PathBuf {
    let has_pipeline = |d: &Path| PIPELINE_FILES.iter().any(|f| d.join(f).is_file()) || d.join("go.mod").is_file();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if has_pipeline(d) {
            return d.to_path_buf();
        }
        if d.join(".git").exists() {
            break;
        }
        cur = d.parent();
    }
    dir.to_path_buf()
}

pub struct Loaded {
    pub source: Source,
    pub pipeline: Pipeline,
    pub sources: SourceMap,
    pub warnings: Vec<Diagnostic>,
}

impl Loaded {
    /// The `environments:` section, with ssh keys and known_hosts files made absolute: they
    /// are written relative to the project (or to the home directory, `~/`).
    pub fn environments(&self, root: &Path) -> Vec<slipway_pipeline::environment::Environment> {
        use slipway_pipeline::environment::Target;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut envs = self.pipeline.environments.clone();
        for e in &mut envs {
            let ssh = match (&mut e.target, &mut e.agent) {
                (Target::Ssh(t), _) => Some(t),
                (_, Some(slipway_pipeline::environment::RemoteAgent::Ssh(t))) => Some(t),
                _ => None,
            };
            for p in ssh.into_iter().flat_map(|t| [&mut t.identity, &mut t.known_hosts]).flatten() {
                let path = match (p.strip_prefix("~/"), &home) {
                    (Some(rest), Some(h)) => h.join(rest),
                    _ => root.join(&*p),
                };
                *p = path.display().to_string();
            }
        }
        envs
    }
}

/// A pipeline that does not load or plan: every diagnostic, and the sources to show them.
pub struct Invalid {
    pub source: Source,
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    /// The file is valid, but nothing runs for this commit (`workflow:rules`, or every job
    /// excluded): `slipway validate` says so as a warning.
    pub nothing_to_run: bool,
}

/// Why loading failed.
pub enum LoadError {
    NoPipeline(NoPipeline),
    Unreadable { message: String },
    Invalid(Invalid),
}

/// Loads and compiles the project's pipeline, with every error at once.
pub fn load(root: &Path, file: Option<&Path>) -> Result<Loaded, LoadError> {
    load_for_run(root, file, VarMap::new(), "push")
}

/// [`load`] for a run with these `--var`s and pipeline source, which `include:rules` tests.
pub fn load_for_run(
    root: &Path,
    file: Option<&Path>,
    overrides: VarMap,
    pipeline_source: &str,
) -> Result<Loaded, LoadError> {
    load_with(root, file, overrides, pipeline_source, None)
}

/// [`load_for_run`] on a server, whose projects `include:project` and `include:component` name.
pub fn load_with(
    root: &Path,
    file: Option<&Path>,
    overrides: VarMap,
    pipeline_source: &str,
    server: Option<crate::fetch::ServerProjects>,
) -> Result<Loaded, LoadError> {
    let source = find_source(root, file).map_err(LoadError::NoPipeline)?;
    let mut sources = SourceMap::default();
    let result = match &source {
        Source::File(p) => {
            let shown = p.strip_prefix(root).unwrap_or(p).to_path_buf();
            let text = std::fs::read_to_string(p)
                .map_err(|e| LoadError::Unreadable { message: format!("cannot read {}: {e}", shown.display()) })?;
            let fetch =
                crate::fetch::Fetcher::for_project(root).with_run(overrides, pipeline_source).with_server(server);
            slipway_pipeline::load_pipeline_fetching(root, &shown, &text, &mut sources, &fetch)
        }
        Source::BuiltinGo => {
            slipway_pipeline::load_pipeline_text(root, Path::new(builtin::NAME), builtin::GO_PIPELINE, &mut sources)
        }
    };
    match result {
        Ok((pipeline, warnings)) => Ok(Loaded { source, pipeline, sources, warnings }),
        Err(diagnostics) => Err(LoadError::Invalid(Invalid { source, sources, diagnostics, nothing_to_run: false })),
    }
}

/// The predefined variables of a run (job-level ones are added by the planner).
pub fn predefined(c: &Checkout, dir: &Path, pipeline_id: u64, source: &str) -> VarMap {
    let mut v = VarMap::new();
    let mut set = |k: &str, val: String| {
        v.insert(k.to_string(), val);
    };
    set("CI", "true".into());
    set("SLIPWAY", "true".into());
    set("CI_COMMIT_SHA", c.sha.clone());
    set("CI_COMMIT_SHORT_SHA", c.sha.chars().take(8).collect());
    let ref_name = c.tag.clone().or_else(|| c.branch.clone()).unwrap_or_else(|| "HEAD".into());
    let merge_request = source == "merge_request_event";
    match &c.branch {
        // A merge-request pipeline has no branch (GitLab): its source branch is the MR's.
        Some(b) if merge_request => {
            let title = c.message.lines().next().unwrap_or("").to_string();
            set("CI_MERGE_REQUEST_ID", "1".into());
            set("CI_MERGE_REQUEST_IID", "1".into());
            set("CI_MERGE_REQUEST_EVENT_TYPE", "detached".into());
            set("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", b.clone());
            set("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", c.sha.clone());
            set("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", c.default_branch.clone());
            set("CI_MERGE_REQUEST_TITLE", title);
            set("CI_MERGE_REQUEST_PROJECT_PATH", c.project_path.clone());
            set("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH", c.project_path.clone());
            if let Some(base) = &c.before_sha {
                set("CI_MERGE_REQUEST_DIFF_BASE_SHA", base.clone());
            }
            if let Some(url) = &c.server_url {
                set("CI_MERGE_REQUEST_PROJECT_URL", format!("{url}/{}", c.project_path));
                set("CI_MERGE_REQUEST_SOURCE_PROJECT_URL", format!("{url}/{}", c.project_path));
            }
        }
        Some(b) => set("CI_COMMIT_BRANCH", b.clone()),
        None => {}
    }
    if let Some(t) = &c.tag {
        set("CI_COMMIT_TAG", t.clone());
    }
    set("CI_COMMIT_REF_SLUG", slug(&ref_name));
    set("CI_COMMIT_REF_NAME", ref_name);
    set("CI_COMMIT_MESSAGE", c.message.clone());
    if let Some(author) = &c.author {
        set("CI_COMMIT_AUTHOR", author.clone());
    }
    set("CI_COMMIT_TITLE", c.message.lines().next().unwrap_or("").to_string());
    set("CI_COMMIT_BEFORE_SHA", c.before_sha.clone().unwrap_or_else(|| ZERO_SHA.into()));
    set("CI_DEFAULT_BRANCH", c.default_branch.clone());
    set("CI_PIPELINE_ID", pipeline_id.to_string());
    set("CI_PIPELINE_IID", pipeline_id.to_string());
    set("CI_PIPELINE_SOURCE", source.to_string());
    set("CI_PROJECT_DIR", dir.display().to_string());
    set("CI_PROJECT_NAME", c.project_name.clone());
    set("CI_PROJECT_PATH", c.project_path.clone());
    set("CI_PROJECT_PATH_SLUG", slug(&c.project_path));
    set("CI_PROJECT_NAMESPACE", c.project_path.rsplit_once('/').map(|(ns, _)| ns.to_string()).unwrap_or_default());
    // Unknown outside a forge: a project is private unless told (`--var CI_PROJECT_VISIBILITY=public`).
    set("CI_PROJECT_VISIBILITY", "private".into());
    if let Some(url) = &c.server_url {
        let (protocol, authority) = url.split_once("://").unwrap_or(("https", url));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.to_string()),
            None => (authority.to_string(), if protocol == "http" { "80" } else { "443" }.to_string()),
        };
        set("CI_SERVER_URL", url.clone());
        set("CI_SERVER_HOST", host.clone());
        set("CI_SERVER_FQDN", authority.to_string());
        set("CI_SERVER_PORT", port);
        set("CI_SERVER_PROTOCOL", protocol.to_string());
        set("CI_PROJECT_URL", format!("{url}/{}", c.project_path));
    }
    v
}

/// Answers the planner's questions from git and the project's file list.
pub struct GitFacts<'a> {
    pub root: &'a Path,
    pub checkout: &'a Checkout,
    /// The project's files, listed on the first `exists` question only.
    files: std::cell::OnceCell<Vec<String>>,
}

impl<'a> GitFacts<'a> {
    pub fn new(root: &'a Path, checkout: &'a Checkout, snapshot: Option<&Snapshot>) -> GitFacts<'a> {
        let files = std::cell::OnceCell::new();
        if let Some(s) = snapshot {
            let _ = files.set(s.files.iter().map(|f| f.display().to_string()).collect());
        }
        GitFacts { root, checkout, files }
    }

    fn files(&self) -> &[String] {
        self.files.get_or_init(|| {
            Snapshot::take(self.root)
                .map(|s| s.files.iter().map(|f| f.display().to_string()).collect())
                .unwrap_or_default()
        })
    }
}

impl Facts for GitFacts<'_> {
    fn changed_files(&self, compare_to: Option<&str>) -> Option<Vec<String>> {
        self.checkout.changed_files(self.root, compare_to)
    }

    fn exists(&self, glob: &str) -> bool {
        any_matches(self.files(), glob)
    }
}

/// `rules:exists`: whether any of the project's files (relative paths) matches `glob`.
pub(crate) fn any_matches(files: &[String], glob: &str) -> bool {
    let Ok(g) = globset::GlobBuilder::new(glob.trim_start_matches("./")).literal_separator(true).build() else {
        return false;
    };
    let m = g.compile_matcher();
    files.iter().any(|f| m.is_match(f))
}

/// What a plan is made for.
pub struct PlanInput<'a> {
    pub root: &'a Path,
    pub checkout: &'a Checkout,
    pub pipeline_id: u64,
    pub source: &'a str,
    pub overrides: VarMap,
    /// The project's files when already listed (saves a second `git ls-files`).
    pub snapshot: Option<&'a Snapshot>,
}

/// Plans the loaded pipeline for this checkout; a pipeline that plans to nothing is an error
/// at the place that decided it.
pub fn make_plan(loaded: &Loaded, input: &PlanInput) -> Result<Plan, Invalid> {
    let facts = GitFacts::new(input.root, input.checkout, input.snapshot);
    let cx = Context {
        predefined: predefined(input.checkout, input.root, input.pipeline_id, input.source),
        overrides: input.overrides.clone(),
        facts: &facts,
        source: input.source.to_string(),
        first_job_id: input.pipeline_id * 1000 + 1,
    };
    let invalid = |diagnostics, nothing_to_run| Invalid {
        source: loaded.source.clone(),
        sources: loaded.sources.clone(),
        diagnostics,
        nothing_to_run,
    };
    match plan::plan(&loaded.pipeline, &cx) {
        Ok(p) => Ok(p),
        Err(PlanError::Workflow(span)) => Err(invalid(
            vec![
                Diagnostic::error(span, "`workflow:rules` decided not to run a pipeline for this commit")
                    .with_hint("check the rule's condition, or pass the variables it tests with `--var NAME=VALUE`"),
            ],
            true,
        )),
        Err(PlanError::Empty(span)) => Err(invalid(
            vec![
            Diagnostic::error(
                span,
                "every job was excluded by `rules`, `only`/`except` or `when: never`: the pipeline is empty",
            )
            .with_hint(
                "check the jobs' rules against this commit (`slipway list`), or pass variables with `--var NAME=VALUE`",
            ),
        ],
            true,
        )),
        Err(PlanError::Invalid(diags)) => Err(invalid(diags, false)),
    }
}
