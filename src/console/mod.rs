//! The web console at `/`: server-rendered HTML (maud) with htmx, both embedded in the binary.
//! An adapter like the JSON API: every page and form calls the use cases of [`crate::app`]
//! and holds no rule of its own.
//!
//! - Sessions: `POST /login` opens one (the API's credential check, throttle and audit
//!   included); the cookie `infrahub_session` is HttpOnly, SameSite=Strict, Secure behind TLS
//!   (`X-Forwarded-Proto: https`), and lives as long as an API token. It ends at `POST
//!   /logout`, at expiry, or when the account is disabled or changes password.
//! - Every `POST` must come from this origin (`Origin`, else `Referer`) and, once logged in,
//!   carry the session's `_csrf` field: otherwise 403. A form's `_key` field (fresh per
//!   rendering) is its Idempotency-Key: a double click or a resubmitted form acts once.
//! - A NUL character, which PostgreSQL's text cannot hold, is refused in any page's query
//!   (400) and in any form (422); a query or a form that does not parse gets an error page
//!   ([`Query`], [`Form`]), never axum's bare text.

// Handlers answer a page or the response that replaces it (an error page, a redirect), as
// axum handlers do; boxing every such response buys nothing.
#![allow(clippy::result_large_err)]

mod approvals;
mod center;
mod field;
mod layout;
mod lead;
mod webhooks;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::de::DeserializeOwned;

use crate::app::console::Session;
use crate::app::{self, AppError, ErrorKind};
use crate::context::Context;
use crate::domain::role::Role;
use crate::http::extract::encodes_nul;

const COOKIE: &str = "infrahub_session";
/// The cookie's name behind TLS: the `__Host-` prefix pins it to this host and path `/`, so a
/// sibling domain cannot plant one.
const SECURE_COOKIE: &str = "__Host-infrahub_session";

/// Forms whose handler runs several use cases, each under its own key derived from the form's
/// `_key` (one transaction commits per key).
const MULTI_ACTION_FORMS: [&str; 1] = ["/servers/assign"];

/// Forms whose answer shows a secret (a new webhook's): never kept for a replay. A repeat is
/// refused by the name it takes instead.
const SECRET_FORMS: [&str; 1] = ["/webhooks"];

/// The console's routes, guarded: no NUL in any query; on every POST, origin, session, no NUL
/// in the form, CSRF and per-form idempotency ([`guard`]).
pub fn router(ctx: Context) -> Router<Context> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/jobs/{id}/settled", get(job_settled))
        .route("/assets/console.css", get(css))
        .route("/assets/htmx.min.js", get(htmx))
        .merge(lead::routes())
        .merge(approvals::routes())
        .merge(webhooks::routes())
        .merge(field::routes())
        .merge(center::routes())
        .route_layer(middleware::from_fn_with_state(ctx, guard))
        .route_layer(middleware::from_fn(page_headers))
}

/// Pages are private and never framed: no caching (Back after logout shows nothing, a used
/// form is not restored), no framing, no referrer to other sites, a strict content policy
/// (scripts from this site only; inline styles carry the bars' widths). Assets may be cached:
/// their URLs carry the version.
async fn page_headers(request: Request, next: Next) -> Response {
    let asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; \
             form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
    );
    response
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/console.css"))
}

async fn htmx() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("assets/htmx.min.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers =
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")];
    (headers, body).into_response()
}

/// The logged-in person of a console request. Without a live session: a redirect to the
/// login page (for htmx requests, an `HX-Redirect`).
pub struct Viewer(pub Session);

impl Viewer {
    pub fn caller(&self) -> &app::Caller {
        &self.0.caller
    }

    pub fn csrf(&self) -> &str {
        &self.0.csrf
    }
}

impl FromRequestParts<Context> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ctx: &Context) -> Result<Self, Response> {
        if let Some(session) = parts.extensions.get::<Session>() {
            return Ok(Viewer(session.clone()));
        }
        let Some(token) = session_cookie(&parts.headers) else {
            return Err(to_login(&parts.headers, &parts.method, parts.uri.path()));
        };
        match app::console::resume(ctx, &token, request_id(&parts.headers)).await {
            Ok(session) => Ok(Viewer(session)),
            Err(err) if err.kind == ErrorKind::Unauthorized => {
                let mut response = to_login(&parts.headers, &parts.method, parts.uri.path());
                response.headers_mut().append(header::SET_COOKIE, clear_cookie());
                Err(response)
            }
            Err(err) => Err(error_page(None, &err)),
        }
    }
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SECURE_COOKIE || *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// The page to come back to after logging in: for htmx requests the page they came from
/// (`HX-Current-URL`), for form posts the page of the form (a same-origin `Referer`), else the
/// page asked for.
fn return_path(headers: &HeaderMap, method: &Method, path: &str) -> String {
    let header_path = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| url::Url::parse(v).ok())
            .map(|url| local_path(Some(url.path())))
    };
    if headers.contains_key("hx-request") {
        return header_path("hx-current-url").unwrap_or_else(|| "/".to_owned());
    }
    if *method == Method::POST {
        return if same_origin(headers) { header_path("referer") } else { None }
            .unwrap_or_else(|| "/".to_owned());
    }
    local_path(Some(path))
}

/// Where to go without a session: the login page, coming back afterwards (see
/// [`return_path`]).
fn to_login(headers: &HeaderMap, method: &Method, path: &str) -> Response {
    let path = return_path(headers, method, path);
    let next: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    let target = format!("/login?next={next}");
    if headers.contains_key("hx-request") {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        if let Ok(value) = HeaderValue::from_str(&target) {
            response.headers_mut().insert("hx-redirect", value);
        }
        return response;
    }
    Redirect::to(&target).into_response()
}

fn served_over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

fn session_cookie_header(token: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value =
        format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&value).unwrap_or_else(|_| clear_cookie())
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("infrahub_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The host the browser sent the request to: `X-Forwarded-Host` from a reverse proxy, else
/// `Host`. (A page of another site cannot set `X-Forwarded-Host` on a form post: it is not
/// one of the headers a cross-site form may carry.)
fn public_host(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-forwarded-host")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
}

/// Whether a request comes from a page of this very origin: its `Origin` (else `Referer`)
/// names the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = public_host(headers) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| url::Url::parse(v).ok());
    let Some(source) = source else { return false };
    let authority = match (source.host_str(), source.port()) {
        (Some(h), Some(port)) => format!("{h}:{port}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return false,
    };
    authority.eq_ignore_ascii_case(host)
}

/// A bare page (no navigation) saying why a request was refused.
fn bare_page(status: StatusCode, title: &str, message: &str) -> Response {
    (status, layout::bare(title, layout::error_text(message))).into_response()
}

fn refused(message: &str) -> Response {
    bare_page(StatusCode::FORBIDDEN, "Refused", message)
}

/// PostgreSQL's text cannot hold the NUL character: a page address (400) or a form (422)
/// carrying one is refused as the sender's mistake, as the JSON API refuses it, rather than
/// failing in the database.
fn nul_refused(status: StatusCode) -> Response {
    bare_page(status, "Refused", "Text may not contain the NUL character (%00).")
}

/// A POST's form, read whole (up to the body limit) and checked for a NUL character: `%00`,
/// or a raw one, which the form parsers let through.
async fn read_form(body: Body, limit: usize) -> Result<axum::body::Bytes, Response> {
    let Ok(bytes) = to_bytes(body, limit).await else {
        return Err(bare_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            "This form is too large.",
        ));
    };
    if bytes.contains(&0) || encodes_nul(&bytes) {
        return Err(nul_refused(StatusCode::UNPROCESSABLE_ENTITY));
    }
    Ok(bytes)
}

/// Every console request: no NUL character in its query. Every console POST: same origin;
/// then, but for the login, a live session; then no NUL in the form, and (but for the login)
/// the session's CSRF token; then, when the form carries a `_key`, at most once per key (the
/// answer, usually a redirect, is kept and given again).
async fn guard(State(ctx): State<Context>, request: Request, next: Next) -> Response {
    if request.uri().query().is_some_and(encodes_nul) {
        return nul_refused(StatusCode::BAD_REQUEST);
    }
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    if !same_origin(request.headers()) {
        return refused("This form was not sent from this site (Origin check).");
    }
    let limit = ctx.config.http.body_limit_bytes;
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if path == "/login" {
        return match read_form(body, limit).await {
            Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
            Err(refusal) => refusal,
        };
    }
    let Some(token) = session_cookie(&parts.headers) else {
        return to_login(&parts.headers, &Method::POST, &path);
    };
    let session = match app::console::resume(&ctx, &token, request_id(&parts.headers)).await {
        Ok(session) => session,
        Err(err) if err.kind == ErrorKind::Unauthorized => {
            let mut response = to_login(&parts.headers, &Method::POST, &path);
            response.headers_mut().append(header::SET_COOKIE, clear_cookie());
            return response;
        }
        Err(err) => return error_page(None, &err),
    };
    let bytes = match read_form(body, limit).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let field = |name: &str| {
        url::form_urlencoded::parse(&bytes).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    };
    let csrf_ok = field("_csrf").is_some_and(|given| {
        crate::app::token::constant_time_eq(given.as_bytes(), session.csrf.as_bytes())
    });
    if !csrf_ok {
        return refused(
            "This form has expired or was not sent from this site (CSRF check). Reload the page and try again.",
        );
    }
    let user = session.caller.id;
    parts.extensions.insert(session);
    // A form that changes several things (assigning several servers) keys each change itself.
    let each_keyed =
        MULTI_ACTION_FORMS.contains(&path.as_str()) || SECRET_FORMS.contains(&path.as_str());
    let Some(key) = field("_key").filter(|k| !k.is_empty() && !each_keyed) else {
        return next.run(Request::from_parts(parts, Body::from(bytes))).await;
    };
    let once = match app::idempotency::Request::new(
        user,
        &format!("console:{key}"),
        "POST",
        &path,
        &bytes,
        &ctx.fingerprint_key,
    ) {
        Ok(once) => once,
        Err(err) => return error_page(None, &err),
    };
    let answered = app::idempotency::once(&ctx, &once, || async move {
        let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
        crate::http::idempotency::answer_of(response).await
    })
    .await;
    match answered {
        Ok(answer) => crate::http::idempotency::response_of(answer),
        Err(err) => error_page(None, &err),
    }
}

/// The status a use case's refusal gets as a page.
fn status_of(err: &AppError) -> StatusCode {
    crate::http::error::status_of(err.kind)
}

/// The other way round, for a refusal kept as a stored answer (a multi-server form's
/// per-server change): the kind its status stands for.
fn kind_of(status: u16) -> ErrorKind {
    [
        ErrorKind::BadRequest,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::Invalid,
        ErrorKind::TooManyRequests { retry_after_secs: 1 },
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ]
    .into_iter()
    .find(|kind| crate::http::error::status_of(*kind).as_u16() == status)
    .unwrap_or(ErrorKind::Conflict)
}

/// A whole page saying what went wrong, in words (never raw JSON).
fn error_page(viewer: Option<&Viewer>, err: &AppError) -> Response {
    let reused;
    let err = if err.code == "idempotency_key_reused" {
        reused = AppError::new(
            ErrorKind::Conflict,
            "form_already_sent",
            "This form was already sent with other values. Reload the page and try again.",
        );
        &reused
    } else {
        err
    };
    let title = match err.kind {
        ErrorKind::NotFound => "Not found",
        ErrorKind::Forbidden => "Not allowed",
        ErrorKind::Unavailable => "Unavailable",
        _ => "Something went wrong",
    };
    let body = maud::html! {
        h1 { (title) }
        (layout::error_box(err))
        p { a href="/" { "Back to the start page" } }
    };
    (status_of(err), layout::page(title, viewer, "", body)).into_response()
}

/// A page, or the error page of the use case that failed.
type PageResult = Result<Markup, Response>;

trait OrPage<T> {
    fn or_page(self, viewer: &Viewer) -> Result<T, Response>;
}

impl<T> OrPage<T> for Result<T, AppError> {
    fn or_page(self, viewer: &Viewer) -> Result<T, Response> {
        self.map_err(|err| error_page(Some(viewer), &err))
    }
}

async fn home(viewer: Viewer) -> Redirect {
    Redirect::to(match viewer.caller().role {
        Role::TeamLead => "/projects",
        Role::FieldAdmin => "/capacity",
        Role::CenterAdmin => "/servers",
    })
}

#[derive(Debug, Default, serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Only paths of this site are followed after logging in: `next` is resolved against this
/// site and must stay on it; what comes back is its path and query, re-serialised (so no
/// `//host`, `/\t/host` or `\\host` trick survives).
fn local_path(next: Option<&str>) -> String {
    let Ok(base) = url::Url::parse("http://console.invalid/") else { return "/".to_owned() };
    next.filter(|n| n.starts_with('/') && n.bytes().all(|b| b.is_ascii_graphic()))
        .filter(|n| !n.contains('\\'))
        .and_then(|n| base.join(n).ok())
        .filter(|url| url.host_str() == Some("console.invalid") && url.port().is_none())
        .map(|url| match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        })
        .unwrap_or_else(|| "/".to_owned())
}

async fn login_page(Query(query): Query<LoginQuery>) -> Markup {
    layout::login(None, "", &local_path(query.next.as_deref()))
}

#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    State(ctx): State<Context>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    // A session the browser already had (someone else's, planted or old) ends here.
    if let Some(old) = session_cookie(&headers)
        && let Err(err) = app::console::close(&ctx, &old).await
    {
        return error_page(None, &err);
    }
    match app::console::open(&ctx, &form.username, form.password, request_id(&headers)).await {
        Ok(opened) => {
            let max_age = (opened.expires_at - chrono::Utc::now()).num_seconds().max(1);
            let cookie = session_cookie_header(&opened.token, max_age, served_over_tls(&headers));
            let mut response = Redirect::to(&next).into_response();
            response.headers_mut().append(header::SET_COOKIE, cookie);
            response
        }
        Err(err) => {
            let page = layout::login(Some(&err), &form.username, &next);
            (status_of(&err), page).into_response()
        }
    }
}

async fn logout(State(ctx): State<Context>, headers: HeaderMap) -> Response {
    if let Some(token) = session_cookie(&headers)
        && let Err(err) = app::console::close(&ctx, &token).await
    {
        return error_page(None, &err);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, clear_cookie());
    response
}

/// A page's query parameters: ones that do not parse get the error page (400), in words, not
/// a bare text.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let parsed = axum::extract::Query::<T>::from_request_parts(parts, state).await;
        parsed.map(|axum::extract::Query(value)| Query(value)).map_err(|rejection| {
            let message = format!("This page's address is not valid. {}", rejection.body_text());
            error_page(None, &AppError::new(ErrorKind::BadRequest, "invalid_query", message))
        })
    }
}

/// A form's fields: a form that does not parse gets the error page, in words, not a bare
/// text, with axum's status (422 for fields that do not parse, 415 for a body that is not a
/// form, 413 for one over the body limit).
pub struct Form<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Form<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let parsed = axum::Form::<T>::from_request(request, state).await;
        parsed.map(|axum::Form(value)| Form(value)).map_err(|rejection| {
            let message = format!("This form could not be read. {}", rejection.body_text());
            let mut page = error_page(None, &AppError::invalid("invalid_form", message));
            *page.status_mut() = rejection.status();
            page
        })
    }
}

/// A `{id}` of the path: anything but a UUID gets the "not found" page, not a bare text.
pub struct PathId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let raw = axum::extract::Path::<String>::from_request_parts(parts, state).await;
        raw.ok().and_then(|axum::extract::Path(raw)| raw.parse().ok()).map(PathId).ok_or_else(
            || {
                let err = AppError::not_found("page");
                error_page(None, &err)
            },
        )
    }
}

/// A query or form value that must parse; anything else counts as not given.
pub(super) fn parsed<T: std::str::FromStr>(value: &Option<String>) -> Option<T> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty()).and_then(|v| v.parse().ok())
}

/// htmx's "stop polling" status (286): a poll whose answer is an error (the project went out
/// of sight, the session's account lost its scope) must not ask again every second.
pub(super) fn stop_polling() -> StatusCode {
    StatusCode::from_u16(286).unwrap_or(StatusCode::OK)
}

/// Every field as (id, name), for a center admin's pickers (500 at most: one page).
pub(super) async fn field_choices(
    ctx: &Context,
    viewer: &Viewer,
) -> Result<Vec<(uuid::Uuid, String)>, Response> {
    let page = app::PageParams { limit: Some(500), cursor: None };
    let kind = crate::store::org::UnitKind::Field;
    let fields =
        app::organisation::list_units(ctx, viewer.caller(), kind, page).await.or_page(viewer)?;
    Ok(fields.items.into_iter().map(|f| (f.id, f.name)).collect())
}

/// A fresh submission key for a form.
fn form_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The hidden fields every form carries: the session's CSRF token and a submission key.
fn form_fields(viewer: &Viewer) -> Markup {
    maud::html! {
        input type="hidden" name="_csrf" value=(viewer.csrf());
        input type="hidden" name="_key" value=(form_key());
    }
}

/// What became of a job started by a form: while it runs, a line that asks again every
/// second and reloads the page once the job is over; then its outcome.
pub(super) async fn job_notice(ctx: &Context, viewer: &Viewer, job: uuid::Uuid) -> Markup {
    use crate::domain::job::JobStatus;
    match app::jobs::get(ctx, viewer.caller(), job).await {
        Ok(row) => match row.status {
            JobStatus::Succeeded => {
                maud::html! { div.notice role="status" { "Done: " (row.kind) " succeeded." } }
            }
            JobStatus::Superseded => maud::html! {
                div.notice role="status" { (row.kind) " was superseded by a newer change of the same thing (job "
                    (row.result.as_ref().and_then(|r| r["superseded_by"].as_str()).unwrap_or("-")) "); that one carries it." }
            },
            JobStatus::Failed | JobStatus::Cancelled => maud::html! {
                div.error role="alert" { (row.kind) " " (row.status.as_str()) ": "
                    (row.last_error.clone().unwrap_or_default()) }
            },
            _ => maud::html! {
                div.notice role="status" hx-get={ "/jobs/" (job) "/settled" } hx-trigger="every 1s" {
                    "Working: " (row.kind) " is " (row.status.as_str()) "…"
                }
            },
        },
        Err(err) => layout::error_box(&err),
    }
}

/// For [`job_notice`]'s poll: nothing while the job runs, `HX-Refresh` once it is over.
async fn job_settled(State(ctx): State<Context>, viewer: Viewer, PathId(job): PathId) -> Response {
    match app::jobs::get(&ctx, viewer.caller(), job).await {
        Ok(row) if row.status.is_active() => {
            maud::html! { "Working: " (row.kind) " is " (row.status.as_str()) "…" }.into_response()
        }
        Ok(_) => ([("hx-refresh", "true")], "").into_response(),
        Err(err) => (stop_polling(), layout::error_box(&err)).into_response(),
    }
}
