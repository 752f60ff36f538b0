//! Compiles Prometheus rule files — a file of its own, or the pipeline file's `alerts:`
//! section, which holds exactly a rule file's content — into `slipway_monitor::rules`, every
//! error at once with its position: unknown keys, bad durations, template actions, and PromQL
//! outside slipway's subset at the column of the part it cannot evaluate.

use slipway_monitor::promql::Query;
use slipway_monitor::rules::{AlertRule, Group, RecordRule, Rule, RuleFile};
use slipway_monitor::template::Template;

use super::Cx;
use crate::yaml::{Node, Value};

const GROUP_KEYS: &[&str] = &["name", "interval", "rules", "limit", "query_offset"];
const RULE_KEYS: &[&str] = &["alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"];

impl Cx {
    pub(super) fn rule_file(&mut self, root: &Node, place: &str) -> RuleFile {
        let mut groups = Vec::new();
        let mut names = Vec::new();
        for (k, v) in self.map(root, place) {
            match k.name.as_str() {
                "groups" => {
                    let Value::Seq(items) = &v.value else {
                        self.type_err(v, &format!("{place}groups"), "a list of groups");
                        continue;
                    };
                    for (i, g) in items.iter().enumerate() {
                        if let Some(group) = self.rule_group(g, &format!("{place}groups[{i}]")) {
                            if names.contains(&group.name) {
                                self.err(
                                    g.span,
                                    format!("`{place}groups[{i}]`: group `{}` is defined twice", group.name),
                                );
                            }
                            names.push(group.name.clone());
                            groups.push(group);
                        }
                    }
                }
                _ => self.unknown_key(k, &format!("`{}`", place.trim_end_matches(':')), &["groups"]),
            }
        }
        RuleFile { groups }
    }

    /// A Prometheus duration (`30s`, `1h30m`) in milliseconds, or an error at its place.
    pub(super) fn prom_duration(&mut self, n: &Node, what: &str) -> Option<i64> {
        let s = self.string(n, what)?;
        match slipway_monitor::unittest::duration_ms(&s) {
            Ok(ms) => Some(ms),
            Err(e) => {
                self.err(n.span, format!("`{what}`: {e}"));
                None
            }
        }
    }

    fn rule_group(&mut self, n: &Node, path: &str) -> Option<Group> {
        let (mut name, mut interval_ms, mut rules) = (None, None, Vec::new());
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "name" => name = self.string(v, &f),
                "interval" => interval_ms = self.prom_duration(v, &f),
                "limit" => {
                    self.int(v, &f, 0, i64::MAX);
                }
                "query_offset" => {
                    self.prom_duration(v, &f);
                }
                "rules" => {
                    let Value::Seq(items) = &v.value else {
                        self.type_err(v, &f, "a list of rules");
                        continue;
                    };
                    for (i, r) in items.iter().enumerate() {
                        if let Some(rule) = self.rule(r, &format!("{f}[{i}]")) {
                            rules.push(rule);
                        }
                    }
                }
                _ => self.unknown_key(k, &format!("`{path}`"), GROUP_KEYS),
            }
        }
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            self.err(n.span, format!("`{path}` has no `name`"));
            return None;
        };
        Some(Group { name, interval_ms, rules })
    }

    fn rule(&mut self, n: &Node, path: &str) -> Option<Rule> {
        let mut alert = None;
        let mut record = None;
        let mut expr = None;
        let (mut for_ms, mut keep_ms) = (0, 0);
        let mut labels = Vec::new();
        let mut annotations = Vec::new();
        let mut has_annotations = None;
        let mut has_for = None;
        let before = self.error_count();
        for (k, v) in self.map(n, path) {
            let f = format!("{path}:{}", k.name);
            match k.name.as_str() {
                "alert" => alert = self.string(v, &f).map(|a| (a, v.span)),
                "record" => record = self.string(v, &f).map(|r| (r, v.span)),
                "expr" => {
                    let Some(text) = self.string(v, &f) else { continue };
                    match Query::parse(&text) {
                        Ok(q) => expr = Some(q),
                        Err(e) => {
                            // The column of the part, on the expression's line.
                            let offset = v.content_offset + u32::try_from(e.offset).unwrap_or(0);
                            let span =
                                if v.span.start_line == v.span.end_line { v.span.sub(offset, 1) } else { v.span };
                            self.err(span, format!("`{f}`: {}", e.message));
                        }
                    }
                }
                "for" => {
                    has_for = Some(k.span);
                    for_ms = self.prom_duration(v, &f).unwrap_or(0);
                }
                "keep_firing_for" => {
                    has_for = has_for.or(Some(k.span));
                    keep_ms = self.prom_duration(v, &f).unwrap_or(0);
                }
                "labels" => {
                    for (lk, lv) in self.map(v, &f) {
                        let lf = format!("{f}:{}", lk.name);
                        if !valid_label(&lk.name) {
                            self.err(lk.span, format!("`{lf}`: `{}` is not a label name", lk.name));
                            continue;
                        }
                        let Some(text) = self.string(lv, &lf) else { continue };
                        match Template::parse(&text) {
                            Ok(t) => labels.push((lk.name.clone(), text, t)),
                            Err(e) => {
                                self.err(lv.span, format!("`{lf}`: {e}"));
                            }
                        }
                    }
                }
                "annotations" => {
                    has_annotations = Some(k.span);
                    for (ak, av) in self.map(v, &f) {
                        let af = format!("{f}:{}", ak.name);
                        let Some(text) = self.string(av, &af) else { continue };
                        match Template::parse(&text) {
                            Ok(t) => annotations.push((ak.name.clone(), t)),
                            Err(e) => {
                                self.err(av.span, format!("`{af}`: {e}"));
                            }
                        }
                    }
                }
                _ => self.unknown_key(k, &format!("`{path}`"), RULE_KEYS),
            }
        }
        match (&alert, &record) {
            (Some(_), Some((_, span))) => {
                self.err(*span, format!("`{path}` has both `alert` and `record`: a rule is one or the other"));
            }
            (None, None) => {
                self.err(n.span, format!("`{path}` has neither `alert` nor `record`"));
            }
            (None, Some((r, span))) => {
                if !valid_metric(r) {
                    self.err(*span, format!("`{path}:record`: `{r}` is not a metric name"));
                }
                if let Some(s) = has_annotations.or(has_for) {
                    self.err(s, format!("`{path}`: a recording rule has no `for`, `keep_firing_for` or `annotations`"));
                }
            }
            (Some((a, span)), None) => {
                if a.is_empty() || !valid_label_value_name(a) {
                    self.err(*span, format!("`{path}:alert`: `{a}` is not a valid alert name"));
                }
            }
        }
        let Some(query) = expr else {
            if self.error_count() == before {
                self.err(n.span, format!("`{path}` has no `expr`"));
            }
            return None;
        };
        if self.error_count() != before {
            return None;
        }
        Some(match (alert, record) {
            (Some((name, _)), _) => Rule::Alert(AlertRule {
                name,
                query,
                for_ms,
                keep_firing_for_ms: keep_ms,
                labels: labels.into_iter().map(|(k, _, t)| (k, t)).collect(),
                annotations,
            }),
            (None, Some((name, _))) => Rule::Record(RecordRule {
                name,
                query,
                labels: labels.into_iter().map(|(k, text, _)| (k, text)).collect(),
            }),
            (None, None) => return None,
        })
    }
}

fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
        && !s.starts_with("__")
}

fn valid_metric(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// Alert names are label values; Prometheus requires a valid metric-like name.
fn valid_label_value_name(s: &str) -> bool {
    valid_metric(s)
}
