//! The OpenAPI 3.1 document of the job API, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::streams::{routes, sse};
use super::{error, jobs};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "studio-worker job API",
        description = "Create, read, cancel and follow your jobs. Users send their Supabase access token; trusted backends send a service token and `X-On-Behalf-Of: <user id>`. Errors are `application/problem+json` (RFC 9457)."
    ),
    paths(jobs::create, jobs::list, jobs::show, jobs::cancel, routes::follow, routes::stream_url),
    components(schemas(
        jobs::CreateJob, jobs::JobView, jobs::JobWithHistory, jobs::JobPage, jobs::EventView,
        routes::StreamUrl, sse::StatusEvent, sse::ProgressEvent, sse::Expired, error::Problem
    )),
    modifiers(&Security, &Problems)
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

/// Answers every operation can give, whatever its handler: bad headers or query (400), no valid
/// credentials (401), a body over `api.body_limit` (413), a per-caller limit (429), the database
/// unavailable (503). Every response gets a description (OpenAPI requires one) and every error
/// body is `application/problem+json`.
struct Problems;

/// The common answers: status, component name, description.
const COMMON: [(&str, &str, &str); 5] = [
    (
        "400",
        "BadRequest",
        "A header, the query or the body is malformed (the detail says which)",
    ),
    (
        "401",
        "Unauthorized",
        "Missing or refused credentials; `WWW-Authenticate` says why (RFC 6750)",
    ),
    (
        "413",
        "PayloadTooLarge",
        "The body is larger than the API accepts",
    ),
    (
        "429",
        "TooManyRequests",
        "A limit of the caller refused the request; `Retry-After` says when to retry",
    ),
    (
        "503",
        "Unavailable",
        "Temporarily unavailable (database, or too many open streams); retry later",
    ),
];

impl Modify for Problems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{
            ContentBuilder, Ref, RefOr, ResponseBuilder, Type, schema::ObjectBuilder,
        };
        let string = || ObjectBuilder::new().schema_type(Type::String).build();
        let integer = || ObjectBuilder::new().schema_type(Type::Integer).build();
        let components = openapi.components.get_or_insert_with(Default::default);
        for (status, name, description) in COMMON {
            let mut response = ResponseBuilder::new().description(description).content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            );
            if status == "401" {
                response = response.header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(Some(string()))
                        .description(Some(
                            "`Bearer error=\"invalid_token\", error_description=\"…\"`",
                        ))
                        .build(),
                );
            }
            if status == "429" {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(integer()))
                        .description(Some("Seconds to wait"))
                        .build(),
                );
            }
            components
                .responses
                .insert(name.to_owned(), response.build().into());
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for (status, name, _) in COMMON {
                    responses.entry(status.to_owned()).or_insert_with(|| {
                        RefOr::Ref(Ref::new(format!("#/components/responses/{name}")))
                    });
                }
                for (status, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if response.description.is_empty() {
                        response.description = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("Response")
                            .to_owned();
                    }
                    if status.starts_with(['4', '5'])
                        && let Some(content) = response.content.shift_remove("application/json")
                    {
                        response.content.insert(PROBLEM_JSON.to_owned(), content);
                    }
                }
            }
        }
    }
}

const PROBLEM_JSON: &str = "application/problem+json";

/// `GET /v1/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
