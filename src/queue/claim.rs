//! Claiming: which due jobs a worker takes, in what order, under which limits.
//!
//! - Order: FIFO (priority, then due time) or fair (round robin over users with due work,
//!   priority and due time within a user); see [`ClaimOrder`].
//! - Limits: a cap on each user's running jobs and caps on each kind's running jobs, counted
//!   cluster-wide. A claim that enforces a cap runs in a transaction that first takes one
//!   advisory lock, so that concurrent claimers (any number of replicas) read counts that include
//!   each other's claims; claims without caps never wait for each other.
//!
//! Every claim is `FOR UPDATE SKIP LOCKED`, commits before any job starts, and takes a lease.

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{ClaimRequest, ClaimedJob, Queue, Result, sql};

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

/// Limits applied by a claim, on top of the request's batch size.
#[derive(Debug, Clone, Default)]
pub struct ClaimPolicy {
    /// FIFO or fair.
    pub order: ClaimOrder,
    /// At most this many running jobs per user, across every worker (fair order only).
    pub max_running_per_user: Option<u32>,
    /// At most this many running jobs of a kind, across every worker.
    pub max_running_by_kind: HashMap<String, u32>,
}

impl ClaimPolicy {
    /// Whether claims of `kinds` enforce a running-job cap.
    #[must_use]
    pub fn capped(&self, kinds: &[String]) -> bool {
        self.max_running_per_user.is_some()
            || kinds
                .iter()
                .any(|k| self.max_running_by_kind.contains_key(k))
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
    /// Applies no caps: callers with running-job caps use [`Queue::claim_with`].
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
        let mut jobs: Vec<ClaimedJob> = sqlx::query_as(sql::CLAIM_NAMED)
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

    /// Claim as [`Queue::claim`], in `policy`'s order and within its caps. In fair order the
    /// jobs come back in claim order (turn by turn).
    ///
    /// # Errors
    /// Database errors only.
    pub async fn claim_with(
        &self,
        request: &ClaimRequest<'_>,
        policy: &ClaimPolicy,
    ) -> Result<Vec<ClaimedJob>> {
        if request.limit == 0 || request.kinds.is_empty() {
            return Ok(Vec::new());
        }
        if !policy.capped(request.kinds) {
            let mut conn = self.pool.acquire().await?;
            return claim_ordered(
                &mut conn,
                request,
                policy,
                request.kinds,
                request.limit,
                true,
            )
            .await;
        }

        let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
        sqlx::query(sql::CAPPED_CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        let capped: Vec<String> = request
            .kinds
            .iter()
            .filter(|k| policy.max_running_by_kind.contains_key(*k))
            .cloned()
            .collect();
        let running: HashMap<String, i64> = if capped.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as::<_, (String, i64)>(sql::RUNNING_BY_KIND)
                .bind(&capped)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect()
        };
        let mut jobs = Vec::new();
        let mut left = request.limit;
        // Uncapped kinds together, then each capped kind within what its cap leaves.
        let free: Vec<String> = request
            .kinds
            .iter()
            .filter(|k| !capped.contains(k))
            .cloned()
            .collect();
        let mut groups: Vec<(Vec<String>, u32)> = Vec::new();
        if !free.is_empty() {
            groups.push((free, left));
        }
        for kind in capped {
            let cap = i64::from(policy.max_running_by_kind[&kind]);
            let room =
                u32::try_from((cap - running.get(&kind).copied().unwrap_or(0)).max(0)).unwrap_or(0);
            groups.push((vec![kind], room));
        }
        for (kinds, room) in groups {
            let limit = room.min(left);
            if limit == 0 {
                continue;
            }
            let claimed = claim_ordered(&mut tx, request, policy, &kinds, limit, false).await?;
            left -= u32::try_from(claimed.len()).unwrap_or(u32::MAX).min(left);
            jobs.extend(claimed);
        }
        tx.commit().await?;
        Ok(jobs)
    }
}

/// One claim statement (a few in fair order, when users hold back the batch). With
/// `autocommit`, each statement committed on its own: if a later one fails, the jobs already
/// claimed are returned rather than stranded. Inside a transaction every error is returned (the
/// transaction is rolled back, so nothing was claimed).
async fn claim_ordered(
    conn: &mut sqlx::PgConnection,
    request: &ClaimRequest<'_>,
    policy: &ClaimPolicy,
    kinds: &[String],
    limit: u32,
    autocommit: bool,
) -> Result<Vec<ClaimedJob>> {
    match policy.order {
        ClaimOrder::Fifo => {
            let mut jobs: Vec<ClaimedJob> = sqlx::query_as(sql::CLAIM_FIFO)
                .bind(kinds)
                .bind(i64::from(limit))
                .bind(request.worker.as_str())
                .bind(request.lease.as_secs_f64())
                .bind(request.now)
                .fetch_all(&mut *conn)
                .await?;
            sort_fifo(&mut jobs);
            Ok(jobs)
        }
        ClaimOrder::Fair { after } => {
            let per_user =
                i32::try_from(policy.max_running_per_user.unwrap_or(0)).unwrap_or(i32::MAX);
            let fair = |after: Uuid, limit: u32| {
                sqlx::query_as::<_, ClaimedJob>(sql::CLAIM_FAIR)
                    .bind(kinds)
                    .bind(i64::from(limit))
                    .bind(request.worker.as_str())
                    .bind(request.lease.as_secs_f64())
                    .bind(request.now)
                    .bind(after)
                    .bind(per_user)
            };
            // A user with fewer due jobs than their quota leaves the batch short: go round
            // again (a few times at most) so that the others fill it.
            let mut jobs: Vec<ClaimedJob> = Vec::new();
            let mut cursor = after;
            for _ in 0..FAIR_ROUNDS {
                let short = limit - u32::try_from(jobs.len()).unwrap_or(limit).min(limit);
                if short == 0 {
                    break;
                }
                let round = match fair(cursor, short).fetch_all(&mut *conn).await {
                    Ok(round) => round,
                    Err(err) if autocommit && !jobs.is_empty() => {
                        tracing::warn!(error.message = %err, claimed = jobs.len(), "claim round failed; keeping the jobs already claimed");
                        break;
                    }
                    Err(err) => return Err(err.into()),
                };
                cursor = next_rotation(cursor, &round);
                let quota_bound = quota_reached(&round, short);
                jobs.extend(round);
                if !quota_bound {
                    break; // every user gave all it had: another round would find nothing
                }
            }
            Ok(jobs)
        }
    }
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
    [("fifo", sql::CLAIM_FIFO), ("fair", sql::CLAIM_FAIR)]
}
