//! Paused kinds (migration 0013): every claim leaves them out, resume wakes idle workers.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::handlers::{Handler, HandlerError, JobContext, KindRuntime, Registry};
use studio_worker::queue::{ClaimOrder, ClaimPolicy, ClaimRequest, JobStatus};
use studio_worker::worker::Worker;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::{
    create_user, job, kinds, wait_for_status, worker, worker_queue, worker_settings,
};

/// The paused kinds over `queue`'s pool (pause moved to `control`).
fn pauses(queue: &studio_worker::queue::Queue) -> studio_worker::control::pause::Pauses {
    studio_worker::control::Control::new(queue.pool().clone()).pauses()
}

const LEASE: Duration = Duration::from_secs(30);
const PATIENCE: Duration = Duration::from_secs(10);

struct Succeeds;

#[async_trait::async_trait]
impl Handler for Succeeds {
    async fn run(&self, _job: JobContext) -> Result<Value, HandlerError> {
        Ok(json!("done"))
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_paused_kind_is_left_out_of_every_claim_while_other_kinds_are_claimed(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    assert!(pauses(&queue).pause("render", Some("test")).await.unwrap());
    assert!(!pauses(&queue).pause("render", Some("test")).await.unwrap());
    // Higher priority than the active kind's jobs: a pause must win over order.
    let mut paused = Vec::new();
    for _ in 0..3 {
        paused.push(
            queue
                .enqueue(&job(user, "render").priority(10))
                .await
                .unwrap(),
        );
    }
    let mut active = Vec::new();
    for _ in 0..3 {
        active.push(queue.enqueue(&job(user, "upscale")).await.unwrap());
    }
    let me = worker();
    let both = kinds(&["render", "upscale"]);
    let request = |limit| ClaimRequest {
        worker: &me,
        kinds: &both,
        limit,
        lease: LEASE,
        now: None,
    };

    let named = queue
        .claim_named(&request(10), &[paused[0], active[0]])
        .await
        .unwrap();
    assert_eq!(
        named.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![active[0]]
    );
    let fifo = queue.claim(&request(1)).await.unwrap();
    assert_eq!(
        fifo.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![active[1]]
    );
    let fair = ClaimPolicy {
        order: ClaimOrder::Fair { after: Uuid::nil() },
        ..ClaimPolicy::default()
    };
    let rest = queue.claim_with(&request(10), &fair).await.unwrap();
    assert_eq!(
        rest.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![active[2]]
    );
    assert!(queue.claim(&request(10)).await.unwrap().is_empty());
    for id in &paused {
        let job = queue.job(*id).await.unwrap();
        assert_eq!((job.status, job.attempt), (JobStatus::Pending, 0));
    }

    assert!(pauses(&queue).resume("render").await.unwrap());
    assert!(!pauses(&queue).resume("render").await.unwrap());
    let resumed = queue.claim(&request(10)).await.unwrap();
    assert_eq!(
        resumed.len(),
        3,
        "every job of the resumed kind is claimable"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_pause_does_not_stop_running_jobs_nor_users_inserts(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let running = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let render = kinds(&["render"]);
    let claimed = queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &render,
            limit: 1,
            lease: LEASE,
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(claimed[0].id, running);
    pauses(&queue).pause("render", None).await.unwrap();

    let mut tx = crate::harness::as_user(&pool, user).await;
    sqlx::query(
        "insert into public.studio_jobs (user_id, kind, input) values ($1, 'render', '{}')",
    )
    .bind(user)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let lease = claimed[0].lease(&me);
    queue.complete(&lease, &json!("fine")).await.unwrap();
    assert_eq!(
        queue.job(running).await.unwrap().status,
        JobStatus::Succeeded
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn an_invalid_kind_name_is_refused_and_nothing_changes(pool: PgPool) {
    let queue = worker_queue(&pool).await;
    let err = pauses(&queue).pause("Render!", None).await.unwrap_err();
    assert!(
        matches!(err, studio_worker::control::Error::InvalidKind(ref k) if k == "Render!"),
        "{err}"
    );
    let rows: i64 = sqlx::query_scalar("select count(*) from public.studio_paused_kinds")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn users_can_neither_read_nor_change_the_paused_kinds(pool: PgPool) {
    let user = create_user(&pool).await;
    pauses(&worker_queue(&pool).await)
        .pause("render", None)
        .await
        .unwrap();
    for role in ["anon", "authenticated"] {
        let mut tx = crate::harness::as_role(&pool, role).await;
        let read = sqlx::query("select * from public.studio_paused_kinds")
            .fetch_all(&mut *tx)
            .await;
        assert_eq!(crate::harness::sqlstate(read), "42501", "{role} reads");
        tx.rollback().await.unwrap();
    }
    let mut tx = crate::harness::as_user(&pool, user).await;
    let delete = sqlx::query("delete from public.studio_paused_kinds")
        .execute(&mut *tx)
        .await;
    assert_eq!(crate::harness::sqlstate(delete), "42501");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn resume_wakes_an_idle_worker_at_once(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    pauses(&queue).pause("render", None).await.unwrap();
    let mut registry = Registry::new();
    registry.register("render", KindRuntime::new(Succeeds, 2));
    registry.register("upscale", KindRuntime::new(Succeeds, 2));
    // Polling alone would take a minute: only the resume's notification can be in time.
    let settings = studio_worker::config::WorkerSettings {
        poll_interval: Duration::from_secs(60),
        ..worker_settings()
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Worker::new(queue.clone(), registry, settings).run(shutdown.clone()));

    let held = queue.enqueue(&job(user, "render")).await.unwrap();
    let other = queue.enqueue(&job(user, "upscale")).await.unwrap();
    // The worker claimed after both inserts (the upscale job ran) and left the paused job.
    wait_for_status(&queue, other, JobStatus::Succeeded, PATIENCE).await;
    let job = queue.job(held).await.unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Pending, 0));

    pauses(&queue).resume("render").await.unwrap();
    wait_for_status(&queue, held, JobStatus::Succeeded, PATIENCE).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
