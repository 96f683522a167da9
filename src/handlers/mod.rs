//! Handlers: what running a job of a given kind means.
//!
//! A [`Handler`] turns a job's input into a result. The built-in ones are configured per kind
//! (`command`, `http`); applications that embed the worker as a library register their own.
//! [`Registry::from_settings`] is the one place that maps configured kinds to executors; each
//! kind's [`KindRuntime`] is its handler and its [`KindLimits`], and the worker only claims
//! kinds present in the registry.

mod command;
mod http;
mod supervisor;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{ExecutorSettings, Settings};
use crate::limits::KindLimits;
use crate::queue::{Lease, Queue};

pub use command::CommandHandler;
pub use http::HttpHandler;
pub use supervisor::supervise_if_requested;

/// Why an attempt did not produce a result; decides between retrying and failing for good.
/// The source chain is kept for the logs; the job's `error` column gets its display form.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Temporary (a dependency is down, a 5xx, a timeout): retry after backoff.
    #[error("{0:#}")]
    Retryable(#[source] anyhow::Error),
    /// Retrying cannot help (invalid input, a 4xx, a program that rejects the job).
    #[error("{0:#}")]
    Permanent(#[source] anyhow::Error),
}

impl HandlerError {
    /// A retryable error with a message.
    pub fn retryable(message: impl std::fmt::Display) -> Self {
        HandlerError::Retryable(anyhow::anyhow!("{message}"))
    }

    /// A permanent error with a message.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        HandlerError::Permanent(anyhow::anyhow!("{message}"))
    }
}

/// What a handler gets for one attempt.
#[derive(Clone)]
pub struct JobContext {
    /// Job id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Kind.
    pub kind: String,
    /// Input document (valid JSON; its shape is the handler's to check).
    pub input: Value,
    /// This attempt (1-based).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Cancelled when the job must stop: the user cancelled it, its timeout passed, the worker is
    /// shutting down, or its lease was lost. Long handlers should watch it.
    pub cancel: CancellationToken,
    progress: Option<ProgressSink>,
}

#[derive(Clone)]
struct ProgressSink {
    queue: Queue,
    lease: Lease,
}

impl JobContext {
    /// A context for running a handler outside the worker (tests, examples): progress reports
    /// are dropped.
    pub fn detached(kind: &str, input: Value) -> Self {
        JobContext {
            id: Uuid::nil(),
            user_id: Uuid::nil(),
            kind: kind.to_owned(),
            input,
            attempt: 1,
            max_attempts: 1,
            cancel: CancellationToken::new(),
            progress: None,
        }
    }

    pub(crate) fn new(
        job: &crate::queue::ClaimedJob,
        lease: Lease,
        queue: Queue,
        cancel: CancellationToken,
    ) -> Self {
        JobContext {
            id: job.id,
            user_id: job.user_id,
            kind: job.kind.clone(),
            input: job.input.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            cancel,
            progress: Some(ProgressSink { queue, lease }),
        }
    }

    /// The input as a typed value; a document of the wrong shape is a permanent error (retrying
    /// the same input cannot help).
    ///
    /// # Errors
    /// [`HandlerError::Permanent`] naming what does not match.
    pub fn input_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        T::deserialize(&self.input).map_err(|e| {
            HandlerError::Permanent(anyhow::anyhow!("invalid input for {}: {e}", self.kind))
        })
    }

    /// Record progress (0–100) and an optional message on the job, visible to its owner. One
    /// UPDATE per call: report at most a few times per second. Errors are logged, not returned:
    /// progress is informative and must not fail the job.
    pub async fn progress(&self, percent: u8, message: Option<&str>) {
        let Some(sink) = &self.progress else { return };
        match sink
            .queue
            .progress(&sink.lease, i16::from(percent.min(100)), message)
            .await
        {
            Ok(true) => self.cancel.cancel(),
            Ok(false) => {}
            Err(err) => tracing::warn!(error.message = %err, "could not record progress"),
        }
    }
}

/// Runs jobs of one kind. Implement it to embed the worker in an application.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Run one attempt. Return the result document, or an error saying whether to retry.
    /// Panics are caught and recorded as retryable failures.
    async fn run(&self, job: JobContext) -> Result<Value, HandlerError>;
}

/// What the worker needs to run one kind: its handler and its limits. (Not to be confused with
/// the `executor` setting, which picks a built-in handler, or with the worker's per-attempt
/// runner.)
#[derive(Clone)]
pub struct KindRuntime {
    /// Runs the jobs.
    pub handler: Arc<dyn Handler>,
    /// What the kind may do.
    pub limits: KindLimits,
}

impl KindRuntime {
    /// A kind running `handler`, at most `concurrency` jobs at once in this process, with the
    /// other limits at their defaults (the default timeout and backoff, no cluster-wide cap or
    /// rate, the database's default attempts).
    pub fn new(handler: impl Handler, concurrency: usize) -> Self {
        KindRuntime {
            handler: Arc::new(handler),
            limits: KindLimits {
                concurrency: Some(concurrency),
                ..KindLimits::default()
            },
        }
    }
}

/// The kinds this worker runs.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, KindRuntime>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Register (or replace) how `kind` runs.
    pub fn register(&mut self, kind: impl Into<String>, runtime: KindRuntime) -> &mut Self {
        self.kinds.insert(kind.into(), runtime);
        self
    }

    /// The kinds configured in `settings.kinds`, with their built-in handlers.
    ///
    /// # Errors
    /// A handler that cannot be built (e.g. an HTTP client with invalid headers).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let mut registry = Registry::new();
        for (kind, config) in &settings.kinds {
            let handler: Arc<dyn Handler> = match &config.executor {
                ExecutorSettings::Command(command) => {
                    Arc::new(CommandHandler::from_settings(kind, command)?)
                }
                ExecutorSettings::Http(http) => Arc::new(HttpHandler::from_settings(
                    kind,
                    http,
                    config.limits.timeout,
                )?),
            };
            registry.register(
                kind.clone(),
                KindRuntime {
                    handler,
                    limits: config.limits,
                },
            );
        }
        Ok(registry)
    }

    /// How `kind` runs, if this worker runs it.
    pub fn get(&self, kind: &str) -> Option<&KindRuntime> {
        self.kinds.get(kind)
    }

    /// The kinds registered, sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.kinds.keys().cloned().collect()
    }

    /// Each registered kind's limits, sorted by kind.
    pub fn limits(&self) -> impl Iterator<Item = (&str, &KindLimits)> {
        self.kinds
            .iter()
            .map(|(kind, k)| (kind.as_str(), &k.limits))
    }

    /// Whether no kind is registered.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}
