//! Database access shared by every command: connecting, the embedded migrations and the schema
//! version, and the one place that decides which database errors are worth retrying.

use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

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

/// Capped exponential backoff with jitter, starting at 50 ms: how every reconnect and retry of a
/// transient error waits.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

const FIRST: Duration = Duration::from_millis(50);

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Backoff { next: FIRST, max }
    }

    /// The next wait (doubling, capped, ±20% jitter).
    pub(crate) fn next(&mut self) -> Duration {
        let current = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        current.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    }

    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
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

/// The schema version recorded in the database by the migrations themselves
/// (`public.studio_schema`, since migration 0011), whichever tool applied them. `None` before
/// 0011 when another tool than sqlx applied the files.
///
/// # Errors
/// Database errors, including a missing function (the migrations have not run).
pub async fn schema_version(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("select public.studio_schema_version()")
        .fetch_one(pool)
        .await
}

/// What the database says about how its schema got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationHistory {
    /// No studio schema yet.
    Empty,
    /// `_sqlx_migrations` records the applied migrations (`migrate` or `sqlx migrate run`).
    Recorded,
    /// The schema exists without `_sqlx_migrations` rows: another tool (the Supabase CLI, psql)
    /// applied it. The version it records itself, if it is recent enough to record one.
    AppliedElsewhere(Option<i64>),
}

/// Whether `migrate` may simply run, or the schema came from another tool.
///
/// # Errors
/// Database errors.
pub async fn migration_history(pool: &PgPool) -> Result<MigrationHistory, sqlx::Error> {
    let (schema, recorded): (bool, bool) = sqlx::query_as(
        "select to_regclass('public.studio_jobs') is not null,
                to_regclass('_sqlx_migrations') is not null",
    )
    .fetch_one(pool)
    .await?;
    if !schema {
        return Ok(MigrationHistory::Empty);
    }
    if recorded {
        let rows: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations")
            .fetch_one(pool)
            .await?;
        if rows > 0 {
            return Ok(MigrationHistory::Recorded);
        }
    }
    let version = schema_version(pool).await.ok().flatten();
    Ok(MigrationHistory::AppliedElsewhere(version))
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

/// A pool for `settings`, after one successful connection. Transient failures (server not up
/// yet, restarting, refusing connections) are retried until `patience` has passed; anything else
/// (bad password, unknown database, TLS failure) is returned at once. Each attempt is a direct
/// connection bounded by `database.connect_timeout` and by what is left of `patience`, so the
/// error returned is the root cause (`Connection refused`, not a pool timeout) and the whole
/// wait is about `patience`. `Duration::ZERO` tries once: what one-shot commands want.
///
/// # Errors
/// The last connection error, with the target described without its password.
pub async fn connect(settings: &DatabaseSettings, patience: Duration) -> anyhow::Result<PgPool> {
    let options = settings.connect_options()?;
    let deadline = Instant::now() + patience;
    let mut wait = Duration::from_millis(200);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget = if patience.is_zero() {
            settings.connect_timeout
        } else {
            settings
                .connect_timeout
                .min(remaining.max(Duration::from_millis(500)))
        };
        let failure = match tokio::time::timeout(budget, PgConnection::connect_with(&options)).await
        {
            Ok(Ok(conn)) => {
                // Only the proof that the database answers; the pool connects on demand.
                let _ = conn.close().await;
                break;
            }
            Ok(Err(err)) if is_transient(&err) => anyhow::Error::new(err),
            Ok(Err(err)) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("connecting to {}", settings.describe())));
            }
            Err(_) => anyhow::anyhow!(
                "no answer within {} (database.connect_timeout)",
                humantime::format_duration(budget)
            ),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(failure.context(format!("connecting to {}", settings.describe())));
        }
        let pause = wait.min(remaining);
        tracing::warn!(database = %settings.describe(), error.message = %failure, retry_in = ?pause, "database not reachable yet");
        tokio::time::sleep(pause).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    let pool = pool_options()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout)
        .connect_lazy_with(options);
    follow_password_file(&pool, settings);
    Ok(pool)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(300));
        let waits: Vec<Duration> = (0..5).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(40) && waits[0] <= Duration::from_millis(60));
        assert!(waits[1] >= Duration::from_millis(80) && waits[1] <= Duration::from_millis(120));
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(360)));
        b.reset();
        assert!(b.next() <= Duration::from_millis(60));
    }
}
