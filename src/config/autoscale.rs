//! `[autoscale]`: what the `/metrics` demand gauge asks the database (migration 0025), so that
//! teams scaling on Prometheus read the number KEDA's trigger would.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// The demand gauge's question: `studio_autoscale_demand(<this process's kinds>, per_replica,
/// horizon)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscaleSettings {
    /// Count work falling due within this much time (KEDA's polling interval plus a pod's start
    /// time is a good value). Default 30s.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// Jobs one worker replica runs at once. Default: `worker.concurrency`.
    pub per_replica: Option<u32>,
}

impl Default for AutoscaleSettings {
    fn default() -> Self {
        AutoscaleSettings {
            horizon: Duration::from_secs(30),
            per_replica: None,
        }
    }
}

impl AutoscaleSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.per_replica == Some(0) {
            return Err(invalid(
                "autoscale.per_replica",
                0,
                "must be at least 1 (unset: worker.concurrency)",
            ));
        }
        if self.horizon > Duration::from_secs(86_400) {
            return Err(invalid(
                "autoscale.horizon",
                humantime::format_duration(self.horizon),
                "must be at most 1d",
            ));
        }
        Ok(())
    }
}
