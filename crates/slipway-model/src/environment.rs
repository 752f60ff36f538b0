//! The `environments:` section's validated model: where a service runs, how many instances,
//! how a new release replaces the old one, how health is judged, and who may deploy.

use std::time::Duration;

/// One environment (`environments:<name>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub target: Target,
    pub service: Service,
    /// Instances of the service (≥ 1).
    pub instances: u32,
    /// The traffic entry point: `host:port` the agent's proxy listens on.
    pub listen: String,
    pub strategy: Strategy,
    pub health: HealthCheck,
    /// The environment whose running artifacts `slipway promote` deploys here.
    pub promote_from: Option<String>,
    pub protection: Protection,
    /// The agent runs on another machine, reached over SSH (`agent:`); `None` is this one.
    pub agent: Option<RemoteAgent>,
    /// SIGTERM → this long → SIGKILL when an instance stops.
    pub stop_grace: Duration,
    /// How long an instance taken out of traffic may finish its requests before it is stopped.
    pub drain_timeout: Duration,
    /// What the entry point allows its clients (`proxy:`).
    pub proxy: ProxyLimits,
    /// What the server does after a rollout (`watch:`).
    pub watch: Watch,
    /// Releases deploy here only when signed by one of these keys (`require_signature:`).
    pub require_signature: Option<SignaturePolicy>,
}

/// `require_signature: {keys: [...]}`: a deploy, promote, rollback or sync of a release
/// whose artifacts are not signed by one of `keys` is refused before any target is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignaturePolicy {
    /// PEM public keys (cosign's `.pub` format).
    pub keys: Vec<String>,
}

/// The post-deploy watch (`watch:`): for `window` after a rollout, an alert tied to the
/// environment (labelled `environment: <name>`, among `alerts` when listed) that became active
/// after the release started rolls it back (`alert-rollback`).
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub window: Duration,
    pub rollback: bool,
    /// Only these alerts (by name); every alert tied to the environment when empty.
    pub alerts: Vec<String>,
}

impl Default for Watch {
    fn default() -> Watch {
        Watch { window: Duration::from_secs(600), rollback: true, alerts: Vec::new() }
    }
}

/// The entry point's bounds on what clients may hold (`proxy:`), so that idle or half-sent
/// connections cannot use up the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyLimits {
    /// Client connections open at once. At the limit a new connection closes the one idle the
    /// longest; when every connection has a request in flight, it is refused.
    pub max_connections: u32,
    /// A request's headers must arrive within this long of its first byte.
    pub header_timeout: Duration,
    /// A connection with no request in flight (idle keep-alive, half-sent headers, an HTTP/2
    /// connection without streams) is closed after this long.
    pub idle_timeout: Duration,
}

impl Default for ProxyLimits {
    fn default() -> ProxyLimits {
        ProxyLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The agent on this machine.
    Local,
    /// Linux hosts over SSH, the service run by systemd.
    Ssh(SshTarget),
    /// Containers on this machine's Docker Engine, behind the agent's proxy.
    Docker(DockerTarget),
}

/// `target: docker` and its `docker:` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerTarget {
    /// Memory limit per container, bytes.
    pub memory: Option<u64>,
    /// CPU limit per container, in billionths of a CPU (Docker's NanoCpus; 500000000 = half).
    pub nano_cpus: Option<i64>,
    /// Images of this many releases stay loaded (and their archives stored), so a rollback
    /// needs no pull or load.
    pub keep_images: u32,
}

/// An agent on another machine (`agent:`), and how its socket is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAgent {
    /// `agent: {ssh: URL, …}`: through an SSH tunnel to its socket; the release's binary is
    /// uploaded to its data directory over SSH. `hosts` holds the one host and `root` the
    /// remote data directory.
    Ssh(SshTarget),
    /// `agent: {name: N}` (or `agent: N`): an agent connected to the server
    /// (`slipway agent --server URL --name N`), reached through the tunnel it keeps open to
    /// the server; artifacts are sent through its API. Only a server deploys to it.
    Connected { name: String },
}

/// `target: ssh` and its `ssh:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub hosts: Vec<SshHost>,
    /// Private key file (relative to the project); default: ssh's own (agent, ~/.ssh).
    pub identity: Option<String>,
    /// known_hosts file (relative to the project); default: ssh's own. Never skipped.
    pub known_hosts: Option<String>,
    /// Where releases live on a host: `<root>/<service>/releases/<version>`, `<root>/<service>/current`.
    pub root: String,
    /// The systemd unit and directory name (default: the binary's name).
    pub service: Option<String>,
    /// Releases kept on each host (the current one included).
    pub keep: u32,
    /// The unit's `User=`; default a `DynamicUser=`.
    pub user: Option<String>,
    pub connect_timeout: std::time::Duration,
    /// Each remote step's limit.
    pub command_timeout: std::time::Duration,
    /// Instances per host: above 1, a template unit `<service>@.service` runs one instance per
    /// port (`port`, `port+1`, …), restarted one at a time so the host keeps answering.
    pub instances: u32,
}

impl SshTarget {
    /// No hosts yet, everything else at its default; `root` as given.
    pub fn new(root: &str) -> SshTarget {
        SshTarget {
            hosts: Vec::new(),
            identity: None,
            known_hosts: None,
            root: root.into(),
            service: None,
            keep: 5,
            user: None,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(120),
            instances: 1,
        }
    }

    /// The units on a host and their ports.
    pub fn units(&self, service: &str, host: &SshHost) -> Vec<(String, u16)> {
        if self.instances <= 1 {
            return vec![(service.to_string(), host.port)];
        }
        (0..self.instances as u16).map(|i| (format!("{service}@{}", host.port + i), host.port + i)).collect()
    }
}

/// One host: `ssh://user@host:port`, and the port the service listens on there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHost {
    pub user: String,
    pub host: String,
    pub ssh_port: u16,
    /// The service's port on this host (`{{port}}`, `$PORT`, and the health check's).
    pub port: u16,
    /// Hosts of one group switch together, group after group (instead of `max_unavailable`
    /// hosts at a time).
    pub group: Option<String>,
}

impl SshHost {
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.ssh_port)
    }
}

/// Parses `ssh://user@host[:port]` (port 22 by default; IPv6 hosts in brackets).
pub fn parse_ssh_url(s: &str) -> Result<(String, String, u16), String> {
    let rest = s.strip_prefix("ssh://").ok_or("must start with `ssh://`")?;
    let (user, hostport) = rest.split_once('@').ok_or("needs a user: `ssh://user@host`")?;
    if user.is_empty() || hostport.contains('/') {
        return Err("must be `ssh://user@host[:port]`".into());
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("an IPv6 host needs a closing `]`")?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("port `{p}` is not a number from 1 to 65535"))?,
        None => 22,
    };
    Ok((user.to_string(), host, port))
}

/// What to run: a binary of the build and how to start it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Service {
    /// The binary's name in the build's manifest; `None` when the build has exactly one.
    pub binary: Option<String>,
    /// Arguments; `{{port}}` is replaced by the instance's port (which is also in `$PORT`).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Variables whose values are not in the file: read when an instance starts
    /// (`value_from: env:NAME` from the deploying process, `file:PATH` by the agent), and
    /// recorded by reference only.
    pub env_from: Vec<(String, EnvSource)>,
    pub workdir: Option<String>,
}

/// Where a secret variable's value comes from (`value_from:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// The deploying process's environment variable.
    Env(String),
    /// A file on the agent's machine (absolute path); its content, less a final newline.
    File(String),
}

impl EnvSource {
    /// Parses `env:NAME` or `file:/absolute/path`.
    pub fn parse(s: &str) -> Result<EnvSource, String> {
        if let Some(name) = s.strip_prefix("env:") {
            let ok = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            return match ok {
                true => Ok(EnvSource::Env(name.to_string())),
                false => Err(format!("`{name}` is not an environment variable name")),
            };
        }
        if let Some(path) = s.strip_prefix("file:") {
            return match path.starts_with('/') && !path.contains('\n') {
                true => Ok(EnvSource::File(path.to_string())),
                false => Err(format!("`{path}` is not an absolute path (the agent reads it on its machine)")),
            };
        }
        Err(format!("`{s}` is neither `env:NAME` nor `file:/PATH`"))
    }
}

impl std::fmt::Display for EnvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvSource::Env(n) => write!(f, "env:{n}"),
            EnvSource::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// A count of instances, or a percentage of the desired count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Count(u32),
    Percent(u32),
}

impl Scale {
    /// Kubernetes' rounding: surge rounds up, unavailability rounds down.
    pub fn resolve(self, total: u32, round_up: bool) -> u32 {
        match self {
            Scale::Count(n) => n,
            Scale::Percent(p) => {
                let x = u64::from(total) * u64::from(p);
                (if round_up { x.div_ceil(100) } else { x / 100 }) as u32
            }
        }
    }
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scale::Count(n) => write!(f, "{n}"),
            Scale::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Rolling { max_surge: Scale, max_unavailable: Scale },
    Canary { steps: Vec<CanaryStep>, analysis: Analysis },
    BlueGreen { preview: Option<String>, keep_old: Duration },
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Rolling { .. } => "rolling",
            Strategy::Canary { .. } => "canary",
            Strategy::BlueGreen { .. } => "blue-green",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CanaryStep {
    /// Send this percentage of traffic to the new release.
    Weight(u32),
    /// Hold the current weight this long, analysing the new release's traffic.
    Pause(Duration),
    /// Hold until `slipway approve`.
    Manual,
}

/// How a canary's own traffic is judged at each analysis interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub interval: Duration,
    /// Highest share of 5xx answers (0..=1).
    pub max_error_rate: f64,
    pub max_p95: Option<Duration>,
    pub max_p99: Option<Duration>,
    /// Fewer requests than this in an interval are not judged.
    pub min_requests: u64,
    /// Also compare with the stable release in the same window: fail when the canary's
    /// error rate exceeds the stable one's by more than `max_error_rate`, or its p95/p99
    /// latency exceeds the stable one's by more than `max_latency_increase` (and by more than
    /// 5 ms, below which latency differences are noise).
    pub compare_stable: bool,
    /// How much slower than the stable release the canary may be (0.5 = 50%).
    pub max_latency_increase: f64,
    /// What a pause decides when none of its windows had `min_requests` to judge: an
    /// unjudged canary is not a good one (default `Fail`: roll back).
    pub on_inconclusive: OnInconclusive,
    /// Queries on an external Prometheus judged at each interval too (`prometheus:`).
    pub prometheus: Option<PromAnalysis>,
}

/// `analysis.prometheus`: a Prometheus' HTTP API, and the queries whose value must stay within
/// bounds (`$VERSION`, `$STABLE_VERSION`, `$ENVIRONMENT`, `$RELEASE` are replaced first).
#[derive(Debug, Clone, PartialEq)]
pub struct PromAnalysis {
    /// `http://host:port` (and a path prefix, if Prometheus has one).
    pub url: String,
    pub queries: Vec<PromCheck>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PromCheck {
    pub query: String,
    /// The canary fails when any value of the result is above `max` (or below `min`).
    pub max: Option<f64>,
    pub min: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInconclusive {
    /// Roll back: the canary was never shown to work.
    Fail,
    /// Go on as if it passed (for environments that get little traffic).
    Pass,
}

impl Default for Analysis {
    fn default() -> Analysis {
        Analysis {
            interval: Duration::from_secs(10),
            max_error_rate: 0.01,
            max_p95: None,
            max_p99: None,
            min_requests: 10,
            compare_stable: true,
            max_latency_increase: 1.0,
            on_inconclusive: OnInconclusive::Fail,
            prometheus: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// GET this path on the instance; 2xx or 3xx is healthy.
    Http(String),
    /// The instance's port accepts a connection.
    Tcp,
    /// `sh -c` exits 0 (`$PORT` is set).
    Command(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes before an instance takes traffic.
    pub successes: u32,
    /// Consecutive failures before a healthy instance is taken out of traffic.
    pub failures: u32,
    /// A new release that is not healthy by then is rolled back.
    pub deadline: Duration,
    /// An instance that was healthy and has failed its checks this long is restarted (with
    /// the crash back-off), like a Kubernetes liveness probe; `None` never restarts it.
    pub restart_after: Option<Duration>,
}

impl Default for HealthCheck {
    fn default() -> HealthCheck {
        HealthCheck {
            probe: Probe::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            successes: 1,
            failures: 3,
            deadline: Duration::from_secs(60),
            restart_after: Some(Duration::from_secs(30)),
        }
    }
}

/// Who may deploy, from where.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Protection {
    /// Approvals a release needs before it deploys here.
    pub approvals: u32,
    /// Who may approve (empty: anyone).
    pub approvers: Vec<String>,
    /// Branches (globs) deploys may come from (empty: any).
    pub branches: Vec<String>,
}

impl Protection {
    pub fn is_protected(&self) -> bool {
        self.approvals > 0 || !self.branches.is_empty()
    }
}
