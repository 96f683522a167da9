//! Per-caller limits: a user's request rate and open streams, and failed authentications per
//! client address; each refusal a 429 with `Retry-After`, counted, never spilling onto others.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::{TestApi, expect_status, problem, settings};

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn one_user_cannot_take_every_request_or_stream_slot(pool: PgPool) {
    let mut config = settings();
    config.user_requests_per_second = 1;
    config.user_request_burst = 4;
    config.max_streams_per_user = 1;
    let api = TestApi::with(&pool, config).await;
    let (_alice, alice) = api.user().await;
    let (_bob, bob) = api.user().await;

    // a stream: alice may hold one
    let job: Value = api
        .create(&alice, json!({ "kind": "render", "input": {} }))
        .await
        .json()
        .await
        .unwrap();
    let events = format!("/v1/jobs/{}/events", job["id"].as_str().unwrap());
    let first = api.get(&alice, &events).await;
    expect_status(&first, 200);
    let second = api.get(&alice, &events).await;
    assert!(second.headers().contains_key("retry-after"));
    let body = problem(second, 429).await;
    assert!(body["detail"].as_str().unwrap().contains("open streams"));
    drop(first);

    // requests: alice spent 3 of her burst of 4; the 5th within the second is refused
    expect_status(&api.get(&alice, "/v1/jobs").await, 200);
    let refused = api.get(&alice, "/v1/jobs").await;
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    let body = problem(refused, 429).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("too many requests")
    );
    // bob is not held back by alice
    expect_status(&api.get(&bob, "/v1/jobs").await, 200);
    // and alice passes again once the wait is over
    tokio::time::sleep(Duration::from_secs(wait)).await;
    expect_status(&api.get(&alice, "/v1/jobs").await, 200);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn floods_of_failed_authentications_are_slowed_per_address(pool: PgPool) {
    let mut config = settings();
    config.auth_failures_per_minute = 3;
    let api = TestApi::with(&pool, config).await;
    let (_user, good) = api.user().await;
    for _ in 0..3 {
        problem(api.get("forged", "/v1/jobs").await, 401).await;
    }
    // the address is out of allowance: refused before any token is looked at, good ones too
    for token in ["forged", good.as_str()] {
        let refused = api.get(token, "/v1/jobs").await;
        let wait: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=20).contains(&wait), "Retry-After: {wait}");
        let body = problem(refused, 429).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("failed authentications")
        );
    }
}
