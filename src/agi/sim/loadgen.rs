//! A lean Asterisk peer for load generation (`dialgate loadtest agi`).
//!
//! Same replies as [`super::peer`] (`channel`: res_agi's answers for a silent
//! channel), but built
//! to place tens of thousands of calls a second from a core shared with the server: the
//! environment block is rendered from a template, one buffer per call, no transcript,
//! one timer per call, and the common commands (`SET VARIABLE`, `ANSWER`) answered
//! without the full command parser.

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpSocket, TcpStream},
};

use super::{channel::Channel, is_reset, CallSpec, MAX_SERVER_LINE};
use crate::lines::{LineReader, ReadLineError};

/// Placeholder bytes in the template (never valid in an environment line).
const CALLER_SLOT: u8 = 0x01;
const UNIQUEID_SLOT: u8 = 0x02;

/// An environment block with the caller number and unique id left open.
#[derive(Debug, Clone)]
pub struct EnvTemplate {
    bytes: Vec<u8>,
}

impl EnvTemplate {
    /// The block `spec` would send to `target`, with `caller` and `uniqueid` filled in
    /// per call by [`EnvTemplate::render`]. `spec.caller` and `spec.uniqueid` are ignored.
    pub fn new(spec: &CallSpec, target: SocketAddr) -> EnvTemplate {
        let spec = CallSpec {
            caller: Some(char::from(CALLER_SLOT).to_string()),
            uniqueid: char::from(UNIQUEID_SLOT).to_string(),
            ..spec.clone()
        };
        EnvTemplate {
            bytes: spec.env_block(&target.ip().to_string(), target.port()),
        }
    }

    /// Appends the block for one call to `out`; `None` sends the caller as `unknown`.
    pub fn render(&self, caller: Option<&str>, uniqueid: &str, out: &mut Vec<u8>) {
        out.reserve(self.bytes.len() + 32);
        for &b in &self.bytes {
            match b {
                CALLER_SLOT => out.extend_from_slice(caller.unwrap_or("unknown").as_bytes()),
                UNIQUEID_SLOT => out.extend_from_slice(uniqueid.as_bytes()),
                _ => out.push(b),
            }
        }
    }
}

/// How the simulated caller behaves on every call of a run.
#[derive(Debug, Clone)]
pub struct LeanOptions {
    /// Channel name, for `HANGUP <channel>` and `GET VARIABLE CHANNEL`.
    pub channel: String,
    /// What the caller types for GET DATA / WAIT FOR DIGIT (`#` ends an entry).
    pub digits: Option<String>,
    /// Delay the reply to the server's first command by this long, keeping the call
    /// (and the server's state for it) open: a caller slow to type in GET DATA.
    pub hold: Duration,
    /// Bounds the whole call, on top of `hold`.
    pub timeout: Duration,
    /// Local address to connect from (spreads loopback calls over 127.0.0.x).
    pub source_ip: Option<IpAddr>,
}

/// What one call ended with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeanOutcome {
    /// The last `DIALGATE_RESULT` value set.
    pub result: Option<String>,
    pub commands: u32,
    pub hung_up: bool,
}

/// Why a call failed; [`LoadError::kind`] is a short key for counting.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("no close from the server within {0:?}")]
    Timeout(Duration),
    #[error("the server sent a line longer than {MAX_SERVER_LINE} bytes")]
    LineTooLong,
    #[error("connection error after {commands} commands: {source}")]
    Io {
        commands: u32,
        source: std::io::Error,
    },
}

impl LoadError {
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connect_refused"
            }
            LoadError::Connect(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                "connect_no_local_port"
            }
            LoadError::Connect(_) => "connect",
            LoadError::Timeout(_) => "timeout",
            LoadError::LineTooLong => "line_too_long",
            LoadError::Io { .. } => "io",
        }
    }
}

/// Places one call: sends `env` (a rendered block), answers every command like
/// Asterisk until the server closes. `holding` counts calls currently held.
pub async fn lean_call(
    target: SocketAddr,
    env: &[u8],
    options: &LeanOptions,
    holding: &AtomicUsize,
) -> Result<LeanOutcome, LoadError> {
    let limit = options.timeout + options.hold;
    match tokio::time::timeout(limit, call_inner(target, env, options, holding)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(LoadError::Timeout(limit)),
    }
}

async fn connect(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    match source {
        None => TcpStream::connect(target).await,
        Some(ip) => {
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(target).await
        }
    }
}

/// Decrements the hold counter however the call ends.
struct HoldGuard<'a>(&'a AtomicUsize);

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn call_inner(
    target: SocketAddr,
    env: &[u8],
    options: &LeanOptions,
    holding: &AtomicUsize,
) -> Result<LeanOutcome, LoadError> {
    let mut stream = connect(target, options.source_ip)
        .await
        .map_err(LoadError::Connect)?;
    stream.set_nodelay(true).ok();
    let mut channel = LeanChannel::new(options);
    let io = |commands: u32| move |source| LoadError::Io { commands, source };
    if let Err(e) = stream.write_all(env).await {
        if !is_reset(&e) {
            return Err(io(0)(e));
        }
    }
    let mut reader = LineReader::new(MAX_SERVER_LINE);
    let mut out: Vec<u8> = Vec::with_capacity(64);
    loop {
        let line = match reader.next_line(&mut stream).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(ReadLineError::TooLong(_)) => return Err(LoadError::LineTooLong),
            Err(ReadLineError::Io(e)) if is_reset(&e) => break,
            Err(ReadLineError::Io(e)) => return Err(io(channel.commands)(e)),
        };
        out.clear();
        channel.answer(&String::from_utf8_lossy(&line), &mut out);
        if channel.commands == 1 && !options.hold.is_zero() {
            holding.fetch_add(1, Ordering::Relaxed);
            let _guard = HoldGuard(holding);
            tokio::time::sleep(options.hold).await;
        }
        if let Err(e) = stream.write_all(&out).await {
            // The server may close right after its last command.
            if is_reset(&e) {
                break;
            }
            return Err(io(channel.commands)(e));
        }
    }
    Ok(LeanOutcome {
        result: channel.channel.result(),
        commands: channel.commands,
        hung_up: channel.channel.dead,
    })
}

/// The simulated channel of [`super::peer`], with a fast path for the command every
/// script sends.
struct LeanChannel {
    channel: Channel,
    commands: u32,
}

impl LeanChannel {
    fn new(options: &LeanOptions) -> Self {
        LeanChannel {
            channel: Channel::new(&options.channel, options.digits.as_deref(), Vec::new()),
            commands: 0,
        }
    }

    /// Writes the reply line(s) to `line` into `out`.
    fn answer(&mut self, line: &str, out: &mut Vec<u8>) {
        self.commands += 1;
        // Fast path: the plain `SET VARIABLE NAME VALUE` every script ends with, answered
        // without the full command parser.
        if let Some(rest) = line.strip_prefix("SET VARIABLE ") {
            if !rest.contains(['"', '\\']) {
                let mut words = rest.split_ascii_whitespace();
                if let (Some(name), Some(value), None) = (words.next(), words.next(), words.next())
                {
                    self.channel
                        .set_variables
                        .push((name.to_string(), value.to_string()));
                    out.extend_from_slice(b"200 result=1\n");
                    return;
                }
            }
        }
        self.channel.reply_to(line, false, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LeanOptions {
        LeanOptions {
            channel: "PJSIP/carrier-00000001".into(),
            digits: Some("12#".into()),
            hold: Duration::ZERO,
            timeout: Duration::from_secs(1),
            source_ip: None,
        }
    }

    #[test]
    fn template_renders_like_env_block() {
        let spec = CallSpec {
            script: "verify".into(),
            caller: Some("+8613800138000".into()),
            uniqueid: "1.2".into(),
            ..CallSpec::default()
        };
        let target: SocketAddr = "127.0.0.1:4574".parse().unwrap();
        let mut out = Vec::new();
        EnvTemplate::new(&spec, target).render(Some("+8613800138000"), "1.2", &mut out);
        assert_eq!(out, spec.env_block("127.0.0.1", 4574));
    }

    #[test]
    fn replies() {
        let options = options();
        let mut ch = LeanChannel::new(&options);
        let mut say = |line: &str| {
            let mut out = Vec::new();
            ch.answer(line, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(say("SET VARIABLE DIALGATE_RESULT pong"), "200 result=1\n");
        assert_eq!(say("SET VARIABLE X \"a b\""), "200 result=1\n");
        assert_eq!(say("GET VARIABLE X"), "200 result=1 (a b)\n");
        assert_eq!(say("ANSWER"), "200 result=0\n");
        assert_eq!(say("GET DATA beep 3000 4"), "200 result=12\n");
        assert_eq!(say("FROB"), "510 Invalid or unknown command\n");
        assert_eq!(say("HANGUP"), "200 result=1\nHANGUP\n");
        assert_eq!(
            say("STREAM FILE x \"\""),
            "511 Command Not Permitted on a dead channel or intercept routine\n"
        );
        assert_eq!(ch.channel.result().as_deref(), Some("pong"));
    }
}
