//! Static checks of the container packaging: `docker-compose.yml`, `Dockerfile`,
//! `.dockerignore` and `docker/`, held against what the binary really accepts (its settings
//! loader) and what the image really contains. Needs neither Docker nor a database.
//!
//! `cargo test --test compose`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use studio_worker::config::Settings;

/// After `worker.shutdown_grace`, the worker waits this much longer for cancelled jobs
/// (`HARD_STOP` in src/worker/mod.rs) before it exits: Docker must not SIGKILL it sooner.
const HARD_STOP: Duration = Duration::from_secs(10);

/// The demo user: seeded by docker/seed.sql, owner of the demo job.
const DEMO_USER: &str = "00000000-0000-4000-8000-000000000001";

// ------------------------------------------------------------------------------------------
// Reading the files

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// docker-compose.yml as written (before interpolation), YAML merge keys applied.
fn raw_compose() -> Value {
    let text = read("docker-compose.yml");
    let mut yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).expect("docker-compose.yml is not valid YAML");
    yaml.apply_merge()
        .expect("docker-compose.yml: YAML merge keys (<<) could not be applied");
    serde_json::to_value(yaml).expect("docker-compose.yml has a mapping key that is not a string")
}

/// docker-compose.yml after interpolation with dummy values for every `${VAR}`, as Compose
/// would see it with a filled-in .env.
fn compose() -> Value {
    let mut doc = raw_compose();
    interpolate_all(&mut doc, &mut Vec::new());
    doc
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no `{name}` service"))
}

/// A command, entrypoint or healthcheck test as a list of words (string form split on
/// whitespace, as Compose does for these keys).
fn words(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .unwrap_or_else(|| panic!("expected a list of strings, found {item}"))
                    .to_owned()
            })
            .collect(),
        other => panic!("expected a string or a list of strings, found {other}"),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A service's `environment`, in either the mapping or the `KEY=VALUE` list form.
fn environment(svc: &Value) -> BTreeMap<String, String> {
    match &svc["environment"] {
        Value::Null => BTreeMap::new(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let item = item.as_str().expect("environment list entries are strings");
                match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (item.to_owned(), String::new()),
                }
            })
            .collect(),
        other => panic!("environment must be a mapping or a list, found {other}"),
    }
}

fn depends_condition(svc: &Value, on: &str) -> Option<String> {
    match &svc["depends_on"] {
        Value::Object(map) => map.get(on).map(|d| {
            d["condition"]
                .as_str()
                .unwrap_or("service_started")
                .to_owned()
        }),
        Value::Array(list) => list
            .iter()
            .any(|d| d.as_str() == Some(on))
            .then(|| "service_started".to_owned()),
        _ => None,
    }
}

fn compose_duration(value: &Value, what: &str) -> Duration {
    let text = value.as_str().unwrap_or_else(|| {
        panic!("{what} must be a duration string such as \"40s\", found {value}")
    });
    humantime::parse_duration(text)
        .unwrap_or_else(|e| panic!("{what} = {text:?} is not a duration: {e}"))
}

// ------------------------------------------------------------------------------------------
// Compose interpolation (`$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
// `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}`)

/// One `${...}` reference: the variable and the operator after its name ("" for none).
#[derive(Debug, Clone)]
struct Reference {
    name: String,
    op: String,
}

fn dummy(name: &str) -> String {
    // Long enough for secrets with a minimum length (api.jwt_secret: 32 bytes).
    format!(
        "dummy-{}-0123456789abcdef0123456789",
        name.to_ascii_lowercase()
    )
}

/// Replaces every reference in `text` (a set variable gets a URL-safe dummy value; defaults
/// apply only to variables left unset, which none is here), recording what it read.
fn interpolate(text: &str, refs: &mut Vec<Reference>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .unwrap_or_else(|| panic!("unterminated ${{...}} in {text:?}"));
            let inner = &body[..end];
            assert!(
                !inner.contains('$'),
                "nested interpolation in {text:?} is not supported by this test"
            );
            let name_len = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            let (name, modifier) = inner.split_at(name_len);
            assert!(!name.is_empty(), "empty variable name in {text:?}");
            let op = [":-", ":?", ":+", "-", "?", "+"]
                .into_iter()
                .find(|op| modifier.starts_with(op))
                .unwrap_or("");
            assert!(
                op.len() == modifier.len() || !op.is_empty(),
                "unknown interpolation modifier {modifier:?} in {text:?}"
            );
            let arg = &modifier[op.len()..];
            out.push_str(&match op {
                ":+" | "+" => arg.to_owned(),
                _ => dummy(name),
            });
            refs.push(Reference {
                name: name.to_owned(),
                op: op.to_owned(),
            });
            rest = &body[end + 1..];
        } else {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 {
                out.push('$');
            } else {
                out.push_str(&dummy(&after[..name_len]));
                refs.push(Reference {
                    name: after[..name_len].to_owned(),
                    op: String::new(),
                });
            }
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    out
}

fn interpolate_all(value: &mut Value, refs: &mut Vec<Reference>) {
    match value {
        Value::String(s) => *s = interpolate(s, refs),
        Value::Array(items) => items.iter_mut().for_each(|v| interpolate_all(v, refs)),
        Value::Object(map) => map.values_mut().for_each(|v| interpolate_all(v, refs)),
        _ => {}
    }
}

/// The variables a raw (uninterpolated) value reads.
fn variables_in(value: &Value) -> BTreeSet<String> {
    let mut copy = value.clone();
    let mut refs = Vec::new();
    interpolate_all(&mut copy, &mut refs);
    refs.into_iter().map(|r| r.name).collect()
}

#[test]
fn interpolation_helper_follows_compose_rules() {
    let mut refs = Vec::new();
    assert_eq!(
        interpolate("a $$b ${X:?m} ${Y:-d} $Z ${W:+on}", &mut refs),
        "a $b dummy-x-0123456789abcdef0123456789 dummy-y-0123456789abcdef0123456789 \
         dummy-z-0123456789abcdef0123456789 on"
    );
    let ops: Vec<_> = refs
        .iter()
        .map(|r| (r.name.as_str(), r.op.as_str()))
        .collect();
    assert_eq!(ops, [("X", ":?"), ("Y", ":-"), ("Z", ""), ("W", ":+")]);
}

// ------------------------------------------------------------------------------------------
// The Dockerfile

/// One Dockerfile instruction: keyword (upper case), its arguments, and the stage it is in.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
    stage: usize,
}

/// Logical lines (continuations joined, comments and blank lines dropped), numbered by stage
/// (0 = before the first FROM).
fn dockerfile() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    assert!(
        current.is_empty(),
        "Dockerfile ends inside a continued line"
    );
    let mut stage = 0;
    logical
        .into_iter()
        .map(|line| {
            let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let keyword = keyword.to_ascii_uppercase();
            if keyword == "FROM" {
                stage += 1;
            }
            Instruction {
                keyword,
                args: args.trim().to_owned(),
                stage,
            }
        })
        .collect()
}

/// `["a", "b"]` exec form, or `None` for the shell form.
fn exec_form(args: &str) -> Option<Vec<String>> {
    args.trim_start()
        .starts_with('[')
        .then(|| serde_json::from_str(args).unwrap_or_else(|e| panic!("bad exec form {args}: {e}")))
}

/// Words of an instruction, with leading `--flag=value` options split off.
fn flags_and_words(args: &str) -> (Vec<String>, Vec<String>) {
    let mut flags = Vec::new();
    let mut words = Vec::new();
    for word in args.split_whitespace() {
        if words.is_empty() && word.starts_with("--") {
            flags.push(word.to_owned());
        } else {
            words.push(word.to_owned());
        }
    }
    (flags, words)
}

fn final_stage(instructions: &[Instruction]) -> usize {
    instructions.iter().map(|i| i.stage).max().unwrap_or(0)
}

/// Build-context files copied into the final image: image path -> context path.
fn image_files(instructions: &[Instruction]) -> BTreeMap<String, String> {
    let last = final_stage(instructions);
    let mut workdir = "/".to_owned();
    let mut files = BTreeMap::new();
    for ins in instructions.iter().filter(|i| i.stage == last) {
        match ins.keyword.as_str() {
            "WORKDIR" => {
                workdir = if ins.args.starts_with('/') {
                    ins.args.clone()
                } else {
                    format!("{}/{}", workdir.trim_end_matches('/'), ins.args)
                };
            }
            "COPY" | "ADD" => {
                let (flags, mut words) = flags_and_words(&ins.args);
                if flags.iter().any(|f| f.starts_with("--from")) {
                    continue;
                }
                let dest = words.pop().expect("COPY needs a destination");
                let dest = if dest.starts_with('/') {
                    dest
                } else {
                    format!("{}/{}", workdir.trim_end_matches('/'), dest)
                };
                for src in &words {
                    let into_dir = dest.ends_with('/') || words.len() > 1;
                    let target = if into_dir {
                        let base = Path::new(src).file_name().unwrap().to_string_lossy();
                        format!("{}/{base}", dest.trim_end_matches('/'))
                    } else {
                        dest.clone()
                    };
                    files.insert(target, src.clone());
                }
            }
            _ => {}
        }
    }
    files
}

fn arg_defaults(instructions: &[Instruction]) -> HashMap<String, String> {
    instructions
        .iter()
        .filter(|i| i.keyword == "ARG")
        .filter_map(|i| i.args.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// A FROM line's image with `${ARG}`s replaced by their defaults.
fn base_image(ins: &Instruction, args: &HashMap<String, String>) -> String {
    let image = ins.args.split_whitespace().next().unwrap_or("");
    let mut resolved = image.to_owned();
    for (k, v) in args {
        resolved = resolved
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    resolved
}

/// `1.95-slim-bookworm` or `1.95.0` -> (1, 95).
fn parse_version(text: &str) -> (u32, u32) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let mut parts = text[..end]
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

// ------------------------------------------------------------------------------------------
// The services that run the studio-worker image, and the settings each would load

/// Services built from the Dockerfile, or running the image those build.
fn studio_services(compose: &Value) -> Vec<(String, Value)> {
    let services = compose["services"]
        .as_object()
        .expect("services is a mapping");
    let images: BTreeSet<&str> = services
        .values()
        .filter(|s| !s["build"].is_null())
        .filter_map(|s| s["image"].as_str())
        .collect();
    services
        .iter()
        .filter(|(_, s)| {
            !s["build"].is_null() || s["image"].as_str().is_some_and(|i| images.contains(i))
        })
        .map(|(name, s)| (name.clone(), s.clone()))
        .collect()
}

/// The argument after `--config`/`-c` (or `--config=...`), if any.
fn config_flag(args: &[String]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" || a == "-c" {
            Some(args.get(i + 1).expect("--config needs a value").clone())
        } else {
            a.strip_prefix("--config=").map(str::to_owned)
        }
    })
}

/// What `studio-worker` would load in service `name`'s container: its environment (already
/// interpolated) and the --config file, mapped back to the build context through the
/// Dockerfile's COPY lines. Panics with the loader's own message on any rejected key or value.
fn settings_for(name: &str, svc: &Value) -> Settings {
    let env: HashMap<String, String> = environment(svc).into_iter().collect();
    let args = words(&svc["command"]);
    let container_path = config_flag(&args).or_else(|| env.get("STUDIO_CONFIG").cloned());
    let file = container_path.map(|path| {
        let files = image_files(&dockerfile());
        let src = files.get(&path).unwrap_or_else(|| {
            panic!(
                "service {name}: --config {path} is not a file the Dockerfile copies into the \
                 image (it copies {:?})",
                files.keys().collect::<Vec<_>>()
            )
        });
        repo_path(src)
    });
    Settings::load_from(file.as_deref(), env).unwrap_or_else(|e| {
        panic!("service {name}: studio-worker would refuse to start with this environment: {e}")
    })
}

fn database_user(settings: &Settings) -> String {
    let described = settings.database.describe();
    let (user, _) = described
        .split_once('@')
        .unwrap_or_else(|| panic!("cannot read the user from database.url ({described})"));
    user.to_owned()
}

// ------------------------------------------------------------------------------------------
// docker-compose.yml

#[test]
fn compose_file_is_a_compose_spec_project_with_the_expected_services() {
    let raw = raw_compose();
    assert!(
        raw.get("version").is_none(),
        "docker-compose.yml: drop the obsolete top-level `version:` key (Compose specification)"
    );
    let doc = compose();
    let services = doc["services"]
        .as_object()
        .expect("docker-compose.yml needs a `services` mapping");
    for name in ["db", "migrate", "worker"] {
        assert!(
            services.contains_key(name),
            "docker-compose.yml: no `{name}` service"
        );
    }
    for (name, svc) in services {
        assert!(
            svc["image"].is_string() || !svc["build"].is_null(),
            "service {name} has neither `image` nor `build`"
        );
        if let Value::Object(deps) = &svc["depends_on"] {
            for dep in deps.keys() {
                assert!(
                    services.contains_key(dep),
                    "service {name} depends on `{dep}`, which does not exist"
                );
            }
        }
    }
    let declared = doc["volumes"].as_object().cloned().unwrap_or_default();
    for (name, svc) in services {
        for volume in words(&svc["volumes"]) {
            let source = volume.split(':').next().unwrap_or("");
            let is_path =
                source.starts_with('.') || source.starts_with('/') || source.starts_with('~');
            if is_path {
                let path = source.trim_start_matches("./");
                assert!(
                    repo_path(path).exists(),
                    "service {name} mounts {source}, which is not in the repository"
                );
            } else {
                assert!(
                    declared.contains_key(source),
                    "service {name} uses volume `{source}`, not declared under top-level volumes"
                );
            }
        }
    }
}

#[test]
fn every_variable_compose_reads_has_a_default_or_fails_loudly() {
    let mut refs = Vec::new();
    interpolate_all(&mut raw_compose(), &mut refs);
    assert!(
        !refs.is_empty(),
        "docker-compose.yml reads no variables: where do passwords come from?"
    );
    for r in &refs {
        assert!(
            r.op == ":?" || r.op == ":-",
            "${{{}}} has neither a default (`:-`) nor a required-check (`:?message`): an unset \
             .env entry would silently become an empty value",
            r.name
        );
    }
    let required: BTreeSet<&str> = refs
        .iter()
        .filter(|r| r.op == ":?")
        .map(|r| r.name.as_str())
        .collect();
    for name in ["POSTGRES_PASSWORD", "WORKER_DB_PASSWORD"] {
        assert!(
            required.contains(name),
            "{name} must be required (`${{{name}:?...}}`)"
        );
    }
}

#[test]
fn db_is_postgres_15_with_logical_wal_a_health_check_and_the_worker_roles() {
    let raw = raw_compose();
    let doc = compose();
    let db = service(&doc, "db");
    let image = db["image"].as_str().unwrap_or("");
    assert!(
        image == "postgres:15" || image.starts_with("postgres:15."),
        "db must run postgres:15, found {image:?}"
    );
    let command = words(&db["command"]);
    assert!(
        command.iter().any(|w| w == "wal_level=logical"),
        "db must start with `-c wal_level=logical` (realtime publication), command is {command:?}"
    );
    let test = words(&db["healthcheck"]["test"]);
    assert!(
        test.iter().any(|w| w == "pg_isready"),
        "db needs a pg_isready health check (migrate waits for service_healthy), found {test:?}"
    );

    let raw_env = environment(service(&raw, "db"));
    let password = raw_env
        .get("POSTGRES_PASSWORD")
        .map(String::as_str)
        .unwrap_or("");
    assert!(
        password.contains(":?"),
        "db: POSTGRES_PASSWORD must come from .env and be required (${{POSTGRES_PASSWORD:?...}}), \
         found {password:?}"
    );
    assert!(
        environment(db).contains_key("WORKER_DB_PASSWORD"),
        "db: the init script needs WORKER_DB_PASSWORD to create studio_worker_login"
    );

    let volumes = words(&db["volumes"]);
    assert!(
        volumes.iter().any(|v| {
            let (source, target) = v.split_once(':').unwrap_or(("", ""));
            !source.starts_with('.') && target.starts_with("/var/lib/postgresql/data")
        }),
        "db: keep the data in a named volume at /var/lib/postgresql/data, volumes are {volumes:?}"
    );
    let initdb = volumes
        .iter()
        .find_map(|v| {
            let mut parts = v.split(':');
            let source = parts.next()?;
            (parts.next()? == "/docker-entrypoint-initdb.d").then_some(source)
        })
        .expect("db: mount the role script directory at /docker-entrypoint-initdb.d");
    let dir = repo_path(initdb.trim_start_matches("./"));
    let mut script = String::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql" || e == "sh") {
            script.push_str(&std::fs::read_to_string(&path).unwrap().to_lowercase());
        }
    }
    for needle in [
        "create role studio_worker nologin",
        "studio_worker_login login password",
        "in role studio_worker",
        "getenv worker_password worker_db_password",
    ] {
        assert!(
            script.contains(needle),
            "{initdb}: the init script should contain `{needle}`"
        );
    }
    assert!(
        !script
            .lines()
            .any(|l| l.trim_start().starts_with("\\echo") && l.contains("password'")),
        "{initdb}: never echo the password"
    );
    let migration = read("migrations/0004_roles_rls.sql");
    assert!(
        migration.contains("to studio_worker;"),
        "migrations/0004 no longer grants to studio_worker: the init script's roles are stale"
    );
}

#[test]
fn migrate_runs_once_as_the_schema_owner_after_the_database_is_healthy() {
    let doc = compose();
    let migrate = service(&doc, "migrate");
    let command = words(&migrate["command"]);
    assert!(
        command.iter().any(|w| w == "migrate"),
        "migrate must run the `migrate` subcommand, command is {command:?}"
    );
    assert_eq!(
        depends_condition(migrate, "db").as_deref(),
        Some("service_healthy"),
        "migrate must wait for db with `condition: service_healthy`"
    );
    assert_eq!(
        migrate["restart"].as_str(),
        Some("no"),
        "migrate is a one-shot job: `restart: \"no\"`"
    );
    let settings = settings_for("migrate", migrate);
    assert_eq!(
        database_user(&settings),
        "postgres",
        "migrate must connect as the schema owner (postgres), not the worker's role"
    );
}

#[test]
fn worker_waits_for_migrations_drains_before_sigkill_and_reports_health() {
    let raw = raw_compose();
    let doc = compose();
    let worker = service(&doc, "worker");
    let settings = settings_for("worker", worker);

    let command = words(&worker["command"]);
    assert!(
        command.iter().any(|w| w == "run"),
        "worker must run `run`, command is {command:?}"
    );
    assert_eq!(
        depends_condition(worker, "migrate").as_deref(),
        Some("service_completed_successfully"),
        "worker must start only after migrate has succeeded (`condition: \
         service_completed_successfully`): the daemon refuses an old schema"
    );

    let grace = compose_duration(&worker["stop_grace_period"], "worker.stop_grace_period");
    let needed = settings.worker.shutdown_grace + HARD_STOP;
    assert!(
        grace >= needed,
        "worker: stop_grace_period {grace:?} is shorter than worker.shutdown_grace {:?} + the \
         {HARD_STOP:?} hard stop: Docker would SIGKILL the drain",
        settings.worker.shutdown_grace
    );

    let restart = worker["restart"].as_str().unwrap_or("no");
    assert!(
        restart == "unless-stopped" || restart == "always",
        "worker is a daemon: restart unless-stopped, found {restart:?}"
    );
    assert!(
        worker.get("container_name").is_none(),
        "worker: no container_name, or `--scale worker=3` cannot work"
    );
    let listen = settings
        .http
        .listen
        .expect("worker: http.listen is empty, so there is nothing for the health check");
    for port in worker["ports"].as_array().cloned().unwrap_or_default() {
        let fixed = match &port {
            Value::Object(long) => !long.get("published").is_none_or(|p| scalar(p).is_empty()),
            short => {
                let text = scalar(short);
                let text = text.split('/').next().unwrap_or("");
                let parts: Vec<&str> = text.split(':').collect();
                match parts.len() {
                    1 => false,
                    2 => !parts[0].is_empty(),
                    _ => !parts[parts.len() - 2].is_empty(),
                }
            }
        };
        assert!(
            !fixed,
            "worker publishes {port} on a fixed host port: replicas would collide"
        );
        assert!(
            listen.ip().is_unspecified(),
            "worker publishes a port but http.listen is {listen}: set STUDIO_HTTP__LISTEN=0.0.0.0:{}",
            listen.port()
        );
    }

    let health = &worker["healthcheck"];
    assert!(
        health["disable"].as_bool() != Some(true),
        "worker: health check disabled"
    );
    let test = words(&health["test"]);
    assert_eq!(
        test.first().map(String::as_str),
        Some("CMD"),
        "worker: the health check should be exec form [\"CMD\", ...], found {test:?}"
    );
    let joined = test.join(" ");
    assert!(
        joined.contains("/healthz") && joined.contains(&format!("/{}", listen.port())),
        "worker: the health check must GET /healthz on port {} (http.listen), found {test:?}",
        listen.port()
    );
    let image_check = dockerfile()
        .into_iter()
        .filter(|i| i.keyword == "HEALTHCHECK")
        .find_map(|i| {
            let at = i.args.find("CMD")?;
            exec_form(&i.args[at + 3..])
        })
        .expect("the Dockerfile's HEALTHCHECK should use the exec form CMD [...]");
    assert_eq!(
        test[1..],
        image_check[..],
        "worker: the compose health check and the image's HEALTHCHECK differ"
    );

    assert_ne!(
        database_user(&settings),
        "postgres",
        "worker: connect as studio_worker_login (a member of studio_worker), never the superuser"
    );
    let raw_worker = service(&raw, "worker");
    let read_vars = variables_in(&raw_worker["environment"]);
    assert!(
        !read_vars.contains("POSTGRES_PASSWORD"),
        "worker: must not be given the superuser's password"
    );
    assert!(
        read_vars.contains("WORKER_DB_PASSWORD"),
        "worker: its password should come from WORKER_DB_PASSWORD, as db's init script uses"
    );
    assert_eq!(
        settings.log.format,
        studio_worker::config::LogFormat::Json,
        "worker: log as JSON in containers (STUDIO_LOG__FORMAT=json)"
    );

    assert!(
        !settings.kinds.is_empty(),
        "worker: no job kinds configured, `run` would refuse to start"
    );
    let files = image_files(&dockerfile());
    let workdir = dockerfile()
        .into_iter()
        .rfind(|i| i.keyword == "WORKDIR")
        .map_or_else(|| "/".to_owned(), |i| i.args);
    for (kind, kind_settings) in &settings.kinds {
        let studio_worker::config::ExecutorSettings::Command(command) = &kind_settings.executor
        else {
            continue;
        };
        let Some(program) = command.command.first() else {
            continue;
        };
        if program.contains('/') {
            let in_image = if program.starts_with('/') {
                program.clone()
            } else {
                format!("{}/{program}", workdir.trim_end_matches('/'))
            };
            let src = files.get(&in_image).unwrap_or_else(|| {
                panic!("kinds.{kind}: {in_image} is not copied into the image by the Dockerfile")
            });
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(repo_path(src))
                    .unwrap()
                    .permissions()
                    .mode();
                assert!(mode & 0o111 != 0, "kinds.{kind}: {src} is not executable");
            }
        }
    }
}

#[test]
fn every_studio_variable_in_compose_is_a_real_setting() {
    // The loader rejects unknown keys (deny_unknown_fields); without that, this test proves nothing.
    let mut typo = HashMap::new();
    typo.insert("DATABASE_URL".to_owned(), "postgres://u@h/d".to_owned());
    typo.insert("STUDIO_WORKER__CONCURENCY".to_owned(), "4".to_owned());
    assert!(
        Settings::load_from(None, typo).is_err(),
        "Settings::load_from accepted STUDIO_WORKER__CONCURENCY: unknown keys are not rejected"
    );

    let doc = compose();
    let services = studio_services(&doc);
    assert!(
        services.iter().any(|(n, _)| n == "worker") && services.iter().any(|(n, _)| n == "migrate"),
        "worker and migrate must be built from the Dockerfile"
    );
    for (name, svc) in &services {
        assert!(
            svc.get("env_file").is_none(),
            "service {name}: no env_file: every STUDIO_* variable in it would be read as a \
             setting, and unknown ones are rejected"
        );
        // Each STUDIO_* variable on its own (a kind's variables together: a kind defined only
        // through the environment needs several), over defaults and DATABASE_URL, so a typo is
        // reported with its name.
        let env = environment(svc);
        let mut groups: BTreeMap<String, Vec<(&String, &String)>> = BTreeMap::new();
        for (key, value) in env.iter().filter(|(k, _)| k.starts_with("STUDIO_")) {
            // The API's settings only make sense together (a listener needs a key).
            let group = match key.strip_prefix("STUDIO_KINDS__") {
                Some(rest) => format!("STUDIO_KINDS__{}", rest.split("__").next().unwrap_or("")),
                None if key.starts_with("STUDIO_API__") => "STUDIO_API__".to_owned(),
                None => key.clone(),
            };
            groups.entry(group).or_default().push((key, value));
        }
        for (group, pairs) in groups {
            let mut vars: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).clone(), (*v).clone()))
                .collect();
            vars.entry("DATABASE_URL".to_owned())
                .or_insert_with(|| "postgres://u@h/d".to_owned());
            if let Err(e) = Settings::load_from(None, vars) {
                panic!("service {name}: {group} is not a valid setting ({pairs:?}): {e}");
            }
        }
        // And everything together, with the service's --config file, as the container would.
        settings_for(name, svc);
    }
}

#[test]
fn demo_profile_seeds_a_user_and_enqueues_a_job_for_it() {
    let doc = compose();
    let profiles = |svc: &Value| words(&svc["profiles"]);
    for name in ["seed", "demo"] {
        assert!(
            profiles(service(&doc, name)).iter().any(|p| p == "demo"),
            "{name} is demo-only: `profiles: [\"demo\"]`"
        );
    }
    for name in ["db", "migrate", "worker"] {
        assert!(
            profiles(service(&doc, name)).is_empty(),
            "{name} must run without a profile"
        );
    }
    let seed = service(&doc, "seed");
    assert_eq!(
        depends_condition(seed, "migrate").as_deref(),
        Some("service_completed_successfully"),
        "seed writes to auth.users, which migrate creates: wait for it to complete"
    );
    let seed_sql = read("docker/seed.sql").to_lowercase();
    assert!(
        seed_sql.contains("auth.users")
            && seed_sql.contains(DEMO_USER)
            && seed_sql.contains("on conflict do nothing"),
        "docker/seed.sql should insert {DEMO_USER} into auth.users, idempotently"
    );

    let demo = service(&doc, "demo");
    assert_eq!(
        depends_condition(demo, "seed").as_deref(),
        Some("service_completed_successfully"),
        "demo must wait for the seed user"
    );
    let command = words(&demo["command"]);
    assert!(
        command.iter().any(|w| w == "enqueue"),
        "demo must run enqueue, command is {command:?}"
    );
    let user = command
        .iter()
        .position(|w| w == "--user")
        .and_then(|i| command.get(i + 1))
        .expect("demo: enqueue needs --user");
    assert_eq!(
        uuid::Uuid::parse_str(user)
            .expect("demo: --user is not a UUID")
            .to_string(),
        DEMO_USER,
        "demo enqueues for a user the seed does not create"
    );
    let input = command
        .iter()
        .position(|w| w == "--input")
        .and_then(|i| command.get(i + 1))
        .expect("demo: enqueue needs --input");
    serde_json::from_str::<Value>(input).expect("demo: --input is not JSON");
    let settings = settings_for("demo", demo);
    let kind = command
        .iter()
        .position(|w| w == "--kind")
        .and_then(|i| command.get(i + 1))
        .expect("demo: enqueue needs --kind");
    assert!(
        settings_for("worker", service(&doc, "worker"))
            .kinds
            .contains_key(kind),
        "demo enqueues kind {kind:?}, which the worker does not run"
    );
    assert_ne!(
        database_user(&settings),
        "postgres",
        "demo enqueues as the worker's login role, not the superuser"
    );
}

// ------------------------------------------------------------------------------------------
// Dockerfile and .dockerignore

#[test]
fn dockerfile_is_multi_stage_locked_unprivileged_and_holds_no_secrets() {
    let instructions = dockerfile();
    let froms: Vec<&Instruction> = instructions
        .iter()
        .filter(|i| i.keyword == "FROM")
        .collect();
    assert!(
        froms.len() >= 2,
        "Dockerfile: use a multi-stage build (builder + runtime)"
    );
    let args = arg_defaults(&instructions);

    let builder = base_image(froms[0], &args);
    let tag = builder
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("Dockerfile: build with a rust:* image, found {builder}"));
    let manifest = read("Cargo.toml");
    let msrv = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version"))
        .and_then(|l| l.split('"').nth(1))
        .expect("Cargo.toml has no rust-version");
    assert!(
        parse_version(tag) >= parse_version(msrv),
        "Dockerfile: the builder {builder} is older than Cargo.toml's rust-version {msrv}"
    );
    let runtime = base_image(froms[froms.len() - 1], &args);
    assert!(
        runtime.starts_with("debian:") && runtime.contains("slim"),
        "Dockerfile: the runtime stage should be debian:*-slim, found {runtime}"
    );

    let cargo_runs: Vec<&Instruction> = instructions
        .iter()
        .filter(|i| i.keyword == "RUN" && i.args.contains("cargo "))
        .collect();
    assert!(
        cargo_runs
            .iter()
            .any(|i| i.args.contains("cargo build --release")),
        "Dockerfile: no `cargo build --release`"
    );
    for ins in &cargo_runs {
        for part in ins.args.split("&&") {
            let part = part.trim();
            if [
                "cargo build",
                "cargo install",
                "cargo fetch",
                "cargo chef cook",
            ]
            .iter()
            .any(|c| part.starts_with(c))
            {
                assert!(
                    part.contains("--locked"),
                    "Dockerfile: `{part}` without --locked"
                );
            }
        }
    }

    let last = final_stage(&instructions);
    let runtime_stage: Vec<&Instruction> =
        instructions.iter().filter(|i| i.stage == last).collect();
    let user = runtime_stage
        .iter()
        .rfind(|i| i.keyword == "USER")
        .map(|i| i.args.clone())
        .expect("Dockerfile: the runtime stage must switch to a non-root USER");
    let name = user.split(':').next().unwrap_or("");
    assert!(
        !["root", "0", ""].contains(&name),
        "Dockerfile: USER {user} is root"
    );

    let entrypoint = runtime_stage
        .iter()
        .rfind(|i| i.keyword == "ENTRYPOINT")
        .expect("Dockerfile: no ENTRYPOINT");
    let entrypoint = exec_form(&entrypoint.args).unwrap_or_else(|| {
        panic!("Dockerfile: ENTRYPOINT must be exec form [\"...\"] so the worker gets SIGTERM")
    });
    assert_eq!(
        entrypoint.first().map(String::as_str),
        Some("/usr/local/bin/studio-worker"),
        "Dockerfile: ENTRYPOINT should be the studio-worker binary"
    );
    let files = image_files(&instructions);
    let copied_binary = runtime_stage.iter().any(|i| {
        i.keyword == "COPY" && i.args.contains("--from") && i.args.ends_with(&entrypoint[0])
    });
    assert!(
        copied_binary,
        "Dockerfile: the runtime stage never copies the binary to {}",
        entrypoint[0]
    );
    let cmd = runtime_stage
        .iter()
        .rfind(|i| i.keyword == "CMD")
        .and_then(|i| exec_form(&i.args))
        .expect("Dockerfile: CMD must be exec form, e.g. [\"run\"]");
    assert_eq!(cmd, ["run"], "Dockerfile: CMD [\"run\"]");

    let health = runtime_stage
        .iter()
        .rfind(|i| i.keyword == "HEALTHCHECK")
        .expect("Dockerfile: no HEALTHCHECK");
    assert!(
        !health.args.trim().eq_ignore_ascii_case("none") && health.args.contains("/healthz"),
        "Dockerfile: HEALTHCHECK should GET /healthz, found {}",
        health.args
    );
    assert!(
        !health.args.contains("curl") && !health.args.contains("wget"),
        "Dockerfile: the runtime image has no HTTP client for the HEALTHCHECK"
    );
    assert!(
        runtime_stage
            .iter()
            .any(|i| i.keyword == "EXPOSE"
                && i.args.split_whitespace().any(|p| p.starts_with("9090"))),
        "Dockerfile: EXPOSE 9090"
    );
    for path in ["/app/examples/render.sh", "/app/config/example.toml"] {
        assert!(
            files.contains_key(path),
            "Dockerfile: {path} is not copied into the image"
        );
    }

    for ins in &runtime_stage {
        if ins.keyword == "RUN" && ins.args.contains("apt-get install") {
            let after = ins.args.split("apt-get install").nth(1).unwrap_or("");
            let command = after.split("&&").next().unwrap_or("");
            let packages: Vec<&str> = command
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .collect();
            assert_eq!(
                packages,
                ["ca-certificates"],
                "Dockerfile: the runtime stage installs only ca-certificates"
            );
        }
    }

    for ins in instructions
        .iter()
        .filter(|i| i.keyword == "ENV" || i.keyword == "ARG")
    {
        let upper = ins.args.to_ascii_uppercase();
        for word in [
            "PASSWORD",
            "SECRET",
            "TOKEN",
            "DATABASE_URL",
            "DATABASE__URL",
        ] {
            assert!(
                !upper.contains(word),
                "Dockerfile: `{} {}` would bake a credential into the image",
                ins.keyword,
                ins.args
            );
        }
    }
}

/// Whether `.dockerignore` leaves `path` in the build context (last matching rule wins; rules
/// are `*`, a path, or a directory prefix, optionally negated with `!`).
fn in_context(rules: &[String], path: &str) -> bool {
    let mut included = true;
    for rule in rules {
        let (negated, pattern) = match rule.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, rule.as_str()),
        };
        let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
        let matches = pattern == "*"
            || pattern == "**"
            || path == pattern
            || path.starts_with(&format!("{pattern}/"));
        if matches {
            included = negated;
        }
    }
    included
}

#[test]
fn dockerignore_keeps_secrets_out_and_everything_copied_in() {
    let rules: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for path in [".env", "target/release/studio-worker", ".git/config"] {
        assert!(
            !in_context(&rules, path),
            ".dockerignore must exclude {path}"
        );
    }
    for ins in dockerfile()
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
    {
        let (flags, mut words) = flags_and_words(&ins.args);
        if flags.iter().any(|f| f.starts_with("--from")) {
            continue;
        }
        words.pop();
        for src in words {
            let src = src.trim_start_matches("./").trim_end_matches('/');
            assert!(
                repo_path(src).exists(),
                "Dockerfile copies {src}, which is not in the repository"
            );
            assert!(
                in_context(&rules, src),
                "Dockerfile copies {src}, but .dockerignore leaves it out of the build context"
            );
        }
    }
}

#[test]
fn the_job_api_runs_as_its_own_role_after_migrations_with_a_required_key() {
    let doc = compose();
    let api = service(&doc, "api");
    assert!(
        words(&api["command"]).iter().any(|w| w == "api"),
        "api must run the `api` subcommand"
    );
    assert_eq!(
        depends_condition(api, "migrate").as_deref(),
        Some("service_completed_successfully"),
        "api must wait for the migrations"
    );
    let settings = settings_for("api", api);
    assert_eq!(database_user(&settings), "studio_api_login");
    assert!(
        settings.api.listen().ok().flatten().is_some(),
        "api.listen is set"
    );
    let raw = raw_compose();
    let raw_env = environment(service(&raw, "api"));
    for name in ["STUDIO_API__JWT_SECRET", "STUDIO_DATABASE__PASSWORD"] {
        let value = raw_env.get(name).map(String::as_str).unwrap_or("");
        assert!(
            value.contains(":?"),
            "api: {name} must come from .env and be required, found {value:?}"
        );
    }
    let script = read("docker/initdb/00-roles.sql").to_lowercase();
    for needle in [
        "create role studio_api nologin noinherit",
        "studio_api_login login password",
        "in role studio_api",
        "getenv api_password api_db_password",
    ] {
        assert!(
            script.contains(needle),
            "the init script should contain `{needle}`"
        );
    }
    assert!(
        environment(service(&doc, "db")).contains_key("API_DB_PASSWORD"),
        "db: the init script needs API_DB_PASSWORD"
    );
}

#[test]
fn the_required_variables_come_first_everywhere_and_fail_with_what_to_set() {
    let required = [
        "POSTGRES_PASSWORD",
        "WORKER_DB_PASSWORD",
        "API_DB_PASSWORD",
        "API_JWT_SECRET",
    ];
    // compose requires each, with a message saying what to set.
    let mut refs = Vec::new();
    interpolate_all(&mut raw_compose(), &mut refs);
    for name in required {
        let checks: Vec<&Reference> = refs.iter().filter(|r| r.name == name).collect();
        assert!(!checks.is_empty(), "compose does not read {name}");
        for r in checks {
            assert_eq!(r.op, ":?", "{name} must be required");
        }
    }
    // The header's "Variables" block names all four.
    let text = read("docker-compose.yml");
    let header = &text[..text.find("services:").unwrap()];
    let variables = &header[header.find("# Variables").expect("a Variables block")..];
    for name in required {
        assert!(variables.contains(name), "the Variables block omits {name}");
    }
    // .env.example: the four first, before any commented setting, and empty, so an unedited
    // copy stops compose with its message instead of starting with a placeholder the API
    // refuses (a restart loop).
    let example = read(".env.example");
    let assignments: Vec<(&str, &str)> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| l.split_once('=').unwrap())
        .collect();
    let names: Vec<&str> = assignments.iter().map(|(n, _)| n.trim()).collect();
    assert_eq!(
        names, required,
        ".env.example sets exactly the required four, first"
    );
    for (name, value) in assignments {
        let value = value.split(" #").next().unwrap().trim();
        assert!(value.is_empty(), "{name} has a placeholder value {value:?}");
    }
    let first_setting = example.find("STUDIO_").unwrap_or(example.len());
    for name in required {
        assert!(
            example.find(&format!("{name}=")).unwrap() < first_setting,
            "{name} comes after the settings"
        );
    }
    // The api always runs: no "Demo only" comment above it.
    let api_at = text.find("\n  api:\n").expect("an api service");
    let before_api = &text[..api_at];
    let last_service = before_api.rfind("\n  worker:").unwrap();
    assert!(
        !before_api[last_service..].contains("Demo only"),
        "the api service sits under a \"Demo only\" comment"
    );
}

#[test]
fn migrate_runs_with_the_workers_configuration_so_their_kinds_are_declared() {
    let doc = compose();
    let migrate = words(&service(&doc, "migrate")["command"]);
    let worker = words(&service(&doc, "worker")["command"]);
    assert!(
        config_flag(&migrate).is_some() && config_flag(&migrate) == config_flag(&worker),
        "migrate runs with the workers' --config: {migrate:?} vs {worker:?}"
    );
    let seed = read("docker/seed.sql").to_lowercase();
    assert!(
        !seed.contains("studio_kinds"),
        "seed.sql declares kinds by hand; migrate does it from the configuration"
    );
}
