//! Release artifacts: found in a build's `dist/` (its `manifest.json`) or given as a binary,
//! checked against their SHA-256, and kept content-addressed in
//! `<data-dir>/artifacts/sha256/<hex>` so that any release — and every rollback — runs the
//! exact bytes it was made from, whatever happens to `dist/` later.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use slipway_store::Artifact;

use crate::DeployError;

/// Artifacts ready to deploy: recorded in the store, the binary in the artifact store.
#[derive(Debug, Clone)]
pub struct ArtifactSet {
    pub version: String,
    pub commit: Option<String>,
    /// The binary for this host's platform.
    pub binary: Artifact,
}

pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
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

#[derive(serde::Deserialize)]
struct Manifest {
    version: String,
    vcs_revision: Option<String>,
    artifacts: Vec<ManifestArtifact>,
}

#[derive(serde::Deserialize)]
struct ManifestArtifact {
    name: String,
    os: String,
    arch: String,
    file: String,
    sha256: String,
}

/// Reads artifacts from `path`: a `dist/` directory with `manifest.json` (the binary named
/// `binary`, or the only one, for this host's platform), or a binary file (then `version`
/// must be given). Checksums are verified and the binary copied into the artifact store.
pub fn import(
    data_dir: &Path,
    path: &Path,
    binary: Option<&str>,
    version: Option<&str>,
) -> Result<ArtifactSet, DeployError> {
    let platform = host_platform();
    let (file, name, expected, manifest_version, commit) = if path.is_dir() {
        let mpath = path.join("manifest.json");
        let text = std::fs::read_to_string(&mpath).map_err(|e| {
            DeployError::input(format!("{}: {e}", mpath.display()))
                .hint("point --artifacts at the dist/ directory `slipway go build` wrote, or at a binary")
        })?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| DeployError::input(format!("{} is not a build manifest: {e}", mpath.display())))?;
        let here: Vec<&ManifestArtifact> =
            m.artifacts.iter().filter(|a| format!("{}/{}", a.os, a.arch) == platform).collect();
        let chosen = match binary {
            Some(b) => here.iter().find(|a| a.name == b).copied().ok_or_else(|| {
                let names: Vec<&str> = here.iter().map(|a| a.name.as_str()).collect();
                DeployError::input(format!("{} has no binary `{b}` for {platform}", mpath.display())).hint(
                    if names.is_empty() {
                        format!("build for this platform: slipway go build --platform {platform}")
                    } else {
                        format!("binaries for {platform}: {}", names.join(", "))
                    },
                )
            })?,
            None => match here.as_slice() {
                [one] => *one,
                [] => {
                    return Err(DeployError::input(format!("{} has no binary for {platform}", mpath.display()))
                        .hint(format!("build for this platform: slipway go build --platform {platform}")));
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|a| a.name.as_str()).collect();
                    return Err(DeployError::input(format!(
                        "{} has {} binaries for {platform}; which one does the service run?",
                        mpath.display(),
                        many.len()
                    ))
                    .hint(format!("set `service: {{binary: NAME}}` to one of: {}", names.join(", "))));
                }
            },
        };
        (path.join(&chosen.file), chosen.name.clone(), Some(chosen.sha256.clone()), Some(m.version), m.vcs_revision)
    } else if path.is_file() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("service").to_string();
        (path.to_path_buf(), name, None, None, None)
    } else {
        return Err(DeployError::input(format!("artifacts `{}` do not exist", path.display()))
            .hint("build first (`slipway go build`), or pass --artifacts dist/ or a binary"));
    };
    let version = match (version, manifest_version) {
        (Some(v), _) => v.to_string(),
        (None, Some(v)) => v,
        (None, None) => {
            return Err(DeployError::input(format!("no version for `{}`", path.display()))
                .hint("a bare binary needs --version V"));
        }
    };
    let sha = sha256_file(&file).map_err(|e| {
        DeployError::input(format!("artifact {}: {e}", file.display())).hint("rebuild with `slipway go build`")
    })?;
    if let Some(expected) = &expected
        && *expected != sha
    {
        return Err(DeployError::input(format!(
            "artifact {} does not match its checksum: manifest says sha256:{expected}, the file is sha256:{sha}",
            file.display()
        ))
        .hint("the file changed after the build; rebuild with `slipway go build`"));
    }
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    store_copy(data_dir, &file, &sha)?;
    Ok(ArtifactSet { version, commit, binary: Artifact { name, platform, sha256: sha, size } })
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
        Err(e) => Err(DeployError::input(format!("stored artifact {} ({}): {e}", path.display(), a.name))
            .hint("the data directory lost it; deploy from the build again")),
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
    Ok(ArtifactSet { version, commit: None, binary: Artifact { name, platform: host_platform(), sha256: hex, size } })
}
