//! Who runs slipway, on which machine: the name recorded as the actor of releases and
//! approvals, the host name in lock owners, and random tokens.

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

/// `n` random bytes from the kernel (keys, salts, nonces).
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// `n` random bytes from the kernel, as lowercase hex (tokens, secrets).
pub fn random_hex(n: usize) -> std::io::Result<String> {
    Ok(random_bytes(n)?.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_hex_is_random_and_hex() {
        let (a, b) = (super::random_hex(16).unwrap(), super::random_hex(16).unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()) && a != b);
    }
}
