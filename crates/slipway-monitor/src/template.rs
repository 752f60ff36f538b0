//! The part of Go's text/template Prometheus' alert annotations use: `{{ $labels.NAME }}`,
//! `{{ $value }}`, `{{ $externalLabels.NAME }}`, their `.Labels.NAME` / `.Value` spellings,
//! `{{ humanize $value }}` and `{{ printf "%.2f" $value }}`. A missing label renders empty (as
//! Prometheus' `missingkey=zero`); anything else is refused when the rule loads.

use crate::series::Labels;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Label(String),
    External(String),
    Value,
    Humanize,
    Printf(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template; the error says which action is not understood.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("{{") {
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let j = after
                .find("}}")
                .ok_or_else(|| format!("`{{{{` at character {} is never closed", text.len() - rest.len() + i))?;
            let action = after[..j].trim_matches(|c: char| c == '-' || c.is_whitespace());
            parts.push(action_of(action)?);
            rest = &after[j + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, labels: &Labels, value: f64, external: &Labels) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Label(l) => out.push_str(labels.get(l).map(String::as_str).unwrap_or("")),
                Part::External(l) => out.push_str(external.get(l).map(String::as_str).unwrap_or("")),
                Part::Value => out.push_str(&go_float(value)),
                Part::Humanize => out.push_str(&humanize(value)),
                Part::Printf(f) => out.push_str(&printf(f, value)),
            }
        }
        out
    }
}

fn action_of(a: &str) -> Result<Part, String> {
    let words: Vec<&str> = a.split_whitespace().collect();
    let field = |w: &str| -> Option<Part> {
        if let Some(l) = w.strip_prefix("$labels.").or_else(|| w.strip_prefix(".Labels.")) {
            return Some(Part::Label(l.to_string()));
        }
        if let Some(l) = w.strip_prefix("$externalLabels.").or_else(|| w.strip_prefix(".ExternalLabels.")) {
            return Some(Part::External(l.to_string()));
        }
        matches!(w, "$value" | ".Value").then_some(Part::Value)
    };
    match words.as_slice() {
        [w] => field(w).ok_or_else(|| {
            format!("`{{{{ {a} }}}}` is not supported (use $labels.NAME, $value, $externalLabels.NAME)")
        }),
        ["humanize", v] | [v, "|", "humanize"] if field(v) == Some(Part::Value) => Ok(Part::Humanize),
        ["printf", f, v] if field(v) == Some(Part::Value) && f.starts_with('"') && f.ends_with('"') && f.len() >= 2 => {
            Ok(Part::Printf(f[1..f.len() - 1].to_string()))
        }
        _ => Err(format!(
            "`{{{{ {a} }}}}` is not supported (use $labels.NAME, $value, humanize $value, printf \"%.2f\" $value)"
        )),
    }
}

/// A float as Go's `%v` prints it (`strconv.FormatFloat(v, 'g', -1, 64)`): the shortest form,
/// with an exponent below 1e-4 and from 1e6 (`1e+06`).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e6).contains(&a) {
        let s = format!("{v:e}");
        let (m, e) = s.split_once('e').expect("an exponent");
        let e: i32 = e.parse().expect("a number");
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    format!("{v}")
}

/// Prometheus' `humanize`: SI prefixes, 4 significant digits.
fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return format!("{:.4}", v).trim_end_matches('0').trim_end_matches('.').to_string();
    }
    let a = v.abs();
    let (scaled, prefix) = if a >= 1.0 {
        let p = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"];
        let mut i = 0;
        let mut x = v;
        while x.abs() >= 1000.0 && i < p.len() - 1 {
            x /= 1000.0;
            i += 1;
        }
        (x, p[i])
    } else {
        let p = ["", "m", "u", "n", "p", "f", "a", "z", "y"];
        let mut i = 0;
        let mut x = v;
        while x.abs() < 1.0 && i < p.len() - 1 {
            x *= 1000.0;
            i += 1;
        }
        (x, p[i])
    };
    format!("{}{prefix}", g4(scaled))
}

/// Go's `%.4g`.
fn g4(v: f64) -> String {
    let exp = v.abs().log10().floor() as i32;
    let decimals = (3 - exp).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// `printf` with one float verb (`%f`, `%.Nf`, `%g`, `%d`, `%v`).
fn printf(f: &str, v: f64) -> String {
    let Some(i) = f.find('%') else { return f.to_string() };
    let spec_end = f[i + 1..].find(|c: char| c.is_ascii_alphabetic()).map(|j| i + 1 + j);
    let Some(end) = spec_end else { return f.to_string() };
    let spec = &f[i + 1..end];
    let verb = &f[end..=end];
    let body = match verb {
        "f" => match spec.strip_prefix('.').and_then(|p| p.parse::<usize>().ok()) {
            Some(p) => format!("{v:.p$}"),
            None => format!("{v:.6}"),
        },
        "d" => format!("{}", v as i64),
        _ => go_float(v),
    };
    format!("{}{body}{}", &f[..i], &f[end + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::labels;

    #[test]
    fn the_briefs_annotations_render_as_prometheus_renders_them() {
        let l = labels([("instance", "web-1:8080")]);
        let t = Template::parse("Instance {{ $labels.instance }} down").unwrap();
        assert_eq!(t.render(&l, 0.0, &Labels::new()), "Instance web-1:8080 down");
        let t = Template::parse("{{ $labels.instance }} has been down for more than 1 minute.").unwrap();
        assert_eq!(t.render(&l, 0.0, &Labels::new()), "web-1:8080 has been down for more than 1 minute.");
        let t = Template::parse(
            "v={{ $value }} h={{ humanize $value }} p={{ printf \"%.2f\" $value }} m={{ $labels.nope }}",
        )
        .unwrap();
        assert_eq!(t.render(&l, 1234567.0, &Labels::new()), "v=1.234567e+06 h=1.235M p=1234567.00 m=");
        assert!(Template::parse("{{ range $labels }}").unwrap_err().contains("not supported"));
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.00001), "1e-05");
    }
}
