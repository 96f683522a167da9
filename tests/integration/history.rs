//! The database's own state machine and history: illegal transitions are refused whoever tries
//! them, and every legal one leaves an event row.

use std::time::Duration;

use sqlx::PgPool;
use studio_worker::queue::{ClaimRequest, Failure, JobStatus};

use crate::harness::{as_role, create_user, job, kinds, sqlstate, worker, worker_queue};

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn every_transition_of_a_job_is_recorded_in_order(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let kinds = kinds(&["render"]);
    let claim = || ClaimRequest {
        worker: &me,
        kinds: &kinds,
        limit: 1,
        lease: Duration::from_secs(30),
        now: None,
    };

    let first = queue.claim(&claim()).await.unwrap().remove(0);
    queue
        .fail(
            &first.lease(&me),
            &Failure::Retryable {
                error: "flaky".into(),
                delay: Duration::ZERO,
            },
        )
        .await
        .unwrap();
    let second = queue.claim(&claim()).await.unwrap().remove(0);
    queue
        .complete(&second.lease(&me), &serde_json::json!({ "ok": true }))
        .await
        .unwrap();

    let events = queue.events(id).await.unwrap();
    let steps: Vec<_> = events
        .iter()
        .map(|e| (e.from_status, e.to_status, e.attempt, e.message.as_deref()))
        .collect();
    use JobStatus::*;
    assert_eq!(
        steps,
        vec![
            (Pending, Running, 1, None),
            (Running, Pending, 1, Some("flaky")),
            (Pending, Running, 2, None),
            (Running, Succeeded, 2, None),
        ]
    );
    assert!(events.iter().all(|e| e.user_id == user));
    assert!(
        events
            .iter()
            .all(|e| e.worker.as_deref() == Some(me.as_str()))
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn illegal_transitions_are_refused_even_for_privileged_writers(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let me = worker();
    let kinds = kinds(&["render"]);
    let pending = queue.enqueue(&job(user, "render")).await.unwrap();
    let done = queue.enqueue(&job(user, "render")).await.unwrap();
    let claimed = queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: 1,
            lease: Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap()
        .remove(0);
    // Claim order is by id for equal priority and run_at: `pending` was enqueued first.
    assert_eq!(claimed.id, pending);
    queue
        .complete(&claimed.lease(&me), &serde_json::json!({}))
        .await
        .unwrap();
    queue.cancel(done).await.unwrap();
    let (succeeded, cancelled) = (pending, done);

    let cases = [
        // succeeded -> running
        (
            "update public.studio_jobs set status = 'running', attempt = attempt + 1,
                    locked_by = 'x', lease_expires_at = now(), finished_at = null where id = $1",
            succeeded,
        ),
        // cancelled -> succeeded
        (
            "update public.studio_jobs set status = 'succeeded', attempt = 1, started_at = now()
              where id = $1",
            cancelled,
        ),
    ];
    for role in ["service_role", "postgres"] {
        for (statement, id) in cases {
            let mut tx = if role == "postgres" {
                pool.begin().await.unwrap()
            } else {
                as_role(&pool, role).await
            };
            let result = sqlx::query(statement).bind(id).execute(&mut *tx).await;
            assert_eq!(sqlstate(result), "55000", "{role}: {statement}");
        }
    }

    // pending -> succeeded without running, as the superuser
    let fresh = queue.enqueue(&job(user, "render")).await.unwrap();
    let skipped = sqlx::query(
        "update public.studio_jobs set status = 'succeeded', attempt = 1, started_at = now(),
                finished_at = now() where id = $1",
    )
    .bind(fresh)
    .execute(&pool)
    .await;
    assert_eq!(sqlstate(skipped), "55000");
    let message = sqlx::query(
        "update public.studio_jobs set status = 'succeeded', attempt = 1, started_at = now(),
                finished_at = now() where id = $1",
    )
    .bind(fresh)
    .execute(&pool)
    .await
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("illegal status transition pending -> succeeded"),
        "{message}"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_must_be_created_pending(pool: PgPool) {
    let user = create_user(&pool).await;
    let mut tx = as_role(&pool, "service_role").await;

    let result = sqlx::query(
        "insert into public.studio_jobs (user_id, kind, status, attempt, started_at, finished_at)
         values ($1, 'render', 'succeeded', 1, now(), now())",
    )
    .bind(user)
    .execute(&mut *tx)
    .await;

    assert_eq!(sqlstate(result), "55000");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn database_and_rust_agree_on_every_transition(pool: PgPool) {
    for from in JobStatus::ALL {
        for to in JobStatus::ALL {
            if from == to {
                continue;
            }
            for delta in [0, 1] {
                let allowed: bool = sqlx::query_scalar(
                    "select public.studio_job_transition_allowed($1, $2, 0, $3)",
                )
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(delta)
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(
                    allowed,
                    from.can_become(to, delta),
                    "{from} -> {to} (+{delta})"
                );
            }
        }
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn job_ids_and_owners_cannot_be_rewritten(pool: PgPool) {
    let alice = create_user(&pool).await;
    let bob = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(alice, "render")).await.unwrap();

    let result = sqlx::query("update public.studio_jobs set user_id = $2 where id = $1")
        .bind(id)
        .bind(bob)
        .execute(&pool)
        .await;

    assert_eq!(sqlstate(result), "23000");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn deleting_a_user_removes_their_jobs_and_history(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    queue.cancel(id).await.unwrap();

    sqlx::query("delete from auth.users where id = $1")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();

    let left: (i64, i64) = sqlx::query_as(
        "select (select count(*) from public.studio_jobs), (select count(*) from public.studio_job_events)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, (0, 0));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_bulk_insert_sends_one_wake_up_not_one_per_row(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let mut listener = listen(&pool, &["studio_jobs"]).await;
    let jobs: Vec<_> = (0..500).map(|_| job(user, "render")).collect();

    queue.enqueue_many(&jobs).await.unwrap();

    assert_eq!(
        received_until_marker(&pool, &mut listener).await,
        vec![("studio_jobs".to_owned(), "render".to_owned())]
    );
}

/// Everything `listener` received on its channels up to a marker sent after the statements
/// under test committed.
async fn received_until_marker(
    pool: &PgPool,
    listener: &mut sqlx::postgres::PgListener,
) -> Vec<(String, String)> {
    sqlx::query("select pg_notify('studio_jobs', 'marker')")
        .execute(pool)
        .await
        .unwrap();
    let mut received = Vec::new();
    loop {
        let notification = listener.recv().await.unwrap();
        if notification.payload() == "marker" {
            return received;
        }
        received.push((
            notification.channel().to_owned(),
            notification.payload().to_owned(),
        ));
    }
}

/// A connection listening on `channels`.
async fn listen(pool: &PgPool, channels: &[&str]) -> sqlx::postgres::PgListener {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .unwrap();
    listener.listen_all(channels.iter().copied()).await.unwrap();
    listener
}

/// Claim up to `limit` render jobs for `me`; returns each claimed job's lease by id.
async fn claim_render(
    queue: &studio_worker::queue::Queue,
    me: &studio_worker::queue::WorkerId,
    limit: u32,
) -> std::collections::HashMap<uuid::Uuid, studio_worker::queue::Lease> {
    let kinds = kinds(&["render"]);
    queue
        .claim(&ClaimRequest {
            worker: me,
            kinds: &kinds,
            limit,
            lease: Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap()
        .iter()
        .map(|c| (c.id, c.lease(me)))
        .collect()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn cancellation_requests_notify_the_worker_and_claims_and_completions_notify_nobody(
    pool: PgPool,
) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let first = queue.enqueue(&job(user, "render")).await.unwrap();
    let second = queue.enqueue(&job(user, "render")).await.unwrap();
    let third = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let mut listener = listen(&pool, &["studio_jobs", "studio_jobs_cancel"]).await;

    let leases = claim_render(&queue, &me, 3).await;
    assert_eq!(leases.len(), 3);
    queue
        .complete(&leases[&third], &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(received_until_marker(&pool, &mut listener).await, vec![]);

    // The owner cancels through the API function; an operator through the CLI's statement.
    crate::harness::cancel_as(&pool, user, first).await;
    queue.cancel(second).await.unwrap();
    // A second request for the same job is not news.
    queue.cancel(second).await.unwrap();

    let cancel = |id: uuid::Uuid| ("studio_jobs_cancel".to_owned(), id.to_string());
    assert_eq!(
        received_until_marker(&pool, &mut listener).await,
        vec![cancel(first), cancel(second)]
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_that_become_claimable_again_wake_workers_and_jobs_not_yet_due_do_not(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let retried = queue.enqueue(&job(user, "render")).await.unwrap();
    let requeued = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let leases = claim_render(&queue, &me, 2).await;
    let mut listener = listen(&pool, &["studio_jobs"]).await;

    // Due again at once (shutdown requeue): a wake-up.
    queue.requeue(&leases[&requeued]).await.unwrap();
    let wake = ("studio_jobs".to_owned(), String::new());
    assert_eq!(
        received_until_marker(&pool, &mut listener).await,
        vec![wake.clone()]
    );

    // Pending again but not due for an hour (retry backoff): nothing to wake anyone for.
    queue
        .fail(
            &leases[&retried],
            &Failure::Retryable {
                error: "busy".into(),
                delay: Duration::from_secs(3600),
            },
        )
        .await
        .unwrap();
    assert_eq!(received_until_marker(&pool, &mut listener).await, vec![]);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_single_insert_names_its_job_in_the_wake_up(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let mut listener = listen(&pool, &["studio_jobs"]).await;

    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    // Not due yet: nothing to take by key.
    queue
        .enqueue(&job(user, "render").run_at(chrono::Utc::now() + chrono::TimeDelta::hours(1)))
        .await
        .unwrap();

    let studio = |payload: String| ("studio_jobs".to_owned(), payload);
    assert_eq!(
        received_until_marker(&pool, &mut listener).await,
        vec![studio(format!("render,#{id}")), studio("render".to_owned())]
    );
}
