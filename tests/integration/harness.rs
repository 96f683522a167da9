//! Test fixtures: users, the worker's connection, acting as the API roles, and a drained queue.
//!
//! The pool a `#[sqlx::test]` receives belongs to a superuser, which bypasses RLS. Everything that
//! tests permissions goes through [`worker_pool`] (a login role that is a member of
//! `studio_worker`, as in production) or [`as_user`] / [`as_role`] (a transaction after
//! `SET LOCAL ROLE`, exactly what PostgREST does per request).

use serde_json::{Value, json};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};
use studio_worker::queue::{ClaimRequest, NewJob, Queue, WorkerId};
use uuid::Uuid;

#[path = "../common/mod.rs"]
mod common;
pub use common::{
    api_pool, autoscaler_pool, create_user, declare_kinds, wait_for, wait_for_status, worker_pool,
};

/// A queue over [`worker_pool`].
pub async fn worker_queue(pool: &PgPool) -> Queue {
    Queue::new(worker_pool(pool).await)
}

/// A transaction acting as a signed-in user: role `authenticated` and the JWT claims PostgREST
/// would set for them.
pub async fn as_user(pool: &PgPool, user: Uuid) -> Transaction<'static, Postgres> {
    let mut tx = as_role(pool, "authenticated").await;
    let claims = json!({ "sub": user, "role": "authenticated", "aud": "authenticated" });
    sqlx::query("select set_config('request.jwt.claims', $1, true)")
        .bind(claims.to_string())
        .execute(&mut *tx)
        .await
        .expect("set request.jwt.claims");
    tx
}

/// Cancel `job` as `user` through the RPC, committed.
pub async fn cancel_as(pool: &PgPool, user: Uuid, job: Uuid) {
    let mut tx = as_user(pool, user).await;
    sqlx::query("select public.cancel_studio_job($1)")
        .bind(job)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// A transaction acting as `role` (`anon`, `authenticated` without claims, `service_role`, ...).
pub async fn as_role(pool: &PgPool, role: &str) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!("set local role {role}")))
        .execute(&mut *tx)
        .await
        .expect("set local role");
    tx
}

/// The SQLSTATE of a database error (panics on other errors, which no caller expects).
#[track_caller]
pub fn sqlstate(result: Result<impl std::fmt::Debug, sqlx::Error>) -> String {
    match result {
        Err(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => panic!("expected a database error, got {other:?}"),
    }
}

/// A no-op job for `user`.
pub fn job(user: Uuid, kind: &str) -> NewJob {
    NewJob::new(user, kind, json!({ "frames": 3 }))
}

/// A fresh worker identity.
pub fn worker() -> WorkerId {
    WorkerId::generate()
}

/// Kinds as the claim expects them.
pub fn kinds(names: &[&str]) -> Vec<String> {
    names.iter().map(|k| (*k).to_owned()).collect()
}

/// Fast worker settings for tests: short leases and intervals, the defaults otherwise.
pub fn worker_settings() -> studio_worker::config::WorkerSettings {
    use std::time::Duration;
    studio_worker::config::WorkerSettings {
        concurrency: 4,
        lease: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(500),
        poll_interval: Duration::from_millis(200),
        rescue_interval: Duration::from_millis(300),
        shutdown_grace: Duration::from_secs(2),
        max_backoff: Duration::from_millis(500),
        ..studio_worker::config::WorkerSettings::default()
    }
}

/// A queue that ran dry and was analysed while quiet (autovacuum's ANALYZE of a drained queue):
/// its statistics say every job has finished, so the planner expects no pending job at all.
pub async fn drain_and_analyse(pool: &PgPool) {
    let queue = Queue::new(worker_pool(pool).await);
    let user = create_user(pool).await;
    let jobs: Vec<NewJob> = (0..2_000).map(|_| job(user, "render")).collect();
    queue.enqueue_many(&jobs).await.unwrap();
    claim_and_finish(&queue, usize::MAX).await;
    analyze(pool).await;
}

/// Claim due `render` jobs a thousand at a time and complete them, until `at_most` have
/// finished or none is left.
pub async fn claim_and_finish(queue: &Queue, at_most: usize) {
    let me = worker();
    let render = kinds(&["render"]);
    let request = ClaimRequest {
        worker: &me,
        kinds: &render,
        limit: 1_000,
        lease: std::time::Duration::from_secs(30),
        now: None,
    };
    let mut finished = 0;
    while finished < at_most {
        let claimed = queue.claim(&request).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        let results: Vec<_> = claimed
            .iter()
            .map(|j| (j.id, j.attempt, &Value::Null))
            .collect();
        queue.complete_many(&me, &results).await.unwrap();
        finished += claimed.len();
    }
}

/// Take fresh statistics of `studio_jobs` (what autovacuum's ANALYZE does).
pub async fn analyze(pool: &PgPool) {
    sqlx::query("analyze public.studio_jobs")
        .execute(pool)
        .await
        .unwrap();
}
