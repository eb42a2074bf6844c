//! The 2PC coordinator: the replica that receives a write asks every replica
//! to vote, decides COMMIT only if all vote YES in time, writes the decision
//! durably, then sends it until every participant acknowledges. After a crash
//! it reloads undelivered decisions and sends them again; a transaction it has
//! no decision for was never committed (presumed abort), so aborts are
//! neither logged nor acknowledged.

use super::messages::*;
use crate::kv::{Command, Reply, RequestError, RequestId};
use crate::paxos::NodeId;
use log::{info, warn};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorRecord {
    /// A new start: transaction ids of this run use this epoch.
    Epoch(u64),
    Decided {
        txn: TxnId,
        commit: bool,
    },
    /// Every participant acknowledged; the decision may be forgotten.
    Completed {
        txn: TxnId,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorState {
    pub epoch: u64,
    /// Decisions not yet acknowledged by every participant.
    pub undelivered: BTreeMap<TxnId, bool>,
}

impl CoordinatorState {
    /// The records that rebuild exactly this state (used to compact a log file).
    pub fn to_records(&self) -> Vec<CoordinatorRecord> {
        let mut records = vec![CoordinatorRecord::Epoch(self.epoch)];
        records.extend(
            self.undelivered.iter().map(|(txn, commit)| CoordinatorRecord::Decided { txn: *txn, commit: *commit }),
        );
        records
    }

    pub fn apply(&mut self, record: &CoordinatorRecord) {
        match record {
            CoordinatorRecord::Epoch(epoch) => self.epoch = self.epoch.max(*epoch),
            CoordinatorRecord::Decided { txn, commit } => {
                self.undelivered.insert(*txn, *commit);
            }
            CoordinatorRecord::Completed { txn } => {
                self.undelivered.remove(txn);
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub participants: Vec<NodeId>,
    pub vote_timeout_ticks: u64,
    pub retry_ticks: u64,
    /// For demonstrations and tests: behave as if crashed at this point of
    /// every transaction (the process stays up and silent until killed).
    pub stall: Option<StallPoint>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StallPoint {
    /// Right after sending VOTE_REQUEST: participants that vote YES block.
    AfterVoteRequest,
    /// Right after the decision is durable, before it is sent.
    AfterDecision,
}

#[derive(Debug, Default)]
pub struct CoordinatorOutbox {
    /// Must be durable before any of `messages` leaves.
    pub records: Vec<CoordinatorRecord>,
    pub messages: Vec<TxEnvelope>,
    pub replies: Vec<(RequestId, Reply)>,
}

struct Transaction {
    /// Kept until decided, to ask silent participants again.
    command: Option<Command>,
    request: Option<RequestId>,
    key: String,
    votes: BTreeMap<NodeId, bool>,
    started: u64,
    decision: Option<bool>,
    acked: BTreeSet<NodeId>,
    sent_at: u64,
    answered: bool,
}

pub struct Coordinator {
    id: NodeId,
    config: CoordinatorConfig,
    epoch: u64,
    next_seq: u64,
    now: u64,
    transactions: BTreeMap<TxnId, Transaction>,
}

impl Coordinator {
    /// Starts a new epoch (emitted as a record to persist) and resumes sending
    /// the decisions `state` holds.
    pub fn new(id: NodeId, config: CoordinatorConfig, state: CoordinatorState, out: &mut CoordinatorOutbox) -> Self {
        let epoch = state.epoch + 1;
        out.records.push(CoordinatorRecord::Epoch(epoch));
        let mut coordinator = Coordinator { id, config, epoch, next_seq: 0, now: 0, transactions: BTreeMap::new() };
        for (txn, commit) in state.undelivered {
            info!("recovered decision txn={txn} {}; sending it again", if commit { "COMMIT" } else { "ABORT" });
            coordinator.transactions.insert(
                txn,
                Transaction {
                    command: None,
                    request: None,
                    key: String::new(),
                    votes: BTreeMap::new(),
                    started: 0,
                    decision: Some(commit),
                    acked: BTreeSet::new(),
                    sent_at: 0,
                    answered: true,
                },
            );
            coordinator.send_decision(txn, commit, out);
        }
        coordinator
    }

    pub fn transactions_in_progress(&self) -> usize {
        self.transactions.len()
    }

    pub fn on_client_command(&mut self, command: Command, out: &mut CoordinatorOutbox) {
        self.next_seq += 1;
        let txn = TxnId { coordinator: self.id, epoch: self.epoch, seq: self.next_seq };
        info!(
            "VOTE_REQUEST txn={txn} key={} to all {} replicas (phase 1, \"prepare\")",
            command.op.key(),
            self.config.participants.len()
        );
        self.transactions.insert(
            txn,
            Transaction {
                command: Some(command.clone()),
                request: Some(command.request_id()),
                key: command.op.key().to_string(),
                votes: BTreeMap::new(),
                started: self.now,
                decision: None,
                acked: BTreeSet::new(),
                sent_at: self.now,
                answered: false,
            },
        );
        for &participant in &self.config.participants {
            let msg = TxMessage::VoteRequest(VoteRequest { txn, command: command.clone() });
            out.messages.push(TxEnvelope { from: self.id, to: participant, msg });
        }
    }

    pub fn on_message(&mut self, from: NodeId, msg: TxMessage, out: &mut CoordinatorOutbox) {
        match msg {
            TxMessage::Vote(vote) => self.on_vote(from, vote, out),
            TxMessage::Ack(ack) => self.on_ack(from, ack, out),
            other => log::debug!("ignoring {} from {from}: not a coordinator message", other.kind()),
        }
    }

    pub fn on_tick(&mut self, out: &mut CoordinatorOutbox) {
        self.now += 1;
        if self.config.stall.is_some() {
            return;
        }
        let timed_out: Vec<(TxnId, String)> = self
            .transactions
            .iter()
            .filter(|(_, t)| t.decision.is_none() && self.now >= t.started + self.config.vote_timeout_ticks)
            .map(|(txn, t)| {
                let silent: Vec<String> = self
                    .config
                    .participants
                    .iter()
                    .filter(|p| !t.votes.contains_key(p))
                    .map(|p| p.to_string())
                    .collect();
                (*txn, format!("replica(s) {} did not vote in time", silent.join(",")))
            })
            .collect();
        for (txn, reason) in timed_out {
            self.decide(txn, false, Some(reason), out);
        }
        for (txn, t) in self.transactions.iter_mut() {
            let (Some(command), None) = (&t.command, t.decision) else { continue };
            if self.now >= t.sent_at + self.config.retry_ticks {
                t.sent_at = self.now;
                for &participant in self.config.participants.iter().filter(|p| !t.votes.contains_key(p)) {
                    let msg = TxMessage::VoteRequest(VoteRequest { txn: *txn, command: command.clone() });
                    out.messages.push(TxEnvelope { from: self.id, to: participant, msg });
                }
            }
        }
        let resend: Vec<(TxnId, bool)> = self
            .transactions
            .iter_mut()
            .filter_map(|(txn, t)| {
                let commit = t.decision?;
                (self.now >= t.sent_at + self.config.retry_ticks).then(|| {
                    t.sent_at = self.now;
                    (*txn, commit)
                })
            })
            .collect();
        for (txn, commit) in resend {
            self.send_decision(txn, commit, out);
        }
    }

    fn on_vote(&mut self, from: NodeId, vote: Vote, out: &mut CoordinatorOutbox) {
        if vote.txn.coordinator != self.id {
            return;
        }
        let Some(t) = self.transactions.get_mut(&vote.txn) else {
            // Not in flight and no undelivered decision: it was never
            // committed (presumed abort), and the voter must be told so.
            if vote.yes {
                info!("ABORT txn={} to={from}: unknown transaction (presumed abort after a restart)", vote.txn);
                let msg = TxMessage::Decision(Decision { txn: vote.txn, commit: false });
                out.messages.push(TxEnvelope { from: self.id, to: from, msg });
            }
            return;
        };
        if self.config.stall.is_some()
            && (t.decision.is_some() || self.config.stall == Some(StallPoint::AfterVoteRequest))
        {
            // A crashed coordinator answers nothing; record the vote only for STATUS.
            t.votes.insert(from, vote.yes);
            return;
        }
        if let Some(commit) = t.decision {
            let msg = TxMessage::Decision(Decision { txn: vote.txn, commit });
            out.messages.push(TxEnvelope { from: self.id, to: from, msg });
            return;
        }
        t.votes.insert(from, vote.yes);
        if !vote.yes {
            let reason = format!("replica {from} voted NO: {}", vote.reason.unwrap_or_default());
            self.decide(vote.txn, false, Some(reason), out);
        } else if t.votes.len() == self.config.participants.len() {
            self.decide(vote.txn, true, None, out);
        }
    }

    fn on_ack(&mut self, from: NodeId, ack: Ack, out: &mut CoordinatorOutbox) {
        let Some(t) = self.transactions.get_mut(&ack.txn) else { return };
        log::debug!("ACK txn={} from={from}", ack.txn);
        t.acked.insert(from);
        if let (false, Some(reply), Some(request)) = (t.answered, ack.reply, t.request) {
            t.answered = true;
            out.replies.push((request, reply));
        }
        if t.acked.len() == self.config.participants.len() {
            info!("ACK txn={} from all replicas; done", ack.txn);
            self.transactions.remove(&ack.txn);
            out.records.push(CoordinatorRecord::Completed { txn: ack.txn });
        }
    }

    fn decide(&mut self, txn: TxnId, commit: bool, reason: Option<String>, out: &mut CoordinatorOutbox) {
        let t = self.transactions.get_mut(&txn).expect("deciding a known transaction");
        assert!(t.decision.is_none(), "txn {txn} decided twice");
        match &reason {
            None => info!("COMMIT txn={txn} key={}: every replica voted YES", t.key),
            Some(why) => warn!("ABORT txn={txn} key={}: {why}", t.key),
        }
        if let (false, Some(request), Some(why)) = (t.answered, t.request, reason) {
            t.answered = true;
            out.replies.push((request, Reply::Rejected(RequestError::Aborted { reason: why })));
        }
        if !commit {
            // Presumed abort: an abort is neither logged nor acknowledged. A
            // participant that voted YES and missed it asks again, and an
            // unknown transaction is answered ABORT; so a replica that stays
            // down costs nothing here.
            self.transactions.remove(&txn);
            if self.config.stall != Some(StallPoint::AfterDecision) {
                self.send_decision(txn, false, out);
            }
            return;
        }
        t.decision = Some(true);
        t.command = None;
        t.sent_at = self.now;
        out.records.push(CoordinatorRecord::Decided { txn, commit: true });
        if self.config.stall == Some(StallPoint::AfterDecision) {
            return;
        }
        self.send_decision(txn, true, out);
    }

    fn send_decision(&self, txn: TxnId, commit: bool, out: &mut CoordinatorOutbox) {
        let acked = self.transactions.get(&txn).map(|t| t.acked.clone()).unwrap_or_default();
        for &participant in self.config.participants.iter().filter(|p| !acked.contains(p)) {
            let msg = TxMessage::Decision(Decision { txn, commit });
            out.messages.push(TxEnvelope { from: self.id, to: participant, msg });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op;

    fn config() -> CoordinatorConfig {
        CoordinatorConfig { participants: vec![1, 2, 3], vote_timeout_ticks: 5, retry_ticks: 3, stall: None }
    }
    fn command() -> Command {
        Command { client_id: 4, seq: 1, op: Op::Put { key: "k".into(), value: "v".into() } }
    }
    fn started() -> (Coordinator, TxnId) {
        let mut out = CoordinatorOutbox::default();
        let mut c = Coordinator::new(1, config(), CoordinatorState::default(), &mut out);
        assert_eq!(out.records, vec![CoordinatorRecord::Epoch(1)]);
        c.on_client_command(command(), &mut out);
        (c, TxnId { coordinator: 1, epoch: 1, seq: 1 })
    }
    fn vote(c: &mut Coordinator, from: NodeId, txn: TxnId, yes: bool) -> CoordinatorOutbox {
        let mut out = CoordinatorOutbox::default();
        c.on_message(from, TxMessage::Vote(Vote { txn, yes, reason: None }), &mut out);
        out
    }
    fn decisions(out: &CoordinatorOutbox) -> Vec<(NodeId, bool)> {
        out.messages
            .iter()
            .filter_map(|e| match &e.msg {
                TxMessage::Decision(d) => Some((e.to, d.commit)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn all_yes_commits_durably_before_sending_and_the_first_ack_answers_the_client() {
        let (mut c, txn) = started();
        assert!(vote(&mut c, 1, txn, true).messages.is_empty());
        vote(&mut c, 2, txn, true);
        let out = vote(&mut c, 3, txn, true);
        assert_eq!(out.records, vec![CoordinatorRecord::Decided { txn, commit: true }]);
        assert_eq!(decisions(&out), vec![(1, true), (2, true), (3, true)]);
        let mut out = CoordinatorOutbox::default();
        c.on_message(2, TxMessage::Ack(Ack { txn, reply: Some(Reply::Stored) }), &mut out);
        assert_eq!(out.replies, vec![((4, 1), Reply::Stored)]);
        c.on_message(1, TxMessage::Ack(Ack { txn, reply: Some(Reply::Stored) }), &mut out);
        c.on_message(3, TxMessage::Ack(Ack { txn, reply: Some(Reply::Stored) }), &mut out);
        assert_eq!(out.replies.len(), 1, "the client is answered once");
        assert_eq!(out.records, vec![CoordinatorRecord::Completed { txn }]);
    }

    #[test]
    fn one_no_or_one_silent_participant_aborts_with_a_reason() {
        let (mut c, txn) = started();
        let out = vote(&mut c, 2, txn, false);
        assert_eq!(decisions(&out), vec![(1, false), (2, false), (3, false)]);
        let Reply::Rejected(RequestError::Aborted { reason }) = &out.replies[0].1 else { panic!() };
        assert!(reason.contains("replica 2 voted NO"));

        let (mut c, txn) = started();
        vote(&mut c, 1, txn, true);
        vote(&mut c, 2, txn, true);
        let mut out = CoordinatorOutbox::default();
        for _ in 0..5 {
            c.on_tick(&mut out);
        }
        assert!(out.records.is_empty(), "presumed abort: an abort is not logged");
        assert_eq!(decisions(&out), vec![(1, false), (2, false), (3, false)]);
        let Reply::Rejected(RequestError::Aborted { reason }) = &out.replies[0].1 else { panic!() };
        assert!(reason.contains("replica(s) 3 did not vote"), "{reason}");
        assert_eq!(c.transactions_in_progress(), 0, "a silent replica must not pin the transaction");
        // Its late YES is answered from the presumption.
        assert_eq!(decisions(&vote(&mut c, 3, txn, true)), vec![(3, false)]);
    }

    #[test]
    fn a_restarted_coordinator_resends_its_decisions_and_presumes_abort_for_the_rest() {
        let mut state = CoordinatorState::default();
        let committed = TxnId { coordinator: 1, epoch: 1, seq: 1 };
        state.apply(&CoordinatorRecord::Epoch(1));
        state.apply(&CoordinatorRecord::Decided { txn: committed, commit: true });
        let mut out = CoordinatorOutbox::default();
        let mut c = Coordinator::new(1, config(), state, &mut out);
        assert_eq!(out.records, vec![CoordinatorRecord::Epoch(2)]);
        assert_eq!(decisions(&out), vec![(1, true), (2, true), (3, true)]);
        let forgotten = TxnId { coordinator: 1, epoch: 1, seq: 2 };
        assert_eq!(decisions(&vote(&mut c, 2, forgotten, true)), vec![(2, false)]);
        assert_eq!(decisions(&vote(&mut c, 2, committed, true)), vec![(2, true)]);
    }
}
