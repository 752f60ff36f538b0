//! Compiles the `environments:` section: every field checked with its position, then the
//! checks across environments (promotion chains, entry points used twice).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use super::Cx;
use crate::diag::{Span, did_you_mean};
use crate::environment::*;
use crate::yaml::{Node, Value};

const ENV_KEYS: &[&str] = &[
    "target",
    "ssh",
    "docker",
    "agent",
    "service",
    "instances",
    "listen",
    "strategy",
    "health",
    "promote_from",
    "protection",
    "stop_grace",
    "drain_timeout",
    "proxy",
    "watch",
    "require_signature",
];

impl Cx {
    /// The `environments:` section, in file order.
    pub(super) fn environments(&mut self, n: &Node) -> Vec<Environment> {
        let mut all = Vec::new();
        let mut spans: HashMap<String, (Span, Option<Span>, Option<Span>)> = HashMap::new();
        // Every declared name counts for `promote_from`, even an environment with errors of its own.
        let declared: Vec<String> = match &n.value {
            Value::Map(m) => m.iter().map(|(k, _)| k.name.clone()).collect(),
            _ => Vec::new(),
        };
        for (k, v) in self.map(n, "environments") {
            if let Err(why) = slipway_model::names::check_environment(&k.name) {
                self.err(k.span, why);
                continue;
            }
            let path = format!("environments:{}", k.name);
            let mut listen_span = None;
            let mut promote_span = None;
            let before = self.error_count();
            if let Some(env) = self.environment(&k.name, v, &path, &mut listen_span, &mut promote_span) {
                spans.insert(env.name.clone(), (k.span, listen_span, promote_span));
                all.push((env, self.error_count() == before));
            }
        }
        // The checks across environments see every one, even those with errors of their own.
        let out: Vec<Environment> = all.iter().map(|(e, _)| e.clone()).collect();
        // Across environments: promotion sources exist and form no cycle; entry points are unique.
        let names: Vec<&str> = declared.iter().map(String::as_str).collect();
        for e in &out {
            let Some(from) = &e.promote_from else { continue };
            let span = spans[&e.name].2.unwrap_or(spans[&e.name].0);
            if from == &e.name {
                self.err(span, format!("`environments:{}:promote_from` names the environment itself", e.name));
            } else if !names.contains(&from.as_str()) {
                let d = self.err(span, format!("`environments:{}:promote_from`: no environment `{from}`", e.name));
                d.hint = Some(match did_you_mean(from, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("environments here: {}", names.join(", ")),
                });
            }
        }
        let by_name: BTreeMap<&str, &Environment> = out.iter().map(|e| (e.name.as_str(), e)).collect();
        for e in &out {
            let mut chain = vec![e.name.as_str()];
            let mut cur = e;
            while let Some(next) = cur.promote_from.as_deref().and_then(|f| by_name.get(f)) {
                if next.name == e.name {
                    chain.push(&next.name);
                    let span = spans[&e.name].2.unwrap_or(spans[&e.name].0);
                    self.err(span, format!("promotion cycle: {}", chain.join(" ← ")));
                    break;
                }
                if chain.contains(&next.name.as_str()) {
                    break;
                }
                chain.push(&next.name);
                cur = next;
            }
        }
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        for e in &out {
            let mut addrs = vec![(e.listen.as_str(), "listen")];
            if let Strategy::BlueGreen { preview: Some(p), .. } = &e.strategy {
                addrs.push((p.as_str(), "strategy:preview"));
            }
            for (a, field) in addrs {
                let Ok(addr) = a.parse::<SocketAddr>() else { continue };
                let what = format!("`environments:{}:{field}`", e.name);
                if let Some(other) = seen.insert(addr, what.clone()) {
                    let span = spans[&e.name].1.unwrap_or(spans[&e.name].0);
                    self.err(span, format!("{what} uses {addr}, already the address of {other}")).hint =
                        Some("every entry point needs its own address".into());
                }
            }
        }
        all.into_iter().filter(|(_, valid)| *valid).map(|(e, _)| e).collect()
    }

    fn environment(
        &mut self,
        name: &str,
        n: &Node,
        path: &str,
        listen_span: &mut Option<Span>,
        promote_span: &mut Option<Span>,
    ) -> Option<Environment> {
        let mut env = Environment {
            name: name.to_string(),
            target: Target::Local,
            service: Service::default(),
            instances: 1,
            listen: String::new(),
            strategy: Strategy::Rolling { max_surge: Scale::Percent(25), max_unavailable: Scale::Percent(25) },
            health: HealthCheck::default(),
            promote_from: None,
            protection: Protection::default(),
            agent: None,
            stop_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            proxy: ProxyLimits::default(),
            watch: Watch::default(),
            require_signature: None,
        };
        let mut strategy_node = None;
        let mut target_name = ("local".to_string(), n.span);
        let mut ssh_node = None;
        let mut docker_node = None;
        let mut agent_node = None;
        for (k, v) in self.map(n, path) {
            let field = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "target" => {
                    if let Some(t) = self.string(v, &field) {
                        target_name = (t.clone(), v.span);
                        match t.as_str() {
                            "local" | "ssh" | "docker" => {}
                            "kubernetes" => {
                                self.err(v.span, format!("`{field}`: the `{t}` target is not available yet")).hint =
                                    Some("deploy to `local` (the agent on this machine) for now".into());
                            }
                            _ => {
                                self.err(v.span, format!("`{field}`: unknown target `{t}`")).hint =
                                    Some("targets: local, ssh, docker".into());
                            }
                        }
                    }
                }
                "service" => env.service = self.service(v, &field),
                "ssh" => ssh_node = Some((k.span, v)),
                "docker" => docker_node = Some((k.span, v)),
                "agent" => agent_node = Some((k.span, v)),
                "instances" => env.instances = self.int(v, &field, 1, 1000).map_or(1, |i| i as u32),
                "listen" => {
                    *listen_span = Some(v.span);
                    if let Some(l) = self.string(v, &field) {
                        if l.parse::<SocketAddr>().is_err() {
                            self.err(v.span, format!("`{field}`: `{l}` is not an address with a port")).hint =
                                Some("write host:port with an IP, e.g. `127.0.0.1:8080` or `[::1]:8080`".into());
                        }
                        env.listen = l;
                    }
                }
                "strategy" => strategy_node = Some(v),
                "health" => env.health = self.health(v, &field),
                "promote_from" => {
                    *promote_span = Some(v.span);
                    env.promote_from = self.string(v, &field);
                }
                "protection" => env.protection = self.protection(v, &field),
                "stop_grace" => env.stop_grace = self.duration(v, &field).unwrap_or(env.stop_grace),
                "drain_timeout" => env.drain_timeout = self.duration(v, &field).unwrap_or(env.drain_timeout),
                "proxy" => env.proxy = self.proxy_limits(v, &field),
                "watch" => env.watch = self.watch(v, &field),
                "require_signature" => env.require_signature = self.signature_policy(v, &field),
                _ => self.unknown_key(k, &format!("`{path}`"), ENV_KEYS),
            }
        }
        if !matches!(n.value, Value::Map(_)) {
            return None;
        }
        match (target_name.0.as_str(), ssh_node) {
            ("ssh", Some((_, node))) => {
                if let Some(t) = self.ssh_target(node, &format!("{path}:ssh")) {
                    env.instances = t.hosts.len() as u32 * t.instances;
                    env.target = Target::Ssh(t);
                }
            }
            ("ssh", None) => {
                self.err(target_name.1, format!("`{path}`: `target: ssh` needs an `ssh:` section with `hosts`")).hint =
                    Some("e.g. `ssh: {hosts: [\"ssh://deploy@10.0.0.5\"], port: 8080}`".into());
            }
            (_, Some((span, _))) => {
                self.err(span, format!("`{path}:ssh` is only for `target: ssh`"));
            }
            _ => {}
        }
        match (target_name.0.as_str(), agent_node) {
            ("local" | "docker", Some((_, node))) => env.agent = self.remote_agent(node, &format!("{path}:agent")),
            (_, Some((span, _))) => {
                self.err(span, format!("`{path}:agent` (a remote agent) is for `target: local` and `target: docker`"));
            }
            _ => {}
        }
        match (target_name.0.as_str(), docker_node) {
            ("docker", node) => {
                env.target = Target::Docker(self.docker_target(node.map(|(_, n)| n), &format!("{path}:docker")))
            }
            (_, Some((span, _))) => {
                self.err(span, format!("`{path}:docker` is only for `target: docker`"));
            }
            _ => {}
        }
        if matches!(env.target, Target::Ssh(_)) && !env.service.env_from.is_empty() {
            self.err(n.span, format!("`{path}:service:env`: `value_from` is not available for `target: ssh` yet"))
                .hint = Some(
                "ssh hosts get their variables in the unit; keep secrets on the host (`EnvironmentFile=`) for now"
                    .into(),
            );
        }
        if env.listen.is_empty() && matches!(env.target, Target::Ssh(_)) {
            // The hosts are the entry points (or the load balancer in front of them).
        } else if env.listen.is_empty() {
            self.err(n.span, format!("`{path}` needs `listen`, the address its traffic enters at")).hint =
                Some("e.g. `listen: 127.0.0.1:8080`".into());
        }
        if let Some(s) = strategy_node {
            env.strategy = self.strategy(s, &format!("{path}:strategy"), env.instances);
            if matches!(env.target, Target::Ssh(_)) && !matches!(env.strategy, Strategy::Rolling { .. }) {
                self.err(
                    s.span,
                    format!("`{path}:strategy`: `{}` is not available for `target: ssh` yet", env.strategy.name()),
                )
                .hint = Some("ssh hosts are updated with `type: rolling` (`max_unavailable` hosts at a time)".into());
            }
        } else if matches!(env.target, Target::Ssh(_)) {
            // One host at a time unless told otherwise.
            env.strategy = Strategy::Rolling { max_surge: Scale::Count(0), max_unavailable: Scale::Count(1) };
        }
        Some(env)
    }

    /// `watch: false`, `watch: 15m`, or `watch: {window, rollback, alerts}`.
    fn watch(&mut self, n: &Node, path: &str) -> Watch {
        let mut w = Watch::default();
        match &n.value {
            Value::Bool(false) => w.rollback = false,
            Value::Bool(true) => {}
            Value::Str(_) | Value::Int(_) => w.window = self.duration(n, path).unwrap_or(w.window),
            Value::Map(_) => {
                for (k, v) in self.map(n, path) {
                    let f = format!("{path}:{}", k.name);
                    match k.name.as_str() {
                        "window" => w.window = self.duration(v, &f).unwrap_or(w.window),
                        "rollback" => w.rollback = self.boolean(v, &f).unwrap_or(true),
                        "alerts" => w.alerts = self.string_list(v, &f),
                        _ => self.unknown_key(k, &format!("`{path}`"), &["window", "rollback", "alerts"]),
                    }
                }
            }
            _ => self.type_err(n, path, "`false`, a duration (as `15m`) or a mapping `{window, rollback, alerts}`"),
        }
        w
    }

    /// `proxy: {max_connections, header_timeout, idle_timeout}`.
    fn proxy_limits(&mut self, n: &Node, path: &str) -> ProxyLimits {
        let mut p = ProxyLimits::default();
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            let timeout = |cx: &mut Cx, default: Duration| {
                let d = cx.duration(v, &f).unwrap_or(default);
                if d < Duration::from_millis(100) {
                    cx.err(v.span, format!("`{f}` must be at least 100ms")).hint =
                        Some("a client needs time to send its request; e.g. `10s`".into());
                }
                d
            };
            match k.name.as_str() {
                "max_connections" => {
                    p.max_connections = self.int(v, &f, 1, 1_000_000).map_or(p.max_connections, |i| i as u32)
                }
                "header_timeout" => p.header_timeout = timeout(self, p.header_timeout),
                "idle_timeout" => p.idle_timeout = timeout(self, p.idle_timeout),
                _ => self.unknown_key(k, &format!("`{path}`"), &["max_connections", "header_timeout", "idle_timeout"]),
            }
        }
        p
    }

    /// `agent: {ssh: URL, identity, known_hosts, data_dir}`, or `agent: {name: N}` (`agent: N`)
    /// for an agent connected to the server.
    fn remote_agent(&mut self, n: &Node, path: &str) -> Option<RemoteAgent> {
        if let Value::Str(_) = &n.value {
            return self.agent_name(n, path);
        }
        let mut url = None;
        let mut name = None;
        let mut t = SshTarget::new("/var/lib/slipway");
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "name" => name = Some((k.span, v)),
                "ssh" => url = self.string(v, &f).map(|u| (u, v.span)),
                "identity" => t.identity = self.string(v, &f),
                "known_hosts" => t.known_hosts = self.string(v, &f),
                "data_dir" => {
                    if let Some(d) = self.string(v, &f) {
                        if !d.starts_with('/') || d.contains(char::is_whitespace) {
                            self.err(v.span, format!("`{f}`: `{d}` must be an absolute path without spaces"));
                        }
                        t.root = d.trim_end_matches('/').to_string();
                    }
                }
                _ => self.unknown_key(k, &format!("`{path}`"), &["name", "ssh", "identity", "known_hosts", "data_dir"]),
            }
        }
        match (name, &url) {
            (Some((span, _)), Some(_)) => {
                self.err(
                    span,
                    format!("`{path}`: give either `name` (an agent connected to the server) or `ssh`, not both"),
                );
                return None;
            }
            (Some((_, v)), None) => return self.agent_name(v, &format!("{path}:name")),
            _ => {}
        }
        let Some((url, span)) = url else {
            self.err(
                n.span,
                format!("`{path}` needs `name: AGENT` (an agent connected to the server) or `ssh: ssh://user@host`"),
            );
            return None;
        };
        match parse_ssh_url(&url) {
            Ok((user, host, ssh_port)) => {
                t.hosts.push(SshHost { user, host, ssh_port, port: 0, group: None });
                Some(RemoteAgent::Ssh(t))
            }
            Err(e) => {
                self.err(span, format!("`{path}:ssh`: `{url}` {e}"));
                None
            }
        }
    }

    /// The name of an agent connected to the server.
    fn agent_name(&mut self, v: &Node, path: &str) -> Option<RemoteAgent> {
        let name = self.string(v, path)?;
        match slipway_model::names::check_agent(&name) {
            Ok(()) => Some(RemoteAgent::Connected { name }),
            Err(why) => {
                self.err(v.span, format!("`{path}`: {why}")).hint =
                    Some("use the agent's `--name` (default: its host name), e.g. `agent: {name: web-1}`".into());
                None
            }
        }
    }

    fn docker_target(&mut self, n: Option<&Node>, path: &str) -> DockerTarget {
        let mut t = DockerTarget { memory: None, nano_cpus: None, keep_images: 5 };
        let Some(n) = n else { return t };
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "memory" => {
                    let text = v.scalar_string().unwrap_or_default();
                    match crate::duration::parse_size(&text) {
                        Ok(b) if b >= 6 * 1024 * 1024 => t.memory = Some(b),
                        Ok(_) => {
                            self.err(v.span, format!("`{f}`: Docker needs at least 6 MiB, found `{text}`"));
                        }
                        Err(e) => {
                            self.err(v.span, format!("`{f}`: `{text}`: {e}")).hint =
                                Some("e.g. `256MiB` or `1g`".into());
                        }
                    }
                }
                "cpus" => match &v.value {
                    Value::Int(i) if *i > 0 && *i <= 1024 => t.nano_cpus = Some(*i * 1_000_000_000),
                    Value::Float(x) if *x > 0.0 && *x <= 1024.0 => t.nano_cpus = Some((*x * 1e9) as i64),
                    _ => self.type_err(v, &f, "a number of CPUs above 0, like `0.5` or `2`"),
                },
                "keep_images" => t.keep_images = self.int(v, &f, 2, 100).map_or(t.keep_images, |k| k as u32),
                _ => self.unknown_key(k, &format!("`{path}`"), &["memory", "cpus", "keep_images"]),
            }
        }
        t
    }

    fn ssh_target(&mut self, n: &Node, path: &str) -> Option<SshTarget> {
        let mut t = SshTarget::new("/opt/slipway");
        let mut port = None;
        let mut hosts: Vec<(String, Option<u16>, Option<String>, Span)> = Vec::new();
        let mut hosts_span = n.span;
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "hosts" => {
                    hosts_span = v.span;
                    let items: Vec<Node> = match &v.value {
                        Value::Seq(items) => items.clone(),
                        _ => vec![v.clone()],
                    };
                    for (i, item) in items.iter().enumerate() {
                        let fi = format!("{f}[{i}]");
                        match &item.value {
                            Value::Map(m) => {
                                let mut url = None;
                                let mut p = None;
                                let mut group = None;
                                for (hk, hv) in m {
                                    match hk.name.as_str() {
                                        "url" => url = self.string(hv, &format!("{fi}:url")),
                                        "port" => p = self.int(hv, &format!("{fi}:port"), 1, 65535).map(|p| p as u16),
                                        "group" => group = self.string(hv, &format!("{fi}:group")),
                                        _ => self.unknown_key(hk, &format!("`{fi}`"), &["url", "port", "group"]),
                                    }
                                }
                                match url {
                                    Some(u) => hosts.push((u, p, group, item.span)),
                                    None => {
                                        self.err(item.span, format!("`{fi}` needs `url: ssh://user@host`"));
                                    }
                                }
                            }
                            _ => {
                                if let Some(u) = self.string(item, &fi) {
                                    hosts.push((u, None, None, item.span));
                                }
                            }
                        }
                    }
                }
                "port" => port = self.int(v, &f, 1, 65535).map(|p| p as u16),
                "identity" => t.identity = self.string(v, &f),
                "known_hosts" => t.known_hosts = self.string(v, &f),
                "root" => {
                    if let Some(r) = self.string(v, &f) {
                        if !r.starts_with('/') || r.contains("..") || r.contains(char::is_whitespace) {
                            self.err(v.span, format!("`{f}`: `{r}` must be an absolute path without `..` or spaces"));
                        }
                        t.root = r.trim_end_matches('/').to_string();
                    }
                }
                "service" => {
                    if let Some(s) = self.string(v, &f) {
                        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                            self.err(v.span, format!("`{f}`: `{s}` is not a valid unit name (letters, digits, `-_.`)"));
                        }
                        t.service = Some(s);
                    }
                }
                "keep" => t.keep = self.int(v, &f, 2, 100).map_or(t.keep, |k| k as u32),
                "instances" => t.instances = self.int(v, &f, 1, 64).map_or(1, |n| n as u32),
                "user" => t.user = self.string(v, &f),
                "connect_timeout" => t.connect_timeout = self.nonzero_duration(v, &f).unwrap_or(t.connect_timeout),
                "command_timeout" => t.command_timeout = self.nonzero_duration(v, &f).unwrap_or(t.command_timeout),
                _ => self.unknown_key(
                    k,
                    &format!("`{path}`"),
                    &[
                        "hosts",
                        "port",
                        "identity",
                        "known_hosts",
                        "root",
                        "service",
                        "keep",
                        "user",
                        "connect_timeout",
                        "command_timeout",
                    ],
                ),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (url, p, group, span) in hosts {
            match parse_ssh_url(&url) {
                Ok((user, host, ssh_port)) => {
                    let Some(service_port) = p.or(port) else {
                        self.err(span, format!("`{path}`: host `{url}` has no service port")).hint =
                            Some("set `port:` for all hosts, or `{url: ..., port: N}` for this one".into());
                        continue;
                    };
                    if !seen.insert((host.clone(), ssh_port)) {
                        self.err(span, format!("`{path}`: host `{url}` is listed twice"));
                    }
                    t.hosts.push(SshHost { user, host, ssh_port, port: service_port, group });
                }
                Err(e) => {
                    self.err(span, format!("`{path}:hosts`: `{url}` {e}")).hint =
                        Some("write hosts as `ssh://user@host` or `ssh://user@host:2222`".into());
                }
            }
        }
        if t.hosts.is_empty() {
            self.err(hosts_span, format!("`{path}` needs at least one host in `hosts`"));
            return None;
        }
        Some(t)
    }

    pub(super) fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.severity == crate::diag::Severity::Error).count()
    }

    fn service(&mut self, n: &Node, path: &str) -> Service {
        let mut s = Service::default();
        for (k, v) in self.map(n, path) {
            let field = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "binary" => s.binary = self.string(v, &field),
                "args" => s.args = self.string_list(v, &field),
                "env" => self.service_env(v, &field, &mut s),
                "workdir" => s.workdir = self.string(v, &field),
                _ => self.unknown_key(k, &format!("`{path}`"), &["binary", "args", "env", "workdir"]),
            }
        }
        s
    }

    /// `service.env`: plain values, or `{value_from: env:NAME | file:/PATH}` for secrets.
    fn service_env(&mut self, n: &Node, path: &str, s: &mut Service) {
        let mut plain = Vec::new();
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            let Value::Map(m) = &v.value else {
                plain.push((k, v));
                continue;
            };
            if !m.iter().any(|(mk, _)| mk.name == "value_from") {
                plain.push((k, v));
                continue;
            }
            if !super::is_valid_var_name(&k.name) {
                self.err(k.span, format!("`{f}`: invalid variable name `{}`", k.name)).hint =
                    Some("variable names use letters, digits and `_`, and do not start with a digit".into());
                continue;
            }
            for (mk, mv) in m {
                if mk.name != "value_from" {
                    self.unknown_key(mk, &format!("`{f}`"), &["value_from"]);
                    continue;
                }
                let Some(text) = self.string(mv, &format!("{f}:value_from")) else { continue };
                match EnvSource::parse(&text) {
                    Ok(src) => s.env_from.push((k.name.clone(), src)),
                    Err(why) => self.err(mv.span, format!("`{f}:value_from`: {why}")).hint = Some(
                        "`env:DB_PASSWORD` (from the deploying process) or `file:/run/secrets/db` (read by the agent)"
                            .into(),
                    ),
                }
            }
        }
        // Plain values keep GitLab's variable forms (`NAME: value`, `{value: ...}`).
        let mut rest = n.clone();
        if let Value::Map(m) = &mut rest.value {
            m.retain(|(k, _)| plain.iter().any(|(p, _)| p.name == k.name));
        }
        s.env = self.variables(&rest, path).into_iter().map(|var| (var.name, var.value)).collect();
    }

    fn scale(&mut self, n: &Node, what: &str) -> Option<Scale> {
        match &n.value {
            Value::Int(i) if (0..=10_000).contains(i) => Some(Scale::Count(*i as u32)),
            Value::Str(s) if s.trim().ends_with('%') => match s.trim().trim_end_matches('%').trim().parse::<u32>() {
                Ok(p) if p <= 100 => Some(Scale::Percent(p)),
                _ => {
                    self.err(n.span, format!("`{what}`: `{s}` is not a percentage from 0% to 100%"));
                    None
                }
            },
            _ => {
                self.type_err(n, what, "a count like `1` or a percentage like `25%`");
                None
            }
        }
    }

    fn strategy(&mut self, n: &Node, path: &str, instances: u32) -> Strategy {
        let entries = self.map(n, path);
        let kind_node = entries.iter().find(|(k, _)| k.name == "type").map(|(_, v)| v);
        let Some(kind_node) = kind_node else {
            self.err(n.span, format!("`{path}` needs `type`")).hint =
                Some("`type: rolling`, `type: canary` or `type: blue-green`".into());
            return Strategy::Rolling { max_surge: Scale::Percent(25), max_unavailable: Scale::Percent(25) };
        };
        let kind = self.string(kind_node, &format!("{path}:type")).unwrap_or_default();
        let allowed: &[&str] = match kind.as_str() {
            "rolling" => &["type", "max_surge", "max_unavailable"],
            "canary" => &["type", "steps", "analysis"],
            "blue-green" | "blue_green" => &["type", "preview", "keep_old"],
            _ => {
                let d = self.err(kind_node.span, format!("`{path}:type`: unknown strategy `{kind}`"));
                d.hint = Some(match did_you_mean(&kind, ["rolling", "canary", "blue-green"]) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "strategies: rolling, canary, blue-green".into(),
                });
                return Strategy::Rolling { max_surge: Scale::Percent(25), max_unavailable: Scale::Percent(25) };
            }
        };
        let mut surge = Scale::Percent(25);
        let mut unavailable = Scale::Percent(25);
        let mut steps = Vec::new();
        let mut steps_span = None;
        let mut analysis = Analysis::default();
        let mut preview = None;
        let mut keep_old = Duration::from_secs(600);
        for (k, v) in entries {
            let field = format!("{path}:{}", k.name);
            if !allowed.contains(&k.name.as_str()) {
                self.unknown_key(k, &format!("`{path}` (type {kind})"), allowed);
                continue;
            }
            match k.name.as_str() {
                "max_surge" => surge = self.scale(v, &field).unwrap_or(surge),
                "max_unavailable" => unavailable = self.scale(v, &field).unwrap_or(unavailable),
                "steps" => {
                    steps_span = Some(v.span);
                    steps = self.canary_steps(v, &field);
                }
                "analysis" => analysis = self.analysis(v, &field),
                "preview" => {
                    if let Some(p) = self.string(v, &field) {
                        if p.parse::<SocketAddr>().is_err() {
                            self.err(v.span, format!("`{field}`: `{p}` is not an address with a port")).hint =
                                Some("e.g. `127.0.0.1:8181`".into());
                        }
                        preview = Some(p);
                    }
                }
                "keep_old" => keep_old = self.duration(v, &field).unwrap_or(keep_old),
                _ => {}
            }
        }
        match kind.as_str() {
            "rolling" => {
                if surge.resolve(instances, true) == 0 && matches!(unavailable, Scale::Count(0)) {
                    self.err(n.span, format!("`{path}`: `max_surge` and `max_unavailable` cannot both be 0")).hint =
                        Some("allow one extra instance (`max_surge: 1`) or one missing (`max_unavailable: 1`)".into());
                }
                Strategy::Rolling { max_surge: surge, max_unavailable: unavailable }
            }
            "canary" => {
                if steps.is_empty() && steps_span.is_none() {
                    steps = vec![
                        CanaryStep::Weight(10),
                        CanaryStep::Pause(Duration::from_secs(60)),
                        CanaryStep::Weight(50),
                        CanaryStep::Pause(Duration::from_secs(60)),
                    ];
                }
                if !matches!(
                    steps.iter().rev().find(|s| matches!(s, CanaryStep::Weight(_))),
                    Some(CanaryStep::Weight(100))
                ) {
                    steps.push(CanaryStep::Weight(100));
                }
                Strategy::Canary { steps, analysis }
            }
            _ => Strategy::BlueGreen { preview, keep_old },
        }
    }

    fn canary_steps(&mut self, n: &Node, path: &str) -> Vec<CanaryStep> {
        let Value::Seq(items) = &n.value else {
            self.type_err(n, path, "a list of steps like `{weight: 10, pause: 30s}`");
            return Vec::new();
        };
        let mut steps = Vec::new();
        let mut last = 0;
        for (i, item) in items.iter().enumerate() {
            let field = format!("{path}[{i}]");
            for (k, v) in self.map(item, &field) {
                let f = format!("{field}:{}", k.name);
                match k.name.as_str() {
                    "weight" => {
                        if let Some(w) = self.int(v, &f, 1, 100) {
                            if (w as u32) <= last {
                                self.err(v.span, format!("`{f}`: weights must grow, {w} follows {last}"));
                            }
                            last = w as u32;
                            steps.push(CanaryStep::Weight(w as u32));
                        }
                    }
                    "pause" => match &v.value {
                        Value::Str(s) if s == "manual" => steps.push(CanaryStep::Manual),
                        _ => {
                            if let Some(d) = self.duration(v, &f) {
                                steps.push(CanaryStep::Pause(d))
                            }
                        }
                    },
                    _ => self.unknown_key(k, &format!("`{field}`"), &["weight", "pause"]),
                }
            }
        }
        steps
    }

    /// `prometheus: {url, timeout, queries: [{query, max, min}]}`.
    fn prom_analysis(&mut self, n: &Node, path: &str) -> Option<PromAnalysis> {
        let (mut url, mut queries, mut timeout) = (None, Vec::new(), Duration::from_secs(5));
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "url" => {
                    let Some(u) = self.string(v, &f) else { continue };
                    let rest = u.strip_prefix("http://");
                    let hostport = rest.map(|r| r.split('/').next().unwrap_or(""));
                    let ok = hostport.is_some_and(|h| {
                        h.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                    });
                    if !ok {
                        self.err(
                            v.span,
                            format!("`{f}` must be `http://HOST:PORT` (as `http://127.0.0.1:9090`), found `{u}`"),
                        )
                        .hint = Some(
                            "https is not supported here yet: reach Prometheus over a trusted network or a local proxy"
                                .into(),
                        );
                        continue;
                    }
                    url = Some(u.trim_end_matches('/').to_string());
                }
                "timeout" => timeout = self.duration(v, &f).filter(|d| !d.is_zero()).unwrap_or(timeout),
                "queries" => {
                    let Value::Seq(items) = &v.value else {
                        self.type_err(v, &f, "a list of `{query, max}`");
                        continue;
                    };
                    for (i, item) in items.iter().enumerate() {
                        let qf = format!("{f}[{i}]");
                        let mut c = PromCheck { query: String::new(), max: None, min: None };
                        for (qk, qv) in self.map(item, &qf) {
                            let ff = format!("{qf}:{}", qk.name);
                            match qk.name.as_str() {
                                "query" => c.query = self.string(qv, &ff).unwrap_or_default(),
                                "max" | "min" => {
                                    let x = match qv.value {
                                        Value::Int(i) => Some(i as f64),
                                        Value::Float(x) => Some(x),
                                        _ => {
                                            self.type_err(qv, &ff, "a number");
                                            None
                                        }
                                    };
                                    if qk.name == "max" { c.max = x } else { c.min = x }
                                }
                                _ => self.unknown_key(qk, &format!("`{qf}`"), &["query", "max", "min"]),
                            }
                        }
                        if c.query.trim().is_empty() {
                            self.err(item.span, format!("`{qf}` has no `query`"));
                            continue;
                        }
                        if c.max.is_none() && c.min.is_none() {
                            self.err(
                                item.span,
                                format!("`{qf}` has neither `max` nor `min`: say what value fails the canary"),
                            );
                            continue;
                        }
                        for var in c.query.match_indices('$').map(|(i, _)| &c.query[i + 1..]) {
                            let name: String =
                                var.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                            if !name.is_empty()
                                && !["VERSION", "STABLE_VERSION", "ENVIRONMENT", "RELEASE"].contains(&name.as_str())
                            {
                                self.err(item.span, format!("`{qf}:query`: `${name}` is not replaced (use $VERSION, $STABLE_VERSION, $ENVIRONMENT or $RELEASE)"));
                            }
                        }
                        queries.push(c);
                    }
                }
                _ => self.unknown_key(k, &format!("`{path}`"), &["url", "queries", "timeout"]),
            }
        }
        let Some(url) = url else {
            self.err(n.span, format!("`{path}` has no `url` (the Prometheus, as `http://127.0.0.1:9090`)"));
            return None;
        };
        if queries.is_empty() {
            self.err(n.span, format!("`{path}` has no `queries`"));
            return None;
        }
        Some(PromAnalysis { url, queries, timeout })
    }

    fn analysis(&mut self, n: &Node, path: &str) -> Analysis {
        let mut a = Analysis::default();
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "prometheus" => a.prometheus = self.prom_analysis(v, &f),
                "interval" => {
                    a.interval = self.duration(v, &f).unwrap_or(a.interval);
                    if a.interval.is_zero() {
                        self.err(v.span, format!("`{f}` must be longer than 0"));
                    }
                }
                "max_error_rate" => a.max_error_rate = self.percent(v, &f).map_or(a.max_error_rate, |p| p / 100.0),
                "max_p95" => a.max_p95 = self.duration(v, &f),
                "max_p99" => a.max_p99 = self.duration(v, &f),
                "min_requests" => a.min_requests = self.count(v, &f).unwrap_or(a.min_requests),
                "compare_stable" => a.compare_stable = self.boolean(v, &f).unwrap_or(a.compare_stable),
                "on_inconclusive" => match self.string(v, &f).as_deref() {
                    Some("fail") => a.on_inconclusive = OnInconclusive::Fail,
                    Some("pass") => a.on_inconclusive = OnInconclusive::Pass,
                    Some(other) => {
                        self.err(v.span, format!("`{f}` is `fail` or `pass`, not `{other}`")).hint = Some(
                            "`fail` (the default) rolls back a canary that never got enough traffic to judge".into(),
                        );
                    }
                    None => {}
                },
                "max_latency_increase" => {
                    let pct = match &v.value {
                        Value::Int(i) if (0..=10_000).contains(i) => Some(*i as f64),
                        Value::Str(s) => s
                            .trim()
                            .trim_end_matches('%')
                            .trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|p| (0.0..=10_000.0).contains(p)),
                        _ => None,
                    };
                    match pct {
                        Some(p) => a.max_latency_increase = p / 100.0,
                        None => {
                            self.err(v.span, format!("`{f}` must be a percentage like `50%` (0% to 10000%)"));
                        }
                    }
                }
                _ => self.unknown_key(
                    k,
                    &format!("`{path}`"),
                    &[
                        "interval",
                        "max_error_rate",
                        "max_p95",
                        "max_p99",
                        "min_requests",
                        "compare_stable",
                        "max_latency_increase",
                        "on_inconclusive",
                        "prometheus",
                    ],
                ),
            }
        }
        a
    }

    fn health(&mut self, n: &Node, path: &str) -> HealthCheck {
        let mut h = HealthCheck::default();
        let mut probes = 0;
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "http" => {
                    probes += 1;
                    if let Some(p) = self.string(v, &f) {
                        if !p.starts_with('/') {
                            self.err(v.span, format!("`{f}`: `{p}` must be a path starting with `/`")).hint =
                                Some("e.g. `http: /healthz`".into());
                        }
                        h.probe = Probe::Http(p);
                    }
                }
                "tcp" => {
                    probes += 1;
                    if self.boolean(v, &f) == Some(false) {
                        self.err(v.span, format!("`{f}` can only be `true`; leave it out for no TCP check"));
                    }
                    h.probe = Probe::Tcp;
                }
                "command" => {
                    probes += 1;
                    if let Some(c) = self.string(v, &f) {
                        h.probe = Probe::Command(c);
                    }
                }
                "interval" => h.interval = self.nonzero_duration(v, &f).unwrap_or(h.interval),
                "timeout" => h.timeout = self.nonzero_duration(v, &f).unwrap_or(h.timeout),
                "deadline" => h.deadline = self.nonzero_duration(v, &f).unwrap_or(h.deadline),
                "successes" => h.successes = self.int(v, &f, 1, 100).map_or(h.successes, |i| i as u32),
                "failures" => h.failures = self.int(v, &f, 1, 100).map_or(h.failures, |i| i as u32),
                "restart_after" => match &v.value {
                    Value::Bool(false) => h.restart_after = None,
                    Value::Str(s) if s == "off" || s == "never" => h.restart_after = None,
                    _ => h.restart_after = self.nonzero_duration(v, &f).or(h.restart_after),
                },
                _ => self.unknown_key(
                    k,
                    &format!("`{path}`"),
                    &[
                        "http",
                        "tcp",
                        "command",
                        "interval",
                        "timeout",
                        "deadline",
                        "successes",
                        "failures",
                        "restart_after",
                    ],
                ),
            }
        }
        if probes > 1 {
            self.err(n.span, format!("`{path}` has {probes} probes; choose one of `http`, `tcp`, `command`"));
        }
        h
    }

    fn nonzero_duration(&mut self, n: &Node, what: &str) -> Option<Duration> {
        let d = self.duration(n, what)?;
        if d.is_zero() {
            self.err(n.span, format!("`{what}` must be longer than 0"));
            return None;
        }
        Some(d)
    }

    /// `require_signature: {keys: [PEM, ...]}`: the public keys inline, so the policy travels
    /// with the file (to the server, a GitOps repository, a stored release).
    fn signature_policy(&mut self, n: &Node, path: &str) -> Option<SignaturePolicy> {
        let mut keys = Vec::new();
        let mut seen = false;
        let before = self.error_count();
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "keys" => {
                    seen = true;
                    let items: Vec<&Node> = match &v.value {
                        Value::Seq(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    for (i, item) in items.into_iter().enumerate() {
                        let at = format!("{f}[{i}]");
                        let Some(text) = self.string(item, &at) else { continue };
                        let t = text.trim();
                        if t.contains("PRIVATE KEY-----") {
                            self.err(
                                item.span,
                                format!("`{at}` is a private key: never put it in the pipeline file"),
                            )
                            .hint = Some("give the public key (the .pub file); keep the .key a secret".into());
                        } else if !(t.starts_with("-----BEGIN PUBLIC KEY-----")
                            && t.ends_with("-----END PUBLIC KEY-----"))
                        {
                            self.err(item.span, format!("`{at}` is not a PEM public key")).hint = Some(
                                "paste the .pub file's text as a block: `keys: [ |` then the -----BEGIN PUBLIC KEY----- lines (a key file's path is not read here)"
                                    .into(),
                            );
                        } else {
                            keys.push(format!("{t}\n"));
                        }
                    }
                }
                _ => self.unknown_key(k, &format!("`{path}`"), &["keys"]),
            }
        }
        if !seen && matches!(n.value, Value::Map(_)) {
            self.err(n.span, format!("`{path}` needs `keys`, the public keys a release must be signed by"));
        } else if seen && keys.is_empty() && self.error_count() == before {
            self.err(n.span, format!("`{path}:keys` is empty: a signature could never be valid"));
        }
        (!keys.is_empty()).then_some(SignaturePolicy { keys })
    }

    fn protection(&mut self, n: &Node, path: &str) -> Protection {
        let mut p = Protection::default();
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "approvals" => p.approvals = self.int(v, &f, 0, 100).map_or(0, |i| i as u32),
                "approvers" => p.approvers = self.strings(v, &f),
                "branches" => {
                    p.branches = self.strings(v, &f);
                    for b in &p.branches {
                        if globset::Glob::new(b).is_err() {
                            self.err(v.span, format!("`{f}`: `{b}` is not a valid glob"));
                        }
                    }
                }
                _ => self.unknown_key(k, &format!("`{path}`"), &["approvals", "approvers", "branches"]),
            }
        }
        p
    }
}
