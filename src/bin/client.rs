//! The paxos-kv client: an interactive prompt, a pipe reader, one-shot
//! commands, a demo and a benchmark, all over the remote stub.

use clap::{Parser, Subcommand};
use paxos_kv::bench::{self, BenchOptions};
use paxos_kv::client::{self, Client, ClientOptions};
use paxos_kv::compare;
use paxos_kv::config::Protocol;
use paxos_kv::prompt::{self, Outcome, PromptCommand};
use paxos_kv::timeline;
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(version, about = "Talk to a paxos-kv cluster: prompt, pipe, one-shot commands, demo, bench")]
struct Args {
    /// Replica addresses, comma-separated, in id order.
    #[arg(
        long,
        value_delimiter = ',',
        env = "PAXOS_KV_SERVERS",
        default_value = "127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003,127.0.0.1:5004,127.0.0.1:5005"
    )]
    servers: Vec<SocketAddr>,
    /// How long one attempt at one replica may take before the next replica is tried.
    #[arg(long, default_value_t = 2_000)]
    timeout_ms: u64,
    /// How long one command may take in all, across replicas and retries.
    #[arg(long, default_value_t = 5_000)]
    deadline_ms: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Interactive prompt (the default); reads commands from stdin when it is not a terminal.
    Prompt,
    /// Store a value; prints OK.
    Put { key: String, value: String },
    /// Print the value alone; exit 1 if the key is missing.
    Get { key: String },
    /// Remove a key; exit 1 if it was missing.
    Delete { key: String },
    /// One line per replica.
    Status,
    /// Each replica's own copy of the keys, read outside the protocol: do the replicas agree?
    Inspect {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Pre-populate the store, then run five PUTs, five GETs and five DELETEs.
    Demo,
    /// Paxos against 2PC under the same seeded failures: a table, a CSV and a chart.
    Compare {
        #[arg(long, default_value_t = 5)]
        replicas: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Seconds of workload per protocol and failure level.
        #[arg(long, default_value_t = 6)]
        duration: u64,
        /// Failure levels: percent of time each replica's acceptor (participant) is down.
        #[arg(long, value_delimiter = ',', default_value = "0,5,10,20,40")]
        levels: Vec<u32>,
        /// Mean length of one failure.
        #[arg(long, default_value_t = 500)]
        downtime_ms: u64,
        /// Seed of the failure schedule (the same for both protocols) and of the workload.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 20)]
        keys_per_client: u64,
        #[arg(long, default_value_t = 0.5)]
        put_ratio: f64,
        /// Where the CSV and the chart go.
        #[arg(long, default_value = "reports")]
        out: std::path::PathBuf,
        /// The server binary; by default the one beside this client.
        #[arg(long)]
        server_binary: Option<std::path::PathBuf>,
    },
    /// Live view of every replica: state, leader, slots, throughput, events (q quits).
    Watch {
        #[arg(long, default_value_t = 300)]
        interval_ms: u64,
        /// Stop by itself after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Draw one Paxos slot (or 2PC transaction) from the servers' --trace files:
    /// an HTML page with a sequence diagram, and the same round as text.
    Timeline {
        #[arg(long, conflicts_with = "txn", required_unless_present = "txn")]
        slot: Option<u64>,
        /// A 2PC transaction id, as logged (coordinator:epoch:seq).
        #[arg(long)]
        txn: Option<String>,
        /// Where the trace-<id>.jsonl files are.
        #[arg(long, default_value = "logs")]
        traces: std::path::PathBuf,
        /// The HTML file to write (default: reports/timeline-<slot or txn>.html).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Closed-loop load: throughput and latency percentiles.
    Bench {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// Fraction of PUTs (the rest are GETs).
        #[arg(long, default_value_t = 1.0)]
        put_ratio: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Exit codes for scripts: 0 done, 1 key not found, 2 error.
const EXIT_NOT_FOUND: u8 = 1;
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    let options = ClientOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        deadline: Duration::from_millis(args.deadline_ms),
        ..ClientOptions::default()
    };
    let mut client = match Client::with_options(&args.servers, options.clone()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match args.command.unwrap_or(Command::Prompt) {
        Command::Prompt if std::io::stdin().is_terminal() => interactive(&mut client, &options),
        Command::Prompt => piped(&mut client, &options),
        Command::Put { key, value } => one_shot(&mut client, PromptCommand::Put { key, value }),
        Command::Get { key } => one_shot(&mut client, PromptCommand::Get { key }),
        Command::Delete { key } => one_shot(&mut client, PromptCommand::Delete { key }),
        Command::Status => {
            prompt::status_lines(&client::status_all(&args.servers, options.timeout))
                .iter()
                .for_each(|l| println!("{l}"));
            ExitCode::SUCCESS
        }
        Command::Demo => demo(&mut client),
        Command::Inspect { keys } => inspect(&args.servers, &keys, options.timeout),
        Command::Compare {
            replicas,
            clients,
            duration,
            levels,
            downtime_ms,
            seed,
            keys_per_client,
            put_ratio,
            out,
            server_binary,
        } => {
            let server_binary = server_binary.unwrap_or_else(|| {
                std::env::current_exe().map(|exe| exe.with_file_name("server")).unwrap_or_else(|_| "server".into())
            });
            let work_dir = std::env::temp_dir().join(format!("paxos-kv-compare-{}", std::process::id()));
            let options = compare::CompareOptions {
                server_binary,
                replicas,
                clients,
                duration_per_level: Duration::from_secs(duration),
                levels_percent: levels,
                mean_downtime_ms: downtime_ms,
                seed,
                keys_per_client,
                put_ratio,
                client_deadline: Duration::from_millis(2_000),
                work_dir,
            };
            run_compare(&options, &out)
        }
        Command::Watch { interval_ms, duration } => {
            if !std::io::stdout().is_terminal() {
                eprintln!("error: watch needs a terminal; use `status` in scripts");
                return ExitCode::from(EXIT_ERROR);
            }
            match paxos_kv::watch::run(
                &args.servers,
                Duration::from_millis(interval_ms),
                duration.map(Duration::from_secs),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        Command::Timeline { slot, txn, traces, out } => {
            let selection = match (slot, txn) {
                (Some(slot), _) => timeline::Selection::Slot(slot),
                (None, Some(txn)) => timeline::Selection::Txn(txn),
                (None, None) => unreachable!("clap requires --slot or --txn"),
            };
            run_timeline(&selection, &traces, out)
        }
        Command::Bench { clients, duration, value_size, keys, put_ratio, seed } => {
            let bench_options = BenchOptions {
                clients,
                duration: Duration::from_secs(duration),
                value_bytes: value_size,
                keys,
                put_ratio,
                seed,
            };
            println!(
                "bench: {clients} closed-loop clients, {duration} s, {value_size}-byte values, {keys} keys, put ratio {put_ratio}, {} replicas",
                args.servers.len()
            );
            let report = bench::run(&args.servers, &bench_options, &options);
            println!("{}", report.summary());
            if let Some(error) = &report.first_error {
                println!("first error: {error}");
            }
            if report.succeeded == 0 {
                return ExitCode::from(EXIT_ERROR);
            }
            ExitCode::SUCCESS
        }
    }
}

fn run_timeline(
    selection: &timeline::Selection,
    traces: &std::path::Path,
    out: Option<std::path::PathBuf>,
) -> ExitCode {
    let round = match timeline::load_traces(traces).and_then(|t| timeline::select(&t, selection)) {
        Ok(round) => round,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let out = out.unwrap_or_else(|| {
        let name = match selection {
            timeline::Selection::Slot(slot) => format!("slot-{slot}"),
            timeline::Selection::Txn(txn) => format!("txn-{}", txn.replace(':', "-")),
        };
        std::path::PathBuf::from("reports").join(format!("timeline-{name}.html"))
    });
    let written =
        out.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&out, round.render_html()));
    print!("{}", round.render_text());
    match written {
        Ok(()) => {
            println!("wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", out.display());
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run_compare(options: &compare::CompareOptions, out: &std::path::Path) -> ExitCode {
    use indicatif::{ProgressBar, ProgressStyle};
    let protocols = [Protocol::Paxos, Protocol::TwoPc];
    println!(
        "compare: {} replicas, {} clients, {} s per level, levels {:?}% downtime (mean failure {} ms), seed {}",
        options.replicas,
        options.clients,
        options.duration_per_level.as_secs(),
        options.levels_percent,
        options.mean_downtime_ms,
        options.seed
    );
    let progress = ProgressBar::new((protocols.len() * options.levels_percent.len()) as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let mut results = Vec::new();
    for protocol in protocols {
        for &level in &options.levels_percent {
            progress.set_message(format!("{protocol} at {level}% downtime"));
            match compare::run_level(options, protocol, level) {
                Ok(result) => results.push(result),
                Err(e) => {
                    progress.abandon();
                    eprintln!("error: {protocol} at {level}%: {e:#}");
                    return ExitCode::from(EXIT_ERROR);
                }
            }
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    print!("{}", compare::table(&results));
    let stem = format!(
        "compare-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    );
    match compare::write_reports(&results, out, &stem) {
        Ok((csv, svg)) => {
            println!("wrote {} and {}", csv.display(), svg.display());
            let lost: u64 = results.iter().map(|r| r.writes_lost).sum();
            if lost > 0 {
                eprintln!("error: {lost} acknowledged write(s) missing at a replica that is up");
                return ExitCode::from(EXIT_ERROR);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn one_shot(client: &mut Client, command: PromptCommand) -> ExitCode {
    match prompt::execute(client, &command) {
        Outcome::Done(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Outcome::NotFound(_) => {
            let key = match &command {
                PromptCommand::Get { key } | PromptCommand::Delete { key } => key.as_str(),
                _ => "",
            };
            eprintln!("not found: {key}");
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Outcome::Failed(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs one parsed line; returns false on QUIT. Prints exactly one line per
/// command (STATUS prints one per replica) so scripts can pair them up.
fn run_line(client: &mut Client, options: &ClientOptions, line: &str, interactive: bool) -> bool {
    match prompt::parse(line) {
        Ok(None) => {}
        Ok(Some(PromptCommand::Quit)) => return false,
        Ok(Some(PromptCommand::Help)) => {
            if interactive {
                println!("{}", prompt::HELP);
            } else {
                println!("{}", prompt::USAGE);
            }
        }
        Ok(Some(PromptCommand::Status)) => {
            let lines = prompt::status_lines(&client::status_all(client.replicas(), options.timeout));
            if interactive {
                lines.iter().for_each(|l| println!("{l}"));
            } else {
                println!(
                    "{}",
                    lines[1..]
                        .iter()
                        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
        }
        Ok(Some(command)) => match prompt::execute(client, &command) {
            Outcome::Done(line) | Outcome::NotFound(line) => println!("{line}"),
            Outcome::Failed(e) => println!("ERROR: {e}"),
        },
        Err(usage) => println!("ERROR: {usage}"),
    }
    true
}

fn piped(client: &mut Client, options: &ClientOptions) -> ExitCode {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if !run_line(client, options, &line, false) {
            break;
        }
    }
    ExitCode::SUCCESS
}

fn interactive(client: &mut Client, options: &ClientOptions) -> ExitCode {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("error: cannot open the line editor: {e}");
            return piped(client, options);
        }
    };
    let history = std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".paxos_kv_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("paxos-kv: connected to {} replicas. Type HELP for commands, QUIT to leave.", client.replicas().len());
    loop {
        match editor.readline("paxos-kv> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if !run_line(client, options, &line, true) {
                    break;
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(_) => break,
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    ExitCode::SUCCESS
}

/// Prints every replica's copy of each key; exits 1 if two replicas that
/// answered disagree on a key.
fn inspect(servers: &[SocketAddr], keys: &[String], timeout: Duration) -> ExitCode {
    let mut disagreements = 0;
    for key in keys {
        let copies: Vec<String> = servers
            .iter()
            .map(|addr| match client::local_get(*addr, key, timeout) {
                Ok(paxos_kv::kv::Reply::Value(Some(value))) => value,
                Ok(paxos_kv::kv::Reply::Value(None)) => prompt::NOT_FOUND.to_string(),
                Ok(paxos_kv::kv::Reply::Rejected(e)) => format!("[{e}]"),
                Ok(other) => format!("[{other:?}]"),
                Err(e) => format!("[down: {e}]"),
            })
            .collect();
        let answered: std::collections::BTreeSet<&String> = copies.iter().filter(|c| !c.starts_with('[')).collect();
        if answered.len() > 1 {
            disagreements += 1;
        }
        let shown: Vec<String> = copies.iter().enumerate().map(|(i, c)| format!("s{}={c}", i + 1)).collect();
        println!("{key}: {}{}", shown.join("  "), if answered.len() > 1 { "  DISAGREE" } else { "" });
    }
    if disagreements > 0 {
        ExitCode::from(EXIT_NOT_FOUND)
    } else {
        ExitCode::SUCCESS
    }
}

fn demo(client: &mut Client) -> ExitCode {
    let mut failures = 0;
    let mut show = |label: String, result: Result<String, String>| match result {
        Ok(text) => println!("{label:<28} -> {text}"),
        Err(e) => {
            failures += 1;
            println!("{label:<28} -> ERROR: {e}");
        }
    };
    println!("-- pre-populating 10 keys");
    for i in 0..10 {
        show(
            format!("PUT seed-{i} value-{i}"),
            client.put(&format!("seed-{i}"), &format!("value-{i}")).map(|()| "OK".into()).map_err(|e| e.to_string()),
        );
    }
    let pairs = [("apple", "red"), ("banana", "yellow"), ("cherry", "dark red"), ("grape", "green"), ("kiwi", "brown")];
    println!("-- five PUTs");
    for (key, value) in pairs {
        show(format!("PUT {key} {value}"), client.put(key, value).map(|()| "OK".into()).map_err(|e| e.to_string()));
    }
    println!("-- five GETs");
    for (key, _) in pairs {
        show(
            format!("GET {key}"),
            client.get(key).map(|v| v.unwrap_or_else(|| prompt::NOT_FOUND.into())).map_err(|e| e.to_string()),
        );
    }
    println!("-- five DELETEs");
    for (key, _) in pairs {
        show(
            format!("DELETE {key}"),
            client
                .delete(key)
                .map(|existed| if existed { "DELETED".into() } else { prompt::NOT_FOUND.into() })
                .map_err(|e| e.to_string()),
        );
    }
    println!("-- GETs after DELETE");
    for (key, _) in pairs.iter().take(2) {
        show(
            format!("GET {key}"),
            client.get(key).map(|v| v.unwrap_or_else(|| prompt::NOT_FOUND.into())).map_err(|e| e.to_string()),
        );
    }
    if failures > 0 {
        ExitCode::from(EXIT_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}
