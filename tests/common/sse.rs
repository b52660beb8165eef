//! Reading a Server-Sent Events response event by event.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

/// An open SSE response and the text read from it so far.
pub struct SseReader {
    body: Incoming,
    text: String,
}

impl SseReader {
    pub fn new(body: Incoming) -> SseReader {
        SseReader {
            body,
            text: String::new(),
        }
    }

    /// The next event (name, data as JSON), waiting at most `within`.
    pub async fn next(&mut self, within: Duration) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Keep-alive comments (`:`) are skipped.
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text[..end].to_string();
                self.text = self.text[end + 2..].to_string();
                let name = block.lines().find_map(|l| l.strip_prefix("event: "));
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if let Some(name) = name {
                    return (name.to_string(), serde_json::from_str(&data).unwrap());
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no SSE event within {within:?}: {:?}", self.text));
            match frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.text.push_str(std::str::from_utf8(data).unwrap());
                    }
                }
                other => panic!("the SSE stream ended: {other:?} {:?}", self.text),
            }
        }
    }
}
