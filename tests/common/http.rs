//! One HTTP request to the gateway and its whole reply, for the HTTP and end-to-end tests
//! (through the load generator's client, `dialgate::cli::loadtest::http`).

use std::time::Duration;

use bytes::Bytes;
use dialgate::cli::loadtest::http::HttpClient;
use hyper::{body::Incoming, header, HeaderMap, Method, Response, StatusCode};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Every `Set-Cookie` header, whole.
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// The value a `Set-Cookie` gives the named cookie.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookie(name).map(|(value, _)| value)
    }

    /// The value a `Set-Cookie` gives the named cookie, and the whole header.
    pub fn set_cookie(&self, name: &str) -> Option<(String, String)> {
        self.cookies().into_iter().find_map(|c| {
            let (k, v) = c.split(';').next()?.split_once('=')?;
            (k == name).then(|| (v.to_string(), c.clone()))
        })
    }
}

/// Sends one request and returns the response with its body still streaming (SSE).
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
    within: Duration,
) -> Response<Incoming> {
    let client = HttpClient::new(1);
    tokio::time::timeout(within, client.send(method, url, headers, body))
        .await
        .unwrap_or_else(|_| panic!("{url} did not answer within {within:?}"))
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Sends one request and reads the whole reply.
pub async fn fetch(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
    within: Duration,
) -> Reply {
    let client = HttpClient::new(1);
    let answer = tokio::time::timeout(within, client.fetch(method, url, headers, body))
        .await
        .unwrap_or_else(|_| panic!("{url} did not answer within {within:?}"))
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    Reply {
        status: answer.status,
        headers: answer.headers,
        body: answer.body,
    }
}

/// A request with a generous time limit (a store outage may take the pool's timeout)
/// and the whole reply.
pub async fn http(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    fetch(
        method,
        url,
        headers,
        body.to_string(),
        Duration::from_secs(20),
    )
    .await
}
