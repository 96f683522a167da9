//! Why the claim loop should look for work: "something may be claimable" (a bulk insert, a job
//! due again, the database back), or "these new jobs" (a single insert names its job, so an
//! idle worker can take it by key instead of searching the queue).

use std::sync::Mutex;

use tokio::sync::Notify;
use uuid::Uuid;

/// More named jobs than this between two claims: search the queue instead.
const MAX_NAMED: usize = 64;

/// Reasons gathered since the claim loop last looked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reasons {
    /// Search the queue (claim in the configured order).
    pub scan: bool,
    /// New jobs announced by id.
    pub named: Vec<Uuid>,
}

/// Wake-ups for the claim loop, with their reasons.
#[derive(Default)]
pub(crate) struct Wakeup {
    notify: Notify,
    reasons: Mutex<Reasons>,
}

impl Wakeup {
    /// Something may be claimable anywhere in the queue.
    pub fn scan(&self) {
        self.update(|r| r.scan = true);
    }

    /// New job `id` is claimable.
    pub fn named(&self, id: Uuid) {
        self.update(|r| {
            if r.named.len() < MAX_NAMED {
                r.named.push(id);
            } else {
                r.scan = true;
            }
        });
    }

    /// Take the reasons gathered so far.
    pub fn take(&self) -> Reasons {
        self.reasons
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            // A poisoned lock means a panic while pushing an id: search to be safe.
            .unwrap_or(Reasons {
                scan: true,
                named: Vec::new(),
            })
    }

    /// Wait for the next wake-up (one that came while nobody waited counts).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    fn update(&self, change: impl FnOnce(&mut Reasons)) {
        if let Ok(mut reasons) = self.reasons.lock() {
            change(&mut reasons);
        }
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_accumulate_until_taken() {
        let wake = Wakeup::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        wake.named(a);
        wake.named(b);
        assert_eq!(
            wake.take(),
            Reasons {
                scan: false,
                named: vec![a, b]
            }
        );
        assert_eq!(wake.take(), Reasons::default());
    }

    #[test]
    fn too_many_named_jobs_become_a_search() {
        let wake = Wakeup::default();
        for _ in 0..=MAX_NAMED {
            wake.named(Uuid::now_v7());
        }
        let reasons = wake.take();
        assert!(reasons.scan);
        assert_eq!(reasons.named.len(), MAX_NAMED);
    }
}
