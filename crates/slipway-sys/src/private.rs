//! Private directories: the data directory holds release configurations, service settings
//! and instance logs, so it is the owner's alone (0700, its files 0600 or 0700).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum PrivateError {
    /// Another user owns it: fixing its mode would take it from them.
    NotOwner {
        path: PathBuf,
        owner: u32,
        me: u32,
    },
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl std::fmt::Display for PrivateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivateError::NotOwner { path, owner, me } => write!(
                f,
                "the data directory {} belongs to {} and this process runs as {}",
                path.display(),
                crate::whoami::user_name(*owner),
                crate::whoami::user_name(*me)
            ),
            PrivateError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for PrivateError {}

/// Creates `dir` (0700) when missing; otherwise checks that this user owns it and takes away
/// what group and others may do with it and with everything in it, a few levels down.
/// Returns what it had to fix.
pub fn ensure(dir: &Path) -> Result<Vec<PathBuf>, PrivateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PrivateError::Io { path, source }
    };
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        // `recursive` applies the mode to the last component only after the umask.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        return Ok(Vec::new());
    }
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    let me = crate::whoami::euid();
    if meta.uid() != me && me != 0 {
        return Err(PrivateError::NotOwner { path: dir.to_path_buf(), owner: meta.uid(), me });
    }
    let mut fixed = Vec::new();
    fix(dir, 3, &mut fixed).map_err(io(dir))?;
    Ok(fixed)
}

fn fix(path: &Path, depth: u32, fixed: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
        fixed.push(path.to_path_buf());
    }
    if meta.is_dir() && depth > 0 {
        for e in std::fs::read_dir(path)?.flatten() {
            // A file that went away meanwhile (a log rotated) is no error.
            match fix(&e.path(), depth - 1, fixed) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r?,
            }
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename, readable by the owner only.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_private_and_an_open_one_is_closed() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data");
        assert!(ensure(&d).unwrap().is_empty());
        assert_eq!(mode(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(d.join("agent/logs")).unwrap();
        std::fs::write(d.join("agent/state.json"), "{}").unwrap();
        std::fs::write(d.join("agent/logs/web.log"), "x").unwrap();
        std::fs::set_permissions(d.join("agent/logs/web.log"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(d.join("tool"), "x").unwrap();
        std::fs::set_permissions(d.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let fixed = ensure(&d).unwrap();
        assert!(fixed.contains(&d) && fixed.contains(&d.join("agent/logs/web.log")), "{fixed:?}");
        assert_eq!((mode(&d), mode(&d.join("agent/logs/web.log")), mode(&d.join("tool"))), (0o700, 0o600, 0o700));
        assert!(ensure(&d).unwrap().is_empty(), "nothing left to fix");
        write_atomic(&d.join("agent/state.json"), b"{\"a\":1}").unwrap();
        assert_eq!(mode(&d.join("agent/state.json")), 0o600);
    }
}
