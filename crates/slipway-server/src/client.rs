//! [`ServerClient`]: the typed client of the server's REST API, for the CLI
//! (`slipway project|pipelines|pipeline|trigger|cancel|logs` with `--server`).

use std::time::Duration;

use slipway_api::server::{ApiErrorBody, NewProject, PipelineView, ProjectView, Trigger};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no server answers at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The server's own error: what, its code, and the field at fault.
    #[error("{message}")]
    Api { status: u16, code: String, message: String, field: Option<String> },
    #[error("the server's answer to {path} is unreadable: {message}")]
    Unreadable { path: String, message: String },
}

pub struct ServerClient {
    http: reqwest::Client,
    url: String,
    token: String,
}

/// A path segment as GitLab encodes it (`team/app` → `team%2Fapp`).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl ServerClient {
    pub fn new(url: &str, token: &str) -> ServerClient {
        ServerClient {
            http: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp =
            req.send().await.map_err(|e| ClientError::Unreachable { url: self.url.clone(), message: e.to_string() })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.url.clone(), message: e.to_string() })?;
        if status >= 400 {
            return Err(match serde_json::from_slice::<ApiErrorBody>(&bytes) {
                Ok(e) => ClientError::Api { status, code: e.code, message: e.message, field: e.field },
                Err(_) => ClientError::Api {
                    status,
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).trim().to_string(),
                    field: None,
                },
            });
        }
        Ok((status, bytes.to_vec()))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.send(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Unreadable { path: path.into(), message: e.to_string() })
    }

    pub async fn add_project(&self, p: &NewProject) -> Result<ProjectView, ClientError> {
        self.json(reqwest::Method::POST, "/api/v1/projects", Some(serde_json::to_vec(p).expect("serializes"))).await
    }

    pub async fn projects(&self) -> Result<Vec<ProjectView>, ClientError> {
        self.json(reqwest::Method::GET, "/api/v1/projects", None).await
    }

    pub async fn trigger(&self, project: &str, t: &Trigger) -> Result<PipelineView, ClientError> {
        let path = format!("/api/v1/projects/{}/pipelines", segment(project));
        self.json(reqwest::Method::POST, &path, Some(serde_json::to_vec(t).expect("serializes"))).await
    }

    pub async fn pipelines(&self, project: Option<&str>, limit: u32) -> Result<Vec<PipelineView>, ClientError> {
        let mut path = format!("/api/v1/pipelines?limit={limit}");
        if let Some(p) = project {
            path.push_str(&format!("&project={}", segment(p)));
        }
        self.json(reqwest::Method::GET, &path, None).await
    }

    pub async fn pipeline(&self, id: i64) -> Result<PipelineView, ClientError> {
        self.json(reqwest::Method::GET, &format!("/api/v1/pipelines/{id}"), None).await
    }

    pub async fn cancel(&self, id: i64) -> Result<PipelineView, ClientError> {
        self.json(reqwest::Method::POST, &format!("/api/v1/pipelines/{id}/cancel"), None).await
    }

    /// A job's log from `offset` on.
    pub async fn log(&self, id: i64, index: usize, offset: u64) -> Result<Vec<u8>, ClientError> {
        let (_, bytes) = self
            .send(reqwest::Method::GET, &format!("/api/v1/pipelines/{id}/jobs/{index}/log?offset={offset}"), None)
            .await?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_encoded_as_gitlab_does() {
        assert_eq!(super::segment("team/app"), "team%2Fapp");
        assert_eq!(super::segment("a b.c-d_e"), "a%20b.c-d_e");
    }
}
