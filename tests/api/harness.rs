//! The job API on real parts: a fresh database per test (`#[sqlx::test]`), the API connected as
//! a login role in `studio_api` (never the superuser), served on a free port; tokens minted
//! with real keys (an HS256 secret, ES256 keys served by a local JWKS endpoint).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::api::{ApiSettings, ApiState, ServiceTokenSettings, router, serve};
use studio_worker::queue::{ClaimRequest, Lease, Queue, WorkerId};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "../common/mod.rs"]
#[allow(dead_code)] // shared with the other test binaries; not every helper is used here
mod common;
pub use common::{api_pool, create_user, wait_for, worker_pool};

#[path = "../common/webdriver.rs"]
#[allow(dead_code)] // shared with the dashboard's tests; screenshots are theirs
pub mod webdriver;

/// The HS256 secret of the tests' user tokens.
pub const SECRET: &str = "test-secret-at-least-thirty-two-bytes-long";
/// The service token the tests' backend uses (configured by its SHA-256 only).
pub const SERVICE_TOKEN: &str = "svc_orchestrator_0123456789abcdef";
/// An ES256 key pair: signs tokens, and its public half as a JWK.
pub struct EsKey {
    pub kid: String,
    encoding: EncodingKey,
    public: Vec<u8>,
}

impl EsKey {
    pub fn generate(kid: &str) -> EsKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        EsKey {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    pub fn jwk(&self) -> Value {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // uncompressed point: 0x04 || x || y
        json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": b64.encode(&self.public[1..33]), "y": b64.encode(&self.public[33..65]),
        })
    }

    pub fn token(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A JWKS endpoint whose key set the test can change, counting its fetches.
pub struct JwksServer {
    pub url: String,
    pub keys: Arc<std::sync::Mutex<Value>>,
    pub fetches: Arc<AtomicUsize>,
    /// While set, the endpoint answers 503 (a key server outage).
    pub down: Arc<std::sync::atomic::AtomicBool>,
}

impl JwksServer {
    pub async fn start(keys: Value) -> JwksServer {
        let keys = Arc::new(std::sync::Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (k, f, d) = (keys.clone(), fetches.clone(), down.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (k, f, d) = (k.clone(), f.clone(), d.clone());
                async move {
                    use axum::response::IntoResponse;
                    f.fetch_add(1, Ordering::SeqCst);
                    if d.load(Ordering::SeqCst) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    axum::Json(k.lock().unwrap().clone()).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksServer {
            url: format!("http://{addr}/jwks.json"),
            keys,
            fetches,
            down,
        }
    }

    pub fn set(&self, keys: Value) {
        *self.keys.lock().unwrap() = keys;
    }
}

/// The claims Supabase Auth puts in an access token, valid for an hour.
pub fn claims(user: Uuid) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "sub": user, "role": "authenticated", "aud": "authenticated",
        "iat": now, "exp": now + 3600, "email": format!("{user}@example.test"),
    })
}

/// An HS256 user token.
pub fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// The API under test.
pub struct TestApi {
    pub base: String,
    pub http: reqwest::Client,
    /// The worker's side, to drive jobs.
    pub queue: Queue,
    pub db: PgPool,
    pub stop: CancellationToken,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Settings of the tests' API: the HS256 secret, one service token (kind `render` only).
pub fn settings() -> ApiSettings {
    let mut settings = ApiSettings {
        jwt_secret: Some(SECRET.into()),
        cors_origins: vec!["http://127.0.0.1:1".parse().unwrap()],
        keep_alive: Duration::from_millis(500),
        jwks_min_refetch: Duration::from_millis(300),
        // the per-caller limits have their own test (limits.rs); elsewhere they would only
        // make request-heavy tests depend on timing
        user_requests_per_second: 0,
        auth_failures_per_minute: 0,
        ..ApiSettings::default()
    };
    let sha256 = ring::digest::digest(&ring::digest::SHA256, SERVICE_TOKEN.as_bytes());
    settings.service_tokens.insert(
        "orchestrator".into(),
        ServiceTokenSettings {
            sha256: hex::encode(sha256.as_ref()).try_into().unwrap(),
            kinds: vec!["render".into()],
        },
    );
    settings
}

impl TestApi {
    pub async fn start(db: &PgPool) -> TestApi {
        TestApi::with(db, settings()).await
    }

    pub async fn with(db: &PgPool, settings: ApiSettings) -> TestApi {
        settings.validate().unwrap();
        let pool = api_pool(db).await;
        let stop = CancellationToken::new();
        let state = ApiState::new(pool.clone(), &settings, stop.clone()).unwrap();
        tokio::spawn(state.hub.clone().run(pool, stop.clone()));
        let (addr, _task) = serve("127.0.0.1:0".parse().unwrap(), router(state), stop.clone())
            .await
            .unwrap();
        TestApi {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            queue: Queue::new(worker_pool(db).await),
            db: db.clone(),
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST /v1/jobs as `token`.
    pub async fn create(&self, token: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/jobs"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// A user's token and id (a new row in auth.users).
    pub async fn user(&self) -> (Uuid, String) {
        let user = create_user(&self.db).await;
        (user, hs256(&claims(user)))
    }

    /// Claim the one due `render` job as a fresh worker; its lease.
    pub async fn claim_one(&self) -> Lease {
        let worker = WorkerId::generate();
        let kinds = vec!["render".to_owned()];
        let claimed = self
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
        claimed[0].lease(&worker)
    }
}

/// The body as JSON, after checking the status.
#[track_caller]
pub fn expect_status(response: &reqwest::Response, status: u16) {
    assert_eq!(
        response.status().as_u16(),
        status,
        "unexpected status for {}",
        response.url()
    );
}

/// A problem+json answer with `status`.
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "{}", response.url());
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}

/// Read an SSE response until it ends (or `within` passes), as (event, id, data) triples.
pub async fn read_events(
    mut response: reqwest::Response,
    within: Duration,
) -> Vec<(String, Option<String>, Value)> {
    let mut text = String::new();
    let _ = tokio::time::timeout(within, async {
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    parse_events(&text)
}

/// Parse SSE text into (event, id, data) triples (comments skipped).
pub fn parse_events(text: &str) -> Vec<(String, Option<String>, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let (mut event, mut id, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            Some((event?, id, data?))
        })
        .collect()
}

/// Everything logged in this test binary from the first call on (a global subscriber writing
/// to memory; tests find their own lines by request id). Returns a reader of the log so far.
pub fn captured_logs() -> impl Fn() -> String {
    use std::sync::{Mutex, OnceLock};
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(sink.clone()))
            .try_init()
            .expect("the only global subscriber of the API tests");
        log
    });
    let log = log.clone();
    move || String::from_utf8_lossy(&log.lock().unwrap()).into_owned()
}
