//! Schema commands: `migrate` (including a schema another tool applied) and
//! `migrations export --supabase` (the files with the Supabase CLI's names).

use anyhow::Context;
use chrono::{Timelike, Utc};

use crate::config::Settings;
use crate::control::kinds::Kinds;
use crate::db;

/// `migrations wait`: poll the schema version until it reaches this binary's, within `timeout`
/// (connection failures count as "not yet").
pub(super) async fn wait(settings: &Settings, timeout: std::time::Duration) -> anyhow::Result<()> {
    let expected = db::latest_migration();
    let deadline = tokio::time::Instant::now() + timeout;
    let pool = db::connect(&settings.database, timeout).await?;
    let mut said = false;
    loop {
        let version = db::schema_version(&pool).await.ok().flatten();
        if version.is_some_and(|v| v >= expected) {
            println!("schema at version {}", version.unwrap_or(expected));
            return Ok(());
        }
        if !said {
            eprintln!(
                "waiting for the schema to reach version {expected} (now {}): the migration Job (`studio-worker migrate`) has not run yet",
                version.map_or_else(|| "none".to_owned(), |v| v.to_string())
            );
            said = true;
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the schema did not reach version {expected} within {}: run `studio-worker migrate` as the schema owner",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

pub(super) async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database, std::time::Duration::ZERO).await?;
    let before = db::schema_version(&pool).await.ok().flatten();
    match db::migration_history(&pool).await? {
        db::MigrationHistory::Recorded => {}
        db::MigrationHistory::Empty => {}
        db::MigrationHistory::AppliedElsewhere(Some(version)) => {
            // The Supabase CLI or psql applied the files up to `version`: record them as applied
            // (same checksums as `sqlx migrate run` would write) and apply only what is newer.
            db::MIGRATOR
                .skip(&pool, Some(version))
                .await
                .context("recording the migrations another tool applied")?;
            println!(
                "schema at version {version} was applied by another tool (the Supabase CLI or psql); \
                 recorded migrations up to {version} in _sqlx_migrations"
            );
        }
        db::MigrationHistory::AppliedElsewhere(None) => anyhow::bail!(
            "public.studio_jobs exists but no migration history says which migrations made it \
             (applied by another tool before migration 0011, which records the version): apply the \
             remaining files with that tool (`supabase db push` after \
             `studio-worker migrations export --supabase supabase/migrations`), or run \
             `sqlx migrate info` to compare"
        ),
    }
    db::MIGRATOR
        .run(&pool)
        .await
        .context("applying migrations (the role must own the schema: postgres on Supabase)")?;
    let after = db::schema_version(&pool).await?;
    match (before, after) {
        (Some(b), Some(a)) if a == b => println!("schema already at version {a}; nothing to do"),
        (_, a) => println!("schema migrated to version {}", a.unwrap_or_default()),
    }
    let declared = declare_configured_kinds(settings, &pool).await;
    pool.close().await;
    declared
}

/// Declare the kinds of this configuration (`declared_by = 'migrate'`), so that inserts of them
/// are accepted before a replica serving them starts: an upgrade to 0017 made known only the
/// kinds that had jobs then. The schema owner may write `studio_kinds` (0017 gives it a policy).
async fn declare_configured_kinds(settings: &Settings, pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let registry = Kinds::new(pool.clone());
    let mut declared = Vec::new();
    for kind in settings.kinds.keys() {
        let new = registry
            .declare(kind, Some("migrate"))
            .await
            .with_context(|| format!("declaring kind {kind:?} of the configuration"))?;
        if new {
            declared.push(kind.as_str());
        }
    }
    if !declared.is_empty() {
        println!(
            "declared {} kind(s) of the configuration: {}",
            declared.len(),
            declared.join(", ")
        );
    }
    Ok(())
}

pub(super) fn export_supabase(dir: &std::path::Path, create: bool) -> anyhow::Result<()> {
    if create {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    } else if !dir.is_dir() {
        return Err(super::report::BadArgument(format!(
            "{}: no such directory (a Supabase project keeps its migrations in \
             supabase/migrations, made by `supabase init`); add --create to create it",
            dir.display()
        ))
        .into());
    }
    let existing: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let missing: Vec<_> = db::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .filter(|m| {
            let ours = format!("_studio_{:04}_", m.version);
            !existing.iter().any(|name| name.contains(&ours))
        })
        .collect();
    let newest_there = existing
        .iter()
        .filter_map(|name| name.get(..14))
        .filter_map(|stamp| chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S").ok())
        .max();
    let stamps = stamps(newest_there, Utc::now().naive_utc(), missing.len()).map_err(|wait| {
        anyhow::anyhow!(
            "{}: its newest migration is dated {} (UTC); ours must sort after it without a \
             time later than now: run this again in {wait} s",
            dir.display(),
            newest_there.map(|t| t.to_string()).unwrap_or_default()
        )
    })?;
    let kept = db::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .count()
        - missing.len();
    let mut written = 0;
    for (migration, stamp) in missing.into_iter().zip(stamps) {
        let name = format!(
            "{}_studio_{:04}_{}.sql",
            stamp.format("%Y%m%d%H%M%S"),
            migration.version,
            migration.description.replace(' ', "_")
        );
        let text = format!(
            "-- studio-worker migration {:04} ({}), written by `studio-worker migrations export \
             --supabase`.\n-- Apply with `supabase db push`; do not edit (the worker checks the \
             schema version it records).\n\n{}",
            migration.version,
            migration.description,
            migration.sql.as_str()
        );
        std::fs::write(dir.join(&name), text).with_context(|| format!("writing {name}"))?;
        println!("{}", dir.join(&name).display());
        written += 1;
    }
    println!(
        "{written} migration(s) written to {}, {kept} already there; next: `supabase db push` \
         (or `supabase start` / `supabase db reset` locally)",
        dir.display()
    );
    Ok(())
}

/// One timestamp per file to write, a second apart, the last one `now`: each after `newest`
/// (the Supabase CLI applies files in name order and refuses ones older than the last applied)
/// and none later than now (a `supabase migration new` made right after must sort after them).
/// `Err(seconds)`: how long until that is possible.
fn stamps(
    newest: Option<chrono::NaiveDateTime>,
    now: chrono::NaiveDateTime,
    count: usize,
) -> Result<Vec<chrono::NaiveDateTime>, i64> {
    let now = now.with_nanosecond(0).unwrap_or(now);
    let span = i64::try_from(count).unwrap_or(i64::MAX).saturating_sub(1);
    let first = now - chrono::Duration::seconds(span);
    if let Some(newest) = newest
        && count > 0
        && first <= newest
    {
        return Err((newest - first).num_seconds() + 1);
    }
    Ok((0..span + 1)
        .map(|i| first + chrono::Duration::seconds(i))
        .take(count)
        .collect())
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;

    use super::stamps;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%S").unwrap()
    }

    #[test]
    fn timestamps_sort_after_the_newest_file_and_never_pass_now() {
        let now = at("20261206081500");
        let all = stamps(Some(at("20261201000000")), now, 23).unwrap();
        assert_eq!(all.len(), 23);
        assert_eq!(*all.last().unwrap(), now, "the last one is now");
        assert_eq!(all[0], at("20261206081438"));
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(stamps(None, now, 1).unwrap(), vec![now]);
        assert!(stamps(None, now, 0).unwrap().is_empty());
        // A file from 10 s ago leaves room for 10 files, not 11.
        assert_eq!(
            stamps(Some(at("20261206081450")), now, 10).unwrap()[0],
            at("20261206081451")
        );
        assert_eq!(stamps(Some(at("20261206081450")), now, 11), Err(1));
        // One dated in the future (an older export): wait until ours can follow it.
        assert_eq!(stamps(Some(at("20261206081510")), now, 1), Err(11));
    }
}
