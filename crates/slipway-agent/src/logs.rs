//! Instance logs: one file per environment (`logs/<env>.log`), each line prefixed with the
//! instance (`v2#3 | ...`), rotated at a size limit keeping the last few files.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// Rotate when the file reaches this size.
const MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept (`.1` is the newest).
const KEEP: usize = 3;

pub fn path(dir: &Path, env: &str) -> PathBuf {
    dir.join(format!("{env}.log"))
}

/// A log writer task; lines sent to the returned channel are appended in order.
pub fn writer(file: PathBuf) -> mpsc::UnboundedSender<String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::task::spawn_blocking(move || {
        let mut out = None;
        let mut size = 0;
        while let Some(line) = rx.blocking_recv() {
            if out.is_none() || size >= MAX_BYTES {
                if size >= MAX_BYTES {
                    out = None;
                    rotate(&file);
                }
                match std::fs::OpenOptions::new().create(true).append(true).open(&file) {
                    Ok(f) => {
                        size = f.metadata().map(|m| m.len()).unwrap_or(0);
                        out = Some(std::io::BufWriter::new(f));
                    }
                    Err(_) => continue,
                }
            }
            let w = out.as_mut().expect("opened above");
            let _ = w.write_all(line.as_bytes());
            size += line.len() as u64;
            // Flush when nothing else is queued, so `slipway logs` sees lines promptly.
            if rx.is_empty() {
                let _ = w.flush();
            }
        }
    });
    tx
}

fn rotate(file: &Path) {
    let name = |i: usize| PathBuf::from(format!("{}.{i}", file.display()));
    let _ = std::fs::remove_file(name(KEEP));
    for i in (1..KEEP).rev() {
        let _ = std::fs::rename(name(i), name(i + 1));
    }
    let _ = std::fs::rename(file, name(1));
}

/// Copies an instance's output into the log, line by line, with its prefix.
pub fn pump(stream: impl AsyncRead + Unpin + Send + 'static, prefix: String, log: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if log.send(format!("{prefix} | {line}\n")).is_err() {
                break;
            }
        }
    });
}

/// The last `n` lines of the environment's log (reading the newest rotated file too when
/// the current one is short).
pub fn tail(dir: &Path, env: &str, n: usize) -> String {
    let current = path(dir, env);
    let mut text = std::fs::read_to_string(&current).unwrap_or_default();
    if text.lines().count() < n
        && let Ok(older) = std::fs::read_to_string(format!("{}.1", current.display()))
    {
        text = older + &text;
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}
