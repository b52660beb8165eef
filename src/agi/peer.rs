//! Asterisk's side of a FastAGI call: connects to a server, sends the environment block
//! and answers each command the way res_agi does, until the server closes the socket.
//! Protocol only; used by `dialgate simulate-call` (and reusable by a load generator).
//!
//! The simulated channel has no audio: prompts "play" at once (`endpos=8000`), and the
//! caller's key presses come from [`CallSpec::digits`], consumed in order by GET DATA
//! and WAIT FOR DIGIT (once they are used up, input times out).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use super::{server::RESULT_VARIABLE, transcript::Direction, Command, Verb, DEFAULT_PORT};

/// Longest line accepted from the server (Asterisk itself reads 2 KiB per command).
pub const MAX_SERVER_LINE: usize = 8 * 1024;

/// GET DATA's digit limit when the command gives none (res_agi's default).
const DEFAULT_GET_DATA_MAX: usize = 1024;

/// The call Asterisk places: what goes into the environment block, and how the caller
/// behaves (digits typed, hanging up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpec {
    /// Path after `agi://host:port/`, query included (`verify?mode=code`).
    pub script: String,
    /// Channel name, e.g. `PJSIP/carrier-00000001`; its technology becomes `agi_type`.
    pub channel: String,
    /// Caller number; `None` is sent as `unknown`.
    pub caller: Option<String>,
    pub caller_name: Option<String>,
    /// Q.931 presentation byte (`agi_callingpres`): 0 allowed, 32 withheld, 67 unavailable.
    pub calling_pres: u8,
    pub dnid: Option<String>,
    pub extension: String,
    pub context: String,
    /// Dialplan arguments after the URL: `agi_arg_1` ... `agi_arg_N`.
    pub args: Vec<String>,
    pub uniqueid: String,
    /// What the caller types for GET DATA / WAIT FOR DIGIT (`#` ends a GET DATA entry);
    /// `None` (or once used up): the input times out.
    pub digits: Option<String>,
    /// Send an unsolicited `HANGUP` after this many replies (0: right after the
    /// environment), as when the caller hangs up mid-call.
    pub hangup_after: Option<usize>,
    /// Asterisk version (`agi_version`).
    pub version: String,
}

impl Default for CallSpec {
    fn default() -> Self {
        CallSpec {
            script: String::new(),
            channel: "PJSIP/carrier-00000001".into(),
            caller: None,
            caller_name: None,
            calling_pres: 0,
            dnid: None,
            extension: "s".into(),
            context: "default".into(),
            args: Vec::new(),
            uniqueid: "1700000000.1".into(),
            digits: None,
            hangup_after: None,
            version: "20.11.0".into(),
        }
    }
}

impl CallSpec {
    /// The FastAGI environment block exactly as Asterisk (20.x, `setup_env()`) writes it
    /// for `AGI(agi://host:port/<script>,<args>)`, ending with the empty line.
    pub fn env_block(&self, host: &str, port: u16) -> Vec<u8> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let authority = if port == DEFAULT_PORT {
            host
        } else {
            format!("{host}:{port}")
        };
        let script = self.script.trim_start_matches('/');
        let request = if script.is_empty() {
            format!("agi://{authority}")
        } else {
            format!("agi://{authority}/{script}")
        };
        let unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        let technology = self
            .channel
            .split_once('/')
            .map_or(self.channel.as_str(), |(tech, _)| tech);

        let mut lines: Vec<(String, String)> = vec![("agi_network".into(), "yes".into())];
        if !script.is_empty() {
            lines.push(("agi_network_script".into(), script.to_string()));
        }
        lines.extend(
            [
                ("agi_request", request),
                ("agi_channel", self.channel.clone()),
                ("agi_language", "en".into()),
                ("agi_type", technology.to_string()),
                ("agi_uniqueid", self.uniqueid.clone()),
                ("agi_version", self.version.clone()),
                ("agi_callerid", unknown(&self.caller)),
                ("agi_calleridname", unknown(&self.caller_name)),
                ("agi_callingpres", self.calling_pres.to_string()),
                ("agi_callingani2", "0".into()),
                ("agi_callington", "0".into()),
                ("agi_callingtns", "0".into()),
                ("agi_dnid", unknown(&self.dnid)),
                ("agi_rdnis", "unknown".into()),
                ("agi_context", self.context.clone()),
                ("agi_extension", self.extension.clone()),
                ("agi_priority", "1".into()),
                ("agi_enhanced", "0.0".into()),
                ("agi_accountcode", String::new()),
                ("agi_threadid", "140234871391808".into()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        for (i, arg) in self.args.iter().enumerate() {
            lines.push((format!("agi_arg_{}", i + 1), arg.clone()));
        }
        let mut block = Vec::new();
        for (key, value) in lines {
            block.extend_from_slice(key.as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(value.as_bytes());
            block.push(b'\n');
        }
        block.push(b'\n');
        block
    }

    /// A field that would end an environment line early (CR, LF, NUL).
    fn unsafe_field(&self) -> Option<&'static str> {
        let fields: [(&'static str, Option<&str>); 10] = [
            ("script", Some(&self.script)),
            ("channel", Some(&self.channel)),
            ("caller", self.caller.as_deref()),
            ("caller name", self.caller_name.as_deref()),
            ("dnid", self.dnid.as_deref()),
            ("extension", Some(&self.extension)),
            ("context", Some(&self.context)),
            ("uniqueid", Some(&self.uniqueid)),
            ("version", Some(&self.version)),
            ("digits", self.digits.as_deref()),
        ];
        let bad = |v: &str| v.contains(['\r', '\n', '\0']);
        fields
            .into_iter()
            .find(|(_, v)| v.is_some_and(bad))
            .map(|(name, _)| name)
            .or_else(|| self.args.iter().any(|a| bad(a)).then_some("argument"))
    }
}

/// One command the server sent and the reply line Asterisk gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub command: String,
    pub reply: String,
    /// An unsolicited `HANGUP` line followed the reply (our HANGUP, or `hangup_after`).
    pub hangup: bool,
}

/// What happened on a call the server ended by closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub exchanges: Vec<Exchange>,
    /// Every `SET VARIABLE name value`, in order.
    pub variables: Vec<(String, String)>,
    /// The last value given to `DIALGATE_RESULT`.
    pub result: Option<String>,
    /// The server sent ANSWER (while the channel was alive).
    pub answered: bool,
    /// The channel was hung up (by the server's HANGUP or `hangup_after`).
    pub hung_up: bool,
    /// From the start of the connect to the server's close.
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the call spec's {0} contains CR, LF or NUL, which would break the environment block")]
    InvalidSpec(&'static str),
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to {target}: no answer within {timeout:?}")]
    ConnectTimeout {
        target: SocketAddr,
        timeout: Duration,
    },
    #[error("the server sent nothing for {timeout:?} after {exchanges} commands (and did not close the connection)")]
    Timeout { timeout: Duration, exchanges: usize },
    #[error("the server sent a line longer than {limit} bytes after {exchanges} commands")]
    LineTooLong { limit: usize, exchanges: usize },
    #[error("connection error after {exchanges} commands: {source}")]
    Io {
        exchanges: usize,
        source: std::io::Error,
    },
}

impl PeerError {
    /// The server could not be reached at all (as opposed to misbehaving mid-call).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            PeerError::Connect { .. } | PeerError::ConnectTimeout { .. }
        )
    }
}

/// Places a call to the FastAGI server at `target` and plays Asterisk until the server
/// closes the connection. `timeout` bounds the connect and each wait for the server's
/// next line.
pub async fn place_call(
    target: SocketAddr,
    spec: &CallSpec,
    timeout: Duration,
) -> Result<CallOutcome, PeerError> {
    place_call_observed(target, spec, timeout, |_, _| {}).await
}

/// [`place_call`], reporting every line as it crosses the wire (without its line end):
/// the environment (ending with an empty line), commands, replies and `HANGUP` events.
pub async fn place_call_observed(
    target: SocketAddr,
    spec: &CallSpec,
    timeout: Duration,
    mut observe: impl FnMut(Direction, &str),
) -> Result<CallOutcome, PeerError> {
    if let Some(field) = spec.unsafe_field() {
        return Err(PeerError::InvalidSpec(field));
    }
    let started = Instant::now();
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Err(_) => return Err(PeerError::ConnectTimeout { target, timeout }),
        Ok(Err(source)) => return Err(PeerError::Connect { target, source }),
        Ok(Ok(stream)) => stream,
    };
    stream.set_nodelay(true).ok();
    let (read, mut write) = stream.into_split();
    let mut reader = LineReader::new(BufReader::new(read), MAX_SERVER_LINE);
    let mut channel = Channel::for_spec(spec);
    let mut outcome = CallOutcome {
        exchanges: Vec::new(),
        variables: Vec::new(),
        result: None,
        answered: false,
        hung_up: false,
        duration: Duration::ZERO,
    };
    let io_error = |exchanges: usize| move |source| PeerError::Io { exchanges, source };

    let env = spec.env_block(&target.ip().to_string(), target.port());
    for line in env
        .strip_suffix(b"\n")
        .unwrap_or(&env)
        .split(|&b| b == b'\n')
    {
        observe(Direction::FromAsterisk, &String::from_utf8_lossy(line));
    }
    let mut out = env;
    if spec.hangup_after == Some(0) {
        channel.dead = true;
        out.extend_from_slice(b"HANGUP\n");
        observe(Direction::FromAsterisk, "HANGUP");
    }
    if let Err(e) = write.write_all(&out).await {
        if !is_reset(&e) {
            return Err(io_error(0)(e));
        }
    }

    loop {
        let exchanges = outcome.exchanges.len();
        let line = match tokio::time::timeout(timeout, reader.next_line()).await {
            Err(_) => return Err(PeerError::Timeout { timeout, exchanges }),
            Ok(Err(LineError::TooLong)) => {
                return Err(PeerError::LineTooLong {
                    limit: MAX_SERVER_LINE,
                    exchanges,
                })
            }
            Ok(Err(LineError::Io(e))) if is_reset(&e) => break,
            Ok(Err(LineError::Io(e))) => return Err(io_error(exchanges)(e)),
            // EOF: the server ended the AGI, the dialplan continues.
            Ok(Ok(None)) => break,
            Ok(Ok(Some(line))) => line,
        };
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let command = String::from_utf8_lossy(line).into_owned();
        observe(Direction::FromServer, &command);

        let reply = channel.answer(&command);
        let was_dead = channel.dead;
        if reply.hangs_up {
            channel.dead = true;
        }
        let caller_hangs_up = !channel.dead && spec.hangup_after == Some(exchanges + 1);
        if caller_hangs_up {
            channel.dead = true;
        }
        let hangup_event = channel.dead && !was_dead;

        let mut out = reply.line.clone().into_bytes();
        out.push(b'\n');
        observe(Direction::FromAsterisk, &reply.line);
        if hangup_event {
            out.extend_from_slice(b"HANGUP\n");
            observe(Direction::FromAsterisk, "HANGUP");
        }
        outcome.exchanges.push(Exchange {
            command,
            reply: reply.line,
            hangup: hangup_event,
        });
        if let Err(e) = write.write_all(&out).await {
            // The server may close right after its last command; that ends the call.
            if is_reset(&e) {
                break;
            }
            return Err(io_error(exchanges + 1)(e));
        }
    }

    outcome.answered = channel.answered;
    outcome.hung_up = channel.dead;
    outcome.result = channel
        .set_variables
        .iter()
        .rev()
        .find(|(name, _)| name == RESULT_VARIABLE)
        .map(|(_, value)| value.clone());
    outcome.variables = channel.set_variables;
    outcome.duration = started.elapsed();
    Ok(outcome)
}

/// A simulated channel without audio: res_agi's answers to every command, digits the
/// caller types, and the channel's own variables. Shared by `place_call` and the load
/// generator, so both answer exactly alike.
pub(crate) struct Channel {
    name: String,
    /// Variables the channel has before the script sets any (`CALLERID(num)`...).
    own_variables: Vec<(&'static str, String)>,
    pub(crate) answered: bool,
    pub(crate) dead: bool,
    pub(crate) set_variables: Vec<(String, String)>,
    /// Digits the caller has not typed yet.
    pending_digits: std::collections::VecDeque<char>,
}

pub(crate) struct Answer {
    pub(crate) line: String,
    /// This reply hangs the channel up (a HANGUP line follows it).
    pub(crate) hangs_up: bool,
}

impl Channel {
    pub(crate) fn new(
        name: &str,
        digits: Option<&str>,
        own_variables: Vec<(&'static str, String)>,
    ) -> Channel {
        Channel {
            name: name.to_string(),
            own_variables,
            answered: false,
            dead: false,
            set_variables: Vec::new(),
            pending_digits: digits.unwrap_or("").chars().collect(),
        }
    }

    /// The channel `spec` describes, with its caller ID, DNID, unique id and extension.
    fn for_spec(spec: &CallSpec) -> Channel {
        let mut own = vec![
            ("UNIQUEID", spec.uniqueid.clone()),
            ("EXTEN", spec.extension.clone()),
            ("CONTEXT", spec.context.clone()),
        ];
        for (name, value) in [
            ("CALLERID(num)", &spec.caller),
            ("CALLERID(name)", &spec.caller_name),
            ("CALLERID(dnid)", &spec.dnid),
        ] {
            if let Some(value) = value {
                own.push((name, value.clone()));
            }
        }
        Channel::new(&spec.channel, spec.digits.as_deref(), own)
    }

    /// The last value the script gave `name`.
    pub(crate) fn set_variable_value(&self, name: &str) -> Option<&str> {
        self.set_variables
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// res_agi's answer to one command line.
    pub(crate) fn answer(&mut self, line: &str) -> Answer {
        let reply = |line: &str| Answer {
            line: line.to_string(),
            hangs_up: false,
        };
        let command = match Command::parse(line) {
            Ok(command) => command,
            Err(_) => return reply("510 Invalid or unknown command"),
        };
        let verb = command.verb();
        if self.dead && !verb.allowed_on_dead_channel() {
            return reply("511 Command Not Permitted on a dead channel or intercept routine");
        }
        let args = command.args();
        let (min, max) = verb.arity();
        if args.len() < min || args.len() > max {
            return reply("520 Invalid command syntax.  Proper usage not available.");
        }
        match verb {
            Verb::Answer => {
                self.answered = true;
                reply("200 result=0")
            }
            Verb::SetVariable => {
                self.set_variables.push((args[0].clone(), args[1].clone()));
                reply("200 result=1")
            }
            Verb::GetVariable => match self.variable(&args[0]) {
                Some(value) => reply(&format!("200 result=1 ({value})")),
                None => reply("200 result=0"),
            },
            Verb::GetData => {
                let max = args
                    .get(2)
                    .and_then(|m| m.parse::<usize>().ok())
                    .filter(|&m| m > 0)
                    .unwrap_or(DEFAULT_GET_DATA_MAX);
                let (digits, complete) = self.read_digits(max);
                if complete {
                    reply(&format!("200 result={digits}"))
                } else {
                    reply(&format!("200 result={digits} (timeout)"))
                }
            }
            Verb::WaitForDigit => match self.pending_digits.pop_front() {
                Some(digit) => reply(&format!("200 result={}", digit as u32)),
                None => reply("200 result=0"),
            },
            Verb::StreamFile | Verb::ControlStreamFile => reply("200 result=0 endpos=8000"),
            Verb::Hangup => {
                let ours = args.first().is_none_or(|c| *c == self.name);
                if ours {
                    Answer {
                        line: "200 result=1".into(),
                        hangs_up: true,
                    }
                } else {
                    // No such channel to hang up.
                    reply("200 result=-1")
                }
            }
            Verb::Verbose => reply("200 result=1"),
            // NOOP, EXEC, SAY *, and everything else a silent channel accepts.
            _ => reply("200 result=0"),
        }
    }

    /// GET DATA input: up to `max` digits or a `#`. Complete when the caller filled the
    /// entry or pressed `#`, else it timed out with what was typed.
    fn read_digits(&mut self, max: usize) -> (String, bool) {
        let mut digits = String::new();
        while digits.len() < max {
            match self.pending_digits.pop_front() {
                Some('#') => return (digits, true),
                Some(d) => digits.push(d),
                None => return (digits, false),
            }
        }
        (digits, true)
    }

    /// A variable set by the script, or one of the channel's own.
    fn variable(&self, name: &str) -> Option<String> {
        if let Some(value) = self.set_variable_value(name) {
            return Some(value.to_string());
        }
        if matches!(name, "CHANNEL" | "CHANNEL(name)") {
            return Some(self.name.clone());
        }
        self.own_variables
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
}

enum LineError {
    TooLong,
    Io(std::io::Error),
}

/// Reads `\n`-terminated lines, refusing any longer than `limit` bytes before buffering
/// them whole.
struct LineReader<R> {
    inner: R,
    limit: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    fn new(inner: R, limit: usize) -> Self {
        LineReader { inner, limit }
    }

    /// The next line without its `\n`; `None` at EOF (a partial last line is dropped,
    /// as Asterisk never sees a command without its line end).
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineError> {
        let mut line = Vec::new();
        loop {
            let buf = self.inner.fill_buf().await.map_err(LineError::Io)?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1),
                None => (buf, buf.len()),
            };
            if line.len() + chunk.len() > self.limit {
                return Err(LineError::TooLong);
            }
            line.extend_from_slice(chunk);
            let complete = done > chunk.len();
            self.inner.consume(done);
            if complete {
                return Ok(Some(line));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agi::AgiEnv;

    fn spec() -> CallSpec {
        CallSpec {
            script: "verify?mode=code".into(),
            caller: Some("+8613800138000".into()),
            dnid: Some("+861055550100".into()),
            extension: "+861055550100".into(),
            context: "dialin".into(),
            args: vec!["+861055550100".into(), String::new()],
            ..CallSpec::default()
        }
    }

    #[test]
    fn env_block_parses_and_ends_with_a_blank_line() {
        let block = spec().env_block("127.0.0.1", 4574);
        assert!(block.ends_with(b"agi_arg_2: \n\n"));
        let text = String::from_utf8(block.clone()).unwrap();
        assert!(text.starts_with(
            "agi_network: yes\nagi_network_script: verify?mode=code\n\
             agi_request: agi://127.0.0.1:4574/verify?mode=code\n\
             agi_channel: PJSIP/carrier-00000001\nagi_language: en\nagi_type: PJSIP\n"
        ));
        assert!(text.contains("agi_accountcode: \n"));
        let lines: Vec<&[u8]> = block[..block.len() - 2].split(|&b| b == b'\n').collect();
        let env = AgiEnv::from_lines(lines).unwrap();
        assert_eq!(env.caller_number().as_deref(), Some("+8613800138000"));
        assert_eq!(env.caller_name(), None);
        assert_eq!(env.script_path(), "verify");
        assert_eq!(env.args(), vec!["+861055550100", ""]);
    }

    #[test]
    fn default_port_and_ipv6_in_request() {
        let mut s = spec();
        s.script = String::new();
        let text = String::from_utf8(s.env_block("::1", DEFAULT_PORT)).unwrap();
        assert!(text.starts_with("agi_network: yes\nagi_request: agi://[::1]\n"));
    }

    #[test]
    fn answers_like_res_agi() {
        let mut s = spec();
        s.digits = Some("12#3".into());
        let mut ch = Channel::for_spec(&s);
        let mut say = |line: &str| ch.answer(line).line;
        assert_eq!(say("FROB"), "510 Invalid or unknown command");
        assert_eq!(say("ANSWER"), "200 result=0");
        assert_eq!(say("GET VARIABLE X"), "200 result=0");
        assert_eq!(say("SET VARIABLE X \"a b\""), "200 result=1");
        assert_eq!(say("GET VARIABLE X"), "200 result=1 (a b)");
        assert_eq!(
            say("GET VARIABLE CALLERID(num)"),
            "200 result=1 (+8613800138000)"
        );
        assert_eq!(say("GET DATA beep 3000 4"), "200 result=12");
        assert_eq!(say("WAIT FOR DIGIT 1000"), "200 result=51");
        assert_eq!(say("WAIT FOR DIGIT 1000"), "200 result=0");
        assert_eq!(say("GET DATA beep 3000 4"), "200 result= (timeout)");
        assert_eq!(say("STREAM FILE x \"\""), "200 result=0 endpos=8000");
        assert_eq!(say("SAY DIGITS 12 \"\""), "200 result=0");
        assert_eq!(say("VERBOSE \"hi\" 1"), "200 result=1");
        assert_eq!(say("NOOP"), "200 result=0");
        assert_eq!(
            say("STREAM FILE"),
            "520 Invalid command syntax.  Proper usage not available."
        );
        assert!(ch.answered);
    }

    #[test]
    fn get_data_truncates_to_max_and_times_out_short() {
        let mut s = spec();
        s.digits = Some("123456".into());
        let mut ch = Channel::for_spec(&s);
        assert_eq!(ch.answer("GET DATA beep 3000 4").line, "200 result=1234");
        assert_eq!(
            ch.answer("GET DATA beep 3000 4").line,
            "200 result=56 (timeout)"
        );
    }

    #[test]
    fn dead_channel_refuses_live_only_verbs() {
        let s = spec();
        let mut ch = Channel::for_spec(&s);
        let hangup = ch.answer("HANGUP");
        assert!(hangup.hangs_up);
        assert_eq!(hangup.line, "200 result=1");
        ch.dead = true;
        assert_eq!(
            ch.answer("STREAM FILE x \"\"").line,
            "511 Command Not Permitted on a dead channel or intercept routine"
        );
        assert_eq!(ch.answer("SET VARIABLE A b").line, "200 result=1");
        assert_eq!(ch.answer("EXEC Busy").line, "200 result=0");
    }
}
