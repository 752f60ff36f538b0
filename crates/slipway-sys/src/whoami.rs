//! Who runs slipway, on which machine: the name recorded as the actor of releases and
//! approvals, and the host name in lock owners.

/// `$SLIPWAY_USER`, `$USER`, `$LOGNAME`, else the user database's name for our uid.
pub fn user() -> String {
    for var in ["SLIPWAY_USER", "USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var)
            && !u.is_empty()
        {
            return u;
        }
    }
    // SAFETY: getuid(2) cannot fail and touches no memory.
    user_name(unsafe { libc::getuid() })
}

/// The user database's name for `uid`, else `uid N`.
pub fn user_name(uid: u32) -> String {
    let id = uid.to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == id).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The effective user ID.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "localhost".into(), |h| h.trim().to_string())
}

/// This process as a lock owner: `pid 123 on host`.
pub fn process_label() -> String {
    format!("pid {} on {}", std::process::id(), hostname())
}
