//! Resource limits: the open-file limit a server raises to its hard limit at
//! start (as Go and most servers do) and budgets its connections by, and the room left on the
//! file system holding a path (for "disk full" messages that say where and how much).

/// Raises the soft limit on open files to the hard limit and returns the soft limit now in
/// force (the old one when raising is not allowed).
pub fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = super::raise_open_files();
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit with a valid pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!((soft, lim.rlim_cur), (lim.rlim_max, lim.rlim_max));
    }
}

/// Room on the file system holding a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpace {
    /// Where that file system is mounted, and its type (`ext4`, `tmpfs`, …).
    pub mount: std::path::PathBuf,
    pub fs_type: String,
    /// Bytes an unprivileged process may still write, and the size.
    pub free: u64,
    pub total: u64,
}

/// The file system holding `path` (or its nearest existing parent): its mount point, type,
/// free and total bytes.
pub fn disk_space(path: &std::path::Path) -> Option<DiskSpace> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let p = p.canonicalize().ok()?;
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).ok()?;
    // SAFETY: statvfs fills a struct we own from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    // The longest mount point that is a prefix of the path (/proc/self/mountinfo: field 5 is
    // the mount point, the type follows the " - " separator).
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (mount, fs_type) = info
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split(' ').nth(4)?.replace("\\040", " ");
            let fs = right.split(' ').next()?.to_string();
            p.starts_with(&mount).then_some((std::path::PathBuf::from(mount), fs))
        })
        .max_by_key(|(m, _)| m.as_os_str().len())
        .unwrap_or_else(|| (std::path::PathBuf::from("/"), String::new()));
    Some(DiskSpace { mount, fs_type, free: st.f_bavail as u64 * frsize, total: st.f_blocks as u64 * frsize })
}

/// `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", units[i]) }
}

#[cfg(test)]
mod disk_tests {
    #[test]
    fn the_root_file_system_has_a_size() {
        let d = super::disk_space(std::path::Path::new("/proc/../tmp/does/not/exist")).unwrap();
        assert!(d.total > 0 && d.free <= d.total, "{d:?}");
        assert!(std::path::Path::new("/tmp").canonicalize().unwrap().starts_with(&d.mount), "{d:?}");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(12), "12 B");
    }
}
