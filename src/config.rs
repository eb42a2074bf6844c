//! Server configuration, validated once at start. Names carry their units.

use crate::paxos::NodeId;
use crate::security::ServerSecurity;
use crate::storage::frames::RECORD_BYTES_MAX;
use crate::storage::{ClusterState, Identity};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum FailMode {
    /// A restarted acceptor reloads its promises and votes from disk (safe).
    Durable,
    /// A restarted acceptor forgets everything. UNSAFE: it can break agreement;
    /// it exists to show why Paxos Made Simple requires acceptors to remember.
    Amnesia,
}

/// How the replicas keep their copies of the store in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Protocol {
    /// Multi-Paxos: needs a majority, survives minority failures.
    Paxos,
    /// Two-phase commit, the baseline: needs every replica, blocks on coordinator loss.
    #[value(name = "2pc")]
    TwoPc,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Paxos => "paxos",
            Protocol::TwoPc => "2pc",
        })
    }
}

#[derive(Clone, Debug)]
pub struct FailureConfig {
    /// Mean time between an acceptor's failures; `None` disables failures.
    pub mtbf_ms: Option<u64>,
    pub downtime_ms: u64,
    pub seed: u64,
    pub mode: FailMode,
    /// The failure thread stops after this many failures.
    pub failures_max: u64,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub id: NodeId,
    /// Written into every data file, so that files of another cluster are refused.
    pub cluster_id: u64,
    /// Whether an empty data directory may start as a voter (a new cluster).
    pub cluster_state: ClusterState,
    /// Start from an empty data directory after losing the old one, without
    /// voting until rebuilt.
    pub rejoin: bool,
    pub protocol: Protocol,
    /// Every replica's address, replica `i` at index `i - 1`.
    pub replicas: Vec<SocketAddr>,
    /// Where this replica listens; `None`: its own entry in `replicas`.
    pub listen: Option<SocketAddr>,
    /// Mutual TLS with the cluster's certificates, or plain TCP (`--insecure`).
    pub security: ServerSecurity,
    pub data_dir: PathBuf,
    pub tick_ms: u64,
    pub request_timeout_ms: u64,
    /// 2PC only: a coordinator aborts a transaction missing a vote after this long.
    pub vote_timeout_ms: u64,
    /// Largest frame accepted from a client (and before a handshake).
    pub frame_bytes_max: usize,
    /// Largest frame accepted from a replica that completed the handshake.
    pub peer_frame_bytes_max: usize,
    /// Open client connections beyond this are refused.
    pub connections_max: usize,
    /// Connections still in their TLS handshake or hello; beyond this the oldest is closed.
    pub handshakes_max: usize,
    /// Bytes of frames being received from clients (and unidentified
    /// connections) together; replica links have a budget of their own.
    pub inflight_bytes_max: usize,
    /// A client connection with no request for this long is closed.
    pub client_idle_timeout_ms: u64,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub snapshot_interval_slots: u64,
    /// Decided bytes that make a snapshot due within the interval; also caps
    /// the decided slots each learner keeps in memory for its peers.
    pub snapshot_log_bytes: usize,
    /// Bytes each role's mailbox and each link's send queue may hold.
    pub queue_bytes_max: usize,
    pub window_slots: usize,
    pub seed: u64,
    pub failure: FailureConfig,
    /// 2PC only, for demonstrations and tests: the coordinator acts as if it
    /// crashed at this point of every transaction.
    pub stall_coordinator: Option<crate::twopc::coordinator::StallPoint>,
    /// Record every protocol message sent and received as JSON lines here.
    pub trace: Option<PathBuf>,
    pub trace_bytes_max: u64,
}

impl ServerConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.replicas.is_empty(), "at least one replica address is needed");
        ensure!(
            self.id >= 1 && self.id as usize <= self.replicas.len(),
            "--id {} is not in 1..={}",
            self.id,
            self.replicas.len()
        );
        for (i, a) in self.replicas.iter().enumerate() {
            if self.replicas[..i].contains(a) {
                bail!("replica address {a} is listed twice");
            }
        }
        ensure!(self.tick_ms >= 1, "--tick-ms must be at least 1");
        ensure!(self.request_timeout_ms >= self.tick_ms, "--request-timeout-ms must be at least one tick");
        ensure!(
            self.vote_timeout_ms >= self.tick_ms && self.vote_timeout_ms < self.request_timeout_ms,
            "--vote-timeout-ms must be at least one tick and below --request-timeout-ms"
        );
        ensure!(self.frame_bytes_max >= 1024, "--frame-bytes-max must be at least 1024");
        ensure!(
            self.peer_frame_bytes_max >= self.frame_bytes_max,
            "--peer-frame-bytes-max must be at least --frame-bytes-max"
        );
        ensure!(self.key_bytes_max >= 1, "--key-bytes-max must be at least 1");
        ensure!(self.connections_max >= 1, "--connections-max must be at least 1");
        ensure!(self.handshakes_max >= 2 * self.replicas.len(), "--handshakes-max must leave room for the replicas");
        ensure!(
            self.inflight_bytes_max >= self.frame_bytes_max,
            "--inflight-bytes-max must hold at least one client frame (--frame-bytes-max)"
        );
        ensure!(self.client_idle_timeout_ms >= 1_000, "--client-idle-timeout-ms must be at least 1000");
        if !self.security.is_tls() {
            ensure!(
                self.listen_address().ip().is_loopback(),
                "--insecure replicas listen on loopback only (127.0.0.0/8), not {}: anyone who can reach \
                 the port could speak as a replica",
                self.listen_address()
            );
        }
        ensure!(
            self.key_bytes_max + self.value_bytes_max + 1024 <= self.frame_bytes_max,
            "--key-bytes-max plus --value-bytes-max must fit in --frame-bytes-max with 1 KiB to spare"
        );
        ensure!(
            self.frame_bytes_max <= RECORD_BYTES_MAX,
            "--frame-bytes-max above {RECORD_BYTES_MAX} would let a log record grow past what replay accepts"
        );
        ensure!(
            !(self.rejoin && self.protocol == Protocol::TwoPc),
            "--rejoin is for Paxos replicas: a 2PC participant that lost its disk cannot rebuild \
             (every replica holds its own decisions; that is the baseline's weakness)"
        );
        ensure!(self.snapshot_interval_slots >= 1, "--snapshot-interval-slots must be at least 1");
        ensure!(self.snapshot_log_bytes >= 1 << 20, "--snapshot-log-bytes must be at least 1 MiB");
        ensure!(
            self.queue_bytes_max >= self.frame_bytes_max,
            "--queue-bytes-max must hold at least one client frame (--frame-bytes-max)"
        );
        ensure!(self.window_slots >= 1, "--window-slots must be at least 1");
        if let Some(mtbf) = self.failure.mtbf_ms {
            ensure!(mtbf >= 1, "--fail-mtbf-ms must be at least 1");
            ensure!(self.failure.downtime_ms >= 1, "--fail-downtime-ms must be at least 1");
        }
        Ok(())
    }

    /// Link frames, catch-up replies and snapshot chunks are cut at this size:
    /// far below what a peer accepts, so that no limit turns into an outage.
    /// (One value larger than this still travels alone, and is below
    /// `--frame-bytes-max`, which a peer's limit is at least.)
    pub fn link_frame_bytes(&self) -> usize {
        (self.peer_frame_bytes_max / 4).min(1 << 20)
    }

    /// What this replica's memory holds at most, beyond the store itself and
    /// the replicated values written since the last snapshot, as
    /// (what, bytes) for the startup log.
    pub fn memory_budget(&self) -> Vec<(&'static str, usize)> {
        let peers = self.replicas.len().saturating_sub(1);
        vec![
            ("decided values kept for peers", self.snapshot_log_bytes),
            ("role mailboxes (3)", 3 * self.queue_bytes_max),
            ("link send queues", peers * self.queue_bytes_max),
            ("client frames being received", self.inflight_bytes_max),
            ("replica frames being received", 2 * peers * self.peer_frame_bytes_max),
            ("free heap touched ahead of use", crate::heap::TOP_RESERVE_BYTES),
        ]
    }

    pub fn listen_address(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| self.address_of(self.id))
    }

    pub fn identity(&self) -> Identity {
        Identity { cluster_id: self.cluster_id, replica_id: self.id }
    }

    /// A cluster id for clusters started without `--cluster-id`: derived from
    /// the replica list, so every replica of one list agrees on it.
    pub fn cluster_id_of(replicas: &[SocketAddr]) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in replicas.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",").bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }

    pub fn cluster(&self) -> Vec<NodeId> {
        (1..=self.replicas.len() as NodeId).collect()
    }

    pub fn address_of(&self, id: NodeId) -> SocketAddr {
        self.replicas[id as usize - 1]
    }
}
