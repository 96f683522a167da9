//! Fair claiming across users, and cluster-wide caps per user and per kind.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use studio_worker::queue::{
    ClaimOrder, ClaimPolicy, ClaimRequest, ClaimedJob, NewJob, Queue, WorkerId, next_rotation,
};
use uuid::Uuid;

use crate::harness::{create_user, kinds, worker, worker_queue};

const LEASE: Duration = Duration::from_secs(60);

fn fair(after: Uuid) -> ClaimPolicy {
    ClaimPolicy {
        order: ClaimOrder::Fair { after },
        ..ClaimPolicy::default()
    }
}

async fn claim(
    queue: &Queue,
    me: &WorkerId,
    kind: &[String],
    limit: u32,
    policy: &ClaimPolicy,
) -> Vec<ClaimedJob> {
    queue
        .claim_with(
            &ClaimRequest {
                worker: me,
                kinds: kind,
                limit,
                lease: LEASE,
                now: None,
            },
            policy,
        )
        .await
        .unwrap()
}

async fn enqueue(queue: &Queue, user: Uuid, kind: &str, count: usize) {
    let jobs: Vec<_> = (0..count)
        .map(|i| NewJob::new(user, kind, json!({ "i": i })))
        .collect();
    for chunk in jobs.chunks(1000) {
        queue.enqueue_many(chunk).await.unwrap();
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn one_job_from_a_second_user_is_in_the_very_next_batch_despite_a_5000_job_backlog(
    pool: PgPool,
) {
    let heavy = create_user(&pool).await;
    let light = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    enqueue(&queue, heavy, "render", 5000).await;
    let lonely = queue
        .enqueue(&NewJob::new(light, "render", json!({})))
        .await
        .unwrap();
    let me = worker();

    let fifo = claim(
        &queue,
        &me,
        &kinds(&["render"]),
        10,
        &ClaimPolicy::default(),
    )
    .await;
    let batch = claim(&queue, &me, &kinds(&["render"]), 10, &fair(Uuid::nil())).await;

    assert!(
        fifo.iter().all(|j| j.user_id == heavy),
        "FIFO serves the backlog first"
    );
    assert_eq!(batch.len(), 10);
    assert!(
        batch.iter().any(|j| j.id == lonely),
        "the light user's job is in the next fair batch"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn each_fair_claim_spreads_across_users_with_uneven_backlogs(pool: PgPool) {
    let queue = worker_queue(&pool).await;
    let mut users = Vec::new();
    for i in 0..10 {
        let user = create_user(&pool).await;
        enqueue(&queue, user, "render", 8 + 40 * i).await;
        users.push(user);
    }
    let me = worker();
    let render = kinds(&["render"]);

    let mut after = Uuid::nil();
    let mut served: HashMap<Uuid, usize> = HashMap::new();
    for cycle in 0..5 {
        let batch = claim(&queue, &me, &render, 10, &fair(after)).await;
        let distinct: HashSet<Uuid> = batch.iter().map(|j| j.user_id).collect();
        assert_eq!(batch.len(), 10);
        assert_eq!(
            distinct.len(),
            10,
            "cycle {cycle}: one job from each of the ten users"
        );
        for job in &batch {
            *served.entry(job.user_id).or_default() += 1;
        }
        after = next_rotation(after, &batch);
    }
    assert!(served.values().all(|n| *n == 5), "even service: {served:?}");

    // With 4 slots per claim, the rotation moves on: three claims cover 12 turns over 10 users.
    let mut after = Uuid::nil();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let batch = claim(&queue, &me, &render, 4, &fair(after)).await;
        after = next_rotation(after, &batch);
        seen.extend(batch.into_iter().map(|j| j.user_id));
    }
    let distinct: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        10,
        "every user served within three small claims: {seen:?}"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn fair_order_keeps_each_users_priorities(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let low = queue
        .enqueue(&NewJob::new(user, "render", json!({})))
        .await
        .unwrap();
    let high = queue
        .enqueue(&NewJob::new(user, "render", json!({})).priority(50))
        .await
        .unwrap();

    let lowest = queue
        .enqueue(&NewJob::new(user, "render", json!({})).priority(-10))
        .await
        .unwrap();
    let me = worker();
    let render = kinds(&["render"]);

    let first = claim(&queue, &me, &render, 1, &fair(Uuid::nil())).await;
    assert_eq!(first[0].id, high);
    // The next claim reads the user's jobs of the first one's priority, then the lower ones.
    let rest = claim(&queue, &me, &render, 2, &fair(Uuid::nil())).await;
    let mut ids: Vec<Uuid> = rest.iter().map(|j| j.id).collect();
    let mut expected = vec![low, lowest];
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
}

/// Run `claimers` concurrent claim/hold/complete loops over every job, while a monitor samples
/// running jobs matching `running_filter`, grouped by `group_by`. Checks that every job ran;
/// returns the largest group seen.
async fn max_running_under_contention(
    pool: &PgPool,
    queue: &Queue,
    kinds_to_claim: Vec<String>,
    policy: ClaimPolicy,
    claimers: usize,
    running_filter: &'static str,
    group_by: &'static str,
) -> i64 {
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let pool = pool.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut max = 0i64;
            let sql = format!(
                "select coalesce(max(n), 0) from (select count(*) as n from public.studio_jobs
                  where status = 'running' and {running_filter} group by {group_by}) counts"
            );
            while !done.load(Ordering::SeqCst) {
                let now: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                max = max.max(now);
                tokio::task::yield_now().await;
            }
            max
        })
    };
    let tasks: Vec<_> = (0..claimers)
        .map(|_| {
            let queue = queue.clone();
            let kinds_to_claim = kinds_to_claim.clone();
            let mut policy = policy.clone();
            tokio::spawn(async move {
                let me = WorkerId::generate();
                let mut idle_rounds = 0;
                while idle_rounds < 20 {
                    let batch = claim(&queue, &me, &kinds_to_claim, 3, &policy).await;
                    if let ClaimOrder::Fair { after } = &mut policy.order {
                        *after = next_rotation(*after, &batch);
                    }
                    if batch.is_empty() {
                        idle_rounds += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    idle_rounds = 0;
                    // Held 10-30 ms: long enough for the monitor to see a cap reached, even on a
                    // loaded machine (1-6 ms missed it once in a full run).
                    tokio::time::sleep(Duration::from_millis(rand::random_range(10..30))).await;
                    let results = vec![json!(null); batch.len()];
                    let done: Vec<_> = batch
                        .iter()
                        .zip(&results)
                        .map(|(j, r)| (j.id, j.attempt, r))
                        .collect();
                    queue.complete_many(&me, &done).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let left: i64 =
        sqlx::query_scalar("select count(*) from public.studio_jobs where status <> 'succeeded'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "every job still ran");
    monitor.await.unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_per_user_cap_holds_with_several_concurrent_claimers(pool: PgPool) {
    let queue = worker_queue(&pool).await;
    for _ in 0..3 {
        let user = create_user(&pool).await;
        enqueue(&queue, user, "render", 40).await;
    }
    let policy = ClaimPolicy {
        order: ClaimOrder::Fair { after: Uuid::nil() },
        max_running_per_user: Some(2),
        ..ClaimPolicy::default()
    };

    let max = max_running_under_contention(
        &pool,
        &queue,
        kinds(&["render"]),
        policy,
        6,
        "true",
        "user_id",
    )
    .await;

    assert!(max <= 2, "a user had {max} running jobs with a cap of 2");
    assert_eq!(
        max, 2,
        "the cap was reached, so the check had something to hold"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_per_kind_cap_holds_cluster_wide_with_several_concurrent_claimers(pool: PgPool) {
    let queue = worker_queue(&pool).await;
    let user = create_user(&pool).await;
    enqueue(&queue, user, "render", 60).await;
    enqueue(&queue, user, "thumbnail", 60).await;
    let policy = ClaimPolicy {
        order: ClaimOrder::Fifo,
        max_running_per_user: None,
        max_running_by_kind: HashMap::from([("render".to_owned(), 4)]),
        ..ClaimPolicy::default()
    };

    let render = max_running_under_contention(
        &pool,
        &queue,
        kinds(&["render", "thumbnail"]),
        policy,
        8,
        "kind = 'render'",
        "kind",
    )
    .await;

    assert!(
        render <= 4,
        "{render} render jobs ran at once with a cluster-wide cap of 4"
    );
    assert_eq!(
        render, 4,
        "the cap was reached, so the check had something to hold"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn users_at_their_cap_do_not_dilute_the_others_share_of_a_claim(pool: PgPool) {
    let queue = worker_queue(&pool).await;
    let me = worker();
    let render = kinds(&["render"]);
    let capped = ClaimPolicy {
        order: ClaimOrder::Fair { after: Uuid::nil() },
        max_running_per_user: Some(3),
        ..ClaimPolicy::default()
    };
    // Five users already run three jobs each (their cap) and have more waiting.
    let mut busy = Vec::new();
    for _ in 0..5 {
        let user = create_user(&pool).await;
        enqueue(&queue, user, "render", 3).await;
        let running = claim(&queue, &me, &render, 3, &ClaimPolicy::default()).await;
        assert!(running.len() == 3 && running.iter().all(|j| j.user_id == user));
        busy.push(user);
    }
    for user in busy {
        enqueue(&queue, user, "render", 5).await;
    }
    let free = create_user(&pool).await;
    enqueue(&queue, free, "render", 10).await;

    let batch = claim(&queue, &me, &render, 6, &capped).await;

    assert_eq!(
        batch.len(),
        3,
        "the one user under its cap gets up to its cap: {batch:?}"
    );
    assert!(batch.iter().all(|j| j.user_id == free));
}
