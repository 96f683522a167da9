//! Claiming: SKIP LOCKED exclusivity, ordering, kind filtering.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::json;
use sqlx::PgPool;
use studio_worker::queue::{ClaimRequest, NewJob};

use crate::harness::{analyze, create_user, job, kinds, worker, worker_pool, worker_queue};

const LEASE: Duration = Duration::from_secs(30);

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn concurrent_claimers_never_receive_the_same_job(pool: PgPool) {
    let users = [create_user(&pool).await, create_user(&pool).await];
    let queue = worker_queue(&pool).await;
    let jobs: Vec<NewJob> = (0..3000)
        .map(|i| NewJob::new(users[i % 2], "render", json!({ "i": i })).priority((i % 3) as i16))
        .collect();
    let enqueued: HashSet<_> = queue
        .enqueue_many(&jobs)
        .await
        .unwrap()
        .into_iter()
        .collect();

    let claimers = (0..8).map(|_| {
        let queue = queue.clone();
        tokio::spawn(async move {
            let me = worker();
            let kinds = kinds(&["render"]);
            let mut mine = Vec::new();
            loop {
                let batch = queue
                    .claim(&ClaimRequest {
                        worker: &me,
                        kinds: &kinds,
                        limit: 17,
                        lease: LEASE,
                        now: None,
                    })
                    .await
                    .unwrap();
                if batch.is_empty() {
                    break mine;
                }
                mine.extend(batch.into_iter().map(|j| j.id));
            }
        })
    });
    let mut claims = Vec::new();
    for claimer in claimers {
        claims.extend(claimer.await.unwrap());
    }

    let distinct: HashSet<_> = claims.iter().copied().collect();
    assert_eq!(claims.len(), 3000, "every job claimed once in total");
    assert_eq!(distinct, enqueued, "exactly the enqueued jobs, none twice");
    let attempts: Vec<i32> = sqlx::query_scalar("select distinct attempt from public.studio_jobs")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, vec![1], "no job was claimed twice");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn claim_skips_rows_locked_by_another_transaction_without_waiting(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let locked = queue.enqueue(&job(user, "render")).await.unwrap();
    let free = queue.enqueue(&job(user, "render")).await.unwrap();
    let other = worker_pool(&pool).await;
    let mut holder = other.begin().await.unwrap();
    sqlx::query("select id from public.studio_jobs where id = $1 for update")
        .bind(locked)
        .execute(&mut *holder)
        .await
        .unwrap();
    let me = worker();
    let kinds = kinds(&["render"]);

    let claimed = queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: 10,
            lease: LEASE,
            now: None,
        })
        .await
        .unwrap();

    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![free]);
    holder.rollback().await.unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn claim_orders_by_priority_then_due_time_and_respects_the_limit(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let now = Utc::now();
    let old_low = queue
        .enqueue(&job(user, "render").run_at(now - TimeDelta::minutes(10)))
        .await
        .unwrap();
    let new_high = queue
        .enqueue(
            &job(user, "render")
                .priority(10)
                .run_at(now - TimeDelta::minutes(1)),
        )
        .await
        .unwrap();
    let newer_low = queue
        .enqueue(&job(user, "render").run_at(now - TimeDelta::minutes(5)))
        .await
        .unwrap();
    let _future = queue
        .enqueue(
            &job(user, "render")
                .priority(100)
                .run_at(now + TimeDelta::hours(1)),
        )
        .await
        .unwrap();
    let me = worker();
    let kinds = kinds(&["render"]);
    let request = |limit| ClaimRequest {
        worker: &me,
        kinds: &kinds,
        limit,
        lease: LEASE,
        now: None,
    };

    let first = queue.claim(&request(2)).await.unwrap();
    let rest = queue.claim(&request(10)).await.unwrap();

    let ids =
        |jobs: &[studio_worker::queue::ClaimedJob]| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(&first), vec![new_high, old_low]);
    assert_eq!(ids(&rest), vec![newer_low], "the future job is not due");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn claim_leaves_kinds_it_was_not_asked_for_untouched(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let upscale = queue.enqueue(&job(user, "upscale")).await.unwrap();
    let render = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let kinds = kinds(&["render", "thumbnail"]);

    let claimed = queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: 10,
            lease: LEASE,
            now: None,
        })
        .await
        .unwrap();

    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![render]
    );
    let untouched = queue.job(upscale).await.unwrap();
    assert_eq!(untouched.status.as_str(), "pending");
    assert_eq!(untouched.attempt, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn claim_uses_the_partial_index_on_pending_jobs(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let jobs: Vec<NewJob> = (0..2000).map(|_| job(user, "render")).collect();
    queue.enqueue_many(&jobs).await.unwrap();
    analyze(&pool).await;

    let plan: Vec<String> = sqlx::query_scalar(
        "explain select id from public.studio_jobs
          where status = 'pending' and run_at <= now() and kind = any('{render}'::text[])
          order by priority desc, run_at, id limit 10 for update skip locked",
    )
    .fetch_all(&pool)
    .await
    .unwrap();

    let plan = plan.join("\n");
    assert!(plan.contains("studio_jobs_claim_idx"), "{plan}");
}

/// Long-lived connections reuse generic plans, which cannot see the batch size; the update must
/// still reach the chosen jobs by primary key, not by scanning every job in the table.
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn claims_reach_their_jobs_by_key_whatever_the_backlog(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let jobs: Vec<NewJob> = (0..20_000).map(|_| job(user, "render")).collect();
    queue.enqueue_many(&jobs).await.unwrap();
    analyze(&pool).await;

    let worker_pool = worker_pool(&pool).await;
    let mut conn = worker_pool.acquire().await.unwrap();
    sqlx::query("set plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (name, statement) in studio_worker::queue::claim_statements() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "prepare {name} as {statement}"
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
        let args = match name {
            "fifo" => "'{render}', 10, 'w', 30, null",
            _ => "'{render}', 10, 'w', 30, null, '00000000-0000-0000-0000-000000000000', 0",
        };
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "explain execute {name}({args})"
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("studio_jobs_pkey"), "{name}: {plan}");
        assert!(!plan.contains("Seq Scan on studio_jobs"), "{name}: {plan}");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_named_claim_takes_only_the_named_jobs_that_are_pending_due_and_of_its_kinds(
    pool: PgPool,
) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let me = worker();
    let render = kinds(&["render"]);
    let named = queue.enqueue(&job(user, "render")).await.unwrap();
    let later = queue
        .enqueue(&job(user, "render").run_at(Utc::now() + TimeDelta::hours(1)))
        .await
        .unwrap();
    let other_kind = queue.enqueue(&job(user, "upscale")).await.unwrap();
    let taken = queue.enqueue(&job(user, "render")).await.unwrap();
    let unnamed = queue.enqueue(&job(user, "render")).await.unwrap();
    let request = |limit| ClaimRequest {
        worker: &me,
        kinds: &render,
        limit,
        lease: LEASE,
        now: None,
    };
    // Someone else already runs `taken`.
    let other = worker();
    let first = queue
        .claim_named(
            &ClaimRequest {
                worker: &other,
                ..request(1)
            },
            &[taken],
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 1);

    let claimed = queue
        .claim_named(&request(10), &[named, later, other_kind, taken])
        .await
        .unwrap();

    assert_eq!(
        claimed.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![named]
    );
    assert_eq!(claimed[0].attempt, 1);
    for (id, status) in [
        (later, "pending"),
        (other_kind, "pending"),
        (unnamed, "pending"),
        (taken, "running"),
    ] {
        assert_eq!(queue.job(id).await.unwrap().status.as_str(), status);
    }

    // The limit holds.
    let more: Vec<_> = (0..3).map(|_| job(user, "render")).collect();
    let ids = queue.enqueue_many(&more).await.unwrap();
    assert_eq!(queue.claim_named(&request(2), &ids).await.unwrap().len(), 2);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_bulk_enqueue_returns_every_id_in_input_order_over_parallel_batches(pool: PgPool) {
    use studio_worker::queue::BULK_BATCH;
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let n = BULK_BATCH * 2 + 7;
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new(user, "render", json!({ "i": i })))
        .collect();
    let ids = queue.enqueue_bulk(&jobs, 2).await.unwrap();
    assert_eq!(ids.len(), n);
    let rows: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("select id, (input->>'i')::int8 from public.studio_jobs")
            .fetch_all(&pool)
            .await
            .unwrap();
    let by_id: std::collections::HashMap<_, _> = rows.into_iter().collect();
    assert_eq!(by_id.len(), n, "every job was inserted once");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            by_id.get(id).copied(),
            Some(i as i64),
            "id {i} names job {i}"
        );
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_failed_bulk_batch_says_what_was_enqueued_and_sends_nothing_after_it(pool: PgPool) {
    use studio_worker::queue::{BULK_BATCH, Error};
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    // Batch 2 of 3 holds a job of an unknown kind.
    let jobs: Vec<NewJob> = (0..BULK_BATCH * 3)
        .map(|i| {
            let kind = if i == BULK_BATCH + 10 {
                "rendr"
            } else {
                "render"
            };
            NewJob::new(user, kind, json!({ "i": i }))
        })
        .collect();
    let err = queue.enqueue_bulk(&jobs, 1).await.unwrap_err();
    assert!(matches!(err.error, Error::UnknownKind(_)), "{err}");
    assert_eq!(err.enqueued, vec![0..BULK_BATCH]);
    assert_eq!(err.failed_at, BULK_BATCH);
    assert_eq!(err.ids.len(), BULK_BATCH);
    let stored: Vec<uuid::Uuid> =
        sqlx::query_scalar("select id from public.studio_jobs order by (input->>'i')::int8")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        stored, err.ids,
        "only the first batch is stored, with the ids reported"
    );
}
