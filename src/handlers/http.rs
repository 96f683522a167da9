//! The `http` executor: POST the job's input to a URL.
//!
//! 2xx succeeds with the JSON body as the result (an empty body gives `null`, a non-JSON body
//! `{"body": "<text>"}`); 408, 429 and 5xx, timeouts and connection errors are retryable; any
//! other 4xx fails the job for good. Requests carry `Idempotency-Key: <job id>` and
//! `X-Studio-Job-*` headers, so the service can recognise a retried job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{Handler, HandlerError, JobContext};
use crate::config::HttpExecutor;

/// Longest error body quoted in the job's error.
const BODY_IN_ERROR: usize = 500;
/// Largest response body accepted (the result column's limit).
const BODY_LIMIT: usize = 1024 * 1024;

/// POSTs each job's input to one URL.
#[derive(Debug, Clone)]
pub struct HttpHandler {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Headers whose values are read from files at each request (rotated secrets).
    header_files: Vec<(HeaderName, PathBuf)>,
}

impl HttpHandler {
    /// From a kind's settings. Header values are marked sensitive (hidden from `Debug`).
    ///
    /// # Errors
    /// An invalid URL, header name or header value (named, value not shown).
    pub fn from_settings(
        kind: &str,
        settings: &HttpExecutor,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let url = settings.url.as_str();
        let url = reqwest::Url::parse(url).with_context(|| format!("kinds.{kind}.url = {url}"))?;
        check_resolves(kind, &url)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("kinds.{kind}.headers: invalid header name {name:?}"))?;
            let mut value = HeaderValue::from_str(value.expose_secret()).map_err(|_| {
                anyhow!("kinds.{kind}.headers.{name}: invalid header value ([REDACTED])")
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let mut handler = HttpHandler::new(url, headers, timeout)?;
        for (name, path) in &settings.header_files {
            let header = HeaderName::from_bytes(name.as_bytes()).with_context(|| {
                format!("kinds.{kind}.header_files: invalid header name {name:?}")
            })?;
            // Checked now too, so a wrong file fails start-up rather than the first job.
            header_from_file(path).map_err(|e| anyhow!("kinds.{kind}.header_files.{name}: {e}"))?;
            handler.header_files.push((header, path.clone()));
        }
        Ok(handler)
    }

    /// A handler posting to `url` with `headers`, giving up on a request after `timeout`.
    ///
    /// # Errors
    /// If the HTTP client cannot be built (TLS set-up).
    pub fn new(url: reqwest::Url, headers: HeaderMap, timeout: Duration) -> anyhow::Result<Self> {
        // reqwest is built without a bundled crypto provider; use ring, like sqlx. Installing
        // twice is harmless (the first one stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .user_agent(concat!("studio-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(HttpHandler {
            client,
            url,
            header_files: Vec::new(),
        })
    }
}

/// Whether the URL's host resolves now, so that a typo stops start-up instead of failing users'
/// jobs. Names the key and the host, never the path or query (they may carry a token).
fn check_resolves(kind: &str, url: &reqwest::Url) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    match (host, port).to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(_)) => Ok(()),
        // A configuration problem (exit code 2), named by its key.
        Ok(None) => Err(crate::config::ConfigError::Invalid {
            key: format!("kinds.{kind}.url"),
            value: format!("(host {host})"),
            reason: "the host has no address".to_owned(),
        }
        .into()),
        Err(err) => Err(crate::config::ConfigError::Invalid {
            key: format!("kinds.{kind}.url"),
            value: format!("(host {host})"),
            reason: format!("the host cannot be resolved ({err})"),
        }
        .into()),
    }
}

/// A header value from a file (its last line break removed), marked sensitive. Errors never
/// show the value.
fn header_from_file(path: &Path) -> anyhow::Result<HeaderValue> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut value = HeaderValue::from_str(text)
        .map_err(|_| anyhow!("{}: invalid header value ([REDACTED])", path.display()))?;
    value.set_sensitive(true);
    Ok(value)
}

#[async_trait::async_trait]
impl Handler for HttpHandler {
    async fn run(&self, job: JobContext) -> Result<Value, HandlerError> {
        let mut request = self.client.post(self.url.clone());
        for (name, path) in &self.header_files {
            // A file being replaced may be briefly unreadable: retry the job later.
            let value = header_from_file(path).map_err(HandlerError::Retryable)?;
            request = request.header(name.clone(), value);
        }
        let request = request
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", job.id.to_string())
            .header("X-Studio-Job-Id", job.id.to_string())
            .header("X-Studio-Job-Kind", &job.kind)
            .header("X-Studio-Job-User-Id", job.user_id.to_string())
            .header("X-Studio-Job-Attempt", job.attempt.to_string())
            .json(&job.input)
            .send();
        let response = tokio::select! {
            response = request => response.map_err(|e| HandlerError::Retryable(without_url(e)))?,
            () = job.cancel.cancelled() => return Err(HandlerError::retryable("stopped: the job was cancelled or timed out")),
        };
        let status = response.status();
        let body = read_capped(response).await?;

        if status.is_success() {
            return Ok(match body.trim() {
                "" => Value::Null,
                text => serde_json::from_str(text).unwrap_or_else(|_| json!({ "body": text })),
            });
        }
        // Users read the status; operators read the start of the body too.
        let quoted: String = body.chars().take(BODY_IN_ERROR).collect();
        let message = format!("the service answered HTTP {status}");
        let err = match quoted.trim() {
            "" => anyhow!("{message}"),
            quoted => anyhow!("{quoted}").context(message),
        };
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(HandlerError::Retryable(err))
        } else {
            Err(HandlerError::Permanent(err))
        }
    }
}

/// The response body as text, refusing more than the result column can hold.
async fn read_capped(mut response: reqwest::Response) -> Result<String, HandlerError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HandlerError::Retryable(without_url(e)))?
    {
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(HandlerError::permanent(format!(
                "HTTP {}: response body exceeds {BODY_LIMIT} bytes",
                response.status()
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// reqwest errors include the URL, which may carry a token in its query: drop it.
fn without_url(err: reqwest::Error) -> anyhow::Error {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // Users read the kind of failure; operators read the cause (hosts, addresses) too.
    anyhow::Error::new(err.without_url()).context(format!("HTTP {kind}"))
}
