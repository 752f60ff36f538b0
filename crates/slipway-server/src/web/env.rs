//! An environment's page: what runs and how it is, the last rollout line by line (followed
//! live while it goes on), charts of its health and traffic from the monitor's series, the
//! release history with deploy-again and roll-back-to buttons, promotion from another
//! environment, and a diff between two releases (commits, artifacts, settings). Every button
//! is shown only to those who may press it and goes through the API's own handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use slipway_model::release::{Release, ReleaseStatus};
use slipway_model::time::{now_ms, rfc3339};

use super::i18n::Lang;
use super::{Chrome, Form, after, duration_text, html_escape, may, page, path_of, refused, short_time};
use crate::State;
use crate::access::Caller;

type S = AxState<Arc<State>>;

/// The charts' window and their number of points.
const CHART_WINDOW_MS: i64 = 30 * 60 * 1000;
const CHART_POINTS: i64 = 60;

struct ReleaseRow {
    id: i64,
    version: String,
    status: String,
    reason: String,
    duration: String,
    actor: String,
    pipeline: Option<i64>,
    at_utc: String,
    at_local: String,
    detail: String,
    /// A good release other than the current one: it can be deployed again or rolled back to.
    reusable: bool,
}

struct RolloutView {
    release: Option<i64>,
    version: String,
    /// (UTC, short, text)
    lines: Vec<(String, String, String)>,
    running: bool,
    ok: bool,
}

#[derive(Template)]
#[template(path = "environment.html")]
struct EnvTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    project: String,
    project_path: String,
    env: String,
    current: Option<String>,
    releases: Vec<ReleaseRow>,
    rollout: Option<RolloutView>,
    charts: Vec<String>,
    promote_from: Vec<String>,
    may_deploy: bool,
    may_rollback: bool,
}

/// The environment, when `project` owns it here (else the 404 page).
fn owned(s: &State, project: &str, env: &str) -> Result<(), Box<Response>> {
    match s.monitor.environments().into_iter().any(|(n, p, _)| n == env && p == project) {
        true => Ok(()),
        false => Err(Box::new(refused(
            StatusCode::NOT_FOUND,
            &format!("project `{project}` has no environment `{env}` deployed here"),
        ))),
    }
}

fn rollout_of(s: &State, env: &str) -> Option<RolloutView> {
    let all = s.rollouts.lock().expect("rollouts lock");
    all.get(env).map(|r| RolloutView {
        release: r.release,
        version: r.version.clone(),
        lines: r.lines.iter().map(|(at, l)| (rfc3339(*at), clock(*at), l.clone())).collect(),
        running: r.finished.is_none(),
        ok: r.finished == Some(true),
    })
}

/// `GET /ui/projects/{name}/environments/{env}`.
pub async fn page_of(AxState(s): S, who: Caller, c: Chrome, Path((project, env)): Path<(String, String)>) -> Response {
    if let Err(r) = owned(&s, &project, &env) {
        return *r;
    }
    let history = s.store.history(&env, 200).await.unwrap_or_default();
    let current = s.store.current(&env).await.ok().flatten();
    let releases = history
        .iter()
        .map(|r| ReleaseRow {
            id: r.id,
            version: r.version.clone(),
            status: r.status.as_str().into(),
            reason: r.reason.to_string(),
            duration: r.duration_ms().map(duration_text).unwrap_or_default(),
            actor: r.actor.clone(),
            pipeline: r.pipeline.as_ref().map(|p| p.pipeline),
            at_utc: rfc3339(r.created_at_ms),
            at_local: short_time(r.created_at_ms),
            detail: r.status_detail.clone().unwrap_or_default(),
            reusable: matches!(
                r.status,
                ReleaseStatus::Healthy | ReleaseStatus::Superseded | ReleaseStatus::RolledBack
            ) && current.as_ref().is_none_or(|c| c.group_id() != r.group_id() && c.artifacts != r.artifacts),
        })
        .collect();
    let mut promote_from: Vec<String> = s
        .monitor
        .environments()
        .into_iter()
        .filter(|(n, p, _)| *p == project && *n != env)
        .map(|(n, _, _)| n)
        .collect();
    promote_from.sort();
    let charts = charts(&s, &env, c.t);
    let t = EnvTpl {
        t: c.t,
        c: &c,
        project_path: path_of(&project),
        may_deploy: may(&s, &who, "deploy", &format!("environments/{env}"), &project),
        may_rollback: may(&s, &who, "rollback", &format!("environments/{env}"), &project),
        current: current.map(|r| r.version),
        rollout: rollout_of(&s, &env),
        project,
        env,
        releases,
        charts,
        promote_from,
    };
    page(t.render(), &c)
}

/// What a started deploy answered: on its way (the page follows it), or refused before it began.
async fn started(r: Result<Response, crate::ServerError>) -> Result<(), String> {
    use futures_util::StreamExt;
    match r {
        Ok(resp) if resp.status().is_success() => {
            // The first event: the release recorded (the page then follows its rollout), or
            // the end already (refused, or nothing to do).
            let mut body = resp.into_body().into_data_stream();
            let first = tokio::time::timeout(Duration::from_secs(30), body.next()).await;
            let line = match first {
                Ok(Some(Ok(b))) => b,
                _ => return Ok(()),
            };
            let v: serde_json::Value =
                serde_json::from_slice(line.split(|b| *b == b'\n').next().unwrap_or(&[])).unwrap_or_default();
            if v["event"] == "deploy_finished" && v["ok"] == false {
                return Err(v["error"].as_str().unwrap_or("failed").to_string());
            }
            // The rest of the events are the engine's to tell the page (the rollout goes on).
            tokio::spawn(async move { while body.next().await.is_some() {} });
            Ok(())
        }
        Ok(resp) => {
            let b = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap_or_default();
            Err(serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&b).into_owned()))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn back(project: &str, env: &str) -> String {
    format!("/ui/projects/{}/environments/{env}", path_of(project))
}

/// `POST …/deploy` (form: `version`): deploys a recorded version again, through the API's
/// handler; the rollout goes on without the browser, whose page follows it.
pub async fn deploy(
    AxState(s): S,
    who: Caller,
    c: Chrome,
    Path((project, env)): Path<(String, String)>,
    Form(form): Form,
) -> Response {
    let Some(version) = form.get("version").filter(|v| !v.is_empty()).cloned() else {
        return after(&back(&project, &env), c.t.s("env.no_version"), true);
    };
    let q = crate::deploys::DeployQuery { version: Some(version.clone()), image: None, force: false };
    let r = crate::deploys::deploy(
        AxState(Arc::clone(&s)),
        who,
        Path((project.clone(), env.clone())),
        axum::extract::Query(q),
        Bytes::new(),
    )
    .await;
    started_or_failed(r, &c, &project, &env, &format!("{} {version} → {env}", c.t.s("env.deploy_started"))).await
}

/// `POST …/promote` (form: `from`): what runs in another environment, here.
pub async fn promote(
    AxState(s): S,
    who: Caller,
    c: Chrome,
    Path((project, env)): Path<(String, String)>,
    Form(form): Form,
) -> Response {
    let from = form.get("from").cloned().unwrap_or_default();
    let r = crate::deploys::promote(
        AxState(Arc::clone(&s)),
        who,
        Path((project.clone(), env.clone())),
        axum::extract::Query(crate::deploys::PromoteQuery { from: from.clone(), force: false }),
    )
    .await;
    started_or_failed(r, &c, &project, &env, &format!("{} {from} → {env}", c.t.s("env.promote_started"))).await
}

/// Back to the environment's page saying the deploy (or promotion) started, or why not.
async fn started_or_failed(
    r: Result<Response, crate::ServerError>,
    c: &Chrome,
    project: &str,
    env: &str,
    said: &str,
) -> Response {
    match started(r).await {
        Ok(()) => after(&back(project, env), said, false),
        Err(e) => after(&back(project, env), &format!("{}: {e}", c.t.s("env.deploy_failed")), true),
    }
}

/// `POST …/rollback` (form: `to`, optional): back to the release before, or to a version;
/// the answer waits for the rollback (it is quick: the old instances still run or start).
pub async fn rollback(
    AxState(s): S,
    who: Caller,
    c: Chrome,
    Path((project, env)): Path<(String, String)>,
    Form(form): Form,
) -> Response {
    let to = form.get("to").filter(|v| !v.is_empty()).map(String::as_str);
    let r = crate::deploys::rollback_now(&s, &who, &project, &env, to).await;
    // Back where the button was: the environments table or the environment's page.
    let from_page = form.get("back").map(String::as_str) == Some("env");
    let to_page = if from_page { back(&project, &env) } else { "/ui/environments".to_string() };
    match r {
        Ok(version) => after(&to_page, &format!("{} {env} → {version}", c.t.s("env.rolled_back")), false),
        Err(e) => after(&to_page, &format!("{}: {e}", c.t.s("env.rollback_failed")), true),
    }
}

/// `GET …/live`: the rollout's new lines (`line` events of HTML list items), `end` when it ended.
pub async fn live(
    AxState(s): S,
    Path((project, env)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = owned(&s, &project, &env) {
        return *r;
    }
    let sent: usize = q.get("from").and_then(|v| v.parse().ok()).unwrap_or(0);
    let release: Option<i64> = q.get("release").and_then(|v| v.parse().ok());
    let stream = futures_util::stream::unfold((s, sent, false), move |(s, mut sent, done)| {
        let env = env.clone();
        async move {
            if done {
                return None;
            }
            loop {
                let (new, ended, other) = {
                    let all = s.rollouts.lock().expect("rollouts lock");
                    match all.get(&env) {
                        Some(r) => (
                            r.lines.iter().skip(sent).cloned().collect::<Vec<_>>(),
                            r.finished.is_some(),
                            r.release != release,
                        ),
                        None => (Vec::new(), true, false),
                    }
                };
                if other {
                    // A newer rollout began: the page shows it after a reload.
                    return Some((Ok::<_, Infallible>(Event::default().event("end").data("{}")), (s, sent, true)));
                }
                if !new.is_empty() {
                    sent += new.len();
                    let mut html = String::new();
                    for (ms, text) in new {
                        let at = rfc3339(ms);
                        html.push_str(&format!(
                            "<li><time datetime=\"{at}\" title=\"{at}\" data-seconds>{}</time> {}</li>",
                            clock(ms),
                            html_escape(&text)
                        ));
                    }
                    return Some((Ok(Event::default().event("lines").data(html)), (s, sent, false)));
                }
                if ended {
                    return Some((Ok(Event::default().event("end").data("{}")), (s, sent, true)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// One chart: the query's value at each step of the window, as an SVG line.
fn chart(s: &State, title: &str, query: &str, unit: &str, scale: f64) -> String {
    let now = now_ms();
    let eval = |window: i64| -> Vec<(i64, f64)> {
        let step = window / CHART_POINTS;
        match slipway_monitor::promql::Query::parse(query) {
            Ok(q) => {
                let store = s.monitor.series.lock().expect("series lock");
                (0..=CHART_POINTS)
                    .filter_map(|i| {
                        let t = now - window + i * step;
                        let v = q.eval_vector(&store, t).ok()?;
                        let x = v.first()?.value;
                        x.is_finite().then_some((t, x * scale))
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        }
    };
    // The window zooms in on an environment with only a little history yet.
    let (mut window, mut points) = (CHART_WINDOW_MS, eval(CHART_WINDOW_MS));
    for w in [5 * 60_000, 60_000] {
        if points.len() >= 10 {
            break;
        }
        (window, points) = (w, eval(w));
    }
    let span =
        if window >= 60 * 60_000 { format!("−{}h", window / 3_600_000) } else { format!("−{}m", window / 60_000) };
    let (w, h, pad) = (320.0, 110.0, 22.0);
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(if unit == "%" { 1.0 } else { 1e-9 });
    let last = points.last().map(|p| format!("{}{unit}", round(p.1))).unwrap_or_else(|| "—".into());
    let mut out = format!(
        "<figure class=\"chart\"><figcaption>{} <strong>{}</strong></figcaption><svg role=\"img\" aria-label=\"{}: {}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">",
        html_escape(title),
        html_escape(&last),
        html_escape(title),
        html_escape(&last)
    );
    out.push_str(&format!(
        "<line class=\"axis\" x1=\"{pad}\" y1=\"{}\" x2=\"{w}\" y2=\"{}\"/><text x=\"0\" y=\"12\">{}{unit}</text><text x=\"{pad}\" y=\"{h}\">{span}</text><text x=\"{}\" y=\"{h}\">now</text>",
        h - pad,
        h - pad,
        round(max),
        w - 26.0
    ));
    if !points.is_empty() {
        let xy: Vec<String> = points
            .iter()
            .map(|(t, v)| {
                let x = pad + (w - pad) * ((t - (now - window)) as f64 / window as f64);
                let y = (h - pad) - (h - pad - 16.0) * (v / max);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        out.push_str(&format!("<polyline points=\"{}\"/>", xy.join(" ")));
    }
    out.push_str("</svg></figure>");
    out
}

/// A time of day to the second (UTC; the page's script shows it in the viewer's zone).
fn clock(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%H:%M:%S").to_string()).unwrap_or_default()
}

fn round(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Health and traffic charts (the proxy's counters and latency histogram, and `up`).
fn charts(s: &State, env: &str, t: Lang) -> Vec<String> {
    let sel = format!("{{environment=\"{env}\"}}");
    vec![
        chart(s, t.s("chart.healthy"), &format!("sum(up{sel})"), "", 1.0),
        chart(s, t.s("chart.requests"), &format!("sum(rate(slipway_proxy_requests_total{sel}[1m]))"), "/s", 1.0),
        chart(
            s,
            t.s("chart.errors"),
            &format!(
                "sum(rate(slipway_proxy_errors_total{sel}[1m])) / sum(rate(slipway_proxy_requests_total{sel}[1m]))"
            ),
            "%",
            100.0,
        ),
        chart(
            s,
            t.s("chart.latency"),
            &format!(
                "histogram_quantile(0.95, sum by (le) (rate(slipway_proxy_request_duration_seconds_bucket{sel}[1m])))"
            ),
            " ms",
            1000.0,
        ),
    ]
}

struct ArtifactRow {
    platform: String,
    name: String,
    from: String,
    to: String,
    changed: bool,
}

#[derive(Template)]
#[template(path = "diff.html")]
struct DiffTpl<'a> {
    t: Lang,
    c: &'a Chrome,
    project: String,
    project_path: String,
    env: String,
    choices: Vec<(i64, String)>,
    from: Option<Release>,
    to: Option<Release>,
    both: Option<(Release, Release)>,
    commits: Vec<String>,
    commits_note: String,
    artifacts: Vec<ArtifactRow>,
    config: Vec<(char, String)>,
}

/// The commits between two releases' commits, newest first, from the project's repository.
async fn commits(s: &State, project: &str, from: &str, to: &str) -> Result<Vec<String>, String> {
    let p = s.store.project(project).await.map_err(|e| e.to_string())?.ok_or("no such project")?;
    let repo = crate::pipelines::plan_source(&s.data_dir, &p);
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["log", "--format=%h %s (%an)", "-n", "200", &format!("{from}..{to}"), "--"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "git log took longer than 10 s".to_string())?
    .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
}

/// `GET …/diff?from=ID&to=ID`: two releases side by side (default: the current one and the
/// release before it).
pub async fn diff(AxState(s): S, c: Chrome, Path((project, env)): Path<(String, String)>) -> Response {
    if let Err(r) = owned(&s, &project, &env) {
        return *r;
    }
    let history = s.store.history(&env, 200).await.unwrap_or_default();
    let pick = |key: &str| c.query.get(key).and_then(|v| v.parse::<i64>().ok());
    let to = pick("to").and_then(|id| history.iter().find(|r| r.id == id)).or(history.first()).cloned();
    let from = pick("from")
        .and_then(|id| history.iter().find(|r| r.id == id))
        .or_else(|| to.as_ref().and_then(|t| history.iter().find(|r| r.id < t.id)))
        .cloned();
    let (mut commit_list, mut note) = (Vec::new(), String::new());
    let mut artifacts = Vec::new();
    let mut config = Vec::new();
    if let (Some(a), Some(b)) = (&from, &to) {
        match (&a.commit, &b.commit) {
            (Some(x), Some(y)) if x == y => note = c.t.s("diff.same_commit").into(),
            (Some(x), Some(y)) => match commits(&s, &project, x, y).await {
                Ok(l) if l.is_empty() => note = c.t.s("diff.no_commits").into(),
                Ok(l) => commit_list = l,
                Err(e) => note = format!("{}: {e}", c.t.s("diff.no_log")),
            },
            _ => note = c.t.s("diff.no_commit").into(),
        }
        let mut platforms: Vec<&str> = a.artifacts.iter().chain(&b.artifacts).map(|x| x.platform.as_str()).collect();
        platforms.sort();
        platforms.dedup();
        for p in platforms {
            let (x, y) = (a.artifacts.iter().find(|x| x.platform == p), b.artifacts.iter().find(|x| x.platform == p));
            let short = |x: Option<&slipway_model::release::Artifact>| {
                x.map(|x| x.sha256.chars().take(12).collect()).unwrap_or_else(|| "—".into())
            };
            artifacts.push(ArtifactRow {
                platform: p.to_string(),
                name: y.or(x).map(|x| x.name.clone()).unwrap_or_default(),
                changed: x.map(|x| &x.sha256) != y.map(|y| &y.sha256),
                from: short(x),
                to: short(y),
            });
        }
        let (ca, cb) = (
            serde_json::to_string_pretty(&a.config).unwrap_or_default(),
            serde_json::to_string_pretty(&b.config).unwrap_or_default(),
        );
        for op in similar::TextDiff::from_lines(&ca, &cb).iter_all_changes() {
            let sign = match op.tag() {
                similar::ChangeTag::Delete => '-',
                similar::ChangeTag::Insert => '+',
                similar::ChangeTag::Equal => ' ',
            };
            config.push((sign, op.value().trim_end_matches('\n').to_string()));
        }
    }
    let choices = history.iter().map(|r| (r.id, format!("#{} {} ({})", r.id, r.version, r.status.as_str()))).collect();
    let t = DiffTpl {
        t: c.t,
        c: &c,
        project_path: path_of(&project),
        project,
        env,
        choices,
        both: from.clone().zip(to.clone()),
        from,
        to,
        commits: commit_list,
        commits_note: note,
        artifacts,
        config,
    };
    page(t.render(), &c)
}
