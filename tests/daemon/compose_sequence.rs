//! The docker-compose stack's sequence, run by hand against the local PostgreSQL (no Docker
//! engine here): the db's init script, `migrate` as the superuser, the demo seed, the worker as
//! `studio_worker_login` with the image's example configuration, and the demo's `enqueue` —
//! each with the command line the compose file gives it.

use std::process::Command as StdCommand;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use sqlx::PgPool;
use studio_worker::queue::{JobStatus, Queue};

use crate::harness::{Daemon, database_url, run_command, wait_for_status, worker_pool};

fn compose_command(service: &str) -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    doc["services"][service]["command"]
        .as_array()
        .unwrap_or_else(|| panic!("compose service {service} has no command list"))
        .iter()
        .map(|w| {
            // The image's files live under /app; here they are in the repository.
            w.as_str()
                .unwrap()
                .replace("/app/", concat!(env!("CARGO_MANIFEST_DIR"), "/"))
        })
        .collect()
}

/// Run a SQL file with psql, as the postgres image's entrypoint and the seed service do.
fn psql(url: &str, file: &str, env: &[(&str, &str)]) {
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let status = StdCommand::new("psql")
        .args([
            url,
            "--no-psqlrc",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-f",
            &path,
        ])
        .envs(env.iter().copied())
        .status()
        .expect("psql is needed for this test (it is what the compose stack runs)");
    assert!(status.success(), "psql -f {file} failed");
}

#[sqlx::test(migrations = false)]
async fn the_compose_sequence_works_against_a_local_postgres(pool: PgPool) {
    let owner = pool.connect_options().get_username().to_owned();
    let admin_url = database_url(&pool, &owner, None);

    psql(
        &admin_url,
        "docker/initdb/00-roles.sql",
        &[
            ("WORKER_DB_PASSWORD", "compose-test-pw"),
            ("API_DB_PASSWORD", "compose-test-api-pw"),
        ],
    );
    let migrate = compose_command("migrate");
    let args: Vec<&str> = migrate.iter().map(String::as_str).collect();
    let (code, out) = run_command(&args, &admin_url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    psql(&admin_url, "docker/seed.sql", &[]);

    let worker_url = database_url(&pool, "studio_worker_login", None);
    let password = [
        ("STUDIO_DATABASE__PASSWORD", "compose-test-pw"),
        ("STUDIO_HTTP__LISTEN", ""),
    ];
    let run = compose_command("worker");
    let run_args: Vec<&str> = run.iter().map(String::as_str).collect();
    let mut daemon = Daemon::spawn(&run_args, &worker_url, None, &password);
    daemon
        .wait_for_log("worker started", Duration::from_secs(30))
        .await;

    let demo = compose_command("demo");
    let demo_args: Vec<&str> = demo.iter().map(String::as_str).collect();
    let (code, out) = run_command(&demo_args, &worker_url, None, &password).await;
    assert_eq!(code, 0, "{out}");
    let id: uuid::Uuid = out.trim().parse().expect("the demo prints the job id");

    let queue = Queue::new(worker_pool(&pool).await);
    let done = wait_for_status(&queue, id, JobStatus::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(done.result.unwrap()["frames"], 5);
    daemon.signal(Signal::SIGTERM);
    let (status, log) = daemon.exit(Duration::from_secs(40)).await;
    assert!(status.success(), "{log}");

    // The API service: its own login role from the init script, able to act as users after
    // the migrations made studio_api a member of authenticated.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let api_env = [
        ("STUDIO_DATABASE__PASSWORD", "compose-test-api-pw"),
        ("STUDIO_HTTP__LISTEN", ""),
        ("STUDIO_API__LISTEN", listen.as_str()),
        (
            "STUDIO_API__JWT_SECRET",
            "compose-test-jwt-secret-0123456789abcdef",
        ),
    ];
    let api = compose_command("api");
    let api_args: Vec<&str> = api.iter().map(String::as_str).collect();
    let api_url = database_url(&pool, "studio_api_login", None);
    let mut api = Daemon::spawn(&api_args, &api_url, None, &api_env);
    api.wait_for_log("serving the job API", Duration::from_secs(30))
        .await;
    api.signal(Signal::SIGTERM);
    let (status, log) = api.exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{log}");
}
