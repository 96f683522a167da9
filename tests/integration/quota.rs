//! Per-user admission quotas (migration 0016): enforced on users' inserts by the database, as
//! the roles real clients use; trusted roles bypass them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use studio_worker::control::quota::{
    DEFAULT, Limits, QUOTA_SQLSTATE, QuotaExceeded, QuotaLimit, Quotas,
};
use studio_worker::queue::user::{Created, UserNewJob, UserTx};
use studio_worker::queue::{Error, JobStatus};
use uuid::Uuid;

use crate::harness::{
    as_role, as_user, cancel_as, create_user, declare_kinds, job, sqlstate, wait_for, worker_pool,
    worker_queue,
};

/// The operator's handle, over the worker's login role (as `studio-worker quotas` runs).
async fn quotas(pool: &PgPool) -> Quotas {
    Quotas::new(worker_pool(pool).await)
}

fn unfinished(n: u32) -> Limits {
    Limits {
        max_unfinished: Some(n),
        max_created: None,
    }
}

fn created(n: u32, per: Duration) -> Limits {
    Limits {
        max_unfinished: None,
        max_created: Some((n, per)),
    }
}

/// Insert one job of `kind` as `user` through PostgREST's path (role `authenticated` with the
/// user's claims), committed; the id, or the database error.
async fn insert_as(pool: &PgPool, user: Uuid, kind: &str) -> Result<Uuid, sqlx::Error> {
    insert_keyed_as(pool, user, kind, None).await
}

async fn insert_keyed_as(
    pool: &PgPool,
    user: Uuid,
    kind: &str,
    key: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    let mut tx = as_user(pool, user).await;
    let id: Uuid = sqlx::query_scalar(
        "insert into public.studio_jobs (kind, input, idempotency_key) values ($1, '{}', $2)
         on conflict (user_id, idempotency_key) where idempotency_key is not null do nothing
         returning id",
    )
    .bind(kind)
    .bind(key)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The refusal of `result`, typed as the queue's callers see it.
#[track_caller]
fn refusal(result: Result<impl std::fmt::Debug, sqlx::Error>) -> QuotaExceeded {
    match result {
        Err(sqlx::Error::Database(db)) => QuotaExceeded::from_database(&*db)
            .unwrap_or_else(|| panic!("not a quota refusal: {db:?}")),
        other => panic!("expected a quota refusal, got {other:?}"),
    }
}

async fn count(pool: &PgPool, user: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from public.studio_jobs where user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn max_unfinished_refuses_the_next_job_and_admits_again_when_one_finishes(pool: PgPool) {
    let user = create_user(&pool).await;
    quotas(&pool)
        .await
        .set("render", unfinished(2), Some("test"))
        .await
        .unwrap();
    let first = insert_as(&pool, user, "render").await.unwrap();
    insert_as(&pool, user, "render").await.unwrap();

    let refused = refusal(insert_as(&pool, user, "render").await);
    assert_eq!(refused.quota, QuotaLimit::MaxUnfinished);
    assert_eq!((refused.kind.as_str(), refused.limit), ("render", 2));
    assert!(!refused.default);
    assert_eq!(
        refused.retry_after, None,
        "only a finished job frees a slot"
    );
    assert_eq!(count(&pool, user).await, 2);

    cancel_as(&pool, user, first).await;
    insert_as(&pool, user, "render").await.unwrap();
    assert_eq!(
        sqlstate(insert_as(&pool, user, "render").await),
        QUOTA_SQLSTATE
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn max_created_refuses_within_the_period_with_the_seconds_until_a_slot_frees(pool: PgPool) {
    let user = create_user(&pool).await;
    quotas(&pool)
        .await
        .set("render", created(2, Duration::from_secs(3600)), None)
        .await
        .unwrap();
    let older = insert_as(&pool, user, "render").await.unwrap();
    let newer = insert_as(&pool, user, "render").await.unwrap();
    // Finished jobs count too: the period caps creations, not the queue.
    cancel_as(&pool, user, newer).await;
    // The older job was created 50 minutes ago: it leaves the window in 10 minutes.
    sqlx::query(
        "update public.studio_jobs set created_at = now() - interval '50 minutes' where id = $1",
    )
    .bind(older)
    .execute(&pool)
    .await
    .unwrap();

    let refused = refusal(insert_as(&pool, user, "render").await);
    assert_eq!(refused.quota, QuotaLimit::MaxCreated);
    assert_eq!(refused.limit, 2);
    assert_eq!(refused.per, Some(Duration::from_secs(3600)));
    let wait = refused.retry_after.expect("a wait frees a slot").as_secs();
    assert!(
        (590..=600).contains(&wait),
        "retry after {wait}s, expected ~600s"
    );

    // Once the older job is out of the window, a slot is free.
    sqlx::query(
        "update public.studio_jobs set created_at = now() - interval '61 minutes' where id = $1",
    )
    .bind(older)
    .execute(&pool)
    .await
    .unwrap();
    insert_as(&pool, user, "render").await.unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_kind_quota_overrides_the_default_and_the_default_counts_each_kind_apart(pool: PgPool) {
    let user = create_user(&pool).await;
    declare_kinds(&pool, &["transcode"]).await;
    let quotas = quotas(&pool).await;
    quotas.set(DEFAULT, unfinished(1), None).await.unwrap();
    quotas.set("render", unfinished(3), None).await.unwrap();
    quotas
        .set("thumbnail", Limits::default(), None)
        .await
        .unwrap();

    insert_as(&pool, user, "upscale").await.unwrap();
    let refused = refusal(insert_as(&pool, user, "upscale").await);
    assert!(refused.default);
    assert_eq!((refused.kind.as_str(), refused.limit), ("upscale", 1));
    assert_eq!(refused.quota_row(), "*");
    // Another kind under the default has its own count.
    insert_as(&pool, user, "transcode").await.unwrap();

    for _ in 0..3 {
        insert_as(&pool, user, "render").await.unwrap();
    }
    let refused = refusal(insert_as(&pool, user, "render").await);
    assert!(!refused.default);
    assert_eq!(refused.limit, 3);

    // A kind's row without limits exempts it from the default.
    for _ in 0..5 {
        insert_as(&pool, user, "thumbnail").await.unwrap();
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn concurrent_inserts_by_one_user_never_overshoot_and_leave_other_users_alone(pool: PgPool) {
    const CONNECTIONS: usize = 24;
    let user = create_user(&pool).await;
    let other = create_user(&pool).await;
    quotas(&pool)
        .await
        .set("render", unfinished(10), None)
        .await
        .unwrap();
    // A pool of its own, so that every insert has its own connection and transaction.
    let clients = PgPoolOptions::new()
        .max_connections(CONNECTIONS as u32)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (clients, start) = (clients.clone(), start.clone());
        tasks.spawn(async move {
            let mut tx = as_user(&clients, user).await;
            // Every transaction is open before any inserts.
            start.wait().await;
            let inserted =
                sqlx::query("insert into public.studio_jobs (kind, input) values ('render', '{}')")
                    .execute(&mut *tx)
                    .await;
            match inserted {
                Ok(_) => tx.commit().await.map(|()| true),
                Err(e) => Err(e),
            }
        });
    }
    let mut accepted = 0;
    let mut refused = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert_eq!(sqlstate(Err::<(), _>(e)), QUOTA_SQLSTATE);
                refused += 1;
            }
        }
    }
    assert_eq!((accepted, refused), (10, CONNECTIONS - 10));
    assert_eq!(count(&pool, user).await, 10);
    insert_as(&pool, other, "render").await.unwrap();
    clients.close().await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_multi_row_insert_counts_its_own_earlier_rows(pool: PgPool) {
    let user = create_user(&pool).await;
    quotas(&pool)
        .await
        .set("render", unfinished(2), None)
        .await
        .unwrap();

    let mut tx = as_user(&pool, user).await;
    let result = sqlx::query(
        "insert into public.studio_jobs (kind, input)
         select 'render', '{}' from generate_series(1, 3)",
    )
    .execute(&mut *tx)
    .await;
    assert_eq!(sqlstate(result), QUOTA_SQLSTATE);
    drop(tx);

    let mut tx = as_user(&pool, user).await;
    sqlx::query(
        "insert into public.studio_jobs (kind, input)
         select 'render', '{}' from generate_series(1, 2)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&pool, user).await, 2);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_changed_quota_holds_from_the_next_insert(pool: PgPool) {
    let user = create_user(&pool).await;
    let quotas = quotas(&pool).await;
    quotas.set("render", unfinished(1), None).await.unwrap();
    insert_as(&pool, user, "render").await.unwrap();
    assert_eq!(
        sqlstate(insert_as(&pool, user, "render").await),
        QUOTA_SQLSTATE
    );

    quotas.set("render", unfinished(2), None).await.unwrap();
    insert_as(&pool, user, "render").await.unwrap();
    assert_eq!(
        sqlstate(insert_as(&pool, user, "render").await),
        QUOTA_SQLSTATE
    );

    assert!(quotas.clear("render").await.unwrap().is_some());
    insert_as(&pool, user, "render").await.unwrap();
    assert!(quotas.clear("render").await.unwrap().is_none());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_job_api_path_gets_the_typed_refusal_and_repeated_keys_are_not_refused(pool: PgPool) {
    let user = create_user(&pool).await;
    quotas(&pool)
        .await
        .set("render", unfinished(1), None)
        .await
        .unwrap();
    let claims = json!({ "sub": user, "role": "authenticated" });
    let new = |key: &str| UserNewJob {
        kind: "render".to_owned(),
        input: json!({}),
        priority: 0,
        run_at: None,
        idempotency_key: Some(key.to_owned()),
    };

    let mut tx = UserTx::begin(&pool, &claims, None).await.unwrap();
    let first = match tx.create(&new("a")).await.unwrap() {
        Created::New(job) => job,
        other => panic!("expected a new job, got {other:?}"),
    };
    tx.commit().await.unwrap();

    let mut tx = UserTx::begin(&pool, &claims, None).await.unwrap();
    match tx.create(&new("b")).await {
        Err(Error::QuotaExceeded(refused)) => assert_eq!(refused.limit, 1),
        other => panic!("expected a quota refusal, got {other:?}"),
    }
    drop(tx);

    // A retried create (same key) returns the first job, at the quota or not.
    let mut tx = UserTx::begin(&pool, &claims, None).await.unwrap();
    match tx.create(&new("a")).await.unwrap() {
        Created::Existing(job) => assert_eq!(job.id, first.id),
        other => panic!("expected the first job, got {other:?}"),
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn users_can_neither_read_nor_write_quotas(pool: PgPool) {
    let user = create_user(&pool).await;
    quotas(&pool)
        .await
        .set("render", unfinished(1), None)
        .await
        .unwrap();
    for statement in [
        "select kind from public.studio_quotas",
        "insert into public.studio_quotas (kind) values ('upscale')",
        "update public.studio_quotas set max_unfinished = 100",
        "delete from public.studio_quotas",
        "select public.studio_jobs_quota_repeat(null::public.studio_jobs)",
        "select user_id from public.studio_quota_holds",
        "delete from public.studio_quota_holds",
    ] {
        let mut tx = as_user(&pool, user).await;
        let result = sqlx::query(statement).execute(&mut *tx).await;
        assert_eq!(sqlstate(result), "42501", "authenticated: {statement}");
        let mut tx = as_role(&pool, "anon").await;
        let result = sqlx::query(statement).execute(&mut *tx).await;
        assert_eq!(sqlstate(result), "42501", "anon: {statement}");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn trusted_roles_bypass_quotas_and_their_jobs_count_for_the_user(pool: PgPool) {
    let user = create_user(&pool).await;
    quotas(&pool)
        .await
        .set("render", unfinished(2), None)
        .await
        .unwrap();
    let queue = worker_queue(&pool).await;
    for _ in 0..3 {
        queue.enqueue(&job(user, "render")).await.unwrap();
    }
    queue
        .enqueue_many(&[job(user, "render"), job(user, "render")])
        .await
        .unwrap();
    let mut tx = as_role(&pool, "service_role").await;
    sqlx::query(
        "insert into public.studio_jobs (user_id, kind, input) values ($1, 'render', '{}')",
    )
    .bind(user)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&pool, user).await, 6);

    assert_eq!(
        sqlstate(insert_as(&pool, user, "render").await),
        QUOTA_SQLSTATE
    );
    // What a client can send changes nothing: claims naming service_role are not the role.
    let mut tx = as_role(&pool, "authenticated").await;
    let claims = json!({ "sub": user, "role": "service_role" });
    sqlx::query("select set_config('request.jwt.claims', $1, true)")
        .bind(claims.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let result =
        sqlx::query("insert into public.studio_jobs (kind, input) values ('render', '{}')")
            .execute(&mut *tx)
            .await;
    assert_eq!(sqlstate(result), QUOTA_SQLSTATE);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_user_inserting_for_someone_else_is_refused_by_rls_not_by_their_quota(pool: PgPool) {
    let (user, victim) = (create_user(&pool).await, create_user(&pool).await);
    quotas(&pool)
        .await
        .set("render", unfinished(0), None)
        .await
        .unwrap();
    let mut tx = as_user(&pool, user).await;
    let result = sqlx::query(
        "insert into public.studio_jobs (user_id, kind, input) values ($1, 'render', '{}')",
    )
    .bind(victim)
    .execute(&mut *tx)
    .await;
    assert_eq!(sqlstate(result), "42501");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn bad_limits_are_refused_and_change_nothing(pool: PgPool) {
    let quotas = quotas(&pool).await;
    quotas.set("render", unfinished(3), None).await.unwrap();
    assert!(
        quotas
            .set("render", created(0, Duration::from_secs(60)), None)
            .await
            .is_err()
    );
    assert!(quotas.set("Render", unfinished(1), None).await.is_err());
    // The table refuses them too, whoever writes.
    let worker = worker_pool(&pool).await;
    for statement in [
        "update public.studio_quotas set max_unfinished = -1",
        "update public.studio_quotas set max_created = 5",
        "update public.studio_quotas set max_created = 5, per = interval '0 seconds'",
        "update public.studio_quotas set max_created = -5, per = interval '1 hour'",
    ] {
        let result = sqlx::query(statement).execute(&worker).await;
        assert_eq!(sqlstate(result), "23514", "{statement}");
    }
    let rows = quotas.list().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].max_unfinished, Some(3));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn database_and_rust_agree_on_the_quota_sqlstate_and_detail(pool: PgPool) {
    let source: String = sqlx::query_scalar(
        "select prosrc from pg_proc where oid = 'public.studio_jobs_quota()'::regprocedure",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let raised = format!("errcode = '{QUOTA_SQLSTATE}'");
    assert_eq!(source.matches(&raised).count(), 2, "{source}");
    assert_eq!(
        source.matches("errcode =").count(),
        2,
        "every refusal uses the constant"
    );

    // Both refusals parse, with the fields the database put in.
    let user = create_user(&pool).await;
    let quotas = quotas(&pool).await;
    let both = Limits {
        max_unfinished: Some(1),
        max_created: Some((1, Duration::from_secs(60))),
    };
    quotas.set(DEFAULT, both, None).await.unwrap();
    let id = insert_as(&pool, user, "render").await.unwrap();
    assert_eq!(
        refusal(insert_as(&pool, user, "render").await).quota,
        QuotaLimit::MaxUnfinished
    );
    cancel_as(&pool, user, id).await;
    let refused = refusal(insert_as(&pool, user, "render").await);
    assert_eq!(refused.quota, QuotaLimit::MaxCreated);
    assert!(refused.default);
    assert!(
        refused
            .retry_after
            .is_some_and(|w| w <= Duration::from_secs(60))
    );

    let queue = worker_queue(&pool).await;
    assert_eq!(queue.job(id).await.unwrap().status, JobStatus::Cancelled);
}

/// A connection of `pool` inside a transaction at `level`, acting as `user` (role
/// `authenticated` with the user's claims), whose snapshot is taken (`select 1`); and its pid.
async fn open_at(
    pool: &PgPool,
    user: Uuid,
    level: &str,
) -> (sqlx::pool::PoolConnection<sqlx::Postgres>, i32) {
    let mut conn = pool.acquire().await.unwrap();
    for statement in [
        format!("begin isolation level {level}"),
        "set local role authenticated".to_owned(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let claims = json!({ "sub": user, "role": "authenticated", "aud": "authenticated" });
    let pid: i32 = sqlx::query_scalar(
        "select pg_backend_pid() from (select set_config('request.jwt.claims', $1, true)) s",
    )
    .bind(claims.to_string())
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    sqlx::query("select 1").execute(&mut *conn).await.unwrap();
    (conn, pid)
}

const INSERT_RENDER: &str = "insert into public.studio_jobs (kind, input) values ('render', '{}')";

/// Insert one render job on `conn` and commit; on an error, roll back and return it.
async fn insert_and_commit(
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
) -> Result<(), sqlx::Error> {
    let inserted = sqlx::query(INSERT_RENDER).execute(&mut *conn).await;
    let end = if inserted.is_ok() {
        "commit"
    } else {
        "rollback"
    };
    sqlx::query(end).execute(&mut *conn).await?;
    inserted.map(drop)
}

/// The reviewer's reproduction (B1), at every pair of isolation levels and both interleavings:
/// two transactions of one user take their snapshots, the first inserts, the second inserts
/// either while the first is still open (it waits) or after the first committed; with
/// `max_unfinished = 1`, the second is refused (PT429) or fails to serialize (40001, which a
/// retry turns into PT429), never admitted.
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn one_users_racing_inserts_never_overshoot_at_any_isolation_level(pool: PgPool) {
    const LEVELS: [&str; 3] = ["read committed", "repeatable read", "serializable"];
    quotas(&pool)
        .await
        .set("render", unfinished(1), None)
        .await
        .unwrap();
    let clients = PgPoolOptions::new()
        .max_connections(3)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    for first_level in LEVELS {
        for second_level in LEVELS {
            for second_waits in [true, false] {
                let case = format!(
                    "first {first_level}, second {second_level}, {}",
                    if second_waits {
                        "second inserts while the first is open"
                    } else {
                        "second inserts after the first committed"
                    }
                );
                let user = create_user(&pool).await;
                let (mut first, _) = open_at(&clients, user, first_level).await;
                let (second, second_pid) = open_at(&clients, user, second_level).await;
                sqlx::query(INSERT_RENDER)
                    .execute(&mut *first)
                    .await
                    .unwrap_or_else(|e| panic!("{case}: first insert: {e}"));
                let outcome = if second_waits {
                    let second = tokio::spawn(insert_and_commit(second));
                    // The second insert waits for the first's lock before the first commits.
                    wait_for(&format!("{case}: the second insert to wait"), Duration::from_secs(30), || {
                        let pool = pool.clone();
                        async move {
                            sqlx::query_scalar::<_, bool>(
                                "select coalesce(wait_event_type = 'Lock', false) from pg_stat_activity where pid = $1",
                            )
                            .bind(second_pid)
                            .fetch_optional(&pool)
                            .await
                            .unwrap()
                            .filter(|waiting| *waiting)
                        }
                    })
                    .await;
                    sqlx::query("commit").execute(&mut *first).await.unwrap();
                    second.await.unwrap()
                } else {
                    sqlx::query("commit").execute(&mut *first).await.unwrap();
                    insert_and_commit(second).await
                };
                let code = match outcome {
                    Err(sqlx::Error::Database(db)) => db.code().unwrap_or_default().into_owned(),
                    other => panic!("{case}: the second insert got {other:?}"),
                };
                let expected: &[&str] = if second_level == "read committed" {
                    &[QUOTA_SQLSTATE]
                } else {
                    &[QUOTA_SQLSTATE, "40001"]
                };
                assert!(
                    expected.contains(&code.as_str()),
                    "{case}: second got {code}"
                );
                assert_eq!(count(&pool, user).await, 1, "{case}");
                // The retry the 40001 asks for is refused by the quota.
                assert_eq!(
                    sqlstate(
                        insert_and_commit(open_at(&clients, user, second_level).await.0).await
                    ),
                    QUOTA_SQLSTATE,
                    "{case}: retry"
                );
            }
        }
    }
    clients.close().await;
}
