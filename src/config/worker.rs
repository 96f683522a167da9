//! `[worker]` (claiming, leases, shutdown) and `[retention]` (pruning old finished jobs).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid, rejected};

/// Claim loop, leases and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Jobs run at once by this process, all kinds together.
    pub concurrency: usize,
    /// Jobs claimed ahead of free slots and held (leased, status running) until a slot frees,
    /// whatever the jobs' run times: a fixed floor under the adaptive allowance below (0, the
    /// default: none).
    pub prefetch: usize,
    /// Adaptive prefetch: each kind claims ahead as many jobs as its slots are expected to
    /// finish within this time, at the run time observed for its jobs here (at most 4 per
    /// slot; none for kinds whose jobs take longer than this per slot; 0 turns it off).
    #[serde(with = "humantime_serde")]
    pub prefetch_wait: Duration,
    /// `fair`: round robin over users with due work; `fifo`: priority, then due time.
    pub fairness: Fairness,
    /// At most this many running jobs per user across all replicas (0: no cap; fair only).
    pub max_running_per_user: u32,
    /// Lease taken on each claimed job; renewed by heartbeats.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often leases are renewed (must be well under `lease`).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Polling fallback when no notification arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Use LISTEN/NOTIFY for wake-ups; false = poll only (for poolers that cannot LISTEN).
    pub listen: bool,
    /// How often this replica looks for expired leases.
    #[serde(with = "humantime_serde")]
    pub rescue_interval: Duration,
    /// On SIGTERM, how long running jobs may take to finish before they are cancelled and
    /// requeued.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Database outage: longest wait between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

/// The order claims take due jobs in (`worker.fairness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Fairness {
    /// Round robin over users with due work.
    Fair,
    /// Priority, then due time.
    Fifo,
}

impl TryFrom<String> for Fairness {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "fair" => Ok(Fairness::Fair),
            "fifo" => Ok(Fairness::Fifo),
            other => Err(rejected("worker.fairness", other, "expected fair or fifo")),
        }
    }
}

impl Default for WorkerSettings {
    /// The documented defaults (the embedded `[worker]` table).
    fn default() -> Self {
        super::defaults().worker
    }
}

impl Default for RetentionSettings {
    /// The documented defaults (the embedded `[retention]` table).
    fn default() -> Self {
        super::defaults().retention
    }
}

impl WorkerSettings {
    /// How long before its lease could expire unrenewed a running job is killed and given up:
    /// a quarter of the lease, at most one second. The check at start (lease ≥ 2 s, heartbeat
    /// interval ≤ lease / 2) leaves a renewal at least `lease − interval − margin ≥ lease / 4`
    /// (0.5 s or more) to complete before a healthy job would come near the margin.
    pub fn lease_margin(&self) -> Duration {
        (self.lease / 4).min(Duration::from_secs(1))
    }

    /// Whether claims are fair (round robin over users) rather than FIFO.
    pub fn fair(&self) -> bool {
        self.fairness == Fairness::Fair
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let w = self;
        if w.concurrency == 0 || w.concurrency > 10_000 {
            return Err(invalid(
                "worker.concurrency",
                w.concurrency,
                "must be between 1 and 10000",
            ));
        }
        if w.fairness == Fairness::Fifo && w.max_running_per_user > 0 {
            return Err(invalid(
                "worker.max_running_per_user",
                w.max_running_per_user,
                "per-user caps need worker.fairness = \"fair\"",
            ));
        }
        if w.prefetch > 10_000 {
            return Err(invalid(
                "worker.prefetch",
                w.prefetch,
                "must be at most 10000",
            ));
        }
        if w.prefetch_wait > Duration::from_secs(10) {
            return Err(invalid(
                "worker.prefetch_wait",
                humantime::format_duration(w.prefetch_wait),
                "must be at most 10s",
            ));
        }
        if w.lease < Duration::from_secs(2) {
            return Err(invalid(
                "worker.lease",
                humantime::format_duration(w.lease),
                "must be at least 2s",
            ));
        }
        if w.heartbeat_interval.is_zero() || w.heartbeat_interval * 2 > w.lease {
            return Err(invalid(
                "worker.heartbeat_interval",
                humantime::format_duration(w.heartbeat_interval),
                format!(
                    "must be positive and at most half of worker.lease ({})",
                    humantime::format_duration(w.lease)
                ),
            ));
        }
        for (key, value) in [
            ("worker.poll_interval", w.poll_interval),
            ("worker.rescue_interval", w.rescue_interval),
            ("worker.max_backoff", w.max_backoff),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "0s", "must be positive"));
            }
        }
        Ok(())
    }
}

/// Automatic deletion of finished jobs. Off by default: users' job history is product data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Prune in the daemon.
    pub enabled: bool,
    /// Delete succeeded, failed and cancelled jobs that finished longer ago than this.
    #[serde(with = "humantime_serde")]
    pub older_than: Duration,
    /// How often to prune.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Jobs deleted per statement (keeps each transaction short).
    pub batch_size: i64,
}

impl RetentionSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
        if !(1..=100_000).contains(&r.batch_size) {
            return Err(invalid(
                "retention.batch_size",
                r.batch_size,
                "must be between 1 and 100000",
            ));
        }
        if r.interval.is_zero() || r.older_than.is_zero() {
            return Err(invalid(
                "retention",
                "0s",
                "interval and older_than must be positive",
            ));
        }
        Ok(())
    }
}
