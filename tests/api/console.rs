//! The web console over HTTP: sessions, the Origin and CSRF checks, per-form idempotency, and
//! every page and form of the three roles.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp};

/// A browser without a browser: one session cookie, the site's Origin on every POST.
pub struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub html: String,
    pub set_cookie: Vec<String>,
}

impl Page {
    /// The value of the first hidden field `name`.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.html.find(&marker).unwrap_or_else(|| panic!("no {name} in {}", self.html))
            + marker.len();
        self.html[start..].split('"').next().unwrap().to_owned()
    }

    fn ok(self) -> Self {
        assert_eq!(self.status, StatusCode::OK, "{}", self.html);
        self
    }
}

/// A form body, `application/x-www-form-urlencoded`.
pub fn encode(form: &[(&str, &str)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in form {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let client =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { client, base: base.to_owned(), cookie: None }
    }

    async fn read(&mut self, response: reqwest::Response) -> Page {
        let status = response.status();
        let location = response.headers().get(LOCATION).map(|v| v.to_str().unwrap().to_owned());
        let set_cookie: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for cookie in &set_cookie {
            let pair = cookie.split(';').next().unwrap();
            if let Some(value) = pair.strip_prefix("infrahub_session=") {
                self.cookie = (!value.is_empty()).then(|| pair.to_owned());
            }
        }
        Page { status, location, html: response.text().await.unwrap(), set_cookie }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        let response = request.send().await.unwrap();
        self.read(response).await
    }

    /// A form POST from this site's pages.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_from(path, form, Some(&self.base.clone())).await
    }

    pub async fn post_from(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Page {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        self.read(response).await
    }

    pub async fn login(&mut self, username: &str, password: &str) -> Page {
        self.post("/login", &[("username", username), ("password", password)]).await
    }

    /// The CSRF token of the session, from a page's form.
    pub async fn csrf(&mut self, page: &str) -> String {
        self.get(page).await.ok().hidden("_csrf")
    }
}

#[sqlx::test]
async fn sessions_begin_at_login_and_end_at_logout_expiry_or_a_new_password(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut browser = Browser::new(&app.base);
    let start = browser.get("/").await;
    assert_eq!(start.status, StatusCode::SEE_OTHER);
    assert_eq!(start.location.as_deref(), Some("/login?next=%2F"));
    assert!(browser.get("/login").await.ok().html.contains("Log in to InfraHub"));

    let forged = browser
        .post_from(
            "/login",
            &[("username", "shop-lead"), ("password", PASSWORD)],
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let wrong = browser.login("shop-lead", "wrong-password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.html.contains("invalid username or password") && !wrong.html.contains("{\""),
        "{}",
        wrong.html
    );

    let ok = browser
        .post(
            "/login",
            &[("username", "shop-lead"), ("password", PASSWORD), ("next", "/projects/new")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location.as_deref(), Some("/projects/new"));
    let cookie = &ok.set_cookie[0];
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let stored: String =
        sqlx::query_scalar("SELECT encode(token_hash, 'hex') FROM console_sessions")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!cookie.contains(&stored), "the database keeps a hash, not the token");
    for away in [
        "//evil.example/",
        "/\t/evil.example",
        "/\\evil.example",
        "http://evil.example/",
        "/%0d%0aSet-Cookie:x",
    ] {
        let form = [("username", "shop-lead"), ("password", PASSWORD), ("next", away)];
        let answer = browser.post("/login", &form).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{away}");
        let location = answer.location.unwrap();
        assert!(
            location.starts_with('/') && !location.starts_with("//") && !location.contains("evil"),
            "{away} -> {location}"
        );
    }
    let form =
        [("username", "shop-lead"), ("password", PASSWORD), ("next", "/projects?status=active")];
    assert_eq!(
        browser.post("/login", &form).await.location.as_deref(),
        Some("/projects?status=active")
    );

    let page = browser.get("/projects").await.ok();
    assert!(page.html.contains("Projects of shop"), "{}", page.html);

    // Logout needs the form token; then the session is gone for good.
    let csrf = page.hidden("_csrf");
    assert_eq!(browser.post("/logout", &[]).await.status, StatusCode::FORBIDDEN);
    let old = browser.cookie.clone();
    let out = browser.post("/logout", &[("_csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.set_cookie[0].contains("Max-Age=0"));
    browser.cookie = old;
    assert_eq!(
        browser.get("/projects").await.status,
        StatusCode::SEE_OTHER,
        "a logged-out cookie opens nothing"
    );

    // Expiry and a new password end a session.
    let mut second = Browser::new(&app.base);
    second.login("shop-lead", PASSWORD).await;
    sqlx::query("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let expired = second.get("/projects").await;
    assert_eq!(expired.status, StatusCode::SEE_OTHER);
    assert!(expired.location.unwrap().starts_with("/login?next="));
    second.login("shop-lead", PASSWORD).await;
    assert_eq!(second.get("/projects").await.status, StatusCode::OK);
    sqlx::query("UPDATE users SET password_changed_at = now() WHERE username = 'shop-lead'")
        .execute(&app.pool)
        .await
        .unwrap();
    let ended = second.cookie.clone().unwrap();
    assert_eq!(second.get("/projects").await.status, StatusCode::SEE_OTHER);
    // An htmx poll of an ended session sends the page it came from to the login.
    let response = app
        .client
        .get(format!("{}/projects/00000000-0000-0000-0000-000000000000/card", app.base))
        .header(COOKIE, &ended)
        .header("hx-request", "true")
        .header("hx-current-url", format!("{}/projects", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["hx-redirect"], "/login?next=%2Fprojects");
    // A form sent after the session ended comes back to the form's page, not to its action.
    let late = second
        .client
        .post(format!("{}/quotas", app.base))
        .header(COOKIE, &ended)
        .header("origin", &app.base)
        .header("referer", format!("{}/capacity", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(late.headers()[LOCATION], "/login?next=%2Fcapacity");
    // Disabling the account ends its sessions too.
    let mut fourth = Browser::new(&app.base);
    fourth.login("retail-admin", PASSWORD).await;
    assert_eq!(fourth.get("/capacity").await.status, StatusCode::OK);
    sqlx::query("UPDATE users SET disabled = true WHERE username = 'retail-admin'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(fourth.get("/capacity").await.status, StatusCode::SEE_OTHER);

    // Behind a TLS proxy the cookie is Secure.
    let secure = browser
        .client
        .post(format!("{}/login", app.base))
        .header("origin", &app.base)
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("username", "shop-lead"), ("password", PASSWORD)]))
        .send()
        .await
        .unwrap();
    assert_eq!(secure.status(), StatusCode::SEE_OTHER);
    let cookie = secure.headers().get(SET_COOKIE).map(|v| v.to_str().unwrap().to_owned());
    assert!(cookie.as_deref().is_some_and(|c| c.contains("; Secure")), "{cookie:?}");
}

#[sqlx::test]
async fn forms_need_this_origin_and_the_sessions_token_and_act_once_per_key(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.give_quota(16, 64).await;
    let mut browser = Browser::new(&app.base);
    browser.login("shop-lead", PASSWORD).await;
    let form = browser.get("/projects/new").await.ok();
    assert!(form.html.contains("Costs") && form.html.contains("It fits."), "{}", form.html);
    let csrf = form.hidden("_csrf");
    let key = form.hidden("_key");
    let fields = |csrf: &'static str| {
        vec![
            ("name", "web"),
            ("site", "fra"),
            ("sla_type", "bronze"),
            ("performance_tier", "regular"),
            ("_csrf", csrf),
        ]
    };

    assert_eq!(browser.post("/projects", &fields("")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        browser.post("/projects", &fields("not-the-token")).await.status,
        StatusCode::FORBIDDEN
    );
    let csrf: &'static str = Box::leak(csrf.into_boxed_str());
    let key: &'static str = Box::leak(key.into_boxed_str());
    let mut with_key = fields(csrf);
    with_key.push(("_key", key));
    let elsewhere = browser.post_from("/projects", &with_key, Some("http://evil.example")).await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    let no_origin = browser.post_from("/projects", &with_key, None).await;
    assert_eq!(no_origin.status, StatusCode::FORBIDDEN);
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM projects")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 0, "refused forms changed nothing");

    // A double click: the same form twice acts once and answers the same.
    let first = browser.post("/projects", &with_key).await;
    let second = browser.post("/projects", &with_key).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.html);
    assert_eq!(first.location, second.location);
    assert_eq!(count().await, 1);

    // Errors come back on the form, in words.
    let mut bad = vec![
        ("name", "api"),
        ("site", "fra"),
        ("sla_type", "platinum"),
        ("performance_tier", "regular"),
        ("_csrf", csrf),
    ];
    let refused = browser.post("/projects", &bad).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.html.contains("sla_type: must be one of") && refused.html.contains("New project"),
        "{}",
        refused.html
    );
    bad[2] = ("sla_type", "gold");
    bad[3] = ("performance_tier", "high");
    let too_big = browser.post("/projects", &bad).await;
    assert_eq!(too_big.status, StatusCode::CONFLICT, "{}", too_big.html);
    assert!(too_big.html.contains("class=\"error\""), "{}", too_big.html);
    let preview = browser
        .get("/projects/new/preview?site=fra&sla_type=gold&performance_tier=high")
        .await
        .ok();
    assert!(preview.html.contains("It does not fit."), "{}", preview.html);
}

/// An address or a form the console cannot read (typed by hand, or crafted) gets a page that
/// says so, not a bare line of text.
#[sqlx::test]
async fn an_unreadable_address_or_form_gets_a_page_in_words(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut browser = Browser::new(&app.base);
    browser.login("shop-lead", PASSWORD).await;
    let twice = browser.get("/projects?cursor=a&cursor=b").await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST, "{}", twice.html);
    assert!(twice.html.contains("<h1>") && twice.html.contains("address is not valid"));
    assert!(twice.html.contains("duplicate field"), "{}", twice.html);
    let csrf = browser.csrf("/projects/new").await;
    let form = [("name", "web"), ("name", "api"), ("_csrf", &csrf)];
    let twice = browser.post("/projects", &form).await;
    assert_eq!(twice.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", twice.html);
    assert!(twice.html.contains("<h1>") && twice.html.contains("form could not be read"));
    assert!(twice.html.contains("duplicate field"), "{}", twice.html);
    // A path segment that does not decode names nothing.
    let mut admin = Browser::new(&app.base);
    admin.login("root", PASSWORD).await;
    let csrf = admin.csrf("/organisation").await;
    let nothing = admin.post("/organisation/%FF", &[("name", "x"), ("_csrf", &csrf)]).await;
    assert_eq!(nothing.status, StatusCode::NOT_FOUND, "{}", nothing.html);
    assert!(nothing.html.contains("<h1>"), "{}", nothing.html);
}

/// PostgreSQL's text cannot hold a NUL character: a form or a page address carrying one
/// (`%00`) is the sender's mistake, refused with a page that says so, never a server error.
#[sqlx::test]
async fn a_nul_character_in_a_form_or_an_address_is_refused_as_the_senders_mistake(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.give_quota(16, 64).await;
    let mut browser = Browser::new(&app.base);
    let login = browser.login("shop-lead\u{0}", PASSWORD).await;
    assert_eq!(login.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", login.html);
    assert!(login.html.contains("NUL character"), "{}", login.html);
    assert_eq!(browser.login("shop-lead", PASSWORD).await.status, StatusCode::SEE_OTHER);
    let csrf = browser.csrf("/projects/new").await;
    let mut form = vec![
        ("name", "web"),
        ("site", "fr\u{0}a"),
        ("sla_type", "bronze"),
        ("performance_tier", "regular"),
        ("_csrf", &csrf),
    ];
    let refused = browser.post("/projects", &form).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.html);
    assert!(refused.html.contains("NUL character"), "{}", refused.html);
    // A raw NUL, which a form's parser would let through, is refused too.
    let raw = format!("name=web&site=fr\0a&sla_type=bronze&performance_tier=regular&_csrf={csrf}");
    let response = browser
        .client
        .post(format!("{}/projects", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", &app.base)
        .header(COOKIE, browser.cookie.clone().unwrap())
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await.unwrap().contains("NUL character"));
    let preview = browser.get("/projects/new/preview?site=fr%00a&sla_type=bronze").await;
    assert_eq!(preview.status, StatusCode::BAD_REQUEST, "{}", preview.html);
    // A literal "%00" typed into a field is text like any other.
    form[1] = ("site", "%00");
    let unknown = browser.post("/projects", &form).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", unknown.html);
    assert!(unknown.html.contains("no site named"), "{}", unknown.html);
    let projects: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(&app.pool).await.unwrap();
    assert_eq!(projects, 0);
}

#[sqlx::test]
async fn a_team_lead_follows_a_project_from_request_to_deletion(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.give_quota(16, 64).await;
    let mut browser = Browser::new(&app.base);
    browser.login("shop-lead", PASSWORD).await;
    let empty = browser.get("/projects").await.ok();
    assert!(empty.html.contains("No projects yet"));
    let csrf = browser.csrf("/projects/new").await;
    let created = browser
        .post(
            "/projects",
            &[
                ("name", "web"),
                ("site", "fra"),
                ("sla_type", "bronze"),
                ("performance_tier", "regular"),
                ("_csrf", &csrf),
            ],
        )
        .await;
    let path = created.location.unwrap();
    let id = path.trim_start_matches("/projects/").to_owned();

    let busy = browser.get(&path).await.ok();
    assert!(
        busy.html.contains("badge provisioning") && busy.html.contains("hx-trigger=\"every 2s\""),
        "{}",
        busy.html
    );
    let card = browser.get(&format!("/projects/{id}/card")).await.ok();
    assert!(card.html.contains("badge provisioning") && card.html.contains("hx-get"));
    assert!(
        browser.get("/projects").await.ok().html.contains(&format!("/projects/{id}/card")),
        "transient cards follow their job"
    );
    app.run_jobs().await;
    let status = app
        .client
        .get(format!("{}/projects/{id}/status", app.base))
        .header(COOKIE, browser.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(status.headers()["hx-refresh"], "true", "the page reloads once the job is done");
    let done = browser.get(&path).await.ok();
    assert!(done.html.contains("badge active"), "{}", done.html);
    assert!(done.html.contains("ResourceQuota"), "the manifests are shown: {}", done.html);
    assert!(
        done.html.contains("provision_namespace") && done.html.contains("badge succeeded"),
        "the job timeline"
    );
    let card = browser.get(&format!("/projects/{id}/card")).await.ok();
    assert!(!card.html.contains("hx-get"), "a settled card stops asking");

    // Resize, then a delete that needs the name typed.
    let resized = browser
        .post(
            &format!("/projects/{id}/resize"),
            &[("sla_type", "silver"), ("performance_tier", "regular"), ("_csrf", &csrf)],
        )
        .await;
    assert_eq!(resized.status, StatusCode::SEE_OTHER, "{}", resized.html);
    app.run_jobs().await;
    assert!(browser.get(&path).await.ok().html.contains("silver / regular"));
    let mistyped = browser
        .post(&format!("/projects/{id}/delete"), &[("confirm", "wbe"), ("_csrf", &csrf)])
        .await;
    assert_eq!(mistyped.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(mistyped.html.contains("nothing was deleted"));
    let deleted = browser
        .post(&format!("/projects/{id}/delete"), &[("confirm", "web"), ("_csrf", &csrf)])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    app.run_jobs().await;
    assert!(browser.get(&path).await.ok().html.contains("badge deleted"));
    let retry = browser.post(&format!("/projects/{id}/retry"), &[("_csrf", &csrf)]).await;
    assert_eq!(retry.status, StatusCode::CONFLICT, "{}", retry.html);

    // Another department's project is a 404 page, not its data.
    let theirs: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO projects (id, name, namespace, department_id, site_id, status, sla_type, performance_tier, cpu, ram_gb, extra_quota)
         VALUES (gen_random_uuid(), 'books', 'ledger-books', $1, $2, 'active', 'bronze', 'regular', 1, 1, '{}') RETURNING id",
    )
    .bind(app.org.other_dept)
    .bind(app.org.site)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let hidden = browser.get(&format!("/projects/{theirs}")).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert!(
        hidden.html.contains("Not found") && !hidden.html.contains("ledger-books"),
        "{}",
        hidden.html
    );
    for action in ["resize", "retry", "delete"] {
        let form = [("sla_type", "silver"), ("confirm", "books"), ("_csrf", &csrf)];
        let refused = browser.post(&format!("/projects/{theirs}/{action}"), &form).await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND, "{action}");
        assert!(!refused.html.contains("ledger-books"), "{action}");
    }
    let card = browser.get(&format!("/projects/{theirs}/card")).await;
    assert_eq!(card.status.as_u16(), 286, "htmx stops polling what it may not see");
    let bad = browser.get("/projects/not-a-uuid").await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND);
    assert!(bad.html.contains("<h1>Not found</h1>"), "{}", bad.html);
    assert_eq!(browser.get("/projects?status=bogus&cursor=x").await.status, StatusCode::OK);
}

#[sqlx::test]
async fn a_field_admin_reads_capacity_and_sets_quotas(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    sqlx::query(
        "INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb, status, field_id)
         VALUES (gen_random_uuid(), 's-1', 's-1', $1, 32, 128, 'active', $2),
                (gen_random_uuid(), 's-2', 's-2', $1, 16, 64, 'missing', $2)",
    )
    .bind(app.org.site)
    .bind(app.org.field)
    .execute(&app.pool)
    .await
    .unwrap();
    let mut browser = Browser::new(&app.base);
    let landed = browser.login("retail-admin", PASSWORD).await;
    assert_eq!(
        browser.get(landed.location.as_deref().unwrap()).await.location.as_deref(),
        Some("/capacity")
    );
    let page = browser.get("/capacity").await.ok();
    assert!(page.html.contains("Capacity of field retail"), "{}", page.html);
    assert!(page.html.contains("capacity 32, allocated 0"), "{}", page.html);
    assert!(page.html.contains("1 servers missing"), "{}", page.html);
    let csrf = page.hidden("_csrf");
    let dept = app.org.dept.to_string();
    let field = app.org.field.to_string();
    let set = [
        ("field_id", field.as_str()),
        ("dept_id", &dept),
        ("site", "fra"),
        ("cpu_limit", "8"),
        ("ram_gb_limit", "32"),
        ("_csrf", &csrf),
    ];
    let queued = browser.post("/quotas", &set).await;
    assert_eq!(queued.status, StatusCode::SEE_OTHER, "{}", queued.html);
    let target = queued.location.unwrap();
    assert!(target.starts_with("/capacity?job="), "{target}");
    let waiting = browser.get(&target).await.ok();
    assert!(waiting.html.contains("Working: allocate_quota"), "{}", waiting.html);
    app.run_jobs().await;
    let applied = browser.get(&target).await.ok();
    assert!(applied.html.contains("Done: allocate_quota succeeded"), "{}", applied.html);
    assert!(applied.html.contains("capacity 32, allocated 8"), "the bar moved: {}", applied.html);

    // What losing s-1 (its only active server) would do: shop's whole quota unbacked.
    assert!(applied.html.contains("What if servers were lost?"), "{}", applied.html);
    let s1: uuid::Uuid = sqlx::query_scalar("SELECT id FROM servers WHERE name = 's-1'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let impact = browser.get(&format!("/capacity?field={field}&without={s1}")).await.ok();
    assert!(impact.html.contains("Without 1 server<"), "{}", impact.html);
    assert!(impact.html.contains("capacity 32 → 0 CPU"), "{}", impact.html);
    assert!(impact.html.contains("<td class=\"short\">8 CPU, 32 GB</td>"), "{}", impact.html);
    let junk = browser.get(&format!("/capacity?field={field}&without=s-1")).await;
    assert!(junk.html.contains("is not a server id"), "{}", junk.html);

    let too_much = [
        ("field_id", field.as_str()),
        ("dept_id", &dept),
        ("site", "fra"),
        ("cpu_limit", "999"),
        ("ram_gb_limit", "32"),
        ("_csrf", &csrf),
    ];
    let refused = browser.post("/quotas", &too_much).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.html.contains("free capacity"), "{}", refused.html);
    let other = app.org.other_field.to_string();
    let foreign = [
        ("field_id", other.as_str()),
        ("dept_id", &dept),
        ("site", "fra"),
        ("cpu_limit", "1"),
        ("ram_gb_limit", "1"),
        ("_csrf", &csrf),
    ];
    assert_eq!(browser.post("/quotas", &foreign).await.status, StatusCode::FORBIDDEN);
    let servers = browser.get("/servers").await.ok();
    assert!(
        servers.html.contains("s-1") && !servers.html.contains("Sync servers now"),
        "{}",
        servers.html
    );
    assert_eq!(browser.get("/organisation").await.status, StatusCode::FORBIDDEN);
}

#[sqlx::test]
async fn a_center_admin_runs_inventory_organisation_jobs_and_audit(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO servers (id, inventory_id, name, site_id, cpu_cores, ram_gb, status)
         SELECT gen_random_uuid(), 's-' || n, 's-' || n, $1, 16, 64, 'active' FROM generate_series(1, 3) n
         RETURNING id",
    )
    .bind(app.org.site)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut browser = Browser::new(&app.base);
    browser.login("root", PASSWORD).await;
    let inventory = browser.get("/servers?unassigned=true").await.ok();
    assert!(
        inventory.html.contains("No sync yet") && inventory.html.contains("s-3"),
        "{}",
        inventory.html
    );
    let csrf = inventory.hidden("_csrf");
    let synced = browser.post("/sync", &[("_csrf", &csrf)]).await;
    assert!(synced.location.unwrap().starts_with("/servers?job="));

    // Two servers at once to field retail.
    let field = app.org.field.to_string();
    let (a, b) = (ids[0].to_string(), ids[1].to_string());
    let form = [
        ("server", a.as_str()),
        ("server", &b),
        ("field_id", &field),
        ("action", "assign"),
        ("_csrf", &csrf),
    ];
    let assigned = browser.post("/servers/assign", &form).await.ok();
    assert!(assigned.html.contains("2 server(s) to assign"), "{}", assigned.html);
    app.run_jobs().await;
    let owned: i64 = sqlx::query_scalar("SELECT count(*) FROM servers WHERE field_id = $1")
        .bind(app.org.field)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(owned, 2);
    let page = browser
        .client
        .get(format!("{}/servers", app.base))
        .header(COOKIE, browser.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ] {
        assert_eq!(page.headers()[name], value, "{name}");
    }
    // A double click on a multi-server form: each server's change is queued once.
    let c = ids[2].to_string();
    let key = uuid::Uuid::new_v4().to_string();
    let twice = [
        ("server", c.as_str()),
        ("field_id", &field),
        ("action", "assign"),
        ("_csrf", &csrf),
        ("_key", &key),
    ];
    browser.post("/servers/assign", &twice).await.ok();
    browser.post("/servers/assign", &twice).await.ok();
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'allocate_servers' AND subject_id = $1",
    )
    .bind(&c)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(queued, 1);
    app.run_jobs().await;
    let none = browser
        .post("/servers/assign", &[("field_id", &field), ("action", "assign"), ("_csrf", &csrf)])
        .await;
    assert_eq!(none.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unassign = [("server", a.as_str()), ("action", "unassign"), ("_csrf", &csrf)];
    browser.post("/servers/assign", &unassign).await.ok();
    app.run_jobs().await;
    let filtered = browser.get(&format!("/servers?field={field}")).await.ok();
    assert!(filtered.html.contains("s-2") && !filtered.html.contains(">s-1<"), "{}", filtered.html);
    let capacity = browser.get(&format!("/capacity?field={field}")).await.ok();
    assert!(capacity.html.contains("capacity 32"), "{}", capacity.html);

    // Organisation: a site, then a refused duplicate shown on the page.
    let org = browser.get("/organisation").await.ok();
    assert!(org.html.contains("shop-lead") && org.html.contains("retail"));
    let added = browser
        .post(
            "/organisation/sites",
            &[("name", "muc"), ("display_name", "Munich"), ("_csrf", &csrf)],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.html);
    let again = browser.post("/organisation/sites", &[("name", "muc"), ("_csrf", &csrf)]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.html.contains("class=\"error\""));
    let user = [
        ("username", "new-lead"),
        ("password", "a-long-password"),
        ("role", "team_lead"),
        ("field_id", ""),
        ("department_id", &app.org.dept.to_string()),
        ("_csrf", &csrf),
    ];
    assert_eq!(browser.post("/organisation/users", &user).await.status, StatusCode::SEE_OTHER);
    let mut fresh = Browser::new(&app.base);
    assert_eq!(fresh.login("new-lead", "a-long-password").await.status, StatusCode::SEE_OTHER);
    let field_form = [("name", "logistics"), ("display_name", "Logistics"), ("_csrf", &csrf)];
    assert_eq!(
        browser.post("/organisation/fields", &field_form).await.status,
        StatusCode::SEE_OTHER
    );
    let logistics: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM fields WHERE name = 'logistics'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let dept_form = [("name", "trucks"), ("field_id", &logistics.to_string()), ("_csrf", &csrf)];
    assert_eq!(
        browser.post("/organisation/departments", &dept_form).await.status,
        StatusCode::SEE_OTHER
    );
    let org = browser.get("/organisation").await.ok();
    assert!(org.html.contains("trucks") && org.html.contains("in field logistics"), "{}", org.html);
    let nameless =
        browser.post("/organisation/departments", &[("name", "x"), ("_csrf", &csrf)]).await;
    assert_eq!(nameless.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        browser.post("/organisation/planets", &[("name", "x"), ("_csrf", &csrf)]).await.status,
        StatusCode::NOT_FOUND
    );

    // A queued job can be cancelled from the jobs page; its notice then settles.
    let sync = browser.post("/sync", &[("_csrf", &csrf)]).await.location.unwrap();
    let job = sync.trim_start_matches("/servers?job=").to_owned();
    let waiting = app
        .client
        .get(format!("{}/jobs/{job}/settled", app.base))
        .header(COOKIE, browser.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert!(waiting.headers().get("hx-refresh").is_none(), "still queued");
    assert!(browser.get("/jobs").await.ok().html.contains(&format!("/jobs/{job}/cancel")));
    let cancelled = browser.post(&format!("/jobs/{job}/cancel"), &[("_csrf", &csrf)]).await;
    assert_eq!(cancelled.location.as_deref(), Some("/jobs"));
    let settled = app
        .client
        .get(format!("{}/jobs/{job}/settled", app.base))
        .header(COOKIE, browser.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(settled.headers()["hx-refresh"], "true");
    assert!(browser.get(&sync).await.ok().html.contains("sync_servers cancelled"));
    assert_eq!(
        browser.post(&format!("/jobs/{job}/cancel"), &[("_csrf", &csrf)]).await.status,
        StatusCode::CONFLICT
    );
    // A failed sync is tried again from the jobs page; other kinds say how to redo them.
    sqlx::query("UPDATE jobs SET status = 'failed', last_error = 'inventory unreachable' WHERE id = $1::uuid")
        .bind(&job)
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(browser.get("/jobs").await.ok().html.contains(&format!("/jobs/{job}/retry")));
    let retried = browser.post(&format!("/jobs/{job}/retry"), &[("_csrf", &csrf)]).await;
    assert_eq!(retried.location.as_deref(), Some("/jobs"), "{}", retried.html);
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'sync_servers' AND status = 'queued'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(queued, 1, "a new sync");
    let allocation: String =
        sqlx::query_scalar("SELECT id::text FROM jobs WHERE kind = 'allocate_servers' LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let refused = browser.post(&format!("/jobs/{allocation}/retry"), &[("_csrf", &csrf)]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.html.contains("submit its change again"), "{}", refused.html);

    let jobs = browser.get("/jobs").await.ok();
    assert!(
        jobs.html.contains("allocate_servers") && jobs.html.contains("Failed and retrying"),
        "{}",
        jobs.html
    );
    let audit = browser.get("/audit?action=server.").await.ok();
    assert!(
        audit.html.contains("server.assign") && audit.html.contains("server.unassign"),
        "{}",
        audit.html
    );
    assert!(!audit.html.contains("site.create"));
    assert_eq!(browser.get("/audit?cursor=1").await.status, StatusCode::OK);

    // The other roles are refused the admin pages; the assets are served.
    let mut lead = Browser::new(&app.base);
    lead.login("shop-lead", PASSWORD).await;
    for page in ["/organisation", "/audit", "/servers", "/capacity"] {
        let answer = lead.get(page).await;
        assert!(
            matches!(answer.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
            "{page}: {}",
            answer.status
        );
        assert!(answer.html.contains("<h1>"), "{page}: a page, not JSON");
    }
    let js = app.client.get(format!("{}/assets/htmx.min.js", app.base)).send().await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(js.text().await.unwrap().contains("htmx"));
    let css = app
        .client
        .get(format!("{}/assets/console.css", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(css.contains(".bar"));
}
