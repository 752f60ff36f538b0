//! Compiles GitOps files (docs/gitops.md): an environment's desired state — which release
//! (its version, and the artifacts' digests it must have) and the environment's settings in
//! the `environments:` section's own schema, so moving from push deploys is a copy — and an
//! application, in slipway's shape or the brief's Argo CD `Application` manifest.

use slipway_model::names;

use super::Cx;
use crate::diag::Span;
use crate::environment::Environment;
use crate::yaml::{Node, Value};

const DESIRED_TOP: &[&str] = &["release", "environments"];
const RELEASE_KEYS: &[&str] = &["version", "artifacts", "image"];
const APP_TOP: &[&str] = &["name", "project", "source", "destination", "sync_policy"];
const ARGO_TOP: &[&str] = &["apiVersion", "kind", "metadata", "spec"];

/// What an environment should run, as its file in the config repository says.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub environment: Environment,
    pub release: DesiredRelease,
}

/// The release part of a desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRelease {
    pub version: String,
    /// `(platform, sha256 hex)` the version's artifacts must have (empty: not checked).
    pub artifacts: Vec<(String, String)>,
    /// An image by digest (`repo@sha256:…`), for docker targets.
    pub image: Option<String>,
}

/// An application: a folder of a config repository → an environment of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub name: String,
    /// The slipway project whose releases it deploys.
    pub project: String,
    pub repo: String,
    /// The folder (or file) in the repository; the environment's file is `PATH/ENV.yml`.
    pub path: String,
    /// A branch, tag or commit; `HEAD` is the repository's default branch.
    pub revision: String,
    pub environment: String,
    pub automated: bool,
    pub self_heal: bool,
    pub prune: bool,
    /// An automated sync with `prune` may retire the environment when its desired file is
    /// deleted (Argo CD's `allowEmpty`); without it only a manual sync does.
    pub allow_empty: bool,
    /// When it may sync by itself (Argo CD's sync windows); none: at any time.
    pub windows: Vec<SyncWindow>,
}

/// A sync window, as Argo CD's: from each time `schedule` (cron, in `time_zone`) fires, for
/// `duration`, automated syncs and self-heal are allowed (`allow`) or not (`deny`). With any
/// `allow` window they happen only inside one; a `deny` window wins; `manual` lets
/// `slipway app sync` through a `deny` window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncWindow {
    pub kind: String,
    pub schedule: String,
    pub duration_ms: u64,
    pub manual: bool,
    pub time_zone: String,
}

/// Where an application's environment's desired state is in its repository: `PATH/ENV.yml`
/// (then `PATH/ENV.yaml`), or PATH itself when it names a YAML file — the first is the one
/// to write or name.
pub fn desired_files(path: &str, environment: &str) -> Vec<String> {
    let p = path.trim_matches('/');
    if p.ends_with(".yml") || p.ends_with(".yaml") {
        return vec![p.to_string()];
    }
    let dir = if p.is_empty() || p == "." { String::new() } else { format!("{p}/") };
    vec![format!("{dir}{environment}.yml"), format!("{dir}{environment}.yaml")]
}

impl Application {
    /// Nothing given yet: the repository's root at its default branch, synced by hand.
    fn blank() -> Application {
        Application {
            name: String::new(),
            project: String::new(),
            repo: String::new(),
            path: ".".into(),
            revision: "HEAD".into(),
            environment: String::new(),
            automated: false,
            self_heal: false,
            prune: false,
            allow_empty: false,
            windows: Vec::new(),
        }
    }
}

impl Cx {
    pub(super) fn desired(&mut self, root: &Node) -> Option<Desired> {
        let mut release = None;
        let mut envs = None;
        for (k, v) in self.map(root, "the desired-state file") {
            match k.name.as_str() {
                "release" => release = self.desired_release(v),
                "environments" => envs = Some((k.span, v)),
                _ => self.unknown_key(k, "the desired-state file", DESIRED_TOP),
            }
        }
        let Some((span, v)) = envs else {
            self.err(root.span, "the desired-state file has no `environments:` section").hint =
                Some("declare the environment as in `.slipway.yml`: `environments: {prod: {listen: …}}`".into());
            return None;
        };
        let mut all = self.environments(v);
        if all.len() != 1 {
            if all.len() > 1 {
                self.err(span, format!("the desired-state file declares {} environments; it holds one", all.len()))
                    .hint = Some("give each environment a file of its own: `PATH/ENV.yml`".into());
            }
            return None;
        }
        let environment = all.remove(0);
        let Some(release) = release else {
            self.err(root.span, "the desired-state file has no `release:`").hint =
                Some("say what runs there: `release: {version: v1.2.0}`".into());
            return None;
        };
        Some(Desired { environment, release })
    }

    fn desired_release(&mut self, n: &Node) -> Option<DesiredRelease> {
        let mut version = None;
        let mut artifacts = Vec::new();
        let mut image = None;
        for (k, v) in self.map(n, "release") {
            match k.name.as_str() {
                "version" => {
                    let Some(s) = self.string(v, "release:version") else { continue };
                    match names::check_version(&s) {
                        Ok(()) => version = Some(s),
                        Err(why) => {
                            self.err(v.span, format!("`release:version`: {why}"));
                        }
                    }
                }
                "artifacts" => {
                    for (p, d) in self.map(v, "release:artifacts") {
                        if !p.name.contains('/') {
                            self.err(p.span, format!("`release:artifacts`: `{}` is not a platform", p.name)).hint =
                                Some("name it as `os/arch`, like `linux/amd64`".into());
                            continue;
                        }
                        let Some(s) = self.string(d, &format!("release:artifacts:{}", p.name)) else { continue };
                        match digest(&s) {
                            Some(hex) => artifacts.push((p.name.clone(), hex)),
                            None => {
                                self.err(
                                    d.span,
                                    format!("`release:artifacts:{}`: `{s}` is not a SHA-256 digest", p.name),
                                )
                                .hint = Some(
                                    "write `sha256:` and 64 hex digits (`slipway history --json` shows them)".into(),
                                );
                            }
                        }
                    }
                }
                "image" => {
                    let Some(s) = self.string(v, "release:image") else { continue };
                    match s.split_once("@sha256:").map(|(_, h)| digest(&format!("sha256:{h}"))) {
                        Some(Some(_)) => image = Some(s),
                        _ => {
                            self.err(v.span, format!("`release:image`: `{s}` is not pinned by digest")).hint =
                                Some("GitOps names what runs exactly: `registry/app@sha256:…`".into());
                        }
                    }
                }
                _ => self.unknown_key(k, "release", RELEASE_KEYS),
            }
        }
        match version {
            Some(version) => Some(DesiredRelease { version, artifacts, image }),
            None => {
                if !matches!(n.value, Value::Map(_)) {
                    return None;
                }
                self.err(n.span, "`release:` has no `version`").hint = Some("add `version: v1.2.0`".into());
                None
            }
        }
    }

    pub(super) fn application(&mut self, root: &Node) -> Option<Application> {
        let argo =
            matches!(&root.value, Value::Map(m) if m.iter().any(|(k, _)| k.name == "apiVersion" || k.name == "kind"));
        if argo { self.argo_application(root) } else { self.slipway_application(root) }
    }

    fn slipway_application(&mut self, root: &Node) -> Option<Application> {
        let mut app = Application::blank();
        for (k, v) in self.map(root, "the application") {
            match k.name.as_str() {
                "name" => app.name = self.string(v, "name").unwrap_or_default(),
                "project" => app.project = self.string(v, "project").unwrap_or_default(),
                "source" => self.source(v, "source", &mut app, false),
                "destination" => {
                    for (d, dv) in self.map(v, "destination") {
                        match d.name.as_str() {
                            "environment" => {
                                app.environment = self.string(dv, "destination:environment").unwrap_or_default()
                            }
                            _ => self.unknown_key(d, "destination", &["environment"]),
                        }
                    }
                }
                "sync_policy" => self.sync_policy(v, "sync_policy", &mut app),
                _ => self.unknown_key(k, "the application", APP_TOP),
            }
        }
        self.check_app(root.span, app)
    }

    /// The brief's Argo CD manifest: `metadata.name`, `spec.source` (`repoURL`, `path`,
    /// `targetRevision`), `spec.destination` (its `name`, else its `namespace`, is the
    /// environment), `spec.syncPolicy.automated` (`prune`, `selfHeal`); the slipway project
    /// from the `slipway.dev/project` label (else the application's name).
    fn argo_application(&mut self, root: &Node) -> Option<Application> {
        let mut app = Application::blank();
        let (mut namespace, mut dest_name) = (None, None);
        for (k, v) in self.map(root, "the Application") {
            match k.name.as_str() {
                "apiVersion" => {
                    let s = self.string(v, "apiVersion").unwrap_or_default();
                    if !s.starts_with("argoproj.io/") {
                        self.err(v.span, format!("`apiVersion: {s}` is not an Argo CD application")).hint =
                            Some("write `apiVersion: argoproj.io/v1alpha1`".into());
                    }
                }
                "kind" => {
                    let s = self.string(v, "kind").unwrap_or_default();
                    if s != "Application" {
                        self.err(v.span, format!("`kind: {s}`: only `Application` is read")).hint =
                            Some("an ApplicationSet or AppProject has no slipway counterpart yet".into());
                    }
                }
                "metadata" => {
                    for (m, mv) in self.map(v, "metadata") {
                        match m.name.as_str() {
                            "name" => app.name = self.string(mv, "metadata:name").unwrap_or_default(),
                            "labels" => {
                                for (l, lv) in self.map(mv, "metadata:labels") {
                                    if l.name == "slipway.dev/project" {
                                        app.project = self.string(lv, "metadata:labels").unwrap_or_default();
                                    }
                                }
                            }
                            // Kubernetes' bookkeeping means nothing here.
                            _ => {}
                        }
                    }
                }
                "spec" => {
                    for (s, sv) in self.map(v, "spec") {
                        match s.name.as_str() {
                            "source" => self.source(sv, "spec:source", &mut app, true),
                            "destination" => {
                                for (d, dv) in self.map(sv, "spec:destination") {
                                    match d.name.as_str() {
                                        "name" => dest_name = self.string(dv, "spec:destination:name"),
                                        "namespace" => namespace = self.string(dv, "spec:destination:namespace"),
                                        "server" => {}
                                        _ => self.unknown_key(d, "spec:destination", &["name", "namespace", "server"]),
                                    }
                                }
                            }
                            "syncPolicy" => self.sync_policy(sv, "spec:syncPolicy", &mut app),
                            // The Argo CD project groups applications for its own RBAC.
                            "project" => {}
                            _ => self.unknown_key(s, "spec", &["project", "source", "destination", "syncPolicy"]),
                        }
                    }
                }
                _ => self.unknown_key(k, "the Application", ARGO_TOP),
            }
        }
        app.environment = dest_name.or(namespace).unwrap_or_default();
        if app.project.is_empty() {
            app.project = app.name.clone();
        }
        self.check_app(root.span, app)
    }

    fn source(&mut self, n: &Node, what: &str, app: &mut Application, argo: bool) {
        let (repo, rev) = if argo { ("repoURL", "targetRevision") } else { ("repo", "revision") };
        for (k, v) in self.map(n, what) {
            let at = format!("{what}:{}", k.name);
            match k.name.as_str() {
                x if x == repo => app.repo = self.string(v, &at).unwrap_or_default(),
                "path" => app.path = self.string(v, &at).unwrap_or_default(),
                x if x == rev => app.revision = self.string(v, &at).unwrap_or_default(),
                _ => self.unknown_key(k, what, &[repo, "path", rev]),
            }
        }
    }

    fn sync_policy(&mut self, n: &Node, what: &str, app: &mut Application) {
        for (k, v) in self.map(n, what) {
            match k.name.as_str() {
                "automated" => {
                    app.automated = !matches!(v.value, Value::Bool(false));
                    if let Value::Map(_) = v.value {
                        for (a, av) in self.map(v, "automated") {
                            let at = format!("{what}:automated:{}", a.name);
                            match a.name.as_str() {
                                "prune" => app.prune = self.boolean(av, &at).unwrap_or(false),
                                "selfHeal" | "self_heal" => app.self_heal = self.boolean(av, &at).unwrap_or(false),
                                "allowEmpty" | "allow_empty" => {
                                    app.allow_empty = self.boolean(av, &at).unwrap_or(false)
                                }
                                _ => self.unknown_key(a, "automated", &["prune", "selfHeal", "allowEmpty"]),
                            }
                        }
                    }
                }
                "syncWindows" | "windows" => {
                    let at = format!("{what}:{}", k.name);
                    match &v.value {
                        Value::Seq(items) => {
                            for (i, w) in items.iter().enumerate() {
                                if let Some(w) = self.window(w, &format!("{at}[{i}]")) {
                                    app.windows.push(w);
                                }
                            }
                        }
                        _ => self.type_err(v, &at, "a list of windows"),
                    }
                }
                "syncOptions" | "retry" | "managedNamespaceMetadata" => {}
                _ => self.unknown_key(k, what, &["automated", "windows"]),
            }
        }
    }

    /// One sync window: `{kind: allow|deny, schedule: CRON, duration: 1h, manualSync: true,
    /// timeZone: Europe/Berlin}` (Argo CD's keys, or `manual`/`time_zone`).
    fn window(&mut self, n: &Node, what: &str) -> Option<SyncWindow> {
        let before = self.error_count();
        let mut w = SyncWindow {
            kind: String::new(),
            schedule: String::new(),
            duration_ms: 0,
            manual: false,
            time_zone: "UTC".into(),
        };
        for (k, v) in self.map(n, what) {
            let at = format!("{what}:{}", k.name);
            match k.name.as_str() {
                "kind" => {
                    w.kind = self.string(v, &at).unwrap_or_default();
                    if !matches!(w.kind.as_str(), "allow" | "deny") {
                        self.err(v.span, format!("`{at}` is `{}`: a window is `allow` or `deny`", w.kind));
                    }
                }
                "schedule" => {
                    w.schedule = self.string(v, &at).unwrap_or_default();
                    if let Err(e) = croner::parser::CronParser::builder().build().parse(&w.schedule) {
                        self.err(v.span, format!("`{at}`: `{}` is not a cron expression: {e}", w.schedule)).hint =
                            Some("five fields: minute hour day-of-month month day-of-week, e.g. `0 22 * * 1-5`".into());
                    }
                }
                "duration" => {
                    w.duration_ms = self.duration(v, &at).map_or(0, |d| d.as_millis() as u64);
                    if w.duration_ms == 0 && self.error_count() == before {
                        self.err(v.span, format!("`{at}` must be longer than 0"));
                    }
                }
                "manualSync" | "manual_sync" | "manual" => w.manual = self.boolean(v, &at).unwrap_or(false),
                "timeZone" | "time_zone" => w.time_zone = self.string(v, &at).unwrap_or_default(),
                // Argo CD scopes a project's windows; an application's own need none.
                "applications" | "namespaces" | "clusters" => {}
                _ => self.unknown_key(k, what, &["kind", "schedule", "duration", "manualSync", "timeZone"]),
            }
        }
        for (field, empty) in [("kind", w.kind.is_empty()), ("schedule", w.schedule.is_empty())] {
            if empty && self.error_count() == before {
                self.err(n.span, format!("`{what}` has no `{field}`"));
            }
        }
        if w.duration_ms == 0 && self.error_count() == before {
            self.err(n.span, format!("`{what}` has no `duration`")).hint = Some("e.g. `duration: 8h`".into());
        }
        (self.error_count() == before).then_some(w)
    }

    fn check_app(&mut self, span: Span, app: Application) -> Option<Application> {
        let before = self.error_count();
        for (field, value) in [("name", &app.name), ("project", &app.project), ("the source's repository", &app.repo)] {
            if value.is_empty() {
                self.err(span, format!("the application has no {field}"));
            }
        }
        if !app.name.is_empty()
            && let Err(why) = names::check_environment(&app.name)
        {
            self.err(span, format!("application name: {why}"));
        }
        if app.environment.is_empty() {
            self.err(span, "the application has no destination environment").hint =
                Some("name the slipway environment it syncs: `destination: {environment: prod}` (Argo CD: `spec.destination.name`)".into());
        } else if let Err(why) = names::check_environment(&app.environment) {
            self.err(span, format!("destination: {why}"));
        }
        if app.path.split('/').any(|p| p == "..") || app.path.starts_with('/') {
            self.err(span, format!("source path `{}` leaves the repository", app.path));
        }
        (self.error_count() == before).then_some(app)
    }
}

/// `sha256:HEX` (or bare HEX) → the 64 hex digits, lower case.
fn digest(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{SourceMap, load_application, load_desired};

    fn errors(r: Result<impl std::fmt::Debug, Vec<crate::Diagnostic>>, sources: &SourceMap) -> Vec<String> {
        match r {
            Ok(v) => panic!("no error: {v:?}"),
            Err(d) => d.iter().map(|d| format!("{} {}", sources.location(d.span), d.message)).collect(),
        }
    }

    #[test]
    fn a_desired_state_is_a_release_and_one_environment_in_the_pipeline_files_schema() {
        let text = "release:\n  version: v1.2.0\n  artifacts:\n    linux/amd64: sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\nenvironments:\n  prod:\n    listen: 127.0.0.1:8183\n    instances: 3\n    strategy: {type: blue-green}\n";
        let mut s = SourceMap::default();
        let d = load_desired(Path::new("envs/prod.yml"), text, &mut s).expect("compiles");
        assert_eq!(d.release.version, "v1.2.0");
        assert_eq!(d.release.artifacts[0].0, "linux/amd64");
        assert!(d.release.artifacts[0].1.starts_with("abcdef0123"), "lower case: {:?}", d.release.artifacts);
        assert_eq!((d.environment.name.as_str(), d.environment.instances), ("prod", 3));
    }

    #[test]
    fn every_error_of_a_desired_state_at_its_place() {
        let text = "release:\n  version: 'bad version'\n  artifacts:\n    amd64: sha256:00\n    linux/arm64: nope\n  image: app:latest\n  colour: red\nenvironments:\n  prod:\n    listen: nowhere\n    instancs: 2\n";
        let mut s = SourceMap::default();
        let e = errors(load_desired(Path::new("prod.yml"), text, &mut s), &s);
        let all = e.join("\n");
        for want in [
            "prod.yml:2:12 `release:version`",
            "prod.yml:4:5 `release:artifacts`: `amd64` is not a platform",
            "prod.yml:5:18 `release:artifacts:linux/arm64`: `nope` is not a SHA-256 digest",
            "prod.yml:6:10 `release:image`: `app:latest` is not pinned by digest",
            "prod.yml:7:3 unknown keyword `colour` in release",
            "prod.yml:11:5 unknown keyword `instancs`",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
        let two = "release: {version: v1}\nenvironments:\n  a: {listen: 127.0.0.1:1}\n  b: {listen: 127.0.0.1:2}\n";
        let e = errors(load_desired(Path::new("x.yml"), two, &mut s), &s);
        assert!(e.iter().any(|m| m.contains("declares 2 environments; it holds one")), "{e:?}");
        let none = "environments:\n  a: {listen: 127.0.0.1:1}\n";
        let e = errors(load_desired(Path::new("y.yml"), none, &mut s), &s);
        assert!(e.iter().any(|m| m.contains("has no `release:`")), "{e:?}");
    }

    #[test]
    fn the_briefs_argo_cd_application_reads_as_an_application() {
        let argo = "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: shop-prod\n  namespace: argocd\n  labels:\n    slipway.dev/project: shop\nspec:\n  project: default\n  source:\n    repoURL: https://git.example.com/config.git\n    targetRevision: HEAD\n    path: envs\n  destination:\n    server: https://kubernetes.default.svc\n    namespace: prod\n  syncPolicy:\n    automated:\n      prune: true\n      selfHeal: true\n";
        let mut s = SourceMap::default();
        let a = load_application(Path::new("app.yaml"), argo, &mut s).expect("reads");
        assert_eq!(
            (
                a.name.as_str(),
                a.project.as_str(),
                a.repo.as_str(),
                a.path.as_str(),
                a.revision.as_str(),
                a.environment.as_str()
            ),
            ("shop-prod", "shop", "https://git.example.com/config.git", "envs", "HEAD", "prod")
        );
        assert!(a.automated && a.prune && a.self_heal && !a.allow_empty);
        let empty = argo.replace("      selfHeal: true\n", "      selfHeal: true\n      allowEmpty: true\n");
        assert!(load_application(Path::new("app.yaml"), &empty, &mut s).expect("reads").allow_empty);
        let ours = "name: web\nproject: shop\nsource: {repo: /srv/config.git, path: envs, revision: main}\ndestination: {environment: web}\nsync_policy: {automated: {selfHeal: true}}\n";
        let a = load_application(Path::new("web.yml"), ours, &mut s).expect("reads");
        assert!(a.automated && a.self_heal && !a.prune && a.revision == "main");
        let bad =
            "apiVersion: v1\nkind: ApplicationSet\nmetadata: {name: x}\nspec:\n  source: {repoURL: r, path: ../up}\n";
        let e = errors(load_application(Path::new("bad.yaml"), bad, &mut s), &s).join("\n");
        assert!(e.contains("bad.yaml:1:13 `apiVersion: v1` is not an Argo CD application"), "{e}");
        assert!(e.contains("bad.yaml:2:7 `kind: ApplicationSet`"), "{e}");
        assert!(e.contains("no destination environment") && e.contains("leaves the repository"), "{e}");
    }

    #[test]
    fn sync_windows_in_argo_cds_keys_or_ours_and_their_errors_at_their_place() {
        let mut s = SourceMap::default();
        let app = |windows: &str| {
            format!(
                "name: web\nproject: shop\nsource: {{repo: /srv/c.git, path: envs}}\ndestination: {{environment: web}}\nsync_policy:\n  automated: {{selfHeal: true}}\n  windows:\n{windows}"
            )
        };
        let good = app(
            "    - {kind: deny, schedule: '0 22 * * *', duration: 10h, manualSync: true, timeZone: Europe/Berlin}\n    - {kind: allow, schedule: '0 9 * * 1-5', duration: 8h}\n",
        );
        let a = load_application(Path::new("web.yml"), &good, &mut s).expect("reads");
        assert_eq!(a.windows.len(), 2);
        assert_eq!(
            (
                a.windows[0].kind.as_str(),
                a.windows[0].duration_ms,
                a.windows[0].manual,
                a.windows[0].time_zone.as_str()
            ),
            ("deny", 36_000_000, true, "Europe/Berlin")
        );
        assert_eq!((a.windows[1].manual, a.windows[1].time_zone.as_str()), (false, "UTC"));
        let bad = app(
            "    - {kind: maybe, schedule: '0 22 * * *', duration: 1h}\n    - {kind: deny, schedule: 'at night', duration: 1h}\n    - {kind: deny, schedule: '0 1 * * *'}\n",
        );
        let e = errors(load_application(Path::new("web.yml"), &bad, &mut s), &s).join("\n");
        assert!(e.contains("web.yml:8:14 `sync_policy:windows[0]:kind` is `maybe`"), "{e}");
        assert!(e.contains("web.yml:9:30") && e.contains("`at night` is not a cron expression"), "{e}");
        assert!(e.contains("web.yml:10:7 `sync_policy:windows[2]` has no `duration`"), "{e}");
    }
}
