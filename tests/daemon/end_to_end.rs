//! Jobs through the binary's `command` and `http` executors, and its operations endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::queue::{JobStatus, NewJob, Queue};

use crate::harness::{
    ConfigFile, Daemon, WORKER_LOGIN, create_user, database_url, run_command, wait_for_status,
    worker_pool,
};

const PATIENCE: Duration = Duration::from_secs(20);

fn render_script() -> String {
    format!("{}/examples/render.sh", env!("CARGO_MANIFEST_DIR"))
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn command_jobs_record_progress_results_and_errors(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let config = ConfigFile::new(&format!(
        r#"
[kinds.render]
executor = "command"
command = ["{script}"]
max_attempts = 3

[kinds.flaky]
executor = "command"
command = ["/bin/sh", "-c", "echo 'GPU not ready' >&2; exit 3"]
backoff = {{ base = "50ms", max = "100ms", jitter = 0.0 }}
"#,
        script = render_script()
    ));
    let daemon = Daemon::start(&database_url(&pool, WORKER_LOGIN, None), &config, &[]).await;

    let good = queue
        .enqueue(&NewJob::new(user, "render", json!({ "frames": 2 })))
        .await
        .unwrap();
    let refused = queue
        .enqueue(&NewJob::new(user, "render", json!({ "fail": true })))
        .await
        .unwrap();
    let flaky = queue
        .enqueue(&NewJob::new(user, "flaky", json!({})).max_attempts(2))
        .await
        .unwrap();

    let done = wait_for_status(&queue, good, JobStatus::Succeeded, PATIENCE).await;
    let result = done.result.unwrap();
    assert_eq!(result["frames"], 2);
    assert_eq!(
        result["job"],
        good.to_string(),
        "the program saw STUDIO_JOB_ID"
    );
    assert_eq!(done.progress, 100);
    assert_eq!(
        done.progress_message.as_deref(),
        Some("rendered frame 2 of 2")
    );

    let failed = wait_for_status(&queue, refused, JobStatus::Failed, PATIENCE).await;
    assert_eq!(failed.attempt, 1, "exit 65 is permanent");
    assert_eq!(
        failed.error.as_deref(),
        Some("exit status 65"),
        "users read the status"
    );
    assert!(
        failed
            .error_detail
            .unwrap()
            .contains("exit status 65: refusing input"),
        "operators read stderr too"
    );

    let exhausted = wait_for_status(&queue, flaky, JobStatus::Failed, PATIENCE).await;
    assert_eq!(exhausted.attempt, 2, "other exit statuses are retried");
    assert_eq!(exhausted.error.as_deref(), Some("exit status 3"));
    assert_eq!(
        exhausted.error_detail.as_deref(),
        Some("exit status 3: GPU not ready")
    );
    let history: Vec<_> = queue
        .events(flaky)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.from_status, e.to_status))
        .collect();
    use JobStatus::*;
    assert_eq!(
        history,
        vec![
            (Pending, Running),
            (Running, Pending),
            (Pending, Running),
            (Running, Failed)
        ]
    );

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _) = daemon.exit(PATIENCE).await;
    assert!(status.success());
}

/// A local service: /ok echoes, /reject is a 422, /down a 503.
async fn service() -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/ok",
            post(|headers: HeaderMap, Json(body): Json<Value>| async move {
                let attempt = headers
                    .get("x-studio-job-attempt")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let token = headers.get("authorization").is_some();
                Json(json!({ "echo": body, "attempt": attempt, "token_sent": token }))
            }),
        )
        .route(
            "/reject",
            post(|| async { (StatusCode::UNPROCESSABLE_ENTITY, "scene 7 does not exist") }),
        )
        .route(
            "/down",
            post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn http_jobs_succeed_on_2xx_fail_on_4xx_and_retry_on_5xx(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let addr = service().await;
    let config = ConfigFile::new(&format!(
        r#"
[kinds.notify]
executor = "http"
url = "http://{addr}/ok"

[kinds.reject]
executor = "http"
url = "http://{addr}/reject"

[kinds.down]
executor = "http"
url = "http://{addr}/down"
backoff = {{ base = "50ms", max = "100ms", jitter = 0.0 }}
"#
    ));
    let daemon = Daemon::start(
        &database_url(&pool, WORKER_LOGIN, None),
        &config,
        &[(
            "STUDIO_KINDS__NOTIFY__HEADERS__AUTHORIZATION",
            "Bearer s3cr3t-token",
        )],
    )
    .await;

    let ok = queue
        .enqueue(&NewJob::new(user, "notify", json!({ "to": "ada" })))
        .await
        .unwrap();
    let rejected = queue
        .enqueue(&NewJob::new(user, "reject", json!({})))
        .await
        .unwrap();
    let down = queue
        .enqueue(&NewJob::new(user, "down", json!({})).max_attempts(2))
        .await
        .unwrap();

    let done = wait_for_status(&queue, ok, JobStatus::Succeeded, PATIENCE).await;
    assert_eq!(
        done.result,
        Some(json!({ "echo": { "to": "ada" }, "attempt": "1", "token_sent": true }))
    );
    let failed = wait_for_status(&queue, rejected, JobStatus::Failed, PATIENCE).await;
    assert_eq!(failed.attempt, 1);
    assert_eq!(
        failed.error.as_deref(),
        Some("the service answered HTTP 422 Unprocessable Entity")
    );
    assert_eq!(
        failed.error_detail.as_deref(),
        Some("the service answered HTTP 422 Unprocessable Entity: scene 7 does not exist")
    );
    let exhausted = wait_for_status(&queue, down, JobStatus::Failed, PATIENCE).await;
    assert_eq!(exhausted.attempt, 2);
    assert_eq!(
        exhausted.error.as_deref(),
        Some("the service answered HTTP 503 Service Unavailable")
    );
    assert_eq!(
        exhausted.error_detail.as_deref(),
        Some("the service answered HTTP 503 Service Unavailable: maintenance")
    );

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;
    assert!(status.success());
    assert!(
        !log.contains("s3cr3t-token"),
        "a header secret reached the logs"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_operations_endpoint_reports_health_readiness_and_metrics(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let config = ConfigFile::new(&format!(
        "[kinds.render]\nexecutor = \"command\"\ncommand = [\"{}\"]\n",
        render_script()
    ));
    let daemon = Daemon::start(
        &database_url(&pool, WORKER_LOGIN, None),
        &config,
        &[("STUDIO_HTTP__LISTEN", &listen)],
    )
    .await;
    let id = queue
        .enqueue(&NewJob::new(user, "render", json!({ "frames": 1 })))
        .await
        .unwrap();
    wait_for_status(&queue, id, JobStatus::Succeeded, PATIENCE).await;
    queue
        .enqueue(&NewJob::new(user, "later", json!({})))
        .await
        .unwrap();
    queue.pause_kind("later", None).await.unwrap();
    let get = |path: &str| {
        let url = format!("http://{listen}{path}");
        async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    assert_eq!(get("/healthz").await.0, 200);
    let (ready, body) = get("/readyz").await;
    assert_eq!(ready, 200, "{body}");
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "studio_jobs_claimed_total{kind=\"render\"} 1",
        "studio_jobs_succeeded_total{kind=\"render\"} 1",
        "studio_job_duration_seconds_bucket{kind=\"render\",outcome=\"succeeded\"",
        "studio_jobs_pending{kind=\"later\"} 1",
        "studio_jobs_oldest_pending_seconds{kind=\"later\"}",
        "studio_kind_paused{kind=\"later\"} 1",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }

    daemon.signal(nix::sys::signal::Signal::SIGINT);
    let (status, _) = daemon.exit(PATIENCE).await;
    assert!(status.success(), "SIGINT also drains and exits 0");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn deterministic_failures_are_permanent_and_leave_operators_a_trace(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let config = ConfigFile::new(
        r#"
[kinds.chatty]
executor = "command"
command = ["/bin/sh", "-c", "echo 'loading model'; echo '{\"ok\": true}'"]

[kinds.huge]
executor = "command"
command = ["/bin/sh", "-c", "head -c 1100000 /dev/zero | tr '\\0' 'x'; echo"]

[kinds.broken]
executor = "command"
command = ["/bin/sh", "-c", "no-such-tool-anywhere --render"]
"#,
    );
    let daemon = Daemon::start(&database_url(&pool, WORKER_LOGIN, None), &config, &[]).await;
    let mut ids = Vec::new();
    for kind in ["chatty", "huge", "broken"] {
        let job = NewJob::new(user, kind, json!({})).max_attempts(3);
        ids.push(queue.enqueue(&job).await.unwrap());
    }

    let chatty = wait_for_status(&queue, ids[0], JobStatus::Failed, PATIENCE).await;
    let huge = wait_for_status(&queue, ids[1], JobStatus::Failed, PATIENCE).await;
    let broken = wait_for_status(&queue, ids[2], JobStatus::Failed, PATIENCE).await;

    for job in [&chatty, &huge, &broken] {
        assert_eq!(job.attempt, 1, "not retried for the same result: {job:?}");
    }
    assert_eq!(
        chatty.error.as_deref(),
        Some("the program exited 0 but its output is not one JSON document")
    );
    let kept = chatty.error_detail.unwrap();
    assert!(
        kept.contains("loading model") && kept.contains("{\"ok\": true}"),
        "its stdout is kept for operators: {kept}"
    );
    assert!(huge.error.unwrap().contains("output exceeds"));
    assert_eq!(
        broken.error.as_deref(),
        Some("the program could not be started (exit status 127)")
    );
    assert!(
        broken
            .error_detail
            .unwrap()
            .contains("no-such-tool-anywhere"),
        "operators read the shell's complaint"
    );
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = daemon.exit(PATIENCE).await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_missing_or_unexecutable_program_stops_start_up_naming_the_key(pool: PgPool) {
    let url = database_url(&pool, WORKER_LOGIN, None);
    let missing = ConfigFile::new(
        "[kinds.render]\nexecutor = \"command\"\ncommand = [\"/srv/render/does-not-exist\"]\n",
    );
    let (code, log) = run_command(&["run"], &url, Some(&missing), &[]).await;
    assert_eq!(code, 2, "a configuration problem: {log}");
    assert!(
        log.contains("kinds.render.command") && log.contains("no such program"),
        "{log}"
    );

    let unexecutable = ConfigFile::new(&format!(
        "[kinds.render]\nexecutor = \"command\"\ncommand = [\"{}/Cargo.toml\"]\n",
        env!("CARGO_MANIFEST_DIR")
    ));
    let (code, log) = run_command(&["run"], &url, Some(&unexecutable), &[]).await;
    assert_eq!(code, 2, "a configuration problem: {log}");
    assert!(log.contains("not an executable file"), "{log}");

    let unresolvable = ConfigFile::new(
        "[kinds.call]\nexecutor = \"http\"\nurl = \"http://render-farm.invalid/run?token=s3cret\"\n",
    );
    let (code, log) = run_command(&["run"], &url, Some(&unresolvable), &[]).await;
    assert_eq!(code, 2, "a configuration problem: {log}");
    assert!(
        log.contains("kinds.call.url") && log.contains("render-farm.invalid"),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "no query string: {log}");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn running_gauges_go_back_to_zero_when_the_last_job_finishes(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let config = ConfigFile::new(
        "[kinds.sleep]\nexecutor = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1.5; echo '{}'\"]\n",
    );
    let daemon = Daemon::start(
        &database_url(&pool, WORKER_LOGIN, None),
        &config,
        &[("STUDIO_HTTP__LISTEN", &listen)],
    )
    .await;
    let metric = |name: &'static str| {
        let url = format!("http://{listen}/metrics");
        async move {
            let body = reqwest::get(url).await.ok()?.text().await.ok()?;
            body.lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        }
    };
    let ids: Vec<_> = (0..3)
        .map(|i| NewJob::new(user, "sleep", json!({ "i": i })))
        .collect();
    let ids = queue.enqueue_many(&ids).await.unwrap();
    crate::harness::wait_for("three running in the gauges", PATIENCE, || async {
        let cluster = metric("studio_jobs_running{kind=\"sleep\"}").await?;
        let here = metric("studio_worker_running_jobs").await?;
        (cluster == 3.0 && here == 3.0).then_some(())
    })
    .await;
    for id in ids {
        wait_for_status(&queue, id, JobStatus::Succeeded, PATIENCE).await;
    }

    crate::harness::wait_for("both gauges back to 0", PATIENCE, || async {
        let cluster = metric("studio_jobs_running{kind=\"sleep\"}").await?;
        let here = metric("studio_worker_running_jobs").await?;
        (cluster == 0.0 && here == 0.0).then_some(())
    })
    .await;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = daemon.exit(PATIENCE).await;
}
