//! A plain `.git` directory read without starting git: its refs (loose and packed) and the
//! commit HEAD is at (a loose object, or an undeltified one in a pack). Starting git costs
//! a millisecond or two of CPU each time, which is most of a small pipeline's fixed cost.
//!
//! Only the common layout is read here; anything that could make git answer differently —
//! a `.git` file (worktrees, submodules), the reftable format, replace refs, grafts, `GIT_*`
//! variables that move the repository, a commit stored as a delta or in another encoding — is
//! `None`, and the caller asks git.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Variables that make git read another repository, index or object store than `.git`.
const MOVING_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_REPLACE_REF_BASE",
    "GIT_GRAFT_FILE",
];

/// A `.git` directory in the layout this module reads.
pub(crate) struct Plain {
    dir: PathBuf,
    /// `.git/config` and `.git/packed-refs` (empty when there is none), read once.
    config: String,
    packed: String,
}

/// What `git log -1` tells about a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Commit {
    pub parents: Vec<String>,
    /// `Name <email>`.
    pub author: String,
    /// The raw message (`%B`).
    pub message: String,
}

impl Plain {
    /// The work tree's `.git`, when this module can read it the way git would.
    pub(crate) fn open(work_tree: &Path) -> Option<Plain> {
        let dir = work_tree.join(".git");
        if !dir.is_dir() || MOVING_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return None;
        }
        let config = std::fs::read_to_string(dir.join("config")).ok()?;
        let unusual = config
            .lines()
            .map(|l| l.trim().to_ascii_lowercase())
            .any(|l| l.starts_with("[include") || l.starts_with("[extensions") || l.starts_with("worktree"));
        if unusual
            || dir.join("reftable").exists()
            || dir.join("info/grafts").exists()
            || dir.join("commondir").exists()
        {
            return None;
        }
        let packed = std::fs::read_to_string(dir.join("packed-refs")).unwrap_or_default();
        if std::fs::read_dir(dir.join("refs/replace")).is_ok_and(|mut d| d.next().is_some())
            || packed.contains(" refs/replace/")
        {
            return None;
        }
        Some(Plain { dir, config, packed })
    }

    /// The repository's `.git/config`.
    pub(crate) fn config(&self) -> &str {
        &self.config
    }

    /// The repository's `.git/packed-refs` (empty when there is none).
    pub(crate) fn packed_refs(&self) -> &str {
        &self.packed
    }

    /// Every ref and the object it points at, symbolic refs resolved, sorted by name — what
    /// `git for-each-ref --format='%(objectname) %(refname)'` prints.
    pub(crate) fn refs(&self) -> Option<Vec<(String, String)>> {
        let mut direct: BTreeMap<String, String> = BTreeMap::new();
        for line in self.packed.lines() {
            if line.starts_with('#') || line.starts_with('^') || line.is_empty() {
                continue;
            }
            let (oid, name) = line.split_once(' ')?;
            if !is_oid(oid) {
                return None;
            }
            direct.insert(name.to_string(), oid.to_string());
        }
        let mut symbolic = Vec::new();
        let mut stack = vec![self.dir.join("refs")];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).ok()? {
                let entry = entry.ok()?;
                let path = entry.path();
                let kind = entry.file_type().ok()?;
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.strip_prefix(&self.dir).ok()?.to_str()?.to_string();
                if name.ends_with(".lock") {
                    continue;
                }
                let content = std::fs::read_to_string(&path).ok()?;
                let content = content.trim();
                if let Some(target) = content.strip_prefix("ref: ") {
                    symbolic.push((name, target.to_string()));
                } else if is_oid(content) {
                    direct.insert(name, content.to_string());
                } else {
                    return None;
                }
            }
        }
        for (name, target) in symbolic {
            // A symbolic ref to a missing ref is not listed (as git's listing skips it).
            if let Some(oid) = direct.get(&target).cloned() {
                direct.insert(name, oid);
            }
        }
        Some(direct.into_iter().map(|(name, oid)| (oid, name)).collect())
    }

    /// The object a ref points at (`refs/heads/main`), loose or packed; `None` when missing.
    pub(crate) fn resolve(&self, name: &str) -> Option<String> {
        if let Ok(content) = std::fs::read_to_string(self.dir.join(name)) {
            let content = content.trim();
            return is_oid(content).then(|| content.to_string());
        }
        self.packed
            .lines()
            .find_map(|l| l.strip_suffix(name)?.strip_suffix(' ').filter(|o| is_oid(o)).map(str::to_string))
    }

    /// HEAD's branch (`refs/heads/…` stripped) and commit, when HEAD is on a branch that has one.
    pub(crate) fn head_branch(&self) -> Option<(String, String)> {
        let head = std::fs::read_to_string(self.dir.join("HEAD")).ok()?;
        let branch = head.trim().strip_prefix("ref: refs/heads/")?;
        let oid = self.resolve(&format!("refs/heads/{branch}"))?;
        Some((branch.to_string(), oid))
    }

    /// The commit `oid`: loose, or whole in a pack; `None` for anything else.
    pub(crate) fn commit(&self, oid: &str) -> Option<Commit> {
        let raw = self.loose(oid).or_else(|| self.packed(oid))?;
        parse_commit(&raw)
    }

    fn loose(&self, oid: &str) -> Option<Vec<u8>> {
        let file = std::fs::File::open(self.dir.join("objects").join(&oid[..2]).join(&oid[2..])).ok()?;
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(file).read_to_end(&mut raw).ok()?;
        let nul = raw.iter().position(|b| *b == 0)?;
        let header = std::str::from_utf8(&raw[..nul]).ok()?;
        let size: usize = header.strip_prefix("commit ")?.parse().ok()?;
        let body = raw.split_off(nul + 1);
        (body.len() == size).then_some(body)
    }

    fn packed(&self, oid: &str) -> Option<Vec<u8>> {
        let want = hex_decode(oid)?;
        for entry in std::fs::read_dir(self.dir.join("objects/pack")).ok()? {
            let path = entry.ok()?.path();
            if path.extension().is_none_or(|e| e != "idx") {
                continue;
            }
            let idx = std::fs::read(&path).ok()?;
            let Some(offset) = idx_lookup(&idx, &want) else { continue };
            return read_packed_commit(&path.with_extension("pack"), &idx, want.len(), offset);
        }
        None
    }
}

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The object's offset in the pack, from a version-2 pack index.
fn idx_lookup(idx: &[u8], want: &[u8]) -> Option<u64> {
    if idx.get(..8)? != b"\xfftOc\x00\x00\x00\x02" {
        return None;
    }
    let hash = want.len();
    let fanout = |i: usize| be32(idx, 8 + i * 4).map(|v| v as usize);
    let total = fanout(255)?;
    let first = want[0] as usize;
    let (mut lo, mut hi) = (if first == 0 { 0 } else { fanout(first - 1)? }, fanout(first)?);
    let names = 8 + 256 * 4;
    while lo < hi {
        let mid = (lo + hi) / 2;
        let name = idx.get(names + mid * hash..names + (mid + 1) * hash)?;
        match name.cmp(want) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => {
                let offsets = names + total * hash + total * 4;
                let small = be32(idx, offsets + mid * 4)?;
                if small & 0x8000_0000 == 0 {
                    return Some(small as u64);
                }
                let large = offsets + total * 4 + (small & 0x7fff_ffff) as usize * 8;
                return Some(u64::from_be_bytes(idx.get(large..large + 8)?.try_into().ok()?));
            }
        }
    }
    None
}

/// The commit at `offset` in `pack`, whole or rebuilt from its deltas (`hash`: the length of
/// an object name, 20 or 32 bytes).
fn read_packed_commit(pack: &Path, idx: &[u8], hash: usize, offset: u64) -> Option<Vec<u8>> {
    let mut f = std::io::BufReader::new(std::fs::File::open(pack).ok()?);
    let (kind, body) = read_packed(&mut f, idx, hash, offset, 0)?;
    (kind == 1).then_some(body)
}

/// The object at `offset`: its type (1 commit, 2 tree, 3 blob, 4 tag) and content.
fn read_packed(
    f: &mut std::io::BufReader<std::fs::File>,
    idx: &[u8],
    hash: usize,
    offset: u64,
    depth: u32,
) -> Option<(u8, Vec<u8>)> {
    if depth > 4096 {
        return None;
    }
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut byte = [0u8; 1];
    f.read_exact(&mut byte).ok()?;
    let kind = (byte[0] >> 4) & 0b111;
    let mut size = (byte[0] & 0x0f) as usize;
    let mut shift = 4;
    while byte[0] & 0x80 != 0 {
        f.read_exact(&mut byte).ok()?;
        size = size.checked_add(((byte[0] & 0x7f) as usize).checked_shl(shift)?)?;
        shift += 7;
    }
    let base = match kind {
        // OFS_DELTA: the base is earlier in this pack, at a distance encoded here.
        6 => {
            f.read_exact(&mut byte).ok()?;
            let mut back = (byte[0] & 0x7f) as u64;
            while byte[0] & 0x80 != 0 {
                f.read_exact(&mut byte).ok()?;
                back = ((back + 1) << 7) | (byte[0] & 0x7f) as u64;
            }
            Some(offset.checked_sub(back)?)
        }
        // REF_DELTA: the base is named; it must be in this pack too.
        7 => {
            let mut name = vec![0u8; hash];
            f.read_exact(&mut name).ok()?;
            Some(idx_lookup(idx, &name)?)
        }
        1..=4 => None,
        _ => return None,
    };
    let mut data = Vec::with_capacity(size);
    flate2::bufread::ZlibDecoder::new(&mut *f).take(size as u64).read_to_end(&mut data).ok()?;
    if data.len() != size {
        return None;
    }
    match base {
        None => Some((kind, data)),
        Some(at) => {
            let (kind, base) = read_packed(f, idx, hash, at, depth + 1)?;
            Some((kind, apply_delta(&base, &data)?))
        }
    }
}

/// Git's delta format: the sizes, then copies from the base and literal inserts.
fn apply_delta(base: &[u8], delta: &[u8]) -> Option<Vec<u8>> {
    let mut i = 0;
    let varint = |i: &mut usize| -> Option<usize> {
        let (mut v, mut shift) = (0usize, 0u32);
        loop {
            let b = *delta.get(*i)?;
            *i += 1;
            v |= ((b & 0x7f) as usize).checked_shl(shift)?;
            shift += 7;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
    };
    if varint(&mut i)? != base.len() {
        return None;
    }
    let size = varint(&mut i)?;
    let mut out = Vec::with_capacity(size);
    while i < delta.len() {
        let op = delta[i];
        i += 1;
        if op & 0x80 != 0 {
            let mut field = |bits: u8, shifts: std::ops::Range<u32>| -> Option<usize> {
                let mut v = 0usize;
                for (n, shift) in shifts.enumerate() {
                    if op & (bits << n) != 0 {
                        v |= (*delta.get(i)? as usize) << (shift * 8);
                        i += 1;
                    }
                }
                Some(v)
            };
            let off = field(0x01, 0..4)?;
            let mut len = field(0x10, 0..3)?;
            if len == 0 {
                len = 0x10000;
            }
            out.extend_from_slice(base.get(off..off.checked_add(len)?)?);
        } else if op != 0 {
            out.extend_from_slice(delta.get(i..i + op as usize)?);
            i += op as usize;
        } else {
            return None;
        }
    }
    (out.len() == size).then_some(out)
}

/// The parents, author and message of a commit object's content.
fn parse_commit(raw: &[u8]) -> Option<Commit> {
    let text = std::str::from_utf8(raw).ok()?;
    let (headers, message) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut parents = Vec::new();
    let mut author = None;
    for line in headers.lines() {
        if let Some(p) = line.strip_prefix("parent ") {
            parents.push(p.to_string());
        } else if let Some(a) = line.strip_prefix("author ") {
            // `Name <email> 1700000000 +0000`
            let end = a.rfind('>')?;
            author = Some(a[..=end].to_string());
        } else if line.starts_with("encoding ") {
            return None; // git would re-encode the message
        }
    }
    Some(Commit { parents, author: author?, message: message.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{finish, spawn};

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.email=a@b", "-c", "user.name=A Name", "-c", "gc.auto=0"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    fn by_git_log(dir: &Path) -> Commit {
        let out = finish(spawn(dir, &["log", "-1", "--format=%P%n%an <%ae>%n%B"])).unwrap();
        let mut lines = out.splitn(3, '\n');
        let parents = lines.next().unwrap().split_whitespace().map(str::to_string).collect();
        let author = lines.next().unwrap().to_string();
        Commit { parents, author, message: lines.next().unwrap_or("").to_string() }
    }

    fn by_for_each_ref(dir: &Path) -> Vec<(String, String)> {
        git(dir, &["for-each-ref", "--format=%(objectname) %(refname)"])
            .lines()
            .map(|l| {
                let (o, n) = l.split_once(' ').unwrap();
                (o.to_string(), n.to_string())
            })
            .collect()
    }

    fn trimmed(mut c: Commit) -> Commit {
        c.message = c.message.trim_end().to_string();
        c
    }

    #[test]
    fn refs_and_head_commit_agree_with_git_loose_packed_and_after_gc() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        git(p, &["init", "-q", "-b", "trunk"]);
        std::fs::write(p.join("f"), "1").unwrap();
        git(p, &["add", "f"]);
        git(p, &["commit", "-q", "-m", "first line\n\nbody with ünïcode\n\n"]);
        git(p, &["tag", "-a", "v1", "-m", "annotated"]);
        git(p, &["tag", "light"]);
        git(p, &["commit", "-q", "--allow-empty", "-m", "second"]);
        git(p, &["branch", "feature/x"]);
        git(p, &["remote", "add", "origin", "https://example.com/g/p.git"]);
        git(p, &["update-ref", "refs/remotes/origin/trunk", "HEAD~1"]);
        git(p, &["symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/trunk"]);
        let check = |stage: &str| {
            let plain = Plain::open(p).unwrap_or_else(|| panic!("{stage}: a plain repository"));
            assert_eq!(plain.refs().unwrap(), by_for_each_ref(p), "{stage}: refs");
            let (branch, oid) = plain.head_branch().unwrap();
            assert_eq!((branch.as_str(), oid.as_str()), ("trunk", git(p, &["rev-parse", "HEAD"]).as_str()), "{stage}");
            assert_eq!(trimmed(plain.commit(&oid).unwrap()), trimmed(by_git_log(p)), "{stage}: HEAD");
            git(p, &["checkout", "-q", "HEAD~1"]);
            let first = git(p, &["rev-parse", "HEAD"]);
            let c = plain.commit(&first).unwrap_or_else(|| panic!("{stage}: first commit unreadable"));
            assert_eq!(trimmed(c), trimmed(by_git_log(p)), "{stage}: first commit");
            git(p, &["checkout", "-q", "trunk"]);
        };
        check("loose");
        git(p, &["pack-refs", "--all"]);
        check("packed refs");
        git(p, &["gc", "-q", "--aggressive"]);
        let idx = std::fs::read_dir(p.join(".git/objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "idx"))
            .unwrap();
        let listing = git(p, &["verify-pack", "-v", idx.to_str().unwrap()]);
        assert!(
            listing.lines().any(|l| l.split_whitespace().nth(1) == Some("commit") && l.split_whitespace().count() == 7),
            "gc stored a commit as a delta, so rebuilding deltas is tested: {listing}"
        );
        check("after gc");
        // A replace ref makes git show another commit: this module then stays out of it.
        git(p, &["replace", "HEAD", "HEAD~1"]);
        assert!(Plain::open(p).is_none());
    }

    #[test]
    fn worktrees_and_unborn_branches_are_left_to_git() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("main");
        std::fs::create_dir(&p).unwrap();
        git(&p, &["init", "-q", "-b", "main"]);
        assert!(Plain::open(&p).unwrap().head_branch().is_none(), "no commit yet");
        git(&p, &["commit", "-q", "--allow-empty", "-m", "one"]);
        git(&p, &["worktree", "add", "-q", "../wt"]);
        assert!(Plain::open(&d.path().join("wt")).is_none(), "a worktree's .git is a file");
    }
}
