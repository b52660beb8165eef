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
    let username = |e164: &E164| format!("{prefix}{}", e164.digits());
    let (accounts_created, challenges_created) = conn
        .transaction::<_, diesel::result::Error, _>(|conn| {
            let existing: BTreeMap<String, i64> = accounts::table
                .filter(accounts::username.like(format!("{prefix}%")))
                .select((accounts::username, accounts::id))
                .load::<(String, i64)>(conn)?
                .into_iter()
                .collect();
            let mut created = 0u64;
            let mut ids = Vec::with_capacity(callers.len());
            for e164 in &callers {
                let name = username(e164);
                let id = match existing.get(&name) {
                    Some(&id) => id,
                    None => {
                        diesel::insert_into(accounts::table)
                            .values(NewAccount {
                                username: &name,
                                password_hash: &hash,
                                display_name: "Load Test",
                                status: "active",
                                currency: &config.currency,
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
                        login_challenges::status.eq("pending"),
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
