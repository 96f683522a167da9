//! 0027: job changes are announced on `studio_job_changes` only for jobs somebody watches, and a
//! watch is ordered against the job's transitions by a row lock (no change falls between a
//! stream's first read and its live feed). Watches are written as the job API's login role;
//! the users' roles cannot touch them.
//!
//! Absence of a notification is asserted without waiting: PostgreSQL delivers notifications in
//! commit order, so a marker sent after the transitions arrives after anything they announced.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use studio_worker::notify::Change;
use studio_worker::queue::{ClaimRequest, ClaimedJob, JobStatus, Queue, WorkerId};
use uuid::Uuid;

use crate::harness::{
    api_pool, as_role, as_user, create_user, job, kinds, sqlstate, worker, worker_queue,
};

const CHANNEL: &str = "studio_job_changes";
const MARKER: &str = "marker";
const WITHIN: Duration = Duration::from_secs(10);

async fn listener(pool: &PgPool) -> PgListener {
    let mut listener = PgListener::connect_with(pool).await.unwrap();
    listener.listen(CHANNEL).await.unwrap();
    listener
}

/// The payloads announced before a marker sent now.
async fn announced(pool: &PgPool, listener: &mut PgListener) -> Vec<String> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(MARKER)
        .execute(pool)
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let note = tokio::time::timeout(WITHIN, listener.recv())
            .await
            .expect("the marker arrives")
            .unwrap();
        if note.payload() == MARKER {
            return seen;
        }
        seen.push(note.payload().to_owned());
    }
}

/// Wait until a session of this test's database waits for a lock (seen in pg_stat_activity,
/// not guessed).
async fn lock_wait(pool: &PgPool, what: &str) {
    crate::harness::wait_for(what, WITHIN, || {
        let pool = pool.clone();
        async move {
            let waiting: bool = sqlx::query_scalar(
                "select exists (select 1 from pg_stat_activity
                                 where datname = current_database() and wait_event_type = 'Lock')",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            waiting.then_some(())
        }
    })
    .await;
}

fn changes(payload: &str) -> Vec<Change> {
    studio_worker::notify::parse_changes(payload).expect("a change payload")
}

async fn claim(queue: &Queue, me: &WorkerId) -> ClaimedJob {
    let kinds = kinds(&["render"]);
    let mut claimed = queue
        .claim(&ClaimRequest {
            worker: me,
            kinds: &kinds,
            limit: 1,
            lease: Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    claimed.remove(0)
}

async fn watch(api: &PgPool, job: Uuid, watcher: &str) -> bool {
    sqlx::query_scalar("select public.studio_watch_job($1, $2, interval '5 minutes')")
        .bind(job)
        .bind(watcher)
        .fetch_one(api)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn claims_and_completions_of_unwatched_jobs_announce_nothing(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let mut listener = listener(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let claimed = claim(&queue, &me).await;
    queue
        .progress(&claimed.lease(&me), 50, Some("half"))
        .await
        .unwrap();
    queue
        .complete(&claimed.lease(&me), &json!({}))
        .await
        .unwrap();
    assert_eq!(claimed.id, id);

    assert_eq!(announced(&pool, &mut listener).await, Vec::<String>::new());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_watched_job_announces_its_changes_until_unwatched(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let api = api_pool(&pool).await;
    let mut listener = listener(&pool).await;
    let watched = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    assert!(watch(&api, watched, "a-000000000001").await);
    // A second process watching the same job does not double the announcements.
    assert!(watch(&api, watched, "a-000000000002").await);

    let claimed = claim(&queue, &me).await;
    queue
        .progress(&claimed.lease(&me), 50, Some("half"))
        .await
        .unwrap();
    let seen = announced(&pool, &mut listener).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    let claimed_change = &changes(&seen[0])[0];
    assert_eq!(
        (claimed_change.job, claimed_change.status),
        (watched, JobStatus::Running)
    );
    let progress = &changes(&seen[1])[0];
    assert_eq!(
        (progress.progress, progress.message.as_deref()),
        (50, Some("half"))
    );

    sqlx::query("select public.studio_unwatch_jobs($1, $2)")
        .bind([watched])
        .bind("a-000000000001")
        .execute(&api)
        .await
        .unwrap();
    sqlx::query("select public.studio_unwatch_jobs($1, $2)")
        .bind([watched])
        .bind("a-000000000002")
        .execute(&api)
        .await
        .unwrap();
    queue
        .complete(&claimed.lease(&me), &json!({}))
        .await
        .unwrap();
    assert_eq!(announced(&pool, &mut listener).await, Vec::<String>::new());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn only_the_watched_jobs_of_a_statement_are_announced(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let api = api_pool(&pool).await;
    let watched = queue.enqueue(&job(user, "render")).await.unwrap();
    let other = queue.enqueue(&job(user, "render")).await.unwrap();
    assert!(watch(&api, watched, "a-000000000001").await);
    let mut listener = listener(&pool).await;

    let kinds = kinds(&["render"]);
    let claimed = queue
        .claim(&ClaimRequest {
            worker: &worker(),
            kinds: &kinds,
            limit: 2,
            lease: Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);

    let seen = announced(&pool, &mut listener).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let jobs: Vec<Uuid> = changes(&seen[0]).iter().map(|c| c.job).collect();
    assert_eq!(jobs, vec![watched], "not {other}");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn an_expired_watch_announces_nothing(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    // What a crashed API process leaves behind once its lifetime is over.
    sqlx::query(
        "insert into public.studio_job_watches (job_id, watcher, expires_at)
         values ($1, 'a-00000000dead', now() - interval '1 second')",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let mut listener = listener(&pool).await;

    claim(&queue, &worker()).await;

    assert_eq!(announced(&pool, &mut listener).await, Vec::<String>::new());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_transition_waiting_for_a_watch_is_announced(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let api = api_pool(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    let me = worker();
    let claimed = claim(&queue, &me).await;
    let mut listener = listener(&pool).await;

    // The watch's transaction holds the job's row when the completion arrives.
    let mut watching = api.begin().await.unwrap();
    let registered: bool = sqlx::query_scalar(
        "select public.studio_watch_job($1, 'a-000000000001', interval '5 minutes')",
    )
    .bind(id)
    .fetch_one(&mut *watching)
    .await
    .unwrap();
    assert!(registered);
    let completing = {
        let queue = queue.clone();
        let lease = claimed.lease(&me);
        tokio::spawn(async move { queue.complete(&lease, &json!({})).await })
    };
    // The completion waits for the watch's row lock (seen in pg_stat_activity, not guessed).
    lock_wait(&pool, "the completion to wait for the watch").await;
    watching.commit().await.unwrap();
    completing.await.unwrap().unwrap();

    let seen = announced(&pool, &mut listener).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let change = &changes(&seen[0])[0];
    assert_eq!((change.job, change.status), (id, JobStatus::Succeeded));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_watch_waits_for_a_transition_in_flight(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let api = api_pool(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();

    // A user's cancellation holds the row, uncommitted, when the watch arrives.
    let mut cancelling = as_user(&pool, user).await;
    sqlx::query("select public.cancel_studio_job($1)")
        .bind(id)
        .execute(&mut *cancelling)
        .await
        .unwrap();
    let watching = {
        let api = api.clone();
        tokio::spawn(async move { watch(&api, id, "a-000000000001").await })
    };
    lock_wait(&pool, "the watch to wait for the cancellation").await;
    cancelling.commit().await.unwrap();
    assert!(watching.await.unwrap());

    // A stream's first read, after its watch, sees the change that was in flight.
    let mut tx = as_user(&pool, user).await;
    let status: String = sqlx::query_scalar("select status from public.studio_jobs where id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(status, "cancelled");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn watching_an_unknown_job_says_so(pool: PgPool) {
    let api = api_pool(&pool).await;
    assert!(!watch(&api, Uuid::new_v4(), "a-000000000001").await);
    let rows: i64 = sqlx::query_scalar("select count(*) from public.studio_job_watches")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn refresh_keeps_the_jobs_still_followed_and_drops_the_rest(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let api = api_pool(&pool).await;
    let kept = queue.enqueue(&job(user, "render")).await.unwrap();
    let left = queue.enqueue(&job(user, "render")).await.unwrap();
    assert!(watch(&api, kept, "a-000000000001").await);
    assert!(watch(&api, left, "a-000000000001").await);
    assert!(watch(&api, left, "a-000000000002").await);

    let held: i32 = sqlx::query_scalar(
        "select public.studio_refresh_watches('a-000000000001', $1, interval '5 minutes')",
    )
    .bind([kept])
    .fetch_one(&api)
    .await
    .unwrap();
    assert_eq!(held, 1);
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "select job_id, watcher from public.studio_job_watches order by watcher, job_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (kept, "a-000000000001".to_owned()),
            (left, "a-000000000002".to_owned())
        ]
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn users_and_anon_cannot_touch_watches(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = queue.enqueue(&job(user, "render")).await.unwrap();
    for role in ["anon", "authenticated"] {
        let mut tx = if role == "anon" {
            as_role(&pool, role).await
        } else {
            as_user(&pool, user).await
        };
        let read = sqlx::query("select * from public.studio_job_watches")
            .execute(&mut *tx)
            .await;
        assert_eq!(sqlstate(read), "42501", "{role} reads watches");
        drop(tx);
        let mut tx = if role == "anon" {
            as_role(&pool, role).await
        } else {
            as_user(&pool, user).await
        };
        let write = sqlx::query(
            "select public.studio_watch_job($1, 'a-000000000001', interval '5 minutes')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await;
        assert_eq!(sqlstate(write), "42501", "{role} writes a watch");
    }
    // The worker's role neither.
    let worker_pool = crate::harness::worker_pool(&pool).await;
    let write =
        sqlx::query("select public.studio_watch_job($1, 'a-000000000001', interval '5 minutes')")
            .bind(id)
            .execute(&worker_pool)
            .await;
    assert_eq!(sqlstate(write), "42501");
}
