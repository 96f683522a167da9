//! The schema version does not depend on the tool that applied the migrations, and the history
//! table is published to Supabase Realtime where that publication exists.

use sqlx::PgPool;
use studio_worker::db::{self, MIGRATOR};

/// Apply migrations as psql or the Supabase CLI would: the SQL only, no `_sqlx_migrations`.
async fn apply_raw(pool: &PgPool, versions: impl Fn(i64) -> bool) {
    for migration in MIGRATOR.iter().filter(|m| versions(m.version)) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sql.as_str().to_owned()))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("migration {}: {e}", migration.version));
    }
}

#[test]
fn every_migration_from_0011_on_records_its_version() {
    for migration in MIGRATOR.iter().filter(|m| m.version >= 11) {
        let line = format!("select public.studio_mark_schema({});", migration.version);
        assert!(
            migration.sql.as_str().contains(&line),
            "migration {} must end with `{line}` (docs/decisions.md, 2026-11-29)",
            migration.version
        );
    }
}

#[sqlx::test(migrations = false)]
async fn the_schema_version_is_the_same_whichever_tool_applied_the_migrations(pool: PgPool) {
    apply_raw(&pool, |_| true).await;

    assert_eq!(
        db::schema_version(&pool).await.unwrap(),
        Some(db::latest_migration())
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn sqlx_applied_migrations_report_the_latest_version(pool: PgPool) {
    assert_eq!(
        db::schema_version(&pool).await.unwrap(),
        Some(db::latest_migration())
    );
    // The bookkeeping is the worker's business, not the Data API's.
    for role in ["anon", "authenticated"] {
        let readable: bool =
            sqlx::query_scalar("select has_table_privilege($1, 'public.studio_schema', 'select')")
                .bind(role)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(!readable, "{role} reads public.studio_schema");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn job_history_is_published_to_supabase_realtime(pool: PgPool) {
    let published: Vec<String> = sqlx::query_scalar(
        "select tablename::text from pg_publication_tables
          where pubname = 'supabase_realtime' and schemaname = 'public' order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(published, ["studio_job_events", "studio_jobs"]);
}

#[sqlx::test(migrations = false)]
async fn the_realtime_step_is_skipped_without_the_publication(pool: PgPool) {
    apply_raw(&pool, |v| v < 11).await;
    sqlx::query("drop publication supabase_realtime")
        .execute(&pool)
        .await
        .unwrap();

    apply_raw(&pool, |v| v >= 11).await;

    assert_eq!(
        db::schema_version(&pool).await.unwrap(),
        Some(db::latest_migration())
    );
}
