//! Interrupts: SIGINT, SIGTERM and SIGHUP counted in one place. The first asks the work to
//! stop gracefully, the second to stop now — `slipway run` and the deploy commands read the
//! same counter, from threads or from async code. Tests use [`Interrupts::none`], which never
//! fires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

struct Shared {
    count: AtomicU32,
    lock: Mutex<()>,
    changed: Condvar,
    /// Wakes async waiters.
    notify: tokio::sync::watch::Sender<u32>,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            count: AtomicU32::new(0),
            lock: Mutex::new(()),
            changed: Condvar::new(),
            notify: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Shared {
    fn bump(&self) {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = self.lock.lock();
        self.changed.notify_all();
        self.notify.send_replace(n);
    }
}

/// A counter of interrupts received.
#[derive(Clone, Default)]
pub struct Interrupts {
    shared: Arc<Shared>,
}

impl Interrupts {
    /// Installs the handlers (once per process; later calls share them) and returns the counter.
    pub fn install() -> Interrupts {
        static INSTALLED: std::sync::OnceLock<Interrupts> = std::sync::OnceLock::new();
        INSTALLED
            .get_or_init(|| {
                let me = Interrupts::default();
                if let Ok(mut signals) =
                    signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
                {
                    let shared = Arc::clone(&me.shared);
                    let _ = std::thread::Builder::new().name("signals".into()).spawn(move || {
                        for _ in signals.forever() {
                            shared.bump();
                        }
                    });
                }
                me
            })
            .clone()
    }

    /// A counter no signal reaches (tests, embedded use).
    pub fn none() -> Interrupts {
        Interrupts::default()
    }

    /// Counts an interrupt by hand (what a signal does).
    pub fn raise(&self) {
        self.shared.bump();
    }

    pub fn count(&self) -> u32 {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Blocks until the count exceeds `seen`; returns the new count.
    pub fn wait_past(&self, seen: u32) -> u32 {
        let mut guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = self.count();
            if now > seen {
                return now;
            }
            guard = self
                .shared
                .changed
                .wait_timeout(guard, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Resolves at the next interrupt after now (async code).
    pub async fn next(&self) {
        let mut rx = self.shared.notify.subscribe();
        let seen = self.count();
        while self.count() <= seen {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn raised_interrupts_wake_waiters() {
        let i = super::Interrupts::none();
        let j = i.clone();
        let t = std::thread::spawn(move || j.wait_past(0));
        std::thread::sleep(std::time::Duration::from_millis(50));
        i.raise();
        assert_eq!(t.join().unwrap(), 1);
        assert_eq!(i.count(), 1);
    }
}
