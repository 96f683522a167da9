//! The job API in the real binary: `run` with `api.listen` serves it next to the worker, a job
//! created over HTTP is followed live until the real worker finishes it, and SIGTERM ends open
//! streams cleanly; `api` serves it without a worker.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::{ConfigFile, Daemon, WORKER_LOGIN, create_user, database_url, worker_pool};

pub const SECRET: &str = "daemon-test-secret-at-least-32-bytes";

pub async fn api_login(pool: &PgPool) -> String {
    sqlx::query(
        "do $$ begin
           if not exists (select 1 from pg_roles where rolname = 'studio_api_test_login') then
             create role studio_api_test_login login in role studio_api;
           end if;
         exception when duplicate_object or unique_violation then null;
         end $$",
    )
    .execute(pool)
    .await
    .unwrap();
    database_url(pool, "studio_api_test_login", None)
}

pub fn token(user: uuid::Uuid) -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": user, "role": "authenticated", "aud": "authenticated", "exp": now + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn run_serves_the_api_and_a_stream_follows_the_real_worker_to_success(pool: PgPool) {
    let user = create_user(&pool).await;
    let _ = worker_pool(&pool).await; // creates the worker's login role
    let api_url = api_login(&pool).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = ConfigFile::new(&format!(
        "[kinds.render]\nexecutor = \"command\"\ncommand = [\"{}/examples/render.sh\"]\n",
        env!("CARGO_MANIFEST_DIR")
    ));
    let daemon = Daemon::start(
        &database_url(&pool, WORKER_LOGIN, None),
        &config,
        &[
            ("STUDIO_API__LISTEN", listen.as_str()),
            ("STUDIO_API__JWT_SECRET", SECRET),
            ("STUDIO_API__DATABASE_URL", api_url.as_str()),
        ],
    )
    .await;
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let token = token(user);

    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&token)
        .json(&json!({ "kind": "render", "input": { "frames": 3 } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let mut stream = http
        .get(format!("{base}/v1/jobs/{id}/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end:\n{text}");
    assert!(text.contains("\"to\":\"running\""), "{text}");
    assert!(text.contains("\"progress\":100"), "{text}");
    assert!(text.contains("\"to\":\"succeeded\""), "{text}");

    // a stream open at shutdown ends, and the process exits cleanly
    let second: Value = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&token)
        // due in a day: within api.max_run_at_ahead, and long after this test ends
        .json(&json!({ "kind": "render", "input": {},
                       "run_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339() }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut open = http
        .get(format!(
            "{base}/v1/jobs/{}/events",
            second["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let _ = open.chunk().await;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(_)) = open.chunk().await {}
    })
    .await;
    assert!(closed.is_ok(), "the open stream was not ended by SIGTERM");
    let (status, log) = daemon.exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{log}");
    assert!(!log.contains(&token), "a token reached the log");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_api_command_serves_without_a_worker_and_refuses_a_role_outside_studio_api(
    pool: PgPool,
) {
    let user = create_user(&pool).await;
    let api_url = api_login(&pool).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [
        ("STUDIO_API__LISTEN", listen.as_str()),
        ("STUDIO_API__JWT_SECRET", SECRET),
        ("STUDIO_HTTP__LISTEN", ""),
    ];
    let mut daemon = Daemon::spawn(&["api"], &api_url, None, &env);
    daemon
        .wait_for_log("serving the job API", Duration::from_secs(30))
        .await;
    // The token a user of the README's demo gets from the binary itself.
    let user_arg = user.to_string();
    let (code, out) = crate::harness::run_command(
        &["token", "--user", &user_arg, "--expires", "5m"],
        &api_url,
        None,
        &[("STUDIO_API__JWT_SECRET", SECRET)],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let minted = out.trim().to_owned();
    let (code, out) =
        crate::harness::run_command(&["token", "--user", &user_arg], &api_url, None, &[]).await;
    assert_eq!(code, 2, "no secret, no token: {out}");
    assert!(out.contains("api.jwt_secret"), "{out}");
    let created = reqwest::Client::new()
        .post(format!("http://{listen}/v1/jobs"))
        .bearer_auth(&minted)
        .json(&json!({ "kind": "render", "input": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = daemon.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{log}");

    // the worker's login role is not in studio_api: start-up fails, says why and names the one
    // fix (never "grant studio_worker", which would hand the worker's rights to the API), both
    // when api.database_url is unset and when it names the worker's role
    let _ = worker_pool(&pool).await;
    let worker_url = database_url(&pool, WORKER_LOGIN, None);
    let mut own_url = env.to_vec();
    own_url.push(("STUDIO_API__DATABASE_URL", worker_url.as_str()));
    for (env, says) in [
        (&env[..], "api.database_url is unset"),
        (
            &own_url[..],
            "the role of api.database_url is not a member of studio_api",
        ),
    ] {
        let refused = Daemon::spawn(&["api"], &worker_url, None, env);
        let (status, log) = refused.exit(Duration::from_secs(30)).await;
        assert!(!status.success());
        assert!(log.contains(says), "{log}");
        assert!(
            log.contains("hint: set api.database_url (STUDIO_API__DATABASE_URL)"),
            "{log}"
        );
        assert!(!log.contains("grant studio_worker"), "{log}");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn enqueue_with_an_idempotency_key_prints_the_same_job_twice(pool: PgPool) {
    let user = create_user(&pool).await.to_string();
    let _ = worker_pool(&pool).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let args = [
        "enqueue",
        "--user",
        &user,
        "--kind",
        "render",
        "--idempotency-key",
        "nightly-2026-11-29",
    ];

    let (code, first) = crate::harness::run_command(&args, &url, None, &[]).await;
    assert_eq!(code, 0, "{first}");
    let (code, second) = crate::harness::run_command(&args, &url, None, &[]).await;
    assert_eq!(code, 0, "{second}");

    assert_eq!(first.trim(), second.trim());
    let count: i64 = sqlx::query_scalar("select count(*) from public.studio_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_apis_metrics_do_not_read_the_kind_registry_its_role_may_not_read(pool: PgPool) {
    let api_url = api_login(&pool).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let ops = format!("127.0.0.1:{}", free_port());
    let env = [
        ("STUDIO_API__LISTEN", listen.as_str()),
        ("STUDIO_API__JWT_SECRET", SECRET),
        ("STUDIO_HTTP__LISTEN", ops.as_str()),
        ("STUDIO_LOG__LEVEL", "debug"),
    ];
    let mut daemon = Daemon::spawn(&["api"], &api_url, None, &env);
    daemon
        .wait_for_log("serving /healthz", Duration::from_secs(30))
        .await;

    for _ in 0..2 {
        let metrics = reqwest::get(format!("http://{ops}/metrics")).await.unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(!text.contains("studio_kind_replicas"), "{text}");
    }

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = daemon.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("kind replicas not refreshed"),
        "the API's role may not read the registry: it must not try at every scrape\n{log}"
    );
}
