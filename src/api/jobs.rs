//! `/v1/jobs`: create, list, read and cancel the caller's jobs, each request in one
//! `UserTx` (role `authenticated` with the caller's claims), so RLS decides what exists.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::ApiState;
use super::auth::Identity;
use super::error::{ApiError, ApiResult, Problem};
use crate::queue::user::{Created, UserJob, UserJobFilter, UserNewJob, UserTx};
use crate::queue::{JobEvent, JobStatus};

/// Largest input document (the same bound as the database's `studio_jobs_input_size`).
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
/// Answered `true` on a create that returned the job an earlier request with the same
/// `Idempotency-Key` created (the 200), as Stripe's API does.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Longest idempotency key.
const MAX_KEY_LEN: usize = 255;
/// Default and largest page of `GET /v1/jobs`.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// Body of `POST /v1/jobs`: a JSON object with exactly these members (others are refused).
/// Read by [`CreateJob::from_json`], which says in the API's words which member is wrong.
// `Deserialize` with `deny_unknown_fields` only for the schema's `additionalProperties: false`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// Job kind, e.g. `render`: 1-64 of a-z 0-9 `_` `.` `-`, starting with a letter.
    #[schema(pattern = "^[a-z][a-z0-9_.-]{0,63}$", min_length = 1, max_length = 64)]
    pub kind: String,
    /// Input document: a JSON object of at most 1 MiB (serialized) whose keys and strings hold
    /// no `\u0000` (PostgreSQL's `jsonb` cannot store it).
    #[schema(value_type = Object)]
    pub input: Value,
    /// Lower runs later among your own jobs: -100..=0 (default 0; users may lower a job's
    /// priority, never raise it above others').
    #[schema(value_type = Option<i16>, minimum = -100, maximum = 0, default = 0)]
    pub priority: i16,
    /// Not before this time (RFC 3339). Default, or any time already past: now. At most
    /// `api.max_run_at_ahead` (default 30 days) from now.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_at: Option<DateTime<Utc>>,
}

impl CreateJob {
    /// The members of the body.
    const MEMBERS: &'static str = "kind, input, priority, run_at";

    /// Read and check a create's body; `max_ahead` bounds `run_at`.
    ///
    /// # Errors
    /// 422 naming the member that is wrong.
    pub fn from_json(body: Value, max_ahead: std::time::Duration) -> ApiResult<CreateJob> {
        let Value::Object(mut body) = body else {
            return Err(ApiError::unprocessable(format!(
                "the body must be a JSON object with {}",
                Self::MEMBERS
            )));
        };
        if let Some(unknown) = body
            .keys()
            .find(|k| !["kind", "input", "priority", "run_at"].contains(&k.as_str()))
        {
            return Err(ApiError::unprocessable(format!(
                "{}: not a member of a job (expected {})",
                printable(unknown),
                Self::MEMBERS
            )));
        }
        let kind = match body.remove("kind") {
            Some(Value::String(kind)) if crate::config::valid_kind_name(&kind) => kind,
            Some(Value::String(_)) => {
                return Err(ApiError::unprocessable(
                    "kind: 1-64 of a-z 0-9 _ . - starting with a letter",
                ));
            }
            None | Some(Value::Null) => return Err(ApiError::unprocessable("kind: required")),
            Some(_) => return Err(ApiError::unprocessable("kind: must be a string")),
        };
        let input = match body.remove("input") {
            Some(input @ Value::Object(_)) => input,
            None => return Err(ApiError::unprocessable("input: required (a JSON object)")),
            Some(_) => return Err(ApiError::unprocessable("input: must be a JSON object")),
        };
        if holds_nul(&input) {
            return Err(ApiError::unprocessable(
                "input: text may not contain \\u0000 (PostgreSQL cannot store it)",
            ));
        }
        if serde_json::to_vec(&input).map_or(0, |v| v.len()) > MAX_INPUT_BYTES {
            return Err(ApiError::unprocessable("input: larger than 1 MiB"));
        }
        let priority = match body.remove("priority") {
            None | Some(Value::Null) => 0,
            // JSON has one number type: -4.0 is the integer -4
            Some(p) => p
                .as_i64()
                .or_else(|| {
                    p.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() <= 100.0)
                        .map(|f| f as i64)
                })
                .filter(|p| (-100..=0).contains(p))
                .and_then(|p| i16::try_from(p).ok())
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "priority: an integer from -100 to 0 (a job can be put behind your others, not ahead of anyone's)",
                    )
                })?,
        };
        let run_at = match body.remove("run_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(at)) => Some(
                DateTime::parse_from_rfc3339(&at)
                    .map_err(|_| {
                        ApiError::unprocessable(
                            "run_at: an RFC 3339 time, e.g. 2026-12-06T09:30:00Z",
                        )
                    })?
                    .with_timezone(&Utc),
            ),
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "run_at: an RFC 3339 time, e.g. 2026-12-06T09:30:00Z",
                ));
            }
        };
        let ahead = chrono::Duration::from_std(max_ahead).unwrap_or(chrono::Duration::MAX);
        if run_at.is_some_and(|at| {
            Utc::now()
                .checked_add_signed(ahead)
                .is_some_and(|latest| at > latest)
        }) {
            return Err(ApiError::unprocessable(format!(
                "run_at: at most {} from now",
                humantime::format_duration(max_ahead)
            )));
        }
        Ok(CreateJob {
            kind,
            input,
            priority,
            run_at,
        })
    }
}

/// Whether a key or string anywhere in `value` holds U+0000.
pub fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// A caller's text for an error message: at most 64 characters, control characters escaped.
fn printable(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// A job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// Job id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Kind.
    pub kind: String,
    /// `pending`, `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = String)]
    pub status: JobStatus,
    /// Input document.
    pub input: Value,
    /// Progress of the current attempt, 0..=100.
    pub progress: i16,
    /// Latest progress message.
    pub progress_message: Option<String>,
    /// Result of a succeeded job.
    pub result: Option<Value>,
    /// Why the last attempt did not succeed.
    pub error: Option<String>,
    /// Attempts used.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Priority.
    pub priority: i16,
    /// Not claimed before this time.
    pub run_at: DateTime<Utc>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Start of the latest attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// When cancellation was requested.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The idempotency key it was created with.
    pub idempotency_key: Option<String>,
    /// The service that created it on your behalf, if one did.
    pub created_by_service: Option<String>,
}

impl From<UserJob> for JobView {
    fn from(j: UserJob) -> Self {
        JobView {
            id: j.id,
            user_id: j.user_id,
            kind: j.kind,
            status: j.status,
            input: j.input,
            progress: j.progress,
            progress_message: j.progress_message,
            result: j.result,
            error: j.error,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            priority: j.priority,
            run_at: j.run_at,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            cancel_requested_at: j.cancel_requested_at,
            idempotency_key: j.idempotency_key,
            created_by_service: j.created_by_service,
        }
    }
}

/// One status change in a job's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// Event id (increasing; the `id:` of the stream's `status` events).
    pub id: i64,
    /// Status before.
    #[schema(value_type = String)]
    pub from: JobStatus,
    /// Status after.
    #[schema(value_type = String)]
    pub to: JobStatus,
    /// Attempt after the change.
    pub attempt: i32,
    /// Error or reason.
    pub message: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

impl From<JobEvent> for EventView {
    fn from(e: JobEvent) -> Self {
        EventView {
            id: e.id,
            from: e.from_status,
            to: e.to_status,
            attempt: e.attempt,
            message: e.message,
            at: e.created_at,
        }
    }
}

/// A job with its history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobWithHistory {
    /// The job.
    #[serde(flatten)]
    pub job: JobView,
    /// Its status changes, oldest first.
    pub events: Vec<EventView>,
}

/// A page of jobs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this status (empty: any).
    #[param(pattern = "^(|pending|running|succeeded|failed|cancelled)$")]
    pub status: Option<String>,
    /// Only this kind (empty: any).
    #[param(pattern = "^([a-z][a-z0-9_.-]{0,63})?$")]
    pub kind: Option<String>,
    /// Page size, 1..=200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (empty: the first page); opaque, other values are
    /// a 400.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// A job id from the path; anything that is not a UUID names no job.
pub fn job_id(raw: &str) -> ApiResult<Uuid> {
    raw.parse().map_err(|_| ApiError::not_found())
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=MAX_KEY_LEN).contains(&k.len()))
        .ok_or_else(|| ApiError::bad_request("Idempotency-Key: 1-255 visible ASCII characters"))?;
    Ok(Some(key.to_owned()))
}

/// Create a job.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body = CreateJob,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same user and key: the first job is returned and nothing is created", max_length = 255, min_length = 1, pattern = "^[!-~]([ -~]*[!-~])?$")),
    responses(
        (status = 201, description = "Created", body = JobView, headers(("Location" = String), ("Idempotent-Replayed" = String, description = "`false`"))),
        (status = 200, description = "Replay of an earlier request with the same Idempotency-Key", body = JobView, headers(("Location" = String), ("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem),
        (status = 429, description = "An admission quota refused the job; `Retry-After` (seconds) when waiting frees a slot",
         body = Problem, headers(("Retry-After" = Option<u64>))),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    identity: Identity,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body?;
    let body = CreateJob::from_json(body, state.settings.max_run_at_ahead)?;
    let key = idempotency_key(&headers)?;
    if !identity.may_use_kind(&body.kind) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this service token may not create jobs of this kind",
        ));
    }
    let new = UserNewJob {
        kind: body.kind,
        input: body.input,
        priority: body.priority,
        run_at: body.run_at.filter(|at| *at > Utc::now()),
        idempotency_key: key,
    };
    let mut tx = UserTx::begin(&state.pool, &identity.claims, identity.service_name()).await?;
    let created = tx.create(&new).await?;
    tx.commit().await?;
    let (status, job, replayed) = match created {
        Created::New(job) => (StatusCode::CREATED, job, "false"),
        Created::Existing(job) => {
            let same = job.kind == new.kind
                && job.input == new.input
                && job.priority == new.priority
                && new.run_at.is_none_or(|at| at == job.run_at);
            if !same {
                return Err(ApiError::unprocessable(
                    "Idempotency-Key was already used with a different request",
                ));
            }
            (StatusCode::OK, job, "true")
        }
    };
    let location = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id))
        .map_err(|e| ApiError::internal(&e))?;
    Ok((
        status,
        [
            (header::LOCATION, location),
            (
                HeaderName::from_static(IDEMPOTENT_REPLAYED),
                HeaderValue::from_static(replayed),
            ),
        ],
        Json(JobView::from(job)),
    )
        .into_response())
}

/// List your jobs, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPage), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    identity: Identity,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<JobPage>> {
    let Query(mut query) = query?;
    // An empty value is no filter (what a form sends for "any").
    for value in [&mut query.status, &mut query.kind, &mut query.cursor] {
        if value.as_deref().is_some_and(str::is_empty) {
            *value = None;
        }
    }
    let status = query
        .status
        .map(|s| s.parse::<JobStatus>())
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("status: {e}")))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("limit: 1-200"));
    }
    let before = query
        .cursor
        .map(|c| decode_cursor(&c).ok_or_else(|| ApiError::bad_request("cursor: not one of ours")))
        .transpose()?;
    if let Some(kind) = query.kind.as_deref()
        && !crate::config::valid_kind_name(kind)
    {
        return Err(ApiError::bad_request(
            "kind: 1-64 of a-z 0-9 _ . - starting with a letter",
        ));
    }
    let filter = UserJobFilter {
        status,
        kind: query.kind,
        kinds: identity.kinds(),
        before,
        limit: limit + 1,
    };
    let mut tx = UserTx::begin(&state.pool, &identity.claims, None).await?;
    let mut jobs = tx.list(&filter).await?;
    tx.commit().await?;
    let more = jobs.len() as i64 > limit;
    jobs.truncate(limit as usize);
    let next_cursor = more
        .then(|| jobs.last().map(|j| encode_cursor(j.created_at, j.id)))
        .flatten();
    Ok(Json(JobPage {
        jobs: jobs.into_iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (micros, id) = text.split_once(':')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

/// One of your jobs with its history.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobWithHistory), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<ApiState>,
    identity: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<JobWithHistory>> {
    let id = job_id(&id)?;
    let mut tx = UserTx::begin(&state.pool, &identity.claims, None).await?;
    let job = tx.job(id).await?;
    if !identity.may_use_kind(&job.kind) {
        return Err(ApiError::not_found());
    }
    let events = tx.events(id, 0).await?;
    tx.commit().await?;
    Ok(Json(JobWithHistory {
        job: job.into(),
        events: events.into_iter().map(EventView::from).collect(),
    }))
}

/// Cancel one of your jobs: a pending job at once, a running one when its worker stops it.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, body = JobView), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, description = "Already finished", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<ApiState>,
    identity: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let id = job_id(&id)?;
    let mut tx = UserTx::begin(&state.pool, &identity.claims, None).await?;
    if identity.service.is_some() && !identity.may_use_kind(&tx.job(id).await?.kind) {
        return Err(ApiError::not_found());
    }
    let job = tx.cancel(id).await?;
    tx.commit().await?;
    Ok(Json(job.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let at = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("nope"), None);
    }
}
