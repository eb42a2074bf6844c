//! Closed-loop load against a running cluster: each of `clients` threads has
//! one request outstanding at a time. Prints throughput and latency
//! percentiles; it is a measurement, never a test.

use crate::client::{Client, ClientOptions};
use crate::kv::Op;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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

/// What one kind of request (or all of them) did.
#[derive(Debug)]
pub struct OpStats {
    pub succeeded: u64,
    pub failed: u64,
    pub latency_us: Histogram<u64>,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            succeeded: 0,
            failed: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }

    fn add(&mut self, other: &OpStats) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.latency_us.add(&other.latency_us).expect("same bounds");
    }
}

#[derive(Debug)]
pub struct BenchReport {
    pub succeeded: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    pub puts: OpStats,
    pub gets: OpStats,
    pub first_error: Option<String>,
}

impl BenchReport {
    /// One row per kind of request that ran, and one for all of them.
    pub fn table(&self) -> String {
        let seconds = self.elapsed.as_secs_f64();
        let mut lines = vec![format!(
            "{:<5} {:>9} {:>9} {:>7} {:>8} {:>8} {:>9} {:>8}",
            "", "ops/s", "ok", "failed", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
        )];
        let all = OpStats { succeeded: self.succeeded, failed: self.failed, latency_us: self.latency_us.clone() };
        for (name, stats) in [("PUT", &self.puts), ("GET", &self.gets), ("all", &all)] {
            if stats.succeeded + stats.failed == 0 {
                continue;
            }
            let ms = |q: f64| stats.latency_us.value_at_quantile(q) as f64 / 1000.0;
            lines.push(format!(
                "{name:<5} {:>9.0} {:>9} {:>7} {:>8.2} {:>8.2} {:>9.2} {:>8.2}",
                stats.succeeded as f64 / seconds,
                stats.succeeded,
                stats.failed,
                ms(0.5),
                ms(0.99),
                ms(0.999),
                stats.latency_us.max() as f64 / 1000.0
            ));
        }
        lines.join("\n")
    }

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

/// Requests completed so far, for the progress display.
#[derive(Default)]
struct Progress {
    succeeded: AtomicU64,
    failed: AtomicU64,
}

/// Shows progress on stderr until `done` says the workers finished: a bar on
/// a terminal, a plain line every few seconds otherwise (logs, pipes).
fn show_progress(options: &BenchOptions, progress: &Progress, start: Instant, done: impl Fn() -> bool) {
    let total = if options.fill { options.keys } else { options.duration.as_secs().max(1) };
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal { ProgressBar::new(total) } else { ProgressBar::hidden() };
    let unit = if options.fill { "keys" } else { "s" };
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}")).expect("valid template"),
    );
    let mut last_line = start;
    while !done() {
        thread::sleep(Duration::from_millis(200));
        let (ok, failed) = (progress.succeeded.load(Ordering::Relaxed), progress.failed.load(Ordering::Relaxed));
        let elapsed = start.elapsed();
        let position = if options.fill { ok + failed } else { elapsed.as_secs().min(total) };
        let rate = ok as f64 / elapsed.as_secs_f64().max(0.001);
        let message = format!("{ok} ok, {failed} failed, {rate:.0} ops/s");
        bar.set_position(position);
        bar.set_message(message.clone());
        if !terminal && last_line.elapsed() >= Duration::from_secs(2) {
            last_line = Instant::now();
            eprintln!("bench: {position}/{total} {unit}, {message}");
        }
    }
    bar.finish_and_clear();
}

pub fn run(replicas: &[SocketAddr], options: &BenchOptions, client_options: &ClientOptions) -> BenchReport {
    let start = Instant::now();
    let stop_at = start + options.duration;
    let progress = Arc::new(Progress::default());
    let workers: Vec<_> = (0..options.clients)
        .map(|worker| {
            let replicas = replicas.to_vec();
            let options = options.clone();
            let client_options = client_options.clone();
            let progress = progress.clone();
            thread::spawn(move || {
                let (mut puts, mut gets) = (OpStats::new(), OpStats::new());
                let mut rng = StdRng::seed_from_u64(options.seed.wrapping_add(worker as u64));
                let padding = "x".repeat(options.value_bytes);
                let mut written = 0u64;
                let mut first_error = None;
                let Ok(mut client) = Client::with_options(&replicas, client_options) else {
                    puts.failed += 1;
                    return (puts, gets, Some("no replicas".to_string()), Instant::now());
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
                    let stats = if matches!(op, Op::Put { .. }) { &mut puts } else { &mut gets };
                    let began = Instant::now();
                    match client.execute(op) {
                        Ok(_) => {
                            stats.succeeded += 1;
                            let _ = stats.latency_us.record(began.elapsed().as_micros().max(1) as u64);
                            progress.succeeded.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            stats.failed += 1;
                            first_error.get_or_insert(e.to_string());
                            progress.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                (puts, gets, first_error, Instant::now())
            })
        })
        .collect();
    show_progress(options, &progress, start, || workers.iter().all(|w| w.is_finished()));
    let (mut puts, mut gets, mut first_error, mut finished) = (OpStats::new(), OpStats::new(), None, start);
    for worker in workers {
        let (worker_puts, worker_gets, worker_error, worker_finished) = worker.join().expect("bench worker panicked");
        finished = finished.max(worker_finished);
        puts.add(&worker_puts);
        gets.add(&worker_gets);
        first_error = first_error.or(worker_error);
    }
    let mut all = OpStats::new();
    all.add(&puts);
    all.add(&gets);
    BenchReport {
        succeeded: all.succeeded,
        failed: all.failed,
        // When the last worker stopped, not when the progress display noticed.
        elapsed: finished - start,
        latency_us: all.latency_us,
        puts,
        gets,
        first_error,
    }
}
