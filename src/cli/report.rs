//! How a failed command is reported: one line of causes without repetition or driver noise, a
//! hint where the fix is known, and the exit code (2 for configuration errors and invalid
//! arguments the parser could not see, such as a kind name; 1 otherwise).

use std::error::Error as StdError;

use crate::config::ConfigError;

/// A bad argument only the database or the file system could reveal (an unknown kind, a missing
/// directory): reported as given, with exit code 2 like the parser's own refusals.
#[derive(Debug)]
pub struct BadArgument(pub String);

impl std::fmt::Display for BadArgument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for BadArgument {}

/// What to print for a failure, and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The causes, outermost first, joined by `: `; each said once.
    pub message: String,
    /// What to do about it, when that is known.
    pub hint: Option<&'static str>,
    /// 2 for configuration errors, 1 for everything else.
    pub exit_code: u8,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// The report for `err`.
#[must_use]
pub fn report(err: &anyhow::Error) -> Report {
    // Wrappers (`#[error(transparent)]`) repeat a database error's text with sqlx's decoration;
    // strip it wherever it appears.
    let noise: Vec<String> = err
        .chain()
        .filter_map(database_error)
        .filter_map(|db| db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
        .filter_map(|db| db.line().map(|line| format!(" at line {line}")))
        .collect();
    let mut parts: Vec<String> = Vec::new();
    let mut hint = None;
    let mut exit_code = 1;
    for cause in err.chain() {
        if cause.is::<ConfigError>()
            || cause.is::<BadArgument>()
            || matches!(
                cause.downcast_ref::<crate::queue::Error>(),
                Some(crate::queue::Error::InvalidKind(_))
            )
        {
            exit_code = 2;
        }
        hint = hint.or_else(|| hint_for(cause));
        let mut text = describe(cause);
        for noise in &noise {
            text = text.replace(noise.as_str(), "");
        }
        let text = text.replace("error returned from database: ", "");
        if text.is_empty() || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    Report {
        message: parts.join(": "),
        hint,
        exit_code,
    }
}

/// One cause's own text: a database error's message without sqlx's prefix or PostgreSQL's
/// source line (`at line 1371`), which describe the server's code, not the user's problem.
fn describe(cause: &(dyn StdError + 'static)) -> String {
    match database_error(cause) {
        Some(db) => db.message().to_owned(),
        None => cause.to_string(),
    }
}

/// The database's own error, whether the chain holds sqlx's error or (behind a transparent
/// wrapper) the boxed server error it carries.
fn database_error<'a>(
    cause: &'a (dyn StdError + 'static),
) -> Option<&'a (dyn sqlx::error::DatabaseError + 'static)> {
    if let Some(sqlx::Error::Database(db)) = cause.downcast_ref::<sqlx::Error>() {
        return Some(&**db);
    }
    cause
        .downcast_ref::<Box<dyn sqlx::error::DatabaseError>>()
        .map(|db| &**db)
}

fn hint_for(cause: &(dyn StdError + 'static)) -> Option<&'static str> {
    if cause.is::<crate::api::ApiRoleRefused>() {
        return Some(crate::api::ApiRoleRefused::HINT);
    }
    if let Some(sqlx::Error::Io(io)) = cause.downcast_ref::<sqlx::Error>() {
        return io_hint(io);
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        return io_hint(io);
    }
    let code = database_error(cause).and_then(|db| db.code().map(|c| c.into_owned()));
    match code.as_deref()? {
        // undefined_table, undefined_function, invalid_schema_name
        "42P01" | "42883" | "3F000" => Some(
            "the schema is missing or older than this binary: run `studio-worker migrate` as the \
             schema owner (postgres on Supabase)",
        ),
        // insufficient_privilege
        "42501" => Some(
            "the login role needs the worker's grants: `grant studio_worker to <login role>` \
             (as the schema owner)",
        ),
        // invalid_password, invalid_authorization_specification
        "28P01" | "28000" => Some(
            "check the user and password (DATABASE_URL, or STUDIO_DATABASE__PASSWORD) and the \
             server's pg_hba.conf",
        ),
        // invalid_catalog_name
        "3D000" => Some("the database named in DATABASE_URL does not exist on that server"),
        _ => None,
    }
}

fn io_hint(io: &std::io::Error) -> Option<&'static str> {
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => Some(
            "nothing accepts connections there: is PostgreSQL running, and are the host and port \
             in DATABASE_URL right?",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_said_are_not_repeated() {
        let err = anyhow::anyhow!("relation \"x\" does not exist")
            .context("relation \"x\" does not exist")
            .context("listing jobs");
        let report = report(&err);
        assert_eq!(
            report.message,
            "listing jobs: relation \"x\" does not exist"
        );
        assert_eq!(report.exit_code, 1);
    }

    #[test]
    fn configuration_errors_exit_2() {
        let err = anyhow::Error::new(ConfigError::Invalid {
            key: "kinds".into(),
            value: "(none)".into(),
            reason: "add one".into(),
        })
        .context("starting");
        assert_eq!(report(&err).exit_code, 2);
    }

    #[test]
    fn a_refused_connection_gets_a_hint() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = anyhow::Error::new(sqlx::Error::Io(io)).context("connecting to u@h:1/d");
        let report = report(&err);
        assert!(
            report
                .hint
                .is_some_and(|h| h.contains("PostgreSQL running"))
        );
    }
}
