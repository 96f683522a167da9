//! What keeps the pages current: a stream that tells open pages the queue changed (they fetch
//! a fresh copy of their content), and the per-minute rollup the charts read.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures_util::Stream;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{DashState, sql};
use crate::notify::{self, Heard};

/// How often the rollup recounts the last minutes.
const ROLLUP_EVERY: Duration = Duration::from_secs(20);
/// Minutes recounted at each pass (a job whose transaction committed late is still counted).
const RECOUNT_MINUTES: i64 = 3;

/// `GET /live`: an event `change` whenever jobs changed status (at most about two a second),
/// `ready` first.
pub async fn stream(
    State(state): State<DashState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.changes.clone();
    let stop = state.stop.clone();
    let first =
        futures_util::stream::once(async { Ok(Event::default().event("ready").data("ready")) });
    let changes = futures_util::stream::unfold((rx, stop), |(mut rx, stop)| async move {
        tokio::select! {
            () = stop.cancelled() => None,
            changed = rx.changed() => {
                changed.ok()?;
                // A burst of changes becomes one event: pages refetch at most twice a second.
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                let seen = *rx.borrow_and_update();
                Some((Ok(Event::default().event("change").data(seen.to_string())), (rx, stop)))
            }
        }
    });
    Sse::new(futures_util::StreamExt::chain(first, changes)).keep_alive(KeepAlive::default())
}

/// How often the open pages' feed looks for new history rows.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Tick `tx` whenever the queue changed, until `stop`: at once when jobs become claimable (the
/// workers' wake-up, [`notify::JOBS`]), and for every other change by looking for new history
/// rows each second while a page is open (the database announces other changes only for jobs
/// that the job API streams, 0027, so the dashboard does not make every claim notify).
pub async fn follow_changes(pool: PgPool, tx: watch::Sender<u64>, stop: CancellationToken) {
    let listen = notify::listen(
        &pool,
        &[notify::JOBS],
        Duration::from_secs(2),
        &stop,
        |heard| match heard {
            Heard::Listening | Heard::Note { .. } => tx.send_modify(|n| *n += 1),
            Heard::Lost(err) => {
                warn!(error.message = %err, "dashboard: cannot listen for new jobs; retrying");
            }
        },
    );
    let look = async {
        let mut latest: Option<i64> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
            // The state's own receiver is one: more means a page or a request is open.
            if tx.receiver_count() <= 1 {
                continue;
            }
            match sqlx::query_scalar::<_, i64>(sql::LATEST_EVENT)
                .fetch_one(&pool)
                .await
            {
                Ok(now) => {
                    if latest.is_some_and(|before| before != now) {
                        tx.send_modify(|n| *n += 1);
                    }
                    latest = Some(now);
                }
                Err(err) => debug!(error.message = %err, "dashboard: cannot look for changes"),
            }
        }
    };
    tokio::join!(listen, look);
}

/// A transaction holding the rollup's lock, or `None` when another replica holds it now.
async fn rollup_turn(pool: &PgPool) -> Result<Option<Transaction<'static, Postgres>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mine: bool = sqlx::query_scalar(sql::ROLLUP_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    Ok(mine.then_some(tx))
}

/// Recount the finished jobs of every minute in `[from, to)` into `studio_job_minutes`,
/// unless another replica is doing it right now. Returns whether this call did it.
///
/// # Errors
/// Database errors.
pub async fn rollup(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let Some(mut tx) = rollup_turn(pool).await? else {
        return Ok(false);
    };
    sqlx::query(sql::ROLLUP)
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    sqlx::query(sql::ROLLUP_PRUNE).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// Recompute the per-user summary of the last hour (`studio_user_hour`, the Users page) if it
/// is older than 55 s (so it is recomputed about once a minute, whatever the replicas), unless
/// another replica is at the rollup right now. Returns whether this call did it.
///
/// # Errors
/// Database errors.
pub async fn user_hour(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let Some(mut tx) = rollup_turn(pool).await? else {
        return Ok(false);
    };
    let stale: bool = sqlx::query_scalar(sql::USER_HOUR_STALE)
        .fetch_one(&mut *tx)
        .await?;
    if !stale {
        return Ok(false);
    }
    sqlx::query(sql::USER_HOUR_CLEAR).execute(&mut *tx).await?;
    sqlx::query(sql::USER_HOUR).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}

fn minute(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// Keep the rollup current until `stop`: first catch up (from the latest minute recorded, at
/// most a day back, an hour per statement), then recount the last minutes every 20 s; and
/// recompute the per-user summary of the last hour at once, then every minute.
pub async fn rollup_loop(pool: PgPool, stop: CancellationToken) {
    let now = Utc::now();
    let latest: Option<DateTime<Utc>> = sqlx::query_scalar(sql::ROLLUP_LATEST)
        .fetch_one(&pool)
        .await
        .unwrap_or(None);
    let mut from = minute(
        latest
            .unwrap_or(now - TimeDelta::days(1))
            .max(now - TimeDelta::days(1)),
    );
    loop {
        let to = minute(Utc::now());
        while from < to {
            let until = (from + TimeDelta::hours(1)).min(to);
            if let Err(err) = rollup(&pool, from, until).await {
                debug!(error.message = %err, "dashboard: rollup failed; retrying at the next pass");
                break;
            }
            from = until;
        }
        from = from.min(to - TimeDelta::minutes(RECOUNT_MINUTES));
        if let Err(err) = user_hour(&pool).await {
            debug!(error.message = %err, "dashboard: per-user summary failed; retrying at the next pass");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ROLLUP_EVERY) => {}
        }
    }
}
