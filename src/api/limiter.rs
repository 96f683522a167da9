//! Per-caller limits of the job API: a keyed GCRA (one "theoretical arrival time" per key) for
//! request rates and failed authentications, and a count of open streams per user.
//!
//! Written here rather than taken from a crate because the API must also *look* at a key
//! without spending from it (an address that failed too often is refused before its token is
//! verified), and because a key costs one `Instant`, pruned once it is back at full burst.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys kept before full-burst ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// `count` per `period` with bursts of `burst`, per key.
#[derive(Debug)]
pub struct Gcra<K> {
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of now a key's arrival time may run (the burst).
    tolerance: Duration,
    tats: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Gcra<K> {
    /// `count` per `period`, bursts of `burst` (≥ 1); `None` when `count` is 0 (no limit).
    pub fn new(count: u32, period: Duration, burst: u32) -> Option<Gcra<K>> {
        let interval = period.checked_div(count)?;
        Some(Gcra {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            tats: Mutex::new(HashMap::new()),
        })
    }

    /// Spend one from `key`'s allowance: `Err(wait)` when it has none left.
    ///
    /// # Errors
    /// How long until the next request would pass.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        if tats.len() >= PRUNE_ABOVE {
            tats.retain(|_, tat| *tat > now);
        }
        tats.insert(key.clone(), tat + self.interval);
        Ok(())
    }

    /// Whether `key` has no allowance left, without spending: `Some(wait)` if so.
    pub fn exhausted(&self, key: &K) -> Option<Duration> {
        let now = Instant::now();
        let tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let ahead = tats.get(key)?.saturating_duration_since(now);
        (ahead > self.tolerance).then(|| ahead - self.tolerance)
    }
}

/// Open streams per user, bounded.
#[derive(Debug)]
pub struct StreamCounts {
    max: usize,
    open: Arc<Mutex<HashMap<uuid::Uuid, usize>>>,
}

/// One open stream of a user; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    user: uuid::Uuid,
    open: Arc<Mutex<HashMap<uuid::Uuid, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl StreamCounts {
    /// At most `max` streams per user.
    pub fn new(max: usize) -> StreamCounts {
        StreamCounts {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for one more stream of `user`, if they hold fewer than the maximum.
    pub fn take(&self, user: uuid::Uuid) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(user).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            user,
            open: self.open.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_key() {
        let gcra = Gcra::new(1, Duration::from_secs(10), 3).unwrap();
        for _ in 0..3 {
            gcra.check(&"a").unwrap();
        }
        assert!(gcra.exhausted(&"a").is_some());
        let wait = gcra.check(&"a").unwrap_err();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        gcra.check(&"b").unwrap();
        assert!(gcra.exhausted(&"b").is_none());
        assert!(Gcra::<u8>::new(0, Duration::from_secs(1), 1).is_none());
    }

    #[test]
    fn stream_slots_are_per_user_and_freed_on_drop() {
        let counts = StreamCounts::new(1);
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let slot = counts.take(a).unwrap();
        assert!(counts.take(a).is_none());
        assert!(counts.take(b).is_some());
        drop(slot);
        assert!(counts.take(a).is_some());
    }
}
