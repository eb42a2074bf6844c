//! The command lines of the three binaries (`client`, `server`, `certs`),
//! kept in the library so that a test can hold every flag and subcommand to
//! having a description and examples.

use crate::config::{FailMode, Protocol};
use crate::storage::ClusterState;
use crate::twopc::coordinator::StallPoint;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Talk to a paxos-kv cluster: prompt, pipe, one-shot commands, demo, bench",
    after_help = "Examples:\n  ./run_client.sh                         the prompt (HELP lists its commands)\n  ./run_client.sh put greeting hello      one command; exit 0 done, 1 not found, 2 error\n  printf 'PUT a 1\\nGET a\\n' | ./run_client.sh   one output line per command\n  client --servers 127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003 --certs data/certs status\n\nEvery subcommand has its own --help."
)]
pub struct ClientArgs {
    /// Replica addresses, comma-separated, in id order.
    #[arg(
        long,
        value_delimiter = ',',
        env = "PAXOS_KV_SERVERS",
        default_value = "127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003,127.0.0.1:5004,127.0.0.1:5005"
    )]
    pub servers: Vec<SocketAddr>,
    /// How long one attempt at one replica may take before the next replica is tried.
    #[arg(long, default_value_t = 1_000)]
    pub timeout_ms: u64,
    /// How long one command may take in all, across replicas and retries.
    #[arg(long, default_value_t = 5_000)]
    pub deadline_ms: u64,
    /// Directory with ca.pem, client.pem and client.key (mutual TLS); `./run_client.sh` sets it.
    #[arg(long, env = "PAXOS_KV_CERTS")]
    pub certs: Option<std::path::PathBuf>,
    /// Plain TCP, for clusters started with --insecure.
    #[arg(long)]
    pub insecure: bool,
    #[command(subcommand)]
    pub command: Option<ClientCommand>,
}

/// The lessons `client lesson` can play.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LessonName {
    /// Acceptors that forget their promises and votes break agreement.
    Amnesia,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Interactive prompt (the default); reads commands from stdin when it is not a terminal.
    #[command(
        after_help = "Examples:\n  client prompt\n  client prompt < commands.txt       one output line per command; exit 1 if any failed\n\nValues in quotes may be empty or hold escapes: PUT k \"\"  PUT k \"two\\nlines\""
    )]
    Prompt,
    /// Store a value; prints OK. VALUE `-` reads the value from stdin.
    #[command(
        after_help = "Examples:\n  client put greeting hello\n  client put config - < config.json\n  client put photo --value-file photo.b64"
    )]
    Put {
        /// The key (at most the server's --key-bytes-max bytes).
        key: String,
        /// The value; `-` reads it from stdin.
        #[arg(required_unless_present = "value_file", conflicts_with = "value_file")]
        value: Option<String>,
        /// Read the value from this file (any size the store accepts).
        #[arg(long)]
        value_file: Option<std::path::PathBuf>,
    },
    /// Print the value alone; exit 1 if the key is missing.
    #[command(after_help = "Examples:\n  client get greeting\n  client get config > config.json")]
    Get {
        /// The key to read (linearizable: the read goes through the leader).
        key: String,
    },
    /// Remove a key; exit 1 if it was missing.
    #[command(after_help = "Example:\n  client delete greeting && echo removed")]
    Delete {
        /// The key to remove.
        key: String,
    },
    /// One line per replica; exit 2 unless a majority answers.
    #[command(after_help = "Example:\n  client status || echo 'no majority: writes would fail'")]
    Status,
    /// Each replica's own copy of the keys, read outside the protocol: do the replicas agree?
    #[command(
        after_help = "Example:\n  client inspect a b c     exit 1 if two replicas that applied the same slot disagree"
    )]
    Inspect {
        /// The keys to read from every replica.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Pre-populate the store, then run five PUTs, five GETs and five DELETEs.
    #[command(after_help = "Example:\n  ./run_client.sh demo")]
    Demo,
    /// Paxos against 2PC under the same seeded failures: a table, a CSV and a chart.
    #[command(
        after_help = "Examples:\n  client compare                                   the full run (about 2 minutes)\n  client compare --levels 0,20 --duration 3        a quick look\n\nIt starts clusters of its own on free ports in a temporary directory; no running cluster is needed."
    )]
    Compare {
        /// Replicas in each of the two clusters.
        #[arg(long, default_value_t = 5)]
        replicas: usize,
        /// Closed-loop clients, each with its own keys.
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
        /// Keys each client writes and reads (its own, so lost writes can be counted).
        #[arg(long, default_value_t = 20)]
        keys_per_client: u64,
        /// Fraction of requests that are PUTs (the rest are GETs).
        #[arg(long, default_value_t = 0.5)]
        put_ratio: f64,
        /// 2PC coordinators abort a transaction missing a vote after this long
        /// (the server's --vote-timeout-ms); the chart marks it.
        #[arg(long, default_value_t = 500)]
        vote_timeout_ms: u64,
        /// Where the CSV and the chart go.
        #[arg(long, default_value = "reports")]
        out: std::path::PathBuf,
        /// The server binary; by default the one beside this client.
        #[arg(long)]
        server_binary: Option<std::path::PathBuf>,
    },
    /// See Paxos break when acceptors forget: a fixed choreography of kills, freezes,
    /// restarts and writes on a five-replica cluster of its own.
    #[command(
        after_help = "Examples:\n  ./run_client.sh lesson amnesia              acceptors restart empty: one slot chosen two ways\n  ./run_client.sh lesson amnesia --durable    the same steps, acceptors that remember: all equal\n\nIt starts its own replicas on free ports in a temporary directory (about 15 s) and writes\ntimelines of the contested slot under --out."
    )]
    Lesson {
        /// The lesson to play (amnesia: why acceptors must remember).
        #[arg(value_enum)]
        lesson: LessonName,
        /// Acceptors restart from their disks, as Paxos requires.
        #[arg(long)]
        durable: bool,
        /// Where the timelines go.
        #[arg(long, default_value = "reports")]
        out: std::path::PathBuf,
        /// The server binary; by default the one beside this client.
        #[arg(long)]
        server_binary: Option<std::path::PathBuf>,
    },
    /// Live view of every replica: state, leader, slots, throughput, events (q quits).
    #[command(
        after_help = "Examples:\n  ./run_client.sh watch\n  ./run_client.sh watch --duration 60 --interval-ms 1000"
    )]
    Watch {
        /// How often every replica is asked for its status.
        #[arg(long, default_value_t = 300)]
        interval_ms: u64,
        /// Stop by itself after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Draw one Paxos slot (or 2PC transaction) from the servers' --trace files:
    /// an HTML page with a sequence diagram, and the same round as text.
    #[command(
        after_help = "Examples:\n  ./run_servers.sh --trace && ./run_client.sh put a 1 && ./run_client.sh timeline --key a\n  ./run_client.sh timeline --slot 0\n  ./run_client.sh timeline --contested        slots that saw more than one ballot\n  ./run_client.sh timeline --txn 2:1:17 --out /tmp/txn.html",
        group = clap::ArgGroup::new("round").required(true).args(["slot", "txn", "key", "contested"])
    )]
    Timeline {
        /// The Paxos slot to draw (the first write of a new cluster is slot 0).
        #[arg(long)]
        slot: Option<u64>,
        /// A 2PC transaction id, as logged (coordinator:epoch:seq).
        #[arg(long)]
        txn: Option<String>,
        /// Lists the latest slots whose values touched this key and draws the latest.
        #[arg(long)]
        key: Option<String>,
        /// Lists the slots that saw ACCEPTs at more than one ballot (the interesting ones).
        #[arg(long)]
        contested: bool,
        /// Where the trace-<id>.jsonl files are.
        #[arg(long, default_value = "logs")]
        traces: std::path::PathBuf,
        /// The file to write: an HTML page, or the picture alone if it ends in .svg
        /// (default: reports/timeline-<slot or txn>.html).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Closed-loop load: throughput and latency percentiles.
    #[command(
        after_help = "Examples:\n  ./run_client.sh bench\n  ./run_client.sh bench --clients 1 --duration 5\n  ./run_client.sh bench --put-ratio 0 --value-size 1024      GETs only\n  ./run_client.sh bench --fill --keys 200000                  load a large store\n  ./run_client.sh bench --workload-set --duration 5           PUT, GET, mixed at 1 to 256 clients\n\nProgress goes to stderr while it runs; the table to stdout at the end."
    )]
    Bench {
        /// Closed-loop clients (one request in flight each).
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Threads the clients are spread over, one pipelined connection each.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Bytes of each value written.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Keys chosen from, uniformly.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// Fraction of PUTs (the rest are GETs).
        #[arg(long, default_value_t = 1.0)]
        put_ratio: f64,
        /// Seed of the key and operation choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write each of the --keys keys once, then stop (loads a large store).
        #[arg(long)]
        fill: bool,
        /// Run the workload set instead: PUT, GET and an even mix at 1, 16, 64
        /// and 256 clients, --duration seconds each; writes a CSV and an SVG
        /// chart of throughput and p99 latency under --reports.
        #[arg(long, conflicts_with_all = ["fill", "put_ratio", "clients"])]
        workload_set: bool,
        /// Where the workload set's CSV and chart go.
        #[arg(long, default_value = "reports")]
        reports: std::path::PathBuf,
    },
    /// For benchmarks: each replica's keys, store bytes, bytes its learner
    /// holds and the longest pause of its apply thread.
    #[command(after_help = "Example:\n  client sizes      (scripts/bench_scale.sh uses it)")]
    Sizes,
    /// For benchmarks: waits until replica REPLICA has applied every slot the
    /// others had decided when the wait began, and prints how long it took.
    #[command(after_help = "Example:\n  client wait-caught-up --replica 5 --timeout-s 120")]
    WaitCaughtUp {
        /// The replica id (1-based) to wait for.
        #[arg(long)]
        replica: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A paxos-kv replica: Paxos (proposer, acceptor, learner threads) or 2PC (coordinator, participant)",
    after_help = "Examples (./run_servers.sh does this for you):\n  server --id 1 --replicas 127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003 --data-dir data/1 \\\n         --certs data/certs --cluster-state new\n  server --id 2 --replicas ... --data-dir data/2 --insecure --fail-mtbf-ms 10000 --fail-mode amnesia"
)]
pub struct ServerArgs {
    /// This replica's id, 1-based: its address is the id-th of --replicas.
    #[arg(long)]
    pub id: u32,
    /// The cluster's id (hex), written into every data file; default: derived from --replicas.
    #[arg(long, value_parser = parse_hex)]
    pub cluster_id: Option<u64>,
    /// new: the first start of a new cluster, an empty data directory becomes a voter.
    /// existing: an empty or unmarked data directory is refused (use --rejoin).
    #[arg(long, value_enum, default_value_t = ClusterState::Existing)]
    pub cluster_state: ClusterState,
    /// This replica lost its data directory: set any remains aside, start empty,
    /// and catch up without voting until it is safe to vote (Paxos only).
    #[arg(long)]
    pub rejoin: bool,
    /// paxos (majority, fault-tolerant) or 2pc (every replica, the baseline).
    #[arg(long, value_enum, default_value_t = Protocol::Paxos)]
    pub protocol: Protocol,
    /// Every replica's address, comma-separated, in id order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub replicas: Vec<SocketAddr>,
    /// Where this replica listens (default: its own entry in --replicas), e.g. 0.0.0.0:5001.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory with ca.pem, replica-<id>.pem and replica-<id>.key (see `server certs`).
    #[arg(long, env = "PAXOS_KV_CERTS", required_unless_present = "insecure")]
    pub certs: Option<PathBuf>,
    /// Plain TCP, no certificates: for teaching and for measuring what TLS costs.
    /// Loopback addresses only.
    #[arg(long, conflicts_with = "certs")]
    pub insecure: bool,
    /// Where the acceptor log, the proposer's ballot and snapshots live.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The clock of the protocol state machines: heartbeats, election and
    /// retransmission timeouts are counted in ticks of this length.
    #[arg(long, default_value_t = 10)]
    pub tick_ms: u64,
    /// How long a replica waits for a request to be decided before answering "timeout".
    #[arg(long, default_value_t = 3_000)]
    pub request_timeout_ms: u64,
    /// 2PC: how long a coordinator waits for every vote before it aborts. Keep it
    /// below the client's wait for an answer (1 s by default), or clients see a
    /// timeout where the store answered "aborted".
    #[arg(long, default_value_t = 500)]
    pub vote_timeout_ms: u64,
    /// Largest frame accepted from a client; larger length prefixes close the connection.
    #[arg(long, default_value_t = 4 << 20)]
    pub frame_bytes_max: usize,
    /// Largest frame accepted from another replica. Replicas cut their frames
    /// at a quarter of this (at most 1 MiB), and snapshots travel in chunks.
    #[arg(long, default_value_t = 16 << 20)]
    pub peer_frame_bytes_max: usize,
    /// Longest key accepted; longer ones are refused with "key too large".
    #[arg(long, default_value_t = 1_024)]
    pub key_bytes_max: usize,
    /// Client connections beyond this many open ones are refused (one thread each).
    #[arg(long, default_value_t = 2_048)]
    pub connections_max: usize,
    /// Connections in their TLS handshake or hello at once; beyond this the oldest is closed.
    #[arg(long, default_value_t = 512)]
    pub handshakes_max: usize,
    /// Bytes of frames being received from all clients together; a connection that
    /// would go beyond it is closed (replica links have a budget of their own).
    #[arg(long, default_value_t = 256 << 20)]
    pub inflight_bytes_max: usize,
    /// A client connection without a request for this long is closed.
    #[arg(long, default_value_t = 60_000)]
    pub client_idle_timeout_ms: u64,
    /// Largest value accepted; larger ones are refused with "value too large".
    /// Keep it well below --frame-bytes-max.
    #[arg(long, default_value_t = 1 << 20)]
    pub value_bytes_max: usize,
    /// Write a snapshot, and let the acceptor forget older slots, every this many slots.
    /// A snapshot writes what changed since the last one (the whole store only once the
    /// changes outgrow it). Fewer slots: less to re-propose after the whole cluster
    /// restarts; more: fewer, larger writes.
    #[arg(long, default_value_t = 1_000)]
    pub snapshot_interval_slots: u64,
    /// Also write a snapshot once this many bytes were decided since the last
    /// one. Bounds the decided values each replica keeps in memory and re-proposes.
    #[arg(long, default_value_t = 64 << 20)]
    pub snapshot_log_bytes: usize,
    /// Bytes each role's mailbox and each link's send queue may hold; beyond
    /// it requests are refused as overloaded and peer messages dropped (the
    /// protocols resend what matters).
    #[arg(long, default_value_t = 64 << 20)]
    pub queue_bytes_max: usize,
    /// How many slots the leader keeps in flight at once. Few slots with
    /// large batches beat many small ones: each slot costs every acceptor a sync.
    #[arg(long, default_value_t = 4)]
    pub window_slots: usize,
    /// Seed of the election jitter.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mean time between random acceptor failures; unset means no failures.
    #[arg(long)]
    pub fail_mtbf_ms: Option<u64>,
    /// Mean time an acceptor stays offline after a failure.
    #[arg(long, default_value_t = 2_000)]
    pub fail_downtime_ms: u64,
    /// Seed of the failure schedule: the same seed gives the same failures.
    #[arg(long, default_value_t = 1)]
    pub fail_seed: u64,
    /// durable: restart from disk (safe). amnesia: restart empty (UNSAFE, for demonstration).
    #[arg(long, value_enum, default_value_t = FailMode::Durable)]
    pub fail_mode: FailMode,
    /// The failure thread stops after this many failures.
    #[arg(long, default_value_t = 10_000)]
    pub fail_max: u64,
    /// 2PC demonstration and test hook: this replica's coordinator acts as if it
    /// crashed at this point of every transaction (kill and restart it to recover).
    #[arg(long, value_enum)]
    pub stall_coordinator: Option<StallPoint>,
    /// Record every protocol message sent and received, as JSON lines, in this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Recording stops when the trace reaches this size.
    #[arg(long, default_value_t = 256 << 20)]
    pub trace_bytes_max: u64,
    /// error, warn, info or debug (debug logs every ACCEPT, ACCEPTED and DECIDE).
    #[arg(long, default_value = "info")]
    pub log_level: log::LevelFilter,
}

pub fn parse_hex(text: &str) -> Result<u64, String> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| format!("not a hex cluster id: {e}"))
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Create (or complete) a paxos-kv certificate directory: ca.pem/ca.key, replica-<id>.pem/.key, \
             client.pem/.key. An existing ca.key is kept, so new certificates verify against the ca.pem \
             already distributed; leaf certificates are replaced. Private keys are written mode 0600.",
    after_help = "Examples:\n  certs --out data/certs --replicas 5\n  certs --out data/certs --replicas 5 --host db1.example.org --host 10.0.0.7"
)]
pub struct CertsArgs {
    /// Where to write the certificates.
    #[arg(long)]
    pub out: PathBuf,
    /// How many replicas (ids 1..=N) get a certificate.
    #[arg(long, default_value_t = 5)]
    pub replicas: u32,
    /// Extra host names or IP addresses to put in every replica certificate (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag and positional argument says what it is for, and every
    /// command shows examples.
    fn assert_described(command: &clap::Command, path: &str) {
        let after = command.get_after_help().map(|s| s.to_string()).unwrap_or_default();
        assert!(after.contains("Example"), "`{path}` shows no examples");
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let help = arg.get_help().or(arg.get_long_help()).map(|s| s.to_string()).unwrap_or_default();
            assert!(!help.trim().is_empty(), "`{path}`: argument `{id}` has no description");
        }
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            assert!(sub.get_about().is_some(), "`{path} {}` has no description", sub.get_name());
            assert_described(sub, &format!("{path} {}", sub.get_name()));
        }
    }

    #[test]
    fn every_flag_and_command_is_described_with_examples() {
        assert_described(&ClientArgs::command(), "client");
        assert_described(&ServerArgs::command(), "server");
        assert_described(&CertsArgs::command(), "certs");
        ClientArgs::command().debug_assert();
        ServerArgs::command().debug_assert();
        CertsArgs::command().debug_assert();
    }
}
