//! `studio-worker bench`: the workload of the shared peer benchmark (no-op jobs: bulk enqueue,
//! burn-down at a given concurrency, enqueue→start latency), run through the real queue with
//! its safety features on: the worker's connections act as `studio_worker` (`SET ROLE`, so RLS
//! policies apply), every transition writes history, every job holds a lease.
//!
//! Safety: the bench refuses a database that holds jobs (or history) it did not create (its
//! users have `@bench.test` addresses, its jobs the kind `noop`), and it creates no role, so
//! nothing outlives a run but its own rows.
//!
//! Prints one `RESULT {json}` line per phase (the harness's driver contract) and a summary on
//! stderr. The no-op handler exists only here; it is not a production executor.

pub(crate) mod api;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Fairness, WorkerSettings};
use crate::handlers::{Handler, HandlerError, JobContext, KindRuntime, Registry};
use crate::queue::{NewJob, Queue};
use crate::worker::Worker;

/// The benchmark's job kind.
pub const KIND: &str = "noop";
/// The role the benchmark's worker connections act as (`SET ROLE` after connecting).
pub const WORKER_ROLE: &str = "studio_worker";

/// Pool options for the benchmark's worker: the admin's connection, acting as `studio_worker`
/// for everything it does, exactly as a login role in that role would. No login role is
/// created, so none can be left behind, and parallel runs cannot race on a cluster-wide name.
fn worker_pool_options(connections: u32) -> PgPoolOptions {
    crate::db::pool_options()
        .max_connections(connections)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("set role studio_worker").execute(conn).await?;
                Ok(())
            })
        })
}

/// Jobs and history rows in the database that this bench did not create.
const FOREIGN_ROWS: &str = "\
select (select count(*) from public.studio_jobs j
         where j.kind not in ('noop', 'bench', 'bench-stream')
            or not exists (select 1 from auth.users u
                            where u.id = j.user_id and u.email like '%@bench.test'))
     + (select count(*) from public.studio_job_events e
         where not exists (select 1 from auth.users u
                            where u.id = e.user_id and u.email like '%@bench.test'))";

/// Connect as `DATABASE_URL`'s role, migrate, and empty the job tables (see
/// [`empty_job_tables`]): the start of every bench phase.
///
/// # Errors
/// Connection or migration errors; a database holding jobs the bench did not create.
pub(crate) async fn prepare_database(admin_options: &PgConnectOptions) -> anyhow::Result<PgPool> {
    let admin = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(admin_options.clone())
        .await
        .context("connecting to DATABASE_URL")?;
    crate::db::MIGRATOR.run(&admin).await?;
    empty_job_tables(&admin).await?;
    // Jobs are enqueued before any bench worker registers: the bench's kinds are declared.
    let kinds = crate::control::Control::new(admin.clone()).kinds();
    for kind in ["noop", "bench", "bench-stream"] {
        kinds.declare(kind, Some("studio-worker bench")).await?;
    }
    Ok(admin)
}

/// Empty the job tables and remove earlier bench runs' users, after checking, under a lock so
/// that nobody adds rows in between, that every row is the bench's own: a database holding
/// jobs the bench did not create is refused, never emptied.
///
/// # Errors
/// Foreign rows; database errors.
pub(crate) async fn empty_job_tables(admin: &PgPool) -> anyhow::Result<()> {
    let mut tx = admin.begin().await?;
    // Nobody adds rows between the check and the truncate.
    sqlx::query(
        "lock table public.studio_jobs, public.studio_job_events in share row exclusive mode",
    )
    .execute(&mut *tx)
    .await?;
    let foreign: i64 = sqlx::query_scalar(FOREIGN_ROWS).fetch_one(&mut *tx).await?;
    anyhow::ensure!(
        foreign == 0,
        "this database holds jobs it did not create ({foreign} job or history row(s)), and \
         `studio-worker bench` empties the job tables: run it in a database of its own \
         (`createdb studio_bench`, then DATABASE_URL=postgres://…/studio_bench)"
    );
    sqlx::raw_sql(
        "truncate public.studio_jobs, public.studio_job_events;
         delete from auth.users where email like '%@bench.test';",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `count` new users with `@bench.test` addresses (what [`empty_job_tables`] recognises as
/// the bench's own).
///
/// # Errors
/// Database errors.
pub(crate) async fn create_users(admin: &PgPool, count: usize) -> anyhow::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
    let emails: Vec<String> = ids.iter().map(|id| format!("{id}@bench.test")).collect();
    sqlx::query("insert into auth.users (id, email) select * from unnest($1::uuid[], $2::text[])")
        .bind(&ids)
        .bind(&emails)
        .execute(admin)
        .await?;
    Ok(ids)
}

/// How the benchmark's worker is configured.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Execution slots.
    pub concurrency: usize,
    /// Jobs claimed ahead of free slots, whatever their run time (`worker.prefetch`).
    pub prefetch: usize,
    /// Adaptive prefetch (`worker.prefetch_wait`; zero: off).
    pub prefetch_wait: Duration,
    /// Fair (round robin over users) or FIFO claims.
    pub fair: bool,
}

impl Shape {
    /// `worker.fairness` as configured: `fair` or `fifo`.
    fn fairness(&self) -> &'static str {
        if self.fair { "fair" } else { "fifo" }
    }
}

/// Counts executions and records when each job (by its `i`) started.
struct Recorder {
    done: AtomicUsize,
    started: Mutex<HashMap<u64, Instant>>,
    record_starts: bool,
}

impl Recorder {
    fn new(record_starts: bool) -> Arc<Recorder> {
        Arc::new(Recorder {
            done: AtomicUsize::new(0),
            started: Mutex::new(HashMap::new()),
            record_starts,
        })
    }
}

struct Noop(Arc<Recorder>);

#[async_trait::async_trait]
impl Handler for Noop {
    async fn run(&self, job: JobContext) -> Result<Value, HandlerError> {
        if self.0.record_starts
            && let Some(i) = job.input.get("i").and_then(Value::as_u64)
        {
            let now = Instant::now();
            if let Ok(mut started) = self.0.started.lock() {
                started.entry(i).or_insert(now);
            }
        }
        self.0.done.fetch_add(1, Ordering::Relaxed);
        Ok(Value::Null)
    }
}

/// Connections for one benchmark run.
pub struct Bench {
    admin: PgPool,
    worker_options: PgConnectOptions,
    users: Vec<Uuid>,
}

impl Bench {
    /// Migrate, remove earlier bench runs' jobs and users, and create `users` users. `admin`
    /// must be able to `SET ROLE studio_worker` (a superuser, or a member of that role).
    ///
    /// # Errors
    /// A database holding jobs or history the bench did not create (it is never emptied);
    /// database errors.
    pub async fn prepare(
        admin_options: PgConnectOptions,
        users: usize,
        finished: usize,
    ) -> anyhow::Result<Bench> {
        let admin = prepare_database(&admin_options).await?;
        let ids = create_users(&admin, users.max(1)).await?;
        if finished > 0 {
            add_finished_history(&admin, &ids, finished).await?;
        }
        sqlx::query("vacuum analyze public.studio_jobs")
            .execute(&admin)
            .await?;
        Ok(Bench {
            admin,
            worker_options: admin_options,
            users: ids,
        })
    }

    async fn worker_pool(&self, connections: u32) -> anyhow::Result<PgPool> {
        worker_pool_options(connections)
            .connect_with(self.worker_options.clone())
            .await
            .with_context(|| format!("connecting as {WORKER_ROLE}"))
    }

    fn job(&self, i: usize) -> NewJob {
        NewJob::new(self.users[i % self.users.len()], KIND, json!({ "i": i }))
    }

    /// What `count` open API streams leave in the database for the worker's statements to
    /// meet: `count` rows of `studio_job_watches`, for jobs that are not part of the burn-down
    /// (ids of no job here: the rows are what the triggers read, and nothing else differs from
    /// a run without them). Written directly, as the bench's own role may.
    ///
    /// # Errors
    /// Database errors.
    pub async fn watch_others(&self, count: usize) -> anyhow::Result<()> {
        if count == 0 {
            return Ok(());
        }
        sqlx::query(
            "insert into public.studio_job_watches (job_id, watcher, expires_at)
             select gen_random_uuid(), 'a-' || lpad(to_hex(g), 12, '0'), now() + interval '1 hour'
               from generate_series(1, $1) g",
        )
        .bind(i32::try_from(count).unwrap_or(i32::MAX))
        .execute(&self.admin)
        .await?;
        Ok(())
    }

    async fn unfinished(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "select count(*) from public.studio_jobs where status in ('pending', 'running')",
        )
        .fetch_one(&self.admin)
        .await?)
    }

    /// Burn-down: enqueue `n` jobs in batches of `batch`, then time `processes` worker processes
    /// (this one when 1) shaped by `shape` until every job is completed and committed.
    ///
    /// # Errors
    /// Database errors, or jobs that never finish.
    pub async fn throughput(
        &self,
        n: usize,
        shape: Shape,
        batch: usize,
        processes: usize,
    ) -> anyhow::Result<Value> {
        let pool = self.worker_pool(pool_size(shape.concurrency)).await?;
        let queue = Queue::new(pool.clone());
        let started = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(batch.max(1)) {
            let jobs: Vec<NewJob> = chunk.iter().map(|i| self.job(*i)).collect();
            queue.enqueue_many(&jobs).await?;
        }
        let enqueue_s = started.elapsed().as_secs_f64();

        let recorder = Recorder::new(false);
        let shutdown = CancellationToken::new();
        let server = postmaster(&self.admin).await;
        let cpu_before = (own_cpu_s(), server.and_then(server_cpu_s));
        let started = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(600);
        let (process_s, peak_rss) = if processes <= 1 {
            let worker = spawn_worker(queue, shape, recorder.clone(), &shutdown);
            while recorder.done.load(Ordering::Relaxed) < n || self.unfinished().await? > 0 {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "jobs did not finish within 10 minutes"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let process_s = started.elapsed().as_secs_f64();
            shutdown.cancel();
            worker.await??;
            (process_s, peak_rss_mib())
        } else {
            let mut children = Vec::new();
            for _ in 0..processes {
                children.push(spawn_process(shape)?);
            }
            while self.unfinished().await? > 0 {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "jobs did not finish within 10 minutes"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let process_s = started.elapsed().as_secs_f64();
            let mut peak = 0f64;
            for child in children {
                peak = peak.max(stop_process(child).await?);
            }
            (process_s, peak)
        };
        let cpu_after = (own_cpu_s(), server.and_then(server_cpu_s));
        let per_1000 =
            |before: Option<f64>, after: Option<f64>| Some((after? - before?) / n as f64 * 1000.0);
        pool.close().await;
        Ok(json!({
            "system": "studio-worker",
            "version": env!("CARGO_PKG_VERSION"),
            "phase": "throughput",
            "worker_cpu_s_per_1000": per_1000(cpu_before.0, cpu_after.0),
            "pg_cpu_s_per_1000": per_1000(cpu_before.1, cpu_after.1),
            "n": n,
            "enqueue_batch": batch,
            "concurrency": shape.concurrency,
            "prefetch": shape.prefetch,
            "prefetch_wait_ms": shape.prefetch_wait.as_secs_f64() * 1000.0,
            "fairness": shape.fairness(),
            "processes": processes,
            "users": self.users.len(),
            "enqueue_jobs_per_s": n as f64 / enqueue_s,
            "process_jobs_per_s": n as f64 / process_s,
            "enqueue_s": enqueue_s,
            "process_s": process_s,
            "peak_rss_mib": peak_rss,
        }))
    }

    /// Claim cost: median and p99 time of one claim of `batch` jobs (and their completion) from
    /// a table that also holds the finished history created by [`Bench::prepare`].
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_cost(
        &self,
        shape: Shape,
        batch: u32,
        rounds: usize,
    ) -> anyhow::Result<Value> {
        let pool = self.worker_pool(4).await?;
        let queue = Queue::new(pool.clone());
        let n = batch as usize * rounds;
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let jobs: Vec<NewJob> = chunk.iter().map(|i| self.job(*i)).collect();
            queue.enqueue_many(&jobs).await?;
        }
        let worker = crate::queue::WorkerId::generate();
        let kinds = vec![KIND.to_owned()];
        let policy = crate::queue::ClaimPolicy {
            order: if shape.fair {
                crate::queue::ClaimOrder::Fair { after: Uuid::nil() }
            } else {
                crate::queue::ClaimOrder::Fifo
            },
            ..crate::queue::ClaimPolicy::default()
        };
        let mut claims = Vec::with_capacity(rounds);
        let null = Value::Null;
        for _ in 0..rounds {
            let started = Instant::now();
            let jobs = queue
                .claim_with(
                    &crate::queue::ClaimRequest {
                        worker: &worker,
                        kinds: &kinds,
                        limit: batch,
                        lease: Duration::from_secs(30),
                        now: None,
                    },
                    &policy,
                )
                .await?;
            claims.push(started.elapsed().as_secs_f64() * 1000.0);
            let done: Vec<_> = jobs.iter().map(|j| (j.id, j.attempt, &null)).collect();
            queue.complete_many(&worker, &done).await?;
        }
        pool.close().await;
        claims.sort_by(f64::total_cmp);
        let finished: i64 = sqlx::query_scalar(
            "select count(*) from public.studio_jobs where finished_at is not null",
        )
        .fetch_one(&self.admin)
        .await?;
        Ok(json!({
            "system": "studio-worker",
            "phase": "claim_cost",
            "batch": batch,
            "rounds": rounds,
            "finished_rows": finished,
            "fairness": shape.fairness(),
            "claim_p50_ms": percentile(&claims, 50.0),
            "claim_p99_ms": percentile(&claims, 99.0),
        }))
    }

    /// Latency: an idle worker shaped by `shape`; `count` single enqueues `gap` apart; time
    /// from just before each enqueue call to its handler's start.
    ///
    /// # Errors
    /// Database errors.
    pub async fn latency(
        &self,
        count: usize,
        gap: Duration,
        shape: Shape,
        idle: Duration,
    ) -> anyhow::Result<Value> {
        let pool = self.worker_pool(pool_size(shape.concurrency)).await?;
        let queue = Queue::new(pool.clone());
        let recorder = Recorder::new(true);
        let shutdown = CancellationToken::new();
        let worker = spawn_worker(queue.clone(), shape, recorder.clone(), &shutdown);
        tokio::time::sleep(idle).await;

        let t0 = Instant::now();
        let mut called = Vec::with_capacity(count);
        for i in 0..count {
            let due = t0 + gap * u32::try_from(i).unwrap_or(u32::MAX);
            tokio::time::sleep_until(due.into()).await;
            called.push(Instant::now());
            queue.enqueue(&self.job(i)).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while recorder.done.load(Ordering::Relaxed) < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        worker.await??;
        pool.close().await;

        let started = recorder
            .started
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let mut latencies: Vec<f64> = called
            .iter()
            .enumerate()
            .filter_map(|(i, at)| {
                started
                    .get(&(i as u64))
                    .map(|s| s.duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
        Ok(json!({
            "system": "studio-worker",
            "version": env!("CARGO_PKG_VERSION"),
            "phase": "latency",
            "count": count,
            "gap_ms": u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
            "concurrency": shape.concurrency,
            "prefetch": shape.prefetch,
            "fairness": shape.fairness(),
            "p50_ms": percentile(&latencies, 50.0),
            "p99_ms": percentile(&latencies, 99.0),
            "max_ms": latencies.last().copied().unwrap_or(f64::NAN),
            "mean_ms": mean,
            "received": latencies.len(),
            "missing": count - latencies.len(),
            "peak_rss_mib": peak_rss_mib(),
        }))
    }
}

fn pool_size(concurrency: usize) -> u32 {
    u32::try_from(concurrency.max(8) + 2)
        .unwrap_or(u32::MAX)
        .min(40)
}

fn settings(shape: Shape) -> WorkerSettings {
    WorkerSettings {
        concurrency: shape.concurrency,
        prefetch: shape.prefetch,
        prefetch_wait: shape.prefetch_wait,
        fairness: if shape.fair {
            Fairness::Fair
        } else {
            Fairness::Fifo
        },
        max_running_per_user: 0,
        lease: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(5),
        poll_interval: Duration::from_secs(1),
        listen: true,
        rescue_interval: Duration::from_secs(15),
        shutdown_grace: Duration::from_secs(5),
        max_backoff: Duration::from_secs(2),
    }
}

fn spawn_worker(
    queue: Queue,
    shape: Shape,
    recorder: Arc<Recorder>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let mut registry = Registry::new();
    registry.register(KIND, KindRuntime::new(Noop(recorder), shape.concurrency));
    tokio::spawn(Worker::new(queue, registry, settings(shape)).run(shutdown.clone()))
}

/// `bench work`: one more worker process for the scaling runs; works until SIGTERM, then prints
/// its peak RSS.
///
/// # Errors
/// Database errors.
pub async fn work(admin_options: PgConnectOptions, shape: Shape) -> anyhow::Result<Value> {
    let pool = worker_pool_options(pool_size(shape.concurrency))
        .connect_with(admin_options)
        .await
        .with_context(|| format!("connecting as {WORKER_ROLE}"))?;
    let recorder = Recorder::new(false);
    let shutdown = CancellationToken::new();
    let worker = spawn_worker(Queue::new(pool.clone()), shape, recorder.clone(), &shutdown);
    crate::shutdown::signal().await?;
    shutdown.cancel();
    worker.await??;
    pool.close().await;
    Ok(
        json!({ "phase": "work", "executed": recorder.done.load(Ordering::Relaxed), "peak_rss_mib": peak_rss_mib() }),
    )
}

fn spawn_process(shape: Shape) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe()?;
    Ok(tokio::process::Command::new(exe)
        .args([
            "bench",
            "work",
            "--concurrency",
            &shape.concurrency.to_string(),
            "--prefetch",
            &shape.prefetch.to_string(),
            "--prefetch-wait",
            &humantime::format_duration(shape.prefetch_wait).to_string(),
            "--fairness",
            shape.fairness(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// SIGTERM a `bench work` process and read its peak RSS.
async fn stop_process(child: tokio::process::Child) -> anyhow::Result<f64> {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .context("child already exited")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let output = child.wait_with_output().await?;
    let text = String::from_utf8_lossy(&output.stdout);
    let result: Value = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|json| serde_json::from_str(json).ok())
        .context("bench work printed no result")?;
    Ok(result["peak_rss_mib"].as_f64().unwrap_or(f64::NAN))
}

/// Finished jobs (and their two history rows each) as a long-running studio would have them,
/// written directly: this is set-up, not measured.
async fn add_finished_history(
    admin: &PgPool,
    users: &[Uuid],
    finished: usize,
) -> anyhow::Result<()> {
    let mut tx = admin.begin().await?;
    // Triggers would refuse rows created as succeeded; the history is inserted explicitly below.
    sqlx::query("set local session_replication_role = replica")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into public.studio_jobs
           (user_id, kind, input, status, attempt, started_at, finished_at, created_at, result)
         select ($1::uuid[])[1 + g % cardinality($1::uuid[])], 'noop', jsonb_build_object('i', g),
                'succeeded', 1, now() - interval '1 day', now() - interval '1 day',
                now() - interval '1 day', 'null'::jsonb
           from generate_series(1, $2) g",
    )
    .bind(users)
    .bind(i64::try_from(finished)?)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into public.studio_job_events (job_id, user_id, from_status, to_status, attempt, worker, created_at)
         select id, user_id, s.from_status, s.to_status, 1, 'bench', finished_at
           from public.studio_jobs
           cross join (values ('pending', 'running'), ('running', 'succeeded')) as s(from_status, to_status)
          where status = 'succeeded'",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Linux reports CPU times in clock ticks of `USER_HZ`, 100 per second in its user ABI.
const TICKS_PER_S: f64 = 100.0;

/// The CPU fields of `/proc/<pid>/stat` after the command name: (parent pid, own ticks, ticks of
/// waited-for children).
fn proc_stat(pid: &str) -> Option<(i32, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let ppid = fields.get(1)?.parse().ok()?;
    Some((ppid, number(11)? + number(12)?, number(13)? + number(14)?))
}

/// CPU seconds of process `pid` (`self` for this one), without its children.
pub(crate) fn process_cpu_s(pid: &str) -> Option<f64> {
    let (_, own, _) = proc_stat(pid)?;
    Some(own as f64 / TICKS_PER_S)
}

/// CPU seconds of this process and the `bench work` processes it waited for.
fn own_cpu_s() -> Option<f64> {
    let (_, own, children) = proc_stat("self")?;
    Some((own + children) as f64 / TICKS_PER_S)
}

/// The PostgreSQL server's main process, when it runs on this machine: the parent of the
/// bench's backend.
pub(crate) async fn postmaster(admin: &PgPool) -> Option<i32> {
    let backend: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(admin)
        .await
        .ok()?;
    proc_stat(&backend.to_string()).map(|(ppid, _, _)| ppid)
}

/// CPU seconds of every process of the PostgreSQL server `postmaster` (backends that have
/// exited included: the postmaster accounts for the children it reaped). Every database of
/// the cluster counts: measure on a cluster of its own.
pub(crate) fn server_cpu_s(postmaster: i32) -> Option<f64> {
    let (_, own, reaped) = proc_stat(&postmaster.to_string())?;
    let mut ticks = own + reaped;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some((ppid, own, _)) = proc_stat(pid)
            && ppid == postmaster
        {
            ticks += own;
        }
    }
    Some(ticks as f64 / TICKS_PER_S)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
