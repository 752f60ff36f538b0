//! The build manifest (`dist/manifest.json`): what `slipway go build` wrote — every program
//! for every platform with its checksum and the facts read back from its build info. The Go
//! builder writes it; `slipway image build` and deploys read it. One type for all three.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// This machine as Go names platforms (`GOOS/GOARCH`: `linux/amd64`, `linux/arm64`).
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// Go's name for a machine that `uname -m` names (`x86_64` → `amd64`).
pub fn go_arch(uname_machine: &str) -> &str {
    match uname_machine {
        "x86_64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "i386" | "i686" => "386",
        "armv7l" | "armv6l" => "arm",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildManifest {
    #[serde(default)]
    pub module: String,
    pub version: String,
    #[serde(default)]
    pub go_version: String,
    #[serde(default)]
    pub vcs_revision: Option<String>,
    #[serde(default)]
    pub vcs_modified: Option<bool>,
    /// Sorted by file name. Empty for a module with no main package (a library).
    pub artifacts: Vec<BuildArtifact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildArtifact {
    /// The program's name (the main package's last path element).
    pub name: String,
    /// The main package's import path.
    #[serde(default)]
    pub package: String,
    pub os: String,
    pub arch: String,
    /// The file's name in the manifest's directory.
    pub file: String,
    #[serde(default)]
    pub size: u64,
    pub sha256: String,
    #[serde(default)]
    pub go_version: String,
    #[serde(default)]
    pub module: String,
    #[serde(default)]
    pub vcs_revision: Option<String>,
    #[serde(default)]
    pub vcs_modified: Option<bool>,
}

impl BuildArtifact {
    /// `os/arch`.
    pub fn platform(&self) -> String {
        format!("{}/{}", self.os, self.arch)
    }
}

impl BuildManifest {
    /// Reads a manifest's JSON text.
    pub fn parse(text: &str) -> Result<BuildManifest, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The programs the build holds, by name.
    pub fn programs(&self) -> BTreeSet<&str> {
        self.artifacts.iter().map(|a| a.name.as_str()).collect()
    }

    /// Every platform's binary of one program.
    pub fn program(&self, name: &str) -> Vec<&BuildArtifact> {
        self.artifacts.iter().filter(|a| a.name == name).collect()
    }

    /// The program to use when `wanted` is given, or the only one there is; else why not.
    pub fn choose_program(&self, wanted: Option<&str>) -> Result<String, ProgramChoice> {
        let names = self.programs();
        match wanted {
            Some(w) if names.contains(w) => Ok(w.to_string()),
            Some(w) => Err(ProgramChoice::Unknown {
                wanted: w.to_string(),
                have: names.iter().map(|s| s.to_string()).collect(),
            }),
            None => match names.len() {
                1 => Ok(names.iter().next().map(|s| s.to_string()).unwrap_or_default()),
                0 => Err(ProgramChoice::None),
                _ => Err(ProgramChoice::Several(names.iter().map(|s| s.to_string()).collect())),
            },
        }
    }
}

/// Why no program could be chosen from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramChoice {
    /// The build holds no program (a library module).
    None,
    Several(Vec<String>),
    Unknown {
        wanted: String,
        have: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_choose_their_program() {
        let m = BuildManifest::parse(
            r#"{"version":"v1","artifacts":[
                {"name":"api","os":"linux","arch":"amd64","file":"api_linux_amd64","sha256":"aa"},
                {"name":"api","os":"linux","arch":"arm64","file":"api_linux_arm64","sha256":"bb"},
                {"name":"cli","os":"linux","arch":"amd64","file":"cli_linux_amd64","sha256":"cc"}]}"#,
        )
        .unwrap();
        assert_eq!(m.program("api").len(), 2);
        assert_eq!(m.choose_program(Some("cli")), Ok("cli".into()));
        assert_eq!(m.choose_program(None), Err(ProgramChoice::Several(vec!["api".into(), "cli".into()])));
        let lib = BuildManifest::parse(r#"{"version":"v1","artifacts":[]}"#).unwrap();
        assert_eq!(lib.choose_program(None), Err(ProgramChoice::None));
    }
}
