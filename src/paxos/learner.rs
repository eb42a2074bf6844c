//! The learner: applies decided slots to the key-value store strictly in slot
//! order, answers catch-up requests from lagging peers, and asks peers for
//! what it missed (while down, restarted or cut off).

use super::ballot::{NodeId, Slot};
use super::messages::*;
use super::proposer::ReadBatch;
use crate::kv::{Changes, Command, KvStore, Op, Reply, RequestError, RequestId, StoreCursor};
use log::{debug, error, info, warn};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct LearnerConfig {
    pub cluster: Vec<NodeId>,
    /// How often an idle learner asks a peer whether it missed anything.
    pub catchup_poll_ticks: u64,
    /// How soon a learner with a visible gap asks again.
    pub catchup_retry_ticks: u64,
    /// Slots after which a snapshot is due. Each carries only what changed
    /// since the last, so its cost follows the bytes written, not the store.
    pub snapshot_interval_slots: u64,
    /// Decided bytes after which a snapshot is due even within the interval.
    pub snapshot_log_bytes: usize,
    /// Applied slots kept in memory to serve peers (at most this many, and at
    /// most `snapshot_log_bytes` of them); older ones need a snapshot.
    pub retain_slots: u64,
    /// Decisions further ahead than this (in slots or bytes) are dropped and fetched later.
    pub buffer_slots_max: u64,
    pub buffer_bytes_max: usize,
    /// Bytes of entries, or of one snapshot chunk, in one catch-up reply.
    pub catchup_bytes_max: usize,
    /// A snapshot transfer with no request for this long is dropped by its
    /// sender; a receiver that heard nothing for half of it starts over.
    pub transfer_idle_ticks: u64,
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
            snapshot_log_bytes: 64 << 20,
            retain_slots: 20_000,
            buffer_slots_max: 50_000,
            buffer_bytes_max: 64 << 20,
            catchup_bytes_max: 1 << 20,
            transfer_idle_ticks: 1_000,
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
    pub snapshot: Option<SnapshotJob>,
    pub applied: Vec<(Slot, SlotValue)>,
    /// A slot learned two ways: agreement is broken, the replica must stop.
    pub violation: Option<String>,
    /// Copies of the store held for transfers that ended: the runtime frees
    /// them off the applying thread (freeing the versions a long transfer
    /// pinned takes tens of milliseconds at a large store).
    pub retired_copies: Vec<KvStore>,
}

/// What catch-up did, for the simulator's coverage checks and for logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatchupCounts {
    pub snapshot_parts_sent: u64,
    pub snapshot_parts_received: u64,
    pub snapshots_installed: u64,
    pub transfers_restarted: u64,
    /// Transfers begun over a store a dropped transfer left part-replaced.
    pub transfers_over_part_replaced: u64,
}

/// A snapshot being sent to one peer: an O(1) copy of the store, read a
/// chunk per request, so a transfer holds no more than the versions of keys
/// written meanwhile.
struct Outgoing {
    snapshot: Snapshot,
    last_request_at: u64,
}

/// A snapshot being received, chunk by chunk, from one peer, and written
/// over the store in place.
struct Incoming {
    from: NodeId,
    snapshot_slot: Slot,
    next: StoreCursor,
    progress_at: u64,
}

pub struct Learner {
    id: NodeId,
    config: LearnerConfig,
    now: u64,
    next_slot: Slot,
    store: KvStore,
    decided_ahead: BTreeMap<Slot, SlotValue>,
    decided_ahead_bytes: usize,
    retained: BTreeMap<Slot, SlotValue>,
    retained_bytes: usize,
    snapshot_slot: Slot,
    bytes_since_snapshot: usize,
    /// What applying changed since `snapshot_slot`.
    changes: Changes,
    catchup_sent_at: u64,
    catchup_cursor: usize,
    /// At most one transfer per peer in each direction.
    outgoing: BTreeMap<NodeId, Outgoing>,
    incoming: Option<Incoming>,
    /// The store is part old, part a snapshot being received: it matches no
    /// slot, so nothing is applied to it, read from it or sent from it until
    /// a transfer (this one, or another from the start) completes.
    installing: bool,
    /// Confirmed reads by the slot their answer must follow (see `ReadBatch`).
    reads_waiting: BTreeMap<Slot, Vec<Command>>,
    counts: CatchupCounts,
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
            decided_ahead_bytes: 0,
            retained: BTreeMap::new(),
            retained_bytes: 0,
            snapshot_slot: snapshot.next_slot,
            bytes_since_snapshot: 0,
            changes: Changes::default(),
            catchup_sent_at: 0,
            catchup_cursor: id as usize,
            outgoing: BTreeMap::new(),
            incoming: None,
            installing: false,
            reads_waiting: BTreeMap::new(),
            counts: CatchupCounts::default(),
        }
    }

    pub fn counts(&self) -> CatchupCounts {
        self.counts
    }

    /// Bytes of decided values held for peers and for gaps.
    pub fn held_bytes(&self) -> usize {
        self.retained_bytes + self.decided_ahead_bytes
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
    pub fn recent_decisions(&self, n: usize) -> Vec<(Slot, SlotValue)> {
        self.retained.iter().rev().take(n).map(|(slot, value)| (*slot, value.clone())).collect()
    }

    /// The store, for its size; while a snapshot is written over it in place
    /// it matches no slot (see [`Learner::consistent_store`]).
    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// The store as of `next_slot`, unless a snapshot is being written over it.
    pub fn consistent_store(&self) -> Option<&KvStore> {
        (!self.installing).then_some(&self.store)
    }

    pub fn on_tick(&mut self, out: &mut LearnerOutbox) {
        self.now += 1;
        let now = self.now;
        let idle = self.config.transfer_idle_ticks;
        let idle_transfers: Vec<NodeId> =
            self.outgoing.iter().filter(|(_, t)| now >= t.last_request_at + idle).map(|(&to, _)| to).collect();
        for to in idle_transfers {
            self.end_transfer(to, out);
        }
        if let Some(incoming) = &self.incoming {
            if now >= incoming.progress_at + idle / 2 {
                warn!("snapshot transfer from {} stalled; starting over", incoming.from);
                self.incoming = None;
                self.counts.transfers_restarted += 1;
            }
        }
        let waiting = self.now.saturating_sub(self.catchup_sent_at);
        // A transfer asks for its next chunk as each arrives; it is asked
        // again only when a reply seems lost, never twice at once.
        let has_gap = (!self.decided_ahead.is_empty() || self.installing) && self.incoming.is_none();
        if (has_gap && waiting >= self.config.catchup_retry_ticks) || waiting >= self.config.catchup_poll_ticks {
            self.request_catchup(out);
        }
    }

    /// Reads the leader confirmed: answered from the store once every slot
    /// below `batch.read_index` is applied here, never before.
    pub fn on_reads(&mut self, batch: ReadBatch, out: &mut LearnerOutbox) {
        self.reads_waiting.entry(batch.read_index).or_default().extend(batch.reads);
        self.answer_reads(out);
    }

    fn answer_reads(&mut self, out: &mut LearnerOutbox) {
        if self.installing {
            return;
        }
        while let Some(entry) = self.reads_waiting.first_entry() {
            if *entry.key() > self.next_slot {
                break;
            }
            for read in entry.remove() {
                let reply = match &read.op {
                    Op::Get { key } => Reply::Value(self.store.get(key).map(str::to_string)),
                    other => Reply::Rejected(RequestError::Invalid(format!("{} is not a read", other.describe()))),
                };
                out.replies.push((read.request_id(), reply));
            }
        }
    }

    pub fn on_message(&mut self, from: NodeId, msg: Message, out: &mut LearnerOutbox) {
        match msg {
            Message::Decide(decide) => {
                self.learn(decide.slot, decide.value, out);
                self.apply_ready(out);
            }
            // Only this replica's own acceptor hands values on; from anyone else it is forged.
            Message::Handoff(decide) if from == self.id => {
                self.learn(decide.slot, decide.value, out);
                self.apply_ready(out);
            }
            Message::Handoff(decide) => {
                warn!(
                    "refusing a hand-off of slot {} from replica {from}: only the local acceptor sends one",
                    decide.slot
                )
            }
            Message::CatchupRequest(request) => self.serve_catchup(from, request, out),
            Message::CatchupReply(reply) => {
                let before = self.next_slot;
                if let Some(part) = reply.snapshot {
                    self.receive_part(from, part, out);
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
        let beyond_buffer = slot >= self.next_slot.saturating_add(self.config.buffer_slots_max)
            || (slot > self.next_slot && self.decided_ahead_bytes + value.wire_bytes() > self.config.buffer_bytes_max);
        if beyond_buffer {
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
        self.decided_ahead_bytes += value.wire_bytes();
        self.decided_ahead.insert(slot, value);
    }

    fn apply_ready(&mut self, out: &mut LearnerOutbox) {
        if self.installing {
            return;
        }
        while let Some(value) = self.decided_ahead.remove(&self.next_slot) {
            let slot = self.next_slot;
            let bytes = value.wire_bytes();
            self.decided_ahead_bytes -= bytes;
            self.retained_bytes += bytes;
            self.bytes_since_snapshot += bytes;
            if let SlotValue::Batch(commands) = &value {
                for command in commands.iter() {
                    let reply = self.store.apply_noting(command, Some(&mut self.changes));
                    out.replies.push((command.request_id(), reply));
                }
            }
            if self.config.report_applied {
                out.applied.push((slot, value.clone()));
            }
            self.retained.insert(slot, value);
            self.next_slot += 1;
        }
        self.answer_reads(out);
        while let Some((&oldest, _)) = self.retained.first_key_value() {
            if oldest + self.config.retain_slots >= self.next_slot
                && self.retained_bytes <= self.config.snapshot_log_bytes
            {
                break;
            }
            let (_, value) = self.retained.pop_first().expect("checked above");
            self.retained_bytes -= value.wire_bytes();
        }
        let due = self.next_slot >= self.snapshot_slot + self.config.snapshot_interval_slots
            || self.bytes_since_snapshot >= self.config.snapshot_log_bytes;
        if due {
            let since = std::mem::replace(&mut self.snapshot_slot, self.next_slot);
            self.bytes_since_snapshot = 0;
            let changes = std::mem::take(&mut self.changes);
            out.snapshot = Some(SnapshotJob { snapshot: self.snapshot(), changes: Some((since, changes)) });
        }
    }

    /// O(1): the store's maps are persistent and shared with the copy.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { next_slot: self.next_slot, store: self.store.clone() }
    }

    /// The store now holds the snapshot at `snapshot_slot`, received whole.
    fn install(&mut self, from: NodeId, snapshot_slot: Slot, out: &mut LearnerOutbox) {
        info!("installed snapshot from {from}: slot {} -> {snapshot_slot}", self.next_slot);
        self.counts.snapshots_installed += 1;
        self.installing = false;
        self.next_slot = snapshot_slot;
        self.retained.clear();
        self.retained_bytes = 0;
        self.decided_ahead = self.decided_ahead.split_off(&self.next_slot);
        self.decided_ahead_bytes = self.decided_ahead.values().map(SlotValue::wire_bytes).sum();
        self.snapshot_slot = self.next_slot;
        self.bytes_since_snapshot = 0;
        self.changes = Changes::default();
        out.snapshot = Some(SnapshotJob { snapshot: self.snapshot(), changes: None });
    }

    fn serve_catchup(&mut self, to: NodeId, request: CatchupRequest, out: &mut LearnerOutbox) {
        if let Some(outgoing) = self.outgoing.get(&to) {
            if request.next_slot >= outgoing.snapshot.next_slot {
                // The peer installed it (or got past it): the copy can go.
                self.end_transfer(to, out);
            }
        }
        let retained_from = self.retained.first_key_value().map_or(self.next_slot, |(s, _)| *s);
        let reply = if request.resume.is_some() || request.next_slot < retained_from {
            match self.snapshot_part(to, request.next_slot, request.resume, out) {
                Some(reply) => reply,
                None => return,
            }
        } else if request.next_slot >= self.next_slot {
            return;
        } else {
            let mut entries = Vec::new();
            let mut bytes = 0;
            for (slot, value) in self.retained.range(request.next_slot..) {
                if bytes > 0 && bytes + value.wire_bytes() > self.config.catchup_bytes_max {
                    break;
                }
                bytes += value.wire_bytes();
                entries.push((*slot, value.clone()));
            }
            CatchupReply { snapshot: None, entries }
        };
        out.messages.push(Envelope { from: self.id, to, msg: Message::CatchupReply(reply) });
    }

    fn end_transfer(&mut self, to: NodeId, out: &mut LearnerOutbox) {
        if let Some(transfer) = self.outgoing.remove(&to) {
            out.retired_copies.push(transfer.snapshot.store);
        }
    }

    /// The next chunk of the transfer to `to`: where `resume` says if that
    /// transfer is still held, else the first chunk of a new one of the
    /// current state (served from state loaded through checksums or applied
    /// from decisions, never from a file that failed its checks).
    fn snapshot_part(
        &mut self,
        to: NodeId,
        requester_next_slot: Slot,
        resume: Option<SnapshotResume>,
        out: &mut LearnerOutbox,
    ) -> Option<CatchupReply> {
        let held = self.outgoing.get(&to).map(|t| t.snapshot.next_slot);
        let cursor = match resume {
            Some(resume) if held == Some(resume.snapshot_slot) => resume.cursor,
            _ => {
                if requester_next_slot >= self.next_slot || self.installing {
                    // Nothing here it lacks, or no consistent store to copy.
                    return None;
                }
                self.end_transfer(to, out);
                self.outgoing.insert(to, Outgoing { snapshot: self.snapshot(), last_request_at: self.now });
                StoreCursor::Start
            }
        };
        let outgoing = self.outgoing.get_mut(&to).expect("held or inserted above");
        outgoing.last_request_at = self.now;
        let store = &outgoing.snapshot.store;
        let (chunk, next) = store.chunk_after(&cursor, self.config.catchup_bytes_max);
        self.counts.snapshot_parts_sent += 1;
        let part = SnapshotPart {
            snapshot_slot: outgoing.snapshot.next_slot,
            applied_commands: store.applied_commands(),
            after: cursor,
            crc32: SnapshotPart::checksum(&chunk),
            chunk,
            next,
        };
        Some(CatchupReply { snapshot: Some(part), entries: Vec::new() })
    }

    fn receive_part(&mut self, from: NodeId, part: SnapshotPart, out: &mut LearnerOutbox) {
        if SnapshotPart::checksum(&part.chunk) != part.crc32 {
            warn!("refusing a snapshot chunk from {from}: its checksum does not match its contents");
            return;
        }
        if part.snapshot_slot <= self.next_slot {
            return;
        }
        let continues = self
            .incoming
            .as_ref()
            .is_some_and(|i| i.from == from && i.snapshot_slot == part.snapshot_slot && i.next == part.after);
        if !continues {
            // A first chunk starts a transfer unless another peer's is under way.
            let busy = self.incoming.as_ref().is_some_and(|i| i.from != from);
            if part.after != StoreCursor::Start || busy {
                return;
            }
            if self.incoming.take().is_some() {
                self.counts.transfers_restarted += 1;
            }
            info!("receiving a snapshot at slot {} from {from} in chunks", part.snapshot_slot);
            if self.installing {
                self.counts.transfers_over_part_replaced += 1;
            }
            self.incoming = Some(Incoming {
                from,
                snapshot_slot: part.snapshot_slot,
                next: StoreCursor::Start,
                progress_at: self.now,
            });
            self.installing = true;
        }
        self.counts.snapshot_parts_received += 1;
        let incoming = self.incoming.as_mut().expect("continued or started above");
        self.store.replace_range(&part.after, part.chunk, part.next.as_ref());
        incoming.progress_at = self.now;
        match part.next {
            Some(next) => {
                incoming.next = next;
                self.request_catchup(out);
            }
            None => {
                let snapshot_slot = incoming.snapshot_slot;
                self.incoming = None;
                self.store.set_applied_commands(part.applied_commands);
                self.install(from, snapshot_slot, out);
                self.apply_ready(out);
                self.request_catchup(out);
            }
        }
    }

    fn request_catchup(&mut self, out: &mut LearnerOutbox) {
        if let Some(incoming) = &self.incoming {
            // A transfer under way continues with its sender, where it stopped.
            self.catchup_sent_at = self.now;
            let resume = SnapshotResume { snapshot_slot: incoming.snapshot_slot, cursor: incoming.next.clone() };
            let request = CatchupRequest { next_slot: self.next_slot, resume: Some(resume) };
            let to = incoming.from;
            out.messages.push(Envelope { from: self.id, to, msg: Message::CatchupRequest(request) });
            return;
        }
        let peers: Vec<NodeId> = self.config.cluster.iter().copied().filter(|&p| p != self.id).collect();
        if peers.is_empty() {
            return;
        }
        self.catchup_cursor = (self.catchup_cursor + 1) % peers.len();
        self.catchup_sent_at = self.now;
        // A store left part-replaced by a dropped transfer can only be made
        // whole by a snapshot from its first chunk: no held snapshot has slot
        // 0, so the peer starts a new one rather than send entries.
        let resume = self.installing.then_some(SnapshotResume { snapshot_slot: 0, cursor: StoreCursor::Start });
        out.messages.push(Envelope {
            from: self.id,
            to: peers[self.catchup_cursor],
            msg: Message::CatchupRequest(CatchupRequest { next_slot: self.next_slot, resume }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, Op, StoreChunk};

    fn put(client_id: u64, key: &str) -> SlotValue {
        SlotValue::batch(vec![Command { client_id, seq: 1, op: Op::Put { key: key.into(), value: "v".into() } }])
    }
    fn decide(slot: Slot, value: SlotValue) -> Message {
        Message::Decide(Decide { slot, value })
    }
    /// Replica 1 of three, reporting what it applies.
    fn reporting_learner() -> Learner {
        let mut config = LearnerConfig::for_cluster(vec![1, 2, 3]);
        config.report_applied = true;
        Learner::new(1, config, Snapshot::default())
    }

    #[test]
    fn applies_strictly_in_slot_order_and_asks_for_gaps() {
        let mut learner = reporting_learner();
        let mut out = LearnerOutbox::default();
        learner.on_message(2, decide(1, put(11, "b")), &mut out);
        assert!(out.applied.is_empty(), "slot 1 applied before slot 0");
        for _ in 0..10 {
            learner.on_tick(&mut out);
        }
        assert!(
            out.messages
                .iter()
                .any(|e| matches!(e.msg, Message::CatchupRequest(CatchupRequest { next_slot: 0, resume: None }))),
            "a learner with a gap must ask a peer"
        );
        learner.on_message(2, decide(0, put(10, "a")), &mut out);
        assert_eq!(out.applied.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(out.replies.len(), 2);
        assert_eq!(learner.next_slot(), 2);
    }

    #[test]
    fn a_hand_off_counts_only_from_this_replicas_own_acceptor() {
        let mut learner = reporting_learner();
        let mut out = LearnerOutbox::default();
        let handoff = |key| Message::Handoff(Decide { slot: 0, value: put(10, key) });
        learner.on_message(2, handoff("forged"), &mut out);
        assert!(out.applied.is_empty(), "a peer cannot speak for this replica's acceptor");
        learner.on_message(1, handoff("a"), &mut out);
        assert_eq!(out.applied, vec![(0, put(10, "a"))]);
    }

    /// Delivers messages between learners until none is left; returns how many were delivered.
    fn exchange(learners: &mut [Learner], mut out: Vec<Envelope>, drop_every: usize) -> usize {
        let mut delivered = 0;
        while let Some(envelope) = out.pop() {
            delivered += 1;
            assert!(delivered < 100_000, "catch-up does not converge");
            if drop_every > 0 && delivered % drop_every == 0 {
                continue;
            }
            let mut next = LearnerOutbox::default();
            learners[envelope.to as usize - 1].on_message(envelope.from, envelope.msg, &mut next);
            out.extend(next.messages);
        }
        delivered
    }

    #[test]
    fn a_peer_far_behind_gets_a_snapshot_in_chunks_then_the_rest() {
        let mut config = LearnerConfig::for_cluster(vec![1, 2]);
        config.retain_slots = 2;
        config.catchup_bytes_max = 200;
        let mut ahead = Learner::new(1, config.clone(), Snapshot::default());
        let mut out = LearnerOutbox::default();
        for slot in 0..40 {
            ahead.on_message(1, decide(slot, put(slot, &format!("k{slot}"))), &mut out);
        }
        let mut learners = [ahead, Learner::new(2, config, Snapshot::default())];
        let mut first = LearnerOutbox::default();
        learners[1].request_catchup(&mut first);
        exchange(&mut learners, first.messages, 0);
        assert_eq!(learners[1].next_slot(), 40);
        assert_eq!(learners[1].store(), learners[0].store());
        let (sent, received) = (learners[0].counts(), learners[1].counts());
        assert!(sent.snapshot_parts_sent > 3, "a 200-byte chunk limit must split the store: {sent:?}");
        assert_eq!(received.snapshot_parts_received, sent.snapshot_parts_sent);
        assert_eq!(received.snapshots_installed, 1);
    }

    #[test]
    fn a_transfer_that_loses_replies_resumes_where_it_stopped_and_writes_meanwhile_do_not_leak_in() {
        let mut config = LearnerConfig::for_cluster(vec![1, 2]);
        config.retain_slots = 1;
        config.catchup_bytes_max = 100;
        let mut ahead = Learner::new(1, config.clone(), Snapshot::default());
        let mut out = LearnerOutbox::default();
        for slot in 0..30 {
            ahead.on_message(1, decide(slot, put(slot, &format!("k{slot:02}"))), &mut out);
        }
        let expected = ahead.store().clone();
        let mut learners = [ahead, Learner::new(2, config, Snapshot::default())];
        let mut first = LearnerOutbox::default();
        learners[1].request_catchup(&mut first);
        // Every third message is lost: the receiver's ticks ask again.
        let mut pending = first.messages;
        for slot in 30..530 {
            exchange(&mut learners, std::mem::take(&mut pending), 3);
            if learners[1].next_slot() >= 30 {
                break;
            }
            // The sender keeps applying while the transfer runs.
            let mut applied = LearnerOutbox::default();
            learners[0].on_message(1, decide(slot, put(slot, "later")), &mut applied);
            let mut tick = LearnerOutbox::default();
            for _ in 0..learners[1].config.catchup_poll_ticks {
                learners[1].on_tick(&mut tick);
            }
            pending = tick.messages;
        }
        assert!(learners[1].next_slot() >= 30, "the transfer must finish despite losses");
        assert_eq!(learners[1].counts().snapshots_installed, 1, "{:?}", learners[1].counts());
        if learners[1].next_slot() == 30 {
            assert_eq!(learners[1].store(), &expected, "a transfer is one consistent cut of the store");
        }
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
    fn a_snapshot_chunk_whose_checksum_does_not_match_is_not_used() {
        let mut learner = Learner::new(2, LearnerConfig::for_cluster(vec![1, 2]), Snapshot::default());
        let chunk = StoreChunk::Data(vec![("k".into(), "v".into())]);
        let part = SnapshotPart {
            snapshot_slot: 172_000,
            applied_commands: 1,
            after: StoreCursor::Start,
            crc32: SnapshotPart::checksum(&chunk) ^ 1,
            chunk,
            next: None,
        };
        let bad = CatchupReply { snapshot: Some(part.clone()), entries: vec![] };
        let mut out = LearnerOutbox::default();
        learner.on_message(1, Message::CatchupReply(bad), &mut out);
        assert_eq!(learner.next_slot(), 0);
        assert!(out.snapshot.is_none());
        let good = CatchupReply { snapshot: Some(SnapshotPart { crc32: part.crc32 ^ 1, ..part }), entries: vec![] };
        learner.on_message(1, Message::CatchupReply(good), &mut out);
        assert_eq!(learner.next_slot(), 172_000);
        assert_eq!(learner.store().get("k"), Some("v"));
    }

    #[test]
    fn a_confirmed_read_is_answered_only_once_every_slot_below_its_index_is_applied() {
        let mut learner = Learner::new(1, LearnerConfig::for_cluster(vec![1, 2, 3]), Snapshot::default());
        let get = Command { client_id: 20, seq: 1, op: Op::Get { key: "b".into() } };
        let mut out = LearnerOutbox::default();
        learner.on_message(2, decide(0, put(10, "a")), &mut out);
        learner.on_reads(ReadBatch { read_index: 2, reads: vec![get.clone()] }, &mut out);
        assert_eq!(out.replies.len(), 1, "only the write of slot 0 is answered: slot 1 is not applied");
        learner.on_message(2, decide(1, put(11, "b")), &mut out);
        let answer = out.replies.iter().find(|(id, _)| *id == get.request_id()).map(|(_, reply)| reply.clone());
        assert_eq!(answer, Some(Reply::Value(Some("v".into()))), "the read sees the write at slot 1");
    }
}
