//! Compiles the server's notification file (docs/monitoring.md): Alertmanager's
//! `alertmanager.yml` — `global:`, `route:` (matchers, grouping, timings, `continue`, child
//! routes inheriting their parent's settings), `receivers:` with webhook, Slack and e-mail
//! configs — plus slipway's `alertmanagers:` and `external_url:`. Every error at once with its
//! position; a route naming a receiver that does not exist is one of them.

use std::path::PathBuf;

use slipway_monitor::channels::{AlertmanagerTarget, Email, NotifyConfig, Receiver, Secret, Slack, Text, Webhook};
use slipway_monitor::notify::{GroupBy, MatchOp, Matcher, Route};

use super::Cx;
use crate::diag::did_you_mean;
use crate::yaml::{Node, Value};

const TOP: &[&str] = &["global", "route", "receivers", "alertmanagers", "external_url"];
const UNSUPPORTED: &[(&str, &str)] = &[
    ("inhibit_rules", "inhibition is not supported: route or silence the alerts instead"),
    ("templates", "template files are not supported: set `title`/`text` (or `headers: {Subject}`) on the channel"),
    ("time_intervals", "time intervals are not supported: use silences (`slipway silence add`)"),
    ("mute_time_intervals", "time intervals are not supported: use silences (`slipway silence add`)"),
];
const GLOBAL: &[&str] = &[
    "smtp_from",
    "smtp_smarthost",
    "smtp_hello",
    "smtp_auth_username",
    "smtp_auth_password",
    "smtp_auth_password_file",
    "smtp_require_tls",
    "slack_api_url",
    "slack_api_url_file",
    "resolve_timeout",
    "http_timeout",
];
const ROUTE: &[&str] = &[
    "receiver",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "matchers",
    "match",
    "match_re",
    "continue",
    "routes",
];
const RECEIVER: &[&str] = &["name", "webhook_configs", "slack_configs", "email_configs"];
const WEBHOOK: &[&str] = &["url", "url_file", "send_resolved", "max_alerts", "http_config", "timeout"];
const SLACK: &[&str] =
    &["api_url", "api_url_file", "channel", "username", "send_resolved", "title", "text", "http_config", "timeout"];
const EMAIL: &[&str] = &[
    "to",
    "from",
    "smarthost",
    "hello",
    "auth_username",
    "auth_password",
    "auth_password_file",
    "require_tls",
    "tls_config",
    "send_resolved",
    "headers",
    "text",
    "html",
    "timeout",
];
const AM: &[&str] = &["url", "http_config", "timeout"];

#[derive(Default)]
struct Global {
    smtp_from: Option<String>,
    smtp_smarthost: Option<String>,
    smtp_hello: Option<String>,
    smtp_auth_username: Option<String>,
    smtp_auth_password: Option<Secret>,
    smtp_require_tls: Option<bool>,
    slack_api_url: Option<Secret>,
    timeout_ms: Option<u64>,
}

impl Cx {
    pub(super) fn notify(&mut self, root: &Node) -> NotifyConfig {
        let mut config = NotifyConfig::default();
        let mut global = Global::default();
        let (mut route, mut receivers, mut ams) = (None, None, None);
        for (k, v) in self.map(root, "the notification file") {
            match k.name.as_str() {
                "global" => global = self.notify_global(v),
                "route" => route = Some((k.span, v)),
                "receivers" => receivers = Some(v),
                "alertmanagers" => ams = Some(v),
                "external_url" => {
                    if let Some(u) = self.url(v, "external_url") {
                        config.external_url = Some(u.trim_end_matches('/').to_string());
                    }
                }
                name => match UNSUPPORTED.iter().find(|(n, _)| *n == name) {
                    Some((_, why)) => {
                        self.err(k.span, format!("`{name}`: {why}"));
                    }
                    None => self.unknown_key(k, "the notification file", TOP),
                },
            }
        }
        if let Some(v) = receivers {
            config.receivers = self.receivers(v, &global);
        }
        if let Some(v) = ams {
            config.alertmanagers = self.alertmanagers(v, &global);
        }
        let names: Vec<String> = config.receivers.iter().map(|r| r.name.clone()).collect();
        match route {
            Some((_, v)) => {
                let parent = Route::default();
                if let Some(r) = self.route(v, "route", &parent, true, &names) {
                    config.route = r;
                }
            }
            None if !config.receivers.is_empty() => {
                self.err(root.span, "the notification file has receivers but no `route:` to send to them").hint =
                    Some("add `route: {receiver: NAME}` (the receiver every alert goes to)".into());
            }
            None => {}
        }
        config
    }

    fn url(&mut self, n: &Node, what: &str) -> Option<String> {
        let u = self.string(n, what)?;
        if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 10 {
            self.err(n.span, format!("`{what}` must be an http:// or https:// URL"));
            return None;
        }
        Some(u)
    }

    fn secret_file(&mut self, n: &Node, what: &str) -> Option<Secret> {
        let p = self.string(n, what)?;
        if !p.starts_with('/') {
            self.err(n.span, format!("`{what}` must be an absolute path"));
            return None;
        }
        Some(Secret::File(PathBuf::from(p)))
    }

    fn notify_global(&mut self, n: &Node) -> Global {
        let mut g = Global::default();
        for (k, v) in self.map(n, "global") {
            let f = format!("global:{}", k.name);
            match k.name.as_str() {
                "smtp_from" => g.smtp_from = self.address(v, &f),
                "smtp_smarthost" => g.smtp_smarthost = self.smarthost(v, &f),
                "smtp_hello" => g.smtp_hello = self.string(v, &f),
                "smtp_auth_username" => g.smtp_auth_username = self.string(v, &f),
                "smtp_auth_password" => g.smtp_auth_password = self.string(v, &f).map(Secret::Inline),
                "smtp_auth_password_file" => g.smtp_auth_password = self.secret_file(v, &f),
                "smtp_require_tls" => g.smtp_require_tls = self.boolean(v, &f),
                "slack_api_url" => g.slack_api_url = self.url(v, &f).map(Secret::Inline),
                "slack_api_url_file" => g.slack_api_url = self.secret_file(v, &f),
                "resolve_timeout" => {
                    self.prom_duration(v, &f);
                }
                "http_timeout" => g.timeout_ms = self.prom_duration(v, &f).map(|ms| ms as u64),
                _ => self.unknown_key(k, "`global`", GLOBAL),
            }
        }
        g
    }

    fn address(&mut self, n: &Node, what: &str) -> Option<String> {
        let a = self.string(n, what)?;
        let bare = a.rsplit_once('<').map_or(a.as_str(), |(_, r)| r.trim_end_matches('>'));
        let ok = bare.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains(['@', ' ']));
        if !ok {
            self.err(n.span, format!("`{what}`: `{a}` is not an e-mail address"));
            return None;
        }
        Some(a)
    }

    fn smarthost(&mut self, n: &Node, what: &str) -> Option<String> {
        let h = self.string(n, what)?;
        match h.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Some(h),
            _ => {
                self.err(n.span, format!("`{what}` must be `host:port`, found `{h}`"));
                None
            }
        }
    }

    fn matchers_of(&mut self, n: &Node, what: &str) -> Vec<Matcher> {
        let mut out = Vec::new();
        for text in self.string_list(n, what) {
            match Matcher::parse_list(&text) {
                Ok(ms) => out.extend(ms),
                Err(why) => {
                    self.err(n.span, format!("`{what}`: {why}"));
                }
            }
        }
        out
    }

    fn route(&mut self, n: &Node, path: &str, parent: &Route, root: bool, receivers: &[String]) -> Option<Route> {
        let mut r = Route {
            receiver: parent.receiver.clone(),
            matchers: Vec::new(),
            group_by: parent.group_by.clone(),
            group_wait_ms: parent.group_wait_ms,
            group_interval_ms: parent.group_interval_ms,
            repeat_interval_ms: parent.repeat_interval_ms,
            continue_matching: false,
            routes: Vec::new(),
        };
        let mut children = None;
        let mut receiver_span = None;
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "receiver" => {
                    receiver_span = Some(v.span);
                    if let Some(name) = self.string(v, &f) {
                        r.receiver = name;
                    }
                }
                "group_by" => {
                    let names = self.string_list(v, &f);
                    r.group_by = if names.iter().any(|n| n == "...") {
                        GroupBy::All
                    } else {
                        for name in &names {
                            if !slipway_monitor::notify::valid_label_name(name) {
                                self.err(v.span, format!("`{f}`: `{name}` is not a label name"));
                            }
                        }
                        GroupBy::Labels(names)
                    };
                }
                "group_wait" => r.group_wait_ms = self.prom_duration(v, &f).unwrap_or(r.group_wait_ms),
                "group_interval" => match self.prom_duration(v, &f) {
                    Some(0) => {
                        self.err(v.span, format!("`{f}` must be more than 0"));
                    }
                    Some(ms) => r.group_interval_ms = ms,
                    None => {}
                },
                "repeat_interval" => match self.prom_duration(v, &f) {
                    Some(0) => {
                        self.err(v.span, format!("`{f}` must be more than 0"));
                    }
                    Some(ms) => r.repeat_interval_ms = ms,
                    None => {}
                },
                "matchers" => {
                    let ms = self.matchers_of(v, &f);
                    r.matchers.extend(ms);
                }
                "match" | "match_re" => {
                    let op = if k.name == "match" { MatchOp::Eq } else { MatchOp::Re };
                    for (lk, lv) in self.map(v, &f) {
                        let Some(value) = self.string(lv, &format!("{f}:{}", lk.name)) else { continue };
                        match Matcher::new(&lk.name, op, &value) {
                            Ok(m) => r.matchers.push(m),
                            Err(why) => {
                                self.err(lk.span, format!("`{f}:{}`: {why}", lk.name));
                            }
                        }
                    }
                }
                "continue" => r.continue_matching = self.boolean(v, &f).unwrap_or(false),
                "routes" => children = Some(v),
                _ => self.unknown_key(k, &format!("`{path}`"), ROUTE),
            }
        }
        if root {
            if r.receiver.is_empty() {
                self.err(n.span, "`route` has no `receiver`: the root route names the receiver every alert goes to");
            }
            if !r.matchers.is_empty() {
                self.err(n.span, "`route`: the root route matches every alert and has no matchers");
            }
        }
        if !r.receiver.is_empty() && !receivers.contains(&r.receiver) {
            let span = receiver_span.unwrap_or(n.span);
            let d = self.err(span, format!("`{path}:receiver`: no receiver is named `{}`", r.receiver));
            d.hint = Some(match did_you_mean(&r.receiver, receivers.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None if receivers.is_empty() => "define it under `receivers:`".into(),
                None => format!("receivers: {}", receivers.join(", ")),
            });
        }
        if let Some(v) = children {
            let Value::Seq(items) = &v.value else {
                self.type_err(v, &format!("{path}:routes"), "a list of routes");
                return Some(r);
            };
            for (i, c) in items.iter().enumerate() {
                if let Some(child) = self.route(c, &format!("{path}:routes[{i}]"), &r, false, receivers) {
                    r.routes.push(child);
                }
            }
        }
        Some(r)
    }

    fn receivers(&mut self, n: &Node, g: &Global) -> Vec<Receiver> {
        let Value::Seq(items) = &n.value else {
            self.type_err(n, "receivers", "a list of receivers");
            return Vec::new();
        };
        let mut out: Vec<Receiver> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("receivers[{i}]");
            let mut r = Receiver::default();
            for (k, v) in self.map(item, &path) {
                let f = format!("{path}:{}", k.name);
                match k.name.as_str() {
                    "name" => r.name = self.string(v, &f).unwrap_or_default(),
                    "webhook_configs" => {
                        for (j, c) in self.items(v, &f) {
                            r.webhooks.extend(self.webhook(c, &format!("{f}[{j}]"), g));
                        }
                    }
                    "slack_configs" => {
                        for (j, c) in self.items(v, &f) {
                            r.slack.extend(self.slack(c, &format!("{f}[{j}]"), g));
                        }
                    }
                    "email_configs" => {
                        for (j, c) in self.items(v, &f) {
                            r.email.extend(self.email(c, &format!("{f}[{j}]"), g));
                        }
                    }
                    _ => self.unknown_key(k, &format!("`{path}`"), RECEIVER),
                }
            }
            if r.name.is_empty() {
                self.err(item.span, format!("`{path}` has no `name`"));
                continue;
            }
            if out.iter().any(|o| o.name == r.name) {
                self.err(item.span, format!("`{path}`: receiver `{}` is defined twice", r.name));
                continue;
            }
            out.push(r);
        }
        out
    }

    fn items<'n>(&mut self, n: &'n Node, what: &str) -> Vec<(usize, &'n Node)> {
        match &n.value {
            Value::Seq(items) => items.iter().enumerate().collect(),
            _ => {
                self.type_err(n, what, "a list");
                Vec::new()
            }
        }
    }

    /// `http_config: {authorization: {credentials | credentials_file}}` (or `bearer_token`).
    fn bearer(&mut self, n: &Node, path: &str) -> Option<Secret> {
        let mut out = None;
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "authorization" => {
                    for (ak, av) in self.map(v, &f) {
                        let af = format!("{f}:{}", ak.name);
                        match ak.name.as_str() {
                            "type" => {
                                if self.string(av, &af).is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
                                    self.err(av.span, format!("`{af}`: only `Bearer` is supported"));
                                }
                            }
                            "credentials" => out = self.string(av, &af).map(Secret::Inline),
                            "credentials_file" => out = self.secret_file(av, &af),
                            _ => self.unknown_key(ak, &format!("`{f}`"), &["type", "credentials", "credentials_file"]),
                        }
                    }
                }
                "bearer_token" => out = self.string(v, &f).map(Secret::Inline),
                "bearer_token_file" => out = self.secret_file(v, &f),
                _ => self.unknown_key(k, &format!("`{path}`"), &["authorization", "bearer_token", "bearer_token_file"]),
            }
        }
        out
    }

    fn timeout(&mut self, v: &Node, f: &str) -> Option<u64> {
        match self.prom_duration(v, f) {
            Some(0) => {
                self.err(v.span, format!("`{f}` must be more than 0"));
                None
            }
            ms => ms.map(|m| m as u64),
        }
    }

    fn webhook(&mut self, n: &Node, path: &str, g: &Global) -> Option<Webhook> {
        let (mut url, mut send_resolved, mut max_alerts, mut bearer, mut timeout) = (None, true, 0, None, None);
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "url" => url = self.url(v, &f).map(Secret::Inline),
                "url_file" => url = self.secret_file(v, &f),
                "send_resolved" => send_resolved = self.boolean(v, &f).unwrap_or(true),
                "max_alerts" => max_alerts = self.int(v, &f, 0, 10_000).unwrap_or(0) as usize,
                "http_config" => bearer = self.bearer(v, &f),
                "timeout" => timeout = self.timeout(v, &f),
                _ => self.unknown_key(k, &format!("`{path}`"), WEBHOOK),
            }
        }
        let Some(url) = url else {
            self.err(n.span, format!("`{path}` has no `url` (or `url_file`)"));
            return None;
        };
        Some(Webhook { url, send_resolved, max_alerts, bearer, timeout_ms: timeout.or(g.timeout_ms).unwrap_or(10_000) })
    }

    fn text(&mut self, v: &Node, f: &str) -> Option<Text> {
        let s = self.string(v, f)?;
        match Text::parse(&s) {
            Ok(t) => Some(t),
            Err(why) => {
                self.err(v.span, format!("`{f}`: {why}"));
                None
            }
        }
    }

    fn slack(&mut self, n: &Node, path: &str, g: &Global) -> Option<Slack> {
        let mut s = Slack {
            api_url: Secret::Inline(String::new()),
            channel: None,
            username: None,
            send_resolved: false,
            title: None,
            text: None,
            timeout_ms: g.timeout_ms.unwrap_or(10_000),
        };
        let mut url = g.slack_api_url.clone();
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "api_url" => url = self.url(v, &f).map(Secret::Inline),
                "api_url_file" => url = self.secret_file(v, &f),
                "channel" => s.channel = self.string(v, &f),
                "username" => s.username = self.string(v, &f),
                "send_resolved" => s.send_resolved = self.boolean(v, &f).unwrap_or(false),
                "title" => s.title = self.text(v, &f),
                "text" => s.text = self.text(v, &f),
                "http_config" => {
                    self.bearer(v, &f);
                }
                "timeout" => s.timeout_ms = self.timeout(v, &f).unwrap_or(s.timeout_ms),
                _ => self.unknown_key(k, &format!("`{path}`"), SLACK),
            }
        }
        let Some(url) = url else {
            self.err(n.span, format!("`{path}` has no `api_url` (nor `global:slack_api_url`)"));
            return None;
        };
        s.api_url = url;
        Some(s)
    }

    fn email(&mut self, n: &Node, path: &str, g: &Global) -> Option<Email> {
        let mut e = Email {
            to: Vec::new(),
            from: g.smtp_from.clone().unwrap_or_default(),
            smarthost: g.smtp_smarthost.clone().unwrap_or_default(),
            hello: g.smtp_hello.clone(),
            auth_username: g.smtp_auth_username.clone(),
            auth_password: g.smtp_auth_password.clone(),
            require_tls: g.smtp_require_tls.unwrap_or(true),
            ca_file: None,
            send_resolved: false,
            subject: None,
            text: None,
            timeout_ms: g.timeout_ms.unwrap_or(10_000),
        };
        let before = self.error_count();
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "to" => {
                    let Some(list) = self.string(v, &f) else { continue };
                    for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                        let node = Node { value: Value::Str(a.to_string()), ..v.clone() };
                        e.to.extend(self.address(&node, &f));
                    }
                }
                "from" => e.from = self.address(v, &f).unwrap_or_default(),
                "smarthost" => e.smarthost = self.smarthost(v, &f).unwrap_or_default(),
                "hello" => e.hello = self.string(v, &f),
                "auth_username" => e.auth_username = self.string(v, &f),
                "auth_password" => e.auth_password = self.string(v, &f).map(Secret::Inline),
                "auth_password_file" => e.auth_password = self.secret_file(v, &f),
                "require_tls" => e.require_tls = self.boolean(v, &f).unwrap_or(true),
                "tls_config" => {
                    for (tk, tv) in self.map(v, &f) {
                        let tf = format!("{f}:{}", tk.name);
                        match tk.name.as_str() {
                            "ca_file" => {
                                e.ca_file = self.string(tv, &tf).map(PathBuf::from);
                            }
                            _ => self.unknown_key(tk, &format!("`{f}`"), &["ca_file"]),
                        }
                    }
                }
                "send_resolved" => e.send_resolved = self.boolean(v, &f).unwrap_or(false),
                "headers" => {
                    for (hk, hv) in self.map(v, &f) {
                        let hf = format!("{f}:{}", hk.name);
                        if hk.name.eq_ignore_ascii_case("subject") {
                            e.subject = self.text(hv, &hf);
                        } else {
                            self.err(hk.span, format!("`{hf}`: only `Subject` may be set"));
                        }
                    }
                }
                "text" => e.text = self.text(v, &f),
                "html" => {
                    self.err(k.span, format!("`{f}`: slipway sends plain text; set `text`"));
                }
                "timeout" => e.timeout_ms = self.timeout(v, &f).unwrap_or(e.timeout_ms),
                _ => self.unknown_key(k, &format!("`{path}`"), EMAIL),
            }
        }
        let mut missing = Vec::new();
        if e.to.is_empty() && self.error_count() == before {
            missing.push(("to", "the addresses it goes to, separated by commas"));
        }
        if e.from.is_empty() {
            missing.push(("from", "set it here or as `global:smtp_from`"));
        }
        if e.smarthost.is_empty() {
            missing.push(("smarthost", "the SMTP server as `host:port`, here or as `global:smtp_smarthost`"));
        }
        if e.auth_password.is_some() && e.auth_username.is_none() {
            missing.push(("auth_username", "a password needs the user name it belongs to"));
        }
        for (what, hint) in missing {
            self.err(n.span, format!("`{path}` has no `{what}`")).hint = Some(hint.into());
        }
        (self.error_count() == before).then_some(e)
    }

    fn alertmanagers(&mut self, n: &Node, g: &Global) -> Vec<AlertmanagerTarget> {
        let mut out = Vec::new();
        for (i, item) in self.items(n, "alertmanagers") {
            let path = format!("alertmanagers[{i}]");
            let (mut url, mut bearer, mut timeout) = (None, None, None);
            for (k, v) in self.map(item, &path) {
                let f = format!("{path}:{}", k.name);
                match k.name.as_str() {
                    "url" => url = self.url(v, &f),
                    "http_config" => bearer = self.bearer(v, &f),
                    "timeout" => timeout = self.timeout(v, &f),
                    _ => self.unknown_key(k, &format!("`{path}`"), AM),
                }
            }
            match url {
                Some(url) => out.push(AlertmanagerTarget {
                    url: url.trim_end_matches('/').to_string(),
                    bearer,
                    timeout_ms: timeout.or(g.timeout_ms).unwrap_or(10_000),
                }),
                None => {
                    self.err(item.span, format!("`{path}` has no `url` (the Alertmanager, as `http://host:9093`)"));
                }
            }
        }
        out
    }
}
