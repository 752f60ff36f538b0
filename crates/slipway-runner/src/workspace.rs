//! Job workspaces: a private copy of the project's files (tracked and untracked-not-ignored,
//! as git sees them) so that jobs never touch the user's tree and a file another job made is
//! absent unless it came as an artifact.
//!
//! A workspace is kept between runs (`.slipway/work/<job>`) and *synced*, like rsync: a file
//! is copied again only when the project's copy changed (size, mtime, mode) or a job touched
//! the workspace's copy (its ctime is newer than the last sync's marker); anything else in the
//! workspace — build outputs, restored artifacts, a previous job's files — is removed. A
//! repeated run of an unchanged repository therefore creates no files at all. Copies go
//! through `copy_file_range`, which becomes a reflink on copy-on-write filesystems, on all
//! cores. A small `.git` (alternates to the project's object store, packed refs, the index)
//! lets `git describe`/`git status` work inside the job without touching the project's
//! repository.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The set of project files a workspace is made from, computed once per run.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub root: PathBuf,
    /// Relative paths of regular files and symlinks.
    pub files: Vec<PathBuf>,
    /// `lstat` of each file in `files`, same order (what a workspace copy is compared with).
    pub meta: Vec<SrcMeta>,
    /// What a workspace's private `.git` is made of, when the project is a git work tree
    /// with at least one commit.
    pub git: Option<GitSeed>,
}

/// What a synced copy must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrcMeta {
    pub size: u64,
    pub mtime: (i64, i64),
    pub mode: u32,
    pub symlink: bool,
}

impl SrcMeta {
    fn of(m: &Metadata) -> SrcMeta {
        SrcMeta {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            mode: m.mode() & 0o7777,
            symlink: m.file_type().is_symlink(),
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub copied: usize,
    pub kept: usize,
    pub removed: usize,
}

/// Git metadata read once per run and written into every workspace.
#[derive(Debug, Clone)]
pub struct GitSeed {
    /// `objects/info/alternates`: the project's object directories, borrowed read-only.
    pub alternates: String,
    /// The commit the workspace is at; HEAD is detached there, as in GitLab CI.
    pub head: String,
    /// Every ref as a `packed-refs` file, so tags and branches resolve (`git describe`).
    pub packed_refs: String,
    /// The project's index, so `git status` and `git diff` work.
    pub index: Option<std::sync::Arc<Vec<u8>>>,
}

impl Snapshot {
    /// Lists the project: `git ls-files --cached --others --exclude-standard` in a git work
    /// tree (files deleted in the tree are skipped), otherwise every file but `.git`/`.slipway`.
    pub fn take(root: &Path) -> std::io::Result<Snapshot> {
        let git_dir = root.join(".git");
        let is_git = git_dir.is_dir();
        // The file list and the refs are independent: git answers both at once. `git
        // ls-files` also works in a subdirectory of a work tree (it lists that directory); the
        // private `.git` is only made when the project is the top of its repository.
        let (listed, refs) = slipway_git::files_and_refs(root, is_git);
        let mut listed_files = Vec::new();
        match listed {
            Some(out) => {
                let mut seen = HashSet::new();
                for raw in out.split(|b| *b == 0).filter(|s| !s.is_empty()) {
                    let rel = PathBuf::from(String::from_utf8_lossy(raw).into_owned());
                    if !rel.starts_with(".slipway") && seen.insert(rel.clone()) {
                        listed_files.push(rel);
                    }
                }
            }
            None => walk(root, Path::new(""), &mut listed_files)?,
        }
        let mut files = Vec::with_capacity(listed_files.len());
        let mut meta = Vec::with_capacity(listed_files.len());
        for rel in listed_files {
            // Files deleted in the work tree are still in the index: skip them. Directories
            // show up for submodules and nested repositories: skip those too.
            if let Ok(m) = std::fs::symlink_metadata(root.join(&rel))
                && !m.is_dir()
            {
                meta.push(SrcMeta::of(&m));
                files.push(rel);
            }
        }
        let git = match (is_git, refs) {
            (true, Some(refs)) => git_seed(&git_dir, refs),
            _ => None,
        };
        Ok(Snapshot { root: root.to_path_buf(), files, meta, git })
    }

    /// Makes `dest` hold exactly the project's files (plus a private `.git`), reusing what a
    /// previous sync left there. The caller must hold the workspace's lock.
    pub fn sync_into(&self, dest: &Path, threads: usize) -> std::io::Result<SyncStats> {
        let marker = marker_path(dest);
        // Copies made before the marker's ctime and untouched since are still good.
        let synced_at = std::fs::metadata(&marker).ok().filter(|_| dest.is_dir()).map(|m| (m.ctime(), m.ctime_nsec()));
        std::fs::create_dir_all(dest)?;
        let mut stats = SyncStats::default();

        let mut existing: HashMap<PathBuf, Metadata> = HashMap::new();
        walk_meta(dest, Path::new(""), &mut existing);
        let mut wanted_dirs: HashSet<&Path> = HashSet::new();
        for f in &self.files {
            let mut p = f.parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                if !wanted_dirs.insert(d) {
                    break;
                }
                p = d.parent();
            }
        }
        let wanted_files: HashMap<&Path, SrcMeta> =
            self.files.iter().map(|f| f.as_path()).zip(self.meta.iter().copied()).collect();

        // Remove what does not belong, shallowest first so a removed tree is removed once.
        let mut extras: Vec<(&PathBuf, bool)> = existing
            .iter()
            .filter(|(p, m)| {
                if m.is_dir() { !wanted_dirs.contains(p.as_path()) } else { !wanted_files.contains_key(p.as_path()) }
            })
            .map(|(p, m)| (p, m.is_dir()))
            .collect();
        extras.sort_by_key(|(p, _)| p.components().count());
        let mut removed_dirs: Vec<&Path> = Vec::new();
        for (p, is_dir) in extras {
            if removed_dirs.iter().any(|d| p.starts_with(d)) {
                continue;
            }
            let full = dest.join(p);
            if is_dir {
                remove_tree(&full);
                removed_dirs.push(p);
            } else {
                std::fs::remove_file(&full)?;
            }
            stats.removed += 1;
        }

        // Copy what is missing or stale.
        let mut to_copy: Vec<PathBuf> = Vec::new();
        for (f, src) in self.files.iter().zip(&self.meta) {
            let fresh = existing.get(f).is_some_and(|m| {
                let ctime = (m.ctime(), m.ctime_nsec());
                SrcMeta::of(m) == *src && synced_at.is_some_and(|t| ctime < t)
            });
            if fresh {
                stats.kept += 1;
            } else {
                if existing.get(f).is_some_and(|m| m.is_dir()) {
                    remove_tree(&dest.join(f));
                }
                to_copy.push(f.clone());
            }
        }
        stats.copied = to_copy.len();
        copy_files(&self.root, dest, &to_copy, threads)?;
        if let Some(g) = &self.git {
            // Best effort: a job without git metadata still runs.
            let _ = git_shim(g, &dest.join(".git"));
        }
        // The marker's ctime is the baseline of the next sync (same clock as the files');
        // its content changes every time so the write surely updates it.
        // File systems stamp ctimes from a coarse clock (a few ms): copies made in the
        // marker's own tick would look touched and be copied again next time, so after
        // copying, the marker is rewritten until its tick is past theirs.
        let write_marker = || -> std::io::Result<(i64, i64)> {
            let stamp =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            std::fs::write(&marker, stamp.to_string())?;
            let m = std::fs::metadata(&marker)?;
            Ok((m.ctime(), m.ctime_nsec()))
        };
        // A sync that changed nothing keeps the marker: nothing was copied after it, and what a
        // job touches later is still newer than it (one file write fewer per job).
        if synced_at.is_some() && stats.copied == 0 && stats.removed == 0 {
            return Ok(stats);
        }
        let copied_by = write_marker()?;
        if stats.copied > 0 {
            let started = std::time::Instant::now();
            while write_marker()? <= copied_by && started.elapsed() < std::time::Duration::from_millis(100) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Ok(stats)
    }
}

fn marker_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".synced");
    dest.with_file_name(name)
}

/// An exclusive lock on a workspace (released when dropped); `None` when another run holds it.
pub fn lock(dest: &Path) -> std::io::Result<Option<File>> {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(dest.with_file_name(name))?;
    // SAFETY: flock(2) on a descriptor we own.
    let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) };
    Ok((r == 0).then_some(f))
}

fn walk_meta(root: &Path, rel: &Path, out: &mut HashMap<PathBuf, Metadata>) {
    let Ok(rd) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if rel.as_os_str().is_empty() && name == ".git" {
            continue;
        }
        let p = rel.join(&name);
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            walk_meta(root, &p, out);
        }
        out.insert(p, m);
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
pub fn copy_files(src: &Path, dest: &Path, files: &[PathBuf], threads: usize) -> std::io::Result<()> {
    // Directories first, once each, so the copying threads never race on them.
    let mut dirs: Vec<&Path> = files.iter().filter_map(|f| f.parent()).filter(|p| !p.as_os_str().is_empty()).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        std::fs::create_dir_all(dest.join(d))?;
    }
    let threads = threads.clamp(1, 16);
    if files.len() < 64 || threads == 1 {
        return files.iter().try_for_each(|f| copy_one(&src.join(f), &dest.join(f)));
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().try_for_each(|f| copy_one(&src.join(f), &dest.join(f)))))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("copy thread panicked"))))
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
    let fail = |e: std::io::Error| std::io::Error::new(e.kind(), format!("copying {}: {e}", from.display()));
    let mode = meta.mode() & 0o7777;
    let mut src = File::open(from).map_err(fail)?;
    let mut dst = match OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(to) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // A read-only copy from an earlier sync: replace it.
            let _ = std::fs::remove_file(to);
            OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(to).map_err(fail)?
        }
        Err(e) => return Err(fail(e)),
    };
    // io::copy between files uses copy_file_range (a reflink where the filesystem can).
    std::io::copy(&mut src, &mut dst).map_err(fail)?;
    dst.set_permissions(Permissions::from_mode(mode)).map_err(fail)?;
    // The copy keeps the source's mtime: that is how the next sync knows it is current.
    if let Ok(mtime) = meta.modified() {
        let _ = dst.set_modified(mtime);
    }
    Ok(())
}

fn git_seed(git_dir: &Path, refs: String) -> Option<GitSeed> {
    let git_dir = git_dir.canonicalize().ok()?;
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = match head.trim().strip_prefix("ref: ") {
        Some(r) => refs.lines().find_map(|l| l.strip_suffix(&format!(" {r}")).map(str::to_string))?,
        None => head.trim().to_string(),
    };
    let mut packed = String::from("# pack-refs with: sorted\n");
    let mut lines: Vec<&str> = refs.lines().filter(|l| !l.ends_with("/HEAD")).collect();
    lines.sort_by_key(|l| l.split_once(' ').map(|(_, r)| r.to_string()));
    for l in lines {
        packed.push_str(l);
        packed.push('\n');
    }
    let objects = git_dir.join("objects");
    let mut alternates = format!("{}\n", objects.display());
    // The project's own alternates must stay reachable too.
    if let Ok(more) = std::fs::read_to_string(objects.join("info/alternates")) {
        alternates.push_str(&more);
    }
    Some(GitSeed {
        alternates,
        head: format!("{head}\n"),
        packed_refs: packed,
        index: std::fs::read(git_dir.join("index")).ok().map(std::sync::Arc::new),
    })
}

/// Writes `bytes` unless the file already holds exactly them (a read is far cheaper than a
/// write on most filesystems).
fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes)
}

/// A private `.git` for a workspace that borrows the project's objects read-only: nothing a
/// job does with git reaches the project's repository.
fn git_shim(seed: &GitSeed, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest.join("objects/info"))?;
    // Refs a previous job created are dropped; packed-refs below holds the project's.
    if std::fs::read_dir(dest.join("refs")).map(|mut d| d.next().is_some()).unwrap_or(false) {
        remove_tree(&dest.join("refs"));
    }
    std::fs::create_dir_all(dest.join("refs"))?;
    write_if_changed(&dest.join("objects/info/alternates"), seed.alternates.as_bytes())?;
    write_if_changed(
        &dest.join("config"),
        b"[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tfilemode = true\n",
    )?;
    write_if_changed(&dest.join("HEAD"), seed.head.as_bytes())?;
    write_if_changed(&dest.join("packed-refs"), seed.packed_refs.as_bytes())?;
    match &seed.index {
        Some(index) => write_if_changed(&dest.join("index"), index)?,
        None => {
            let _ = std::fs::remove_file(dest.join("index"));
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
                    let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755));
                    make_writable(&e.path());
                }
            }
        }
    }
    make_writable(p);
    let _ = std::fs::remove_dir_all(p);
}

/// All regular files and symlinks below `dir`, relative to it (skipping `.git`), sorted.
pub fn list_tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = HashMap::new();
    walk_meta(dir, Path::new(""), &mut all);
    let mut out: Vec<PathBuf> = all.into_iter().filter(|(_, m)| !m.is_dir()).map(|(p, _)| p).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(root: &Path) -> Snapshot {
        Snapshot::take(root).unwrap()
    }

    #[test]
    fn sync_copies_once_then_only_what_changed() {
        let src = tempfile::tempdir().unwrap();
        for i in 0..50 {
            let p = src.path().join(format!("d{}/f{i}", i % 5));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{i}")).unwrap();
        }
        let work = tempfile::tempdir().unwrap();
        let ws = work.path().join("job");
        let first = snapshot(src.path()).sync_into(&ws, 2).unwrap();
        assert_eq!(first.copied, 50);
        // A sync of an unchanged tree copies nothing at all.
        let again = snapshot(src.path()).sync_into(&ws, 2).unwrap();
        assert_eq!((again.copied, again.kept, again.removed), (0, 50, 0), "{again:?}");
        // A job writes into the workspace: that file is restored next time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(ws.join("d0/f0"), "job was here").unwrap();
        std::fs::write(ws.join("extra"), "x").unwrap();
        let third = snapshot(src.path()).sync_into(&ws, 2).unwrap();
        assert_eq!(std::fs::read_to_string(ws.join("d0/f0")).unwrap(), "0");
        assert!(!ws.join("extra").exists());
        assert_eq!((third.copied, third.removed), (1, 1), "only what the job touched: {third:?}");
    }

    #[test]
    fn a_second_lock_on_a_workspace_is_refused() {
        let work = tempfile::tempdir().unwrap();
        let ws = work.path().join("job");
        let held = lock(&ws).unwrap();
        assert!(held.is_some());
        assert!(lock(&ws).unwrap().is_none());
        drop(held);
        assert!(lock(&ws).unwrap().is_some());
    }
}
