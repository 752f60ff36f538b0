//! The built-in Go pipeline: what slipway runs in a repository that has a `go.mod` and no
//! pipeline file, and what `slipway init` writes out for editing.

/// The name diagnostics and `slipway plan` give the built-in pipeline.
pub const NAME: &str = "<built-in Go pipeline>";
/// The name a pipeline file includes the built-in Go pipeline by:
/// `include: [{template: slipway/go.yml}]`, then adds or overrides what it needs.
pub const TEMPLATE: &str = "slipway/go.yml";

pub const GO_PIPELINE: &str = r#"# The built-in Go pipeline of slipway (written by `slipway init`; edit freely).
# Job syntax is GitLab CI's: https://docs.gitlab.com/ee/ci/yaml/
# Each step is a slipway command that also works on its own in any CI.
stages: [verify, lint, test, gate, build, package]

# Quality gates checked by the `quality` job (see docs/go.md). Example:
# gates:
#   coverage:
#     total: 70
#
# A container image made by the `container` job (see docs/images.md). Example:
# images:
#   registry: registry.example.com/team/app
#   tags: ["{{version}}", "{{commit_short}}"]
#   ports: [8080]

verify:
  stage: verify
  script:
    # A module that vendors its dependencies builds from vendor/ and needs no download.
    - if [ ! -f vendor/modules.txt ]; then go mod download; fi
    - slipway go mod check
  artifacts:
    when: always
    reports:
      gomod: .slipway/reports/mod.json

vet:
  stage: lint
  needs: []
  script:
    - slipway go vet
  artifacts:
    when: always
    reports:
      govet: .slipway/reports/vet.json

test:
  stage: test
  needs: []
  script:
    - |
      race=""
      if [ "$(go env CGO_ENABLED)" = "1" ] && command -v "$(go env CC)" >/dev/null 2>&1; then
        race="-race"
      else
        echo "cgo unavailable: testing without -race"
      fi
      # SLIPWAY_CHANGED_SINCE=auto tests only what the change affects (see docs/go.md).
      slipway go test ${SLIPWAY_CHANGED_SINCE:+--changed-since "$SLIPWAY_CHANGED_SINCE"} --junit .slipway/reports/junit.xml -- $race
  coverage: '/coverage (\d+\.\d+)%/'
  artifacts:
    when: always
    reports:
      gotest: .slipway/reports/tests.json
      coverage: .slipway/reports/coverage.json
      junit: .slipway/reports/junit.xml

quality:
  stage: gate
  needs: [verify, vet, test]
  script:
    # Failed tests, vet findings and an untidy module always stop the pipeline; a coverage
    # minimum comes from the gates: section, or from --var SLIPWAY_COVERAGE_MIN=70.
    - slipway gate --max-failed 0 --max-vet 0 --tidy ${SLIPWAY_COVERAGE_MIN:+--coverage-min "$SLIPWAY_COVERAGE_MIN"}

build:
  stage: build
  needs: [quality]
  script:
    - slipway go build --version "${CI_COMMIT_TAG:-$CI_COMMIT_SHORT_SHA}"
  artifacts:
    paths:
      - dist/

container:
  stage: package
  needs: [build]
  script:
    - slipway image build --if-configured --json > image.json
    - cat image.json
  artifacts:
    paths:
      - image.json
      - dist/image/
"#;
