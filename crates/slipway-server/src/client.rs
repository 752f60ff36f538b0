//! [`ServerClient`]: the typed client of the server's REST API, for the CLI
//! (`slipway project|pipelines|pipeline|trigger|cancel|logs` with `--server`).

use std::time::Duration;

pub use reqwest::Method;

use slipway_api::server::{
    ApiErrorBody, NewProject, NewSchedule, PipelineView, ProjectView, ScheduleUpdate, ScheduleView, Trigger,
};

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
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A build (a directory or one binary) as a deploy sends it: a gzip'd tar with one top entry,
/// the directory's or the binary's name.
pub fn pack(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let name = path.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "dist".into());
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    if path.is_dir() {
        tar.append_dir_all(&name, path)?;
    } else {
        tar.append_path_with_name(path, &name)?;
    }
    tar.into_inner()?.finish()
}

/// The server's JSON error, or its text when it sent none.
fn api_error(status: u16, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiErrorBody>(bytes) {
        Ok(e) => ClientError::Api { status, code: e.code, message: e.message, field: e.field },
        Err(_) => ClientError::Api {
            status,
            code: "http".into(),
            message: String::from_utf8_lossy(bytes).trim().to_string(),
            field: None,
        },
    }
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
            return Err(api_error(status, &bytes));
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

    /// Any call answered with JSON (`body` sent as JSON).
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, ClientError> {
        self.json(method, path, body.map(|b| serde_json::to_vec(b).expect("serializes"))).await
    }

    /// A call whose body is text the server reads itself (a YAML manifest), answered with JSON.
    pub async fn call_text<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        text: &str,
    ) -> Result<T, ClientError> {
        self.json(method, path, Some(text.as_bytes().to_vec())).await
    }

    /// Any call answered with no body (204).
    pub async fn call_empty(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<(), ClientError> {
        self.send(method, path, body.map(|b| serde_json::to_vec(b).expect("serializes"))).await.map(drop)
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

    /// Every failed job again (`job: None`), or one job that ended.
    pub async fn retry(&self, id: i64, job: Option<usize>) -> Result<PipelineView, ClientError> {
        let path = match job {
            Some(i) => format!("/api/v1/pipelines/{id}/jobs/{i}/retry"),
            None => format!("/api/v1/pipelines/{id}/retry"),
        };
        self.json(reqwest::Method::POST, &path, None).await
    }

    pub async fn play(&self, id: i64, job: usize) -> Result<PipelineView, ClientError> {
        self.json(reqwest::Method::POST, &format!("/api/v1/pipelines/{id}/jobs/{job}/play"), None).await
    }

    fn env_path(project: &str, env: &str, action: &str) -> String {
        format!("/api/v1/projects/{}/environments/{}/{action}", segment(project), segment(env))
    }

    /// Starts a deploy, rollback or promotion (`action` with its query) and calls `each` with
    /// every event line the server streams back, `deploy_finished` last.
    pub async fn deploy_stream(
        &self,
        project: &str,
        env: &str,
        action: &str,
        body: Option<(Vec<u8>, &str)>,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let path = Self::env_path(project, env, action);
        let unreachable =
            |e: reqwest::Error| ClientError::Unreachable { url: self.url.clone(), message: e.to_string() };
        // A rollout may wait for its lock and its approvals: no overall timeout, only the
        // connection's.
        let mut req = self.http.post(format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some((bytes, kind)) = body {
            req = req.header("content-type", kind).body(bytes);
        }
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let bytes = resp.bytes().await.map_err(unreachable)?;
            return Err(api_error(status, &bytes));
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                each(&line[..line.len() - 1]);
            }
        }
        if !buf.is_empty() {
            each(&buf);
        }
        Ok(())
    }

    pub async fn approve(
        &self,
        project: &str,
        env: &str,
        release: Option<i64>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut path = Self::env_path(project, env, "approve");
        if let Some(r) = release {
            path.push_str(&format!("?release={r}"));
        }
        self.json(reqwest::Method::POST, &path, None).await
    }

    /// Each environment of the project, observed (`slipway status --json`'s shape).
    pub async fn environments(&self, project: &str) -> Result<Vec<serde_json::Value>, ClientError> {
        self.json(reqwest::Method::GET, &format!("/api/v1/projects/{}/environments", segment(project)), None).await
    }

    /// An environment's releases, newest first (`slipway history --json`'s shape).
    pub async fn releases(&self, project: &str, env: &str, limit: i64) -> Result<Vec<serde_json::Value>, ClientError> {
        let path = format!("{}?limit={limit}", Self::env_path(project, env, "releases"));
        self.json(reqwest::Method::GET, &path, None).await
    }

    /// The last `lines` lines of an environment's instance logs, from the agent that runs it.
    pub async fn env_logs(&self, project: &str, env: &str, lines: usize) -> Result<Vec<u8>, ClientError> {
        let path = format!("{}?lines={lines}", Self::env_path(project, env, "logs"));
        Ok(self.send(reqwest::Method::GET, &path, None).await?.1)
    }

    pub async fn add_schedule(&self, project: &str, n: &NewSchedule) -> Result<ScheduleView, ClientError> {
        let path = format!("/api/v1/projects/{}/schedules", segment(project));
        self.json(reqwest::Method::POST, &path, Some(serde_json::to_vec(n).expect("serializes"))).await
    }

    pub async fn schedules(&self, project: &str) -> Result<Vec<ScheduleView>, ClientError> {
        self.json(reqwest::Method::GET, &format!("/api/v1/projects/{}/schedules", segment(project)), None).await
    }

    pub async fn set_schedule_active(&self, project: &str, id: i64, active: bool) -> Result<ScheduleView, ClientError> {
        let path = format!("/api/v1/projects/{}/schedules/{id}", segment(project));
        let body = serde_json::to_vec(&ScheduleUpdate { active }).expect("serializes");
        self.json(reqwest::Method::PUT, &path, Some(body)).await
    }

    pub async fn delete_schedule(&self, project: &str, id: i64) -> Result<(), ClientError> {
        let path = format!("/api/v1/projects/{}/schedules/{id}", segment(project));
        self.send(reqwest::Method::DELETE, &path, None).await.map(drop)
    }

    /// Runs a schedule now; the pipeline's id.
    pub async fn play_schedule(&self, project: &str, id: i64) -> Result<i64, ClientError> {
        let path = format!("/api/v1/projects/{}/schedules/{id}/play", segment(project));
        let v: serde_json::Value = self.json(reqwest::Method::POST, &path, None).await?;
        v["pipeline"].as_i64().ok_or(ClientError::Unreadable { path, message: "no `pipeline`".into() })
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
