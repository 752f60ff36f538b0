//! Process groups. Every child slipway starts (job shells, service instances, the agent)
//! leads a group of its own, so stopping it stops everything it started: SIGTERM to the group,
//! a grace period, then SIGKILL. Children also get a parent-death signal, so a slipway that is
//! killed outright (`kill -9`) takes them with it; and [`Records`] remember running groups by
//! pid and start time, so a restarted process can stop what its predecessor left — and never
//! a recycled pid.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Sends `signal` to the process group `pgid` (a child started with [`own_group`]); false when
/// the group no longer exists.
pub fn signal_group(pgid: u32, signal: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
    unsafe { libc::kill(-(pgid as i32), signal) == 0 }
}

/// Whether any process of the group is left.
pub fn group_alive(pgid: u32) -> bool {
    signal_group(pgid, 0)
}

/// Sends `signal` to one process.
pub fn signal(pid: u32, signal: i32) -> bool {
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill(2) on one pid; no memory is touched.
    unsafe { libc::kill(pid as i32, signal) == 0 }
}

/// Whether the process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    // SAFETY: kill(pid, 0) only asks whether the process exists.
    let exists = pid > 0 && unsafe { libc::kill(pid as i32, 0) } == 0;
    exists && std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| !s.contains(") Z "))
}

pub const SIGTERM: i32 = libc::SIGTERM;
pub const SIGKILL: i32 = libc::SIGKILL;
pub const SIGINT: i32 = libc::SIGINT;

/// Makes the command's child lead a new process group and receive `SIGKILL` when the thread
/// that spawned it ends (the whole process, for a thread that lives as long as it does) — a
/// `kill -9` of slipway must not leave its children running.
pub fn own_group(cmd: &mut std::process::Command, die_with_parent: bool) {
    cmd.process_group(0);
    if die_with_parent {
        // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// A descriptor that becomes readable when the process `pid` (our child) exits:
/// `pidfd_open(2)`, so one thread can wait for a child's exit and its output together.
pub fn exit_fd(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just made for us and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits up to `timeout` until one of `fds` is readable or hung up; which ones are (all false
/// on a timeout or an interrupted wait).
pub fn wait_readable<const N: usize>(
    fds: [Option<std::os::fd::BorrowedFd<'_>>; N],
    timeout: std::time::Duration,
) -> [bool; N] {
    use std::os::fd::AsRawFd;
    let mut polled =
        fds.map(|fd| libc::pollfd { fd: fd.map_or(-1, |f| f.as_raw_fd()), events: libc::POLLIN, revents: 0 });
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `polled` is a valid array of N pollfd for the duration of the call; a negative
    // fd is ignored by poll(2).
    let n = unsafe { libc::poll(polled.as_mut_ptr(), N as libc::nfds_t, ms) };
    if n <= 0 {
        return [false; N];
    }
    polled.map(|p| p.fd >= 0 && p.revents != 0)
}

/// The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19).map(str::to_string)
}

/// A directory of records, one file per running process group (`<pid>` holding its start
/// time), that a later process reads to stop what an earlier one left running.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(dir: &Path) -> std::io::Result<Records> {
        std::fs::create_dir_all(dir)?;
        Ok(Records { dir: dir.to_path_buf() })
    }

    pub fn remember(&self, pid: u32) {
        if let Some(t) = start_time(pid) {
            let _ = std::fs::write(self.dir.join(pid.to_string()), t);
        }
    }

    pub fn forget(&self, pid: u32) {
        let _ = std::fs::remove_file(self.dir.join(pid.to_string()));
    }

    /// Kills the process groups recorded here whose leader is still the process that was
    /// recorded (same start time); returns how many.
    pub fn kill_leftovers(&self) -> usize {
        let mut n = 0;
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let recorded = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if start_time(pid).is_some_and(|t| t == recorded.trim()) {
                signal_group(pid, SIGKILL);
                n += 1;
            }
            let _ = std::fs::remove_file(entry.path());
        }
        n
    }
}

/// Kills the process groups of this process's children when this process dies, however it
/// dies (`kill -9` included). A parent-death signal only reaches a child's leader, and the
/// rest of its group would live on; the guardian — a small `sh` that this process feeds
/// through a pipe — sees the pipe close when this process goes and kills every group still
/// registered with it. One per process, started on first use.
pub struct Guardian {
    records: PathBuf,
    /// Held open for the process's lifetime: its closing is the guardian's signal.
    _pipe: std::process::ChildStdin,
}

impl Guardian {
    /// The process's guardian (`None` when it cannot start: no `sh`, or no temp directory).
    pub fn get() -> Option<&'static Guardian> {
        static GUARDIAN: std::sync::OnceLock<Option<Guardian>> = std::sync::OnceLock::new();
        GUARDIAN.get_or_init(Guardian::start).as_ref()
    }

    fn start() -> Option<Guardian> {
        // A record per running job is made and removed: on tmpfs (/dev/shm) that costs next to
        // nothing, where a disk file system journals every one.
        let name = format!("slipway-guard-{}", std::process::id());
        let records = [std::path::PathBuf::from("/dev/shm"), std::env::temp_dir()]
            .into_iter()
            .map(|d| d.join(&name))
            .find(|r| std::fs::create_dir_all(r).is_ok())?;
        // Waits for end of input (this process exited), then kills the registered groups and
        // removes its directory. In a group of its own: a Ctrl-C at the terminal is for us.
        // Containers (`docker-ID`) are removed through the engine's CLI.
        // Networks (`network-ID`) after them: a network goes only when no container uses it.
        let script = r#"read -r _; for f in "$1"/*; do [ -e "$f" ] || continue; n=${f##*/}; case $n in docker-*) docker rm -f -v "${n#docker-}" >/dev/null 2>&1 ;; network-*) ;; *) kill -KILL -"$n" 2>/dev/null ;; esac; done; for f in "$1"/network-*; do [ -e "$f" ] && docker network rm "${f##*/network-}" >/dev/null 2>&1; done; rm -rf "$1""#;
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script, "slipway-guardian"])
            .arg(&records)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        own_group(&mut cmd, false);
        let mut child = cmd.spawn().ok()?;
        let pipe = child.stdin.take()?;
        // Reaped by init once we are gone; while we live it only waits on its input.
        std::mem::forget(child);
        Some(Guardian { records, _pipe: pipe })
    }

    /// Kills the group `pgid` if this process dies before [`Guardian::release`].
    pub fn guard(&self, pgid: u32) {
        let _ = std::fs::write(self.records.join(pgid.to_string()), "");
    }

    pub fn release(&self, pgid: u32) {
        let _ = std::fs::remove_file(self.records.join(pgid.to_string()));
    }

    /// Removes the container `id` (an id or a name: guarding the name before the container is
    /// made leaves no moment unguarded) with `docker rm -f` if this process dies before
    /// [`Guardian::release_container`].
    pub fn guard_container(&self, id: &str) {
        if is_docker_name(id) {
            let _ = std::fs::write(self.records.join(format!("docker-{id}")), "");
        }
    }

    pub fn release_container(&self, id: &str) {
        let _ = std::fs::remove_file(self.records.join(format!("docker-{id}")));
    }

    /// Removes the Docker network `id` (after the containers) if this process dies before
    /// [`Guardian::release_network`].
    pub fn guard_network(&self, id: &str) {
        if is_docker_name(id) {
            let _ = std::fs::write(self.records.join(format!("network-{id}")), "");
        }
    }

    pub fn release_network(&self, id: &str) {
        let _ = std::fs::remove_file(self.records.join(format!("network-{id}")));
    }
}

/// A Docker id or name (`[A-Za-z0-9][A-Za-z0-9_.-]*`): safe as a file name and a word of `sh`.
fn is_docker_name(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_signalled_whole_and_records_survive_only_their_process() {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30 & wait"]);
        own_group(&mut cmd, true);
        let mut child = cmd.spawn().expect("spawn");
        let pid = child.id();
        let dir = std::env::temp_dir().join(format!("slipway-sys-test-{}", std::process::id()));
        let records = Records::new(&dir).expect("records");
        records.remember(pid);
        // A record whose process is gone (or another process now) is only removed.
        std::fs::write(dir.join("1"), "0").expect("stale record");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(group_alive(pid));
        assert_eq!(records.kill_leftovers(), 1);
        let _ = child.wait();
        let t = std::time::Instant::now();
        while group_alive(pid) {
            assert!(t.elapsed() < std::time::Duration::from_secs(5), "the group's sleeps were killed too");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
