use crate::paxos::proposer::ProposerStatus;
use crate::paxos::{Ballot, NodeId, Slot};
use serde::{Deserialize, Serialize};

/// What `STATUS` shows for one replica; answered even while its acceptor is offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub acceptor_online: bool,
    pub promised: Ballot,
    pub accepted_slots: usize,
    pub log_start: Slot,
    pub proposer: ProposerStatus,
    pub learner_next_slot: Slot,
    pub keys: usize,
    pub peers_connected: Vec<NodeId>,
}
