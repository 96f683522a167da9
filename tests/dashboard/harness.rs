//! A dashboard under test, its operators, and a client that signs in like a browser would.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::redirect::Policy;
use sqlx::PgPool;
use studio_worker::config::Settings;
use studio_worker::dashboard::{DashState, RunningDashboard, serve};
use studio_worker::queue::Queue;
use tokio_util::sync::CancellationToken;

#[path = "../common/mod.rs"]
#[allow(dead_code)] // shared with the other test binaries; not every helper is used here
mod common;
pub use common::{create_user, wait_for, worker_pool};

#[path = "../common/webdriver.rs"]
pub mod webdriver;

/// Operators: (name, token, role).
pub const OPERATORS: [(&str, &str, &str); 3] = [
    ("alice", "tok_admin_alice_0123456789abcdef", "admin"),
    ("olivia", "tok_operator_olivia_0123456789ab", "operator"),
    ("victor", "tok_viewer_victor_0123456789abcd", "viewer"),
];

/// The token of operator `name`.
pub fn token(name: &str) -> &'static str {
    OPERATORS.iter().find(|o| o.0 == name).unwrap().1
}

fn sha256(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// Settings with the dashboard on a free loopback port, the three operators, and `extra`
/// variables (e.g. a kind's limits).
pub fn settings(db: &PgPool, extra: &[(&str, &str)]) -> Settings {
    let url = format!(
        "postgres://{}@{}:{}/{}",
        db.connect_options().get_username(),
        db.connect_options().get_host(),
        db.connect_options().get_port(),
        db.connect_options().get_database().unwrap_or("postgres"),
    );
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("DATABASE_URL".into(), url);
    env.insert("STUDIO_DASHBOARD__LISTEN".into(), "127.0.0.1:0".into());
    for (name, token, role) in OPERATORS {
        let up = name.to_uppercase();
        env.insert(
            format!("STUDIO_DASHBOARD__OPERATORS__{up}__SHA256"),
            sha256(token),
        );
        env.insert(
            format!("STUDIO_DASHBOARD__OPERATORS__{up}__ROLE"),
            role.into(),
        );
    }
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    Settings::load_from(None, env).expect("test settings load")
}

/// The dashboard under test.
pub struct TestDashboard {
    pub base: String,
    pub queue: Queue,
    pub db: PgPool,
    pub stop: CancellationToken,
    running: Option<RunningDashboard>,
}

impl Drop for TestDashboard {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestDashboard {
    pub async fn start(db: &PgPool) -> TestDashboard {
        TestDashboard::with(db, &[]).await
    }

    pub async fn with(db: &PgPool, extra: &[(&str, &str)]) -> TestDashboard {
        let settings = settings(db, extra);
        let pool = worker_pool(db).await;
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::watch::channel(0);
        let addr = settings.dashboard.listen().unwrap().unwrap();
        let state = DashState::new(pool.clone(), Arc::new(settings), rx, stop.clone());
        let running = serve(addr, state, tx).await.unwrap();
        TestDashboard {
            base: format!("http://127.0.0.1:{}", running.addr.port()),
            queue: Queue::new(pool),
            db: db.clone(),
            stop,
            running: Some(running),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client that follows no redirects and keeps no cookies (tests hand them over).
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap()
    }

    /// Sign in as `name`: the session's cookie header value and its CSRF token.
    pub async fn sign_in(&self, name: &str) -> Signed {
        let http = TestDashboard::client();
        let response = http
            .post(self.url("/login"))
            .form(&[("token", token(name)), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 303, "sign-in as {name}");
        let set = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        let page = http
            .get(self.url("/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = csrf_of(&page);
        Signed {
            http,
            base: self.base.clone(),
            cookie,
            csrf,
        }
    }

    pub async fn finished(mut self) {
        self.stop.cancel();
        if let Some(running) = self.running.take() {
            running.finished().await;
        }
    }
}

/// The CSRF token in a page's forms.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..at + 64].to_owned()
}

/// A signed-in operator's client.
pub struct Signed {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: String,
    pub csrf: String,
}

impl Signed {
    /// The same session, sent to another dashboard (another replica, or this one restarted).
    pub fn on(&self, other: &TestDashboard) -> Signed {
        Signed {
            http: TestDashboard::client(),
            base: other.base.clone(),
            cookie: self.cookie.clone(),
            csrf: self.csrf.clone(),
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// POST a form with this session's CSRF token.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.post_with(path, form, &self.csrf.clone()).await
    }

    /// POST a form with `csrf` as its token.
    pub async fn post_with(
        &self,
        path: &str,
        form: &[(&str, &str)],
        csrf: &str,
    ) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push(("csrf", csrf));
        self.http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(&fields)
            .send()
            .await
            .unwrap()
    }
}
