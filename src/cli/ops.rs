//! Operator commands: list, show, retry and cancel jobs, pause, resume, declare and forget
//! kinds, queue statistics, pruning. Output is a table for people or JSON (`--json`) for
//! scripts. Every change goes through the queue's
//! guarded statements, so the history stays complete.

use std::time::Duration;

use chrono::{DateTime, Utc};
use comfy_table::{
    ColumnConstraint, ContentArrangement, Table, Width, presets::UTF8_FULL_CONDENSED,
};
use serde::Serialize;

use super::{JobsCommand, KindsArgs, KindsCommand};
use crate::config::Settings;
use crate::control::Control;
use crate::control::audit::{Audit, NewAction, Source};
use crate::control::pause::KindState;
use crate::control::why::{WhyPolicy, why};
use crate::db;
use crate::limits::RateLimit;
use crate::queue::{Job, JobFilter, Queue, RedriveFilter};

async fn queue(settings: &Settings) -> anyhow::Result<Queue> {
    Ok(Queue::new(
        db::connect(&settings.database, Duration::ZERO).await?,
    ))
}

pub(super) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The width tables must fit: `COLUMNS` when set, else the terminal's, else none (output to a
/// pipe or file is not cut; scripts should use `--json`).
fn terminal_width() -> Option<u16> {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|c| *c >= 20)
    {
        return Some(columns);
    }
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .map(|size| size.ws_col)
        .filter(|c| *c >= 20)
}

pub(super) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    if let Some(width) = terminal_width() {
        // Long cells wrap inside their column instead of the terminal wrapping whole lines.
        table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(width);
    }
    table
}

/// Words up to this long are kept whole in a table cell when the terminal has room
/// (`succeeded`, a kind, a time); longer ones (a URL) may be broken.
const WHOLE_WORD: usize = 24;

/// Keep words whole in a table that must fit the terminal: each column gets at least the width
/// of its longest word (header included, up to [`WHOLE_WORD`]); when those do not all fit, the
/// widest give way first, so short words (`succeeded`) stay whole. Columns with a constraint
/// of their own (the id, `ContentWidth`) keep it. Call it once the rows are in, before printing.
pub(super) fn whole_words(table: &mut Table) -> &Table {
    let Some(width) = terminal_width() else {
        return table;
    };
    let mut words: Vec<usize> = Vec::new();
    let mut contents: Vec<usize> = Vec::new();
    for row in table.header().into_iter().chain(table.row_iter()) {
        for (i, cell) in row.cell_iter().enumerate() {
            let text = cell.content();
            let longest_word = text.split_whitespace().map(|w| w.chars().count()).max();
            let longest_line = text.lines().map(|l| l.chars().count()).max();
            if words.len() <= i {
                words.resize(i + 1, 0);
                contents.resize(i + 1, 0);
            }
            words[i] = words[i].max(longest_word.unwrap_or(0).min(WHOLE_WORD));
            contents[i] = contents[i].max(longest_line.unwrap_or(0));
        }
    }
    // Borders and padding: 3 per column and 1; columns with their own constraint take their
    // content's width.
    let free: Vec<bool> = table
        .column_iter()
        .map(|c| c.constraint().is_none())
        .collect();
    let mut room = usize::from(width).saturating_sub(3 * words.len() + 1);
    for (i, fixed) in free.iter().enumerate() {
        if !fixed {
            room = room.saturating_sub(contents.get(i).copied().unwrap_or(0));
        }
    }
    let mut bounds: Vec<usize> = words
        .iter()
        .zip(&free)
        .map(|(w, free)| if *free { *w } else { 0 })
        .collect();
    while bounds.iter().sum::<usize>() > room {
        let Some(widest) = bounds.iter_mut().max() else {
            break;
        };
        if *widest <= 1 {
            break;
        }
        *widest -= 1;
    }
    for ((column, bound), free) in table.column_iter_mut().zip(bounds).zip(free) {
        if free {
            let bound = u16::try_from(bound).unwrap_or(u16::MAX);
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(bound)));
        }
    }
    table
}

/// Whether tables should use their narrow layout: a terminal under 100 columns.
fn narrow() -> bool {
    terminal_width().is_some_and(|w| w < 100)
}

/// What a job's table row says about its outcome: the error if there is one, else the result.
fn outcome(job: &Job) -> String {
    match (&job.error, &job.result) {
        (Some(error), _) => short(Some(error), 120),
        (None, Some(result)) if !result.is_null() => short(Some(&result.to_string()), 120),
        _ => String::new(),
    }
}

fn progress(job: &Job) -> String {
    match &job.progress_message {
        Some(message) if !message.is_empty() => {
            format!("{}% {}", job.progress, short(Some(message), 40))
        }
        _ => format!("{}%", job.progress),
    }
}

pub(super) fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn short(text: Option<&str>, max: usize) -> String {
    let text = text.unwrap_or_default().replace('\n', " ");
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// `jobs …`
pub(super) async fn jobs(
    settings: &Settings,
    command: JobsCommand,
    acting_as: Option<&str>,
) -> anyhow::Result<()> {
    let queue = queue(settings).await?;
    match command {
        JobsCommand::List(super::JobsList {
            status,
            kind,
            user,
            limit,
            json,
        }) => {
            let jobs = queue
                .admin()
                .list(&JobFilter {
                    status,
                    kind,
                    user,
                    limit,
                })
                .await?;
            if json {
                return print_json(&jobs);
            }
            // Narrow terminals drop the columns `jobs show` repeats; the id never wraps, so it
            // can be copied.
            let wide = terminal_width().is_none_or(|w| w >= 140);
            let mut header = vec!["id", "kind", "status", "progress", "result / error"];
            if narrow() {
                // Under 100 columns the id takes 36: progress and outcome share one column.
                header = vec!["id", "kind", "status", "progress, result / error"];
            }
            if wide {
                header.extend(["attempt", "created"]);
            }
            let mut out = table(&header);
            for job in &jobs {
                let mut row = vec![job.id.to_string(), job.kind.clone(), job.status.to_string()];
                if narrow() {
                    row.push(
                        format!("{}\n{}", progress(job), outcome(job))
                            .trim()
                            .to_owned(),
                    );
                } else {
                    row.extend([progress(job), outcome(job)]);
                }
                if wide {
                    row.extend([
                        format!("{}/{}", job.attempt, job.max_attempts),
                        time(Some(job.created_at)),
                    ]);
                }
                out.add_row(row);
            }
            if let Some(id) = out.column_mut(0) {
                id.set_constraint(ColumnConstraint::ContentWidth);
            }
            println!("{}\n{} job(s)", whole_words(&mut out), jobs.len());
        }
        JobsCommand::Show { id, json } => {
            let job = queue.job(id).await?;
            let events = queue.events(id).await?;
            if json {
                return print_json(&serde_json::json!({ "job": job, "events": events }));
            }
            print_job(&job);
            let mut history = table(&["at", "from", "to", "attempt", "worker", "message"]);
            for e in &events {
                history.add_row(vec![
                    time(Some(e.created_at)),
                    e.from_status.to_string(),
                    e.to_status.to_string(),
                    e.attempt.to_string(),
                    e.worker.clone().unwrap_or_default(),
                    // Operators read the detail where there is one; users read the message.
                    short(e.detail.as_deref().or(e.message.as_deref()), 80),
                ]);
            }
            println!("\nhistory:\n{}", whole_words(&mut history));
            let actions = Audit::new(queue.pool().clone()).for_job(id).await?;
            if !actions.is_empty() {
                let mut by = table(&["at", "action", "by", "from", "audit #"]);
                for a in &actions {
                    by.add_row(vec![
                        time(Some(a.at)),
                        a.action.clone(),
                        a.actor.clone(),
                        a.source.clone(),
                        a.id.to_string(),
                    ]);
                }
                println!("\noperators' actions:\n{by}");
            }
        }
        JobsCommand::Why { id, json } => {
            let reason = why(
                queue.pool(),
                id,
                &|kind| WhyPolicy::for_kind(settings, kind),
                None,
            )
            .await?
            .ok_or(crate::queue::Error::NotFound(id))?;
            if json {
                return print_json(&reason);
            }
            println!("{reason}");
        }
        JobsCommand::Retry {
            id: Some(id), json, ..
        } => {
            let job = queue.retry(id).await?;
            audit(
                queue.pool(),
                acting_as,
                "job.retry",
                None,
                Some(id),
                None,
                1,
            )
            .await;
            report_change(job, "retried", json)?
        }
        JobsCommand::Retry {
            id: None,
            status: Some(status),
            kind,
            since,
            error_like,
            batch_size,
            dry_run,
            json,
        } => {
            let filter = RedriveFilter {
                status,
                kind,
                since,
                error_like,
            };
            redrive(&queue, &filter, batch_size, dry_run, json, acting_as).await?;
        }
        JobsCommand::Retry { .. } => anyhow::bail!("jobs retry: give a job id or --status"),
        JobsCommand::Cancel { id, json } => {
            let job = queue.cancel(id).await?;
            audit(
                queue.pool(),
                acting_as,
                "job.cancel",
                None,
                Some(id),
                None,
                1,
            )
            .await;
            report_change(job, "cancel requested", json)?
        }
    }
    queue.pool().close().await;
    Ok(())
}

/// `jobs retry --status …`: batches until one moves fewer than `batch`; a progress line on
/// stderr when it is a terminal, counts at the end.
async fn redrive(
    queue: &Queue,
    filter: &RedriveFilter,
    batch: i64,
    dry_run: bool,
    json: bool,
    acting_as: Option<&str>,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    anyhow::ensure!(
        (1..=10_000).contains(&batch),
        "--batch-size must be between 1 and 10000"
    );
    let started = queue.admin().database_now().await?;
    let matching = queue.admin().redrivable(filter, started).await?;
    if dry_run {
        if json {
            return print_json(&serde_json::json!({ "would_retry": matching, "dry_run": true }));
        }
        println!(
            "would retry {matching} {} job(s) (dry run: nothing changed)",
            filter.status
        );
        return Ok(());
    }
    let progress = std::io::stderr().is_terminal() && !json;
    let mut retried = 0u64;
    loop {
        let n = queue.admin().redrive_batch(filter, started, batch).await?;
        retried += n;
        if progress {
            let mut err = std::io::stderr();
            // A progress line is best effort: a closed stderr does not stop the redrive.
            let _ = write!(err, "\rretried {retried} of {matching}");
            let _ = err.flush();
        }
        if n < batch.unsigned_abs() {
            break;
        }
    }
    if progress {
        eprintln!();
    }
    let described = serde_json::json!({
        "status": filter.status.as_str(), "kind": filter.kind, "since": filter.since,
        "error_like": filter.error_like,
    });
    audit(
        queue.pool(),
        acting_as,
        "jobs.retry",
        filter.kind.as_deref(),
        None,
        Some(described),
        i64::try_from(retried).unwrap_or(i64::MAX),
    )
    .await;
    if json {
        return print_json(&serde_json::json!({ "retried": retried, "matched": matching }));
    }
    println!(
        "retried {retried} {} job(s): now pending ({matching} matched at the start)",
        filter.status
    );
    Ok(())
}

fn report_change(job: Job, what: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&job);
    }
    println!(
        "job {} {what}: now {} (attempt {}/{})",
        job.id, job.status, job.attempt, job.max_attempts
    );
    Ok(())
}

fn print_job(job: &Job) {
    let rows: [(&str, String); 17] = [
        ("id", job.id.to_string()),
        ("kind", job.kind.clone()),
        ("status", job.status.to_string()),
        ("user", job.user_id.to_string()),
        ("attempt", format!("{}/{}", job.attempt, job.max_attempts)),
        ("priority", job.priority.to_string()),
        ("run at", time(Some(job.run_at))),
        (
            "progress",
            format!(
                "{}% {}",
                job.progress,
                job.progress_message.clone().unwrap_or_default()
            ),
        ),
        ("worker", job.locked_by.clone().unwrap_or_default()),
        ("lease until", time(job.lease_expires_at)),
        ("cancel requested", time(job.cancel_requested_at)),
        ("created", time(Some(job.created_at))),
        ("started", time(job.started_at)),
        ("finished", time(job.finished_at)),
        ("error", job.error.clone().unwrap_or_default()),
        ("error detail", job.error_detail.clone().unwrap_or_default()),
        ("input", job.input.to_string()),
    ];
    for (name, value) in rows {
        println!("{name:>17}: {value}");
    }
    if let Some(result) = &job.result {
        println!("{:>17}: {result}", "result");
    }
}

/// `kinds`, `kinds pause`, `kinds resume`, `kinds declare`, `kinds forget`
pub(super) async fn kinds(
    settings: &Settings,
    args: KindsArgs,
    acting_as: Option<&str>,
) -> anyhow::Result<()> {
    // A bad name is refused before anything is opened: exit 2, nothing changed.
    if let Some(
        KindsCommand::Pause { kind, .. }
        | KindsCommand::Resume { kind, .. }
        | KindsCommand::Declare { kind, .. }
        | KindsCommand::Forget { kind, .. },
    ) = &args.command
        && !crate::config::valid_kind_name(kind)
    {
        return Err(crate::queue::Error::InvalidKind(kind.clone()).into());
    }
    let queue = queue(settings).await?;
    let control = Control::new(queue.pool().clone());
    let outcome = match args.command {
        None => list_kinds(&queue, settings, args.json).await,
        Some(KindsCommand::Pause { kind, json }) => {
            // A typo during an incident would pause nothing: only a kind the database knows.
            let known = control.kinds().known().await?;
            if !known.contains(&kind) {
                queue.pool().close().await;
                return Err(super::report::BadArgument(format!(
                    "kinds pause {kind}: unknown job kind {kind:?} (known kinds: {}); nothing \
                     paused",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ))
                .into());
            }
            let by = crate::control::actor::current(queue.pool(), acting_as).await;
            let changed = control.pauses().pause(&kind, Some(&by)).await?;
            audit(
                queue.pool(),
                acting_as,
                "kind.pause",
                Some(&kind),
                None,
                None,
                i64::from(changed),
            )
            .await;
            report_kind(&kind, true, changed, json)
        }
        Some(KindsCommand::Resume { kind, json }) => {
            let changed = control.pauses().resume(&kind).await?;
            audit(
                queue.pool(),
                acting_as,
                "kind.resume",
                Some(&kind),
                None,
                None,
                i64::from(changed),
            )
            .await;
            report_kind(&kind, false, changed, json)
        }
        Some(KindsCommand::Declare { kind, json }) => {
            // A kind of this configuration: its attempts too (migration 0021).
            let attempts = settings
                .kinds
                .get(&kind)
                .and_then(|k| k.limits.max_attempts);
            let by = crate::control::actor::current(queue.pool(), acting_as).await;
            let changed = control
                .kinds()
                .declare_with(&kind, Some(&by), attempts)
                .await?;
            audit(
                queue.pool(),
                acting_as,
                "kind.declare",
                Some(&kind),
                None,
                None,
                i64::from(changed),
            )
            .await;
            report_known(&kind, true, changed, json)
        }
        Some(KindsCommand::Forget { kind, json }) => {
            let changed = control.kinds().forget(&kind).await?;
            audit(
                queue.pool(),
                acting_as,
                "kind.forget",
                Some(&kind),
                None,
                None,
                i64::from(changed),
            )
            .await;
            report_known(&kind, false, changed, json)
        }
    };
    queue.pool().close().await;
    outcome
}

fn report_kind(kind: &str, paused: bool, changed: bool, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::json!({
            "kind": kind, "paused": paused, "changed": changed
        }));
    }
    let state = if paused { "paused" } else { "resumed" };
    if changed {
        println!("kind {kind} {state}");
    } else {
        println!(
            "kind {kind} was already {}: nothing changed",
            if paused { "paused" } else { "not paused" }
        );
    }
    Ok(())
}

fn report_known(kind: &str, known: bool, changed: bool, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::json!({
            "kind": kind, "known": known, "changed": changed
        }));
    }
    match (known, changed) {
        (true, true) => println!("kind {kind} declared: jobs of it are accepted"),
        (true, false) => println!("kind {kind} was already known: nothing changed"),
        (false, true) => println!("kind {kind} forgotten: new jobs of it are refused"),
        (false, false) => println!("kind {kind} was not known: nothing changed"),
    }
    Ok(())
}

/// A row of `kinds`: the queue's view of the kind and whether it is known and served.
#[derive(Serialize)]
struct KindRow {
    #[serde(flatten)]
    state: KindState,
    known: bool,
    replicas: i64,
    unserved: bool,
    /// This configuration's rate limit (each replica enforces its own).
    rate: Option<String>,
    /// The cluster's starts of the kind in the rate's current window.
    rate_window_starts: Option<i64>,
}

async fn list_kinds(queue: &Queue, settings: &Settings, json: bool) -> anyhow::Result<()> {
    let control = Control::new(queue.pool().clone());
    let serving = control.kinds().serving().await?;
    let mut listed: Vec<String> = settings.kinds.keys().cloned().collect();
    listed.extend(serving.iter().map(|k| k.kind.clone()));
    let rates: Vec<(String, RateLimit)> = settings
        .kinds
        .iter()
        .filter_map(|(kind, k)| Some((kind.clone(), k.limits.rate_limit?)))
        .collect();
    let started = control.kinds().starts_in_window(&rates).await?;
    let kinds: Vec<KindRow> = control
        .pauses()
        .states(&listed)
        .await?
        .into_iter()
        .map(|state| {
            let served = serving.iter().find(|s| s.kind == state.kind);
            let rate = rates
                .iter()
                .find(|(k, _)| *k == state.kind)
                .map(|(_, r)| *r);
            KindRow {
                known: served.is_some_and(|s| s.known),
                replicas: served.map_or(0, |s| s.replicas),
                unserved: served.is_some_and(|s| s.unserved),
                rate: rate.map(|r| r.to_string()),
                rate_window_starts: rate.map(|_| started.get(&state.kind).copied().unwrap_or(0)),
                state,
            }
        })
        .collect();
    if json {
        return print_json(&kinds);
    }
    // Rate and pause columns only when some kind has one; under 100 columns the job counts
    // share a column, and so do the pause's time and author.
    let rated = kinds.iter().any(|k| k.rate.is_some());
    let paused = kinds.iter().any(|k| k.state.paused);
    let mut header = vec!["kind", "state"];
    if narrow() {
        header.push("jobs");
    } else {
        header.extend(["pending", "running"]);
    }
    header.push("replicas");
    if rated {
        header.push("rate");
    }
    if paused && narrow() {
        header.push("paused");
    } else if paused {
        header.extend(["paused at", "paused by"]);
    }
    let mut out = table(&header);
    for k in &kinds {
        let state = match (k.state.paused, k.unserved, k.known) {
            (true, _, _) => "paused",
            (false, true, _) => "UNSERVED",
            (false, false, false) => "unknown",
            (false, false, true) => "active",
        };
        let rate = match (&k.rate, k.rate_window_starts) {
            (Some(limit), Some(n)) => format!("{n} of {limit}"),
            _ => String::new(),
        };
        let mut row = vec![k.state.kind.clone(), state.to_owned()];
        if narrow() {
            row.push(format!(
                "{} pending {} running",
                k.state.pending, k.state.running
            ));
        } else {
            row.extend([k.state.pending.to_string(), k.state.running.to_string()]);
        }
        row.push(k.replicas.to_string());
        if rated {
            row.push(rate);
        }
        let by = k.state.paused_by.clone().unwrap_or_default();
        if paused && narrow() {
            row.push(match k.state.paused_at {
                Some(at) => format!("{} by {by}", time(Some(at))),
                None => String::new(),
            });
        } else if paused {
            row.extend([time(k.state.paused_at), by]);
        }
        out.add_row(row);
    }
    println!("{}\n{} kind(s)", whole_words(&mut out), kinds.len());
    Ok(())
}

/// `stats`
pub(super) async fn stats(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let queue = queue(settings).await?;
    let stats = queue.admin().stats().await?;
    queue.pool().close().await;
    if json {
        return print_json(&stats);
    }
    let mut counts = table(&["kind", "status", "jobs"]);
    for c in &stats.counts {
        counts.add_row(vec![c.kind.clone(), c.status.clone(), c.count.to_string()]);
    }
    println!("jobs by kind and status:\n{}", whole_words(&mut counts));
    let mut oldest = table(&["kind", "oldest due pending job"]);
    for o in &stats.oldest_pending {
        let age = Duration::from_secs_f64(o.age_seconds.max(0.0).round());
        oldest.add_row(vec![
            o.kind.clone(),
            humantime::format_duration(age).to_string(),
        ]);
    }
    println!("\nwaiting:\n{}", whole_words(&mut oldest));
    let mut workers = table(&["worker", "running", "oldest start"]);
    for w in &stats.workers {
        workers.add_row(vec![
            w.worker.clone(),
            w.running.to_string(),
            time(w.oldest_started_at),
        ]);
    }
    println!("\nrunning:\n{}", whole_words(&mut workers));
    Ok(())
}

/// `prune`
pub(super) async fn prune(
    settings: &Settings,
    older_than: Duration,
    batch: i64,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=100_000).contains(&batch),
        "--batch-size must be between 1 and 100000"
    );
    let queue = queue(settings).await?;
    let age = humantime::format_duration(older_than);
    if dry_run {
        let would = queue.admin().prunable(older_than).await?;
        queue.pool().close().await;
        if json {
            return print_json(&serde_json::json!({ "would_delete": would, "dry_run": true }));
        }
        println!(
            "would delete {would} finished job(s) older than {age} (dry run: nothing deleted)"
        );
        return Ok(());
    }
    let mut deleted = 0u64;
    loop {
        let n = queue.admin().prune_batch(older_than, batch).await?;
        deleted += n;
        if n < batch.unsigned_abs() {
            break;
        }
    }
    queue.pool().close().await;
    if json {
        return print_json(&serde_json::json!({ "deleted": deleted }));
    }
    println!("deleted {deleted} finished job(s) older than {age}");
    Ok(())
}

/// Record an operator's action from the CLI in the audit trail (migration 0024), as who
/// `acting_as` and the environment say. The change is already made: a failure to record it is
/// said on stderr, not hidden.
pub(super) async fn audit(
    pool: &sqlx::PgPool,
    acting_as: Option<&str>,
    action: &str,
    kind: Option<&str>,
    job_id: Option<uuid::Uuid>,
    filter: Option<serde_json::Value>,
    rows: i64,
) {
    let actor = crate::control::actor::current(pool, acting_as).await;
    let recorded = Audit::new(pool.clone())
        .record(&NewAction {
            kind,
            job_id,
            filter,
            rows,
            ..NewAction::new(&actor, Source::Cli, action)
        })
        .await;
    if let Err(err) = recorded {
        eprintln!(
            "studio-worker: warning: {action} was done but not recorded in the audit trail: {err} (run `studio-worker migrate`?)"
        );
    }
}
