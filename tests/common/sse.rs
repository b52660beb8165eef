//! Reading a Server-Sent Events response event by event (through the load generator's
//! reader, `dialgate::cli::loadtest::http::SseStream`), with time limits and panics.

use std::time::Duration;

use dialgate::cli::loadtest::http::SseStream;
use hyper::body::Incoming;
use serde_json::Value;

/// An open SSE response.
pub struct SseReader {
    stream: SseStream,
}

impl SseReader {
    pub fn new(body: Incoming) -> SseReader {
        SseReader {
            stream: SseStream::new(body),
        }
    }

    /// The next named event (name, data as JSON), waiting at most `within`.
    pub async fn next(&mut self, within: Duration) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, self.stream.next_event()).await;
            let event = match event {
                Err(_) => panic!(
                    "no SSE event within {within:?}: {:?}",
                    self.stream.pending()
                ),
                Ok(Ok(Some(event))) => event,
                other => panic!(
                    "the SSE stream ended: {other:?} {:?}",
                    self.stream.pending()
                ),
            };
            if let Some(name) = event.name {
                return (name, serde_json::from_str(&event.data).unwrap());
            }
        }
    }

    /// Reads until an event with this name has arrived (skipping others); its data.
    pub async fn event(&mut self, name: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (event, data) = self.next(remaining).await;
            if event == name {
                return data;
            }
        }
    }

    /// Whether the stream ends (after any events already sent) within `within`.
    pub async fn ends(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next_event()).await {
                Err(_) => return false,
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None) | Err(_)) => return true,
            }
        }
    }
}
