//! `dialgate serve`'s options and their resolution into the servers' settings. Every
//! option is one field of [`ServeOptions`]: its flag, its `DIALGATE_*` variable, its key
//! in the config file's `[serve]` table and its default (clap's, from the domain's
//! `DEFAULT` consts).

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use clap::Args;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    agi::ServerConfig,
    ami::AmiConfig,
    auth::login::{LoginSettings, MAX_CHALLENGE_TTL},
    cli::{temp_password, Failure},
    config::{enum_name, Config, Given, HumanDuration},
    dialin::{
        confirm::ConfirmConfig,
        verify::{Mode, Trunk, VerifyConfig},
    },
    gateway::{
        callback::check_channel_template, csrf::normalize_origin, CallbackSettings, GatewayConfig,
        HttpLimits, RateLimit,
    },
    phone::{self, E164},
};

/// The `[serve]` keys renamed to the flag's name, still read (with a warning).
pub const RENAMED_KEYS: &[(&str, &str)] = &[
    ("dialin_numbers", "dialin_number"),
    ("trusted_trunks", "trusted_trunk"),
];

/// Every `serve` option: a flag, a `DIALGATE_*` variable and a `[serve]` key (the
/// field's name). Options with a default are `Some` once clap has parsed them; `None`
/// in the file means "not set here".
#[derive(Debug, Args, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeOptions {
    /// FastAGI address (Asterisk: `AGI(agi://HOST:PORT/SCRIPT)`).
    #[arg(long, env = "DIALGATE_AGI_LISTEN", default_value = DEFAULT_AGI_LISTEN.to_string())]
    pub agi_listen: Option<SocketAddr>,

    /// HTTP gateway address (login API, web page, forward-auth).
    #[arg(long, env = "DIALGATE_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN.to_string())]
    pub http_listen: Option<SocketAddr>,

    /// Only accept FastAGI connections from these addresses or networks (repeatable,
    /// e.g. `10.0.0.5` or `10.0.0.0/24`). Unset: any peer that can reach the port.
    #[arg(
        long,
        value_name = "CIDR",
        env = "DIALGATE_AGI_ALLOW",
        value_delimiter = ','
    )]
    pub agi_allow: Option<Vec<String>>,

    /// Most calls handled at once; further connections are closed at once.
    #[arg(long, env = "DIALGATE_MAX_CONNECTIONS",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value = ServerConfig::DEFAULT.max_connections.to_string())]
    pub max_connections: Option<u32>,

    /// Time Asterisk has to send the AGI environment block.
    #[arg(long, value_name = "DURATION", env = "DIALGATE_ENV_TIMEOUT",
        default_value = HumanDuration(ServerConfig::DEFAULT.env_timeout).to_string())]
    pub env_timeout: Option<HumanDuration>,

    /// Time Asterisk has to answer one command.
    #[arg(long, value_name = "DURATION", env = "DIALGATE_COMMAND_TIMEOUT",
        default_value = HumanDuration(ServerConfig::DEFAULT.command_timeout).to_string())]
    pub command_timeout: Option<HumanDuration>,

    /// On SIGINT/SIGTERM, how long calls in progress may finish.
    #[arg(long, value_name = "DURATION", env = "DIALGATE_GRACE_PERIOD",
        default_value = HumanDuration(ServerConfig::DEFAULT.grace_period).to_string())]
    pub grace_period: Option<HumanDuration>,

    /// HTTP: time from the first byte of a request to the end of its headers (slow
    /// senders are cut off).
    #[arg(long, value_name = "DURATION", env = "DIALGATE_HTTP_HEADER_TIMEOUT",
        default_value = HumanDuration(HttpLimits::DEFAULT.header_timeout).to_string())]
    pub http_header_timeout: Option<HumanDuration>,

    /// HTTP: time from the end of the headers to the end of the body (408 after).
    #[arg(long, value_name = "DURATION", env = "DIALGATE_HTTP_BODY_TIMEOUT",
        default_value = HumanDuration(HttpLimits::DEFAULT.body_timeout).to_string())]
    pub http_body_timeout: Option<HumanDuration>,

    /// HTTP: how long a kept-alive connection may wait for its next request.
    #[arg(long, value_name = "DURATION", env = "DIALGATE_HTTP_IDLE_TIMEOUT",
        default_value = HumanDuration(HttpLimits::DEFAULT.idle_timeout).to_string())]
    pub http_idle_timeout: Option<HumanDuration>,

    /// HTTP: a request's budget, from its headers to its answer (503 after); the SSE
    /// stream's body is not counted.
    #[arg(long, value_name = "DURATION", env = "DIALGATE_HTTP_REQUEST_TIMEOUT",
        default_value = HumanDuration(HttpLimits::DEFAULT.request_timeout).to_string())]
    pub http_request_timeout: Option<HumanDuration>,

    /// Budget of each store step of a verify or confirm call: past it the call gets
    /// `DIALGATE_RESULT error` at once and is closed (fail closed).
    #[arg(long, value_name = "DURATION", env = "DIALGATE_STORE_TIMEOUT",
        default_value = HumanDuration(VerifyConfig::DEFAULT_STORE_TIMEOUT).to_string())]
    pub store_timeout: Option<HumanDuration>,

    /// Most HTTP connections at once (never more than the open-file limit minus
    /// --http-fd-reserve); further ones are closed at once.
    #[arg(long, env = "DIALGATE_HTTP_MAX_CONNECTIONS",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value = HttpLimits::DEFAULT.max_connections.to_string())]
    pub http_max_connections: Option<u32>,

    /// File descriptors HTTP connections leave to FastAGI, the database and the rest
    /// (at most half the open-file limit).
    #[arg(long, env = "DIALGATE_HTTP_FD_RESERVE",
        default_value = HttpLimits::DEFAULT.fd_reserve.to_string())]
    pub http_fd_reserve: Option<u32>,

    /// An origin besides the page's own allowed to send cookie-authenticated POSTs
    /// (repeatable), e.g. `https://app.example.com`.
    #[arg(
        long,
        value_name = "ORIGIN",
        env = "DIALGATE_HTTP_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub http_allow_origin: Option<Vec<String>>,

    /// A number users call to verify (repeatable: a pool, so each pending login of one
    /// caller gets its own number).
    #[arg(
        long,
        value_name = "E164",
        env = "DIALGATE_DIALIN_NUMBERS",
        value_delimiter = ','
    )]
    #[serde(alias = "dialin_numbers")]
    pub dialin_number: Option<Vec<String>>,

    /// Channels whose caller ID is believed, as TECHNOLOGY/ENDPOINT (repeatable), matched
    /// exactly against the channel name without its -sequence suffix.
    #[arg(
        long,
        value_name = "TECH/ENDPOINT",
        env = "DIALGATE_TRUSTED_TRUNKS",
        value_delimiter = ','
    )]
    #[serde(alias = "trusted_trunks")]
    pub trusted_trunk: Option<Vec<String>>,

    /// missed-call: never answer. answer: answer and play prompts.
    #[arg(long, value_enum, env = "DIALGATE_MODE", default_value = enum_name(Mode::default()))]
    pub mode: Option<Mode>,

    /// Digits of the keypad code shown on the page and typed during the call (0 = off).
    /// Needs --mode answer.
    #[arg(long, env = "DIALGATE_CODE_DIGITS",
        value_parser = clap::value_parser!(u8).range(0..=MAX_CODE_DIGITS as i64),
        default_value = LoginSettings::DEFAULT.code_digits.to_string())]
    pub code_digits: Option<u8>,

    /// How long a login waits for the call (10s to 10min).
    #[arg(long, value_name = "DURATION", env = "DIALGATE_CHALLENGE_TTL",
        default_value = HumanDuration(LoginSettings::DEFAULT.challenge_ttl).to_string())]
    pub challenge_ttl: Option<HumanDuration>,

    /// How long a session lasts.
    #[arg(long, value_name = "DURATION", env = "DIALGATE_SESSION_TTL",
        default_value = HumanDuration(LoginSettings::DEFAULT.session_ttl).to_string())]
    pub session_ttl: Option<HumanDuration>,

    /// This node's base URL as other nodes reach it (several nodes sharing one database).
    #[arg(long, env = "DIALGATE_NODE_URL")]
    pub node_url: Option<String>,

    /// Shared key signing node-to-node signals (at least 32 characters).
    #[arg(long, env = "DIALGATE_SIGNAL_KEY", hide_env_values = true)]
    pub signal_key: Option<String>,

    /// Cookies without the Secure flag, for plain-HTTP development only.
    #[arg(long, env = "DIALGATE_INSECURE_COOKIES")]
    pub insecure_cookies: bool,

    /// Failed logins from one client address per window before it is locked out
    /// (repeated lockouts double, up to an hour).
    #[arg(long, env = "DIALGATE_LOGIN_LIMIT_PER_IP",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value = RateLimit::DEFAULT.per_ip.to_string())]
    pub login_limit_per_ip: Option<u32>,

    /// Failed logins for one username per window, from any address.
    #[arg(long, env = "DIALGATE_LOGIN_LIMIT_PER_ACCOUNT",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value = RateLimit::DEFAULT.per_account.to_string())]
    pub login_limit_per_account: Option<u32>,

    /// The window both login limits count in.
    #[arg(long, value_name = "DURATION", env = "DIALGATE_LOGIN_LIMIT_WINDOW",
        default_value = HumanDuration(RateLimit::DEFAULT.window).to_string())]
    pub login_limit_window: Option<HumanDuration>,

    /// The server key for temporary passwords, hex (at least 16 bytes). Default: the key
    /// in <data dir>/temp-password.key, created on first use. Nodes sharing a database
    /// must share this key.
    #[arg(long, env = "DIALGATE_TEMP_PASSWORD_KEY", hide_env_values = true)]
    pub temp_password_key: Option<String>,

    /// Only temporary passwords may pay; the owner's long-term password may not.
    #[arg(long, env = "DIALGATE_TEMPORARY_ONLY_PAYMENTS")]
    pub temporary_only_payments: bool,

    /// Asterisk's manager interface (AMI), HOST:PORT, e.g. 127.0.0.1:5038, for
    /// call-backs ("call me instead"). Unset: AMI and call-backs are disabled.
    #[arg(long, value_name = "HOST:PORT", env = "DIALGATE_AMI_ADDRESS")]
    pub ami_address: Option<String>,

    /// The manager.conf user dialgate logs in as.
    #[arg(long, env = "DIALGATE_AMI_USERNAME")]
    pub ami_username: Option<String>,

    /// The manager.conf user's secret.
    #[arg(long, env = "DIALGATE_AMI_SECRET", hide_env_values = true)]
    pub ami_secret: Option<String>,

    /// Dial string of the call-back, `{number}` being the enrolled E.164 number.
    #[arg(long, value_name = "TEMPLATE", env = "DIALGATE_CALLBACK_CHANNEL",
        default_value = CallbackSettings::DEFAULT_CHANNEL_TEMPLATE)]
    pub callback_channel: Option<String>,

    /// Dialplan context the answered call-back runs.
    #[arg(long, env = "DIALGATE_CALLBACK_CONTEXT",
        default_value = CallbackSettings::DEFAULT_CONTEXT)]
    pub callback_context: Option<String>,

    /// Extension in that context.
    #[arg(long, env = "DIALGATE_CALLBACK_EXTEN", default_value = CallbackSettings::DEFAULT_EXTEN)]
    pub callback_exten: Option<String>,

    /// Caller ID the user's phone shows, e.g. `"dialgate" <+861055550100>`.
    #[arg(long, env = "DIALGATE_CALLBACK_CALLER_ID")]
    pub callback_caller_id: Option<String>,

    /// How long the user's phone rings (5s to 2min).
    #[arg(long, value_name = "DURATION", env = "DIALGATE_CALLBACK_TIMEOUT",
        default_value = HumanDuration(CallbackSettings::DEFAULT_TIMEOUT).to_string())]
    pub callback_timeout: Option<HumanDuration>,

    /// Sound the `confirm` script plays before waiting for the key 1.
    #[arg(long, value_name = "SOUND", env = "DIALGATE_CALLBACK_PROMPT",
        default_value = ConfirmConfig::DEFAULT_PROMPT)]
    pub callback_prompt: Option<String>,
}

/// The longest keypad code.
const MAX_CODE_DIGITS: u8 = 12;
pub const DEFAULT_AGI_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4573));
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

/// Everything `serve` runs with, resolved: flags over env over `[serve]` over defaults.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub agi_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub agi: ServerConfig,
    /// HTTP deadlines and connection cap (the cap before the open-file limit bounds it).
    pub http: HttpLimits,
    pub verify: VerifyConfig,
    pub gateway: GatewayConfig,
    /// `None`: AMI disabled (no call-backs).
    pub ami: Option<AmiConfig>,
    pub callback: CallbackSettings,
    pub confirm: ConfirmConfig,
}

fn user_error(message: String) -> Failure {
    Failure::User(anyhow::anyhow!(message))
}

/// A duration option, else its default.
fn duration(value: Option<HumanDuration>, default: Duration) -> Duration {
    value.map_or(default, Duration::from)
}

/// A duration option that must lie within `range`.
fn within(
    name: &str,
    value: Duration,
    range: std::ops::RangeInclusive<Duration>,
) -> Result<Duration, Failure> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(user_error(format!(
            "--{name} {value:?} is outside {:?}..{:?}",
            range.start(),
            range.end()
        )))
    }
}

/// A count option that must be at least 1 (the file is not checked by clap).
fn positive(name: &str, value: Option<u32>, default: u32) -> Result<u32, Failure> {
    match value.unwrap_or(default) {
        0 => Err(user_error(format!("--{name} must be at least 1"))),
        n => Ok(n),
    }
}

/// A text that goes into an AMI action or an AGI command: not empty, no CR, LF or NUL.
fn text(name: &str, value: Option<String>, default: &str) -> Result<String, Failure> {
    let value = value.unwrap_or_else(|| default.to_string());
    if value.is_empty() || value.contains(['\r', '\n', '\0']) {
        Err(user_error(format!(
            "--{name} {value:?} is empty or contains CR, LF or NUL"
        )))
    } else {
        Ok(value)
    }
}

impl ServeOptions {
    /// The flags and variables given, over the config file's `[serve]`, over the defaults.
    pub fn layered(given: Given<ServeOptions>, config: &Config) -> Result<ServeOptions, Failure> {
        let file = match &config.file {
            Some(file) => file.table::<ServeOptions>("serve", RENAMED_KEYS),
            None => Ok(None),
        };
        file.and_then(|file| given.over(file.as_ref()))
            .map_err(|e| Failure::User(e.into()))
    }
}

impl ServeSettings {
    pub fn resolve(options: ServeOptions, config: &Config) -> Result<ServeSettings, Failure> {
        let o = options;
        let allow = o
            .agi_allow
            .unwrap_or_default()
            .iter()
            .map(|text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        user_error(format!(
                            "--agi-allow {text:?} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let agi_defaults = ServerConfig::DEFAULT;
        let agi = ServerConfig {
            max_connections: positive(
                "max-connections",
                o.max_connections,
                agi_defaults.max_connections as u32,
            )? as usize,
            env_timeout: duration(o.env_timeout, agi_defaults.env_timeout),
            command_timeout: duration(o.command_timeout, agi_defaults.command_timeout),
            grace_period: duration(o.grace_period, agi_defaults.grace_period),
            allow,
            ..agi_defaults
        };
        let http_defaults = HttpLimits::DEFAULT;
        let deadline = |name: &str, value: Option<HumanDuration>, default: Duration| {
            within(
                name,
                duration(value, default),
                Duration::from_millis(100)..=Duration::from_secs(3600),
            )
        };
        let http = HttpLimits {
            header_timeout: deadline(
                "http-header-timeout",
                o.http_header_timeout,
                http_defaults.header_timeout,
            )?,
            body_timeout: deadline(
                "http-body-timeout",
                o.http_body_timeout,
                http_defaults.body_timeout,
            )?,
            idle_timeout: deadline(
                "http-idle-timeout",
                o.http_idle_timeout,
                http_defaults.idle_timeout,
            )?,
            request_timeout: deadline(
                "http-request-timeout",
                o.http_request_timeout,
                http_defaults.request_timeout,
            )?,
            max_connections: positive(
                "http-max-connections",
                o.http_max_connections,
                http_defaults.max_connections as u32,
            )? as usize,
            fd_reserve: o
                .http_fd_reserve
                .map_or(http_defaults.fd_reserve, |n| n as usize),
        };
        let allowed_origins = o
            .http_allow_origin
            .unwrap_or_default()
            .iter()
            .map(|text| {
                normalize_origin(text).ok_or_else(|| {
                    user_error(format!(
                        "--http-allow-origin {text:?} is not an origin (scheme://host[:port], e.g. https://app.example.com)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let dialin_numbers = o
            .dialin_number
            .unwrap_or_default()
            .iter()
            .map(|n| {
                phone::normalize(n, config.default_region)
                    .map_err(|e| user_error(format!("--dialin-number {n:?}: {e}")))
            })
            .collect::<Result<Vec<E164>, _>>()?;
        let trusted_trunks = o
            .trusted_trunk
            .unwrap_or_default()
            .iter()
            .map(|t| {
                t.parse::<Trunk>()
                    .map_err(|e| user_error(format!("--trusted-trunk: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let login_defaults = LoginSettings::DEFAULT;
        let challenge_ttl = duration(o.challenge_ttl, login_defaults.challenge_ttl);
        if within(
            "challenge-ttl",
            challenge_ttl,
            Duration::from_secs(10)..=MAX_CHALLENGE_TTL,
        )
        .is_err()
        {
            return Err(user_error(format!(
                "--challenge-ttl {challenge_ttl:?} is outside 10s..600s: a login must not wait longer than 10 minutes"
            )));
        }
        let mode = o.mode.unwrap_or_default();
        let code_digits = o.code_digits.unwrap_or(login_defaults.code_digits);
        if code_digits > MAX_CODE_DIGITS {
            return Err(user_error(format!(
                "--code-digits {code_digits} is more than {MAX_CODE_DIGITS}"
            )));
        }
        if code_digits > 0 && mode == Mode::MissedCall {
            return Err(user_error(
                "--code-digits needs --mode answer: the caller can only type a code on an answered call".into(),
            ));
        }
        let node_url = o.node_url.map(|u| u.trim_end_matches('/').to_string());
        if let Some(key) = &o.signal_key {
            if key.len() < 32 {
                return Err(user_error(
                    "--signal-key must be at least 32 characters".into(),
                ));
            }
        }
        let login = LoginSettings {
            dialin_numbers,
            challenge_ttl,
            code_digits,
            session_ttl: duration(o.session_ttl, login_defaults.session_ttl),
            node_url: node_url.clone(),
            ..login_defaults
        };
        let mut verify = VerifyConfig::new(login.clone(), config.default_region);
        verify.trusted_trunks = trusted_trunks;
        verify.mode = mode;
        verify.store_timeout = within(
            "store-timeout",
            duration(o.store_timeout, VerifyConfig::DEFAULT_STORE_TIMEOUT),
            Duration::from_millis(100)..=Duration::from_secs(60),
        )?;
        let rate_defaults = RateLimit::DEFAULT;
        let login_rate = RateLimit {
            per_ip: positive(
                "login-limit-per-ip",
                o.login_limit_per_ip,
                rate_defaults.per_ip,
            )?,
            per_account: positive(
                "login-limit-per-account",
                o.login_limit_per_account,
                rate_defaults.per_account,
            )?,
            window: duration(o.login_limit_window, rate_defaults.window),
            ..rate_defaults
        };
        let gateway = GatewayConfig {
            login,
            login_rate,
            temp_password_key: temp_password::load_key(o.temp_password_key.as_deref(), config)?,
            allow_long_term_payments: !o.temporary_only_payments,
            secure_cookies: !o.insecure_cookies,
            signal_key: o.signal_key.map(String::into_bytes),
            node_url,
            allowed_origins,
            ..GatewayConfig::default()
        };
        let ami = match o.ami_address {
            None => None,
            Some(address) => {
                let address = address.trim().to_string();
                if !address.contains(':') || address.contains(char::is_whitespace) {
                    return Err(user_error(format!(
                        "--ami-address {address:?} is not HOST:PORT (e.g. 127.0.0.1:5038)"
                    )));
                }
                let username = o.ami_username.ok_or_else(|| {
                    user_error("--ami-address needs --ami-username (the manager.conf user)".into())
                })?;
                let secret = o.ami_secret.unwrap_or_default();
                Some(AmiConfig::new(&address, &username, &secret))
            }
        };
        let channel_template = o
            .callback_channel
            .unwrap_or_else(|| CallbackSettings::DEFAULT_CHANNEL_TEMPLATE.into());
        check_channel_template(&channel_template)
            .map_err(|e| user_error(format!("--callback-channel: {e}")))?;
        let caller_id = match o.callback_caller_id {
            Some(c) => Some(text("callback-caller-id", Some(c), "")?),
            None => None,
        };
        let callback = CallbackSettings {
            channel_template,
            context: text(
                "callback-context",
                o.callback_context,
                CallbackSettings::DEFAULT_CONTEXT,
            )?,
            exten: text(
                "callback-exten",
                o.callback_exten,
                CallbackSettings::DEFAULT_EXTEN,
            )?,
            caller_id,
            timeout: within(
                "callback-timeout",
                duration(o.callback_timeout, CallbackSettings::DEFAULT_TIMEOUT),
                Duration::from_secs(5)..=Duration::from_secs(120),
            )?,
            ..CallbackSettings::default()
        };
        let confirm = ConfirmConfig {
            prompt: text(
                "callback-prompt",
                o.callback_prompt,
                ConfirmConfig::DEFAULT_PROMPT,
            )?,
            store_timeout: verify.store_timeout,
            ..ConfirmConfig::default()
        };
        Ok(ServeSettings {
            ami,
            callback,
            confirm,
            agi_listen: o.agi_listen.unwrap_or(DEFAULT_AGI_LISTEN),
            http_listen: o.http_listen.unwrap_or(DEFAULT_HTTP_LISTEN),
            agi,
            http,
            verify,
            gateway,
        })
    }
}
