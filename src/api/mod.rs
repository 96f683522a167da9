//! The job API: end users (with their Supabase access token) and trusted backends (with a
//! service token, acting for one user) create, read, cancel and follow jobs over HTTP.
//!
//! Identity is enforced by the database: every request runs in one `queue::user::UserTx`
//! as role `authenticated` with the verified claims, so the RLS policies of the migrations are
//! the only definition of who may see and do what.
//!
//! - [`auth`]: bearer tokens (HS256, ES256/RS256 via [`jwks`]) and service tokens → `Identity`;
//! - [`jobs`]: create, list, read, cancel; [`streams`]: following a job live;
//! - [`error`]: problem+json; [`openapi`]: the generated document; [`settings`]: `[api]`.

pub mod auth;
pub mod error;
pub mod jobs;
pub mod jwks;
pub mod limiter;
pub mod openapi;
pub mod streams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::{Instrument, info};

pub use crate::config::{ApiSettings, ServiceTokenSettings};

use crate::config::Settings;
use error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The API's pool (its login role is a member of `studio_api`).
    pub pool: PgPool,
    /// Verifies callers.
    pub verifier: Arc<auth::Verifier>,
    /// Job changes fanned out to streams.
    pub hub: Arc<streams::Hub>,
    /// Signs stream URLs.
    pub signer: Arc<streams::StreamSigner>,
    /// The settings.
    pub settings: Arc<ApiSettings>,
    /// Server shutdown: ends the streams.
    pub stop: CancellationToken,
    /// Per-caller limits.
    pub limits: Arc<Limits>,
}

/// The per-caller limits (see [`limiter`]).
#[derive(Debug)]
pub struct Limits {
    /// Requests per user.
    pub requests: Option<limiter::Gcra<uuid::Uuid>>,
    /// Failed authentications per client address.
    pub failures: Option<limiter::Gcra<std::net::IpAddr>>,
    /// Open streams per user.
    pub streams: limiter::StreamCounts,
}

impl Limits {
    fn new(settings: &ApiSettings) -> Limits {
        Limits {
            requests: limiter::Gcra::new(
                settings.user_requests_per_second,
                Duration::from_secs(1),
                settings.user_request_burst,
            ),
            failures: limiter::Gcra::new(
                settings.auth_failures_per_minute,
                Duration::from_secs(60),
                settings.auth_failures_per_minute,
            ),
            streams: limiter::StreamCounts::new(settings.max_streams_per_user),
        }
    }
}

impl ApiState {
    /// The caller behind `headers`, sent from `peer`, within its limits: an address that
    /// failed to authenticate too often is refused before its credentials are looked at, a
    /// failure spends from its address's allowance, and a verified caller spends one request
    /// from its user's.
    ///
    /// # Errors
    /// 401 (see [`auth::Verifier::identify`]), 400, or 429 with `Retry-After`.
    pub async fn authenticate(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> Result<auth::Identity, ApiError> {
        let failures = self.limits.failures.as_ref().zip(peer);
        if let Some(wait) = failures.and_then(|(f, ip)| f.exhausted(&ip)) {
            return Err(ApiError::rate_limited(
                "auth_failures",
                wait,
                "too many failed authentications from this address; retry later",
            ));
        }
        let identity = match self.verifier.identify(headers).await {
            Ok(identity) => identity,
            Err(err) => {
                if err.status() == StatusCode::UNAUTHORIZED
                    && let Some((failures, ip)) = failures
                {
                    let _ = failures.check(&ip);
                }
                return Err(err);
            }
        };
        if let Some(requests) = &self.limits.requests
            && let Err(wait) = requests.check(&identity.user)
        {
            return Err(ApiError::rate_limited(
                "requests",
                wait,
                "too many requests for this user; retry later",
            ));
        }
        Ok(identity)
    }
}

impl ApiState {
    /// State over `pool` for `settings`, ended by `stop`. The hub is not listening yet: see
    /// [`streams::Hub::run`].
    ///
    /// # Errors
    /// Unusable keys (see [`auth::Verifier::new`]).
    pub fn new(
        pool: PgPool,
        settings: &ApiSettings,
        stop: CancellationToken,
    ) -> anyhow::Result<ApiState> {
        Ok(ApiState {
            pool,
            verifier: Arc::new(auth::Verifier::new(settings)?),
            hub: Arc::new(streams::Hub::default()),
            signer: Arc::new(streams::StreamSigner::new(
                settings
                    .stream_secret
                    .as_ref()
                    .map(|s| s.expose_secret().as_bytes()),
            )),
            settings: Arc::new(settings.clone()),
            stop,
            limits: Arc::new(Limits::new(settings)),
        })
    }
}

/// The API's routes, with CORS (when origins are configured) and the body limit.
pub fn router(state: ApiState) -> Router {
    let settings = state.settings.clone();
    let mut router = Router::new()
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::show))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/events", get(streams::routes::follow))
        .route(
            "/v1/jobs/{id}/stream-url",
            post(streams::routes::stream_url),
        )
        .route("/v1/openapi.json", get(openapi::document))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(settings.body_limit))
        .layer(middleware::from_fn_with_state(
            settings.body_limit,
            refuse_large_bodies,
        ))
        .layer(middleware::from_fn(request_id))
        .with_state(state);
    if !settings.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = settings
            .cors_origins
            .iter()
            .map(|origin| origin.header_value().clone())
            .collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("idempotency-key"),
                    HeaderName::from_static("last-event-id"),
                    HeaderName::from_static(auth::ON_BEHALF_OF),
                ])
                // What a page reads: where a job is, how long to wait after a 429 or 503,
                // whether a create was a replay, and the id to quote in a support request.
                .expose_headers([
                    header::LOCATION,
                    header::RETRY_AFTER,
                    HeaderName::from_static(jobs::IDEMPOTENT_REPLAYED),
                    HeaderName::from_static(REQUEST_ID),
                ])
                .max_age(Duration::from_secs(600)),
        );
    }
    router
}

/// The header carrying a request's id.
pub const REQUEST_ID: &str = "x-request-id";

/// A request's id: the caller's `X-Request-Id` when it is short and plain (a proxy's or the
/// page's own, so one id follows the request through), else a new UUID; answered in
/// `X-Request-Id` and recorded on every line the request logs.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let span = tracing::info_span!("api", request_id = %id);
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// 413 from the declared length, before any of the body is read.
async fn refuse_large_bodies(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large")
            .into_response();
    }
    next.run(request).await
}

/// Serve `router` on `addr` until `stop`, through the one HTTP assembly (for embedders and
/// tests that build the API's state themselves).
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    crate::server::serve("api.listen", addr, router, stop).await
}

/// The API's database role may not act as users (it is not a member of `studio_api`). Its
/// hint (`cli::report`) names the one fix, a login role in `studio_api` in `api.database_url`,
/// and replaces the generic hint for `insufficient_privilege`, which names the worker's role.
#[derive(Debug, thiserror::Error)]
pub enum ApiRoleRefused {
    /// `api.database_url` is unset: the API connected with the worker's `database.url`.
    #[error(
        "the API cannot act as users: api.database_url is unset, so it connected with database.url, whose role is not a member of studio_api"
    )]
    WorkersRole(#[source] crate::queue::Error),
    /// `api.database_url`'s role is not a member of `studio_api`.
    #[error(
        "the API cannot act as users: the role of api.database_url is not a member of studio_api"
    )]
    NotInStudioApi(#[source] crate::queue::Error),
}

impl ApiRoleRefused {
    /// `err` as a refusal if the database said `insufficient_privilege`, else as it is.
    fn from_error(err: crate::queue::Error, own_url: bool) -> anyhow::Error {
        let refused = matches!(&err, crate::queue::Error::Db(sqlx::Error::Database(db))
            if db.code().as_deref() == Some("42501"));
        match (refused, own_url) {
            (false, _) => err.into(),
            (true, true) => ApiRoleRefused::NotInStudioApi(err).into(),
            (true, false) => ApiRoleRefused::WorkersRole(err).into(),
        }
    }

    /// What to do.
    pub const HINT: &'static str = "set api.database_url (STUDIO_API__DATABASE_URL) to the API's own login role, a member of studio_api: `create role <api login> login password '…' in role studio_api` as the schema owner (see README, Roles); never give the API the worker's role";
}

/// The API running: its address and tasks.
pub struct RunningApi {
    /// Where it listens.
    pub addr: SocketAddr,
    server: JoinHandle<()>,
    hub: JoinHandle<()>,
    pool: PgPool,
}

impl RunningApi {
    /// The API's pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Wait for the server (after its stop token was cancelled) and close the pool.
    pub async fn finished(self) {
        let _ = self.server.await;
        let _ = self.hub.await;
        self.pool.close().await;
    }
}

/// Connect as the API's role, check that it may act as users, and serve the API on
/// `api.listen` until `stop`. `None` when the API is off.
///
/// # Errors
/// Start-up failures: database unreachable or the role not a member of `studio_api`, port
/// taken, unusable keys.
pub async fn start(
    settings: &Settings,
    stop: CancellationToken,
) -> anyhow::Result<Option<RunningApi>> {
    let api = &settings.api;
    let Some(addr) = api.listen else {
        return Ok(None);
    };
    let mut database = settings.database.clone();
    if let Some(url) = &api.database_url {
        // The API's own login role: its URL carries its own credentials, never the worker's
        // `database.password` or `database.password_file` (which would override them).
        database.url = Some(url.clone());
        database.password = None;
        database.password_file = None;
    }
    database.max_connections = api.max_connections;
    database.application_name = format!("{}-api", database.application_name);
    let pool = crate::db::connect(&database, database.startup_timeout).await?;
    crate::queue::user::check_can_act_as_users(&pool)
        .await
        .map_err(|e| ApiRoleRefused::from_error(e, api.database_url.is_some()))?;
    let state = ApiState::new(pool.clone(), api, stop.clone())?;
    let hub = tokio::spawn(state.hub.clone().run(pool.clone(), stop.clone()));
    // Streams open and close in bursts: give back what each burst freed.
    tokio::spawn(crate::memory::trim_until(stop.clone()));
    let (addr, server) = serve(addr, router(state), stop).await?;
    info!(%addr, "serving the job API");
    Ok(Some(RunningApi {
        addr,
        server,
        hub,
        pool,
    }))
}
