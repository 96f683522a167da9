//! Following a job live: `GET /v1/jobs/{id}/events` as Server-Sent Events.
//!
//! One LISTEN connection per process ([`Hub::run`]) receives the changes that the job triggers
//! announce for the jobs this process watches (0027: the hub writes a watch row for each
//! followed job before its first stream's first read) and hands them to the job's watchers in
//! memory. A watcher costs the database one read when it starts (its job and the history it has
//! not seen), one read of the history for a status change that has a message (failures,
//! cancellations, requeues: the notification carries everything else), and a re-read when the
//! listener reconnected or the watcher fell behind; progress changes cost nothing.
//!
//! Events: `status` (one per history row, `id:` = the history row's id, so `Last-Event-ID`
//! resumes from the history) and `progress` (the job's current status and progress; no id). The
//! stream starts with the history after `Last-Event-ID`, then one `progress` event with the
//! current state, then live changes (a `progress` event never repeats the one before it), and ends
//! after the job's terminal status or when the server shuts down.
//!
//! Browsers' `EventSource` cannot send an `Authorization` header: `POST /v1/jobs/{id}/stream-url`
//! returns a URL with a token signed by the API, valid for one job, one user and a short time.
//!
//! - [`routes`]: the two HTTP routes;
//! - [`hub`]: the process's one listener, the fan-out to watchers and the watch rows;
//! - [`sse`]: one stream (reads, live events, the end);
//! - [`signer`]: signed stream URLs.

pub mod hub;
pub mod routes;
pub mod signer;
pub mod sse;

pub use hub::Hub;
pub use signer::StreamSigner;
