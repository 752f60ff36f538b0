//! slipway's daemonless image builder: Go binaries in, OCI images out — reproducible layers,
//! configs, manifests and indexes ([`build`]), written as OCI layouts or archives that
//! `docker load` also reads ([`layout`]), with the binaries' platforms checked from their
//! headers ([`binary`]). No Docker daemon is involved.

pub mod binary;
pub mod build;
pub mod credentials;
pub mod keys;
pub mod layout;
pub mod registry;
pub mod request;
pub mod sbom;
pub mod signature;

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Bad input: a missing or wrong binary, a malformed layout.
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Io(String),
    /// The registry refused the credentials or the push.
    #[error("{0}")]
    Auth(String),
    /// The registry answered something unexpected.
    #[error("registry: {0}")]
    Registry(String),
    /// Bad input, and what to do about it.
    #[error("{message}")]
    Hinted { message: String, hint: String },
}

/// Docker's tag grammar: letters, digits, `_`, `.`, `-`; at most 128; not starting with `.`/`-`.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !tag.starts_with(['.', '-'])
}

impl OciError {
    pub(crate) fn io(context: &'static str) -> impl Fn(std::io::Error) -> OciError {
        move |e| OciError::Io(format!("{context}: {e}"))
    }
}
