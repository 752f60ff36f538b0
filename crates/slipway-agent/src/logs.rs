//! Instance logs: one file per environment (`logs/<env>.log`), each line prefixed with the
//! instance (`v2#3 | ...`), rotated at a size limit keeping the last few files. Bounded in
//! every dimension: a line is cut at [`MAX_LINE`] bytes, the queue to the writer holds
//! [`QUEUE`] lines (a flood of output slows the instance's pipe instead of growing the agent),
//! and the directory holds at most `KEEP + 1` files of about `MAX_BYTES` each.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// Rotate when the file reaches this size.
const MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept (`.1` is the newest).
const KEEP: usize = 3;
/// Longer lines are cut here, with a marker (Docker and the CRI split at the same size).
pub const MAX_LINE: usize = 16 * 1024;
/// Lines waiting for the writer.
const QUEUE: usize = 256;
/// What ends a line that was cut.
const CUT: &str = " …[slipway: line cut at 16 KiB]";

pub fn path(dir: &Path, env: &str) -> PathBuf {
    dir.join(format!("{env}.log"))
}

/// Where an environment's log lines go, in order.
#[derive(Clone)]
pub struct LogSink(mpsc::Sender<String>);

impl LogSink {
    /// slipway's own notices: never blocks the caller; when the queue is full the notice
    /// waits in a task of its own.
    pub fn note(&self, line: String) {
        match self.0.try_send(line) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(line)) => {
                let tx = self.0.clone();
                tokio::spawn(async move {
                    let _ = tx.send(line).await;
                });
            }
        }
    }

    /// An instance's line: waits while the queue is full (back-pressure). False once closed.
    async fn line(&self, line: String) -> bool {
        self.0.send(line).await.is_ok()
    }
}

/// A log writer task; lines sent to the returned sink are appended in order.
pub fn writer(file: PathBuf) -> LogSink {
    let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
    tokio::task::spawn_blocking(move || {
        let mut out = None;
        let mut size = 0;
        while let Some(line) = rx.blocking_recv() {
            if out.is_none() || size >= MAX_BYTES {
                if size >= MAX_BYTES {
                    out = None;
                    rotate(&file);
                }
                match open_private(&file) {
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
    LogSink(tx)
}

/// Opens a log for appending, readable by its owner only (instance output may hold secrets).
fn open_private(file: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file)
}

fn rotate(file: &Path) {
    let name = |i: usize| PathBuf::from(format!("{}.{i}", file.display()));
    let _ = std::fs::remove_file(name(KEEP));
    for i in (1..KEEP).rev() {
        let _ = std::fs::rename(name(i), name(i + 1));
    }
    let _ = std::fs::rename(file, name(1));
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes: the head of a longer line
/// is kept with a marker and the rest of it dropped; invalid UTF-8 is replaced, not fatal.
#[derive(Default)]
pub struct LineCutter {
    buf: Vec<u8>,
    /// Dropping the rest of a line that was cut.
    dropping: bool,
}

impl LineCutter {
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<String>) {
        while !bytes.is_empty() {
            let nl = bytes.iter().position(|&b| b == b'\n');
            let (seg, rest) = match nl {
                Some(i) => (&bytes[..i], &bytes[i + 1..]),
                None => (bytes, &[][..]),
            };
            if !self.dropping {
                let room = MAX_LINE - self.buf.len();
                self.buf.extend_from_slice(&seg[..seg.len().min(room)]);
                if seg.len() >= room && (nl.is_none() || seg.len() > room) {
                    out.push(format!("{}{CUT}", self.take()));
                    self.dropping = true;
                } else if nl.is_some() {
                    out.push(self.take());
                }
            }
            if nl.is_some() {
                self.dropping = false;
            }
            bytes = rest;
        }
    }

    /// What is left when the stream ends without a final newline.
    pub fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.buf).trim_end_matches('\r').to_string();
        self.buf.clear();
        s
    }
}

/// An instance's last few lines of output, for the message when it crashes.
#[derive(Clone, Default)]
pub struct Recent(Arc<Mutex<VecDeque<String>>>);

impl Recent {
    const LINES: usize = 5;
    const WIDTH: usize = 200;

    pub fn push(&self, line: &str) {
        let mut q = self.0.lock().expect("recent lock");
        if q.len() == Self::LINES {
            q.pop_front();
        }
        let mut end = line.len().min(Self::WIDTH);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        q.push_back(line[..end].to_string());
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("recent lock").iter().cloned().collect()
    }
}

/// Copies an instance's output into the log, line by line, with its prefix; the last lines
/// are also kept in `recent`.
pub fn pump(
    stream: impl AsyncRead + Unpin + Send + 'static,
    prefix: String,
    log: LogSink,
    recent: Recent,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut cutter = LineCutter::default();
        let mut lines = Vec::new();
        loop {
            let n = match reader.fill_buf().await {
                Ok(buf) if !buf.is_empty() => {
                    cutter.feed(buf, &mut lines);
                    buf.len()
                }
                _ => break,
            };
            reader.consume(n);
            if !send(&mut lines, &prefix, &log, &recent).await {
                return;
            }
        }
        lines.extend(cutter.finish());
        send(&mut lines, &prefix, &log, &recent).await;
    })
}

/// Writes the lines a cutter produced, with their prefix, keeping the last ones in `recent`;
/// false once the log is closed.
pub async fn send(lines: &mut Vec<String>, prefix: &str, log: &LogSink, recent: &Recent) -> bool {
    for line in lines.drain(..) {
        recent.push(&line);
        if !log.line(format!("{prefix} | {line}\n")).await {
            return false;
        }
    }
    true
}

/// The last `n` lines of the environment's log (reading the newest rotated file too when
/// the current one is short). Reads only the end of each file.
pub fn tail(dir: &Path, env: &str, n: usize) -> String {
    let current = path(dir, env);
    let want = n.saturating_mul(MAX_LINE + 256) as u64;
    let mut text = read_end(&current, want);
    if text.lines().count() < n {
        text = read_end(Path::new(&format!("{}.1", current.display())), want) + &text;
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The last `max` bytes of a file, from the first whole line in them.
fn read_end(file: &Path, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(file) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = f.take(max).read_to_end(&mut bytes);
    if from > 0 {
        let start = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
        bytes.drain(..start);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chunks: &[&[u8]]) -> Vec<String> {
        let mut c = LineCutter::default();
        let mut out = Vec::new();
        for ch in chunks {
            c.feed(ch, &mut out);
        }
        out.extend(c.finish());
        out
    }

    #[test]
    fn lines_are_split_across_chunks_and_long_ones_cut_with_a_marker() {
        assert_eq!(cut(&[b"a\nb", b"c\r\n", b"\xff\n", b"tail"]), ["a", "bc", "\u{fffd}", "tail"]);
        let long = vec![b'x'; MAX_LINE * 3 + 5];
        let got = cut(&[&long[..MAX_LINE / 2], &long[MAX_LINE / 2..], b"\nnext\n"]);
        assert_eq!(got.len(), 2, "{:?}", got.iter().map(String::len).collect::<Vec<_>>());
        assert_eq!(got[0], format!("{}{CUT}", "x".repeat(MAX_LINE)));
        assert_eq!(got[1], "next");
        // Exactly MAX_LINE bytes then a newline is a whole line, not a cut one.
        let exact = [vec![b'y'; MAX_LINE], b"\n".to_vec()].concat();
        assert_eq!(cut(&[&exact]), ["y".repeat(MAX_LINE)]);
    }

    #[test]
    fn recent_keeps_the_last_lines_shortened() {
        let r = Recent::default();
        for i in 0..8 {
            r.push(&format!("line {i}"));
        }
        r.push(&"é".repeat(300));
        let l = r.lines();
        assert_eq!(l.len(), 5);
        assert_eq!(l[0], "line 4");
        assert_eq!(l[4].len(), 200);
    }

    #[test]
    fn tail_reads_the_end_only_from_a_whole_line() {
        let d = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(path(d.path(), "web"), &text).unwrap();
        assert_eq!(tail(d.path(), "web", 2), "line 998\nline 999\n");
        assert_eq!(read_end(&path(d.path(), "web"), 12), "line 999\n");
    }
}
