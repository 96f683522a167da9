//! Schedules (migration 0014): one job per schedule and fire time, whichever replicas tick;
//! catch-up after downtime; the fires table is operators' only. Time is injected (`tick(now)`),
//! so no test waits for a real minute.

use chrono::{DateTime, SubsecRound, TimeDelta, TimeZone, Utc};
use serde_json::json;
use sqlx::PgPool;
use studio_worker::config::{CatchUp, ScheduleSettings};
use studio_worker::control::schedule::{Fired, Scheduler, prune_fires};
use studio_worker::queue::Error;
use uuid::Uuid;

use crate::harness::{as_role, as_user, create_user, declare_kinds, sqlstate, worker_pool};

fn schedule(cron: &str, user: Uuid, catch_up: CatchUp) -> ScheduleSettings {
    ScheduleSettings {
        cron: cron.parse().unwrap(),
        time_zone: chrono_tz::UTC,
        kind: "report".to_owned(),
        user,
        input: json!({ "scope": "daily" }),
        catch_up,
        priority: 5,
        max_attempts: Some(2),
    }
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

async fn fire_rows(pool: &PgPool, name: &str) -> Vec<(DateTime<Utc>, Uuid)> {
    sqlx::query_as(
        "select fire_time, job_id from public.studio_schedule_fires where schedule = $1 order by fire_time",
    )
    .bind(name)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn scheduled_jobs(pool: &PgPool) -> Vec<(Uuid, Uuid, String, serde_json::Value, i16, i32)> {
    sqlx::query_as(
        "select id, user_id, kind, input, priority, max_attempts from public.studio_jobs order by id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn enqueued(fired: &[Fired]) -> Vec<DateTime<Utc>> {
    fired
        .iter()
        .filter_map(|f| match f {
            Fired::Enqueued { fire_time, .. } => Some(*fire_time),
            _ => None,
        })
        .collect()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn three_replicas_enqueue_each_fire_time_exactly_once(pool: PgPool) {
    // Arrange: three replicas (three pools as the worker's role), a per-second schedule.
    let user = create_user(&pool).await;
    let start = at(2026, 5, 4, 10, 0, 0);
    let every_second = || {
        vec![(
            "tick".to_owned(),
            schedule("* * * * * *", user, CatchUp::Once),
        )]
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push((
            worker_pool(&pool).await,
            Scheduler::new(every_second(), start),
        ));
    }
    let [(p0, s0), (p1, s1), (p2, s2)] = &mut replicas[..] else {
        unreachable!()
    };

    // Act: 60 fire times; each replica wakes a little later than the fire time, by its own
    // amount, and all three race on every one.
    let mut by_replica = [0usize; 3];
    for second in 1..=60 {
        let fire = start + TimeDelta::seconds(second);
        let (a, b, c) = tokio::join!(
            s0.tick(p0, fire + TimeDelta::milliseconds(3)),
            s1.tick(p1, fire + TimeDelta::milliseconds(250)),
            s2.tick(p2, fire + TimeDelta::milliseconds(900)),
        );
        for (i, tick) in [a, b, c].into_iter().enumerate() {
            let tick = tick.unwrap();
            by_replica[i] += enqueued(&tick.fired).len();
            assert_eq!(tick.next, Some(fire + TimeDelta::seconds(1)));
        }
    }

    // Assert: every fire time once, no gap, each with its own job carrying the schedule's values.
    let rows = fire_rows(&pool, "tick").await;
    let expected: Vec<DateTime<Utc>> = (1..=60).map(|s| start + TimeDelta::seconds(s)).collect();
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), expected);
    assert_eq!(by_replica.iter().sum::<usize>(), 60, "{by_replica:?}");
    let jobs = scheduled_jobs(&pool).await;
    assert_eq!(jobs.len(), 60);
    let mut job_ids: Vec<Uuid> = jobs.iter().map(|j| j.0).collect();
    let mut fired_ids: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
    job_ids.sort();
    fired_ids.sort();
    assert_eq!(job_ids, fired_ids);
    assert!(
        jobs.iter()
            .all(|(_, owner, kind, input, priority, attempts)| {
                *owner == user
                    && kind == "report"
                    && *input == json!({ "scope": "daily" })
                    && *priority == 5
                    && *attempts == 2
            })
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_new_schedule_does_not_fire_for_the_past(pool: PgPool) {
    let user = create_user(&pool).await;
    let worker = worker_pool(&pool).await;
    let started = at(2026, 1, 8, 12, 34, 56);
    let mut scheduler = Scheduler::new(
        vec![(
            "hourly".to_owned(),
            schedule("0 * * * *", user, CatchUp::Once),
        )],
        started,
    );

    let tick = scheduler.tick(&worker, started).await.unwrap();

    assert!(tick.fired.is_empty(), "{:?}", tick.fired);
    assert_eq!(tick.next, Some(at(2026, 1, 8, 13, 0, 0)));
    let tick = scheduler
        .tick(&worker, at(2026, 1, 8, 13, 0, 1))
        .await
        .unwrap();
    assert_eq!(enqueued(&tick.fired), vec![at(2026, 1, 8, 13, 0, 0)]);
}

/// One replica fires 01:00 on Jan 1, then everything is down for a week.
async fn fired_before_downtime(pool: &PgPool, worker: &PgPool, catch_up: CatchUp) -> Uuid {
    let user = create_user(pool).await;
    let mut before = Scheduler::new(
        vec![("hourly".to_owned(), schedule("0 * * * *", user, catch_up))],
        at(2026, 1, 1, 0, 30, 0),
    );
    let tick = before.tick(worker, at(2026, 1, 1, 1, 0, 0)).await.unwrap();
    assert_eq!(enqueued(&tick.fired), vec![at(2026, 1, 1, 1, 0, 0)]);
    user
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn after_downtime_catch_up_once_enqueues_only_the_latest_missed_fire(pool: PgPool) {
    // Arrange
    let worker = worker_pool(&pool).await;
    let user = fired_before_downtime(&pool, &worker, CatchUp::Once).await;
    let restarted = at(2026, 1, 8, 12, 34, 56);
    let mut after = Scheduler::new(
        vec![(
            "hourly".to_owned(),
            schedule("0 * * * *", user, CatchUp::Once),
        )],
        restarted,
    );

    // Act: the restarted replica's first tick, and one more before the next fire time.
    let first = after.tick(&worker, restarted).await.unwrap();
    let second = after
        .tick(&worker, restarted + TimeDelta::minutes(5))
        .await
        .unwrap();

    // Assert: 12:00 on Jan 8 once; none of the ~180 fire times before it.
    assert_eq!(enqueued(&first.fired), vec![at(2026, 1, 8, 12, 0, 0)]);
    assert!(second.fired.is_empty(), "{:?}", second.fired);
    let rows = fire_rows(&pool, "hourly").await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![at(2026, 1, 1, 1, 0, 0), at(2026, 1, 8, 12, 0, 0)]
    );
    assert_eq!(scheduled_jobs(&pool).await.len(), 2);
    assert_eq!(first.last["hourly"], at(2026, 1, 8, 12, 0, 0));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn after_downtime_catch_up_skip_enqueues_none_of_the_missed_fires(pool: PgPool) {
    let worker = worker_pool(&pool).await;
    let user = fired_before_downtime(&pool, &worker, CatchUp::Skip).await;
    let restarted = at(2026, 1, 8, 12, 34, 56);
    let mut after = Scheduler::new(
        vec![(
            "hourly".to_owned(),
            schedule("0 * * * *", user, CatchUp::Skip),
        )],
        restarted,
    );

    let first = after.tick(&worker, restarted).await.unwrap();
    let next = after.tick(&worker, at(2026, 1, 8, 13, 0, 2)).await.unwrap();

    assert!(
        matches!(&first.fired[..], [Fired::Skipped { fire_time, .. }] if *fire_time == at(2026, 1, 8, 12, 0, 0)),
        "{:?}",
        first.fired
    );
    assert_eq!(
        enqueued(&next.fired),
        vec![at(2026, 1, 8, 13, 0, 0)],
        "the next regular one runs"
    );
    assert_eq!(scheduled_jobs(&pool).await.len(), 2);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_pruned_jobs_fire_time_is_not_enqueued_again(pool: PgPool) {
    let user = create_user(&pool).await;
    let worker = worker_pool(&pool).await;
    let hourly = || {
        vec![(
            "hourly".to_owned(),
            schedule("0 * * * *", user, CatchUp::Once),
        )]
    };
    let mut first = Scheduler::new(hourly(), at(2026, 1, 1, 0, 30, 0));
    first.tick(&worker, at(2026, 1, 1, 1, 0, 0)).await.unwrap();
    sqlx::query("delete from public.studio_jobs")
        .execute(&pool)
        .await
        .unwrap();

    // A replica that started before the fire time and wakes after the job is gone.
    let mut late = Scheduler::new(hourly(), at(2026, 1, 1, 0, 45, 0));
    let tick = late.tick(&worker, at(2026, 1, 1, 1, 0, 30)).await.unwrap();

    assert!(tick.fired.is_empty(), "{:?}", tick.fired);
    assert!(scheduled_jobs(&pool).await.is_empty());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn an_unknown_owner_is_refused_and_records_no_fire(pool: PgPool) {
    declare_kinds(&pool, &["report"]).await;
    let worker = worker_pool(&pool).await;
    let nobody = Uuid::new_v4();
    let mut scheduler = Scheduler::new(
        vec![(
            "orphan".to_owned(),
            schedule("0 * * * *", nobody, CatchUp::Once),
        )],
        at(2026, 1, 1, 0, 30, 0),
    );

    let tick = scheduler
        .tick(&worker, at(2026, 1, 1, 1, 0, 0))
        .await
        .unwrap();
    let again = scheduler
        .tick(&worker, at(2026, 1, 1, 1, 0, 5))
        .await
        .unwrap();

    assert!(
        matches!(&tick.fired[..], [Fired::Refused { error: Error::UnknownUser(Some(u)), .. }] if *u == nobody),
        "{:?}",
        tick.fired
    );
    assert!(again.fired.is_empty(), "not retried for the same fire time");
    assert!(fire_rows(&pool, "orphan").await.is_empty());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn users_cannot_read_or_write_the_fires_table(pool: PgPool) {
    let user = create_user(&pool).await;
    let worker = worker_pool(&pool).await;
    let mut scheduler = Scheduler::new(
        vec![(
            "hourly".to_owned(),
            schedule("0 * * * *", user, CatchUp::Once),
        )],
        at(2026, 1, 1, 0, 30, 0),
    );
    scheduler
        .tick(&worker, at(2026, 1, 1, 1, 0, 0))
        .await
        .unwrap();

    let mut tx = as_user(&pool, user).await;
    let read = sqlx::query("select schedule from public.studio_schedule_fires")
        .fetch_all(&mut *tx)
        .await;
    assert_eq!(sqlstate(read), "42501");
    drop(tx);
    let mut tx = as_user(&pool, user).await;
    let write = sqlx::query(
        "insert into public.studio_schedule_fires (schedule, fire_time, job_id) values ('hourly', now(), gen_random_uuid())",
    )
    .execute(&mut *tx)
    .await;
    assert_eq!(sqlstate(write), "42501");
    drop(tx);
    let mut tx = as_role(&pool, "anon").await;
    let read = sqlx::query("select schedule from public.studio_schedule_fires")
        .fetch_all(&mut *tx)
        .await;
    assert_eq!(sqlstate(read), "42501");
    drop(tx);
    // The user still sees the job itself, as their own.
    let mut tx = as_user(&pool, user).await;
    let own: i64 = sqlx::query_scalar("select count(*) from public.studio_jobs")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(own, 1);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn pruning_fires_keeps_each_schedules_latest_and_recent_ones(pool: PgPool) {
    // Arrange: "daily" fired long ago three times, "yearly" once, "often" long ago and just now.
    let now = Utc::now().trunc_subsecs(0);
    let long_ago = now - TimeDelta::days(90);
    let recent = now - TimeDelta::minutes(5);
    for (schedule, fire_time) in [
        ("daily", long_ago),
        ("daily", long_ago + TimeDelta::days(1)),
        ("daily", long_ago + TimeDelta::days(2)),
        ("yearly", long_ago),
        ("often", long_ago),
        ("often", recent),
    ] {
        sqlx::query(
            "insert into public.studio_schedule_fires (schedule, fire_time, job_id) values ($1, $2, gen_random_uuid())",
        )
        .bind(schedule)
        .bind(fire_time)
        .execute(&pool)
        .await
        .unwrap();
    }
    let worker = worker_pool(&pool).await;

    // Act: as the worker's role, in batches of one.
    let mut deleted = 0;
    loop {
        let batch = prune_fires(&worker, std::time::Duration::from_secs(30 * 86_400), 1)
            .await
            .unwrap();
        deleted += batch;
        if batch == 0 {
            break;
        }
    }

    // Assert
    assert_eq!(deleted, 3);
    let left = |name: &'static str| {
        let pool = pool.clone();
        async move { fire_rows(&pool, name).await.len() }
    };
    assert_eq!(left("daily").await, 1);
    assert_eq!(
        fire_rows(&pool, "daily").await[0].0,
        long_ago + TimeDelta::days(2)
    );
    assert_eq!(
        left("yearly").await,
        1,
        "a schedule's only fire is its latest"
    );
    assert_eq!(left("often").await, 1);
    assert_eq!(fire_rows(&pool, "often").await[0].0, recent);
}
