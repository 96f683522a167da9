//! The autoscaling demand (migration 0025), one test per rule, always asked as the autoscaler's
//! login role (a LOGIN member of `studio_autoscaler`, as KEDA connects), never as a superuser.

use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use studio_worker::control::autoscale::{self, NextFire, PublishedLimits};
use studio_worker::queue::{ClaimRequest, Queue};
use uuid::Uuid;

use crate::harness::{autoscaler_pool, create_user, job, kinds, sqlstate, worker, worker_queue};

/// The paused kinds over `queue`'s pool (pause moved to `control`).
fn pauses(queue: &studio_worker::queue::Queue) -> studio_worker::control::pause::Pauses {
    studio_worker::control::Control::new(queue.pool().clone()).pauses()
}

/// The demand as the autoscaler sees it: `select studio_autoscale_demand(...)`, as KEDA's query.
async fn demand(scaler: &PgPool, kinds: &[&str], per_replica: i32, horizon_secs: i64) -> i32 {
    sqlx::query_scalar(
        "select public.studio_autoscale_demand($1, $2, make_interval(secs => $3::float8))",
    )
    .bind(kinds)
    .bind(per_replica)
    .bind(horizon_secs as f64)
    .fetch_one(scaler)
    .await
    .unwrap()
}

fn limits(kind: &str) -> PublishedLimits {
    PublishedLimits {
        kind: kind.to_owned(),
        max_running: None,
        rate: None,
        max_running_per_user: None,
    }
}

async fn enqueue(queue: &Queue, user: Uuid, kind: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(queue.enqueue(&job(user, kind)).await.unwrap());
    }
    ids
}

/// Claim up to `n` jobs of `kind` with a 60-second lease.
async fn claim(queue: &Queue, kind: &str, n: u32) -> usize {
    let me = worker();
    let kinds = kinds(&[kind]);
    queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: n,
            lease: Duration::from_secs(60),
            now: None,
        })
        .await
        .unwrap()
        .len()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn due_pending_jobs_divided_by_per_replica_rounded_up(pool: PgPool) {
    let scaler = autoscaler_pool(&pool).await;
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;

    assert_eq!(demand(&scaler, &["render"], 4, 0).await, 0, "empty queue");
    enqueue(&queue, user, "render", 5).await;
    enqueue(&queue, user, "report", 7).await;

    assert_eq!(demand(&scaler, &["render"], 4, 0).await, 2, "ceil(5 / 4)");
    assert_eq!(demand(&scaler, &["render"], 5, 0).await, 1);
    assert_eq!(demand(&scaler, &["render"], 1, 0).await, 5);
    assert_eq!(demand(&scaler, &["render", "report"], 4, 0).await, 3);
    assert_eq!(
        demand(&scaler, &["thumbnail"], 4, 0).await,
        0,
        "only the kinds asked about"
    );
    let all: i32 = sqlx::query_scalar("select public.studio_autoscale_demand(null, 1)")
        .fetch_one(&scaler)
        .await
        .unwrap();
    assert_eq!(all, 12, "NULL kinds: every kind; horizon defaults to 0");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_paused_kind_counts_nothing_while_its_jobs_wait(pool: PgPool) {
    let scaler = autoscaler_pool(&pool).await;
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    enqueue(&queue, user, "render", 2).await;
    assert_eq!(claim(&queue, "render", 2).await, 2);
    enqueue(&queue, user, "render", 6).await;
    enqueue(&queue, user, "report", 3).await;
    pauses(&queue).pause("render", Some("test")).await.unwrap();

    assert_eq!(
        demand(&scaler, &["render"], 1, 3600).await,
        2,
        "6 pending of a paused kind count nothing; its 2 running jobs still need their replicas"
    );
    assert_eq!(demand(&scaler, &["render", "report"], 1, 0).await, 5);

    pauses(&queue).resume("render").await.unwrap();
    assert_eq!(demand(&scaler, &["render"], 1, 0).await, 8, "resumed");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_job_due_later_counts_only_within_the_horizon(pool: PgPool) {
    let scaler = autoscaler_pool(&pool).await;
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    queue
        .enqueue(&job(user, "render").run_at(Utc::now() + chrono::TimeDelta::minutes(10)))
        .await
        .unwrap();

    assert_eq!(
        demand(&scaler, &["render"], 1, 0).await,
        0,
        "pending, due in 10 minutes"
    );
    assert_eq!(
        demand(&scaler, &["render"], 1, 60).await,
        0,
        "not within a minute"
    );
    assert_eq!(
        demand(&scaler, &["render"], 1, 660).await,
        1,
        "within 11 minutes"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn live_leases_count_as_running_and_expired_ones_as_runnable(pool: PgPool) {
    let scaler = autoscaler_pool(&pool).await;
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    enqueue(&queue, user, "render", 4).await;
    assert_eq!(claim(&queue, "render", 4).await, 4);
    assert_eq!(
        demand(&scaler, &["render"], 1, 0).await,
        4,
        "4 running, nothing pending"
    );
    assert_eq!(demand(&scaler, &["render"], 3, 0).await, 2);

    // Two leases lapse (their replica died): the rescuer will return them to pending, unless
    // the attempt was the last one or cancellation was requested.
    sqlx::query(
        "update public.studio_jobs set lease_expires_at = now() - interval '1 second'
          where id in (select id from public.studio_jobs where kind = 'render' order by id limit 3)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        demand(&scaler, &["render"], 1, 0).await,
        4,
        "1 live + 3 runnable once rescued"
    );
    sqlx::query(
        "update public.studio_jobs set max_attempts = attempt
          where id = (select id from public.studio_jobs where kind = 'render' order by id limit 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "update public.studio_jobs set cancel_requested_at = now()
          where id = (select id from public.studio_jobs where kind = 'render' order by id offset 1 limit 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        demand(&scaler, &["render"], 1, 0).await,
        2,
        "an expired lease with no attempt left fails, a cancelled one is cancelled: neither runs"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn max_running_caps_a_kind_counting_its_live_jobs(pool: PgPool) {
    let scaler = autoscaler_pool(&pool).await;
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let worker_pool = queue.pool().clone();
    autoscale::publish_limits(
        &worker_pool,
        &[PublishedLimits {
            max_running: Some(3),
            ..limits("render")
        }],
        "test",
    )
    .await
    .unwrap();
    enqueue(&queue, user, "render", 10).await;
    enqueue(&queue, user, "report", 2).await;

    assert_eq!(
        demand(&scaler, &["render"], 1, 0).await,
        3,
        "10 pending, 3 may run"
    );
    assert_eq!(claim(&queue, "render", 3).await, 3);
    assert_eq!(
        demand(&scaler, &["render"], 1, 0).await,
        3,
        "3 running hold the cap: 7 pending add nothing"
    );
    assert_eq!(demand(&scaler, &["render", "report"], 1, 0).await, 5);

    // A later configuration without the cap republishes the kind: the cap is gone.
    autoscale::publish_limits(&worker_pool, &[limits("render")], "test")
        .await
        .unwrap();
    assert_eq!(demand(&scaler, &["render"], 1, 0).await, 10);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_rate_limited_kind_counts_what_its_window_lets_start(pool: PgPool) {
    let scaler = autoscaler_pool(&pool).await;
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    autoscale::publish_limits(
        queue.pool(),
        &[PublishedLimits {
            rate: Some((4, Duration::from_secs(3600))),
            ..limits("render")
        }],
        "test",
    )
    .await
    .unwrap();
    enqueue(&queue, user, "render", 10).await;
    assert_eq!(
        demand(&scaler, &["render"], 1, 0).await,
        4,
        "4 starts per hour"
    );

    // Starts recorded by claims (0015): 3 started 50 minutes ago, 1 just now.
    sqlx::query(
        "insert into public.studio_kind_starts (kind, started_at, jobs)
         values ('render', now() - interval '50 minutes', 3), ('render', now(), 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        demand(&scaler, &["render"], 1, 0).await,
        0,
        "the window is full: 10 pending jobs and no replica to start"
    );
    assert_eq!(
        demand(&scaler, &["render"], 1, 15 * 60).await,
        3,
        "within 15 minutes the 3 starts of 50 minutes ago leave the window"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_per_user_cap_counts_only_users_below_it(pool: PgPool) {
    let scaler = autoscaler_pool(&pool).await;
    let busy = create_user(&pool).await;
    let idle = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    autoscale::publish_limits(
        queue.pool(),
        &[
            PublishedLimits {
                max_running_per_user: Some(2),
                ..limits("render")
            },
            PublishedLimits {
                max_running_per_user: Some(2),
                ..limits("report")
            },
        ],
        "test",
    )
    .await
    .unwrap();
    // `busy` runs 2 jobs of another kind: the fair claim counts every kind against the cap.
    enqueue(&queue, busy, "report", 2).await;
    assert_eq!(claim(&queue, "report", 2).await, 2);
    enqueue(&queue, busy, "render", 5).await;

    assert_eq!(
        demand(&scaler, &["render"], 1, 0).await,
        0,
        "5 pending, but their owner is at the cap"
    );
    enqueue(&queue, idle, "render", 5).await;
    assert_eq!(
        demand(&scaler, &["render"], 1, 0).await,
        2,
        "the other user may start 2 of their 5"
    );
    assert_eq!(
        demand(&scaler, &["render", "report"], 1, 0).await,
        4,
        "2 running + 2 startable"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_schedule_due_within_the_horizon_counts_one_job(pool: PgPool) {
    let scaler = autoscaler_pool(&pool).await;
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let fire = |schedule: &str, kind: &str, secs: i64| NextFire {
        schedule: schedule.to_owned(),
        kind: kind.to_owned(),
        user,
        at: Utc::now() + chrono::TimeDelta::seconds(secs),
    };
    autoscale::publish_next_fires(
        queue.pool(),
        &[
            fire("nightly", "report", 30),
            fire("hourly", "render", 3000),
        ],
        Duration::from_secs(180),
    )
    .await
    .unwrap();

    assert_eq!(demand(&scaler, &["report"], 1, 0).await, 0, "fires in 30 s");
    assert_eq!(
        demand(&scaler, &["report"], 1, 60).await,
        1,
        "within a minute"
    );
    assert_eq!(demand(&scaler, &["report", "render"], 1, 60).await, 1);

    pauses(&queue).pause("report", Some("test")).await.unwrap();
    assert_eq!(
        demand(&scaler, &["report"], 1, 60).await,
        0,
        "its kind is paused"
    );
    pauses(&queue).resume("report").await.unwrap();

    // The scheduler stopped refreshing the row (schedule removed, scheduler gone): it lapses.
    autoscale::publish_next_fires(
        queue.pool(),
        &[fire("nightly", "report", 30)],
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(demand(&scaler, &["report"], 1, 60).await, 0, "stale row");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn nonsense_arguments_are_refused_with_22023(pool: PgPool) {
    let scaler = autoscaler_pool(&pool).await;
    let refused = |sql: &'static str| {
        let scaler = scaler.clone();
        async move { sqlstate(sqlx::query_scalar::<_, i32>(sql).fetch_one(&scaler).await) }
    };
    assert_eq!(
        refused("select public.studio_autoscale_demand('{render}', 0)").await,
        "22023"
    );
    assert_eq!(
        refused("select public.studio_autoscale_demand('{render}', 1, interval '-1 second')").await,
        "22023"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_autoscaler_may_execute_the_demand_function_and_nothing_else(pool: PgPool) {
    let scaler = autoscaler_pool(&pool).await;
    let user = create_user(&pool).await;
    worker_queue(&pool)
        .await
        .enqueue(&job(user, "render"))
        .await
        .unwrap();

    // Every privilege granted to the role itself, on anything in this database.
    let granted: Vec<String> = sqlx::query_scalar(
        "select format('%s %s', a.privilege_type, o.name) from (
           select c.oid::regclass::text as name, c.relacl as acl from pg_class c
           union all select p.oid::regprocedure::text, p.proacl from pg_proc p
           union all select n.nspname, n.nspacl from pg_namespace n
         ) o, aclexplode(o.acl) a
         where a.grantee = 'studio_autoscaler'::regrole
         order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        granted,
        vec![
            "EXECUTE studio_autoscale_demand(text[],integer,interval)".to_owned(),
            "USAGE public".to_owned(),
        ]
    );
    let member_of: Vec<String> = sqlx::query_scalar(
        "select m.roleid::regrole::text from pg_auth_members m
          where m.member = 'studio_autoscaler'::regrole",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(member_of.is_empty(), "a member of nothing: {member_of:?}");

    for sql in [
        "select count(*) from public.studio_jobs",
        "select count(*) from public.studio_kind_limits",
        "select count(*) from public.studio_paused_kinds",
        "select public.studio_schema_version()",
        "insert into public.studio_paused_kinds (kind) values ('render')",
    ] {
        let result = sqlx::query(sql).execute(&scaler).await;
        assert_eq!(sqlstate(result), "42501", "{sql}");
    }
    assert_eq!(demand(&scaler, &["render"], 1, 0).await, 1);
    let settings: Vec<String> = sqlx::query_scalar(
        "select unnest(proconfig) from pg_proc where proname = 'studio_autoscale_demand'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        settings,
        vec!["search_path=\"\"".to_owned()],
        "pinned search_path"
    );
}

/// Bounded cost: 1,000,000 finished jobs and 100,000 pending ones. The plan of every statement
/// inside the function (auto_explain, through psql) must never scan the table as a whole, and
/// its time is printed (`cargo test --test integration autoscale_cost -- --nocapture`). About a
/// minute, most of it loading: it runs in CI, so a plan that scans the history fails the build.
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn autoscale_cost_is_bounded_by_the_live_queue_not_the_history(pool: PgPool) {
    let user = create_user(&pool).await;
    let started = Instant::now();
    // Loaded without the row triggers (history, quotas): the demand reads only studio_jobs.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("set session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "insert into public.studio_jobs (id, user_id, kind, input, status, attempt, run_at,
                                         started_at, finished_at, result)
         select gen_random_uuid(), $1, (array['render','report','thumbnail'])[1 + i % 3], '{}',
                'succeeded', 1, now() - interval '2 days', now() - interval '2 days',
                now() - interval '2 days' + make_interval(secs => i % 1000), '{}'
           from generate_series(1, 1000000) as i",
    )
    .bind(user)
    .execute(&mut *conn)
    .await
    .unwrap();
    // 100,000 pending over 1,000 users, a third of them due later.
    sqlx::query(
        "insert into auth.users (id)
         select ('00000000-0000-4000-8000-' || lpad(to_hex(u), 12, '0'))::uuid
           from generate_series(1, 1000) as u",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "insert into public.studio_jobs (id, user_id, kind, input, run_at)
         select gen_random_uuid(),
                ('00000000-0000-4000-8000-' || lpad(to_hex(1 + i % 1000), 12, '0'))::uuid,
                (array['render','report','thumbnail'])[1 + i % 3], '{}',
                now() + case when i % 3 = 0 then interval '1 hour' else interval '0' end
           from generate_series(1, 100000) as i",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("analyze public.studio_jobs")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    println!(
        "autoscale cost: loaded 1.1M rows in {:?}",
        started.elapsed()
    );
    autoscale::publish_limits(
        &crate::harness::worker_pool(&pool).await,
        &[
            PublishedLimits {
                max_running: Some(50),
                max_running_per_user: Some(3),
                ..limits("render")
            },
            PublishedLimits {
                rate: Some((100, Duration::from_secs(60))),
                max_running_per_user: Some(3),
                ..limits("report")
            },
        ],
        "test",
    )
    .await
    .unwrap();

    let scaler = autoscaler_pool(&pool).await;
    for (label, kinds) in [
        ("uncapped kind", vec!["thumbnail"]),
        ("capped kinds, per-user cap", vec!["render", "report"]),
    ] {
        let mut times = Vec::new();
        let mut value = 0;
        for _ in 0..5 {
            let t = Instant::now();
            value = demand(&scaler, &kinds, 10, 30).await;
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "autoscale cost: {label}: demand {value}, median {:?} (min {:?}, max {:?}) over 5 calls",
            times[2], times[0], times[4]
        );
    }
    assert_eq!(
        demand(&scaler, &["thumbnail"], 10, 0).await,
        3334,
        "33,333 due / 10"
    );

    // Every statement's plan inside the function, from auto_explain, as the autoscaler.
    let url = pool.connect_options();
    let output = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-h",
            url.get_host(),
            "-p",
            &url.get_port().to_string(),
            "-U",
            url.get_username(),
            "-d",
            url.get_database().unwrap_or("postgres"),
            "-c",
            "load 'auto_explain'",
            "-c",
            "set auto_explain.log_min_duration = 0",
            "-c",
            "set auto_explain.log_nested_statements = on",
            "-c",
            "set auto_explain.log_analyze = on",
            "-c",
            "set auto_explain.log_level = notice",
            "-c",
            "set client_min_messages = notice",
            "-c",
            "set role studio_autoscaler",
            "-c",
            "select public.studio_autoscale_demand('{render,report}', 10, interval '30 seconds')",
        ])
        .output()
        .expect("psql");
    let plans = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{plans}");
    println!("{plans}");
    assert!(
        plans.contains("Index"),
        "the plans use the partial indexes: {plans}"
    );
    assert!(
        !plans.contains("Seq Scan on studio_jobs"),
        "no statement reads the whole table: {plans}"
    );
}

/// The query the ScaledObject in deploy/kubernetes gives KEDA, run as KEDA would run it.
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_scaled_objects_query_runs_as_the_autoscaler(pool: PgPool) {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/keda-scaledobject.yaml"
    ))
    .unwrap();
    let scaled: serde_yaml_ng::Value = serde_yaml_ng::from_str(&manifest).unwrap();
    let query = scaled["spec"]["triggers"][0]["metadata"]["query"]
        .as_str()
        .unwrap()
        .to_owned();
    let scaler = autoscaler_pool(&pool).await;
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let run = |query: String| {
        let scaler = scaler.clone();
        async move {
            sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(query))
                .fetch_one(&scaler)
                .await
                .unwrap()
        }
    };
    assert_eq!(run(query.clone()).await, 0, "nothing to run: zero replicas");

    enqueue(&queue, user, "render", 9).await;
    assert_eq!(run(query.clone()).await, 2, "9 jobs, 8 per replica");
}
