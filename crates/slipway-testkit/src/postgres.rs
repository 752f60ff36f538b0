//! A real PostgreSQL for tests: the machine's server binaries (`/usr/lib/postgresql/*/bin`, or
//! `$SLIPWAY_PG_BIN`), one cluster per test process on a free loopback port, a fresh database
//! per test. `initdb` runs once per machine into a template that each process copies (a copy
//! takes milliseconds, `initdb` seconds). PostgreSQL refuses to run as root, so as root the
//! cluster runs as `nobody`. The server dies with the test process (`PR_SET_PDEATHSIG` on a
//! thread that lives as long as the process), and the next process removes data directories
//! whose process is gone.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The uid and gid the cluster runs as (`nobody` when the tests run as root).
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: getuid(2) cannot fail.
    (unsafe { libc::getuid() } == 0).then_some((65534, 65534))
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("SLIPWAY_PG_BIN") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL server binaries (/usr/lib/postgresql: {e}); set SLIPWAY_PG_BIN"))?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("postgres").is_file())
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| "no PostgreSQL server under /usr/lib/postgresql".into())
}

/// A command that runs as the cluster's user; with `die_with_us`, it gets SIGQUIT (immediate
/// shutdown) when the thread that started it ends.
fn command(program: PathBuf, die_with_us: bool) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    let ids = run_as();
    // SAFETY: only async-signal-safe calls between fork and exec. The death signal is set
    // after the uid change, which would clear it.
    unsafe {
        c.pre_exec(move || {
            if let Some((uid, gid)) = ids
                && (libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            if die_with_us && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

fn chown(path: &Path) -> Result<(), String> {
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The template cluster, made once per machine (under a lock, so parallel processes wait).
fn template(bin: &Path) -> Result<PathBuf, String> {
    // One template per server build (the binaries' directory names the version).
    let tag: String =
        bin.display().to_string().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let base = std::env::temp_dir().join(format!("slipway-pg-template{tag}"));
    let dir = base.join("data");
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let lock = std::fs::File::create(base.join("lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    if dir.join("PG_VERSION").is_file() {
        return Ok(dir);
    }
    let part = base.join("data.part");
    let _ = std::fs::remove_dir_all(&part);
    std::fs::create_dir_all(&part).map_err(|e| e.to_string())?;
    chown(&base)?;
    chown(&part)?;
    let out = command(bin.join("initdb"), false)
        .args(["--auth=trust", "--username=slipway", "--encoding=UTF8", "--no-sync", "-D"])
        .arg(&part)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    std::fs::rename(&part, &dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Removes data directories left by test processes that are gone.
fn remove_stale(parent: &Path) {
    for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(pid) =
            name.to_str().and_then(|n| n.strip_prefix("slipway-pg-run-")).and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill(pid, 0) only asks whether the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// This process's running cluster.
pub struct Cluster {
    pub port: u16,
    bin: PathBuf,
    socket_dir: PathBuf,
}

/// Starts the server on `data` in a thread of its own that lives as long as the process (the
/// server's parent: when the process ends, the kernel sends the server its death signal).
fn spawn_server(bin: &Path, data: &Path, root: &Path, port: u16) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (pg, d, r) = (bin.join("postgres"), data.to_path_buf(), root.to_path_buf());
    std::thread::Builder::new()
        .name("postgres".into())
        .spawn(move || {
            let log = std::fs::OpenOptions::new().create(true).append(true).open(r.join("server.log"));
            let child = command(pg, true)
                .arg("-D")
                .arg(&d)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&r)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.map_or(Stdio::null(), Stdio::from))
                .spawn();
            let _ = tx.send(child.map(|_| ()).map_err(|e| format!("postgres: {e}")));
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir()?;
    let template = template(&bin)?;
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);
    let root = tmp.join(format!("slipway-pg-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let data = root.join("data");
    let cp = Command::new("cp").arg("-a").arg(&template).arg(&data).status().map_err(|e| e.to_string())?;
    if !cp.success() {
        return Err(format!("copying {} failed", template.display()));
    }
    chown(&root)?;
    let port = free_port()?;
    spawn_server(&bin, &data, &root, port)?;
    let c = Cluster { port, bin, socket_dir: root.clone() };
    c.wait_ready()?;
    Ok(c)
}

impl Cluster {
    fn wait_ready(&self) -> Result<(), String> {
        let (port, root) = (self.port, &self.socket_dir);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "slipway"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(root.join("server.log")).unwrap_or_default();
                return Err(format!("PostgreSQL did not start within 30s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| start().unwrap_or_else(|e| panic!("starting PostgreSQL for the tests: {e}")))
}

/// A fresh, empty database in this process's cluster; its URL is `postgres://slipway@…/NAME`.
pub fn database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let c = cluster();
    let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let out = Command::new(c.bin.join("createdb"))
        .args(["-h", "127.0.0.1", "-p", &c.port.to_string(), "-U", "slipway", &name])
        .output()
        .unwrap_or_else(|e| panic!("createdb: {e}"));
    assert!(out.status.success(), "createdb {name}: {}", String::from_utf8_lossy(&out.stderr));
    format!("postgres://slipway@127.0.0.1:{}/{name}", c.port)
}

impl Cluster {
    /// Stops the server as `systemctl restart postgresql` does (`pg_ctl stop -m fast`: every
    /// connection is cut, what was committed is kept — the cluster runs with `fsync=off`, so
    /// an immediate stop could lose commits, which a real server with its defaults does not),
    /// waits `down`, and starts it again on the same data and port. Every database of the process goes away
    /// meanwhile: only for a test process that has this one test (nextest runs each test in a
    /// process of its own).
    pub fn restart(&self, down: Duration) {
        let data = self.socket_dir.join("data");
        let out = command(self.bin.join("pg_ctl"), false)
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .unwrap_or_else(|e| panic!("pg_ctl: {e}"));
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(down);
        spawn_server(&self.bin, &data, &self.socket_dir, self.port).unwrap_or_else(|e| panic!("{e}"));
        self.wait_ready().unwrap_or_else(|e| panic!("{e}"));
    }

    /// The directory holding the server's Unix socket and log.
    pub fn dir(&self) -> &Path {
        &self.socket_dir
    }
}
