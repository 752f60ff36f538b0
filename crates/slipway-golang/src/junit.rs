//! JUnit XML, in the shape CI tools read (GitLab, Jenkins, GitHub annotations): one
//! `<testsuite>` per Go package, one `<testcase>` per test and subtest, `<failure>` with the
//! test's output, `<skipped>`, and an `<error>` case for a package that did not build.

use std::fmt::Write as _;

use crate::report::{Report, ReportTest};
use crate::test2json::{PackageStatus, TestStatus};

/// XML-escapes text, dropping characters XML 1.0 cannot carry.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

pub fn render(report: &Report) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total = |f: &dyn Fn(&ReportTest) -> bool| report.tests.iter().filter(|t| f(t)).count();
    let build_errors = report.packages.iter().filter(|p| p.status == PackageStatus::BuildFailed).count();
    let _ = writeln!(
        x,
        "<testsuites name=\"go test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        report.tests.len() + build_errors,
        total(&|t| t.status == TestStatus::Fail),
        build_errors,
        total(&|t| t.status == TestStatus::Skip),
        report.duration_s
    );
    for p in &report.packages {
        let tests: Vec<&ReportTest> = report.tests.iter().filter(|t| t.package == p.name).collect();
        let build_failed = p.status == PackageStatus::BuildFailed;
        let failures = tests.iter().filter(|t| t.status == TestStatus::Fail).count();
        let skipped = tests.iter().filter(|t| t.status == TestStatus::Skip).count();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{}\" skipped=\"{skipped}\" time=\"{:.3}\">",
            escape(&p.name),
            tests.len() + usize::from(build_failed),
            usize::from(build_failed),
            p.elapsed_s
        );
        if build_failed {
            let _ = writeln!(
                x,
                "    <testcase classname=\"{0}\" name=\"build\" time=\"0.000\">\n      <error message=\"package {0} did not build\">{1}</error>\n    </testcase>",
                escape(&p.name),
                escape(&p.output.join("\n"))
            );
        }
        for t in tests {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(&t.package),
                escape(&t.name),
                t.elapsed_s
            );
            match t.status {
                TestStatus::Pass if !t.flaky => x.push_str("/>\n"),
                TestStatus::Pass => {
                    // Flaky: passed in the end; the first failure is kept for the record.
                    let _ = writeln!(
                        x,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        escape(&format!(
                            "flaky: failed, then passed on attempt {}\n{}",
                            t.attempts,
                            t.output.join("\n")
                        ))
                    );
                }
                TestStatus::Fail => {
                    let msg = t.reason.as_deref().unwrap_or("Failed");
                    let _ = writeln!(
                        x,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        escape(msg),
                        escape(&t.output.join("\n"))
                    );
                }
                TestStatus::Skip => {
                    let msg = t
                        .output
                        .iter()
                        .rev()
                        .find(|l| !l.starts_with("---") && !l.starts_with("==="))
                        .map(|l| l.trim())
                        .unwrap_or("skipped");
                    let _ = writeln!(x, ">\n      <skipped message=\"{}\"/>\n    </testcase>", escape(msg));
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(escape("a<b & \"c\" \u{1b}[31m"), "a&lt;b &amp; &quot;c&quot; \u{fffd}[31m");
    }
}
