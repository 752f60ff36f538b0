//! Artifacts, caches and dotenv reports: selecting files in a workspace by GitLab's path
//! patterns, storing them under the run directory, and bringing them back into other jobs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use slipway_pipeline::model::{Artifacts, Cache, CacheKey};

use crate::workspace::{copy_files, list_tree, remove_tree};

fn has_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

fn normalize(p: &str) -> String {
    let p = p.trim_start_matches("./");
    p.trim_end_matches('/').to_string()
}

fn globset(patterns: &[String]) -> Option<GlobSet> {
    if patterns.is_empty() {
        return None;
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = normalize(p);
        if let Ok(g) = GlobBuilder::new(&p).literal_separator(true).build() {
            b.add(g);
        }
        // A pattern naming a directory also covers everything below it.
        if let Ok(g) = GlobBuilder::new(&format!("{p}/**")).literal_separator(true).build() {
            b.add(g);
        }
    }
    b.build().ok()
}

/// Files below `ws` selected by `paths` (minus `exclude`), plus untracked files when asked.
/// Returns the files and one warning per pattern that matched nothing.
pub fn select(
    ws: &Path,
    paths: &[String],
    exclude: &[String],
    untracked_against: Option<&HashSet<PathBuf>>,
) -> (Vec<PathBuf>, Vec<String>) {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut warnings = Vec::new();
    let mut tree: Option<Vec<PathBuf>> = None;
    for p in paths {
        let np = normalize(p);
        if np.is_empty() || np.split('/').any(|c| c == "..") {
            warnings.push(format!("artifact path `{p}` is outside the workspace; skipped"));
            continue;
        }
        let before = out.len();
        if !has_glob(&np) {
            let full = ws.join(&np);
            match std::fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => out.extend(list_tree(&full).into_iter().map(|f| PathBuf::from(&np).join(f))),
                Ok(_) => out.push(PathBuf::from(&np)),
                Err(_) => {}
            }
        } else if let Some(set) = globset(std::slice::from_ref(&np)) {
            let t = tree.get_or_insert_with(|| list_tree(ws));
            out.extend(t.iter().filter(|f| set.is_match(f)).cloned());
        }
        if out.len() == before {
            warnings.push(format!("no files matched artifact path `{p}`"));
        }
    }
    if let Some(known) = untracked_against {
        let t = tree.get_or_insert_with(|| list_tree(ws));
        out.extend(t.iter().filter(|f| !known.contains(*f)).cloned());
    }
    if let Some(ex) = globset(exclude) {
        out.retain(|f| !ex.is_match(f));
    }
    out.sort();
    out.dedup();
    (out, warnings)
}

/// Stores a job's artifacts (paths and report files) in `dest`. Returns the stored files and
/// warnings.
pub fn collect_artifacts(
    ws: &Path,
    a: &Artifacts,
    known: &HashSet<PathBuf>,
    dest: &Path,
) -> std::io::Result<(Vec<PathBuf>, Vec<String>)> {
    let mut paths = a.paths.clone();
    paths.extend(a.dotenv.iter().cloned());
    paths.extend(a.junit.iter().cloned());
    for files in a.other_reports.values() {
        paths.extend(files.iter().cloned());
    }
    let (files, warnings) = select(ws, &paths, &a.exclude, a.untracked.then_some(known));
    if dest.exists() {
        remove_tree(dest);
    }
    std::fs::create_dir_all(dest)?;
    copy_files(ws, dest, &files, 2)?;
    Ok((files, warnings))
}

/// Copies stored artifacts into a workspace.
pub fn restore_artifacts(stored: &Path, ws: &Path) -> std::io::Result<usize> {
    if !stored.is_dir() {
        return Ok(0);
    }
    let files = list_tree(stored);
    copy_files(stored, ws, &files, 2)?;
    Ok(files.len())
}

/// Parses a dotenv report: `KEY=VALUE` lines, `#` comments, surrounding quotes stripped.
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", i + 1));
        };
        let k = k.trim();
        if k.is_empty()
            || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || k.as_bytes()[0].is_ascii_digit()
        {
            return Err(format!("line {}: `{k}` is not a valid variable name", i + 1));
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.push((k.to_string(), v.to_string()));
    }
    if out.len() > 50 {
        return Err(format!("{} variables; a dotenv report may hold at most 50", out.len()));
    }
    Ok(out)
}

/// The cache key of a cache entry, computed in the job's workspace (`key:files` hashes the
/// named files' contents; a missing file hashes as absent). A key holding a masked value
/// becomes `masked-<hash>`: a secret never becomes a directory name (nor a notice).
pub fn cache_key(c: &Cache, ws: &Path, masked: &[String]) -> String {
    let raw = match &c.key {
        CacheKey::Literal(k) => k.clone(),
        CacheKey::Files { files, prefix } => {
            let mut h = Sha256::new();
            for f in files {
                h.update(f.as_bytes());
                h.update([0]);
                if let Ok(bytes) = std::fs::read(ws.join(f)) {
                    h.update(&bytes);
                }
                h.update([0]);
            }
            let hex: String = h.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect();
            match prefix {
                Some(p) if !p.is_empty() => format!("{p}-{hex}"),
                _ => hex,
            }
        }
    };
    key_name(&raw, masked)
}

/// A cache key as a directory name: `masked-<hash>` when it holds a masked value.
pub fn key_name(raw: &str, masked: &[String]) -> String {
    if masked.iter().any(|m| !m.is_empty() && raw.contains(m.as_str())) {
        let hex: String = Sha256::digest(raw.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect();
        return format!("masked-{hex}");
    }
    sanitize_key(raw)
}

pub fn sanitize_key(k: &str) -> String {
    let k: String = k.chars().map(|c| if c == '/' || c == '\\' || c.is_control() { '-' } else { c }).collect();
    if k.is_empty() || k == "." || k == ".." { "default".into() } else { k }
}

/// Restores the first cache found among `keys` into the workspace; returns the key used.
pub fn restore_cache(cache_root: &Path, keys: &[String], ws: &Path) -> std::io::Result<Option<String>> {
    for k in keys {
        let dir = cache_root.join(sanitize_key(k));
        if dir.is_dir() {
            restore_artifacts(&dir, ws)?;
            return Ok(Some(k.clone()));
        }
    }
    Ok(None)
}

/// Saves the cache's paths from the workspace under `key`, replacing the old entry atomically.
pub fn save_cache(
    cache_root: &Path,
    key: &str,
    c: &Cache,
    ws: &Path,
    known: &HashSet<PathBuf>,
) -> std::io::Result<usize> {
    let (files, _) = select(ws, &c.paths, &[], c.untracked.then_some(known));
    std::fs::create_dir_all(cache_root)?;
    let tmp = cache_root.join(format!(".tmp-{}-{}", std::process::id(), sanitize_key(key)));
    if tmp.exists() {
        remove_tree(&tmp);
    }
    std::fs::create_dir_all(&tmp)?;
    copy_files(ws, &tmp, &files, 2)?;
    let dir = cache_root.join(sanitize_key(key));
    let old = cache_root.join(format!(".old-{}-{}", std::process::id(), sanitize_key(key)));
    if dir.exists() {
        std::fs::rename(&dir, &old)?;
    }
    std::fs::rename(&tmp, &dir)?;
    if old.exists() {
        remove_tree(&old);
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_parsing() {
        let v = parse_dotenv("# c\nA=1\nexport B=\"two words\"\n\nC='x=y'\n").unwrap();
        assert_eq!(v, vec![("A".into(), "1".into()), ("B".into(), "two words".into()), ("C".into(), "x=y".into())]);
        assert!(parse_dotenv("NOEQUALS\n").unwrap_err().contains("line 1"));
        assert!(parse_dotenv("1X=2\n").is_err());
    }

    #[test]
    fn select_follows_gitlab_patterns() {
        let d = tempfile::tempdir().unwrap();
        for f in ["dist/a", "dist/sub/b", "x.log", "y.txt", "deep/q/r.log"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let (files, warn) =
            select(d.path(), &["dist/".into(), "*.log".into(), "nope".into()], &["dist/sub/**".into()], None);
        assert_eq!(files, vec![PathBuf::from("dist/a"), PathBuf::from("x.log")]);
        assert_eq!(warn, vec!["no files matched artifact path `nope`".to_string()]);
        let (files, _) = select(d.path(), &["**/*.log".into()], &[], None);
        assert_eq!(files, vec![PathBuf::from("deep/q/r.log"), PathBuf::from("x.log")]);
    }
}
