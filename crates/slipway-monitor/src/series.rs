//! Series in memory: a label set (with `__name__`) and its samples in time order, bounded by a
//! retention window and a sample cap per series. A stale marker (Prometheus' special NaN) ends
//! a series at its time, as a vanished target does.

use std::collections::BTreeMap;

/// A label set, sorted by name; the metric name is the `__name__` label.
pub type Labels = BTreeMap<String, String>;

/// The NaN Prometheus writes when a series goes away (`stale` in promtool's input).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn stale() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    /// (milliseconds, value), ascending.
    pub samples: Vec<(i64, f64)>,
}

/// What a store may hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Samples older than this (from the newest of the series) are dropped.
    pub retention_ms: i64,
    pub max_samples_per_series: usize,
    pub max_series: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { retention_ms: 7 * 24 * 3600 * 1000, max_samples_per_series: 100_000, max_series: 100_000 }
    }
}

/// Series by metric name, then by label set: a selector with a name reads only its own.
#[derive(Debug, Default, Clone)]
pub struct SeriesStore {
    series: BTreeMap<String, BTreeMap<Labels, Vec<(i64, f64)>>>,
    count: usize,
    bounds: Bounds,
}

/// Why a sample was not kept.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AppendError {
    #[error("sample at {at} ms is older than the series' newest ({newest} ms)")]
    OutOfOrder { at: i64, newest: i64 },
    #[error("the store holds {0} series, its limit: drop series or raise the limit")]
    TooManySeries(usize),
}

impl SeriesStore {
    pub fn new(bounds: Bounds) -> SeriesStore {
        SeriesStore { series: BTreeMap::new(), count: 0, bounds }
    }

    /// Appends a sample (in time order per series); a sample at the newest's time replaces it.
    pub fn append(&mut self, labels: &Labels, at_ms: i64, value: f64) -> Result<(), AppendError> {
        let name = labels.get("__name__").cloned().unwrap_or_default();
        let family = self.series.entry(name).or_default();
        if !family.contains_key(labels) {
            if self.count >= self.bounds.max_series {
                return Err(AppendError::TooManySeries(self.count));
            }
            self.count += 1;
        }
        let samples = family.entry(labels.clone()).or_default();
        match samples.last_mut() {
            Some((t, _)) if *t > at_ms => return Err(AppendError::OutOfOrder { at: at_ms, newest: *t }),
            Some((t, v)) if *t == at_ms => *v = value,
            _ => samples.push((at_ms, value)),
        }
        let oldest = at_ms - self.bounds.retention_ms;
        let drop = samples.partition_point(|(t, _)| *t < oldest);
        let over = samples.len().saturating_sub(self.bounds.max_samples_per_series);
        let cut = drop.max(over);
        if cut > 0 {
            samples.drain(..cut);
        }
        Ok(())
    }

    /// Every series (of metric `name`, when given) whose labels `keep` accepts, with its
    /// samples in `[from, to]`.
    pub fn select(&self, name: Option<&str>, keep: impl Fn(&Labels) -> bool, from_ms: i64, to_ms: i64) -> Vec<Series> {
        let families: Vec<&BTreeMap<Labels, Vec<(i64, f64)>>> = match name {
            Some(n) => self.series.get(n).into_iter().collect(),
            None => self.series.values().collect(),
        };
        families
            .into_iter()
            .flat_map(|f| f.iter())
            .filter(|(l, _)| keep(l))
            .filter_map(|(l, s)| {
                let a = s.partition_point(|(t, _)| *t < from_ms);
                let b = s.partition_point(|(t, _)| *t <= to_ms);
                (a < b).then(|| Series { labels: l.clone(), samples: s[a..b].to_vec() })
            })
            .collect()
    }

    /// Every series' newest sample (for an exposition of what the store holds).
    pub fn latest(&self) -> Vec<(Labels, i64, f64)> {
        self.series
            .values()
            .flat_map(|f| f.iter())
            .filter_map(|(l, s)| s.last().map(|(t, v)| (l.clone(), *t, *v)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn samples(&self) -> usize {
        self.series.values().flat_map(|f| f.values()).map(Vec::len).sum()
    }
}

/// A label set from pairs.
pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_kept_in_order_within_their_bounds() {
        let mut s = SeriesStore::new(Bounds { retention_ms: 1000, max_samples_per_series: 5, max_series: 2 });
        let a = labels([("__name__", "up"), ("instance", "a")]);
        for t in 0..10 {
            s.append(&a, t * 100, t as f64).unwrap();
        }
        assert_eq!(s.samples(), 5, "capped per series");
        assert!(matches!(s.append(&a, 0, 1.0), Err(AppendError::OutOfOrder { .. })));
        s.append(&a, 5000, 1.0).unwrap();
        assert_eq!(s.samples(), 1, "older than the retention is dropped");
        s.append(&labels([("__name__", "b")]), 0, 1.0).unwrap();
        assert!(matches!(s.append(&labels([("__name__", "c")]), 0, 1.0), Err(AppendError::TooManySeries(2))));
        let got = s.select(None, |l| l.get("instance").is_some(), 0, 6000);
        assert_eq!(got.len(), 1);
    }
}
