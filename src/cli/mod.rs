//! Command-line interface: the subcommands, their arguments, and the daemon and schema commands.
//! Operator commands live in `ops`.

mod bulk;
mod ops;
mod quotas;
mod report;
mod schedules;
mod schema;
mod token;

pub use report::{Report, report};

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::Value;
use uuid::Uuid;

use crate::config::Settings;
use crate::handlers::Registry;
use crate::queue::{NewJob, Queue};
use crate::{app, db};

/// Background worker for the `public.studio_jobs` queue.
///
/// Configuration: defaults, then the TOML file given by --config, then environment variables
/// (`STUDIO_<SECTION>__<KEY>`, and `DATABASE_URL`). See the README's configuration table.
#[derive(Debug, Parser)]
#[command(name = "studio-worker", version, about)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, short, global = true, env = crate::config::CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Who is acting, recorded beside what operator commands change (`kinds pause`, `kinds
    /// declare`, `quotas set|clear`). Default: `$USER`, else the database login role, with the
    /// host.
    #[arg(long = "as", global = true, env = "STUDIO_AS", value_name = "NAME")]
    pub acting_as: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker daemon: claim and run jobs of the configured kinds until SIGTERM/SIGINT.
    Run,
    /// Serve the job API (and the operations endpoint) without running jobs; needs api.listen.
    Api,
    /// Run schedules, the rescue of expired leases and retention without running jobs: one
    /// always-on process, so that worker replicas can scale to zero. Also publishes the kinds'
    /// limits for the autoscaling demand and serves /healthz, /readyz and /metrics.
    Scheduler,
    /// Apply the database migrations (idempotent). Run it as the schema owner, not the worker.
    /// A schema applied by another tool (the Supabase CLI, psql) is recognised by the version it
    /// records and only newer migrations are applied. Then the kinds of the configuration
    /// (`[kinds.*]`) are declared, so that jobs of them are accepted before their workers start.
    Migrate,
    /// The migrations as files, for tools other than `migrate`.
    #[command(subcommand)]
    Migrations(MigrationsCommand),
    /// Print an access token for a user of the job API, signed with api.jwt_secret (HS256) as
    /// Supabase Auth signs them (`role` authenticated, `aud` api.audience, `iss` api.issuer):
    /// for demos, scripts and tests. Refused without api.jwt_secret.
    Token {
        /// The user (an id in auth.users).
        #[arg(long)]
        user: Uuid,
        /// How long it stays valid, e.g. 1h, 15m (at most 30 days).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
    },
    /// Enqueue one job on behalf of a user and print its id.
    Enqueue(EnqueueArgs),
    /// Inspect and repair jobs; without a subcommand, list them (as `jobs list`).
    Jobs(JobsArgs),
    /// Pause and resume, declare and forget kinds; without a subcommand, list the kinds (paused
    /// or not, pending and running jobs, live replicas serving them, unserved ones marked, and
    /// the configured rate limit with the starts in its current window).
    Kinds(KindsArgs),
    /// The configured schedules ([schedules.<name>]): cron, time zone, kind, owner, catch-up,
    /// the last fire time (with its job, from the database) and the next one.
    Schedules {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Per-user admission quotas by kind, enforced by the database on users' inserts; without
    /// a subcommand, list them.
    Quotas(quotas::QuotasArgs),
    /// Counts by kind and status, oldest pending job, running jobs per worker.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark the queue with no-op jobs (see docs/benchmarks.md). Run it in a database of its
    /// own: it empties the job tables, so it refuses a database holding jobs it did not create.
    /// The DATABASE_URL role must be able to `SET ROLE studio_worker` (e.g. a superuser).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Delete finished (succeeded, failed, cancelled) jobs older than a given age, in batches.
    /// Pending and running jobs are never touched.
    Prune {
        /// Age of the finished jobs to delete, e.g. 30d, 12h.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Jobs deleted per statement.
        #[arg(long, default_value_t = 1000)]
        batch_size: i64,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `migrations` subcommands.
#[derive(Debug, Subcommand)]
pub enum MigrationsCommand {
    /// Write the migrations into a Supabase project's migrations directory with the CLI's
    /// timestamped names (`<YYYYMMDDHHMMSS>_studio_<NNNN>_<name>.sql`), skipping those already
    /// there; then `supabase db push`.
    Export {
        /// The directory, usually `supabase/migrations`; it must exist (a mistyped path is
        /// refused) unless --create is given.
        #[arg(long, value_name = "DIR")]
        supabase: PathBuf,
        /// Create the directory (and its parents) when it does not exist.
        #[arg(long)]
        create: bool,
    },
    /// Wait until the database's schema is at least this binary's version (for init containers
    /// that hold a process back until the migration Job has run); any role that may read the
    /// version will do (the worker's, the API's).
    Wait {
        /// Give up after this long (exit code 1).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        timeout: std::time::Duration,
    },
}

/// `bench` phases (the shared peer harness's driver contract, plus our own).
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Bulk-enqueue N jobs, then time workers burning them down.
    Throughput {
        /// Jobs.
        #[arg(long, default_value_t = 20_000)]
        n: usize,
        /// Jobs per bulk enqueue call.
        #[arg(long, default_value_t = 1000)]
        enqueue_batch: usize,
        /// Distinct job owners (jobs are spread round robin).
        #[arg(long, default_value_t = 1)]
        users: usize,
        /// Worker processes (1: the benchmark process itself).
        #[arg(long, default_value_t = 1)]
        processes: usize,
        /// Jobs that API streams follow elsewhere (rows of `studio_job_watches` for jobs not in
        /// the burn-down): what that many open streams cost the worker's statements.
        #[arg(long, default_value_t = 0)]
        watches: usize,
        /// Worker shape.
        #[command(flatten)]
        shape: ShapeArgs,
    },
    /// Single enqueues into an idle worker; time from enqueue call to handler start.
    Latency {
        /// Jobs.
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Milliseconds between enqueues.
        #[arg(long, default_value_t = 20)]
        gap_ms: u64,
        /// Worker concurrency.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Idle time before the first enqueue, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        idle_ms: u64,
        /// The configuration the peer harness names (as in the throughput phase).
        #[arg(long, value_enum, default_value_t = Variant::Default)]
        variant: Variant,
    },
    /// Time single claims of a batch next to a large finished history.
    ClaimCost {
        /// Finished jobs (with history) in the table.
        #[arg(long, default_value_t = 1_000_000)]
        finished: usize,
        /// Jobs per claim.
        #[arg(long, default_value_t = 32)]
        batch: u32,
        /// Claims timed.
        #[arg(long, default_value_t = 300)]
        rounds: usize,
        /// Distinct job owners.
        #[arg(long, default_value_t = 1)]
        users: usize,
        /// Worker shape (fairness matters here).
        #[command(flatten)]
        shape: ShapeArgs,
    },
    /// The job API as a separate `studio-worker api` process: creates/s with verified tokens
    /// (HS256 and ES256) over keep-alive connections, then concurrent streams (API RSS, time
    /// for one status change to reach all of them).
    Api {
        /// Concurrent clients, one keep-alive connection each.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Seconds of load per token algorithm.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent streams (needs `ulimit -n` above twice this).
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
    },
    /// Run one worker process until SIGTERM (used by `throughput --processes`).
    #[command(hide = true)]
    Work {
        /// Worker shape.
        #[command(flatten)]
        shape: ShapeArgs,
    },
}

/// How the benchmark's worker runs.
#[derive(Debug, clap::Args)]
pub struct ShapeArgs {
    /// Worker concurrency.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Jobs claimed ahead of free slots (worker.prefetch); 0: the variant's.
    #[arg(long, default_value_t = 0)]
    pub prefetch: usize,
    /// Adaptive prefetch (worker.prefetch_wait; 0 turns it off, as before issue 19).
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub prefetch_wait: std::time::Duration,
    /// Claim order, fair or fifo (worker.fairness); default: the variant's.
    #[arg(long, value_parser = |text: &str| crate::config::Fairness::try_from(text.to_owned()))]
    pub fairness: Option<crate::config::Fairness>,
    /// The configuration the peer harness names.
    #[arg(long, value_enum, default_value_t = Variant::Default)]
    pub variant: Variant,
}

/// A configuration of the worker that the shared peer harness asks for by name (`--variant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// What a worker runs with when nothing is configured.
    Default,
    /// `worker.prefetch` = 4 × concurrency, whatever the kinds' run times.
    Prefetch,
    /// `worker.fairness = "fifo"`: for a queue that does not share its workers among users.
    Fifo,
}

impl Variant {
    /// The worker shape this variant stands for at `concurrency`.
    fn shape(self, concurrency: usize) -> crate::bench::Shape {
        crate::bench::Shape {
            concurrency,
            prefetch: if self == Variant::Prefetch {
                4 * concurrency
            } else {
                0
            },
            prefetch_wait: crate::config::WorkerSettings::default().prefetch_wait,
            fair: self != Variant::Fifo,
        }
    }
}

impl ShapeArgs {
    fn shape(&self) -> anyhow::Result<crate::bench::Shape> {
        let mut shape = self.variant.shape(self.concurrency);
        if self.prefetch > 0 {
            shape.prefetch = self.prefetch;
        }
        shape.prefetch_wait = self.prefetch_wait;
        match (self.fairness, self.variant) {
            (Some(crate::config::Fairness::Fair), Variant::Fifo) => {
                anyhow::bail!("--fairness fair contradicts --variant fifo")
            }
            (Some(fairness), _) => shape.fair = fairness == crate::config::Fairness::Fair,
            (None, _) => {}
        }
        Ok(shape)
    }
}

/// `kinds` and its subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KindsArgs {
    /// Pause, resume, declare or forget; none: list.
    #[command(subcommand)]
    pub command: Option<KindsCommand>,
    /// Machine-readable output (the list).
    #[arg(long)]
    pub json: bool,
}

/// `kinds` subcommands.
#[derive(Debug, Subcommand)]
pub enum KindsCommand {
    /// Stop claiming jobs of a kind, on every replica from its next claim. Running jobs go on;
    /// new jobs of the kind are still accepted and wait as pending.
    Pause {
        /// The kind.
        kind: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Claim jobs of a paused kind again; idle workers are woken at once.
    Resume {
        /// The kind.
        kind: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Make a kind known before any replica serving it has started, so that jobs of it are
    /// accepted (they wait, shown as unserved, until a replica serves it). A replica's start
    /// makes its kinds known by itself.
    Declare {
        /// The kind.
        kind: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Make a kind unknown: new jobs of it are refused from then on; its existing jobs stay.
    /// Refused while a live replica serves it (remove the kind from their configuration first).
    Forget {
        /// The kind.
        kind: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `jobs` and its subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct JobsArgs {
    /// List, show, retry or cancel; none: list.
    #[command(subcommand)]
    pub command: Option<JobsCommand>,
    /// The list's filters (without a subcommand).
    #[command(flatten)]
    pub list: JobsList,
}

/// What `jobs` and `jobs list` show.
#[derive(Debug, clap::Args)]
pub struct JobsList {
    /// Only this status (pending, running, succeeded, failed, cancelled).
    #[arg(long)]
    pub status: Option<crate::queue::JobStatus>,
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this user's jobs.
    #[arg(long)]
    pub user: Option<Uuid>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first (also `jobs` alone).
    List(JobsList),
    /// One job with its full status history.
    Show {
        /// Job id.
        id: Uuid,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Put a failed, cancelled or succeeded job back to pending (with at least one attempt left);
    /// or, with --status, every failed or cancelled job matching the filters, in batches (the
    /// same transition, so each job's history records its retry).
    Retry {
        /// Job id (one job).
        #[arg(
            required_unless_present = "status",
            conflicts_with_all = ["status", "kind", "since", "error_like", "dry_run"]
        )]
        id: Option<Uuid>,
        /// Retry every job in this status: failed or cancelled.
        #[arg(long, value_parser = redrive_status)]
        status: Option<crate::queue::JobStatus>,
        /// Only this kind (with --status).
        #[arg(long, requires = "status")]
        kind: Option<String>,
        /// Only jobs that finished at or after this time: RFC 3339 (2026-11-29T08:00:00Z) or an
        /// age (2h, 3d) (with --status).
        #[arg(long, requires = "status", value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        /// Only jobs whose error or error detail matches this SQL LIKE pattern, ignoring case,
        /// e.g. '%timeout%' (with --status).
        #[arg(long, requires = "status")]
        error_like: Option<String>,
        /// Jobs moved per statement (with --status).
        #[arg(long, default_value_t = 500, requires = "status")]
        batch_size: i64,
        /// Only count the jobs that would be retried (with --status).
        #[arg(long, requires = "status")]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Why a pending job is not running: the one reason that holds now, by the claim's rules
    /// (with the limits of this configuration's kinds).
    Why {
        /// Job id.
        id: Uuid,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a pending job, or ask the worker running it to stop.
    Cancel {
        /// Job id.
        id: Uuid,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `--status` of a bulk retry: only finished jobs that did not succeed.
fn redrive_status(text: &str) -> Result<crate::queue::JobStatus, String> {
    use crate::queue::JobStatus;
    match text.parse::<JobStatus>() {
        Ok(status @ (JobStatus::Failed | JobStatus::Cancelled)) => Ok(status),
        _ => Err("expected failed or cancelled".to_owned()),
    }
}

/// `--since`: a time (RFC 3339) or an age before now (`2h`).
fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(text)
        .map_err(|_| "expected an RFC 3339 time or an age such as 2h".to_owned())?;
    chrono::TimeDelta::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(|| "age too large".to_owned())
}

/// Arguments of `enqueue`.
#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    /// Owner of the job (an id in auth.users); with --jobs-file, of every line without "user".
    #[arg(long, required_unless_present = "jobs_file")]
    pub user: Option<Uuid>,
    /// Job kind, e.g. render; with --jobs-file, of every line without "kind".
    #[arg(long, required_unless_present = "jobs_file")]
    pub kind: Option<String>,
    /// Enqueue many jobs from a file ("-" for stdin), one JSON object per line:
    /// {"user": ..., "kind": ..., "input": {...}, "priority": 0, "run_at": ..., "max_attempts": 3}
    /// (every field optional but user and kind, which --user and --kind can give). Every line
    /// is read and checked before the first insert. Prints the ids in input order. Batches of
    /// 5,000 commit one by one: after a failure the output says which lines were enqueued.
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["input", "input_file", "idempotency_key"]
    )]
    pub jobs_file: Option<PathBuf>,
    /// With --jobs-file: batches in flight at once, each on its own connection.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
    /// Input document (JSON).
    #[arg(long, default_value = "{}", conflicts_with = "input_file")]
    pub input: String,
    /// Read the input document from a file ("-" for stdin).
    #[arg(long, value_name = "PATH")]
    pub input_file: Option<PathBuf>,
    /// Higher runs first (-100..100).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i16,
    /// Not before this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long)]
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts allowed (default: the kind's max_attempts, else 3).
    #[arg(long)]
    pub max_attempts: Option<i32>,
    /// Idempotency key, unique per user: if the user already has a job with this key, print its
    /// id and create nothing.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// Run `command` with `settings`.
///
/// # Errors
/// Whatever the command reports; the binary prints it and exits non-zero.
pub async fn dispatch(
    command: Command,
    settings: Settings,
    acting_as: Option<String>,
) -> anyhow::Result<()> {
    let acting_as = acting_as.as_deref();
    match command {
        Command::Run => {
            let registry = Registry::from_settings(&settings)?;
            app::run(settings, registry).await
        }
        Command::Api => app::serve_api(settings).await,
        Command::Scheduler => app::run_scheduler(settings).await,
        Command::Migrate => schema::migrate(&settings).await,
        Command::Migrations(MigrationsCommand::Export { supabase, create }) => {
            schema::export_supabase(&supabase, create)
        }
        Command::Token { user, expires } => token::token(&settings, user, expires),
        Command::Migrations(MigrationsCommand::Wait { timeout }) => {
            schema::wait(&settings, timeout).await
        }
        Command::Enqueue(args) => enqueue(&settings, args).await,
        Command::Jobs(args) => {
            let command = args.command.unwrap_or(JobsCommand::List(args.list));
            ops::jobs(&settings, command, acting_as).await
        }
        Command::Kinds(args) => ops::kinds(&settings, args, acting_as).await,
        Command::Schedules { json } => schedules::list(&settings, json).await,
        Command::Quotas(args) => quotas::quotas(&settings, args, acting_as).await,
        Command::Stats { json } => ops::stats(&settings, json).await,
        Command::Bench(command) => bench(&settings, command).await,
        Command::Prune {
            older_than,
            batch_size,
            dry_run,
            json,
        } => ops::prune(&settings, older_than, batch_size, dry_run, json).await,
    }
}

async fn enqueue(settings: &Settings, args: EnqueueArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.jobs_file {
        return bulk::enqueue_file(settings, &args, path).await;
    }
    let (Some(user), Some(kind)) = (args.user, args.kind.clone()) else {
        anyhow::bail!("--user and --kind are required without --jobs-file");
    };
    let text = match &args.input_file {
        Some(path) if path.as_os_str() == "-" => {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        }
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => args.input.clone(),
    };
    let input: Value = serde_json::from_str(&text).context("--input is not valid JSON")?;
    let mut job = NewJob::new(user, &kind, input).priority(args.priority);
    if let Some(run_at) = args.run_at {
        job = job.run_at(run_at);
    }
    if let Some(max) = args
        .max_attempts
        .or_else(|| configured_max_attempts(settings, &kind))
    {
        job = job.max_attempts(max);
    }
    if let Some(key) = args.idempotency_key {
        job = job.idempotency_key(key);
    }
    let pool = db::connect(&settings.database, std::time::Duration::ZERO).await?;
    let id = match Queue::new(pool.clone()).enqueue(&job).await {
        Ok(id) => id,
        Err(crate::queue::Error::UnknownKind(unknown)) => {
            let explained = explain_unknown_kind(&pool, &unknown).await;
            pool.close().await;
            return Err(explained);
        }
        Err(err) => return Err(err.into()),
    };
    println!("{id}");
    pool.close().await;
    Ok(())
}

/// The attempts this configuration gives `kind` (`[kinds.<kind>] max_attempts`), if any: what
/// a job enqueued from the command line gets unless it says otherwise.
fn configured_max_attempts(settings: &Settings, kind: &str) -> Option<i32> {
    settings.kinds.get(kind).and_then(|k| k.limits.max_attempts)
}

/// An unknown kind, with the kinds the database knows (a typo is the likely cause; best
/// effort) and how to declare it.
async fn explain_unknown_kind(
    pool: &sqlx::PgPool,
    unknown: &crate::queue::refusal::UnknownKind,
) -> anyhow::Error {
    let known = crate::control::Control::new(pool.clone())
        .kinds()
        .known()
        .await
        .unwrap_or_default();
    let known = if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    };
    anyhow::anyhow!(
        "{unknown} (known kinds: {known}); if {:?} is right and its workers are not deployed yet: studio-worker kinds declare {}",
        unknown.kind,
        unknown.kind
    )
}

async fn bench(settings: &Settings, command: BenchCommand) -> anyhow::Result<()> {
    use crate::bench::Bench;
    let options = settings.database.connect_options()?;
    let result = match command {
        BenchCommand::Throughput {
            n,
            enqueue_batch,
            users,
            processes,
            watches,
            shape,
        } => {
            let bench = Bench::prepare(options, users, 0).await?;
            bench.watch_others(watches).await?;
            let mut row = bench
                .throughput(n, shape.shape()?, enqueue_batch, processes)
                .await?;
            row["watches"] = watches.into();
            row
        }
        BenchCommand::Latency {
            count,
            gap_ms,
            concurrency,
            idle_ms,
            variant,
        } => {
            Bench::prepare(options, 1, 0)
                .await?
                .latency(
                    count,
                    std::time::Duration::from_millis(gap_ms),
                    variant.shape(concurrency),
                    std::time::Duration::from_millis(idle_ms),
                )
                .await?
        }
        BenchCommand::ClaimCost {
            finished,
            batch,
            rounds,
            users,
            shape,
        } => {
            Bench::prepare(options, users, finished)
                .await?
                .claim_cost(shape.shape()?, batch, rounds)
                .await?
        }
        BenchCommand::Api {
            clients,
            seconds,
            streams,
        } => crate::bench::api::run(options, clients, seconds, streams).await?,
        BenchCommand::Work { shape } => crate::bench::work(options, shape.shape()?).await?,
    };
    eprintln!("{}", serde_json::to_string_pretty(&result)?);
    println!("RESULT {result}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{BenchCommand, Cli, Command};

    /// The worker shape of `bench throughput <args>`.
    fn throughput_shape(args: &[&str]) -> anyhow::Result<crate::bench::Shape> {
        let argv = ["studio-worker", "bench", "throughput"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Bench(BenchCommand::Throughput { shape, .. }) => shape.shape(),
            other => anyhow::bail!("parsed as {other:?}"),
        }
    }

    #[test]
    fn each_harness_variant_stands_for_its_configuration() {
        let default = throughput_shape(&["--concurrency", "32"]).unwrap();
        assert_eq!((default.prefetch, default.fair), (0, true));
        let prefetch = throughput_shape(&["--concurrency", "32", "--variant", "prefetch"]).unwrap();
        assert_eq!((prefetch.prefetch, prefetch.fair), (128, true));
        let fifo = throughput_shape(&["--concurrency", "32", "--variant", "fifo"]).unwrap();
        assert_eq!((fifo.prefetch, fifo.fair), (0, false));
        let explicit = throughput_shape(&["--variant", "prefetch", "--prefetch", "5"]).unwrap();
        assert_eq!(explicit.prefetch, 5);
    }

    #[test]
    fn an_unknown_variant_or_a_contradiction_is_refused() {
        let unknown = throughput_shape(&["--variant", "turbo"]).unwrap_err();
        assert!(unknown.to_string().contains("turbo"), "{unknown}");
        let contradiction = throughput_shape(&["--variant", "fifo", "--fairness", "fair"]);
        assert!(contradiction.is_err());
        let fifo = throughput_shape(&["--fairness", "fifo"]).unwrap();
        assert!(!fifo.fair);
        assert!(throughput_shape(&["--fairness", "random"]).is_err());
    }
}
