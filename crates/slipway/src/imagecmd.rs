//! `slipway image build|push|inspect`: container images straight from the binaries of
//! `slipway go build`, without a Docker daemon, as an OCI layout and/or an archive that
//! `docker load` reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use slipway_oci::OciError;
use slipway_oci::build::{BinaryInput, ImageSpec};

use crate::ui::{Ui, UserError, exit};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build an image from Go binaries (dist/manifest.json of `slipway go build`, or --binary).
    Build(Box<ImageBuildArgs>),
    /// Push an image from an OCI layout to a registry (blobs first, the tag last).
    Push(PushArgs),
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
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print one JSON object: the digest, each platform's manifest digest, the outputs.
    #[arg(long)]
    pub json: bool,
}

fn oci_error(e: OciError) -> anyhow::Error {
    match e {
        OciError::Input(m) => UserError::new(m).into(),
        OciError::Io(m) => anyhow::anyhow!(m),
        OciError::Auth(m) => UserError::new(m)
            .hint("give credentials with --username and --password-stdin (or SLIPWAY_REGISTRY_USER/SLIPWAY_REGISTRY_PASSWORD, or docker login)")
            .into(),
        OciError::Registry(m) => anyhow::anyhow!(m),
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

/// `SRC:DEST` of `--file`: SRC relative to the project, DEST absolute and without `..`.
fn extra_file(root: &Path, f: &str) -> Result<(PathBuf, String)> {
    let Some((src, dest)) = f.rsplit_once(':').filter(|(s, d)| !s.is_empty() && !d.is_empty()) else {
        return Err(UserError::new(format!("--file `{f}`: expected SRC:DEST"))
            .hint("e.g. --file kodata:/var/run/ko (a file or directory of the project, and where it goes)")
            .into());
    };
    if !slipway_pipeline::model::is_image_path(dest) {
        return Err(UserError::new(format!(
            "--file `{f}`: the destination `{dest}` must be an absolute path in the image, without `..`"
        ))
        .into());
    }
    let path = root.join(src);
    if !path.exists() {
        return Err(UserError::new(format!("--file `{f}`: {} does not exist", path.display())).into());
    }
    Ok((path, dest.to_string()))
}

/// Expands `{{version}}`, `{{commit_short}}` and `{{branch}}` in a reference.
fn expand_ref(root: &Path, reference: &str, version: &str) -> Result<String> {
    if !reference.contains("{{") {
        return Ok(reference.to_string());
    }
    let mut out = String::new();
    let mut rest = reference;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .map(|e| start + e)
            .ok_or_else(|| UserError::new(format!("`{reference}`: unclosed `{{{{`")))?;
        let name = rest[start + 2..end].trim();
        let value = match name {
            "version" => version.to_string(),
            "commit_short" => slipway_git::output(root, &["rev-parse", "--short=8", "HEAD"]).unwrap_or_default(),
            "branch" => std::env::var("CI_COMMIT_BRANCH")
                .ok()
                .or_else(|| slipway_git::output(root, &["symbolic-ref", "-q", "--short", "HEAD"]))
                .map(|b| slipway_pipeline::vars::slug(&b))
                .unwrap_or_default(),
            other => {
                return Err(UserError::new(format!("`{reference}`: unknown template `{{{{{other}}}}}`"))
                    .hint("templates: {{version}}, {{commit_short}}, {{branch}}")
                    .into());
            }
        };
        if value.is_empty() {
            return Err(UserError::new(format!(
                "`{reference}`: `{{{{{name}}}}}` is empty here (no git commit or branch)"
            ))
            .into());
        }
        out.push_str(&value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
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
    let mut client = slipway_oci::registry::Client::new(&r, args.insecure_registry, creds, args.registry_ca.as_deref())
        .map_err(oci_error)?;
    // Repositories this command already pushed to on the same registry, and --mount-from.
    client.mount_from = args.mount_from.clone();
    let pushed_here: Vec<String> =
        PUSHED.with(|p| p.borrow().iter().filter(|(h, _)| *h == r.host).map(|(_, repo)| repo.clone()).collect());
    client.mount_from.extend(pushed_here);
    client.progress = progress_bars();
    let store = slipway_oci::layout::Store::open(layout).map_err(oci_error)?;
    let report = slipway_oci::registry::push(&store, pick, &r, &mut client).map_err(oci_error)?;
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

fn pair(s: &str, flag: &str) -> Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| UserError::new(format!("{flag} `{s}` is not KEY=VALUE")).into())
}

/// Loads `--base`: a layout directory (optionally `:tag`), an archive, or a registry reference.
fn load_base(root: &Path, base: &str, registry: &RegistryArgs) -> Result<Vec<slipway_oci::build::BasePlatform>> {
    let local = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { root.join(p) };
    let (path, tag) = match base.rsplit_once(':') {
        Some((p, t)) if local(p).is_dir() => (local(p), Some(t)),
        _ => (local(base), None),
    };
    if path.is_dir() {
        let store = slipway_oci::layout::Store::open(&path).map_err(oci_error)?;
        return slipway_oci::layout::base_from_store(&store, tag).map_err(oci_error);
    }
    if path.is_file() {
        return slipway_oci::layout::base_from_archive(&path).map_err(oci_error);
    }
    let r = slipway_oci::registry::Reference::parse(base).map_err(|_| {
        UserError::new(format!("--base `{base}` is neither scratch, a layout, an archive nor an image reference"))
            .hint("e.g. --base dist/base, --base base.tar, --base 127.0.0.1:5000/library/base:1")
    })?;
    let creds = credentials(&r.host, registry)?;
    let mut client =
        slipway_oci::registry::Client::new(&r, registry.insecure_registry, creds, registry.registry_ca.as_deref())
            .map_err(oci_error)?;
    slipway_oci::registry::pull_base(&r, &mut client).map_err(oci_error)
}

/// The modules compiled into the binaries, from their build info (`go version -m`).
fn sbom_input(
    root: &Path,
    name: &str,
    binaries: &[BinaryInput],
) -> std::result::Result<slipway_oci::sbom::SbomInput, String> {
    use slipway_oci::sbom::{Module, SbomInput};
    let mut input: Option<SbomInput> = None;
    for b in binaries {
        let info = slipway_golang::build::read_build_info(root, &b.path).map_err(|e| e.to_string())?;
        if info.module.is_empty() {
            return Err(format!("{} carries no Go build info", b.path.display()));
        }
        let entry = input.get_or_insert_with(|| SbomInput {
            name: name.to_string(),
            main: Module { path: info.module.clone(), version: info.module_version.clone(), sum: None },
            go_version: info.go_version.clone(),
            deps: Vec::new(),
        });
        for d in info.deps {
            let m = Module { path: d.path, version: d.version, sum: d.sum };
            if !entry.deps.contains(&m) {
                entry.deps.push(m);
            }
        }
    }
    let mut input = input.ok_or("no binaries")?;
    input.deps.sort_by(|a, b| (&a.path, &a.version).cmp(&(&b.path, &b.version)));
    Ok(input)
}

pub fn run(root: &Path, cmd: ImageCommand, ui: &Ui) -> Result<i32> {
    match cmd {
        ImageCommand::Build(a) => build(root, *a, ui),
        ImageCommand::Inspect { path, registry, json } => inspect(root, &path, &registry, json, ui),
        ImageCommand::Push(a) => push(root, a, ui),
    }
}

fn build(root: &Path, mut a: ImageBuildArgs, ui: &Ui) -> Result<i32> {
    let started = std::time::Instant::now();
    // The pipeline file's `images:` section gives the defaults; flags win.
    let mut configured = None;
    if crate::project::find_source(root, None).is_ok() {
        configured = crate::project::load(root, None, ui)?.pipeline.images;
    }
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
            if a.name.is_none() {
                a.name = c.name.clone();
            }
            if a.user.is_none() {
                a.user = c.user;
            }
            if a.port.is_empty() {
                a.port = c.ports.clone();
            }
            if a.env.is_empty() {
                a.env = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            }
            a.tzdata |= c.tzdata;
            if a.file.is_empty() {
                a.file = c.files.iter().map(|(src, dest)| format!("{src}:{dest}")).collect();
            }
            if a.base.is_none() {
                a.base = c.base.clone();
            }
            if a.push.is_empty()
                && let Some(reg) = &c.registry
            {
                let tags = if c.tags.is_empty() { vec!["{{version}}".into(), "latest".into()] } else { c.tags.clone() };
                // `latest` follows the default branch, as docker/metadata-action does: a
                // feature branch must not move what `docker pull` gets by default.
                let default_branch = crate::gatecmd::on_default_branch(root);
                for t in tags {
                    if t == "latest" && !default_branch {
                        ui.notice(&format!("{reg}:latest is pushed from the default branch only; skipped"));
                    } else {
                        a.push.push(format!("{reg}:{t}"));
                    }
                }
            }
        }
    }
    let mut binaries = Vec::new();
    let mut name = a.name.clone();
    let mut version = None;
    let mut revision = None;
    if a.binary.is_empty() {
        let from = if a.from.is_absolute() { a.from.clone() } else { root.join(&a.from) };
        let text = std::fs::read_to_string(&from).map_err(|_| {
            UserError::new(format!("no binaries: {} does not exist", a.from.display()))
                .hint("run `slipway go build` first, or name binaries with --binary linux/amd64=PATH")
        })?;
        let m: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| UserError::new(format!("{} is not a build manifest: {e}", from.display())))?;
        let arts = m["artifacts"].as_array().cloned().unwrap_or_default();
        let names: std::collections::BTreeSet<String> =
            arts.iter().filter_map(|x| x["name"].as_str().map(str::to_string)).collect();
        let chosen = match (&name, names.len()) {
            (Some(n), _) => n.clone(),
            (None, 1) => names.iter().next().cloned().unwrap_or_default(),
            (None, 0) => return Err(UserError::new(format!("{} lists no binaries", from.display())).into()),
            (None, _) => {
                return Err(UserError::new(format!(
                    "{} holds several programs: {}",
                    from.display(),
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ))
                .hint("choose one with --name")
                .into());
            }
        };
        for x in arts.iter().filter(|x| x["name"] == chosen.as_str()) {
            binaries.push(BinaryInput {
                os: x["os"].as_str().unwrap_or("").into(),
                arch: x["arch"].as_str().unwrap_or("").into(),
                path: from.parent().unwrap_or(root).join(x["file"].as_str().unwrap_or("")),
            });
        }
        if binaries.is_empty() {
            return Err(UserError::new(format!("no binary named `{chosen}` in {}", from.display())).into());
        }
        name = Some(chosen);
        version = m["version"].as_str().map(str::to_string);
        revision = m["vcs_revision"].as_str().map(str::to_string);
    } else {
        for b in &a.binary {
            let (plat, path) =
                b.split_once('=').ok_or_else(|| UserError::new(format!("--binary `{b}` is not os/arch=PATH")))?;
            let (os, arch) = plat
                .split_once('/')
                .ok_or_else(|| UserError::new(format!("--binary `{b}`: `{plat}` is not os/arch")))?;
            let path = if Path::new(path).is_absolute() { PathBuf::from(path) } else { root.join(path) };
            if name.is_none() {
                name = path.file_stem().map(|s| s.to_string_lossy().split('_').next().unwrap_or("app").to_string());
            }
            binaries.push(BinaryInput { os: os.into(), arch: arch.into(), path });
        }
    }
    let name = name.unwrap_or_else(|| "app".into());
    let tag = a.tag.clone().or(version.clone()).unwrap_or_else(|| "latest".into());
    if !slipway_oci::valid_tag(&tag) {
        return Err(UserError::new(format!("`{tag}` is not a valid image tag"))
            .hint("tags use letters, digits, `_`, `.` and `-` (at most 128), not starting with `.` or `-`")
            .into());
    }
    // The commit (time and hash) and the origin, from two git processes run side by side.
    let (head, origin) = slipway_git::commit_and_origin(root);
    let (commit_time, commit) = match head {
        Some((t, h)) => (Some(t), Some(h)),
        None => (None, None),
    };
    let created =
        std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<i64>().ok()).or(commit_time).unwrap_or(0);
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    if let Some(src) = origin {
        labels.insert("org.opencontainers.image.source".into(), src);
    }
    if let Some(rev) = revision.or(commit) {
        labels.insert("org.opencontainers.image.revision".into(), rev);
    }
    labels.insert("org.opencontainers.image.version".into(), tag.clone());
    labels.insert("org.opencontainers.image.title".into(), name.clone());
    for l in &a.label {
        let (k, v) = pair(l, "--label")?;
        labels.insert(k, v);
    }
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let zi = Path::new("/usr/share/zoneinfo");
    if a.tzdata && !zi.is_dir() {
        return Err(UserError::new("--tzdata: this host has no /usr/share/zoneinfo")
            .hint("install the tzdata package")
            .into());
    }
    let spec = ImageSpec {
        name: name.clone(),
        binaries,
        user: a.user.unwrap_or(65532),
        ca_certs: (!a.no_ca_certs && ca.is_file()).then(|| ca.to_path_buf()),
        zoneinfo: a.tzdata.then(|| zi.to_path_buf()),
        args: a.args.clone(),
        env: a.env.iter().map(|e| pair(e, "--env")).collect::<Result<_>>()?,
        workdir: a.workdir.clone(),
        ports: a.port.iter().map(|p| if p.contains('/') { p.clone() } else { format!("{p}/tcp") }).collect(),
        labels,
        created,
        compress: a.compression == "gzip",
        layer_cache: if a.no_cache { None } else { layer_cache_dir(root) },
        files: a.file.iter().map(|f| extra_file(root, f)).collect::<Result<_>>()?,
        base: match a.base.as_deref() {
            None | Some("scratch") => Vec::new(),
            Some(b) => load_base(root, b, &a.registry)?,
        },
    };
    let image = slipway_oci::build::build(&spec).map_err(oci_error)?;
    let created_rfc = image.platforms.first().and_then(|p| {
        serde_json::from_slice::<serde_json::Value>(&p.config.bytes)
            .ok()
            .and_then(|c| c["created"].as_str().map(str::to_string))
    });
    let attachment = if a.no_sbom {
        None
    } else {
        match sbom_input(root, &name, &spec.binaries) {
            Ok(input) => Some(slipway_oci::sbom::attach(
                &image,
                &input,
                created_rfc.as_deref().unwrap_or("1970-01-01T00:00:00Z"),
            )),
            Err(why) => {
                if !a.json {
                    eprintln!("{}", ui.paint("33", &format!("note: no SBOM: {why}")));
                }
                None
            }
        }
    };
    let layout = match (&a.layout, &a.tarball) {
        (None, None) => Some(root.join("dist/image")),
        (Some(l), _) => Some(if l.is_absolute() { l.clone() } else { root.join(l) }),
        (None, Some(_)) => None,
    };
    if let Some(l) = &layout {
        slipway_oci::layout::write_layout(&image, l, &tag).map_err(oci_error)?;
        if let Some(att) = &attachment {
            slipway_oci::layout::write_attachment(att, l, image.digest()).map_err(oci_error)?;
        }
    }
    if let Some(t) = &a.tarball {
        let t = if t.is_absolute() { t.clone() } else { root.join(t) };
        if let Some(parent) = t.parent() {
            std::fs::create_dir_all(parent)?;
        }
        slipway_oci::layout::write_tarball(&image, &t, &format!("{name}:{tag}"), None, created.max(0) as u64)
            .map_err(oci_error)?;
    }
    let mut pushed = Vec::new();
    if !a.push.is_empty() {
        let dir = match &layout {
            Some(l) => l.clone(),
            None => {
                let tmp = root.join(".slipway/image-push");
                let _ = std::fs::remove_dir_all(&tmp);
                slipway_oci::layout::write_layout(&image, &tmp, &tag).map_err(oci_error)?;
                if let Some(att) = &attachment {
                    slipway_oci::layout::write_attachment(att, &tmp, image.digest()).map_err(oci_error)?;
                }
                tmp
            }
        };
        for reference in &a.push {
            let reference = expand_ref(root, reference, &tag)?;
            pushed.push(push_to(&dir, slipway_oci::registry::Pick::Tag(&tag), &reference, &a.registry)?);
        }
    }
    let platforms: Vec<serde_json::Value> = image
        .platforms
        .iter()
        .map(|p| serde_json::json!({"platform": format!("{}/{}", p.os, p.arch), "digest": p.manifest.digest}))
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "built": true,
                "name": name,
                "tag": tag,
                "digest": image.digest(),
                "platforms": platforms,
                "layout": layout.map(|l| l.display().to_string()),
                "tarball": a.tarball.as_ref().map(|t| t.display().to_string()),
                "pushed": pushed,
            })
        );
    } else {
        println!("{} {name}:{tag}  {}", ui.paint("32", "built"), image.digest());
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
        let reference = expand_ref(root, reference, a.tag.as_deref().unwrap_or(""))?;
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
        let mut client =
            slipway_oci::registry::Client::new(&r, registry.insecure_registry, creds, registry.registry_ca.as_deref())
                .map_err(oci_error)?;
        slipway_oci::registry::inspect(&r, &mut client).map_err(oci_error)?
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
