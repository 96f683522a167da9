//! At most one execution of a job at a time, whatever dies: a killed worker leaves no program
//! behind, healthy jobs keep their leases in every accepted configuration, and a worker that
//! gives a lease up says so in the history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use sqlx::PgPool;
use studio_worker::queue::{JobStatus, NewJob, Queue};

use crate::harness::{
    ConfigFile, Daemon, Proxy, WORKER_LOGIN, create_user, database_url, upstream, wait_for,
    wait_for_status, worker_pool,
};

const PATIENCE: Duration = Duration::from_secs(30);

/// A kind whose program records its pid and those of two children (one in its process group,
/// one that left it with `setsid`), then ticks `<attempt> <ns since epoch>` into `ticks` every
/// 100 ms for `seconds`, then succeeds.
fn ticking_kind(dir: &Path, seconds: u32) -> String {
    let script = format!(
        "echo $$ >> \"$1/pids\"; sleep 60 & echo $! >> \"$1/pids\"; \
         setsid sleep 60 & echo $! >> \"$1/pids\"; \
         i=0; while [ $i -lt {ticks} ]; do echo \"$STUDIO_JOB_ATTEMPT $(date +%s%N)\" >> \"$1/ticks\"; \
         sleep 0.1; i=$((i+1)); done; echo '{{}}'",
        ticks = seconds * 10
    );
    format!(
        "[kinds.tick]\nexecutor = \"command\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}, \"sh\", {dir:?}]\n",
        dir = dir.display().to_string()
    )
}

/// A directory for the program's own records.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("studio-ticks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Alive means present and not a zombie (a killed process whose parent has not reaped it yet
/// runs nothing).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat[stat.rfind(')')? + 1..].trim_start().to_owned();
            rest.chars().next()
        })
        .is_some_and(|state| state != 'Z')
}

/// (first, last) tick of each attempt, in ns since the epoch.
fn tick_spans(dir: &Path) -> BTreeMap<u32, (u128, u128)> {
    let mut spans = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("ticks"))
        .unwrap_or_default()
        .lines()
    {
        let Some((attempt, at)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(attempt), Ok(at)) = (attempt.parse::<u32>(), at.trim().parse::<u128>()) else {
            continue;
        };
        let span = spans.entry(attempt).or_insert((at, at));
        span.0 = span.0.min(at);
        span.1 = span.1.max(at);
    }
    spans
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_killed_worker_leaves_no_program_behind_and_attempts_never_overlap(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let url = database_url(&pool, WORKER_LOGIN, None);
    let dir = scratch();
    let config = ConfigFile::new(&ticking_kind(&dir, 4));
    let id = queue
        .enqueue(&NewJob::new(user, "tick", json!({})))
        .await
        .unwrap();
    let crashed = Daemon::start(&url, &config, &[]).await;
    wait_for(
        "the program's children and first tick",
        PATIENCE,
        || async { (pids(&dir).len() == 3 && tick_spans(&dir).contains_key(&1)).then_some(()) },
    )
    .await;
    let started = pids(&dir);
    assert!(started.iter().all(|pid| alive(*pid)));

    crashed.signal(Signal::SIGKILL);
    let killed_at = std::time::Instant::now();
    wait_for(
        "every process of the job gone",
        Duration::from_secs(5),
        || async { started.iter().all(|pid| !alive(*pid)).then_some(()) },
    )
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_millis(1500),
        "the job's processes outlived the worker by {:?}",
        killed_at.elapsed()
    );

    let survivor = Daemon::start(&url, &config, &[]).await;
    let done = wait_for_status(&queue, id, JobStatus::Succeeded, PATIENCE).await;
    assert_eq!(done.attempt, 2, "rescued once after the crash");
    let spans = tick_spans(&dir);
    let (first, second) = (spans[&1], spans[&2]);
    assert!(
        first.1 < second.0,
        "attempt 1 ticked until {} while attempt 2 started at {}",
        first.1,
        second.0
    );
    survivor.signal(Signal::SIGTERM);
    assert!(survivor.exit(PATIENCE).await.0.success());
}

/// A job lasting several leases on an idle database keeps its lease in a configuration at the
/// boundary of what the check at start accepts.
async fn outlives_its_lease_on_the_first_attempt(pool: PgPool, lease: &str, heartbeat: &str) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let config = ConfigFile::with_worker(
        &format!(
            "lease = \"{lease}\"\nheartbeat_interval = \"{heartbeat}\"\nrescue_interval = \"300ms\""
        ),
        "[kinds.long]\nexecutor = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 7; echo '{}'\"]\n",
    );
    let daemon = Daemon::start(&database_url(&pool, WORKER_LOGIN, None), &config, &[]).await;
    let id = queue
        .enqueue(&NewJob::new(user, "long", json!({})))
        .await
        .unwrap();

    let done = wait_for_status(&queue, id, JobStatus::Succeeded, PATIENCE).await;

    assert_eq!(done.attempt, 1, "never stopped for a lease it held");
    daemon.signal(Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;
    assert!(status.success(), "{log}");
    assert!(!log.contains("lease"), "no lease trouble logged:\n{log}");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_two_second_lease_renewed_every_second_holds_a_seven_second_job(pool: PgPool) {
    outlives_its_lease_on_the_first_attempt(pool, "2s", "1s").await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_three_second_lease_renewed_every_second_holds_a_seven_second_job(pool: PgPool) {
    outlives_its_lease_on_the_first_attempt(pool, "3s", "1s").await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_worker_cut_off_from_the_database_kills_the_job_and_records_giving_it_up(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let proxy = Proxy::start(upstream(&pool).await).await;
    let dir = scratch();
    // The worker's own rescuer waits long enough for the worker's record to land first.
    let config = ConfigFile::with_worker(
        "lease = \"3s\"\nheartbeat_interval = \"500ms\"\nrescue_interval = \"1m\"",
        &ticking_kind(&dir, 20),
    );
    let mut daemon = Daemon::start(
        &database_url(&pool, WORKER_LOGIN, Some(proxy.addr)),
        &config,
        &[],
    )
    .await;
    let id = queue
        .enqueue(&NewJob::new(user, "tick", json!({})))
        .await
        .unwrap();
    wait_for("the program and its two children", PATIENCE, || async {
        (pids(&dir).len() == 3).then_some(())
    })
    .await;

    proxy.cut();
    daemon
        .wait_for_log("lease could not be renewed in time", PATIENCE)
        .await;
    let started = pids(&dir);
    wait_for(
        "every process of the job gone",
        Duration::from_secs(5),
        || async { started.iter().all(|pid| !alive(*pid)).then_some(()) },
    )
    .await;
    proxy.restore();

    wait_for("the give-up recorded", PATIENCE, || async {
        let events = queue.events(id).await.ok()?;
        events
            .into_iter()
            .find(|e| e.from_status == JobStatus::Running && e.attempt == 1)
    })
    .await;
    let events = queue.events(id).await.unwrap();
    let ended = events
        .iter()
        .find(|e| e.from_status == JobStatus::Running && e.attempt == 1)
        .unwrap();
    assert_eq!(ended.to_status, JobStatus::Pending, "{events:?}");
    let message = ended.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("gave up") && !message.contains("stopped renewing"),
        "the worker's own account, not the rescuer's: {message:?}"
    );
    daemon.signal(Signal::SIGTERM);
    let _ = daemon.exit(PATIENCE).await;
    queue.pool().close().await;
    crate::harness::worker_sessions_closed(&pool).await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_that_just_succeeded_are_not_reported_as_lost_leases(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    // Renewals every 10 ms race the completions of a stream of short jobs.
    let config = ConfigFile::with_worker(
        "lease = \"2s\"\nheartbeat_interval = \"10ms\"\nrescue_interval = \"300ms\"",
        "[kinds.quick]\nexecutor = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"echo '{}'\"]\nconcurrency = 4\n",
    );
    let daemon = Daemon::start(&database_url(&pool, WORKER_LOGIN, None), &config, &[]).await;
    let jobs: Vec<_> = (0..300)
        .map(|i| NewJob::new(user, "quick", json!({ "i": i })))
        .collect();
    let ids = queue.enqueue_many(&jobs).await.unwrap();

    for id in &ids {
        let done = wait_for_status(&queue, *id, JobStatus::Succeeded, PATIENCE).await;
        assert_eq!(done.attempt, 1);
    }
    daemon.signal(Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("lease lost"),
        "a finished job reported as lost:\n{log}"
    );
}
