//! One stream: a job's history after `Last-Event-ID`, its current state, then its live changes
//! as Server-Sent Events, until it finishes, the server stops or the token expires.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::hub::{Hub, Signal, Watch};
use crate::api::auth::Identity;
use crate::notify::Change;
use crate::queue::JobStatus;
use crate::queue::user::UserTx;

/// A `status` event's data: one row of the job's history, the same live and replayed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusEvent {
    /// The job.
    pub job_id: Uuid,
    /// Status before.
    #[schema(value_type = String)]
    pub from: JobStatus,
    /// Status after.
    #[schema(value_type = String)]
    pub to: JobStatus,
    /// Attempt after the change.
    pub attempt: i32,
    /// Error or reason.
    pub message: Option<String>,
    /// When the change was recorded.
    pub at: DateTime<Utc>,
}

/// The `status` event of a history row.
fn status_event(e: crate::queue::JobEvent) -> Event {
    event(
        "status",
        Some(e.id),
        &StatusEvent {
            job_id: e.job_id,
            from: e.from_status,
            to: e.to_status,
            attempt: e.attempt,
            message: e.message,
            at: e.created_at,
        },
    )
}

/// The `expired` event's data: the stream ends because the access token that opened it
/// expired.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Expired {
    /// The job.
    pub job_id: Uuid,
    /// Why the stream ends.
    pub reason: &'static str,
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// A `progress` event's data.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProgressEvent {
    /// The job.
    pub job_id: Uuid,
    /// Current status.
    #[schema(value_type = String)]
    pub status: JobStatus,
    /// Current attempt.
    pub attempt: i32,
    /// Progress, 0..=100.
    pub progress: i16,
    /// Latest progress message.
    pub message: Option<String>,
}

fn event(kind: &str, id: Option<i64>, data: &impl Serialize) -> Event {
    let event = Event::default()
        .event(kind)
        .data(serde_json::to_string(data).unwrap_or_default());
    match id {
        Some(id) => event.id(id.to_string()),
        None => event,
    }
}

/// Everything a stream needs.
pub struct StreamSetup {
    /// Pool for its reads.
    pub pool: PgPool,
    /// Who watches.
    pub identity: Identity,
    /// The job.
    pub job: Uuid,
    /// Resume after this history row.
    pub last_event_id: i64,
    /// Ends the stream (server shutdown).
    pub stop: CancellationToken,
    /// The user's stream slot, held as long as the stream.
    pub slot: crate::api::limiter::StreamSlot,
}

/// Why a stream could not start.
pub enum StreamRefused {
    /// Not the caller's job (or no such job).
    NotFound,
    /// Too many streams open.
    Busy,
    /// Database error.
    Failed(crate::queue::Error),
}

/// Start following a job: registered with the hub before the first read, so no change falls
/// between the read and the live feed. Returns the events, ending after the job's terminal status
/// or at shutdown. The stream is the whole of the watcher: no task or channel of its own.
///
/// # Errors
/// See [`StreamRefused`].
pub async fn open(
    hub: Arc<Hub>,
    max_streams: usize,
    setup: StreamSetup,
) -> Result<
    impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static,
    StreamRefused,
> {
    let watch = hub
        .watch(setup.job, max_streams)
        .ok_or(StreamRefused::Busy)?;
    // The database announces the job's changes to this process before the first read.
    match hub.registered(&watch).await {
        Ok(true) => {}
        Ok(false) => return Err(StreamRefused::NotFound),
        Err(err) => return Err(StreamRefused::Failed(err.into())),
    }
    let mut last = setup.last_event_id;
    let initial = read(&setup, &mut last).await.map_err(|e| match e {
        crate::queue::Error::NotFound(_) => StreamRefused::NotFound,
        other => StreamRefused::Failed(other),
    })?;
    let mut follow = Follow {
        setup,
        watch,
        queued: initial.history.into(),
        finished: initial.finished,
        last,
        sent: None,
    };
    follow.progress(initial.current);
    Ok(futures_util::stream::unfold(
        follow,
        |mut follow| async move { follow.next().await.map(|event| (Ok(event), follow)) },
    ))
}

/// What [`read`] found.
struct Snapshot {
    /// Events of the job's history after the last one sent.
    history: Vec<Event>,
    /// The job's current state.
    current: ProgressEvent,
    /// Whether the job has finished.
    finished: bool,
}

/// The job's history after `last` (moved forward) and its current state.
async fn read(setup: &StreamSetup, last: &mut i64) -> Result<Snapshot, crate::queue::Error> {
    let mut tx = UserTx::begin(&setup.pool, &setup.identity.claims, None).await?;
    let job = tx.job(setup.job).await?;
    if !setup.identity.may_use_kind(&job.kind) {
        return Err(crate::queue::Error::NotFound(setup.job));
    }
    let history = tx.events(setup.job, *last).await?;
    tx.commit().await?;
    Ok(Snapshot {
        history: status_events(history, last),
        finished: job.status.is_terminal(),
        current: ProgressEvent {
            job_id: job.id,
            status: job.status,
            attempt: job.attempt,
            progress: job.progress,
            message: job.progress_message,
        },
    })
}

/// Events of the job's history after `last` (moved forward), and whether one of them ended
/// the job. A live status change is read from the history, once per change and watcher, so it
/// carries the time and reason that the notification does not (and is the same event a
/// reopened stream replays).
async fn history(
    setup: &StreamSetup,
    last: &mut i64,
) -> Result<(Vec<Event>, bool), crate::queue::Error> {
    let mut tx = UserTx::begin(&setup.pool, &setup.identity.claims, None).await?;
    let history = tx.events(setup.job, *last).await?;
    tx.commit().await?;
    let finished = history.iter().any(|e| e.to_status.is_terminal());
    Ok((status_events(history, last), finished))
}

/// The `status` events of history rows, moving `last` past them.
fn status_events(history: Vec<crate::queue::JobEvent>, last: &mut i64) -> Vec<Event> {
    history
        .into_iter()
        .map(|e| {
            *last = (*last).max(e.id);
            status_event(e)
        })
        .collect()
}

/// One watcher: the events not yet sent, where it is in the job's history, and the last state
/// it sent.
struct Follow {
    setup: StreamSetup,
    watch: Watch,
    queued: VecDeque<Event>,
    finished: bool,
    last: i64,
    sent: Option<ProgressEvent>,
}

impl Follow {
    /// Queue a `progress` event, unless it repeats the last one: a change that lands between
    /// the watch and the first read is in that read and also arrives live, and a `progress`
    /// event is a state, so the repeat says nothing.
    fn progress(&mut self, current: ProgressEvent) {
        if self.sent.as_ref() == Some(&current) {
            return;
        }
        self.queued.push_back(event("progress", None, &current));
        self.sent = Some(current);
    }

    /// The next event; `None` once the job finished (and everything was sent) or at shutdown.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            let expiry = self.setup.identity.expires_at.map(|at| {
                tokio::time::Instant::now() + (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
            });
            let signal = tokio::select! {
                () = self.setup.stop.cancelled() => return None,
                () = async { tokio::time::sleep_until(expiry.unwrap_or_else(far_future)).await },
                    if expiry.is_some() =>
                {
                    // The credentials that opened the stream expired: say so and end it (the
                    // page reconnects with a fresh token).
                    self.finished = true;
                    return Some(event("expired", None, &Expired {
                        job_id: self.setup.job,
                        reason: "the access token that opened this stream expired; reconnect with a fresh one",
                    }));
                }
                signal = self.watch.rx.recv() => signal,
            };
            match signal {
                Ok(Signal::Change(change)) => match change.event {
                    Some(id) if id <= self.last => {} // already sent from the history
                    // The notification has all of the event (0027): no read.
                    Some(id) if let Some(event) = announced_status(&change) => {
                        self.last = id;
                        self.finished |= change.status.is_terminal();
                        self.queued.push_back(event);
                    }
                    // A message to read (boxed like the re-read below).
                    Some(_) => match Box::pin(history(&self.setup, &mut self.last)).await {
                        Ok((events, finished)) => {
                            self.finished |= finished;
                            self.queued.extend(events);
                        }
                        Err(err) => {
                            warn!(error.message = %err, "job stream: history read failed; closing it");
                            return None;
                        }
                    },
                    None => self.progress(ProgressEvent {
                        job_id: change.job,
                        status: change.status,
                        attempt: change.attempt,
                        progress: change.progress,
                        message: change.message.clone(),
                    }),
                },
                Ok(Signal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Boxed: the database read's future is large, and inlined it would be
                    // reserved in every idle stream (about 5 KiB each).
                    match Box::pin(read(&self.setup, &mut self.last)).await {
                        Ok(snapshot) => {
                            self.finished = snapshot.finished;
                            self.queued.extend(snapshot.history);
                            self.progress(snapshot.current);
                        }
                        Err(err) => {
                            warn!(error.message = %err, "job stream: re-read failed; closing it");
                            return None;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The `status` event of an announced status change, when the notification carries all of it
/// (its time, and no message to read from the history): the same event a replay sends.
fn announced_status(change: &Change) -> Option<Event> {
    let (Some(id), Some(from), Some(at)) = (change.event, change.from, change.at) else {
        return None;
    };
    if change.reason {
        return None;
    }
    Some(event(
        "status",
        Some(id),
        &StatusEvent {
            job_id: change.job,
            from,
            to: change.status,
            attempt: change.attempt,
            message: None,
            at,
        },
    ))
}
