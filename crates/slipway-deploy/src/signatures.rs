//! `require_signature:`: a release deploys to such an environment only when one of its keys
//! signed every artifact — binaries through the build's signed `SHA256SUMS` and
//! `manifest.json` (kept with the artifacts when they were imported, so a promote or a
//! rollback months later is checked the same way), images through their cosign signatures
//! in the registry. Checked before any target is touched; a refusal is recorded.

use std::path::{Path, PathBuf};

use slipway_model::environment::Environment;
use slipway_model::release::Artifact;
use slipway_oci::keys::PublicKey;
use slipway_oci::signature::TrustedKey;

use crate::{DeployError, ErrorKind};

/// Where the signed files of a build are kept for one of its binaries:
/// `<data-dir>/artifacts/signed/<binary sha256>/`.
fn signed_dir(data_dir: &Path, sha256: &str) -> PathBuf {
    data_dir.join("artifacts").join("signed").join(sha256)
}

/// Keeps a build's signed `SHA256SUMS` and `manifest.json` (with their `.sig`) beside each of
/// its binaries, when the build was signed. Nothing when it was not.
pub(crate) fn keep(data_dir: &Path, dist: &Path, binaries: &[Artifact]) -> Result<(), DeployError> {
    let files = ["SHA256SUMS", "SHA256SUMS.sig", "manifest.json", "manifest.json.sig"];
    if !dist.join("SHA256SUMS.sig").is_file() {
        return Ok(());
    }
    let mut contents = Vec::new();
    for f in files {
        let p = dist.join(f);
        match std::fs::read(&p) {
            Ok(b) => contents.push((f, b)),
            // A build signs both files; one missing is checked (and refused) when it matters.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DeployError::input(format!("{}: {e}", p.display()))),
        }
    }
    // Named by everything kept: one build may be signed by several keys, each kept.
    let mut all = Vec::new();
    for (f, b) in &contents {
        all.extend_from_slice(f.as_bytes());
        all.push(0);
        all.extend_from_slice(&(b.len() as u64).to_le_bytes());
        all.extend_from_slice(b);
    }
    let digest = slipway_oci::build::sha256(&all);
    let name = digest.trim_start_matches("sha256:");
    for a in binaries {
        let dir = signed_dir(data_dir, &a.sha256).join(name);
        if dir.join("SHA256SUMS.sig").is_file() {
            continue;
        }
        let io =
            |e: std::io::Error| DeployError::input(format!("keeping the build's signatures in {}: {e}", dir.display()));
        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io)?;
        for (f, b) in &contents {
            std::fs::write(tmp.join(f), b).map_err(io)?;
        }
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // Another import kept the same build first.
            Err(_) if dir.join("SHA256SUMS.sig").is_file() => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

/// The environment's trusted keys, named `key N (sha256:…)`.
pub fn trusted_keys(env: &Environment) -> Result<Vec<TrustedKey>, DeployError> {
    let Some(policy) = &env.require_signature else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (i, pem) in policy.keys.iter().enumerate() {
        let what = format!("environments:{}:require_signature:keys[{i}]", env.name);
        let key = PublicKey::from_pem(pem.as_bytes(), &what).map_err(|e| DeployError::input(e.to_string()))?;
        let short: String = key.fingerprint().trim_start_matches("sha256:").chars().take(12).collect();
        out.push(TrustedKey { name: format!("key {} ({} {short})", i + 1, key.algorithm), key });
    }
    Ok(out)
}

fn refused(env: &Environment, why: String) -> DeployError {
    DeployError::new(ErrorKind::Unsigned, format!("`{}` requires signed releases: {why}", env.name))
        .hint("sign the build (`slipway go build --sign`, `slipway image build --push … --sign`) with a key the environment trusts")
}

/// Checks that every artifact is signed by one of the environment's keys; `Ok` when the
/// environment requires no signature.
pub async fn check(data_dir: &Path, env: &Environment, artifacts: &[Artifact]) -> Result<(), DeployError> {
    if env.require_signature.is_none() {
        return Ok(());
    }
    let keys = trusted_keys(env)?;
    for a in artifacts {
        if let Some(reference) = a.pinned_reference() {
            let target = slipway_oci::signature::ImageRef::parse(reference)
                .map_err(|e| refused(env, format!("the image {reference}: {e}")))?;
            check_image(env, reference, &target, &keys, None).await?;
        } else if matches!(env.target, slipway_model::environment::Target::Docker(_)) {
            return Err(refused(
                env,
                format!("the image {} comes from an archive, which carries no signature", a.sha256),
            )
            .hint(
                "push the image and sign it (`slipway image build --push REF --sign`), then deploy with --image REF",
            ));
        } else {
            check_binary(data_dir, env, a, &keys)?;
        }
    }
    Ok(())
}

fn check_binary(data_dir: &Path, env: &Environment, a: &Artifact, keys: &[TrustedKey]) -> Result<(), DeployError> {
    let what = format!("{} for {} (sha256:{})", a.name, a.platform, a.sha256);
    let dir = signed_dir(data_dir, &a.sha256);
    let builds: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("SHA256SUMS.sig").is_file()).collect(),
        Err(_) => Vec::new(),
    };
    if builds.is_empty() {
        return Err(refused(env, format!("{what} is not signed: its build had no SHA256SUMS.sig")));
    }
    let mut reasons = Vec::new();
    for b in builds {
        match check_build(&b, a, keys) {
            Ok(()) => return Ok(()),
            Err(why) => reasons.push(why),
        }
    }
    Err(refused(env, format!("{what}: {}", reasons.join("; "))))
}

/// One kept build: both files verify with a trusted key, and both list the binary.
fn check_build(dir: &Path, a: &Artifact, keys: &[TrustedKey]) -> Result<(), String> {
    let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| format!("{f}: {e}"));
    let sums = read("SHA256SUMS")?;
    let sig = String::from_utf8_lossy(&read("SHA256SUMS.sig")?).to_string();
    slipway_oci::signature::verify_blob(keys, &sums, &sig, "SHA256SUMS.sig")?;
    let listed = String::from_utf8_lossy(&sums).lines().any(|l| l.split_whitespace().next() == Some(a.sha256.as_str()));
    if !listed {
        return Err("the signed SHA256SUMS does not list this binary (it was changed after signing)".into());
    }
    let manifest = read("manifest.json").map_err(|_| "the build's manifest.json was not kept".to_string())?;
    let msig = String::from_utf8_lossy(
        &read("manifest.json.sig").map_err(|_| "manifest.json is not signed (no manifest.json.sig)".to_string())?,
    )
    .to_string();
    slipway_oci::signature::verify_blob(keys, &manifest, &msig, "manifest.json.sig")?;
    if !String::from_utf8_lossy(&manifest).contains(&a.sha256) {
        return Err("the signed manifest.json does not list this binary".into());
    }
    Ok(())
}

/// Verifies the image `reference` names (a tag or a digest) before anything pulls it; the
/// digest that verified, as `host/name@sha256:…`, is what to pull (a tag moved in between
/// cannot slip in). `credentials` are the deploy's, else SLIPWAY_REGISTRY_USER or Docker's.
pub async fn check_reference(
    env: &Environment,
    reference: &str,
    credentials: Option<(String, String)>,
) -> Result<String, DeployError> {
    let keys = trusted_keys(env)?;
    let target = slipway_oci::signature::ImageRef::parse(reference)
        .map_err(|e| refused(env, format!("the image {reference}: {e}")))?;
    let verified = check_image(env, reference, &target, &keys, credentials).await?;
    Ok(format!("{}@{verified}", target.repository()))
}

async fn check_image(
    env: &Environment,
    reference: &str,
    target: &slipway_oci::signature::ImageRef,
    keys: &[TrustedKey],
    credentials: Option<(String, String)>,
) -> Result<String, DeployError> {
    let creds = match credentials {
        Some((username, password)) => Some(slipway_oci::registry::Credentials { username, password }),
        None => slipway_oci::credentials::lookup(&target.reference.host, None, None)
            .map_err(|e| DeployError::input(e.to_string()))?,
    };
    let mut client = slipway_oci::registry::Client::new(&target.reference, false, creds, None)
        .await
        .map_err(|e| DeployError::failed(format!("checking the signature of {reference}: {e}")))?;
    match slipway_oci::signature::verify_image(&mut client, target, keys).await {
        Ok(v) => Ok(v.digest),
        Err(slipway_oci::signature::VerifyError::Invalid(why)) => Err(refused(env, why)),
        Err(slipway_oci::signature::VerifyError::Oci(e)) => Err(DeployError::new(
            ErrorKind::Unsigned,
            format!("`{}` requires signed releases, and the signature of {reference} could not be read: {e}", env.name),
        )),
    }
}
