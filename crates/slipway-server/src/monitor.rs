//! The server's monitoring loop and its Prometheus-compatible API: every interval it collects
//! series — pipelines per project and status from the store; per environment and instance
//! from every agent it reaches (this machine's, and the connected ones through their tunnels):
//! `up`, requests, errors, latency buckets, restarts — into a bounded in-memory
//! `slipway_monitor::SeriesStore`, then evaluates the server's rule files and each project's
//! `alerts:` (from the pipeline file of its newest default-branch pipeline). `/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/alerts` and `/api/v1/rules` answer in the Prometheus HTTP
//! API's shapes, showing a caller only the projects it may read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query as UrlQuery, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_api::server::ApiErrorBody;
use slipway_model::access::Permission;
use slipway_model::environment::{Environment, Watch};
use slipway_model::time::now_ms;
use slipway_monitor::promql::{Query, Value, View};
use slipway_monitor::rules::{Evaluator, Rule, RuleFile, State as AlertState};
use slipway_monitor::series::{Bounds, Labels, SeriesStore};
use slipway_monitor::template::Template;

use crate::State;
use crate::access::Caller;

type S = AxState<Arc<State>>;

/// The monitor's state: series, rules and the alerts' states.
pub struct Monitor {
    pub(crate) series: Mutex<SeriesStore>,
    bounds: Bounds,
    pub(crate) interval: Duration,
    server_rules: RuleFile,
    /// Per project: the commit its rules came from, and the rules (with a `project` label).
    projects: Mutex<HashMap<String, (String, RuleFile)>>,
    /// Per rule source (`""`: the server's files; else a project).
    evaluators: Mutex<HashMap<String, Evaluator>>,
    /// Environment → the project it belongs to, as deploys and pipeline files say.
    env_projects: Mutex<HashMap<String, String>>,
    /// Environment → its project and settings, from the project's newest default-branch
    /// pipeline file (the post-deploy watch reads them).
    env_config: Mutex<HashMap<String, (String, Environment)>>,
    /// Per agent, the series it gave at its last answer: one it no longer gives gets a stale
    /// marker (as Prometheus marks a series gone from a scrape), so a stopped instance's `up`
    /// does not linger for the lookback.
    collected: Mutex<HashMap<String, std::collections::BTreeSet<Labels>>>,
    /// The `ALERTS` series written at the last evaluation (they get stale markers when they end).
    alerts_written: Mutex<std::collections::BTreeSet<Labels>>,
    /// Environments an alert is rolling back now.
    pub(crate) rolling: Mutex<std::collections::HashSet<String>>,
}

impl Monitor {
    pub fn new(server_rules: RuleFile, interval: Duration, retention: Duration) -> Monitor {
        let bounds = Bounds { retention_ms: retention.as_millis() as i64, ..Bounds::default() };
        Monitor {
            series: Mutex::new(SeriesStore::new(bounds)),
            bounds,
            interval,
            server_rules,
            projects: Mutex::default(),
            evaluators: Mutex::default(),
            env_projects: Mutex::default(),
            env_config: Mutex::default(),
            alerts_written: Mutex::default(),
            collected: Mutex::default(),
            rolling: Mutex::default(),
        }
    }
}

/// Where the series are kept between runs.
fn series_file(data: &std::path::Path) -> std::path::PathBuf {
    data.join("monitor").join("series.gz")
}

/// Reads the series a previous server saved (a file that does not read is set aside, and the
/// series start empty).
pub(crate) fn load(s: &State) {
    let path = series_file(&s.data_dir);
    let Ok(gz) = std::fs::read(&path) else { return };
    let mut bytes = Vec::new();
    use std::io::Read as _;
    let read = flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())
        .and_then(|_| SeriesStore::from_bytes(&bytes, s.monitor.bounds));
    match read {
        Ok(mut store) => {
            store.compact(now_ms());
            tracing::info!(series = store.len(), samples = store.samples(), "series read back from {}", path.display());
            *s.monitor.series.lock().expect("series lock") = store;
        }
        Err(e) => {
            let aside = path.with_extension("gz.unreadable");
            let _ = std::fs::rename(&path, &aside);
            tracing::warn!(error = %e, "the saved series do not read; set aside as {}", aside.display());
        }
    }
}

/// Forgets what is past the retention, downsamples, and writes the series to disk (a new file
/// renamed over the old: a crash leaves one or the other).
pub(crate) async fn save(s: &Arc<State>) {
    let bytes = {
        let mut store = s.monitor.series.lock().expect("series lock");
        store.compact(now_ms());
        store.to_bytes()
    };
    let path = series_file(&s.data_dir);
    let r = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write as _;
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        let tmp = path.with_extension("gz.tmp");
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&tmp)?, flate2::Compression::fast());
        gz.write_all(&bytes)?;
        gz.finish()?.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot save the series"),
        Err(e) => tracing::warn!(error = %e, "cannot save the series"),
    }
}

impl Monitor {
    /// Notes which project an environment belongs to (a deploy through the server).
    pub(crate) fn owns(&self, project: &str, env: &str) {
        self.env_projects.lock().expect("env projects lock").insert(env.to_string(), project.to_string());
    }

    /// Notes an environment's project and settings (a deploy through the server).
    pub(crate) fn knows(&self, project: &str, env: &Environment) {
        self.owns(project, &env.name);
        self.env_config.lock().expect("env config lock").insert(env.name.clone(), (project.to_string(), env.clone()));
    }

    /// An environment's settings, as the monitor last read them.
    pub(crate) fn environment(&self, env: &str) -> Option<Environment> {
        self.env_config.lock().expect("env config lock").get(env).map(|(_, e)| e.clone())
    }

    /// Every environment the monitor knows the settings of: name, project, settings.
    pub(crate) fn environments(&self) -> Vec<(String, String, Environment)> {
        self.env_config
            .lock()
            .expect("env config lock")
            .iter()
            .map(|(n, (p, e))| (n.clone(), p.clone(), e.clone()))
            .collect()
    }

    /// An environment's project and post-deploy watch.
    pub(crate) fn watch_of(&self, env: &str) -> Option<(String, Watch)> {
        self.env_config.lock().expect("env config lock").get(env).map(|(p, e)| (p.clone(), e.watch.clone()))
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// One round: collect, then evaluate every rule source.
pub(crate) async fn tick(s: &Arc<State>) {
    let t = now_ms();
    let mut samples: Vec<(Labels, f64)> = Vec::new();
    if let Ok(stats) = s.store.run_stats().await {
        for (project, status, n, secs) in stats {
            let l = [("__name__", "slipway_pipeline_runs"), ("project", project.as_str()), ("status", status.as_str())];
            samples.push((labels(&l), n as f64));
            let l = [
                ("__name__", "slipway_pipeline_duration_seconds_sum"),
                ("project", project.as_str()),
                ("status", status.as_str()),
            ];
            samples.push((labels(&l), secs));
        }
    }
    if let Ok(stats) = s.store.job_stats().await {
        for j in stats {
            let base = [("project", j.project.as_str()), ("job", j.job.as_str()), ("status", j.status.as_str())];
            for (name, v) in [
                ("slipway_job_runs", j.count as f64),
                ("slipway_job_duration_seconds_sum", j.seconds),
                ("slipway_job_queue_seconds_sum", j.queue_seconds),
            ] {
                let mut l = labels(&base);
                l.insert("__name__".into(), name.into());
                samples.push((l, v));
            }
        }
    }
    let answered = environments(s).await;
    {
        let mut store = s.monitor.series.lock().expect("series lock");
        for (l, v) in samples {
            let _ = store.append(&l, t, v);
        }
        let mut collected = s.monitor.collected.lock().expect("collected lock");
        for (agent, got) in answered {
            let now: std::collections::BTreeSet<Labels> = got.iter().map(|(l, _)| l.clone()).collect();
            for (l, v) in got {
                let _ = store.append(&l, t, v);
            }
            if let Some(before) = collected.get(&agent) {
                for gone in before.difference(&now) {
                    let _ = store.append(gone, t, slipway_monitor::series::stale());
                }
            }
            collected.insert(agent, now);
        }
    }
    refresh_project_rules(s).await;
    let sources: Vec<(String, RuleFile)> = {
        let projects = s.monitor.projects.lock().expect("projects lock");
        std::iter::once((String::new(), s.monitor.server_rules.clone()))
            .chain(projects.iter().map(|(p, (_, r))| (p.clone(), r.clone())))
            .collect()
    };
    let alerts: Vec<slipway_monitor::rules::Alert> = {
        let mut store = s.monitor.series.lock().expect("series lock");
        let mut evaluators = s.monitor.evaluators.lock().expect("evaluators lock");
        evaluators.retain(|k, _| sources.iter().any(|(p, _)| p == k));
        let mut alerts = Vec::new();
        for (source, rules) in &sources {
            let ev = evaluators.entry(source.clone()).or_default();
            for e in ev.eval(rules, &mut store, t, &Labels::new()) {
                tracing::warn!(source = %source, error = %e, "an alert rule did not evaluate");
            }
            alerts.extend(ev.states.values().flat_map(|st| st.active.values().cloned()));
        }
        // `ALERTS{alertname, alertstate, …}` as Prometheus writes it, ended with a stale marker.
        let mut written = s.monitor.alerts_written.lock().expect("alerts written lock");
        let mut now = std::collections::BTreeSet::new();
        for a in alerts.iter().filter(|a| a.state != AlertState::Inactive) {
            let mut l = a.labels.clone();
            l.insert("__name__".into(), "ALERTS".into());
            l.insert("alertstate".into(), if a.state == AlertState::Firing { "firing" } else { "pending" }.into());
            let _ = store.append(&l, t, 1.0);
            now.insert(l);
        }
        for gone in written.difference(&now) {
            let _ = store.append(gone, t, slipway_monitor::series::stale());
        }
        *written = now;
        alerts
    };
    // Firing and just-resolved alerts go to the notifications; firing ones tied to an
    // environment in its watch window roll its release back.
    crate::notify::take(s, crate::notify::rule_notices(s, &alerts)).await;
    let firing: Vec<_> = alerts.into_iter().filter(|a| a.state == AlertState::Firing).collect();
    crate::watch::check(s, firing).await;
    crate::watch::check_canary_thresholds(s).await;
}

/// `up` and the traffic of every environment, per agent that answered.
async fn environments(s: &Arc<State>) -> Vec<(String, Vec<(Labels, f64)>)> {
    let mut agents = Vec::new();
    let local = slipway_api::socket_path(&s.data_dir);
    if local.exists() {
        agents.push((slipway_sys::whoami::hostname(), local));
    }
    for a in s.tunnels.list() {
        agents.push((a.name.clone(), slipway_api::connected_socket(&s.data_dir, &a.name)));
    }
    let mut all = Vec::new();
    for (agent, socket) in agents {
        let client = slipway_api::AgentClient::new(socket);
        let Ok(Ok(envs)) = tokio::time::timeout(Duration::from_secs(2), client.envs()).await else { continue };
        let mut out = Vec::new();
        for e in envs {
            let project = project_of(s, &e.name).await;
            for g in &e.groups {
                let version = g.version.as_str();
                let base = |name: &str| {
                    let mut l = labels(&[("__name__", name), ("environment", &e.name), ("version", version)]);
                    if let Some(p) = &project {
                        l.insert("project".into(), p.clone());
                    }
                    l
                };
                for i in &g.instances {
                    let instance = format!("{agent}:{}", i.port);
                    let mut l = base("up");
                    l.insert("instance".into(), instance.clone());
                    let up = matches!(i.state, slipway_api::InstanceState::Healthy);
                    out.push((l, if up { 1.0 } else { 0.0 }));
                    let mut l = base("slipway_instance_restarts_total");
                    l.insert("instance".into(), instance);
                    out.push((l, f64::from(i.restarts)));
                }
                let mut l = base("slipway_proxy_requests_total");
                l.insert("release".into(), g.release.to_string());
                out.push((l.clone(), g.traffic.requests as f64));
                l.insert("__name__".into(), "slipway_proxy_errors_total".into());
                out.push((l.clone(), g.traffic.errors as f64));
                let mut cumulative = 0u64;
                for (i, n) in g.traffic.latency.iter().enumerate() {
                    cumulative += n;
                    let le = slipway_api::LATENCY_BUCKETS_MS
                        .get(i)
                        .map_or("+Inf".to_string(), |ms| (ms / 1000.0).to_string());
                    let mut b = l.clone();
                    b.insert("__name__".into(), "slipway_proxy_request_duration_seconds_bucket".into());
                    b.insert("le".into(), le);
                    out.push((b, cumulative as f64));
                }
            }
        }
        all.push((agent, out));
    }
    all
}

/// The project whose releases an environment runs (names are one namespace per server).
pub(crate) async fn project_of(s: &State, env: &str) -> Option<String> {
    if let Some(p) = s.monitor.env_projects.lock().expect("env projects lock").get(env) {
        return Some(p.clone());
    }
    s.store.history(env, 1).await.ok()?.into_iter().next()?.pipeline.map(|p| p.project)
}

/// Reloads a project's `alerts:` when its newest default-branch pipeline is at a new commit.
async fn refresh_project_rules(s: &Arc<State>) {
    let Ok(projects) = s.store.projects().await else { return };
    for p in projects {
        let Ok(runs) = s.store.runs(&p.name, 20).await else { continue };
        let Some(commit) =
            runs.iter().find(|r| r.ref_name.as_deref() == Some(p.branch.as_str())).and_then(|r| r.commit_sha.clone())
        else {
            continue;
        };
        let known = s.monitor.projects.lock().expect("projects lock").get(&p.name).map(|(c, _)| c.clone());
        if known.as_deref() == Some(commit.as_str()) {
            continue;
        }
        let loaded = crate::deploys::pipeline_at(s, &p.name, &commit).await;
        if let Ok((envs, _)) = &loaded {
            for e in envs {
                s.monitor.owns(&p.name, &e.name);
                s.monitor
                    .env_config
                    .lock()
                    .expect("env config lock")
                    .insert(e.name.clone(), (p.name.clone(), e.clone()));
            }
        }
        let rules = match loaded {
            Ok((_, Some(mut rules))) => {
                // Each alert names its project (and so reaches only those who may read it).
                for g in &mut rules.groups {
                    for r in &mut g.rules {
                        if let Rule::Alert(a) = r {
                            a.labels.retain(|(k, _)| k != "project");
                            a.labels.push((
                                "project".into(),
                                Template::parse(&p.name).unwrap_or_else(|_| Template::parse("").expect("empty")),
                            ));
                        }
                    }
                }
                rules
            }
            Ok((_, None)) => RuleFile { groups: Vec::new() },
            Err(e) => {
                tracing::warn!(project = %p.name, error = %e, "cannot read the project's alert rules");
                continue;
            }
        };
        s.monitor.projects.lock().expect("projects lock").insert(p.name.clone(), (commit, rules));
    }
}

// ----- the Prometheus HTTP API ------------------------------------------------------------

/// Prometheus' error shape.
fn prom_error(status: StatusCode, kind: &str, message: String) -> Response {
    (status, axum::Json(serde_json::json!({"status": "error", "errorType": kind, "error": message}))).into_response()
}

fn success(data: serde_json::Value) -> Response {
    axum::Json(serde_json::json!({"status": "success", "data": data})).into_response()
}

/// A time as Prometheus takes it: RFC 3339 or Unix seconds (with a fraction).
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        return Ok((f * 1000.0).round() as i64);
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

fn parse_step(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        return Ok((f * 1000.0).round() as i64);
    }
    slipway_monitor::unittest::duration_ms(s).map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

/// A sample value as Prometheus writes it in JSON (`strconv.FormatFloat(v, 'f', -1, 64)`).
fn prom_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

fn seconds(ms: i64) -> serde_json::Value {
    serde_json::json!(ms as f64 / 1000.0)
}

/// What a caller may see: series of the projects it may read environments of; series of no
/// project need that right on every project.
fn visible(s: &State, who: &Caller) -> impl Fn(&Labels) -> bool + use<> {
    let access = s.access();
    let who = who.clone();
    let need = Permission::need("read", "environments");
    move |l: &Labels| who.may(&access, &need, l.get("project").map(String::as_str))
}

#[derive(serde::Deserialize)]
pub struct InstantQuery {
    query: Option<String>,
    time: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/query", tag = "monitoring", summary = "An instant query, as Prometheus' HTTP API answers it", params(("query" = String, Query, description = "PromQL (slipway's subset, docs/monitoring.md)"), ("time" = Option<String>, Query, description = "RFC 3339 or Unix seconds; default now")), responses((status = 200, description = "`{status: success, data: {resultType, result}}`"), (status = 400, description = "`{status: error, errorType: bad_data, error}`"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody)))]
pub async fn query(AxState(s): S, who: Caller, UrlQuery(q): UrlQuery<InstantQuery>) -> Response {
    let Some(text) = q.query.filter(|t| !t.trim().is_empty()) else {
        return prom_error(StatusCode::BAD_REQUEST, "bad_data", "parameter \"query\" is missing".into());
    };
    let t = match q.time.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(now_ms),
        Err(e) => return prom_error(StatusCode::BAD_REQUEST, "bad_data", format!("invalid parameter \"time\": {e}")),
    };
    let parsed = match Query::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            return prom_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("{} (at character {})", e.message, e.offset),
            );
        }
    };
    let keep = visible(&s, &who);
    let store = s.monitor.series.lock().expect("series lock");
    let view = View { store: &store, keep: Some(&keep) };
    match parsed.eval_in(view, t) {
        Ok(Value::Vector(v)) => success(serde_json::json!({
            "resultType": "vector",
            "result": v.iter().map(|x| serde_json::json!({"metric": x.labels, "value": [seconds(t), prom_value(x.value)]})).collect::<Vec<_>>(),
        })),
        Ok(Value::Scalar(x)) => {
            success(serde_json::json!({"resultType": "scalar", "result": [seconds(t), prom_value(x)]}))
        }
        Ok(Value::String(x)) => success(serde_json::json!({"resultType": "string", "result": [seconds(t), x]})),
        Ok(Value::Matrix(m)) => success(serde_json::json!({
            "resultType": "matrix",
            "result": m.iter().map(|x| serde_json::json!({
                "metric": x.labels,
                "values": x.samples.iter().map(|(t, v)| serde_json::json!([seconds(*t), prom_value(*v)])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        Err(e) => prom_error(StatusCode::UNPROCESSABLE_ENTITY, "execution", e),
    }
}

#[derive(serde::Deserialize)]
pub struct RangeQuery {
    query: Option<String>,
    start: Option<String>,
    end: Option<String>,
    step: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/query_range", tag = "monitoring", summary = "A range query, as Prometheus' HTTP API answers it", params(("query" = String, Query, description = "PromQL"), ("start" = String, Query, description = "RFC 3339 or Unix seconds"), ("end" = String, Query, description = "RFC 3339 or Unix seconds"), ("step" = String, Query, description = "A duration (`15s`) or seconds")), responses((status = 200, description = "`{status: success, data: {resultType: matrix, result}}`"), (status = 400, description = "`{status: error, errorType: bad_data, error}`"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody)))]
pub async fn query_range(AxState(s): S, who: Caller, UrlQuery(q): UrlQuery<RangeQuery>) -> Response {
    let bad = |m: String| prom_error(StatusCode::BAD_REQUEST, "bad_data", m);
    let Some(text) = q.query.filter(|t| !t.trim().is_empty()) else {
        return bad("parameter \"query\" is missing".into());
    };
    let field = |name: &str, v: &Option<String>, f: fn(&str) -> Result<i64, String>| -> Result<i64, String> {
        match v {
            None => Err(format!("parameter \"{name}\" is missing")),
            Some(x) => f(x).map_err(|e| format!("invalid parameter \"{name}\": {e}")),
        }
    };
    let (start, end, step) = match (
        field("start", &q.start, parse_time),
        field("end", &q.end, parse_time),
        field("step", &q.step, parse_step),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return bad(r),
    };
    if end < start {
        return bad("end timestamp must not be before start time".into());
    }
    if step <= 0 {
        return bad("zero or negative query resolution step widths are not accepted. Try a positive integer".into());
    }
    if (end - start) / step > 11_000 {
        return bad("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into());
    }
    let parsed = match Query::parse(&text) {
        Ok(p) => p,
        Err(e) => return bad(format!("{} (at character {})", e.message, e.offset)),
    };
    let keep = visible(&s, &who);
    let store = s.monitor.series.lock().expect("series lock");
    let view = View { store: &store, keep: Some(&keep) };
    let mut series: std::collections::BTreeMap<Labels, Vec<serde_json::Value>> = Default::default();
    let mut t = start;
    while t <= end {
        match parsed.eval_in(view, t) {
            Ok(Value::Vector(v)) => {
                for x in v {
                    series.entry(x.labels).or_default().push(serde_json::json!([seconds(t), prom_value(x.value)]));
                }
            }
            Ok(Value::Scalar(x)) => {
                series.entry(Labels::new()).or_default().push(serde_json::json!([seconds(t), prom_value(x)]))
            }
            Ok(_) => return bad("invalid expression type for range query, must be Scalar or instant Vector".into()),
            Err(e) => return prom_error(StatusCode::UNPROCESSABLE_ENTITY, "execution", e),
        }
        t += step;
    }
    success(serde_json::json!({
        "resultType": "matrix",
        "result": series.into_iter().map(|(metric, values)| serde_json::json!({"metric": metric, "values": values})).collect::<Vec<_>>(),
    }))
}

/// `GET /federate?match[]=SELECTOR…`: the newest sample of every series the selectors match
/// (all of them without one), in the text exposition format, as Prometheus' federation
/// endpoint — for a Prometheus to scrape (with a bearer token).
#[utoipa::path(get, path = "/federate", tag = "monitoring", summary = "The series, for a Prometheus to scrape (Prometheus' federation)", params(("match[]" = Option<String>, Query, description = "A series selector (repeatable); every series when absent")), responses((status = 200, description = "Text exposition format 0.0.4", content_type = "text/plain", body = String), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody)))]
pub async fn federate(AxState(s): S, who: Caller, axum::extract::RawQuery(raw): axum::extract::RawQuery) -> Response {
    use std::fmt::Write;
    let mut selectors = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if k != "match[]" {
            continue;
        }
        match Query::parse(&v) {
            Ok(q) if q.is_selector() => selectors.push(q),
            Ok(_) => {
                return crate::api::error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("`match[]={v}` is not a series selector (as `up{{job=\"web\"}}`)"),
                    Some("match[]".into()),
                );
            }
            Err(e) => return crate::api::error(StatusCode::BAD_REQUEST, "invalid", e.message, Some("match[]".into())),
        }
    }
    if selectors.is_empty() {
        selectors.push(Query::parse("{__name__=~\".+\"}").expect("a selector"));
    }
    let t = now_ms();
    let keep = visible(&s, &who);
    let mut by_name: std::collections::BTreeMap<String, std::collections::BTreeMap<Labels, f64>> = Default::default();
    {
        let store = s.monitor.series.lock().expect("series lock");
        let view = View { store: &store, keep: Some(&keep) };
        for q in &selectors {
            if let Ok(Value::Vector(v)) = q.eval_in(view, t) {
                for x in v {
                    let name = x.labels.get("__name__").cloned().unwrap_or_default();
                    by_name.entry(name).or_default().insert(x.labels, x.value);
                }
            }
        }
    }
    let mut o = String::new();
    for (name, series) in by_name {
        let _ = writeln!(o, "# TYPE {name} untyped");
        for (labels, v) in series {
            let pairs: Vec<String> = labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
                .collect();
            let _ = writeln!(o, "{name}{{{}}} {} {t}", pairs.join(","), prom_value(v));
        }
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], o).into_response()
}

/// `strconv.FormatFloat(v, 'e', 10, 64)`, as Prometheus' alerts API writes values.
fn e10(v: f64) -> String {
    if !v.is_finite() {
        return prom_value(v);
    }
    let s = format!("{v:.10e}");
    let (m, e) = s.split_once('e').expect("an exponent");
    let e: i32 = e.parse().expect("a number");
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

fn alert_json(a: &slipway_monitor::rules::Alert) -> serde_json::Value {
    serde_json::json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": match a.state { AlertState::Firing => "firing", AlertState::Pending => "pending", AlertState::Inactive => "inactive" },
        "activeAt": slipway_model::time::rfc3339(a.active_at_ms),
        "value": e10(a.value),
    })
}

/// The sources (server and projects) with their rules and evaluators, visible to the caller.
pub(crate) fn each_source(s: &State, who: &Caller, mut f: impl FnMut(&str, &RuleFile, Option<&Evaluator>)) {
    let keep = visible(s, who);
    let projects = s.monitor.projects.lock().expect("projects lock");
    let evaluators = s.monitor.evaluators.lock().expect("evaluators lock");
    if keep(&Labels::new()) {
        f("", &s.monitor.server_rules, evaluators.get(""));
    }
    for (p, (_, rules)) in projects.iter() {
        if keep(&labels(&[("project", p)])) {
            f(p, rules, evaluators.get(p));
        }
    }
}

/// The pending and firing alerts the caller may read.
pub(crate) fn visible_alerts(s: &State, who: &Caller) -> Vec<slipway_monitor::rules::Alert> {
    let mut out = Vec::new();
    each_source(s, who, |_, _, ev| {
        if let Some(ev) = ev {
            for st in ev.states.values() {
                out.extend(st.active.values().filter(|a| a.state != AlertState::Inactive).cloned());
            }
        }
    });
    out
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "monitoring", summary = "Active alerts (pending and firing), as Prometheus' HTTP API answers", responses((status = 200, description = "`{status: success, data: {alerts}}`"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody)))]
pub async fn alerts(AxState(s): S, who: Caller) -> Response {
    let mut out = Vec::new();
    each_source(&s, &who, |_, rules, ev| {
        let Some(ev) = ev else { return };
        for (g, group) in rules.groups.iter().enumerate() {
            for (r, _) in group.rules.iter().enumerate() {
                if let Some(st) = ev.states.get(&(g, r)) {
                    out.extend(st.active.values().filter(|a| a.state != AlertState::Inactive).map(alert_json));
                }
            }
        }
    });
    success(serde_json::json!({"alerts": out}))
}

#[utoipa::path(get, path = "/api/v1/rules", tag = "monitoring", summary = "Rule groups with their rules' state, as Prometheus' HTTP API answers", responses((status = 200, description = "`{status: success, data: {groups}}`"), (status = "4XX", description = "Refused: the error says what, and `field` where", body = ApiErrorBody)))]
pub async fn rules(AxState(s): S, who: Caller) -> Response {
    let mut groups = Vec::new();
    let interval = s.monitor.interval.as_secs_f64();
    each_source(&s, &who, |source, rules, ev| {
        for (g, group) in rules.groups.iter().enumerate() {
            let list: Vec<serde_json::Value> = group
                .rules
                .iter()
                .enumerate()
                .map(|(r, rule)| match rule {
                    Rule::Alert(a) => {
                        let active: Vec<&slipway_monitor::rules::Alert> = ev
                            .and_then(|e| e.states.get(&(g, r)))
                            .map(|st| st.active.values().filter(|x| x.state != AlertState::Inactive).collect())
                            .unwrap_or_default();
                        let state = active.iter().map(|x| x.state).max().unwrap_or(AlertState::Inactive);
                        serde_json::json!({
                            "type": "alerting",
                            "name": a.name,
                            "query": a.query.text,
                            "duration": a.for_ms as f64 / 1000.0,
                            "keepFiringFor": a.keep_firing_for_ms as f64 / 1000.0,
                            "state": match state { AlertState::Firing => "firing", AlertState::Pending => "pending", AlertState::Inactive => "inactive" },
                            "alerts": active.iter().map(|x| alert_json(x)).collect::<Vec<_>>(),
                            "health": "ok",
                        })
                    }
                    Rule::Record(rec) => serde_json::json!({"type": "recording", "name": rec.name, "query": rec.query.text, "health": "ok"}),
                })
                .collect();
            groups.push(serde_json::json!({
                "name": group.name,
                "file": if source.is_empty() { "server".to_string() } else { format!("{source}: alerts") },
                "interval": group.interval_ms.map_or(interval, |ms| ms as f64 / 1000.0),
                "rules": list,
            }));
        }
    });
    success(serde_json::json!({"groups": groups}))
}
