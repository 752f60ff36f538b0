//! GitLab's CI/CD inputs: a file's `spec:inputs` header (type, default, options, regex,
//! description), the values an `include:` gives it (`include: {local: f.yml, inputs: {…}}`,
//! or none for the main file: its defaults), and their interpolation — `$[[ inputs.NAME ]]`
//! in keys and values, with the functions `truncate(offset,length)` and `posix_escape` —
//! into the configuration. Every error is reported at its place.

use std::collections::HashMap;

use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::yaml::{Key, Node, Value};

/// A declared input.
#[derive(Debug, Clone)]
struct Input {
    name: String,
    span: Span,
    /// `string`, `number`, `boolean` or `array`.
    kind: String,
    default: Option<Node>,
    options: Vec<Node>,
    regex: Option<(regex::Regex, String)>,
}

/// The inputs a `spec:` header declares.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    inputs: Vec<Input>,
}

const INPUT_KEYS: &[&str] = &["default", "type", "options", "regex", "description"];

impl Spec {
    /// Reads a header document (`spec: {inputs: {NAME: {default, type, options, regex,
    /// description}}}`).
    pub fn read(header: &Node, errors: &mut Vec<Diagnostic>) -> Spec {
        let mut spec = Spec::default();
        let Some(s) = header.get("spec") else { return spec };
        let Value::Map(keys) = &s.value else {
            errors.push(Diagnostic::error(s.span, "`spec` must be a mapping with `inputs`"));
            return spec;
        };
        for (k, v) in keys {
            if k.name != "inputs" {
                let mut d = Diagnostic::error(k.span, format!("unknown keyword `{}` in `spec`", k.name));
                d.hint = Some("`spec:` holds `inputs:` (GitLab's CI/CD inputs)".into());
                errors.push(d);
                continue;
            }
            let Value::Map(inputs) = &v.value else {
                errors.push(Diagnostic::error(v.span, "`spec:inputs` must be a mapping of input names"));
                continue;
            };
            for (name, def) in inputs {
                spec.inputs.push(read_input(name, def, errors));
            }
        }
        spec
    }

    /// The value of every input: given by `given` (an include's `inputs:`, `None` for the
    /// main file) or its default; `at` is where they are given, for required inputs left out.
    pub fn resolve(&self, given: Option<&Node>, at: Span, errors: &mut Vec<Diagnostic>) -> HashMap<String, Node> {
        let mut values = HashMap::new();
        let names = || self.inputs.iter().map(|i| i.name.as_str());
        if let Some(g) = given {
            match &g.value {
                Value::Map(m) => {
                    for (k, v) in m {
                        let Some(input) = self.inputs.iter().find(|i| i.name == k.name) else {
                            let mut d = Diagnostic::error(k.span, format!("unknown input `{}`", k.name));
                            d.hint = Some(match did_you_mean(&k.name, names()) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None if self.inputs.is_empty() => "the included file declares no `spec:inputs`".into(),
                                None => format!("the file declares {}", names().collect::<Vec<_>>().join(", ")),
                            });
                            errors.push(d);
                            continue;
                        };
                        if check(input, v, errors) {
                            values.insert(k.name.clone(), v.clone());
                        }
                    }
                }
                _ => errors.push(Diagnostic::error(g.span, "`inputs` must be a mapping of input names to values")),
            }
        }
        for i in &self.inputs {
            if values.contains_key(&i.name) {
                continue;
            }
            match &i.default {
                Some(d) => {
                    values.insert(i.name.clone(), d.clone());
                }
                None => {
                    let mut d = Diagnostic::error(at, format!("input `{}` is required (it has no default)", i.name));
                    d.hint = Some(format!("give it: `inputs: {{{}: …}}`", i.name));
                    d.notes.push(format!("declared at line {}", i.span.start_line));
                    errors.push(d);
                }
            }
        }
        values
    }
}

fn read_input(name: &Key, def: &Node, errors: &mut Vec<Diagnostic>) -> Input {
    let mut input = Input {
        name: name.name.clone(),
        span: name.span,
        kind: "string".into(),
        default: None,
        options: Vec::new(),
        regex: None,
    };
    match &def.value {
        Value::Null => {}
        Value::Map(m) => {
            for (k, v) in m {
                match k.name.as_str() {
                    "default" => input.default = Some(v.clone()),
                    "description" => {}
                    "type" => match v.as_str() {
                        Some(t @ ("string" | "number" | "boolean" | "array")) => input.kind = t.to_string(),
                        _ => {
                            let mut d = Diagnostic::error(v.span, format!("input `{}` has an unknown type", name.name));
                            d.hint = Some("a type is `string`, `number`, `boolean` or `array`".into());
                            errors.push(d);
                        }
                    },
                    "options" => match &v.value {
                        Value::Seq(items) => input.options = items.clone(),
                        _ => errors.push(Diagnostic::error(v.span, "`options` must be a list of the allowed values")),
                    },
                    "regex" => match v.as_str() {
                        Some(r) => match regex::Regex::new(r.trim_start_matches('/').trim_end_matches('/')) {
                            Ok(re) => input.regex = Some((re, r.to_string())),
                            Err(e) => errors.push(Diagnostic::error(v.span, format!("invalid `regex`: {e}"))),
                        },
                        None => errors.push(Diagnostic::error(v.span, "`regex` must be a string")),
                    },
                    other => {
                        let mut d =
                            Diagnostic::error(k.span, format!("unknown keyword `{other}` in input `{}`", name.name));
                        if let Some(s) = did_you_mean(other, INPUT_KEYS.iter().copied()) {
                            d.hint = Some(format!("did you mean `{s}`?"));
                        }
                        errors.push(d);
                    }
                }
            }
        }
        _ => errors.push(Diagnostic::error(
            def.span,
            format!("input `{}` must be a mapping (`default`, `type`, `options`, `regex`, `description`)", name.name),
        )),
    }
    if let Some(d) = input.default.clone() {
        // A default that its own type, options or regex refuses is an error of the spec.
        check(&input, &d, errors);
    }
    input
}

/// Whether `v` is a value `input` takes; else an error at `v`.
fn check(input: &Input, v: &Node, errors: &mut Vec<Diagnostic>) -> bool {
    let ok_type = match input.kind.as_str() {
        "number" => matches!(v.value, Value::Int(_) | Value::Float(_)),
        "boolean" => matches!(v.value, Value::Bool(_)),
        "array" => matches!(v.value, Value::Seq(_)),
        _ => matches!(v.value, Value::Str(_)),
    };
    if !ok_type {
        errors.push(Diagnostic::error(v.span, format!("input `{}` is a {}, not {}", input.name, input.kind, v.kind())));
        return false;
    }
    if !input.options.is_empty() && !input.options.iter().any(|o| o.value == v.value) {
        let allowed: Vec<String> = input.options.iter().filter_map(Node::scalar_string).collect();
        errors.push(
            Diagnostic::error(
                v.span,
                format!("input `{}` cannot be `{}`", input.name, v.scalar_string().unwrap_or_default()),
            )
            .with_hint(format!("its options: {}", allowed.join(", "))),
        );
        return false;
    }
    if let (Some((re, shown)), Some(s)) = (&input.regex, v.as_str())
        && !re.is_match(s)
    {
        errors.push(Diagnostic::error(
            v.span,
            format!("input `{}` is `{s}`, which does not match `{shown}`", input.name),
        ));
        return false;
    }
    true
}

/// Replaces every `$[[ inputs.NAME ]]` in `n`'s keys and values: a value that is only the
/// interpolation takes the input's type (a number, a list…); inside a string it is the
/// input's text.
pub fn interpolate(n: Node, values: &HashMap<String, Node>, errors: &mut Vec<Diagnostic>) -> Node {
    match n.value {
        Value::Str(ref s) if s.contains("$[[") => {
            let whole = s.trim();
            if whole.starts_with("$[[") && whole.ends_with("]]") && whole.matches("$[[").count() == 1 {
                let inner = &whole[3..whole.len() - 2];
                return match evaluate(inner, values, &n, errors) {
                    Some(Evaluated::Typed(v)) => Node { span: n.span, content_offset: n.content_offset, ..v },
                    Some(Evaluated::Text(t)) => Node { value: Value::Str(t), ..n },
                    None => n,
                };
            }
            match substitute(s, values, &n, errors) {
                Some(t) => Node { value: Value::Str(t), ..n },
                None => n,
            }
        }
        Value::Seq(items) => {
            let items = items.into_iter().map(|i| interpolate(i, values, errors)).collect();
            Node { value: Value::Seq(items), ..n }
        }
        Value::Reference(items) => {
            let items = items.into_iter().map(|i| interpolate(i, values, errors)).collect();
            Node { value: Value::Reference(items), ..n }
        }
        Value::Map(entries) => {
            let entries = entries
                .into_iter()
                .map(|(k, v)| {
                    let k = if k.name.contains("$[[") {
                        let at = Node::new(Value::Str(k.name.clone()), k.span);
                        match substitute(&k.name, values, &at, errors) {
                            Some(name) => Key { name, ..k },
                            None => k,
                        }
                    } else {
                        k
                    };
                    (k, interpolate(v, values, errors))
                })
                .collect();
            Node { value: Value::Map(entries), ..n }
        }
        _ => n,
    }
}

enum Evaluated {
    Typed(Node),
    Text(String),
}

/// Every interpolation in `s` replaced by its text; `None` after an error.
fn substitute(s: &str, values: &HashMap<String, Node>, at: &Node, errors: &mut Vec<Diagnostic>) -> Option<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("$[[") {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find("]]") else {
            errors.push(Diagnostic::error(at.span, "`$[[` without its closing `]]`"));
            return None;
        };
        match evaluate(&rest[i + 3..i + end], values, at, errors)? {
            Evaluated::Text(t) => out.push_str(&t),
            Evaluated::Typed(v) => match v.scalar_string() {
                Some(t) => out.push_str(&t),
                None => {
                    errors.push(Diagnostic::error(at.span, "an array input cannot be part of a string"));
                    return None;
                }
            },
        }
        rest = &rest[i + end + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// One interpolation block's contents: `inputs.NAME` and then `| function`s.
fn evaluate(inner: &str, values: &HashMap<String, Node>, at: &Node, errors: &mut Vec<Diagnostic>) -> Option<Evaluated> {
    let mut parts = inner.split('|').map(str::trim);
    let head = parts.next().unwrap_or_default();
    let Some(name) = head.strip_prefix("inputs.") else {
        errors.push(
            Diagnostic::error(at.span, format!("`$[[ {head} ]]` is not an input"))
                .with_hint("interpolation reads inputs: `$[[ inputs.NAME ]]`"),
        );
        return None;
    };
    let Some(v) = values.get(name) else {
        let mut d = Diagnostic::error(at.span, format!("unknown input `{name}`"));
        let names: Vec<&str> = values.keys().map(String::as_str).collect();
        d.hint = Some(match did_you_mean(name, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if names.is_empty() => "the file declares no inputs: add a `spec:inputs` header and `---`".into(),
            None => format!("the file declares {}", names.join(", ")),
        });
        errors.push(d);
        return None;
    };
    let mut result = Evaluated::Typed(v.clone());
    for f in parts {
        let text = match &result {
            Evaluated::Text(t) => t.clone(),
            Evaluated::Typed(v) => v.scalar_string().unwrap_or_default(),
        };
        result = Evaluated::Text(if f == "posix_escape" {
            posix_escape(&text)
        } else if let Some(args) = f.strip_prefix("truncate(").and_then(|a| a.strip_suffix(')')) {
            let nums: Vec<Option<usize>> = args.split(',').map(|a| a.trim().parse().ok()).collect();
            match nums.as_slice() {
                [Some(offset), Some(len)] => text.chars().skip(*offset).take(*len).collect(),
                _ => {
                    errors.push(Diagnostic::error(
                        at.span,
                        format!("`{f}`: truncate takes two numbers (offset, length)"),
                    ));
                    return None;
                }
            }
        } else {
            let mut d = Diagnostic::error(at.span, format!("unknown interpolation function `{f}`"));
            d.hint = Some(
                "slipway has `truncate(offset,length)` and `posix_escape`; GitLab's `expand_vars` is not supported yet"
                    .into(),
            );
            errors.push(d);
            return None;
        });
    }
    Some(result)
}

/// A string quoted for a POSIX shell word, as GitLab's `posix_escape` does: every character
/// that is not a letter, digit or one of `_-./,:=@%+` gets a backslash.
fn posix_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c.is_ascii_alphanumeric() || "_-./,:=@%+".contains(c)) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
