//! Registry credentials, found the way docker and its peers find them: given explicitly
//! (flags), else `SLIPWAY_REGISTRY_USER`/`SLIPWAY_REGISTRY_PASSWORD`, else `docker login`'s
//! `config.json` (`$DOCKER_CONFIG` or `~/.docker`) with its credential helpers
//! (`credHelpers` for the host, else `credsStore`), else anonymous. Used by pushes, pulls of
//! base images, and deploys of registry images alike. Credentials are never written anywhere.

use std::path::PathBuf;

use base64::Engine as _;

use crate::OciError;
use crate::registry::Credentials;

/// The credentials for `host`. `username`/`password` are what the user gave (a flag, stdin);
/// a username without a password takes `SLIPWAY_REGISTRY_PASSWORD`.
pub fn lookup(host: &str, username: Option<String>, password: Option<String>) -> Result<Option<Credentials>, OciError> {
    let user = username.or_else(|| std::env::var("SLIPWAY_REGISTRY_USER").ok().filter(|u| !u.is_empty()));
    if let Some(username) = user {
        let password = match password {
            Some(p) => p,
            None => std::env::var("SLIPWAY_REGISTRY_PASSWORD").map_err(|_| {
                OciError::Input(format!(
                    "no password for {username}: pass --password-stdin or set SLIPWAY_REGISTRY_PASSWORD"
                ))
            })?,
        };
        return Ok(Some(Credentials { username, password }));
    }
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
    let config: Option<serde_json::Value> = dir
        .and_then(|dir| std::fs::read_to_string(dir.join("config.json")).ok())
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(v) = config else { return Ok(None) };
    // A helper that says "credentials not found" falls through to the file, then anonymous access.
    if let Some(helper) = v["credHelpers"][host].as_str().or(v["credsStore"].as_str())
        && let Some(c) = from_helper(helper, host)?
    {
        return Ok(Some(c));
    }
    if let Some(auth) = v["auths"][host]["auth"].as_str()
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth)
        && let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':')
    {
        return Ok(Some(Credentials { username: u.to_string(), password: p.to_string() }));
    }
    Ok(None)
}

/// Asks `docker-credential-<helper> get` for the host's credentials.
fn from_helper(helper: &str, host: &str) -> Result<Option<Credentials>, OciError> {
    use std::io::Write as _;
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            OciError::Input(format!(
                "{program}: {e} (install the credential helper, or remove it from ~/.docker/config.json)"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| OciError::Io(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Ok(None);
    }
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| OciError::Input(format!("{program} answered something that is not JSON: {e}")))?;
    Ok(match (reply["Username"].as_str(), reply["Secret"].as_str()) {
        (Some(u), Some(p)) => Some(Credentials { username: u.to_string(), password: p.to_string() }),
        _ => None,
    })
}
