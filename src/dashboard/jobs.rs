//! The Jobs page (filters, keyset pagination, bulk retry and cancel of everything matching a
//! filter, with the count first) and the Job page (everything about one job, its history with
//! the operators' actions, and why it is not running).
//!
//! Every list is a range of one index, chosen by the filter: pending jobs in claim order
//! (`studio_jobs_claim_idx`), running jobs by lease (`studio_jobs_lease_idx`), succeeded jobs
//! by finish time (`studio_jobs_finished_idx`), failed and cancelled ones by finish time
//! (`studio_jobs_failed_idx`), one user's jobs by creation (`studio_jobs_user_created_idx`).
//! Kind, time range and error text narrow the range; error text reads at most the newest
//! [`ERROR_SEARCH_ROWS`] rows of the range (a bulk action over an error text reads them all).

use std::fmt::Write as _;
use std::str::FromStr;

use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::DashState;
use super::auth::Session;
use super::html::{self, Nav, esc, url_encode};
use crate::config::OperatorRole;
use crate::control::audit::{Audit, NewAction, Source};
use crate::control::why::{WhyPolicy, why};
use crate::queue::{Admin, JobStatus};

/// Rows per page.
const PAGE: i64 = 50;
/// Most rows of a range an error-text search reads for a page.
pub const ERROR_SEARCH_ROWS: i64 = 100_000;
/// Jobs changed per transaction by a bulk action.
const BULK_BATCH: i64 = 500;

/// The filter, as the query string carries it (deep links).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct JobQuery {
    /// `pending`, `running`, `succeeded`, `failed`, `cancelled`, or empty (a user's jobs in any
    /// status).
    #[serde(default)]
    pub status: String,
    /// A kind.
    #[serde(default)]
    pub kind: String,
    /// A user id.
    #[serde(default)]
    pub user: String,
    /// From this time (UTC; finish time for finished jobs, creation time otherwise).
    #[serde(default)]
    pub from: String,
    /// Until this time.
    #[serde(default)]
    pub to: String,
    /// Text in the error (case-insensitive).
    #[serde(default)]
    pub error: String,
    /// A job id: open it.
    #[serde(default)]
    pub id: String,
    /// Keyset cursor: the page after this row.
    #[serde(default)]
    pub after: String,
}

/// Which index range a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// One user's jobs, any status unless `status` narrows it.
    User,
}

/// A parsed, checked filter.
#[derive(Debug, Clone)]
pub struct Filter {
    view: View,
    status: Option<JobStatus>,
    kind: Option<String>,
    user: Option<Uuid>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    error: Option<String>,
}

fn parse_time(text: &str) -> Result<Option<DateTime<Utc>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(format!(
        "{text:?} is not a time: use 2026-12-06T08:00 (UTC)"
    ))
}

/// `%`, `_` and `\` match themselves in the error search.
fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Filter {
    /// Check `q`; the error says which field is wrong.
    ///
    /// # Errors
    /// A message for the operator.
    pub fn parse(q: &JobQuery) -> Result<Filter, String> {
        let user = match q.user.trim() {
            "" => None,
            u => Some(
                u.parse::<Uuid>()
                    .map_err(|_| format!("user {u:?} is not a user id (UUID)"))?,
            ),
        };
        let status = match q.status.trim() {
            "" => None,
            s => Some(JobStatus::from_str(s).map_err(|_| format!("no such status {s:?}"))?),
        };
        let view = match (user, status) {
            (Some(_), _) => View::User,
            (None, None | Some(JobStatus::Pending)) => View::Pending,
            (None, Some(JobStatus::Running)) => View::Running,
            (None, Some(JobStatus::Succeeded)) => View::Succeeded,
            (None, Some(JobStatus::Failed)) => View::Failed,
            (None, Some(JobStatus::Cancelled)) => View::Cancelled,
        };
        let kind = match q.kind.trim() {
            "" => None,
            k if crate::config::valid_kind_name(k) => Some(k.to_owned()),
            k => return Err(format!("{k:?} is not a kind name")),
        };
        let error = match q.error.trim() {
            "" => None,
            e if e.chars().count() > 200 => return Err("the error text is too long".to_owned()),
            e => Some(like_pattern(e)),
        };
        Ok(Filter {
            view,
            status: status.or(match view {
                View::Pending => Some(JobStatus::Pending),
                _ => None,
            }),
            kind,
            user,
            from: parse_time(&q.from)?,
            to: parse_time(&q.to)?,
            error,
        })
    }

    /// The column the time range applies to.
    fn time_column(&self) -> &'static str {
        match self.view {
            View::Succeeded | View::Failed | View::Cancelled => "finished_at",
            _ => "created_at",
        }
    }

    /// ` where …` of the filter (no cursor, no order).
    fn push_where(&self, qb: &mut QueryBuilder<Postgres>, with_error: bool) {
        qb.push(" where ");
        match self.view {
            View::Pending => {
                qb.push("status = 'pending'");
            }
            View::Running => {
                qb.push("status = 'running'");
            }
            View::Succeeded => {
                qb.push("status = 'succeeded' and finished_at is not null");
            }
            View::Failed => {
                qb.push("status = 'failed'");
            }
            View::Cancelled => {
                qb.push("status = 'cancelled'");
            }
            View::User => {
                qb.push("user_id = ").push_bind(self.user);
                if let Some(status) = self.status {
                    qb.push(" and status = ").push_bind(status.as_str());
                }
            }
        }
        if let Some(kind) = &self.kind {
            qb.push(" and kind = ").push_bind(kind.clone());
        }
        let column = self.time_column();
        if let Some(from) = self.from {
            qb.push(format_args!(" and {column} >= ")).push_bind(from);
        }
        if let Some(to) = self.to {
            qb.push(format_args!(" and {column} < ")).push_bind(to);
        }
        if with_error && let Some(error) = &self.error {
            qb.push(" and error ilike ").push_bind(error.clone());
        }
    }

    fn order(&self) -> &'static str {
        match self.view {
            View::Pending => "priority desc, run_at, id",
            View::Running => "lease_expires_at, id",
            View::Succeeded | View::Failed | View::Cancelled => "finished_at desc, id desc",
            View::User => "created_at desc, id desc",
        }
    }

    /// The keyset condition after `cursor`.
    fn push_after(&self, qb: &mut QueryBuilder<Postgres>, cursor: &Cursor) {
        match (self.view, cursor) {
            (View::Pending, Cursor::Pending(priority, run_at, id)) => {
                qb.push(" and (priority < ")
                    .push_bind(*priority)
                    .push(" or (priority = ")
                    .push_bind(*priority)
                    .push(" and (run_at, id) > (")
                    .push_bind(*run_at)
                    .push(", ")
                    .push_bind(*id)
                    .push(")))");
            }
            (View::Running, Cursor::Time(at, id)) => {
                qb.push(" and (lease_expires_at, id) > (")
                    .push_bind(*at)
                    .push(", ")
                    .push_bind(*id)
                    .push(")");
            }
            (View::Succeeded | View::Failed | View::Cancelled, Cursor::Time(at, id)) => {
                qb.push(" and (finished_at, id) < (")
                    .push_bind(*at)
                    .push(", ")
                    .push_bind(*id)
                    .push(")");
            }
            (View::User, Cursor::Time(at, id)) => {
                qb.push(" and (created_at, id) < (")
                    .push_bind(*at)
                    .push(", ")
                    .push_bind(*id)
                    .push(")");
            }
            _ => {}
        }
    }

    /// The filter as JSON, for the audit trail.
    fn describe(&self, q: &JobQuery) -> serde_json::Value {
        json!({
            "status": self.status.map(JobStatus::as_str),
            "kind": self.kind,
            "user": self.user,
            "from": self.from,
            "to": self.to,
            "error": if q.error.trim().is_empty() { None } else { Some(q.error.trim()) },
        })
    }
}

/// A position in a list.
#[derive(Debug, Clone, PartialEq)]
enum Cursor {
    Pending(i16, DateTime<Utc>, Uuid),
    Time(DateTime<Utc>, Uuid),
}

impl Cursor {
    fn parse(text: &str) -> Option<Cursor> {
        let parts: Vec<&str> = text.split('~').collect();
        let time = |s: &str| DateTime::from_timestamp_micros(s.parse().ok()?);
        match parts.as_slice() {
            [p, t, id] => Some(Cursor::Pending(p.parse().ok()?, time(t)?, id.parse().ok()?)),
            [t, id] => Some(Cursor::Time(time(t)?, id.parse().ok()?)),
            _ => None,
        }
    }

    fn encode(&self) -> String {
        match self {
            Cursor::Pending(p, t, id) => format!("{p}~{}~{id}", t.timestamp_micros()),
            Cursor::Time(t, id) => format!("{}~{id}", t.timestamp_micros()),
        }
    }
}

/// One row of the list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    id: Uuid,
    user_id: Uuid,
    kind: String,
    status: String,
    priority: i16,
    run_at: DateTime<Utc>,
    attempt: i32,
    max_attempts: i32,
    progress: i16,
    error: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, user_id, kind, status, priority, run_at, attempt, max_attempts, progress, \
                       error, created_at, finished_at, lease_expires_at";

impl JobRow {
    fn cursor(&self, view: View) -> Cursor {
        match view {
            View::Pending => Cursor::Pending(self.priority, self.run_at, self.id),
            View::Running => Cursor::Time(self.lease_expires_at.unwrap_or(self.run_at), self.id),
            View::Succeeded | View::Failed | View::Cancelled => {
                Cursor::Time(self.finished_at.unwrap_or(self.created_at), self.id)
            }
            View::User => Cursor::Time(self.created_at, self.id),
        }
    }
}

/// The page of rows after `after` (at most [`PAGE`] + 1: one more tells there is a next page).
/// Public for the plan tests and the benchmark, which run the statement it builds.
pub fn list_statement(filter: &Filter, after: Option<&str>) -> QueryBuilder<Postgres> {
    list_statement_with("", filter, after)
}

/// [`list_statement`] after `prefix` (`explain `, for the plan tests).
pub fn list_statement_with(
    prefix: &str,
    filter: &Filter,
    after: Option<&str>,
) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new(format!("{prefix}select "));
    let cursor = after.and_then(Cursor::parse);
    let order = filter.order();
    if filter.error.is_some() {
        qb.push(format_args!(
            "{COLUMNS} from (select {COLUMNS} from public.studio_jobs"
        ));
        filter.push_where(&mut qb, false);
        if let Some(c) = &cursor {
            filter.push_after(&mut qb, c);
        }
        qb.push(format_args!(
            " order by {order} limit {ERROR_SEARCH_ROWS}) j where error ilike "
        ))
        .push_bind(filter.error.clone());
    } else {
        qb.push(format_args!("{COLUMNS} from public.studio_jobs"));
        filter.push_where(&mut qb, false);
        if let Some(c) = &cursor {
            filter.push_after(&mut qb, c);
        }
    }
    qb.push(format_args!(" order by {order} limit {}", PAGE + 1));
    qb
}

/// How many jobs the filter matches (a bulk action's count).
pub fn count_statement(filter: &Filter) -> QueryBuilder<Postgres> {
    count_statement_with("", filter)
}

/// [`count_statement`] after `prefix` (`explain `, for the plan tests).
pub fn count_statement_with(prefix: &str, filter: &Filter) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new(format!("{prefix}select count(*) from public.studio_jobs"));
    filter.push_where(&mut qb, true);
    qb
}

/// The next batch of a bulk action: up to [`BULK_BATCH`] matching jobs last changed before the
/// action started (a job retried by this action and failed again is not taken twice), locked.
fn batch_statement(
    filter: &Filter,
    action: Bulk,
    started: DateTime<Utc>,
) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new("select id from public.studio_jobs");
    filter.push_where(&mut qb, true);
    qb.push(" and updated_at < ").push_bind(started);
    if action == Bulk::Cancel {
        // a running job asked to stop stays running: take it once
        qb.push(" and cancel_requested_at is null");
    }
    qb.push(format_args!(
        " order by id limit {BULK_BATCH} for update skip locked"
    ));
    qb
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bulk {
    Retry,
    Cancel,
}

impl Bulk {
    fn allowed(self, filter: &Filter) -> bool {
        match self {
            Bulk::Retry => matches!(
                filter.status,
                Some(JobStatus::Failed | JobStatus::Cancelled)
            ),
            Bulk::Cancel => matches!(filter.status, Some(JobStatus::Pending | JobStatus::Running)),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Bulk::Retry => "retry",
            Bulk::Cancel => "cancel",
        }
    }
}

impl JobQuery {
    /// The filter's fields as (name, trimmed value), in the order links and forms carry them.
    fn fields(&self) -> [(&'static str, &str); 6] {
        [
            ("status", self.status.trim()),
            ("kind", self.kind.trim()),
            ("user", self.user.trim()),
            ("from", self.from.trim()),
            ("to", self.to.trim()),
            ("error", self.error.trim()),
        ]
    }
}

fn query_string(q: &JobQuery) -> String {
    q.fields()
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn hidden_filter(q: &JobQuery) -> String {
    q.fields()
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
        .collect()
}

fn filter_form(q: &JobQuery, kinds: &[String]) -> String {
    let status = q.status.trim();
    let mut statuses = String::new();
    for s in ["", "pending", "running", "succeeded", "failed", "cancelled"] {
        let label = if s.is_empty() { "any (with a user)" } else { s };
        let selected = if s == status { " selected" } else { "" };
        let _ = write!(statuses, "<option value=\"{s}\"{selected}>{label}</option>");
    }
    let mut kind_options = String::from("<option value=\"\">any</option>");
    for k in kinds {
        let selected = if k == q.kind.trim() { " selected" } else { "" };
        let _ = write!(kind_options, "<option{selected}>{}</option>", esc(k));
    }
    format!(
        "<form method=\"get\" action=\"/jobs\" class=\"filters\" role=\"search\">
<label>Status <select name=\"status\">{statuses}</select></label>
<label>Kind <select name=\"kind\">{kind_options}</select></label>
<label>User <input name=\"user\" value=\"{user}\" placeholder=\"user id\" size=\"36\"></label>
<label>From (UTC) <input name=\"from\" type=\"datetime-local\" value=\"{from}\"></label>
<label>To (UTC) <input name=\"to\" type=\"datetime-local\" value=\"{to}\"></label>
<label>Error text <input name=\"error\" value=\"{error}\"></label>
<button type=\"submit\">Filter</button>
</form>
<form method=\"get\" action=\"/jobs\" class=\"filters\" role=\"search\">
<label>Job id <input name=\"id\" placeholder=\"job id\" size=\"36\"></label>
<button type=\"submit\">Open</button>
</form>",
        user = esc(q.user.trim()),
        from = esc(q.from.trim()),
        to = esc(q.to.trim()),
        error = esc(q.error.trim()),
    )
}

fn job_table(rows: &[JobRow]) -> String {
    if rows.is_empty() {
        return "<p class=\"empty\">No jobs match this filter.</p>".to_owned();
    }
    let mut table = html::Table::new(
        "jobs",
        Some("Jobs"),
        &[
            "Job",
            "Status",
            "Kind",
            "User",
            "Attempt",
            "Created (UTC)",
            "Finished (UTC)",
            "Error",
        ],
    );
    for r in rows {
        let short_error: String = r.error.as_deref().unwrap_or("").chars().take(80).collect();
        let id = r.id;
        table.row(
            &format!(" data-job=\"{id}\""),
            &format!(
                "<a href=\"/jobs/{id}\"><code>{}</code></a>",
                &id.to_string()[..8]
            ),
            &[
                &format!(
                    "{}{}",
                    html::status(&r.status),
                    if r.status == "running" {
                        format!(" {}%", r.progress)
                    } else {
                        String::new()
                    }
                ),
                &esc(&r.kind),
                &format!(
                    "<a href=\"/jobs?user={user}\"><code>{}</code></a>",
                    &r.user_id.to_string()[..8],
                    user = r.user_id
                ),
                &format!("{}/{}", r.attempt, r.max_attempts),
                &html::time(Some(r.created_at)),
                &html::time(r.finished_at),
                &esc(&short_error),
            ],
        );
    }
    table.finish("")
}

/// `GET /jobs`
pub async fn list(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<JobQuery>,
) -> Response {
    if !q.id.trim().is_empty() {
        return match q.id.trim().parse::<Uuid>() {
            Ok(id) => Redirect::to(&format!("/jobs/{id}")).into_response(),
            Err(_) => html::page(
                &headers,
                &session,
                Nav::Jobs,
                "Jobs",
                false,
                &format!(
                    "<h1>Jobs</h1><p class=\"error\" role=\"alert\">{} is not a job id.</p>{}",
                    esc(q.id.trim()),
                    filter_form(&q, &[])
                ),
            ),
        };
    }
    let kinds = crate::control::kinds::Kinds::new(state.pool.clone())
        .known()
        .await
        .unwrap_or_default();
    let mut body = String::from("<h1>Jobs</h1>");
    body.push_str(&filter_form(&q, &kinds));
    let filter = match Filter::parse(&q) {
        Ok(filter) => filter,
        Err(message) => {
            let _ = write!(
                body,
                "<p class=\"error\" role=\"alert\">{}</p>",
                esc(&message)
            );
            return html::page(&headers, &session, Nav::Jobs, "Jobs", false, &body);
        }
    };
    let rows: Vec<JobRow> = match list_statement(&filter, Some(q.after.as_str()))
        .build_query_as()
        .fetch_all(&state.pool)
        .await
    {
        Ok(rows) => rows,
        Err(err) => return html::server_error(&err),
    };
    let more = rows.len() as i64 > PAGE;
    let rows = &rows[..rows.len().min(PAGE as usize)];
    let _ = write!(
        body,
        "<p class=\"muted\">{}{}</p>",
        match filter.view {
            View::Pending => "Pending jobs in the order claims take them.",
            View::Running => "Running jobs, the lease expiring first at the top.",
            View::User => "This user's jobs, newest first.",
            _ => "Finished jobs, the latest first.",
        },
        if filter.error.is_some() {
            " The error text is searched among the newest 100,000 jobs of this list."
        } else {
            ""
        }
    );
    body.push_str(&job_table(rows));
    let qs = query_string(&q);
    let mut pager = String::new();
    if !q.after.is_empty() {
        let _ = write!(pager, "<a href=\"/jobs?{qs}\">First page</a> ");
    }
    if more && let Some(last) = rows.last() {
        let _ = write!(
            pager,
            "<a href=\"/jobs?{qs}{amp}after={}\" rel=\"next\">Next page</a>",
            url_encode(&last.cursor(filter.view).encode()),
            amp = if qs.is_empty() { "" } else { "&" },
        );
    }
    if !pager.is_empty() {
        let _ = write!(
            body,
            "<nav class=\"pager\" aria-label=\"Pages\">{pager}</nav>"
        );
    }
    // Bulk actions over everything matching the filter: the count first (a dry run).
    let mut bulk = String::new();
    for action in [Bulk::Retry, Bulk::Cancel] {
        if action.allowed(&filter) && session.role >= OperatorRole::Operator {
            let _ = write!(
                bulk,
                "<form method=\"post\" action=\"/jobs/bulk\" class=\"inline\">{csrf}{hidden}<input type=\"hidden\" name=\"action\" value=\"{verb}\"><button type=\"submit\" name=\"dry_run\" value=\"1\">{label} every matching job…</button></form>",
                csrf = html::csrf(&session),
                hidden = hidden_filter(&q),
                verb = action.verb(),
                label = if action == Bulk::Retry {
                    "Retry"
                } else {
                    "Cancel"
                },
            );
        }
    }
    if !bulk.is_empty() {
        let _ = write!(
            body,
            "<section aria-labelledby=\"bulk\"><h2 id=\"bulk\">Bulk actions</h2><p class=\"muted\">These act on every job matching the filter, not only this page; you see the count before anything changes.</p>{bulk}</section>"
        );
    }
    html::page(&headers, &session, Nav::Jobs, "Jobs", true, &body)
}

/// A bulk action's form.
#[derive(Debug, Deserialize)]
pub struct BulkForm {
    #[serde(flatten)]
    query: JobQuery,
    action: String,
    #[serde(default)]
    dry_run: String,
    /// The count the operator confirmed.
    #[serde(default)]
    confirm: String,
}

/// `POST /jobs/bulk`: with `dry_run`, the count and a confirmation form; with `confirm`, the
/// action, batch by batch, each batch and its audit rows in one transaction.
pub async fn bulk(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<BulkForm>,
) -> Response {
    if let Some(refused) = session.refused(OperatorRole::Operator) {
        return refused;
    }
    let action = match form.action.as_str() {
        "retry" => Bulk::Retry,
        "cancel" => Bulk::Cancel,
        _ => return bad_request("no such bulk action"),
    };
    let filter = match Filter::parse(&form.query) {
        Ok(filter) => filter,
        Err(message) => return bad_request(&message),
    };
    if !action.allowed(&filter) {
        return bad_request(match action {
            Bulk::Retry => "bulk retry needs a filter on status failed or cancelled",
            Bulk::Cancel => "bulk cancel needs a filter on status pending or running",
        });
    }
    let back = format!("/jobs?{}", query_string(&form.query));
    if form.confirm.is_empty() {
        let count: i64 = match count_statement(&filter)
            .build_query_scalar()
            .fetch_one(&state.pool)
            .await
        {
            Ok(n) => n,
            Err(err) => return html::server_error(&err),
        };
        let body = format!(
            "<h1>{Verb} every matching job?</h1>
<p class=\"count\" role=\"status\"><strong data-count=\"{count}\">{count}</strong> job(s) match this filter now (dry run: nothing was changed).</p>
<pre class=\"filter\">{filter}</pre>
<form method=\"post\" action=\"/jobs/bulk\">{csrf}{hidden}<input type=\"hidden\" name=\"action\" value=\"{verb}\"><input type=\"hidden\" name=\"confirm\" value=\"{count}\"><button type=\"submit\" class=\"danger\"{disabled}>{Verb} {count} job(s)</button> <a href=\"{back}\">Back to the list</a></form>",
            Verb = if action == Bulk::Retry { "Retry" } else { "Cancel" },
            verb = action.verb(),
            filter = esc(&filter.describe(&form.query).to_string()),
            csrf = html::csrf(&session),
            hidden = hidden_filter(&form.query),
            disabled = if count == 0 { " disabled" } else { "" },
            back = esc(&back),
        );
        return html::page(&headers, &session, Nav::Jobs, "Bulk action", false, &body);
    }
    let _ = form.dry_run;
    match run_bulk(&state, &session, action, &filter, &form.query).await {
        Ok((id, changed)) => {
            let body = format!(
                "<h1>Done</h1><p role=\"status\"><strong data-count=\"{changed}\">{changed}</strong> job(s) {past}. Recorded as action #{id} in the <a href=\"/audit\">audit trail</a>.</p><p><a href=\"{back}\">Back to the list</a></p>",
                past = if action == Bulk::Retry {
                    "retried"
                } else {
                    "cancelled (running ones were asked to stop)"
                },
                back = esc(&back),
            );
            html::page(&headers, &session, Nav::Jobs, "Bulk action", false, &body)
        }
        Err(err) => html::server_error(&err),
    }
}

async fn run_bulk(
    state: &DashState,
    session: &Session,
    action: Bulk,
    filter: &Filter,
    q: &JobQuery,
) -> Result<(i64, i64), anyhow::Error> {
    let started = state.queue.admin().database_now().await?;
    let name = match action {
        Bulk::Retry => "jobs.retry",
        Bulk::Cancel => "jobs.cancel",
    };
    let id = Audit::new(state.pool.clone())
        .record(&NewAction {
            role: Some(session.role.as_str()),
            kind: filter.kind.as_deref(),
            filter: Some(filter.describe(q)),
            ..NewAction::new(&session.operator, Source::Dashboard, name)
        })
        .await?;
    let mut total = 0i64;
    loop {
        let mut tx = state.pool.begin().await?;
        let ids: Vec<Uuid> = batch_statement(filter, action, started)
            .build_query_scalar()
            .fetch_all(&mut *tx)
            .await?;
        if ids.is_empty() {
            break;
        }
        let changed = match action {
            Bulk::Retry => Admin::retry_ids_in(&mut tx, &ids).await?,
            Bulk::Cancel => Admin::cancel_ids_in(&mut tx, &ids).await?,
        };
        Audit::add_jobs(&mut tx, id, &changed).await?;
        tx.commit().await?;
        total += changed.len() as i64;
        if (ids.len() as i64) < BULK_BATCH {
            break;
        }
    }
    tracing::info!(operator = %session.operator, action = name, jobs = total, audit = id, "dashboard: bulk action");
    Ok((id, total))
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        html::message_page("Not done", message),
    )
        .into_response()
}

fn json_block(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(v) => format!(
            "<pre class=\"json\">{}</pre>",
            esc(&serde_json::to_string_pretty(v).unwrap_or_default())
        ),
        None => "<p class=\"muted\">none</p>".to_owned(),
    }
}

/// `GET /jobs/{id}`
pub async fn show(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return (
            StatusCode::NOT_FOUND,
            html::message_page("Not found", "That is not a job id."),
        )
            .into_response();
    };
    let job = match state.queue.job(id).await {
        Ok(job) => job,
        Err(crate::queue::Error::NotFound(_)) => {
            return (
                StatusCode::NOT_FOUND,
                html::message_page(
                    "Not found",
                    "There is no such job (it may have been pruned).",
                ),
            )
                .into_response();
        }
        Err(err) => return html::server_error(&err),
    };
    let audit = Audit::new(state.pool.clone());
    let settings = state.settings.clone();
    let policy = move |kind: &str| WhyPolicy::for_kind(&settings, kind);
    let (events, actions, reason) = tokio::join!(
        state.queue.events(id),
        audit.for_job(id),
        why(&state.pool, id, &policy, None),
    );
    let events = events.unwrap_or_default();
    let actions = actions.unwrap_or_default();
    let mut body = format!(
        "<h1>Job <code>{id}</code></h1><p>{status} <span class=\"muted\">kind</span> <a href=\"/jobs?kind={kind}&amp;status={st}\">{kind}</a> <span class=\"muted\">user</span> <a href=\"/jobs?user={user}\"><code>{user}</code></a></p>",
        status = html::status(job.status.as_str()),
        kind = esc(&job.kind),
        st = job.status.as_str(),
        user = job.user_id,
    );
    if job.status == JobStatus::Pending {
        let text = match &reason {
            Ok(Some(r)) => r.to_string(),
            Ok(None) => "the job is gone".to_owned(),
            Err(err) => format!("could not tell: {err}"),
        };
        let _ = write!(
            body,
            "<section class=\"why\" aria-labelledby=\"why\"><h2 id=\"why\">Why isn't it running?</h2><p id=\"why-reason\" role=\"status\">{}</p></section>",
            esc(&text)
        );
    }
    // actions
    let mut buttons = String::new();
    if session.role >= OperatorRole::Operator {
        if matches!(job.status, JobStatus::Pending | JobStatus::Running) {
            let _ = write!(
                buttons,
                "<form method=\"post\" action=\"/jobs/{id}/cancel\" class=\"inline\">{}<button type=\"submit\" class=\"danger\">Cancel job</button></form>",
                html::csrf(&session)
            );
        } else {
            let _ = write!(
                buttons,
                "<form method=\"post\" action=\"/jobs/{id}/retry\" class=\"inline\">{}<button type=\"submit\">Retry job</button></form>",
                html::csrf(&session)
            );
        }
    }
    if !buttons.is_empty() {
        let _ = write!(body, "<div class=\"actions\">{buttons}</div>");
    }
    let _ = write!(
        body,
        "<dl class=\"facts\">
<dt>Priority</dt><dd>{priority}</dd>
<dt>Attempts</dt><dd>{attempt} of {max}</dd>
<dt>Progress</dt><dd>{progress}%{message}</dd>
<dt>Due (run_at)</dt><dd>{run_at}</dd>
<dt>Created</dt><dd>{created}</dd>
<dt>Started</dt><dd>{started}</dd>
<dt>Finished</dt><dd>{finished}</dd>
<dt>Worker</dt><dd>{worker}</dd>
<dt>Lease until</dt><dd>{lease}</dd>
<dt>Cancel requested</dt><dd>{cancel}</dd>
</dl>",
        priority = job.priority,
        attempt = job.attempt,
        max = job.max_attempts,
        progress = job.progress,
        message = job
            .progress_message
            .as_deref()
            .map(|m| format!(" ({})", esc(m)))
            .unwrap_or_default(),
        run_at = html::time(Some(job.run_at)),
        created = html::time(Some(job.created_at)),
        started = html::time(job.started_at),
        finished = html::time(job.finished_at),
        worker = esc(job.locked_by.as_deref().unwrap_or("–")),
        lease = html::time(job.lease_expires_at),
        cancel = html::time(job.cancel_requested_at),
    );
    let _ = write!(
        body,
        "<h2>Input</h2>{input}<h2>Result</h2>{result}<h2>Error</h2>{error}<h2>Operator's detail</h2>{detail}",
        input = json_block(Some(&job.input)),
        result = json_block(job.result.as_ref()),
        error = job
            .error
            .as_deref()
            .map(|e| format!("<pre class=\"error-text\">{}</pre>", esc(e)))
            .unwrap_or_else(|| "<p class=\"muted\">none</p>".to_owned()),
        detail = job
            .error_detail
            .as_deref()
            .map(|e| format!("<pre>{}</pre>", esc(e)))
            .unwrap_or_else(|| "<p class=\"muted\">none</p>".to_owned()),
    );
    // the timeline: the history's transitions and the operators' actions, by time
    let mut timeline: Vec<(DateTime<Utc>, String)> = events
        .iter()
        .map(|e| {
            let mut text = format!(
                "{} → {} <span class=\"muted\">attempt {}</span>",
                html::status(e.from_status.as_str()),
                html::status(e.to_status.as_str()),
                e.attempt
            );
            if let Some(w) = &e.worker {
                let _ = write!(text, " <span class=\"muted\">on {}</span>", esc(w));
            }
            if let Some(m) = &e.message {
                let _ = write!(text, " — {}", esc(m));
            }
            (e.created_at, text)
        })
        .collect();
    timeline.extend(actions.iter().map(|a| {
        (
            a.at,
            format!(
                "<strong class=\"operator\">{action} by {actor}</strong> <span class=\"muted\">({source}{role}, audit #{id})</span>",
                action = esc(&a.action),
                actor = esc(&a.actor),
                source = esc(&a.source),
                role = a.role.as_deref().map(|r| format!(", {}", esc(r))).unwrap_or_default(),
                id = a.id,
            ),
        )
    }));
    timeline.sort_by_key(|(at, _)| *at);
    body.push_str("<h2>History</h2><ol class=\"timeline\">");
    for (at, text) in &timeline {
        let _ = write!(body, "<li>{} {text}</li>", html::time(Some(*at)));
    }
    body.push_str("</ol>");
    html::page(&headers, &session, Nav::Jobs, "Job", true, &body)
}

async fn single(
    state: &DashState,
    session: &Session,
    id: Uuid,
    action: Bulk,
) -> Result<Option<i64>, anyhow::Error> {
    let mut tx = state.pool.begin().await?;
    let changed = match action {
        Bulk::Retry => Admin::retry_ids_in(&mut tx, &[id]).await?,
        Bulk::Cancel => Admin::cancel_ids_in(&mut tx, &[id]).await?,
    };
    if changed.is_empty() {
        return Ok(None);
    }
    let audit = Audit::record_in(
        &mut tx,
        &NewAction {
            role: Some(session.role.as_str()),
            job_id: Some(id),
            rows: 1,
            ..NewAction::new(
                &session.operator,
                Source::Dashboard,
                match action {
                    Bulk::Retry => "job.retry",
                    Bulk::Cancel => "job.cancel",
                },
            )
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(operator = %session.operator, job = %id, action = action.verb(), audit, "dashboard: job action");
    Ok(Some(audit))
}

async fn act(state: DashState, session: Session, id: String, action: Bulk) -> Response {
    if let Some(refused) = session.refused(OperatorRole::Operator) {
        return refused;
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return bad_request("that is not a job id");
    };
    match single(&state, &session, id, action).await {
        Ok(Some(_)) => Redirect::to(&format!("/jobs/{id}")).into_response(),
        Ok(None) => {
            let status = state
                .queue
                .job(id)
                .await
                .map(|j| j.status.as_str().to_owned())
                .unwrap_or_else(|_| "gone".to_owned());
            (
                StatusCode::CONFLICT,
                html::message_page(
                    "Not done",
                    &format!(
                        "The job cannot be {}: it is {status}.",
                        match action {
                            Bulk::Retry => "retried",
                            Bulk::Cancel => "cancelled",
                        }
                    ),
                ),
            )
                .into_response()
        }
        Err(err) => html::server_error(&err),
    }
}

/// `POST /jobs/{id}/retry`
pub async fn retry(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    act(state, session, id, Bulk::Retry).await
}

/// `POST /jobs/{id}/cancel`
pub async fn cancel(
    State(state): State<DashState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    act(state, session, id, Bulk::Cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        for c in [Cursor::Pending(-5, t, id), Cursor::Time(t, id)] {
            assert_eq!(Cursor::parse(&c.encode()), Some(c));
        }
        assert_eq!(Cursor::parse("garbage"), None);
    }

    #[test]
    fn like_patterns_match_text_literally() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn filters_are_checked() {
        let q = |f: fn(&mut JobQuery)| {
            let mut q = JobQuery::default();
            f(&mut q);
            Filter::parse(&q)
        };
        assert!(q(|q| q.user = "nope".into()).is_err());
        assert!(q(|q| q.status = "done".into()).is_err());
        assert!(q(|q| q.kind = "Bad Kind".into()).is_err());
        assert!(q(|q| q.from = "yesterday".into()).is_err());
        assert_eq!(q(|_| {}).unwrap().view, View::Pending);
        assert_eq!(
            q(|q| q.status = "failed".into()).unwrap().view,
            View::Failed
        );
        assert_eq!(
            q(|q| q.user = Uuid::nil().to_string()).unwrap().view,
            View::User
        );
        let t = q(|q| q.from = "2026-12-06T08:00".into()).unwrap();
        assert_eq!(t.from.unwrap().to_rfc3339(), "2026-12-06T08:00:00+00:00");
    }
}
