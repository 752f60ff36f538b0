//! The agent's wire types: the desired state of an environment (what the deploy engine asks
//! for) and its observed state (what the agent reports).

use serde::{Deserialize, Serialize};

/// What an environment should run on this agent, replacing the previous spec as a whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvSpec {
    /// The traffic entry point, `host:port`.
    pub listen: String,
    /// A second entry point that routes only to groups with `preview: true` (blue-green).
    #[serde(default)]
    pub preview_listen: Option<String>,
    pub health: HealthSpec,
    pub stop_grace_ms: u64,
    pub drain_timeout_ms: u64,
    /// One group per release that has instances here (old and new during a rollout).
    pub groups: Vec<GroupSpec>,
    /// The entry points' bounds on client connections.
    #[serde(default)]
    pub proxy: ProxySpec,
}

/// What an entry point allows its clients (see `slipway_model::ProxyLimits`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProxySpec {
    pub max_connections: u32,
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
}

impl Default for ProxySpec {
    fn default() -> ProxySpec {
        ProxySpec { max_connections: 1024, header_timeout_ms: 10_000, idle_timeout_ms: 60_000 }
    }
}

/// The instances of one release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupSpec {
    pub release: i64,
    pub version: String,
    /// Program and arguments; `{{port}}` is replaced by the instance's port (also `$PORT`).
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Secret variables: the agent reads `file:` sources itself when an instance starts;
    /// `env:` sources carry the deploying process's value, which the agent keeps in memory
    /// only (never in its state file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFrom>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// How many instances should run.
    pub instances: u32,
    /// Relative share of the entry point's traffic; 0 keeps the group out of it.
    pub weight: u32,
    /// Whether the preview entry point routes to this group.
    #[serde(default)]
    pub preview: bool,
    /// Unix milliseconds after which the agent stops the group by itself (the old set that
    /// blue-green keeps for an instant switch back).
    #[serde(default)]
    pub retire_at_ms: Option<u64>,
    /// Run each instance as a container of this image on the local Docker Engine instead of
    /// a process; `command` is then the arguments after the image's entrypoint.
    #[serde(default)]
    pub container: Option<ContainerSpec>,
}

/// One secret variable of a group.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvFrom {
    pub name: String,
    /// `env:NAME` or `file:PATH`.
    pub source: String,
    /// The value of an `env:` source, as the deploying process had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl std::fmt::Debug for EnvFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value: specs end up in logs and error messages.
        write!(f, "EnvFrom({} from {})", self.name, self.source)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerSpec {
    /// The image ID, `sha256:<hex>` (the config digest).
    pub image: String,
    #[serde(default)]
    pub memory: Option<i64>,
    #[serde(default)]
    pub nano_cpus: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProbeSpec {
    Http { path: String },
    Tcp,
    Command { command: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthSpec {
    pub probe: ProbeSpec,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub successes: u32,
    pub failures: u32,
    /// Restart an instance that was healthy and has failed its checks this long.
    #[serde(default)]
    pub restart_after_ms: Option<u64>,
}

/// What the agent observes for an environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvStatus {
    pub name: String,
    pub listen: String,
    pub preview_listen: Option<String>,
    pub groups: Vec<GroupStatus>,
    /// Client connections of each entry point (the main one first).
    #[serde(default)]
    pub connections: Vec<EntryConnections>,
}

/// What happened to the client connections of one entry point, since it opened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct EntryConnections {
    pub listen: String,
    /// Open now.
    pub open: u64,
    pub accepted: u64,
    /// Turned away at `max_connections` while every connection had a request in flight.
    pub refused: u64,
    /// Closed at `max_connections` to make room (the one idle the longest).
    pub evicted: u64,
    /// Closed after `idle_timeout` without a request in flight.
    pub timed_out: u64,
}

impl EnvStatus {
    pub fn group(&self, release: i64) -> Option<&GroupStatus> {
        self.groups.iter().find(|g| g.release == release)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupStatus {
    pub release: i64,
    pub version: String,
    pub weight: u32,
    pub desired: u32,
    pub instances: Vec<InstanceStatus>,
    pub traffic: Traffic,
}

impl GroupStatus {
    /// Instances that pass their health check and take traffic.
    pub fn healthy(&self) -> u32 {
        self.instances.iter().filter(|i| i.state == InstanceState::Healthy).count() as u32
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Started, not yet passing its health check.
    Starting,
    Healthy,
    /// Was healthy, now failing its health check: out of traffic.
    Unhealthy,
    /// Out of traffic, finishing its requests before it stops.
    Draining,
    /// Exited; restarts after a back-off.
    Crashed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub id: u64,
    pub port: u16,
    pub pid: Option<u32>,
    /// The container's name, for container instances.
    #[serde(default)]
    pub container: Option<String>,
    pub state: InstanceState,
    pub restarts: u32,
    /// The last health check or exit failure, e.g. `GET /healthz: 503` or `exited with 1`.
    pub last_error: Option<String>,
    pub log: String,
    /// Since when (Unix ms) the instance is in its state.
    #[serde(default)]
    pub since_ms: Option<u64>,
}

/// Cumulative traffic counters of a group through the agent's proxy since the group began.
/// Differences of two samples give a window's rates and percentiles.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    pub requests: u64,
    /// Answers with status ≥ 500, and requests the proxy could not forward.
    pub errors: u64,
    /// Counts per bucket of [`LATENCY_BUCKETS_MS`] (the last one is +Inf).
    pub latency: Vec<u64>,
    /// Sum of all latencies, microseconds.
    #[serde(default)]
    pub latency_sum_us: u64,
}

/// Upper bounds of the latency histogram, milliseconds.
pub const LATENCY_BUCKETS_MS: &[f64] =
    &[0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];

impl Traffic {
    /// The counters gathered between `earlier` and `self`.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: self
                .latency
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
                .collect(),
            latency_sum_us: self.latency_sum_us.saturating_sub(earlier.latency_sum_us),
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    /// The `q` quantile (0..1) in milliseconds, interpolated inside its bucket as Prometheus'
    /// `histogram_quantile` does; `None` without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (i, n) in self.latency.iter().enumerate() {
            if *n > 0 && (seen + n) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { LATENCY_BUCKETS_MS[i - 1] };
                let Some(hi) = LATENCY_BUCKETS_MS.get(i) else { return Some(lo) };
                return Some(lo + (hi - lo) * ((rank - seen as f64) / *n as f64));
            }
            seen += n;
        }
        LATENCY_BUCKETS_MS.last().copied()
    }
}

/// `GET /v1/agent`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentInfo {
    pub version: String,
    pub pid: u32,
    pub started_at_ms: u64,
    /// The agent's machine, Go's way (`linux/amd64`): which of a release's binaries it runs.
    #[serde(default)]
    pub platform: Option<String>,
    /// Its data directory, as it sees it (where artifacts sent to it are kept).
    #[serde(default)]
    pub data_dir: Option<String>,
}

/// An error answer: `{"error": ..., "hint": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub hint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let mut t = Traffic { requests: 100, latency: vec![0; LATENCY_BUCKETS_MS.len() + 1], ..Traffic::default() };
        t.latency[2] = 90; // 0.5..1 ms
        t.latency[5] = 10; // 5..10 ms
        assert_eq!(t.quantile_ms(0.5), Some(0.5 + 0.5 * (50.0 / 90.0)));
        assert_eq!(t.quantile_ms(0.95), Some(5.0 + 5.0 * 0.5));
        let none = Traffic::default();
        assert_eq!(none.quantile_ms(0.99), None);
        let later =
            Traffic { requests: 150, errors: 5, latency: t.latency.iter().map(|n| n + 1).collect(), latency_sum_us: 0 };
        let w = later.since(&t);
        assert_eq!((w.requests, w.errors), (50, 5));
        assert!((w.error_rate() - 0.1).abs() < 1e-9);
    }
}
