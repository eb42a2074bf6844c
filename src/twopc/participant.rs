//! The 2PC participant: votes, holds a lock on the key of every transaction it
//! voted YES for, and applies or drops the command when the decision comes. A
//! participant that voted YES cannot decide alone: without the coordinator it
//! stays blocked, key locked, asking again on every retry tick.

use super::messages::*;
use crate::kv::{Command, KvStore, Reply, StoreChunk};
use crate::paxos::NodeId;
use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParticipantRecord {
    Prepared {
        txn: TxnId,
        command: Command,
    },
    Committed {
        txn: TxnId,
    },
    Aborted {
        txn: TxnId,
    },
    /// Part of the store: a compacted log starts with these chunks (each
    /// bounded in size, so no record outgrows what replay reads back).
    RestoreStore(StoreChunk),
    /// Finished transactions, oldest first, remembered to refuse late duplicates.
    RestoreFinished(Vec<TxnId>),
}

/// How many finished transactions are remembered to refuse late duplicates.
const FINISHED_REMEMBERED: usize = 100_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParticipantState {
    pub store: KvStore,
    pub prepared: BTreeMap<TxnId, Command>,
    pub locks: BTreeMap<String, TxnId>,
    finished: BTreeSet<TxnId>,
    finished_order: VecDeque<TxnId>,
}

impl ParticipantState {
    /// The single place where state changes, live and on recovery alike.
    /// Returns the reply of a committed command.
    pub fn apply(&mut self, record: &ParticipantRecord) -> Option<Reply> {
        match record {
            ParticipantRecord::Prepared { txn, command } => {
                self.locks.insert(command.op.key().to_string(), *txn);
                self.prepared.insert(*txn, command.clone());
                None
            }
            ParticipantRecord::Committed { txn } => {
                let command = self.prepared.remove(txn)?;
                self.locks.remove(command.op.key());
                self.finish(*txn);
                // Commands on different keys commit in different orders at
                // different replicas, so no per-client sequence is kept here.
                Some(self.store.execute(&command.op))
            }
            ParticipantRecord::Aborted { txn } => {
                if let Some(command) = self.prepared.remove(txn) {
                    self.locks.remove(command.op.key());
                }
                self.finish(*txn);
                None
            }
            ParticipantRecord::RestoreStore(chunk) => {
                self.store.restore_chunk(chunk.clone());
                None
            }
            ParticipantRecord::RestoreFinished(txns) => {
                txns.iter().for_each(|txn| self.finish(*txn));
                None
            }
        }
    }

    fn finish(&mut self, txn: TxnId) {
        if self.finished.insert(txn) {
            self.finished_order.push_back(txn);
            if self.finished_order.len() > FINISHED_REMEMBERED {
                let oldest = self.finished_order.pop_front().expect("non-empty");
                self.finished.remove(&oldest);
            }
        }
    }

    /// The records that rebuild exactly this state, in chunks of about `bytes_max`.
    pub fn to_records(&self, bytes_max: usize) -> Vec<ParticipantRecord> {
        let mut records: Vec<_> = self.store.chunks(bytes_max).map(ParticipantRecord::RestoreStore).collect();
        records.extend(
            self.prepared
                .iter()
                .map(|(txn, command)| ParticipantRecord::Prepared { txn: *txn, command: command.clone() }),
        );
        let per_record = (bytes_max / 32).max(1);
        let finished: Vec<TxnId> = self.finished_order.iter().copied().collect();
        records.extend(finished.chunks(per_record).map(|txns| ParticipantRecord::RestoreFinished(txns.to_vec())));
        records
    }

    pub fn is_finished(&self, txn: &TxnId) -> bool {
        self.finished.contains(txn)
    }
}

#[derive(Debug, Default)]
pub struct ParticipantOutbox {
    /// Must be durable before any of `messages` leaves.
    pub records: Vec<ParticipantRecord>,
    pub messages: Vec<TxEnvelope>,
}

pub struct Participant {
    id: NodeId,
    state: ParticipantState,
    now: u64,
    retry_ticks: u64,
    /// When each blocked transaction last asked its coordinator.
    asked_at: BTreeMap<TxnId, u64>,
}

/// Why a local read cannot answer now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locked(pub TxnId);

impl Participant {
    pub fn new(id: NodeId, state: ParticipantState, retry_ticks: u64) -> Self {
        Participant { id, state, now: 0, retry_ticks, asked_at: BTreeMap::new() }
    }

    pub fn state(&self) -> &ParticipantState {
        &self.state
    }

    /// Reads the committed value, unless an undecided transaction holds the
    /// key: its outcome is unknown, so any answer could be rolled back.
    pub fn read(&self, key: &str) -> Result<Option<String>, Locked> {
        match self.state.locks.get(key) {
            Some(txn) => Err(Locked(*txn)),
            None => Ok(self.state.store.get(key).map(str::to_string)),
        }
    }

    pub fn on_message(&mut self, from: NodeId, msg: TxMessage, out: &mut ParticipantOutbox) {
        // Only a transaction's own coordinator may ask for votes or decide it:
        // a request naming anyone else would lock its key with nobody to decide.
        let coordinator = match &msg {
            TxMessage::VoteRequest(request) => Some(request.txn.coordinator),
            TxMessage::Decision(decision) => Some(decision.txn.coordinator),
            _ => None,
        };
        if let Some(coordinator) = coordinator {
            if coordinator != from {
                warn!("refusing {} from {from}: its transaction belongs to coordinator {coordinator}", msg.kind());
                return;
            }
        }
        match msg {
            TxMessage::VoteRequest(request) => self.on_vote_request(from, request, out),
            TxMessage::Decision(decision) => self.on_decision(from, decision, out),
            other => debug!("ignoring {} from {from}: not a participant message", other.kind()),
        }
    }

    pub fn on_tick(&mut self, out: &mut ParticipantOutbox) {
        self.now += 1;
        for (txn, command) in &self.state.prepared {
            let asked = self.asked_at.entry(*txn).or_insert(self.now);
            if self.now >= *asked + self.retry_ticks {
                *asked = self.now;
                warn!(
                    "BLOCKED txn={txn} key={} voted YES, no decision yet; asking coordinator {}",
                    command.op.key(),
                    txn.coordinator
                );
                out.messages.push(self.vote(txn.coordinator, *txn, true, None));
            }
        }
    }

    fn on_vote_request(&mut self, from: NodeId, request: VoteRequest, out: &mut ParticipantOutbox) {
        let txn = request.txn;
        let refusal = if self.state.prepared.contains_key(&txn) {
            None
        } else if self.state.is_finished(&txn) {
            Some("transaction already finished".to_string())
        } else if let Some(holder) = self.state.locks.get(request.command.op.key()) {
            Some(format!("key '{}' locked by undecided txn {holder}", request.command.op.key()))
        } else {
            self.record(ParticipantRecord::Prepared { txn, command: request.command }, out);
            self.asked_at.insert(txn, self.now);
            None
        };
        info!("VOTE txn={txn} to={from} {}", refusal.as_deref().map_or("YES".to_string(), |r| format!("NO ({r})")));
        let yes = refusal.is_none();
        out.messages.push(self.vote(from, txn, yes, refusal));
    }

    fn on_decision(&mut self, from: NodeId, decision: Decision, out: &mut ParticipantOutbox) {
        let txn = decision.txn;
        let mut reply = None;
        if self.state.prepared.contains_key(&txn) {
            let record =
                if decision.commit { ParticipantRecord::Committed { txn } } else { ParticipantRecord::Aborted { txn } };
            reply = self.record(record, out);
            self.asked_at.remove(&txn);
            info!("{} txn={txn} applied={}", if decision.commit { "COMMIT" } else { "ABORT" }, reply.is_some());
        } else if !decision.commit && !self.state.is_finished(&txn) {
            // An abort that overtook its vote request: remember it, so the
            // late request is refused instead of locking the key forever.
            self.record(ParticipantRecord::Aborted { txn }, out);
        }
        out.messages.push(TxEnvelope { from: self.id, to: from, msg: TxMessage::Ack(Ack { txn, reply }) });
    }

    fn vote(&self, to: NodeId, txn: TxnId, yes: bool, reason: Option<String>) -> TxEnvelope {
        TxEnvelope { from: self.id, to, msg: TxMessage::Vote(Vote { txn, yes, reason }) }
    }

    fn record(&mut self, record: ParticipantRecord, out: &mut ParticipantOutbox) -> Option<Reply> {
        let reply = self.state.apply(&record);
        out.records.push(record);
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op;

    fn txn(seq: u64) -> TxnId {
        TxnId { coordinator: 1, epoch: 1, seq }
    }
    fn put(key: &str, value: &str) -> Command {
        Command { client_id: 9, seq: 1, op: Op::Put { key: key.into(), value: value.into() } }
    }
    fn step(p: &mut Participant, msg: TxMessage) -> ParticipantOutbox {
        let mut out = ParticipantOutbox::default();
        p.on_message(1, msg, &mut out);
        out
    }
    fn request(seq: u64, command: Command) -> TxMessage {
        TxMessage::VoteRequest(VoteRequest { txn: txn(seq), command })
    }

    #[test]
    fn a_yes_vote_is_persisted_first_and_locks_the_key_until_the_decision() {
        let mut p = Participant::new(2, ParticipantState::default(), 10);
        let out = step(&mut p, request(1, put("a", "1")));
        assert_eq!(out.records, vec![ParticipantRecord::Prepared { txn: txn(1), command: put("a", "1") }]);
        assert_eq!(
            out.messages,
            vec![TxEnvelope { from: 2, to: 1, msg: TxMessage::Vote(Vote { txn: txn(1), yes: true, reason: None }) }]
        );
        assert_eq!(p.read("a"), Err(Locked(txn(1))), "a read must not see a value that may be rolled back");
        let second = step(&mut p, request(2, put("a", "2")));
        assert!(second.records.is_empty());
        let TxMessage::Vote(vote) = &second.messages[0].msg else { panic!() };
        assert!(!vote.yes && vote.reason.as_deref().unwrap().contains("locked"));

        let out = step(&mut p, TxMessage::Decision(Decision { txn: txn(1), commit: true }));
        assert_eq!(out.records, vec![ParticipantRecord::Committed { txn: txn(1) }]);
        assert_eq!(out.messages[0].msg, TxMessage::Ack(Ack { txn: txn(1), reply: Some(Reply::Stored) }));
        assert_eq!(p.read("a"), Ok(Some("1".into())));
    }

    #[test]
    fn an_abort_drops_the_command_and_a_late_duplicate_request_is_refused() {
        let mut p = Participant::new(2, ParticipantState::default(), 10);
        step(&mut p, request(1, put("a", "1")));
        let out = step(&mut p, TxMessage::Decision(Decision { txn: txn(1), commit: false }));
        assert_eq!(out.records, vec![ParticipantRecord::Aborted { txn: txn(1) }]);
        assert_eq!(p.read("a"), Ok(None));
        let late = step(&mut p, request(1, put("a", "1")));
        assert!(late.records.is_empty());
        let TxMessage::Vote(vote) = &late.messages[0].msg else { panic!() };
        assert!(!vote.yes);
    }

    #[test]
    fn only_a_transactions_own_coordinator_may_ask_for_votes_or_decide_it() {
        let mut p = Participant::new(2, ParticipantState::default(), 10);
        let ghost = TxnId { coordinator: 99, epoch: 1, seq: 1 };
        let mut out = ParticipantOutbox::default();
        p.on_message(1, TxMessage::VoteRequest(VoteRequest { txn: ghost, command: put("a", "1") }), &mut out);
        assert!(
            out.records.is_empty() && out.messages.is_empty(),
            "a key was locked for a coordinator that does not exist"
        );
        assert_eq!(p.read("a"), Ok(None));
        step(&mut p, request(1, put("a", "1")));
        p.on_message(3, TxMessage::Decision(Decision { txn: txn(1), commit: true }), &mut out);
        assert!(out.records.is_empty(), "a decision from another replica was applied");
        assert_eq!(p.read("a"), Err(Locked(txn(1))));
    }

    #[test]
    fn a_blocked_participant_keeps_asking_its_coordinator() {
        let mut p = Participant::new(2, ParticipantState::default(), 3);
        step(&mut p, request(1, put("a", "1")));
        let mut out = ParticipantOutbox::default();
        for _ in 0..9 {
            p.on_tick(&mut out);
        }
        assert_eq!(out.messages.len(), 3);
        assert!(out.messages.iter().all(|e| e.to == 1 && matches!(e.msg, TxMessage::Vote(Vote { yes: true, .. }))));
    }

    #[test]
    fn replaying_the_records_rebuilds_locks_and_store() {
        let mut p = Participant::new(2, ParticipantState::default(), 10);
        let mut records = Vec::new();
        records.extend(step(&mut p, request(1, put("a", "1"))).records);
        records.extend(step(&mut p, TxMessage::Decision(Decision { txn: txn(1), commit: true })).records);
        records.extend(step(&mut p, request(2, put("b", "2"))).records);
        let mut replayed = ParticipantState::default();
        records.iter().for_each(|r| {
            replayed.apply(r);
        });
        assert_eq!(&replayed, p.state());
        assert_eq!(replayed.locks.get("b"), Some(&txn(2)));
    }
}
