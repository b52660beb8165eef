//! `loadtest payments`: concurrent POST /v1/payments on one temporary password, each
//! with its own Idempotency-Key; reports approved/declined by reason, payments/s and
//! latency.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::Args;
use serde::Serialize;

use super::{
    http::HttpClient,
    report::{self, example_lines, key_counts, Latency, Tally},
    resolve_target, run_id, user, Failure, GlobalArgs,
};

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
    let answer = client
        .post_json(uri, &[("idempotency-key", key)], body)
        .await
        .map_err(|e| ("connection".to_string(), e))?;
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    match answer.status.as_u16() {
        200 => Ok(PayResult::Approved),
        402 => Ok(PayResult::Declined(
            json["reason"].as_str().unwrap_or("(none)").to_string(),
        )),
        other => Err((
            format!("http_{other}"),
            String::from_utf8_lossy(&answer.body)
                .chars()
                .take(200)
                .collect(),
        )),
    }
}

/// What one worker saw.
#[derive(Default)]
struct WorkerStats {
    approved: u64,
    declined: Tally,
    errors: Tally,
}

pub(super) async fn run(global: &GlobalArgs, args: PaymentsLoadArgs) -> Result<(), Failure> {
    let http = resolve_target(&args.target_http)?;
    crate::auth::payments::check_amount(args.amount)
        .map_err(|e| user(format!("--amount {}: {e}", args.amount)))?;
    let client = HttpClient::new(args.concurrency as usize * 2);
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
            let mut h = report::histogram();
            let mut stats = WorkerStats::default();
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
                        report::record(&mut h, t0.elapsed());
                        match answer {
                            PayResult::Approved => stats.approved += 1,
                            PayResult::Declined(reason) => stats.declined.count(reason),
                        }
                    }
                    Err((kind, message)) => stats.errors.add(kind, message),
                }
            }
            (h, stats)
        }));
    }
    let mut h = report::histogram();
    let mut all = WorkerStats::default();
    for (wh, stats) in report::join_workers(workers).await? {
        report::merge_histogram(&mut h, &wh)?;
        all.approved += stats.approved;
        all.declined.merge(stats.declined);
        all.errors.merge(stats.errors);
    }
    let elapsed = started.elapsed();
    let report = PaymentsReport {
        target_http: http.to_string(),
        username: args.username.clone(),
        payments: total,
        concurrency: args.concurrency,
        amount: args.amount,
        elapsed_s: elapsed.as_secs_f64(),
        approved: all.approved,
        declined: all.declined.counts,
        errors: all.errors.counts,
        error_examples: all.errors.examples,
        payments_per_s: report::per_second(h.len(), elapsed),
        latency: Latency::of(&h),
    };
    global.emit(&report, |r| {
        let mut text = format!(
            "{} payments of {} by {} (http://{}, {} at once) in {:.2} s\n",
            r.payments, r.amount, r.username, r.target_http, r.concurrency, r.elapsed_s
        );
        text += &format!(
            "  approved {}  declined {} [{}]  => {:.0} payments/s\n",
            r.approved,
            r.declined.values().sum::<u64>(),
            key_counts(&r.declined),
            r.payments_per_s
        );
        text += &r.latency.line("latency");
        text += &example_lines("error", &r.errors, &r.error_examples);
        text.trim_end().to_string()
    });
    Ok(())
}
