//! How a verification reaches the waiting browser: in-process wake-ups of the SSE streams
//! waiting on a challenge, and an HMAC-signed HTTP call when the browser waits on another
//! node.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::{header, Method, Request, StatusCode};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use sha2::Sha256;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::{auth::signal::ChallengeSignal, store::now_ms};

/// The route another node calls.
pub const SIGNAL_PATH: &str = "/v1/internal/signal";
/// How far a signal's timestamp may be from the receiver's clock.
pub const SIGNAL_WINDOW: Duration = Duration::from_secs(60);
/// Time one outgoing signal may take.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per outgoing signal (browsers also re-read the store, so this is best effort).
const SIGNAL_ATTEMPTS: u32 = 2;

pub const TIMESTAMP_HEADER: &str = "x-dialgate-timestamp";
pub const SIGNATURE_HEADER: &str = "x-dialgate-signature";

type HmacSha256 = Hmac<Sha256>;

/// Hex HMAC-SHA256(key, timestamp + "." + body).
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    hex::encode(signal_mac(key, timestamp, body).finalize().into_bytes())
}

/// HMAC-SHA256 over `timestamp "." body`.
fn signal_mac(key: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a signature (constant time) and that `timestamp` is within [`SIGNAL_WINDOW`]
/// of `now` (both Unix seconds).
pub fn verify_signature(
    key: &[u8],
    timestamp: i64,
    signature_hex: &str,
    body: &[u8],
    now: i64,
) -> bool {
    if now.abs_diff(timestamp) > SIGNAL_WINDOW.as_secs() {
        return false;
    }
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    signal_mac(key, timestamp, body)
        .verify_slice(&signature)
        .is_ok()
}

fn same_node(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Wakes the browsers waiting on a challenge, wherever they wait.
pub struct Hub {
    node_url: Option<String>,
    signal_key: Option<Vec<u8>>,
    waiters: Mutex<HashMap<String, watch::Sender<u64>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A registration to be woken when a challenge changes; deregisters on drop.
pub struct Waiter {
    hub: Arc<Hub>,
    id: String,
    rx: Option<watch::Receiver<u64>>,
}

impl Waiter {
    /// Resolves at the next signal for this challenge (at once if one came since the
    /// last call). Pending forever if the hub is gone, which cannot happen while `self`
    /// holds it.
    pub async fn changed(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut waiters = self.hub.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if waiters
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            waiters.remove(&self.id);
        }
    }
}

impl Hub {
    /// `node_url`: this node's base URL (challenges recorded with another URL are
    /// signalled over HTTP). `signal_key`: the key shared by all nodes; without one no
    /// signal leaves this process.
    pub fn new(node_url: Option<String>, signal_key: Option<Vec<u8>>) -> Hub {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(SIGNAL_TIMEOUT));
        connector.set_nodelay(true);
        Hub {
            node_url,
            signal_key,
            waiters: Mutex::new(HashMap::new()),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    pub fn node_url(&self) -> Option<&str> {
        self.node_url.as_deref()
    }

    pub fn signal_key(&self) -> Option<&[u8]> {
        self.signal_key.as_deref()
    }

    /// Registers interest in a challenge. Register before reading the store, so a
    /// change between the read and the wait is not missed.
    pub fn subscribe(self: &Arc<Self>, challenge_id: &str) -> Waiter {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let rx = waiters
            .entry(challenge_id.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Waiter {
            hub: Arc::clone(self),
            id: challenge_id.to_string(),
            rx: Some(rx),
        }
    }

    /// Wakes the streams of this process waiting on the challenge.
    pub fn notify_local(&self, challenge_id: &str) {
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = waiters.get(challenge_id) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Streams waiting in this process (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn send_remote(&self, challenge_id: &str, node_url: &str) {
        let Some(key) = self.signal_key.clone() else {
            warn!(
                node = node_url,
                challenge_id,
                "challenge is held by another node but no --signal-key is set; \
                 its browser will notice on its next store read"
            );
            return;
        };
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle,
            Err(_) => {
                warn!(
                    node = node_url,
                    challenge_id, "no async runtime to send the signal from"
                );
                return;
            }
        };
        let url = format!("{}{SIGNAL_PATH}", node_url.trim_end_matches('/'));
        let body = Bytes::from(serde_json::json!({ "challenge_id": challenge_id }).to_string());
        let client = self.client.clone();
        let challenge_id = challenge_id.to_string();
        runtime.spawn(async move {
            for attempt in 1..=SIGNAL_ATTEMPTS {
                match post_signal(&client, &url, &key, body.clone()).await {
                    Ok(()) => {
                        debug!(%url, challenge_id, "signal delivered");
                        return;
                    }
                    Err(e) => warn!(%url, challenge_id, attempt, error = %e, "signal failed"),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

async fn post_signal(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    key: &[u8],
    body: Bytes,
) -> Result<(), String> {
    // Unix seconds.
    let timestamp = now_ms() / 1000;
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, sign(key, timestamp, &body))
        .body(Full::new(body))
        .map_err(|e| format!("bad node URL: {e}"))?;
    let response = tokio::time::timeout(SIGNAL_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("no answer within {SIGNAL_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    match response.status() {
        s if s.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED => Err("refused: signature or clock (keys differ?)".into()),
        StatusCode::NOT_FOUND => Err("refused: the node has no --signal-key".into()),
        s => Err(format!("answered {s}")),
    }
}

impl ChallengeSignal for Hub {
    fn challenge_changed(&self, challenge_id: &str, node_url: Option<&str>) {
        match node_url {
            Some(target)
                if !self
                    .node_url
                    .as_deref()
                    .is_some_and(|me| same_node(me, target)) =>
            {
                self.send_remote(challenge_id, target)
            }
            _ => self.notify_local(challenge_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let body = br#"{"challenge_id":"ab"}"#;
        let sig = sign(b"k", 1000, body);
        assert!(verify_signature(b"k", 1000, &sig, body, 1030));
        assert!(verify_signature(b"k", 1000, &sig.to_uppercase(), body, 970));
        assert!(!verify_signature(b"k", 1000, &sig, body, 1061));
        assert!(!verify_signature(b"k2", 1000, &sig, body, 1000));
        assert!(!verify_signature(b"k", 1001, &sig, body, 1000));
        assert!(!verify_signature(b"k", 1000, &sig, b"{}", 1000));
        assert!(!verify_signature(b"k", 1000, "zz", body, 1000));
    }

    #[tokio::test]
    async fn local_wakeup_and_cleanup() {
        let hub = Arc::new(Hub::new(Some("http://a:1/".into()), None));
        let mut w = hub.subscribe("c1");
        hub.challenge_changed("c1", Some("http://A:1"));
        tokio::time::timeout(Duration::from_secs(1), w.changed())
            .await
            .unwrap();
        hub.challenge_changed("c1", None);
        tokio::time::timeout(Duration::from_secs(1), w.changed())
            .await
            .unwrap();
        assert_eq!(hub.waiting(), 1);
        drop(w);
        assert_eq!(hub.waiting(), 0);
    }
}
