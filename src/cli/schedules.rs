//! `schedules`: each configured schedule with its last fire (recorded in the database by
//! whichever replica enqueued it) and its next fire time (computed from the configuration).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::ops::{print_json, table, time};
use crate::config::Settings;
use crate::control::schedule::{LastFire, last_fires, next_fire};
use crate::db;

/// One row of `schedules`.
#[derive(Debug, Serialize)]
struct ScheduleRow<'a> {
    name: &'a str,
    cron: &'a str,
    time_zone: &'a str,
    kind: &'a str,
    user: Uuid,
    catch_up: &'static str,
    last_fire: Option<LastFire>,
    next_fire: Option<DateTime<Utc>>,
}

/// `schedules [--json]`
pub(super) async fn list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let names: Vec<String> = settings.schedules.keys().cloned().collect();
    let last = if names.is_empty() {
        Default::default()
    } else {
        let pool = db::connect(&settings.database, Duration::ZERO).await?;
        let last = last_fires(&pool, &names).await?;
        pool.close().await;
        last
    };
    let now = Utc::now();
    let rows: Vec<ScheduleRow<'_>> = settings
        .schedules
        .iter()
        .map(|(name, schedule)| ScheduleRow {
            name,
            cron: schedule.cron.as_str(),
            time_zone: schedule.time_zone.name(),
            kind: &schedule.kind,
            user: schedule.user,
            catch_up: schedule.catch_up.as_str(),
            last_fire: last.get(name).copied(),
            next_fire: next_fire(schedule, now),
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("no schedules configured (add a [schedules.<name>] section)");
        return Ok(());
    }
    let mut out = table(&[
        "name",
        "cron",
        "time zone",
        "kind",
        "owner",
        "catch-up",
        "last fire (UTC)",
        "last job",
        "next fire (UTC)",
    ]);
    for row in &rows {
        out.add_row(vec![
            row.name.to_owned(),
            row.cron.to_owned(),
            row.time_zone.to_owned(),
            row.kind.to_owned(),
            row.user.to_string(),
            row.catch_up.to_owned(),
            time(row.last_fire.map(|f| f.fire_time)),
            row.last_fire
                .map(|f| f.job_id.to_string())
                .unwrap_or_default(),
            time(row.next_fire),
        ]);
    }
    println!("{}", super::ops::whole_words(&mut out));
    Ok(())
}
