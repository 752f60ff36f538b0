//! Times as slipway records them: Unix milliseconds in records (cheap to store and compare on
//! every backend), RFC 3339 in anything a person or another program reads.

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Unix milliseconds as an RFC 3339 time in UTC, to the second (`2026-12-01T10:56:18Z`).
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.round(jiff::Unit::Second).unwrap_or(t).to_string(),
        Err(_) => ms.to_string(),
    }
}

/// An RFC 3339 time (what [`rfc3339`] writes) back to Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// How long ago `ms` was, the way status tables say it (`12s ago`, `3m ago`, `2d ago`).
pub fn ago(ms: i64, now_ms: i64) -> String {
    let secs = (now_ms - ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_like_rfc_3339_and_ages_round_down() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_764_586_578_400), "2025-12-01T10:56:18Z");
        assert_eq!(super::ago(0, 59_999), "59s ago");
        assert_eq!(super::ago(0, 3_600_000), "1h ago");
        assert_eq!(super::ago(10, 0), "0s ago");
        assert_eq!(super::parse_rfc3339("2025-12-01T10:56:18Z"), Some(1_764_586_578_000));
    }
}
