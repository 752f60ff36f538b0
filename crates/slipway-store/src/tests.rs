//! The store's test suite, run on both backends: every case is one async function taking a
//! database, and [`on_both!`] makes a `sqlite_…` and a `postgres_…` test of it (PostgreSQL is
//! a real server of the test's own, from slipway-testkit).

use std::time::Duration;

use slipway_model::release::{Artifact, NewRelease, ReleaseConfig, ReleaseReason, ReleaseStatus};
use slipway_model::run::{JobState, PipelineStatus};
use slipway_model::time::now_ms;

use crate::{JobToken, Lock, NewRun, Store, TokenKind};

/// A database the case may open more than once (each open is another "process").
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn open(&self) -> Store {
        Store::connect(&self.url).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

macro_rules! on_both {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = Db { url: dir.path().display().to_string(), _dir: Some(dir) };
            $case(db).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let url = tokio::task::spawn_blocking(slipway_testkit::postgres::database).await.expect("createdb");
            $case(Db { url, _dir: None }).await;
        }
    )*};
}

on_both! {
    releases_history_and_current => sqlite_releases_history_and_current, postgres_releases_history_and_current;
    locks_expire_and_are_recovered => sqlite_locks_expire_and_are_recovered, postgres_locks_expire_and_are_recovered;
    two_processes_never_both_hold_a_lock => sqlite_two_processes_never_both_hold_a_lock, postgres_two_processes_never_both_hold_a_lock;
    journal_and_approvals => sqlite_journal_and_approvals, postgres_journal_and_approvals;
    runs_keep_their_transitions => sqlite_runs_keep_their_transitions, postgres_runs_keep_their_transitions;
    two_runners_never_claim_one_job => sqlite_two_runners_never_claim_one_job, postgres_two_runners_never_claim_one_job;
    expired_job_leases_go_back_to_the_queue => sqlite_expired_job_leases_go_back_to_the_queue, postgres_expired_job_leases_go_back_to_the_queue;
    projects_and_tokens => sqlite_projects_and_tokens, postgres_projects_and_tokens;
    the_audit_log_is_one_chain_under_concurrent_writers => sqlite_the_audit_log_is_one_chain_under_concurrent_writers, postgres_the_audit_log_is_one_chain_under_concurrent_writers;
    agents_take_only_jobs_whose_tags_they_have => sqlite_agents_take_only_jobs_whose_tags_they_have, postgres_agents_take_only_jobs_whose_tags_they_have;
    an_adopted_release_keeps_its_id_and_later_ones_follow => sqlite_an_adopted_release_keeps_its_id_and_later_ones_follow, postgres_an_adopted_release_keeps_its_id_and_later_ones_follow;
    notifications_are_queued_with_their_state_and_retried => sqlite_notifications_are_queued_with_their_state_and_retried, postgres_notifications_are_queued_with_their_state_and_retried;
    test_reports_and_coverage_are_kept_per_attempt => sqlite_test_reports_and_coverage_are_kept_per_attempt, postgres_test_reports_and_coverage_are_kept_per_attempt;
    applications_their_status_pins_and_syncs => sqlite_applications_their_status_pins_and_syncs, postgres_applications_their_status_pins_and_syncs;
}

async fn applications_their_status_pins_and_syncs(db: Db) {
    let store = db.open().await;
    let app = |name: &str, env: &str| crate::AppRow {
        name: name.into(),
        project: "shop".into(),
        repo: "/srv/config.git".into(),
        path: "envs".into(),
        revision: "main".into(),
        environment: env.into(),
        automated: true,
        self_heal: false,
        prune: false,
        allow_empty: false,
        windows: "[]".into(),
        created_by: "admin".into(),
        created_at_ms: 0,
        status: String::new(),
        pinned: None,
        pinned_commit: None,
        failed_commit: None,
        checked_at_ms: None,
    };
    assert_eq!(store.put_app(&app("shop-prod", "prod")).await.expect("put"), Ok(()));
    // One application per environment.
    assert_eq!(store.put_app(&app("other", "prod")).await.expect("put"), Err("shop-prod".to_string()));
    // Redefined, it keeps what the reconciler found.
    store.set_app_status("shop-prod", r#"{"sync":"Synced"}"#, Some("abc")).await.expect("status");
    let mut again = app("shop-prod", "prod");
    again.self_heal = true;
    assert_eq!(store.put_app(&again).await.expect("put"), Ok(()));
    let got = store.app("shop-prod").await.expect("app").expect("exists");
    assert!(got.self_heal && got.status.contains("Synced") && got.failed_commit.as_deref() == Some("abc"), "{got:?}");
    assert!(got.checked_at_ms.is_some());
    store.pin_app("shop-prod", Some((7, "abc"))).await.expect("pin");
    let got = store.app_of("prod").await.expect("app").expect("exists");
    assert_eq!((got.pinned, got.pinned_commit.as_deref()), (Some(7), Some("abc")));
    store.pin_app("shop-prod", None).await.expect("unpin");
    assert_eq!(store.app("shop-prod").await.expect("app").expect("exists").pinned, None);
    let sync = |outcome: &str| crate::AppSync {
        id: 0,
        app: "shop-prod".into(),
        commit: "abc".into(),
        version: "v2".into(),
        release: Some(3),
        trigger: "auto".into(),
        outcome: outcome.into(),
        detail: None,
        actor: "gitops:shop-prod".into(),
        started_at_ms: 1,
        finished_at_ms: 2,
    };
    store.add_app_sync(&sync("failed")).await.expect("sync");
    store.add_app_sync(&sync("synced")).await.expect("sync");
    let syncs = store.app_syncs("shop-prod", 10).await.expect("syncs");
    assert_eq!(syncs.iter().map(|s| s.outcome.as_str()).collect::<Vec<_>>(), ["synced", "failed"]);
    assert_eq!(store.apps().await.expect("apps").len(), 1);
    assert!(store.delete_app("shop-prod").await.expect("delete"));
    assert!(store.app_syncs("shop-prod", 10).await.expect("syncs").is_empty());
    assert!(!store.delete_app("shop-prod").await.expect("delete"));
}

async fn test_reports_and_coverage_are_kept_per_attempt(db: Db) {
    let store = db.open().await;
    let case = |name: &str, status: &str, ms: i64| crate::TestCase {
        suite: "shop".into(),
        classname: "shop/cart".into(),
        name: name.into(),
        status: status.into(),
        time_ms: ms,
        message: (status == "failed").then(|| "want 3, got 2".into()),
    };
    let a = store.create_run(&run(&["test"])).await.expect("run");
    store
        .put_test_cases(a, 0, 1, "app", "test", &[case("TestAdd", "failed", 12), case("TestSum", "passed", 3)])
        .await
        .expect("cases");
    // The same attempt again replaces; a second attempt adds.
    store
        .put_test_cases(a, 0, 1, "app", "test", &[case("TestAdd", "failed", 12), case("TestSum", "passed", 3)])
        .await
        .expect("again");
    store.put_test_cases(a, 0, 2, "app", "test", &[case("TestAdd", "passed", 10)]).await.expect("retry");
    let cases = store.test_cases(a).await.expect("cases");
    assert_eq!(cases.len(), 3, "{cases:?}");
    assert_eq!(cases[0].case.message.as_deref(), Some("want 3, got 2"));
    let b = store.create_run(&run(&["test"])).await.expect("run");
    store.put_test_cases(b, 0, 1, "app", "test", &[case("TestAdd", "passed", 9)]).await.expect("cases");
    let h = store.test_history("app", "shop/cart", "TestAdd", 10).await.expect("history");
    assert_eq!(
        h.iter().map(|r| (r.run, r.attempt, r.case.status.as_str())).collect::<Vec<_>>(),
        [(b, 1, "passed"), (a, 2, "passed"), (a, 1, "failed")]
    );
    store.put_coverage(a, 0, "app", "test", Some("main"), 71.25).await.expect("coverage");
    store.put_coverage(b, 0, "app", "test", Some("main"), 80.0).await.expect("coverage");
    store.put_coverage(b, 0, "app", "test", Some("main"), 81.5).await.expect("coverage again");
    let trend = store.coverage_trend("app", "test", Some("main"), 10).await.expect("trend");
    assert_eq!(trend.iter().map(|c| (c.run, c.percent)).collect::<Vec<_>>(), [(a, 71.25), (b, 81.5)]);
    assert_eq!(store.coverage(b).await.expect("coverage")[0].percent, 81.5);
    let pk = |v: &[(&str, f64)]| v.iter().map(|(p, c)| (p.to_string(), *c)).collect::<Vec<_>>();
    store
        .put_package_coverage(a, 0, "app", Some("main"), &pk(&[("shop/cart", 70.0), ("shop/api", 50.0)]))
        .await
        .expect("pkgs");
    store.put_package_coverage(b, 0, "app", Some("main"), &pk(&[("shop/cart", 75.5)])).await.expect("pkgs");
    store
        .put_package_coverage(b, 0, "app", Some("main"), &pk(&[("shop/cart", 76.5), ("shop/new", 10.0)]))
        .await
        .expect("again");
    let got = store.package_coverage(b).await.expect("packages");
    assert_eq!(
        got.iter().map(|p| (p.package.as_str(), p.percent, p.before)).collect::<Vec<_>>(),
        [("shop/cart", 76.5, Some(70.0)), ("shop/new", 10.0, None)]
    );
}

async fn notifications_are_queued_with_their_state_and_retried(db: Db) {
    let store = db.open().await;
    let d = |channel: &str| crate::NewDelivery {
        receiver: "team".into(),
        channel: channel.into(),
        group_key: "0:{}".into(),
        project: Some("shop".into()),
        payload: "{}".into(),
    };
    let ids = store
        .queue_deliveries(Some(("dispatcher", "{\"groups\":{}}")), &[d("webhook[0]"), d("email[0]")])
        .await
        .expect("queue");
    assert_eq!(ids.len(), 2);
    assert_eq!(store.notify_state("dispatcher").await.expect("state").as_deref(), Some("{\"groups\":{}}"));
    store.queue_deliveries(Some(("dispatcher", "{}")), &[]).await.expect("state only");
    assert_eq!(store.notify_state("dispatcher").await.expect("state").as_deref(), Some("{}"));
    let now = now_ms();
    assert_eq!(store.due_deliveries(now + 1, 10).await.expect("due").len(), 2);
    // One attempt takes a delivery; a second one reading it at the same time gets nothing.
    assert!(store.claim_delivery(ids[1], 0, 60_000).await.expect("claim"));
    assert!(!store.claim_delivery(ids[1], 0, 60_000).await.expect("claimed twice"));
    // A failure is tried again later, a success is delivered, a give-up is failed.
    store.delivery_attempted(ids[0], Some("HTTP 500"), Some(now + 60_000)).await.expect("retry");
    store.delivery_attempted(ids[1], None, None).await.expect("delivered");
    let due = store.due_deliveries(now + 1_000, 10).await.expect("due");
    assert!(due.is_empty(), "{due:?}");
    assert_eq!(store.next_delivery_at().await.expect("next"), Some(now + 60_000));
    // A list read before that attempt ended is stale: its attempt count no longer matches.
    assert!(!store.claim_delivery(ids[0], 0, 60_000).await.expect("stale claim"));
    let all = store.deliveries(10).await.expect("log");
    assert_eq!(
        all.iter().map(|x| (x.status.as_str(), x.attempts, x.last_error.as_deref())).collect::<Vec<_>>(),
        [("delivered", 1, None), ("queued", 1, Some("HTTP 500"))]
    );
    assert!(all[0].delivered_at_ms.is_some());
    store.delivery_attempted(ids[0], Some("HTTP 503"), None).await.expect("give up");
    assert_eq!(store.deliveries(10).await.expect("log")[1].status, "failed");
    assert_eq!(store.prune_deliveries(now_ms() + 1).await.expect("prune"), 2);
    // Silences, and their expiry.
    let s = crate::SilenceRow {
        id: "ab12".into(),
        matchers: "[\"alertname=\\\"X\\\"\"]".into(),
        starts_at_ms: now,
        ends_at_ms: now + 3_600_000,
        created_by: "alice".into(),
        comment: "maintenance".into(),
        created_at_ms: now,
    };
    store.add_silence(&s).await.expect("silence");
    assert_eq!(store.silences(now).await.expect("silences"), vec![s.clone()]);
    assert!(store.expire_silence("ab12", now + 1).await.expect("expire"));
    assert!(!store.expire_silence("ab12", now + 2).await.expect("expire again"), "ended already");
    assert!(store.silences(now + 2).await.expect("silences").is_empty());
    // Jobs per project, name and status, with run and queue seconds.
    let id = store.create_run(&run(&["build"])).await.expect("run");
    store
        .save_transition(id, PipelineStatus::Running, &serde_json::json!({}), &[(0, JobState::Pending)])
        .await
        .expect("t");
    store.claim_job("r", &[], Duration::from_secs(30), None).await.expect("claim").expect("the job");
    store.finish_job(id, 0, "r", JobState::Failed, Some(1), None).await.expect("finish");
    let stats = store.job_stats().await.expect("stats");
    assert_eq!(
        stats.iter().map(|j| (j.project.as_str(), j.job.as_str(), j.status.as_str(), j.count)).collect::<Vec<_>>(),
        [("team/app", "build", "failed", 1)]
    );
}

fn config() -> ReleaseConfig {
    serde_json::from_value(serde_json::json!({
        "schema": 2,
        "service": {"args": ["--port", "{{port}}"]},
        "instances": 3,
        "listen": "127.0.0.1:8080",
        "strategy": "rolling",
        "health": {"probe": {"type": "tcp"}, "interval_ms": 1000, "timeout_ms": 1000, "successes": 1, "failures": 3},
        "target": "local",
    }))
    .expect("config")
}

fn new(env: &str, version: &str) -> NewRelease {
    NewRelease {
        environment: env.into(),
        version: version.into(),
        artifacts: vec![
            Artifact { name: "app".into(), platform: "linux/amd64".into(), sha256: "ab".into(), size: 1 },
            Artifact { name: "app".into(), platform: "linux/arm64".into(), sha256: "cd".into(), size: 2 },
        ],
        config: config(),
        commit: Some("c0ffee".into()),
        branch: Some("main".into()),
        actor: "tester".into(),
        reason: ReleaseReason::Deploy,
        source_release: None,
        status: ReleaseStatus::Deploying,
        pipeline: Some(slipway_model::release::PipelineRef {
            project: "app".into(),
            pipeline: 7,
            job: "deploy".into(),
        }),
    }
}

async fn releases_history_and_current(db: Db) {
    let store = db.open().await;
    let a = store.create_release(&new("dev", "v1")).await.expect("create");
    assert!(a.started_at_ms.is_some(), "a deploying release has started");
    assert_eq!(a.pipeline.as_ref().map(|p| (p.pipeline, p.job.as_str())), Some((7, "deploy")), "its pipeline job");
    store.set_status(a.id, ReleaseStatus::Healthy, None).await.expect("status");
    store.set_current("dev", a.id, ReleaseStatus::Replaced).await.expect("current");
    let mut rollback = new("dev", "v0");
    rollback.reason = ReleaseReason::AutoRollback;
    rollback.source_release = Some(a.id);
    let b = store.create_release(&rollback).await.expect("create");
    store.set_status(b.id, ReleaseStatus::Healthy, Some("after #1")).await.expect("status");
    store.set_current("dev", b.id, ReleaseStatus::RolledBack).await.expect("current");
    let h = store.history("dev", 10).await.expect("history");
    assert_eq!(
        h.iter().map(|r| (r.version.as_str(), r.status, r.reason)).collect::<Vec<_>>(),
        [
            ("v0", ReleaseStatus::Healthy, ReleaseReason::AutoRollback),
            ("v1", ReleaseStatus::RolledBack, ReleaseReason::Deploy)
        ]
    );
    assert_eq!(h[0].group_id(), a.id, "an auto-rollback runs the instances of the release it returns to");
    assert_eq!(h[0].status_detail.as_deref(), Some("after #1"));
    assert_eq!(store.current("dev").await.expect("current").map(|r| r.id), Some(b.id));
    assert_eq!(h[1].artifact_for("linux/arm64").map(|x| x.sha256.as_str()), Ok("cd"));
    assert_eq!(h[1].config, config());
    assert!(h[1].finished_at_ms.is_some());
    assert_eq!(store.find_version("v1").await.expect("find").map(|r| r.id), Some(a.id));
    assert_eq!(store.good_releases("dev").await.expect("good").len(), 2);
    assert_eq!(store.environments().await.expect("envs").iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["dev"]);
    let unfinished = store.create_release(&NewRelease { status: ReleaseStatus::Queued, ..new("dev", "v2") }).await;
    assert_eq!(store.unfinished("dev").await.expect("unfinished").len(), 1);
    assert_eq!(unfinished.expect("queued").started_at_ms, None);
    // Reopening runs no migration twice and keeps everything.
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.history("dev", 10).await.expect("history").len(), 3);
}

async fn an_adopted_release_keeps_its_id_and_later_ones_follow(db: Db) {
    let store = db.open().await;
    let first = store.create_release(&new("dev", "v1")).await.expect("create");
    let mut adopted = new("dev", "v7");
    adopted.reason = ReleaseReason::Adopt;
    adopted.status = ReleaseStatus::Healthy;
    let r = store.adopt_release(&adopted, 7).await.expect("adopt").expect("id 7 is free");
    assert_eq!((r.id, r.reason, r.status), (7, ReleaseReason::Adopt, ReleaseStatus::Healthy));
    assert!(r.started_at_ms.is_some() && r.finished_at_ms.is_some());
    assert!(store.adopt_release(&adopted, 7).await.expect("adopt").is_none(), "taken");
    assert!(store.adopt_release(&adopted, first.id).await.expect("adopt").is_none(), "taken");
    let next = store.create_release(&new("dev", "v8")).await.expect("create");
    assert_eq!(next.id, 8, "ids continue after the adopted one");
}

async fn locks_expire_and_are_recovered(db: Db) {
    let store = db.open().await;
    let lease = Duration::from_millis(300);
    assert_eq!(store.lock("dev", "a", Some(1), lease).await.expect("lock"), Lock::Acquired);
    assert_eq!(store.lock("dev", "a", Some(1), lease).await.expect("again"), Lock::Acquired, "taking it twice renews");
    assert!(
        matches!(store.lock("dev", "b", Some(2), lease).await.expect("lock"), Lock::Held { owner, .. } if owner == "a")
    );
    assert_eq!(store.lock_holder("dev").await.expect("holder"), Some(("a".into(), Some(1))));
    assert!(store.renew("dev", "a", lease).await.expect("renew"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(store.lock_holder("dev").await.expect("holder"), None, "an expired lease holds nothing");
    assert_eq!(
        store.lock("dev", "b", Some(2), lease).await.expect("lock"),
        Lock::Recovered { previous_owner: "a".into(), release: Some(1) }
    );
    assert!(!store.renew("dev", "a", lease).await.expect("renew"), "a lost the lock");
    store.unlock("dev", "a").await.expect("unlocking someone else's lock does nothing");
    assert!(matches!(store.lock("dev", "a", None, lease).await.expect("lock"), Lock::Held { .. }));
    store.unlock("dev", "b").await.expect("unlock");
    assert_eq!(store.lock("dev", "a", None, lease).await.expect("lock"), Lock::Acquired);
}

async fn two_processes_never_both_hold_a_lock(db: Db) {
    // Two pools are two processes: in every round both race for a fresh environment's lock
    // (and for one whose lease just ran out), and exactly one wins.
    let (s1, s2) = (db.open().await, db.open().await);
    for round in 0..25 {
        let env = format!("env{round}");
        let lease = Duration::from_secs(30);
        let (a, b) = tokio::join!(s1.lock(&env, "one", None, lease), s2.lock(&env, "two", None, lease));
        let won = [a.expect("lock"), b.expect("lock")].iter().filter(|l| !matches!(l, Lock::Held { .. })).count();
        assert_eq!(won, 1, "round {round}: exactly one holder");
        let stale = format!("stale{round}");
        s1.lock(&stale, "dead", None, Duration::ZERO).await.expect("lock");
        tokio::time::sleep(Duration::from_millis(2)).await;
        let (a, b) = tokio::join!(s1.lock(&stale, "one", None, lease), s2.lock(&stale, "two", None, lease));
        let (a, b) = (a.expect("lock"), b.expect("lock"));
        let recovered = [&a, &b].iter().filter(|l| matches!(l, Lock::Recovered { .. })).count();
        assert_eq!(recovered, 1, "round {round}: one recovers the dead holder's lock ({a:?}, {b:?})");
    }
}

async fn journal_and_approvals(db: Db) {
    let store = db.open().await;
    let r = store.create_release(&new("prod", "v1")).await.expect("create");
    assert_eq!(store.record_step(r.id, "scale", &serde_json::json!({"old": 3, "new": 1})).await.expect("step"), 1);
    assert_eq!(store.record_step(r.id, "scale", &serde_json::json!({"old": 2, "new": 2})).await.expect("step"), 2);
    let steps = store.steps(r.id).await.expect("steps");
    assert_eq!(steps.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(steps[1].detail["new"], 2);
    store.approve("prod", r.id, "alice").await.expect("approve");
    store.approve("prod", r.id, "alice").await.expect("approve twice");
    store.approve("prod", r.id, "bob").await.expect("approve");
    let who: Vec<String> = store.approvals(r.id).await.expect("approvals").into_iter().map(|a| a.approver).collect();
    assert_eq!(who, ["alice", "bob"]);
}

fn run(jobs: &[&str]) -> NewRun {
    NewRun {
        project: "team/app".into(),
        ref_name: Some("main".into()),
        commit_sha: Some("c0ffee".into()),
        source: "push".into(),
        jobs: jobs.iter().map(|j| (j.to_string(), "test".to_string())).collect(),
        variables: vec![("DEPLOY".into(), "yes".into())],
        author: Some("t <t@x>".into()),
        triggered_by: Some("api: tester".into()),
    }
}

async fn the_audit_log_is_one_chain_under_concurrent_writers(db: Db) {
    use crate::{AUDIT_GENESIS, AuditFilter, NewAudit, audit_hash};
    let (a, b) = (db.open().await, db.open().await);
    let entry = |who: &str, i: usize| NewAudit {
        actor: who.into(),
        address: "127.0.0.1".into(),
        action: "POST /api/v1/projects".into(),
        target: format!("project p{i}"),
        outcome: "allowed".into(),
        status: 201,
        detail: "{}".into(),
    };
    let write = |s: Store, who: &'static str| {
        tokio::spawn(async move {
            for i in 0..20 {
                s.append_audit(&entry(who, i)).await.expect("append");
            }
        })
    };
    let (x, y) = (write(a.clone(), "alice"), write(b.clone(), "bob"));
    x.await.expect("alice");
    y.await.expect("bob");
    let all = a.audit(&AuditFilter { limit: 1000, ..Default::default() }).await.expect("audit");
    assert_eq!(all.len(), 40);
    let mut prev = AUDIT_GENESIS.to_string();
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1, "no gaps");
        assert_eq!(r.prev_hash, prev, "entry {} follows {}", r.seq, i);
        assert_eq!(r.hash, audit_hash(&prev, r.seq, r.at_ms, &r.entry), "entry {} hashes", r.seq);
        prev = r.hash.clone();
    }
    let bob =
        a.audit(&AuditFilter { actor: Some("bob".into()), limit: 1000, ..Default::default() }).await.expect("audit");
    assert_eq!(bob.len(), 20);
    let tail = a.audit(&AuditFilter { after_seq: Some(35), limit: 1000, ..Default::default() }).await.expect("audit");
    assert_eq!(tail.first().map(|r| r.seq), Some(36));
}

async fn projects_and_tokens(db: Db) {
    use crate::{NewToken, Project};
    let store = db.open().await;
    let p = Project {
        name: "app".into(),
        repo: "/srv/app.git".into(),
        branch: "main".into(),
        poll_ms: Some(60_000),
        created_at_ms: 0,
        webhook_secret: Some("s3cret".into()),
    };
    assert!(store.add_project(&p).await.expect("add"));
    assert!(!store.add_project(&p).await.expect("add"), "a name is taken once");
    let got = store.project("app").await.expect("get").expect("there");
    assert_eq!((got.repo.as_str(), got.poll_ms), ("/srv/app.git", Some(60_000)));
    assert_eq!(store.projects().await.expect("list").len(), 1);
    store.set_last_seen("app", r#"{"refs/heads/main":"abc"}"#).await.expect("seen");
    assert_eq!(store.last_seen("app").await.expect("seen").as_deref(), Some(r#"{"refs/heads/main":"abc"}"#));
    assert!(!store.has_users().await.expect("users"));
    assert!(store.add_user("alice", Some("$argon2id$x"), "admin").await.expect("user"));
    assert!(!store.add_user("alice", None, "admin").await.expect("user"), "a name is taken once");
    assert!(store.has_users().await.expect("users"));
    let token = |hash: &str, kind, expires| NewToken {
        hash: hash.into(),
        name: "laptop".into(),
        kind,
        user: Some("alice".into()),
        scopes: Some(vec!["read:*".into()]),
        agent: None,
        expires_at_ms: expires,
    };
    store.add_token(&token(&"a1".repeat(32), TokenKind::User, None)).await.expect("token");
    store.add_token(&token(&"b2".repeat(32), TokenKind::User, Some(1))).await.expect("token");
    let t = store.token(&"a1".repeat(32)).await.expect("token").expect("there");
    assert_eq!(
        (t.kind, t.scopes.as_deref(), t.id.as_str()),
        (TokenKind::User, Some(&["read:*".to_string()][..]), "a1a1a1a1a1a1")
    );
    assert!(t.last_used_at_ms.is_none() && !t.expired());
    assert!(store.token(&"b2".repeat(32)).await.expect("token").expect("kept").expired());
    assert!(store.token("nope").await.expect("token").is_none());
    store.touch_token(&"a1".repeat(32)).await.expect("touch");
    assert!(store.token(&"a1".repeat(32)).await.expect("token").expect("there").last_used_at_ms.is_some());
    assert_eq!(store.tokens(Some("alice")).await.expect("list").len(), 2);
    assert!(store.revoke_token("a1a1", None).await.expect("revoke").is_none(), "too short an id");
    assert!(store.revoke_token("a1a1a1a1", Some("bob")).await.expect("revoke").is_none(), "not bob's");
    assert!(store.revoke_token("a1a1a1a1", Some("alice")).await.expect("revoke").is_some());
    assert!(store.token(&"a1".repeat(32)).await.expect("token").expect("kept").revoked_at_ms.is_some());
    let b =
        crate::BindingRow { user: "alice".into(), role: "viewer".into(), project: None, created_by: "admin".into() };
    assert!(store.add_binding(&b).await.expect("bind"));
    assert!(!store.add_binding(&b).await.expect("bind"), "once");
    let shop = crate::BindingRow { project: Some("shop".into()), ..b.clone() };
    assert!(store.add_binding(&shop).await.expect("bind"));
    assert_eq!(store.bindings(Some("alice")).await.expect("bindings").len(), 2);
    assert!(store.remove_binding("alice", "viewer", Some("shop")).await.expect("unbind"));
    assert_eq!(store.bindings(None).await.expect("bindings"), vec![b]);
    assert!(store.delete_user("alice").await.expect("delete"));
    assert!(store.bindings(None).await.expect("bindings").is_empty());
    assert!(
        store.token(&"b2".repeat(32)).await.expect("token").expect("kept").revoked_at_ms.is_some(),
        "revoked with its user"
    );
    // A run recorded before its plan gets its jobs after, and its trigger variables back.
    let id = store.create_run(&NewRun { jobs: Vec::new(), ..run(&[]) }).await.expect("run");
    store.add_jobs(id, &[("build".into(), "build".into(), Vec::new())], None).await.expect("jobs");
    assert_eq!(store.jobs(id).await.expect("jobs").len(), 1);
    // The reconciler looks at a run with no transition yet, then not, then again once a job
    // ended after the last transition (a transition lost to an outage).
    assert!(store.runs_to_reconcile().await.expect("reconcile").1.contains(&id));
    store
        .save_transition(id, PipelineStatus::Running, &serde_json::json!({}), &[(0, JobState::Pending)])
        .await
        .expect("t");
    assert!(!store.runs_to_reconcile().await.expect("reconcile").1.contains(&id));
    store.claim_job("r", &[], Duration::from_secs(30), None).await.expect("claim").expect("the job");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.finish_job(id, 0, "r", JobState::Success, Some(0), None).await.expect("finish"));
    assert!(store.runs_to_reconcile().await.expect("reconcile").1.contains(&id));
    // A trigger job's child pipeline is kept with it, and dropped when the job is queued again.
    store.put_job_child(id, 0, r#"{"run_id": 2}"#).await.expect("child");
    assert_eq!(store.jobs(id).await.expect("jobs")[0].child.as_deref(), Some(r#"{"run_id": 2}"#));
    store
        .save_transition(id, PipelineStatus::Running, &serde_json::json!({}), &[(0, JobState::Pending)])
        .await
        .expect("retry");
    assert_eq!(store.jobs(id).await.expect("jobs")[0].child, None, "a retried job's child is gone");
    assert_eq!(
        store.run(id).await.expect("run").expect("there").variables,
        [("DEPLOY".to_string(), "yes".to_string())]
    );
    assert_eq!(store.find_run("team/app", "main", "c0ffee", "push").await.expect("find"), Some(id));
    assert_eq!(store.find_run("team/app", "main", "c0ffee", "api").await.expect("find"), None);
    // A job's artifacts: found while they live, replaced by a retry, gone once expired; the
    // digests no job refers to any more are returned for their blobs to go.
    store.put_job_artifacts(id, 0, "sha256:aa", 10, None).await.expect("put");
    store.put_job_artifacts(id, 0, "sha256:bb", 12, Some(5)).await.expect("put again");
    assert!(store.job_artifacts(id, 0).await.expect("get").is_none(), "expired at 5 ms");
    store.put_job_artifacts(id, 1, "sha256:bb", 12, None).await.expect("put");
    assert_eq!(store.job_artifacts(id, 1).await.expect("get"), Some(("sha256:bb".into(), 12)));
    assert!(store.expire_job_artifacts(now_ms()).await.expect("expire").is_empty(), "job 1 still uses bb");
    store.put_job_artifacts(id, 1, "sha256:cc", 1, Some(6)).await.expect("put");
    store.put_job_artifacts(id, 0, "sha256:bb", 12, Some(6)).await.expect("put");
    // Schedules: due ones are taken by one caller only, and turned off they are not due.
    let sched = crate::Schedule {
        id: 0,
        project: "app".into(),
        description: "nightly".into(),
        cron: "0 3 * * *".into(),
        timezone: "Europe/Berlin".into(),
        ref_name: "main".into(),
        variables: vec![("NIGHTLY".into(), "1".into())],
        active: true,
        next_run_at_ms: 100,
        last_run_at_ms: None,
        last_run_id: None,
        created_at_ms: 0,
    };
    let sid = store.add_schedule(&sched).await.expect("schedule");
    assert_eq!(store.due_schedules(99).await.expect("due").len(), 0);
    let due = store.due_schedules(100).await.expect("due");
    assert_eq!((due.len(), &due[0].variables), (1, &sched.variables));
    assert!(store.take_schedule(sid, 100, 200).await.expect("take"));
    assert!(!store.take_schedule(sid, 100, 200).await.expect("take"), "taken once");
    store.set_schedule_run(sid, id).await.expect("run");
    assert_eq!(store.schedule(sid).await.expect("get").expect("there").last_run_id, Some(id));
    assert!(store.set_schedule_active(sid, false, 200).await.expect("off"));
    assert!(store.due_schedules(1_000).await.expect("due").is_empty(), "an inactive schedule is never due");
    assert_eq!(store.schedules("app").await.expect("list").len(), 1);
    assert!(store.delete_schedule(sid).await.expect("delete"));
    assert!(!store.delete_schedule(sid).await.expect("delete"));
    // Caches: per project and key, replaced in place; a blob in use is known as such.
    store.put_cache("app", "deps", "sha256:c1", 3).await.expect("cache");
    store.put_cache("app", "deps", "sha256:c2", 4).await.expect("cache again");
    assert_eq!(store.cache("app", "deps").await.expect("get").as_deref(), Some("sha256:c2"));
    assert_eq!(store.cache("other", "deps").await.expect("get"), None);
    assert!(store.blob_in_use("sha256:c2").await.expect("use") && !store.blob_in_use("sha256:c1").await.expect("use"));
    // Retention: a run that ended is found by its age and forgotten with its jobs.
    let old = store.create_run(&NewRun { jobs: Vec::new(), ..run(&[]) }).await.expect("run");
    store.add_jobs(old, &[("j".into(), "s".into(), Vec::new())], None).await.expect("jobs");
    store.put_job_artifacts(old, 0, "sha256:dd", 1, None).await.expect("put");
    store.end_run(old, PipelineStatus::Failed, "test").await.expect("end");
    assert!(store.runs_ended_before(0, 10).await.expect("old").is_empty());
    assert!(store.runs_ended_before(now_ms() + 1, 10).await.expect("old").contains(&old));
    assert!(!store.runs_ended_before(now_ms() + 1, 10).await.expect("old").contains(&id), "a running one stays");
    assert_eq!(store.delete_run(old).await.expect("delete"), ["sha256:dd"]);
    assert!(store.run(old).await.expect("run").is_none() && store.jobs(old).await.expect("jobs").is_empty());
    let mut unused = store.expire_job_artifacts(now_ms()).await.expect("expire");
    unused.sort();
    assert_eq!(unused, ["sha256:bb", "sha256:cc"]);
    assert!(store.record_delivery("d1", "app").await.expect("delivery"));
    assert!(!store.record_delivery("d1", "app").await.expect("delivery"), "a replay");
    store.set_delivery_run("d1", id).await.expect("run");
    assert_eq!(store.delivery_run("d1").await.expect("run"), Some(id));
    assert_eq!(got.webhook_secret.as_deref(), Some("s3cret"));
    store.end_run(id, PipelineStatus::Failed, "no pipeline file").await.expect("end");
    let r = store.run(id).await.expect("run").expect("there");
    assert_eq!((r.status, r.detail.as_deref()), (PipelineStatus::Failed, Some("no pipeline file")));
}

async fn runs_keep_their_transitions(db: Db) {
    let store = db.open().await;
    let id = store.create_run(&run(&["build", "test"])).await.expect("run");
    let snap = serde_json::json!({"jobs": ["pending", "created"]});
    store.save_transition(id, PipelineStatus::Running, &snap, &[(0, JobState::Pending)]).await.expect("transition");
    let r = store.run(id).await.expect("run").expect("exists");
    assert_eq!((r.status, r.snapshot.as_ref()), (PipelineStatus::Running, Some(&snap)));
    assert_eq!(store.running_runs().await.expect("running").len(), 1);
    let jobs = store.jobs(id).await.expect("jobs");
    assert_eq!(
        jobs.iter().map(|j| (j.name.as_str(), j.status)).collect::<Vec<_>>(),
        [("build", JobState::Pending), ("test", JobState::Created)]
    );
    let token = "ab".repeat(32);
    let claimed = store
        .claim_job("agent-1", &[], Duration::from_secs(30), Some(JobToken { hash: &token, expires_at_ms: i64::MAX }))
        .await
        .expect("claim")
        .expect("a job");
    // The job's token is made with the claim, in the same commit.
    let t = store.token(&token).await.expect("token").expect("made with the claim");
    assert_eq!(
        (t.kind, t.run, t.name.as_str(), t.ended),
        (TokenKind::Job, Some(claimed.run), &*format!("job {}/{}", claimed.run, claimed.index), false)
    );
    assert_eq!((claimed.index, claimed.attempt), (0, 1));
    assert!(store.renew_job(id, 0, "agent-1", Duration::from_secs(30)).await.expect("renew"));
    assert!(!store.finish_job(id, 0, "agent-2", JobState::Success, Some(0), None).await.expect("not theirs"));
    assert!(store.finish_job(id, 0, "agent-1", JobState::Failed, Some(2), Some("exit 2")).await.expect("finish"));
    // Its token ends with it.
    assert!(store.token(&token).await.expect("token").expect("still known").ended, "valid only while the job runs");
    store
        .save_transition(id, PipelineStatus::Failed, &serde_json::json!({}), &[(1, JobState::Skipped)])
        .await
        .expect("transition");
    let jobs = store.jobs(id).await.expect("jobs");
    assert_eq!(
        (jobs[0].status, jobs[0].exit_code, jobs[0].reason.as_deref()),
        (JobState::Failed, Some(2), Some("exit 2"))
    );
    assert_eq!(jobs[1].status, JobState::Skipped);
    let r = store.run(id).await.expect("run").expect("exists");
    assert!(r.finished_at_ms.is_some());
    assert!(store.running_runs().await.expect("running").is_empty());
    assert_eq!(store.runs("team/app", 10).await.expect("runs").len(), 1);
}

async fn two_runners_never_claim_one_job(db: Db) {
    let store = db.open().await;
    let names: Vec<String> = (0..30).map(|i| format!("job{i}")).collect();
    let id = store.create_run(&run(&names.iter().map(String::as_str).collect::<Vec<_>>())).await.expect("run");
    let all: Vec<(usize, JobState)> = (0..names.len()).map(|i| (i, JobState::Pending)).collect();
    store.save_transition(id, PipelineStatus::Running, &serde_json::json!({}), &all).await.expect("pending");
    let (s1, s2) = (db.open().await, db.open().await);
    let claim_all = |s: Store, who: &'static str| async move {
        let mut got = Vec::new();
        while let Some(j) = s.claim_job(who, &[], Duration::from_secs(30), None).await.expect("claim") {
            got.push(j.index);
        }
        got
    };
    let (a, b) = tokio::join!(claim_all(s1, "one"), claim_all(s2, "two"));
    let mut both: Vec<usize> = a.iter().chain(&b).copied().collect();
    both.sort_unstable();
    assert_eq!(both, (0..names.len()).collect::<Vec<_>>(), "every job once: {a:?} / {b:?}");
}

async fn agents_take_only_jobs_whose_tags_they_have(db: Db) {
    let store = db.open().await;
    let id = store.create_run(&NewRun { jobs: Vec::new(), ..run(&[]) }).await.expect("run");
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    store
        .add_jobs(
            id,
            &[
                ("gpu".into(), "s".into(), tags(&["linux", "gpu"])),
                ("linux".into(), "s".into(), tags(&["linux"])),
                ("any".into(), "s".into(), Vec::new()),
                ("odd".into(), "s".into(), tags(&["x y", "%"])),
            ],
            None,
        )
        .await
        .expect("jobs");
    let all: Vec<(usize, JobState)> = (0..4).map(|i| (i, JobState::Pending)).collect();
    store.save_transition(id, PipelineStatus::Running, &serde_json::json!({}), &all).await.expect("pending");
    let claim = |who: &'static str, t: Vec<String>| {
        let store = store.clone();
        async move { store.claim_job(who, &t, Duration::from_secs(30), None).await.expect("claim").map(|j| j.name) }
    };
    // No tags: untagged jobs only. Tags: jobs needing a subset of them.
    assert_eq!(claim("plain", Vec::new()).await.as_deref(), Some("any"));
    assert_eq!(claim("plain", Vec::new()).await, None);
    assert_eq!(claim("mac", tags(&["macos", "gpu"])).await, None);
    assert_eq!(claim("big", tags(&["gpu", "linux", "x86"])).await.as_deref(), Some("gpu"));
    assert_eq!(claim("big", tags(&["gpu", "linux", "x86"])).await.as_deref(), Some("linux"));
    // Tags are values, never SQL or patterns: `%` and ` ` match only themselves.
    assert_eq!(claim("pct", tags(&["%", "x"])).await, None);
    assert_eq!(claim("odd", tags(&["%", "x y"])).await.as_deref(), Some("odd"));
}

async fn expired_job_leases_go_back_to_the_queue(db: Db) {
    let store = db.open().await;
    let id = store.create_run(&run(&["only"])).await.expect("run");
    store
        .save_transition(id, PipelineStatus::Running, &serde_json::json!({}), &[(0, JobState::Pending)])
        .await
        .expect("t");
    store.claim_job("gone", &[], Duration::from_millis(100), None).await.expect("claim").expect("job");
    assert_eq!(store.claim_job("other", &[], Duration::from_secs(30), None).await.expect("claim"), None);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.requeue_expired_jobs().await.expect("requeue"), [(id, 0)]);
    let again = store.claim_job("other", &[], Duration::from_secs(30), None).await.expect("claim").expect("job");
    assert_eq!(again.attempt, 2);
    assert!(
        !store.finish_job(id, 0, "gone", JobState::Success, Some(0), None).await.expect("late"),
        "the old runner lost it"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_rows_written_before_the_typed_model_still_load() {
    // A store made by the first schema (migration 1 only), holding a release the way the
    // engine wrote them then, opened by today's store.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("slipway.db");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.expect("pool");
        let v1 = dir.path().join("v1");
        std::fs::create_dir_all(&v1).expect("mkdir");
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite/0001_releases.sql"),
            v1.join("0001_releases.sql"),
        )
        .expect("copy");
        let first = sqlx::migrate::Migrator::new(v1.as_path()).await.expect("migrator");
        first.run(&pool).await.expect("migration 1");
        sqlx::query(
            "INSERT INTO releases (environment, version, artifacts, config_hash, config, commit_sha, branch, actor,
                                   reason, source_release, status, status_detail, created_at, started_at, finished_at)
             VALUES ('dev', 'v1', ?, 'old-hash', ?, NULL, 'main', 'alice', 'auto-rollback', 7, 'healthy', 'after #8',
                     1700000000000, 1700000000100, 1700000001000)",
        )
        .bind(r#"[{"name":"app","platform":"linux/amd64","sha256":"ab12","size":42}]"#)
        .bind(
            r#"{"service":{"binary":null,"args":["--addr","127.0.0.1:{{port}}"],"env":[],"workdir":null},"instances":3,"listen":"127.0.0.1:8181","strategy":"rolling","health":{"probe":{"type":"http","path":"/healthz"},"interval_ms":1000,"timeout_ms":1000,"successes":1,"failures":3},"target":"local"}"#,
        )
        .execute(&pool)
        .await
        .expect("old row");
        pool.close().await;
    }
    let store = Store::open(dir.path()).await.expect("migrates to today's schema");
    let r = store.release(1).await.expect("read").expect("the old release");
    assert_eq!((r.reason, r.status, r.group_id()), (ReleaseReason::AutoRollback, ReleaseStatus::Healthy, 7));
    assert_eq!(r.config.schema, 1);
    assert_eq!(r.config.instances, 3);
    assert_eq!(r.config.service.args, ["--addr", "127.0.0.1:{{port}}"]);
    assert_eq!(r.artifacts[0].size, 42);
    // The same settings written today compare equal.
    let mut today = r.config.clone();
    today.schema = slipway_model::release::CONFIG_SCHEMA;
    assert_eq!(r.config_hash, today.hash());
    // And the new tables are there.
    assert!(store.create_run(&run(&["a"])).await.is_ok());
}
