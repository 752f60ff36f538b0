//! The grammars of names that travel between slipway's parts and into file names, terminals
//! and URLs: environments and versions. Checked wherever they enter — the pipeline file, the
//! command line, the agent's API, a build manifest — so a name never walks out of a directory
//! (`../`) or forges a line of output (a newline).

/// The longest environment name.
pub const MAX_ENVIRONMENT: usize = 63;

/// An environment's name: 1 to 63 letters, digits, `-` and `_`.
pub fn check_environment(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_ENVIRONMENT {
        return Err(format!("environment name `{}` must be 1 to {MAX_ENVIRONMENT} characters", printable(name)));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!("environment name `{}` may only use letters, digits, `-` and `_`", printable(name)));
    }
    Ok(())
}

/// An agent's name (`slipway agent --name`, `agent: {name: …}`), a host name's grammar: 1 to
/// 63 letters, digits, `-`, `_` and `.`, not starting with `.` or `-`.
pub fn check_agent(name: &str) -> Result<(), String> {
    tag_like("agent name", name, 63)
}

/// A user's, group's or role's name: 1 to 64 letters, digits, `_`, `.`, `-` and `@` (an
/// e-mail address is a good user name), not starting with `.`, `-` or `@`.
pub fn check_user(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
        && !name.starts_with(['.', '-', '@']);
    if ok {
        return Ok(());
    }
    Err(format!(
        "{what} `{}` is not valid: 1 to 64 letters, digits, `_`, `.`, `-` and `@`, not starting with `.`, `-` or `@`",
        printable(name)
    ))
}

/// A release's version, in the grammar of an OCI image tag (so every version can also tag
/// the image that carries it): 1 to 128 letters, digits, `_`, `.` and `-`, not starting with
/// `.` or `-` (`v1.2.3`, `1.4.0-rc.1`, `d67b3370`, `v1.2.3-4-gabcdef0-dirty`).
pub fn check_version(version: &str) -> Result<(), String> {
    tag_like("version", version, 128)
}

/// 1 to `max` letters, digits, `_`, `.` and `-`, not starting with `.` or `-`; the error
/// names `what`.
fn tag_like(what: &str, s: &str, max: usize) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !s.starts_with(['.', '-']);
    if ok {
        return Ok(());
    }
    Err(format!(
        "{what} `{}` is not valid: 1 to {max} letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
        printable(s)
    ))
}

/// A name as it may be shown: control characters escaped, at most 80 characters.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_or_forge_are_refused() {
        assert!(check_environment("prod-eu_1").is_ok());
        for bad in ["", "../../tmp/x", "a/b", "a b", "x\n", &"e".repeat(64)] {
            assert!(check_environment(bad).is_err(), "{bad:?}");
        }
        for good in ["v1.2.3", "1.4.0-rc.1", "d67b3370", "v1.2.3-4-gabcdef0-dirty", "V_2"] {
            assert!(check_version(good).is_ok(), "{good}");
        }
        for bad in ["", "v9\n✓ prod v9 is healthy", ".hidden", "-x", "a/b", "1+2", &"9".repeat(129)] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
        assert!(check_version("v9\nforged").unwrap_err().contains("v9\\nforged"), "the newline is shown escaped");
    }
}
