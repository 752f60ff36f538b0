//! The `ssh` target: a release rolled out across Linux hosts with systemd. Every host first
//! gets the release staged (binary uploaded once and checked by SHA-256, `run` script, env
//! file, unit) without touching what runs; then hosts switch in batches of `max_unavailable`
//! (`current` link, restart, health check). The first host that fails stops the rollout: its
//! batch and every host already switched go back to the previous release (a link switch and
//! a restart, no upload), and the report says which host failed at which step and why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use slipway_pipeline::environment::{Environment, Probe, SshHost, SshTarget, Strategy};
use slipway_store::Release;
use tokio::task::JoinSet;

use crate::engine::{Failure, Step};
use crate::ssh::{Conn, HostError, sq};
use crate::{Engine, artifacts, systemd};

/// A release's directory name on a host: version and digest, so a rebuilt version never
/// overwrites the bytes that run.
pub fn release_dir_name(r: &Release) -> String {
    let v: String =
        r.version.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    format!("{v}-{}", &r.artifacts[0].sha256[..12])
}

fn service_name(t: &SshTarget, r: &Release) -> String {
    t.service.clone().unwrap_or_else(|| r.artifacts[0].name.clone())
}

/// What one host runs, read back from it.
#[derive(Debug, Clone)]
pub struct HostState {
    pub host: String,
    /// The release directory `current` points to.
    pub release_dir: Option<String>,
    pub sha256: Option<String>,
    /// `systemctl is-active`.
    pub active: String,
    pub error: Option<String>,
}

impl HostState {
    pub fn matches(&self, r: &Release) -> bool {
        self.release_dir.as_deref() == Some(release_dir_name(r).as_str())
            && self.sha256.as_deref() == Some(r.artifacts[0].sha256.as_str())
            && self.active == "active"
    }
}

struct Plan {
    env: Environment,
    target: SshTarget,
    service: String,
    binary: String,
    sha: String,
    local: PathBuf,
    dir: String,
    version: String,
}

async fn stage(c: Arc<Conn>, p: Arc<Plan>) -> Result<bool, HostError> {
    let rel = format!("{}/{}/releases/{}", p.target.root, p.service, p.dir);
    let check = format!(
        "set -e\n\
         command -v systemctl >/dev/null 2>&1 || {{ echo 'systemctl not found: the ssh target needs a host with systemd' >&2; exit 3; }}\n\
         mkdir -p {rel}\n\
         if [ -f {bin} ] && [ \"$(sha256sum {bin} | cut -d' ' -f1)\" = {sha} ]; then echo present; else echo missing; fi",
        rel = sq(&rel),
        bin = sq(&format!("{rel}/{}", p.binary)),
        sha = sq(&p.sha),
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
            sha = sq(&p.sha),
            bin = sq(&format!("{rel}/{}", p.binary)),
        );
        if let Err(e) = c.run("upload", &upload, Some(&p.local)).await {
            let _ = c.run("clean up", &format!("rm -f {}", sq(&part)), None).await;
            return Err(e);
        }
    }
    let template = p.target.instances > 1;
    let port = (!template).then_some(c.host.port);
    let unit_file = if template { format!("{}@.service", p.service) } else { format!("{}.service", p.service) };
    let files = format!(
        "set -e\n\
         umask 077\n\
         printf '%s' {env} > {rel}/env\n\
         umask 022\n\
         printf '%s' {run} > {rel}/run\n\
         chmod 0755 {rel}/run\n\
         printf '%s' {unit} > /etc/systemd/system/.{unit_file}.part\n\
         mv -f /etc/systemd/system/.{unit_file}.part /etc/systemd/system/{unit_file}\n\
         systemctl daemon-reload",
        env = sq(&systemd::env_file(&p.env, &p.version, port)),
        run = sq(&systemd::run_script(&p.env, &rel, &p.binary, port)),
        unit = sq(&systemd::unit(&p.env, &p.target, &p.service)),
        rel = sq(&rel),
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

async fn probe(c: &Conn, p: &Probe, timeout: Duration, port: u16) -> Result<(), String> {
    let addr = (c.host.host.as_str(), port);
    let work = async {
        match p {
            Probe::Tcp => {
                tokio::net::TcpStream::connect(addr).await.map(|_| ()).map_err(|e| format!("TCP connect: {e}"))
            }
            Probe::Http(path) => {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("GET {path}: {e}"))?;
                let req = format!(
                    "GET {path} HTTP/1.0\r\nHost: {}:{}\r\nUser-Agent: slipway-health\r\n\r\n",
                    c.host.host, port
                );
                s.write_all(req.as_bytes()).await.map_err(|e| format!("GET {path}: {e}"))?;
                let mut head = vec![0u8; 64];
                let n = s.read(&mut head).await.map_err(|e| format!("GET {path}: {e}"))?;
                let line = String::from_utf8_lossy(&head[..n]).lines().next().unwrap_or("").to_string();
                let code: u16 = line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                if (200..400).contains(&code) { Ok(()) } else { Err(format!("GET {path}: {}", line.trim())) }
            }
            Probe::Command(cmd) => c
                .run("health", &format!("PORT={port} sh -c {}", sq(cmd)), None)
                .await
                .map(|_| ())
                .map_err(|e| format!("`{cmd}`: {}", e.message)),
        }
    };
    tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
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
    // One line per unit from is-active; the host is "active" only when every unit is.
    let script = format!(
        "l=$(readlink {base}/current 2>/dev/null || true); echo \"${{l#releases/}}\"\n\
         sha256sum {base}/current/{binary} 2>/dev/null | cut -d' ' -f1; echo\n\
         s=active; for u in {units}; do a=$(systemctl is-active $u 2>/dev/null || true); [ \"$a\" = active ] || s=$a; done; echo $s",
        base = sq(&base),
        binary = sq(binary),
        units = units.join(" "),
    );
    match c.run("inspect", &script, None).await {
        Ok(out) => {
            let lines: Vec<&str> = out.lines().map(str::trim).collect();
            let non_empty = |s: Option<&&str>| s.filter(|x| !x.is_empty()).map(|x| x.to_string());
            HostState {
                host: c.host.label(),
                release_dir: non_empty(lines.first()),
                sha256: non_empty(lines.get(1)),
                active: lines.iter().rev().find(|l| !l.is_empty()).map_or("unknown".into(), |s| s.to_string()),
                error: None,
            }
        }
        Err(e) => HostState {
            host: c.host.label(),
            release_dir: None,
            sha256: None,
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
    let dir = crate::ssh::control_dir()
        .map_err(|e| Step::Error(crate::DeployError::new(crate::exit::FAILED, e.to_string())))?;
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
) -> Result<bool, crate::DeployError> {
    let fail = |e: HostError| crate::DeployError::new(crate::exit::FAILED, format!("remote agent: {e}"));
    let conns = conns(t)
        .map_err(|_| crate::DeployError::new(crate::exit::FAILED, "cannot create the ssh control directory"))?;
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
pub async fn agent_tunnel(t: &SshTarget) -> Result<(crate::ssh::Tunnel, Arc<Conn>), crate::DeployError> {
    let dir = crate::ssh::control_dir().map_err(|e| crate::DeployError::new(crate::exit::FAILED, e.to_string()))?;
    let c = Arc::new(Conn::new(&t.hosts[0], t, &dir));
    let remote = format!("{}/agent.sock", t.root);
    match c.tunnel(&dir, &remote).await {
        Ok(tun) => Ok((tun, c)),
        Err(e) => Err(crate::DeployError::new(crate::exit::NO_AGENT, format!("no agent reachable: {e}"))
            .hint(format!("start it on {}: `slipway agent start --data-dir {}`", t.hosts[0].host, t.root))),
    }
}

impl Engine {
    /// Reads what every host of an ssh environment runs.
    pub async fn inspect_hosts(&self, env: &Environment, release: &Release) -> Vec<HostState> {
        let slipway_pipeline::environment::Target::Ssh(t) = &env.target else { return Vec::new() };
        let Ok(conns) = conns(t) else { return Vec::new() };
        let service = service_name(t, release);
        let mut set = JoinSet::new();
        for (i, c) in conns.iter().enumerate() {
            let (c, t, service, binary) =
                (Arc::clone(c), t.clone(), service.clone(), release.artifacts[0].name.clone());
            set.spawn(async move { (i, inspect_one(&c, &t, &service, &binary).await) });
        }
        let mut states: Vec<(usize, HostState)> = set.join_all().await;
        states.sort_by_key(|(i, _)| *i);
        close_all(&conns).await;
        states.into_iter().map(|(_, s)| s).collect()
    }

    /// Puts every host of an ssh environment back on `current` where it runs anything else
    /// (after an interrupted deploy); returns one line per host it changed.
    pub(crate) async fn ssh_restore(&self, env: &Environment, t: &SshTarget, current: &Release) -> Vec<String> {
        let Ok(conns) = conns(t) else { return Vec::new() };
        let service = service_name(t, current);
        let mut out = Vec::new();
        for c in &conns {
            let state = inspect_one(c, t, &service, &current.artifacts[0].name).await;
            if state.matches(current) {
                continue;
            }
            let r = switch(c, env, t, &service, &release_dir_name(current))
                .await
                .map(|()| format!("{}: back on {}", c.host.label(), current.version));
            out.push(r.unwrap_or_else(|e| format!("could not restore {e}")));
        }
        close_all(&conns).await;
        out
    }

    pub(crate) async fn ssh_rollout(
        &self,
        env: &Environment,
        t: &SshTarget,
        old: Option<&Release>,
        new: &Release,
    ) -> Result<(), Step> {
        let conns = conns(t)?;
        let r = self.ssh_rollout_on(env, t, old, new, &conns).await;
        close_all(&conns).await;
        r
    }

    async fn ssh_rollout_on(
        &self,
        env: &Environment,
        t: &SshTarget,
        old: Option<&Release>,
        new: &Release,
        conns: &[Arc<Conn>],
    ) -> Result<(), Step> {
        let local = artifacts::verify(&self.data_dir, &new.artifacts[0])?;
        let plan = Arc::new(Plan {
            env: env.clone(),
            target: t.clone(),
            service: service_name(t, new),
            binary: new.artifacts[0].name.clone(),
            sha: new.artifacts[0].sha256.clone(),
            local,
            dir: release_dir_name(new),
            version: new.version.clone(),
        });
        // 1. Stage everywhere; nothing that runs changes, so a failure here needs no rollback.
        self.say(format!("staging {} on {} host(s)", new.version, conns.len()));
        self.store
            .record_step(new.id, "stage", &json!({"hosts": t.hosts.iter().map(SshHost::label).collect::<Vec<_>>()}))
            .await?;
        let mut set = JoinSet::new();
        for c in conns {
            let (c, p) = (Arc::clone(c), Arc::clone(&plan));
            set.spawn(async move { (c.host.label(), stage(c, p).await) });
        }
        let mut failed = Vec::new();
        for (host, r) in set.join_all().await {
            match r {
                Ok(uploaded) => self.say(format!(
                    "{host}: staged ({})",
                    if uploaded { "uploaded, checksum verified" } else { "already there" }
                )),
                Err(e) => failed.push(e.to_string()),
            }
        }
        if !failed.is_empty() {
            return Err(Step::Failed(Failure(format!("staging failed on {}; no host was changed", failed.join("; ")))));
        }
        // 2. Switch in batches.
        let batches = batches(t, &env.strategy);
        let mut switched: Vec<usize> = Vec::new();
        for (b, chunk) in batches.iter().enumerate() {
            let names: Vec<String> = chunk.iter().map(|&i| conns[i].host.label()).collect();
            self.say(format!("batch {}/{}: {} → {}", b + 1, batches.len(), names.join(", "), new.version));
            self.store.record_step(new.id, "switch", &json!({"hosts": names})).await?;
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
                    self.say(format!("{n}: healthy on {}", new.version));
                }
                continue;
            }
            // 3. Put every switched host back.
            let report = self.ssh_undo(env, t, old, &plan.service, conns, &switched).await;
            let untouched = conns.len() - switched.len();
            return Err(Step::Failed(Failure(format!(
                "{}; {report}{}",
                errors.join("; "),
                if untouched > 0 { format!("; {untouched} host(s) never switched") } else { String::new() }
            ))));
        }
        for c in conns {
            prune(c, t, &plan.service).await;
        }
        Ok(())
    }

    async fn ssh_undo(
        &self,
        env: &Environment,
        t: &SshTarget,
        old: Option<&Release>,
        service: &str,
        conns: &[Arc<Conn>],
        switched: &[usize],
    ) -> String {
        let mut set = JoinSet::new();
        for &i in switched {
            let (c, t, env, service) = (Arc::clone(&conns[i]), t.clone(), env.clone(), service.to_string());
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

#[cfg(test)]
mod tests {
    use slipway_pipeline::environment::{Scale, SshHost, SshTarget, Strategy};

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
