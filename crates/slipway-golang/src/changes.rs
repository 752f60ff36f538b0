//! Change-based test selection (`--changed-since REF`): the packages whose files changed,
//! plus every package that depends on them — through imports or test imports, directly or
//! transitively (`go list -test -json`). When unsure, it tests more, never less: a change to
//! `go.mod`, `go.sum`, `go.work` or `vendor/`, or a Go file outside every known package,
//! selects everything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::GoError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPackage {
    import_path: String,
    dir: Option<String>,
    #[serde(default)]
    standard: bool,
    #[serde(default)]
    deps: Vec<String>,
    #[serde(default)]
    imports: Vec<String>,
    for_test: Option<String>,
}

/// Which packages to test.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Import paths to test.
    pub affected: Vec<String>,
    /// Import paths left out, with why.
    pub skipped: Vec<(String, String)>,
    /// Set when everything is tested, with why.
    pub everything: Option<String>,
}

/// Files changed since `base` (committed, in the work tree, and untracked), as absolute paths.
pub fn changed_files(dir: &Path, base: &str) -> Result<Vec<PathBuf>, GoError> {
    slipway_git::changed_since(dir, base).map_err(|e| match e {
        slipway_git::GitError::Missing(e) => GoError::Io(format!("git: {e}")),
        slipway_git::GitError::Failed { message, .. } => GoError::Git(message),
    })
}

/// Selects the packages matching `patterns` in the module at `dir` that `changed` affects.
pub fn select(dir: &Path, patterns: &[String], changed: &[PathBuf]) -> Result<Selection, GoError> {
    let dir = dir.canonicalize().map_err(|e| GoError::Io(format!("{}: {e}", dir.display())))?;
    for f in changed {
        let rel = f.strip_prefix(&dir).unwrap_or(f);
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(name, "go.mod" | "go.sum" | "go.work" | "go.work.sum") || rel.starts_with("vendor") {
            return everything(dir.as_path(), patterns, format!("{} changed", rel.display()));
        }
    }
    let list = go_list(&dir, patterns)?;
    // Every variant of a package (plain, internal test, external test, test main) shares its
    // directory: union their dependencies under the plain import path.
    let mut by_dir: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for p in &list {
        let Some(d) = &p.dir else { continue };
        if p.standard {
            continue;
        }
        let plain = p.for_test.clone().unwrap_or_else(|| {
            p.import_path.split(" [").next().unwrap_or(&p.import_path).trim_end_matches(".test").to_string()
        });
        let e = by_dir.entry(d.clone()).or_insert_with(|| (plain.clone(), BTreeSet::new()));
        if !p.import_path.contains(' ') && !p.import_path.ends_with(".test") {
            e.0 = p.import_path.clone();
        }
        e.1.extend(p.deps.iter().cloned());
        e.1.extend(p.imports.iter().map(|i| i.split(" [").next().unwrap_or(i).to_string()));
    }
    // Which package each changed file belongs to: the longest package directory containing it.
    let mut dirs: Vec<&String> = by_dir.keys().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for f in changed {
        let owner = dirs.iter().find(|d| f.starts_with(Path::new(d.as_str())));
        match owner {
            Some(d) => {
                touched.insert(by_dir[*d].0.clone());
            }
            None if f.extension().is_some_and(|e| e == "go") && f.starts_with(&dir) => {
                return everything(
                    &dir,
                    patterns,
                    format!("{} is a Go file outside every known package", f.strip_prefix(&dir).unwrap_or(f).display()),
                );
            }
            None => {}
        }
    }
    let mut sel = Selection::default();
    let import_to_deps: HashMap<&str, &BTreeSet<String>> =
        by_dir.values().map(|(ip, deps)| (ip.as_str(), deps)).collect();
    let mut plain: Vec<&str> = import_to_deps.keys().copied().collect();
    plain.sort();
    for ip in plain {
        let deps = import_to_deps[ip];
        if touched.contains(ip) {
            sel.affected.push(ip.to_string());
        } else if let Some(d) = deps.iter().find(|d| touched.contains(d.as_str())) {
            let _ = d;
            sel.affected.push(ip.to_string());
        } else {
            sel.skipped.push((ip.to_string(), "nothing it depends on changed".into()));
        }
    }
    Ok(sel)
}

fn everything(dir: &Path, patterns: &[String], why: String) -> Result<Selection, GoError> {
    let list = go_list(dir, patterns)?;
    let mut affected: Vec<String> = list
        .into_iter()
        .filter(|p| !p.standard && !p.import_path.contains(' ') && !p.import_path.ends_with(".test"))
        .map(|p| p.import_path)
        .collect();
    affected.sort();
    affected.dedup();
    Ok(Selection { affected, skipped: Vec::new(), everything: Some(why) })
}

fn go_list(dir: &Path, patterns: &[String]) -> Result<Vec<ListPackage>, GoError> {
    let pats: Vec<String> = if patterns.is_empty() { vec!["./...".into()] } else { patterns.to_vec() };
    let out = Command::new("go")
        .args(["list", "-test", "-e", "-json=ImportPath,Dir,Standard,Deps,Imports,ForTest"])
        .args(&pats)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound { GoError::GoMissing } else { GoError::Io(e.to_string()) }
        })?;
    if !out.status.success() && out.stdout.is_empty() {
        return Err(crate::failed("go list", String::from_utf8_lossy(&out.stderr)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for p in serde_json::Deserializer::from_str(&text).into_iter::<ListPackage>() {
        v.push(p.map_err(|e| GoError::Io(format!("reading go list output: {e}")))?);
    }
    Ok(v)
}
