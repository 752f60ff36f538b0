//! Process groups of instances: signalling them, and a record of each running one
//! (`pids/<pid>` holding the process' start time) so that an agent that was killed can stop
//! what its predecessor left running — and only that, never a recycled pid.

use std::path::Path;

pub fn kill_group(pid: u32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe {
            libc::kill(-(pid as i32), signal);
        }
    }
}

/// The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19).map(str::to_string)
}

pub fn remember(dir: &Path, pid: u32) {
    if let Some(t) = start_time(pid) {
        let _ = std::fs::write(dir.join(pid.to_string()), t);
    }
}

pub fn forget(dir: &Path, pid: u32) {
    let _ = std::fs::remove_file(dir.join(pid.to_string()));
}

/// Kills the process groups a previous agent left behind; returns how many.
pub fn kill_leftovers(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let recorded = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if start_time(pid).is_some_and(|t| t == recorded.trim()) {
            kill_group(pid, libc::SIGKILL);
            n += 1;
        }
        let _ = std::fs::remove_file(entry.path());
    }
    n
}
