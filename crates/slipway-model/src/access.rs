//! Who may do what, as data: permissions in the brief's `verb:resource` form with `*` globs
//! (`read:*`, `write:code`, `deploy:environments/prod`), roles as lists of them, the built-in
//! roles, and the one question every request asks — does a permission the caller holds cover
//! the one the request needs? Pure: identities, bindings and the store live in the server.
//!
//! Meaning: `*` matches any run of characters (`/` included), on either side of the colon.
//! `write:R` also grants `read:R`, and the acting verbs (`deploy`, `rollback`, `approve`) on R,
//! so the brief's `admin: [read:*, write:*]` may do everything. A resource without a name
//! (`environments`) covers every one of its names (`environments/prod`).

use std::fmt;

/// The verbs a request can need.
pub const VERBS: &[&str] = &["read", "write", "deploy", "rollback", "approve"];

/// The resources a request can need (`environments` also as `environments/<name>`).
pub const RESOURCES: &[&str] =
    &["code", "pipelines", "logs", "artifacts", "environments", "secrets", "users", "audit", "settings"];

/// `verb:resource`: what a request needs, or what a role grants (then with globs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    pub verb: String,
    pub resource: String,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.verb, self.resource)
    }
}

impl Permission {
    /// What a request needs: a known verb on a known resource (`environments/<name>` too).
    pub fn need(verb: &str, resource: &str) -> Permission {
        debug_assert!(VERBS.contains(&verb), "unknown verb {verb}");
        debug_assert!(RESOURCES.contains(&resource.split('/').next().unwrap_or("")), "unknown resource {resource}");
        Permission { verb: verb.into(), resource: resource.into() }
    }

    /// A permission as a role file writes it; the error says what is wrong and what would do.
    pub fn parse(text: &str) -> Result<Permission, String> {
        let Some((verb, resource)) = text.split_once(':') else {
            return Err(format!("`{text}` is not `verb:resource` (e.g. `read:code`, `deploy:environments/prod`)"));
        };
        if verb.is_empty() || resource.is_empty() || resource.contains(':') {
            return Err(format!("`{text}` is not `verb:resource` (e.g. `read:code`, `deploy:environments/prod`)"));
        }
        if !verb.contains('*') && !VERBS.contains(&verb) {
            return Err(format!("`{text}`: unknown verb `{verb}` (verbs: {})", VERBS.join(", ")));
        }
        let head = resource.split('/').next().unwrap_or("");
        if !head.contains('*') && !RESOURCES.contains(&head) {
            return Err(format!("`{text}`: unknown resource `{head}` (resources: {})", RESOURCES.join(", ")));
        }
        if let Some(name) = resource.strip_prefix(&format!("{head}/"))
            && (head != "environments" || name.is_empty())
        {
            return Err(format!(
                "`{text}`: only `environments` names one of its kind (`environments/prod`, `environments/*`)"
            ));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{}` has spaces or control characters", text.escape_debug()));
        }
        Ok(Permission { verb: verb.into(), resource: resource.into() })
    }

    /// Whether holding `self` (a grant, globs allowed) allows `need`.
    pub fn covers(&self, need: &Permission) -> bool {
        // A grant that covers `write` covers every verb on its resources.
        let verb = glob(&self.verb, &need.verb) || glob(&self.verb, "write");
        let resource = glob(&self.resource, &need.resource)
            || need.resource.split_once('/').is_some_and(|(kind, _)| glob(&self.resource, kind));
        verb && resource
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A named list of permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub permissions: Vec<Permission>,
}

impl Role {
    /// The first permission of the role that covers `need`.
    pub fn grants(&self, need: &Permission) -> Option<&Permission> {
        self.permissions.iter().find(|p| p.covers(need))
    }
}

/// The built-in roles: `admin` (the brief's), `developer`, `viewer`, `deployer`. A roles file
/// may redefine any of them (the brief's `developer: [read:code, write:code]` then replaces
/// this one).
pub fn builtin() -> Vec<Role> {
    let role = |name: &str, perms: &[&str]| Role {
        name: name.into(),
        permissions: perms.iter().map(|p| Permission::parse(p).expect("built-in permissions parse")).collect(),
    };
    let viewer = ["read:code", "read:pipelines", "read:logs", "read:artifacts", "read:environments"];
    let mut developer = viewer.to_vec();
    developer.extend(["write:code", "write:pipelines"]);
    let mut deployer = viewer.to_vec();
    deployer.extend(["deploy:environments", "rollback:environments"]);
    vec![
        role("admin", &["read:*", "write:*"]),
        role("developer", &developer),
        role("viewer", &viewer),
        role("deployer", &deployer),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    #[test]
    fn globs_match_runs_of_anything() {
        assert!(glob("*", "") && glob("*", "environments/prod") && glob("env*/p*d", "environments/prod"));
        assert!(!glob("environments/prod", "environments/prod2") && !glob("a*b", "acbx"));
        assert!(glob("a*b*c", "aXbYbc") && !glob("", "x") && glob("**", "x"));
    }

    #[test]
    fn the_briefs_admin_may_do_everything_and_its_developer_only_code() {
        let roles = [
            Role { name: "admin".into(), permissions: vec![p("read:*"), p("write:*")] },
            Role { name: "developer".into(), permissions: vec![p("read:code"), p("write:code")] },
        ];
        for verb in VERBS {
            for res in RESOURCES.iter().copied().chain(["environments/prod"]) {
                assert!(roles[0].grants(&Permission::need(verb, res)).is_some(), "admin {verb}:{res}");
            }
        }
        let dev = &roles[1];
        assert!(dev.grants(&Permission::need("read", "code")).is_some());
        assert!(dev.grants(&Permission::need("write", "code")).is_some());
        assert!(dev.grants(&Permission::need("read", "pipelines")).is_none());
        assert!(dev.grants(&Permission::need("deploy", "environments/prod")).is_none());
    }

    #[test]
    fn write_grants_read_and_the_acting_verbs_and_a_kind_grants_its_names() {
        assert!(p("write:environments").covers(&Permission::need("read", "environments/dev")));
        assert!(p("write:environments/dev").covers(&Permission::need("deploy", "environments/dev")));
        assert!(!p("write:environments/dev").covers(&Permission::need("deploy", "environments/prod")));
        assert!(!p("read:environments").covers(&Permission::need("write", "environments/dev")));
        assert!(!p("deploy:environments").covers(&Permission::need("rollback", "environments/dev")), "separate rights");
        assert!(!p("deploy:environments").covers(&Permission::need("write", "environments")));
        assert!(p("deploy:environments/*").covers(&Permission::need("deploy", "environments/prod")));
        assert!(!p("read:code").covers(&Permission { verb: "read".into(), resource: "codex".into() }));
    }

    #[test]
    fn bad_permissions_say_what_is_wrong() {
        for (bad, why) in [
            ("read", "not `verb:resource`"),
            ("read:", "not `verb:resource`"),
            ("raed:code", "unknown verb `raed`"),
            ("read:cod", "unknown resource `cod`"),
            ("read:code/x", "only `environments` names one"),
            ("deploy:environments/", "only `environments` names one"),
            ("read:a:b", "not `verb:resource`"),
            ("read:environments/pr od", "spaces"),
        ] {
            let e = Permission::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn built_in_roles_keep_rights_apart() {
        let roles = builtin();
        let get = |n: &str| roles.iter().find(|r| r.name == n).unwrap();
        let need = Permission::need;
        assert!(get("viewer").grants(&need("read", "logs")).is_some());
        assert!(get("viewer").grants(&need("read", "secrets")).is_none(), "secrets are not for viewers");
        assert!(get("viewer").grants(&need("write", "pipelines")).is_none());
        assert!(get("developer").grants(&need("write", "pipelines")).is_some());
        assert!(get("developer").grants(&need("deploy", "environments/prod")).is_none());
        assert!(get("deployer").grants(&need("deploy", "environments/prod")).is_some());
        assert!(get("deployer").grants(&need("rollback", "environments/prod")).is_some());
        assert!(
            get("deployer").grants(&need("approve", "environments/prod")).is_none(),
            "four eyes: approving is apart"
        );
        assert!(get("deployer").grants(&need("write", "settings")).is_none());
    }
}
