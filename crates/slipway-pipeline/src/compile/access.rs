//! Compiles the server's access file (`roles:`, `groups:`, `bindings:`,
//! `protected_environments:`, `protected_refs:`; docs/access.md): the brief's `roles:` format
//! verbatim, every error at once with its position, and role names checked across sections.

use slipway_model::access::{AccessConfig, Binding, Permission, Protected, Role, Subject};
use slipway_model::names;

use super::Cx;
use crate::diag::{Span, did_you_mean};
use crate::yaml::{Node, Value};

const TOP: &[&str] = &["roles", "groups", "bindings", "protected_environments", "protected_refs"];

impl Cx {
    pub(super) fn access(&mut self, root: &Node) -> AccessConfig {
        let mut config = AccessConfig::default();
        let mut bindings = None;
        for (k, v) in self.map(root, "the access file") {
            match k.name.as_str() {
                "roles" => self.roles(v, &mut config.roles),
                "groups" => config.groups = self.groups(v),
                "bindings" => bindings = Some(v),
                "protected_environments" => config.protected = self.protected(v),
                "protected_refs" => config.protected_refs = self.globs(v, "protected_refs"),
                _ => self.unknown_key(k, "the access file", TOP),
            }
        }
        // Bindings name roles, which may be defined after them.
        if let Some(v) = bindings {
            config.bindings = self.bindings(v, &config);
        }
        config
    }

    fn roles(&mut self, n: &Node, roles: &mut Vec<Role>) {
        for (k, v) in self.map(n, "roles") {
            if let Err(why) = names::check_user("role name", &k.name) {
                self.err(k.span, why);
                continue;
            }
            let path = format!("roles:{}", k.name);
            let mut permissions = Vec::new();
            for (f, fv) in self.map(v, &path) {
                match f.name.as_str() {
                    "permissions" => {
                        let Value::Seq(items) = &fv.value else {
                            self.type_err(fv, &format!("{path}:permissions"), "a list of `verb:resource`");
                            continue;
                        };
                        for item in items {
                            let Some(text) = self.string(item, &format!("{path}:permissions[]")) else { continue };
                            match Permission::parse(&text) {
                                Ok(p) => permissions.push(p),
                                Err(why) => {
                                    self.err(item.span, format!("`{path}:permissions`: {why}"));
                                }
                            }
                        }
                    }
                    "description" => {
                        self.string(fv, &format!("{path}:description"));
                    }
                    _ => self.unknown_key(f, &format!("`{path}`"), &["permissions", "description"]),
                }
            }
            let role = Role { name: k.name.clone(), permissions };
            // A role of a built-in's name replaces it.
            match roles.iter_mut().find(|r| r.name == role.name) {
                Some(r) => *r = role,
                None => roles.push(role),
            }
        }
    }

    fn groups(&mut self, n: &Node) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for (k, v) in self.map(n, "groups") {
            if let Err(why) = names::check_user("group name", &k.name) {
                self.err(k.span, why);
                continue;
            }
            let path = format!("groups:{}", k.name);
            let members = self.names(v, &path, "user name");
            out.push((k.name.clone(), members));
        }
        out
    }

    fn names(&mut self, n: &Node, path: &str, what: &str) -> Vec<String> {
        let Value::Seq(items) = &n.value else {
            self.type_err(n, path, "a list of names");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(name) = self.string(item, &format!("{path}[]")) else { continue };
            match names::check_user(what, &name) {
                Ok(()) => out.push(name),
                Err(why) => {
                    self.err(item.span, format!("`{path}`: {why}"));
                }
            }
        }
        out
    }

    fn bindings(&mut self, n: &Node, config: &AccessConfig) -> Vec<Binding> {
        let Value::Seq(items) = &n.value else {
            self.type_err(n, "bindings", "a list of `{user: NAME, role: ROLE, project: PROJECT}`");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("bindings[{i}]");
            let (mut subject, mut role, mut project) = (None, None::<(String, Span)>, None);
            let mut said = false;
            for (k, v) in self.map(item, &path) {
                let f = format!("{path}:{}", k.name);
                match k.name.as_str() {
                    "user" | "group" => {
                        said = true;
                        let Some(name) = self.string(v, &f) else { continue };
                        if let Err(why) = names::check_user(&format!("{} name", k.name), &name) {
                            self.err(v.span, format!("`{f}`: {why}"));
                            continue;
                        }
                        if subject.is_some() {
                            self.err(
                                k.span,
                                format!("`{path}` names both a user and a group: one binding per subject"),
                            );
                            continue;
                        }
                        if k.name == "group" && !config.groups.iter().any(|(g, _)| *g == name) {
                            let d = self.err(v.span, format!("`{f}`: no group `{name}` in `groups:`"));
                            d.hint = did_you_mean(&name, config.groups.iter().map(|(g, _)| g.as_str()))
                                .map(|s| format!("did you mean `{s}`?"));
                            continue;
                        }
                        subject = Some(match k.name.as_str() {
                            "user" => Subject::User(name),
                            _ => Subject::Group(name),
                        });
                    }
                    "role" => role = self.string(v, &f).map(|r| (r, v.span)),
                    "project" => {
                        project = self.string(v, &f).filter(|p| p != "*");
                    }
                    _ => self.unknown_key(k, &format!("`{path}`"), &["user", "group", "role", "project"]),
                }
            }
            let Some((role, span)) = role else {
                self.err(item.span, format!("`{path}` has no `role`"));
                continue;
            };
            if config.role(&role).is_none() {
                let d = self.err(span, format!("`{path}:role`: no role `{role}`"));
                let known: Vec<&str> = config.roles.iter().map(|r| r.name.as_str()).collect();
                d.hint = Some(match did_you_mean(&role, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("roles: {}", known.join(", ")),
                });
                continue;
            }
            let Some(subject) = subject else {
                if said {
                    continue;
                }
                self.err(item.span, format!("`{path}` names no `user` or `group`"));
                continue;
            };
            out.push(Binding { subject, role, project });
        }
        out
    }

    fn protected(&mut self, n: &Node) -> Vec<Protected> {
        let mut out = Vec::new();
        for (k, v) in self.map(n, "protected_environments") {
            let path = format!("protected_environments:{}", k.name);
            if !glob_ok(&k.name) {
                self.err(k.span, format!("`{path}`: `{}` is not an environment name or glob", k.name));
                continue;
            }
            let mut p = Protected { environment: k.name.clone(), ..Protected::default() };
            for (f, fv) in self.map(v, &path) {
                let field = format!("{path}:{}", f.name);
                match f.name.as_str() {
                    "projects" => p.projects = self.globs(fv, &field),
                    "refs" | "branches" => p.refs = self.globs(fv, &field),
                    "approvals" => p.approvals = self.int(fv, &field, 0, 100).map_or(0, |i| i as u32),
                    _ => self.unknown_key(f, &format!("`{path}`"), &["projects", "refs", "approvals"]),
                }
            }
            out.push(p);
        }
        out
    }

    fn globs(&mut self, n: &Node, path: &str) -> Vec<String> {
        let list = self.strings(n, path);
        list.into_iter()
            .filter(|g| {
                let ok = glob_ok(g);
                if !ok {
                    self.err(n.span, format!("`{path}`: `{}` is not a name or glob", g.escape_debug()));
                }
                ok
            })
            .collect()
    }
}

fn glob_ok(g: &str) -> bool {
    !g.is_empty() && g.len() <= 255 && !g.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use slipway_model::access::{Permission, Subject};

    use crate::SourceMap;

    fn errors(text: &str) -> String {
        let mut sources = SourceMap::default();
        let diags = crate::load_access(Path::new("access.yml"), text, &mut sources).expect_err("errors");
        diags.iter().map(|d| sources.render(d, false)).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn the_briefs_roles_load_verbatim_and_replace_the_built_ins_of_their_name() {
        let text = "roles:\n  admin:\n    permissions: [read:*, write:*]\n  developer:\n    permissions: [read:code, write:code]\n";
        let c = crate::load_access(Path::new("access.yml"), text, &mut SourceMap::default()).expect("loads");
        let dev = c.role("developer").expect("developer");
        assert_eq!(dev.permissions.len(), 2);
        assert!(dev.grants(&Permission::need("write", "code")).is_some());
        assert!(
            dev.grants(&Permission::need("write", "pipelines")).is_none(),
            "the file's developer replaced the built-in"
        );
        assert!(c.role("viewer").is_some() && c.role("deployer").is_some(), "other built-ins stay");
    }

    #[test]
    fn bindings_groups_and_protection_load() {
        let text = "groups:\n  ops: [carol, dave@example.com]\nbindings:\n  - {user: alice, role: developer, project: shop}\n  - {group: ops, role: deployer}\nprotected_environments:\n  prod:\n    refs: [main, 'v*']\n    approvals: 2\nprotected_refs: ['release/*']\n";
        let c = crate::load_access(Path::new("access.yml"), text, &mut SourceMap::default()).expect("loads");
        assert_eq!(c.groups_of("carol"), ["ops"]);
        assert_eq!(c.bindings[0].subject, Subject::User("alice".into()));
        assert_eq!(c.bindings[0].project.as_deref(), Some("shop"));
        assert_eq!(c.bindings[1].project, None);
        assert_eq!(c.protection("shop", "prod").map(|p| p.approvals), Some(2));
        assert!(c.is_protected_ref("main", "release/1.2"));
    }

    #[test]
    fn every_error_at_once_with_its_place() {
        let text = "roles:\n  ops:\n    permisions: [read:code]\n  dev:\n    permissions: [raed:code, read:cod]\nbindings:\n  - {user: alice, role: devloper}\n  - {group: nobody, role: dev}\n  - {role: dev}\nprotectd: {}\n";
        let e = errors(text);
        for want in [
            "access.yml:3:5",
            "unknown keyword `permisions`",
            "did you mean `permissions`?",
            "access.yml:5:19",
            "unknown verb `raed`",
            "access.yml:5:30",
            "unknown resource `cod`",
            "access.yml:7:25",
            "no role `devloper`",
            "did you mean `developer`?",
            "no group `nobody`",
            "names no `user` or `group`",
            "unknown keyword `protectd` in the access file",
            "did you mean `protected_refs`?",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }
}
