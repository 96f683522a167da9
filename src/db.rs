//! Database access shared by every command: connecting, the embedded migrations and the schema
//! version, and the one place that decides which database errors are worth retrying.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseSettings;

/// The schema, embedded at compile time from `migrations/` (the same files `sqlx migrate run`
/// applies, so both paths record identical checksums).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// SQLSTATEs after which retrying the same statement can succeed.
const TRANSIENT_SQLSTATES: &[&str] = &[
    "40001", // serialization_failure
    "40P01", // deadlock_detected
    "55P03", // lock_not_available
    "57P01", // admin_shutdown (server restarting)
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now (server starting up)
    "53300", // too_many_connections
];

/// Whether an error is transient: the connection dropped, the pool timed out, or the server
/// reported a condition that clears by itself. Everything else is a bug or bad data and retrying
/// it would only repeat the failure.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| TRANSIENT_SQLSTATES.contains(&code.as_ref())),
        _ => false,
    }
}

/// The newest migration this binary carries.
pub fn latest_migration() -> i64 {
    MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// The schema version recorded in the database (`None` before the migrations ran, or when they
/// were applied by hand).
///
/// # Errors
/// Database errors, including a missing function (the migrations have not run).
pub async fn schema_version(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("select public.studio_schema_version()")
        .fetch_one(pool)
        .await
}

/// How the worker's pools are built. sqlx pings every idle connection before handing it out by
/// default: a round trip in front of every claim, completion, heartbeat and enqueue. Here only
/// connections idle for longer than [`PING_AFTER_IDLE`] are pinged, so that one dropped while
/// idle (a pooler's or NAT's idle cutoff, a database restart) is replaced before use rather than
/// failing the heartbeat that happens to draw it.
#[must_use]
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Idle time after which a pooled connection is checked before use.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(10);

/// A pool for `settings`, after one successful round trip. Transient failures (server not up
/// yet, restarting) are retried for up to `patience`; anything else (bad password, unknown
/// database, TLS failure) is returned at once.
///
/// # Errors
/// The last connection error, with the target described without its password.
pub async fn connect(settings: &DatabaseSettings, patience: Duration) -> anyhow::Result<PgPool> {
    let options = settings.connect_options()?;
    let pool = pool_options()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout)
        .connect_lazy_with(options);
    follow_password_file(&pool, settings);
    let deadline = Instant::now() + patience;
    let mut wait = Duration::from_millis(200);
    loop {
        match sqlx::query("select 1").execute(&pool).await {
            Ok(_) => return Ok(pool),
            Err(err) if is_transient(&err) && Instant::now() + wait < deadline => {
                tracing::warn!(database = %settings.describe(), error.message = %err, retry_in = ?wait, "database not reachable yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(err) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("connecting to {}", settings.describe())));
            }
        }
    }
}

/// How often `database.password_file` is checked for a new password.
const PASSWORD_FILE_CHECK: Duration = Duration::from_secs(1);

/// Keep the pool's password in step with `database.password_file`: when the file changes, the
/// pool's next connections (and the LISTEN connection's reconnects) use the new password, so an
/// operator rotates it (`alter role … password …` plus the file) without restarting anything.
/// Open connections stay as they are; PostgreSQL checks passwords only when connecting.
fn follow_password_file(pool: &PgPool, settings: &DatabaseSettings) {
    let Some(path) = settings.password_file.clone() else {
        return;
    };
    let (pool, settings) = (pool.clone(), settings.clone());
    // A digest, not the password, is what stays in memory between checks.
    let digest = |path: &std::path::Path| {
        use std::hash::{Hash, Hasher};
        std::fs::read(path).ok().map(|bytes| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            hasher.finish()
        })
    };
    tokio::spawn(async move {
        let mut last = digest(&path);
        let mut ticks = tokio::time::interval(PASSWORD_FILE_CHECK);
        loop {
            ticks.tick().await;
            if pool.is_closed() {
                return;
            }
            let now = digest(&path);
            // Unreadable (being replaced): keep the password we have until it reads again.
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            match settings.connect_options() {
                Ok(options) => {
                    pool.set_connect_options(options);
                    tracing::info!(
                        "database.password_file changed: new connections use the new password"
                    );
                }
                Err(err) => {
                    tracing::warn!(error.message = %err, "database.password_file changed but cannot be used; keeping the previous password");
                }
            }
        }
    });
}
