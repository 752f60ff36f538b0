//! Notifications (docs/monitoring.md): alerts of the rules and events of pipelines and deploys
//! go through `slipway_monitor::notify`'s routing, grouping, silences and once-per-state
//! dispatcher; what it tells is queued in the store — with the dispatcher's state, in one
//! transaction — and a delivery loop sends each queued delivery to its channel (webhook,
//! Slack, e-mail over SMTP, an Alertmanager's v2 API), one at a time per channel, retried
//! with back-off for a day. Nothing here waits on a receiver: a pipeline or a deploy only
//! hands its event over.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_model::time::now_ms;
use slipway_monitor::channels::{self, AlertmanagerTarget, Channel, Email, NotifyConfig, Secret};
use slipway_monitor::notify::{Dispatcher, Notice, Notification, Silence};
use slipway_monitor::series::Labels;
use slipway_store::{Delivery, NewDelivery};

use crate::State;

/// How long a delivery is retried before it is recorded as failed.
pub const GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;
/// How long an attempt holds its delivery: longer than any send may take.
const CLAIM_LEASE_MS: i64 = 5 * 60 * 1_000;
/// The longest wait between two attempts.
const MAX_BACKOFF_MS: i64 = 300_000;
/// How often alerts still firing are sent to Alertmanagers again (Prometheus' resend delay).
const AM_RESEND_MS: i64 = 60_000;
const STATE: &str = "dispatcher";

pub struct Notifier {
    pub(crate) config: NotifyConfig,
    pub(crate) external_url: String,
    dispatcher: tokio::sync::Mutex<Dispatched>,
    pub(crate) silences: Mutex<Vec<Silence>>,
    /// A delivery was queued or a channel became free.
    wake: tokio::sync::Notify,
    /// Channels sending now (`receiver/channel`).
    busy: Mutex<HashSet<String>>,
    http: reqwest::Client,
}

#[derive(Default)]
struct Dispatched {
    d: Dispatcher,
    /// The state as last saved.
    saved: String,
    /// Alertmanager forwarding: the alerts known, and when each was last sent.
    am: BTreeMap<String, (Notice, Option<i64>)>,
}

impl Notifier {
    pub fn new(config: NotifyConfig, external_url: String) -> Notifier {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client");
        Notifier {
            config,
            external_url,
            dispatcher: tokio::sync::Mutex::default(),
            silences: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            busy: Mutex::default(),
            http,
        }
    }

    /// Whether anything is configured to be told.
    pub fn enabled(&self) -> bool {
        !self.config.receivers.is_empty() || !self.config.alertmanagers.is_empty()
    }
}

/// Loads the dispatcher's state and the silences a previous server left.
pub(crate) async fn restore(s: &State) -> Result<(), crate::ServerError> {
    if let Some(text) = s.store.notify_state(STATE).await? {
        match serde_json::from_str::<Dispatcher>(&text) {
            Ok(d) => {
                let mut g = s.notifier.dispatcher.lock().await;
                g.d = d;
                g.saved = text;
            }
            Err(e) => tracing::warn!(error = %e, "the saved notification state does not read; starting afresh"),
        }
    }
    reload_silences(s).await?;
    Ok(())
}

pub(crate) async fn reload_silences(s: &State) -> Result<(), crate::ServerError> {
    let now = now_ms();
    let rows = s.store.silences(now).await?;
    let list: Vec<Silence> = rows.iter().filter_map(silence_of).collect();
    *s.notifier.silences.lock().expect("silences lock") = list;
    Ok(())
}

pub(crate) fn silence_of(r: &slipway_store::SilenceRow) -> Option<Silence> {
    let matchers = serde_json::from_str(&r.matchers).ok()?;
    Some(Silence {
        id: r.id.clone(),
        matchers,
        starts_at_ms: r.starts_at_ms,
        ends_at_ms: r.ends_at_ms,
        created_by: r.created_by.clone(),
        comment: r.comment.clone(),
    })
}

/// Hands alerts and events to the dispatcher, and tells what is due at once.
pub(crate) async fn take(s: &Arc<State>, notices: Vec<Notice>) {
    if !s.notifier.enabled() || notices.is_empty() {
        return;
    }
    let now = now_ms();
    let mut g = s.notifier.dispatcher.lock().await;
    for n in &notices {
        g.d.insert(&s.notifier.config.route, n, now);
        if !s.notifier.config.alertmanagers.is_empty() {
            // A new alert, or one that changed state, goes at the next flush; a resolution of
            // one not known is nothing to tell.
            let fp = n.fingerprint();
            let state = |x: &Notice| (x.ends_at_ms.is_some(), x.starts_at_ms);
            match g.am.get_mut(&fp) {
                Some((old, at)) => {
                    if state(old) != state(n) {
                        *at = None;
                    }
                    *old = n.clone();
                }
                None if n.ends_at_ms.is_some() => {}
                None => {
                    g.am.insert(fp, (n.clone(), None));
                }
            }
        }
    }
    flush_locked(s, &mut g, now).await;
}

/// Tells what is due (group intervals, repeats, Alertmanager resends).
pub(crate) async fn flush(s: &Arc<State>) {
    if !s.notifier.enabled() {
        return;
    }
    let mut g = s.notifier.dispatcher.lock().await;
    flush_locked(s, &mut g, now_ms()).await;
}

fn muted(s: &State, now: i64) -> impl Fn(&Labels) -> bool + use<> {
    let silences = s.notifier.silences.lock().expect("silences lock").clone();
    move |l: &Labels| silences.iter().any(|x| x.mutes(l, now))
}

async fn flush_locked(s: &Arc<State>, g: &mut Dispatched, now: i64) {
    let n = &s.notifier;
    let before = (g.d.clone(), g.am.clone());
    let is_muted = muted(s, now);
    let due = g.d.flush(&n.config.route, now, &is_muted);
    let mut queue = Vec::new();
    for note in &due {
        let Some(receiver) = n.config.receiver(&note.receiver) else { continue };
        let project = note.common_labels().get("project").cloned();
        let payload = serde_json::to_string(note).expect("notifications serialize");
        for (name, channel) in receiver.channels() {
            if !channel.send_resolved() && note.firing().next().is_none() {
                continue;
            }
            queue.push(NewDelivery {
                receiver: note.receiver.clone(),
                channel: name,
                group_key: note.key.clone(),
                project: project.clone(),
                payload: payload.clone(),
            });
        }
    }
    // Alertmanagers get every alert that changed, and the ones still firing once a minute.
    if !n.config.alertmanagers.is_empty() {
        let send: Vec<Notice> = g
            .am
            .values()
            .filter(|(a, at)| !is_muted(&a.labels) && at.is_none_or(|t| !a.resolved(now) && now - t >= AM_RESEND_MS))
            .map(|(a, _)| a.clone())
            .collect();
        if !send.is_empty() {
            for a in &send {
                if let Some(e) = g.am.get_mut(&a.fingerprint()) {
                    e.1 = Some(now);
                }
            }
            // Told once, or resolved and told: forgotten.
            g.am.retain(|_, (a, at)| !(at.is_some() && (a.once || a.resolved(now))));
            let payload = serde_json::to_string(&send).expect("alerts serialize");
            for i in 0..n.config.alertmanagers.len() {
                queue.push(NewDelivery {
                    receiver: "alertmanager".into(),
                    channel: format!("alertmanager[{i}]"),
                    group_key: String::new(),
                    project: None,
                    payload: payload.clone(),
                });
            }
        }
    }
    let state = serde_json::to_string(&g.d).expect("the dispatcher serializes");
    if queue.is_empty() && state == g.saved {
        return;
    }
    let save = (state != g.saved).then_some((STATE, state.as_str()));
    match s.store.queue_deliveries(save, &queue).await {
        Ok(_) => {
            g.saved = state.clone();
            if !queue.is_empty() {
                n.wake.notify_one();
            }
        }
        Err(e) => {
            // Nothing was kept: the groups are told again at the next flush.
            tracing::warn!(error = %e, "cannot queue notifications; trying again");
            (g.d, g.am) = before;
        }
    }
}

/// Sends queued deliveries as they fall due, and flushes the dispatcher's timers, until the
/// server stops.
pub(crate) async fn deliver_loop(s: Arc<State>) {
    if !s.notifier.enabled() {
        return;
    }
    loop {
        flush(&s).await;
        let now = now_ms();
        match s.store.due_deliveries(now, 200).await {
            Ok(due) => {
                for d in due {
                    let key = format!("{}/{}", d.receiver, d.channel);
                    if !s.notifier.busy.lock().expect("busy lock").insert(key.clone()) {
                        continue;
                    }
                    let s2 = Arc::clone(&s);
                    tokio::spawn(async move {
                        deliver(&s2, d).await;
                        s2.notifier.busy.lock().expect("busy lock").remove(&key);
                        s2.notifier.wake.notify_one();
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the notification queue"),
        }
        let next_store = s.store.next_delivery_at().await.ok().flatten();
        let next_group = s.notifier.dispatcher.lock().await.d.next_due();
        let next = [next_store, next_group].into_iter().flatten().min().unwrap_or(now + 1_000);
        let wait = Duration::from_millis((next - now_ms()).clamp(10, 1_000) as u64);
        let _ = tokio::time::timeout(wait, s.notifier.wake.notified()).await;
    }
}

async fn deliver(s: &State, d: Delivery) {
    match s.store.claim_delivery(d.id, d.attempts, CLAIM_LEASE_MS).await {
        Ok(true) => {}
        // Taken by an attempt that ended after `d` was read, or the store is down (the
        // loop reads it again).
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, delivery = d.id, "cannot take a delivery");
            return;
        }
    }
    let r = send(s, &d).await;
    let now = now_ms();
    let (error, retry) = match &r {
        Ok(()) => (None, None),
        Err(Failure::Permanent(e)) => (Some(e.clone()), None),
        Err(Failure::Retry(e)) => {
            let backoff = (1_000i64 << d.attempts.clamp(0, 20)).min(MAX_BACKOFF_MS);
            let retry = (now - d.created_at_ms < GIVE_UP_AFTER_MS).then_some(now + backoff);
            (Some(e.clone()), retry)
        }
    };
    match &error {
        None => tracing::info!(receiver = %d.receiver, channel = %d.channel, delivery = d.id, "notification delivered"),
        Some(e) => {
            tracing::warn!(receiver = %d.receiver, channel = %d.channel, delivery = d.id, attempt = d.attempts + 1, error = %e, gives_up = retry.is_none(), "notification not delivered")
        }
    }
    if let Err(e) = s.store.delivery_attempted(d.id, error.as_deref(), retry).await {
        tracing::warn!(error = %e, delivery = d.id, "cannot record a delivery attempt");
    }
}

enum Failure {
    Retry(String),
    Permanent(String),
}

fn reveal(secret: &Secret, what: &str) -> Result<String, Failure> {
    secret.reveal().map_err(|e| Failure::Retry(format!("{what}: {e}")))
}

async fn send(s: &State, d: &Delivery) -> Result<(), Failure> {
    let n = &s.notifier;
    let external = n.external_url.as_str();
    if d.receiver == "alertmanager" {
        let i: usize = d
            .channel
            .trim_start_matches("alertmanager[")
            .trim_end_matches(']')
            .parse()
            .map_err(|_| Failure::Permanent(format!("`{}` is not a channel", d.channel)))?;
        let Some(am) = n.config.alertmanagers.get(i) else {
            return Err(Failure::Permanent(format!("{} is no longer in the notification file", d.channel)));
        };
        let alerts: Vec<Notice> = serde_json::from_str(&d.payload)
            .map_err(|e| Failure::Permanent(format!("the queued alerts do not read: {e}")))?;
        let valid = 4 * s.monitor.interval.as_millis().max(AM_RESEND_MS as u128) as i64;
        return post_alertmanager(n, am, &channels::alertmanager_body(&alerts, now_ms(), valid)).await;
    }
    let note: Notification = serde_json::from_str(&d.payload)
        .map_err(|e| Failure::Permanent(format!("the queued notification does not read: {e}")))?;
    let Some(receiver) = n.config.receiver(&d.receiver) else {
        return Err(Failure::Permanent(format!("receiver `{}` is no longer in the notification file", d.receiver)));
    };
    let Some(channel) = receiver.channel(&d.channel) else {
        return Err(Failure::Permanent(format!(
            "`{}` of receiver `{}` is no longer in the notification file",
            d.channel, d.receiver
        )));
    };
    match channel {
        Channel::Webhook(w) => {
            let url = reveal(&w.url, "the webhook's url_file")?;
            let bearer = w.bearer.as_ref().map(|b| reveal(b, "the webhook's credentials_file")).transpose()?;
            post_json(n, &url, bearer.as_deref(), &channels::webhook_body(&note, w, external), w.timeout_ms).await
        }
        Channel::Slack(sl) => {
            let url = reveal(&sl.api_url, "the Slack api_url_file")?;
            post_json(n, &url, None, &channels::slack_body(&note, sl, external), sl.timeout_ms).await
        }
        Channel::Email(e) => send_email(e, &note, external).await,
    }
}

async fn post_alertmanager(n: &Notifier, am: &AlertmanagerTarget, body: &serde_json::Value) -> Result<(), Failure> {
    let bearer = am.bearer.as_ref().map(|b| reveal(b, "the Alertmanager's credentials_file")).transpose()?;
    post_json(n, &format!("{}/api/v2/alerts", am.url), bearer.as_deref(), body, am.timeout_ms).await
}

/// POSTs JSON; a 2xx is delivered, a 4xx other than 408/429 will not get better, anything
/// else is tried again. Errors never carry the URL (it may hold a token).
async fn post_json(
    n: &Notifier,
    url: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
    timeout_ms: u64,
) -> Result<(), Failure> {
    let mut req = n
        .http
        .post(url)
        .timeout(Duration::from_millis(timeout_ms))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("JSON serializes"));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.map_err(|e| Failure::Retry(describe(e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    let why = format!("HTTP {status}: {}", text.trim());
    if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
        return Err(Failure::Permanent(why));
    }
    Err(Failure::Retry(why))
}

fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut root = None;
    let mut src = std::error::Error::source(&e);
    while let Some(x) = src {
        root = Some(x.to_string());
        src = x.source();
    }
    match root {
        Some(r) => format!("{kind}: {r}"),
        None => kind.to_string(),
    }
}

async fn send_email(e: &Email, note: &Notification, external: &str) -> Result<(), Failure> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let (subject, body) = channels::email_message(note, e, external);
    let perm = |what: &str, x: String| Failure::Permanent(format!("{what}: {x}"));
    let from: Mailbox = e.from.parse().map_err(|x: lettre::address::AddressError| perm("`from`", x.to_string()))?;
    let mut msg = lettre::Message::builder().from(from).subject(subject).header(ContentType::TEXT_PLAIN);
    for to in &e.to {
        let to: Mailbox = to.parse().map_err(|x: lettre::address::AddressError| perm("`to`", x.to_string()))?;
        msg = msg.to(to);
    }
    let msg = msg.body(body).map_err(|x| perm("the message", x.to_string()))?;
    let (host, port) = e.smarthost.rsplit_once(':').unwrap_or((e.smarthost.as_str(), "25"));
    let port: u16 = port.parse().unwrap_or(25);
    let mut params = TlsParameters::builder(host.to_string());
    if let Some(ca) = &e.ca_file {
        let pem = std::fs::read(ca).map_err(|x| Failure::Retry(format!("tls_config:ca_file {}: {x}", ca.display())))?;
        let cert = Certificate::from_pem(&pem).map_err(|x| perm("tls_config:ca_file", x.to_string()))?;
        params = params.add_root_certificate(cert);
    }
    let params = params.build_rustls().map_err(|x| perm("TLS", x.to_string()))?;
    let tls = if port == 465 {
        Tls::Wrapper(params)
    } else if e.require_tls {
        Tls::Required(params)
    } else {
        Tls::Opportunistic(params)
    };
    let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(Duration::from_millis(e.timeout_ms)));
    if let Some(h) = &e.hello {
        t = t.hello_name(ClientId::Domain(h.clone()));
    }
    if let (Some(user), Some(pass)) = (&e.auth_username, &e.auth_password) {
        let pass = reveal(pass, "auth_password_file")?;
        t = t.credentials(Credentials::new(user.clone(), pass));
    }
    let t = t.build();
    match t.send(msg).await {
        Ok(_) => Ok(()),
        Err(x) if x.is_permanent() => Err(Failure::Permanent(format!("SMTP {}", x))),
        Err(x) => Err(Failure::Retry(format!("SMTP {x}"))),
    }
}

// ----- events -------------------------------------------------------------------------------

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A link into the server.
pub(crate) fn link(s: &State, path: &str) -> String {
    format!("{}{path}", s.notifier.external_url)
}

/// Text without ANSI escapes (logs carry colours).
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\r' {
            continue;
        }
        out.push(c);
    }
    out
}

/// A pipeline ended: failed → `PipelineFailed` fires (for its project and ref) with the failed
/// jobs and the last lines of the first one's log; passed → that alert resolves (fixed);
/// canceled → `PipelineCanceled`, told once.
pub(crate) async fn pipeline_finished(s: &Arc<State>, run: slipway_store::RunId) {
    if !s.notifier.enabled() {
        return;
    }
    let Ok(Some(row)) = s.store.run(run).await else { return };
    let now = now_ms();
    let r#ref = row.ref_name.clone().unwrap_or_default();
    let url = link(s, &format!("/api/v1/pipelines/{run}"));
    let commit = row.commit_sha.clone().unwrap_or_default();
    let short: String = commit.chars().take(8).collect();
    let mut ann = Labels::new();
    ann.insert("pipeline".into(), run.to_string());
    if !commit.is_empty() {
        ann.insert("commit".into(), commit.clone());
    }
    if let Some(a) = &row.author {
        ann.insert("author".into(), a.clone());
    }
    if let Some(t) = &row.triggered_by {
        ann.insert("triggered_by".into(), t.clone());
    }
    let base = |name: &str, severity: &str| {
        labels(&[
            ("alertname", name),
            ("event", "pipeline"),
            ("project", row.project.as_str()),
            ("ref", r#ref.as_str()),
            ("severity", severity),
        ])
    };
    let notice = |labels: Labels, ann: Labels, ends: Option<i64>, once: bool| Notice {
        labels,
        annotations: ann,
        starts_at_ms: row.created_at_ms,
        ends_at_ms: ends,
        generator_url: url.clone(),
        once,
    };
    use slipway_model::run::PipelineStatus;
    let notices = match row.status {
        PipelineStatus::Failed => {
            let jobs = s.store.jobs(run).await.unwrap_or_default();
            let failed: Vec<&slipway_store::JobRow> =
                jobs.iter().filter(|j| j.status == slipway_model::run::JobState::Failed).collect();
            let mut description = String::new();
            if let Some(d) = &row.detail {
                description.push_str(&format!("the pipeline did not start: {}\n", plain(d).trim_end()));
            }
            for j in &failed {
                let why = match (&j.reason, j.exit_code) {
                    (Some(r), _) => r.clone(),
                    (None, Some(c)) => format!("exit code {c}"),
                    (None, None) => "failed".into(),
                };
                description.push_str(&format!("job `{}` (stage {}) failed: {why}\n", j.name, j.stage));
            }
            if let Some(j) = failed.first()
                && let Some(log) = crate::api::read_log(s, run, j.index).await
            {
                let text = plain(&String::from_utf8_lossy(&log));
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                let tail = &lines[lines.len().saturating_sub(10)..];
                description.push_str(&format!("last lines of `{}`:\n", j.name));
                for l in tail {
                    description.push_str(&format!("    {l}\n"));
                }
            }
            let mut a = ann.clone();
            a.insert(
                "summary".into(),
                format!("Pipeline #{run} of {} failed on {}{}", row.project, r#ref, commit_note(&short, &row.author)),
            );
            a.insert("description".into(), description.trim_end().to_string());
            vec![notice(base("PipelineFailed", "warning"), a, None, false)]
        }
        PipelineStatus::Success => {
            let mut a = ann.clone();
            a.insert("summary".into(), format!("Pipeline #{run} of {} passed on {}: fixed", row.project, r#ref));
            vec![notice(base("PipelineFailed", "warning"), a, Some(now), false)]
        }
        PipelineStatus::Canceled => {
            let mut l = base("PipelineCanceled", "info");
            l.insert("pipeline".into(), run.to_string());
            let mut a = ann.clone();
            a.insert("summary".into(), format!("Pipeline #{run} of {} on {} was canceled", row.project, r#ref));
            vec![notice(l, a, None, true)]
        }
        _ => Vec::new(),
    };
    take(s, notices).await;
}

fn commit_note(short: &str, author: &Option<String>) -> String {
    match (short.is_empty(), author) {
        (false, Some(a)) => format!(" (commit {short} by {a})"),
        (false, None) => format!(" (commit {short})"),
        _ => String::new(),
    }
}

/// A deploy's event, for an environment of `project`: started and succeeded are told once;
/// a failed deploy fires `DeployFailed` until one succeeds; a rollback is told once; a
/// release waiting for approvals fires `ApprovalNeeded` until it goes on.
pub(crate) async fn deploy_event(s: &Arc<State>, project: &str, e: &slipway_model::event::DeployEvent) {
    use slipway_model::event::{DeployErrorKind, DeployEvent};
    if !s.notifier.enabled() {
        return;
    }
    let now = now_ms();
    let (env, release) = match e {
        DeployEvent::DeployStarted { environment, release, .. } => (environment, Some(*release)),
        DeployEvent::DeployFinished { environment, release, .. } => (environment, *release),
        DeployEvent::ApprovalNeeded { environment, release, .. } => (environment, Some(*release)),
        _ => return,
    };
    let url = link(s, &format!("/api/v1/projects/{}/environments/{env}/releases", urlencode(project)));
    let rel = release.map(|r| r.to_string()).unwrap_or_default();
    let l = |name: &str, severity: &str, with_release: bool| {
        labels(&[
            ("alertname", name),
            ("event", "deploy"),
            ("project", project),
            ("environment", env.as_str()),
            ("severity", severity),
            ("release", if with_release { rel.as_str() } else { "" }),
        ])
    };
    let notice = |labels: Labels, summary: String, more: &[(&str, String)], ends: Option<i64>, once: bool| {
        let mut a = Labels::new();
        a.insert("summary".into(), summary);
        for (k, v) in more {
            if !v.is_empty() {
                a.insert(k.to_string(), v.clone());
            }
        }
        Notice { labels, annotations: a, starts_at_ms: now, ends_at_ms: ends, generator_url: url.clone(), once }
    };
    let mut out = Vec::new();
    let approval_done = |out: &mut Vec<Notice>| {
        if release.is_some() {
            out.push(notice(l("ApprovalNeeded", "info", true), String::new(), &[], Some(now), false));
        }
    };
    match e {
        DeployEvent::DeployStarted { version, reason, .. } => {
            out.push(notice(
                l("DeployStarted", "info", true),
                format!("{project}: deploying {version} to {env} (release #{rel}, {reason})"),
                &[("version", version.clone())],
                None,
                true,
            ));
        }
        DeployEvent::ApprovalNeeded { version, need, have, .. } => {
            out.push(notice(
                l("ApprovalNeeded", "info", true),
                format!("{project}: release #{rel} ({version}) of {env} waits for {} approval(s)", need - have),
                &[("version", version.clone()), ("approve", format!("slipway approve {env} {rel}"))],
                None,
                false,
            ));
        }
        DeployEvent::DeployFinished { ok: true, unchanged: false, version, reason, seconds, url: at, .. } => {
            approval_done(&mut out);
            let version = version.clone().unwrap_or_default();
            let took = seconds.map(|x| format!(" in {x:.1} s")).unwrap_or_default();
            let rollback = reason.is_some_and(|r| r.is_rollback());
            let detail = match release {
                Some(id) if rollback => {
                    s.store.release(id).await.ok().flatten().and_then(|r| r.status_detail).unwrap_or_default()
                }
                _ => String::new(),
            };
            let (name, summary) = if rollback {
                ("DeployRolledBack", format!("{project}: {env} rolled back to {version}{took}"))
            } else {
                ("DeploySucceeded", format!("{project}: {version} is healthy in {env}{took}"))
            };
            let severity = if rollback { "warning" } else { "info" };
            let mut lb = l(name, severity, true);
            if let Some(r) = reason {
                lb.insert("reason".into(), r.to_string());
            }
            out.push(notice(
                lb,
                summary,
                &[("version", version.clone()), ("url", at.clone().unwrap_or_default()), ("detail", detail)],
                None,
                true,
            ));
            out.push(notice(l("DeployFailed", "warning", false), String::new(), &[], Some(now), false));
        }
        DeployEvent::DeployFinished { ok: false, error, error_kind, hint, version, .. } => {
            approval_done(&mut out);
            // Refusals and bad input are the caller's to read, not news.
            if matches!(
                error_kind,
                Some(DeployErrorKind::Failed | DeployErrorKind::Interrupted | DeployErrorKind::NoAgent)
            ) {
                let version = version.clone().unwrap_or_default();
                out.push(notice(
                    l("DeployFailed", "warning", false),
                    format!("{project}: deploy of {version} to {env} failed"),
                    &[
                        ("description", error.clone().unwrap_or_default()),
                        ("hint", hint.clone().unwrap_or_default()),
                        ("version", version.clone()),
                        ("release", rel.clone()),
                    ],
                    None,
                    false,
                ));
            }
        }
        _ => {}
    }
    take(s, out).await;
}

fn urlencode(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

/// The rules' alerts after an evaluation: firing ones, and the ones that resolved now.
pub(crate) fn rule_notices(s: &State, alerts: &[slipway_monitor::rules::Alert]) -> Vec<Notice> {
    use slipway_monitor::rules::State as A;
    alerts
        .iter()
        .filter_map(|a| {
            let ends = match a.state {
                A::Firing => None,
                A::Inactive if a.fired_at_ms.is_some() => a.resolved_at_ms,
                _ => return None,
            };
            let q = a.labels.get("alertname").cloned().unwrap_or_default();
            Some(Notice {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at_ms: a.active_at_ms,
                ends_at_ms: ends,
                generator_url: link(s, &format!("/api/v1/alerts?alertname={q}")),
                once: false,
            })
        })
        .collect()
}
