//! The connection task behind an [`AmiClient`](super::AmiClient): one task owns the TCP
//! connection. It logs in before sending anything else, correlates responses, EventLists
//! and `OriginateResponse` events with actions by `ActionID`, broadcasts every event,
//! pings on an interval (a Ping still unanswered at the next one is a dead link), and
//! reconnects with capped exponential backoff and jitter, keeping the `LinkState` and
//! the counters up to date.

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

use super::{
    client::{AmiConfig, AmiError, EventList, LinkState},
    Action, AmiCodec, CommandOutput, Frame, Kind, Message, ProtocolError,
};

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

#[derive(Default)]
pub(super) struct Counters {
    pub(super) connect_attempts: AtomicU64,
    pub(super) logins: AtomicU64,
    pub(super) login_failures: AtomicU64,
    pub(super) link_drops: AtomicU64,
    pub(super) missed_pongs: AtomicU64,
}

pub(super) struct Shared {
    pub(super) state: watch::Sender<LinkState>,
    pub(super) last_error: Mutex<Option<AmiError>>,
    pub(super) version: Mutex<Option<String>>,
    pub(super) counters: Counters,
    pub(super) events: broadcast::Sender<Message>,
}

impl Shared {
    fn set_error(&self, e: AmiError) {
        *self.last_error.lock().unwrap() = Some(e);
    }

    pub(super) fn down_reason(&self) -> String {
        match &*self.last_error.lock().unwrap() {
            Some(e) => e.to_string(),
            None => "not connected yet".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Response,
    List,
    Originate,
    Logoff,
}

pub(super) enum Reply {
    Response(Message),
    List(EventList),
    Originate(Message),
}

pub(super) struct Request {
    pub(super) action: Action,
    pub(super) expect: Expect,
    pub(super) reply: oneshot::Sender<Result<Reply, AmiError>>,
}

pub(super) fn new_shared(state: LinkState) -> (Arc<Shared>, broadcast::Receiver<Message>) {
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

pub(super) fn login_action(config: &AmiConfig, id: String) -> Action {
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

pub(super) async fn run(
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
}
