//! An in-process HTTP gateway on a loopback port, for the tests that drive the API over
//! real TCP without a `dialgate serve` process.

use std::sync::Arc;

use dialgate::{
    auth::login::LoginSettings,
    gateway::{self, Gateway, GatewayConfig, Hub},
    metrics::Metrics,
    phone::{normalize, Region},
    store::Store,
};
use tokio::sync::oneshot;

/// The dial-in number every in-process gateway offers.
pub const DIALIN: &str = "+861055550100";

/// Login settings with [`DIALIN`] as the only dial-in number.
pub fn login_settings() -> LoginSettings {
    LoginSettings {
        dialin_numbers: vec![normalize(DIALIN, Region::default()).unwrap()],
        ..LoginSettings::default()
    }
}

/// A gateway serving until dropped.
pub struct Node {
    pub url: String,
    pub gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
}

impl Node {
    /// Serves `store` with [`login_settings`], this node's URL as `node_url`, and what
    /// `configure` changes.
    pub async fn start(store: Store, configure: impl FnOnce(&mut GatewayConfig)) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = GatewayConfig {
            login: login_settings(),
            node_url: Some(url.clone()),
            ..GatewayConfig::default()
        };
        configure(&mut config);
        let hub = Arc::new(Hub::new(config.node_url.clone(), config.signal_key.clone()));
        let gw = Arc::new(Gateway::new(
            store,
            config,
            hub,
            Arc::new(Metrics::default()),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let closing = gw.clone();
        tokio::spawn(gateway::serve(
            listener,
            gateway::router(gw.clone()),
            async move {
                let _ = stopped.await;
                closing.close();
            },
        ));
        Node {
            url,
            gateway: gw,
            stop: Some(stop),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
