//! `dialgate serve`: the FastAGI server.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Args;
use ipnet::IpNet;
use tracing::{info, warn};

use super::{Failure, GlobalArgs};
use crate::{
    agi::{Server, ServerConfig},
    dialin,
};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the FastAGI server listens on (Asterisk: `AGI(agi://HOST:PORT/SCRIPT)`).
    #[arg(long, env = "DIALGATE_AGI_LISTEN", default_value = "127.0.0.1:4573")]
    pub agi_listen: SocketAddr,

    /// Only accept FastAGI connections from these addresses or networks (repeatable,
    /// e.g. `10.0.0.5` or `10.0.0.0/24`). Unset: any peer that can reach the port.
    #[arg(long = "agi-allow", value_name = "CIDR", env = "DIALGATE_AGI_ALLOW",
          value_delimiter = ',', value_parser = parse_net)]
    pub agi_allow: Vec<IpNet>,

    /// Most calls handled at once; further connections are closed at once.
    #[arg(long, env = "DIALGATE_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Time Asterisk has to send the AGI environment block.
    #[arg(long, env = "DIALGATE_ENV_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub env_timeout: Duration,

    /// Time Asterisk has to answer one command before the call is abandoned.
    #[arg(long, env = "DIALGATE_COMMAND_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,

    /// On SIGINT/SIGTERM, how long calls in progress may finish.
    #[arg(long, env = "DIALGATE_GRACE_PERIOD", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("{text:?} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)")
        })
}

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), Failure> {
    let settings = global.config()?;
    // Open (and migrate) the store before accepting calls, so a bad database URL stops
    // the start instead of failing calls later.
    let open = {
        let global = global.clone();
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || global.open_store(&settings))
    };
    let store = open
        .await
        .map_err(|e| Failure::System(anyhow::anyhow!("opening the database panicked: {e}")))??;
    info!(database = %store.url(), "database ready");
    let config = ServerConfig {
        max_connections: args.max_connections as usize,
        env_timeout: args.env_timeout,
        command_timeout: args.command_timeout,
        grace_period: args.grace_period,
        allow: args.agi_allow,
        ..ServerConfig::default()
    };
    if config.allow.is_empty() && !args.agi_listen.ip().is_loopback() {
        warn!(listen = %args.agi_listen,
            "FastAGI has no authentication and listens beyond loopback with no --agi-allow list");
    }
    let router = dialin::router();
    let server = Server::bind(args.agi_listen, router.clone(), config)
        .await
        .map_err(|e| Failure::System(e.into()))?;
    let addr = server
        .local_addr()
        .context("reading the bound address")
        .map_err(Failure::System)?;
    info!(%addr, scripts = ?router.names(), "FastAGI server listening");
    server.run(shutdown_signal()).await;
    Ok(())
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
