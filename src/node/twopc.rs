//! The two-phase-commit replica: a coordinator thread (for the writes this
//! replica receives) and a participant thread (for every write), around the
//! sans-IO cores of `crate::twopc`, each with its own durable log. Reads are
//! served by the local participant and refused while the key is locked.

use super::{
    log_restart, push_control, run_role, spawn_named, start_tracer, NodeStatus, Pending, Replica, RoleThread,
    ROLE_QUEUE_MAX,
};
use crate::config::{FailMode, ServerConfig};
use crate::fault;
use crate::kv::{Command, Op, Reply, RequestError, RequestId};
use crate::mailbox::Mailbox;
use crate::paxos::NodeId;
use crate::storage::RecordLog;
use crate::trace::{TraceEvent, Tracer};
use crate::transport::{self, Connected, PeerLink};
use crate::twopc::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorOutbox, CoordinatorRecord, CoordinatorState,
};
use crate::twopc::participant::{Locked, Participant, ParticipantOutbox, ParticipantRecord, ParticipantState};
use crate::twopc::TxEnvelope;
use anyhow::Result;
use log::{error, info, warn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PARTICIPANT_LOG: &str = "participant.log";
const COORDINATOR_LOG: &str = "coordinator.log";
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

pub(crate) struct TwoPcReplica {
    config: ServerConfig,
    coordinator_inbox: Arc<Mailbox<CoordinatorInput>>,
    participant_inbox: Arc<Mailbox<ParticipantInput>>,
    links: BTreeMap<NodeId, PeerLink<TxEnvelope>>,
    pending: Pending,
    status: Mutex<TwoPcStatus>,
    connected: Connected,
    tracer: Option<Tracer>,
}

impl TwoPcReplica {
    fn route(&self, envelope: TxEnvelope) {
        if let Some(tracer) = &self.tracer {
            tracer.record(TraceEvent::twopc(self.config.id, "send", &envelope));
            if envelope.to == self.config.id {
                tracer.record(TraceEvent::twopc(self.config.id, "recv", &envelope));
            }
        }
        if envelope.to != self.config.id {
            if let Some(link) = self.links.get(&envelope.to) {
                link.send(envelope);
            }
            return;
        }
        self.deliver_locally(envelope);
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
        &self.config
    }

    fn deliver(&self, peer: NodeId, envelope: TxEnvelope) -> Result<(), String> {
        if envelope.from != peer || envelope.to != self.config.id {
            return Err(format!("replica {peer} sent an envelope from {} to {}", envelope.from, envelope.to));
        }
        if let Some(tracer) = &self.tracer {
            tracer.record(TraceEvent::twopc(self.config.id, "recv", &envelope));
        }
        self.deliver_locally(envelope);
        Ok(())
    }

    fn execute(&self, command: Command) -> Reply {
        let id = command.request_id();
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        match command.op {
            Op::Get { key } => self.local_get(id, key),
            _ => self
                .pending
                .call(id, timeout, || self.coordinator_inbox.push(CoordinatorInput::Client(command)).is_ok()),
        }
    }

    fn local_get(&self, request: RequestId, key: String) -> Reply {
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        self.pending
            .call(request, timeout, || self.participant_inbox.push(ParticipantInput::Read { request, key }).is_ok())
    }

    fn status(&self) -> NodeStatus {
        let mut status = self.status.lock().unwrap().clone();
        status.peers_connected = self.connected.lock().unwrap().iter().copied().collect();
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
        if let Err(e) = self.log.append(&out.records) {
            // A decision that is not durable must not be sent.
            error!("coordinator log write failed: {e:#}; holding {} messages back", out.messages.len());
            return;
        }
        out.records.iter().for_each(|r| self.state.apply(r));
        out.messages.into_iter().for_each(|e| self.replica.route(e));
        for (id, reply) in out.replies {
            self.replica.pending.complete(id, reply);
        }
        if self.log.bytes() > COMPACT_BYTES_MIN {
            if let Err(e) = self.log.rewrite(&self.state.to_records()) {
                error!("coordinator log compaction failed: {e:#}");
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
        let mut state = ParticipantState::default();
        let records = self.log.replay(|record| {
            state.apply(&record);
        })?;
        info!(
            "recovered participant: {} keys, {} prepared transaction(s) ({records} records)",
            state.store.len(),
            state.prepared.len()
        );
        self.core = Participant::new(self.replica.config.id, state, PARTICIPANT_RETRY_TICKS);
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
                    if let Some(tracer) = &self.replica.tracer {
                        tracer.record(TraceEvent::failure(self.replica.config.id, "participant", false));
                    }
                    self.out = ParticipantOutbox::default();
                    warn!("FAILURE participant goes offline (failure #{})", self.failures);
                }
            }
            ParticipantInput::Recover => {
                if !self.online {
                    log_restart(self.replica.config.failure.mode, "participant");
                    if self.replica.config.failure.mode == FailMode::Amnesia {
                        if let Err(e) = self.log.wipe() {
                            error!("cannot wipe participant log: {e:#}");
                        }
                    }
                    match self.reload() {
                        Ok(()) => {
                            self.online = true;
                            if let Some(tracer) = &self.replica.tracer {
                                tracer.record(TraceEvent::failure(self.replica.config.id, "participant", true));
                            }
                        }
                        Err(e) => error!("cannot reload participant state: {e:#}; staying offline"),
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
            error!("participant log write failed: {e:#}; dropping {} messages and reloading", out.messages.len());
            if let Err(e) = self.reload() {
                error!("cannot reload participant state: {e:#}; going offline");
                self.online = false;
            }
            return;
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
            self.replica.pending.complete(id, reply);
        }
        if self.log.bytes() > COMPACT_BYTES_MIN {
            let restore = ParticipantRecord::Restore(Box::new(self.core.state().clone()));
            if let Err(e) = self.log.rewrite(&[restore]) {
                error!("participant log compaction failed: {e:#}");
            }
        }
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
    let mut coordinator_log = RecordLog::open_named(&config.data_dir, COORDINATOR_LOG)?;
    let mut coordinator_state = CoordinatorState::default();
    coordinator_log.replay(|record| coordinator_state.apply(&record))?;
    let participant_log = RecordLog::open_named(&config.data_dir, PARTICIPANT_LOG)?;

    let connected: Connected = Default::default();
    let links = config
        .cluster()
        .into_iter()
        .filter(|&peer| peer != id)
        .map(|peer| {
            (peer, transport::spawn_link(id, config.protocol, peer, config.address_of(peer), connected.clone()))
        })
        .collect();
    let replica = Arc::new(TwoPcReplica {
        coordinator_inbox: Arc::new(Mailbox::new(ROLE_QUEUE_MAX)),
        participant_inbox: Arc::new(Mailbox::new(ROLE_QUEUE_MAX)),
        links,
        pending: Pending::new(),
        status: Mutex::new(TwoPcStatus { node_id: id, participant_online: true, ..Default::default() }),
        connected,
        tracer: start_tracer(&config)?,
        config: config.clone(),
    });
    let tick = Duration::from_millis(config.tick_ms);
    let ticks = |ms: u64| (ms / config.tick_ms).max(1);

    let mut participant = ParticipantThread {
        core: Participant::new(id, ParticipantState::default(), PARTICIPANT_RETRY_TICKS),
        log: participant_log,
        online: true,
        failures: 0,
        out: Default::default(),
        reads: Vec::new(),
        replica: replica.clone(),
    };
    participant.reload()?;
    let inbox = replica.participant_inbox.clone();
    spawn_named(format!("s{id}/participant"), move || run_role(participant, inbox, tick))?;

    let coordinator_config = CoordinatorConfig {
        participants: config.cluster(),
        vote_timeout_ticks: ticks(config.request_timeout_ms / 3),
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

    if config.failure.mtbf_ms.is_some() {
        let failure = config.failure.clone();
        let inbox = replica.participant_inbox.clone();
        spawn_named(format!("s{id}/failure"), move || {
            fault::run(id, failure, |offline| {
                push_control(&inbox, if offline { ParticipantInput::Crash } else { ParticipantInput::Recover })
            })
        })?;
    }
    Ok(replica)
}
