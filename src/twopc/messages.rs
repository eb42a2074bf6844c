//! Two-phase commit vocabulary, kept apart from Paxos's: here a coordinator
//! sends VOTE_REQUEST, participants answer VOTE, and the decision is COMMIT or
//! ABORT, acknowledged by ACK. "Prepare" means nothing in this protocol's code.

use crate::kv::{Command, Reply};
use crate::paxos::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Unique across coordinator restarts: the epoch grows at every start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId {
    pub coordinator: NodeId,
    pub epoch: u64,
    pub seq: u64,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.coordinator, self.epoch, self.seq)
    }
}

/// Phase 1: "can you apply this? If so, lock its key and promise to".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    pub txn: TxnId,
    pub command: Command,
}

/// A YES is durable before it is sent: the participant can no longer refuse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub txn: TxnId,
    pub yes: bool,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub txn: TxnId,
    pub commit: bool,
}

/// The participant applied (with the reply it computed) or dropped the command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub txn: TxnId,
    pub reply: Option<Reply>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxMessage {
    VoteRequest(VoteRequest),
    Vote(Vote),
    Decision(Decision),
    Ack(Ack),
}

impl TxMessage {
    pub fn to_participant(&self) -> bool {
        matches!(self, TxMessage::VoteRequest(_) | TxMessage::Decision(_))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            TxMessage::VoteRequest(_) => "VOTE_REQUEST",
            TxMessage::Vote(_) => "VOTE",
            TxMessage::Decision(Decision { commit: true, .. }) => "COMMIT",
            TxMessage::Decision(Decision { commit: false, .. }) => "ABORT",
            TxMessage::Ack(_) => "ACK",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxEnvelope {
    pub from: NodeId,
    pub to: NodeId,
    pub msg: TxMessage,
}

impl crate::mailbox::Weigh for TxEnvelope {
    /// Upper bound of the encoded size.
    fn weight(&self) -> usize {
        64 + match &self.msg {
            TxMessage::VoteRequest(request) => request.command.wire_bytes(),
            TxMessage::Vote(vote) => vote.reason.as_ref().map_or(0, String::len),
            TxMessage::Decision(_) => 0,
            TxMessage::Ack(ack) => match &ack.reply {
                Some(crate::kv::Reply::Value(Some(value))) => value.len() + 16,
                Some(crate::kv::Reply::Rejected(error)) => error.to_string().len() + 16,
                _ => 16,
            },
        }
    }
}
