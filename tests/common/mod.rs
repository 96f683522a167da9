//! Helpers shared by the test binaries (`integration`, `daemon`): the worker's login role, users,
//! and waiting for a job to reach a status.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use studio_worker::queue::{Job, JobStatus, Queue};
use uuid::Uuid;

/// The login role the tests' workers connect as: a LOGIN role in `studio_worker`, as in
/// production.
pub const WORKER_LOGIN: &str = "studio_worker_test_login";

/// A pool connected as [`WORKER_LOGIN`] (created once per cluster; tolerant of tests creating it
/// concurrently).
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

/// The login role the tests' job API connects as: a LOGIN role in `studio_api`.
const API_LOGIN: &str = "studio_api_test_login";

/// A pool connected as [`API_LOGIN`], a member of `studio_api` like production's.
pub async fn api_pool(pool: &PgPool) -> PgPool {
    sqlx::query(
        "do $$ begin
           if not exists (select 1 from pg_roles where rolname = 'studio_api_test_login') then
             create role studio_api_test_login login in role studio_api;
           end if;
         exception when duplicate_object or unique_violation then null;
         end $$",
    )
    .execute(pool)
    .await
    .expect("create the API's test login role");
    let options = (*pool.connect_options()).clone().username(API_LOGIN);
    PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options)
        .await
        .expect("connect as the API's login role")
}

/// The login role the tests' autoscaler (KEDA) connects as: a LOGIN role in
/// `studio_autoscaler`, which may only execute the demand function.
pub const AUTOSCALER_LOGIN: &str = "studio_autoscaler_test_login";

/// A pool connected as [`AUTOSCALER_LOGIN`] (created once per cluster, like [`worker_pool`]).
pub async fn autoscaler_pool(pool: &PgPool) -> PgPool {
    sqlx::query(
        "do $$ begin
           if not exists (select 1 from pg_roles where rolname = 'studio_autoscaler_test_login') then
             create role studio_autoscaler_test_login login in role studio_autoscaler;
           end if;
         exception when duplicate_object or unique_violation then null;
         end $$",
    )
    .execute(pool)
    .await
    .expect("create the autoscaler's test login role");
    let options = (*pool.connect_options()).clone().username(AUTOSCALER_LOGIN);
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("connect as the autoscaler's login role")
}

/// The kinds the tests insert jobs of. Since migration 0017 the database refuses a job of a
/// kind it does not know; every test that inserts jobs creates a user first, so
/// [`create_user`] makes these known (as `kinds declare` would). A test of unknown kinds uses a
/// name not listed here.
pub const TEST_KINDS: &[&str] = &[
    "render",
    "report",
    "thumbnail",
    "upscale",
    "sleep",
    "tick",
    "quick",
    "long",
    "short",
    "hang",
    "echo",
    "call",
    "reject",
    "notify",
    "later",
    "flaky",
    "explode",
    "endless",
    "down",
    "bad",
    "other",
    "huge",
    "chatty",
    "broken",
    "a",
    "r",
    "w",
    "x",
];

/// Make `kinds` known in the test's database (what `studio-worker kinds declare` does).
pub async fn declare_kinds(pool: &PgPool, kinds: &[&str]) {
    sqlx::query(
        "insert into public.studio_kinds (kind) select unnest($1::text[]) on conflict do nothing",
    )
    .bind(kinds)
    .execute(pool)
    .await
    .expect("declare the test kinds");
}

/// A new row in `auth.users`, in a database that knows the [`TEST_KINDS`].
pub async fn create_user(pool: &PgPool) -> Uuid {
    declare_kinds(pool, TEST_KINDS).await;
    let id = Uuid::new_v4();
    sqlx::query("insert into auth.users (id, email) values ($1, $2)")
        .bind(id)
        .bind(format!("{id}@example.test"))
        .execute(pool)
        .await
        .expect("insert into auth.users");
    id
}

/// Poll `check` every 20 ms until it returns `Some`, or panic after `within`.
#[track_caller]
pub fn wait_for<'a, T, F, Fut>(
    what: &'a str,
    within: Duration,
    mut check: F,
) -> impl Future<Output = T> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = Option<T>> + 'a,
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Wait until job `id` reaches `status` (and return the row).
pub async fn wait_for_status(queue: &Queue, id: Uuid, status: JobStatus, within: Duration) -> Job {
    wait_for(&format!("job {id} to be {status}"), within, || async {
        queue.job(id).await.ok().filter(|job| job.status == status)
    })
    .await
}
