//! A checkout's facts, gathered once per run: commit, branch or tag, message, default branch,
//! the commit `rules:changes` compares against, the project's path from its remote — and the
//! files changed since a base. A directory that is not a git repository gets sensible defaults.

use std::path::Path;

use crate::{finish, git, spawn};

pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// Facts about the checkout, gathered once per run.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub is_repo: bool,
    pub sha: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub message: String,
    /// The commit's author, `Name <email>` (GitLab's `CI_COMMIT_AUTHOR`).
    pub author: Option<String>,
    pub default_branch: String,
    /// The commit `rules:changes` compares the work tree against.
    pub before_sha: Option<String>,
    pub project_name: String,
    pub project_path: String,
    /// Where the project lives, from the `origin` remote (`https://gitlab.example.com`):
    /// GitLab's `CI_SERVER_URL`.
    pub server_url: Option<String>,
}

impl Checkout {
    /// Reads the checkout with a handful of git commands started at once (they are the
    /// largest part of a small run's wall time, so they run in parallel).
    pub fn read(dir: &Path) -> Checkout {
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "project".into());
        // On a branch of a plain repository, the commit is read from the object store (what
        // `git log` prints below, decorations aside: they only matter on a detached HEAD).
        let repo = crate::plain::Plain::open(dir);
        let plain = repo.as_ref().and_then(|p| {
            let (_, oid) = p.head_branch()?;
            let c = p.commit(&oid)?;
            Some(format!("{oid}\n{}\n\n{}\n{}", c.parents.join(" "), c.author, c.message))
        });
        let head = match plain {
            Some(_) => None,
            None => spawn(dir, &["log", "-1", "--format=%H%n%P%n%D%n%an <%ae>%n%B"]),
        };
        // The rest is small files in a plain `.git` directory: read them instead of starting
        // three more git processes; anything unusual (worktrees, subdirectories) asks git.
        let (refs, origin, symbolic) = match read_ref_files(&dir.join(".git"), repo.as_ref()) {
            Some(f) => (Some(f.refs), f.origin, f.symbolic),
            None => {
                let refs = spawn(
                    dir,
                    &[
                        "for-each-ref",
                        "--format=%(refname) %(symref)",
                        "refs/remotes/origin/HEAD",
                        "refs/heads/main",
                        "refs/heads/master",
                    ],
                );
                let origin = spawn(dir, &["config", "--get", "remote.origin.url"]);
                let symbolic = spawn(dir, &["symbolic-ref", "-q", "--short", "HEAD"]);
                (finish(refs), finish(origin), finish(symbolic))
            }
        };
        let head = plain.or_else(|| finish(head));

        let Some(head) = head else {
            // Not a repository, or one without commits yet.
            let branch = symbolic;
            let is_repo = branch.is_some();
            return Checkout {
                is_repo,
                sha: ZERO_SHA.into(),
                default_branch: branch.clone().unwrap_or_else(|| "main".into()),
                branch,
                tag: None,
                message: String::new(),
                author: None,
                before_sha: None,
                project_name: name.clone(),
                project_path: origin.as_deref().and_then(path_from_remote).unwrap_or(name),
                server_url: origin.as_deref().and_then(server_from_remote),
            };
        };
        let mut lines = head.splitn(5, '\n');
        let sha = lines.next().unwrap_or(ZERO_SHA).to_string();
        let first_parent = lines.next().and_then(|p| p.split_whitespace().next()).map(str::to_string);
        let decorations: Vec<&str> = lines.next().unwrap_or("").split(", ").collect();
        let author = lines.next().filter(|a| !a.trim().is_empty() && *a != " <>").map(str::to_string);
        let message = lines.next().unwrap_or("").trim_end().to_string();
        let branch = symbolic;
        // A tag pipeline is a detached HEAD that a tag points at, as in GitLab.
        let tag = if branch.is_none() {
            decorations.iter().find_map(|d| d.strip_prefix("tag: ")).map(str::to_string)
        } else {
            None
        };
        let refs = refs.unwrap_or_default();
        let default_branch = refs
            .lines()
            .find_map(|l| l.strip_prefix("refs/remotes/origin/HEAD refs/remotes/origin/"))
            .map(str::to_string)
            .or_else(|| {
                ["main", "master"]
                    .into_iter()
                    .find(|b| refs.lines().any(|l| l.trim_end() == format!("refs/heads/{b}")))
                    .map(str::to_string)
            })
            .or_else(|| branch.clone())
            .unwrap_or_else(|| "main".into());
        let before_sha = match &branch {
            Some(b) if *b != default_branch => {
                git(dir, &["merge-base", "HEAD", &default_branch]).filter(|m| *m != sha).or(first_parent)
            }
            _ => first_parent,
        };
        let project_path = origin.as_deref().and_then(path_from_remote).unwrap_or_else(|| name.clone());
        Checkout {
            is_repo: true,
            sha,
            branch,
            tag,
            message,
            author,
            default_branch,
            before_sha,
            project_name: name,
            project_path,
            server_url: origin.as_deref().and_then(server_from_remote),
        }
    }

    /// Files changed relative to `base` (or the run's `before_sha`): committed changes, the
    /// work tree's edits and untracked files. `None` when unknown (GitLab then runs the job).
    pub fn changed_files(&self, dir: &Path, base: Option<&str>) -> Option<Vec<String>> {
        if !self.is_repo {
            return None;
        }
        let base = match base {
            Some(b) => git(dir, &["rev-parse", "-q", "--verify", &format!("{b}^{{commit}}")])?,
            None => self.before_sha.clone()?,
        };
        let mut files: Vec<String> =
            git(dir, &["diff", "--name-only", "--no-renames", &base])?.lines().map(str::to_string).collect();
        if let Some(untracked) = git(dir, &["ls-files", "--others", "--exclude-standard"]) {
            files.extend(untracked.lines().map(str::to_string));
        }
        files.sort();
        files.dedup();
        Some(files)
    }
}

struct RefFiles {
    /// The checked-out branch (`None` when HEAD is detached).
    symbolic: Option<String>,
    /// `for-each-ref --format='%(refname) %(symref)'` of origin/HEAD, main and master.
    refs: String,
    origin: Option<String>,
}

/// Reads them from `git_dir`, taking the configuration and packed refs from `repo` when it was
/// opened already.
fn read_ref_files(git_dir: &Path, repo: Option<&crate::plain::Plain>) -> Option<RefFiles> {
    if !git_dir.is_dir() {
        return None;
    }
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let symbolic = head.trim().strip_prefix("ref: refs/heads/").map(str::to_string);
    let packed = match repo {
        Some(r) => r.packed_refs().to_string(),
        None => std::fs::read_to_string(git_dir.join("packed-refs")).unwrap_or_default(),
    };
    let mut refs = String::new();
    if let Ok(t) = std::fs::read_to_string(git_dir.join("refs/remotes/origin/HEAD"))
        && let Some(target) = t.trim().strip_prefix("ref: ")
    {
        refs.push_str(&format!("refs/remotes/origin/HEAD {target}\n"));
    }
    for b in ["main", "master"] {
        let r = format!("refs/heads/{b}");
        if git_dir.join(&r).is_file() || packed.lines().any(|l| l.ends_with(&format!(" {r}"))) {
            refs.push_str(&format!("{r} \n"));
        }
    }
    let config = match repo {
        Some(r) => r.config().to_string(),
        None => std::fs::read_to_string(git_dir.join("config")).ok()?,
    };
    if config.lines().any(|l| l.trim_start().starts_with("[include")) {
        return None; // let git resolve included configuration
    }
    let mut section = String::new();
    let mut origin = None;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[remote \"origin\"]"
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == "url"
        {
            origin = Some(v.trim().to_string());
        }
    }
    Some(RefFiles { symbolic, refs, origin })
}

/// The forge's address from a remote URL: `https://host[:port]` for HTTP(S) remotes, and
/// `https://host` for ssh ones (`git@host:group/p.git`, `ssh://git@host:2222/group/p`); none
/// for a local path.
fn server_from_remote(url: &str) -> Option<String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest)) => (s, rest),
        None => {
            // scp-like: `[user@]host:path` (not a Windows drive or a plain path).
            let (host, _) = url.split_once(':')?;
            let host = host.rsplit('@').next()?;
            return (!host.is_empty() && !host.contains('/')).then(|| format!("https://{host}"));
        }
    };
    let authority = rest.split('/').next()?.rsplit('@').next()?;
    match scheme {
        "http" | "https" if !authority.is_empty() => Some(format!("{scheme}://{authority}")),
        "ssh" | "git+ssh" if !authority.is_empty() => {
            Some(format!("https://{}", authority.split(':').next().unwrap_or(authority)))
        }
        _ => None,
    }
}

fn path_from_remote(url: &str) -> Option<String> {
    let u = url.trim_end_matches('/').trim_end_matches(".git");
    let path = if let Some((_, rest)) = u.split_once("://") {
        rest.split_once('/')?.1.to_string()
    } else if let Some((_, rest)) = u.split_once(':') {
        rest.to_string()
    } else {
        return None;
    };
    (!path.is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git").args(args).current_dir(dir).output().unwrap().status.success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn reading_ref_files_agrees_with_git() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        sh(p, &["init", "-q", "-b", "trunk"]);
        sh(p, &["-c", "user.email=a@b", "-c", "user.name=n", "commit", "-q", "--allow-empty", "-m", "one"]);
        sh(p, &["branch", "master"]);
        sh(p, &["pack-refs", "--all"]);
        sh(p, &["remote", "add", "origin", "git@example.com:group/sub/proj.git"]);
        sh(p, &["update-ref", "refs/remotes/origin/trunk", "HEAD"]);
        sh(p, &["symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/trunk"]);
        let files = read_ref_files(&p.join(".git"), None).unwrap();
        assert_eq!(files.symbolic.as_deref(), Some("trunk"));
        assert_eq!(files.origin.as_deref(), Some("git@example.com:group/sub/proj.git"));
        let by_git = finish(spawn(
            p,
            &[
                "for-each-ref",
                "--format=%(refname) %(symref)",
                "refs/remotes/origin/HEAD",
                "refs/heads/main",
                "refs/heads/master",
            ],
        ))
        .unwrap();
        let mut a: Vec<&str> = files.refs.lines().map(str::trim_end).collect();
        let mut b: Vec<&str> = by_git.lines().map(str::trim_end).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let c = Checkout::read(p);
        assert_eq!((c.default_branch.as_str(), c.project_path.as_str()), ("trunk", "group/sub/proj"));
        sh(p, &["checkout", "-q", "--detach"]);
        assert_eq!(read_ref_files(&p.join(".git"), None).unwrap().symbolic, None);
    }

    #[test]
    fn server_urls_from_remotes() {
        for (url, want) in [
            ("https://gitlab.example.com/group/proj.git", Some("https://gitlab.example.com")),
            ("http://127.0.0.1:8929/group/proj", Some("http://127.0.0.1:8929")),
            ("https://token@gitlab.example.com/g/p.git", Some("https://gitlab.example.com")),
            ("git@gitlab.example.com:group/proj.git", Some("https://gitlab.example.com")),
            ("ssh://git@gitlab.example.com:2222/group/proj.git", Some("https://gitlab.example.com")),
            ("/srv/git/proj.git", None),
            ("file:///srv/git/proj.git", None),
        ] {
            assert_eq!(server_from_remote(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn project_path_from_remotes() {
        assert_eq!(path_from_remote("git@gitlab.com:group/sub/proj.git").as_deref(), Some("group/sub/proj"));
        assert_eq!(path_from_remote("https://github.com/org/repo").as_deref(), Some("org/repo"));
        assert_eq!(path_from_remote("/local/path"), None);
    }
}
