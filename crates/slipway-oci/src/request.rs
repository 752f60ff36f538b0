//! What `slipway image build` (and later the server) asks for, turned into an image: the
//! pipeline's `images:` section as defaults under the request's own options, the binaries
//! from a build manifest (or given by platform), labels from git, the base image, extra
//! files, the SBOM from the binaries' Go build info — then [`build`] writes the layout and
//! the archive. Reference templates (`{{version}}`, `{{commit_short}}`, `{{branch}}`) are
//! expanded by [`expand_reference`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use slipway_model::manifest::BuildManifest;
use slipway_model::sections::{ImagesConfig, is_image_path, slug};

use crate::OciError;
use crate::build::{BinaryInput, Image, ImageSpec};
use crate::registry::Credentials;

/// An image build, as options (every field optional is a default the section or the manifest
/// fills).
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The project (relative paths are relative to it).
    pub project: PathBuf,
    /// The manifest of `slipway go build` (used when `binaries` is empty).
    pub from: PathBuf,
    /// Binaries by platform, `os/arch=PATH` (replaces `from`).
    pub binaries: Vec<String>,
    pub name: Option<String>,
    pub tag: Option<String>,
    pub user: Option<u32>,
    pub args: Vec<String>,
    /// `NAME=VALUE`.
    pub env: Vec<String>,
    pub ports: Vec<String>,
    /// `KEY=VALUE`; the `org.opencontainers.image.*` ones are filled from git.
    pub labels: Vec<String>,
    pub workdir: Option<String>,
    /// `scratch`, a layout (`DIR` or `DIR:TAG`), an archive, or a registry reference.
    pub base: Option<String>,
    /// `SRC:DEST`.
    pub files: Vec<String>,
    pub gzip: bool,
    /// Where unchanged compressed layers are kept (`None`: compress every layer again).
    pub layer_cache: Option<PathBuf>,
    pub sbom: bool,
    pub tzdata: bool,
    pub ca_certs: bool,
    /// References to push to (templates allowed).
    pub push: Vec<String>,
}

impl BuildRequest {
    /// Fills what the request leaves open from the pipeline's `images:` section; the tags it
    /// names become pushes to its registry. `latest` follows the default branch, as
    /// docker/metadata-action does: returns a notice for each tag it skipped.
    pub fn with_section(&mut self, c: &ImagesConfig, on_default_branch: bool) -> Vec<String> {
        let mut notices = Vec::new();
        self.name = self.name.take().or_else(|| c.name.clone());
        self.user = self.user.or(c.user);
        if self.ports.is_empty() {
            self.ports = c.ports.clone();
        }
        if self.env.is_empty() {
            self.env = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        }
        self.tzdata |= c.tzdata;
        if self.files.is_empty() {
            self.files = c.files.iter().map(|(src, dest)| format!("{src}:{dest}")).collect();
        }
        self.base = self.base.take().or_else(|| c.base.clone());
        if self.push.is_empty()
            && let Some(reg) = &c.registry
        {
            let tags = if c.tags.is_empty() { vec!["{{version}}".into(), "latest".into()] } else { c.tags.clone() };
            for t in tags {
                if t == "latest" && !on_default_branch {
                    notices.push(format!("{reg}:latest is pushed from the default branch only; skipped"));
                } else {
                    self.push.push(format!("{reg}:{t}"));
                }
            }
        }
        notices
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.project.join(p) }
    }
}

/// What [`build`] made.
pub struct Built {
    pub image: Image,
    pub name: String,
    pub tag: String,
    /// The SBOM attached to the image, when there is one.
    pub sbom: Option<crate::sbom::Attachment>,
    /// Why there is no SBOM, when one was asked for.
    pub no_sbom: Option<String>,
    /// The `created` time written into the image (Unix seconds).
    pub created: i64,
}

/// The binaries a request means, with the program's name and (from a manifest) its version
/// and VCS revision.
struct Program {
    binaries: Vec<BinaryInput>,
    name: String,
    version: Option<String>,
    revision: Option<String>,
}

fn binaries(req: &BuildRequest) -> Result<Program, OciError> {
    let mut out = Vec::new();
    if req.binaries.is_empty() {
        let from = req.path(&req.from);
        let text = std::fs::read_to_string(&from).map_err(|_| OciError::Hinted {
            message: format!("no binaries: {} does not exist", req.from.display()),
            hint: "run `slipway go build` first, or name binaries with --binary linux/amd64=PATH".into(),
        })?;
        let m = BuildManifest::parse(&text)
            .map_err(|e| OciError::Input(format!("{} is not a build manifest: {e}", from.display())))?;
        let name = match m.choose_program(req.name.as_deref()) {
            Ok(n) => n,
            Err(slipway_model::manifest::ProgramChoice::None) => {
                return Err(OciError::Hinted {
                    message: format!("{} lists no binaries", from.display()),
                    hint: "a module without a main package (a library) has nothing to put in an image".into(),
                });
            }
            Err(slipway_model::manifest::ProgramChoice::Several(names)) => {
                return Err(OciError::Hinted {
                    message: format!("{} holds several programs: {}", from.display(), names.join(", ")),
                    hint: "choose one with --name".into(),
                });
            }
            Err(slipway_model::manifest::ProgramChoice::Unknown { wanted, .. }) => {
                return Err(OciError::Input(format!("no binary named `{wanted}` in {}", from.display())));
            }
        };
        for a in m.program(&name) {
            out.push(BinaryInput {
                os: a.os.clone(),
                arch: a.arch.clone(),
                path: from.parent().unwrap_or(&req.project).join(&a.file),
            });
        }
        return Ok(Program { binaries: out, name, version: Some(m.version.clone()), revision: m.vcs_revision.clone() });
    }
    let mut name = req.name.clone();
    for b in &req.binaries {
        let (plat, path) =
            b.split_once('=').ok_or_else(|| OciError::Input(format!("--binary `{b}` is not os/arch=PATH")))?;
        let (os, arch) =
            plat.split_once('/').ok_or_else(|| OciError::Input(format!("--binary `{b}`: `{plat}` is not os/arch")))?;
        let path = req.path(Path::new(path));
        if name.is_none() {
            name = path.file_stem().map(|s| s.to_string_lossy().split('_').next().unwrap_or("app").to_string());
        }
        out.push(BinaryInput { os: os.into(), arch: arch.into(), path });
    }
    Ok(Program { binaries: out, name: name.unwrap_or_else(|| "app".into()), version: None, revision: None })
}

fn pair(s: &str, flag: &str) -> Result<(String, String), OciError> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| OciError::Input(format!("{flag} `{s}` is not KEY=VALUE")))
}

/// `SRC:DEST` of `--file`: SRC relative to the project, DEST absolute and without `..`.
fn extra_file(root: &Path, f: &str) -> Result<(PathBuf, String), OciError> {
    let Some((src, dest)) = f.rsplit_once(':').filter(|(s, d)| !s.is_empty() && !d.is_empty()) else {
        return Err(OciError::Hinted {
            message: format!("--file `{f}`: expected SRC:DEST"),
            hint: "e.g. --file kodata:/var/run/ko (a file or directory of the project, and where it goes)".into(),
        });
    };
    if !is_image_path(dest) {
        return Err(OciError::Input(format!(
            "--file `{f}`: the destination `{dest}` must be an absolute path in the image, without `..`"
        )));
    }
    let path = root.join(src);
    if !path.exists() {
        return Err(OciError::Input(format!("--file `{f}`: {} does not exist", path.display())));
    }
    Ok((path, dest.to_string()))
}

/// Loads a base image: a layout directory (optionally `:tag`), an archive, or a registry
/// reference (pulled with `credentials`).
pub async fn load_base(
    root: &Path,
    base: &str,
    registry: &crate::registry::Options,
    credentials: impl Fn(&str) -> Result<Option<Credentials>, OciError>,
) -> Result<Vec<crate::build::BasePlatform>, OciError> {
    let local = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { root.join(p) };
    let (path, tag) = match base.rsplit_once(':') {
        Some((p, t)) if local(p).is_dir() => (local(p), Some(t)),
        _ => (local(base), None),
    };
    if path.is_dir() {
        let store = crate::layout::Store::open(&path)?;
        return crate::layout::base_from_store(&store, tag);
    }
    if path.is_file() {
        return crate::layout::base_from_archive(&path);
    }
    let r = crate::registry::Reference::parse(base).map_err(|_| OciError::Hinted {
        message: format!("--base `{base}` is neither scratch, a layout, an archive nor an image reference"),
        hint: "e.g. --base dist/base, --base base.tar, --base 127.0.0.1:5000/library/base:1".into(),
    })?;
    let mut client =
        crate::registry::Client::new(&r, registry.insecure, credentials(&r.host)?, registry.ca.as_deref()).await?;
    crate::registry::pull_base(&r, &mut client).await
}

/// The modules compiled into the binaries, from their build info (`go version -m`).
fn sbom_input(root: &Path, name: &str, binaries: &[BinaryInput]) -> Result<crate::sbom::SbomInput, String> {
    use crate::sbom::{Module, SbomInput};
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

/// Builds the image a request asks for (nothing is written yet: see [`write`]).
pub fn build(req: &BuildRequest, base: Vec<crate::build::BasePlatform>) -> Result<Built, OciError> {
    let Program { binaries, name, version, revision } = binaries(req)?;
    let tag = req.tag.clone().or(version).unwrap_or_else(|| "latest".into());
    if !crate::valid_tag(&tag) {
        return Err(OciError::Hinted {
            message: format!("`{tag}` is not a valid image tag"),
            hint: "tags use letters, digits, `_`, `.` and `-` (at most 128), not starting with `.` or `-`".into(),
        });
    }
    // The commit (time and hash) and the origin, from git.
    let (head, origin) = slipway_git::commit_and_origin(&req.project);
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
    for l in &req.labels {
        let (k, v) = pair(l, "--label")?;
        labels.insert(k, v);
    }
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let zi = Path::new("/usr/share/zoneinfo");
    if req.tzdata && !zi.is_dir() {
        return Err(OciError::Hinted {
            message: "--tzdata: this host has no /usr/share/zoneinfo".into(),
            hint: "install the tzdata package".into(),
        });
    }
    let spec = ImageSpec {
        name: name.clone(),
        binaries,
        user: req.user.unwrap_or(65532),
        ca_certs: (req.ca_certs && ca.is_file()).then(|| ca.to_path_buf()),
        zoneinfo: req.tzdata.then(|| zi.to_path_buf()),
        args: req.args.clone(),
        env: req.env.iter().map(|e| pair(e, "--env")).collect::<Result<_, _>>()?,
        workdir: req.workdir.clone(),
        ports: req.ports.iter().map(|p| if p.contains('/') { p.clone() } else { format!("{p}/tcp") }).collect(),
        labels,
        created,
        compress: req.gzip,
        layer_cache: req.layer_cache.clone(),
        files: req.files.iter().map(|f| extra_file(&req.project, f)).collect::<Result<_, _>>()?,
        base,
    };
    let image = crate::build::build(&spec)?;
    let created_rfc = image.platforms.first().and_then(|p| {
        serde_json::from_slice::<serde_json::Value>(&p.config.bytes)
            .ok()
            .and_then(|c| c["created"].as_str().map(str::to_string))
    });
    let (sbom, no_sbom) = if !req.sbom {
        (None, None)
    } else {
        match sbom_input(&req.project, &name, &spec.binaries) {
            Ok(input) => (
                Some(crate::sbom::attach(&image, &input, created_rfc.as_deref().unwrap_or("1970-01-01T00:00:00Z"))),
                None,
            ),
            Err(why) => (None, Some(why)),
        }
    };
    Ok(Built { image, name, tag, sbom, no_sbom, created })
}

/// Writes a built image as an OCI layout at `layout` (with its SBOM) and/or as an archive at
/// `tarball` that `docker load` reads.
pub fn write(built: &Built, layout: Option<&Path>, tarball: Option<&Path>) -> Result<(), OciError> {
    if let Some(l) = layout {
        crate::layout::write_layout(&built.image, l, &built.tag)?;
        if let Some(att) = &built.sbom {
            crate::layout::write_attachment(att, l, built.image.digest())?;
        }
    }
    if let Some(t) = tarball {
        if let Some(parent) = t.parent() {
            std::fs::create_dir_all(parent).map_err(OciError::io("creating the archive's directory"))?;
        }
        let reference = format!("{}:{}", built.name, built.tag);
        crate::layout::write_tarball(&built.image, t, &reference, None, built.created.max(0) as u64)?;
    }
    Ok(())
}

/// Expands `{{version}}`, `{{commit_short}}` and `{{branch}}` in a reference.
pub fn expand_reference(root: &Path, reference: &str, version: &str) -> Result<String, OciError> {
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
            .ok_or_else(|| OciError::Input(format!("`{reference}`: unclosed `{{{{`")))?;
        let name = rest[start + 2..end].trim();
        let value = match name {
            "version" => version.to_string(),
            "commit_short" => slipway_git::output(root, &["rev-parse", "--short=8", "HEAD"]).unwrap_or_default(),
            "branch" => std::env::var("CI_COMMIT_BRANCH")
                .ok()
                .or_else(|| slipway_git::output(root, &["symbolic-ref", "-q", "--short", "HEAD"]))
                .map(|b| slug(&b))
                .unwrap_or_default(),
            other => {
                return Err(OciError::Hinted {
                    message: format!("`{reference}`: unknown template `{{{{{other}}}}}`"),
                    hint: "templates: {{version}}, {{commit_short}}, {{branch}}".into(),
                });
            }
        };
        if value.is_empty() {
            return Err(OciError::Input(format!(
                "`{reference}`: `{{{{{name}}}}}` is empty here (no git commit or branch)"
            )));
        }
        out.push_str(&value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}
