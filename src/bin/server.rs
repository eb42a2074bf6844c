//! A paxos-kv replica: flags in, then `paxos_kv::node::serve`.

use anyhow::Result;
use clap::Parser;
use paxos_kv::config::{FailMode, FailureConfig, Protocol, ServerConfig};
use paxos_kv::security::ServerSecurity;
use paxos_kv::storage::{ClusterState, Damage, EXIT_STORAGE};
use paxos_kv::twopc::coordinator::StallPoint;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A paxos-kv replica: Paxos (proposer, acceptor, learner threads) or 2PC (coordinator, participant)"
)]
struct Args {
    /// This replica's id, 1-based: its address is the id-th of --replicas.
    #[arg(long)]
    id: u32,
    /// The cluster's id (hex), written into every data file; default: derived from --replicas.
    #[arg(long, value_parser = parse_hex)]
    cluster_id: Option<u64>,
    /// new: the first start of a new cluster, an empty data directory becomes a voter.
    /// existing: an empty or unmarked data directory is refused (use --rejoin).
    #[arg(long, value_enum, default_value_t = ClusterState::Existing)]
    cluster_state: ClusterState,
    /// This replica lost its data directory: set any remains aside, start empty,
    /// and catch up without voting until it is safe to vote (Paxos only).
    #[arg(long)]
    rejoin: bool,
    /// paxos (majority, fault-tolerant) or 2pc (every replica, the baseline).
    #[arg(long, value_enum, default_value_t = Protocol::Paxos)]
    protocol: Protocol,
    /// Every replica's address, comma-separated, in id order.
    #[arg(long, value_delimiter = ',', required = true)]
    replicas: Vec<SocketAddr>,
    /// Where this replica listens (default: its own entry in --replicas), e.g. 0.0.0.0:5001.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory with ca.pem, replica-<id>.pem and replica-<id>.key (see `server certs`).
    #[arg(long, env = "PAXOS_KV_CERTS", required_unless_present = "insecure")]
    certs: Option<PathBuf>,
    /// Plain TCP, no certificates: for teaching and for measuring what TLS costs.
    /// Loopback addresses only.
    #[arg(long, conflicts_with = "certs")]
    insecure: bool,
    /// Where the acceptor log, the proposer's ballot and snapshots live.
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// How long a replica waits for a request to be decided before answering "timeout".
    #[arg(long, default_value_t = 3_000)]
    request_timeout_ms: u64,
    /// 2PC: how long a coordinator waits for every vote before it aborts. Keep it
    /// below the client's wait for an answer (1 s by default), or clients see a
    /// timeout where the store answered "aborted".
    #[arg(long, default_value_t = 500)]
    vote_timeout_ms: u64,
    /// Largest frame accepted from a client; larger length prefixes close the connection.
    #[arg(long, default_value_t = 4 << 20)]
    frame_bytes_max: usize,
    /// Largest frame accepted from another replica. Replicas cut their frames
    /// at a quarter of this (at most 1 MiB), and snapshots travel in chunks.
    #[arg(long, default_value_t = 16 << 20)]
    peer_frame_bytes_max: usize,
    #[arg(long, default_value_t = 1_024)]
    key_bytes_max: usize,
    /// Client connections beyond this many open ones are refused (one thread each).
    #[arg(long, default_value_t = 2_048)]
    connections_max: usize,
    /// Connections in their TLS handshake or hello at once; beyond this the oldest is closed.
    #[arg(long, default_value_t = 512)]
    handshakes_max: usize,
    /// Bytes of frames being received from all clients together; a connection that
    /// would go beyond it is closed (replica links have a budget of their own).
    #[arg(long, default_value_t = 256 << 20)]
    inflight_bytes_max: usize,
    /// A client connection without a request for this long is closed.
    #[arg(long, default_value_t = 60_000)]
    client_idle_timeout_ms: u64,
    #[arg(long, default_value_t = 1 << 20)]
    value_bytes_max: usize,
    /// Write a snapshot, and let the acceptor forget older slots, every this many slots.
    /// Fewer slots: less to re-propose after the whole cluster restarts; more: fewer
    /// full-store snapshot writes.
    #[arg(long, default_value_t = 1_000)]
    snapshot_interval_slots: u64,
    /// Also write a snapshot once this many bytes were decided since the last
    /// one (either way only after an eighth to a quarter of the store's size was). Bounds
    /// the decided values each replica keeps in memory and re-proposes.
    #[arg(long, default_value_t = 64 << 20)]
    snapshot_log_bytes: usize,
    /// Bytes each role's mailbox and each link's send queue may hold; beyond
    /// it requests are refused as overloaded and peer messages dropped (the
    /// protocols resend what matters).
    #[arg(long, default_value_t = 64 << 20)]
    queue_bytes_max: usize,
    /// How many slots the leader keeps in flight at once. Few slots with
    /// large batches beat many small ones: each slot costs every acceptor a sync.
    #[arg(long, default_value_t = 4)]
    window_slots: usize,
    /// Seed of the election jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Mean time between random acceptor failures; unset means no failures.
    #[arg(long)]
    fail_mtbf_ms: Option<u64>,
    /// Mean time an acceptor stays offline after a failure.
    #[arg(long, default_value_t = 2_000)]
    fail_downtime_ms: u64,
    #[arg(long, default_value_t = 1)]
    fail_seed: u64,
    /// durable: restart from disk (safe). amnesia: restart empty (UNSAFE, for demonstration).
    #[arg(long, value_enum, default_value_t = FailMode::Durable)]
    fail_mode: FailMode,
    /// The failure thread stops after this many failures.
    #[arg(long, default_value_t = 10_000)]
    fail_max: u64,
    /// 2PC demonstration and test hook: this replica's coordinator acts as if it
    /// crashed at this point of every transaction (kill and restart it to recover).
    #[arg(long, value_enum)]
    stall_coordinator: Option<StallPoint>,
    /// Record every protocol message sent and received, as JSON lines, in this file.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Recording stops when the trace reaches this size.
    #[arg(long, default_value_t = 256 << 20)]
    trace_bytes_max: u64,
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
}

fn parse_hex(text: &str) -> Result<u64, String> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| format!("not a hex cluster id: {e}"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    paxos_kv::logging::init(args.log_level);
    let config = ServerConfig {
        id: args.id,
        cluster_id: args.cluster_id.unwrap_or_else(|| ServerConfig::cluster_id_of(&args.replicas)),
        cluster_state: args.cluster_state,
        rejoin: args.rejoin,
        protocol: args.protocol,
        stall_coordinator: args.stall_coordinator,
        trace: args.trace,
        trace_bytes_max: args.trace_bytes_max,
        security: match &args.certs {
            Some(dir) if !args.insecure => ServerSecurity::from_dir(dir, args.id)?,
            _ => ServerSecurity::Insecure,
        },
        listen: args.listen,
        replicas: args.replicas,
        data_dir: args.data_dir,
        tick_ms: args.tick_ms,
        request_timeout_ms: args.request_timeout_ms,
        vote_timeout_ms: args.vote_timeout_ms,
        frame_bytes_max: args.frame_bytes_max,
        peer_frame_bytes_max: args.peer_frame_bytes_max,
        key_bytes_max: args.key_bytes_max,
        connections_max: args.connections_max,
        handshakes_max: args.handshakes_max,
        inflight_bytes_max: args.inflight_bytes_max,
        client_idle_timeout_ms: args.client_idle_timeout_ms,
        value_bytes_max: args.value_bytes_max,
        snapshot_interval_slots: args.snapshot_interval_slots,
        snapshot_log_bytes: args.snapshot_log_bytes,
        queue_bytes_max: args.queue_bytes_max,
        window_slots: args.window_slots,
        seed: args.seed,
        failure: FailureConfig {
            mtbf_ms: args.fail_mtbf_ms,
            downtime_ms: args.fail_downtime_ms,
            seed: args.fail_seed,
            mode: args.fail_mode,
            failures_max: args.fail_max,
        },
    };
    match paxos_kv::node::serve(config) {
        Err(error) if error.downcast_ref::<Damage>().is_some() => {
            log::error!("REFUSING TO START: {error:#}");
            eprintln!("REFUSING TO START: {error:#}");
            std::process::exit(EXIT_STORAGE)
        }
        other => other,
    }
}
