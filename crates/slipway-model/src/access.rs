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

/// Who a binding gives a role to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    User(String),
    Group(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(u) => write!(f, "user {u}"),
            Subject::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// A role given to a user or group, on every project (`project: None`) or on one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Binding {
    pub subject: Subject,
    pub role: String,
    pub project: Option<String>,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(p) => write!(f, "{} on project {p}", self.role),
            None => write!(f, "{} on every project", self.role),
        }
    }
}

/// An environment the server protects whatever the pipeline file says: who deploys is
/// `deploy:environments/<name>`; here are the refs it may come from and the approvals it needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Protected {
    /// The environment (globs: `prod*`).
    pub environment: String,
    /// Only in these projects (globs); empty: every project.
    pub projects: Vec<String>,
    /// Branches or tags (globs) a deploy may come from; empty: any.
    pub refs: Vec<String>,
    /// Approvals from people other than the one who asked for the deploy.
    pub approvals: u32,
}

impl Protected {
    pub fn applies(&self, project: &str, environment: &str) -> bool {
        glob(&self.environment, environment)
            && (self.projects.is_empty() || self.projects.iter().any(|p| glob(p, project)))
    }

    pub fn allows_ref(&self, reference: &str) -> bool {
        self.refs.is_empty() || self.refs.iter().any(|r| glob(r, reference))
    }
}

/// The server's access file: roles (built-ins unless redefined), groups, bindings, protected
/// environments and protected refs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    pub roles: Vec<Role>,
    /// Group → its members.
    pub groups: Vec<(String, Vec<String>)>,
    pub bindings: Vec<Binding>,
    pub protected: Vec<Protected>,
    /// Refs (globs) whose pipelines get protected secrets, besides each project's default branch.
    pub protected_refs: Vec<String>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            roles: builtin(),
            groups: Vec::new(),
            bindings: Vec::new(),
            protected: Vec::new(),
            protected_refs: Vec::new(),
        }
    }
}

impl AccessConfig {
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// The groups `user` is a member of.
    pub fn groups_of(&self, user: &str) -> Vec<String> {
        self.groups.iter().filter(|(_, m)| m.iter().any(|u| u == user)).map(|(g, _)| g.clone()).collect()
    }

    /// Whether a ref of `project` is protected: its default branch, or a protected ref glob.
    pub fn is_protected_ref(&self, default_branch: &str, reference: &str) -> bool {
        reference == default_branch || self.protected_refs.iter().any(|r| glob(r, reference))
    }

    /// The protection of `environment` in `project`, the strictest of the rules that apply.
    pub fn protection(&self, project: &str, environment: &str) -> Option<Protected> {
        let rules: Vec<&Protected> = self.protected.iter().filter(|p| p.applies(project, environment)).collect();
        if rules.is_empty() {
            return None;
        }
        Some(Protected {
            environment: environment.into(),
            projects: vec![project.into()],
            // A ref must pass every rule that names refs.
            refs: rules.iter().find(|r| !r.refs.is_empty()).map(|r| r.refs.clone()).unwrap_or_default(),
            approvals: rules.iter().map(|r| r.approvals).max().unwrap_or(0),
        })
    }
}

/// What one caller holds: its bindings (its own and its groups'), resolved against the roles.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// (binding, the role's permissions).
    pub held: Vec<(Binding, Vec<Permission>)>,
}

/// Why a permission was refused, to say in the error and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub need: Permission,
    pub project: Option<String>,
    /// Roles that would grant it.
    pub granted_by: Vec<String>,
}

impl Grants {
    pub fn resolve(config: &AccessConfig, bindings: impl IntoIterator<Item = Binding>) -> Grants {
        let held = bindings
            .into_iter()
            .filter_map(|b| {
                let perms = config.role(&b.role)?.permissions.clone();
                Some((b, perms))
            })
            .collect();
        Grants { held }
    }

    /// The binding that allows `need` on `project` (a global binding covers every project;
    /// `None` asks for a global permission, which only global bindings give).
    pub fn allows(&self, need: &Permission, project: Option<&str>) -> Option<&Binding> {
        self.held
            .iter()
            .find(|(b, perms)| {
                let place = match (&b.project, project) {
                    (None, _) => true,
                    (Some(p), Some(want)) => p == want,
                    (Some(_), None) => false,
                };
                place && perms.iter().any(|p| p.covers(need))
            })
            .map(|(b, _)| b)
    }

    /// Whether the caller holds anything at all on `project` (else it must not learn it exists).
    pub fn sees(&self, project: &str) -> bool {
        self.held.iter().any(|(b, _)| b.project.as_deref().is_none_or(|p| p == project))
    }

    pub fn check(&self, config: &AccessConfig, need: &Permission, project: Option<&str>) -> Result<(), Denial> {
        match self.allows(need, project) {
            Some(_) => Ok(()),
            None => Err(Denial {
                need: need.clone(),
                project: project.map(str::to_string),
                granted_by: config.roles.iter().filter(|r| r.grants(need).is_some()).map(|r| r.name.clone()).collect(),
            }),
        }
    }
}

impl Denial {
    /// "`alice` lacks `deploy:environments/prod` on project shop; granted by roles: deployer, admin
    /// (alice holds: developer on project shop)".
    pub fn explain(&self, who: &str, grants: &Grants) -> String {
        let place = match &self.project {
            Some(p) => format!(" on project {p}"),
            None => " on the server".into(),
        };
        let by = match self.granted_by.is_empty() {
            true => "no role grants it".into(),
            false => format!("granted by roles: {}", self.granted_by.join(", ")),
        };
        let holds: Vec<String> = grants.held.iter().map(|(b, _)| b.to_string()).collect();
        let holds = match holds.is_empty() {
            true => "no roles".into(),
            false => holds.join(", "),
        };
        format!("`{who}` lacks `{}`{place}; {by} ({who} holds: {holds})", self.need)
    }
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

    #[test]
    fn bindings_grant_on_their_project_only_and_denials_say_who_would_grant() {
        let config = AccessConfig::default();
        let user = |r: &str, p: Option<&str>| Binding {
            subject: Subject::User("alice".into()),
            role: r.into(),
            project: p.map(str::to_string),
        };
        let g = Grants::resolve(&config, [user("deployer", Some("shop")), user("viewer", None), user("nope", None)]);
        assert_eq!(g.held.len(), 2, "an unknown role grants nothing");
        let deploy = Permission::need("deploy", "environments/prod");
        assert!(g.allows(&deploy, Some("shop")).is_some());
        assert!(g.allows(&deploy, Some("blog")).is_none());
        assert!(g.allows(&Permission::need("read", "code"), Some("blog")).is_some(), "global viewer");
        assert!(g.allows(&Permission::need("read", "code"), None).is_some());
        assert!(g.allows(&deploy, None).is_none(), "a project binding gives nothing server-wide");
        let d = g.check(&config, &deploy, Some("blog")).unwrap_err();
        let text = d.explain("alice", &g);
        assert!(
            text.starts_with(
                "`alice` lacks `deploy:environments/prod` on project blog; granted by roles: admin, deployer"
            ),
            "{text}"
        );
        assert!(text.contains("deployer on project shop") && text.contains("viewer on every project"), "{text}");
        assert!(g.sees("blog") && g.sees("shop"));
        let only = Grants::resolve(&config, [user("viewer", Some("shop"))]);
        assert!(only.sees("shop") && !only.sees("blog"));
    }

    #[test]
    fn the_strictest_protection_applies() {
        let config = AccessConfig {
            protected: vec![
                Protected {
                    environment: "prod*".into(),
                    refs: vec!["main".into(), "v*".into()],
                    approvals: 1,
                    ..Default::default()
                },
                Protected {
                    environment: "prod".into(),
                    projects: vec!["shop".into()],
                    approvals: 2,
                    ..Default::default()
                },
            ],
            ..AccessConfig::default()
        };
        let p = config.protection("shop", "prod").unwrap();
        assert_eq!(p.approvals, 2);
        assert!(p.allows_ref("main") && p.allows_ref("v1.2.0") && !p.allows_ref("feature"));
        assert_eq!(config.protection("blog", "prod").unwrap().approvals, 1);
        assert!(config.protection("shop", "dev").is_none());
        assert!(config.is_protected_ref("main", "main") && !config.is_protected_ref("main", "dev"));
    }
}
