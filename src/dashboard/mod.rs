//! The operators' dashboard (issue 20): server-rendered pages over the queue, served by the
//! same binary through the one HTTP assembly, on its own listener (`dashboard.listen`).
//!
//! - [`auth`]: sign-in with operator tokens, cookie sessions kept in the database, CSRF, roles,
//!   the sign-in limit;
//! - [`pages`]: Overview, Users, Kinds, Schedules, Audit; [`jobs`]: the job list with its bulk
//!   actions, and one job (with "why isn't it running?");
//! - [`live`]: the live-update stream, and the rollups the pages read (per minute for the
//!   charts, per user over the last hour for the Users page);
//! - [`sql`]: the dashboard's own statements; [`html`]: escaping, the page frame, tables.
//!
//! Assets (`assets/`) are compiled in; nothing is fetched at run time. The dashboard has its
//! own small pool (`dashboard.max_connections`) so that a heavy page never takes the worker's
//! connections.

pub mod auth;
pub mod html;
pub mod jobs;
pub mod live;
pub mod pages;
mod sql;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Settings;
use crate::queue::Queue;

/// What the dashboard's handlers share.
#[derive(Clone)]
pub struct DashState {
    /// The dashboard's pool (a member of `studio_worker`).
    pub pool: PgPool,
    /// The queue over that pool.
    pub queue: Queue,
    /// The whole configuration (kinds' limits for "why", schedules).
    pub settings: Arc<Settings>,
    /// Who may sign in.
    pub operators: Arc<auth::Operators>,
    /// Who is signed in (in the database).
    pub sessions: Arc<auth::Sessions>,
    /// Sign-in attempts.
    pub limiter: Arc<auth::LoginLimiter>,
    /// Queue changes, for the live pages.
    pub changes: tokio::sync::watch::Receiver<u64>,
    /// Server shutdown: ends the live streams.
    pub stop: CancellationToken,
}

impl DashState {
    /// State over `pool` for `settings`; `changes` ticks when the queue changed (see
    /// [`live::follow_changes`]).
    #[must_use]
    pub fn new(
        pool: PgPool,
        settings: Arc<Settings>,
        changes: tokio::sync::watch::Receiver<u64>,
        stop: CancellationToken,
    ) -> Self {
        let dashboard = &settings.dashboard;
        let sessions = Arc::new(auth::Sessions::new(pool.clone(), dashboard.session_ttl));
        DashState {
            queue: Queue::new(pool.clone()),
            pool,
            operators: Arc::new(auth::Operators::new(dashboard)),
            sessions,
            limiter: Arc::new(auth::LoginLimiter::new(dashboard.login_attempts_per_minute)),
            settings,
            changes,
            stop,
        }
    }
}

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Headers every answer carries: no framing, no sniffing, no referrer to other sites, scripts and styles from
/// this origin only, and pages never cached (they show live data and CSRF tokens).
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The dashboard's routes, behind [`auth::guard`].
pub fn router(state: DashState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/", get(pages::overview))
        .route("/live", get(live::stream))
        .route("/jobs", get(jobs::list))
        .route("/jobs/bulk", post(jobs::bulk))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/retry", post(jobs::retry))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/users", get(pages::users))
        .route("/kinds", get(pages::kinds))
        .route("/kinds/{kind}/pause", post(pages::pause))
        .route("/kinds/{kind}/resume", post(pages::resume))
        .route("/kinds/{kind}/quota", post(pages::set_quota))
        .route("/kinds/{kind}/quota/clear", post(pages::clear_quota))
        .route("/kinds/declare", post(pages::declare))
        .route("/kinds/{kind}/forget", post(pages::forget))
        .route("/schedules", get(pages::schedules))
        .route("/audit", get(pages::audit))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                html::message_page("Not found", "There is no such page."),
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Every fixed statement the pages run, as (name, SQL, example arguments as SQL literals): the
/// plan tests prepare each and read its plan over a big table. The job lists are built per
/// filter (see [`jobs::list_statement`]).
#[doc(hidden)]
#[must_use]
pub fn page_statements() -> Vec<(&'static str, &'static str, &'static str)> {
    use crate::control::sql::{audit, why};
    let job = "'00000000-0000-4000-8000-000000000001'::uuid";
    vec![
        ("chart", sql::CHART, "now() - interval '1 day'"),
        (
            "finished_by_kind",
            sql::FINISHED_BY_KIND,
            "now() - interval '1 day'",
        ),
        ("replicas", sql::REPLICAS, ""),
        ("users", sql::USERS, ""),
        ("user_hour", sql::USER_HOUR, ""),
        ("rollup", sql::ROLLUP, "now() - interval '1 hour', now()"),
        (
            "schedule_jobs",
            sql::SCHEDULE_JOBS,
            "array['00000000-0000-4000-8000-000000000001'::uuid]",
        ),
        ("gauges", crate::queue::QUEUE_GAUGES_SQL, ""),
        ("audit_list", audit::LIST, "null, 51"),
        ("audit_for_job", audit::FOR_JOB, job),
        (
            "why_facts",
            why::FACTS,
            "'00000000-0000-4000-8000-000000000001'::uuid, null",
        ),
        (
            "why_ahead_fifo",
            why::AHEAD_FIFO,
            "'00000000-0000-4000-8000-000000000001'::uuid, null, 'render', 0::int2, now()",
        ),
        (
            "why_ahead_fair",
            why::AHEAD_FAIR,
            "'00000000-0000-4000-8000-000000000001'::uuid, null, 'render', 0::int2, now(), '00000000-0000-4000-8000-000000000002'::uuid",
        ),
    ]
}

/// The dashboard running: its address and tasks.
pub struct RunningDashboard {
    /// Where it listens.
    pub addr: SocketAddr,
    server: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    pool: PgPool,
}

impl RunningDashboard {
    /// Wait for the server and its tasks (after the stop token was cancelled); close the pool.
    pub async fn finished(self) {
        let _ = self.server.await;
        for task in self.tasks {
            let _ = task.await;
        }
        self.pool.close().await;
    }
}

/// Serve `state`'s dashboard on `addr` until `stop`, with its change listener and rollup
/// (for embedders and tests that build the state themselves: [`start`] does it from the
/// settings).
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    state: DashState,
    changes: tokio::sync::watch::Sender<u64>,
) -> anyhow::Result<RunningDashboard> {
    let stop = state.stop.clone();
    let pool = state.pool.clone();
    let tasks = vec![
        tokio::spawn(live::follow_changes(pool.clone(), changes, stop.clone())),
        tokio::spawn(live::rollup_loop(pool.clone(), stop.clone())),
    ];
    let (addr, server) =
        crate::server::serve("dashboard.listen", addr, router(state), stop).await?;
    Ok(RunningDashboard {
        addr,
        server,
        tasks,
        pool,
    })
}

/// Connect the dashboard's own pool and serve it on `dashboard.listen` until `stop`. `None`
/// when the dashboard is off.
///
/// # Errors
/// Start-up failures: database unreachable, port taken.
pub async fn start(
    settings: &Settings,
    stop: CancellationToken,
) -> anyhow::Result<Option<RunningDashboard>> {
    let Some(addr) = settings.dashboard.listen()? else {
        return Ok(None);
    };
    let mut database = settings.database.clone();
    database.max_connections = settings.dashboard.max_connections;
    database.application_name = format!("{}-dashboard", database.application_name);
    let pool = crate::db::connect(&database, database.startup_timeout).await?;
    let (tx, rx) = tokio::sync::watch::channel(0);
    let state = DashState::new(pool, Arc::new(settings.clone()), rx, stop);
    let running = serve(addr, state, tx).await?;
    info!(addr = %running.addr, "serving the operators' dashboard");
    Ok(Some(running))
}
