//! Ctrl-C: the first SIGINT stops running jobs (SIGTERM, grace, SIGKILL) and ends the run as
//! canceled; a second one kills at once. Either way no job process is left behind.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn start(r: &Repo) -> std::process::Child {
    Command::new(bin())
        .args(["run", "--json"])
        .current_dir(r.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(marker: &str) {
    let t = Instant::now();
    while !process_with(marker) {
        assert!(t.elapsed() < Duration::from_secs(20), "job never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigint(pid: u32) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
}

#[test]
fn ctrl_c_cancels_gracefully_and_runs_after_script() {
    let marker = format!("slipway-ctrlc-{}", std::process::id());
    let yaml = format!(
        "stages: [a, b]\nlong:\n  stage: a\n  script:\n    - trap 'echo got TERM; exit 143' TERM\n    - bash -c 'exec -a {marker} sleep 300' &\n    - wait\n  after_script:\n    - echo after $CI_JOB_STATUS\nlater:\n  stage: b\n  script: echo never\n"
    );
    let r = Repo::new(&[(".slipway.yml", &yaml)]);
    let child = start(&r);
    wait_for(&marker);
    sigint(child.id());
    let out = child.wait_with_output().unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 130, "{}", run.debug());
    assert_eq!(run.finished()["status"], "canceled");
    assert_eq!(run.statuses(), st(&[("long", "canceled"), ("later", "canceled")]));
    assert!(
        run.log("long").contains(&"after canceled".to_string()),
        "after_script runs on cancel: {:?}",
        run.log("long")
    );
    assert!(!process_with(&marker), "job process left behind");
}

#[test]
fn second_ctrl_c_kills_at_once() {
    let marker = format!("slipway-stubborn-{}", std::process::id());
    let yaml = format!("stubborn:\n  script:\n    - trap '' TERM\n    - bash -c 'exec -a {marker} sleep 300'\n");
    let r = Repo::new(&[(".slipway.yml", &yaml)]);
    let child = start(&r);
    wait_for(&marker);
    let t = Instant::now();
    sigint(child.id());
    std::thread::sleep(Duration::from_millis(300));
    assert!(process_with(&marker), "SIGTERM is ignored by this job, so it is still there");
    sigint(child.id());
    let run = Run::from(child.wait_with_output().unwrap());
    assert!(t.elapsed() < Duration::from_secs(4), "second Ctrl-C must not wait for the grace period");
    assert_eq!(run.code, 130, "{}", run.debug());
    assert!(!process_with(&marker), "job process left behind");
}

/// Regression: `kill -9` of `slipway run` left its jobs running, reparented to PID 1.
#[test]
fn no_job_process_survives_a_killed_slipway() {
    let marker = format!("slipway-orphan-{}", std::process::id());
    let yaml = format!(
        "orphans:\n  script:\n    - bash -c 'exec -a {marker}-bg sleep 300' &\n    - (bash -c 'exec -a {marker}-sub sleep 300') &\n    - bash -c 'exec -a {marker}-fg sleep 300'\n"
    );
    let r = Repo::new(&[(".slipway.yml", &yaml)]);
    let mut child = start(&r);
    for m in ["bg", "sub", "fg"] {
        wait_for(&format!("{marker}-{m}"));
    }
    child.kill().unwrap(); // SIGKILL: no handler runs in slipway
    child.wait().unwrap();
    let t = Instant::now();
    while process_with(&marker) {
        assert!(t.elapsed() < Duration::from_secs(3), "a job process outlived slipway");
        std::thread::sleep(Duration::from_millis(50));
    }
}
