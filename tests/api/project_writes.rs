//! New projects asked for together are written in one statement: each with its own job and
//! audit event, their reservations checked at the commit; a statement refused for one of them
//! writes none, and each is then written alone, so only what is wrong is refused.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use infrahub::app::projects::{CreateProject, ProjectSubmitted};
use infrahub::app::{self, AppError, Caller};
use infrahub::config::Mode;
use infrahub::domain::role::Role;
use infrahub::domain::scope::Scope;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, create_user};

/// The test organisation with a quota for department shop at site fra (silver/regular is
/// 4 CPU / 16 GB), delivering into a repository under `dir`.
async fn app_with_quota(pool: &PgPool, dir: &std::path::Path, cpu: i32) -> TestApp {
    let repo = dir.join("gitops");
    let app =
        TestApp::spawn_with(pool.clone(), Mode::Serve, move |c| c.delivery.git.path = repo).await;
    app.give_quota(cpu, 1000).await;
    app
}

fn silver(name: &str, site: &str) -> CreateProject {
    serde_json::from_value(json!({ "name": name, "site": site, "sla_type": "silver",
                                   "performance_tier": "regular" }))
    .unwrap()
}

/// Asks for every project of `asked` at once, as the team lead, each request with its own id:
/// the test's runtime has one thread, so every ask is handed over before any statement runs.
async fn create_together(
    app: &TestApp,
    asked: Vec<CreateProject>,
) -> Vec<Result<ProjectSubmitted, AppError>> {
    let callers = asked.iter().map(|_| Caller::new(&app.org.team_lead, None)).collect();
    create_together_as(app, callers, asked).await
}

/// [`create_together`], each project asked for by its own caller.
async fn create_together_as(
    app: &TestApp,
    callers: Vec<Caller>,
    asked: Vec<CreateProject>,
) -> Vec<Result<ProjectSubmitted, AppError>> {
    join_all(asked.into_iter().zip(callers).enumerate().map(|(n, (input, mut caller))| {
        caller.request_id = Some(format!("req-{n}"));
        async move { app::projects::create(&app.ctx, &caller, input).await }
    }))
    .await
}

/// How many statements wrote the projects `ids`: a statement's rows share its `now()`, the
/// time its transaction started.
async fn statements(pool: &PgPool, ids: &[Uuid]) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT created_at) FROM projects WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn ids(answers: &[Result<ProjectSubmitted, AppError>]) -> Vec<Uuid> {
    answers.iter().filter_map(|a| a.as_ref().ok()).map(|done| done.project.id).collect()
}

/// `recorded` says what `expected` says; timestamps may be written with more digits.
fn same_json(recorded: &Value, expected: &Value) {
    let (Some(recorded), Some(expected)) = (recorded.as_object(), expected.as_object()) else {
        panic!("not objects: {recorded} / {expected}");
    };
    let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(keys(recorded), keys(expected));
    let instant = |v: &Value| v.as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok());
    for (key, want) in expected {
        let got = &recorded[key];
        match (instant(got), instant(want)) {
            (Some(got), Some(want)) => assert_eq!(got, want, "{key}"),
            _ => assert_eq!(got, want, "{key}"),
        }
    }
}

#[sqlx::test]
async fn projects_asked_together_share_a_statement_and_keep_their_own_job_and_event(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_quota(&pool, dir.path(), 100).await;
    let names: Vec<String> = (0..8).map(|n| format!("app-{n}")).collect();
    let mut asked: Vec<CreateProject> = names.iter().map(|n| silver(n, "fra")).collect();
    asked[0].expires_at = Some(Utc::now() + chrono::Duration::days(30));
    let answers = create_together(&app, asked).await;
    let done: Vec<ProjectSubmitted> = answers.into_iter().map(|a| a.unwrap()).collect();
    let ids: Vec<Uuid> = done.iter().map(|d| d.project.id).collect();
    assert_eq!(statements(&pool, &ids).await, 1, "eight projects asked together, one statement");

    for (n, submitted) in done.iter().enumerate() {
        let project = &submitted.project;
        assert_eq!(project.name, names[n], "each request is answered with its own project");
        assert_eq!(project.namespace, format!("shop-{}", names[n]));
        assert_eq!(project.status.as_str(), "provisioning");
        assert_eq!((project.cpu, project.ram_gb, project.generation), (4, 16, 1));
        assert_eq!(project.expires_at.is_some(), n == 0, "its time to live kept");
        let job = &submitted.submitted.as_ref().expect("a job").job;
        assert_eq!(project.last_job_id, Some(job.id), "written as the project's latest job");
        assert_eq!(job.kind, "provision_namespace");
        assert_eq!(job.subject_id.as_deref(), Some(project.id.to_string().as_str()));
        assert_eq!(job.payload["project_id"], json!(project.id));
        assert_eq!(job.submitted_by, Some(app.org.team_lead.id));
        let scope: (Option<Uuid>, Option<Uuid>) =
            sqlx::query_as("SELECT scope_field_id, scope_department_id FROM jobs WHERE id = $1")
                .bind(job.id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(scope, (Some(app.org.field), Some(app.org.dept)), "the field's people see it");
        // Its audit event says what the API says of the project, by whom, in which request.
        let (actor, request_id, after, fields): (String, Option<String>, Value, Vec<Uuid>) =
            sqlx::query_as(
                "SELECT actor, request_id, after, field_ids FROM audit_events
                  WHERE action = 'project.create' AND subject_id = $1",
            )
            .bind(project.id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(actor, app.org.team_lead.username);
        assert_eq!(request_id, Some(format!("req-{n}")));
        assert_eq!(fields, vec![app.org.field]);
        same_json(&after, &serde_json::to_value(project).unwrap());
    }
    let reserved: i64 =
        sqlx::query_scalar("SELECT cpu FROM project_reservations").fetch_one(&pool).await.unwrap();
    assert_eq!(reserved, 32, "every project counted in the department's reservations");

    let lead = app.team_lead_token().await;
    for id in &ids {
        app.project_becomes(&lead, &id.to_string(), "active").await;
    }
}

#[sqlx::test]
async fn a_project_over_quota_among_others_is_refused_alone(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    // Two fit in 10 CPU; the statement of five is refused at its commit.
    let app = app_with_quota(&pool, dir.path(), 10).await;
    let before = alone_counted(&app).await;
    let asked = (0..5).map(|n| silver(&format!("app-{n}"), "fra")).collect();
    let answers = create_together(&app, asked).await;
    let refused: Vec<&AppError> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert_eq!(ids(&answers).len(), 2, "{refused:?}");
    assert_eq!(refused.len(), 3);
    for err in refused {
        assert_eq!(err.code, "over_quota", "{err:?}");
        assert_eq!(err.details["quota"]["cpu"], 10, "told the numbers: {err:?}");
    }
    let (projects, jobs, events, reserved): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM projects),
                (SELECT count(*) FROM jobs WHERE kind = 'provision_namespace'),
                (SELECT count(*) FROM audit_events WHERE action = 'project.create'),
                (SELECT cpu FROM project_reservations)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((projects, jobs, events, reserved), (2, 2, 2, 8), "nothing of the refused kept");
    let sent_alone = alone_counted(&app).await;
    assert!(
        sent_alone >= before + 5,
        "the five projects sent alone are counted: {before} before, {sent_alone} after"
    );
}

/// `infrahub_project_writes_total{outcome="alone"}` as `/metrics` says it (shared by the
/// tests running in this process: it only rises).
async fn alone_counted(app: &TestApp) -> u64 {
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let series = r#"infrahub_project_writes_total{outcome="alone"} "#;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[sqlx::test]
async fn a_name_taken_or_a_site_unknown_fails_only_its_own_request(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_quota(&pool, dir.path(), 100).await;
    let first = create_together(&app, vec![silver("taken", "fra")]).await;
    assert!(first[0].is_ok(), "{:?}", first[0].as_ref().err());

    // A site not found is told apart before the statement: the others share it.
    let asked = vec![silver("a", "fra"), silver("b", "nowhere"), silver("c", "fra")];
    let answers = create_together(&app, asked).await;
    let unknown = answers[1].as_ref().expect_err("no such site");
    assert_eq!(unknown.code, "invalid_value", "{unknown:?}");
    assert_eq!(unknown.details["field"], "site", "{unknown:?}");
    assert_eq!(statements(&pool, &ids(&answers)).await, 1, "a and c in one statement");

    // A site name PostgreSQL refuses to read (the API refuses it first) fails only its own.
    let asked = vec![silver("f", "fra"), silver("g", "fr\0a")];
    let answers = create_together(&app, asked).await;
    assert!(answers[0].is_ok(), "{:?}", answers[0].as_ref().err());
    let refused = answers[1].as_ref().expect_err("nothing to write it at");
    assert_eq!(refused.code, "invalid_value", "the sender's mistake, not ours: {refused:?}");

    // A name taken is found by the statement, which writes none: each is then written alone.
    let asked = vec![silver("d", "fra"), silver("taken", "fra"), silver("e", "fra")];
    let answers = create_together(&app, asked).await;
    let taken = answers[1].as_ref().expect_err("the name is taken");
    assert_eq!(taken.code, "already_exists", "{taken:?}");
    let written = ids(&answers);
    assert_eq!(written.len(), 2);
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM projects WHERE id = ANY($1) ORDER BY name")
            .bind(&written)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(names, ["d", "e"]);
    let (projects, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM projects),
                (SELECT count(*) FROM audit_events WHERE action = 'project.create')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((projects, events), (6, 6), "taken, a, c, f, d, e: once each");
}

/// Projects of two fields' departments at two sites in one statement: each request gets its
/// own project, in its own department and field, counted against its own quota.
#[sqlx::test]
async fn projects_of_several_departments_and_sites_together_each_keep_their_own(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_quota(&pool, dir.path(), 100).await;
    let ber = app.add_site("ber").await;
    let other_lead = create_user(
        &pool,
        "ledger-lead",
        Role::TeamLead,
        Scope::Department(app.org.other_dept),
        false,
    )
    .await;
    for (dept, site) in
        [(app.org.dept, ber), (app.org.other_dept, app.org.site), (app.org.other_dept, ber)]
    {
        sqlx::query(
            "INSERT INTO department_quotas (department_id, site_id, cpu_limit, ram_gb_limit)
             VALUES ($1, $2, 100, 1000)",
        )
        .bind(dept)
        .bind(site)
        .execute(&pool)
        .await
        .unwrap();
    }
    let shop = || Caller::new(&app.org.team_lead, None);
    let ledger = || Caller::new(&other_lead, None);
    let asked = [
        (ledger(), "l-ber", "ber"),
        (shop(), "s-fra", "fra"),
        (ledger(), "l-fra", "fra"),
        (shop(), "s-ber", "ber"),
        (shop(), "s-ber-2", "ber"),
    ];
    let names: Vec<&str> = asked.iter().map(|(_, name, _)| *name).collect();
    let (callers, inputs) =
        asked.into_iter().map(|(caller, name, site)| (caller, silver(name, site))).unzip();
    let answers = create_together_as(&app, callers, inputs).await;
    let done: Vec<ProjectSubmitted> = answers.into_iter().map(|a| a.unwrap()).collect();
    let ids: Vec<Uuid> = done.iter().map(|d| d.project.id).collect();
    assert_eq!(statements(&pool, &ids).await, 1);
    for (submitted, name) in done.iter().zip(&names) {
        let project = &submitted.project;
        assert_eq!(project.name, *name);
        let (dept, field, prefix) = if name.starts_with('l') {
            (app.org.other_dept, app.org.other_field, "ledger")
        } else {
            (app.org.dept, app.org.field, "shop")
        };
        assert_eq!((project.department_id, project.field_id), (dept, field), "{name}");
        assert_eq!(project.site, if name.contains("ber") { "ber" } else { "fra" }, "{name}");
        assert_eq!(project.namespace, format!("{prefix}-{name}"));
        let job = &submitted.submitted.as_ref().unwrap().job;
        let (scope, event_fields): (Option<Uuid>, Vec<Uuid>) = sqlx::query_as(
            "SELECT (SELECT scope_field_id FROM jobs WHERE id = $1),
                    (SELECT field_ids FROM audit_events WHERE subject_id = $2::text)",
        )
        .bind(job.id)
        .bind(project.id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((scope, event_fields), (Some(field), vec![field]), "{name}");
    }
    let reserved: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
        "SELECT department_id, site_id, cpu FROM project_reservations
          ORDER BY department_id = $1 DESC, site_id = $2 DESC",
    )
    .bind(app.org.dept)
    .bind(app.org.site)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        reserved,
        [
            (app.org.dept, app.org.site, 4),
            (app.org.dept, ber, 8),
            (app.org.other_dept, app.org.site, 4),
            (app.org.other_dept, ber, 4),
        ]
    );
}

/// Projects asked together that take their department past 90 % of its quota: the statement
/// is refused to warn, they are written alone, and the webhooks are told once.
#[sqlx::test]
async fn a_department_passing_90_percent_together_is_told_once(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_quota(&pool, dir.path(), 12).await;
    let admin = app.admin_token().await;
    let hook = json!({ "name": "near", "url": "http://127.0.0.1:9/hook",
                       "events": ["quota.above_90"] });
    app.post("/api/v1/admin/webhooks", &admin, hook)
        .await
        .expect(reqwest::StatusCode::CREATED, None);
    // 4 + 4 + 4 of 12 CPU: the third passes 90 %.
    let asked = (0..3).map(|n| silver(&format!("app-{n}"), "fra")).collect();
    let answers = create_together(&app, asked).await;
    assert_eq!(
        ids(&answers).len(),
        3,
        "{:?}",
        answers.iter().filter_map(|a| a.as_ref().err()).collect::<Vec<_>>()
    );
    let told: Vec<Value> =
        sqlx::query_scalar("SELECT payload FROM jobs WHERE kind = 'deliver_webhook'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["notification"]["event"], "quota.above_90", "{told:?}");
    assert_eq!(told[0]["notification"]["data"]["used"]["cpu"], 12, "{told:?}");
}
