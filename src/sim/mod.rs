//! Deterministic simulations of the sans-IO protocol cores: one seed decides
//! a whole run, and every step is checked against the protocol's invariants.

pub mod paxos;
pub mod twopc;

pub use paxos::{run, SimConfig, SimStats};
