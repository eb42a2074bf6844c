//! Ballot numbers: `(round, node_id)`, ordered by round first so that two
//! proposers can never issue the same ballot (Paxos Made Simple, section 2.2:
//! "different proposers choose their numbers from disjoint sets").

use serde::{Deserialize, Serialize};
use std::fmt;

/// A replica's identity; replicas are numbered from 1.
pub type NodeId = u32;

/// Position in the replicated log.
pub type Slot = u64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub node_id: NodeId,
}

impl Ballot {
    /// Below every ballot a proposer can issue (rounds start at 1).
    pub const ZERO: Ballot = Ballot { round: 0, node_id: 0 };
    /// No honest cluster gets near this (a thousand elections a second for
    /// eight thousand years): a ballot above it is refused, so `round + 1`
    /// can never wrap.
    pub const ROUND_MAX: u64 = 1 << 48;

    /// False for a round no honest proposer reaches: such a message is refused.
    pub fn is_sane(&self) -> bool {
        self.round <= Self::ROUND_MAX
    }

    /// The next round above this ballot's.
    pub fn next_round(&self) -> u64 {
        assert!(self.is_sane(), "ballot {self} above ROUND_MAX was let in");
        self.round + 1
    }

    pub fn new(round: u64, node_id: NodeId) -> Self {
        Ballot { round, node_id }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_dominate_node_ids_and_ties_are_impossible() {
        assert!(Ballot::new(2, 1) > Ballot::new(1, 5));
        assert!(Ballot::new(2, 3) > Ballot::new(2, 1));
        assert_ne!(Ballot::new(2, 3), Ballot::new(2, 1));
        assert!(Ballot::ZERO < Ballot::new(1, 1));
    }
}
