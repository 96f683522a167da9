//! "Why isn't this job running?" (`control::why`): one test per reason, each making exactly that
//! reason hold, read through the worker's login role.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;
use studio_worker::control::kinds::Kinds;
use studio_worker::control::why::{Reason, WhyPolicy, why};
use studio_worker::limits::RateLimit;
use studio_worker::queue::{ClaimRequest, Failure, NewJob, Queue};
use uuid::Uuid;

use crate::harness::{create_user, worker, worker_queue};

/// A queue whose kind `render` has a live replica, and a user.
async fn served(pool: &PgPool) -> (Queue, Uuid) {
    let queue = worker_queue(pool).await;
    Kinds::new(queue.pool().clone())
        .register(&worker(), &["render".to_owned()], Duration::from_secs(600))
        .await
        .unwrap();
    let user = create_user(pool).await;
    (queue, user)
}

async fn enqueue(queue: &Queue, user: Uuid) -> Uuid {
    queue
        .enqueue(&NewJob::new(user, "render", json!({})))
        .await
        .unwrap()
}

/// Claim job `id` (it becomes running).
async fn run(queue: &Queue, id: Uuid) -> studio_worker::queue::Lease {
    let w = worker();
    let kinds = vec!["render".to_owned()];
    let claimed = queue
        .claim_named(
            &ClaimRequest {
                worker: &w,
                kinds: &kinds,
                limit: 1,
                lease: Duration::from_secs(60),
                now: None,
            },
            &[id],
        )
        .await
        .unwrap();
    claimed[0].lease(&w)
}

async fn reason(queue: &Queue, id: Uuid, policy: WhyPolicy) -> Reason {
    why(queue.pool(), id, &move |_| policy.clone(), None)
        .await
        .unwrap()
        .expect("the job exists")
}

fn fifo() -> WhyPolicy {
    WhyPolicy::default()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn nothing_holds_a_lone_due_job_of_a_served_kind(pool: PgPool) {
    let (queue, user) = served(&pool).await;
    let id = enqueue(&queue, user).await;
    assert_eq!(reason(&queue, id, fifo()).await, Reason::Next);
    assert!(
        why(queue.pool(), Uuid::new_v4(), &|_| fifo(), None)
            .await
            .unwrap()
            .is_none()
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_finished_job_is_not_waiting(pool: PgPool) {
    let (queue, user) = served(&pool).await;
    let id = enqueue(&queue, user).await;
    queue.cancel(id).await.unwrap();
    assert_eq!(
        reason(&queue, id, fifo()).await,
        Reason::NotPending {
            status: "cancelled".into()
        }
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_future_run_at_is_the_reason(pool: PgPool) {
    let (queue, user) = served(&pool).await;
    let at = Utc::now() + chrono::TimeDelta::hours(1);
    let mut job = NewJob::new(user, "render", json!({}));
    job.run_at = Some(at);
    let id = queue.enqueue(&job).await.unwrap();
    match reason(&queue, id, fifo()).await {
        Reason::Scheduled { at: due } => assert!((due - at).num_milliseconds().abs() < 5),
        other => panic!("{other:?}"),
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_failed_attempts_backoff_is_the_reason(pool: PgPool) {
    let (queue, user) = served(&pool).await;
    let id = enqueue(&queue, user).await;
    let lease = run(&queue, id).await;
    queue
        .fail(
            &lease,
            &Failure::Retryable {
                error: "busy".into(),
                delay: Duration::from_secs(3600),
            },
        )
        .await
        .unwrap();
    match reason(&queue, id, fifo()).await {
        Reason::RetryBackoff { until, attempt } => {
            assert_eq!(attempt, 1);
            assert!(until > Utc::now() + chrono::TimeDelta::minutes(59));
        }
        other => panic!("{other:?}"),
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_paused_kind_is_the_reason(pool: PgPool) {
    let (queue, user) = served(&pool).await;
    let id = enqueue(&queue, user).await;
    let pauses = studio_worker::control::Control::new(pool.clone()).pauses();
    pauses.pause("render", Some("ana")).await.unwrap();
    match reason(&queue, id, fifo()).await {
        Reason::Paused { kind, by, since } => {
            assert_eq!((kind.as_str(), by.as_deref()), ("render", Some("ana")));
            assert!(since.is_some());
        }
        other => panic!("{other:?}"),
    }
    pauses.resume("render").await.unwrap();
    assert_eq!(reason(&queue, id, fifo()).await, Reason::Next);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn no_live_replica_is_the_reason(pool: PgPool) {
    let queue = worker_queue(&pool).await;
    let user = create_user(&pool).await;
    let id = enqueue(&queue, user).await;
    assert_eq!(
        reason(&queue, id, fifo()).await,
        Reason::Unserved {
            kind: "render".into()
        }
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_kinds_running_cap_is_the_reason(pool: PgPool) {
    let (queue, user) = served(&pool).await;
    let first = enqueue(&queue, user).await;
    let id = enqueue(&queue, user).await;
    run(&queue, first).await;
    let capped = WhyPolicy {
        max_running: Some(1),
        ..fifo()
    };
    assert_eq!(
        reason(&queue, id, capped).await,
        Reason::KindCap {
            kind: "render".into(),
            running: 1,
            cap: 1
        }
    );
    let roomy = WhyPolicy {
        max_running: Some(2),
        ..fifo()
    };
    assert_eq!(reason(&queue, id, roomy).await, Reason::Next);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_users_running_cap_is_the_reason(pool: PgPool) {
    let (queue, user) = served(&pool).await;
    let first = enqueue(&queue, user).await;
    let id = enqueue(&queue, user).await;
    run(&queue, first).await;
    let policy = WhyPolicy {
        fair: true,
        max_running_per_user: Some(1),
        ..fifo()
    };
    assert_eq!(
        reason(&queue, id, policy).await,
        Reason::UserCap {
            user,
            running: 1,
            cap: 1
        }
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_full_rate_window_is_the_reason_until_its_oldest_start_leaves(pool: PgPool) {
    let (queue, user) = served(&pool).await;
    let id = enqueue(&queue, user).await;
    let started: chrono::DateTime<Utc> = sqlx::query_scalar(
        "insert into public.studio_kind_starts (kind, started_at, jobs)
         values ('render', now() - interval '10 minutes', 1) returning started_at",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let policy = WhyPolicy {
        rate_limit: Some(RateLimit::new(1, Duration::from_secs(3600)).unwrap()),
        ..fifo()
    };
    match reason(&queue, id, policy).await {
        Reason::RateLimited { kind, until, limit } => {
            assert_eq!(kind, "render");
            assert_eq!(until, started + chrono::TimeDelta::hours(1));
            assert_eq!(limit, "1/h");
        }
        other => panic!("{other:?}"),
    }
    // 2/h spreads its starts by default, one per half hour: the slice is the reason.
    let spread = WhyPolicy {
        rate_limit: Some(RateLimit::new(2, Duration::from_secs(3600)).unwrap()),
        ..fifo()
    };
    match reason(&queue, id, spread).await {
        Reason::RateLimited { until, .. } => {
            assert_eq!(until, started + chrono::TimeDelta::minutes(30));
        }
        other => panic!("{other:?}"),
    }
    let wider = WhyPolicy {
        rate_limit: Some(
            RateLimit::new(2, Duration::from_secs(3600))
                .unwrap()
                .with_burst(2)
                .unwrap(),
        ),
        ..fifo()
    };
    assert_eq!(reason(&queue, id, wider).await, Reason::Next);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_claimed_first_are_counted_in_fifo_and_in_fair_order(pool: PgPool) {
    let (queue, ana) = served(&pool).await;
    let bob = create_user(&pool).await;
    let ana_first = enqueue(&queue, ana).await;
    let ana_second = enqueue(&queue, ana).await;
    let bob_first = enqueue(&queue, bob).await;
    // FIFO: by priority and due time, whoever owns them.
    assert_eq!(reason(&queue, ana_first, fifo()).await, Reason::Next);
    assert_eq!(
        reason(&queue, bob_first, fifo()).await,
        Reason::Queued {
            ahead: 2,
            fair: false
        }
    );
    // Fair: bob's first job shares the first turn; ana's second waits for her first and for
    // bob's turn.
    let fair = WhyPolicy {
        fair: true,
        ..fifo()
    };
    assert_eq!(reason(&queue, bob_first, fair.clone()).await, Reason::Next);
    assert_eq!(
        reason(&queue, ana_second, fair).await,
        Reason::Queued {
            ahead: 2,
            fair: true
        }
    );
}
