//! Pure planning: the batches of a rolling update (Kubernetes' max_surge/max_unavailable
//! arithmetic), the human plan `slipway deploy --dry-run` prints, and the canary verdict over
//! a window of traffic. No IO here, so every rule is unit-tested by stepping.

use std::time::Duration;

use slipway_api::Traffic;
use slipway_model::environment::{Analysis, CanaryStep, Environment, Strategy};

/// One batch of a rolling update: the instance counts to reach before the next batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub old: u32,
    pub new: u32,
}

/// Surge and unavailability for `total` instances, Kubernetes' way: surge rounds up,
/// unavailability down, and when both end at 0 one instance may be unavailable.
pub fn fenceposts(env: &Environment) -> (u32, u32) {
    let Strategy::Rolling { max_surge, max_unavailable } = env.strategy else { return (1, 0) };
    let surge = max_surge.resolve(env.instances, true);
    let unavailable = max_unavailable.resolve(env.instances, false).min(env.instances);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// The batches that take `old` running instances to `total` new ones, never more than
/// `total + surge` at once and never fewer than `total - unavailable` available (counting
/// only instances that passed their health check: each batch waits for its new ones).
pub fn rolling_batches(old: u32, total: u32, surge: u32, unavailable: u32) -> Vec<Batch> {
    let mut out = Vec::new();
    let (mut o, mut n) = (old, 0u32);
    let min_available = total.saturating_sub(unavailable);
    while o > 0 || n < total {
        let old_target = o.min(min_available.saturating_sub(n));
        let new_target = total.min((total + surge).saturating_sub(old_target));
        if old_target == o && new_target == n {
            // No progress is possible (surge and unavailability both 0): replace one at a time.
            let b = Batch { old: o.saturating_sub(1), new: (n + 1).min(total) };
            out.push(b);
            (o, n) = (b.old, b.new);
            continue;
        }
        out.push(Batch { old: old_target, new: new_target });
        (o, n) = (old_target, new_target);
    }
    out
}

/// Instances of the new release at a canary weight (at least one).
pub fn canary_instances(total: u32, weight: u32) -> u32 {
    (u64::from(total) * u64::from(weight)).div_ceil(100).max(1) as u32
}

/// What `slipway deploy --dry-run` prints: the steps the strategy would take.
pub fn describe(env: &Environment, old: Option<(&str, u32)>, new_version: &str) -> Vec<String> {
    let n = env.instances;
    let mut steps = Vec::new();
    let health = format!("wait until healthy (deadline {})", fmt_duration(env.health.deadline));
    let Some((old_version, old_count)) = old else {
        steps.push(format!("start {n} instance(s) of {new_version}; {health}"));
        steps.push(format!("route {} to {new_version}", env.listen));
        return steps;
    };
    match &env.strategy {
        Strategy::Rolling { .. } => {
            let (surge, unavailable) = fenceposts(env);
            steps.push(format!(
                "rolling update {old_version} → {new_version}: max surge {surge}, max unavailable {unavailable}"
            ));
            for b in rolling_batches(old_count, n, surge, unavailable) {
                steps.push(format!(
                    "{old_version}: {} instance(s), {new_version}: {} instance(s); {health}",
                    b.old, b.new
                ));
            }
        }
        Strategy::Canary { steps: canary, analysis } => {
            for s in canary {
                steps.push(match s {
                    CanaryStep::Weight(w) => format!(
                        "{w}% of traffic to {new_version} ({} instance(s)); {health}",
                        if *w == 100 { n } else { canary_instances(n, *w) }
                    ),
                    CanaryStep::Pause(d) => format!(
                        "hold {} analysing {new_version} every {}: error rate ≤ {:.1}%{}",
                        fmt_duration(*d),
                        fmt_duration(analysis.interval),
                        analysis.max_error_rate * 100.0,
                        latency_limits(analysis)
                    ),
                    CanaryStep::Manual => format!("hold until `slipway approve {}`", env.name),
                });
            }
            steps.push(format!("stop {old_version} (drain, then stop)"));
        }
        Strategy::BlueGreen { preview, keep_old } => {
            steps.push(format!(
                "start {n} instance(s) of {new_version} beside {old_version}{}; {health}",
                preview.as_ref().map(|p| format!(", previewed at {p}")).unwrap_or_default()
            ));
            steps.push(format!("switch all of {} to {new_version} at once", env.listen));
            steps.push(format!("keep {old_version} running {} for an instant switch back", fmt_duration(*keep_old)));
        }
    }
    steps
}

fn latency_limits(a: &Analysis) -> String {
    let mut s = String::new();
    if let Some(p) = a.max_p95 {
        s += &format!(", p95 ≤ {}", fmt_duration(p));
    }
    if let Some(p) = a.max_p99 {
        s += &format!(", p99 ≤ {}", fmt_duration(p));
    }
    s
}

pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Latency differences below this are not held against a canary.
const LATENCY_NOISE_MS: f64 = 5.0;

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass(String),
    /// Too little traffic to judge.
    Inconclusive(String),
    Fail(String),
}

/// Judges one analysis window of the canary's traffic against the thresholds and the
/// stable release's traffic in the same window.
pub fn judge(canary: &Traffic, stable: &Traffic, a: &Analysis) -> Verdict {
    if canary.requests < a.min_requests {
        return Verdict::Inconclusive(format!(
            "{} request(s), fewer than {} to judge",
            canary.requests, a.min_requests
        ));
    }
    let rate = canary.error_rate();
    let summary = format!(
        "{} requests, {:.1}% errors{}",
        canary.requests,
        rate * 100.0,
        canary.quantile_ms(0.99).map(|p| format!(", p99 {p:.1}ms")).unwrap_or_default()
    );
    if rate > a.max_error_rate {
        return Verdict::Fail(format!(
            "error rate {:.1}% ({} of {}) is above {:.1}%",
            rate * 100.0,
            canary.errors,
            canary.requests,
            a.max_error_rate * 100.0
        ));
    }
    if a.compare_stable && stable.requests >= a.min_requests && rate > stable.error_rate() + a.max_error_rate {
        return Verdict::Fail(format!(
            "error rate {:.1}% is above the stable release's {:.1}% by more than {:.1} points",
            rate * 100.0,
            stable.error_rate() * 100.0,
            a.max_error_rate * 100.0
        ));
    }
    for (q, limit, name) in [(0.95, a.max_p95, "p95"), (0.99, a.max_p99, "p99")] {
        let Some(v) = canary.quantile_ms(q) else { continue };
        if let Some(limit) = limit
            && v > limit.as_secs_f64() * 1000.0
        {
            return Verdict::Fail(format!("{name} latency {v:.1}ms is above {}", fmt_duration(limit)));
        }
        if a.compare_stable
            && stable.requests >= a.min_requests
            && let Some(s) = stable.quantile_ms(q)
            && v > s * (1.0 + a.max_latency_increase)
            && v - s > LATENCY_NOISE_MS
        {
            return Verdict::Fail(format!(
                "{name} latency {v:.1}ms is more than {:.0}% above the stable release's {s:.1}ms",
                a.max_latency_increase * 100.0
            ));
        }
    }
    Verdict::Pass(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(old: u32, total: u32, surge: u32, unavailable: u32, expect: &[(u32, u32)]) {
        let got: Vec<(u32, u32)> =
            rolling_batches(old, total, surge, unavailable).into_iter().map(|b| (b.old, b.new)).collect();
        assert_eq!(got, expect, "old {old} total {total} surge {surge} unavailable {unavailable}");
        // Never more instances at once than the surge allows.
        for (o, n) in got {
            assert!(o + n <= (total + surge).max(old), "too many at once: {o}+{n}");
        }
    }

    #[test]
    fn rolling_batches_follow_surge_and_unavailability() {
        check(3, 3, 1, 0, &[(3, 1), (2, 2), (1, 3), (0, 3)]);
        check(3, 3, 0, 1, &[(2, 1), (1, 2), (0, 3)]);
        check(4, 4, 1, 1, &[(3, 2), (1, 4), (0, 4)]);
        check(10, 10, 3, 2, &[(8, 5), (3, 10), (0, 10)]);
        check(0, 3, 1, 0, &[(0, 3)]);
        check(2, 4, 1, 0, &[(2, 3), (1, 4), (0, 4)]);
    }

    #[test]
    fn fenceposts_round_like_kubernetes() {
        use slipway_model::environment::Scale;
        let mut env = crate::tests::env();
        env.instances = 3;
        env.strategy = Strategy::Rolling { max_surge: Scale::Percent(25), max_unavailable: Scale::Percent(25) };
        assert_eq!(fenceposts(&env), (1, 0)); // ceil(0.75) = 1, floor(0.75) = 0
        env.instances = 10;
        assert_eq!(fenceposts(&env), (3, 2));
        env.strategy = Strategy::Rolling { max_surge: Scale::Percent(10), max_unavailable: Scale::Count(0) };
        env.instances = 3;
        assert_eq!(fenceposts(&env), (1, 0));
        env.strategy = Strategy::Rolling { max_surge: Scale::Count(0), max_unavailable: Scale::Percent(10) };
        assert_eq!(fenceposts(&env), (0, 1), "both 0 → one may be unavailable");
    }

    fn traffic(requests: u64, errors: u64, slow: u64) -> Traffic {
        let mut latency = vec![0; slipway_api::LATENCY_BUCKETS_MS.len() + 1];
        latency[2] = requests - slow;
        latency[9] = slow; // 100..250 ms
        Traffic { requests, errors, latency, latency_sum_us: 0 }
    }

    #[test]
    fn canary_verdicts() {
        let a = Analysis {
            max_error_rate: 0.05,
            min_requests: 20,
            max_p99: Some(Duration::from_millis(100)),
            ..Analysis::default()
        };
        let stable = traffic(200, 0, 0);
        assert!(matches!(judge(&traffic(10, 5, 0), &stable, &a), Verdict::Inconclusive(_)));
        assert!(matches!(judge(&traffic(100, 1, 0), &stable, &a), Verdict::Pass(_)));
        match judge(&traffic(100, 30, 0), &stable, &a) {
            Verdict::Fail(why) => assert!(why.contains("30.0%"), "{why}"),
            v => panic!("{v:?}"),
        }
        match judge(&traffic(100, 0, 5), &stable, &a) {
            Verdict::Fail(why) => assert!(why.starts_with("p99"), "{why}"),
            v => panic!("{v:?}"),
        }
        // Compared with the stable release: 3% passes a 5% threshold, but not when the stable
        // release fails none and the allowed difference is 2 points.
        let strict = Analysis { max_error_rate: 0.04, ..a.clone() };
        assert!(matches!(
            judge(&traffic(100, 3, 0), &traffic(100, 0, 0), &Analysis { max_error_rate: 0.02, ..a.clone() }),
            Verdict::Fail(_)
        ));
        assert!(matches!(judge(&traffic(100, 3, 0), &traffic(100, 0, 0), &strict), Verdict::Pass(_)));
        // Latency against the stable release: 10% slow requests (100–250 ms) lift p95 far above
        // a stable p95 under 1 ms; without the comparison only the fixed p99 limit counts.
        let relaxed = Analysis { max_p99: None, ..a.clone() };
        match judge(&traffic(100, 0, 10), &traffic(100, 0, 0), &relaxed) {
            Verdict::Fail(why) => assert!(why.starts_with("p95") && why.contains("stable"), "{why}"),
            v => panic!("{v:?}"),
        }
        let alone = Analysis { compare_stable: false, ..relaxed };
        assert!(matches!(judge(&traffic(100, 0, 10), &traffic(100, 0, 0), &alone), Verdict::Pass(_)));
    }

    #[test]
    fn dry_run_lists_the_batches() {
        let env = crate::tests::env();
        let steps = describe(&env, Some(("v1", 3)), "v2");
        assert_eq!(steps.len(), 5, "{steps:#?}");
        assert!(steps[1].starts_with("v1: 3 instance(s), v2: 1 instance(s)"), "{}", steps[1]);
    }
}
