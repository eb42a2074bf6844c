//! Deterministic simulation of a cluster of sans-IO Paxos replicas. One seed decides
//! the whole run: message loss, duplication, delay and reordering, acceptor
//! crashes and restarts, and the client workload. After every step the
//! invariants below are checked; a violation names the seed that replays it.

use crate::kv::{Command, KvStore, Op, Reply, RequestError, RequestId};
use crate::paxos::acceptor::{Acceptor, AcceptorOutbox, AcceptorRecord};
use crate::paxos::learner::{Learner, LearnerConfig, LearnerOutbox};
use crate::paxos::proposer::{Proposer, ProposerConfig, ProposerOutbox};
use crate::paxos::quorum::majority;
use crate::paxos::{Ballot, Envelope, NodeId, Role, Slot, SlotValue};
use crate::storage::{AcceptorStorage, MemoryStorage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashSet};

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
    pub downtime_ticks_max: u64,
    /// Restart acceptors with empty state (unsafe; shows why acceptors must remember).
    pub amnesia: bool,
    pub snapshot_interval_slots: u64,
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
            downtime_ticks_max: 150,
            amnesia: false,
            snapshot_interval_slots: 25,
        }
    }
}

#[derive(Debug, Default)]
pub struct SimStats {
    pub slots_chosen: usize,
    pub requests_completed: u64,
    pub acceptor_crashes: u64,
    pub messages_delivered: u64,
}

struct SimNode {
    proposer: Proposer,
    acceptor: Acceptor,
    storage: MemoryStorage,
    acceptor_down_until: Option<u64>,
    learner: Learner,
    last_applied: Option<Slot>,
}

struct SimClient {
    id: u64,
    seq: u64,
    outstanding: Option<Command>,
    resend_at: u64,
    target: NodeId,
}

struct World {
    config: SimConfig,
    now: u64,
    healing: bool,
    net_rng: StdRng,
    fault_rng: StdRng,
    work_rng: StdRng,
    nodes: Vec<SimNode>,
    in_transit: BTreeMap<(u64, u64), Envelope>,
    sequence: u64,
    clients: Vec<SimClient>,
    checker: Checker,
    stats: SimStats,
}

/// The invariants, one function each, fed by what the roles emit.
#[derive(Default)]
struct Checker {
    replicas: usize,
    /// (slot, ballot) -> the value and the acceptors that accepted it.
    votes: BTreeMap<(Slot, Ballot), (SlotValue, BTreeSet<NodeId>)>,
    chosen: BTreeMap<Slot, SlotValue>,
    proposed: HashSet<RequestId>,
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

    /// Replicas that applied the same prefix of the log hold the same store.
    fn check_same_prefix_same_store(&self, nodes: &[SimNode]) -> Result<(), String> {
        let mut by_prefix: BTreeMap<Slot, (NodeId, &KvStore)> = BTreeMap::new();
        for (index, node) in nodes.iter().enumerate() {
            let id = index as NodeId + 1;
            match by_prefix.get(&node.learner.next_slot()) {
                Some((other, store)) if *store != node.learner.store() => {
                    return Err(format!(
                        "replicas {other} and {id} applied slots below {} but hold different stores",
                        node.learner.next_slot()
                    ))
                }
                Some(_) => {}
                None => {
                    by_prefix.insert(node.learner.next_slot(), (id, node.learner.store()));
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
            "seed {seed}: {violation}\nreplay: PAXOS_SIM_SEED={seed} PAXOS_SIM_REPLICAS={} PAXOS_SIM_AMNESIA={} cargo test --release --test simulation replay_seed -- --nocapture",
            config.replicas, config.amnesia
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
        let mut learner_config = LearnerConfig::for_cluster(cluster.clone());
        learner_config.report_applied = true;
        learner_config.snapshot_interval_slots = config.snapshot_interval_slots;
        learner_config.retain_slots = config.snapshot_interval_slots;
        let nodes = cluster
            .iter()
            .map(|&id| SimNode {
                proposer: Proposer::new(
                    id,
                    proposer_config.clone(),
                    Ballot::ZERO,
                    StdRng::seed_from_u64(root.random()),
                ),
                acceptor: Acceptor::new(id, Default::default(), 2_000),
                storage: MemoryStorage::default(),
                acceptor_down_until: None,
                learner: Learner::new(id, learner_config.clone(), Default::default()),
                last_applied: None,
            })
            .collect();
        let clients = (0..config.clients as u64)
            .map(|i| SimClient { id: 1_000 + i, seq: 0, outstanding: None, resend_at: 0, target: 1 })
            .collect();
        World {
            now: 0,
            healing: false,
            net_rng: StdRng::seed_from_u64(root.random()),
            fault_rng: StdRng::seed_from_u64(root.random()),
            work_rng: StdRng::seed_from_u64(root.random()),
            nodes,
            in_transit: BTreeMap::new(),
            sequence: 0,
            clients,
            checker: Checker { replicas: config.replicas, ..Default::default() },
            stats: SimStats::default(),
            config,
        }
    }

    fn run(&mut self) -> Result<(), String> {
        for _ in 0..self.config.fault_ticks {
            self.step()?;
        }
        self.healing = true;
        for index in 0..self.nodes.len() {
            if self.nodes[index].acceptor_down_until.is_some() {
                self.restart_acceptor(index)?;
            }
        }
        for _ in 0..self.config.heal_ticks {
            self.step()?;
            if self.converged() {
                self.stats.slots_chosen = self.checker.chosen.len();
                return Ok(());
            }
        }
        let pending: Vec<_> =
            self.clients.iter().filter_map(|c| c.outstanding.as_ref().map(|o| o.request_id())).collect();
        let applied: Vec<_> = self.nodes.iter().map(|n| n.learner.next_slot()).collect();
        Err(format!(
            "no progress after healing for {} ticks: requests still pending {pending:?}, applied prefixes {applied:?}",
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
        if !self.healing {
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
            let mut out = ProposerOutbox::default();
            self.nodes[index].proposer.on_tick(&mut out);
            self.nodes[index].proposer.flush(&mut out);
            self.after_proposer(out);
            let mut out = LearnerOutbox::default();
            self.nodes[index].learner.on_tick(&mut out);
            self.after_learner(index, out)?;
        }
        self.drive_clients();
        self.checker.check_same_prefix_same_store(&self.nodes)
    }

    fn inject_faults(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
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

    fn restart_acceptor(&mut self, index: usize) -> Result<(), String> {
        let node = &mut self.nodes[index];
        node.acceptor_down_until = None;
        if self.config.amnesia {
            node.storage.wipe().map_err(|e| e.to_string())?;
        }
        let state = node.storage.load().map_err(|e| e.to_string())?;
        node.acceptor = Acceptor::new(index as NodeId + 1, state, 2_000);
        Ok(())
    }

    /// Messages between roles of one replica travel over channels in the real
    /// runtime and are never lost; between replicas anything can happen.
    fn send(&mut self, envelope: Envelope) {
        let local = envelope.from == envelope.to;
        if !local && !self.healing && self.net_rng.random_range(0..100) < self.config.loss_percent {
            return;
        }
        let copies =
            if !self.healing && self.net_rng.random_range(0..100) < self.config.duplicate_percent { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.net_rng.random_range(1..=self.config.delay_ticks_max);
            self.sequence += 1;
            self.in_transit.insert((self.now + delay, self.sequence), envelope.clone());
        }
    }

    fn deliver(&mut self, envelope: Envelope) -> Result<(), String> {
        self.stats.messages_delivered += 1;
        let index = (envelope.to - 1) as usize;
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
                self.after_proposer(out);
            }
            Role::Learner => {
                let mut out = LearnerOutbox::default();
                self.nodes[index].learner.on_message(envelope.from, envelope.msg, &mut out);
                self.after_learner(index, out)?;
            }
        }
        Ok(())
    }

    fn after_acceptor(&mut self, index: usize, promised_before: Ballot, out: AcceptorOutbox) -> Result<(), String> {
        let node = &mut self.nodes[index];
        node.storage.append(&out.records).map_err(|e| e.to_string())?;
        if node.acceptor.state().promised < promised_before {
            return Err(format!("acceptor {} lowered its promise from {promised_before}", index + 1));
        }
        for record in &out.records {
            self.checker.check_chosen_once(index as NodeId + 1, record)?;
        }
        for envelope in out.messages {
            self.send(envelope);
        }
        Ok(())
    }

    fn after_proposer(&mut self, out: ProposerOutbox) {
        for envelope in out.messages {
            self.send(envelope);
        }
        self.deliver_replies(out.replies);
    }

    fn after_learner(&mut self, index: usize, out: LearnerOutbox) -> Result<(), String> {
        let id = index as NodeId + 1;
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
        if let Some(snapshot) = &out.snapshot {
            if self.nodes[index].acceptor_down_until.is_none() {
                let mut truncation = AcceptorOutbox::default();
                self.nodes[index].acceptor.truncate(snapshot.next_slot, &mut truncation);
                self.nodes[index].storage.append(&truncation.records).map_err(|e| e.to_string())?;
            }
        }
        for envelope in out.messages {
            self.send(envelope);
        }
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
                _ => {
                    client.outstanding = None;
                    self.stats.requests_completed += 1;
                }
            }
        }
    }

    fn drive_clients(&mut self) {
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
                    let key = format!("k{}", self.work_rng.random_range(0..5));
                    let op = match self.work_rng.random_range(0..3) {
                        0 => Op::Put { key, value: format!("{}-{}", client.id, client.seq) },
                        1 => Op::Get { key },
                        _ => Op::Delete { key },
                    };
                    let command = Command { client_id: client.id, seq: client.seq, op };
                    self.checker.proposed.insert(command.request_id());
                    client.outstanding = Some(command.clone());
                    command
                }
            };
            let client = &mut self.clients[client_index];
            client.resend_at = self.now + 60;
            let index = (client.target - 1) as usize;
            let mut out = ProposerOutbox::default();
            self.nodes[index].proposer.on_client_command(command, &mut out);
            self.after_proposer(out);
        }
    }
}
