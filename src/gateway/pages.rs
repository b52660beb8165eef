//! The web pages (written in `web/`, compiled in), metrics, and the headers every
//! response carries.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};

use super::{ApiError, Gateway};
use crate::ami::LinkState;

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const SHARED_JS: &str = include_str!("web/shared.js");
const STYLE_CSS: &str = include_str!("web/style.css");
const PAYMENTS_HTML: &str = include_str!("web/payments.html");
const PAYMENTS_JS: &str = include_str!("web/payments.js");

fn page(content_type: &'static str, cache: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    page("text/html; charset=utf-8", "no-store", INDEX_HTML)
}

pub async fn app_js() -> Response {
    page("text/javascript; charset=utf-8", "no-cache", APP_JS)
}

pub async fn shared_js() -> Response {
    page("text/javascript; charset=utf-8", "no-cache", SHARED_JS)
}

pub async fn style_css() -> Response {
    page("text/css; charset=utf-8", "no-cache", STYLE_CSS)
}

/// The owner's temporary passwords (issue, list, pause, resume, revoke).
pub async fn payments() -> Response {
    page("text/html; charset=utf-8", "no-store", PAYMENTS_HTML)
}

pub async fn payments_js() -> Response {
    page("text/javascript; charset=utf-8", "no-cache", PAYMENTS_JS)
}

pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let stats = gw.ami.stats();
    gw.metrics
        .ami_reconnects
        .set(i64::try_from(stats.reconnects()).unwrap_or(i64::MAX));
    gw.metrics.ami_connected.set(i64::from(matches!(
        gw.ami.state(),
        LinkState::Connected { .. }
    )));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gw.metrics.render(),
    )
        .into_response()
}

/// Security headers on every response; `Cache-Control: no-store` unless a route chose
/// otherwise (API answers carry secrets and session state).
pub async fn common_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let defaults = [
        (header::CONTENT_SECURITY_POLICY, "default-src 'self'"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}
