//! Deterministic simulation of a cluster of sans-IO Paxos replicas. One seed decides
//! the whole run: message loss, duplication, delay and reordering, acceptor
//! crashes and restarts, whole-replica crashes, disk faults, and the client
//! workload. After every step the invariants below are checked; a violation
//! names the seed and the command that replays it.
//!
//! Each replica keeps its files on a [`SimDisk`] and recovers through
//! `storage::open_paxos`, the server's own code: a crash loses what was not
//! synced, may tear the final append, a sync can fail (the replica stops), a
//! bit can flip in a stopped replica's log or snapshot (it must refuse to
//! start, and is then rebuilt with `--rejoin`), and a data directory can be
//! lost (refused without `--rejoin`, rebuilt with it).

use crate::kv::{Command, KvStore, Op, Reply, RequestError, RequestId};
use crate::paxos::acceptor::{Acceptor, AcceptorOutbox, AcceptorRecord};
use crate::paxos::learner::{Learner, LearnerConfig, LearnerOutbox};
use crate::paxos::proposer::{Proposer, ProposerConfig, ProposerOutbox};
use crate::paxos::quorum::majority;
use crate::paxos::{Ballot, Envelope, Message, NodeId, Role, Slot, SlotValue};
use crate::storage::{
    self, AcceptorLog, ClusterState, Damage, Disk, Identity, SimDisk, SnapshotWriter, SnapshotWritten, Torn,
    SIM_SECTOR_BYTES,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub replicas: usize,
    pub clients: usize,
    /// Ticks with faults, then `heal_ticks` without any.
    pub fault_ticks: u64,
    pub heal_ticks: u64,
    pub loss_percent: u32,
    pub duplicate_percent: u32,
    pub delay_ticks_max: u64,
    /// Chance per tick, in parts per 10,000, that an up acceptor crashes.
    pub crash_per_10k_ticks: u32,
    /// How often the replica that leads is cut off from every other replica
    /// (clients still reach it) for up to twice `downtime_ticks_max`: the
    /// others elect a new leader while it may still believe it leads.
    pub leader_partition_per_10k_ticks: u32,
    /// How often the replica that leads is frozen (as by SIGSTOP) for up to
    /// twice `downtime_ticks_max`: it misses its ticks, and what was sent to
    /// it, clients' requests included, reaches it only when it thaws, when
    /// it may still believe it leads.
    pub leader_freeze_per_10k_ticks: u32,
    pub downtime_ticks_max: u64,
    /// Restart acceptors with empty state (unsafe; shows why acceptors must remember).
    pub amnesia: bool,
    pub snapshot_interval_slots: u64,
    /// Chance per tick, in parts per 10,000, that an up replica crashes whole.
    pub replica_crash_per_10k_ticks: u32,
    /// Chance per tick, in parts per 10,000, that an up replica's next sync fails.
    pub sync_failure_per_10k_ticks: u32,
    /// Percent of replica crashes that also damage the disk (a flipped bit in
    /// the log or snapshot, or a lost data directory), while at most f
    /// replicas have lost their state at once.
    pub disk_damage_percent: u32,
    /// Bytes at which promises, catch-up replies and snapshot chunks are cut.
    pub promise_bytes_max: usize,
    pub catchup_bytes_max: usize,
    pub batch_bytes_max: usize,
    /// Envelopes one role sends a peer in one step travel in frames cut at
    /// this many bytes (each frame lost, duplicated or delayed whole), as the
    /// real links do; `None`: every envelope travels alone.
    pub frame_bytes: Option<usize>,
    /// Store bytes rewritten per byte of changes appended (the server's is 4):
    /// a slower pace makes the short runs' small stores take several
    /// snapshots to rewrite, so that crashes fall inside rewrites.
    pub rewrite_pace: u64,
    /// Clients pick keys among this many: few make them contend for the same
    /// keys, many make a store larger than what a snapshot interval changes.
    pub keys: u32,
    /// Named so that a failure's replay command rebuilds this configuration.
    pub profile: &'static str,
}

impl SimConfig {
    pub fn new(replicas: usize) -> Self {
        SimConfig {
            replicas,
            clients: 4,
            fault_ticks: 1_500,
            heal_ticks: 3_000,
            loss_percent: 5,
            duplicate_percent: 3,
            delay_ticks_max: 6,
            crash_per_10k_ticks: 30,
            leader_partition_per_10k_ticks: 15,
            leader_freeze_per_10k_ticks: 15,
            downtime_ticks_max: 150,
            amnesia: false,
            snapshot_interval_slots: 25,
            replica_crash_per_10k_ticks: 0,
            sync_failure_per_10k_ticks: 0,
            disk_damage_percent: 0,
            promise_bytes_max: 2_000,
            catchup_bytes_max: 1 << 20,
            batch_bytes_max: 512 << 10,
            frame_bytes: None,
            rewrite_pace: storage::REWRITE_BYTES_PER_CHANGED_BYTE,
            keys: 5,
            profile: "default",
        }
    }

    /// The configurations the tests run, by name: `default`, `amnesia`
    /// (acceptors forget: must break), `disk` (whole-replica crashes and disk faults).
    pub fn profile(name: &str, replicas: usize) -> Option<Self> {
        let mut config = SimConfig::new(replicas);
        match name {
            "default" => {}
            "amnesia" => {
                // Frequent forgetting and enough loss to force elections
                // (pre-vote keeps a healthy cluster from holding many).
                config.amnesia = true;
                config.crash_per_10k_ticks = 300;
                config.downtime_ticks_max = 60;
                config.loss_percent = 15;
                config.profile = "amnesia";
            }
            "limits" => {
                // Small byte limits, so that promises, frames, catch-up
                // replies and snapshot transfers are all cut in pieces, and
                // long outages so that snapshots must be sent.
                config.promise_bytes_max = 150;
                config.catchup_bytes_max = 120;
                config.batch_bytes_max = 100;
                config.frame_bytes = Some(200);
                config.rewrite_pace = 1;
                config.keys = 400;
                config.snapshot_interval_slots = 10;
                config.crash_per_10k_ticks = 10;
                config.replica_crash_per_10k_ticks = 20;
                config.downtime_ticks_max = 400;
                config.profile = "limits";
            }
            "disk" => {
                config.crash_per_10k_ticks = 10;
                config.replica_crash_per_10k_ticks = 25;
                config.sync_failure_per_10k_ticks = 8;
                config.disk_damage_percent = 40;
                config.profile = "disk";
            }
            _ => return None,
        }
        Some(config)
    }
}

/// How often each storage fault path was reached (a test asserts every one is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskFaultCounts {
    pub replica_crashes: u64,
    pub torn_tails_cut: u64,
    /// Crashes in mid-append that kept a sector of it after one they lost.
    pub torn_appends_with_holes: u64,
    pub unsynced_writes_lost: u64,
    pub sync_failures_stopped: u64,
    pub corruptions_refused: u64,
    pub lost_dirs_refused: u64,
    pub rejoins: u64,
    pub rebuilds_finished: u64,
    pub unfinished_snapshot_changes_cut: u64,
}

impl DiskFaultCounts {
    pub fn add(&mut self, other: &DiskFaultCounts) {
        self.replica_crashes += other.replica_crashes;
        self.torn_tails_cut += other.torn_tails_cut;
        self.torn_appends_with_holes += other.torn_appends_with_holes;
        self.unsynced_writes_lost += other.unsynced_writes_lost;
        self.sync_failures_stopped += other.sync_failures_stopped;
        self.corruptions_refused += other.corruptions_refused;
        self.lost_dirs_refused += other.lost_dirs_refused;
        self.rejoins += other.rejoins;
        self.rebuilds_finished += other.rebuilds_finished;
        self.unfinished_snapshot_changes_cut += other.unfinished_snapshot_changes_cut;
    }

    /// The paths never reached, by name.
    pub fn unreached(&self) -> Vec<&'static str> {
        [
            ("replica crash", self.replica_crashes),
            ("torn tail cut", self.torn_tails_cut),
            ("torn append with holes", self.torn_appends_with_holes),
            ("un-synced writes lost", self.unsynced_writes_lost),
            ("failed sync stops the replica", self.sync_failures_stopped),
            ("corruption refused", self.corruptions_refused),
            ("lost directory refused without --rejoin", self.lost_dirs_refused),
            ("rejoin", self.rejoins),
            ("rebuild finished", self.rebuilds_finished),
            ("unfinished snapshot changes cut", self.unfinished_snapshot_changes_cut),
        ]
        .into_iter()
        .filter(|(_, count)| *count == 0)
        .map(|(name, _)| name)
        .collect()
    }
}

/// How often each byte limit cut something (a test asserts every one did).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub promises_cut: u64,
    pub frames_split: u64,
    pub snapshot_parts_sent: u64,
    pub snapshots_installed: u64,
    pub transfers_over_part_replaced: u64,
    pub read_rounds_confirmed: u64,
    pub snapshots_as_changes: u64,
    pub snapshots_whole: u64,
    pub restarts_from_changes: u64,
    /// Store files rewritten in steps, and put in place.
    pub store_rewrites: u64,
    /// Restarts that found a rewrite of the store cut short.
    pub restarts_mid_rewrite: u64,
    /// Slots whose ACCEPT went to more acceptors after their first majority was silent.
    pub accepts_widened: u64,
    /// Decisions sent with their value to a replica whose acceptor was not asked.
    pub values_sent_with_decision: u64,
}

impl FlowCounts {
    pub fn add(&mut self, other: &FlowCounts) {
        self.promises_cut += other.promises_cut;
        self.frames_split += other.frames_split;
        self.snapshot_parts_sent += other.snapshot_parts_sent;
        self.snapshots_installed += other.snapshots_installed;
        self.transfers_over_part_replaced += other.transfers_over_part_replaced;
        self.read_rounds_confirmed += other.read_rounds_confirmed;
        self.snapshots_as_changes += other.snapshots_as_changes;
        self.snapshots_whole += other.snapshots_whole;
        self.restarts_from_changes += other.restarts_from_changes;
        self.store_rewrites += other.store_rewrites;
        self.restarts_mid_rewrite += other.restarts_mid_rewrite;
        self.accepts_widened += other.accepts_widened;
        self.values_sent_with_decision += other.values_sent_with_decision;
    }

    pub fn unreached(&self) -> Vec<&'static str> {
        [
            ("promise cut in chunks", self.promises_cut),
            ("envelopes split into several frames", self.frames_split),
            ("snapshot chunk sent", self.snapshot_parts_sent),
            ("snapshot installed from chunks", self.snapshots_installed),
            ("transfer begun over a store a dropped one left part-replaced", self.transfers_over_part_replaced),
            ("read round confirmed by a majority", self.read_rounds_confirmed),
            ("snapshot written as changes", self.snapshots_as_changes),
            ("snapshot written whole", self.snapshots_whole),
            ("restart from a snapshot and its changes", self.restarts_from_changes),
            ("store file rewritten in steps", self.store_rewrites),
            ("restart with a rewrite of the store cut short", self.restarts_mid_rewrite),
            ("ACCEPT widened past a silent majority", self.accepts_widened),
            ("decision sent with its value", self.values_sent_with_decision),
        ]
        .into_iter()
        .filter(|(_, count)| *count == 0)
        .map(|(name, _)| name)
        .collect()
    }
}

#[derive(Debug, Default)]
pub struct SimStats {
    pub flow: FlowCounts,
    pub slots_chosen: usize,
    pub requests_completed: u64,
    /// Reads answered, each checked against the chosen log.
    pub reads_checked: u64,
    pub acceptor_crashes: u64,
    pub leader_partitions: u64,
    pub leader_freezes: u64,
    pub messages_delivered: u64,
    pub disk: DiskFaultCounts,
}

struct SimNode {
    disk: Arc<SimDisk>,
    proposer: Proposer,
    acceptor: Acceptor,
    log: AcceptorLog,
    acceptor_down_until: Option<u64>,
    /// The whole replica is stopped (crashed, failed a sync, or refused to start).
    down: Option<Down>,
    learner: Learner,
    snapshots: SnapshotWriter,
    last_applied: Option<Slot>,
    /// The promise as of the last successful sync: a restart must not go below it.
    durable_promised: Ballot,
    /// Its disk lost or damaged its state, and no rebuild has finished (durably) since.
    without_state: bool,
}

#[derive(Clone, Copy, Debug)]
struct Down {
    /// When it is started again.
    until: u64,
    /// Its state is lost or refused: the operator restarts it with `--rejoin`.
    rejoin: bool,
    /// Its disk lost its state (or was damaged): counts towards the f that may rebuild at once.
    lost_state: bool,
}

struct SimClient {
    id: u64,
    seq: u64,
    outstanding: Option<Command>,
    /// When `outstanding` was first sent.
    invoked_at: u64,
    resend_at: u64,
    target: NodeId,
}

struct World {
    config: SimConfig,
    proposer_config: ProposerConfig,
    learner_config: LearnerConfig,
    now: u64,
    healing: bool,
    net_rng: StdRng,
    fault_rng: StdRng,
    work_rng: StdRng,
    nodes: Vec<SimNode>,
    in_transit: BTreeMap<(u64, u64), Envelope>,
    sequence: u64,
    clients: Vec<SimClient>,
    /// A replica cut off from the others, and until when.
    partitioned: Option<(NodeId, u64)>,
    /// A replica frozen, and until when; client requests sent to it meanwhile.
    frozen: Option<(usize, u64)>,
    held_requests: Vec<Command>,
    checker: Checker,
    stats: SimStats,
    /// Who was sent each slot's ACCEPT under each ballot, to count widenings.
    accept_recipients: BTreeMap<(Ballot, Slot), BTreeSet<NodeId>>,
}

/// The invariants, one function each, fed by what the roles emit.
#[derive(Default)]
struct Checker {
    replicas: usize,
    /// (slot, ballot) -> the value and the acceptors that accepted it.
    votes: BTreeMap<(Slot, Ballot), (SlotValue, BTreeSet<NodeId>)>,
    chosen: BTreeMap<Slot, SlotValue>,
    proposed: HashSet<RequestId>,
    history: History,
}

/// What clients saw, with the tick each operation was invoked and answered,
/// for checking that reads are linearizable.
#[derive(Default)]
struct History {
    /// Writes answered as done, by request: key, invoked, answered.
    writes: BTreeMap<RequestId, (String, u64, u64)>,
    reads: Vec<ReadSeen>,
}

struct ReadSeen {
    request: RequestId,
    key: String,
    invoked: u64,
    answered: u64,
    value: Option<String>,
}

impl History {
    fn record(&mut self, command: &Command, invoked: u64, answered: u64, reply: &Reply) {
        match (&command.op, reply) {
            (Op::Get { key }, Reply::Value(value)) => self.reads.push(ReadSeen {
                request: command.request_id(),
                key: key.clone(),
                invoked,
                answered,
                value: value.clone(),
            }),
            (Op::Put { key, .. } | Op::Delete { key }, Reply::Stored | Reply::Deleted { .. }) => {
                self.writes.insert(command.request_id(), (key.clone(), invoked, answered));
            }
            _ => {}
        }
    }
}

impl Checker {
    /// Paxos Made Simple, P2: once a value is chosen for a slot (a majority
    /// accepted it in one ballot), no other value is ever chosen for it.
    fn check_chosen_once(&mut self, acceptor: NodeId, record: &AcceptorRecord) -> Result<(), String> {
        let AcceptorRecord::Accepted { slot, ballot, value } = record else { return Ok(()) };
        let (voted, voters) = self.votes.entry((*slot, *ballot)).or_insert_with(|| (value.clone(), BTreeSet::new()));
        if voted != value {
            return Err(format!("slot {slot}: ballot {ballot} carried two values"));
        }
        voters.insert(acceptor);
        if voters.len() >= majority(self.replicas) {
            match self.chosen.get(slot) {
                Some(earlier) if earlier != value => {
                    return Err(format!(
                        "slot {slot} chosen two ways: {} and then {} (ballot {ballot})",
                        earlier.describe(),
                        value.describe()
                    ))
                }
                Some(_) => {}
                None => {
                    self.chosen.insert(*slot, value.clone());
                }
            }
        }
        Ok(())
    }

    /// Learners apply only chosen values, only commands that a client
    /// proposed, and strictly in slot order.
    fn check_applied(
        &self,
        node: NodeId,
        last: &mut Option<Slot>,
        slot: Slot,
        value: &SlotValue,
    ) -> Result<(), String> {
        if let Some(previous) = *last {
            if slot <= previous {
                return Err(format!("replica {node} applied slot {slot} after slot {previous}"));
            }
        }
        *last = Some(slot);
        match self.chosen.get(&slot) {
            Some(chosen) if chosen != value => {
                return Err(format!(
                    "replica {node} applied {} at slot {slot}, but {} was chosen",
                    value.describe(),
                    chosen.describe()
                ))
            }
            None => return Err(format!("replica {node} applied slot {slot}, which no majority accepted")),
            _ => {}
        }
        if let SlotValue::Batch(commands) = value {
            if let Some(c) = commands.iter().find(|c| !self.proposed.contains(&c.request_id())) {
                return Err(format!("replica {node} applied command {:?} that no client proposed", c.request_id()));
            }
        }
        Ok(())
    }

    /// Every read returned what the key held after some prefix of the chosen
    /// log that includes every write answered before the read was sent and
    /// no write sent after the read was answered: reads are linearizable.
    fn check_reads_linearizable(&self) -> Result<(), String> {
        // Replay the chosen log: per key, the prefixes at which its value changed.
        let mut store = KvStore::default();
        let mut changes: BTreeMap<String, Vec<(Slot, Option<String>)>> = BTreeMap::new();
        let mut write_slot: BTreeMap<RequestId, Slot> = BTreeMap::new();
        for (expected, (&slot, value)) in (0..).zip(&self.chosen) {
            if slot != expected {
                break;
            }
            let SlotValue::Batch(commands) = value else { continue };
            for command in commands.iter() {
                let key = command.op.key().to_string();
                let before = store.get(&key).map(str::to_string);
                store.apply(command);
                write_slot.entry(command.request_id()).or_insert(slot);
                let after = store.get(&key).map(str::to_string);
                if after != before {
                    changes.entry(key).or_default().push((slot + 1, after));
                }
            }
        }
        for read in &self.history.reads {
            let key_writes = self.history.writes.iter().filter(|(_, (key, _, _))| *key == read.key);
            let mut lowest = 0;
            let mut highest = Slot::MAX;
            for (request, (_, invoked, answered)) in key_writes {
                let Some(&slot) = write_slot.get(request) else {
                    return Err(format!("write {request:?} was answered but is not in the chosen log"));
                };
                if *answered < read.invoked {
                    lowest = lowest.max(slot + 1);
                }
                if *invoked > read.answered {
                    highest = highest.min(slot);
                }
            }
            // The key's value at each prefix from `lowest` to `highest`.
            let history = changes.get(&read.key).map_or(&[][..], Vec::as_slice);
            let at_lowest = history.iter().rev().find(|(prefix, _)| *prefix <= lowest).and_then(|(_, v)| v.clone());
            let possible = std::iter::once(at_lowest)
                .chain(
                    history.iter().filter(|(prefix, _)| *prefix > lowest && *prefix <= highest).map(|(_, v)| v.clone()),
                )
                .collect::<Vec<_>>();
            if !possible.contains(&read.value) {
                return Err(format!(
                    "read {:?} of {} (ticks {} to {}) returned {:?}, but the key held only {possible:?} between \
                     the last write answered before it (prefix {lowest}) and the first sent after it",
                    read.request, read.key, read.invoked, read.answered, read.value
                ));
            }
        }
        Ok(())
    }

    /// Replicas that applied the same prefix of the log hold the same store.
    fn check_same_prefix_same_store(&self, nodes: &[SimNode]) -> Result<(), String> {
        let mut by_prefix: BTreeMap<Slot, (NodeId, &KvStore)> = BTreeMap::new();
        for (index, node) in nodes.iter().enumerate() {
            let id = index as NodeId + 1;
            let Some(held) = node.learner.consistent_store() else { continue };
            match by_prefix.get(&node.learner.next_slot()) {
                Some((other, store)) if *store != held => {
                    return Err(format!(
                        "replicas {other} and {id} applied slots below {} but hold different stores",
                        node.learner.next_slot()
                    ))
                }
                Some(_) => {}
                None => {
                    by_prefix.insert(node.learner.next_slot(), (id, held));
                }
            }
        }
        Ok(())
    }
}

/// Runs one seeded simulation; `Err` names the violated invariant.
pub fn run(seed: u64, config: &SimConfig) -> Result<SimStats, String> {
    let mut world = World::new(seed, config.clone());
    world.run().map_err(|violation| {
        format!(
            "seed {seed}: {violation}\nreplay: PAXOS_SIM_SEED={seed} PAXOS_SIM_REPLICAS={} PAXOS_SIM_PROFILE={} cargo test --release --test simulation replay_seed -- --nocapture",
            config.replicas, config.profile
        )
    })?;
    Ok(world.stats)
}

impl World {
    fn new(seed: u64, config: SimConfig) -> Self {
        let mut root = StdRng::seed_from_u64(seed);
        let cluster: Vec<NodeId> = (1..=config.replicas as NodeId).collect();
        let mut proposer_config = ProposerConfig::for_cluster(cluster.clone());
        proposer_config.window_slots = 8;
        proposer_config.batch_commands_max = 3;
        proposer_config.batch_commands_min = 2;
        proposer_config.batch_bytes_max = config.batch_bytes_max;
        let mut learner_config = LearnerConfig::for_cluster(cluster.clone());
        learner_config.report_applied = true;
        learner_config.snapshot_interval_slots = config.snapshot_interval_slots;
        learner_config.retain_slots = config.snapshot_interval_slots;
        learner_config.catchup_bytes_max = config.catchup_bytes_max;
        let nodes = cluster
            .iter()
            .map(|&id| {
                let disk = Arc::new(SimDisk::default());
                let files = storage::open_paxos(disk.clone(), sim_identity(id), ClusterState::New, false)
                    .expect("a new replica starts on an empty disk");
                let snapshots = SnapshotWriter::new(disk.clone(), sim_identity(id), files.snapshot_chain, &cluster)
                    .with_pace(config.catchup_bytes_max, config.rewrite_pace);
                SimNode {
                    disk,
                    proposer: Proposer::new(
                        id,
                        proposer_config.clone(),
                        Ballot::ZERO,
                        StdRng::seed_from_u64(root.random()),
                    ),
                    acceptor: sim_acceptor(id, files.acceptor_state, config.promise_bytes_max),
                    log: files.acceptor_log,
                    acceptor_down_until: None,
                    down: None,
                    learner: Learner::new(id, learner_config.clone(), Default::default()),
                    snapshots,
                    last_applied: None,
                    durable_promised: Ballot::ZERO,
                    without_state: false,
                }
            })
            .collect();
        let clients = (0..config.clients as u64)
            .map(|i| SimClient { id: 1_000 + i, seq: 0, outstanding: None, invoked_at: 0, resend_at: 0, target: 1 })
            .collect();
        World {
            proposer_config,
            learner_config,
            now: 0,
            healing: false,
            net_rng: StdRng::seed_from_u64(root.random()),
            fault_rng: StdRng::seed_from_u64(root.random()),
            work_rng: StdRng::seed_from_u64(root.random()),
            nodes,
            in_transit: BTreeMap::new(),
            sequence: 0,
            clients,
            partitioned: None,
            frozen: None,
            held_requests: Vec::new(),
            checker: Checker { replicas: config.replicas, ..Default::default() },
            stats: SimStats::default(),
            accept_recipients: BTreeMap::new(),
            config,
        }
    }

    fn run(&mut self) -> Result<(), String> {
        for _ in 0..self.config.fault_ticks {
            self.step()?;
        }
        self.healing = true;
        self.partitioned = None;
        self.thaw()?;
        self.nodes.iter().for_each(|node| node.disk.heal());
        self.restart_stopped()?;
        for index in 0..self.nodes.len() {
            if self.nodes[index].acceptor_down_until.is_some() {
                self.restart_acceptor(index)?;
            }
        }
        for _ in 0..self.config.heal_ticks {
            self.step()?;
            if self.converged() {
                self.stats.slots_chosen = self.checker.chosen.len();
                self.stats.reads_checked = self.checker.history.reads.len() as u64;
                return self.checker.check_reads_linearizable();
            }
        }
        let pending: Vec<_> =
            self.clients.iter().filter_map(|c| c.outstanding.as_ref().map(|o| o.request_id())).collect();
        let applied: Vec<_> = self.nodes.iter().map(|n| n.learner.next_slot()).collect();
        let roles: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let status = n.proposer.status();
                format!(
                    "{}{:?} ballot {} leader {:?}, promised {}{}",
                    if n.down.is_some() { "DOWN " } else { "" },
                    status.mode,
                    status.ballot,
                    status.leader,
                    n.acceptor.state().promised,
                    if n.acceptor.is_rebuilding() { " (rebuilding)" } else { "" }
                )
            })
            .collect();
        Err(format!(
            "no progress after healing for {} ticks: requests still pending {pending:?}, applied prefixes {applied:?}, replicas {roles:?}",
            self.config.heal_ticks
        ))
    }

    /// Every request answered and every replica applied the same prefix.
    fn converged(&self) -> bool {
        let first = self.nodes[0].learner.next_slot();
        self.clients.iter().all(|c| c.outstanding.is_none())
            && self.nodes.iter().all(|n| n.learner.next_slot() == first)
            && self.clients.iter().all(|c| c.seq >= 3)
    }

    fn step(&mut self) -> Result<(), String> {
        self.now += 1;
        if self.healing {
            self.restart_stopped()?;
        } else {
            self.inject_faults()?;
        }
        while let Some(entry) = self.in_transit.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let envelope = entry.remove();
            self.deliver(envelope)?;
        }
        for index in 0..self.nodes.len() {
            if self.nodes[index].down.is_some() || self.frozen.is_some_and(|(frozen, _)| frozen == index) {
                continue;
            }
            let mut out = ProposerOutbox::default();
            self.nodes[index].proposer.on_tick(&mut out);
            self.nodes[index].proposer.flush(&mut out);
            self.after_proposer(index, out)?;
            if self.nodes[index].down.is_some() {
                continue;
            }
            let mut out = LearnerOutbox::default();
            self.nodes[index].learner.on_tick(&mut out);
            self.after_learner(index, out)?;
            if self.nodes[index].down.is_some() || self.nodes[index].acceptor_down_until.is_some() {
                continue;
            }
            let mut out = AcceptorOutbox::default();
            let promised_before = self.nodes[index].acceptor.state().promised;
            self.nodes[index].acceptor.on_tick(&mut out);
            self.after_acceptor(index, promised_before, out)?;
        }
        self.drive_clients()?;
        self.checker.check_same_prefix_same_store(&self.nodes)
    }

    /// While healing: a replica that stopped is started again at once (rebuilt if refused).
    fn restart_stopped(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            if let Some(down) = self.nodes[index].down {
                self.restart_replica(index, down.rejoin)?;
                if self.nodes[index].down.is_some() {
                    self.restart_replica(index, true)?;
                }
            }
        }
        Ok(())
    }

    fn inject_faults(&mut self) -> Result<(), String> {
        match self.frozen {
            Some((_, until)) if self.now >= until => self.thaw()?,
            Some(_) => {}
            None => {
                if self.fault_rng.random_range(0..10_000) < self.config.leader_freeze_per_10k_ticks {
                    if let Some(index) = self.nodes.iter().position(|n| n.down.is_none() && n.proposer.is_leading()) {
                        let length = self.fault_rng.random_range(1..=2 * self.config.downtime_ticks_max);
                        self.frozen = Some((index, self.now + length));
                        self.stats.leader_freezes += 1;
                    }
                }
            }
        }
        match self.partitioned {
            Some((_, until)) if self.now >= until => self.partitioned = None,
            Some(_) => {}
            None => {
                if self.fault_rng.random_range(0..10_000) < self.config.leader_partition_per_10k_ticks {
                    if let Some(index) = self.nodes.iter().position(|n| n.down.is_none() && n.proposer.is_leading()) {
                        let length = self.fault_rng.random_range(1..=2 * self.config.downtime_ticks_max);
                        self.partitioned = Some((index as NodeId + 1, self.now + length));
                        self.stats.leader_partitions += 1;
                    }
                }
            }
        }
        for index in 0..self.nodes.len() {
            if let Some(down) = self.nodes[index].down {
                if self.now >= down.until {
                    self.restart_replica(index, down.rejoin)?;
                }
                continue;
            }
            if self.fault_rng.random_range(0..10_000) < self.config.replica_crash_per_10k_ticks {
                self.crash_replica(index);
                continue;
            }
            if self.fault_rng.random_range(0..10_000) < self.config.sync_failure_per_10k_ticks {
                self.nodes[index].disk.fail_syncs();
            }
            match self.nodes[index].acceptor_down_until {
                Some(until) if self.now >= until => self.restart_acceptor(index)?,
                Some(_) => {}
                None => {
                    if self.fault_rng.random_range(0..10_000) < self.config.crash_per_10k_ticks {
                        let downtime = self.fault_rng.random_range(1..=self.config.downtime_ticks_max);
                        self.nodes[index].acceptor_down_until = Some(self.now + downtime);
                        self.stats.acceptor_crashes += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// The frozen replica runs again: the client requests held for it arrive
    /// (the messages held for it are already due).
    fn thaw(&mut self) -> Result<(), String> {
        let Some((index, _)) = self.frozen.take() else { return Ok(()) };
        for command in std::mem::take(&mut self.held_requests) {
            if self.nodes[index].down.is_some() {
                break;
            }
            let mut out = ProposerOutbox::default();
            self.nodes[index].proposer.on_client_command(command, &mut out);
            self.after_proposer(index, out)?;
        }
        Ok(())
    }

    fn restart_acceptor(&mut self, index: usize) -> Result<(), String> {
        let node = &mut self.nodes[index];
        node.acceptor_down_until = None;
        if node.down.is_some() {
            return Ok(());
        }
        if self.config.amnesia {
            node.log.rewrite(std::iter::empty()).map_err(|e| e.to_string())?;
            node.durable_promised = Ballot::ZERO;
        }
        let id = index as NodeId + 1;
        let (log, state, _) =
            AcceptorLog::open_acceptor(node.disk.clone(), sim_identity(id)).map_err(|e| e.to_string())?;
        node.log = log;
        node.acceptor = sim_acceptor(id, state, self.config.promise_bytes_max);
        Ok(())
    }

    /// Replicas whose disk lost or damaged their state and are not yet rebuilt.
    fn replicas_without_state(&self) -> usize {
        self.nodes.iter().filter(|n| n.without_state).count()
    }

    /// The whole replica stops: un-synced writes are lost, the final append
    /// may be torn, and sometimes the disk is damaged while it is down.
    fn crash_replica(&mut self, index: usize) {
        self.stats.disk.replica_crashes += 1;
        let downtime = self.fault_rng.random_range(1..=self.config.downtime_ticks_max);
        let node = &self.nodes[index];
        let mut torn = None;
        if self.fault_rng.random_range(0..2) == 0 {
            // Caught in the middle of an append: some sectors of it reached the disk, in no order.
            let partial: Vec<u8> = (0..self.fault_rng.random_range(1..64)).map(|_| self.fault_rng.random()).collect();
            let start = node.log.bytes() as usize;
            node.disk
                .append_in_place(storage::ACCEPTOR_LOG, start as u64, &partial)
                .expect("the simulated disk appends");
            let kept: u64 = self.fault_rng.random();
            let sectors = start / SIM_SECTOR_BYTES..=(start + partial.len() - 1) / SIM_SECTOR_BYTES;
            let survives = |sector: usize| kept >> (sector % 64) & 1 == 1;
            if sectors.clone().any(|lost| !survives(lost) && sectors.clone().any(|k| k > lost && survives(k))) {
                self.stats.disk.torn_appends_with_holes += 1;
            }
            torn = Some((storage::ACCEPTOR_LOG.to_string(), Torn::Sectors(kept)));
        }
        if node.disk.unsynced_bytes(storage::ACCEPTOR_LOG) > 0 && torn.is_none() {
            self.stats.disk.unsynced_writes_lost += 1;
        }
        node.disk.crash(torn);
        let f = (self.nodes.len() - 1) / 2;
        let mut lost_state = false;
        if self.fault_rng.random_range(0..100) < self.config.disk_damage_percent && self.replicas_without_state() < f {
            lost_state = true;
            let disk = &self.nodes[index].disk;
            match self.fault_rng.random_range(0..4) {
                0 => disk.wipe(),
                3 => {
                    // The first half: the sets of changes after it are intact, so this is never a torn end.
                    let len = disk.len(storage::SNAPSHOT_CHANGES);
                    if len == 0 {
                        disk.wipe();
                    } else {
                        let offset = self.fault_rng.random_range(0..len.div_ceil(2));
                        disk.flip_bit(storage::SNAPSHOT_CHANGES, offset, self.fault_rng.random());
                    }
                }
                1 => {
                    let len = disk.len(storage::ACCEPTOR_LOG);
                    disk.flip_bit(
                        storage::ACCEPTOR_LOG,
                        self.fault_rng.random_range(0..len / 2),
                        self.fault_rng.random(),
                    );
                }
                _ => {
                    let len = disk.len(storage::SNAPSHOT);
                    if len == 0 {
                        disk.wipe();
                    } else {
                        disk.flip_bit(storage::SNAPSHOT, self.fault_rng.random_range(0..len), self.fault_rng.random());
                    }
                }
            }
        }
        self.nodes[index].without_state |= lost_state;
        self.nodes[index].down = Some(Down { until: self.now + downtime, rejoin: false, lost_state });
    }

    /// A failed write or sync: the replica stops, as the server does.
    fn fail_stop(&mut self, index: usize) {
        self.fail_stop_tearing(index, None);
    }

    /// [`World::fail_stop`], keeping part of what `torn_file` had not synced:
    /// the crash came in the middle of writing it.
    fn fail_stop_tearing(&mut self, index: usize, torn_file: Option<&str>) {
        self.stats.disk.sync_failures_stopped += 1;
        let node = &mut self.nodes[index];
        if node.disk.unsynced_bytes(storage::ACCEPTOR_LOG) > 0 {
            self.stats.disk.unsynced_writes_lost += 1;
        }
        let torn = torn_file.and_then(|name| {
            let unsynced = node.disk.unsynced_bytes(name);
            (unsynced > 0).then(|| (name.to_string(), Torn::Tail(self.fault_rng.random_range(1..=unsynced))))
        });
        node.disk.crash(torn);
        let downtime = self.fault_rng.random_range(1..=self.config.downtime_ticks_max);
        node.down = Some(Down { until: self.now + downtime, rejoin: false, lost_state: false });
    }

    /// Starts a stopped replica from its disk, as `server` would (with
    /// `--rejoin` when the operator rebuilds it). A refusal keeps it down.
    fn restart_replica(&mut self, index: usize, rejoin: bool) -> Result<(), String> {
        let id = index as NodeId + 1;
        let node = &mut self.nodes[index];
        let down = node.down.expect("restarting a replica that runs");
        match storage::open_paxos(node.disk.clone(), sim_identity(id), ClusterState::Existing, rejoin) {
            Ok(files) => {
                if files.replayed.torn_bytes_cut > 0 {
                    self.stats.disk.torn_tails_cut += 1;
                }
                if rejoin {
                    self.stats.disk.rejoins += 1;
                } else if files.acceptor_state.promised < node.durable_promised && !files.acceptor_state.rebuilding {
                    return Err(format!(
                        "replica {id} came back promising {} after syncing a promise of {}",
                        files.acceptor_state.promised, node.durable_promised
                    ));
                }
                let rebuilding = files.acceptor_state.rebuilding;
                node.durable_promised = files.acceptor_state.promised;
                node.proposer = Proposer::new(
                    id,
                    self.proposer_config.clone(),
                    files.last_ballot,
                    StdRng::seed_from_u64(self.fault_rng.random()),
                );
                if rebuilding {
                    node.proposer.set_may_lead(false, Ballot::ZERO);
                }
                node.proposer.on_learner_progress(files.snapshot.next_slot);
                node.acceptor = sim_acceptor(id, files.acceptor_state, self.config.promise_bytes_max);
                node.log = files.acceptor_log;
                if files.snapshot_chain.tip_slot > files.snapshot_chain.base_slot {
                    self.stats.flow.restarts_from_changes += 1;
                }
                if files.snapshot_chain.torn_bytes_cut > 0 {
                    self.stats.disk.unfinished_snapshot_changes_cut += 1;
                }
                if files.snapshot_chain.unfinished_rewrite_removed || files.snapshot_chain.next_log_bytes.is_some() {
                    self.stats.flow.restarts_mid_rewrite += 1;
                }
                let cluster = &self.learner_config.cluster;
                node.snapshots =
                    SnapshotWriter::new(node.disk.clone(), sim_identity(id), files.snapshot_chain, cluster)
                        .with_pace(self.config.catchup_bytes_max, self.config.rewrite_pace);
                node.learner = Learner::new(id, self.learner_config.clone(), files.snapshot);
                node.last_applied = None;
                node.acceptor_down_until = None;
                node.down = None;
            }
            Err(error) => {
                match error.downcast_ref::<Damage>() {
                    Some(Damage::NoIdentity { .. }) => self.stats.disk.lost_dirs_refused += 1,
                    Some(_) => self.stats.disk.corruptions_refused += 1,
                    None => return Err(format!("replica {id} failed to start: {error:#}")),
                }
                if rejoin {
                    return Err(format!("replica {id} refused to rejoin: {error:#}"));
                }
                if !down.lost_state {
                    return Err(format!("replica {id} refused its own undamaged disk: {error:#}"));
                }
                let until = self.now + self.fault_rng.random_range(1..=self.config.downtime_ticks_max);
                node.down = Some(Down { until, rejoin: true, ..down });
            }
        }
        Ok(())
    }

    /// Sends one role's outbox: to each peer in frames cut as the real links
    /// cut them, or envelope by envelope.
    fn send_all(&mut self, envelopes: Vec<Envelope>) {
        let mut asked_now: BTreeMap<(Ballot, Slot), BTreeSet<NodeId>> = BTreeMap::new();
        for envelope in &envelopes {
            match &envelope.msg {
                Message::Promise(promise) if promise.more_from.is_some() => self.stats.flow.promises_cut += 1,
                Message::CatchupReply(reply) if reply.snapshot.is_some() => self.stats.flow.snapshot_parts_sent += 1,
                Message::Accept(accept) => {
                    asked_now.entry((accept.ballot, accept.slot)).or_default().insert(envelope.to);
                }
                Message::Decide(_) if envelope.to != envelope.from => self.stats.flow.values_sent_with_decision += 1,
                _ => {}
            }
        }
        for (key, asked) in asked_now {
            match self.accept_recipients.get_mut(&key) {
                Some(before) => {
                    if !asked.is_subset(before) {
                        self.stats.flow.accepts_widened += 1;
                        before.extend(asked);
                    }
                }
                None => {
                    self.accept_recipients.insert(key, asked);
                }
            }
        }
        let Some(frame_bytes) = self.config.frame_bytes else {
            envelopes.into_iter().for_each(|envelope| self.send(vec![envelope]));
            return;
        };
        let mut by_peer: BTreeMap<NodeId, VecDeque<Envelope>> = BTreeMap::new();
        for envelope in envelopes {
            by_peer.entry(envelope.to).or_default().push_back(envelope);
        }
        for (_, mut queue) in by_peer {
            let mut frames = 0;
            while !queue.is_empty() {
                self.send(crate::transport::next_frame(&mut queue, frame_bytes));
                frames += 1;
            }
            if frames > 1 {
                self.stats.flow.frames_split += 1;
            }
        }
    }

    /// Messages between roles of one replica travel over channels in the real
    /// runtime and are never lost; between replicas anything can happen, to a
    /// frame as a whole.
    fn send(&mut self, frame: Vec<Envelope>) {
        let local = frame.iter().all(|envelope| envelope.from == envelope.to);
        if !local && !self.healing && self.net_rng.random_range(0..100) < self.config.loss_percent {
            return;
        }
        let copies =
            if !self.healing && self.net_rng.random_range(0..100) < self.config.duplicate_percent { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.net_rng.random_range(1..=self.config.delay_ticks_max);
            for envelope in &frame {
                self.sequence += 1;
                self.in_transit.insert((self.now + delay, self.sequence), envelope.clone());
            }
        }
    }

    fn deliver(&mut self, envelope: Envelope) -> Result<(), String> {
        if let Some((frozen, until)) = self.frozen {
            if envelope.to as usize == frozen + 1 {
                self.sequence += 1;
                self.in_transit.insert((until, self.sequence), envelope);
                return Ok(());
            }
        }
        if let Some((cut_off, _)) = self.partitioned {
            if envelope.from != envelope.to && (envelope.from == cut_off || envelope.to == cut_off) {
                return Ok(());
            }
        }
        self.stats.messages_delivered += 1;
        let index = (envelope.to - 1) as usize;
        if self.nodes[index].down.is_some() {
            return Ok(());
        }
        match envelope.msg.role() {
            Role::Acceptor => {
                if self.nodes[index].acceptor_down_until.is_some() {
                    return Ok(());
                }
                let mut out = AcceptorOutbox::default();
                let promised_before = self.nodes[index].acceptor.state().promised;
                self.nodes[index].acceptor.on_message(envelope.from, envelope.msg, &mut out);
                self.after_acceptor(index, promised_before, out)?;
            }
            Role::Proposer => {
                let mut out = ProposerOutbox::default();
                self.nodes[index].proposer.on_message(envelope.from, envelope.msg, &mut out);
                self.nodes[index].proposer.flush(&mut out);
                self.after_proposer(index, out)?;
            }
            Role::Learner => {
                let mut out = LearnerOutbox::default();
                let before = self.nodes[index].learner.counts();
                self.nodes[index].learner.on_message(envelope.from, envelope.msg, &mut out);
                let after = self.nodes[index].learner.counts();
                self.stats.flow.snapshots_installed += after.snapshots_installed - before.snapshots_installed;
                self.stats.flow.transfers_over_part_replaced +=
                    after.transfers_over_part_replaced - before.transfers_over_part_replaced;
                self.after_learner(index, out)?;
            }
        }
        Ok(())
    }

    fn after_acceptor(&mut self, index: usize, promised_before: Ballot, out: AcceptorOutbox) -> Result<(), String> {
        let node = &mut self.nodes[index];
        if node.log.append(&out.records).is_err() {
            self.fail_stop(index);
            return Ok(());
        }
        node.durable_promised = node.acceptor.state().promised;
        if out.records.contains(&AcceptorRecord::RebuildFinished) {
            let ballot_seen = node.acceptor.ballot_seen();
            node.proposer.set_may_lead(true, ballot_seen);
            self.stats.disk.rebuilds_finished += 1;
            node.without_state = false;
        }
        let node = &self.nodes[index];
        if node.acceptor.state().promised < promised_before {
            return Err(format!("acceptor {} lowered its promise from {promised_before}", index + 1));
        }
        for record in &out.records {
            self.checker.check_chosen_once(index as NodeId + 1, record)?;
        }
        self.send_all(out.messages);
        Ok(())
    }

    fn after_proposer(&mut self, index: usize, out: ProposerOutbox) -> Result<(), String> {
        if let Some(ballot) = out.persist_ballot {
            let node = &self.nodes[index];
            if storage::save_ballot(&*node.disk, sim_identity(index as NodeId + 1), ballot).is_err() {
                self.fail_stop(index);
                return Ok(());
            }
        }
        self.send_all(out.messages);
        self.deliver_replies(out.replies);
        for batch in out.reads {
            self.stats.flow.read_rounds_confirmed += 1;
            let mut learned = LearnerOutbox::default();
            self.nodes[index].learner.on_reads(batch, &mut learned);
            self.after_learner(index, learned)?;
            if self.nodes[index].down.is_some() {
                break;
            }
        }
        Ok(())
    }

    fn after_learner(&mut self, index: usize, out: LearnerOutbox) -> Result<(), String> {
        let id = index as NodeId + 1;
        if let Some(violation) = &out.violation {
            return Err(format!("replica {id}: {violation}"));
        }
        if out.snapshot.is_some() {
            self.nodes[index].last_applied = None;
        }
        for (slot, value) in &out.applied {
            let mut last = self.nodes[index].last_applied;
            self.checker.check_applied(id, &mut last, *slot, value)?;
            self.nodes[index].last_applied = last;
        }
        let next_slot = self.nodes[index].learner.next_slot();
        self.nodes[index].proposer.on_learner_progress(next_slot);
        if let Some(job) = &out.snapshot {
            match self.nodes[index].snapshots.write(job) {
                Ok(SnapshotWritten::Changes { .. }) => self.stats.flow.snapshots_as_changes += 1,
                Ok(SnapshotWritten::Whole { .. }) => self.stats.flow.snapshots_whole += 1,
                Err(_) => {
                    let disk = &self.nodes[index].disk;
                    let torn = [storage::SNAPSHOT_CHANGES, storage::SNAPSHOT_CHANGES_NEXT]
                        .into_iter()
                        .find(|name| disk.unsynced_bytes(name) > 0);
                    self.fail_stop_tearing(index, torn);
                    return Ok(());
                }
            }
            // The server spaces the steps out in time; here they run at once.
            while self.nodes[index].snapshots.rewrite_pending() {
                match self.nodes[index].snapshots.rewrite_step() {
                    Ok(Some(_)) => self.stats.flow.store_rewrites += 1,
                    Ok(None) => {}
                    Err(_) => {
                        self.fail_stop_tearing(index, Some(storage::SNAPSHOT_NEXT));
                        return Ok(());
                    }
                }
            }
            if self.nodes[index].acceptor_down_until.is_none() {
                let mut truncation = AcceptorOutbox::default();
                let promised_before = self.nodes[index].acceptor.state().promised;
                self.nodes[index].acceptor.truncate(job.snapshot.next_slot, &mut truncation);
                self.after_acceptor(index, promised_before, truncation)?;
                if self.nodes[index].down.is_some() {
                    return Ok(());
                }
            }
        }
        if self.nodes[index].acceptor_down_until.is_none() {
            let mut progress = AcceptorOutbox::default();
            let promised_before = self.nodes[index].acceptor.state().promised;
            self.nodes[index].acceptor.on_learner_progress(next_slot, &mut progress);
            self.after_acceptor(index, promised_before, progress)?;
            if self.nodes[index].down.is_some() {
                return Ok(());
            }
        }
        self.send_all(out.messages);
        self.deliver_replies(out.replies);
        Ok(())
    }

    fn deliver_replies(&mut self, replies: Vec<(RequestId, Reply)>) {
        for ((client_id, seq), reply) in replies {
            let Some(client) = self.clients.iter_mut().find(|c| c.id == client_id) else { continue };
            if client.outstanding.as_ref().is_none_or(|c| c.seq != seq) {
                continue;
            }
            match reply {
                Reply::Rejected(RequestError::NotLeader { leader } | RequestError::Abandoned { leader }) => {
                    if let Some(leader) = leader {
                        client.target = leader;
                    }
                    client.resend_at = self.now + 5;
                }
                Reply::Rejected(RequestError::NoQuorum { .. } | RequestError::Overloaded) => {
                    client.resend_at = self.now + 20;
                }
                reply => {
                    let command = client.outstanding.take().expect("matched above");
                    self.checker.history.record(&command, client.invoked_at, self.now, &reply);
                    self.stats.requests_completed += 1;
                }
            }
        }
    }

    fn drive_clients(&mut self) -> Result<(), String> {
        let replicas = self.nodes.len() as NodeId;
        for client_index in 0..self.clients.len() {
            let client = &mut self.clients[client_index];
            let command = match &client.outstanding {
                Some(command) if self.now >= client.resend_at => {
                    if self.work_rng.random_range(0..4) == 0 {
                        client.target = self.work_rng.random_range(1..=replicas);
                    }
                    command.clone()
                }
                Some(_) => continue,
                None if self.healing && client.seq >= 3 => continue,
                None => {
                    if self.work_rng.random_range(0..10) != 0 {
                        continue;
                    }
                    client.seq += 1;
                    let key = format!("k{}", self.work_rng.random_range(0..self.config.keys));
                    let op = match self.work_rng.random_range(0..3) {
                        0 => Op::Put { key, value: format!("{}-{}", client.id, client.seq) },
                        1 => Op::Get { key },
                        _ => Op::Delete { key },
                    };
                    let command = Command { client_id: client.id, seq: client.seq, op };
                    self.checker.proposed.insert(command.request_id());
                    client.outstanding = Some(command.clone());
                    client.invoked_at = self.now;
                    command
                }
            };
            let client = &mut self.clients[client_index];
            client.resend_at = self.now + 60;
            let index = (client.target - 1) as usize;
            if self.nodes[index].down.is_some() {
                continue;
            }
            if self.frozen.is_some_and(|(frozen, _)| frozen == index) {
                self.held_requests.push(command);
                continue;
            }
            let mut out = ProposerOutbox::default();
            self.nodes[index].proposer.on_client_command(command, &mut out);
            self.after_proposer(index, out)?;
        }
        Ok(())
    }
}

fn sim_identity(replica_id: NodeId) -> Identity {
    Identity { cluster_id: 0x51_u64, replica_id }
}

fn sim_acceptor(id: NodeId, state: crate::paxos::acceptor::AcceptorState, promise_bytes_max: usize) -> Acceptor {
    Acceptor::new(id, state, promise_bytes_max).with_rebuild_quiet_ticks(200)
}
