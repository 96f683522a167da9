//! The stream hub: one LISTEN per process for the changes of the jobs it watches, fanned out to
//! their watchers in memory, and the watch rows (0027) that make the database announce those
//! jobs' changes, and only theirs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::notify::{self, Change, Heard};

/// Changes buffered per watched job before a slow watcher is told to re-read.
const PER_JOB_BUFFER: usize = 64;
/// How long a watch row lives in the database unless refreshed (a crashed process's rows
/// stop costing anything after this).
const WATCH_TTL: Duration = Duration::from_secs(300);
/// How often this process refreshes its watch rows.
const REFRESH_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub(super) enum Signal {
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
pub(super) struct Watch {
    hub: Arc<Hub>,
    job: Uuid,
    pub(super) rx: broadcast::Receiver<Signal>,
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

    pub(super) fn watch(self: &Arc<Self>, job: Uuid, max: usize) -> Option<Watch> {
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
    pub(super) async fn registered(&self, watch: &Watch) -> Result<bool, sqlx::Error> {
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
