//! Child processes in their own process group. Stopping is SIGTERM to the whole group, a grace
//! period, then SIGKILL; after a job's shell exits, whatever it left behind in its group is
//! stopped the same way, so no process outlives its job. When slipway itself dies (even by
//! `kill -9`), the leader gets SIGKILL as its parent-death signal and the process's
//! [`Guardian`] kills the rest of every group still running.
//!
//! The supervising thread waits on the output pipe and the child's pidfd at once, so it wakes
//! the moment output arrives or the shell exits — no helper threads, no polling.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;

use slipway_sys::process::Guardian;
use std::os::fd::AsFd;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Cancellation requested by the user: level 0 none, 1 graceful (SIGTERM, grace, SIGKILL),
/// 2 now. A token may be told to react only from level 2 on (`after_script` of a job that
/// was canceled still runs, but a second Ctrl-C stops it).
#[derive(Clone)]
pub struct Cancel {
    level: Arc<AtomicU8>,
    from: u8,
}

impl Default for Cancel {
    fn default() -> Cancel {
        Cancel { level: Arc::default(), from: 1 }
    }
}

impl Cancel {
    pub fn request(&self, level: u8) {
        self.level.fetch_max(level, Ordering::SeqCst);
    }
    pub fn level(&self) -> u8 {
        self.level.load(Ordering::SeqCst)
    }
    /// Whether a supervised process should be stopped.
    pub fn stopping(&self) -> bool {
        self.level() >= self.from
    }
    /// The same token, reacting only to "kill now".
    pub fn only_kill(&self) -> Cancel {
        Cancel { level: Arc::clone(&self.level), from: 2 }
    }
}

/// How a supervised process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
    Canceled,
}

/// A spawned process group whose stdout and stderr arrive merged. One thread — the caller
/// of [`Supervised::wait`] — waits for its output and its exit together (poll on the pipe and
/// a pidfd): no reader or waiter threads per job.
pub struct Supervised {
    pgid: i32,
    child: std::process::Child,
    /// The read end of the output pipe; `None` once it reached end of file.
    output: Option<std::io::PipeReader>,
    /// Readable once the child exits; `None` where pidfds are unavailable (then the exit is
    /// noticed on the next tick).
    exited: Option<std::os::fd::OwnedFd>,
    reaped: bool,
    buf: Vec<u8>,
}

/// How often a running child is checked for cancel requests and its deadline.
const TICK: Duration = Duration::from_millis(50);

/// Spawns `cmd` in a new process group with stdin from /dev/null and stdout+stderr merged
/// into one pipe.
pub fn spawn(mut cmd: Command) -> std::io::Result<Supervised> {
    let (reader, writer) = std::io::pipe()?;
    cmd.stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer);
    // The guardian kills the group if slipway dies; without one, the child gets a parent-death
    // signal instead. (That needs code between fork and exec, which makes every spawn a full
    // fork of this process — page tables and all — where posix_spawn needs none: a job's
    // start costs ~1 ms more.)
    let guardian = Guardian::get();
    slipway_sys::process::own_group(&mut cmd, guardian.is_none());
    let child = cmd.spawn()?;
    drop(cmd); // closes our copies of the pipe's write end
    let pgid = child.id() as i32;
    if let Some(g) = guardian {
        g.guard(child.id());
    }
    let exited = slipway_sys::process::exit_fd(child.id()).ok();
    Ok(Supervised { pgid, child, output: Some(reader), exited, reaped: false, buf: vec![0u8; 16 * 1024] })
}

fn signal_group(pgid: i32, sig: i32) -> bool {
    slipway_sys::process::signal_group(pgid as u32, sig)
}

fn group_alive(pgid: i32) -> bool {
    slipway_sys::process::group_alive(pgid as u32)
}

impl Supervised {
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the shell to exit, the deadline to pass or a cancel, handing every output
    /// chunk to `on_output` as it arrives.
    pub fn wait(
        &mut self,
        deadline: Option<Instant>,
        cancel: &Cancel,
        grace: Duration,
        on_output: &mut dyn FnMut(&[u8]),
    ) -> Exit {
        let mut stop: Option<Exit> = None;
        let mut status: Option<std::io::Result<ExitStatus>> = None;
        let mut term_sent: Option<Instant> = None;
        while status.is_none() {
            let now = Instant::now();
            let mut wait = TICK;
            if let Some(d) = deadline {
                wait = wait.min(d.saturating_duration_since(now).max(Duration::from_millis(1)));
            }
            let [out, exit] = slipway_sys::process::wait_readable(
                [self.output.as_ref().map(|r| r.as_fd()), self.exited.as_ref().map(|f| f.as_fd())],
                wait,
            );
            if out {
                self.read_output(on_output);
            }
            if exit || self.exited.is_none() {
                match self.child.try_wait() {
                    Ok(Some(s)) => status = Some(Ok(s)),
                    Ok(None) => {}
                    Err(e) => status = Some(Err(e)),
                }
            }
            if status.is_some() {
                break;
            }
            let now = Instant::now();
            if stop.is_none() {
                if cancel.stopping() {
                    stop = Some(Exit::Canceled);
                } else if deadline.is_some_and(|d| now >= d) {
                    stop = Some(Exit::TimedOut);
                }
            }
            if stop.is_some() {
                match term_sent {
                    None => {
                        signal_group(self.pgid, libc::SIGTERM);
                        term_sent = Some(now);
                    }
                    Some(t) if now.duration_since(t) >= grace || cancel.level() >= 2 => {
                        signal_group(self.pgid, libc::SIGKILL);
                    }
                    Some(_) => {}
                }
            }
        }
        self.reaped = true;
        // The shell is gone; stop anything it left behind in its group.
        self.reap_group(if cancel.level() >= 2 { Duration::ZERO } else { grace });
        // Collect the rest of the output. A process that escaped the group (setsid) may still
        // hold the pipe, so do not wait for it for long.
        let until = Instant::now() + Duration::from_millis(500);
        while let Some(r) = &self.output {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let [true] = slipway_sys::process::wait_readable([Some(r.as_fd())], left) {
                self.read_output(on_output);
            }
        }
        if let Some(e) = stop {
            return e;
        }
        match status {
            Some(Ok(s)) => match (s.code(), s.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(sig)) => Exit::Signal(sig),
                _ => Exit::Code(1),
            },
            _ => Exit::Code(1),
        }
    }

    /// Reads what the pipe holds (it is readable); end of file closes it.
    fn read_output(&mut self, on_output: &mut dyn FnMut(&[u8])) {
        let Some(r) = self.output.as_mut() else { return };
        match r.read(&mut self.buf) {
            Ok(0) => self.output = None,
            Ok(n) => on_output(&self.buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => self.output = None,
        }
    }

    fn reap_group(&self, grace: Duration) {
        if !group_alive(self.pgid) {
            return;
        }
        signal_group(self.pgid, libc::SIGTERM);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if !group_alive(self.pgid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        signal_group(self.pgid, libc::SIGKILL);
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if group_alive(self.pgid) {
            signal_group(self.pgid, libc::SIGKILL);
        }
        if !self.reaped {
            let _ = self.child.wait();
        }
        if let Some(g) = Guardian::get() {
            g.release(self.pgid as u32);
        }
    }
}
