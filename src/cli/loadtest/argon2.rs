//! `loadtest argon2` (hidden): the raw Argon2id rate on every core, the ceiling of
//! `loadtest login`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::anyhow;
use clap::Args;
use serde::Serialize;

use super::{parse_seconds, Failure, GlobalArgs};
use crate::auth::passwords;

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

pub(super) fn run(global: GlobalArgs, args: Argon2Args) -> Result<(), Failure> {
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
