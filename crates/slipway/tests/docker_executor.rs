//! The Docker executor against the real Docker Engine: a job with `image:` runs in a container
//! of it (an image imported from this machine's busybox-static: nothing is pulled), with the
//! workspace at GitLab's `/builds/<project path>`, `sh` when the image has no bash, artifacts
//! and `after_script` as on the shell executor; a timeout, a Ctrl-C and a `kill -9` of slipway
//! leave no container behind; `--executor shell` runs the job on this machine instead.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        let child = Command::new(bin())
            .args(["run", "--json"])
            .current_dir(r.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
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
