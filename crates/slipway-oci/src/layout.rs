//! Writing images out: an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/…`), and a tar archive that is at once an OCI layout and a `docker save`
//! archive (`manifest.json`), so both `skopeo`/`umoci` and `docker load` read it.
//! Reading back for `slipway image inspect` works on either.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde_json::{Value, json};

use crate::build::{Image, PlatformImage, canonical};
use crate::{MEDIA_INDEX, OciError};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn top_descriptor(image: &Image, tag: &str) -> Value {
    let mut d = if image.platforms.len() == 1 {
        let p = &image.platforms[0];
        let mut d = p.manifest.descriptor();
        d["platform"] = json!({"os": p.os, "architecture": p.arch});
        d
    } else {
        image.index.descriptor()
    };
    d["annotations"] = json!({ REF_NAME: tag });
    d
}

/// Writes (or adds to) an OCI image layout; the tag replaces an earlier image of that tag.
pub fn write_layout(image: &Image, dir: &Path, tag: &str) -> Result<(), OciError> {
    write_blobs(dir, &image.blobs())?;
    add_to_index(dir, top_descriptor(image, tag), tag)
}

/// Adds the SBOM artifact to a layout, tagged `sha256-<image hex>.sbom` as in a registry
/// without the referrers API.
pub fn write_attachment(att: &crate::sbom::Attachment, dir: &Path, image_digest: &str) -> Result<(), OciError> {
    write_blobs(dir, &att.blobs())?;
    let tag = crate::sbom::fallback_tag(image_digest);
    let mut d = att.manifest.descriptor();
    d["artifactType"] = json!(crate::sbom::MEDIA_SPDX);
    d["annotations"] = json!({ REF_NAME: tag });
    add_to_index(dir, d, &tag)
}

fn write_blobs(dir: &Path, list: &[&crate::build::Blob]) -> Result<(), OciError> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(OciError::io("creating the layout"))?;
    for b in list {
        let path = blobs.join(hex(&b.digest));
        if !path.exists() {
            let tmp = blobs.join(format!(".{}.tmp", hex(&b.digest)));
            std::fs::write(&tmp, &b.bytes).map_err(OciError::io("writing a blob"))?;
            std::fs::rename(&tmp, &path).map_err(OciError::io("writing a blob"))?;
        }
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(OciError::io("writing oci-layout"))
}

/// Points `tag` in index.json at `descriptor` (replacing what it pointed at), atomically.
fn add_to_index(dir: &Path, descriptor: Value, tag: &str) -> Result<(), OciError> {
    let mut manifests: Vec<Value> = std::fs::read_to_string(dir.join("index.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["manifests"].as_array().cloned())
        .unwrap_or_default();
    manifests.retain(|m| m["annotations"][REF_NAME] != tag);
    manifests.push(descriptor);
    let index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests});
    let tmp = dir.join(".index.json.tmp");
    std::fs::write(&tmp, canonical(&index)).map_err(OciError::io("writing index.json"))?;
    std::fs::rename(&tmp, dir.join("index.json")).map_err(OciError::io("writing index.json"))
}

/// Writes a tar that is an OCI layout and a docker archive of one platform (`docker load`
/// takes one platform; it is `platform` when given, else linux/amd64 when present, else the
/// first).
pub fn write_tarball(
    image: &Image,
    file: &Path,
    repo_tag: &str,
    platform: Option<(&str, &str)>,
    mtime: u64,
) -> Result<String, OciError> {
    let chosen: &PlatformImage = platform
        .and_then(|(os, arch)| image.platforms.iter().find(|p| p.os == os && p.arch == arch))
        .or_else(|| image.platforms.iter().find(|p| p.os == "linux" && p.arch == "amd64"))
        .or_else(|| image.platforms.first())
        .ok_or_else(|| OciError::Input("the image has no platforms".into()))?;
    let tag = repo_tag.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for b in image.blobs() {
        files.insert(format!("blobs/sha256/{}", hex(&b.digest)), b.bytes.clone());
    }
    files.insert("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
    let index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [top_descriptor(image, tag)]});
    files.insert("index.json".into(), canonical(&index));
    let docker = json!([{
        "Config": format!("blobs/sha256/{}", hex(&chosen.config.digest)),
        "RepoTags": [repo_tag],
        "Layers": chosen.layers.iter().map(|l| format!("blobs/sha256/{}", hex(&l.digest))).collect::<Vec<_>>(),
    }]);
    files.insert("manifest.json".into(), serde_json::to_vec(&docker).unwrap_or_default());
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.keys() {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(format!("{}/", d.display()));
            p = d.parent();
        }
    }
    for d in dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(mtime);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, &d, std::io::empty()).map_err(OciError::io("writing the archive"))?;
    }
    for (path, bytes) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_size(bytes.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, path, bytes.as_slice()).map_err(OciError::io("writing the archive"))?;
    }
    let data = b.into_inner().map_err(OciError::io("writing the archive"))?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(OciError::io("writing the archive"))?;
    std::fs::rename(&tmp, file).map_err(OciError::io("writing the archive"))?;
    Ok(chosen.manifest.digest.clone())
}

/// A read-only view of a layout directory or archive.
pub struct Store {
    blobs: BTreeMap<String, Vec<u8>>,
    pub index: Value,
    /// The layout directory or archive it was read from, for messages.
    origin: String,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, OciError> {
        if path.is_dir() {
            let index = std::fs::read_to_string(path.join("index.json")).map_err(|_| {
                OciError::Input(format!("{} is not an OCI image layout (no index.json)", path.display()))
            })?;
            let index: Value = serde_json::from_str(&index)
                .map_err(|e| OciError::Input(format!("{}/index.json: {e}", path.display())))?;
            let mut blobs = BTreeMap::new();
            for e in std::fs::read_dir(path.join("blobs/sha256")).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    let bytes = std::fs::read(e.path()).map_err(OciError::io("reading a blob"))?;
                    blobs.insert(format!("sha256:{name}"), bytes);
                }
            }
            return Ok(Store { blobs, index, origin: path.display().to_string() });
        }
        let mut f = std::fs::File::open(path).map_err(|e| OciError::Input(format!("{}: {e}", path.display())))?;
        let mut data = Vec::new();
        f.read_to_end(&mut data).map_err(OciError::io("reading the archive"))?;
        let mut blobs = BTreeMap::new();
        let mut index = None;
        let mut a = tar::Archive::new(data.as_slice());
        let entries =
            a.entries().map_err(|e| OciError::Input(format!("{} is not a tar archive: {e}", path.display())))?;
        for e in entries {
            let mut e = e.map_err(|e| OciError::Input(format!("{}: malformed archive: {e}", path.display())))?;
            let name = e.path().map(|p| p.display().to_string()).unwrap_or_default();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes)
                .map_err(|e| OciError::Input(format!("{}: malformed archive: {e}", path.display())))?;
            if let Some(h) = name.strip_prefix("blobs/sha256/") {
                blobs.insert(format!("sha256:{h}"), bytes);
            } else if name == "index.json" {
                index = serde_json::from_slice(&bytes).ok();
            }
        }
        let index = index.ok_or_else(|| {
            OciError::Input(format!(
                "{} holds no OCI index.json (a `docker save` archive of another tool?)",
                path.display()
            ))
        })?;
        Ok(Store { blobs, index, origin: path.display().to_string() })
    }

    /// A blob's bytes, checked against its digest.
    pub fn blob(&self, digest: &str) -> Result<&[u8], OciError> {
        let b = self
            .blobs
            .get(digest)
            .ok_or_else(|| OciError::Input(format!("blob {digest} is missing from {}", self.origin)))?;
        if crate::build::sha256(b) != digest {
            return Err(OciError::Input(format!(
                "blob {digest} in {} does not match its digest (the file was changed or damaged): build the image again",
                self.origin
            )));
        }
        Ok(b)
    }

    pub fn json(&self, digest: &str) -> Result<Value, OciError> {
        serde_json::from_slice(self.blob(digest)?).map_err(|e| OciError::Input(format!("blob {digest}: {e}")))
    }
}

/// A summary of every image in a layout or archive, for `slipway image inspect`.
pub fn inspect(path: &Path) -> Result<Value, OciError> {
    let store = Store::open(path)?;
    let mut images = Vec::new();
    let tags: Vec<String> = store.index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"][REF_NAME].as_str().map(str::to_string))
        .collect();
    for top in store.index["manifests"].as_array().into_iter().flatten() {
        if top["artifactType"].is_string() {
            continue; // an SBOM: shown with its image
        }
        let digest = top["digest"].as_str().unwrap_or("").to_string();
        let tag = top["annotations"][REF_NAME].as_str().map(str::to_string);
        let node = store.json(&digest)?;
        let manifests: Vec<(String, Value)> = if node["manifests"].is_array() {
            node["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| (m["digest"].as_str().unwrap_or("").to_string(), m.clone()))
                .collect()
        } else {
            vec![(digest.clone(), top.clone())]
        };
        let mut platforms = Vec::new();
        for (md, _) in manifests {
            let m = store.json(&md)?;
            let cfg_digest = m["config"]["digest"].as_str().unwrap_or("").to_string();
            let cfg = store.json(&cfg_digest)?;
            platforms.push(platform_summary(&md, &m, &cfg));
        }
        let sbom = tags.contains(&crate::sbom::fallback_tag(&digest));
        images.push(json!({"tag": tag, "digest": digest, "sbom": sbom, "platforms": platforms}));
    }
    Ok(json!({"images": images}))
}

/// One platform of a base image, from its manifest and a way to fetch blobs (checked).
pub fn base_platform(
    manifest: &Value,
    get: &mut dyn FnMut(&str) -> Result<Vec<u8>, OciError>,
) -> Result<crate::build::BasePlatform, OciError> {
    let cfg_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| OciError::Input("the base manifest has no config".into()))?;
    let config: Value =
        serde_json::from_slice(&get(cfg_digest)?).map_err(|e| OciError::Input(format!("base config: {e}")))?;
    let mut layers = Vec::new();
    for l in manifest["layers"].as_array().into_iter().flatten() {
        let media = l["mediaType"].as_str().unwrap_or("");
        let media = crate::build::layer_media_type(media).ok_or_else(|| {
            OciError::Input(format!("base layers of type `{media}` are not supported (gzip or uncompressed tar only)"))
        })?;
        let digest = l["digest"].as_str().unwrap_or("").to_string();
        let bytes = get(&digest)?;
        layers.push(crate::build::Blob { media_type: media, digest, bytes });
    }
    Ok(crate::build::BasePlatform {
        os: config["os"].as_str().unwrap_or("").to_string(),
        arch: config["architecture"].as_str().unwrap_or("").to_string(),
        layers,
        config,
    })
}

/// The base image tagged `tag` (or the only image) in a layout or OCI archive, every platform.
pub fn base_from_store(store: &Store, tag: Option<&str>) -> Result<Vec<crate::build::BasePlatform>, OciError> {
    let entries: Vec<&Value> =
        store.index["manifests"].as_array().into_iter().flatten().filter(|m| !m["artifactType"].is_string()).collect();
    let top = match tag {
        Some(t) => entries.iter().find(|m| m["annotations"][REF_NAME] == t).copied(),
        None if entries.len() == 1 => entries.first().copied(),
        None => return Err(OciError::Input("the base layout holds several images: name one with `:tag`".into())),
    }
    .ok_or_else(|| OciError::Input(format!("no image tagged `{}` in the base layout", tag.unwrap_or(""))))?;
    let digest = top["digest"].as_str().unwrap_or("");
    let node = store.json(digest)?;
    let manifests: Vec<Value> = if node["manifests"].is_array() {
        node["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| store.json(m["digest"].as_str().unwrap_or("")))
            .collect::<Result<_, _>>()?
    } else {
        vec![node]
    };
    let mut get = |d: &str| store.blob(d).map(<[u8]>::to_vec);
    manifests.iter().map(|m| base_platform(m, &mut get)).collect()
}

/// A base from a `docker save` archive (layers are uncompressed tars there; they are gzipped
/// and checked against the config's diff_ids). An OCI archive works too.
pub fn base_from_archive(path: &Path) -> Result<Vec<crate::build::BasePlatform>, OciError> {
    if let Ok(store) = Store::open(path) {
        return base_from_store(&store, None);
    }
    let data = std::fs::read(path).map_err(|e| OciError::Input(format!("{}: {e}", path.display())))?;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut a = tar::Archive::new(data.as_slice());
    for e in a.entries().map_err(|e| OciError::Input(format!("{} is not a tar archive: {e}", path.display())))? {
        let mut e = e.map_err(|e| OciError::Input(format!("{}: malformed archive: {e}", path.display())))?;
        let name = e.path().map(|p| p.display().to_string()).unwrap_or_default();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).map_err(|e| OciError::Input(format!("{}: {e}", path.display())))?;
        files.insert(name, bytes);
    }
    let manifest: Value = files.get("manifest.json").and_then(|b| serde_json::from_slice(b).ok()).ok_or_else(|| {
        OciError::Input(format!(
            "{} is neither an OCI archive nor a `docker save` archive (no manifest.json)",
            path.display()
        ))
    })?;
    let entry = &manifest[0];
    let config_bytes = files
        .get(entry["Config"].as_str().unwrap_or(""))
        .ok_or_else(|| OciError::Input("the archive's config is missing".into()))?;
    let config: Value =
        serde_json::from_slice(config_bytes).map_err(|e| OciError::Input(format!("archive config: {e}")))?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect();
    let mut layers = Vec::new();
    for (i, l) in entry["Layers"].as_array().into_iter().flatten().enumerate() {
        let name = l.as_str().unwrap_or("");
        let tar =
            files.get(name).ok_or_else(|| OciError::Input(format!("layer {name} is missing from the archive")))?;
        if diff_ids.get(i).map(String::as_str) != Some(crate::build::sha256(tar).as_str()) {
            return Err(OciError::Input(format!("layer {name} does not match the config's diff_id")));
        }
        layers.push(crate::build::compress_layer(tar)?);
    }
    Ok(vec![crate::build::BasePlatform {
        os: config["os"].as_str().unwrap_or("linux").to_string(),
        arch: config["architecture"].as_str().unwrap_or("amd64").to_string(),
        layers,
        config,
    }])
}

/// What `image inspect` shows of one platform: from its manifest (digest `md`) and config.
pub(crate) fn platform_summary(md: &str, manifest: &Value, cfg: &Value) -> Value {
    let layers = manifest["layers"].as_array().map_or(&[][..], |l| l.as_slice());
    let size: u64 = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
    json!({
        "platform": format!("{}/{}", cfg["os"].as_str().unwrap_or("?"), cfg["architecture"].as_str().unwrap_or("?")),
        "manifest": md,
        "layers": layers.len(),
        "size": size,
        "user": cfg["config"]["User"],
        "entrypoint": cfg["config"]["Entrypoint"],
        "labels": cfg["config"]["Labels"],
        "created": cfg["created"],
    })
}
