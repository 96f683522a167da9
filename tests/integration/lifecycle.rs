//! The queue's transitions: enqueue, claim, complete, fail/retry, cancel, requeue, rescue.

use std::time::Duration;

use chrono::{SubsecRound, TimeDelta, Utc};
use serde_json::json;
use sqlx::PgPool;
use studio_worker::queue::{
    ClaimRequest, ClaimedJob, Error, FailOutcome, Failure, JobStatus, NewJob, Queue, WorkerId,
};

use crate::harness::{create_user, declare_kinds, job, kinds, worker, worker_queue};

const LEASE: Duration = Duration::from_secs(30);
/// How long the tests let a renewal run in the database (see `Queue::heartbeat`).
const RENEWAL_WITHIN: Duration = Duration::from_secs(10);

async fn claim_one(queue: &Queue, me: &WorkerId, kind: &str) -> ClaimedJob {
    let kinds = kinds(&[kind]);
    let mut claimed = queue
        .claim(&ClaimRequest {
            worker: me,
            kinds: &kinds,
            limit: 1,
            lease: LEASE,
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "expected one claimable {kind} job");
    claimed.remove(0)
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn claim_takes_a_lease_for_this_worker_and_attempt(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();

    let claimed = claim_one(&queue, &me, "render").await;

    assert_eq!(claimed.id, id);
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.input, json!({ "frames": 3 }));
    let row = queue.job(id).await.unwrap();
    assert_eq!(row.status, JobStatus::Running);
    assert_eq!(row.locked_by.as_deref(), Some(me.as_str()));
    let lease_left = row.lease_expires_at.unwrap() - row.started_at.unwrap();
    assert_eq!(lease_left, TimeDelta::seconds(30));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn complete_records_the_result_and_ends_the_lease(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let claimed = claim_one(&queue, &me, "render").await;

    queue
        .complete(&claimed.lease(&me), &json!({ "url": "s3://out.png" }))
        .await
        .unwrap();

    let row = queue.job(id).await.unwrap();
    assert_eq!(row.status, JobStatus::Succeeded);
    assert_eq!(row.result, Some(json!({ "url": "s3://out.png" })));
    assert_eq!(row.progress, 100);
    assert!(row.finished_at.is_some());
    assert_eq!(row.locked_by, None);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_stale_lease_cannot_complete_fail_or_progress(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let claimed = claim_one(&queue, &me, "render").await;
    let stranger = worker();
    let wrong_worker = claimed.lease(&stranger);
    let mut wrong_attempt = claimed.lease(&me);
    wrong_attempt.attempt += 1;

    for lease in [&wrong_worker, &wrong_attempt] {
        let completed = queue.complete(lease, &json!({})).await;
        assert!(
            matches!(completed, Err(Error::LeaseLost { .. })),
            "{completed:?}"
        );
        let failed = queue
            .fail(lease, &Failure::Permanent { error: "x".into() })
            .await;
        assert!(matches!(failed, Err(Error::LeaseLost { .. })), "{failed:?}");
        let progress = queue.progress(lease, 50, None).await;
        assert!(
            matches!(progress, Err(Error::LeaseLost { .. })),
            "{progress:?}"
        );
    }
    assert_eq!(
        queue.job(claimed.id).await.unwrap().status,
        JobStatus::Running
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn retryable_failure_backs_off_then_fails_when_attempts_run_out(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue
        .enqueue(&job(user, "render").max_attempts(2))
        .await
        .unwrap();
    let me = worker();

    let first = claim_one(&queue, &me, "render").await;
    let before = Utc::now();
    let outcome = queue
        .fail(
            &first.lease(&me),
            &Failure::Retryable {
                error: "GPU busy".into(),
                delay: Duration::from_secs(60),
            },
        )
        .await
        .unwrap();
    let FailOutcome::Retrying { run_at } = outcome else {
        panic!("expected a retry, got {outcome:?}");
    };
    assert!(
        run_at >= before + TimeDelta::seconds(59),
        "backed off: {run_at}"
    );
    let kinds = kinds(&["render"]);
    let early = queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: 10,
            lease: LEASE,
            now: None,
        })
        .await
        .unwrap();
    assert!(early.is_empty(), "not claimable before run_at");

    let second = queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: 10,
            lease: LEASE,
            now: Some(run_at + TimeDelta::seconds(1)),
        })
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt, 2);
    let outcome = queue
        .fail(
            &second[0].lease(&me),
            &Failure::Retryable {
                error: "GPU busy again".into(),
                delay: Duration::from_secs(60),
            },
        )
        .await
        .unwrap();

    assert_eq!(outcome, FailOutcome::Failed);
    let row = queue.job(id).await.unwrap();
    assert_eq!(row.status, JobStatus::Failed);
    assert_eq!(row.error.as_deref(), Some("GPU busy again"));
    assert_eq!(row.attempt, 2);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn permanent_error_fails_the_job_without_retry(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let claimed = claim_one(&queue, &me, "render").await;

    let outcome = queue
        .fail(
            &claimed.lease(&me),
            &Failure::Permanent {
                error: "input.scene is missing".into(),
            },
        )
        .await
        .unwrap();

    assert_eq!(outcome, FailOutcome::Failed);
    let row = queue.job(id).await.unwrap();
    assert_eq!(row.status, JobStatus::Failed);
    assert_eq!(row.attempt, 1);
    assert!(
        row.attempt < row.max_attempts,
        "attempts were left but not used"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn expired_lease_is_rescued_to_pending_then_failed_when_attempts_run_out(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue
        .enqueue(&job(user, "render").max_attempts(2))
        .await
        .unwrap();
    let crashed = worker();
    let claimed = claim_one(&queue, &crashed, "render").await;
    let after_lease = claimed.lease_expires_at.unwrap() + TimeDelta::seconds(1);

    assert!(
        queue.rescue_expired(100, None).await.unwrap().is_empty(),
        "lease still valid"
    );
    let rescued = queue.rescue_expired(100, Some(after_lease)).await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].status, JobStatus::Pending);
    assert_eq!(rescued[0].previous_worker, crashed.as_str());
    let late = queue.complete(&claimed.lease(&crashed), &json!({})).await;
    assert!(
        matches!(late, Err(Error::LeaseLost { .. })),
        "the crashed worker's lease is gone"
    );

    let second = claim_one(&queue, &worker(), "render").await;
    assert_eq!(second.attempt, 2);
    let after_second = second.lease_expires_at.unwrap() + TimeDelta::seconds(1);
    let rescued = queue.rescue_expired(100, Some(after_second)).await.unwrap();

    assert_eq!(rescued[0].status, JobStatus::Failed);
    let row = queue.job(id).await.unwrap();
    assert_eq!(row.status, JobStatus::Failed);
    assert!(row.error.unwrap().contains("lease expired"));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn concurrent_rescuers_rescue_each_expired_job_exactly_once(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let jobs: Vec<NewJob> = (0..200).map(|_| job(user, "render")).collect();
    queue.enqueue_many(&jobs).await.unwrap();
    let crashed = worker();
    let kinds = kinds(&["render"]);
    let claimed = queue
        .claim(&ClaimRequest {
            worker: &crashed,
            kinds: &kinds,
            limit: 200,
            lease: LEASE,
            now: None,
        })
        .await
        .unwrap();
    let later = Some(Utc::now() + TimeDelta::minutes(5));
    assert_eq!(claimed.len(), 200);

    let rescuers = (0..6).map(|_| {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = queue.rescue_expired(7, later).await.unwrap();
                if batch.is_empty() {
                    break mine;
                }
                mine.extend(batch.into_iter().map(|r| r.id));
            }
        })
    });
    let mut all = Vec::new();
    for rescuer in rescuers {
        all.extend(rescuer.await.unwrap());
    }

    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, 200, "every expired job rescued");
    assert_eq!(all.len(), 200, "no job rescued twice");
    let events: i64 = sqlx::query_scalar(
        "select count(*) from public.studio_job_events where from_status = 'running' and to_status = 'pending'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(events, 200);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn requeue_on_shutdown_gives_the_attempt_back(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let claimed = claim_one(&queue, &me, "render").await;

    let status = queue.requeue(&claimed.lease(&me)).await.unwrap();

    assert_eq!(status, JobStatus::Pending);
    let row = queue.job(id).await.unwrap();
    assert_eq!(row.status, JobStatus::Pending);
    assert_eq!(row.attempt, 0);
    assert_eq!(claim_one(&queue, &me, "render").await.attempt, 1);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn cancellation_request_reaches_the_worker_and_ends_cancelled(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let claimed = claim_one(&queue, &me, "render").await;
    let lease = claimed.lease(&me);
    assert!(!queue.progress(&lease, 10, Some("frame 1")).await.unwrap());

    queue.cancel(id).await.unwrap();

    assert!(queue.progress(&lease, 20, Some("frame 2")).await.unwrap());
    let held = queue
        .heartbeat(
            &me,
            &[(lease.job_id, lease.attempt)],
            LEASE,
            None,
            RENEWAL_WITHIN,
        )
        .await
        .unwrap();
    assert!(held[0].cancel_requested);
    // A retryable failure after a cancellation request ends cancelled, not pending.
    let outcome = queue
        .fail(
            &lease,
            &Failure::Retryable {
                error: "interrupted".into(),
                delay: Duration::ZERO,
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::Cancelled);
    assert_eq!(queue.job(id).await.unwrap().status, JobStatus::Cancelled);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn worker_acknowledges_cancellation_of_a_running_job(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let claimed = claim_one(&queue, &me, "render").await;
    queue.cancel(id).await.unwrap();

    queue
        .cancel_running(&claimed.lease(&me), "cancelled by user")
        .await
        .unwrap();

    let row = queue.job(id).await.unwrap();
    assert_eq!(row.status, JobStatus::Cancelled);
    assert!(row.finished_at.is_some());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn heartbeat_extends_only_leases_still_held(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    queue.enqueue(&job(user, "render")).await.unwrap();
    queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let kinds = kinds(&["render"]);
    let claimed = queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: 2,
            lease: LEASE,
            now: None,
        })
        .await
        .unwrap();
    let (kept, lost) = (&claimed[0], &claimed[1]);
    queue.requeue(&lost.lease(&me)).await.unwrap();
    let later = (Utc::now() + TimeDelta::minutes(10)).trunc_subsecs(6);

    let held = queue
        .heartbeat(
            &me,
            &[(kept.id, kept.attempt), (lost.id, lost.attempt)],
            LEASE,
            Some(later),
            RENEWAL_WITHIN,
        )
        .await
        .unwrap();

    assert_eq!(held.len(), 1);
    assert_eq!(held[0].job_id, kept.id);
    let row = queue.job(kept.id).await.unwrap();
    assert_eq!(
        row.lease_expires_at.unwrap(),
        later + TimeDelta::seconds(30)
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_renewal_held_up_past_its_patience_is_cancelled_in_the_database(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let claimed = claim_one(&queue, &me, "render").await;
    // Another session holds the job's row, so the renewal waits for its lock.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("select 1 from public.studio_jobs where id = $1 for update")
        .bind(claimed.id)
        .execute(&mut *holder)
        .await
        .unwrap();

    let leases = [(claimed.id, claimed.attempt)];
    let renewal = queue.heartbeat(&me, &leases, LEASE, None, Duration::from_millis(200));
    // Without the database's limit the renewal would wait for the holder as long as it lasts.
    let err = tokio::time::timeout(Duration::from_secs(20), renewal)
        .await
        .expect("the database should give the renewal up")
        .unwrap_err();

    match &err {
        studio_worker::queue::Error::Db(sqlx::Error::Database(db)) => {
            assert_eq!(db.code().as_deref(), Some("57014"), "{err}");
        }
        other => panic!("expected the database's cancellation, got {other:?}"),
    }
    // Nothing of it is left waiting in the server, holding or queueing for locks.
    let waiting: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity
          where datname = current_database() and query like '%set lease_expires_at%'
            and state <> 'idle' and pid <> pg_backend_pid()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(waiting, 0);
    holder.rollback().await.unwrap();
    // The connection it used serves the next renewal, which lands.
    let held = queue
        .heartbeat(&me, &leases, LEASE, None, RENEWAL_WITHIN)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn operator_retry_brings_a_failed_job_back_with_an_attempt_left(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue
        .enqueue(&job(user, "render").max_attempts(1))
        .await
        .unwrap();
    let me = worker();
    let claimed = claim_one(&queue, &me, "render").await;
    queue
        .fail(
            &claimed.lease(&me),
            &Failure::Permanent {
                error: "boom".into(),
            },
        )
        .await
        .unwrap();

    let retried = queue.retry(id).await.unwrap();

    assert_eq!(retried.status, JobStatus::Pending);
    assert_eq!(retried.max_attempts, 2);
    assert_eq!(retried.error, None);
    assert_eq!(claim_one(&queue, &me, "render").await.attempt, 2);
    let again = queue.retry(id).await;
    assert!(
        matches!(
            again,
            Err(Error::WrongStatus {
                status: JobStatus::Running,
                ..
            })
        ),
        "{again:?}"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn enqueue_for_an_unknown_user_names_the_user(pool: PgPool) {
    declare_kinds(&pool, &["render"]).await;
    let queue = worker_queue(&pool).await;
    let ghost = uuid::Uuid::new_v4();

    let one = queue.enqueue(&job(ghost, "render")).await;
    let many = queue.enqueue_many(&[job(ghost, "render")]).await;

    for result in [one.map(|_| ()), many.map(|_| ())] {
        match result {
            Err(Error::UnknownUser(user)) => assert_eq!(user, Some(ghost)),
            other => panic!("expected UnknownUser, got {other:?}"),
        }
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn invalid_jobs_are_refused_with_the_constraint_named(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    // Pseudo-random letters: TOAST compression cannot shrink them under the 1 MiB limit.
    let mut seed: u64 = 42;
    let noise: String = (0..1_100_000)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(b'a' + ((seed >> 33) % 26) as u8)
        })
        .collect();
    let huge = json!({ "blob": noise });

    for (bad, constraint) in [
        (
            NewJob::new(user, "Render Job!", json!({})),
            "studio_jobs_kind_format",
        ),
        (
            job(user, "render").priority(1000),
            "studio_jobs_priority_range",
        ),
        (
            job(user, "render").max_attempts(0),
            "studio_jobs_attempts_range",
        ),
        (
            NewJob::new(user, "render", huge.clone()),
            "studio_jobs_input_size",
        ),
    ] {
        match queue.enqueue(&bad).await {
            Err(Error::InvalidJob {
                constraint: got, ..
            }) => assert_eq!(got, constraint),
            other => panic!("expected InvalidJob({constraint}), got {other:?}"),
        }
    }
    let count: i64 = sqlx::query_scalar("select count(*) from public.studio_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn bulk_enqueue_returns_ids_in_input_order(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let jobs: Vec<NewJob> = (0..50)
        .map(|i| NewJob::new(user, "render", json!({ "i": i })))
        .collect();

    let ids = queue.enqueue_many(&jobs).await.unwrap();

    assert_eq!(ids.len(), 50);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(queue.job(*id).await.unwrap().input, json!({ "i": i }));
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_job_put_back_looks_pending_and_its_history_says_why(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    for _ in 0..3 {
        queue.enqueue(&job(user, "render")).await.unwrap();
    }
    let me = worker();
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let job = claim_one(&queue, &me, "render").await;
        queue
            .progress(&job.lease(&me), 80, Some("frame 80 of 100"))
            .await
            .unwrap();
        claimed.push(job);
    }
    let (requeued, rescued, retried) = (&claimed[0], &claimed[1], &claimed[2]);

    queue.requeue(&requeued.lease(&me)).await.unwrap();
    queue
        .fail(
            &retried.lease(&me),
            &Failure::Retryable {
                error: "render farm busy".into(),
                delay: Duration::ZERO,
            },
        )
        .await
        .unwrap();
    let after_lease = rescued.lease_expires_at.unwrap() + TimeDelta::seconds(1);
    queue.rescue_expired(100, Some(after_lease)).await.unwrap();

    for (job, error, why) in [
        (requeued, None, "shut down"),
        (rescued, None, "lease expired"),
        (retried, Some("render farm busy"), "render farm busy"),
    ] {
        let row = queue.job(job.id).await.unwrap();
        assert_eq!(row.status, JobStatus::Pending);
        assert_eq!(
            row.progress, 0,
            "no progress left from the attempt that ended"
        );
        assert_eq!(row.progress_message, None);
        assert_eq!(row.error.as_deref(), error);
        let events = queue.events(job.id).await.unwrap();
        let back = events
            .iter()
            .find(|e| e.from_status == JobStatus::Running)
            .unwrap();
        let message = back.message.as_deref().unwrap_or_default();
        assert!(message.contains(why), "{message:?} should say {why:?}");
        assert!(
            !message.contains(me.as_str()),
            "no worker name: {message:?}"
        );
    }
}
