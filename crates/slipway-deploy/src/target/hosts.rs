//! The `ssh` target: a release rolled out across Linux hosts with systemd. Every host first
//! gets the release staged (the binary for the host's platform uploaded once and checked by
//! SHA-256, `run` script, env file, unit) without touching what runs; then hosts switch in
//! batches of `max_unavailable` (or by `group`): `current` link, restart, health check. The
//! first host that fails stops the rollout: its batch and every host already switched go back
//! to the previous release (a link switch and a restart, no upload), and the report says which
//! host failed at which step and why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use slipway_model::environment::{Environment, Probe, SshHost, SshTarget, Strategy};
use slipway_model::manifest::go_arch;
use slipway_model::release::{Artifact, Release};
use tokio::task::JoinSet;

use super::{Cx, Observation, Step, Target, Unit};
use crate::ssh::{Conn, HostError, sq};
use crate::{DeployError, ErrorKind, artifacts, systemd};

/// A release's directory name on a host: version and digest, so a rebuilt version never
/// overwrites the bytes that run.
pub fn release_dir_name(r: &Release) -> String {
    let v: String =
        r.version.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    format!("{v}-{}", &r.key_digest()[..r.key_digest().len().min(12)])
}

fn service_name(t: &SshTarget, r: &Release) -> String {
    t.service.clone().unwrap_or_else(|| r.program().to_string())
}

/// What one host runs, read back from it.
#[derive(Debug, Clone)]
pub struct HostState {
    pub host: String,
    /// The host's platform, Go's way (`linux/amd64`), from `uname`.
    pub platform: Option<String>,
    /// The release directory `current` points to.
    pub release_dir: Option<String>,
    pub sha256: Option<String>,
    /// `systemctl is-active`.
    pub active: String,
    /// The unit file differs from the one slipway last wrote there: (its SHA-256, slipway's).
    pub unit_edited: Option<(String, String)>,
    pub error: Option<String>,
}

impl HostState {
    pub fn matches(&self, r: &Release) -> bool {
        let want = self.platform.as_deref().and_then(|p| r.artifact_for(p).ok()).map(|a| a.sha256.as_str());
        self.release_dir.as_deref() == Some(release_dir_name(r).as_str())
            && want.is_some()
            && self.sha256.as_deref() == want
            && self.active == "active"
            && self.unit_edited.is_none()
    }

    /// Why the host does not run `r` as released (`None` when it does).
    pub fn drift(&self, r: &Release, unit_file: &str) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!("{}: {e}", self.host));
        }
        let dir = release_dir_name(r);
        let want = self.platform.as_deref().and_then(|p| r.artifact_for(p).ok()).map(|a| a.sha256.as_str());
        let mut why = Vec::new();
        if self.release_dir.as_deref() != Some(dir.as_str()) {
            why.push(format!("runs {}, expected {dir}", self.release_dir.as_deref().unwrap_or("nothing")));
        } else if self.sha256.as_deref() != want {
            why.push(format!(
                "its binary {} is sha256:{}, the release's is sha256:{} (replaced on the host)",
                r.program(),
                short(self.sha256.as_deref().unwrap_or("(missing)")),
                short(want.unwrap_or("(none for this platform)"))
            ));
        }
        if let Some((now, wrote)) = &self.unit_edited {
            why.push(format!(
                "/etc/systemd/system/{unit_file} was edited (sha256:{}, slipway wrote sha256:{})",
                short(now),
                short(wrote)
            ));
        }
        if self.active != "active" {
            why.push(format!("its service is {}", self.active));
        }
        (!why.is_empty()).then(|| format!("{}: {}", self.host, why.join("; ")))
    }
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// The unit file of the service on a host (a template when it runs several instances).
fn unit_file_name(t: &SshTarget, service: &str) -> String {
    if t.instances > 1 { format!("{service}@.service") } else { format!("{service}.service") }
}

/// `uname -s` and `uname -m` as Go names them.
fn platform_of(uname: &str) -> Option<String> {
    let mut it = uname.split_whitespace();
    let (os, machine) = (it.next()?.to_ascii_lowercase(), it.next()?);
    Some(format!("{os}/{}", go_arch(machine)))
}

/// What every host gets of one release.
struct Plan {
    env: Environment,
    target: SshTarget,
    service: String,
    binary: String,
    dir: String,
    version: String,
    /// The release's artifacts and where each is in this machine's artifact store.
    artifacts: Vec<(Artifact, PathBuf)>,
}

/// Stages the release on one host; true when the binary was uploaded (not already there).
async fn stage(c: Arc<Conn>, p: Arc<Plan>) -> Result<bool, HostError> {
    let rel = format!("{}/{}/releases/{}", p.target.root, p.service, p.dir);
    let uname = c.run("check", "uname -sm", None).await?;
    let platform = platform_of(&uname).unwrap_or_default();
    let Some((artifact, local)) = p.artifacts.iter().find(|(a, _)| a.platform == platform) else {
        let have: Vec<&str> = p.artifacts.iter().map(|(a, _)| a.platform.as_str()).collect();
        return Err(HostError {
            host: c.host.label(),
            step: "check".into(),
            message: format!(
                "the host is {platform}, and release {} has binaries for {} only (build with `slipway go build --platform {platform}`)",
                p.version,
                have.join(", ")
            ),
        });
    };
    let sha = &artifact.sha256;
    let check = format!(
        "set -e\n\
         command -v systemctl >/dev/null 2>&1 || {{ echo 'systemctl not found: the ssh target needs a host with systemd' >&2; exit 3; }}\n\
         mkdir -p {rel}\n\
         if [ -f {bin} ] && [ \"$(sha256sum {bin} | cut -d' ' -f1)\" = {sha} ]; then echo present; else echo missing; fi",
        rel = sq(&rel),
        bin = sq(&format!("{rel}/{}", p.binary)),
        sha = sq(sha),
    );
    let present = c.run("check", &check, None).await?.trim() == "present";
    if !present {
        let part = format!("{rel}/.{}.part", p.binary);
        let upload = format!(
            "set -e\n\
             cat > {part}\n\
             got=$(sha256sum {part} | cut -d' ' -f1)\n\
             if [ \"$got\" != {sha} ]; then rm -f {part}; echo \"checksum mismatch after upload: sha256:$got\" >&2; exit 4; fi\n\
             chmod 0755 {part}\n\
             mv -f {part} {bin}",
            part = sq(&part),
            sha = sq(sha),
            bin = sq(&format!("{rel}/{}", p.binary)),
        );
        if let Err(e) = c.run("upload", &upload, Some(local)).await {
            let _ = c.run("clean up", &format!("rm -f {}", sq(&part)), None).await;
            return Err(e);
        }
    }
    let template = p.target.instances > 1;
    let port = (!template).then_some(c.host.port);
    let unit_file = unit_file_name(&p.target, &p.service);
    let unit = systemd::unit(&p.env, &p.target, &p.service);
    // What slipway wrote is remembered next to the releases, so an edit by hand is drift.
    let unit_sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(unit.as_bytes()))
    };
    let files = format!(
        "set -e\n\
         umask 077\n\
         printf '%s' {env} > {rel}/env\n\
         umask 022\n\
         printf '%s' {run} > {rel}/run\n\
         chmod 0755 {rel}/run\n\
         printf '%s' {unit} > /etc/systemd/system/.{unit_file}.part\n\
         mv -f /etc/systemd/system/.{unit_file}.part /etc/systemd/system/{unit_file}\n\
         printf '%s\\n' {unit_sha} > {base}/.unit.sha256\n\
         systemctl daemon-reload",
        env = sq(&systemd::env_file(&p.env, &p.version, port)),
        run = sq(&systemd::run_script(&p.env, &rel, &p.binary, port)),
        unit = sq(&unit),
        rel = sq(&rel),
        base = sq(&format!("{}/{}", p.target.root, p.service)),
    );
    c.run("write unit", &files, None).await?;
    Ok(!present)
}

/// Points `current` at `dir`, then restarts the host's units one by one, each followed by its
/// health check (so a host with several instances keeps answering on the others).
async fn switch(c: &Conn, env: &Environment, t: &SshTarget, service: &str, dir: &str) -> Result<(), HostError> {
    let base = format!("{}/{service}", t.root);
    let units = t.units(service, &c.host);
    let names: Vec<String> = units.iter().map(|(u, _)| u.clone()).collect();
    let script = format!(
        "set -e\n\
         cd {base}\n\
         [ -d releases/{dir} ] || {{ echo 'release {dir} is not on this host' >&2; exit 5; }}\n\
         ln -sfn releases/{dir} .current.part\n\
         mv -Tf .current.part current\n\
         systemctl enable --quiet {units} 2>/dev/null || true",
        base = sq(&base),
        dir = dir,
        units = names.join(" "),
    );
    c.run("switch", &script, None).await?;
    for (unit, port) in &units {
        c.run("restart", &format!("systemctl restart {unit}"), None).await?;
        healthy(c, env, unit, *port).await?;
    }
    Ok(())
}

/// Stops and disables the units (a first release that failed).
async fn stop(c: &Conn, t: &SshTarget, service: &str) -> Result<(), HostError> {
    let units: Vec<String> = t.units(service, &c.host).into_iter().map(|(u, _)| u).collect();
    let script = format!(
        "systemctl disable --now {} 2>/dev/null || true; rm -f {}",
        units.join(" "),
        sq(&format!("{}/{service}/current", t.root))
    );
    c.run("stop", &script, None).await.map(|_| ())
}

/// Stops and disables the units, removes their unit file and the service's directory (its
/// releases): nothing of it is left on the host.
async fn retire_one(c: &Conn, t: &SshTarget, service: &str) -> Result<(), HostError> {
    let units: Vec<String> = t.units(service, &c.host).into_iter().map(|(u, _)| u).collect();
    let script = format!(
        "systemctl disable --now {units} 2>/dev/null || true\n\
         rm -f {unit_file}\n\
         systemctl daemon-reload 2>/dev/null || true\n\
         rm -rf -- {base}",
        units = units.join(" "),
        unit_file = sq(&format!("/etc/systemd/system/{}", unit_file_name(t, service))),
        base = sq(&format!("{}/{service}", t.root)),
    );
    c.run("retire", &script, None).await.map(|_| ())
}

/// Probes one instance on the host until `successes` passes in a row, or fails at the
/// deadline (sooner when systemd keeps restarting it) with the unit's last log lines.
async fn healthy(c: &Conn, env: &Environment, unit: &str, port: u16) -> Result<(), HostError> {
    let h = &env.health;
    let deadline = Instant::now() + h.deadline;
    let mut passes = 0;
    let mut last = String::from("no check answered yet");
    let mut next_unit_check = Instant::now() + Duration::from_secs(1);
    loop {
        match probe(c, &env.health.probe, h.timeout, port).await {
            Ok(()) => {
                passes += 1;
                if passes >= h.successes {
                    return Ok(());
                }
            }
            Err(e) => {
                passes = 0;
                last = e;
            }
        }
        let crashing = if Instant::now() >= next_unit_check {
            next_unit_check = Instant::now() + Duration::from_secs(1);
            let show = c.run("health", &format!("systemctl show -p NRestarts --value {unit}"), None).await?;
            show.trim().parse::<u32>().unwrap_or(0) >= 3
        } else {
            false
        };
        if crashing || Instant::now() >= deadline {
            let journal = c
                .run(
                    "health",
                    &format!("systemctl is-active {unit}; journalctl -u {unit} -n 5 --no-pager -o cat 2>/dev/null"),
                    None,
                )
                .await
                .unwrap_or_else(|e| e.message.clone());
            let lines: Vec<&str> = journal.lines().filter(|l| !l.trim().is_empty()).collect();
            return Err(HostError {
                host: c.host.label(),
                step: "health check".into(),
                message: format!(
                    "{}{}: {last}; unit {}",
                    if crashing {
                        "keeps restarting".to_string()
                    } else {
                        format!("not healthy within {}", crate::plan::fmt_duration(h.deadline))
                    },
                    if t_is_template(unit) { format!(" ({unit})") } else { String::new() },
                    lines.iter().rev().take(3).rev().copied().collect::<Vec<_>>().join(" | ")
                ),
            });
        }
        tokio::time::sleep(h.interval.min(Duration::from_millis(250))).await;
    }
}

fn t_is_template(unit: &str) -> bool {
    unit.contains('@')
}

/// The health check of one instance, from this machine to the host's port (a command check
/// runs on the host).
async fn probe(c: &Conn, p: &Probe, timeout: Duration, port: u16) -> Result<(), String> {
    match p {
        Probe::Tcp => slipway_net::probe::tcp(&c.host.host, port, timeout).await,
        Probe::Http(path) => slipway_net::probe::http(&c.host.host, port, path, timeout).await,
        Probe::Command(cmd) => {
            let script = format!("PORT={port} sh -c {}", sq(cmd));
            match tokio::time::timeout(timeout, c.run("health", &script, None)).await {
                Ok(r) => r.map(|_| ()).map_err(|e| format!("`{cmd}`: {}", e.message)),
                Err(_) => Err(format!("`{cmd}` timed out after {timeout:?}")),
            }
        }
    }
}

/// Keeps the newest `keep` releases (never the current one).
async fn prune(c: &Conn, t: &SshTarget, service: &str) {
    let script = format!(
        "cd {} 2>/dev/null || exit 0\n\
         cur=$(readlink ../current | sed 's|^releases/||')\n\
         ls -1t | awk 'NR>{}' | while read -r r; do [ \"$r\" = \"$cur\" ] || rm -rf -- \"$r\"; done",
        sq(&format!("{}/{service}/releases", t.root)),
        t.keep
    );
    let _ = c.run("prune", &script, None).await;
}

async fn inspect_one(c: &Conn, t: &SshTarget, service: &str, binary: &str) -> HostState {
    let base = format!("{}/{service}", t.root);
    let units: Vec<String> = t.units(service, &c.host).into_iter().map(|(u, _)| u).collect();
    // One value per line: platform, release, binary digest, the unit file's digest and the one
    // slipway wrote, then one state for all units (the host is "active" only when every unit is).
    let script = format!(
        "uname -sm\n\
         l=$(readlink {base}/current 2>/dev/null || true); echo \"${{l#releases/}}\"\n\
         echo $(sha256sum {base}/current/{binary} 2>/dev/null | cut -d' ' -f1)\n\
         echo $(sha256sum /etc/systemd/system/{unit_file} 2>/dev/null | cut -d' ' -f1)\n\
         echo $(cat {base}/.unit.sha256 2>/dev/null)\n\
         s=active; for u in {units}; do a=$(systemctl is-active $u 2>/dev/null || true); [ \"$a\" = active ] || s=$a; done; echo $s",
        base = sq(&base),
        binary = sq(binary),
        unit_file = sq(&unit_file_name(t, service)),
        units = units.join(" "),
    );
    match c.run("inspect", &script, None).await {
        Ok(out) => {
            let lines: Vec<&str> = out.lines().map(str::trim).collect();
            let non_empty = |i: usize| lines.get(i).filter(|x| !x.is_empty()).map(|x| x.to_string());
            // A host staged before slipway remembered its unit has nothing to compare with.
            let unit_edited = match (non_empty(3), non_empty(4)) {
                (Some(now), Some(wrote)) if now != wrote => Some((now, wrote)),
                _ => None,
            };
            HostState {
                host: c.host.label(),
                platform: non_empty(0).and_then(|u| platform_of(&u)),
                release_dir: non_empty(1),
                sha256: non_empty(2),
                unit_edited,
                active: non_empty(5).unwrap_or_else(|| "unknown".into()),
                error: None,
            }
        }
        Err(e) => HostState {
            host: c.host.label(),
            platform: None,
            release_dir: None,
            sha256: None,
            unit_edited: None,
            active: "unknown".into(),
            error: Some(e.to_string()),
        },
    }
}

/// The order hosts switch in: by `group` when hosts have groups (in the order groups first
/// appear; ungrouped hosts alone), else `max_unavailable` hosts at a time.
fn batches(t: &SshTarget, strategy: &Strategy) -> Vec<Vec<usize>> {
    if t.hosts.iter().any(|h| h.group.is_some()) {
        let mut out: Vec<(Option<String>, Vec<usize>)> = Vec::new();
        for (i, h) in t.hosts.iter().enumerate() {
            match out.iter_mut().find(|(g, _)| h.group.is_some() && *g == h.group) {
                Some((_, v)) => v.push(i),
                None => out.push((h.group.clone(), vec![i])),
            }
        }
        return out.into_iter().map(|(_, v)| v).collect();
    }
    let size = match strategy {
        Strategy::Rolling { max_unavailable, .. } => max_unavailable.resolve(t.hosts.len() as u32, false).max(1),
        _ => 1,
    } as usize;
    (0..t.hosts.len()).collect::<Vec<_>>().chunks(size).map(<[usize]>::to_vec).collect()
}

fn conns(t: &SshTarget) -> Result<Vec<Arc<Conn>>, Step> {
    let dir = crate::ssh::control_dir().map_err(|e| Step::Error(DeployError::failed(e.to_string())))?;
    Ok(t.hosts.iter().map(|h| Arc::new(Conn::new(h, t, &dir))).collect())
}

async fn close_all(conns: &[Arc<Conn>]) {
    for c in conns {
        c.close().await;
    }
}

/// Puts a file into a remote agent's data directory at `rel` (`artifacts/sha256/<hex>` for a
/// binary, `artifacts/images/<id>.tar` for an image archive), checked there against the file's
/// SHA-256 `sha`; false when it was already there.
pub(crate) async fn upload_to_agent(
    t: &SshTarget,
    rel: &str,
    sha: &str,
    local: &std::path::Path,
) -> Result<bool, DeployError> {
    let fail = |e: HostError| DeployError::failed(format!("remote agent: {e}"));
    let conns = conns(t).map_err(|_| DeployError::failed("cannot create the ssh control directory"))?;
    let c = &conns[0];
    let dest = format!("{}/{rel}", t.root);
    let dir = dest.rsplit_once('/').map_or(t.root.clone(), |(d, _)| d.to_string());
    let script = format!(
        "set -e\n\
         if [ -f {dest} ] && [ \"$(sha256sum {dest} | cut -d' ' -f1)\" = {sha} ]; then echo present; exit 0; fi\n\
         mkdir -p {dir}\n\
         cat > {dest}.part\n\
         got=$(sha256sum {dest}.part | cut -d' ' -f1)\n\
         if [ \"$got\" != {sha} ]; then rm -f {dest}.part; echo \"checksum mismatch after upload: sha256:$got\" >&2; exit 4; fi\n\
         chmod 0555 {dest}.part\n\
         mv -f {dest}.part {dest}\n\
         echo uploaded",
        dest = sq(&dest),
        dir = sq(&dir),
        sha = sq(sha),
    );
    let r = c.run("upload", &script, Some(local)).await.map_err(fail);
    close_all(&conns).await;
    Ok(r?.trim() == "uploaded")
}

/// Opens a tunnel to a remote agent's socket.
pub async fn agent_tunnel(t: &SshTarget) -> Result<(crate::ssh::Tunnel, Arc<Conn>), DeployError> {
    let dir = crate::ssh::control_dir().map_err(|e| DeployError::failed(e.to_string()))?;
    let c = Arc::new(Conn::new(&t.hosts[0], t, &dir));
    let remote = format!("{}/agent.sock", t.root);
    match c.tunnel(&dir, &remote).await {
        Ok(tun) => Ok((tun, c)),
        Err(e) => Err(DeployError::new(ErrorKind::NoAgent, format!("no agent reachable: {e}"))
            .hint(format!("start it on {}: `slipway agent start --data-dir {}`", t.hosts[0].host, t.root))),
    }
}

/// An environment on ssh + systemd hosts.
pub struct Hosts {
    env: Environment,
    target: SshTarget,
    /// This machine's artifact store (binaries are uploaded from it).
    data_dir: PathBuf,
}

impl Hosts {
    pub fn new(env: &Environment, target: SshTarget, data_dir: PathBuf) -> Hosts {
        Hosts { env: env.clone(), target, data_dir }
    }

    /// Reads what every host runs.
    async fn inspect(&self, release: &Release) -> Vec<HostState> {
        let t = &self.target;
        let Ok(conns) = conns(t) else { return Vec::new() };
        let service = service_name(t, release);
        let mut set = JoinSet::new();
        for (i, c) in conns.iter().enumerate() {
            let (c, t, service, binary) = (Arc::clone(c), t.clone(), service.clone(), release.program().to_string());
            set.spawn(async move { (i, inspect_one(&c, &t, &service, &binary).await) });
        }
        let mut states: Vec<(usize, HostState)> = set.join_all().await;
        states.sort_by_key(|(i, _)| *i);
        close_all(&conns).await;
        states.into_iter().map(|(_, s)| s).collect()
    }

    /// What every host gets of `release`, its binaries checked in this machine's store.
    fn plan(&self, release: &Release) -> Result<Plan, Step> {
        let mut staged = Vec::new();
        for a in &release.artifacts {
            staged.push((a.clone(), artifacts::verify(&self.data_dir, a)?));
        }
        Ok(Plan {
            env: self.env.clone(),
            target: self.target.clone(),
            service: service_name(&self.target, release),
            binary: release.program().to_string(),
            dir: release_dir_name(release),
            version: release.version.clone(),
            artifacts: staged,
        })
    }

    async fn rollout_on(
        &self,
        cx: &Cx<'_>,
        old: Option<&Release>,
        new: &Release,
        conns: &[Arc<Conn>],
    ) -> Result<(), Step> {
        let (env, t) = (&self.env, &self.target);
        let plan = Arc::new(self.plan(new)?);
        // 1. Stage everywhere; nothing that runs changes, so a failure here needs no rollback.
        cx.say(format!("staging {} on {} host(s)", new.version, conns.len()));
        cx.record("stage", json!({"hosts": t.hosts.iter().map(SshHost::label).collect::<Vec<_>>()})).await?;
        let mut set = JoinSet::new();
        for c in conns {
            let (c, p) = (Arc::clone(c), Arc::clone(&plan));
            set.spawn(async move { (c.host.label(), stage(c, p).await) });
        }
        let mut failed = Vec::new();
        for (host, r) in set.join_all().await {
            match r {
                Ok(uploaded) => cx.say(format!(
                    "{host}: staged ({})",
                    if uploaded { "uploaded, checksum verified" } else { "already there" }
                )),
                Err(e) => failed.push(e.to_string()),
            }
        }
        if !failed.is_empty() {
            return Err(Step::Failed(format!("staging failed on {}; no host was changed", failed.join("; "))));
        }
        // 2. Switch in batches.
        let batches = batches(t, &env.strategy);
        let mut switched: Vec<usize> = Vec::new();
        for (b, chunk) in batches.iter().enumerate() {
            let names: Vec<String> = chunk.iter().map(|&i| conns[i].host.label()).collect();
            cx.say(format!("batch {}/{}: {} → {}", b + 1, batches.len(), names.join(", "), new.version));
            cx.record("switch", json!({"hosts": names})).await?;
            let mut set = JoinSet::new();
            for &i in chunk.iter() {
                let (c, p) = (Arc::clone(&conns[i]), Arc::clone(&plan));
                set.spawn(async move {
                    let r = switch(&c, &p.env, &p.target, &p.service, &p.dir).await;
                    (i, r)
                });
            }
            let results = set.join_all().await;
            switched.extend(chunk.iter().copied());
            let errors: Vec<String> =
                results.iter().filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string())).collect();
            if errors.is_empty() {
                for n in &names {
                    cx.say(format!("{n}: healthy on {}", new.version));
                }
                continue;
            }
            // 3. Put every switched host back.
            let report = self.undo(old, &plan.service, conns, &switched).await;
            let untouched = conns.len() - switched.len();
            return Err(Step::Failed(format!(
                "{}; {report}{}",
                errors.join("; "),
                if untouched > 0 { format!("; {untouched} host(s) never switched") } else { String::new() }
            )));
        }
        for c in conns {
            prune(c, t, &plan.service).await;
        }
        Ok(())
    }

    async fn undo(&self, old: Option<&Release>, service: &str, conns: &[Arc<Conn>], switched: &[usize]) -> String {
        let mut set = JoinSet::new();
        for &i in switched {
            let (c, t, env, service) =
                (Arc::clone(&conns[i]), self.target.clone(), self.env.clone(), service.to_string());
            let old_dir = old.map(release_dir_name);
            set.spawn(async move {
                let r = match &old_dir {
                    Some(d) => switch(&c, &env, &t, &service, d).await,
                    None => stop(&c, &t, &service).await,
                };
                (c.host.label(), r)
            });
        }
        let mut lines = Vec::new();
        for (host, r) in set.join_all().await {
            lines.push(match (r, old) {
                (Ok(()), Some(o)) => format!("{host} back on {}", o.version),
                (Ok(()), None) => format!("{host} stopped"),
                (Err(e), _) => format!("{host} NOT restored ({e})"),
            });
        }
        lines.sort();
        lines.join(", ")
    }
}

#[async_trait]
impl Target for Hosts {
    async fn check(&self) -> Result<(), DeployError> {
        // Hosts are reached while staging, where a failure changes nothing.
        Ok(())
    }

    async fn prepare(&self, _cx: &Cx<'_>, release: &Release) -> Result<(), DeployError> {
        for a in &release.artifacts {
            artifacts::verify(&self.data_dir, a)?;
        }
        Ok(())
    }

    async fn rollout(&self, cx: &Cx<'_>, old: Option<&Release>, new: &Release) -> Result<(), Step> {
        let conns = conns(&self.target)?;
        let r = self.rollout_on(cx, old, new, &conns).await;
        close_all(&conns).await;
        r
    }

    fn restores_itself(&self) -> bool {
        true
    }

    async fn restore(&self, _cx: &Cx<'_>, old: Option<&Release>, _failed: &Release) -> Result<String, Step> {
        // The rollout puts the hosts it switched back, host by host, as soon as one fails.
        Ok(match old {
            Some(o) => format!("hosts back on {}", o.version),
            None => "nothing ran here before".into(),
        })
    }

    async fn observe(&self, current: Option<&Release>, _known: &[Release]) -> Observation {
        let Some(c) = current else {
            return Observation { desired: self.target.hosts.len() as u32, ..Observation::default() };
        };
        let states = self.inspect(c).await;
        let unit_file = unit_file_name(&self.target, &service_name(&self.target, c));
        let mut o = Observation { desired: states.len() as u32, ..Observation::default() };
        for h in &states {
            let matches = h.matches(c);
            if matches {
                o.healthy += 1;
            } else {
                o.drift.extend(h.drift(c, &unit_file));
            }
            o.units.push(Unit {
                name: h.host.clone(),
                release: matches.then_some(c.id),
                version: h.release_dir.clone(),
                state: h.active.clone(),
                healthy: matches,
                matches,
                digest: h.sha256.clone(),
                error: h.error.clone(),
            });
        }
        if !states.is_empty() && states.iter().all(|h| h.error.is_some()) {
            o.unreachable = Some(format!("no host answers: {}", o.drift.join("; ")));
        }
        o
    }

    async fn reconcile(&self, cx: &Cx<'_>, current: &Release) -> Result<Vec<String>, DeployError> {
        let t = &self.target;
        let conns = conns(t).map_err(|_| DeployError::failed("cannot create the ssh control directory"))?;
        let plan = Arc::new(self.plan(current).map_err(|e| match e {
            Step::Error(e) => e,
            Step::Failed(why) => DeployError::failed(why),
        })?);
        let mut out = Vec::new();
        for c in &conns {
            let state = inspect_one(c, t, &plan.service, current.program()).await;
            if state.matches(current) {
                continue;
            }
            let why = state.drift(current, &unit_file_name(t, &plan.service)).unwrap_or_default();
            cx.record("repair", json!({"host": c.host.label(), "release": current.id, "drift": why})).await?;
            // Staged again (a replaced binary uploaded, an edited unit rewritten), then
            // switched and restarted with its health check.
            let r = async {
                let uploaded = stage(Arc::clone(c), Arc::clone(&plan)).await?;
                switch(c, &self.env, t, &plan.service, &plan.dir).await?;
                Ok::<_, HostError>(uploaded)
            }
            .await;
            out.push(match r {
                Ok(uploaded) => format!(
                    "{}: back on {}{}",
                    c.host.label(),
                    current.version,
                    if uploaded { " (binary uploaded again)" } else { "" }
                ),
                Err(e) => format!("could not restore {e}"),
            });
        }
        close_all(&conns).await;
        Ok(out)
    }

    async fn retire(&self, cx: &Cx<'_>, current: &Release) -> Result<Vec<String>, DeployError> {
        let t = &self.target;
        let service = service_name(t, current);
        let conns = conns(t).map_err(|_| DeployError::failed("cannot create the ssh control directory"))?;
        cx.record("retire", json!({"release": current.id, "service": service})).await?;
        let mut out = Vec::new();
        let mut failed = Vec::new();
        for c in &conns {
            match retire_one(c, t, &service).await {
                Ok(()) => out.push(format!("{}: stopped {service} and removed it", c.host.label())),
                Err(e) => failed.push(e.to_string()),
            }
        }
        close_all(&conns).await;
        if !failed.is_empty() {
            // The store keeps the environment as it was: the next pass tries again.
            return Err(DeployError::failed(format!("could not retire {}", failed.join("; "))));
        }
        Ok(out)
    }

    fn url(&self) -> String {
        if self.env.listen.is_empty() {
            self.target.hosts.iter().map(|h| format!("http://{}:{}", h.host, h.port)).collect::<Vec<_>>().join(" ")
        } else {
            format!("http://{}", self.env.listen)
        }
    }
}

#[cfg(test)]
mod tests {
    use slipway_model::environment::{Scale, SshHost, SshTarget, Strategy};

    fn target(groups: &[Option<&str>]) -> SshTarget {
        SshTarget {
            hosts: groups
                .iter()
                .enumerate()
                .map(|(i, g)| SshHost {
                    user: "u".into(),
                    host: format!("h{i}"),
                    ssh_port: 22,
                    port: 80,
                    group: g.map(str::to_string),
                })
                .collect(),
            ..SshTarget::new("/opt/slipway")
        }
    }

    #[test]
    fn hosts_switch_by_group_or_by_max_unavailable() {
        let rolling = |n| Strategy::Rolling { max_surge: Scale::Count(0), max_unavailable: Scale::Count(n) };
        assert_eq!(super::batches(&target(&[None, None, None]), &rolling(2)), [vec![0, 1], vec![2]]);
        assert_eq!(super::batches(&target(&[None, None, None]), &rolling(1)), [vec![0], vec![1], vec![2]]);
        let grouped = target(&[Some("eu"), Some("us"), Some("eu"), None]);
        assert_eq!(super::batches(&grouped, &rolling(1)), [vec![0, 2], vec![1], vec![3]]);
    }
}
