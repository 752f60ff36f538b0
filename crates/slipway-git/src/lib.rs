//! slipway's one git facade: every crate that asks git something asks here — the checkout's
//! facts for predefined variables and rules ([`Checkout`]), files changed since a commit, the
//! project's file list for workspaces, `git describe` for versions, the commit for image
//! labels. Each question is one `git` process (several run side by side where a caller needs
//! them together); nothing here writes to a user's repository — [`remote`] keeps slipway's own
//! mirrors and build checkouts.

mod checkout;
mod listing;
mod plain;
pub mod remote;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use checkout::{Checkout, ZERO_SHA};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git is not installed (or not on PATH): {0}")]
    Missing(std::io::Error),
    #[error("git {args}: {message}")]
    Failed { args: String, message: String },
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("git");
    // Never a prompt for credentials: slipway runs git unattended.
    c.args(args).current_dir(dir).stdin(Stdio::null()).env("GIT_TERMINAL_PROMPT", "0");
    c
}

/// Starts a git command whose output [`finish`] collects (to run several at once).
pub fn spawn(dir: &Path, args: &[&str]) -> Option<Child> {
    command(dir, args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()
}

/// The output of a command [`spawn`] started, without its last newline; `None` when it failed.
pub fn finish(child: Option<Child>) -> Option<String> {
    let out = child?.wait_with_output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string())
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> Option<String> {
    finish(spawn(dir, args))
}

/// One git command's output, trimmed; `None` when it failed or printed nothing.
pub fn output(dir: &Path, args: &[&str]) -> Option<String> {
    git(dir, args).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Runs a git command; its stdout, or what it printed on stderr when it failed.
pub fn run(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let out = command(dir, args).output().map_err(GitError::Missing)?;
    if !out.status.success() {
        return Err(GitError::Failed {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `git describe --tags --always --dirty`: the version of a checkout (`None` outside git).
pub fn describe(dir: &Path) -> Option<String> {
    output(dir, &["describe", "--tags", "--always", "--dirty"])
}

/// Files changed since `base` (a commit-ish): committed changes, edits in the work tree, and
/// untracked files — as absolute paths under the repository's top.
pub fn changed_since(dir: &Path, base: &str) -> Result<Vec<PathBuf>, GitError> {
    let top = PathBuf::from(run(dir, &["rev-parse", "--show-toplevel"])?.trim());
    run(dir, &["rev-parse", "--verify", "-q", &format!("{base}^{{commit}}")]).map_err(|_| GitError::Failed {
        args: format!("rev-parse {base}"),
        message: format!("`{base}` is not a commit in this repository"),
    })?;
    let mut files: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
    for l in run(dir, &["diff", "--name-only", "--no-renames", base])?.lines() {
        files.insert(top.join(l));
    }
    for l in run(dir, &["ls-files", "--others", "--exclude-standard", "--full-name", ":/"])?.lines() {
        files.insert(top.join(l));
    }
    Ok(files.into_iter().collect())
}

/// The commit's time (Unix seconds) and hash, and the `origin` remote's URL, asked side by side.
pub fn commit_and_origin(dir: &Path) -> (Option<(i64, String)>, Option<String>) {
    let head = spawn(dir, &["log", "-1", "--format=%ct %H"]);
    let origin = spawn(dir, &["config", "--get", "remote.origin.url"]);
    let head = finish(head).and_then(|h| {
        let (t, sha) = h.split_once(' ')?;
        Some((t.parse().ok()?, sha.to_string()))
    });
    (head, finish(origin).filter(|o| !o.is_empty()))
}

/// The listing a workspace snapshot starts from: tracked and untracked-but-not-ignored files
/// (NUL-separated), and, when `with_refs`, every ref with its object. A plain repository is
/// read in this process ([`listing`], [`plain`]); anything else asks git, both at once.
pub fn files_and_refs(dir: &Path, with_refs: bool) -> (Option<Vec<u8>>, Option<String>) {
    let plain = with_refs.then(|| plain::Plain::open(dir)).flatten();
    let listed = plain.as_ref().and_then(|p| listing::files(dir, p)).map(|files| {
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        for f in files {
            out.extend_from_slice(f.as_os_str().as_bytes());
            out.push(0);
        }
        out
    });
    let refs = plain.as_ref().and_then(|p| p.refs());
    let ls = listed.is_none().then(|| {
        command(dir, &["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    });
    let by_git = (with_refs && refs.is_none())
        .then(|| spawn(dir, &["for-each-ref", "--format=%(objectname) %(refname)"]))
        .flatten();
    let files = match listed {
        Some(l) => Some(l),
        None => ls.flatten().and_then(|c| c.wait_with_output().ok()).filter(|o| o.status.success()).map(|o| o.stdout),
    };
    let refs = match refs {
        Some(l) => Some(l.iter().map(|(oid, name)| format!("{oid} {name}")).collect::<Vec<_>>().join("\n")),
        None => finish(by_git),
    };
    (files, refs)
}

/// Whether this is the default branch: in a pipeline, `CI_COMMIT_BRANCH == CI_DEFAULT_BRANCH`
/// (a tag or a detached HEAD is not); on its own, the checked-out branch is `main`/`master`
/// or origin's default.
pub fn on_default_branch(dir: &Path) -> bool {
    if let (Ok(b), Ok(d)) = (std::env::var("CI_COMMIT_BRANCH"), std::env::var("CI_DEFAULT_BRANCH")) {
        return b == d;
    }
    if std::env::var_os("CI_DEFAULT_BRANCH").is_some() {
        return false;
    }
    let c = Checkout::read(dir);
    c.branch.as_deref() == Some(c.default_branch.as_str())
}

/// The commit a change is compared against (`--changed-since auto`): the pipeline's
/// `CI_COMMIT_BEFORE_SHA`, else the merge base with `CI_DEFAULT_BRANCH` (or `main`); `None`
/// when neither is known.
pub fn change_base(dir: &Path) -> Option<String> {
    let zero = |s: &str| s.is_empty() || s.bytes().all(|b| b == b'0');
    if let Ok(b) = std::env::var("CI_COMMIT_BEFORE_SHA")
        && !zero(&b)
    {
        return Some(b);
    }
    let default = std::env::var("CI_DEFAULT_BRANCH").unwrap_or_else(|_| "main".into());
    output(dir, &["merge-base", "HEAD", &default])
}

/// Commits `file` in the user's checkout at `dir` — on a new branch `branch` when given —
/// signed off by the committer (`git commit --signoff`), and pushes it to `origin` when
/// `push`: what `slipway promote --gitops` does to a config repository, the one change slipway
/// makes in a repository of the user's. The new commit's id.
pub fn commit_signed_off(
    dir: &Path,
    file: &str,
    text: &str,
    message: &str,
    branch: Option<&str>,
    push: bool,
) -> Result<String, GitError> {
    if let Some(b) = branch {
        run(dir, &["switch", "-q", "-c", b])?;
    }
    std::fs::write(dir.join(file), text).map_err(GitError::Missing)?;
    run(dir, &["add", "--", file])?;
    run(dir, &["commit", "-q", "--signoff", "-m", message])?;
    let sha = run(dir, &["rev-parse", "HEAD"])?.trim().to_string();
    if push {
        let current = run(dir, &["rev-parse", "--abbrev-ref", "HEAD"])?.trim().to_string();
        run(dir, &["push", "-q", "origin", &current])?;
    }
    Ok(sha)
}

/// Reverts `commit` in the user's checkout at `dir` (`git revert --no-edit --signoff`), and
/// pushes it to `origin` when `push`: `slipway rollback --revert`. The revert's commit id.
pub fn revert_signed_off(dir: &Path, commit: &str, push: bool) -> Result<String, GitError> {
    run(dir, &["revert", "--no-edit", "--signoff", commit])?;
    let sha = run(dir, &["rev-parse", "HEAD"])?.trim().to_string();
    if push {
        let current = run(dir, &["rev-parse", "--abbrev-ref", "HEAD"])?.trim().to_string();
        run(dir, &["push", "-q", "origin", &current])?;
    }
    Ok(sha)
}
