//! Variable expansion with GitLab's rules: `$VAR`, `${VAR}` and `$$` for a literal `$`.
//! Unknown variables expand to the empty string; expansion is one pass (no recursion).

use std::collections::BTreeMap;

/// An ordered set of variables, later definitions overriding earlier ones.
pub type VarMap = BTreeMap<String, String>;

/// Expands `$VAR`, `${VAR}` and `$$` in `s` once, against `lookup`.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    if !s.contains('$') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut lit = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&s[lit..i]);
        if b.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
            lit = i;
            continue;
        }
        let braced = b.get(i + 1) == Some(&b'{');
        let start = if braced { i + 2 } else { i + 1 };
        let mut j = start;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        if j == start || (braced && b.get(j) != Some(&b'}')) {
            out.push('$');
            i += 1;
            lit = i;
            continue;
        }
        if let Some(v) = lookup(&s[start..j]) {
            out.push_str(&v);
        }
        i = if braced { j + 1 } else { j };
        lit = i;
    }
    out.push_str(&s[lit..]);
    out
}

/// Expands against a map.
pub fn expand_map(s: &str, vars: &VarMap) -> String {
    expand(s, &|k| vars.get(k).cloned())
}

pub use slipway_model::sections::slug;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_gitlab() {
        let mut v = VarMap::new();
        v.insert("A".into(), "1".into());
        v.insert("B".into(), "$A".into());
        assert_eq!(expand_map("x$A-${A}y", &v), "x1-1y");
        assert_eq!(expand_map("$$A", &v), "$A");
        assert_eq!(expand_map("$B", &v), "$A", "one pass, no recursion");
        assert_eq!(expand_map("$NOPE.", &v), ".");
        assert_eq!(expand_map("cost: $", &v), "cost: $");
        assert_eq!(expand_map("${A", &v), "${A");
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("feature/Add_Thing"), "feature-add-thing");
        assert_eq!(slug("-x-"), "x");
        assert_eq!(slug(&"a".repeat(80)).len(), 63);
    }
}
