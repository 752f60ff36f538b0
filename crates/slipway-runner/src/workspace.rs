//! Job workspaces: a private copy of the project's files (tracked and untracked-not-ignored,
//! as git sees them) so that jobs never touch the user's tree and a file another job made is
//! absent unless it came as an artifact. Copies use `copy_file_range` through `std::fs::copy`,
//! which the kernel turns into a reflink on copy-on-write filesystems, and run on all cores.
//! A small `.git` (alternates to the project's object store, copied refs and index) lets
//! `git describe`/`git status` work inside the job without sharing any writable git state.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The set of project files a workspace is made from, computed once per run.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub root: PathBuf,
    /// Relative paths of regular files and symlinks.
    pub files: Vec<PathBuf>,
    /// The project's git directory, when it is a git work tree.
    pub git_dir: Option<PathBuf>,
}

impl Snapshot {
    /// Lists the project: `git ls-files --cached --others --exclude-standard` in a git work
    /// tree (files deleted in the tree are skipped), otherwise every file but `.git`/`.slipway`.
    pub fn take(root: &Path) -> std::io::Result<Snapshot> {
        let git_dir = root.join(".git");
        let git_dir = git_dir.is_dir().then_some(git_dir);
        let mut files = Vec::new();
        let listed = if git_dir.is_some() {
            Command::new("git")
                .args([
                    "ls-files",
                    "-z",
                    "--cached",
                    "--others",
                    "--exclude-standard",
                ])
                .current_dir(root)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
        } else {
            None
        };
        match listed {
            Some(out) => {
                let mut seen = std::collections::HashSet::new();
                for raw in out.stdout.split(|b| *b == 0).filter(|s| !s.is_empty()) {
                    let rel = PathBuf::from(String::from_utf8_lossy(raw).into_owned());
                    if rel.starts_with(".slipway") || !seen.insert(rel.clone()) {
                        continue;
                    }
                    if std::fs::symlink_metadata(root.join(&rel)).is_ok() {
                        files.push(rel);
                    }
                }
            }
            None => walk(root, Path::new(""), &mut files)?,
        }
        Ok(Snapshot {
            root: root.to_path_buf(),
            files,
            git_dir,
        })
    }

    /// Materialises a workspace at `dest` (which must not exist yet).
    pub fn materialize(&self, dest: &Path, threads: usize) -> std::io::Result<()> {
        std::fs::create_dir_all(dest)?;
        copy_files(&self.root, dest, &self.files, threads)?;
        if let Some(g) = &self.git_dir {
            // Best effort: a job without git metadata still runs.
            let _ = git_shim(g, &dest.join(".git"));
        }
        Ok(())
    }
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(root.join(rel))? {
        let e = e?;
        let name = e.file_name();
        if rel.as_os_str().is_empty() && (name == ".git" || name == ".slipway") {
            continue;
        }
        let p = rel.join(&name);
        let t = e.file_type()?;
        if t.is_dir() {
            walk(root, &p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Copies `files` (relative to `src`) into `dest`, preserving modes and symlinks, on up to
/// `threads` threads.
pub fn copy_files(
    src: &Path,
    dest: &Path,
    files: &[PathBuf],
    threads: usize,
) -> std::io::Result<()> {
    // Directories first, once each, so the copying threads never race on them.
    let mut dirs: Vec<&Path> = files
        .iter()
        .filter_map(|f| f.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        std::fs::create_dir_all(dest.join(d))?;
    }
    let threads = threads.clamp(1, 16);
    if files.len() < 64 || threads == 1 {
        return files
            .iter()
            .try_for_each(|f| copy_one(&src.join(f), &dest.join(f)));
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .try_for_each(|f| copy_one(&src.join(f), &dest.join(f)))
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("copy thread panicked")))
        })
    })
}

fn copy_one(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from)?;
        let _ = std::fs::remove_file(to);
        return std::os::unix::fs::symlink(target, to);
    }
    if meta.is_dir() {
        return std::fs::create_dir_all(to);
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| std::io::Error::new(e.kind(), format!("copying {}: {e}", from.display())))
}

/// A private `.git` for a workspace that borrows the project's objects read-only.
fn git_shim(src: &Path, dest: &Path) -> std::io::Result<()> {
    let src = src.canonicalize()?;
    std::fs::create_dir_all(dest.join("objects/info"))?;
    std::fs::create_dir_all(dest.join("refs/heads"))?;
    std::fs::create_dir_all(dest.join("refs/tags"))?;
    let mut alternates = src.join("objects").display().to_string();
    alternates.push('\n');
    // The project's own alternates must stay reachable too.
    if let Ok(more) = std::fs::read_to_string(src.join("objects/info/alternates")) {
        alternates.push_str(&more);
    }
    std::fs::write(dest.join("objects/info/alternates"), alternates)?;
    std::fs::write(
        dest.join("config"),
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tfilemode = true\n",
    )?;
    for f in ["HEAD", "packed-refs", "index", "shallow"] {
        if src.join(f).is_file() {
            std::fs::copy(src.join(f), dest.join(f))?;
        }
    }
    copy_tree(&src.join("refs"), &dest.join("refs"))
}

fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    let Ok(rd) = std::fs::read_dir(src) else {
        return Ok(());
    };
    std::fs::create_dir_all(dest)?;
    for e in rd {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            copy_tree(&e.path(), &dest.join(e.file_name()))?;
        } else if t.is_file() {
            std::fs::copy(e.path(), dest.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Removes a directory tree, tolerating read-only entries (Go's module cache makes them).
pub fn remove_tree(p: &Path) {
    if std::fs::remove_dir_all(p).is_ok() {
        return;
    }
    fn make_writable(p: &Path) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                if let Ok(t) = e.file_type()
                    && t.is_dir()
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ =
                        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755));
                    make_writable(&e.path());
                }
            }
        }
    }
    make_writable(p);
    let _ = std::fs::remove_dir_all(p);
}

/// All regular files and symlinks below `dir`, relative to it (skipping `.git`).
pub fn list_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn rec(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(root.join(rel)) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if rel.as_os_str().is_empty() && name == ".git" {
                continue;
            }
            let p = rel.join(&name);
            match e.file_type() {
                Ok(t) if t.is_dir() => rec(root, &p, out),
                Ok(_) => out.push(p),
                Err(_) => {}
            }
        }
    }
    rec(dir, Path::new(""), &mut out);
    out
}
