//! No input makes the parser, the compiler or the planner panic: random YAML-ish text and
//! random mutations of a realistic pipeline go through the whole front end.

use std::path::Path;

use proptest::prelude::*;
use slipway_pipeline::plan::{Context, Facts, plan};
use slipway_pipeline::{SourceMap, load_pipeline_text};

struct Everything;
impl Facts for Everything {
    fn changed_files(&self, _: Option<&str>) -> Option<Vec<String>> {
        Some(vec!["src/main.go".into()])
    }
    fn exists(&self, _: &str) -> bool {
        true
    }
}

const SEED: &str = r#"stages: [build, test]
variables: {A: "1", B: {value: "$A", expand: false}}
.tmpl: &t
  before_script: [echo hi]
build:
  <<: *t
  stage: build
  parallel: {matrix: [{OS: [linux, darwin]}]}
  script: ["echo $OS"]
  artifacts: {paths: [dist/], reports: {dotenv: build.env}}
test:
  extends: .tmpl
  stage: test
  needs: [{job: build, parallel: {matrix: [{OS: linux}]}}]
  rules:
    - if: '$A == "1" && ($B =~ /x/i || $C)'
      changes: {paths: ["src/**"], compare_to: main}
    - when: manual
  script: [!reference [.tmpl, before_script], go test]
  retry: {max: 2, when: [script_failure]}
  timeout: 1h 30m
  cache: [{key: {files: [go.sum]}, paths: [.cache]}]
"#;

fn front_end(text: &str) {
    let mut sm = SourceMap::default();
    if let Ok((p, _)) = load_pipeline_text(Path::new("/nonexistent"), Path::new("t.yml"), text, &mut sm) {
        let cx = Context {
            predefined: Default::default(),
            overrides: Default::default(),
            facts: &Everything,
            source: "push".into(),
            first_job_id: 1,
        };
        let _ = plan(&p, &cx);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_yamlish_text(s in "[a-z:\\-\\[\\]{}&*!<>|'\" \\n$=~/().,0-9]{0,200}") {
        front_end(&s);
    }

    #[test]
    fn mutated_pipelines(ops in proptest::collection::vec((0usize..2000, 0u8..3, "[:\\- \\n\\[\\]{}&*!\"'a-z$/()|=]{1,3}"), 1..8)) {
        let mut text = SEED.to_string();
        for (pos, op, ins) in ops {
            let mut at = pos % (text.len() + 1);
            while !text.is_char_boundary(at) { at -= 1; }
            match op {
                0 => text.insert_str(at, &ins),
                1 => { let end = (at + ins.len()).min(text.len()); if text.is_char_boundary(end) { text.replace_range(at..end, ""); } }
                _ => { let end = (at + ins.len()).min(text.len()); if text.is_char_boundary(end) { text.replace_range(at..end, &ins); } }
            }
        }
        front_end(&text);
    }
}

#[test]
fn the_seed_itself_is_valid() {
    let mut sm = SourceMap::default();
    let r = load_pipeline_text(Path::new("/nonexistent"), Path::new("t.yml"), SEED, &mut sm);
    assert!(r.is_ok(), "{:?}", r.err());
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    front_end(&deep);
    let deep_map = (0..5000).map(|i| format!("{}k{i}:\n", "  ".repeat(i))).collect::<String>();
    front_end(&deep_map);
}
