//! `slipway go build`: every main package for a matrix of platforms, `CGO_ENABLED=0` and
//! `-trimpath` by default, the version stamped with `-ldflags -X`, platforms built in
//! parallel within the core count; then `dist/SHA256SUMS` and `dist/manifest.json`, whose
//! facts (module, VCS revision, dirty flag, Go version) are read back from each binary's
//! embedded build info (`go version -m`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::GoError;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

impl Platform {
    pub fn parse(s: &str) -> Option<Platform> {
        let (os, arch) = s.trim().split_once('/')?;
        (!os.is_empty() && !arch.is_empty() && !arch.contains('/'))
            .then(|| Platform { os: os.into(), arch: arch.into() })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

/// The platforms this Go can build for (`go tool dist list`).
pub fn dist_list(dir: &Path) -> Result<Vec<String>, GoError> {
    let out = go(dir).args(["tool", "dist", "list"]).output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(crate::failed("go tool dist list", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
}

fn go(dir: &Path) -> Command {
    let mut c = Command::new("go");
    c.current_dir(dir);
    c
}

fn spawn_err(e: std::io::Error) -> GoError {
    if e.kind() == std::io::ErrorKind::NotFound { GoError::GoMissing } else { GoError::Io(e.to_string()) }
}

/// Checks the platforms the user asked for against what this Go builds (`go tool dist
/// list`); none asked for means the host's (`go env GOOS GOARCH`). Duplicates are dropped.
pub fn resolve_platforms(dir: &Path, wanted: &[String]) -> Result<Vec<Platform>, UnknownPlatform> {
    let known =
        dist_list(dir).map_err(|e| UnknownPlatform { given: String::new(), known: Vec::new(), error: Some(e) })?;
    let wanted: Vec<String> = if wanted.is_empty() {
        let out = go(dir).args(["env", "GOOS", "GOARCH"]).output().map_err(|e| UnknownPlatform {
            given: String::new(),
            known: Vec::new(),
            error: Some(spawn_err(e)),
        })?;
        vec![String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>().join("/")]
    } else {
        wanted.to_vec()
    };
    let mut platforms = Vec::new();
    for w in wanted.iter().map(|w| w.trim()) {
        match Platform::parse(w).filter(|_| known.iter().any(|k| k == w)) {
            Some(p) if !platforms.contains(&p) => platforms.push(p),
            Some(_) => {}
            None => return Err(UnknownPlatform { given: w.to_string(), known, error: None }),
        }
    }
    Ok(platforms)
}

/// A platform this Go cannot build for (or the toolchain did not answer: `error`).
#[derive(Debug)]
pub struct UnknownPlatform {
    pub given: String,
    /// What `go tool dist list` offers.
    pub known: Vec<String>,
    pub error: Option<GoError>,
}

/// Compiles every package of `patterns` for each platform, keeping nothing: the build of a
/// module without a main package (a library), which has no binaries, checksums or images.
/// Returns how many packages compiled.
pub fn compile(
    dir: &Path,
    patterns: &[String],
    platforms: &[Platform],
    cgo: bool,
    flags: &[String],
) -> Result<usize, GoError> {
    let pats: Vec<String> = if patterns.is_empty() { vec!["./...".into()] } else { patterns.to_vec() };
    let listed = go(dir).args(["list"]).args(&pats).output().map_err(spawn_err)?;
    if !listed.status.success() {
        return Err(crate::failed("go list", String::from_utf8_lossy(&listed.stderr)));
    }
    let count = String::from_utf8_lossy(&listed.stdout).lines().filter(|l| !l.trim().is_empty()).count();
    for p in platforms {
        let out = go(dir)
            .arg("build")
            .args(flags)
            .args(&pats)
            .env("GOOS", &p.os)
            .env("GOARCH", &p.arch)
            .env("CGO_ENABLED", if cgo { "1" } else { "0" })
            .output()
            .map_err(spawn_err)?;
        if !out.status.success() {
            return Err(crate::failed(
                &format!("go build (GOOS={} GOARCH={})", p.os, p.arch),
                String::from_utf8_lossy(&out.stderr),
            ));
        }
    }
    Ok(count)
}

/// A main package: its import path, directory and binary name.
#[derive(Debug, Clone)]
pub struct MainPackage {
    pub import_path: String,
    pub name: String,
}

/// The main packages among `patterns`.
pub fn main_packages(dir: &Path, patterns: &[String]) -> Result<Vec<MainPackage>, GoError> {
    let pats: Vec<String> = if patterns.is_empty() { vec!["./...".into()] } else { patterns.to_vec() };
    let out = go(dir)
        .args(["list", "-f", "{{if eq .Name \"main\"}}{{.ImportPath}}{{end}}"])
        .args(&pats)
        .output()
        .map_err(spawn_err)?;
    if !out.status.success() {
        return Err(crate::failed("go list", String::from_utf8_lossy(&out.stderr)));
    }
    let mut v: Vec<MainPackage> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|ip| MainPackage { import_path: ip.to_string(), name: ip.rsplit('/').next().unwrap_or(ip).to_string() })
        .collect();
    v.sort_by(|a, b| a.import_path.cmp(&b.import_path));
    Ok(v)
}

/// `git describe --tags --always --dirty`, or `dev` outside git.
pub fn default_version(dir: &Path) -> String {
    slipway_git::describe(dir).unwrap_or_else(|| "dev".into())
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub dir: PathBuf,
    pub packages: Vec<MainPackage>,
    pub platforms: Vec<Platform>,
    pub version: String,
    /// The `-X` target, e.g. `main.version`.
    pub version_var: String,
    pub out_dir: PathBuf,
    pub cgo: bool,
    /// Builds at once.
    pub jobs: usize,
    pub extra_flags: Vec<String>,
}

/// A built binary and the facts read back from it; the manifest's entry.
pub use slipway_model::manifest::BuildArtifact as Artifact;
/// `dist/manifest.json`: one type for the builder, images and deploys.
pub use slipway_model::manifest::BuildManifest as Manifest;

pub enum BuildEvent<'a> {
    Started { package: &'a str, platform: &'a Platform },
    Finished { artifact: &'a Artifact, seconds: f64 },
    Failed { package: &'a str, platform: &'a Platform, output: &'a str },
}

/// Builds every (package, platform) pair; returns the artifacts sorted by file name, or the
/// failures. Output files are written to `out_dir/.tmp` first and moved in place only when
/// the whole matrix built, so a failed build never leaves a half-updated `dist/`.
pub fn build(opts: &BuildOptions, on: &(dyn Fn(BuildEvent) + Sync)) -> Result<Manifest, GoError> {
    slipway_model::names::check_version(&opts.version).map_err(GoError::Invalid)?;
    // Build outputs must not make the work tree look modified: Go stamps `vcs.modified` into
    // binaries, and an untracked dist/ would make the next build differ from this one.
    let ignore = opts.out_dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::create_dir_all(&opts.out_dir)
            .map_err(|e| GoError::Io(format!("creating {}: {e}", opts.out_dir.display())))?;
        std::fs::write(&ignore, "# build outputs of slipway go build\n*\n").map_err(|e| GoError::Io(e.to_string()))?;
    }
    // Binaries are built into a staging directory that is kept between builds: `go build`
    // skips linking when the output there is already up to date, and dist/ itself is only
    // touched once the whole matrix has built.
    let state = opts.dir.join(".slipway");
    let staging = state.join("go-build");
    std::fs::create_dir_all(&staging).map_err(|e| GoError::Io(format!("creating {}: {e}", staging.display())))?;
    if !state.join(".gitignore").exists() {
        let _ = std::fs::write(state.join(".gitignore"), "# slipway's local state; never committed\n*\n");
    }
    let work: Vec<(usize, &MainPackage, &Platform)> = opts
        .packages
        .iter()
        .flat_map(|p| opts.platforms.iter().map(move |pl| (p, pl)))
        .enumerate()
        .map(|(i, (p, pl))| (i, p, pl))
        .collect();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Result<Artifact, String>>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, work.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some((_, pkg, pl)) = work.get(i) else { break };
                    on(BuildEvent::Started { package: &pkg.import_path, platform: pl });
                    let t = std::time::Instant::now();
                    let r = build_one(opts, pkg, pl, &staging);
                    match &r {
                        Ok(a) => on(BuildEvent::Finished { artifact: a, seconds: t.elapsed().as_secs_f64() }),
                        Err(out) => on(BuildEvent::Failed { package: &pkg.import_path, platform: pl, output: out }),
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let failures: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().cloned()).collect();
    if !failures.is_empty() {
        return Err(crate::failed("go build", failures.join("\n")));
    }
    let mut artifacts: Vec<Artifact> = results.into_iter().filter_map(Result::ok).collect();
    artifacts.sort_by(|a, b| a.file.cmp(&b.file));
    for a in &artifacts {
        // Copy (a reflink where the filesystem can), then rename: each file is replaced whole.
        let tmp = opts.out_dir.join(format!(".{}.tmp", a.file));
        std::fs::copy(staging.join(&a.file), &tmp).map_err(|e| GoError::Io(format!("copying {}: {e}", a.file)))?;
        std::fs::rename(&tmp, opts.out_dir.join(&a.file))
            .map_err(|e| GoError::Io(format!("moving {}: {e}", a.file)))?;
    }
    let sums: String = artifacts.iter().map(|a| format!("{}  {}\n", a.sha256, a.file)).collect();
    std::fs::write(opts.out_dir.join("SHA256SUMS"), sums).map_err(|e| GoError::Io(e.to_string()))?;
    let first = artifacts.first();
    let manifest = Manifest {
        module: first.map(|a| a.module.clone()).unwrap_or_default(),
        version: opts.version.clone(),
        go_version: first.map(|a| a.go_version.clone()).unwrap_or_default(),
        vcs_revision: first.and_then(|a| a.vcs_revision.clone()),
        vcs_modified: first.and_then(|a| a.vcs_modified),
        artifacts,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| GoError::Io(e.to_string()))?;
    std::fs::write(opts.out_dir.join("manifest.json"), json).map_err(|e| GoError::Io(e.to_string()))?;
    Ok(manifest)
}

fn build_one(opts: &BuildOptions, pkg: &MainPackage, pl: &Platform, staging: &Path) -> Result<Artifact, String> {
    let exe = if pl.os == "windows" { ".exe" } else { "" };
    let file = format!("{}_{}_{}{exe}", pkg.name, pl.os, pl.arch);
    let out = staging.join(&file);
    let ldflags = format!("-X '{}={}'", opts.version_var, opts.version.replace('\'', ""));
    let output = go(&opts.dir)
        .arg("build")
        .arg("-trimpath")
        .arg(format!("-ldflags={ldflags}"))
        .args(&opts.extra_flags)
        .arg("-o")
        .arg(&out)
        .arg(&pkg.import_path)
        .env("GOOS", &pl.os)
        .env("GOARCH", &pl.arch)
        .env("CGO_ENABLED", if opts.cgo { "1" } else { "0" })
        .output()
        .map_err(|e| format!("{} for {pl}: cannot run go: {e}", pkg.import_path))?;
    if !output.status.success() {
        return Err(format!("{} for {pl}:\n{}", pkg.import_path, String::from_utf8_lossy(&output.stderr).trim_end()));
    }
    let bytes = std::fs::read(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let sha256: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let info = go(&opts.dir).args(["version", "-m"]).arg(&out).output().map_err(|e| e.to_string())?;
    let info = parse_build_info(&String::from_utf8_lossy(&info.stdout));
    Ok(Artifact {
        name: pkg.name.clone(),
        package: pkg.import_path.clone(),
        os: pl.os.clone(),
        arch: pl.arch.clone(),
        file,
        size: bytes.len() as u64,
        sha256,
        go_version: info.go_version,
        module: info.module,
        vcs_revision: info.vcs_revision,
        vcs_modified: info.vcs_modified,
    })
}

#[derive(Debug, Default, PartialEq)]
pub struct BuildInfo {
    pub go_version: String,
    pub module: String,
    /// The main module's version (`(devel)` for a local build).
    pub module_version: String,
    pub vcs_revision: Option<String>,
    pub vcs_modified: Option<bool>,
    /// The modules compiled in, as the binary records them (replacements applied).
    pub deps: Vec<Dep>,
}

/// A dependency module recorded in a binary's build info.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Dep {
    pub path: String,
    pub version: String,
    /// The go.sum hash (`h1:…`), when recorded.
    pub sum: Option<String>,
}

/// Build info of a binary: read from the file when it is in the inline form that Go 1.18 and
/// later write, else from `go version -m` run in `dir`.
pub fn read_build_info(dir: &Path, binary: &Path) -> Result<BuildInfo, GoError> {
    if let Ok(bytes) = std::fs::read(binary)
        && let Some(text) = embedded_build_info(&bytes)
    {
        return Ok(parse_build_info(&text));
    }
    let out = go(dir).args(["version", "-m"]).arg(binary).output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(crate::failed("go version -m", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(parse_build_info(&String::from_utf8_lossy(&out.stdout)))
}

/// The build info that the Go linker embeds (the `.go.buildinfo` data: a 32-byte header
/// starting `\xff Go buildinf:`, flags bit 1 = strings inline, then the Go version and the
/// module info as varint-length strings), rendered as `go version -m` prints it. `None` for
/// anything else (older Go, not a Go binary), so that the caller can ask `go`.
pub fn embedded_build_info(bytes: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    fn varint(b: &[u8]) -> Option<(usize, usize)> {
        let (mut v, mut shift) = (0usize, 0u32);
        for (i, &c) in b.iter().enumerate().take(10) {
            v |= ((c & 0x7f) as usize).checked_shl(shift)?;
            if c & 0x80 == 0 {
                return Some((v, i + 1));
            }
            shift += 7;
        }
        None
    }
    fn string(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let (len, n) = varint(b)?;
        let rest = b.get(n..)?;
        Some((rest.get(..len)?, rest.get(len..)?))
    }
    // The linker aligns the header to 16 bytes; a copy of the magic in other data (a program
    // that reads build info itself) does not parse as a header and is passed over.
    for at in memchr::memmem::find_iter(bytes, MAGIC) {
        let Some(header) = bytes.get(at..at + 32) else { continue };
        if header[15] & 2 == 0 {
            continue;
        }
        let Some((version, rest)) = string(&bytes[at + 32..]) else { continue };
        let Some((modinfo, _)) = string(rest) else { continue };
        let version = std::str::from_utf8(version).ok().filter(|v| v.starts_with("go"))?;
        // The module info is wrapped in 16-byte sentinels.
        let modinfo = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
            &modinfo[16..modinfo.len() - 16]
        } else {
            &[][..]
        };
        let mut text = format!("binary: {version}\n");
        for line in String::from_utf8_lossy(modinfo).lines() {
            text.push('\t');
            text.push_str(line);
            text.push('\n');
        }
        return Some(text);
    }
    None
}

/// Parses `go version -m FILE`.
pub fn parse_build_info(text: &str) -> BuildInfo {
    let mut b = BuildInfo::default();
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            b.go_version = line.rsplit(' ').next().unwrap_or("").to_string();
            continue;
        }
        let cols: Vec<&str> = line.trim_start_matches('\t').split('\t').collect();
        match cols.as_slice() {
            ["mod", path, version, ..] => {
                b.module = path.to_string();
                b.module_version = version.to_string();
            }
            ["mod", path] => b.module = path.to_string(),
            ["dep", path, version, rest @ ..] => b.deps.push(Dep {
                path: path.to_string(),
                version: version.to_string(),
                sum: rest.first().filter(|s| !s.is_empty()).map(|s| s.to_string()),
            }),
            ["=>", path, version, rest @ ..] => {
                if let Some(last) = b.deps.last_mut() {
                    *last = Dep {
                        path: path.to_string(),
                        version: version.to_string(),
                        sum: rest.first().filter(|s| !s.is_empty()).map(|s| s.to_string()),
                    };
                }
            }
            ["build", kv] => match kv.split_once('=') {
                Some(("vcs.revision", v)) => b.vcs_revision = Some(v.to_string()),
                Some(("vcs.modified", v)) => b.vcs_modified = Some(v == "true"),
                _ => {}
            },
            _ => {}
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build info read from the file is what `go version -m` reports: for a service built
    /// here, and for the go command itself (which holds the magic string in its own data too,
    /// as it reads build info).
    #[test]
    fn embedded_build_info_matches_go_version_m() {
        let tmp = tempfile::tempdir().unwrap();
        // The crate's directory as the test runner says it (a binary built in another clone
        // sharing the target directory would name that clone's).
        let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        let example = Path::new(&manifest).join("../../examples/hello-service");
        let bin = tmp.path().join("hello");
        let built = std::process::Command::new("go")
            .args(["build", "-trimpath", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(&example)
            .env("CGO_ENABLED", "0")
            .output()
            .expect("go on PATH (. scripts/env)");
        assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
        let goroot = std::process::Command::new("go").args(["env", "GOROOT"]).output().unwrap();
        let go = Path::new(String::from_utf8_lossy(&goroot.stdout).trim()).join("bin/go");
        for b in [bin.as_path(), go.as_path()] {
            let out = std::process::Command::new("go").args(["version", "-m"]).arg(b).output().unwrap();
            let expected = parse_build_info(&String::from_utf8_lossy(&out.stdout));
            let text = embedded_build_info(&std::fs::read(b).unwrap()).expect("inline build info");
            assert_eq!(parse_build_info(&text), expected, "{}", b.display());
            assert!(expected.go_version.starts_with("go"), "{expected:?}");
            if b == bin {
                assert_eq!(expected.module, "example.com/hello-service", "{expected:?}");
            }
        }
        assert_eq!(embedded_build_info(b"\x7fELF not go"), None);
    }

    #[test]
    fn build_info_and_platforms() {
        let b = parse_build_info(
            "/tmp/hs: go1.25.5\n\tpath\texample.com/hs\n\tmod\texample.com/hs\t(devel)\t\n\tbuild\tvcs.revision=abc\n\tbuild\tvcs.modified=true\n",
        );
        assert_eq!(
            b,
            BuildInfo {
                go_version: "go1.25.5".into(),
                module: "example.com/hs".into(),
                module_version: "(devel)".into(),
                vcs_revision: Some("abc".into()),
                vcs_modified: Some(true),
                deps: Vec::new(),
            }
        );
        let d = parse_build_info(
            "x: go1.25.5\n\tpath\tex.com/a\n\tmod\tex.com/a\t(devel)\t\n\tdep\tgolang.org/x/text\tv0.14.0\th1:ScX5w1eTa3QqT8oi6+ziP7dTV1S2+ALU0bI+0zXKWiQ=\n\tdep\tex.com/old\tv1.0.0\th1:x\n\t=>\tex.com/new\tv1.1.0\th1:y\n",
        );
        assert_eq!(d.deps.len(), 2);
        assert_eq!(d.deps[0].sum.as_deref(), Some("h1:ScX5w1eTa3QqT8oi6+ziP7dTV1S2+ALU0bI+0zXKWiQ="));
        assert_eq!(d.deps[1], Dep { path: "ex.com/new".into(), version: "v1.1.0".into(), sum: Some("h1:y".into()) });
        assert_eq!(Platform::parse("linux/arm64"), Some(Platform { os: "linux".into(), arch: "arm64".into() }));
        assert_eq!(Platform::parse("linux"), None);
        assert_eq!(Platform::parse("a/b/c"), None);
    }
}
