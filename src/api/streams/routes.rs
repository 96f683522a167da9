//! The stream routes: `GET /v1/jobs/{id}/events` (SSE) and `POST /v1/jobs/{id}/stream-url` (a
//! short-lived signed URL for browsers' `EventSource`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{KeepAlive, Sse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::sse::{self, StreamRefused, StreamSetup};
use crate::api::ApiState;
use crate::api::auth::{Identity, Peer, Refusal};
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::jobs::job_id;
use crate::queue::user::UserTx;

/// Query of the events route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// A stream token from `POST /v1/jobs/{id}/stream-url` (instead of `Authorization`).
    pub token: Option<String>,
}

/// A signed stream URL.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamUrl {
    /// Path and query to open with `EventSource` (relative to the API's origin).
    pub url: String,
    /// The URL cannot be opened after this time (an open stream goes on until the access
    /// token that asked for the URL expires).
    pub expires_at: DateTime<Utc>,
}

/// Follow a job: its history, then live status and progress changes until it finishes, or
/// until the access token that opened the stream expires (then an `expired` event ends it:
/// reconnect with a fresh token).
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", tag = "streams",
    params(
        ("id" = String, Path, description = "Job id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this status event"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `status` events (with ids) and `progress` events", content_type = "text/event-stream"),
        (status = 401, body = Problem), (status = 404, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("stream_token" = []))
)]
pub async fn follow(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Peer(peer): Peer,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(query) = query?;
    let job = job_id(&id)?;
    let identity = match &query.token {
        Some(token) => state
            .signer
            .verify(token, job, Utc::now())
            .map(|(user, session)| Identity::for_stream(user, state.verifier.audience(), session))
            .ok_or_else(|| ApiError::unauthorized(Refusal::StreamToken))?,
        None => state.authenticate(&headers, peer).await?,
    };
    let slot = state.limits.streams.take(identity.user).ok_or_else(|| {
        ApiError::rate_limited(
            "streams",
            std::time::Duration::from_secs(5),
            "too many open streams for this user; close one or retry later",
        )
    })?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|id| *id >= 0)
        .unwrap_or(0);
    let setup = StreamSetup {
        pool: state.pool.clone(),
        identity,
        job,
        last_event_id,
        stop: state.stop.clone(),
        slot,
    };
    let events = sse::open(state.hub.clone(), state.settings.max_streams, setup)
        .await
        .map_err(|refused| match refused {
            StreamRefused::NotFound => ApiError::not_found(),
            StreamRefused::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many open streams; retry later",
            ),
            StreamRefused::Failed(err) => err.into(),
        })?;
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.settings.keep_alive)))
}

/// A URL that lets a browser follow one of your jobs for a short time without a header.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/stream-url", tag = "streams",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = StreamUrl), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn stream_url(
    State(state): State<ApiState>,
    identity: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<StreamUrl>> {
    let job = job_id(&id)?;
    let mut tx = UserTx::begin(&state.pool, &identity.claims, None).await?;
    // 404 unless it is the caller's, and of a kind the caller may use
    let found = tx.job(job).await?;
    tx.commit().await?;
    if !identity.may_use_kind(&found.kind) {
        return Err(ApiError::not_found());
    }
    let ttl = chrono::Duration::from_std(state.settings.stream_url_ttl)
        .unwrap_or(chrono::Duration::seconds(60));
    let expires_at = Utc::now() + ttl;
    // The stream it opens ends when the credentials that asked for it expire.
    let token = state
        .signer
        .sign(job, identity.user, expires_at, identity.expires_at);
    Ok(Json(StreamUrl {
        url: format!("/v1/jobs/{job}/events?token={token}"),
        expires_at,
    }))
}
