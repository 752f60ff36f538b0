//! Repositories slipway keeps for itself (the server's mirrors, an agent's build checkouts):
//! the only place that writes to a repository, and only to those.

use std::path::Path;

use crate::{GitError, run};

/// `git ls-remote`: the remote's branches and tags, as `(ref, sha)` (peeled tags resolved to
/// their commit).
pub fn ls_remote(url: &str) -> Result<Vec<(String, String)>, GitError> {
    let out = run(Path::new("."), &["ls-remote", "--heads", "--tags", "--", url])?;
    let mut refs: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        let Some((sha, name)) = line.split_once('\t') else { continue };
        match name.strip_suffix("^{}") {
            // An annotated tag: the commit it points to wins over the tag object.
            Some(tag) => {
                refs.retain(|(n, _)| n != tag);
                refs.push((tag.to_string(), sha.to_string()));
            }
            None if !refs.iter().any(|(n, _)| n == name) => refs.push((name.to_string(), sha.to_string())),
            None => {}
        }
    }
    Ok(refs)
}

/// Keeps a bare mirror of `url` in `dir`: cloned the first time, fetched (pruned) after.
pub fn mirror(url: &str, dir: &Path) -> Result<(), GitError> {
    if dir.join("HEAD").is_file() {
        // No maintenance on the way (a gc would also prune what checkouts borrow).
        run(
            dir,
            &[
                "-c",
                "maintenance.auto=false",
                "-c",
                "gc.auto=0",
                // A remote that stalls fails in a minute instead of holding its caller.
                "-c",
                "http.lowSpeedLimit=1",
                "-c",
                "http.lowSpeedTime=60",
                "fetch",
                "--prune",
                "--quiet",
                "origin",
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ],
        )?;
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(GitError::Missing)?;
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let tmp_s = tmp.display().to_string();
    run(
        parent,
        &[
            "-c",
            "http.lowSpeedLimit=1",
            "-c",
            "http.lowSpeedTime=60",
            "clone",
            "--mirror",
            "--quiet",
            "--",
            url,
            &tmp_s,
        ],
    )?;
    std::fs::rename(&tmp, dir).map_err(GitError::Missing)?;
    Ok(())
}

/// Makes `dest` a working tree of `commit` from the repository at `source` (a mirror or a
/// URL), on branch `branch` when given (so the checkout's facts name it), detached otherwise;
/// tracked files of an earlier checkout that are not in the commit are removed. Only git
/// writes in these checkouts (jobs run in workspaces of their own), so there is nothing
/// untracked to clean.
///
/// A `source` on this machine lends its objects (git's alternates): a commit it has needs no
/// fetch at all. A checkout that git cannot update (what it borrowed is gone) is made again.
pub fn checkout_at(source: &str, commit: &str, branch: Option<&str>, dest: &Path) -> Result<(), GitError> {
    match checkout_once(source, commit, branch, dest) {
        Err(_) if dest.join(".git").is_dir() => {
            std::fs::remove_dir_all(dest).map_err(GitError::Missing)?;
            checkout_once(source, commit, branch, dest)
        }
        r => r,
    }
}

fn checkout_once(source: &str, commit: &str, branch: Option<&str>, dest: &Path) -> Result<(), GitError> {
    let fresh = !dest.join(".git").is_dir();
    if fresh {
        std::fs::create_dir_all(dest).map_err(GitError::Missing)?;
        run(dest, &["init", "--quiet"])?;
        run(dest, &["remote", "add", "origin", source])?;
    } else {
        // The remote's URL, read from the config file (one git process less per job).
        let config = std::fs::read_to_string(dest.join(".git/config")).unwrap_or_default();
        if !config.lines().any(|l| l.trim().strip_prefix("url = ") == Some(source)) {
            run(dest, &["remote", "set-url", "origin", source])?;
        }
    }
    let alternates = dest.join(".git/objects/info/alternates");
    if let Some(objects) = local_objects(source)
        && std::fs::read_to_string(&alternates).ok().as_deref().map(str::trim) != objects.to_str()
    {
        std::fs::write(&alternates, format!("{}\n", objects.display())).map_err(GitError::Missing)?;
    }
    let checkout = |dest: &Path| match branch {
        Some(b) => run(dest, &["checkout", "--quiet", "--force", "-B", b, commit]),
        None => run(dest, &["checkout", "--quiet", "--force", "--detach", commit]),
    };
    // A commit already here (borrowed, or an earlier job's fetch) needs no round trip: the
    // checkout is tried first, and only a commit it does not find is fetched.
    if checkout(dest).is_err() {
        run(
            dest,
            &[
                "-c",
                "maintenance.auto=false",
                "-c",
                "gc.auto=0",
                "fetch",
                "--quiet",
                "--tags",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        )?;
        checkout(dest)?;
    }
    Ok(())
}

/// The git directory of a repository at a local path (a bare one, or a work tree's `.git`),
/// when `source` is one: such a source is read directly, with no round trip.
pub fn local_git_dir(source: &str) -> Option<std::path::PathBuf> {
    local_objects(source).and_then(|o| o.parent().map(Path::to_path_buf))
}

/// The object directory of a repository at a local path (bare or not), absolute.
fn local_objects(source: &str) -> Option<std::path::PathBuf> {
    let p = Path::new(source.strip_prefix("file://").unwrap_or(source));
    if !p.is_absolute() {
        return None;
    }
    [p.join("objects"), p.join(".git/objects")].into_iter().find(|o| o.join("info").is_dir() || o.join("pack").is_dir())
}

/// Whether the bare repository at `repo` has the branch `name` — read from its ref files
/// (loose or packed), which is what a mirror holds; git is asked only when they do not say.
pub fn has_branch(repo: &Path, name: &str) -> bool {
    if name.is_empty() || name.contains("..") || name.starts_with('/') {
        return false;
    }
    let full = format!("refs/heads/{name}");
    if repo.join(&full).is_file() {
        return true;
    }
    match std::fs::read_to_string(repo.join("packed-refs")) {
        Ok(packed) => packed.lines().any(|l| l.split_once(' ').is_some_and(|(_, r)| r == full)),
        Err(_) => crate::output(repo, &["rev-parse", "--verify", "--quiet", &full]).is_some(),
    }
}

/// The commit `revision` names in the repository at `dir` (a mirror): `HEAD` is its default
/// branch; a branch, a tag or a commit otherwise.
pub fn resolve(dir: &Path, revision: &str) -> Result<String, GitError> {
    let rev = if revision.is_empty() { "HEAD" } else { revision };
    let out =
        run(dir, &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")]).map_err(|_| GitError::Failed {
            args: format!("rev-parse {rev}"),
            message: format!("`{rev}` is not a branch, tag or commit of the repository"),
        })?;
    Ok(out.trim().to_string())
}

/// A file's text at `commit`, or `None` when the commit has no such file.
pub fn show(dir: &Path, commit: &str, path: &str) -> Result<Option<String>, GitError> {
    let spec = format!("{commit}:{}", path.trim_start_matches("./"));
    match run(dir, &["cat-file", "-e", &spec]) {
        Ok(_) => Ok(Some(run(dir, &["cat-file", "blob", &spec])?)),
        Err(_) => Ok(None),
    }
}

/// The blob ids of those of `paths` that `commit` has (`git ls-tree`, one process for them
/// all): path → blob id. Two commits whose file has the same blob id have the same file.
pub fn blobs(
    dir: &Path,
    commit: &str,
    paths: &[String],
) -> Result<std::collections::HashMap<String, String>, GitError> {
    let mut args = vec!["ls-tree", "-r", "--full-tree", commit, "--"];
    args.extend(paths.iter().map(|p| p.trim_start_matches("./")));
    let out = run(dir, &args)?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (meta, path) = l.split_once('\t')?;
            let [_mode, kind, id] = meta.split_whitespace().collect::<Vec<_>>()[..] else { return None };
            (kind == "blob").then(|| (path.to_string(), id.to_string()))
        })
        .collect())
}

/// A blob's text by its id.
pub fn blob_text(dir: &Path, blob: &str) -> Result<String, GitError> {
    run(dir, &["cat-file", "blob", blob])
}

/// The files that differ between two commits (`from` `None`: every file of `to`).
pub fn changed_between(dir: &Path, from: Option<&str>, to: &str) -> Result<Vec<String>, GitError> {
    let out = match from {
        Some(f) => run(dir, &["diff", "--name-only", "--no-renames", f, to, "--"])?,
        None => run(dir, &["ls-tree", "-r", "--name-only", to])?,
    };
    Ok(out.lines().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@x", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn mirror_ls_remote_and_checkout() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        git(&src, &["init", "-q"]);
        std::fs::write(src.join("a"), "1").unwrap();
        git(&src, &["add", "a"]);
        git(&src, &["commit", "-qm", "one"]);
        git(&src, &["tag", "-a", "v1", "-m", "v1"]);
        let url = src.display().to_string();
        let refs = ls_remote(&url).unwrap();
        let main = refs.iter().find(|(n, _)| n == "refs/heads/main").unwrap().1.clone();
        assert_eq!(refs.iter().find(|(n, _)| n == "refs/tags/v1").unwrap().1, main, "peeled to the commit");
        let m = t.path().join("mirror.git");
        mirror(&url, &m).unwrap();
        std::fs::write(src.join("b"), "2").unwrap();
        git(&src, &["add", "b"]);
        git(&src, &["commit", "-qm", "two"]);
        mirror(&url, &m).unwrap();
        let head = crate::output(&src, &["rev-parse", "HEAD"]).unwrap();
        let work = t.path().join("work");
        checkout_at(&m.display().to_string(), &head, Some("main"), &work).unwrap();
        assert!(work.join("b").is_file());
        assert_eq!(crate::output(&work, &["symbolic-ref", "--short", "HEAD"]).as_deref(), Some("main"));
        assert_eq!(crate::Checkout::read(&work).author.as_deref(), Some("t <t@x>"));
        checkout_at(&m.display().to_string(), &main, None, &work).unwrap();
        assert!(!work.join("b").exists(), "a file of the later commit is gone");
        assert!(has_branch(&m, "main") && !has_branch(&m, "nope") && !has_branch(&m, "../x"));
        git(&m, &["pack-refs", "--all"]);
        assert!(has_branch(&m, "main"), "a packed ref");
        // Blob ids: one process for several paths; the same file in two commits, one id.
        let first = blobs(&m, &main, &["a".into(), "b".into(), "envs/none.yml".into()]).unwrap();
        let second = blobs(&m, &head, &["a".into(), "b".into()]).unwrap();
        assert_eq!((first.len(), second.len()), (1, 2), "{first:?} {second:?}");
        assert_eq!(first["a"], second["a"]);
        assert_eq!(blob_text(&m, &second["b"]).unwrap(), "2");
    }
}
