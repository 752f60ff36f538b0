//! From the merged YAML tree to a validated [`Pipeline`]: `extends`, `!reference`, `default`
//! and the deprecated globals are applied on the tree, then every keyword is typed and
//! checked. All errors are collected; nothing is returned unless there are none.

use std::collections::{HashMap, HashSet};

use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::duration;
use crate::expr;
use crate::load::deep_merge;
use crate::model::*;
use crate::yaml::{Key, Node, Value};

mod access;
mod alerts;
mod environments;
mod gitops;
mod notify;

pub const TOP_KEYWORDS: &[&str] = &[
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
    "go",
    "gates",
    "images",
    "environments",
    "alerts",
];
pub const SLIPWAY_SECTIONS: &[&str] = &["go", "gates", "images", "environments", "alerts"];
pub const JOB_KEYWORDS: &[&str] = &[
    "after_script",
    "allow_failure",
    "artifacts",
    "before_script",
    "cache",
    "coverage",
    "dependencies",
    "environment",
    "except",
    "extends",
    "image",
    "inherit",
    "interruptible",
    "needs",
    "only",
    "parallel",
    "resource_group",
    "retry",
    "rules",
    "script",
    "services",
    "stage",
    "start_in",
    "tags",
    "timeout",
    "trigger",
    "variables",
    "when",
    "secrets",
    "id_tokens",
    "hooks",
    "release",
    "pages",
    "dast_configuration",
    "identity",
    "manual_confirmation",
    "run",
];
const IGNORED_JOB_KEYWORDS: &[&str] =
    &["secrets", "id_tokens", "hooks", "release", "pages", "dast_configuration", "identity", "manual_confirmation"];
const DEFAULT_KEYWORDS: &[&str] = &[
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];
const GLOBAL_DEFAULTS: &[&str] = &["image", "services", "cache", "before_script", "after_script"];
const MAX_EXTENDS_DEPTH: usize = 11;
const MAX_REFERENCE_DEPTH: usize = 10;

/// The default stages when `stages` is not written.
pub const DEFAULT_STAGES: &[&str] = &["build", "test", "deploy"];

/// The result of compiling: a pipeline when there were no errors, and every diagnostic
/// (errors and warnings) either way.
pub struct Compiled {
    pub pipeline: Option<Pipeline>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn compile(root: Node) -> Compiled {
    let mut cx = Cx::default();
    let pipeline = cx.pipeline(root);
    // A template's problem reaches every job that extends it: report each place once.
    let mut seen = HashSet::new();
    cx.diags.retain(|d| seen.insert((d.span, d.message.clone())));
    let has_errors = cx.diags.iter().any(|d| d.severity == crate::diag::Severity::Error);
    Compiled { pipeline: if has_errors { None } else { pipeline }, diagnostics: cx.diags }
}

/// `include:rules`: GitLab's `if`, `exists`, `changes` and `when` (`never`, `always`), checked
/// as a job's rules are.
pub(crate) fn include_rules(n: &Node) -> (Vec<Rule>, Vec<Diagnostic>) {
    let mut cx = Cx::default();
    let rules = cx.rules(n, "include:rules", &["never", "always"]);
    (rules, cx.diags)
}

/// Compiles a Prometheus rule file: the rules, or every error.
pub fn compile_rules(root: Node) -> Result<slipway_monitor::rules::RuleFile, Vec<Diagnostic>> {
    let mut cx = Cx::default();
    let rules = cx.rule_file(&root, "");
    match cx.diags.iter().any(|d| d.severity == crate::diag::Severity::Error) {
        true => Err(cx.diags),
        false => Ok(rules),
    }
}

/// Compiles the server's access file: the config, or every error.
pub fn compile_access(root: Node) -> Result<slipway_model::access::AccessConfig, Vec<Diagnostic>> {
    let mut cx = Cx::default();
    let config = cx.access(&root);
    match cx.diags.iter().any(|d| d.severity == crate::diag::Severity::Error) {
        true => Err(cx.diags),
        false => Ok(config),
    }
}

/// Compiles the server's notification file: the config, or every error.
pub fn compile_notify(root: Node) -> Result<slipway_monitor::channels::NotifyConfig, Vec<Diagnostic>> {
    let mut cx = Cx::default();
    let config = cx.notify(&root);
    match cx.diags.iter().any(|d| d.severity == crate::diag::Severity::Error) {
        true => Err(cx.diags),
        false => Ok(config),
    }
}

pub use gitops::{Application, Desired, DesiredRelease, SyncWindow, desired_files};

/// Compiles an environment's desired-state file (docs/gitops.md): the desired state, or every
/// error.
pub fn compile_desired(root: Node) -> Result<Desired, Vec<Diagnostic>> {
    let mut cx = Cx::default();
    let desired = cx.desired(&root);
    match (desired, cx.diags.iter().any(|d| d.severity == crate::diag::Severity::Error)) {
        (Some(d), false) => Ok(d),
        _ => Err(cx.diags),
    }
}

/// Compiles an application (slipway's shape or an Argo CD `Application`): it, or every error.
pub fn compile_application(root: Node) -> Result<Application, Vec<Diagnostic>> {
    let mut cx = Cx::default();
    let app = cx.application(&root);
    match (app, cx.diags.iter().any(|d| d.severity == crate::diag::Severity::Error)) {
        (Some(a), false) => Ok(a),
        _ => Err(cx.diags),
    }
}

#[derive(Default)]
struct Cx {
    diags: Vec<Diagnostic>,
}

fn is_valid_var_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !s.as_bytes()[0].is_ascii_digit()
}

impl Cx {
    fn err(&mut self, span: Span, msg: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(span, msg));
        self.diags.last_mut().expect("just pushed")
    }

    fn unknown_key(&mut self, key: &Key, place: &str, allowed: &[&str]) {
        let d = self.err(key.span, format!("unknown keyword `{}` in {place}", key.name));
        match did_you_mean(&key.name, allowed.iter().copied()) {
            Some(s) => d.hint = Some(format!("did you mean `{s}`?")),
            None => d.hint = Some(format!("allowed here: {}", allowed.join(", "))),
        }
    }

    fn type_err(&mut self, n: &Node, what: &str, expected: &str) {
        self.err(n.span, format!("`{what}` must be {expected}, found {}", n.kind()));
    }

    /// Mapping entries, or an error if the node is not a mapping.
    fn map<'n>(&mut self, n: &'n Node, what: &str) -> &'n [(Key, Node)] {
        match &n.value {
            Value::Map(m) => m,
            _ => {
                self.type_err(n, what, "a mapping");
                &[]
            }
        }
    }

    fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        match &n.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) => n.scalar_string(),
            _ => {
                self.type_err(n, what, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, n: &Node, what: &str) -> Option<bool> {
        match n.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.type_err(n, what, "`true` or `false`");
                None
            }
        }
    }

    fn int(&mut self, n: &Node, what: &str, min: i64, max: i64) -> Option<i64> {
        match n.value {
            Value::Int(i) if (min..=max).contains(&i) => Some(i),
            Value::Int(i) => {
                self.err(n.span, format!("`{what}` must be between {min} and {max}, found {i}"));
                None
            }
            _ => {
                self.type_err(n, what, "an integer");
                None
            }
        }
    }

    /// An exit code or a list of them (0..=255).
    fn exit_codes(&mut self, n: &Node, what: &str) -> Vec<i32> {
        match &n.value {
            Value::Seq(items) => items.iter().filter_map(|i| self.int(i, what, 0, 255)).map(|i| i as i32).collect(),
            _ => self.int(n, what, 0, 255).map(|i| i as i32).into_iter().collect(),
        }
    }

    /// A string or a list of strings.
    fn strings(&mut self, n: &Node, what: &str) -> Vec<String> {
        match &n.value {
            Value::Seq(items) => items.iter().filter_map(|i| self.string(i, &format!("{what}[]"))).collect(),
            Value::Null => Vec::new(),
            _ => self.string(n, what).into_iter().collect(),
        }
    }

    fn string_list(&mut self, n: &Node, what: &str) -> Vec<String> {
        match &n.value {
            Value::Seq(items) => items.iter().filter_map(|i| self.string(i, &format!("{what}[]"))).collect(),
            _ => {
                self.type_err(n, what, "a list of strings");
                Vec::new()
            }
        }
    }

    /// `script`-like values: a string or a list of strings, nested lists (from `!reference`)
    /// flattened up to 10 levels, as GitLab does.
    fn script(&mut self, n: &Node, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.script_into(n, what, 0, &mut out);
        out
    }

    fn script_into(&mut self, n: &Node, what: &str, depth: usize, out: &mut Vec<String>) {
        match &n.value {
            Value::Str(s) => out.push(s.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => out.push(n.scalar_string().unwrap_or_default()),
            Value::Seq(items) if depth < 10 => {
                for i in items {
                    self.script_into(i, what, depth + 1, out);
                }
            }
            Value::Map(m) if depth > 0 => {
                let first = m.first().map(|(k, _)| k.name.clone()).unwrap_or_default();
                self.err(n.span, format!("`{what}` line is a mapping, not a command")).hint =
                    Some(format!("a command containing `: ` must be quoted, e.g. `- \"{first}: ...\"`"));
            }
            Value::Null if depth > 0 => {}
            _ => self.type_err(n, what, "a string or a list of strings"),
        }
    }

    fn duration(&mut self, n: &Node, what: &str) -> Option<std::time::Duration> {
        let s = match &n.value {
            Value::Int(i) if *i >= 0 => return Some(std::time::Duration::from_secs(*i as u64)),
            Value::Str(s) => s.clone(),
            _ => {
                self.type_err(n, what, "a duration like `30m` or `1h 30m`");
                return None;
            }
        };
        match duration::parse(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(n.span, format!("invalid duration `{s}` in `{what}`: {e}")).hint =
                    Some("write durations like `90`, `45s`, `10m`, `1h 30m` or `2 hours`".into());
                None
            }
        }
    }

    fn when(&mut self, n: &Node, what: &str, allowed: &[&str]) -> Option<When> {
        let s = self.string(n, what)?;
        let w = match s.as_str() {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "delayed" => When::Delayed,
            "never" => When::Never,
            _ => When::Never,
        };
        if !allowed.contains(&s.as_str()) {
            let d = self.err(n.span, format!("`{what}` cannot be `{s}`"));
            d.hint = Some(match did_you_mean(&s, allowed.iter().copied()) {
                Some(m) => format!("did you mean `{m}`?"),
                None => format!("allowed: {}", allowed.join(", ")),
            });
            return None;
        }
        Some(w)
    }

    fn variables(&mut self, n: &Node, what: &str) -> Vec<Variable> {
        let mut out = Vec::new();
        if matches!(n.value, Value::Null) {
            return out;
        }
        for (k, v) in self.map(n, what) {
            if !is_valid_var_name(&k.name) {
                self.err(k.span, format!("invalid variable name `{}`", k.name)).hint =
                    Some("variable names use letters, digits and `_`, and do not start with a digit".into());
                continue;
            }
            let mut var = Variable {
                name: k.name.clone(),
                value: String::new(),
                expand: true,
                masked: false,
                description: None,
                span: k.span,
            };
            match &v.value {
                Value::Map(m) => {
                    for (vk, vv) in m {
                        match vk.name.as_str() {
                            "value" => {
                                var.value = match &vv.value {
                                    Value::Bool(_) => vv.scalar_string().unwrap_or_default(),
                                    _ => self.string(vv, &format!("{what}.{}.value", k.name)).unwrap_or_default(),
                                }
                            }
                            "description" => var.description = self.string(vv, "description"),
                            "expand" => {
                                var.expand = self.boolean(vv, &format!("{what}.{}.expand", k.name)).unwrap_or(true)
                            }
                            "masked" => {
                                var.masked = self.boolean(vv, &format!("{what}.{}.masked", k.name)).unwrap_or(false)
                            }
                            "options" => {}
                            _ => self.unknown_key(
                                vk,
                                &format!("variable `{}`", k.name),
                                &["value", "description", "expand", "masked", "options"],
                            ),
                        }
                    }
                }
                Value::Null => {}
                Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                    var.value = v.scalar_string().unwrap_or_default()
                }
                _ => {
                    self.type_err(v, &format!("{what}.{}", k.name), "a string or a mapping with `value`");
                    continue;
                }
            }
            if var.masked && var.value.len() < 8 {
                self.err(var.span, format!("masked variable `{}` must be at least 8 characters long", var.name)).hint =
                    Some("masking very short values would garble the output (GitLab has the same rule)".into());
            }
            out.push(var);
        }
        out
    }

    fn if_expr(&mut self, n: &Node, what: &str) -> Option<IfExpr> {
        let s = self.string(n, what)?;
        match expr::parse(&s) {
            Ok(e) => Some(IfExpr { source: s, expr: e }),
            Err(e) => {
                // Point inside the expression when it sits on one line of the file.
                let span = if n.span.start_line == n.span.end_line {
                    n.span.sub(n.content_offset + e.offset as u32, e.len as u32)
                } else {
                    n.span
                };
                self.err(span, format!("invalid `{what}` expression: {}", e.message)).hint = Some(
                    "expressions look like `$CI_COMMIT_BRANCH == \"main\" && $VAR =~ /^v\\d+/` (quote the whole expression in YAML)".into(),
                );
                None
            }
        }
    }

    fn rules(&mut self, n: &Node, what: &str, allowed_when: &[&str]) -> Vec<Rule> {
        let items = match &n.value {
            Value::Seq(items) => items.as_slice(),
            _ => {
                self.type_err(n, what, "a list of rules");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in items {
            let mut rule = Rule {
                span: item.span,
                if_: None,
                changes: None,
                exists: None,
                when: None,
                start_in: None,
                allow_failure: None,
                variables: Vec::new(),
                needs: None,
            };
            // A rule may itself be a list when it came from a `!reference`.
            if let Value::Seq(_) = item.value {
                out.extend(self.rules(item, what, allowed_when));
                continue;
            }
            for (k, v) in self.map(item, &format!("{what}[]")) {
                match k.name.as_str() {
                    "if" => rule.if_ = self.if_expr(v, &format!("{what}:if")),
                    "changes" => rule.changes = self.changes(v, &format!("{what}:changes")),
                    "exists" => {
                        rule.exists = Some(match &v.value {
                            Value::Map(m) => {
                                let mut paths = Vec::new();
                                for (ek, ev) in m {
                                    match ek.name.as_str() {
                                        "paths" => paths = self.strings(ev, "exists:paths"),
                                        "project" | "ref" => {
                                            self.err(
                                                ek.span,
                                                format!("`exists:{}` is not supported offline yet", ek.name),
                                            );
                                        }
                                        _ => self.unknown_key(ek, "`exists`", &["paths", "project", "ref"]),
                                    }
                                }
                                paths
                            }
                            _ => self.strings(v, &format!("{what}:exists")),
                        })
                    }
                    "when" => rule.when = self.when(v, &format!("{what}:when"), allowed_when),
                    "start_in" => rule.start_in = self.duration(v, "start_in"),
                    "allow_failure" => rule.allow_failure = self.boolean(v, &format!("{what}:allow_failure")),
                    "variables" => rule.variables = self.variables(v, &format!("{what}:variables")),
                    "needs" => rule.needs = Some(self.needs(v)),
                    _ => self.unknown_key(
                        k,
                        &format!("`{what}`"),
                        &["if", "changes", "exists", "when", "start_in", "allow_failure", "variables", "needs"],
                    ),
                }
            }
            out.push(rule);
        }
        out
    }

    fn changes(&mut self, n: &Node, what: &str) -> Option<Changes> {
        match &n.value {
            Value::Map(m) => {
                let mut c = Changes { paths: Vec::new(), compare_to: None };
                for (k, v) in m {
                    match k.name.as_str() {
                        "paths" => c.paths = self.strings(v, &format!("{what}:paths")),
                        "compare_to" => c.compare_to = self.string(v, &format!("{what}:compare_to")),
                        _ => self.unknown_key(k, &format!("`{what}`"), &["paths", "compare_to"]),
                    }
                }
                Some(c)
            }
            _ => Some(Changes { paths: self.strings(n, what), compare_to: None }),
        }
    }

    fn filter(&mut self, n: &Node, what: &str) -> Option<Filter> {
        match &n.value {
            Value::Map(m) => {
                let mut f = Filter::default();
                for (k, v) in m {
                    match k.name.as_str() {
                        "refs" => f.refs = self.strings(v, &format!("{what}:refs")),
                        "variables" => {
                            let list = match &v.value {
                                Value::Seq(items) => items.clone(),
                                _ => vec![v.clone()],
                            };
                            f.variables =
                                list.iter().filter_map(|i| self.if_expr(i, &format!("{what}:variables"))).collect();
                        }
                        "changes" => {
                            f.changes = self.changes(v, &format!("{what}:changes")).map(|c| c.paths).unwrap_or_default()
                        }
                        "kubernetes" => {}
                        _ => self.unknown_key(k, &format!("`{what}`"), &["refs", "variables", "changes", "kubernetes"]),
                    }
                }
                Some(f)
            }
            _ => Some(Filter { refs: self.strings(n, what), ..Filter::default() }),
        }
    }

    fn matrix(&mut self, n: &Node, what: &str) -> Vec<Vec<(String, Vec<String>)>> {
        let items = match &n.value {
            Value::Seq(items) => items.as_slice(),
            _ => {
                self.type_err(n, what, "a list of variable mappings");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in items {
            let mut entry = Vec::new();
            for (k, v) in self.map(item, what) {
                if !is_valid_var_name(&k.name) {
                    self.err(k.span, format!("invalid variable name `{}` in `{what}`", k.name));
                    continue;
                }
                let values = match &v.value {
                    Value::Seq(vals) => {
                        vals.iter().filter_map(|x| self.string(x, &format!("{what}.{}", k.name))).collect()
                    }
                    _ => self.string(v, &format!("{what}.{}", k.name)).into_iter().collect(),
                };
                entry.push((k.name.clone(), values));
            }
            out.push(entry);
        }
        out
    }

    fn needs(&mut self, n: &Node) -> Vec<Need> {
        let items = match &n.value {
            Value::Seq(items) => items.as_slice(),
            Value::Null => &[],
            _ => {
                self.type_err(n, "needs", "a list of job names");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in items {
            match &item.value {
                Value::Str(s) => out.push(Need {
                    job: s.clone(),
                    span: item.span,
                    artifacts: true,
                    optional: false,
                    matrix: None,
                    pipeline: None,
                }),
                Value::Map(m) => {
                    let mut need = Need {
                        job: String::new(),
                        span: item.span,
                        artifacts: true,
                        optional: false,
                        matrix: None,
                        pipeline: None,
                    };
                    for (k, v) in m {
                        match k.name.as_str() {
                            "job" => {
                                need.job = self.string(v, "needs:job").unwrap_or_default();
                                need.span = v.span;
                            }
                            "artifacts" => need.artifacts = self.boolean(v, "needs:artifacts").unwrap_or(true),
                            "optional" => need.optional = self.boolean(v, "needs:optional").unwrap_or(false),
                            "parallel" => {
                                for (pk, pv) in self.map(v, "needs:parallel") {
                                    if pk.name == "matrix" {
                                        need.matrix = Some(self.matrix(pv, "needs:parallel:matrix"));
                                    } else {
                                        self.unknown_key(pk, "`needs:parallel`", &["matrix"]);
                                    }
                                }
                            }
                            "pipeline" => need.pipeline = self.string(v, "needs:pipeline"),
                            "project" | "ref" => {
                                self.err(
                                    k.span,
                                    format!(
                                        "`needs:{}` (another project's artifacts) is not supported offline yet",
                                        k.name
                                    ),
                                )
                                .hint = Some(
                                    "have this project's pipeline make the artifact, or fetch it in the script".into(),
                                );
                            }
                            _ => self.unknown_key(
                                k,
                                "`needs`",
                                &["job", "artifacts", "optional", "parallel", "pipeline", "project", "ref"],
                            ),
                        }
                    }
                    if need.job.is_empty() && need.pipeline.is_some() {
                        self.err(
                            item.span,
                            "`needs:pipeline` needs `job:` (the job of that pipeline whose artifacts to take)",
                        )
                        .hint = Some("e.g. `- pipeline: $PARENT_PIPELINE_ID` with `job: generate`".into());
                        continue;
                    }
                    if need.job.is_empty() && !m.iter().any(|(k, _)| matches!(k.name.as_str(), "pipeline" | "project"))
                    {
                        self.err(item.span, "`needs` entry has no `job`").hint =
                            Some("write `- job: name` or just `- name`".into());
                        continue;
                    }
                    out.push(need);
                }
                _ => self.type_err(item, "needs[]", "a job name or a mapping with `job`"),
            }
        }
        out
    }

    fn artifacts(&mut self, n: &Node) -> Artifacts {
        let mut a = Artifacts::default();
        for (k, v) in self.map(n, "artifacts") {
            match k.name.as_str() {
                "paths" => a.paths = self.string_list(v, "artifacts:paths"),
                "exclude" => a.exclude = self.string_list(v, "artifacts:exclude"),
                "untracked" => a.untracked = self.boolean(v, "artifacts:untracked").unwrap_or(false),
                "when" => {
                    a.when = match self.string(v, "artifacts:when").as_deref() {
                        Some("on_success") | None => ArtifactsWhen::OnSuccess,
                        Some("on_failure") => ArtifactsWhen::OnFailure,
                        Some("always") => ArtifactsWhen::Always,
                        Some(other) => {
                            self.err(v.span, format!("`artifacts:when` cannot be `{other}`")).hint =
                                Some("allowed: on_success, on_failure, always".into());
                            ArtifactsWhen::OnSuccess
                        }
                    }
                }
                "expire_in" => {
                    let s = self.string(v, "artifacts:expire_in");
                    if let Some(s) = &s
                        && s != "never"
                    {
                        let _ = self.duration(v, "artifacts:expire_in");
                    }
                    a.expire_in = s;
                }
                "name" => a.name = self.string(v, "artifacts:name"),
                "expose_as" | "public" | "access" => {}
                "reports" => {
                    for (rk, rv) in self.map(v, "artifacts:reports") {
                        if rk.name == "coverage_report" {
                            // GitLab's mapping form: `{coverage_format: cobertura|jacoco, path: FILE}`.
                            let mut path = Vec::new();
                            for (ck, cv) in self.map(rv, "artifacts:reports:coverage_report") {
                                match ck.name.as_str() {
                                    "path" => {
                                        path = self
                                            .string(cv, "artifacts:reports:coverage_report:path")
                                            .into_iter()
                                            .collect()
                                    }
                                    "coverage_format" => {
                                        let f = self.string(cv, "artifacts:reports:coverage_report:coverage_format");
                                        if let Some(f) = f.filter(|f| f != "cobertura" && f != "jacoco") {
                                            self.err(cv.span, format!("`coverage_format` cannot be `{f}`")).hint =
                                                Some("GitLab reads `cobertura` or `jacoco`".into());
                                        }
                                    }
                                    _ => self.unknown_key(ck, "`coverage_report`", &["coverage_format", "path"]),
                                }
                            }
                            a.other_reports.insert(rk.name.clone(), path);
                            continue;
                        }
                        let files = self.strings(rv, &format!("artifacts:reports:{}", rk.name));
                        match rk.name.as_str() {
                            "dotenv" => a.dotenv = files,
                            "junit" => a.junit = files,
                            _ => {
                                a.other_reports.insert(rk.name.clone(), files);
                            }
                        }
                    }
                }
                _ => self.unknown_key(
                    k,
                    "`artifacts`",
                    &[
                        "paths",
                        "exclude",
                        "untracked",
                        "when",
                        "expire_in",
                        "name",
                        "reports",
                        "expose_as",
                        "public",
                        "access",
                    ],
                ),
            }
        }
        a
    }

    fn cache(&mut self, n: &Node) -> Vec<Cache> {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            _ => vec![n],
        };
        if items.len() > 4 {
            self.err(n.span, format!("a job may have at most 4 caches, found {}", items.len()));
        }
        let mut out = Vec::new();
        for item in items {
            let mut c = Cache {
                key: CacheKey::Literal("default".into()),
                paths: Vec::new(),
                untracked: false,
                policy: CachePolicy::PullPush,
                policy_var: None,
                when: ArtifactsWhen::OnSuccess,
                fallback_keys: Vec::new(),
            };
            for (k, v) in self.map(item, "cache") {
                match k.name.as_str() {
                    "key" => match &v.value {
                        Value::Map(m) => {
                            let (mut files, mut prefix) = (Vec::new(), None);
                            for (kk, kv) in m {
                                match kk.name.as_str() {
                                    "files" => files = self.string_list(kv, "cache:key:files"),
                                    "prefix" => prefix = self.string(kv, "cache:key:prefix"),
                                    _ => self.unknown_key(kk, "`cache:key`", &["files", "prefix"]),
                                }
                            }
                            if files.is_empty() || files.len() > 2 {
                                self.err(v.span, "`cache:key:files` must list one or two files");
                            }
                            c.key = CacheKey::Files { files, prefix };
                        }
                        _ => {
                            if let Some(s) = self.string(v, "cache:key") {
                                if s.contains('/') || s == "." || s == ".." {
                                    self.err(v.span, format!("`cache:key` `{s}` may not contain `/` or be `.`/`..`"));
                                }
                                c.key = CacheKey::Literal(s);
                            }
                        }
                    },
                    "paths" => c.paths = self.string_list(v, "cache:paths"),
                    "untracked" => c.untracked = self.boolean(v, "cache:untracked").unwrap_or(false),
                    "policy" => {
                        c.policy = match self.string(v, "cache:policy").as_deref() {
                            Some("pull") => CachePolicy::Pull,
                            Some("push") => CachePolicy::Push,
                            Some("pull-push") | None => CachePolicy::PullPush,
                            Some(var) if var.contains('$') => {
                                c.policy_var = Some((var.to_string(), v.span));
                                CachePolicy::PullPush
                            }
                            Some(other) => {
                                self.err(v.span, format!("`cache:policy` cannot be `{other}`")).hint =
                                    Some("allowed: pull, push, pull-push".into());
                                CachePolicy::PullPush
                            }
                        }
                    }
                    "when" => {
                        c.when = match self.string(v, "cache:when").as_deref() {
                            Some("on_success") | None => ArtifactsWhen::OnSuccess,
                            Some("on_failure") => ArtifactsWhen::OnFailure,
                            Some("always") => ArtifactsWhen::Always,
                            Some(other) => {
                                self.err(v.span, format!("`cache:when` cannot be `{other}`")).hint =
                                    Some("allowed: on_success, on_failure, always".into());
                                ArtifactsWhen::OnSuccess
                            }
                        }
                    }
                    "fallback_keys" => c.fallback_keys = self.string_list(v, "cache:fallback_keys"),
                    "unprotect" => {}
                    _ => self.unknown_key(
                        k,
                        "`cache`",
                        &["key", "paths", "untracked", "policy", "when", "fallback_keys", "unprotect"],
                    ),
                }
            }
            out.push(c);
        }
        out
    }

    fn inherit(&mut self, n: &Node) -> (Inherit, Inherit) {
        let (mut default, mut variables) = (Inherit::All, Inherit::All);
        for (k, v) in self.map(n, "inherit") {
            let value = match &v.value {
                Value::Bool(true) => Inherit::All,
                Value::Bool(false) => Inherit::None,
                Value::Seq(_) => Inherit::Only(self.string_list(v, &format!("inherit:{}", k.name))),
                _ => {
                    self.type_err(v, &format!("inherit:{}", k.name), "`true`, `false` or a list of names");
                    Inherit::All
                }
            };
            match k.name.as_str() {
                "default" => {
                    if let Inherit::Only(list) = &value {
                        for (i, name) in list.iter().enumerate() {
                            if !DEFAULT_KEYWORDS.contains(&name.as_str()) {
                                let span = match &v.value {
                                    Value::Seq(items) => items[i].span,
                                    _ => v.span,
                                };
                                self.err(span, format!("`{name}` is not a `default` keyword")).hint = Some(format!(
                                    "`inherit:default` lists keywords of `default`: {}",
                                    DEFAULT_KEYWORDS.join(", ")
                                ));
                            }
                        }
                    }
                    default = value;
                }
                "variables" => variables = value,
                _ => self.unknown_key(k, "`inherit`", &["default", "variables"]),
            }
        }
        (default, variables)
    }

    /// GitLab's pull policies, one or a list, each checked.
    fn pull_policies(&mut self, v: &Node, what: &str) -> Vec<String> {
        let policies = self.strings(v, what);
        for p in &policies {
            if !matches!(p.as_str(), "always" | "if-not-present" | "never") {
                self.err(v.span, format!("`{what}` cannot be `{p}`")).hint =
                    Some("GitLab's policies: always, if-not-present, never".into());
            }
        }
        policies
    }

    /// `image:`'s mapping form besides `name`, each key checked at its place.
    fn image_options(&mut self, n: &Node) -> crate::model::ImageOptions {
        let mut o = crate::model::ImageOptions::default();
        let Value::Map(m) = &n.value else { return o };
        for (k, v) in m {
            match k.name.as_str() {
                "name" => {}
                "entrypoint" => o.entrypoint = Some(self.string_list(v, "image:entrypoint")),
                "pull_policy" => o.pull_policy = self.pull_policies(v, "image:pull_policy"),
                "docker" => {
                    for (dk, dv) in self.map(v, "image:docker") {
                        match dk.name.as_str() {
                            "user" => o.user = self.string(dv, "image:docker:user"),
                            "platform" => o.platform = self.string(dv, "image:docker:platform"),
                            _ => self.unknown_key(dk, "`image:docker`", &["user", "platform"]),
                        }
                    }
                }
                _ => self.unknown_key(k, "`image`", &["name", "entrypoint", "pull_policy", "docker"]),
            }
        }
        o
    }

    /// `trigger:` for a child pipeline: `include` (a path, or a list of `local:` and
    /// `artifact:` + `job:`), `strategy: depend`, `forward`. Multi-project pipelines
    /// (`trigger: group/project`, `project:`) need a server that has the other project.
    fn trigger(&mut self, n: &Node) -> Option<crate::model::Trigger> {
        use crate::model::TriggerInclude;
        let multi_project = |cx: &mut Self, span| {
            cx.err(span, "`trigger:project` starts another project's pipeline, which a local run has no access to")
                .hint = Some(
                "run that project's pipeline with `slipway run` in its checkout, or start a child pipeline of this project with `trigger:include`"
                    .into(),
            );
        };
        let Value::Map(m) = &n.value else {
            if matches!(n.value, Value::Str(_)) {
                multi_project(self, n.span);
            } else {
                self.type_err(n, "trigger", "a mapping with `include:`");
            }
            return None;
        };
        let mut t = crate::model::Trigger {
            include: Vec::new(),
            depend: false,
            forward_yaml_variables: true,
            forward_pipeline_variables: false,
        };
        let mut included = false;
        for (k, v) in m {
            match k.name.as_str() {
                "include" => {
                    included = true;
                    let items: Vec<&Node> = match &v.value {
                        Value::Seq(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    for item in items {
                        match &item.value {
                            Value::Str(path) => t.include.push(TriggerInclude::Local { local: path.clone() }),
                            Value::Map(im) => {
                                let get = |name: &str| im.iter().find(|(k, _)| k.name == name).map(|(_, v)| v);
                                if let Some(local) = get("local") {
                                    if let Some(local) = self.string(local, "trigger:include:local") {
                                        t.include.push(TriggerInclude::Local { local });
                                    }
                                } else if let Some(artifact) = get("artifact") {
                                    let artifact = self.string(artifact, "trigger:include:artifact");
                                    let job = match get("job") {
                                        Some(j) => self.string(j, "trigger:include:job"),
                                        None => {
                                            self.err(item.span, "`trigger:include:artifact` needs `job:`").hint =
                                                Some("name the job whose artifacts hold the file".into());
                                            None
                                        }
                                    };
                                    if let (Some(artifact), Some(job)) = (artifact, job) {
                                        t.include.push(TriggerInclude::Artifact { artifact, job });
                                    }
                                } else if let Some((ik, _)) = im.iter().find(|(k, _)| {
                                    matches!(k.name.as_str(), "project" | "template" | "remote" | "component")
                                }) {
                                    self.err(
                                        ik.span,
                                        format!(
                                            "`trigger:include:{}` is not supported for child pipelines yet",
                                            ik.name
                                        ),
                                    )
                                    .hint = Some("vendor the file into the project and use `local:`".into());
                                } else {
                                    self.err(
                                        item.span,
                                        "`trigger:include` entries are `local:` or `artifact:` + `job:`",
                                    );
                                }
                                for (ik, _) in im {
                                    if !matches!(
                                        ik.name.as_str(),
                                        "local"
                                            | "artifact"
                                            | "job"
                                            | "project"
                                            | "template"
                                            | "remote"
                                            | "component"
                                            | "ref"
                                            | "file"
                                            | "inputs"
                                    ) {
                                        self.unknown_key(ik, "`trigger:include`", &["local", "artifact", "job"]);
                                    }
                                }
                            }
                            _ => self.type_err(item, "trigger:include[]", "a path or a mapping"),
                        }
                    }
                }
                "strategy" => match self.string(v, "trigger:strategy").as_deref() {
                    Some("depend") => t.depend = true,
                    Some(other) => {
                        self.err(v.span, format!("`trigger:strategy` cannot be `{other}`")).hint = Some(
                            "GitLab's strategy is `depend`: the job waits for the child and takes its status".into(),
                        );
                    }
                    None => {}
                },
                "forward" => {
                    for (fk, fv) in self.map(v, "trigger:forward") {
                        match fk.name.as_str() {
                            "yaml_variables" => {
                                t.forward_yaml_variables =
                                    self.boolean(fv, "trigger:forward:yaml_variables").unwrap_or(true)
                            }
                            "pipeline_variables" => {
                                t.forward_pipeline_variables =
                                    self.boolean(fv, "trigger:forward:pipeline_variables").unwrap_or(false)
                            }
                            _ => self.unknown_key(fk, "`trigger:forward`", &["yaml_variables", "pipeline_variables"]),
                        }
                    }
                }
                "project" | "branch" => multi_project(self, k.span),
                _ => self.unknown_key(k, "`trigger`", &["include", "strategy", "forward", "project", "branch"]),
            }
        }
        if !included {
            if !m.iter().any(|(k, _)| k.name == "project") {
                self.err(n.span, "`trigger` needs `include:` (a child pipeline's file)").hint =
                    Some("e.g. `trigger: {include: ci/child.yml, strategy: depend}`".into());
            }
            return None;
        }
        Some(t)
    }

    /// One of `services:`: an image's name, or GitLab's mapping (`name`, `alias`, `entrypoint`,
    /// `command`, `variables`, `pull_policy`).
    fn job_service(&mut self, n: &Node) -> Option<crate::model::Service> {
        let Value::Map(m) = &n.value else {
            return self.string(n, "services[]").map(|name| crate::model::Service { name, ..Default::default() });
        };
        let mut s = crate::model::Service::default();
        let mut named = false;
        for (k, v) in m {
            match k.name.as_str() {
                "name" => {
                    if let Some(name) = self.string(v, "services[]:name") {
                        s.name = name;
                        named = true;
                    }
                }
                // GitLab splits the alias at commas and spaces.
                "alias" => {
                    s.alias = self
                        .string(v, "services[]:alias")
                        .unwrap_or_default()
                        .split([',', ' '])
                        .filter(|a| !a.is_empty())
                        .map(str::to_string)
                        .collect();
                    for a in &s.alias {
                        if !a.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                            self.err(v.span, format!("`services[]:alias` `{a}` is not a host name")).hint =
                                Some("an alias is a host name: letters, digits, `-`, `_` and `.`".into());
                        }
                    }
                }
                "entrypoint" => s.entrypoint = Some(self.string_list(v, "services[]:entrypoint")),
                "command" => s.command = Some(self.string_list(v, "services[]:command")),
                "variables" => {
                    s.variables =
                        self.variables(v, "services[]:variables").into_iter().map(|var| (var.name, var.value)).collect()
                }
                "pull_policy" => s.pull_policy = self.pull_policies(v, "services[]:pull_policy"),
                _ => self.unknown_key(
                    k,
                    "a service",
                    &["name", "alias", "entrypoint", "command", "variables", "pull_policy"],
                ),
            }
        }
        if !named {
            self.err(n.span, "a service in its mapping form needs `name:`").hint =
                Some("name the image: `- name: postgres:15`".into());
            return None;
        }
        Some(s)
    }

    fn image_name(&mut self, n: &Node, what: &str) -> Option<String> {
        match &n.value {
            Value::Map(m) => {
                m.iter().find(|(k, _)| k.name == "name").and_then(|(_, v)| self.string(v, &format!("{what}:name")))
            }
            _ => self.string(n, what),
        }
    }

    // ---------------------------------------------------------------------------------------

    fn percent(&mut self, n: &Node, what: &str) -> Option<f64> {
        let v = match &n.value {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            Value::Str(s) => match s.trim().trim_end_matches('%').trim().parse::<f64>() {
                Ok(v) => v,
                Err(_) => {
                    self.type_err(n, what, "a percentage like `70` or `70%`");
                    return None;
                }
            },
            _ => {
                self.type_err(n, what, "a percentage like `70` or `70%`");
                return None;
            }
        };
        if !(0.0..=100.0).contains(&v) {
            self.err(n.span, format!("`{what}` must be between 0 and 100, found {v}"));
            return None;
        }
        Some(v)
    }

    fn count(&mut self, n: &Node, what: &str) -> Option<u64> {
        self.int(n, what, 0, i64::MAX).map(|v| v as u64)
    }

    /// The `images:` section.
    fn images_section(&mut self, n: &Node) -> ImagesConfig {
        let mut c = ImagesConfig::default();
        for (k, v) in self.map(n, "images") {
            match k.name.as_str() {
                "name" => c.name = self.string(v, "images:name"),
                "registry" => {
                    c.registry = self.string(v, "images:registry");
                    if let Some(r) = &c.registry {
                        let host = r.split('/').next().unwrap_or("");
                        if !r.contains('/') || !(host.contains('.') || host.contains(':') || host == "localhost") {
                            self.err(v.span, format!("`images:registry` `{r}` must be host[:port]/repository")).hint =
                                Some("e.g. registry.example.com/team/app or 127.0.0.1:5000/app (the tags come from `tags`)".into());
                        } else if r.rsplit('/').next().is_some_and(|last| last.contains(':')) {
                            self.err(v.span, "`images:registry` holds no tag; list tags under `images:tags`");
                        }
                    }
                }
                "tags" => c.tags = self.strings(v, "images:tags"),
                "user" => c.user = self.int(v, "images:user", 0, u32::MAX as i64).map(|u| u as u32),
                "ports" => {
                    c.ports = match &v.value {
                        Value::Seq(items) => items.iter().filter_map(|i| i.scalar_string()).collect(),
                        _ => v.scalar_string().into_iter().collect(),
                    }
                }
                "env" => c.env = self.variables(v, "images:env").into_iter().map(|var| (var.name, var.value)).collect(),
                "tzdata" => c.tzdata = self.boolean(v, "images:tzdata").unwrap_or(false),
                "base" => c.base = self.string(v, "images:base"),
                "files" => {
                    for (src, dest) in self.map(v, "images:files") {
                        let Some(d) = self.string(dest, &format!("images:files:{}", src.name)) else { continue };
                        if !crate::model::is_image_path(&d) {
                            self.err(
                                dest.span,
                                format!(
                                    "`images:files:{}`: `{d}` must be an absolute path in the image, without `..`",
                                    src.name
                                ),
                            )
                            .hint = Some("map a project path to where it goes, e.g. `kodata: /var/run/ko`".into());
                        } else {
                            c.files.push((src.name.clone(), d));
                        }
                    }
                }
                _ => self.unknown_key(
                    k,
                    "`images`",
                    &["name", "registry", "tags", "user", "ports", "env", "tzdata", "base", "files"],
                ),
            }
        }
        c
    }

    /// The `go:` section.
    fn go_section(&mut self, n: &Node) -> GoConfig {
        let mut g = GoConfig::default();
        for (k, v) in self.map(n, "go") {
            match k.name.as_str() {
                "packages" => g.packages = self.strings(v, "go:packages"),
                "platforms" => {
                    let items: Vec<Node> = match &v.value {
                        Value::Seq(items) => items.clone(),
                        _ => vec![v.clone()],
                    };
                    for item in items {
                        let Some(p) = self.string(&item, "go:platforms[]") else { continue };
                        for one in p.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                            match one.split_once('/') {
                                Some((os, arch)) if !os.is_empty() && !arch.is_empty() && !arch.contains('/') => {
                                    g.platforms.push(one.to_string())
                                }
                                _ => {
                                    self.err(item.span, format!("platform `{one}` is not os/arch")).hint = Some(
                                        "write platforms as `go tool dist list` prints them, e.g. linux/amd64".into(),
                                    );
                                }
                            }
                        }
                    }
                }
                "version_var" => {
                    g.version_var = self.string(v, "go:version_var");
                    if let Some(var) = &g.version_var
                        && !var.contains('.')
                    {
                        self.err(
                            v.span,
                            format!("`go:version_var` `{var}` must be package.variable, like main.version"),
                        );
                    }
                }
                "cgo" => g.cgo = self.boolean(v, "go:cgo"),
                _ => self.unknown_key(k, "`go`", &["packages", "platforms", "version_var", "cgo"]),
            }
        }
        g
    }

    /// The `gates:` section.
    fn gates(&mut self, n: &Node) -> Gates {
        let mut g = Gates::default();
        for (k, v) in self.map(n, "gates") {
            let entries = self.map(v, &format!("gates:{}", k.name)).to_vec();
            match k.name.as_str() {
                "coverage" => {
                    for (gk, gv) in &entries {
                        match gk.name.as_str() {
                            "total" => g.coverage_total = self.percent(gv, "gates:coverage:total"),
                            "per_package" => g.coverage_per_package = self.percent(gv, "gates:coverage:per_package"),
                            "no_decrease" => {
                                g.coverage_no_decrease = self.boolean(gv, "gates:coverage:no_decrease").unwrap_or(false)
                            }
                            _ => self.unknown_key(gk, "`gates:coverage`", &["total", "per_package", "no_decrease"]),
                        }
                    }
                }
                "tests" => {
                    for (gk, gv) in &entries {
                        match gk.name.as_str() {
                            "failed" => g.tests_failed = self.count(gv, "gates:tests:failed"),
                            "pass_rate" => g.pass_rate = self.percent(gv, "gates:tests:pass_rate"),
                            "flaky" => g.flaky = self.count(gv, "gates:tests:flaky"),
                            _ => self.unknown_key(gk, "`gates:tests`", &["failed", "pass_rate", "flaky"]),
                        }
                    }
                }
                "vet" => {
                    for (gk, gv) in &entries {
                        match gk.name.as_str() {
                            "findings" => g.vet_findings = self.count(gv, "gates:vet:findings"),
                            "unformatted" => g.unformatted = self.count(gv, "gates:vet:unformatted"),
                            _ => self.unknown_key(gk, "`gates:vet`", &["findings", "unformatted"]),
                        }
                    }
                }
                "mod" => {
                    for (gk, gv) in &entries {
                        match gk.name.as_str() {
                            "tidy" => g.mod_tidy = self.boolean(gv, "gates:mod:tidy").unwrap_or(false),
                            _ => self.unknown_key(gk, "`gates:mod`", &["tidy"]),
                        }
                    }
                }
                "binary" => {
                    for (gk, gv) in &entries {
                        match gk.name.as_str() {
                            "max_size" => {
                                let text = gv.scalar_string().unwrap_or_default();
                                match duration::parse_size(&text) {
                                    Ok(b) => g.binary_size = Some(b),
                                    Err(e) => {
                                        self.err(gv.span, format!("invalid `gates:binary:max_size`: {e}")).hint =
                                            Some("write sizes like `20MB` or `800KB`".into());
                                    }
                                }
                            }
                            _ => self.unknown_key(gk, "`gates:binary`", &["max_size"]),
                        }
                    }
                }
                _ => self.unknown_key(k, "`gates`", &["coverage", "tests", "vet", "mod", "binary"]),
            }
        }
        g
    }

    fn pipeline(&mut self, root: Node) -> Option<Pipeline> {
        let entries = match root.value {
            Value::Map(m) => m,
            Value::Null => {
                self.err(root.span, "the pipeline file is empty").hint =
                    Some("define at least one job with a `script`".into());
                return None;
            }
            _ => {
                self.err(
                    root.span,
                    format!("a pipeline file must be a mapping of jobs and keywords, found {}", root.kind()),
                );
                return None;
            }
        };

        // 1. extends, on every job-like entry (hidden ones included).
        let templates: HashMap<String, Node> = entries
            .iter()
            .filter(|(k, _)| !TOP_KEYWORDS.contains(&k.name.as_str()))
            .map(|(k, v)| (k.name.clone(), v.clone()))
            .collect();
        let mut resolved: HashMap<String, Node> = HashMap::new();
        for (k, _) in &entries {
            if templates.contains_key(&k.name) {
                let mut stack = Vec::new();
                self.resolve_extends(&k.name, &templates, &mut resolved, &mut stack);
            }
        }

        // 2. !reference, against the extended jobs and the other top-level entries.
        let mut top: HashMap<String, Node> = entries.iter().map(|(k, v)| (k.name.clone(), v.clone())).collect();
        for (name, node) in &resolved {
            top.insert(name.clone(), node.clone());
        }
        let entries: Vec<(Key, Node)> = entries
            .into_iter()
            .map(|(k, v)| {
                let v = resolved.get(&k.name).cloned().unwrap_or(v);
                let v = self.resolve_refs(v, &top, 0);
                (k, v)
            })
            .collect();

        // 3. Top-level keywords.
        let mut stages: Option<(Vec<String>, Span)> = None;
        let mut variables = Vec::new();
        let mut workflow = None;
        let mut defaults: Vec<(Key, Node)> = Vec::new();
        let mut gates = None;
        let mut go = None;
        let mut images = None;
        let mut environments = Vec::new();
        let mut alerts = None;
        let mut jobs_raw = Vec::new();
        for (k, v) in &entries {
            match k.name.as_str() {
                "stages" => {
                    let list = self.strings(v, "stages");
                    let mut seen = HashSet::new();
                    for s in &list {
                        if !seen.insert(s.clone()) {
                            self.err(v.span, format!("stage `{s}` is listed twice in `stages`"));
                        }
                    }
                    stages = Some((list, v.span));
                }
                "variables" => variables = self.variables(v, "variables"),
                "workflow" => {
                    let mut wf = Workflow { name: None, rules: Vec::new() };
                    for (wk, wv) in self.map(v, "workflow") {
                        match wk.name.as_str() {
                            "rules" => wf.rules = self.rules(wv, "workflow:rules", &["always", "never"]),
                            "name" => wf.name = self.string(wv, "workflow:name"),
                            "auto_cancel" => {}
                            _ => self.unknown_key(wk, "`workflow`", &["rules", "name", "auto_cancel"]),
                        }
                    }
                    workflow = Some(wf);
                }
                "default" => {
                    for (dk, dv) in self.map(v, "default") {
                        if DEFAULT_KEYWORDS.contains(&dk.name.as_str()) {
                            defaults.retain(|(d, _)| d.name != dk.name);
                            defaults.push((dk.clone(), dv.clone()));
                        } else {
                            self.unknown_key(dk, "`default`", DEFAULT_KEYWORDS);
                        }
                    }
                }
                name if GLOBAL_DEFAULTS.contains(&name) => {
                    if !defaults.iter().any(|(d, _)| d.name == name) {
                        defaults.push((k.clone(), v.clone()));
                    }
                }
                name if SLIPWAY_SECTIONS.contains(&name) => {
                    if name == "gates" {
                        gates = Some(self.gates(v));
                    }
                    if name == "go" {
                        go = Some(self.go_section(v));
                    }
                    if name == "images" {
                        images = Some(self.images_section(v));
                    }
                    if name == "environments" {
                        environments = self.environments(v);
                    }
                    if name == "alerts" {
                        // Exactly a Prometheus rule file's content, checked whole; the
                        // server evaluates it (docs/monitoring.md).
                        alerts = Some(self.rule_file(v, "alerts:"));
                    }
                }
                "include" => {}
                name if name.starts_with('.') => {}
                _ => jobs_raw.push((k.clone(), v.clone())),
            }
        }
        // `default:` wins over the deprecated globals whatever the order.
        if let Some((_, dv)) = entries.iter().find(|(k, _)| k.name == "default")
            && let Value::Map(m) = &dv.value
        {
            for (dk, dvv) in m {
                if DEFAULT_KEYWORDS.contains(&dk.name.as_str()) {
                    defaults.retain(|(d, _)| d.name != dk.name);
                    defaults.push((dk.clone(), dvv.clone()));
                }
            }
        }

        let declared: Vec<String> = match &stages {
            Some((s, _)) => s.clone(),
            None => DEFAULT_STAGES.iter().map(|s| s.to_string()).collect(),
        };
        let mut all_stages = vec![".pre".to_string()];
        all_stages.extend(declared.into_iter().filter(|s| s != ".pre" && s != ".post"));
        all_stages.push(".post".to_string());

        // 4. Jobs.
        let mut jobs = Vec::new();
        for (k, v) in jobs_raw {
            if let Some(job) = self.job(&k, &v, &defaults, &all_stages) {
                jobs.push(job);
            }
        }
        if jobs.is_empty() && !self.diags.iter().any(|d| d.severity == crate::diag::Severity::Error) {
            self.err(root.span, "the pipeline has no jobs").hint =
                Some("a job is a top-level key with a `script`, e.g. `test:\\n  script: go test ./...`".into());
        }
        self.check_needs(&jobs, &all_stages);

        Some(Pipeline { stages: all_stages, variables, workflow, jobs, gates, go, images, environments, alerts })
    }

    fn resolve_extends(
        &mut self,
        name: &str,
        templates: &HashMap<String, Node>,
        resolved: &mut HashMap<String, Node>,
        stack: &mut Vec<String>,
    ) -> Option<Node> {
        if let Some(n) = resolved.get(name) {
            return Some(n.clone());
        }
        let node = templates.get(name)?.clone();
        let Value::Map(entries) = &node.value else {
            resolved.insert(name.to_string(), node.clone());
            return Some(node);
        };
        let Some((ext_key, ext)) = entries.iter().find(|(k, _)| k.name == "extends") else {
            resolved.insert(name.to_string(), node.clone());
            return Some(node);
        };
        let parents: Vec<(String, Span)> = match &ext.value {
            Value::Seq(items) => items.iter().filter_map(|i| self.string(i, "extends").map(|s| (s, i.span))).collect(),
            _ => self.string(ext, "extends").map(|s| (s, ext.span)).into_iter().collect(),
        };
        stack.push(name.to_string());
        if stack.len() > MAX_EXTENDS_DEPTH {
            self.err(ext_key.span, format!("`extends` nests more than {MAX_EXTENDS_DEPTH} levels deep"))
                .notes
                .push(format!("chain: {}", stack.join(" → ")));
            stack.pop();
            return None;
        }
        let mut merged = Node::new(Value::Map(Vec::new()), node.span);
        for (parent, span) in parents {
            if stack.contains(&parent) {
                let mut chain = stack.clone();
                chain.push(parent.clone());
                let start = chain.iter().position(|c| *c == parent).unwrap_or(0);
                self.err(span, format!("`extends` cycle: `{name}` extends `{parent}`, which extends it back"))
                    .notes
                    .push(format!("cycle: {}", chain[start..].join(" → ")));
                continue;
            }
            if !templates.contains_key(&parent) {
                let d = self.err(span, format!("`{name}` extends `{parent}`, which is not defined"));
                d.hint =
                    did_you_mean(&parent, templates.keys().map(|s| s.as_str())).map(|s| format!("did you mean `{s}`?"));
                continue;
            }
            if let Some(p) = self.resolve_extends(&parent, templates, resolved, stack) {
                let p = strip_key(p, "extends");
                merged = deep_merge(merged, p);
            }
        }
        stack.pop();
        let own = strip_key(node, "extends");
        let out = deep_merge(merged, own);
        resolved.insert(name.to_string(), out.clone());
        Some(out)
    }

    fn resolve_refs(&mut self, n: Node, top: &HashMap<String, Node>, depth: usize) -> Node {
        match n.value {
            Value::Reference(items) => {
                if depth >= MAX_REFERENCE_DEPTH {
                    self.err(n.span, format!("`!reference` nests more than {MAX_REFERENCE_DEPTH} levels deep"));
                    return Node::new(Value::Null, n.span);
                }
                let path: Vec<String> = items.iter().filter_map(|i| i.scalar_string()).collect();
                if path.is_empty() || path.len() != items.len() {
                    self.err(n.span, "`!reference` takes a list of names, like `!reference [.setup, script]`");
                    return Node::new(Value::Null, n.span);
                }
                let Some(mut cur) = top.get(&path[0]) else {
                    let d = self.err(items[0].span, format!("`!reference` to `{}`, which is not defined", path[0]));
                    d.hint =
                        did_you_mean(&path[0], top.keys().map(|s| s.as_str())).map(|s| format!("did you mean `{s}`?"));
                    return Node::new(Value::Null, n.span);
                };
                for (i, key) in path.iter().enumerate().skip(1) {
                    match cur.get(key) {
                        Some(next) => cur = next,
                        None => {
                            let d = self.err(
                                items[i].span,
                                format!("`!reference`: `{}` has no key `{key}`", path[..i].join(".")),
                            );
                            if let Some(m) = cur.as_map() {
                                d.hint = did_you_mean(key, m.iter().map(|(k, _)| k.name.as_str()))
                                    .map(|s| format!("did you mean `{s}`?"));
                            }
                            return Node::new(Value::Null, n.span);
                        }
                    }
                }
                let target = cur.clone();
                self.resolve_refs(target, top, depth + 1)
            }
            Value::Seq(items) => {
                let items = items.into_iter().map(|i| self.resolve_refs(i, top, depth)).collect();
                Node { value: Value::Seq(items), ..n }
            }
            Value::Map(m) => {
                let m = m.into_iter().map(|(k, v)| (k, self.resolve_refs(v, top, depth))).collect();
                Node { value: Value::Map(m), ..n }
            }
            _ => n,
        }
    }

    fn job(&mut self, key: &Key, node: &Node, defaults: &[(Key, Node)], stages: &[String]) -> Option<Job> {
        let entries = match &node.value {
            Value::Map(m) => m.clone(),
            _ => {
                let d = self
                    .err(key.span, format!("job `{}` must be a mapping of keywords, found {}", key.name, node.kind()));
                d.hint = match did_you_mean(&key.name, TOP_KEYWORDS.iter().chain(JOB_KEYWORDS).copied()) {
                    Some(s) if TOP_KEYWORDS.contains(&s) => Some(format!("did you mean the top-level keyword `{s}`?")),
                    Some(s) => Some(format!("`{s}` is a job keyword: indent it under a job")),
                    None => Some("a job is a mapping with at least `script`".into()),
                };
                return None;
            }
        };
        // A misspelt top-level keyword looks like a job without a script: say what it is.
        if !entries.iter().any(|(k, _)| matches!(k.name.as_str(), "script" | "trigger" | "run"))
            && let Some(s) = did_you_mean(&key.name, TOP_KEYWORDS.iter().copied())
        {
            self.err(key.span, format!("unknown top-level keyword `{}`", key.name)).hint =
                Some(format!("did you mean `{s}`?"));
            return None;
        }
        let mut job = Job {
            name: key.name.clone(),
            span: key.span,
            stage: "test".into(),
            stage_span: key.span,
            script: Vec::new(),
            before_script: Vec::new(),
            after_script: Vec::new(),
            variables: Vec::new(),
            inherit_variables: Inherit::All,
            rules: None,
            only: None,
            except: None,
            when: When::OnSuccess,
            start_in: None,
            allow_failure: AllowFailure::default(),
            needs: None,
            dependencies: None,
            parallel: None,
            retry: Retry::default(),
            timeout: None,
            artifacts: None,
            cache: Vec::new(),
            resource_group: None,
            interruptible: false,
            environment: None,
            coverage: None,
            tags: Vec::new(),
            image: None,
            image_options: Default::default(),
            services: Vec::new(),
            trigger: None,
        };
        if job.name.is_empty() || job.name.len() > 255 {
            self.err(key.span, "job names must be 1 to 255 characters long");
        }
        // inherit first: it decides which defaults apply.
        let (inherit_default, inherit_vars) = match entries.iter().find(|(k, _)| k.name == "inherit") {
            Some((_, v)) => self.inherit(v),
            None => (Inherit::All, Inherit::All),
        };
        job.inherit_variables = inherit_vars;
        let mut all = entries.clone();
        for (dk, dv) in defaults {
            if inherit_default.allows(&dk.name) && !all.iter().any(|(k, _)| k.name == dk.name) {
                all.push((dk.clone(), dv.clone()));
            }
        }
        let mut has_script = false;
        let mut trigger_span = None;
        let mut start_in_node = None;
        for (k, v) in &all {
            let k_in_job = entries.iter().any(|(e, _)| e.name == k.name);
            // `key: null` unsets what the job would inherit (from `extends` or `default:`),
            // as GitLab's merge does.
            if matches!(v.value, Value::Null) && NULL_UNSETS.contains(&k.name.as_str()) {
                continue;
            }
            match k.name.as_str() {
                "script" => {
                    job.script = self.script(v, "script");
                    has_script = true;
                    let literal = match &v.value {
                        Value::Str(_) => true,
                        Value::Seq(items) => items.iter().all(|i| matches!(i.value, Value::Str(_))),
                        _ => false,
                    };
                    // (A `!reference` that found nothing has its own error.)
                    if literal && job.script.iter().all(|l| l.trim().is_empty()) {
                        self.err(v.span, format!("job `{}` has a blank `script`", job.name)).hint = Some(
                            "GitLab refuses a job without a command: give it one (`script: [\"true\"]` does nothing)"
                                .into(),
                        );
                    }
                }
                "before_script" => job.before_script = self.script(v, "before_script"),
                "after_script" => job.after_script = self.script(v, "after_script"),
                "stage" => {
                    if let Some(s) = self.string(v, "stage") {
                        if !stages.contains(&s) {
                            let d = self
                                .err(v.span, format!("job `{}` uses stage `{s}`, which is not in `stages`", job.name));
                            d.hint = Some(match did_you_mean(&s, stages.iter().map(|s| s.as_str())) {
                                Some(m) => format!("did you mean `{m}`?"),
                                None => format!("declared stages: {}; add `{s}` to `stages`", stages.join(", ")),
                            });
                        }
                        job.stage = s;
                        job.stage_span = v.span;
                    }
                }
                "variables" => job.variables = self.variables(v, &format!("{}.variables", job.name)),
                "rules" => {
                    job.rules = Some(self.rules(
                        v,
                        "rules",
                        &["on_success", "on_failure", "always", "manual", "delayed", "never"],
                    ))
                }
                "only" => job.only = self.filter(v, "only"),
                "except" => job.except = self.filter(v, "except"),
                "when" => {
                    job.when = self
                        .when(v, "when", &["on_success", "on_failure", "always", "manual", "delayed", "never"])
                        .unwrap_or(When::OnSuccess)
                }
                "start_in" => {
                    job.start_in = self.duration(v, "start_in");
                    start_in_node = Some(v.span);
                }
                "allow_failure" => {
                    job.allow_failure.explicit = true;
                    match &v.value {
                        Value::Bool(b) => job.allow_failure.allowed = *b,
                        Value::Map(m) => {
                            job.allow_failure.allowed = true;
                            for (ak, av) in m {
                                if ak.name == "exit_codes" {
                                    job.allow_failure.exit_codes = self.exit_codes(av, "allow_failure:exit_codes");
                                } else {
                                    self.unknown_key(ak, "`allow_failure`", &["exit_codes"]);
                                }
                            }
                        }
                        _ => self.type_err(v, "allow_failure", "`true`, `false` or `exit_codes: [...]`"),
                    }
                }
                "needs" => job.needs = Some(self.needs(v)),
                "dependencies" => {
                    let items = match &v.value {
                        Value::Seq(items) => items.clone(),
                        Value::Null => Vec::new(),
                        _ => {
                            self.type_err(v, "dependencies", "a list of job names");
                            Vec::new()
                        }
                    };
                    job.dependencies = Some(
                        items.iter().filter_map(|i| self.string(i, "dependencies[]").map(|s| (s, i.span))).collect(),
                    );
                }
                "parallel" => {
                    job.parallel = match &v.value {
                        Value::Int(_) => self.int(v, "parallel", 1, 200).map(|n| Parallel::Count(n as u32)),
                        Value::Map(m) => {
                            let mut p = None;
                            for (pk, pv) in m {
                                if pk.name == "matrix" {
                                    let mx = self.matrix(pv, "parallel:matrix");
                                    let total: usize = mx
                                        .iter()
                                        .map(|e| e.iter().map(|(_, vs)| vs.len().max(1)).product::<usize>())
                                        .sum();
                                    if total > 200 {
                                        self.err(
                                            pv.span,
                                            format!("`parallel:matrix` makes {total} jobs; the limit is 200"),
                                        );
                                    }
                                    p = Some(Parallel::Matrix(mx));
                                } else {
                                    self.unknown_key(pk, "`parallel`", &["matrix"]);
                                }
                            }
                            p
                        }
                        _ => {
                            self.type_err(v, "parallel", "a number (2..200) or `matrix: [...]`");
                            None
                        }
                    }
                }
                "retry" => {
                    job.retry = match &v.value {
                        Value::Int(_) => {
                            Retry { max: self.int(v, "retry", 0, 2).unwrap_or(0) as u32, ..Retry::default() }
                        }
                        Value::Map(m) => {
                            let mut r = Retry { max: 0, ..Retry::default() };
                            for (rk, rv) in m {
                                match rk.name.as_str() {
                                    "max" => r.max = self.int(rv, "retry:max", 0, 2).unwrap_or(0) as u32,
                                    "when" => {
                                        r.when = self.strings(rv, "retry:when");
                                        for w in &r.when {
                                            if !RETRY_WHEN.contains(&w.as_str()) {
                                                let d = self.err(rv.span, format!("`retry:when` cannot be `{w}`"));
                                                d.hint = did_you_mean(w, RETRY_WHEN.iter().copied())
                                                    .map(|s| format!("did you mean `{s}`?"));
                                            }
                                        }
                                    }
                                    "exit_codes" => r.exit_codes = self.exit_codes(rv, "retry:exit_codes"),
                                    _ => self.unknown_key(rk, "`retry`", &["max", "when", "exit_codes"]),
                                }
                            }
                            r
                        }
                        _ => {
                            self.type_err(v, "retry", "a number (0..2) or a mapping with `max`");
                            Retry::default()
                        }
                    }
                }
                "timeout" => job.timeout = self.duration(v, "timeout"),
                "artifacts" => job.artifacts = Some(self.artifacts(v)),
                "cache" => job.cache = self.cache(v),
                "resource_group" => job.resource_group = self.string(v, "resource_group"),
                "interruptible" => job.interruptible = self.boolean(v, "interruptible").unwrap_or(false),
                "environment" => {
                    job.environment = match &v.value {
                        Value::Map(m) => {
                            let mut env = Environment { name: String::new(), url: None, action: None };
                            for (ek, ev) in m {
                                match ek.name.as_str() {
                                    "name" => env.name = self.string(ev, "environment:name").unwrap_or_default(),
                                    "url" => env.url = self.string(ev, "environment:url"),
                                    "action" => env.action = self.string(ev, "environment:action"),
                                    "on_stop" | "auto_stop_in" | "kubernetes" | "deployment_tier" => {}
                                    _ => self.unknown_key(
                                        ek,
                                        "`environment`",
                                        &[
                                            "name",
                                            "url",
                                            "action",
                                            "on_stop",
                                            "auto_stop_in",
                                            "kubernetes",
                                            "deployment_tier",
                                        ],
                                    ),
                                }
                            }
                            if env.name.is_empty() {
                                self.err(v.span, "`environment` needs a `name`");
                            }
                            Some(env)
                        }
                        _ => self.string(v, "environment").map(|name| Environment { name, url: None, action: None }),
                    }
                }
                "coverage" => {
                    if let Some(s) = self.string(v, "coverage") {
                        let inner = s.strip_prefix('/').and_then(|r| r.strip_suffix('/'));
                        match inner.map(regex::Regex::new) {
                            Some(Ok(re)) => job.coverage = Some(re),
                            Some(Err(e)) => {
                                self.err(
                                    v.span,
                                    format!("invalid `coverage` regex: {}", e.to_string().lines().last().unwrap_or("")),
                                );
                            }
                            None => {
                                self.err(
                                    v.span,
                                    "`coverage` must be a regex between slashes, like `/total:\\s+(\\d+\\.\\d+)%/`",
                                );
                            }
                        }
                    }
                }
                "tags" => job.tags = self.strings(v, "tags"),
                "image" => {
                    job.image = self.image_name(v, "image");
                    job.image_options = self.image_options(v);
                }
                "services" => {
                    job.services = match &v.value {
                        Value::Seq(items) => items.iter().filter_map(|i| self.job_service(i)).collect(),
                        _ => {
                            self.type_err(v, "services", "a list of images");
                            Vec::new()
                        }
                    }
                }
                "trigger" => {
                    job.trigger = self.trigger(v);
                    trigger_span = Some(k.span);
                    has_script = true;
                }
                "run" => {
                    self.err(k.span, "`run` (CI steps) is not supported yet").hint = Some("use `script`".into());
                    has_script = true;
                }
                "extends" | "inherit" => {}
                name if IGNORED_JOB_KEYWORDS.contains(&name) => {
                    if k_in_job {
                        self.diags.push(Diagnostic::warning(
                            k.span,
                            format!("`{name}` is not supported by slipway yet; job `{}` runs without it", job.name),
                        ));
                    }
                }
                _ => self.unknown_key(k, &format!("job `{}`", job.name), JOB_KEYWORDS),
            }
        }
        if let Some(span) = trigger_span
            && !job.script.is_empty()
        {
            self.err(span, format!("job `{}` has both `trigger` and `script`", job.name)).hint =
                Some("a trigger job starts a pipeline and runs no script: move the script to a job of its own".into());
        }
        if !has_script {
            self.err(key.span, format!("job `{}` has no `script`", job.name)).hint = Some(
                "add `script:` with the commands to run, or start the name with `.` to make it a hidden template"
                    .into(),
            );
        }
        if job.when == When::Delayed && job.start_in.is_none() && job.rules.is_none() {
            self.err(key.span, format!("job `{}` is `when: delayed` but has no `start_in`", job.name)).hint =
                Some("add e.g. `start_in: 30 minutes`".into());
        }
        if let Some(span) = start_in_node
            && job.when != When::Delayed
            && job.rules.is_none()
        {
            self.err(span, "`start_in` only applies to `when: delayed` jobs");
        }
        if job.rules.is_some() && (job.only.is_some() || job.except.is_some()) {
            self.err(key.span, format!("job `{}` uses `rules` together with `only`/`except`", job.name)).hint =
                Some("GitLab does not allow mixing them: move the conditions into `rules`".into());
        }
        if !all.iter().any(|(k, _)| k.name == "stage") && !stages.iter().any(|s| s == "test") {
            let d = self.err(
                key.span,
                format!("job `{}` has no `stage`, so it is in `test`, which `stages` does not list", job.name),
            );
            d.hint = Some(format!("give it a `stage:` ({}) or add `test` to `stages`", stages.join(", ")));
        }
        if job.when == When::Manual && !job.allow_failure.explicit {
            // GitLab: manual jobs outside rules default to allow_failure: true.
            job.allow_failure.allowed = true;
        }
        // A job with errors is still returned so cross-job checks (needs, dependencies) see it;
        // the pipeline as a whole is refused anyway.
        Some(job)
    }

    fn check_needs(&mut self, jobs: &[Job], stages: &[String]) {
        let stage_idx = |s: &str| stages.iter().position(|x| x == s).unwrap_or(0);
        let by_name: HashMap<&str, &Job> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        for job in jobs {
            let mut all_needs: Vec<&Need> = job.needs.iter().flatten().collect();
            for r in job.rules.iter().flatten() {
                all_needs.extend(r.needs.iter().flatten());
            }
            // Another pipeline's jobs are checked where that pipeline is.
            all_needs.retain(|n| n.pipeline.is_none());
            for need in all_needs {
                // One instance of a `parallel` job by its generated name (`test: [1.22, linux]`).
                let named = by_name.get(need.job.as_str()).or_else(|| {
                    crate::plan::instance_base(&need.job).and_then(|b| by_name.get(b)).filter(|j| j.parallel.is_some())
                });
                match named {
                    None if need.optional => {}
                    None => {
                        let d = self
                            .err(need.span, format!("job `{}` needs `{}`, which is not defined", job.name, need.job));
                        d.hint = did_you_mean(&need.job, names.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                    }
                    Some(other) if stage_idx(&other.stage) > stage_idx(&job.stage) => {
                        self.err(
                            need.span,
                            format!(
                                "job `{}` (stage `{}`) needs `{}`, which is in the later stage `{}`",
                                job.name, job.stage, need.job, other.stage
                            ),
                        )
                        .hint = Some("a job can only need jobs in the same or earlier stages".into());
                    }
                    Some(_) => {}
                }
            }
            if let Some(deps) = &job.dependencies {
                for (dep, span) in deps {
                    let named = by_name.get(dep.as_str()).or_else(|| {
                        crate::plan::instance_base(dep).and_then(|b| by_name.get(b)).filter(|j| j.parallel.is_some())
                    });
                    match named {
                        None => {
                            let d =
                                self.err(*span, format!("job `{}` depends on `{dep}`, which is not defined", job.name));
                            d.hint = did_you_mean(dep, names.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                        }
                        Some(other)
                            if stage_idx(&other.stage) >= stage_idx(&job.stage)
                                && !job.needs.iter().flatten().any(|n| n.job == *dep) =>
                        {
                            self.err(
                                *span,
                                format!("job `{}` depends on `{dep}`, which is not in an earlier stage", job.name),
                            )
                            .hint = Some("`dependencies` lists jobs from earlier stages (or jobs in `needs`)".into());
                        }
                        Some(_) => {}
                    }
                    if let Some(needs) = &job.needs
                        && !needs.iter().any(|n| n.job == *dep)
                    {
                        self.err(
                            *span,
                            format!("job `{}` lists `{dep}` in `dependencies` but not in `needs`", job.name),
                        )
                        .hint = Some("with `needs`, `dependencies` must be a subset of `needs`".into());
                    }
                }
            }
        }
        // Cycles in the needs graph: report each cycle once, with its whole chain.
        let mut state: HashMap<&str, u8> = HashMap::new();
        let mut reported: HashSet<Vec<String>> = HashSet::new();
        for job in jobs {
            let mut path: Vec<&str> = Vec::new();
            self.cycle_dfs(job.name.as_str(), &by_name, &mut state, &mut path, &mut reported);
        }
    }

    fn cycle_dfs<'j>(
        &mut self,
        name: &'j str,
        by_name: &HashMap<&'j str, &'j Job>,
        state: &mut HashMap<&'j str, u8>,
        path: &mut Vec<&'j str>,
        reported: &mut HashSet<Vec<String>>,
    ) {
        match state.get(name) {
            Some(2) => return,
            Some(1) => {
                let start = path.iter().position(|p| *p == name).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                let mut key = cycle.clone();
                key.sort();
                if reported.insert(key) {
                    cycle.push(name.to_string());
                    let from = path.last().copied().unwrap_or(name);
                    let span = by_name
                        .get(from)
                        .and_then(|j| j.needs.iter().flatten().find(|n| n.job == name).map(|n| n.span))
                        .unwrap_or_default();
                    self.err(
                        span,
                        format!(
                            "`needs` cycle: {}",
                            cycle.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" → ")
                        ),
                    )
                    .hint = Some("remove one of these `needs` to break the cycle".into());
                }
                return;
            }
            _ => {}
        }
        let Some(job) = by_name.get(name) else { return };
        state.insert(name, 1);
        path.push(name);
        for need in job.needs.iter().flatten().filter(|n| n.pipeline.is_none()) {
            if let Some((k, _)) = by_name.get_key_value(need.job.as_str()) {
                self.cycle_dfs(k, by_name, state, path, reported);
            }
        }
        path.pop();
        state.insert(name, 2);
    }
}

/// Job keywords that `null` unsets (the job then has none, whatever it would inherit).
const NULL_UNSETS: &[&str] = &[
    "image",
    "services",
    "parallel",
    "before_script",
    "after_script",
    "cache",
    "retry",
    "timeout",
    "tags",
    "interruptible",
    "coverage",
    "artifacts",
    "allow_failure",
    "resource_group",
    "environment",
    "needs",
    "dependencies",
    "rules",
    "only",
    "except",
    "when",
    "start_in",
];

pub const RETRY_WHEN: &[&str] = &[
    "always",
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "runner_interrupted",
    "runner_external_dependency_failure",
];

fn strip_key(n: Node, key: &str) -> Node {
    match n.value {
        Value::Map(m) => Node { value: Value::Map(m.into_iter().filter(|(k, _)| k.name != key).collect()), ..n },
        _ => n,
    }
}
