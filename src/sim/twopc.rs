//! Deterministic simulation of two-phase commit: coordinators and
//! participants on every replica, with message loss, duplication, delay and
//! reordering, participant crash-restarts and coordinator crash-restarts. It
//! checks atomicity after every step, then heals everything and requires that
//! no participant stays blocked and that all replicas hold the same store.

use crate::kv::{Command, Op};
use crate::paxos::NodeId;
use crate::twopc::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorOutbox, CoordinatorRecord, CoordinatorState,
};
use crate::twopc::participant::{Participant, ParticipantOutbox, ParticipantRecord, ParticipantState};
use crate::twopc::{TxEnvelope, TxnId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
pub struct TwoPcSimConfig {
    pub replicas: usize,
    pub fault_ticks: u64,
    pub heal_ticks: u64,
    pub loss_percent: u32,
    pub duplicate_percent: u32,
    pub delay_ticks_max: u64,
    /// Chances per tick, in parts per 10,000, of a participant / coordinator crash.
    pub participant_crash_per_10k_ticks: u32,
    pub coordinator_crash_per_10k_ticks: u32,
    pub downtime_ticks_max: u64,
    /// Chance per tick, in percent, that a new write starts somewhere.
    pub write_percent: u32,
}

impl TwoPcSimConfig {
    pub fn new(replicas: usize) -> Self {
        TwoPcSimConfig {
            replicas,
            fault_ticks: 1_000,
            heal_ticks: 2_000,
            loss_percent: 5,
            duplicate_percent: 3,
            delay_ticks_max: 5,
            participant_crash_per_10k_ticks: 30,
            coordinator_crash_per_10k_ticks: 15,
            downtime_ticks_max: 100,
            write_percent: 30,
        }
    }
}

#[derive(Debug, Default)]
pub struct TwoPcSimStats {
    pub committed: usize,
    pub aborted: usize,
}

struct SimReplica {
    coordinator: Option<Coordinator>,
    coordinator_log: Vec<CoordinatorRecord>,
    coordinator_down_until: Option<u64>,
    participant: Participant,
    participant_log: Vec<ParticipantRecord>,
    participant_down_until: Option<u64>,
}

/// Outcomes seen so far, per transaction, to check atomicity.
#[derive(Default)]
struct Outcomes {
    /// COMMIT decisions (aborts are presumed, not logged).
    decided: BTreeMap<TxnId, bool>,
    committed_at: BTreeMap<TxnId, BTreeSet<NodeId>>,
    aborted_at: BTreeMap<TxnId, BTreeSet<NodeId>>,
}

impl Outcomes {
    /// Atomicity: no transaction is committed at one replica and aborted at
    /// another, and none is committed anywhere unless its coordinator decided COMMIT.
    fn check(&self) -> Result<(), String> {
        for (txn, committed) in &self.committed_at {
            if let Some(aborted) = self.aborted_at.get(txn) {
                return Err(format!("txn {txn} committed at {committed:?} but aborted at {aborted:?}"));
            }
            if self.decided.get(txn) != Some(&true) {
                return Err(format!("txn {txn} committed at {committed:?} without a COMMIT decision"));
            }
        }
        Ok(())
    }
}

struct World {
    config: TwoPcSimConfig,
    now: u64,
    healing: bool,
    net_rng: StdRng,
    fault_rng: StdRng,
    work_rng: StdRng,
    replicas: Vec<SimReplica>,
    in_transit: BTreeMap<(u64, u64), TxEnvelope>,
    sequence: u64,
    next_request: u64,
    outcomes: Outcomes,
}

pub fn run(seed: u64, config: &TwoPcSimConfig) -> Result<TwoPcSimStats, String> {
    let mut world = World::new(seed, config.clone());
    world.run().map_err(|violation| {
        format!(
            "seed {seed}: {violation}\nreplay: PAXOS_SIM_SEED={seed} cargo test --release --test simulation replay_twopc_seed -- --nocapture"
        )
    })?;
    let committed = world.outcomes.decided.values().filter(|c| **c).count();
    Ok(TwoPcSimStats { committed, aborted: world.outcomes.aborted_at.len() })
}

impl World {
    fn new(seed: u64, config: TwoPcSimConfig) -> Self {
        let mut root = StdRng::seed_from_u64(seed);
        let mut world = World {
            now: 0,
            healing: false,
            net_rng: StdRng::seed_from_u64(root.random()),
            fault_rng: StdRng::seed_from_u64(root.random()),
            work_rng: StdRng::seed_from_u64(root.random()),
            replicas: Vec::new(),
            in_transit: BTreeMap::new(),
            sequence: 0,
            next_request: 0,
            outcomes: Outcomes::default(),
            config,
        };
        for index in 0..world.config.replicas {
            world.replicas.push(SimReplica {
                coordinator: None,
                coordinator_log: Vec::new(),
                coordinator_down_until: None,
                participant: Participant::new(index as NodeId + 1, ParticipantState::default(), 20),
                participant_log: Vec::new(),
                participant_down_until: None,
            });
            world.start_coordinator(index);
        }
        world
    }

    fn coordinator_config(&self) -> CoordinatorConfig {
        CoordinatorConfig {
            participants: (1..=self.config.replicas as NodeId).collect(),
            vote_timeout_ticks: 30,
            retry_ticks: 15,
            stall: None,
        }
    }

    fn start_coordinator(&mut self, index: usize) {
        let mut state = CoordinatorState::default();
        self.replicas[index].coordinator_log.iter().for_each(|r| state.apply(r));
        let mut out = CoordinatorOutbox::default();
        let coordinator = Coordinator::new(index as NodeId + 1, self.coordinator_config(), state, &mut out);
        self.replicas[index].coordinator = Some(coordinator);
        self.replicas[index].coordinator_down_until = None;
        self.after_coordinator(index, out);
    }

    fn restart_participant(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        let mut state = ParticipantState::default();
        replica.participant_log.iter().for_each(|r| {
            state.apply(r);
        });
        replica.participant = Participant::new(index as NodeId + 1, state, 20);
        replica.participant_down_until = None;
    }

    fn run(&mut self) -> Result<(), String> {
        for _ in 0..self.config.fault_ticks {
            self.step()?;
        }
        self.healing = true;
        for index in 0..self.replicas.len() {
            if self.replicas[index].coordinator.is_none() {
                self.start_coordinator(index);
            }
            if self.replicas[index].participant_down_until.is_some() {
                self.restart_participant(index);
            }
        }
        for _ in 0..self.config.heal_ticks {
            self.step()?;
            if self.settled() {
                return self.check_same_stores();
            }
        }
        let blocked: Vec<usize> = self.replicas.iter().map(|r| r.participant.state().prepared.len()).collect();
        Err(format!(
            "not settled {} ticks after healing: prepared transactions per replica {blocked:?}",
            self.config.heal_ticks
        ))
    }

    /// Nothing prepared anywhere and nothing in flight.
    fn settled(&self) -> bool {
        self.in_transit.is_empty()
            && self.replicas.iter().all(|r| {
                r.participant.state().prepared.is_empty()
                    && r.coordinator.as_ref().is_some_and(|c| c.transactions_in_progress() == 0)
            })
    }

    /// After healing, every replica committed the same transactions.
    fn check_same_stores(&self) -> Result<(), String> {
        let first = &self.replicas[0].participant.state().store;
        for (index, replica) in self.replicas.iter().enumerate().skip(1) {
            if &replica.participant.state().store != first {
                return Err(format!("replicas 1 and {} hold different stores after healing", index + 1));
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), String> {
        self.now += 1;
        if !self.healing {
            self.inject_faults();
        }
        while let Some(entry) = self.in_transit.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let envelope = entry.remove();
            self.deliver(envelope)?;
        }
        for index in 0..self.replicas.len() {
            if let Some(coordinator) = self.replicas[index].coordinator.as_mut() {
                let mut out = CoordinatorOutbox::default();
                coordinator.on_tick(&mut out);
                self.after_coordinator(index, out);
            }
            if self.replicas[index].participant_down_until.is_none() {
                let mut out = ParticipantOutbox::default();
                self.replicas[index].participant.on_tick(&mut out);
                self.after_participant(index, out)?;
            }
        }
        if !self.healing && self.work_rng.random_range(0..100) < self.config.write_percent {
            self.submit_write();
        }
        self.outcomes.check()
    }

    fn inject_faults(&mut self) {
        for index in 0..self.replicas.len() {
            match self.replicas[index].participant_down_until {
                Some(until) if self.now >= until => self.restart_participant(index),
                Some(_) => {}
                None => {
                    if self.fault_rng.random_range(0..10_000) < self.config.participant_crash_per_10k_ticks {
                        let downtime = self.fault_rng.random_range(1..=self.config.downtime_ticks_max);
                        self.replicas[index].participant_down_until = Some(self.now + downtime);
                    }
                }
            }
            match self.replicas[index].coordinator_down_until {
                Some(until) if self.now >= until => self.start_coordinator(index),
                Some(_) => {}
                None => {
                    if self.fault_rng.random_range(0..10_000) < self.config.coordinator_crash_per_10k_ticks {
                        let downtime = self.fault_rng.random_range(1..=self.config.downtime_ticks_max);
                        self.replicas[index].coordinator = None;
                        self.replicas[index].coordinator_down_until = Some(self.now + downtime);
                    }
                }
            }
        }
    }

    fn submit_write(&mut self) {
        let index = self.work_rng.random_range(0..self.replicas.len());
        self.next_request += 1;
        let key = format!("k{}", self.work_rng.random_range(0..4));
        let op = if self.work_rng.random_range(0..3) == 0 {
            Op::Delete { key }
        } else {
            Op::Put { key, value: self.next_request.to_string() }
        };
        let command = Command { client_id: 1 + self.next_request % 3, seq: self.next_request, op };
        if let Some(coordinator) = self.replicas[index].coordinator.as_mut() {
            let mut out = CoordinatorOutbox::default();
            coordinator.on_client_command(command, &mut out);
            self.after_coordinator(index, out);
        }
    }

    fn send(&mut self, envelope: TxEnvelope) {
        let local = envelope.from == envelope.to;
        if !local && !self.healing && self.net_rng.random_range(0..100) < self.config.loss_percent {
            return;
        }
        let duplicate = !self.healing && self.net_rng.random_range(0..100) < self.config.duplicate_percent;
        for _ in 0..if duplicate { 2 } else { 1 } {
            let delay = self.net_rng.random_range(1..=self.config.delay_ticks_max);
            self.sequence += 1;
            self.in_transit.insert((self.now + delay, self.sequence), envelope.clone());
        }
    }

    fn deliver(&mut self, envelope: TxEnvelope) -> Result<(), String> {
        let index = (envelope.to - 1) as usize;
        if envelope.msg.to_participant() {
            if self.replicas[index].participant_down_until.is_some() {
                return Ok(());
            }
            let mut out = ParticipantOutbox::default();
            self.replicas[index].participant.on_message(envelope.from, envelope.msg, &mut out);
            self.after_participant(index, out)
        } else {
            if let Some(coordinator) = self.replicas[index].coordinator.as_mut() {
                let mut out = CoordinatorOutbox::default();
                coordinator.on_message(envelope.from, envelope.msg, &mut out);
                self.after_coordinator(index, out);
            }
            Ok(())
        }
    }

    fn after_coordinator(&mut self, index: usize, out: CoordinatorOutbox) {
        for record in &out.records {
            if let CoordinatorRecord::Decided { txn, commit } = record {
                self.outcomes.decided.insert(*txn, *commit);
            }
        }
        self.replicas[index].coordinator_log.extend(out.records);
        // Client replies are not checked here: atomicity is, through the records.
        for envelope in out.messages {
            self.send(envelope);
        }
    }

    fn after_participant(&mut self, index: usize, out: ParticipantOutbox) -> Result<(), String> {
        let id = index as NodeId + 1;
        for record in &out.records {
            match record {
                ParticipantRecord::Committed { txn } => {
                    self.outcomes.committed_at.entry(*txn).or_default().insert(id);
                }
                ParticipantRecord::Aborted { txn } => {
                    self.outcomes.aborted_at.entry(*txn).or_default().insert(id);
                }
                _ => {}
            }
        }
        self.replicas[index].participant_log.extend(out.records);
        for envelope in out.messages {
            self.send(envelope);
        }
        Ok(())
    }
}
