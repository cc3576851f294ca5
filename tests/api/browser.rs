//! The console in a real browser: Debian's headless chromium driven through chromedriver
//! (WebDriver, fantoccini) against the real daemon with its job workers. Each role logs in
//! and does its main task, and a field admin approves a project past the approval threshold;
//! the screenshots land in docs/screenshots/ (shown in the README).
//! `.ci/run` installs chromium and chromium-driver when they are missing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use infrahub::config::{InventorySource, Mode};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, and a headless chromium session through it.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does it)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let status = format!("http://127.0.0.1:{port}/status");
        crate::helpers::wait_until("chromedriver answers", Duration::from_secs(20), || async {
            reqwest::get(&status).await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session");
        Self { client, _driver: driver, _profile: profile }
    }

    async fn login(&self, base: &str, username: &str, password: &str) {
        self.client.goto(&format!("{base}/login")).await.unwrap();
        self.type_into("username", username).await;
        self.type_into("password", password).await;
        self.click(Locator::Css("button[type=submit]")).await;
        self.client.wait().for_element(Locator::Css("header.top nav")).await.expect("logged in");
    }

    /// Waits (up to 30 s) for an element matching an XPath.
    /// On a timeout, the page's text and a screenshot (target/browser-failure.png) say why.
    async fn wait_for(&self, xpath: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::XPath(xpath))
            .await
        {
            Ok(element) => element,
            Err(err) => {
                if let Ok(png) = self.client.screenshot().await {
                    let _ = std::fs::write(
                        concat!(env!("CARGO_MANIFEST_DIR"), "/target/browser-failure.png"),
                        png,
                    );
                }
                let text = match self.client.find(Locator::Css("main")).await {
                    Ok(main) => main.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let url =
                    self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
                panic!("{xpath}: {err}\nat {url}:\n{text}");
            }
        }
    }

    async fn click(&self, locator: Locator<'_>) {
        self.client.find(locator).await.unwrap().click().await.unwrap();
    }

    async fn type_into(&self, id: &str, text: &str) {
        self.client.find(Locator::Id(id)).await.unwrap().send_keys(text).await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(self) {
        self.client.close().await.unwrap();
    }
}

/// The full daemon (workers included), with a file inventory of six servers at site fra.
async fn daemon(pool: PgPool, dir: &tempfile::TempDir) -> TestApp {
    let path = dir.path().join("inventory.json");
    let servers: Vec<_> = (1..=6)
        .map(|n| json!({ "id": format!("fra-{n:02}"), "name": format!("fra-cmp-{n:02}"), "site": "fra", "cpu_cores": 32, "ram_gb": 256 }))
        .collect();
    std::fs::write(&path, serde_json::to_string(&servers).unwrap()).unwrap();
    infrahub::install_crypto_provider();
    TestApp::spawn_daemon(pool, Mode::Serve, |config| {
        config.inventory.source = InventorySource::File;
        config.inventory.file.path = path;
        // No cron tick may sync or reconcile in the middle of what the test watches.
        config.schedule.server_sync = String::new();
        config.schedule.resync = String::new();
        config.schedule.reconcile = String::new();
        // Gold (16 CPU in its default tier, high) waits for a field admin's approval; silver
        // (8) does not.
        config.approval.cpu_above = Some(8);
    })
    .await
}

#[sqlx::test]
async fn each_role_does_its_main_task_in_a_real_browser(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(pool, &dir).await;
    let base = app.base.clone();

    // Center admin: sync the inventory, assign two servers to field retail.
    let browser = Browser::start(1280, 900).await;
    browser.login(&base, "root", PASSWORD).await;
    browser.click(Locator::XPath("//button[text()='Sync servers now']")).await;
    browser
        .wait_for("//div[contains(@class,'notice') and contains(., 'sync_servers succeeded')]")
        .await;
    browser.client.goto(&format!("{base}/servers")).await.unwrap();
    browser.wait_for("//p[contains(., 'Last sync') and contains(., '6 added')]").await;
    for name in ["fra-cmp-01", "fra-cmp-02"] {
        let pick = format!("//input[@aria-label='pick {name}']");
        browser.wait_for(&pick).await.click().await.unwrap();
    }
    browser.click(Locator::XPath("//button[@value='assign']")).await;
    browser
        .wait_for("//div[contains(@class,'notice') and contains(., '2 server(s) to assign')]")
        .await;
    crate::helpers::wait_until("both servers assigned", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM servers WHERE field_id IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap()
            == 2
    })
    .await;
    browser.client.goto(&format!("{base}/servers")).await.unwrap();
    browser.wait_for("//tr[td[text()='fra-cmp-01'] and td[text()='retail']]").await;
    browser.screenshot("center-admin-inventory").await;
    browser.client.goto(&format!("{base}/jobs")).await.unwrap();
    browser.wait_for("//h1[text()='Jobs']").await;
    browser.screenshot("center-admin-jobs").await;
    browser.close().await;

    // Field admin: give department shop a quota at fra and watch the bar move.
    let browser = Browser::start(1280, 900).await;
    browser.login(&base, "retail-admin", PASSWORD).await;
    browser.wait_for("//span[contains(., 'CPU: capacity 64, allocated 0')]").await;
    browser.type_into("cpu_limit", "24").await;
    browser.type_into("ram_gb_limit", "96").await;
    browser.click(Locator::XPath("//button[text()='Set quota']")).await;
    browser
        .wait_for("//div[contains(@class,'notice') and contains(., 'allocate_quota succeeded')]")
        .await;
    browser.wait_for("//span[contains(., 'CPU: capacity 64, allocated 24')]").await;
    browser.screenshot("field-admin-capacity").await;
    // What if both servers were lost: the whole quota of shop would be unbacked.
    for option in browser.client.find_all(Locator::Css("#without option")).await.unwrap() {
        option.click().await.unwrap();
    }
    browser.click(Locator::XPath("//button[text()='Show the impact']")).await;
    browser.wait_for("//td[@class='short' and contains(., '24 CPU, 96 GB')]").await;
    browser.screenshot("field-admin-impact").await;
    browser.close().await;

    // Team lead: ask for a project, see what it costs, watch it turn active.
    let browser = Browser::start(1280, 900).await;
    browser.login(&base, "shop-lead", PASSWORD).await;
    browser.wait_for("//h1[text()='Projects of shop']").await;
    browser.click(Locator::LinkText("New project")).await;
    browser.wait_for("//h1[text()='New project']").await;
    browser.type_into("name", "web").await;
    browser.click(Locator::Css("#sla_type option[value='silver']")).await;
    browser.wait_for("//div[@id='preview']//span[text()='It fits.']").await;
    browser.screenshot("team-lead-new-project").await;
    browser.click(Locator::XPath("//button[text()='Create project']")).await;
    browser
        .wait_for("//h1[contains(., 'web')]//span[contains(@class,'badge') and text()='active']")
        .await;
    browser.wait_for("//pre/code[contains(., 'ResourceQuota')]").await;
    browser.screenshot("team-lead-project").await;
    browser.client.goto(&format!("{base}/projects")).await.unwrap();
    browser.wait_for("//article//span[contains(@class,'badge') and text()='active']").await;
    browser.screenshot("team-lead-projects").await;

    // A request past the approval threshold waits for the field admin.
    browser.click(Locator::LinkText("New project")).await;
    browser.wait_for("//h1[text()='New project']").await;
    browser.type_into("name", "db").await;
    browser.click(Locator::Css("#sla_type option[value='gold']")).await;
    browser.wait_for("//div[@id='preview']//*[contains(., 'approval')]").await;
    browser.click(Locator::XPath("//button[text()='Create project']")).await;
    browser
        .wait_for(
            "//h1[contains(., 'db')]//span[contains(@class,'badge') and text()='pending_approval']",
        )
        .await;
    browser.close().await;

    // Field admin: approve it; it is provisioned.
    let browser = Browser::start(1280, 900).await;
    browser.login(&base, "retail-admin", PASSWORD).await;
    browser.client.goto(&format!("{base}/approvals")).await.unwrap();
    browser.wait_for("//h2[a[text()='db']]").await;
    browser.screenshot("field-admin-approvals").await;
    browser.click(Locator::XPath("//button[text()='Approve db']")).await;
    crate::helpers::wait_until("project db active", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM projects WHERE name = 'db'")
            .fetch_one(&app.pool)
            .await
            .unwrap()
            == "active"
    })
    .await;
    browser.wait_for("//p[text()='Nothing waits for a decision.']").await;
    browser.close().await;

    // The same dashboard on a phone.
    let phone = Browser::start(390, 844).await;
    phone.login(&base, "shop-lead", PASSWORD).await;
    phone.wait_for("//article").await;
    let overflow: serde_json::Value = phone
        .client
        .execute("return document.documentElement.scrollWidth > window.innerWidth + 1;", vec![])
        .await
        .unwrap();
    assert_eq!(overflow, json!(false), "nothing wider than the phone's screen");
    phone.screenshot("team-lead-projects-phone").await;
    phone.close().await;
}
