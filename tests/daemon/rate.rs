//! Rate limits through the real binary: a malformed `rate_limit` stops `run` before it touches
//! anything; the daemon's starts show in `kinds`, and the held-back kind in `/metrics`; the
//! programs themselves start spread across the window, one per `period / count`.

use std::time::Duration;

use nix::sys::signal::Signal;
use sqlx::PgPool;
use studio_worker::queue::{NewJob, Queue};

use crate::harness::{
    ConfigFile, Daemon, WORKER_LOGIN, create_user, database_url, run_command, status_counts,
    wait_for, worker_pool,
};

const PATIENCE: Duration = Duration::from_secs(30);

fn render(rate_limit: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "[kinds.render]\nexecutor = \"command\"\ncommand = [\"/bin/true\"]\nrate_limit = \"{rate_limit}\"\n"
    ))
}

/// `render` with a rate whose whole period may start at once (`rate_burst` = the count).
fn bursty_render(rate_limit: &str, burst: u32) -> ConfigFile {
    ConfigFile::new(&format!(
        "[kinds.render]\nexecutor = \"command\"\ncommand = [\"/bin/true\"]\n\
         rate_limit = \"{rate_limit}\"\nrate_burst = {burst}\n"
    ))
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_malformed_rate_limit_stops_run_naming_the_key(pool: PgPool) {
    let queue = Queue::new(worker_pool(&pool).await);
    let user = create_user(&pool).await;
    queue
        .enqueue(&NewJob::new(user, "render", serde_json::json!({})))
        .await
        .unwrap();
    let url = database_url(&pool, WORKER_LOGIN, None);

    for bad in ["0/s", "5/ms", "fast", "-3/min", "10/0s"] {
        let (code, log) = run_command(&["run"], &url, Some(&render(bad)), &[]).await;
        assert_eq!(code, 2, "{bad}: {log}");
        assert!(log.contains("kinds.render.rate_limit"), "{bad}: {log}");
        assert!(log.contains("60/min"), "the accepted forms: {log}");
    }
    let (code, log) = run_command(
        &["run"],
        &url,
        Some(&render("5/s")),
        &[("STUDIO_KINDS__RENDER__RATE_LIMIT", "lots")],
    )
    .await;
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("STUDIO_KINDS__RENDER__RATE_LIMIT"),
        "names the variable: {log}"
    );

    assert_eq!(
        status_counts(&pool).await.get("pending"),
        Some(&1),
        "nothing was claimed"
    );
    let starts: i64 = sqlx::query_scalar("select count(*) from public.studio_kind_starts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(starts, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_daemon_starts_no_more_than_the_rate_and_kinds_shows_it(pool: PgPool) {
    let queue = Queue::new(worker_pool(&pool).await);
    let user = create_user(&pool).await;
    for _ in 0..5 {
        queue
            .enqueue(&NewJob::new(user, "render", serde_json::json!({})))
            .await
            .unwrap();
    }
    let url = database_url(&pool, WORKER_LOGIN, None);
    let config = bursty_render("3/h", 3);

    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", probe.local_addr().unwrap().port())
    };
    let daemon = Daemon::start(&url, &config, &[("STUDIO_HTTP__LISTEN", &listen)]).await;
    wait_for("three jobs to succeed", PATIENCE, || async {
        (status_counts(&pool).await.get("succeeded") == Some(&3)).then_some(())
    })
    .await;
    wait_for("the kind to show as rate-limited", PATIENCE, || async {
        let body = reqwest::get(format!("http://{listen}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .any(|line| line == "studio_kind_rate_limited{kind=\"render\"} 1")
            .then_some(())
    })
    .await;
    let (code, listed) = run_command(&["kinds", "--json"], &url, Some(&config), &[]).await;
    let (human_code, human) = run_command(&["kinds"], &url, Some(&config), &[]).await;
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.exit(PATIENCE).await.0.success());

    assert_eq!(
        status_counts(&pool).await.get("pending"),
        Some(&2),
        "held back"
    );
    assert_eq!(code, 0, "{listed}");
    let kinds: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let render = kinds
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "render")
        .unwrap();
    assert_eq!(render["rate"], "3/h");
    assert_eq!(render["rate_window_starts"], 3);
    assert_eq!(render["pending"], 2);
    assert_eq!(human_code, 0, "{human}");
    assert!(human.contains("3 of 3/h"), "{human}");
}

/// How much closer than `period / count` two programs may start: the spread is decided at the
/// claim (its transaction's time), and each program then starts after a spawn whose latency
/// varies on a loaded machine.
const SPAWN_TOLERANCE: Duration = Duration::from_millis(50);

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_programs_themselves_start_spread_one_per_slice_of_the_rate(pool: PgPool) {
    // Arrange: 20 jobs of a kind limited to 10/s whose program appends its own start time.
    let queue = Queue::new(worker_pool(&pool).await);
    let user = create_user(&pool).await;
    for _ in 0..20 {
        queue
            .enqueue(&NewJob::new(user, "render", serde_json::json!({})))
            .await
            .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("studio-rate-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("starts");
    let config = ConfigFile::new(&format!(
        "[kinds.render]\nexecutor = \"command\"\n\
         command = [\"/bin/sh\", \"-c\", \"date +%s.%N >> {}\"]\nrate_limit = \"10/s\"\n",
        log.display()
    ));
    let url = database_url(&pool, WORKER_LOGIN, None);

    // Act
    let daemon = Daemon::start(&url, &config, &[]).await;
    wait_for("the twenty jobs to succeed", PATIENCE, || async {
        (status_counts(&pool).await.get("succeeded") == Some(&20)).then_some(())
    })
    .await;
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.exit(PATIENCE).await.0.success());

    // Assert: measured from the programs' own start times.
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut starts: Vec<f64> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    starts.sort_by(f64::total_cmp);
    assert_eq!(starts.len(), 20, "{text}");
    let fullest = starts
        .iter()
        .map(|from| {
            starts
                .iter()
                .filter(|t| **t >= *from && **t < from + 1.0)
                .count()
        })
        .max()
        .unwrap();
    let gaps: Vec<f64> = starts.windows(2).map(|p| p[1] - p[0]).collect();
    let closest = gaps.iter().copied().fold(f64::MAX, f64::min);
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "program starts: closest {:.1} ms apart, median {:.1} ms, widest {:.1} ms, \
         fullest second {fullest}, span {:.3} s",
        closest * 1e3,
        sorted[sorted.len() / 2] * 1e3,
        sorted[sorted.len() - 1] * 1e3,
        starts[19] - starts[0],
    );
    assert!(
        fullest <= 10,
        "{fullest} programs started within one second"
    );
    let floor = (Duration::from_millis(100) - SPAWN_TOLERANCE).as_secs_f64();
    assert!(
        closest >= floor,
        "two programs started {:.1} ms apart (10/s spreads them 100 ms apart, less {SPAWN_TOLERANCE:?})",
        closest * 1e3
    );
}
