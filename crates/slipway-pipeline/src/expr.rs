//! The `rules:if` / `workflow:rules:if` expression language, as GitLab defines it:
//! `$VAR`, string literals, `null`, `/regex/i`, `==`, `!=`, `=~`, `!~`, `&&` (binds tighter),
//! `||`, and parentheses. Parsing reports the byte column of the first problem.

use regex::Regex;

#[derive(Debug, Clone)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Cmp(Operand, CmpOp, Operand),
    Single(Operand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Match,
    NoMatch,
}

#[derive(Debug, Clone)]
pub enum Operand {
    Var(String),
    Str(String),
    Regex(Regex),
    Null,
}

/// A parse error: what went wrong and at which character offset of the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Var(String),
    Str(String),
    Regex(String, String),
    Null,
    Op(CmpOp),
    And,
    Or,
    LParen,
    RParen,
}

fn lex(src: &str) -> Result<Vec<(Tok, usize, usize)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |offset: usize, len: usize, m: &str| ExprError { offset, len, message: m.to_string() };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '$' => {
                i += 1;
                let braced = chars.get(i) == Some(&'{');
                if braced {
                    i += 1;
                }
                let name_start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                if i == name_start {
                    return Err(err(start, 1, "expected a variable name after `$`"));
                }
                let name: String = chars[name_start..i].iter().collect();
                if braced {
                    if chars.get(i) != Some(&'}') {
                        return Err(err(start, i - start, "unclosed `${`"));
                    }
                    i += 1;
                }
                out.push((Tok::Var(name), start, i - start));
            }
            '"' | '\'' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, i - start, "unterminated string literal")),
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some('\\') if chars.get(i + 1) == Some(&c) => {
                            s.push(c);
                            i += 2;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push((Tok::Str(s), start, i - start));
            }
            '/' => {
                i += 1;
                let mut pat = String::new();
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(err(start, i - start, "unterminated regular expression (missing closing `/`)"));
                        }
                        Some('\\') if chars.get(i + 1) == Some(&'/') => {
                            pat.push('/');
                            i += 2;
                        }
                        Some('\\') => {
                            pat.push('\\');
                            if let Some(&n) = chars.get(i + 1) {
                                pat.push(n);
                            }
                            i += 2;
                        }
                        Some('/') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            pat.push(ch);
                            i += 1;
                        }
                    }
                }
                let fstart = i;
                while i < chars.len() && chars[i].is_ascii_alphabetic() {
                    i += 1;
                }
                let flags: String = chars[fstart..i].iter().collect();
                out.push((Tok::Regex(pat, flags), start, i - start));
            }
            '=' | '!' => {
                let next = chars.get(i + 1).copied();
                let op = match (c, next) {
                    ('=', Some('=')) => CmpOp::Eq,
                    ('=', Some('~')) => CmpOp::Match,
                    ('!', Some('=')) => CmpOp::Ne,
                    ('!', Some('~')) => CmpOp::NoMatch,
                    _ => return Err(err(start, 1, "expected `==`, `!=`, `=~` or `!~`")),
                };
                i += 2;
                out.push((Tok::Op(op), start, 2));
            }
            '&' if chars.get(i + 1) == Some(&'&') => {
                i += 2;
                out.push((Tok::And, start, 2));
            }
            '|' if chars.get(i + 1) == Some(&'|') => {
                i += 2;
                out.push((Tok::Or, start, 2));
            }
            '(' => {
                i += 1;
                out.push((Tok::LParen, start, 1));
            }
            ')' => {
                i += 1;
                out.push((Tok::RParen, start, 1));
            }
            _ if c.is_ascii_alphabetic() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if word == "null" {
                    out.push((Tok::Null, start, i - start));
                } else {
                    return Err(ExprError {
                        offset: start,
                        len: i - start,
                        message: format!("unexpected word `{word}`: variables start with `$` and strings are quoted"),
                    });
                }
            }
            '&' | '|' => {
                return Err(err(start, 1, &format!("`{c}` must be doubled: use `{c}{c}`")));
            }
            _ => return Err(err(start, 1, &format!("unexpected character `{c}`"))),
        }
    }
    Ok(out)
}

struct P {
    toks: Vec<(Tok, usize, usize)>,
    pos: usize,
    end: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn here(&self) -> usize {
        self.toks.get(self.pos).map(|t| t.1).unwrap_or(self.end)
    }
    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut lhs = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let rhs = self.and()?;
            lhs = Expr::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }
    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut lhs = self.primary()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let rhs = self.primary()?;
            lhs = Expr::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }
    fn primary(&mut self) -> Result<Expr, ExprError> {
        if self.peek() == Some(&Tok::LParen) {
            let open = self.here();
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return Err(ExprError { offset: open, len: 1, message: "unclosed `(`".into() });
            }
            self.pos += 1;
            return Ok(e);
        }
        let lhs = self.operand()?;
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.operand()?;
            if matches!(op, CmpOp::Match | CmpOp::NoMatch) && matches!(lhs, Operand::Regex(_)) {
                return Err(ExprError {
                    offset: self.toks[self.pos - 3].1,
                    len: 1,
                    message: "the regular expression goes on the right of `=~`".into(),
                });
            }
            return Ok(Expr::Cmp(lhs, op, rhs));
        }
        Ok(Expr::Single(lhs))
    }
    fn operand(&mut self) -> Result<Operand, ExprError> {
        let Some((tok, off, len)) = self.toks.get(self.pos).cloned() else {
            return Err(ExprError {
                offset: self.end,
                len: 1,
                message: "expression ends too early: expected a variable, string, regex or null".into(),
            });
        };
        self.pos += 1;
        Ok(match tok {
            Tok::Var(v) => Operand::Var(v),
            Tok::Str(s) => Operand::Str(s),
            Tok::Null => Operand::Null,
            Tok::Regex(p, flags) => {
                Operand::Regex(compile_regex(&p, &flags).map_err(|m| ExprError { offset: off, len, message: m })?)
            }
            other => {
                return Err(ExprError {
                    offset: off,
                    len,
                    message: format!("unexpected {}: expected a variable, string, regex or null", describe(&other)),
                });
            }
        })
    }
}

fn describe(t: &Tok) -> &'static str {
    match t {
        Tok::Op(_) => "operator",
        Tok::And => "`&&`",
        Tok::Or => "`||`",
        Tok::LParen => "`(`",
        Tok::RParen => "`)`",
        _ => "token",
    }
}

fn compile_regex(pattern: &str, flags: &str) -> Result<Regex, String> {
    let mut prefix = String::new();
    for f in flags.chars() {
        match f {
            'i' => prefix.push_str("(?i)"),
            'm' => prefix.push_str("(?m)"),
            's' => prefix.push_str("(?s)"),
            other => {
                return Err(format!("unknown regular expression flag `{other}` (supported: i, m, s)"));
            }
        }
    }
    Regex::new(&format!("{prefix}{pattern}"))
        .map_err(|e| format!("invalid regular expression: {}", e.to_string().lines().last().unwrap_or("")))
}

/// Parses an expression; errors carry the character offset within `src`.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let toks = lex(src)?;
    let end = src.chars().count();
    if toks.is_empty() {
        return Err(ExprError { offset: 0, len: 1, message: "empty expression".into() });
    }
    let mut p = P { toks, pos: 0, end };
    let e = p.or()?;
    if let Some((tok, off, len)) = p.toks.get(p.pos) {
        let message = match tok {
            Tok::RParen => "unmatched `)`".to_string(),
            _ => "expected `&&`, `||` or the end of the expression".to_string(),
        };
        return Err(ExprError { offset: *off, len: *len, message });
    }
    Ok(e)
}

enum Val<'a> {
    S(Option<String>),
    R(&'a Regex),
}

fn value<'a>(o: &'a Operand, vars: &dyn Fn(&str) -> Option<String>) -> Val<'a> {
    match o {
        Operand::Var(v) => Val::S(vars(v)),
        Operand::Str(s) => Val::S(Some(s.clone())),
        Operand::Null => Val::S(None),
        Operand::Regex(r) => Val::R(r),
    }
}

/// Evaluates with GitLab's semantics: an undefined variable is `null`; a lone operand is true
/// when it is a non-empty string; `=~` with a variable on the right reads it as `/pattern/flags`,
/// and a string that is not one (quoted, or a variable's value) matches as a substring.
pub fn eval(e: &Expr, vars: &dyn Fn(&str) -> Option<String>) -> bool {
    match e {
        Expr::Or(a, b) => eval(a, vars) || eval(b, vars),
        Expr::And(a, b) => eval(a, vars) && eval(b, vars),
        Expr::Single(o) => match value(o, vars) {
            Val::S(s) => s.is_some_and(|s| !s.is_empty()),
            Val::R(_) => true,
        },
        Expr::Cmp(l, op, r) => {
            let (lv, rv) = (value(l, vars), value(r, vars));
            match op {
                CmpOp::Eq | CmpOp::Ne => {
                    let eq = match (&lv, &rv) {
                        (Val::S(a), Val::S(b)) => a == b,
                        (Val::R(a), Val::R(b)) => a.as_str() == b.as_str(),
                        _ => false,
                    };
                    eq == (*op == CmpOp::Eq)
                }
                CmpOp::Match | CmpOp::NoMatch => {
                    let matched = match (lv, rv) {
                        (Val::S(Some(s)), Val::R(re)) => re.is_match(&s),
                        // A string that is no `/pattern/flags` is matched as itself, escaped:
                        // a substring test (GitLab's `Lexeme::Pattern.build_and_evaluate`).
                        (Val::S(Some(s)), Val::S(Some(p))) => match regex_from_string(&p) {
                            Some(re) => re.is_match(&s),
                            None => s.contains(p.as_str()),
                        },
                        _ => false,
                    };
                    matched == (*op == CmpOp::Match)
                }
            }
        }
    }
}

fn regex_from_string(p: &str) -> Option<Regex> {
    let p = p.strip_prefix('/')?;
    let end = p.rfind('/')?;
    compile_regex(&p[..end], &p[end + 1..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn check(src: &str, vars: &[(&str, &str)]) -> bool {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        eval(&e, &|k| m.get(k).cloned())
    }

    #[test]
    fn gitlab_semantics() {
        let v = [("CI_COMMIT_BRANCH", "main"), ("EMPTY", ""), ("CI_COMMIT_TAG", "v1.2.0"), ("PAT", "/^v\\d+/")];
        assert!(check("$CI_COMMIT_BRANCH == \"main\"", &v));
        assert!(check("$CI_COMMIT_BRANCH != 'dev'", &v));
        assert!(check("$CI_COMMIT_BRANCH", &v));
        assert!(!check("$EMPTY", &v));
        assert!(!check("$UNDEFINED", &v));
        assert!(check("$UNDEFINED == null", &v));
        assert!(!check("$EMPTY == null", &v));
        assert!(check("$CI_COMMIT_TAG =~ /^v[0-9]+\\.[0-9]+/", &v));
        assert!(check("$CI_COMMIT_BRANCH =~ /MAIN/i", &v));
        assert!(check("$CI_COMMIT_TAG !~ /^release/", &v));
        assert!(!check("$UNDEFINED =~ /.*/", &v));
        assert!(check("$CI_COMMIT_TAG =~ $PAT", &v));
        // A quoted string on the right is GitLab's substring match, not a refusal.
        assert!(check("$CI_COMMIT_TAG =~ \"1.2\"", &v));
        assert!(check("$CI_COMMIT_BRANCH !~ \"release\"", &v));
        assert!(!check("$CI_COMMIT_BRANCH =~ \"ma.n\"", &v), "the string is escaped, not a pattern");
        // && binds tighter than ||
        assert!(check("$UNDEFINED || $CI_COMMIT_BRANCH == 'main' && $CI_COMMIT_TAG", &v));
        assert!(!check("($UNDEFINED || $CI_COMMIT_BRANCH == 'main') && $EMPTY", &v));
        assert!(check("${CI_COMMIT_BRANCH} == \"main\"", &v));
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = parse("$A == \"x\" & $B").unwrap_err();
        assert_eq!(e.offset, 10);
        let e = parse("$A =~ /[/").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(e.message.contains("invalid regular expression"));
        let e = parse("($A == 'x'").unwrap_err();
        assert_eq!(e.offset, 0);
        let e = parse("$A == main").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(parse("$A ==").is_err());
        assert!(parse("").is_err());
        assert!(parse("$A $B").is_err());
    }
}
