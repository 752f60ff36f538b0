//! The project's files as `git ls-files --cached --others --exclude-standard` lists them,
//! without starting git: the paths in the index (versions 2 to 4), and the work tree's files
//! that are neither in it nor ignored — walked with the `ignore` crate's gitignore rules
//! (`.gitignore` files, `.git/info/exclude`, the user's global excludes file), pruning ignored
//! directories, nested repositories and `.git` as git does.
//!
//! `None` for whatever could make git answer differently — a split or sparse index, an
//! excludes file set in the repository's or the system's configuration, configuration that
//! includes other files — and the caller asks git.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Configuration that could name another excludes file than the `ignore` crate reads.
const CONFIG_VARS: &[&str] = &["GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS"];

/// Tracked and untracked-not-ignored files of the work tree at `root` (whose `.git` a
/// [`crate::plain::Plain`] reads), relative to it, `.slipway` left out.
pub(crate) fn files(root: &Path, repo: &crate::plain::Plain) -> Option<Vec<PathBuf>> {
    if CONFIG_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
        return None;
    }
    let mentions_excludes = |c: &str| {
        let c = c.to_ascii_lowercase();
        c.contains("excludesfile") || c.contains("[include")
    };
    if mentions_excludes(repo.config())
        || std::fs::read_to_string("/etc/gitconfig").is_ok_and(|c| mentions_excludes(&c))
    {
        return None;
    }
    // The user's excludes file: git's default place unless the user's configuration names
    // one (then the `ignore` crate finds it — parsing the configuration compiles a regex, which
    // costs more than the walk of a small project, so only then).
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let xdg =
        std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".config")));
    let user_configs = [home.as_ref().map(|h| h.join(".gitconfig")), xdg.as_ref().map(|x| x.join("git/config"))];
    let mut configured = false;
    for config in user_configs.into_iter().flatten() {
        if let Ok(c) = std::fs::read_to_string(config) {
            let c = c.to_ascii_lowercase();
            if c.contains("[include") {
                return None;
            }
            configured |= c.contains("excludesfile");
        }
    }
    let global = configured || xdg.is_some_and(|x| x.join("git/ignore").exists());
    let tracked = index_paths(&root.join(".git/index"))?;
    let known: HashSet<&Path> = tracked.iter().map(PathBuf::as_path).collect();
    let mut untracked = Vec::new();
    let walk = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(global)
        .require_git(true)
        .filter_entry(|e| {
            let name = e.file_name();
            if name == ".git" || (e.depth() == 1 && name == ".slipway") {
                return false;
            }
            // A repository inside the work tree (a submodule, a clone) is not walked into.
            !(e.depth() > 0 && e.file_type().is_some_and(|t| t.is_dir()) && is_repository(e.path()))
        })
        .build();
    for entry in walk {
        let entry = entry.ok()?;
        if entry.depth() == 0 || entry.file_type().is_none_or(|t| t.is_dir()) {
            continue;
        }
        let rel = entry.path().strip_prefix(root).ok()?;
        if !known.contains(rel) {
            untracked.push(rel.to_path_buf());
        }
    }
    let mut all = tracked;
    all.extend(untracked);
    all.retain(|p| !p.starts_with(".slipway"));
    Some(all)
}

/// Whether `dir` is another repository's work tree, as git decides before walking into it:
/// its `.git` is a file (`gitdir: …`) or a directory with `HEAD`, `objects` and `refs`.
fn is_repository(dir: &Path) -> bool {
    let git = dir.join(".git");
    match std::fs::metadata(&git) {
        Ok(m) if m.is_file() => true,
        Ok(m) if m.is_dir() => ["HEAD", "objects", "refs"].iter().all(|f| git.join(f).exists()),
        _ => false,
    }
}

/// The paths an index holds (each once), in its order; `None` for an index this does not read.
fn index_paths(path: &Path) -> Option<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(data) = std::fs::read(path) else {
        // No index yet (nothing added): only untracked files.
        return (!path.exists()).then(Vec::new);
    };
    let be32 = |at: usize| Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?));
    if data.get(..4)? != b"DIRC" {
        return None;
    }
    let version = be32(4)?;
    if !(2..=4).contains(&version) {
        return None;
    }
    let count = be32(8)? as usize;
    const HASH: usize = 20;
    let mut at = 12;
    let mut paths: Vec<PathBuf> = Vec::with_capacity(count);
    let mut previous: Vec<u8> = Vec::new();
    for _ in 0..count {
        let start = at;
        let mode = be32(start + 24)?;
        if mode & 0o170000 == 0o040000 {
            return None; // a sparse index's directory entry
        }
        let flags = u16::from_be_bytes(data.get(start + 40 + HASH..start + 42 + HASH)?.try_into().ok()?);
        at = start + 42 + HASH;
        if flags & 0x4000 != 0 {
            at += 2; // extended flags (version 3 and later)
        }
        let name = if version == 4 {
            // The length of the previous path to drop, then the rest of this one.
            let mut b = *data.get(at)?;
            at += 1;
            let mut strip = (b & 0x7f) as usize;
            while b & 0x80 != 0 {
                b = *data.get(at)?;
                at += 1;
                strip = ((strip + 1) << 7) | (b & 0x7f) as usize;
            }
            let end = at + data.get(at..)?.iter().position(|b| *b == 0)?;
            let mut name = previous.get(..previous.len().checked_sub(strip)?)?.to_vec();
            name.extend_from_slice(&data[at..end]);
            at = end + 1;
            name
        } else {
            let end = at + data.get(at..)?.iter().position(|b| *b == 0)?;
            let name = data[at..end].to_vec();
            // Entries are padded with 1 to 8 NULs to a multiple of 8 bytes.
            at = start + (end - start + 8) / 8 * 8;
            name
        };
        // Conflicted paths appear once per stage; entries are sorted, so repeats are adjacent.
        if name != previous || paths.is_empty() {
            paths.push(PathBuf::from(std::ffi::OsStr::from_bytes(&name)));
        }
        previous = name;
    }
    // Extensions: a split index keeps entries elsewhere.
    while at + 8 <= data.len().saturating_sub(HASH) {
        let signature = data.get(at..at + 4)?;
        if signature == b"link" || signature == b"sdir" {
            return None;
        }
        at += 8 + be32(at + 4)? as usize;
    }
    Some(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
        let out = std::process::Command::new("git")
            .args(["-c", "user.email=a@b", "-c", "user.name=n"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn by_git(dir: &Path) -> Vec<PathBuf> {
        let out = git(dir, &["ls-files", "-z", "--cached", "--others", "--exclude-standard"]);
        let mut v: Vec<PathBuf> = out
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| PathBuf::from(String::from_utf8_lossy(s).into_owned()))
            .filter(|p| !p.starts_with(".slipway"))
            // A nested repository is listed as its directory, which snapshots skip.
            .filter(|p| !std::fs::symlink_metadata(dir.join(p)).is_ok_and(|m| m.is_dir()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn ours(dir: &Path) -> Vec<PathBuf> {
        let repo = crate::plain::Plain::open(dir).expect("a plain repository");
        let mut v = files(dir, &repo).expect("read without git");
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn lists_what_git_ls_files_lists_in_every_index_version() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        git(p, &["init", "-q"]);
        let write = |rel: &str, text: &str| {
            let f = p.join(rel);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, text).unwrap();
        };
        write(".gitignore", "*.log\n/build/\ntmp*\n!keep.log\ndocs/**/*.bak\n\\#hash\nspace\\ \n");
        write("src/main.go", "package main");
        write("src/deep/er/x.go", "package er");
        write("src/.gitignore", "generated.go\n/local-only\n");
        write("src/generated.go", "ignored by src/.gitignore");
        write("src/local-only", "anchored to src/");
        write("local-only", "not ignored at the top");
        write("app.log", "ignored");
        write("keep.log", "re-included");
        write("build/out", "ignored directory");
        write("tmpfile", "ignored");
        write("docs/a/b/c.bak", "ignored by **");
        write("docs/a/b/c.md", "kept");
        write("#hash", "escaped #");
        write("space ", "trailing escaped space");
        write("untracked.txt", "untracked");
        write("vendor/lib/lib.go", "tracked below");
        write("sub/inner.txt", "inside a nested repository: not walked into");
        git(&p.join("sub"), &["init", "-q"]);
        write("notrepo/.git/HEAD", "not a repository: walked into");
        write("notrepo/file", "listed");
        std::os::unix::fs::symlink("src", p.join("link-to-dir")).unwrap();
        write(".git/info/exclude", "excluded-by-info\n");
        write("excluded-by-info", "x");
        git(p, &["add", "src/main.go", ".gitignore", "src/.gitignore", "vendor"]);
        // A tracked file that the rules ignore stays listed (it is in the index).
        git(p, &["add", "-f", "app.log"]);
        git(p, &["commit", "-q", "-m", "one"]);
        std::fs::remove_file(p.join("src/main.go")).unwrap(); // deleted: still in the index
        for version in ["2", "3", "4"] {
            git(p, &["update-index", "--index-version", version]);
            if version == "3" {
                // An extended-flag entry (intent to add) is what makes git write version 3.
                git(p, &["add", "-N", "untracked.txt"]);
            }
            assert_eq!(ours(p), by_git(p), "index version {version}");
        }
        // A conflicted path (three stages) is listed once.
        git(p, &["checkout", "-q", "-b", "other"]);
        write("vendor/lib/lib.go", "other");
        git(p, &["commit", "-q", "-am", "other"]);
        git(p, &["checkout", "-q", "-"]);
        write("vendor/lib/lib.go", "main");
        git(p, &["commit", "-q", "-am", "main"]);
        let _ = std::process::Command::new("git").args(["merge", "-q", "other"]).current_dir(p).output();
        assert_eq!(ours(p), by_git(p), "a conflicted index");
    }

    #[test]
    fn a_split_or_sparse_index_and_configured_excludes_are_left_to_git() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        git(p, &["init", "-q"]);
        std::fs::write(p.join("f"), "x").unwrap();
        git(p, &["add", "f"]);
        let open = |p: &Path| files(p, &crate::plain::Plain::open(p).unwrap());
        assert!(open(p).is_some());
        git(p, &["update-index", "--split-index"]);
        assert!(open(p).is_none(), "a split index");
        git(p, &["update-index", "--no-split-index"]);
        git(p, &["config", "core.excludesFile", "/nonexistent"]);
        assert!(open(p).is_none(), "an excludes file in the repository's configuration");
    }
}
