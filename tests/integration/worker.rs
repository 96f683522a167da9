//! The worker runtime in-process, with Rust handlers: panics, hangs, bad input, unknown kinds,
//! cancellation and shutdown all end in a recorded state, and the worker keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::handlers::{Handler, HandlerError, JobContext, KindRuntime, Registry};
use studio_worker::queue::{JobStatus, Queue};
use studio_worker::worker::Worker;
use tokio_util::sync::CancellationToken;

use crate::harness::{cancel_as, create_user, job, wait_for_status, worker_queue, worker_settings};

const PATIENCE: Duration = Duration::from_secs(15);

/// Succeeds with the frame count of a well-formed input.
struct Render;

#[derive(serde::Deserialize)]
struct RenderInput {
    frames: u32,
}

#[async_trait::async_trait]
impl Handler for Render {
    async fn run(&self, job: JobContext) -> Result<Value, HandlerError> {
        let input: RenderInput = job.input_as()?;
        job.progress(50, Some("halfway")).await;
        Ok(json!({ "frames": input.frames }))
    }
}

struct Panics;

#[async_trait::async_trait]
impl Handler for Panics {
    async fn run(&self, _job: JobContext) -> Result<Value, HandlerError> {
        panic!("renderer exploded");
    }
}

/// Waits for its cancellation, counting starts.
struct WaitsForCancel(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Handler for WaitsForCancel {
    async fn run(&self, job: JobContext) -> Result<Value, HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        job.cancel.cancelled().await;
        Err(HandlerError::retryable("stopped"))
    }
}

/// Ignores cancellation entirely.
struct Hangs;

#[async_trait::async_trait]
impl Handler for Hangs {
    async fn run(&self, _job: JobContext) -> Result<Value, HandlerError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(Value::Null)
    }
}

struct Sleeps(Duration);

#[async_trait::async_trait]
impl Handler for Sleeps {
    async fn run(&self, _job: JobContext) -> Result<Value, HandlerError> {
        tokio::time::sleep(self.0).await;
        Ok(json!("slept"))
    }
}

fn registry(kinds: Vec<(&str, KindRuntime)>) -> Registry {
    let mut registry = Registry::new();
    for (kind, executor) in kinds {
        registry.register(kind, executor);
    }
    registry
}

fn with_timeout(mut executor: KindRuntime, timeout: Duration) -> KindRuntime {
    executor.limits.timeout = timeout;
    executor
}

/// Start a worker over `queue`; returns its shutdown token and task.
fn start(
    queue: &Queue,
    registry: Registry,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    start_with(queue, registry, worker_settings())
}

/// Start a worker over `queue` with `settings`; returns its shutdown token and task.
fn start_with(
    queue: &Queue,
    registry: Registry,
    settings: studio_worker::config::WorkerSettings,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let worker = Worker::new(queue.clone(), registry, settings);
    let task = tokio::spawn(worker.run(shutdown.clone()));
    (shutdown, task)
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_panicking_handler_is_a_failed_attempt_and_the_worker_keeps_serving(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let (shutdown, task) = start(
        &queue,
        registry(vec![
            ("explode", KindRuntime::new(Panics, 2)),
            ("render", KindRuntime::new(Render, 2)),
        ]),
    );

    let boom = queue
        .enqueue(&job(user, "explode").max_attempts(1))
        .await
        .unwrap();
    let failed = wait_for_status(&queue, boom, JobStatus::Failed, PATIENCE).await;
    let fine = queue.enqueue(&job(user, "render")).await.unwrap();
    let done = wait_for_status(&queue, fine, JobStatus::Succeeded, PATIENCE).await;

    assert_eq!(
        failed.error.as_deref(),
        Some("the handler failed unexpectedly")
    );
    assert!(
        failed
            .error_detail
            .unwrap()
            .contains("handler panicked: renderer exploded")
    );
    assert_eq!(done.result, Some(json!({ "frames": 3 })));
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn malformed_input_fails_the_job_for_good_without_retries(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let (shutdown, task) = start(
        &queue,
        registry(vec![("render", KindRuntime::new(Render, 2))]),
    );

    let bad = queue
        .enqueue(&studio_worker::queue::NewJob::new(
            user,
            "render",
            json!({ "frames": "many" }),
        ))
        .await
        .unwrap();
    let failed = wait_for_status(&queue, bad, JobStatus::Failed, PATIENCE).await;

    assert_eq!(
        failed.attempt, 1,
        "a permanent error uses no further attempt"
    );
    assert!(failed.error.unwrap().contains("invalid input for render"));
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_hung_handler_is_stopped_at_its_timeout_and_retried(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let (shutdown, task) = start(
        &queue,
        registry(vec![(
            "hang",
            with_timeout(KindRuntime::new(Hangs, 1), Duration::from_millis(300)),
        )]),
    );

    let id = queue
        .enqueue(&job(user, "hang").max_attempts(1))
        .await
        .unwrap();
    let failed = wait_for_status(&queue, id, JobStatus::Failed, PATIENCE).await;

    assert!(failed.error.unwrap().contains("timed out after 300ms"));
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_of_kinds_without_an_executor_wait_untouched(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let (shutdown, task) = start(
        &queue,
        registry(vec![("render", KindRuntime::new(Render, 2))]),
    );

    let other = queue.enqueue(&job(user, "upscale")).await.unwrap();
    let mine = queue.enqueue(&job(user, "render")).await.unwrap();
    wait_for_status(&queue, mine, JobStatus::Succeeded, PATIENCE).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    let untouched = queue.job(other).await.unwrap();
    assert_eq!(untouched.status, JobStatus::Pending);
    assert_eq!(untouched.attempt, 0);
    assert!(queue.events(other).await.unwrap().is_empty());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_users_cancel_stops_the_running_job_and_records_cancelled(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let started = Arc::new(AtomicUsize::new(0));
    let (shutdown, task) = start(
        &queue,
        registry(vec![(
            "render",
            KindRuntime::new(WaitsForCancel(started.clone()), 2),
        )]),
    );
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    wait_for_status(&queue, id, JobStatus::Running, PATIENCE).await;

    cancel_as(&pool, user, id).await;

    let cancelled = wait_for_status(&queue, id, JobStatus::Cancelled, PATIENCE).await;
    assert_eq!(cancelled.attempt, 1);
    assert_eq!(started.load(Ordering::SeqCst), 1, "cancelled, not retried");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn shutdown_lets_short_jobs_finish_and_requeues_the_rest_without_using_an_attempt(
    pool: PgPool,
) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let started = Arc::new(AtomicUsize::new(0));
    let (shutdown, task) = start(
        &queue,
        registry(vec![
            (
                "quick",
                KindRuntime::new(Sleeps(Duration::from_millis(300)), 2),
            ),
            (
                "endless",
                KindRuntime::new(WaitsForCancel(started.clone()), 2),
            ),
        ]),
    );
    let endless = queue.enqueue(&job(user, "endless")).await.unwrap();
    let quick = queue.enqueue(&job(user, "quick")).await.unwrap();
    wait_for_status(&queue, endless, JobStatus::Running, PATIENCE).await;
    wait_for_status(&queue, quick, JobStatus::Running, PATIENCE).await;

    shutdown.cancel();
    task.await.unwrap().unwrap();

    assert_eq!(queue.job(quick).await.unwrap().status, JobStatus::Succeeded);
    let requeued = queue.job(endless).await.unwrap();
    assert_eq!(requeued.status, JobStatus::Pending);
    assert_eq!(requeued.attempt, 0, "the interrupted attempt is given back");
    let last = queue.events(endless).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.from_status, last.to_status),
        (JobStatus::Running, JobStatus::Pending)
    );
    assert!(last.message.unwrap().contains("shut down"));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_handler_that_ignores_cancellation_is_aborted_and_requeued_at_shutdown(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let (shutdown, task) = start(&queue, registry(vec![("hang", KindRuntime::new(Hangs, 1))]));
    let id = queue.enqueue(&job(user, "hang")).await.unwrap();
    wait_for_status(&queue, id, JobStatus::Running, PATIENCE).await;

    shutdown.cancel();
    task.await.unwrap().unwrap();

    let requeued = queue.job(id).await.unwrap();
    assert_eq!(requeued.status, JobStatus::Pending);
    assert_eq!(requeued.attempt, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn progress_reported_by_a_handler_is_visible_on_the_job(pool: PgPool) {
    struct Reports;
    #[async_trait::async_trait]
    impl Handler for Reports {
        async fn run(&self, job: JobContext) -> Result<Value, HandlerError> {
            job.progress(40, Some("frame 2 of 5")).await;
            job.cancel.cancelled().await;
            Err(HandlerError::retryable("stopped"))
        }
    }
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let (shutdown, task) = start(
        &queue,
        registry(vec![("render", KindRuntime::new(Reports, 1))]),
    );
    let id = queue.enqueue(&job(user, "render")).await.unwrap();

    let row = crate::harness::wait_for("progress 40", PATIENCE, || async {
        queue.job(id).await.ok().filter(|j| j.progress == 40)
    })
    .await;

    assert_eq!(row.progress_message.as_deref(), Some("frame 2 of 5"));
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn poll_only_mode_still_picks_jobs_up(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let settings = studio_worker::config::WorkerSettings {
        listen: false,
        ..worker_settings()
    };
    let (shutdown, task) = start_with(
        &queue,
        registry(vec![("render", KindRuntime::new(Render, 2))]),
        settings,
    );

    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    wait_for_status(&queue, id, JobStatus::Succeeded, PATIENCE).await;

    let listeners: i64 = sqlx::query_scalar("select count(*) from pg_stat_activity where datname = current_database() and query ilike 'listen%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(listeners, 0, "no LISTEN in poll-only mode");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn retention_prunes_old_finished_jobs_in_the_daemon(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let old = queue.enqueue(&job(user, "upscale")).await.unwrap();
    queue.cancel(old).await.unwrap();
    let waiting = queue.enqueue(&job(user, "upscale")).await.unwrap();
    sqlx::query(
        "update public.studio_jobs set finished_at = now() - interval '2 days' where id = $1",
    )
    .bind(old)
    .execute(&pool)
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        queue.clone(),
        registry(vec![("render", KindRuntime::new(Render, 1))]),
        worker_settings(),
    )
    .with_retention(studio_worker::config::RetentionSettings {
        enabled: true,
        older_than: Duration::from_secs(86_400),
        interval: Duration::from_millis(100),
        batch_size: 10,
    });
    let task = tokio::spawn(worker.run(shutdown.clone()));

    crate::harness::wait_for("the old job to be pruned", PATIENCE, || async {
        matches!(
            queue.job(old).await,
            Err(studio_worker::queue::Error::NotFound(_))
        )
        .then_some(())
    })
    .await;

    assert_eq!(queue.job(waiting).await.unwrap().status, JobStatus::Pending);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn prefetched_jobs_that_never_started_are_given_back_at_shutdown(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let started = Arc::new(AtomicUsize::new(0));
    let settings = studio_worker::config::WorkerSettings {
        concurrency: 1,
        prefetch: 3,
        ..worker_settings()
    };
    let jobs: Vec<_> = (0..4).map(|_| job(user, "render")).collect();
    let ids = queue.enqueue_many(&jobs).await.unwrap();
    let (shutdown, task) = start_with(
        &queue,
        registry(vec![(
            "render",
            KindRuntime::new(WaitsForCancel(started.clone()), 1),
        )]),
        settings,
    );
    crate::harness::wait_for("four claimed, one started", PATIENCE, || async {
        let running = sqlx::query_scalar::<_, i64>(
            "select count(*) from public.studio_jobs where status = 'running'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (running == 4 && started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    shutdown.cancel();
    task.await.unwrap().unwrap();

    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "only one slot: the others never ran"
    );
    for id in ids {
        let job = queue.job(id).await.unwrap();
        assert_eq!(
            (job.status, job.attempt),
            (JobStatus::Pending, 0),
            "job {id}"
        );
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_result_the_database_refuses_fails_that_job_and_no_other(pool: PgPool) {
    struct NulResult;
    #[async_trait::async_trait]
    impl Handler for NulResult {
        async fn run(&self, _job: JobContext) -> Result<Value, HandlerError> {
            // jsonb cannot hold \u0000: the completion statement is refused.
            Ok(json!({ "text": "a\u{0}b" }))
        }
    }
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let (shutdown, task) = start(
        &queue,
        registry(vec![
            ("bad", KindRuntime::new(NulResult, 2)),
            ("render", KindRuntime::new(Render, 2)),
        ]),
    );
    let jobs: Vec<_> = (0..6)
        .map(|i| job(user, if i % 3 == 0 { "bad" } else { "render" }))
        .collect();
    let ids = queue.enqueue_many(&jobs).await.unwrap();

    for (i, id) in ids.iter().enumerate() {
        if i % 3 == 0 {
            let failed = wait_for_status(&queue, *id, JobStatus::Failed, PATIENCE).await;
            assert!(
                failed
                    .error
                    .unwrap()
                    .contains("the result could not be stored")
            );
            assert_eq!(failed.attempt, 1);
        } else {
            wait_for_status(&queue, *id, JobStatus::Succeeded, PATIENCE).await;
        }
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Executions, and the most that ran at once.
#[derive(Default)]
struct Overlap {
    running: AtomicUsize,
    most: AtomicUsize,
    runs: AtomicUsize,
}

struct CountsOverlap(Arc<Overlap>);

#[async_trait::async_trait]
impl Handler for CountsOverlap {
    async fn run(&self, _job: JobContext) -> Result<Value, HandlerError> {
        let now = self.0.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.most.fetch_max(now, Ordering::SeqCst);
        self.0.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        Ok(Value::Null)
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn prefetched_jobs_run_once_each_and_never_beyond_the_concurrency(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let counts = Arc::new(Overlap::default());
    let settings = studio_worker::config::WorkerSettings {
        concurrency: 2,
        prefetch: 6,
        ..worker_settings()
    };
    let jobs: Vec<_> = (0..60).map(|_| job(user, "render")).collect();
    queue.enqueue_many(&jobs).await.unwrap();
    let (shutdown, task) = start_with(
        &queue,
        registry(vec![(
            "render",
            KindRuntime::new(CountsOverlap(counts.clone()), 2),
        )]),
        settings,
    );

    crate::harness::wait_for("all sixty succeeded", PATIENCE, || async {
        let done = sqlx::query_scalar::<_, i64>(
            "select count(*) from public.studio_jobs where status = 'succeeded'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (done == 60).then_some(())
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    assert_eq!(counts.runs.load(Ordering::SeqCst), 60);
    assert_eq!(counts.most.load(Ordering::SeqCst), 2);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_job_falling_due_is_found_while_single_inserts_keep_waking_the_worker(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let (shutdown, task) = start(
        &queue,
        registry(vec![(
            "render",
            KindRuntime::new(Sleeps(Duration::from_millis(1)), 4),
        )]),
    );
    // Falls due in 300 ms; nothing announces that moment.
    let delayed = queue
        .enqueue(
            &job(user, "render").run_at(chrono::Utc::now() + chrono::TimeDelta::milliseconds(300)),
        )
        .await
        .unwrap();
    // Meanwhile a single insert every 50 ms (faster than the 200 ms poll interval) keeps waking
    // the worker with jobs named by id.
    let stop = CancellationToken::new();
    let stream = {
        let (queue, stop) = (queue.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                queue.enqueue(&job(user, "render")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    wait_for_status(&queue, delayed, JobStatus::Succeeded, PATIENCE).await;

    stop.cancel();
    stream.await.unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Returns at once the first time, then waits for its cancellation (counting starts).
struct FirstQuick(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Handler for FirstQuick {
    async fn run(&self, job: JobContext) -> Result<Value, HandlerError> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            return Ok(Value::Null);
        }
        job.cancel.cancelled().await;
        Err(HandlerError::retryable("stopped"))
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Adaptive prefetch (issue 19): once a kind's jobs are seen to be short, the worker claims
/// ahead of its free slots without `worker.prefetch`, up to the cap (512 for one slot).
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn short_jobs_are_claimed_ahead_without_any_prefetch_setting(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let started = Arc::new(AtomicUsize::new(0));
    let settings = studio_worker::config::WorkerSettings {
        concurrency: 1,
        prefetch: 0,
        // Generous, so that a slow test machine still sees the first job as short.
        prefetch_wait: Duration::from_secs(1),
        ..worker_settings()
    };
    let first = queue.enqueue(&job(user, "quick")).await.unwrap();
    let (shutdown, task) = start_with(
        &queue,
        registry(vec![(
            "quick",
            KindRuntime::new(FirstQuick(started.clone()), 1),
        )]),
        settings,
    );
    wait_for_status(&queue, first, JobStatus::Succeeded, PATIENCE).await;

    let jobs: Vec<_> = (0..600).map(|_| job(user, "quick")).collect();
    queue.enqueue_many(&jobs).await.unwrap();

    crate::harness::wait_for("one running and 512 claimed ahead", PATIENCE, || async {
        let running = count(
            &pool,
            "select count(*) from public.studio_jobs where status = 'running'",
        )
        .await;
        (running == 513 && started.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    assert_eq!(
        count(
            &pool,
            "select count(*) from public.studio_jobs where status = 'pending'"
        )
        .await,
        87,
        "one slot and 512 ahead: the last 87 wait"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Adaptive prefetch (issue 19): a kind whose jobs run long here claims nothing ahead, so a
/// second replica with a free slot gets the next job instead of it waiting in the first
/// replica's buffer.
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn long_jobs_are_not_claimed_ahead_while_another_replica_has_a_free_slot(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let settings = || studio_worker::config::WorkerSettings {
        concurrency: 1,
        prefetch: 0,
        prefetch_wait: Duration::from_millis(5),
        ..worker_settings()
    };
    let long = || KindRuntime::new(Sleeps(Duration::from_millis(400)), 1);
    // The first replica learns how long these jobs take.
    let first = queue.enqueue(&job(user, "long")).await.unwrap();
    let (stop_a, a) = start_with(&queue, registry(vec![("long", long())]), settings());
    wait_for_status(&queue, first, JobStatus::Succeeded, PATIENCE).await;

    let jobs: Vec<_> = (0..3).map(|_| job(user, "long")).collect();
    queue.enqueue_many(&jobs).await.unwrap();
    crate::harness::wait_for("the first replica runs one", PATIENCE, || async {
        let running = count(
            &pool,
            "select count(*) from public.studio_jobs where status = 'running'",
        )
        .await;
        (running > 0).then_some(())
    })
    .await;
    let (stop_b, b) = start_with(&queue, registry(vec![("long", long())]), settings());

    crate::harness::wait_for("each replica runs one", PATIENCE, || async {
        let workers = count(
            &pool,
            "select count(distinct locked_by) from public.studio_jobs where status = 'running'",
        )
        .await;
        (workers == 2).then_some(())
    })
    .await;
    stop_a.cancel();
    stop_b.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

/// Issue 19's stall: a worker whose successes cannot be written must stop claiming. A slot
/// frees when its outcome is written or queued for the writer, so the jobs it holds (running,
/// leased, renewed by every heartbeat) stay bounded by its slots, its prefetch and the
/// writer's queue, instead of growing to the whole backlog.
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_worker_whose_completions_are_stuck_stops_claiming(pool: PgPool) {
    const JOBS: i64 = 4_000;
    // Fault injection, as the table's owner: every write of a success waits for a lock that
    // this test holds. Claims never write `succeeded`, so they go on unhindered.
    sqlx::raw_sql(
        "create function public.test_hold_successes() returns trigger language plpgsql as
           $$ begin perform pg_advisory_xact_lock_shared(4242); return new; end $$;
         create trigger test_hold_successes before update on public.studio_jobs
           for each row when (new.status = 'succeeded')
           execute function public.test_hold_successes();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("select pg_advisory_lock(4242)")
        .execute(&mut *holder)
        .await
        .unwrap();

    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let jobs: Vec<_> = (0..JOBS).map(|_| job(user, "render")).collect();
    queue.enqueue_many(&jobs).await.unwrap();
    let settings = studio_worker::config::WorkerSettings {
        concurrency: 2,
        ..worker_settings()
    };
    let (shutdown, task) = start_with(
        &queue,
        registry(vec![(
            "render",
            KindRuntime::new(Sleeps(Duration::ZERO), 2),
        )]),
        settings.clone(),
    );
    let running = || {
        count(
            &pool,
            "select count(*) from public.studio_jobs where status = 'running'",
        )
    };
    // Claims stop at some count (the bound depends on the writer's queue and the prefetch
    // this kind earns); without the bound they stop only when every job is claimed. Nothing
    // announces that claims stopped, so the count must hold through many of the worker's
    // polls (each would claim if it had room).
    let plateau = crate::harness::wait_for("claims to stop", PATIENCE, || async {
        let before = running().await;
        tokio::time::sleep(settings.poll_interval * 5).await;
        (before > 0 && running().await == before).then_some(before)
    })
    .await;
    assert!(
        plateau < JOBS / 2,
        "{plateau} of {JOBS} jobs claimed while completions were stuck"
    );

    sqlx::query("select pg_advisory_unlock(4242)")
        .execute(&mut *holder)
        .await
        .unwrap();
    crate::harness::wait_for("every job to succeed", PATIENCE, || async {
        let done = count(
            &pool,
            "select count(*) from public.studio_jobs where status = 'succeeded'",
        )
        .await;
        (done == JOBS).then_some(())
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
