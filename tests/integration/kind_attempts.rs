//! A kind's `max_attempts` for every writer (migration 0021): the database learns it when a
//! replica registers the kind or an operator declares it, and a job whose writer gave none
//! takes it (else 3); a writer's own value is kept. The API's and the CLI's writers are tested
//! in `tests/api` and `tests/daemon`.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;
use sqlx::PgPool;
use studio_worker::config::{CatchUp, ScheduleSettings};
use studio_worker::control::kinds::Kinds;
use studio_worker::control::schedule::Scheduler;
use studio_worker::handlers::{Handler, HandlerError, JobContext, KindRuntime, Registry};
use studio_worker::queue::NewJob;
use studio_worker::worker::Worker;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::{
    as_user, create_user, wait_for, worker, worker_pool, worker_queue, worker_settings,
};

const FRESH: Duration = Duration::from_secs(60);

/// The kind's attempts in `studio_kinds` (`None`: not known, or no value).
async fn kind_attempts(pool: &PgPool, kind: &str) -> Option<i32> {
    sqlx::query_scalar::<_, Option<i32>>(
        "select max_attempts from public.studio_kinds where kind = $1",
    )
    .bind(kind)
    .fetch_optional(pool)
    .await
    .unwrap()
    .flatten()
}

async fn attempts_of(pool: &PgPool, job: Uuid) -> i32 {
    sqlx::query_scalar("select max_attempts from public.studio_jobs where id = $1")
        .bind(job)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Insert a job as `user` through RLS, as supabase-js does (users may not write
/// `max_attempts`: the column is left out).
async fn insert_as_user(pool: &PgPool, user: Uuid, kind: &str) -> Uuid {
    let mut tx = as_user(pool, user).await;
    let id = sqlx::query_scalar(
        "insert into public.studio_jobs (kind, input) values ($1, '{}') returning id",
    )
    .bind(kind)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

struct Idle;

#[async_trait::async_trait]
impl Handler for Idle {
    async fn run(&self, job: JobContext) -> Result<serde_json::Value, HandlerError> {
        job.cancel.cancelled().await;
        Err(HandlerError::retryable("stopped"))
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_replica_states_its_kinds_attempts_when_it_registers(pool: PgPool) {
    // Arrange: a worker whose `transcode` kind allows 7 attempts; `thumbnail` has no value.
    let _user = create_user(&pool).await;
    let mut registry = Registry::new();
    let mut transcode = KindRuntime::new(Idle, 1);
    transcode.limits.max_attempts = Some(7);
    registry.register("transcode", transcode);
    registry.register("thumbnail", KindRuntime::new(Idle, 1));
    let stop = CancellationToken::new();
    let worker = Worker::new(worker_queue(&pool).await, registry, worker_settings());
    let running = tokio::spawn(worker.run(stop.clone()));

    // Assert: the database learns 7 at registration, and nothing for thumbnail.
    wait_for(
        "the replica's registration",
        Duration::from_secs(10),
        || async { (kind_attempts(&pool, "transcode").await == Some(7)).then_some(()) },
    )
    .await;
    assert_eq!(kind_attempts(&pool, "thumbnail").await, None);
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn registration_states_the_replicas_value_and_plain_register_or_declare_leave_it(
    pool: PgPool,
) {
    let kinds = Kinds::new(worker_pool(&pool).await);
    let kind = vec!["transcode".to_owned()];

    kinds
        .register_with_limits(&worker(), &kind, &[Some(5)], FRESH)
        .await
        .unwrap();
    assert_eq!(kind_attempts(&pool, "transcode").await, Some(5));

    kinds.register(&worker(), &kind, FRESH).await.unwrap();
    assert!(!kinds.declare("transcode", Some("test")).await.unwrap());
    assert_eq!(
        kind_attempts(&pool, "transcode").await,
        Some(5),
        "no value stated: kept"
    );

    assert!(
        !kinds
            .declare_with("transcode", Some("test"), Some(9))
            .await
            .unwrap()
    );
    assert_eq!(kind_attempts(&pool, "transcode").await, Some(9));

    // A replica without a value for the kind states that too (its jobs get the default).
    kinds
        .register_with_limits(&worker(), &kind, &[None], FRESH)
        .await
        .unwrap();
    assert_eq!(kind_attempts(&pool, "transcode").await, None);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_users_insert_gets_its_kinds_attempts(pool: PgPool) {
    let user = create_user(&pool).await;
    let kinds = Kinds::new(worker_pool(&pool).await);
    kinds
        .declare_with("render", Some("test"), Some(5))
        .await
        .unwrap();

    let defaulted = insert_as_user(&pool, user, "render").await;
    let other = insert_as_user(&pool, user, "report").await;

    assert_eq!(attempts_of(&pool, defaulted).await, 5, "the kind's");
    assert_eq!(attempts_of(&pool, other).await, 3, "a kind without a value");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_librarys_enqueues_without_attempts_get_their_kinds(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    Kinds::new(queue.pool().clone())
        .declare_with("render", Some("test"), Some(6))
        .await
        .unwrap();
    let job = |kind: &str| NewJob::new(user, kind, json!({}));

    let one = queue.enqueue(&job("render")).await.unwrap();
    let many = queue
        .enqueue_many(&[job("render"), job("render").max_attempts(2), job("report")])
        .await
        .unwrap();

    assert_eq!(attempts_of(&pool, one).await, 6);
    let got = [
        attempts_of(&pool, many[0]).await,
        attempts_of(&pool, many[1]).await,
        attempts_of(&pool, many[2]).await,
    ];
    assert_eq!(got, [6, 2, 3]);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_schedule_without_attempts_enqueues_with_its_kinds(pool: PgPool) {
    let user = create_user(&pool).await;
    let worker = worker_pool(&pool).await;
    Kinds::new(worker.clone())
        .declare_with("report", Some("test"), Some(4))
        .await
        .unwrap();
    let start = Utc.with_ymd_and_hms(2026, 5, 4, 10, 0, 0).unwrap();
    let schedule = ScheduleSettings {
        cron: "* * * * * *".parse().unwrap(),
        time_zone: chrono_tz::UTC,
        kind: "report".to_owned(),
        user,
        input: json!({}),
        catch_up: CatchUp::Once,
        priority: 0,
        max_attempts: None,
    };
    let mut scheduler = Scheduler::new(vec![("daily".to_owned(), schedule)], start);

    scheduler
        .tick(&worker, start + chrono::TimeDelta::seconds(1))
        .await
        .unwrap();

    let attempts: Vec<i32> =
        sqlx::query_scalar("select max_attempts from public.studio_jobs where kind = 'report'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, [4]);
}
