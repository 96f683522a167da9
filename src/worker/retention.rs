//! Optional pruning of old finished jobs (and old schedule fire rows), in bounded batches with a pause between them so that
//! a large backlog of history never becomes one long transaction.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Shared;
use crate::config::RetentionSettings;

/// Between two batches of one pruning round.
const PAUSE: Duration = Duration::from_millis(100);

pub(crate) async fn run(shared: Arc<Shared>, settings: RetentionSettings, stop: CancellationToken) {
    loop {
        let wait = settings.interval.mul_f64(0.9 + 0.2 * rand::random::<f64>());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        let mut total = 0u64;
        loop {
            match shared
                .queue
                .admin()
                .prune_batch(settings.older_than, settings.batch_size)
                .await
            {
                Ok(deleted) => {
                    total += deleted;
                    metrics::counter!("studio_jobs_pruned_total").increment(deleted);
                    if deleted < settings.batch_size.unsigned_abs() {
                        break;
                    }
                }
                Err(err) => {
                    warn!(error.message = %err, "pruning stopped early");
                    break;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(PAUSE) => {}
                () = stop.cancelled() => return,
            }
        }
        if total > 0 {
            info!(deleted = total, older_than = %humantime::format_duration(settings.older_than), "pruned finished jobs");
        }
        prune_fires(&shared, &settings).await;
    }
}

/// Old schedule fire rows, in batches too; each schedule's latest is kept.
async fn prune_fires(shared: &Shared, settings: &RetentionSettings) {
    let mut total = 0u64;
    loop {
        match crate::control::Control::new(shared.queue.pool().clone())
            .schedules()
            .prune_fires(settings.older_than, settings.batch_size)
            .await
        {
            Ok(deleted) => {
                total += deleted;
                if deleted < settings.batch_size.unsigned_abs() {
                    break;
                }
            }
            Err(err) => {
                warn!(error.message = %err, "pruning schedule fires stopped early");
                break;
            }
        }
    }
    if total > 0 {
        info!(deleted = total, "pruned old schedule fires");
    }
}
