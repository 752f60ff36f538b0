//! slipway's pipeline dialect: GitLab CI YAML read with spans ([`yaml`], [`load`]),
//! validated into a typed model with every error at once ([`compile`]), and planned into a
//! job DAG for one run ([`plan`]). Synchronous, no IO beyond reading the files it is given
//! (remote and other projects' includes come through the caller's [`load::Fetch`]), and no
//! input makes it panic.

pub mod builtin;
pub mod compile;
pub mod diag;
pub mod duration;
pub use slipway_model::environment;
pub mod expr;
pub mod inputs;
pub mod load;
pub mod model;
pub mod plan;
pub mod vars;
pub mod yaml;

use std::path::Path;

pub use diag::{Diagnostic, Severity, SourceMap};
pub use model::Pipeline;

/// Reads, merges and compiles a pipeline file. On failure every diagnostic is returned;
/// on success the warnings are.
pub fn load_pipeline(
    project_dir: &Path,
    file: &Path,
    sources: &mut SourceMap,
) -> Result<(Pipeline, Vec<Diagnostic>), Vec<Diagnostic>> {
    let loaded = load::load(project_dir, file, sources)?;
    finish(loaded)
}

/// Like [`load_pipeline`] for text in memory (`name` is what diagnostics call the file).
pub fn load_pipeline_text(
    project_dir: &Path,
    name: &Path,
    text: &str,
    sources: &mut SourceMap,
) -> Result<(Pipeline, Vec<Diagnostic>), Vec<Diagnostic>> {
    let loaded = load::load_text(project_dir, name, text.to_string(), sources, None)?;
    finish(loaded)
}

/// Like [`load_pipeline_text`], with `include:remote` and `include:project` read through
/// `fetch` (the caller's network and git; without one they are errors).
pub fn load_pipeline_fetching(
    project_dir: &Path,
    name: &Path,
    text: &str,
    sources: &mut SourceMap,
    fetch: &dyn load::Fetch,
) -> Result<(Pipeline, Vec<Diagnostic>), Vec<Diagnostic>> {
    let loaded = load::load_text(project_dir, name, text.to_string(), sources, Some(fetch))?;
    finish(loaded)
}

/// Reads a Prometheus rule file from text (`slipway alerts check|test`): the rules, or every error.
pub fn load_rules(
    name: &Path,
    text: &str,
    sources: &mut SourceMap,
) -> Result<slipway_monitor::rules::RuleFile, Vec<Diagnostic>> {
    let file = sources.add(name, text.to_string());
    let root = yaml::parse(text, file)?;
    compile::compile_rules(root)
}

/// Reads the server's access file (docs/access.md) from text: the config, or every error.
pub fn load_access(
    name: &Path,
    text: &str,
    sources: &mut SourceMap,
) -> Result<slipway_model::access::AccessConfig, Vec<Diagnostic>> {
    let file = sources.add(name, text.to_string());
    let root = yaml::parse(text, file)?;
    compile::compile_access(root)
}

/// Reads the server's notification file (docs/monitoring.md) from text: the config, or every
/// error.
pub fn load_notify(
    name: &Path,
    text: &str,
    sources: &mut SourceMap,
) -> Result<slipway_monitor::channels::NotifyConfig, Vec<Diagnostic>> {
    let file = sources.add(name, text.to_string());
    let root = yaml::parse(text, file)?;
    compile::compile_notify(root)
}

/// Reads an environment's desired-state file (docs/gitops.md): it, or every error.
pub fn load_desired(name: &Path, text: &str, sources: &mut SourceMap) -> Result<compile::Desired, Vec<Diagnostic>> {
    let file = sources.add(name, text.to_string());
    let root = yaml::parse(text, file)?;
    compile::compile_desired(root)
}

/// Reads an application (docs/gitops.md; slipway's shape or an Argo CD `Application`).
pub fn load_application(
    name: &Path,
    text: &str,
    sources: &mut SourceMap,
) -> Result<compile::Application, Vec<Diagnostic>> {
    let file = sources.add(name, text.to_string());
    let root = yaml::parse(text, file)?;
    compile::compile_application(root)
}

fn finish(loaded: load::Loaded) -> Result<(Pipeline, Vec<Diagnostic>), Vec<Diagnostic>> {
    let c = compile::compile(loaded.root);
    let mut diagnostics = loaded.warnings;
    diagnostics.extend(c.diagnostics);
    match c.pipeline {
        Some(p) => Ok((p, diagnostics)),
        None => Err(diagnostics),
    }
}
