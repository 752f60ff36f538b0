//! Child processes in their own process group. Stopping is SIGTERM to the whole group, a grace
//! period, then SIGKILL; after a job's shell exits, whatever it left behind in its group is
//! stopped the same way, so no process outlives its job. When slipway itself dies (even by
//! `kill -9`), the leader gets SIGKILL as its parent-death signal and the process's
//! [`Guardian`] kills the rest of every group still running.
//!
//! One channel carries everything about a child: output chunks (from a reader thread), the end
//! of output, and the exit status (from a waiter thread), so the supervising loop wakes the
//! moment anything happens and never polls.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;

use slipway_sys::process::Guardian;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, mpsc};
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

enum Ev {
    Output(Vec<u8>),
    Eof,
    Exited(std::io::Result<ExitStatus>),
}

/// A spawned process group whose stdout and stderr arrive merged.
pub struct Supervised {
    pgid: i32,
    events: mpsc::Receiver<Ev>,
}

/// How often a running child is checked for cancel requests and its deadline.
const TICK: Duration = Duration::from_millis(50);

/// Spawns `cmd` in a new process group with stdin from /dev/null and stdout+stderr merged
/// into one pipe.
pub fn spawn(mut cmd: Command) -> std::io::Result<Supervised> {
    let (mut reader, writer) = std::io::pipe()?;
    cmd.stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer);
    // The guardian kills the group if slipway dies; without one, the child gets a parent-death
    // signal instead. (That needs code between fork and exec, which makes every spawn a full
    // fork of this process — page tables and all — where posix_spawn needs none: a job's
    // start costs ~1 ms more.)
    let guardian = Guardian::get();
    slipway_sys::process::own_group(&mut cmd, guardian.is_none());
    let mut child = cmd.spawn()?;
    drop(cmd); // closes our copies of the pipe's write end
    let pgid = child.id() as i32;
    if let Some(g) = guardian {
        g.guard(child.id());
    }
    let (tx, rx) = mpsc::channel();
    let out_tx = tx.clone();
    std::thread::Builder::new().name("job-output".into()).spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out_tx.send(Ev::Output(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = out_tx.send(Ev::Eof);
    })?;
    std::thread::Builder::new().name("job-wait".into()).spawn(move || {
        let _ = tx.send(Ev::Exited(child.wait()));
    })?;
    Ok(Supervised { pgid, events: rx })
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
        let mut eof = false;
        let mut term_sent: Option<Instant> = None;
        while status.is_none() {
            let now = Instant::now();
            let mut wait = TICK;
            if let Some(d) = deadline {
                wait = wait.min(d.saturating_duration_since(now).max(Duration::from_millis(1)));
            }
            match self.events.recv_timeout(wait) {
                Ok(Ev::Output(chunk)) => on_output(&chunk),
                Ok(Ev::Eof) => eof = true,
                Ok(Ev::Exited(s)) => status = Some(s),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    status = Some(Err(std::io::Error::other("lost the child")))
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
        // The shell is gone; stop anything it left behind in its group.
        self.reap_group(if cancel.level() >= 2 { Duration::ZERO } else { grace });
        // Collect the rest of the output. A process that escaped the group (setsid) may still
        // hold the pipe, so do not wait for it for long.
        let until = Instant::now() + Duration::from_millis(500);
        while !eof {
            match self.events.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(Ev::Output(chunk)) => on_output(&chunk),
                Ok(Ev::Eof) | Err(_) => eof = true,
                Ok(Ev::Exited(_)) => {}
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
        if let Some(g) = Guardian::get() {
            g.release(self.pgid as u32);
        }
    }
}
