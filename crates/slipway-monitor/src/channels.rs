//! Where notifications go and what they say: the receivers of the server's notification file
//! (Alertmanager's `receivers:` — webhooks, Slack incoming webhooks, e-mail — and the
//! Alertmanagers alerts are forwarded to), and the bodies each channel sends: Alertmanager's
//! webhook payload (`version: 4`), a Slack message, an e-mail's subject and text, the v2 API's
//! list of alerts. Titles and texts may be templates (`{{ .CommonLabels.project }}`); the
//! defaults say what failed, where, and link to it. Pure: the server does the sending.

use std::path::PathBuf;

use crate::notify::{Notice, Notification, Route};
use crate::series::Labels;

/// The server's notification file, compiled.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NotifyConfig {
    pub route: Route,
    pub receivers: Vec<Receiver>,
    /// Every alert and event is also posted to these (their v2 API), as Prometheus does.
    pub alertmanagers: Vec<AlertmanagerTarget>,
    /// The address people reach the server at, for links (`--external-url` overrides it).
    pub external_url: Option<String>,
}

impl NotifyConfig {
    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }
}

/// A value kept out of logs and `Debug`: written in the file, or read from a file at start.
#[derive(Clone, PartialEq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("<secret>"),
            Secret::File(p) => write!(f, "<secret in {}>", p.display()),
        }
    }
}

impl Secret {
    /// The value (a file's content without its trailing newline).
    pub fn reveal(&self) -> std::io::Result<String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => Ok(std::fs::read_to_string(p)?.trim_end_matches(['\n', '\r']).to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Receiver {
    pub name: String,
    pub webhooks: Vec<Webhook>,
    pub slack: Vec<Slack>,
    pub email: Vec<Email>,
}

impl Receiver {
    /// Its channels, named as deliveries record them (`webhook[0]`, `email[1]`).
    pub fn channels(&self) -> Vec<(String, Channel<'_>)> {
        let mut out = Vec::new();
        out.extend(self.webhooks.iter().enumerate().map(|(i, w)| (format!("webhook[{i}]"), Channel::Webhook(w))));
        out.extend(self.slack.iter().enumerate().map(|(i, s)| (format!("slack[{i}]"), Channel::Slack(s))));
        out.extend(self.email.iter().enumerate().map(|(i, e)| (format!("email[{i}]"), Channel::Email(e))));
        out
    }

    pub fn channel(&self, name: &str) -> Option<Channel<'_>> {
        self.channels().into_iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Channel<'a> {
    Webhook(&'a Webhook),
    Slack(&'a Slack),
    Email(&'a Email),
}

impl Channel<'_> {
    pub fn send_resolved(&self) -> bool {
        match self {
            Channel::Webhook(w) => w.send_resolved,
            Channel::Slack(s) => s.send_resolved,
            Channel::Email(e) => e.send_resolved,
        }
    }
}

/// `webhook_configs[]`: Alertmanager's webhook payload, POSTed as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub url: Secret,
    pub send_resolved: bool,
    /// At most this many alerts per message (0: all); the rest are counted in
    /// `truncatedAlerts`.
    pub max_alerts: usize,
    /// `http_config: {authorization: {credentials}}`: sent as `Authorization: Bearer …`.
    pub bearer: Option<Secret>,
    pub timeout_ms: u64,
}

/// `slack_configs[]`: a Slack incoming webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Slack {
    pub api_url: Secret,
    pub channel: Option<String>,
    pub username: Option<String>,
    pub send_resolved: bool,
    pub title: Option<Text>,
    pub text: Option<Text>,
    pub timeout_ms: u64,
}

/// `email_configs[]`: a message over SMTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub to: Vec<String>,
    pub from: String,
    /// `host:port`.
    pub smarthost: String,
    pub hello: Option<String>,
    pub auth_username: Option<String>,
    pub auth_password: Option<Secret>,
    /// STARTTLS required (Alertmanager's default); `false` sends in clear when the server
    /// offers no STARTTLS. Port 465 is TLS from the first byte.
    pub require_tls: bool,
    /// The CA that signed the server's certificate (else the system's roots).
    pub ca_file: Option<PathBuf>,
    pub send_resolved: bool,
    pub subject: Option<Text>,
    pub text: Option<Text>,
    pub timeout_ms: u64,
}

/// `alertmanagers[]`: an Alertmanager's v2 API.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerTarget {
    pub url: String,
    pub bearer: Option<Secret>,
    pub timeout_ms: u64,
}

// ----- templates ---------------------------------------------------------------------------

/// A title or text with `{{ .Path.To.Field }}` actions (docs/monitoring.md lists the fields);
/// a field that does not exist renders empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    parts: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Field(Vec<String>),
}

/// The fields a notification's templates may use.
pub const GROUP_FIELDS: &[&str] = &[
    "Status",
    "Receiver",
    "GroupLabels.NAME",
    "CommonLabels.NAME",
    "CommonAnnotations.NAME",
    "ExternalURL",
    "Firing",
    "Resolved",
];
/// The fields of one alert (`text` is rendered once per alert).
pub const ALERT_FIELDS: &[&str] =
    &["Status", "Labels.NAME", "Annotations.NAME", "StartsAt", "EndsAt", "GeneratorURL", "Fingerprint"];

impl Text {
    pub fn parse(text: &str) -> Result<Text, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("{{") {
            if i > 0 {
                parts.push(Piece::Lit(rest[..i].to_string()));
            }
            let at = text.len() - rest.len() + i;
            let after = &rest[i + 2..];
            let j = after.find("}}").ok_or_else(|| format!("`{{{{` at character {at} is never closed"))?;
            let action = after[..j].trim();
            let Some(path) = action.strip_prefix('.') else {
                return Err(format!(
                    "`{{{{ {action} }}}}` at character {at}: only fields are understood here, as `{{{{ .CommonLabels.project }}}}`"
                ));
            };
            let path: Vec<String> = path.split('.').map(str::to_string).collect();
            if path.iter().any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
                return Err(format!("`{{{{ {action} }}}}` at character {at} is not a field"));
            }
            let known = GROUP_FIELDS.iter().chain(ALERT_FIELDS).any(|f| {
                let want: Vec<&str> = f.split('.').collect();
                want.len() == path.len() && want.iter().zip(&path).all(|(w, p)| *w == "NAME" || w == p)
            });
            if !known {
                return Err(format!(
                    "`{{{{ {action} }}}}` at character {at}: no such field (fields: {}, and per alert {})",
                    GROUP_FIELDS.join(", "),
                    ALERT_FIELDS.join(", ")
                ));
            }
            parts.push(Piece::Field(path));
            rest = &after[j + 2..];
        }
        if !rest.is_empty() {
            parts.push(Piece::Lit(rest.to_string()));
        }
        Ok(Text { parts })
    }

    fn render(&self, lookup: &dyn Fn(&[String]) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Piece::Lit(t) => out.push_str(t),
                Piece::Field(path) => out.push_str(&lookup(path).unwrap_or_default()),
            }
        }
        out
    }
}

/// RFC 3339 in UTC, to the millisecond when there is one.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

/// Go's zero time, which Alertmanager writes as the end of an alert still firing.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn group_field(n: &Notification, external: &str, path: &[String]) -> Option<String> {
    let map = |l: Labels, k: Option<&String>| k.and_then(|k| l.get(k).cloned());
    match path.first()?.as_str() {
        "Status" => Some(n.status().into()),
        "Receiver" => Some(n.receiver.clone()),
        "ExternalURL" => Some(external.to_string()),
        "Firing" => Some(n.firing().count().to_string()),
        "Resolved" => Some(n.resolved().count().to_string()),
        "GroupLabels" => map(n.group_labels.clone(), path.get(1)),
        "CommonLabels" => map(n.common_labels(), path.get(1)),
        "CommonAnnotations" => map(n.common_annotations(), path.get(1)),
        _ => None,
    }
}

fn alert_field(a: &Notice, now: i64, path: &[String]) -> Option<String> {
    match path.first()?.as_str() {
        "Status" => Some(if a.resolved(now) { "resolved" } else { "firing" }.into()),
        "Labels" => a.labels.get(path.get(1)?).cloned(),
        "Annotations" => a.annotations.get(path.get(1)?).cloned(),
        "StartsAt" => Some(rfc3339(a.starts_at_ms)),
        "EndsAt" => a.ends_at_ms.map(rfc3339),
        "GeneratorURL" => Some(a.generator_url.clone()),
        "Fingerprint" => Some(a.fingerprint()),
        _ => None,
    }
}

/// The alerts a channel tells: resolved ones only where it sends resolutions.
pub fn told(n: &Notification, send_resolved: bool) -> Vec<&Notice> {
    n.alerts.iter().filter(|a| send_resolved || !a.resolved(n.at_ms)).collect()
}

/// The title: `[FIRING:2] PipelineFailed shop main` (Alertmanager's default shape).
pub fn title(n: &Notification, custom: Option<&Text>, external: &str) -> String {
    if let Some(t) = custom {
        return t.render(&|p| group_field(n, external, p));
    }
    let status = match n.status() {
        "firing" => format!("FIRING:{}", n.firing().count()),
        _ => "RESOLVED".into(),
    };
    let values: Vec<&str> = n.group_labels.values().map(String::as_str).collect();
    let values = if values.is_empty() {
        n.common_labels().get("alertname").cloned().unwrap_or_default()
    } else {
        values.join(" ")
    };
    format!("[{status}] {values}")
}

/// One alert, for people: what, where, the details, when, and the link.
pub fn alert_text(a: &Notice, now: i64, custom: Option<&Text>, n: &Notification, external: &str) -> String {
    if let Some(t) = custom {
        return t.render(&|p| alert_field(a, now, p).or_else(|| group_field(n, external, p)));
    }
    let mut out = String::new();
    let status = if a.resolved(now) { "RESOLVED" } else { "FIRING" };
    let name = a.labels.get("alertname").map(String::as_str).unwrap_or("alert");
    let summary = a.annotations.get("summary").cloned().unwrap_or_else(|| name.to_string());
    out.push_str(&format!("{status}: {summary}\n"));
    if let Some(d) = a.annotations.get("description").filter(|d| !d.is_empty()) {
        out.push_str(d.trim_end());
        out.push('\n');
    }
    for (k, v) in &a.annotations {
        if !matches!(k.as_str(), "summary" | "description") {
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push_str(&format!("labels: {}\n", labels.join(" ")));
    out.push_str(&format!("since: {}", rfc3339(a.starts_at_ms)));
    if let Some(e) = a.ends_at_ms.filter(|e| *e <= now) {
        out.push_str(&format!(", resolved {}", rfc3339(e)));
    }
    out.push('\n');
    if !a.generator_url.is_empty() {
        out.push_str(&format!("link: {}\n", a.generator_url));
    }
    out
}

fn alert_json(a: &Notice, now: i64) -> serde_json::Value {
    serde_json::json!({
        "status": if a.resolved(now) { "resolved" } else { "firing" },
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": rfc3339(a.starts_at_ms),
        "endsAt": a.ends_at_ms.filter(|e| *e <= now).map_or(ZERO_TIME.to_string(), rfc3339),
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint(),
    })
}

/// Alertmanager's webhook payload, `version: "4"`.
pub fn webhook_body(n: &Notification, w: &Webhook, external: &str) -> serde_json::Value {
    let alerts = told(n, w.send_resolved);
    let keep = if w.max_alerts == 0 { alerts.len() } else { w.max_alerts.min(alerts.len()) };
    serde_json::json!({
        "version": "4",
        "groupKey": n.key,
        "truncatedAlerts": alerts.len() - keep,
        "status": n.status(),
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": n.common_labels(),
        "commonAnnotations": n.common_annotations(),
        "externalURL": external,
        "alerts": alerts[..keep].iter().map(|a| alert_json(a, n.at_ms)).collect::<Vec<_>>(),
    })
}

/// A Slack incoming-webhook message: the title, and one attachment per alert (red while it
/// fires — yellow for `severity: warning`, blue for `info` — green once resolved).
pub fn slack_body(n: &Notification, s: &Slack, external: &str) -> serde_json::Value {
    let attachments: Vec<serde_json::Value> = told(n, s.send_resolved)
        .into_iter()
        .map(|a| {
            serde_json::json!({
                "color": match (a.resolved(n.at_ms), a.labels.get("severity").map(String::as_str)) {
                    (true, _) => "good",
                    (false, Some("info")) => "#439FE0",
                    (false, Some("warning" | "ticket")) => "warning",
                    _ => "danger",
                },
                "title": a.annotations.get("summary").or(a.labels.get("alertname")),
                "title_link": (!a.generator_url.is_empty()).then_some(&a.generator_url),
                "text": alert_text(a, n.at_ms, s.text.as_ref(), n, external),
                "mrkdwn_in": ["text"],
            })
        })
        .collect();
    let mut body = serde_json::json!({"text": title(n, s.title.as_ref(), external), "attachments": attachments});
    if let Some(c) = &s.channel {
        body["channel"] = c.clone().into();
    }
    if let Some(u) = &s.username {
        body["username"] = u.clone().into();
    }
    body
}

/// An e-mail's subject and plain-text body.
pub fn email_message(n: &Notification, e: &Email, external: &str) -> (String, String) {
    let subject = title(n, e.subject.as_ref(), external);
    let mut body = String::new();
    for a in told(n, e.send_resolved) {
        body.push_str(&alert_text(a, n.at_ms, e.text.as_ref(), n, external));
        body.push('\n');
    }
    body.push_str(&format!("-- \nSent by slipway ({external}) to receiver `{}`.\n", n.receiver));
    (subject, body)
}

/// The body of `POST /api/v2/alerts`: alerts still firing end `valid_ms` from now unless they
/// are sent again (Prometheus' `4 × max(interval, resend delay)`).
pub fn alertmanager_body(alerts: &[Notice], now: i64, valid_ms: i64) -> serde_json::Value {
    serde_json::Value::Array(
        alerts
            .iter()
            .map(|a| {
                let ends = a.ends_at_ms.filter(|e| *e <= now).unwrap_or(now + valid_ms);
                serde_json::json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at_ms),
                    "endsAt": rfc3339(ends),
                    "generatorURL": a.generator_url,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification() -> Notification {
        let a = |name: &str, ends: Option<i64>| Notice {
            labels: [("alertname", name), ("project", "shop"), ("ref", "main")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary", format!("{name} in shop")), ("description", "job `test` failed".to_string())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            starts_at_ms: 1_764_600_000_000,
            ends_at_ms: ends,
            generator_url: "http://ci/pipelines/7".into(),
            once: false,
        };
        Notification {
            key: "0:{project=\"shop\"}".into(),
            receiver: "team".into(),
            group_labels: [("project".to_string(), "shop".to_string())].into_iter().collect(),
            alerts: vec![a("PipelineFailed", None), a("DeployFailed", Some(1_764_600_060_000))],
            at_ms: 1_764_600_100_000,
        }
    }

    fn webhook(send_resolved: bool, max_alerts: usize) -> Webhook {
        Webhook { url: Secret::Inline("http://x".into()), send_resolved, max_alerts, bearer: None, timeout_ms: 1 }
    }

    #[test]
    fn the_webhook_payload_is_alertmanagers_version_4() {
        let n = notification();
        let v = webhook_body(&n, &webhook(true, 0), "http://ci");
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["groupLabels"]["project"], "shop");
        assert_eq!(v["commonLabels"]["ref"], "main");
        assert!(v["commonLabels"].get("alertname").is_none());
        assert_eq!(v["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(v["alerts"][1]["status"], "resolved");
        assert_eq!(v["alerts"][1]["endsAt"], "2025-12-01T14:41:00Z");
        assert_eq!(v["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
        let v = webhook_body(&n, &webhook(false, 0), "http://ci");
        assert_eq!(v["alerts"].as_array().unwrap().len(), 1);
        let v = webhook_body(&n, &webhook(true, 1), "http://ci");
        assert_eq!((v["alerts"].as_array().unwrap().len(), v["truncatedAlerts"].as_u64()), (1, Some(1)));
    }

    #[test]
    fn messages_say_what_where_and_link_and_templates_replace_them() {
        let n = notification();
        assert_eq!(title(&n, None, ""), "[FIRING:1] shop");
        let text = alert_text(&n.alerts[0], n.at_ms, None, &n, "");
        assert!(text.starts_with("FIRING: PipelineFailed in shop\njob `test` failed\n"), "{text}");
        assert!(text.contains("link: http://ci/pipelines/7"));
        let t = Text::parse("{{ .Status }}: {{ .CommonLabels.project }} ({{ .Firing }} firing) {{ .Nope.x }}");
        assert!(t.unwrap_err().contains("no such field"));
        let t = Text::parse("{{ .Status }}: {{ .CommonLabels.project }} ({{ .Firing }} firing)").unwrap();
        assert_eq!(title(&n, Some(&t), ""), "firing: shop (1 firing)");
        let t = Text::parse("{{ .Labels.alertname }} since {{ .StartsAt }} for {{ .Receiver }}").unwrap();
        assert_eq!(
            alert_text(&n.alerts[0], n.at_ms, Some(&t), &n, ""),
            "PipelineFailed since 2025-12-01T14:40:00Z for team"
        );
        assert!(Text::parse("{{ range .Alerts }}").unwrap_err().contains("only fields"));
        assert!(Text::parse("{{ .Status ").unwrap_err().contains("never closed"));
        let s = Slack {
            api_url: Secret::Inline("https://hooks".into()),
            channel: Some("#ci".into()),
            username: None,
            send_resolved: true,
            title: None,
            text: None,
            timeout_ms: 1,
        };
        let v = slack_body(&n, &s, "");
        assert_eq!((v["channel"].as_str(), v["attachments"][1]["color"].as_str()), (Some("#ci"), Some("good")));
        assert_eq!(format!("{:?}", Secret::Inline("hunter2".into())), "<secret>");
    }

    #[test]
    fn alertmanager_alerts_end_unless_sent_again() {
        let n = notification();
        let v = alertmanager_body(&n.alerts, n.at_ms, 60_000);
        assert_eq!(v[0]["endsAt"], rfc3339(n.at_ms + 60_000));
        assert_eq!(v[1]["endsAt"], "2025-12-01T14:41:00Z");
    }
}
