//! `enqueue --jobs-file`: many jobs from a file of JSON lines, checked whole before the first
//! insert, then enqueued in parallel batches ([`Queue::enqueue_bulk`]).

use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::EnqueueArgs;
use crate::config::Settings;
use crate::db;
use crate::queue::{NewJob, Queue};

/// One line of a jobs file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    user: Option<Uuid>,
    kind: Option<String>,
    #[serde(default = "empty_object")]
    input: Value,
    priority: Option<i16>,
    run_at: Option<DateTime<Utc>>,
    max_attempts: Option<i32>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Read every line of `path` ("-": stdin) into jobs, with `args` supplying what a line leaves
/// out; the first bad line fails the whole file, naming its number.
fn read_jobs(settings: &Settings, args: &EnqueueArgs, path: &Path) -> anyhow::Result<Vec<NewJob>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut jobs = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let number = n + 1;
        let line = line.with_context(|| format!("reading line {number}"))?;
        anyhow::ensure!(
            !line.trim().is_empty(),
            "line {number} is empty (one job per line, no blank lines)"
        );
        let parsed: Line = serde_json::from_str(&line)
            .with_context(|| format!("line {number} is not a job (JSON object: user, kind, input, priority, run_at, max_attempts)"))?;
        let user = parsed
            .user
            .or(args.user)
            .with_context(|| format!("line {number} has no \"user\" and --user is not given"))?;
        let kind = parsed
            .kind
            .or_else(|| args.kind.clone())
            .with_context(|| format!("line {number} has no \"kind\" and --kind is not given"))?;
        let max_attempts = parsed
            .max_attempts
            .or(args.max_attempts)
            .or_else(|| super::configured_max_attempts(settings, &kind));
        let mut job = NewJob::new(user, kind, parsed.input)
            .priority(parsed.priority.unwrap_or(args.priority));
        if let Some(run_at) = parsed.run_at.or(args.run_at) {
            job = job.run_at(run_at);
        }
        if let Some(max) = max_attempts {
            job = job.max_attempts(max);
        }
        jobs.push(job);
    }
    Ok(jobs)
}

/// Enqueue the jobs of `path`; prints their ids in input order, and on a failure the ids of
/// what was enqueued and which lines were not.
pub(super) async fn enqueue_file(
    settings: &Settings,
    args: &EnqueueArgs,
    path: &Path,
) -> anyhow::Result<()> {
    let jobs = read_jobs(settings, args, path)?;
    let connections = usize::from(args.connections);
    let mut database = settings.database.clone();
    database.max_connections = database.max_connections.max(u32::from(args.connections));
    let pool = db::connect(&database, std::time::Duration::ZERO).await?;
    let started = std::time::Instant::now();
    let result = Queue::new(pool.clone())
        .enqueue_bulk(&jobs, connections)
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let outcome = match result {
        Ok(ids) => {
            print_ids(&ids);
            eprintln!(
                "enqueued {} jobs in {elapsed:.2} s ({:.0} jobs/s)",
                ids.len(),
                ids.len() as f64 / elapsed.max(1e-9)
            );
            Ok(())
        }
        Err(bulk) => {
            // The ids of what was enqueued, so nothing is lost or sent twice on a retry.
            print_ids(&bulk.ids);
            let reason = match &bulk.error {
                crate::queue::Error::UnknownKind(unknown) => {
                    super::explain_unknown_kind(&pool, unknown).await
                }
                other => anyhow::anyhow!("{other}"),
            };
            Err(reason.context(partly_enqueued(&bulk, jobs.len())))
        }
    };
    pool.close().await;
    outcome
}

/// What a failed bulk enqueue did, in the file's line numbers.
fn partly_enqueued(bulk: &crate::queue::BulkError, total: usize) -> String {
    let enqueued: usize = bulk.enqueued.iter().map(ExactSizeIterator::len).sum();
    let lines = bulk
        .enqueued
        .iter()
        .map(|r| format!("{}-{}", r.start + 1, r.end))
        .collect::<Vec<_>>();
    let lines = if lines.is_empty() {
        "none".to_owned()
    } else {
        lines.join(", ")
    };
    format!(
        "enqueued {enqueued} of {total} jobs: lines {lines} (their ids are printed, in order); \
         the batch from line {} failed and no later batch was sent",
        bulk.failed_at + 1
    )
}

fn print_ids(ids: &[Uuid]) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for id in ids {
        let _ = writeln!(out, "{id}");
    }
    let _ = out.flush();
}
