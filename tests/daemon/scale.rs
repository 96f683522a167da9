//! Scale-out (issue 21) through the real binary: `studio-worker scheduler` keeps schedules,
//! lease rescue and retention going with no worker replica, and `/metrics` exports the
//! autoscaling demand the database computes with the limits the configuration published.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{
    ConfigFile, Daemon, WORKER_LOGIN, create_user, database_url, wait_for, worker_pool,
};

const PATIENCE: Duration = Duration::from_secs(30);

fn free_listen() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", probe.local_addr().unwrap().port())
}

async fn start_scheduler(url: &str, config: &ConfigFile, env: &[(&str, &str)]) -> Daemon {
    let mut daemon = Daemon::spawn(&["scheduler"], url, Some(config), env);
    daemon
        .wait_for_log("maintenance started", Duration::from_secs(30))
        .await;
    daemon
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn with_no_worker_two_schedulers_fire_each_time_once_rescue_leases_and_prune(pool: PgPool) {
    let user = create_user(&pool).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let config = ConfigFile::new(&format!(
        "[retention]\nenabled = true\nolder_than = \"1h\"\ninterval = \"300ms\"\n\n\
         [kinds.ping]\nexecutor = \"command\"\ncommand = [\"/bin/true\"]\n\n\
         [schedules.heartbeat]\ncron = \"* * * * * *\"\nkind = \"ping\"\nuser = \"{user}\"\n"
    ));
    // A job whose worker died mid-run (its lease lapsed), and one that finished two days ago.
    let queue = studio_worker::queue::Queue::new(worker_pool(&pool).await);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let job = studio_worker::queue::NewJob::new(user, "render", serde_json::json!({}));
        ids.push(queue.enqueue(&job).await.unwrap());
    }
    let (orphan, old) = (ids[0], ids[1]);
    sqlx::query(
        "update public.studio_jobs set status = 'running', attempt = 1, locked_by = 'gone',
                lease_expires_at = now() - interval '1 minute', started_at = now()
          where id = any($1)",
    )
    .bind(&ids)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "update public.studio_jobs set status = 'succeeded', result = '{}', locked_by = null,
                lease_expires_at = null, finished_at = now() - interval '2 days'
          where id = $1",
    )
    .bind(old)
    .execute(&pool)
    .await
    .unwrap();

    let first = start_scheduler(&url, &config, &[]).await;
    let second = start_scheduler(&url, &config, &[]).await;

    let status = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("select status from public.studio_jobs where id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    };
    wait_for("the orphan to be rescued", PATIENCE, || async {
        (status(orphan).await.as_deref() == Some("pending")).then_some(())
    })
    .await;
    wait_for("the old job to be pruned", PATIENCE, || async {
        status(old).await.is_none().then_some(())
    })
    .await;
    let fires = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from public.studio_schedule_fires where schedule = 'heartbeat'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    wait_for("3 fires", PATIENCE, || async {
        (fires(pool.clone()).await >= 3).then_some(())
    })
    .await;
    for daemon in [first, second] {
        daemon.signal(nix::sys::signal::Signal::SIGTERM);
        let (status, log) = daemon.exit(PATIENCE).await;
        assert!(status.success(), "{log}");
        assert!(!log.contains("worker started"), "claims nothing: {log}");
    }

    // Exactly once per fire time, whoever fired: one job each, none without its fire row.
    let (fire_rows, jobs, distinct): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from public.studio_schedule_fires where schedule = 'heartbeat'),
                (select count(*) from public.studio_jobs where kind = 'ping'),
                (select count(distinct job_id) from public.studio_schedule_fires
                  where schedule = 'heartbeat')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(fire_rows >= 3);
    assert_eq!(jobs, fire_rows, "one job per fire time");
    assert_eq!(distinct, fire_rows);
    let (attempt, error): (i32, Option<String>) =
        sqlx::query_as("select attempt, error from public.studio_jobs where id = $1")
            .bind(orphan)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (attempt, error),
        (1, None),
        "rescued to pending, attempt kept"
    );
    let next: i64 = sqlx::query_scalar(
        "select count(*) from public.studio_schedule_next_fires
          where schedule = 'heartbeat' and kind = 'ping' and fresh_until > now()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        next, 1,
        "the next fire time is published for the autoscaler"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn metrics_export_the_demand_counted_with_the_published_limits(pool: PgPool) {
    let user = create_user(&pool).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let queue = studio_worker::queue::Queue::new(worker_pool(&pool).await);
    for _ in 0..5 {
        queue
            .enqueue(&studio_worker::queue::NewJob::new(
                user,
                "render",
                serde_json::json!({}),
            ))
            .await
            .unwrap();
    }
    // The claim's cap is configuration only: the scheduler publishes it at start.
    let config = ConfigFile::new(
        "[autoscale]\nper_replica = 2\nhorizon = \"0s\"\n\n\
         [kinds.render]\nexecutor = \"command\"\ncommand = [\"/bin/true\"]\nmax_running = 3\n",
    );
    let listen = free_listen();
    let daemon = start_scheduler(&url, &config, &[("STUDIO_HTTP__LISTEN", &listen)]).await;

    let published: Option<i32> = sqlx::query_scalar(
        "select max_running from public.studio_kind_limits where kind = 'render'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(published, Some(3));
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("studio_autoscale_runnable_jobs 3\n"),
        "5 pending, at most 3 running at once:\n{metrics}"
    );
    assert!(
        metrics.contains("studio_autoscale_demand_replicas 2\n"),
        "ceil(3 / 2):\n{metrics}"
    );
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;
    assert!(status.success(), "{log}");
}

#[sqlx::test(migrations = false)]
async fn migrations_wait_holds_a_process_back_until_the_schema_is_migrated(pool: PgPool) {
    let url = database_url(&pool, "postgres", None);
    let mut waiting = Daemon::spawn(&["migrations", "wait", "--timeout", "60s"], &url, None, &[]);
    waiting
        .wait_for_log("waiting for the schema", Duration::from_secs(30))
        .await;
    assert!(waiting.child.try_wait().unwrap().is_none(), "still waiting");

    studio_worker::db::MIGRATOR.run(&pool).await.unwrap();

    let (status, log) = waiting.exit(PATIENCE).await;
    assert!(status.success(), "{log}");
    let (code, out) =
        crate::harness::run_command(&["migrations", "wait", "--timeout", "1s"], &url, None, &[])
            .await;
    assert_eq!(code, 0, "already migrated: {out}");
}

#[sqlx::test(migrations = false)]
async fn migrations_wait_gives_up_after_its_timeout(pool: PgPool) {
    let url = database_url(&pool, "postgres", None);
    let (code, out) =
        crate::harness::run_command(&["migrations", "wait", "--timeout", "2s"], &url, None, &[])
            .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did not reach version"), "{out}");
}
