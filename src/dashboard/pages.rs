//! Overview, Users, Kinds (with pause/resume, quotas, declare/forget), Schedules and Audit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Session;
use super::html::{self, Nav, Table, esc, server_error};
use super::{DashState, sql};
use crate::config::OperatorRole;
use crate::control::Control;
use crate::control::audit::{Audit, NewAction, Source};
use crate::control::kinds::Kinds;
use crate::control::quota::{Limits, Quotas};
use crate::control::schedule::{last_fires, next_fire};

macro_rules! try_db {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => return server_error(&err),
        }
    };
}

/// Finished per minute since `since`, one slot per minute up to the last whole minute.
async fn chart(state: &DashState, minutes: i64) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let now = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap_or_else(|_| Utc::now());
    let since = now - TimeDelta::minutes(minutes);
    let rows: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(sql::CHART)
        .bind(since)
        .fetch_all(&state.pool)
        .await?;
    let by_minute: HashMap<i64, (i64, i64)> = rows
        .into_iter()
        .map(|(m, ok, bad)| (m.timestamp() / 60, (ok, bad)))
        .collect();
    let first = since.timestamp() / 60;
    Ok((0..minutes)
        .map(|i| by_minute.get(&(first + i)).copied().unwrap_or((0, 0)))
        .collect())
}

fn chart_summary(values: &[(i64, i64)]) -> String {
    let ok: i64 = values.iter().map(|v| v.0).sum();
    let bad: i64 = values.iter().map(|v| v.1).sum();
    format!("{ok} succeeded, {bad} failed or cancelled")
}

/// `GET /`
pub async fn overview(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    let day_ago = Utc::now() - TimeDelta::days(1);
    type Replica = (String, Vec<String>, Option<DateTime<Utc>>, i64);
    let kinds_control = Kinds::new(state.pool.clone());
    let admin = state.queue.admin();
    // independent reads, side by side on the dashboard's pool
    let (gauges, serving, finished, replicas, hour, day) = tokio::join!(
        admin.gauges(),
        kinds_control.serving(),
        sqlx::query_as::<_, (String, i64, i64, i64, i64, i64)>(sql::FINISHED_BY_KIND)
            .bind(day_ago)
            .fetch_all(&state.pool),
        sqlx::query_as::<_, Replica>(sql::REPLICAS).fetch_all(&state.pool),
        chart(&state, 60),
        chart(&state, 1440),
    );
    let (gauges, serving, finished) = (try_db!(gauges), try_db!(serving), try_db!(finished));
    let (replicas, hour, day) = (try_db!(replicas), try_db!(hour), try_db!(day));
    let rates: Vec<(String, crate::limits::RateLimit)> = state
        .settings
        .kinds
        .iter()
        .filter_map(|(k, s)| Some((k.clone(), s.limits.rate_limit?)))
        .collect();
    let used = Kinds::new(state.pool.clone())
        .starts_in_window(&rates)
        .await
        .unwrap_or_default();

    let mut kinds: BTreeSet<String> = gauges.iter().map(|g| g.kind.clone()).collect();
    kinds.extend(serving.iter().map(|s| s.kind.clone()));
    kinds.extend(finished.iter().map(|f| f.0.clone()));
    let gauge: HashMap<&str, _> = gauges.iter().map(|g| (g.kind.as_str(), g)).collect();
    let served: HashMap<&str, _> = serving.iter().map(|s| (s.kind.as_str(), s)).collect();
    let done: HashMap<&str, _> = finished.iter().map(|f| (f.0.as_str(), f)).collect();

    let mut table = Table::new(
        "kinds",
        None,
        &[
            "Kind",
            "Pending",
            "Running",
            "Oldest due",
            "Succeeded (24 h)",
            "Failed (24 h)",
            "Cancelled (24 h)",
            "Failure rate (1 h)",
            "Replicas",
            "State",
        ],
    );
    let mut alerts = Vec::new();
    for kind in &kinds {
        let g = gauge.get(kind.as_str());
        let s = served.get(kind.as_str());
        let f = done.get(kind.as_str());
        let (ok_h, bad_h) = f.map_or((0, 0), |f| (f.4, f.5));
        let rate = if ok_h + bad_h > 0 {
            format!("{:.1}%", bad_h as f64 * 100.0 / (ok_h + bad_h) as f64)
        } else {
            "–".to_owned()
        };
        let mut state_text = Vec::new();
        if g.is_some_and(|g| g.paused) {
            state_text.push("paused".to_owned());
            alerts.push(format!("{kind} is paused"));
        }
        if s.is_some_and(|s| s.unserved) {
            state_text.push("unserved".to_owned());
            alerts.push(format!("{kind} has due jobs and no live replica"));
        }
        if let Some((_, limit)) = rates.iter().find(|(k, _)| k == kind) {
            let n = used.get(kind).copied().unwrap_or(0);
            if n >= i64::from(limit.count()) {
                state_text.push(format!("rate-limited ({n}/{limit})"));
                alerts.push(format!("{kind} is at its rate limit {limit}"));
            } else {
                state_text.push(format!("rate {n} of {limit}"));
            }
        }
        if state_text.is_empty() {
            state_text.push("ok".to_owned());
        }
        let k = esc(kind);
        let link = |status: &str, n: i64| {
            format!("<a href=\"/jobs?status={status}&amp;kind={k}\">{n}</a>")
        };
        table.row(
            "",
            &format!("<a href=\"/kinds#kind-{k}\">{k}</a>"),
            &[
                &link("pending", g.map_or(0, |g| g.pending)),
                &link("running", g.map_or(0, |g| g.running)),
                &g.filter(|g| g.oldest_pending_seconds > 0.0)
                    .map_or("–".to_owned(), |g| html::age(g.oldest_pending_seconds)),
                &link("succeeded", f.map_or(0, |f| f.1)),
                &link("failed", f.map_or(0, |f| f.2)),
                &link("cancelled", f.map_or(0, |f| f.3)),
                &rate,
                &s.map_or(0, |s| s.replicas),
                &esc(&state_text.join(", ")),
            ],
        );
    }
    let mut body = String::from("<h1>Overview</h1>");
    if !alerts.is_empty() {
        body.push_str("<ul class=\"alerts\" role=\"status\">");
        for a in &alerts {
            let _ = write!(body, "<li>{}</li>", esc(a));
        }
        body.push_str("</ul>");
    }
    let _ = write!(
        body,
        "<section aria-labelledby=\"charts-h\"><h2 id=\"charts-h\">Finished per minute</h2><div class=\"charts\">{}{}</div></section>",
        html::bars("Last hour", &hour, &chart_summary(&hour)),
        html::bars("Last day", &day, &chart_summary(&day)),
    );
    let _ = write!(
        body,
        "<section aria-labelledby=\"kinds-h\"><h2 id=\"kinds-h\">Kinds</h2>{}</section>",
        table.finish("No kind yet.")
    );
    let mut table = Table::new(
        "",
        None,
        &["Replica", "Kinds served", "Running jobs", "Last seen (UTC)"],
    );
    for (worker, kinds, seen, running) in &replicas {
        table.row(
            "",
            &format!("<code>{}</code>", esc(worker)),
            &[
                &if kinds.is_empty() {
                    "(no live registration)".to_owned()
                } else {
                    esc(&kinds.join(", "))
                },
                running,
                &html::time(*seen),
            ],
        );
    }
    let _ = write!(
        body,
        "<section aria-labelledby=\"reps-h\"><h2 id=\"reps-h\">Replicas</h2>{}</section>",
        table.finish("No live replica.")
    );
    html::page(&headers, &session, Nav::Overview, "Overview", true, &body)
}

/// `GET /users`: the fairness view.
pub async fn users(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    type Row = (
        Uuid,
        i64,
        i64,
        i64,
        i64,
        Option<f64>,
        Option<f64>,
        i64,
        Option<DateTime<Utc>>,
    );
    let quotas = Quotas::new(state.pool.clone());
    let (rows, quotas) = tokio::join!(
        sqlx::query_as::<_, Row>(sql::USERS).fetch_all(&state.pool),
        quotas.list(),
    );
    let (rows, quotas) = (try_db!(rows), try_db!(quotas));
    let default_cap = quotas
        .iter()
        .find(|q| q.kind == crate::control::quota::DEFAULT)
        .and_then(|q| q.max_unfinished);
    let computed = rows.first().and_then(|r| r.8);
    let mut body = format!(
        "<h1>Users</h1><p class=\"muted\">Who waits and who gets served: the 100 users with the most due work. Finished, share and wait (from due to start) are recomputed every minute over the last hour{}.</p>",
        computed.map_or(": no job finished in it".to_owned(), |at| format!(
            " (this one ends at {} UTC)",
            html::time(Some(at))
        )),
    );
    let mut table = Table::new(
        "users",
        None,
        &[
            "User",
            "Pending (due)",
            "Running",
            "Finished (1 h)",
            "Share of throughput",
            "Wait p50",
            "Wait p95",
            "Unfinished vs default quota",
        ],
    );
    for (user, pending, due, running, finished, p50, p95, total, _) in &rows {
        let share = if *total > 0 {
            format!("{:.1}%", *finished as f64 * 100.0 / *total as f64)
        } else {
            "–".to_owned()
        };
        let quota = match default_cap {
            Some(cap) => format!("{} of {cap}", pending + running),
            None => format!("{} (no default cap)", pending + running),
        };
        table.row(
            "",
            &format!("<a href=\"/jobs?user={user}\"><code>{user}</code></a>"),
            &[
                &format!("{pending} ({due})"),
                running,
                finished,
                &share,
                &p50.map_or("–".to_owned(), html::age),
                &p95.map_or("–".to_owned(), html::age),
                &quota,
            ],
        );
    }
    body.push_str(&table.finish("No user has pending, running or recently finished jobs."));
    html::page(&headers, &session, Nav::Users, "Users", true, &body)
}

/// `GET /kinds`
pub async fn kinds(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    let configured: Vec<String> = state.settings.kinds.keys().cloned().collect();
    let states = try_db!(
        Control::new(state.pool.clone())
            .pauses()
            .states(&configured)
            .await
    );
    let serving = try_db!(Kinds::new(state.pool.clone()).serving().await);
    let quotas = try_db!(Quotas::new(state.pool.clone()).list().await);
    let rates: Vec<(String, crate::limits::RateLimit)> = state
        .settings
        .kinds
        .iter()
        .filter_map(|(k, s)| Some((k.clone(), s.limits.rate_limit?)))
        .collect();
    let used = Kinds::new(state.pool.clone())
        .starts_in_window(&rates)
        .await
        .unwrap_or_default();
    let mut all: BTreeMap<String, ()> = states.iter().map(|s| (s.kind.clone(), ())).collect();
    all.extend(serving.iter().map(|s| (s.kind.clone(), ())));
    let st: HashMap<&str, _> = states.iter().map(|s| (s.kind.as_str(), s)).collect();
    let sv: HashMap<&str, _> = serving.iter().map(|s| (s.kind.as_str(), s)).collect();
    let qt: HashMap<&str, _> = quotas.iter().map(|q| (q.kind.as_str(), q)).collect();
    let operator = session.role >= OperatorRole::Operator;
    let admin = session.role >= OperatorRole::Admin;
    let csrf = html::csrf(&session);
    let mut body = String::from("<h1>Kinds</h1>");
    for kind in all.keys() {
        let s = st.get(kind.as_str());
        let v = sv.get(kind.as_str());
        let k = esc(kind);
        let paused = s.is_some_and(|s| s.paused);
        let config = state.settings.kinds.get(kind);
        let rate = config
            .and_then(|c| c.limits.rate_limit)
            .map_or("none".to_owned(), |r| {
                format!(
                    "{r} ({} started in the current window)",
                    used.get(kind).copied().unwrap_or(0)
                )
            });
        let cap = config
            .and_then(|c| c.limits.max_running)
            .map_or("none".to_owned(), |c| c.to_string());
        let quota = qt
            .get(kind.as_str())
            .map_or("the default (*)".to_owned(), |q| {
                format!(
                    "max unfinished {}, max created {}",
                    q.max_unfinished.map_or("–".to_owned(), |n| n.to_string()),
                    match (q.max_created, q.per_seconds) {
                        (Some(n), Some(p)) => format!(
                            "{n} per {}",
                            humantime::format_duration(Duration::from_secs_f64(p))
                        ),
                        _ => "–".to_owned(),
                    }
                )
            });
        let _ = write!(
            body,
            "<section class=\"kind\" id=\"kind-{k}\" aria-labelledby=\"h-{k}\"><h2 id=\"h-{k}\">{k} <span class=\"status status-{cls}\">{label}</span>{unserved}</h2>
<dl class=\"facts\"><dt>Known</dt><dd>{known}</dd><dt>Pending</dt><dd><a href=\"/jobs?status=pending&amp;kind={k}\">{pending}</a></dd><dt>Running</dt><dd><a href=\"/jobs?status=running&amp;kind={k}\">{running}</a></dd><dt>Replicas serving</dt><dd>{replicas}</dd><dt>Rate limit</dt><dd>{rate}</dd><dt>Running cap</dt><dd>{cap}</dd><dt>Quota</dt><dd>{quota}</dd>{paused_by}</dl>",
            cls = if paused { "paused" } else { "active" },
            label = if paused { "paused" } else { "active" },
            unserved = if v.is_some_and(|v| v.unserved) {
                " <span class=\"status status-unserved\">unserved: due jobs and no live replica</span>"
            } else {
                ""
            },
            known = if v.is_some_and(|v| v.known) { "yes" } else { "no (inserts are refused)" },
            pending = s.map_or(0, |s| s.pending),
            running = s.map_or(0, |s| s.running),
            replicas = v.map_or(0, |v| v.replicas),
            paused_by = s
                .filter(|s| s.paused)
                .map(|s| format!(
                    "<dt>Paused</dt><dd>{} by {}</dd>",
                    html::time(s.paused_at),
                    esc(s.paused_by.as_deref().unwrap_or("?"))
                ))
                .unwrap_or_default(),
        );
        if operator {
            let (verb, label) = if paused {
                ("resume", "Resume")
            } else {
                ("pause", "Pause")
            };
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/kinds/{k}/{verb}\" class=\"inline\">{csrf}<button type=\"submit\">{label} {k}</button></form>"
            );
        }
        if admin {
            let _ = write!(
                body,
                "<details><summary>Quota of {k}</summary><form method=\"post\" action=\"/kinds/{k}/quota\" class=\"filters\">{csrf}<label>Max unfinished per user <input name=\"max_unfinished\" inputmode=\"numeric\" size=\"6\"></label><label>Max created <input name=\"max_created\" inputmode=\"numeric\" size=\"6\"></label><label>per <input name=\"per\" placeholder=\"1h\" size=\"6\"></label><button type=\"submit\">Set quota</button></form><form method=\"post\" action=\"/kinds/{k}/quota/clear\" class=\"inline\">{csrf}<button type=\"submit\">Clear quota</button></form></details>\
<form method=\"post\" action=\"/kinds/{k}/forget\" class=\"inline\">{csrf}<button type=\"submit\" class=\"danger\">Forget {k}</button></form>"
            );
        }
        body.push_str("</section>");
    }
    if admin {
        let _ = write!(
            body,
            "<section aria-labelledby=\"declare-h\"><h2 id=\"declare-h\">Declare a kind</h2><form method=\"post\" action=\"/kinds/declare\" class=\"filters\">{csrf}<label>Kind <input name=\"kind\" required pattern=\"[a-z][a-z0-9_.\\-]{{0,63}}\"></label><button type=\"submit\">Declare</button></form></section>"
        );
    }
    html::page(&headers, &session, Nav::Kinds, "Kinds", true, &body)
}

fn refused(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        html::message_page("Not done", message),
    )
        .into_response()
}

/// What a kind action came to: the rows it changed and a detail for the audit row, or the
/// answer to give instead (a refusal, a database error).
type Outcome = Result<(i64, Option<String>), Response>;

/// The answer to a refused pause or resume.
fn pause_refused(err: &crate::control::Error) -> Response {
    match err {
        crate::control::Error::InvalidKind(_) => refused("not a kind name"),
        err => server_error(err),
    }
}

/// The answer to a refused quota change.
fn quota_refused(err: &crate::control::quota::Error) -> Response {
    match err {
        crate::control::quota::Error::Db(err) => server_error(err),
        err => refused(&err.to_string()),
    }
}

/// The answer to a refused declare or forget.
fn kind_refused(err: &crate::control::kinds::Error) -> Response {
    match err {
        crate::control::kinds::Error::Db(err) => server_error(err),
        err => refused(&err.to_string()),
    }
}

/// Record a kind action (one audit row) and go back to the kind; or answer what stopped it.
async fn audited(
    state: &DashState,
    session: &Session,
    action: &str,
    kind: &str,
    outcome: Outcome,
) -> Response {
    let (rows, detail) = match outcome {
        Ok(done) => done,
        Err(answer) => return answer,
    };
    let recorded = Audit::new(state.pool.clone())
        .record(&NewAction {
            role: Some(session.role.as_str()),
            kind: Some(kind),
            rows,
            detail,
            ..NewAction::new(&session.operator, Source::Dashboard, action)
        })
        .await;
    if let Err(err) = recorded {
        return server_error(&err);
    }
    tracing::info!(operator = %session.operator, action, kind, "dashboard: kind action");
    Redirect::to(&format!("/kinds#kind-{kind}")).into_response()
}

fn changed(done: bool) -> (i64, Option<String>) {
    (i64::from(done), None)
}

/// `POST /kinds/{kind}/pause`
pub async fn pause(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    Path(kind): Path<String>,
) -> Response {
    if let Some(r) = session.refused(OperatorRole::Operator) {
        return r;
    }
    let by = format!("{} (dashboard)", session.operator);
    let outcome = Control::new(state.pool.clone())
        .pauses()
        .pause(&kind, Some(&by))
        .await
        .map(changed)
        .map_err(|e| pause_refused(&e));
    audited(&state, &session, "kind.pause", &kind, outcome).await
}

/// `POST /kinds/{kind}/resume`
pub async fn resume(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    Path(kind): Path<String>,
) -> Response {
    if let Some(r) = session.refused(OperatorRole::Operator) {
        return r;
    }
    let outcome = Control::new(state.pool.clone())
        .pauses()
        .resume(&kind)
        .await
        .map(changed)
        .map_err(|e| pause_refused(&e));
    audited(&state, &session, "kind.resume", &kind, outcome).await
}

/// The quota form.
#[derive(Debug, Deserialize)]
pub struct QuotaForm {
    #[serde(default)]
    max_unfinished: String,
    #[serde(default)]
    max_created: String,
    #[serde(default)]
    per: String,
}

/// `POST /kinds/{kind}/quota` (admin)
pub async fn set_quota(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    Path(kind): Path<String>,
    axum::Form(form): axum::Form<QuotaForm>,
) -> Response {
    if let Some(r) = session.refused(OperatorRole::Admin) {
        return r;
    }
    let number = |s: &str| -> Result<Option<u32>, String> {
        match s.trim() {
            "" => Ok(None),
            n => n
                .parse()
                .map(Some)
                .map_err(|_| format!("{n:?} is not a count")),
        }
    };
    let limits = (|| -> Result<Limits, String> {
        let max_unfinished = number(&form.max_unfinished)?;
        let max_created = match (number(&form.max_created)?, form.per.trim()) {
            (None, _) => None,
            (Some(n), per) => Some((
                n,
                humantime::parse_duration(if per.is_empty() { "1h" } else { per })
                    .map_err(|_| format!("{per:?} is not a period such as 1h"))?,
            )),
        };
        Ok(Limits {
            max_unfinished,
            max_created,
        })
    })();
    let limits = match limits {
        Ok(l) => l,
        Err(message) => return refused(&message),
    };
    let by = format!("{} (dashboard)", session.operator);
    let outcome = Quotas::new(state.pool.clone())
        .set(&kind, limits, Some(&by))
        .await
        .map(|_| (1, Some(format!("{limits:?}"))))
        .map_err(|e| quota_refused(&e));
    audited(&state, &session, "quota.set", &kind, outcome).await
}

/// `POST /kinds/{kind}/quota/clear` (admin)
pub async fn clear_quota(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    Path(kind): Path<String>,
) -> Response {
    if let Some(r) = session.refused(OperatorRole::Admin) {
        return r;
    }
    let outcome = Quotas::new(state.pool.clone())
        .clear(&kind)
        .await
        .map(|row| changed(row.is_some()))
        .map_err(|e| quota_refused(&e));
    audited(&state, &session, "quota.clear", &kind, outcome).await
}

/// The declare form.
#[derive(Debug, Deserialize)]
pub struct DeclareForm {
    kind: String,
}

/// `POST /kinds/declare` (admin)
pub async fn declare(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    axum::Form(form): axum::Form<DeclareForm>,
) -> Response {
    if let Some(r) = session.refused(OperatorRole::Admin) {
        return r;
    }
    let kind = form.kind.trim().to_owned();
    let by = format!("{} (dashboard)", session.operator);
    let outcome = Kinds::new(state.pool.clone())
        .declare(&kind, Some(&by))
        .await
        .map(changed)
        .map_err(|e| kind_refused(&e));
    audited(&state, &session, "kind.declare", &kind, outcome).await
}

/// `POST /kinds/{kind}/forget` (admin)
pub async fn forget(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    Path(kind): Path<String>,
) -> Response {
    if let Some(r) = session.refused(OperatorRole::Admin) {
        return r;
    }
    let outcome = Kinds::new(state.pool.clone())
        .forget(&kind)
        .await
        .map(changed)
        .map_err(|e| kind_refused(&e));
    audited(&state, &session, "kind.forget", &kind, outcome).await
}

/// `GET /schedules`
pub async fn schedules(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    let names: Vec<String> = state.settings.schedules.keys().cloned().collect();
    let last = if names.is_empty() {
        HashMap::new()
    } else {
        try_db!(last_fires(&state.pool, &names).await)
    };
    let ids: Vec<Uuid> = last.values().map(|f| f.job_id).collect();
    let jobs: Vec<(Uuid, String, Option<String>)> = try_db!(
        sqlx::query_as(sql::SCHEDULE_JOBS)
            .bind(&ids)
            .fetch_all(&state.pool)
            .await
    );
    let jobs: HashMap<Uuid, (String, Option<String>)> =
        jobs.into_iter().map(|(id, s, e)| (id, (s, e))).collect();
    let now = Utc::now();
    let mut table = Table::new(
        "",
        None,
        &[
            "Schedule",
            "Cron",
            "Kind",
            "Last fire (UTC)",
            "Last job",
            "Next fire (UTC)",
        ],
    );
    for (name, schedule) in &state.settings.schedules {
        let fire = last.get(name);
        let job = fire.map_or("never fired".to_owned(), |f| match jobs.get(&f.job_id) {
            Some((status, error)) => format!(
                "<a href=\"/jobs/{id}\"><code>{short}</code></a> {}{}",
                html::status(status),
                error
                    .as_deref()
                    .map(|e| format!(" <span class=\"error-text\">{}</span>", esc(e)))
                    .unwrap_or_default(),
                id = f.job_id,
                short = &f.job_id.to_string()[..8],
            ),
            None => format!("<code>{}</code> (pruned)", &f.job_id.to_string()[..8]),
        });
        table.row(
            "",
            &esc(name),
            &[
                &format!(
                    "<code>{}</code> {}",
                    esc(schedule.cron.as_str()),
                    esc(schedule.time_zone.name())
                ),
                &esc(&schedule.kind),
                &html::time(fire.map(|f| f.fire_time)),
                &job,
                &html::time(next_fire(schedule, now)),
            ],
        );
    }
    let body = format!(
        "<h1>Schedules</h1><p class=\"muted\">As this replica's configuration states them; fires are recorded in the database by whichever replica enqueued them.</p>{}",
        table.finish("No schedules configured ([schedules.&lt;name&gt;]).")
    );
    html::page(
        &headers,
        &session,
        Nav::Schedules,
        "Schedules",
        false,
        &body,
    )
}

/// The audit page's cursor.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    before: Option<i64>,
}

/// `GET /audit`
pub async fn audit(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let rows = try_db!(Audit::new(state.pool.clone()).list(q.before, 51).await);
    let more = rows.len() > 50;
    let rows = &rows[..rows.len().min(50)];
    let mut table = Table::new(
        "audit",
        None,
        &[
            "#",
            "When (UTC)",
            "Who",
            "From",
            "Action",
            "Kind / job",
            "Rows",
            "Filter / detail",
        ],
    );
    for a in rows {
        let target = match (&a.kind, a.job_id) {
            (_, Some(job)) => format!(
                "<a href=\"/jobs/{job}\"><code>{}</code></a>",
                &job.to_string()[..8]
            ),
            (Some(kind), None) => esc(kind),
            (None, None) => "–".to_owned(),
        };
        let extra = a
            .filter
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| a.detail.clone())
            .unwrap_or_default();
        table.row(
            "",
            &a.id.to_string(),
            &[
                &html::time(Some(a.at)),
                &esc(&a.actor),
                &format!(
                    "{}{}",
                    esc(&a.source),
                    a.role
                        .as_deref()
                        .map(|r| format!(" ({})", esc(r)))
                        .unwrap_or_default()
                ),
                &esc(&a.action),
                &target,
                &a.rows,
                &format!("<code>{}</code>", esc(&extra)),
            ],
        );
    }
    let mut body = format!(
        "<h1>Audit</h1><p class=\"muted\">Every operator action, from the dashboard and the CLI, newest first.</p>{}",
        table.finish("No operator action yet.")
    );
    if more && let Some(last) = rows.last() {
        let _ = write!(
            body,
            "<nav class=\"pager\" aria-label=\"Pages\"><a href=\"/audit?before={}\" rel=\"next\">Older</a></nav>",
            last.id
        );
    }
    html::page(&headers, &session, Nav::Audit, "Audit", true, &body)
}
