//! Sign-in, sessions, CSRF, roles and the audit trail, over HTTP as a browser or a hand-made
//! client would send them.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use studio_worker::queue::{ClaimRequest, Failure, JobStatus, NewJob, WorkerId};
use uuid::Uuid;

use crate::harness::{TestDashboard, create_user, token};

async fn pending_job(d: &TestDashboard, kind: &str) -> Uuid {
    let user = create_user(&d.db).await;
    d.queue
        .enqueue(&NewJob::new(user, kind, json!({"n": 1})))
        .await
        .unwrap()
}

async fn failed_job(d: &TestDashboard, kind: &str, error: &str) -> Uuid {
    let id = pending_job(d, kind).await;
    let worker = WorkerId::generate();
    let kinds = vec![kind.to_owned()];
    let claimed = d
        .queue
        .claim_named(
            &ClaimRequest {
                worker: &worker,
                kinds: &kinds,
                limit: 1,
                lease: Duration::from_secs(30),
                now: None,
            },
            &[id],
        )
        .await
        .unwrap();
    let lease = claimed[0].lease(&worker);
    d.queue
        .fail(
            &lease,
            &Failure::Permanent {
                error: error.to_owned(),
            },
        )
        .await
        .unwrap();
    id
}

async fn status(d: &TestDashboard, id: Uuid) -> JobStatus {
    d.queue.job(id).await.unwrap().status
}

async fn audit_rows(d: &TestDashboard) -> Vec<(String, String, String, i64)> {
    sqlx::query_as(
        "select actor, source, action, rows from public.studio_operator_actions order by id",
    )
    .fetch_all(&d.db)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn nothing_but_the_login_page_and_healthz_answers_without_signing_in(pool: PgPool) {
    let d = TestDashboard::start(&pool).await;
    let http = TestDashboard::client();
    let job = pending_job(&d, "render").await;
    for path in ["/healthz", "/login", "/assets/style.css", "/assets/app.js"] {
        let r = http.get(d.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    for path in [
        "/",
        "/jobs?status=failed",
        "/users",
        "/kinds",
        "/schedules",
        "/audit",
        "/live",
        &format!("/jobs/{job}"),
    ] {
        let r = http.get(d.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 303, "{path}");
        let to = r.headers()["location"].to_str().unwrap();
        assert!(to.starts_with("/login?next="), "{path} → {to}");
    }
    for path in [
        format!("/jobs/{job}/cancel"),
        "/kinds/render/pause".to_owned(),
        "/jobs/bulk".to_owned(),
    ] {
        let r = http
            .post(d.url(&path))
            .form(&[("csrf", "x"), ("action", "cancel"), ("status", "pending")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    assert_eq!(status(&d, job).await, JobStatus::Pending);
    assert!(audit_rows(&d).await.is_empty());
    d.finished().await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn sign_in_sets_a_locked_down_cookie_and_refuses_bad_tokens(pool: PgPool) {
    let d = TestDashboard::start(&pool).await;
    let http = TestDashboard::client();
    let bad = http
        .post(d.url("/login"))
        .form(&[("token", "not-a-token"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    assert!(bad.headers().get("set-cookie").is_none());
    let good = http
        .post(d.url("/login"))
        .form(&[("token", token("victor")), ("next", "/jobs?status=failed")])
        .send()
        .await
        .unwrap();
    assert_eq!(good.status().as_u16(), 303);
    assert_eq!(good.headers()["location"], "/jobs?status=failed");
    let cookie = good.headers()["set-cookie"].to_str().unwrap();
    for attr in [
        "__Host-studio-dashboard=",
        "Path=/",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    // an open redirect is not followed
    let away = http
        .post(d.url("/login"))
        .form(&[("token", token("victor")), ("next", "//evil.test/")])
        .send()
        .await
        .unwrap();
    assert_eq!(away.headers()["location"], "/");
    // pages carry the security headers
    let signed = d.sign_in("victor").await;
    let page = signed.get("/").await;
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["cache-control"], "no-store");
    // signing out ends the session
    let out = signed.post("/logout", &[]).await;
    assert_eq!(out.status().as_u16(), 303);
    assert_eq!(signed.get("/").await.status().as_u16(), 303);
    d.finished().await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn sign_in_attempts_are_rate_limited(pool: PgPool) {
    let d = TestDashboard::with(
        &pool,
        &[("STUDIO_DASHBOARD__LOGIN_ATTEMPTS_PER_MINUTE", "3")],
    )
    .await;
    let http = TestDashboard::client();
    for _ in 0..3 {
        let r = http
            .post(d.url("/login"))
            .form(&[("token", "guess"), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    // over the limit, even the right token is refused for now
    let r = http
        .post(d.url("/login"))
        .form(&[("token", token("alice")), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers().get("set-cookie").is_none());
    d.finished().await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn writes_need_the_sessions_csrf_token_and_this_origin(pool: PgPool) {
    let d = TestDashboard::start(&pool).await;
    let job = pending_job(&d, "render").await;
    let olivia = d.sign_in("olivia").await;
    let path = format!("/jobs/{job}/cancel");
    let forged = olivia.post_with(&path, &[], &"0".repeat(64)).await;
    assert_eq!(forged.status().as_u16(), 403);
    let missing = olivia
        .http
        .post(format!("{}{path}", olivia.base))
        .header("cookie", &olivia.cookie)
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 403);
    // the right token from another site's page is still refused
    let cross = olivia
        .http
        .post(format!("{}{path}", olivia.base))
        .header("cookie", &olivia.cookie)
        .header("origin", "http://evil.test")
        .form(&[("csrf", olivia.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status().as_u16(), 403);
    // another session's token does not do either
    let other = d.sign_in("alice").await;
    let swapped = olivia.post_with(&path, &[], &other.csrf).await;
    assert_eq!(swapped.status().as_u16(), 403);
    assert_eq!(status(&d, job).await, JobStatus::Pending);
    assert!(audit_rows(&d).await.is_empty());
    // with its own token it is done
    let done = olivia.post(&path, &[]).await;
    assert_eq!(done.status().as_u16(), 303);
    assert_eq!(status(&d, job).await, JobStatus::Cancelled);
    d.finished().await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_viewer_is_refused_every_write_by_the_server(pool: PgPool) {
    let d = TestDashboard::start(&pool).await;
    let pending = pending_job(&d, "render").await;
    let failed = failed_job(&d, "render", "boom").await;
    let victor = d.sign_in("victor").await;
    let job_page = victor
        .get(&format!("/jobs/{pending}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !job_page.contains("Cancel job"),
        "a viewer sees no write buttons"
    );
    let writes: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("/jobs/{pending}/cancel"), vec![]),
        (format!("/jobs/{failed}/retry"), vec![]),
        (
            "/jobs/bulk".into(),
            vec![
                ("action", "cancel"),
                ("status", "pending"),
                ("confirm", "1"),
            ],
        ),
        (
            "/jobs/bulk".into(),
            vec![("action", "retry"), ("status", "failed"), ("dry_run", "1")],
        ),
        ("/kinds/render/pause".into(), vec![]),
        ("/kinds/render/resume".into(), vec![]),
        ("/kinds/render/quota".into(), vec![("max_unfinished", "1")]),
        ("/kinds/render/quota/clear".into(), vec![]),
        ("/kinds/declare".into(), vec![("kind", "newkind")]),
        ("/kinds/render/forget".into(), vec![]),
    ];
    for (path, form) in &writes {
        let r = victor.post(path, form).await;
        assert_eq!(r.status().as_u16(), 403, "viewer POST {path}");
    }
    assert_eq!(status(&d, pending).await, JobStatus::Pending);
    assert_eq!(status(&d, failed).await, JobStatus::Failed);
    let paused: i64 = sqlx::query_scalar("select count(*) from public.studio_paused_kinds")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(paused, 0);
    assert!(audit_rows(&d).await.is_empty());
    // an operator may pause but not change quotas or kinds
    let olivia = d.sign_in("olivia").await;
    assert_eq!(
        olivia
            .post("/kinds/render/pause", &[])
            .await
            .status()
            .as_u16(),
        303
    );
    for (path, form) in &writes[6..] {
        assert_eq!(
            olivia.post(path, form).await.status().as_u16(),
            403,
            "operator POST {path}"
        );
    }
    let alice = d.sign_in("alice").await;
    assert_eq!(
        alice
            .post("/kinds/render/quota", &[("max_unfinished", "5")])
            .await
            .status()
            .as_u16(),
        303
    );
    assert_eq!(
        audit_rows(&d).await,
        [
            ("olivia".into(), "dashboard".into(), "kind.pause".into(), 1),
            ("alice".into(), "dashboard".into(), "quota.set".into(), 1),
        ]
    );
    d.finished().await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn bulk_retry_counts_first_then_retries_everything_matching_and_records_it(pool: PgPool) {
    let d = TestDashboard::start(&pool).await;
    let mut matching = Vec::new();
    for i in 0..3 {
        matching.push(failed_job(&d, "render", &format!("disk full #{i}")).await);
    }
    let other_error = failed_job(&d, "render", "timeout").await;
    let other_kind = failed_job(&d, "report", "disk full").await;
    let olivia = d.sign_in("olivia").await;
    let filter = [
        ("status", "failed"),
        ("kind", "render"),
        ("error", "DISK FULL"),
    ];
    let mut dry: Vec<(&str, &str)> = filter.to_vec();
    dry.extend([("action", "retry"), ("dry_run", "1")]);
    let page = olivia.post("/jobs/bulk", &dry).await.text().await.unwrap();
    assert!(page.contains("data-count=\"3\""), "{page}");
    for id in matching.iter().chain([&other_error, &other_kind]) {
        assert_eq!(
            status(&d, *id).await,
            JobStatus::Failed,
            "the dry run changes nothing"
        );
    }
    let mut confirm: Vec<(&str, &str)> = filter.to_vec();
    confirm.extend([("action", "retry"), ("confirm", "3")]);
    let done = olivia
        .post("/jobs/bulk", &confirm)
        .await
        .text()
        .await
        .unwrap();
    assert!(done.contains("data-count=\"3\""), "{done}");
    for id in &matching {
        assert_eq!(status(&d, *id).await, JobStatus::Pending);
    }
    assert_eq!(status(&d, other_error).await, JobStatus::Failed);
    assert_eq!(status(&d, other_kind).await, JobStatus::Failed);
    let (actor, action, rows, filter): (String, String, i64, serde_json::Value) =
        sqlx::query_as("select actor, action, rows, filter from public.studio_operator_actions")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (actor.as_str(), action.as_str(), rows),
        ("olivia", "jobs.retry", 3)
    );
    assert_eq!(filter["kind"], "render");
    assert_eq!(filter["error"], "DISK FULL");
    // each job's history names the operator
    let page = olivia
        .get(&format!("/jobs/{}", matching[0]))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("jobs.retry by olivia"), "{page}");
    let audit = olivia.get("/audit").await.text().await.unwrap();
    assert!(
        audit.contains("jobs.retry") && audit.contains("olivia"),
        "{audit}"
    );
    d.finished().await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn every_page_renders_for_a_viewer(pool: PgPool) {
    let d = TestDashboard::start(&pool).await;
    let job = pending_job(&d, "render").await;
    failed_job(&d, "report", "<script>alert(1)</script>").await;
    let victor = d.sign_in("victor").await;
    for path in [
        "/".to_owned(),
        "/jobs".to_owned(),
        "/jobs?status=failed".to_owned(),
        "/jobs?status=running".to_owned(),
        "/jobs?status=succeeded&kind=render".to_owned(),
        "/jobs?status=failed&error=script".to_owned(),
        format!("/jobs/{job}"),
        "/users".to_owned(),
        "/kinds".to_owned(),
        "/schedules".to_owned(),
        "/audit".to_owned(),
    ] {
        let r = victor.get(&path).await;
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let text = r.text().await.unwrap();
        assert!(!text.contains("<script>alert"), "{path} does not escape");
    }
    d.finished().await;
}
