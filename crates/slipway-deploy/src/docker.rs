//! The Docker Engine side of the `docker` target, as the deploy engine sees it: pulling an
//! image by reference (recorded by digest), listing the environment's containers for the
//! drift check and its pruning, and pruning old releases' images. Loading an image archive is the agent's
//! (`AgentClient::load_image`), for this machine and others alike.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use futures_util::StreamExt;

use crate::{DeployError, ErrorKind, artifacts};

fn connect() -> Result<Docker, DeployError> {
    Docker::connect_with_local_defaults().map_err(|e| {
        DeployError::new(ErrorKind::Failed, format!("cannot reach the Docker Engine: {e}"))
            .hint("start it (`dockerd`, or `systemctl start docker`) — the docker target needs it")
    })
}

fn down(e: bollard::errors::Error) -> DeployError {
    DeployError::new(ErrorKind::Failed, format!("the Docker Engine: {e}"))
        .hint("is dockerd running? (`docker info`); start it, or deploy to another target")
}

/// Whether this machine's Docker Engine answers (a `docker` target checks it before a release
/// is recorded).
pub async fn ping() -> Result<(), DeployError> {
    connect()?.ping().await.map(|_| ()).map_err(down)
}

/// One container of an environment, as the engine reports it.
#[derive(Debug, Clone)]
pub struct ContainerState {
    pub name: String,
    pub image: String,
    pub release: Option<i64>,
    pub state: String,
    /// The data directory of the agent that made it (`dev.slipway.agent`), if one did.
    pub agent: Option<String>,
}

/// The containers labelled with the environment.
pub async fn containers(environment: &str) -> Result<Vec<ContainerState>, DeployError> {
    let docker = connect()?;
    let filters = HashMap::from([("label".to_string(), vec![format!("dev.slipway.environment={environment}")])]);
    let list = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
        .await
        .map_err(down)?;
    Ok(list
        .into_iter()
        .map(|c| ContainerState {
            name: c.names.and_then(|n| n.first().cloned()).unwrap_or_default().trim_start_matches('/').to_string(),
            image: c.image_id.unwrap_or_default(),
            release: c.labels.as_ref().and_then(|l| l.get("dev.slipway.release")).and_then(|r| r.parse().ok()),
            agent: c.labels.as_ref().and_then(|l| l.get("dev.slipway.agent")).cloned(),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        })
        .collect())
}

/// Removes a container, running or not (`docker rm -f`).
pub async fn remove(name: &str) -> Result<(), DeployError> {
    let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::new().force(true).build();
    match connect()?.remove_container(name, Some(opts)).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(down(e)),
    }
}

/// Pulls `reference` (a tag or a digest) and returns the image ID (hex) and the reference
/// pinned by manifest digest (`repo@sha256:...`), which is what the release records.
/// `credentials` (user, password) go to the engine for this pull only.
pub async fn pull(reference: &str, credentials: Option<(String, String)>) -> Result<(String, String), DeployError> {
    let docker = connect()?;
    docker.ping().await.map_err(down)?;
    let credentials = credentials.map(|(username, password)| bollard::auth::DockerCredentials {
        username: Some(username),
        password: Some(password),
        serveraddress: reference.split('/').next().map(str::to_string),
        ..Default::default()
    });
    let opts = bollard::query_parameters::CreateImageOptionsBuilder::new().from_image(reference).build();
    let mut stream = docker.create_image(Some(opts), None, credentials);
    while let Some(item) = stream.next().await {
        item.map_err(|e| {
            DeployError::input(format!("pulling {reference}: {e}")).hint(
                "check the reference, that the registry answers (`slipway image inspect REF`), and credentials (--username, --password-stdin)",
            )
        })?;
    }
    let img = docker.inspect_image(reference).await.map_err(down)?;
    let id = img.id.unwrap_or_default().trim_start_matches("sha256:").to_string();
    let repo = repository(reference);
    let pinned = img
        .repo_digests
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.split('@').next() == Some(repo))
        .ok_or_else(|| DeployError::input(format!("{reference} has no digest from its registry")))?;
    Ok((id, pinned))
}

/// `host:5000/team/app:tag` → `host:5000/team/app`; `repo@sha256:…` → `repo`.
pub fn repository(reference: &str) -> &str {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    match no_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => no_digest,
    }
}

/// Removes the images (and their stored archives) of releases beyond the newest `keep`;
/// an image still used by a container stays. Returns what was removed.
pub async fn prune(data_dir: &Path, keep_ids: &[String], drop_ids: &[String]) -> Vec<String> {
    let Ok(docker) = connect() else { return Vec::new() };
    let mut removed = Vec::new();
    for id in drop_ids.iter().filter(|id| !keep_ids.contains(id)) {
        let image_gone = match docker
            .remove_image(&format!("sha256:{id}"), None::<bollard::query_parameters::RemoveImageOptions>, None)
            .await
        {
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => true,
            Err(_) => false, // in use, or the engine refused: keep it and its archive
        };
        if image_gone {
            let _ = std::fs::remove_file(artifacts::stored_image(data_dir, id));
            removed.push(id.chars().take(12).collect());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    #[test]
    fn repositories_drop_tags_and_digests_but_not_ports() {
        assert_eq!(super::repository("127.0.0.1:5000/team/app:v2"), "127.0.0.1:5000/team/app");
        assert_eq!(super::repository("127.0.0.1:5000/team/app"), "127.0.0.1:5000/team/app");
        assert_eq!(super::repository("127.0.0.1:5000/app@sha256:abc"), "127.0.0.1:5000/app");
    }
}
