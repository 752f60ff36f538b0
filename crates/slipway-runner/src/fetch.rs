//! What the pipeline loader cannot read from the project itself: `include:remote` over
//! HTTP(S) and `include:project` from another git repository, each kept in a cache under
//! `.slipway/include-cache/` so that a source that is down (or a run without network) takes the
//! last copy, with a warning that says so.
//!
//! - A remote include is fetched with a timeout (10 s, `SLIPWAY_INCLUDE_TIMEOUT` seconds),
//!   trusting the web's roots and the certificates of `SSL_CERT_FILE` (as curl and git do).
//! - A project include is read from a bare repository per project URL, fetched at `ref` (its
//!   default branch without one); a `ref` that is a full commit id already fetched is not
//!   fetched again. The project's URL is the project itself when it is a git URL or a path, or
//!   this repository's `origin` with its project path replaced (`https://host/a/b.git` with
//!   `project: c/d` is `https://host/c/d.git`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;
use slipway_pipeline::load::{Fetch, Fetched};
use slipway_pipeline::vars::VarMap;

/// Reads remote and other projects' includes for a project at `root`.
pub struct Fetcher {
    root: PathBuf,
    cache: PathBuf,
    timeout: Duration,
    /// The run's `--var`s and pipeline source, for `include:rules`.
    overrides: VarMap,
    source: String,
    checkout: std::cell::OnceCell<slipway_git::Checkout>,
    /// On a server: its host and its projects' repositories, which `include:project` and
    /// `include:component` name first.
    server: Option<ServerProjects>,
}

/// A server's projects as includes see them: `project: team/lib` (or a component
/// `HOST/team/lib/name@1.0`, with the server's host) is the server's project `team/lib`.
#[derive(Debug, Clone, Default)]
pub struct ServerProjects {
    /// The server's external URL (`CI_SERVER_URL`).
    pub url: String,
    /// The project being planned, as the server names it (`CI_PROJECT_PATH`).
    pub project: String,
    /// Project name → the repository it is fetched from.
    pub repos: std::collections::BTreeMap<String, String>,
}

impl ServerProjects {
    /// `host[:port]`: `CI_SERVER_FQDN`, what components on this server start with.
    pub fn host(&self) -> &str {
        self.url.split("://").nth(1).unwrap_or(&self.url).split('/').next().unwrap_or("")
    }
}

impl Fetcher {
    pub fn for_project(root: &Path) -> Fetcher {
        let timeout = std::env::var("SLIPWAY_INCLUDE_TIMEOUT")
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .map_or(Duration::from_secs(10), Duration::from_secs_f64);
        Fetcher {
            root: root.to_path_buf(),
            cache: root.join(".slipway").join("include-cache"),
            timeout,
            overrides: VarMap::new(),
            source: "push".into(),
            checkout: std::cell::OnceCell::new(),
            server: None,
        }
    }

    /// Includes name a server's projects first.
    pub fn with_server(mut self, server: Option<ServerProjects>) -> Fetcher {
        self.server = server;
        self
    }

    /// For a run with these `--var`s and pipeline source (`include:rules` sees them).
    pub fn with_run(mut self, overrides: VarMap, source: &str) -> Fetcher {
        self.overrides = overrides;
        self.source = source.to_string();
        self
    }

    fn checkout(&self) -> &slipway_git::Checkout {
        self.checkout.get_or_init(|| {
            let mut c = slipway_git::Checkout::read(&self.root);
            // On a server, includes see its URL and project name (`$CI_SERVER_FQDN/…`).
            if let Some(s) = &self.server {
                c.server_url = Some(s.url.trim_end_matches('/').to_string());
                c.project_path = s.project.clone();
            }
            c
        })
    }

    /// Where project `project` lives.
    fn project_url(&self, project: &str) -> Result<String, String> {
        if let Some(s) = &self.server {
            // A name, or the URL a component on this server's host is given as.
            let name = project
                .strip_prefix("https://")
                .or_else(|| project.strip_prefix("http://"))
                .and_then(|rest| rest.strip_prefix(s.host()))
                .and_then(|rest| rest.strip_prefix('/'))
                .map(|rest| rest.trim_end_matches(".git"))
                .unwrap_or(project);
            if let Some(url) = s.repos.get(name) {
                return Ok(url.clone());
            }
            if !project.contains("://") && !project.starts_with('/') && !project.starts_with("git@") {
                let known: Vec<&str> = s.repos.keys().map(String::as_str).collect();
                return Err(format!(
                    "no project `{project}` on this server (it has {}); add it with `slipway project add`, or give a git URL",
                    known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if project.contains("://") || project.starts_with('/') || project.starts_with("git@") {
            return Ok(project.to_string());
        }
        // Read from git only when a project include asks.
        let origin = slipway_git::output(&self.root, &["config", "--get", "remote.origin.url"])
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty());
        let project_path = self.checkout().project_path.clone();
        let Some(origin) = &origin else {
            return Err(format!(
                "this repository has no `origin` remote to find `{project}` beside; give the project as a git URL or path"
            ));
        };
        sibling_url(origin, &project_path, project).ok_or_else(|| {
            format!(
                "cannot tell where `{project}` lives: the `origin` remote ({origin}) does not end in this project's path `{project_path}`; give the project as a git URL or path"
            )
        })
    }
}

/// `origin` with its project path `path` replaced by `project`, in the same form.
fn sibling_url(origin: &str, path: &str, project: &str) -> Option<String> {
    let bare = origin.trim_end_matches('/');
    let (bare, git) = match bare.strip_suffix(".git") {
        Some(b) => (b, ".git"),
        None => (bare, ""),
    };
    let base = bare.strip_suffix(path).filter(|_| !path.is_empty())?;
    Some(format!("{base}{project}{git}"))
}

fn digest(s: &str) -> String {
    format!("{:x}", sha2::Sha256::digest(s.as_bytes()))[..20].to_string()
}

impl Fetch for Fetcher {
    fn variables(&self) -> (VarMap, VarMap) {
        (crate::project::predefined(self.checkout(), &self.root, 0, &self.source), self.overrides.clone())
    }

    fn changed_files(&self, compare_to: Option<&str>) -> Option<Vec<String>> {
        self.checkout().changed_files(&self.root, compare_to)
    }

    fn remote(&self, url: &str) -> Result<Fetched, String> {
        let cached = self.cache.join("remote").join(format!("{}.yml", digest(url)));
        match get(url, self.timeout) {
            Ok(text) => {
                let _ = std::fs::create_dir_all(cached.parent().unwrap_or(&self.cache));
                let tmp = cached.with_extension("partial");
                if std::fs::write(&tmp, &text).is_ok() {
                    let _ = std::fs::rename(&tmp, &cached);
                }
                Ok(Fetched { text, warning: None })
            }
            Err(e) => match std::fs::read_to_string(&cached) {
                Ok(text) => Ok(Fetched {
                    text,
                    warning: Some(format!(
                        "{url} could not be fetched ({e}); using the copy cached in {}",
                        cached.display()
                    )),
                }),
                Err(_) => Err(e),
            },
        }
    }

    fn project(&self, project: &str, git_ref: Option<&str>, file: &str) -> Result<Fetched, String> {
        let url = self.project_url(project)?;
        let repo = self.cache.join("projects").join(format!("{}.git", digest(&url)));
        if !repo.join("HEAD").is_file() {
            std::fs::create_dir_all(&repo)
                .map_err(|e| format!("cannot make the include cache {}: {e}", repo.display()))?;
            slipway_git::run(&repo, &["init", "--bare", "-q"]).map_err(|e| e.to_string())?;
        }
        let asked = git_ref.unwrap_or("HEAD");
        let local = format!("refs/slipway/{}", digest(asked));
        // A component's `~latest`: the highest release tag (`1.2.0`, `v1.2.0`), kept under the
        // name `~latest` for when the project cannot be reached.
        let latest = (asked == "~latest").then(|| latest_release(&url));
        let rev = match &latest {
            Some(Ok(tag)) => tag.as_str(),
            _ => asked,
        };
        let commit = rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit());
        let have =
            |r: &str| slipway_git::run(&repo, &["rev-parse", "--verify", "-q", &format!("{r}^{{commit}}")]).is_ok();
        let mut warning = None;
        if let Some(Err(e)) = &latest {
            if !have(&local) {
                return Err(e.clone());
            }
            warning = Some(format!("{e}; using the `~latest` cached in {}", repo.display()));
        } else if !(commit && have(rev)) {
            let fetched = slipway_git::run(
                &repo,
                &[
                    "-c",
                    "http.lowSpeedLimit=1",
                    "-c",
                    "http.lowSpeedTime=30",
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    &url,
                    &format!("+{rev}:{local}"),
                ],
            );
            if let Err(e) = fetched {
                if !have(&local) {
                    return Err(format!("fetching `{project}` ({url}) at `{rev}`: {e}"));
                }
                warning = Some(format!(
                    "`{project}` at `{rev}` could not be fetched ({e}); using the copy cached in {}",
                    repo.display()
                ));
            }
        }
        let at = if commit && have(rev) { rev.to_string() } else { local };
        match slipway_git::remote::show(&repo, &at, file).map_err(|e| e.to_string())? {
            Some(text) => Ok(Fetched { text, warning }),
            None => Err(format!("`{project}` has no file `{file}` at `{rev}`")),
        }
    }
}

/// The highest semantic-version tag of `url` (pre-releases aside), as GitLab's `~latest`.
fn latest_release(url: &str) -> Result<String, String> {
    let refs = slipway_git::remote::ls_remote(url).map_err(|e| format!("listing the tags of {url}: {e}"))?;
    let version = |tag: &str| -> Option<(u64, u64, u64)> {
        let mut it = tag.trim_start_matches('v').split('.').map(|p| p.parse::<u64>().ok());
        Some((it.next()??, it.next()??, it.next()??)).filter(|_| it.next().is_none())
    };
    refs.iter()
        .filter_map(|(name, _)| name.strip_prefix("refs/tags/"))
        .filter_map(|t| version(t).map(|v| (v, t)))
        .max()
        .map(|(_, t)| t.to_string())
        .ok_or_else(|| format!("{url} has no release tag (like `1.0.0`) for `~latest`"))
}

/// GET `url` with a timeout; the body when the answer is 200.
fn get(url: &str, timeout: Duration) -> Result<String, String> {
    let mut client = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        let pem = std::fs::read(&file).map_err(|e| format!("SSL_CERT_FILE {}: {e}", Path::new(&file).display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("SSL_CERT_FILE: {e}"))? {
            client = client.add_root_certificate(cert);
        }
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let resp = client.get(url).send().await.map_err(|e| {
            if e.is_timeout() { format!("no answer within {} s", timeout.as_secs_f64()) } else { describe(&e) }
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        resp.text().await.map_err(|e| describe(&e))
    })
}

/// A reqwest error by its root cause (the refused connection, the TLS reason).
fn describe(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(cause) = last.source() {
        last = cause;
    }
    let what = if e.is_connect() { "cannot connect" } else { "the request failed" };
    format!("{what}: {last}")
}

#[cfg(test)]
mod tests {
    use super::sibling_url;

    #[test]
    fn other_projects_live_beside_origin() {
        assert_eq!(
            sibling_url("https://gitlab.example.com/group/app.git", "group/app", "ci/templates").as_deref(),
            Some("https://gitlab.example.com/ci/templates.git")
        );
        assert_eq!(
            sibling_url("git@gitlab.example.com:group/app.git", "group/app", "other/x").as_deref(),
            Some("git@gitlab.example.com:other/x.git")
        );
        assert_eq!(
            sibling_url("https://git.example.com/group/app/", "group/app", "a/b").as_deref(),
            Some("https://git.example.com/a/b")
        );
        assert_eq!(sibling_url("https://h/x/y.git", "group/app", "a/b"), None);
    }
}
