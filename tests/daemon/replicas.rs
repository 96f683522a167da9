//! Several replicas against one database: every job runs, and never in two places at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use nix::sys::signal::Signal;
use serde_json::json;
use sqlx::PgPool;
use studio_worker::queue::{NewJob, Queue};

use crate::harness::{
    ConfigFile, Daemon, WORKER_LOGIN, create_user, database_url, status_counts, wait_for,
    worker_pool,
};

/// One execution as the service saw it.
#[derive(Debug, Clone)]
struct Execution {
    attempt: String,
    start: Instant,
    end: Instant,
}

type Log = Arc<Mutex<HashMap<String, Vec<Execution>>>>;

/// A service that takes 0–4 ms per job and records when each execution started and ended.
async fn recording_service() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new()
        .route(
            "/run",
            post(|State(log): State<Log>, headers: HeaderMap| async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                let start = Instant::now();
                let pause = rand::random_range(0..5u64);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let execution = Execution {
                    attempt: header("x-studio-job-attempt"),
                    start,
                    end: Instant::now(),
                };
                log.lock()
                    .unwrap()
                    .entry(header("x-studio-job-id"))
                    .or_default()
                    .push(execution);
                "{}"
            }),
        )
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, log)
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn three_replicas_run_every_job_and_never_one_twice_at_once(pool: PgPool) {
    const JOBS: usize = 2000;
    let users = [
        create_user(&pool).await,
        create_user(&pool).await,
        create_user(&pool).await,
    ];
    let queue = Queue::new(worker_pool(&pool).await);
    let (addr, log) = recording_service().await;
    let config = ConfigFile::new(&format!(
        "[kinds.render]\nexecutor = \"http\"\nurl = \"http://{addr}/run\"\nconcurrency = 8\n"
    ));
    let url = database_url(&pool, WORKER_LOGIN, None);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Daemon::start(&url, &config, &[("STUDIO_WORKER__CONCURRENCY", "8")]).await);
    }

    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(250) {
        let jobs: Vec<_> = chunk
            .iter()
            .map(|i| NewJob::new(users[i % 3], "render", json!({ "i": i })))
            .collect();
        queue.enqueue_many(&jobs).await.unwrap();
    }
    wait_for("every job to succeed", Duration::from_secs(120), || async {
        (status_counts(&pool).await.get("succeeded") == Some(&(JOBS as i64))).then_some(())
    })
    .await;
    for replica in replicas {
        replica.signal(Signal::SIGTERM);
        assert!(replica.exit(Duration::from_secs(30)).await.0.success());
    }

    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), JOBS, "every job reached the service");
    for (job, executions) in &log {
        let mut runs = executions.clone();
        runs.sort_by_key(|e| e.start);
        for pair in runs.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "job {job} ran twice at once: {runs:?}"
            );
        }
    }
    let workers: Vec<(String, i64)> = sqlx::query_as(
        "select worker, count(*) from public.studio_job_events where to_status = 'succeeded' group by worker",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        workers.iter().map(|(_, n)| n).sum::<i64>(),
        JOBS as i64,
        "one success per job"
    );
    assert!(
        workers.len() >= 2,
        "the replicas shared the work: {workers:?}"
    );
    let reruns = log
        .values()
        .filter(|runs| runs.len() > 1 || runs[0].attempt != "1")
        .count();
    assert_eq!(reruns, 0, "no job needed a second attempt");
}
