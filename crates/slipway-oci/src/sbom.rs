//! The image's SBOM: an SPDX 2.3 JSON document listing the Go modules compiled into the
//! binaries (from their build info), kept beside the image as an OCI artifact whose `subject`
//! is the image — pushed through the referrers API, or under the `sha256-<hex>.sbom` tag when
//! the registry has none.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::build::{Blob, Image, canonical};

pub const MEDIA_SPDX: &str = "application/spdx+json";
pub const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// A Go module in the SBOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub path: String,
    pub version: String,
    /// go.sum's `h1:` hash (base64 of a SHA-256).
    pub sum: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SbomInput {
    pub name: String,
    pub main: Module,
    pub go_version: String,
    pub deps: Vec<Module>,
}

/// The tag an SBOM lives under when a registry has no referrers API (and in a layout).
pub fn fallback_tag(image_digest: &str) -> String {
    format!("sha256-{}.sbom", image_digest.strip_prefix("sha256:").unwrap_or(image_digest))
}

fn purl(m: &Module) -> String {
    format!("pkg:golang/{}@{}", m.path, m.version)
}

fn spdx_id(i: usize) -> String {
    format!("SPDXRef-Package-{i}")
}

/// The SPDX 2.3 document.
pub fn spdx(input: &SbomInput, image_digest: &str, created: &str) -> Vec<u8> {
    let mut packages = Vec::new();
    let mut relationships = vec![
        json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": spdx_id(0)}),
    ];
    for (i, m) in std::iter::once(&input.main).chain(&input.deps).enumerate() {
        let mut p = json!({
            "SPDXID": spdx_id(i),
            "name": m.path,
            "versionInfo": m.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl(m)}],
        });
        if let Some(hex) = m
            .sum
            .as_deref()
            .and_then(|s| s.strip_prefix("h1:"))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        {
            let hex: String = hex.iter().map(|b| format!("{b:02x}")).collect();
            p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": hex}]);
        }
        if i > 0 {
            relationships.push(json!({"spdxElementId": spdx_id(0), "relationshipType": "DEPENDS_ON", "relatedSpdxElement": spdx_id(i)}));
        }
        packages.push(p);
    }
    let hex = image_digest.strip_prefix("sha256:").unwrap_or(image_digest);
    canonical(&json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{} ({})", input.name, input.go_version),
        "documentNamespace": format!("https://slipway.invalid/spdx/{}/{hex}", input.name),
        "creationInfo": {"created": created, "creators": [format!("Tool: slipway-{}", env!("CARGO_PKG_VERSION"))]},
        "packages": packages,
        "relationships": relationships,
    }))
}

/// The SBOM as an OCI artifact manifest referring to the image.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub manifest: Blob,
    pub config: Blob,
    pub sbom: Blob,
}

impl Attachment {
    pub fn blobs(&self) -> [&Blob; 3] {
        [&self.config, &self.sbom, &self.manifest]
    }
}

fn blob(media: &'static str, bytes: Vec<u8>) -> Blob {
    Blob { media_type: media, digest: crate::build::sha256(&bytes), bytes }
}

pub fn attach(image: &Image, input: &SbomInput, created: &str) -> Attachment {
    let subject: Value =
        if image.platforms.len() == 1 { image.platforms[0].manifest.descriptor() } else { image.index.descriptor() };
    let sbom = blob(MEDIA_SPDX, spdx(input, image.digest(), created));
    let config = blob(MEDIA_EMPTY, b"{}".to_vec());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": crate::MEDIA_MANIFEST,
        "artifactType": MEDIA_SPDX,
        "config": config.descriptor(),
        "layers": [sbom.descriptor()],
        "subject": subject,
        "annotations": {"org.opencontainers.image.created": created},
    });
    Attachment { manifest: blob(crate::MEDIA_MANIFEST, canonical(&manifest)), config, sbom }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdx_lists_modules_with_checksums_and_purls() {
        let input = SbomInput {
            name: "app".into(),
            main: Module { path: "example.com/app".into(), version: "(devel)".into(), sum: None },
            go_version: "go1.25.5".into(),
            deps: vec![Module {
                path: "golang.org/x/text".into(),
                version: "v0.14.0".into(),
                sum: Some("h1:ScX5w1eTa3QqT8oi6+ziP7dTV1S2+ALU0bI+0zXKWiQ=".into()),
            }],
        };
        let doc: Value = serde_json::from_slice(&spdx(&input, "sha256:abc", "2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["packages"][1]["externalRefs"][0]["referenceLocator"], "pkg:golang/golang.org/x/text@v0.14.0");
        assert_eq!(doc["packages"][1]["checksums"][0]["checksumValue"].as_str().unwrap().len(), 64);
        assert_eq!(doc["relationships"][1]["relationshipType"], "DEPENDS_ON");
        assert_eq!(fallback_tag("sha256:abc"), "sha256-abc.sbom");
    }
}
