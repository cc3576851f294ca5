//! Login, tokens and the throttle.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use infrahub::config::DatabaseConfig;
use infrahub::config::Mode;
use infrahub::domain::role::Role;
use infrahub::domain::scope::Scope;
use infrahub::store::gather;
use infrahub::store::users::AccountReads;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TEST_SECRET, TestApp, create_user};

/// Valid claims for `app`'s team lead, to be signed (or mangled) by each test.
fn claims(app: &TestApp, iat: i64, exp: i64) -> Value {
    json!({
        "iss": "infrahub", "sub": app.org.team_lead.id, "iat": iat, "exp": exp,
        "username": "shop-lead", "role": "team_lead", "field_id": null,
        "department_id": app.org.dept, "pwd_at": 0,
    })
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn sign(claims: &Value, alg: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .unwrap()
}

async fn me_status(app: &TestApp, token: &str) -> (StatusCode, Value) {
    let answer = app.get("/api/v1/me", token).await;
    (answer.status, answer.body)
}

#[sqlx::test]
async fn login_returns_a_bearer_token_that_me_accepts(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = app.login_answer("shop-lead", PASSWORD).await.expect(StatusCode::OK, None);
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    let me = app.get("/api/v1/me", token).await.expect(StatusCode::OK, None);
    assert_eq!(me["username"], "shop-lead");
    assert_eq!(me["role"], "team_lead");
    assert_eq!(me["department"]["name"], "shop");
    assert_eq!(me["field"]["name"], "retail", "a team lead's field follows from its department");

    let me =
        app.get("/api/v1/me", &app.field_admin_token().await).await.expect(StatusCode::OK, None);
    assert_eq!(
        (me["role"].as_str(), me["field"]["name"].as_str()),
        (Some("field_admin"), Some("retail"))
    );
    assert!(me["department"].is_null());

    let me = app.get("/api/v1/me", &app.admin_token().await).await.expect(StatusCode::OK, None);
    assert_eq!(me["role"], "center_admin");
    assert!(me["field"].is_null() && me["department"].is_null());
}

#[sqlx::test]
async fn usernames_are_case_insensitive(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.login("SHOP-Lead", PASSWORD).await;
}

#[sqlx::test]
async fn unknown_user_and_wrong_password_get_the_same_answer(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let wrong = app.login_answer("shop-lead", "wrong-password").await;
    let unknown = app.login_answer("nobody", "wrong-password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body["error"]["code"], "invalid_credentials");
}

#[sqlx::test]
async fn unknown_user_costs_a_password_verification_too(pool: PgPool) {
    // Not a speed test: without the dummy verification an unknown user is answered about ten
    // times faster than a wrong password, which tells an attacker which accounts exist.
    let app = TestApp::spawn_with(pool, Mode::Serve, |c| c.auth.login_max_failures = 1000).await;
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..7 {
        let started = Instant::now();
        app.login_answer("shop-lead", "wrong-password").await;
        wrong.push(started.elapsed());
        let started = Instant::now();
        app.login_answer(&format!("nobody-{i}"), "wrong-password").await;
        unknown.push(started.elapsed());
    }
    let (wrong, unknown) = (median(&mut wrong), median(&mut unknown));
    assert!(unknown * 2 >= wrong, "unknown user {unknown:?} vs wrong password {wrong:?}");
}

#[sqlx::test]
async fn disabled_and_demo_accounts_cannot_log_in_to_serve(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    create_user(&pool, "demo-admin", Role::CenterAdmin, Scope::Center, true).await;
    app.login_answer("demo-admin", PASSWORD)
        .await
        .expect(StatusCode::UNAUTHORIZED, Some("invalid_credentials"));
    sqlx::query("UPDATE users SET disabled = true WHERE username = 'shop-lead'")
        .execute(&pool)
        .await
        .unwrap();
    app.login_answer("shop-lead", PASSWORD)
        .await
        .expect(StatusCode::UNAUTHORIZED, Some("invalid_credentials"));
}

#[sqlx::test]
async fn demo_accounts_log_in_to_the_demo(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), Mode::Demo, |_| {}).await;
    create_user(&pool, "demo-admin", Role::CenterAdmin, Scope::Center, true).await;
    app.login("demo-admin", PASSWORD).await;
}

#[sqlx::test]
async fn malformed_login_bodies_are_rejected_with_the_envelope(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let missing =
        app.call(Method::POST, "/api/v1/auth/login", None, Some(json!({ "username": "x" }))).await;
    missing.expect(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body"));
    let answer = app.call_raw(Method::POST, "/api/v1/auth/login", "", None, b"{not json").await;
    answer.expect(StatusCode::BAD_REQUEST, Some("malformed_json"));
}

#[sqlx::test]
async fn missing_and_malformed_authorization_headers_are_401(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.call(Method::GET, "/api/v1/me", None, None)
        .await
        .expect(StatusCode::UNAUTHORIZED, Some("unauthorized"));
    let basic = app
        .client
        .get(format!("{}/api/v1/me", app.base))
        .header("authorization", "Basic cm9vdDpwdw==")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = me_status(&app, "not-a-jwt").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn forged_expired_and_foreign_tokens_are_401(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let now = chrono::Utc::now().timestamp();
    let mut good = claims(&app, now, now + 600);
    let pwd_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT password_changed_at FROM users WHERE username = 'shop-lead'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    good["pwd_at"] = json!(pwd_at.timestamp_micros());
    let (status, _) = me_status(&app, &sign(&good, Algorithm::HS256, TEST_SECRET)).await;
    assert_eq!(status, StatusCode::OK, "the hand-made control token is accepted");

    let another_secret = sign(&good, Algorithm::HS256, "another-secret-of-sufficient-length-000");
    let hs512 = sign(&good, Algorithm::HS512, TEST_SECRET);
    let mut expired = good.clone();
    expired["iat"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    let mut issuer = good.clone();
    issuer["iss"] = json!("someone-else");
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(good.to_string());
    let alg_none = format!("{header}.{payload}.");
    let valid = sign(&good, Algorithm::HS256, TEST_SECRET);
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let mut promoted = good.clone();
    promoted["role"] = json!("center_admin");
    parts[1] = URL_SAFE_NO_PAD.encode(promoted.to_string());
    let tampered = parts.join(".");

    let cases = [
        ("signed with another secret", another_secret),
        ("HS512 instead of the pinned HS256", hs512),
        ("expired", sign(&expired, Algorithm::HS256, TEST_SECRET)),
        ("wrong issuer", sign(&issuer, Algorithm::HS256, TEST_SECRET)),
        ("no exp claim", sign(&no_exp, Algorithm::HS256, TEST_SECRET)),
        ("alg none", alg_none),
        ("tampered payload", tampered),
    ];
    for (what, token) in cases {
        let (status, body) = me_status(&app, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
    }
}

#[sqlx::test]
async fn password_change_and_deletion_revoke_tokens(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let lead = app.team_lead_token().await;
    let path = format!("/api/v1/admin/users/{}", app.org.team_lead.id);
    let patch = json!({ "password": "a-brand-new-password" });
    app.call(Method::PATCH, &path, Some(&admin), Some(patch)).await.expect(StatusCode::OK, None);
    assert_eq!(me_status(&app, &lead).await.0, StatusCode::UNAUTHORIZED);
    let fresh = app.login("shop-lead", "a-brand-new-password").await;
    assert_eq!(me_status(&app, &fresh).await.0, StatusCode::OK);
    app.call(Method::DELETE, &path, Some(&admin), None).await.expect(StatusCode::NO_CONTENT, None);
    assert_eq!(me_status(&app, &fresh).await.0, StatusCode::UNAUTHORIZED);
}

/// A token of an account disabled after it was issued is refused at the next request.
#[sqlx::test]
async fn disabling_an_account_ends_its_tokens_at_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let lead = app.team_lead_token().await;
    assert_eq!(me_status(&app, &lead).await.0, StatusCode::OK);
    let admin = app.admin_token().await;
    let path = format!("/api/v1/admin/users/{}", app.org.team_lead.id);
    let disable = json!({ "disabled": true });
    app.call(Method::PATCH, &path, Some(&admin), Some(disable)).await.expect(StatusCode::OK, None);
    assert_eq!(me_status(&app, &lead).await.0, StatusCode::UNAUTHORIZED);
}

/// The accounts behind concurrent requests are read together (`AccountReads`): each request
/// still gets its own account, and a token whose account is gone is refused among them.
#[sqlx::test]
async fn concurrent_requests_each_get_their_own_account(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.admin_token().await;
    let gone = create_user(&app.pool, "gone-admin", Role::CenterAdmin, Scope::Center, false).await;
    let gone_token = app.login("gone-admin", PASSWORD).await;
    let path = format!("/api/v1/admin/users/{}", gone.id);
    app.call(Method::DELETE, &path, Some(&admin), None).await.expect(StatusCode::NO_CONTENT, None);
    let callers = [
        (admin, Some(app.org.admin.username.clone())),
        (app.field_admin_token().await, Some(app.org.field_admin.username.clone())),
        (app.team_lead_token().await, Some(app.org.team_lead.username.clone())),
        (gone_token, None),
    ];
    let asks = (0..40).map(|n| &callers[n % callers.len()]);
    let app = &app;
    let answers = futures::future::join_all(asks.map(|(token, expected)| async move {
        let (status, body) = me_status(app, token).await;
        (status, body["username"].as_str().map(str::to_owned), expected)
    }))
    .await;
    for (status, username, expected) in answers {
        match expected {
            Some(expected) => {
                assert_eq!((status, username.as_ref()), (StatusCode::OK, Some(expected)))
            }
            None => assert_eq!(status, StatusCode::UNAUTHORIZED),
        }
    }
}

/// Reads asked together share a statement; each gets its own account, an unknown id none.
#[sqlx::test]
async fn account_reads_asked_together_answer_each_id(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let reads = AccountReads::new(gather::pool(
        &app.pool,
        &DatabaseConfig::default(),
        AccountReads::CONNECTIONS,
    ));
    let unknown = uuid::Uuid::now_v7();
    let org = &app.org;
    let ids = [org.admin.id, unknown, org.team_lead.id, org.admin.id, org.field_admin.id];
    let found = futures::future::join_all(ids.iter().map(|id| reads.find(*id))).await;
    let names: Vec<Option<String>> =
        found.into_iter().map(|read| read.unwrap().map(|account| account.user.username)).collect();
    let name = |user: &infrahub::store::users::User| Some(user.username.clone());
    assert_eq!(
        names,
        [name(&org.admin), None, name(&org.team_lead), name(&org.admin), name(&org.field_admin)]
    );
}

#[sqlx::test]
async fn repeated_failures_lock_the_username_for_a_while(pool: PgPool) {
    let app = TestApp::spawn_with(pool, Mode::Serve, |c| {
        c.auth.login_max_failures = 3;
        c.auth.login_lockout_secs = 120;
    })
    .await;
    for _ in 0..3 {
        app.login_answer("shop-lead", "nope-nope").await.expect(StatusCode::UNAUTHORIZED, None);
    }
    let locked = app.login_answer("shop-lead", PASSWORD).await;
    let retry_after: u64 = locked.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=120).contains(&retry_after), "{retry_after}");
    locked.expect(StatusCode::TOO_MANY_REQUESTS, Some("too_many_requests"));
    let other = app.login_answer("SHOP-LEAD", PASSWORD).await;
    assert_eq!(other.status, StatusCode::TOO_MANY_REQUESTS, "the lock ignores case");
    app.login("retail-admin", PASSWORD).await;

    // Unknown usernames are throttled alike, so the lock does not reveal which names exist.
    for _ in 0..3 {
        app.login_answer("ghost", "nope-nope").await.expect(StatusCode::UNAUTHORIZED, None);
    }
    app.login_answer("ghost", "nope-nope").await.expect(StatusCode::TOO_MANY_REQUESTS, None);

    // After the lockout the count starts afresh.
    sqlx::query("UPDATE login_throttle SET locked_until = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    app.login("shop-lead", PASSWORD).await;
}

#[sqlx::test]
async fn parallel_guesses_get_no_more_tries_than_the_limit(pool: PgPool) {
    let app = TestApp::spawn_with(pool, Mode::Serve, |c| c.auth.login_max_failures = 5).await;
    let guesses = (0..20).map(|_| app.login_answer("shop-lead", "nope-nope"));
    let answers = futures::future::join_all(guesses).await;
    let tried = answers.iter().filter(|a| a.status != StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(tried, 5, "only five of twenty parallel attempts had their password checked");
    let locked: bool = sqlx::query_scalar(
        "SELECT locked_until > now() FROM login_throttle WHERE username_key = 'shop-lead'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(locked, "the sixth attempt locked the name");
}

#[sqlx::test]
async fn a_success_resets_the_failure_count(pool: PgPool) {
    let app = TestApp::spawn_with(pool, Mode::Serve, |c| c.auth.login_max_failures = 3).await;
    for _ in 0..2 {
        app.login_answer("shop-lead", "nope-nope").await.expect(StatusCode::UNAUTHORIZED, None);
    }
    app.login("shop-lead", PASSWORD).await;
    for _ in 0..2 {
        app.login_answer("shop-lead", "nope-nope").await.expect(StatusCode::UNAUTHORIZED, None);
    }
    app.login("shop-lead", PASSWORD).await;
}
