//! Following a job live: `GET /v1/jobs/{id}/events` as Server-Sent Events.
//!
//! One LISTEN connection per process ([`Hub::run`]) receives the changes that the job triggers
//! announce for the jobs this process watches (0027: the hub writes a watch row for each
//! followed job before its first stream's first read) and hands them to the job's watchers in
//! memory. A watcher costs the database one read when it starts (its job and the history it has
//! not seen), one read of the history for a status change that has a message (failures,
//! cancellations, requeues: the notification carries everything else), and a re-read when the
//! listener reconnected or the watcher fell behind; progress changes cost nothing.
//!
//! Events: `status` (one per history row, `id:` = the history row's id, so `Last-Event-ID`
//! resumes from the history) and `progress` (the job's current status and progress; no id). The
//! stream starts with the history after `Last-Event-ID`, then one `progress` event with the
//! current state, then live changes, and ends after the job's terminal status or when the server
//! shuts down.
//!
//! Browsers' `EventSource` cannot send an `Authorization` header: `POST /v1/jobs/{id}/stream-url`
//! returns a URL with a token signed by the API, valid for one job, one user and a short time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::Event;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::hmac;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::auth::Identity;
use crate::notify::{self, Change, Heard};
use crate::queue::JobStatus;
use crate::queue::user::UserTx;

/// Changes buffered per watched job before a slow watcher is told to re-read.
const PER_JOB_BUFFER: usize = 64;
/// How long a watch row lives in the database unless refreshed (a crashed process's rows
/// stop costing anything after this).
const WATCH_TTL: Duration = Duration::from_secs(300);
/// How often this process refreshes its watch rows.
const REFRESH_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Signal {
    Change(Arc<Change>),
    /// Changes may have been missed (listener reconnected): read the job again.
    Resync,
}

/// Whether the database announces a job's changes to this process (0027): settled once per
/// watched job, by the registrar task; every watcher of the job waits for it.
type Registered = Arc<tokio::sync::OnceCell<bool>>;

#[derive(Debug)]
struct Entry {
    tx: broadcast::Sender<Signal>,
    registered: Registered,
}

/// What the registrar task does, in the order the hub asked.
#[derive(Debug)]
enum Request {
    /// Write the watch of a job (its first watcher here): answers whether the job exists.
    Watch(Uuid, oneshot::Sender<Result<bool, sqlx::Error>>),
    /// Delete the watch of a job (its last watcher here left).
    Unwatch(Uuid),
}

/// Fan-out of job changes to the watchers of this process, and the watch rows that make the
/// database announce those jobs' changes (and only theirs).
#[derive(Debug)]
pub struct Hub {
    watchers: Mutex<HashMap<Uuid, Entry>>,
    open: AtomicUsize,
    /// This process's name in `studio_job_watches` (opaque, random per start).
    id: String,
    requests: mpsc::UnboundedSender<Request>,
    pending: Mutex<Option<mpsc::UnboundedReceiver<Request>>>,
}

impl Default for Hub {
    fn default() -> Hub {
        let (requests, pending) = mpsc::unbounded_channel();
        Hub {
            watchers: Mutex::default(),
            open: AtomicUsize::new(0),
            id: format!("a-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            requests,
            pending: Mutex::new(Some(pending)),
        }
    }
}

/// A watcher's registration; dropping it unregisters.
struct Watch {
    hub: Arc<Hub>,
    job: Uuid,
    rx: broadcast::Receiver<Signal>,
    registered: Registered,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = self.hub.watchers.lock().unwrap_or_else(|p| p.into_inner());
        // `self.rx` still counts here: it is the last one when the count is 1.
        if watchers
            .get(&self.job)
            .is_some_and(|e| e.tx.receiver_count() <= 1)
        {
            watchers.remove(&self.job);
            // Also when its watch is still being written: the registrar applies requests in
            // order, so the row is written, then deleted.
            let _ = self.hub.requests.send(Request::Unwatch(self.job));
        }
        self.hub.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn watch(self: &Arc<Self>, job: Uuid, max: usize) -> Option<Watch> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        let entry = watchers.entry(job).or_insert_with(|| Entry {
            tx: broadcast::channel(PER_JOB_BUFFER).0,
            registered: Registered::default(),
        });
        Some(Watch {
            hub: self.clone(),
            job,
            rx: entry.tx.subscribe(),
            registered: entry.registered.clone(),
        })
    }

    /// Wait until the database announces `watch`'s job to this process (the first watcher of
    /// the job asks the registrar; the others wait for its answer). `Ok(false)`: no such job.
    async fn registered(&self, watch: &Watch) -> Result<bool, sqlx::Error> {
        watch
            .registered
            .get_or_try_init(|| async {
                let (reply, answer) = oneshot::channel();
                self.requests
                    .send(Request::Watch(watch.job, reply))
                    .map_err(|_| sqlx::Error::PoolClosed)?;
                answer.await.map_err(|_| sqlx::Error::PoolClosed)?
            })
            .await
            .copied()
    }

    fn publish(&self, change: Change) {
        let watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = watchers.get(&change.job) {
            let _ = entry.tx.send(Signal::Change(Arc::new(change)));
        }
    }

    fn resync_all(&self) {
        let watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        for entry in watchers.values() {
            let _ = entry.tx.send(Signal::Resync);
        }
    }

    /// Listen for job changes on one connection of `pool` and keep this process's watch rows
    /// until `stop`; after a reconnect every watcher re-reads its job.
    pub async fn run(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        let registrar = tokio::spawn(self.clone().registrar(pool.clone(), stop.clone()));
        notify::listen(
            &pool,
            &[notify::JOB_CHANGES],
            Duration::from_secs(5),
            &stop,
            |heard| match heard {
                Heard::Listening => {
                    info!("job streams: listening for job changes");
                    self.resync_all();
                }
                Heard::Note { payload, .. } => match notify::parse_changes(payload) {
                    Ok(changes) => changes.into_iter().for_each(|c| self.publish(c)),
                    Err(err) => debug!(error.message = %err, "job streams: unreadable change"),
                },
                Heard::Lost(err) => warn!(error.message = %err, "job streams: listener failed"),
            },
        )
        .await;
        let _ = registrar.await;
    }

    /// Writes and deletes this process's watch rows in the order the hub asked, and refreshes
    /// them; deletes them all at `stop`.
    async fn registrar(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        let Some(mut requests) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return; // already running
        };
        let mut rows = Rows {
            watcher: &self.id,
            pool: &pool,
            held: HashSet::new(),
            leaving: Vec::new(),
            renewed: tokio::time::Instant::now(),
        };
        let mut refresh = tokio::time::interval(REFRESH_EVERY);
        refresh.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = refresh.tick() => {
                    if rows.refresh().await == Renewed::Again {
                        self.resync_all();
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    let mut next = Some(request);
                    while let Some(request) = next {
                        match request {
                            Request::Unwatch(job) => rows.leaving.push(job),
                            Request::Watch(job, reply) => {
                                // A watch after an unwatch of the same job must land after it.
                                rows.unwatch().await;
                                let _ = reply.send(rows.watch(job).await);
                            }
                        }
                        next = requests.try_recv().ok();
                    }
                    rows.unwatch().await;
                }
            }
        }
        let held: Vec<Uuid> = rows.held.iter().copied().collect();
        rows.leaving.extend(held);
        rows.unwatch().await;
    }
}

/// What a refresh of the watch rows found.
#[derive(Debug, PartialEq, Eq)]
enum Renewed {
    /// Every row renewed in time.
    InTime,
    /// Some rows may have expired meanwhile (gone, or the last renewal is older than their
    /// lifetime): they were written again, and every watcher must re-read its job.
    Again,
    /// The database did not answer; try at the next tick.
    NotNow,
}

/// This process's watch rows, as the registrar task keeps them.
struct Rows<'a> {
    watcher: &'a str,
    pool: &'a PgPool,
    /// Jobs whose rows were written and not deleted since.
    held: HashSet<Uuid>,
    /// Jobs whose rows are to be deleted.
    leaving: Vec<Uuid>,
    /// When every row was last known fresh.
    renewed: tokio::time::Instant,
}

impl Rows<'_> {
    async fn watch(&mut self, job: Uuid) -> Result<bool, sqlx::Error> {
        let found = watch_job(self.pool, self.watcher, job).await?;
        if found {
            self.held.insert(job);
        }
        Ok(found)
    }

    /// Delete the rows of the jobs leaving; a failure leaves rows that expire by themselves.
    async fn unwatch(&mut self) {
        if self.leaving.is_empty() {
            return;
        }
        for job in &self.leaving {
            self.held.remove(job);
        }
        if let Err(err) = sqlx::query("select public.studio_unwatch_jobs($1, $2)")
            .bind(&self.leaving)
            .bind(self.watcher)
            .execute(self.pool)
            .await
        {
            debug!(error.message = %err, "job streams: cannot delete watches; they expire");
        }
        self.leaving.clear();
    }

    /// Renew the rows and delete this process's others.
    async fn refresh(&mut self) -> Renewed {
        let jobs: Vec<Uuid> = self.held.iter().copied().collect();
        let renewed = sqlx::query_scalar::<_, i32>(
            "select public.studio_refresh_watches($1, $2, make_interval(secs => $3))",
        )
        .bind(self.watcher)
        .bind(&jobs)
        .bind(WATCH_TTL.as_secs_f64())
        .fetch_one(self.pool)
        .await;
        let renewed = match renewed {
            Ok(renewed) => usize::try_from(renewed).unwrap_or(0),
            Err(err) => {
                warn!(error.message = %err, "job streams: cannot refresh watches");
                return Renewed::NotNow;
            }
        };
        if renewed == jobs.len() && self.renewed.elapsed() < WATCH_TTL {
            self.renewed = tokio::time::Instant::now();
            return Renewed::InTime;
        }
        warn!("job streams: watches expired while the database was away; watchers re-read");
        for job in jobs {
            if let Err(err) = watch_job(self.pool, self.watcher, job).await {
                warn!(error.message = %err, "job streams: cannot renew a watch");
                return Renewed::NotNow;
            }
        }
        self.renewed = tokio::time::Instant::now();
        Renewed::Again
    }
}

/// Write the watch of `job` (0027's function, which orders it against the job's transitions).
async fn watch_job(pool: &PgPool, watcher: &str, job: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select public.studio_watch_job($1, $2, make_interval(secs => $3))")
        .bind(job)
        .bind(watcher)
        .bind(WATCH_TTL.as_secs_f64())
        .fetch_one(pool)
        .await
}

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
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    pub slot: super::limiter::StreamSlot,
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
    let (initial, finished) = read(&setup, &mut last).await.map_err(|e| match e {
        crate::queue::Error::NotFound(_) => StreamRefused::NotFound,
        other => StreamRefused::Failed(other),
    })?;
    let follow = Follow {
        setup,
        watch,
        queued: initial.into(),
        finished,
        last,
    };
    Ok(futures_util::stream::unfold(
        follow,
        |mut follow| async move { follow.next().await.map(|event| (Ok(event), follow)) },
    ))
}

/// Events of the job's history after `last` (moved forward) and its current state.
async fn read(
    setup: &StreamSetup,
    last: &mut i64,
) -> Result<(Vec<Event>, bool), crate::queue::Error> {
    let mut tx = UserTx::begin(&setup.pool, &setup.identity.claims, None).await?;
    let job = tx.job(setup.job).await?;
    if !setup.identity.may_use_kind(&job.kind) {
        return Err(crate::queue::Error::NotFound(setup.job));
    }
    let history = tx.events(setup.job, *last).await?;
    tx.commit().await?;
    let mut events = Vec::with_capacity(history.len() + 1);
    for e in history {
        *last = (*last).max(e.id);
        events.push(status_event(e));
    }
    events.push(event(
        "progress",
        None,
        &ProgressEvent {
            job_id: job.id,
            status: job.status,
            attempt: job.attempt,
            progress: job.progress,
            message: job.progress_message,
        },
    ));
    Ok((events, job.status.is_terminal()))
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
    let events = history
        .into_iter()
        .map(|e| {
            *last = (*last).max(e.id);
            status_event(e)
        })
        .collect();
    Ok((events, finished))
}

/// One watcher: the events not yet sent, and where it is in the job's history.
struct Follow {
    setup: StreamSetup,
    watch: Watch,
    queued: VecDeque<Event>,
    finished: bool,
    last: i64,
}

impl Follow {
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
                    None => self.queued.push_back(event(
                        "progress",
                        None,
                        &ProgressEvent {
                            job_id: change.job,
                            status: change.status,
                            attempt: change.attempt,
                            progress: change.progress,
                            message: change.message.clone(),
                        },
                    )),
                },
                Ok(Signal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Boxed: the database read's future is large, and inlined it would be
                    // reserved in every idle stream (about 5 KiB each).
                    match Box::pin(read(&self.setup, &mut self.last)).await {
                        Ok((events, done)) => {
                            self.finished = done;
                            self.queued.extend(events);
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

/// Signs and checks stream tokens: `base64url(job ‖ user ‖ expiry) . base64url(HMAC-SHA256)`.
pub struct StreamSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for StreamSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamSigner([REDACTED])")
    }
}

impl StreamSigner {
    /// A signer with `secret`, or a random key when there is none.
    pub fn new(secret: Option<&[u8]>) -> StreamSigner {
        let key = match secret {
            Some(secret) => hmac::Key::new(hmac::HMAC_SHA256, secret),
            None => {
                let mut bytes = [0u8; 32];
                rand::fill(&mut bytes);
                hmac::Key::new(hmac::HMAC_SHA256, &bytes)
            }
        };
        StreamSigner { key }
    }

    /// A token for `user` to open a stream of `job` until `expires`; the stream ends at
    /// `session` (the expiry of the credentials that asked for the token), if any.
    pub fn sign(
        &self,
        job: Uuid,
        user: Uuid,
        expires: DateTime<Utc>,
        session: Option<DateTime<Utc>>,
    ) -> String {
        let mut payload = Vec::with_capacity(48);
        payload.extend_from_slice(job.as_bytes());
        payload.extend_from_slice(user.as_bytes());
        payload.extend_from_slice(&expires.timestamp().to_be_bytes());
        let session = session.map_or(i64::MAX, |s| s.timestamp());
        payload.extend_from_slice(&session.to_be_bytes());
        let tag = hmac::sign(&self.key, &payload);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The user a token lets follow `job` and when the stream must end, if the token is
    /// genuine, for `job` and not expired.
    pub fn verify(
        &self,
        token: &str,
        job: Uuid,
        now: DateTime<Utc>,
    ) -> Option<(Uuid, Option<DateTime<Utc>>)> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, &payload, &tag).ok()?;
        if payload.len() != 48 {
            return None;
        }
        let token_job = Uuid::from_slice(&payload[..16]).ok()?;
        let user = Uuid::from_slice(&payload[16..32]).ok()?;
        let expires = i64::from_be_bytes(payload[32..40].try_into().ok()?);
        let session = i64::from_be_bytes(payload[40..48].try_into().ok()?);
        let session = (session != i64::MAX)
            .then(|| DateTime::from_timestamp(session, 0))
            .flatten();
        (token_job == job && now.timestamp() <= expires).then_some((user, session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_tokens_are_bound_to_job_key_and_time() {
        let signer = StreamSigner::new(Some(b"k"));
        let (job, user) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let session = DateTime::from_timestamp(now.timestamp() + 3600, 0);
        let token = signer.sign(job, user, now + chrono::Duration::seconds(60), session);
        assert_eq!(signer.verify(&token, job, now), Some((user, session)));
        let service = signer.sign(job, user, now + chrono::Duration::seconds(60), None);
        assert_eq!(signer.verify(&service, job, now), Some((user, None)));
        assert_eq!(signer.verify(&token, Uuid::new_v4(), now), None);
        assert_eq!(
            signer.verify(&token, job, now + chrono::Duration::seconds(61)),
            None
        );
        assert_eq!(
            StreamSigner::new(Some(b"other")).verify(&token, job, now),
            None
        );
        let mut forged = token.clone();
        forged.insert(3, 'A');
        assert_eq!(signer.verify(&forged, job, now), None);
    }
}
