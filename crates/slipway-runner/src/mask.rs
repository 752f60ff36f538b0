//! The secret masker: every byte of job output passes through it before it is stored or shown.
//! It works on a stream, so a secret split across two reads is still masked: the longest tail
//! that could be the start of a secret is held back until the next chunk (or the end).

use aho_corasick::{AhoCorasick, MatchKind};

pub const MASK: &[u8] = b"[MASKED]";

pub struct Masker {
    secrets: Vec<Vec<u8>>,
    ac: Option<AhoCorasick>,
    pending: Vec<u8>,
}

impl Masker {
    /// A masker for these values; empty values are ignored.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Masker {
        let mut secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_ref().to_vec()).filter(|s| !s.is_empty()).collect();
        secrets.sort();
        secrets.dedup();
        let ac = if secrets.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&secrets)
                    .expect("literal patterns always build"),
            )
        };
        Masker { secrets, ac, pending: Vec::new() }
    }

    /// Feeds a chunk; returns the bytes that are safe to emit now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let Some(ac) = &self.ac else {
            return chunk.to_vec();
        };
        self.pending.extend_from_slice(chunk);
        let buf = std::mem::take(&mut self.pending);
        let mut out = Vec::with_capacity(buf.len());
        let mut last = 0;
        for m in ac.find_iter(&buf) {
            // A match that reaches the end might grow into a longer secret with the next chunk.
            if m.end() == buf.len() && self.could_extend(&buf[m.start()..]) {
                break;
            }
            out.extend_from_slice(&buf[last..m.start()]);
            out.extend_from_slice(MASK);
            last = m.end();
        }
        let rest = &buf[last..];
        let hold = self.held_suffix(rest);
        out.extend_from_slice(&rest[..rest.len() - hold]);
        self.pending = rest[rest.len() - hold..].to_vec();
        out
    }

    /// Flushes what is held back at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let Some(ac) = &self.ac else {
            return std::mem::take(&mut self.pending);
        };
        let buf = std::mem::take(&mut self.pending);
        ac.replace_all_bytes(&buf, &vec![MASK; self.secrets.len()])
    }

    /// Masks a complete string at once.
    pub fn mask_str(&self, s: &str) -> String {
        match &self.ac {
            None => s.to_string(),
            Some(ac) => ac.replace_all(s, &vec!["[MASKED]"; self.secrets.len()]),
        }
    }

    fn could_extend(&self, tail: &[u8]) -> bool {
        self.secrets.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
    }

    /// Length of the longest suffix of `buf` that is a proper prefix of some secret.
    fn held_suffix(&self, buf: &[u8]) -> usize {
        let max = self.secrets.iter().map(|s| s.len()).max().unwrap_or(0);
        let upper = max.saturating_sub(1).min(buf.len());
        (1..=upper)
            .rev()
            .find(|&n| self.secrets.iter().any(|s| s.len() > n && s.starts_with(&buf[buf.len() - n..])))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(secrets: &[&str], chunks: &[&[u8]]) -> String {
        let mut m = Masker::new(secrets);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c));
        }
        out.extend(m.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_and_split_secrets() {
        assert_eq!(run(&["hunter22"], &[b"pw=hunter22!\n"]), "pw=[MASKED]!\n");
        assert_eq!(run(&["hunter22"], &[b"pw=hun", b"ter22!\n"]), "pw=[MASKED]!\n");
        assert_eq!(run(&["hunter22"], &[b"h", b"u", b"n", b"t", b"e", b"r", b"2", b"2"]), "[MASKED]");
        assert_eq!(run(&["hunter22"], &[b"hunter2"]), "hunter2");
    }

    #[test]
    fn prefers_the_longest_secret() {
        assert_eq!(run(&["secret12", "secret1234"], &[b"x secret1234 y"]), "x [MASKED] y");
        assert_eq!(run(&["secret12", "secret1234"], &[b"x secret12", b"34 y"]), "x [MASKED] y");
    }

    #[test]
    fn emits_immediately_when_nothing_could_be_a_secret() {
        let mut m = Masker::new(&["hunter22"]);
        assert_eq!(m.push(b"prompt> "), b"prompt> ");
        assert_eq!(m.push(b"hun"), b"");
        assert_eq!(m.push(b"gry\n"), b"hungry\n");
    }

    proptest! {
        #[test]
        fn never_leaks_a_secret_however_output_is_split(
            prefix in "[a-z ]{0,20}", suffix in "[a-z ]{0,20}", cuts in proptest::collection::vec(0usize..60, 0..6)
        ) {
            let secret = "s3cr3t-VALUE-9";
            let text = format!("{prefix}{secret}{suffix}{secret}");
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            points.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points { chunks.push(&bytes[last..p]); last = p; }
            chunks.push(&bytes[last..]);
            let out = run(&[secret], &chunks);
            prop_assert!(!out.contains(secret));
            prop_assert_eq!(out, format!("{prefix}[MASKED]{suffix}[MASKED]"));
        }
    }
}
