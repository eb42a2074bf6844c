//! Paxos and 2PC side by side under the same seeded failure schedule: for each
//! protocol and failure level, a fresh cluster of real server processes, the
//! same closed-loop workload, and afterwards a check that every acknowledged
//! write is present, with its value, at every replica that is up.

use crate::client::{self, Client, ClientError, ClientOptions};
use crate::config::Protocol;
use crate::kv::Reply;
use crate::security::{self, ClientSecurity};
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
}

/// Both protocols' clusters use certificates of their own, as real ones would.
fn certs_dir(options: &CompareOptions) -> PathBuf {
    options.work_dir.join("certs")
}

/// Mean up-time between failures giving a replica `percent`% downtime.
pub fn mtbf_for(percent: u32, mean_downtime_ms: u64) -> Option<u64> {
    (percent > 0).then(|| (mean_downtime_ms as f64 * (100.0 - percent as f64) / percent as f64).round().max(1.0) as u64)
}

struct LocalCluster {
    addrs: Vec<SocketAddr>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl LocalCluster {
    fn start(options: &CompareOptions, protocol: Protocol, level: u32) -> Result<Self> {
        let listeners: Vec<TcpListener> =
            (0..options.replicas).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?;
        drop(listeners);
        let dir = options.work_dir.join(format!("{protocol}-{level}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let replicas = addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
        let certs = certs_dir(options);
        if !certs.join(security::CLIENT_CERT).exists() {
            security::issue(&certs, options.replicas as u32, &[])?;
        }
        let mut cluster = LocalCluster { addrs, children: Vec::new(), dir };
        for id in 1..=options.replicas {
            let log = std::fs::File::create(cluster.dir.join(format!("server-{id}.log")))?;
            let mut command = Command::new(&options.server_binary);
            command
                .args(["--id", &id.to_string(), "--replicas", &replicas, "--protocol", &protocol.to_string()])
                // A fresh directory per run: each is the first start of a new cluster.
                .args(["--cluster-state", "new"])
                .arg("--certs")
                .arg(&certs)
                .arg("--data-dir")
                .arg(cluster.dir.join(id.to_string()))
                .args(["--request-timeout-ms", "1500"]);
            if let Some(mtbf) = mtbf_for(level, options.mean_downtime_ms) {
                command.args(["--fail-mtbf-ms", &mtbf.to_string()]);
                command.args(["--fail-downtime-ms", &options.mean_downtime_ms.to_string()]);
                command.args(["--fail-seed", &options.seed.to_string()]);
            }
            let child = command
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", options.server_binary.display()))?;
            cluster.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in &cluster.addrs {
            while TcpStream::connect(addr).is_err() {
                if Instant::now() > deadline {
                    bail!("replica at {addr} did not start; see {}", cluster.dir.display());
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(cluster)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    let cluster = LocalCluster::start(options, protocol, level)?;
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
            "{:<9} {:>6} {:>9} {:>9} {:>7} {:>8} {:>11.1}% {:>10.0} {:>8.2} {:>8.2} {:>9} {:>5}",
            r.protocol.to_string(),
            r.level_percent,
            r.attempted,
            r.succeeded,
            r.failed,
            r.blocked,
            100.0 * r.availability(),
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
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_BOTTOM: f64 = 50.0;
const MARGIN_TOP: f64 = 40.0;

fn protocol_color(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Paxos => "#1f77b4",
        Protocol::TwoPc => "#ff7f0e",
    }
}

/// One panel: a line per protocol of `value` against the failure level.
fn chart_panel(results: &[LevelResult], x0: f64, title: &str, y_label: &str, value: fn(&LevelResult) -> f64) -> String {
    let max_level = results.iter().map(|r| r.level_percent).max().unwrap_or(0).max(1) as f64;
    let max_value = results.iter().map(value).fold(0.0f64, f64::max);
    let y_max = if max_value <= 1.0 { 1.0 } else { max_value * 1.1 };
    let plot_w = CHART_PANEL_WIDTH - MARGIN_LEFT - 20.0;
    let plot_h = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x = |level: f64| x0 + MARGIN_LEFT + plot_w * level / max_level;
    let y = |v: f64| MARGIN_TOP + plot_h * (1.0 - v / y_max);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="22" font-size="15" text-anchor="middle">{title}</text>"#,
        x0 + CHART_PANEL_WIDTH / 2.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{:.1}" y="{MARGIN_TOP}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#888"/>"##,
        x0 + MARGIN_LEFT
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let label = if y_max <= 1.0 { format!("{:.0}%", v * 100.0) } else { format!("{v:.0}") };
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{label}</text>"##,
            x0 + MARGIN_LEFT,
            y(v),
            x0 + MARGIN_LEFT + plot_w,
            y(v),
            x0 + MARGIN_LEFT - 6.0,
            y(v) + 4.0
        );
    }
    let levels: BTreeSet<u32> = results.iter().map(|r| r.level_percent).collect();
    for level in levels {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{level}%</text>"#,
            x(level as f64),
            MARGIN_TOP + plot_h + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">time each replica is down</text>"#,
        x0 + MARGIN_LEFT + plot_w / 2.0,
        CHART_HEIGHT - 10.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{y_label}</text>"#,
        x0 + 14.0,
        MARGIN_TOP + plot_h / 2.0,
        x0 + 14.0,
        MARGIN_TOP + plot_h / 2.0
    );
    for protocol in [Protocol::Paxos, Protocol::TwoPc] {
        let points: Vec<String> = results
            .iter()
            .filter(|r| r.protocol == protocol)
            .map(|r| format!("{:.1},{:.1}", x(r.level_percent as f64), y(value(r))))
            .collect();
        if points.is_empty() {
            continue;
        }
        let color = protocol_color(protocol);
        let _ = writeln!(
            svg,
            r#"<polyline class="series" data-protocol="{protocol}" points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
            points.join(" ")
        );
        for point in &points {
            let (px, py) = point.split_once(',').expect("formatted above");
            let _ = writeln!(svg, r#"<circle cx="{px}" cy="{py}" r="3.5" fill="{color}"/>"#);
        }
    }
    svg
}

/// A self-contained SVG: availability, p99 latency and throughput against failure level.
pub fn chart_svg(results: &[LevelResult]) -> String {
    let width = 3.0 * CHART_PANEL_WIDTH;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{:.0}" viewBox="0 0 {width} {:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
"#,
        CHART_HEIGHT + 30.0,
        CHART_HEIGHT + 30.0
    );
    svg += &chart_panel(results, 0.0, "Availability (successful requests)", "availability", LevelResult::availability);
    svg += &chart_panel(results, CHART_PANEL_WIDTH, "p99 latency of successful requests", "p99 latency (ms)", |r| {
        r.p99_ms
    });
    svg += &chart_panel(results, 2.0 * CHART_PANEL_WIDTH, "Throughput", "successful requests per second", |r| {
        r.throughput
    });
    for (i, protocol) in [Protocol::Paxos, Protocol::TwoPc].iter().enumerate() {
        let x = 80.0 + 160.0 * i as f64;
        let y = CHART_HEIGHT + 18.0;
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
pub fn write_reports(results: &[LevelResult], dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let csv_path = dir.join(format!("{stem}.csv"));
    let svg_path = dir.join(format!("{stem}.svg"));
    std::fs::write(&csv_path, csv(results))?;
    std::fs::write(&svg_path, chart_svg(results))?;
    Ok((csv_path, svg_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_levels_map_to_the_mean_time_between_failures() {
        assert_eq!(mtbf_for(0, 500), None);
        assert_eq!(mtbf_for(20, 500), Some(2_000));
        assert_eq!(mtbf_for(40, 500), Some(750));
    }
}
