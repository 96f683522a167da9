//! `quotas`: list, set and clear the per-user admission quotas (migration 0016). Values are
//! checked while the arguments are parsed, so a bad one exits 2 before anything connects; the
//! table's CHECKs refuse them anyway.

use std::time::Duration;

use clap::Subcommand;

use super::ops::{print_json, table, time, whole_words};
use crate::config::Settings;
use crate::control::Control;
use crate::control::quota::{DEFAULT, Limits, MAX_PERIOD, Quota, Quotas};
use crate::db;

/// `quotas` and its subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QuotasArgs {
    /// Set or clear; none: list.
    #[command(subcommand)]
    pub command: Option<QuotasCommand>,
    /// Machine-readable output (the list).
    #[arg(long)]
    pub json: bool,
}

/// `quotas` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuotasCommand {
    /// Set a kind's quota (or the default's), replacing what it had: a limit left out is no
    /// limit, so `quotas set K` alone exempts kind K from the default. Holds from the next
    /// insert on, with no restart.
    Set {
        /// Which quota.
        #[command(flatten)]
        target: Target,
        /// Most unfinished (pending or running) jobs of the kind per user; 0 refuses the kind
        /// to users.
        #[arg(long, value_name = "N", allow_negative_numbers = true,
              value_parser = clap::value_parser!(u32).range(0..=i64::from(i32::MAX)))]
        max_unfinished: Option<u32>,
        /// Most jobs of the kind a user may create within --per.
        #[arg(long, value_name = "N", requires = "per", allow_negative_numbers = true,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(i32::MAX)))]
        max_created: Option<u32>,
        /// The period of --max-created, e.g. 1h, 30m, 1day (1s to 366 days).
        #[arg(long, value_name = "PERIOD", requires = "max_created", value_parser = parse_period)]
        per: Option<Duration>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a kind's quota (it falls back to the default) or the default (kinds without a
    /// quota of their own are then unlimited).
    Clear {
        /// Which quota.
        #[command(flatten)]
        target: Target,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// A kind or `--default`.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The kind.
    #[arg(value_parser = parse_kind)]
    kind: Option<String>,
    /// The default quota: every kind without a quota of its own, each kind counted apart.
    #[arg(long)]
    default: bool,
}

impl Target {
    fn name(&self) -> &str {
        self.kind.as_deref().unwrap_or(DEFAULT)
    }
}

fn parse_kind(text: &str) -> Result<String, String> {
    if crate::config::valid_kind_name(text) {
        Ok(text.to_owned())
    } else {
        Err("expected a lowercase letter, then up to 63 of a-z 0-9 _ . - (or --default)".into())
    }
}

fn parse_period(text: &str) -> Result<Duration, String> {
    let period = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; expected a period such as 1h, 30m or 1day"))?;
    if period < Duration::from_secs(1) || period > MAX_PERIOD {
        return Err("the period must be 1s to 366 days".into());
    }
    // The table would keep 1.5s while the refusal's DETAIL says per_seconds=2: whole seconds
    // only, so what is stored is what users are told.
    if period.subsec_nanos() != 0 {
        return Err("the period must be whole seconds (e.g. 2s, not 1500ms)".into());
    }
    Ok(period)
}

/// `quotas`, `quotas set`, `quotas clear`
pub(super) async fn quotas(
    settings: &Settings,
    args: QuotasArgs,
    acting_as: Option<&str>,
) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database, Duration::ZERO).await?;
    let quotas = Control::new(pool.clone()).quotas();
    let outcome = match args.command {
        None => list(&quotas, args.json).await,
        Some(QuotasCommand::Set {
            target,
            max_unfinished,
            max_created,
            per,
            json,
        }) => {
            let limits = Limits {
                max_unfinished,
                max_created: max_created.zip(per),
            };
            let by = crate::control::actor::current(&pool, acting_as).await;
            let set = quotas.set(target.name(), limits, Some(&by)).await;
            if set.is_ok() {
                super::ops::audit(
                    &pool,
                    acting_as,
                    "quota.set",
                    Some(target.name()),
                    None,
                    None,
                    1,
                )
                .await;
            }
            if let (Ok(_), Some(kind)) = (&set, &target.kind) {
                warn_if_unknown(&pool, kind).await;
            }
            match set {
                Ok(row) if json => print_json(&row),
                Ok(row) => {
                    println!("quota {} set: {}", label(&row.kind), describe(&row));
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Some(QuotasCommand::Clear { target, json }) => {
            match audited_clear(&quotas, &pool, &target, acting_as).await {
                Ok(removed) if json => print_json(&serde_json::json!({
                    "kind": target.name(), "cleared": removed.is_some()
                })),
                Ok(Some(_)) => {
                    println!("quota {} cleared", label(target.name()));
                    Ok(())
                }
                Ok(None) => {
                    println!(
                        "quota {} was not set: nothing changed",
                        label(target.name())
                    );
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
    };
    pool.close().await;
    outcome
}

/// A quota for a kind the database does not know is kept (an operator may set it before the
/// kind's workers start), but it is most likely a typo: say so on stderr.
async fn warn_if_unknown(pool: &sqlx::PgPool, kind: &str) {
    match Control::new(pool.clone()).kinds().known().await {
        Ok(known) if known.iter().any(|k| k == kind) => {}
        Ok(_) => eprintln!(
            "warning: kind {kind:?} is not known: no replica serving it has started and no \
             operator declared it (`studio-worker kinds declare {kind}`); its jobs are refused \
             until it is, and the quota applies from then on"
        ),
        Err(e) => eprintln!("warning: could not check whether kind {kind:?} is known: {e}"),
    }
}

async fn list(quotas: &Quotas, json: bool) -> anyhow::Result<()> {
    let rows = quotas.list().await?;
    if json {
        return print_json(&rows);
    }
    let mut out = table(&[
        "kind",
        "max unfinished",
        "max created",
        "per",
        "updated",
        "by",
    ]);
    for q in &rows {
        out.add_row(vec![
            label(&q.kind).to_owned(),
            limit(q.max_unfinished),
            limit(q.max_created),
            period(q).unwrap_or_default(),
            time(Some(q.updated_at)),
            q.updated_by.clone().unwrap_or_default(),
        ]);
    }
    println!("{}\n{} quota(s)", whole_words(&mut out), rows.len());
    Ok(())
}

fn label(kind: &str) -> &str {
    if kind == DEFAULT { "(default)" } else { kind }
}

fn limit(n: Option<i32>) -> String {
    n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

fn period(q: &Quota) -> Option<String> {
    let seconds = q.per_seconds?;
    let period = Duration::try_from_secs_f64(seconds).ok()?;
    Some(humantime::format_duration(period).to_string())
}

fn describe(q: &Quota) -> String {
    let unfinished = match q.max_unfinished {
        Some(n) => format!("at most {n} unfinished jobs per user"),
        None => "no limit on unfinished jobs".to_owned(),
    };
    let created = match (q.max_created, period(q)) {
        (Some(n), Some(per)) => format!("at most {n} created per user every {per}"),
        _ => "no limit on jobs created".to_owned(),
    };
    format!("{unfinished}, {created}")
}

/// Clear `target`'s quota and record it in the audit trail.
async fn audited_clear(
    quotas: &Quotas,
    pool: &sqlx::PgPool,
    target: &Target,
    acting_as: Option<&str>,
) -> Result<Option<crate::control::quota::Quota>, crate::control::quota::Error> {
    let removed = quotas.clear(target.name()).await?;
    super::ops::audit(
        pool,
        acting_as,
        "quota.clear",
        Some(target.name()),
        None,
        None,
        i64::from(removed.is_some()),
    )
    .await;
    Ok(removed)
}
