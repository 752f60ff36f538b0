//! slipway's daemonless image builder: Go binaries in, OCI images out — reproducible layers,
//! configs, manifests and indexes ([`build`]), written as OCI layouts or archives that
//! `docker load` also reads ([`layout`]), with the binaries' platforms checked from their
//! headers ([`binary`]). No Docker daemon is involved.

pub mod binary;
pub mod build;
pub mod layout;

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Bad input: a missing or wrong binary, a malformed layout.
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Io(String),
}

impl OciError {
    pub(crate) fn io(context: &'static str) -> impl Fn(std::io::Error) -> OciError {
        move |e| OciError::Io(format!("{context}: {e}"))
    }
}
