//! `[schedules.<name>]`: periodic jobs. The cron expression and the time zone are parsed here,
//! at load, so a bad one stops start-up naming its key; when they fire is `control::schedule`'s.

use std::fmt;
use std::str::FromStr;

use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{ConfigError, invalid, valid_kind_name};

/// One schedule: which job to enqueue, for whom, and when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// When: five fields (minute hour day-of-month month day-of-week) or six (seconds first),
    /// in `time_zone`'s wall-clock time.
    pub cron: CronExpression,
    /// An IANA time zone (`Europe/Paris`, `America/New_York`); default `UTC`.
    #[serde(default = "utc", deserialize_with = "time_zone")]
    pub time_zone: Tz,
    /// The job's kind (any replica serving it runs the job).
    pub kind: String,
    /// The job's owner: a user id in `auth.users` (a service user for "system" jobs).
    pub user: Uuid,
    /// The job's input: a TOML table, or a JSON object as a string (the form an environment
    /// variable can carry). Default `{}`.
    #[serde(default = "empty_object", deserialize_with = "input")]
    pub input: Value,
    /// After downtime: enqueue the latest missed fire time (`once`) or none (`skip`).
    #[serde(default)]
    pub catch_up: CatchUp,
    /// The job's priority (-100..=100, higher first); default 0.
    #[serde(default)]
    pub priority: i16,
    /// The job's attempts (1..=1000); default: the kind's `max_attempts`, else 3.
    pub max_attempts: Option<i32>,
}

/// A parsed cron expression and the text it was parsed from.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct CronExpression {
    text: String,
    cron: Cron,
}

impl CronExpression {
    /// The expression as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed pattern.
    pub fn cron(&self) -> &Cron {
        &self.cron
    }
}

impl fmt::Debug for CronExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for CronExpression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(text.trim())
            .map_err(|e| {
                format!(
                    "{text:?} is not a cron expression ({e}): expected 5 fields (minute hour day month weekday) or 6 (seconds first)"
                )
            })?;
        Ok(CronExpression {
            text: text.trim().to_owned(),
            cron,
        })
    }
}

impl TryFrom<String> for CronExpression {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

/// What a schedule does about fire times missed while no scheduler ran (`catch_up`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum CatchUp {
    /// Enqueue the latest missed fire time, once (never the earlier ones).
    #[default]
    Once,
    /// Enqueue none; the next regular fire time runs.
    Skip,
}

impl CatchUp {
    /// The configured word.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Once => "once",
            CatchUp::Skip => "skip",
        }
    }
}

impl TryFrom<String> for CatchUp {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "once" => Ok(CatchUp::Once),
            "skip" => Ok(CatchUp::Skip),
            other => Err(format!("{other:?}: expected once or skip")),
        }
    }
}

fn utc() -> Tz {
    Tz::UTC
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn time_zone<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
    let name = String::deserialize(d)?;
    name.trim().parse::<Tz>().map_err(|_| {
        serde::de::Error::custom(format!(
            "{name:?} is not an IANA time zone (e.g. UTC, Europe/Paris, America/New_York)"
        ))
    })
}

fn input<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Input {
        Table(Map<String, Value>),
        Json(String),
    }
    let object = match Input::deserialize(d)? {
        Input::Table(table) => table,
        Input::Json(text) => serde_json::from_str::<Map<String, Value>>(&text).map_err(|e| {
            serde::de::Error::custom(format!("expected a table or a JSON object ({e})"))
        })?,
    };
    Ok(Value::Object(object))
}

impl ScheduleSettings {
    /// Checks the values the types do not: the names and the ranges the queue accepts.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `schedules.<name>.<key>`.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("schedules.{name}.{field}");
        if !valid_kind_name(name) {
            return Err(invalid(
                "schedules",
                name,
                "schedule names are 1-64 of a-z 0-9 _ . - starting with a letter",
            ));
        }
        if !valid_kind_name(&self.kind) {
            return Err(invalid(
                key("kind"),
                &self.kind,
                "kind names are 1-64 of a-z 0-9 _ . - starting with a letter",
            ));
        }
        if !(-100..=100).contains(&self.priority) {
            return Err(invalid(
                key("priority"),
                self.priority,
                "expected -100..=100",
            ));
        }
        if let Some(max) = self.max_attempts
            && !(1..=1000).contains(&max)
        {
            return Err(invalid(key("max_attempts"), max, "expected 1..=1000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::super::Settings;
    use super::*;

    const USER: &str = "6f1c1c55-6f41-4c5e-9d1c-0a3f3f1e2b7d";

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "studio-schedules-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("worker.toml");
        std::fs::write(&path, toml).unwrap();
        let mut vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        vars.insert("DATABASE_URL".into(), "postgres://u@h/d".into());
        let loaded = Settings::load_from(Some(&path), vars);
        std::fs::remove_dir_all(&dir).unwrap();
        loaded
    }

    #[test]
    fn a_schedule_is_typed_at_load_with_its_defaults() {
        let s = load(
            &format!(
                "[schedules.nightly]\ncron = \"30 2 * * *\"\ntime_zone = \"America/New_York\"\nkind = \"report\"\nuser = \"{USER}\"\ninput = {{ sceneName = \"a\", frames = [1, 2], deep = {{ on = true }} }}\n[schedules.often]\ncron = \"*/10 * * * * *\"\nkind = \"ping\"\nuser = \"{USER}\"\n"
            ),
            &[],
        )
        .unwrap();
        let nightly = &s.schedules["nightly"];
        assert_eq!(nightly.cron.as_str(), "30 2 * * *");
        assert_eq!(nightly.time_zone, chrono_tz::America::New_York);
        assert_eq!(nightly.catch_up, CatchUp::Once);
        assert_eq!(
            nightly.input,
            json!({ "sceneName": "a", "frames": [1, 2], "deep": { "on": true } })
        );
        let often = &s.schedules["often"];
        assert_eq!(often.time_zone, chrono_tz::UTC);
        assert_eq!(often.input, json!({}));
        assert_eq!(often.priority, 0);
        assert_eq!(often.max_attempts, None);
    }

    #[test]
    fn environment_variables_set_and_override_a_schedule() {
        let s = load(
            &format!(
                "[schedules.nightly]\ncron = \"0 3 * * *\"\nkind = \"report\"\nuser = \"{USER}\"\n"
            ),
            &[
                ("STUDIO_SCHEDULES__NIGHTLY__CRON", "0 4 * * *"),
                ("STUDIO_SCHEDULES__NIGHTLY__CATCH_UP", "skip"),
                ("STUDIO_SCHEDULES__NIGHTLY__INPUT", r#"{"scope":"all"}"#),
            ],
        )
        .unwrap();
        let nightly = &s.schedules["nightly"];
        assert_eq!(nightly.cron.as_str(), "0 4 * * *");
        assert_eq!(nightly.catch_up, CatchUp::Skip);
        assert_eq!(nightly.input, json!({ "scope": "all" }));
    }

    #[test]
    fn bad_values_stop_loading_naming_the_key() {
        let base = format!("kind = \"report\"\nuser = \"{USER}\"\n");
        for (body, env, needle) in [
            (
                format!("cron = \"61 * * * *\"\n{base}"),
                vec![],
                "schedules.nightly.cron",
            ),
            (
                format!("cron = \"every day\"\n{base}"),
                vec![],
                "schedules.nightly.cron",
            ),
            (
                format!("cron = \"0 3 * * *\"\n{base}"),
                vec![("STUDIO_SCHEDULES__NIGHTLY__CRON", "* *")],
                "STUDIO_SCHEDULES__NIGHTLY__CRON",
            ),
            (
                format!("cron = \"0 3 * * *\"\ntime_zone = \"Mars/Olympus\"\n{base}"),
                vec![],
                "schedules.nightly.time_zone",
            ),
            (
                format!("cron = \"0 3 * * *\"\ncatch_up = \"all\"\n{base}"),
                vec![],
                "schedules.nightly.catch_up",
            ),
            (
                format!("cron = \"0 3 * * *\"\nkind = \"Report\"\nuser = \"{USER}\"\n"),
                vec![],
                "schedules.nightly.kind = Report",
            ),
            (
                "cron = \"0 3 * * *\"\nkind = \"report\"\nuser = \"me\"\n".to_owned(),
                vec![],
                "schedules.nightly.user",
            ),
            (
                "cron = \"0 3 * * *\"\nkind = \"report\"\n".to_owned(),
                vec![],
                "user",
            ),
            (
                format!("cron = \"0 3 * * *\"\npriority = 101\n{base}"),
                vec![],
                "schedules.nightly.priority = 101",
            ),
            (
                format!("cron = \"0 3 * * *\"\ninput = \"[1]\"\n{base}"),
                vec![],
                "schedules.nightly.input",
            ),
            (
                format!("cron = \"0 3 * * *\"\ncolour = \"red\"\n{base}"),
                vec![],
                "colour",
            ),
        ] {
            let err = load(&format!("[schedules.nightly]\n{body}"), &env)
                .expect_err(needle)
                .to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }
}
