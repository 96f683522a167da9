//! `studio-worker quotas` through the real binary: set, list, clear; bad values exit 2 before
//! connecting and change nothing.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::api::{SECRET, api_login, free_port, token};
use crate::harness::{Daemon, WORKER_LOGIN, create_user, database_url, run_command, worker_pool};

async fn rows(pool: &PgPool) -> Vec<(String, Option<i32>, Option<i32>)> {
    sqlx::query_as(
        "select kind, max_unfinished, max_created from public.studio_quotas order by kind",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn quotas_set_list_and_clear_through_the_binary(pool: PgPool) {
    worker_pool(&pool).await; // creates the login role once per cluster
    create_user(&pool).await; // makes the test kinds (render) known
    let url = database_url(&pool, WORKER_LOGIN, None);
    let (code, out) = run_command(
        &["quotas", "set", "--default", "--max-unfinished", "5"],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_command(
        &[
            "quotas",
            "set",
            "render",
            "--max-created",
            "100",
            "--per",
            "1h",
        ],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("at most 100 created per user every 1h"),
        "{out}"
    );
    assert!(!out.contains("warning"), "render is known: {out}");
    assert_eq!(
        rows(&pool).await,
        vec![
            ("*".into(), Some(5), None),
            ("render".into(), None, Some(100))
        ]
    );

    let (code, out) = run_command(&["quotas", "--json"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["kind"], "*");
    assert_eq!(listed[1]["per_seconds"], 3600.0);

    // A kind the database does not know is kept (its workers may come later), with a warning.
    let (code, out) = run_command(
        &["quotas", "set", "rendr", "--max-unfinished", "2"],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(r#"warning: kind "rendr" is not known"#)
            && out.contains("kinds declare rendr"),
        "{out}"
    );
    let (code, out) = run_command(&["quotas", "clear", "rendr"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");

    let (code, out) = run_command(&["quotas", "clear", "render"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(rows(&pool).await, vec![("*".into(), Some(5), None)]);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn quotas_set_with_a_bad_value_exits_2_without_connecting(pool: PgPool) {
    worker_pool(&pool).await; // creates the login role once per cluster
    let url = database_url(&pool, WORKER_LOGIN, None);
    let (code, out) = run_command(
        &["quotas", "set", "render", "--max-unfinished", "3"],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    // Nothing listens there: a command that tried to connect would fail with 1.
    let nowhere = "postgres://nobody@127.0.0.1:1/nothing";
    for (bad, says) in [
        (vec!["--max-unfinished", "-1"], "-1 is not in"),
        (vec!["--max-created", "0", "--per", "1h"], "0 is not in"),
        (vec!["--max-created", "5"], "--per"),
        (vec!["--max-created", "5", "--per", "0s"], "1s to 366 days"),
        (vec!["--max-created", "5", "--per", "soon"], "--per"),
        (
            vec!["--max-created", "5", "--per", "1500ms"],
            "whole seconds",
        ),
    ] {
        let args: Vec<&str> = ["quotas", "set", "render"]
            .into_iter()
            .chain(bad.clone())
            .collect();
        let (code, out) = run_command(&args, nowhere, None, &[]).await;
        assert_eq!(code, 2, "{bad:?}: {out}");
        assert!(out.contains(says), "{bad:?}: {out}");
    }
    let (code, out) = run_command(&["quotas", "set", "Render"], nowhere, None, &[]).await;
    assert_eq!(code, 2, "{out}");
    assert_eq!(rows(&pool).await, vec![("render".into(), Some(3), None)]);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_api_answers_a_refused_create_with_429_and_counts_it_in_metrics(pool: PgPool) {
    let user = create_user(&pool).await;
    worker_pool(&pool).await; // creates the login role once per cluster
    let (code, out) = run_command(
        &["quotas", "set", "render", "--max-unfinished", "1"],
        &database_url(&pool, WORKER_LOGIN, None),
        None,
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let api_url = api_login(&pool).await;
    let (listen, ops) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let env = [
        ("STUDIO_API__LISTEN", listen.as_str()),
        ("STUDIO_API__JWT_SECRET", SECRET),
        ("STUDIO_HTTP__LISTEN", ops.as_str()),
    ];
    let mut daemon = Daemon::spawn(&["api"], &api_url, None, &env);
    daemon
        .wait_for_log("serving the job API", Duration::from_secs(30))
        .await;
    let http = reqwest::Client::new();
    let create = || {
        http.post(format!("http://{listen}/v1/jobs"))
            .bearer_auth(token(user))
            .json(&json!({ "kind": "render", "input": {} }))
            .send()
    };

    assert_eq!(create().await.unwrap().status(), 201);
    let refused = create().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_none());

    let metrics = http
        .get(format!("http://{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("studio_api_quota_refusals_total{"))
        .unwrap_or_else(|| panic!("no refusal counter in:\n{metrics}"));
    assert!(
        line.contains("quota=\"render\"") && line.contains("limit=\"max_unfinished\""),
        "{line}"
    );
    assert!(line.ends_with(" 1"), "{line}");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = daemon.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{log}");
}
