//! Schedules through the real binary: a bad cron expression stops `run`; `schedules --json`
//! lists a schedule's next fire time, and its last fire once `run` has enqueued one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::harness::{
    ConfigFile, Daemon, WORKER_LOGIN, create_user, database_url, run_command, wait_for,
};

fn config(schedule: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "[kinds.ping]\nexecutor = \"command\"\ncommand = [\"/bin/true\"]\n\n{schedule}"
    ))
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_bad_cron_expression_stops_run_naming_the_key(pool: PgPool) {
    let user = create_user(&pool).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let config = config(&format!(
        "[schedules.nightly]\ncron = \"61 3 * * *\"\nkind = \"ping\"\nuser = \"{user}\"\n"
    ));

    let (code, out) = run_command(&["run"], &url, Some(&config), &[]).await;

    assert_eq!(code, 2, "{out}");
    assert!(out.contains("schedules.nightly.cron"), "{out}");
    assert!(!out.contains("worker started"), "{out}");
    let jobs: i64 = sqlx::query_scalar("select count(*) from public.studio_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn schedules_lists_next_fire_times_and_the_last_fire_run_enqueued(pool: PgPool) {
    // Arrange: a per-second schedule and a daily one in New York.
    let user = create_user(&pool).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let config = config(&format!(
        "[schedules.heartbeat]\ncron = \"* * * * * *\"\nkind = \"ping\"\nuser = \"{user}\"\n\n\
         [schedules.nightly]\ncron = \"30 2 * * *\"\ntime_zone = \"America/New_York\"\n\
         kind = \"report\"\nuser = \"{user}\"\ncatch_up = \"skip\"\n"
    ));
    let before = Utc::now();
    let (code, out) = run_command(&["schedules", "--json"], &url, Some(&config), &[]).await;
    assert_eq!(code, 0, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nightly = &listed[1];
    assert_eq!(nightly["name"], "nightly");
    assert_eq!(nightly["cron"], "30 2 * * *");
    assert_eq!(nightly["time_zone"], "America/New_York");
    assert_eq!(nightly["kind"], "report");
    assert_eq!(nightly["user"], user.to_string());
    assert_eq!(nightly["catch_up"], "skip");
    assert!(nightly["last_fire"].is_null());
    let next: DateTime<Utc> = nightly["next_fire"].as_str().unwrap().parse().unwrap();
    assert!(
        next > before && next - before <= chrono::TimeDelta::hours(25),
        "{next}"
    );
    assert!(listed[0]["last_fire"].is_null());

    // Act: `run` fires the per-second schedule; the kind it does not serve is said at start.
    let mut daemon = Daemon::start(&url, &config, &[]).await;
    daemon
        .wait_for_log("schedule fired: job enqueued", Duration::from_secs(30))
        .await;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = daemon.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("schedule's kind is not served by this replica") && log.contains("report"),
        "{log}"
    );

    // Assert: the last fire is listed with a job that exists and belongs to the owner.
    let (code, out) = run_command(&["schedules", "--json"], &url, Some(&config), &[]).await;
    assert_eq!(code, 0, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let heartbeat = &listed[0];
    assert_eq!(heartbeat["name"], "heartbeat");
    let job: uuid::Uuid = heartbeat["last_fire"]["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (owner, kind): (uuid::Uuid, String) =
        sqlx::query_as("select user_id, kind from public.studio_jobs where id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((owner, kind.as_str()), (user, "ping"));
    let (code, table) = run_command(&["schedules"], &url, Some(&config), &[]).await;
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("heartbeat") && table.contains(&job.to_string()),
        "{table}"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn three_running_replicas_enqueue_one_job_per_fire_time(pool: PgPool) {
    // Arrange: three `run` processes sharing one per-second schedule.
    let user = create_user(&pool).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let config = config(&format!(
        "[schedules.heartbeat]\ncron = \"* * * * * *\"\nkind = \"ping\"\nuser = \"{user}\"\n"
    ));
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Daemon::start(&url, &config, &[]).await);
    }

    // Act: let them race on a few fire times after all three are up.
    let first: i64 = sqlx::query_scalar("select count(*) from public.studio_schedule_fires")
        .fetch_one(&pool)
        .await
        .unwrap();
    wait_for("five more fire times", Duration::from_secs(60), || async {
        let fires: i64 = sqlx::query_scalar("select count(*) from public.studio_schedule_fires")
            .fetch_one(&pool)
            .await
            .unwrap();
        (fires >= first + 5).then_some(())
    })
    .await;
    for replica in &replicas {
        replica.signal(nix::sys::signal::Signal::SIGTERM);
    }
    for replica in replicas {
        let (status, log) = replica.exit(Duration::from_secs(30)).await;
        assert!(status.success(), "{log}");
    }

    // Assert: one job per fire row and per fire time, each with its own row's id.
    let (fires, distinct_times, jobs, matched): (i64, i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from public.studio_schedule_fires),
                (select count(distinct fire_time) from public.studio_schedule_fires),
                (select count(*) from public.studio_jobs),
                (select count(*) from public.studio_jobs j
                   join public.studio_schedule_fires f on f.job_id = j.id)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(fires >= 5);
    assert_eq!((distinct_times, jobs, matched), (fires, fires, fires));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_schedule_declares_its_kind_so_its_jobs_are_accepted_before_any_replica_serves_it(
    pool: PgPool,
) {
    // Arrange: a schedule of a kind no replica serves and nobody declared.
    let user = create_user(&pool).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let config = config(&format!(
        "[schedules.digest]\ncron = \"* * * * * *\"\nkind = \"digest\"\nuser = \"{user}\"\n"
    ));

    // Act
    let daemon = Daemon::start(&url, &config, &[]).await;
    wait_for("a digest job", Duration::from_secs(30), || async {
        let jobs: i64 =
            sqlx::query_scalar("select count(*) from public.studio_jobs where kind = 'digest'")
                .fetch_one(&pool)
                .await
                .unwrap();
        (jobs > 0).then_some(())
    })
    .await;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = daemon.exit(Duration::from_secs(30)).await;

    // Assert: the kind is known, declared by the schedule; no fire time was refused.
    assert!(status.success(), "{log}");
    let declared_by: Option<String> =
        sqlx::query_scalar("select declared_by from public.studio_kinds where kind = 'digest'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(declared_by.as_deref(), Some("schedule:digest"));
    assert!(!log.contains("could not enqueue"), "{log}");
}
