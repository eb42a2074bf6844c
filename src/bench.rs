//! Closed-loop load against a running cluster: each of `clients` threads has
//! one request outstanding at a time. Prints throughput and latency
//! percentiles; it is a measurement, never a test.

use crate::client::{Client, ClientOptions};
use crate::kv::Op;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub clients: usize,
    pub duration: Duration,
    pub value_bytes: usize,
    pub keys: u64,
    /// Fraction of requests that are PUTs; the rest are GETs.
    pub put_ratio: f64,
    pub seed: u64,
    /// Write every key once (worker `w` writes keys `w`, `w + clients`, ...)
    /// instead of running for `duration`: loads a store of `keys` keys.
    pub fill: bool,
}

#[derive(Debug)]
pub struct BenchReport {
    pub succeeded: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    pub first_error: Option<String>,
}

impl BenchReport {
    pub fn throughput(&self) -> f64 {
        self.succeeded as f64 / self.elapsed.as_secs_f64()
    }

    pub fn summary(&self) -> String {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{:.0} ops/s  ({} ok, {} failed in {:.1} s)  latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            self.throughput(),
            self.succeeded,
            self.failed,
            self.elapsed.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.latency_us.max() as f64 / 1000.0,
        )
    }
}

pub fn run(replicas: &[SocketAddr], options: &BenchOptions, client_options: &ClientOptions) -> BenchReport {
    let start = Instant::now();
    let stop_at = start + options.duration;
    let workers: Vec<_> = (0..options.clients)
        .map(|worker| {
            let replicas = replicas.to_vec();
            let options = options.clone();
            let client_options = client_options.clone();
            thread::spawn(move || {
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                let mut rng = StdRng::seed_from_u64(options.seed.wrapping_add(worker as u64));
                let padding = "x".repeat(options.value_bytes);
                let mut written = 0u64;
                let (mut succeeded, mut failed, mut first_error) = (0u64, 0u64, None);
                let Ok(mut client) = Client::with_options(&replicas, client_options) else {
                    return (histogram, 0, 1, Some("no replicas".to_string()));
                };
                let mut next_fill = worker as u64;
                loop {
                    let key = if options.fill {
                        if next_fill >= options.keys {
                            break;
                        }
                        next_fill += options.clients as u64;
                        format!("key-{}", next_fill - options.clients as u64)
                    } else {
                        if Instant::now() >= stop_at {
                            break;
                        }
                        format!("key-{}", rng.random_range(0..options.keys.max(1)))
                    };
                    let op = if options.fill || rng.random_bool(options.put_ratio.clamp(0.0, 1.0)) {
                        // Distinct values let `client inspect` tell writes apart.
                        written += 1;
                        let mut value = format!("{worker}-{written}-");
                        value.push_str(&padding[value.len().min(padding.len())..]);
                        Op::Put { key, value }
                    } else {
                        Op::Get { key }
                    };
                    let began = Instant::now();
                    match client.execute(op) {
                        Ok(_) => {
                            succeeded += 1;
                            let _ = histogram.record(began.elapsed().as_micros().max(1) as u64);
                        }
                        Err(e) => {
                            failed += 1;
                            first_error.get_or_insert(e.to_string());
                        }
                    }
                }
                (histogram, succeeded, failed, first_error)
            })
        })
        .collect();
    let mut report = BenchReport {
        succeeded: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        first_error: None,
    };
    for worker in workers {
        let (histogram, succeeded, failed, first_error) = worker.join().expect("bench worker panicked");
        report.latency_us.add(&histogram).expect("same bounds");
        report.succeeded += succeeded;
        report.failed += failed;
        if report.first_error.is_none() {
            report.first_error = first_error;
        }
    }
    report.elapsed = start.elapsed();
    report
}
