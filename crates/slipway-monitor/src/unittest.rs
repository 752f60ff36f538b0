//! promtool's rule-test files (`promtool test rules`): input series in its expanding notation
//! (`0+1x10`, `_x3`, `stale`), evaluated at the file's evaluation interval, with the alerts
//! expected firing at given times. The same file checks slipway's rules and Prometheus'.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::rules::{Evaluator, RuleFile, State};
use crate::series::{Labels, SeriesStore, stale};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    #[serde(default)]
    pub rule_files: Vec<String>,
    #[serde(default)]
    pub evaluation_interval: Option<String>,
    #[serde(default)]
    pub group_eval_order: Vec<String>,
    pub tests: Vec<TestGroup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestGroup {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub input_series: Vec<InputSeries>,
    #[serde(default)]
    pub alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    pub promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub external_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    pub series: String,
    pub values: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTest {
    pub eval_time: String,
    pub alertname: String,
    #[serde(default)]
    pub exp_alerts: Vec<ExpAlert>,
}

/// `promql_expr_test[]`: an expression evaluated at a time, and the samples it must give.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExprTest {
    pub expr: String,
    pub eval_time: String,
    #[serde(default)]
    pub exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpSample {
    /// `metric{a="b"}`, `{a="b"}`, or empty (a scalar).
    #[serde(default)]
    pub labels: String,
    pub value: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpAlert {
    #[serde(default)]
    pub exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub exp_annotations: BTreeMap<String, String>,
}

/// A Prometheus duration (`1m`, `1h30m`, `10s`, `500ms`, `1d`, `1w`, `1y`) in milliseconds.
pub fn duration_ms(s: &str) -> Result<i64, String> {
    let bad = || format!("`{s}` is not a duration (`30s`, `5m`, `1h30m`)");
    if s == "0" {
        return Ok(0);
    }
    let mut total = 0i64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        total = total.checked_add(n.checked_mul(ms).ok_or_else(bad)?).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The values of promtool's notation: `None` for a missing sample (`_`).
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    let num = |s: &str| -> Result<f64, String> {
        match s {
            "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
            "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            "stale" => Ok(stale()),
            _ => s.parse().map_err(|_| format!("`{s}` in `{text}` is not a number")),
        }
    };
    for item in text.split_whitespace() {
        if item == "_" {
            out.push(None);
            continue;
        }
        let Some((head, times)) = item.split_once('x') else {
            out.push(Some(num(item)?));
            continue;
        };
        let n: usize = times.parse().map_err(|_| format!("`{item}` in `{text}`: `x` takes a count"))?;
        if head == "_" {
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        // `a+bxn` / `a-bxn` (n+1 values), `axn` (a, n+1 times).
        let split =
            head.char_indices().skip(1).find(|(i, c)| (*c == '+' || *c == '-') && !head[..*i].ends_with(['e', 'E']));
        let (start, step) = match split {
            Some((i, _)) => (num(&head[..i])?, num(&head[i..])?),
            None => (num(head)?, 0.0),
        };
        for k in 0..=n {
            out.push(Some(start + step * k as f64));
        }
    }
    Ok(out)
}

/// Parses `metric{a="b"}` into its labels.
pub fn series_labels(text: &str) -> Result<Labels, String> {
    use promql_parser::label::MatchOp;
    if text.trim().is_empty() {
        return Ok(Labels::new());
    }
    match promql_parser::parser::parse(text) {
        Ok(promql_parser::parser::Expr::VectorSelector(vs)) => {
            let mut l = Labels::new();
            if let Some(n) = vs.name {
                l.insert("__name__".into(), n);
            }
            for m in vs.matchers.matchers {
                if !matches!(m.op, MatchOp::Equal) {
                    return Err(format!("`{text}`: a series has `=` labels only"));
                }
                l.insert(m.name, m.value);
            }
            Ok(l)
        }
        _ => Err(format!("`{text}` is not a series (`metric{{label=\"value\"}}`)")),
    }
}

/// An alert as a test compares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub labels: Labels,
    pub annotations: Labels,
}

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub group: String,
    pub alertname: String,
    pub eval_time: String,
    pub expected: Vec<Seen>,
    pub got: Vec<Seen>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &[Seen]| -> String {
            v.iter()
                .map(|s| format!("{{labels: {:?}, annotations: {:?}}}", s.labels, s.annotations))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let what = match self.alertname.strip_prefix("expr: ") {
            Some(e) => format!("expr `{e}`"),
            None => format!("alertname {}", self.alertname),
        };
        write!(
            f,
            "{}: {what} at {}:\n    expected: [{}]\n    got:      [{}]",
            self.group,
            self.eval_time,
            show(&self.expected),
            show(&self.got)
        )
    }
}

/// Loads a test group's input series into a store.
pub fn load(group: &TestGroup, interval_ms: i64) -> Result<SeriesStore, String> {
    let mut store = SeriesStore::default();
    for s in &group.input_series {
        let labels = series_labels(&s.series)?;
        for (i, v) in expand_values(&s.values)?.into_iter().enumerate() {
            if let Some(v) = v {
                store.append(&labels, i as i64 * interval_ms, v).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(store)
}

/// Evaluates every rule as promtool steps them — every `interval` from 0 to `until` — and
/// shows each step's state to `step`.
pub fn timeline(
    rules: &RuleFile,
    store: &mut SeriesStore,
    interval_ms: i64,
    until_ms: i64,
    external: &Labels,
    mut step: impl FnMut(i64, &Evaluator),
) -> Result<(), String> {
    let mut ev = Evaluator::default();
    let mut t = 0;
    while t <= until_ms {
        let errors = ev.eval(rules, store, t, external);
        if let Some(e) = errors.first() {
            return Err(e.clone());
        }
        step(t, &ev);
        t += interval_ms;
    }
    Ok(())
}

fn seen(ev: &Evaluator, rules: &RuleFile, alertname: &str) -> Vec<Seen> {
    let mut v: Vec<Seen> = ev
        .alerts(rules, alertname, State::Firing)
        .into_iter()
        .map(|a| Seen { labels: a.labels.clone(), annotations: a.annotations.clone() })
        .collect();
    v.sort();
    v
}

/// Runs a test file's groups against `rules`; the expectations that did not hold.
pub fn run(file: &TestFile, rules: &RuleFile) -> Result<Vec<Failure>, String> {
    let eval_interval = duration_ms(file.evaluation_interval.as_deref().unwrap_or("1m"))?;
    let mut failures = Vec::new();
    for (i, group) in file.tests.iter().enumerate() {
        let name = group.name.clone().unwrap_or_else(|| format!("tests[{i}]"));
        let interval = duration_ms(group.interval.as_deref().unwrap_or("1m"))?;
        let mut store = load(group, interval)?;
        let mut times = Vec::new();
        for t in &group.alert_rule_test {
            times.push(duration_ms(&t.eval_time)?);
        }
        let mut until = times.iter().copied().max().unwrap_or(0);
        for t in &group.promql_expr_test {
            until = until.max(duration_ms(&t.eval_time)?);
        }
        let external: Labels = group.external_labels.clone().into_iter().collect();
        // What each test sees: the evaluation at or just before its time (promtool's rule).
        let mut got: Vec<Option<Vec<Seen>>> = vec![None; times.len()];
        timeline(rules, &mut store, eval_interval, until, &external, |ts, ev| {
            for (i, t) in times.iter().enumerate() {
                if ts <= *t && *t < ts + eval_interval {
                    got[i] = Some(seen(ev, rules, &group.alert_rule_test[i].alertname));
                }
            }
        })?;
        for (test, got) in group.alert_rule_test.iter().zip(got) {
            let got = got.unwrap_or_default();
            let mut expected: Vec<Seen> = test
                .exp_alerts
                .iter()
                .map(|e| {
                    let mut labels: Labels = e.exp_labels.clone().into_iter().collect();
                    labels.insert("alertname".into(), test.alertname.clone());
                    Seen { labels, annotations: e.exp_annotations.clone().into_iter().collect() }
                })
                .collect();
            expected.sort();
            if got != expected {
                failures.push(Failure {
                    group: name.clone(),
                    alertname: test.alertname.clone(),
                    eval_time: test.eval_time.clone(),
                    expected,
                    got,
                });
            }
        }
        // Expressions, over the series and what the recording rules wrote (as promtool).
        for test in &group.promql_expr_test {
            let got = samples_at(&store, test)?;
            let mut expected = Vec::new();
            for s in &test.exp_samples {
                expected.push((series_labels(&s.labels)?, s.value));
            }
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            let same = got.len() == expected.len()
                && got.iter().zip(&expected).all(|(g, e)| g.0 == e.0 && almost_equal(g.1, e.1));
            if !same {
                let show = |v: Vec<(Labels, f64)>| {
                    v.into_iter()
                        .map(|(labels, value)| Seen {
                            labels,
                            annotations: [("value".to_string(), go_value(value))].into(),
                        })
                        .collect()
                };
                failures.push(Failure {
                    group: name.clone(),
                    alertname: format!("expr: {}", test.expr),
                    eval_time: test.eval_time.clone(),
                    expected: show(expected),
                    got: show(got),
                });
            }
        }
    }
    Ok(failures)
}

/// An expression test's result, sorted by labels.
fn samples_at(store: &SeriesStore, test: &ExprTest) -> Result<Vec<(Labels, f64)>, String> {
    let q = crate::promql::Query::parse(&test.expr).map_err(|e| format!("`{}`: {e}", test.expr))?;
    let t = duration_ms(&test.eval_time)?;
    let mut got: Vec<(Labels, f64)> = match q.eval(store, t)? {
        crate::promql::Value::Vector(v) => v.into_iter().map(|s| (s.labels, s.value)).collect(),
        crate::promql::Value::Scalar(x) => vec![(Labels::new(), x)],
        _ => return Err(format!("`{}` is not an instant vector or a scalar", test.expr)),
    };
    got.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(got)
}

/// promtool's comparison: equal, both NaN, or within a relative 1e-6.
fn almost_equal(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || ((a - b).abs() <= 1e-6 * a.abs().max(b.abs()))
}

fn go_value(v: f64) -> String {
    format!("{v}")
}

/// Labels as promtool's `exp_samples` write them: `name{a="b"}`.
fn labels_text(l: &Labels) -> String {
    let name = l.get("__name__").cloned().unwrap_or_default();
    let pairs: Vec<String> = l
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).expect("a string")))
        .collect();
    if pairs.is_empty() && !name.is_empty() { name } else { format!("{name}{{{}}}", pairs.join(", ")) }
}

fn duration_text(ms: i64) -> String {
    if ms % 1000 == 0 { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// The test file again with an `alert_rule_test` for every alert at every evaluation step up
/// to each group's last `eval_time`, its `exp_alerts` what slipway evaluated: run it with
/// `promtool test rules` to check that Prometheus agrees at every step.
pub fn record(file: &TestFile, rules: &RuleFile) -> Result<serde_json::Value, String> {
    let eval_interval = duration_ms(file.evaluation_interval.as_deref().unwrap_or("1m"))?;
    let names: Vec<&str> = rules
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .filter_map(|r| match r {
            crate::rules::Rule::Alert(a) => Some(a.name.as_str()),
            crate::rules::Rule::Record(_) => None,
        })
        .collect();
    let mut tests = Vec::new();
    for group in &file.tests {
        let interval = duration_ms(group.interval.as_deref().unwrap_or("1m"))?;
        let mut store = load(group, interval)?;
        let mut until = 0;
        for t in &group.alert_rule_test {
            until = until.max(duration_ms(&t.eval_time)?);
        }
        for t in &group.promql_expr_test {
            until = until.max(duration_ms(&t.eval_time)?);
        }
        let external: Labels = group.external_labels.clone().into_iter().collect();
        let mut alert_tests = Vec::new();
        timeline(rules, &mut store, eval_interval, until, &external, |t, ev| {
            for name in &names {
                let exp: Vec<serde_json::Value> = seen(ev, rules, name)
                    .into_iter()
                    .map(|s| {
                        let mut labels = s.labels;
                        labels.remove("alertname");
                        serde_json::json!({"exp_labels": labels, "exp_annotations": s.annotations})
                    })
                    .collect();
                alert_tests
                    .push(serde_json::json!({"eval_time": duration_text(t), "alertname": name, "exp_alerts": exp}));
            }
        })?;
        let series: Vec<serde_json::Value> =
            group.input_series.iter().map(|s| serde_json::json!({"series": s.series, "values": s.values})).collect();
        let mut expr_tests = Vec::new();
        for test in &group.promql_expr_test {
            let got = samples_at(&store, test)?;
            let exp: Vec<serde_json::Value> = got
                .iter()
                .map(|(l, v)| {
                    let labels = if l.is_empty() { String::new() } else { labels_text(l) };
                    serde_json::json!({"labels": labels, "value": v})
                })
                .collect();
            expr_tests.push(serde_json::json!({"expr": test.expr, "eval_time": test.eval_time, "exp_samples": exp}));
        }
        let mut g = serde_json::json!({
            "interval": group.interval.clone().unwrap_or_else(|| "1m".into()),
            "input_series": series,
            "alert_rule_test": alert_tests,
        });
        if !expr_tests.is_empty() {
            g["promql_expr_test"] = serde_json::Value::Array(expr_tests);
        }
        if let Some(n) = &group.name {
            g["name"] = serde_json::json!(n);
        }
        if !group.external_labels.is_empty() {
            g["external_labels"] = serde_json::json!(group.external_labels);
        }
        tests.push(g);
    }
    Ok(serde_json::json!({
        "rule_files": file.rule_files,
        "evaluation_interval": file.evaluation_interval.clone().unwrap_or_else(|| "1m".into()),
        "tests": tests,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promtools_series_notation_expands_as_promtool_does() {
        assert_eq!(expand_values("0+1x3").unwrap(), [Some(0.0), Some(1.0), Some(2.0), Some(3.0)]);
        assert_eq!(expand_values("10-2x2 _ 4").unwrap(), [Some(10.0), Some(8.0), Some(6.0), None, Some(4.0)]);
        assert_eq!(expand_values("1x2 _x2").unwrap(), [Some(1.0), Some(1.0), Some(1.0), None, None]);
        assert!(crate::series::is_stale(expand_values("stale").unwrap()[0].unwrap()));
        assert!(expand_values("1 two").unwrap_err().contains("`two`"));
        assert_eq!(duration_ms("1h30m").unwrap(), 5_400_000);
        assert!(duration_ms("5 m").is_err() && duration_ms("m").is_err());
        let l = series_labels("up{job=\"web\", instance=\"a:1\"}").unwrap();
        assert_eq!(l.get("__name__").map(String::as_str), Some("up"));
        assert_eq!(l.len(), 3);
    }
}
