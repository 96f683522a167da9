//! `studio-worker quotas` through the real binary: set, list, clear; bad values exit 2 before
//! connecting and change nothing.

use sqlx::PgPool;

use crate::harness::{WORKER_LOGIN, database_url, run_command, worker_pool};

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
