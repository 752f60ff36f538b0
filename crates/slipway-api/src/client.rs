//! [`AgentClient`]: the typed client of the agent's Unix-socket API. One connection per call
//! (calls are rare and the socket is local); errors say whether the agent is not running.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use slipway_net::HttpMethod as Method;

use crate::{AgentInfo, EnvSpec, EnvStatus, ErrorBody};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no agent answers at {}", .socket.display())]
    NotRunning { socket: PathBuf },
    #[error("{error}")]
    Status { status: u16, error: String, hint: Option<String> },
    #[error("talking to the agent at {}: {message}", .socket.display())]
    Transport { socket: PathBuf, message: String },
}

/// How long a call may wait for the agent's answer.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    pub fn new(socket: impl Into<PathBuf>) -> AgentClient {
        AgentClient { socket: socket.into() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn info(&self) -> Result<AgentInfo, ApiError> {
        self.call(Method::GET, "/v1/agent", None::<&()>).await
    }

    pub async fn envs(&self) -> Result<Vec<EnvStatus>, ApiError> {
        self.call(Method::GET, "/v1/envs", None::<&()>).await
    }

    /// `None` when the agent runs nothing for this environment.
    pub async fn env(&self, name: &str) -> Result<Option<EnvStatus>, ApiError> {
        match self.call(Method::GET, &format!("/v1/envs/{name}"), None::<&()>).await {
            Ok(s) => Ok(Some(s)),
            Err(ApiError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the environment's desired state; answers once the agent accepted it (entry
    /// points bound, instances being started or stopped).
    pub async fn apply(&self, name: &str, spec: &EnvSpec) -> Result<EnvStatus, ApiError> {
        self.call(Method::PUT, &format!("/v1/envs/{name}"), Some(spec)).await
    }

    /// Makes the agent's Docker Engine hold image `sha256:<id>`, loading it from the archive in
    /// the agent's data directory (`artifacts/images/<id>.tar`) when it does not; true when it loaded.
    pub async fn load_image(&self, id: &str) -> Result<bool, ApiError> {
        let v: serde_json::Value = self.call(Method::POST, &format!("/v1/images/{id}"), None::<&()>).await?;
        Ok(v["loaded"].as_bool().unwrap_or(false))
    }

    /// What the agent was asked to run for the environment (secret values left out);
    /// `None` when it runs nothing for it.
    pub async fn spec(&self, name: &str) -> Result<Option<EnvSpec>, ApiError> {
        match self.call(Method::GET, &format!("/v1/envs/{name}/spec"), None::<&()>).await {
            Ok(s) => Ok(Some(s)),
            Err(ApiError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a release's binary to the agent's artifact store (`artifacts/sha256/<sha256>` in
    /// its data directory), where the agent checks its digest; false when it was there already.
    pub async fn put_artifact(&self, sha256: &str, file: &Path) -> Result<bool, ApiError> {
        self.put_file(&format!("/v1/artifacts/{sha256}"), file).await
    }

    /// Sends an image archive (`artifacts/images/<id>.tar`; `file_sha256` is the archive's own
    /// digest, which the agent checks); false when it was there already.
    pub async fn put_image_archive(&self, id: &str, file_sha256: &str, file: &Path) -> Result<bool, ApiError> {
        self.put_file(&format!("/v1/images/{id}/archive?sha256={file_sha256}"), file).await
    }

    async fn put_file(&self, path: &str, file: &Path) -> Result<bool, ApiError> {
        // Asked first (`GET` of the same path), so a file the agent holds is not sent again.
        let have: serde_json::Value = self.call(Method::GET, path, None::<&()>).await?;
        if have["present"].as_bool() == Some(true) {
            return Ok(false);
        }
        let call = slipway_net::unix_file(&self.socket, Method::PUT, path, file);
        let resp = tokio::time::timeout(LOAD_TIMEOUT, call)
            .await
            .map_err(|_| self.transport(format!("sending {} took over {}s", file.display(), LOAD_TIMEOUT.as_secs())))?
            .map_err(|e| self.failed(e))?;
        self.answer(resp).map(|_| true)
    }

    /// Stops everything of the environment.
    pub async fn remove(&self, name: &str) -> Result<(), ApiError> {
        let _: serde_json::Value = self.call(Method::DELETE, &format!("/v1/envs/{name}"), None::<&()>).await?;
        Ok(())
    }

    /// The last `lines` lines of the environment's instance logs, oldest first.
    pub async fn logs(&self, name: &str, lines: usize) -> Result<String, ApiError> {
        let body = self.raw(Method::GET, &format!("/v1/envs/{name}/logs?lines={lines}"), None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("wire types serialize"));
        let bytes = self.raw(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.transport(format!("reading the answer to {path}: {e}")))
    }

    async fn raw(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>, ApiError> {
        // Loading an image archive into the Docker Engine takes as long as it takes; nothing
        // else the agent does should keep a command waiting.
        let limit = if path.starts_with("/v1/images/") { LOAD_TIMEOUT } else { CALL_TIMEOUT };
        let call = slipway_net::unix(&self.socket, method, path, body.unwrap_or_default());
        let resp = tokio::time::timeout(limit, call)
            .await
            .map_err(|_| {
                self.transport(format!(
                    "no answer to {path} within {}s: the agent is stuck or overloaded (see its log, `agent/agent.log` in the data directory)",
                    limit.as_secs()
                ))
            })?
            .map_err(|e| self.failed(e))?;
        self.answer(resp)
    }

    fn failed(&self, e: slipway_net::Error) -> ApiError {
        match e {
            slipway_net::Error::NotListening(_) => ApiError::NotRunning { socket: self.socket.clone() },
            e => self.transport(e.to_string()),
        }
    }

    fn answer(&self, resp: slipway_net::Response) -> Result<Vec<u8>, ApiError> {
        if resp.status == 200 {
            return Ok(resp.body.to_vec());
        }
        let (error, hint) = match serde_json::from_slice::<ErrorBody>(&resp.body) {
            Ok(b) => (b.error, b.hint),
            Err(_) => (String::from_utf8_lossy(&resp.body).trim().to_string(), None),
        };
        Err(ApiError::Status { status: resp.status, error, hint })
    }

    fn transport(&self, message: String) -> ApiError {
        ApiError::Transport { socket: self.socket.clone(), message }
    }
}
