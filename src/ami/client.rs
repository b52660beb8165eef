//! The AMI client's handle: a cloneable [`AmiClient`] that sends actions to the
//! connection task (`connection`) and reads its link state and counters. The task logs
//! in before sending anything else, correlates responses and events with actions by
//! `ActionID`, pings on an interval, and reconnects with capped exponential backoff and
//! jitter.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime},
};

use tokio::{
    sync::{broadcast, mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    connection::{self, login_action, new_shared, Backoff, Expect, Reply, Request, Shared},
    originate::{Originate, OriginateOutcome},
    Action, CommandOutput, Message, ProtocolError,
};

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

/// The result of a list action: the response, the item events, and the final
/// `EventList: Complete` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventList {
    pub response: Message,
    pub events: Vec<Message>,
    pub complete: Option<Message>,
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
        tokio::spawn(connection::run(
            config.clone(),
            shared.clone(),
            rx,
            stop.clone(),
        ));
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
