//! Closed-loop load against a running cluster: each of `clients` clients has
//! one request outstanding at a time, driven from a few threads over
//! pipelined connections. Prints throughput and latency percentiles; it is a
//! measurement, never a test.

use crate::client::{ClientOptions, Pipeline};
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
    /// Threads the clients are spread over, one pipelined connection each.
    pub threads: usize,
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

/// Clients are spread over `options.threads` threads; each thread drives its
/// clients over one pipelined connection (a lane per client), so that the
/// figures measure the servers rather than a thread per client on the same
/// machine. A client has one request in flight at a time (closed loop); a
/// thread sends one request of each of its clients in one frame, so every
/// latency recorded is that frame's round trip.
pub fn run(replicas: &[SocketAddr], options: &BenchOptions, client_options: &ClientOptions) -> BenchReport {
    let start = Instant::now();
    let stop_at = start + options.duration;
    let progress = Arc::new(Progress::default());
    let threads = options.threads.clamp(1, options.clients.max(1));
    let workers: Vec<_> = (0..threads)
        .map(|worker| {
            // Clients `worker`, `worker + threads`, ...: the same keys whatever the thread count.
            let clients: Vec<u64> = (worker..options.clients).step_by(threads).map(|c| c as u64).collect();
            let replicas = replicas.to_vec();
            let options = options.clone();
            let client_options = client_options.clone();
            let progress = progress.clone();
            thread::spawn(move || drive(&replicas, &options, client_options, &clients, stop_at, &progress))
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

/// One thread's clients, until `stop_at` (or, filling, until each has written its keys).
fn drive(
    replicas: &[SocketAddr],
    options: &BenchOptions,
    client_options: ClientOptions,
    clients: &[u64],
    stop_at: Instant,
    progress: &Progress,
) -> (OpStats, OpStats, Option<String>, Instant) {
    let (mut puts, mut gets) = (OpStats::new(), OpStats::new());
    let mut pipeline = match Pipeline::new(replicas, client_options, clients.len().max(1)) {
        Ok(pipeline) => pipeline,
        Err(e) => return (puts, gets, Some(e.to_string()), Instant::now()),
    };
    let mut rngs: Vec<StdRng> = clients.iter().map(|&c| StdRng::seed_from_u64(options.seed.wrapping_add(c))).collect();
    let padding = "x".repeat(options.value_bytes);
    let mut written = vec![0u64; clients.len()];
    // Filling: client `c` writes keys `c`, `c + clients`, ...
    let mut next_fill: Vec<u64> = clients.to_vec();
    let mut first_error = None;
    loop {
        if !options.fill && Instant::now() >= stop_at {
            break;
        }
        let mut ops = Vec::with_capacity(clients.len());
        for (lane, &client) in clients.iter().enumerate() {
            let rng = &mut rngs[lane];
            let key = if options.fill {
                if next_fill[lane] >= options.keys {
                    continue;
                }
                next_fill[lane] += options.clients as u64;
                format!("key-{}", next_fill[lane] - options.clients as u64)
            } else {
                format!("key-{}", rng.random_range(0..options.keys.max(1)))
            };
            let op = if options.fill || rng.random_bool(options.put_ratio.clamp(0.0, 1.0)) {
                // Distinct values let `client inspect` tell writes apart.
                written[lane] += 1;
                let mut value = format!("{client}-{}-", written[lane]);
                value.push_str(&padding[value.len().min(padding.len())..]);
                Op::Put { key, value }
            } else {
                Op::Get { key }
            };
            ops.push(op);
        }
        if ops.is_empty() {
            break;
        }
        let kinds: Vec<bool> = ops.iter().map(|op| matches!(op, Op::Put { .. })).collect();
        let began = Instant::now();
        let results = pipeline.run(ops);
        let micros = began.elapsed().as_micros().max(1) as u64;
        for (is_put, result) in kinds.into_iter().zip(results) {
            let stats = if is_put { &mut puts } else { &mut gets };
            match result {
                Ok(_) => {
                    stats.succeeded += 1;
                    let _ = stats.latency_us.record(micros);
                    progress.succeeded.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.failed += 1;
                    first_error.get_or_insert(e.to_string());
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    (puts, gets, first_error, Instant::now())
}

/// The named workload set: each workload at each client count, in this order
/// (the PUTs first, so that the GETs find values).
pub const WORKLOADS: [(&str, f64); 3] = [("PUT", 1.0), ("GET", 0.0), ("mixed", 0.5)];
pub const WORKLOAD_CLIENTS: [usize; 4] = [1, 16, 64, 256];

/// One run of the workload set.
pub struct SetRun {
    pub workload: &'static str,
    pub clients: usize,
    pub report: BenchReport,
}

/// Runs every workload of [`WORKLOADS`] at every count of [`WORKLOAD_CLIENTS`]
/// for `base.duration` each, calling `each` after every run.
pub fn run_set(
    replicas: &[SocketAddr],
    base: &BenchOptions,
    client_options: &ClientOptions,
    mut each: impl FnMut(&SetRun),
) -> Vec<SetRun> {
    let mut runs = Vec::new();
    for (workload, put_ratio) in WORKLOADS {
        for clients in WORKLOAD_CLIENTS {
            let options = BenchOptions { clients, put_ratio, fill: false, ..base.clone() };
            let report = run(replicas, &options, client_options);
            let run = SetRun { workload, clients, report };
            each(&run);
            runs.push(run);
        }
    }
    runs
}

/// The runs as CSV, one row per run.
pub fn set_csv(runs: &[SetRun], threads: usize) -> String {
    let mut csv = String::from("workload,clients,threads,seconds,ops_per_s,ok,failed,p50_ms,p99_ms,p999_ms,max_ms\n");
    for run in runs {
        let report = &run.report;
        let ms = |q: f64| report.latency_us.value_at_quantile(q) as f64 / 1000.0;
        csv.push_str(&format!(
            "{},{},{},{:.1},{:.0},{},{},{:.2},{:.2},{:.2},{:.2}\n",
            run.workload,
            run.clients,
            threads.min(run.clients),
            report.elapsed.as_secs_f64(),
            report.throughput(),
            report.succeeded,
            report.failed,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            report.latency_us.max() as f64 / 1000.0
        ));
    }
    csv
}

/// Two bar charts as one SVG: throughput and p99 latency, grouped by client
/// count, one colour per workload.
pub fn set_chart(runs: &[SetRun], title: &str) -> String {
    const COLOURS: [&str; 3] = ["#4e79a7", "#f28e2b", "#59a14f"];
    let (width, panel, top) = (760.0, 260.0, 40.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"20\" y=\"24\" font-size=\"15\">{}</text>\n",
        top + 2.0 * panel + 30.0,
        escape(title)
    );
    type Measure = fn(&BenchReport) -> f64;
    let panels: [(&str, Measure); 2] =
        [("ops/s", |r| r.throughput()), ("p99 latency, ms", |r| r.latency_us.value_at_quantile(0.99) as f64 / 1000.0)];
    for (p, (label, value)) in panels.iter().enumerate() {
        let y0 = top + p as f64 * panel;
        let (left, plot_w, plot_h) = (70.0, width - 190.0, panel - 70.0);
        let max = runs.iter().map(|r| value(&r.report)).fold(0.0, f64::max).max(1e-9) * 1.15;
        svg.push_str(&format!("<text x=\"{left}\" y=\"{}\" font-weight=\"bold\">{label}</text>\n", y0 + 16.0));
        let base = y0 + 24.0 + plot_h;
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"black\"/>\n",
            left + plot_w
        ));
        let group_w = plot_w / WORKLOAD_CLIENTS.len() as f64;
        let bar_w = group_w / (WORKLOADS.len() as f64 + 1.0);
        for (g, clients) in WORKLOAD_CLIENTS.iter().enumerate() {
            let gx = left + g as f64 * group_w;
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{clients} client{}</text>\n",
                gx + group_w / 2.0,
                base + 16.0,
                if *clients == 1 { "" } else { "s" }
            ));
            for (w, (workload, _)) in WORKLOADS.iter().enumerate() {
                let Some(run) = runs.iter().find(|r| r.workload == *workload && r.clients == *clients) else {
                    continue;
                };
                let v = value(&run.report);
                let h = v / max * plot_h;
                let x = gx + bar_w * (w as f64 + 0.5);
                svg.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"/>\n\
                     <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text>\n",
                    base - h,
                    bar_w * 0.9,
                    COLOURS[w],
                    x + bar_w * 0.45,
                    base - h - 3.0,
                    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
                ));
            }
        }
    }
    for (w, (workload, _)) in WORKLOADS.iter().enumerate() {
        let y = top + 30.0 + w as f64 * 18.0;
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{workload}</text>\n",
            width - 100.0,
            y - 10.0,
            COLOURS[w],
            width - 82.0,
            y
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
