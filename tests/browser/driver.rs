//! A headless Chromium session for one test: `chromedriver` on a free loopback port, a private
//! profile directory, screenshots under `target/browser/`, and everything stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Debian's paths; `CHROMIUM_BIN` / `CHROMEDRIVER_BIN` point elsewhere.
fn program(variable: &str, debian: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| debian.to_owned())
}

/// How long a condition in the page may take (jobs, sockets, image loads) before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// One browser: a WebDriver client and the chromedriver process behind it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: tempfile::TempDir,
    name: String,
    shots: usize,
}

/// Start a browser for test `name`, or `None` (with a message) when chromium is not installed on
/// a developer machine. In CI (`CI=true`) a missing browser fails the test.
pub async fn browser(name: &str) -> Option<Browser> {
    let chromium = program("CHROMIUM_BIN", "/usr/bin/chromium");
    let chromedriver = program("CHROMEDRIVER_BIN", "/usr/bin/chromedriver");
    let missing: Vec<&str> = [chromium.as_str(), chromedriver.as_str()]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        let message = format!(
            "browser test {name} needs {} (apt-get install chromium chromium-driver)",
            missing.join(" and ")
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}: CI must run the browser tests");
        }
        eprintln!("SKIPPED: {message}");
        return None;
    }
    let port = free_port();
    let mut driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    wait_for_driver(&url, &mut driver).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1000,1500",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("a WebDriver session");
    Some(Browser {
        client,
        driver,
        profile,
        name: name.to_owned(),
        shots: 0,
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Poll chromedriver's `/status` until it answers (it starts in well under a second).
async fn wait_for_driver(url: &str, driver: &mut Child) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{url}/status")).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Ok(Some(status)) = driver.try_wait() {
            panic!("chromedriver exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not answer on {url}");
}

/// Where screenshots go: `target/browser/` (or `$CARGO_TARGET_DIR/browser/`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("browser")
}

impl Browser {
    /// Save a PNG of the current window as `target/browser/{test}-{n}-{label}.png`.
    pub async fn screenshot(&mut self, label: &str) -> PathBuf {
        self.shots += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{}-{}-{label}.png", self.name, self.shots));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Run `script` (a function body with `arguments`) and return its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("script runs")
    }

    /// The text of the element with this id.
    pub async fn text(&self, id: &str) -> String {
        self.client
            .find(Locator::Id(id))
            .await
            .expect("element")
            .text()
            .await
            .expect("text")
    }

    /// Wait until `condition` (a JavaScript expression) is true in the page; on timeout, save a
    /// screenshot and fail with what the page says.
    pub async fn wait_until(&mut self, condition: &str, what: &str) {
        let script = format!("return !!({condition});");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if self.js(&script).await == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shot = self.screenshot("timeout").await;
        let said = self.text("message").await;
        panic!(
            "waited for {what}; the page says {said:?} (see {})",
            shot.display()
        );
    }

    /// End the session (chromium quits) and chromedriver.
    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A test that failed half-way never ended its session: stop the chromium processes that
        // use this test's own profile directory (found by their command line), by their id.
        kill_processes_mentioning(&self.profile.path().display().to_string());
    }
}

fn kill_processes_mentioning(needle: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}
