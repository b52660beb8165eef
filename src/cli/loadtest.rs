//! `dialgate loadtest`: measures a FastAGI server (dialgate or any other) under load.
//!
//! * `agi` plays Asterisk over real TCP, N calls C at a time (optionally at a fixed
//!   rate), and reports calls/s, connect-to-close latency percentiles (HDR histogram),
//!   results by `DIALGATE_RESULT` and errors. `--hold` keeps calls open to measure
//!   concurrency and memory.
//! * `prepare-challenges` (bench only) writes pending login challenges straight into
//!   the store so `verify` can be loaded with calls that succeed.
//! * `baseline-server` (hidden) is the protocol ceiling: a FastAGI responder that parses
//!   nothing and answers one canned line.
//! * `login` runs the whole dial-in login per simulated user (HTTP login, SSE, the
//!   FastAGI verify call, the `verified` event, the session exchange); `--prepare`
//!   (bench only) creates the users' accounts first.
//! * `payments` makes concurrent payments on one temporary password.
//! * `argon2` (hidden) measures the raw Argon2id rate on every core, the ceiling of
//!   `login`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::anyhow;
use clap::{Args, Subcommand};
use diesel::prelude::*;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{Failure, GlobalArgs};
use crate::{
    agi::{
        loadgen::{lean_call, EnvTemplate, LeanOptions},
        peer::CallSpec,
    },
    auth::{login::token_hash, passwords},
    phone::{self, E164},
    store::{
        models::{NewAccount, NewPhone},
        now_ms,
        schema::{accounts, login_challenges, phones},
    },
};

#[derive(Debug, Args)]
pub struct LoadtestArgs {
    #[command(subcommand)]
    pub command: LoadtestCommand,
}

#[derive(Debug, Subcommand)]
pub enum LoadtestCommand {
    /// Play Asterisk: place N calls to a FastAGI script, C at a time, and report calls/s,
    /// latency percentiles, results and errors.
    Agi(AgiLoadArgs),
    /// BENCH ONLY: write an account per caller and COUNT pending login challenges
    /// straight into the database (one Argon2 hash for all), so `loadtest agi --script
    /// verify` gets successful verifications. Never run it on a production database.
    PrepareChallenges(PrepareArgs),
    /// The protocol ceiling: a FastAGI responder that parses nothing (reads to the blank
    /// line, writes `SET VARIABLE DIALGATE_RESULT pong`, reads one line, closes).
    #[command(hide = true)]
    BaselineServer(BaselineArgs),
    /// The whole dial-in login per simulated user: POST /v1/login, the SSE stream, the
    /// FastAGI verify call from the user's phone, the `verified` event, POST
    /// /v1/login/{id}/session. Reports flows/s, latency per step and failures by step.
    Login(LoginLoadArgs),
    /// Concurrent POST /v1/payments on one temporary password, each with its own
    /// Idempotency-Key; reports approved/declined by reason, payments/s and latency.
    Payments(PaymentsLoadArgs),
    /// The raw Argon2id rate: hash (or verify) on every core for a while, report per second.
    #[command(hide = true)]
    Argon2(Argon2Args),
}

#[derive(Debug, Args)]
pub struct AgiLoadArgs {
    /// The FastAGI server, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:4573")]
    pub target: String,

    /// Script path after `agi://host:port/` (`ping`, `verify`, `verify?mode=code`).
    #[arg(long, default_value = "ping")]
    pub script: String,

    /// Calls to place in all.
    #[arg(long, default_value_t = 10_000)]
    pub calls: u64,

    /// Calls in progress at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Start calls at this many per second (open loop, still at most --concurrency at
    /// once) instead of as fast as the server answers.
    #[arg(long, value_name = "CALLS_PER_S")]
    pub rate: Option<f64>,

    /// Caller numbers, one per line (call i uses line i modulo their count).
    #[arg(long, value_name = "FILE", conflicts_with = "caller_range")]
    pub callers: Option<PathBuf>,

    /// Caller numbers A..=B, e.g. +8613900000000-+8613900009999 (call i uses A + i
    /// modulo the range's size).
    #[arg(long, value_name = "A-B")]
    pub caller_range: Option<String>,

    /// The number dialled (agi_dnid, agi_extension and agi_arg_1).
    #[arg(long, value_name = "NUMBER", default_value = "+861055550100")]
    pub to: String,

    /// Keep each call open this long (the reply to the server's first command is
    /// delayed, as a caller slow to type in GET DATA), to measure concurrency and memory.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub hold: Option<Duration>,

    /// What the caller types when asked (GET DATA / WAIT FOR DIGIT).
    #[arg(long, value_name = "DIGITS")]
    pub digits: Option<String>,

    /// The channel name (its technology becomes agi_type).
    #[arg(long, default_value = "PJSIP/carrier-00000001")]
    pub channel: String,

    /// Spread loopback calls over this many source addresses (127.0.0.1, .2, ...), so
    /// long runs do not run out of local ports. 0: let the system choose.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=250))]
    pub source_ips: u8,

    /// Longest wait for a call to end (on top of --hold).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok(Duration::from_secs_f64(seconds));
        }
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (write e.g. 20 or 20s)"))
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Pending challenges to create.
    #[arg(long)]
    pub count: u64,

    /// Caller numbers A..=B; challenge i belongs to caller A + i modulo the range.
    #[arg(long, value_name = "A-B")]
    pub caller_range: String,

    /// The dial-in number the challenges wait on (match `loadtest agi --to`).
    #[arg(long, value_name = "NUMBER", default_value = "+861055550100")]
    pub to: String,

    /// Password of the created accounts (hashed once, shared by all).
    #[arg(long, default_value = "loadtest-password")]
    pub password: String,

    /// Usernames are PREFIX + the caller's digits.
    #[arg(long, default_value = "loadtest-")]
    pub username_prefix: String,

    /// How long the challenges stay pending (bench only: longer than logins allow).
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4599")]
    pub listen: SocketAddr,
}

pub async fn run(global: &GlobalArgs, args: LoadtestArgs) -> Result<(), Failure> {
    match args.command {
        LoadtestCommand::Agi(args) => run_agi(global, args).await,
        LoadtestCommand::BaselineServer(args) => baseline_server(args).await,
        LoadtestCommand::Login(args) => run_login(global, args).await,
        LoadtestCommand::Payments(args) => run_payments(global, args).await,
        LoadtestCommand::Argon2(args) => {
            let global = global.clone();
            tokio::task::spawn_blocking(move || run_argon2(global, args))
                .await
                .unwrap_or_else(|e| Err(Failure::System(anyhow!("argon2 panicked: {e}"))))
        }
        LoadtestCommand::PrepareChallenges(args) => {
            let global = global.clone();
            tokio::task::spawn_blocking(move || prepare_challenges(&global, args))
                .await
                .unwrap_or_else(|e| Err(Failure::System(anyhow!("preparing panicked: {e}"))))
        }
    }
}

fn user(message: String) -> Failure {
    Failure::User(anyhow!(message))
}

/// `A-B` to the numbers between, inclusive, keeping A's `+` and digit count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerRange {
    plus: bool,
    width: usize,
    first: u64,
    count: u64,
}

impl CallerRange {
    pub fn parse(text: &str) -> Result<CallerRange, String> {
        let bad =
            || format!("{text:?} is not a caller range A-B (e.g. +8613900000000-+8613900009999)");
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let digits = |s: &str| -> Result<(bool, String), String> {
            let s = s.trim();
            let (plus, rest) = match s.strip_prefix('+') {
                Some(rest) => (true, rest),
                None => (false, s),
            };
            if rest.is_empty() || rest.len() > 18 || !rest.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            Ok((plus, rest.to_string()))
        };
        let (plus, a) = digits(a)?;
        let (_, b) = digits(b)?;
        let first: u64 = a.parse().map_err(|_| bad())?;
        let last: u64 = b.parse().map_err(|_| bad())?;
        if last < first {
            return Err(format!("caller range {text:?}: B is below A"));
        }
        Ok(CallerRange {
            plus,
            width: a.len(),
            first,
            count: last - first + 1,
        })
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The i-th number (wrapping around).
    pub fn number(&self, i: u64) -> String {
        let n = self.first + i % self.count;
        format!(
            "{}{n:0width$}",
            if self.plus { "+" } else { "" },
            width = self.width
        )
    }
}

enum Callers {
    None,
    List(Vec<String>),
    Range(CallerRange),
}

impl Callers {
    fn number(&self, i: u64) -> Option<String> {
        match self {
            Callers::None => None,
            Callers::List(list) => Some(list[(i % list.len() as u64) as usize].clone()),
            Callers::Range(range) => Some(range.number(i)),
        }
    }
}

fn resolve_target(target: &str) -> Result<SocketAddr, Failure> {
    use std::net::ToSocketAddrs;
    target
        .to_socket_addrs()
        .map_err(|e| user(format!("--target {target:?}: {e} (write HOST:PORT)")))?
        .next()
        .ok_or_else(|| user(format!("--target {target:?} resolves to no address")))
}

/// Percentiles of connect-to-close latency, in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

#[derive(Debug, Serialize)]
pub struct AgiReport {
    pub target: String,
    pub script: String,
    pub calls: u64,
    pub concurrency: u32,
    pub rate: Option<f64>,
    pub hold_s: f64,
    pub elapsed_s: f64,
    pub completed: u64,
    pub failed: u64,
    pub calls_per_s: f64,
    pub latency: Latency,
    /// Completed calls by their `DIALGATE_RESULT` (`(none)` when unset).
    pub results: BTreeMap<String, u64>,
    /// Failed calls by kind, with one example message each.
    pub errors: BTreeMap<String, u64>,
    pub error_examples: BTreeMap<String, String>,
    /// Most calls held at once (with --hold).
    pub peak_held: usize,
    /// With --rate: the latest any call started after its scheduled time.
    pub max_start_lag_ms: Option<f64>,
}

struct WorkerStats {
    histogram: Histogram<u64>,
    results: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
    max_lag: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

async fn run_agi(global: &GlobalArgs, args: AgiLoadArgs) -> Result<(), Failure> {
    let target = resolve_target(&args.target)?;
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(user(format!("--rate {rate} must be above 0")));
        }
    }
    let callers = match (&args.callers, &args.caller_range) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| user(format!("cannot read {}: {e}", file.display())))?;
            let list: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            if list.is_empty() {
                return Err(user(format!("{} lists no caller", file.display())));
            }
            Callers::List(list)
        }
        (None, Some(range)) => Callers::Range(CallerRange::parse(range).map_err(user)?),
        (None, None) => Callers::None,
    };
    let spec = CallSpec {
        script: args.script.trim_start_matches('/').to_string(),
        channel: args.channel.clone(),
        dnid: Some(args.to.clone()),
        extension: args.to.clone(),
        context: "dialin".into(),
        args: vec![args.to.clone()],
        ..CallSpec::default()
    };
    let template = Arc::new(EnvTemplate::new(&spec, target));
    let hold = args.hold.unwrap_or_default();
    let options = LeanOptions {
        channel: args.channel.clone(),
        digits: args.digits.clone(),
        hold,
        timeout: args.timeout,
        source_ip: None,
    };
    let callers = Arc::new(callers);
    let next = Arc::new(AtomicU64::new(0));
    let holding = Arc::new(AtomicUsize::new(0));
    let peak_held = Arc::new(AtomicUsize::new(0));
    let calls = args.calls;
    let rate = args.rate;
    let loopback_v4 = matches!(target.ip(), IpAddr::V4(ip) if ip.is_loopback());
    let source_ips = if loopback_v4 { args.source_ips } else { 0 };
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();

    // Peak of held calls, sampled.
    let watcher = (!hold.is_zero()).then(|| {
        let holding = holding.clone();
        let peak = peak_held.clone();
        tokio::spawn(async move {
            let mut announced = false;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let now = holding.load(Ordering::Relaxed);
                peak.fetch_max(now, Ordering::Relaxed);
                if !announced && now as u64 >= calls.min(u64::from(u32::MAX)) {
                    announced = true;
                    eprintln!("loadtest: holding {now} calls");
                }
            }
        })
    });

    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency.min(calls.max(1) as u32) {
        let template = template.clone();
        let callers = callers.clone();
        let next = next.clone();
        let holding = holding.clone();
        let mut options = options.clone();
        if source_ips > 0 {
            options.source_ip = Some(IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (w % u32::from(source_ips)) as u8,
            )));
        }
        workers.push(tokio::spawn(async move {
            let mut stats = WorkerStats {
                histogram: histogram(),
                results: BTreeMap::new(),
                errors: BTreeMap::new(),
                examples: BTreeMap::new(),
                max_lag: Duration::ZERO,
            };
            let mut env = Vec::with_capacity(1024);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    break;
                }
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        tokio::time::sleep_until(due.into()).await;
                    } else {
                        stats.max_lag = stats.max_lag.max(now - due);
                    }
                }
                env.clear();
                let caller = callers.number(i);
                let uniqueid = format!("{run_id}.{i}");
                template.render(caller.as_deref(), &uniqueid, &mut env);
                let call_started = Instant::now();
                match lean_call(target, &env, &options, &holding).await {
                    Ok(outcome) => {
                        let us = call_started.elapsed().as_micros() as u64;
                        stats.histogram.saturating_record(us.max(1));
                        let key = outcome.result.unwrap_or_else(|| "(none)".into());
                        *stats.results.entry(key).or_default() += 1;
                    }
                    Err(e) => {
                        let kind = e.kind().to_string();
                        *stats.errors.entry(kind.clone()).or_default() += 1;
                        stats.examples.entry(kind).or_insert_with(|| e.to_string());
                    }
                }
            }
            stats
        }));
    }
    let mut histogram = histogram();
    let mut results = BTreeMap::new();
    let mut errors = BTreeMap::new();
    let mut examples = BTreeMap::new();
    let mut max_lag = Duration::ZERO;
    for worker in workers {
        let stats = worker
            .await
            .map_err(|e| Failure::System(anyhow!("a load worker panicked: {e}")))?;
        histogram
            .add(&stats.histogram)
            .map_err(|e| Failure::System(anyhow!("merging histograms: {e}")))?;
        for (k, v) in stats.results {
            *results.entry(k).or_default() += v;
        }
        for (k, v) in stats.errors {
            *errors.entry(k).or_default() += v;
        }
        for (k, v) in stats.examples {
            examples.entry(k).or_insert(v);
        }
        max_lag = max_lag.max(stats.max_lag);
    }
    let elapsed = started.elapsed();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let completed = histogram.len();
    let failed: u64 = errors.values().sum();
    let report = AgiReport {
        target: target.to_string(),
        script: spec.script.clone(),
        calls,
        concurrency: args.concurrency,
        rate,
        hold_s: hold.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        completed,
        failed,
        calls_per_s: completed as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Latency {
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p99_9_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: if completed > 0 { histogram.mean() } else { 0.0 },
        },
        results,
        errors,
        error_examples: examples,
        peak_held: peak_held.load(Ordering::Relaxed),
        max_start_lag_ms: rate.map(|_| max_lag.as_secs_f64() * 1000.0),
    };
    if completed == 0 && failed > 0 && report.errors.keys().all(|k| k.starts_with("connect")) {
        let example = report.error_examples.values().next().cloned();
        return Err(Failure::System(anyhow!(
            "no call reached {target}: {}",
            example.unwrap_or_default()
        )));
    }
    global.emit(&report, human_report);
    Ok(())
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn human_report(r: &AgiReport) -> String {
    let mut text = format!(
        "{} calls to agi://{}/{} ({} at once{}{}) in {:.2} s\n",
        r.calls,
        r.target,
        r.script,
        r.concurrency,
        r.rate.map(|x| format!(", {x} /s")).unwrap_or_default(),
        if r.hold_s > 0.0 {
            format!(", held {} s", r.hold_s)
        } else {
            String::new()
        },
        r.elapsed_s
    );
    text += &format!(
        "  completed {}  failed {}  => {:.0} calls/s\n",
        r.completed, r.failed, r.calls_per_s
    );
    let l = &r.latency;
    text += &format!(
        "  latency connect->close: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p99_9_us),
        ms(l.max_us)
    );
    let results: Vec<String> = r.results.iter().map(|(k, v)| format!("{k}={v}")).collect();
    text += &format!("  results: {}\n", results.join(" "));
    if r.peak_held > 0 {
        text += &format!("  peak held at once: {}\n", r.peak_held);
    }
    if let Some(lag) = r.max_start_lag_ms {
        text += &format!("  latest start behind schedule: {lag:.1} ms\n");
    }
    for (kind, n) in &r.errors {
        text += &format!(
            "  error {kind}: {n} (e.g. {})\n",
            r.error_examples.get(kind).map_or("", String::as_str)
        );
    }
    text.trim_end().to_string()
}

/// The canned-reply responder.
async fn baseline_server(args: BaselineArgs) -> Result<(), Failure> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::System(anyhow!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::System(e.into()))?;
    eprintln!("baseline FastAGI responder listening on {addr}");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(baseline_call(stream));
                }
                // Out of descriptors and the like: back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            _ = super::serve::shutdown_signal() => return Ok(()),
        }
    }
}

async fn baseline_call(mut stream: TcpStream) {
    stream.set_nodelay(true).ok();
    let mut buf = [0u8; 1024];
    // Read to the blank line that ends the environment (`\n\n`).
    let mut previous_newline = false;
    let mut leftover = 0..0;
    'env: loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' {
                if previous_newline {
                    leftover = i + 1..n;
                    break 'env;
                }
                previous_newline = true;
            } else if b != b'\r' {
                previous_newline = false;
            }
        }
    }
    if stream
        .write_all(b"SET VARIABLE DIALGATE_RESULT pong\n")
        .await
        .is_err()
    {
        return;
    }
    // One reply line (it may have arrived with the environment).
    if buf[leftover].contains(&b'\n') {
        return;
    }
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if buf[..n].contains(&b'\n') => return,
            Ok(_) => {}
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PrepareReport {
    pub database: String,
    pub challenges_created: u64,
    pub accounts_created: u64,
    pub callers: u64,
    pub dial_number: String,
    pub expires_at_ms: i64,
    pub seconds: f64,
}

fn prepare_challenges(global: &GlobalArgs, args: PrepareArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let config = global.config()?;
    let range = CallerRange::parse(&args.caller_range).map_err(user)?;
    let region = config.default_region;
    let to =
        phone::normalize(&args.to, region).map_err(|e| user(format!("--to {:?}: {e}", args.to)))?;
    let callers_used = range.len().min(args.count.max(1));
    let callers: Vec<E164> = (0..callers_used)
        .map(|i| {
            let n = range.number(i);
            phone::normalize(&n, region).map_err(|e| user(format!("caller {n:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let store = global.open_store(&config)?;
    let hash = passwords::hash(&args.password);
    let now = now_ms();
    let expires_at_ms = now + args.ttl.as_millis() as i64;
    let system = |e: diesel::result::Error| Failure::System(e.into());
    let mut conn = store.conn().map_err(|e| Failure::System(e.into()))?;
    let prefix = args.username_prefix.clone();
    let (accounts_created, challenges_created) = conn
        .transaction::<_, diesel::result::Error, _>(|conn| {
            let (created, ids) =
                ensure_accounts(conn, &callers, &prefix, &hash, &config.currency, now)?;
            for i in 0..args.count {
                let k = (i % callers.len() as u64) as usize;
                let id = crate::auth::login::random_token(12);
                diesel::insert_into(login_challenges::table)
                    .values((
                        login_challenges::id.eq(&id),
                        login_challenges::account_id.eq(ids[k]),
                        login_challenges::caller_e164.eq(callers[k].as_str()),
                        login_challenges::dial_number.eq(to.as_str()),
                        login_challenges::secret_hash.eq(token_hash(&id)),
                        login_challenges::status.eq(crate::store::states::LoginStatus::Pending),
                        login_challenges::attempts.eq(0),
                        login_challenges::created_at.eq(now),
                        login_challenges::expires_at.eq(expires_at_ms),
                    ))
                    .execute(conn)?;
            }
            Ok((created, args.count))
        })
        .map_err(system)?;
    let report = PrepareReport {
        database: store.url().to_string(),
        challenges_created,
        accounts_created,
        callers: callers.len() as u64,
        dial_number: to.to_string(),
        expires_at_ms,
        seconds: started.elapsed().as_secs_f64(),
    };
    global.emit(&report, |r| {
        format!(
            "{} pending challenges for {} callers on {} in {} ({} new accounts, {:.1} s)\n\
             load them with: dialgate loadtest agi --script verify --caller-range {} --to {} --calls {}",
            r.challenges_created,
            r.callers,
            r.dial_number,
            r.database,
            r.accounts_created,
            r.seconds,
            args.caller_range,
            r.dial_number,
            r.challenges_created,
        )
    });
    Ok(())
}

/// Creates the account (username PREFIX + digits, password `hash`) and phone of every
/// caller that has none yet; returns how many were created and every caller's account id.
fn ensure_accounts(
    conn: &mut crate::store::DbConnection,
    callers: &[E164],
    prefix: &str,
    hash: &str,
    currency: &str,
    now: i64,
) -> Result<(u64, Vec<i64>), diesel::result::Error> {
    let existing: BTreeMap<String, i64> = accounts::table
        .filter(accounts::username.like(format!("{prefix}%")))
        .select((accounts::username, accounts::id))
        .load::<(String, i64)>(conn)?
        .into_iter()
        .collect();
    let mut created = 0u64;
    let mut ids = Vec::with_capacity(callers.len());
    for e164 in callers {
        let name = format!("{prefix}{}", e164.digits());
        let id = match existing.get(&name) {
            Some(&id) => id,
            None => {
                diesel::insert_into(accounts::table)
                    .values(NewAccount {
                        username: &name,
                        password_hash: hash,
                        display_name: "Load Test",
                        status: crate::store::states::AccountStatus::Active.as_str(),
                        currency,
                        password_changed_at: now,
                        created_at: now,
                        updated_at: now,
                    })
                    .execute(conn)?;
                let id: i64 = accounts::table
                    .filter(accounts::username.eq(&name))
                    .select(accounts::id)
                    .first(conn)?;
                diesel::insert_into(phones::table)
                    .values(NewPhone {
                        account_id: id,
                        e164: e164.as_str(),
                        created_at: now,
                    })
                    .execute(conn)?;
                created += 1;
                id
            }
        };
        ids.push(id);
    }
    Ok((created, ids))
}

// ---------------------------------------------------------------------------------------
// HTTP helpers (hyper-util's legacy client, HTTP/1.1, keep-alive pool)
// ---------------------------------------------------------------------------------------

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

fn http_client(concurrency: u32) -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(concurrency as usize * 2)
        .build_http()
}

fn http_request(
    method: hyper::Method,
    uri: &str,
    bearer: Option<&str>,
    extra: Option<(&str, &str)>,
    body: Option<&serde_json::Value>,
) -> Result<hyper::Request<http_body_util::Full<bytes::Bytes>>, String> {
    let mut builder = hyper::Request::builder().method(method).uri(uri);
    if let Some(token) = bearer {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if let Some((name, value)) = extra {
        builder = builder.header(name, value);
    }
    let bytes = match body {
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            bytes::Bytes::from(json.to_string())
        }
        None => bytes::Bytes::new(),
    };
    builder
        .body(http_body_util::Full::new(bytes))
        .map_err(|e| format!("building the request: {e}"))
}

/// Sends a request and reads the whole answer: (status, body).
async fn http_call(
    client: &HttpClient,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(u16, bytes::Bytes), String> {
    use http_body_util::BodyExt;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

fn latency(h: &Histogram<u64>) -> Latency {
    let empty = h.is_empty();
    Latency {
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p99_9_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        mean_us: if empty { 0.0 } else { h.mean() },
    }
}

fn latency_line(name: &str, l: &Latency) -> String {
    format!(
        "  {name:<14} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p99_9_us),
        ms(l.max_us)
    )
}

fn run_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

// ---------------------------------------------------------------------------------------
// loadtest login
// ---------------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct LoginLoadArgs {
    /// The HTTP gateway, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub target_http: String,

    /// The FastAGI server, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:4573")]
    pub target_agi: String,

    /// Simulated users (one login flow each).
    #[arg(long, default_value_t = 100)]
    pub users: u64,

    /// Flows in progress at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// The users' password.
    #[arg(long, default_value = "loadtest-password")]
    pub password: String,

    /// The users' phones A..=B: user i calls from A + i and is named PREFIX + its digits
    /// (the accounts `prepare-challenges` and `--prepare` create).
    #[arg(
        long,
        value_name = "A-B",
        default_value = "+8613900000000-+8613999999999"
    )]
    pub caller_range: String,

    /// Usernames are PREFIX + the caller's digits.
    #[arg(long, default_value = "loadtest-")]
    pub username_prefix: String,

    /// BENCH ONLY: first create the N accounts (one Argon2 hash shared by all) in the
    /// database of --database-url, which must be the server's.
    #[arg(long)]
    pub prepare: bool,

    /// The FastAGI script of the verify call.
    #[arg(long, default_value = "verify")]
    pub script: String,

    /// Longest wait for one step.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

const LOGIN_STEPS: [&str; 5] = ["login", "sse_open", "call", "verified_event", "session"];

#[derive(Debug, Serialize)]
pub struct LoginReport {
    pub target_http: String,
    pub target_agi: String,
    pub users: u64,
    pub concurrency: u32,
    pub accounts_prepared: Option<u64>,
    pub elapsed_s: f64,
    pub completed: u64,
    pub failed: u64,
    pub flows_per_s: f64,
    pub end_to_end: Latency,
    /// Latency of each step: login, sse_open, call, verified_event, session.
    pub steps: BTreeMap<String, Latency>,
    /// Failed flows by the step that failed, with one example message each.
    pub failures: BTreeMap<String, u64>,
    pub failure_examples: BTreeMap<String, String>,
}

struct FlowStats {
    end_to_end: Histogram<u64>,
    steps: Vec<Histogram<u64>>,
    failures: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
}

/// Context shared by the login workers.
struct LoginContext {
    client: HttpClient,
    base: String,
    agi: SocketAddr,
    password: String,
    script: String,
    timeout: Duration,
    holding: AtomicUsize,
}

/// One flow's failure: the step and why.
type StepError = (usize, String);

async fn timed_step<T>(
    step: usize,
    timeout: Duration,
    histograms: &mut [Histogram<u64>],
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, StepError> {
    let started = Instant::now();
    let value = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => return Err((step, e)),
        Err(_) => return Err((step, format!("no answer within {timeout:?}"))),
    };
    let us = started.elapsed().as_micros() as u64;
    histograms[step].saturating_record(us.max(1));
    Ok(value)
}

async fn login_flow(
    ctx: &LoginContext,
    username: &str,
    caller: &str,
    uniqueid: &str,
    h: &mut [Histogram<u64>],
) -> Result<(), StepError> {
    use http_body_util::BodyExt;
    let t = ctx.timeout;
    // 1. POST /v1/login
    let started = serde_json::json!({ "username": username, "password": ctx.password });
    let body = timed_step(0, t, h, async {
        let request = http_request(
            hyper::Method::POST,
            &format!("{}/v1/login", ctx.base),
            None,
            None,
            Some(&started),
        )?;
        let (status, body) = http_call(&ctx.client, request).await?;
        if status != 200 {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| format!("JSON: {e}"))
    })
    .await?;
    let field = |name: &str| body[name].as_str().map(str::to_string);
    let (Some(id), Some(secret), Some(dial)) =
        (field("challenge_id"), field("secret"), field("dial_number"))
    else {
        return Err((0, format!("unexpected answer: {body}")));
    };
    let code = field("code");
    // 2. GET /v1/login/{id}/events (the handler subscribes before it answers).
    let events_uri = format!("{}/v1/login/{id}/events", ctx.base);
    let mut events = timed_step(1, t, h, async {
        let request = http_request(hyper::Method::GET, &events_uri, Some(&secret), None, None)?;
        let response = ctx
            .client
            .request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        if response.status() != 200 {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        Ok(response.into_body())
    })
    .await?;
    // 3. The verify call from the user's phone to the dial-in number.
    let spec = CallSpec {
        script: ctx.script.trim_start_matches('/').to_string(),
        channel: "PJSIP/carrier-00000001".into(),
        dnid: Some(dial.clone()),
        extension: dial.clone(),
        context: "dialin".into(),
        args: vec![dial.clone()],
        ..CallSpec::default()
    };
    let mut env = Vec::with_capacity(1024);
    EnvTemplate::new(&spec, ctx.agi).render(Some(caller), uniqueid, &mut env);
    let options = LeanOptions {
        channel: spec.channel.clone(),
        digits: code.map(|c| format!("{c}#")),
        hold: Duration::ZERO,
        timeout: t,
        source_ip: None,
    };
    timed_step(2, t, h, async {
        let outcome = lean_call(ctx.agi, &env, &options, &ctx.holding)
            .await
            .map_err(|e| e.to_string())?;
        match outcome.result.as_deref() {
            Some("verified") => Ok(()),
            other => Err(format!("DIALGATE_RESULT {}", other.unwrap_or("(none)"))),
        }
    })
    .await?;
    // 4. Wait for `event: verified` on the stream.
    timed_step(3, t, h, async {
        let mut text = String::new();
        loop {
            match events.frame().await {
                None => return Err(format!("the stream ended without `verified`: {text:?}")),
                Some(Err(e)) => return Err(format!("reading the stream: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        text.push_str(&String::from_utf8_lossy(&data));
                    }
                }
            }
            for line in text.lines() {
                match line.trim().strip_prefix("event:").map(str::trim) {
                    Some("verified") => return Ok(()),
                    Some(end @ ("failed" | "expired")) => {
                        return Err(format!("event {end}: {text:?}"))
                    }
                    _ => {}
                }
            }
        }
    })
    .await?;
    drop(events);
    // 5. POST /v1/login/{id}/session
    timed_step(4, t, h, async {
        let request = http_request(
            hyper::Method::POST,
            &format!("{}/v1/login/{id}/session", ctx.base),
            Some(&secret),
            None,
            None,
        )?;
        let (status, body) = http_call(&ctx.client, request).await?;
        if status != 200 {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    })
    .await
}

fn prepare_login_accounts(
    global: &GlobalArgs,
    callers: &[E164],
    prefix: &str,
    password: &str,
) -> Result<u64, Failure> {
    let config = global.config()?;
    let store = global.open_store(&config)?;
    let hash = passwords::hash(password);
    let mut conn = store.conn().map_err(|e| Failure::System(e.into()))?;
    let (created, _) = conn
        .transaction::<_, diesel::result::Error, _>(|conn| {
            ensure_accounts(conn, callers, prefix, &hash, &config.currency, now_ms())
        })
        .map_err(|e| Failure::System(e.into()))?;
    Ok(created)
}

async fn run_login(global: &GlobalArgs, args: LoginLoadArgs) -> Result<(), Failure> {
    let http = resolve_target(&args.target_http)?;
    let agi = resolve_target(&args.target_agi)?;
    let config = global.config()?;
    let range = CallerRange::parse(&args.caller_range).map_err(user)?;
    if range.len() < args.users {
        return Err(user(format!(
            "--caller-range {} has fewer numbers than --users {}",
            args.caller_range, args.users
        )));
    }
    let callers: Vec<E164> = (0..args.users)
        .map(|i| {
            let n = range.number(i);
            phone::normalize(&n, config.default_region)
                .map_err(|e| user(format!("caller {n:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let accounts_prepared = if args.prepare {
        let (global, callers, prefix, password) = (
            global.clone(),
            callers.clone(),
            args.username_prefix.clone(),
            args.password.clone(),
        );
        Some(
            tokio::task::spawn_blocking(move || {
                prepare_login_accounts(&global, &callers, &prefix, &password)
            })
            .await
            .unwrap_or_else(|e| Err(Failure::System(anyhow!("preparing panicked: {e}"))))?,
        )
    } else {
        None
    };
    let ctx = Arc::new(LoginContext {
        client: http_client(args.concurrency),
        base: format!("http://{http}"),
        agi,
        password: args.password.clone(),
        script: args.script.clone(),
        timeout: args.timeout,
        holding: AtomicUsize::new(0),
    });
    let callers = Arc::new(callers);
    let next = Arc::new(AtomicU64::new(0));
    let users = args.users;
    let run = run_id();
    let prefix = Arc::new(args.username_prefix.clone());
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(users.max(1) as u32) {
        let (ctx, callers, next, prefix) =
            (ctx.clone(), callers.clone(), next.clone(), prefix.clone());
        workers.push(tokio::spawn(async move {
            let mut stats = FlowStats {
                end_to_end: histogram(),
                steps: LOGIN_STEPS.iter().map(|_| histogram()).collect(),
                failures: BTreeMap::new(),
                examples: BTreeMap::new(),
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    break;
                }
                let caller = &callers[i as usize];
                let username = format!("{prefix}{}", caller.digits());
                let uniqueid = format!("{run}.{i}");
                let flow_started = Instant::now();
                match login_flow(
                    &ctx,
                    &username,
                    caller.as_str(),
                    &uniqueid,
                    &mut stats.steps,
                )
                .await
                {
                    Ok(()) => {
                        let us = flow_started.elapsed().as_micros() as u64;
                        stats.end_to_end.saturating_record(us.max(1));
                    }
                    Err((step, message)) => {
                        let step = LOGIN_STEPS[step].to_string();
                        *stats.failures.entry(step.clone()).or_default() += 1;
                        stats.examples.entry(step).or_insert(message);
                    }
                }
            }
            stats
        }));
    }
    let mut end_to_end = histogram();
    let mut steps: Vec<Histogram<u64>> = LOGIN_STEPS.iter().map(|_| histogram()).collect();
    let mut failures = BTreeMap::new();
    let mut examples = BTreeMap::new();
    let merge = |e: hdrhistogram::errors::AdditionError| {
        Failure::System(anyhow!("merging histograms: {e}"))
    };
    for worker in workers {
        let stats = worker
            .await
            .map_err(|e| Failure::System(anyhow!("a load worker panicked: {e}")))?;
        end_to_end.add(&stats.end_to_end).map_err(merge)?;
        for (all, one) in steps.iter_mut().zip(&stats.steps) {
            all.add(one).map_err(merge)?;
        }
        for (k, v) in stats.failures {
            *failures.entry(k).or_default() += v;
        }
        for (k, v) in stats.examples {
            examples.entry(k).or_insert(v);
        }
    }
    let elapsed = started.elapsed();
    let completed = end_to_end.len();
    let report = LoginReport {
        target_http: http.to_string(),
        target_agi: agi.to_string(),
        users,
        concurrency: args.concurrency,
        accounts_prepared,
        elapsed_s: elapsed.as_secs_f64(),
        completed,
        failed: failures.values().sum(),
        flows_per_s: completed as f64 / elapsed.as_secs_f64().max(1e-9),
        end_to_end: latency(&end_to_end),
        steps: LOGIN_STEPS
            .iter()
            .zip(&steps)
            .map(|(name, h)| (name.to_string(), latency(h)))
            .collect(),
        failures,
        failure_examples: examples,
    };
    global.emit(&report, |r| {
        let mut text = format!(
            "{} login flows (http://{}, agi://{}, {} at once) in {:.2} s\n",
            r.users, r.target_http, r.target_agi, r.concurrency, r.elapsed_s
        );
        if let Some(n) = r.accounts_prepared {
            text += &format!("  prepared: {n} new accounts\n");
        }
        text += &format!(
            "  completed {}  failed {}  => {:.1} flows/s\n",
            r.completed, r.failed, r.flows_per_s
        );
        text += &latency_line("end to end", &r.end_to_end);
        for name in LOGIN_STEPS {
            if let Some(l) = r.steps.get(name) {
                text += &latency_line(name, l);
            }
        }
        for (step, n) in &r.failures {
            text += &format!(
                "  failed at {step}: {n} (e.g. {})\n",
                r.failure_examples.get(step).map_or("", String::as_str)
            );
        }
        text.trim_end().to_string()
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------
// loadtest payments
// ---------------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct PaymentsLoadArgs {
    /// The HTTP gateway, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub target_http: String,

    /// The account paying.
    #[arg(long)]
    pub username: String,

    /// Its temporary password (from `dialgate temp-password issue`).
    #[arg(long)]
    pub temp_password: String,

    /// Payments to make in all.
    #[arg(long, default_value_t = 1000)]
    pub payments: u64,

    /// Payments in progress at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Amount of each payment, in minor units (100 = 1.00).
    #[arg(long, default_value_t = 1)]
    pub amount: i64,

    /// Longest wait for one payment.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct PaymentsReport {
    pub target_http: String,
    pub username: String,
    pub payments: u64,
    pub concurrency: u32,
    pub amount: i64,
    pub elapsed_s: f64,
    pub approved: u64,
    /// Declined payments (HTTP 402) by reason.
    pub declined: BTreeMap<String, u64>,
    /// Anything else (other HTTP status, connection errors), with one example each.
    pub errors: BTreeMap<String, u64>,
    pub error_examples: BTreeMap<String, String>,
    pub payments_per_s: f64,
    /// Latency of every answered payment (approved or declined).
    pub latency: Latency,
}

enum PayResult {
    Approved,
    Declined(String),
}

async fn one_payment(
    client: &HttpClient,
    uri: &str,
    body: &serde_json::Value,
    key: &str,
) -> Result<PayResult, (String, String)> {
    let request = http_request(
        hyper::Method::POST,
        uri,
        None,
        Some(("idempotency-key", key)),
        Some(body),
    )
    .map_err(|e| ("request".to_string(), e))?;
    let (status, body) = http_call(client, request)
        .await
        .map_err(|e| ("connection".to_string(), e))?;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match status {
        200 => Ok(PayResult::Approved),
        402 => Ok(PayResult::Declined(
            json["reason"].as_str().unwrap_or("(none)").to_string(),
        )),
        other => Err((
            format!("http_{other}"),
            String::from_utf8_lossy(&body).chars().take(200).collect(),
        )),
    }
}

async fn run_payments(global: &GlobalArgs, args: PaymentsLoadArgs) -> Result<(), Failure> {
    let http = resolve_target(&args.target_http)?;
    crate::auth::payments::check_amount(args.amount)
        .map_err(|e| user(format!("--amount {}: {e}", args.amount)))?;
    let client = http_client(args.concurrency);
    let uri = Arc::new(format!("http://{http}/v1/payments"));
    let body = Arc::new(serde_json::json!({
        "username": args.username,
        "password": args.temp_password,
        "amount": args.amount,
    }));
    let next = Arc::new(AtomicU64::new(0));
    let total = args.payments;
    let run = run_id();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(total.max(1) as u32) {
        let (client, uri, body, next) = (client.clone(), uri.clone(), body.clone(), next.clone());
        let timeout = args.timeout;
        workers.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut approved = 0u64;
            let mut declined: BTreeMap<String, u64> = BTreeMap::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut examples: BTreeMap<String, String> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let key = format!("loadtest-{run}-{i}");
                let t0 = Instant::now();
                let result =
                    match tokio::time::timeout(timeout, one_payment(&client, &uri, &body, &key))
                        .await
                    {
                        Ok(result) => result,
                        Err(_) => Err(("timeout".into(), format!("no answer within {timeout:?}"))),
                    };
                match result {
                    Ok(answer) => {
                        h.saturating_record((t0.elapsed().as_micros() as u64).max(1));
                        match answer {
                            PayResult::Approved => approved += 1,
                            PayResult::Declined(reason) => {
                                *declined.entry(reason).or_default() += 1
                            }
                        }
                    }
                    Err((kind, message)) => {
                        *errors.entry(kind.clone()).or_default() += 1;
                        examples.entry(kind).or_insert(message);
                    }
                }
            }
            (h, approved, declined, errors, examples)
        }));
    }
    let mut h = histogram();
    let mut approved = 0;
    let mut declined = BTreeMap::new();
    let mut errors = BTreeMap::new();
    let mut examples = BTreeMap::new();
    for worker in workers {
        let (wh, wa, wd, we, wx) = worker
            .await
            .map_err(|e| Failure::System(anyhow!("a load worker panicked: {e}")))?;
        h.add(&wh)
            .map_err(|e| Failure::System(anyhow!("merging histograms: {e}")))?;
        approved += wa;
        for (k, v) in wd {
            *declined.entry(k).or_default() += v;
        }
        for (k, v) in we {
            *errors.entry(k).or_default() += v;
        }
        for (k, v) in wx {
            examples.entry(k).or_insert(v);
        }
    }
    let elapsed = started.elapsed();
    let report = PaymentsReport {
        target_http: http.to_string(),
        username: args.username.clone(),
        payments: total,
        concurrency: args.concurrency,
        amount: args.amount,
        elapsed_s: elapsed.as_secs_f64(),
        approved,
        declined,
        errors,
        error_examples: examples,
        payments_per_s: h.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: latency(&h),
    };
    global.emit(&report, |r| {
        let mut text = format!(
            "{} payments of {} by {} (http://{}, {} at once) in {:.2} s\n",
            r.payments, r.amount, r.username, r.target_http, r.concurrency, r.elapsed_s
        );
        let declined: Vec<String> = r.declined.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text += &format!(
            "  approved {}  declined {} [{}]  => {:.0} payments/s\n",
            r.approved,
            r.declined.values().sum::<u64>(),
            declined.join(" "),
            r.payments_per_s
        );
        text += &latency_line("latency", &r.latency);
        for (kind, n) in &r.errors {
            text += &format!(
                "  error {kind}: {n} (e.g. {})\n",
                r.error_examples.get(kind).map_or("", String::as_str)
            );
        }
        text.trim_end().to_string()
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------
// loadtest argon2 (hidden)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct Argon2Args {
    /// How long to hash.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    pub seconds: Duration,

    /// Threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Verify a password against a stored hash (what a login does) instead of hashing.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Serialize)]
pub struct Argon2Report {
    pub operation: &'static str,
    pub threads: usize,
    pub operations: u64,
    pub elapsed_s: f64,
    pub per_s: f64,
}

fn run_argon2(global: GlobalArgs, args: Argon2Args) -> Result<(), Failure> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let stored = Arc::new(passwords::hash("loadtest-password"));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + args.seconds;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stored, count, verify) = (stored.clone(), count.clone(), args.verify);
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    if verify {
                        std::hint::black_box(passwords::verify("loadtest-password", &stored));
                    } else {
                        std::hint::black_box(passwords::hash("loadtest-password"));
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for handle in handles {
        handle
            .join()
            .map_err(|_| Failure::System(anyhow!("a hashing thread panicked")))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let operations = count.load(Ordering::Relaxed);
    let report = Argon2Report {
        operation: if args.verify { "verify" } else { "hash" },
        threads,
        operations,
        elapsed_s: elapsed,
        per_s: operations as f64 / elapsed.max(1e-9),
    };
    global.emit(&report, |r| {
        format!(
            "Argon2id {}: {} in {:.2} s on {} threads => {:.1} /s",
            r.operation, r.operations, r.elapsed_s, r.threads, r.per_s
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ranges() {
        let r = CallerRange::parse("+8613900000000-+8613900000009").unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(r.number(0), "+8613900000000");
        assert_eq!(r.number(12), "+8613900000002");
        let r = CallerRange::parse("0100-0101").unwrap();
        assert_eq!(r.number(1), "0101");
        assert!(CallerRange::parse("5-4").is_err());
        assert!(CallerRange::parse("+86").is_err());
        assert!(CallerRange::parse("a-b").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("20").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_seconds("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_seconds("-1").is_err());
    }
}
