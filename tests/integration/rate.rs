//! Start rates per kind (migration 0015): enforced inside the claim across replicas, counted
//! against the history, combined with fairness, pauses and running caps; held-back jobs stay
//! pending untouched.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::handlers::{Handler, HandlerError, JobContext, KindRuntime, Registry};
use studio_worker::limits::RateLimit;
use studio_worker::queue::{ClaimCursor, ClaimOrder, ClaimPolicy, ClaimRequest, Queue, WorkerId};
use studio_worker::worker::Worker;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::{
    as_role, create_user, declare_kinds, job, kinds, sqlstate, wait_for, worker, worker_pool,
    worker_queue, worker_settings,
};

/// The paused kinds over `queue`'s pool (pause moved to `control`).
fn pauses(queue: &studio_worker::queue::Queue) -> studio_worker::control::pause::Pauses {
    studio_worker::control::Control::new(queue.pool().clone()).pauses()
}

const LEASE: Duration = Duration::from_secs(30);
const PATIENCE: Duration = Duration::from_secs(60);

struct Succeeds;

#[async_trait::async_trait]
impl Handler for Succeeds {
    async fn run(&self, _job: JobContext) -> Result<Value, HandlerError> {
        Ok(json!("done"))
    }
}

fn rate(text: &str) -> RateLimit {
    text.parse().unwrap()
}

/// The start times of `kind`'s jobs as the history shows them (`pending -> running`).
async fn starts(pool: &PgPool, kind: &str) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar(
        "select e.created_at from public.studio_job_events e
           join public.studio_jobs j on j.id = e.job_id
          where j.kind = $1 and e.to_status = 'running'
          order by e.created_at",
    )
    .bind(kind)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The most starts in any window `[t, t + period)`.
fn fullest_window(starts: &[DateTime<Utc>], period: Duration) -> usize {
    let period = chrono::TimeDelta::from_std(period).unwrap();
    starts
        .iter()
        .map(|from| {
            starts
                .iter()
                .filter(|t| **t >= *from && **t < *from + period)
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn enqueue_many(queue: &Queue, users: &[Uuid], kind: &str, per_user: usize) -> Vec<Uuid> {
    declare_kinds(queue.pool(), &[kind]).await;
    let mut ids = Vec::new();
    for user in users {
        for _ in 0..per_user {
            ids.push(queue.enqueue(&job(*user, kind)).await.unwrap());
        }
    }
    ids
}

async fn succeeded(pool: &PgPool, kind: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from public.studio_jobs where kind = $1 and status = 'succeeded'",
    )
    .bind(kind)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn four_replicas_at_10_per_second_never_exceed_it_in_any_second_and_reach_it(pool: PgPool) {
    // Arrange: 40 rate-limited jobs (at least 3 s at 10/s) and 200 of a kind without a limit,
    // from four users.
    let queue = worker_queue(&pool).await;
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(create_user(&pool).await);
    }
    enqueue_many(&queue, &users, "render", 10).await;
    enqueue_many(&queue, &users, "thumb", 50).await;
    let stop = CancellationToken::new();
    let mut replicas = Vec::new();
    for _ in 0..4 {
        let mut registry = Registry::new();
        let mut render = KindRuntime::new(Succeeds, 4);
        render.limits.rate_limit = Some(rate("10/s"));
        registry.register("render", render);
        registry.register("thumb", KindRuntime::new(Succeeds, 4));
        let worker = Worker::new(
            Queue::new(worker_pool(&pool).await),
            registry,
            worker_settings(),
        );
        replicas.push(tokio::spawn(worker.run(stop.clone())));
    }

    // Act
    wait_for("every job to succeed", PATIENCE, || async {
        (succeeded(&pool, "render").await == 40 && succeeded(&pool, "thumb").await == 200)
            .then_some(())
    })
    .await;
    stop.cancel();
    for replica in replicas {
        replica.await.unwrap().unwrap();
    }

    // Assert: counted from the history.
    let render = starts(&pool, "render").await;
    assert_eq!(render.len(), 40, "one start per job");
    let span = *render.last().unwrap() - render[0];
    assert!(
        span >= chrono::TimeDelta::seconds(3),
        "40 at 10/s take 3 s at least: {span}"
    );
    assert_eq!(
        fullest_window(&render, Duration::from_secs(1)),
        10,
        "never more than 10 in a second, and the limit is reached"
    );
    let thumb = starts(&pool, "thumb").await;
    assert!(
        fullest_window(&thumb, Duration::from_secs(1)) > 10,
        "the kind without a limit is not held to the other's rate"
    );
    assert!(
        render[0] < thumb[thumb.len() / 2],
        "the rate-limited kind starts beside the other's backlog, not after it"
    );
    let log: i64 = sqlx::query_scalar(
        "select coalesce(sum(jobs), 0)::int8 from public.studio_kind_starts where kind = 'render'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(log, 40, "the log counts the history's starts");
}

fn request<'a>(me: &'a WorkerId, kinds: &'a [String], limit: u32) -> ClaimRequest<'a> {
    ClaimRequest {
        worker: me,
        kinds,
        limit,
        lease: LEASE,
        now: None,
    }
}

/// A policy whose rate lets the whole period's starts go at once (`rate_burst` = the count),
/// so a claim's batch shows what the period's window leaves.
fn rated(kind: &str, limit: &str) -> ClaimPolicy {
    let limit = rate(limit);
    ClaimPolicy {
        rate_by_kind: HashMap::from([(kind.to_owned(), limit.with_burst(limit.count()).unwrap())]),
        ..ClaimPolicy::default()
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_held_back_by_the_rate_stay_pending_without_a_write(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let render = enqueue_many(&queue, &[user], "render", 8).await;
    enqueue_many(&queue, &[user], "thumb", 3).await;
    let me = worker();
    let both = kinds(&["render", "thumb"]);
    let policy = rated("render", "5/min");

    let first = queue
        .claim_with(&request(&me, &both, 20), &policy)
        .await
        .unwrap();
    let mut cursor = ClaimCursor::default();
    let second = queue
        .claim_planned(&request(&me, &both, 20), &[20, 20], &policy, &mut cursor)
        .await;

    let count = |jobs: &[studio_worker::queue::ClaimedJob], kind: &str| {
        jobs.iter().filter(|j| j.kind == kind).count()
    };
    assert_eq!((count(&first, "render"), count(&first, "thumb")), (5, 3));
    assert!(second.jobs.is_empty() && second.error.is_none());
    let (kind, wait) = &second.rates[0];
    assert_eq!(kind, "render");
    let wait = wait.expect("held back by its rate: the next start is announced");
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(61),
        "{wait:?}"
    );
    let (untouched, events): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'pending' and attempt = 0 and updated_at = created_at),
                (select count(*) from public.studio_job_events where job_id = any($1))
           from public.studio_jobs where id = any($1) and status = 'pending'",
    )
    .bind(&render)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(untouched, 3, "the held-back jobs were not written");
    assert_eq!(events, 5, "history only for the 5 started");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_window_slides_a_period_after_the_starts(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    enqueue_many(&queue, &[user], "render", 8).await;
    let me = worker();
    let render = kinds(&["render"]);
    let policy = rated("render", "5/min");
    let start = Utc::now();
    let at = |secs: i64| ClaimRequest {
        now: Some(start + chrono::TimeDelta::seconds(secs)),
        ..request(&me, &render, 20)
    };

    let now = queue.claim_with(&at(0), &policy).await.unwrap();
    let within = queue.claim_with(&at(59), &policy).await.unwrap();
    let after = queue.claim_with(&at(61), &policy).await.unwrap();

    assert_eq!((now.len(), within.len(), after.len()), (5, 0, 3));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_rate_shares_its_starts_fairly_between_users(pool: PgPool) {
    let queue = worker_queue(&pool).await;
    let mut users = Vec::new();
    for _ in 0..3 {
        users.push(create_user(&pool).await);
    }
    enqueue_many(&queue, &users, "render", 5).await;
    let me = worker();
    let render = kinds(&["render"]);
    let policy = ClaimPolicy {
        order: ClaimOrder::Fair { after: Uuid::nil() },
        ..rated("render", "6/min")
    };

    let claimed = queue
        .claim_with(&request(&me, &render, 20), &policy)
        .await
        .unwrap();

    let mut per_user: HashMap<Uuid, usize> = HashMap::new();
    for job in &claimed {
        *per_user.entry(job.user_id).or_default() += 1;
    }
    assert_eq!(claimed.len(), 6);
    assert!(per_user.values().all(|n| *n == 2), "{per_user:?}");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_paused_kind_uses_none_of_its_rate(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    enqueue_many(&queue, &[user], "render", 12).await;
    let me = worker();
    let render = kinds(&["render"]);
    let policy = rated("render", "10/min");
    pauses(&queue).pause("render", Some("test")).await.unwrap();

    let paused = queue
        .claim_with(&request(&me, &render, 20), &policy)
        .await
        .unwrap();
    pauses(&queue).resume("render").await.unwrap();
    let resumed = queue
        .claim_with(&request(&me, &render, 20), &policy)
        .await
        .unwrap();

    assert_eq!((paused.len(), resumed.len()), (0, 10));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_running_cap_and_a_rate_both_hold(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    enqueue_many(&queue, &[user], "render", 20).await;
    let me = worker();
    let render = kinds(&["render"]);
    let policy = ClaimPolicy {
        max_running_by_kind: HashMap::from([("render".to_owned(), 2)]),
        ..rated("render", "7/min")
    };

    let mut rounds = Vec::new();
    for _ in 0..5 {
        let batch = queue
            .claim_with(&request(&me, &render, 20), &policy)
            .await
            .unwrap();
        rounds.push(batch.len());
        let done: Vec<_> = batch
            .iter()
            .map(|j| (j.id, j.attempt, json!(null)))
            .collect();
        let done: Vec<_> = done.iter().map(|(id, a, r)| (*id, *a, r)).collect();
        queue.complete_many(&me, &done).await.unwrap();
    }

    assert_eq!(rounds, vec![2, 2, 2, 1, 0], "2 at a time, 7 in the minute");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn users_and_anon_cannot_read_the_starts(pool: PgPool) {
    for role in ["anon", "authenticated"] {
        let mut tx = as_role(&pool, role).await;
        let read = sqlx::query("select * from public.studio_kind_starts")
            .execute(&mut *tx)
            .await;
        assert_eq!(sqlstate(read), "42501", "{role}");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_worker_held_back_by_a_rate_looks_again_when_the_next_start_is_allowed(pool: PgPool) {
    // No poll for an hour and slots to spare: only the rate's next start can wake the worker.
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let mut registry = Registry::new();
    let mut render = KindRuntime::new(Succeeds, 8);
    render.limits.rate_limit = Some(rate("2/s"));
    registry.register("render", render);
    let settings = studio_worker::config::WorkerSettings {
        concurrency: 8,
        poll_interval: Duration::from_secs(3600),
        ..worker_settings()
    };
    let stop = CancellationToken::new();
    let worker = Worker::new(Queue::new(worker_pool(&pool).await), registry, settings);
    let running = tokio::spawn(worker.run(stop.clone()));

    enqueue_many(&queue, &[user], "render", 6).await;
    wait_for(
        "the six jobs to succeed, two a second",
        PATIENCE,
        || async { (succeeded(&pool, "render").await == 6).then_some(()) },
    )
    .await;

    stop.cancel();
    running.await.unwrap().unwrap();
    let render = starts(&pool, "render").await;
    assert_eq!(fullest_window(&render, Duration::from_secs(1)), 2);
}

/// Waits until it is cancelled (a shutdown), holding its slot.
struct WaitsForCancel;

#[async_trait::async_trait]
impl Handler for WaitsForCancel {
    async fn run(&self, job: JobContext) -> Result<Value, HandlerError> {
        job.cancel.cancelled().await;
        Err(HandlerError::retryable("stopped"))
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn prefetch_claims_nothing_ahead_for_a_rate_limited_kind(pool: PgPool) {
    // Arrange: one slot and a prefetch of 4; the rate itself would allow all six at once.
    let queue = worker_queue(&pool).await;
    let user = create_user(&pool).await;
    enqueue_many(&queue, &[user], "render", 6).await;
    let mut registry = Registry::new();
    let mut render = KindRuntime::new(WaitsForCancel, 1);
    render.limits.rate_limit = Some(rate("100/s"));
    registry.register("render", render);
    let settings = studio_worker::config::WorkerSettings {
        concurrency: 1,
        prefetch: 4,
        ..worker_settings()
    };
    let worker = Worker::new(Queue::new(worker_pool(&pool).await), registry, settings);
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));

    // Act: the first claim (one statement) takes what the worker's room allows.
    let running = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from public.studio_jobs where status = 'running'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    wait_for("the first claim", PATIENCE, || async {
        (running().await > 0).then_some(())
    })
    .await;
    let claimed = running().await;
    stop.cancel();
    run.await.unwrap().unwrap();

    // Assert: only the job that could start; none held ahead to start in a later window.
    assert_eq!(claimed, 1);
}
