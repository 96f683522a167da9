//! Errors of the job API as `application/problem+json` (RFC 9457).
//!
//! Callers see a status, a title and a detail meant for them; internals (SQL, constraint names
//! of other tables, connection errors) are logged and answered with a generic 500 or 503.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::{error, info};

use super::auth::Refusal;

use crate::control::quota::QuotaExceeded;
use crate::queue;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    /// `WWW-Authenticate` value for 401s.
    challenge: Option<String>,
    /// `Retry-After` seconds, when waiting helps (a quota's period).
    retry_after: Option<u64>,
    /// The refusal's labels (`quota` row, `limit`), counted when the response is produced.
    quota_refusal: Option<(String, &'static str)>,
}

/// Result of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// The problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for the caller.
    pub detail: String,
}

impl ApiError {
    /// An error with `status` and a detail for the caller.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            challenge: None,
            retry_after: None,
            quota_refusal: None,
        }
    }

    /// 401 saying which check failed (RFC 6750: `error="invalid_token"` with an
    /// `error_description`; no error code when no credentials were sent). Logged at info (in the
    /// request's span, so with its id) and counted in `studio_api_auth_refusals_total{reason}`.
    pub fn unauthorized(refusal: Refusal) -> Self {
        let description = refusal.description();
        if refusal == Refusal::KeysUnavailable {
            // Not the caller's fault (logged and counted by the key cache).
            return ApiError {
                retry_after: Some(30),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, description)
            };
        }
        info!(
            reason = refusal.label(),
            "credentials refused: {description}"
        );
        metrics::counter!("studio_api_auth_refusals_total", "reason" => refusal.label())
            .increment(1);
        let challenge = match refusal {
            Refusal::Missing => "Bearer".to_owned(),
            _ => format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
        };
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            detail: description.to_owned(),
            challenge: Some(challenge),
            retry_after: None,
            quota_refusal: None,
        }
    }

    /// 404 (also for someone else's job: its existence is not revealed).
    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "no such job")
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 422.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    /// 500 with a generic detail; the cause goes to the log only.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        error!(error.message = %cause, "job API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the request was not completed",
        )
    }

    /// 429 for an insert a quota refused, naming the quota; `Retry-After` when a wait frees a
    /// slot. Counted in `studio_api_quota_refusals_total{quota, limit}` (`quota`: the quota
    /// row, a kind or `*`, so the label stays bounded whatever kinds users send) when the
    /// response is produced, so an error built and dropped counts nothing.
    pub fn quota_exceeded(refused: &QuotaExceeded) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            detail: refused.to_string(),
            challenge: None,
            // At least a second: `Retry-After: 0` would invite a busy loop.
            retry_after: refused.retry_after.map(|wait| wait.as_secs().max(1)),
            quota_refusal: Some((refused.quota_row().to_owned(), refused.quota.as_str())),
        }
    }

    /// 429 for a per-caller limit (`limit`: `requests`, `streams`, `auth_failures`), with
    /// `Retry-After` (whole seconds, at least 1); counted in
    /// `studio_api_rate_limited_total{limit}`.
    pub fn rate_limited(limit: &'static str, wait: std::time::Duration, detail: &str) -> Self {
        metrics::counter!("studio_api_rate_limited_total", "limit" => limit).increment(1);
        info!(limit, "refused by a per-caller limit");
        ApiError {
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, detail)
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<queue::Error> for ApiError {
    fn from(err: queue::Error) -> Self {
        match &err {
            queue::Error::NotFound(_) => ApiError::not_found(),
            queue::Error::WrongStatus { status, .. } => ApiError::new(
                StatusCode::CONFLICT,
                format!("the job has already finished ({status})"),
            ),
            queue::Error::UnknownUser(_) => ApiError::unprocessable("unknown user"),
            queue::Error::UnknownKind(unknown) => {
                ApiError::unprocessable(format!("kind: unknown job kind {:?}", unknown.kind))
            }
            queue::Error::QuotaExceeded(refused) => ApiError::quota_exceeded(refused),
            queue::Error::InvalidJob { constraint, .. } => {
                ApiError::unprocessable(invalid_job_detail(constraint))
            }
            queue::Error::Db(db) if crate::db::is_transient(db) => {
                error!(error.message = %err, "job API: database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily unavailable; retry later",
                )
            }
            _ => ApiError::internal(&err),
        }
    }
}

/// What the caller did wrong, from the CHECK constraint the database named.
fn invalid_job_detail(constraint: &str) -> &'static str {
    match constraint {
        "studio_jobs_kind_format" => "kind: 1-64 of a-z 0-9 _ . - starting with a letter",
        "studio_jobs_input_size" => "input: larger than 1 MiB",
        "studio_jobs_priority_range" => "priority: must be between -100 and 100",
        "studio_jobs_idempotency_key_format" => "Idempotency-Key: 1-255 characters",
        "studio_jobs_owner_insert_limits" => "priority must be -100..0 and run_at not in the past",
        _ => "the job was refused by the database's rules",
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let detail = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "expected Content-Type: application/json".to_owned()
            }
            JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON".to_owned(),
            JsonRejection::JsonDataError(_) => "the body does not fit the request".to_owned(),
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "the body is too large".to_owned(),
            _ => "the body could not be read".to_owned(),
        };
        ApiError::new(status, detail)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(format!("bad query: {}", rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some((quota, limit)) = self.quota_refusal {
            metrics::counter!(
                "studio_api_quota_refusals_total",
                "quota" => quota,
                "limit" => limit
            )
            .increment(1);
        }
        let problem = Problem {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::try_from(c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal counter, as `/metrics` would render it, after `f` ran with its own recorder.
    fn refusals_after(f: impl FnOnce()) -> String {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, f);
        handle
            .render()
            .lines()
            .filter(|l| l.starts_with("studio_api_quota_refusals_total{"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_per_caller_limit_answers_429_with_retry_after_and_counts() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let response = metrics::with_local_recorder(&recorder, || {
            ApiError::rate_limited("streams", std::time::Duration::from_millis(1200), "x")
                .into_response()
        });
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let rendered = handle.render();
        assert!(
            rendered.contains(r#"studio_api_rate_limited_total{limit="streams"} 1"#),
            "{rendered}"
        );
    }

    #[test]
    fn a_quota_refusal_counts_when_answered_not_when_built() {
        let refused =
            QuotaExceeded::parse_detail("quota=max_unfinished kind=render scope=kind limit=5")
                .expect("a valid DETAIL");
        assert_eq!(
            refusals_after(|| drop(ApiError::quota_exceeded(&refused))),
            ""
        );
        let answered = refusals_after(|| {
            let response = ApiError::quota_exceeded(&refused).into_response();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        });
        assert!(answered.contains(r#"quota="render""#), "{answered}");
        assert!(answered.contains(r#"limit="max_unfinished""#), "{answered}");
        assert!(answered.ends_with(" 1"), "{answered}");
    }
}
