//! The project's pipeline for a command: loaded and planned by `slipway_runner::project`,
//! its diagnostics rendered here, and failures turned into user errors (exit 2).

use std::path::Path;

use anyhow::Result;
use slipway_pipeline::Severity;
use slipway_pipeline::plan::Plan;
use slipway_runner::project::{Invalid, LoadError};
pub use slipway_runner::project::{Loaded, PlanInput, find_source};

use crate::ui::{Ui, UserError};

/// Loads and compiles; prints warnings; on errors prints them all and fails with exit code 2.
pub fn load(root: &Path, file: Option<&Path>, ui: &Ui) -> Result<Loaded> {
    load_for_run(root, file, Default::default(), "push", ui)
}

/// [`load`] for a run with these `--var`s and pipeline source (`include:rules` sees them).
pub fn load_for_run(
    root: &Path,
    file: Option<&Path>,
    overrides: slipway_pipeline::vars::VarMap,
    source: &str,
    ui: &Ui,
) -> Result<Loaded> {
    match slipway_runner::project::load_for_run(root, file, overrides, source) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                ui.diagnostic(&loaded.sources, w);
            }
            Ok(loaded)
        }
        Err(LoadError::NoPipeline(n)) => {
            let mut e = UserError::new(n.message);
            if let Some(h) = n.hint {
                e = e.hint(h);
            }
            Err(e.into())
        }
        Err(LoadError::Unreadable { message }) => Err(UserError::new(message).into()),
        Err(LoadError::Invalid(invalid)) => Err(self::invalid(root, invalid, ui).into()),
    }
}

/// Plans the loaded pipeline for the checkout; an empty or refused plan is a user error.
pub fn make_plan(loaded: &Loaded, input: &PlanInput, ui: &Ui) -> Result<Plan> {
    slipway_runner::project::make_plan(loaded, input).map_err(|i| invalid(input.root, i, ui).into())
}

/// Prints every diagnostic and makes the user error that ends the command.
fn invalid(root: &Path, mut i: Invalid, ui: &Ui) -> UserError {
    i.diagnostics.sort_by_key(|d| (d.span.file.0, d.span.start_line, d.span.start_col));
    for d in &i.diagnostics {
        ui.diagnostic(&i.sources, d);
    }
    let errors = i.diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    let json: Vec<serde_json::Value> = i.diagnostics.iter().map(|d| i.sources.to_json(d)).collect();
    UserError::new(format!("{} in {}; nothing ran", plural(errors, "error"), i.source.describe(root)))
        .silent_detail(json)
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}
