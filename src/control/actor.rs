//! Who acted: the one description of an operator recorded beside what they changed
//! (`paused_by`, `declared_by`, a quota's `updated_by`, audit trails).
//!
//! Made from what is known, most specific first: an explicit name (`--as`, or what a caller such
//! as the dashboard authenticated), else the operating-system user (`$USER`, `$LOGNAME`), else the
//! database login role (`role:<name>`: containers and cron usually have no `$USER`); then `@` and
//! the host (`$HOSTNAME`, else the kernel's name) when one is known. Never "unknown".

use sqlx::PgPool;

/// The description for `explicit` (a name given by the caller), the environment's user and
/// host, and the database `login_role`.
#[must_use]
pub fn describe(explicit: Option<&str>, login_role: Option<&str>) -> String {
    describe_from(
        explicit,
        env_nonempty("USER").or_else(|| env_nonempty("LOGNAME")),
        login_role,
        host(),
    )
}

/// [`describe`] with the login role of a connection of `pool` (`session_user`, which `SET ROLE`
/// does not change); asked only when neither an explicit name nor `$USER` is known.
pub async fn current(pool: &PgPool, explicit: Option<&str>) -> String {
    let user = env_nonempty("USER").or_else(|| env_nonempty("LOGNAME"));
    let role = if explicit.is_some_and(|e| !e.trim().is_empty()) || user.is_some() {
        None
    } else {
        sqlx::query_scalar::<_, String>("select session_user::text")
            .fetch_one(pool)
            .await
            .ok()
    };
    describe_from(explicit, user, role.as_deref(), host())
}

fn describe_from(
    explicit: Option<&str>,
    user: Option<String>,
    login_role: Option<&str>,
    host: Option<String>,
) -> String {
    let who = explicit
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .or(user)
        .or_else(|| login_role.map(|role| format!("role:{role}")))
        .unwrap_or_else(|| "an unnamed operator".to_owned());
    match host {
        Some(host) if !who.contains('@') => format!("{who}@{host}"),
        _ => who,
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn host() -> Option<String> {
    Some(crate::queue::WorkerId::host()).filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::describe_from;

    #[test]
    fn the_most_specific_name_known_wins() {
        let host = || Some("box".to_owned());
        assert_eq!(
            describe_from(Some("oncall-ana"), Some("root".into()), Some("w"), host()),
            "oncall-ana@box"
        );
        assert_eq!(
            describe_from(None, Some("ana".into()), Some("w"), host()),
            "ana@box"
        );
        assert_eq!(
            describe_from(Some("  "), None, Some("studio_worker_login"), host()),
            "role:studio_worker_login@box",
            "no $USER (containers, cron): the login role"
        );
        assert_eq!(describe_from(None, None, Some("w"), None), "role:w");
        assert_eq!(
            describe_from(Some("ana@laptop"), None, None, host()),
            "ana@laptop",
            "a name with its own host is kept as given"
        );
    }
}
