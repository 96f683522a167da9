//! What a new user meets in their first hour (issue 14): exit codes, error output, fail-fast
//! operator commands, readable tables, `prune --dry-run`, the bench's and the demo's safety, and
//! a schema applied by another tool.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{
    BIN, ConfigFile, Daemon, WORKER_LOGIN, create_user, database_url, run_command, worker_pool,
};

/// Run the binary with exactly `env` (plus PATH); (exit code, stdout + stderr).
async fn run_bare(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// A local port nobody listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

// Item 12 ----------------------------------------------------------------------------------------

#[tokio::test]
async fn every_configuration_error_exits_2() {
    let (code, out) = run_bare(&["stats"], &[]).await;
    assert_eq!(code, 2, "missing DATABASE_URL: {out}");
    assert!(out.contains("DATABASE_URL"), "{out}");

    let (code, out) = run_bare(&["stats"], &[("DATABASE_URL", "mysql://u@127.0.0.1/app")]).await;
    assert_eq!(code, 2, "a MySQL URL: {out}");
    assert!(out.contains("postgres://"), "{out}");

    let port = closed_port().await;
    let url = format!("postgres://u@127.0.0.1:{port}/app");
    let (code, out) = run_bare(&["run"], &[("DATABASE_URL", &url)]).await;
    assert_eq!(code, 2, "no kinds: {out}");
    assert!(out.contains("kinds"), "{out}");
}

// Item 11 ----------------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn a_failure_is_printed_once_without_noise_and_with_a_hint(pool: PgPool) {
    let owner = pool.connect_options().get_username().to_owned();
    let url = database_url(&pool, &owner, None);

    let (code, out) = run_command(&["stats"], &url, None, &[("RUST_BACKTRACE", "1")]).await;

    assert_eq!(code, 1, "{out}");
    let needle = "relation \"public.studio_jobs\" does not exist";
    assert_eq!(out.matches(needle).count(), 1, "printed once: {out}");
    assert!(!out.contains("at line"), "no PostgreSQL source line: {out}");
    assert!(!out.to_lowercase().contains("backtrace"), "{out}");
    assert!(out.contains("studio-worker migrate"), "a hint: {out}");
    assert!(
        !out.contains('\u{1b}'),
        "no colour when not a terminal: {out:?}"
    );
}

// Item 10 ----------------------------------------------------------------------------------------

#[tokio::test]
async fn operator_commands_fail_fast_with_the_root_cause() {
    let port = closed_port().await;
    let url = format!("postgres://u@127.0.0.1:{port}/app");
    let started = Instant::now();

    let (code, out) = run_bare(&["stats"], &[("DATABASE_URL", &url)]).await;

    assert_eq!(code, 1, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.to_lowercase().contains("connection refused"), "{out}");
}

#[tokio::test]
async fn the_daemon_waits_for_the_database_no_longer_than_startup_timeout() {
    let port = closed_port().await;
    let url = format!("postgres://u@127.0.0.1:{port}/app");
    let config =
        ConfigFile::new("[kinds.render]\nexecutor = \"command\"\ncommand = [\"/bin/true\"]");
    let path = config.path.to_str().unwrap().to_owned();
    let started = Instant::now();

    let (code, out) = run_bare(
        &["--config", &path, "run"],
        &[
            ("DATABASE_URL", &url),
            ("STUDIO_DATABASE__STARTUP_TIMEOUT", "3s"),
        ],
    )
    .await;

    let took = started.elapsed();
    assert_eq!(code, 1, "{out}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "took {took:?}: {out}"
    );
    assert!(out.to_lowercase().contains("connection refused"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no colour when not a terminal: {out:?}"
    );
}
