//! The FastAGI server: accepts Asterisk's connections, reads the environment block and
//! hands the call to the script registered under the URL's path.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use futures::StreamExt;
use ipnet::IpNet;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{codec::Framed, sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, info, warn, Instrument};

use super::{
    codec::{DEFAULT_MAX_ENV, DEFAULT_MAX_LINE},
    AgiCall, AgiCodec, Frame,
};

/// The channel variable every dialgate script sets for the dialplan.
pub const RESULT_VARIABLE: &str = "DIALGATE_RESULT";

pub type ScriptFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A FastAGI script: takes the call and runs its dialog. The connection closes (and the
/// dialplan continues) when the script returns and drops the call.
pub trait Script: Send + Sync + 'static {
    fn run(&self, call: AgiCall) -> ScriptFuture;
}

impl<F, Fut> Script for F
where
    F: Fn(AgiCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    fn run(&self, call: AgiCall) -> ScriptFuture {
        Box::pin(self(call))
    }
}

/// Scripts by name: `agi://host/verify?x=1` runs the script registered as `verify`.
#[derive(Clone, Default)]
pub struct Router {
    scripts: HashMap<String, Arc<dyn Script>>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    pub fn route(mut self, name: &str, script: impl Script) -> Router {
        self.scripts
            .insert(name.trim_matches('/').to_string(), Arc::new(script));
        self
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Script>> {
        self.scripts.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.scripts.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most calls handled at once; connections beyond it are closed at once so Asterisk
    /// fails over (AGISTATUS=FAILURE) instead of waiting.
    pub max_connections: usize,
    /// Time Asterisk has to send the whole environment block (slow-loris guard).
    pub env_timeout: Duration,
    pub max_line: usize,
    pub max_env: usize,
    /// Peers allowed to connect; empty means any (FastAGI has no authentication).
    pub allow: Vec<IpNet>,
    pub command_timeout: Duration,
    /// How long calls in flight may finish after a shutdown signal.
    pub grace_period: Duration,
}

impl ServerConfig {
    /// The defaults, stated once (`dialgate serve --help` shows them too).
    pub const DEFAULT: ServerConfig = ServerConfig {
        max_connections: 10_000,
        env_timeout: Duration::from_secs(5),
        max_line: DEFAULT_MAX_LINE,
        max_env: DEFAULT_MAX_ENV,
        allow: Vec::new(),
        command_timeout: super::call::DEFAULT_COMMAND_TIMEOUT,
        grace_period: Duration::from_secs(30),
    };
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::DEFAULT
    }
}

pub struct Server {
    listener: TcpListener,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
}

impl Server {
    pub async fn bind(
        addr: SocketAddr,
        router: Router,
        config: ServerConfig,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen for FastAGI on {addr}: {e}"),
            )
        })?;
        Ok(Server::from_listener(listener, router, config))
    }

    pub fn from_listener(listener: TcpListener, router: Router, config: ServerConfig) -> Server {
        Server {
            listener,
            router: Arc::new(router),
            config: Arc::new(config),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts calls until `shutdown` resolves, then stops accepting and lets calls in
    /// flight finish for the grace period before cutting them off.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let tracker = TaskTracker::new();
        let cut_off = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(self.config.max_connections));
        let mut backoff = AcceptBackoff::default();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => {
                    backoff.reset();
                    pair
                }
                Err(e) => {
                    if let Some(pause) = backoff.on_error(&e) {
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    continue;
                }
            };
            if !self.is_allowed(peer.ip()) {
                warn!(%peer, "FastAGI connection refused: peer not in the allow-list (--agi-allow)");
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                warn!(%peer, limit = self.config.max_connections,
                    "FastAGI connection closed: too many calls in progress");
                continue;
            };
            let router = self.router.clone();
            let config = self.config.clone();
            let cut_off = cut_off.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = handle_connection(stream, peer, router, config) => {}
                    _ = cut_off.cancelled() => {
                        warn!(%peer, "call cut off: shutdown grace period over");
                    }
                }
                drop(permit);
            });
        }
        drop(self.listener);
        tracker.close();
        if !tracker.is_empty() {
            info!(
                calls = tracker.len(),
                grace = ?self.config.grace_period,
                "FastAGI stopped accepting; waiting for calls in progress"
            );
        }
        if tokio::time::timeout(self.config.grace_period, tracker.wait())
            .await
            .is_err()
        {
            cut_off.cancel();
            tracker.wait().await;
        }
        info!("FastAGI server stopped");
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.config.allow.is_empty() || self.config.allow.iter().any(|net| net.contains(&ip))
    }
}

/// Pauses after accept() errors that repeat until something frees up (no file
/// descriptors, no buffers), so the loop neither exits nor spins.
#[derive(Default)]
struct AcceptBackoff {
    pause: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        if self.pause.take().is_some() {
            info!("FastAGI accepting connections again");
        }
    }

    fn on_error(&mut self, e: &io::Error) -> Option<Duration> {
        let resource_exhausted = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if !resource_exhausted {
            // Per-connection failures (ECONNABORTED, EPROTO...): the next accept is fine.
            debug!(error = %e, "FastAGI accept failed for one connection");
            return None;
        }
        let pause = match self.pause {
            None => {
                error!(error = %e,
                    "FastAGI cannot accept: out of file descriptors or memory; \
                     backing off and retrying (raise `ulimit -n` or --max-connections lower)");
                Self::FIRST
            }
            Some(p) => (p * 2).min(Self::MAX),
        };
        self.pause = Some(pause);
        Some(pause)
    }
}

/// Initial read buffer of a connection: a real environment block is ~600 bytes. (Framed's
/// default, 8 KiB for reading and 8 KiB for writing, dominated the memory of held calls;
/// the buffers grow on demand.)
const ENV_READ_BUFFER: usize = 1024;
/// Read buffer after the environment: room for a typical reply line (`200 result=1`).
const REPLY_READ_BUFFER: usize = 128;

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
) {
    let started = Instant::now();
    // Boxed, like the not-found answer below: this connection's future lives as long as
    // the call, and would otherwise keep room for every step's state all along.
    let Some(mut call) = Box::pin(read_environment(stream, peer, &config)).await else {
        return;
    };
    call.set_command_timeout(config.command_timeout);
    // In a block, so the names' buffers are freed before the call's long wait.
    let (span, script) = {
        let env = call.env();
        let script_name = env.script_path();
        let uniqueid = env.uniqueid().unwrap_or_default();
        let span = tracing::info_span!("agi", %peer, script = %script_name, %uniqueid);
        (span, router.get(&script_name))
    };
    async move {
        let Some(script) = script else {
            warn!(known = ?router.names(), "no FastAGI script by this name; answering DIALGATE_RESULT=notfound");
            Box::pin(answer_not_found(call)).await;
            return;
        };
        match script.run(call).await {
            Ok(()) => debug!(elapsed = ?started.elapsed(), "call finished"),
            Err(e) => warn!(elapsed = ?started.elapsed(), error = %format!("{e:#}"), "script failed"),
        }
    }
    .instrument(span)
    .await
}

async fn answer_not_found(mut call: AgiCall) {
    if let Err(e) = call.set_variable(RESULT_VARIABLE, "notfound").await {
        debug!(error = %e, "could not set DIALGATE_RESULT=notfound");
    }
    call.close().await;
}

/// Reads the environment block within `--env-timeout`; `None` (logged) when the peer did
/// not send a good one.
async fn read_environment(
    stream: TcpStream,
    peer: SocketAddr,
    config: &ServerConfig,
) -> Option<AgiCall> {
    let _ = stream.set_nodelay(true);
    // No write buffer until the first command; it then holds the longest line sent so
    // far. (Capacity 0 also means Framed flushes before taking each command, which
    // AgiCall, sending one command at a time and flushing it, does anyway.)
    let codec = AgiCodec::new(config.max_line, config.max_env);
    let mut framed = Framed::with_capacity(stream, codec, 0);
    *framed.read_buffer_mut() = BytesMut::with_capacity(ENV_READ_BUFFER);
    let env = match tokio::time::timeout(config.env_timeout, framed.next()).await {
        Ok(Some(Ok(Frame::Env(env)))) => env,
        Ok(Some(Ok(other))) => {
            warn!(%peer, frame = ?other, "FastAGI peer sent something other than an environment block; closing");
            return None;
        }
        Ok(Some(Err(e))) => {
            warn!(%peer, error = %e, "FastAGI peer sent a bad environment block; closing");
            return None;
        }
        Ok(None) => {
            debug!(%peer, "FastAGI peer connected and closed without sending anything");
            return None;
        }
        Err(_) => {
            warn!(%peer, timeout = ?config.env_timeout,
                "FastAGI peer did not send a complete environment block in time (slow or not Asterisk); closing");
            return None;
        }
    };
    // What follows the environment is one short reply line at a time: a held call keeps a
    // small read buffer instead of the environment's (it grows again for long replies).
    if framed.read_buffer().is_empty() {
        *framed.read_buffer_mut() = BytesMut::with_capacity(REPLY_READ_BUFFER);
    }
    Some(AgiCall::new(env, framed, peer))
}
