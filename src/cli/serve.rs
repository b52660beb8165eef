//! `dialgate serve`: the FastAGI server and the HTTP gateway in one process.
//! Every flag can also come from `DIALGATE_*` variables or the config file's `[serve]`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use clap::Args;
use ipnet::IpNet;
use tracing::{info, warn};

use super::{temp_password::KeyArgs, Failure, GlobalArgs};
use crate::{
    agi::{Server, ServerConfig},
    ami::{AmiClient, AmiConfig},
    auth::{
        callbacks::PendingCallbacks,
        login::{LoginSettings, MAX_CHALLENGE_TTL},
    },
    config::{Config, ServeFile},
    dialin::{
        self,
        confirm::{Confirm, ConfirmConfig},
        verify::{Mode, Trunk, Verify, VerifyConfig},
    },
    gateway::{
        self, callback::check_channel_template, CallbackSettings, Gateway, GatewayConfig, Hub,
        RateLimit,
    },
    metrics::Metrics,
    phone::{self, E164},
    store::Store,
};

#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// FastAGI address (Asterisk: `AGI(agi://HOST:PORT/SCRIPT)`). Default 127.0.0.1:4573.
    #[arg(long, env = "DIALGATE_AGI_LISTEN")]
    pub agi_listen: Option<SocketAddr>,

    /// HTTP gateway address (login API, web page, forward-auth). Default 127.0.0.1:8080.
    #[arg(long, env = "DIALGATE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// Only accept FastAGI connections from these addresses or networks (repeatable,
    /// e.g. `10.0.0.5` or `10.0.0.0/24`). Unset: any peer that can reach the port.
    #[arg(
        long = "agi-allow",
        value_name = "CIDR",
        env = "DIALGATE_AGI_ALLOW",
        value_delimiter = ','
    )]
    pub agi_allow: Vec<String>,

    /// Most calls handled at once (default 10000); further connections are closed at once.
    #[arg(long, env = "DIALGATE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Time Asterisk has to send the AGI environment block (default 5s).
    #[arg(long, env = "DIALGATE_ENV_TIMEOUT")]
    pub env_timeout: Option<String>,

    /// Time Asterisk has to answer one command (default 60s).
    #[arg(long, env = "DIALGATE_COMMAND_TIMEOUT")]
    pub command_timeout: Option<String>,

    /// On SIGINT/SIGTERM, how long calls in progress may finish (default 30s).
    #[arg(long, env = "DIALGATE_GRACE_PERIOD")]
    pub grace_period: Option<String>,

    /// A number users call to verify (repeatable: a pool, so each pending login of one
    /// caller gets its own number).
    #[arg(
        long = "dialin-number",
        value_name = "E164",
        env = "DIALGATE_DIALIN_NUMBERS",
        value_delimiter = ','
    )]
    pub dialin_numbers: Vec<String>,

    /// Channels whose caller ID is believed, as TECHNOLOGY/ENDPOINT (repeatable), matched
    /// exactly against the channel name without its -sequence suffix.
    #[arg(
        long = "trusted-trunk",
        value_name = "TECH/ENDPOINT",
        env = "DIALGATE_TRUSTED_TRUNKS",
        value_delimiter = ','
    )]
    pub trusted_trunks: Vec<String>,

    /// missed-call (default): never answer. answer: answer and play prompts.
    #[arg(long, value_enum, env = "DIALGATE_MODE")]
    pub mode: Option<Mode>,

    /// Digits of the keypad code shown on the page and typed during the call (0 = off,
    /// the default). Needs --mode answer.
    #[arg(long, env = "DIALGATE_CODE_DIGITS", value_parser = clap::value_parser!(u8).range(0..=12))]
    pub code_digits: Option<u8>,

    /// How long a login waits for the call (default 180s, at most 600s).
    #[arg(long, env = "DIALGATE_CHALLENGE_TTL")]
    pub challenge_ttl: Option<String>,

    /// How long a session lasts (default 12h).
    #[arg(long, env = "DIALGATE_SESSION_TTL")]
    pub session_ttl: Option<String>,

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
    /// (default 10; repeated lockouts double, up to an hour).
    #[arg(long, env = "DIALGATE_LOGIN_LIMIT_PER_IP", value_parser = clap::value_parser!(u32).range(1..))]
    pub login_limit_per_ip: Option<u32>,

    /// Failed logins for one username per window, from any address (default 30).
    #[arg(long, env = "DIALGATE_LOGIN_LIMIT_PER_ACCOUNT", value_parser = clap::value_parser!(u32).range(1..))]
    pub login_limit_per_account: Option<u32>,

    /// The window both login limits count in (default 60s).
    #[arg(long, env = "DIALGATE_LOGIN_LIMIT_WINDOW")]
    pub login_limit_window: Option<String>,

    #[command(flatten)]
    pub temp_password_key: KeyArgs,

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

    /// Dial string of the call-back, `{number}` being the enrolled E.164 number
    /// (default `PJSIP/{number}@carrier`).
    #[arg(long, value_name = "TEMPLATE", env = "DIALGATE_CALLBACK_CHANNEL")]
    pub callback_channel: Option<String>,

    /// Dialplan context the answered call-back runs (default `dialgate-callback`).
    #[arg(long, env = "DIALGATE_CALLBACK_CONTEXT")]
    pub callback_context: Option<String>,

    /// Extension in that context (default `s`).
    #[arg(long, env = "DIALGATE_CALLBACK_EXTEN")]
    pub callback_exten: Option<String>,

    /// Caller ID the user's phone shows, e.g. `"dialgate" <+861055550100>`.
    #[arg(long, env = "DIALGATE_CALLBACK_CALLER_ID")]
    pub callback_caller_id: Option<String>,

    /// How long the user's phone rings (default 30s).
    #[arg(long, env = "DIALGATE_CALLBACK_TIMEOUT")]
    pub callback_timeout: Option<String>,

    /// Sound the `confirm` script plays before waiting for the key 1 (default `beep`).
    #[arg(long, env = "DIALGATE_CALLBACK_PROMPT")]
    pub callback_prompt: Option<String>,
}

/// Everything `serve` runs with, resolved: flags over env over `[serve]` over defaults.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub agi_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub agi: ServerConfig,
    pub verify: VerifyConfig,
    pub gateway: GatewayConfig,
    /// `None`: AMI disabled (no call-backs).
    pub ami: Option<AmiConfig>,
    pub callback: CallbackSettings,
    pub confirm: ConfirmConfig,
}

fn duration(name: &str, text: Option<String>, default: Duration) -> Result<Duration, Failure> {
    match text {
        None => Ok(default),
        Some(text) => humantime::parse_duration(&text).map_err(|e| {
            Failure::User(anyhow::anyhow!(
                "--{name} {text:?}: {e} (write e.g. 30s, 5m, 2h)"
            ))
        }),
    }
}

fn user_error(message: String) -> Failure {
    Failure::User(anyhow::anyhow!(message))
}

fn or_file<T>(flag: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag
    }
}

impl ServeSettings {
    pub fn resolve(args: ServeArgs, config: &Config) -> Result<ServeSettings, Failure> {
        let file: ServeFile = config.serve_file.clone();
        let allow = or_file(args.agi_allow, file.agi_allow)
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
        let agi = ServerConfig {
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(10_000) as usize,
            env_timeout: duration(
                "env-timeout",
                args.env_timeout.or(file.env_timeout),
                Duration::from_secs(5),
            )?,
            command_timeout: duration(
                "command-timeout",
                args.command_timeout.or(file.command_timeout),
                Duration::from_secs(60),
            )?,
            grace_period: duration(
                "grace-period",
                args.grace_period.or(file.grace_period),
                Duration::from_secs(30),
            )?,
            allow,
            ..ServerConfig::default()
        };
        let dialin_numbers = or_file(args.dialin_numbers, file.dialin_numbers)
            .iter()
            .map(|n| {
                phone::normalize(n, config.default_region)
                    .map_err(|e| user_error(format!("--dialin-number {n:?}: {e}")))
            })
            .collect::<Result<Vec<E164>, _>>()?;
        let trusted_trunks = or_file(args.trusted_trunks, file.trusted_trunks)
            .iter()
            .map(|t| {
                t.parse::<Trunk>()
                    .map_err(|e| user_error(format!("--trusted-trunk: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let challenge_ttl = duration(
            "challenge-ttl",
            args.challenge_ttl.or(file.challenge_ttl),
            Duration::from_secs(180),
        )?;
        if challenge_ttl > MAX_CHALLENGE_TTL || challenge_ttl < Duration::from_secs(10) {
            return Err(user_error(format!(
                "--challenge-ttl {challenge_ttl:?} is outside 10s..600s: a login must not wait longer than 10 minutes"
            )));
        }
        let mode = args.mode.or(file.mode).unwrap_or(Mode::MissedCall);
        let code_digits = args.code_digits.or(file.code_digits).unwrap_or(0);
        if code_digits > 0 && mode == Mode::MissedCall {
            return Err(user_error(
                "--code-digits needs --mode answer: the caller can only type a code on an answered call".into(),
            ));
        }
        let node_url = args
            .node_url
            .or(file.node_url)
            .map(|u| u.trim_end_matches('/').to_string());
        let signal_key = args.signal_key.or(file.signal_key);
        if let Some(key) = &signal_key {
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
            session_ttl: duration(
                "session-ttl",
                args.session_ttl.or(file.session_ttl),
                Duration::from_secs(12 * 3600),
            )?,
            node_url: node_url.clone(),
            ..LoginSettings::default()
        };
        let mut verify = VerifyConfig::new(login.clone(), config.default_region);
        verify.trusted_trunks = trusted_trunks;
        verify.mode = mode;
        let defaults = RateLimit::default();
        let login_rate = RateLimit {
            per_ip: args
                .login_limit_per_ip
                .or(file.login_limit_per_ip)
                .unwrap_or(defaults.per_ip),
            per_account: args
                .login_limit_per_account
                .or(file.login_limit_per_account)
                .unwrap_or(defaults.per_account),
            window: duration(
                "login-limit-window",
                args.login_limit_window.or(file.login_limit_window),
                defaults.window,
            )?,
            ..defaults
        };
        let mut key_args = args.temp_password_key;
        if key_args.temp_password_key.is_none() {
            key_args.temp_password_key = file.temp_password_key;
        }
        let gateway = GatewayConfig {
            login,
            login_rate,
            temp_password_key: key_args.load(config)?,
            allow_long_term_payments: !(args.temporary_only_payments
                || file.temporary_only_payments.unwrap_or(false)),
            secure_cookies: !(args.insecure_cookies || file.insecure_cookies.unwrap_or(false)),
            signal_key: signal_key.map(String::into_bytes),
            node_url,
            ..GatewayConfig::default()
        };
        let ami = match args.ami_address.or(file.ami_address) {
            None => None,
            Some(address) => {
                let address = address.trim().to_string();
                if !address.contains(':') || address.contains(char::is_whitespace) {
                    return Err(user_error(format!(
                        "--ami-address {address:?} is not HOST:PORT (e.g. 127.0.0.1:5038)"
                    )));
                }
                let username = args.ami_username.or(file.ami_username).ok_or_else(|| {
                    user_error("--ami-address needs --ami-username (the manager.conf user)".into())
                })?;
                let secret = args.ami_secret.or(file.ami_secret).unwrap_or_default();
                Some(AmiConfig::new(&address, &username, &secret))
            }
        };
        let callback_defaults = CallbackSettings::default();
        let channel_template = args
            .callback_channel
            .or(file.callback_channel)
            .unwrap_or(callback_defaults.channel_template.clone());
        check_channel_template(&channel_template)
            .map_err(|e| user_error(format!("--callback-channel: {e}")))?;
        let text_flag = |name: &str, value: Option<String>, default: &str| {
            let value = value.unwrap_or_else(|| default.to_string());
            if value.is_empty() || value.contains(['\r', '\n', '\0']) {
                Err(user_error(format!(
                    "--{name} {value:?} is empty or contains CR, LF or NUL"
                )))
            } else {
                Ok(value)
            }
        };
        let callback_timeout = duration(
            "callback-timeout",
            args.callback_timeout.or(file.callback_timeout),
            callback_defaults.timeout,
        )?;
        if callback_timeout < Duration::from_secs(5) || callback_timeout > Duration::from_secs(120)
        {
            return Err(user_error(format!(
                "--callback-timeout {callback_timeout:?} is outside 5s..120s"
            )));
        }
        let caller_id = match args.callback_caller_id.or(file.callback_caller_id) {
            Some(c) => Some(text_flag("callback-caller-id", Some(c), "")?),
            None => None,
        };
        let callback = CallbackSettings {
            channel_template,
            context: text_flag(
                "callback-context",
                args.callback_context.or(file.callback_context),
                &callback_defaults.context,
            )?,
            exten: text_flag(
                "callback-exten",
                args.callback_exten.or(file.callback_exten),
                &callback_defaults.exten,
            )?,
            caller_id,
            timeout: callback_timeout,
            ..callback_defaults
        };
        let confirm = ConfirmConfig {
            prompt: text_flag(
                "callback-prompt",
                args.callback_prompt.or(file.callback_prompt),
                &ConfirmConfig::default().prompt,
            )?,
            ..ConfirmConfig::default()
        };
        Ok(ServeSettings {
            ami,
            callback,
            confirm,
            agi_listen: args
                .agi_listen
                .or(file.agi_listen)
                .unwrap_or(([127, 0, 0, 1], 4573).into()),
            http_listen: args
                .http_listen
                .or(file.http_listen)
                .unwrap_or(([127, 0, 0, 1], 8080).into()),
            agi,
            verify,
            gateway,
        })
    }
}

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), Failure> {
    let config = global.config()?;
    let settings = ServeSettings::resolve(args, &config)?;
    let store = open_store(global, &config).await?;
    run_with(store, settings, None).await
}

/// Opens (and migrates) the store on a blocking thread.
pub async fn open_store(global: &GlobalArgs, config: &Config) -> Result<Store, Failure> {
    // Before accepting anything, so a bad database URL stops the start instead of
    // failing calls later.
    let open = {
        let global = global.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || global.open_store(&config))
    };
    let store = open
        .await
        .map_err(|e| Failure::System(anyhow::anyhow!("opening the database panicked: {e}")))??;
    info!(database = %store.url(), "database ready");
    Ok(store)
}

/// Runs both servers until SIGINT/SIGTERM. `extra` adds routes (the demo's).
pub async fn run_with(
    store: Store,
    settings: ServeSettings,
    extra: Option<axum::Router>,
) -> Result<(), Failure> {
    if settings.verify.trusted_trunks.is_empty() {
        warn!(
            "no --trusted-trunk configured: caller IDs from ANY channel are believed; \
               set --trusted-trunk PJSIP/<your carrier endpoint>"
        );
    }
    if settings.gateway.login.dialin_numbers.is_empty() {
        warn!("no --dialin-number configured: logins cannot be completed");
    }
    if settings.agi.allow.is_empty() && !settings.agi_listen.ip().is_loopback() {
        warn!(listen = %settings.agi_listen,
            "FastAGI has no authentication and listens beyond loopback with no --agi-allow list");
    }
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(Hub::new(
        settings.gateway.node_url.clone(),
        settings.gateway.signal_key.clone(),
    ));
    let verify = Arc::new(Verify {
        store: store.clone(),
        config: settings.verify.clone(),
        signal: hub.clone(),
        metrics: metrics.clone(),
    });
    let callbacks = Arc::new(PendingCallbacks::default());
    let confirm = Arc::new(Confirm {
        store: store.clone(),
        config: settings.confirm.clone(),
        signal: hub.clone(),
        metrics: metrics.clone(),
        callbacks: callbacks.clone(),
    });
    let ami = match &settings.ami {
        None => {
            info!("AMI disabled (no --ami-address): call-backs are unavailable");
            AmiClient::disabled()
        }
        Some(config) => {
            let (client, _events) = AmiClient::connect(config.clone())
                .map_err(|e| Failure::User(anyhow::anyhow!("AMI: {e}")))?;
            info!(address = %config.address, username = %config.username,
                channel = %settings.callback.channel_template, "AMI enabled for call-backs");
            client
        }
    };
    let router = dialin::router()
        .route("verify", verify)
        .route("confirm", confirm);
    let agi = Server::bind(settings.agi_listen, router.clone(), settings.agi.clone())
        .await
        .map_err(|e| Failure::System(e.into()))?;
    let http_listener = tokio::net::TcpListener::bind(settings.http_listen)
        .await
        .map_err(|e| {
            Failure::System(anyhow::anyhow!(
                "cannot listen for HTTP on {}: {e}",
                settings.http_listen
            ))
        })?;
    let agi_addr = agi.local_addr().map_err(|e| Failure::System(e.into()))?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| Failure::System(e.into()))?;
    info!(addr = %agi_addr, scripts = ?router.names(), "FastAGI server listening");
    info!(addr = %http_addr, "HTTP gateway listening");
    let gateway = Arc::new(
        Gateway::new(store, settings.gateway.clone(), hub, metrics).with_callback(
            ami,
            settings.callback.clone(),
            callbacks,
        ),
    );
    let closing = gateway.clone();
    let mut app = gateway::router(gateway);
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(gateway::serve(http_listener, app, async move {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
        // Open SSE streams would otherwise hold the shutdown until their logins expire.
        closing.close();
    }));
    agi.run(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    })
    .await;
    match http.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::System(anyhow::anyhow!("HTTP gateway failed: {e}"))),
        Err(e) => Err(Failure::System(anyhow::anyhow!(
            "HTTP gateway panicked: {e}"
        ))),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutdown requested");
}
