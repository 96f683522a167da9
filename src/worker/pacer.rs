//! When and how the claim loop looks for work: a pure state machine, no I/O.
//!
//! The loop asks the pacer for a [`Plan`] (search the queue, take announced jobs by key, or
//! nothing), reports what the claim gave, and asks what to [`Wait`] for. Every rule of
//! `docs/decisions.md` about pacing lives here, with a test each (time is injected, so the tests
//! need neither a database nor a clock):
//! - the first pass searches;
//! - the poll interval is a deadline, not a quiet period: a search happens whenever it has passed
//!   since the last search, whatever else woke the loop;
//! - announced jobs are taken by key only when the worker is otherwise idle (no backlog, no
//!   search pending, no caps, every kind below its limit, nothing but named jobs announced);
//! - a named claim cut short by the room searches at once; one lost to another replica does not;
//! - a full search means more is probably waiting: claim again at once, after lingering briefly
//!   for a few more free slots when fewer than a batch floor (a quarter of the slots and of what
//!   may be claimed ahead) are free;
//! - a freed slot wakes the loop only when it matters (slots, all or a kind's, were full, or
//!   claimed jobs wait for one), and then searches;
//! - a search held back by a kind's rate searches again when the rate's next start is allowed,
//!   if that comes before the poll interval.

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::wake::Reasons;

/// With a backlog, how long to wait for more free slots before claiming for only a few.
pub(crate) const CLAIM_LINGER: Duration = Duration::from_millis(1);

/// The room the worker has when it plans a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Room {
    /// How many more jobs to claim: free slots plus prefetch, minus what is buffered.
    pub free: usize,
    /// Free slots of the kind with the fewest.
    pub tightest_kind: usize,
    /// Claimed jobs waiting for a slot.
    pub buffered: usize,
}

/// What the next claim should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// No claim: no room, or the database is unreachable.
    Idle,
    /// Take these announced jobs by key, at most `limit`.
    Named { ids: Vec<Uuid>, limit: usize },
    /// Search the queue in the configured order for up to `limit` jobs.
    Search { limit: usize },
}

/// What to wait for when there is nothing to claim right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    /// Whether a freed slot is a reason to look again.
    pub on_freed: bool,
    /// The poll deadline.
    pub until: Instant,
}

/// What ended a [`Wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// A wake-up from the listener or the heartbeat (its reasons are read by the next plan).
    Notified,
    /// A slot was freed while it mattered.
    Freed,
    /// The poll deadline passed.
    Deadline,
    /// Shutdown.
    Shutdown,
}

/// The pacing state of one claim loop.
#[derive(Debug)]
pub(crate) struct Pacer {
    poll_interval: Duration,
    /// Claims enforce cluster-wide caps: never take the by-key path (it applies none).
    capped: bool,
    /// With a backlog, linger until at least this many jobs can be claimed.
    batch_floor: usize,
    /// The last claim came back full: there is probably more waiting.
    backlog: bool,
    /// The next claim must search the queue (it may not take the by-key path).
    force_search: bool,
    /// Search no later than this.
    next_poll: Instant,
}

impl Pacer {
    /// A pacer for a worker with `capacity` (concurrency plus prefetch) whose first plan, at
    /// `now`, is a search.
    pub(crate) fn new(
        poll_interval: Duration,
        capped: bool,
        capacity: usize,
        now: Instant,
    ) -> Self {
        Pacer {
            poll_interval,
            capped,
            batch_floor: (capacity / 4).max(1),
            backlog: false,
            force_search: true,
            next_poll: now,
        }
    }

    /// With a backlog and fewer free slots than a batch floor, how long to wait for more before
    /// claiming (short jobs finish in bursts: one claim then serves many of them).
    pub(crate) fn linger_until(&self, now: Instant, healthy: bool, free: usize) -> Option<Instant> {
        (healthy && self.backlog && free < self.batch_floor).then_some(now + CLAIM_LINGER)
    }

    /// Whether lingering can stop: enough slots are free for a batch.
    pub(crate) fn enough_room(&self, free: usize) -> bool {
        free >= self.batch_floor
    }

    /// The worker can now hold `capacity` jobs (slots plus what it may claim ahead, which
    /// adaptive prefetch changes as run times are learnt): a batch is a quarter of it.
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.batch_floor = (capacity / 4).max(1);
    }

    /// The next claim, given the wake-up `reasons` gathered since the last plan (consumed: any
    /// that this plan does not serve become a search).
    pub(crate) fn plan(
        &mut self,
        now: Instant,
        reasons: Reasons,
        healthy: bool,
        room: Room,
    ) -> Plan {
        if now >= self.next_poll {
            self.force_search = true;
        }
        let named_only = !(self.force_search
            || self.backlog
            || reasons.scan
            || reasons.named.is_empty()
            || self.capped)
            && room.tightest_kind > 0;
        if reasons.scan || !reasons.named.is_empty() {
            self.force_search = true;
        }
        self.backlog = false;
        if !healthy || room.free == 0 {
            Plan::Idle
        } else if named_only {
            Plan::Named {
                ids: reasons.named,
                limit: room.free.min(room.tightest_kind),
            }
        } else {
            Plan::Search { limit: room.free }
        }
    }

    /// A [`Plan::Named`] claim of `limit` out of `announced` jobs took `claimed`. Returns whether
    /// to claim again at once.
    pub(crate) fn named_claimed(&mut self, announced: usize, limit: usize, claimed: usize) -> bool {
        // Cut short by the room (not by another worker taking them): search for the rest.
        let full = claimed == limit && announced > limit;
        self.force_search = full;
        self.backlog = full;
        full
    }

    /// A [`Plan::Search`] claim finished at `now`; `full` if some part of it came back full;
    /// `rate_slot`: a kind held back by its rate may start again after this long.
    /// Returns whether to claim again at once.
    pub(crate) fn searched(
        &mut self,
        now: Instant,
        full: bool,
        rate_slot: Option<Duration>,
    ) -> bool {
        self.next_poll =
            now + rate_slot.map_or(self.poll_interval, |slot| slot.min(self.poll_interval));
        self.force_search = false;
        self.backlog = full;
        full
    }

    /// What to wait for, with `room` left after the last claim.
    pub(crate) fn wait(&self, room: Room) -> Wait {
        Wait {
            on_freed: room.free == 0 || room.buffered > 0 || room.tightest_kind == 0,
            until: self.next_poll,
        }
    }

    /// The wait ended at `now` because of `woke`.
    pub(crate) fn woke(&mut self, now: Instant, woke: Woke) {
        match woke {
            Woke::Freed => self.force_search = true,
            Woke::Deadline => {
                self.force_search = true;
                self.next_poll = now + self.poll_interval;
            }
            Woke::Notified | Woke::Shutdown => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_secs(2);

    fn idle_room() -> Room {
        Room {
            free: 8,
            tightest_kind: 8,
            buffered: 0,
        }
    }

    fn named(ids: &[Uuid]) -> Reasons {
        Reasons {
            scan: false,
            named: ids.to_vec(),
        }
    }

    fn scan() -> Reasons {
        Reasons {
            scan: true,
            named: Vec::new(),
        }
    }

    /// A pacer past its first search, at rest at `now`.
    fn settled(now: Instant, capped: bool) -> Pacer {
        let mut pacer = Pacer::new(POLL, capped, 8, now);
        assert_eq!(
            pacer.plan(now, Reasons::default(), true, idle_room()),
            Plan::Search { limit: 8 }
        );
        assert!(!pacer.searched(now, false, None));
        pacer
    }

    #[test]
    fn the_first_pass_searches() {
        let now = Instant::now();
        let mut pacer = Pacer::new(POLL, false, 8, now);

        let plan = pacer.plan(now, named(&[Uuid::now_v7()]), true, idle_room());

        assert_eq!(plan, Plan::Search { limit: 8 });
    }

    #[test]
    fn an_idle_worker_takes_an_announced_job_by_key() {
        let now = Instant::now();
        let mut pacer = settled(now, false);
        let id = Uuid::now_v7();

        let plan = pacer.plan(now, named(&[id]), true, idle_room());

        assert_eq!(
            plan,
            Plan::Named {
                ids: vec![id],
                limit: 8
            }
        );
    }

    #[test]
    fn a_named_claim_is_limited_by_the_tightest_kind() {
        let now = Instant::now();
        let mut pacer = settled(now, false);
        let room = Room {
            free: 8,
            tightest_kind: 2,
            buffered: 0,
        };

        let plan = pacer.plan(now, named(&[Uuid::now_v7()]), true, room);

        assert!(matches!(plan, Plan::Named { limit: 2, .. }));
    }

    #[test]
    fn a_stream_of_single_inserts_does_not_postpone_the_poll() {
        let start = Instant::now();
        let mut pacer = settled(start, false);
        let mut now = start;

        while now + Duration::from_millis(50) < start + POLL {
            now += Duration::from_millis(50);
            let plan = pacer.plan(now, named(&[Uuid::now_v7()]), true, idle_room());
            assert!(matches!(plan, Plan::Named { .. }), "{plan:?}");
            assert!(!pacer.named_claimed(1, 8, 1));
            assert_eq!(pacer.wait(idle_room()).until, start + POLL);
        }
        now = start + POLL;

        let plan = pacer.plan(now, named(&[Uuid::now_v7()]), true, idle_room());

        assert_eq!(plan, Plan::Search { limit: 8 });
    }

    #[test]
    fn a_search_postpones_the_poll_by_one_interval() {
        let start = Instant::now();
        let mut pacer = settled(start, false);
        let later = start + Duration::from_millis(700);

        pacer.plan(later, scan(), true, idle_room());
        pacer.searched(later, false, None);

        assert_eq!(pacer.wait(idle_room()).until, later + POLL);
    }

    #[test]
    fn the_poll_deadline_searches_and_sets_the_next_one() {
        let start = Instant::now();
        let mut pacer = settled(start, false);
        let deadline = pacer.wait(idle_room()).until;

        pacer.woke(deadline, Woke::Deadline);

        assert_eq!(pacer.wait(idle_room()).until, deadline + POLL);
        let plan = pacer.plan(deadline, named(&[Uuid::now_v7()]), true, idle_room());
        assert_eq!(plan, Plan::Search { limit: 8 });
    }

    #[test]
    fn caps_never_take_the_by_key_path() {
        let now = Instant::now();
        let mut pacer = settled(now, true);

        let plan = pacer.plan(now, named(&[Uuid::now_v7()]), true, idle_room());

        assert_eq!(plan, Plan::Search { limit: 8 });
    }

    #[test]
    fn a_kind_at_its_limit_searches_instead_of_taking_by_key() {
        let now = Instant::now();
        let mut pacer = settled(now, false);
        let room = Room {
            free: 8,
            tightest_kind: 0,
            buffered: 0,
        };

        let plan = pacer.plan(now, named(&[Uuid::now_v7()]), true, room);

        assert_eq!(plan, Plan::Search { limit: 8 });
    }

    #[test]
    fn a_bulk_insert_alongside_named_jobs_searches() {
        let now = Instant::now();
        let mut pacer = settled(now, false);
        let reasons = Reasons {
            scan: true,
            named: vec![Uuid::now_v7()],
        };

        let plan = pacer.plan(now, reasons, true, idle_room());

        assert_eq!(plan, Plan::Search { limit: 8 });
    }

    #[test]
    fn a_backlog_searches_again_at_once_instead_of_taking_by_key() {
        let now = Instant::now();
        let mut pacer = settled(now, false);
        pacer.plan(now, scan(), true, idle_room());

        let again = pacer.searched(now, true, None);
        let plan = pacer.plan(now, named(&[Uuid::now_v7()]), true, idle_room());

        assert!(again);
        assert_eq!(plan, Plan::Search { limit: 8 });
    }

    #[test]
    fn a_named_claim_cut_short_by_the_room_searches_at_once() {
        let now = Instant::now();
        let mut pacer = settled(now, false);
        let ids = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        pacer.plan(now, named(&ids), true, idle_room());

        let again = pacer.named_claimed(3, 2, 2);
        let plan = pacer.plan(now, Reasons::default(), true, idle_room());

        assert!(again);
        assert_eq!(plan, Plan::Search { limit: 8 });
    }

    #[test]
    fn a_named_job_lost_to_another_replica_does_not_search() {
        let now = Instant::now();
        let mut pacer = settled(now, false);
        let id = Uuid::now_v7();
        pacer.plan(now, named(&[id]), true, idle_room());

        let again = pacer.named_claimed(1, 8, 0);
        let next = Uuid::now_v7();
        let plan = pacer.plan(now, named(&[next]), true, idle_room());

        assert!(!again);
        assert_eq!(
            plan,
            Plan::Named {
                ids: vec![next],
                limit: 8
            }
        );
    }

    #[test]
    fn no_room_or_no_database_claims_nothing_and_searches_later() {
        let now = Instant::now();
        let mut pacer = settled(now, false);
        let full = Room {
            free: 0,
            tightest_kind: 0,
            buffered: 0,
        };

        assert_eq!(
            pacer.plan(now, named(&[Uuid::now_v7()]), true, full),
            Plan::Idle
        );
        assert_eq!(
            pacer.plan(now, Reasons::default(), false, idle_room()),
            Plan::Idle
        );
        // The announced job was not taken: the next claim searches for it.
        let plan = pacer.plan(now, Reasons::default(), true, idle_room());
        assert_eq!(plan, Plan::Search { limit: 8 });
    }

    #[test]
    fn a_freed_slot_matters_only_when_slots_were_full_or_jobs_wait() {
        let pacer = settled(Instant::now(), false);
        let room = |free, tightest_kind, buffered| Room {
            free,
            tightest_kind,
            buffered,
        };

        assert!(!pacer.wait(room(8, 8, 0)).on_freed);
        assert!(pacer.wait(room(0, 0, 0)).on_freed);
        assert!(pacer.wait(room(8, 0, 0)).on_freed);
        assert!(pacer.wait(room(2, 2, 1)).on_freed);
    }

    #[test]
    fn a_freed_slot_that_matters_searches() {
        let now = Instant::now();
        let mut pacer = settled(now, false);

        pacer.woke(now, Woke::Freed);
        let plan = pacer.plan(now, named(&[Uuid::now_v7()]), true, idle_room());

        assert_eq!(plan, Plan::Search { limit: 8 });
    }

    #[test]
    fn a_plain_wake_up_does_not_force_a_search() {
        let now = Instant::now();
        let mut pacer = settled(now, false);

        pacer.woke(now, Woke::Notified);
        let plan = pacer.plan(now, named(&[Uuid::now_v7()]), true, idle_room());

        assert!(matches!(plan, Plan::Named { .. }));
    }

    #[test]
    fn a_search_held_back_by_a_rate_searches_again_when_its_next_start_is_allowed() {
        let now = Instant::now();
        let mut pacer = settled(now, true);
        pacer.plan(now, scan(), true, idle_room());

        let again = pacer.searched(now, false, Some(Duration::from_millis(120)));

        assert!(!again, "no claim before the slot: it could start nothing");
        let wait = pacer.wait(idle_room());
        assert_eq!(wait.until, now + Duration::from_millis(120));
        pacer.woke(wait.until, Woke::Deadline);
        assert_eq!(
            pacer.plan(wait.until, Reasons::default(), true, idle_room()),
            Plan::Search { limit: 8 }
        );
    }

    #[test]
    fn a_rate_slot_later_than_the_poll_interval_keeps_the_poll() {
        let now = Instant::now();
        let mut pacer = settled(now, true);
        pacer.plan(now, scan(), true, idle_room());

        pacer.searched(now, false, Some(Duration::from_secs(3600)));

        assert_eq!(pacer.wait(idle_room()).until, now + POLL);
    }

    #[test]
    fn a_backlog_lingers_for_a_batch_floor_of_free_slots() {
        let now = Instant::now();
        let mut pacer = Pacer::new(POLL, false, 32, now);
        assert_eq!(pacer.linger_until(now, true, 1), None);
        pacer.plan(now, scan(), true, idle_room());
        pacer.searched(now, true, None);

        assert_eq!(pacer.linger_until(now, true, 1), Some(now + CLAIM_LINGER));
        assert_eq!(pacer.linger_until(now, true, 8), None);
        assert_eq!(pacer.linger_until(now, false, 1), None);
        assert!(!pacer.enough_room(7));
        assert!(pacer.enough_room(8));
    }

    #[test]
    fn the_batch_floor_follows_the_capacity_claimed_ahead() {
        let now = Instant::now();
        let mut pacer = Pacer::new(POLL, false, 8, now);
        pacer.plan(now, scan(), true, idle_room());
        pacer.searched(now, true, None);
        assert_eq!(pacer.linger_until(now, true, 3), None);

        // 8 slots and 32 claimed ahead for a short kind: claims come in tens, not twos.
        pacer.set_capacity(40);

        assert_eq!(pacer.linger_until(now, true, 3), Some(now + CLAIM_LINGER));
        assert!(!pacer.enough_room(9));
        assert!(pacer.enough_room(10));
    }
}
