//! slipway's Go toolchain intelligence: `go test -json` streams ([`test2json`]), coverage
//! profiles ([`cover`]), test reports ([`report`], [`junit`]) and the `go test` driver with
//! reruns of failed tests ([`gotest`]). It runs `go`, and asks git through slipway-git.

pub mod build;
pub mod changes;
pub mod cover;
pub mod gate;
pub mod gotest;
pub mod junit;
pub mod report;
pub mod test2json;
pub mod vet;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GoError {
    #[error("the Go toolchain is not installed (no `go` on PATH)")]
    GoMissing,
    #[error("{} is not inside a Go module (no go.mod here or above)", .0.display())]
    NotAModule(PathBuf),
    /// A go command could not do its work (not: tests that fail). `command` names it
    /// (`go build`, `go mod tidy -diff`, …), so every error says which one.
    #[error("`{command}` failed: {message}")]
    GoFailed { command: String, message: String },
    #[error("git: {0}")]
    Git(String),
    /// Bad input to a command (a version outside the grammar, say).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

/// The directory of the Go module `dir` is in (the nearest `go.mod` at or above it).
pub fn module_root(dir: &Path) -> Result<PathBuf, GoError> {
    dir.ancestors()
        .find(|d| d.join("go.mod").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| GoError::NotAModule(dir.to_path_buf()))
}

/// A go command's failure, named.
pub(crate) fn failed(command: &str, message: impl Into<String>) -> GoError {
    GoError::GoFailed { command: command.to_string(), message: message.into().trim().to_string() }
}

/// The Go toolchain's version (`go1.25.5`), refused when older than Go 1.21 (what slipway
/// needs: `go test -json` build events, `go mod tidy -diff`…): `Err(Some(version))` then,
/// `Err(None)` when there is no `go`.
pub fn toolchain(dir: &Path) -> Result<String, Option<String>> {
    let out =
        std::process::Command::new("go").args(["env", "GOVERSION"]).current_dir(dir).output().map_err(|_| None)?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let minor: Option<u32> =
        v.strip_prefix("go1.").and_then(|r| r.split(['.', 'r', 'b']).next()).and_then(|m| m.parse().ok());
    if minor.is_some_and(|m| m < 21) {
        return Err(Some(v));
    }
    Ok(v)
}
