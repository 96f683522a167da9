//! Claiming: which due jobs a worker takes, in what order, under which limits.
//!
//! - Order: FIFO (priority, then due time) or fair (round robin over users with due work,
//!   priority and due time within a user); see [`ClaimOrder`].
//! - Limits: a cap on each user's running jobs, caps on each kind's running jobs and start
//!   rates per kind (`claim_rate`), counted cluster-wide. A claim that enforces a cap or a
//!   rate runs in a transaction that first takes one advisory lock, so that concurrent claimers
//!   (any number of replicas) read counts and starts that include each other's claims; claims
//!   without caps or rates never wait for each other.
//!
//! - Split: [`Queue::claim_planned`] is the one place that splits a claim, by local room per
//!   kind, by cluster caps, and in fair order by the user cursor.
//!
//! Every claim is `FOR UPDATE SKIP LOCKED`, commits before any job starts, and takes a lease.
//! Its statements run in one transaction begun by [`sql::claim::CLAIM_BEGIN`], whose planner settings
//! keep every claim an ordered index walk on tables without fresh statistics.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::claim_rate::ClaimRates;
use super::{ClaimRequest, ClaimedJob, Error, Queue, Result, sql};
use crate::config::WorkerSettings;
use crate::limits::{KindLimits, RateLimit};

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
        /// Continue the rotation after this user (`Uuid::nil()` to start from the first).
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
}

impl Claimed {
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
}

impl Queue {
    /// Claim up to `request.limit` due jobs of the requested kinds in FIFO order, taking a lease
    /// on each. Returns them in claim order (priority, then due time).
    ///
    /// # Errors
    /// Database errors only; an empty queue is an empty vector.
    pub async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<ClaimedJob>> {
        self.claim_with(request, &ClaimPolicy::default()).await
    }

    /// Claim the jobs among `ids` that are still pending and due and of the requested kinds (at
    /// most `request.limit`), in claim order. Jobs another worker took first are skipped.
    /// Applies no caps: callers with running-job caps use [`Queue::claim_planned`].
    ///
    /// # Errors
    /// Database errors only.
    pub async fn claim_named(
        &self,
        request: &ClaimRequest<'_>,
        ids: &[Uuid],
    ) -> Result<Vec<ClaimedJob>> {
        if request.limit == 0 || request.kinds.is_empty() || ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut jobs: Vec<ClaimedJob> = sqlx::query_as(sql::claim::CLAIM_NAMED)
            .bind(request.kinds)
            .bind(i64::from(request.limit))
            .bind(request.worker.as_str())
            .bind(request.lease.as_secs_f64())
            .bind(request.now)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        sort_fifo(&mut jobs);
        Ok(jobs)
    }

    /// Claim as [`Queue::claim`], in `policy`'s order (a fair claim starts after its `after`)
    /// and within its caps: a one-off claim with no local room per kind. In fair order the jobs
    /// come back in claim order (turn by turn).
    ///
    /// # Errors
    /// Database errors, when nothing was claimed.
    pub async fn claim_with(
        &self,
        request: &ClaimRequest<'_>,
        policy: &ClaimPolicy,
    ) -> Result<Vec<ClaimedJob>> {
        let mut cursor = ClaimCursor {
            after: match policy.order {
                ClaimOrder::Fair { after } => after,
                ClaimOrder::Fifo => Uuid::nil(),
            },
            kind_turn: 0,
        };
        let room = vec![request.limit; request.kinds.len()];
        self.claim_planned(request, &room, policy, &mut cursor)
            .await
            .into_result()
    }

    /// The one claim planner: up to `request.limit` jobs of `request.kinds`, each kind within
    /// its room in this process (`kind_room[i]` for `request.kinds[i]`) and within `policy`'s
    /// cluster-wide caps, in `policy`'s order continuing at `cursor` (which it advances; the
    /// `after` of a fair `policy.order` is not read).
    ///
    /// The split, in one place: one claim for every kind when no kind's room binds; otherwise
    /// one per kind with room, starting at the cursor's kind turn. Within each part, kinds with
    /// a cluster cap are claimed under the caps lock, each within what its cap leaves.
    ///
    /// Never fails outright: jobs claimed before an error are returned with it (see
    /// [`Claimed::into_result`]).
    pub async fn claim_planned(
        &self,
        request: &ClaimRequest<'_>,
        kind_room: &[u32],
        policy: &ClaimPolicy,
        cursor: &mut ClaimCursor,
    ) -> Claimed {
        if request.limit == 0 || request.kinds.is_empty() {
            return Claimed::default();
        }
        let parts = room_parts(request.kinds, kind_room, request.limit, cursor.kind_turn);
        cursor.kind_turn = cursor.kind_turn.wrapping_add(1);
        let fair = matches!(policy.order, ClaimOrder::Fair { .. });
        let queue = self;
        claim_parts(
            parts,
            request.limit,
            fair,
            &mut cursor.after,
            move |kinds, limit, after| async move {
                queue
                    .claim_part(request, policy, &kinds, limit, after)
                    .await
            },
        )
        .await
    }

    /// One part of a claim: `kinds` together, at most `limit`, fair order continuing after
    /// `after`. Capped kinds are claimed in one transaction under the caps lock; if any
    /// statement there fails, the transaction rolls back and nothing of this part was claimed.
    async fn claim_part(
        &self,
        request: &ClaimRequest<'_>,
        policy: &ClaimPolicy,
        kinds: &[String],
        limit: u32,
        after: Uuid,
    ) -> Claimed {
        if !policy.capped(kinds) {
            return match self
                .claim_uncapped(request, policy, kinds, limit, after)
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => failed(err),
            };
        }
        match self
            .claim_capped(request, policy, kinds, limit, after)
            .await
        {
            Ok(claimed) => claimed,
            Err(err) => failed(err),
        }
    }

    /// A part without caps or rates: its statements in one transaction with the claims' planner
    /// settings ([`sql::claim::CLAIM_BEGIN`]); nothing of it is claimed if one of them fails.
    async fn claim_uncapped(
        &self,
        request: &ClaimRequest<'_>,
        policy: &ClaimPolicy,
        kinds: &[String],
        limit: u32,
        after: Uuid,
    ) -> Result<Claimed> {
        let mut tx: Transaction<'_, Postgres> = self.pool.begin_with(sql::claim::CLAIM_BEGIN).await?;
        let mut claimed = claim_ordered(&mut tx, request, policy, kinds, limit, after).await;
        if let Some(err) = claimed.error.take() {
            return Err(err); // rolled back: nothing was claimed
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn claim_capped(
        &self,
        request: &ClaimRequest<'_>,
        policy: &ClaimPolicy,
        kinds: &[String],
        limit: u32,
        after: Uuid,
    ) -> Result<Claimed> {
        let mut tx: Transaction<'_, Postgres> = self.pool.begin_with(sql::claim::CLAIM_BEGIN).await?;
        sqlx::query(sql::claim::CAPPED_CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        let capped: Vec<String> = kinds
            .iter()
            .filter(|k| policy.max_running_by_kind.contains_key(*k))
            .cloned()
            .collect();
        let running: HashMap<String, i64> = if capped.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as::<_, (String, i64)>(sql::claim::RUNNING_BY_KIND)
                .bind(&capped)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect()
        };
        let mut rates = ClaimRates::read(&mut tx, &policy.rate_by_kind, kinds, request.now).await?;
        let mut room = cap_room(&policy.max_running_by_kind, &running);
        for kind in kinds {
            if let Some(by_rate) = rates.room(kind) {
                room.entry(kind.clone())
                    .and_modify(|r| *r = (*r).min(by_rate))
                    .or_insert(by_rate);
            }
        }
        let mut out = Claimed::default();
        let mut left = limit;
        for (kinds, room) in limited_parts(kinds, limit, &room) {
            let limit = room.min(left);
            let left_before = left;
            let taken = if limit == 0 {
                0
            } else {
                let part = claim_ordered(&mut tx, request, policy, &kinds, limit, after).await;
                if let Some(err) = part.error {
                    return Err(err); // rolled back: nothing of this part was claimed
                }
                let taken = u32::try_from(part.jobs.len()).unwrap_or(u32::MAX).min(left);
                left -= taken;
                out.jobs.extend(part.jobs);
                taken
            };
            // A part of one rate-limited kind: record its starts, and whether the rate held it
            // back (it took all it was allowed, with room for more here).
            if let [kind] = kinds.as_slice()
                && rates.limits(kind)
            {
                let cut_short = taken == limit && limit < left_before;
                let wait = rates.started(&mut tx, kind, taken, cut_short).await?;
                out.rates.push((kind.clone(), wait));
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}

fn failed(err: Error) -> Claimed {
    Claimed {
        error: Some(err),
        ..Claimed::default()
    }
}

/// How a claim of `limit` splits by local room: one part for every kind when no kind's room
/// binds; otherwise one part per kind with room, starting at kind `turn`.
fn room_parts(kinds: &[String], room: &[u32], limit: u32, turn: usize) -> Vec<(Vec<String>, u32)> {
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
fn cap_room(caps: &HashMap<String, u32>, running: &HashMap<String, i64>) -> HashMap<String, u32> {
    caps.iter()
        .map(|(kind, cap)| {
            let room = i64::from(*cap) - running.get(kind).copied().unwrap_or(0);
            (kind.clone(), u32::try_from(room.max(0)).unwrap_or(0))
        })
        .collect()
}

/// How a part of `limit` splits by cluster limits: each limited kind (a cap or a rate) within
/// what its limits leave (`room`), then the unlimited kinds together with the rest. Limited
/// kinds go first because their parts are bounded: they can never take more than their limits
/// allow, while an unlimited kind going first could take the whole batch for as long as its
/// backlog lasts and leave a rate's windows unused.
fn limited_parts(
    kinds: &[String],
    limit: u32,
    room: &HashMap<String, u32>,
) -> Vec<(Vec<String>, u32)> {
    let mut parts: Vec<(Vec<String>, u32)> = kinds
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

/// Claim `parts` in turn until `limit` jobs are claimed, each continuing the fair rotation at
/// `after` (advanced past each part when `fair`). Stops at the first error and returns it with
/// every job claimed before it.
async fn claim_parts<F, Fut>(
    parts: Vec<(Vec<String>, u32)>,
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
    let mut left = limit;
    for (kinds, room) in parts {
        let limit = room.min(left);
        if limit == 0 {
            break;
        }
        let part = claim(kinds, limit, *after).await;
        if fair {
            *after = next_rotation(*after, &part.jobs);
        }
        let taken = u32::try_from(part.jobs.len()).unwrap_or(u32::MAX);
        out.full |= taken == limit;
        left -= taken.min(left);
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

/// One claim statement (a few in fair order, when users hold back the batch), continuing the
/// fair rotation after `after`. Returns what the statements took and the error that stopped
/// them, if any; inside a transaction, the owner of the transaction discards both on error.
async fn claim_ordered(
    conn: &mut sqlx::PgConnection,
    request: &ClaimRequest<'_>,
    policy: &ClaimPolicy,
    kinds: &[String],
    limit: u32,
    after: Uuid,
) -> Claimed {
    let mut out = Claimed::default();
    match policy.order {
        ClaimOrder::Fifo => {
            let claimed = sqlx::query_as::<_, ClaimedJob>(sql::claim::CLAIM_FIFO)
                .bind(kinds)
                .bind(i64::from(limit))
                .bind(request.worker.as_str())
                .bind(request.lease.as_secs_f64())
                .bind(request.now)
                .fetch_all(&mut *conn)
                .await;
            match claimed {
                Ok(mut jobs) => {
                    sort_fifo(&mut jobs);
                    out.jobs = jobs;
                }
                Err(err) => out.error = Some(err.into()),
            }
        }
        ClaimOrder::Fair { .. } => {
            let per_user =
                i32::try_from(policy.max_running_per_user.unwrap_or(0)).unwrap_or(i32::MAX);
            // A user with fewer due jobs than their quota leaves the batch short: go round
            // again (a few times at most) so that the others fill it.
            let mut cursor = after;
            for _ in 0..FAIR_ROUNDS {
                let short = limit - u32::try_from(out.jobs.len()).unwrap_or(limit).min(limit);
                if short == 0 {
                    break;
                }
                let round = sqlx::query_as::<_, ClaimedJob>(sql::claim::CLAIM_FAIR)
                    .bind(kinds)
                    .bind(i64::from(short))
                    .bind(request.worker.as_str())
                    .bind(request.lease.as_secs_f64())
                    .bind(request.now)
                    .bind(cursor)
                    .bind(per_user)
                    .fetch_all(&mut *conn)
                    .await;
                let round = match round {
                    Ok(round) => round,
                    Err(err) => {
                        out.error = Some(err.into());
                        break;
                    }
                };
                cursor = next_rotation(cursor, &round);
                let quota_bound = quota_reached(&round, short);
                out.jobs.extend(round);
                if !quota_bound {
                    break; // every user gave all it had: another round would find nothing
                }
            }
        }
    }
    out
}

/// Priority first, then due time (then id): the order FIFO claims return.
fn sort_fifo(jobs: &mut [ClaimedJob]) {
    jobs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });
}

/// Most fair-claim statements per claim (each one a full turn over the users found).
const FAIR_ROUNDS: usize = 4;

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

/// The text of the FIFO and fair claim statements, for tests that inspect their plans.
#[doc(hidden)]
#[must_use]
pub fn claim_statements() -> [(&'static str, &'static str); 2] {
    [("fifo", sql::claim::CLAIM_FIFO), ("fair", sql::claim::CLAIM_FAIR)]
}

/// The hot statements whose plans tests inspect: name, text, and whether it runs after
/// [`claim_begin`] (in its transaction) rather than on its own.
#[doc(hidden)]
#[must_use]
pub fn hot_statements() -> [(&'static str, &'static str, bool); 6] {
    [
        ("fifo", sql::claim::CLAIM_FIFO, true),
        ("fair", sql::claim::CLAIM_FAIR, true),
        ("named", sql::claim::CLAIM_NAMED, false),
        ("complete", sql::transition::COMPLETE_MANY, false),
        ("heartbeat", sql::lease::HEARTBEAT, false),
        ("rescue", sql::lease::RESCUE_EXPIRED, true),
    ]
}

/// What claims and the rescue send to begin their transaction (planner settings included).
#[doc(hidden)]
#[must_use]
pub fn claim_begin() -> &'static str {
    sql::claim::CLAIM_BEGIN
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn jobs_claimed_before_a_failing_part_are_returned_with_the_error() {
        let user = Uuid::now_v7();
        let parts = vec![(kinds(&["a"]), 2), (kinds(&["b"]), 2), (kinds(&["c"]), 2)];
        let mut after = Uuid::nil();

        let claimed = claim_parts(parts, 6, true, &mut after, |kinds, _, _| async move {
            if kinds[0] == "b" {
                failed(Error::Db(sqlx::Error::PoolTimedOut))
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
}
