//! A reconnecting AMI client. One background task owns the TCP connection: it logs in
//! before sending anything else, correlates responses and events with actions by
//! `ActionID`, pings on an interval, and reconnects with capped exponential backoff and
//! jitter. Callers talk to it through a cloneable [`AmiClient`] handle.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio::{
    net::TcpStream,
    sync::{broadcast, mpsc, oneshot, watch},
    time::{Instant, MissedTickBehavior},
};
use tokio_util::{codec::Framed, sync::CancellationToken};
use tracing::{debug, info, warn};

use super::{Action, AmiCodec, CommandOutput, Frame, Kind, Message, ProtocolError};

/// How long to wait before each reconnection attempt: `min * 2^n`, capped at `max`,
/// with jitter (the delay is drawn from its upper half, and never below `min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let min = self.min.max(Duration::from_millis(1));
        let max = self.max.max(min);
        let base = min
            .checked_mul(1u32 << attempt.min(20))
            .unwrap_or(max)
            .min(max);
        let half = base / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_micros() as u64);
        (half + Duration::from_micros(jitter)).max(min)
    }
}

#[derive(Debug, Clone)]
pub struct AmiConfig {
    /// `host:port` of Asterisk's manager interface.
    pub address: String,
    pub username: String,
    pub secret: String,
    /// `true` logs in with `Events: on`; `false` with `Events: call`, the least that
    /// still delivers `OriginateResponse` (with `Events: off` an async Originate's
    /// outcome would never arrive).
    pub events: bool,
    /// Keep-alive `Ping` interval; a Ping still unanswered at the next one is a dead link.
    pub ping_interval: Duration,
    /// Time allowed for connecting, the banner, the login and each action's response.
    pub action_timeout: Duration,
    pub reconnect: Backoff,
}

impl AmiConfig {
    pub fn new(address: &str, username: &str, secret: &str) -> AmiConfig {
        AmiConfig {
            address: address.to_string(),
            username: username.to_string(),
            secret: secret.to_string(),
            events: true,
            ping_interval: Duration::from_secs(20),
            action_timeout: Duration::from_secs(10),
            reconnect: Backoff::default(),
        }
    }
}

/// The link as health checks report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Connected {
        since: SystemTime,
    },
    /// Not logged in (yet, or any more); `since` is when the link was last lost (or the
    /// client started).
    Reconnecting {
        since: SystemTime,
    },
    /// No AMI configured, or logged off.
    Disabled,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AmiError {
    #[error("AMI link down: {0}")]
    LinkDown(String),
    #[error("AMI login refused by Asterisk: {0} (check the manager.conf user, secret and permit)")]
    LoginFailed(String),
    #[error("AMI action {action} refused by Asterisk: {message}")]
    Refused {
        action: String,
        message: String,
        response: Box<Message>,
    },
    #[error("no answer to AMI action {action} within {timeout:?}")]
    Timeout { action: String, timeout: Duration },
    #[error("AMI is disabled")]
    Disabled,
    #[error("AMI protocol error: {0}")]
    Protocol(Arc<ProtocolError>),
    #[error("cannot connect to AMI at {address}: {message}")]
    Connect { address: String, message: String },
    #[error("AMI connection closed by Asterisk")]
    Closed,
    #[error("no pong to the AMI keep-alive Ping within {0:?}")]
    MissedPong(Duration),
    #[error("invalid AMI request: {0}")]
    Invalid(String),
}

impl From<ProtocolError> for AmiError {
    fn from(e: ProtocolError) -> Self {
        AmiError::Protocol(Arc::new(e))
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AmiStats {
    pub connect_attempts: u64,
    /// Successful logins, the first included.
    pub logins: u64,
    pub login_failures: u64,
    /// Established links lost (closed, protocol error, missed pong).
    pub link_drops: u64,
    pub missed_pongs: u64,
}

impl AmiStats {
    /// Successful logins after the first.
    pub fn reconnects(&self) -> u64 {
        self.logins.saturating_sub(1)
    }
}

#[derive(Default)]
struct Counters {
    connect_attempts: AtomicU64,
    logins: AtomicU64,
    login_failures: AtomicU64,
    link_drops: AtomicU64,
    missed_pongs: AtomicU64,
}

struct Shared {
    state: watch::Sender<LinkState>,
    last_error: Mutex<Option<AmiError>>,
    version: Mutex<Option<String>>,
    counters: Counters,
    events: broadcast::Sender<Message>,
}

impl Shared {
    fn set_error(&self, e: AmiError) {
        *self.last_error.lock().unwrap() = Some(e);
    }

    fn down_reason(&self) -> String {
        match &*self.last_error.lock().unwrap() {
            Some(e) => e.to_string(),
            None => "not connected yet".into(),
        }
    }
}

/// The result of a list action: the response, the item events, and the final
/// `EventList: Complete` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventList {
    pub response: Message,
    pub events: Vec<Message>,
    pub complete: Option<Message>,
}

/// Where an originated call goes once answered: a dialplan location or an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originate {
    /// e.g. `PJSIP/+15550100@carrier`.
    pub channel: String,
    pub context: Option<String>,
    pub exten: Option<String>,
    pub priority: Option<u32>,
    pub application: Option<String>,
    pub data: Option<String>,
    /// Ring time in milliseconds (Asterisk's default is 30000).
    pub timeout_ms: u64,
    pub caller_id: Option<String>,
    /// Channel variables, each sent as its own `Variable: name=value` line.
    pub variables: Vec<(String, String)>,
    pub account: Option<String>,
    pub channel_id: Option<String>,
}

impl Default for Originate {
    fn default() -> Self {
        Originate {
            channel: String::new(),
            context: None,
            exten: None,
            priority: None,
            application: None,
            data: None,
            timeout_ms: 30_000,
            caller_id: None,
            variables: Vec::new(),
            account: None,
            channel_id: None,
        }
    }
}

impl Originate {
    /// The action, always `Async: true`.
    pub fn to_action(&self) -> Result<Action, AmiError> {
        if self.channel.is_empty() {
            return Err(AmiError::Invalid("Originate needs a channel".into()));
        }
        let dialplan = self.context.is_some() || self.exten.is_some();
        if dialplan == self.application.is_some() {
            return Err(AmiError::Invalid(
                "Originate needs either context/exten/priority or an application".into(),
            ));
        }
        let mut action = Action::new("Originate").field("Channel", &self.channel);
        let optional = [
            ("Context", self.context.clone()),
            ("Exten", self.exten.clone()),
            ("Priority", self.priority.map(|p| p.to_string())),
            ("Application", self.application.clone()),
            ("Data", self.data.clone()),
            ("Timeout", Some(self.timeout_ms.to_string())),
            ("CallerID", self.caller_id.clone()),
            ("Account", self.account.clone()),
            ("ChannelId", self.channel_id.clone()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                action.push(key, value);
            }
        }
        for (name, value) in &self.variables {
            if name.is_empty() || name.contains('=') {
                return Err(AmiError::Invalid(format!(
                    "Originate variable name {name:?} is empty or contains `=`"
                )));
            }
            action.push("Variable", format!("{name}={value}"));
        }
        action.push("Async", "true");
        action.validate()?;
        Ok(action)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginateResult {
    Success,
    Failure,
}

/// The `OriginateResponse` event of an async Originate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateOutcome {
    pub response: OriginateResult,
    /// 0 failed / no such channel, 1 hung up, 3 ringing / no answer, 4 answered,
    /// 5 busy, 8 congestion (Asterisk's `AST_CONTROL_*` values).
    pub reason: i32,
    pub channel: Option<String>,
    pub uniqueid: Option<String>,
    pub event: Message,
}

impl OriginateOutcome {
    fn from_event(event: Message) -> OriginateOutcome {
        let response = match event.get("Response") {
            Some(r) if r.eq_ignore_ascii_case("Success") => OriginateResult::Success,
            _ => OriginateResult::Failure,
        };
        let reason = event
            .get("Reason")
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or(0);
        let text = |k: &str| {
            event
                .get(k)
                .filter(|v| !v.is_empty() && *v != "<null>")
                .map(str::to_string)
        };
        OriginateOutcome {
            response,
            reason,
            channel: text("Channel"),
            uniqueid: text("Uniqueid"),
            event,
        }
    }

    pub fn answered(&self) -> bool {
        self.response == OriginateResult::Success && self.reason == 4
    }

    pub fn reason_text(&self) -> &'static str {
        match self.reason {
            0 => "failed",
            1 => "hung up",
            3 => "no answer",
            4 => "answered",
            5 => "busy",
            8 => "congestion",
            _ => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Response,
    List,
    Originate,
    Logoff,
}

enum Reply {
    Response(Message),
    List(EventList),
    Originate(Message),
}

struct Request {
    action: Action,
    expect: Expect,
    reply: oneshot::Sender<Result<Reply, AmiError>>,
}

/// A cloneable handle on the connection task; the task stops when the last handle is
/// dropped.
#[derive(Clone)]
pub struct AmiClient {
    inner: Arc<Inner>,
}

struct Inner {
    requests: Option<mpsc::Sender<Request>>,
    shared: Arc<Shared>,
    action_timeout: Duration,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for AmiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmiClient")
            .field("state", &self.state())
            .finish()
    }
}

impl AmiClient {
    /// Starts the connection task (on the current tokio runtime) and returns at once;
    /// see [`AmiClient::wait_connected`]. Actions sent before the login succeeds wait
    /// for it (up to their timeout).
    pub fn connect(
        config: AmiConfig,
    ) -> Result<(AmiClient, broadcast::Receiver<Message>), AmiError> {
        if config.address.is_empty() || config.username.is_empty() {
            return Err(AmiError::Invalid(
                "AMI needs an address and a username".into(),
            ));
        }
        login_action(&config, "check".into()).validate()?;
        let (shared, events) = new_shared(LinkState::Reconnecting {
            since: SystemTime::now(),
        });
        let (tx, rx) = mpsc::channel(1024);
        let stop = CancellationToken::new();
        tokio::spawn(run(config.clone(), shared.clone(), rx, stop.clone()));
        let client = AmiClient {
            inner: Arc::new(Inner {
                requests: Some(tx),
                shared,
                action_timeout: config.action_timeout,
                stop,
            }),
        };
        Ok((client, events))
    }

    /// A client for when no AMI is configured: `Disabled`, every action fails.
    pub fn disabled() -> AmiClient {
        let (shared, _) = new_shared(LinkState::Disabled);
        AmiClient {
            inner: Arc::new(Inner {
                requests: None,
                shared,
                action_timeout: Duration::from_secs(1),
                stop: CancellationToken::new(),
            }),
        }
    }

    pub fn state(&self) -> LinkState {
        self.inner.shared.state.borrow().clone()
    }

    /// Why the link is (or last was) down, or the last login failure.
    pub fn last_error(&self) -> Option<AmiError> {
        self.inner.shared.last_error.lock().unwrap().clone()
    }

    /// The AMI version from Asterisk's banner, once connected.
    pub fn version(&self) -> Option<String> {
        self.inner.shared.version.lock().unwrap().clone()
    }

    pub fn stats(&self) -> AmiStats {
        let c = &self.inner.shared.counters;
        AmiStats {
            connect_attempts: c.connect_attempts.load(Ordering::Relaxed),
            logins: c.logins.load(Ordering::Relaxed),
            login_failures: c.login_failures.load(Ordering::Relaxed),
            link_drops: c.link_drops.load(Ordering::Relaxed),
            missed_pongs: c.missed_pongs.load(Ordering::Relaxed),
        }
    }

    /// Another receiver of every event Asterisk sends (from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.inner.shared.events.subscribe()
    }

    /// Waits until logged in; on timeout returns why it is not (e.g. `LoginFailed`).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), AmiError> {
        let mut rx = self.inner.shared.state.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|s| !matches!(s, LinkState::Reconnecting { .. }))
                .await
                .map(|s| s.clone())
        })
        .await;
        match waited {
            Ok(Ok(LinkState::Connected { .. })) => Ok(()),
            Ok(_) => Err(AmiError::Disabled),
            Err(_) => Err(self.last_error().unwrap_or(AmiError::Timeout {
                action: "Login".into(),
                timeout,
            })),
        }
    }

    async fn request(
        &self,
        action: Action,
        expect: Expect,
        timeout: Duration,
    ) -> Result<Reply, AmiError> {
        action.validate()?;
        let Some(requests) = &self.inner.requests else {
            return Err(AmiError::Disabled);
        };
        let name = action.name().to_string();
        let (reply, rx) = oneshot::channel();
        let request = Request {
            action,
            expect,
            reply,
        };
        let deadline = Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, requests.send(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(AmiError::Disabled),
            Err(_) => return Err(self.timeout_error(name, timeout)),
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AmiError::Disabled),
            Err(_) => Err(self.timeout_error(name, timeout)),
        }
    }

    fn timeout_error(&self, action: String, timeout: Duration) -> AmiError {
        match self.state() {
            LinkState::Connected { .. } => AmiError::Timeout { action, timeout },
            LinkState::Reconnecting { .. } => AmiError::LinkDown(self.inner.shared.down_reason()),
            LinkState::Disabled => AmiError::Disabled,
        }
    }

    /// Sends an action and returns its response; `Response: Error` is [`AmiError::Refused`].
    pub async fn send(&self, action: Action) -> Result<Message, AmiError> {
        match self
            .request(action, Expect::Response, self.inner.action_timeout)
            .await?
        {
            Reply::Response(m) => Ok(m),
            Reply::List(l) => Ok(l.response),
            Reply::Originate(m) => Ok(m),
        }
    }

    /// Sends a list action (`CoreShowChannels`, `Status`, ...) and collects its events
    /// up to `EventList: Complete`.
    pub async fn send_list(&self, action: Action) -> Result<EventList, AmiError> {
        match self
            .request(action, Expect::List, self.inner.action_timeout)
            .await?
        {
            Reply::List(l) => Ok(l),
            Reply::Response(m) | Reply::Originate(m) => Ok(EventList {
                response: m,
                events: Vec::new(),
                complete: None,
            }),
        }
    }

    /// Places a call with `Async: true` and waits for its `OriginateResponse` (up to the
    /// ring timeout plus the action timeout).
    pub async fn originate(&self, originate: Originate) -> Result<OriginateOutcome, AmiError> {
        let action = originate.to_action()?;
        let timeout = Duration::from_millis(originate.timeout_ms) + self.inner.action_timeout;
        match self.request(action, Expect::Originate, timeout).await? {
            Reply::Originate(event) => Ok(OriginateOutcome::from_event(event)),
            Reply::Response(m) | Reply::List(EventList { response: m, .. }) => {
                Ok(OriginateOutcome::from_event(m))
            }
        }
    }

    pub async fn hangup(&self, channel: &str, cause: Option<u32>) -> Result<Message, AmiError> {
        let mut action = Action::new("Hangup").field("Channel", channel);
        if let Some(cause) = cause {
            action.push("Cause", cause.to_string());
        }
        self.send(action).await
    }

    /// Runs a CLI command; works with both reply formats (Asterisk <= 13 and >= 14).
    pub async fn command(&self, cli: &str) -> Result<CommandOutput, AmiError> {
        let response = self
            .send(Action::new("Command").field("Command", cli))
            .await?;
        Ok(CommandOutput::from_message(&response))
    }

    /// One `Ping`; accepts `Ping: Pong` and the old `Response: Pong`.
    pub async fn ping(&self) -> Result<Message, AmiError> {
        self.send(Action::new("Ping")).await
    }

    /// Logs off (`Response: Goodbye`) and stops the client: the state becomes `Disabled`.
    pub async fn logoff(&self) -> Result<(), AmiError> {
        self.request(
            Action::new("Logoff"),
            Expect::Logoff,
            self.inner.action_timeout,
        )
        .await
        .map(|_| ())
    }
}

fn new_shared(state: LinkState) -> (Arc<Shared>, broadcast::Receiver<Message>) {
    let (events, rx) = broadcast::channel(1024);
    let shared = Shared {
        state: watch::Sender::new(state),
        last_error: Mutex::new(None),
        version: Mutex::new(None),
        counters: Counters::default(),
        events,
    };
    (Arc::new(shared), rx)
}

fn login_action(config: &AmiConfig, id: String) -> Action {
    Action::new("Login")
        .with_action_id(id)
        .field("Username", &config.username)
        .field("Secret", &config.secret)
        .field("Events", if config.events { "on" } else { "call" })
}

/// Unique ActionIDs: a random per-client prefix and a counter.
struct Ids {
    prefix: String,
    next: u64,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            prefix: format!("dg{:08x}", rand::thread_rng().gen::<u32>()),
            next: 1,
        }
    }

    fn next(&mut self) -> String {
        let id = format!("{}-{}", self.prefix, self.next);
        self.next += 1;
        id
    }
}

type Link = Framed<TcpStream, AmiCodec>;

struct Pending {
    action: String,
    expect: Expect,
    reply: oneshot::Sender<Result<Reply, AmiError>>,
    response: Option<Message>,
    events: Vec<Message>,
    /// An `OriginateResponse` that overtook the `queued` response.
    early: Option<Message>,
}

enum End {
    /// Every handle was dropped.
    Stopped,
    LoggedOff,
}

async fn run(
    config: AmiConfig,
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<Request>,
    stop: CancellationToken,
) {
    let mut ids = Ids::new();
    let mut failures: u32 = 0;
    let mut first = true;
    loop {
        if !first {
            let delay = config.reconnect.delay(failures.saturating_sub(1));
            debug!(?delay, "AMI reconnecting after backoff");
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        first = false;
        shared
            .counters
            .connect_attempts
            .fetch_add(1, Ordering::Relaxed);
        let link = tokio::select! {
            _ = stop.cancelled() => break,
            link = connect_and_login(&config, &shared, &mut ids) => link,
        };
        let link = match link {
            Ok(link) => link,
            Err(e) => {
                if matches!(e, AmiError::LoginFailed(_)) {
                    shared
                        .counters
                        .login_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                warn!(address = %config.address, error = %e, "AMI connection failed");
                shared.set_error(e);
                failures = failures.saturating_add(1);
                continue;
            }
        };
        shared.counters.logins.fetch_add(1, Ordering::Relaxed);
        info!(address = %config.address, version = ?shared.version.lock().unwrap(), "AMI logged in");
        let up = Instant::now();
        shared.state.send_replace(LinkState::Connected {
            since: SystemTime::now(),
        });
        let mut pending = HashMap::new();
        let end = connected(
            link,
            &config,
            &shared,
            &mut ids,
            &mut requests,
            &mut pending,
            &stop,
        )
        .await;
        let reason = match &end {
            Ok(End::Stopped) => "client stopped".to_string(),
            Ok(End::LoggedOff) => "logged off".to_string(),
            Err(e) => e.to_string(),
        };
        for (_, p) in pending.drain() {
            let _ = p.reply.send(Err(AmiError::LinkDown(reason.clone())));
        }
        match end {
            Ok(_) => break,
            Err(e) => {
                warn!(address = %config.address, error = %e, "AMI link lost");
                shared.counters.link_drops.fetch_add(1, Ordering::Relaxed);
                if matches!(e, AmiError::MissedPong(_)) {
                    shared.counters.missed_pongs.fetch_add(1, Ordering::Relaxed);
                }
                shared.set_error(e);
                shared.state.send_replace(LinkState::Reconnecting {
                    since: SystemTime::now(),
                });
                // A link that stayed up a while starts the backoff over.
                if up.elapsed() >= Duration::from_secs(30) {
                    failures = 0;
                }
                failures = failures.saturating_add(1);
            }
        }
    }
    shared.state.send_replace(LinkState::Disabled);
    requests.close();
    while let Ok(r) = requests.try_recv() {
        let _ = r.reply.send(Err(AmiError::Disabled));
    }
}

/// The next message from Asterisk within `timeout`.
async fn next_message(link: &mut Link, timeout: Duration) -> Result<Message, AmiError> {
    loop {
        match tokio::time::timeout(timeout, link.next()).await {
            Err(_) => {
                return Err(AmiError::Timeout {
                    action: "Login".into(),
                    timeout,
                })
            }
            Ok(None) => return Err(AmiError::Closed),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(Frame::Banner(_)))) => continue,
            Ok(Some(Ok(Frame::Message(m)))) => return Ok(m),
        }
    }
}

async fn connect_and_login(
    config: &AmiConfig,
    shared: &Shared,
    ids: &mut Ids,
) -> Result<Link, AmiError> {
    let timeout = config.action_timeout;
    let connect_error = |message: String| AmiError::Connect {
        address: config.address.clone(),
        message,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(&config.address))
        .await
        .map_err(|_| connect_error(format!("no connection within {timeout:?}")))?
        .map_err(|e| connect_error(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let mut link = Framed::new(stream, AmiCodec::default());
    let version = match tokio::time::timeout(timeout, link.next()).await {
        Err(_) => return Err(connect_error(format!("no banner within {timeout:?}"))),
        Ok(None) => return Err(AmiError::Closed),
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(Some(Ok(Frame::Banner(v)))) => v,
        Ok(Some(Ok(Frame::Message(_)))) => unreachable!("the codec reads the banner first"),
    };
    *shared.version.lock().unwrap() = Some(version);
    let id = ids.next();
    write(&mut link, &login_action(config, id.clone()), timeout)
        .await
        .map_err(|e| AmiError::LinkDown(e.to_string()))?;
    loop {
        let message = match next_message(&mut link, timeout).await {
            // Asterisk closes after refusing a login; some versions close without a reply.
            Err(AmiError::Closed) => {
                return Err(AmiError::LoginFailed(
                    "connection closed during login".into(),
                ))
            }
            other => other?,
        };
        if message.kind() != Kind::Response || message.action_id() != Some(&id) {
            debug!(?message, "AMI message before the login response ignored");
            continue;
        }
        if message
            .response()
            .is_some_and(|r| r.eq_ignore_ascii_case("Success"))
        {
            return Ok(link);
        }
        let text = message
            .get("Message")
            .unwrap_or("no reason given")
            .to_string();
        return Err(AmiError::LoginFailed(text));
    }
}

async fn connected(
    mut link: Link,
    config: &AmiConfig,
    shared: &Shared,
    ids: &mut Ids,
    requests: &mut mpsc::Receiver<Request>,
    pending: &mut HashMap<String, Pending>,
    stop: &CancellationToken,
) -> Result<End, AmiError> {
    let interval = config.ping_interval.max(Duration::from_millis(10));
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ping_out: Option<String> = None;
    let mut logging_off = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(End::Stopped),
            frame = link.next() => match frame {
                // Some versions close right after (or instead of) `Response: Goodbye`.
                None | Some(Err(_)) if logging_off => {
                    for p in take_logoffs(pending) {
                        let _ = p.reply.send(Ok(Reply::Response(Message::default())));
                    }
                    return Ok(End::LoggedOff);
                }
                None => return Err(AmiError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Frame::Banner(_))) => {}
                Some(Ok(Frame::Message(m))) => {
                    if m.kind() == Kind::Response && m.action_id().is_some()
                        && m.action_id() == ping_out.as_deref()
                    {
                        ping_out = None;
                        continue;
                    }
                    if dispatch(m, shared, pending) {
                        return Ok(End::LoggedOff);
                    }
                }
            },
            request = requests.recv() => {
                let Some(mut request) = request else {
                    return Ok(End::Stopped);
                };
                if request.reply.is_closed() {
                    continue;
                }
                let id = ids.next();
                request.action.set_action_id(id.clone());
                logging_off |= request.expect == Expect::Logoff;
                match write(&mut link, &request.action, config.action_timeout).await {
                    Ok(()) => {
                        pending.insert(id, Pending {
                            action: request.action.name().to_string(),
                            expect: request.expect,
                            reply: request.reply,
                            response: None,
                            events: Vec::new(),
                            early: None,
                        });
                    }
                    Err(ProtocolError::Io(e)) => {
                        let e = AmiError::LinkDown(e.to_string());
                        let _ = request.reply.send(Err(e.clone()));
                        return Err(e);
                    }
                    Err(e) => {
                        let _ = request.reply.send(Err(e.into()));
                    }
                }
            }
            _ = ping.tick() => {
                pending.retain(|_, p| !p.reply.is_closed());
                if ping_out.is_some() {
                    return Err(AmiError::MissedPong(interval));
                }
                let id = ids.next();
                let ping = Action::new("Ping").with_action_id(id.clone());
                write(&mut link, &ping, config.action_timeout)
                    .await
                    .map_err(|e| AmiError::LinkDown(e.to_string()))?;
                ping_out = Some(id);
            }
        }
    }
}

/// Writes one action; a peer that stops reading for `timeout` is a dead link.
async fn write(link: &mut Link, action: &Action, timeout: Duration) -> Result<(), ProtocolError> {
    match tokio::time::timeout(timeout, link.send(action)).await {
        Ok(result) => result,
        Err(_) => Err(ProtocolError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("write stalled for {timeout:?}"),
        ))),
    }
}

/// The pending Logoff, answered by the connection closing.
fn take_logoffs(pending: &mut HashMap<String, Pending>) -> Vec<Pending> {
    let ids: Vec<String> = pending
        .iter()
        .filter(|(_, p)| p.expect == Expect::Logoff)
        .map(|(id, _)| id.clone())
        .collect();
    ids.iter().filter_map(|id| pending.remove(id)).collect()
}

/// Routes one message; returns true once a Logoff is answered.
fn dispatch(message: Message, shared: &Shared, pending: &mut HashMap<String, Pending>) -> bool {
    let kind = message.kind();
    if kind == Kind::Event {
        let _ = shared.events.send(message.clone());
    }
    let Some(id) = message.action_id().map(str::to_string) else {
        if kind != Kind::Event {
            debug!(?message, "AMI message without ActionID ignored");
        }
        return false;
    };
    let Some(p) = pending.get_mut(&id) else {
        if kind == Kind::Response {
            debug!(?message, "AMI response to no pending action ignored");
        }
        return false;
    };
    match kind {
        Kind::Response => {
            if message.is_error_response() {
                let p = pending.remove(&id).unwrap();
                let mut text = message
                    .get("Message")
                    .unwrap_or("no reason given")
                    .to_string();
                let output = CommandOutput::from_message(&message);
                if !output.0.is_empty() {
                    text = format!("{text}: {}", output.text());
                }
                let _ = p.reply.send(Err(AmiError::Refused {
                    action: p.action,
                    message: text,
                    response: Box::new(message),
                }));
                return false;
            }
            match p.expect {
                Expect::Response => {
                    let p = pending.remove(&id).unwrap();
                    let _ = p.reply.send(Ok(Reply::Response(message)));
                }
                Expect::Logoff => {
                    let p = pending.remove(&id).unwrap();
                    let _ = p.reply.send(Ok(Reply::Response(message)));
                    return true;
                }
                Expect::List => {
                    let starts = message
                        .event_list()
                        .is_some_and(|v| v.eq_ignore_ascii_case("start"));
                    if starts {
                        p.response = Some(message);
                    } else {
                        let p = pending.remove(&id).unwrap();
                        let _ = p.reply.send(Ok(Reply::List(EventList {
                            response: message,
                            events: Vec::new(),
                            complete: None,
                        })));
                    }
                }
                Expect::Originate => {
                    if let Some(event) = p.early.take() {
                        let p = pending.remove(&id).unwrap();
                        let _ = p.reply.send(Ok(Reply::Originate(event)));
                    } else {
                        p.response = Some(message);
                    }
                }
            }
        }
        Kind::Event => match p.expect {
            Expect::List => {
                let complete = message
                    .event_list()
                    .is_some_and(|v| v.eq_ignore_ascii_case("Complete"));
                if complete {
                    let p = pending.remove(&id).unwrap();
                    let _ = p.reply.send(Ok(Reply::List(EventList {
                        response: p.response.unwrap_or_default(),
                        events: p.events,
                        complete: Some(message),
                    })));
                } else {
                    p.events.push(message);
                }
            }
            Expect::Originate
                if message
                    .event()
                    .is_some_and(|e| e.eq_ignore_ascii_case("OriginateResponse")) =>
            {
                if p.response.is_some() {
                    let p = pending.remove(&id).unwrap();
                    let _ = p.reply.send(Ok(Reply::Originate(message)));
                } else {
                    p.early = Some(message);
                }
            }
            _ => {}
        },
        Kind::Action | Kind::Unknown => {}
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_jittered_and_never_below_min() {
        let b = Backoff {
            min: Duration::from_millis(200),
            max: Duration::from_secs(5),
        };
        for attempt in 0..40 {
            let d = b.delay(attempt);
            assert!(d >= b.min && d <= b.max, "{attempt}: {d:?}");
        }
        assert!(b.delay(3) >= Duration::from_millis(800));
        let zero = Backoff {
            min: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert!(zero.delay(0) >= Duration::from_millis(1));
    }

    #[test]
    fn originate_action_is_always_async_with_repeated_variables() {
        let o = Originate {
            channel: "PJSIP/+15550100@carrier".into(),
            context: Some("dialgate-callback".into()),
            exten: Some("s".into()),
            priority: Some(1),
            caller_id: Some("\"dialgate\" <+15550199>".into()),
            variables: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            ..Originate::default()
        };
        let action = o.to_action().unwrap();
        let lines: Vec<_> = action.lines().collect();
        assert_eq!(lines.last(), Some(&("Async", "true")));
        assert!(lines.contains(&("Variable", "A=1")));
        assert!(lines.contains(&("Variable", "B=x=y")));
        assert!(lines.contains(&("Timeout", "30000")));
        let both = Originate {
            application: Some("Playback".into()),
            ..o.clone()
        };
        assert!(matches!(both.to_action(), Err(AmiError::Invalid(_))));
        let bad_name = Originate {
            variables: vec![("A=B".into(), "1".into())],
            ..o.clone()
        };
        assert!(matches!(bad_name.to_action(), Err(AmiError::Invalid(_))));
        let injected = Originate {
            variables: vec![("A".into(), "1\r\nAction: Command".into())],
            ..o
        };
        assert!(matches!(injected.to_action(), Err(AmiError::Protocol(_))));
    }

    #[test]
    fn outcome_from_event() {
        let event = Message::new(vec![
            ("Event".into(), "OriginateResponse".into()),
            ("Response".into(), "Failure".into()),
            ("Channel".into(), "PJSIP/1@c".into()),
            ("Reason".into(), "5".into()),
            ("Uniqueid".into(), "<null>".into()),
        ]);
        let o = OriginateOutcome::from_event(event);
        assert_eq!(o.response, OriginateResult::Failure);
        assert_eq!(o.reason, 5);
        assert_eq!(o.reason_text(), "busy");
        assert_eq!(o.uniqueid, None);
        assert!(!o.answered());
    }
}
