//! LISTEN/NOTIFY in one place: the channels the database announces on, their payloads, and
//! the one reconnecting listener loop that the worker, the job API's streams and the dashboard
//! share.
//!
//! Notifications are hints. A listener that reconnects may have missed some, so every
//! (re)connection is reported as [`Heard::Listening`] and its user re-reads what it follows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::Backoff;
use crate::queue::JobStatus;

/// New or newly claimable jobs (the insert trigger and the history trigger, 0002/0012).
/// Payload: see [`parse_jobs_payload`].
pub const JOBS: &str = "studio_jobs";
/// Cancellation requested for a running job. Payload: the job's id.
pub const CANCEL: &str = "studio_jobs_cancel";
/// Status and progress changes of **watched** jobs (0027). Payload: a JSON array of [`Change`].
pub const JOB_CHANGES: &str = "studio_job_changes";

/// What a listener reports to its user.
#[derive(Debug)]
pub enum Heard<'a> {
    /// Listening, for the first time or again after a reconnect: anything may have happened
    /// meanwhile.
    Listening,
    /// One notification.
    Note {
        /// Its channel (one of the constants above).
        channel: &'a str,
        /// Its payload.
        payload: &'a str,
    },
    /// The connection failed; the loop waits (capped exponential backoff) and reconnects.
    Lost(&'a sqlx::Error),
}

/// Listen on `channels` over a connection of `pool` until `stop`, reconnecting after failures
/// with a backoff capped at `max_backoff`, and hand everything heard to `on`.
pub async fn listen(
    pool: &PgPool,
    channels: &[&str],
    max_backoff: Duration,
    stop: &CancellationToken,
    mut on: impl FnMut(Heard<'_>),
) {
    let mut backoff = Backoff::new(max_backoff);
    while !stop.is_cancelled() {
        let connect = async {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.listen_all(channels.iter().copied()).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let connected = tokio::select! {
            connected = connect => connected,
            () = stop.cancelled() => return,
        };
        match connected {
            Ok(mut listener) => {
                backoff.reset();
                on(Heard::Listening);
                loop {
                    let received = tokio::select! {
                        received = listener.try_recv() => received,
                        () = stop.cancelled() => return,
                    };
                    match received {
                        Ok(Some(note)) => on(Heard::Note {
                            channel: note.channel(),
                            payload: note.payload(),
                        }),
                        // The connection dropped and `try_recv` reconnected it (re-issuing the
                        // LISTENs): notifications sent meanwhile are lost.
                        Ok(None) => on(Heard::Listening),
                        Err(err) => {
                            on(Heard::Lost(&err));
                            break;
                        }
                    }
                }
            }
            Err(err) => on(Heard::Lost(&err)),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next()) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// What a notification on [`JOBS`] tells a worker that runs the kinds `runs` accepts.
#[derive(Debug, PartialEq, Eq)]
pub enum Announced {
    /// These new jobs, and nothing else.
    Jobs(Vec<Uuid>),
    /// Something may be claimable: search the queue.
    Anything,
}

/// Read a [`JOBS`] payload: comma-separated kinds, or empty (look anyway); a single-job insert
/// adds `#<id>` after its kind. `None`: nothing for a worker that runs what `runs` accepts.
pub fn parse_jobs_payload(payload: &str, runs: impl Fn(&str) -> bool) -> Option<Announced> {
    if payload.is_empty() {
        return Some(Announced::Anything);
    }
    let (ids, kinds): (Vec<&str>, Vec<&str>) = payload.split(',').partition(|t| t.starts_with('#'));
    if !kinds.iter().any(|kind| runs(kind)) {
        return None;
    }
    let ids: Vec<Uuid> = ids.iter().filter_map(|t| t[1..].parse().ok()).collect();
    // Ids are sent only for one job of one kind; anything else is a search.
    if kinds.len() == 1 && !ids.is_empty() {
        Some(Announced::Jobs(ids))
    } else {
        Some(Announced::Anything)
    }
}

/// One change of a watched job, as announced on [`JOB_CHANGES`].
#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    /// The job.
    pub job: Uuid,
    /// Its owner.
    pub user: Uuid,
    /// The history row of a status change (`None`: a progress change).
    pub event: Option<i64>,
    /// The status before (status changes only).
    #[serde(default)]
    pub from: Option<JobStatus>,
    /// The status now.
    pub status: JobStatus,
    /// The attempt.
    pub attempt: i32,
    /// Progress, 0..=100.
    pub progress: i16,
    /// Progress message (progress changes only).
    #[serde(default)]
    pub message: Option<String>,
    /// When the history row was written (status changes only, since 0027).
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// Whether the history row has a message, which the notification does not carry (status
    /// changes only, since 0027).
    #[serde(default)]
    pub reason: bool,
}

/// Read a [`JOB_CHANGES`] payload.
///
/// # Errors
/// A payload that is not an array of changes.
pub fn parse_changes(payload: &str) -> Result<Vec<Change>, serde_json::Error> {
    serde_json::from_str(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(payload: &str) -> Option<Announced> {
        parse_jobs_payload(payload, |kind| kind == "render" || kind == "upscale")
    }

    #[test]
    fn a_single_insert_names_its_job() {
        let id = Uuid::now_v7();
        assert_eq!(
            parse(&format!("render,#{id}")),
            Some(Announced::Jobs(vec![id]))
        );
        assert_eq!(parse(&format!("transcode,#{id}")), None);
    }

    #[test]
    fn kinds_alone_or_nothing_mean_search() {
        assert_eq!(parse(""), Some(Announced::Anything));
        assert_eq!(parse("render"), Some(Announced::Anything));
        assert_eq!(parse("transcode,upscale"), Some(Announced::Anything));
        assert_eq!(parse("transcode"), None);
        assert_eq!(parse("render,#not-a-uuid"), Some(Announced::Anything));
    }

    #[test]
    fn changes_read_status_and_progress_payloads() {
        let job = Uuid::now_v7();
        let user = Uuid::now_v7();
        let status = format!(
            r#"[{{"job":"{job}","user":"{user}","event":7,"from":"pending","status":"running","attempt":1,"progress":0,"at":"2026-12-06T11:35:16.123456+00:00","reason":false}}]"#
        );
        let changes = parse_changes(&status).expect("a status change");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].event, Some(7));
        assert_eq!(changes[0].from, Some(JobStatus::Pending));
        assert_eq!(
            changes[0].at.map(|at| at.to_rfc3339()),
            Some("2026-12-06T11:35:16.123456+00:00".to_owned())
        );
        assert!(!changes[0].reason);
        let progress = format!(
            r#"[{{"job":"{job}","user":"{user}","event":null,"status":"running","attempt":1,"progress":40,"message":"half"}}]"#
        );
        let changes = parse_changes(&progress).expect("a progress change");
        assert_eq!(changes[0].event, None);
        assert_eq!(changes[0].message.as_deref(), Some("half"));
        assert!(parse_changes("not json").is_err());
    }
}
