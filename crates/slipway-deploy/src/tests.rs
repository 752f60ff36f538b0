//! The engine's own tests: real store (SQLite in a temp dir), real strategies, an in-memory
//! agent ([`crate::target::memory`]) whose instances behave as their version says. The real
//! targets are tested end to end by the binary's tests.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slipway_model::Actor;
use slipway_model::environment::*;
use slipway_model::event::{DeployEvent, Stamped};
use slipway_model::manifest::host_platform;
use slipway_model::release::{Artifact, ReleaseReason, ReleaseStatus};
use slipway_store::Store;

use crate::artifacts::ArtifactSet;
use crate::observe::Health;
use crate::target::memory::{MemoryFleet, MemoryTargets};
use crate::{Engine, EngineConfig, ErrorKind};

pub fn env() -> Environment {
    Environment {
        name: "dev".into(),
        target: Target::Local,
        service: Service::default(),
        instances: 3,
        listen: "127.0.0.1:8080".into(),
        strategy: Strategy::Rolling { max_surge: Scale::Count(1), max_unavailable: Scale::Count(0) },
        health: HealthCheck { deadline: Duration::from_millis(500), ..HealthCheck::default() },
        promote_from: None,
        protection: Protection::default(),
        agent: None,
        stop_grace: Duration::from_millis(10),
        drain_timeout: Duration::from_millis(10),
        proxy: Default::default(),
        watch: Default::default(),
        require_signature: None,
    }
}

struct World {
    engine: Engine,
    fleet: Arc<MemoryFleet>,
    events: Arc<Mutex<Vec<Stamped<DeployEvent>>>>,
    dir: tempfile::TempDir,
    alice: Actor,
}

fn config(data_dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        data_dir: data_dir.to_path_buf(),
        owner: "pid 1 on test".into(),
        lease: Duration::from_secs(15),
        lock_wait: Duration::from_millis(400),
        approval_wait: Duration::from_secs(5),
    }
}

async fn world_with(config_for: impl FnOnce(EngineConfig) -> EngineConfig) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("store");
    let fleet = MemoryFleet::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = events.clone();
        Arc::new(move |e| events.lock().expect("events").push(e))
    };
    let targets = Arc::new(MemoryTargets { fleet: fleet.clone(), data_dir: dir.path().to_path_buf() });
    let engine = Engine::with_targets(store, config_for(config(dir.path())), targets, sink);
    World { engine, fleet, events, dir, alice: Actor::user("alice") }
}

async fn world() -> World {
    world_with(|c| c).await
}

fn build(version: &str) -> ArtifactSet {
    use sha2::Digest;
    let sha = format!("{:x}", sha2::Sha256::digest(version.as_bytes()));
    ArtifactSet {
        version: version.into(),
        commit: Some("c0ffee".into()),
        artifacts: vec![Artifact { name: "app".into(), platform: host_platform(), sha256: sha, size: 1 }],
    }
}

impl World {
    async fn deploy(&self, env: &Environment, version: &str) -> Result<crate::Outcome, crate::DeployError> {
        self.engine.deploy(&self.alice, env, &build(version), Some("main".into()), false).await
    }

    async fn history(&self, env: &str) -> Vec<(String, ReleaseReason, ReleaseStatus)> {
        let h = self.engine.store().history(env, 100).await.expect("history");
        h.into_iter().map(|r| (r.version, r.reason, r.status)).collect()
    }

    fn progress(&self) -> Vec<String> {
        self.events
            .lock()
            .expect("events")
            .iter()
            .filter_map(|e| match &e.event {
                DeployEvent::Progress { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
}

fn h(v: &str, reason: ReleaseReason, status: ReleaseStatus) -> (String, ReleaseReason, ReleaseStatus) {
    (v.into(), reason, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_ends_on_the_new_release_with_every_step_journaled() {
    let w = world().await;
    let e = env();
    let first = w.deploy(&e, "v1").await.expect("v1");
    assert_eq!((first.release.status, first.unchanged), (ReleaseStatus::Healthy, false));
    assert_eq!(w.fleet.running("dev"), [("v1".to_string(), 3, 100)]);
    let second = w.deploy(&e, "v2").await.expect("v2");
    assert_eq!(w.fleet.running("dev"), [("v2".to_string(), 3, 3)]);
    assert_eq!(
        w.history("dev").await,
        [
            h("v2", ReleaseReason::Deploy, ReleaseStatus::Healthy),
            h("v1", ReleaseReason::Deploy, ReleaseStatus::Replaced)
        ]
    );
    let steps = w.engine.store().steps(second.release.id).await.expect("steps");
    // Surge 1, unavailable 0: three batches, each recorded before it was applied.
    assert_eq!(steps.iter().filter(|s| s.name == "batch").count(), 4, "{steps:?}");
    let events = w.events.lock().expect("events");
    assert!(events.iter().any(|e| matches!(&e.event, DeployEvent::DeployStarted { version, .. } if version == "v2")));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(&e.event, DeployEvent::Step { release, .. } if *release == second.release.id))
            .count(),
        steps.len(),
        "every journal step is an event too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_artifacts_and_settings_again_are_a_no_op_unless_forced() {
    let w = world().await;
    let e = env();
    w.deploy(&e, "v1").await.expect("v1");
    let applies = w.fleet.applies();
    let again = w.deploy(&e, "v1").await.expect("again");
    assert!(again.unchanged);
    assert_eq!((w.fleet.applies(), w.history("dev").await.len()), (applies, 1));
    // Other settings are a new release of the same artifacts.
    let more = Environment { instances: 4, ..env() };
    let changed = w.deploy(&more, "v1").await.expect("four");
    assert!(!changed.unchanged);
    assert_eq!(w.fleet.running("dev").iter().map(|g| g.1).sum::<u32>(), 4);
    let forced = w.engine.deploy(&w.alice, &more, &build("v1"), None, true).await.expect("forced");
    assert!(!forced.unchanged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_release_is_rolled_back_and_recorded_as_such() {
    let w = world().await;
    let e = env();
    w.deploy(&e, "v1").await.expect("v1");
    let err = w.deploy(&e, "v2-unhealthy").await.expect_err("v2 fails");
    assert_eq!(err.kind, ErrorKind::Failed);
    assert!(err.message.contains("not healthy within 500ms") && err.message.contains("503"), "{}", err.message);
    assert!(err.message.contains("rolled back to v1"), "{}", err.message);
    assert_eq!(w.fleet.running("dev"), [("v1".to_string(), 3, 100)]);
    assert_eq!(
        w.history("dev").await,
        [
            h("v1", ReleaseReason::AutoRollback, ReleaseStatus::Healthy),
            h("v2-unhealthy", ReleaseReason::Deploy, ReleaseStatus::Failed),
            h("v1", ReleaseReason::Deploy, ReleaseStatus::Replaced),
        ]
    );
    let state = w.engine.observe("dev", Some(&e)).await.expect("observe");
    assert_eq!((state.status, state.healthy, state.total), (Health::RolledBack, 3, 3));
    assert!(w.progress().iter().any(|l| l.starts_with("✗ v2-unhealthy was not healthy")), "{:?}", w.progress());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_release_fails_long_before_its_deadline() {
    let w = world().await;
    let e =
        Environment { health: HealthCheck { deadline: Duration::from_secs(60), ..HealthCheck::default() }, ..env() };
    w.deploy(&e, "v1").await.expect("v1");
    let t = Instant::now();
    let err = w.deploy(&e, "v2-crash").await.expect_err("crash");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(err.message.contains("keeps crashing"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_release_that_fails_leaves_nothing_running() {
    let w = world().await;
    let err = w.deploy(&env(), "v1-unhealthy").await.expect_err("fails");
    assert!(err.message.contains("nothing ran here before"), "{}", err.message);
    assert!(w.fleet.running("dev").is_empty());
    let state = w.engine.observe("dev", Some(&env())).await.expect("observe");
    assert_eq!(state.status, Health::NotDeployed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_traffic_fails_is_aborted_by_its_analysis() {
    let w = world().await;
    let analysis = Analysis { interval: Duration::from_millis(200), min_requests: 1, ..Analysis::default() };
    let e = Environment {
        strategy: Strategy::Canary {
            steps: vec![CanaryStep::Weight(34), CanaryStep::Pause(Duration::from_secs(3)), CanaryStep::Weight(100)],
            analysis,
        },
        ..env()
    };
    w.deploy(&e, "v1").await.expect("v1");
    let t = Instant::now();
    let err = w.deploy(&e, "v2-errors").await.expect_err("aborted");
    assert!(err.message.contains("canary analysis failed"), "{}", err.message);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "aborted at the first verdict, not after the pause: {:?}",
        t.elapsed()
    );
    assert_eq!(w.fleet.running("dev"), [("v1".to_string(), 3, 100)]);
    // A good canary goes 34% → 100%.
    w.deploy(&e, "v3").await.expect("v3");
    assert_eq!(w.fleet.running("dev"), [("v3".to_string(), 3, 100)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_keeps_the_old_set_and_a_rollback_switches_back_at_once() {
    let w = world().await;
    let e =
        Environment { strategy: Strategy::BlueGreen { preview: None, keep_old: Duration::from_secs(600) }, ..env() };
    w.deploy(&e, "v1").await.expect("v1");
    w.deploy(&e, "v2").await.expect("v2");
    assert_eq!(w.fleet.running("dev"), [("v1".to_string(), 3, 0), ("v2".to_string(), 3, 100)]);
    let t = Instant::now();
    let back = w.engine.rollback(&w.alice, &e, None).await.expect("rollback");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(back.release.version, "v1");
    assert_eq!(w.fleet.running("dev"), [("v1".to_string(), 3, 100)], "the same instances take the traffic again");
    assert!(w.progress().iter().any(|l| l.contains("switching all traffic back at once")));
    let hist = w.history("dev").await;
    assert_eq!(hist[0], h("v1", ReleaseReason::Rollback, ReleaseStatus::Healthy));
    assert_eq!(hist[1], h("v2", ReleaseReason::Deploy, ReleaseStatus::RolledBack));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_the_rollout() {
    let w = world_with(|c| EngineConfig { lease: Duration::from_millis(300), ..c }).await;
    let e = env();
    w.deploy(&e, "v1").await.expect("v1");
    let store = w.engine.store().clone();
    let owner = w.engine.config().owner.clone();
    // Another process takes the environment over while v2 waits for its slow instances.
    let thief = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        store.unlock("dev", &owner).await.expect("unlock");
        store.lock("dev", "thief", None, Duration::from_secs(60)).await.expect("lock")
    });
    let t = Instant::now();
    let err = w.deploy(&e, "v2-slow").await.expect_err("stopped");
    assert_eq!(err.kind, ErrorKind::Interrupted, "{}", err.message);
    assert!(err.message.contains("lost its lock"), "{}", err.message);
    assert!(t.elapsed() < Duration::from_millis(1500), "stopped at the next renewal: {:?}", t.elapsed());
    assert_eq!(thief.await.expect("thief"), slipway_store::Lock::Acquired);
    assert_eq!(w.history("dev").await[0], h("v2-slow", ReleaseReason::Deploy, ReleaseStatus::Failed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_makes_a_deploy_wait_then_give_up() {
    let w = world().await;
    let e = env();
    w.engine.store().lock("dev", "someone else", None, Duration::from_secs(60)).await.expect("lock");
    let err = w.deploy(&e, "v1").await.expect_err("busy");
    assert_eq!(err.kind, ErrorKind::Busy);
    assert!(err.message.contains("still locked by someone else"), "{}", err.message);
    assert!(w.fleet.running("dev").is_empty());
    assert_eq!(w.history("dev").await, [h("v1", ReleaseReason::Deploy, ReleaseStatus::Failed)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_environment_waits_for_an_allowed_approver() {
    let w = Arc::new(world().await);
    let e = Environment {
        protection: Protection { approvals: 1, approvers: vec!["bob".into()], branches: vec!["main".into()] },
        ..env()
    };
    let refused =
        w.engine.deploy(&w.alice, &e, &build("v0"), Some("feature/x".into()), false).await.expect_err("branch");
    assert_eq!(refused.kind, ErrorKind::Refused);
    let deploying = {
        let (w, e) = (w.clone(), e.clone());
        tokio::spawn(async move { w.deploy(&e, "v1").await })
    };
    while w.history("dev").await.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let nope = w.engine.approve(&w.alice, &e, None).await.expect_err("alice may not approve");
    assert_eq!(nope.kind, ErrorKind::Refused);
    assert!(w.fleet.running("dev").is_empty(), "nothing runs before the approval");
    w.engine.approve(&Actor::user("bob"), &e, None).await.expect("bob approves");
    let done = deploying.await.expect("task").expect("deployed");
    assert_eq!(done.release.version, "v1");
    assert!(w.progress().iter().any(|l| l.contains("waiting for 1 approval(s)")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observing_changes_nothing_even_when_the_store_knows_less_than_the_agent() {
    let w = world().await;
    let e = env();
    w.deploy(&e, "v1").await.expect("v1");
    let applies = w.fleet.applies();
    // The same agent, and a store that was lost (a new, empty one).
    let lost = tempfile::tempdir().expect("tempdir");
    let empty = Store::open(lost.path()).await.expect("store");
    let targets = Arc::new(MemoryTargets { fleet: w.fleet.clone(), data_dir: w.dir.path().to_path_buf() });
    let other = Engine::with_targets(empty, config(lost.path()), targets, Arc::new(|_| {}));
    let state = other.observe("dev", Some(&e)).await.expect("observe");
    assert_eq!(state.status, Health::Unmanaged, "{state:?}");
    assert!(state.detail.as_deref().unwrap_or("").contains("the agent runs v1"), "{state:?}");
    assert_eq!(other.repair(&e).await.expect("repair"), Vec::<String>::new(), "no recorded intent: nothing to repair");
    assert_eq!(w.fleet.applies(), applies, "nothing was applied");
    assert_eq!(w.fleet.running("dev"), [("v1".to_string(), 3, 100)], "v1 still runs");
    // Drift without an interrupted deploy is reported, and left alone too.
    w.fleet.inject("dev", 999, "stray", 1);
    let state = w.engine.observe("dev", Some(&e)).await.expect("observe");
    assert_eq!(state.status, Health::Unmanaged, "a group the store does not know: {state:?}");
    assert!(w.engine.repair(&e).await.expect("repair").is_empty());
    assert_eq!(w.fleet.applies(), applies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_deploy_is_reported_and_repaired_on_its_record() {
    let w = world_with(|c| EngineConfig { lease: Duration::from_millis(300), ..c }).await;
    let e = env();
    w.deploy(&e, "v1").await.expect("v1");
    // A deploy of v2 that dies mid-way: its release says deploying, v2 runs beside v1, and
    // nobody renews its lock.
    {
        let deploying = w.deploy(&e, "v2-slow");
        let _ = tokio::time::timeout(Duration::from_millis(400), deploying).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(w.fleet.running("dev").iter().any(|g| g.0 == "v2-slow"), "{:?}", w.fleet.running("dev"));
    let applies = w.fleet.applies();
    let state = w.engine.observe("dev", Some(&e)).await.expect("observe");
    assert_eq!(state.status, Health::Interrupted, "{state:?}");
    assert!(state.detail.as_deref().unwrap_or("").contains("slipway repair dev"), "{state:?}");
    assert_eq!(w.fleet.applies(), applies, "observing did not repair");
    let lines = w.engine.repair(&e).await.expect("repair");
    assert!(lines.iter().any(|l| l.contains("interrupted")), "{lines:?}");
    assert_eq!(w.fleet.running("dev"), [("v1".to_string(), 3, 100)]);
    assert_eq!(w.history("dev").await[0], h("v2-slow", ReleaseReason::Deploy, ReleaseStatus::Failed));
    assert_eq!(w.engine.observe("dev", Some(&e)).await.expect("observe").status, Health::RolledBack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_take_the_running_artifacts_and_bad_requests_record_nothing() {
    let w = world().await;
    let dev = env();
    let staging = Environment {
        name: "staging".into(),
        promote_from: Some("dev".into()),
        listen: "127.0.0.1:8081".into(),
        ..env()
    };
    let nothing = w.engine.promote(&w.alice, &dev, &staging).await.expect_err("dev never deployed");
    assert_eq!(nothing.kind, ErrorKind::Input);
    let no_rollback = w.engine.rollback(&w.alice, &dev, None).await.expect_err("nothing to roll back");
    assert!(no_rollback.message.contains("never been deployed"));
    w.deploy(&dev, "v1").await.expect("v1");
    let promoted = w.engine.promote(&w.alice, &dev, &staging).await.expect("promote");
    let source = w.engine.store().current("dev").await.expect("current").expect("dev runs");
    assert_eq!(promoted.release.artifacts, source.artifacts);
    assert_eq!((promoted.release.reason, promoted.release.source_release), (ReleaseReason::Promote, Some(source.id)));
    let wrong = w.engine.promote(&w.alice, &staging, &staging).await.expect_err("wrong source");
    assert!(wrong.message.contains("is promoted from `dev`"));
    // An agent that does not answer: refused before anything is recorded.
    w.fleet.set_down(true);
    let before = w.history("dev").await.len();
    let down = w.deploy(&dev, "v2").await.expect_err("no agent");
    assert_eq!(down.kind, ErrorKind::NoAgent);
    assert_eq!(w.history("dev").await.len(), before);
    assert_eq!(w.engine.observe("dev", Some(&dev)).await.expect("observe").status, Health::Unknown);
}

/// Regression: a canary that never got enough traffic to judge ("inconclusive" in every
/// window) was promoted to 100% and recorded healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_nobody_could_judge_is_rolled_back_unless_told_otherwise() {
    let w = world().await;
    let canary = |on_inconclusive| Environment {
        strategy: Strategy::Canary {
            steps: vec![CanaryStep::Weight(34), CanaryStep::Pause(Duration::from_millis(700)), CanaryStep::Weight(100)],
            analysis: Analysis {
                interval: Duration::from_millis(200),
                min_requests: 1_000_000,
                on_inconclusive,
                ..Analysis::default()
            },
        },
        ..env()
    };
    let e = canary(OnInconclusive::Fail);
    w.deploy(&e, "v1").await.expect("v1");
    let err = w.deploy(&e, "v2").await.expect_err("not judged, not promoted");
    assert!(
        err.message.contains("could not judge v2") && err.message.contains("on_inconclusive: fail"),
        "{}",
        err.message
    );
    assert_eq!(w.fleet.running("dev"), [("v1".to_string(), 3, 100)]);
    assert_eq!(w.history("dev").await[1], h("v2", ReleaseReason::Deploy, ReleaseStatus::Failed));
    let lenient = canary(OnInconclusive::Pass);
    w.deploy(&lenient, "v3").await.expect("on_inconclusive: pass goes on");
    assert_eq!(w.fleet.running("dev"), [("v3".to_string(), 3, 100)]);
}
