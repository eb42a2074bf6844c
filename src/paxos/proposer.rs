//! The proposer: runs elections (phase 1) and, once it leads, assigns client
//! commands to log slots and drives them through phase 2. A leader holds every
//! slot from its first undecided one, so in steady state a batch of commands
//! costs one round trip, and up to `window_slots` slots are in flight at once.
//!
//! The proposer is also the distinguished learner of Paxos Made Simple
//! (section 2.3): acceptors answer it, and it tells every learner what was
//! decided.

use super::ballot::{Ballot, NodeId, Slot};
use super::messages::*;
use super::quorum::{majority, Votes};
use crate::kv::{Command, Op, Reply, RequestError, RequestId};
use log::{debug, info, warn};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Clone, Debug)]
pub struct ProposerConfig {
    pub cluster: Vec<NodeId>,
    pub heartbeat_ticks: u64,
    /// A follower waits between this and twice this without news of a leader
    /// before it runs for election; the spread keeps proposers from dueling.
    pub election_timeout_ticks: u64,
    pub retransmit_ticks: u64,
    /// ACCEPT goes first to a bare majority of acceptors (the leader's own and
    /// the followers that answered most recently) and to the rest only if the
    /// slot is not chosen within `widen_after_ticks`: fewer syncs contend for
    /// the disk, fewer replicas wake per write. The others learn the value
    /// from the decision. Safety never depends on who is sent an ACCEPT.
    pub accept_to_majority: bool,
    pub widen_after_ticks: u64,
    /// An acceptor not heard from for this long counts as unreachable.
    pub liveness_ticks: u64,
    /// Slots of new client batches in flight at once.
    pub window_slots: usize,
    /// Slots re-proposed after an election in flight at once: they wait for
    /// no batching, so more of them share each acceptor sync.
    pub reproposal_window_slots: usize,
    /// Bytes of values in flight at once (a slot heavier than this still goes
    /// alone), whether new or re-proposed: what each acceptor's queue and link
    /// must hold, whatever the window in slots.
    pub inflight_bytes_max: usize,
    /// While a slot is in flight, a new one opens only with this many
    /// commands queued, or at the next tick.
    pub batch_commands_min: usize,
    pub batch_commands_max: usize,
    pub batch_bytes_max: usize,
    pub queue_max: usize,
    /// Bytes of client commands queued for the next batches.
    pub queue_bytes_max: usize,
}

impl ProposerConfig {
    pub fn for_cluster(cluster: Vec<NodeId>) -> Self {
        ProposerConfig {
            cluster,
            heartbeat_ticks: 5,
            election_timeout_ticks: 50,
            retransmit_ticks: 20,
            accept_to_majority: true,
            widen_after_ticks: 2,
            liveness_ticks: 25,
            window_slots: 4,
            reproposal_window_slots: 64,
            inflight_bytes_max: 8 << 20,
            batch_commands_min: 32,
            batch_commands_max: 1024,
            batch_bytes_max: 512 * 1024,
            queue_max: 100_000,
            queue_bytes_max: 64 << 20,
        }
    }
}

#[derive(Debug, Default)]
pub struct ProposerOutbox {
    /// Must be durable before any of `messages` leaves, so that a restarted
    /// proposer never reuses a ballot it already used.
    pub persist_ballot: Option<Ballot>,
    pub messages: Vec<Envelope>,
    pub replies: Vec<(RequestId, Reply)>,
    /// Reads whose leadership round a majority confirmed, for the local
    /// learner to answer once it has applied every slot below the index.
    pub reads: Vec<ReadBatch>,
}

/// Reads to answer from the store once every slot below `read_index` is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBatch {
    pub read_index: Slot,
    pub reads: Vec<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposerMode {
    Follower,
    Preparing,
    Leading,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposerStatus {
    pub mode: ProposerMode,
    pub ballot: Ballot,
    pub leader: Option<NodeId>,
    pub next_slot: Slot,
    pub slots_in_flight: usize,
    pub queued_commands: usize,
    pub reachable_acceptors: usize,
}

struct Preparing {
    ballot: Ballot,
    /// Where this leadership starts: the local learner's next slot.
    start_slot: Slot,
    /// Where the current chunk of promises starts (see `Promise::more_from`).
    chunk_slot: Slot,
    promises: BTreeMap<NodeId, Promise>,
    /// Highest-ballot value reported for each slot below `chunk_slot`.
    constrained: BTreeMap<Slot, (Ballot, SlotValue)>,
    log_start: Slot,
}

struct InFlight {
    value: SlotValue,
    acks: Votes,
    /// Acceptors sent this slot's ACCEPT under this ballot.
    sent_to: Votes,
    sent_at: u64,
}

/// A decision the other replicas have not been told of yet.
struct Undelivered {
    chosen: Chosen,
    value: SlotValue,
    /// They hold the value: a CHOSEN tells them. The rest are sent it.
    accepted_by: Votes,
}

struct Leading {
    ballot: Ballot,
    next_slot: Slot,
    in_flight: BTreeMap<Slot, InFlight>,
    in_flight_bytes: usize,
    /// Slots phase 1 found to re-propose, sent as the window allows, before
    /// any new batch.
    reproposals: BTreeMap<Slot, SlotValue>,
    heartbeat_at: u64,
    /// Acceptors that promised a higher ballot: once no majority is left
    /// without them, this leadership is over.
    nacked_by: Votes,
    /// Where the slots phase 1 found end: any write acknowledged before this
    /// leadership lies below it.
    reproposal_end: Slot,
    /// Read rounds sent and not yet confirmed, oldest first (at most
    /// `READ_ROUNDS_MAX`: reads that arrive meanwhile share the next).
    read_rounds: VecDeque<ReadRound>,
    /// The highest read round each acceptor acknowledged under this ballot.
    round_acked: BTreeMap<NodeId, u64>,
    /// Decisions the other replicas have not been sent: they go with the
    /// next ACCEPT, or at the next tick, so that each decision does not wake
    /// every link and every replica of its own. Nothing waits on them: the
    /// leader's own learner answers the clients.
    undelivered: Vec<Undelivered>,
    /// For each acceptor, one past the highest slot it accepted under this
    /// ballot (0 for those that promised it): who gets an ACCEPT first.
    answered_up_to: BTreeMap<NodeId, Slot>,
    /// When a slot last went to every acceptor. One does each heartbeat
    /// interval, so that every acceptor keeps seeing slots proposed: one
    /// rebuilding after a lost disk must witness one to vote again, one whose
    /// disk fails must find out, and one that recovered can rank again.
    asked_all_at: u64,
}

/// Read rounds in flight at once, so that a read need not wait for a round
/// sent before it arrived to finish before its own is sent.
const READ_ROUNDS_MAX: usize = 4;

/// Linearizable reads without a log slot (Raft's read index, Ongaro's thesis
/// 6.4): the reads wait for a majority of acceptors to acknowledge a
/// heartbeat sent after they arrived, then for the learner to apply every
/// slot below `read_index`.
struct ReadRound {
    number: u64,
    read_index: Slot,
    reads: Vec<Command>,
}

impl Leading {
    /// Every write acknowledged so far lies below this slot: the slots phase 1
    /// found (an earlier leader may have acknowledged them), and this
    /// leader's own slots below its first one still undecided (a slot is
    /// applied, hence acknowledged, only after every slot before it).
    fn read_index(&self) -> Slot {
        let undecided = self.in_flight.keys().next().copied().unwrap_or(self.next_slot);
        undecided.max(self.reproposal_end)
    }
}

impl Leading {
    fn propose(
        &mut self,
        slot: Slot,
        value: SlotValue,
        config: &ProposerConfig,
        from: NodeId,
        now: u64,
        out: &mut ProposerOutbox,
    ) {
        debug!("ACCEPT ballot={} slot={slot} value={}", self.ballot, value.describe());
        self.send_decisions(from, &config.cluster, out);
        let acceptors = if config.accept_to_majority && now < self.asked_all_at + config.heartbeat_ticks {
            self.likeliest_majority(&config.cluster, from)
        } else {
            self.asked_all_at = now;
            config.cluster.clone()
        };
        let sent_to = acceptors.iter().copied().collect();
        send_accepts(from, self.ballot, slot, &value, acceptors.into_iter(), out);
        self.in_flight_bytes += value.wire_bytes();
        self.in_flight.insert(slot, InFlight { value, acks: Votes::default(), sent_to, sent_at: now });
    }

    /// A majority of acceptors, those that answered the latest slots first,
    /// and on a tie the leader's own (it answers without a network hop).
    fn likeliest_majority(&self, cluster: &[NodeId], own: NodeId) -> Vec<NodeId> {
        let mut ranked = cluster.to_vec();
        ranked
            .sort_by_key(|&acceptor| std::cmp::Reverse((self.answered_up_to.get(&acceptor).copied(), acceptor == own)));
        ranked.truncate(majority(cluster.len()));
        ranked
    }

    /// The decisions not yet announced, to every other replica: a CHOSEN to
    /// those whose acceptor accepted the value, the value to the others' learners.
    fn send_decisions(&mut self, from: NodeId, cluster: &[NodeId], out: &mut ProposerOutbox) {
        for decision in self.undelivered.drain(..) {
            for &to in cluster.iter().filter(|&&node| node != from) {
                let msg = if decision.accepted_by.contains(to) {
                    Message::Chosen(decision.chosen)
                } else {
                    Message::Decide(Decide { slot: decision.chosen.slot, value: decision.value.clone() })
                };
                out.messages.push(Envelope { from, to, msg });
            }
        }
    }
}

/// Phase 2a for `slot` to each of `acceptors`.
fn send_accepts(
    from: NodeId,
    ballot: Ballot,
    slot: Slot,
    value: &SlotValue,
    acceptors: impl Iterator<Item = NodeId>,
    out: &mut ProposerOutbox,
) {
    for to in acceptors {
        let accept = Accept { ballot, slot, value: value.clone() };
        out.messages.push(Envelope { from, to, msg: Message::Accept(accept) });
    }
}

enum State {
    Follower { leader: Option<NodeId> },
    Preparing(Preparing),
    Leading(Leading),
}

pub struct Proposer {
    id: NodeId,
    config: ProposerConfig,
    /// Injected and seeded: the only source of election jitter.
    rng: StdRng,
    now: u64,
    highest_seen: Ballot,
    learned_next_slot: Slot,
    state: State,
    queue: VecDeque<Command>,
    /// Reads waiting for the next read round; their bytes count in `queue_bytes`.
    reads_queued: Vec<Command>,
    queue_bytes: usize,
    /// Numbers read rounds, across leaderships.
    read_rounds_started: u64,
    /// Requests queued or in flight here: a retry of one of them joins it
    /// instead of being proposed again or refused as "not applied".
    in_progress: BTreeSet<RequestId>,
    acceptor_heard_at: BTreeMap<NodeId, u64>,
    deadline: u64,
    tick_flush: bool,
    /// When a healthy leader (this one excepted) was last heard from.
    leader_heard_at: Option<u64>,
    /// A pre-vote in progress: the ballot it asks about and who granted it.
    pre_vote: Option<(Ballot, Votes)>,
    /// False while the local acceptor rebuilds after losing its disk: its
    /// ballot file was lost too, so it must not run for election.
    may_lead: bool,
}

impl Proposer {
    /// `last_ballot` is the highest ballot this proposer persisted before a
    /// restart; its next election uses a higher one.
    pub fn new(id: NodeId, config: ProposerConfig, last_ballot: Ballot, rng: StdRng) -> Self {
        assert!(config.cluster.contains(&id), "proposer {id} is not in its own cluster");
        let mut proposer = Proposer {
            id,
            config,
            rng,
            now: 0,
            highest_seen: last_ballot,
            learned_next_slot: 0,
            state: State::Follower { leader: None },
            queue: VecDeque::new(),
            reads_queued: Vec::new(),
            queue_bytes: 0,
            read_rounds_started: 0,
            in_progress: BTreeSet::new(),
            acceptor_heard_at: BTreeMap::new(),
            deadline: 0,
            tick_flush: false,
            leader_heard_at: None,
            pre_vote: None,
            may_lead: true,
        };
        proposer.reset_deadline();
        proposer
    }

    pub fn status(&self) -> ProposerStatus {
        let (mode, ballot, leader, next_slot, slots_in_flight) = match &self.state {
            State::Follower { leader } => (ProposerMode::Follower, self.highest_seen, *leader, 0, 0),
            State::Preparing(p) => (ProposerMode::Preparing, p.ballot, None, 0, 0),
            State::Leading(l) => (ProposerMode::Leading, l.ballot, Some(self.id), l.next_slot, l.in_flight.len()),
        };
        ProposerStatus {
            mode,
            ballot,
            leader,
            next_slot,
            slots_in_flight,
            queued_commands: self.queue.len() + self.reads_queued.len(),
            reachable_acceptors: self.reachable_acceptors(),
        }
    }

    pub fn is_leading(&self) -> bool {
        matches!(self.state, State::Leading(_))
    }

    /// The local learner has applied every slot below `next_slot`.
    pub fn on_learner_progress(&mut self, next_slot: Slot) {
        self.learned_next_slot = self.learned_next_slot.max(next_slot);
    }

    /// Allows or forbids running for election; when allowed again, `ballot_seen`
    /// (the highest ballot the rebuilt acceptor saw) lifts the next ballot above it.
    pub fn set_may_lead(&mut self, may_lead: bool, ballot_seen: Ballot) {
        self.may_lead = may_lead;
        let ballot_seen = if ballot_seen.is_sane() { ballot_seen } else { Ballot::ZERO };
        self.highest_seen = self.highest_seen.max(ballot_seen);
        self.reset_deadline();
    }

    /// The local acceptor promised `ballot` to another candidate. A follower
    /// then gives that candidate a full election timeout to finish phase 1
    /// (as a Raft vote resets the timer), instead of starting a duel.
    pub fn on_candidate_seen(&mut self, ballot: Ballot) {
        if !ballot.is_sane() {
            return;
        }
        self.highest_seen = self.highest_seen.max(ballot);
        if matches!(self.state, State::Follower { .. }) && ballot.node_id != self.id {
            self.reset_deadline();
        }
    }

    pub fn on_tick(&mut self, out: &mut ProposerOutbox) {
        self.now += 1;
        self.tick_flush = true;
        match &mut self.state {
            State::Follower { .. } => {
                if self.now >= self.deadline && self.may_lead {
                    self.start_pre_vote(out);
                }
            }
            State::Preparing(_) => {
                if self.now >= self.deadline {
                    if self.reachable_acceptors() < self.quorum() {
                        self.reject_queued(
                            RequestError::NoQuorum { reachable: self.reachable_acceptors(), needed: self.quorum() },
                            out,
                        );
                    }
                    // Phase 1 did not finish: ask again whether an election could win.
                    self.state = State::Follower { leader: None };
                    self.start_pre_vote(out);
                }
            }
            State::Leading(lead) => {
                lead.send_decisions(self.id, &self.config.cluster, out);
                if self.now >= lead.heartbeat_at + self.config.heartbeat_ticks {
                    lead.heartbeat_at = self.now;
                    let ballot = lead.ballot;
                    // Carries the round in progress, if any: a lost heartbeat or ack is made good.
                    let read_round = lead.read_rounds.back().map_or(0, |round| round.number);
                    self.broadcast(Message::Heartbeat(Heartbeat { ballot, read_round }), out);
                    // A leader that lost its quorum stops announcing itself, so
                    // that the majority's pre-votes succeed and it is replaced.
                    if self.reachable_acceptors() >= self.quorum() {
                        for &peer in self.config.cluster.iter().filter(|&&p| p != self.id) {
                            out.messages.push(Envelope {
                                from: self.id,
                                to: peer,
                                msg: Message::LeaderAlive(LeaderAlive { ballot }),
                            });
                        }
                    }
                }
                let (reachable, quorum) = (self.reachable_acceptors(), self.quorum());
                let State::Leading(lead) = &mut self.state else { unreachable!() };
                if reachable < quorum {
                    // No majority can confirm this leadership: the reads waiting on it go elsewhere.
                    let refused = RequestError::NoQuorum { reachable, needed: quorum };
                    let queued = std::mem::take(&mut self.reads_queued);
                    self.queue_bytes -= queued.iter().map(Command::wire_bytes).sum::<usize>();
                    let waiting = lead.read_rounds.drain(..).flat_map(|round| round.reads);
                    for read in waiting.chain(queued) {
                        out.replies.push((read.request_id(), Reply::Rejected(refused.clone())));
                    }
                }
                for (&slot, entry) in lead.in_flight.iter_mut() {
                    let retransmit = self.now >= entry.sent_at + self.config.retransmit_ticks;
                    if !retransmit && self.now < entry.sent_at + self.config.widen_after_ticks {
                        continue;
                    }
                    // A retransmission goes to every acceptor still silent; a
                    // widening, to those the first majority left out.
                    let due: Vec<NodeId> = self
                        .config
                        .cluster
                        .iter()
                        .copied()
                        .filter(|&a| if retransmit { !entry.acks.contains(a) } else { !entry.sent_to.contains(a) })
                        .collect();
                    if retransmit {
                        entry.sent_at = self.now;
                    }
                    entry.sent_to.extend(due.iter().copied());
                    send_accepts(self.id, lead.ballot, slot, &entry.value, due.into_iter(), out);
                }
            }
        }
    }

    /// Admits a client command. It is proposed by the next `flush`.
    pub fn on_client_command(&mut self, command: Command, out: &mut ProposerOutbox) {
        if self.in_progress.contains(&command.request_id()) {
            // Its first attempt will answer; "no quorum" would claim it was not applied.
            debug!("request {:?} is already in progress here", command.request_id());
            return;
        }
        let refusal = match &self.state {
            State::Leading(_) if self.reachable_acceptors() < self.quorum() => {
                Some(RequestError::NoQuorum { reachable: self.reachable_acceptors(), needed: self.quorum() })
            }
            State::Follower { leader: Some(leader) } => Some(RequestError::NotLeader { leader: Some(*leader) }),
            State::Follower { leader: None } if !self.may_lead => Some(RequestError::NotLeader { leader: None }),
            _ if self.queue.len() + self.reads_queued.len() >= self.config.queue_max
                || self.queue_bytes + command.wire_bytes() > self.config.queue_bytes_max =>
            {
                Some(RequestError::Overloaded)
            }
            _ => None,
        };
        match refusal {
            Some(error) => out.replies.push((command.request_id(), Reply::Rejected(error))),
            None if matches!(command.op, Op::Get { .. }) => {
                // A read takes no slot; a retry of it simply reads again.
                self.queue_bytes += command.wire_bytes();
                self.reads_queued.push(command);
            }
            None => {
                self.in_progress.insert(command.request_id());
                self.queue_bytes += command.wire_bytes();
                self.queue.push_back(command);
            }
        }
    }

    /// Re-proposes what phase 1 found, then proposes queued commands in
    /// batches, while the window has room in slots and in bytes.
    pub fn flush(&mut self, out: &mut ProposerOutbox) {
        self.start_read_round(out);
        let State::Leading(lead) = &mut self.state else { return };
        let config = &self.config;
        let room = |lead: &Leading, window: usize, bytes: usize| {
            lead.in_flight.is_empty()
                || (lead.in_flight.len() < window && lead.in_flight_bytes + bytes <= config.inflight_bytes_max)
        };
        while let Some(bytes) = lead.reproposals.first_key_value().map(|(_, value)| value.wire_bytes()) {
            if !room(lead, config.reproposal_window_slots, bytes) {
                self.tick_flush = false;
                return;
            }
            let (slot, value) = lead.reproposals.pop_first().expect("checked above");
            lead.propose(slot, value, config, self.id, self.now, out);
        }
        while !self.queue.is_empty() && room(lead, config.window_slots, config.batch_bytes_max) {
            // With a slot already in flight, a small batch waits for company
            // until the next tick: fewer, fuller slots cost fewer syncs.
            if !lead.in_flight.is_empty() && self.queue.len() < self.config.batch_commands_min && !self.tick_flush {
                break;
            }
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(command) = self.queue.front() {
                let size = command.wire_bytes();
                if !batch.is_empty()
                    && (batch.len() >= self.config.batch_commands_max || bytes + size > self.config.batch_bytes_max)
                {
                    break;
                }
                bytes += size;
                let command = self.queue.pop_front().expect("front was Some");
                self.queue_bytes -= command.wire_bytes();
                batch.push(command);
            }
            let slot = lead.next_slot;
            lead.next_slot += 1;
            lead.propose(slot, SlotValue::batch(batch), config, self.id, self.now, out);
        }
        self.tick_flush = false;
    }

    pub fn on_message(&mut self, from: NodeId, msg: Message, out: &mut ProposerOutbox) {
        if let Some(ballot) = msg.ballot().filter(|b| !b.is_sane()) {
            warn!("refusing {} from {from}: ballot {ballot} is beyond any real round", msg.kind());
            return;
        }
        match msg {
            Message::Promise(promise) => {
                self.heard_from(from);
                self.on_promise(from, promise, out);
            }
            Message::Accepted(accepted) => {
                self.heard_from(from);
                self.on_accepted(from, accepted, out);
            }
            // A refusing acceptor is not one that counts towards a quorum.
            Message::Nack(nack) => self.on_nack(from, nack, out),
            Message::HeartbeatAck(ack) => {
                self.heard_from(from);
                self.on_heartbeat_ack(from, ack, out);
            }
            Message::LeaderAlive(alive) => self.on_leader_alive(from, alive, out),
            Message::PreVote(pre_vote) => self.on_pre_vote(from, pre_vote, out),
            Message::PreVoteReply(reply) => self.on_pre_vote_reply(from, reply, out),
            other => debug!("ignoring {} from {from}: not a proposer message", other.kind()),
        }
    }

    /// Sends the reads queued in a round of their own: at once when no round
    /// is out, else once `batch_commands_min` are queued or at the tick.
    fn start_read_round(&mut self, out: &mut ProposerOutbox) {
        let State::Leading(lead) = &mut self.state else { return };
        // As with batches: with a round in flight, another waits for company
        // until the next tick (fewer rounds, fewer messages and wake-ups).
        let lingering = !lead.read_rounds.is_empty()
            && self.reads_queued.len() < self.config.batch_commands_min
            && !self.tick_flush;
        if lead.read_rounds.len() >= READ_ROUNDS_MAX || self.reads_queued.is_empty() || lingering {
            return;
        }
        self.read_rounds_started += 1;
        let number = self.read_rounds_started;
        let reads = std::mem::take(&mut self.reads_queued);
        self.queue_bytes -= reads.iter().map(Command::wire_bytes).sum::<usize>();
        lead.read_rounds.push_back(ReadRound { number, read_index: lead.read_index(), reads });
        lead.heartbeat_at = self.now;
        let ballot = lead.ballot;
        self.broadcast(Message::Heartbeat(Heartbeat { ballot, read_round: number }), out);
    }

    fn on_heartbeat_ack(&mut self, from: NodeId, ack: HeartbeatAck, out: &mut ProposerOutbox) {
        let quorum = self.quorum();
        let State::Leading(lead) = &mut self.state else { return };
        if ack.ballot != lead.ballot {
            return;
        }
        let acked = lead.round_acked.entry(from).or_default();
        *acked = (*acked).max(ack.read_round);
        // A round a majority acknowledged (or a later one) is confirmed, and so is every earlier one.
        let confirmed =
            |number: u64, acked: &BTreeMap<NodeId, u64>| acked.values().filter(|&&a| a >= number).count() >= quorum;
        while lead.read_rounds.front().is_some_and(|round| confirmed(round.number, &lead.round_acked)) {
            let round = lead.read_rounds.pop_front().expect("checked above");
            debug!(
                "read round {} confirmed: {} read(s) at index {}",
                round.number,
                round.reads.len(),
                round.read_index
            );
            out.reads.push(ReadBatch { read_index: round.read_index, reads: round.reads });
        }
        self.start_read_round(out);
    }

    fn on_nack(&mut self, from: NodeId, nack: Nack, out: &mut ProposerOutbox) {
        self.highest_seen = self.highest_seen.max(nack.promised);
        if self.own_ballot() != Some(nack.ballot) || nack.promised <= nack.ballot {
            return;
        }
        let (cluster, quorum) = (self.config.cluster.len(), self.quorum());
        if let State::Leading(lead) = &mut self.state {
            // One acceptor that promised a higher ballot (a candidate that
            // failed, a replica back from a partition) does not end a
            // leadership that still has a majority without it.
            lead.nacked_by.add(from);
            if lead.nacked_by.count() + quorum <= cluster {
                debug!("NACK ballot={} from={from}: promised {}; a majority remains", nack.ballot, nack.promised);
                return;
            }
        }
        info!("NACK ballot={} from={from}: promised {}; stepping down", nack.ballot, nack.promised);
        self.step_down(Some(nack.promised.node_id), out);
    }

    fn start_pre_vote(&mut self, out: &mut ProposerOutbox) {
        let ballot = Ballot::new(self.highest_seen.next_round(), self.id);
        let mut grants = Votes::default();
        grants.add(self.id);
        self.reset_deadline();
        if grants.is_quorum(self.config.cluster.len()) {
            return self.start_election(out);
        }
        debug!("PRE_VOTE ballot={ballot}");
        self.pre_vote = Some((ballot, grants));
        for &peer in self.config.cluster.iter().filter(|&&p| p != self.id) {
            out.messages.push(Envelope { from: self.id, to: peer, msg: Message::PreVote(PreVote { ballot }) });
        }
    }

    fn on_pre_vote(&mut self, from: NodeId, pre_vote: PreVote, out: &mut ProposerOutbox) {
        let leader_is_healthy = match &self.state {
            State::Leading(_) => self.reachable_acceptors() >= self.quorum(),
            _ => self.leader_heard_at.is_some_and(|at| self.now < at + self.config.election_timeout_ticks),
        };
        let granted = !leader_is_healthy && pre_vote.ballot.node_id == from;
        if !granted {
            debug!("PRE_VOTE ballot={} from={from} denied: a healthy leader is known", pre_vote.ballot);
        }
        let reply = PreVoteReply { ballot: pre_vote.ballot, granted };
        out.messages.push(Envelope { from: self.id, to: from, msg: Message::PreVoteReply(reply) });
    }

    fn on_pre_vote_reply(&mut self, from: NodeId, reply: PreVoteReply, out: &mut ProposerOutbox) {
        let cluster = self.config.cluster.len();
        let Some((ballot, grants)) = &mut self.pre_vote else { return };
        if reply.ballot != *ballot || !reply.granted || !matches!(self.state, State::Follower { .. }) {
            return;
        }
        grants.add(from);
        if grants.is_quorum(cluster) {
            self.pre_vote = None;
            self.start_election(out);
        }
    }

    fn on_leader_alive(&mut self, from: NodeId, alive: LeaderAlive, out: &mut ProposerOutbox) {
        if alive.ballot.node_id != from {
            return;
        }
        if alive.ballot < self.highest_seen {
            // A leader below a ballot this replica saw (its own, from before a
            // restart, or a candidate's that failed) still leads while it has
            // a majority: follow it rather than depose it.
            if matches!(self.state, State::Follower { .. }) {
                self.leader_heard_at = Some(self.now);
                self.pre_vote = None;
                self.state = State::Follower { leader: Some(from) };
                self.reset_deadline();
            }
            return;
        }
        self.highest_seen = alive.ballot;
        self.leader_heard_at = Some(self.now);
        self.pre_vote = None;
        match &self.state {
            State::Follower { leader } => {
                if *leader != Some(from) {
                    info!("following leader {from} ballot={}", alive.ballot);
                }
                self.state = State::Follower { leader: Some(from) };
                self.reject_queued(RequestError::NotLeader { leader: Some(from) }, out);
                self.reset_deadline();
            }
            _ => {
                if self.own_ballot().is_some_and(|own| own < alive.ballot) {
                    info!("replica {from} leads with higher ballot {}; stepping down", alive.ballot);
                    self.step_down(Some(from), out);
                }
            }
        }
    }

    fn on_promise(&mut self, from: NodeId, promise: Promise, out: &mut ProposerOutbox) {
        let quorum = self.quorum();
        let State::Preparing(prep) = &mut self.state else { return };
        if promise.ballot != prep.ballot || promise.first_slot != prep.chunk_slot {
            return;
        }
        info!("PROMISE ballot={} from={from} entries={}", promise.ballot, promise.accepted.len());
        prep.promises.insert(from, promise);
        if prep.promises.len() < quorum {
            return;
        }
        let horizon = prep.promises.values().filter_map(|p| p.more_from).min();
        for promise in prep.promises.values() {
            prep.log_start = prep.log_start.max(promise.log_start);
            for entry in &promise.accepted {
                if horizon.is_some_and(|h| entry.slot >= h) {
                    continue;
                }
                let higher = prep.constrained.get(&entry.slot).is_none_or(|(b, _)| entry.ballot > *b);
                if higher {
                    prep.constrained.insert(entry.slot, (entry.ballot, entry.value.clone()));
                }
            }
        }
        if let Some(next_chunk) = horizon {
            prep.chunk_slot = next_chunk;
            prep.promises.clear();
            let prepare = Prepare { ballot: prep.ballot, first_slot: next_chunk };
            self.broadcast(Message::Prepare(prepare), out);
            // Phase 1 is making progress: a long log must not time it out.
            self.reset_deadline();
            return;
        }
        self.become_leader(out);
    }

    fn become_leader(&mut self, out: &mut ProposerOutbox) {
        let State::Preparing(prep) = std::mem::replace(&mut self.state, State::Follower { leader: None }) else {
            unreachable!("become_leader outside of phase 1")
        };
        let start = prep.start_slot.max(prep.log_start);
        let end = prep.constrained.last_key_value().map_or(start, |(slot, _)| (slot + 1).max(start));
        let mut constrained = prep.constrained;
        // Paxos Made Simple 2.2: propose the highest-ballot value reported by
        // the quorum; a slot nobody accepted is free, so fill it with a no-op.
        let reproposals = (start..end)
            .map(|slot| (slot, constrained.remove(&slot).map_or(SlotValue::Noop, |(_, value)| value)))
            .collect();
        info!("LEADER ballot={} from slot {start}; re-proposing {} slot(s)", prep.ballot, end - start);
        self.state = State::Leading(Leading {
            ballot: prep.ballot,
            next_slot: end,
            in_flight: BTreeMap::new(),
            in_flight_bytes: 0,
            reproposals,
            // Announce at once so that other candidates stand down.
            heartbeat_at: self.now.saturating_sub(self.config.heartbeat_ticks),
            nacked_by: Votes::default(),
            reproposal_end: end,
            read_rounds: VecDeque::new(),
            round_acked: BTreeMap::new(),
            undelivered: Vec::new(),
            answered_up_to: prep.promises.keys().map(|&acceptor| (acceptor, 0)).collect(),
            asked_all_at: self.now,
        });
        self.flush(out);
    }

    fn on_accepted(&mut self, from: NodeId, accepted: Accepted, out: &mut ProposerOutbox) {
        let quorum_size = self.config.cluster.len();
        let State::Leading(lead) = &mut self.state else { return };
        if accepted.ballot != lead.ballot {
            return;
        }
        let answered = lead.answered_up_to.entry(from).or_default();
        *answered = (*answered).max(accepted.slot + 1);
        let Some(entry) = lead.in_flight.get_mut(&accepted.slot) else { return };
        entry.acks.add(from);
        if !entry.acks.is_quorum(quorum_size) {
            return;
        }
        let entry = lead.in_flight.remove(&accepted.slot).expect("entry was present");
        lead.in_flight_bytes -= entry.value.wire_bytes();
        debug!("DECIDE slot={} ballot={} value={}", accepted.slot, lead.ballot, entry.value.describe());
        if let SlotValue::Batch(commands) = &entry.value {
            commands.iter().for_each(|c| {
                self.in_progress.remove(&c.request_id());
            });
        }
        // The value at once to this replica's learner only. An acceptor that
        // accepted it holds it, and a tiny CHOSEN, later, lets it hand the
        // value on; the others are sent the value, so that each write's value
        // leaves the leader once per replica.
        let decide = Decide { slot: accepted.slot, value: entry.value.clone() };
        out.messages.push(Envelope { from: self.id, to: self.id, msg: Message::Decide(decide) });
        let chosen = Chosen { ballot: lead.ballot, slot: accepted.slot };
        lead.undelivered.push(Undelivered { chosen, value: entry.value, accepted_by: entry.acks });
    }

    fn start_election(&mut self, out: &mut ProposerOutbox) {
        let ballot = Ballot::new(self.highest_seen.next_round(), self.id);
        self.highest_seen = ballot;
        out.persist_ballot = Some(ballot);
        let start_slot = self.learned_next_slot;
        info!("PREPARE ballot={ballot} first_slot={start_slot}");
        self.state = State::Preparing(Preparing {
            ballot,
            start_slot,
            chunk_slot: start_slot,
            promises: BTreeMap::new(),
            constrained: BTreeMap::new(),
            log_start: 0,
        });
        self.reset_deadline();
        self.broadcast(Message::Prepare(Prepare { ballot, first_slot: start_slot }), out);
    }

    fn step_down(&mut self, leader: Option<NodeId>, out: &mut ProposerOutbox) {
        let abandoned = match std::mem::replace(&mut self.state, State::Follower { leader }) {
            State::Leading(lead) => {
                // Unconfirmed reads were not served: retrying them elsewhere is safe.
                for read in lead.read_rounds.into_iter().flat_map(|round| round.reads) {
                    out.replies.push((read.request_id(), Reply::Rejected(RequestError::NotLeader { leader })));
                }
                lead.in_flight.into_values().map(|entry| entry.value).collect()
            }
            _ => Vec::new(),
        };
        // Commands in flight may still be chosen; the client retries with the
        // same sequence number and the store applies it once.
        for value in abandoned {
            if let SlotValue::Batch(commands) = value {
                for command in commands.iter() {
                    self.in_progress.remove(&command.request_id());
                    out.replies.push((command.request_id(), Reply::Rejected(RequestError::Abandoned { leader })));
                }
            }
        }
        self.reject_queued(RequestError::NotLeader { leader }, out);
        self.reset_deadline();
    }

    fn reject_queued(&mut self, error: RequestError, out: &mut ProposerOutbox) {
        let queued = self.queue.len() + self.reads_queued.len();
        if queued > 0 {
            warn!("refusing {queued} queued command(s): {error}");
        }
        self.queue_bytes = 0;
        for read in self.reads_queued.drain(..) {
            out.replies.push((read.request_id(), Reply::Rejected(error.clone())));
        }
        for command in self.queue.drain(..) {
            self.in_progress.remove(&command.request_id());
            out.replies.push((command.request_id(), Reply::Rejected(error.clone())));
        }
    }

    fn own_ballot(&self) -> Option<Ballot> {
        match &self.state {
            State::Follower { .. } => None,
            State::Preparing(p) => Some(p.ballot),
            State::Leading(l) => Some(l.ballot),
        }
    }

    fn reset_deadline(&mut self) {
        let base = self.config.election_timeout_ticks;
        self.deadline = self.now + base + self.rng.random_range(0..=base);
    }

    fn heard_from(&mut self, acceptor: NodeId) {
        self.acceptor_heard_at.insert(acceptor, self.now);
    }

    pub fn reachable_acceptors(&self) -> usize {
        self.acceptor_heard_at.values().filter(|&&at| at + self.config.liveness_ticks >= self.now).count()
    }

    fn quorum(&self) -> usize {
        majority(self.config.cluster.len())
    }

    /// To every replica, this one included; `msg` picks the receiving role.
    fn broadcast(&self, msg: Message, out: &mut ProposerOutbox) {
        for &node in &self.config.cluster {
            out.messages.push(Envelope { from: self.id, to: node, msg: msg.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op;
    use rand::SeedableRng;

    fn proposer(id: NodeId) -> Proposer {
        let mut config = ProposerConfig::for_cluster(vec![1, 2, 3]);
        config.election_timeout_ticks = 10;
        Proposer::new(id, config, Ballot::ZERO, StdRng::seed_from_u64(1))
    }
    fn command(client_id: u64) -> Command {
        Command { client_id, seq: 1, op: Op::Put { key: "k".into(), value: client_id.to_string() } }
    }
    fn batch(ids: &[u64]) -> SlotValue {
        SlotValue::batch(ids.iter().map(|&id| command(id)).collect())
    }
    fn pre_vote_of(out: &ProposerOutbox) -> Option<Ballot> {
        out.messages.iter().find_map(|e| match &e.msg {
            Message::PreVote(v) => Some(v.ballot),
            _ => None,
        })
    }
    /// Ticks until the pre-vote, which one peer grants: the election follows.
    fn tick_until_prepare(p: &mut Proposer) -> ProposerOutbox {
        for _ in 0..100 {
            let mut out = ProposerOutbox::default();
            p.on_tick(&mut out);
            if let Some(ballot) = pre_vote_of(&out) {
                assert!(out.persist_ballot.is_none(), "a pre-vote must not raise the ballot");
                let granter = *p.config.cluster.iter().find(|&&n| n != p.id).unwrap();
                let mut out = ProposerOutbox::default();
                p.on_message(granter, Message::PreVoteReply(PreVoteReply { ballot, granted: true }), &mut out);
                assert!(out.persist_ballot.is_some(), "a majority of pre-votes must start the election");
                return out;
            }
        }
        panic!("no pre-vote within 100 ticks");
    }
    fn promise(ballot: Ballot, accepted: Vec<AcceptedEntry>) -> Message {
        Message::Promise(Promise { ballot, first_slot: 0, log_start: 0, accepted, more_from: None })
    }
    fn accepts(out: &ProposerOutbox) -> Vec<(NodeId, Slot, SlotValue)> {
        out.messages
            .iter()
            .filter_map(|e| match &e.msg {
                Message::Accept(a) => Some((e.to, a.slot, a.value.clone())),
                _ => None,
            })
            .collect()
    }
    fn lead(p: &mut Proposer) -> Ballot {
        let out = tick_until_prepare(p);
        let ballot = out.persist_ballot.unwrap();
        let mut out = ProposerOutbox::default();
        p.on_message(1, promise(ballot, vec![]), &mut out);
        p.on_message(2, promise(ballot, vec![]), &mut out);
        assert!(p.is_leading());
        ballot
    }

    #[test]
    fn a_silent_leader_triggers_an_election_that_persists_its_ballot_before_preparing() {
        let mut p = proposer(2);
        let out = tick_until_prepare(&mut p);
        let ballot = Ballot::new(1, 2);
        assert_eq!(out.persist_ballot, Some(ballot));
        let expected: Vec<Envelope> = [1, 2, 3]
            .iter()
            .map(|&to| Envelope { from: 2, to, msg: Message::Prepare(Prepare { ballot, first_slot: 0 }) })
            .collect();
        assert_eq!(out.messages, expected);
    }

    /// Paxos Made Simple 2.2 (P2c): the new leader proposes, for each slot,
    /// the value of the highest-numbered proposal among the promises, and
    /// fills the holes with no-ops.
    #[test]
    fn a_new_leader_re_proposes_the_highest_ballot_values_and_fills_holes() {
        let mut p = proposer(3);
        let ballot = tick_until_prepare(&mut p).persist_ballot.unwrap();
        let mut out = ProposerOutbox::default();
        let old = |slot, round, ids: &[u64]| AcceptedEntry { slot, ballot: Ballot::new(round, 1), value: batch(ids) };
        p.on_message(1, promise(ballot, vec![old(0, 1, &[10]), old(2, 1, &[20])]), &mut out);
        assert!(!p.is_leading(), "one promise is not a quorum");
        p.on_message(2, promise(ballot, vec![old(0, 2, &[11])]), &mut out);
        assert!(p.is_leading());
        let to_acceptor_1: Vec<_> = accepts(&out).into_iter().filter(|(to, _, _)| *to == 1).collect();
        assert_eq!(to_acceptor_1, vec![(1, 0, batch(&[11])), (1, 1, SlotValue::Noop), (1, 2, batch(&[20]))]);
    }

    #[test]
    fn a_follower_that_promised_another_candidate_holds_off_its_own_election() {
        let mut waits = proposer(2);
        let mut out = ProposerOutbox::default();
        // The deadline is between 10 and 20 ticks; hearing of a candidate every 9 ticks keeps it away.
        for tick in 0..60 {
            if tick % 9 == 0 {
                waits.on_candidate_seen(Ballot::new(4, 3));
            }
            waits.on_tick(&mut out);
        }
        assert!(out.persist_ballot.is_none(), "a follower started a duel with an active candidate");
        let next = tick_until_prepare(&mut waits).persist_ballot.unwrap();
        assert!(next > Ballot::new(4, 3), "its own election must outbid the candidate it saw: {next}");
    }

    #[test]
    fn a_cut_promise_makes_the_leader_ask_for_the_rest_with_the_same_ballot() {
        let mut p = proposer(1);
        let ballot = tick_until_prepare(&mut p).persist_ballot.unwrap();
        let mut out = ProposerOutbox::default();
        let cut = Promise { ballot, first_slot: 0, log_start: 0, accepted: vec![], more_from: Some(5) };
        p.on_message(2, Message::Promise(cut), &mut out);
        p.on_message(3, promise(ballot, vec![]), &mut out);
        assert!(!p.is_leading());
        assert!(out.messages.iter().all(|e| e.msg == Message::Prepare(Prepare { ballot, first_slot: 5 })));
        assert_eq!(out.messages.len(), 3);
    }

    fn sent(out: &ProposerOutbox) -> Vec<(NodeId, Message)> {
        out.messages.iter().map(|e| (e.to, e.msg.clone())).collect()
    }
    /// Client commands with these ids, then a flush: what the leader sends.
    fn submit(p: &mut Proposer, ids: &[u64]) -> ProposerOutbox {
        let mut out = ProposerOutbox::default();
        ids.iter().for_each(|&id| p.on_client_command(command(id), &mut out));
        p.flush(&mut out);
        out
    }
    /// The acceptors sent an ACCEPT.
    fn asked(out: &ProposerOutbox) -> Vec<NodeId> {
        accepts(out).iter().map(|(to, _, _)| *to).collect()
    }

    #[test]
    fn queued_commands_go_out_as_one_batch_to_a_majority_and_a_quorum_of_accepted_decides_it() {
        let mut p = proposer(1);
        let ballot = lead(&mut p);
        let out = submit(&mut p, &[7, 8]);
        // Its own acceptor and one that promised: a bare majority of three.
        assert_eq!(accepts(&out), vec![(1, 0, batch(&[7, 8])), (2, 0, batch(&[7, 8]))]);
        let mut out = ProposerOutbox::default();
        p.on_message(2, Message::Accepted(Accepted { ballot, slot: 0 }), &mut out);
        p.on_message(2, Message::Accepted(Accepted { ballot, slot: 0 }), &mut out);
        assert!(out.messages.is_empty(), "a duplicate vote must not make a quorum");
        p.on_message(1, Message::Accepted(Accepted { ballot, slot: 0 }), &mut out);
        // The value to its own learner at once; the others hear of the
        // decision with the next ACCEPT.
        let decide = |slot, ids: &[u64]| Message::Decide(Decide { slot, value: batch(ids) });
        assert_eq!(sent(&out), vec![(1, decide(0, &[7, 8]))]);
        let out = submit(&mut p, &[9]);
        let chosen = |slot| Message::Chosen(Chosen { ballot, slot });
        let accept = |to, slot, id| (to, Message::Accept(Accept { ballot, slot, value: batch(&[id]) }));
        // Replica 2's acceptor holds the value: a CHOSEN. Replica 3 never saw it: the value.
        let expected = vec![(2, chosen(0)), (3, decide(0, &[7, 8])), accept(1, 1, 9), accept(2, 1, 9)];
        assert_eq!(sent(&out), expected);
        // With no next ACCEPT, the tick sends them.
        let mut out = ProposerOutbox::default();
        p.on_message(2, Message::Accepted(Accepted { ballot, slot: 1 }), &mut out);
        p.on_message(1, Message::Accepted(Accepted { ballot, slot: 1 }), &mut out);
        assert_eq!(sent(&out), vec![(1, decide(1, &[9]))]);
        let mut out = ProposerOutbox::default();
        p.on_tick(&mut out);
        let decisions: Vec<_> =
            sent(&out).into_iter().filter(|(_, m)| matches!(m, Message::Chosen(_) | Message::Decide(_))).collect();
        assert_eq!(decisions, vec![(2, chosen(1)), (3, decide(1, &[9]))]);
    }

    #[test]
    fn a_majority_that_does_not_answer_is_widened_to_every_acceptor_and_the_next_slot_goes_to_who_answered() {
        let mut p = proposer(1);
        let ballot = lead(&mut p);
        let out = submit(&mut p, &[7]);
        assert_eq!(asked(&out), vec![1, 2]);
        // Replica 2 has gone silent: only the leader's own acceptor answers.
        let mut out = ProposerOutbox::default();
        p.on_message(1, Message::Accepted(Accepted { ballot, slot: 0 }), &mut out);
        let mut widened = Vec::new();
        for _ in 0..p.config.widen_after_ticks {
            let mut out = ProposerOutbox::default();
            p.on_tick(&mut out);
            widened.extend(accepts(&out));
        }
        assert_eq!(widened, vec![(3, 0, batch(&[7]))], "the acceptor not yet asked is asked");
        let mut out = ProposerOutbox::default();
        p.on_message(3, Message::Accepted(Accepted { ballot, slot: 0 }), &mut out);
        assert_eq!(sent(&out), vec![(1, Message::Decide(Decide { slot: 0, value: batch(&[7]) }))]);
        let out = submit(&mut p, &[8]);
        assert_eq!(asked(&out), vec![1, 3]);
    }

    #[test]
    fn once_each_heartbeat_interval_a_slot_goes_to_every_acceptor() {
        let mut p = proposer(1);
        let ballot = lead(&mut p);
        let askeds = |p: &mut Proposer, slot: Slot| {
            let out = submit(p, &[slot + 10]);
            let asked_now = asked(&out);
            let mut out = ProposerOutbox::default();
            p.on_message(1, Message::Accepted(Accepted { ballot, slot }), &mut out);
            p.on_message(2, Message::Accepted(Accepted { ballot, slot }), &mut out);
            asked_now
        };
        assert_eq!(askeds(&mut p, 0), vec![1, 2]);
        for _ in 0..p.config.heartbeat_ticks {
            p.on_tick(&mut ProposerOutbox::default());
        }
        // Replica 3 hears of slots proposed: were it rebuilding, it could
        // witness one; were its disk failing, it would find out.
        assert_eq!(askeds(&mut p, 1), vec![1, 2, 3]);
        assert_eq!(askeds(&mut p, 2), vec![1, 2]);
    }

    #[test]
    fn with_a_slot_in_flight_a_small_batch_waits_for_the_next_tick() {
        let mut p = proposer(1);
        lead(&mut p);
        let out = submit(&mut p, &[7]);
        assert_eq!(accepts(&out).len(), 2, "an idle leader proposes at once");
        let mut out = submit(&mut p, &[8]);
        assert!(accepts(&out).is_empty(), "one command behind a slot in flight waits for company");
        p.on_tick(&mut out);
        p.flush(&mut out);
        assert_eq!(accepts(&out).iter().filter(|(to, _, _)| *to == 2).count(), 1, "the tick sends it");
    }

    #[test]
    fn a_higher_promise_deposes_the_leader_and_hands_requests_back() {
        let mut p = proposer(1);
        let ballot = lead(&mut p);
        let mut out = submit(&mut p, &[7]);
        // Not flushed yet: 8 stays queued.
        p.on_client_command(command(8), &mut out);
        let mut out = ProposerOutbox::default();
        p.on_message(3, Message::Nack(Nack { ballot, promised: Ballot::new(5, 3) }), &mut out);
        assert!(p.is_leading(), "one acceptor promised higher, but a majority remains without it");
        p.on_message(2, Message::Nack(Nack { ballot, promised: Ballot::new(5, 3) }), &mut out);
        assert!(!p.is_leading());
        assert_eq!(p.status().leader, Some(3));
        let replies: BTreeMap<u64, Reply> = out.replies.into_iter().map(|((c, _), r)| (c, r)).collect();
        let abandoned = Reply::Rejected(RequestError::Abandoned { leader: Some(3) });
        assert_eq!(replies[&7], abandoned, "an in-flight command may still be chosen");
        assert_eq!(replies[&8], Reply::Rejected(RequestError::NotLeader { leader: Some(3) }));
        assert_eq!(replies.len(), 2);
        let mut out = ProposerOutbox::default();
        p.on_client_command(command(10), &mut out);
        assert_eq!(out.replies[0].1, Reply::Rejected(RequestError::NotLeader { leader: Some(3) }));
    }

    #[test]
    fn a_leader_that_hears_from_too_few_acceptors_refuses_with_no_quorum() {
        let mut p = proposer(1);
        lead(&mut p);
        let mut out = ProposerOutbox::default();
        for _ in 0..100 {
            p.on_tick(&mut out);
        }
        let mut out = ProposerOutbox::default();
        p.on_client_command(command(7), &mut out);
        assert_eq!(out.replies, vec![((7, 1), Reply::Rejected(RequestError::NoQuorum { reachable: 0, needed: 2 }))]);
    }

    #[test]
    fn a_retry_of_a_command_in_flight_joins_it_instead_of_being_refused_as_not_applied() {
        let mut p = proposer(1);
        lead(&mut p);
        let mut out = submit(&mut p, &[7]);
        // The acceptors fall silent: new commands are refused with NoQuorum ...
        for _ in 0..100 {
            p.on_tick(&mut out);
        }
        let mut out = ProposerOutbox::default();
        p.on_client_command(command(8), &mut out);
        assert_eq!(out.replies, vec![((8, 1), Reply::Rejected(RequestError::NoQuorum { reachable: 0, needed: 2 }))]);
        // ... but not a retry of 7, which may yet be chosen.
        let mut out = ProposerOutbox::default();
        p.on_client_command(command(7), &mut out);
        assert!(out.replies.is_empty(), "a retry of an in-flight command was told {:?}", out.replies);
        p.flush(&mut out);
        assert!(accepts(&out).is_empty(), "a retry must not be proposed a second time");
    }

    #[test]
    fn a_replica_that_may_not_lead_never_runs_for_election_and_refuses_clients() {
        let mut p = proposer(2);
        p.set_may_lead(false, Ballot::ZERO);
        let mut out = ProposerOutbox::default();
        for _ in 0..200 {
            p.on_tick(&mut out);
        }
        assert!(out.persist_ballot.is_none() && out.messages.is_empty());
        p.on_client_command(command(7), &mut out);
        assert_eq!(out.replies, vec![((7, 1), Reply::Rejected(RequestError::NotLeader { leader: None }))]);
        p.set_may_lead(true, Ballot::new(9, 3));
        assert_eq!(tick_until_prepare(&mut p).persist_ballot, Some(Ballot::new(10, 2)));
    }

    /// Raft thesis 9.6: a replica grants a pre-vote only if it has heard from
    /// no healthy leader for an election timeout, so a replica back from a
    /// partition cannot start an election, nor raise any ballot, while a leader serves.
    #[test]
    fn pre_votes_are_denied_while_a_healthy_leader_is_heard_and_granted_after() {
        let mut follower = proposer(2);
        let mut out = ProposerOutbox::default();
        follower.on_message(1, Message::LeaderAlive(LeaderAlive { ballot: Ballot::new(3, 1) }), &mut out);
        let ask = |p: &mut Proposer| {
            let mut out = ProposerOutbox::default();
            p.on_message(3, Message::PreVote(PreVote { ballot: Ballot::new(9, 3) }), &mut out);
            match &out.messages[..] {
                [Envelope { to: 3, msg: Message::PreVoteReply(reply), .. }] => reply.granted,
                other => panic!("expected one reply, got {other:?}"),
            }
        };
        assert!(!ask(&mut follower), "granted a pre-vote while hearing the leader");
        for _ in 0..10 {
            follower.on_tick(&mut out);
        }
        assert!(ask(&mut follower), "no leader heard for an election timeout: the pre-vote must be granted");
        assert_eq!(follower.status().ballot, Ballot::new(3, 1), "answering a pre-vote raises nothing");
    }

    #[test]
    fn a_cut_off_replica_asks_but_raises_no_ballot_without_a_majority() {
        let mut p = proposer(3);
        let mut out = ProposerOutbox::default();
        for _ in 0..500 {
            p.on_tick(&mut out);
        }
        assert!(pre_vote_of(&out).is_some(), "it must keep asking");
        assert!(out.persist_ballot.is_none(), "a replica nobody answers must not raise its ballot");
        assert!(out.messages.iter().all(|e| matches!(e.msg, Message::PreVote(_))));
    }

    #[test]
    fn a_leader_that_lost_its_quorum_stops_announcing_itself_and_grants_pre_votes() {
        let mut p = proposer(1);
        let ballot = lead(&mut p);
        let mut out = ProposerOutbox::default();
        for _ in 0..100 {
            p.on_tick(&mut out);
        }
        let mut out = ProposerOutbox::default();
        for _ in 0..10 {
            p.on_tick(&mut out);
        }
        assert!(out.messages.iter().any(|e| matches!(e.msg, Message::Heartbeat(_))), "it keeps probing acceptors");
        assert!(!out.messages.iter().any(|e| matches!(e.msg, Message::LeaderAlive(_))));
        let mut out = ProposerOutbox::default();
        p.on_message(2, Message::PreVote(PreVote { ballot: Ballot::new(ballot.round + 1, 2) }), &mut out);
        assert!(matches!(&out.messages[0].msg, Message::PreVoteReply(PreVoteReply { granted: true, .. })));
    }

    fn read(client_id: u64) -> Command {
        Command { client_id, seq: 1, op: Op::Get { key: "k".into() } }
    }
    fn read_round_of(out: &ProposerOutbox) -> Option<u64> {
        out.messages.iter().find_map(|e| match &e.msg {
            Message::Heartbeat(h) if h.read_round > 0 => Some(h.read_round),
            _ => None,
        })
    }
    fn ack(p: &mut Proposer, from: NodeId, ballot: Ballot, read_round: u64) -> ProposerOutbox {
        let mut out = ProposerOutbox::default();
        p.on_message(from, Message::HeartbeatAck(HeartbeatAck { ballot, read_round }), &mut out);
        out
    }

    #[test]
    fn a_read_takes_no_slot_and_waits_for_a_majority_to_confirm_a_round_sent_after_it() {
        let mut p = proposer(1);
        let ballot = lead(&mut p);
        let out = submit(&mut p, &[7]);
        let write_slot = accepts(&out)[0].1;
        // Acknowledgements of rounds from before the read prove nothing about it.
        ack(&mut p, 2, ballot, 0);
        let mut out = ProposerOutbox::default();
        p.on_client_command(read(8), &mut out);
        p.flush(&mut out);
        assert!(accepts(&out).is_empty(), "a read takes no slot");
        let round = read_round_of(&out).expect("the read starts a round of heartbeats");

        // A read arriving while that round is out waits for company until the
        // next tick, then goes in a round of its own.
        let mut out = ProposerOutbox::default();
        p.on_client_command(read(9), &mut out);
        p.flush(&mut out);
        assert_eq!(read_round_of(&out), None, "a lone read lingers while a round is out");
        let mut out = ProposerOutbox::default();
        p.on_tick(&mut out);
        p.flush(&mut out);
        let next = read_round_of(&out).expect("a second round at the tick");
        assert!(next > round);

        assert!(ack(&mut p, 1, ballot, round).reads.is_empty(), "one acceptor of three is no majority");
        assert!(ack(&mut p, 3, Ballot::new(ballot.round + 1, 3), round).reads.is_empty(), "another ballot's ack");
        let out = ack(&mut p, 2, ballot, round);
        let reads: Vec<_> = out.reads.iter().flat_map(|b| b.reads.iter().map(|r| r.client_id)).collect();
        assert_eq!(reads, [8], "the first round answers the read it was sent for, not the later one");
        assert_eq!(out.reads[0].read_index, write_slot, "after the write still undecided, not before");
        ack(&mut p, 1, ballot, next);
        let out = ack(&mut p, 3, ballot, next);
        assert_eq!(out.reads.iter().flat_map(|b| b.reads.iter().map(|r| r.client_id)).collect::<Vec<_>>(), [9]);

        // A majority's acknowledgement of a later round confirms the earlier ones too.
        let mut out = ProposerOutbox::default();
        p.on_client_command(read(10), &mut out);
        p.flush(&mut out);
        p.on_client_command(read(11), &mut out);
        p.on_tick(&mut out);
        p.flush(&mut out);
        let last = read_round_of(&ProposerOutbox {
            messages: out.messages.split_off(out.messages.len() - 3),
            ..Default::default()
        });
        ack(&mut p, 1, ballot, last.unwrap());
        let out = ack(&mut p, 2, ballot, last.unwrap());
        assert_eq!(out.reads.iter().flat_map(|b| b.reads.iter().map(|r| r.client_id)).collect::<Vec<_>>(), [10, 11]);
    }

    #[test]
    fn reads_follow_every_slot_an_election_found_and_a_deposed_leader_answers_none() {
        let mut p = proposer(1);
        let out = tick_until_prepare(&mut p);
        let ballot = out.persist_ballot.unwrap();
        let earlier = Ballot::new(ballot.round - 1, 2);
        let found = vec![AcceptedEntry { slot: 4, ballot: earlier, value: batch(&[1]) }];
        let mut out = ProposerOutbox::default();
        p.on_message(1, promise(ballot, found.clone()), &mut out);
        p.on_message(2, promise(ballot, found), &mut out);
        assert!(p.is_leading());
        let mut out = ProposerOutbox::default();
        p.on_client_command(read(8), &mut out);
        p.flush(&mut out);
        let round = read_round_of(&out).unwrap();
        ack(&mut p, 1, ballot, round);
        let out = ack(&mut p, 2, ballot, round);
        assert_eq!(out.reads[0].read_index, 5, "an earlier leader may have acknowledged slot 4");

        let mut out = ProposerOutbox::default();
        p.on_client_command(read(9), &mut out);
        p.flush(&mut out);
        let round = read_round_of(&out).unwrap();
        let higher = Ballot::new(ballot.round + 1, 3);
        let mut out = ack(&mut p, 1, ballot, round);
        p.on_message(2, Message::Nack(Nack { ballot, promised: higher }), &mut out);
        p.on_message(3, Message::Nack(Nack { ballot, promised: higher }), &mut out);
        assert!(!p.is_leading());
        assert!(out.reads.is_empty(), "a leader a majority refused must not answer from its own state");
        let refusal = out.replies.iter().find(|((client, _), _)| *client == 9).map(|(_, reply)| reply);
        assert_eq!(refusal, Some(&Reply::Rejected(RequestError::NotLeader { leader: Some(3) })), "retried elsewhere");
    }
}
