//! `loadtest agi`: plays Asterisk over real TCP, N calls C at a time (optionally at a
//! fixed rate); reports calls/s, connect-to-close latency percentiles, results by
//! `DIALGATE_RESULT` and errors. `--hold` keeps calls open to measure concurrency and
//! memory.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::anyhow;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    parse_seconds,
    report::{self, example_lines, key_counts, Latency, Tally},
    resolve_target, user, CallerRange, Failure, GlobalArgs,
};
use crate::agi::sim::{
    loadgen::{lean_call, EnvTemplate, LeanOptions},
    CallSpec,
};

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
    results: Tally,
    errors: Tally,
    max_lag: Duration,
}

pub(super) async fn run(global: &GlobalArgs, args: AgiLoadArgs) -> Result<(), Failure> {
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
    let spec = dialin_call(&args.script, &args.channel, &args.to);
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
                histogram: report::histogram(),
                results: Tally::default(),
                errors: Tally::default(),
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
                        report::record(&mut stats.histogram, call_started.elapsed());
                        stats
                            .results
                            .count(outcome.result.unwrap_or_else(|| "(none)".into()));
                    }
                    Err(e) => stats.errors.add(e.kind().to_string(), e.to_string()),
                }
            }
            stats
        }));
    }
    let mut histogram = report::histogram();
    let mut results = Tally::default();
    let mut errors = Tally::default();
    let mut max_lag = Duration::ZERO;
    for stats in report::join_workers(workers).await? {
        report::merge_histogram(&mut histogram, &stats.histogram)?;
        results.merge(stats.results);
        errors.merge(stats.errors);
        max_lag = max_lag.max(stats.max_lag);
    }
    let elapsed = started.elapsed();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let completed = histogram.len();
    let failed = errors.total();
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
        calls_per_s: report::per_second(completed, elapsed),
        latency: Latency::of(&histogram),
        results: results.counts,
        errors: errors.counts,
        error_examples: errors.examples,
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

/// A call to `script` dialling `to`, as the dial-in context places it.
pub(super) fn dialin_call(script: &str, channel: &str, to: &str) -> CallSpec {
    CallSpec {
        script: script.trim_start_matches('/').to_string(),
        channel: channel.to_string(),
        dnid: Some(to.to_string()),
        extension: to.to_string(),
        context: "dialin".into(),
        args: vec![to.to_string()],
        ..CallSpec::default()
    }
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
    text += &format!("  latency connect->close: {}\n", l.percentiles());
    text += &format!("  results: {}\n", key_counts(&r.results));
    if r.peak_held > 0 {
        text += &format!("  peak held at once: {}\n", r.peak_held);
    }
    if let Some(lag) = r.max_start_lag_ms {
        text += &format!("  latest start behind schedule: {lag:.1} ms\n");
    }
    text += &example_lines("error", &r.errors, &r.error_examples);
    text.trim_end().to_string()
}
