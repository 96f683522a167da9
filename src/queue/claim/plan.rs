//! What a claim does, decided without the database: the policy and the cursor a claimer
//! carries, how a claim splits into parts (local room per kind, cluster caps and rates), how
//! much each part may take, which statement each part runs and with which limits, and how a
//! fair claim goes round again. The statements themselves run in `claim/mod.rs`; everything
//! here is unit-tested without a database.

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use crate::config::WorkerSettings;
use crate::limits::{KindLimits, RateLimit};
use crate::queue::{ClaimedJob, Error, Result, sql};

/// The order in which due jobs are claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimOrder {
    /// Highest priority first, then earliest due: one user's backlog can delay everyone else.
    #[default]
    Fifo,
    /// Round robin over users with due work, starting after `after` in user id order: each claim
    /// takes every user's next job before anyone's second. Priority orders a user's own jobs
    /// (and breaks ties within a turn); it does not let one user overtake the others.
    Fair {
        /// Where a one-off claim ([`Queue::claim_with`](crate::queue::Queue::claim_with))
        /// starts the rotation (`Uuid::nil()`: from the first user). A claimer that claims
        /// again carries the rotation in its [`ClaimCursor`] instead, and
        /// [`Queue::claim_planned`](crate::queue::Queue::claim_planned) does not read this.
        after: Uuid,
    },
}

/// Limits applied by a claim, on top of the request's batch size. The same for every claim
/// of a worker: the rotation state is a [`ClaimCursor`].
#[derive(Debug, Clone, Default)]
pub struct ClaimPolicy {
    /// FIFO or fair.
    pub order: ClaimOrder,
    /// At most this many running jobs per user, across every worker (fair order only).
    pub max_running_per_user: Option<u32>,
    /// At most this many running jobs of a kind, across every worker.
    pub max_running_by_kind: HashMap<String, u32>,
    /// At most this many starts of a kind per period, across every worker.
    pub rate_by_kind: HashMap<String, RateLimit>,
}

impl ClaimPolicy {
    /// The policy of a worker with `settings` running kinds with these `limits` (a registry's
    /// [`limits`](crate::handlers::Registry::limits)): its order and per-user cap, and each
    /// kind's cluster cap and start rate.
    pub fn for_kinds<'a>(
        limits: impl IntoIterator<Item = (&'a str, &'a KindLimits)>,
        settings: &WorkerSettings,
    ) -> Self {
        let mut policy = ClaimPolicy {
            order: if settings.fair() {
                ClaimOrder::Fair { after: Uuid::nil() }
            } else {
                ClaimOrder::Fifo
            },
            max_running_per_user: (settings.max_running_per_user > 0)
                .then_some(settings.max_running_per_user),
            ..ClaimPolicy::default()
        };
        for (kind, limits) in limits {
            if let Some(cap) = limits.max_running {
                policy.max_running_by_kind.insert(kind.to_owned(), cap);
            }
            if let Some(rate) = limits.rate_limit {
                policy.rate_by_kind.insert(kind.to_owned(), rate);
            }
        }
        policy
    }

    /// Whether `kind` has a start rate (its claims record starts; the worker claims none of it
    /// ahead).
    #[must_use]
    pub fn rate_limited(&self, kind: &str) -> bool {
        self.rate_by_kind.contains_key(kind)
    }

    /// Whether claims of `kinds` enforce a running-job cap or a start rate (and so take the
    /// caps lock, and never the by-key path).
    #[must_use]
    pub fn capped(&self, kinds: &[String]) -> bool {
        self.max_running_per_user.is_some()
            || kinds.iter().any(|k| {
                self.max_running_by_kind.contains_key(k) || self.rate_by_kind.contains_key(k)
            })
    }

    /// Those of `kinds` with a cluster cap on their running jobs (a capped claim counts theirs).
    pub(crate) fn capped_kinds(&self, kinds: &[String]) -> Vec<String> {
        kinds
            .iter()
            .filter(|k| self.max_running_by_kind.contains_key(*k))
            .cloned()
            .collect()
    }

    /// The statement each part of a claim runs under this policy.
    pub(crate) fn statement(&self) -> Statement {
        match self.order {
            ClaimOrder::Fifo => Statement::Fifo,
            ClaimOrder::Fair { .. } => Statement::Fair {
                per_user: i32::try_from(self.max_running_per_user.unwrap_or(0)).unwrap_or(i32::MAX),
            },
        }
    }
}

/// The statement of a part of a claim, with the parameters the policy gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Statement {
    /// [`sql::claim::CLAIM_FIFO`], once.
    Fifo,
    /// [`sql::claim::CLAIM_FAIR`], for at most [`FAIR_ROUNDS`] rounds (see [`FairRounds`]).
    Fair {
        /// Each user's cap on running jobs (`$7`; 0: none).
        per_user: i32,
    },
}

impl Statement {
    /// Its text.
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Statement::Fifo => sql::claim::CLAIM_FIFO,
            Statement::Fair { .. } => sql::claim::CLAIM_FAIR,
        }
    }
}

/// The rotation state a claimer carries from one claim to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimCursor {
    /// Fair order: continue the user rotation after this user.
    pub after: Uuid,
    /// When kinds are claimed one by one (their local room binds), which kind goes first, so
    /// that none is always served last.
    pub kind_turn: usize,
}

impl ClaimCursor {
    /// Where a one-off claim in `order` starts: a fair order's `after`, the first kind.
    pub(crate) fn starting(order: ClaimOrder) -> Self {
        ClaimCursor {
            after: match order {
                ClaimOrder::Fair { after } => after,
                ClaimOrder::Fifo => Uuid::nil(),
            },
            kind_turn: 0,
        }
    }
}

/// What a claim took.
#[derive(Debug, Default)]
pub struct Claimed {
    /// The jobs, claimed and committed: the caller must run them (or give them back).
    pub jobs: Vec<ClaimedJob>,
    /// Some part of the claim came back full (took all its room allowed): more is probably
    /// waiting.
    pub full: bool,
    /// A statement failed. Jobs claimed before it are in `jobs` all the same.
    pub error: Option<Error>,
    /// The rate-limited kinds this claim looked at, each with `Some(wait)` when its rate held
    /// the claim back (it had room for more, the rate allows no more start now, and the next
    /// is allowed in `wait`), `None` otherwise.
    pub rates: Vec<(String, Option<Duration>)>,
}

impl Claimed {
    /// The shortest wait until a kind held back by its rate may start again.
    #[must_use]
    pub fn next_rate_slot(&self) -> Option<Duration> {
        self.rates.iter().filter_map(|(_, wait)| *wait).min()
    }

    /// The jobs, or the error if nothing was claimed. An error after some jobs were claimed is
    /// logged and the jobs are returned (they are committed: dropping them would strand them).
    ///
    /// # Errors
    /// The claim's error, when it claimed nothing.
    pub fn into_result(self) -> Result<Vec<ClaimedJob>> {
        match self.error {
            Some(err) if self.jobs.is_empty() => Err(err),
            Some(err) => {
                tracing::warn!(error.message = %err, claimed = self.jobs.len(), "claim failed part-way; keeping the jobs already claimed");
                Ok(self.jobs)
            }
            None => Ok(self.jobs),
        }
    }

    /// A claim that took nothing because of `err`.
    pub(crate) fn failed(err: Error) -> Claimed {
        Claimed {
            error: Some(err),
            ..Claimed::default()
        }
    }
}

/// Kinds claimed together, and the most they may take together.
pub(crate) type Part = (Vec<String>, u32);

/// How a claim of `limit` splits by local room: one part for every kind when no kind's room
/// binds; otherwise one part per kind with room, starting at kind `turn`.
pub(crate) fn room_parts(kinds: &[String], room: &[u32], limit: u32, turn: usize) -> Vec<Part> {
    let room_of = |i: usize| room.get(i).copied().unwrap_or(0);
    if (0..kinds.len()).all(|i| room_of(i) >= limit) {
        return vec![(kinds.to_vec(), limit)];
    }
    let n = kinds.len();
    (0..n)
        .map(|i| (i + turn) % n)
        .filter(|&i| room_of(i) > 0)
        .map(|i| (vec![kinds[i].clone()], room_of(i)))
        .collect()
}

/// What each capped kind's cap leaves (`running` counts each capped kind's running jobs).
pub(crate) fn cap_room(
    caps: &HashMap<String, u32>,
    running: &HashMap<String, i64>,
) -> HashMap<String, u32> {
    caps.iter()
        .map(|(kind, cap)| {
            let room = i64::from(*cap) - running.get(kind).copied().unwrap_or(0);
            (kind.clone(), u32::try_from(room.max(0)).unwrap_or(0))
        })
        .collect()
}

/// What each limited kind among `kinds` may take in a capped claim: the smaller of what its
/// cap leaves ([`cap_room`]) and what its rate allows now (`rate_room`, `None`: no rate).
pub(crate) fn limited_room(
    caps: &HashMap<String, u32>,
    running: &HashMap<String, i64>,
    kinds: &[String],
    rate_room: impl Fn(&str) -> Option<u32>,
) -> HashMap<String, u32> {
    let mut room = cap_room(caps, running);
    for kind in kinds {
        if let Some(by_rate) = rate_room(kind) {
            room.entry(kind.clone())
                .and_modify(|r| *r = (*r).min(by_rate))
                .or_insert(by_rate);
        }
    }
    room
}

/// How a part of `limit` splits by cluster limits: each limited kind (a cap or a rate) within
/// what its limits leave (`room`), then the unlimited kinds together with the rest. Limited
/// kinds go first because their parts are bounded: they can never take more than their limits
/// allow, while an unlimited kind going first could take the whole batch for as long as its
/// backlog lasts and leave a rate's windows unused.
pub(crate) fn limited_parts(
    kinds: &[String],
    limit: u32,
    room: &HashMap<String, u32>,
) -> Vec<Part> {
    let mut parts: Vec<Part> = kinds
        .iter()
        .filter(|k| room.contains_key(*k))
        .map(|kind| (vec![kind.clone()], room[kind]))
        .collect();
    let free: Vec<String> = kinds
        .iter()
        .filter(|k| !room.contains_key(*k))
        .cloned()
        .collect();
    if !free.is_empty() {
        parts.push((free, limit));
    }
    parts
}

/// What is left of a claim's batch as its parts take their share, one after the other.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    left: u32,
}

impl Budget {
    /// A batch of `limit` jobs.
    pub(crate) fn new(limit: u32) -> Self {
        Budget { left: limit }
    }

    /// What a part with `room` may take now.
    pub(crate) fn share(&self, room: u32) -> u32 {
        room.min(self.left)
    }

    /// A part allowed `share` took `taken` jobs: counts them (never more than is left) and
    /// returns how many counted, and whether the part was cut short by its own room: it took
    /// all of its share while the batch had room for more.
    pub(crate) fn spend(&mut self, share: u32, taken: usize) -> (u32, bool) {
        let before = self.left;
        let taken = u32::try_from(taken).unwrap_or(u32::MAX).min(before);
        self.left -= taken;
        (taken, taken == share && share < before)
    }
}

/// Claim `parts` in turn until `limit` jobs are claimed, each continuing the fair rotation at
/// `after` (advanced past each part when `fair`). Stops at the first error and returns it with
/// every job claimed before it. `claim` runs one part (`kinds`, at most `limit`, after a user).
pub(crate) async fn claim_parts<F, Fut>(
    parts: Vec<Part>,
    limit: u32,
    fair: bool,
    after: &mut Uuid,
    mut claim: F,
) -> Claimed
where
    F: FnMut(Vec<String>, u32, Uuid) -> Fut,
    Fut: std::future::Future<Output = Claimed>,
{
    let mut out = Claimed::default();
    let mut budget = Budget::new(limit);
    for (kinds, room) in parts {
        let share = budget.share(room);
        if share == 0 {
            break;
        }
        let part = claim(kinds, share, *after).await;
        if fair {
            *after = next_rotation(*after, &part.jobs);
        }
        out.full |= u32::try_from(part.jobs.len()).unwrap_or(u32::MAX) == share;
        budget.spend(share, part.jobs.len());
        out.jobs.extend(part.jobs);
        out.rates.extend(part.rates);
        if let Some(err) = part.error {
            out.full = false;
            out.error = Some(err);
            break;
        }
    }
    out
}

/// Most fair-claim statements per claim (each one a full turn over the users found).
pub(crate) const FAIR_ROUNDS: usize = 4;

/// The rounds of one fair part. A user with fewer due jobs than their quota leaves a round
/// short: the part goes round again (a few times at most) so that the others fill it, but only
/// while some user gave its full quota (a round where every user gave all it had means another
/// would find nothing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FairRounds {
    limit: u32,
    taken: u32,
    rounds: usize,
    /// The last round's limit.
    asked: u32,
    done: bool,
    after: Uuid,
}

impl FairRounds {
    /// The rounds of a part of at most `limit` jobs, continuing the rotation after `after`.
    pub(crate) fn new(limit: u32, after: Uuid) -> Self {
        FairRounds {
            limit,
            taken: 0,
            rounds: 0,
            asked: 0,
            done: false,
            after,
        }
    }

    /// The next round's limit and the user it starts after; `None` when the part is over.
    pub(crate) fn next_round(&mut self) -> Option<(u32, Uuid)> {
        let short = self.limit - self.taken.min(self.limit);
        if self.done || self.rounds == FAIR_ROUNDS || short == 0 {
            return None;
        }
        self.rounds += 1;
        self.asked = short;
        Some((short, self.after))
    }

    /// The round just asked for took `round`.
    pub(crate) fn took(&mut self, round: &[ClaimedJob]) {
        self.after = next_rotation(self.after, round);
        self.taken = self
            .taken
            .saturating_add(u32::try_from(round.len()).unwrap_or(u32::MAX));
        self.done = !quota_reached(round, self.asked);
    }
}

/// Whether some user in a fair round got its full quota (`ceil(limit / users)`), so that it may
/// have more to give if the round came back short.
fn quota_reached(round: &[ClaimedJob], limit: u32) -> bool {
    let mut per_user: HashMap<Uuid, u32> = HashMap::new();
    for job in round {
        *per_user.entry(job.user_id).or_default() += 1;
    }
    let users = u32::try_from(per_user.len()).unwrap_or(u32::MAX).max(1);
    let quota = limit.div_ceil(users);
    per_user.values().any(|n| *n >= quota)
}

/// Where the next fair claim should continue after `claimed` (taken after user `after`): past
/// the last user served, and when the rotation wrapped around, past the last one of the wrap.
pub fn next_rotation(after: Uuid, claimed: &[ClaimedJob]) -> Uuid {
    let wrapped = claimed
        .iter()
        .map(|j| j.user_id)
        .filter(|u| *u <= after)
        .max();
    wrapped
        .or_else(|| claimed.iter().map(|j| j.user_id).max())
        .unwrap_or(after)
}

/// Priority first, then due time (then id): the order FIFO claims return.
pub(crate) fn sort_fifo(jobs: &mut [ClaimedJob]) {
    jobs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn kinds(names: &[&str]) -> Vec<String> {
        names.iter().map(|k| (*k).to_owned()).collect()
    }

    fn job(user_id: Uuid, kind: &str) -> ClaimedJob {
        let now = chrono::Utc::now();
        ClaimedJob {
            id: Uuid::now_v7(),
            user_id,
            kind: kind.to_owned(),
            input: serde_json::Value::Null,
            priority: 0,
            run_at: now,
            attempt: 1,
            max_attempts: 3,
            created_at: now,
            lease_expires_at: None,
            cancel_requested: false,
        }
    }

    fn user(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn limits(max_running: Option<u32>, rate: Option<&str>) -> KindLimits {
        KindLimits {
            max_running,
            rate_limit: rate.map(|r| r.parse().unwrap()),
            ..KindLimits::default()
        }
    }

    #[test]
    fn a_policy_takes_each_kinds_cap_and_rate_and_the_workers_order() {
        let settings = WorkerSettings {
            fairness: crate::config::Fairness::Fair,
            max_running_per_user: 2,
            ..WorkerSettings::default()
        };
        let gpu = limits(Some(4), None);
        let mail = limits(None, Some("10/s"));
        let echo = limits(None, None);

        let policy =
            ClaimPolicy::for_kinds([("gpu", &gpu), ("mail", &mail), ("echo", &echo)], &settings);

        assert_eq!(policy.order, ClaimOrder::Fair { after: Uuid::nil() });
        assert_eq!(policy.max_running_per_user, Some(2));
        assert_eq!(
            policy.max_running_by_kind,
            HashMap::from([("gpu".into(), 4)])
        );
        assert_eq!(policy.rate_by_kind.keys().collect::<Vec<_>>(), ["mail"]);
        assert!(policy.rate_limited("mail") && !policy.rate_limited("gpu"));
    }

    #[test]
    fn a_fifo_worker_without_a_user_cap_has_a_fifo_policy_without_one() {
        let settings = WorkerSettings {
            fairness: crate::config::Fairness::Fifo,
            max_running_per_user: 0,
            ..WorkerSettings::default()
        };

        let policy = ClaimPolicy::for_kinds([], &settings);

        assert_eq!(policy.order, ClaimOrder::Fifo);
        assert_eq!(policy.max_running_per_user, None);
        assert!(!policy.capped(&kinds(&["echo"])));
    }

    #[test]
    fn a_claim_is_capped_when_a_kind_has_a_cap_or_a_rate_or_users_have_one() {
        let mut policy = ClaimPolicy::default();
        policy.max_running_by_kind.insert("gpu".into(), 1);
        policy
            .rate_by_kind
            .insert("mail".into(), "1/s".parse().unwrap());

        assert!(policy.capped(&kinds(&["echo", "gpu"])));
        assert!(policy.capped(&kinds(&["mail"])));
        assert!(!policy.capped(&kinds(&["echo"])));
        assert_eq!(
            policy.capped_kinds(&kinds(&["echo", "gpu", "mail"])),
            ["gpu"]
        );

        policy.max_running_per_user = Some(3);
        assert!(policy.capped(&kinds(&["echo"])));
    }

    #[test]
    fn the_order_chooses_the_statement_and_the_user_cap_its_parameter() {
        let mut policy = ClaimPolicy::default();
        assert_eq!(policy.statement(), Statement::Fifo);
        assert_eq!(policy.statement().sql(), sql::claim::CLAIM_FIFO);

        policy.order = ClaimOrder::Fair { after: user(7) };
        assert_eq!(policy.statement(), Statement::Fair { per_user: 0 });
        assert_eq!(policy.statement().sql(), sql::claim::CLAIM_FAIR);

        policy.max_running_per_user = Some(5);
        assert_eq!(policy.statement(), Statement::Fair { per_user: 5 });
        policy.max_running_per_user = Some(u32::MAX);
        assert_eq!(policy.statement(), Statement::Fair { per_user: i32::MAX });
    }

    #[test]
    fn a_one_off_claim_starts_where_its_order_says() {
        assert_eq!(
            ClaimCursor::starting(ClaimOrder::Fair { after: user(9) }),
            ClaimCursor {
                after: user(9),
                kind_turn: 0
            }
        );
        assert_eq!(
            ClaimCursor::starting(ClaimOrder::Fifo),
            ClaimCursor::default()
        );
    }

    #[test]
    fn one_part_for_every_kind_when_no_local_room_binds() {
        let parts = room_parts(&kinds(&["a", "b"]), &[8, 9], 8, 3);

        assert_eq!(parts, vec![(kinds(&["a", "b"]), 8)]);
    }

    #[test]
    fn kinds_short_of_room_are_claimed_one_by_one_from_a_rotating_turn() {
        let all = kinds(&["a", "b", "c"]);

        assert_eq!(
            room_parts(&all, &[2, 0, 8], 8, 0),
            vec![(kinds(&["a"]), 2), (kinds(&["c"]), 8)]
        );
        assert_eq!(
            room_parts(&all, &[2, 0, 8], 8, 2),
            vec![(kinds(&["c"]), 8), (kinds(&["a"]), 2)]
        );
    }

    #[test]
    fn limited_kinds_get_what_their_limits_leave_before_the_unlimited_ones() {
        let caps = HashMap::from([("gpu".to_owned(), 4), ("tts".to_owned(), 2)]);
        let running = HashMap::from([("gpu".to_owned(), 3), ("tts".to_owned(), 5)]);

        let parts = limited_parts(&kinds(&["a", "gpu", "tts"]), 10, &cap_room(&caps, &running));

        assert_eq!(
            parts,
            vec![
                (kinds(&["gpu"]), 1),
                (kinds(&["tts"]), 0),
                (kinds(&["a"]), 10)
            ]
        );
    }

    #[test]
    fn a_kind_with_a_cap_and_a_rate_gets_the_smaller_room() {
        let caps = HashMap::from([("gpu".to_owned(), 4), ("tts".to_owned(), 9)]);
        let running = HashMap::from([("gpu".to_owned(), 1)]);
        let rate = |k: &str| match k {
            "gpu" => Some(2),
            "tts" => Some(20),
            "mail" => Some(0),
            _ => None,
        };

        let room = limited_room(&caps, &running, &kinds(&["gpu", "tts", "mail", "a"]), rate);

        assert_eq!(
            room,
            HashMap::from([
                ("gpu".to_owned(), 2),
                ("tts".to_owned(), 9),
                ("mail".to_owned(), 0)
            ])
        );
    }

    #[test]
    fn a_budget_gives_each_part_what_is_left_and_says_when_its_own_room_cut_it_short() {
        let mut budget = Budget::new(10);

        let share = budget.share(3);
        assert_eq!(share, 3);
        assert_eq!(
            budget.spend(share, 3),
            (3, true),
            "took its room, the batch had more"
        );

        let share = budget.share(4);
        assert_eq!(
            budget.spend(share, 2),
            (2, false),
            "took less than its room"
        );

        let share = budget.share(9);
        assert_eq!(share, 5, "bounded by what is left");
        assert_eq!(
            budget.spend(share, 5),
            (5, false),
            "the batch had no more room"
        );

        assert_eq!(budget.share(4), 0);
        assert_eq!(
            budget.spend(0, 0),
            (0, false),
            "nothing left: not the part's room"
        );
    }

    #[test]
    fn a_part_whose_limits_allow_nothing_now_was_cut_short_by_them() {
        let mut budget = Budget::new(10);

        assert_eq!(budget.spend(budget.share(0), 0), (0, true));
    }

    #[tokio::test]
    async fn jobs_claimed_before_a_failing_part_are_returned_with_the_error() {
        let user = Uuid::now_v7();
        let parts = vec![(kinds(&["a"]), 2), (kinds(&["b"]), 2), (kinds(&["c"]), 2)];
        let mut after = Uuid::nil();

        let claimed = claim_parts(parts, 6, true, &mut after, |kinds, _, _| async move {
            if kinds[0] == "b" {
                Claimed::failed(Error::Db(sqlx::Error::PoolTimedOut))
            } else {
                Claimed {
                    jobs: vec![job(user, &kinds[0])],
                    ..Claimed::default()
                }
            }
        })
        .await;

        assert_eq!(claimed.jobs.len(), 1, "the first part's job is kept");
        assert!(claimed.error.is_some() && !claimed.full);
        assert_eq!(after, user, "the fair cursor moved past what was claimed");
        assert_eq!(claimed.into_result().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_part_that_fills_its_room_marks_the_claim_full_and_the_total_bounds_the_rest() {
        let parts = vec![(kinds(&["a"]), 2), (kinds(&["b"]), 5)];
        let mut after = Uuid::nil();
        let mut limits = Vec::new();

        let claimed = claim_parts(parts, 4, false, &mut after, |kinds, limit, _| {
            limits.push(limit);
            async move {
                Claimed {
                    jobs: (0..limit.min(1))
                        .map(|_| job(Uuid::nil(), &kinds[0]))
                        .collect(),
                    ..Claimed::default()
                }
            }
        })
        .await;

        assert_eq!(limits, vec![2, 3]);
        assert_eq!(claimed.jobs.len(), 2);
        assert!(!claimed.full, "no part took all it was allowed");
    }

    #[test]
    fn a_fair_part_goes_round_again_while_some_user_gave_its_full_quota() {
        let mut rounds = FairRounds::new(6, user(0));

        assert_eq!(rounds.next_round(), Some((6, user(0))));
        // two users, quota 3 each: user 1 gave 3, user 2 only 1
        let first = [
            job(user(1), "a"),
            job(user(1), "a"),
            job(user(1), "a"),
            job(user(2), "a"),
        ];
        rounds.took(&first);
        assert_eq!(
            rounds.next_round(),
            Some((2, user(2))),
            "the rest, after user 2"
        );

        // one user gave less than its quota: nobody has more to give
        rounds.took(&[job(user(1), "a")]);
        assert_eq!(rounds.next_round(), None);
    }

    #[test]
    fn a_fair_part_stops_when_full_or_after_its_last_round() {
        let mut full = FairRounds::new(2, user(0));
        full.next_round();
        full.took(&[job(user(1), "a"), job(user(2), "a")]);
        assert_eq!(full.next_round(), None, "nothing short");

        let mut rounds = FairRounds::new(100, user(0));
        let mut n = 0;
        while let Some((limit, _)) = rounds.next_round() {
            n += 1;
            // of two users, one gives its whole quota and the other a single job
            let mut round: Vec<_> = (0..limit.div_ceil(2)).map(|_| job(user(1), "a")).collect();
            round.push(job(user(2), "a"));
            rounds.took(&round);
        }
        assert_eq!(n, FAIR_ROUNDS);
    }

    #[test]
    fn the_rotation_continues_past_the_last_user_served_or_the_last_of_a_wrap() {
        let straight = [job(user(3), "a"), job(user(5), "a")];
        assert_eq!(next_rotation(user(2), &straight), user(5));

        let wrapped = [job(user(5), "a"), job(user(1), "a"), job(user(2), "a")];
        assert_eq!(next_rotation(user(4), &wrapped), user(2));

        assert_eq!(
            next_rotation(user(4), &[]),
            user(4),
            "nothing claimed: stay"
        );
    }

    #[test]
    fn fifo_order_is_priority_then_due_time_then_id() {
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();
        let mut low = job(user(1), "a");
        low.priority = -1;
        let mut late = job(user(1), "a");
        late.run_at = at(20);
        let mut early = job(user(1), "a");
        early.run_at = at(10);
        let mut high = job(user(1), "a");
        high.priority = 5;
        high.run_at = at(30);
        let (low_id, late_id, early_id, high_id) = (low.id, late.id, early.id, high.id);
        let mut jobs = vec![low, late, early, high];

        sort_fifo(&mut jobs);

        let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
        assert_eq!(ids, [high_id, early_id, late_id, low_id]);
    }
}
