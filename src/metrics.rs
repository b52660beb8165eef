//! Prometheus metrics served at `/metrics`.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Every metric dialgate exports.
pub struct Metrics {
    registry: Registry,
    /// FastAGI `verify` calls by DIALGATE_RESULT.
    pub calls: Family<ResultLabel, Counter>,
    /// Seconds from the environment block to the verdict.
    pub call_seconds: Histogram,
    /// HTTP logins by outcome (challenge, invalid_credentials, rate_limited, error).
    pub logins: Family<OutcomeLabel, Counter>,
    /// Seconds to answer `POST /v1/login` (Argon2id included).
    pub login_seconds: Histogram,
    /// Sessions opened by exchanging a verified challenge.
    pub sessions: Counter,
    /// Call-backs by outcome: requested, answered, busy, no_answer, congestion, failed
    /// (the Originate), confirmed, refused, confirm_no_pending, confirm_error (the
    /// `confirm` call).
    pub callbacks: Family<OutcomeLabel, Counter>,
    /// AMI logins after the first (copied from the AMI client when scraped).
    pub ami_reconnects: Gauge,
    /// 1 while the AMI link is logged in.
    pub ami_connected: Gauge,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dialgate");
        let calls = Family::<ResultLabel, Counter>::default();
        registry.register("agi_calls", "FastAGI verify calls by result", calls.clone());
        let call_seconds = Histogram::new(latency_buckets());
        registry.register(
            "agi_call_seconds",
            "Time from the AGI environment to the verdict",
            call_seconds.clone(),
        );
        let logins = Family::<OutcomeLabel, Counter>::default();
        registry.register("logins", "HTTP password logins by outcome", logins.clone());
        let login_seconds = Histogram::new(latency_buckets());
        registry.register(
            "login_seconds",
            "Time to answer POST /v1/login",
            login_seconds.clone(),
        );
        let sessions = Counter::default();
        registry.register("sessions_opened", "Sessions opened", sessions.clone());
        let callbacks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "callbacks",
            "Call-backs (AMI Originate and the confirm call) by outcome",
            callbacks.clone(),
        );
        let ami_reconnects = Gauge::default();
        registry.register(
            "ami_reconnects",
            "AMI logins after the first (reconnections of the PBX link)",
            ami_reconnects.clone(),
        );
        let ami_connected = Gauge::default();
        registry.register(
            "ami_connected",
            "1 while the AMI link is logged in",
            ami_connected.clone(),
        );
        Metrics {
            registry,
            calls,
            call_seconds,
            logins,
            login_seconds,
            sessions,
            callbacks,
            ami_reconnects,
            ami_connected,
        }
    }
}

impl Metrics {
    pub fn call(&self, result: &str, seconds: f64) {
        self.calls
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
        self.call_seconds.observe(seconds);
    }

    pub fn login(&self, outcome: &str, seconds: f64) {
        self.logins
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
        self.login_seconds.observe(seconds);
    }

    pub fn callback(&self, outcome: &str) {
        self.callbacks
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
