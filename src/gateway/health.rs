//! `/healthz`: ok or unavailable within a second, always; why it is unavailable goes to
//! the log only (the answer is public: nothing about the infrastructure).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use futures::{
    future::{BoxFuture, Shared},
    FutureExt,
};
use serde_json::json;
use tracing::{debug, warn};

use super::Gateway;
use crate::{
    ami::{AmiClient, LinkState},
    store::Store,
};

/// How long `/healthz` waits for the database (so it answers within a second).
pub const PING_BOUND: Duration = Duration::from_millis(900);

type Ping = Shared<BoxFuture<'static, Result<(), String>>>;

/// The database ping, shared: callers within one bound of each other join the ping in
/// flight instead of each tying up another blocking thread, so a hung database holds at
/// most one blocking thread per bound; a ping older than the bound is left to finish
/// alone and the next caller starts afresh (the database may be back).
#[derive(Default)]
pub struct Probe {
    running: Mutex<Option<(Instant, Ping)>>,
}

impl Probe {
    fn ping(&self, store: &Store) -> Ping {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((started, ping)) = running.as_ref() {
            if ping.peek().is_none() && started.elapsed() < PING_BOUND {
                return ping.clone();
            }
        }
        let store = store.clone();
        let ping = tokio::task::spawn_blocking(move || store.ping())
            .map(|joined| match joined {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            })
            .boxed()
            .shared();
        *running = Some((Instant::now(), ping.clone()));
        ping
    }
}

pub async fn healthz(State(gw): State<Arc<Gateway>>) -> Response {
    let ping = gw.health.ping(&gw.store);
    let database = match tokio::time::timeout(PING_BOUND, ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {PING_BOUND:?}")),
    };
    // The AMI link only matters for call-backs: it never makes the node unhealthy.
    let ami = ami_json(&gw.ami);
    match database {
        Ok(()) => Json(json!({ "status": "ok", "database": "ok", "ami": ami })).into_response(),
        Err(e) => {
            warn!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "unavailable", "ami": ami })),
            )
                .into_response()
        }
    }
}

/// `"disabled"`, or `{state: "connected" | "reconnecting", since}`; the link's last
/// error goes to the log, not here.
fn ami_json(ami: &AmiClient) -> serde_json::Value {
    let (state, since) = match ami.state() {
        LinkState::Disabled => return json!("disabled"),
        LinkState::Connected { since } => ("connected", since),
        LinkState::Reconnecting { since } => ("reconnecting", since),
    };
    if state == "reconnecting" {
        if let Some(e) = ami.last_error() {
            debug!(error = %e, "health check: AMI link reconnecting");
        }
    }
    json!({
        "state": state,
        "since": humantime::format_rfc3339_seconds(since).to_string(),
    })
}
