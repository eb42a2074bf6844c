//! The paxos-kv client: an interactive prompt, a pipe reader, one-shot
//! commands, a demo and a benchmark, all over the remote stub.

use clap::{Parser, Subcommand};
use paxos_kv::bench::{self, BenchOptions};
use paxos_kv::cli::{self, EXIT_ERROR};
use paxos_kv::client::{self, Client, ClientOptions};
use paxos_kv::compare;
use paxos_kv::prompt::{self, PromptCommand};
use paxos_kv::security::ClientSecurity;
use paxos_kv::timeline;
use std::io::IsTerminal;
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
    #[arg(long, default_value_t = 1_000)]
    timeout_ms: u64,
    /// How long one command may take in all, across replicas and retries.
    #[arg(long, default_value_t = 5_000)]
    deadline_ms: u64,
    /// Directory with ca.pem, client.pem and client.key (mutual TLS); `./run_client.sh` sets it.
    #[arg(long, env = "PAXOS_KV_CERTS")]
    certs: Option<std::path::PathBuf>,
    /// Plain TCP, for clusters started with --insecure.
    #[arg(long)]
    insecure: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Interactive prompt (the default); reads commands from stdin when it is not a terminal.
    Prompt,
    /// Store a value; prints OK. VALUE `-` reads the value from stdin.
    #[command(
        after_help = "Examples:\n  client put greeting hello\n  client put config - < config.json\n  client put photo --value-file photo.b64"
    )]
    Put {
        key: String,
        #[arg(required_unless_present = "value_file", conflicts_with = "value_file")]
        value: Option<String>,
        /// Read the value from this file (any size the store accepts).
        #[arg(long)]
        value_file: Option<std::path::PathBuf>,
    },
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
        /// Write each of the --keys keys once, then stop (loads a large store).
        #[arg(long)]
        fill: bool,
    },
    /// For benchmarks: each replica's keys, store bytes, bytes its learner
    /// holds and the longest pause of its apply thread.
    Sizes,
    /// For benchmarks: waits until replica REPLICA has applied every slot the
    /// others had decided when the wait began, and prints how long it took.
    WaitCaughtUp {
        #[arg(long)]
        replica: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
}

fn security(args: &Args) -> Result<ClientSecurity, String> {
    match (&args.certs, args.insecure) {
        (_, true) => Ok(ClientSecurity::Insecure),
        (Some(dir), false) => ClientSecurity::from_dir(dir).map_err(|e| format!("{e:#}")),
        (None, false) => Err("give --certs DIR (or PAXOS_KV_CERTS) for a cluster with certificates, or \
             --insecure for one started with --insecure; ./run_client.sh does this for you"
            .into()),
    }
}

fn main() -> ExitCode {
    // Output into a closed pipe (`client timeline ... | head`) ends the
    // program quietly, as for any Unix filter, instead of a panic.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = Args::parse();
    let needs_cluster = !matches!(args.command, Some(Command::Timeline { .. } | Command::Compare { .. }));
    let security = match security(&args) {
        Ok(security) => security,
        Err(e) if needs_cluster => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
        Err(_) => ClientSecurity::Insecure,
    };
    let options = ClientOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        deadline: Duration::from_millis(args.deadline_ms),
        security: security.clone(),
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
        Command::Prompt if std::io::stdin().is_terminal() => cli::interactive(&mut client, &options),
        Command::Prompt => cli::piped(&mut client, &options),
        Command::Put { key, value, value_file } => match cli::read_value(value, value_file) {
            Ok(value) => cli::one_shot(&mut client, PromptCommand::Put { key, value }),
            Err(e) => {
                eprintln!("ERROR: {e}");
                ExitCode::from(EXIT_ERROR)
            }
        },
        Command::Get { key } => cli::one_shot(&mut client, PromptCommand::Get { key }),
        Command::Delete { key } => cli::one_shot(&mut client, PromptCommand::Delete { key }),
        Command::Status => {
            let statuses = client::status_all(&args.servers, options.timeout, &security);
            prompt::status_lines(&statuses).iter().for_each(|l| println!("{l}"));
            let up = statuses.iter().filter(|(_, status)| status.is_ok()).count();
            if up > args.servers.len() / 2 {
                ExitCode::SUCCESS
            } else {
                eprintln!("ERROR: {up} of {} replicas answer; a majority is needed", args.servers.len());
                ExitCode::from(EXIT_ERROR)
            }
        }
        Command::Demo => cli::demo(&mut client),
        Command::Inspect { keys } => cli::inspect(&args.servers, &keys, options.timeout, &security),
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
            cli::run_compare(&options, &out)
        }
        Command::Watch { interval_ms, duration } => {
            if !std::io::stdout().is_terminal() {
                eprintln!("error: watch needs a terminal; use `status` in scripts");
                return ExitCode::from(EXIT_ERROR);
            }
            match paxos_kv::watch::run(
                &args.servers,
                &security,
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
            cli::run_timeline(&selection, &traces, out)
        }
        Command::Sizes => {
            for (addr, status) in client::status_all(&args.servers, options.timeout, &security) {
                match status.as_ref().map(|s| s.paxos()) {
                    Ok(Some(s)) => println!(
                        "replica {} {addr}: keys {} store {:.1} MiB learner-held {:.1} MiB apply-pause-max {:.1} ms (cpu {:.1} ms) next-slot {}",
                        s.node_id,
                        s.keys,
                        s.store_bytes as f64 / (1 << 20) as f64,
                        s.learner_held_bytes as f64 / (1 << 20) as f64,
                        s.apply_pause_max_us as f64 / 1000.0,
                        s.apply_pause_cpu_max_us as f64 / 1000.0,
                        s.learner_next_slot
                    ),
                    Ok(None) => println!("{addr}: not a Paxos replica"),
                    Err(e) => println!("{addr}: DOWN ({e})"),
                }
            }
            ExitCode::SUCCESS
        }
        Command::WaitCaughtUp { replica, timeout_s } => {
            cli::wait_caught_up(&args.servers, replica, timeout_s, &security)
        }
        Command::Bench { clients, duration, value_size, keys, put_ratio, seed, fill } => {
            let bench_options = BenchOptions {
                clients,
                duration: Duration::from_secs(duration),
                value_bytes: value_size,
                keys,
                put_ratio,
                seed,
                fill,
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
