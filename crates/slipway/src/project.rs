//! Finding a project's pipeline (`--file`, `.slipway.yml`, `.slipway.yaml`, `.gitlab-ci.yml`,
//! or the built-in Go pipeline when there is a `go.mod`), loading it with diagnostics, and
//! planning it against the checkout.

use std::path::{Path, PathBuf};

use anyhow::Result;
use slipway_pipeline::plan::{self, Context, Facts, Plan, PlanError};
use slipway_pipeline::vars::VarMap;
use slipway_pipeline::{Diagnostic, Pipeline, Severity, SourceMap, builtin};
use slipway_runner::workspace::Snapshot;

use crate::git::Checkout;
use crate::ui::{Ui, UserError};

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

pub fn find_source(root: &Path, file: Option<&Path>) -> Result<Source, UserError> {
    if let Some(f) = file {
        let p = if f.is_absolute() { f.to_path_buf() } else { root.join(f) };
        if !p.is_file() {
            return Err(UserError::new(format!("pipeline file `{}` does not exist", f.display())));
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
    Err(UserError::new(format!("no pipeline in {}", root.display()))
        .hint("add a `.slipway.yml` (or `.gitlab-ci.yml`), run `slipway init` in a Go module, or point at a file with `--file`"))
}

pub struct Loaded {
    pub source: Source,
    pub pipeline: Pipeline,
    pub sources: SourceMap,
}

/// Loads and compiles; prints warnings; on errors prints them all and fails with exit code 2.
pub fn load(root: &Path, file: Option<&Path>, ui: &Ui) -> Result<Loaded> {
    let source = find_source(root, file)?;
    let mut sources = SourceMap::default();
    let result = match &source {
        Source::File(p) => {
            let shown = p.strip_prefix(root).unwrap_or(p).to_path_buf();
            let text = std::fs::read_to_string(p)
                .map_err(|e| UserError::new(format!("cannot read {}: {e}", shown.display())))?;
            slipway_pipeline::load_pipeline_text(root, &shown, &text, &mut sources)
        }
        Source::BuiltinGo => {
            slipway_pipeline::load_pipeline_text(root, Path::new(builtin::NAME), builtin::GO_PIPELINE, &mut sources)
        }
    };
    match result {
        Ok((pipeline, warnings)) => {
            for w in &warnings {
                ui.diagnostic(&sources, w);
            }
            Ok(Loaded { source, pipeline, sources })
        }
        Err(diags) => Err(invalid(&source, root, &sources, diags, ui).into()),
    }
}

pub fn invalid(source: &Source, root: &Path, sources: &SourceMap, mut diags: Vec<Diagnostic>, ui: &Ui) -> UserError {
    diags.sort_by_key(|d| (d.span.file.0, d.span.start_line, d.span.start_col));
    for d in &diags {
        ui.diagnostic(sources, d);
    }
    let errors = diags.iter().filter(|d| d.severity == Severity::Error).count();
    let json: Vec<serde_json::Value> = diags.iter().map(|d| sources.to_json(d)).collect();
    UserError::new(format!("{} in {}; nothing ran", plural(errors, "error"), source.describe(root))).silent_detail(json)
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// Answers the planner's questions from git and the project's file list.
pub struct GitFacts<'a> {
    pub root: &'a Path,
    pub checkout: &'a Checkout,
    /// The project's files, listed on the first `exists` question only.
    files: std::cell::OnceCell<Vec<String>>,
}

impl<'a> GitFacts<'a> {
    pub fn new(root: &'a Path, checkout: &'a Checkout) -> GitFacts<'a> {
        GitFacts { root, checkout, files: std::cell::OnceCell::new() }
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
        let Ok(g) = globset::GlobBuilder::new(glob.trim_start_matches("./")).literal_separator(true).build() else {
            return false;
        };
        let m = g.compile_matcher();
        self.files().iter().any(|f| m.is_match(f))
    }
}

pub struct PlanInput<'a> {
    pub root: &'a Path,
    pub checkout: &'a Checkout,
    pub pipeline_id: u64,
    pub source: &'a str,
    pub overrides: VarMap,
    /// The project's files when already listed (saves a second `git ls-files`).
    pub snapshot: Option<&'a Snapshot>,
}

pub fn make_plan(loaded: &Loaded, input: &PlanInput, ui: &Ui) -> Result<Plan> {
    let facts = GitFacts::new(input.root, input.checkout);
    if let Some(s) = input.snapshot {
        let _ = facts.files.set(s.files.iter().map(|f| f.display().to_string()).collect());
    }
    let cx = Context {
        predefined: input.checkout.predefined(input.root, input.pipeline_id, input.source),
        overrides: input.overrides.clone(),
        facts: &facts,
        source: input.source.to_string(),
        first_job_id: input.pipeline_id * 1000 + 1,
    };
    match plan::plan(&loaded.pipeline, &cx) {
        Ok(p) => Ok(p),
        Err(PlanError::Workflow(span)) => {
            let d = Diagnostic::error(span, "`workflow:rules` decided not to run a pipeline for this commit")
                .with_hint("check the rule's condition, or pass the variables it tests with `--var NAME=VALUE`");
            Err(invalid(&loaded.source, input.root, &loaded.sources, vec![d], ui).into())
        }
        Err(PlanError::Empty(span)) => {
            let d = Diagnostic::error(
                span,
                "every job was excluded by `rules`, `only`/`except` or `when: never`: the pipeline is empty",
            )
            .with_hint(
                "check the jobs' rules against this commit (`slipway list`), or pass variables with `--var NAME=VALUE`",
            );
            Err(invalid(&loaded.source, input.root, &loaded.sources, vec![d], ui).into())
        }
        Err(PlanError::Invalid(diags)) => Err(invalid(&loaded.source, input.root, &loaded.sources, diags, ui).into()),
    }
}
