//! slipway's monitoring core, pure and synchronous: [`series`] keeps samples per label set in
//! memory, bounded; [`promql`] evaluates the documented PromQL subset over them exactly as
//! Prometheus 2.x does (lookback, extrapolated rates, vector matching); [`rules`] holds
//! alerting and recording rules and steps them through Prometheus' states (pending → firing →
//! resolved, `for`, `keep_firing_for`) with annotations templated from `$labels` and
//! `$value`; [`unittest`] runs promtool's rule-test files, so the same file checks slipway and
//! `promtool test rules`. [`notify`] is Alertmanager's routing, grouping, silencing and
//! once-per-state dispatch; [`channels`] the receivers and the bodies each channel sends.

pub mod channels;
pub mod notify;
pub mod promql;
pub mod rules;
pub mod series;
pub mod template;
pub mod unittest;

pub use series::{Labels, Series, SeriesStore};
