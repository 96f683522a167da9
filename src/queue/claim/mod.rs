//! Claiming: which due jobs a worker takes, in what order, under which limits.
//!
//! - Order: FIFO (priority, then due time) or fair (round robin over users with due work,
//!   priority and due time within a user); see [`ClaimOrder`].
//! - Limits: a cap on each user's running jobs, caps on each kind's running jobs and start
//!   rates per kind ([`rate`]), counted cluster-wide. A claim that enforces a cap or a
//!   rate runs in a transaction that first takes one advisory lock, so that concurrent claimers
//!   (any number of replicas) read counts and starts that include each other's claims; claims
//!   without caps or rates never wait for each other.
//! - Split: [`Queue::claim_planned`] is the one place that splits a claim, by local room per
//!   kind, by cluster caps, and in fair order by the user cursor.
//!
//! What a claim does is decided in [`plan`], without the database (and unit-tested there): the
//! parts, each part's share, the statement and its parameters, the fair rounds. This file runs
//! what the plan says: the statements, in their transactions.
//!
//! Every claim is `FOR UPDATE SKIP LOCKED`, commits before any job starts, and takes a lease.
//! Its statements run in one transaction begun by [`sql::claim::CLAIM_BEGIN`], whose planner
//! settings keep every claim an ordered index walk on tables without fresh statistics.

mod plan;
pub(crate) mod rate;

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use self::plan::{
    Budget, FairRounds, Statement, claim_parts, limited_parts, limited_room, room_parts, sort_fifo,
};
use self::rate::ClaimRates;
use super::{ClaimRequest, ClaimedJob, Queue, Result, sql};

pub use self::plan::{ClaimCursor, ClaimOrder, ClaimPolicy, Claimed, next_rotation};

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
        let mut cursor = ClaimCursor::starting(policy.order);
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
                Err(err) => Claimed::failed(err),
            };
        }
        match self
            .claim_capped(request, policy, kinds, limit, after)
            .await
        {
            Ok(claimed) => claimed,
            Err(err) => Claimed::failed(err),
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
        let mut tx: Transaction<'_, Postgres> =
            self.pool.begin_with(sql::claim::CLAIM_BEGIN).await?;
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
        let mut tx: Transaction<'_, Postgres> =
            self.pool.begin_with(sql::claim::CLAIM_BEGIN).await?;
        sqlx::query(sql::claim::CAPPED_CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        let capped = policy.capped_kinds(kinds);
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
        let room = limited_room(&policy.max_running_by_kind, &running, kinds, |kind| {
            rates.room(kind)
        });
        let mut out = Claimed::default();
        let mut budget = Budget::new(limit);
        for (kinds, room) in limited_parts(kinds, limit, &room) {
            let share = budget.share(room);
            let jobs = if share == 0 {
                Vec::new()
            } else {
                let part = claim_ordered(&mut tx, request, policy, &kinds, share, after).await;
                if let Some(err) = part.error {
                    return Err(err); // rolled back: nothing of this part was claimed
                }
                part.jobs
            };
            let (taken, cut_short) = budget.spend(share, jobs.len());
            out.jobs.extend(jobs);
            // A part of one rate-limited kind: record its starts, and whether the rate held it
            // back (it took all it was allowed, with room for more here).
            if let [kind] = kinds.as_slice()
                && rates.limits(kind)
            {
                let wait = rates.started(&mut tx, kind, taken, cut_short).await?;
                out.rates.push((kind.clone(), wait));
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// One part's statement (a few in fair order, when users hold back the batch), continuing the
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
    let statement = policy.statement();
    match statement {
        Statement::Fifo => {
            let claimed = sqlx::query_as::<_, ClaimedJob>(statement.sql())
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
        Statement::Fair { per_user } => {
            let mut rounds = FairRounds::new(limit, after);
            while let Some((short, after)) = rounds.next_round() {
                let round = sqlx::query_as::<_, ClaimedJob>(statement.sql())
                    .bind(kinds)
                    .bind(i64::from(short))
                    .bind(request.worker.as_str())
                    .bind(request.lease.as_secs_f64())
                    .bind(request.now)
                    .bind(after)
                    .bind(per_user)
                    .fetch_all(&mut *conn)
                    .await;
                match round {
                    Ok(round) => {
                        rounds.took(&round);
                        out.jobs.extend(round);
                    }
                    Err(err) => {
                        out.error = Some(err.into());
                        break;
                    }
                }
            }
        }
    }
    out
}

/// The text of the FIFO and fair claim statements, for tests that inspect their plans.
#[doc(hidden)]
#[must_use]
pub fn claim_statements() -> [(&'static str, &'static str); 2] {
    [
        ("fifo", sql::claim::CLAIM_FIFO),
        ("fair", sql::claim::CLAIM_FAIR),
    ]
}

/// The hot statements whose plans tests inspect: name, text, and whether it runs after
/// [`claim_begin`] (in its transaction) rather than on its own.
#[doc(hidden)]
#[must_use]
pub fn hot_statements() -> [(&'static str, &'static str, bool); 8] {
    [
        ("fifo", sql::claim::CLAIM_FIFO, true),
        ("fair", sql::claim::CLAIM_FAIR, true),
        ("named", sql::claim::CLAIM_NAMED, false),
        ("complete", sql::transition::COMPLETE_MANY, false),
        ("heartbeat", sql::lease::HEARTBEAT, false),
        ("progress", sql::transition::PROGRESS, false),
        ("fail", sql::transition::FAIL, false),
        ("rescue", sql::lease::RESCUE_EXPIRED, true),
    ]
}

/// What claims and the rescue send to begin their transaction (planner settings included).
#[doc(hidden)]
#[must_use]
pub fn claim_begin() -> &'static str {
    sql::claim::CLAIM_BEGIN
}
