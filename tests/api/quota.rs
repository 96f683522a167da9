//! Admission quotas through the job API: a refused create is a 429 problem naming the quota,
//! with `Retry-After` when waiting frees a slot.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::control::quota::{Limits, Quotas};

use crate::harness::{TestApi, expect_status, problem};

/// No internals in a refusal: no SQLSTATE, table, function or detail keys.
#[track_caller]
fn assert_no_internals(body: &Value) {
    let text = body.to_string();
    for internal in ["PT429", "studio_", "quota=", "scope=", "pg_"] {
        assert!(!text.contains(internal), "{internal} in {text}");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_create_beyond_the_period_quota_is_429_with_retry_after(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (_user, token) = api.user().await;
    let limits = Limits {
        max_unfinished: None,
        max_created: Some((1, Duration::from_secs(3600))),
    };
    Quotas::new(api.queue.pool().clone())
        .set("render", limits, None)
        .await
        .unwrap();
    let body = json!({ "kind": "render", "input": {} });
    expect_status(&api.create(&token, body.clone()).await, 201);

    let refused = api.create(&token, body).await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=3600).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    let problem = problem(refused, 429).await;
    assert_eq!(problem["status"], 429);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("at most 1 render jobs per user every 1h"),
        "{detail}"
    );
    assert_no_internals(&problem);
    // Nothing was created.
    let jobs: Value = api.get(&token, "/v1/jobs").await.json().await.unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_create_beyond_the_unfinished_quota_is_429_without_retry_after(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (_user, token) = api.user().await;
    let (_other, other_token) = api.user().await;
    let limits = Limits {
        max_unfinished: Some(1),
        max_created: None,
    };
    Quotas::new(api.queue.pool().clone())
        .set("*", limits, None)
        .await
        .unwrap();
    let body = json!({ "kind": "upscale", "input": {} });
    expect_status(&api.create(&token, body.clone()).await, 201);

    let refused = api.create(&token, body.clone()).await;
    assert!(refused.headers().get("retry-after").is_none());
    let problem = problem(refused, 429).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("at most 1 unfinished upscale jobs per user"),
        "{detail}"
    );
    assert_no_internals(&problem);
    // Another user is not affected.
    expect_status(&api.create(&other_token, body).await, 201);
}
