//! Known and unserved kinds through the binary: `enqueue` of an unknown kind, `kinds declare`
//! and `forget`, a replica's registration, `kinds` and `/metrics` showing an unserved kind.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::queue::{NewJob, Queue};

use crate::harness::{
    ConfigFile, Daemon, WORKER_LOGIN, create_user, database_url, run_command, wait_for, worker_pool,
};

const PATIENCE: Duration = Duration::from_secs(30);

async fn jobs_of(pool: &PgPool, kind: &str) -> i64 {
    sqlx::query_scalar("select count(*) from public.studio_jobs where kind = $1")
        .bind(kind)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn enqueue_of_an_unknown_kind_fails_naming_it_until_it_is_declared(pool: PgPool) {
    let user = create_user(&pool).await.to_string();
    let url = database_url(&pool, WORKER_LOGIN, None);
    let enqueue = ["enqueue", "--user", &user, "--kind", "rendr"];

    let (code, out) = run_command(&enqueue, &url, None, &[]).await;

    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown job kind \"rendr\""), "{out}");
    assert!(
        out.contains("known kinds: ") && out.contains("render"),
        "{out}"
    );
    assert!(out.contains("studio-worker kinds declare rendr"), "{out}");
    assert_eq!(jobs_of(&pool, "rendr").await, 0);

    for bad in ["Rendr", "no such kind"] {
        let (code, out) = run_command(&["kinds", "declare", bad], &url, None, &[]).await;
        assert_eq!(code, 2, "{bad:?}: {out}");
        assert!(out.contains("invalid kind name"), "{out}");
    }
    let (code, out) = run_command(&["kinds", "declare", "rendr"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kind rendr declared"), "{out}");
    let (code, out) = run_command(&enqueue, &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(jobs_of(&pool, "rendr").await, 1);

    let (code, out) = run_command(&["kinds", "forget", "rendr", "--json"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    let forgot: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&forgot["known"], &forgot["changed"]),
        (&json!(false), &json!(true))
    );
    let (code, out) = run_command(&enqueue, &url, None, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(jobs_of(&pool, "rendr").await, 1);
}

/// When the replica serving `render` last refreshed its registration.
async fn last_seen(pool: &PgPool) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("select last_seen from public.studio_kind_replicas where kind = 'render'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `kinds --json`, by kind: (known, replicas, unserved).
async fn listed(url: &str) -> Vec<(String, bool, i64, bool)> {
    let (code, out) = run_command(&["kinds", "--json"], url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    let kinds: Value = serde_json::from_str(&out).unwrap();
    kinds
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| ["render", "transcode"].contains(&k["kind"].as_str().unwrap()))
        .map(|k| {
            (
                k["kind"].as_str().unwrap().to_owned(),
                k["known"].as_bool().unwrap(),
                k["replicas"].as_i64().unwrap(),
                k["unserved"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_kind_with_waiting_jobs_and_no_live_replica_shows_as_unserved_at_once(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let url = database_url(&pool, WORKER_LOGIN, None);
    let (code, out) = run_command(&["kinds", "declare", "transcode"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    queue
        .enqueue(&NewJob::new(user, "transcode", json!({})))
        .await
        .unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let config =
        ConfigFile::new("[kinds.render]\nexecutor = \"command\"\ncommand = [\"/bin/cat\"]\n");

    let mut daemon = Daemon::start(&url, &config, &[("STUDIO_HTTP__LISTEN", &listen)]).await;

    // Registered before it said it started.
    assert_eq!(
        listed(&url).await,
        vec![
            ("render".to_owned(), true, 1, false),
            ("transcode".to_owned(), true, 0, true)
        ]
    );
    let (code, human) = run_command(&["kinds"], &url, None, &[]).await;
    assert_eq!(code, 0, "{human}");
    let transcode = human.lines().find(|l| l.contains("transcode")).unwrap();
    assert!(transcode.contains("UNSERVED"), "{human}");
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "studio_kind_unserved{kind=\"transcode\"} 1",
        "studio_kind_replicas{kind=\"transcode\"} 0",
        "studio_kind_unserved{kind=\"render\"} 0",
        "studio_kind_replicas{kind=\"render\"} 1",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    daemon.wait_for_log("kind unserved", PATIENCE).await;
    // Two more refreshes, each followed by a look at unserved kinds: still one warning.
    for _ in 0..2 {
        let seen = last_seen(&pool).await;
        wait_for("a refresh of the registration", PATIENCE, || async {
            (last_seen(&pool).await > seen).then_some(())
        })
        .await;
    }
    let (code, out) = run_command(&["kinds", "forget", "render"], &url, None, &[]).await;
    assert_eq!(code, 1, "a served kind cannot be forgotten: {out}");
    assert!(out.contains("served by 1 live replica"), "{out}");

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;
    assert!(status.success(), "{log}");
    let warned = log.lines().filter(|l| l.contains("kind unserved")).count();
    assert_eq!(
        warned, 1,
        "one warning per change, not one per tick:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("kind unserved") && l.contains("transcode")),
        "{log}"
    );
    assert_eq!(
        listed(&url).await,
        vec![
            ("render".to_owned(), true, 0, false),
            ("transcode".to_owned(), true, 0, true)
        ],
        "graceful shutdown removes the registration; the kind stays known"
    );
}

async fn scrape(listen: &str) -> String {
    reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn metrics_keep_the_kinds_gauges_when_the_registry_cannot_be_read(pool: PgPool) {
    let url = database_url(&pool, WORKER_LOGIN, None);
    let listen = format!("127.0.0.1:{}", crate::api::free_port());
    let config =
        ConfigFile::new("[kinds.render]\nexecutor = \"command\"\ncommand = [\"/bin/cat\"]\n");
    let daemon = Daemon::start(&url, &config, &[("STUDIO_HTTP__LISTEN", &listen)]).await;
    let before = scrape(&listen).await;
    assert!(
        before.contains("studio_kind_replicas{kind=\"render\"} 1"),
        "{before}"
    );

    // The worker's role can no longer read the replicas (a fault arranged by the owner; the
    // scrape still runs as the worker): the gauges keep their values instead of reading 0.
    sqlx::query("revoke select on public.studio_kind_replicas from studio_worker")
        .execute(&pool)
        .await
        .unwrap();
    let after = scrape(&listen).await;
    assert!(
        after.contains("studio_kind_replicas{kind=\"render\"} 1"),
        "a failed read is not \"no replica\":\n{after}"
    );
    assert!(
        after.contains("studio_kind_unserved{kind=\"render\"} 0"),
        "{after}"
    );
    sqlx::query("grant select on public.studio_kind_replicas to studio_worker")
        .execute(&pool)
        .await
        .unwrap();

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;
    assert!(status.success(), "{log}");
}
