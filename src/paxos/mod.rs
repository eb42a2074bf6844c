//! Multi-Paxos as three sans-IO state machines. Each takes messages and ticks
//! and fills an outbox; the runtime (`crate::node`) or the simulator
//! (`crate::sim`) owns sockets, threads, clocks, disks and randomness.

pub mod acceptor;
pub mod ballot;
pub mod learner;
pub mod messages;
pub mod proposer;
pub mod quorum;

pub use ballot::{Ballot, NodeId, Slot};
pub use messages::{Envelope, Message, Role, SlotValue};
