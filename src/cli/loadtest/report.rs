//! What every load report shares: latency percentiles from HDR histograms, counts by
//! key with one example each, merging what the workers gathered, and the text lines.

use std::collections::BTreeMap;

use anyhow::anyhow;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::cli::Failure;

/// Percentiles of a latency, in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p99_9_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
        }
    }

    /// `p50 ...  p90 ...  p99 ...  p99.9 ...  max ...`
    pub fn percentiles(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p99_9_us),
            ms(self.max_us)
        )
    }

    /// One indented report line, the name padded.
    pub fn line(&self, name: &str) -> String {
        format!("  {name:<14} {}\n", self.percentiles())
    }
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// Microseconds from 1 µs to an hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records `elapsed` (at least 1 µs).
pub fn record(h: &mut Histogram<u64>, elapsed: std::time::Duration) {
    h.saturating_record((elapsed.as_micros() as u64).max(1));
}

pub fn merge_histogram(all: &mut Histogram<u64>, one: &Histogram<u64>) -> Result<(), Failure> {
    all.add(one)
        .map_err(|e| Failure::System(anyhow!("merging histograms: {e}")))
}

/// Counts by key (a result, an error kind, a failed step), with the first example
/// message of each.
#[derive(Debug, Default)]
pub struct Tally {
    pub counts: BTreeMap<String, u64>,
    pub examples: BTreeMap<String, String>,
}

impl Tally {
    /// Counts one under `key` without an example.
    pub fn count(&mut self, key: String) {
        *self.counts.entry(key).or_default() += 1;
    }

    /// Counts one under `key`, keeping `example` if it is the first.
    pub fn add(&mut self, key: String, example: String) {
        *self.counts.entry(key.clone()).or_default() += 1;
        self.examples.entry(key).or_insert(example);
    }

    pub fn merge(&mut self, other: Tally) {
        for (k, v) in other.counts {
            *self.counts.entry(k).or_default() += v;
        }
        for (k, v) in other.examples {
            self.examples.entry(k).or_insert(v);
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// `  {label} {key}: {n} (e.g. {example})` for every key.
pub fn example_lines(
    label: &str,
    counts: &BTreeMap<String, u64>,
    examples: &BTreeMap<String, String>,
) -> String {
    counts
        .iter()
        .map(|(key, n)| {
            let example = examples.get(key).map_or("", String::as_str);
            format!("  {label} {key}: {n} (e.g. {example})\n")
        })
        .collect()
}

/// `k=v k=v ...`
pub fn key_counts(counts: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(" ")
}

/// Waits for every worker, in order.
pub async fn join_workers<T>(workers: Vec<JoinHandle<T>>) -> Result<Vec<T>, Failure> {
    let mut all = Vec::with_capacity(workers.len());
    for worker in workers {
        all.push(
            worker
                .await
                .map_err(|e| Failure::System(anyhow!("a load worker panicked: {e}")))?,
        );
    }
    Ok(all)
}

/// Operations per second over `elapsed`.
pub fn per_second(count: u64, elapsed: std::time::Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}
