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

// Item 7 -----------------------------------------------------------------------------------------

/// Apply every migration file as the Supabase CLI or psql would: the SQL only, no
/// `_sqlx_migrations`.
async fn apply_like_another_tool(pool: &PgPool) {
    for migration in studio_worker::db::MIGRATOR.iter() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sql.as_str().to_owned()))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("migration {}: {e}", migration.version));
    }
}

#[sqlx::test(migrations = false)]
async fn a_schema_applied_by_another_tool_is_recognised_by_migrate_and_run(pool: PgPool) {
    apply_like_another_tool(&pool).await;
    let owner = pool.connect_options().get_username().to_owned();
    let url = database_url(&pool, &owner, None);

    let (code, out) = run_command(&["migrate"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied by another tool"), "{out}");
    let (code, out) = run_command(&["migrate"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to do"), "{out}");
    assert!(
        !out.contains("already exists, skipping"),
        "no PostgreSQL notices in a one-shot command's output: {out}"
    );

    worker_pool(&pool).await;
    let config =
        ConfigFile::new("[kinds.render]\nexecutor = \"command\"\ncommand = [\"/bin/true\"]");
    let daemon = Daemon::start(&database_url(&pool, WORKER_LOGIN, None), &config, &[]).await;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = daemon.exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{log}");
}

#[sqlx::test(migrations = false)]
async fn migrate_refuses_a_schema_another_tool_applied_without_a_version(pool: PgPool) {
    // Another tool applied the files before 0011 (which records the version) existed.
    for migration in studio_worker::db::MIGRATOR
        .iter()
        .filter(|m| m.version < 11)
    {
        sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sql.as_str().to_owned()))
            .execute(&pool)
            .await
            .unwrap();
    }
    let owner = pool.connect_options().get_username().to_owned();
    let url = database_url(&pool, &owner, None);

    let (code, out) = run_command(&["migrate"], &url, None, &[]).await;

    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no migration history") && out.contains("supabase db push"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{out}"
    );
}

#[tokio::test]
async fn migrations_export_writes_supabase_named_files_once() {
    let dir = std::env::temp_dir().join(format!("studio-export-{}", Uuid::new_v4().simple()));
    let dir_arg = dir.to_str().unwrap().to_owned();

    // A mistyped directory is refused, and not created.
    let (code, out) = run_bare(&["migrations", "export", "--supabase", &dir_arg], &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no such directory") && out.contains("--create"),
        "{out}"
    );
    assert!(!dir.exists());

    let (code, out) = run_bare(
        &["migrations", "export", "--supabase", &dir_arg, "--create"],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let after = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), studio_worker::db::MIGRATOR.iter().count());
    for (name, migration) in names.iter().zip(studio_worker::db::MIGRATOR.iter()) {
        let (stamp, rest) = name.split_once('_').unwrap();
        assert!(
            stamp.len() == 14 && stamp.chars().all(|c| c.is_ascii_digit()),
            "{name}"
        );
        assert!(
            rest.starts_with(&format!("studio_{:04}_", migration.version)),
            "{name}"
        );
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(text.contains(migration.sql.as_str()), "{name}");
    }
    // None later than now: a `supabase migration new` made right after sorts after them all.
    assert!(
        names.iter().all(|n| n[..14] <= *after),
        "{after}: {names:?}"
    );

    let (code, out) = run_bare(&["migrations", "export", "--supabase", &dir_arg], &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        names.len(),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// Item 13 ----------------------------------------------------------------------------------------

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn job_tables_fit_the_terminal_and_show_progress_and_results(pool: PgPool) {
    use studio_worker::queue::{ClaimRequest, Failure, NewJob, Queue, WorkerId};
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    for _ in 0..2 {
        queue
            .enqueue(&NewJob::new(user, "render", serde_json::json!({})))
            .await
            .unwrap();
    }
    let me = WorkerId::generate();
    let kinds = vec!["render".to_owned()];
    let claimed = queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: 2,
            lease: Duration::from_secs(60),
            now: None,
        })
        .await
        .unwrap();
    let long_error = "the renderer could not open its scene file because ".repeat(4);
    queue
        .fail(
            &claimed[0].lease(&me),
            &Failure::Permanent {
                error: long_error.clone(),
            },
        )
        .await
        .unwrap();
    sqlx::query(
        "update public.studio_jobs set progress = 40, progress_message = 'frame 2 of 5'
          where id = $1",
    )
    .bind(claimed[1].id)
    .execute(&pool)
    .await
    .unwrap();
    let url = database_url(&pool, WORKER_LOGIN, None);

    let (code, out) = run_command(&["jobs", "list"], &url, None, &[("COLUMNS", "100")]).await;

    assert_eq!(code, 0, "{out}");
    for line in out.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line}\n{out}",
            line.chars().count()
        );
    }
    assert!(out.contains("frame 2 of 5"), "progress message: {out}");
    assert!(out.contains("2 job(s)"), "{out}");
}

// Item 14 ----------------------------------------------------------------------------------------

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn prune_dry_run_counts_without_deleting(pool: PgPool) {
    use studio_worker::queue::{NewJob, Queue};
    let user = create_user(&pool).await;
    let queue = Queue::new(worker_pool(&pool).await);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            queue
                .enqueue(&NewJob::new(user, "render", serde_json::json!({})))
                .await
                .unwrap(),
        );
    }
    queue.cancel(ids[0]).await.unwrap();
    queue.cancel(ids[1]).await.unwrap();
    sqlx::query("update public.studio_jobs set finished_at = now() - interval '40 days' where finished_at is not null")
        .execute(&pool)
        .await
        .unwrap();
    let url = database_url(&pool, WORKER_LOGIN, None);

    let (code, out) = run_command(
        &["prune", "--older-than", "30d", "--dry-run"],
        &url,
        None,
        &[],
    )
    .await;

    assert_eq!(code, 0, "{out}");
    assert!(out.contains("would delete 2 finished job(s)"), "{out}");
    let left: i64 = sqlx::query_scalar("select count(*) from public.studio_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 3);
}

// Item 2 -----------------------------------------------------------------------------------------

async fn bench_login_roles(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select r.rolname::text from pg_roles r
          where r.rolcanlogin and r.rolname like 'studio_bench%'
            and pg_has_role(r.oid, 'studio_worker', 'member')
          order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn bench_refuses_a_database_holding_other_jobs_and_leaves_no_login_role(pool: PgPool) {
    let user = create_user(&pool).await;
    let queue = studio_worker::queue::Queue::new(worker_pool(&pool).await);
    let job = queue
        .enqueue(&studio_worker::queue::NewJob::new(
            user,
            "render",
            serde_json::json!({}),
        ))
        .await
        .unwrap();
    let owner = pool.connect_options().get_username().to_owned();
    let url = database_url(&pool, &owner, None);
    let roles_before = bench_login_roles(&pool).await;

    let (code, out) = run_command(&["bench", "throughput", "--n", "20"], &url, None, &[]).await;

    assert_ne!(code, 0, "{out}");
    assert!(out.contains("jobs it did not create"), "{out}");
    let still: i64 = sqlx::query_scalar("select count(*) from public.studio_jobs where id = $1")
        .bind(job)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(still, 1, "the user's job is untouched");

    // An empty database: the bench runs, twice, and no login role is left behind.
    sqlx::query("delete from public.studio_jobs")
        .execute(&pool)
        .await
        .unwrap();
    for _ in 0..2 {
        let (code, out) = run_command(&["bench", "throughput", "--n", "20"], &url, None, &[]).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("RESULT"), "{out}");
    }
    assert_eq!(bench_login_roles(&pool).await, roles_before);
}

// Item 3 -----------------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn the_demo_stops_clearly_when_the_worker_cannot_start_and_cleans_up(pool: PgPool) {
    let owner = pool.connect_options().get_username().to_owned();
    let url = database_url(&pool, &owner, None);
    // The operations port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    // Named per run, so parallel runs (and people sharing a server) do not collide.
    let name = format!("t{}", &Uuid::new_v4().simple().to_string()[..10]);
    let demo = |args: &'static [&'static str]| {
        tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
            .args(args)
            .env("DEMO_NAME", &name)
            .env("DATABASE_URL", &url)
            .env("STUDIO_WORKER_BIN", BIN)
            .env("STUDIO_HTTP__LISTEN", &listen)
            .stdin(Stdio::null())
            .output()
    };

    let output = demo(&[]).await.unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{out}");
    assert!(out.contains("the worker did not start"), "{out}");
    assert!(!out.contains("job(s)"), "no tables of pending jobs: {out}");
    let script = include_str!("../../scripts/demo.sh");
    assert!(!script.contains("password 'demo'"), "a random password");
    assert!(
        script.contains("cargo build --release") && script.contains("== build the release binary"),
        "it says it builds"
    );

    // Its roles exist now (the worker never started): a second demo of that name is refused.
    let output = demo(&[]).await.unwrap();
    let again = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{again}");
    assert!(
        again.contains("already exist") && again.contains("--clean"),
        "{again}"
    );

    let output = demo(&["--clean"]).await.unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let left: i64 = sqlx::query_scalar("select count(*) from pg_roles where rolname in ($1, $2)")
        .bind(format!("studio_worker_demo_{name}"))
        .bind(format!("studio_api_demo_{name}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "--clean drops the demo's login roles");
}
