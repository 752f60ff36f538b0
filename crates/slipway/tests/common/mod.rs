//! Shared helpers for the CLI integration tests: temporary git repositories with fixture
//! files, running the real `slipway` binary, and reading its `--json` events.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod hosts;
pub mod registry;

pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    /// A git repository on branch `main` with the given files committed.
    pub fn new(files: &[(&str, &str)]) -> Repo {
        let dir = tempfile::Builder::new().prefix("slipway-test-").tempdir().unwrap();
        let r = Repo { dir };
        r.git(&["init", "-q", "-b", "main"]);
        r.git(&["config", "user.email", "t@example.com"]);
        r.git(&["config", "user.name", "t"]);
        r.git(&["config", "commit.gpgsign", "false"]);
        for (p, c) in files {
            r.write(p, c);
        }
        r.git(&["add", "-A"]);
        r.git(&["commit", "-q", "--allow-empty", "-m", "initial commit"]);
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, p: &str, c: &str) {
        let full = self.path().join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, c).unwrap();
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git").args(args).current_dir(self.path()).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn commit(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
    }

    pub fn slipway(&self, args: &[&str]) -> Run {
        slipway_in(self.path(), args)
    }

    /// `slipway` with extra environment variables.
    pub fn slipway_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(bin())
            .args(args)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("GITLAB_CI")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Run::from(out)
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_slipway"))
}

pub fn slipway_in(dir: &Path, args: &[&str]) -> Run {
    let out =
        Command::new(bin()).args(args).current_dir(dir).env("NO_COLOR", "1").env_remove("GITLAB_CI").output().unwrap();
    Run::from(out)
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }
}

impl Run {
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
            .collect()
    }

    /// The final `pipeline_finished` event.
    pub fn finished(&self) -> serde_json::Value {
        let ev = self.events();
        let last = ev.last().unwrap_or_else(|| panic!("no events; stderr:\n{}", self.stderr)).clone();
        assert_eq!(last["event"], "pipeline_finished", "last event: {last}\nstderr: {}", self.stderr);
        last
    }

    /// job name → status from the final event.
    pub fn statuses(&self) -> Vec<(String, String)> {
        self.finished()["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| (j["name"].as_str().unwrap().to_string(), j["status"].as_str().unwrap().to_string()))
            .collect()
    }

    /// All log lines of a job, from the JSON events.
    pub fn log(&self, job: &str) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "job_log" && e["job"] == job)
            .map(|e| e["line"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn debug(&self) -> String {
        format!("exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

pub fn st(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// Whether any process's command line contains `marker`.
pub fn process_with(marker: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in rd.flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) && !cmd.contains("cargo") {
                return true;
            }
        }
    }
    false
}

/// Fails the test with how to install `tool` when it is missing.
pub fn require(tool: &str, version_flag: &str) {
    let ok = Command::new(tool).arg(version_flag).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "`{tool}` is not available: run `scripts/setup` and `source scripts/env` (or use `scripts/test`)");
}

pub fn require_go() {
    require("go", "version");
}

/// A plain HTTP/1.0 GET on loopback; the whole response, or `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Polls `http_get` until a server answers (up to ~10 s).
pub fn wait_http(addr: &str, path: &str) -> Option<String> {
    for _ in 0..100 {
        if let Some(b) = http_get(addr, path) {
            return Some(b);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

/// A free loopback address.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A port on 127.0.0.1 that no other test process of the suite was given lately. `bind(0)`
/// alone lets two processes (nextest runs each test in its own) draw the same port between
/// its release and their binds — one test's health check then reached another's sshd. Each
/// port handed out is claimed by a file; a claim older than 10 minutes is from a run that
/// ended.
pub fn free_port() -> u16 {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ports");
    std::fs::create_dir_all(&dir).unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let claim = dir.join(port.to_string());
        let stale = std::fs::metadata(&claim)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > std::time::Duration::from_secs(600));
        if stale {
            let _ = std::fs::remove_file(&claim);
        }
        if std::fs::OpenOptions::new().write(true).create_new(true).open(&claim).is_ok() {
            return port;
        }
    }
}

/// Copies the bundled example service (examples/hello-service) into `dest`.
pub fn copy_example(dest: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-service");
    for f in ["go.mod", "main.go", "main_test.go"] {
        std::fs::copy(src.join(f), dest.join(f)).unwrap();
    }
}

/// Builds of the websvc fixture (fixtures/go/websvc) by version, shared by every test process:
/// built once, under a file lock, into the target's temporary directory.
pub fn websvc_build(version: &str) -> PathBuf {
    require_go();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("websvc-builds");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join(".lock")).unwrap();
    lock.lock().unwrap(); // released when `lock` drops
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/go/websvc/main.go");
    // Keyed on the sources and the slipway binary that builds them, so no test runs a
    // stale build.
    let stamp = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        std::fs::read(&src).unwrap().hash(&mut h);
        std::fs::read(src.with_file_name("go.mod")).unwrap().hash(&mut h);
        let m = std::fs::metadata(bin()).unwrap();
        (m.len(), m.modified().unwrap()).hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let out = root.join(version);
    if std::fs::read_to_string(out.join(".stamp")).is_ok_and(|s| s == stamp) {
        return out;
    }
    let work = tempfile::tempdir().unwrap();
    for f in ["go.mod", "main.go"] {
        std::fs::copy(src.with_file_name(f), work.path().join(f)).unwrap();
    }
    let r = slipway_in(work.path(), &["go", "build", "--version", version]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(work.path().join("dist")).unwrap().flatten() {
        std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
    }
    std::fs::write(out.join(".stamp"), stamp).unwrap();
    out
}

/// A repository holding the websvc fixture and a pipeline file with these environments.
/// An uncompressed image archive of the websvc build `version` (`slipway image build
/// --tarball`), written to `out`.
pub fn websvc_image(version: &str, out: &Path) {
    let dist = websvc_build(version);
    let r = slipway_in(
        out.parent().unwrap(),
        &[
            "image",
            "build",
            "--from",
            dist.join("manifest.json").to_str().unwrap(),
            "--name",
            "websvc",
            "--tag",
            version,
            "--tarball",
            out.to_str().unwrap(),
            "--compression",
            "none",
            "--no-sbom",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.debug());
}

/// A repository of the websvc fixture with `pipeline` as its `.slipway.yml`.
pub fn websvc_repo(pipeline: &str) -> Repo {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/go/websvc");
    Repo::new(&[
        ("go.mod", &std::fs::read_to_string(src.join("go.mod")).unwrap()),
        ("main.go", &std::fs::read_to_string(src.join("main.go")).unwrap()),
        (".slipway.yml", pipeline),
    ])
}

pub fn websvc_project(environments: &str) -> Repo {
    websvc_repo(&format!("include:\n  - template: slipway/go.yml\nenvironments:\n{environments}"))
}

/// `slipway ARGS` in `dir` with its own data directory, a fixed user and a short lock lease.
pub fn deploy_cmd(dir: &Path, data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("SLIPWAY_DATA_DIR", data)
        .env("SLIPWAY_USER", "tester")
        .env("SLIPWAY_LOCK_LEASE", "2s");
    c
}

/// Copies `fixtures/go/<name>` (recursively) into `dest`.
pub fn copy_fixture(name: &str, dest: &Path) {
    fn copy(src: &Path, dest: &Path) {
        for e in std::fs::read_dir(src).unwrap().flatten() {
            let to = dest.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&to).unwrap();
                copy(&e.path(), &to);
            } else {
                std::fs::copy(e.path(), &to).unwrap();
            }
        }
    }
    copy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/go").join(name), dest);
}

/// `slipway ARGS` in `dir` with the signing tests' passphrase (`pw`) in SLIPWAY_SIGNING_PASSWORD.
pub fn slipway_signing(dir: &Path, args: &[&str]) -> Run {
    Run::from(Command::new(bin()).args(args).current_dir(dir).env("SLIPWAY_SIGNING_PASSWORD", "pw").output().unwrap())
}

/// A key pair `PREFIX.key`/`PREFIX.pub` in `dir` (passphrase `pw`); the public key's lines
/// indented for a `require_signature: {keys: [|...]}` block at `indent` spaces.
pub fn signing_keypair(dir: &Path, prefix: &str, indent: usize) -> String {
    let r = slipway_signing(dir, &["sign", "generate-key", "--output", prefix]);
    assert_eq!(r.code, 0, "{}", r.debug());
    let public = std::fs::read_to_string(dir.join(format!("{prefix}.pub"))).unwrap();
    public.lines().map(|l| format!("{:indent$}{l}\n", "")).collect()
}

/// A copy of the websvc build `version` in `dir`, its SHA256SUMS and manifest.json signed
/// with `key` (what `go build --sign` writes).
pub fn signed_websvc_build(version: &str, key: &Path, dir: &Path) -> PathBuf {
    let out = dir.join(format!("dist-{version}-{}", key.file_stem().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(websvc_build(version)).unwrap().flatten().filter(|e| e.path().is_file()) {
        std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
    }
    let r = slipway_signing(&out, &["sign", "blob", "--key", key.to_str().unwrap(), "SHA256SUMS", "manifest.json"]);
    assert_eq!(r.code, 0, "{}", r.debug());
    out
}
