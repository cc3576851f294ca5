//! Projects with Argo CD watching the site: active only once Argo CD reports the namespace and
//! its quota Synced and Healthy; failed with Argo CD's message past the deadline; deleted once
//! pruned.

use std::path::Path;

use infrahub::config::{Mode, Secret};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::argocd_fake::{FakeArgocd, application, head_of, resource};
use crate::helpers::TestApp;

const TOKEN: &str = "argocd-api-token-for-infrahub";
const APP: &str = "infra-fra";
const NS: &str = "shop-web";

fn synced() -> Value {
    application(
        APP,
        "Synced",
        "Healthy",
        Some(("Succeeded", "successfully synced")),
        vec![
            resource("Namespace", NS, "", "Synced", Some("Healthy")),
            resource("ResourceQuota", "infrahub-quota", NS, "Synced", None),
        ],
    )
}

async fn start(
    pool: &PgPool,
    repo: &Path,
    fake: &FakeArgocd,
    tweak: impl FnOnce(&mut infrahub::config::ArgocdConfig),
) -> TestApp {
    let tracked = repo.to_owned();
    let repo = repo.to_owned();
    let base = fake.base.clone();
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.path = repo;
        c.argocd.url = base;
        c.argocd.token = Some(Secret::new(TOKEN));
        c.argocd.apps.insert("fra".to_owned(), APP.to_owned());
        c.argocd.poll_interval_ms = 50;
        tweak(&mut c.argocd);
    })
    .await;
    app.give_quota(40, 160).await;
    fake.set(|s| s.tracks = Some(tracked));
    app
}

async fn create_web(app: &TestApp, token: &str) -> String {
    app.create_project(token, "web", "silver", "regular").await
}

/// An active project `web` under a manual-sync Application that has not picked up the next
/// commit: it stays Synced and Healthy, but at the current revision. Returns the project's id.
async fn active_under_a_manual_sync(
    app: &TestApp,
    lead: &str,
    fake: &FakeArgocd,
    repo: &Path,
) -> String {
    let id = create_web(app, lead).await;
    app.project_becomes(lead, &id, "active").await;
    let mut old = synced();
    old["status"]["sync"]["revision"] = json!(head_of(repo));
    fake.set(|s| {
        s.tracks = None;
        s.states = vec![old].into();
    });
    id
}

#[sqlx::test]
async fn progressing_then_synced_makes_the_project_active(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let states = vec![
        application(
            APP,
            "OutOfSync",
            "Missing",
            Some(("Running", "waiting for healthy state")),
            vec![resource("Namespace", NS, "", "OutOfSync", Some("Missing"))],
        ),
        application(
            APP,
            "OutOfSync",
            "Progressing",
            None,
            vec![
                resource("Namespace", NS, "", "OutOfSync", Some("Missing")),
                resource("ResourceQuota", "infrahub-quota", NS, "OutOfSync", None),
            ],
        ),
        application(
            APP,
            "Synced",
            "Progressing",
            None,
            vec![
                resource("Namespace", NS, "", "Synced", Some("Progressing")),
                resource("ResourceQuota", "infrahub-quota", NS, "Synced", None),
            ],
        ),
        synced(),
    ];
    let fake = FakeArgocd::start(APP, TOKEN, states).await;
    fake.set(|s| s.sync_conflicts = true);
    let app = start(&pool, &dir.path().join("gitops"), &fake, |a| a.hard_refresh = true).await;
    let lead = app.team_lead_token().await;
    let id = create_web(&app, &lead).await;
    let active = app.project_becomes(&lead, &id, "active").await;
    assert!(active["failure_reason"].is_null());
    let reads = fake.reads();
    assert!(reads.len() >= 4, "{reads:?}");
    assert!(reads.iter().all(|r| r == "/api/v1/applications/infra-fra?refresh=hard"), "{reads:?}");
    let syncs = fake.syncs();
    assert!(!syncs.is_empty(), "no auto-sync and OutOfSync: a sync was asked for");
    assert_eq!(syncs[0], json!({ "name": APP, "prune": true }));
    let poll: (i32, String) =
        sqlx::query_as("SELECT attempts, status FROM jobs WHERE kind = 'poll_argocd'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        poll,
        (1, "succeeded".to_owned()),
        "polls and a sync already in progress spend no attempts"
    );
}

#[sqlx::test]
async fn a_project_still_degraded_at_the_deadline_fails_with_argocds_message(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mut degraded = application(
        APP,
        "Synced",
        "Degraded",
        Some(("Failed", "one or more objects failed to apply: quota exceeds limits")),
        vec![
            resource("Namespace", NS, "", "Synced", Some("Healthy")),
            resource("ResourceQuota", "infrahub-quota", NS, "OutOfSync", Some("Degraded")),
        ],
    );
    degraded["spec"]["syncPolicy"] = json!({ "automated": { "prune": true, "selfHeal": true } });
    let fake = FakeArgocd::start(APP, TOKEN, vec![degraded]).await;
    let app = start(&pool, &dir.path().join("gitops"), &fake, |a| a.deadline_secs = 60).await;
    let lead = app.team_lead_token().await;
    let id = create_web(&app, &lead).await;
    app.run_due_jobs().await;
    let waiting = app.get(&format!("/api/v1/projects/{id}"), &lead).await.body;
    assert_eq!(waiting["status"], "provisioning", "within the deadline the poll waits");
    // As if the deadline had passed: delivery finished two minutes ago.
    sqlx::query(
        "UPDATE jobs SET payload = jsonb_set(payload, '{since}', to_jsonb(now() - interval '2 minutes'))
          WHERE kind = 'poll_argocd'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let failed = app.project_becomes(&lead, &id, "failed").await;
    let reason = failed["failure_reason"].as_str().unwrap();
    assert!(reason.contains("quota exceeds limits") && reason.contains(APP), "{reason}");
    assert!(fake.syncs().is_empty(), "an automated application is not asked to sync");
}

#[sqlx::test]
async fn a_refused_token_fails_the_project(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeArgocd::start(APP, "some-other-token", vec![synced()]).await;
    let app = start(&pool, &dir.path().join("gitops"), &fake, |_| {}).await;
    let lead = app.team_lead_token().await;
    let id = create_web(&app, &lead).await;
    let failed = app.project_becomes(&lead, &id, "failed").await;
    assert!(failed["failure_reason"].as_str().unwrap().contains("refused the token"), "{failed}");
    assert_eq!(fake.reads().len(), 1, "a 401 is not retried");
}

#[sqlx::test]
async fn deletion_frees_the_quota_once_argocd_pruned_the_namespace(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeArgocd::start(APP, TOKEN, vec![synced()]).await;
    let app = start(&pool, &dir.path().join("gitops"), &fake, |_| {}).await;
    let lead = app.team_lead_token().await;
    let id = create_web(&app, &lead).await;
    app.project_becomes(&lead, &id, "active").await;
    let reads_before = fake.reads().len();
    app.call(Method::DELETE, &format!("/api/v1/projects/{id}"), Some(&lead), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    // Argo CD still lists the namespace: the poll has seen it twice, and the project waits.
    app.run_job_rounds(3).await;
    assert!(fake.reads().len() >= reads_before + 2, "{:?}", fake.reads());
    let quota = format!("/api/v1/departments/{}/quota", app.org.dept);
    assert_eq!(app.get(&format!("/api/v1/projects/{id}"), &lead).await.body["status"], "deleting");
    let still = app.get(&quota, &lead).await.body;
    assert_eq!(
        still["sites"][0]["used"]["cpu"], 4,
        "the quota stays reserved until the namespace is gone"
    );
    fake.set(|s| s.states = vec![application(APP, "Synced", "Healthy", None, vec![])].into());
    let deleted = app.project_becomes(&lead, &id, "deleted").await;
    assert!(deleted["deleted_at"].is_string());
    assert_eq!(app.get(&quota, &lead).await.body["sites"][0]["used"]["cpu"], 0);
}

#[sqlx::test]
async fn resync_repairs_a_namespace_argocd_reports_out_of_sync(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeArgocd::start(APP, TOKEN, vec![synced()]).await;
    let app = start(&pool, &dir.path().join("gitops"), &fake, |_| {}).await;
    let lead = app.team_lead_token().await;
    let id = create_web(&app, &lead).await;
    app.project_becomes(&lead, &id, "active").await;
    // Someone deleted the namespace by hand: Argo CD reports it missing until it is synced again.
    let drifted = application(
        APP,
        "OutOfSync",
        "Missing",
        None,
        vec![
            resource("Namespace", NS, "", "OutOfSync", Some("Missing")),
            resource("ResourceQuota", "infrahub-quota", NS, "OutOfSync", None),
        ],
    );
    fake.set(|s| s.states = vec![drifted.clone(), drifted, synced()].into());
    let report = crate::projects::resync(&app).await;
    assert_eq!(report["drifted"], 1, "{report}");
    assert!(report["drift"][0].as_str().unwrap().contains("OutOfSync"), "{report}");
    let active = app.project_becomes(&lead, &id, "active").await;
    assert!(active["failure_reason"].is_null());
    assert!(!fake.syncs().is_empty(), "the repair asked Argo CD to sync");
}

#[sqlx::test]
async fn a_resize_is_active_only_once_argocd_synced_its_own_commit(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let fake = FakeArgocd::start(APP, TOKEN, vec![synced()]).await;
    let app = start(&pool, &repo, &fake, |_| {}).await;
    let lead = app.team_lead_token().await;
    let id = active_under_a_manual_sync(&app, &lead, &fake, &repo).await;
    let reads_before = fake.reads().len();
    let syncs_before = fake.syncs().len();
    app.call(
        Method::PATCH,
        &format!("/api/v1/projects/{id}"),
        Some(&lead),
        Some(json!({ "performance_tier": "high" })),
    )
    .await
    .expect(StatusCode::ACCEPTED, None);
    app.run_job_rounds(4).await;
    let waiting = app.get(&format!("/api/v1/projects/{id}"), &lead).await.body;
    assert_eq!(waiting["status"], "provisioning", "the old revision's state does not count");
    let reads = fake.reads();
    assert!(reads[reads_before].ends_with("refresh=hard"), "right after the commit: {reads:?}");
    assert!(fake.syncs().len() > syncs_before, "the manual-sync Application was asked to sync");

    // Argo CD synced the commit: now the project is active, at its new size.
    fake.set(|s| s.tracks = Some(repo.clone()));
    let active = app.project_becomes(&lead, &id, "active").await;
    assert_eq!(active["cpu"], 8);
}

/// A delivery retried after its first attempt committed (the daemon was killed before the job
/// could say so) finds the file unchanged: it must still wait for Argo CD to sync that commit,
/// not take the old Synced and Healthy state for the new one.
#[sqlx::test]
async fn a_retried_delivery_still_waits_for_its_first_attempts_commit(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let fake = FakeArgocd::start(APP, TOKEN, vec![synced()]).await;
    let app = start(&pool, &repo, &fake, |_| {}).await;
    let lead = app.team_lead_token().await;
    let id = active_under_a_manual_sync(&app, &lead, &fake, &repo).await;
    let resized = app
        .call(
            Method::PATCH,
            &format!("/api/v1/projects/{id}"),
            Some(&lead),
            Some(json!({ "performance_tier": "high" })),
        )
        .await
        .expect(StatusCode::ACCEPTED, None);
    let first: uuid::Uuid = resized["job_id"].as_str().unwrap().parse().unwrap();
    app.run_due_jobs().await;

    // As if the first attempt died right after its commit: no poll job, the same delivery again.
    let payload: Value = sqlx::query_scalar("SELECT payload FROM jobs WHERE id = $1")
        .bind(first)
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM jobs WHERE kind = 'poll_argocd'").execute(&pool).await.unwrap();
    let new = infrahub::store::jobs::NewJob::new("provision_namespace", payload, "test", 3);
    let mut conn = pool.acquire().await.unwrap();
    let again = infrahub::store::jobs::enqueue(&mut conn, &new).await.unwrap().into_job();
    sqlx::query("UPDATE projects SET last_job_id = $2 WHERE id = $1::uuid")
        .bind(&id)
        .bind(again.id)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    app.run_job_rounds(4).await;
    let retried = crate::jobs::job(&pool, again.id).await;
    assert_eq!(retried.result.as_ref().unwrap()["commit"], json!(head_of(&repo)), "{retried:?}");
    let waiting = app.get(&format!("/api/v1/projects/{id}"), &lead).await.body;
    assert_eq!(waiting["status"], "provisioning", "the old revision's state does not count");

    fake.set(|s| s.tracks = Some(repo.clone()));
    let active = app.project_becomes(&lead, &id, "active").await;
    assert_eq!(active["cpu"], 8);
}
