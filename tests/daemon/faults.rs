//! Crashes, signals, database outages and bad configuration.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use sqlx::PgPool;
use studio_worker::queue::{JobStatus, NewJob, Queue};

use crate::harness::{
    ConfigFile, Daemon, Proxy, WORKER_LOGIN, create_user, database_url, run_command, status_counts,
    upstream, wait_for, wait_for_status, worker_pool,
};

const PATIENCE: Duration = Duration::from_secs(30);

fn sleeper(seconds: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "[kinds.sleep]\nexecutor = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep {seconds}; echo '{{}}'\"]\n"
    ))
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_of_a_killed_worker_are_finished_by_another_replica(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let url = database_url(&pool, WORKER_LOGIN, None);
    let config = sleeper("1");
    let jobs: Vec<_> = (0..4)
        .map(|i| NewJob::new(user, "sleep", json!({ "i": i })))
        .collect();
    let ids = queue.enqueue_many(&jobs).await.unwrap();
    let crashed = Daemon::start(&url, &config, &[]).await;
    wait_for("all four jobs running", PATIENCE, || async {
        (status_counts(&pool).await.get("running") == Some(&4)).then_some(())
    })
    .await;

    crashed.signal(Signal::SIGKILL);
    let (status, _) = crashed.exit(PATIENCE).await;
    assert_eq!(status.code(), None, "killed by a signal");
    let survivor = Daemon::start(&url, &config, &[]).await;

    for id in &ids {
        let done = wait_for_status(&queue, *id, JobStatus::Succeeded, PATIENCE).await;
        assert_eq!(done.attempt, 2, "the crashed attempt counts");
        let history: Vec<_> = queue.events(*id).await.unwrap();
        let successes = history
            .iter()
            .filter(|e| e.to_status == JobStatus::Succeeded)
            .count();
        assert_eq!(successes, 1, "ended exactly once");
        assert!(
            history.iter().any(|e| e
                .message
                .as_deref()
                .is_some_and(|m| m.contains("lease expired"))),
            "rescued after the lease expired: {history:?}"
        );
    }
    survivor.signal(Signal::SIGTERM);
    assert!(survivor.exit(PATIENCE).await.0.success());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn sigterm_finishes_short_jobs_requeues_long_ones_and_exits_zero(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let config = ConfigFile::new(
        "[kinds.long]\nexecutor = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 60\"]\n\n\
         [kinds.short]\nexecutor = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 0.5; echo '{\\\"ok\\\": true}'\"]\n",
    );
    let daemon = Daemon::start(&database_url(&pool, WORKER_LOGIN, None), &config, &[]).await;
    let long = queue
        .enqueue(&NewJob::new(user, "long", json!({})))
        .await
        .unwrap();
    let short = queue
        .enqueue(&NewJob::new(user, "short", json!({})))
        .await
        .unwrap();
    wait_for_status(&queue, long, JobStatus::Running, PATIENCE).await;
    wait_for_status(&queue, short, JobStatus::Running, PATIENCE).await;

    daemon.signal(Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;

    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(queue.job(short).await.unwrap().status, JobStatus::Succeeded);
    let requeued = queue.job(long).await.unwrap();
    assert_eq!(requeued.status, JobStatus::Pending);
    assert_eq!(requeued.attempt, 0, "the interrupted attempt is given back");
    assert!(log.contains("shutdown requested"), "{log}");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_worker_rides_out_a_database_outage_and_finishes_the_work(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let proxy = Proxy::start(upstream(&pool).await).await;
    let config = sleeper("1"); // long enough to still be running when the database goes away
    let mut daemon = Daemon::start(
        &database_url(&pool, WORKER_LOGIN, Some(proxy.addr)),
        &config,
        &[],
    )
    .await;
    let jobs: Vec<_> = (0..12)
        .map(|i| NewJob::new(user, "sleep", json!({ "i": i })))
        .collect();
    let ids = queue.enqueue_many(&jobs).await.unwrap();
    wait_for("some jobs running", PATIENCE, || async {
        status_counts(&pool)
            .await
            .get("running")
            .copied()
            .filter(|n| *n > 0)
    })
    .await;

    proxy.cut();
    daemon.wait_for_log("database unavailable", PATIENCE).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // the outage itself: longer than the lease (3s)
    proxy.restore();

    for id in &ids {
        let done = wait_for_status(&queue, *id, JobStatus::Succeeded, PATIENCE).await;
        let successes = queue
            .events(done.id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.to_status == JobStatus::Succeeded)
            .count();
        assert_eq!(successes, 1);
    }
    let after = queue
        .enqueue(&NewJob::new(user, "sleep", json!({})))
        .await
        .unwrap();
    wait_for_status(&queue, after, JobStatus::Succeeded, PATIENCE).await;
    daemon.signal(Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;
    assert!(status.success(), "{log}");
    // One line of ours when the outage starts and one when it ends (a connection the pool
    // still held may fail once more after the first success: a second short outage at most);
    // none of the driver's.
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let (down, up) = (
        count("database unavailable"),
        count("database answers again"),
    );
    assert!(
        (1..=2).contains(&down) && down == up,
        "{down} down, {up} up:\n{log}"
    );
    for noise in [
        "on-release",
        "slow threshold",
        "administrator command",
        "sqlx",
    ] {
        assert_eq!(count(noise), 0, "driver noise {noise:?}:\n{log}");
    }
    queue.pool().close().await;
    crate::harness::worker_sessions_closed(&pool).await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn kinds_are_registered_again_as_soon_as_the_database_answers(pool: PgPool) {
    let proxy = Proxy::start(upstream(&pool).await).await;
    let mut daemon = Daemon::start(
        &database_url(&pool, WORKER_LOGIN, Some(proxy.addr)),
        &sleeper("1"),
        &[
            ("STUDIO_WORKER__RESCUE_INTERVAL", "10s"),
            ("STUDIO_LOG__LEVEL", "info,studio_worker::worker=debug"),
        ],
    )
    .await;
    proxy.cut();
    // A refresh of the registration fails during the outage (the next is 7.5-12.5 s away).
    daemon
        .wait_for_log("registering the kinds this replica serves", PATIENCE)
        .await;
    let restored: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select now()")
        .fetch_one(&pool)
        .await
        .unwrap();
    proxy.restore();
    let seen = wait_for("the registration refreshed", PATIENCE, || async {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "select max(last_seen) from public.studio_kind_replicas where kind = 'sleep'",
        )
        .fetch_one(&pool)
        .await
        .ok()
        .filter(|at| *at > restored)
    })
    .await;
    assert!(
        seen - restored < chrono::TimeDelta::seconds(5),
        "registered {} after the database came back, not at once",
        seen - restored
    );
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.exit(PATIENCE).await.0.success());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn bad_configuration_exits_non_zero_naming_the_problem(pool: PgPool) {
    let url = database_url(&pool, WORKER_LOGIN, None);
    let render =
        ConfigFile::new("[kinds.render]\nexecutor = \"command\"\ncommand = [\"/bin/true\"]\n");
    for (env, needle) in [
        (
            vec![("STUDIO_WORKER__CONCURRENCY", "0")],
            "worker.concurrency = 0",
        ),
        (vec![("STUDIO_WORKER__LEASE", "often")], "worker.lease"),
        (
            vec![("STUDIO_WORKER__SHUTDOWN_GRACE", "")],
            "worker.shutdown_grace",
        ),
        (
            vec![("STUDIO_KINDS__UPSCALE__EXECUTOR", "magic")],
            "kinds.upscale.executor = magic",
        ),
        (
            vec![("STUDIO_KINDS__UPSCALE__EXECUTOR", "http")],
            "kinds.upscale.url",
        ),
        (vec![("STUDIO_LOG__FORMAT", "yaml")], "log.format = yaml"),
        (
            vec![("STUDIO_DATABASE__SSL_MODE", "maybe")],
            "database.ssl_mode = maybe",
        ),
        (
            vec![("STUDIO_DATABASE__SSL_ROOT_CERT", "/nonexistent/ca.pem")],
            "database.ssl_root_cert = /nonexistent/ca.pem",
        ),
    ] {
        let (code, log) = run_command(&["run"], &url, Some(&render), &env).await;
        assert_eq!(code, 2, "{env:?}: {log}");
        assert!(
            log.contains(needle),
            "{env:?}: expected {needle:?} in:\n{log}"
        );
    }

    let (code, log) = run_command(&["run"], &url, None, &[]).await;
    assert_eq!(code, 2, "no kinds is a configuration error: {log}");
    assert!(log.contains("no job kinds configured"), "{log}");

    let unreachable = "postgres://worker:hunter2-secret@127.0.0.1:1/nowhere";
    let (code, log) = run_command(
        &["run"],
        unreachable,
        Some(&render),
        &[("STUDIO_DATABASE__STARTUP_TIMEOUT", "1s")],
    )
    .await;
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("worker@127.0.0.1:1/nowhere"),
        "names the target: {log}"
    );
    assert!(!log.contains("hunter2"), "the password leaked: {log}");

    // verify-full against a server whose certificate this CA did not sign (or a server without
    // TLS): refused at start, never silently downgraded.
    let ca = std::env::temp_dir().join(format!("studio-unrelated-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, UNRELATED_CA).unwrap();
    let (code, log) = run_command(
        &["run"],
        &url,
        Some(&render),
        &[
            ("STUDIO_DATABASE__PASSWORD", "hunter5-secret"),
            ("STUDIO_DATABASE__SSL_MODE", "verify-full"),
            ("STUDIO_DATABASE__SSL_ROOT_CERT", ca.to_str().unwrap()),
            ("STUDIO_DATABASE__STARTUP_TIMEOUT", "1s"),
        ],
    )
    .await;
    std::fs::remove_file(&ca).unwrap();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("connecting to"), "{log}");
    assert!(!log.contains("hunter5"), "the password leaked: {log}");
}

/// A self-signed CA certificate that signed nothing the test server uses.
const UNRELATED_CA: &str = include_str!("unrelated-ca.pem");
