//! Series in memory: a label set (with `__name__`) and its samples in time order, bounded by a
//! retention window and a sample cap per series. A stale marker (Prometheus' special NaN) ends
//! a series at its time, as a vanished target does. [`SeriesStore::compact`] forgets what is
//! past the retention and downsamples what is older than the raw window; the store encodes to
//! bytes and back, so the server can keep a copy on disk.

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
    /// Samples newer than this are kept as collected; older ones, one per `step_ms`.
    pub raw_ms: i64,
    pub step_ms: i64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            retention_ms: 7 * 24 * 3600 * 1000,
            max_samples_per_series: 100_000,
            max_series: 100_000,
            raw_ms: 6 * 3600 * 1000,
            step_ms: 5 * 60 * 1000,
        }
    }
}

const MAGIC: &[u8] = b"slipway-series 1\n";

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

    /// Forgets samples past the retention (and series left with none), and keeps one sample
    /// per step — the step's last, which a counter's rate and a gauge's value both read right
    /// — of those older than the raw window. Returns the samples dropped.
    pub fn compact(&mut self, now_ms: i64) -> usize {
        let (oldest, raw_until, step) =
            (now_ms - self.bounds.retention_ms, now_ms - self.bounds.raw_ms, self.bounds.step_ms.max(1));
        let mut dropped = 0;
        let mut gone = 0;
        for family in self.series.values_mut() {
            family.retain(|_, samples| {
                let before = samples.len();
                samples.retain(|(t, _)| *t >= oldest);
                let split = samples.partition_point(|(t, _)| *t < raw_until);
                if split > 1 {
                    let mut kept: Vec<(i64, f64)> = Vec::with_capacity(split / 2 + 1);
                    for &(t, v) in &samples[..split] {
                        match kept.last_mut() {
                            Some(last) if last.0.div_euclid(step) == t.div_euclid(step) => *last = (t, v),
                            _ => kept.push((t, v)),
                        }
                    }
                    kept.extend_from_slice(&samples[split..]);
                    *samples = kept;
                }
                dropped += before - samples.len();
                let keep = !samples.is_empty();
                gone += usize::from(!keep);
                keep
            });
        }
        self.series.retain(|_, f| !f.is_empty());
        self.count -= gone;
        dropped
    }

    /// The whole store as bytes ([`SeriesStore::from_bytes`] reads them back).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for family in self.series.values() {
            for (labels, samples) in family {
                let l = serde_json::to_vec(labels).expect("labels serialize");
                out.extend_from_slice(&(l.len() as u32).to_le_bytes());
                out.extend_from_slice(&l);
                out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
                for (t, v) in samples {
                    out.extend_from_slice(&t.to_le_bytes());
                    out.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            }
        }
        out
    }

    /// A store from [`SeriesStore::to_bytes`], within `bounds`; what does not read is an error
    /// saying where.
    pub fn from_bytes(bytes: &[u8], bounds: Bounds) -> Result<SeriesStore, String> {
        let mut rest = bytes.strip_prefix(MAGIC).ok_or("not a slipway series file (its first line differs)")?;
        fn take<'a>(rest: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
            if rest.len() < n {
                return Err(format!("cut short in {what} ({} bytes from the end)", rest.len()));
            }
            let (a, b) = rest.split_at(n);
            *rest = b;
            Ok(a)
        }
        let mut store = SeriesStore::new(bounds);
        while !rest.is_empty() {
            let n =
                u32::from_le_bytes(take(&mut rest, 4, "a label set's length")?.try_into().expect("4 bytes")) as usize;
            let labels: Labels =
                serde_json::from_slice(take(&mut rest, n, "a label set")?).map_err(|e| format!("a label set: {e}"))?;
            let count = u32::from_le_bytes(take(&mut rest, 4, "a sample count")?.try_into().expect("4 bytes")) as usize;
            let raw = take(&mut rest, count * 16, "samples")?;
            let samples: Vec<(i64, f64)> = raw
                .chunks_exact(16)
                .map(|c| {
                    let t = i64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
                    (t, f64::from_bits(u64::from_le_bytes(c[8..].try_into().expect("8 bytes"))))
                })
                .collect();
            if samples.windows(2).any(|w| w[0].0 > w[1].0) {
                return Err(format!("the samples of {labels:?} are out of order"));
            }
            if store.count >= bounds.max_series {
                break;
            }
            let name = labels.get("__name__").cloned().unwrap_or_default();
            if store.series.entry(name).or_default().insert(labels, samples).is_none() {
                store.count += 1;
            }
        }
        Ok(store)
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
        let mut s = SeriesStore::new(Bounds {
            retention_ms: 1000,
            max_samples_per_series: 5,
            max_series: 2,
            ..Bounds::default()
        });
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

    #[test]
    fn compaction_forgets_old_series_and_downsamples_then_the_store_round_trips() {
        let bounds = Bounds { retention_ms: 100_000, raw_ms: 20_000, step_ms: 10_000, ..Bounds::default() };
        let mut s = SeriesStore::new(bounds);
        let (a, b) = (labels([("__name__", "c"), ("x", "a")]), labels([("__name__", "c"), ("x", "b")]));
        for t in 0..100 {
            s.append(&a, t * 1_000, t as f64).unwrap();
        }
        s.append(&b, 0, 1.0).unwrap();
        s.append(&a, 100_000, stale()).unwrap();
        assert_eq!(s.len(), 2);
        let dropped = s.compact(105_000);
        assert_eq!(s.len(), 1, "b is past the retention");
        let got = s.select(Some("c"), |_| true, 0, 200_000);
        let times: Vec<i64> = got[0].samples.iter().map(|x| x.0).collect();
        // 5..85 s in 10 s steps, each step's last; then the raw samples from 85 s.
        assert_eq!(&times[..3], &[9_000, 19_000, 29_000]);
        assert!(times.contains(&85_000) && times.contains(&86_000) && times.contains(&100_000), "{times:?}");
        assert!(dropped > 60, "{dropped}");
        assert!(is_stale(got[0].samples.last().unwrap().1));
        let back = SeriesStore::from_bytes(&s.to_bytes(), bounds).unwrap();
        assert_eq!(back.select(None, |_| true, 0, 200_000).len(), 1);
        assert_eq!(back.samples(), s.samples());
        assert!(is_stale(back.select(None, |_| true, 0, 200_000)[0].samples.last().unwrap().1), "NaN bits survive");
        let bytes = s.to_bytes();
        assert!(SeriesStore::from_bytes(&bytes[..bytes.len() - 3], bounds).unwrap_err().contains("cut short"));
        assert!(SeriesStore::from_bytes(b"nope", bounds).is_err());
    }
}
