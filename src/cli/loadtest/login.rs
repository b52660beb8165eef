//! `loadtest login`: the whole dial-in login per simulated user (HTTP login, SSE, the
//! FastAGI verify call, the `verified` event, the session exchange); `--prepare` (bench
//! only) creates the users' accounts first.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::anyhow;
use clap::Args;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde::Serialize;

use super::{
    agi::dialin_call,
    http::{HttpClient, SseStream},
    prepare,
    report::{self, example_lines, Latency, Tally},
    resolve_target, run_id, user, CallerRange, Failure, GlobalArgs,
};
use crate::{
    agi::sim::loadgen::{lean_call, EnvTemplate, LeanOptions},
    phone::{self, E164},
};

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

/// What one worker saw.
struct FlowStats {
    end_to_end: Histogram<u64>,
    steps: Vec<Histogram<u64>>,
    /// Failed flows by step.
    failures: Tally,
}

impl FlowStats {
    fn new() -> FlowStats {
        FlowStats {
            end_to_end: report::histogram(),
            steps: LOGIN_STEPS.iter().map(|_| report::histogram()).collect(),
            failures: Tally::default(),
        }
    }

    fn merge(&mut self, other: FlowStats) -> Result<(), Failure> {
        report::merge_histogram(&mut self.end_to_end, &other.end_to_end)?;
        for (all, one) in self.steps.iter_mut().zip(&other.steps) {
            report::merge_histogram(all, one)?;
        }
        self.failures.merge(other.failures);
        Ok(())
    }
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

/// `HTTP 401: {"error":...}` (the body cut to 200 characters).
fn refused(status: StatusCode, body: &[u8]) -> String {
    let body: String = String::from_utf8_lossy(body).chars().take(200).collect();
    format!("HTTP {}: {body}", status.as_u16())
}

async fn login_flow(
    ctx: &LoginContext,
    username: &str,
    caller: &str,
    uniqueid: &str,
    h: &mut [Histogram<u64>],
) -> Result<(), StepError> {
    let t = ctx.timeout;
    // 1. POST /v1/login
    let started = serde_json::json!({ "username": username, "password": ctx.password });
    let body = timed_step(0, t, h, async {
        let url = format!("{}/v1/login", ctx.base);
        let answer = ctx.client.post_json(&url, &[], &started).await?;
        if answer.status != StatusCode::OK {
            return Err(refused(answer.status, &answer.body));
        }
        serde_json::from_slice::<serde_json::Value>(&answer.body).map_err(|e| format!("JSON: {e}"))
    })
    .await?;
    let field = |name: &str| body[name].as_str().map(str::to_string);
    let (Some(id), Some(secret), Some(dial)) =
        (field("challenge_id"), field("secret"), field("dial_number"))
    else {
        return Err((0, format!("unexpected answer: {body}")));
    };
    let code = field("code");
    let bearer = format!("Bearer {secret}");
    let auth = [("authorization", bearer.as_str())];
    // 2. GET /v1/login/{id}/events (the handler subscribes before it answers).
    let events_uri = format!("{}/v1/login/{id}/events", ctx.base);
    let mut events = timed_step(1, t, h, async {
        let response = ctx
            .client
            .send(Method::GET, &events_uri, &auth, bytes::Bytes::new())
            .await?;
        if response.status() != StatusCode::OK {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        Ok(SseStream::new(response.into_body()))
    })
    .await?;
    // 3. The verify call from the user's phone to the dial-in number.
    let spec = dialin_call(&ctx.script, "PJSIP/carrier-00000001", &dial);
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
        loop {
            let Some(event) = events.next_event().await? else {
                return Err(format!(
                    "the stream ended without `verified`: {:?}",
                    events.pending()
                ));
            };
            match event.name.as_deref() {
                Some("verified") => return Ok(()),
                Some(end @ ("failed" | "expired")) => {
                    return Err(format!("event {end}: {:?}", event.data))
                }
                _ => {}
            }
        }
    })
    .await?;
    drop(events);
    // 5. POST /v1/login/{id}/session
    timed_step(4, t, h, async {
        let url = format!("{}/v1/login/{id}/session", ctx.base);
        let answer = ctx
            .client
            .fetch(Method::POST, &url, &auth, bytes::Bytes::new())
            .await?;
        if answer.status != StatusCode::OK {
            return Err(refused(answer.status, &answer.body));
        }
        Ok(())
    })
    .await
}

pub(super) async fn run(global: &GlobalArgs, args: LoginLoadArgs) -> Result<(), Failure> {
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
                prepare::login_accounts(&global, &callers, &prefix, &password)
            })
            .await
            .unwrap_or_else(|e| Err(Failure::System(anyhow!("preparing panicked: {e}"))))?,
        )
    } else {
        None
    };
    let ctx = Arc::new(LoginContext {
        client: HttpClient::new(args.concurrency as usize * 2),
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
            let mut stats = FlowStats::new();
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
                    Ok(()) => report::record(&mut stats.end_to_end, flow_started.elapsed()),
                    Err((step, message)) => {
                        stats.failures.add(LOGIN_STEPS[step].to_string(), message)
                    }
                }
            }
            stats
        }));
    }
    let mut all = FlowStats::new();
    for stats in report::join_workers(workers).await? {
        all.merge(stats)?;
    }
    let elapsed = started.elapsed();
    let completed = all.end_to_end.len();
    let report = LoginReport {
        target_http: http.to_string(),
        target_agi: agi.to_string(),
        users,
        concurrency: args.concurrency,
        accounts_prepared,
        elapsed_s: elapsed.as_secs_f64(),
        completed,
        failed: all.failures.total(),
        flows_per_s: report::per_second(completed, elapsed),
        end_to_end: Latency::of(&all.end_to_end),
        steps: LOGIN_STEPS
            .iter()
            .zip(&all.steps)
            .map(|(name, h)| (name.to_string(), Latency::of(h)))
            .collect(),
        failures: all.failures.counts,
        failure_examples: all.failures.examples,
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
        text += &r.end_to_end.line("end to end");
        for name in LOGIN_STEPS {
            if let Some(l) = r.steps.get(name) {
                text += &l.line(name);
            }
        }
        text += &example_lines("failed at", &r.failures, &r.failure_examples);
        text.trim_end().to_string()
    });
    Ok(())
}
