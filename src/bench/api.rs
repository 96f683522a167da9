//! `studio-worker bench api`: the job API under load, as a separate `studio-worker api` process
//! (so its memory is its own) on the bench database.
//!
//! - creates: `clients` concurrent clients, each on one keep-alive connection, POST jobs with
//!   verified user tokens (HS256, then ES256 from a JWKS served by this process) for `seconds`
//!   each; creates/s and latency percentiles.
//! - streams: `streams` concurrent SSE streams spread over jobs of many users, then one
//!   statement moves every job to running; the time until each stream has the event, and the
//!   API process's RSS with the streams open.
//!
//! Needs a DATABASE_URL role that may `SET ROLE authenticated` (a superuser, or a member of
//! `studio_api`), a database of its own (it refuses one holding jobs it did not create) and,
//! for 10,000 streams, a file descriptor limit above 2 × streams (`ulimit -n`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::queue::{ClaimRequest, Queue, WorkerId};

const SECRET: &str = "bench-secret-bench-secret-bench-secret-0123";

/// Run both phases; returns the figures.
///
/// # Errors
/// Database, process or HTTP failures.
pub async fn run(
    admin_options: PgConnectOptions,
    clients: usize,
    seconds: u64,
    streams: usize,
) -> anyhow::Result<Value> {
    // Refuses a database holding jobs the bench did not create; creates no role: the API
    // process connects with this process's own DATABASE_URL and acts as users by `SET ROLE`.
    let admin = crate::bench::prepare_database(&admin_options).await?;
    let users = crate::bench::create_users(&admin, 1000).await?;

    let es = EsSigner::generate()?;
    let jwks = serve_jwks(es.jwk()).await?;
    let api = ApiProcess::spawn(&jwks, streams).await?;

    let hs: Vec<String> = users.iter().map(|u| hs256(*u)).collect::<Result<_, _>>()?;
    let es_tokens: Vec<String> = users
        .iter()
        .map(|u| es.token(*u))
        .collect::<Result<_, _>>()?;
    let server = super::postmaster(&admin).await;
    let hs_row = with_cpu(&api, server, creates(&api.base, &hs, clients, seconds)).await?;
    let es_row = with_cpu(
        &api,
        server,
        creates(&api.base, &es_tokens, clients, seconds),
    )
    .await?;

    // Only the jobs the phase above created (the tables were checked and emptied at the start).
    sqlx::raw_sql("truncate public.studio_jobs, public.studio_job_events")
        .execute(&admin)
        .await?;
    let worker_pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(admin_options.clone())
        .await?;
    let stream_row = fan_out(&api, server, &hs, streams, &Queue::new(worker_pool)).await?;
    api.stop().await;
    Ok(json!({
        "phase": "api",
        "clients": clients,
        "creates_hs256": hs_row,
        "creates_es256": es_row,
        "streams": stream_row,
    }))
}

fn hs256(user: Uuid) -> anyhow::Result<String> {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())?;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(user),
        &key,
    )?)
}

fn claims(user: Uuid) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({ "sub": user, "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 7200 })
}

struct EsSigner {
    key: jsonwebtoken::EncodingKey,
    public: Vec<u8>,
}

impl EsSigner {
    fn generate() -> anyhow::Result<EsSigner> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate an ES256 key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("cannot read the ES256 key"))?;
        Ok(EsSigner {
            key: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            public: pair.public_key().as_ref().to_vec(),
        })
    }

    fn jwk(&self) -> Value {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "bench",
            "x": b64.encode(&self.public[1..33]), "y": b64.encode(&self.public[33..65]),
        }] })
    }

    fn token(&self, user: Uuid) -> anyhow::Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("bench".into());
        Ok(jsonwebtoken::encode(&header, &claims(user), &self.key)?)
    }
}

async fn serve_jwks(keys: Value) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let keys = keys.clone();
            async move { axum::Json(keys) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/jwks.json"))
}

struct ApiProcess {
    child: tokio::process::Child,
    base: String,
}

impl ApiProcess {
    async fn spawn(jwks: &str, streams: usize) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.arg("api").env_clear();
        // allocator tuning (MALLOC_ARENA_MAX, …) reaches the API process
        // and so do the database settings this process was given (the API connects as the
        // same role: it acts as users with `SET ROLE authenticated`, which it may).
        for (key, value) in std::env::vars().filter(|(k, _)| {
            k.starts_with("MALLOC_") || k == "DATABASE_URL" || k.starts_with("STUDIO_DATABASE__")
        }) {
            command.env(key, value);
        }
        let child = command
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STUDIO_HTTP__LISTEN", "")
            .env("STUDIO_LOG__LEVEL", "warn")
            .env("STUDIO_API__LISTEN", format!("127.0.0.1:{port}"))
            .env("STUDIO_API__JWT_SECRET", SECRET)
            .env("STUDIO_API__JWKS_URL", jwks)
            .env("STUDIO_API__MAX_CONNECTIONS", "16")
            .env("STUDIO_API__MAX_STREAMS", (streams + 100).to_string())
            .env("STUDIO_API__KEEP_ALIVE", "30s")
            .kill_on_drop(true)
            .spawn()
            .context("starting `studio-worker api`")?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("{base}/v1/openapi.json"))
            .send()
            .await
            .is_err()
        {
            anyhow::ensure!(Instant::now() < deadline, "the API did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ApiProcess { child, base })
    }

    fn rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return f64::NAN;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "n": ms.len(),
        "p50_ms": percentile(&ms, 50.0),
        "p99_ms": percentile(&ms, 99.0),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
    })
}

/// CPU seconds of the API process, of this process (the clients) and of the PostgreSQL server
/// (`None` where it cannot be read, e.g. a server on another machine).
fn cpu_now(api: &ApiProcess, server: Option<i32>) -> [Option<f64>; 3] {
    [
        api.child
            .id()
            .and_then(|pid| super::process_cpu_s(&pid.to_string())),
        super::process_cpu_s("self"),
        server.and_then(super::server_cpu_s),
    ]
}

/// Run a creates phase and add the CPU milliseconds per create of the API, the clients and
/// PostgreSQL to its row.
async fn with_cpu(
    api: &ApiProcess,
    server: Option<i32>,
    phase: impl std::future::Future<Output = anyhow::Result<Value>>,
) -> anyhow::Result<Value> {
    let before = cpu_now(api, server);
    let mut row = phase.await?;
    let after = cpu_now(api, server);
    let created = row["n"].as_f64().unwrap_or(0.0).max(1.0);
    add_cpu(&mut row, before, after, "ms_per_create", 1000.0 / created);
    Ok(row)
}

/// Add `cpu_{api,clients,pg}_{unit}` to `row`: the CPU seconds between `before` and `after`
/// times `scale`, for each process whose CPU could be read.
fn add_cpu(
    row: &mut Value,
    before: [Option<f64>; 3],
    after: [Option<f64>; 3],
    unit: &str,
    scale: f64,
) {
    for (name, (before, after)) in ["api", "clients", "pg"]
        .iter()
        .zip(before.into_iter().zip(after))
    {
        if let (Some(before), Some(after)) = (before, after) {
            row[format!("cpu_{name}_{unit}")] = json!((after - before) * scale);
        }
    }
}

async fn creates(
    base: &str,
    tokens: &[String],
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Value> {
    let tokens = Arc::new(tokens.to_vec());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (tokens, url) = (tokens.clone(), format!("{base}/v1/jobs"));
        tasks.push(tokio::spawn(async move {
            // one client per task: one keep-alive connection each
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let (mut latencies, mut errors, mut i) = (Vec::new(), 0u64, c);
            while Instant::now() < until {
                let token = &tokens[i % tokens.len()];
                i += clients;
                let t = Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(token)
                    .json(&json!({ "kind": "bench", "input": { "i": i } }))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 201 => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => errors += 1,
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, e) = task.await??;
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut row = summary(all);
    row["creates_per_s"] = json!((row["n"].as_f64().unwrap_or(0.0) / elapsed).round());
    row["errors"] = json!(errors);
    Ok(row)
}

async fn fan_out(
    api: &ApiProcess,
    server: Option<i32>,
    tokens: &[String],
    streams: usize,
    queue: &Queue,
) -> anyhow::Result<Value> {
    let rss_before = api.rss_mib();
    // one job per user token (1000 jobs), `streams` watchers spread over them
    let creator = reqwest::Client::new();
    let mut jobs = Vec::new();
    for token in tokens {
        let job: Value = creator
            .post(format!("{}/v1/jobs", api.base))
            .bearer_auth(token)
            .json(&json!({ "kind": "bench-stream", "input": {} }))
            .send()
            .await?
            .json()
            .await?;
        jobs.push(job["id"].as_str().unwrap_or_default().to_owned());
    }
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(streams);
    let (heard_tx, mut heard_rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let moved_at = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    // Streams stay open until every one has its event, as they would while the jobs run: a
    // stream closing early would add its connection's teardown to the others' fan-out.
    let all_heard = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    let opening = Instant::now();
    // one client: it opens a connection per concurrent stream
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    for s in 0..streams {
        let n = s % jobs.len();
        let url = format!("{}/v1/jobs/{}/events", api.base, jobs[n]);
        let (token, ready, moved_at) = (tokens[n].clone(), ready_tx.clone(), moved_at.clone());
        let (heard, all_heard) = (heard_tx.clone(), all_heard.clone());
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let mut response = http.get(&url).bearer_auth(&token).send().await?;
            anyhow::ensure!(
                response.status() == 200,
                "stream refused: {}",
                response.status()
            );
            let mut text = String::new();
            let mut announced = false;
            while let Some(chunk) = response.chunk().await? {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if !announced && text.contains("event: progress") {
                    announced = true;
                    let _ = ready.send(()).await;
                }
                if text.contains("\"to\":\"running\"") {
                    let at = moved_at.get().copied().unwrap_or_else(Instant::now);
                    let _ = heard.send(at.elapsed().as_secs_f64() * 1000.0);
                    all_heard.cancelled().await;
                    return Ok(());
                }
            }
            anyhow::bail!("stream ended early")
        }));
    }
    drop(ready_tx);
    for _ in 0..streams {
        ready_rx.recv().await.context("a stream failed to open")?;
    }
    let open_s = opening.elapsed().as_secs_f64();
    // Settled: the API checks its allocator's free memory once a second (`memory`).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_open = api.rss_mib();

    let worker = WorkerId::generate();
    let kinds = vec!["bench-stream".to_owned()];
    let cpu_before = cpu_now(api, server);
    let _ = moved_at.set(Instant::now());
    let claim_started = Instant::now();
    let claimed = queue
        .claim(&ClaimRequest {
            worker: &worker,
            kinds: &kinds,
            limit: u32::try_from(jobs.len()).unwrap_or(u32::MAX),
            lease: Duration::from_secs(600),
            now: None,
        })
        .await?;
    let claim_ms = claim_started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        claimed.len() == jobs.len(),
        "claimed {} of {}",
        claimed.len(),
        jobs.len()
    );
    drop(heard_tx);
    let mut latencies = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while latencies.len() < streams {
        match tokio::time::timeout_at(deadline, heard_rx.recv()).await {
            Ok(Some(ms)) => latencies.push(ms),
            _ => break,
        }
    }
    let cpu_after = cpu_now(api, server);
    let failed = streams - latencies.len();
    all_heard.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    // The same times counted from the claim's return (its commit announced the changes): what
    // the fan-out adds to the claim statement's own time.
    let after_claim = summary(
        latencies
            .iter()
            .map(|ms| (ms - claim_ms).max(0.0))
            .collect(),
    );
    let mut row = summary(latencies);
    row["claim_ms"] = json!(claim_ms);
    row["after_claim_p50_ms"] = after_claim["p50_ms"].clone();
    row["after_claim_p99_ms"] = after_claim["p99_ms"].clone();
    // CPU from the claim until the last stream had its event (the claim's own included).
    add_cpu(
        &mut row,
        cpu_before,
        cpu_after,
        "us_per_stream",
        1e6 / streams.max(1) as f64,
    );
    row["streams"] = json!(streams);
    row["jobs"] = json!(jobs.len());
    row["failed"] = json!(failed);
    row["open_seconds"] = json!(open_s);
    row["api_rss_mib_idle"] = json!(rss_before);
    row["api_rss_mib_streams_open"] = json!(rss_open);
    Ok(row)
}
