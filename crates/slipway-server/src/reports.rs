//! Test reports on the server: the JUnit XML a job lists under `artifacts:reports:junit`,
//! read from the artifacts its agent uploads (each attempt's cases kept apart, so a test that
//! failed and then passed on a retry shows as flaky), and the coverage its agent reports.

use std::io::Read;

use slipway_store::TestCase;

/// How much of a failure's message and output is kept per case.
const MESSAGE_BYTES: usize = 4096;
/// JUnit files larger than this are not read (a report is a few hundred KB at most).
const MAX_REPORT: u64 = 32 << 20;

/// The test cases of one JUnit document: `<testsuites>` or a bare `<testsuite>`, nested
/// suites included; a case is `failed` with `<failure>`, `error` with `<error>`, `skipped`
/// with `<skipped>`, else `passed`.
pub fn parse_junit(xml: &str) -> Result<Vec<TestCase>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not JUnit XML: {e}"))?;
    let root = doc.root_element();
    if !matches!(root.tag_name().name(), "testsuites" | "testsuite") {
        return Err(format!(
            "not JUnit XML: the root is <{}>, not <testsuites> or <testsuite>",
            root.tag_name().name()
        ));
    }
    let mut out = Vec::new();
    for case in root.descendants().filter(|n| n.has_tag_name("testcase")) {
        let suite = case
            .ancestors()
            .find(|n| n.has_tag_name("testsuite"))
            .and_then(|s| s.attribute("name"))
            .unwrap_or("")
            .to_string();
        let child = |tag: &str| case.children().find(|n| n.has_tag_name(tag));
        let (status, detail) = match (child("failure"), child("error"), child("skipped")) {
            (Some(f), _, _) => ("failed", Some(f)),
            (None, Some(e), _) => ("error", Some(e)),
            (None, None, Some(s)) => ("skipped", Some(s)),
            _ => ("passed", None),
        };
        let message = detail.and_then(|d| {
            let text: String = d.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect();
            let m = match (d.attribute("message"), text.trim()) {
                (Some(m), "") => m.to_string(),
                (Some(m), t) if !t.contains(m) => format!("{m}\n{t}"),
                (_, t) => t.to_string(),
            };
            (!m.is_empty()).then(|| truncate(m))
        });
        let seconds: f64 = case.attribute("time").and_then(|t| t.trim().parse().ok()).unwrap_or(0.0);
        out.push(TestCase {
            suite,
            classname: case.attribute("classname").unwrap_or("").to_string(),
            name: case.attribute("name").unwrap_or("").to_string(),
            status: status.into(),
            time_ms: (seconds * 1000.0).round().max(0.0) as i64,
            message,
        });
    }
    Ok(out)
}

fn truncate(mut m: String) -> String {
    if m.len() > MESSAGE_BYTES {
        let mut end = MESSAGE_BYTES;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
        m.push_str("\n…");
    }
    m
}

/// The cases of the JUnit files in a job's artifacts (a gzip'd tar of `files/…`) whose paths
/// match `patterns` (the job's `artifacts:reports:junit`, globs as GitLab's); files that are
/// not JUnit are skipped with a warning.
pub fn cases_in_artifacts(tar_gz: &[u8], patterns: &[String]) -> Vec<TestCase> {
    let mut set = globset::GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches("./");
        if let Ok(g) = globset::GlobBuilder::new(p).literal_separator(true).build() {
            set.add(g);
        }
    }
    let Ok(set) = set.build() else { return Vec::new() };
    let mut out = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    let Ok(entries) = tar.entries() else { return out };
    for entry in entries.flatten() {
        let mut entry = entry;
        let Ok(path) = entry.path().map(|p| p.into_owned()) else { continue };
        let Ok(rel) = path.strip_prefix("files") else { continue };
        if !entry.header().entry_type().is_file() || entry.size() > MAX_REPORT || !set.is_match(rel) {
            continue;
        }
        let mut xml = String::new();
        if entry.read_to_string(&mut xml).is_err() {
            tracing::warn!(file = %rel.display(), "a JUnit report is not UTF-8: skipped");
            continue;
        }
        match parse_junit(&xml) {
            Ok(cases) => out.extend(cases),
            Err(e) => tracing::warn!(file = %rel.display(), error = %e, "a JUnit report was not read"),
        }
    }
    out
}

/// Coverage per Go package from a job's log: `go test -cover`'s lines (`ok  pkg  0.01s
/// coverage: 81.3% of statements`, `(cached)` too) and `slipway go test`'s (`ok   pkg  0.01s
/// coverage 81.3%`); a package printed twice keeps its last value.
pub fn package_coverage(log: &str) -> Vec<(String, f64)> {
    static LINE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"^\s*(?:ok|FAIL)?\s+(?P<pkg>[A-Za-z0-9_.~-]+(?:/[A-Za-z0-9_.~-]+)*)\s+(?:(?:\d+(?:\.\d+)?s|\(cached\))\s+)?coverage:?\s+(?P<pct>\d+(?:\.\d+)?)%",
        )
        .expect("a regex")
    });
    let mut out: Vec<(String, f64)> = Vec::new();
    for raw in log.lines() {
        let line = crate::web::log::strip(raw).replace('\t', " ");
        let Some(c) = LINE.captures(&line) else { continue };
        let (pkg, pct) = (c["pkg"].to_string(), c["pct"].parse().unwrap_or(0.0));
        match out.iter_mut().find(|(p, _)| *p == pkg) {
            Some(e) => e.1 = pct,
            None => out.push((pkg, pct)),
        }
    }
    out
}

/// Records the coverage per package that job `index` of `run` printed in its log.
pub async fn record_packages(s: &crate::State, run: &slipway_store::RunRow, index: usize) {
    let Some(log) = crate::api::read_log(s, run.id, index).await else { return };
    let packages =
        tokio::task::spawn_blocking(move || package_coverage(&String::from_utf8_lossy(&log))).await.unwrap_or_default();
    if packages.is_empty() {
        return;
    }
    if let Err(e) =
        s.store.put_package_coverage(run.id, index as i64, &run.project, run.ref_name.as_deref(), &packages).await
    {
        tracing::warn!(pipeline = run.id, job = index, error = %e, "the coverage per package was not recorded");
    }
}

/// Reads an uploaded artifact's JUnit reports for job `index` of `run` and records them as
/// the job's current attempt (what a test report page shows).
pub async fn record(
    s: &crate::State,
    run: &slipway_store::RunRow,
    index: usize,
    plan: &slipway_pipeline::plan::Plan,
    tar_gz: axum::body::Bytes,
) {
    let Some(job) = plan.jobs.get(index) else { return };
    let patterns = job.artifacts.as_ref().map(|a| a.junit.clone()).unwrap_or_default();
    if patterns.is_empty() {
        return;
    }
    let attempt = s
        .store
        .jobs(run.id)
        .await
        .ok()
        .and_then(|js| js.into_iter().find(|j| j.index == index))
        .map_or(1, |j| j.attempts.max(1) as i64);
    let cases = tokio::task::spawn_blocking(move || cases_in_artifacts(&tar_gz, &patterns)).await.unwrap_or_default();
    if let Err(e) = s.store.put_test_cases(run.id, index as i64, attempt, &run.project, &job.name, &cases).await {
        tracing::warn!(pipeline = run.id, job = index, error = %e, "the test report was not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_cases_with_their_outcome_message_and_time() {
        let xml = r#"<?xml version="1.0"?>
<testsuites><testsuite name="shop/cart" tests="4">
  <testcase classname="shop/cart" name="TestAdd" time="0.012"><failure message="want 3">cart_test.go:9: want 3, got 2</failure></testcase>
  <testcase classname="shop/cart" name="TestSum" time="1.5"/>
  <testcase classname="shop/cart" name="TestSkip"><skipped message="short mode"/></testcase>
  <testcase classname="shop/cart" name="TestBuild"><error>setup failed</error></testcase>
</testsuite></testsuites>"#;
        let c = parse_junit(xml).expect("parses");
        assert_eq!(
            c.iter().map(|c| (c.name.as_str(), c.status.as_str(), c.time_ms)).collect::<Vec<_>>(),
            [
                ("TestAdd", "failed", 12),
                ("TestSum", "passed", 1500),
                ("TestSkip", "skipped", 0),
                ("TestBuild", "error", 0)
            ]
        );
        assert_eq!(c[0].message.as_deref(), Some("cart_test.go:9: want 3, got 2"));
        assert_eq!(c[0].suite, "shop/cart");
        assert_eq!(c[2].message.as_deref(), Some("short mode"));
        assert!(parse_junit("<html/>").unwrap_err().contains("the root is <html>"));
        assert!(parse_junit("not xml").unwrap_err().starts_with("not JUnit XML"));
        let long =
            format!(r#"<testsuite><testcase name="x"><failure>{}</failure></testcase></testsuite>"#, "é".repeat(5000));
        assert!(parse_junit(&long).unwrap()[0].message.as_ref().unwrap().len() <= MESSAGE_BYTES + 4);
    }

    #[test]
    fn coverage_per_package_from_go_test_and_slipway_go_test() {
        let log = "ok  \texample.com/shop/cart\t0.005s\tcoverage: 81.3% of statements\n\
ok  \texample.com/shop/api\t(cached)\tcoverage: 50.0% of statements\n\
\texample.com/shop/cmd\t\tcoverage: 0.0% of statements\n\
\u{1b}[32;1mok  \u{1b}[0m shop/store  0.12s  coverage 66.7%\n\
FAIL shop/broken  0.30s  coverage 12.5%\n\
?    shop/none  [no tests]\n\
total coverage: 99.0% of statements in ./...\n\
ok  \texample.com/shop/cart\t0.004s\tcoverage: 82.0% of statements";
        assert_eq!(
            package_coverage(log),
            [
                ("example.com/shop/cart".to_string(), 82.0),
                ("example.com/shop/api".to_string(), 50.0),
                ("example.com/shop/cmd".to_string(), 0.0),
                ("shop/store".to_string(), 66.7),
                ("shop/broken".to_string(), 12.5),
            ]
        );
    }

    #[test]
    fn reports_are_found_in_the_artifacts_by_their_globs() {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let mut add = |path: &str, body: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, body.as_bytes()).unwrap();
        };
        add("files/report.xml", r#"<testsuite name="a"><testcase name="T1"/></testsuite>"#);
        add("files/out/b.xml", r#"<testsuite name="b"><testcase name="T2"/></testsuite>"#);
        add("files/other.xml", r#"<testsuite name="c"><testcase name="T3"/></testsuite>"#);
        add("dotenv.env", "A=1\n");
        let gz = tar.into_inner().unwrap().finish().unwrap();
        let names = |p: &[&str]| {
            cases_in_artifacts(&gz, &p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .into_iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&["report.xml", "out/*.xml"]), ["T1", "T2"]);
        assert_eq!(names(&["./report.xml"]), ["T1"]);
        assert!(names(&["*.json"]).is_empty());
    }
}
