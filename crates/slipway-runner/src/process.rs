//! Child processes in their own process group. Stopping is SIGTERM to the whole group, a grace
//! period, then SIGKILL; after a job's shell exits, whatever it left behind in its group is
//! stopped the same way, so no process outlives its job.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Cancellation requested by the user: 0 none, 1 graceful (SIGTERM, grace, SIGKILL), 2 now.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicU8>);

impl Cancel {
    pub fn request(&self, level: u8) {
        self.0.fetch_max(level, Ordering::SeqCst);
    }
    pub fn level(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
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

/// A spawned shell whose stdout and stderr arrive, merged, on `output`.
pub struct Supervised {
    child: Child,
    pgid: i32,
    pub output: mpsc::Receiver<Vec<u8>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Spawns `cmd` in a new process group with stdin from /dev/null and stdout+stderr merged
/// into one pipe.
pub fn spawn(mut cmd: Command) -> std::io::Result<Supervised> {
    let (mut reader, writer) = std::io::pipe()?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    let child = cmd.spawn()?;
    drop(cmd); // closes our copies of the pipe's write end
    let pgid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::Builder::new()
        .name("job-output".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
    Ok(Supervised {
        child,
        pgid,
        output: rx,
        reader: Some(reader),
    })
}

fn signal_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

fn group_alive(pgid: i32) -> bool {
    signal_group(pgid, 0)
}

impl Supervised {
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the shell to exit, the deadline to pass or a cancel; output must be drained
    /// by the caller through `on_output`, which is called for every chunk as it arrives.
    pub fn wait(
        &mut self,
        deadline: Option<Instant>,
        cancel: &Cancel,
        grace: Duration,
        on_output: &mut dyn FnMut(&[u8]),
    ) -> Exit {
        let mut stop: Option<Exit> = None;
        let mut status: Option<ExitStatus> = None;
        let mut term_sent: Option<Instant> = None;
        loop {
            // Drain output without blocking for long.
            match self.output.recv_timeout(Duration::from_millis(20)) {
                Ok(chunk) => {
                    on_output(&chunk);
                    while let Ok(more) = self.output.try_recv() {
                        on_output(&more);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Output closed; the shell is done or about to be: poll for its status.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            if status.is_none()
                && let Ok(Some(s)) = self.child.try_wait()
            {
                status = Some(s);
            }
            if status.is_some() {
                break;
            }
            let now = Instant::now();
            if stop.is_none() {
                if cancel.level() > 0 {
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
        self.reap_group(grace);
        // Collect the rest of the output; a process that escaped the group may hold the pipe,
        // so do not wait for it for long.
        let until = Instant::now() + Duration::from_millis(500);
        while let Ok(chunk) = self
            .output
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            on_output(&chunk);
        }
        if let Some(r) = self.reader.take()
            && r.is_finished()
        {
            let _ = r.join();
        }
        if let Some(e) = stop {
            return e;
        }
        let status = status.expect("loop exits with a status");
        match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            _ => Exit::Code(1),
        }
    }

    fn reap_group(&mut self, grace: Duration) {
        if !group_alive(self.pgid) {
            return;
        }
        signal_group(self.pgid, libc::SIGTERM);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if !group_alive(self.pgid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        signal_group(self.pgid, libc::SIGKILL);
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if group_alive(self.pgid) {
            signal_group(self.pgid, libc::SIGKILL);
        }
        let _ = self.child.try_wait();
    }
}
