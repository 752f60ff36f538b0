//! The live parts of the dashboard, as Server-Sent Events the page's script follows: a running
//! pipeline's job states (`jobs` events whenever one changes, `end` when the pipeline has
//! ended) and a running job's log (`lines` events of rendered HTML, numbered on from the page,
//! `end` when the job has ended). Without the script the pages still read, and reload shows
//! the rest.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::{Chrome, duration_text, log};
use crate::State;

/// How often a live page's source is looked at.
const TICK: Duration = Duration::from_millis(250);

/// The pipeline's state and its jobs', as the page's script patches them in.
fn jobs_event(v: &slipway_api::server::PipelineView, c: &Chrome) -> String {
    let jobs: Vec<serde_json::Value> = v
        .jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "index": j.index,
                "status": j.status,
                "label": c.t.status(&j.status),
                "duration": j.duration_seconds.map(|d| duration_text((d * 1000.0) as i64)).unwrap_or_default(),
            })
        })
        .collect();
    serde_json::json!({"status": v.status, "label": c.t.status(&v.status), "jobs": jobs}).to_string()
}

/// `GET /ui/pipelines/{id}/live`: the pipeline's states as they change.
pub async fn pipeline(AxState(s): AxState<Arc<State>>, c: Chrome, Path(id): Path<i64>) -> Response {
    struct Cursor {
        s: Arc<State>,
        c: Chrome,
        last: String,
        done: bool,
    }
    let start = Cursor { s, c, last: String::new(), done: false };
    let stream = futures_util::stream::unfold(start, move |mut k| async move {
        if k.done {
            return None;
        }
        loop {
            let Ok(v) = crate::api::view_of(&k.s, id).await else {
                k.done = true;
                return Some((Ok::<_, Infallible>(Event::default().event("end").data("{}")), k));
            };
            let ended = !matches!(v.status.as_str(), "running" | "created" | "pending");
            let data = jobs_event(&v, &k.c);
            // Durations tick every second; a job's state is what makes news.
            let key: String = v
                .jobs
                .iter()
                .map(|j| format!("{}:{}:{};", j.index, j.status, j.duration_seconds.map_or(0, |d| d as u64)))
                .collect::<String>()
                + &v.status;
            if key != k.last {
                k.last = key;
                return Some((Ok(Event::default().event("jobs").data(data)), k));
            }
            if ended {
                k.done = true;
                return Some((Ok(Event::default().event("end").data("{}")), k));
            }
            tokio::time::sleep(TICK).await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[derive(serde::Deserialize)]
pub struct From {
    /// Lines the page already shows.
    #[serde(default)]
    line: usize,
    /// Bytes of the log those lines are.
    #[serde(default)]
    offset: usize,
}

/// `GET /ui/pipelines/{id}/jobs/{index}/live?line=N&offset=B`: the log's lines after the
/// ones the page shows, as HTML, while the job runs.
pub async fn job(
    AxState(s): AxState<Arc<State>>,
    Path((id, index)): Path<(i64, usize)>,
    axum::extract::Query(from): axum::extract::Query<From>,
) -> Response {
    struct Cursor {
        s: Arc<State>,
        line: usize,
        offset: usize,
        done: bool,
    }
    let start = Cursor { s, line: from.line, offset: from.offset, done: false };
    let stream = futures_util::stream::unfold(start, move |mut k| async move {
        if k.done {
            return None;
        }
        loop {
            let (piece, ended) = crate::api::next_piece(&k.s, id, index, k.offset).await;
            if let Some((text, end)) = piece {
                let n = text.lines().count();
                let html = log::render_numbered(&text, 0, n, k.line);
                k.line += n;
                k.offset = end;
                return Some((Ok::<_, Infallible>(Event::default().event("lines").data(html)), k));
            }
            if let Some(st) = ended {
                k.done = true;
                return Some((Ok(Event::default().event("end").data(format!("{{\"status\":\"{st}\"}}"))), k));
            }
            tokio::time::sleep(TICK).await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
