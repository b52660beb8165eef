//! `dialgate serve`: the FastAGI server and the HTTP gateway in one process, with the
//! options of `options` (flags, `DIALGATE_*` variables, the config file's `[serve]`).

mod options;

use std::sync::Arc;

use tracing::{info, warn};

pub use self::options::{
    ServeOptions, ServeSettings, DEFAULT_AGI_LISTEN, DEFAULT_HTTP_LISTEN, RENAMED_KEYS,
};
use super::{Failure, GlobalArgs};
use crate::{
    agi::Server,
    ami::AmiClient,
    auth::callbacks::PendingCallbacks,
    config::{Config, Given},
    dialin::{self, confirm::Confirm, verify::Verify},
    gateway::{self, Gateway, Hub},
    metrics::Metrics,
    store::Store,
};

pub async fn run(global: &GlobalArgs, given: Given<ServeOptions>) -> Result<(), Failure> {
    let config = global.config()?;
    let settings = ServeSettings::resolve(ServeOptions::layered(given, &config)?, &config)?;
    let store = open_store(global, &config).await?;
    run_with(store, settings, None).await
}

/// Opens (and migrates) the store on a blocking thread.
pub async fn open_store(global: &GlobalArgs, config: &Config) -> Result<Store, Failure> {
    // Before accepting anything, so a bad database URL stops the start instead of
    // failing calls later.
    let store = {
        let global = global.clone();
        let config = config.clone();
        super::off_runtime("opening the database", move || global.open_store(&config)).await?
    };
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
    // Before any socket: the HTTP cap below is bounded by the limit in force.
    let nofile = gateway::raise_open_file_limit().unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the open-file limit; assuming 1024");
        1024
    });
    let mut http_limits = settings.http.clone();
    http_limits.max_connections = settings.http.cap_for(nofile);
    if http_limits.max_connections < settings.http.max_connections {
        warn!(
            configured = settings.http.max_connections,
            cap = http_limits.max_connections,
            open_file_limit = nofile,
            reserve = settings.http.fd_reserve,
            "HTTP connection cap lowered to fit the open-file limit minus the reserve \
             left to FastAGI (raise `ulimit -n`)"
        );
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
    info!(addr = %http_addr, max_connections = http_limits.max_connections,
        open_file_limit = nofile, "HTTP gateway listening");
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
    let http = tokio::spawn(gateway::serve_with(
        http_listener,
        app,
        http_limits,
        async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            // Open SSE streams would otherwise hold the shutdown until their logins expire.
            closing.close();
        },
    ));
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
