//! Projects delivered straight to Kubernetes: server-side apply through kube's client against
//! an API-server double, read back, deleted, and repaired by resync.

use infrahub::config::{DeliveryKind, Mode};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::TestApp;
use crate::kube_fake::FakeKube;

async fn app(pool: &PgPool, kube: &FakeKube, dir: &std::path::Path) -> TestApp {
    let kubeconfig = kube.kubeconfig(dir, "fra-admin");
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.kind = DeliveryKind::Kubernetes;
        c.kubernetes.kubeconfig = Some(kubeconfig);
        c.kubernetes.contexts.insert("fra".to_owned(), "fra-admin".to_owned());
        c.kubernetes.poll_interval_ms = 50;
    })
    .await;
    app.give_quota(40, 160).await;
    app
}

const QUOTA: &str = "/api/v1/namespaces/shop-web/resourcequotas/infrahub-quota";

#[sqlx::test]
async fn projects_are_server_side_applied_read_back_and_deleted(pool: PgPool) {
    infrahub::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let kube = FakeKube::start().await;
    let app = app(&pool, &kube, dir.path()).await;
    let lead = app.team_lead_token().await;
    let id = app.create_project(&lead, "web", "silver", "regular").await;
    app.project_becomes(&lead, &id, "active").await;

    let seen = kube.seen();
    let applies: Vec<_> = seen.iter().filter(|s| s.method == "PATCH").collect();
    let paths: Vec<&str> = applies.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/shop-web",
            QUOTA,
            "/api/v1/namespaces/shop-web/limitranges/infrahub-defaults",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/shop-web/rolebindings/infrahub-edit",
        ]
    );
    for apply in &applies {
        assert!(
            apply.query.contains("fieldManager=infrahub") && apply.query.contains("force=true"),
            "{}",
            apply.query
        );
        assert_eq!(apply.content_type, "application/apply-patch+yaml");
    }
    assert_eq!(applies[1].body["spec"]["hard"]["requests.cpu"], "4");
    assert_eq!(applies[0].body["metadata"]["labels"]["infrahub.io/department"], "shop");
    assert!(seen.iter().filter(|s| s.method == "GET").count() >= 4, "every object is read back");

    app.call(Method::DELETE, &format!("/api/v1/projects/{id}"), Some(&lead), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    let deleted = app.project_becomes(&lead, &id, "deleted").await;
    assert!(deleted["deleted_at"].is_string());
    assert!(kube.object("/api/v1/namespaces/shop-web").is_none() && kube.object(QUOTA).is_none());
    assert!(
        kube.seen().iter().any(|s| s.method == "DELETE" && s.path == "/api/v1/namespaces/shop-web")
    );
    let used =
        app.get(&format!("/api/v1/departments/{}/quota", app.org.dept), &lead).await.body["sites"]
            [0]["used"]["cpu"]
            .clone();
    assert_eq!(used, 0, "the quota is free once the namespace is gone");
}

#[sqlx::test]
async fn resync_re_applies_objects_changed_in_the_cluster(pool: PgPool) {
    infrahub::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let kube = FakeKube::start().await;
    let app = app(&pool, &kube, dir.path()).await;
    let lead = app.team_lead_token().await;
    let id = app.create_project(&lead, "web", "silver", "regular").await;
    app.project_becomes(&lead, &id, "active").await;
    kube.set(|c| c.objects.get_mut(QUOTA).unwrap()["spec"]["hard"]["requests.cpu"] = json!("64"));

    let report = crate::projects::resync(&app).await;
    assert_eq!(report["drifted"], 1, "{report}");
    assert!(
        report["drift"][0].as_str().unwrap().contains("ResourceQuota infrahub-quota differs"),
        "{report}"
    );
    app.project_becomes(&lead, &id, "active").await;
    assert!(
        kube.object(QUOTA).is_some_and(|q| q["spec"]["hard"]["requests.cpu"] == "4"),
        "the quota is re-applied"
    );
}

#[sqlx::test]
async fn a_site_without_a_context_fails_the_project_with_the_reason(pool: PgPool) {
    infrahub::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let kube = FakeKube::start().await;
    let kubeconfig = kube.kubeconfig(dir.path(), "elsewhere");
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.kind = DeliveryKind::Kubernetes;
        c.kubernetes.kubeconfig = Some(kubeconfig);
        c.kubernetes.contexts.insert("berlin".to_owned(), "elsewhere".to_owned());
    })
    .await;
    app.give_quota(40, 160).await;
    let lead = app.team_lead_token().await;
    let id = app.create_project(&lead, "web", "bronze", "regular").await;
    let failed = app.project_becomes(&lead, &id, "failed").await;
    assert!(
        failed["failure_reason"].as_str().unwrap().contains("no kubeconfig context for site fra"),
        "{failed}"
    );
    assert!(kube.seen().is_empty());
}

/// A delivery of an older generation that runs after a deletion applies nothing (no orphan
/// namespace whose quota InfraHub thinks free), and a namespace that never finishes
/// terminating fails the deletion after `kubernetes.delete_deadline_secs`.
#[sqlx::test]
async fn a_stale_delivery_never_undoes_a_deletion_and_a_stuck_one_fails(pool: PgPool) {
    infrahub::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let kube = FakeKube::start().await;
    let app = app(&pool, &kube, dir.path()).await;
    let lead = app.team_lead_token().await;
    let id = app.create_project(&lead, "web", "silver", "regular").await;
    app.project_becomes(&lead, &id, "active").await;

    // Finalizers that never let go.
    kube.set(|c| {
        c.terminating.insert("shop-web".to_owned(), u32::MAX);
    });
    let deleting = app
        .call(Method::DELETE, &format!("/api/v1/projects/{id}"), Some(&lead), None)
        .await
        .expect(StatusCode::ACCEPTED, None);
    let deletion: uuid::Uuid = deleting["job_id"].as_str().unwrap().parse().unwrap();
    app.run_due_jobs().await;
    let patches = || kube.seen().iter().filter(|s| s.method == "PATCH").count();
    let applied = patches();

    // A delivery of generation 1, still on its way when the deletion came.
    let stale = json!({ "project_id": id, "requested_by": "shop-lead", "generation": 1 });
    let new = infrahub::store::jobs::NewJob::new("provision_namespace", stale, "test", 3);
    let mut conn = pool.acquire().await.unwrap();
    let stale_job = infrahub::store::jobs::enqueue(&mut conn, &new).await.unwrap().into_job();
    drop(conn);
    app.run_due_jobs().await;
    let done = crate::jobs::job(&pool, stale_job.id).await;
    assert!(done.result.unwrap()["skipped"].is_string(), "the stale delivery stood down");
    assert_eq!(patches(), applied, "nothing was applied after the deletion");
    let project = app.get(&format!("/api/v1/projects/{id}"), &lead).await.body;
    assert_eq!(project["status"], "deleting");

    // Half an hour later the namespace is still terminating.
    sqlx::query("UPDATE jobs SET created_at = now() - interval '2 hours' WHERE id = $1")
        .bind(deletion)
        .execute(&pool)
        .await
        .unwrap();
    let failed = app.project_becomes(&lead, &id, "failed").await;
    let reason = failed["failure_reason"].as_str().unwrap();
    assert!(reason.contains("shop-web is still terminating"), "{reason}");
    let quota = app.get(&format!("/api/v1/departments/{}/quota", app.org.dept), &lead).await;
    assert_eq!(quota.body["sites"][0]["used"]["cpu"], 4, "a failed project still holds its quota");
}
