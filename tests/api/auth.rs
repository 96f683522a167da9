//! Who may call: user tokens (HS256, and ES256 from a JWKS that rotates), service tokens acting
//! for one user, and every way a credential is refused.

use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{
    EsKey, JwksServer, SERVICE_TOKEN, TestApi, claims, expect_status, hs256, problem, settings,
};

/// A 401 saying `why` (RFC 6750 `error_description`, the problem's detail).
async fn refused_as(api: &TestApi, token: Option<&str>, why: &str) {
    let mut request = api.http.get(api.url("/v1/jobs"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let challenge = match token {
        None => "Bearer".to_owned(),
        Some(_) => format!("Bearer error=\"invalid_token\", error_description=\"{why}\""),
    };
    assert_eq!(response.headers()["www-authenticate"], challenge.as_str());
    let body = problem(response, 401).await;
    assert_eq!(body["detail"], why);
}

const SIGNATURE: &str = "invalid JWT: signature cannot be verified";

async fn refused(api: &TestApi, token: Option<&str>) {
    refused_as(api, token, SIGNATURE).await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn every_unverifiable_token_is_a_401_saying_which_check_failed(pool: PgPool) {
    let logs = crate::harness::captured_logs();
    let api = TestApi::start(&pool).await;
    let (user, _) = api.user().await;
    let good = claims(user);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        hs256(&c)
    };
    let now = chrono::Utc::now().timestamp();

    refused_as(
        &api,
        None,
        "missing credentials: send Authorization: Bearer <access token>",
    )
    .await;
    refused_as(&api, Some("not-a-jwt"), "invalid JWT: cannot be parsed").await;
    let expired = with(&|c| c["exp"] = json!(now - 120));
    refused_as(&api, Some(&expired), "JWT expired").await;
    refused_as(
        &api,
        Some(&with(&|c| c["nbf"] = json!(now + 120))),
        "JWT not yet valid (nbf)",
    )
    .await;
    refused_as(
        &api,
        Some(&with(&|c| c["aud"] = json!("someone-else"))),
        "invalid JWT: audience (aud) not accepted",
    )
    .await;
    for role in ["service_role", "anon"] {
        refused_as(
            &api,
            Some(&with(&|c| c["role"] = json!(role))),
            "invalid JWT: role must be authenticated",
        )
        .await;
    }
    // not a UUID, or a UUID in a spelling PostgreSQL's cast does not read (was a 500)
    for sub in [
        "not-a-uuid".to_owned(),
        format!("urn:uuid:{user}"),
        format!("{{{user}}}"),
        user.simple().to_string(),
    ] {
        refused_as(
            &api,
            Some(&with(&|c| c["sub"] = json!(sub))),
            "invalid JWT: sub must be a user id (UUID)",
        )
        .await;
    }
    refused_as(
        &api,
        Some(&with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        })),
        "invalid JWT: exp, sub and aud are required",
    )
    .await;

    // signed with another secret
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"another-secret-that-is-32-bytes-long!").unwrap(),
    )
    .unwrap();
    refused(&api, Some(&forged)).await;

    // alg: none
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    refused_as(&api, Some(&none), "invalid JWT: cannot be parsed").await;
    // an algorithm the API does not take
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &good,
        &EncodingKey::from_secret(crate::harness::SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    refused_as(
        &api,
        Some(&hs384),
        "invalid JWT: signing algorithm not accepted",
    )
    .await;

    // a good token with its payload swapped
    let token = hs256(&good);
    let parts: Vec<&str> = token.split('.').collect();
    let mut other = good.clone();
    other["sub"] = json!(Uuid::new_v4());
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(other.to_string()),
        parts[2]
    );
    refused(&api, Some(&swapped)).await;

    // the good one passes
    expect_status(&api.get(&token, "/v1/jobs").await, 200);

    // the reason is logged at info with the request id (answered in X-Request-Id), never the
    // token; a caller's own plain request id is kept
    let response = api
        .http
        .get(api.url("/v1/jobs"))
        .bearer_auth(&expired)
        .header("x-request-id", "page-req-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "page-req-7f3a");
    let generated = api.get(&forged, "/v1/jobs").await;
    let generated = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(generated.parse::<Uuid>().is_ok(), "{generated}");
    let log = logs();
    let line = |id: &str| {
        log.lines()
            .find(|l| l.contains(id) && l.contains("credentials refused"))
            .unwrap_or_else(|| panic!("no refusal logged for {id}:\n{log}"))
            .to_owned()
    };
    let line_expired = line("page-req-7f3a");
    assert!(line_expired.contains(" INFO "), "{line_expired}");
    assert!(line_expired.contains("JWT expired"), "{line_expired}");
    assert!(line(&generated).contains("signature cannot be verified"));
    assert!(
        !log.contains(&expired) && !log.contains(&forged),
        "a token reached the log"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn es256_keys_come_from_the_jwks_and_rotate_without_a_restart(pool: PgPool) {
    let first = EsKey::generate("key-1");
    let second = EsKey::generate("key-2");
    let jwks = JwksServer::start(json!({ "keys": [first.jwk()] })).await;
    let mut config = settings();
    config.jwks_url = Some(jwks.url.clone());
    let api = TestApi::with(&pool, config).await;
    let user = crate::harness::create_user(&pool).await;

    expect_status(&api.get(&first.token(&claims(user)), "/v1/jobs").await, 200);
    let created = api
        .create(
            &first.token(&claims(user)),
            json!({ "kind": "render", "input": {} }),
        )
        .await;
    expect_status(&created, 201);

    // rotation: the new key is published, the old one withdrawn
    jwks.set(json!({ "keys": [second.jwk()] }));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    expect_status(
        &api.get(&second.token(&claims(user)), "/v1/jobs").await,
        200,
    );

    // an HS256 token "signed" with the public key's bytes, naming an ES256 key: refused
    let public = first.jwk().to_string();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("key-2".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims(user),
        &EncodingKey::from_secret(public.as_bytes()).unwrap(),
    )
    .unwrap();
    refused(&api, Some(&confused)).await;

    // made-up key ids cannot make the API hammer the key server: at most one fetch per
    // jwks_min_refetch (300 ms here), however many tokens arrive
    let strangers: Vec<String> = (0..30)
        .map(|i| EsKey::generate(&format!("unknown-{i}")).token(&claims(user)))
        .collect();
    let before = jwks.fetches.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    for stranger in &strangers {
        refused(&api, Some(stranger)).await;
    }
    let during = jwks.fetches.load(Ordering::SeqCst) - before;
    let allowed = 1 + started.elapsed().as_millis() as usize / 300;
    assert!(
        during <= allowed && during < strangers.len(),
        "{during} JWKS fetches for {} unknown key ids in {:?}",
        strangers.len(),
        started.elapsed()
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_service_token_acts_for_one_user_through_the_same_rls(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (alice, alice_token) = api.user().await;
    let (bob, _) = api.user().await;
    let as_service = |user: Option<String>, body: Value| {
        let mut request = api
            .http
            .post(api.url("/v1/jobs"))
            .bearer_auth(SERVICE_TOKEN)
            .json(&body);
        if let Some(user) = user {
            request = request.header("x-on-behalf-of", user);
        }
        request.send()
    };
    let render = json!({ "kind": "render", "input": {} });

    let created = as_service(Some(alice.to_string()), render.clone())
        .await
        .unwrap();
    expect_status(&created, 201);
    let job: Value = created.json().await.unwrap();
    assert_eq!(job["user_id"], json!(alice));
    assert_eq!(job["created_by_service"], "orchestrator");

    // alice sees who created it
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    let seen: Value = api.get(&alice_token, &path).await.json().await.unwrap();
    assert_eq!(seen["created_by_service"], "orchestrator");

    // acting for bob, the service cannot see or cancel alice's job
    let as_bob = |path: String| {
        api.http
            .get(api.url(&path))
            .bearer_auth(SERVICE_TOKEN)
            .header("x-on-behalf-of", bob.to_string())
            .send()
    };
    problem(as_bob(path.clone()).await.unwrap(), 404).await;
    let bobs: Value = as_bob("/v1/jobs".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["jobs"], json!([]));
    let cancel = api
        .http
        .post(api.url(&format!("{path}/cancel")))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-on-behalf-of", bob.to_string())
        .send()
        .await
        .unwrap();
    problem(cancel, 404).await;

    // streams: the service may follow alice's job for alice, not for bob
    let events = format!("{path}/events");
    let for_user = |user: uuid::Uuid, path: String, post: bool| {
        let url = api.url(&path);
        let request = if post {
            api.http.post(url)
        } else {
            api.http.get(url)
        };
        request
            .bearer_auth(SERVICE_TOKEN)
            .header("x-on-behalf-of", user.to_string())
            .send()
    };
    let followed = for_user(alice, events.clone(), false).await.unwrap();
    expect_status(&followed, 200);
    drop(followed);
    problem(for_user(bob, events, false).await.unwrap(), 404).await;
    problem(
        for_user(bob, format!("{path}/stream-url"), true)
            .await
            .unwrap(),
        404,
    )
    .await;
    expect_status(
        &for_user(alice, format!("{path}/stream-url"), true)
            .await
            .unwrap(),
        200,
    );

    problem(as_service(None, render.clone()).await.unwrap(), 400).await;
    problem(
        as_service(Some("bob".into()), render.clone())
            .await
            .unwrap(),
        400,
    )
    .await;
    problem(
        as_service(Some(Uuid::new_v4().to_string()), render.clone())
            .await
            .unwrap(),
        422,
    )
    .await;
    problem(
        as_service(
            Some(alice.to_string()),
            json!({ "kind": "thumbnail", "input": {} }),
        )
        .await
        .unwrap(),
        403,
    )
    .await;

    // users cannot claim to be a service
    let forged: Value = api
        .create(&alice_token, json!({ "kind": "render", "input": {} }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(forged["created_by_service"], Value::Null);
    refused_as(
        &api,
        Some("svc_orchestrator_wrong"),
        "invalid JWT: cannot be parsed",
    )
    .await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn cors_answers_preflight_for_configured_origins_only(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let preflight = |origin: &'static str| {
        api.http
            .request(reqwest::Method::OPTIONS, api.url("/v1/jobs"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };
    let allowed = preflight("http://127.0.0.1:1").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://127.0.0.1:1"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // a page can read what it needs from the answers: where the job is, how long to wait, a
    // replay, the request id
    let (_, token) = api.user().await;
    let created = api
        .http
        .post(api.url("/v1/jobs"))
        .header("origin", "http://127.0.0.1:1")
        .bearer_auth(&token)
        .json(&json!({ "kind": "render", "input": {} }))
        .send()
        .await
        .unwrap();
    expect_status(&created, 201);
    let exposed = created.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in [
        "location",
        "retry-after",
        "idempotent-replayed",
        "x-request-id",
    ] {
        assert!(
            exposed.split(',').any(|h| h.trim() == header),
            "{header} not exposed: {exposed}"
        );
        if header != "retry-after" {
            assert!(created.headers().contains_key(header), "{header} not sent");
        }
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_openapi_document_describes_every_route(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let doc: Value = api
        .http
        .get(api.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/events",
        "/v1/jobs/{id}/stream-url",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_service_token_reads_follows_and_cancels_only_its_own_kinds(pool: PgPool) {
    let api = TestApi::start(&pool).await;
    let (alice, alice_token) = api.user().await;
    // alice's own jobs: one of the service's kind (render), one of another (thumbnail)
    let mut ids = Vec::new();
    for kind in ["render", "thumbnail"] {
        let job: Value = api
            .create(&alice_token, json!({ "kind": kind, "input": {} }))
            .await
            .json()
            .await
            .unwrap();
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    let (render, thumbnail) = (&ids[0], &ids[1]);
    let as_service = |post: bool, path: String| {
        let url = api.url(&path);
        let request = if post {
            api.http.post(url)
        } else {
            api.http.get(url)
        };
        request
            .bearer_auth(SERVICE_TOKEN)
            .header("x-on-behalf-of", alice.to_string())
            .send()
    };

    // the list holds only its kinds, whatever the filter
    let listed: Value = as_service(false, "/v1/jobs".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["render"]);
    let filtered: Value = as_service(false, "/v1/jobs?kind=thumbnail".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["jobs"], json!([]));

    // a job of another kind is someone else's: read, follow, stream URL and cancel are 404
    for (post, path) in [
        (false, format!("/v1/jobs/{thumbnail}")),
        (false, format!("/v1/jobs/{thumbnail}/events")),
        (true, format!("/v1/jobs/{thumbnail}/stream-url")),
        (true, format!("/v1/jobs/{thumbnail}/cancel")),
    ] {
        problem(as_service(post, path).await.unwrap(), 404).await;
    }
    let untouched: Value = api
        .get(&alice_token, &format!("/v1/jobs/{thumbnail}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(untouched["status"], "pending", "the cancel did nothing");

    // its own kind: all of it
    expect_status(
        &as_service(false, format!("/v1/jobs/{render}"))
            .await
            .unwrap(),
        200,
    );
    expect_status(
        &as_service(true, format!("/v1/jobs/{render}/stream-url"))
            .await
            .unwrap(),
        200,
    );
    let cancelled: Value = as_service(true, format!("/v1/jobs/{render}/cancel"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn cached_keys_are_trusted_for_a_bounded_time_while_the_key_server_is_down(pool: PgPool) {
    let key = EsKey::generate("key-1");
    let jwks = JwksServer::start(json!({ "keys": [key.jwk()] })).await;
    let mut config = settings();
    config.jwks_url = Some(jwks.url.clone());
    config.jwks_refresh = std::time::Duration::from_millis(300);
    config.jwks_max_stale = std::time::Duration::from_millis(900);
    let api = TestApi::with(&pool, config).await;
    let user = crate::harness::create_user(&pool).await;
    let token = key.token(&claims(user));
    // the keys are fetched during this request: not before this instant
    let fetched = std::time::Instant::now();
    expect_status(&api.get(&token, "/v1/jobs").await, 200);

    // the key server goes down: the cached key keeps verifying for a while, then is refused
    // with a 503 (not the caller's fault) until the server answers again
    jwks.down.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    let refused_at = loop {
        let response = api.get(&token, "/v1/jobs").await;
        let status = response.status().as_u16();
        answers.push(status);
        if status == 503 {
            assert_eq!(response.headers()["retry-after"], "30");
            let body = problem(response, 503).await;
            assert_eq!(
                body["detail"],
                "access tokens cannot be verified right now; retry later"
            );
            break fetched.elapsed();
        }
        assert_eq!(status, 200, "{answers:?}");
        assert!(
            fetched.elapsed() < std::time::Duration::from_secs(10),
            "never refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        refused_at >= std::time::Duration::from_millis(1200),
        "refused after {refused_at:?}, before refresh + max_stale"
    );
    assert!(answers.len() > 1, "trusted while stale: {answers:?}");

    jwks.down.store(false, Ordering::SeqCst);
    crate::harness::wait_for(
        "the key server is back",
        std::time::Duration::from_secs(10),
        || async { (api.get(&token, "/v1/jobs").await.status() == 200).then_some(()) },
    )
    .await;
}
