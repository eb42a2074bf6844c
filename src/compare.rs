//! Paxos and 2PC side by side under the same seeded failure schedule: for each
//! protocol and failure level, a fresh cluster of real server processes, the
//! same closed-loop workload, and afterwards a check that every acknowledged
//! write is present, with its value, at every replica that is up.

use crate::client::{self, Client, ClientError, ClientOptions};
use crate::config::Protocol;
use crate::kv::Reply;
use crate::local_cluster::LocalCluster;
use crate::security::{self, ClientSecurity};
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct CompareOptions {
    pub server_binary: PathBuf,
    pub replicas: usize,
    pub clients: usize,
    pub duration_per_level: Duration,
    /// Share of time each replica's acceptor or participant is down, in percent.
    pub levels_percent: Vec<u32>,
    pub mean_downtime_ms: u64,
    pub seed: u64,
    pub keys_per_client: u64,
    pub put_ratio: f64,
    pub client_deadline: Duration,
    /// 2PC coordinators abort a transaction missing a vote after this long:
    /// the ceiling of 2PC's latency under failures, drawn on the chart.
    pub vote_timeout_ms: u64,
    pub work_dir: PathBuf,
}

#[derive(Clone, Debug)]
pub struct LevelResult {
    pub protocol: Protocol,
    pub level_percent: u32,
    pub attempted: u64,
    pub succeeded: u64,
    /// Refused with a definite answer (aborted, no quorum, unreachable).
    pub failed: u64,
    /// No answer by the deadline: blocked on a lock or an unknown outcome.
    pub blocked: u64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub writes_checked: u64,
    pub writes_lost: u64,
}

impl LevelResult {
    pub fn availability(&self) -> f64 {
        if self.attempted == 0 {
            0.0
        } else {
            self.succeeded as f64 / self.attempted as f64
        }
    }

    /// The availability as a percentage that never rounds a run with
    /// failures up to 100%.
    pub fn availability_text(&self) -> String {
        percent_below(self.succeeded, self.attempted)
    }
}

/// `part / whole` in percent with one decimal, rounded down: 99.96% of
/// requests is "99.9%", never "100.0%".
pub fn percent_below(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    let share = part as f64 / whole as f64 * 100.0;
    format!("{:.1}%", (share * 10.0).floor() / 10.0)
}

/// Round tick values from `low` to at least `high`: steps of 1, 2 or 5
/// times a power of ten, about `count` of them.
pub fn round_ticks(low: f64, high: f64, count: usize) -> Vec<f64> {
    let span = (high - low).max(f64::EPSILON);
    let raw = span / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let first = (low / step).floor() * step;
    let mut ticks = Vec::new();
    let mut i = 0;
    loop {
        let tick = first + step * i as f64;
        // Rounded so that 0.1 + 0.2 prints as 0.3.
        let tick = (tick / step).round() * step;
        ticks.push(tick);
        if tick >= high - step * 1e-9 {
            return ticks;
        }
        i += 1;
    }
}

/// A tick label: thousands separated, as few decimals as the step needs.
fn tick_label(value: f64, step: f64, percent: bool) -> String {
    // As many decimals as the step has: 2.5 -> 1, 0.25 -> 2, 2000 -> 0.
    let decimals = (0..4).find(|d| (step * 10f64.powi(*d)).fract().abs() < 1e-6).unwrap_or(4) as usize;
    if percent {
        return format!("{value:.decimals$}%");
    }
    let text = format!("{value:.decimals$}");
    let (whole, fraction) = text.split_once('.').map_or((text.as_str(), None), |(w, f)| (w, Some(f)));
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match fraction {
        Some(f) => format!("{grouped}.{f}"),
        None => grouped,
    }
}

/// Both protocols' clusters use certificates of their own, as real ones would.
fn certs_dir(options: &CompareOptions) -> PathBuf {
    options.work_dir.join("certs")
}

/// Mean up-time between failures giving a replica `percent`% downtime.
pub fn mtbf_for(percent: u32, mean_downtime_ms: u64) -> Option<u64> {
    (percent > 0).then(|| (mean_downtime_ms as f64 * (100.0 - percent as f64) / percent as f64).round().max(1.0) as u64)
}

/// A fresh cluster for one protocol and failure level.
fn start_cluster(options: &CompareOptions, protocol: Protocol, level: u32) -> Result<LocalCluster> {
    let certs = certs_dir(options);
    if !certs.join(security::CLIENT_CERT).exists() {
        security::issue(&certs, options.replicas as u32, &[])?;
    }
    let mut args: Vec<String> = vec![
        "--protocol".into(),
        protocol.to_string(),
        // A fresh directory per run: each is the first start of a new cluster.
        "--cluster-state".into(),
        "new".into(),
        "--request-timeout-ms".into(),
        "1500".into(),
        "--vote-timeout-ms".into(),
        options.vote_timeout_ms.to_string(),
    ];
    if let Some(mtbf) = mtbf_for(level, options.mean_downtime_ms) {
        args.extend(["--fail-mtbf-ms".into(), mtbf.to_string()]);
        args.extend(["--fail-downtime-ms".into(), options.mean_downtime_ms.to_string()]);
        args.extend(["--fail-seed".into(), options.seed.to_string()]);
    }
    let dir = options.work_dir.join(format!("{protocol}-{level}"));
    let mut cluster = LocalCluster::new(&options.server_binary, &dir, &certs, options.replicas, &args)?;
    for id in 1..=options.replicas {
        cluster.start_replica(id, &[])?;
    }
    for id in 1..=options.replicas {
        cluster.wait_listening(id, Duration::from_secs(10))?;
    }
    Ok(cluster)
}

/// What one client learned about its own keys: the last acknowledged value,
/// and values written after it whose outcome is unknown.
#[derive(Default)]
struct KeyHistory {
    acknowledged: Option<String>,
    unknown_since: BTreeSet<String>,
}

struct WorkerResult {
    histogram: Histogram<u64>,
    attempted: u64,
    succeeded: u64,
    failed: u64,
    blocked: u64,
    keys: BTreeMap<String, KeyHistory>,
}

fn run_worker(addrs: Vec<SocketAddr>, worker: usize, options: CompareOptions, stop_at: Instant) -> WorkerResult {
    let mut result = WorkerResult {
        histogram: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
        attempted: 0,
        succeeded: 0,
        failed: 0,
        blocked: 0,
        keys: BTreeMap::new(),
    };
    let Ok(security) = ClientSecurity::from_dir(&certs_dir(&options)) else { return result };
    let client_options = ClientOptions {
        timeout: Duration::from_millis(1_000),
        deadline: options.client_deadline,
        security,
        ..ClientOptions::default()
    };
    let Ok(mut client) = Client::with_options(&addrs, client_options) else { return result };
    let mut rng = StdRng::seed_from_u64(options.seed ^ (worker as u64) << 20);
    let mut counter = 0u64;
    while Instant::now() < stop_at {
        let key = format!("w{worker}-k{}", rng.random_range(0..options.keys_per_client.max(1)));
        let began = Instant::now();
        result.attempted += 1;
        let outcome: Result<(), ClientError> = if rng.random_bool(options.put_ratio.clamp(0.0, 1.0)) {
            counter += 1;
            let value = format!("w{worker}-v{counter}");
            let outcome = client.put(&key, &value);
            let history = result.keys.entry(key).or_default();
            match &outcome {
                Ok(()) => {
                    history.acknowledged = Some(value);
                    history.unknown_since.clear();
                }
                Err(_) => {
                    history.unknown_since.insert(value);
                }
            }
            outcome
        } else {
            client.get(&key).map(|_| ())
        };
        match outcome {
            Ok(()) => {
                result.succeeded += 1;
                let _ = result.histogram.record(began.elapsed().as_micros().max(1) as u64);
            }
            Err(ClientError::Timeout | ClientError::Blocked(_)) => result.blocked += 1,
            Err(_) => {
                result.failed += 1;
                // Definite refusals come fast; do not spin on them.
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    result
}

/// Counts acknowledged writes missing, or with another value, at a replica
/// that answers. Values written later with an unknown outcome also count as
/// present. Lagging replicas get until `deadline` to catch up.
fn check_writes(
    addrs: &[SocketAddr],
    keys: &BTreeMap<String, KeyHistory>,
    deadline: Instant,
    security: &ClientSecurity,
) -> (u64, u64) {
    let mut checked = 0;
    let mut lost = 0;
    for (key, history) in keys {
        let Some(acknowledged) = &history.acknowledged else { continue };
        for addr in addrs {
            let mut verdict = None;
            while verdict.is_none() {
                match client::local_get(*addr, key, Duration::from_millis(500), security) {
                    Ok(Reply::Value(Some(value)))
                        if &value == acknowledged || history.unknown_since.contains(&value) =>
                    {
                        verdict = Some(true)
                    }
                    Ok(Reply::Value(_)) if Instant::now() >= deadline => verdict = Some(false),
                    Ok(Reply::Value(_)) | Ok(Reply::Rejected(_)) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(50))
                    }
                    // Down, offline or still locked at the deadline: not up, not checked.
                    _ => break,
                }
            }
            if let Some(present) = verdict {
                checked += 1;
                if !present {
                    lost += 1;
                }
            }
        }
    }
    (checked, lost)
}

pub fn run_level(options: &CompareOptions, protocol: Protocol, level: u32) -> Result<LevelResult> {
    let cluster = start_cluster(options, protocol, level)?;
    // Let Paxos elect a leader before the clock starts; 2PC needs no warm-up.
    let warm_up = Instant::now() + Duration::from_secs(5);
    let mut probe = Client::with_options(
        &cluster.addrs,
        ClientOptions {
            deadline: Duration::from_millis(500),
            security: ClientSecurity::from_dir(&certs_dir(options))?,
            ..ClientOptions::default()
        },
    )?;
    while probe.get("warm-up").is_err() && Instant::now() < warm_up {}
    let started = Instant::now();
    let stop_at = started + options.duration_per_level;
    let workers: Vec<_> = (0..options.clients)
        .map(|worker| {
            let addrs = cluster.addrs.clone();
            let options = options.clone();
            thread::spawn(move || run_worker(addrs, worker, options, stop_at))
        })
        .collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
    let mut result = LevelResult {
        protocol,
        level_percent: level,
        attempted: 0,
        succeeded: 0,
        failed: 0,
        blocked: 0,
        throughput: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        writes_checked: 0,
        writes_lost: 0,
    };
    let mut keys = BTreeMap::new();
    for worker in workers {
        let w = worker.join().expect("workload thread panicked");
        histogram.add(&w.histogram).expect("same bounds");
        result.attempted += w.attempted;
        result.succeeded += w.succeeded;
        result.failed += w.failed;
        result.blocked += w.blocked;
        keys.extend(w.keys);
    }
    let elapsed = started.elapsed().as_secs_f64();
    result.throughput = result.succeeded as f64 / elapsed;
    if !histogram.is_empty() {
        result.p50_ms = histogram.value_at_quantile(0.5) as f64 / 1000.0;
        result.p99_ms = histogram.value_at_quantile(0.99) as f64 / 1000.0;
    }
    let security = ClientSecurity::from_dir(&certs_dir(options))?;
    let (checked, lost) = check_writes(&cluster.addrs, &keys, Instant::now() + Duration::from_secs(5), &security);
    result.writes_checked = checked;
    result.writes_lost = lost;
    Ok(result)
}

pub fn table(results: &[LevelResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:>6} {:>9} {:>9} {:>7} {:>8} {:>12} {:>10} {:>8} {:>8} {:>9} {:>5}",
        "protocol",
        "down%",
        "attempted",
        "succeeded",
        "failed",
        "blocked",
        "availability",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "checked",
        "lost"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<9} {:>6} {:>9} {:>9} {:>7} {:>8} {:>12} {:>10.0} {:>8.2} {:>8.2} {:>9} {:>5}",
            r.protocol.to_string(),
            r.level_percent,
            r.attempted,
            r.succeeded,
            r.failed,
            r.blocked,
            r.availability_text(),
            r.throughput,
            r.p50_ms,
            r.p99_ms,
            r.writes_checked,
            r.writes_lost
        );
    }
    out
}

pub fn csv(results: &[LevelResult]) -> String {
    let mut out = String::from(
        "protocol,down_percent,attempted,succeeded,failed,blocked,availability,throughput_ops,p50_ms,p99_ms,writes_checked,writes_lost\n",
    );
    for r in results {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{:.4},{:.1},{:.3},{:.3},{},{}",
            r.protocol,
            r.level_percent,
            r.attempted,
            r.succeeded,
            r.failed,
            r.blocked,
            r.availability(),
            r.throughput,
            r.p50_ms,
            r.p99_ms,
            r.writes_checked,
            r.writes_lost
        );
    }
    out
}

const CHART_PANEL_WIDTH: f64 = 460.0;
const CHART_HEIGHT: f64 = 340.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_BOTTOM: f64 = 50.0;
const MARGIN_TOP: f64 = 40.0;
/// Room above the panels for the run's parameters.
const HEADER: f64 = 28.0;

fn protocol_color(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Paxos => "#1f77b4",
        Protocol::TwoPc => "#ff7f0e",
    }
}

/// One panel's vertical axis.
struct Axis {
    ticks: Vec<f64>,
    percent: bool,
}

impl Axis {
    /// From 0 to a round value above every point.
    fn from_zero(max: f64) -> Axis {
        Axis { ticks: round_ticks(0.0, max.max(1.0) * 1.05, 4), percent: false }
    }

    /// Availability: from a round value below the lowest point (never 0%
    /// unless a point is near it) to 100%, so that 98.7% does not look like 100%.
    fn availability(results: &[LevelResult]) -> Axis {
        let lowest = results.iter().map(|r| 100.0 * r.availability()).fold(100.0f64, f64::min);
        let low = (lowest - (100.0 - lowest) * 0.25).clamp(0.0, 99.0);
        Axis { ticks: round_ticks(low, 100.0, 4), percent: true }
    }

    fn low(&self) -> f64 {
        self.ticks[0]
    }

    fn high(&self) -> f64 {
        *self.ticks.last().expect("at least one tick")
    }

    fn label(&self, value: f64) -> String {
        let step = self.ticks.get(1).map_or(1.0, |t| t - self.ticks[0]);
        tick_label(value, step, self.percent)
    }
}

/// One panel: a line per protocol of `value` against the failure level.
fn chart_panel(
    results: &[LevelResult],
    x0: f64,
    title: &str,
    y_label: &str,
    axis: &Axis,
    value: fn(&LevelResult) -> f64,
) -> String {
    let max_level = results.iter().map(|r| r.level_percent).max().unwrap_or(0).max(1) as f64;
    let plot_w = CHART_PANEL_WIDTH - MARGIN_LEFT - 20.0;
    let plot_h = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let top = HEADER + MARGIN_TOP;
    let x = |level: f64| x0 + MARGIN_LEFT + plot_w * level / max_level;
    let y = |v: f64| top + plot_h * (1.0 - (v - axis.low()) / (axis.high() - axis.low()));
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="15" text-anchor="middle">{title}</text>"#,
        x0 + CHART_PANEL_WIDTH / 2.0,
        HEADER + 22.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{:.1}" y="{top}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#888"/>"##,
        x0 + MARGIN_LEFT
    );
    for &tick in &axis.ticks {
        let _ = writeln!(
            svg,
            r##"<line class="tick" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/><text class="tick-label" x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            x0 + MARGIN_LEFT,
            y(tick),
            x0 + MARGIN_LEFT + plot_w,
            y(tick),
            x0 + MARGIN_LEFT - 6.0,
            y(tick) + 4.0,
            axis.label(tick)
        );
    }
    let levels: BTreeSet<u32> = results.iter().map(|r| r.level_percent).collect();
    for level in levels {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{level}%</text>"#,
            x(level as f64),
            top + plot_h + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">share of time each replica is down</text>"#,
        x0 + MARGIN_LEFT + plot_w / 2.0,
        HEADER + CHART_HEIGHT - 10.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{y_label}</text>"#,
        x0 + 14.0,
        top + plot_h / 2.0,
        x0 + 14.0,
        top + plot_h / 2.0
    );
    for protocol in [Protocol::Paxos, Protocol::TwoPc] {
        let points: Vec<(f64, f64)> = results
            .iter()
            .filter(|r| r.protocol == protocol)
            .map(|r| (x(r.level_percent as f64), y(value(r).clamp(axis.low(), axis.high()))))
            .collect();
        if points.is_empty() {
            continue;
        }
        let color = protocol_color(protocol);
        let text: Vec<String> = points.iter().map(|(px, py)| format!("{px:.1},{py:.1}")).collect();
        let _ = writeln!(
            svg,
            r#"<polyline class="series" data-protocol="{protocol}" points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
            text.join(" ")
        );
        for (px, py) in &points {
            let _ = writeln!(svg, r#"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="{color}"/>"#);
        }
    }
    svg
}

/// A self-contained SVG: availability, p99 latency and throughput against
/// failure level, headed by the run's parameters.
pub fn chart_svg(results: &[LevelResult], options: &CompareOptions) -> String {
    let width = 3.0 * CHART_PANEL_WIDTH;
    let height = HEADER + CHART_HEIGHT + 30.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0}" viewBox="0 0 {width} {height:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    let _ = writeln!(
        svg,
        r#"<text class="parameters" x="12" y="20" font-size="13">{} replicas, {} clients, {:.0}% PUTs, {} s per protocol and level, mean downtime {} ms, seed {}; availability axis from {}</text>"#,
        options.replicas,
        options.clients,
        options.put_ratio * 100.0,
        options.duration_per_level.as_secs(),
        options.mean_downtime_ms,
        options.seed,
        Axis::availability(results).label(Axis::availability(results).low())
    );
    let availability = Axis::availability(results);
    svg += &chart_panel(results, 0.0, "Availability (successful requests)", "availability", &availability, |r| {
        100.0 * r.availability()
    });
    // Each availability point labelled as the table prints it.
    let max_level = results.iter().map(|r| r.level_percent).max().unwrap_or(0).max(1) as f64;
    let plot_w = CHART_PANEL_WIDTH - MARGIN_LEFT - 20.0;
    let plot_h = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    for r in results {
        let px = MARGIN_LEFT + plot_w * r.level_percent as f64 / max_level;
        let share = (100.0 * r.availability() - availability.low()) / (availability.high() - availability.low());
        let py = HEADER + MARGIN_TOP + plot_h * (1.0 - share.clamp(0.0, 1.0));
        let dy = if r.protocol == Protocol::Paxos { -8.0 } else { 16.0 };
        let _ = writeln!(
            svg,
            r#"<text class="point-label" x="{px:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="{}">{}</text>"#,
            py + dy,
            protocol_color(r.protocol),
            r.availability_text()
        );
    }
    let vote_timeout = options.vote_timeout_ms as f64;
    let p99_max = results.iter().map(|r| r.p99_ms).fold(vote_timeout, f64::max);
    let latency = Axis::from_zero(p99_max);
    svg += &chart_panel(
        results,
        CHART_PANEL_WIDTH,
        "p99 latency of successful requests",
        "p99 latency (ms)",
        &latency,
        |r| r.p99_ms,
    );
    let vote_y = HEADER + MARGIN_TOP + plot_h * (1.0 - vote_timeout / latency.high());
    let _ = writeln!(
        svg,
        r##"<line class="vote-timeout" x1="{:.1}" y1="{vote_y:.1}" x2="{:.1}" y2="{vote_y:.1}" stroke="{}" stroke-dasharray="5,4"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="{}">2PC vote timeout ({} ms): a 2PC write waits at most this long, then aborts</text>"##,
        CHART_PANEL_WIDTH + MARGIN_LEFT,
        CHART_PANEL_WIDTH + MARGIN_LEFT + plot_w,
        protocol_color(Protocol::TwoPc),
        CHART_PANEL_WIDTH + MARGIN_LEFT + plot_w - 4.0,
        vote_y - 5.0,
        protocol_color(Protocol::TwoPc),
        options.vote_timeout_ms
    );
    let throughput = Axis::from_zero(results.iter().map(|r| r.throughput).fold(0.0, f64::max));
    svg += &chart_panel(
        results,
        2.0 * CHART_PANEL_WIDTH,
        "Throughput",
        "successful requests per second",
        &throughput,
        |r| r.throughput,
    );
    for (i, protocol) in [Protocol::Paxos, Protocol::TwoPc].iter().enumerate() {
        let x = 80.0 + 160.0 * i as f64;
        let y = HEADER + CHART_HEIGHT + 18.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"/><text x="{}" y="{}" font-size="12">{protocol}</text>"#,
            x + 24.0,
            protocol_color(*protocol),
            x + 30.0,
            y + 4.0
        );
    }
    svg += "</svg>\n";
    svg
}

/// Writes `<stem>.csv` and `<stem>.svg` under `dir`; returns both paths.
pub fn write_reports(
    results: &[LevelResult],
    options: &CompareOptions,
    dir: &Path,
    stem: &str,
) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let csv_path = dir.join(format!("{stem}.csv"));
    let svg_path = dir.join(format!("{stem}.svg"));
    std::fs::write(&csv_path, csv(results))?;
    std::fs::write(&svg_path, chart_svg(results, options))?;
    Ok((csv_path, svg_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(round_ticks(0.0, 463.0, 4), [0.0, 200.0, 400.0, 600.0]);
        assert_eq!(round_ticks(0.0, 7146.0, 4), [0.0, 2000.0, 4000.0, 6000.0, 8000.0]);
        assert_eq!(round_ticks(96.0, 100.0, 4), [96.0, 97.0, 98.0, 99.0, 100.0]);
        assert_eq!(round_ticks(85.9, 100.0, 4), [85.0, 90.0, 95.0, 100.0]);
        assert_eq!(tick_label(6000.0, 2000.0, false), "6,000");
        assert_eq!(tick_label(97.5, 2.5, true), "97.5%");
        assert_eq!(tick_label(99.5, 0.5, true), "99.5%");
        assert_eq!(tick_label(98.0, 0.25, true), "98.00%");
    }

    #[test]
    fn a_run_with_failures_never_shows_as_100_percent() {
        assert_eq!(percent_below(992, 1000), "99.2%");
        assert_eq!(percent_below(9996, 10000), "99.9%");
        assert_eq!(percent_below(99_999_999, 100_000_000), "99.9%");
        assert_eq!(percent_below(10, 10), "100.0%");
        assert_eq!(percent_below(887, 1000), "88.7%");
        assert_eq!(percent_below(0, 0), "-");
    }

    fn result(protocol: Protocol, level: u32, attempted: u64, succeeded: u64, p99_ms: f64) -> LevelResult {
        LevelResult {
            protocol,
            level_percent: level,
            attempted,
            succeeded,
            failed: attempted - succeeded,
            blocked: 0,
            throughput: succeeded as f64 / 6.0,
            p50_ms: 1.0,
            p99_ms,
            writes_checked: 0,
            writes_lost: 0,
        }
    }

    #[test]
    fn the_chart_shows_differences_its_parameters_and_the_vote_timeout() {
        let options = CompareOptions {
            server_binary: "server".into(),
            replicas: 5,
            clients: 8,
            duration_per_level: Duration::from_secs(6),
            levels_percent: vec![0, 5],
            mean_downtime_ms: 500,
            seed: 7,
            keys_per_client: 20,
            put_ratio: 0.5,
            client_deadline: Duration::from_secs(2),
            vote_timeout_ms: 500,
            work_dir: "/tmp".into(),
        };
        let results = [
            result(Protocol::Paxos, 0, 10_000, 10_000, 5.0),
            result(Protocol::Paxos, 5, 10_000, 10_000, 6.0),
            result(Protocol::TwoPc, 0, 10_000, 10_000, 5.0),
            result(Protocol::TwoPc, 5, 10_000, 9_992, 501.0),
        ];
        let svg = chart_svg(&results, &options);
        assert!(svg.contains("seed 7") && svg.contains("6 s per protocol and level"), "no parameters");
        assert!(svg.contains("2PC vote timeout (500 ms)"), "the vote timeout is not labelled");
        let texts_of = |class: &str| -> Vec<String> {
            svg.split(&format!(r#"class="{class}""#))
                .skip(1)
                .map(|rest| rest[rest.find('>').unwrap() + 1..rest.find('<').unwrap()].to_string())
                .collect()
        };
        let points = texts_of("point-label");
        assert_eq!(points, ["100.0%", "100.0%", "100.0%", "99.9%"], "a run with failures must not read 100%");
        let labels = texts_of("tick-label");
        // The availability axis starts near the lowest point, not at 0%.
        assert_eq!(labels[0], "99.0%", "{labels:?}");
        assert!(labels.iter().all(|l| !l.contains("441") && !l.contains("5105")), "{labels:?}");
    }

    #[test]
    fn failure_levels_map_to_the_mean_time_between_failures() {
        assert_eq!(mtbf_for(0, 500), None);
        assert_eq!(mtbf_for(20, 500), Some(2_000));
        assert_eq!(mtbf_for(40, 500), Some(750));
    }
}
