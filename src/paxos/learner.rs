//! The learner: applies decided slots to the key-value store strictly in slot
//! order, answers catch-up requests from lagging peers, and asks peers for
//! what it missed (while down, restarted or cut off).

use super::ballot::{NodeId, Slot};
use super::messages::*;
use crate::kv::{KvStore, Reply, RequestId};
use log::{debug, error, info, warn};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct LearnerConfig {
    pub cluster: Vec<NodeId>,
    /// How often an idle learner asks a peer whether it missed anything.
    pub catchup_poll_ticks: u64,
    /// How soon a learner with a visible gap asks again.
    pub catchup_retry_ticks: u64,
    pub snapshot_interval_slots: u64,
    /// Applied slots kept in memory to serve peers; older ones need a snapshot.
    pub retain_slots: u64,
    /// Decisions further ahead than this are dropped and fetched later.
    pub buffer_slots_max: u64,
    pub catchup_bytes_max: usize,
    /// Report every applied slot in the outbox (the simulator checks them).
    pub report_applied: bool,
}

impl LearnerConfig {
    pub fn for_cluster(cluster: Vec<NodeId>) -> Self {
        LearnerConfig {
            cluster,
            catchup_poll_ticks: 50,
            catchup_retry_ticks: 10,
            snapshot_interval_slots: 10_000,
            retain_slots: 20_000,
            buffer_slots_max: 50_000,
            catchup_bytes_max: 1 << 20,
            report_applied: false,
        }
    }
}

#[derive(Debug, Default)]
pub struct LearnerOutbox {
    pub messages: Vec<Envelope>,
    pub replies: Vec<(RequestId, Reply)>,
    /// To be written durably; afterwards the local acceptor may forget the
    /// slots below `snapshot.next_slot`.
    pub snapshot: Option<Snapshot>,
    pub applied: Vec<(Slot, SlotValue)>,
    /// A slot learned two ways: agreement is broken, the replica must stop.
    pub violation: Option<String>,
}

pub struct Learner {
    id: NodeId,
    config: LearnerConfig,
    now: u64,
    next_slot: Slot,
    store: KvStore,
    decided_ahead: BTreeMap<Slot, SlotValue>,
    retained: BTreeMap<Slot, SlotValue>,
    snapshot_slot: Slot,
    catchup_sent_at: u64,
    catchup_cursor: usize,
}

impl Learner {
    pub fn new(id: NodeId, config: LearnerConfig, snapshot: Snapshot) -> Self {
        Learner {
            id,
            config,
            now: 0,
            next_slot: snapshot.next_slot,
            store: snapshot.store,
            decided_ahead: BTreeMap::new(),
            retained: BTreeMap::new(),
            snapshot_slot: snapshot.next_slot,
            catchup_sent_at: 0,
            catchup_cursor: id as usize,
        }
    }

    /// Every slot below this one has been applied.
    pub fn next_slot(&self) -> Slot {
        self.next_slot
    }

    /// Highest slot known decided (applied or waiting for a gap to fill).
    pub fn decided_through(&self) -> Option<Slot> {
        self.decided_ahead.last_key_value().map(|(s, _)| *s).or(self.next_slot.checked_sub(1))
    }

    /// The last `n` applied slots and what they held, newest first.
    pub fn recent_decisions(&self, n: usize) -> Vec<(Slot, String)> {
        self.retained.iter().rev().take(n).map(|(slot, value)| (*slot, value.describe())).collect()
    }

    pub fn store(&self) -> &KvStore {
        &self.store
    }

    pub fn on_tick(&mut self, out: &mut LearnerOutbox) {
        self.now += 1;
        let waiting = self.now.saturating_sub(self.catchup_sent_at);
        let has_gap = !self.decided_ahead.is_empty();
        if (has_gap && waiting >= self.config.catchup_retry_ticks) || waiting >= self.config.catchup_poll_ticks {
            self.request_catchup(out);
        }
    }

    pub fn on_message(&mut self, from: NodeId, msg: Message, out: &mut LearnerOutbox) {
        match msg {
            Message::Decide(decide) => {
                self.learn(decide.slot, decide.value, out);
                self.apply_ready(out);
            }
            Message::CatchupRequest(request) => self.serve_catchup(from, request.next_slot, out),
            Message::CatchupReply(reply) => {
                let before = self.next_slot;
                if let Some(snapshot) = reply.snapshot {
                    if snapshot.crc32() != reply.snapshot_crc32 {
                        warn!("refusing a snapshot from {from}: its checksum does not match its contents");
                        return;
                    }
                    self.install(from, snapshot, out);
                }
                let more = !reply.entries.is_empty();
                for (slot, value) in reply.entries {
                    self.learn(slot, value, out);
                }
                self.apply_ready(out);
                if more && self.next_slot > before {
                    debug!("caught up from {from}: slot {before} -> {}", self.next_slot);
                    self.request_catchup(out);
                }
            }
            other => debug!("ignoring {} from {from}: not a learner message", other.kind()),
        }
    }

    fn learn(&mut self, slot: Slot, value: SlotValue, out: &mut LearnerOutbox) {
        if slot >= self.next_slot.saturating_add(self.config.buffer_slots_max) {
            return;
        }
        let known = if slot < self.next_slot { self.retained.get(&slot) } else { self.decided_ahead.get(&slot) };
        if let Some(known) = known {
            if *known != value {
                // Only reachable when acceptors forget (amnesia mode) or a disk
                // lies: Paxos never decides a slot two ways. Applying on would
                // spread the damage, so the replica stops.
                let violation =
                    format!("AGREEMENT VIOLATED at slot {slot}: {} vs {}", known.describe(), value.describe());
                error!("{violation}");
                out.violation.get_or_insert(violation);
            }
            return;
        }
        if slot < self.next_slot {
            return;
        }
        self.decided_ahead.insert(slot, value);
    }

    fn apply_ready(&mut self, out: &mut LearnerOutbox) {
        while let Some(value) = self.decided_ahead.remove(&self.next_slot) {
            let slot = self.next_slot;
            if let SlotValue::Batch(commands) = &value {
                for command in commands {
                    let reply = self.store.apply(command);
                    out.replies.push((command.request_id(), reply));
                }
            }
            if self.config.report_applied {
                out.applied.push((slot, value.clone()));
            }
            self.retained.insert(slot, value);
            self.next_slot += 1;
        }
        while let Some((&oldest, _)) = self.retained.first_key_value() {
            if oldest + self.config.retain_slots >= self.next_slot {
                break;
            }
            self.retained.pop_first();
        }
        if self.next_slot >= self.snapshot_slot + self.config.snapshot_interval_slots {
            self.snapshot_slot = self.next_slot;
            out.snapshot = Some(self.snapshot());
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot { next_slot: self.next_slot, store: self.store.clone() }
    }

    fn install(&mut self, from: NodeId, snapshot: Snapshot, out: &mut LearnerOutbox) {
        if snapshot.next_slot <= self.next_slot {
            return;
        }
        info!("installing snapshot from {from}: slot {} -> {}", self.next_slot, snapshot.next_slot);
        self.next_slot = snapshot.next_slot;
        self.store = snapshot.store.clone();
        self.retained.clear();
        self.decided_ahead = self.decided_ahead.split_off(&self.next_slot);
        self.snapshot_slot = self.next_slot;
        out.snapshot = Some(snapshot);
    }

    fn serve_catchup(&self, to: NodeId, from_slot: Slot, out: &mut LearnerOutbox) {
        if from_slot >= self.next_slot {
            return;
        }
        let retained_from = self.retained.first_key_value().map_or(self.next_slot, |(s, _)| *s);
        let reply = if from_slot < retained_from {
            // Served from state that was loaded through checksums or applied
            // from decisions: never from a file that failed its checks.
            let snapshot = self.snapshot();
            CatchupReply { snapshot_crc32: snapshot.crc32(), snapshot: Some(snapshot), entries: Vec::new() }
        } else {
            let mut entries = Vec::new();
            let mut bytes = 0;
            for (slot, value) in self.retained.range(from_slot..) {
                if bytes > 0 && bytes + value.approx_bytes() > self.config.catchup_bytes_max {
                    break;
                }
                bytes += value.approx_bytes();
                entries.push((*slot, value.clone()));
            }
            CatchupReply { snapshot: None, snapshot_crc32: 0, entries }
        };
        out.messages.push(Envelope { from: self.id, to, msg: Message::CatchupReply(reply) });
    }

    fn request_catchup(&mut self, out: &mut LearnerOutbox) {
        let peers: Vec<NodeId> = self.config.cluster.iter().copied().filter(|&p| p != self.id).collect();
        if peers.is_empty() {
            return;
        }
        self.catchup_cursor = (self.catchup_cursor + 1) % peers.len();
        self.catchup_sent_at = self.now;
        out.messages.push(Envelope {
            from: self.id,
            to: peers[self.catchup_cursor],
            msg: Message::CatchupRequest(CatchupRequest { next_slot: self.next_slot }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, Op};

    fn put(client_id: u64, key: &str) -> SlotValue {
        SlotValue::Batch(vec![Command { client_id, seq: 1, op: Op::Put { key: key.into(), value: "v".into() } }])
    }
    fn decide(slot: Slot, value: SlotValue) -> Message {
        Message::Decide(Decide { slot, value })
    }

    #[test]
    fn applies_strictly_in_slot_order_and_asks_for_gaps() {
        let mut config = LearnerConfig::for_cluster(vec![1, 2, 3]);
        config.report_applied = true;
        let mut learner = Learner::new(1, config, Snapshot::default());
        let mut out = LearnerOutbox::default();
        learner.on_message(2, decide(1, put(11, "b")), &mut out);
        assert!(out.applied.is_empty(), "slot 1 applied before slot 0");
        for _ in 0..10 {
            learner.on_tick(&mut out);
        }
        assert!(
            out.messages.iter().any(|e| matches!(e.msg, Message::CatchupRequest(CatchupRequest { next_slot: 0 }))),
            "a learner with a gap must ask a peer"
        );
        learner.on_message(2, decide(0, put(10, "a")), &mut out);
        assert_eq!(out.applied.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(out.replies.len(), 2);
        assert_eq!(learner.next_slot(), 2);
    }

    #[test]
    fn a_peer_far_behind_gets_a_snapshot_then_the_rest() {
        let mut config = LearnerConfig::for_cluster(vec![1, 2]);
        config.retain_slots = 2;
        let mut ahead = Learner::new(1, config.clone(), Snapshot::default());
        let mut out = LearnerOutbox::default();
        for slot in 0..6 {
            ahead.on_message(1, decide(slot, put(slot, &format!("k{slot}"))), &mut out);
        }
        let mut behind = Learner::new(2, config, Snapshot::default());
        let mut reply = LearnerOutbox::default();
        ahead.on_message(2, Message::CatchupRequest(CatchupRequest { next_slot: 0 }), &mut reply);
        let Message::CatchupReply(catchup) = &reply.messages[0].msg else { panic!("expected a catch-up reply") };
        assert!(catchup.snapshot.is_some());
        let mut installed = LearnerOutbox::default();
        behind.on_message(1, reply.messages[0].msg.clone(), &mut installed);
        assert_eq!(behind.next_slot(), 6);
        assert_eq!(behind.store(), ahead.store());
        assert!(installed.snapshot.is_some(), "an installed snapshot must be persisted");
    }

    #[test]
    fn a_slot_learned_two_ways_is_reported_as_a_violation_not_applied_over() {
        let mut learner = Learner::new(1, LearnerConfig::for_cluster(vec![1, 2, 3]), Snapshot::default());
        let mut out = LearnerOutbox::default();
        learner.on_message(2, decide(0, put(10, "a")), &mut out);
        learner.on_message(2, decide(2, put(12, "c")), &mut out);
        assert!(out.violation.is_none());
        learner.on_message(3, decide(0, put(10, "a")), &mut out);
        assert!(out.violation.is_none(), "the same value twice is a duplicate, not a violation");
        learner.on_message(3, decide(2, put(99, "z")), &mut out);
        assert!(out.violation.as_deref().is_some_and(|v| v.contains("slot 2")), "{:?}", out.violation);
        let mut applied_slot = LearnerOutbox::default();
        learner.on_message(3, decide(0, put(98, "y")), &mut applied_slot);
        assert!(applied_slot.violation.is_some(), "an applied slot decided again differently is a violation too");
    }

    #[test]
    fn a_snapshot_whose_checksum_does_not_match_is_not_installed() {
        let mut learner = Learner::new(2, LearnerConfig::for_cluster(vec![1, 2]), Snapshot::default());
        let mut store = KvStore::default();
        store.apply(&Command { client_id: 1, seq: 1, op: Op::Put { key: "k".into(), value: "v".into() } });
        let snapshot = Snapshot { next_slot: 172_000, store };
        let bad =
            CatchupReply { snapshot_crc32: snapshot.crc32() ^ 1, snapshot: Some(snapshot.clone()), entries: vec![] };
        let mut out = LearnerOutbox::default();
        learner.on_message(1, Message::CatchupReply(bad), &mut out);
        assert_eq!(learner.next_slot(), 0);
        assert!(out.snapshot.is_none());
        let good = CatchupReply { snapshot_crc32: snapshot.crc32(), snapshot: Some(snapshot), entries: vec![] };
        learner.on_message(1, Message::CatchupReply(good), &mut out);
        assert_eq!(learner.next_slot(), 172_000);
    }
}
