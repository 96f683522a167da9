//! Embedding studio-worker in an application: a Rust handler for a `thumbnail` kind, run by the
//! same daemon runtime (claims, leases, retries, shutdown, metrics) as the configured kinds.
//!
//! ```sh
//! DATABASE_URL=postgres://studio_worker_login:...@127.0.0.1:5432/postgres \
//!   cargo run --example embedded
//! ```

use serde::Deserialize;
use serde_json::{Value, json};
use studio_worker::config::Settings;
use studio_worker::handlers::{Handler, HandlerError, JobContext, KindRuntime, Registry};
use studio_worker::{app, telemetry};

/// The input users send: `{"url": "...", "width": 320}`.
#[derive(Deserialize)]
struct ThumbnailInput {
    url: String,
    width: u32,
}

struct Thumbnail;

#[async_trait::async_trait]
impl Handler for Thumbnail {
    async fn run(&self, job: JobContext) -> Result<Value, HandlerError> {
        // A wrong shape is a permanent failure: retrying the same input cannot help.
        let input: ThumbnailInput = job.input_as()?;
        if input.width == 0 || input.width > 4096 {
            return Err(HandlerError::permanent("width must be between 1 and 4096"));
        }
        job.progress(50, Some("resizing")).await;
        // Long work should watch job.cancel (user cancellation, timeout, shutdown).
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            () = job.cancel.cancelled() => return Err(HandlerError::retryable("stopped")),
        }
        Ok(json!({ "thumbnail": format!("{}?w={}", input.url, input.width) }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Configured `command` kinds run each program under this executable as its supervisor.
    studio_worker::handlers::supervise_if_requested();
    let settings = Settings::load(None)?;
    telemetry::init(&settings.log, std::io::stderr)?;
    // Configured kinds (command/http) plus our own.
    let mut registry = Registry::from_settings(&settings)?;
    registry.register("thumbnail", KindRuntime::new(Thumbnail, 4));
    app::run(settings, registry).await
}
