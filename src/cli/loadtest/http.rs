//! A small HTTP/1.1 client (hyper-util's pooled client) and a Server-Sent Events reader:
//! what the load generator and the tests use to talk to the gateway.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

/// A keep-alive HTTP/1.1 client; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

/// A whole answer: status, headers and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpClient {
    /// Keeps up to `max_idle` idle connections per host.
    pub fn new(max_idle: usize) -> HttpClient {
        HttpClient {
            inner: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(max_idle)
                .build_http(),
        }
    }

    /// Sends one request; the answer's body is still streaming (SSE).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response<Incoming>, String> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body.into()))
            .map_err(|e| format!("building the request: {e}"))?;
        self.inner
            .request(request)
            .await
            .map_err(|e| format!("request: {e}"))
    }

    /// Sends one request and reads the whole answer.
    pub async fn fetch(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Answer, String> {
        let (parts, body) = self.send(method, url, headers, body).await?.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// POSTs `json` (with its content type) and reads the whole answer.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        json: &serde_json::Value,
    ) -> Result<Answer, String> {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.fetch(Method::POST, url, &all, json.to_string()).await
    }
}

/// One Server-Sent Event: its `event:` name (if any) and its `data:` lines joined by LF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub name: Option<String>,
    pub data: String,
}

/// Reads an SSE response event by event (comment-only blocks, the keep-alives, skipped).
pub struct SseStream {
    body: Incoming,
    text: String,
}

impl SseStream {
    pub fn new(body: Incoming) -> SseStream {
        SseStream {
            body,
            text: String::new(),
        }
    }

    /// The text received and not yet taken as an event (for error messages).
    pub fn pending(&self) -> &str {
        &self.text
    }

    /// The next event; `Ok(None)` when the stream ends first.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        loop {
            while let Some(event) = self.take_block() {
                if let Some(event) = event {
                    return Ok(Some(event));
                }
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("reading the stream: {e}")),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.text.push_str(&String::from_utf8_lossy(data));
                    }
                }
            }
        }
    }

    /// The next complete block (ended by a blank line), parsed: `Some(None)` for a block
    /// with neither event nor data.
    fn take_block(&mut self) -> Option<Option<SseEvent>> {
        if self.text.contains('\r') {
            self.text = self.text.replace("\r\n", "\n");
        }
        let end = self.text.find("\n\n")?;
        let block: String = self.text.drain(..end + 2).collect();
        Some(parse_block(&block))
    }
}

/// One event block's `event:` and `data:` fields; `None` when it has neither (a comment).
fn parse_block(block: &str) -> Option<SseEvent> {
    let mut name = None;
    let mut data: Option<String> = None;
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_string()),
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    if name.is_none() && data.is_none() {
        return None;
    }
    Some(SseEvent {
        name,
        data: data.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks() {
        assert_eq!(parse_block(": keep-alive\n"), None);
        assert_eq!(
            parse_block("event: verified\ndata: {\"a\":1}\n"),
            Some(SseEvent {
                name: Some("verified".into()),
                data: "{\"a\":1}".into()
            })
        );
        assert_eq!(
            parse_block("event:failed\ndata:x\ndata: y\n"),
            Some(SseEvent {
                name: Some("failed".into()),
                data: "x\ny".into()
            })
        );
    }
}
