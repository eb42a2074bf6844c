//! Paxos vocabulary: one struct per message, one enum over them, carried in an
//! envelope. The enum decides which role receives a message.

use super::ballot::{Ballot, NodeId, Slot};
use crate::kv::{Changes, Command, KvStore, StoreChunk, StoreCursor};
use crate::mailbox::Weigh;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Proposer,
    Acceptor,
    Learner,
}

/// What one log slot holds: a batch of client commands, or a no-op that a new
/// leader uses to fill a hole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotValue {
    Noop,
    /// Shared: the leader sends one value to every acceptor and learner, and
    /// the roles keep it, without copying its commands.
    Batch(Arc<Vec<Command>>),
}

impl SlotValue {
    pub fn batch(commands: Vec<Command>) -> SlotValue {
        SlotValue::Batch(Arc::new(commands))
    }

    /// Upper bound of the encoded size, for frame, batch and queue budgets.
    pub fn wire_bytes(&self) -> usize {
        match self {
            SlotValue::Noop => 1,
            SlotValue::Batch(commands) => 10 + commands.iter().map(Command::wire_bytes).sum::<usize>(),
        }
    }

    /// What the slot holds, short and on one line, for logs, traces and the
    /// live view: "PUT a=1, GET b, +2 more" (keys and values cut to a few
    /// characters, control characters escaped).
    pub fn describe(&self) -> String {
        const SHOWN: usize = 2;
        match self {
            SlotValue::Noop => "noop".to_string(),
            SlotValue::Batch(commands) => {
                let mut parts: Vec<String> = commands.iter().take(SHOWN).map(|c| c.op.describe()).collect();
                if commands.len() > SHOWN {
                    parts.push(format!("+{} more", commands.len() - SHOWN));
                }
                parts.join(", ")
            }
        }
    }
}

/// Phase 1a: asks acceptors to promise `ballot` for every slot from `first_slot` on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub ballot: Ballot,
    pub first_slot: Slot,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedEntry {
    pub slot: Slot,
    pub ballot: Ballot,
    pub value: SlotValue,
}

/// Phase 1b. Reports the accepted entries from `first_slot` on. A promise that
/// would not fit in a frame is cut: `more_from` then says where the next
/// `Prepare` (same ballot) must continue. Slots below `log_start` were decided
/// and compacted away by this acceptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    pub ballot: Ballot,
    pub first_slot: Slot,
    pub log_start: Slot,
    pub accepted: Vec<AcceptedEntry>,
    pub more_from: Option<Slot>,
}

/// Refusal of a Prepare, Accept or Heartbeat whose ballot is below `promised`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub ballot: Ballot,
    pub promised: Ballot,
}

/// Phase 2a.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    pub ballot: Ballot,
    pub slot: Slot,
    pub value: SlotValue,
}

/// Phase 2b, sent to the proposer, which acts as the distinguished learner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub ballot: Ballot,
    pub slot: Slot,
}

/// The value of `slot` that `ballot` proposed is chosen: sent by the leader to
/// the other replicas' acceptors instead of the value itself. An acceptor that
/// accepted that ballot's value for the slot (the ACCEPT travels ahead of this
/// on the same link) hands it to its own learner as a `Handoff`; one that did not
/// ignores it, and its learner catches up from a peer. Only the ballot that
/// proposed a value can name it, so the value handed on is the chosen one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chosen {
    pub ballot: Ballot,
    pub slot: Slot,
}

/// A value is chosen: sent by the leader to its own learner (as `Decide`), and
/// by an acceptor to its own learner on a CHOSEN (as `Handoff`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decide {
    pub slot: Slot,
    pub value: SlotValue,
}

/// Leader to acceptors: measures which acceptors answer while the log is
/// idle, and confirms leadership for reads. `read_round` is the leader's
/// latest round of reads: an acknowledgement of it from a majority proves
/// that no higher ballot had been promised by a majority when the round
/// began, so no write newer than the leader knows of can have completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub ballot: Ballot,
    pub read_round: u64,
}

/// Sent only by an acceptor that has promised no ballot above `ballot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    pub ballot: Ballot,
    pub read_round: u64,
}

/// Leader to the other proposers: "I lead with `ballot`; do not start an election".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderAlive {
    pub ballot: Ballot,
}

/// Pre-vote (Raft thesis 9.6, etcd's PreVote): "could I win an election with
/// `ballot`?" Sent before any PREPARE, so a replica that was cut off raises
/// no ballot, and deposes no healthy leader, unless a majority would join it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVote {
    pub ballot: Ballot,
}

/// Granted only by a replica that has heard from no healthy leader for an
/// election timeout (a leader grants only once it lost its quorum).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteReply {
    pub ballot: Ballot,
    pub granted: bool,
}

/// Learner to learner: "send me what was decided from `next_slot` on", or
/// the next chunk of the snapshot transfer in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchupRequest {
    pub next_slot: Slot,
    pub resume: Option<SnapshotResume>,
}

/// Where a snapshot transfer continues: the chunk after `cursor` of the
/// snapshot taken at `snapshot_slot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResume {
    pub snapshot_slot: Slot,
    pub cursor: StoreCursor,
}

/// A learner's state after applying every slot below `next_slot`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub next_slot: Slot,
    pub store: KvStore,
}

/// A snapshot handed over to be made durable, with what changed in the store
/// since the snapshot handed over before it, at slot `since` (`None` after an
/// install: only the whole store will do).
#[derive(Clone, Debug)]
pub struct SnapshotJob {
    pub snapshot: Snapshot,
    pub changes: Option<(Slot, Changes)>,
}

impl SnapshotJob {
    /// Takes in a job still waiting to be written, so that skipping it loses
    /// none of its changes.
    pub fn absorb(&mut self, older: SnapshotJob) {
        self.changes = match (self.changes.take(), older.changes) {
            (Some((_, mut newer)), Some((since, older))) => {
                newer.absorb(older);
                Some((since, newer))
            }
            _ => None,
        };
    }
}

/// One chunk of a snapshot sent to a lagging learner. Chunks travel one per
/// request, so a store of any size crosses links whose frames are small, and
/// an interrupted transfer resumes where it stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    pub snapshot_slot: Slot,
    pub applied_commands: u64,
    /// The chunk follows this cursor (`StoreCursor::Start` for the first).
    pub after: StoreCursor,
    pub chunk: StoreChunk,
    /// Where the next chunk starts; `None` for the last.
    pub next: Option<StoreCursor>,
    /// Checksum of the encoded chunk, verified before it is used.
    pub crc32: u32,
}

impl SnapshotPart {
    pub fn checksum(chunk: &StoreChunk) -> u32 {
        crc32fast::hash(&crate::wire::encode(chunk))
    }
}

/// Decided entries from the requested slot on, or one chunk of a snapshot when
/// the requested slots were already compacted away.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchupReply {
    pub snapshot: Option<SnapshotPart>,
    pub entries: Vec<(Slot, SlotValue)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Prepare(Prepare),
    Promise(Promise),
    Nack(Nack),
    Accept(Accept),
    Accepted(Accepted),
    Decide(Decide),
    Chosen(Chosen),
    /// A DECIDE from this replica's acceptor, which held the value a CHOSEN named.
    Handoff(Decide),
    Heartbeat(Heartbeat),
    HeartbeatAck(HeartbeatAck),
    LeaderAlive(LeaderAlive),
    PreVote(PreVote),
    PreVoteReply(PreVoteReply),
    CatchupRequest(CatchupRequest),
    CatchupReply(CatchupReply),
}

impl Message {
    /// The role that handles this message at the receiving replica.
    pub fn role(&self) -> Role {
        match self {
            Message::Prepare(_) | Message::Accept(_) | Message::Chosen(_) | Message::Heartbeat(_) => Role::Acceptor,
            Message::Promise(_)
            | Message::Nack(_)
            | Message::Accepted(_)
            | Message::HeartbeatAck(_)
            | Message::LeaderAlive(_)
            | Message::PreVote(_)
            | Message::PreVoteReply(_) => Role::Proposer,
            Message::Decide(_) | Message::Handoff(_) | Message::CatchupRequest(_) | Message::CatchupReply(_) => {
                Role::Learner
            }
        }
    }

    /// The role that sends this message.
    pub fn sender_role(&self) -> Role {
        match self {
            Message::Prepare(_)
            | Message::Accept(_)
            | Message::Heartbeat(_)
            | Message::LeaderAlive(_)
            | Message::PreVote(_)
            | Message::PreVoteReply(_)
            | Message::Chosen(_)
            | Message::Decide(_) => Role::Proposer,
            Message::Promise(_)
            | Message::Nack(_)
            | Message::Accepted(_)
            | Message::HeartbeatAck(_)
            | Message::Handoff(_) => Role::Acceptor,
            Message::CatchupRequest(_) | Message::CatchupReply(_) => Role::Learner,
        }
    }

    /// The ballot a message carries, if any.
    pub fn ballot(&self) -> Option<Ballot> {
        match self {
            Message::Prepare(m) => Some(m.ballot),
            Message::Promise(m) => Some(m.ballot),
            Message::Nack(m) => Some(m.ballot.max(m.promised)),
            Message::Accept(m) => Some(m.ballot),
            Message::Accepted(m) => Some(m.ballot),
            Message::Chosen(m) => Some(m.ballot),
            Message::Heartbeat(m) => Some(m.ballot),
            Message::HeartbeatAck(m) => Some(m.ballot),
            Message::LeaderAlive(m) => Some(m.ballot),
            Message::PreVote(m) => Some(m.ballot),
            Message::PreVoteReply(m) => Some(m.ballot),
            Message::Decide(_) | Message::Handoff(_) | Message::CatchupRequest(_) | Message::CatchupReply(_) => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Message::Prepare(_) => "PREPARE",
            Message::Promise(_) => "PROMISE",
            Message::Nack(_) => "NACK",
            Message::Accept(_) => "ACCEPT",
            Message::Accepted(_) => "ACCEPTED",
            Message::Decide(_) | Message::Handoff(_) => "DECIDE",
            Message::Chosen(_) => "CHOSEN",
            Message::Heartbeat(_) => "HEARTBEAT",
            Message::HeartbeatAck(_) => "HEARTBEAT_ACK",
            Message::LeaderAlive(_) => "LEADER_ALIVE",
            Message::PreVote(_) => "PRE_VOTE",
            Message::PreVoteReply(_) => "PRE_VOTE_REPLY",
            Message::CatchupRequest(_) => "CATCHUP_REQUEST",
            Message::CatchupReply(_) => "CATCHUP_REPLY",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub msg: Message,
}

/// Ballots, slots, ids and tags: what a message without a value costs at most.
const HEADER_BYTES: usize = 64;

impl Message {
    /// Upper bound of the encoded size.
    pub fn wire_bytes(&self) -> usize {
        HEADER_BYTES
            + match self {
                Message::Accept(m) => m.value.wire_bytes(),
                Message::Decide(m) | Message::Handoff(m) => m.value.wire_bytes(),
                Message::Promise(m) => m.accepted.iter().map(|e| 32 + e.value.wire_bytes()).sum(),
                Message::CatchupRequest(CatchupRequest { resume: Some(r), .. }) => cursor_bytes(&r.cursor),
                Message::CatchupReply(m) => {
                    m.entries.iter().map(|(_, v)| 10 + v.wire_bytes()).sum::<usize>()
                        + m.snapshot.as_ref().map_or(0, |p| {
                            p.chunk.wire_bytes() + cursor_bytes(&p.after) + p.next.as_ref().map_or(0, cursor_bytes)
                        })
                }
                _ => 0,
            }
    }
}

fn cursor_bytes(cursor: &StoreCursor) -> usize {
    match cursor {
        StoreCursor::AfterKey(key) => 10 + key.len(),
        _ => 10,
    }
}

impl Weigh for Envelope {
    fn weight(&self) -> usize {
        self.msg.wire_bytes()
    }
}
