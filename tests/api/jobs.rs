//! Create, list, read and cancel: each user sees only their own jobs, bad input is refused
//! before anything is written, and idempotency keys hold on every path.

use chrono::SubsecRound;
use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::queue::NewJob;

use crate::harness::{TestApi, expect_status, problem};

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_user_creates_reads_lists_and_cancels_only_their_own_jobs(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (alice, alice_token) = api.user().await;
    let (_bob, bob_token) = api.user().await;

    let created = api
        .create(
            &alice_token,
            json!({ "kind": "render", "input": { "frames": 3 } }),
        )
        .await;
    expect_status(&created, 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = created.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    assert_eq!(job["user_id"], json!(alice));
    assert_eq!(job["status"], "pending");
    assert_eq!(job["input"], json!({ "frames": 3 }));
    for field in [
        "progress",
        "progress_message",
        "result",
        "error",
        "attempt",
        "max_attempts",
        "created_at",
        "started_at",
        "finished_at",
    ] {
        assert!(job.get(field).is_some(), "job JSON lacks {field}");
    }

    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let deferred = api
        .create(
            &alice_token,
            json!({ "kind": "render", "input": {}, "priority": -5, "run_at": later }),
        )
        .await;
    expect_status(&deferred, 201);
    let deferred: Value = deferred.json().await.unwrap();
    assert_eq!(deferred["priority"], -5);
    let run_at: chrono::DateTime<chrono::Utc> =
        deferred["run_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(run_at, later.trunc_subsecs(6));

    let read: Value = api.get(&alice_token, &location).await.json().await.unwrap();
    assert_eq!(read["id"], json!(id));
    assert_eq!(read["events"], json!([]));

    problem(api.get(&bob_token, &location).await, 404).await;
    problem(
        api.post(&bob_token, &format!("{location}/cancel")).await,
        404,
    )
    .await;
    let bobs: Value = api.get(&bob_token, "/v1/jobs").await.json().await.unwrap();
    assert_eq!(bobs["jobs"], json!([]));
    let alices: Value = api
        .get(&alice_token, "/v1/jobs")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(alices["jobs"].as_array().unwrap().len(), 2);

    let cancelled = api.post(&alice_token, &format!("{location}/cancel")).await;
    expect_status(&cancelled, 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    problem(
        api.post(&alice_token, &format!("{location}/cancel")).await,
        409,
    )
    .await;
    let read: Value = api.get(&alice_token, &location).await.json().await.unwrap();
    assert_eq!(read["events"][0]["to"], "cancelled");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_list_pages_newest_first_and_filters(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (_user, token) = api.user().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let kind = if i % 2 == 0 { "render" } else { "thumbnail" };
        let job: Value = api
            .create(&token, json!({ "kind": kind, "input": { "i": i } }))
            .await
            .json()
            .await
            .unwrap();
        ids.push(job["id"].as_str().unwrap().to_owned());
    }

    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=2".to_owned();
    loop {
        let page: Value = api.get(&token, &path).await.json().await.unwrap();
        for job in page["jobs"].as_array().unwrap() {
            seen.push(job["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/jobs?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");

    let renders: Value = api
        .get(&token, "/v1/jobs?kind=render&status=pending")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(renders["jobs"].as_array().unwrap().len(), 3);
    for bad in [
        "/v1/jobs?status=done",
        "/v1/jobs?limit=0",
        "/v1/jobs?limit=201",
        "/v1/jobs?cursor=xyz",
        "/v1/jobs?colour=red",
    ] {
        problem(api.get(&token, bad).await, 400).await;
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn bad_input_is_refused_and_nothing_is_written(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (_user, token) = api.user().await;
    let post = |body: &'static str, content_type: &'static str| {
        api.http
            .post(api.url("/v1/jobs"))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    problem(
        post("{\"kind\": \"render\", ", "application/json")
            .await
            .unwrap(),
        400,
    )
    .await;
    problem(post("kind=render", "text/plain").await.unwrap(), 415).await;
    problem(
        post(
            "{\"kind\":\"render\",\"input\":{},\"owner\":\"x\"}",
            "application/json",
        )
        .await
        .unwrap(),
        422,
    )
    .await;
    problem(
        post("{\"kind\":\"Render!\",\"input\":{}}", "application/json")
            .await
            .unwrap(),
        422,
    )
    .await;
    problem(
        post(
            "{\"kind\":\"render\",\"input\":{},\"priority\":1000}",
            "application/json",
        )
        .await
        .unwrap(),
        422,
    )
    .await;
    problem(
        post("{\"kind\":\"render\"}", "application/json")
            .await
            .unwrap(),
        422,
    )
    .await;

    // users may put a job behind their others, never ahead of anyone
    problem(
        post(
            "{\"kind\":\"render\",\"input\":{},\"priority\":1}",
            "application/json",
        )
        .await
        .unwrap(),
        422,
    )
    .await;

    // only the documented object; malformed JSON is a 400; errors name the member in the
    // API's words (never serde's)
    for (body, status, says) in [
        (r#"["render", {}]"#, 422, "the body must be a JSON object"),
        ("[1, 2", 400, "not valid JSON"),
        (
            r#"{"kind": "render", "input": null}"#,
            422,
            "input: must be a JSON object",
        ),
        (
            r#"{"kind": "render", "input": "x"}"#,
            422,
            "input: must be a JSON object",
        ),
        (
            r#"{"kind": "render", "input": [1]}"#,
            422,
            "input: must be a JSON object",
        ),
        (r#"{"kind": 7, "input": {}}"#, 422, "kind: must be a string"),
        (r#"{"input": {}}"#, 422, "kind: required"),
        (
            r#"{"kind": "render", "input": {}, "owner": "x"}"#,
            422,
            "owner: not a member",
        ),
        (
            r#"{"kind": "render", "input": {}, "priority": "low"}"#,
            422,
            "priority:",
        ),
        (
            r#"{"kind": "render", "input": {}, "priority": -0.5}"#,
            422,
            "priority:",
        ),
        (
            r#"{"kind": "render", "input": {}, "run_at": "tomorrow"}"#,
            422,
            "run_at: an RFC 3339",
        ),
        (
            r#"{"kind": "render", "input": {}, "run_at": 1}"#,
            422,
            "run_at: an RFC 3339",
        ),
        // a job that would wait forever and hold a quota slot
        (
            r#"{"kind": "render", "input": {}, "run_at": "9999-12-31T00:00:00Z"}"#,
            422,
            "run_at: at most 30days from now",
        ),
        // PostgreSQL's jsonb cannot hold U+0000: a 422, not a 500
        (
            r#"{"kind": "render", "input": {"a": "x\u0000y"}}"#,
            422,
            "input: text may not contain",
        ),
        (
            r#"{"kind": "render", "input": {"a\u0000": 1}}"#,
            422,
            "input: text may not contain",
        ),
        (
            r#"{"kind": "render", "input": {"a": [{"b": "\u0000"}]}}"#,
            422,
            "input: text may not contain",
        ),
        (
            r#"{"kind": "ren\u0000der", "input": {}}"#,
            422,
            "kind: 1-64",
        ),
    ] {
        let answer = post(body, "application/json").await.unwrap();
        assert_eq!(answer.status(), status, "{body}");
        let answer = problem(answer, status).await;
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{body}: {detail}");
        assert!(
            !detail.contains("serde") && !detail.contains("line "),
            "{detail}"
        );
    }
    problem(api.get(&token, "/v1/jobs?kind=a%00b").await, 400).await;
    // within the bound is fine
    let soon = (chrono::Utc::now() + chrono::Duration::days(29)).to_rfc3339();
    let scheduled = api
        .create(
            &token,
            json!({ "kind": "render", "input": {}, "run_at": soon }),
        )
        .await;
    expect_status(&scheduled, 201);
    sqlx::query("delete from public.studio_jobs")
        .execute(&pool)
        .await
        .unwrap();

    let big = json!({ "kind": "render", "input": { "blob": "x".repeat(1024 * 1024 + 10) } });
    problem(api.create(&token, big).await, 422).await;
    let huge = "x".repeat(3 * 1024 * 1024);
    let too_large = api
        .http
        .post(api.url("/v1/jobs"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    problem(too_large, 413).await;

    problem(api.get(&token, "/v1/jobs/not-a-uuid").await, 404).await;
    problem(api.post(&token, "/v1/jobs/12345/cancel").await, 404).await;
    problem(api.get(&token, "/v1/nothing-here").await, 404).await;

    let count: i64 = sqlx::query_scalar("select count(*) from public.studio_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn an_idempotency_key_returns_the_first_job_even_under_concurrency(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (_user, token) = api.user().await;
    let (_other, other_token) = api.user().await;
    let body = json!({ "kind": "render", "input": { "frames": 1 } });
    let send = |token: &str, key: &str, body: Value| {
        api.http
            .post(api.url("/v1/jobs"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };

    let first = send(&token, "k-1", body.clone()).await.unwrap();
    expect_status(&first, 201);
    assert_eq!(first.headers()["idempotent-replayed"], "false");
    let first: Value = first.json().await.unwrap();
    let replay = send(&token, "k-1", body.clone()).await.unwrap();
    expect_status(&replay, 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);
    problem(
        send(
            &token,
            "k-1",
            json!({ "kind": "render", "input": { "frames": 2 } }),
        )
        .await
        .unwrap(),
        422,
    )
    .await;
    // keys are per user
    expect_status(&send(&other_token, "k-1", body.clone()).await.unwrap(), 201);

    let racers = (0..8).map(|_| send(&token, "k-race", body.clone()));
    let answers = futures_util::future::join_all(racers).await;
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for answer in answers {
        let answer = answer.unwrap();
        if answer.status() == 201 {
            created += 1;
        } else {
            expect_status(&answer, 200);
        }
        let job: Value = answer.json().await.unwrap();
        ids.insert(job["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        (created, ids.len()),
        (1, 1),
        "one job for eight racing requests"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_library_honours_idempotency_keys_too(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (user, token) = api.user().await;
    let job = NewJob::new(user, "render", json!({})).idempotency_key("lib-1");
    let first = api.queue.enqueue(&job).await.unwrap();
    let again = api.queue.enqueue(&job).await.unwrap();
    assert_eq!(first, again);

    // the API sees the same key
    let replay = api
        .http
        .post(api.url("/v1/jobs"))
        .bearer_auth(&token)
        .header("idempotency-key", "lib-1")
        .json(&json!({ "kind": "render", "input": {} }))
        .send()
        .await
        .unwrap();
    expect_status(&replay, 200);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], json!(first));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn claims_holding_quotes_or_dollars_reach_the_database_intact(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    for (i, name) in [
        "O'Brien \\ \"q\"",
        "$studio$ drop table x; $studio$",
        "tail $",
    ]
    .into_iter()
    .enumerate()
    {
        let user = crate::harness::create_user(&pool).await;
        let mut claims = crate::harness::claims(user);
        claims["user_metadata"] = json!({ "name": name });
        let token = crate::harness::hs256(&claims);
        let created = api
            .create(&token, json!({ "kind": "render", "input": { "i": i } }))
            .await;
        expect_status(&created, 201);
        let job: Value = created.json().await.unwrap();
        assert_eq!(job["user_id"], json!(user), "{name}");
        let listed: Value = api.get(&token, "/v1/jobs").await.json().await.unwrap();
        assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{name}");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_job_of_an_unknown_kind_is_a_422_naming_the_kind(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (_user, token) = api.user().await;

    let refused = problem(
        api.create(&token, json!({ "kind": "no-such-kind", "input": {} }))
            .await,
        422,
    )
    .await;

    assert_eq!(refused["detail"], "kind: unknown job kind \"no-such-kind\"");
    let count: i64 = sqlx::query_scalar("select count(*) from public.studio_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}
