//! The acceptor: remembers the highest ballot it promised and, per slot, the
//! value it accepted last. Every change is emitted as a record that the
//! runtime makes durable before it sends the replies (persist, then answer).

use super::ballot::{Ballot, NodeId, Slot};
use super::messages::*;
use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One durable change. Replaying the records in order rebuilds the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcceptorRecord {
    Promised(Ballot),
    Accepted {
        slot: Slot,
        ballot: Ballot,
        value: SlotValue,
    },
    /// Slots below `log_start` are decided and held in a learner snapshot.
    Truncated {
        log_start: Slot,
    },
    /// This acceptor lost its state and rejoined (`--rejoin`): it must not
    /// vote until `RebuildFinished` (Paxos Made Live, section 5.1).
    RebuildStarted,
    RebuildFinished,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptorState {
    pub promised: Ballot,
    pub log_start: Slot,
    pub accepted: BTreeMap<Slot, (Ballot, SlotValue)>,
    /// Rejoined after losing its disk and not yet safe to vote.
    pub rebuilding: bool,
}

impl AcceptorState {
    /// The single place where state changes, used live and on recovery alike.
    pub fn apply(&mut self, record: &AcceptorRecord) {
        match record {
            AcceptorRecord::Promised(ballot) => self.promised = self.promised.max(*ballot),
            AcceptorRecord::Accepted { slot, ballot, value } => {
                self.promised = self.promised.max(*ballot);
                if *slot >= self.log_start {
                    self.accepted.insert(*slot, (*ballot, value.clone()));
                }
            }
            AcceptorRecord::Truncated { log_start } => {
                if *log_start > self.log_start {
                    self.log_start = *log_start;
                    self.accepted = self.accepted.split_off(log_start);
                }
            }
            AcceptorRecord::RebuildStarted => self.rebuilding = true,
            AcceptorRecord::RebuildFinished => self.rebuilding = false,
        }
    }

    /// The records that rebuild exactly this state (used to compact a log file).
    pub fn to_records(&self) -> Vec<AcceptorRecord> {
        let mut records =
            vec![AcceptorRecord::Promised(self.promised), AcceptorRecord::Truncated { log_start: self.log_start }];
        records.extend(self.accepted.iter().map(|(slot, (ballot, value))| AcceptorRecord::Accepted {
            slot: *slot,
            ballot: *ballot,
            value: value.clone(),
        }));
        if self.rebuilding {
            records.push(AcceptorRecord::RebuildStarted);
        }
        records
    }
}

#[derive(Debug, Default)]
pub struct AcceptorOutbox {
    /// Must be durable before any of `messages` leaves.
    pub records: Vec<AcceptorRecord>,
    pub messages: Vec<Envelope>,
}

/// How far a rejoined acceptor is towards voting again. Kept in memory only:
/// a restart begins the wait again, which is only more cautious.
#[derive(Debug, Default)]
struct Rebuild {
    ticks: u64,
    /// Highest ballot in any Prepare, Accept or Heartbeat seen while silent.
    ballot_seen: Ballot,
    /// Highest slot of any Accept seen while silent.
    slot_seen: Option<Slot>,
    /// Set once the quiet period is over: slots from here on were proposed
    /// after this acceptor began rebuilding.
    horizon: Option<Slot>,
    /// The first slot at or above `horizon` seen proposed.
    witnessed: Option<Slot>,
    learner_next_slot: Slot,
}

pub struct Acceptor {
    id: NodeId,
    state: AcceptorState,
    /// Cuts a Promise into chunks that fit a frame.
    promise_bytes_max: usize,
    rebuild: Rebuild,
    /// Ticks a rejoined acceptor stays silent before it looks for an
    /// instance to witness: longer than any phase 1 that might still hold
    /// a promise it forgot.
    rebuild_quiet_ticks: u64,
}

impl Acceptor {
    pub fn new(id: NodeId, state: AcceptorState, promise_bytes_max: usize) -> Self {
        Acceptor { id, state, promise_bytes_max, rebuild: Rebuild::default(), rebuild_quiet_ticks: 200 }
    }

    pub fn with_rebuild_quiet_ticks(mut self, ticks: u64) -> Self {
        self.rebuild_quiet_ticks = ticks;
        self
    }

    pub fn state(&self) -> &AcceptorState {
        &self.state
    }

    /// True while rejoining: it answers no Prepare, Accept or Heartbeat.
    pub fn is_rebuilding(&self) -> bool {
        self.state.rebuilding
    }

    /// Begins a rebuild: this acceptor lost what it promised and accepted.
    pub fn start_rebuild(&mut self, out: &mut AcceptorOutbox) {
        if !self.state.rebuilding {
            self.record(AcceptorRecord::RebuildStarted, out);
        }
        self.rebuild = Rebuild::default();
    }

    pub fn on_tick(&mut self, out: &mut AcceptorOutbox) {
        if !self.state.rebuilding {
            return;
        }
        self.rebuild.ticks += 1;
        if self.rebuild.horizon.is_none() && self.rebuild.ticks >= self.rebuild_quiet_ticks {
            let horizon = self.rebuild.slot_seen.map_or(0, |s| s + 1).max(self.rebuild.learner_next_slot);
            info!("REBUILD quiet period over; waiting to witness an instance at slot {horizon} or later");
            self.rebuild.horizon = Some(horizon);
        }
        self.maybe_finish_rebuild(out);
    }

    /// The local learner has applied every slot below `next_slot`.
    pub fn on_learner_progress(&mut self, next_slot: Slot, out: &mut AcceptorOutbox) {
        self.rebuild.learner_next_slot = self.rebuild.learner_next_slot.max(next_slot);
        self.maybe_finish_rebuild(out);
    }

    /// Paxos Made Live, section 5.1: a replica that lost its disk may vote
    /// again once it has seen a whole instance that began after it started
    /// rebuilding decided (and has applied it): every promise it forgot
    /// belonged to a round that has since ended. It then promises the highest
    /// ballot it saw, so it never accepts below a round it watched.
    fn maybe_finish_rebuild(&mut self, out: &mut AcceptorOutbox) {
        if !self.state.rebuilding {
            return;
        }
        let Some(witnessed) = self.rebuild.witnessed else { return };
        if self.rebuild.learner_next_slot <= witnessed {
            return;
        }
        let ballot = self.rebuild.ballot_seen;
        if ballot > self.state.promised {
            self.record(AcceptorRecord::Promised(ballot), out);
        }
        self.record(AcceptorRecord::RebuildFinished, out);
        info!("REBUILD finished: slot {witnessed} was proposed and decided after rejoining; voting again, promised {ballot}");
    }

    /// The highest ballot seen, for the local proposer once the rebuild ends.
    pub fn ballot_seen(&self) -> Ballot {
        self.rebuild.ballot_seen.max(self.state.promised)
    }

    fn watch_while_rebuilding(&mut self, from: NodeId, msg: &Message) {
        let (ballot, slot) = match msg {
            Message::Prepare(prepare) => (prepare.ballot, None),
            Message::Accept(accept) => (accept.ballot, Some(accept.slot)),
            Message::Heartbeat(heartbeat) => (heartbeat.ballot, None),
            _ => return,
        };
        debug!("REBUILDING: not answering {} from {from}", msg.kind());
        let rebuild = &mut self.rebuild;
        rebuild.ballot_seen = rebuild.ballot_seen.max(ballot);
        if let Some(slot) = slot {
            rebuild.slot_seen = rebuild.slot_seen.max(Some(slot));
            if rebuild.witnessed.is_none() && rebuild.horizon.is_some_and(|h| slot >= h) {
                rebuild.witnessed = Some(slot);
            }
        }
    }

    pub fn on_message(&mut self, from: NodeId, msg: Message, out: &mut AcceptorOutbox) {
        // A proposer only ever speaks with its own ballots, and no real round
        // comes near ROUND_MAX: anything else is refused before it can raise
        // a promise (a promise never goes down, so a bad one would be forever).
        if let Some(ballot) = msg.ballot() {
            let own =
                !matches!(msg, Message::Prepare(_) | Message::Accept(_) | Message::Chosen(_) | Message::Heartbeat(_))
                    || ballot.node_id == from;
            if !ballot.is_sane() || !own {
                warn!("refusing {} from {from} with ballot {ballot}", msg.kind());
                return;
            }
        }
        if self.state.rebuilding {
            self.watch_while_rebuilding(from, &msg);
            return;
        }
        match msg {
            Message::Prepare(prepare) => self.on_prepare(from, prepare, out),
            Message::Accept(accept) => self.on_accept(from, accept, out),
            Message::Chosen(chosen) => self.on_chosen(chosen, out),
            Message::Heartbeat(heartbeat) => {
                let reply = if heartbeat.ballot < self.state.promised {
                    Message::Nack(Nack { ballot: heartbeat.ballot, promised: self.state.promised })
                } else {
                    Message::HeartbeatAck(HeartbeatAck { ballot: heartbeat.ballot, read_round: heartbeat.read_round })
                };
                self.send(from, reply, out);
            }
            other => debug!("ignoring {} from {from}: not an acceptor message", other.kind()),
        }
    }

    /// Forgets slots below `log_start`, once a durable snapshot holds them.
    pub fn truncate(&mut self, log_start: Slot, out: &mut AcceptorOutbox) {
        if log_start > self.state.log_start {
            self.record(AcceptorRecord::Truncated { log_start }, out);
        }
    }

    fn on_prepare(&mut self, from: NodeId, prepare: Prepare, out: &mut AcceptorOutbox) {
        if prepare.ballot < self.state.promised {
            info!("NACK PREPARE ballot={} from={from}: promised {}", prepare.ballot, self.state.promised);
            let nack = Nack { ballot: prepare.ballot, promised: self.state.promised };
            return self.send(from, Message::Nack(nack), out);
        }
        if prepare.ballot > self.state.promised {
            self.record(AcceptorRecord::Promised(prepare.ballot), out);
        }
        let first_slot = prepare.first_slot.max(self.state.log_start);
        let mut accepted = Vec::new();
        let mut bytes = 0;
        let mut more_from = None;
        for (slot, (ballot, value)) in self.state.accepted.range(first_slot..) {
            if bytes > 0 && bytes + value.wire_bytes() > self.promise_bytes_max {
                more_from = Some(*slot);
                break;
            }
            bytes += value.wire_bytes();
            accepted.push(AcceptedEntry { slot: *slot, ballot: *ballot, value: value.clone() });
        }
        info!(
            "PROMISE ballot={} to={from} first_slot={} entries={} log_start={}",
            prepare.ballot,
            prepare.first_slot,
            accepted.len(),
            self.state.log_start
        );
        let promise = Promise {
            ballot: prepare.ballot,
            first_slot: prepare.first_slot,
            log_start: self.state.log_start,
            accepted,
            more_from,
        };
        self.send(from, Message::Promise(promise), out);
    }

    fn on_accept(&mut self, from: NodeId, accept: Accept, out: &mut AcceptorOutbox) {
        if accept.ballot < self.state.promised {
            debug!(
                "NACK ACCEPT ballot={} slot={} from={from}: promised {}",
                accept.ballot, accept.slot, self.state.promised
            );
            let nack = Nack { ballot: accept.ballot, promised: self.state.promised };
            return self.send(from, Message::Nack(nack), out);
        }
        // A slot below log_start is decided; by Paxos any proposal at a ballot
        // this high carries the chosen value, so acknowledging it is safe.
        let already = self.state.accepted.get(&accept.slot).map(|(b, _)| *b) == Some(accept.ballot);
        if accept.slot >= self.state.log_start && !already {
            debug!("ACCEPTED ballot={} slot={} value={}", accept.ballot, accept.slot, accept.value.describe());
            self.record(
                AcceptorRecord::Accepted { slot: accept.slot, ballot: accept.ballot, value: accept.value },
                out,
            );
        }
        self.send(from, Message::Accepted(Accepted { ballot: accept.ballot, slot: accept.slot }), out);
    }

    fn record(&mut self, record: AcceptorRecord, out: &mut AcceptorOutbox) {
        self.state.apply(&record);
        out.records.push(record);
    }

    /// Hands the chosen value to this replica's learner if this acceptor holds
    /// the value `chosen.ballot` proposed for the slot; else the learner
    /// catches up from a peer. Sent after this batch's records are durable,
    /// like every other message, which a chosen value does not need but costs
    /// only the learner's wait for the sync.
    fn on_chosen(&mut self, chosen: Chosen, out: &mut AcceptorOutbox) {
        match self.state.accepted.get(&chosen.slot) {
            Some((ballot, value)) if *ballot == chosen.ballot => {
                let decide = Decide { slot: chosen.slot, value: value.clone() };
                self.send(self.id, Message::Handoff(decide), out);
            }
            _ => debug!("CHOSEN slot={} ballot={}: not held here; the learner catches up", chosen.slot, chosen.ballot),
        }
    }

    fn send(&self, to: NodeId, msg: Message, out: &mut AcceptorOutbox) {
        out.messages.push(Envelope { from: self.id, to, msg });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(round: u64, node: NodeId) -> Ballot {
        Ballot::new(round, node)
    }
    fn value(n: u64) -> SlotValue {
        use crate::kv::{Command, Op};
        SlotValue::batch(vec![Command { client_id: n, seq: 1, op: Op::Get { key: "k".into() } }])
    }
    fn step(acceptor: &mut Acceptor, from: NodeId, msg: Message) -> AcceptorOutbox {
        let mut out = AcceptorOutbox::default();
        acceptor.on_message(from, msg, &mut out);
        out
    }

    #[test]
    fn prepare_promises_persists_and_reports_accepted_values() {
        let mut acceptor = Acceptor::new(3, AcceptorState::default(), 1 << 20);
        step(&mut acceptor, 1, Message::Accept(Accept { ballot: b(1, 1), slot: 4, value: value(1) }));
        let out = step(&mut acceptor, 2, Message::Prepare(Prepare { ballot: b(2, 2), first_slot: 0 }));
        assert_eq!(out.records, vec![AcceptorRecord::Promised(b(2, 2))]);
        assert_eq!(
            out.messages,
            vec![Envelope {
                from: 3,
                to: 2,
                msg: Message::Promise(Promise {
                    ballot: b(2, 2),
                    first_slot: 0,
                    log_start: 0,
                    accepted: vec![AcceptedEntry { slot: 4, ballot: b(1, 1), value: value(1) }],
                    more_from: None,
                }),
            }]
        );
    }

    #[test]
    fn lower_ballots_are_refused_with_the_promised_ballot_and_nothing_persisted() {
        let mut acceptor = Acceptor::new(3, AcceptorState::default(), 1 << 20);
        step(&mut acceptor, 2, Message::Prepare(Prepare { ballot: b(5, 2), first_slot: 0 }));
        for msg in [
            Message::Prepare(Prepare { ballot: b(4, 1), first_slot: 0 }),
            Message::Accept(Accept { ballot: b(5, 1), slot: 0, value: value(1) }),
            Message::Heartbeat(Heartbeat { ballot: b(1, 1), read_round: 0 }),
        ] {
            let out = step(&mut acceptor, 1, msg.clone());
            assert!(out.records.is_empty(), "{msg:?} persisted something");
            let Message::Nack(nack) = &out.messages[0].msg else { panic!("expected a nack for {msg:?}") };
            assert_eq!(nack.promised, b(5, 2));
        }
    }

    #[test]
    fn accept_persists_once_and_acknowledges_duplicates() {
        let mut acceptor = Acceptor::new(3, AcceptorState::default(), 1 << 20);
        let accept = Message::Accept(Accept { ballot: b(1, 1), slot: 0, value: value(9) });
        let first = step(&mut acceptor, 1, accept.clone());
        assert_eq!(first.records.len(), 1);
        let again = step(&mut acceptor, 1, accept);
        assert!(again.records.is_empty());
        assert_eq!(again.messages, first.messages);
        assert_eq!(acceptor.state().promised, b(1, 1));
    }

    #[test]
    fn chosen_hands_on_only_the_value_of_the_ballot_that_chose_it() {
        let mut acceptor = Acceptor::new(3, AcceptorState::default(), 1 << 20);
        step(&mut acceptor, 1, Message::Accept(Accept { ballot: b(1, 1), slot: 0, value: value(9) }));
        let handed = step(&mut acceptor, 1, Message::Chosen(Chosen { ballot: b(1, 1), slot: 0 }));
        let decide = Message::Handoff(Decide { slot: 0, value: value(9) });
        assert_eq!(handed.messages, vec![Envelope { from: 3, to: 3, msg: decide }]);
        assert!(handed.records.is_empty());
        // Another ballot chose it, or the slot was never accepted here: the learner catches up instead.
        assert!(step(&mut acceptor, 2, Message::Chosen(Chosen { ballot: b(2, 2), slot: 0 })).messages.is_empty());
        assert!(step(&mut acceptor, 1, Message::Chosen(Chosen { ballot: b(1, 1), slot: 1 })).messages.is_empty());
        // Only a proposer may name its own ballot.
        assert!(step(&mut acceptor, 2, Message::Chosen(Chosen { ballot: b(1, 1), slot: 0 })).messages.is_empty());
    }

    #[test]
    fn promises_are_cut_into_chunks_that_fit_a_frame() {
        let mut acceptor = Acceptor::new(1, AcceptorState::default(), 60);
        for slot in 0..5 {
            step(&mut acceptor, 1, Message::Accept(Accept { ballot: b(1, 1), slot, value: value(slot) }));
        }
        let out = step(&mut acceptor, 2, Message::Prepare(Prepare { ballot: b(2, 2), first_slot: 0 }));
        let Message::Promise(promise) = &out.messages[0].msg else { panic!() };
        assert!(promise.accepted.len() < 5);
        assert_eq!(promise.more_from, Some(promise.accepted.len() as Slot));
    }

    #[test]
    fn truncation_forgets_decided_slots_and_replay_rebuilds_the_same_state() {
        let mut acceptor = Acceptor::new(1, AcceptorState::default(), 1 << 20);
        let mut records = Vec::new();
        for slot in 0..4 {
            records.extend(
                step(&mut acceptor, 1, Message::Accept(Accept { ballot: b(1, 1), slot, value: value(slot) })).records,
            );
        }
        let mut out = AcceptorOutbox::default();
        acceptor.truncate(2, &mut out);
        records.extend(out.records);
        assert_eq!(acceptor.state().accepted.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        let mut replayed = AcceptorState::default();
        records.iter().for_each(|r| replayed.apply(r));
        assert_eq!(&replayed, acceptor.state());
        let mut compacted = AcceptorState::default();
        acceptor.state().to_records().iter().for_each(|r| compacted.apply(r));
        assert_eq!(&compacted, acceptor.state());
    }

    /// Paxos Made Live 5.1: a rejoined acceptor stays silent until it has seen
    /// an instance proposed after its quiet period decided, then promises the
    /// highest ballot it saw.
    #[test]
    fn a_rebuilding_acceptor_is_silent_until_it_witnesses_a_later_instance_decided() {
        let mut acceptor = Acceptor::new(3, AcceptorState::default(), 1 << 20).with_rebuild_quiet_ticks(5);
        let mut out = AcceptorOutbox::default();
        acceptor.start_rebuild(&mut out);
        assert_eq!(out.records, vec![AcceptorRecord::RebuildStarted]);
        let mut out = AcceptorOutbox::default();
        for msg in [
            Message::Prepare(Prepare { ballot: b(7, 1), first_slot: 0 }),
            Message::Accept(Accept { ballot: b(7, 1), slot: 10, value: value(1) }),
            Message::Heartbeat(Heartbeat { ballot: b(7, 1), read_round: 0 }),
        ] {
            acceptor.on_message(1, msg, &mut out);
        }
        assert!(out.records.is_empty() && out.messages.is_empty(), "a rebuilding acceptor answered: {out:?}");
        for _ in 0..5 {
            acceptor.on_tick(&mut out);
        }
        // Slot 10 was in flight before the quiet period ended: it proves nothing.
        acceptor.on_learner_progress(11, &mut out);
        assert!(acceptor.is_rebuilding());
        acceptor.on_message(2, Message::Accept(Accept { ballot: b(8, 2), slot: 11, value: value(2) }), &mut out);
        assert!(out.messages.is_empty());
        acceptor.on_learner_progress(12, &mut out);
        assert!(!acceptor.is_rebuilding());
        assert_eq!(out.records, vec![AcceptorRecord::Promised(b(8, 2)), AcceptorRecord::RebuildFinished]);
        let late = step(&mut acceptor, 1, Message::Accept(Accept { ballot: b(7, 1), slot: 12, value: value(3) }));
        assert!(matches!(late.messages[0].msg, Message::Nack(_)), "it must not accept below a ballot it watched");
    }

    #[test]
    fn ballots_beyond_any_real_round_or_not_the_senders_own_are_refused_without_a_trace() {
        let mut acceptor = Acceptor::new(3, AcceptorState::default(), 1 << 20);
        for (from, msg) in [
            (1, Message::Prepare(Prepare { ballot: b(u64::MAX, 1), first_slot: 0 })),
            (1, Message::Prepare(Prepare { ballot: b(Ballot::ROUND_MAX + 1, 1), first_slot: 0 })),
            (1, Message::Prepare(Prepare { ballot: b(9, 2), first_slot: 0 })),
            (2, Message::Accept(Accept { ballot: b(1000, 9), slot: 0, value: value(1) })),
            (1, Message::Heartbeat(Heartbeat { ballot: b(u64::MAX, 1), read_round: 0 })),
        ] {
            let out = step(&mut acceptor, from, msg.clone());
            assert!(out.records.is_empty() && out.messages.is_empty(), "{msg:?} from {from} was let in");
        }
        assert_eq!(acceptor.state().promised, Ballot::ZERO);
        let out = step(&mut acceptor, 1, Message::Prepare(Prepare { ballot: b(Ballot::ROUND_MAX, 1), first_slot: 0 }));
        assert_eq!(out.records, vec![AcceptorRecord::Promised(b(Ballot::ROUND_MAX, 1))]);
    }
}
