//! The PromQL subset slipway evaluates (docs/monitoring.md), parsed with `promql-parser` and
//! evaluated as Prometheus 2.x does: instant selectors look back 5 minutes, range selectors
//! take `[t - range, t]`, `rate`/`increase` extrapolate as Prometheus' `extrapolatedRate`,
//! arithmetic drops the metric name, comparisons filter unless `bool`, vector matching is
//! one-to-one with `on`/`ignoring`. Anything else is refused when the expression is checked,
//! naming the part and its column.

use std::collections::BTreeMap;

use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::{self, Expr, LabelModifier, VectorMatchCardinality, VectorSelector};

use crate::series::{Labels, SeriesStore, is_stale};

/// How far an instant selector looks back for a sample (Prometheus' default).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// The functions of the subset.
pub const FUNCTIONS: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "delta",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "present_over_time",
    "absent",
    "absent_over_time",
    "histogram_quantile",
    "abs",
    "ceil",
    "floor",
    "round",
    "clamp_min",
    "clamp_max",
    "time",
    "vector",
    "scalar",
];

/// The aggregations of the subset.
pub const AGGREGATIONS: &[&str] = &["sum", "avg", "min", "max", "count"];

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
    Matrix(Vec<crate::Series>),
    String(String),
}

/// What a query reads: a store, maybe narrowed to the series a caller may see.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub store: &'a SeriesStore,
    pub keep: Option<&'a dyn Fn(&Labels) -> bool>,
}

impl<'a> View<'a> {
    pub fn all(store: &'a SeriesStore) -> View<'a> {
        View { store, keep: None }
    }
}

/// A checked expression and its text.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    expr: Expr,
}

/// Why an expression is refused: what, and at which character (0-based) of the text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub message: String,
    pub offset: usize,
}

fn at(text: &str, needle: &str) -> usize {
    text.find(needle).unwrap_or(0)
}

impl Query {
    /// Parses and checks `text` against the subset.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let expr = parser::parse(text)
            .map_err(|e| QueryError { message: format!("`{}` is not PromQL: {e}", text.trim()), offset: 0 })?;
        check(&expr, text)?;
        Ok(Query { text: text.to_string(), expr })
    }

    pub fn eval(&self, store: &SeriesStore, t_ms: i64) -> Result<Value, String> {
        eval(&self.expr, View::all(store), t_ms)
    }

    /// Evaluates over the series `view` lets through.
    pub fn eval_in(&self, view: View<'_>, t_ms: i64) -> Result<Value, String> {
        eval(&self.expr, view, t_ms)
    }

    /// Whether it is a plain instant-vector selector (`up{job="a"}`), as `/federate` takes.
    pub fn is_selector(&self) -> bool {
        matches!(self.expr, Expr::VectorSelector(_))
    }

    /// An instant vector (a scalar becomes one sample without labels).
    pub fn eval_vector(&self, store: &SeriesStore, t_ms: i64) -> Result<Vec<Sample>, String> {
        match self.eval(store, t_ms)? {
            Value::Vector(v) => Ok(v),
            Value::Scalar(s) => Ok(vec![Sample { labels: Labels::new(), value: s }]),
            _ => Err(format!("`{}` is not an instant vector", self.text)),
        }
    }
}

fn unsupported(text: &str, what: &str, needle: &str) -> QueryError {
    QueryError {
        message: format!(
            "{what} is outside slipway's PromQL subset (docs/monitoring.md lists it); use Prometheus for it"
        ),
        offset: at(text, needle),
    }
}

fn check(e: &Expr, text: &str) -> Result<(), QueryError> {
    match e {
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            if !AGGREGATIONS.contains(&op.as_str()) {
                return Err(unsupported(text, &format!("the aggregation `{op}`"), &op));
            }
            check(&a.expr, text)
        }
        Expr::Unary(u) => check(&u.expr, text),
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier
                && matches!(m.card, VectorMatchCardinality::ManyToOne(_) | VectorMatchCardinality::OneToMany(_))
            {
                let which =
                    if matches!(m.card, VectorMatchCardinality::ManyToOne(_)) { "group_left" } else { "group_right" };
                return Err(unsupported(text, &format!("`{which}` matching"), which));
            }
            if b.op.to_string() == "atan2" {
                return Err(unsupported(text, "`atan2`", "atan2"));
            }
            check(&b.lhs, text)?;
            check(&b.rhs, text)
        }
        Expr::Paren(p) => check(&p.expr, text),
        Expr::Subquery(_) => Err(unsupported(text, "a subquery", "[")),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::VectorSelector(vs) => check_selector(vs, text),
        Expr::MatrixSelector(ms) => check_selector(&ms.vs, text),
        Expr::Call(c) => {
            if !FUNCTIONS.contains(&c.func.name) {
                return Err(unsupported(text, &format!("the function `{}`", c.func.name), c.func.name));
            }
            c.args.args.iter().try_for_each(|a| check(a, text))
        }
        Expr::Extension(_) => Err(unsupported(text, "an extension", "")),
    }
}

fn check_selector(vs: &VectorSelector, text: &str) -> Result<(), QueryError> {
    if vs.at.is_some() {
        return Err(unsupported(text, "the `@` modifier", "@"));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported(text, "`or` inside a selector", " or "));
    }
    Ok(())
}

fn offset_ms(vs: &VectorSelector) -> i64 {
    match &vs.offset {
        Some(parser::Offset::Pos(d)) => d.as_millis() as i64,
        Some(parser::Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

fn matches(m: &Matchers, name: Option<&str>, l: &Labels) -> bool {
    let get = |k: &str| l.get(k).map(String::as_str).unwrap_or("");
    name.is_none_or(|n| get("__name__") == n) && m.matchers.iter().all(|mm| mm.is_match(get(&mm.name)))
}

fn select_range(view: View<'_>, vs: &VectorSelector, from: i64, to: i64) -> Vec<crate::Series> {
    // A name given as `{__name__="x"}` reads its family too.
    let name = vs.name.as_deref().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.as_str())
    });
    view.store.select(
        name,
        |l| matches(&vs.matchers, vs.name.as_deref(), l) && view.keep.is_none_or(|k| k(l)),
        from,
        to,
    )
}

fn instant(store: View<'_>, vs: &VectorSelector, t: i64) -> Vec<Sample> {
    let t = t - offset_ms(vs);
    select_range(store, vs, t - LOOKBACK_MS, t)
        .into_iter()
        .filter_map(|s| {
            let (_, v) = *s.samples.last()?;
            (!is_stale(v)).then_some(Sample { labels: s.labels, value: v })
        })
        .collect()
}

fn without_name(mut l: Labels) -> Labels {
    l.remove("__name__");
    l
}

fn eval(e: &Expr, store: View<'_>, t: i64) -> Result<Value, String> {
    Ok(match e {
        Expr::NumberLiteral(n) => Value::Scalar(n.val),
        Expr::StringLiteral(s) => Value::String(s.val.clone()),
        Expr::Paren(p) => eval(&p.expr, store, t)?,
        Expr::Unary(u) => match eval(&u.expr, store, t)? {
            Value::Scalar(s) => Value::Scalar(-s),
            Value::Vector(v) => Value::Vector(
                v.into_iter().map(|s| Sample { labels: without_name(s.labels), value: -s.value }).collect(),
            ),
            _ => return Err("`-` needs a scalar or an instant vector".into()),
        },
        Expr::VectorSelector(vs) => Value::Vector(instant(store, vs, t)),
        Expr::MatrixSelector(ms) => {
            let end = t - offset_ms(&ms.vs);
            let start = end - ms.range.as_millis() as i64;
            let mut m = select_range(store, &ms.vs, start, end);
            for s in &mut m {
                s.samples.retain(|(_, v)| !is_stale(*v));
            }
            m.retain(|s| !s.samples.is_empty());
            Value::Matrix(m)
        }
        Expr::Call(c) => call(c, store, t)?,
        Expr::Aggregate(a) => aggregate(a, store, t)?,
        Expr::Binary(b) => binary(b, store, t)?,
        Expr::Subquery(_) | Expr::Extension(_) => return Err("outside the subset".into()),
    })
}

fn vector(v: Value, what: &str) -> Result<Vec<Sample>, String> {
    match v {
        Value::Vector(v) => Ok(v),
        _ => Err(format!("{what} needs an instant vector")),
    }
}

fn matrix_arg(c: &parser::Call, i: usize) -> Result<&parser::MatrixSelector, String> {
    match c.args.args.get(i).map(|a| a.as_ref()) {
        Some(Expr::MatrixSelector(m)) => Ok(m),
        _ => Err(format!("`{}` needs a range selector (`metric[5m]`)", c.func.name)),
    }
}

/// Prometheus' `extrapolatedRate` (rate, increase, delta).
fn extrapolated(
    ms: &parser::MatrixSelector,
    s: &crate::Series,
    t: i64,
    counter: bool,
    per_second: bool,
) -> Option<f64> {
    let pts = &s.samples;
    if pts.len() < 2 {
        return None;
    }
    let range_end = t - offset_ms(&ms.vs);
    let range_start = range_end - ms.range.as_millis() as i64;
    let (first, last) = (pts[0], pts[pts.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = 0.0;
        for &(_, v) in pts {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg = sampled / (pts.len() - 1) as f64;
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { avg / 2.0 };
    interval += if to_end < threshold { to_end } else { avg / 2.0 };
    let mut v = result * (interval / sampled);
    if per_second {
        v /= ms.range.as_secs_f64();
    }
    Some(v)
}

fn call(c: &parser::Call, store: View<'_>, t: i64) -> Result<Value, String> {
    let name = c.func.name;
    let arg = |i: usize| -> Result<Value, String> {
        let a = c.args.args.get(i).ok_or_else(|| format!("`{name}` needs argument {}", i + 1))?;
        eval(a, store, t)
    };
    let over_matrix = |f: &dyn Fn(&crate::Series) -> Option<f64>| -> Result<Value, String> {
        let Value::Matrix(m) = arg(0)? else { return Err(format!("`{name}` needs a range selector")) };
        Ok(Value::Vector(
            m.iter().filter_map(|s| Some(Sample { labels: without_name(s.labels.clone()), value: f(s)? })).collect(),
        ))
    };
    let values = |s: &crate::Series| s.samples.iter().map(|(_, v)| *v).collect::<Vec<f64>>();
    Ok(match name {
        "rate" | "increase" | "delta" => {
            let ms = matrix_arg(c, 0)?;
            let (counter, per_second) = (name != "delta", name == "rate");
            over_matrix(&|s| extrapolated(ms, s, t, counter, per_second))?
        }
        "irate" => over_matrix(&|s| {
            let n = s.samples.len();
            if n < 2 {
                return None;
            }
            let ((t0, v0), (t1, v1)) = (s.samples[n - 2], s.samples[n - 1]);
            let dv = if v1 < v0 { v1 } else { v1 - v0 };
            let dt = (t1 - t0) as f64 / 1000.0;
            (dt != 0.0).then_some(dv / dt)
        })?,
        "avg_over_time" => over_matrix(&|s| {
            let v = values(s);
            Some(v.iter().sum::<f64>() / v.len() as f64)
        })?,
        "min_over_time" => {
            over_matrix(&|s| values(s).into_iter().reduce(|a, b| if b < a || a.is_nan() { b } else { a }))?
        }
        "max_over_time" => {
            over_matrix(&|s| values(s).into_iter().reduce(|a, b| if b > a || a.is_nan() { b } else { a }))?
        }
        "sum_over_time" => over_matrix(&|s| Some(values(s).iter().sum()))?,
        "count_over_time" => over_matrix(&|s| Some(s.samples.len() as f64))?,
        "last_over_time" => {
            let Value::Matrix(m) = arg(0)? else { return Err("`last_over_time` needs a range selector".into()) };
            Value::Vector(
                m.iter()
                    .filter_map(|s| Some(Sample { labels: s.labels.clone(), value: s.samples.last()?.1 }))
                    .collect(),
            )
        }
        "present_over_time" => over_matrix(&|_| Some(1.0))?,
        "absent" | "absent_over_time" => {
            let empty = match arg(0)? {
                Value::Vector(v) => v.is_empty(),
                Value::Matrix(m) => m.is_empty(),
                _ => return Err(format!("`{name}` needs a vector")),
            };
            if !empty {
                return Ok(Value::Vector(Vec::new()));
            }
            // The labels the selector pins with `=` (Prometheus' createLabelsForAbsentFunction).
            let vs = match c.args.args.first().map(|a| a.as_ref()) {
                Some(Expr::VectorSelector(vs)) => Some(vs),
                Some(Expr::MatrixSelector(ms)) => Some(&ms.vs),
                _ => None,
            };
            let mut labels = Labels::new();
            if let Some(vs) = vs {
                let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
                for m in &vs.matchers.matchers {
                    *seen.entry(&m.name).or_default() += 1;
                }
                for m in &vs.matchers.matchers {
                    if matches!(m.op, MatchOp::Equal) && m.name != "__name__" && seen[m.name.as_str()] == 1 {
                        labels.insert(m.name.clone(), m.value.clone());
                    }
                }
            }
            Value::Vector(vec![Sample { labels, value: 1.0 }])
        }
        "histogram_quantile" => {
            let Value::Scalar(q) = arg(0)? else { return Err("`histogram_quantile` needs a scalar first".into()) };
            let v = vector(arg(1)?, "histogram_quantile")?;
            let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for s in v {
                let Some(le) = s.labels.get("le").and_then(|l| parse_le(l)) else { continue };
                let mut l = without_name(s.labels);
                l.remove("le");
                groups.entry(l).or_default().push((le, s.value));
            }
            Value::Vector(
                groups.into_iter().map(|(labels, b)| Sample { labels, value: bucket_quantile(q, b) }).collect(),
            )
        }
        "abs" | "ceil" | "floor" | "round" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                // Prometheus rounds half up: floor(v + 0.5).
                _ => |v: f64| (v + 0.5).floor(),
            };
            Value::Vector(
                vector(arg(0)?, name)?
                    .into_iter()
                    .map(|s| Sample { labels: without_name(s.labels), value: f(s.value) })
                    .collect(),
            )
        }
        "clamp_min" | "clamp_max" => {
            let v = vector(arg(0)?, name)?;
            let Value::Scalar(b) = arg(1)? else { return Err(format!("`{name}` needs a scalar bound")) };
            Value::Vector(
                v.into_iter()
                    .map(|s| Sample {
                        labels: without_name(s.labels),
                        value: if name == "clamp_min" { s.value.max(b) } else { s.value.min(b) },
                    })
                    .collect(),
            )
        }
        "time" => Value::Scalar(t as f64 / 1000.0),
        "vector" => {
            let Value::Scalar(s) = arg(0)? else { return Err("`vector` needs a scalar".into()) };
            Value::Vector(vec![Sample { labels: Labels::new(), value: s }])
        }
        "scalar" => {
            let v = vector(arg(0)?, "scalar")?;
            Value::Scalar(if v.len() == 1 { v[0].value } else { f64::NAN })
        }
        other => return Err(format!("`{other}` is outside the subset")),
    })
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

/// Prometheus' `bucketQuantile`.
fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Buckets of the same bound are added up (coalesceBuckets).
    let mut c: Vec<(f64, f64)> = Vec::new();
    for (le, n) in b {
        match c.last_mut() {
            Some(last) if last.0 == le => last.1 += n,
            _ => c.push((le, n)),
        }
    }
    let b = c;
    if b.len() < 2 || b.last().is_none_or(|l| !l.0.is_infinite()) {
        return f64::NAN;
    }
    // Counts must not fall from one bucket to the next (ensureMonotonic).
    let mut b = b;
    let mut max = f64::NEG_INFINITY;
    for x in b.iter_mut() {
        if x.1 > max {
            max = x.1;
        } else if x.1 < max {
            x.1 = max;
        }
    }
    let total = b[b.len() - 1].1;
    let mut rank = q * total;
    let i = b.iter().position(|x| x.1 >= rank).unwrap_or(b.len() - 1);
    if i == b.len() - 1 {
        return b[b.len() - 2].0;
    }
    if i == 0 && b[0].0 <= 0.0 {
        return b[0].0;
    }
    let (mut start, end, mut count) = (0.0, b[i].0, b[i].1);
    if i > 0 {
        start = b[i - 1].0;
        count -= b[i - 1].1;
        rank -= b[i - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn aggregate(a: &parser::AggregateExpr, store: View<'_>, t: i64) -> Result<Value, String> {
    let op = a.op.to_string();
    let v = vector(eval(&a.expr, store, t)?, &op)?;
    let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
    for s in v {
        let key: Labels = match &a.modifier {
            Some(LabelModifier::Include(by)) => s.labels.into_iter().filter(|(k, _)| by.labels.contains(k)).collect(),
            Some(LabelModifier::Exclude(without)) => {
                without_name(s.labels).into_iter().filter(|(k, _)| !without.labels.contains(k)).collect()
            }
            None => Labels::new(),
        };
        groups.entry(key).or_default().push(s.value);
    }
    let out = groups
        .into_iter()
        .map(|(labels, vals)| {
            let value = match op.as_str() {
                "sum" => vals.iter().sum(),
                "avg" => vals.iter().sum::<f64>() / vals.len() as f64,
                "count" => vals.len() as f64,
                "min" => {
                    vals.iter().copied().reduce(|a, b| if b < a || a.is_nan() { b } else { a }).unwrap_or(f64::NAN)
                }
                _ => vals.iter().copied().reduce(|a, b| if b > a || a.is_nan() { b } else { a }).unwrap_or(f64::NAN),
            };
            Sample { labels, value }
        })
        .collect();
    Ok(Value::Vector(out))
}

fn compare(op: &str, l: f64, r: f64) -> Option<bool> {
    Some(match op {
        "==" => l == r,
        "!=" => l != r,
        ">" => l > r,
        "<" => l < r,
        ">=" => l >= r,
        "<=" => l <= r,
        _ => return None,
    })
}

fn arith(op: &str, l: f64, r: f64) -> f64 {
    match op {
        "+" => l + r,
        "-" => l - r,
        "*" => l * r,
        "/" => l / r,
        "%" => l % r,
        _ => l.powf(r),
    }
}

fn binary(b: &parser::BinaryExpr, store: View<'_>, t: i64) -> Result<Value, String> {
    let op = b.op.to_string();
    let bool_mod = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let (l, r) = (eval(&b.lhs, store, t)?, eval(&b.rhs, store, t)?);
    let is_cmp = compare(&op, 0.0, 0.0).is_some();
    let apply = |x: f64, y: f64| -> Option<f64> {
        match compare(&op, x, y) {
            Some(true) => Some(if bool_mod { 1.0 } else { x }),
            Some(false) => bool_mod.then_some(0.0),
            None => Some(arith(&op, x, y)),
        }
    };
    let keep_name = is_cmp && !bool_mod;
    let name = |l: Labels| if keep_name { l } else { without_name(l) };
    Ok(match (l, r) {
        (Value::Scalar(x), Value::Scalar(y)) => match compare(&op, x, y) {
            Some(c) if bool_mod => Value::Scalar(if c { 1.0 } else { 0.0 }),
            Some(_) => return Err("comparisons between scalars need `bool`".into()),
            None => Value::Scalar(arith(&op, x, y)),
        },
        (Value::Vector(v), Value::Scalar(y)) => Value::Vector(
            v.into_iter()
                .filter_map(|s| {
                    let value = match compare(&op, s.value, y) {
                        Some(true) => {
                            if bool_mod {
                                1.0
                            } else {
                                s.value
                            }
                        }
                        Some(false) if bool_mod => 0.0,
                        Some(false) => return None,
                        None => arith(&op, s.value, y),
                    };
                    Some(Sample { labels: name(s.labels), value })
                })
                .collect(),
        ),
        (Value::Scalar(x), Value::Vector(v)) => Value::Vector(
            v.into_iter()
                .filter_map(|s| {
                    let value = match compare(&op, x, s.value) {
                        // A filter keeps the vector's sample value.
                        Some(true) => {
                            if bool_mod {
                                1.0
                            } else {
                                s.value
                            }
                        }
                        Some(false) if bool_mod => 0.0,
                        Some(false) => return None,
                        None => arith(&op, x, s.value),
                    };
                    Some(Sample { labels: name(s.labels), value })
                })
                .collect(),
        ),
        (Value::Vector(lv), Value::Vector(rv)) => {
            let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
            let sig = |l: &Labels| -> Labels {
                match &matching {
                    Some(LabelModifier::Include(on)) => {
                        l.iter().filter(|(k, _)| on.labels.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
                    }
                    Some(LabelModifier::Exclude(ig)) => {
                        without_name(l.clone()).into_iter().filter(|(k, _)| !ig.labels.contains(k)).collect()
                    }
                    None => without_name(l.clone()),
                }
            };
            match op.as_str() {
                "and" => {
                    let right: std::collections::BTreeSet<Labels> = rv.iter().map(|s| sig(&s.labels)).collect();
                    Value::Vector(lv.into_iter().filter(|s| right.contains(&sig(&s.labels))).collect())
                }
                "unless" => {
                    let right: std::collections::BTreeSet<Labels> = rv.iter().map(|s| sig(&s.labels)).collect();
                    Value::Vector(lv.into_iter().filter(|s| !right.contains(&sig(&s.labels))).collect())
                }
                "or" => {
                    let left: std::collections::BTreeSet<Labels> = lv.iter().map(|s| sig(&s.labels)).collect();
                    let mut out = lv;
                    out.extend(rv.into_iter().filter(|s| !left.contains(&sig(&s.labels))));
                    Value::Vector(out)
                }
                _ => {
                    let mut right: BTreeMap<Labels, &Sample> = BTreeMap::new();
                    for s in &rv {
                        if right.insert(sig(&s.labels), s).is_some() {
                            return Err(
                                "many-to-many matching: the right side has two series with the same labels".into()
                            );
                        }
                    }
                    let mut out = Vec::new();
                    let mut seen = std::collections::BTreeSet::new();
                    for s in lv {
                        let key = sig(&s.labels);
                        let Some(other) = right.get(&key) else { continue };
                        let Some(value) = apply(s.value, other.value) else { continue };
                        let mut labels = name(s.labels);
                        // The result keeps the `on` labels only, or drops the `ignoring` ones.
                        match &matching {
                            Some(LabelModifier::Include(on)) => labels.retain(|k, _| on.labels.contains(k)),
                            Some(LabelModifier::Exclude(ig)) => labels.retain(|k, _| !ig.labels.contains(k)),
                            None => {}
                        }
                        if !seen.insert(labels.clone()) {
                            return Err("two results with the same labels: match on more labels".into());
                        }
                        out.push(Sample { labels, value });
                    }
                    Value::Vector(out)
                }
            }
        }
        _ => return Err(format!("`{op}` between these kinds of values is outside the subset")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::labels;

    fn store() -> SeriesStore {
        let mut s = SeriesStore::default();
        for i in 0..=10 {
            let t = i * 60_000;
            s.append(&labels([("__name__", "up"), ("instance", "a"), ("job", "web")]), t, 1.0).unwrap();
            s.append(
                &labels([("__name__", "up"), ("instance", "b"), ("job", "web")]),
                t,
                if i > 5 { 0.0 } else { 1.0 },
            )
            .unwrap();
            s.append(&labels([("__name__", "requests_total"), ("instance", "a")]), t, (i * 60) as f64).unwrap();
        }
        s
    }

    fn vec_of(q: &str, t: i64) -> Vec<(String, f64)> {
        let v = Query::parse(q).unwrap().eval_vector(&store(), t).unwrap();
        v.into_iter().map(|s| (format!("{:?}", s.labels), s.value)).collect()
    }

    #[test]
    fn selectors_comparisons_and_rates_as_prometheus() {
        let down = vec_of("up == 0", 600_000);
        assert_eq!(down.len(), 1);
        assert!(down[0].0.contains("\"b\"") && down[0].0.contains("__name__"), "a filter keeps the name: {down:?}");
        let b = vec_of("up == bool 0", 600_000);
        assert_eq!(b.iter().map(|x| x.1).sum::<f64>(), 1.0);
        assert!(!b[0].0.contains("__name__"));
        let r = vec_of("rate(requests_total[5m])", 600_000);
        assert!((r[0].1 - 1.0).abs() < 1e-9, "{r:?}");
        let inc = vec_of("increase(requests_total[5m])", 600_000);
        assert!((inc[0].1 - 300.0).abs() < 1e-9, "{inc:?}");
        assert_eq!(vec_of("sum by (job) (up)", 600_000), vec![("{\"job\": \"web\"}".to_string(), 1.0)]);
        assert_eq!(vec_of("count(up)", 600_000)[0].1, 2.0);
        assert_eq!(vec_of("absent(nothing{job=\"x\"})", 600_000), vec![("{\"job\": \"x\"}".to_string(), 1.0)]);
        assert!(vec_of("up offset 20m", 600_000).is_empty(), "5 minutes of lookback only");
        assert_eq!(vec_of("up and on(instance) requests_total", 600_000).len(), 1);
    }

    #[test]
    fn outside_the_subset_names_the_part_and_its_place() {
        let e = Query::parse("predict_linear(up[5m], 60) > 0").unwrap_err();
        assert!(e.message.contains("the function `predict_linear`"), "{e:?}");
        assert_eq!(e.offset, 0);
        let e = Query::parse("up > on(job) group_left sum by (job) (up)").unwrap_err();
        assert!(e.message.contains("group_left"), "{e:?}");
        assert_eq!(e.offset, 13);
        let e = Query::parse("up{").unwrap_err();
        assert!(e.message.contains("is not PromQL"), "{e:?}");
    }

    #[test]
    fn histogram_quantiles_interpolate_within_their_bucket() {
        let b = vec![(0.1, 10.0), (0.5, 50.0), (1.0, 90.0), (f64::INFINITY, 100.0)];
        assert!((bucket_quantile(0.5, b.clone()) - 0.5).abs() < 1e-9);
        assert!((bucket_quantile(0.9, b.clone()) - 1.0).abs() < 1e-9);
        assert_eq!(bucket_quantile(0.99, b), 1.0, "the top bucket answers its lower bound");
    }
}
