//! Release artifacts: found in a build's `dist/` (its `manifest.json`), given as a binary or
//! an image archive, pulled from a registry, or reused from a release recorded before —
//! checked against their SHA-256 and kept content-addressed in
//! `<data-dir>/artifacts/sha256/<hex>` (binaries) and `<data-dir>/artifacts/images/<id>.tar`
//! (image archives), so that any release — and every rollback — runs the exact bytes it was
//! made from, whatever happens to `dist/` later. [`resolve`] decides which artifacts a deploy
//! request means.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use slipway_model::environment::{Environment, Target as Kind};
use slipway_model::manifest::{BuildManifest, ProgramChoice, host_platform};
use slipway_model::release::Artifact;
use slipway_store::Store;

use crate::DeployError;

/// Artifacts ready to deploy: recorded in the store, the files in the artifact store.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactSet {
    pub version: String,
    pub commit: Option<String>,
    /// One per platform, sorted by platform.
    pub artifacts: Vec<Artifact>,
}

pub fn stored_path(data_dir: &Path, sha256: &str) -> PathBuf {
    data_dir.join("artifacts").join("sha256").join(sha256)
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// [`sha256_file`], read again only when the file's size, modification time or inode
/// changed since the last call (observing hashes the binaries of every environment each
/// interval).
pub fn sha256_cached(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    type Seen = std::collections::HashMap<PathBuf, ((u64, i64, i64, u64), String)>;
    static SEEN: std::sync::OnceLock<std::sync::Mutex<Seen>> = std::sync::OnceLock::new();
    let m = std::fs::metadata(path)?;
    let key = (m.len(), m.mtime(), m.mtime_nsec(), m.ino());
    let seen = SEEN.get_or_init(Default::default);
    if let Some((k, sha)) = seen.lock().expect("digest cache lock").get(path)
        && *k == key
    {
        return Ok(sha.clone());
    }
    let sha = sha256_file(path)?;
    seen.lock().expect("digest cache lock").insert(path.to_path_buf(), (key, sha.clone()));
    Ok(sha)
}

/// Reads artifacts from `path`: a `dist/` directory with `manifest.json` (every platform's
/// binary of the program named `binary`, or of the only one), or a binary file (then
/// `version` must be given; it is for this machine's platform). `need` is a platform that
/// must be among them (the target's). Checksums are verified and the binaries copied into
/// the artifact store.
pub fn import(
    data_dir: &Path,
    path: &Path,
    binary: Option<&str>,
    version: Option<&str>,
    need: Option<&str>,
) -> Result<ArtifactSet, DeployError> {
    if path.is_file() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("service").to_string();
        let Some(version) = version else {
            return Err(DeployError::input(format!("no version for `{}`", path.display()))
                .hint("a bare binary needs --version V"));
        };
        let sha = sha256_file(path).map_err(|e| DeployError::input(format!("artifact {}: {e}", path.display())))?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        store_copy(data_dir, path, &sha)?;
        let platform = host_platform();
        return Ok(ArtifactSet {
            version: version.to_string(),
            commit: None,
            artifacts: vec![Artifact { name, platform, sha256: sha, size }],
        });
    }
    if !path.is_dir() {
        return Err(DeployError::input(format!("artifacts `{}` do not exist", path.display()))
            .hint("build first (`slipway go build`), or pass --artifacts dist/ or a binary"));
    }
    let mpath = path.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).map_err(|e| {
        DeployError::input(format!("{}: {e}", mpath.display()))
            .hint("point --artifacts at the dist/ directory `slipway go build` wrote, or at a binary")
    })?;
    let m = BuildManifest::parse(&text)
        .map_err(|e| DeployError::input(format!("{} is not a build manifest: {e}", mpath.display())))?;
    let program = m.choose_program(binary).map_err(|why| match why {
        ProgramChoice::None => {
            DeployError::input(format!("{} holds no program (the module has no main package)", mpath.display()))
                .hint("deploy a module with a main package; a library has nothing to run")
        }
        ProgramChoice::Several(names) => DeployError::input(format!(
            "{} has {} programs; which one does the service run?",
            mpath.display(),
            names.len()
        ))
        .hint(format!("set `service: {{binary: NAME}}` to one of: {}", names.join(", "))),
        ProgramChoice::Unknown { wanted, have } => {
            DeployError::input(format!("{} has no binary `{wanted}`", mpath.display()))
                .hint(format!("programs in the build: {}", have.join(", ")))
        }
    })?;
    let mut set = Vec::new();
    for a in m.program(&program) {
        let file = path.join(&a.file);
        let sha = sha256_file(&file).map_err(|e| {
            DeployError::input(format!("artifact {}: {e}", file.display())).hint("rebuild with `slipway go build`")
        })?;
        if sha != a.sha256 {
            return Err(DeployError::input(format!(
                "artifact {} does not match its checksum: manifest says sha256:{}, the file is sha256:{sha}",
                file.display(),
                a.sha256
            ))
            .hint("the file changed after the build; rebuild with `slipway go build`"));
        }
        store_copy(data_dir, &file, &sha)?;
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(a.size);
        set.push(Artifact { name: a.name.clone(), platform: a.platform(), sha256: sha, size });
    }
    set.sort_by(|a, b| a.platform.cmp(&b.platform));
    crate::signatures::keep(data_dir, path, &set)?;
    if let Some(p) = need
        && !set.iter().any(|a| a.platform == p)
    {
        let have: Vec<&str> = set.iter().map(|a| a.platform.as_str()).collect();
        return Err(DeployError::input(format!(
            "{} has no `{program}` for {p} (only for {})",
            mpath.display(),
            have.join(", ")
        ))
        .hint(format!("build for this platform: slipway go build --platform {p}")));
    }
    let version = version.map_or(m.version.clone(), str::to_string);
    Ok(ArtifactSet { version, commit: m.vcs_revision.clone(), artifacts: set })
}

/// Copies a binary into the artifact store under its digest (atomically; once).
fn store_copy(data_dir: &Path, file: &Path, sha: &str) -> Result<(), DeployError> {
    let dest = stored_path(data_dir, sha);
    if dest.exists() {
        return Ok(());
    }
    let dir = dest.parent().expect("has a parent");
    let io = |e: std::io::Error| DeployError::input(format!("storing {} in {}: {e}", file.display(), dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".{sha}.{}", std::process::id()));
    std::fs::copy(file, &tmp).map_err(io)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555)).map_err(io)?;
    std::fs::rename(&tmp, &dest).map_err(io)?;
    Ok(())
}

/// Checks a stored artifact before it runs: present, and still the bytes of its digest.
pub fn verify(data_dir: &Path, a: &Artifact) -> Result<PathBuf, DeployError> {
    let path = stored_path(data_dir, &a.sha256);
    match sha256_file(&path) {
        Ok(sha) if sha == a.sha256 => Ok(path),
        Ok(sha) => Err(DeployError::input(format!(
            "stored artifact {} is corrupt: sha256:{sha}, expected sha256:{}",
            path.display(),
            a.sha256
        ))
        .hint("delete it and deploy from the build again")),
        Err(e) => {
            Err(DeployError::input(format!("stored artifact {} ({}, {}): {e}", path.display(), a.name, a.platform))
                .hint("the data directory lost it; deploy from the build again"))
        }
    }
}

/// Where an image's archive is kept, by its image ID (the config digest).
pub fn stored_image(data_dir: &Path, image_id_hex: &str) -> PathBuf {
    data_dir.join("artifacts").join("images").join(format!("{image_id_hex}.tar"))
}

/// Reads an image archive (`slipway image build --tarball`, or `docker save`): its image ID
/// (config digest) and tag; the version is the tag unless given. The archive is kept in the
/// artifact store so any release can be loaded again.
pub fn import_image_archive(data_dir: &Path, path: &Path, version: Option<&str>) -> Result<ArtifactSet, DeployError> {
    let bad = |why: String| {
        DeployError::input(format!("{}: {why}", path.display()))
            .hint("give an image archive: `slipway image build --tarball dist/image.tar` (or `docker save`)")
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut archive = tar::Archive::new(file);
    let mut manifest = None;
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if entry.path().ok().is_some_and(|p| p.as_os_str() == "manifest.json") {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
            manifest = Some(text);
            break;
        }
    }
    let manifest = manifest.ok_or_else(|| bad("not an image archive (no manifest.json)".into()))?;
    let m: serde_json::Value = serde_json::from_str(&manifest).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let config = m[0]["Config"].as_str().ok_or_else(|| bad("manifest.json names no config".into()))?;
    let hex = config.rsplit('/').next().unwrap_or("").trim_end_matches(".json").to_string();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("unexpected config entry `{config}`")));
    }
    let tag = m[0]["RepoTags"][0].as_str().unwrap_or("");
    let (name, tag) = match tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_string(), Some(t.to_string())),
        _ => ("image".to_string(), None),
    };
    let version = match (version, tag) {
        (Some(v), _) => v.to_string(),
        (None, Some(t)) if t != "latest" => t,
        _ => return Err(bad("the archive's tag gives no version".into()).hint("pass --version V")),
    };
    let dest = stored_image(data_dir, &hex);
    if !dest.exists() {
        let dir = dest.parent().expect("has a parent");
        let io =
            |e: std::io::Error| DeployError::input(format!("storing {} in {}: {e}", path.display(), dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".{hex}.{}", std::process::id()));
        std::fs::copy(path, &tmp).map_err(io)?;
        std::fs::rename(&tmp, &dest).map_err(io)?;
    }
    let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
    Ok(ArtifactSet {
        version,
        commit: None,
        artifacts: vec![Artifact { name, platform: host_platform(), sha256: hex, size }],
    })
}

/// The newest build manifest of a project: `dist/manifest.json`, or the build artifacts of
/// its latest pipeline runs (`.slipway/runs/*/artifacts/*/dist`), whichever is newer.
pub fn newest_build(project: &Path) -> Option<PathBuf> {
    let mut candidates = vec![project.join("dist")];
    if let Ok(runs) = std::fs::read_dir(project.join(".slipway/runs")) {
        for run in runs.flatten() {
            if let Ok(jobs) = std::fs::read_dir(run.path().join("artifacts")) {
                candidates.extend(jobs.flatten().map(|j| j.path().join("dist")));
            }
        }
    }
    candidates
        .into_iter()
        .filter_map(|d| {
            let m = std::fs::metadata(d.join("manifest.json")).ok()?.modified().ok()?;
            Some((m, d))
        })
        .max_by_key(|(m, _)| *m)
        .map(|(_, d)| d)
}

/// Registry credentials for one pull (never recorded).
#[derive(Clone)]
pub struct PullCredentials {
    pub username: String,
    pub password: String,
}

/// What a deploy request names as its artifacts.
pub struct Wanted<'a> {
    /// The project whose builds are looked for (`dist/`, pipeline runs).
    pub project: &'a Path,
    /// `--artifacts PATH`: a build directory, a binary, or (docker) an image archive.
    pub path: Option<&'a Path>,
    /// `--version V`: a version deployed before, or the label of a bare binary.
    pub version: Option<&'a str>,
    /// `--image REF`: an image in a registry (docker targets).
    pub image: Option<&'a str>,
    pub credentials: Option<PullCredentials>,
}

/// Decides which artifacts a deploy of `env` means and makes them ready: the image pulled by
/// digest, the archive or build stored by digest, or a recorded version reused. Whatever
/// gave the version (a flag, a manifest, a tag), it must follow the version grammar.
pub async fn resolve(
    store: &Store,
    data_dir: &Path,
    env: &Environment,
    w: &Wanted<'_>,
) -> Result<ArtifactSet, DeployError> {
    if let Some(v) = w.version {
        slipway_model::names::check_version(v).map_err(|why| DeployError::input(format!("--version: {why}")))?;
    }
    let set = resolve_any(store, data_dir, env, w).await?;
    slipway_model::names::check_version(&set.version)
        .map_err(|why| DeployError::input(why).hint("rebuild with a valid `--version`, or pass --version V"))?;
    Ok(set)
}

async fn resolve_any(
    store: &Store,
    data_dir: &Path,
    env: &Environment,
    w: &Wanted<'_>,
) -> Result<ArtifactSet, DeployError> {
    let docker = matches!(env.target, Kind::Docker(_));
    // The local agent runs this machine's binaries; hosts say their own platform when staged.
    let need = match (&env.target, &env.agent) {
        (Kind::Local, None) => Some(host_platform()),
        _ => None,
    };
    if let Some(reference) = w.image {
        if !docker {
            return Err(DeployError::input(format!("--image is for `target: docker`; `{}` runs binaries", env.name))
                .hint("pass --artifacts dist/ (or a binary) instead"));
        }
        let creds = w.credentials.clone().map(|c| (c.username, c.password));
        // A signed-only environment pulls exactly the digest that verified.
        let (id, pinned) = if env.require_signature.is_some() {
            let verified = crate::signatures::check_reference(env, reference, creds.clone()).await?;
            crate::docker::pull(&verified, creds).await?
        } else {
            crate::docker::pull(reference, creds).await?
        };
        let tag =
            reference.split('@').next().and_then(|r| r.rsplit_once(':')).map(|(_, t)| t).filter(|t| !t.contains('/'));
        let version = match (w.version, tag) {
            (Some(v), _) => v.to_string(),
            (None, Some(t)) if t != "latest" => t.to_string(),
            _ => return Err(DeployError::input(format!("{reference} gives no version")).hint("pass --version V")),
        };
        let image = Artifact { name: pinned, platform: host_platform(), sha256: id, size: 0 };
        return Ok(ArtifactSet { version, commit: None, artifacts: vec![image] });
    }
    let project_archive = w.project.join("dist/image.tar");
    if docker && (w.path.is_some() || w.version.is_none() || project_archive.is_file()) {
        let path = match w.path {
            Some(p) => p.to_path_buf(),
            None if project_archive.is_file() => project_archive,
            None => {
                return Err(DeployError::input(format!("`{}` runs containers: no image archive to deploy", env.name))
                    .hint("build one: `slipway image build --tarball dist/image.tar`, or pass --artifacts IMAGE.tar"));
            }
        };
        return import_image_archive(data_dir, &path, w.version);
    }
    if w.path.is_none()
        && let Some(v) = w.version
    {
        if let Some(r) = store.find_version(v).await? {
            for a in &r.artifacts {
                if docker {
                    if !stored_image(data_dir, &a.sha256).is_file() && a.pinned_reference().is_none() {
                        return Err(DeployError::input(format!("the image archive of {v} is no longer stored"))
                            .hint("deploy it from its archive: --artifacts IMAGE.tar"));
                    }
                } else {
                    verify(data_dir, a)?;
                }
            }
            return Ok(ArtifactSet { version: r.version, commit: r.commit, artifacts: r.artifacts });
        }
        let from_build = newest_build(w.project)
            .map(|d| import(data_dir, &d, env.service.binary.as_deref(), None, need.as_deref()))
            .transpose()?;
        return match from_build {
            Some(set) if set.version == v => Ok(set),
            other => Err(DeployError::input(format!(
                "no artifacts of version `{v}`: it was never deployed{}",
                match other {
                    Some(set) => format!(" and the newest build is {}", set.version),
                    None => String::new(),
                }
            ))
            .hint("build it (`slipway go build --version V`), or pass --artifacts PATH")),
        };
    }
    let path = match w.path {
        Some(p) => p.to_path_buf(),
        None => newest_build(w.project).ok_or_else(|| {
            DeployError::input(format!("no build to deploy in {}", w.project.display()))
                .hint("build first: `slipway run` (its build job) or `slipway go build`; or pass --artifacts PATH")
        })?,
    };
    import(data_dir, &path, env.service.binary.as_deref(), w.version, need.as_deref())
}

/// The version a deploy of `env` would deploy, checked without keeping anything (`--dry-run`).
pub fn dry_run_version(env: &Environment, w: &Wanted<'_>) -> Result<String, DeployError> {
    let scratch = std::env::temp_dir().join(format!("slipway-dry-run-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| DeployError::input(e.to_string()))?;
    let r = (|| {
        if let Some(v) = w.version {
            return Ok(v.to_string());
        }
        if matches!(env.target, Kind::Docker(_)) {
            let p = w.path.map_or_else(|| w.project.join("dist/image.tar"), Path::to_path_buf);
            return Ok(import_image_archive(&scratch, &p, None)?.version);
        }
        let path = match w.path {
            Some(p) => p.to_path_buf(),
            None => newest_build(w.project).ok_or_else(|| {
                DeployError::input("no build to deploy").hint("build first, or pass --artifacts PATH")
            })?,
        };
        Ok(import(&scratch, &path, env.service.binary.as_deref(), None, None)?.version)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    r
}
