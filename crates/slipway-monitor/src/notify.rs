//! Alertmanager's notification pipeline as the server runs it: alerts — from rules and from
//! events (a pipeline failed, a deploy rolled back) — go down a routing tree of matchers, are
//! grouped per route by `group_by`, muted by silences, and each group is told as one
//! notification `group_wait` after its first alert, then at most once per `group_interval`
//! when what fires changes, and again every `repeat_interval` while anything still fires.
//! Once per state: an alert already told as firing is not told again until it resolves or the
//! repeat interval has passed, so a check that flaps between evaluations sends no storm.
//! Pure: time is passed in, and the state serializes (the server keeps it in its store).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::series::Labels;

/// `name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`: Alertmanager's matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<regex::Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    Nre,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Matcher) -> bool {
        (self.name.as_str(), self.op, self.value.as_str()) == (o.name.as_str(), o.op, o.value.as_str())
    }
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        if !valid_label_name(name) {
            return Err(format!("`{name}` is not a label name"));
        }
        let re = match op {
            MatchOp::Re | MatchOp::Nre => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("`{value}` is not a regular expression: {}", first_line(&e.to_string())))?,
            ),
            _ => None,
        };
        Ok(Matcher { name: name.into(), op, value: value.into(), re })
    }

    /// Parses one matcher as Alertmanager's `matchers:` and `amtool` write them; the value may
    /// be quoted (with `\"` and `\\` escapes) or bare.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let t = text.trim();
        let at = t
            .find(['=', '!'])
            .ok_or_else(|| format!("`{t}` is not a matcher: write `name=\"value\"` (or `!=`, `=~`, `!~`)"))?;
        let name = t[..at].trim();
        let rest = &t[at..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::Nre, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::Ne, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Eq, v)
        } else {
            return Err(format!("`{t}` is not a matcher: after `{name}` comes `=`, `!=`, `=~` or `!~`"));
        };
        let value = unquote(value.trim()).map_err(|why| format!("`{t}`: {why}"))?;
        Matcher::new(name, op, &value)
    }

    /// A list as `{a="b", c=~"d"}` or `a="b",c=~"d"`.
    pub fn parse_list(text: &str) -> Result<Vec<Matcher>, String> {
        let t = text.trim();
        let t = t.strip_prefix('{').and_then(|x| x.strip_suffix('}')).unwrap_or(t);
        let mut out = Vec::new();
        let (mut start, mut quoted, mut escaped) = (0, false, false);
        for (i, c) in t.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    if !t[start..i].trim().is_empty() {
                        out.push(Matcher::parse(&t[start..i])?);
                    }
                    start = i + 1;
                }
                _ => {}
            }
        }
        if !t[start..].trim().is_empty() {
            out.push(Matcher::parse(&t[start..])?);
        }
        Ok(out)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::Nre => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::Nre => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Matcher, D::Error> {
        let s = String::deserialize(d)?;
        Matcher::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}

fn unquote(v: &str) -> Result<String, String> {
    let Some(inner) = v.strip_prefix('"') else {
        if v.contains('"') {
            return Err("a bare value has no `\"`: quote the whole value".into());
        }
        return Ok(v.to_string());
    };
    let inner = inner.strip_suffix('"').ok_or("the value's quote is never closed")?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(x @ ('"' | '\\')) => out.push(x),
                Some(x) => return Err(format!("`\\{x}` is not an escape (use `\\\"`, `\\\\` or `\\n`)")),
                None => return Err("the value ends in `\\`".into()),
            },
            '"' => return Err("a `\"` inside the value must be written `\\\"`".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

pub fn valid_label_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !s.as_bytes()[0].is_ascii_digit()
}

/// Which labels make a group: the listed ones, or every label (`group_by: ['...']`).
#[derive(Debug, Clone, PartialEq)]
pub enum GroupBy {
    Labels(Vec<String>),
    All,
}

/// One node of the routing tree; children were given their parent's settings where they set
/// none when the file was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub group_by: GroupBy,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    /// Go on to the next sibling after this route matched.
    pub continue_matching: bool,
    pub routes: Vec<Route>,
}

impl Default for Route {
    /// Alertmanager's defaults: group by nothing, 30 s, 5 min, 4 h.
    fn default() -> Route {
        Route {
            receiver: String::new(),
            matchers: Vec::new(),
            group_by: GroupBy::Labels(Vec::new()),
            group_wait_ms: 30_000,
            group_interval_ms: 300_000,
            repeat_interval_ms: 4 * 3_600_000,
            continue_matching: false,
            routes: Vec::new(),
        }
    }
}

impl Route {
    /// The routes an alert goes to, each with its path in the tree (`0`, `0.2`, …): depth
    /// first, the first matching child (and the ones after it while `continue` is set), the
    /// node itself when no child matches. The root matches everything.
    pub fn routes_for<'r>(&'r self, labels: &Labels) -> Vec<(String, &'r Route)> {
        let mut out = Vec::new();
        self.walk(labels, "0".into(), &mut out);
        out
    }

    fn walk<'r>(&'r self, labels: &Labels, path: String, out: &mut Vec<(String, &'r Route)>) {
        let before = out.len();
        for (i, child) in self.routes.iter().enumerate() {
            if child.matchers.iter().all(|m| m.matches(labels)) {
                child.walk(labels, format!("{path}.{i}"), out);
                if !child.continue_matching {
                    break;
                }
            }
        }
        if out.len() == before {
            out.push((path, self));
        }
    }

    /// Every receiver the tree names.
    pub fn receivers(&self) -> Vec<&str> {
        let mut out = vec![self.receiver.as_str()];
        for r in &self.routes {
            out.extend(r.receivers());
        }
        out
    }

    fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => {
                names.iter().filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone()))).collect()
            }
        }
    }
}

/// An alert as notifications carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at_ms: i64,
    /// When it resolved; `None` while it fires.
    #[serde(default)]
    pub ends_at_ms: Option<i64>,
    #[serde(default)]
    pub generator_url: String,
    /// An event told once (a deploy started, a pipeline canceled): never resolved, and gone
    /// from its group once told.
    #[serde(default)]
    pub once: bool,
}

impl Notice {
    pub fn resolved(&self, now: i64) -> bool {
        self.ends_at_ms.is_some_and(|e| e <= now)
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.labels)
    }
}

/// Alertmanager's alert fingerprint: a 64-bit FNV-1a of the sorted label pairs, 16 hex digits.
pub fn fingerprint(labels: &Labels) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for (k, v) in labels {
        k.bytes().for_each(&mut eat);
        eat(0xff);
        v.bytes().for_each(&mut eat);
        eat(0xff);
    }
    format!("{h:016x}")
}

/// A silence: alerts its matchers all match are not told while it is active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
}

impl Silence {
    pub fn active(&self, now: i64) -> bool {
        self.starts_at_ms <= now && now < self.ends_at_ms
    }

    pub fn mutes(&self, labels: &Labels, now: i64) -> bool {
        self.active(now) && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// The alerts of one route with one set of group labels, and what was last told of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub route: String,
    pub receiver: String,
    pub labels: Labels,
    /// By fingerprint.
    pub alerts: BTreeMap<String, Notice>,
    pub next_flush_ms: i64,
    /// The fingerprints told as firing in the last notification, and when.
    #[serde(default)]
    pub told_firing: BTreeSet<String>,
    #[serde(default)]
    pub told_at_ms: Option<i64>,
}

/// One notification to deliver: a group's alerts, firing and resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Alertmanager's `groupKey`: the route and the group labels.
    pub key: String,
    pub receiver: String,
    pub group_labels: Labels,
    pub alerts: Vec<Notice>,
    /// When it was made.
    pub at_ms: i64,
}

impl Notification {
    /// `firing` when anything fires, else `resolved`.
    pub fn status(&self) -> &'static str {
        if self.alerts.iter().any(|a| !a.resolved(self.at_ms)) { "firing" } else { "resolved" }
    }

    pub fn firing(&self) -> impl Iterator<Item = &Notice> {
        self.alerts.iter().filter(|a| !a.resolved(self.at_ms))
    }

    pub fn resolved(&self) -> impl Iterator<Item = &Notice> {
        self.alerts.iter().filter(|a| a.resolved(self.at_ms))
    }

    /// The labels every alert has with the same value.
    pub fn common_labels(&self) -> Labels {
        common(self.alerts.iter().map(|a| &a.labels))
    }

    pub fn common_annotations(&self) -> Labels {
        common(self.alerts.iter().map(|a| &a.annotations))
    }
}

fn common<'a>(mut sets: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = sets.next() else { return Labels::new() };
    let mut out = first.clone();
    for s in sets {
        out.retain(|k, v| s.get(k) == Some(v));
    }
    out
}

/// Every group, by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dispatcher {
    pub groups: BTreeMap<String, Group>,
}

fn group_key(route: &str, labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{route}:{{{}}}", pairs.join(","))
}

impl Dispatcher {
    /// Takes in an alert (new, updated or resolved) at `now`; returns whether any group
    /// changed. A resolution of an alert no group holds is nothing to tell.
    pub fn insert(&mut self, root: &Route, notice: &Notice, now: i64) -> bool {
        let fp = notice.fingerprint();
        let mut changed = false;
        for (path, route) in root.routes_for(&notice.labels) {
            let labels = route.group_labels(&notice.labels);
            let key = group_key(&path, &labels);
            let known =
                self.groups.get(&key).is_some_and(|g| g.alerts.contains_key(&fp) || g.told_firing.contains(&fp));
            if notice.ends_at_ms.is_some() && !known {
                continue;
            }
            let group = self.groups.entry(key).or_insert_with(|| Group {
                route: path.clone(),
                receiver: route.receiver.clone(),
                labels,
                alerts: BTreeMap::new(),
                next_flush_ms: now + route.group_wait_ms,
                told_firing: BTreeSet::new(),
                told_at_ms: None,
            });
            let mut n = notice.clone();
            if let Some(old) = group.alerts.get(&fp) {
                if old == &n {
                    continue;
                }
                // The same alert again: it started when it first did.
                if old.ends_at_ms.is_none() {
                    n.starts_at_ms = n.starts_at_ms.min(old.starts_at_ms);
                }
            }
            group.alerts.insert(fp.clone(), n);
            changed = true;
        }
        changed
    }

    /// The earliest time a group is due.
    pub fn next_due(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush_ms).min()
    }

    /// The notifications due at `now`, each group's told state moved on. Silenced alerts are
    /// left out (and, resolved, forgotten).
    pub fn flush(&mut self, root: &Route, now: i64, muted: &dyn Fn(&Labels) -> bool) -> Vec<Notification> {
        let mut out = Vec::new();
        let routes = route_index(root);
        for (key, g) in self.groups.iter_mut() {
            if g.next_flush_ms > now {
                continue;
            }
            // A route that no longer exists (the file changed): its group goes.
            let Some(route) = routes.get(g.route.as_str()) else {
                g.alerts.clear();
                continue;
            };
            let told: Vec<Notice> = g.alerts.values().filter(|a| !muted(&a.labels)).cloned().collect();
            let firing: BTreeSet<String> = told.iter().filter(|a| !a.resolved(now)).map(Notice::fingerprint).collect();
            let resolved_told = told.iter().any(|a| a.resolved(now) && g.told_firing.contains(&a.fingerprint()));
            let repeat = !firing.is_empty() && g.told_at_ms.is_none_or(|t| now - t >= route.repeat_interval_ms);
            let needs = !firing.is_subset(&g.told_firing) || resolved_told || repeat;
            if needs {
                let alerts: Vec<Notice> =
                    told.into_iter().filter(|a| !a.resolved(now) || g.told_firing.contains(&a.fingerprint())).collect();
                out.push(Notification {
                    key: key.clone(),
                    receiver: g.receiver.clone(),
                    group_labels: g.labels.clone(),
                    alerts,
                    at_ms: now,
                });
                g.told_firing = firing;
                g.told_at_ms = Some(now);
            }
            // Resolved alerts and events told once leave the group; an empty group goes.
            g.alerts.retain(|_, a| !a.resolved(now) && !(a.once && (needs || muted(&a.labels))));
            g.next_flush_ms = now + route.group_interval_ms;
        }
        self.groups.retain(|_, g| !g.alerts.is_empty());
        out
    }
}

fn route_index(root: &Route) -> BTreeMap<String, &Route> {
    fn add<'r>(r: &'r Route, path: String, out: &mut BTreeMap<String, &'r Route>) {
        for (i, c) in r.routes.iter().enumerate() {
            add(c, format!("{path}.{i}"), out);
        }
        out.insert(path, r);
    }
    let mut out = BTreeMap::new();
    add(root, "0".into(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn alert(name: &str, extra: &[(&str, &str)], at: i64) -> Notice {
        let mut labels = l(extra);
        labels.insert("alertname".into(), name.into());
        Notice {
            labels,
            annotations: Labels::new(),
            starts_at_ms: at,
            ends_at_ms: None,
            generator_url: String::new(),
            once: false,
        }
    }

    fn tree() -> Route {
        Route {
            receiver: "team".into(),
            group_by: GroupBy::Labels(vec!["alertname".into()]),
            group_wait_ms: 1_000,
            group_interval_ms: 10_000,
            repeat_interval_ms: 60_000,
            routes: vec![
                Route {
                    receiver: "pager".into(),
                    matchers: vec![Matcher::parse("severity=\"page\"").unwrap()],
                    continue_matching: true,
                    group_by: GroupBy::Labels(vec!["alertname".into()]),
                    group_wait_ms: 0,
                    group_interval_ms: 10_000,
                    repeat_interval_ms: 60_000,
                    ..Route::default()
                },
                Route {
                    receiver: "shop".into(),
                    matchers: Matcher::parse_list("{project=~\"shop|web\", env!=\"dev\"}").unwrap(),
                    group_by: GroupBy::All,
                    group_wait_ms: 0,
                    group_interval_ms: 10_000,
                    repeat_interval_ms: 60_000,
                    ..Route::default()
                },
            ],
            ..Route::default()
        }
    }

    #[test]
    fn matchers_parse_as_alertmanager_writes_them_and_say_what_is_wrong() {
        let m = Matcher::parse(r#"summary="say \"hi\"""#).unwrap();
        assert_eq!((m.name.as_str(), m.op, m.value.as_str()), ("summary", MatchOp::Eq, "say \"hi\""));
        assert_eq!(Matcher::parse("env != prod").unwrap().op, MatchOp::Ne);
        assert_eq!(Matcher::parse("a=~b.*").unwrap().to_string(), r#"a=~"b.*""#);
        let list = Matcher::parse_list(r#"{a="x,y", b!~"z"}"#).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].value, "x,y");
        assert!(Matcher::parse("nothing").unwrap_err().contains("write `name=\"value\"`"));
        assert!(Matcher::parse("a=~(").unwrap_err().contains("not a regular expression"));
        assert!(Matcher::parse("1a=b").unwrap_err().contains("not a label name"));
        assert!(Matcher::parse(r#"a="b"#).unwrap_err().contains("never closed"));
        let back: Matcher = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        // Regexes are anchored, as Alertmanager's.
        assert!(!Matcher::parse("p=~sho").unwrap().matches(&l(&[("p", "shop")])));
        // A missing label is the empty value.
        assert!(Matcher::parse("p=\"\"").unwrap().matches(&Labels::new()));
    }

    #[test]
    fn alerts_take_the_routes_alertmanager_would() {
        let t = tree();
        let names = |labels: &Labels| {
            t.routes_for(labels).into_iter().map(|(p, r)| (p, r.receiver.clone())).collect::<Vec<_>>()
        };
        assert_eq!(
            names(&l(&[("severity", "page"), ("project", "shop")])),
            [("0.0".to_string(), "pager".to_string()), ("0.1".to_string(), "shop".to_string())]
        );
        assert_eq!(names(&l(&[("project", "shop"), ("env", "dev")])), [("0".to_string(), "team".to_string())]);
        assert_eq!(t.receivers(), ["team", "pager", "shop"]);
    }

    #[test]
    fn a_group_is_told_after_group_wait_then_once_per_state_and_again_after_repeat_interval() {
        let t = tree();
        let mut d = Dispatcher::default();
        let a = alert("Down", &[("instance", "a")], 0);
        assert!(d.insert(&t, &a, 0));
        assert!(d.flush(&t, 500, &|_| false).is_empty(), "group_wait is 1 s");
        let n = d.flush(&t, 1_000, &|_| false);
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].status(), n[0].receiver.as_str(), n[0].alerts.len()), ("firing", "team", 1));
        assert_eq!(n[0].key, r#"0:{alertname="Down"}"#);
        // The same alert again and again: nothing new to tell, at every group interval.
        for t_ms in [5_000, 11_000, 21_000, 31_000, 51_000] {
            d.insert(&t, &alert("Down", &[("instance", "a")], t_ms), t_ms);
            assert!(d.flush(&t, t_ms, &|_| false).is_empty(), "at {t_ms}");
        }
        // A second instance joins: told at the next group interval, with both.
        d.insert(&t, &alert("Down", &[("instance", "b")], 55_000), 55_000);
        assert!(d.flush(&t, 55_000, &|_| false).is_empty());
        let n = d.flush(&t, 61_000, &|_| false);
        assert_eq!(n[0].firing().count(), 2);
        // Still firing after the repeat interval: told again.
        assert!(d.flush(&t, 111_000, &|_| false).is_empty());
        assert_eq!(d.flush(&t, 121_000, &|_| false).len(), 1);
        // One resolves: told as resolved with the one still firing; then it is gone.
        let mut r = alert("Down", &[("instance", "a")], 0);
        r.ends_at_ms = Some(125_000);
        d.insert(&t, &r, 125_000);
        let n = d.flush(&t, 131_000, &|_| false);
        assert_eq!((n[0].firing().count(), n[0].resolved().count()), (1, 1));
        assert_eq!(d.groups.values().next().unwrap().alerts.len(), 1);
        // A resolution of an alert never told is nothing.
        let mut ghost = alert("Other", &[], 0);
        ghost.ends_at_ms = Some(130_000);
        assert!(!d.insert(&t, &ghost, 130_000));
    }

    #[test]
    fn a_flapping_alert_sends_at_most_one_notification_per_group_interval() {
        let t = tree();
        let mut d = Dispatcher::default();
        let mut sent = 0;
        // Fires and resolves every 2 s for 100 s, flushed every second.
        for s in 0..100i64 {
            let now = s * 1_000;
            let mut a = alert("Flappy", &[], (s / 2) * 2_000);
            if s % 2 == 1 {
                a.ends_at_ms = Some(now);
            }
            d.insert(&t, &a, now);
            sent += d.flush(&t, now, &|_| false).len();
        }
        assert!(sent <= 100 / 10 + 1, "{sent} notifications");
    }

    #[test]
    fn silences_mute_and_events_told_once_leave_their_group() {
        let t = tree();
        let mut d = Dispatcher::default();
        let s = Silence {
            id: "1".into(),
            matchers: vec![Matcher::parse("instance=\"a\"").unwrap()],
            starts_at_ms: 0,
            ends_at_ms: 10_000,
            created_by: "alice".into(),
            comment: "maintenance".into(),
        };
        let muted = |l: &Labels| s.mutes(l, 2_000);
        d.insert(&t, &alert("Down", &[("instance", "a")], 0), 0);
        assert!(d.flush(&t, 2_000, &muted).is_empty());
        assert!(!s.mutes(&l(&[("instance", "a")]), 10_000), "expired");
        let mut e = alert("DeployStarted", &[("release", "7")], 0);
        e.once = true;
        d.insert(&t, &e, 3_000);
        let n = d.flush(&t, 4_000, &|_| false);
        assert_eq!(n.len(), 1);
        assert!(!d.groups.contains_key(r#"0:{alertname="DeployStarted"}"#));
        // The muted alert is told once its silence ends.
        let n = d.flush(&t, 12_000, &|_| false);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].alerts[0].labels["instance"], "a");
        // The state round-trips (the server keeps it in its store).
        let back: Dispatcher = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn notifications_carry_common_labels() {
        let n = Notification {
            key: "k".into(),
            receiver: "r".into(),
            group_labels: Labels::new(),
            alerts: vec![alert("A", &[("x", "1"), ("y", "2")], 0), alert("A", &[("x", "1"), ("y", "3")], 0)],
            at_ms: 5,
        };
        assert_eq!(n.common_labels(), l(&[("alertname", "A"), ("x", "1")]));
        assert_eq!(fingerprint(&l(&[("a", "b")])).len(), 16);
    }
}
