//! Pushing to a registry over the OCI distribution API: blobs first (`HEAD` to skip what the
//! registry has, then a monolithic upload), manifests next, the tag last — so a tag never
//! points at an incomplete image — and the digest the registry reports checked against ours.
//! Auth: anonymous, basic, and the bearer-token flow from a `WWW-Authenticate` challenge.
//! Transient failures (connection errors, 429, 5xx) are retried with backoff.
//! HTTPS (rustls, Mozilla's roots or a given CA); plain HTTP for `--insecure-registry` and for
//! loopback registries that do not speak TLS. Async, on reqwest — hyper and rustls, the stack
//! every other slipway client uses.

use std::time::Duration;

use base64::Engine as _;

use crate::OciError;
use crate::layout::Store;

/// `host[:port]/repository[:tag]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub host: String,
    pub repository: String,
    pub tag: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, OciError> {
        let bad = |why: &str| {
            OciError::Input(format!("`{s}` is not an image reference: {why} (write host[:port]/name[:tag])"))
        };
        let (host, rest) = s.split_once('/').ok_or_else(|| bad("no registry host"))?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad("the first part must be a registry host like registry.example.com or 127.0.0.1:5000"));
        }
        let (repo, tag) = match rest.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (rest, "latest"),
        };
        let repo_ok = !repo.is_empty()
            && repo.split('/').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            });
        if !repo_ok {
            return Err(bad("repository names use lowercase letters, digits, `.`, `_`, `-` and `/`"));
        }
        if !crate::valid_tag(tag) {
            return Err(bad(&format!("`{tag}` is not a valid tag")));
        }
        Ok(Reference { host: host.into(), repository: repo.into(), tag: tag.into() })
    }

    fn is_loopback(&self) -> bool {
        let h = self.host.rsplit_once(':').map(|(h, _)| h).unwrap_or(&self.host);
        h == "localhost" || h.starts_with("127.") || h == "[::1]"
    }
}

/// How to talk to registries, besides credentials.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Plain HTTP (loopback registries without TLS are detected anyway).
    pub insecure: bool,
    /// PEM certificates to trust instead of Mozilla's roots.
    pub ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    credentials: Option<Credentials>,
    /// The `Authorization` header that worked last.
    auth: Option<String>,
    pub retries: u32,
    /// Blobs larger than this go up in chunks (`PATCH` with `Content-Range`).
    pub chunk_size: usize,
    /// Repositories of the same registry to try mounting blobs from before uploading them.
    pub mount_from: Vec<String>,
    /// Told about each blob of a push and the bytes sent so far (for progress bars).
    pub progress: Option<ProgressFn>,
    /// The blob being uploaded and the offset of the request body in it.
    current: Option<(String, u64)>,
}

/// What a push is doing, for progress displays.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A blob is next: its digest and size.
    Blob { digest: &'a str, size: u64 },
    /// So many bytes of it have been sent.
    Sent { digest: &'a str, bytes: u64 },
    /// It is in the registry: `uploaded`, `exists` (HEAD found it) or `mounted`.
    Done { digest: &'a str, how: &'static str },
}

pub type ProgressFn = std::sync::Arc<dyn Fn(Progress<'_>) + Send + Sync>;

/// Request bodies larger than this are streamed from a reader that reports progress (with
/// chunked transfer encoding, as `docker push` sends its uploads).
const STREAM_ABOVE: usize = 1 << 20;

/// A request body that reports how much of it the HTTP client has taken.
fn reporting_body(data: &[u8], digest: &str, offset: u64, progress: Option<ProgressFn>) -> reqwest::Body {
    let data = bytes::Bytes::copy_from_slice(data);
    let digest = digest.to_string();
    let piece = 256 * 1024;
    let pieces: Vec<bytes::Bytes> =
        (0..data.len()).step_by(piece).map(|i| data.slice(i..(i + piece).min(data.len()))).collect();
    let mut sent = 0u64;
    let stream = futures_util::stream::iter(pieces.into_iter().map(move |p| {
        sent += p.len() as u64;
        if let Some(f) = &progress {
            f(Progress::Sent { digest: &digest, bytes: offset + sent });
        }
        Ok::<_, std::io::Error>(p)
    }));
    reqwest::Body::wrap_stream(stream)
}

/// An error with what caused it, as one line (reqwest's own message hides the cause).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

struct Reply {
    status: u16,
    /// `Range` of an upload in progress (`0-N`).
    range: Option<String>,
    /// `OCI-Subject`: the registry indexed the manifest's subject (it has the referrers API).
    subject: Option<String>,
    location: Option<String>,
    digest: Option<String>,
    challenge: Option<String>,
    body: String,
}

impl Client {
    /// A client for `r`'s registry. HTTPS, verified against Mozilla's roots or the PEM
    /// certificates of `ca` when given; plain HTTP with `insecure`; a loopback registry is
    /// tried over HTTPS first and over plain HTTP when it does not speak TLS (as Docker does).
    pub async fn new(
        r: &Reference,
        insecure: bool,
        credentials: Option<Credentials>,
        ca: Option<&std::path::Path>,
    ) -> Result<Client, OciError> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .connect_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| OciError::Input(format!("--registry-ca {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| OciError::Input(format!("--registry-ca {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(OciError::Input(format!("--registry-ca {}: no PEM certificate in it", ca.display())));
            }
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| OciError::Io(format!("the HTTP client: {}", chain(&e))))?;
        let https = format!("https://{}", r.host);
        let base = if insecure {
            format!("http://{}", r.host)
        } else if r.is_loopback() {
            // Does it speak TLS? A handshake failure means plain HTTP.
            match http.get(format!("{https}/v2/")).send().await {
                Ok(_) => https,
                // It speaks TLS but we do not trust it: stay on HTTPS so the error says so.
                Err(e) if chain(&e).to_ascii_lowercase().contains("certificate") => https,
                Err(_) => format!("http://{}", r.host),
            }
        } else {
            https
        };
        let chunk_size = std::env::var("SLIPWAY_PUSH_CHUNK_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(16 << 20);
        Ok(Client {
            http,
            base,
            credentials,
            auth: None,
            retries: 3,
            chunk_size,
            mount_from: Vec::new(),
            progress: None,
            current: None,
        })
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }

    async fn once(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Reply, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let head = method == reqwest::Method::HEAD;
        let mut b = self.http.request(method, url);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        if let Some(a) = &self.auth {
            b = b.header("Authorization", a);
        }
        if let Some(ct) = content_type {
            b = b.header("Content-Type", ct);
        }
        b = b.header(
            "Accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, */*",
        );
        b = match &self.current {
            // Large uploads stream, reporting progress as the client takes the bytes.
            Some((digest, offset)) if body.len() > STREAM_ABOVE => {
                b.body(reporting_body(body, digest, *offset, self.progress.clone()))
            }
            _ => b.body(body.to_vec()),
        };
        let resp = b.send().await?;
        let h = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (location, digest, challenge, subject) =
            (h("Location"), h("Docker-Content-Digest"), h("WWW-Authenticate"), h("OCI-Subject"));
        let range = h("Range");
        let status = resp.status().as_u16();
        let body = if head { String::new() } else { resp.text().await.unwrap_or_default() };
        Ok(Reply { status, range, subject, location, digest, challenge, body })
    }

    /// One request with retries on transient failures and one round of authentication.
    async fn send(
        &mut self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, OciError> {
        self.send_with(method, url, content_type, &[], body).await
    }

    async fn send_with(
        &mut self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Reply, OciError> {
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self.once(method, url, content_type, headers, body).await;
            match r {
                Ok(reply) if reply.status == 401 && !authenticated => {
                    authenticated = true;
                    self.authenticate(reply.challenge.as_deref().unwrap_or("")).await?;
                    continue;
                }
                Ok(reply) if (reply.status == 429 || reply.status >= 500) && attempt <= self.retries => {}
                Ok(reply) => return Ok(reply),
                // A certificate the client does not trust will not get better by retrying.
                Err(e) if chain(&e).to_ascii_lowercase().contains("certificate") => {
                    return Err(OciError::Io(format!(
                        "{method} {url}: {} (give the registry's CA with --registry-ca)",
                        chain(&e)
                    )));
                }
                Err(e) if attempt > self.retries => {
                    return Err(OciError::Io(format!("{method} {url}: {} (after {attempt} attempts)", chain(&e))));
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200 * (1 << attempt.min(5)))).await;
        }
    }

    async fn authenticate(&mut self, challenge: &str) -> Result<(), OciError> {
        let creds = self.credentials.clone();
        let basic = creds.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
            )
        });
        let lower = challenge.to_ascii_lowercase();
        if lower.starts_with("basic") {
            self.auth =
                Some(basic.ok_or_else(|| OciError::Auth("the registry wants a user name and password".into()))?);
            return Ok(());
        }
        if lower.starts_with("bearer") {
            let params = parse_challenge(&challenge[6..]);
            let realm = params
                .iter()
                .find(|(k, _)| k == "realm")
                .map(|(_, v)| v.clone())
                .ok_or_else(|| OciError::Auth("bearer challenge without realm".into()))?;
            let mut url = realm.clone();
            let query: Vec<String> = params
                .iter()
                .filter(|(k, _)| k == "service" || k == "scope")
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect();
            if !query.is_empty() {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&query.join("&"));
            }
            let mut b = self.http.get(&url);
            if let Some(basic) = &basic {
                b = b.header("Authorization", basic);
            }
            let resp = b.send().await.map_err(|e| OciError::Io(format!("token request to {realm}: {}", chain(&e))))?;
            if resp.status().as_u16() != 200 {
                return Err(OciError::Auth(format!("the token service at {realm} answered {}", resp.status())));
            }
            let v: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap_or_default())
                .map_err(|e| OciError::Auth(format!("token reply: {e}")))?;
            let token = v["token"]
                .as_str()
                .or(v["access_token"].as_str())
                .ok_or_else(|| OciError::Auth("token reply without a token".into()))?;
            self.auth = Some(format!("Bearer {token}"));
            return Ok(());
        }
        Err(OciError::Auth(format!("unsupported authentication challenge `{challenge}`")))
    }
}

fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else { break };
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((k, v));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
fn urlencode(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

impl Client {
    /// GETs a manifest (or index) by tag or digest; checks the digest when asked by digest.
    pub async fn manifest(&mut self, r: &Reference, reference: &str) -> Result<Vec<u8>, OciError> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, r.repository);
        let reply = self.get_bytes(&url).await?;
        match reply.0 {
            401 => return Err(OciError::Auth(format!("{} refused the credentials (401)", r.host))),
            403 => return Err(OciError::Auth(format!("{} forbids reading {} (403)", r.host, r.repository))),
            200 => {}
            404 => return Err(OciError::Input(format!("{}/{}:{reference} does not exist", r.host, r.repository))),
            s => return Err(OciError::Registry(format!("GET {url}: {s}"))),
        }
        if reference.starts_with("sha256:") && crate::build::sha256(&reply.1) != reference {
            return Err(OciError::Registry(format!("manifest {reference} does not match its digest")));
        }
        Ok(reply.1)
    }

    /// GETs a blob and checks its digest.
    pub async fn blob(&mut self, r: &Reference, digest: &str) -> Result<Vec<u8>, OciError> {
        let url = format!("{}/v2/{}/blobs/{digest}", self.base, r.repository);
        let (status, bytes) = self.get_bytes(&url).await?;
        if status != 200 {
            return Err(OciError::Registry(format!("GET {url}: {status}")));
        }
        if crate::build::sha256(&bytes) != digest {
            return Err(OciError::Registry(format!("blob {digest} does not match its digest")));
        }
        Ok(bytes)
    }

    async fn get_bytes(&mut self, url: &str) -> Result<(u16, Vec<u8>), OciError> {
        // Reuse the retry/auth path, then fetch the bytes with the header that worked.
        let first = self.send("HEAD", url, None, &[]).await?;
        if first.status != 200 {
            return Ok((first.status, Vec::new()));
        }
        let mut b = self.http.get(url).header(
            "Accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
        );
        if let Some(a) = &self.auth {
            b = b.header("Authorization", a);
        }
        let resp = b.send().await.map_err(|e| OciError::Io(format!("GET {url}: {}", chain(&e))))?;
        let status = resp.status().as_u16();
        if resp.content_length().is_some_and(|n| n > 512 * 1024 * 1024) {
            return Err(OciError::Registry(format!("GET {url}: larger than 512 MiB")));
        }
        let bytes = resp.bytes().await.map_err(|e| OciError::Io(format!("GET {url}: {}", chain(&e))))?;
        Ok((status, bytes.to_vec()))
    }
}

impl Client {
    /// A manifest by tag or digest, `None` when the registry has none by that name.
    pub async fn manifest_if_any(&mut self, r: &Reference, reference: &str) -> Result<Option<Vec<u8>>, OciError> {
        match self.manifest(r, reference).await {
            Ok(m) => Ok(Some(m)),
            Err(OciError::Input(m)) if m.ends_with("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Puts bytes as a blob of `r`'s repository (skipped when the registry has it).
    pub async fn put_blob(&mut self, r: &Reference, bytes: &[u8]) -> Result<String, OciError> {
        let digest = crate::build::sha256(bytes);
        send_blob(&digest, bytes, r, self, &mut PushReport::default()).await?;
        self.current = None;
        Ok(digest)
    }

    /// PUTs a manifest under `reference` (a tag or its digest); says whether the registry
    /// indexed its `subject` (it has the referrers API).
    pub async fn put_manifest(
        &mut self,
        r: &Reference,
        reference: &str,
        media: &str,
        bytes: &[u8],
    ) -> Result<bool, OciError> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, r.repository);
        let reply = self.send("PUT", &url, Some(media), bytes).await?;
        check_auth(&reply, r)?;
        if reply.status != 201 {
            return Err(OciError::Registry(format!(
                "putting manifest {reference}: {} {}",
                reply.status,
                reply.body.trim()
            )));
        }
        let digest = crate::build::sha256(bytes);
        if let Some(d) = reply.digest.filter(|d| *d != digest) {
            return Err(OciError::Registry(format!("the registry stored manifest {digest} as {d}: digest mismatch")));
        }
        Ok(reply.subject.is_some())
    }

    /// The referrers of `digest` (an image index), `None` when the registry has no referrers API.
    pub async fn referrers(&mut self, r: &Reference, digest: &str) -> Result<Option<serde_json::Value>, OciError> {
        let url = format!("{}/v2/{}/referrers/{digest}", self.base, r.repository);
        let (status, bytes) = self.get_bytes(&url).await?;
        if status != 200 {
            return Ok(None);
        }
        let v: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        Ok(v["manifests"].is_array().then_some(v))
    }
}

/// The same summary as `layout::inspect`, for an image in a registry.
pub async fn inspect(r: &Reference, client: &mut Client) -> Result<serde_json::Value, OciError> {
    let top = client.manifest(r, &r.tag).await?;
    let digest = crate::build::sha256(&top);
    let node: serde_json::Value =
        serde_json::from_slice(&top).map_err(|e| OciError::Registry(format!("manifest: {e}")))?;
    let manifests: Vec<String> = if node["manifests"].is_array() {
        node["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["digest"].as_str().map(str::to_string))
            .collect()
    } else {
        vec![digest.clone()]
    };
    let mut platforms = Vec::new();
    for md in manifests {
        let m: serde_json::Value = if md == digest {
            node.clone()
        } else {
            serde_json::from_slice(&client.manifest(r, &md).await?)
                .map_err(|e| OciError::Registry(format!("manifest {md}: {e}")))?
        };
        let cfg_digest = m["config"]["digest"].as_str().unwrap_or("").to_string();
        let cfg: serde_json::Value = serde_json::from_slice(&client.blob(r, &cfg_digest).await?)
            .map_err(|e| OciError::Registry(format!("config: {e}")))?;
        platforms.push(crate::layout::platform_summary(&md, &m, &cfg));
    }
    Ok(serde_json::json!({"images": [{"tag": r.tag, "digest": digest, "platforms": platforms}]}))
}

/// What a push did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PushReport {
    pub digest: String,
    /// Blobs the registry took from another repository instead of an upload.
    pub mounted: usize,
    /// Where the SBOM went: `referrers` or the fallback tag; `None` without an SBOM.
    pub sbom: Option<String>,
    pub uploaded: usize,
    pub skipped: usize,
    pub bytes_uploaded: u64,
}

/// Which image of a layout to push.
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// The one tagged so (`--tag`): it must be there.
    Tag(&'a str),
    /// The one tagged like the destination, or the layout's only image whatever its tag (as
    /// `crane push` and `skopeo copy oci:DIR` do).
    Like(&'a str),
}

/// The top entry (index or manifest) of the image `pick` names in a layout's index.
pub fn pick_image(store: &Store, pick: Pick<'_>) -> Result<serde_json::Value, OciError> {
    let images: Vec<&serde_json::Value> =
        store.index["manifests"].as_array().into_iter().flatten().filter(|m| !m["artifactType"].is_string()).collect();
    let tag_of =
        |m: &serde_json::Value| m["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_string);
    let (tag, explicit) = match pick {
        Pick::Tag(t) => (t, true),
        Pick::Like(t) => (t, false),
    };
    if let Some(m) = images.iter().find(|m| tag_of(m).as_deref() == Some(tag)) {
        return Ok((*m).clone());
    }
    if !explicit && images.len() == 1 {
        return Ok(images[0].clone());
    }
    let tags: Vec<String> = images.iter().filter_map(|m| tag_of(m)).collect();
    Err(OciError::Input(match tags.len() {
        0 => "the layout holds no image".to_string(),
        _ => format!(
            "no image tagged `{tag}` in the layout (it holds {}); choose one with --tag",
            tags.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
        ),
    }))
}

/// Pushes the image `pick` names in `store` to `r`.
pub async fn push(store: &Store, pick: Pick<'_>, r: &Reference, client: &mut Client) -> Result<PushReport, OciError> {
    let top = pick_image(store, pick)?;
    let top_digest = top["digest"].as_str().unwrap_or("").to_string();
    let top_media = top["mediaType"].as_str().unwrap_or(crate::MEDIA_MANIFEST).to_string();
    let top_json = store.json(&top_digest)?;
    // (digest, media type) of each platform manifest, then their blobs.
    let manifests: Vec<(String, String)> = if top_json["manifests"].is_array() {
        top_json["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["digest"].as_str().unwrap_or("").to_string(),
                    m["mediaType"].as_str().unwrap_or(crate::MEDIA_MANIFEST).to_string(),
                )
            })
            .collect()
    } else {
        vec![(top_digest.clone(), top_media.clone())]
    };
    let mut blobs: Vec<String> = Vec::new();
    for (md, _) in &manifests {
        let m = store.json(md)?;
        for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten()) {
            if let Some(dg) = d["digest"].as_str()
                && !blobs.iter().any(|b| b == dg)
            {
                blobs.push(dg.to_string());
            }
        }
    }
    let repo = &r.repository;
    let mut report = PushReport { digest: top_digest.clone(), ..PushReport::default() };
    for digest in &blobs {
        upload_blob(store, digest, r, client, &mut report).await?;
    }
    // Platform manifests by digest, then the top by tag.
    if top_json["manifests"].is_array() {
        for (md, media) in &manifests {
            put_manifest(store, client, r, md, md, media).await?;
        }
    }
    put_manifest(store, client, r, &r.tag, &top_digest, &top_media).await?;

    // The SBOM, when the layout has one for this image: referrers API, else the fallback tag.
    let sbom_tag = crate::sbom::fallback_tag(&top_digest);
    let attachment = store.index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == sbom_tag.as_str())
        .and_then(|m| m["digest"].as_str().map(str::to_string));
    if let Some(md) = attachment {
        let m = store.json(&md)?;
        for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten()) {
            if let Some(dg) = d["digest"].as_str() {
                upload_blob(store, dg, r, client, &mut report).await?;
            }
        }
        let bytes = store.blob(&md)?;
        let reply = client
            .send("PUT", &format!("{}/v2/{repo}/manifests/{md}", client.base), Some(crate::MEDIA_MANIFEST), bytes)
            .await?;
        check_auth(&reply, r)?;
        if reply.status != 201 {
            return Err(OciError::Registry(format!("putting the SBOM {md}: {} {}", reply.status, reply.body.trim())));
        }
        if reply.subject.is_some() {
            report.sbom = Some("referrers".into());
        } else {
            let url = format!("{}/v2/{repo}/manifests/{sbom_tag}", client.base);
            let reply = client.send("PUT", &url, Some(crate::MEDIA_MANIFEST), bytes).await?;
            if reply.status != 201 {
                return Err(OciError::Registry(format!(
                    "tagging the SBOM {sbom_tag}: {} {}",
                    reply.status,
                    reply.body.trim()
                )));
            }
            report.sbom = Some(sbom_tag);
        }
    }
    Ok(report)
}

/// PUTs a manifest of the layout under `reference` (a digest or the tag), checking the digest
/// the registry reports.
async fn put_manifest(
    store: &Store,
    client: &mut Client,
    r: &Reference,
    reference: &str,
    digest: &str,
    media: &str,
) -> Result<(), OciError> {
    let bytes = store.blob(digest)?;
    let url = format!("{}/v2/{}/manifests/{reference}", client.base, r.repository);
    let reply = client.send("PUT", &url, Some(media), bytes).await?;
    check_auth(&reply, r)?;
    if reply.status != 201 {
        return Err(OciError::Registry(format!("putting manifest {digest}: {} {}", reply.status, reply.body.trim())));
    }
    if let Some(d) = reply.digest.filter(|d| d != digest) {
        return Err(OciError::Registry(format!("the registry stored manifest {digest} as {d}: digest mismatch")));
    }
    Ok(())
}

async fn upload_blob(
    store: &Store,
    digest: &str,
    r: &Reference,
    client: &mut Client,
    report: &mut PushReport,
) -> Result<(), OciError> {
    let bytes = store.blob(digest)?;
    let tell = |client: &Client, p: Progress<'_>| {
        if let Some(f) = &client.progress {
            f(p)
        }
    };
    tell(client, Progress::Blob { digest, size: bytes.len() as u64 });
    let how = send_blob(digest, bytes, r, client, report).await;
    client.current = None;
    let how = how?;
    tell(client, Progress::Done { digest, how });
    Ok(())
}

/// Gets one blob into the repository: skipped when there, mounted when it can be, else
/// uploaded (monolithic, or in chunks when large). Says which.
async fn send_blob(
    digest: &str,
    bytes: &[u8],
    r: &Reference,
    client: &mut Client,
    report: &mut PushReport,
) -> Result<&'static str, OciError> {
    let repo = &r.repository;
    let url = format!("{}/v2/{repo}/blobs/{digest}", client.base);
    let head = client.send("HEAD", &url, None, &[]).await?;
    if head.status == 200 {
        report.skipped += 1;
        return Ok("exists");
    }
    check_auth(&head, r)?;
    // A cross-repository mount costs nothing when the registry has the blob elsewhere.
    let mut location = None;
    for from in client.mount_from.clone().iter().filter(|f| *f != repo) {
        let url =
            format!("{}/v2/{repo}/blobs/uploads/?mount={}&from={}", client.base, urlencode(digest), urlencode(from));
        let reply = client.send("POST", &url, None, &[]).await?;
        check_auth(&reply, r)?;
        if reply.status == 201 {
            report.mounted += 1;
            return Ok("mounted");
        }
        if reply.status == 202 {
            // Not mountable: the registry opened an ordinary upload instead.
            location = reply.location.clone();
            break;
        }
    }
    let location = match location {
        Some(l) => l,
        None => {
            let start = client.send("POST", &format!("{}/v2/{repo}/blobs/uploads/", client.base), None, &[]).await?;
            check_auth(&start, r)?;
            if start.status != 202 {
                return Err(OciError::Registry(format!("starting an upload: {} {}", start.status, start.body.trim())));
            }
            start.location.ok_or_else(|| OciError::Registry("upload without a Location".into()))?
        }
    };
    let mut location = client.absolute(&location);
    let mut rest: &[u8] = bytes;
    if bytes.len() > client.chunk_size {
        // Chunked: PATCH each piece with its Content-Range; the registry says how far it got.
        let mut offset = 0usize;
        while offset < bytes.len() {
            let end = (offset + client.chunk_size).min(bytes.len());
            client.current = Some((digest.to_string(), offset as u64));
            let headers = [("Content-Range", format!("{offset}-{}", end - 1))];
            let reply = client
                .send_with("PATCH", &location, Some("application/octet-stream"), &headers, &bytes[offset..end])
                .await?;
            if reply.status != 202 {
                return Err(OciError::Registry(format!(
                    "uploading {digest} (bytes {offset}-{}): {} {}",
                    end - 1,
                    reply.status,
                    reply.body.trim()
                )));
            }
            // Continue after what the registry holds (it may be less than we sent).
            offset =
                match reply.range.as_deref().and_then(|r| r.rsplit('-').next()).and_then(|n| n.parse::<usize>().ok()) {
                    Some(last) => last + 1,
                    None => end,
                };
            if let Some(l) = reply.location {
                location = client.absolute(&l);
            }
        }
        rest = &[];
    }
    client.current = Some((digest.to_string(), 0));
    let put_url = format!("{location}{}digest={}", if location.contains('?') { '&' } else { '?' }, urlencode(digest));
    let done = client.send("PUT", &put_url, Some("application/octet-stream"), rest).await?;
    if done.status != 201 {
        return Err(OciError::Registry(format!("uploading {digest}: {} {}", done.status, done.body.trim())));
    }
    report.uploaded += 1;
    report.bytes_uploaded += bytes.len() as u64;
    Ok("uploaded")
}

fn check_auth(reply: &Reply, r: &Reference) -> Result<(), OciError> {
    match reply.status {
        401 => Err(OciError::Auth(format!("{} refused the credentials (401)", r.host))),
        403 => Err(OciError::Auth(format!("{} forbids pushing to {} (403)", r.host, r.repository))),
        _ => Ok(()),
    }
}

/// A base image from a registry: every platform of the tag (manifests, configs and layers
/// checked against their digests).
pub async fn pull_base(r: &Reference, client: &mut Client) -> Result<Vec<crate::build::BasePlatform>, OciError> {
    let top = client.manifest(r, &r.tag).await?;
    let node: serde_json::Value =
        serde_json::from_slice(&top).map_err(|e| OciError::Registry(format!("manifest: {e}")))?;
    let manifests: Vec<serde_json::Value> = if node["manifests"].is_array() {
        let mut v = Vec::new();
        for m in node["manifests"].as_array().into_iter().flatten() {
            let d = m["digest"].as_str().unwrap_or("");
            v.push(
                serde_json::from_slice(&client.manifest(r, d).await?)
                    .map_err(|e| OciError::Registry(format!("manifest {d}: {e}")))?,
            );
        }
        v
    } else {
        vec![node]
    };
    let mut out = Vec::new();
    for m in &manifests {
        // The config and layers first (each checked against its digest), then the platform.
        let mut blobs = std::collections::HashMap::new();
        for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten()) {
            if let Some(dg) = d["digest"].as_str() {
                blobs.insert(dg.to_string(), client.blob(r, dg).await?);
            }
        }
        let mut get = |d: &str| blobs.remove(d).ok_or_else(|| OciError::Registry(format!("blob {d} was not fetched")));
        out.push(crate::layout::base_platform(m, &mut get)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            Reference::parse("127.0.0.1:5000/team/app:v1").unwrap(),
            Reference { host: "127.0.0.1:5000".into(), repository: "team/app".into(), tag: "v1".into() }
        );
        assert_eq!(Reference::parse("localhost/app").unwrap().tag, "latest");
        assert!(Reference::parse("app:v1").is_err());
        assert!(Reference::parse("127.0.0.1:5000/App:v1").is_err());
        assert!(Reference::parse("127.0.0.1:5000/app:-x").is_err());
    }

    #[test]
    fn challenges() {
        let p = parse_challenge(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example.com/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
    }
}
