//! HTTP: the login API (`/v1/login`), its SSE stream, forward-auth (`/v1/auth`), the web
//! pages, health and metrics, and node-to-node signalling (`/v1/internal/signal`).
//!
//! Built on `auth` (the domain) and `store`: every store call runs on a blocking thread,
//! and Argon2id (`login::start`) additionally behind a semaphore sized to the CPUs, so a
//! login flood cannot starve the FastAGI side. Any store error is a 503: fail closed.

mod api;
pub mod callback;
pub mod csrf;
mod error;
mod health;
mod hub;
mod limit;
mod openapi;
mod pages;
mod payments;
mod server;

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::{
    extract::DefaultBodyLimit,
    routing::{get, post},
    Router,
};
use tokio::sync::{watch, Semaphore};
use tower_http::trace::TraceLayer;

pub use api::{bearer, challenge_secret, cookie, rfc3339_ms, session_token, LoginRequest};
pub use callback::{CallbackLimiter, CallbackSettings};
pub use error::ApiError;
pub use hub::{sign, verify_signature, Hub, SIGNAL_PATH, SIGNAL_WINDOW};
pub use limit::{Limiter, RateLimit};
pub use openapi::{OPENAPI_JSON, OPENAPI_PATH};
pub use payments::{issue_conditions, parse_time, IssueRequest, OwnerRequest, PaymentRequest};
pub use server::{raise_open_file_limit, serve_with, HttpLimits};

use crate::{
    ami::AmiClient,
    auth::{callbacks::PendingCallbacks, login::LoginSettings},
    metrics::Metrics,
    store::Store,
};

/// Largest request body accepted (JSON bodies are tiny).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Cookie holding the browser secret of a login challenge.
pub const CHALLENGE_COOKIE: &str = "dialgate_challenge";
/// Cookie holding the session token.
pub const SESSION_COOKIE: &str = "dialgate_session";

/// Everything the HTTP side needs to know.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub login: LoginSettings,
    /// Mark cookies `Secure` (default). Turn off only for plain-HTTP development.
    pub secure_cookies: bool,
    /// Shared key for node-to-node signals; `None` disables `/v1/internal/signal` (404)
    /// and outgoing signals to other nodes.
    pub signal_key: Option<Vec<u8>>,
    /// This node's base URL as other nodes reach it (e.g. `http://10.0.0.5:8080`).
    /// When set it is recorded on this node's challenges (overrides `login.node_url`).
    pub node_url: Option<String>,
    /// Failed-login limits per client address and per account.
    pub login_rate: RateLimit,
    /// How often a waiting SSE stream re-reads the store in case a signal was lost.
    pub sse_poll: Duration,
    /// Key temporary passwords are HMAC'd with (shared by every node).
    pub temp_password_key: Vec<u8>,
    /// Whether the owner's long-term password may pay too (default yes).
    pub allow_long_term_payments: bool,
    /// Origins besides the page's own that may send cookie-authenticated state changes
    /// (`csrf`), normalised by [`csrf::normalize_origin`], e.g. `https://app.example.com`.
    pub allowed_origins: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            login: LoginSettings::default(),
            secure_cookies: true,
            signal_key: None,
            node_url: None,
            login_rate: RateLimit::default(),
            sse_poll: Duration::from_secs(2),
            temp_password_key: Vec::new(),
            allow_long_term_payments: true,
            allowed_origins: Vec::new(),
        }
    }
}

/// Shared state of every request.
pub struct Gateway {
    pub store: Store,
    pub config: GatewayConfig,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Argon2id runs at most this many at once.
    pub argon_permits: Arc<Semaphore>,
    pub limiter: Limiter,
    /// The PBX link for call-backs (`AmiClient::disabled()` when not configured).
    pub ami: AmiClient,
    pub callback: CallbackSettings,
    pub callback_limiter: CallbackLimiter,
    /// Call-backs placed and not yet judged by the `confirm` script (shared with it).
    pub callbacks: Arc<PendingCallbacks>,
    /// `/healthz`'s database ping, one at a time.
    health: health::Probe,
    closing: watch::Sender<bool>,
}

impl Gateway {
    /// `hub` must be the same one given to the FastAGI side as its `ChallengeSignal`,
    /// built with the same node URL and key as `config`.
    pub fn new(
        store: Store,
        mut config: GatewayConfig,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        if config.node_url.is_some() {
            config.login.node_url = config.node_url.clone();
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let limiter = Limiter::new(config.login_rate.clone());
        let callback = CallbackSettings::default();
        Gateway {
            store,
            config,
            hub,
            metrics,
            argon_permits: Arc::new(Semaphore::new(cpus)),
            limiter,
            ami: AmiClient::disabled(),
            callback_limiter: CallbackLimiter::new(&callback),
            callback,
            callbacks: Arc::new(PendingCallbacks::default()),
            health: health::Probe::default(),
            closing: watch::channel(false).0,
        }
    }

    /// Enables call-backs over `ami`; `callbacks` must be the registry the FastAGI
    /// `confirm` script was given.
    pub fn with_callback(
        mut self,
        ami: AmiClient,
        settings: CallbackSettings,
        callbacks: Arc<PendingCallbacks>,
    ) -> Gateway {
        self.callback_limiter = CallbackLimiter::new(&settings);
        self.callback = settings;
        self.ami = ami;
        self.callbacks = callbacks;
        self
    }

    /// Ends every open SSE stream (browsers reconnect, possibly to another node). Call it
    /// when shutting down: graceful shutdown waits for open responses, and a waiting
    /// stream otherwise lasts until its challenge expires.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Every route of the gateway.
pub fn router(state: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/login", post(api::login))
        .route("/v1/login/{id}", get(api::status))
        .route("/v1/login/{id}/events", get(api::events))
        .route("/v1/login/{id}/session", post(api::exchange))
        .route("/v1/login/{id}/callback", post(callback::request))
        .route("/v1/auth", get(api::forward_auth))
        .route("/v1/logout", post(api::logout))
        .route(SIGNAL_PATH, post(api::signal))
        .route(
            "/v1/temp-passwords",
            get(payments::list).post(payments::issue),
        )
        .route("/v1/temp-passwords/list", post(payments::list_post))
        .route(
            "/v1/temp-passwords/{id}/{change}",
            post(payments::change_state),
        )
        .route("/v1/payments", post(payments::pay))
        .route("/v1/balance", get(payments::balance))
        .route(OPENAPI_PATH, get(openapi::document))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(pages::metrics))
        .route("/", get(pages::index))
        .route("/app.js", get(pages::app_js))
        .route("/shared.js", get(pages::shared_js))
        .route("/style.css", get(pages::style_css))
        .route("/payments", get(pages::payments))
        .route("/payments.js", get(pages::payments_js))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf::guard,
        ))
        .layer(axum::middleware::map_response(pages::common_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves `router` on `listener` with the default [`HttpLimits`] until `shutdown`
/// completes, then finishes the requests in progress (call [`Gateway::close`] in
/// `shutdown` so SSE streams end too). `serve` itself uses [`serve_with`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, router, HttpLimits::DEFAULT, shutdown).await
}
