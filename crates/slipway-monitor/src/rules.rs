//! Prometheus rule files as slipway holds them — groups of alerting and recording rules — and
//! their evaluation: each alerting rule keeps its active alerts and moves them through
//! Prometheus' states at every evaluation (inactive → pending → firing after `for`; a firing
//! alert whose condition ends stays firing for `keep_firing_for`, then is resolved and kept 15
//! minutes to be reported so). Recording rules write their result back as series.

use std::collections::BTreeMap;

use crate::promql::Query;
use crate::series::{Labels, SeriesStore};
use crate::template::Template;

/// How long a resolved alert is kept (Prometheus' `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, Clone)]
pub struct RuleFile {
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// `interval:`; the evaluation interval of the server when absent.
    pub interval_ms: Option<i64>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub enum Rule {
    Alert(AlertRule),
    Record(RecordRule),
}

#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub query: Query,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: Vec<(String, Template)>,
    pub annotations: Vec<(String, Template)>,
}

#[derive(Debug, Clone)]
pub struct RecordRule {
    pub name: String,
    pub query: Query,
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Inactive,
    Pending,
    Firing,
}

/// One alert of a rule: one label set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: Labels,
    pub state: State,
    pub value: f64,
    pub active_at_ms: i64,
    pub fired_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    #[serde(skip)]
    keep_firing_since_ms: Option<i64>,
}

/// An alerting rule's active alerts, by label set.
#[derive(Debug, Clone, Default)]
pub struct AlertState {
    pub active: BTreeMap<Labels, Alert>,
}

impl AlertRule {
    /// One evaluation at `t`: the rule's alerts afterwards (`state.active`), as Prometheus'
    /// `AlertingRule.Eval`.
    pub fn eval(&self, store: &SeriesStore, t: i64, external: &Labels, state: &mut AlertState) -> Result<(), String> {
        let samples = self.query.eval_vector(store, t)?;
        let mut now: BTreeMap<Labels, Alert> = BTreeMap::new();
        for s in samples {
            let mut metric = s.labels.clone();
            metric.remove("__name__");
            let mut labels = metric.clone();
            for (k, tpl) in &self.labels {
                labels.insert(k.clone(), tpl.render(&metric, s.value, external));
            }
            labels.insert("alertname".into(), self.name.clone());
            let annotations =
                self.annotations.iter().map(|(k, tpl)| (k.clone(), tpl.render(&metric, s.value, external))).collect();
            if now.contains_key(&labels) {
                return Err(format!("alert `{}`: two series with the same labels after adding the rule's", self.name));
            }
            now.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations,
                    state: State::Pending,
                    value: s.value,
                    active_at_ms: t,
                    fired_at_ms: None,
                    resolved_at_ms: None,
                    keep_firing_since_ms: None,
                },
            );
        }
        for (k, a) in &now {
            match state.active.get_mut(k) {
                Some(old) if old.state != State::Inactive => {
                    old.value = a.value;
                    old.annotations = a.annotations.clone();
                    old.keep_firing_since_ms = None;
                }
                _ => {
                    state.active.insert(k.clone(), a.clone());
                }
            }
        }
        let mut gone = Vec::new();
        for (k, a) in state.active.iter_mut() {
            if !now.contains_key(k) {
                let mut keep = false;
                if a.state == State::Firing && self.keep_firing_for_ms > 0 {
                    let since = *a.keep_firing_since_ms.get_or_insert(t);
                    keep = t - since < self.keep_firing_for_ms;
                }
                if !keep {
                    if a.state == State::Pending || a.resolved_at_ms.is_some_and(|r| t - r > RESOLVED_RETENTION_MS) {
                        gone.push(k.clone());
                    }
                    if a.state != State::Inactive {
                        a.state = State::Inactive;
                        a.resolved_at_ms = Some(t);
                    }
                    continue;
                }
            }
            if a.state == State::Pending && t - a.active_at_ms >= self.for_ms {
                a.state = State::Firing;
                a.fired_at_ms = Some(t);
            }
        }
        for k in gone {
            state.active.remove(&k);
        }
        Ok(())
    }
}

impl RecordRule {
    /// Evaluates at `t` and appends the result as series named after the rule.
    pub fn eval(&self, store: &mut SeriesStore, t: i64) -> Result<usize, String> {
        let samples = self.query.eval_vector(store, t)?;
        let n = samples.len();
        for s in samples {
            let mut l = s.labels;
            l.insert("__name__".into(), self.name.clone());
            for (k, v) in &self.labels {
                l.insert(k.clone(), v.clone());
            }
            store.append(&l, t, s.value).map_err(|e| e.to_string())?;
        }
        Ok(n)
    }
}

/// Every rule of a file with its state, evaluated group by group, rule by rule, in order.
#[derive(Debug, Clone, Default)]
pub struct Evaluator {
    pub states: BTreeMap<(usize, usize), AlertState>,
}

impl Evaluator {
    pub fn eval(&mut self, file: &RuleFile, store: &mut SeriesStore, t: i64, external: &Labels) -> Vec<String> {
        let mut errors = Vec::new();
        for (g, group) in file.groups.iter().enumerate() {
            for (r, rule) in group.rules.iter().enumerate() {
                let res = match rule {
                    Rule::Alert(a) => a.eval(store, t, external, self.states.entry((g, r)).or_default()),
                    Rule::Record(rec) => rec.eval(store, t).map(drop),
                };
                if let Err(e) = res {
                    errors.push(format!("group `{}`: {e}", group.name));
                }
            }
        }
        errors
    }

    /// The alerts of the rule named `alert` in this state.
    pub fn alerts(&self, file: &RuleFile, alert: &str, state: State) -> Vec<&Alert> {
        let mut out = Vec::new();
        for (g, group) in file.groups.iter().enumerate() {
            for (r, rule) in group.rules.iter().enumerate() {
                if let Rule::Alert(a) = rule
                    && a.name == alert
                    && let Some(s) = self.states.get(&(g, r))
                {
                    out.extend(s.active.values().filter(|x| x.state == state));
                }
            }
        }
        out
    }
}
