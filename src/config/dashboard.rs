//! `[dashboard]`: the operators' web dashboard (issue 20).
//!
//! Off unless `dashboard.listen` is set, and refused on an address other than loopback unless
//! `dashboard.allow_remote` says a TLS reverse proxy is in front. Operators sign in with a
//! token; the configuration holds only its SHA-256 and a role.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// What an operator may do. Ordered: each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorRole {
    /// Reads everything, changes nothing.
    Viewer,
    /// Retries and cancels jobs (one or every job matching a filter), pauses and resumes kinds.
    Operator,
    /// Also sets quotas, declares and forgets kinds.
    Admin,
}

impl OperatorRole {
    /// The role's name, as configured.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Operator => "operator",
            OperatorRole::Admin => "admin",
        }
    }
}

/// One operator who may sign in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSettings {
    /// SHA-256 of the operator's sign-in token, hex (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// `viewer`, `operator` or `admin`.
    pub role: OperatorRole,
}

/// The dashboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardSettings {
    /// `ip:port` to serve the dashboard on; empty (the default) turns it off.
    pub listen: String,
    /// Allow a `listen` address other than loopback (only behind a TLS reverse proxy: the
    /// session cookie is `Secure`).
    pub allow_remote: bool,
    /// Operators by name (the name is what the audit trail records).
    pub operators: BTreeMap<String, OperatorSettings>,
    /// How long a sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Sign-in attempts allowed per client address per minute (and 5× that from all addresses).
    pub login_attempts_per_minute: u32,
    /// Connections of the dashboard's own pool (kept apart from the worker's).
    pub max_connections: u32,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            listen: String::new(),
            allow_remote: false,
            operators: BTreeMap::new(),
            session_ttl: Duration::from_secs(8 * 3600),
            login_attempts_per_minute: 10,
            max_connections: 4,
        }
    }
}

impl DashboardSettings {
    /// The listen address, or `None` when the dashboard is off.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `dashboard.listen` if it is not `ip:port`.
    pub fn listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen.trim().parse().map(Some).map_err(|_| {
            invalid(
                "dashboard.listen",
                &self.listen,
                "expected ip:port, e.g. 127.0.0.1:9091, or empty to disable",
            )
        })
    }

    /// The configured token hashes, decoded (validated at load).
    #[must_use]
    pub fn operator_hashes(&self) -> Vec<(String, [u8; 32], OperatorRole)> {
        self.operators
            .iter()
            .filter_map(|(name, op)| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&op.sha256, &mut hash).ok()?;
                Some((name.clone(), hash, op.role))
            })
            .collect()
    }

    /// Check every value; errors name the key and never print a hash.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(addr) = self.listen()? else {
            return Ok(());
        };
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(invalid(
                "dashboard.listen",
                &self.listen,
                "not a loopback address: serve it behind a TLS reverse proxy and set dashboard.allow_remote = true",
            ));
        }
        if self.operators.is_empty() {
            return Err(invalid(
                "dashboard.operators",
                "(none)",
                "the dashboard needs at least one operator: add [dashboard.operators.<name>] with sha256 and role",
            ));
        }
        for (name, op) in &self.operators {
            if !(1..=64).contains(&name.len())
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
            {
                return Err(invalid(
                    "dashboard.operators",
                    name,
                    "names are 1-64 of a-z A-Z 0-9 . _ - @",
                ));
            }
            if op.sha256.len() != 64 || hex::decode(&op.sha256).is_err() {
                return Err(invalid(
                    format!("dashboard.operators.{name}.sha256"),
                    "[REDACTED]",
                    "expected the token's SHA-256 as 64 hex digits",
                ));
            }
        }
        if self.session_ttl < Duration::from_secs(60)
            || self.session_ttl > Duration::from_secs(7 * 86_400)
        {
            return Err(invalid(
                "dashboard.session_ttl",
                humantime::format_duration(self.session_ttl),
                "must be between 1m and 7d",
            ));
        }
        if self.login_attempts_per_minute == 0 {
            return Err(invalid(
                "dashboard.login_attempts_per_minute",
                0,
                "must be at least 1",
            ));
        }
        if self.max_connections < 1 {
            return Err(invalid(
                "dashboard.max_connections",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut DashboardSettings)) -> DashboardSettings {
        let mut s = DashboardSettings {
            listen: "127.0.0.1:9091".into(),
            ..DashboardSettings::default()
        };
        s.operators.insert(
            "alice".into(),
            OperatorSettings {
                sha256: "ab".repeat(32),
                role: OperatorRole::Admin,
            },
        );
        f(&mut s);
        s
    }

    #[test]
    fn off_by_default_and_valid() {
        let s = DashboardSettings::default();
        assert_eq!(s.listen().unwrap(), None);
        s.validate().unwrap();
        with(|_| {}).validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key_and_hide_hashes() {
        for (s, needle) in [
            (
                with(|s| s.listen = "nine".into()),
                "dashboard.listen = nine",
            ),
            (
                with(|s| s.listen = "0.0.0.0:9091".into()),
                "dashboard.listen = 0.0.0.0:9091: not a loopback address",
            ),
            (with(|s| s.operators.clear()), "dashboard.operators"),
            (
                with(|s| {
                    s.operators.get_mut("alice").unwrap().sha256 = "hunter2".into();
                }),
                "dashboard.operators.alice.sha256 = [REDACTED]",
            ),
            (
                with(|s| s.session_ttl = Duration::from_secs(1)),
                "dashboard.session_ttl",
            ),
        ] {
            let err = s.validate().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_remote_address_needs_the_explicit_setting() {
        with(|s| {
            s.listen = "0.0.0.0:9091".into();
            s.allow_remote = true;
        })
        .validate()
        .unwrap();
    }

    #[test]
    fn roles_are_ordered_and_parse_lowercase() {
        assert!(OperatorRole::Viewer < OperatorRole::Operator);
        assert!(OperatorRole::Operator < OperatorRole::Admin);
        let op: OperatorSettings =
            serde_json::from_value(serde_json::json!({"sha256": "00", "role": "operator"}))
                .unwrap();
        assert_eq!(op.role, OperatorRole::Operator);
        assert!(
            serde_json::from_value::<OperatorSettings>(
                serde_json::json!({"sha256": "00", "role": "root"})
            )
            .is_err()
        );
    }
}
