//! Reading a pipeline file and its `include:local` files into one merged YAML tree.
//! This is the only IO the pipeline crate does: reading the files it is pointed at.

use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, SourceMap, Span, did_you_mean};
use crate::yaml::{self, Key, Node, Value};

const MAX_INCLUDES: usize = 150;

/// Reads `main` (relative paths in `include:local` resolve against `project_dir`) and merges
/// every included file into one tree, the including file winning on conflicts.
pub fn load(project_dir: &Path, main: &Path, sources: &mut SourceMap) -> Result<Loaded, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(main).map_err(|e| {
        let id = sources.add(main, String::new());
        vec![Diagnostic::error(Span::new(id, 1, 1, 1, 1), format!("cannot read pipeline file: {e}"))]
    })?;
    load_text(project_dir, main, text, sources, None)
}

/// What the loader cannot read itself: `include:remote` (HTTPS) and `include:project` (another
/// git repository), given by the caller with its network, git and caches.
pub trait Fetch {
    /// The text at `url`.
    fn remote(&self, url: &str) -> Result<Fetched, String>;
    /// File `file` of project `project` at `git_ref` (`None`: its default branch).
    fn project(&self, project: &str, git_ref: Option<&str>, file: &str) -> Result<Fetched, String>;
    /// The variables `include:rules` test: the pipeline's predefined ones and the run's
    /// (`--var`), which win (the including file's global `variables:` come between).
    fn variables(&self) -> (crate::vars::VarMap, crate::vars::VarMap) {
        Default::default()
    }
    /// The files this pipeline changed, for `include:rules:changes` (`None`: unknown, true).
    fn changed_files(&self, _compare_to: Option<&str>) -> Option<Vec<String>> {
        None
    }
}

/// `include:rules`' questions about files: the project's files (listed once per load), and
/// the caller's diff.
struct IncludeFacts<'a> {
    files: &'a [PathBuf],
    fetch: &'a dyn Fetch,
}

impl crate::plan::Facts for IncludeFacts<'_> {
    fn changed_files(&self, compare_to: Option<&str>) -> Option<Vec<String>> {
        self.fetch.changed_files(compare_to)
    }

    fn exists(&self, glob: &str) -> bool {
        let Ok(g) = globset::GlobBuilder::new(glob.trim_start_matches("./")).literal_separator(true).build() else {
            return false;
        };
        let m = g.compile_matcher();
        self.files.iter().any(|f| m.is_match(f))
    }
}

/// A fetched file, and a warning when it came from the cache because the source failed.
pub struct Fetched {
    pub text: String,
    pub warning: Option<String>,
}

/// Where an included file comes from.
enum Origin {
    Local,
    Remote(String),
    Project {
        project: String,
        git_ref: Option<String>,
        file: String,
    },
    /// A CI/CD component: the first of `files` that its project has at `version`.
    Component {
        project: String,
        version: String,
        files: [String; 2],
    },
}

/// The merged tree, and what GitLab tolerates that the files did (duplicate keys).
pub struct Loaded {
    pub root: Node,
    pub warnings: Vec<Diagnostic>,
}

/// Like [`load`], for text already in memory (the built-in template, tests).
pub fn load_text(
    project_dir: &Path,
    name: &Path,
    text: String,
    sources: &mut SourceMap,
    fetch: Option<&dyn Fetch>,
) -> Result<Loaded, Vec<Diagnostic>> {
    let mut l = Loader {
        project_dir: project_dir.to_path_buf(),
        sources,
        errors: Vec::new(),
        warnings: Vec::new(),
        count: 0,
        fetch,
        files: std::cell::OnceCell::new(),
    };
    let id = l.sources.add(name, text);
    let doc = yaml::parse_pipeline(l.sources.text(id), id)?;
    let node = l.with_inputs(doc, None, Span::new(id, 1, 1, 1, 1));
    let mut stack = vec![name.to_path_buf()];
    let merged = l.expand(node, &mut stack);
    if l.errors.is_empty() { Ok(Loaded { root: merged, warnings: l.warnings }) } else { Err(l.errors) }
}

struct Loader<'a> {
    project_dir: PathBuf,
    sources: &'a mut SourceMap,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    count: usize,
    fetch: Option<&'a dyn Fetch>,
    /// The project's files, for `include:rules:exists`; listed on the first question.
    files: std::cell::OnceCell<Vec<PathBuf>>,
}

impl Loader<'_> {
    /// A parsed file's configuration with its inputs interpolated: the values `given` (an
    /// include's `inputs:`; `at` is that include) or the spec's defaults.
    fn with_inputs(&mut self, doc: yaml::PipelineDoc, given: Option<&Node>, at: Span) -> Node {
        self.warnings.extend(doc.warnings);
        let spec =
            match &doc.header {
                Some(h) => crate::inputs::Spec::read(h, &mut self.errors),
                None => {
                    if let Some(g) = given {
                        self.errors.push(Diagnostic::error(g.span, "the included file declares no inputs").with_hint(
                            "give `inputs:` only to a file that starts with a `spec:inputs` header and `---`",
                        ));
                    }
                    crate::inputs::Spec::default()
                }
            };
        let values = spec.resolve(given, at, &mut self.errors);
        crate::inputs::interpolate(doc.root, &values, &mut self.errors)
    }

    /// Replaces the `include` key of `node` by the merged contents of the included files.
    fn expand(&mut self, node: Node, stack: &mut Vec<PathBuf>) -> Node {
        let Value::Map(entries) = node.value else {
            return node;
        };
        let mut own = Vec::new();
        let mut include = None;
        for (k, v) in entries {
            if k.name == "include" { include = Some((k, v)) } else { own.push((k, v)) }
        }
        let own = Node::new(Value::Map(own), node.span);
        let Some((key, inc)) = include else {
            return own;
        };
        let mut acc = Node::new(Value::Map(Vec::new()), node.span);
        let items = match inc.value {
            Value::Seq(items) => items,
            _ => vec![inc],
        };
        // The including file's global variables, for its includes' rules.
        let globals: Vec<(String, String)> = match own.get("variables").map(|v| &v.value) {
            Some(Value::Map(vars)) => vars
                .iter()
                .filter_map(|(k, v)| {
                    let value = match &v.value {
                        Value::Map(_) => v.get("value").and_then(|v| v.scalar_string()),
                        _ => v.scalar_string(),
                    };
                    value.map(|val| (k.name.clone(), val))
                })
                .collect(),
            _ => Vec::new(),
        };
        for item in items {
            if let Some(rules) = item.get("rules")
                && !self.rules_include(rules, &globals)
            {
                continue;
            }
            let given = item.get("inputs").cloned();
            for (path, span, origin) in self.include_paths(&item, &key, &globals) {
                if stack.contains(&path) {
                    let chain: Vec<String> = stack.iter().chain([&path]).map(|p| p.display().to_string()).collect();
                    self.errors.push(
                        Diagnostic::error(span, format!("include cycle: `{}` includes itself", path.display()))
                            .with_note(format!("chain: {}", chain.join(" → "))),
                    );
                    continue;
                }
                self.count += 1;
                if self.count > MAX_INCLUDES {
                    self.errors.push(Diagnostic::error(span, format!("too many includes (more than {MAX_INCLUDES})")));
                    return own;
                }
                let full = self.project_dir.join(&path);
                let read = match &origin {
                    Origin::Local if path == Path::new(crate::builtin::NAME) => {
                        Ok(crate::builtin::GO_PIPELINE.to_string())
                    }
                    Origin::Local => std::fs::read_to_string(&full).map_err(|e| e.to_string()),
                    Origin::Remote(url) => self.fetched(self.fetch.expect("checked").remote(url), span),
                    Origin::Project { project, git_ref, file } => {
                        self.fetched(self.fetch.expect("checked").project(project, git_ref.as_deref(), file), span)
                    }
                    Origin::Component { project, version, files } => {
                        let fetch = self.fetch.expect("checked");
                        let found = match fetch.project(project, Some(version), &files[0]) {
                            Ok(f) => Ok(f),
                            Err(first) => fetch.project(project, Some(version), &files[1]).map_err(|_| first),
                        };
                        self.fetched(found, span)
                            .map_err(|e| format!("the component has neither `{}` nor `{}` ({e})", files[0], files[1]))
                    }
                };
                let text = match read {
                    Ok(t) => t,
                    Err(e) => {
                        self.errors.push(Diagnostic::error(
                            span,
                            format!("cannot read included file `{}`: {e}", path.display()),
                        ));
                        continue;
                    }
                };
                let id = self.sources.add(&path, text);
                match yaml::parse_pipeline(self.sources.text(id), id) {
                    Ok(doc) => {
                        let n = self.with_inputs(doc, given.as_ref(), span);
                        // An empty file (or only comments) adds nothing, and takes nothing away.
                        if matches!(n.value, Value::Null) {
                            continue;
                        }
                        if !matches!(n.value, Value::Map(_)) {
                            self.errors.push(Diagnostic::error(
                                n.span,
                                "an included file must hold a mapping of jobs and keywords",
                            ));
                            continue;
                        }
                        stack.push(path.clone());
                        let n = self.expand(n, stack);
                        stack.pop();
                        acc = deep_merge(acc, n);
                    }
                    Err(e) => self.errors.extend(e),
                }
            }
        }
        deep_merge(acc, own)
    }

    /// The variables an include sees: the run's, then the including file's globals, then the
    /// predefined ones.
    fn lookup<'g>(fetch: &dyn Fetch, globals: &'g [(String, String)]) -> impl Fn(&str) -> Option<String> + 'g {
        let (predefined, overrides) = fetch.variables();
        move |name: &str| {
            overrides
                .get(name)
                .cloned()
                .or_else(|| globals.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
                .or_else(|| predefined.get(name).cloned())
        }
    }

    fn expand_vars(&self, s: &str, globals: &[(String, String)]) -> String {
        match self.fetch {
            Some(fetch) => crate::vars::expand(s, &Self::lookup(fetch, globals)),
            None => s.to_string(),
        }
    }

    /// Whether an include's `rules:` let it in: the first rule that matches decides
    /// (`when: never` keeps it out); none matching keeps it out, as in GitLab.
    fn rules_include(&mut self, rules: &Node, globals: &[(String, String)]) -> bool {
        let (rules, diags) = crate::compile::include_rules(rules);
        let failed = diags.iter().any(|d| d.severity == crate::diag::Severity::Error);
        self.errors.extend(diags);
        if failed {
            return false;
        }
        let Some(fetch) = self.fetch else {
            if let Some(r) = rules.first() {
                self.errors.push(
                    Diagnostic::error(r.span, "`include:rules` cannot be evaluated here")
                        .with_hint("include the file unconditionally, and put `rules` on the jobs it defines"),
                );
            }
            return false;
        };
        let lookup = Self::lookup(fetch, globals);
        let project_dir = &self.project_dir;
        let files = self.files.get_or_init(|| {
            let mut files = Vec::new();
            walk(project_dir, Path::new(""), &mut |p| files.push(p.to_path_buf()));
            files
        });
        let facts = IncludeFacts { files, fetch };
        match crate::plan::first_matching_rule(&rules, &lookup, &facts) {
            Some(r) => r.when != Some(crate::model::When::Never),
            None => false,
        }
    }

    /// A fetched file's text (its warning kept), or why it could not be had.
    fn fetched(&mut self, r: Result<Fetched, String>, span: Span) -> Result<String, String> {
        let f = r?;
        if let Some(w) = f.warning {
            self.warnings.push(Diagnostic::warning(span, w));
        }
        Ok(f.text)
    }

    fn include_paths(&mut self, item: &Node, key: &Key, globals: &[(String, String)]) -> Vec<(PathBuf, Span, Origin)> {
        let (local, span) = match &item.value {
            Value::Str(s) if s.starts_with("https://") || s.starts_with("http://") => {
                let url = self.expand_vars(s, globals);
                return self.remote(&url, item.span).into_iter().collect();
            }
            Value::Str(s) => (s.clone(), item.span),
            Value::Map(m) => {
                let mut local = None;
                let get = |name: &str| m.iter().find(|(k, _)| k.name == name).map(|(_, v)| v);
                if let Some(p) = get("project") {
                    return self.project(p, get("ref"), get("file"), item.span, globals);
                }
                for (k, v) in m {
                    match k.name.as_str() {
                        "template" if v.as_str() == Some(crate::builtin::TEMPLATE) => {
                            return vec![(PathBuf::from(crate::builtin::NAME), v.span, Origin::Local)];
                        }
                        "remote" => match v.as_str() {
                            Some(url) => {
                                let url = self.expand_vars(url, globals);
                                return self.remote(&url, v.span).into_iter().collect();
                            }
                            None => self.errors.push(Diagnostic::error(
                                v.span,
                                format!("`include:remote` must be a URL, found {}", v.kind()),
                            )),
                        },
                        "local" => match v.as_str() {
                            Some(s) => local = Some((s.to_string(), v.span)),
                            None => self.errors.push(Diagnostic::error(
                                v.span,
                                format!("`include:local` must be a string path, found {}", v.kind()),
                            )),
                        },
                        "template" => self.errors.push(
                            Diagnostic::error(v.span, format!("unknown template `{}`", v.as_str().unwrap_or_default()))
                                .with_hint(format!(
                                    "slipway's built-in template is `{}` (the built-in Go pipeline); GitLab's \
                                 templates are not available offline: copy the file in and use `include:local`",
                                    crate::builtin::TEMPLATE
                                )),
                        ),
                        "component" => {
                            return self.component(v, globals).into_iter().collect();
                        }
                        "file" | "ref" | "inputs" => {}
                        "rules" => {}
                        other => {
                            let mut d = Diagnostic::error(k.span, format!("unknown keyword `{other}` in `include`"));
                            if let Some(s) = did_you_mean(
                                other,
                                [
                                    "local",
                                    "remote",
                                    "project",
                                    "template",
                                    "component",
                                    "file",
                                    "ref",
                                    "rules",
                                    "inputs",
                                ],
                            ) {
                                d = d.with_hint(format!("did you mean `{s}`?"));
                            }
                            self.errors.push(d);
                        }
                    }
                }
                match local {
                    Some(l) => l,
                    None => return Vec::new(),
                }
            }
            _ => {
                self.errors.push(Diagnostic::error(
                    item.span,
                    format!(
                        "`{}` entries must be a path or a mapping like `local: path.yml`, found {}",
                        key.name,
                        item.kind()
                    ),
                ));
                return Vec::new();
            }
        };
        // Variables in the path, as GitLab expands them (predefined, global, the run's).
        let local = if local.contains('$') { self.expand_vars(&local, globals) } else { local };
        let rel = local.trim_start_matches('/').to_string();
        if !(rel.ends_with(".yml") || rel.ends_with(".yaml")) {
            self.errors.push(Diagnostic::error(span, format!("included file `{local}` must end in `.yml` or `.yaml`")));
            return Vec::new();
        }
        if rel.split('/').any(|c| c == "..") {
            self.errors.push(Diagnostic::error(span, format!("included path `{local}` leaves the project directory")));
            return Vec::new();
        }
        if rel.contains(['*', '?', '[', '{']) {
            let glob = match globset::GlobBuilder::new(&rel).literal_separator(true).build() {
                Ok(g) => g.compile_matcher(),
                Err(e) => {
                    self.errors.push(Diagnostic::error(span, format!("invalid glob `{local}`: {e}")));
                    return Vec::new();
                }
            };
            let mut found = Vec::new();
            walk(&self.project_dir, Path::new(""), &mut |p| {
                if glob.is_match(p) {
                    found.push(p.to_path_buf());
                }
            });
            found.sort();
            if found.is_empty() {
                self.errors.push(
                    Diagnostic::error(span, format!("`include:local` pattern `{local}` matches no file")).with_hint(
                        format!("patterns are relative to the project root `{}`", self.project_dir.display()),
                    ),
                );
            }
            return found.into_iter().map(|p| (p, span, Origin::Local)).collect();
        }
        let path = PathBuf::from(&rel);
        if !self.project_dir.join(&path).is_file() {
            self.errors.push(Diagnostic::error(span, format!("included file `{local}` does not exist")).with_hint(
                format!("`include:local` paths are relative to the project root `{}`", self.project_dir.display()),
            ));
            return Vec::new();
        }
        vec![(path, span, Origin::Local)]
    }

    /// `include:remote`: an `https://` URL of a `.yml` file, read through the caller.
    fn remote(&mut self, url: &str, span: Span) -> Option<(PathBuf, Span, Origin)> {
        let Some(_) = self.fetch else {
            self.offline(span, "include:remote");
            return None;
        };
        let bare = url.split(['?', '#']).next().unwrap_or(url);
        if !(bare.ends_with(".yml") || bare.ends_with(".yaml")) {
            self.errors
                .push(Diagnostic::error(span, format!("`include:remote` `{url}` must end in `.yml` or `.yaml`")));
            return None;
        }
        if !url.starts_with("https://") && !url.starts_with("http://") {
            self.errors.push(
                Diagnostic::error(span, format!("`include:remote` `{url}` is not an http(s) URL"))
                    .with_hint("a remote include is a full URL: `https://host/path/ci.yml`"),
            );
            return None;
        }
        Some((PathBuf::from(url), span, Origin::Remote(url.to_string())))
    }

    /// `include:component`: `host/group/project/name@version` is `templates/name.yml` (or
    /// `templates/name/template.yml`) of `https://host/group/project.git` at `version` (a tag,
    /// branch or commit; `~latest`: its highest release tag).
    fn component(&mut self, n: &Node, globals: &[(String, String)]) -> Option<(PathBuf, Span, Origin)> {
        let Some(raw) = n.as_str() else {
            self.errors.push(Diagnostic::error(
                n.span,
                "`include:component` must be a path like `host/group/project/name@1.0.0`",
            ));
            return None;
        };
        if self.fetch.is_none() {
            self.offline(n.span, "include:component");
            return None;
        }
        let full = self.expand_vars(raw, globals);
        let Some((path, version)) = full.rsplit_once('@').filter(|(_, v)| !v.is_empty()) else {
            self.errors.push(
                Diagnostic::error(n.span, format!("`include:component` `{full}` has no version"))
                    .with_hint("end it with `@` and a version: `@1.0.0`, a branch, a commit or `@~latest`"),
            );
            return None;
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
            self.errors.push(
                Diagnostic::error(
                    n.span,
                    format!("`include:component` `{full}` is not `host/project path/name@version`"),
                )
                .with_hint("e.g. `$CI_SERVER_FQDN/my-group/components/go-lint@1.0.0`"),
            );
            return None;
        }
        let (name, project) = (parts[parts.len() - 1], parts[1..parts.len() - 1].join("/"));
        let url = format!("https://{}/{project}.git", parts[0]);
        let files = [format!("templates/{name}.yml"), format!("templates/{name}/template.yml")];
        Some((PathBuf::from(&full), n.span, Origin::Component { project: url, version: version.to_string(), files }))
    }

    /// `include:project` with `file` (one or a list) and `ref`, read through the caller.
    fn project(
        &mut self,
        project: &Node,
        git_ref: Option<&Node>,
        file: Option<&Node>,
        span: Span,
        globals: &[(String, String)],
    ) -> Vec<(PathBuf, Span, Origin)> {
        let Some(name) = project.as_str().map(|p| self.expand_vars(p, globals)) else {
            self.errors
                .push(Diagnostic::error(project.span, "`include:project` must be a project path like `group/project`"));
            return Vec::new();
        };
        let Some(_) = self.fetch else {
            self.offline(project.span, "include:project");
            return Vec::new();
        };
        let git_ref = match git_ref {
            Some(r) => match r.scalar_string() {
                Some(r) => Some(self.expand_vars(&r, globals)),
                None => {
                    self.errors.push(Diagnostic::error(r.span, "`include:ref` must be a branch, tag or commit"));
                    return Vec::new();
                }
            },
            None => None,
        };
        let files: Vec<(String, Span)> = match file.map(|f| &f.value) {
            Some(Value::Str(f)) => vec![(f.clone(), file.map_or(span, |f| f.span))],
            Some(Value::Seq(items)) => {
                items.iter().filter_map(|i| i.as_str().map(|s| (s.to_string(), i.span))).collect()
            }
            _ => {
                self.errors.push(
                    Diagnostic::error(span, "`include:project` needs `file:` (a path or a list of paths)")
                        .with_hint("e.g. `file: templates/go.yml`"),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (f, fspan) in files {
            let rel = self.expand_vars(f.trim_start_matches('/'), globals);
            if !(rel.ends_with(".yml") || rel.ends_with(".yaml")) {
                self.errors
                    .push(Diagnostic::error(fspan, format!("included file `{f}` must end in `.yml` or `.yaml`")));
                continue;
            }
            let shown = format!("{name}@{}:{rel}", git_ref.as_deref().unwrap_or("HEAD"));
            out.push((
                PathBuf::from(shown),
                fspan,
                Origin::Project { project: name.to_string(), git_ref: git_ref.clone(), file: rel },
            ));
        }
        out
    }

    fn offline(&mut self, span: Span, what: &str) {
        self.errors.push(
            Diagnostic::error(span, format!("`{what}` is not supported offline yet"))
                .with_hint("this reader has no network: copy the file into the repository and use `include: { local: path/to/file.yml }`"),
        );
    }
}

fn walk(root: &Path, rel: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if matches!(n, ".git" | ".slipway" | "node_modules" | "target") {
            continue;
        }
        let p = rel.join(n);
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(root, &p, f),
            Ok(t) if t.is_file() => f(&p),
            _ => {}
        }
    }
}

/// GitLab's deep merge: mappings merge key by key (the `over` side wins), everything else is
/// replaced. Key order is the base's, with new keys appended.
pub fn deep_merge(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut b), Value::Map(o)) => {
            for (k, v) in o {
                if let Some(slot) = b.iter_mut().find(|(bk, _)| bk.name == k.name) {
                    let old = std::mem::replace(&mut slot.1, Node::new(Value::Null, v.span));
                    slot.1 = deep_merge(old, v);
                } else {
                    b.push((k, v));
                }
            }
            Node::new(Value::Map(b), over.span)
        }
        (_, ov) => Node { value: ov, span: over.span, content_offset: over.content_offset },
    }
}
