//! Who is signed in: operator tokens (configured as SHA-256 hashes, each with a role), cookie
//! sessions kept in the database, CSRF tokens, and the sign-in rate limit.
//!
//! - A session is a random 256-bit id in a `__Host-` cookie (`Secure`, `HttpOnly`,
//!   `SameSite=Strict`, path `/`). The database keeps its SHA-256, the operator's name, a tag
//!   of the token they signed in with and the expiry (`studio_dashboard_sessions`, 0026), so
//!   sessions outlive a restart and every replica honours them. A session holds only while its
//!   operator is still configured with that token; the role is read from the configuration at
//!   each request. Signing out deletes the row.
//! - The CSRF token is an HMAC of the session's id: never stored, the same on every replica.
//! - Every request but `GET /login`, `GET /healthz` and the assets needs a session
//!   ([`guard`]). Every state-changing request must also carry the session's CSRF token (form
//!   field `csrf` or header `X-CSRF-Token`) and, if the browser says where it comes from
//!   (`Origin`, `Sec-Fetch-Site`), come from this origin. `POST /login` has no session yet: it
//!   gets the origin check and the rate limit (per process).
//! - Roles are checked by each write handler ([`Session::refused`]), never only by hiding a
//!   button.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use ring::digest;
use subtle::ConstantTimeEq;

use super::{DashState, sql};
use crate::config::{DashboardSettings, OperatorRole};

/// The session cookie's name. `__Host-`: the browser keeps it only if it is `Secure`, has path
/// `/` and no domain, so a sibling host cannot plant one.
pub const COOKIE: &str = "__Host-studio-dashboard";

/// Largest body a write may have (forms are small).
const BODY_LIMIT: usize = 64 * 1024;

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// The operator's configured name.
    pub operator: String,
    /// What they may do.
    pub role: OperatorRole,
    /// The CSRF token every write of this session carries.
    pub csrf: String,
}

impl Session {
    /// `None` when the session's role is at least `role`; else the 403 to answer, naming the
    /// role needed.
    #[must_use]
    pub fn refused(&self, role: OperatorRole) -> Option<Response> {
        if self.role >= role {
            return None;
        }
        Some(
            (
                StatusCode::FORBIDDEN,
                super::html::message_page(
                    "Forbidden",
                    &format!(
                        "This needs the {} role; you are signed in as {} ({}).",
                        role.as_str(),
                        self.operator,
                        self.role.as_str()
                    ),
                ),
            )
                .into_response(),
        )
    }
}

/// The operators who may sign in.
#[derive(Debug)]
pub struct Operators {
    list: Vec<(String, [u8; 32], OperatorRole)>,
}

impl Operators {
    /// From the (validated) settings.
    #[must_use]
    pub fn new(settings: &DashboardSettings) -> Self {
        Operators {
            list: settings.operator_hashes(),
        }
    }

    /// The operator whose token `token` is, and the tag of that token. Every hash is
    /// compared, in constant time.
    fn find(&self, token: &str) -> Option<(String, OperatorRole, [u8; 32])> {
        let hash = digest::digest(&digest::SHA256, token.as_bytes());
        let mut found = None;
        for (name, sha256, role) in &self.list {
            if bool::from(sha256.ct_eq(hash.as_ref())) {
                found = Some((name.clone(), *role, token_tag(sha256)));
            }
        }
        found
    }

    /// The role of operator `name` if they are still configured with the token tagged `tag`.
    fn role_of(&self, name: &str, tag: &[u8]) -> Option<OperatorRole> {
        self.list
            .iter()
            .find(|(n, sha256, _)| n == name && bool::from(token_tag(sha256).ct_eq(tag)))
            .map(|(_, _, role)| *role)
    }
}

/// What a session row says of the token it was signed in with: a hash of the configured hash
/// (so the table does not repeat the configuration's hashes).
fn token_tag(configured: &[u8; 32]) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"studio-dashboard session token tag\0");
    context.update(configured);
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The CSRF token of the session whose cookie holds `id`: an HMAC of the id, so it is the same
/// on every replica and stored nowhere.
fn csrf_token(id: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, id.as_bytes());
    hex::encode(ring::hmac::sign(&key, b"studio-dashboard csrf").as_ref())
}

/// Sessions in the database (`studio_dashboard_sessions`), by the SHA-256 of their id: a read
/// of the table does not hand out cookies.
#[derive(Debug)]
pub struct Sessions {
    pool: PgPool,
    ttl: Duration,
}

fn random_hex() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    // The system's random source failing is not something the dashboard can work around; the
    // zeroes would be caught by nothing, so refuse to go on.
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    hex::encode(bytes)
}

fn key(id: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, id.as_bytes())
        .as_ref()
        .to_vec()
}

impl Sessions {
    /// Sessions over `pool`; each lasts `ttl` from its sign-in.
    #[must_use]
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Sessions { pool, ttl }
    }

    /// A new session of `operator`, signed in with the token tagged `tag`; returns its id (the
    /// cookie's value). Expired sessions are deleted on the way.
    async fn create(&self, operator: &str, tag: &[u8; 32]) -> Result<String, sqlx::Error> {
        let id = random_hex();
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::SESSIONS_PRUNE).execute(&mut *tx).await?;
        sqlx::query(sql::SESSION_CREATE)
            .bind(key(&id))
            .bind(operator)
            .bind(tag.as_slice())
            .bind(self.ttl.as_secs_f64())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The unexpired session `id`: its operator and token tag.
    async fn get(&self, id: &str) -> Result<Option<(String, Vec<u8>)>, sqlx::Error> {
        sqlx::query_as(sql::SESSION_GET)
            .bind(key(id))
            .fetch_optional(&self.pool)
            .await
    }

    async fn remove(&self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query(sql::SESSION_DELETE)
            .bind(key(id))
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// Sign-in attempts per client address and in total, per minute.
#[derive(Debug)]
pub struct LoginLimiter {
    per_address: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    total: Mutex<(Instant, u32)>,
}

impl LoginLimiter {
    /// `per_address` attempts per minute from one address, five times that from all.
    #[must_use]
    pub fn new(per_address: u32) -> Self {
        LoginLimiter {
            per_address,
            seen: Mutex::new(HashMap::new()),
            total: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Count an attempt from `addr`; `Err(wait)` when over the limit.
    fn attempt(&self, addr: IpAddr) -> Result<(), Duration> {
        const MINUTE: Duration = Duration::from_secs(60);
        let now = Instant::now();
        let bump = |slot: &mut (Instant, u32), limit: u32| {
            if now.duration_since(slot.0) >= MINUTE {
                *slot = (now, 0);
            }
            if slot.1 >= limit {
                return Err(MINUTE.saturating_sub(now.duration_since(slot.0)));
            }
            slot.1 += 1;
            Ok(())
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() > 10_000 {
                seen.retain(|_, (at, _)| now.duration_since(*at) < MINUTE);
            }
            bump(seen.entry(addr).or_insert((now, 0)), self.per_address)?;
        }
        let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        bump(&mut total, self.per_address.saturating_mul(5))
    }
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser says the request comes from another site: `Sec-Fetch-Site` when it is
/// sent (every current browser), else `Origin` against `Host`. A client that sends neither
/// (curl) is not a browser riding on a cookie and is held by the CSRF token alone.
fn cross_site(headers: &HeaderMap) -> bool {
    // The browser's own word, when it gives it, is the most precise.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or(origin);
    bare != host
}

fn refuse(status: StatusCode, text: &str) -> Response {
    (status, super::html::message_page("Refused", text)).into_response()
}

/// The `csrf` field of a form body.
fn form_csrf(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
}

/// The gate in front of every route (see the module's doc).
pub async fn guard(State(state): State<DashState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let reading = method == Method::GET || method == Method::HEAD;
    if reading && (path == "/login" || path == "/healthz" || path.starts_with("/assets/")) {
        return next.run(request).await;
    }
    if path == "/login" && method == Method::POST {
        if cross_site(request.headers()) {
            return refuse(StatusCode::FORBIDDEN, "Cross-site sign-in refused.");
        }
        return next.run(request).await;
    }
    let session = match cookie(request.headers(), COOKIE) {
        Some(id) => match state.sessions.get(id).await {
            Ok(row) => row.and_then(|(operator, tag)| {
                let role = state.operators.role_of(&operator, &tag)?;
                Some(Session {
                    operator,
                    role,
                    csrf: csrf_token(id),
                })
            }),
            Err(err) => {
                tracing::warn!(error.message = %err, "dashboard: cannot read sessions");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database did not answer; try again in a moment.",
                );
            }
        },
        None => None,
    };
    let Some(session) = session else {
        if reading {
            let back = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".to_owned());
            let to = format!("/login?next={}", super::html::url_encode(&back));
            return Redirect::to(&to).into_response();
        }
        return refuse(StatusCode::UNAUTHORIZED, "Sign in first.");
    };
    let mut request = request;
    if !reading {
        if cross_site(request.headers()) {
            return refuse(StatusCode::FORBIDDEN, "Cross-site request refused.");
        }
        let header_token = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (parts, body) = request.into_parts();
        let bytes: Bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(bytes) => bytes,
            Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "The request is too large."),
        };
        let given = header_token
            .or_else(|| form_csrf(&bytes))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return refuse(
                StatusCode::FORBIDDEN,
                "The form's CSRF token is missing or wrong: reload the page and try again.",
            );
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// The sign-in form's fields.
#[derive(Debug, serde::Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `GET /login`.
pub async fn login_page(
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    super::html::login_page(q.get("next").map_or("/", String::as_str), None).into_response()
}

/// Only paths of this dashboard are followed after signing in (no open redirect).
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

/// `POST /login`: check the token, start a session.
pub async fn login(
    State(state): State<DashState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if let Err(wait) = state.limiter.attempt(peer.ip()) {
        tracing::warn!(client = %peer.ip(), "dashboard: sign-in attempts over the limit");
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            super::html::login_page(
                safe_next(&form.next),
                Some("Too many sign-in attempts: wait a minute and try again."),
            ),
        )
            .into_response();
        if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let Some((operator, role, tag)) = state.operators.find(form.token.trim()) else {
        tracing::info!(client = %peer.ip(), "dashboard: sign-in refused");
        return (
            StatusCode::UNAUTHORIZED,
            super::html::login_page(safe_next(&form.next), Some("That token is not valid.")),
        )
            .into_response();
    };
    let id = match state.sessions.create(&operator, &tag).await {
        Ok(id) => id,
        Err(err) => {
            tracing::warn!(error.message = %err, "dashboard: cannot record a session");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database did not answer; try again in a moment.",
            );
        }
    };
    tracing::info!(operator = %operator, role = role.as_str(), "dashboard: signed in");
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        state.sessions.ttl.as_secs()
    );
    let mut response = Redirect::to(safe_next(&form.next)).into_response();
    if let Ok(v) = cookie.parse() {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `POST /logout`.
pub async fn logout(State(state): State<DashState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, COOKIE)
        && let Err(err) = state.sessions.remove(id).await
    {
        tracing::warn!(error.message = %err, "dashboard: cannot end a session");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database did not answer, so you are still signed in; try again.",
        );
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(v) =
        format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0").parse()
    {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_next("/jobs?status=failed"), "/jobs?status=failed");
        assert_eq!(safe_next("//evil.test/"), "/");
        assert_eq!(safe_next("https://evil.test/"), "/");
        assert_eq!(safe_next("/\\evil.test"), "/");
    }

    #[test]
    fn the_limiter_refuses_after_the_limit() {
        let limiter = LoginLimiter::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(limiter.attempt(a).is_ok());
        assert!(limiter.attempt(a).is_ok());
        assert!(limiter.attempt(a).is_err());
        assert!(limiter.attempt(b).is_ok());
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:9091".parse().unwrap());
        assert!(!cross_site(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:9091".parse().unwrap());
        assert!(!cross_site(&h));
        h.insert(header::ORIGIN, "http://evil.test".parse().unwrap());
        assert!(cross_site(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:9091".parse().unwrap());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(cross_site(&h));
        h.insert("sec-fetch-site", "same-site".parse().unwrap());
        assert!(
            cross_site(&h),
            "a sibling subdomain is another site for the dashboard"
        );
        h.insert(header::ORIGIN, "null".parse().unwrap());
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(!cross_site(&h));
    }

    #[test]
    fn csrf_tokens_are_per_session_and_reveal_nothing_of_the_id() {
        let (a, b) = (random_hex(), random_hex());
        assert_eq!(csrf_token(&a), csrf_token(&a));
        assert_ne!(csrf_token(&a), csrf_token(&b));
        assert_eq!(csrf_token(&a).len(), 64);
        assert_ne!(csrf_token(&a), a);
        assert_ne!(key(&a), hex::decode(&a).unwrap());
    }

    #[test]
    fn a_session_holds_only_for_the_token_it_was_signed_in_with() {
        let old = [1u8; 32];
        let new = [2u8; 32];
        let before = Operators {
            list: vec![("ana".into(), old, OperatorRole::Admin)],
        };
        let rotated = Operators {
            list: vec![("ana".into(), new, OperatorRole::Admin)],
        };
        let demoted = Operators {
            list: vec![("ana".into(), old, OperatorRole::Viewer)],
        };
        let tag = token_tag(&old);
        assert_eq!(before.role_of("ana", &tag), Some(OperatorRole::Admin));
        assert_eq!(rotated.role_of("ana", &tag), None);
        assert_eq!(demoted.role_of("ana", &tag), Some(OperatorRole::Viewer));
        assert_eq!(before.role_of("bob", &tag), None);
    }
}
