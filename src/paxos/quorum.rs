//! Quorum arithmetic, kept apart so it can be checked against plain counting.

use super::ballot::NodeId;
use std::collections::BTreeSet;

/// Smallest number of replicas such that any two such groups intersect.
pub fn majority(cluster_size: usize) -> usize {
    assert!(cluster_size > 0, "a cluster has at least one replica");
    cluster_size / 2 + 1
}

/// The distinct replicas that voted for one thing (a promise round, one slot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Votes {
    voters: BTreeSet<NodeId>,
}

impl Votes {
    /// Records a vote; a duplicate vote from the same replica counts once.
    pub fn add(&mut self, voter: NodeId) {
        self.voters.insert(voter);
    }

    pub fn contains(&self, voter: NodeId) -> bool {
        self.voters.contains(&voter)
    }

    pub fn count(&self) -> usize {
        self.voters.len()
    }

    pub fn is_quorum(&self, cluster_size: usize) -> bool {
        self.count() >= majority(cluster_size)
    }
}

impl Extend<NodeId> for Votes {
    fn extend<I: IntoIterator<Item = NodeId>>(&mut self, voters: I) {
        self.voters.extend(voters);
    }
}

impl FromIterator<NodeId> for Votes {
    fn from_iter<I: IntoIterator<Item = NodeId>>(voters: I) -> Self {
        Votes { voters: voters.into_iter().collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn majorities_of_small_clusters() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    /// Property: any two majorities of the same cluster share a member, and
    /// `Votes` agrees with counting distinct voters by hand.
    #[test]
    fn majorities_intersect_and_votes_match_naive_counting() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let n: usize = rng.random_range(1..=9);
            let mut a = Votes::default();
            let mut b = Votes::default();
            let mut naive_a = Vec::new();
            for _ in 0..rng.random_range(0..2 * n) {
                let voter = rng.random_range(1..=n as NodeId);
                a.add(voter);
                if !naive_a.contains(&voter) {
                    naive_a.push(voter);
                }
                b.add(rng.random_range(1..=n as NodeId));
            }
            assert_eq!(a.count(), naive_a.len());
            assert_eq!(a.is_quorum(n), 2 * naive_a.len() > n);
            if a.is_quorum(n) && b.is_quorum(n) {
                assert!(a.voters.intersection(&b.voters).next().is_some());
            }
        }
    }
}
