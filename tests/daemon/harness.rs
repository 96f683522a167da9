//! Spawning the binary, pointing it at a test database as the worker's login role, and a TCP
//! proxy that can cut the database off.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const BIN: &str = env!("CARGO_BIN_EXE_studio-worker");

#[path = "../common/mod.rs"]
#[allow(dead_code)] // shared with the other test binaries; not every helper is used here
mod common;
pub use common::{
    WORKER_LOGIN, autoscaler_pool, create_user, wait_for, wait_for_status, worker_pool,
};
/// The test database's URL for `user`, optionally through another address (the proxy).
pub fn database_url(pool: &PgPool, user: &str, via: Option<SocketAddr>) -> String {
    let options = pool.connect_options();
    let (host, port) = match via {
        Some(addr) => (addr.ip().to_string(), addr.port()),
        None => (options.get_host().to_owned(), options.get_port()),
    };
    format!(
        "postgres://{user}@{host}:{port}/{}",
        options.get_database().unwrap()
    )
}

/// A TOML configuration in a temporary file; fast intervals for tests.
pub struct ConfigFile {
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn new(kinds: &str) -> Self {
        Self::with_worker(
            "lease = \"3s\"\nheartbeat_interval = \"500ms\"\nrescue_interval = \"300ms\"",
            kinds,
        )
    }

    /// `worker` holds lease, heartbeat and rescue settings (TOML lines of `[worker]`).
    pub fn with_worker(worker: &str, kinds: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("studio-daemon-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("worker.toml");
        let text = format!(
            "[worker]\nconcurrency = 4\n{worker}\n\
             poll_interval = \"200ms\"\nshutdown_grace = \"2s\"\n\
             max_backoff = \"500ms\"\n\n[http]\nlisten = \"\"\n\n{kinds}\n"
        );
        std::fs::write(&path, text).unwrap();
        ConfigFile { path }
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A running `studio-worker run`.
pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<String>>,
    lines: watch::Receiver<usize>,
}

impl Daemon {
    /// Start `studio-worker run` and wait until it logs that it started.
    pub async fn start(url: &str, config: &ConfigFile, env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::spawn(&["run"], url, Some(config), env);
        daemon
            .wait_for_log("worker started", Duration::from_secs(30))
            .await;
        daemon
    }

    pub fn spawn(
        args: &[&str],
        url: &str,
        config: Option<&ConfigFile>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", url)
            .env("STUDIO_LOG__LEVEL", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(config) = config {
            command.arg("--config").arg(&config.path);
        }
        let mut child = command.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = watch::channel(0usize);
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if std::env::var_os("TEST_LOG").is_some() {
                        eprintln!("[daemon] {line}");
                    }
                    let mut log = log.lock().await;
                    log.push_str(&line);
                    log.push('\n');
                    tx.send_modify(|n| *n += 1);
                }
            });
        }
        Daemon { child, log, lines }
    }

    /// Wait until the output contains `needle` (an event: each new line wakes the check).
    pub async fn wait_for_log(&mut self, needle: &str, within: Duration) {
        let found = tokio::time::timeout(within, async {
            loop {
                if self.log.lock().await.contains(needle) {
                    return;
                }
                if self.lines.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        let log = self.log().await;
        assert!(
            found.is_ok() && log.contains(needle),
            "no {needle:?} in the daemon's output:\n{log}"
        );
    }

    pub async fn log(&self) -> String {
        self.log.lock().await.clone()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Wait for the process to exit (and its output to be read).
    pub async fn exit(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => {
                // What it was doing is in its log: show the end of it.
                let log = self.log().await;
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                let _ = self.child.start_kill();
                panic!(
                    "daemon did not exit within {within:?}; its log ends with:\n{}",
                    tail.join("\n")
                );
            }
        };
        // Let the readers drain what is left.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.lines.changed().await.is_ok() {}
        })
        .await;
        let log = self.log().await;
        (status, log)
    }
}

/// Run the binary to completion with `args`.
pub async fn run_command(
    args: &[&str],
    url: &str,
    config: Option<&ConfigFile>,
    env: &[(&str, &str)],
) -> (i32, String) {
    let daemon = Daemon::spawn(args, url, config, env);
    let (status, log) = daemon.exit(Duration::from_secs(60)).await;
    (status.code().unwrap_or(-1), log)
}

/// Count jobs by status.
pub async fn status_counts(pool: &PgPool) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "select status, count(*) from public.studio_jobs group by status",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// A TCP proxy to the database that can cut every connection and refuse new ones, as a
/// database restart looks from the worker's side.
pub struct Proxy {
    pub addr: SocketAddr,
    refusing: Arc<AtomicBool>,
    generation: watch::Sender<CancellationToken>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusing = Arc::new(AtomicBool::new(false));
        let (generation, current) = watch::channel(CancellationToken::new());
        let refuse = refusing.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let cut = current.borrow().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            refusing,
            generation,
        }
    }

    /// Drop every connection and refuse new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        let old = self.generation.send_replace(CancellationToken::new());
        old.cancel();
    }

    pub fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

/// The address of the test database server.
pub async fn upstream(pool: &PgPool) -> SocketAddr {
    let options = pool.connect_options();
    tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// Wait until no session of the worker's login role is left on the test database (a proxied
/// connection's server side ends a moment after its client: dropping the database before
/// then fails).
pub async fn worker_sessions_closed(pool: &PgPool) {
    wait_for("the worker's sessions to close", Duration::from_secs(10), || async {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() and usename = $1",
        )
        .bind(WORKER_LOGIN)
        .fetch_one(pool)
        .await
        .ok()?;
        (open == 0).then_some(())
    })
    .await;
}
