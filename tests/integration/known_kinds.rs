//! Known kinds (migration 0017): inserts of unknown kinds are refused for every writer, kinds
//! become known by declaration or by a replica's registration, and a kind with due jobs and no
//! live replica is unserved. Kinds named here are not in the harness's `TEST_KINDS`.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::control::kinds::{
    Error as KindsError, KindReplicas, KindServing, Kinds, UNKNOWN_KIND_SQLSTATE,
};
use studio_worker::handlers::{Handler, HandlerError, JobContext, KindRuntime, Registry};
use studio_worker::queue::{Error, NewJob, Queue, WorkerId};
use studio_worker::worker::Worker;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::{
    as_role, as_user, create_user, job, sqlstate, wait_for, worker, worker_pool, worker_queue,
    worker_settings,
};

const PATIENCE: Duration = Duration::from_secs(10);
const FRESH: Duration = Duration::from_secs(60);

/// Insert a job of `kind` as `user` through RLS, as supabase-js does; committed on success.
async fn insert_as_user(pool: &PgPool, user: Uuid, kind: &str) -> Result<Uuid, sqlx::Error> {
    let mut tx = as_user(pool, user).await;
    let id = sqlx::query_scalar(
        "insert into public.studio_jobs (kind, input) values ($1, '{}') returning id",
    )
    .bind(kind)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

async fn kinds(pool: &PgPool) -> Kinds {
    Kinds::new(worker_pool(pool).await)
}

async fn jobs_of(pool: &PgPool, kind: &str) -> i64 {
    sqlx::query_scalar("select count(*) from public.studio_jobs where kind = $1")
        .bind(kind)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn row<'a>(serving: &'a [KindServing], kind: &str) -> Option<&'a KindServing> {
    serving.iter().find(|k| k.kind == kind)
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_users_insert_of_an_unknown_kind_is_refused_with_its_sqlstate_naming_the_kind(
    pool: PgPool,
) {
    let user = create_user(&pool).await;

    let refused = insert_as_user(&pool, user, "no-such-kind").await;

    let Err(sqlx::Error::Database(db)) = &refused else {
        panic!("expected a database error, got {refused:?}");
    };
    assert_eq!(db.code().as_deref(), Some(UNKNOWN_KIND_SQLSTATE));
    assert_eq!(db.message(), "unknown job kind \"no-such-kind\"");
    assert_eq!(jobs_of(&pool, "no-such-kind").await, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_sqlstate_raised_by_the_migration_is_the_one_rust_maps(pool: PgPool) {
    let migration = include_str!("../../migrations/0020_known_kind_per_statement.sql");
    assert!(
        migration.contains(&format!("errcode = '{UNKNOWN_KIND_SQLSTATE}'")),
        "0020 raises another SQLSTATE than control::kinds::UNKNOWN_KIND_SQLSTATE"
    );
    let user = create_user(&pool).await;
    let raised = sqlstate(insert_as_user(&pool, user, "no-such-kind").await);
    assert_eq!(raised, UNKNOWN_KIND_SQLSTATE);
    // PostgREST answers `PTxyz` with HTTP xyz: the frontend gets a 422.
    assert_eq!(&raised[..2], "PT");
    assert_eq!(&raised[2..], "422");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn trusted_enqueues_of_an_unknown_kind_are_refused_as_unknown_kind(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;

    let one = queue.enqueue(&job(user, "rendr")).await;
    let keyed = queue
        .enqueue(&job(user, "rendr").idempotency_key("k1"))
        .await;
    let many = queue
        .enqueue_many(&[job(user, "render"), job(user, "rendr")])
        .await;

    for result in [one.map(|_| ()), keyed.map(|_| ()), many.map(|_| ())] {
        match result {
            Err(Error::UnknownKind(unknown)) => assert_eq!(unknown.kind, "rendr"),
            other => panic!("expected UnknownKind(rendr), got {other:?}"),
        }
    }
    assert_eq!(jobs_of(&pool, "rendr").await, 0);
    assert_eq!(
        jobs_of(&pool, "render").await,
        0,
        "the batch is all or nothing"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_badly_formed_kind_is_still_refused_by_the_format_check(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;

    let result = queue
        .enqueue(&NewJob::new(user, "Not A Kind!", json!({})))
        .await;

    assert!(
        matches!(&result, Err(Error::InvalidJob { constraint, .. }) if constraint == "studio_jobs_kind_format"),
        "{result:?}"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_declared_kind_is_accepted_until_it_is_forgotten(pool: PgPool) {
    let user = create_user(&pool).await;
    let kinds = kinds(&pool).await;

    assert!(kinds.declare("transcode", Some("test")).await.unwrap());
    assert!(!kinds.declare("transcode", Some("test")).await.unwrap());
    insert_as_user(&pool, user, "transcode").await.unwrap();
    assert!(
        kinds
            .known()
            .await
            .unwrap()
            .contains(&"transcode".to_owned())
    );

    assert!(kinds.forget("transcode").await.unwrap());
    assert!(!kinds.forget("transcode").await.unwrap());
    let refused = sqlstate(insert_as_user(&pool, user, "transcode").await);
    assert_eq!(refused, UNKNOWN_KIND_SQLSTATE);
    assert_eq!(
        jobs_of(&pool, "transcode").await,
        1,
        "forget keeps existing jobs"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_kind_a_replica_registers_is_accepted_and_stays_known_after_the_replica_stops(
    pool: PgPool,
) {
    let user = create_user(&pool).await;
    let kinds = kinds(&pool).await;
    let replica = WorkerId::generate();

    kinds
        .register(&replica, &["transcode".to_owned()], FRESH)
        .await
        .unwrap();
    insert_as_user(&pool, user, "transcode").await.unwrap();
    assert_eq!(kinds.unregister(&replica).await.unwrap(), 1);

    // A deploy (every replica stopped) must not make users' inserts fail.
    insert_as_user(&pool, user, "transcode").await.unwrap();
    let served = kinds.serving().await.unwrap();
    let transcode = row(&served, "transcode").unwrap();
    assert_eq!((transcode.known, transcode.replicas), (true, 0));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_kind_with_due_jobs_and_no_live_replica_is_unserved(pool: PgPool) {
    let user = create_user(&pool).await;
    let kinds = kinds(&pool).await;
    let queue = worker_queue(&pool).await;
    kinds.declare("transcode", None).await.unwrap();
    kinds.declare("later", None).await.unwrap();
    kinds.declare("idle", None).await.unwrap();
    queue.enqueue(&job(user, "transcode")).await.unwrap();
    let tomorrow = chrono::Utc::now() + chrono::TimeDelta::days(1);
    queue
        .enqueue(&job(user, "later").run_at(tomorrow))
        .await
        .unwrap();

    let served = kinds.serving().await.unwrap();
    let transcode = row(&served, "transcode").unwrap();
    assert_eq!(
        (
            transcode.replicas,
            transcode.due_pending,
            transcode.unserved
        ),
        (0, 1, true)
    );
    assert!(
        !row(&served, "later").unwrap().unserved,
        "nothing is due yet"
    );
    assert!(!row(&served, "idle").unwrap().unserved, "no job waits");

    // A live replica serves it; one whose registration lapsed (it died) does not.
    let live = WorkerId::generate();
    let dead = WorkerId::generate();
    kinds
        .register(&dead, &["transcode".to_owned()], Duration::ZERO)
        .await
        .unwrap();
    let served = kinds.serving().await.unwrap();
    assert!(row(&served, "transcode").unwrap().unserved);
    kinds
        .register(&live, &["transcode".to_owned()], FRESH)
        .await
        .unwrap();
    let served = kinds.serving().await.unwrap();
    let transcode = row(&served, "transcode").unwrap();
    assert_eq!((transcode.replicas, transcode.unserved), (1, false));
    // The live replica's refresh deleted the dead one's expired row.
    let rows: i64 =
        sqlx::query_scalar("select count(*) from public.studio_kind_replicas where worker = $1")
            .bind(dead.as_str())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_kind_is_listed_as_unserved_when_it_only_has_jobs(pool: PgPool) {
    let user = create_user(&pool).await;
    let kinds = kinds(&pool).await;
    kinds.declare("transcode", None).await.unwrap();
    insert_as_user(&pool, user, "transcode").await.unwrap();
    kinds.forget("transcode").await.unwrap();

    let served = kinds.serving().await.unwrap();
    let transcode = row(&served, "transcode").unwrap();
    assert_eq!((transcode.known, transcode.unserved), (false, true));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn forget_is_refused_while_a_live_replica_serves_the_kind(pool: PgPool) {
    let kinds = kinds(&pool).await;
    let replica = WorkerId::generate();
    kinds
        .register(&replica, &["transcode".to_owned()], FRESH)
        .await
        .unwrap();

    let refused = kinds.forget("transcode").await;

    assert!(
        matches!(&refused, Err(KindsError::Served { kind, replicas: 1 }) if kind == "transcode"),
        "{refused:?}"
    );
    assert!(
        kinds
            .known()
            .await
            .unwrap()
            .contains(&"transcode".to_owned())
    );
    let bad = kinds.declare("Not A Kind!", None).await;
    assert!(matches!(bad, Err(KindsError::InvalidKind(_))), "{bad:?}");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn users_can_neither_read_nor_change_the_kind_registry(pool: PgPool) {
    let user = create_user(&pool).await;
    kinds(&pool)
        .await
        .register(&worker(), &["transcode".to_owned()], FRESH)
        .await
        .unwrap();
    for table in ["studio_kinds", "studio_kind_replicas"] {
        for role in ["anon", "authenticated"] {
            let mut tx = as_role(&pool, role).await;
            let read = sqlx::query(sqlx::AssertSqlSafe(format!("select * from public.{table}")))
                .fetch_all(&mut *tx)
                .await;
            assert_eq!(sqlstate(read), "42501", "{role} reads {table}");
        }
        let mut tx = as_user(&pool, user).await;
        let delete = sqlx::query(sqlx::AssertSqlSafe(format!("delete from public.{table}")))
            .execute(&mut *tx)
            .await;
        assert_eq!(sqlstate(delete), "42501", "a user deletes from {table}");
    }
    let mut tx = as_user(&pool, user).await;
    let declare = sqlx::query("insert into public.studio_kinds (kind) values ('mine')")
        .execute(&mut *tx)
        .await;
    assert_eq!(sqlstate(declare), "42501", "a user declares a kind");
}

struct Succeeds;

#[async_trait::async_trait]
impl Handler for Succeeds {
    async fn run(&self, _job: JobContext) -> Result<Value, HandlerError> {
        Ok(json!("done"))
    }
}

async fn replicas_of(queue: &Queue, worker: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select kind from public.studio_kind_replicas where worker = $1 and fresh_until > now() order by kind",
    )
    .bind(worker)
    .fetch_all(queue.pool())
    .await
    .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_worker_registers_its_kinds_while_it_runs_and_unregisters_when_it_stops(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let mut registry = Registry::new();
    registry.register("transcode", KindRuntime::new(Succeeds, 2));
    let worker = Worker::new(queue.clone(), registry, worker_settings());
    let id = worker.id().as_str().to_owned();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));

    wait_for("the worker's registration", PATIENCE, || async {
        (replicas_of(&queue, &id).await == ["transcode"]).then_some(())
    })
    .await;
    // Registered, so known: a user's job of it is accepted and run.
    let job = insert_as_user(&pool, user, "transcode").await.unwrap();
    crate::harness::wait_for_status(
        &queue,
        job,
        studio_worker::queue::JobStatus::Succeeded,
        PATIENCE,
    )
    .await;

    shutdown.cancel();
    task.await.unwrap().unwrap();
    let rows: i64 =
        sqlx::query_scalar("select count(*) from public.studio_kind_replicas where worker = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 0, "graceful shutdown removes the registration");
    assert!(
        kinds(&pool)
            .await
            .known()
            .await
            .unwrap()
            .contains(&"transcode".to_owned()),
        "the kind stays known"
    );
}

/// Sessions of this database waiting for an advisory lock.
async fn waiting_for_an_advisory_lock(observer: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_locks l join pg_database d on d.oid = l.database
          where l.locktype = 'advisory' and not l.granted and d.datname = current_database()",
    )
    .fetch_one(observer)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn forget_racing_a_registration_never_leaves_a_served_kind_unknown(pool: PgPool) {
    let workers = worker_pool(&pool).await;
    let kinds = Kinds::new(workers.clone());
    kinds.declare("transcode", Some("test")).await.unwrap();
    // A replica registers (its transaction still open) while the kind is known…
    let mut registering = workers.begin().await.unwrap();
    Kinds::register_in(
        &mut registering,
        &worker(),
        &["transcode".to_owned()],
        FRESH,
    )
    .await
    .unwrap();
    // …an operator forgets the kind…
    let forget = tokio::spawn({
        let kinds = kinds.clone();
        async move { kinds.forget("transcode").await }
    });
    wait_for(
        "forget to wait for the registration (or to finish)",
        PATIENCE,
        || async {
            (forget.is_finished() || waiting_for_an_advisory_lock(&workers).await > 0).then_some(())
        },
    )
    .await;
    // …and the registration commits.
    registering.commit().await.unwrap();
    let forgot = forget.await.unwrap();

    let live: i64 = sqlx::query_scalar(
        "select count(*) from public.studio_kind_replicas
          where kind = 'transcode' and fresh_until > now()",
    )
    .fetch_one(&workers)
    .await
    .unwrap();
    assert_eq!(live, 1, "the registration committed");
    assert!(
        kinds
            .known()
            .await
            .unwrap()
            .contains(&"transcode".to_owned()),
        "a live replica serves a kind the database refuses (forget returned {forgot:?})"
    );
    assert!(
        matches!(&forgot, Err(KindsError::Served { replicas: 1, .. })),
        "forget counts the registration it waited for: {forgot:?}"
    );
    let user = create_user(&pool).await;
    insert_as_user(&pool, user, "transcode").await.unwrap();
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn metrics_take_due_jobs_from_the_queue_gauges_and_replicas_from_the_registry(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = worker_queue(&pool).await;
    let kinds = kinds(&pool).await;
    kinds.declare("transcode", Some("test")).await.unwrap();
    kinds
        .register(&worker(), &["thumbnail".to_owned()], FRESH)
        .await
        .unwrap();
    queue.enqueue(&job(user, "transcode")).await.unwrap();
    queue
        .enqueue(&job(user, "transcode").run_at(chrono::Utc::now() + chrono::Duration::hours(1)))
        .await
        .unwrap();

    let gauges = queue.admin().gauges().await.unwrap();
    let transcode = gauges.iter().find(|g| g.kind == "transcode").unwrap();
    assert_eq!((transcode.pending, transcode.due_pending), (2, 1));
    let registry = kinds.replicas().await.unwrap();
    for (kind, replicas) in [("thumbnail", 1), ("transcode", 0)] {
        assert!(
            registry.contains(&KindReplicas {
                kind: kind.to_owned(),
                known: true,
                replicas,
            }),
            "{kind}: {registry:?}"
        );
    }
}

/// 0029 rewrote the kind's format CHECK without a bounded repetition: for every name, the
/// table refuses it with `studio_jobs_kind_format` exactly when 0002's expression refused it.
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_kind_format_accepts_exactly_what_the_old_expression_accepted(pool: PgPool) {
    let user = create_user(&pool).await;
    let worker = crate::harness::worker_pool(&pool).await;
    let mut names: Vec<String> = [
        "", "a", "z", "A", "1a", "_a", ".a", "-a", "a b", "a/b", "é", "aé", "a\n", "a-b.c_d9",
        "render", "Render", "render!", " render", "render ",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for n in [62, 63, 64, 65, 66, 100] {
        names.push("a".repeat(n));
        names.push(format!("{}é", "a".repeat(n - 1))); // n characters, n + 1 bytes
    }
    // Deterministic pseudo-random names over an alphabet with every class of character.
    let alphabet: Vec<char> = "abz09_.-AZ !é/\t".chars().collect();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..400 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 70) as usize;
        let name: String = (0..len)
            .map(|i| {
                let pick = (state >> (i % 48)) as usize + i * 7;
                alphabet[pick % alphabet.len()]
            })
            .collect();
        names.push(name);
    }
    for name in &names {
        let old: bool = sqlx::query_scalar("select $1 ~ '^[a-z][a-z0-9_.-]{0,63}$'")
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap();
        let result = sqlx::query(
            "insert into public.studio_jobs (id, user_id, kind, input) values ($1, $2, $3, '{}')",
        )
        .bind(Uuid::new_v4())
        .bind(user)
        .bind(name)
        .execute(&worker)
        .await;
        let refused_by_format = matches!(
            &result,
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("studio_jobs_kind_format")
        );
        assert_eq!(
            refused_by_format, !old,
            "{name:?}: old expression {old}, insert {result:?}"
        );
    }
}
