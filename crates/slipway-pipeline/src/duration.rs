//! Human durations as GitLab accepts them for `timeout`, `start_in` and `expire_in`:
//! `90` (seconds), `30s`, `10 minutes`, `1h 30m`, `2 hours and 10 min`, `1 day`, `1 week`.

use std::time::Duration;

/// Parses a GitLab duration; the error says what could not be read.
pub fn parse(src: &str) -> Result<Duration, String> {
    let s = src.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = s.as_str();
    let mut seen = false;
    while !rest.is_empty() {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(r) = rest.strip_prefix("and ") {
            rest = r;
            continue;
        }
        if rest.is_empty() {
            break;
        }
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| format!("`{}` is not a number", &rest[..num_len]))?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 0.001,
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "wk" | "wks" | "week" | "weeks" => 604800.0,
            "mo" | "mon" | "mos" | "month" | "months" => 2_592_000.0,
            "y" | "yr" | "yrs" | "year" | "years" => 31_536_000.0,
            other => {
                return Err(format!("unknown time unit `{other}` (use ms, s, m, h, d or w, or words like `minutes`)"));
            }
        };
        total += n * mult;
        seen = true;
    }
    if !seen {
        return Err("no duration found".into());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses sizes like `20MB`, `15 MiB`, `800k` or `1048576` (bytes; K/M/G are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let n: f64 = s[..split].parse().map_err(|_| format!("`{s}` does not start with a number"))?;
    let mult = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1048576.0,
        "g" | "gb" | "gib" => 1073741824.0,
        other => return Err(format!("unknown size unit `{other}` (use B, KB, MB or GB)")),
    };
    Ok((n * mult) as u64)
}

/// Formats a duration compactly for humans (`1h 30m`, `45s`, `850ms`).
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m, s) {
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_gitlab_forms() {
        for (s, secs) in [
            ("90", 90),
            ("30s", 30),
            ("10 minutes", 600),
            ("1h 30m", 5400),
            ("1h30m", 5400),
            ("2 hours and 10 min", 7800),
            ("1 day", 86400),
            ("1 week", 604800),
            ("3 mins 4 sec", 184),
            ("0.5h", 1800),
        ] {
            assert_eq!(parse(s).unwrap().as_secs(), secs, "{s}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20MB"), Ok(20 * 1048576));
        assert_eq!(parse_size("1.5 KiB"), Ok(1536));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12 parsecs").unwrap_err().contains("parsecs"));
    }

    #[test]
    fn refuses_nonsense() {
        assert!(parse("").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("10 parsecs").unwrap_err().contains("parsecs"));
    }
}
