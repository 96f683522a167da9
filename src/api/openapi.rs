//! The OpenAPI 3.1 document of the job API, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{error, events, jobs, stream};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "studio-worker job API",
        description = "Create, read, cancel and follow your jobs. Users send their Supabase access token; trusted backends send a service token and `X-On-Behalf-Of: <user id>`. Errors are `application/problem+json` (RFC 9457)."
    ),
    paths(jobs::create, jobs::list, jobs::show, jobs::cancel, events::follow, events::stream_url),
    components(schemas(
        jobs::CreateJob, jobs::JobView, jobs::JobWithHistory, jobs::JobPage, jobs::EventView,
        events::StreamUrl, stream::StatusEvent, stream::ProgressEvent, error::Problem
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or service token")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "stream_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))),
        );
    }
}

/// `GET /v1/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
