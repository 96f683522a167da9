//! Jobs created through the API get their kind's `max_attempts` (migration 0021), whether a
//! user or a service creates them: the API gives none, the database decides.

use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::control::kinds::Kinds;

use crate::harness::{SERVICE_TOKEN, TestApi, expect_status};

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_created_through_the_api_get_their_kinds_attempts(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (alice, token) = api.user().await;
    Kinds::new(pool.clone())
        .declare_with("render", Some("test"), Some(5))
        .await
        .unwrap();
    let render = json!({ "kind": "render", "input": {} });

    let by_user = api.create(&token, render.clone()).await;
    expect_status(&by_user, 201);
    let by_service = api
        .http
        .post(api.url("/v1/jobs"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-on-behalf-of", alice.to_string())
        .json(&render)
        .send()
        .await
        .unwrap();
    expect_status(&by_service, 201);

    for created in [by_user, by_service] {
        let job: Value = created.json().await.unwrap();
        assert_eq!(job["max_attempts"], 5, "{job}");
    }
}
