//! The built-in Go pipeline: what slipway runs in a repository that has a `go.mod` and no
//! pipeline file, and what `slipway init` writes out for editing.

/// The name diagnostics and `slipway plan` give the built-in pipeline.
pub const NAME: &str = "<built-in Go pipeline>";

pub const GO_PIPELINE: &str = r#"# The built-in Go pipeline of slipway (written by `slipway init`; edit freely).
# Job syntax is GitLab CI's: https://docs.gitlab.com/ee/ci/yaml/
stages: [verify, lint, test, build]

verify:
  stage: verify
  script:
    - go mod download
    - go mod verify
    - go mod tidy -diff

vet:
  stage: lint
  needs: []
  script:
    - go vet ./...

gofmt:
  stage: lint
  needs: []
  script:
    - unformatted="$(gofmt -l $(go list -f '{{.Dir}}' ./...))"
    - if [ -n "$unformatted" ]; then echo "gofmt needed on:"; echo "$unformatted"; exit 1; fi

test:
  stage: test
  needs: []
  script:
    - |
      if [ "$(go env CGO_ENABLED)" = "1" ] && command -v "$(go env CC)" >/dev/null 2>&1; then
        go test -race -cover ./...
      else
        echo "cgo unavailable: running without -race"
        go test -cover ./...
      fi
  coverage: '/coverage: \d+\.\d+% of statements/'

build:
  stage: build
  variables:
    CGO_ENABLED: "0"
  script:
    - mkdir -p dist
    - go build -trimpath -ldflags "-X main.version=${CI_COMMIT_SHORT_SHA:-dev}" -o dist/ ./...
    - ls -l dist
  artifacts:
    paths:
      - dist/
"#;
