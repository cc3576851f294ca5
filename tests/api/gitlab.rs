//! Projects delivered through GitLab's commits API.

use infrahub::config::{GitKind, Mode, Secret};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::gitlab_fake::FakeGitlab;
use crate::helpers::TestApp;

const TOKEN: &str = "glpat-infrahub-test-token";

async fn app(pool: &PgPool, gitlab: &FakeGitlab, token: &str) -> TestApp {
    let (base, token) = (gitlab.base.clone(), token.to_owned());
    let app = TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| {
        c.delivery.git.kind = GitKind::Gitlab;
        c.delivery.gitlab.url = base;
        c.delivery.gitlab.project = "platform/gitops".to_owned();
        c.delivery.gitlab.token = Some(Secret::new(token));
    })
    .await;
    app.give_quota(40, 160).await;
    app
}

#[sqlx::test]
async fn projects_are_committed_updated_and_deleted_through_gitlab(pool: PgPool) {
    let gitlab = FakeGitlab::start(TOKEN).await;
    let app = app(&pool, &gitlab, TOKEN).await;
    let lead = app.team_lead_token().await;
    let body = json!({ "name": "web", "site": "fra", "sla_type": "silver", "performance_tier": "regular" });
    let id =
        app.post("/api/v1/projects", &lead, body).await.expect(StatusCode::ACCEPTED, None)["id"]
            .as_str()
            .unwrap()
            .to_owned();
    app.project_becomes(&lead, &id, "active").await;
    let commits = gitlab.commits();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0]["branch"], "main");
    assert_eq!(commits[0]["author_name"], "InfraHub");
    assert!(commits[0]["commit_message"].as_str().unwrap().contains("project web"));
    assert_eq!(commits[0]["actions"][0]["action"], "create");
    assert_eq!(commits[0]["actions"][0]["file_path"], "fra/shop-web.yaml");
    assert!(gitlab.file("fra/shop-web.yaml").unwrap().contains("requests.cpu: \"4\""));

    // Same sizing: nothing to commit. A new tier: an update on top of the file's last commit.
    let path = format!("/api/v1/projects/{id}");
    app.call(Method::PATCH, &path, Some(&lead), Some(json!({ "sla_type": "silver" })))
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.project_becomes(&lead, &id, "active").await;
    assert_eq!(gitlab.commits().len(), 1);
    app.call(Method::PATCH, &path, Some(&lead), Some(json!({ "performance_tier": "high" })))
        .await
        .expect(StatusCode::ACCEPTED, None);
    app.project_becomes(&lead, &id, "active").await;
    assert_eq!(gitlab.commits().len(), 2, "one update commit");
    let update = &gitlab.commits()[1]["actions"][0];
    assert_eq!(
        (update["action"].as_str(), update["last_commit_id"].as_str()),
        (Some("update"), Some(&*format!("{:040x}", 1)))
    );
    assert!(gitlab.file("fra/shop-web.yaml").unwrap().contains("requests.cpu: \"8\""));

    // Resync reads through GitLab too.
    let report = crate::projects::resync(&app).await;
    assert_eq!((report["in_sync"].as_u64(), report["drifted"].as_u64()), (Some(1), Some(0)));

    app.call(Method::DELETE, &path, Some(&lead), None).await.expect(StatusCode::ACCEPTED, None);
    app.project_becomes(&lead, &id, "deleted").await;
    assert_eq!(gitlab.commits()[2]["actions"][0]["action"], "delete");
    assert!(gitlab.file("fra/shop-web.yaml").is_none());
}

#[sqlx::test]
async fn a_refused_gitlab_token_fails_the_project(pool: PgPool) {
    let gitlab = FakeGitlab::start(TOKEN).await;
    let app = app(&pool, &gitlab, "glpat-wrong").await;
    let lead = app.team_lead_token().await;
    let body = json!({ "name": "web", "site": "fra", "sla_type": "bronze", "performance_tier": "regular" });
    let id =
        app.post("/api/v1/projects", &lead, body).await.expect(StatusCode::ACCEPTED, None)["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let failed = app.project_becomes(&lead, &id, "failed").await;
    assert!(
        failed["failure_reason"].as_str().unwrap().contains("GitLab refused the token"),
        "{failed}"
    );
    assert!(gitlab.commits().is_empty());
}
