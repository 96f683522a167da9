//! HTML by hand: escaping, the page frame, and the small pieces every page uses. Every value
//! that comes from the database or the request goes through [`esc`] (text and attributes).

use std::fmt::Write as _;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::auth::Session;

/// Escape text for HTML text and double-quoted attributes.
#[must_use]
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encode a query value.
#[must_use]
pub fn url_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A time as `2026-12-06 08:00:00`, UTC, in a `<time>` element.
#[must_use]
pub fn time(at: Option<DateTime<Utc>>) -> String {
    match at {
        Some(at) => format!(
            "<time datetime=\"{}\">{}</time>",
            at.to_rfc3339(),
            at.format("%Y-%m-%d %H:%M:%S")
        ),
        None => "–".to_owned(),
    }
}

/// A duration in seconds, short (`42s`, `3m 5s`, `2h 10m`, `3d 4h`).
#[must_use]
pub fn age(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A job status as text with a class for colour (the text says it all without colour).
#[must_use]
pub fn status(status: &str) -> String {
    format!("<span class=\"status status-{0}\">{0}</span>", esc(status))
}

/// The hidden CSRF field of a form.
#[must_use]
pub fn csrf(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&session.csrf)
    )
}

/// Which navigation entry is the current page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/`
    Overview,
    /// `/jobs`, `/jobs/{id}`
    Jobs,
    /// `/users`
    Users,
    /// `/kinds`
    Kinds,
    /// `/schedules`
    Schedules,
    /// `/audit`
    Audit,
}

const NAV: [(Nav, &str, &str); 6] = [
    (Nav::Overview, "/", "Overview"),
    (Nav::Jobs, "/jobs", "Jobs"),
    (Nav::Users, "/users", "Users"),
    (Nav::Kinds, "/kinds", "Kinds"),
    (Nav::Schedules, "/schedules", "Schedules"),
    (Nav::Audit, "/audit", "Audit"),
];

/// A document's head, titled `title`, with the page script if `script`.
fn head(title: &str, script: bool) -> String {
    format!(
        "<!doctype html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<meta name=\"color-scheme\" content=\"light dark\">
<title>{} · studio-worker</title>
<link rel=\"stylesheet\" href=\"/assets/style.css\">
{}</head>",
        esc(title),
        if script {
            "<script src=\"/assets/app.js\" defer></script>\n"
        } else {
            ""
        }
    )
}

/// A page: the frame around `body`, or `body` alone when the page's script asks for a fresh
/// copy of the content (`X-Fragment`, live updates). `live` pages follow the queue's changes.
pub fn page(
    headers: &HeaderMap,
    session: &Session,
    nav: Nav,
    title: &str,
    live: bool,
    body: &str,
) -> Response {
    if headers.contains_key("x-fragment") {
        return Html(body.to_owned()).into_response();
    }
    let mut links = String::new();
    for (entry, href, label) in NAV {
        let current = if entry == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(links, "<li><a href=\"{href}\"{current}>{label}</a></li>");
    }
    Html(format!(
        "{head}
<body>
<a class=\"skip\" href=\"#main\">Skip to content</a>
<header>
<nav aria-label=\"Main\"><span class=\"brand\">studio-worker</span><ul>{links}</ul></nav>
<form method=\"post\" action=\"/logout\" class=\"whoami\">{csrf}<span>{operator} ({role})</span> <button type=\"submit\">Sign out</button></form>
</header>
<main id=\"main\" tabindex=\"-1\" data-live=\"{live}\">{body}</main>
</body>
</html>",
        head = head(title, true),
        csrf = csrf(session),
        operator = esc(&session.operator),
        role = session.role.as_str(),
    ))
    .into_response()
}

/// A page without navigation (errors, refusals).
pub fn message_page(title: &str, text: &str) -> Html<String> {
    Html(format!(
        "{head}
<body><main id=\"main\" class=\"narrow\"><h1>{title}</h1><p role=\"alert\">{text}</p><p><a href=\"/\">Back to the dashboard</a></p></main></body>
</html>",
        head = head(title, false),
        title = esc(title),
        text = esc(text),
    ))
}

/// The answer when the database did not answer a page (the error goes to the log, not to the
/// page).
pub fn server_error(err: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error.message = %err, "dashboard: database error");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        message_page(
            "Database error",
            "The database did not answer this page; the error is in the dashboard's log.",
        ),
    )
        .into_response()
}

/// A table under column headings that scrolls sideways on a narrow screen; the first cell of
/// each row is its heading. Cells are HTML (escape text with [`esc`] first).
pub struct Table {
    html: String,
    columns: usize,
    rows: usize,
}

impl Table {
    /// A table of class `class` (may be empty), with a caption for screen readers if given,
    /// under `columns`.
    #[must_use]
    pub fn new(class: &str, caption: Option<&str>, columns: &[&str]) -> Table {
        let mut html = String::from("<div class=\"scroll\"><table");
        if !class.is_empty() {
            let _ = write!(html, " class=\"{class}\"");
        }
        html.push('>');
        if let Some(caption) = caption {
            let _ = write!(
                html,
                "<caption class=\"sr-only\">{}</caption>",
                esc(caption)
            );
        }
        html.push_str("<thead><tr>");
        for column in columns {
            let _ = write!(html, "<th scope=\"col\">{}</th>", esc(column));
        }
        html.push_str("</tr></thead><tbody>");
        Table {
            html,
            columns: columns.len(),
            rows: 0,
        }
    }

    /// A row headed by `head`, then `cells`; `attributes` go into the `<tr>` (e.g.
    /// ` data-job="…"`, or empty).
    pub fn row(&mut self, attributes: &str, head: &str, cells: &[&dyn std::fmt::Display]) {
        let _ = write!(self.html, "<tr{attributes}><th scope=\"row\">{head}</th>");
        for cell in cells {
            let _ = write!(self.html, "<td>{cell}</td>");
        }
        self.html.push_str("</tr>");
        self.rows += 1;
    }

    /// The table's HTML; `empty` (HTML) across the table when it has no row.
    #[must_use]
    pub fn finish(mut self, empty: &str) -> String {
        if self.rows == 0 {
            let _ = write!(
                self.html,
                "<tr><td colspan=\"{}\">{empty}</td></tr>",
                self.columns
            );
        }
        self.html.push_str("</tbody></table></div>");
        self.html
    }
}

/// The sign-in page.
pub fn login_page(next: &str, error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    Html(format!(
        "{head}
<body><main id=\"main\" class=\"narrow\">
<h1>studio-worker</h1>
{error}
<form method=\"post\" action=\"/login\" class=\"stack\">
<input type=\"hidden\" name=\"next\" value=\"{next}\">
<label for=\"token\">Operator token</label>
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>
<button type=\"submit\">Sign in</button>
</form>
</main></body>
</html>",
        head = head("Sign in", false),
        next = esc(next),
    ))
}

/// A bar chart of `values` (one bar per slot, oldest first) as inline SVG, with a text summary
/// for screen readers and for reading without the picture.
#[must_use]
pub fn bars(label: &str, values: &[(i64, i64)], summary: &str) -> String {
    let n = values.len().max(1);
    let max = values
        .iter()
        .map(|(ok, bad)| ok + bad)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut svg = String::new();
    for (i, (ok, bad)) in values.iter().enumerate() {
        let h_ok = (*ok as f64 / max as f64) * 100.0;
        let h_bad = (*bad as f64 / max as f64) * 100.0;
        if *ok > 0 {
            let _ = write!(
                svg,
                "<rect class=\"ok\" x=\"{i}\" y=\"{:.2}\" width=\"0.9\" height=\"{h_ok:.2}\"/>",
                100.0 - h_ok
            );
        }
        if *bad > 0 {
            let _ = write!(
                svg,
                "<rect class=\"bad\" x=\"{i}\" y=\"{:.2}\" width=\"0.9\" height=\"{h_bad:.2}\"/>",
                100.0 - h_ok - h_bad
            );
        }
    }
    format!(
        "<figure class=\"chart\"><figcaption>{label} <span class=\"muted\">(peak {max}/min; {summary})</span></figcaption>\
<svg viewBox=\"0 0 {n} 100\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{label}: {summary}\">{svg}</svg>\
<p class=\"legend\"><span class=\"key ok\">succeeded</span> <span class=\"key bad\">failed or cancelled</span></p></figure>",
        label = esc(label),
        summary = esc(summary),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_text_and_attributes() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn tables_head_their_rows_and_say_when_they_are_empty() {
        let mut t = Table::new("kinds", Some("Kinds"), &["Kind", "Pending"]);
        t.row(" data-x=\"1\"", "render", &[&3]);
        assert_eq!(
            t.finish("none"),
            "<div class=\"scroll\"><table class=\"kinds\"><caption class=\"sr-only\">Kinds</caption><thead><tr><th scope=\"col\">Kind</th><th scope=\"col\">Pending</th></tr></thead><tbody><tr data-x=\"1\"><th scope=\"row\">render</th><td>3</td></tr></tbody></table></div>"
        );
        assert!(
            Table::new("", None, &["A", "B"])
                .finish("No rows.")
                .contains("<table><thead><tr><th scope=\"col\">A</th><th scope=\"col\">B</th></tr></thead><tbody><tr><td colspan=\"2\">No rows.</td></tr>")
        );
    }

    #[test]
    fn ages_read_short() {
        assert_eq!(age(5.0), "5s");
        assert_eq!(age(125.0), "2m 5s");
        assert_eq!(age(7300.0), "2h 1m");
        assert_eq!(age(90_000.0), "1d 1h");
    }
}
