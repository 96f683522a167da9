//! The migrations: idempotent, and harmless on a database that already has Supabase's objects.

use sqlx::PgPool;
use studio_worker::db::MIGRATOR;

async fn applied_versions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("select version from _sqlx_migrations where success order by version")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn migrations_applied_twice_change_nothing_the_second_time(pool: PgPool) {
    MIGRATOR.run(&pool).await.unwrap();
    let first = applied_versions(&pool).await;
    let schema_before: Vec<String> = schema_fingerprint(&pool).await;

    MIGRATOR.run(&pool).await.unwrap();

    assert_eq!(first.len(), MIGRATOR.iter().count());
    assert_eq!(applied_versions(&pool).await, first);
    assert_eq!(schema_fingerprint(&pool).await, schema_before);
    // The shim itself is re-runnable as plain SQL (it is what guards hosted Supabase).
    let shim = MIGRATOR.iter().next().unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(shim.sql.as_str().to_owned()))
        .execute(&pool)
        .await
        .unwrap();
}

/// Objects, policies and grants in the schemas the migrations touch.
async fn schema_fingerprint(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select kind || ' ' || name from (
           select 'rel' as kind, c.oid::regclass::text || ':' || coalesce(array_to_string(c.relacl, ','), '') as name
             from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname in ('public', 'auth')
           union all
           select 'fn', p.oid::regprocedure::text || ':' || md5(p.prosrc) from pg_proc p
             join pg_namespace n on n.oid = p.pronamespace where n.nspname in ('public', 'auth')
           union all
           select 'policy', tablename || '.' || policyname from pg_policies
           union all
           select 'role', rolname || ':' || rolcanlogin || rolbypassrls || rolinherit from pg_roles
            where rolname in ('anon', 'authenticated', 'service_role', 'studio_worker')
         ) objects order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn migrations_leave_an_existing_supabase_auth_schema_untouched(pool: PgPool) {
    // What a Supabase project already has: GoTrue's auth.users (more columns than the shim's)
    // and auth functions with their own bodies and owner.
    sqlx::raw_sql(
        "create schema auth;
         create table auth.users (
           instance_id uuid, id uuid not null primary key, aud varchar(255), role varchar(255),
           email varchar(255) unique, encrypted_password varchar(255), confirmed_at timestamptz,
           raw_app_meta_data jsonb, raw_user_meta_data jsonb, is_super_admin boolean,
           created_at timestamptz, updated_at timestamptz, is_anonymous boolean not null default false);
         create function auth.uid() returns uuid language sql stable as $$
           select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
             (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
           -- supabase's own body
         $$;
         create function auth.role() returns text language sql stable as $$ select 'supabase'::text $$;
         create function auth.jwt() returns jsonb language sql stable as $$ select '{}'::jsonb $$;
         create function auth.email() returns text language sql stable as $$ select 'x'::text $$;
         create publication supabase_realtime;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let auth_before = auth_fingerprint(&pool).await;
    let roles_before = api_roles(&pool).await;

    MIGRATOR.run(&pool).await.unwrap();

    assert_eq!(auth_fingerprint(&pool).await, auth_before);
    assert_eq!(api_roles(&pool).await, roles_before);
    let in_publication: bool = sqlx::query_scalar(
        "select exists (select 1 from pg_publication_tables
                         where pubname = 'supabase_realtime' and tablename = 'studio_jobs')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(in_publication, "studio_jobs joins the existing publication");
}

/// Oids, bodies and columns of everything in `auth`.
async fn auth_fingerprint(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select p.oid::text || ' ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc)
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'auth'
         union all
         select c.oid::text || ' ' || c.relname || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
           join pg_attribute a on a.attrelid = c.oid and a.attnum > 0
          where n.nspname = 'auth'
         order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Attributes and settings of the Supabase API roles (cluster-wide).
async fn api_roles(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select rolname || ' ' || rolcanlogin || rolinherit || rolbypassrls || rolsuper || ' '
                || coalesce(array_to_string(rolconfig, ','), '')
           from pg_roles where rolname in ('anon', 'authenticated', 'service_role')
          order by rolname",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_enqueued_without_max_attempts_get_the_database_default(pool: PgPool) {
    // Since 0021 the column has no default: a row without attempts takes its kind's, else 3,
    // from 0021's trigger, and `ENQUEUE_MANY` repeats that rule in its statement.
    let queue = crate::harness::worker_queue(&pool).await;
    let user = crate::harness::create_user(&pool).await;

    let one = queue
        .enqueue(&crate::harness::job(user, "render"))
        .await
        .unwrap();
    let many = queue
        .enqueue_many(&[crate::harness::job(user, "render")])
        .await
        .unwrap();
    let mut tx = crate::harness::as_user(&pool, user).await;
    let by_sql: i32 = sqlx::query_scalar(
        "insert into public.studio_jobs (kind, input) values ('render', '{}') returning max_attempts",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(
        by_sql, 3,
        "the trigger's default for a kind without its own"
    );
    for id in [one, many[0]] {
        let job = queue.job(id).await.unwrap();
        assert_eq!(
            job.max_attempts, by_sql,
            "queue/sql/enqueue.rs must repeat the trigger's default"
        );
    }
}
