//! Row level security and grants, exercised as the roles real clients use.

use serde_json::json;
use sqlx::PgPool;
use studio_worker::queue::JobStatus;
use uuid::Uuid;

use crate::harness::{
    as_role, as_user, cancel_as, create_user, job, sqlstate, worker, worker_pool, worker_queue,
};

const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Insert a job for `user` as that user (the frontend's path) and return its id.
async fn insert_as(pool: &PgPool, user: Uuid) -> Uuid {
    let mut tx = as_user(pool, user).await;
    let id: Uuid = sqlx::query_scalar(
        "insert into public.studio_jobs (kind, input) values ('render', '{\"scene\": 1}') returning id",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn anon_can_neither_read_nor_write_anything(pool: PgPool) {
    let user = create_user(&pool).await;
    let job_id = insert_as(&pool, user).await;

    for statement in [
        "select * from public.studio_jobs",
        "select * from public.studio_job_events",
        "insert into public.studio_jobs (kind, input, user_id) values ('render', '{}', gen_random_uuid())",
        "update public.studio_jobs set priority = 1",
        "delete from public.studio_jobs",
        "truncate public.studio_jobs",
        "select * from _sqlx_migrations",
    ] {
        let mut tx = as_role(&pool, "anon").await;
        let result = sqlx::query(statement).execute(&mut *tx).await;
        assert_eq!(
            sqlstate(result),
            INSUFFICIENT_PRIVILEGE,
            "anon: {statement}"
        );
    }
    let mut tx = as_role(&pool, "anon").await;
    let result = sqlx::query("select public.cancel_studio_job($1)")
        .bind(job_id)
        .execute(&mut *tx)
        .await;
    assert_eq!(
        sqlstate(result),
        INSUFFICIENT_PRIVILEGE,
        "anon may not cancel"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn user_inserts_own_pending_job_and_reads_it_back_with_returning(pool: PgPool) {
    let user = create_user(&pool).await;
    let mut tx = as_user(&pool, user).await;

    let (owner, status, attempt): (Uuid, String, i32) = sqlx::query_as(
        "insert into public.studio_jobs (kind, input) values ('render', '{\"scene\": 1}')
         returning user_id, status, attempt",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();

    assert_eq!(owner, user, "user_id defaults to auth.uid()");
    assert_eq!(status, "pending");
    assert_eq!(attempt, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn legacy_claim_sub_setting_also_identifies_the_user(pool: PgPool) {
    let user = create_user(&pool).await;
    let mut tx = as_role(&pool, "authenticated").await;
    sqlx::query("select set_config('request.jwt.claim.sub', $1, true)")
        .bind(user.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();

    let owner: Uuid = sqlx::query_scalar(
        "insert into public.studio_jobs (kind, input) values ('render', '{}') returning user_id",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();

    assert_eq!(owner, user);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn user_cannot_insert_a_job_for_another_user(pool: PgPool) {
    let alice = create_user(&pool).await;
    let bob = create_user(&pool).await;
    let mut tx = as_user(&pool, alice).await;

    let result = sqlx::query(
        "insert into public.studio_jobs (user_id, kind, input) values ($1, 'render', '{}')",
    )
    .bind(bob)
    .execute(&mut *tx)
    .await;

    assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn user_without_claims_cannot_insert(pool: PgPool) {
    create_user(&pool).await;
    let mut tx = as_role(&pool, "authenticated").await;

    let result =
        sqlx::query("insert into public.studio_jobs (kind, input) values ('render', '{}')")
            .execute(&mut *tx)
            .await;

    // user_id defaults to auth.uid(), which is NULL without claims: the policy refuses the row.
    assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn user_cannot_set_worker_columns_on_insert(pool: PgPool) {
    let user = create_user(&pool).await;
    for (column, value) in [
        ("status", "'succeeded'"),
        ("result", "'{}'"),
        ("attempt", "1"),
        ("max_attempts", "100"),
        ("priority", "100"),
        ("run_at", "now() - interval '1 day'"),
        ("locked_by", "'me'"),
        ("progress", "50"),
    ] {
        let mut tx = as_user(&pool, user).await;
        let statement = format!(
            "insert into public.studio_jobs (kind, input, {column}) values ('render', '{{}}', {value})"
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await;
        assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE, "column {column}");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn user_cannot_update_delete_or_truncate_even_own_jobs(pool: PgPool) {
    let user = create_user(&pool).await;
    insert_as(&pool, user).await;

    for statement in [
        "update public.studio_jobs set status = 'succeeded'",
        "update public.studio_jobs set input = '{}'",
        "delete from public.studio_jobs",
        "truncate public.studio_jobs",
        "insert into public.studio_job_events (job_id, user_id, from_status, to_status, attempt)
           select id, user_id, 'pending', 'running', 1 from public.studio_jobs",
        "delete from public.studio_job_events",
    ] {
        let mut tx = as_user(&pool, user).await;
        let result = sqlx::query(statement).execute(&mut *tx).await;
        assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE, "{statement}");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn users_see_only_their_own_jobs_and_history(pool: PgPool) {
    let alice = create_user(&pool).await;
    let bob = create_user(&pool).await;
    let alice_job = insert_as(&pool, alice).await;
    let bob_job = insert_as(&pool, bob).await;
    // Give both jobs some history.
    cancel_as(&pool, alice, alice_job).await;
    cancel_as(&pool, bob, bob_job).await;

    for (user, own, other) in [(alice, alice_job, bob_job), (bob, bob_job, alice_job)] {
        let mut tx = as_user(&pool, user).await;
        let jobs: Vec<Uuid> = sqlx::query_scalar("select id from public.studio_jobs")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(jobs, vec![own]);
        let events: Vec<Uuid> = sqlx::query_scalar("select job_id from public.studio_job_events")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(events, vec![own]);
        let by_id: Option<Uuid> =
            sqlx::query_scalar("select id from public.studio_jobs where id = $1")
                .bind(other)
                .fetch_optional(&mut *tx)
                .await
                .unwrap();
        assert_eq!(by_id, None, "another user's job is invisible even by id");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn user_cancels_own_pending_job_at_once(pool: PgPool) {
    let user = create_user(&pool).await;
    let id = insert_as(&pool, user).await;
    let mut tx = as_user(&pool, user).await;

    let (status, finished): (String, bool) =
        sqlx::query_as("select status, finished_at is not null from public.cancel_studio_job($1)")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();

    assert_eq!(status, "cancelled");
    assert!(finished);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn user_cancel_of_a_running_job_requests_cancellation(pool: PgPool) {
    let user = create_user(&pool).await;
    let id = insert_as(&pool, user).await;
    let queue = worker_queue(&pool).await;
    let me = worker();
    let kinds = crate::harness::kinds(&["render"]);
    queue
        .claim(&studio_worker::queue::ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: 1,
            lease: std::time::Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap();
    let mut tx = as_user(&pool, user).await;

    let (status, requested): (String, bool) = sqlx::query_as(
        "select status, cancel_requested_at is not null from public.cancel_studio_job($1)",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();

    assert_eq!(status, "running", "the worker records the cancellation");
    assert!(requested);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn user_cannot_cancel_another_users_job_or_a_finished_one(pool: PgPool) {
    let alice = create_user(&pool).await;
    let bob = create_user(&pool).await;
    let bob_job = insert_as(&pool, bob).await;
    let alice_job = insert_as(&pool, alice).await;
    cancel_as(&pool, alice, alice_job).await;

    let mut tx = as_user(&pool, alice).await;
    let other = sqlx::query("select public.cancel_studio_job($1)")
        .bind(bob_job)
        .execute(&mut *tx)
        .await;
    assert_eq!(
        sqlstate(other),
        "P0002",
        "someone else's job looks like a missing one"
    );
    drop(tx);

    let mut tx = as_user(&pool, alice).await;
    let finished = sqlx::query("select public.cancel_studio_job($1)")
        .bind(alice_job)
        .execute(&mut *tx)
        .await;
    assert_eq!(sqlstate(finished), "55000");

    let bob_status: String =
        sqlx::query_scalar("select status from public.studio_jobs where id = $1")
            .bind(bob_job)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(bob_status, "pending");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn worker_role_sees_every_users_jobs_and_enqueues_for_any_user(pool: PgPool) {
    let alice = create_user(&pool).await;
    let bob = create_user(&pool).await;
    insert_as(&pool, alice).await;
    let queue = worker_queue(&pool).await;

    let id = queue.enqueue(&job(bob, "render")).await.unwrap();

    let owners: Vec<Uuid> =
        sqlx::query_scalar("select user_id from public.studio_jobs order by created_at")
            .fetch_all(queue.pool())
            .await
            .unwrap();
    assert_eq!(owners, vec![alice, bob]);
    assert_eq!(queue.job(id).await.unwrap().status, JobStatus::Pending);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn worker_role_holds_nothing_beyond_the_job_tables(pool: PgPool) {
    let user = create_user(&pool).await;
    insert_as(&pool, user).await;
    sqlx::query("create table public.unrelated (id int)")
        .execute(&pool)
        .await
        .unwrap();
    let worker = worker_pool(&pool).await;

    for statement in [
        "select * from auth.users",
        "select * from public.unrelated",
        "update public.studio_jobs set kind = 'other'",
        "update public.studio_jobs set input = '{}'",
        "update public.studio_jobs set user_id = gen_random_uuid()",
        "truncate public.studio_jobs",
        "insert into public.studio_job_events (job_id, user_id, from_status, to_status, attempt)
           select id, user_id, 'pending', 'running', 1 from public.studio_jobs",
        "update public.studio_job_events set message = 'x'",
        "delete from public.studio_job_events",
        "select * from _sqlx_migrations",
    ] {
        let result = sqlx::query(statement).execute(&worker).await;
        assert_eq!(
            sqlstate(result),
            INSUFFICIENT_PRIVILEGE,
            "studio_worker: {statement}"
        );
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn service_role_keeps_full_access(pool: PgPool) {
    let alice = create_user(&pool).await;
    let bob = create_user(&pool).await;
    insert_as(&pool, alice).await;
    insert_as(&pool, bob).await;
    let mut tx = as_role(&pool, "service_role").await;

    let seen: i64 = sqlx::query_scalar("select count(*) from public.studio_jobs")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 2);
    let updated = sqlx::query("update public.studio_jobs set priority = 5")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 2);
    let inserted = sqlx::query(
        "insert into public.studio_jobs (user_id, kind, input) values ($1, 'render', $2)",
    )
    .bind(bob)
    .bind(json!({}))
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(inserted.rows_affected(), 1);
    let deleted = sqlx::query("delete from public.studio_jobs")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 3);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn every_public_table_forces_row_level_security_for_api_roles(pool: PgPool) {
    let unprotected: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = 'public' and c.relkind = 'r' and not c.relrowsecurity
          order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        unprotected.is_empty(),
        "tables without RLS: {unprotected:?}"
    );

    let not_forced: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = 'public' and c.relname like 'studio_%' and c.relkind = 'r'
            and not c.relforcerowsecurity",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        not_forced.is_empty(),
        "job tables without FORCE: {not_forced:?}"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn users_read_the_short_error_but_never_the_workers_internals(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let id = insert_as(&pool, user).await;
    let me = worker();
    let kinds = vec!["render".to_owned()];
    let claimed = queue
        .claim(&studio_worker::queue::ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: 1,
            lease: std::time::Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap();
    queue
        .fail_with_detail(
            &claimed[0].lease(&me),
            &studio_worker::queue::Failure::Permanent {
                error: "exit status 1".into(),
            },
            Some("exit status 1: cannot open /srv/render/scenes/7.blend"),
        )
        .await
        .unwrap();

    let mut tx = as_user(&pool, user).await;
    let (status, error): (String, Option<String>) =
        sqlx::query_as("select status, error from public.studio_jobs where id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("failed", Some("exit status 1"))
    );
    let message: Option<String> = sqlx::query_scalar(
        "select message from public.studio_job_events where job_id = $1 and to_status = 'failed'",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(message.as_deref(), Some("exit status 1"));
    tx.rollback().await.unwrap();

    // The operators' detail and the worker's host are in no column users can read (0023):
    // every column of both tables is readable, and none holds them.
    let mut tx = as_user(&pool, user).await;
    let rows: Vec<String> = sqlx::query_scalar(
        "select row_to_json(j)::text from public.studio_jobs j
         union all select row_to_json(e)::text from public.studio_job_events e",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert!(rows.len() >= 3, "{rows:?}");
    for row in &rows {
        assert!(
            !row.contains("/srv/render"),
            "a user reads the detail: {row}"
        );
        let host = studio_worker::queue::WorkerId::host();
        assert!(
            host.is_empty() || !row.contains(&host),
            "a user reads the host: {row}"
        );
    }
    for role in ["anon", "authenticated"] {
        let mut tx = if role == "anon" {
            as_role(&pool, role).await
        } else {
            as_user(&pool, user).await
        };
        let refused = sqlx::query("select * from public.studio_job_failures")
            .fetch_all(&mut *tx)
            .await;
        assert_eq!(sqlstate(refused), "42501", "{role} reads the failures");
    }
    let detail = queue.job(id).await.unwrap().error_detail;
    assert_eq!(
        detail.as_deref(),
        Some("exit status 1: cannot open /srv/render/scenes/7.blend"),
        "operators keep the detail"
    );
    let events = queue.events(id).await.unwrap();
    assert_eq!(
        events.last().unwrap().detail.as_deref(),
        detail.as_deref(),
        "and the history's"
    );
}

/// supabase-js's `insert({...}).select()` and `select('*')`, as PostgREST runs them: as
/// `authenticated` with the request's claims, `returning *` inside a CTE, and `select *`.
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn supabase_js_insert_select_and_select_star_work_on_both_tables(pool: PgPool) {
    let user = create_user(&pool).await;
    let other = create_user(&pool).await;
    insert_as(&pool, other).await;
    let mut tx = as_user(&pool, user).await;
    // PostgREST 12's statement for POST /studio_jobs?select=* (Prefer: return=representation).
    let created: serde_json::Value = sqlx::query_scalar(
        "with pgrst_source as (
           insert into public.studio_jobs (kind, input)
           select pgrst_body.kind, pgrst_body.input
             from (select $1::json as json_data) pgrst_payload,
                  lateral (select kind, input
                             from json_to_record(pgrst_payload.json_data)
                                  as _(kind text, input jsonb)) pgrst_body
           returning public.studio_jobs.*
         )
         select coalesce(json_agg(_postgrest_t), '[]')::json
           from (select * from pgrst_source) _postgrest_t",
    )
    .bind(json!({ "kind": "render", "input": { "scene": 7 } }))
    .fetch_one(&mut *tx)
    .await
    .expect("insert(...).select() as authenticated");
    let job = &created[0];
    assert_eq!(job["user_id"], json!(user));
    assert_eq!(job["status"], json!("pending"));
    assert_eq!(job["input"], json!({ "scene": 7 }));
    tx.commit().await.unwrap();

    // The job runs, fails with an operator's detail, and the user reads everything with `*`.
    let queue = worker_queue(&pool).await;
    let me = worker();
    let claimed = queue
        .claim(&studio_worker::queue::ClaimRequest {
            worker: &me,
            kinds: &["render".to_owned()],
            limit: 5,
            lease: std::time::Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap();
    let mine = claimed.iter().find(|c| c.user_id == user).unwrap();
    queue
        .fail_with_detail(
            &mine.lease(&me),
            &studio_worker::queue::Failure::Permanent {
                error: "exit status 2".into(),
            },
            Some("stderr: /opt/render/bin/blender: scene 7 missing"),
        )
        .await
        .unwrap();

    let mut tx = as_user(&pool, user).await;
    for (table, rows_expected) in [("studio_jobs", 1), ("studio_job_events", 2)] {
        let rows: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select coalesce(json_agg(_postgrest_t), '[]')::json
               from (select * from public.{table}) _postgrest_t"
        )))
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|err| panic!("select('*') on {table}: {err}"));
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), rows_expected, "own rows only: {rows:?}");
        for row in rows {
            assert_eq!(row["user_id"], json!(user));
            assert!(!row.to_string().contains("/opt/render"), "{row}");
        }
    }
    let (worker_seen, error): (Option<String>, Option<String>) = sqlx::query_as(
        "select e.worker, j.error from public.studio_job_events e
           join public.studio_jobs j on j.id = e.job_id
          where e.to_status = 'running'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        worker_seen.as_deref(),
        Some(me.as_str()),
        "an opaque worker id"
    );
    assert_eq!(error.as_deref(), Some("exit status 2"));
}
