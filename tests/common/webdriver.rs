//! A chromedriver session on Debian's headless chromium, through the WebDriver HTTP API: just
//! what the browser tests need (navigate, run a script, window size, screenshot). The process
//! is killed on drop; each driver has its own throwaway profile.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use super::wait_for;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser is installed; prints why a test is skipped when it is not.
pub fn browser_installed(test: &str) -> bool {
    let there =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !there {
        eprintln!(
            "SKIPPED {test}: {CHROMIUM} or {CHROMEDRIVER} is not installed (apt-get install -y chromium chromium-driver)"
        );
    }
    there
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A chromedriver process with one session.
pub struct Driver {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    session: Option<String>,
    _profile: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Driver {
    pub async fn start() -> Driver {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile =
            TempDir(std::env::temp_dir().join(format!("studio-chromium-{}", uuid::Uuid::new_v4())));
        std::fs::create_dir_all(&profile.0).unwrap();
        let mut driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            session: None,
            _profile: profile,
        };
        let (base, http) = (driver.base.clone(), driver.http.clone());
        wait_for("chromedriver to answer", Duration::from_secs(20), || {
            let (base, http) = (base.clone(), http.clone());
            async move {
                http.get(format!("{base}/status"))
                    .send()
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", driver._profile.0.display())])
        .collect::<Vec<_>>();
        let session: Value = driver
            .http
            .post(format!("{}/session", driver.base))
            .json(&json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            } } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        driver.session = Some(
            session["value"]["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
                .to_owned(),
        );
        driver
    }

    fn session_url(&self, path: &str) -> String {
        format!(
            "{}/session/{}{path}",
            self.base,
            self.session.as_deref().unwrap()
        )
    }

    pub async fn navigate(&self, url: &str) {
        self.http
            .post(self.session_url("/url"))
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
    }

    /// Run `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        let answer: Value = self
            .http
            .post(self.session_url("/execute/sync"))
            .json(&json!({ "script": script, "args": [] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"].clone()
    }

    /// Wait until `script` returns something truthy; returns it.
    #[track_caller]
    pub fn until<'a>(
        &'a self,
        what: &'a str,
        script: &'a str,
    ) -> impl std::future::Future<Output = Value> + 'a {
        wait_for(what, Duration::from_secs(20), move || async move {
            let v = self.eval(script).await;
            let truthy = !(v.is_null()
                || v == Value::Bool(false)
                || v.as_str() == Some("")
                || v.get("error").is_some());
            truthy.then_some(v)
        })
    }

    pub async fn window_size(&self, width: u32, height: u32) {
        self.http
            .post(self.session_url("/window/rect"))
            .json(&json!({ "width": width, "height": height }))
            .send()
            .await
            .unwrap();
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let answer: Value = self
            .http
            .get(self.session_url("/screenshot"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(answer["value"].as_str().unwrap())
            .unwrap()
    }

    pub async fn quit(mut self) {
        let _ = self.http.delete(self.session_url("")).send().await;
        self.session = None;
    }
}
