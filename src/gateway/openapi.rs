//! The OpenAPI 3.1 description of every route of [`super::router`], served at
//! `GET /v1/openapi.json`. It is written by hand in `openapi.json` beside this file;
//! `tests/openapi.rs` keeps it true: the router's routes and the document's paths and
//! methods must match, real answers of a live server must match their schemas, and
//! schemathesis fuzzes a live server against it.

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The document, as served.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// `GET /v1/openapi.json`. Cacheable: it changes only with the binary.
pub async fn document() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        OPENAPI_JSON,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_json() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"][OPENAPI_PATH]["get"].is_object());
    }
}
