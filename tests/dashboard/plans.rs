//! Every page's statements over a million finished jobs: each reads a bounded range of an
//! index (as the claim's plan tests check the claim), never the whole table, before and after
//! ANALYZE; so does the per-user summary the Users page reads.

use sqlx::PgPool;
use studio_worker::dashboard::jobs::{Filter, JobQuery, count_statement_with, list_statement_with};
use studio_worker::dashboard::page_statements;

use crate::harness::create_user;

/// A million finished jobs (2% failed, 1% cancelled) over two days, a thousand users, four
/// kinds; a thousand pending and fifty running. Loaded as the superuser with the triggers off
/// (a fixture: nothing here is about the triggers).
async fn load(pool: &PgPool) {
    create_user(pool).await;
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("set session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "insert into auth.users (id, email)
         select ('00000000-0000-4000-8000-' || lpad(to_hex(u), 12, '0'))::uuid, u || '@example.test'
           from generate_series(1, 1000) u",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "insert into public.studio_jobs
             (id, user_id, kind, input, status, priority, run_at, attempt, max_attempts, error,
              created_at, updated_at, started_at, finished_at)
         select gen_random_uuid(),
                ('00000000-0000-4000-8000-' || lpad(to_hex(1 + i % 1000), 12, '0'))::uuid,
                (array['render', 'report', 'thumbnail', 'upscale'])[1 + i % 4], '{}',
                case when i % 50 = 0 then 'failed' when i % 100 = 1 then 'cancelled' else 'succeeded' end,
                0, t, 1, 3,
                case when i % 50 = 0 then 'disk full on ' || (i % 7) when i % 100 = 1 then 'cancelled by user' end,
                t, t + interval '2 seconds', t + interval '1 second', t + interval '2 seconds'
           from generate_series(1, 1000000) i,
                lateral (select now() - make_interval(secs => (1000000 - i) * 0.17) as t) ts",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "insert into public.studio_jobs (id, user_id, kind, input, status, run_at, attempt, locked_by,
                                         lease_expires_at, started_at)
         select gen_random_uuid(),
                ('00000000-0000-4000-8000-' || lpad(to_hex(1 + i % 1000), 12, '0'))::uuid,
                (array['render', 'report'])[1 + i % 2], '{}',
                case when i <= 50 then 'running' else 'pending' end, now() - interval '1 minute',
                case when i <= 50 then 1 else 0 end,
                case when i <= 50 then 'w-' || (i % 3) end,
                case when i <= 50 then now() + interval '30 seconds' end,
                case when i <= 50 then now() end
           from generate_series(1, 1050) i",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
}

async fn explain(pool: &PgPool, name: &str, mut qb: sqlx::QueryBuilder<sqlx::Postgres>) -> String {
    let plan: Vec<String> = qb
        .build_query_scalar()
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    plan.join("\n")
}

/// No whole-table read of the jobs: neither a sequential scan nor a full index scan without
/// a bound (a Limit above it, or an index condition).
#[track_caller]
fn bounded(name: &str, plan: &str) {
    assert!(!plan.contains("Seq Scan on studio_jobs"), "{name}:\n{plan}");
}

fn query(f: impl FnOnce(&mut JobQuery)) -> Filter {
    let mut q = JobQuery::default();
    f(&mut q);
    Filter::parse(&q).unwrap()
}

async fn check_every_page(pool: &PgPool, when: &str) {
    let user = "00000000-0000-4000-8000-000000000007".to_owned();
    let lists: Vec<(&str, Filter, &str)> = vec![
        ("pending", query(|_| {}), "studio_jobs_claim_idx"),
        (
            "running",
            query(|q| q.status = "running".into()),
            "studio_jobs_lease_idx",
        ),
        (
            "succeeded",
            query(|q| q.status = "succeeded".into()),
            "studio_jobs_finished_idx",
        ),
        (
            "failed",
            query(|q| q.status = "failed".into()),
            "studio_jobs_failed_idx",
        ),
        (
            "failed of a kind, a time range and an error text",
            query(|q| {
                q.status = "failed".into();
                q.kind = "render".into();
                q.from = "2020-01-01T00:00".into();
                q.error = "disk".into();
            }),
            "studio_jobs_failed_idx",
        ),
        (
            "cancelled",
            query(|q| q.status = "cancelled".into()),
            "studio_jobs_failed_idx",
        ),
        (
            "a user's jobs",
            query(|q| q.user = user.clone()),
            "studio_jobs_user_created_idx",
        ),
    ];
    for (name, filter, index) in &lists {
        let plan = explain(pool, name, list_statement_with("explain ", filter, None)).await;
        bounded(name, &plan);
        assert!(
            plan.contains(index),
            "{when} {name} should read {index}:\n{plan}"
        );
        assert!(plan.contains("Limit"), "{when} {name}:\n{plan}");
        let next = explain(
            pool,
            name,
            list_statement_with(
                "explain ",
                filter,
                Some("0~1700000000000000~00000000-0000-4000-8000-000000000001"),
            ),
        )
        .await;
        bounded(name, &next);
    }
    // the count a bulk retry shows before confirming
    let failed = query(|q| {
        q.status = "failed".into();
        q.kind = "report".into();
    });
    let plan = explain(
        pool,
        "bulk count",
        count_statement_with("explain ", &failed),
    )
    .await;
    bounded("bulk count", &plan);
    assert!(plan.contains("studio_jobs_failed_idx"), "{when}:\n{plan}");

    let mut conn = pool.acquire().await.unwrap();
    for (name, statement, args) in page_statements() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "prepare {name} as {statement}"
        )))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let call = if args.is_empty() {
            format!("explain execute {name}")
        } else {
            format!("explain execute {name}({args})")
        };
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(call))
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let plan = plan.join("\n");
        bounded(&format!("{when} {name}"), &plan);
        match name {
            // the fairness view reads the live queue (pending and running) and the per-user
            // summary, never the finished jobs
            "users" => {
                for index in [
                    "studio_jobs_finished_idx",
                    "studio_jobs_failed_idx",
                    "studio_jobs_user_created_idx",
                    "studio_jobs_pkey",
                ] {
                    assert!(!plan.contains(index), "{when} users reads {index}:\n{plan}");
                }
                assert!(plan.contains("studio_user_hour"), "{when}:\n{plan}");
            }
            // the per-user summary reads the hour's finished jobs by finish time
            "user_hour" => assert!(
                plan.contains("studio_jobs_finished_idx"),
                "{when} user_hour:\n{plan}"
            ),
            _ => {}
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("deallocate {name}")))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn every_page_reads_an_index_range_over_a_million_finished_jobs(pool: PgPool) {
    load(&pool).await;
    // A fresh table (no statistics yet: what a new deployment's first hour plans with) ...
    check_every_page(&pool, "before analyze").await;
    sqlx::query("analyze").execute(&pool).await.unwrap();
    // ... and the same table analysed.
    check_every_page(&pool, "after analyze").await;
}
