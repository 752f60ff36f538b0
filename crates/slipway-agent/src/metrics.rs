//! The agent's Prometheus exposition (text format 0.0.4): per environment and release,
//! proxied requests, errors and a latency histogram, instances by state, restarts.

use std::fmt::Write;

use slipway_api::{EnvStatus, InstanceState, LATENCY_BUCKETS_MS};

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render(envs: &[EnvStatus]) -> String {
    let mut out = String::new();
    let mut section = |name: &str, kind: &str, help: &str, body: &dyn Fn(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        body(&mut out);
    };
    section("slipway_proxy_requests_total", "counter", "Requests through the entry point, by release.", &|o| {
        for e in envs {
            for g in &e.groups {
                let _ = writeln!(
                    o,
                    "slipway_proxy_requests_total{{environment=\"{}\",version=\"{}\",release=\"{}\"}} {}",
                    label(&e.name),
                    label(&g.version),
                    g.release,
                    g.traffic.requests
                );
            }
        }
    });
    section(
        "slipway_proxy_errors_total",
        "counter",
        "Requests answered with a 5xx status or not forwarded, by release.",
        &|o| {
            for e in envs {
                for g in &e.groups {
                    let _ = writeln!(
                        o,
                        "slipway_proxy_errors_total{{environment=\"{}\",version=\"{}\",release=\"{}\"}} {}",
                        label(&e.name),
                        label(&g.version),
                        g.release,
                        g.traffic.errors
                    );
                }
            }
        },
    );
    section(
        "slipway_proxy_request_duration_seconds",
        "histogram",
        "Time from request to response headers through the proxy.",
        &|o| {
            for e in envs {
                for g in &e.groups {
                    let labels = format!(
                        "environment=\"{}\",version=\"{}\",release=\"{}\"",
                        label(&e.name),
                        label(&g.version),
                        g.release
                    );
                    let mut acc = 0;
                    for (i, n) in g.traffic.latency.iter().enumerate() {
                        acc += n;
                        let le = LATENCY_BUCKETS_MS.get(i).map_or("+Inf".to_string(), |ms| format!("{}", ms / 1000.0));
                        let _ =
                            writeln!(o, "slipway_proxy_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {acc}");
                    }
                    let sum = g.traffic.latency_sum_us as f64 / 1e6;
                    let _ = writeln!(o, "slipway_proxy_request_duration_seconds_sum{{{labels}}} {sum}");
                    let _ = writeln!(o, "slipway_proxy_request_duration_seconds_count{{{labels}}} {acc}");
                }
            }
        },
    );
    section("slipway_proxy_connections", "gauge", "Client connections open at an entry point.", &|o| {
        for e in envs {
            for c in &e.connections {
                let _ = writeln!(
                    o,
                    "slipway_proxy_connections{{environment=\"{}\",listen=\"{}\"}} {}",
                    label(&e.name),
                    label(&c.listen),
                    c.open
                );
            }
        }
    });
    section(
        "slipway_proxy_connections_closed_total",
        "counter",
        "Client connections the entry point refused or closed itself, by reason (refused: at the limit with every connection busy; evicted: idle, closed at the limit for a new one; idle: idle_timeout).",
        &|o| {
            for e in envs {
                for c in &e.connections {
                    for (reason, n) in [("refused", c.refused), ("evicted", c.evicted), ("idle", c.timed_out)] {
                        let _ = writeln!(
                            o,
                            "slipway_proxy_connections_closed_total{{environment=\"{}\",listen=\"{}\",reason=\"{reason}\"}} {n}",
                            label(&e.name),
                            label(&c.listen),
                        );
                    }
                }
            }
        },
    );
    section("slipway_instances", "gauge", "Instances by state.", &|o| {
        for e in envs {
            for g in &e.groups {
                for state in [
                    InstanceState::Starting,
                    InstanceState::Healthy,
                    InstanceState::Unhealthy,
                    InstanceState::Draining,
                    InstanceState::Crashed,
                ] {
                    let n = g.instances.iter().filter(|i| i.state == state).count();
                    let s = serde_json::to_value(state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let _ = writeln!(
                        o,
                        "slipway_instances{{environment=\"{}\",version=\"{}\",release=\"{}\",state=\"{s}\"}} {n}",
                        label(&e.name),
                        label(&g.version),
                        g.release
                    );
                }
            }
        }
    });
    section("slipway_instance_restarts_total", "counter", "Restarts after crashes, by release.", &|o| {
        for e in envs {
            for g in &e.groups {
                let n: u32 = g.instances.iter().map(|i| i.restarts).sum();
                let _ = writeln!(
                    o,
                    "slipway_instance_restarts_total{{environment=\"{}\",version=\"{}\",release=\"{}\"}} {n}",
                    label(&e.name),
                    label(&g.version),
                    g.release
                );
            }
        }
    });
    out
}
