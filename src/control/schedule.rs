//! Periodic jobs (`[schedules.<name>]`): when a schedule fires, and enqueueing a fire time once.
//!
//! Fire times are instants: the cron expression is evaluated in the schedule's time zone and
//! each match is resolved to UTC, so every replica computes the same fire times and the
//! database's key `(schedule, fire_time)` (migration 0014) decides which replica's insert
//! creates the job. Nothing here depends on when a replica wakes up.
//!
//! Daylight saving time (croner's rules, checked by the tests below): a fixed wall-clock time
//! that does not exist on a spring-forward day (02:30 in `America/New_York` on 2026-03-08)
//! fires once, at the first instant after the gap (03:00 EDT); a fixed time that happens twice
//! on a fall-back day (01:30 on 2026-11-01) fires once, at its first occurrence (EDT). Patterns
//! that repeat within the hour (`*/15 * * * *`) fire on the real clock through both.
//!
//! What is due at `now` ([`due`]): only the latest fire time after the last one handled, so a
//! replica that was down for a week enqueues one job, not a burst. With `catch_up = "skip"`
//! that latest fire time is enqueued only if it is at most [`SKIP_GRACE`] old. A schedule with
//! no fire yet starts from the moment the scheduler started: it never fires for the past.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Result;
use crate::config::{CatchUp, ScheduleSettings};
use crate::queue;

use super::sql::schedule as sql;

/// How late a fire time may be enqueued under `catch_up = "skip"`: a fire time older than this
/// when a scheduler first sees it was missed (downtime) and is skipped.
pub const SKIP_GRACE: TimeDelta = TimeDelta::minutes(1);

/// The first fire time strictly after `after`, or `None` if the pattern never matches again.
pub fn next_fire(schedule: &ScheduleSettings, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .cron
        .cron()
        .find_next_occurrence(&after.with_timezone(&schedule.time_zone), false)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// The latest fire time in `(after, now]`, if any.
pub fn latest_fire(
    schedule: &ScheduleSettings,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let latest = schedule
        .cron
        .cron()
        .find_previous_occurrence(&now.with_timezone(&schedule.time_zone), true)
        .ok()?
        .with_timezone(&Utc);
    (latest > after).then_some(latest)
}

/// What a schedule should do at `now`, given the last fire time handled (`after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// No fire time since `after`.
    Nothing,
    /// Enqueue this fire time (the latest due; earlier missed ones are never enqueued).
    Enqueue(DateTime<Utc>),
    /// This fire time is due but was missed by more than [`SKIP_GRACE`] (`catch_up = "skip"`).
    Skip(DateTime<Utc>),
}

/// What `schedule` should do at `now` (see the module's documentation).
pub fn due(schedule: &ScheduleSettings, after: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    match latest_fire(schedule, after, now) {
        None => Due::Nothing,
        Some(at) if schedule.catch_up == CatchUp::Skip && now - at > SKIP_GRACE => Due::Skip(at),
        Some(at) => Due::Enqueue(at),
    }
}

/// A schedule's latest recorded fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LastFire {
    /// The fire time (the scheduled instant).
    pub fire_time: DateTime<Utc>,
    /// The job it created (it may since have been pruned).
    pub job_id: Uuid,
    /// When the job was enqueued.
    pub created_at: DateTime<Utc>,
}

/// The schedules' fire records, over a pool whose role is (a member of) `studio_worker`: what
/// operators read and prune. Firing is [`Scheduler`]'s.
#[derive(Debug, Clone)]
pub struct Schedules {
    pool: PgPool,
}

impl Schedules {
    /// The fire records over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Schedules { pool }
    }

    /// [`last_fires`] over this pool.
    ///
    /// # Errors
    /// Database errors.
    pub async fn last_fires(&self, names: &[String]) -> Result<HashMap<String, LastFire>> {
        last_fires(&self.pool, names).await
    }

    /// [`prune_fires`] over this pool.
    ///
    /// # Errors
    /// Database errors.
    pub async fn prune_fires(&self, older_than: std::time::Duration, batch: i64) -> Result<u64> {
        prune_fires(&self.pool, older_than, batch).await
    }
}

/// The latest recorded fire of each of `names` that has one.
///
/// # Errors
/// Database errors.
pub async fn last_fires(pool: &PgPool, names: &[String]) -> Result<HashMap<String, LastFire>> {
    let rows: Vec<(String, DateTime<Utc>, Uuid, DateTime<Utc>)> = sqlx::query_as(sql::LAST_FIRES)
        .bind(names)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, fire_time, job_id, created_at)| {
            (
                name,
                LastFire {
                    fire_time,
                    job_id,
                    created_at,
                },
            )
        })
        .collect())
}

/// Enqueue `schedule`'s job for `fire_time` unless a job was already enqueued for it (by any
/// replica). Returns the new job's id, or `None` if the fire time was taken.
///
/// # Errors
/// [`queue::Error::UnknownUser`] when the owner is not in `auth.users`,
/// [`queue::Error::InvalidJob`] (or another refusal of the insert) when the job's values are
/// refused (nothing is recorded then); database errors.
pub async fn fire(
    pool: &PgPool,
    name: &str,
    schedule: &ScheduleSettings,
    fire_time: DateTime<Utc>,
) -> queue::Result<Option<Uuid>> {
    sqlx::query_scalar(sql::FIRE)
        .bind(name)
        .bind(fire_time)
        .bind(Uuid::now_v7())
        .bind(schedule.user)
        .bind(&schedule.kind)
        .bind(&schedule.input)
        .bind(schedule.priority)
        .bind(schedule.max_attempts)
        .fetch_optional(pool)
        .await
        .map_err(|e| queue::insert_error(e, &[schedule.user]))
}

/// Delete up to `batch` fire rows whose fire time is older than `older_than`, keeping each
/// schedule's latest (retention). Returns how many were deleted.
///
/// # Errors
/// Database errors.
pub async fn prune_fires(
    pool: &PgPool,
    older_than: std::time::Duration,
    batch: i64,
) -> Result<u64> {
    let deleted = sqlx::query(sql::PRUNE_FIRES)
        .bind(older_than.as_secs_f64())
        .bind(batch)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected())
}

/// What happened to one schedule in a [`Scheduler::tick`].
#[derive(Debug)]
pub enum Fired {
    /// This replica enqueued the job for the fire time.
    Enqueued {
        /// The schedule.
        schedule: String,
        /// The fire time.
        fire_time: DateTime<Utc>,
        /// The job.
        job_id: Uuid,
    },
    /// Another replica had already enqueued it.
    Taken {
        /// The schedule.
        schedule: String,
        /// The fire time.
        fire_time: DateTime<Utc>,
    },
    /// Missed by more than [`SKIP_GRACE`] under `catch_up = "skip"`: not enqueued.
    Skipped {
        /// The schedule.
        schedule: String,
        /// The fire time.
        fire_time: DateTime<Utc>,
    },
    /// The database refused the job (unknown owner, values out of range); not retried for this
    /// fire time.
    Refused {
        /// The schedule.
        schedule: String,
        /// The fire time.
        fire_time: DateTime<Utc>,
        /// Why.
        error: queue::Error,
    },
}

/// The result of a [`Scheduler::tick`].
#[derive(Debug)]
pub struct Tick {
    /// One entry per schedule that had a fire time due.
    pub fired: Vec<Fired>,
    /// Each schedule's latest recorded fire time after the tick (any replica's).
    pub last: HashMap<String, DateTime<Utc>>,
    /// The next fire time of any schedule after `now` (when to tick again).
    pub next: Option<DateTime<Utc>>,
}

/// The schedules of one replica, and the last fire time each has handled.
#[derive(Debug)]
pub struct Scheduler {
    schedules: Vec<(String, ScheduleSettings)>,
    /// A schedule with no recorded fire starts here: no fire times before the start.
    started: DateTime<Utc>,
    /// The latest fire time this replica handled per schedule (enqueued, taken, skipped or
    /// refused), so it is not tried again.
    handled: HashMap<String, DateTime<Utc>>,
}

impl Scheduler {
    /// A scheduler for `schedules` that started at `started`.
    pub fn new(schedules: Vec<(String, ScheduleSettings)>, started: DateTime<Utc>) -> Self {
        Scheduler {
            schedules,
            started,
            handled: HashMap::new(),
        }
    }

    /// The schedules.
    pub fn schedules(&self) -> &[(String, ScheduleSettings)] {
        &self.schedules
    }

    /// Enqueue what is due at `now` for every schedule (at most one fire time each).
    ///
    /// # Errors
    /// Database errors (the database unreachable, a permission missing); the tick can be
    /// repeated, and fire times already enqueued are not enqueued again.
    pub async fn tick(&mut self, pool: &PgPool, now: DateTime<Utc>) -> Result<Tick> {
        let names: Vec<String> = self.schedules.iter().map(|(n, _)| n.clone()).collect();
        let mut last: HashMap<String, DateTime<Utc>> = last_fires(pool, &names)
            .await?
            .into_iter()
            .map(|(name, fire)| (name, fire.fire_time))
            .collect();
        let mut fired = Vec::new();
        for (name, schedule) in &self.schedules {
            let after = [last.get(name), self.handled.get(name)]
                .into_iter()
                .flatten()
                .max()
                .copied()
                .unwrap_or(self.started);
            let outcome = match due(schedule, after, now) {
                Due::Nothing => continue,
                Due::Skip(fire_time) => Fired::Skipped {
                    schedule: name.clone(),
                    fire_time,
                },
                Due::Enqueue(fire_time) => match fire(pool, name, schedule, fire_time).await {
                    Ok(Some(job_id)) => {
                        last.insert(name.clone(), fire_time);
                        Fired::Enqueued {
                            schedule: name.clone(),
                            fire_time,
                            job_id,
                        }
                    }
                    Ok(None) => {
                        last.insert(name.clone(), fire_time);
                        Fired::Taken {
                            schedule: name.clone(),
                            fire_time,
                        }
                    }
                    Err(queue::Error::Db(err)) => return Err(err.into()),
                    Err(error) => Fired::Refused {
                        schedule: name.clone(),
                        fire_time,
                        error,
                    },
                },
            };
            let fire_time = match &outcome {
                Fired::Enqueued { fire_time, .. }
                | Fired::Taken { fire_time, .. }
                | Fired::Skipped { fire_time, .. }
                | Fired::Refused { fire_time, .. } => *fire_time,
            };
            self.handled.insert(name.clone(), fire_time);
            fired.push(outcome);
        }
        let next = self
            .schedules
            .iter()
            .filter_map(|(_, schedule)| next_fire(schedule, now))
            .min();
        Ok(Tick { fired, last, next })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use chrono_tz::America::New_York;

    use super::*;

    fn schedule(cron: &str, tz: chrono_tz::Tz, catch_up: CatchUp) -> ScheduleSettings {
        ScheduleSettings {
            cron: cron.parse().unwrap(),
            time_zone: tz,
            kind: "report".to_owned(),
            user: Uuid::nil(),
            input: serde_json::json!({}),
            catch_up,
            priority: 0,
            max_attempts: None,
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    /// Every fire time in `[from, to)`.
    fn fires(s: &ScheduleSettings, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = from - TimeDelta::seconds(1);
        while let Some(next) = next_fire(s, at) {
            if next >= to {
                break;
            }
            out.push(next);
            at = next;
        }
        out
    }

    #[test]
    fn five_fields_fire_on_the_minute_and_six_fields_on_the_second() {
        let minutely = schedule("*/15 * * * *", chrono_tz::UTC, CatchUp::Once);
        assert_eq!(
            next_fire(&minutely, utc(2026, 1, 1, 10, 7, 30)),
            Some(utc(2026, 1, 1, 10, 15, 0))
        );
        let secondly = schedule("*/10 * * * * *", chrono_tz::UTC, CatchUp::Once);
        assert_eq!(
            next_fire(&secondly, utc(2026, 1, 1, 10, 7, 30)),
            Some(utc(2026, 1, 1, 10, 7, 40))
        );
        assert_eq!(
            next_fire(&secondly, utc(2026, 1, 1, 10, 7, 40)),
            Some(utc(2026, 1, 1, 10, 7, 50)),
            "strictly after"
        );
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "0 0 0 1 1 * 2027",
            "every minute",
        ] {
            assert!(
                bad.parse::<crate::config::CronExpression>().is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fire_times_are_wall_clock_times_of_the_time_zone() {
        let s = schedule("0 9 * * *", New_York, CatchUp::Once);
        // 09:00 EST = 14:00 UTC in winter, 09:00 EDT = 13:00 UTC in summer.
        assert_eq!(
            next_fire(&s, utc(2026, 1, 15, 0, 0, 0)),
            Some(utc(2026, 1, 15, 14, 0, 0))
        );
        assert_eq!(
            next_fire(&s, utc(2026, 7, 15, 0, 0, 0)),
            Some(utc(2026, 7, 15, 13, 0, 0))
        );
    }

    #[test]
    fn a_time_in_the_spring_forward_gap_fires_once_that_day() {
        // 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
        let s = schedule("30 2 * * *", New_York, CatchUp::Once);
        let day = fires(&s, utc(2026, 3, 8, 5, 0, 0), utc(2026, 3, 9, 4, 0, 0));
        assert_eq!(day, vec![utc(2026, 3, 8, 7, 0, 0)], "once, at 03:00 EDT");
        // The days around it fire at 02:30 as usual.
        let around = fires(&s, utc(2026, 3, 7, 5, 0, 0), utc(2026, 3, 10, 4, 0, 0));
        assert_eq!(
            around,
            vec![
                utc(2026, 3, 7, 7, 30, 0),
                utc(2026, 3, 8, 7, 0, 0),
                utc(2026, 3, 9, 6, 30, 0)
            ]
        );
    }

    #[test]
    fn a_time_repeated_by_fall_back_fires_once_that_day() {
        // 2026-11-01 in New York: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice.
        let s = schedule("30 1 * * *", New_York, CatchUp::Once);
        let day = fires(&s, utc(2026, 11, 1, 4, 0, 0), utc(2026, 11, 2, 5, 0, 0));
        assert_eq!(day, vec![utc(2026, 11, 1, 5, 30, 0)], "once, at 01:30 EDT");
        let spring = schedule("30 2 * * *", New_York, CatchUp::Once);
        assert_eq!(
            fires(
                &spring,
                utc(2026, 11, 1, 4, 0, 0),
                utc(2026, 11, 2, 5, 0, 0)
            )
            .len(),
            1
        );
    }

    #[test]
    fn the_previous_fire_agrees_with_the_next_across_dst() {
        for (cron, from, to) in [
            (
                "30 1 * * *",
                utc(2026, 10, 30, 0, 0, 0),
                utc(2026, 11, 3, 0, 0, 0),
            ),
            (
                "30 2 * * *",
                utc(2026, 3, 6, 0, 0, 0),
                utc(2026, 3, 10, 0, 0, 0),
            ),
            (
                "*/20 * * * *",
                utc(2026, 11, 1, 4, 0, 0),
                utc(2026, 11, 1, 8, 0, 0),
            ),
            (
                "*/20 * * * *",
                utc(2026, 3, 8, 5, 0, 0),
                utc(2026, 3, 8, 9, 0, 0),
            ),
        ] {
            let s = schedule(cron, New_York, CatchUp::Once);
            let forward = fires(&s, from, to);
            let from = from - TimeDelta::seconds(1);
            for pair in forward.windows(2) {
                // Just before the next fire, the latest due one is the previous fire.
                let before_next = pair[1] - TimeDelta::seconds(1);
                assert_eq!(latest_fire(&s, from, before_next), Some(pair[0]), "{cron}");
                assert_eq!(latest_fire(&s, from, pair[1]), Some(pair[1]), "{cron}");
            }
        }
    }

    #[test]
    fn repeating_patterns_follow_the_real_clock_through_fall_back() {
        // 04:00-08:00 UTC spans the repeated hour: 4 real hours, 12 fire times.
        let s = schedule("*/20 * * * *", New_York, CatchUp::Once);
        let all = fires(&s, utc(2026, 11, 1, 4, 0, 0), utc(2026, 11, 1, 8, 0, 0));
        assert_eq!(all.len(), 12, "{all:?}");
    }

    #[test]
    fn after_downtime_only_the_latest_missed_fire_is_due() {
        let s = schedule("0 * * * *", chrono_tz::UTC, CatchUp::Once);
        let last = utc(2026, 1, 1, 0, 0, 0);
        let now = utc(2026, 1, 8, 12, 34, 56);
        assert_eq!(due(&s, last, now), Due::Enqueue(utc(2026, 1, 8, 12, 0, 0)));
        // Once enqueued, nothing more until the next fire time.
        let enqueued = utc(2026, 1, 8, 12, 0, 0);
        assert_eq!(due(&s, enqueued, now), Due::Nothing);
        assert_eq!(
            due(&s, enqueued, utc(2026, 1, 8, 13, 0, 0)),
            Due::Enqueue(utc(2026, 1, 8, 13, 0, 0))
        );
    }

    #[test]
    fn skip_enqueues_only_fire_times_within_the_grace() {
        let s = schedule("0 * * * *", chrono_tz::UTC, CatchUp::Skip);
        let last = utc(2026, 1, 1, 0, 0, 0);
        assert_eq!(
            due(&s, last, utc(2026, 1, 8, 12, 34, 56)),
            Due::Skip(utc(2026, 1, 8, 12, 0, 0))
        );
        assert_eq!(
            due(&s, last, utc(2026, 1, 8, 12, 0, 30)),
            Due::Enqueue(utc(2026, 1, 8, 12, 0, 0))
        );
        assert_eq!(due(&s, last, last), Due::Nothing);
    }
}
