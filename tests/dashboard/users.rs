//! The Users page: the per-user summary of the last hour (recomputed off the page path) and
//! the live pending and running counts beside it.

use sqlx::PgPool;
use studio_worker::dashboard::live::user_hour;

use crate::harness::{TestDashboard, create_user, worker_pool};

/// Finished jobs of `user`, inserted as the fixture they are (triggers off): each finished
/// `ago` seconds ago after waiting `wait` seconds from due to start.
async fn finished(pool: &PgPool, user: uuid::Uuid, jobs: &[(f64, f64)]) {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("set session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (ago, wait) in jobs {
        sqlx::query(
            "insert into public.studio_jobs
                 (id, user_id, kind, input, status, run_at, attempt, max_attempts,
                  created_at, updated_at, started_at, finished_at)
             select gen_random_uuid(), $1, 'render', '{}', 'succeeded', t, 1, 3,
                    t, f, t + make_interval(secs => $3), f
               from (select now() - make_interval(secs => $2) as f) fs,
                    lateral (select f - make_interval(secs => $3 + 1) as t) ts",
        )
        .bind(user)
        .bind(ago)
        .bind(wait)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_users_page_shows_the_last_hour_per_user_beside_the_live_queue(pool: PgPool) {
    let ana = create_user(&pool).await;
    let bo = create_user(&pool).await;
    finished(&pool, ana, &[(600.0, 1.0), (300.0, 2.0), (60.0, 3.0)]).await;
    // bo's first job finished two hours ago: not in the hour
    finished(&pool, bo, &[(7200.0, 100.0), (120.0, 10.0)]).await;
    // the summary, computed as the dashboard's rollup does (before it starts, so that its own
    // first pass finds the summary fresh and keeps it)
    let workers = worker_pool(&pool).await;
    assert!(
        user_hour(&workers).await.unwrap(),
        "the first pass computes"
    );
    assert!(
        !user_hour(&workers).await.unwrap(),
        "a fresh summary is kept"
    );
    let d = TestDashboard::start(&pool).await;
    d.queue
        .enqueue(&studio_worker::queue::NewJob::new(
            bo,
            "render",
            serde_json::json!({}),
        ))
        .await
        .unwrap();
    let rows: Vec<(uuid::Uuid, i32, Option<f64>, Option<f64>)> = sqlx::query_as(
        "select user_id, finished, wait_p50, wait_p95 from public.studio_user_hour
          order by finished desc",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].0, rows[0].1), (ana, 3));
    assert!((rows[0].2.unwrap() - 2.0).abs() < 1e-6, "{rows:?}");
    assert!((rows[0].3.unwrap() - 2.9).abs() < 1e-6, "{rows:?}");
    assert_eq!((rows[1].0, rows[1].1), (bo, 1));
    assert!((rows[1].2.unwrap() - 10.0).abs() < 1e-6, "{rows:?}");

    let viewer = d.sign_in("victor").await;
    let page = viewer.get("/users").await.text().await.unwrap();
    let row = |user: uuid::Uuid| {
        let at = page
            .find(&format!("<code>{user}</code>"))
            .expect("the user's row");
        page[at..at + page[at..].find("</tr>").unwrap()].to_owned()
    };
    // bo first: one due job; then ana, who finished the most
    assert!(page.find(&bo.to_string()) < page.find(&ana.to_string()));
    let bo_row = row(bo);
    for cell in [
        "<td>1 (1)</td>",
        "<td>1</td>",
        "<td>25.0%</td>",
        "<td>10s</td>",
    ] {
        assert!(bo_row.contains(cell), "{cell} in {bo_row}");
    }
    let ana_row = row(ana);
    for cell in [
        "<td>0 (0)</td>",
        "<td>3</td>",
        "<td>75.0%</td>",
        "<td>2s</td>",
        "<td>3s</td>",
    ] {
        assert!(ana_row.contains(cell), "{cell} in {ana_row}");
    }
    assert!(page.contains("this one ends at"), "the page says when");
    d.finished().await;
}
