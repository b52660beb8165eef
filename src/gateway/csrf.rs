//! Cross-site request forgery: one layer for every route a cookie can authenticate.
//!
//! A state-changing request (any method but GET, HEAD, OPTIONS) that carries one of
//! dialgate's cookies must come from the page's own origin (or an `--http-allow-origin`)
//! and, if it has a body, say `Content-Type: application/json`; otherwise 403 with a JSON
//! error. `SameSite=Lax` alone does not stop a sibling subdomain (`evil.example.com`
//! posting to `login.example.com` is "same-site"), and a form or a `text/plain` fetch is a
//! "simple" request a browser sends cross-origin without asking. Bearer-only requests
//! (no cookie) and the HMAC-signed node-to-node signal are not cookie-authenticated and
//! pass.
//!
//! The origin test, in order: `Sec-Fetch-Site: same-origin` (or `none`) passes; any other
//! `Sec-Fetch-Site` passes only with an allow-listed `Origin`. Without `Sec-Fetch-Site`
//! (older browsers), an `Origin` must name the `Host` asked for or be allow-listed. A
//! request with neither header is not from a browser and passes.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderName, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::warn;

use super::{api::cookie, ApiError, Gateway, CHALLENGE_COOKIE, SESSION_COOKIE, SIGNAL_PATH};

/// `Sec-Fetch-Site`, which `http` has no constant for.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Origin` / `Sec-Fetch-Site` say another site sent it.
    CrossSite,
    /// A body that is not declared JSON (a form, `text/plain`, or no type at all).
    NotJson,
}

impl Refusal {
    fn answer(self) -> ApiError {
        match self {
            Refusal::CrossSite => ApiError::new(StatusCode::FORBIDDEN, "cross_site_request")
                .detail("this request must come from the login page's own origin"),
            Refusal::NotJson => ApiError::new(StatusCode::FORBIDDEN, "json_required")
                .detail("send the body as Content-Type: application/json"),
        }
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, lower case, no path. `None` for
/// anything else.
pub fn normalize_origin(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = text.split_once("://")?;
    let plausible = matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@', ' ']);
    plausible.then_some(text)
}

/// The verdict on one request; `allowed` holds normalised origins.
pub fn judge(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body_empty: bool,
    allowed: &[String],
) -> Result<(), Refusal> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || path == SIGNAL_PATH {
        return Ok(());
    }
    if cookie(headers, SESSION_COOKIE).is_none() && cookie(headers, CHALLENGE_COOKIE).is_none() {
        return Ok(());
    }
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = text(&header::ORIGIN);
    let allow_listed = origin
        .and_then(normalize_origin)
        .is_some_and(|o| allowed.contains(&o));
    let same_origin = match text(&SEC_FETCH_SITE) {
        Some(site) => {
            matches!(site.to_ascii_lowercase().as_str(), "same-origin" | "none") || allow_listed
        }
        None => match origin {
            None => true,
            Some(origin) => {
                allow_listed
                    || match (
                        origin.split_once("://"),
                        text(&header::HOST).map(str::to_ascii_lowercase),
                    ) {
                        (Some((_, authority)), Some(host)) => {
                            authority.to_ascii_lowercase() == host
                        }
                        _ => false,
                    }
            }
        },
    };
    if !same_origin {
        return Err(Refusal::CrossSite);
    }
    let json = match text(&header::CONTENT_TYPE) {
        Some(content_type) => content_type
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json")),
        // No type: only with no body (the page's bodiless POSTs).
        None => body_empty,
    };
    if json {
        Ok(())
    } else {
        Err(Refusal::NotJson)
    }
}

/// The layer (`axum::middleware::from_fn_with_state`).
pub async fn guard(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    use hyper::body::Body as _;
    let body_empty = request.body().size_hint().exact() == Some(0);
    match judge(
        request.method(),
        request.uri().path(),
        request.headers(),
        body_empty,
        &gw.config.allowed_origins,
    ) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            warn!(method = %request.method(), path = %request.uri().path(),
                origin = ?request.headers().get(header::ORIGIN),
                reason = ?refusal, "refused a cookie-authenticated request (CSRF)");
            refusal.answer().into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    const SESSION: (&str, &str) = ("cookie", "dialgate_session=abc");
    const JSON: (&str, &str) = ("content-type", "application/json");
    const HOST: (&str, &str) = ("host", "login.example.com");

    fn post(pairs: &[(&'static str, &'static str)], body_empty: bool) -> Result<(), Refusal> {
        let allowed = vec!["https://app.example.com".to_string()];
        judge(
            &Method::POST,
            "/v1/temp-passwords",
            &headers(pairs),
            body_empty,
            &allowed,
        )
    }

    #[test]
    fn without_a_cookie_or_for_reads_nothing_is_checked() {
        assert_eq!(post(&[("content-type", "text/plain")], false), Ok(()));
        let get = judge(
            &Method::GET,
            "/v1/balance",
            &headers(&[SESSION, ("origin", "https://evil.example")]),
            true,
            &[],
        );
        assert_eq!(get, Ok(()));
        let signal = judge(
            &Method::POST,
            SIGNAL_PATH,
            &headers(&[SESSION, ("content-type", "text/plain")]),
            false,
            &[],
        );
        assert_eq!(signal, Ok(()));
    }

    #[test]
    fn bodies_must_be_json() {
        assert_eq!(post(&[SESSION, JSON], false), Ok(()));
        assert_eq!(
            post(
                &[SESSION, ("content-type", "Application/JSON; charset=utf-8")],
                false
            ),
            Ok(())
        );
        for kind in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                post(&[SESSION, ("content-type", kind)], false),
                Err(Refusal::NotJson)
            );
            // A form with no fields still says what it is.
            assert_eq!(
                post(&[SESSION, ("content-type", kind)], true),
                Err(Refusal::NotJson)
            );
        }
        assert_eq!(post(&[SESSION], false), Err(Refusal::NotJson));
        assert_eq!(post(&[SESSION], true), Ok(()));
        let challenge = ("cookie", "other=1; dialgate_challenge=s");
        assert_eq!(
            post(&[challenge, ("content-type", "text/plain")], false),
            Err(Refusal::NotJson)
        );
    }

    #[test]
    fn other_sites_are_refused_unless_allow_listed() {
        let cross = [SESSION, JSON, ("sec-fetch-site", "cross-site")];
        assert_eq!(post(&cross, false), Err(Refusal::CrossSite));
        // A sibling subdomain is "same-site": SameSite=Lax lets it through, we do not.
        let sibling = [
            SESSION,
            JSON,
            ("sec-fetch-site", "same-site"),
            ("origin", "https://evil.example.com"),
        ];
        assert_eq!(post(&sibling, false), Err(Refusal::CrossSite));
        let listed = [
            SESSION,
            JSON,
            ("sec-fetch-site", "same-site"),
            ("origin", "https://App.example.com/"),
        ];
        assert_eq!(post(&listed, false), Ok(()));
        let same = [
            SESSION,
            JSON,
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://login.example.com"),
        ];
        assert_eq!(post(&same, false), Ok(()));
        // Older browsers: Origin against Host.
        let old_same = [SESSION, JSON, HOST, ("origin", "https://login.example.com")];
        assert_eq!(post(&old_same, false), Ok(()));
        let old_cross = [SESSION, JSON, HOST, ("origin", "https://evil.example")];
        assert_eq!(post(&old_cross, false), Err(Refusal::CrossSite));
        let null = [SESSION, JSON, HOST, ("origin", "null")];
        assert_eq!(post(&null, false), Err(Refusal::CrossSite));
        // Not a browser: no Origin, no Sec-Fetch-Site.
        assert_eq!(post(&[SESSION, JSON, HOST], false), Ok(()));
    }

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            normalize_origin("HTTPS://App.Example.com:8443/").as_deref(),
            Some("https://app.example.com:8443")
        );
        for bad in [
            "app.example.com",
            "ftp://x",
            "https://",
            "https://a/b",
            "null",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }
}
