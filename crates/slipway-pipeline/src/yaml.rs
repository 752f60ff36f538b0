//! A YAML tree that remembers where every node came from.
//!
//! GitLab's semantics (`extends`, `include`, `!reference`, `default`) operate on untyped trees
//! before anything is typed, so the parser first builds this tree from saphyr-parser's event
//! stream: anchors and aliases are resolved, `<<` merge keys applied, `!reference` kept as its
//! own node kind, and duplicate keys reported. Every node and key carries a [`Span`].

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};

use crate::diag::{Diagnostic, FileId, Span};

/// Deepest nesting accepted; deeper input is refused instead of overflowing the stack.
const MAX_DEPTH: usize = 128;
/// Largest number of nodes an input may expand to through aliases ("billion laughs").
const MAX_NODES: usize = 1_000_000;

/// A mapping key with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

/// One YAML node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
    /// Column offset from `span.start` to the first character of a string's content
    /// (1 for single-line quoted scalars, 0 otherwise); used to point inside expressions.
    pub content_offset: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
    /// `!reference [.job, key, ...]`, resolved by the compiler.
    Reference(Vec<Node>),
}

impl Node {
    pub fn new(value: Value, span: Span) -> Node {
        Node { value, span, content_offset: 0 }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    pub fn get_entry(&self, key: &str) -> Option<&(Key, Node)> {
        self.as_map()?.iter().find(|(k, _)| k.name == key)
    }

    /// A short name of the node's type for error messages ("a string", "a list", ...).
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Reference(_) => "a !reference",
        }
    }

    /// The scalar as GitLab would stringify it (variables accept numbers and booleans).
    pub fn scalar_string(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Parses one YAML file into a tree. Syntax errors stop parsing (YAML cannot be resumed);
/// other problems (duplicate keys, unknown tags) are collected and parsing goes on.
/// The tree as JSON (for inputs read with serde after their YAML is checked); a
/// `!reference` becomes its list.
pub fn to_json(n: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &n.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) | Value::Reference(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.name.clone(), to_json(v))).collect()),
    }
}

pub fn parse(text: &str, file: FileId) -> Result<Node, Vec<Diagnostic>> {
    let mut b = Builder::new(text, file, false);
    let docs = b.documents();
    match docs {
        Ok(mut docs) if b.errors.is_empty() && docs.len() <= 1 => Ok(docs.pop().unwrap_or_else(|| b.empty())),
        Ok(docs) => {
            if let Some(second) = docs.get(1) {
                b.errors.push(
                    Diagnostic::error(second.span, "this file holds one YAML document; found another after `---`")
                        .with_hint("remove the `---` line, or move the second document into its own file"),
                );
            }
            Err(b.errors)
        }
        Err(e) => {
            b.errors.push(e);
            Err(b.errors)
        }
    }
}

/// A pipeline file as GitLab reads it: an optional header document before `---` holding
/// `spec:` (its CI/CD inputs), the configuration, and what GitLab's YAML tolerates as
/// warnings (a duplicate key: the last value wins).
pub struct PipelineDoc {
    pub header: Option<Node>,
    pub root: Node,
    pub warnings: Vec<Diagnostic>,
}

/// Parses a pipeline file (the main one or an included one); see [`PipelineDoc`].
pub fn parse_pipeline(text: &str, file: FileId) -> Result<PipelineDoc, Vec<Diagnostic>> {
    let mut b = Builder::new(text, file, true);
    let mut docs = match b.documents() {
        Ok(d) => d,
        Err(e) => {
            b.errors.push(e);
            return Err(b.errors);
        }
    };
    let is_header = |n: &Node| matches!(&n.value, Value::Map(m) if m.iter().any(|(k, _)| k.name == "spec"));
    let header = match docs.len() {
        0 | 1 => None,
        2 if is_header(&docs[0]) => {
            if let Value::Map(m) = &docs[0].value
                && let Some((k, _)) = m.iter().find(|(k, _)| k.name != "spec")
            {
                b.errors.push(
                    Diagnostic::error(k.span, format!("the header before `---` holds only `spec:`, not `{}`", k.name))
                        .with_hint("move it into the configuration after the `---` line"),
                );
            }
            Some(docs.remove(0))
        }
        _ => {
            let d = Diagnostic::error(
                docs[1].span,
                "a pipeline file holds one YAML document, or a `spec:` header, `---` and the configuration",
            );
            b.errors.push(if is_header(&docs[0]) {
                d.with_hint("only one document may follow the `spec:` header")
            } else {
                d.with_hint(
                    "a document before `---` must be a `spec:` header (CI/CD inputs); else remove the `---` line, \
                     or move the second document into its own file and `include` it",
                )
            });
            None
        }
    };
    if !b.errors.is_empty() {
        return Err(b.errors);
    }
    let root = docs.pop().unwrap_or_else(|| b.empty());
    Ok(PipelineDoc { header, root, warnings: b.warnings })
}

struct Builder<'a> {
    file: FileId,
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    errors: Vec<Diagnostic>,
    /// A duplicate key is a warning and the last value wins (GitLab's YAML), not an error.
    lenient: bool,
    warnings: Vec<Diagnostic>,
    nodes: usize,
}

impl<'a> Builder<'a> {
    fn new(text: &'a str, file: FileId, lenient: bool) -> Builder<'a> {
        Builder {
            file,
            parser: Parser::new_from_str(text),
            anchors: HashMap::new(),
            errors: Vec::new(),
            lenient,
            warnings: Vec::new(),
            nodes: 0,
        }
    }

    fn empty(&self) -> Node {
        Node::new(Value::Null, Span::new(self.file, 1, 1, 1, 1))
    }

    fn span(&self, s: YSpan) -> Span {
        Span::new(
            self.file,
            s.start.line() as u32,
            s.start.col() as u32 + 1,
            s.end.line() as u32,
            s.end.col() as u32 + 1,
        )
    }

    fn next(&mut self) -> Result<(Event<'a>, YSpan), Diagnostic> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let m = e.marker();
                let span =
                    Span::new(self.file, m.line() as u32, m.col() as u32 + 1, m.line() as u32, m.col() as u32 + 2);
                Err(Diagnostic::error(span, format!("invalid YAML: {}", e.info()))
                    .with_hint("check the indentation and quoting around this position"))
            }
            None => Err(Diagnostic::error(Span::new(self.file, 1, 1, 1, 1), "invalid YAML: unexpected end of input")),
        }
    }

    /// Every document of the stream, in order (empty ones left out).
    fn documents(&mut self) -> Result<Vec<Node>, Diagnostic> {
        let mut docs = Vec::new();
        loop {
            let (ev, sp) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::DocumentStart(_) => {
                    let (ev, sp2) = self.next()?;
                    if matches!(ev, Event::DocumentEnd) {
                        continue;
                    }
                    let node = self.node(ev, sp2, 0)?;
                    docs.push(node);
                }
                Event::StreamEnd => break,
                other => {
                    let node = self.node(other, sp, 0)?;
                    docs.push(node);
                }
            }
        }
        Ok(docs)
    }

    fn count(&mut self, span: Span) -> Result<(), Diagnostic> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Diagnostic::error(span, "the document expands to too many nodes (aliases nested too deeply?)"));
        }
        Ok(())
    }

    fn node(&mut self, ev: Event<'a>, sp: YSpan, depth: usize) -> Result<Node, Diagnostic> {
        let span = self.span(sp);
        if depth > MAX_DEPTH {
            return Err(Diagnostic::error(span, format!("the document is nested more than {MAX_DEPTH} levels deep")));
        }
        self.count(span)?;
        match ev {
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => {
                    let n = n.clone();
                    self.nodes += approx_size(&n);
                    if self.nodes > MAX_NODES {
                        return Err(Diagnostic::error(span, "the document expands to too many nodes through aliases"));
                    }
                    Ok(n)
                }
                None => Err(Diagnostic::error(span, "alias to an unknown anchor")
                    .with_hint("define the `&anchor` before the `*alias` that uses it")),
            },
            Event::Scalar(text, style, anchor, tag) => {
                let mut node = self.scalar(&text, style, tag.as_deref(), span);
                if style != ScalarStyle::Plain
                    && sp.start.line() == sp.end.line()
                    && matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted)
                {
                    node.content_offset = 1;
                }
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                Ok(node)
            }
            Event::SequenceStart(anchor, tag) => {
                let mut items = Vec::new();
                let end;
                loop {
                    let (ev, sp2) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        end = self.span(sp2);
                        break;
                    }
                    items.push(self.node(ev, sp2, depth + 1)?);
                }
                let full = Span { end_line: end.end_line.max(span.start_line), end_col: end.end_col, ..span };
                let value = match tag.as_deref() {
                    Some(t) if t.handle == "!" && t.suffix == "reference" => Value::Reference(items),
                    Some(t) if is_core(t, "seq") => Value::Seq(items),
                    None => Value::Seq(items),
                    Some(t) => {
                        self.errors.push(unknown_tag(span, &format!("{}{}", t.handle, t.suffix)));
                        Value::Seq(items)
                    }
                };
                let node = Node::new(value, full);
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                Ok(node)
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(t) = tag.as_deref()
                    && !is_core(t, "map")
                {
                    self.errors.push(unknown_tag(span, &format!("{}{}", t.handle, t.suffix)));
                }
                let node = self.mapping(span, depth)?;
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                Ok(node)
            }
            _ => Err(Diagnostic::error(span, "invalid YAML: unexpected event")),
        }
    }

    fn mapping(&mut self, span: Span, depth: usize) -> Result<Node, Diagnostic> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        let mut merged: Vec<(Key, Node)> = Vec::new();
        let end;
        loop {
            let (ev, ksp) = self.next()?;
            if matches!(ev, Event::MappingEnd) {
                end = self.span(ksp);
                break;
            }
            let key_node = self.node(ev, ksp, depth + 1)?;
            let (vev, vsp) = self.next()?;
            let value = self.node(vev, vsp, depth + 1)?;
            let name = match key_node.scalar_string() {
                Some(s) => s,
                None if matches!(key_node.value, Value::Null) => String::new(),
                None => {
                    self.errors.push(Diagnostic::error(
                        key_node.span,
                        format!("mapping keys must be plain strings, found {}", key_node.kind()),
                    ));
                    continue;
                }
            };
            let key = Key { name, span: key_node.span };
            if key.name == "<<" && matches!(key_node.value, Value::Str(_)) {
                // YAML merge key: explicit keys always win over merged ones.
                match value.value {
                    Value::Map(m) => merged.extend(m),
                    Value::Seq(items) => {
                        for item in items {
                            match item.value {
                                Value::Map(m) => merged.extend(m),
                                _ => self.errors.push(Diagnostic::error(
                                    item.span,
                                    "`<<` merges mappings only; this item is not a mapping",
                                )),
                            }
                        }
                    }
                    _ => self.errors.push(Diagnostic::error(
                        value.span,
                        "`<<` merges mappings only; use `<<: *anchor` with an anchored mapping",
                    )),
                }
                continue;
            }
            if let Some(i) = entries.iter().position(|(k, _)| k.name == key.name) {
                let line = entries[i].0.span.start_line;
                if self.lenient {
                    // GitLab's YAML keeps the last value, where the first key stood.
                    self.warnings.push(
                        Diagnostic::warning(
                            key.span,
                            format!("duplicate key `{}`: this value replaces the one at line {line}", key.name),
                        )
                        .with_hint("remove one of them (GitLab keeps the last; `--strict` makes this an error)"),
                    );
                    entries[i].1 = value;
                    continue;
                }
                self.errors.push(
                    Diagnostic::error(key.span, format!("duplicate key `{}`", key.name))
                        .with_hint(format!("`{}` is already defined at line {line}; remove one of them", key.name)),
                );
                continue;
            }
            entries.push((key, value));
        }
        for (k, v) in merged {
            if !entries.iter().any(|(e, _)| e.name == k.name) {
                entries.push((k, v));
            }
        }
        let full = Span { end_line: end.end_line.max(span.start_line), end_col: end.end_col, ..span };
        Ok(Node::new(Value::Map(entries), full))
    }

    fn scalar(&mut self, text: &str, style: ScalarStyle, tag: Option<&saphyr_parser::Tag>, span: Span) -> Node {
        if let Some(t) = tag {
            if is_core(t, "str") {
                return Node::new(Value::Str(text.to_string()), span);
            }
            if !(is_core(t, "int") || is_core(t, "bool") || is_core(t, "float") || is_core(t, "null")) {
                self.errors.push(unknown_tag(span, &format!("{}{}", t.handle, t.suffix)));
            }
        }
        if style != ScalarStyle::Plain {
            return Node::new(Value::Str(text.to_string()), span);
        }
        Node::new(resolve_plain(text), span)
    }
}

fn approx_size(n: &Node) -> usize {
    match &n.value {
        Value::Seq(v) | Value::Reference(v) => 1 + v.iter().map(approx_size).sum::<usize>(),
        Value::Map(m) => 1 + m.iter().map(|(_, v)| 1 + approx_size(v)).sum::<usize>(),
        _ => 1,
    }
}

fn is_core(t: &saphyr_parser::Tag, name: &str) -> bool {
    (t.handle == "!!" || t.handle == "tag:yaml.org,2002:") && t.suffix == name
}

fn unknown_tag(span: Span, tag: &str) -> Diagnostic {
    Diagnostic::error(span, format!("unknown YAML tag `{tag}`"))
        .with_hint("slipway understands `!reference [job, key]` and the core tags `!!str`, `!!int`, `!!bool`")
}

/// YAML 1.2 core-schema resolution of a plain scalar (also accepting the capitalised forms).
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    let looks_float = text.bytes().any(|b| b.is_ascii_digit())
        && text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && text.contains(['.', 'e', 'E']);
    if looks_float && let Ok(f) = text.parse::<f64>() {
        return Value::Float(f);
    }
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" => Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Value::Float(f64::NAN),
        _ => Value::Str(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Node {
        parse(s, FileId(0)).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn spans_are_one_based() {
        let n = p("job:\n  script: echo hi\n");
        let job = n.get("job").unwrap();
        let (k, v) = job.get_entry("script").unwrap();
        assert_eq!((k.span.start_line, k.span.start_col), (2, 3));
        assert_eq!((v.span.start_line, v.span.start_col), (2, 11));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let n = p(".base: &b\n  stage: test\n  when: manual\njob:\n  <<: *b\n  when: always\n");
        let job = n.get("job").unwrap();
        assert_eq!(job.get("stage").unwrap().as_str(), Some("test"));
        assert_eq!(job.get("when").unwrap().as_str(), Some("always"));
    }

    #[test]
    fn reference_tag_is_kept() {
        let n = p("job:\n  script: !reference [.setup, script]\n");
        assert!(matches!(n.get("job").unwrap().get("script").unwrap().value, Value::Reference(ref v) if v.len() == 2));
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_lines() {
        let e = parse("a: 1\nb: 2\na: 3\n", FileId(0)).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("duplicate key `a`"));
        assert_eq!(e[0].span.start_line, 3);
        assert!(e[0].hint.as_deref().unwrap().contains("line 1"));
    }

    #[test]
    fn scalars_resolve_like_yaml_core_schema() {
        let n = p("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: hello\n");
        assert_eq!(n.get("a").unwrap().value, Value::Int(1));
        assert_eq!(n.get("b").unwrap().value, Value::Str("1".into()));
        assert_eq!(n.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("d").unwrap().value, Value::Null);
        assert_eq!(n.get("e").unwrap().value, Value::Float(1.5));
        assert_eq!(n.get("f").unwrap().value, Value::Str("hello".into()));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("a: [1, 2\nb: 3\n", FileId(0)).unwrap_err();
        assert!(e[0].message.starts_with("invalid YAML"), "{e:?}");
        assert!(e[0].span.start_line >= 1);
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = i - 1
            ));
        }
        assert!(parse(&s, FileId(0)).is_err());
    }
}
