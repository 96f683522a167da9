//! Following a job: history, live status and progress changes until it finishes, resuming with
//! `Last-Event-ID`, signed stream URLs, and other users refused.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{TestApi, expect_status, parse_events, problem, read_events, wait_for};

async fn open(api: &TestApi, token: &str, path: &str, last: Option<&str>) -> reqwest::Response {
    let mut request = api.http.get(api.url(path)).bearer_auth(token);
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    request.send().await.unwrap()
}

/// Create a `render` job as the holder of `token`; its id.
async fn render_job(api: &TestApi, token: &str) -> Uuid {
    let job: Value = api
        .create(token, json!({ "kind": "render", "input": {} }))
        .await
        .json()
        .await
        .unwrap();
    job["id"].as_str().unwrap().parse().unwrap()
}

/// Watch rows of `job` (read as the table's owner: nobody else may).
async fn watches(pool: &PgPool, job: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from public.studio_job_watches where job_id = $1")
        .bind(job)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A change that lands after a stream's watch and before its first read is in that read and
/// also arrives live; the stream sends that state once. A first stream has the job watched
/// already, so the second one's watch is immediate; its first read then waits for a lock that
/// the test holds while it records the progress, as the worker's role, in the same transaction.
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_progress_between_the_watch_and_the_first_read_is_sent_once(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (_user, token) = api.user().await;
    let id = render_job(&api, &token).await;
    let events_path = format!("/v1/jobs/{id}/events");
    let lease = api.claim_one().await;
    let first = open(&api, &token, &events_path, None).await;
    expect_status(&first, 200);
    let _first = tokio::spawn(read_events(first, Duration::from_secs(20)));

    let mut progress = pool.begin().await.unwrap();
    sqlx::raw_sql(
        "lock table public.studio_jobs in access exclusive mode; set local role studio_worker",
    )
    .execute(&mut *progress)
    .await
    .unwrap();
    let second = {
        let http = api.http.clone();
        let url = api.url(&events_path);
        let token = token.clone();
        tokio::spawn(async move { http.get(url).bearer_auth(token).send().await.unwrap() })
    };
    wait_for("the second stream's read to wait", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity \
                  where wait_event_type = 'Lock' and query like '%from public.studio_jobs where id%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        }
    })
    .await;
    sqlx::query(
        "update public.studio_jobs set progress = 50, progress_message = 'half way' where id = $1",
    )
    .bind(id)
    .execute(&mut *progress)
    .await
    .unwrap();
    progress.commit().await.unwrap();
    let second = second.await.unwrap();
    expect_status(&second, 200);
    let reader = tokio::spawn(read_events(second, Duration::from_secs(20)));
    api.queue
        .complete(&lease, &json!({ "ok": true }))
        .await
        .unwrap();

    let events = reader.await.unwrap();
    let halfway: Vec<_> = events
        .iter()
        .filter(|(e, _, data)| e == "progress" && data["progress"] == 50)
        .collect();
    assert_eq!(halfway.len(), 1, "{events:#?}");
    assert_eq!(halfway[0].2["message"], "half way");
    assert_eq!(events.last().unwrap().2["to"], "succeeded", "{events:#?}");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_stream_follows_a_job_to_success_and_resumes_from_the_last_event(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (_user, token) = api.user().await;
    let (_bob, bob_token) = api.user().await;
    let id = render_job(&api, &token).await;
    let events_path = format!("/v1/jobs/{id}/events");

    problem(open(&api, &bob_token, &events_path, None).await, 404).await;

    let stream = open(&api, &token, &events_path, None).await;
    expect_status(&stream, 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let reader = tokio::spawn(read_events(stream, Duration::from_secs(20)));

    // The stream's first read comes after its watch (0027): from then on every change of the
    // job is announced to the API.
    assert_eq!(
        watches(&pool, id).await,
        1,
        "the open stream watches its job"
    );
    let lease = api.claim_one().await;
    api.queue
        .progress(&lease, 50, Some("half way"))
        .await
        .unwrap();
    api.queue
        .complete(&lease, &json!({ "ok": true }))
        .await
        .unwrap();

    let events = reader.await.unwrap();
    let kinds_seen: Vec<&str> = events.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(
        kinds_seen,
        ["progress", "status", "progress", "status"],
        "{events:#?}"
    );
    assert_eq!(events[0].2["status"], "pending");
    assert_eq!(events[1].2["to"], "running");
    assert_eq!(events[2].2["progress"], 50);
    assert_eq!(events[2].2["message"], "half way");
    assert_eq!(events[3].2["to"], "succeeded");
    // The stream ended with the job, and its watch with it.
    wait_for("the watch to go", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move { (watches(&pool, id).await == 0).then_some(()) }
    })
    .await;
    let running_id = events[1].1.clone().expect("status events carry ids");
    assert!(events[3].1.is_some());

    // resumed after the running event: only what came after, then the end
    let resumed = open(&api, &token, &events_path, Some(&running_id)).await;
    let again = read_events(resumed, Duration::from_secs(5)).await;
    let kinds_again: Vec<&str> = again.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(kinds_again, ["status", "progress"], "{again:#?}");
    assert_eq!(again[0].2["to"], "succeeded");
    assert_eq!(again[0].1, events[3].1);
    assert_eq!(again[1].2["status"], "succeeded");

    // a finished job's full stream is its history and ends at once
    let replay = read_events(
        open(&api, &token, &events_path, None).await,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(replay.len(), 3, "{replay:#?}");
    // live status events carry their time (and reason), the same as their replay
    assert_eq!(replay[0].2, events[1].2, "running: live and replayed");
    assert_eq!(replay[1].2, events[3].2, "succeeded: live and replayed");
    for (_, _, data) in [&events[1], &events[3]] {
        assert!(
            data["at"]
                .as_str()
                .is_some_and(|at| at.parse::<chrono::DateTime<chrono::Utc>>().is_ok()),
            "{data}"
        );
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_signed_stream_url_opens_one_job_for_a_short_time(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (_user, token) = api.user().await;
    let (_bob, bob_token) = api.user().await;
    let id = render_job(&api, &token).await;
    let other = render_job(&api, &token).await;

    problem(
        api.post(&bob_token, &format!("/v1/jobs/{id}/stream-url"))
            .await,
        404,
    )
    .await;
    let issued: Value = api
        .post(&token, &format!("/v1/jobs/{id}/stream-url"))
        .await
        .json()
        .await
        .unwrap();
    let url = issued["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("/v1/jobs/{id}/events?token=")));

    // no header needed; cancel the job so the stream ends
    let stream = api.http.get(api.url(url)).send().await.unwrap();
    expect_status(&stream, 200);
    let reader = tokio::spawn(read_events(stream, Duration::from_secs(10)));
    expect_status(
        &api.post(&token, &format!("/v1/jobs/{id}/cancel")).await,
        200,
    );
    let events = reader.await.unwrap();
    assert_eq!(events.last().unwrap().2["to"], "cancelled", "{events:#?}");

    // not for another job, not tampered with
    let token_part = url.split("token=").nth(1).unwrap();
    let elsewhere = format!("/v1/jobs/{other}/events?token={token_part}");
    problem(api.http.get(api.url(&elsewhere)).send().await.unwrap(), 401).await;
    let tampered = format!("{url}x");
    problem(api.http.get(api.url(&tampered)).send().await.unwrap(), 401).await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn idle_streams_get_keep_alives_and_end_cleanly_on_shutdown(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (_user, token) = api.user().await;
    let id = render_job(&api, &token).await;
    let mut stream = open(&api, &token, &format!("/v1/jobs/{id}/events"), None).await;

    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !text.contains("\n:") && !text.starts_with(':') && tokio::time::Instant::now() < deadline
    {
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(2), stream.chunk()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(
        text.contains("\n:") || text.starts_with(':'),
        "no keep-alive comment in {text:?}"
    );
    assert_eq!(parse_events(&text)[0].0, "progress");

    api.stop.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream did not end on shutdown");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_stream_ends_when_the_token_that_opened_it_expires(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (user, long_lived) = api.user().await;
    let id = render_job(&api, &long_lived).await;
    let mut claims = crate::harness::claims(user);
    let expires = chrono::Utc::now().timestamp() + 2;
    claims["exp"] = json!(expires);
    let short = crate::harness::hs256(&claims);

    // with the header, and through a signed URL asked for with that token
    let url: Value = api
        .post(&short, &format!("/v1/jobs/{id}/stream-url"))
        .await
        .json()
        .await
        .unwrap();
    let by_header = open(&api, &short, &format!("/v1/jobs/{id}/events"), None).await;
    let by_url = api
        .http
        .get(api.url(url["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    for stream in [by_header, by_url] {
        expect_status(&stream, 200);
        let started = std::time::Instant::now();
        let events = read_events(stream, Duration::from_secs(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the stream outlived its token"
        );
        assert!(chrono::Utc::now().timestamp() >= expires, "ended early");
        let (last, _, data) = events.last().expect("events");
        assert_eq!(last, "expired", "{events:#?}");
        assert_eq!(data["job_id"], id.to_string());
    }
}
