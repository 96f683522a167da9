//! Test fixtures: users, the worker's connection, and acting as the API roles.
//!
//! The pool a `#[sqlx::test]` receives belongs to a superuser, which bypasses RLS. Everything that
//! tests permissions goes through [`worker_pool`] (a login role that is a member of
//! `studio_worker`, as in production) or [`as_user`] / [`as_role`] (a transaction after
//! `SET LOCAL ROLE`, exactly what PostgREST does per request).

use serde_json::json;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use studio_worker::queue::{NewJob, Queue, WorkerId};
use uuid::Uuid;

/// The login role the tests' worker connects as.
pub const WORKER_LOGIN: &str = "studio_worker_test_login";

/// A pool connected as [`WORKER_LOGIN`], a LOGIN role granted `studio_worker` (created once per
/// cluster; tolerant of tests creating it concurrently).
pub async fn worker_pool(pool: &PgPool) -> PgPool {
    sqlx::query(
        "do $$ begin
           if not exists (select 1 from pg_roles where rolname = 'studio_worker_test_login') then
             create role studio_worker_test_login login in role studio_worker;
           end if;
         exception when duplicate_object or unique_violation then null;
         end $$",
    )
    .execute(pool)
    .await
    .expect("create the worker's test login role");
    let options = (*pool.connect_options()).clone().username(WORKER_LOGIN);
    PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options)
        .await
        .expect("connect as the worker's login role")
}

/// A queue over [`worker_pool`].
pub async fn worker_queue(pool: &PgPool) -> Queue {
    Queue::new(worker_pool(pool).await)
}

/// A new row in `auth.users`.
pub async fn create_user(pool: &PgPool) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("insert into auth.users (id, email) values ($1, $2)")
        .bind(id)
        .bind(format!("{id}@example.test"))
        .execute(pool)
        .await
        .expect("insert into auth.users");
    id
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

/// Fast worker settings for tests: short leases and intervals.
pub fn worker_settings() -> studio_worker::config::WorkerSettings {
    use std::time::Duration;
    studio_worker::config::WorkerSettings {
        concurrency: 4,
        prefetch: 0,
        fairness: "fair".to_owned(),
        max_running_per_user: 0,
        lease: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(300),
        poll_interval: Duration::from_millis(200),
        listen: true,
        rescue_interval: Duration::from_millis(300),
        shutdown_grace: Duration::from_secs(2),
        max_backoff: Duration::from_millis(500),
    }
}

/// Poll `check` every 20 ms until it returns `Some`, or panic after `within`.
#[track_caller]
pub fn wait_for<'a, T, F, Fut>(
    what: &'a str,
    within: std::time::Duration,
    mut check: F,
) -> impl std::future::Future<Output = T> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: std::future::Future<Output = Option<T>> + 'a,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{caller}: timed out after {within:?} waiting for {what}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Wait until job `id` reaches `status` (and return the row).
pub async fn wait_for_status(
    queue: &Queue,
    id: Uuid,
    status: studio_worker::queue::JobStatus,
    within: std::time::Duration,
) -> studio_worker::queue::Job {
    wait_for(&format!("job {id} to be {status}"), within, || async {
        queue.job(id).await.ok().filter(|job| job.status == status)
    })
    .await
}
