//! slipway's own top-level sections of a pipeline file, validated (by slipway-pipeline's
//! compiler): `images:` for `slipway image build`, `go:` for `slipway go build`, `gates:` for
//! `slipway gate`. The crates that act on them take these types, so a section means the same
//! to the CLI and the server.

/// The `images:` section: what `slipway image build` makes and where it pushes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImagesConfig {
    /// The program (binary name) to package.
    pub name: Option<String>,
    /// Repository to push to, `host[:port]/path` (no tag).
    pub registry: Option<String>,
    /// Tags (templates allowed: `{{version}}`, `{{commit_short}}`, `{{branch}}`).
    pub tags: Vec<String>,
    pub user: Option<u32>,
    pub ports: Vec<String>,
    pub env: Vec<(String, String)>,
    pub tzdata: bool,
    /// `scratch`, a layout, an archive or a registry reference.
    pub base: Option<String>,
    /// Extra files: source (relative to the project) → absolute destination in the image.
    pub files: Vec<(String, String)>,
}

/// Whether `d` can be where extra files go in an image: absolute, not `/`, without `..`.
pub fn is_image_path(d: &str) -> bool {
    d.starts_with('/') && !d.split('/').any(|c| c == "..") && !d.trim_matches('/').is_empty()
}

/// The `go:` section: defaults for `slipway go build`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GoConfig {
    /// Package patterns holding the main packages to build.
    pub packages: Vec<String>,
    /// `os/arch` platforms.
    pub platforms: Vec<String>,
    /// The `-ldflags -X` target for the version, e.g. `main.version`.
    pub version_var: Option<String>,
    pub cgo: Option<bool>,
}

/// Quality gates (`gates:`): thresholds over the Go reports; `None` gates are off.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gates {
    pub coverage_total: Option<f64>,
    pub coverage_per_package: Option<f64>,
    pub coverage_no_decrease: bool,
    pub tests_failed: Option<u64>,
    pub pass_rate: Option<f64>,
    pub flaky: Option<u64>,
    pub vet_findings: Option<u64>,
    pub unformatted: Option<u64>,
    pub mod_tidy: bool,
    /// Bytes.
    pub binary_size: Option<u64>,
}

/// GitLab's slug of a ref or name (`CI_COMMIT_REF_SLUG`): lowercase, every character but
/// `a-z0-9` replaced by `-`, at most 63 bytes, no `-` at either end.
pub fn slug(s: &str) -> String {
    let mut out: String =
        s.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    out.truncate(63);
    out.trim_matches('-').to_string()
}
