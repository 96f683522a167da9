//! The dashboard in a real browser (Debian's headless chromium through chromedriver): an
//! operator signs in, watches a job appear live, reads why it is not running, pauses its kind,
//! cancels it, bulk-retries a filter; a forged CSRF token, a viewer and a request without a
//! session are refused; the audit page shows every action. Skipped, with a message, when
//! chromium or chromedriver is not installed.
//!
//! With `STUDIO_DASHBOARD_SCREENSHOTS=<dir>` it also saves every page at desktop and phone
//! widths there (how `docs/dashboard/` is made).

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use studio_worker::control::kinds::Kinds;
use studio_worker::queue::{ClaimRequest, Failure, JobStatus, NewJob, WorkerId};
use uuid::Uuid;

use crate::harness::webdriver::{Driver, browser_installed};
use crate::harness::{TestDashboard, create_user, token};

async fn sign_in(driver: &Driver, base: &str, name: &str) {
    driver.navigate(&format!("{base}/login")).await;
    driver
        .until(
            "the sign-in form",
            "return document.getElementById('token') !== null",
        )
        .await;
    driver
        .eval(&format!(
            "document.getElementById('token').value = '{}'; document.querySelector('form').submit(); return true;",
            token(name)
        ))
        .await;
    driver
        .until(
            "the signed-in overview",
            "return location.pathname === '/' && document.querySelector('.whoami') !== null",
        )
        .await;
}

/// Click the button whose text is `label`.
async fn click(driver: &Driver, label: &str) {
    let found = driver
        .eval(&format!(
            "var b = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === {label:?}); if (!b) return false; b.click(); return true;"
        ))
        .await;
    assert_eq!(found, Value::Bool(true), "no button {label:?}");
}

/// A hand-made POST from the page (not a form of the page): its status.
async fn fetch_status(driver: &Driver, path: &str, body: &str, credentials: &str) -> u64 {
    driver
        .eval(&format!(
            "window.fetched = null; fetch({path:?}, {{method: 'POST', credentials: {credentials:?}, redirect: 'manual', headers: {{'Content-Type': 'application/x-www-form-urlencoded'}}, body: {body:?}}}).then(r => window.fetched = r.status); return true;"
        ))
        .await;
    driver
        .until("the hand-made request to answer", "return window.fetched")
        .await
        .as_u64()
        .unwrap()
}

async fn failed_job(d: &TestDashboard, user: Uuid, kind: &str) -> Uuid {
    let id = d
        .queue
        .enqueue(&NewJob::new(user, kind, json!({"page": 1})))
        .await
        .unwrap();
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
    d.queue
        .fail(
            &claimed[0].lease(&worker),
            &Failure::Permanent {
                error: "the PDF renderer ran out of memory".into(),
            },
        )
        .await
        .unwrap();
    id
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn an_operator_steers_the_queue_in_a_real_browser(pool: PgPool) {
    if !browser_installed("an_operator_steers_the_queue_in_a_real_browser") {
        return;
    }
    let d = TestDashboard::start(&pool).await;
    // Chromium keeps `Secure` cookies of http://localhost (a secure context), not of 127.0.0.1.
    let base = d.base.replace("127.0.0.1", "localhost");
    let replica = WorkerId::generate();
    Kinds::new(d.queue.pool().clone())
        .register(
            &replica,
            &["render".to_owned(), "report".to_owned()],
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let driver = Driver::start().await;
    driver.window_size(1280, 900).await;

    // Without a session, every page sends to the sign-in page.
    driver.navigate(&format!("{base}/jobs?status=failed")).await;
    driver
        .until("the sign-in page", "return location.pathname === '/login'")
        .await;
    sign_in(&driver, &base, "olivia").await;
    driver
        .until(
            "the live stream",
            "return window.studioLive && window.studioLive.connected",
        )
        .await;
    driver.eval("window.notReloaded = true; return true;").await;

    // A job created now appears on the overview without reloading.
    let alice = create_user(&pool).await;
    let job = d
        .queue
        .enqueue(&NewJob::new(alice, "render", json!({"frames": 24})))
        .await
        .unwrap();
    driver
        .until(
            "the overview to count the new job",
            "var r = [...document.querySelectorAll('table.kinds tbody tr')].find(r => r.cells[0].textContent === 'render'); return r && r.cells[1].textContent === '1' && window.notReloaded === true;",
        )
        .await;

    // ... and in the jobs table.
    driver
        .navigate(&format!("{base}/jobs?status=pending&kind=render"))
        .await;
    driver
        .until("the jobs page to follow changes", "return window.studioLive && window.studioLive.connected && document.querySelector('table.jobs') !== null")
        .await;
    driver.eval("window.notReloaded = true; return true;").await;
    let bob = create_user(&pool).await;
    let second = d
        .queue
        .enqueue(&NewJob::new(bob, "render", json!({"frames": 1})))
        .await
        .unwrap();
    driver
        .until(
            "the second job to appear in the table",
            &format!("return document.querySelector('tr[data-job=\"{second}\"]') !== null && window.notReloaded === true"),
        )
        .await;

    // Why isn't it running: nothing holds it; pause its kind (from the Kinds page): paused.
    driver.navigate(&format!("{base}/jobs/{job}")).await;
    let reason = driver
        .until(
            "a reason",
            "var p = document.getElementById('why-reason'); return p && p.textContent",
        )
        .await;
    assert!(
        reason.as_str().unwrap().contains("nothing holds it back"),
        "{reason}"
    );
    driver.navigate(&format!("{base}/kinds")).await;
    driver
        .until(
            "the kinds page",
            "return document.getElementById('kind-render') !== null",
        )
        .await;
    click(&driver, "Pause render").await;
    driver
        .until("render to show as paused", "var s = document.querySelector('#kind-render h2 .status'); return s && s.textContent === 'paused'")
        .await;
    driver.navigate(&format!("{base}/jobs/{job}")).await;
    let reason = driver
        .until(
            "the new reason",
            "var p = document.getElementById('why-reason'); return p && p.textContent",
        )
        .await;
    assert!(
        reason
            .as_str()
            .unwrap()
            .contains("its kind render is paused"),
        "{reason}"
    );

    // A forged CSRF token is refused, even with the operator's session.
    let forged = fetch_status(
        &driver,
        &format!("/jobs/{job}/cancel"),
        "csrf=forged",
        "same-origin",
    )
    .await;
    assert_eq!(forged, 403);
    assert_eq!(d.queue.job(job).await.unwrap().status, JobStatus::Pending);

    // Cancel it.
    click(&driver, "Cancel job").await;
    driver
        .until("the job to show as cancelled", "var s = document.querySelector('main > p .status'); return s && s.textContent === 'cancelled'")
        .await;
    assert_eq!(d.queue.job(job).await.unwrap().status, JobStatus::Cancelled);

    // Bulk-retry the failed jobs of a filter, seeing the count first.
    let carol = create_user(&pool).await;
    let failed = [
        failed_job(&d, carol, "report").await,
        failed_job(&d, carol, "report").await,
    ];
    driver
        .navigate(&format!("{base}/jobs?status=failed&kind=report"))
        .await;
    driver
        .until(
            "the failed jobs",
            &format!(
                "return document.querySelector('tr[data-job=\"{}\"]') !== null",
                failed[0]
            ),
        )
        .await;
    click(&driver, "Retry every matching job…").await;
    let count = driver
        .until(
            "the count",
            "var c = document.querySelector('[data-count]'); return c && c.textContent",
        )
        .await;
    assert_eq!(count, "2");
    for id in failed {
        assert_eq!(
            d.queue.job(id).await.unwrap().status,
            JobStatus::Failed,
            "the dry run changes nothing"
        );
    }
    click(&driver, "Retry 2 job(s)").await;
    let done = driver
        .until("the result", "return document.querySelector('h1').textContent === 'Done' && document.querySelector('[data-count]').textContent")
        .await;
    assert_eq!(done, "2");
    for id in failed {
        assert_eq!(d.queue.job(id).await.unwrap().status, JobStatus::Pending);
    }

    // Every action is on the audit page.
    driver.navigate(&format!("{base}/audit")).await;
    let audit = driver
        .until("the audit page", "return document.querySelector('table.audit') && document.querySelector('table.audit').innerText")
        .await;
    let audit = audit.as_str().unwrap();
    for action in ["kind.pause", "job.cancel", "jobs.retry"] {
        assert!(audit.contains(action), "{action} missing from {audit}");
    }
    assert!(audit.contains("olivia"), "{audit}");

    // A viewer sees no write button, and the server refuses a hand-made write.
    click(&driver, "Sign out").await;
    driver
        .until("the sign-in page", "return location.pathname === '/login'")
        .await;
    sign_in(&driver, &base, "victor").await;
    driver.navigate(&format!("{base}/jobs/{second}")).await;
    driver
        .until(
            "the job page",
            "return document.querySelector('dl.facts') !== null",
        )
        .await;
    let buttons = driver
        .eval("return [...document.querySelectorAll('main button')].map(b => b.textContent)")
        .await;
    assert_eq!(buttons, json!([]), "a viewer sees no write button");
    let csrf = driver
        .eval("return document.querySelector('input[name=csrf]').value")
        .await;
    let viewer = fetch_status(
        &driver,
        &format!("/jobs/{second}/cancel"),
        &format!("csrf={}", csrf.as_str().unwrap()),
        "same-origin",
    )
    .await;
    assert_eq!(viewer, 403);
    let pause = fetch_status(
        &driver,
        "/kinds/report/pause",
        &format!("csrf={}", csrf.as_str().unwrap()),
        "same-origin",
    )
    .await;
    assert_eq!(pause, 403);
    // Without the session cookie: refused before anything else.
    let anonymous = fetch_status(
        &driver,
        &format!("/jobs/{second}/cancel"),
        &format!("csrf={}", csrf.as_str().unwrap()),
        "omit",
    )
    .await;
    assert_eq!(anonymous, 401);
    assert_eq!(
        d.queue.job(second).await.unwrap().status,
        JobStatus::Pending
    );

    if let Ok(dir) = std::env::var("STUDIO_DASHBOARD_SCREENSHOTS") {
        screenshots(&driver, &d, &base, std::path::Path::new(&dir), second).await;
    }
    driver.quit().await;
    d.finished().await;
}

/// Every page at desktop and phone widths, into `dir`. The charts get a day of made-up minutes
/// first (a fixture for the pictures only: no test asserts on them).
async fn screenshots(
    driver: &Driver,
    d: &TestDashboard,
    base: &str,
    dir: &std::path::Path,
    job: Uuid,
) {
    sqlx::query(
        "insert into public.studio_job_minutes (minute, kind, succeeded, failed, cancelled)
         select date_trunc('minute', now()) - make_interval(mins => m), k,
                (40 + 25 * sin(m / 40.0) + (m % 7))::int, (m % 13 = 0)::int * 3, 0
           from generate_series(1, 1440) m, unnest(array['render', 'report']) k
         on conflict do nothing",
    )
    .execute(&d.db)
    .await
    .unwrap();
    // the Users page's summary of the hour, as of now (its own pass is a minute apart; a pass
    // of the dashboard's that holds the lock at this instant leaves the older one)
    sqlx::query("delete from public.studio_user_hour")
        .execute(&d.db)
        .await
        .unwrap();
    studio_worker::dashboard::live::user_hour(&d.db)
        .await
        .unwrap();
    // the test kinds every test database declares, but for the two this test uses
    sqlx::query("delete from public.studio_kinds where kind not in ('render', 'report')")
        .execute(&d.db)
        .await
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let pages = [
        ("overview", "/".to_owned()),
        ("jobs", "/jobs?status=pending".to_owned()),
        ("job", format!("/jobs/{job}")),
        ("users", "/users".to_owned()),
        ("kinds", "/kinds".to_owned()),
        ("schedules", "/schedules".to_owned()),
        ("audit", "/audit".to_owned()),
    ];
    for (width, height, suffix) in [(1280, 900, "desktop"), (390, 844, "phone")] {
        driver.window_size(width, height).await;
        for (name, path) in &pages {
            driver.navigate(&format!("{base}{path}")).await;
            driver.until("the page", "return document.readyState === 'complete' && document.querySelector('main') !== null").await;
            std::fs::write(
                dir.join(format!("{name}-{suffix}.png")),
                driver.screenshot().await,
            )
            .unwrap();
        }
    }
}
