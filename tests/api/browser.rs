//! A real browser (Debian's headless chromium, driven through chromedriver's WebDriver HTTP
//! API) loads `examples/browser.html` from another origin, creates a job with `fetch` and
//! follows it with `EventSource`, so CORS and streaming are checked as browsers do them.
//! Skipped, with a message, when chromium or chromedriver is not installed.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::harness::webdriver::{Driver, browser_installed};
use crate::harness::{TestApi, settings, wait_for};

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
    if !browser_installed("a_browser_on_another_origin_creates_a_job_and_follows_it_live") {
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

    let lease = api.claim_one().await;
    assert_eq!(lease.job_id.to_string(), job);
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
