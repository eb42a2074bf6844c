//! The two-phase-commit replica: a coordinator thread (for the writes this
//! replica receives) and a participant thread (for every write), around the
//! sans-IO cores of `crate::twopc`, each with its own durable log. Reads are
//! served by the local participant and refused while the key is locked.

use super::{push_control, run_role, spawn_named, NodeStatus, Plumbing, Replica, RoleThread, ROLE_QUEUE_MAX};
use crate::config::{FailMode, ServerConfig};
use crate::kv::{Command, Op, Reply, RequestError, RequestId};
use crate::mailbox::{Mailbox, Weigh};
use crate::paxos::NodeId;
use crate::storage::frames::FileKind;
use crate::storage::{self, fail_stop, Disk, FsDisk, Identity, RecordLog, COORDINATOR_LOG, PARTICIPANT_LOG};
use crate::twopc::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorOutbox, CoordinatorRecord, CoordinatorState,
};
use crate::twopc::participant::{Locked, Participant, ParticipantOutbox, ParticipantRecord, ParticipantState};
use crate::twopc::TxEnvelope;
use anyhow::Result;
use log::{info, warn};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rewrite a log as its live state once it grows past this.
const COMPACT_BYTES_MIN: u64 = 64 << 20;
/// Decisions listed in a status answer.
const RECENT_OUTCOMES: usize = 6;
/// Prepared transactions listed in a status answer.
const STATUS_PREPARED_MAX: usize = 16;

/// A 2PC replica's roles, as `STATUS` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoPcStatus {
    pub node_id: NodeId,
    pub participant_online: bool,
    /// Transactions this participant voted YES for and has no decision on:
    /// `(txn, key)`; their keys are locked.
    pub prepared: Vec<(String, String)>,
    pub prepared_count: usize,
    pub coordinating: usize,
    pub keys: usize,
    pub peers_connected: Vec<NodeId>,
    pub participant_failures: u64,
    pub committed: u64,
    pub aborted: u64,
    /// The last few decisions this participant applied, newest first.
    pub recent_outcomes: Vec<String>,
}

pub enum CoordinatorInput {
    Message(TxEnvelope),
    Client(Command),
}

pub enum ParticipantInput {
    Message(TxEnvelope),
    Read { request: RequestId, key: String },
    Crash,
    Recover,
}

impl Weigh for CoordinatorInput {
    fn weight(&self) -> usize {
        match self {
            CoordinatorInput::Message(envelope) => envelope.weight(),
            CoordinatorInput::Client(command) => command.wire_bytes(),
        }
    }
}

impl Weigh for ParticipantInput {
    fn weight(&self) -> usize {
        match self {
            ParticipantInput::Message(envelope) => envelope.weight(),
            ParticipantInput::Read { key, .. } => 32 + key.len(),
            _ => 16,
        }
    }
}

pub(crate) struct TwoPcReplica {
    plumbing: Plumbing<TxEnvelope>,
    coordinator_inbox: Arc<Mailbox<CoordinatorInput>>,
    participant_inbox: Arc<Mailbox<ParticipantInput>>,
    status: Mutex<TwoPcStatus>,
    disk: Arc<dyn Disk>,
    identity: Identity,
}

impl TwoPcReplica {
    fn route(&self, envelope: TxEnvelope) {
        if let Some(envelope) = self.plumbing.send(envelope) {
            self.deliver_locally(envelope);
        }
    }

    fn deliver_locally(&self, envelope: TxEnvelope) {
        let delivered = if envelope.msg.to_participant() {
            self.participant_inbox.push(ParticipantInput::Message(envelope)).is_ok()
        } else {
            self.coordinator_inbox.push(CoordinatorInput::Message(envelope)).is_ok()
        };
        if !delivered {
            warn!("local role queue full; dropped a message");
        }
    }
}

impl Replica for TwoPcReplica {
    type Envelope = TxEnvelope;

    fn config(&self) -> &ServerConfig {
        &self.plumbing.config
    }

    fn deliver(&self, peer: NodeId, envelope: TxEnvelope) -> Result<(), String> {
        self.deliver_locally(self.plumbing.receive(peer, envelope)?);
        Ok(())
    }

    fn execute(&self, command: Command) -> Reply {
        let id = command.request_id();
        match command.op {
            Op::Get { key } => self.local_get(id, key),
            _ => {
                let push = || self.coordinator_inbox.push(CoordinatorInput::Client(command)).is_ok();
                self.plumbing.pending.call(id, self.plumbing.request_timeout(), push)
            }
        }
    }

    fn local_get(&self, request: RequestId, key: String) -> Reply {
        let push = || self.participant_inbox.push(ParticipantInput::Read { request, key }).is_ok();
        self.plumbing.pending.call(request, self.plumbing.request_timeout(), push)
    }

    fn status(&self) -> NodeStatus {
        let mut status = self.status.lock().unwrap().clone();
        status.peers_connected = self.plumbing.peers_connected();
        NodeStatus::TwoPc(status)
    }
}

struct CoordinatorThread {
    core: Coordinator,
    log: RecordLog<CoordinatorRecord>,
    state: CoordinatorState,
    out: CoordinatorOutbox,
    replica: Arc<TwoPcReplica>,
}

impl RoleThread for CoordinatorThread {
    type Input = CoordinatorInput;

    fn handle(&mut self, input: CoordinatorInput) {
        match input {
            CoordinatorInput::Message(e) => self.core.on_message(e.from, e.msg, &mut self.out),
            CoordinatorInput::Client(command) => self.core.on_client_command(command, &mut self.out),
        }
    }

    fn tick(&mut self) {
        self.core.on_tick(&mut self.out);
    }

    fn finish_batch(&mut self) {
        let out = std::mem::take(&mut self.out);
        // A decision that is not durable must never be sent, and the state in
        // memory already holds it: the only safe way on is to stop.
        if let Err(e) = self.log.append(&out.records) {
            fail_stop("coordinator log write failed", &e);
        }
        out.records.iter().for_each(|r| self.state.apply(r));
        out.messages.into_iter().for_each(|e| self.replica.route(e));
        for (id, reply) in out.replies {
            self.replica.plumbing.pending.complete(id, reply);
        }
        if self.log.bytes() > COMPACT_BYTES_MIN {
            if let Err(e) = self.log.rewrite(self.state.to_records()) {
                fail_stop("coordinator log compaction failed", &e);
            }
        }
        self.replica.status.lock().unwrap().coordinating = self.core.transactions_in_progress();
    }
}

struct ParticipantThread {
    core: Participant,
    log: RecordLog<ParticipantRecord>,
    online: bool,
    failures: u64,
    out: ParticipantOutbox,
    /// Read replies wait for the batch's records to be durable.
    reads: Vec<(RequestId, Reply)>,
    replica: Arc<TwoPcReplica>,
}

const PARTICIPANT_RETRY_TICKS: u64 = 50;

impl ParticipantThread {
    fn reload(&mut self) -> Result<()> {
        let (log, state, records) = open_participant_log(self.replica.disk.clone(), self.replica.identity)?;
        self.log = log;
        info!(
            "recovered participant: {} keys, {} prepared transaction(s) ({records} records)",
            state.store.len(),
            state.prepared.len()
        );
        self.core = Participant::new(self.replica.plumbing.config.id, state, PARTICIPANT_RETRY_TICKS);
        // STATUS must show recovered locks before the first batch runs.
        self.publish_status();
        Ok(())
    }
}

impl RoleThread for ParticipantThread {
    type Input = ParticipantInput;

    fn handle(&mut self, input: ParticipantInput) {
        match input {
            ParticipantInput::Message(e) if self.online => self.core.on_message(e.from, e.msg, &mut self.out),
            ParticipantInput::Message(_) => {}
            ParticipantInput::Read { request, key } => {
                let reply = if !self.online {
                    Reply::Rejected(RequestError::Offline)
                } else {
                    match self.core.read(&key) {
                        Ok(value) => Reply::Value(value),
                        Err(Locked(txn)) => Reply::Rejected(RequestError::Locked { txn: txn.to_string() }),
                    }
                };
                self.reads.push((request, reply));
            }
            ParticipantInput::Crash => {
                if self.online {
                    self.online = false;
                    self.failures += 1;
                    self.out = ParticipantOutbox::default();
                    self.replica.plumbing.record_failure("participant", false, self.failures);
                }
            }
            ParticipantInput::Recover => {
                if !self.online {
                    self.replica.plumbing.record_failure("participant", true, self.failures);
                    if self.replica.plumbing.config.failure.mode == FailMode::Amnesia {
                        if let Err(e) = self.log.rewrite(std::iter::empty()) {
                            fail_stop("cannot wipe the participant log (amnesia mode)", &e);
                        }
                    }
                    match self.reload() {
                        Ok(()) => self.online = true,
                        Err(e) => fail_stop("cannot reload the participant log", &e),
                    }
                }
            }
        }
    }

    fn tick(&mut self) {
        if self.online {
            self.core.on_tick(&mut self.out);
        }
    }

    fn finish_batch(&mut self) {
        let out = std::mem::take(&mut self.out);
        if let Err(e) = self.log.append(&out.records) {
            fail_stop("participant log write failed", &e);
        }
        let mut status = self.replica.status.lock().unwrap();
        for record in &out.records {
            let outcome = match record {
                ParticipantRecord::Committed { txn } => {
                    status.committed += 1;
                    format!("COMMIT {txn}")
                }
                ParticipantRecord::Aborted { txn } => {
                    status.aborted += 1;
                    format!("ABORT {txn}")
                }
                _ => continue,
            };
            status.recent_outcomes.insert(0, outcome);
            status.recent_outcomes.truncate(RECENT_OUTCOMES);
        }
        drop(status);
        out.messages.into_iter().for_each(|e| self.replica.route(e));
        for (id, reply) in self.reads.drain(..) {
            self.replica.plumbing.pending.complete(id, reply);
        }
        if self.log.bytes() > COMPACT_BYTES_MIN {
            if let Err(e) = self.log.rewrite(self.core.state().to_records(storage::CHUNK_BYTES)) {
                fail_stop("participant log compaction failed", &e);
            }
        }
        self.publish_status();
    }
}

impl ParticipantThread {
    fn publish_status(&self) {
        let state = self.core.state();
        let mut status = self.replica.status.lock().unwrap();
        status.participant_online = self.online;
        status.prepared_count = state.prepared.len();
        status.prepared = state
            .prepared
            .iter()
            .take(STATUS_PREPARED_MAX)
            .map(|(txn, command)| (txn.to_string(), command.op.key().to_string()))
            .collect();
        status.keys = state.store.len();
        status.participant_failures = self.failures;
    }
}

/// Recovers both logs and starts the role, link and failure threads.
pub(crate) fn start(config: ServerConfig) -> Result<Arc<TwoPcReplica>> {
    let id = config.id;
    let identity = config.identity();
    let disk: Arc<dyn Disk> = Arc::new(FsDisk::open(&config.data_dir)?);
    storage::open_data_dir(&*disk, identity, config.cluster_state, false, || {
        RecordLog::<CoordinatorRecord>::create(disk.clone(), COORDINATOR_LOG, FileKind::CoordinatorLog, identity)?;
        RecordLog::<ParticipantRecord>::create(disk.clone(), PARTICIPANT_LOG, FileKind::ParticipantLog, identity)?;
        Ok(())
    })?;
    let mut coordinator_state = CoordinatorState::default();
    let (coordinator_log, _) = RecordLog::open(
        disk.clone(),
        COORDINATOR_LOG,
        FileKind::CoordinatorLog,
        identity,
        |record: CoordinatorRecord| coordinator_state.apply(&record),
    )?;
    let (participant_log, participant_state, _) = open_participant_log(disk.clone(), identity)?;

    let replica = Arc::new(TwoPcReplica {
        plumbing: Plumbing::start(config.clone())?,
        coordinator_inbox: Arc::new(Mailbox::new(ROLE_QUEUE_MAX, config.queue_bytes_max)),
        participant_inbox: Arc::new(Mailbox::new(ROLE_QUEUE_MAX, config.queue_bytes_max)),
        status: Mutex::new(TwoPcStatus { node_id: id, participant_online: true, ..Default::default() }),
        disk,
        identity,
    });
    let tick = Duration::from_millis(config.tick_ms);
    let ticks = |ms: u64| (ms / config.tick_ms).max(1);

    let participant = ParticipantThread {
        core: Participant::new(id, participant_state, PARTICIPANT_RETRY_TICKS),
        log: participant_log,
        online: true,
        failures: 0,
        out: Default::default(),
        reads: Vec::new(),
        replica: replica.clone(),
    };
    participant.publish_status();
    let inbox = replica.participant_inbox.clone();
    spawn_named(format!("s{id}/participant"), move || run_role(participant, inbox, tick))?;

    let coordinator_config = CoordinatorConfig {
        participants: config.cluster(),
        vote_timeout_ticks: ticks(config.vote_timeout_ms),
        retry_ticks: ticks(200),
        stall: config.stall_coordinator,
    };
    if let Some(stall) = config.stall_coordinator {
        warn!("coordinator will stall {stall:?} in every transaction (demonstration mode)");
    }
    let mut out = CoordinatorOutbox::default();
    let core = Coordinator::new(id, coordinator_config, coordinator_state.clone(), &mut out);
    let coordinator =
        CoordinatorThread { core, log: coordinator_log, state: coordinator_state, out, replica: replica.clone() };
    let inbox = replica.coordinator_inbox.clone();
    spawn_named(format!("s{id}/coordinator"), move || run_role(coordinator, inbox, tick))?;

    let inbox = replica.participant_inbox.clone();
    replica.plumbing.spawn_failure_thread(move |offline| {
        push_control(&inbox, if offline { ParticipantInput::Crash } else { ParticipantInput::Recover })
    })?;
    Ok(replica)
}

fn open_participant_log(
    disk: Arc<dyn Disk>,
    identity: Identity,
) -> Result<(RecordLog<ParticipantRecord>, ParticipantState, usize)> {
    let mut state = ParticipantState::default();
    let (log, replayed) = RecordLog::open(disk, PARTICIPANT_LOG, FileKind::ParticipantLog, identity, |record| {
        state.apply(&record);
    })?;
    Ok((log, state, replayed.records))
}
