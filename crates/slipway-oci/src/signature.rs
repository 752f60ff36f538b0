//! Image signatures as cosign attaches them, so that cosign and skopeo verify slipway's and
//! slipway verifies theirs: for each signed manifest digest `sha256:<hex>`, an OCI manifest
//! tagged `sha256-<hex>.sig` in the same repository whose layers are sigstore "simple signing"
//! payloads (`application/vnd.dev.cosign.simplesigning.v1+json`: the repository and the
//! digest, plus annotations) with the base64 signature in the
//! `dev.cosignproject.cosign/signature` annotation. The manifest also names the image as its
//! `subject`, so a registry with the referrers API lists it there too. Signing an index signs
//! it and each platform manifest (cosign's `--recursive`). Detached signatures of files
//! (`SHA256SUMS.sig`) are what `cosign sign-blob` writes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::OciError;
use crate::keys::{PublicKey, SigningKey};
use crate::registry::{Client, Reference};

pub const MEDIA_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const ARTIFACT_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The tag a manifest's signatures live under.
pub fn signature_tag(digest: &str) -> String {
    format!("sha256-{}.sig", digest.strip_prefix("sha256:").unwrap_or(digest))
}

/// An image named by tag, by digest, or both (`host/name:tag@sha256:…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub reference: Reference,
    /// Whether the tag was written (else `latest` is only the default).
    pub tagged: bool,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, OciError> {
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            let hex = d.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                return Err(OciError::Input(format!(
                    "`{s}`: `{d}` is not a digest (write @sha256: and 64 lowercase hex digits)"
                )));
            }
        }
        let reference = Reference::parse(name)?;
        let last = name.rsplit('/').next().unwrap_or("");
        Ok(ImageRef { reference, tagged: last.contains(':'), digest: digest.map(str::to_string) })
    }

    /// `host/repository`: what a signature's payload names.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.reference.host, self.reference.repository)
    }
}

/// The simple-signing payload for `digest` in `repository` (`host/name`), as cosign writes it.
pub fn payload(repository: &str, digest: &str, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let v = json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": annotations,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A payload read back: what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub repository: String,
    pub digest: String,
    pub annotations: BTreeMap<String, String>,
}

pub fn parse_payload(bytes: &[u8]) -> Result<Payload, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let c = &v["critical"];
    let kind = c["type"].as_str().unwrap_or("");
    if kind != PAYLOAD_TYPE {
        return Err(format!("the payload's type is `{kind}`, not `{PAYLOAD_TYPE}`"));
    }
    let digest = c["image"]["docker-manifest-digest"].as_str().ok_or("the payload names no manifest digest")?;
    let reference = c["identity"]["docker-reference"].as_str().ok_or("the payload names no repository")?;
    // skopeo writes the reference with its tag; cosign without: the repository is what counts.
    let repository = match reference.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => r,
        _ => reference,
    };
    let repository = repository.split('@').next().unwrap_or(repository).to_string();
    let annotations = v["optional"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Payload { repository, digest: digest.to_string(), annotations })
}

/// The top manifest's digest and those of its platform manifests (an index's entries).
async fn digests_of(client: &mut Client, r: &Reference, top: &str) -> Result<(String, Vec<String>), OciError> {
    let bytes = client.manifest(r, top).await?;
    let digest = crate::build::sha256(&bytes);
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| OciError::Registry(format!("manifest {digest}: {e}")))?;
    let platforms = v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["digest"].as_str().map(str::to_string))
        .collect();
    Ok((digest, platforms))
}

/// The image a reference names: its digest, its platforms' digests, and — when both a tag
/// and a digest were given — where the tag points now if that is elsewhere.
struct Resolved {
    digest: String,
    platforms: Vec<String>,
    moved: Option<String>,
}

async fn resolve(client: &mut Client, target: &ImageRef) -> Result<Resolved, OciError> {
    let r = &target.reference;
    let top = target.digest.clone().unwrap_or_else(|| r.tag.clone());
    let (digest, platforms) = digests_of(client, r, &top).await?;
    let mut moved = None;
    if let Some(want) = &target.digest {
        if *want != digest {
            return Err(OciError::Registry(format!("the registry returned {digest} for {want}")));
        }
        if target.tagged {
            let (now, _) = digests_of(client, r, &r.tag).await?;
            moved = (now != digest).then_some(now);
        }
    }
    Ok(Resolved { digest, platforms, moved })
}

/// What signing did to one manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Signed {
    pub digest: String,
    /// `sha256-<hex>.sig`.
    pub tag: String,
    /// The signature manifest's digest.
    pub signature: String,
    /// The registry indexed it in its referrers API too.
    pub referrers: bool,
}

/// Signs the image `target` names — the manifest or index, and each platform manifest of an
/// index — and attaches the signatures. A signature by the same key over the same payload is
/// replaced, others are kept (several keys may sign one image).
pub async fn sign_image(
    client: &mut Client,
    target: &ImageRef,
    key: &SigningKey,
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<Signed>, OciError> {
    let r = &target.reference;
    let Resolved { digest, platforms, moved } = resolve(client, target).await?;
    if let Some(now) = moved {
        return Err(OciError::Input(format!(
            "the tag `{}` points at {now}, not {digest}: sign by digest alone, or the tag",
            r.tag
        )));
    }
    let repository = target.repository();
    let mut out = Vec::new();
    for d in std::iter::once(&digest).chain(platforms.iter()) {
        out.push(attach(client, r, &repository, d, key, annotations).await?);
    }
    Ok(out)
}

async fn attach(
    client: &mut Client,
    r: &Reference,
    repository: &str,
    digest: &str,
    key: &SigningKey,
    annotations: &BTreeMap<String, String>,
) -> Result<Signed, OciError> {
    let body = payload(repository, digest, annotations);
    let signature = key.sign(&body)?;
    let payload_digest = crate::build::sha256(&body);
    let tag = signature_tag(digest);
    let public = key.public();
    // The layers already there, less an earlier signature of ours over the same image.
    let mut layers: Vec<Value> = Vec::new();
    if let Some(existing) = client.manifest_if_any(r, &tag).await? {
        let m: Value = serde_json::from_slice(&existing)
            .map_err(|e| OciError::Registry(format!("the signature manifest {tag}: {e}")))?;
        for l in m["layers"].as_array().into_iter().flatten() {
            let ours = match (l["digest"].as_str(), l["annotations"][ANNOTATION_SIGNATURE].as_str()) {
                (Some(ld), Some(sig)) if l["mediaType"] == MEDIA_SIMPLESIGNING => {
                    let old = client.blob(r, ld).await?;
                    let same_image = parse_payload(&old).is_ok_and(|p| p.digest == digest);
                    same_image
                        && crate::keys::decode_signature(sig, "signature").is_ok_and(|s| public.verifies(&old, &s))
                }
                _ => false,
            };
            if !ours {
                layers.push(l.clone());
            }
        }
    }
    client.put_blob(r, &body).await?;
    layers.push(json!({
        "mediaType": MEDIA_SIMPLESIGNING,
        "size": body.len(),
        "digest": payload_digest,
        "annotations": {ANNOTATION_SIGNATURE: crate::keys::encode_signature(&signature)},
    }));
    // cosign's config: an image config whose rootfs lists the payloads.
    let diff_ids: Vec<Value> = layers.iter().map(|l| l["digest"].clone()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap_or_default();
    let config_digest = client.put_blob(r, &config).await?;
    let subject = client.manifest(r, digest).await?;
    let subject_media = serde_json::from_slice::<Value>(&subject)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| crate::MEDIA_MANIFEST.to_string());
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": crate::MEDIA_MANIFEST,
        "artifactType": ARTIFACT_SIGNATURE,
        "config": {"mediaType": crate::MEDIA_CONFIG, "size": config.len(), "digest": config_digest},
        "layers": layers,
        "subject": {"mediaType": subject_media, "size": subject.len(), "digest": digest},
    }))
    .unwrap_or_default();
    let referrers = client.put_manifest(r, &tag, crate::MEDIA_MANIFEST, &manifest).await?;
    Ok(Signed { digest: digest.to_string(), tag, signature: crate::build::sha256(&manifest), referrers })
}

/// A trusted key and the name messages give it (its file, or its name in a config).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub name: String,
    pub key: PublicKey,
}

/// A signature that verified.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Good {
    /// The manifest it covers.
    pub digest: String,
    /// The key's name and fingerprint.
    pub key: String,
    pub fingerprint: String,
    pub annotations: BTreeMap<String, String>,
}

/// What verifying found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub digest: String,
    /// One good signature per manifest checked (the top, then its platforms).
    pub signatures: Vec<Good>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No valid signature: why, for people.
    #[error("{0}")]
    Invalid(String),
    /// The registry could not be read.
    #[error(transparent)]
    Oci(#[from] OciError),
}

/// Verifies the image `target` names: a signature by one of `keys` whose payload names its
/// repository and digest, for the manifest and (for an index) each platform manifest. With
/// both a tag and a digest, the tag must still point at the digest.
pub async fn verify_image(
    client: &mut Client,
    target: &ImageRef,
    keys: &[TrustedKey],
) -> Result<Verified, VerifyError> {
    let r = &target.reference;
    let Resolved { digest, platforms, moved } = resolve(client, target).await?;
    if let Some(now) = moved {
        return Err(VerifyError::Invalid(format!(
            "the tag `{}` was moved: it points at {now}, not at the signed {digest}",
            r.tag
        )));
    }
    let repository = target.repository();
    let mut signatures = Vec::new();
    for d in std::iter::once(&digest).chain(platforms.iter()) {
        let good = verify_manifest(client, r, &repository, d, keys).await.map_err(|e| match e {
            VerifyError::Invalid(why) if *d != digest => {
                VerifyError::Invalid(format!("platform manifest {d} of {digest}: {why}"))
            }
            e => e,
        })?;
        signatures.push(good);
    }
    Ok(Verified { digest, signatures })
}

/// The signature layers attached to `digest`: by the `.sig` tag, else through the referrers API.
async fn signature_layers(client: &mut Client, r: &Reference, digest: &str) -> Result<Vec<Value>, OciError> {
    let tag = signature_tag(digest);
    let mut manifests = Vec::new();
    if let Some(m) = client.manifest_if_any(r, &tag).await? {
        manifests.push(m);
    } else if let Some(index) = client.referrers(r, digest).await? {
        for m in index["manifests"].as_array().into_iter().flatten() {
            if m["artifactType"] == ARTIFACT_SIGNATURE
                && let Some(d) = m["digest"].as_str()
            {
                manifests.push(client.manifest(r, d).await?);
            }
        }
    }
    let mut layers = Vec::new();
    for m in manifests {
        let v: Value =
            serde_json::from_slice(&m).map_err(|e| OciError::Registry(format!("the signature manifest {tag}: {e}")))?;
        layers.extend(
            v["layers"].as_array().into_iter().flatten().filter(|l| l["mediaType"] == MEDIA_SIMPLESIGNING).cloned(),
        );
    }
    Ok(layers)
}

async fn verify_manifest(
    client: &mut Client,
    r: &Reference,
    repository: &str,
    digest: &str,
    keys: &[TrustedKey],
) -> Result<Good, VerifyError> {
    let layers = signature_layers(client, r, digest).await?;
    if layers.is_empty() {
        return Err(VerifyError::Invalid(format!(
            "{repository}@{digest} is not signed: no signature under the `{}` tag or in the referrers API",
            signature_tag(digest)
        )));
    }
    let names = keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ");
    let mut reasons = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let n = i + 1;
        let Some(sig) = l["annotations"][ANNOTATION_SIGNATURE].as_str() else {
            reasons.push(format!("signature {n} has no `{ANNOTATION_SIGNATURE}` annotation"));
            continue;
        };
        let Ok(sig) = crate::keys::decode_signature(sig, "the annotation") else {
            reasons.push(format!("signature {n} is not base64"));
            continue;
        };
        let body = client.blob(r, l["digest"].as_str().unwrap_or("")).await?;
        let Some(k) = keys.iter().find(|k| k.key.verifies(&body, &sig)) else {
            reasons.push(format!("signature {n} is not by any trusted key ({names})"));
            continue;
        };
        let p = match parse_payload(&body) {
            Ok(p) => p,
            Err(why) => {
                reasons.push(format!("signature {n} (by {}): {why}", k.name));
                continue;
            }
        };
        if p.digest != digest {
            reasons.push(format!(
                "signature {n} (by {}) is for another digest: its payload names {}, the image is {digest}",
                k.name, p.digest
            ));
            continue;
        }
        if p.repository != repository {
            reasons.push(format!(
                "signature {n} (by {}) names another repository: {}, the image is in {repository}",
                k.name, p.repository
            ));
            continue;
        }
        return Ok(Good {
            digest: digest.to_string(),
            key: k.name.clone(),
            fingerprint: k.key.fingerprint(),
            annotations: p.annotations,
        });
    }
    Err(VerifyError::Invalid(format!("{repository}@{digest}: no valid signature: {}", reasons.join("; "))))
}

/// The detached signature of a file's bytes, as `cosign sign-blob` writes it.
pub fn sign_blob(key: &SigningKey, bytes: &[u8]) -> Result<String, OciError> {
    Ok(crate::keys::encode_signature(&key.sign(bytes)?))
}

/// Which of `keys` signed `bytes` (the signature file's text is base64), with the reason when
/// none did.
pub fn verify_blob<'k>(
    keys: &'k [TrustedKey],
    bytes: &[u8],
    signature: &str,
    what: &str,
) -> Result<&'k TrustedKey, String> {
    let sig = crate::keys::decode_signature(signature, what).map_err(|e| e.to_string())?;
    keys.iter().find(|k| k.key.verifies(bytes, &sig)).ok_or_else(|| {
        let names = keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ");
        format!("{what} does not verify with any trusted key ({names}): the file was changed after signing, or another key signed it")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_as_written() {
        let mut a = BTreeMap::new();
        a.insert("commit".to_string(), "abc".to_string());
        let body = payload("127.0.0.1:5000/app", "sha256:00", &a);
        let p = parse_payload(&body).unwrap();
        assert_eq!(p.repository, "127.0.0.1:5000/app");
        assert_eq!(p.digest, "sha256:00");
        assert_eq!(p.annotations["commit"], "abc");
        // skopeo's identity carries the tag.
        let s = br#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/app:v1"},"image":{"docker-manifest-digest":"sha256:01"},"type":"cosign container image signature"},"optional":{"creator":"skopeo"}}"#;
        assert_eq!(parse_payload(s).unwrap().repository, "127.0.0.1:5000/app");
        assert!(parse_payload(br#"{"critical":{"type":"atomic container signature"}}"#).unwrap_err().contains("type"));
    }

    #[test]
    fn references_with_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/app:v1@{d}")).unwrap();
        assert!(r.tagged);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.repository(), "127.0.0.1:5000/app");
        let r = ImageRef::parse(&format!("127.0.0.1:5000/app@{d}")).unwrap();
        assert!(!r.tagged);
        assert!(ImageRef::parse("127.0.0.1:5000/app@sha256:12").unwrap_err().to_string().contains("not a digest"));
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", "a".repeat(64)));
    }
}
