//! Building an image from Go binaries, without a daemon: a layer of base files (users, CA
//! certificates, optionally tzdata), a layer with the binary, the config, one manifest per
//! platform and an index over them. Everything is deterministic — entries sorted, owners and
//! modes fixed, times from `created` (SOURCE_DATE_EPOCH or the commit time), gzip without a
//! timestamp, JSON with sorted keys — so the same inputs give the same digests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER, MEDIA_LAYER_TAR, MEDIA_MANIFEST, OciError};

/// One binary and the platform it is for.
#[derive(Debug, Clone)]
pub struct BinaryInput {
    pub os: String,
    pub arch: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The program's name: the binary goes to /usr/local/bin/<name>.
    pub name: String,
    pub binaries: Vec<BinaryInput>,
    /// Numeric user and group the program runs as (65532: "nonroot").
    pub user: u32,
    pub ca_certs: Option<PathBuf>,
    pub zoneinfo: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// `8080/tcp`, `53/udp`.
    pub ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the epoch for every timestamp in the image.
    pub created: i64,
    /// The base image, per platform; empty for `scratch` (then slipway adds its own base
    /// layer: users, CA certificates, tzdata).
    pub base: Vec<BasePlatform>,
    /// Extra files (ko's kodata): a file or directory on the host and where it goes in the
    /// image (an absolute path). They get a layer of their own, under the binary's.
    pub files: Vec<(PathBuf, String)>,
    /// Gzip the layers (what registries expect); without, layers are plain tar
    /// (`application/vnd.oci.image.layer.v1.tar`), for images that stay on this machine.
    pub compress: bool,
    /// A directory that keeps compressed layers by the digest of their tar, so an unchanged
    /// layer is not compressed again (`None`: compress every time).
    pub layer_cache: Option<PathBuf>,
}

/// One platform of a base image: its layers and its config.
#[derive(Debug, Clone)]
pub struct BasePlatform {
    pub os: String,
    pub arch: String,
    pub layers: Vec<Blob>,
    /// The image config (`config`, `rootfs.diff_ids`, `history`, ...).
    pub config: Value,
}

/// Layer media types a base may use (compressed with gzip, or not at all).
pub fn layer_media_type(m: &str) -> Option<&'static str> {
    match m {
        MEDIA_LAYER | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(MEDIA_LAYER),
        MEDIA_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => Some(MEDIA_LAYER_TAR),
        _ => None,
    }
}

/// Gzips an uncompressed layer (a base from `docker save`).
pub fn compress_layer(tar: &[u8]) -> Result<Blob, OciError> {
    Ok(Blob::new(MEDIA_LAYER, gzip(tar)?))
}

/// A content-addressed blob.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: &'static str,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub(crate) fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        Blob { media_type, digest: sha256(&bytes), bytes }
    }

    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// JSON with object keys sorted at every level, compact: the canonical bytes we digest.
pub fn canonical(v: &Value) -> Vec<u8> {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sort(v)).unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub os: String,
    pub arch: String,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

#[derive(Debug, Clone)]
pub struct Image {
    pub platforms: Vec<PlatformImage>,
    /// The index over the platforms (present even for one platform).
    pub index: Blob,
}

impl Image {
    /// The digest a registry or `docker` calls the image: the index when there are several
    /// platforms, the manifest when there is one.
    pub fn digest(&self) -> &str {
        if self.platforms.len() == 1 { &self.platforms[0].manifest.digest } else { &self.index.digest }
    }

    pub fn blobs(&self) -> Vec<&Blob> {
        let mut v: Vec<&Blob> = Vec::new();
        for p in &self.platforms {
            v.extend(p.layers.iter());
            v.push(&p.config);
            v.push(&p.manifest);
        }
        v.push(&self.index);
        v
    }
}

struct TarBuilder {
    entries: BTreeMap<String, (Option<Vec<u8>>, u32)>, // path → (file content or dir, mode)
}

impl TarBuilder {
    fn new() -> TarBuilder {
        TarBuilder { entries: BTreeMap::new() }
    }

    fn dir(&mut self, path: &str) {
        self.entries.entry(format!("{}/", path.trim_end_matches('/'))).or_insert((None, 0o755));
    }

    fn file(&mut self, path: &str, bytes: Vec<u8>, mode: u32) {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.dir(&p.display().to_string());
            parent = p.parent();
        }
        self.entries.insert(path.to_string(), (Some(bytes), mode));
    }

    /// The uncompressed tar (sorted entries, root-owned, fixed times).
    fn finish(self, mtime: u64) -> Result<Vec<u8>, OciError> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, (content, mode)) in self.entries {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mode(mode);
            match content {
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_cksum();
                    b.append_data(&mut h, &path, std::io::empty()).map_err(OciError::io("writing a layer"))?;
                }
                Some(bytes) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(bytes.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, &path, bytes.as_slice()).map_err(OciError::io("writing a layer"))?;
                }
            }
        }
        b.into_inner().map_err(OciError::io("writing a layer"))
    }
}

/// A gzip of `data` with no name and no timestamp in its header. Large inputs are cut into
/// fixed 1 MiB pieces compressed on all cores and concatenated as gzip members — a valid gzip
/// stream (RFC 1952 allows several members; Go's readers, hence Docker, containerd, skopeo
/// and umoci, read them all) that is still the same bytes for the same input.
fn gzip(data: &[u8]) -> Result<Vec<u8>, OciError> {
    const PIECE: usize = 1 << 20;
    let member = |piece: &[u8]| -> Result<Vec<u8>, OciError> {
        let mut enc = GzBuilder::new().mtime(0).write(Vec::with_capacity(piece.len() / 2), Compression::fast());
        enc.write_all(piece).map_err(OciError::io("compressing a layer"))?;
        enc.finish().map_err(OciError::io("compressing a layer"))
    };
    if data.len() <= PIECE {
        return member(data);
    }
    let pieces: Vec<&[u8]> = data.chunks(PIECE).collect();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(pieces.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    // Each thread takes the next piece and returns what it compressed, by index.
    let mut done: Vec<(usize, Vec<u8>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<(usize, Vec<u8>)>, OciError> {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(piece) = pieces.get(i) else { return Ok(mine) };
                        mine.push((i, member(piece)?));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.join().map_err(|_| OciError::Io("a compression thread panicked".into()))??);
        }
        Ok::<_, OciError>(all)
    })?;
    done.sort_by_key(|(i, _)| *i);
    let mut all = Vec::with_capacity(data.len() / 2);
    for (_, bytes) in done {
        all.extend(bytes);
    }
    Ok(all)
}

fn walk_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(root.join(rel)) else { return };
    for e in rd.flatten() {
        let p = rel.join(e.file_name());
        match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(root, &p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

fn base_layer(spec: &ImageSpec) -> Result<(Vec<u8>, Vec<&'static str>), OciError> {
    let mut t = TarBuilder::new();
    let mut what = vec!["users"];
    let u = spec.user;
    t.file(
        "etc/passwd",
        format!("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{u}:{u}:nonroot:/home/nonroot:/sbin/nologin\n")
            .into_bytes(),
        0o644,
    );
    t.file("etc/group", format!("root:x:0:\nnonroot:x:{u}:\n").into_bytes(), 0o644);
    t.dir("home/nonroot");
    t.dir("tmp");
    if let Some(ca) = &spec.ca_certs {
        let bytes = std::fs::read(ca).map_err(|e| OciError::Input(format!("CA certificates {}: {e}", ca.display())))?;
        t.file("etc/ssl/certs/ca-certificates.crt", bytes, 0o644);
        what.push("CA certificates");
    }
    if let Some(zi) = &spec.zoneinfo {
        let mut files = Vec::new();
        walk_files(zi, Path::new(""), &mut files);
        if files.is_empty() {
            return Err(OciError::Input(format!("no time zone files in {}", zi.display())));
        }
        for f in files {
            let bytes =
                std::fs::read(zi.join(&f)).map_err(|e| OciError::Input(format!("{}: {e}", zi.join(&f).display())))?;
            t.file(&format!("usr/share/zoneinfo/{}", f.display()), bytes, 0o644);
        }
        what.push("tzdata");
    }
    Ok((t.finish(spec.created.max(0) as u64)?, what))
}

/// Adds `src` (a file or a directory, recursively) at `dest`: root-owned, world-readable,
/// executable where the source is. Symbolic links and special files are refused rather than
/// silently left out.
fn add_tree(t: &mut TarBuilder, src: &Path, dest: &str) -> Result<(), OciError> {
    use std::os::unix::fs::PermissionsExt as _;
    let what = |e: std::io::Error| OciError::Input(format!("extra files: {}: {e}", src.display()));
    let meta = std::fs::symlink_metadata(src).map_err(what)?;
    if meta.is_dir() {
        t.dir(dest);
        let mut names: Vec<_> = std::fs::read_dir(src)
            .map_err(what)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(what)?;
        names.sort();
        for n in names {
            add_tree(t, &src.join(&n), &format!("{dest}/{}", n.to_string_lossy()))?;
        }
        Ok(())
    } else if meta.is_file() {
        let bytes = std::fs::read(src).map_err(what)?;
        t.file(dest, bytes, if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 });
        Ok(())
    } else {
        Err(OciError::Input(format!(
            "extra files: {} is a symbolic link or a special file; copy what it points to instead",
            src.display()
        )))
    }
}

/// The layer of extra files, if any.
fn files_layer(spec: &ImageSpec) -> Result<Option<Vec<u8>>, OciError> {
    if spec.files.is_empty() {
        return Ok(None);
    }
    let mut t = TarBuilder::new();
    for (src, dest) in &spec.files {
        add_tree(&mut t, src, dest.trim_start_matches('/').trim_end_matches('/'))?;
    }
    Ok(Some(t.finish(spec.created.max(0) as u64)?))
}

/// `SOURCE_DATE_EPOCH`-style seconds as the RFC 3339 time OCI configs carry (`…T…Z`, no
/// fraction), so the same inputs give the same bytes.
fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map_or_else(|_| "1970-01-01T00:00:00Z".to_string(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// A layer blob and its diff_id (the digest of the uncompressed tar). Compressed, the tar is
/// hashed beside the compression rather than after it.
fn layer(tar: Vec<u8>, spec: &ImageSpec) -> Result<(Blob, String), OciError> {
    if !spec.compress {
        let blob = Blob::new(MEDIA_LAYER_TAR, tar);
        let diff = blob.digest.clone();
        return Ok((blob, diff));
    }
    if let Some(cache) = &spec.layer_cache {
        // The same tar always compresses to the same bytes, so a layer built before is taken
        // from the cache: a file named by both digests, checked on the way back in.
        let diff = sha256(&tar);
        let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
        let found = std::fs::read_dir(cache).into_iter().flatten().flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (d, b) = name.strip_suffix(".gz")?.split_once('.')?;
            (d == hex(&diff)).then(|| (e.path(), format!("sha256:{b}")))
        });
        if let Some((path, blob_digest)) = found
            && let Ok(bytes) = std::fs::read(&path)
        {
            let blob = Blob::new(MEDIA_LAYER, bytes);
            if blob.digest == blob_digest {
                // Recently used entries survive the trimming below.
                let _ = std::fs::File::options()
                    .append(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                return Ok((blob, diff));
            }
            let _ = std::fs::remove_file(&path); // damaged: compress again
        }
        let blob = Blob::new(MEDIA_LAYER, gzip(&tar)?);
        if std::fs::create_dir_all(cache).is_ok() {
            let name = format!("{}.{}.gz", hex(&diff), hex(&blob.digest));
            let tmp = cache.join(format!(".{name}.tmp"));
            if std::fs::write(&tmp, &blob.bytes).is_ok() {
                let _ = std::fs::rename(&tmp, cache.join(name));
            }
            trim_cache(cache, LAYER_CACHE_ENTRIES);
        }
        return Ok((blob, diff));
    }
    let (z, diff) = std::thread::scope(|s| {
        let diff = s.spawn(|| sha256(&tar));
        let z = gzip(&tar);
        (z, diff.join().unwrap_or_else(|_| sha256(&tar)))
    });
    Ok((Blob::new(MEDIA_LAYER, z?), diff))
}

/// Compressed layers kept in the cache (the most recently used).
const LAYER_CACHE_ENTRIES: usize = 24;

/// Removes all but the `keep` most recently used entries (and stray temporary files).
fn trim_cache(cache: &Path, keep: usize) {
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?.modified().ok()?;
            Some((m, e.path()))
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, path) in entries.into_iter().skip(keep) {
        let _ = std::fs::remove_file(path);
    }
}

/// Builds the image in memory.
pub fn build(spec: &ImageSpec) -> Result<Image, OciError> {
    if spec.binaries.is_empty() {
        return Err(OciError::Input("no binaries to put in the image".into()));
    }
    let (base_tar, base_what) = base_layer(spec)?;
    let (base, base_diff) = layer(base_tar, spec)?;
    let created = rfc3339(spec.created);
    let entry = format!("/usr/local/bin/{}", spec.name);
    let files = match files_layer(spec)? {
        Some(tar) => Some(layer(tar, spec)?),
        None => None,
    };
    let mut platforms = Vec::new();
    for b in &spec.binaries {
        let bytes = std::fs::read(&b.path).map_err(|e| OciError::Input(format!("binary {}: {e}", b.path.display())))?;
        match crate::binary::platform_of(&bytes) {
            Some((os, arch)) if os == b.os && arch == b.arch => {}
            Some((os, arch)) => {
                return Err(OciError::Input(format!(
                    "{} is a {os}/{arch} executable, not {}/{}: build it with GOOS={} GOARCH={}",
                    b.path.display(),
                    b.os,
                    b.arch,
                    b.os,
                    b.arch
                )));
            }
            None => {
                return Err(OciError::Input(format!(
                    "{} is not an executable (no ELF, PE or Mach-O header)",
                    b.path.display()
                )));
            }
        }
        let mut t = TarBuilder::new();
        t.file(entry.trim_start_matches('/'), bytes, 0o755);
        let app_tar = t.finish(spec.created.max(0) as u64)?;
        let (app, app_diff) = layer(app_tar, spec)?;
        let base_image = if spec.base.is_empty() {
            None
        } else {
            Some(spec.base.iter().find(|p| p.os == b.os && p.arch == b.arch).ok_or_else(|| {
                let has: Vec<String> = spec.base.iter().map(|p| format!("{}/{}", p.os, p.arch)).collect();
                OciError::Input(format!("the base image has no {}/{} (it has {})", b.os, b.arch, has.join(", ")))
            })?)
        };
        // Environment: the base's (or a PATH for scratch), then ours; a name set twice keeps ours.
        let mut env: Vec<String> = match base_image {
            Some(bp) => bp.config["config"]["Env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect(),
            None => vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
        };
        if spec.ca_certs.is_some() && base_image.is_none() {
            env.push("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".into());
        }
        for (k, v) in &spec.env {
            env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k.as_str()));
            env.push(format!("{k}={v}"));
        }
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        if let Some(bp) = base_image {
            for (k, v) in bp.config["config"]["Labels"].as_object().into_iter().flatten() {
                labels.insert(k.clone(), v.as_str().unwrap_or("").to_string());
            }
        }
        labels.extend(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut cfg = json!({
            "User": format!("{0}:{0}", spec.user),
            "Entrypoint": [entry],
            "Env": env,
            "Labels": labels,
        });
        if let Some(w) = base_image.and_then(|bp| bp.config["config"]["WorkingDir"].as_str()).filter(|w| !w.is_empty())
        {
            cfg["WorkingDir"] = json!(w);
        }
        if !spec.args.is_empty() {
            cfg["Cmd"] = json!(spec.args);
        }
        if let Some(w) = &spec.workdir {
            cfg["WorkingDir"] = json!(w);
        }
        if !spec.ports.is_empty() {
            let ports: BTreeMap<&String, Value> = spec.ports.iter().map(|p| (p, json!({}))).collect();
            cfg["ExposedPorts"] = json!(ports);
        }
        let (mut layers, mut diff_ids, mut history): (Vec<Blob>, Vec<Value>, Vec<Value>) = match base_image {
            Some(bp) => (
                bp.layers.clone(),
                bp.config["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default(),
                bp.config["history"].as_array().cloned().unwrap_or_default(),
            ),
            None => (
                vec![base.clone()],
                vec![json!(base_diff)],
                vec![
                    json!({"created": created, "created_by": format!("slipway image build: {}", base_what.join(", "))}),
                ],
            ),
        };
        if diff_ids.len() != layers.len() {
            return Err(OciError::Input(format!(
                "the base image for {}/{} has {} layers but {} diff_ids",
                b.os,
                b.arch,
                layers.len(),
                diff_ids.len()
            )));
        }
        if let Some((blob, diff)) = &files {
            let dests: Vec<&str> = spec.files.iter().map(|(_, d)| d.as_str()).collect();
            history
                .push(json!({"created": created, "created_by": format!("slipway image build: {}", dests.join(", "))}));
            diff_ids.push(json!(diff));
            layers.push(blob.clone());
        }
        history.push(json!({"created": created, "created_by": format!("slipway image build: {entry}")}));
        diff_ids.push(json!(app_diff));
        layers.push(app);
        let config = json!({
            "architecture": b.arch,
            "os": b.os,
            "created": created,
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        let config = Blob::new(MEDIA_CONFIG, canonical(&config));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
            "annotations": {"org.opencontainers.image.created": created},
        });
        let manifest = Blob::new(MEDIA_MANIFEST, canonical(&manifest));
        platforms.push(PlatformImage { os: b.os.clone(), arch: b.arch.clone(), manifest, config, layers });
    }
    platforms.sort_by(|a, b| (&a.os, &a.arch).cmp(&(&b.os, &b.arch)));
    let manifests: Vec<Value> = platforms
        .iter()
        .map(|p| {
            let mut d = p.manifest.descriptor();
            d["platform"] = json!({"os": p.os, "architecture": p.arch});
            d
        })
        .collect();
    let index = Blob::new(
        MEDIA_INDEX,
        canonical(&json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests})),
    );
    Ok(Image { platforms, index })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        assert_eq!(canonical(&json!({"b": 1, "a": {"d": 2, "c": 3}})), br#"{"a":{"c":3,"d":2},"b":1}"#.to_vec());
    }

    #[test]
    fn gzip_is_deterministic_and_decodes() {
        assert_eq!(gzip(b"hello").unwrap(), gzip(b"hello").unwrap());
        assert_eq!(&gzip(b"hello").unwrap()[4..8], &[0, 0, 0, 0], "no timestamp");
        let big: Vec<u8> = (0..3_500_000u32).map(|i| (i % 251) as u8).collect();
        let z = gzip(&big).unwrap();
        assert_eq!(z, gzip(&big).unwrap());
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(z.as_slice()), &mut back).unwrap();
        assert_eq!(back, big);
    }
}
