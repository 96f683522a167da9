//! A real browser (Debian's headless chromium, driven through chromedriver's WebDriver HTTP
//! API) loads `examples/browser.html` from another origin, creates a job with `fetch` and
//! follows it with `EventSource`, so CORS and streaming are checked as browsers do them.
//! Skipped, with a message, when chromium or chromedriver is not installed.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::queue::{ClaimRequest, WorkerId};

use crate::harness::{TestApi, settings, wait_for};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process, killed on drop.
struct Driver {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    session: Option<String>,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile =
            TempDir(std::env::temp_dir().join(format!("studio-chromium-{}", uuid::Uuid::new_v4())));
        std::fs::create_dir_all(&profile.0).unwrap();
        let mut driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            session: None,
            _profile: profile,
        };
        let base = driver.base.clone();
        let http = driver.http.clone();
        wait_for("chromedriver to answer", Duration::from_secs(20), || {
            let (base, http) = (base.clone(), http.clone());
            async move {
                http.get(format!("{base}/status"))
                    .send()
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", driver._profile.0.display())])
        .collect::<Vec<_>>();
        let session: Value = driver
            .http
            .post(format!("{}/session", driver.base))
            .json(&json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            } } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        driver.session = Some(
            session["value"]["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
                .to_owned(),
        );
        driver
    }

    fn session_url(&self, path: &str) -> String {
        format!(
            "{}/session/{}{path}",
            self.base,
            self.session.as_deref().unwrap()
        )
    }

    async fn navigate(&self, url: &str) {
        self.http
            .post(self.session_url("/url"))
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
    }

    async fn eval(&self, script: &str) -> Value {
        let answer: Value = self
            .http
            .post(self.session_url("/execute/sync"))
            .json(&json!({ "script": script, "args": [] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"].clone()
    }

    async fn quit(mut self) {
        let _ = self.http.delete(self.session_url("")).send().await;
        self.session = None;
    }
}

/// Serve `examples/browser.html` on its own origin; returns that origin.
async fn serve_page() -> String {
    let page = include_str!("../../examples/browser.html");
    let app = axum::Router::new().route(
        "/browser.html",
        axum::routing::get(move || async move { axum::response::Html(page) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_browser_on_another_origin_creates_a_job_and_follows_it_live(pool: PgPool) {
    if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "SKIPPED a_browser_on_another_origin_creates_a_job_and_follows_it_live: \
             {CHROMIUM} or {CHROMEDRIVER} is not installed (apt-get install -y chromium chromium-driver)"
        );
        return;
    }
    let origin = serve_page().await;
    let mut config = settings();
    config.cors_origins = vec![origin.parse().unwrap()];
    let api = TestApi::with(&pool, config).await;
    let (_user, token) = api.user().await;
    let driver = Driver::start().await;

    driver
        .navigate(&format!(
            "{origin}/browser.html?api={}&token={token}",
            api.base
        ))
        .await;
    let job = wait_for(
        "the page to create a job",
        Duration::from_secs(20),
        || async {
            let state = driver.eval("return window.studio;").await;
            if let Some(error) = state["error"].as_str() {
                panic!("the page failed: {error}");
            }
            state["job"].as_str().map(str::to_owned)
        },
    )
    .await;
    // let the page open its EventSource before the job moves
    wait_for(
        "the page to receive the first event",
        Duration::from_secs(20),
        || async {
            let state = driver.eval("return window.studio.events.length;").await;
            (state.as_u64().unwrap_or(0) > 0).then_some(())
        },
    )
    .await;

    let worker = WorkerId::generate();
    let kinds = vec!["render".to_owned()];
    let claimed = api
        .queue
        .claim(&ClaimRequest {
            worker: &worker,
            kinds: &kinds,
            limit: 1,
            lease: Duration::from_secs(30),
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(claimed[0].id.to_string(), job);
    let lease = claimed[0].lease(&worker);
    api.queue
        .progress(&lease, 40, Some("rendering"))
        .await
        .unwrap();
    api.queue
        .complete(&lease, &json!({ "url": "s3://out" }))
        .await
        .unwrap();

    let events = wait_for(
        "the page to see the job finish",
        Duration::from_secs(20),
        || async {
            let state = driver.eval("return window.studio;").await;
            (state["done"] == json!(true)).then(|| state["events"].clone())
        },
    )
    .await;
    driver.quit().await;
    let events: Vec<String> = serde_json::from_value(events).unwrap();
    assert_eq!(
        events,
        [
            "progress:pending:0",
            "status:running",
            "progress:running:40",
            "status:succeeded"
        ]
    );
}
