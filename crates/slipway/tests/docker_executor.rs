//! The Docker executor against the real Docker Engine: a job with `image:` runs in a container
//! of it (an image imported from this machine's busybox-static: nothing is pulled), with the
//! workspace at GitLab's `/builds/<project path>`, `sh` when the image has no bash, artifacts
//! and `after_script` as on the shell executor; a timeout, a Ctrl-C and a `kill -9` of slipway
//! leave no container behind; `--executor shell` runs the job on this machine instead.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::registry::Registry;
use common::*;

const IMAGE: &str = "slipway-test/busybox:exec";

/// The test image: busybox-static and its applets, imported (`docker import`) once.
fn busybox() -> &'static str {
    require("docker", "--version");
    if Command::new("docker").args(["image", "inspect", IMAGE]).output().unwrap().status.success() {
        return IMAGE;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", root.path().join("bin/busybox")).expect("busybox-static (scripts/setup installs it)");
    for applet in
        ["sh", "echo", "cat", "ls", "pwd", "test", "id", "sleep", "mkdir", "touch", "true", "false", "printf", "env"]
    {
        std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet)).unwrap();
    }
    let tar = Command::new("tar").args(["-C", root.path().to_str().unwrap(), "-c", "."]).output().unwrap();
    assert!(tar.status.success());
    let mut import = Command::new("docker")
        .args(["import", "-", IMAGE])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(import.wait().unwrap().success(), "docker import");
    IMAGE
}

/// Containers the executor made for job `job` (running or not).
fn containers(job: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=dev.slipway.job={job}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// `slipway run --json` in `r`, left running.
fn in_background(r: &Repo) -> std::process::Child {
    Command::new(bin())
        .args(["run", "--json"])
        .current_dir(r.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn image_jobs_run_in_their_container_with_gitlabs_paths_and_the_shell_executor_on_request() {
    let image = busybox();
    let job = format!("build-{}", std::process::id());
    let yaml = format!(
        r#"{job}:
  image: {image}
  before_script:
    - echo "in $CI_PROJECT_DIR of $CI_BUILDS_DIR as $(id -u)"
  script:
    - pwd
    - test -f .gitlab-ci.yml && echo workspace mounted
    - echo made > out.txt
    - false | true
  after_script:
    - echo "after $CI_JOB_STATUS"
  artifacts:
    when: always
    paths: [out.txt]
"#
    );
    let r = Repo::new(&[(".gitlab-ci.yml", &yaml)]);
    r.git(&["remote", "add", "origin", "https://gitlab.example.com/group/proj.git"]);
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 1, "`false | true` fails under pipefail: {}", run.debug());
    let log = run.log(&job);
    for want in ["in /builds/group/proj of /builds as 0", "/builds/group/proj", "workspace mounted", "after failed"] {
        assert!(log.iter().any(|l| l == want), "{want}: {log:#?}");
    }
    assert_eq!(
        std::fs::read_to_string(r.path().join(format!(".slipway/runs/1/artifacts/{job}/out.txt"))).unwrap(),
        "made\n"
    );
    assert!(containers(&job).is_empty(), "a container outlived its job");
    // `--executor shell`: the same job on this machine, said so; `--strict` refuses that.
    let run = r.slipway(&["run", "--executor", "shell"]);
    assert!(run.stderr.contains("running it on the shell executor (--executor shell)"), "{}", run.debug());
    let logs = r.slipway(&["logs", &job]);
    assert!(
        logs.stdout.contains(".slipway/work/") && !logs.stdout.contains("Using the Docker executor"),
        "{}",
        logs.debug()
    );
    let strict = r.slipway(&["run", "--executor", "shell", "--strict"]);
    assert_eq!(strict.code, 2, "{}", strict.debug());
    assert!(strict.stderr.contains("which `--executor shell` runs on this machine"), "{}", strict.debug());
}

#[test]
fn a_timeout_a_ctrl_c_and_a_kill_9_leave_no_container() {
    let image = busybox();
    let job = format!("long-{}", std::process::id());
    let yaml = format!("{job}:\n  image: {image}\n  timeout: 2s\n  script:\n    - sleep 60\n");
    let r = Repo::new(&[(".gitlab-ci.yml", &yaml)]);
    // The timeout stops the container.
    let t = Instant::now();
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert!(t.elapsed() < Duration::from_secs(20), "timed out in {:?}", t.elapsed());
    assert!(run.stdout.contains("timed out after 2"), "{}", run.debug());
    assert!(containers(&job).is_empty(), "the timed-out container is left");
    // Ctrl-C and kill -9 while the container runs.
    r.write(".gitlab-ci.yml", &format!("{job}:\n  image: {image}\n  script:\n    - sleep 60\n"));
    for signal in [libc::SIGINT, libc::SIGKILL] {
        let child = in_background(&r);
        until("the job's container never started", 20, || !containers(&job).is_empty());
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        assert!(signal == libc::SIGKILL || out.status.code() == Some(130), "{:?}", out.status);
        until(&format!("a container outlived slipway's signal {signal}"), 20, || containers(&job).is_empty());
    }
}

/// `image:` in GitLab's mapping form: `entrypoint`, `docker:user` and `pull_policy` are what
/// the container is made with; `never` with an image the engine lacks fails the job saying
/// so (nothing is pulled); a policy GitLab does not know is an error at its place.
#[test]
fn the_image_mapping_sets_entrypoint_user_and_pull_policy() {
    let image = busybox();
    let job = format!("as-user-{}", std::process::id());
    let missing = format!("missing-{}", std::process::id());
    let yaml = format!(
        r#"{job}:
  image:
    name: {image}
    entrypoint: [""]
    pull_policy: [never]
    docker: {{user: "1234"}}
  script:
    - id -u
{missing}:
  image: {{name: "slipway-test/not-here:{}", pull_policy: never}}
  script: [echo never runs]
"#,
        std::process::id()
    );
    let r = Repo::new(&[(".gitlab-ci.yml", &yaml)]);
    let plan = r.slipway(&["plan", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(v["jobs"][0]["image_options"]["user"], "1234", "{v}");
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 1, "{}", run.debug());
    assert!(run.log(&job).iter().any(|l| l == "1234"), "{:?}", run.log(&job));
    let statuses = run.statuses();
    assert!(statuses.contains(&(job.clone(), "success".to_string())), "{statuses:?}");
    assert!(statuses.contains(&(missing.clone(), "failed".to_string())), "{statuses:?}");
    assert!(
        run.stdout.contains("is not on this Docker Engine and pull_policy `never` does not pull it"),
        "{}",
        run.debug()
    );
    assert!(containers(&job).is_empty() && containers(&missing).is_empty());
    r.write(".gitlab-ci.yml", "job:\n  image: {name: x, pull_policy: sometimes, shell: bash}\n  script: [true]\n");
    let v = r.slipway(&["validate"]);
    assert_eq!(v.code, 2, "{}", v.debug());
    assert!(v.stderr.contains("`image:pull_policy` cannot be `sometimes`"), "{}", v.debug());
    assert!(v.stderr.contains("unknown keyword `shell` in `image`"), "{}", v.debug());
}

/// Docker networks the executor made for job `job`.
fn networks(job: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["network", "ls", "-q", "--filter", &format!("label=dev.slipway.job={job}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// `services:` are sidecars on a network of the job's own: reached by GitLab's default
/// aliases and by `alias:`, given their variables, waited for on their port; one that dies is
/// a warning with its log, not a failure; their logs are kept; nothing outlives the job, nor a
/// `kill -9` of slipway.
#[test]
fn services_are_reached_by_their_aliases_and_removed_with_their_network() {
    let image = busybox();
    let job = format!("svc-{}", std::process::id());
    let httpd = r#"mkdir -p /srv && echo "hello from $GREETING" > /srv/index.html && echo serving && exec busybox httpd -f -p 8080 -h /srv"#;
    let yaml = format!(
        r#"{job}:
  image: {image}
  services:
    - name: {image}
      alias: web,www
      entrypoint: ["/bin/busybox"]
      command: ["sh", "-c", '{httpd}']
      variables:
        GREETING: the service
        HEALTHCHECK_TCP_PORT: "8080"
    - name: {image}
      alias: broken
      entrypoint: ["/bin/busybox"]
      command: ["sh", "-c", "echo broken-service-says-bye; exit 3"]
      variables: {{HEALTHCHECK_TCP_PORT: "9"}}
  variables:
    CI_DEBUG_SERVICES: "true"
  script:
    - busybox wget -qO- http://web:8080/
    - busybox wget -qO- http://www:8080/
    - busybox wget -qO- http://slipway-test-busybox:8080/
    - busybox wget -qO- http://slipway-test__busybox:8080/ >/dev/null && echo default alias
    - sleep 1
    - echo script done
"#
    );
    let r = Repo::new(&[(".gitlab-ci.yml", &yaml)]);
    let plan = r.slipway(&["plan", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(
        v["jobs"][0]["services"][0]["aliases"],
        serde_json::json!(["slipway-test__busybox", "slipway-test-busybox", "web", "www"]),
        "{v}"
    );
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let log = run.log(&job);
    assert_eq!(log.iter().filter(|l| *l == "hello from the service").count(), 3, "{log:#?}");
    assert!(log.iter().any(|l| l == "default alias"), "{log:#?}");
    // The second service exited: a warning with its log, as GitLab's runner gives.
    assert!(log.iter().any(|l| l.contains("(broken) probably didn't start properly")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("exited with code 3")), "{log:#?}");
    // CI_DEBUG_SERVICES streams the services' logs as they come, not at the job's end.
    let at = |want: &str| log.iter().position(|l| l == want);
    assert!(at("[service:web] serving").is_some_and(|i| Some(i) < at("script done")), "{log:#?}");
    assert!(at("[service:broken] broken-service-says-bye").is_some(), "{log:#?}");
    let slug = std::fs::read_dir(r.path().join(".slipway/runs/1/services")).unwrap().next().unwrap().unwrap().path();
    assert_eq!(std::fs::read_to_string(slug.join("broken.log")).unwrap(), "broken-service-says-bye\n");
    assert!(containers(&job).is_empty() && networks(&job).is_empty(), "a service or its network outlived the job");

    // kill -9 of slipway while the job runs with its services: the guardian removes them.
    r.write(
        ".gitlab-ci.yml",
        &format!("{job}:\n  image: {image}\n  services: [{{name: {image}, entrypoint: [/bin/busybox], command: [sleep, \"60\"]}}]\n  script:\n    - echo started\n    - sleep 60\n"),
    );
    let child = in_background(&r);
    until("the job's container never started", 30, || containers(&job).len() == 2);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait_with_output().unwrap();
    until("a service or network outlived slipway's kill -9", 30, || {
        containers(&job).is_empty() && networks(&job).is_empty()
    });
}

/// The brief's Docker-in-Docker job, unmodified but for the test's names: `image:
/// docker:latest` with a `docker:dind` service builds an image and runs it, on this machine's
/// engine through its socket (a local `docker:latest` made of this machine's docker CLI when
/// the engine has none: nothing is pulled).
#[test]
fn the_briefs_docker_in_docker_job_builds_and_runs_an_image() {
    let base = busybox();
    docker_cli_image();
    let id = std::process::id();
    let port = free_port();
    let yaml = format!(
        r#"build:
  image: docker:latest
  services:
    - docker:dind
  variables:
    DOCKER_HOST: tcp://docker:2376
    DOCKER_TLS_CERTDIR: "/certs"
  script:
    - echo "DOCKER_HOST=$DOCKER_HOST certs=${{DOCKER_TLS_CERTDIR:-none}}"
    - docker build -t slipway-test/myapp:{id} .
    - docker run --rm --network host slipway-test/myapp:{id}
    - docker run -d --rm --network host --name slipway-test-myapp-{id} slipway-test/myapp:{id} busybox httpd -f -p {port} -h /srv
    - for i in 1 2 3 4 5 6 7 8 9 10; do busybox wget -qO- http://docker:{port}/ && break; sleep 0.5; done
  after_script:
    - docker rm -f slipway-test-myapp-{id}
"#
    );
    let dockerfile = format!("FROM {base}\nCOPY greeting /srv/index.html\nCMD [\"cat\", \"/srv/index.html\"]\n");
    let r = Repo::new(&[(".gitlab-ci.yml", &yaml), ("Dockerfile", &dockerfile), ("greeting", "built in the job\n")]);
    let run = r.slipway(&["run", "--json"]);
    let _ = Command::new("docker").args(["rmi", "-f", &format!("slipway-test/myapp:{id}")]).output();
    assert_eq!(run.code, 0, "{}", run.debug());
    let log = run.log("build");
    assert!(log.iter().any(|l| l == "DOCKER_HOST=unix:///var/run/docker.sock certs=none"), "{log:#?}");
    assert_eq!(log.iter().filter(|l| *l == "built in the job").count(), 2, "{log:#?}");
    assert!(log.iter().any(|l| l.contains("GitLab's \"socket binding\"")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("`slipway image build`")), "{log:#?}");
}

/// `docker:latest` on the engine: a real one if it is there, else busybox and this machine's
/// docker CLI with the libraries it links.
fn docker_cli_image() {
    if Command::new("docker").args(["image", "inspect", "docker:latest"]).output().unwrap().status.success() {
        return;
    }
    let cli = String::from_utf8(Command::new("sh").args(["-c", "command -v docker"]).output().unwrap().stdout).unwrap();
    let cli = std::fs::canonicalize(cli.trim()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let put = |from: &std::path::Path, to: &str| {
        let dest = root.path().join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, &dest).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    };
    put(&cli, "/usr/local/bin/docker");
    put(std::path::Path::new("/bin/busybox"), "/bin/busybox");
    for applet in ["sh", "echo", "cat", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    let ldd = Command::new("ldd").arg(&cli).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        put(&std::fs::canonicalize(lib).unwrap(), lib);
    }
    let tar = Command::new("tar").args(["-C", root.path().to_str().unwrap(), "-c", "."]).output().unwrap();
    let mut import = Command::new("docker")
        .args(["import", "-c", "ENV PATH=/usr/local/bin:/bin", "-", "docker:latest"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(import.wait().unwrap().success(), "docker import docker:latest");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Pulls from a registry that needs a password take it as GitLab's runner does, from the
/// job's `DOCKER_AUTH_CONFIG`, or from where `slipway image push` finds it
/// (`SLIPWAY_REGISTRY_USER`/`_PASSWORD`, docker's `config.json`); without it the job fails
/// saying the pull was refused.
#[test]
fn pulls_take_docker_auth_config_or_the_push_credentials() {
    let image = busybox();
    let reg = Registry::start(Some(("ci", "s3cret-pass")));
    let tagged = format!("{}/team/busybox:{}", reg.addr, std::process::id());
    let config = tempfile::tempdir().unwrap();
    let docker = |args: &[&str], input: Option<&str>| {
        let mut c = Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", config.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(input.unwrap_or("").as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    docker(&["tag", image, &tagged], None);
    docker(&["login", &reg.addr, "-u", "ci", "--password-stdin"], Some("s3cret-pass"));
    docker(&["push", &tagged], None);
    docker(&["rmi", &tagged], None);
    let empty = tempfile::tempdir().unwrap();
    let no_config = [("DOCKER_CONFIG", empty.path().to_str().unwrap())];
    let job = format!("pull-{}", std::process::id());
    let yaml = format!("{job}:\n  image: {{name: \"{tagged}\", pull_policy: always}}\n  script: [echo pulled]\n");
    let r = Repo::new(&[(".gitlab-ci.yml", &yaml)]);

    let denied = r.slipway_env(&["run", "--json"], &no_config);
    assert_eq!(denied.code, 1, "{}", denied.debug());
    assert!(denied.stdout.contains("pulling it failed"), "{}", denied.debug());

    let auth = r#"{"auths": {"ADDR": {"auth": "Y2k6czNjcmV0LXBhc3M="}}}"#.replace("ADDR", &reg.addr);
    let with_var = r.slipway_env(&["run", "--json", "--secret", &format!("DOCKER_AUTH_CONFIG={auth}")], &no_config);
    assert_eq!(with_var.code, 0, "{}", with_var.debug());
    assert!(with_var.log(&job).iter().any(|l| l == "pulled"), "{}", with_var.debug());
    docker(&["rmi", &tagged], None);

    let mut env = no_config.to_vec();
    env.extend([("SLIPWAY_REGISTRY_USER", "ci"), ("SLIPWAY_REGISTRY_PASSWORD", "s3cret-pass")]);
    let with_env = r.slipway_env(&["run", "--json"], &env);
    assert_eq!(with_env.code, 0, "{}", with_env.debug());
    assert!(!with_env.stdout.contains("s3cret-pass"), "the password reached the output");
    docker(&["rmi", &tagged], None);
    assert!(containers(&job).is_empty());
}
