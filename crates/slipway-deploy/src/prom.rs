//! A canary judged by an external Prometheus too (`analysis.prometheus`): at each analysis
//! interval every query is sent to its HTTP API (`/api/v1/query`) with `$VERSION` and its
//! kin replaced, and a value above `max` (or below `min`) fails the canary. A Prometheus that
//! does not answer, or a query with no data, cannot judge: that window is inconclusive.

use std::time::Duration;

use slipway_model::environment::PromAnalysis;

use crate::plan::Verdict;

/// Replaces `$VERSION`, `$STABLE_VERSION`, `$ENVIRONMENT`, `$RELEASE` (longest names first).
pub fn substitute(query: &str, vars: &[(&str, &str)]) -> String {
    let mut vars = vars.to_vec();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = query.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${k}"), v);
    }
    out
}

fn split(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/').to_string()),
        None => (rest, String::new()),
    };
    let (host, port) = hostport.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']').to_string(), port.parse().ok()?, prefix))
}

/// One query's values (a vector's samples, or a scalar).
async fn values(p: &PromAnalysis, query: &str) -> Result<Vec<f64>, String> {
    let (host, port, prefix) = split(&p.url).ok_or_else(|| format!("`{}` is not http://HOST:PORT", p.url))?;
    let q = form_urlencoded::Serializer::new(String::new()).append_pair("query", query).finish();
    let path = format!("{prefix}/api/v1/query?{q}");
    let r =
        slipway_net::tcp(&host, port, slipway_net::HttpMethod::GET, &path, p.timeout.max(Duration::from_millis(100)))
            .await
            .map_err(|e| format!("Prometheus at {} does not answer: {e}", p.url))?;
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .map_err(|_| format!("Prometheus at {} answered {} with no JSON", p.url, r.status))?;
    if v["status"] != "success" {
        return Err(format!("Prometheus refused `{query}`: {}", v["error"].as_str().unwrap_or("no reason given")));
    }
    let num = |x: &serde_json::Value| x[1].as_str().and_then(|s| s.parse::<f64>().ok());
    match v["data"]["resultType"].as_str() {
        Some("vector") => {
            Ok(v["data"]["result"].as_array().into_iter().flatten().filter_map(|s| num(&s["value"])).collect())
        }
        Some("scalar") => Ok(num(&v["data"]["result"]).into_iter().collect()),
        other => Err(format!("`{query}` gives a {}, not a vector or a scalar", other.unwrap_or("nothing"))),
    }
}

/// Every query at this moment: the first bound crossed fails, no data is inconclusive.
pub async fn judge(p: &PromAnalysis, vars: &[(&str, &str)]) -> Verdict {
    let mut seen = Vec::new();
    for c in &p.queries {
        let q = substitute(&c.query, vars);
        let vals = match values(p, &q).await {
            Ok(v) => v,
            Err(why) => return Verdict::Inconclusive(why),
        };
        if vals.is_empty() {
            return Verdict::Inconclusive(format!("Prometheus has no data for `{q}`"));
        }
        for x in &vals {
            if let Some(max) = c.max
                && (*x > max || x.is_nan())
            {
                return Verdict::Fail(format!("Prometheus: `{q}` is {x} (above {max})"));
            }
            if let Some(min) = c.min
                && (*x < min || x.is_nan())
            {
                return Verdict::Fail(format!("Prometheus: `{q}` is {x} (below {min})"));
            }
        }
        seen.push(format!("`{q}` = {}", vals.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")));
    }
    Verdict::Pass(seen.join("; "))
}

/// The proxy's verdict and Prometheus': a failure of either fails; a pass of either with no
/// failure passes; else it could not be judged.
pub fn combine(proxy: Verdict, prom: Verdict) -> Verdict {
    match (proxy, prom) {
        (Verdict::Fail(w), _) | (_, Verdict::Fail(w)) => Verdict::Fail(w),
        (Verdict::Pass(a), Verdict::Pass(b)) => Verdict::Pass(format!("{a}; {b}")),
        (Verdict::Pass(a), Verdict::Inconclusive(b)) => Verdict::Pass(format!("{a}; not judged by Prometheus: {b}")),
        (Verdict::Inconclusive(a), Verdict::Pass(b)) => Verdict::Pass(format!("{b} (proxy: {a})")),
        (Verdict::Inconclusive(a), Verdict::Inconclusive(b)) => Verdict::Inconclusive(format!("{a}; {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_replaced_longest_first_and_urls_split() {
        let q = substitute(
            "x{v=\"$VERSION\",s=\"$STABLE_VERSION\",e=\"$ENVIRONMENT\"}",
            &[("VERSION", "v2"), ("STABLE_VERSION", "v1"), ("ENVIRONMENT", "prod")],
        );
        assert_eq!(q, "x{v=\"v2\",s=\"v1\",e=\"prod\"}");
        assert_eq!(split("http://127.0.0.1:9090"), Some(("127.0.0.1".into(), 9090, String::new())));
        assert_eq!(split("http://prom:9090/prometheus/"), Some(("prom".into(), 9090, "/prometheus".into())));
        assert_eq!(split("https://prom:9090"), None);
    }

    #[test]
    fn a_failure_of_either_side_fails() {
        let (p, f, i) =
            (|| Verdict::Pass("ok".into()), || Verdict::Fail("bad".into()), || Verdict::Inconclusive("?".into()));
        assert!(matches!(combine(p(), f()), Verdict::Fail(_)));
        assert!(matches!(combine(f(), p()), Verdict::Fail(_)));
        assert!(matches!(combine(i(), p()), Verdict::Pass(_)));
        assert!(matches!(combine(i(), i()), Verdict::Inconclusive(_)));
    }
}
