//! Credentials rotate without a restart: `database.password_file` is read again when it
//! changes. Tested against a private PostgreSQL cluster that checks passwords (the shared test
//! server trusts local connections, so it would accept any password).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use studio_worker::queue::{JobStatus, NewJob, Queue};
use uuid::Uuid;

use crate::harness::{ConfigFile, Daemon, run_command, wait_for_status};

const PATIENCE: Duration = Duration::from_secs(30);
const SUPERUSER_PASSWORD: &str = "super-Secret-1";

/// A throwaway cluster with SCRAM password authentication, removed on drop.
struct PasswordCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PasswordCluster {
    fn start() -> PasswordCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql (initdb, pg_ctl)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .max()
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = std::env::temp_dir().join(format!("studio-scram-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        let root = running_as_root();
        if root {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            run(Command::new("chown").args(["-R", "postgres:"]).arg(&dir));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("data");
        as_owner(root, &bin.join("initdb"), |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-A", "scram-sha-256", "-U", "postgres", "--no-sync"])
                .arg(format!("--pwfile={}", pwfile.display()))
        });
        as_owner(root, &bin.join("pg_ctl"), |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
                    dir.display()
                ))
                .arg("start")
        });
        PasswordCluster { dir, bin, port }
    }

    fn url(&self, user: &str, password: Option<&str>) -> String {
        match password {
            Some(password) => format!(
                "postgres://{user}:{password}@127.0.0.1:{}/postgres",
                self.port
            ),
            None => format!("postgres://{user}@127.0.0.1:{}/postgres", self.port),
        }
    }
}

impl Drop for PasswordCluster {
    fn drop(&mut self) {
        let root = running_as_root();
        let data = self.dir.join("data");
        let _ = std::panic::catch_unwind(|| {
            as_owner(root, &self.bin.join("pg_ctl"), |c| {
                c.arg("-D").arg(&data).args(["-m", "immediate", "stop"])
            })
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn as_owner(root: bool, program: &Path, args: impl FnOnce(&mut Command) -> &mut Command) {
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    args(&mut command);
    // The postgres user may not be able to read the test's working directory.
    command.current_dir("/");
    run(&mut command);
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_rotated_password_file_is_used_for_new_connections_without_a_restart() {
    let cluster = PasswordCluster::start();
    let superuser = cluster.url("postgres", Some(SUPERUSER_PASSWORD));
    let (code, log) = run_command(&["migrate"], &superuser, None, &[]).await;
    assert_eq!(code, 0, "{log}");
    let admin: PgPool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&superuser)
        .await
        .unwrap();
    let (first, second) = ("rotation-First-7c1", "rotation-Second-9d2");
    sqlx::query(AssertSqlSafe(format!(
        "create role rotating_worker login password '{first}' in role studio_worker"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let user = Uuid::new_v4();
    sqlx::query("insert into auth.users (id) values ($1)")
        .bind(user)
        .execute(&admin)
        .await
        .unwrap();
    let queue = Queue::new(admin.clone());
    let config = ConfigFile::new(
        "[kinds.echo]\nexecutor = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"echo '{}'\"]\n",
    );
    let password_file = cluster.dir.join("worker-password");
    std::fs::write(&password_file, format!("{first}\n")).unwrap();
    let password_path = password_file.display().to_string();
    let mut daemon = Daemon::start(
        &cluster.url("rotating_worker", None),
        &config,
        &[("STUDIO_DATABASE__PASSWORD_FILE", &password_path)],
    )
    .await;
    let before = queue
        .enqueue(&NewJob::new(user, "echo", json!({})))
        .await
        .unwrap();
    wait_for_status(&queue, before, JobStatus::Succeeded, PATIENCE).await;

    sqlx::query(AssertSqlSafe(format!(
        "alter role rotating_worker password '{second}'"
    )))
    .execute(&admin)
    .await
    .unwrap();
    std::fs::write(&password_file, format!("{second}\n")).unwrap();
    daemon
        .wait_for_log("database.password_file changed", PATIENCE)
        .await;
    // Every connection the worker holds is made again, as after a network blip or a restart.
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'rotating_worker'",
    )
    .execute(&admin)
    .await
    .unwrap();
    let after = queue
        .enqueue(&NewJob::new(user, "echo", json!({})))
        .await
        .unwrap();

    wait_for_status(&queue, after, JobStatus::Succeeded, PATIENCE).await;
    daemon.signal(Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;
    assert!(status.success(), "{log}");
    assert!(
        !log.contains(first) && !log.contains(second),
        "no password in the output:\n{log}"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_rotated_header_file_is_sent_with_the_next_request(pool: PgPool) {
    use axum::http::HeaderMap;
    use std::sync::{Arc, Mutex};

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorder = seen.clone();
    let app = axum::Router::new().route(
        "/run",
        axum::routing::post(move |headers: HeaderMap| async move {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            recorder.lock().unwrap().push(token);
            "{}"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let user = crate::harness::create_user(&pool).await;
    let queue = Queue::new(crate::harness::worker_pool(&pool).await);
    let token_dir = std::env::temp_dir().join(format!("studio-token-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&token_dir).unwrap();
    let token_file = token_dir.join("token");
    std::fs::write(&token_file, "Bearer first-token\n").unwrap();
    let config = ConfigFile::new(&format!(
        "[kinds.call]\nexecutor = \"http\"\nurl = \"http://{addr}/run\"\n\
         [kinds.call.header_files]\nAuthorization = {:?}\n",
        token_file.display().to_string()
    ));
    let url = crate::harness::database_url(&pool, crate::harness::WORKER_LOGIN, None);
    let daemon = Daemon::start(&url, &config, &[]).await;

    let first = queue
        .enqueue(&NewJob::new(user, "call", json!({})))
        .await
        .unwrap();
    wait_for_status(&queue, first, JobStatus::Succeeded, PATIENCE).await;
    std::fs::write(&token_file, "Bearer second-token\n").unwrap();
    let second = queue
        .enqueue(&NewJob::new(user, "call", json!({})))
        .await
        .unwrap();
    wait_for_status(&queue, second, JobStatus::Succeeded, PATIENCE).await;

    assert_eq!(
        *seen.lock().unwrap(),
        vec!["Bearer first-token", "Bearer second-token"]
    );
    daemon.signal(Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;
    assert!(status.success(), "{log}");
    assert!(!log.contains("-token"), "no token in the output:\n{log}");
    let _ = std::fs::remove_dir_all(token_dir);
}

#[tokio::test]
async fn the_api_in_run_uses_its_own_credentials_not_the_workers_password() {
    let cluster = PasswordCluster::start();
    let superuser = cluster.url("postgres", Some(SUPERUSER_PASSWORD));
    let (code, log) = run_command(&["migrate"], &superuser, None, &[]).await;
    assert_eq!(code, 0, "{log}");
    let admin: PgPool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&superuser)
        .await
        .unwrap();
    let (worker_pw, api_pw) = ("worker-Pw-4e1", "api-Pw-8a3");
    for statement in [
        format!("create role both_worker login password '{worker_pw}' in role studio_worker"),
        format!("create role both_api login password '{api_pw}' in role studio_api"),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&admin)
            .await
            .unwrap();
    }
    let config = ConfigFile::new(
        "[kinds.echo]\nexecutor = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"echo '{}'\"]\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let api_url = cluster.url("both_api", Some(api_pw));
    let mut daemon = Daemon::start(
        &cluster.url("both_worker", None),
        &config,
        &[
            ("STUDIO_DATABASE__PASSWORD", worker_pw),
            ("STUDIO_API__LISTEN", &listen),
            ("STUDIO_API__DATABASE_URL", &api_url),
            (
                "STUDIO_API__JWT_SECRET",
                "both-roles-jwt-secret-0123456789abcdef",
            ),
        ],
    )
    .await;
    daemon.wait_for_log("serving the job API", PATIENCE).await;
    daemon.signal(Signal::SIGTERM);
    let (status, log) = daemon.exit(PATIENCE).await;
    assert!(status.success(), "{log}");
    assert!(
        !log.contains(worker_pw) && !log.contains(api_pw),
        "no password in the output:\n{log}"
    );
}
