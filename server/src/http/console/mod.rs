//! The web console for legal staff and records managers, served by `holdfast-server` at `/`
//! on the HTTP listener. Pages are rendered on the server (maud, auto-escaped) and work
//! without JavaScript; `console.js` only adds the live KQL check as you type. Every action
//! goes through the same application layer as the APIs, so roles, case membership and audit
//! entries are the same.
//!
//! Sign-in exchanges a bearer token for a session (`sessions.rs`); every change is a POST
//! carrying the session's CSRF token, and a POST whose `Origin` is another site is refused.

pub mod exports;
mod pages;
pub mod sessions;

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::Markup;
use serde::Deserialize;

use super::HttpState;
use crate::auth::Principal;
use crate::error::Error;
use sessions::{same_secret, Session, Sessions};

/// The session cookie's name.
const COOKIE: &str = "holdfast_session";

/// What the console shares.
#[derive(Clone)]
pub struct ConsoleState {
    pub sessions: Arc<Sessions>,
    /// Cookies are `Secure` when the listener is TLS.
    pub secure: bool,
    /// Export jobs and their bags.
    pub exports: Arc<exports::ConsoleExports>,
}

/// The console's routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/cases") }))
        .route("/signin", get(pages::signin_page).post(signin))
        .route("/signout", post(signout))
        .route("/console/console.css", get(stylesheet))
        .route("/console/console.js", get(script))
        .route("/console/kql", get(pages::kql_check))
        .route("/cases", get(pages::cases).post(pages::create_case))
        .route("/cases/{case_id}", get(pages::case_home))
        .route("/cases/{case_id}/edit", post(pages::edit_case))
        .route("/cases/{case_id}/close", post(pages::close_case))
        .route("/cases/{case_id}/holds", post(pages::place_case_hold))
        .route(
            "/cases/{case_id}/holds/{hold_id}/release",
            post(pages::release_case_hold),
        )
        .route("/cases/{case_id}/search", get(pages::search))
        .route("/cases/{case_id}/items/{item_id}", get(pages::item))
        .route("/cases/{case_id}/export", post(pages::export))
        .route("/cases/{case_id}/exports/{job_id}", get(pages::export_job))
        .route(
            "/cases/{case_id}/exports/{job_id}/bag.tar",
            get(pages::export_download),
        )
        .route("/policies", get(pages::policies).post(pages::create_policy))
        .route("/policies/{policy_id}/lock", post(pages::lock_policy))
        .route(
            "/holds",
            get(pages::holds).post(pages::place_litigation_hold),
        )
        .route("/holds/{hold_id}/release", post(pages::release_hold))
        .route("/holds/{hold_id}/clear", post(pages::clear_delay_hold))
        .route("/mailboxes", get(pages::mailboxes))
        .route("/dispositions", get(pages::dispositions))
        .route("/tokens", get(pages::tokens).post(pages::create_token))
        .route("/tokens/{name}/revoke", post(pages::revoke_token))
        .route("/sweeper", get(pages::sweeper).post(pages::run_sweep))
        .route("/audit", get(pages::audit))
        .route("/audit/verify", post(pages::verify_audit))
}

/// A signed-in browser: its principal (looked up again from the token's hash on every
/// request) and its session.
pub struct Console {
    pub principal: Principal,
    pub session: Session,
}

impl Console {
    /// Refuses a change whose CSRF token is not this session's.
    pub fn check_csrf(&self, sent: &str) -> Result<(), PageError> {
        if same_secret(sent, &self.session.csrf) {
            Ok(())
        } else {
            Err(PageError::forbidden(
                "this form has expired or did not come from this console; reload the page and try again",
            ))
        }
    }
}

/// The session cookie's value. Two cookies of that name (one planted by a sibling site)
/// count as none.
fn cookie_value(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = cookie_name(secure);
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Under TLS the cookie takes the `__Host-` prefix: browsers then refuse it unless it is
/// Secure, for this host only, and for every path.
fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-holdfast_session"
    } else {
        COOKIE
    }
}

/// The host a request was sent to: `Host` (HTTP/1.1) or the URI's authority (HTTP/2).
fn request_host<'a>(headers: &'a HeaderMap, uri: &'a axum::http::Uri) -> Option<&'a str> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

/// Whether a request's `Origin` (browsers send it on every POST) is this console's own.
/// A request without one (not from a browser) passes: it carries no ambient cookie risk
/// beyond its own CSRF token.
fn origin_is_ours(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = request_host(headers, uri) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        == Some(host)
}

/// Where to go after signing in: a path of this console, never another site (`//host`,
/// `/\host` and control characters are refused).
fn safe_next(next: &str) -> &str {
    let plain = next.starts_with('/')
        && !next.starts_with("//")
        && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    if plain {
        next
    } else {
        "/cases"
    }
}

impl FromRequestParts<HttpState> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Response> {
        if parts.method != Method::GET && !origin_is_ours(&parts.headers, &parts.uri) {
            return Err(
                PageError::forbidden("a change from another site was refused").into_response(),
            );
        }
        let session = cookie_value(&parts.headers, state.console.secure)
            .and_then(|id| state.console.sessions.touch(&id));
        let principal = session
            .as_ref()
            .and_then(|s| state.app.tokens.by_hash(&s.token_sha256));
        match (session, principal) {
            (Some(session), Some(principal)) => Ok(Console { principal, session }),
            _ => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/cases");
                let target = format!(
                    "/signin?{}",
                    serde_urlencoded::to_string([("next", next)]).unwrap_or_default()
                );
                Err(Redirect::to(&target).into_response())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_console_are_followed_after_sign_in() {
        assert_eq!(safe_next("/cases/01J?q=a"), "/cases/01J?q=a");
        for hostile in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "https://evil.example",
            "",
            "cases",
        ] {
            assert_eq!(safe_next(hostile), "/cases", "{hostile:?}");
        }
    }

    #[test]
    fn a_second_session_cookie_counts_as_none() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; holdfast_session=x"),
        );
        assert_eq!(cookie_value(&headers, false).as_deref(), Some("x"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("holdfast_session=y"),
        );
        assert_eq!(cookie_value(&headers, false), None);
    }

    #[test]
    fn origin_must_match_the_host_or_the_http2_authority() {
        let uri: axum::http::Uri = "https://console.example:8080/cases".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://console.example:8080"),
        );
        assert!(origin_is_ours(&headers, &uri));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_is_ours(&headers, &uri));
        let path_only: axum::http::Uri = "/cases".parse().unwrap();
        headers.insert(header::HOST, HeaderValue::from_static("evil.example"));
        assert!(origin_is_ours(&headers, &path_only));
    }
}

#[derive(Deserialize)]
struct SigninForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// Exchanges a bearer token for a session. The token is checked like any other; a wrong one
/// is counted against the source as over the APIs.
async fn signin(
    State(state): State<HttpState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    form: Result<Form<SigninForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !origin_is_ours(&headers, &uri) {
        return PageError::forbidden("a sign-in from another site was refused").into_response();
    }
    let Ok(Form(form)) = form else {
        return pages::signin_form(Some("Enter a token."), "").into_response();
    };
    let bearer = format!("Bearer {}", form.token.trim());
    let source = Some(peer.ip());
    match state
        .app
        .authenticate(Some(bearer.as_bytes()), source, "ConsoleSignIn")
    {
        Ok(principal) => {
            let (id, _) = state.console.sessions.open(principal.token_sha256);
            let mut response = Redirect::to(safe_next(&form.next)).into_response();
            let cookie = format!(
                "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                cookie_name(state.console.secure),
                sessions::ABSOLUTE_TIMEOUT.as_secs(),
                if state.console.secure { "; Secure" } else { "" }
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(Error::ResourceExhausted(_)) => (
            StatusCode::TOO_MANY_REQUESTS,
            pages::signin_form(
                Some("Too many attempts from this address; wait a minute."),
                &form.next,
            ),
        )
            .into_response(),
        Err(_) => (
            StatusCode::UNAUTHORIZED,
            pages::signin_form(Some("That token is not valid."), &form.next),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn signout(
    State(state): State<HttpState>,
    console: Console,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(error) = console.check_csrf(&form.csrf) {
        return error.into_response();
    }
    if let Some(id) = cookie_value(&headers, state.console.secure) {
        state.console.sessions.close(&id);
    }
    let mut response = Redirect::to("/signin").into_response();
    let cleared = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        cookie_name(state.console.secure),
        if state.console.secure { "; Secure" } else { "" }
    );
    if let Ok(value) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("console.js"),
    )
        .into_response()
}

/// An error shown as a page: the same status as the API gives, the message in an error
/// summary at the top.
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn forbidden(message: &str) -> PageError {
        PageError {
            status: StatusCode::FORBIDDEN,
            message: message.to_string(),
        }
    }
}

impl From<Error> for PageError {
    fn from(error: Error) -> PageError {
        let api = super::error::ApiError::from(error);
        PageError {
            status: api.status,
            message: api.message,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.status, pages::error_page(&self.message)).into_response()
    }
}

/// Headers every console answer carries: a strict content security policy (scripts and
/// styles only from this server), no framing, no sniffing, no caching of pages, and no
/// referrer to other sites ("no-referrer" would make browsers send `Origin: null` on our own
/// form posts).
pub async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A page answer.
pub type Page = Result<Markup, PageError>;
