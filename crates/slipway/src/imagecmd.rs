//! `slipway image build|push|inspect`: container images straight from the binaries of
//! `slipway go build`, without a Docker daemon, as an OCI layout and/or an archive that
//! `docker load` reads.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use slipway_oci::OciError;
use slipway_oci::request::BuildRequest;

use crate::ui::{Ui, UserError, exit};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build an image from Go binaries (dist/manifest.json of `slipway go build`, or --binary).
    Build(Box<ImageBuildArgs>),
    /// Push an image from an OCI layout to a registry (blobs first, the tag last).
    Push(PushArgs),
    /// Sign images in a registry the way cosign does (`sha256-<digest>.sig`): the manifest or
    /// index and each platform manifest.
    Sign(SignArgs),
    /// Check an image's signatures with trusted public keys (exit 0 valid, 1 invalid or
    /// missing, with the reason).
    Verify(VerifyArgs),
    /// Show the images in an OCI layout directory, an archive, or a registry (host/name:tag).
    Inspect {
        /// A layout directory, an archive written by `slipway image build`, or a reference.
        path: String,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct SignArgs {
    /// The image: host[:port]/name[:tag][@sha256:DIGEST] (repeatable).
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
    #[command(flatten)]
    pub key: crate::signcmd::KeyArg,
    /// An annotation for the payload, KEY=VALUE (repeatable; commit, pipeline and builder are
    /// always there).
    #[arg(short = 'a', long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The image: host[:port]/name[:tag][@sha256:DIGEST]; with both, the tag must still
    /// point at the digest.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// A trusted public key (repeatable: any of them may have signed; a file, PEM text or
    /// env://NAME).
    #[arg(long, required = true, value_name = "PUB")]
    pub key: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PushArgs {
    /// The layout `slipway image build` wrote (default dist/image).
    #[arg(long, value_name = "DIR", default_value = "dist/image")]
    pub layout: PathBuf,
    /// Which tag of the layout to push (default: the reference's tag).
    #[arg(long)]
    pub tag: Option<String>,
    /// Where to: host[:port]/name[:tag] (repeatable).
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print one JSON object per reference.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// Talk plain HTTP to the registry (loopback registries without TLS are detected).
    #[arg(long)]
    pub insecure_registry: bool,
    /// Try to mount blobs from this repository of the same registry before uploading them
    /// (repeatable; repositories pushed to earlier in the same command are tried too).
    #[arg(long, value_name = "REPO")]
    pub mount_from: Vec<String>,
    /// Trust these PEM certificates for the registry's TLS (instead of Mozilla's roots).
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,
    /// Registry user (else SLIPWAY_REGISTRY_USER, else ~/.docker/config.json).
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// Read the registry password from standard input (else SLIPWAY_REGISTRY_PASSWORD).
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args)]
pub struct ImageBuildArgs {
    /// The manifest of `slipway go build`.
    #[arg(long, value_name = "FILE", default_value = "dist/manifest.json")]
    pub from: PathBuf,
    /// A binary and its platform, as os/arch=PATH (repeatable; replaces --from).
    #[arg(long, value_name = "OS/ARCH=PATH")]
    pub binary: Vec<String>,
    /// The program's name (default: the binary's); it goes to /usr/local/bin/NAME.
    #[arg(long)]
    pub name: Option<String>,
    /// The image's tag (default: the version in the manifest, else `latest`).
    #[arg(long)]
    pub tag: Option<String>,
    /// Write an OCI image layout to DIR (default dist/image when no output is given).
    #[arg(long, value_name = "DIR")]
    pub layout: Option<PathBuf>,
    /// Write an archive that is an OCI layout and `docker load`-able.
    #[arg(long, value_name = "FILE")]
    pub tarball: Option<PathBuf>,
    /// Numeric user (and group) the program runs as (default 65532).
    #[arg(long)]
    pub user: Option<u32>,
    /// Arguments after the entrypoint (repeatable).
    #[arg(long = "arg", value_name = "ARG")]
    pub args: Vec<String>,
    /// Environment variables (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Exposed ports, e.g. 8080 or 53/udp (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<String>,
    /// Labels (repeatable); org.opencontainers.image.* are filled from git.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Working directory.
    #[arg(long)]
    pub workdir: Option<String>,
    /// The base image: `scratch` (default), an OCI layout directory (`DIR` or `DIR:TAG`), an
    /// archive (`docker save` or OCI), or a registry reference (host[:port]/name:tag).
    #[arg(long, value_name = "BASE")]
    pub base: Option<String>,
    /// Extra files or directories, as SRC:DEST (DEST an absolute path in the image; repeatable),
    /// e.g. `--file kodata:/var/run/ko`.
    #[arg(long, value_name = "SRC:DEST")]
    pub file: Vec<String>,
    /// Layer compression: `gzip` (default; what registries expect) or `none` (plain tar layers,
    /// quicker for images that stay on this machine, e.g. `--tarball` for `docker load`).
    #[arg(long, value_name = "ALGORITHM", default_value = "gzip", value_parser = ["gzip", "none"])]
    pub compression: String,
    /// Compress every layer again instead of taking unchanged ones from .slipway/cache/layers.
    #[arg(long)]
    pub no_cache: bool,
    /// Leave out the SBOM (SPDX JSON of the Go modules in the binaries, kept as an artifact
    /// referring to the image).
    #[arg(long)]
    pub no_sbom: bool,
    /// Include the host's /usr/share/zoneinfo.
    #[arg(long)]
    pub tzdata: bool,
    /// Leave out the host's CA certificates.
    #[arg(long)]
    pub no_ca_certs: bool,
    /// Do nothing (exit 0) when the pipeline file has no `images:` section.
    #[arg(long)]
    pub if_configured: bool,
    /// Also push to this reference, host[:port]/name[:tag] (repeatable).
    #[arg(long, value_name = "REF")]
    pub push: Vec<String>,
    /// Sign what was pushed (cosign's format), with --key or SLIPWAY_SIGNING_KEY.
    #[arg(long, requires = "push")]
    pub sign: bool,
    #[command(flatten)]
    pub key: crate::signcmd::KeyArg,
    /// An annotation for the signatures, KEY=VALUE (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE", requires = "sign")]
    pub annotations: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print one JSON object: the digest, each platform's manifest digest, the outputs.
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

pub(crate) fn oci_error(e: OciError) -> anyhow::Error {
    match e {
        OciError::Input(m) => UserError::new(m).into(),
        OciError::Io(m) => anyhow::anyhow!(m),
        OciError::Auth(m) => UserError::new(m)
            .hint("give credentials with --username and --password-stdin (or SLIPWAY_REGISTRY_USER/SLIPWAY_REGISTRY_PASSWORD, or docker login)")
            .into(),
        OciError::Registry(m) => anyhow::anyhow!(m),
        OciError::Hinted { message, hint } => UserError::new(message).hint(hint).into(),
    }
}

/// Registry credentials for `host` (`slipway_oci::credentials`), the password read from
/// standard input when `--password-stdin` asks for it.
fn credentials(host: &str, args: &RegistryArgs) -> Result<Option<slipway_oci::registry::Credentials>> {
    let password = if args.password_stdin {
        let mut p = String::new();
        std::io::stdin().read_line(&mut p)?;
        Some(p.trim_end_matches(['\n', '\r']).to_string())
    } else {
        None
    };
    slipway_oci::credentials::lookup(host, args.username.clone(), password).map_err(oci_error)
}

/// Where compressed layers are kept: in a pipeline job, the project's state directory that
/// slipway passes down (SLIPWAY_STATE_DIR); on its own, the project's `.slipway`.
fn layer_cache_dir(root: &Path) -> Option<PathBuf> {
    let state = match std::env::var_os("SLIPWAY_STATE_DIR") {
        Some(d) => PathBuf::from(d),
        None => slipway_runner::record::StateDir::of(root).ok()?.dir,
    };
    Some(state.join("cache/layers"))
}

thread_local! {
    /// (host, repository) pairs pushed to by this command: later pushes mount from them.
    static PUSHED: std::cell::RefCell<Vec<(String, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn push_to(
    layout: &Path,
    pick: slipway_oci::registry::Pick<'_>,
    reference: &str,
    args: &RegistryArgs,
) -> Result<serde_json::Value> {
    let r = slipway_oci::registry::Reference::parse(reference).map_err(oci_error)?;
    let creds = credentials(&r.host, args)?;
    let rt = runtime()?;
    let mut client = rt
        .block_on(slipway_oci::registry::Client::new(&r, args.insecure_registry, creds, args.registry_ca.as_deref()))
        .map_err(oci_error)?;
    // Repositories this command already pushed to on the same registry, and --mount-from.
    client.mount_from = args.mount_from.clone();
    let pushed_here: Vec<String> =
        PUSHED.with(|p| p.borrow().iter().filter(|(h, _)| *h == r.host).map(|(_, repo)| repo.clone()).collect());
    client.mount_from.extend(pushed_here);
    client.progress = progress_bars();
    let store = slipway_oci::layout::Store::open(layout).map_err(oci_error)?;
    let report = rt.block_on(slipway_oci::registry::push(&store, pick, &r, &mut client)).map_err(oci_error)?;
    PUSHED.with(|p| p.borrow_mut().push((r.host.clone(), r.repository.clone())));
    Ok(serde_json::json!({
        "ref": reference,
        "digest": report.digest,
        "uploaded": report.uploaded,
        "mounted": report.mounted,
        "skipped": report.skipped,
        "bytes_uploaded": report.bytes_uploaded,
        "sbom": report.sbom,
    }))
}

/// One progress bar per blob on stderr, like `docker push`: short digest, bytes sent, rate,
/// then `uploaded`, `exists` or `mounted`. Nothing when stderr is not a terminal.
fn progress_bars() -> Option<slipway_oci::registry::ProgressFn> {
    use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
    use slipway_oci::registry::Progress;
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() || std::env::var("TERM").is_ok_and(|t| t == "dumb") {
        return None;
    }
    let all = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars = std::sync::Mutex::new(std::collections::HashMap::<String, ProgressBar>::new());
    Some(std::sync::Arc::new(move |p: Progress<'_>| {
        let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        let short = |d: &str| d.trim_start_matches("sha256:").chars().take(12).collect::<String>();
        match p {
            Progress::Blob { digest, size } => {
                let bar = all.add(ProgressBar::new(size).with_style(style.clone()).with_prefix(short(digest)));
                bars.insert(digest.to_string(), bar);
            }
            Progress::Sent { digest, bytes } => {
                if let Some(b) = bars.get(digest) {
                    b.set_position(bytes);
                }
            }
            Progress::Done { digest, how } => {
                if let Some(b) = bars.remove(digest) {
                    if how == "uploaded" {
                        b.set_position(b.length().unwrap_or(0));
                        b.finish_with_message(how);
                    } else {
                        // Nothing was sent: no bar or rate, just what happened.
                        b.finish_and_clear();
                        all.remove(&b);
                        let _ = all.println(format!("{} {how}", short(digest)));
                    }
                }
            }
        }
    }))
}

pub fn run(root: &Path, cmd: ImageCommand, ui: &Ui) -> Result<i32> {
    match cmd {
        ImageCommand::Build(a) => build(root, *a, ui),
        ImageCommand::Inspect { path, registry, json } => inspect(root, &path, &registry, json, ui),
        ImageCommand::Push(a) => push(root, a, ui),
        ImageCommand::Sign(a) => sign(root, a, ui),
        ImageCommand::Verify(a) => verify(a, ui),
    }
}

fn build(root: &Path, a: ImageBuildArgs, ui: &Ui) -> Result<i32> {
    let started = std::time::Instant::now();
    let mut req = BuildRequest {
        project: root.to_path_buf(),
        from: a.from.clone(),
        binaries: a.binary.clone(),
        name: a.name.clone(),
        tag: a.tag.clone(),
        user: a.user,
        args: a.args.clone(),
        env: a.env.clone(),
        ports: a.port.clone(),
        labels: a.label.clone(),
        workdir: a.workdir.clone(),
        base: a.base.clone(),
        files: a.file.clone(),
        gzip: a.compression == "gzip",
        layer_cache: if a.no_cache { None } else { layer_cache_dir(root) },
        sbom: !a.no_sbom,
        tzdata: a.tzdata,
        ca_certs: !a.no_ca_certs,
        push: a.push.clone(),
    };
    // The pipeline file's `images:` section gives the defaults; flags win.
    let configured = if crate::project::find_source(root, None).is_ok() {
        crate::project::load(root, None, ui)?.pipeline.images
    } else {
        None
    };
    match &configured {
        None if a.if_configured => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"built": false, "reason": "no images: section in the pipeline file"})
                );
            } else {
                println!("{}", ui.paint("2", "no `images:` section in the pipeline file: no image to build"));
            }
            return Ok(exit::OK);
        }
        None => {}
        Some(c) => {
            for notice in req.with_section(c, slipway_git::on_default_branch(root)) {
                ui.notice(&notice);
            }
        }
    }
    let options =
        slipway_oci::registry::Options { insecure: a.registry.insecure_registry, ca: a.registry.registry_ca.clone() };
    let base = match req.base.as_deref() {
        None | Some("scratch") => Vec::new(),
        Some(b) => runtime()?
            .block_on(slipway_oci::request::load_base(root, b, &options, |host| {
                credentials(host, &a.registry).map_err(|e| OciError::Input(e.to_string()))
            }))
            .map_err(oci_error)?,
    };
    // The key opens before the build: a wrong passphrase fails in a second, not after a push.
    let signer = if a.sign { Some(crate::signcmd::signing_key(&a.key)?) } else { None };
    // (Only when signing: the commit costs a git process.)
    let sign_annotations = if a.sign { crate::signcmd::annotations(root, &a.annotations)? } else { Default::default() };
    let built = slipway_oci::request::build(&req, base).map_err(oci_error)?;
    if let Some(why) = &built.no_sbom
        && !a.json
    {
        eprintln!("{}", ui.paint("33", &format!("note: no SBOM: {why}")));
    }
    let layout = match (&a.layout, &a.tarball) {
        (None, None) => Some(root.join("dist/image")),
        (Some(l), _) => Some(if l.is_absolute() { l.clone() } else { root.join(l) }),
        (None, Some(_)) => None,
    };
    let tarball = a.tarball.as_ref().map(|t| if t.is_absolute() { t.clone() } else { root.join(t) });
    slipway_oci::request::write(&built, layout.as_deref(), tarball.as_deref()).map_err(oci_error)?;
    let mut pushed = Vec::new();
    if !req.push.is_empty() {
        // A push goes from a layout: the one just written, or a scratch one.
        let dir = match &layout {
            Some(l) => l.clone(),
            None => {
                let tmp = root.join(".slipway/image-push");
                let _ = std::fs::remove_dir_all(&tmp);
                slipway_oci::request::write(&built, Some(&tmp), None).map_err(oci_error)?;
                tmp
            }
        };
        for reference in &req.push {
            let reference = slipway_oci::request::expand_reference(root, reference, &built.tag).map_err(oci_error)?;
            let mut v = push_to(&dir, slipway_oci::registry::Pick::Tag(&built.tag), &reference, &a.registry)?;
            if let Some(key) = &signer {
                let target = format!("{reference}@{}", v["digest"].as_str().unwrap_or(""));
                let signed = sign_one(&target, key, &sign_annotations, &a.registry)?;
                v["signed"] = serde_json::to_value(signed)?;
            }
            pushed.push(v);
        }
    }
    let image = &built.image;
    if a.json {
        let platforms: Vec<serde_json::Value> = image
            .platforms
            .iter()
            .map(|p| serde_json::json!({"platform": format!("{}/{}", p.os, p.arch), "digest": p.manifest.digest}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "built": true,
                "name": built.name,
                "tag": built.tag,
                "digest": image.digest(),
                "platforms": platforms,
                "layout": layout.map(|l| l.display().to_string()),
                "tarball": a.tarball.as_ref().map(|t| t.display().to_string()),
                "pushed": pushed,
            })
        );
    } else {
        println!("{} {}:{}  {}", ui.paint("32", "built"), built.name, built.tag, image.digest());
        for p in &image.platforms {
            println!("  {}/{}  {}", p.os, p.arch, p.manifest.digest);
        }
        for v in &pushed {
            print_push(v, false, ui);
        }
        println!("{}", ui.paint("2", &format!("in {:.0?}", started.elapsed())));
    }
    Ok(exit::OK)
}

fn push(root: &Path, a: PushArgs, ui: &Ui) -> Result<i32> {
    let layout = if a.layout.is_absolute() { a.layout.clone() } else { root.join(&a.layout) };
    for reference in &a.refs {
        let reference = slipway_oci::request::expand_reference(root, reference, a.tag.as_deref().unwrap_or(""))
            .map_err(oci_error)?;
        let like = slipway_oci::registry::Reference::parse(&reference).map_err(oci_error)?.tag;
        let pick = match &a.tag {
            Some(t) => slipway_oci::registry::Pick::Tag(t),
            None => slipway_oci::registry::Pick::Like(&like),
        };
        let v = push_to(&layout, pick, &reference, &a.registry)?;
        print_push(&v, a.json, ui);
    }
    Ok(exit::OK)
}

fn registry_client(
    r: &slipway_oci::registry::Reference,
    args: &RegistryArgs,
) -> Result<(tokio::runtime::Runtime, slipway_oci::registry::Client)> {
    let creds = credentials(&r.host, args)?;
    let rt = runtime()?;
    let client = rt
        .block_on(slipway_oci::registry::Client::new(r, args.insecure_registry, creds, args.registry_ca.as_deref()))
        .map_err(oci_error)?;
    Ok((rt, client))
}

fn sign_one(
    reference: &str,
    key: &slipway_oci::keys::SigningKey,
    annotations: &std::collections::BTreeMap<String, String>,
    args: &RegistryArgs,
) -> Result<Vec<slipway_oci::signature::Signed>> {
    let target = slipway_oci::signature::ImageRef::parse(reference).map_err(oci_error)?;
    let (rt, mut client) = registry_client(&target.reference, args)?;
    rt.block_on(slipway_oci::signature::sign_image(&mut client, &target, key, annotations)).map_err(oci_error)
}

fn sign(root: &Path, a: SignArgs, ui: &Ui) -> Result<i32> {
    let key = crate::signcmd::signing_key(&a.key)?;
    let annotations = crate::signcmd::annotations(root, &a.annotations)?;
    for reference in &a.refs {
        let signed = sign_one(reference, &key, &annotations, &a.registry)?;
        if a.json {
            println!("{}", serde_json::json!({"ref": reference, "signed": signed}));
        } else {
            for s in &signed {
                let where_ = if s.referrers { format!("{} and the referrers API", s.tag) } else { s.tag.clone() };
                println!("{} {}  →  {where_}", ui.paint("32", "signed"), s.digest);
            }
        }
    }
    Ok(exit::OK)
}

fn verify(a: VerifyArgs, ui: &Ui) -> Result<i32> {
    use slipway_oci::signature::VerifyError;
    let keys = crate::signcmd::trusted_keys(&a.key)?;
    let target = slipway_oci::signature::ImageRef::parse(&a.reference).map_err(oci_error)?;
    let (rt, mut client) = registry_client(&target.reference, &a.registry)?;
    match rt.block_on(slipway_oci::signature::verify_image(&mut client, &target, &keys)) {
        Ok(v) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ref": a.reference, "valid": true, "digest": v.digest, "signatures": v.signatures})
                );
            } else {
                println!("{} {}  {}", ui.paint("32", "valid"), a.reference, v.digest);
                for g in &v.signatures {
                    let notes: Vec<String> = g.annotations.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("  {}  signed by {} ({})  {}", g.digest, g.key, g.fingerprint, notes.join(" "));
                }
            }
            Ok(exit::OK)
        }
        Err(VerifyError::Invalid(why)) => {
            if a.json {
                println!("{}", serde_json::json!({"ref": a.reference, "valid": false, "reason": why}));
            } else {
                eprintln!("{} {}: {why}", ui.paint("31;1", "invalid"), a.reference);
            }
            Ok(exit::FAILED)
        }
        Err(VerifyError::Oci(e)) => Err(oci_error(e)),
    }
}

fn print_push(v: &serde_json::Value, json: bool, ui: &Ui) {
    if json {
        println!("{v}");
    } else {
        println!(
            "{} {}  {}  ({} blobs uploaded, {} already there)",
            ui.paint("32", "pushed"),
            v["ref"].as_str().unwrap_or(""),
            v["digest"].as_str().unwrap_or(""),
            v["uploaded"],
            v["skipped"]
        );
    }
}

fn inspect(root: &Path, what: &str, registry: &RegistryArgs, json: bool, ui: &Ui) -> Result<i32> {
    let local = if Path::new(what).is_absolute() { PathBuf::from(what) } else { root.join(what) };
    let v = if local.exists() {
        slipway_oci::layout::inspect(&local).map_err(oci_error)?
    } else {
        let r = slipway_oci::registry::Reference::parse(what).map_err(|_| {
            UserError::new(format!("`{what}` is neither a layout, an archive nor an image reference"))
                .hint("give a directory, a .tar, or host[:port]/name[:tag]")
        })?;
        let creds = credentials(&r.host, registry)?;
        let rt = runtime()?;
        let mut client = rt
            .block_on(slipway_oci::registry::Client::new(
                &r,
                registry.insecure_registry,
                creds,
                registry.registry_ca.as_deref(),
            ))
            .map_err(oci_error)?;
        rt.block_on(slipway_oci::registry::inspect(&r, &mut client)).map_err(oci_error)?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(exit::OK);
    }
    for img in v["images"].as_array().into_iter().flatten() {
        let sbom = if img["sbom"] == true { "  (SBOM attached)" } else { "" };
        println!(
            "{} {}{sbom}",
            ui.paint("1", img["tag"].as_str().unwrap_or("(untagged)")),
            img["digest"].as_str().unwrap_or("")
        );
        for p in img["platforms"].as_array().into_iter().flatten() {
            println!(
                "  {}  {}  {} layers, {:.1} MiB  user {}  entrypoint {}",
                p["platform"].as_str().unwrap_or(""),
                p["manifest"].as_str().unwrap_or(""),
                p["layers"],
                p["size"].as_u64().unwrap_or(0) as f64 / 1048576.0,
                p["user"].as_str().unwrap_or("root"),
                p["entrypoint"]
            );
            for (k, val) in p["labels"].as_object().into_iter().flatten() {
                println!("{}", ui.paint("2", &format!("    {k}={}", val.as_str().unwrap_or(""))));
            }
        }
    }
    Ok(exit::OK)
}
